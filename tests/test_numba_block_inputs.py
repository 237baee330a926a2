"""Inputs in formats other than csr (bsr, blockdiag, nm, csc) on the numba target.

Where the kernels read such an input's rows (merged with another operand, or with block walks turned off:
``tests/test_numba_block_iteration.py`` covers the walks of its own layout), it is placed into rows at the call
(``backends/numba/layouts.py`` for bsr and csc, ``Tensor.to_csr`` for the others) without sorting its
coordinates; a csc read against its rows is walked by its columns as stored. Every result is checked against
scipy and the reference interpreter, with stored zeros inside blocks (present entries), empty block rows, an
empty matrix, one block, unsorted and duplicate blocks and int64 indices from scipy, and every dtype.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.runtime.tensors import NM, BlockDiag

SPMM = """\
input  A: {fmt}<{dt}>[M, K]
input  X: dense<{dt}>[K, F]
output Y: dense<{dt}>[M, F]
Y[i, f] = sum[k] A[i, k] * X[k, f]
"""

UNION = """\
input  A: bsr(2, 3)<f64>[M, N]
input  B: csr<f64>[M, N]
output C: csr<f64>[M, N]
output n: i64
C[i, j] = A[i, j] + B[i, j]
n = sum[i, j] i64(A[i, j] == A[i, j])
"""


def _bsr(m, k, bm, bn, density, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    keep = sp.random_array((m // bm, k // bn), density=density, format="csr", rng=rng)
    blocks = rng.integers(-3, 4, size=(keep.nnz, bm, bn)).astype(dtype)  # stored zeros inside blocks
    return sp.bsr_array((blocks, keep.indices, keep.indptr), shape=(m, k))


@pytest.mark.parametrize("dt, np_dt", [("f64", np.float64), ("f32", np.float32), ("i64", np.int64),
                                       ("i32", np.int32)])
def test_bsr_spmm_matches_scipy_and_the_reference(dt, np_dt):
    prog = sd.loads(SPMM.format(fmt="bsr(4, 2)", dt=dt), name="bsr_spmm")
    fast, ref = prog.compile("numba"), prog.compile("ref")
    rng = np.random.default_rng(1)
    for A in (_bsr(24, 16, 4, 2, 0.3, 2, np_dt), _bsr(8, 6, 4, 2, 0.0, 3, np_dt), _bsr(0, 0, 4, 2, 0.5, 4, np_dt),
              _bsr(4, 2, 4, 2, 1.0, 5, np_dt)):
        X = rng.integers(-2, 3, size=(A.shape[1], 5)).astype(np_dt)
        before = (A.copy(), X.copy())
        want = (A @ X).astype(np_dt)
        np.testing.assert_array_equal(fast(A=A, X=X)["Y"], want)
        np.testing.assert_array_equal(ref(A=A, X=X)["Y"], want)
        assert (A != before[0]).nnz == 0 and np.array_equal(X, before[1])


def test_bsr_stored_zeros_are_present_and_unsorted_blocks_are_summed():
    """A BSR's block entries are all present (the count says so); scipy BSR with unsorted, duplicate blocks
    and int64 indices is canonicalized (duplicates summed) before it is placed in rows."""
    prog = sd.loads(UNION, name="bsr_union")
    fast, ref = prog.compile("numba"), prog.compile("ref")
    blocks = np.arange(1, 19, dtype=np.float64).reshape(3, 2, 3)
    blocks[0, 1, 2] = 0.0
    A = sp.bsr_array((blocks, np.array([1, 0, 1], dtype=np.int64), np.array([0, 2, 2, 3], dtype=np.int64)),
                     shape=(6, 6))  # block row 0: columns 1 then 0 (unsorted); block row 1 empty
    dup = sp.bsr_array((np.ones((2, 2, 3)), np.array([0, 0]), np.array([0, 2, 2, 2])), shape=(6, 6))
    B = sp.csr_array(np.diag(np.arange(1.0, 7.0)))
    for a in (A, dup):
        want = sp.csr_array(sp.csr_array(a.toarray()) + B)
        present = np.zeros((6, 6), dtype=bool)
        present[a.toarray() != 0] = True
        stored = sum(int(blk.size) for blk in sp.bsr_array(a).data) if a is A else 6
        for kernel in (fast, ref):
            out = kernel(A=a, B=B)
            np.testing.assert_array_equal(sp.csr_array(out["C"]).toarray(), want.toarray())
            assert int(out["n"]) == stored


@pytest.mark.parametrize("fmt", ["blockdiag(3)", "nm(2, 4)"])
def test_blockdiag_and_nm_spmm(fmt):
    rng = np.random.default_rng(6)
    if fmt.startswith("blockdiag"):
        A = BlockDiag(rng.integers(-2, 3, size=(3, 4, 4)).astype(np.float64))
        dense = sp.block_diag(list(A.blocks)).toarray()
    else:
        dense = rng.integers(-2, 3, size=(12, 12)).astype(np.float64)
        dense[:, 1::4] = 0.0
        dense[:, 3::4] = 0.0  # at most 2 nonzeros in each run of 4
        A = NM.from_dense(dense, 2, 4)
    X = rng.standard_normal((12, 3))
    prog = sd.loads(SPMM.format(fmt=fmt, dt="f64"), name="block_spmm")
    for kernel in (prog.compile("numba"), prog.compile("ref")):
        np.testing.assert_allclose(kernel(A=A, X=X)["Y"], dense @ X, rtol=1e-12)


CSC_MV = """\
input  A: csc<{dt}>[M, N]
input  x: dense<{dt}>[N]
output y: dense<{dt}>[M]
output C: csr<{dt}>[M, N]
y[i] = sum[j] A[i, j] * x[j]
C[i, j] = A[i, j] * 2
"""


@pytest.mark.parametrize("dt, np_dt", [("f64", np.float64), ("f32", np.float32), ("i64", np.int64)])
def test_csc_inputs_are_transposed_into_rows(dt, np_dt):
    """A declared csc input goes to the kernels by a counting sort into rows: SpMV and a copy by rows equal
    scipy's and the reference's on random, empty, one-entry, unsorted/duplicate and int64-indexed inputs."""
    prog = sd.loads(CSC_MV.format(dt=dt), name="csc_mv")
    fast, ref = prog.compile("numba"), prog.compile("ref")
    rng = np.random.default_rng(7)
    rand = sp.csc_array(sp.random_array((30, 20), density=0.15, rng=rng, format="csc"))
    rand.data = rng.integers(1, 5, size=rand.nnz).astype(np.float64)
    wide = sp.csc_array(rand)
    wide.indices, wide.indptr = wide.indices.astype(np.int64), wide.indptr.astype(np.int64)
    messy = sp.csc_array((np.array([1.0, 2.0, 3.0, 4.0]), np.array([4, 1, 4, 0]), np.array([0, 3, 3, 4])),
                         shape=(6, 3))  # column 0: rows 4, 1, 4 (unsorted, a duplicate); column 1 empty
    cases = [rand, wide, messy, sp.csc_array((0, 0)), sp.csc_array((5, 4)),
             sp.csc_array(([2.0], ([3], [1])), shape=(5, 4))]
    for A in cases:
        A = sp.csc_array(A.astype(np_dt))
        x = rng.integers(-2, 3, size=A.shape[1]).astype(np_dt)
        canon = sp.csr_array(A)
        canon.sum_duplicates()
        want_y = (canon @ x).astype(np_dt)
        before = A.copy()
        for kernel in (fast, ref):
            out = kernel(A=A, x=x)
            np.testing.assert_array_equal(out["y"], want_y)
            got = sp.csr_array(out["C"])
            assert got.has_sorted_indices
            np.testing.assert_array_equal(got.toarray(), 2 * canon.toarray())
        assert (A != before).nnz == 0 and np.array_equal(A.indices, before.indices)


CSC_T = """\
input  A: csc<{dt}>[M, N]
input  B: csr<{dt}>[N, M]
input  D: csr<{dt}>[M, K]
output C: csr<{dt}>[N, M]
output P: csr<{dt}>[N, K]
C[i, j] = A[j, i] + B[i, j]
P[i, j] = sum[k] A[k, i] * D[k, j]
"""


@pytest.mark.parametrize("dt, np_dt", [("f64", np.float64), ("i64", np.int64)])
def test_csc_read_against_its_rows_walks_its_columns(dt, np_dt):
    """Aᵀ + B and Aᵀ·D with A csc: the kernels walk A's columns as stored (its transpose's rows): the module
    takes A's own arrays only, so nothing is converted or transposed, on messy and empty inputs too."""
    prog = sd.loads(CSC_T.format(dt=dt), name="csc_t")
    fast, ref = prog.compile("numba"), prog.compile("ref")
    assert {p.role for p in fast.executable.module.params if p.tensor == "A"} == {"bptr", "bidx", "bval"}
    assert "transposed_count" not in fast.source  # no counting-sort kernels
    rng = np.random.default_rng(8)
    rand = sp.csc_array(sp.random_array((12, 9), density=0.3, rng=rng, format="csc"))
    messy = sp.csc_array((np.array([1.0, 2.0, 3.0, 4.0]), np.array([4, 1, 4, 0]), np.array([0, 3, 3, 4] + [4] * 6)),
                         shape=(12, 9))  # column 0: rows 4, 1, 4 (unsorted, a duplicate); later columns empty
    for A in (rand, messy, sp.csc_array((12, 9))):
        A = sp.csc_array(A.astype(np_dt))
        B = sp.csr_array(sp.random_array((9, 12), density=0.2, rng=rng).astype(np_dt))
        D = sp.csr_array(sp.random_array((12, 5), density=0.3, rng=rng).astype(np_dt))
        canon = sp.csc_array(A)
        canon.sum_duplicates()
        for kernel in (fast, ref):
            out = kernel(A=A, B=B, D=D)
            np.testing.assert_allclose(sp.csr_array(out["C"]).toarray(), (canon.T + B).toarray(), rtol=1e-12)
            np.testing.assert_allclose(sp.csr_array(out["P"]).toarray(), (canon.T @ D).toarray(), rtol=1e-12)
