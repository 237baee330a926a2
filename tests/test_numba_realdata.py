"""The numba target on the four shipped real matrices, against independent libraries and known answers.

SpGEMM against scipy and python-graphblas; triangle counting (L·Lᵀ under L) against the counts in
sparsedsl/data/README.md and against python-graphblas; PageRank (examples/pagerank.sdsl) on wiki-Vote against
networkx; BFS levels (examples/bfs.sdsl) against networkx shortest-path lengths. Every matrix is read once per
module, every program compiled once (serial kernels, one cache folder for the module).
"""
from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import sparsedsl as sd

gb = pytest.importorskip("graphblas")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "sparsedsl" / "data"
EXAMPLES = ROOT / "examples"
MATRICES = ("ego-Facebook", "ca-HepTh", "wiki-Vote", "bcsstk13")
UNDIRECTED = ("ego-Facebook", "ca-HepTh", "bcsstk13")
# sparsedsl/data/README.md: each triangle once, self-loops / the diagonal removed
TRIANGLES = {"ego-Facebook": 1_612_010, "ca-HepTh": 28_339, "bcsstk13": 342_300}

SPGEMM = """\
input  A: csr<f64>[M, K]
input  B: csr<f64>[K, N]
output C: csr<f64>[M, N]
C[i, j] = sum[k] A[i, k] * B[k, j]
"""


@pytest.fixture(scope="module")
def matrices() -> dict[str, sp.csr_array]:
    out = {}
    for name in MATRICES:
        a = sp.csr_array(scipy.io.mmread(DATA / f"{name}.mtx.gz"))
        a.sum_duplicates()
        a.sort_indices()
        out[name] = a
    return out


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """``compiled(text_or_path)`` → the numba kernel, compiled once for the module with serial kernels."""
    cache_dir = str(tmp_path_factory.mktemp("numba-realdata-cache"))
    memo: dict = {}

    def get(source):
        if source not in memo:
            program = sd.load(str(source)) if isinstance(source, Path) else sd.loads(source, name="realdata")
            memo[source] = program.compile(target="numba", parallel=False, cache_dir=cache_dir)
        return memo[source]

    return get


def pattern(a: sp.csr_array) -> sp.csr_array:
    """The stored coordinates of ``a`` as a bool CSR (stored zeros included)."""
    return sp.csr_array((np.ones(a.nnz, bool), a.indices.copy(), a.indptr.copy()), shape=a.shape)


def ones(a: sp.csr_array) -> sp.csr_array:
    return sp.csr_array((np.ones(a.nnz), a.indices.copy(), a.indptr.copy()), shape=a.shape)


def canonical(a) -> sp.csr_array:
    a = sp.csr_array(a)
    a.sort_indices()
    return a


@pytest.mark.parametrize("name", MATRICES)
def test_spgemm_matches_scipy_and_graphblas(name, matrices, compiled):
    A = matrices[name]
    C = canonical(compiled(SPGEMM)(A=A, B=A)["C"])
    assert C.shape == A.shape
    # Pattern: the symbolic product (all-ones operands cannot cancel), which keeps computed zeros as
    # sparsedsl does; scipy's numeric product drops them, so it is compared by values only.
    symbolic = canonical(ones(A) @ ones(A))
    np.testing.assert_array_equal(C.indptr, symbolic.indptr)
    np.testing.assert_array_equal(C.indices, symbolic.indices)
    want = A @ A
    scale = float(np.abs(want.data).max(initial=1.0))
    assert float(np.abs((C - want).data).max(initial=0.0)) <= 1e-12 * scale
    # GraphBLAS keeps the symbolic pattern too: coordinates equal, values equal within reassociation
    G = gb.io.from_scipy_sparse(A)
    theirs = canonical(gb.io.to_scipy_sparse(G.mxm(G, gb.semiring.plus_times).new(), format="csr"))
    np.testing.assert_array_equal(C.indptr, theirs.indptr)
    np.testing.assert_array_equal(C.indices, theirs.indices)
    np.testing.assert_allclose(C.data, theirs.data, rtol=1e-12, atol=1e-12 * scale)


def graphblas_triangles(A: sp.csr_array) -> int:
    L = gb.io.from_scipy_sparse(sp.csr_array(sp.tril(ones(A), k=-1)))
    C = L.mxm(L.T, gb.semiring.plus_pair).new(mask=L.S)
    return int(C.reduce_scalar(gb.monoid.plus).new().value)


@pytest.mark.parametrize("name", UNDIRECTED)
def test_triangle_count_matches_known_answer_and_graphblas(name, matrices, compiled):
    A = matrices[name]
    got = compiled(EXAMPLES / "triangles.sdsl")(A=pattern(A))["triangles"]
    assert int(got) == TRIANGLES[name]
    assert int(got) == graphblas_triangles(A)


def test_pagerank_matches_networkx_on_wiki_vote(matrices, compiled):
    A = matrices["wiki-Vote"]
    r = compiled(EXAMPLES / "pagerank.sdsl")(A=A)["r"]
    G = nx.from_scipy_sparse_array(A, create_using=nx.DiGraph)
    want = nx.pagerank(G, alpha=0.85, tol=1e-15, max_iter=1000)
    want = np.array([want[v] for v in range(A.shape[0])])
    assert float(r.sum()) == pytest.approx(1.0, rel=1e-10)
    np.testing.assert_allclose(r, want, rtol=1e-8, atol=0)


@pytest.mark.parametrize("name", ["wiki-Vote", "ego-Facebook"])
def test_bfs_levels_match_networkx(name, matrices, compiled):
    A = matrices[name]
    source = int(np.argmax(np.diff(A.indptr)))  # a vertex with out-edges, so the search goes somewhere
    level = compiled(EXAMPLES / "bfs.sdsl")(A=pattern(A), source=source)["level"]
    G = nx.from_scipy_sparse_array(A, create_using=nx.DiGraph)
    want = np.full(A.shape[0], -1, np.int64)
    for v, d in nx.single_source_shortest_path_length(G, source).items():
        want[v] = d
    np.testing.assert_array_equal(level, want)
    assert (want == -1).any() == (name == "wiki-Vote")  # the directed graph leaves some vertices unreached
