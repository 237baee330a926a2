"""Format selection from bound inputs on the numba target: bitmap intermediates and unordered rows.

`compile(like=...)`, `explain` with inputs and `sparsedsl run` estimate each intermediate's density from the
inputs (passes/density.py) and store a nearly full one as a bitmap; a row-wise reduction written by coordinate
skips ordering its keys (loop_ir/unordered.py). Every result here is checked against scipy and the reference
interpreter, on random and real inputs and the awkward cases (empty, one entry, duplicates, int64 indices).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.loop_ir.printer import format_module

from conftest import run_cli

DATA = Path(__file__).resolve().parent.parent / "sparsedsl" / "data"

PRODUCT = """\
input  A: csr<{dt}>[n, n]
input  B: csr<{dt}>[n, n]
output C: csr<{dt}>[n, n]
output r: dense<{dt}>[n]
T[i, j] = sum[k] A[i, k] * B[k, j]
C[i, j] = T[i, j] * A[i, j] + A[i, j]
r[i] = sum[j] T[i, j]
"""


def expected(A, B) -> dict:
    T = sp.csr_array(A @ B)
    return {"C": sp.csr_array(T * A + A), "r": np.asarray(T.sum(axis=1)).ravel()}


def check(out, want: dict, exact: bool) -> None:
    got_c = sp.csr_array(out["C"])
    want_c = want["C"]
    # the language keeps computed zeros; scipy drops them: compare values, and every scipy entry is stored
    np.testing.assert_allclose(got_c.toarray(), want_c.toarray(), rtol=0 if exact else 1e-5, atol=0)
    assert set(zip(*want_c.nonzero())) <= set(zip(*got_c.nonzero())) | set(zip(*np.nonzero(got_c.toarray())))
    np.testing.assert_allclose(out["r"], want["r"], rtol=0 if exact else 1e-5)


def dense_ish(n: int, density: float, seed: int, dtype=np.float64):
    rng = np.random.default_rng(seed)
    M = sp.random_array((n, n), density=density, format="csr", rng=rng, dtype=np.float64)
    M.data = rng.integers(1, 4, size=M.nnz).astype(np.float64)  # small integers: exact in every dtype
    return sp.csr_array(M.astype(dtype))


@pytest.mark.parametrize("dt, np_dt", [("f64", np.float64), ("f32", np.float32), ("i64", np.int64),
                                       ("i32", np.int32)])
def test_bitmap_intermediate_matches_scipy_and_reference(dt, np_dt):
    prog = sd.loads(PRODUCT.format(dt=dt), name="product")
    A, B = dense_ish(120, 0.12, 1, np_dt), dense_ish(120, 0.12, 2, np_dt)  # A·B estimated 82% present
    fast = prog.compile("numba", like={"A": A, "B": B}, parallel=False)
    assert fast.ir.decl("T").storage.name == "bitmap"
    assert "mask_T" in fast.source
    plain = prog.compile("numba", parallel=False)
    assert plain.ir.decl("T").storage.name == "csr" and plain is not fast
    want = expected(A.astype(np.float64), B.astype(np.float64))
    exact = dt != "f32"
    check(fast(A=A, B=B), want, exact)
    check(prog.compile("ref")(A=A, B=B), want, exact)


def test_compiled_for_some_inputs_runs_correctly_on_others():
    """Statistics only choose a layout: a kernel compiled for dense-ish inputs is right on any input."""
    prog = sd.loads(PRODUCT.format(dt="f64"), name="product")
    fast = prog.compile("numba", like={"A": dense_ish(80, 0.15, 3), "B": dense_ish(80, 0.15, 4)}, parallel=False)
    assert fast.ir.decl("T").storage.name == "bitmap"
    one = sp.csr_array(([2.0], ([3], [5])), shape=(9, 9))
    empty_rows = sp.csr_array(np.diag([0, 1.5, 0, 0, 2.0, 0, 0, 0, 0]))
    cases = [
        (sp.csr_array((0, 0)), sp.csr_array((0, 0))),
        (sp.csr_array((9, 9)), sp.csr_array((9, 9))),
        (one, one.T.tocsr()),
        (empty_rows, one),
        (dense_ish(40, 0.5, 5), dense_ish(40, 0.02, 6)),
    ]
    for A, B in cases:
        check(fast(A=A, B=B), expected(A, B), exact=True)


def test_duplicates_unsorted_and_int64_indices():
    prog = sd.loads(PRODUCT.format(dt="f64"), name="product")
    rng = np.random.default_rng(7)
    n, m = 60, 900
    rows, cols = rng.integers(0, n, m), rng.integers(0, n, m)
    A = sp.coo_array((np.ones(m), (rows, cols)), shape=(n, n))  # duplicates, unsorted
    B = sp.csr_array(dense_ish(n, 0.2, 8))
    B.indices = B.indices.astype(np.int64)
    B.indptr = B.indptr.astype(np.int64)
    before = (A.copy(), B.copy())
    fast = prog.compile("numba", like={"A": A, "B": B}, parallel=False)
    assert fast.ir.decl("T").storage.name == "bitmap"
    Acsr = sp.csr_array(A)
    Acsr.sum_duplicates()
    check(fast(A=A, B=B), expected(Acsr, B), exact=True)
    assert (A != before[0]).nnz == 0 and (B != before[1]).nnz == 0  # inputs untouched


TRANSPOSED = """\
input  A: csr<i64>[n, n]
output C: csr<i64>[n, n]
output r: dense<i64>[n]
T[i, j] = sum[k] A[i, k] * A[k, j]
C[i, j] = T[j, i] where A[i, j]
r[i] = sum[j] T[i, j]
"""


def test_real_graph_read_against_its_rows():
    """wiki-Vote (directed): two-hop path counts read transposed on the edges, and two-hop degrees."""
    A = sp.csr_array(scipy.io.mmread(DATA / "wiki-Vote.mtx.gz")).astype(np.int64)
    A.sum_duplicates()
    prog = sd.loads(TRANSPOSED, name="two-hop")
    fast = prog.compile("numba", like={"A": A})
    assert fast.ir.decl("T").storage.name == "bitmap"
    T = sp.csr_array(A @ A)
    want_c = sp.csr_array(T.T.multiply(A.astype(bool)))
    out = fast(A=A)
    np.testing.assert_array_equal(sp.csr_array(out["C"]).toarray(), want_c.toarray())
    assert out["C"].nnz == want_c.nnz  # present where an edge closes a two-hop path (positive counts)
    np.testing.assert_array_equal(out["r"], np.asarray(T.sum(axis=1)).ravel())


def test_unordered_rows_only_where_nothing_merges_them():
    """A product written into a dense result skips ordering its row; one merged with another row keeps it."""
    alone = sd.loads("input A: csr<f64>[n, n]\ninput B: csr<f64>[n, n]\noutput D: dense<f64>[n, n]\n"
                     "D[i, j] = sum[k] A[i, k] * B[k, j]\n", name="alone")
    merged = sd.loads("input A: csr<f64>[n, n]\ninput B: csr<f64>[n, n]\ninput E: csr<f64>[n, n]\n"
                      "output D: dense<f64>[n, n]\n"
                      "D[i, j] = sum[k] A[i, k] * B[k, j] + E[i, j]\n", name="merged")
    nb = sd.api.backend_module("numba")

    assert "(unordered)" in format_module(nb.lower(alone.ir(optimized=True).program))
    assert "(unordered)" not in format_module(nb.lower(merged.ir(optimized=True).program))
    A, B, E = dense_ish(50, 0.05, 9), dense_ish(50, 0.05, 10), dense_ish(50, 0.05, 11)
    np.testing.assert_array_equal(alone.compile("numba", parallel=False)(A=A, B=B)["D"], (A @ B).toarray())
    np.testing.assert_array_equal(merged.compile("numba", parallel=False)(A=A, B=B, E=E)["D"],
                                  (A @ B + E).toarray())


def test_explain_and_run_use_the_inputs(tmp_path):
    src = tmp_path / "product.sdsl"
    src.write_text(PRODUCT.format(dt="f64"))
    A = dense_ish(100, 0.15, 12)
    scipy.io.mmwrite(tmp_path / "A.mtx", A)
    explained = run_cli("explain", str(src), "--input", f"A={tmp_path / 'A.mtx'}", f"B={tmp_path / 'A.mtx'}")
    assert explained.returncode == 0, explained.stderr
    line = next(x for x in explained.stdout.splitlines() if x.strip().startswith("T "))
    assert "stored as bitmap" in line and "estimated" in line
    bare = run_cli("explain", str(src))
    assert "stored as csr" in next(x for x in bare.stdout.splitlines() if x.strip().startswith("T "))
    ran = run_cli("run", str(src), "--target", "numba", "--input", f"A={tmp_path / 'A.mtx'}",
                  f"B={tmp_path / 'A.mtx'}", "--output", str(tmp_path / "out"))
    assert ran.returncode == 0, ran.stderr
    got_r = np.load(tmp_path / "out" / "r.npy")
    np.testing.assert_allclose(got_r, expected(A, A)["r"], rtol=1e-12)
    got_c = sp.csr_array(scipy.io.mmread(tmp_path / "out" / "C.mtx"))
    np.testing.assert_allclose(got_c.toarray(), expected(A, A)["C"].toarray(), rtol=1e-12)


def test_like_names_an_unknown_input():
    prog = sd.loads(PRODUCT.format(dt="f64"), name="product")
    with pytest.raises(sd.SdslError, match="no input named 'Z'"):
        prog.compile("numba", like={"Z": dense_ish(5, 0.5, 1)})


def test_alike_inputs_share_a_kernel():
    """A kernel is kept per layout chosen, not per statistics: inputs that choose the same layouts reuse it."""
    prog = sd.loads(PRODUCT.format(dt="f64"), name="product")
    first = prog.compile("numba", like={"A": dense_ish(120, 0.12, 1), "B": dense_ish(120, 0.12, 2)}, parallel=False)
    again = prog.compile("numba", like={"A": dense_ish(120, 0.14, 3), "B": dense_ish(120, 0.13, 4)}, parallel=False)
    sparse = prog.compile("numba", like={"A": dense_ish(120, 0.01, 5)}, parallel=False)
    assert first is again and sparse is not first
    assert sparse.ir.decl("T").storage.name == "csr"


COLUMNS = """\
input  A: csr<f64>[M, K]
input  X: dense<f64>[M, F]
output Y: dense<f64>[K, F]
output z: dense<f64>[K]
T[i, k] = A[i, k] * 2.0
Y[k, f] = sum[i] T[i, k] * X[i, f]
z[k] = sum[i] T[i, k]
"""


def test_column_reads_without_and_with_statistics():
    """Without inputs format selection recommends csc; this target says it keeps compressed rows. With them,
    the matrix read against its rows is a bitmap. Both give numpy's answer."""
    prog = sd.loads(COLUMNS, name="columns")
    bare = prog.explain()
    assert "stored as csc" in bare and "numba: layout of T: csr" in bare
    assert "numba: layout of T: transposed copy" in bare  # the column reads walk a transposed copy
    rng = np.random.default_rng(13)
    A = sp.random_array((70, 40), density=0.1, format="csr", rng=rng)
    X = rng.standard_normal((70, 5))
    informed = prog.explain(A=A, X=X)
    assert "stored as bitmap" in informed and "numba: layout of T" not in informed
    for kernel in (prog.compile("numba", parallel=False), prog.compile("numba", like={"A": A}, parallel=False)):
        out = kernel(A=A, X=X)
        np.testing.assert_allclose(out["Y"], 2 * A.T @ X, rtol=1e-12)
        np.testing.assert_allclose(out["z"], 2 * np.asarray(A.sum(axis=0)).ravel(), rtol=1e-12)
