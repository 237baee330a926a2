"""Correctness of the numba backend's fast paths, each against numpy / scipy computed independently.

The paths: the whole-row ("range") workspace of a reduction whose key loop is dense (SpMM), the
block-cyclic distribution of rows over chunks (row counts that are no multiple of the block, empty and
one-row matrices), the dense accumulator putting a long row in order through a bitmap instead of sorting,
the ``auto`` accumulator unswitched per row (rows hashed and rows dense in one product), and loops that
only count their coordinates. Each test also checks that the generated code takes the path it is about, so
that a change of lowering cannot leave the path untested. No timings here: see benchmarks/.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.backends.numba.subscripts import signed_subscripts

SPMM = """
input  A: csr<f64>[N, N]
input  X: dense<f64>[N, F]
output Y: dense<f64>[N, F]
Y[i, f] = sum[j] A[i, j] * X[j, f]
"""

SPMM_MAX_CSR = """
input  A: csr<f64>[N, N]
input  X: dense<f64>[N, F]
output Y: csr<f64>[N, F]
Y[i, f] = max[j] A[i, j] * X[j, f]
"""

SPGEMM = """
input  A: csr<f64>[N, N]
input  B: csr<f64>[N, N]
output C: csr<f64>[N, N]
C[i, j] = sum[k] A[i, k] * B[k, j]
"""


@pytest.fixture(scope="module")
def spmm():
    return sd.loads(SPMM, name="perf_spmm").compile(target="numba")


@pytest.fixture(scope="module")
def spmm_max():
    return sd.loads(SPMM_MAX_CSR, name="perf_spmm_max").compile(target="numba")


@pytest.fixture(scope="module")
def spgemm():
    return sd.loads(SPGEMM, name="perf_spgemm").compile(target="numba")


def _random_csr(n: int, m: int, density: float, seed: int) -> sp.csr_array:
    rng = np.random.default_rng(seed)
    a = sp.random_array((n, m), density=density, format="csr", rng=rng, dtype=np.float64)
    a.data = rng.standard_normal(a.nnz)
    a.sort_indices()
    return sp.csr_array(a)


def _dense_of(result) -> np.ndarray:
    return np.asarray(result.toarray() if hasattr(result, "toarray") else result)


def test_spmm_takes_the_whole_row_workspace(spmm):
    src = signed_subscripts(spmm.executable.source)
    assert "_first" in src and "_mark" not in src


@pytest.mark.parametrize("n, f, density", [(0, 3, 0.1), (1, 1, 1.0), (15, 4, 0.2), (16, 5, 0.3),
                                           (17, 3, 0.05), (203, 8, 0.03)])
def test_spmm_matches_numpy(spmm, n, f, density):
    A = _random_csr(n, n, density, seed=n + f)
    X = np.random.default_rng(n).standard_normal((n, f))
    Y = spmm(A=A, X=X)["Y"]
    np.testing.assert_allclose(np.asarray(Y), A.toarray() @ X, rtol=1e-12, atol=1e-12)


def test_spmm_empty_rows_are_zero_and_a_single_product_keeps_its_sign(spmm):
    # row 0: one entry -1 times X's zero row: the sum of one product -0.0 is -0.0 (no 0.0 + -0.0)
    A = sp.csr_array((np.array([-1.0, 2.0]), np.array([1, 0]), np.array([0, 1, 1, 2])), shape=(3, 3))
    X = np.array([[1.0, 2.0], [0.0, 0.0], [5.0, 6.0]])
    Y = np.asarray(spmm(A=A, X=X)["Y"])
    np.testing.assert_array_equal(Y, [[0.0, 0.0], [0.0, 0.0], [2.0, 4.0]])
    assert np.signbit(Y[0]).all() and not np.signbit(Y[1]).any()


def test_whole_row_workspace_with_max_into_csr(spmm_max):
    assert "_first" in signed_subscripts(spmm_max.executable.source)
    n, f = 37, 3
    A = _random_csr(n, n, 0.08, seed=5)
    X = np.random.default_rng(6).standard_normal((n, f))
    Y = spmm_max(A=A, X=X)["Y"]
    dense = A.toarray()
    expect = np.zeros((n, f))
    rows_present = np.diff(A.indptr) > 0
    for i in range(n):
        cols = A.indices[A.indptr[i]:A.indptr[i + 1]]
        if len(cols):
            expect[i] = (dense[i, cols][:, None] * X[cols]).max(axis=0)
    Ys = sp.csr_array(Y)
    assert Ys.nnz == rows_present.sum() * f  # a row with any entry is present in every column
    np.testing.assert_allclose(_dense_of(Ys), expect, rtol=1e-12, atol=0)


def test_spgemm_auto_is_unswitched_and_sorts_rows_through_bitmaps(spgemm):
    two_pass = sd.loads(SPGEMM, name="perf_spgemm_2p").compile(target="numba", assembly="two-pass")
    src = signed_subscripts(two_pass.executable.source)
    count = src[src.index("def k0_C_count"):src.index("def k0_C_fill")]
    fill = src[src.index("def k0_C_fill"):src.index("def run")]
    # the numeric phase puts long rows in order through the bitmaps, short ones by insertion
    assert "_bit_sort(" in fill and "_sort_segment(" in fill
    # the symbolic phase only counts a row's distinct keys: it never orders them
    assert "_sort_segment(" not in count and "_bit_sort(" not in count
    # one test of the accumulator per row, none per product
    assert src.count("if w_ws_hash:") <= 4
    # the output's index arrays are int32 when they fit (as scipy's), the row pointers follow them
    assert "dtype=np.int32 if" in src and "ptr_C.astype(idx_C.dtype" in src


@pytest.mark.parametrize("n, seed", [(1, 0), (16, 1), (33, 2), (500, 3), (70_000, 4)])
def test_spgemm_mixed_rows_match_scipy(spgemm, n, seed):
    """Rows of every kind in one product: up to 16 keys (insertion sort), long rows over several bitmap words
    and summary words (n = 500: 8 words; 70 000: 1094 words, 18 summary words), and, past 65536 columns,
    light rows in the hash table next to heavy rows in the dense accumulator."""
    rng = np.random.default_rng(seed)
    A = _random_csr(n, n, min(1.0, 2.0 / max(n, 1)), seed)
    B = _random_csr(n, n, min(1.0, 3.0 / max(n, 1)), seed + 100)
    if n > 40:
        # heavy rows: a dense row of A reaches most columns
        A = A.tolil()
        A[7, :] = rng.standard_normal(n)
        A[n - 1, : n // 2] = rng.standard_normal(n // 2)
        A = sp.csr_array(A.tocsr())
        B = B.tolil()
        B[3, :] = rng.standard_normal(n)
        B = sp.csr_array(B.tocsr())
    A.sort_indices()
    B.sort_indices()
    C = sp.csr_array(spgemm(A=A, B=B)["C"])
    assert C.indices.dtype == np.int32 and C.indptr.dtype == np.int32
    ref = sp.csr_array(A @ B)
    # same stored pattern (explicit products that cancel to 0 are stored by both), sorted columns
    structural = sp.csr_array((np.ones(A.nnz), A.indices, A.indptr), shape=A.shape) @ \
        sp.csr_array((np.ones(B.nnz), B.indices, B.indptr), shape=B.shape)
    structural.sort_indices()
    np.testing.assert_array_equal(C.indptr, structural.indptr)
    np.testing.assert_array_equal(C.indices, structural.indices)
    if n > 4096:
        assert np.diff(C.indptr).max() > 4096  # a row spans several summary words of the bitmap
    np.testing.assert_allclose((C - ref).toarray() if n <= 500 else abs(C - ref).max(), 0, atol=1e-12)


@pytest.mark.parametrize("accumulator", ["dense", "hash", "sort"])
def test_forced_accumulators_agree_with_scipy(accumulator):
    kernel = sd.loads(SPGEMM, name=f"perf_spgemm_{accumulator}").compile(target="numba", accumulator=accumulator)
    assert "_first" not in signed_subscripts(kernel.executable.source)
    A = _random_csr(70, 70, 0.06, seed=11)
    A = A.tolil()
    A[2, :] = 1.5
    A = sp.csr_array(A.tocsr())
    A.sort_indices()
    C = sp.csr_array(kernel(A=A, B=A)["C"])
    np.testing.assert_allclose(C.toarray(), (A @ A).toarray(), rtol=1e-12, atol=1e-12)


def test_gathered_rows_of_a_large_matrix_are_prefetched(spmm):
    """SpMM gathers X's rows in the order of A's keys; past PREFETCH_BYTES the rows some keys ahead are
    requested early. The generated code asks for X's rows (and SDDMM's for K's, attention's for K's and V's);
    the results on a matrix above the threshold, and on one below, equal scipy's."""
    from sparsedsl.backends.numba import codegen

    assert "_prefetch(val_X, " in signed_subscripts(spmm.executable.source)
    att = sd.loads("input G: csr<bool>[N, N]\ninput Q: dense<f32>[N, D]\ninput K: dense<f32>[N, D]\n"
                   "input V: dense<f32>[N, D]\noutput O: dense<f32>[N, D]\n"
                   "S[i, j] = sum[d] Q[i, d] * K[j, d] where G[i, j]\nP[i, j] = softmax[j] S[i, j]\n"
                   "O[i, d] = sum[j] P[i, j] * V[j, d]\n", name="perf_att_prefetch")
    src = signed_subscripts(att.compile(target="numba").executable.source)
    assert "_prefetch(val_K, " in src and "_prefetch(val_V, " in src
    rng = np.random.default_rng(5)
    for n, f in [(codegen.PREFETCH_BYTES // (8 * 16) + 1000, 16), (300, 16)]:
        A = _random_csr(n, n, 8.0 / n, seed=n)
        X = rng.standard_normal((n, f))
        assert (X.nbytes > codegen.PREFETCH_BYTES) == (n > 300)
        np.testing.assert_allclose(spmm(A=A, X=X)["Y"], A @ X, rtol=1e-12, atol=1e-12)


def test_an_innermost_loop_over_a_size_has_a_copy_for_64(spmm):
    """The copy for the common extent 64 and the general loop give the same result (F = 64 and F = 63)."""
    assert "if n_F == 64:" in spmm.executable.source and "for x_f in range(64):" in spmm.executable.source
    A = _random_csr(50, 50, 0.1, seed=9)
    for f in (64, 63):
        X = np.random.default_rng(f).standard_normal((50, f))
        np.testing.assert_allclose(spmm(A=A, X=X)["Y"], A @ X, rtol=1e-12, atol=1e-12)


SDDMM = """
input  G: csr<bool>[N, M]
input  Q: dense<f64>[N, D]
input  K: dense<f64>[M, D]
output S: csr<f64>[N, M]
S[i, j] = sum[d] Q[i, d] * K[j, d] where G[i, j]
"""


def _kernel_source(source: str, name: str) -> str:
    """The text of one generated kernel (from its decorator to the next one)."""
    start = source.index(f"def {name}(")
    end = source.find("@numba.njit", start)
    return source[start:] if end < 0 else source[start:end]


def test_a_result_under_a_structural_mask_takes_the_masks_rows():
    """SDDMM's pattern is its mask's: the symbolic phase is the mask's row lengths (no walk of its keys),
    the entries equal numpy's dots on random masks with empty rows and on an empty mask, and a reduction over
    an empty range (D = 0) leaves every row empty, as the reference says."""
    k = sd.loads(SDDMM, name="perf_sddmm_rows").compile(target="numba")
    count = _kernel_source(signed_subscripts(k.executable.source), "k0_S_count")
    assert "ptr_G[" in count and "idx_G" not in count
    rng = np.random.default_rng(3)
    for n, m, density in [(40, 30, 0.2), (1, 1, 1.0), (25, 7, 0.0), (60, 90, 0.02)]:
        G = _random_csr(n, m, density, seed=n * m).astype(bool)
        Q, K = rng.standard_normal((n, 5)), rng.standard_normal((m, 5))
        S = k(G=G, Q=Q, K=K)["S"]
        rows = np.repeat(np.arange(n), np.diff(G.indptr))
        np.testing.assert_array_equal(S.indptr, G.indptr)
        np.testing.assert_array_equal(S.indices, G.indices)
        np.testing.assert_allclose(S.data, np.einsum("ed,ed->e", Q[rows], K[G.indices]), rtol=1e-12)
    G = _random_csr(20, 20, 0.3, seed=1).astype(bool)
    for target in ("numba", "ref"):
        kt = k if target == "numba" else sd.loads(SDDMM, name="perf_sddmm_rows").compile(target="ref")
        S = kt(G=G, Q=np.zeros((20, 0)), K=np.zeros((20, 0)))["S"]
        assert S.nnz == 0 and S.shape == (20, 20)


@pytest.mark.parametrize("stmt, counted_from", [
    ("S[i, j] = A[i, j] * 2.0 where G[i, j]", "idx_G"),
    # the mask read transposed is a transposed copy of G made first, whose rows are then the pattern exactly
    ("S[i, j] = sum[d] Q[i, d] * K[j, d] where G[j, i]", "ptr_G_transposed"),
    ("S[i, j] = (sum[d] Q[i, d] * K[j, d] where G[i, j]) where j < i", "idx_G")])
def test_a_result_that_is_not_exactly_the_mask_is_counted(stmt, counted_from):
    """A value that may be absent under the mask (a sparse operand) or a further condition: the pattern is
    not the mask's rows, and the symbolic phase walks the keys; a mask read transposed is the rows of G's
    transposed copy. Results equal the reference's."""
    prog = ("input G: csr<bool>[N, N]\ninput A: csr<f64>[N, N]\ninput Q: dense<f64>[N, D]\n"
            "input K: dense<f64>[N, D]\noutput S: csr<f64>[N, N]\n" + stmt + "\n")
    k = sd.loads(prog, name="perf_sddmm_not_rows").compile(target="numba")
    name = next(ln[4:].split("(")[0] for ln in signed_subscripts(k.executable.source).splitlines()
                if ln.startswith("def k") and ln.split("(")[0].endswith("_S_count"))
    assert counted_from in _kernel_source(signed_subscripts(k.executable.source), name)
    rng = np.random.default_rng(4)
    G = _random_csr(30, 30, 0.2, seed=5).astype(bool)
    A = _random_csr(30, 30, 0.2, seed=6)
    Q, K = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    got = k(G=G, A=A, Q=Q, K=K)["S"]
    want = sd.loads(prog, name="perf_sddmm_not_rows").compile(target="ref")(G=G, A=A, Q=Q, K=K)["S"]
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=1e-12)


def test_constant_values_are_not_loaded_and_changing_ones_are():
    """A bool pattern's entries are all True, so ``i64(A[i, j]) where j < i`` is 1 wherever present and the
    kernels reading it use the constant. A name reassigned in a repeat or accumulated into is not a constant,
    even when its first value is; a literal's value is a constant too. Each program's result equals the reference's on a graph with explicit
    ``False`` entries stored (still pattern entries: they count as 1)."""
    tri = sd.loads("input A: csr<bool>[N, N]\noutput t: i64\nL[i, j] = i64(A[i, j]) where j < i\n"
                   "t = sum[i, j] (sum[k] L[i, k] * L[j, k] where L[i, j])\n", name="perf_const_tri")
    src = signed_subscripts(tri.compile(target="numba").executable.source)
    assert "val_L[" not in _kernel_source(src, "k2_t") and "val_A[" not in src
    changing = [
        "input A: csr<bool>[N, N]\noutput Y: csr<i64>[N, N]\nX[i, j] = i64(A[i, j])\n"
        "repeat at most 3:\n    X[i, j] = X[i, j] * 2 where A[i, j]\nY[i, j] = X[i, j] + 1 where A[i, j]\n",
        "input A: csr<bool>[N, N]\noutput Y: csr<i64>[N, N]\nX[i, j] = i64(A[i, j])\nX[i, j] += i64(A[j, i])\n"
        "Y[i, j] = X[i, j] * 3 where A[i, j]\n",
        # a constant from a literal, read by a masked union
        "input A: csr<bool>[N, N]\noutput Y: csr<i64>[N, N]\nX[i, j] = 5 where A[i, j] and j < i\n"
        "Y[i, j] = X[i, j] + i64(A[j, i]) where A[i, j]\n",
    ]
    rng = np.random.default_rng(8)
    A = _random_csr(12, 12, 0.3, seed=8)
    A.data = rng.random(A.nnz) < 0.7  # explicit False entries: a pattern still stores them
    A = sp.csr_array(A)
    for text in changing:
        prog = sd.loads(text, name="perf_const_changing")
        got, want = prog.compile(target="numba")(A=A)["Y"], prog.compile(target="ref")(A=A)["Y"]
        np.testing.assert_array_equal(got.toarray(), want.toarray())
        assert got.nnz == want.nnz


def test_rows_walked_by_a_lookup_loop_are_prefetched():
    """Triangle counting walks L[j, :] for each j of L[i, :]: past PREFETCH_BYTES the row start of the key
    some positions on, and a row pointer further on, are requested early; L's index array is int32. The count
    equals scipy's above the threshold and below it."""
    from sparsedsl.backends.numba import codegen

    tri = sd.loads("input A: csr<bool>[N, N]\noutput t: i64\nL[i, j] = i64(A[i, j]) where j < i\n"
                   "t = sum[i, j] (sum[k] L[i, k] * L[j, k] where L[i, j])\n", name="perf_tri_prefetch")
    k = tri.compile(target="numba")
    src = signed_subscripts(k.executable.source)
    assert "_prefetch_at(idx_L, ptr_L[" in src and "_prefetch_at(ptr_L, " in src
    assert re.search(r"idx_L = np\.empty\(.*dtype=np\.int32 if", src)
    for n, density in [(2200, 0.2), (300, 0.05)]:
        rng = np.random.default_rng(n)
        upper = sp.random_array((n, n), density=density, format="csr", rng=rng)
        S = ((upper + upper.T) != 0).astype(bool).tocsr()
        S.setdiag(False)
        S.eliminate_zeros()
        L = sp.tril(S, -1, format="csr").astype(np.int64)
        assert (L.nnz * 4 > codegen.PREFETCH_BYTES) == (n > 300)
        assert k(A=S)["t"] == int((L @ L.T).multiply(L).sum())


def test_spgemm_reads_accumulated_values_where_they_accumulated(spgemm):
    """The numeric kernel hoists A[i, k] out of the walk of row k, and the dense accumulator's sorted keys
    index its values directly instead of gathering them into a row first (the hash table still gathers)."""
    src = signed_subscripts(spgemm.executable.source)
    fill = src[src.index("def k0_C_fill"):src.index("def k0_C_place")]
    assert re.search(r"w_c_\d+_inv0 = val_A\[w_c_\d+_p\]", fill)
    assert "w_ws_val[w_ws_cidx[" in fill
    assert "w_ws_dcval[w_ws_t] =" not in fill
    assert "w_ws_hcval[w_ws_t] =" in fill
    dense = sd.loads(SPGEMM, name="perf_spgemm_direct_dense").compile(target="numba", accumulator="dense")
    assert "_dcval[w_ws_t] =" not in signed_subscripts(dense.executable.source)
    hashed = sd.loads(SPGEMM, name="perf_spgemm_direct_hash").compile(target="numba", accumulator="hash")
    assert "w_ws_val[w_ws_cidx[" not in signed_subscripts(hashed.executable.source)


@pytest.mark.parametrize("accumulator", [None, "dense", "hash"])
def test_spgemm_with_empty_rows_and_columns_and_signed_zeros(accumulator):
    """Rows of B with no entry (the hoisted A[i, k] is then never read), rows of A with none, and products
    whose only contribution is -0.0, against scipy; the result's stored zeros keep their sign."""
    options = {} if accumulator is None else {"accumulator": accumulator}
    kernel = sd.loads(SPGEMM, name=f"perf_spgemm_zeros_{accumulator}").compile(target="numba", **options)
    A = sp.csr_array((np.array([5.0, 2.0, -1.0, 3.0, 0.5]), np.array([0, 1, 3, 1, 3]), np.array([0, 3, 3, 4, 5])),
                     shape=(4, 4))
    B = sp.csr_array((np.array([-0.0, 4.0, 1.5]), np.array([2, 0, 2]), np.array([0, 0, 1, 1, 3])), shape=(4, 4))
    C = sp.csr_array(kernel(A=A, B=B)["C"])
    # row 0: A[0,0] meets B's empty row 0; A[0,1] * B[1,2] = -0.0 plus A[0,3] * B[3,:] = -1 * [4 at 0, 1.5 at 2];
    # row 2: only 3 * B[1,2] = -0.0
    np.testing.assert_array_equal(C.indptr, [0, 2, 2, 3, 5])
    np.testing.assert_array_equal(C.indices, [0, 2, 2, 0, 2])
    np.testing.assert_array_equal(C.data, [-4.0, -1.5, -0.0, 2.0, 0.75])
    assert np.signbit(C.data[2])
    np.testing.assert_allclose(C.toarray(), (A @ B).toarray(), rtol=0, atol=0)


def test_value_readers_only_when_nothing_else_reads_the_row():
    """The readers printed inside an unswitched row: the loops right after the Compact that read its values,
    unless a later statement reads them too or a reader accumulates into a workspace of its own."""
    from sparsedsl.backends.numba.codegen import _value_readers
    from sparsedsl.loop_ir import nodes as L

    cur = L.Cursor("w_c", "w_ws_cidx", L.Const(0, "i64"), L.Var("w_ws_n"))
    it = L.Iteration("intersect", drivers=(cur,))
    read = L.Load("w_ws_cval", (L.Var(cur.pos),))
    copy = L.Forall("x_j", it, (L.Store("out", (L.Var("x_j"),), read),))
    other = L.Forall("x_j", it, (L.Store("out2", (L.Var("x_j"),), L.Var("x_j")),))
    accumulating = L.Forall("x_j", it, (L.Accumulate("w_ws2", L.Var("x_j"), "sum", read),))
    head = (L.Reset("w_ws", L.Const(1, "i64")), L.Compact("w_ws"))
    assert _value_readers(head + (copy,), 1, "w_ws") == 1
    assert _value_readers(head + (copy, copy, other), 1, "w_ws") == 2
    assert _value_readers(head + (copy, L.Set("s", read)), 1, "w_ws") == 0
    assert _value_readers(head + (accumulating,), 1, "w_ws") == 0
    assert _value_readers(head + (other,), 1, "w_ws") == 0


SPMM_OF = """
input  A: csr<{dt}>[N, N]
input  X: dense<{dt}>[N, F]
output Y: dense<{dt}>[N, F]
Y[i, f] = {op}[j] A[i, j] * X[j, f]
"""


def test_a_jammed_step_accumulates_once_only_when_reassociating():
    """The four copies of a jammed SpMM step add their products together first, then to the output element,
    with ``reassoc`` on; with it off every contribution still goes to the element in the row's order."""
    program = sd.loads(SPMM_OF.format(dt="f32", op="sum"), name="perf_merge")
    on = signed_subscripts(program.compile(target="numba").executable.source)
    off = signed_subscripts(program.compile(target="numba", reassoc=False).executable.source)
    merged = re.compile(r"w_ws_v = .*x_j_u0.*x_j_u1.*x_j_u2.*x_j_u3")
    assert merged.search(on)
    assert not merged.search(off) and "x_j_u3" in off


@pytest.mark.parametrize("dt", ["f32", "f64", "i64", "i32"])
@pytest.mark.parametrize("op", ["sum", "max", "min"])
def test_merged_steps_match_numpy(dt, op):
    """Rows of 0 to 11 entries (whole steps of four and remainders) in every accumulating dtype; max and min
    exactly, NaN included (a NaN product anywhere in a step makes the element NaN, as numpy's maximum does)."""
    kernel = sd.loads(SPMM_OF.format(dt=dt, op=op), name=f"perf_merge_{dt}_{op}").compile(target="numba")
    rng = np.random.default_rng(5)
    n, f = 12, 7
    counts = np.arange(n) % 12
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = np.concatenate([np.sort(rng.choice(n, c, replace=False)) for c in counts]).astype(np.int32)
    npdt = {"f32": np.float32, "f64": np.float64, "i64": np.int64, "i32": np.int32}[dt]
    data = rng.integers(-4, 5, indptr[-1]).astype(npdt)
    X = rng.integers(-4, 5, (n, f)).astype(npdt)
    if dt.startswith("f") and op != "sum":
        X[3, 2] = np.nan
    A = sp.csr_array((data, indices, indptr), shape=(n, n))
    Y = np.asarray(kernel(A=A, X=X)["Y"])
    dense = A.toarray()
    expect = np.zeros((n, f), dtype=npdt)
    for i in range(n):
        cols = indices[indptr[i]:indptr[i + 1]]
        if len(cols):
            prods = dense[i, cols][:, None] * X[cols]
            expect[i] = {"sum": np.sum, "max": np.max, "min": np.min}[op](prods, axis=0)
    if dt.startswith("f"):
        np.testing.assert_allclose(Y, expect, rtol=1e-6 if dt == "f32" else 1e-14, atol=0)
        assert np.isnan(Y).sum() == np.isnan(expect).sum()
    else:
        np.testing.assert_array_equal(Y, expect)


def test_f32_exp_is_within_one_ulp_and_keeps_numpys_special_values():
    """float32 exp is a branch-free polynomial (``_exp32``, so that loops of it vectorize): within one ulp of
    the exact value over the whole range, subnormal results within one subnormal step, and inf, -inf, NaN,
    overflow and underflow as numpy gives them."""
    kernel = sd.loads("input X: dense<f32>[N]\noutput Y: dense<f32>[N]\nY[i] = exp(X[i])\n",
                      name="perf_exp32").compile(target="numba")
    assert "_exp32(" in signed_subscripts(kernel.executable.source)
    rng = np.random.default_rng(3)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-8, -1e-8, 1.0, -1.0,
                        88.72283172607421875, 88.72283935546875, 89.0, 1000.0,
                        -87.33654, -100.0, -103.2789, -103.97208, -104.0, -1000.0], dtype=np.float32)
    X = np.concatenate([special, rng.uniform(-110, 90, 200_000).astype(np.float32),
                        rng.uniform(-1, 1, 50_000).astype(np.float32)])
    Y = np.asarray(kernel(X=X)["Y"])
    with np.errstate(over="ignore"):
        exact = np.exp(X.astype(np.float64))
        numpy32 = np.exp(X)
    np.testing.assert_array_equal(np.isnan(Y), np.isnan(numpy32))
    np.testing.assert_array_equal(np.isinf(Y), np.isinf(numpy32))
    normal = np.isfinite(numpy32) & (exact >= np.finfo(np.float32).tiny)
    ulp = np.spacing(exact[normal].astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(Y[normal] - exact[normal]) / ulp) <= 1.0
    sub = np.isfinite(exact) & (exact < np.finfo(np.float32).tiny)
    assert np.max(np.abs(Y[sub] - exact[sub])) <= np.finfo(np.float32).smallest_subnormal
    assert Y[3] == 1.0 and Y[4] == 1.0 and Y[17] == 0.0 and Y[18] == 0.0


def test_attentions_exponentials_run_over_the_cached_row():
    """The softmax pass of attention reads its cached scores at pos - start with the start read once, and
    takes its exponentials through _exp32 (LLVM then vectorizes the pass)."""
    example = Path(__file__).resolve().parent.parent / "examples" / "graph_attention.sdsl"
    src = signed_subscripts(sd.load(str(example)).compile(target="numba").executable.source)
    m = re.search(r"(w_c_\d+)_s = ptr_G\[x_i\]\n\s*for \1_p in range\(\1_s, ", src)
    assert m
    assert re.search(r"_exp32\(np\.float32\(\(w_row\[\(" + m.group(1) + r"_p - " + m.group(1) + r"_s\)\]", src)
