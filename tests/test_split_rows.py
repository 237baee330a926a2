"""A row-wise reduction that no loop encloses — ``y[j] = sum[i] A[i, j] * x[i]`` (Aᵀx), column sums, in-degree
counts — runs its rows on every thread (``Lowerer.split_rows``): each thread reduces a range of rows into its own
row of partials, merged in order after. Against scipy / numpy and the reference interpreter, with one thread and
with two, on empty, single-entry and power-law inputs; and the ``parallel`` directive naming the reduced index
is applied."""
from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.runtime.tensors import from_presence

RNG = np.random.default_rng(7)


def power_law(n: int, seed: int) -> sp.csr_array:
    """A graph whose first rows hold most entries (so the two threads' row ranges differ in length)."""
    rng = np.random.default_rng(seed)
    rows = np.minimum((rng.pareto(1.2, 8 * n) * 2).astype(np.int64), n - 1)
    cols = rng.integers(0, n, 8 * n)
    A = sp.csr_array((rng.uniform(-1, 1, 8 * n), (rows, cols)), shape=(n, n))
    A.sum_duplicates()
    return A


def matrices():
    empty_rows = sp.random_array((40, 30), density=0.2, format="csr", rng=RNG)
    empty_rows = sp.csr_array(empty_rows.toarray() * (np.arange(40) % 3 != 0)[:, None])
    one = sp.csr_array(([2.5], ([4], [7])), shape=(9, 8))
    return {"empty-rows": empty_rows, "power-law": power_law(300, 3), "single": one,
            "no-rows": sp.csr_array((0, 6)), "no-entries": sp.csr_array((5, 6))}


MATRICES = matrices()

PROGRAMS = {
    "ATx": ("input A: csr<f64>[M, N]\ninput x: dense<f64>[M]\noutput y: dense<f64>[N]\n"
            "y[j] = sum[i] A[i, j] * x[i]\n",
            lambda A, x: A.T @ x),
    "indegree": ("input A: csr<f64>[M, N]\noutput y: dense<i64>[N]\ny[j] = count[i] A[i, j]\n",
                 lambda A, x: np.diff(A.tocsc().indptr)),
    "column-max": ("input A: csr<f64>[M, N]\noutput y: dense<f64>[N] fill -1.0\ny[j] = max[i] A[i, j]\n",
                   lambda A, x: np.array([A.tocsc()[:, [j]].data.max() if A.tocsc()[:, [j]].nnz else -1.0
                                          for j in range(A.shape[1])])),
    "masked-ATx-csr": ("input A: csr<f64>[M, N]\ninput x: dense<f64>[M]\noutput y: csr<f64>[N]\n"
                       "y[j] = sum[i] (A[i, j] * x[i] where x[i] > 0)\n",
                       lambda A, x: A.T @ np.where(x > 0, x, 0)),
}


def run_both(src: str, inputs: dict, threads: int):
    prog = sd.loads(src, name="split")
    kernel = prog.compile("numba")
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        got = kernel.run_tensors(**inputs)
    finally:
        numba.set_num_threads(before)
    want = prog.compile("ref").run_tensors(**inputs)
    return prog, got, want


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("matrix", list(MATRICES))
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_split_reduction_matches_scipy_and_reference(name, matrix, threads):
    src, expected = PROGRAMS[name]
    A = MATRICES[matrix]
    x = RNG.uniform(-1, 1, A.shape[0])
    decls = {d.name: d for d in sd.loads(src, name="split").ir().program.inputs}
    if "x" not in decls:
        x = None
    inputs = {"A": from_presence(A.toarray(), A.toarray() != 0, decls["A"].type, dict(M=A.shape[0], N=A.shape[1]),
                                 "A")}
    if x is not None:
        inputs["x"] = from_presence(x, np.ones(x.shape, bool), decls["x"].type, dict(M=A.shape[0]), "x")
    prog, got, want = run_both(src, inputs, threads)
    assert "split over the threads" in prog.explain()
    gv, gp = got["y"].to_presence()
    wv, wp = want["y"].to_presence()
    np.testing.assert_array_equal(gp, wp)
    np.testing.assert_allclose(np.where(gp, gv, 0), np.where(wp, wv, 0), rtol=1e-12, atol=1e-12)
    y = sd.loads(src).compile("numba")(A=A, **({} if x is None else {"x": x}))["y"]
    y = y.toarray() if hasattr(y, "toarray") else y
    np.testing.assert_allclose(y, expected(A, x), rtol=1e-12, atol=1e-12)


def test_dense_column_sums_split_over_threads_against_numpy():
    src = "input X: dense<f32>[N, F]\noutput h: dense<f32>[F]\nh[f] = sum[i] X[i, f]\nschedule h:\n    parallel i\n"
    prog = sd.loads(src)
    text = prog.explain()
    assert "parallel i: applied" in text and "split over the threads" in text
    # its own generator (the module's RNG depends on which tests ran first in this worker); an absolute
    # tolerance, since a column's sum may be near zero: f32 rounding of 1001 terms in [-1, 1] stays below 1e-4
    X = np.random.default_rng(11).uniform(-1, 1, (1001, 7)).astype(np.float32)
    kernel = prog.compile("numba")
    for threads in (1, 2):
        numba.set_num_threads(threads)
        try:
            np.testing.assert_allclose(kernel(X=X)["h"], X.sum(axis=0, dtype=np.float64), rtol=1e-5, atol=1e-4)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_serial_kernels_and_enclosed_reductions_are_not_split():
    """Without threads the reduction stays one loop; a row-wise reduction inside a row loop (SpGEMM) is
    parallel over those rows already."""
    src = PROGRAMS["ATx"][0]
    A, x = MATRICES["power-law"], RNG.uniform(-1, 1, 300)
    serial = sd.loads(src).compile("numba", parallel=False)
    assert "parallel for" not in serial.executable.loops
    np.testing.assert_allclose(serial(A=A, x=x)["y"], A.T @ x, rtol=1e-12, atol=1e-12)
    spgemm = sd.loads("input A: csr<f64>[M, M]\noutput C: csr<f64>[M, M]\nC[i, j] = sum[k] A[i, k] * A[k, j]\n")
    assert "split over the threads" not in spgemm.explain()


@pytest.mark.parametrize("parallel", [True, False])
def test_a_scalar_reduction_of_column_reductions(parallel):
    """A reduction to a scalar whose loop walks the keys of a row-wise reduction hoisted before it: its outer
    loop is not a dense range, so it runs as one serial loop (it was an internal error, an AssertionError, on
    either kind of kernel)."""
    A = MATRICES["empty-rows"]
    x = RNG.uniform(-1, 1, A.shape[0])
    dense = A.toarray()
    present = (dense != 0).any(axis=0)
    col_max = np.where(dense != 0, dense, -np.inf).max(axis=0)[present]
    cases = {"input A: csr<f64>[M, N]\noutput t: f64\nt = sum[j] (max[i] A[i, j])\n": col_max.sum(),
             "input A: csr<f64>[M, N]\ninput x: dense<f64>[M]\noutput t: f64\nt = max[j] (sum[i] A[i, j] * x[i])\n":
             (A.T @ x)[present].max(),
             "input X: dense<f64>[M, N]\noutput t: f64\nt = sum[j] (max[i] X[i, j])\n": dense.max(axis=0).sum()}
    for src, want in cases.items():
        kernel = sd.loads(src).compile("numba", parallel=parallel)
        inputs = {"X": dense} if "X:" in src else ({"A": A, "x": x} if "x:" in src else {"A": A})
        np.testing.assert_allclose(kernel(**inputs)["t"], want, rtol=1e-12, atol=1e-12)


COUNTS = [
    "input A: csr<f64>[M, N]\ninput x: dense<f64>[M]\noutput d: csr<i64>[N]\nd[j] = count[i] (A[i, j] where x[i] > 0)\n",
    "input A: csr<f64>[M, N]\ninput y: dense<i64>[N]\noutput d: dense<i64>[N] fill -7\nd[j] = count[i] A[i, j] + y[j]\n",
    "input A: csr<f64>[M, N]\noutput d: dense<i64>[N] fill -7\nd[j] = count[i] A[i, j]\n",
    "input A: dense<f64>[M, N]\noutput d: dense<i64>[N] fill -7\nd[j] = count[i] (A[i, j] where A[i, j] > 0.5)\n",
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("src", COUNTS, ids=["masked-csr", "union", "fill", "value-mask"])
def test_split_counts_keep_presence_without_a_flag(src, threads):
    """A split count stores no presence flag (a key's count is zero exactly where nothing reached it): keys
    no row reaches keep the output's fill, stay out of a csr result, and a union still sees them absent."""
    A = MATRICES["empty-rows"]
    args = {"A": A.toarray() if "dense<f64>[M" in src else A}
    if "x:" in src:
        args["x"] = RNG.uniform(-1, 1, A.shape[0])
    if "y:" in src:
        args["y"] = np.arange(A.shape[1], dtype=np.int64)
    prog = sd.loads(src)
    assert "split over the threads" in prog.explain()
    kernel = prog.compile("numba")
    numba.set_num_threads(threads)
    try:
        got = kernel(**args)["d"]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    want = prog.compile("ref")(**args)["d"]
    dense = (lambda v: v.toarray() if hasattr(v, "toarray") else np.asarray(v))
    np.testing.assert_array_equal(dense(got), dense(want))
    assert (dense(want) == -7).any() or "csr" in src or "y:" in src  # some key is absent
