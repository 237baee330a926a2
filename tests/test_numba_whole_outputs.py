"""A dense output that its kernel writes whole is allocated without a fill (``codegen._written_whole``); every
other dense output keeps its fill. Each program runs right after an array of the output's size full of NaN
was freed, so that an uninitialized output would most likely reuse that memory: rows with no contribution
must still hold the fill exactly. Oracles: numpy on the dense matrices, and the reference interpreter."""
from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd

SPMM = """input  A: csr<f32>[N, M]
input  X: dense<f32>[M, F]
output Y: dense<f32>[N, F]
Y[i, f] = sum[j] A[i, j] * X[j, f]
"""

ATTENTION = """input  G: csr<bool>[N, N]
input  Q: dense<f32>[N, D]
input  K: dense<f32>[N, D]
input  V: dense<f32>[N, D]
output O: dense<f32>[N, D]
S[i, j] = 0.125 * sum[d] Q[i, d] * K[j, d] where G[i, j]
P[i, j] = softmax[j] S[i, j]
O[i, d] = sum[j] P[i, j] * V[j, d]
"""

# the same product with an output fill, a max reduction, and one whose rows are kept only under a mask
SPMM_FILL = SPMM.replace("output Y: dense<f32>[N, F]", "output Y: dense<f32>[N, F] fill 7")
SPMM_MAX = SPMM.replace("sum[j]", "max[j]")
SPMM_ROWMASK = SPMM.replace("X[j, f]\n", "X[j, f] where i % 3 != 1\n")
# dense rows: no compressed row pointers to cut chunks by
DENSE_MM = SPMM.replace("csr<f32>[N, M]", "dense<f32>[N, M]")


def matrix(n=40, m=30, density=0.08, seed=0) -> sp.csr_array:
    rng = np.random.default_rng(seed)
    a = sp.random_array((n, m), density=density, format="csr", dtype=np.float32, rng=rng)
    a = a.tolil()
    a[3, :] = 0          # empty rows, first and in the middle
    a[0, :] = 0
    a[n - 1, :] = 0
    return sp.csr_array(a)


def allocation(source: str, name: str) -> str:
    return re.search(rf"^\s*{name} = (np\.\w+)\(", source, re.M).group(1)


def poisoned(shape, dtype, call):
    junk = np.full(shape, np.nan, dtype=dtype)
    del junk
    return call()


@pytest.mark.parametrize("src, expected", [(SPMM, "np.empty"), (SPMM_FILL, "np.empty"), (SPMM_MAX, "np.empty"),
                                           (SPMM_ROWMASK, "np.zeros"), (DENSE_MM, "np.zeros")])
def test_which_outputs_skip_the_fill(src, expected):
    kernel = sd.loads(src, name="whole").compile(target="numba")
    assert allocation(kernel.source, "val_Y") == expected


@pytest.mark.parametrize("src", [SPMM, SPMM_FILL, SPMM_MAX, SPMM_ROWMASK, DENSE_MM])
def test_rows_without_contributions_hold_the_fill(src):
    a = matrix()
    x = np.random.default_rng(1).standard_normal((30, 5)).astype(np.float32)
    args = dict(A=a if "csr" in src else a.toarray(), X=x)
    kernel = sd.loads(src, name="whole").compile(target="numba")
    ref = sd.loads(src, name="whole").compile(target="ref")
    expected = ref(**args)["Y"]
    dense, present = a.toarray(), a.toarray() != 0
    fill = 7.0 if "fill 7" in src else 0.0
    if "max[j]" in src:
        oracle = np.where(present[:, :, None], dense[:, :, None] * x[None], -np.inf).max(axis=1)
        oracle[~present.any(axis=1)] = fill
    else:
        oracle = dense @ x
        oracle[~present.any(axis=1)] = fill
        if "where" in src:
            oracle[1::3] = fill
    np.testing.assert_allclose(expected, oracle, rtol=1e-5, atol=1e-6)
    for _ in range(3):
        got = poisoned((40, 5), np.float32, lambda: kernel(**args)["Y"])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert (got[[0, 3, 39]] == fill).all()


def test_attention_output_is_written_whole_and_empty_rows_are_zero():
    n, d = 50, 8
    g = matrix(n, n, 0.1, seed=3).astype(bool)
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((n, d)).astype(np.float32) for _ in range(3))
    kernel = sd.loads(ATTENTION, name="att").compile(target="numba")
    assert allocation(kernel.source, "val_O") == "np.empty"
    expected = sd.loads(ATTENTION, name="att").compile(target="ref")(G=g, Q=q, K=k, V=v)["O"]
    for _ in range(3):
        got = poisoned((n, d), np.float32, lambda: kernel(G=g, Q=q, K=k, V=v)["O"])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert (got[[0, 3, n - 1]] == 0).all()
