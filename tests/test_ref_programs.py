"""The reference target on whole programs written in the language, against numpy / scipy / networkx oracles."""
from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from scipy import special

import sparsedsl.api as sd
from sparsedsl.backends.ref import evaluate

DATA = Path(__file__).resolve().parent.parent / "sparsedsl" / "data"   # the bundled real matrices


# ---------------------------------------------------------------- helpers

def run(text: str, **inputs):
    """Compile for ref and call with user values (scipy / numpy); outputs as the user sees them."""
    return sd.loads(text).compile(target="ref")(**inputs)


def run_presence(text: str, **inputs):
    """Outputs as (values, present) dense arrays, through the runtime containers."""
    kernel = sd.loads(text).compile(target="ref")
    return {name: t.to_presence() for name, t in kernel.run_tensors(**inputs).items()}


def eval_ir(text: str, **inputs):
    """Evaluate the checked IR directly; inputs are arrays (all present) or (values, present) pairs."""
    program = sd.loads(text).ir().program
    env, sizes = {}, {}
    for decl in program.inputs:
        if decl.name not in inputs:
            continue
        value = inputs[decl.name]
        values, present = value if isinstance(value, tuple) else (np.asarray(value), None)
        values = np.asarray(values)
        if present is None:
            present = np.ones(values.shape, bool)
        for dim, n in zip(decl.type.shape, values.shape):
            if isinstance(dim, str):
                sizes[dim] = n
        env[decl.name] = (values, np.asarray(present, bool))
    return evaluate(program, env, sizes)


def random_csr(m, n, density, seed, dtype=np.float64, empty_rows=()):
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((m, n)) < density, rng.uniform(-2, 2, (m, n)), 0.0)
    for r in empty_rows:
        dense[r] = 0
    out = sp.csr_array(dense.astype(dtype))
    out.sort_indices()
    return out


def pattern(a) -> np.ndarray:
    """Stored coordinates of a scipy sparse array as a dense bool array."""
    coo = sp.coo_array(a)
    out = np.zeros(coo.shape, bool)
    out[tuple(coo.coords)] = True
    return out


def pattern_product(a, b) -> np.ndarray:
    """Where at least one k has a[i, k] and b[k, j] stored (scipy's product prunes cancelled zeros)."""
    return (pattern(a).astype(np.int64) @ pattern(b).astype(np.int64)) > 0


def read_graph(name: str) -> sp.csr_array:
    path = DATA / name
    with gzip.open(path, "rt") as fh:
        a = sp.csr_array(scipy.io.mmread(fh))
    a.sort_indices()
    return a


# ---------------------------------------------------------------- products

SPGEMM = """
input  A: csr<{t}>[M, K]
input  B: csr<{t}>[K, N]
output C: csr<{t}>[M, N]
C[i, j] = sum[k] A[i, k] * B[k, j]
"""


@pytest.mark.parametrize("dtype, tol", [("f64", 1e-12), ("f32", 1e-5)])
def test_spgemm_matches_scipy(dtype, tol):
    np_t = np.float64 if dtype == "f64" else np.float32
    A = random_csr(40, 30, 0.1, 1, np_t, empty_rows=(0, 7))
    B = random_csr(30, 25, 0.15, 2, np_t, empty_rows=(3,))
    values, present = run_presence(SPGEMM.format(t=dtype), A=A, B=B)["C"]
    np.testing.assert_array_equal(present, pattern_product(A, B))
    np.testing.assert_allclose(values, (A @ B).toarray(), rtol=tol, atol=tol)
    assert not present[0].any() and not present[7].any()


def test_spgemm_keeps_cancelled_entries_present():
    # 1*1 + 1*(-1) = 0 is computed, so it is present (an explicit zero), unlike scipy which prunes it
    A = sp.csr_array(np.array([[1.0, 1.0]]))
    B = sp.csr_array(np.array([[1.0], [-1.0]]))
    values, present = run_presence(SPGEMM.format(t="f64"), A=A, B=B)["C"]
    assert present.tolist() == [[True]]
    assert values.tolist() == [[0.0]]


def test_spgemm_on_real_graph():
    A = read_graph("bcsstk13.mtx.gz")[:600, :600]
    out = run(SPGEMM.format(t="f64"), A=A, B=A)["C"]
    want = A @ A
    np.testing.assert_array_equal(pattern(out), pattern_product(A, A))
    np.testing.assert_allclose(out.toarray(), want.toarray(), rtol=1e-12, atol=1e-6)


def test_spmm_matches_numpy():
    A = random_csr(50, 40, 0.08, 3, empty_rows=(5,))
    X = np.random.default_rng(4).standard_normal((40, 16))
    out = run("""
input  A: csr<f64>[N, K]
input  X: dense<f64>[K, F]
output Y: dense<f64>[N, F]
Y[i, f] = sum[k] A[i, k] * X[k, f]
""", A=A, X=X)["Y"]
    np.testing.assert_allclose(out, A @ X, rtol=1e-12, atol=1e-12)
    assert (out[5] == 0).all()  # an empty row is absent, stored as 0 in the dense output


def test_sddmm_matches_numpy():
    G = random_csr(30, 30, 0.1, 5).astype(bool)
    rng = np.random.default_rng(6)
    Q = rng.standard_normal((30, 8))
    K = rng.standard_normal((30, 8))
    values, present = run_presence("""
input  G: csr<bool>[N, N]
input  Q: dense<f64>[N, D]
input  K: dense<f64>[N, D]
input  scale: f64 = 0.5
output S: csr<f64>[N, N]
S[i, j] = scale * sum[d] Q[i, d] * K[j, d] where G[i, j]
""", G=G, Q=Q, K=K)["S"]
    np.testing.assert_array_equal(present, pattern(G))
    np.testing.assert_allclose(values[present], (0.5 * Q @ K.T)[present], rtol=1e-12)


TRIANGLES = """
input  A: csr<f64>[N, N]
output t: f64
L[i, j] = A[i, j] where j < i
C[i, j] = sum[k] L[i, k] * L[j, k] where L[i, j]
t = sum[i, j] C[i, j]
"""


def test_triangle_count_karate_club():
    G = nx.karate_club_graph()
    A = nx.to_scipy_sparse_array(G, nodelist=range(34), weight=None, format="csr", dtype=np.float64)
    assert run(TRIANGLES, A=A)["t"] == 45 == sum(nx.triangles(G).values()) // 3


def test_triangle_count_ego_facebook():
    A = read_graph("ego-Facebook.mtx.gz")
    assert run(TRIANGLES, A=A)["t"] == 1_612_010


def test_tropical_min_plus():
    A = random_csr(15, 12, 0.3, 7)
    B = random_csr(12, 10, 0.3, 8)
    values, present = run_presence("""
input  A: csr<f64>[M, K]
input  B: csr<f64>[K, N]
output D: csr<f64>[M, N]
D[i, j] = min[k] (A[i, k] + B[k, j])
""", A=A, B=B)["D"]
    pa, pb = pattern(A), pattern(B)
    a = np.where(pa, A.toarray(), np.inf)
    b = np.where(pb, B.toarray(), np.inf)
    want = (a[:, :, None] + b[None, :, :]).min(axis=1)
    np.testing.assert_array_equal(present, pattern_product(A, B))
    np.testing.assert_allclose(values[present], want[present], rtol=1e-12)


# ---------------------------------------------------------------- iteration

BFS = """
input  A: csr<bool>[N, N]
input  s: dense<bool>[N]
output level: dense<i64>[N] fill -1
frontier[i] = s[i] where s[i] == true
visited[i] = frontier[i]
lvl[i] = 0 where frontier[i]
d = 0
repeat at most N until done:
    d = d + 1
    nxt[j] = any[i] (frontier[i] and A[i, j]) where not visited[j]
    frontier[j] = nxt[j]
    visited[j] = visited[j] or frontier[j]
    lvl[j] += d where frontier[j]
    done = not any[j] frontier[j]
level[i] = lvl[i]
"""


@pytest.mark.parametrize("graph, source", [
    (nx.karate_club_graph(), 5),
    (nx.gnp_random_graph(60, 0.03, seed=11, directed=True), 0),
])
def test_bfs_levels_match_networkx(graph, source):
    n = graph.number_of_nodes()
    A = nx.to_scipy_sparse_array(graph, nodelist=range(n), format="csr", dtype=bool)
    s = np.zeros(n, bool)
    s[source] = True
    level = run(BFS, A=A, s=s)["level"]
    dist = nx.single_source_shortest_path_length(graph, source)
    want = np.array([dist.get(v, -1) for v in range(n)])
    np.testing.assert_array_equal(level, want)
    assert (want == -1).any() or graph.is_directed() is False


PAGERANK = """
input  A: csr<f64>[N, N]            # A[i, j] present for an edge i -> j
input  alpha: f64 = 0.85
output r: dense<f64>[N]

outdeg[i] = sum[j] A[i, j]
r[i] = 1.0 / f64(N)
repeat at most 200 until err < 1e-12:
    dangling = sum[i] (r[i] where not outdeg[i])
    c[j] = sum[i] r[i] * A[i, j] / outdeg[i]
    rn[j] = alpha * fill(c[j], 0.0) + (alpha * dangling + 1.0 - alpha) / f64(N)
    err = sum[j] abs(rn[j] - r[j])
    r = rn
"""


def test_pagerank_with_dangling_nodes_matches_networkx():
    G = nx.gnp_random_graph(80, 0.04, seed=21, directed=True)
    dangling = [v for v in G if G.out_degree(v) == 0]
    assert dangling, "the test graph must have dangling nodes"
    A = nx.to_scipy_sparse_array(G, nodelist=range(80), format="csr", dtype=np.float64)
    r = run(PAGERANK, A=A)["r"]
    pr = nx.pagerank(G, alpha=0.85, tol=1e-15, max_iter=1000)
    np.testing.assert_allclose(r, [pr[v] for v in range(80)], atol=1e-10)
    assert abs(r.sum() - 1.0) < 1e-10


def test_repeat_stops_at_max_iters_without_condition():
    x = np.array([1.0, 2.0])
    out = run("""
input  x: dense<f64>[N]
output y: dense<f64>[N]
y[i] = x[i]
repeat at most 5:
    y[i] = 2.0 * y[i]
""", x=x)["y"]
    np.testing.assert_array_equal(out, x * 32)


def test_repeat_until_checked_after_each_iteration():
    out = run("""
input  x: f64
output n: i64
output v: f64
v = x
n = 0
repeat at most 100 until v > 100.0:
    v = v * 3.0
    n = n + 1
""", x=1.0)
    assert out["n"] == 5 and out["v"] == 243.0   # 3^4 = 81 <= 100 < 243


# ---------------------------------------------------------------- reductions (spec § 5 rule 5)

ROW_REDUCTIONS = ["sum", "prod", "max", "min", "mean", "var", "std", "count", "any", "all", "argmax", "argmin",
                  "logsumexp"]


def _row_oracle(op, entries):
    match op:
        case "sum":
            return entries.sum()
        case "prod":
            return entries.prod()
        case "max":
            return entries.max()
        case "min":
            return entries.min()
        case "mean":
            return entries.mean()
        case "var":
            return entries.var()
        case "std":
            return entries.std()
        case "count":
            return len(entries)
        case "any":
            return bool((entries != 0).any())
        case "all":
            return bool((entries != 0).all())
        case "logsumexp":
            return special.logsumexp(entries)
    raise AssertionError(op)


@pytest.mark.parametrize("op", ROW_REDUCTIONS)
def test_row_reductions_skip_absent_entries(op):
    rng = np.random.default_rng(31)
    dense = np.round(rng.uniform(-3, 3, (9, 7)), 1)
    dense[rng.random((9, 7)) < 0.5] = 0
    dense[2] = 0                       # an empty row: absent result
    dense[4, 1] = 0.0
    dense[5] = [0, 2.5, 0, 2.5, -1, 0, 0]  # a tie for argmax
    present = dense != 0
    present[4, 1] = True               # a stored zero takes part (any/all/prod see it)
    rtype = {"count": "i64", "any": "bool", "all": "bool", "argmax": "i64", "argmin": "i64"}.get(op, "f64")
    text = f"""
input  A: coo<f64>[M, N]
output r: coo<{rtype}>[M]
r[i] = {op}[j] A[i, j]
"""
    values, got = eval_ir(text, A=(dense, present))["r"]
    for i in range(9):
        entries = dense[i][present[i]]
        assert got[i] == (len(entries) > 0)
        if not len(entries):
            continue
        if op == "argmax":
            want = np.flatnonzero(present[i])[np.argmax(entries)]
        elif op == "argmin":
            want = np.flatnonzero(present[i])[np.argmin(entries)]
        else:
            want = _row_oracle(op, entries)
        np.testing.assert_allclose(values[i], want, rtol=1e-12, atol=1e-12)
    assert values[5] == 1 if op == "argmax" else True


SCALAR_IDENTITIES = {
    "sum": 0.0, "prod": 1.0, "max": -np.inf, "min": np.inf, "count": 0, "any": False, "all": True,
    "argmax": -1, "argmin": -1, "logsumexp": -np.inf,
}


@pytest.mark.parametrize("op", ROW_REDUCTIONS)
def test_scalar_reduction_over_no_entries_is_the_identity(op):
    rtype = {"count": "i64", "any": "bool", "all": "bool", "argmax": "i64", "argmin": "i64"}.get(op, "f64")
    A = sp.csr_array((3, 4), dtype=np.float64)
    if op in ("argmax", "argmin", "logsumexp"):   # one reduced index only
        text = f"input x: csr<f64>[N]\noutput r: {rtype}\nr = {op}[i] x[i]\n"
        values, present = eval_ir(text, x=(np.zeros(4), np.zeros(4, bool)))["r"]
    else:
        text = f"input A: csr<f64>[M, N]\noutput r: {rtype}\nr = {op}[i, j] A[i, j]\n"
        values, present = run_presence(text, A=A)["r"]
    assert present.shape == () and bool(present)
    if op in ("mean", "var", "std"):
        assert np.isnan(values)
    else:
        assert values == SCALAR_IDENTITIES[op]


def test_logsumexp_does_not_overflow():
    x = np.array([1000.0, 1000.0, -5.0])
    out = run("input x: dense<f64>[N]\noutput r: f64\nr = logsumexp[i] x[i]\n", x=x)["r"]
    np.testing.assert_allclose(out, special.logsumexp(x), rtol=1e-14)


def test_mean_of_integers_and_count_of_pattern():
    A = sp.csr_array(np.array([[1, 2, 0], [0, 0, 0], [3, 0, 0]], dtype=np.int64))
    values, present = run_presence("""
input  A: csr<i64>[M, N]
output m: csr<f64>[M]
output c: dense<i64>[M]
m[i] = mean[j] A[i, j]
c[i] = count[j] A[i, j]
""", A=A).values()
    np.testing.assert_array_equal(values[1], [True, False, True])
    np.testing.assert_allclose(values[0][[0, 2]], [1.5, 3.0])
    np.testing.assert_array_equal(present[0], [2, 0, 1])


# ---------------------------------------------------------------- softmax, top-k, fill, where

def test_softmax_per_row_over_stored_entries():
    A = random_csr(12, 10, 0.4, 41, empty_rows=(3,))
    A.data *= 400.0  # large scores: only a max-subtracted softmax stays finite
    values, present = run_presence("""
input  A: csr<f64>[N, M]
output P: csr<f64>[N, M]
P[i, j] = softmax[j] A[i, j]
""", A=A)["P"]
    np.testing.assert_array_equal(present, pattern(A))
    dense = A.toarray()
    for i in range(12):
        stored = pattern(A)[i]
        if not stored.any():
            continue
        x = dense[i][stored]
        e = np.exp(x - x.max())
        np.testing.assert_allclose(values[i][stored], e / e.sum(), rtol=1e-12)
    assert np.isfinite(values).all()


def _topk_oracle(x, present, k, largest, group=None):
    """Stable ordering by value (ties to the lower index) per row, within runs of ``group``."""
    out = np.zeros(x.shape, bool)
    n = x.shape[1]
    group = group or n
    for i in range(x.shape[0]):
        for start in range(0, n, group):
            idx = [j for j in range(start, min(start + group, n)) if present[i, j]]
            ranked = sorted(idx, key=lambda j: (-x[i, j] if largest else x[i, j], j))
            out[i, ranked[:k]] = True
    return out


@pytest.mark.parametrize("largest", [True, False])
def test_topk_per_row_with_ties_and_absent_entries(largest):
    rng = np.random.default_rng(51)
    x = rng.integers(-3, 4, (8, 9)).astype(np.float64)   # many ties
    present = rng.random((8, 9)) < 0.7
    present[2] = False
    present[3] = [True, False, False, False, False, False, False, False, False]  # fewer than k present
    op = "topk" if largest else "bottomk"
    values, got = eval_ir(f"""
input  W: coo<f64>[M, N]
output P: coo<bool>[M, N]
P[i, j] = {op}[j](3) W[i, j]
""", W=(x, present))["P"]
    np.testing.assert_array_equal(got, _topk_oracle(x, present, 3, largest))


def test_two_four_pruning_group_topk():
    rng = np.random.default_rng(52)
    W = rng.standard_normal((6, 16))
    W[0, :4] = [1.0, -1.0, 1.0, 0.5]     # a tie in |W|: lower index wins
    out = run("""
input  W: dense<f64>[M, N]
output S: csr<f64>[M, N]
S[i, j] = W[i, j] where topk[j](2, group=4) abs(W[i, j])
""", W=W)["S"]
    keep = _topk_oracle(np.abs(W), np.ones(W.shape, bool), 2, True, group=4)
    np.testing.assert_array_equal(pattern(out), keep)
    np.testing.assert_array_equal(out.toarray()[keep], W[keep])
    assert (keep.reshape(6, 4, 4).sum(axis=2) == 2).all()
    assert keep[0, :4].tolist() == [True, True, False, False]


def test_group_topk_with_partial_last_run():
    W = np.arange(1.0, 11.0)[None, :]     # 10 columns, runs of 4: the last run has 2
    values, got = eval_ir("""
input  W: dense<f64>[M, N]
output P: coo<bool>[M, N]
P[i, j] = topk[j](3, group=4) W[i, j]
""", W=W)["P"]
    assert np.flatnonzero(got[0]).tolist() == [1, 2, 3, 5, 6, 7, 8, 9]


def test_fill_and_masks():
    A = sp.csr_array(np.array([[1.0, 0, 2.0], [0, 0, 0], [0, -3.0, 4.0]]))
    M = sp.csr_array(np.array([[1.0, 1.0, 0], [0, 0, 0], [0, 0, 1.0]]))
    out = run_presence("""
input  A: csr<f64>[N, N]
input  M: csr<f64>[N, N]
output F: dense<f64>[N, N]
output S: csr<f64>[N, N]
output C: csr<f64>[N, N]
output V: csr<f64>[N, N]
output P: csr<f64>[N, N]
F[i, j] = fill(A[i, j], 7.0)
S[i, j] = A[i, j] where M[i, j]
C[i, j] = A[i, j] where not M[i, j]
V[i, j] = A[i, j] where A[i, j] > 1.5 or M[i, j] == 1.0
P[i, j] = A[i, j] where j <= i and not (i - j < 1)
""", A=A, M=M)
    a, pa = A.toarray(), pattern(A)
    pm = pattern(M)
    np.testing.assert_array_equal(out["F"][0], np.where(pa, a, 7.0))
    np.testing.assert_array_equal(out["S"][1], pa & pm)
    np.testing.assert_array_equal(out["C"][1], pa & ~pm)
    np.testing.assert_array_equal(out["V"][1], pa & ((a > 1.5) | pm))
    i, j = np.indices((3, 3))
    np.testing.assert_array_equal(out["P"][1], pa & (j < i))


# ---------------------------------------------------------------- presence examples of spec § 5

def test_presence_examples_of_spec_section_5():
    S = sp.csr_array(np.array([[1.0, 0, 2.0], [0, 0, 0], [0, 3.0, 0]]))
    B = sp.csr_array(np.array([[0.0, 5.0, 1.0], [0, 0, 0], [0, 0, 0]]))
    m = np.array([10.0, 20.0, 30.0])
    out = run_presence("""
input  S: csr<f64>[N, N]
input  B: csr<f64>[N, N]
input  m: dense<f64>[N]
output D: csr<f64>[N, N]
output P: csr<f64>[N, N]
output E: csr<f64>[N, N]
output U: csr<f64>[N, N]
output X: csr<f64>[N, N]
D[i, j] = S[i, j] - m[i]
P[i, j] = S[i, j] + 1
E[i, j] = exp(S[i, j])
U[i, j] = S[i, j] - B[i, j]
X[i, j] = S[i, j] * B[i, j]
""", S=S, B=B, m=m)
    s, ps, b, pb = S.toarray(), pattern(S), B.toarray(), pattern(B)
    np.testing.assert_array_equal(out["D"][1], ps)
    np.testing.assert_array_equal(out["D"][0][ps], (s - m[:, None])[ps])
    np.testing.assert_array_equal(out["P"][1], ps)
    np.testing.assert_array_equal(out["E"][1], ps)          # exp of an absent entry stays absent, not 1
    np.testing.assert_allclose(out["E"][0][ps], np.exp(s[ps]))
    np.testing.assert_array_equal(out["U"][1], ps | pb)     # union; an absent operand reads as 0
    np.testing.assert_array_equal(out["U"][0], s - b)
    np.testing.assert_array_equal(out["X"][1], ps & pb)
    np.testing.assert_array_equal(out["X"][0][ps & pb], (s * b)[ps & pb])


def test_union_max_takes_the_other_operand():
    a = (np.array([1.0, -5.0, 0.0, 0.0]), np.array([True, True, False, False]))
    b = (np.array([3.0, 0.0, -2.0, 0.0]), np.array([True, False, True, False]))
    out = eval_ir("""
input  a: coo<f64>[N]
input  b: coo<f64>[N]
output hi: coo<f64>[N]
output lo: coo<f64>[N]
hi[i] = max(a[i], b[i])
lo[i] = min(a[i], b[i])
""", a=a, b=b)
    np.testing.assert_array_equal(out["hi"][1], [True, True, True, False])
    np.testing.assert_array_equal(out["hi"][0][:3], [3.0, -5.0, -2.0])   # not max(-5, 0): no identity 0
    np.testing.assert_array_equal(out["lo"][0][:3], [1.0, -5.0, -2.0])


# ---------------------------------------------------------------- access: affine and indirect

def test_affine_access_out_of_range_is_absent():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    out = run_presence("""
input  x: dense<f64>[N]
output nxt: csr<f64>[N]
output prv: csr<f64>[N]
output d: dense<f64>[N]
nxt[i] = x[i + 1]
prv[i] = x[i - 1]
d[i] = fill(x[i + 1], 0.0) - x[i]
""", x=x)
    np.testing.assert_array_equal(out["nxt"][1], [True, True, True, False])
    np.testing.assert_array_equal(out["nxt"][0][:3], [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(out["prv"][1], [False, True, True, True])
    np.testing.assert_array_equal(out["d"][0], [1.0, 1.0, 1.0, -4.0])


def test_affine_block_access():
    W = np.arange(12.0)
    out = run("""
input  W: dense<f64>[N]
input  Z: dense<f64>[G, R]
output B: dense<f64>[G, R]
B[g, r] = W[4 * g + r] + Z[g, r]
""", W=W, Z=np.zeros((3, 4)))["B"]
    np.testing.assert_array_equal(out, W.reshape(3, 4))


def test_gather_permutation_and_bad_indices():
    X = np.arange(10.0).reshape(5, 2)
    P = np.array([4, 0, 7, -1, 2])        # 7 and -1 are out of range: absent
    out = run_presence("""
input  X: dense<f64>[N, F]
input  P: dense<i64>[M]
output Y: csr<f64>[M, F]
Y[i, f] = X[P[i], f]
""", X=X, P=P)["Y"]
    np.testing.assert_array_equal(out[1].all(axis=1), [True, True, False, False, True])
    np.testing.assert_array_equal(out[0][[0, 1, 4]], X[[4, 0, 2]])


def test_gather_through_absent_index_is_absent():
    X = np.array([10.0, 20.0, 30.0])
    P = (np.array([2, 0, 1]), np.array([True, False, True]))
    values, present = eval_ir("""
input  X: dense<f64>[N]
input  P: coo<i64>[M]
output Y: coo<f64>[M]
Y[i] = X[P[i]]
""", X=X, P=P)["Y"]
    np.testing.assert_array_equal(present, [True, False, True])
    np.testing.assert_array_equal(values[[0, 2]], [30.0, 20.0])


# ---------------------------------------------------------------- dtypes and casts

@pytest.mark.parametrize("dtype", ["bool", "i8", "i32", "i64", "f16", "f32", "f64"])
def test_elementwise_in_every_dtype_matches_numpy(dtype):
    np_t = {"bool": np.bool_, "i8": np.int8, "i32": np.int32, "i64": np.int64, "f16": np.float16,
            "f32": np.float32, "f64": np.float64}[dtype]
    rng = np.random.default_rng(61)
    a = rng.integers(-100, 100, 16).astype(np_t) if dtype != "bool" else rng.random(16) < 0.5
    b = rng.integers(-100, 100, 16).astype(np_t) if dtype != "bool" else rng.random(16) < 0.5
    ops = "s[i] = a[i] & b[i]\nm[i] = max(a[i], b[i])\n" if dtype == "bool" else \
        "s[i] = a[i] * b[i] + a[i]\nm[i] = max(a[i], b[i])\n"
    out = run(f"""
input  a: dense<{dtype}>[N]
input  b: dense<{dtype}>[N]
output s: dense<{dtype}>[N]
output m: dense<{dtype}>[N]
{ops}""", a=a, b=b)
    with np.errstate(all="ignore"):
        want_s = (a & b) if dtype == "bool" else (a * b + a)
    assert out["s"].dtype == np.dtype(np_t)
    np.testing.assert_array_equal(out["s"], want_s)
    np.testing.assert_array_equal(out["m"], np.maximum(a, b))


def test_integer_arithmetic_wraps_and_floors_like_numpy():
    a = np.array([127, -7, 7, -7, 5], dtype=np.int8)
    b = np.array([1, 2, -2, -2, 0], dtype=np.int8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # no RuntimeWarning leaks out of the interpreter
        out = run("""
input  a: dense<i8>[N]
input  b: dense<i8>[N]
output s: dense<i8>[N]
output q: dense<i8>[N]
output r: dense<i8>[N]
s[i] = a[i] + b[i]
q[i] = a[i] // b[i]
r[i] = a[i] % b[i]
""", a=a, b=b)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(out["s"], a + b)         # 127 + 1 wraps to -128
        np.testing.assert_array_equal(out["q"], a // b)       # floor; x // 0 is 0 as in numpy
        np.testing.assert_array_equal(out["r"], a % b)
    assert out["s"][0] == -128 and out["q"][4] == 0


def test_true_division_of_integers_is_float():
    out = run("""
input  a: dense<i64>[N]
input  b: dense<i64>[N]
output q: dense<f64>[N]
q[i] = a[i] / b[i]
""", a=np.array([7, 1]), b=np.array([2, 3]))["q"]
    np.testing.assert_allclose(out, [3.5, 1 / 3])


def test_casts():
    x = np.array([-1.7, 0.0, 2.5, 300.0])
    out = run("""
input  x: dense<f64>[N]
output a: dense<i32>[N]
output b: dense<bool>[N]
output c: dense<f32>[N]
output d: dense<f64>[N]
a[i] = i32(x[i])
b[i] = bool(x[i])
c[i] = f32(x[i]) * 0.5
d[i] = f64(i) + 0.25
""", x=x)
    np.testing.assert_array_equal(out["a"], x.astype(np.int32))
    np.testing.assert_array_equal(out["b"], x != 0)
    np.testing.assert_array_equal(out["c"], x.astype(np.float32) * np.float32(0.5))
    np.testing.assert_array_equal(out["d"], np.arange(4) + 0.25)


def test_bf16_rounds_after_every_operation():
    import torch  # the oracle for bfloat16 arithmetic (a test dependency; slow to import, so imported here)

    rng = np.random.default_rng(71)
    a = rng.standard_normal(64).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    out = run("""
input  a: dense<bf16>[N]
input  b: dense<bf16>[N]
output c: dense<bf16>[N]
c[i] = a[i] * b[i] + a[i]
""", a=torch.from_numpy(a).to(torch.bfloat16), b=torch.from_numpy(b).to(torch.bfloat16))["c"]
    ta = torch.from_numpy(a).to(torch.bfloat16)
    tb = torch.from_numpy(b).to(torch.bfloat16)
    want = (ta * tb + ta).float().numpy()
    np.testing.assert_array_equal(out.float().numpy(), want)


def test_elementwise_functions_match_numpy_and_scipy():
    x = np.linspace(-4, 4, 17)
    out = run("""
input  x: dense<f64>[N]
output g: dense<f64>[N]
output s: dense<f64>[N]
output r: dense<f64>[N]
output q: dense<f64>[N]
output t: dense<f64>[N]
g[i] = gelu(x[i])
s[i] = silu(x[i])
r[i] = relu(x[i]) + sign(x[i])
q[i] = rsqrt(abs(x[i]) + 1.0)
t[i] = sigmoid(x[i] * 200.0)
""", x=x)
    np.testing.assert_allclose(out["g"], 0.5 * x * (1 + special.erf(x / np.sqrt(2))), rtol=1e-14)
    np.testing.assert_allclose(out["s"], x * special.expit(x), rtol=1e-14)
    np.testing.assert_array_equal(out["r"], np.maximum(x, 0) + np.sign(x))
    np.testing.assert_allclose(out["q"], 1 / np.sqrt(np.abs(x) + 1), rtol=1e-15)
    np.testing.assert_allclose(out["t"], special.expit(x * 200), rtol=1e-14)


# ---------------------------------------------------------------- storing (spec § 5 rule 10, § 6)

def test_dense_output_fill_and_accumulation():
    A = sp.csr_array(np.array([[1.0, 0, 0], [0, 0, 2.0]]))
    B = sp.csr_array(np.array([[4.0, 5.0, 0], [0, 0, 1.0]]))
    out = run_presence("""
input  A: csr<f64>[M, N]
input  B: csr<f64>[M, N]
output D: dense<f64>[M, N] fill inf
output S: csr<f64>[M, N]
output H: csr<f64>[M, N]
output L: csr<f64>[M, N]
D[i, j] = A[i, j]
S[i, j] = A[i, j]
S[i, j] += B[i, j]
H[i, j] = A[i, j]
H[i, j] max= B[i, j]
L[i, j] = A[i, j]
L[i, j] min= B[i, j]
""", A=A, B=B)
    a, b, pa, pb = A.toarray(), B.toarray(), pattern(A), pattern(B)
    np.testing.assert_array_equal(out["D"][0], np.where(pa, a, np.inf))
    np.testing.assert_array_equal(out["S"][1], pa | pb)
    np.testing.assert_array_equal(out["S"][0], a + b)
    np.testing.assert_array_equal(out["H"][0], np.where(pa & pb, np.maximum(a, b), a + b))
    np.testing.assert_array_equal(out["L"][0], np.where(pa & pb, np.minimum(a, b), a + b))
    assert out["L"][0][1, 2] == 1.0


def test_empty_matrices_and_a_single_entry():
    for shape in [(0, 5), (5, 0), (0, 0)]:
        A = sp.csr_array(shape, dtype=np.float64)
        out = run(SPGEMM.format(t="f64"), A=A, B=sp.csr_array((shape[1], 3), dtype=np.float64))["C"]
        assert out.shape == (shape[0], 3) and out.nnz == 0
    A = sp.csr_array(([2.5], ([1], [2])), shape=(3, 4))
    B = sp.csr_array(([4.0], ([2], [0])), shape=(4, 2))
    C = run(SPGEMM.format(t="f64"), A=A, B=B)["C"]
    assert C.nnz == 1 and C[1, 0] == 10.0
    t = run("input A: csr<f64>[M, N]\noutput t: f64\nt = sum[i, j] A[i, j]\n", A=A)["t"]
    assert t == 2.5
