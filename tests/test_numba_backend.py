"""The numba target against the reference interpreter (and scipy / known answers where they compute the same).

Numba compiles slowly (seconds per kernel on the CI machine), so every program is compiled once per module
(``compiled`` fixture) with serial kernels; one test exercises the ``prange`` path. Sizes are symbolic, so
one compilation serves every shape the tests bind.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import sparsedsl as sd
import sparsedsl.backends.numba as numba_backend
import sparsedsl.backends.ref as ref_backend
from sparsedsl.runtime.convert import bind_inputs

DATA = Path(__file__).resolve().parent.parent / "sparsedsl" / "data"
SERIAL = {"parallel": False}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("numba-cache"))


@pytest.fixture(scope="module")
def compiled(cache_dir):
    """``compiled(text, **options)`` → (program IR, numba executable), memoized for the module."""
    memo: dict = {}

    def get(text: str, **options):
        key = (text, tuple(sorted(options.items())))
        if key not in memo:
            ir = sd.loads(text).ir().program
            memo[key] = (ir, numba_backend.compile(ir, dict(options, cache_dir=cache_dir)))
        return memo[key]

    return get


def run_both(ir, exe, inputs):
    bound, sizes = bind_inputs(ir, inputs)
    return ref_backend.compile(ir).run(bound, sizes), exe.run(bound, sizes)


def assert_same(expected, got, dtype: str):
    ev, ep = expected.to_presence()
    gv, gp = got.to_presence()
    assert ev.shape == gv.shape
    np.testing.assert_array_equal(ep, gp)
    ev = np.where(ep, ev, 0)
    gv = np.where(gp, gv, 0)
    if dtype in ("f32", "f64"):
        rtol = 1e-5 if dtype == "f32" else 1e-12
        np.testing.assert_allclose(gv, ev, rtol=rtol, atol=rtol * max(1.0, float(np.nanmax(np.abs(ev), initial=0))),
                                   equal_nan=True)
    else:
        np.testing.assert_array_equal(gv, ev)


def check_all(ir, exe, inputs):
    expected, got = run_both(ir, exe, inputs)
    for d in ir.outputs:
        assert got[d.name].format.name == expected[d.name].format.name, d.name
        assert_same(expected[d.name], got[d.name], d.type.dtype)
    return got


def rand_csr(rng, m, n, density, dtype=np.float64, empty_rows=(), index_dtype=None):
    dense = rng.standard_normal((m, n))
    keep = rng.random((m, n)) < density
    for r in empty_rows:
        if r < m:
            keep[r] = False
    if np.dtype(dtype) == np.bool_:
        vals = keep
    elif np.dtype(dtype).kind in "iu":
        vals = np.where(keep, rng.integers(-5, 6, (m, n)), 0)
    else:
        vals = np.where(keep, dense, 0.0)
    rows, cols = np.nonzero(keep)
    out = sp.csr_array((np.asarray(vals[rows, cols], dtype=dtype), (rows, cols)), shape=(m, n))
    out.sort_indices()
    if index_dtype is not None:
        out.indptr = out.indptr.astype(index_dtype)
        out.indices = out.indices.astype(index_dtype)
    return out


# shapes: ordinary, empty rows, no rows, no columns, a single entry
SHAPES = [(7, 9, 0.3, (2, 5)), (1, 1, 1.0, ()), (0, 5, 0.5, ()), (6, 0, 0.5, ()), (12, 10, 0.05, (0, 1, 2))]

ELEMENTWISE = """
input  A: csr<f64>[M, N]
input  B: csr<f64>[M, N]
input  W: dense<f64>[M, N]
output U: csr<f64>[M, N]
output I: csr<f64>[M, N]
output X: csr<f64>[M, N]
output D: dense<f64>[M, N]
U[i, j] = A[i, j] - B[i, j]
I[i, j] = A[i, j] * B[i, j] + 1.0
X[i, j] = max(A[i, j], B[i, j]) where not B[i, j]
D[i, j] = W[i, j] + exp(A[i, j]) where j <= i
"""


@pytest.mark.parametrize("shape", SHAPES)
def test_elementwise_union_intersection_and_masks(compiled, shape):
    m, n, density, empty = shape
    rng = np.random.default_rng(m * 31 + n)
    ir, exe = compiled(ELEMENTWISE, **SERIAL)
    A = rand_csr(rng, m, n, density, empty_rows=empty)
    B = rand_csr(rng, m, n, density)
    W = rng.standard_normal((m, n))
    got = check_all(ir, exe, dict(A=A, B=B, W=W))
    np.testing.assert_allclose(got["U"].to_presence()[0], (A - B).toarray())
    union = (A != 0).toarray() | (B != 0).toarray()
    np.testing.assert_array_equal(got["U"].to_presence()[1], union)


PRODUCTS = """
input  A: csr<f64>[M, K]
input  B: csr<f64>[K, N]
input  X: dense<f64>[K, F]
input  x: dense<f64>[K]
output C: csr<f64>[M, N]
output T: csr<f64>[M, N]
output R: csr<bool>[M, N]
output Y: dense<f64>[M, F]
output y: dense<f64>[M]
C[i, j] = sum[k] A[i, k] * B[k, j]
T[i, j] = min[k] (A[i, k] + B[k, j])
R[i, j] = any[k] (A[i, k] > 0.0 and B[k, j] > 0.0)
Y[i, f] = sum[k] A[i, k] * X[k, f]
y[i] = sum[k] A[i, k] * x[k]
"""


@pytest.mark.parametrize("shape", [(8, 6, 9), (0, 4, 3), (5, 0, 4), (5, 4, 0), (1, 1, 1)])
def test_products_semirings(compiled, shape):
    m, k, n = shape
    rng = np.random.default_rng(m + 7 * k + 13 * n)
    ir, exe = compiled(PRODUCTS, **SERIAL)
    A = rand_csr(rng, m, k, 0.3, empty_rows=(1,))
    B = rand_csr(rng, k, n, 0.3)
    X = rng.standard_normal((k, 3))
    x = rng.standard_normal(k)
    got = check_all(ir, exe, dict(A=A, B=B, X=X, x=x))
    np.testing.assert_allclose(got["C"].to_presence()[0], (A @ B).toarray(), atol=1e-12)
    np.testing.assert_allclose(got["Y"].values, A @ X, atol=1e-12)
    np.testing.assert_allclose(got["y"].values, A @ x, atol=1e-12)


SPGEMM = """
input  A: csr<f64>[M, K]
input  B: csr<f64>[K, N]
output C: csr<f64>[M, N]
C[i, j] = sum[k] A[i, k] * B[k, j]
"""


@pytest.mark.parametrize("accumulator", ["dense", "hash", "auto"])
def test_spgemm_accumulators_match_scipy(compiled, accumulator):
    rng = np.random.default_rng(5)
    ir, exe = compiled(SPGEMM, accumulator=accumulator, **SERIAL)
    assert f"workspace w_ws: {accumulator}<f64>" in exe.loops
    for m, k, n, d in [(30, 20, 400, 0.1), (10, 10, 10, 0.5), (3, 4, 0, 0.5), (40, 40, 2000, 0.05)]:
        # empty rows and rows of one entry next to full rows: 'auto' switches between hash and dense rows
        A = rand_csr(rng, m, k, d, empty_rows=(0, 2, 5))
        A = sp.csr_array(sp.vstack([A[: m // 2], sp.csr_array(np.ones((1, k))), A[m // 2 + 1:]])) if m > 4 else A
        A.sort_indices()
        B = rand_csr(rng, k, n, d)
        got = check_all(ir, exe, dict(A=A, B=B))["C"]
        want = sp.csr_array(A @ B)
        want.sort_indices()
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_allclose(got.data, want.data, rtol=1e-12)


def test_accumulator_schedule_directive_selects_hash(compiled):
    ir, exe = compiled(SPGEMM + "\nschedule C:\n    accumulator hash\n", **SERIAL)
    assert "workspace w_ws: hash<f64>" in exe.loops
    auto = numba_backend.lower(sd.loads(SPGEMM).ir().program)
    from sparsedsl.loop_ir.printer import format_module
    assert "workspace w_ws: auto<f64>" in format_module(auto)


ATTENTION = """
input  G: csr<bool>[N, N]
input  Q: dense<f64>[N, D]
input  K: dense<f64>[N, D]
input  V: dense<f64>[N, D]
input  scale: f64 = 0.125
output S: csr<f64>[N, N]
output P: csr<f64>[N, N]
output O: dense<f64>[N, D]
S[i, j] = scale * sum[d] Q[i, d] * K[j, d] where G[i, j]
P[i, j] = softmax[j] S[i, j]
O[i, d] = sum[j] P[i, j] * V[j, d]
"""


@pytest.mark.parametrize("n", [9, 1, 0])
def test_sddmm_softmax_spmm(compiled, n):
    rng = np.random.default_rng(n)
    ir, exe = compiled(ATTENTION, **SERIAL)
    G = rand_csr(rng, n, n, 0.4, dtype=np.bool_, empty_rows=(3,))
    Q, K, V = (rng.standard_normal((n, 4)) for _ in range(3))
    got = check_all(ir, exe, dict(G=G, Q=Q, K=K, V=V))
    dense_s = np.where(G.toarray(), 0.125 * Q @ K.T, 0.0)
    np.testing.assert_allclose(got["S"].to_presence()[0], dense_s, atol=1e-12)


ROWS = """
input  A: csr<f64>[M, N]
output s: dense<f64>[M]
output mx: dense<f64>[M] fill -1.0
output mn: csr<f64>[M]
output avg: dense<f64>[M]
output cn: dense<i64>[M]
output am: dense<i64>[M]
output sdev: dense<f64>[M]
s[i] = sum[j] A[i, j]
mx[i] = max[j] A[i, j]
mn[i] = min[j] A[i, j]
avg[i] = mean[j] A[i, j]
cn[i] = count[j] A[i, j]
am[i] = argmax[j] A[i, j]
sdev[i] = std[j] A[i, j]
"""


@pytest.mark.parametrize("shape", SHAPES)
def test_row_reductions(compiled, shape):
    m, n, density, empty = shape
    rng = np.random.default_rng(100 + m + n)
    ir, exe = compiled(ROWS, **SERIAL)
    A = rand_csr(rng, m, n, density, empty_rows=empty)
    if m == 0:
        # the reference interpreter cannot take argmax over zero rows yet; the answer is empty anyway
        bound, sizes = bind_inputs(ir, dict(A=A))
        got = exe.run(bound, sizes)
        assert all(t.shape == (0,) for t in got.values())
        return
    got = check_all(ir, exe, dict(A=A))
    np.testing.assert_array_equal(got["cn"].values, np.diff(A.indptr))


DTYPED = """
input  A: csr<{t}>[M, N]
input  B: csr<{t}>[M, N]
input  x: dense<{t}>[N]
output C: csr<{t}>[M, N]
output y: dense<{t}>[M]
C[i, j] = A[i, j] {union} B[i, j]
y[i] = {reduce}
"""


@pytest.mark.parametrize("dtype", ["f32", "f64", "i64", "bool"])
def test_dtypes(compiled, dtype):
    np_dtype = {"f32": np.float32, "f64": np.float64, "i64": np.int64, "bool": np.bool_}[dtype]
    rng = np.random.default_rng(3)
    if dtype == "bool":
        text = DTYPED.format(t=dtype, union="|", reduce="any[j] (A[i, j] and x[j])")
    else:
        text = DTYPED.format(t=dtype, union="+", reduce="max[j] A[i, j] * x[j]")
    ir, exe = compiled(text, **SERIAL)
    A = rand_csr(rng, 9, 8, 0.4, dtype=np_dtype, empty_rows=(4,))
    B = rand_csr(rng, 9, 8, 0.4, dtype=np_dtype)
    x = np.asarray(rng.integers(-3, 4, 8), dtype=np_dtype)
    got = check_all(ir, exe, dict(A=A, B=B, x=x))
    assert got["C"].dtype == dtype and got["y"].dtype == dtype


def test_int64_indices(compiled):
    rng = np.random.default_rng(4)
    ir, exe = compiled(SPGEMM, accumulator="dense", **SERIAL)
    A = rand_csr(rng, 6, 7, 0.4, index_dtype=np.int64)
    B = rand_csr(rng, 7, 5, 0.4, index_dtype=np.int64)
    got = check_all(ir, exe, dict(A=A, B=B))["C"]
    np.testing.assert_allclose(got.to_presence()[0], (A @ B).toarray(), atol=1e-12)


def test_other_input_formats_are_converted(compiled):
    rng = np.random.default_rng(6)
    ir, exe = compiled(PRODUCTS, **SERIAL)
    A = rand_csr(rng, 5, 4, 0.5)
    B = rand_csr(rng, 4, 6, 0.5)
    got = check_all(ir, exe, dict(A=sp.coo_array(A), B=sp.csc_array(B), X=np.ones((4, 3)), x=np.ones(4)))
    np.testing.assert_allclose(got["C"].to_presence()[0], (A @ B).toarray(), atol=1e-12)


def test_triangle_count_ego_facebook(compiled):
    text = (DATA / "triangles.sdsl").read_text()
    ir, exe = compiled(text, **SERIAL)
    A = sp.csr_array(scipy.io.mmread(DATA / "ego-Facebook.mtx.gz")).astype(bool)
    bound, sizes = bind_inputs(ir, dict(A=A))
    assert int(exe.run(bound, sizes)["triangles"].item()) == 1_612_010
    # the masked product iterates the mask and intersects two compressed rows: no workspace, no dense range
    loops = exe.loops
    assert "forall x_k in intersect(" in loops and "workspace" not in loops


def test_parallel_kernels(compiled):
    rng = np.random.default_rng(8)
    ir, exe = compiled(SPGEMM)
    assert "parallel for" in exe.loops and "prange(" in exe.source
    for m in (0, 3, 50):
        A = rand_csr(rng, m, 40, 0.2, empty_rows=(1,))
        B = rand_csr(rng, 40, 30, 0.2)
        got = check_all(ir, exe, dict(A=A, B=B))["C"]
        np.testing.assert_allclose(got.to_presence()[0], (A @ B).toarray(), atol=1e-12)


def test_render_is_deterministic_and_mangles_names():
    ir = sd.loads(SPGEMM).ir().program
    a = numba_backend.render(ir, SERIAL)
    b = numba_backend.render(sd.loads(SPGEMM).ir().program, SERIAL)
    assert a == b
    # user names only appear behind their kind's prefix
    assert "val_A" in a and "ptr_B" in a and "x_k" in a
    assert " A[" not in a and "(A," not in a
