"""Every example of the language spec parses, checks and gives the right answer on the reference target.

Oracles are computed independently with numpy, scipy and networkx.
"""
import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd

rng = np.random.default_rng(7)


def rand_csr(m, n, density, dtype=np.float64, seed=0):
    return sp.random(m, n, density=density, format="csr", dtype=dtype, random_state=seed)


def pattern(a):
    a = sp.csr_array(a)
    a.sort_indices()
    return set(zip(*a.nonzero())) if a.nnz else set()


def stored(a):
    """Stored coordinates of a scipy sparse result (explicit zeros included)."""
    c = sp.coo_array(a)
    return set(zip(c.row.tolist(), c.col.tolist()))


SPGEMM = """
# C = A·B, row-wise (Gustavson) with a hash accumulator, as in SMASH
input  A: csr<f32>[M, K]
input  B: csr<f32>[K, N]
output C: csr<f32>[M, N]

C[i, j] = sum[k] A[i, k] * B[k, j]

schedule C:
    accumulator hash
"""


def test_spgemm_example():
    A = rand_csr(60, 50, 0.08, np.float32, 1)
    B = rand_csr(50, 40, 0.08, np.float32, 2)
    out = sd.loads(SPGEMM).compile(target="ref")(A=A, B=B)
    C = out["C"]
    assert isinstance(C, sp.csr_array)
    expected = (sp.csr_array(A) @ sp.csr_array(B))
    # C's pattern is the symbolic product: every (i, j) with some k where both are stored
    sym = (sp.csr_array(A != 0).astype(np.int64) @ sp.csr_array(B != 0).astype(np.int64))
    assert stored(C) == stored(sym)
    np.testing.assert_allclose(C.toarray(), expected.toarray(), rtol=1e-5, atol=1e-6)
    assert C.dtype == np.float32


ATTENTION = """
# Graph attention: scores only on the graph's edges, softmax per row, aggregate
input  G: csr<bool>[N, N]
input  Q: dense<f32>[N, D]
input  K: dense<f32>[N, D]
input  V: dense<f32>[N, D]
input  scale: f32 = 0.125
output O: dense<f32>[N, D]

S[i, j] = scale * sum[d] Q[i, d] * K[j, d] where G[i, j]     # SDDMM
P[i, j] = softmax[j] S[i, j]                                  # over stored entries only
O[i, d] = sum[j] P[i, j] * V[j, d]                            # SpMM
"""


def attention_oracle(G, Q, K, V, scale):
    G = sp.csr_array(G)
    n = G.shape[0]
    O = np.zeros_like(V, dtype=np.float64)
    for i in range(n):
        cols = G.indices[G.indptr[i]:G.indptr[i + 1]]
        if len(cols) == 0:
            continue  # no neighbours: O's row is absent, stored as 0
        s = scale * (Q[i].astype(np.float64) @ K[cols].T.astype(np.float64))
        p = np.exp(s - s.max())
        p /= p.sum()
        O[i] = p @ V[cols]
    return O


def test_graph_attention_example():
    n, d = 40, 8
    G = rand_csr(n, n, 0.1, seed=3).astype(bool)
    G = sp.csr_array(G)
    G[5, :] = False  # an empty row
    G.eliminate_zeros()
    Q, K, V = (rng.standard_normal((n, d)).astype(np.float32) for _ in range(3))
    f = sd.loads(ATTENTION).compile(target="ref")
    O = f(G=G, Q=Q, K=K, V=V)["O"]
    np.testing.assert_allclose(O, attention_oracle(G, Q, K, V, 0.125), rtol=1e-5, atol=1e-6)
    O2 = f(G=G, Q=Q, K=K, V=V, scale=1.0)["O"]
    np.testing.assert_allclose(O2, attention_oracle(G, Q, K, V, 1.0), rtol=1e-5, atol=1e-6)
    assert np.all(O[5] == 0)


PAGERANK = """
# PageRank with dangling nodes
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


def test_pagerank_example_matches_networkx():
    g = nx.gnp_random_graph(60, 0.05, seed=4, directed=True)
    g.add_node(60)  # a dangling node with no edges at all
    A = nx.to_scipy_sparse_array(g, nodelist=range(61), format="csr", dtype=np.float64)
    r = sd.loads(PAGERANK).compile(target="ref")(A=A)["r"]
    expected = nx.pagerank(g, alpha=0.85, tol=1e-14, max_iter=500)
    np.testing.assert_allclose(r, [expected[i] for i in range(61)], rtol=1e-8, atol=1e-10)
    assert abs(r.sum() - 1.0) < 1e-9


GIN_MODULE = """
def gin(G: csr<bool>[N, N], H: dense<f32>[N, F], eps: f32) -> dense<f32>[N, F]:
    agg[i, f] = sum[j] G[i, j] * H[j, f]
    out[i, f] = (1 + eps) * H[i, f] + agg[i, f]
    return out
"""


def test_gin_def_import_and_function(tmp_path):
    (tmp_path / "gnn.sdsl").write_text(GIN_MODULE)
    main = tmp_path / "main.sdsl"
    main.write_text("import gnn\ninput G: csr<bool>[N, N]\ninput H: dense<f32>[N, F]\noutput Y\n"
                    "Y = gnn.gin(G, H, 0.25)\n")
    G = sp.csr_array(rand_csr(30, 30, 0.1, seed=5).astype(bool))
    H = rng.standard_normal((30, 6)).astype(np.float32)
    expected = 1.25 * H + G.astype(np.float32) @ H
    Y = sd.load(str(main)).compile(target="ref")(G=G, H=H)["Y"]
    np.testing.assert_allclose(Y, expected, rtol=1e-5, atol=1e-6)
    f = sd.load(str(tmp_path / "gnn.sdsl")).function("gin").compile(target="ref")
    out = f(G=G, H=H, eps=np.float32(0.25))
    value = out["out"] if isinstance(out, dict) else out
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def run(src, **inputs):
    return sd.loads(src).compile(target="ref")(**inputs)


def test_broadcast_operand_does_not_widen_presence():
    S = rand_csr(20, 15, 0.2, seed=6)
    m = rng.standard_normal(20)
    out = run("input S: csr<f64>[N, M]\ninput m: dense<f64>[N]\noutput X: csr<f64>[N, M]\n"
              "X[i, j] = S[i, j] - m[i]\n", S=S, m=m)["X"]
    assert stored(out) == stored(S)
    Sd = sp.csr_array(S)
    r, c = Sd.nonzero()
    np.testing.assert_allclose(out.toarray()[r, c], Sd.toarray()[r, c] - m[r])


def test_add_scalar_keeps_pattern_and_exp_keeps_absence():
    A = rand_csr(20, 20, 0.15, seed=8)
    out = run("input A: csr<f64>[N, N]\noutput X: csr<f64>[N, N]\noutput E: csr<f64>[N, N]\n"
              "X[i, j] = A[i, j] + 1\nE[i, j] = exp(A[i, j])\n", A=A)
    assert stored(out["X"]) == stored(A) == stored(out["E"])
    Ad = sp.csr_array(A)
    r, c = Ad.nonzero()
    np.testing.assert_allclose(out["E"].toarray()[r, c], np.exp(Ad.toarray()[r, c]))


def test_union_of_sparse_operands_takes_identity():
    A = rand_csr(15, 15, 0.2, seed=9)
    B = rand_csr(15, 15, 0.2, seed=10)
    out = run("input A: csr<f64>[N, N]\ninput B: csr<f64>[N, N]\noutput X: csr<f64>[N, N]\n"
              "output Y: csr<f64>[N, N]\nX = A - B\nY[i, j] = max(A[i, j], B[i, j])\n", A=A, B=B)
    assert stored(out["X"]) == stored(A) | stored(B)
    np.testing.assert_allclose(out["X"].toarray(), (A - B).toarray())
    Ad, Bd = A.toarray(), B.toarray()
    pa, pb = Ad != 0, Bd != 0
    ymax = np.where(pa & pb, np.maximum(Ad, Bd), np.where(pa, Ad, Bd))
    np.testing.assert_allclose(out["Y"].toarray(), ymax)


def test_prefix_precedence_examples():
    A = rand_csr(10, 8, 0.3, seed=11)
    B = rand_csr(8, 9, 0.3, seed=12)
    C = rng.standard_normal((10, 9))
    out = run("input A: csr<f64>[M, K]\ninput B: csr<f64>[K, N]\ninput C: dense<f64>[M, N]\n"
              "output X: dense<f64>[M, N]\nX[i, j] = sum[k] A[i, k] * B[k, j] + C[i, j]\n", A=A, B=B, C=C)
    np.testing.assert_allclose(out["X"], (A @ B).toarray() + C)
    f = np.array([0.0, 1.0, 0.0])
    out = run("input f: csr<f64>[N]\noutput z: bool\nz = count[i] f[i] == 0\n", f=sp.coo_array(f))
    assert bool(out["z"]) is False  # one stored entry: the count is 1


def test_tropical_min_plus_needs_parentheses():
    W = sp.csr_array(np.array([[0, 1, 5], [0, 0, 2], [1, 0, 0]], dtype=np.float64))
    out = run("input A: csr<f64>[N, N]\noutput D: dense<f64>[N, N] fill inf\n"
              "D[i, j] = min[k] (A[i, k] + A[k, j])\n", A=W)
    Wd = np.where(W.toarray() != 0, W.toarray(), np.inf)
    expected = np.min(Wd[:, :, None] + Wd[None, :, :], axis=1)
    np.testing.assert_array_equal(out["D"], expected)


def test_two_four_pruning_with_group_topk():
    W = rng.standard_normal((6, 16))
    out = run("input W: dense<f64>[M, K]\noutput P: csr<f64>[M, K]\n"
              "P[i, j] = W[i, j] where topk[j](2, group=4) abs(W[i, j])\n", W=W)
    P = out["P"].toarray()
    expected = np.zeros_like(W)
    for i in range(6):
        for g in range(4):
            blk = np.abs(W[i, 4 * g:4 * g + 4])
            keep = np.argsort(-blk, kind="stable")[:2]
            expected[i, 4 * g + keep] = W[i, 4 * g + keep]
    np.testing.assert_array_equal(P, expected)
    assert all(len(stored(out["P"]) & {(i, j) for j in range(4 * g, 4 * g + 4)}) == 2
               for i in range(6) for g in range(4))


def test_parenthesized_where_and_index_predicates():
    A = rng.standard_normal((8, 8))
    out = run("input A: dense<f64>[N, N]\noutput s: f64\noutput L: csr<f64>[N, N]\n"
              "s = sum[i, j] (A[i, j] where j <= i)\nL[i, j] = A[i, j] where i - j < 2 and j % 2 == 0\n", A=A)
    np.testing.assert_allclose(out["s"], np.tril(A).sum())
    ii, jj = np.indices((8, 8))
    keep = ((ii - jj) < 2) & (jj % 2 == 0)
    assert stored(out["L"]) == set(zip(*np.nonzero(keep)))


def test_schedule_does_not_change_the_result():
    A = rand_csr(30, 30, 0.1, np.float32, 13)
    plain = run(SPGEMM.replace("schedule C:\n    accumulator hash\n", ""), A=A, B=A)["C"]
    for directive in ("accumulator dense", "accumulator sort", "parallel i", "block i 8", "order i, k, j"):
        src = SPGEMM.replace("accumulator hash", directive)
        C = run(src, A=A, B=A)["C"]
        assert stored(C) == stored(plain)
        np.testing.assert_allclose(C.toarray(), plain.toarray(), rtol=1e-6)


def test_dense_output_fill_value():
    A = sp.csr_array(np.array([[0, 2.0], [0, 0]]))
    D = run("input A: csr<f64>[N, N]\noutput D: dense<f64>[N, N] fill inf\nD[i, j] = A[i, j]\n", A=A)["D"]
    np.testing.assert_array_equal(D, [[np.inf, 2.0], [np.inf, np.inf]])
