"""Parallel shapes of the numba target: reductions to a scalar split over threads, rows cut into ranges of
equal work, lookups of a row that does not change in the inner loop, repeats compiled whole, and the
``reassoc`` flag. Each is checked against numpy / scipy / networkx, and the generated code is inspected to
make sure the shape under test is the one that ran."""
from __future__ import annotations

import importlib.util
import inspect
import sys

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd


def _csr(n, m, density, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    a = sp.random_array((n, m), density=density, format="csr", rng=rng)
    a.data = rng.standard_normal(a.nnz)
    return sp.csr_array(a.astype(dtype))


@pytest.mark.parametrize("op, fn", [("sum", np.sum), ("max", np.max), ("min", np.min), ("prod", np.prod)])
def test_scalar_reductions_are_split_over_threads(op, fn):
    text = f"input A: csr<f64>[N, M]\noutput t: f64\nt = {op}[i, j] A[i, j]\n"
    kernel = sd.loads(text, name=f"par_{op}").compile(target="numba")
    src = kernel.executable.source
    assert "prange(" in src and "_part[" in src
    for n, m, density, seed in [(1, 1, 1.0, 0), (50, 40, 0.05, 1), (400, 30, 0.02, 2)]:
        A = _csr(n, m, density, seed)
        if op == "prod":
            A.data = 1.0 + 0.01 * A.data  # keep the product finite
        got = kernel(A=A)["t"]
        want = fn(A.data) if A.nnz else {"sum": 0.0, "max": -np.inf, "min": np.inf, "prod": 1.0}[op]
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_count_any_all_split_exactly():
    text = ("input A: csr<i64>[N, M]\noutput c: i64\noutput a: bool\noutput e: bool\n"
            "c = count[i, j] A[i, j]\na = any[i, j] (A[i, j] > 5)\ne = all[i, j] (A[i, j] > -100)\n")
    kernel = sd.loads(text, name="par_count").compile(target="numba")
    rng = np.random.default_rng(4)
    A = sp.random_array((300, 70), density=0.05, format="csr", rng=rng,
                        data_sampler=lambda size: rng.integers(-10, 10, size)).astype(np.int64)
    out = kernel(A=A)
    assert out["c"] == A.nnz
    assert bool(out["a"]) == bool((A.data > 5).any())
    assert bool(out["e"]) == bool((A.data > -100).all())


def _generated_module(kernel, tmp_path):
    kernel.executable.write(tmp_path)
    spec = importlib.util.spec_from_file_location("par_generated", tmp_path / "kernel_numba.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["par_generated"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_rows_are_cut_by_work_not_by_count(tmp_path):
    kernel = sd.loads("input A: csr<f64>[N, N]\ninput X: dense<f64>[N, F]\noutput Y: dense<f64>[N, F]\n"
                      "Y[i, f] = sum[j] A[i, j] * X[j, f]\n", name="par_split").compile(target="numba")
    assert "_row_split(" in kernel.executable.source
    mod = _generated_module(kernel, tmp_path)
    # one very heavy row among light ones (a power-law hub)
    degrees = np.array([1] * 100 + [5000] + [1] * 99, dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(degrees)])
    n, chunks = len(degrees), 8
    bounds = [mod._row_split(c, chunks, n, ptr, ptr) for c in range(chunks + 1)]
    assert bounds[0] == 0 and bounds[-1] == n and bounds == sorted(bounds)
    weight = 1 + 2 * degrees
    work = [weight[bounds[c]:bounds[c + 1]].sum() for c in range(chunks)]
    # the hub's chunk holds little besides the hub; the light rows are spread over the other chunks
    hub = next(c for c in range(chunks) if bounds[c] <= 100 < bounds[c + 1])
    assert work[hub] - weight[100] < weight.sum() / chunks
    assert bounds[hub + 1] - bounds[hub] < 60
    # and the answer is right on such a matrix
    A = sp.csr_array((np.ones(ptr[-1]), np.arange(ptr[-1]) % n, ptr), shape=(n, n))
    X = np.random.default_rng(0).standard_normal((n, 3))
    np.testing.assert_allclose(kernel(A=A, X=X)["Y"], A @ X, rtol=1e-12)


def test_spgemm_rows_are_cut_by_multiply_adds(tmp_path, monkeypatch):
    """A row with few entries whose columns pick heavy rows of B (a hub's neighbours' neighbours) weighs its
    multiply-adds, not its entries: it gets a chunk of its own, where a split by entries would give it company."""
    kernel = sd.loads("input A: csr<f64>[N, N]\noutput C: csr<f64>[N, N]\nC[i, j] = sum[k] A[i, k] * A[k, j]\n",
                      name="par_flops").compile(target="numba")
    mod = _generated_module(kernel, tmp_path)
    n = 200
    rows = [list(range(1, 51))]                                   # 50 entries, 50 * 100 multiply-adds
    rows += [list(range(51 + r, 151 + r)) for r in range(50)]     # 100 entries, 100 multiply-adds each
    rows += [[51 + (r + 7) % 149] for r in range(149)]            # 1 entry, 1 multiply-add each
    ptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    A = sp.csr_array((np.arange(1.0, ptr[-1] + 1), np.concatenate(rows), ptr), shape=(n, n))
    seen = {}
    original = mod.k0_C_bound

    def spy(*args):
        original(*args)
        names = list(inspect.signature(original.py_func).parameters)
        seen.update(zip(names, args))

    monkeypatch.setattr(mod, "k0_C_bound", spy)
    out = mod.run(A.indptr.astype(np.int64), A.indices.astype(np.int64), A.data, n)
    bounds = list(seen["w_bounds"])
    assert bounds[0] == 0 and bounds[-1] == n and bounds == sorted(bounds) and len(bounds) > 3
    # row 0 (5000 of the ~10000 multiply-adds) alone in its chunk (the chunks before it are empty)
    assert min(b for b in bounds if b > 0) == 1
    # cut by entries (one plus two per entry, as the other row loops are), row 0 would share its chunk
    by_entries = [mod._row_split(c, len(bounds) - 1, n, A.indptr, A.indptr) for c in range(len(bounds))]
    assert min(b for b in by_entries if b > 0) > 1
    expected = (A @ A).sorted_indices()
    ptr_c, idx_c, val_c = out["C"]
    np.testing.assert_array_equal(ptr_c, expected.indptr)
    np.testing.assert_array_equal(idx_c, expected.indices)
    np.testing.assert_allclose(val_c, expected.data, rtol=1e-12)


def test_chunks_are_claimed_and_the_answer_does_not_depend_on_which_thread_ran_them():
    """The threads take chunks of rows from a shared counter (a faster core takes more): per-chunk partial sums
    are still combined in chunk order, so repeated calls agree bit for bit, and per-thread workspaces carried
    from one chunk to the next leave no trace in a product."""
    import numba

    total = sd.loads("input A: csr<f64>[N, N]\noutput t: f64\nt = sum[i, j] A[i, j]\n",
                     name="par_claim_sum").compile(target="numba")
    product = sd.loads("input A: csr<f64>[N, N]\noutput C: csr<f64>[N, N]\nC[i, j] = sum[k] A[i, k] * A[k, j]\n",
                       name="par_claim_spgemm").compile(target="numba")
    assert "_claim(" in total.executable.source and "_claim(" in product.executable.source
    # power-law rows: a few heavy rows among many light ones, so chunks differ in cost
    rng = np.random.default_rng(7)
    n = 3000
    degrees = np.minimum(rng.zipf(1.6, n), n)
    rows = np.repeat(np.arange(n), degrees)
    A = sp.csr_array((rng.standard_normal(rows.size), (rows, rng.integers(0, n, rows.size))), shape=(n, n))
    A.sum_duplicates()
    first = total(A=A)["t"]
    assert all(total(A=A)["t"] == first for _ in range(20))
    np.testing.assert_allclose(first, A.data.sum(), rtol=1e-12)
    want = (A @ A).toarray()
    threads = numba.get_num_threads()
    try:
        for t in sorted({1, threads}):
            numba.set_num_threads(t)
            for _ in range(3):
                np.testing.assert_allclose(product(A=A)["C"].toarray(), want, rtol=1e-12, atol=1e-12)
    finally:
        numba.set_num_threads(threads)


def test_triangles_look_up_the_outer_row():
    """L's values are all 1 (a cast of a bool pattern), so the outer row is looked up in a bitmap of its keys;
    with values read (W's weights), in a map to their positions. Both count networkx's triangles, on graphs
    whose rows span several bitmap words and whose consecutive rows share words (the bitmap of the previous
    row must be cleared, not only overwritten)."""
    text = ("input A: csr<bool>[N, N]\noutput t: i64\nL[i, j] = i64(A[i, j]) where j < i\n"
            "t = sum[i, j] (sum[k] L[i, k] * L[j, k] where L[i, j])\n")
    weighted = ("input W: csr<f64>[N, N]\noutput t: f64\nL[i, j] = W[i, j] where j < i\n"
                "t = sum[i, j] (sum[k] L[i, k] * L[j, k] where L[i, j])\n")
    kernel = sd.loads(text, name="par_tri").compile(target="numba")
    wkernel = sd.loads(weighted, name="par_tri_w").compile(target="numba")
    assert "_bits[" in kernel.executable.source and "_map[" not in kernel.executable.source
    assert "_map[" in wkernel.executable.source and "_bits[" not in wkernel.executable.source
    for n, p, seed in [(1, 0.5, 0), (30, 0.3, 1), (200, 0.05, 2), (700, 0.02, 3)]:
        g = nx.gnp_random_graph(n, p, seed=seed)
        A = nx.to_scipy_sparse_array(g, format="csr").astype(bool)
        want = sum(nx.triangles(g).values()) // 3
        assert kernel(A=A)["t"] == want
        assert wkernel(W=A.astype(np.float64))["t"] == want


def test_triangles_look_up_without_a_branch():
    text = ("input A: csr<bool>[N, N]\noutput t: i64\nL[i, j] = i64(A[i, j]) where j < i\n"
            "t = sum[i, j] (sum[k] L[i, k] * L[j, k] where L[i, j])\n")
    src = sd.loads(text, name="par_tri_sel").compile(target="numba").executable.source
    # the update is computed and its identity combined on a miss, with no branch on whether the key is in the
    # row's bitmap (a miss loads nothing else), and no hit rate kept
    assert "(w_acc_1_upd if w_c_3_f else 0)" in src and "w_has_1 = w_has_1 | w_c_3_f" in src
    assert "if w_c_3_f:" not in src and "_hit" not in src
    # a looked-up row whose values are read (a map of positions) keeps both versions, chosen by the hit rate
    weighted = text.replace("csr<bool>", "csr<f64>").replace("i64(A[i, j])", "A[i, j]").replace("i64", "f64")
    wsrc = sd.loads(weighted, name="par_tri_sel_w").compile(target="numba").executable.source
    assert "if w_c_3_hit * 2 >= w_c_3_try:" in wsrc and wsrc.count("if w_c_3_f:") == 1


def test_masked_dot_products_by_lookup_keep_only_hits():
    """A masked product S = A Bᵀ at M's entries, with A's row looked up: the updates of keys that are not in the
    row are computed (from another row's positions) and dropped. Infinities and NaNs in the other rows must not
    leak into the kept sums, and a row with no common key stays absent. Dense and sparse cases make both
    versions of the loop run (the hit rate decides)."""
    text = ("input A: csr<f64>[N, K]\ninput B: csr<f64>[N, K]\ninput M: csr<bool>[N, N]\n"
            "output S: csr<f64>[N, N]\nS[i, j] = sum[k] A[i, k] * B[j, k] where M[i, j]\n")
    program = sd.loads(text, name="par_masked_dot")
    kernel = program.compile(target="numba")
    assert "_upd if " in kernel.executable.source
    ref = program.compile(target="ref")
    for n, k, seed, density in [(1, 1, 0, 0.2), (40, 30, 1, 0.2), (120, 60, 2, 0.2), (120, 60, 3, 0.6),
                                (300, 2000, 4, 0.003)]:
        A, B = _csr(n, k, density, seed), _csr(n, k, density, seed + 7)
        A.data[::5] = np.inf
        B.data[::7] = np.nan
        M = _csr(n, n, 0.3, seed + 13).astype(bool)
        got = sp.csr_array(kernel(A=A, B=B, M=M)["S"])
        want = sp.csr_array(ref(A=A, B=B, M=M)["S"])
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_allclose(got.data, want.data, rtol=1e-12, equal_nan=True)


def test_a_repeat_is_compiled_whole():
    from pathlib import Path

    program = sd.load(Path(__file__).resolve().parents[1] / "examples" / "bfs.sdsl")
    kernel = program.compile(target="numba")
    src = kernel.executable.source
    host = src[src.index("def _host("):src.index("def run(")]
    # one prelude, and every kernel the host calls is compiled
    assert src.count("import numba") == 1
    assert all(src[src.index(f"def {k.name}(") - 60:src.index(f"def {k.name}(")].count("@numba.njit") == 1
               for k in kernel.executable.module.kernels)
    assert src.rindex("@numba.njit", 0, src.index("def _host(")) > src.rindex("def ", 0, src.index("def _host("))
    assert "while True:" in host or "for _it" in host
    g = nx.gnp_random_graph(60, 0.05, seed=3, directed=True)
    A = nx.to_scipy_sparse_array(g, format="csr").astype(bool)
    got = kernel(A=A, source=0)["level"]
    lengths = nx.single_source_shortest_path_length(g, 0)
    want = np.array([lengths.get(v, -1) for v in range(60)])
    np.testing.assert_array_equal(got, want)


def test_reassoc_flag_is_the_only_fast_math_and_can_be_turned_off():
    text = "input A: csr<f32>[N, M]\ninput x: dense<f32>[M]\noutput y: dense<f32>[N]\ny[i] = sum[j] A[i, j] * x[j]\n"
    program = sd.loads(text, name="par_reassoc")
    on = program.compile(target="numba").executable.source
    off = program.compile(target="numba", reassoc=False).executable.source
    assert "fastmath={'reassoc'}" in on and "fastmath={'reassoc'}" not in off
    A = _csr(40, 30, 0.2, 5, np.float32)
    x = np.random.default_rng(6).standard_normal(30).astype(np.float32)
    want = A.astype(np.float64) @ x.astype(np.float64)
    for source_kernel in (program.compile(target="numba"), program.compile(target="numba", reassoc=False)):
        np.testing.assert_allclose(source_kernel(A=A, x=x)["y"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, text, inputs", [
    ("spmm", "input A: csr<f64>[N, N]\ninput X: dense<f64>[N, F]\noutput Y: dense<f64>[N, F]\n"
     "Y[i, f] = sum[j] A[i, j] * X[j, f]\n", lambda A: {"A": A, "X": np.ones((A.shape[0], 3))}),
    ("spgemm", "input A: csr<f64>[N, N]\noutput C: csr<f64>[N, N]\nC[i, j] = sum[k] A[i, k] * A[k, j]\n",
     lambda A: {"A": A}),
    ("total", "input A: csr<f64>[N, N]\noutput t: f64\nt = sum[i, j] A[i, j]\n", lambda A: {"A": A}),
    ("attention", "input G: csr<f64>[N, N]\ninput Q: dense<f64>[N, D]\noutput O: dense<f64>[N, D]\n"
     "S[i, j] = sum[d] Q[i, d] * Q[j, d] where G[i, j]\nP[i, j] = softmax[j] S[i, j]\n"
     "O[i, d] = sum[j] P[i, j] * Q[j, d]\n", lambda A: {"G": A, "Q": np.ones((A.shape[0], 4))}),
])
def test_a_parallel_kernel_launches_its_pranges_only(tmp_path, name, text, inputs):
    """Numba's ``parallel=True`` would also make a parallel loop of every np.zeros, np.full, fill, slice
    assignment or array expression outside the pranges (the claimed loop's counter, a workspace's marks): each
    one more launch of the thread team, 70-100 us where idle workers sleep. The kernels ask for pranges only."""
    program = sd.loads(text, name=f"par_only_{name}")
    mod = _generated_module(program.compile(target="numba"), tmp_path)
    A = _csr(60, 60, 0.1, 3)
    want = program.compile(target="ref")(**inputs(A))
    # int32 and int64 indices: two specializations (Numba once gave the second one every parallel option)
    wide = sp.csr_array((A.data, A.indices.astype(np.int64), A.indptr.astype(np.int64)), shape=A.shape)
    for matrix in (A, wide):
        out = mod.compute(**inputs(matrix))
        for key, value in out.items():
            got = value.toarray() if sp.issparse(value) else value
            expected = want[key].toarray() if sp.issparse(want[key]) else want[key]
            np.testing.assert_allclose(got, expected, rtol=1e-12)
    kernels = [f for f in vars(mod).values() if getattr(f, "py_func", None) is not None
               and "prange(" in inspect.getsource(f.py_func)]
    assert kernels
    assert name == "total" or any(len(f.signatures) >= 2 for f in kernels)
    for f in kernels:
        pranges = inspect.getsource(f.py_func).count("prange(")
        for sig in f.signatures:
            diagnostics = f.overloads[sig].metadata["parfor_diagnostics"]
            assert diagnostics.count_parfors() == pranges, f.__name__
