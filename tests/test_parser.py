"""The text front end: grammar coverage, precedence, spans, layout and syntax diagnostics.

Expected trees and positions are written out by hand from the language spec; nothing here compares the
parser against itself.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from lark import Lark, logger as lark_logger

from sparsedsl.core.errors import SdslSyntaxError
from sparsedsl.frontend import syntax as ast
from sparsedsl.frontend.parser import grammar_text, lark_parser, parse

PROGRAMS = Path(__file__).parent / "programs"
SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "language.md"

# ---------------------------------------------------------------------------------------------- helpers

N = ast.Name


def num(v):
    return ast.Number(v)


def acc(base: str, *idx: str | ast.Expr) -> ast.Access:
    return ast.Access(N(base), tuple(N(i) if isinstance(i, str) else i for i in idx))


def b(op, left, right):
    return ast.BinOp(op, left, right)


def red(op, idx, body, args=(), kwargs=()):
    return ast.Prefix(op, tuple(N(i) for i in idx), body, tuple(args), tuple(kwargs))


def call(func, *args, **kwargs):
    f = N(func) if isinstance(func, str) else func
    return ast.Call(f, tuple(args), tuple(ast.Keyword(k, v) for k, v in kwargs.items()))


def expr(text: str) -> ast.Expr:
    """The right-hand side of `x = TEXT`."""
    (stmt,) = parse(f"x = {text}\n").body
    assert isinstance(stmt, ast.Assign) and stmt.where is None
    return stmt.value


def stmt(text: str) -> ast.Stmt:
    (s,) = parse(text).body
    return s


def t_tensor(fmt, dtype, *shape, params=()):
    return ast.TypeExpr(dtype, ast.FormatExpr(fmt, tuple(params)), tuple(shape))


# ---------------------------------------------------------------------------------------------- grammar


def test_grammar_is_lalr_without_conflicts():
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    old_level = lark_logger.level
    lark_logger.addHandler(handler)
    lark_logger.setLevel(logging.DEBUG)
    try:
        Lark(grammar_text(), parser="lalr", lexer="basic", debug=True)
    finally:
        lark_logger.removeHandler(handler)
        lark_logger.setLevel(old_level)
    assert not [r for r in records if "conflict" in r.lower()]


def test_grammar_keywords_are_exactly_the_language_keywords():
    name = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
    words = {
        t.pattern.value
        for t in lark_parser().terminals
        if t.pattern.type == "str" and name.match(t.pattern.value)
    }
    assert words == set(ast.KEYWORDS)


def test_parser_is_built_once():
    assert lark_parser() is lark_parser()


# ---------------------------------------------------------------------------------------------- spec examples


def _spec_program_blocks(text: str) -> list[str]:
    blocks = re.findall(r"```\n(.*?)```", text, re.S)
    # The spec's grammar sketches use `:=` and `[optional]` notation; the rest are programs.
    return [blk for blk in blocks if not re.search(r":=|\[= |\[where|\[at most|\.\.\.", blk)]


@pytest.mark.skipif(not SPEC.exists(), reason="the shared spec is not next to this checkout")
def test_corpus_holds_every_spec_example_verbatim():
    corpus = {p.read_text() for p in PROGRAMS.glob("spec_*.sdsl")}
    blocks = _spec_program_blocks(SPEC.read_text())
    assert len(blocks) == 5
    for blk in blocks:
        assert blk in corpus


def test_spec_spgemm_tree():
    m = parse((PROGRAMS / "spec_spgemm.sdsl").read_text(), "spgemm.sdsl")
    assert m.name == "spgemm.sdsl"
    assert m.body == (
        ast.InputDecl("A", t_tensor("csr", "f32", "M", "K")),
        ast.InputDecl("B", t_tensor("csr", "f32", "K", "N")),
        ast.OutputDecl("C", t_tensor("csr", "f32", "M", "N")),
        ast.Assign("C", (N("i"), N("j")), "=", red("sum", "k", b("*", acc("A", "i", "k"), acc("B", "k", "j")))),
        ast.Schedule("C", (ast.Directive("accumulator", ("hash",)),)),
    )


def test_spec_graph_attention_tree():
    m = parse((PROGRAMS / "spec_graph_attention.sdsl").read_text())
    assert m.body[4] == ast.InputDecl("scale", ast.TypeExpr("f32"), num(0.125))
    sddmm = m.body[6]
    assert sddmm == ast.Assign(
        "S",
        (N("i"), N("j")),
        "=",
        b("*", N("scale"), red("sum", "d", b("*", acc("Q", "i", "d"), acc("K", "j", "d")))),
        acc("G", "i", "j"),
    )
    assert m.body[7].value == red("softmax", "j", acc("S", "i", "j"))


def test_spec_pagerank_tree():
    m = parse((PROGRAMS / "spec_pagerank.sdsl").read_text())
    r_init = m.body[4]
    assert r_init == ast.Assign("r", (N("i"),), "=", b("/", num(1.0), call("f64", N("N"))))
    loop = m.body[5]
    assert isinstance(loop, ast.Repeat)
    assert loop.max_iters == num(200)
    assert loop.until == b("<", N("err"), num(1e-12))
    assert loop.body[0] == ast.Assign(
        "dangling", None, "=", red("sum", "i", ast.Where(acc("r", "i"), ast.UnaryOp("not", acc("outdeg", "i"))))
    )
    assert loop.body[1].value == red("sum", "i", b("/", b("*", acc("r", "i"), acc("A", "i", "j")), acc("outdeg", "i")))
    rn = b(
        "+",
        b("*", N("alpha"), call("fill", acc("c", "j"), num(0.0))),
        b("/", b("-", b("+", b("*", N("alpha"), N("dangling")), num(1.0)), N("alpha")), call("f64", N("N"))),
    )
    assert loop.body[2].value == rn
    assert loop.body[4] == ast.Assign("r", None, "=", N("rn"))


def test_spec_gin_tree():
    (fn,) = parse((PROGRAMS / "spec_gin.sdsl").read_text()).body
    assert fn == ast.FuncDef(
        "gin",
        (
            ast.Param("G", t_tensor("csr", "bool", "N", "N")),
            ast.Param("H", t_tensor("dense", "f32", "N", "F")),
            ast.Param("eps", ast.TypeExpr("f32")),
        ),
        t_tensor("dense", "f32", "N", "F"),
        (
            ast.Assign("agg", (N("i"), N("f")), "=", red("sum", "j", b("*", acc("G", "i", "j"), acc("H", "j", "f")))),
            ast.Assign(
                "out", (N("i"), N("f")), "=",
                b("+", b("*", b("+", num(1), N("eps")), acc("H", "i", "f")), acc("agg", "i", "f")),
            ),
            ast.Return(N("out")),
        ),
    )


def test_spec_schedule_tree():
    (sched,) = parse((PROGRAMS / "spec_schedule.sdsl").read_text()).body
    assert sched == ast.Schedule(
        "C",
        (
            ast.Directive("accumulator", ("hash",)),
            ast.Directive("parallel", ("i",)),
            ast.Directive("block", ("i", 64)),
            ast.Directive("order", ("i", "k", "j")),
            ast.Directive("format", ("csr",)),
            ast.Directive("fuse", ("P", "O")),
        ),
    )


@pytest.mark.parametrize("path", sorted(PROGRAMS.glob("*.sdsl")), ids=lambda p: p.name)
def test_corpus_parses(path):
    m = parse(path.read_text(), str(path))
    assert m.body


# ---------------------------------------------------------------------------------------------- precedence


def test_reduction_takes_the_product_not_the_sum():
    assert expr("sum[k] A[i, k] * B[k, j] + C[i, j]") == b(
        "+", red("sum", "k", b("*", acc("A", "i", "k"), acc("B", "k", "j"))), acc("C", "i", "j")
    )


def test_scale_times_reduction():
    assert expr("scale * sum[d] Q[i, d] * K[j, d]") == b(
        "*", N("scale"), red("sum", "d", b("*", acc("Q", "i", "d"), acc("K", "j", "d")))
    )


def test_count_compared():
    assert expr("count[i] f[i] == 0") == b("==", red("count", "i", acc("f", "i")), num(0))


def test_tropical_product_needs_parentheses():
    assert expr("min[k] (A[i, k] + B[k, j])") == red("min", "k", b("+", acc("A", "i", "k"), acc("B", "k", "j")))
    assert expr("min[k] A[i, k] + B[k, j]") == b("+", red("min", "k", acc("A", "i", "k")), acc("B", "k", "j"))


def test_several_reduction_indices_and_nesting():
    assert expr("sum[k, l] A[k, l] * max[j] B[j]") == red("sum", "kl", b("*", acc("A", "k", "l"), red("max", "j", acc("B", "j"))))


def test_topk_with_arguments():
    assert expr("topk[j](k) S[i, j]") == red("topk", "j", acc("S", "i", "j"), args=(N("k"),))
    assert expr("topk[j](2, group=4) abs(W[i, j])") == red(
        "topk", "j", call("abs", acc("W", "i", "j")), args=(num(2),), kwargs=(ast.Keyword("group", num(4)),)
    )
    assert expr("bottomk[j](1) W[i, j] * 2") == red("bottomk", "j", b("*", acc("W", "i", "j"), num(2)), args=(num(1),))


def test_product_ending_in_reduction_is_left_associative():
    assert expr("a * b / sum[k] c * d") == b("/", b("*", N("a"), N("b")), red("sum", "k", b("*", N("c"), N("d"))))


def test_negated_reduction():
    assert expr("-sum[k] a * b + c") == b("+", ast.UnaryOp("-", red("sum", "k", b("*", N("a"), N("b")))), N("c"))
    assert expr("x * -max[k] a") == b("*", N("x"), ast.UnaryOp("-", red("max", "k", N("a"))))


def test_boolean_and_comparison_precedence():
    a, bb, c, d = N("a"), N("b"), N("c"), N("d")
    assert expr("a or b and not c == d") == b("or", a, b("and", bb, ast.UnaryOp("not", b("==", c, d))))
    assert expr("a and b or c") == b("or", b("and", a, bb), c)
    assert expr("not not a") == ast.UnaryOp("not", ast.UnaryOp("not", a))
    assert expr("a + b < c * d") == b("<", b("+", a, bb), b("*", c, d))


def test_arithmetic_is_left_associative_with_the_usual_levels():
    a, bb, c = N("a"), N("b"), N("c")
    assert expr("a - b - c") == b("-", b("-", a, bb), c)
    assert expr("a - (b - c)") == b("-", a, b("-", bb, c))
    assert expr("a // b % c") == b("%", b("//", a, bb), c)
    assert expr("a | b & c") == b("|", a, b("&", bb, c))
    assert expr("a @ b + c") == b("+", b("@", a, bb), c)
    assert expr("-a * b") == b("*", ast.UnaryOp("-", a), bb)
    assert expr("--a") == ast.UnaryOp("-", ast.UnaryOp("-", a))


def test_postfix_forms():
    assert expr("A[i, 4 * g + r, P[j]]") == ast.Access(
        N("A"), (N("i"), b("+", b("*", num(4), N("g")), N("r")), acc("P", "j"))
    )
    assert expr("-A.T[j, i]") == ast.UnaryOp("-", ast.Access(ast.Attribute(N("A"), "T"), (N("j"), N("i"))))
    assert expr("gnn.gin(G, H, eps)") == call(ast.Attribute(N("gnn"), "gin"), N("G"), N("H"), N("eps"))
    assert expr("f(x, y, group=4)") == call("f", N("x"), N("y"), group=num(4))
    assert expr("f()") == call("f")
    assert expr("f(x)(y)[i]") == ast.Access(call(call("f", N("x")), N("y")), (N("i"),))


def test_casts_and_binary_max_min():
    assert expr("f32(x) + i64(i) * bool(m)") == b("+", call("f32", N("x")), b("*", call("i64", N("i")), call("bool", N("m"))))
    assert expr("max(a, b) - min(a, b)") == b("-", call("max", N("a"), N("b")), call("min", N("a"), N("b")))
    assert expr("max[k] max(a[k], 0)") == red("max", "k", call("max", acc("a", "k"), num(0)))


def test_where_inside_and_at_statement_level():
    assert stmt("X[i, j] = A[i, j] + B[i, j] where M[i, j]\n") == ast.Assign(
        "X", (N("i"), N("j")), "=", b("+", acc("A", "i", "j"), acc("B", "i", "j")), acc("M", "i", "j")
    )
    assert expr("(A[i] where A[i] > 0) + 1") == b("+", ast.Where(acc("A", "i"), b(">", acc("A", "i"), num(0))), num(1))
    assert stmt("X = A @ B where M\n") == ast.Assign("X", None, "=", b("@", N("A"), N("B")), N("M"))


def test_numbers_keep_kind_and_spelling():
    cases = {"42": (42, int), "0x2A": (42, int), "0X2a": (42, int), "1.5": (1.5, float), "1e-3": (0.001, float),
             ".5": (0.5, float), "2.5E+2": (250.0, float), "007": (7, int)}
    for text, (value, kind) in cases.items():
        e = expr(text)
        assert isinstance(e, ast.Number) and type(e.value) is kind and e.value == value and e.text == text
    assert expr("inf") == N("inf") and expr("nan") == N("nan")
    assert expr("true") == ast.Bool(True) and expr("false") == ast.Bool(False)
    assert expr("3.T") == ast.Attribute(num(3), "T")


# ---------------------------------------------------------------------------------------------- statements


def test_declarations_and_types():
    assert stmt("input A: bsr(4, 4)<f32>[M, N]\n") == ast.InputDecl("A", t_tensor("bsr", "f32", "M", "N", params=(4, 4)))
    assert stmt("input L: blockdiag(NB)<bf16>[N, 128]\n") == ast.InputDecl(
        "L", t_tensor("blockdiag", "bf16", "N", 128, params=("NB",))
    )
    assert stmt("input W: nm(2, 4)<f16>[M, K]\n").type == t_tensor("nm", "f16", "M", "K", params=(2, 4))
    assert stmt("input e: coo<i8>[E]\n").type == t_tensor("coo", "i8", "E")
    assert stmt("input e: csc<i32>[N, N]\n").type == t_tensor("csc", "i32", "N", "N")
    assert stmt("input eps: f64 = 1e-6\n") == ast.InputDecl("eps", ast.TypeExpr("f64"), num(1e-6))
    assert stmt("output D: dense<f32>[N, N] fill inf\n") == ast.OutputDecl("D", t_tensor("dense", "f32", "N", "N"), N("inf"))
    assert stmt("output Y\n") == ast.OutputDecl("Y")
    assert stmt("output Y fill -1\n") == ast.OutputDecl("Y", None, ast.UnaryOp("-", num(1)))
    assert stmt("const k = 2 * 4\n") == ast.ConstDecl("k", b("*", num(2), num(4)))


def test_accumulating_assignments():
    for op in ("+=", "max=", "min="):
        assert stmt(f"C[i, j] {op} A[i, j] where B[i, j]\n") == ast.Assign(
            "C", (N("i"), N("j")), op, acc("A", "i", "j"), acc("B", "i", "j")
        )
    assert stmt("C[i] max = max(a[i], b[i])\n").op == "max="
    assert stmt("T = sum[i, j] P[i, j]\n") == ast.Assign("T", None, "=", red("sum", "ij", acc("P", "i", "j")))


def test_imports():
    assert stmt("import gnn\n") == ast.Import("gnn")
    assert stmt("import a.b as c\n") == ast.Import("a.b", "c")
    assert stmt("from gnn import gin, pna as p\n") == ast.FromImport(
        "gnn", (ast.ImportName("gin"), ast.ImportName("pna", "p"))
    )
    assert stmt("from x.y import z\n") == ast.FromImport("x.y", (ast.ImportName("z"),))


def test_repeat_clauses():
    body = (ast.Assign("x", None, "=", num(1)),)
    assert stmt("repeat at most 3:\n    x = 1\n") == ast.Repeat(num(3), None, body)
    assert stmt("repeat until d:\n    x = 1\n") == ast.Repeat(None, N("d"), body)
    assert stmt("repeat at most N - 1 until a < b:\n    x = 1\n") == ast.Repeat(
        b("-", N("N"), num(1)), b("<", N("a"), N("b")), body
    )


def test_def_without_result_type():
    fn = stmt("def f(x: f32):\n    return x * 2\n")
    assert fn == ast.FuncDef("f", (ast.Param("x", ast.TypeExpr("f32")),), None, (ast.Return(b("*", N("x"), num(2))),))
    assert stmt("def g() -> f32:\n    return 1.0\n") == ast.FuncDef("g", (), ast.TypeExpr("f32"), (ast.Return(num(1.0)),))


def test_schedule_words_keywords_numbers_and_commas():
    sched = stmt("schedule P:\n    order i,k j\n    format dense\n    accumulator sort\n    block i 0x40\n")
    assert sched.directives == (
        ast.Directive("order", ("i", "k", "j")),
        ast.Directive("format", ("dense",)),
        ast.Directive("accumulator", ("sort",)),
        ast.Directive("block", ("i", 64)),
    )


def test_schedule_format_parameters_as_in_a_type():
    """`format bsr(4, 4)` is written as the type is; `format bsr 4 4` means the same."""
    expected = (ast.Directive("format", ("bsr", 4, 4)),)
    assert stmt("schedule P:\n    format bsr(4, 4)\n").directives == expected
    assert stmt("schedule P:\n    format bsr 4 4\n").directives == expected
    assert stmt("schedule P:\n    format nm(N, 8)\n").directives == (ast.Directive("format", ("nm", "N", 8)),)
    with pytest.raises(SdslSyntaxError, match="unclosed"):
        stmt("schedule P:\n    format bsr(4, 4\n")


def test_nested_blocks_and_dedent_to_outer_level():
    m = parse("repeat at most 2:\n    repeat until c:\n        y = 1\n    z = 2\nw = 3\n")
    outer, after = m.body
    inner, z = outer.body
    assert inner.body == (ast.Assign("y", None, "=", num(1)),)
    assert z == ast.Assign("z", None, "=", num(2))
    assert after == ast.Assign("w", None, "=", num(3))


# ---------------------------------------------------------------------------------------------- layout


def test_layout_crlf_tabs_comments_and_continuations():
    lf = "input A: csr<f32>[N, N]\nrepeat at most 2:\n    x = sum[i, j] A[i, j]\n"
    crlf = "input A: csr<f32>[N, N]\r\nrepeat at most 2:\r\n    x = sum[i, j] A[i, j]\r\n"
    tabs = "input A: csr<f32>[N, N]\nrepeat at most 2:\n\tx = sum[i, j] A[i, j]\n"
    noisy = (
        "# header\n\ninput A: csr<f32>[  # the matrix\n    N,\n    N]\n   # odd comment\n"
        "repeat at most 2:  # loop\n\n    # inside\n    x = sum[i, j] (\n        A[i, j]\n    )"
    )
    expected = parse(lf)
    assert parse(crlf) == expected
    assert parse(tabs) == expected
    assert parse(noisy) == expected
    assert parse("x = 1  # no final newline") == parse("x = 1\n")
    assert parse("") == ast.Module(())
    assert parse("# only a comment").body == ()


def test_spans_point_at_the_source():
    text = "input A: csr<f32>[N, N]\n\nY[i] = sum[j] A[i, j] * 2 + b\n"
    m = parse(text, "prog.sdsl")
    decl, assign = m.body
    assert (decl.span.line, decl.span.col, decl.span.end_line, decl.span.end_col) == (1, 1, 1, 24)
    assert (assign.span.line, assign.span.col, assign.span.end_col) == (3, 1, 30)
    plus = assign.value
    assert (plus.span.line, plus.span.col, plus.span.end_col) == (3, 8, 30)
    reduction = plus.left
    assert (reduction.span.col, reduction.span.end_col) == (8, 26)
    access = reduction.body.left
    assert (access.span.col, access.span.end_col) == (15, 22)
    assert (access.indices[1].span.col, access.indices[1].span.end_col) == (20, 21)
    assert assign.indices[0].span.col == 3
    assert plus.right.span.col == 29
    assert decl.type.span.col == 10 and decl.type.format.span.col == 10
    assert decl.span.file == "prog.sdsl"
    # One Source object shared by every span of a parse.
    assert decl.span.source is assign.span.source is access.span.source
    assert decl.span.source.text == text


def test_every_node_has_a_span():
    m = parse((PROGRAMS / "accumulate.sdsl").read_text())

    def walk(node):
        if isinstance(node, ast.Node):
            assert node.span is not None, node
            for f in node.__dataclass_fields__:
                walk(getattr(node, f))
        elif isinstance(node, tuple):
            for item in node:
                walk(item)

    walk(m)


# ---------------------------------------------------------------------------------------------- errors

ERRORS = [
    # (source, line, col, message substring)
    ("x = a $ b\n", 1, 7, "unexpected character '$'"),
    ("x = 'a'\n", 1, 5, "unexpected character"),
    ("x = (a + b\n", 1, 5, "unexpected end of input; unclosed '('"),
    ("input A: csr<f32>[M, K\n", 1, 18, "unclosed '['"),
    ("x = f(a,\n      b\n", 1, 6, "unclosed '('"),
    ("repeat at most 3:\n    x = 1\n  y = 2\n", 3, 3, "unindent does not match any outer indentation level"),
    ("repeat at most 3:\nx = 1\n", 2, 1, "expected an indented block"),
    ("schedule C:\n", 1, 12, "expected an indented block"),
    ("def f(x: f32):\nreturn x\n", 2, 1, "expected an indented block"),
    ("x = 1\n    y = 2\n", 2, 5, "unexpected indent"),
    ("  x = 1\n", 1, 3, "unexpected indent"),
    ("input sum: f32\n", 1, 7, "'sum' is a keyword and cannot be used as a name"),
    ("y = 2 * sum + 1\n", 1, 9, "'sum' is a keyword and cannot be used as a name"),
    ("y = f32 * 2\n", 1, 5, "'f32' is a keyword and cannot be used as a name"),
    ("X[i, max] = 1\n", 1, 6, "'max' is a keyword and cannot be used as a name"),
    ("y = A[i, csr]\n", 1, 10, "'csr' is a keyword and cannot be used as a name"),
    ("def f(where: f32):\n    return 1\n", 1, 7, "'where' is a keyword"),
    ("import topk\n", 1, 8, "'topk' is a keyword"),
    ("repeat:\n    x = 1\n", 1, 1, "'repeat' needs 'at most N', 'until CONDITION', or both"),
    ("x = a < b < c\n", 1, 11, "unexpected '<'"),
    ("x = 1 +\n", 1, 8, "unexpected end of input; expected an expression"),
    ("x = 1 +\ny = 2\n", 1, 8, "unexpected end of line; expected an expression"),
    ("x = a b\n", 1, 7, "unexpected 'b'; expected one of: end of line, "),
    ("X[i] mx= 1\n", 1, 6, "expected one of: '+=', '=', 'max=', 'min='"),
    ("input A: dense<f32>\n", 1, 20, "unexpected end of input; expected '['"),
    ("def f(x: f32) -> :\n    return x\n", 1, 18, "unexpected ':'; expected a type"),
    ("x = topk[j] W[i, j]\n", 1, 13, "unexpected 'W'; expected '('"),
    ("x = f(a\n\ny = 2)\n", 3, 1, "unexpected 'y'"),
    ("output C: f32 fil 0\n", 1, 15, "expected 'fill VALUE'"),
    ("input A: bsr(4)<f32>[M, N]\n", 1, 10, "format 'bsr' takes 2 parameters"),
    ("input A: csr(4)<f32>[M, N]\n", 1, 10, "format 'csr' takes no parameters"),
    ("input A: dense<f32>[M, 1.5]\n", 1, 24, "a size is a name or an integer"),
    ("x = f(a=1, b)\n", 1, 12, "a positional argument cannot follow a keyword argument"),
    ("x = f(a=1, a=2)\n", 1, 12, "keyword argument 'a' given twice"),
    ("schedule C:\n    block i 1.5\n", 2, 13, "schedule directive arguments are names or integers"),
    ("schedule C:\n    64 i\n", 2, 5, "a schedule directive starts with its name"),
    ("x = )\n", 1, 5, "unexpected ')'; expected an expression"),
    ("x = a where b where c\n", 1, 15, "unexpected 'where'; expected end of line"),
    ("x = a[]\n", 1, 7, "unexpected ']'; expected an expression"),
    ("input x f32\n", 1, 9, "unexpected 'f32'; expected ':'"),
    ("x = (a]\n", 1, 7, "unexpected ']'"),
    ("y = 1)\n", 1, 6, "unexpected ')'"),
    ("x = 1\r\ny = ?\r\n", 2, 5, "unexpected character '?'"),
    # A tab is eight columns: the first two body lines agree, the third matches no level.
    ("repeat until c:\n\tx = 1\n        y = 2\n z = 3\n", 4, 2, "unindent does not match"),
    ("repeat until c:\n\tx = 1\n\t y = 2\n", 3, 3, "unexpected indent"),
]


@pytest.mark.parametrize("text,line,col,message", ERRORS, ids=[e[3][:40] + f"@{e[1]}:{e[2]}" for e in ERRORS])
def test_syntax_errors(text, line, col, message):
    with pytest.raises(SdslSyntaxError) as info:
        parse(text, "bad.sdsl")
    err = info.value
    assert message in err.message
    assert (err.span.line, err.span.col) == (line, col), err.render()
    assert err.span.file == "bad.sdsl"
    assert err.render().startswith(f"bad.sdsl:{line}:{col}: error: ")


def test_unclosed_bracket_across_lines_gets_a_note():
    with pytest.raises(SdslSyntaxError) as info:
        parse("x = f(a\n\ny = 2)\n")
    assert any("'(' at line 1, column 6 is not closed" in n for n in info.value.notes)


def test_messages_never_show_lark_terminal_names():
    lark_names = re.compile(r"\b(RSQB|LSQB|LPAR|RPAR|COMMA|__ANON_\d+|_NEWLINE|_INDENT|_DEDENT|\$END|NAME|NUMBER)\b")
    for text, *_ in ERRORS:
        with pytest.raises(SdslSyntaxError) as info:
            parse(text)
        assert not lark_names.search(info.value.message), info.value.message


def test_render_shows_the_line_and_a_caret():
    with pytest.raises(SdslSyntaxError) as info:
        parse("x = 1\ny = sum + 2\n", "p.sdsl")
    assert info.value.render() == (
        "p.sdsl:2:5: error: 'sum' is a keyword and cannot be used as a name\ny = sum + 2\n    ^~~"
    )


def test_grammar_builds_in_strict_mode():
    # strict: any shift/reduce conflict or pair of terminals that can match the same text is an error
    from lark import Lark

    from sparsedsl.frontend.parser import grammar_text

    strict = Lark(grammar_text(), parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=True,
                  strict=True)
    assert strict.options.strict
