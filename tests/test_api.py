"""The Python API (interface.md § Python) and the bundled examples, against independent oracles."""
from __future__ import annotations

import importlib.util
import multiprocessing
import os
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sparsedsl as sd
from sparsedsl import api
from sparsedsl.runtime.cache import DiskCache, cache_key, default_cache_dir
from conftest import EXAMPLES, random_graph

SPGEMM = EXAMPLES / "spgemm.sdsl"


def assert_same_sparse(got, want, rtol=1e-5):
    """Same pattern (stored coordinates) and values within rtol."""
    got = sp.csr_array(got)
    want = sp.csr_array(want)
    got.sort_indices()
    want.sort_indices()
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=rtol)


def random_csr(m, n, density, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    out = sp.random_array((m, n), density=density, format="csr", rng=rng, dtype=dtype,
                          data_sampler=lambda size: rng.uniform(-2, 2, size))
    out.sort_indices()
    return out


# ---------------------------------------------------------------- load / loads / compile / call

def test_load_compile_call_spgemm():
    prog = sd.load(SPGEMM)
    assert isinstance(prog, sd.Program)
    assert [d.name for d in prog.inputs] == ["A", "B"]
    assert [d.name for d in prog.outputs] == ["C"]
    A = random_csr(30, 20, 0.1, 1)
    B = random_csr(20, 25, 0.1, 2)
    f = prog.compile(target="ref")
    out = f(A=A, B=B)
    assert isinstance(out, dict) and list(out) == ["C"]
    assert out.C is out["C"]
    assert sp.issparse(out.C)
    assert_same_sparse(out.C, (A @ B))


def test_loads_inline_and_positional_call():
    prog = sd.loads("input x: dense<f64>[N]\ninput y: dense<f64>[N]\noutput z: dense<f64>[N]\n"
                    "z[i] = 2.0 * x[i] + y[i]\n", name="axpy")
    f = prog.compile("ref")
    x = np.arange(5.0)
    y = np.full(5, 0.5)
    np.testing.assert_allclose(f(x, y).z, 2 * x + y)
    np.testing.assert_allclose(f(x, y=y)["z"], 2 * x + y)
    with pytest.raises(sd.SdslInputError):
        f(x, x=y)
    with pytest.raises(sd.SdslInputError):
        f(x, y, y)


def test_compile_is_cached_per_program_and_options():
    prog = sd.load(SPGEMM)
    assert prog.compile("ref") is prog.compile("ref")
    assert prog.compile("ref").program is prog


def test_inputs_are_not_modified():
    A = random_csr(12, 12, 0.3, 3)
    before = (A.data.copy(), A.indices.copy(), A.indptr.copy())
    sd.load(SPGEMM).compile("ref")(A=A, B=A)
    for a, b in zip(before, (A.data, A.indices, A.indptr)):
        np.testing.assert_array_equal(a, b)


def test_torch_in_torch_out():
    prog = sd.loads("input A: csr<f32>[N, N]\ninput X: dense<f32>[N, F]\noutput Y: dense<f32>[N, F]\n"
                    "Y[i, f] = sum[j] A[i, j] * X[j, f]\n")
    A = random_csr(16, 16, 0.2, 4)
    X = np.random.default_rng(5).standard_normal((16, 3)).astype(np.float32)
    At = torch.sparse_csr_tensor(torch.from_numpy(A.indptr.astype(np.int64)),
                                 torch.from_numpy(A.indices.astype(np.int64)), torch.from_numpy(A.data),
                                 size=A.shape)
    out = prog.compile("ref")(A=At, X=torch.from_numpy(X))
    assert isinstance(out.Y, torch.Tensor)
    np.testing.assert_allclose(out.Y.numpy(), A.toarray() @ X, rtol=1e-5, atol=1e-6)
    # the same program with numpy inputs answers in numpy
    out_np = prog.compile("ref")(A=A, X=X)
    assert isinstance(out_np.Y, np.ndarray)


def test_ir_prints_the_textual_ir():
    from sparsedsl.tensor_ir import nodes
    from sparsedsl.tensor_ir.printer import format_program

    ir = sd.load(SPGEMM).ir()
    assert isinstance(ir.program, nodes.Program)
    text = str(ir)
    for name in ("A", "B", "C"):
        assert name in text
    assert "csr" in text and "sum" in text
    assert text == format_program(ir.program)


def test_optimized_ir_has_chosen_formats():
    prog = sd.loads("input A: csr<f64>[N, N]\noutput C: csr<f64>[N, N]\n"
                    "T[i, j] = sum[k] A[i, k] * A[k, j]\nC[i, j] = sum[k] T[i, k] * A[k, j]\n", name="formats")
    assert prog.ir().program.decl("T").storage is None  # the checker leaves the layout to the passes
    chosen = prog.ir(optimized=True).program.decl("T").storage
    assert chosen is not None and chosen.is_sparse  # T is present only where the product has terms
    # the attention example's scores are fused into their reader: no storage at all
    attention = sd.load(EXAMPLES / "graph_attention.sdsl")
    assert "S" not in {d.name for d in attention.ir(optimized=True).program.decls}


def test_function_of_a_module_def():
    prog = sd.load(EXAMPLES / "gin.sdsl")
    gin = prog.function("gin")
    assert [d.name for d in gin.inputs] == ["G", "H", "eps"]
    (result,) = [d.name for d in gin.outputs]
    assert result in ("gin", "out")  # the output is named after the def, or `out`
    G = random_graph(10, 0.3, 6)
    H = np.random.default_rng(7).standard_normal((10, 4)).astype(np.float32)
    out = gin.compile("ref")(G=G.astype(bool), H=H, eps=0.5)
    want = 1.5 * H + (G.toarray() != 0).astype(np.float32) @ H
    np.testing.assert_allclose(out[result], want, rtol=1e-5, atol=1e-6)


GNN_MODULE = """\
def gin(G: csr<bool>[N, N], H: dense<f32>[N, F], eps: f32) -> dense<f32>[N, F]:
    agg[i, f] = sum[j] G[i, j] * H[j, f]
    out[i, f] = (1 + eps) * H[i, f] + agg[i, f]
    return out

def mean_agg(G: csr<bool>[N, N], H: dense<f32>[N, F]) -> dense<f32>[N, F]:
    deg[i] = count[j] G[i, j]
    out[i, f] = sum[j] G[i, j] * H[j, f] / f32(deg[i])
    return out
"""


def test_module_of_defs_loads_and_runs_one_def(tmp_path):
    path = tmp_path / "gnn.sdsl"
    path.write_text(GNN_MODULE)
    module = sd.load(path)
    assert module.is_module and module.defs == ("gin", "mean_agg")
    assert module.inputs == () and module.outputs == ()
    with pytest.raises(sd.SdslTypeError, match="module of defs") as info:
        module.compile("ref")
    assert info.value.line == 1
    G = random_graph(9, 0.3, 25).astype(bool)
    H = np.random.default_rng(26).standard_normal((9, 2)).astype(np.float32)
    out = module.function("mean_agg").compile("ref")(G=G, H=H)
    deg = G.toarray().sum(axis=1)
    want = (G.toarray().astype(np.float32) @ H) / np.maximum(deg, 1)[:, None]
    (value,) = out.values()
    np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6)
    assert module.function("gin") is module.function("gin")


def test_module_with_a_broken_def_fails_to_load(tmp_path):
    path = tmp_path / "broken.sdsl"
    path.write_text(GNN_MODULE.replace("deg[i] = count[j] G[i, j]", "deg[i] = count[j] G[i, q]"))
    with pytest.raises(sd.SdslError) as info:
        sd.load(path)
    assert info.value.file == str(path) and info.value.line == 7


def test_function_unknown_def_is_a_name_error():
    with pytest.raises(sd.SdslNameError):
        sd.load(EXAMPLES / "gin.sdsl").function("gat")


def test_program_from_ast_matches_the_text_front_end():
    from sparsedsl.frontend.parser import parse

    text = SPGEMM.read_text()
    via_ast = api.program_from_ast(parse(text, "spgemm"), "spgemm")
    assert via_ast.ir() == sd.loads(text, name="spgemm").ir()


# ---------------------------------------------------------------- errors

def test_unknown_target_is_a_target_error():
    with pytest.raises(sd.SdslTargetError, match="unknown target 'tpu'"):
        sd.load(SPGEMM).compile(target="tpu")


@pytest.mark.skipif(importlib.util.find_spec("sparsedsl.backends.piuma") is not None,
                    reason="the piuma backend is part of this build")
def test_unbuilt_target_is_refused_cleanly():
    with pytest.raises(sd.SdslTargetError, match="target 'piuma' is not available in this build"):
        sd.load(SPGEMM).compile(target="piuma")


def test_missing_input_names_the_declaration():
    f = sd.load(SPGEMM).compile("ref")
    with pytest.raises(sd.SdslError) as info:
        f(A=random_csr(4, 4, 0.5, 8))
    err = info.value
    assert "B" in err.message
    assert err.span is not None and err.file == str(SPGEMM) and err.line == 3
    assert err.render().startswith(f"{SPGEMM}:3:")


def test_extra_input_is_an_error():
    f = sd.load(SPGEMM).compile("ref")
    A = random_csr(4, 4, 0.5, 9)
    with pytest.raises(sd.SdslError) as info:
        f(A=A, B=A, D=A)
    assert "D" in info.value.message


def test_size_mismatch_names_both_inputs():
    f = sd.load(SPGEMM).compile("ref")
    with pytest.raises(sd.SdslError) as info:
        f(A=random_csr(4, 5, 0.5, 10), B=random_csr(6, 4, 0.5, 11))
    assert "A" in info.value.message and "B" in info.value.message and "K" in info.value.message


def test_syntax_error_carries_location():
    with pytest.raises(sd.SdslSyntaxError) as info:
        sd.loads("input A: csr<f32>[N, N]\noutput C: csr<f32>[N, N]\nC[i, j] = A[i, j] +* 2\n", name="bad")
    assert info.value.file == "bad" and info.value.line == 3


def test_load_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(sd.SdslError, match="no such file"):
        sd.load(tmp_path / "nope.sdsl")


# ---------------------------------------------------------------- the examples against oracles

def test_example_pagerank_matches_networkx():
    dense = random_graph(40, 0.08, 12).toarray()
    dense[3] = 0  # a dangling node
    A = sp.csr_array(dense)
    out = sd.load(EXAMPLES / "pagerank.sdsl").compile("ref")(A=A)
    pr = nx.pagerank(nx.from_scipy_sparse_array(A, create_using=nx.DiGraph), alpha=0.85, tol=1e-13, max_iter=500)
    np.testing.assert_allclose(out.r, [pr[v] for v in range(40)], rtol=1e-8, atol=1e-12)


def test_example_bfs_matches_networkx():
    A = random_graph(50, 0.04, 13)
    out = sd.load(EXAMPLES / "bfs.sdsl").compile("ref")(A=A.astype(bool), source=2)
    hops = nx.single_source_shortest_path_length(nx.from_scipy_sparse_array(A, create_using=nx.DiGraph), 2)
    want = np.array([hops.get(v, -1) for v in range(50)])
    np.testing.assert_array_equal(out.level, want)
    assert (want == -1).any() and want.max() >= 3  # the graph exercises unreachable vertices and depth


def test_example_sssp_matches_networkx():
    A = random_graph(40, 0.08, 14, weighted=True)
    out = sd.load(EXAMPLES / "sssp.sdsl").compile("ref")(A=A, source=0)
    dist = nx.single_source_dijkstra_path_length(nx.from_scipy_sparse_array(A, create_using=nx.DiGraph), 0)
    want = np.array([dist.get(v, np.inf) for v in range(40)])
    np.testing.assert_allclose(out.dist, want, rtol=1e-12)


def test_example_triangles_karate_club():
    G = nx.karate_club_graph()
    A = nx.to_scipy_sparse_array(G, format="csr", weight=None).astype(bool)
    out = sd.load(EXAMPLES / "triangles.sdsl").compile("ref")(A=A)
    assert int(out.triangles) == 45


def test_example_triangles_random_graph():
    A = random_graph(60, 0.15, 15, symmetric=True)
    out = sd.load(EXAMPLES / "triangles.sdsl").compile("ref")(A=A.astype(bool))
    want = sum(nx.triangles(nx.from_scipy_sparse_array(A)).values()) // 3
    assert int(out.triangles) == want > 0


def test_example_components_matches_networkx():
    A = random_graph(60, 0.02, 16, symmetric=True)
    out = sd.load(EXAMPLES / "components.sdsl").compile("ref")(A=A.astype(bool))
    want = np.empty(60, dtype=np.int64)
    comps = list(nx.connected_components(nx.from_scipy_sparse_array(A)))
    for comp in comps:
        want[list(comp)] = min(comp)
    assert len(comps) > 2
    np.testing.assert_array_equal(out.comp, want)


def test_example_gin_program():
    G = random_graph(12, 0.25, 17).astype(bool)
    rng = np.random.default_rng(18)
    H = rng.standard_normal((12, 5)).astype(np.float32)
    W = rng.standard_normal((5, 3)).astype(np.float32)
    out = sd.load(EXAMPLES / "gin.sdsl").compile("ref")(G=G, H=H, W=W, eps=0.25)
    Z = 1.25 * H + G.toarray().astype(np.float32) @ H
    np.testing.assert_allclose(out.Y, np.maximum(Z @ W, 0), rtol=1e-5, atol=1e-5)


def test_example_graph_attention():
    G = random_graph(20, 0.2, 19).astype(bool)
    rng = np.random.default_rng(20)
    Q, K, V = (rng.standard_normal((20, 8)).astype(np.float32) for _ in range(3))
    out = sd.load(EXAMPLES / "graph_attention.sdsl").compile("ref")(G=G, Q=Q, K=K, V=V)
    mask = G.toarray()
    S = np.where(mask, 0.125 * (Q.astype(np.float64) @ K.T.astype(np.float64)), -np.inf)
    with np.errstate(invalid="ignore"):
        P = np.exp(S - S.max(axis=1, keepdims=True))
        P = np.where(mask, P / P.sum(axis=1, keepdims=True), 0.0)
    np.testing.assert_allclose(out.O, P @ V, rtol=1e-4, atol=1e-5)


def test_example_topk_prune():
    rng = np.random.default_rng(21)
    W = rng.standard_normal((6, 16)).astype(np.float32)
    X = rng.standard_normal((16, 4)).astype(np.float32)
    out = sd.load(EXAMPLES / "topk_prune.sdsl").compile("ref")(W=W, X=X)
    groups = np.abs(W).reshape(6, 4, 4)
    keep = np.zeros_like(groups, dtype=bool)
    order = np.argsort(-groups, axis=2, kind="stable")[:, :, :2]
    np.put_along_axis(keep, order, True, axis=2)
    Wp = np.where(keep.reshape(6, 16), W, 0.0).astype(np.float32)
    np.testing.assert_allclose(sp.csr_array(out.Wp).toarray(), Wp)
    assert sp.csr_array(out.Wp).nnz == 6 * 8
    np.testing.assert_allclose(out.Y, Wp @ X, rtol=1e-5, atol=1e-5)


def test_example_topk_attention():
    rng = np.random.default_rng(22)
    Q, K, V = (rng.standard_normal((12, 4)).astype(np.float32) for _ in range(3))
    out = sd.load(EXAMPLES / "topk_attention.sdsl").compile("ref")(Q=Q, K=K, V=V, k=3)
    S = Q.astype(np.float64) @ K.T.astype(np.float64)
    keep = np.zeros_like(S, dtype=bool)
    np.put_along_axis(keep, np.argsort(-S, axis=1, kind="stable")[:, :3], True, axis=1)
    Sm = np.where(keep, S, -np.inf)
    P = np.exp(Sm - Sm.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out.O, P @ V, rtol=1e-4, atol=1e-5)


def test_example_spmm_mean_aggregation():
    dense = random_csr(15, 15, 0.2, 23).toarray()
    dense[4] = 0  # an empty row: no neighbours, the output row is 0
    A = sp.csr_array(dense)
    X = np.random.default_rng(24).standard_normal((15, 3)).astype(np.float32)
    out = sd.load(EXAMPLES / "spmm.sdsl").compile("ref")(A=A, X=X)
    deg = np.diff(A.indptr).astype(np.float32)
    want = (A @ X) / np.maximum(deg, 1)[:, None]
    np.testing.assert_allclose(out.Y, want, rtol=1e-5, atol=1e-6)
    assert not out.Y[4].any()


def test_every_example_checks():
    for path in sorted(EXAMPLES.glob("*.sdsl")):
        sd.load(path)


def test_demo_program_is_the_triangles_example():
    assert (Path(sd.__file__).parent / "data" / "triangles.sdsl").read_text() == \
        (EXAMPLES / "triangles.sdsl").read_text()


# ---------------------------------------------------------------- on-disk cache

def test_cache_key_depends_on_everything():
    base = cache_key("ir", {"a": 1, "b": [1, 2]}, "numba", "1")
    assert base == cache_key("ir", {"b": [1, 2], "a": 1}, "numba", "1")  # option order does not matter
    assert len({base, cache_key("ir2", {"a": 1, "b": [1, 2]}, "numba", "1"),
                cache_key("ir", {"a": 2, "b": [1, 2]}, "numba", "1"),
                cache_key("ir", {"a": 1, "b": [1, 2]}, "triton", "1"),
                cache_key("ir", {"a": 1, "b": [1, 2]}, "numba", "2")}) == 5
    assert len(base) == 64 and int(base, 16) >= 0


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SDSL_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SDSL_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "sparsedsl"


def test_cache_put_get_roundtrip(tmp_path):
    cache = DiskCache(tmp_path)
    key = cache_key("ir", {}, "ref", "0")
    assert cache.get(key, ".py") is None
    path = cache.put(key, "print('hi')\n", ".py")
    assert path.parent.parent == tmp_path and path.name == key + ".py"
    assert cache.get_text(key, ".py") == "print('hi')\n"
    cache.put(key, b"x = 1\n", ".py")
    assert cache.get(key, ".py") == b"x = 1\n"
    assert [p.name for p in path.parent.iterdir()] == [key + ".py"]  # no temporary files left behind
    with pytest.raises(ValueError):
        cache.path("../etc")


PAYLOAD = 1 << 20  # large enough that a non-atomic write would be seen half-done


def _writer(root: str, key: str, fill: int, rounds: int) -> None:
    cache = DiskCache(root)
    for _ in range(rounds):
        cache.put(key, bytes([fill]) * PAYLOAD)


def _reader(root: str, key: str, rounds: int, bad) -> None:
    cache = DiskCache(root)
    seen = 0
    while seen < rounds:
        data = cache.get(key)
        if data is None:
            continue
        seen += 1
        if len(data) != PAYLOAD or data.count(data[:1]) != PAYLOAD:
            bad.value += 1


def test_cache_concurrent_writers_and_reader(tmp_path):
    ctx = multiprocessing.get_context("fork")
    key = cache_key("same program", {}, "numba", "1")
    bad = ctx.Value("i", 0)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), key, fill, 40)) for fill in (1, 2)]
    procs.append(ctx.Process(target=_reader, args=(str(tmp_path), key, 200, bad)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert bad.value == 0
    final = DiskCache(tmp_path).get(key)
    assert final in (b"\x01" * PAYLOAD, b"\x02" * PAYLOAD)
    assert sorted(os.listdir(tmp_path / key[:2])) == [key]


def test_explain_shows_the_cpu_accumulator_choice():
    src = (EXAMPLES / "spgemm.sdsl").read_text()
    text = sd.loads(src).explain()
    assert "accumulator of C: hash" in text and "schedule directive" in text
    auto = sd.loads(src.replace("accumulator hash", "accumulator auto")).explain()
    assert "accumulator of C: auto" in auto and "per row" in auto


def test_explain_says_what_became_of_loop_directives():
    src = ("input A: csr<f64>[N, K]\ninput X: dense<f64>[K, F]\noutput Y: dense<f64>[N, F]\n"
           "Y[i, f] = sum[k] A[i, k] * X[k, f]\nschedule Y:\n    {}\n")
    cases = {"parallel i": "parallel i: applied", "parallel f": "parallel f: applied",
             "parallel k": "parallel k: not applied",
             # row-wise (into a workspace over f), inner products per (i, f), by columns of the result
             "order i, k, f": "order i, k, f: applied — the loops run in this order",
             "order i, f, k": "order i, f, k: applied — the loops run in this order",
             "order f, i, k": "order f, i, k: applied — the loops run in this order",
             "block i 64": "block i 64: applied", "block f 8": "block f 8: not applied"}
    A = sp.random_array((9, 7), density=0.3, format="csr", rng=np.random.default_rng(2))
    X = np.arange(21.0).reshape(7, 3)
    for directive, said in cases.items():
        prog = sd.loads(src.format(directive))
        assert f"schedule of Y: {said}" in prog.explain()
        np.testing.assert_allclose(prog.compile("numba", parallel=False)(A=A, X=X)["Y"], A @ X)


@pytest.mark.parametrize("tile", [1, 3, 64])
def test_block_on_the_outer_index_sets_the_rows_per_chunk(tile):
    """``block i T`` cuts the rows into chunks of T (by work where rows walk compressed rows, in one-pass
    SpGEMM too); results are those without the directive, on two threads and empty rows included."""
    src = ("input A: csr<f64>[N, N]\ninput X: dense<f64>[N, F]\noutput Y: dense<f64>[N, F]\n"
           "output C: csr<f64>[N, N]\noutput r: dense<f64>[N]\n"
           "Y[i, f] = sum[k] A[i, k] * X[k, f]\nC[i, j] = sum[k] A[i, k] * A[k, j]\nr[i] = f64(i) * 2.0\n"
           f"schedule Y:\n    block i {tile}\nschedule C:\n    block i {tile}\nschedule r:\n    block i {tile}\n")
    kernel = sd.loads(src).compile("numba")
    code = kernel.source
    assert code.count(f"((n_N + {tile - 1}) // {tile})") >= 3 and "(n_N + 15) // 16" not in code
    A = sp.random_array((50, 50), density=0.1, format="csr", rng=np.random.default_rng(5))
    A = sp.csr_array(A.multiply(np.arange(50)[:, None] % 4 != 0))  # every fourth row empty
    X = np.arange(100.0).reshape(50, 2)
    out = kernel(A=A, X=X)
    np.testing.assert_allclose(out["Y"], A @ X)
    np.testing.assert_allclose(out["C"].toarray(), (A @ A).toarray())
    np.testing.assert_array_equal(out["r"], np.arange(50.0) * 2)


@pytest.mark.parametrize("target", ["ref", "numba"])
def test_a_const_keeps_the_dtype_of_its_cast(target):
    """``const t = i64(3)`` is an i64 (not an untyped literal that adopts i8); ``i8(300)`` wraps as at run time."""
    x = np.array([100, 1, 2], dtype=np.int8)
    y = sd.loads("const t = i64(3)\ninput x: dense<i8>[N]\noutput y\ny[i] = x[i] * t\n").compile(target)(x=x)["y"]
    assert y.dtype == np.int64 and y.tolist() == [300, 3, 6]
    y = sd.loads("const t = 3\ninput x: dense<i8>[N]\noutput y\ny[i] = x[i] * t\n").compile(target)(x=x)["y"]
    assert y.dtype == np.int8 and y.tolist() == [44, 3, 6]  # an untyped literal adopts i8, which wraps
    h = sd.loads("const t = f32(1.5)\ninput x: dense<f16>[N]\noutput y\ny[i] = x[i] * t\n").compile(target)(
        x=np.array([1, 2], dtype=np.float16))["y"]
    assert h.dtype == np.float32 and h.tolist() == [1.5, 3.0]
    A = sp.csr_array(np.eye(2))
    C = sd.loads("const c = i8(300)\ninput A: csr<f64>[N, N]\noutput C\nC[i, j] = A[i, j] * c\n").compile(target)(
        A=A)["C"]
    assert C.toarray().tolist() == [[44.0, 0.0], [0.0, 44.0]]


def test_long_operator_chains_compile_or_are_refused_cleanly():
    """A sum of 300 terms nests 300 operators deep: the generated Python binds parts of it to locals (it
    allows 200 nested parentheses) and the front end gets a deeper stack; 3000 terms is a located error."""
    def chain(n):
        return ("input a: dense<f64>[N]\ninput A: csr<f64>[N, N]\noutput o: dense<f64>[N]\noutput C\n"
                "o[i] = " + " + ".join(["a[i]"] * n) + "\n"
                "C[i, j] = A[i, j] * " + " * ".join(["(a[i] * 0.5 + 0.75)"] * (n // 4)) + "\n")
    a = np.linspace(0.5, 1.5, 5)
    A = sp.random_array((5, 5), density=0.4, format="csr", rng=np.random.default_rng(4))
    prog = sd.loads(chain(300))
    want, got = prog.compile("ref")(a=a, A=A), prog.compile("numba", parallel=False)(a=a, A=A)
    np.testing.assert_allclose(got["o"], 300 * a)
    np.testing.assert_allclose(want["o"], 300 * a)
    np.testing.assert_allclose(got["C"].toarray(), want["C"].toarray(), rtol=1e-12)
    with pytest.raises(sd.SdslError, match="nests too deeply"):
        sd.loads(chain(3000))


@pytest.mark.parametrize("target", ["ref", "numba"])
def test_an_output_its_format_cannot_hold_is_reported_at_its_declaration(target):
    prog = sd.loads("input A: csr<f64>[N, N]\noutput D: blockdiag(2)<f64>[N, N]\nD[i, j] = A[i, j]\n")
    with pytest.raises(sd.SdslInputError, match="output D: entry .* lies outside the diagonal blocks") as info:
        prog.compile(target)(A=sp.csr_array(np.ones((4, 4))))
    assert (info.value.line, info.value.col) == (2, 1) and "output D: blockdiag(2)" in info.value.render()
