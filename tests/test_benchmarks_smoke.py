"""The CPU benchmark harness runs end to end on a tiny matrix, and its correctness checks hold; the attention
floor's loop reads exactly what it claims to (benchmarks/attention_floor.py: for every stored (i, j),
K[j] + V[j] once; a floor that skipped a row or read one twice would bound nothing).

Timings are not asserted (one repeat on a tiny matrix measures nothing); what is asserted is that every
library produced a checked result — the harness compares each one with a scipy float64 reference and
reports WRONG or failed otherwise — and that the generators and the checks themselves are right.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import benchmark_module

pytest.importorskip("graphblas")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("cpu.py") as module:
        yield module


@pytest.fixture(scope="module")
def report(bench):
    return bench.run(["--er", "120", "--matrix", "er-120", "--repeats", "1", "--warmup", "1", "--min-seconds", "0",
                      "--no-isolate"],
                     progress=None)


def test_every_library_result_is_checked_and_correct(bench, report):
    assert [r.kernel for r in report.rows] == list(bench.KERNELS)
    assert report.failures == []
    for row in report.rows:
        assert row.timings["sparsedsl"].status in ("ok", "n/a"), row.timings["sparsedsl"]
        for peer in ("scipy", "graphblas"):
            assert row.timings[peer].status == "ok", (row.kernel, row.timings[peer])
        if row.kernel != "triangles":
            assert row.timings["torch"].status == "ok", (row.kernel, row.timings["torch"])
    text = bench.format_report(report)
    assert "spgemm" in text and "Geometric mean" in text


def test_attention_target_row_takes_the_gather_scatter_composition(bench, report):
    """The attention figure's row is the gather/scatter composition's time over sparsedsl's, not the fastest
    torch composition's (the "torch" row, without a target)."""
    row = next(r for r in report.rows if r.kernel == "attention")
    torch_timing = row.timings["torch"]
    assert set(torch_timing.variants) == {"sampled_addmm→scatter softmax→sparse.mm",
                                          "gather→scatter softmax→index_add",
                                          "gather→segment softmax→segment_reduce",
                                          "sampled_addmm→COO sparse.softmax→sparse.mm"}
    assert torch_timing.seconds == min(torch_timing.variants.values())
    rows = {(k, p): (gm, n, t) for k, p, gm, n, t in bench.geometric_means(report)}
    gm, count, target = rows[("attention", "torch scatter/gather")]
    assert count == 1 and target == 3.0
    expected = min(torch_timing.variants["gather→scatter softmax→index_add"],
                   torch_timing.variants["gather→segment softmax→segment_reduce"]) / row.timings["sparsedsl"].seconds
    assert gm == pytest.approx(expected)
    assert rows[("attention", "torch")][2] is None
    assert "torch scatter/gather" in bench.format_summary(report)


def test_short_calls_are_timed_more_often(bench):
    protocol = bench.Protocol(warmup=1, repeats=5, max_call_seconds=30.0, min_seconds=0.1)
    assert protocol.repeats_for(0.5) == 5            # a long call: --repeats
    assert protocol.repeats_for(0.01) == 10          # as many as take 0.1 s
    assert protocol.repeats_for(1e-6) == bench.MAX_REPEATS
    assert protocol.repeats_for(None) == 5           # no warm-up call to go by
    assert bench.Protocol(1, 5, 30.0).repeats_for(1e-6) == 5   # min_seconds 0: --repeats
    calls = []
    timing = bench.measure("x", lambda: calls.append(1), lambda out: None, protocol)
    assert timing.status == "ok" and len(timing.times) == bench.MAX_REPEATS == len(calls) - 1


def test_flop_counts_match_their_definitions(bench, report):
    A = bench.rmat.erdos_renyi(120, 8, bench.SEEDS["er"])
    dense = (A.toarray() != 0).astype(np.int64)
    flops = {r.kernel: r.flops for r in report.rows}
    # SpGEMM: one multiply-add per pair (i,k),(k,j) of stored entries
    assert flops["spgemm"] == 2 * int((dense @ dense).sum())
    assert flops["spmm"] == flops["sddmm"] == 2 * A.nnz * 64
    assert flops["attention"] == 4 * A.nnz * 64
    graph = nx.from_scipy_sparse_array(bench.rmat.symmetric_pattern(A))
    assert flops["triangles"] == 2 * sum(nx.triangles(graph).values()) // 3


def test_checks_reject_wrong_results(bench):
    ref = sp.csr_array(np.array([[1.0, 0.0], [2.0, 3.0]]))
    bench.check_sparse(ref.copy(), ref, 1e-10)
    # a computed zero that scipy does not store is allowed; a value off by 1e-3 is not
    bench.check_sparse(sp.csr_array((np.array([1.0, 0.0, 2.0, 3.0]), np.array([0, 1, 0, 1]),
                                     np.array([0, 2, 4])), shape=(2, 2)), ref, 1e-10)
    wrong_value = ref.copy()
    wrong_value.data[1] += 1e-3
    with pytest.raises(bench.ResultMismatch):
        bench.check_sparse(wrong_value, ref, 1e-4)
    missing = sp.csr_array(np.array([[1.0, 0.0], [0.0, 3.0]]))
    with pytest.raises(bench.ResultMismatch):
        bench.check_sparse(missing, ref, 1e-4)
    bench.check_dense(np.array([1.0, 2.0 + 1e-5], dtype=np.float32), np.array([1.0, 2.0]), 1e-4)
    with pytest.raises(bench.ResultMismatch):
        bench.check_dense(np.array([1.0, np.nan]), np.array([1.0, 2.0]), 1e-4)
    with pytest.raises(bench.ResultMismatch):
        bench.check_count(np.int64(44), 45)


def test_generators_are_deterministic_and_canonical(bench):
    rmat, erdos_renyi, symmetric_pattern = bench.rmat.rmat, bench.rmat.erdos_renyi, bench.rmat.symmetric_pattern
    a, b = rmat(8, 16, seed=3), rmat(8, 16, seed=3)
    assert a.shape == (256, 256) and a.nnz == 256 * 16
    assert a.has_canonical_format
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data, b.data)
    assert not np.array_equal(rmat(8, 16, seed=4).indices, a.indices)
    assert (a.data >= 0.5).all() and (a.data < 1.5).all()
    # the R-MAT skew: the heaviest row is far above the mean, unlike a uniform graph's
    assert np.diff(a.indptr).max() > 3 * np.diff(erdos_renyi(256, 16, seed=3).indptr).max() / 2
    e = erdos_renyi(500, 4, seed=1)
    assert e.nnz == 2000 and e.has_canonical_format
    s = symmetric_pattern(e)
    dense = s.toarray()
    assert s.dtype == bool and (dense == dense.T).all() and not dense.diagonal().any()
    expected = (e.toarray() != 0) | (e.toarray() != 0).T
    np.fill_diagonal(expected, False)
    assert (dense == expected).all()


@pytest.fixture(scope="module")
def floor_module():
    with benchmark_module("attention_floor.py") as module:
        yield module


def test_floor_reads_each_k_and_v_row_once_per_entry(floor_module, tmp_path):
    import sparsedsl as sd

    cpu = floor_module.cpu
    compiled = sd.loads(cpu.PROGRAMS["attention"], name="floor_test").compile(target="numba",
                                                                              cache_dir=str(tmp_path))
    floor = floor_module.floor_for(compiled)
    rng = np.random.default_rng(5)
    n = 40
    lengths = [0, 1, 3, 4, 5, 8, 9, 0, 13, 2] * 4
    rows = [np.sort(rng.choice(n, size=k, replace=False)) for k in lengths]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    indices = np.concatenate(rows).astype(np.int32)
    G = sp.csr_array((np.ones(indices.size, dtype=bool), indices, indptr), shape=(n, n))
    K = rng.standard_normal((n, cpu.FEATURES)).astype(np.float32)
    V = rng.standard_normal((n, cpu.FEATURES)).astype(np.float32)
    out = np.full((n, cpu.FEATURES), np.nan, dtype=np.float32)
    floor(G.indptr, G.indices, K, V, out)
    want = G.astype(np.float64) @ (K.astype(np.float64) + V.astype(np.float64))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)
    assert not out[np.array(lengths) == 0].any()
