"""Every construct the numba target once refused, against the reference interpreter (and scipy / numpy where
they compute the same): accumulation, repeat blocks, top-k, f16/bf16, softmax along an outer index, the sort
accumulator, scalars that may be absent, gathers and affine access, rank-3 tensors, block formats, and every
spec example. Inputs include empty rows, empty matrices (0×n, n×0) and single entries.

Each program is compiled once per module with serial kernels into a cache folder shared by the session's
numba test files (Numba compiles slowly; sizes are symbolic, so one compilation serves every shape).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
import sparsedsl.backends.numba as numba_backend
import sparsedsl.backends.ref as ref_backend
from sparsedsl.runtime.convert import bind_inputs
from sparsedsl.runtime.tensors import from_presence
from sparsedsl.tensor_ir.types import Format, TensorType

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SERIAL = {"parallel": False}
TOL = {"f16": 2e-2, "bf16": 3e-2, "f32": 1e-5, "f64": 1e-12}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """``compiled(text, **options)`` → (program IR as the passes leave it, numba executable), memoized."""
    cache_dir = str(tmp_path_factory.getbasetemp() / "numba-cache")
    memo: dict = {}

    def get(text: str, **options):
        key = (text, tuple(sorted(options.items())))
        if key not in memo:
            ir = sd.loads(text).ir(optimized=True).program
            memo[key] = (ir, numba_backend.compile(ir, dict(SERIAL, cache_dir=cache_dir, **options)))
        return memo[key]

    return get


def assert_same(expected, got, dtype: str, what: str = ""):
    ev, ep = expected.to_presence()
    gv, gp = got.to_presence()
    assert ev.shape == gv.shape, what
    np.testing.assert_array_equal(gp, ep, err_msg=f"presence of {what}")
    ev = np.where(ep, ev, 0)
    gv = np.where(gp, gv, 0)
    if dtype in TOL:
        ev = ev.astype(np.float64)
        gv = gv.astype(np.float64)
        finite = np.abs(ev[np.isfinite(ev)])
        scale = max(1.0, float(finite.max(initial=0.0)))
        np.testing.assert_allclose(gv, ev, rtol=TOL[dtype], atol=TOL[dtype] * scale, equal_nan=True,
                                   err_msg=f"values of {what}")
    else:
        np.testing.assert_array_equal(gv, ev, err_msg=f"values of {what}")


def check(ir, exe, inputs):
    """Run on both targets; every output must match. Returns the numba outputs."""
    bound, sizes = bind_inputs(ir, inputs)
    got = exe.run(bound, sizes)
    want = ref_backend.compile(ir).run(bound, sizes)
    for d in ir.outputs:
        assert got[d.name].format.name == want[d.name].format.name, d.name
        assert_same(want[d.name], got[d.name], d.type.dtype, d.name)
    return got


def rand_sparse(rng, m, n, density, dtype=np.float64, empty_rows=(), values=None):
    keep = rng.random((m, n)) < density
    for r in empty_rows:
        if r < m:
            keep[r] = False
    rows, cols = np.nonzero(keep)
    if values is not None:
        data = values(len(rows))
    elif np.dtype(dtype) == np.bool_:
        data = np.ones(len(rows), bool)
    elif np.dtype(dtype).kind in "iu":
        data = rng.integers(-4, 5, len(rows))
    else:
        data = rng.standard_normal(len(rows))
    if np.dtype(dtype) == np.float16:
        # scipy holds no float16: f16 values in float32 (binding converts them exactly)
        data, dtype = np.asarray(data).astype(np.float16), np.float32
    out = sp.csr_array((np.asarray(data).astype(dtype), (rows, cols)), shape=(m, n))
    out.sort_indices()
    return out


# (rows, cols, density, empty rows): ordinary, no rows, no columns, a single entry, mostly empty
SHAPES = [(7, 9, 0.35, (2, 5)), (0, 5, 0.5, ()), (6, 0, 0.5, ()), (1, 1, 1.0, ()), (9, 8, 0.08, (0, 1))]
SHAPE_IDS = ["7x9", "0x5", "6x0", "1x1", "sparse"]


# ---------------------------------------------------------------- accumulation

ACCUMULATE = """
input  A: csr<f64>[M, N]
input  B: csr<f64>[M, N]
input  W: dense<f64>[M, N]
input  x: dense<f64>[N]
output C: csr<f64>[M, N]
output D: dense<f64>[M, N]
output E: csr<f64>[M, N]
output t: f64
C[i, j] = A[i, j]
C[i, j] += B[i, j] * 2.0
D[i, j] = W[i, j]
D[i, j] max= A[i, j] where j <= i
E[i, j] = B[i, j]
E[i, j] min= A[i, j] + x[j]
t = sum[i, j] A[i, j]
t += sum[j] x[j]
"""


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_accumulation(compiled, shape):
    m, n, density, empty = shape
    rng = np.random.default_rng(m * 7 + n)
    ir, exe = compiled(ACCUMULATE)
    A = rand_sparse(rng, m, n, density, empty_rows=empty)
    B = rand_sparse(rng, m, n, density)
    W = rng.standard_normal((m, n))
    x = rng.standard_normal(n)
    got = check(ir, exe, dict(A=A, B=B, W=W, x=x))
    np.testing.assert_allclose(got["C"].to_presence()[0], (A + 2 * B).toarray(), atol=1e-12)
    assert got["t"].values.item() == pytest.approx(A.sum() + x.sum(), abs=1e-9)


DTYPED = """
input  A: csr<{t}>[M, N]
input  B: csr<{t}>[M, N]
output C: csr<{t}>[M, N]
output P: csr<bool>[M, N]
C[i, j] = A[i, j]
C[i, j] max= {t}(B[i, j] + A[i, j])
P[i, j] = topk[j](2) A[i, j]
"""
DTYPES = {"bool": np.bool_, "i8": np.int8, "i32": np.int32, "i64": np.int64, "f16": np.float16,
          "bf16": np.float32, "f32": np.float32, "f64": np.float64}


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_every_dtype(compiled, dtype):
    rng = np.random.default_rng(11)
    ir, exe = compiled(DTYPED.format(t=dtype))
    for m, n, density, empty in SHAPES[:4]:
        A = rand_sparse(rng, m, n, density, DTYPES[dtype], empty_rows=empty)
        B = rand_sparse(rng, m, n, density, DTYPES[dtype])
        got = check(ir, exe, dict(A=A, B=B))
        assert got["C"].dtype == dtype and got["P"].dtype == "bool"


def test_integer_arithmetic_wraps_like_numpy(compiled):
    ir, exe = compiled(DTYPED.format(t="i8"))
    A = sp.csr_array(np.array([[100, 0], [-100, 5]], np.int8))
    B = sp.csr_array(np.array([[100, 3], [-100, 0]], np.int8))
    got = check(ir, exe, dict(A=A, B=B))
    # max(100, 100 + 100 wrapped to -56) = 100; max(-100, -200 wrapped to 56) = 56; only B at (0, 1)
    np.testing.assert_array_equal(got["C"].to_presence()[0], [[100, 3], [56, 5]])



DIVISION = """
input  x: dense<{t}>[N]
input  y: dense<{t}>[N]
output q: dense<{t}>[N]
output r: dense<{t}>[N]
q[i] = x[i] // y[i]
r[i] = x[i] % y[i]
"""


@pytest.mark.parametrize("t", ["i64", "i32", "i8"])
def test_floor_division_at_the_integer_edges_like_numpy(compiled, t):
    """The most negative value divided by -1 wraps to itself in numpy; LLVM's division overflows there (numba
    gave 0 for i64). Division by zero gives 0 on both targets, as numpy's floor_divide and mod do."""
    info = np.iinfo(np.dtype(dict(i64="int64", i32="int32", i8="int8")[t]))
    x = np.array([info.min, info.min, 7, -7, 7, info.max, info.min, -1], dtype=info.dtype)
    y = np.array([-1, 1, 0, 2, -2, -1, 0, info.min], dtype=info.dtype)
    ir, exe = compiled(DIVISION.format(t=t))
    got = check(ir, exe, dict(x=x, y=y))
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(got["q"].to_presence()[0], np.floor_divide(x, y))
        np.testing.assert_array_equal(got["r"].to_presence()[0], np.mod(x, y))



@pytest.mark.parametrize("target", ["ref", "numba"])
def test_bool_max_and_min_over_no_entries_are_false_and_true(target):
    """Spec § 5: a reduction to a scalar over no entries is its identity; for bool that is false for max (as
    for any) and true for min (as for all). Both targets gave true for max (i64's minimum cast to bool)."""
    prog = sd.loads("input v: dense<bool>[N]\noutput s\noutput t\ns = max[i] v[i]\nt = min[i] v[i]\n")
    run = prog.compile(target)
    for vals in ([], [False, True, False], [False, False], [True, True]):
        v = np.array(vals, dtype=bool)
        got = run(v=v)
        assert (bool(got["s"]), bool(got["t"])) == (any(vals), all(vals)), vals



@pytest.mark.parametrize("target", ["ref", "numba"])
def test_softmax_is_max_subtracted_also_at_infinities(target):
    """Spec § 5.7: softmax is max-subtracted. A row whose maximum is +inf is NaN throughout (inf - inf), as
    scipy's and torch's softmax give; it used to be NaN at the +inf entry and 0 elsewhere (shift 0)."""
    import scipy.special

    run = sd.loads("input x: dense<f64>[N]\noutput y: dense<f64>[N]\ny[i] = softmax[i] x[i]\n").compile(target)
    for row in ([np.inf, 3.0], [np.inf, np.inf], [-np.inf, -np.inf], [-np.inf, 2.0], [np.nan, 1.0],
                [1000.0, -1000.0], [1.0, 2.0, 3.0]):
        x = np.array(row)
        with np.errstate(all="ignore"):
            want = scipy.special.softmax(x)
        np.testing.assert_allclose(run(x=x)["y"], want, rtol=1e-12, equal_nan=True, err_msg=str(row))


# ---------------------------------------------------------------- repeat

POWER = """
input  A: csr<f64>[N, N]
input  steps: i64 = 3
output P: csr<f64>[N, N]
output it: i64
output h: dense<f64>[N]
P[i, j] = A[i, j]
it = 0
h[i] = 1.0
repeat at most steps:
    Q[i, j] = sum[k] P[i, k] * A[k, j]
    P[i, j] = Q[i, j] * 0.5
    it = it + 1
    g[i] = sum[j] A[i, j] * h[j]
    g[i] += h[i]
    h[i] = g[i] / (1.0 + abs(g[i]))
"""


@pytest.mark.parametrize("n", [6, 1, 0])
def test_repeat_with_carried_sparse_matrix(compiled, n):
    rng = np.random.default_rng(n)
    ir, exe = compiled(POWER)
    A = rand_sparse(rng, n, n, 0.4, empty_rows=(2,))
    got = check(ir, exe, dict(A=A, steps=3))
    want = sp.csr_array(A)
    for _ in range(3):
        want = 0.5 * (want @ A)
    np.testing.assert_allclose(got["P"].to_presence()[0], want.toarray(), atol=1e-12)
    assert got["it"].values.item() == 3


UNTIL = """
input  x: dense<f64>[N]
output y: dense<f64>[N]
output rounds: i64
y[i] = x[i]
rounds = 0
repeat until s < 1.0:
    y[i] = y[i] * 0.5
    rounds = rounds + 1
    s = sum[i] abs(y[i])
"""


def test_repeat_until_without_bound(compiled):
    ir, exe = compiled(UNTIL)
    x = np.array([3.0, -5.0, 0.5])
    got = check(ir, exe, dict(x=x))
    # 8.5 / 2**k < 1 first at k = 4
    assert got["rounds"].values.item() == 4
    np.testing.assert_allclose(got["y"].values, x / 16)


# ---------------------------------------------------------------- top-k

TOPK = """
input  A: csr<f64>[M, N]
input  W: dense<i32>[M, N]
input  k: i64 = 2
output P: csr<bool>[M, N]
output Q: csr<bool>[M, N]
output R: csr<i32>[M, N]
output S: csr<f64>[M, N]
P[i, j] = topk[j](k) A[i, j]
Q[i, j] = bottomk[j](k, group=4) A[i, j]
R[i, j] = W[i, j] where topk[j](2, group=4) W[i, j]
S[i, j] = A[i, j] where topk[i](1) A[i, j]
"""


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_topk_bottomk_ties_and_nan(compiled, shape):
    m, n, density, empty = shape
    rng = np.random.default_rng(3 + m + n)
    ir, exe = compiled(TOPK)

    def ties(count):  # few distinct values and some NaN: ties and NaN ordering matter
        v = rng.integers(-2, 3, count).astype(np.float64)
        v[rng.random(count) < 0.15] = np.nan
        return v

    A = rand_sparse(rng, m, n, density, empty_rows=empty, values=ties)
    W = rng.integers(-3, 4, (m, n)).astype(np.int32)
    if m == 0:
        # the reference interpreter cannot take a grouped top-k over zero rows yet; the answer is empty
        bound, sizes = bind_inputs(ir, dict(A=A, W=W))
        assert all(t.to_presence()[1].sum() == 0 for t in exe.run(bound, sizes).values())
        return
    for k in (2, 0, 5):
        check(ir, exe, dict(A=A, W=W, k=k))


def test_topk_matches_a_hand_computed_row(compiled):
    ir, exe = compiled(TOPK)
    A = sp.csr_array(np.array([[1.0, 3.0, 3.0, 0.0, 2.0, np.nan, 3.0]]))  # 0.0 is not stored
    got = check(ir, exe, dict(A=A, W=np.zeros((1, 7), np.int32), k=2))
    # ties to the lower index: the 3.0s at columns 1 and 2 win; NaN ranks lowest for topk
    assert set(np.nonzero(got["P"].to_presence()[1][0])[0]) == {1, 2}
    # bottomk in runs of 4 (columns 0-3, 4-6): NaN is the smallest, then the smaller values
    assert set(np.nonzero(got["Q"].to_presence()[1][0])[0]) == {0, 1, 4, 5}


# ---------------------------------------------------------------- f16 / bf16

HALF = """
input  A: csr<f16>[M, N]
input  X: dense<f16>[N, F]
input  b: dense<bf16>[M, F]
output Y: dense<f16>[M, F]
output Z: dense<bf16>[M, F]
output C: csr<f16>[M, N]
output s: dense<bf16>[M]
Y[i, f] = sum[j] A[i, j] * X[j, f]
Z[i, f] = exp(b[i, f]) * 0.5 + b[i, f]
C[i, j] = A[i, j] * A[i, j] + 1.0
s[i] = softmax[f] b[i, f] where f < 2
"""


def test_half_precision_compute_in_f32_store_rounded(compiled):
    from sparsedsl.runtime.dtypes import round_bf16

    rng = np.random.default_rng(2)
    ir, exe = compiled(HALF.replace("output s: dense<bf16>[M]\n", "").replace(
        "s[i] = softmax[f] b[i, f] where f < 2\n", ""))
    for m, n, density, empty in SHAPES:
        A = rand_sparse(rng, m, n, density, np.float16, empty_rows=empty)
        X = rng.standard_normal((n, 3)).astype(np.float16)
        b = round_bf16(rng.standard_normal((m, 3)).astype(np.float32))
        got = check(ir, exe, dict(A=A, X=X, b=b))
        assert got["Y"].values.dtype == np.float16
        z = got["Z"].values
        np.testing.assert_array_equal(z, round_bf16(z))  # stored on the bf16 grid


# ---------------------------------------------------------------- softmax along an outer index

SOFTMAX = """
input  A: csr<f64>[M, N]
output P: csr<f64>[M, N]
output D: dense<f64>[M, N]
output y: dense<f64>[N]
P[i, j] = softmax[i] A[i, j]
D[i, j] = softmax[i] A[i, j] * 2.0
y[j] = sum[i] softmax[j] A[i, j]
"""


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_softmax_along_an_outer_index(compiled, shape):
    m, n, density, empty = shape
    rng = np.random.default_rng(m + 2 * n)
    ir, exe = compiled(SOFTMAX)
    A = rand_sparse(rng, m, n, density, empty_rows=empty)
    got = check(ir, exe, dict(A=A))
    dense, present = A.toarray(), (A != 0).toarray()
    for j in range(n):
        col = dense[present[:, j], j]
        if len(col):
            e = np.exp(col - col.max())
            np.testing.assert_allclose(got["P"].to_presence()[0][present[:, j], j], e / e.sum(), rtol=1e-12)


TRANSPOSED_SOFTMAX = """
input  A: csr<i32>[N, N]
input  X: dense<f32>[N, F]
input  Q: dense<f32>[N, F]
output Y: csr<f32>[N, N]
T[i, j] = sum[f] Q[i, f] * X[j, f] where A[i, j]
U[i, j] = softmax[j] T[i, j]
Y[i, j] = U[j, i] - 1
"""


@pytest.mark.parametrize("n, f", [(6, 5), (5, 0), (1, 3), (0, 4)])
def test_softmax_of_a_product_read_transposed(compiled, n, f):
    """The softmax is computed into a temporary first (its row is read as a column); the product's reduction
    inside it needs its index's extent there too (found by the fused-schedule differential test: the numba
    target and `explain` failed with an internal KeyError)."""
    rng = np.random.default_rng(n + 7 * f)
    ir, exe = compiled(TRANSPOSED_SOFTMAX)
    A = rand_sparse(rng, n, n, 0.4, dtype=np.int32, empty_rows=(2,))
    X = rng.standard_normal((n, f)).astype(np.float32)
    Q = rng.standard_normal((n, f)).astype(np.float32)
    got = check(ir, exe, dict(A=A, X=X, Q=Q))
    values, present = got["Y"].to_presence()
    pattern = np.zeros((n, n), bool)
    stored = A.tocoo()
    pattern[stored.row, stored.col] = True  # stored entries, zeros included (the mask is structural)
    if f == 0:
        pattern[:] = False  # a sum over no entries is absent (spec § 5, item 5), and so is every score
    scores = Q.astype(np.float64) @ X.astype(np.float64).T
    expected = np.zeros((n, n))
    for i in range(n):
        row = scores[i, pattern[i]]
        if row.size:
            e = np.exp(row - row.max())
            expected[i, pattern[i]] = e / e.sum()
    np.testing.assert_array_equal(present, pattern.T)
    np.testing.assert_allclose(values[present], (expected.T - 1)[present], rtol=1e-5, atol=1e-6)
    assert "its softmax first, as Y_softmax[j, i]" in sd.loads(TRANSPOSED_SOFTMAX).explain()


# ---------------------------------------------------------------- the sort accumulator

SORTED = """
input  A: csr<f64>[M, K]
input  B: csr<f64>[K, N]
output C: csr<f64>[M, N]
output T: csr<f64>[M, N]
C[i, j] = sum[k] A[i, k] * B[k, j]
T[i, j] = min[k] (A[i, k] + B[k, j])
schedule C:
    accumulator sort
schedule T:
    accumulator sort
"""


def test_sort_accumulator_matches_scipy(compiled):
    rng = np.random.default_rng(9)
    ir, exe = compiled(SORTED)
    assert "workspace w_ws: sort<f64>" in exe.loops
    for m, k, n, d in [(20, 15, 30, 0.2), (0, 3, 4, 0.5), (4, 0, 3, 0.5), (3, 4, 0, 0.5), (1, 1, 1, 1.0)]:
        A = rand_sparse(rng, m, k, d, empty_rows=(1,))
        B = rand_sparse(rng, k, n, d)
        got = check(ir, exe, dict(A=A, B=B))["C"]
        want = sp.csr_array(A @ B)
        want.sort_indices()
        np.testing.assert_allclose(got.to_presence()[0], want.toarray(), atol=1e-12)


# ---------------------------------------------------------------- scalars that may be absent

OPTIONAL = """
input  A: csr<f64>[N, N]
input  x: dense<f64>[N]
output y: dense<f64>[N]
output z: csr<f64>[N]
output o: f64
t = sum[i, j] A[i, j]
s = t where t > 0.0
y[i] = x[i] + s
z[i] = x[i] * s
o = fill(s, -1.0)
"""


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_scalar_that_may_be_absent(compiled, sign):
    ir, exe = compiled(OPTIONAL)
    A = sp.csr_array(np.array([[sign, 0.0], [0.0, 0.5 * sign]]))
    x = np.array([1.0, 2.0])
    got = check(ir, exe, dict(A=A, x=x))
    assert got["o"].values.item() == (1.5 if sign > 0 else -1.0)
    assert got["z"].to_presence()[1].all() == (sign > 0)


# ---------------------------------------------------------------- gathers and affine access

GATHER = """
input  A: csr<f64>[N, N]
input  X: dense<f64>[N, F]
input  P: dense<i64>[N]
input  v: dense<f64>[N]
output G: dense<f64>[N, F]
output S: dense<f64>[N]
output H: csr<f64>[N, N]
output W: csr<f64>[N, N]
G[i, f] = X[P[i], f]
S[i] = v[i + 1] - v[i]
H[i, j] = A[P[i], j]
W[i, j] = A[i, j] * v[2 * j + 1 - j]
"""


@pytest.mark.parametrize("n", [7, 1, 0])
def test_gather_and_affine_access(compiled, n):
    rng = np.random.default_rng(n + 40)
    ir, exe = compiled(GATHER)
    A = rand_sparse(rng, n, n, 0.4, empty_rows=(1,))
    X = rng.standard_normal((n, 2))
    P = rng.integers(-1, n + 1, n)  # -1 and n are out of range: absent
    v = rng.standard_normal(n)
    got = check(ir, exe, dict(A=A, X=X, P=P, v=v))
    inside = (P >= 0) & (P < n)
    np.testing.assert_allclose(got["G"].values[inside], X[P[inside]])


# ---------------------------------------------------------------- rank 3 and block formats

RANK3 = """
input  T: dense<f64>[I, J, K]
input  U: coo<f64>[I, J, K]
output s: dense<f64>[I, K]
output V: coo<f64>[I, J, K]
output m: dense<f64>[I]
s[a, c] = sum[b] T[a, b, c] * U[a, b, c]
V[a, b, c] = U[a, b, c] * 2.0 + T[a, b, c] where U[a, b, c]
m[a] = max[b, c] U[a, b, c]
"""


@pytest.mark.parametrize("shape", [(3, 4, 5), (0, 2, 2), (2, 0, 3), (1, 1, 1)])
def test_rank3_dense_and_coo(compiled, shape):
    rng = np.random.default_rng(sum(shape))
    ir, exe = compiled(RANK3)
    T = rng.standard_normal(shape)
    keep = rng.random(shape) < 0.4
    U = from_presence(np.where(keep, rng.standard_normal(shape), 0.0), keep,
                      TensorType("f64", ("I", "J", "K"), Format("coo")), {})
    got = check(ir, exe, dict(T=T, U=U))
    np.testing.assert_allclose(got["s"].values, np.einsum("abc,abc->ac", T, np.where(keep, U.to_presence()[0], 0)))


BLOCKS = """
input  B: bsr(2, 2)<f64>[M, N]
input  D: blockdiag(2)<f64>[N, N]
input  S: nm(2, 4)<f64>[M, N]
input  X: dense<f64>[N, F]
output Y: dense<f64>[M, F]
output Z: csr<f64>[M, N]
output O: bsr(2, 2)<f64>[M, N]
Y[i, f] = sum[j] (B[i, j] + S[i, j]) * X[j, f]
Z[i, j] = sum[k] B[i, k] * D[k, j]
O[i, j] = B[i, j] * 3.0
"""


@pytest.mark.parametrize("shape", [(4, 8), (2, 4), (0, 4)])
def test_block_formats_as_inputs_and_outputs(compiled, shape):
    m, n = shape
    rng = np.random.default_rng(m + n)
    ir, exe = compiled(BLOCKS)
    sizes = {"M": m, "N": n}
    bkeep = np.kron(rng.random((m // 2, n // 2)) < 0.5, np.ones((2, 2), bool))
    B = from_presence(rng.standard_normal((m, n)), bkeep, TensorType("f64", ("M", "N"), Format("bsr", (2, 2))), sizes)
    dkeep = np.kron(np.eye(2, dtype=bool), np.ones((n // 2, n // 2), bool))
    D = from_presence(rng.standard_normal((n, n)), dkeep, TensorType("f64", ("N", "N"), Format("blockdiag", (2,))),
                      sizes)
    skeep = np.zeros((m, n), bool)
    for r in range(m):
        for g in range(0, n, 4):
            skeep[r, g + rng.choice(4, 2, replace=False)] = True
    S = from_presence(rng.standard_normal((m, n)), skeep, TensorType("f64", ("M", "N"), Format("nm", (2, 4))), sizes)
    X = rng.standard_normal((n, 3))
    got = check(ir, exe, dict(B=B, D=D, S=S, X=X))
    bv, sv = B.to_presence()[0], S.to_presence()[0]
    np.testing.assert_allclose(got["Y"].values, (bv + sv) @ X, atol=1e-12)


# ---------------------------------------------------------------- the spec examples

def _graph(rng, n, density, dtype=np.float64, symmetric=False):
    a = rand_sparse(rng, n, n, density, dtype, empty_rows=(1,) if n > 2 else ())
    if dtype != np.bool_:
        a.data = np.abs(a.data) + 0.1
    if symmetric:
        a = sp.csr_array((a + a.T).astype(dtype))
        a.sort_indices()
    return a


def _example_inputs(name, rng, n):
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {
        "pagerank": lambda: dict(A=_graph(rng, n, 0.2)),
        "bfs": lambda: dict(A=_graph(rng, n, 0.15, np.bool_)),
        "sssp": lambda: dict(A=_graph(rng, n, 0.15)),
        "components": lambda: dict(A=_graph(rng, n, 0.08, np.bool_, symmetric=True)),
        "triangles": lambda: dict(A=_graph(rng, n, 0.3, np.bool_, symmetric=True)),
        "graph_attention": lambda: dict(G=_graph(rng, n, 0.3, np.bool_), Q=f32(n, 4), K=f32(n, 4), V=f32(n, 4)),
        "topk_attention": lambda: dict(Q=f32(n, 4), K=f32(n, 4), V=f32(n, 4), k=3),
        "topk_prune": lambda: dict(W=f32(n, 8), X=f32(8, 3)),
        "gin": lambda: dict(G=_graph(rng, n, 0.2, np.bool_), H=f32(n, 5), W=f32(5, 3)),
        "spmm": lambda: dict(A=_graph(rng, n, 0.2, np.float32), X=f32(n, 5)),
        "spgemm": lambda: dict(A=_graph(rng, n, 0.2), B=_graph(rng, n, 0.2)),
    }[name]()


EXAMPLE_NAMES = sorted(p.stem for p in EXAMPLES.glob("*.sdsl"))


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_spec_example_matches_ref(compiled, name):
    ir, exe = compiled((EXAMPLES / f"{name}.sdsl").read_text())
    rng = np.random.default_rng(len(name))
    for n in (12, 1, 0):
        inputs = _example_inputs(name, rng, n)
        if n == 0 and name == "topk_prune":
            # the reference interpreter cannot take a grouped top-k over zero rows yet; the answer is empty
            bound, sizes = bind_inputs(ir, inputs)
            assert all(t.to_presence()[1].sum() == 0 for t in exe.run(bound, sizes).values())
            continue
        check(ir, exe, inputs)


def test_every_example_is_covered():
    assert set(EXAMPLE_NAMES) >= {"pagerank", "bfs", "sssp", "components", "triangles", "graph_attention",
                                  "topk_attention", "topk_prune", "gin", "spmm", "spgemm"}


# ---------------------------------------------------------------- decisions and loop IR (no compilation)

def test_accumulator_decisions_say_what_and_why():
    spgemm = sd.loads(SORTED.split("schedule")[0]).ir(optimized=True).program
    made = numba_backend.decisions(spgemm)
    acc = [d for d in made if d.kind == "accumulator"]
    assert [(d.subject, d.kind, d.choice) for d in acc] == [("C", "accumulator", "auto"), ("T", "accumulator", "auto")]
    assert "per row" in acc[0].reason and acc[0].span.line == 6
    # the products' rows come out of their workspaces: one numeric pass each
    assert ("C", "one pass") in [(d.subject, d.choice) for d in made if d.kind == "assembly"]
    forced = [d for d in numba_backend.decisions(sd.loads(SORTED).ir(optimized=True).program)
              if d.kind == "accumulator"]
    assert {(d.choice, d.reason) for d in forced} == {("sort", "schedule directive")}
    assert {d.choice for d in numba_backend.decisions(spgemm, {"accumulator": "hash"})
            if d.kind == "accumulator"} == {"hash"}
    outer = numba_backend.decisions(sd.loads(SOFTMAX).ir(optimized=True).program)
    temps = [d for d in outer if d.kind == "temporary"]
    assert temps and {d.subject for d in temps} <= {"P", "D", "y"}  # the program's own tensors
    assert any("softmax along 'i'" in d.reason and "_softmax[" in d.choice for d in temps)


def test_repeat_is_a_host_loop_around_kernels():
    from sparsedsl.loop_ir.printer import format_module

    text = format_module(numba_backend.lower(sd.loads(POWER).ir(optimized=True).program, SERIAL))
    host = text.split("host:")[1]
    assert "repeat at most s_repeat_count:" in host
    # the carried matrix is computed into fresh arrays, then renamed back to its own
    assert "ptr_P = ptr_P_v" in host and "val_h = val_h_v" in host


LOGSUMEXP_SEVERAL = """\
input  A: csr<f64>[M, N]
input  B: coo<f32>[M, N, K]
output s: f64
output t: f64
output r: dense<f32>[M]
s = logsumexp[i, j] A[i, j]
t = logsumexp[j, i] (A[i, j] where A[i, j] > 0.5)
r[i] = fill(logsumexp[j, k] B[i, j, k], -1.0)
"""


@pytest.mark.parametrize("empty", [False, True])
def test_logsumexp_over_several_indices(empty):
    """logsumexp reduces several indices as sum does (it took exactly one): against scipy, with empty rows
    and, on the second input set, nothing stored at all."""
    from scipy.special import logsumexp

    rng = np.random.default_rng(17)
    dense = np.where(rng.random((6, 5)) < (0 if empty else 0.4), rng.uniform(-2, 3, (6, 5)), 0.0)
    dense[1] = 0.0
    A = sp.csr_array(dense)
    cube = np.where(rng.random((6, 5, 3)) < (0 if empty else 0.3), rng.uniform(-2, 3, (6, 5, 3)), 0.0)
    coords = np.nonzero(cube)
    B = sp.coo_array((cube[coords].astype(np.float32), coords), shape=cube.shape)
    want_r = np.array([logsumexp(cube[i][cube[i] != 0]) if (cube[i] != 0).any() else -1.0 for i in range(6)])
    program = sd.loads(LOGSUMEXP_SEVERAL, name="lse")
    for target in ("ref", "numba"):
        out = program.compile(target, parallel=False) if target == "numba" else program.compile(target)
        got = out(A=A, B=B)
        np.testing.assert_allclose(got["s"], logsumexp(A.data) if A.nnz else -np.inf, rtol=1e-12)
        kept = A.data[A.data > 0.5]
        np.testing.assert_allclose(got["t"], logsumexp(kept) if kept.size else -np.inf, rtol=1e-12)
        np.testing.assert_allclose(got["r"], want_r, rtol=1e-5)


# ---------------------------------------------------------------- reductions over a dense matrix's rows

COLUMNS = """
input  X: dense<f32>[N, F]
output h: dense<f32>[F]
output m: dense<f32>[F]
output c: dense<f64>[F]
h[f] = sum[i] X[i, f]
m[f] = max[i] X[i, f]
c[f] = mean[i] X[i, f]
"""


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("rows", [0, 1, 37])
def test_column_reductions_of_a_dense_matrix(rows, parallel):
    """A vector of column reductions of a dense matrix (graph readout: sum pooling over nodes). The row-wise
    workspace of such a statement is the whole output: its generated code once indexed that output with no
    index (a syntax error)."""
    rng = np.random.default_rng(rows)
    X = rng.uniform(-2, 2, (rows, 5)).astype(np.float32)
    got = sd.loads(COLUMNS, name="columns").compile("numba", parallel=parallel)(X=X)
    np.testing.assert_allclose(got["h"], X.sum(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["m"], X.max(axis=0) if rows else np.zeros(5, np.float32))
    np.testing.assert_allclose(got["c"], X.mean(axis=0, dtype=np.float64) if rows else np.zeros(5), rtol=1e-6)
