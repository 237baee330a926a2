"""The printer: minimal parentheses, exact spellings, and parse(format(x)) == x for the corpus and for
hypothesis-generated ASTs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsedsl.frontend import syntax as ast
from sparsedsl.frontend.parser import parse
from sparsedsl.frontend.printer import format_expr, format_module, format_stmt, format_type

PROGRAMS = Path(__file__).parent / "programs"
N = ast.Name


def b(op, left, right):
    return ast.BinOp(op, left, right)


def red(op, idx, body, args=(), kwargs=()):
    return ast.Prefix(op, tuple(N(i) for i in idx), body, tuple(args), tuple(kwargs))


def neg(e):
    return ast.UnaryOp("-", e)


a, c, d = N("a"), N("c"), N("d")
bb = N("b")


# ---------------------------------------------------------------------------------------------- corpus


@pytest.mark.parametrize("path", sorted(PROGRAMS.glob("*.sdsl")), ids=lambda p: p.name)
def test_corpus_round_trip(path):
    original = parse(path.read_text(), path.name)
    printed = format_module(original)
    again = parse(printed)
    assert again == original
    # Printing is a fixed point after one trip.
    assert format_module(again) == printed


# ---------------------------------------------------------------------------------------------- exact text

PRINTED = [
    (b("*", b("+", a, bb), c), "(a + b) * c"),
    (b("+", a, b("*", bb, c)), "a + b * c"),
    (b("-", a, b("-", bb, c)), "a - (b - c)"),
    (b("-", b("-", a, bb), c), "a - b - c"),
    (b("/", a, b("*", bb, c)), "a / (b * c)"),
    (b("<", b("<", a, bb), c), "(a < b) < c"),
    (b("==", a, b("+", bb, c)), "a == b + c"),
    (b("and", b("or", a, bb), c), "(a or b) and c"),
    (b("or", a, b("and", bb, c)), "a or b and c"),
    (b("or", a, b("or", bb, c)), "a or (b or c)"),
    (ast.UnaryOp("not", b("==", a, bb)), "not a == b"),
    (b("==", ast.UnaryOp("not", a), bb), "(not a) == b"),
    (b("and", ast.UnaryOp("not", a), bb), "not a and b"),
    (neg(b("+", a, bb)), "-(a + b)"),
    (b("*", neg(a), bb), "-a * b"),
    (b("-", a, neg(bb)), "a - -b"),
    (b("+", red("sum", "k", b("*", a, bb)), c), "sum[k] a * b + c"),
    (red("sum", "k", b("+", a, bb)), "sum[k] (a + b)"),
    (b("*", red("sum", "k", a), bb), "(sum[k] a) * b"),
    (b("*", a, red("sum", "k", b("*", bb, c))), "a * sum[k] b * c"),
    (b("*", b("*", a, red("sum", "k", bb)), c), "(a * sum[k] b) * c"),
    (b("*", a, b("*", bb, c)), "a * (b * c)"),
    (neg(red("max", "ij", a)), "-max[i, j] a"),
    (b("*", neg(red("max", "j", a)), bb), "(-max[j] a) * b"),
    (b("@", a, neg(red("min", "j", a))), "a @ -min[j] a"),
    (neg(b("*", a, red("sum", "k", bb))), "-(a * sum[k] b)"),
    (red("topk", "j", a, args=(N("k"),), kwargs=(ast.Keyword("group", ast.Number(4)),)), "topk[j](k, group=4) a"),
    (red("softmax", "j", red("sum", "k", a)), "softmax[j] sum[k] a"),
    (ast.Access(b("+", a, bb), (N("i"),)), "(a + b)[i]"),
    (ast.Attribute(red("sum", "k", a), "T"), "(sum[k] a).T"),
    (ast.Attribute(ast.Attribute(N("gnn"), "gin"), "T"), "gnn.gin.T"),
    (ast.Call(N("f32"), (N("i"),)), "f32(i)"),
    (ast.Call(N("max"), (a, bb)), "max(a, b)"),
    (ast.Call(ast.Attribute(N("gnn"), "gin"), (a,), (ast.Keyword("eps", ast.Number(0.5)),)), "gnn.gin(a, eps=0.5)"),
    (ast.Where(a, b("and", bb, c)), "(a where b and c)"),
    (b("+", ast.Where(a, bb), c), "(a where b) + c"),
    (ast.Access(N("A"), (N("i"), b("+", b("*", ast.Number(4), N("g")), N("r")))), "A[i, 4 * g + r]"),
    (ast.Number(42, text="0x2A"), "42"),
    (ast.Number(0.1), "0.1"),
    (ast.Number(1e-12), "1e-12"),
    (ast.Number(1e22), "1e+22"),
    (ast.Attribute(ast.Number(3), "T"), "3.T"),
    (ast.Bool(False), "false"),
    (neg(ast.Number(2)), "-2"),
]


@pytest.mark.parametrize("node,text", PRINTED, ids=[t for _, t in PRINTED])
def test_minimal_parentheses(node, text):
    assert format_expr(node) == text
    assert parse(f"x = {text}\n").body[0].value == node


def test_statements_and_types_print():
    t = ast.TypeExpr("f32", ast.FormatExpr("bsr", (4, 4)), ("M", "N"))
    assert format_type(t) == "bsr(4, 4)<f32>[M, N]"
    assert format_type(ast.TypeExpr("bf16")) == "bf16"
    assert format_stmt(ast.OutputDecl("D", ast.TypeExpr("f32", ast.FormatExpr("dense"), ("N",)), N("inf"))) == (
        "output D: dense<f32>[N] fill inf\n"
    )
    assert format_stmt(ast.Assign("C", (N("i"),), "max=", a, bb)) == "C[i] max= a where b\n"
    assert format_stmt(ast.Assign("X", None, "=", ast.Where(a, bb))) == "X = (a where b)\n"
    rep = ast.Repeat(ast.Number(3), N("done"), (ast.Repeat(None, c, (ast.Assign("x", None, "=", a),)),))
    assert format_stmt(rep) == "repeat at most 3 until done:\n    repeat until c:\n        x = a\n"
    sched = ast.Schedule("C", (ast.Directive("block", ("i", 64)), ast.Directive("order", ("i", "k", "j"))))
    assert format_stmt(sched) == "schedule C:\n    block i 64\n    order i, k, j\n"
    sched = ast.Schedule("T", (ast.Directive("format", ("bsr", 4, "N")), ast.Directive("format", ("csr",))))
    assert format_stmt(sched) == "schedule T:\n    format bsr(4, N)\n    format csr\n"
    assert format_stmt(ast.FromImport("g", (ast.ImportName("a"), ast.ImportName("b", "c")))) == "from g import a, b as c\n"


def test_unprintable_trees_are_refused():
    with pytest.raises(ValueError):
        format_expr(N("sum"))
    with pytest.raises(ValueError):
        format_stmt(ast.Repeat(None, None, (ast.Assign("x", None, "=", a),)))
    with pytest.raises(ValueError):
        format_expr(red("sum", "", a))


def test_values_without_a_literal_print_as_their_equivalent():
    assert format_expr(ast.Number(-2.5)) == "-2.5"
    assert format_expr(b("*", a, ast.Number(-2))) == "a * -2"
    assert format_expr(ast.Access(ast.Number(-1), (N("i"),))) == "(-1)[i]"
    assert format_expr(ast.Number(math.inf)) == "inf"


# ---------------------------------------------------------------------------------------------- hypothesis

_IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True).filter(lambda s: s not in ast.KEYWORDS)
_names = _IDENT.map(N)
_numbers = st.one_of(
    st.integers(min_value=0, max_value=2**70),
    st.floats(min_value=0.0, allow_nan=False, allow_infinity=False).filter(lambda x: math.copysign(1.0, x) > 0),
).map(ast.Number)
_leaves = st.one_of(_names, _names, _numbers, st.booleans().map(ast.Bool))
_BINOPS = ("or", "and", "<", "<=", ">", ">=", "==", "!=", "+", "-", "|", "*", "/", "//", "%", "&", "@")
_KINDS = ("binop", "binop", "binop", "unary", "prefix", "select", "access", "call", "attribute", "where")
_CALLEES = ast.SCALAR_TYPES + ("max", "min")


# Strategies are built once: hypothesis spends most of its time analysing freshly built strategy objects.
_pick_leaf = st.integers(0, 3)
_kinds = st.sampled_from(_KINDS)
_binops = st.sampled_from(_BINOPS)
_unary_ops = st.sampled_from(("-", "not"))
_reductions = st.sampled_from(ast.REDUCTIONS + ("softmax", "logsumexp"))
_selections = st.sampled_from(("topk", "bottomk"))
_index_names = st.lists(_names, min_size=1, max_size=3).map(tuple)
_keyword_names = st.lists(_IDENT, max_size=2, unique=True)
_callees = st.one_of(_names, st.sampled_from(_CALLEES).map(N), st.builds(ast.Attribute, _names, _IDENT))
_counts = {(lo, hi): st.integers(lo, hi) for lo, hi in ((0, 2), (0, 3), (1, 3))}


@st.composite
def _expression_of_depth(draw, depth: int):
    if depth == 0 or draw(_pick_leaf) == 0:
        return draw(_leaves)

    def sub():
        return draw(_EXPRESSIONS[depth - 1])

    def some(lo, hi):
        return tuple(sub() for _ in range(draw(_counts[lo, hi])))

    def keywords():
        return tuple(ast.Keyword(n, sub()) for n in draw(_keyword_names))

    kind = draw(_kinds)
    if kind == "binop":
        return ast.BinOp(draw(_binops), sub(), sub())
    if kind == "unary":
        return ast.UnaryOp(draw(_unary_ops), sub())
    if kind == "prefix":
        return ast.Prefix(draw(_reductions), draw(_index_names), sub())
    if kind == "select":
        return ast.Prefix(draw(_selections), draw(_index_names), sub(), some(0, 2), keywords())
    if kind == "access":
        return ast.Access(sub(), some(1, 3))
    if kind == "call":
        return ast.Call(draw(_callees), some(0, 3), keywords())
    if kind == "attribute":
        return ast.Attribute(sub(), draw(_IDENT))
    return ast.Where(sub(), sub())


# Expression trees of bounded depth over every expression node kind.
_EXPRESSIONS = [_expression_of_depth(d) for d in range(5)]


def expressions(depth: int = 4):
    return _EXPRESSIONS[depth]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions())
def test_random_expressions_round_trip(e):
    text = format_expr(e)
    assert parse(f"x = {text}\n").body[0].value == e, text


_types = st.one_of(
    st.sampled_from(ast.SCALAR_TYPES).map(ast.TypeExpr),
    st.builds(
        lambda dtype, fmt, shape: ast.TypeExpr(dtype, fmt, shape),
        st.sampled_from(ast.SCALAR_TYPES),
        st.one_of(
            st.sampled_from(("dense", "csr", "csc", "coo")).map(ast.FormatExpr),
            st.builds(lambda p: ast.FormatExpr("bsr", p), st.tuples(st.integers(1, 64), _IDENT)),
            st.builds(lambda p: ast.FormatExpr("blockdiag", (p,)), st.one_of(st.integers(1, 64), _IDENT)),
            st.builds(lambda p: ast.FormatExpr("nm", p), st.tuples(st.integers(1, 4), st.integers(1, 8))),
        ),
        st.lists(st.one_of(_IDENT, st.integers(0, 1000)), min_size=1, max_size=3).map(tuple),
    ),
)
_small = expressions(depth=2)
_opt = lambda s: st.one_of(st.none(), s)  # noqa: E731
_simple_statements = st.one_of(
    st.builds(ast.InputDecl, _IDENT, _types, _opt(_small)),
    st.builds(ast.OutputDecl, _IDENT, _opt(_types), _opt(_small)),
    st.builds(ast.ConstDecl, _IDENT, _small),
    st.builds(
        ast.Assign, _IDENT, _opt(st.lists(_names, min_size=1, max_size=3).map(tuple)),
        st.sampled_from(ast.ACCUMULATE_OPS), _small, _opt(_small),
    ),
    st.builds(ast.Return, _small),
    st.builds(ast.Import, st.lists(_IDENT, min_size=1, max_size=3).map(".".join), _opt(_IDENT)),
    st.builds(
        ast.FromImport, _IDENT,
        st.lists(st.builds(ast.ImportName, _IDENT, _opt(_IDENT)), min_size=1, max_size=3).map(tuple),
    ),
    st.builds(
        ast.Schedule, _IDENT,
        st.lists(
            st.builds(
                ast.Directive,
                st.one_of(_IDENT, st.sampled_from(sorted(ast.KEYWORDS))),
                st.lists(st.one_of(_IDENT, st.sampled_from(ast.FORMATS), st.integers(0, 4096)), max_size=3).map(tuple),
            ),
            min_size=1, max_size=3,
        ).map(tuple),
    ),
)


_block_count = st.integers(1, 3)
_nest = st.integers(0, 2)
_params = st.lists(st.builds(ast.Param, _IDENT, _types), max_size=3).map(tuple)


@st.composite
def _statement_of_depth(draw, depth: int):
    if depth == 0 or draw(_nest) > 0:
        return draw(_simple_statements)
    body = tuple(draw(_STATEMENTS[depth - 1]) for _ in range(draw(_block_count)))
    kind = draw(_pick_leaf)
    if kind == 0:
        return ast.Repeat(draw(_small), draw(_opt_small), body)
    if kind == 1:
        return ast.Repeat(None, draw(_small), body)
    return ast.FuncDef(draw(_IDENT), draw(_params), draw(_opt_types), body)


_opt_types = _opt(_types)
_opt_small = _opt(_small)
# Statements, with repeat and def blocks nested up to two deep.
_STATEMENTS = [_statement_of_depth(d) for d in range(3)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_STATEMENTS[2], max_size=3).map(lambda body: ast.Module(tuple(body))))
def test_random_modules_round_trip(m):
    text = format_module(m)
    assert parse(text) == m, text
