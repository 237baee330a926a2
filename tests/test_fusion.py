"""The fusion pass (sparsedsl/passes/fusion.py): which intermediates it computes inside their reader, the
``fuse`` directive, and that fused programs give the reference interpreter's answers (ref runs them
unfused) and numpy's."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd

ATTENTION = """
input  G: csr<bool>[N, N]
input  Q: dense<f32>[N, D]
input  K: dense<f32>[N, D]
input  V: dense<f32>[N, D]
input  scale: f32 = 0.125
output O: dense<f32>[N, D]
S[i, j] = scale * sum[d] Q[i, d] * K[j, d] where G[i, j]
P[i, j] = softmax[j] S[i, j]
O[i, d] = sum[j] P[i, j] * V[j, d]
"""


def _attention_numpy(G: sp.csr_array, Q, K, V, scale):
    n, dim = Q.shape
    out = np.zeros((n, dim))
    Q, K, V = (x.astype(np.float64) for x in (Q, K, V))
    for i in range(n):
        cols = G.indices[G.indptr[i]:G.indptr[i + 1]]
        if len(cols) == 0:
            continue
        s = scale * (K[cols] @ Q[i])
        w = np.exp(s - s.max())
        out[i] = (w / w.sum()) @ V[cols]
    return out


def _row(explained: str, name: str) -> str:
    """The explain line of a named value ('' if none)."""
    return next((line for line in explained.splitlines() if line.split()[:1] == [name]), "")


def _graph(n: int, density: float, seed: int, empty_rows=()) -> sp.csr_array:
    g = sp.random_array((n, n), density=density, format="csr", rng=np.random.default_rng(seed)).tolil()
    for r in empty_rows:
        g[r, :] = 0
    g = sp.csr_array(g)
    g.data[:] = 1
    return g.astype(bool)


@pytest.fixture(scope="module")
def attention():
    program = sd.loads(ATTENTION, name="fusion_attention")
    return program, program.compile(target="numba"), program.compile(target="ref")


def test_attention_scores_are_never_stored(attention):
    program, numba_kernel, _ = attention
    src = numba_kernel.executable.source
    # one kernel, no arrays for S or P, and the scores cached per row
    assert src.count("@numba.njit(parallel=_PRANGE_ONLY") == 1
    assert "val_S" not in src and "val_P" not in src and "w_row" in src
    explained = program.explain()
    assert "computed inside P, not stored" in _row(explained, "S")
    assert "computed inside O, not stored" in _row(explained, "P")
    assert "softmax of O: row cache" in explained


@pytest.mark.parametrize("n, density, seed, empty", [(1, 1.0, 0, ()), (7, 0.4, 1, (0, 3)), (60, 0.1, 2, (5,)),
                                                      (150, 0.05, 3, (0, 149))])
def test_attention_matches_numpy_and_ref(attention, n, density, seed, empty):
    _, numba_kernel, ref_kernel = attention
    rng = np.random.default_rng(seed)
    G = _graph(n, density, seed, empty)
    Q, K, V = (rng.standard_normal((n, 8)).astype(np.float32) for _ in range(3))
    got = numba_kernel(G=G, Q=Q, K=K, V=V)["O"]
    want = _attention_numpy(G, Q, K, V, 0.125)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, ref_kernel(G=G, Q=Q, K=K, V=V)["O"], rtol=1e-4, atol=1e-5)


def test_attention_on_a_real_graph(attention):
    from importlib import resources

    import scipy.io
    import gzip

    _, numba_kernel, _ = attention
    with gzip.open(resources.files("sparsedsl.data") / "ca-HepTh.mtx.gz") as f:
        A = sp.csr_array(scipy.io.mmread(f))
    G = (A + A.T).astype(bool)
    G.sum_duplicates()
    rng = np.random.default_rng(7)
    Q, K, V = (rng.standard_normal((G.shape[0], 16)).astype(np.float32) for _ in range(3))
    got = numba_kernel(G=G, Q=Q, K=K, V=V)["O"]
    np.testing.assert_allclose(got, _attention_numpy(G, Q, K, V, 0.125), rtol=1e-4, atol=1e-5)


def test_bound_variables_are_renamed_apart():
    # S reduces over d, and its reader uses d as a free index: the fused reduction must not capture it
    text = """
input  G: csr<bool>[N, N]
input  Q: dense<f64>[N, D]
input  K: dense<f64>[N, D]
input  V: dense<f64>[N, D]
output O: dense<f64>[N, D]
S[i, j] = sum[d] Q[i, d] * K[j, d] where G[i, j]
O[i, d] = sum[j] S[i, j] * V[j, d]
"""
    program = sd.loads(text, name="fusion_rename")
    assert "computed inside O" in _row(program.explain(), "S")
    rng = np.random.default_rng(3)
    n = 30
    G = _graph(n, 0.2, 4, (2,))
    Q, K, V = (rng.standard_normal((n, 5)) for _ in range(3))
    S = G.toarray() * (Q @ K.T)
    got = program.compile(target="numba")(G=G, Q=Q, K=K, V=V)["O"]
    np.testing.assert_allclose(got, S @ V, rtol=1e-12, atol=1e-12)


def test_elementwise_chain_fuses_and_keeps_presence():
    # exp of an absent entry is absent (not 1): the fused sum must see only A's entries
    text = """
input  A: csr<f64>[N, M]
output r: dense<f64>[N]
E[i, j] = exp(A[i, j])
r[i] = sum[j] E[i, j]
"""
    program = sd.loads(text, name="fusion_elementwise")
    assert "computed inside r, not stored" in _row(program.explain(), "E")
    A = sp.random_array((20, 15), density=0.2, format="csr", rng=np.random.default_rng(1))
    got = program.compile(target="numba")(A=A)["r"]
    want = np.array([np.exp(A.data[A.indptr[i]:A.indptr[i + 1]]).sum() for i in range(20)])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_not_fused_when_read_twice_or_not_profitable():
    text = """
input  A: csr<f64>[N, N]
output C: csr<f64>[N, N]
output d: dense<f64>[N]
T[i, j] = sum[k] A[i, k] * A[k, j]
C[i, j] = sum[k] T[i, k] * A[k, j]
d[i] = sum[j] A[i, j]
U[i, j] = sum[k] A[i, k] * A[k, j]
C2[i, j] = U[i, j] + U[j, i]
"""
    text = text.replace("output d: dense<f64>[N]\n", "output d: dense<f64>[N]\noutput C2: csr<f64>[N, N]\n")
    program = sd.loads(text, name="fusion_none")
    explained = program.explain()
    # a product (not sampled) read inside another product would be recomputed at every point: stored
    assert "stored as csr" in _row(explained, "T")
    # read twice: stored
    assert "stored as csr" in _row(explained, "U")


def test_fuse_directive_forces_a_legal_fusion():
    text = """
input  A: csr<f64>[N, N]
output y: dense<f64>[N]
T[i, j] = sum[k] A[i, k] * A[k, j]
y[i] = sum[j] T[i, j]
schedule y:
    fuse T, y
"""
    program = sd.loads(text, name="fusion_forced")
    row = _row(program.explain(), "T")
    assert "computed inside y, not stored" in row and "the schedule asks for it" in row
    A = sp.random_array((25, 25), density=0.15, format="csr", rng=np.random.default_rng(2))
    got = program.compile(target="numba")(A=A)["y"]
    np.testing.assert_allclose(got, (A @ A).toarray().sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(got, program.compile(target="ref")(A=A)["y"], rtol=1e-12)


@pytest.mark.parametrize("body, fragment", [
    ("T[i, j] = A[i, j] * 2.0\ny[i] = sum[j] (T[i, j] + T[j, i])\n", "reads it more than once"),
    ("T[i, j] = A[i, j] * 2.0\ny[i] = sum[j] A[i, j]\nz[i] = sum[j] T[i, j]\n", "its only reader is 'z'"),
])
def test_fuse_directive_refuses_an_illegal_fusion(body, fragment):
    text = ("input  A: csr<f64>[N, N]\noutput y: dense<f64>[N]\noutput z: dense<f64>[N]\n" + body
            + ("z[i] = sum[j] A[j, i]\n" if "z[i]" not in body else "")
            + "schedule y:\n    fuse T, y\n")
    program = sd.loads(text, name="fusion_illegal")
    with pytest.raises(sd.SdslError) as info:
        program.compile(target="numba")
    message = info.value.render()
    assert "cannot fuse 'T' into 'y'" in message and fragment in message
    assert "fusion_illegal:" in message.splitlines()[0] and "^" in message


def test_ref_runs_the_program_as_written(attention):
    # the oracle must not share the fused code path: its loop-free IR still has S and P
    program, _, ref_kernel = attention
    assert {"S", "P"} <= {d.name for d in ref_kernel.ir.decls}
    assert not {"S", "P"} & {d.name for d in program.compile(target="numba").ir.decls}


def test_elementwise_reader_runs_as_the_product_is_produced():
    # C = A @ B then D = relu(C) masked: one masked SpGEMM with the relu applied as entries are produced
    text = """
input  A: csr<f64>[N, N]
input  M: csr<bool>[N, N]
output D: csr<f64>[N, N]
C[i, j] = sum[k] A[i, k] * A[k, j]
D[i, j] = relu(C[i, j]) where M[i, j]
"""
    program = sd.loads(text, name="fusion_producer")
    assert "read element-wise by its only reader" in _row(program.explain(), "C")
    kernel = program.compile(target="numba")
    assert "val_C" not in kernel.executable.source
    rng = np.random.default_rng(8)
    A = sp.random_array((40, 40), density=0.1, format="csr", rng=rng)
    A.data = rng.standard_normal(A.nnz)
    M = sp.random_array((40, 40), density=0.3, format="csr", rng=rng).astype(bool)
    C = (A @ A).toarray()
    got = sp.csr_array(kernel(A=A, M=M)["D"])
    ref = sp.csr_array(program.compile(target="ref")(A=A, M=M)["D"])
    # present exactly where M and the product both are (an entry of C with terms that cancel is still present)
    terms = ((A != 0).astype(int) @ (A != 0).astype(int)).toarray() > 0
    want_pattern = terms & M.toarray()
    assert (got.toarray() != 0).sum() <= want_pattern.sum()
    np.testing.assert_array_equal(_pattern(got), want_pattern)
    np.testing.assert_array_equal(_pattern(ref), want_pattern)
    np.testing.assert_allclose(got.toarray(), np.where(want_pattern, np.maximum(C, 0), 0), rtol=1e-12, atol=1e-12)


def _pattern(a: sp.csr_array) -> np.ndarray:
    out = np.zeros(a.shape, dtype=bool)
    rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    out[rows, a.indices] = True
    return out


FUSED_PRODUCTS = {
    # T (a row-wise product, computed in a workspace keyed by j) fused into a reader that contracts j against
    # another free index f: the loop over f used to be driven by T's row keys (wrong values; writes past the
    # f-sized workspace when F < N, a segfault)
    "spgemm-spmm": ("T[i, j] = sum[k] A[i, k] * B[k, j]", "dense<f64>[N, F]", "Y[i, f] = sum[j] T[i, j] * X[j, f]"),
    "tropical-spmm": ("T[i, j] = min[k] (A[i, k] + B[k, j])", "dense<f64>[N, F]",
                      "Y[i, f] = sum[j] T[i, j] * X[j, f]"),
    "dense-product-spmm": ("T[i, j] = sum[k] A[i, k] * W[k, j]", "dense<f64>[N, F]",
                           "Y[i, f] = sum[j] T[i, j] * X[j, f]"),
    "spgemm-spgemm": ("T[i, j] = sum[k] A[i, k] * B[k, j]", "csr<f64>[N, N]", "Y[i, f] = sum[j] T[i, j] * B[j, f]"),
    "spgemm-spgemm-dense": ("T[i, j] = sum[k] A[i, k] * B[k, j]", "dense<f64>[N, N]",
                            "Y[i, f] = sum[j] T[i, j] * B[j, f]"),
}


@pytest.mark.parametrize("case", FUSED_PRODUCTS)
def test_fused_product_read_against_another_index(case):
    producer, out_type, reader = FUSED_PRODUCTS[case]
    text = ("input A: csr<f64>[N, N]\ninput B: csr<f64>[N, N]\ninput W: dense<f64>[N, N]\n"
            f"input X: dense<f64>[N, F]\noutput Y: {out_type}\n{producer}\n{reader}\nschedule Y:\n    fuse T, Y\n")
    program = sd.loads(text, name=f"fused_{case.replace('-', '_')}")
    assert "computed inside Y, not stored" in _row(program.explain(), "T")
    fused, ref = program.compile(target="numba"), program.compile(target="ref")
    for f in (3, 19):  # F below and above N (12): one compilation serves both, sizes being symbolic
        rng = np.random.default_rng(len(case) + f)
        A, B = (_graph(12, 0.3, seed, empty_rows=(0, 7)) for seed in (3, 4))
        A.data, B.data = rng.integers(-3, 4, A.nnz).astype(float), rng.integers(-3, 4, B.nnz).astype(float)
        inputs = dict(A=A, B=B, W=rng.standard_normal((12, 12)), X=rng.standard_normal((12, f)))
        got, want = fused(**inputs)["Y"], ref(**inputs)["Y"]
        if sp.issparse(want):
            np.testing.assert_array_equal(_pattern(sp.csr_array(got)), _pattern(sp.csr_array(want)))
            got, want = got.toarray(), want.toarray()
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f"F = {f}")
        if case == "spgemm-spmm":
            np.testing.assert_allclose(got, (A @ B) @ inputs["X"], rtol=1e-12, atol=1e-12)
