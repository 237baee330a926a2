"""AST to ``.sdsl`` source: ``format_module`` and ``format_expr``.

The output parses back to an equal AST (``parse(format_module(m)) == m``, spans aside) with as few
parentheses as the grammar's precedence allows, blocks indented by four spaces, floats written with
``repr`` (which round-trips exactly) and integers in decimal.

Three kinds of node have no source spelling of their own and are written as their closest equivalent, which
parses back to a different (equivalent) node: a negative ``Number`` (written ``-2``, read back as unary
minus), a non-finite float ``Number`` (written ``inf``/``nan``, read back as those names), and a keyword
used as a name, which no parse can produce (raises ``ValueError``).
"""
from __future__ import annotations

import math
import re

from sparsedsl.frontend import syntax as ast

__all__ = ["format_module", "format_expr", "format_stmt", "format_type"]

INDENT = "    "

# Binding strength, loosest first; a child printed with a lower level than its slot allows is parenthesized.
OR, AND, NOT, COMPARE, ARITH, TERM, MTERM, UNARY, POSTFIX, ATOM = range(1, 11)

_LEVEL_OF_OP = {"or": OR, "and": AND}
_COMPARISONS = frozenset(("<", "<=", ">", ">=", "==", "!="))
_ADDITIVE = frozenset(("+", "-", "|"))
_MULTIPLICATIVE = frozenset(("*", "/", "//", "%", "&", "@"))
_SELECTIONS = frozenset(("topk", "bottomk"))
_CALLABLE_KEYWORDS = frozenset(ast.SCALAR_TYPES) | {"max", "min"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z|\d+\Z")


def format_module(module: ast.Module) -> str:
    """The whole file; top-level blocks (def, repeat, schedule) are set apart by blank lines."""
    chunks: list[str] = []
    previous_was_block = False
    for stmt in module.body:
        is_block = isinstance(stmt, (ast.FuncDef, ast.Repeat, ast.Schedule))
        if chunks and (is_block or previous_was_block):
            chunks.append("")
        chunks.extend(_stmt_lines(stmt, 0))
        previous_was_block = is_block
    return "".join(line + "\n" for line in chunks)


def format_stmt(stmt: ast.Stmt) -> str:
    """One statement (a block statement spans several lines), with a final newline."""
    return "".join(line + "\n" for line in _stmt_lines(stmt, 0))


def format_expr(expr: ast.Expr) -> str:
    """An expression as it would appear on the right of ``=``."""
    return _expr(expr)[0]


def format_type(t: ast.TypeExpr) -> str:
    if t.format is None:
        if t.shape:
            raise ValueError(f"a scalar type has no shape: {t!r}")
        return t.dtype
    fmt = t.format.name
    if t.format.params:
        fmt += "(" + ", ".join(_dim(p) for p in t.format.params) + ")"
    if not t.shape:
        raise ValueError(f"a tensor type needs a shape: {t!r}")
    return f"{fmt}<{t.dtype}>[" + ", ".join(_dim(d) for d in t.shape) + "]"


# ---------------------------------------------------------------------------------------------- statements


def _stmt_lines(stmt: ast.Stmt, depth: int) -> list[str]:
    pad = INDENT * depth
    match stmt:
        case ast.InputDecl(name=name, type=type_, default=default):
            text = f"input {_ident(name)}: {format_type(type_)}"
            if default is not None:
                text += f" = {format_expr(default)}"
            return [pad + text]
        case ast.OutputDecl(name=name, type=type_, fill=fill):
            text = f"output {_ident(name)}"
            if type_ is not None:
                text += f": {format_type(type_)}"
            if fill is not None:
                text += f" fill {format_expr(fill)}"
            return [pad + text]
        case ast.ConstDecl(name=name, value=value):
            return [pad + f"const {_ident(name)} = {format_expr(value)}"]
        case ast.Assign(target=target, indices=indices, op=op, value=value, where=where):
            if op not in ast.ACCUMULATE_OPS:
                raise ValueError(f"unknown assignment operator {op!r}")
            lhs = _ident(target)
            if indices is not None:
                if not indices:
                    raise ValueError("an indexed assignment needs at least one index")
                lhs += "[" + ", ".join(_ident(i.id) for i in indices) + "]"
            text = f"{lhs} {op} {format_expr(value)}"
            if where is not None:
                text += f" where {format_expr(where)}"
            return [pad + text]
        case ast.Return(value=value):
            return [pad + f"return {format_expr(value)}"]
        case ast.Import(module=module, alias=alias):
            text = f"import {_dotted(module)}"
            if alias is not None:
                text += f" as {_ident(alias)}"
            return [pad + text]
        case ast.FromImport(module=module, names=names):
            if not names:
                raise ValueError("'from ... import' needs at least one name")
            parts = [_ident(n.name) + ("" if n.alias is None else f" as {_ident(n.alias)}") for n in names]
            return [pad + f"from {_dotted(module)} import " + ", ".join(parts)]
        case ast.Repeat(max_iters=max_iters, until=until, body=body):
            if max_iters is None and until is None:
                raise ValueError("a repeat needs 'at most' or 'until'")
            head = "repeat"
            if max_iters is not None:
                head += f" at most {format_expr(max_iters)}"
            if until is not None:
                head += f" until {format_expr(until)}"
            return [pad + head + ":", *_block(body, depth + 1)]
        case ast.FuncDef(name=name, params=params, result=result, body=body):
            plist = ", ".join(f"{_ident(p.name)}: {format_type(p.type)}" for p in params)
            head = f"def {_ident(name)}({plist})"
            if result is not None:
                head += f" -> {format_type(result)}"
            return [pad + head + ":", *_block(body, depth + 1)]
        case ast.Schedule(target=target, directives=directives):
            if not directives:
                raise ValueError("a schedule block needs at least one directive")
            lines = [pad + f"schedule {_ident(target)}:"]
            lines.extend(pad + INDENT + _directive(d) for d in directives)
            return lines
    raise TypeError(f"not a statement: {stmt!r}")


def _block(body: tuple[ast.Stmt, ...], depth: int) -> list[str]:
    if not body:
        raise ValueError("a block needs at least one statement")
    lines: list[str] = []
    for stmt in body:
        lines.extend(_stmt_lines(stmt, depth))
    return lines


def _directive(d: ast.Directive) -> str:
    words = [d.name, *(str(a) if isinstance(a, int) else a for a in d.args)]
    for w in words:
        if not _WORD.match(w):
            raise ValueError(f"cannot print schedule word {w!r}")
    args = words[1:]
    if d.name == "format" and len(args) > 1:  # as the type is written: `format bsr(4, 4)`
        return f"format {args[0]}({', '.join(args[1:])})"
    # `order i, k, j` and `fuse P, O` read best with commas; `block i 64` with spaces.  Both parse the same.
    sep = ", " if len(args) > 1 and all(isinstance(a, str) for a in d.args) else " "
    return d.name + (" " + sep.join(args) if args else "")


def _dim(d: int | str) -> str:
    if isinstance(d, bool) or not isinstance(d, (int, str)):
        raise ValueError(f"a size is a name or an integer, not {d!r}")
    if isinstance(d, int):
        if d < 0:
            raise ValueError(f"a size cannot be negative: {d}")
        return str(d)
    return _ident(d)


def _ident(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a valid name: {name!r}")
    if name in ast.KEYWORDS:
        raise ValueError(f"{name!r} is a keyword and cannot be printed as a name")
    return name


def _dotted(module: str) -> str:
    return ".".join(_ident(part) for part in module.split("."))


# ---------------------------------------------------------------------------------------------- expressions


def _wrap(expr: ast.Expr, minimum: int) -> str:
    """``expr`` printed for a slot that needs at least binding level ``minimum``."""
    text, level = _expr(expr)
    return text if level >= minimum else f"({text})"


def _prefix_like(expr: ast.Expr) -> bool:
    """A prefix operator, possibly negated: allowed bare as the last operand of a product."""
    while isinstance(expr, ast.UnaryOp) and expr.op == "-":
        expr = expr.operand
    return isinstance(expr, ast.Prefix)


def _expr(expr: ast.Expr) -> tuple[str, int]:
    match expr:
        case ast.Name(id=name):
            return _ident(name), ATOM
        case ast.Number(value=value):
            return _number(value)
        case ast.Bool(value=value):
            return ("true" if value else "false"), ATOM
        case ast.Where(value=value, cond=cond):
            # Only valid in parentheses, which make it an atom.
            return f"({_wrap(value, OR)} where {_wrap(cond, OR)})", ATOM
        case ast.Access(base=base, indices=indices):
            if not indices:
                raise ValueError("an access needs at least one index")
            return f"{_wrap(base, POSTFIX)}[" + ", ".join(_wrap(i, OR) for i in indices) + "]", POSTFIX
        case ast.Attribute(value=value, attr=attr):
            return f"{_wrap(value, POSTFIX)}.{_ident(attr)}", POSTFIX
        case ast.Call(func=func, args=args, kwargs=kwargs):
            if isinstance(func, ast.Name) and func.id in _CALLABLE_KEYWORDS:
                callee = func.id
            else:
                callee = _wrap(func, POSTFIX)
            return f"{callee}({_arguments(args, kwargs)})", POSTFIX
        case ast.UnaryOp(op="-", operand=operand):
            if _prefix_like(operand):
                return "-" + _expr(operand)[0], TERM
            return "-" + _wrap(operand, UNARY), UNARY
        case ast.UnaryOp(op="not", operand=operand):
            return "not " + _wrap(operand, NOT), NOT
        case ast.Prefix(op=op, indices=indices, body=body, args=args, kwargs=kwargs):
            if op not in ast.PREFIX_OPS:
                raise ValueError(f"unknown prefix operator {op!r}")
            if not indices:
                raise ValueError(f"'{op}' needs at least one index")
            head = f"{op}[" + ", ".join(_ident(i.id) for i in indices) + "]"
            if op in _SELECTIONS:
                head += f"({_arguments(args, kwargs)})"
            elif args or kwargs:
                raise ValueError(f"'{op}' takes no arguments")
            return f"{head} {_wrap(body, TERM)}", TERM
        case ast.BinOp(op=op, left=left, right=right):
            return _binop(op, left, right)
    raise TypeError(f"not an expression: {expr!r}")


def _binop(op: str, left: ast.Expr, right: ast.Expr) -> tuple[str, int]:
    if op in _LEVEL_OF_OP:
        level = _LEVEL_OF_OP[op]
        return f"{_wrap(left, level)} {op} {_wrap(right, level + 1)}", level
    if op in _COMPARISONS:
        # Non-associative: a comparison operand must be tighter than a comparison.
        return f"{_wrap(left, ARITH)} {op} {_wrap(right, ARITH)}", COMPARE
    if op in _ADDITIVE:
        return f"{_wrap(left, ARITH)} {op} {_wrap(right, TERM)}", ARITH
    if op in _MULTIPLICATIVE:
        lhs = _wrap(left, MTERM)
        if _prefix_like(right):
            # The prefix swallows the rest of the product, so nothing may follow this one.
            return f"{lhs} {op} {_expr(right)[0]}", TERM
        return f"{lhs} {op} {_wrap(right, UNARY)}", MTERM
    raise ValueError(f"unknown binary operator {op!r}")


def _arguments(args: tuple[ast.Expr, ...], kwargs: tuple[ast.Keyword, ...]) -> str:
    parts = [_wrap(a, OR) for a in args]
    parts += [f"{_ident(k.name)}={_wrap(k.value, OR)}" for k in kwargs]
    return ", ".join(parts)


def _number(value: int | float) -> tuple[str, int]:
    if isinstance(value, bool):
        raise ValueError("a Number holds an int or a float, not a bool (use Bool)")
    if isinstance(value, int):
        return str(value), (ATOM if value >= 0 else UNARY)
    if math.isnan(value):
        return "nan", ATOM
    if math.isinf(value):
        return ("inf", ATOM) if value > 0 else ("-inf", UNARY)
    text = repr(float(value))
    return text, (UNARY if text.startswith("-") else ATOM)
