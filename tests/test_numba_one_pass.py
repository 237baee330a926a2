"""One-pass assembly of a sparse result whose rows come out of a workspace (``Lowerer.one_pass``): a kernel
bounds each chunk of rows by its work, the numeric kernel writes the chunks into scratch, a last kernel
copies them into place. Checked against the two-pass assembly (bit for bit: the numeric code is the same),
the reference interpreter and scipy / numpy, on the inputs that stress the bounds and the scratch: empty
matrices and rows, a single entry, rectangular and wide products (hashed rows), int64 and unsorted or
duplicate scipy indices, every value type, repeated calls of changing size, and one and several threads.
"""
from __future__ import annotations

import re

import numba
import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.backends.numba.subscripts import signed_subscripts

HEAD = "input A: csr<{t}>[M, K]\ninput B: csr<{t}>[K, N]\n"
PRODUCTS = {
    "sum": ("f64", "output C: csr<f64>[M, N]\nC[i, j] = sum[k] A[i, k] * B[k, j]\n"),
    "tropical": ("f64", "output C: csr<f64>[M, N]\nC[i, j] = min[k] (A[i, k] + B[k, j])\n"),
    "max": ("f32", "output C: csr<f32>[M, N]\nC[i, j] = max[k] A[i, k] * B[k, j]\n"),
    "int": ("i64", "output C: csr<i64>[M, N]\nC[i, j] = sum[k] A[i, k] * B[k, j]\n"),
    "bool": ("bool", "output C: csr<bool>[M, N]\nC[i, j] = any[k] (A[i, k] and B[k, j])\n"),
    "count": ("f64", "output C: csr<i64>[M, N]\nC[i, j] = count[k] A[i, k] * B[k, j]\n"),
    "cast": ("f64", "output C: csr<f32>[M, N]\nC[i, j] = f32(sum[k] A[i, k] * B[k, j])\n"),
}
NUMPY = {"f64": np.float64, "f32": np.float32, "i64": np.int64, "bool": np.bool_}
PRODUCT_SRC = HEAD.format(t="f64") + PRODUCTS["sum"][1]


def _program(key: str):
    t, body = PRODUCTS[key]
    return sd.loads(HEAD.format(t=t) + body, name=f"one_pass_{key}")


@pytest.fixture(scope="module", params=sorted(PRODUCTS))
def compiled(request):
    program = _program(request.param)
    return (request.param, program.compile(target="numba"), program.compile(target="numba", assembly="two-pass"),
            program.compile(target="ref"), program.compile(target="numba", one_pass_max_entries=0))


def _random(m, n, density, seed, dtype, int64=False):
    rng = np.random.default_rng(seed)
    a = sp.random_array((m, n), density=density, format="csr", rng=rng)
    if dtype == np.bool_:
        a.data = np.ones(a.nnz)
    elif np.issubdtype(dtype, np.integer):
        a.data = rng.integers(-3, 4, a.nnz).astype(np.float64)
    else:
        a.data = rng.standard_normal(a.nnz)
    a = sp.csr_array(a.astype(dtype))
    if int64:
        a.indices = a.indices.astype(np.int64)
        a.indptr = a.indptr.astype(np.int64)
    return a


def _expected(key: str, A, B) -> np.ndarray:
    """The product computed densely by numpy, with the pattern of the structural product."""
    a, b = A.toarray(), B.toarray()
    pa, pb = _stored(A), _stored(B)
    pattern = (pa.astype(np.int64) @ pb.astype(np.int64)) > 0
    if key in ("sum", "int", "cast"):
        out = a.astype(np.float64) @ b.astype(np.float64)
    elif key == "count":
        out = pa.astype(np.int64) @ pb.astype(np.int64)
    elif key == "bool":
        out = pattern
    else:
        terms = (a[:, :, None] + b[None, :, :]) if key == "tropical" else (a[:, :, None] * b[None, :, :])
        both = pa[:, :, None] & pb[None, :, :]
        fill = np.inf if key == "tropical" else -np.inf
        red = np.min if key == "tropical" else np.max
        out = red(np.where(both, terms, fill), axis=1, initial=fill)
    return np.where(pattern, out, 0), pattern


def _stored(A) -> np.ndarray:
    s = sp.csr_array((np.ones(A.nnz), A.indices, A.indptr), shape=A.shape)
    s.sum_duplicates()
    return s.toarray() > 0


def _check(key, one, two, ref, A, B):
    got = one(A=A, B=B)["C"]
    again = two(A=A, B=B)["C"]
    # the same numeric code writes both: identical arrays
    for x, y in zip((got.indptr, got.indices, got.data), (again.indptr, again.indices, again.data)):
        np.testing.assert_array_equal(x, y)
    # the stored pattern is the structural product's, each row in increasing column order
    structural = sp.csr_array(_stored(A).astype(np.int64)) @ sp.csr_array(_stored(B).astype(np.int64))
    structural = sp.csr_array(structural)
    structural.sort_indices()
    np.testing.assert_array_equal(got.indptr, structural.indptr)
    np.testing.assert_array_equal(got.indices, structural.indices)
    want, pattern = _expected(key, A, B)
    dense = got.toarray()
    if np.issubdtype(dense.dtype, np.floating):
        np.testing.assert_allclose(dense, want, rtol=1e-5 if dense.dtype == np.float32 else 1e-12, atol=1e-6)
    else:
        np.testing.assert_array_equal(dense, want.astype(dense.dtype))
    r = ref(A=A, B=B)["C"]
    np.testing.assert_array_equal(_stored(r), pattern)
    np.testing.assert_allclose(r.toarray().astype(np.float64), dense.astype(np.float64), rtol=1e-5, atol=1e-6)
    return got


def test_the_product_is_assembled_in_one_pass(compiled):
    key, one, two, _ref, _big = compiled
    src = signed_subscripts(one.executable.source)
    assert "_bound(" in src and "_place(" in src and "_scratch(" in src
    # the symbolic pass runs only where the scratch would be too large to keep (a run-time branch)
    assert re.search(r"k\d+_C_count\(", src) is None and re.search(r"if \(w_off\[w_nch\] > 33554432\):", src)
    assert "_count(" in two.executable.source and "_scratch(" not in two.executable.source
    assert "numba: assembly of C: one pass" in _program(key).explain()
    # the placement copies each chunk's run of entries as slices (numba did not vectorize the element loop)
    assert re.search(r"idx_C\[w_at:w_at \+ _len\d+\] = w_tidx\[w_from:w_from \+ _len\d+\]", src)


def test_copy_loops_become_slices_only_when_they_are_plain_copies():
    from sparsedsl.backends.numba.codegen import _slice_copies
    from sparsedsl.loop_ir import nodes as L

    t, at, frm = L.Var("t"), L.Var("at"), L.Var("frm")

    def plus(a, b):
        return L.Op("+", (a, b), "i64")

    def loop(*body, start=0):
        return L.For("t", L.Const(start, "i64"), L.Var("n"), tuple(body))

    copy = L.Store("dst", (plus(at, t),), L.Load("src", (plus(t, frm),)))
    assert _slice_copies(loop(copy)) == [("dst", at, "src", frm)]
    assert _slice_copies(loop(copy, start=1)) is None  # (slices from 0 only)
    assert _slice_copies(loop(L.Store("src", (plus(at, t),), L.Load("src", (plus(t, frm),))))) is None  # overlap
    assert _slice_copies(loop(copy, L.Store("dst2", (plus(at, t),), L.Load("dst", (t,))))) is None  # reads dst
    assert _slice_copies(loop(L.Store("dst", (plus(t, t),), L.Load("src", (plus(t, frm),))))) is None  # strided
    scaled = L.Store("dst", (plus(at, t),), L.Op("*", (L.Load("src", (plus(t, frm),)), L.Const(2.0, "f64")), "f64"))
    assert _slice_copies(loop(scaled)) is None  # not a copy


@pytest.mark.parametrize("m, k, n, density, seed", [
    (0, 0, 0, 0.0, 0),        # empty matrices
    (5, 4, 3, 0.0, 1),        # no entries at all: every row empty, zero scratch
    (1, 1, 1, 1.0, 2),        # a single entry
    (40, 30, 50, 0.05, 3),    # rectangular, many empty rows
    (300, 300, 300, 0.02, 4),
    (37, 20, 70_000, 0.002, 5),  # wide: light rows hashed (past 65536 columns)
])
def test_one_pass_equals_two_passes_reference_and_numpy(compiled, m, k, n, density, seed):
    key, one, two, ref, big = compiled
    if m * k * n > 2_000_000 and key in ("tropical", "max"):
        pytest.skip("the dense 3-d check would be too large")
    dtype = NUMPY[PRODUCTS[key][0]]
    A = _random(m, k, density, seed, dtype)
    B = _random(k, n, min(1.0, density * 3), seed + 50, dtype, int64=True)
    got = _check(key, one, two, ref, A, B)
    assert got.shape == (m, n) and got.nnz == got.indptr[-1]
    # scratch over the limit: the same call takes the symbolic pass, bit for bit the same result
    _check(key, big, two, ref, A, B)


def test_unsorted_and_duplicate_scipy_indices():
    one = _program("sum").compile(target="numba")
    rows = np.array([0, 0, 0, 2, 2, 1])
    cols = np.array([3, 1, 3, 0, 2, 2])
    vals = np.array([1.0, 2.0, 4.0, -1.0, 0.5, 3.0])
    A = sp.csr_array((vals, (rows, cols)), shape=(3, 4))
    A.has_canonical_format = False
    A.indices[:3] = A.indices[:3][::-1].copy()  # an unsorted row
    B = sp.csr_array(np.arange(1.0, 13.0).reshape(4, 3))
    before = (A.indptr.copy(), A.indices.copy(), A.data.copy())
    got = one(A=A, B=B)["C"]
    np.testing.assert_allclose(got.toarray(), A.toarray() @ B.toarray(), rtol=1e-12)
    for x, y in zip(before, (A.indptr, A.indices, A.data)):
        np.testing.assert_array_equal(x, y)  # the input is not modified


def test_repeated_calls_of_changing_size_reuse_scratch_without_aliasing():
    """The scratch arrays are kept between calls: a larger call grows them, a smaller one reuses them, and no
    result shares memory with them (an earlier result is unchanged by later calls)."""
    one = _program("sum").compile(target="numba")
    sizes = [(200, 0.03), (900, 0.01), (50, 0.1), (900, 0.02), (0, 0.0), (300, 0.05)]
    results = []
    for t, (n, density) in enumerate(sizes):
        A = _random(n, n, density, 100 + t, np.float64)
        C = one(A=A, B=A)["C"]
        results.append((A, C, C.toarray().copy()))
    for A, C, snapshot in results:
        np.testing.assert_array_equal(C.toarray(), snapshot)
        np.testing.assert_allclose(snapshot, A.toarray() @ A.toarray(), rtol=1e-12, atol=1e-12)


def test_one_and_several_threads_agree():
    one = _program("sum").compile(target="numba")
    rng = np.random.default_rng(9)
    n = 2000
    degrees = np.minimum(rng.zipf(1.7, n), n // 2)  # power-law rows: chunks of very different work
    rows = np.repeat(np.arange(n), degrees)
    A = sp.csr_array((rng.standard_normal(rows.size), (rows, rng.integers(0, n, rows.size))), shape=(n, n))
    A.sum_duplicates()
    want = (A @ A).toarray()
    threads = numba.get_num_threads()
    try:
        got = {}
        for t in sorted({1, threads}):
            numba.set_num_threads(t)
            got[t] = one(A=A, B=A)["C"]
            np.testing.assert_allclose(got[t].toarray(), want, rtol=1e-12, atol=1e-12)
    finally:
        numba.set_num_threads(threads)


def test_a_product_inside_a_repeat_runs_in_the_compiled_host():
    """A repeat compiles its host loop (no Python scratch there): the product still assembles in one pass."""
    text = ("input A: csr<f64>[N, N]\noutput C: csr<f64>[N, N]\n"
            "C[i, j] = A[i, j]\nrepeat at most 3:\n    C[i, j] = sum[k] C[i, k] * A[k, j]\n")
    kernel = sd.loads(text, name="one_pass_repeat").compile(target="numba")
    src = signed_subscripts(kernel.executable.source)
    assert "def _host(" in src and "_place(" in src
    A = _random(60, 60, 0.05, 21, np.float64)
    a = A.toarray()
    np.testing.assert_allclose(kernel(A=A)["C"].toarray(), a @ a @ a @ a, rtol=1e-10, atol=1e-12)
    # the compiled host's run-time branch to the symbolic pass (scratch over the limit) types and runs too
    big = sd.loads(text, name="one_pass_repeat").compile(target="numba", one_pass_max_entries=0)
    np.testing.assert_allclose(big(A=A)["C"].toarray(), a @ a @ a @ a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("assembly", ["auto", "two-pass"])
def test_dense_accumulator_stamps_start_over_without_wrapping(monkeypatch, tmp_path, assembly):
    """The int32 marks of a dense accumulator are reset when a thread's stamp reaches STAMP_LIMIT; with a
    limit of 3 that happens every few rows, and a mark left from before the reset must not count as touched
    (which would merge a row's keys with an earlier row's)."""
    from sparsedsl.backends.numba import codegen

    monkeypatch.setattr(codegen, "STAMP_LIMIT", 3)
    src = "input A: csr<f64>[N, N]\noutput C: csr<f64>[N, N]\nC[i, j] = sum[k] A[i, k] * A[k, j]\n"
    kernel = sd.loads(src, name="stamps").compile(target="numba", assembly=assembly, cache_dir=str(tmp_path))
    assert "== 3:" in kernel.source
    rng = np.random.default_rng(5)
    a = sp.random_array((60, 60), density=0.1, format="csr", rng=rng)
    got = kernel(A=a)["C"]
    want = (a @ a).tocsr()
    want.sort_indices()
    assert got.has_sorted_indices
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=1e-12)


@pytest.mark.parametrize("assembly", ["auto", "two-pass"])
def test_an_auto_accumulator_past_its_dense_width_hashes_every_row(monkeypatch, tmp_path, assembly):
    """Past AUTO_DENSE_MAX keys an auto workspace allocates no dense arrays and hashes every row, ordering its
    keys by heapsort (no bitmaps either). With the bound at 64 keys, a 200-column product: rows of 0, 1, a
    few and more than 16 keys, against scipy."""
    from sparsedsl.backends.numba import codegen

    monkeypatch.setattr(codegen, "AUTO_DENSE_MAX", 64)
    src = PRODUCT_SRC
    kernel = sd.loads(src, name="past_dense").compile(target="numba", assembly=assembly, cache_dir=str(tmp_path))
    assert "_dw = w_ws_width if w_ws_width <= 64 else 0" in signed_subscripts(kernel.source)
    rng = np.random.default_rng(11)
    a = sp.random_array((40, 30), density=0.15, format="csr", rng=rng)
    b = sp.random_array((30, 200), density=0.2, format="csr", rng=rng)
    got = kernel(A=a, B=b)["C"]
    want = (a @ b).tocsr()
    want.sort_indices()
    assert got.has_sorted_indices and max(np.diff(got.indptr)) > 16
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=1e-12)


WIDE = 1 << 46  # columns: no machine holds a dense row of them (it failed allocating 250 GB per thread)


def _wide_operands():
    # rows of B at columns 5, 7, 2^32 and WIDE - 1; every row of A sums all of them
    a = sp.csr_array(np.ones((2, 3)))
    cols = np.array([5, WIDE - 1, 5, 7, 1 << 32], dtype=np.int64)
    b = sp.csr_array((np.array([1.0, 2.0, 3.0, 4.0, 5.0]), cols, np.array([0, 2, 4, 5], dtype=np.int64)),
                     shape=(3, WIDE))
    return a, b


def test_a_product_with_few_entries_in_astronomically_wide_rows(tmp_path):
    src = PRODUCT_SRC
    a, b = _wide_operands()
    for parallel in (True, False):
        got = sd.loads(src, name="wide").compile(target="numba", parallel=parallel, cache_dir=str(tmp_path))(A=a, B=b)["C"]
        assert got.shape == (2, WIDE)
        np.testing.assert_array_equal(got.indptr, [0, 4, 8])
        np.testing.assert_array_equal(got.indices, [5, 7, 1 << 32, WIDE - 1] * 2)
        np.testing.assert_array_equal(got.data, [4.0, 4.0, 5.0, 2.0] * 2)


@pytest.mark.parametrize("target", ["numba", "ref"])
def test_running_out_of_memory_is_an_error_at_the_output(tmp_path, target):
    """An accumulator forced dense over those columns (numba), or the reference's dense arrays, cannot be
    allocated: an SdslRuntimeError at the output's declaration, not Numba's SystemError or a MemoryError."""
    src = PRODUCT_SRC + "schedule C:\n    accumulator dense\n"
    a, b = _wide_operands()
    options = {"cache_dir": str(tmp_path)} if target == "numba" else {}
    kernel = sd.loads(src, name="oom").compile(target=target, **options)
    with pytest.raises(sd.SdslRuntimeError, match=f"the {target} target ran out of memory computing C") as info:
        kernel(A=a, B=b)
    assert info.value.span is not None and info.value.span.line == 3
