"""Lark parse tree to AST (``syntax``) nodes, with a source span on every node.

One method per meaningful grammar rule or ``-> alias`` of ``grammar/sdsl.lark``; rules marked ``?`` in the
grammar collapse and never reach here.  Checks that the grammar leaves open on purpose (so that the message
can be specific) raise ``SdslSyntaxError`` here: ``fill`` after an output's type, a ``repeat`` with neither
clause, a format's parameter count, keyword arguments before positional ones.
"""
from __future__ import annotations

import re

from lark import Token, Transformer_NonRecursive, v_args

from sparsedsl.core.errors import SdslSyntaxError, Source, Span
from sparsedsl.frontend import syntax as ast

_HEX = re.compile(r"0[xX][0-9a-fA-F]+\Z")
_DECIMAL = re.compile(r"\d+\Z")

# How many parameters each format takes, and what they are called (for messages).
FORMAT_PARAMS: dict[str, tuple[str, ...]] = {
    "dense": (),
    "csr": (),
    "csc": (),
    "coo": (),
    "bsr": ("block rows", "block columns"),
    "blockdiag": ("number of blocks",),
    "nm": ("N", "M"),
}


def number_value(text: str) -> int | float:
    """The value of a NUMBER token: an int for decimal and hex integers, a float otherwise."""
    if _HEX.match(text):
        return int(text, 16)
    if _DECIMAL.match(text):
        return int(text)
    return float(text)


@v_args(meta=True)
class ToAst(Transformer_NonRecursive):
    """Builds ``syntax`` nodes; one instance per parse (it holds the ``Source`` every span points to)."""

    def __init__(self, source: Source):
        super().__init__(visit_tokens=False)
        self.source = source

    # ------------------------------------------------------------------ spans and helpers

    def _span(self, meta) -> Span | None:
        if getattr(meta, "empty", True):
            return None
        return Span(self.source, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok_span(self, tok: Token) -> Span:
        return Span(self.source, tok.line, tok.column, tok.end_line, tok.end_column)

    def _error(self, message: str, span: Span | None) -> SdslSyntaxError:
        return SdslSyntaxError(message, span)

    def _name(self, tok: Token) -> ast.Name:
        return ast.Name(str(tok), span=self._tok_span(tok))

    # ------------------------------------------------------------------ module and statements

    def start(self, meta, children):
        # An empty file still gets a location, so diagnostics about the module can point somewhere.
        span = self._span(meta) or Span(self.source, 1, 1, 1, 1)
        return ast.Module(tuple(children), name=self.source.name, span=span)

    def block(self, meta, children):
        return tuple(children)

    def input_decl(self, meta, children):
        name, type_, default = children
        return ast.InputDecl(str(name), type_, default, span=self._span(meta))

    def output_decl(self, meta, children):
        name, type_, fill_word, fill = children
        if fill_word is not None and str(fill_word) != "fill":
            raise self._error(
                f"unexpected '{fill_word}' after the output's declaration; expected 'fill VALUE' or end of line",
                self._tok_span(fill_word),
            )
        return ast.OutputDecl(str(name), type_, fill, span=self._span(meta))

    def const_decl(self, meta, children):
        name, value = children
        return ast.ConstDecl(str(name), value, span=self._span(meta))

    def assign(self, meta, children):
        target, indices, op, value, where = children
        return ast.Assign(str(target), indices, op, value, where, span=self._span(meta))

    def assign_op(self, meta, children):
        return "".join(str(c) for c in children)

    def name_list(self, meta, children):
        return tuple(self._name(tok) for tok in children)

    def return_stmt(self, meta, children):
        (value,) = children
        return ast.Return(value, span=self._span(meta))

    def dotted_name(self, meta, children):
        return ".".join(str(c) for c in children)

    def import_stmt(self, meta, children):
        module, alias = children
        return ast.Import(module, None if alias is None else str(alias), span=self._span(meta))

    def from_import(self, meta, children):
        module, *names = children
        return ast.FromImport(module, tuple(names), span=self._span(meta))

    def import_name(self, meta, children):
        name, alias = children
        return ast.ImportName(str(name), None if alias is None else str(alias), span=self._span(meta))

    def repeat(self, meta, children):
        max_iters, until, body = children
        span = self._span(meta)
        if max_iters is None and until is None:
            head = Span(self.source, meta.line, meta.column, meta.line, meta.column + len("repeat"))
            raise self._error("'repeat' needs 'at most N', 'until CONDITION', or both", head)
        return ast.Repeat(max_iters, until, body, span=span)

    def funcdef(self, meta, children):
        name, params, result, body = children
        return ast.FuncDef(str(name), params or (), result, body, span=self._span(meta))

    def params(self, meta, children):
        return tuple(children)

    def param(self, meta, children):
        name, type_ = children
        return ast.Param(str(name), type_, span=self._span(meta))

    def schedule(self, meta, children):
        target, *directives = children
        return ast.Schedule(str(target), tuple(directives), span=self._span(meta))

    def directive(self, meta, children):
        words = [w for c in children if c is not None for w in (c if isinstance(c, tuple) else (c,))]
        name, *args = words
        if not isinstance(name, str):
            raise self._error("a schedule directive starts with its name", self._span(meta))
        return ast.Directive(name, tuple(args), span=self._span(meta))

    def dir_params(self, meta, children):
        return tuple(children)

    def dir_word(self, meta, children):
        (word,) = children
        if isinstance(word, Token) and word.type == "NUMBER":
            value = number_value(str(word))
            if not isinstance(value, int):
                raise self._error(
                    f"schedule directive arguments are names or integers, not '{word}'", self._tok_span(word)
                )
            return value
        return str(word)

    def keyword(self, meta, children):
        (word,) = children
        return str(word)

    # ------------------------------------------------------------------ types

    def scalar_name(self, meta, children):
        (tok,) = children
        return str(tok)

    def scalar_type(self, meta, children):
        (dtype,) = children
        return ast.TypeExpr(dtype, span=self._span(meta))

    def format_name(self, meta, children):
        (tok,) = children
        return str(tok)

    def format_spec(self, meta, children):
        name, params = children
        params = params or ()
        wanted = FORMAT_PARAMS[name]
        span = self._span(meta)
        if len(params) != len(wanted):
            if not wanted:
                raise self._error(f"format '{name}' takes no parameters", span)
            count = f"{len(wanted)} parameter" + ("s" if len(wanted) > 1 else "")
            raise self._error(f"format '{name}' takes {count} ({', '.join(wanted)}), got {len(params)}", span)
        return ast.FormatExpr(name, params, span=span)

    def tensor_type(self, meta, children):
        fmt, dtype, dims = children
        return ast.TypeExpr(dtype.dtype, fmt, dims, span=self._span(meta))

    def dims(self, meta, children):
        return tuple(children)

    def dim(self, meta, children):
        (tok,) = children
        if tok.type == "NUMBER":
            value = number_value(str(tok))
            if not isinstance(value, int):
                raise self._error(f"a size is a name or an integer, not '{tok}'", self._tok_span(tok))
            return value
        return str(tok)

    # ------------------------------------------------------------------ expressions

    def binop(self, meta, children):
        left, op, right = children
        return ast.BinOp(op, left, right, span=self._span(meta))

    def or_op(self, meta, children):
        left, right = children
        return ast.BinOp("or", left, right, span=self._span(meta))

    def and_op(self, meta, children):
        left, right = children
        return ast.BinOp("and", left, right, span=self._span(meta))

    def not_op(self, meta, children):
        (operand,) = children
        return ast.UnaryOp("not", operand, span=self._span(meta))

    def neg(self, meta, children):
        (operand,) = children
        return ast.UnaryOp("-", operand, span=self._span(meta))

    def comp_op(self, meta, children):
        return str(children[0])

    add_op = mul_op = reduce_op = select_op = comp_op

    def prefix_expr(self, meta, children):
        op, indices, body = children
        return ast.Prefix(op, indices, body, span=self._span(meta))

    def select_expr(self, meta, children):
        op, indices, arguments, body = children
        args, kwargs = arguments if arguments is not None else ((), ())
        return ast.Prefix(op, indices, body, args, kwargs, span=self._span(meta))

    def access(self, meta, children):
        base, indices = children
        return ast.Access(base, indices, span=self._span(meta))

    def index_list(self, meta, children):
        return tuple(children)

    def call(self, meta, children):
        func, arguments = children
        args, kwargs = arguments if arguments is not None else ((), ())
        return ast.Call(func, args, kwargs, span=self._span(meta))

    def callee_kw(self, meta, children):
        word = children[0]
        return ast.Name(str(word), span=self._span(meta))

    def args(self, meta, children):
        positional: list[ast.Expr] = []
        keywords: list[ast.Keyword] = []
        for arg in children:
            if isinstance(arg, ast.Keyword):
                if any(k.name == arg.name for k in keywords):
                    raise self._error(f"keyword argument '{arg.name}' given twice", arg.span)
                keywords.append(arg)
            elif keywords:
                raise self._error("a positional argument cannot follow a keyword argument", arg.span)
            else:
                positional.append(arg)
        return tuple(positional), tuple(keywords)

    def kwarg(self, meta, children):
        name, value = children
        return ast.Keyword(str(name), value, span=self._span(meta))

    def attribute(self, meta, children):
        value, name = children
        return ast.Attribute(value, str(name), span=self._span(meta))

    def name(self, meta, children):
        (tok,) = children
        return self._name(tok)

    def number(self, meta, children):
        (tok,) = children
        return ast.Number(number_value(str(tok)), str(tok), span=self._tok_span(tok))

    def true(self, meta, children):
        return ast.Bool(True, span=self._span(meta))

    def false(self, meta, children):
        return ast.Bool(False, span=self._span(meta))

    def where_expr(self, meta, children):
        value, cond = children
        return ast.Where(value, cond, span=self._span(meta))
