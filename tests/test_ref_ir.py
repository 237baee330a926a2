"""The reference interpreter on hand-built tensor IR: corners of spec § 5 and the interpreter's own fast
paths (contraction, chunking), each against numpy or a hand-computed value."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, strategies as st

from sparsedsl.backends.ref import evaluate, fastpath, interp
from sparsedsl.tensor_ir import nodes as N
from sparsedsl.tensor_ir.types import Format, TensorType, promote


# ---------------------------------------------------------------- IR builders

def ix(v: str) -> N.IndexVal:
    return N.IndexVal(v)


def acc(tensor: str, *pos, dtype: str = "f64") -> N.Access:
    return N.Access(tensor, tuple(ix(p) if isinstance(p, str) else p for p in pos), dtype)


def lit(value, dtype: str) -> N.Lit:
    return N.Lit(value, dtype)


def bop(op: str, a: N.Expr, b: N.Expr, dtype: str | None = None) -> N.Binary:
    if dtype is None:
        dtype = "bool" if op in N.COMPARISONS or op in ("and", "or") else promote(a.dtype, b.dtype)
    return N.Binary(op, a, b, dtype)


def red(op: str, vars: str, body: N.Expr, dtype: str | None = None) -> N.Reduce:
    return N.Reduce(op, tuple(vars.split()), body, dtype or body.dtype)


def decl(name: str, dtype: str, shape: str = "", kind: str = "temp", fmt: str = "auto", fill=None) -> N.Decl:
    dims = tuple(shape.split())
    fmt = "dense" if not dims and fmt == "auto" else fmt
    return N.Decl(name, TensorType(dtype, dims, Format(fmt)), kind,
                  fill=None if fill is None else N.Lit(fill, dtype))


def assign(target: str, idx: str, value: N.Expr, ranges: dict[str, str], op: str = "=") -> N.Assign:
    return N.Assign(target, tuple(idx.split()), op, value, tuple(ranges.items()))


def program(decls, body) -> N.Program:
    return N.Program("test", tuple(decls), tuple(body))


def present_everywhere(a) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    return a, np.ones(a.shape, bool)


def stored(a) -> tuple[np.ndarray, np.ndarray]:
    """A sparse operand: present where the dense array is nonzero."""
    a = np.asarray(a)
    return a, a != 0


# ---------------------------------------------------------------- presence

def test_union_of_broadcast_operands_only_is_an_intersection():
    prog = program(
        [decl("a", "f64", "M", "input", "coo"), decl("b", "f64", "N", "input", "coo"),
         decl("c", "f64", "M N", "output", "coo")],
        [assign("c", "i j", bop("+", acc("a", "i"), acc("b", "j")), {"i": "M", "j": "N"})])
    a = (np.array([1.0, 2.0, 0.0]), np.array([True, True, False]))
    b = (np.array([10.0, 0.0]), np.array([True, False]))
    values, present = evaluate(prog, {"a": a, "b": b}, {"M": 3, "N": 2})["c"]
    np.testing.assert_array_equal(present, [[True, False], [True, False], [False, False]])
    np.testing.assert_array_equal(values[:2, 0], [11.0, 12.0])


def test_broadcast_operand_absent_reads_as_identity_but_does_not_widen():
    # S[i, j] - m[i] with m absent at row 1: S's pattern, value S - 0 there
    prog = program(
        [decl("S", "f64", "M N", "input", "csr"), decl("m", "f64", "M", "input", "coo"),
         decl("D", "f64", "M N", "output", "coo")],
        [assign("D", "i j", bop("-", acc("S", "i", "j"), acc("m", "i")), {"i": "M", "j": "N"})])
    S = np.array([[1.0, 0.0], [2.0, 3.0]])
    m = (np.array([5.0, 7.0]), np.array([True, False]))
    values, present = evaluate(prog, {"S": stored(S), "m": m}, {"M": 2, "N": 2})["D"]
    np.testing.assert_array_equal(present, S != 0)
    np.testing.assert_array_equal(values, [[-4.0, 0.0], [2.0, 3.0]])


def test_logical_or_union_and_comparison_intersection():
    prog = program(
        [decl("a", "bool", "N", "input", "coo"), decl("b", "bool", "N", "input", "coo"),
         decl("o", "bool", "N", "output", "coo"), decl("e", "bool", "N", "output", "coo")],
        [assign("o", "i", bop("or", acc("a", "i", dtype="bool"), acc("b", "i", dtype="bool")), {"i": "N"}),
         assign("e", "i", bop("==", acc("a", "i", dtype="bool"), acc("b", "i", dtype="bool")), {"i": "N"})])
    a = (np.array([True, False, False, True]), np.array([True, True, False, False]))
    b = (np.array([False, False, True, False]), np.array([True, False, True, False]))
    out = evaluate(prog, {"a": a, "b": b}, {"N": 4})
    np.testing.assert_array_equal(out["o"][1], [True, True, True, False])
    np.testing.assert_array_equal(out["o"][0], [True, False, True, False])
    np.testing.assert_array_equal(out["e"][1], [True, False, False, False])
    np.testing.assert_array_equal(out["e"][0][0], False)


def test_pow_and_select():
    prog = program(
        [decl("a", "i64", "N", "input", "dense"), decl("b", "i64", "N", "input", "coo"),
         decl("p", "i64", "N", "output", "coo"), decl("s", "f64", "N", "output", "coo")],
        [assign("p", "i", N.Call("pow", (acc("a", "i", dtype="i64"), acc("b", "i", dtype="i64")), "i64"),
                {"i": "N"}),
         assign("s", "i", N.Call("select", (bop(">", acc("a", "i", dtype="i64"), lit(0, "i64")),
                                            N.Cast(acc("a", "i", dtype="i64"), "f64"), lit(0.5, "f64")), "f64"),
                {"i": "N"})])
    a = np.array([2, 3, 1, -1, 0, 2])
    b = (np.array([10, 0, -3, -3, -1, 5]), np.array([True] * 5 + [False]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = evaluate(prog, {"a": present_everywhere(a), "b": b}, {"N": 6})
    np.testing.assert_array_equal(out["p"][1], [True] * 5 + [False])
    np.testing.assert_array_equal(out["p"][0][:5], [1024, 1, 1, -1, 0])  # negative powers truncate toward 0
    np.testing.assert_array_equal(out["s"][0], [2.0, 3.0, 1.0, 0.5, 0.5, 2.0])


# ---------------------------------------------------------------- reductions, top-k corner cases

def test_argmax_never_picks_an_absent_entry_and_prefers_lowest_index():
    prog = program(
        [decl("x", "f64", "M N", "input", "coo"), decl("r", "i64", "M", "output", "coo"),
         decl("s", "i64", "M", "output", "coo")],
        [assign("r", "i", red("argmax", "j", acc("x", "i", "j"), "i64"), {"i": "M", "j": "N"}),
         assign("s", "i", red("argmin", "j", acc("x", "i", "j"), "i64"), {"i": "M", "j": "N"})])
    x = np.array([[0.0, -np.inf, -np.inf, 1.0], [5.0, 2.0, 2.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    present = np.array([[False, True, True, False], [True, True, True, True], [False] * 4])
    out = evaluate(prog, {"x": (x, present)}, {"M": 3, "N": 4})
    np.testing.assert_array_equal(out["r"][1], [True, True, False])
    np.testing.assert_array_equal(out["r"][0][:2], [1, 0])
    np.testing.assert_array_equal(out["s"][0][:2], [1, 1])


def test_topk_ranks_nan_as_smallest():
    def prog(largest):
        return program(
            [decl("x", "f64", "N", "input", "dense"), decl("p", "bool", "N", "output", "coo")],
            [assign("p", "i", N.TopK("i", lit(2, "i64"), None, largest, acc("x", "i")), {"i": "N"})])
    x = np.array([np.nan, 1.0, -np.inf, 3.0])
    top = evaluate(prog(True), {"x": present_everywhere(x)}, {"N": 4})["p"][1]
    bottom = evaluate(prog(False), {"x": present_everywhere(x)}, {"N": 4})["p"][1]
    assert top.tolist() == [False, True, False, True]
    assert bottom.tolist() == [True, False, True, False]


def test_topk_with_k_per_row():
    prog = program(
        [decl("x", "f64", "M N", "input", "dense"), decl("k", "i64", "M", "input", "dense"),
         decl("p", "bool", "M N", "output", "coo")],
        [assign("p", "i j", N.TopK("j", acc("k", "i", dtype="i64"), None, True, acc("x", "i", "j")),
                {"i": "M", "j": "N"})])
    x = np.array([[1.0, 4.0, 2.0], [3.0, 2.0, 1.0]])
    out = evaluate(prog, {"x": present_everywhere(x), "k": present_everywhere(np.array([1, 2]))},
                   {"M": 2, "N": 3})["p"][1]
    assert out.tolist() == [[False, True, False], [True, True, False]]


def test_softmax_all_entries_absent_row_stays_absent():
    prog = program(
        [decl("x", "f32", "M N", "input", "coo"), decl("p", "f32", "M N", "output", "coo")],
        [assign("p", "i j", N.Softmax("j", acc("x", "i", "j", dtype="f32"), "f32"), {"i": "M", "j": "N"})])
    x = np.array([[1.0, 2.0], [0.0, 0.0]], np.float32)
    values, present = evaluate(prog, {"x": stored(x)}, {"M": 2, "N": 2})["p"]
    assert values.dtype == np.float32
    np.testing.assert_array_equal(present, x != 0)
    e = np.exp(np.array([1.0, 2.0]) - 2.0)
    np.testing.assert_allclose(values[0], e / e.sum(), rtol=1e-6)


# ---------------------------------------------------------------- repeat

def test_repeat_locals_start_fresh_each_iteration():
    # t is local to the body: its += starts from nothing in every iteration, so acc grows by x each time
    prog = program(
        [decl("x", "f64", "N", "input", "dense"), decl("acc", "f64", "N", "output", "dense"),
         decl("t", "f64", "N")],
        [assign("acc", "i", lit(0.0, "f64"), {"i": "N"}),
         N.Repeat(lit(3, "i64"), None, (
             assign("t", "i", acc("x", "i"), {"i": "N"}, op="+="),
             assign("acc", "i", bop("+", acc("acc", "i"), acc("t", "i")), {"i": "N"}),
         ), ("acc",))])
    x = np.array([1.0, 2.0])
    out = evaluate(prog, {"x": present_everywhere(x)}, {"N": 2})["acc"][0]
    np.testing.assert_array_equal(out, 3 * x)


def test_repeat_condition_with_a_reduction_and_size_iterations():
    prog = program(
        [decl("x", "f64", "N", "input", "dense"), decl("y", "f64", "N", "output", "dense")],
        [assign("y", "i", acc("x", "i"), {"i": "N"}),
         N.Repeat(N.ScalarRef("N", "i64", is_size=True),
                  bop(">", red("sum", "i", acc("y", "i")), lit(20.0, "f64")),
                  (assign("y", "i", bop("*", acc("y", "i"), lit(2.0, "f64")), {"i": "N"}),), ("y",))])
    out = evaluate(prog, {"x": present_everywhere([1.0, 2.0, 0.0])}, {"N": 3})["y"][0]
    np.testing.assert_array_equal(out, [8.0, 16.0, 0.0])  # 3 -> 6 -> 12 -> 24 > 20 after 3 iterations
    out = evaluate(prog, {"x": present_everywhere([0.0, 0.5, 0.0])}, {"N": 3})["y"][0]
    np.testing.assert_array_equal(out, [0.0, 4.0, 0.0])  # stopped by N = 3 iterations


def test_input_default_and_size_reference():
    prog = program(
        [N.Decl("alpha", TensorType("f64"), "input", default=N.Lit(0.5, "f64")),
         decl("y", "f64", "N", "output", "dense")],
        [assign("y", "i", bop("*", N.ScalarRef("alpha", "f64"),
                              N.Cast(bop("+", ix("i"), N.ScalarRef("N", "i64", is_size=True)), "f64")),
                {"i": "N"})])
    out = evaluate(prog, {}, {"N": 3})["y"][0]
    np.testing.assert_array_equal(out, [1.5, 2.0, 2.5])


# ---------------------------------------------------------------- contraction fast path and chunking

def _spgemm_program(op="sum", combine="*", dtype="f64"):
    return program(
        [decl("A", dtype, "M K", "input", "csr"), decl("B", dtype, "K N", "input", "csr"),
         decl("C", dtype, "M N", "output", "coo")],
        [assign("C", "i j", red(op, "k", bop(combine, acc("A", "i", "k", dtype=dtype),
                                               acc("B", "k", "j", dtype=dtype))),
                {"i": "M", "j": "N", "k": "K"})])


def _literal_product(a, pa, b, pb, combine, reduce):
    """Oracle by explicit loops over the present terms."""
    m, k = a.shape
    n = b.shape[1]
    values = np.zeros((m, n))
    present = np.zeros((m, n), bool)
    for i in range(m):
        for j in range(n):
            terms = [combine(a[i, t], b[t, j]) for t in range(k) if pa[i, t] and pb[t, j]]
            if terms:
                present[i, j] = True
                values[i, j] = reduce(terms)
    return values, present


def test_sum_product_with_infinities_falls_back_to_literal_semantics():
    a = np.array([[np.inf, 1.0], [2.0, 0.0]])
    pa = np.array([[True, True], [True, False]])
    b = np.array([[0.0, 3.0], [4.0, 0.0]])
    pb = np.array([[False, True], [True, False]])
    values, present = evaluate(_spgemm_program(), {"A": (a, pa), "B": (b, pb)}, {"M": 2, "K": 2, "N": 2})["C"]
    want_v, want_p = _literal_product(a, pa, b, pb, lambda x, y: x * y, sum)
    np.testing.assert_array_equal(present, want_p)
    np.testing.assert_array_equal(values, want_v)   # inf * (absent) contributes nothing, not NaN


@pytest.mark.parametrize("op, combine, np_combine, np_reduce", [
    ("sum", "*", np.multiply, sum),
    ("min", "+", np.add, min),
    ("max", "*", np.multiply, max),
])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("chunk", [None, 7])
def test_semiring_products_match_loops(op, combine, np_combine, np_reduce, fast, chunk, monkeypatch):
    if not fast:
        monkeypatch.setattr(fastpath, "reduce_product", lambda *args: None)
    if chunk is not None:
        monkeypatch.setattr(interp, "CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(81)
    a = rng.integers(-3, 4, (6, 5)).astype(np.float64)
    b = rng.integers(-3, 4, (5, 4)).astype(np.float64)
    pa = rng.random((6, 5)) < 0.4
    pb = rng.random((5, 4)) < 0.4
    pa[2] = False
    values, present = evaluate(_spgemm_program(op, combine), {"A": (a, pa), "B": (b, pb)},
                               {"M": 6, "K": 5, "N": 4})["C"]
    want_v, want_p = _literal_product(a, pa, b, pb, np_combine, np_reduce)
    np.testing.assert_array_equal(present, want_p)
    np.testing.assert_allclose(values, want_v, rtol=1e-12)


@pytest.mark.parametrize("fast", [True, False])
def test_boolean_product_any_and(fast, monkeypatch):
    if not fast:
        monkeypatch.setattr(fastpath, "reduce_product", lambda *args: None)
    a = np.array([[True, False, True], [False, False, False]])
    pa = np.array([[True, True, True], [True, False, False]])
    b = np.array([[False, True], [True, True], [False, False]])
    pb = np.array([[True, True], [True, True], [True, False]])
    values, present = evaluate(_spgemm_program("any", "and", "bool"), {"A": (a, pa), "B": (b, pb)},
                               {"M": 2, "K": 3, "N": 2})["C"]
    np.testing.assert_array_equal(present, [[True, True], [True, True]])
    # row 0: k=0 (T and F, T and T), k=1 (F and ...), k=2 (T and F, absent)
    np.testing.assert_array_equal(values, [[False, True], [False, False]])


def test_scalar_triple_product_chunks_along_the_reduced_index(monkeypatch):
    monkeypatch.setattr(fastpath, "reduce_product", lambda *args: None)
    monkeypatch.setattr(interp, "CHUNK_ELEMENTS", 50)
    A = sp.random_array((9, 9), density=0.4, rng=np.random.default_rng(91)).toarray()
    L = np.tril(A, -1)
    L = (L + L.T) != 0
    body = bop("*", bop("*", acc("A", "i", "j"), acc("A", "j", "k")), acc("A", "k", "i"))
    prog = program([decl("A", "f64", "N N", "input", "csr"), decl("t", "f64", "", "output")],
                   [assign("t", "", red("sum", "i j k", body), {"i": "N", "j": "N", "k": "N"})])
    a = L.astype(np.float64)
    values, present = evaluate(prog, {"A": stored(a)}, {"N": 9})["t"]
    assert bool(present) and values == np.trace(a @ a @ a)


@given(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6), st.integers(0, 10 ** 6))
def test_sum_product_matches_scipy_on_random_shapes(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = np.where(rng.random((m, k)) < 0.5, rng.standard_normal((m, k)), 0.0)
    b = np.where(rng.random((k, n)) < 0.5, rng.standard_normal((k, n)), 0.0)
    values, present = evaluate(_spgemm_program(), {"A": stored(a), "B": stored(b)}, {"M": m, "K": k, "N": n})["C"]
    np.testing.assert_array_equal(present, ((a != 0).astype(int) @ (b != 0).astype(int)) > 0)
    np.testing.assert_allclose(values, (sp.csr_array(a) @ sp.csr_array(b)).toarray(), atol=1e-12)


def test_spmm_with_scalar_factor_through_sparse_path():
    rng = np.random.default_rng(95)
    a = np.where(rng.random((200, 150)) < 0.02, rng.standard_normal((200, 150)), 0.0)
    x = rng.standard_normal((150, 8))
    body = bop("*", bop("*", N.ScalarRef("s", "f64"), acc("A", "i", "k")), acc("X", "k", "f"))
    prog = program([decl("A", "f64", "M K", "input", "csr"), decl("X", "f64", "K F", "input", "dense"),
                    N.Decl("s", TensorType("f64"), "input"), decl("Y", "f64", "M F", "output", "coo")],
                   [assign("Y", "i f", red("sum", "k", body), {"i": "M", "f": "F", "k": "K"})])
    values, present = evaluate(prog, {"A": stored(a), "X": present_everywhere(x),
                                      "s": present_everywhere(np.float64(3.0))}, {"M": 200, "K": 150, "F": 8})["Y"]
    np.testing.assert_array_equal(present.all(axis=1), (a != 0).any(axis=1))
    np.testing.assert_allclose(values, 3.0 * a @ x, atol=1e-12)


def test_masked_product_through_where_matches_numpy():
    rng = np.random.default_rng(96)
    a = np.where(rng.random((30, 30)) < 0.1, 1.0, 0.0)
    body = N.Where(red("sum", "k", bop("*", acc("A", "i", "k"), acc("A", "k", "j"))),
                   N.MaskNot(N.MaskPresent(acc("A", "i", "j"))), "f64")
    prog = program([decl("A", "f64", "N N", "input", "csr"), decl("C", "f64", "N N", "output", "coo")],
                   [assign("C", "i j", body, {"i": "N", "j": "N", "k": "N"})])
    values, present = evaluate(prog, {"A": stored(a)}, {"N": 30})["C"]
    want = a @ a
    np.testing.assert_array_equal(present, (want > 0) & (a == 0))
    np.testing.assert_array_equal(values[present], want[present])
