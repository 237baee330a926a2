"""Reads of a compressed matrix against its rows on the numba target: transposed copies.

`C[i, j] = A[j, i] + B[i, j]` visits the rows `j` of A inside a loop over its columns `i`. Searched in place,
that is a dense loop over every row of A with a binary search in each, for every `i`: O(n^2 log n). The
lowering (``Lowerer.searched_by_rows`` / ``transpose``) instead makes a transposed copy of A once (a counting
sort, O(nnz + n)) and walks its rows. Every result here is checked against scipy and the reference
interpreter, on random and real inputs and the awkward cases (empty, one entry, empty rows, duplicates,
unsorted and int64 indices, every dtype).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.loop_ir import nodes as L

DATA = Path(__file__).resolve().parent.parent / "sparsedsl" / "data"

UNION = """\
input  A: csr<{dt}>[N, N]
input  B: csr<{dt}>[N, N]
output C: csr<{dt}>[N, N]
C[i, j] = A[j, i] {op} B[i, j]
"""

TRANSPOSE = """\
input  A: csr<{dt}>[M, N]
output C: csr<{dt}>[N, M]
C[i, j] = A[j, i]
"""

ATB = """\
input  A: csr<f64>[K, N]
input  B: csr<f64>[K, M]
output C: csr<f64>[N, M]
output s: dense<f64>[N]
C[i, j] = sum[k] A[k, i] * B[k, j]
s[i] = sum[k] A[k, i]
"""

MASKED = """\
input  A: csr<f64>[N, N]
input  B: csr<f64>[N, N]
output C: csr<f64>[N, N]
C[i, j] = A[j, i] * B[i, j]
"""


def _nb():
    return sd.api.backend_module("numba")


def _loops(src: str) -> L.Module:
    return _nb().lower(sd.loads(src, name="t").ir(optimized=True).program)


def _searches(module: L.Module) -> list[str]:
    """The index arrays the kernels binary-search (``Locate``)."""
    out = []

    def walk(e):
        if isinstance(e, L.Locate):
            out.append(e.idx)
        for x in L.expr_children(e):
            walk(x)

    for k in module.kernels:
        for s in L.walk_stmts(k.body):
            for name in ("value", "cond", "key", "start", "stop"):
                e = getattr(s, name, None)
                if isinstance(e, L.Expr):
                    walk(e)
            for e in getattr(s, "index", ()):
                walk(e)
    return out


def _random(shape, density, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    M = sp.random_array(shape, density=density, format="csr", rng=rng, dtype=np.float64)
    M.data = rng.integers(1, 5, size=M.nnz).astype(np.float64)  # small integers: exact in every dtype
    return sp.csr_array(M.astype(dtype))


def assert_same_csr(got, want) -> None:
    got = sp.csr_array(got)
    assert got.shape == want.shape
    assert got.has_sorted_indices
    np.testing.assert_array_equal(got.toarray(), want.toarray())


def test_a_transposed_read_walks_a_copy_instead_of_searching_rows():
    module = _loops(UNION.format(dt="f64", op="+"))
    names = [k.name for k in module.kernels]
    assert any(n.endswith("A_transposed_count") for n in names)
    assert any(n.endswith("A_transposed_fill") for n in names)
    assert _searches(module) == []
    dense = [s for k in module.kernels for s in L.walk_stmts(k.body)
             if isinstance(s, L.Forall) and s.iteration.kind == "dense"]
    assert dense == []  # the union of two compressed rows drives the loop over j
    explained = sd.loads(UNION.format(dt="f64", op="+"), name="t").explain()
    assert "numba: layout of A: transposed copy" in explained


def test_a_read_driven_by_another_operand_keeps_its_search():
    """`A[j, i] * B[i, j]`: B's row drives the loop over j; A is looked up at B's entries only (O(nnz log))."""
    module = _loops(MASKED)
    assert not any("transposed" in k.name for k in module.kernels)
    assert set(_searches(module)) == {"idx_A"}  # in the count and fill kernels
    A, B = _random((30, 30), 0.2, 1), _random((30, 30), 0.2, 2)
    assert_same_csr(sd.loads(MASKED, name="m").compile("numba", parallel=False)(A=A, B=B)["C"],
          sp.csr_array(A.T.multiply(B)))


@pytest.mark.parametrize("dt, np_dt", [("f64", np.float64), ("f32", np.float32), ("i64", np.int64),
                                       ("i32", np.int32), ("bool", np.bool_)])
def test_every_dtype_matches_scipy_and_the_reference(dt, np_dt):
    prog = sd.loads(UNION.format(dt=dt, op="or" if dt == "bool" else "+"), name="u")
    fast, ref = prog.compile("numba"), prog.compile("ref")
    A, B = _random((50, 50), 0.1, 3, np_dt), _random((50, 50), 0.1, 4, np_dt)
    want = sp.csr_array(A.T + B) if dt != "bool" else sp.csr_array((A.T + B).astype(bool))
    got = fast(A=A, B=B)["C"]
    assert_same_csr(got, want)
    assert_same_csr(ref(A=A, B=B)["C"], want)


def test_awkward_inputs():
    prog = sd.loads(TRANSPOSE.format(dt="f64"), name="tr")
    fast = prog.compile("numba", parallel=False)
    ref = prog.compile("ref")
    one = sp.csr_array(([2.5], ([3], [5])), shape=(7, 9))
    rows_empty = sp.csr_array(np.array([[0, 0, 0], [1.0, 0, 2.0], [0, 0, 0], [0, 3.0, 0]]))
    cols_empty = sp.csr_array(np.array([[0, 1.0, 0, 0], [0, 2.0, 0, 0]]))
    rng = np.random.default_rng(5)
    rows, cols = rng.integers(0, 20, 300), rng.integers(0, 30, 300)
    dup = sp.coo_array((rng.integers(1, 4, 300).astype(np.float64), (rows, cols)), shape=(20, 30))
    wide = _random((40, 70), 0.08, 6)
    wide.indices, wide.indptr = wide.indices.astype(np.int64), wide.indptr.astype(np.int64)
    for A in (sp.csr_array((0, 0)), sp.csr_array((0, 4)), sp.csr_array((5, 5)), one, rows_empty, cols_empty,
              dup, wide):
        before = A.copy()
        want = sp.csr_array(sp.csr_array(A).T)
        want.sum_duplicates()
        assert_same_csr(fast(A=A)["C"], want)
        assert_same_csr(ref(A=A)["C"], want)
        assert (sp.csr_array(A) != sp.csr_array(before)).nnz == 0  # the input is untouched


def test_transposed_operand_of_a_product_and_a_column_sum():
    """AᵀB becomes a row-wise product over the rows of Aᵀ (the column sum scatters A's rows: no search)."""
    module = _loops(ATB)
    assert _searches(module) == []
    assert any(k.name.endswith("A_transposed_fill") for k in module.kernels)
    prog = sd.loads(ATB, name="atb")
    A, B = _random((60, 45), 0.08, 7), _random((60, 35), 0.08, 8)
    for kernel in (prog.compile("numba"), prog.compile("numba", parallel=False)):
        out = kernel(A=A, B=B)
        np.testing.assert_allclose(sp.csr_array(out["C"]).toarray(), (A.T @ B).toarray(), rtol=1e-12)
        np.testing.assert_allclose(out["s"], np.asarray(A.sum(axis=0)).ravel(), rtol=1e-12)
    ref = prog.compile("ref")(A=A, B=B)
    np.testing.assert_allclose(sp.csr_array(ref["C"]).toarray(), (A.T @ B).toarray(), rtol=1e-12)


def test_a_matrix_reassigned_in_a_repeat_is_transposed_each_time():
    """X = Xᵀ + I three times: each iteration copies the value of that iteration."""
    src = """\
input  A: csr<f64>[N, N]
input  I: csr<f64>[N, N]
output X: csr<f64>[N, N]
X[i, j] = A[i, j]
repeat at most 3:
    X[i, j] = X[j, i] * 2.0 + I[i, j]
"""
    prog = sd.loads(src, name="rep")
    A = _random((25, 25), 0.15, 9)
    I = sp.csr_array(sp.identity(25, format="csr"))
    X = A.copy()
    for _ in range(3):
        X = sp.csr_array(X.T * 2.0 + I)
    assert_same_csr(prog.compile("numba")(A=A, I=I)["X"], X)
    assert_same_csr(prog.compile("ref")(A=A, I=I)["X"], X)


def test_real_graph_symmetrized():
    """wiki-Vote (directed, 7115 vertices): A + Aᵀ, against scipy."""
    A = sp.csr_array(scipy.io.mmread(DATA / "wiki-Vote.mtx.gz")).astype(np.float64)
    A.sum_duplicates()
    out = sd.loads(UNION.format(dt="f64", op="+"), name="u").compile("numba")(A=A, B=A)["C"]
    assert_same_csr(out, sp.csr_array(A.T + A))


def test_a_copy_is_shared_until_the_matrix_changes():
    """Two statements reading A transposed share one copy; X read transposed before and after it is
    reassigned (in a repeat, whose body reassigns it each time) gets a fresh copy each time."""
    two = """\
input  A: csr<f64>[N, N]
input  B: csr<f64>[N, N]
output C: csr<f64>[N, N]
output D: csr<f64>[N, N]
C[i, j] = A[j, i] + B[i, j]
D[i, j] = A[j, i] - B[i, j]
"""
    module = _loops(two)
    assert sum(k.name.endswith("_transposed_fill") for k in module.kernels) == 1
    src = """\
input  A: csr<f64>[N, N]
input  B: csr<f64>[N, N]
output X: csr<f64>[N, N]
output Y: csr<f64>[N, N]
X[i, j] = A[i, j]
Y[i, j] = B[i, j]
repeat at most 2:
    Y[i, j] += X[j, i]
    X[i, j] = X[i, j] * 3.0 + B[i, j]
    Y[i, j] += X[j, i]
Y[i, j] += X[j, i]
"""
    A, B = _random((30, 30), 0.1, 10), _random((30, 30), 0.1, 11)
    X, Y = A.copy(), B.copy()
    for _ in range(2):
        Y = sp.csr_array(X.T + Y)
        X = sp.csr_array(X * 3.0 + B)
        Y = sp.csr_array(X.T + Y)
    Y = sp.csr_array(X.T + Y)
    prog = sd.loads(src, name="copies")
    for kernel in (prog.compile("numba"), prog.compile("ref")):
        out = kernel(A=A, B=B)
        assert_same_csr(out["X"], X)
        assert_same_csr(out["Y"], Y)


ABT = """\
input  A: csr<f64>[N, K]
input  B: csr<f64>[M, K]
output C: csr<f64>[N, M]
C[i, j] = sum[k] A[i, k] * B[j, k]
"""

TRIANGLES = """\
input  A: csr<bool>[N, N]
output t: i64
L[i, j] = i64(A[i, j]) where j < i
t = sum[i, j] (sum[k] L[i, k] * L[j, k] where L[i, j])
"""


def test_rows_walked_in_a_dense_loop_are_transposed_once_nothing_is_searched():
    """A·Bᵀ intersected A's row i with every row j of B (O(n^2)); with Bᵀ copied it is a row-wise product.
    In Aᵀ·B only A is transposed: B's rows walked at each k belong to the row-wise product that follows."""
    abt = _loops(ABT)
    assert [k.name for k in abt.kernels if k.name.endswith("_transposed_fill")] == ["k0_B_transposed_fill"]
    assert any(isinstance(s, L.Workspace) for k in abt.kernels for s in L.walk_stmts(k.body))
    atb = _loops(ATB)
    assert [k.name for k in atb.kernels if k.name.endswith("_transposed_fill")] == ["k0_A_transposed_fill"]
    prog = sd.loads(ABT, name="abt")
    A, B = _random((50, 40), 0.1, 12), _random((30, 40), 0.1, 13)
    for kernel in (prog.compile("numba"), prog.compile("ref")):
        np.testing.assert_allclose(sp.csr_array(kernel(A=A, B=B)["C"]).toarray(), (A @ B.T).toarray(), rtol=1e-12)


def test_a_loop_driven_by_a_mask_is_left_alone():
    """Triangle counting's j loop is driven by the mask L[i, j]: its rows of L are walked only at the mask's
    entries, which is the masked product's whole point; nothing is copied."""
    module = _loops(TRIANGLES)
    assert not any("transposed" in k.name for k in module.kernels)
    A = sp.csr_array(scipy.io.mmread(DATA / "ca-HepTh.mtx.gz"))
    S = sp.csr_array(((A + A.T) > 0).astype(np.float64))
    L_ = sp.tril(S, -1, format="csr")
    want = int((L_ @ L_.T).multiply(L_).sum())
    assert int(sd.loads(TRIANGLES, name="tri").compile("numba")(A=S)["t"]) == want


def test_a_copy_made_in_a_loop_that_did_not_run_is_not_read_after_it():
    """The first loop runs no iteration: the copy of A its body makes does not exist after it, so the second
    loop's body and the statement after both loops make their own."""
    src = """\
input  A: csr<f64>[N, N]
output X: csr<f64>[N, N]
output Y: csr<f64>[N, N]
output Z: csr<f64>[N, N]
X[i, j] = A[i, j]
Y[i, j] = A[i, j]
repeat at most 0:
    X[i, j] += A[j, i]
repeat at most 2:
    Y[i, j] += A[j, i]
Z[i, j] = A[j, i] + X[i, j]
"""
    A = _random((20, 20), 0.15, 14)
    want_y = sp.csr_array(A + 2 * A.T)
    want_z = sp.csr_array(A.T + A)
    prog = sd.loads(src, name="loops")
    for kernel in (prog.compile("numba"), prog.compile("ref")):
        out = kernel(A=A)
        assert_same_csr(out["X"], sp.csr_array(A))
        assert_same_csr(out["Y"], want_y)
        assert_same_csr(out["Z"], want_z)
