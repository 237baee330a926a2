"""The per-call fast path of a compiled kernel (``convert.InputBinder``, ``Kernel.__call__``): correctness only.

The fast path binds a canonical scipy CSR or a numpy array of the declared dtype without copies; everything
else must behave exactly as the general path (``bind_value``): unsorted or duplicate indices canonicalized into
a copy, malformed structure an ``SdslInputError`` naming the input, inputs never modified. Timings are measured
by ``benchmarks/overhead.py``, never asserted here.

Oracles: scipy's ``toarray()`` / ``sum_duplicates`` on a copy, numpy products, hand-built arrays.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

import sparsedsl as sd
from sparsedsl.core.errors import SdslInputError
from sparsedsl.runtime.convert import InputBinder, bind_value
from sparsedsl.runtime.tensors import CSR, Dense

SPMM = """input  A: csr<f32>[N, N]
input  X: dense<f32>[N, F]
output Y: dense<f32>[N, F]
Y[i, f] = sum[j] A[i, j] * X[j, f]
"""


@pytest.fixture(scope="module")
def spmm():
    return sd.loads(SPMM, name="spmm").compile("ref")


def csr32(n: int = 20, density: float = 0.2, seed: int = 0) -> sp.csr_array:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n, n)) < density) * rng.standard_normal((n, n))
    return sp.csr_array(dense.astype(np.float32))


def features(n: int = 20, f: int = 4, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, f)).astype(np.float32)


def snapshot(m) -> tuple:
    return m.data.copy(), m.indices.copy(), m.indptr.copy()


def assert_unchanged(m, before) -> None:
    for old, new in zip(before, (m.data, m.indices, m.indptr)):
        np.testing.assert_array_equal(old, new)


def raw_csr(data, indices, indptr, shape, dtype=np.float32) -> sp.csr_array:
    """A scipy CSR holding exactly these arrays (scipy's constructor would not keep malformed ones)."""
    m = sp.csr_array(np.zeros(shape, dtype=dtype))
    m.data = np.asarray(data, dtype=dtype)
    m.indices = np.asarray(indices, dtype=np.int32)
    m.indptr = np.asarray(indptr, dtype=np.int32)
    return m


# ---------------------------------------------------------------- the fast path itself

def test_canonical_scipy_and_numpy_inputs_are_bound_without_copies(spmm):
    A, X = csr32(), features()
    bound, sizes = spmm.bind(A=A, X=X)
    assert sizes == {"N": 20, "F": 4}
    assert isinstance(bound["A"], CSR) and isinstance(bound["X"], Dense)
    assert bound["A"].indices is A.indices and bound["A"].indptr is A.indptr and bound["A"].data is A.data
    assert bound["X"].values is X
    np.testing.assert_allclose(spmm(A=A, X=X).Y, A.toarray() @ X, rtol=1e-5, atol=1e-5)


def test_binder_and_bind_inputs_agree_with_the_general_path(spmm):
    A, X = csr32(seed=3), features(seed=4)
    fast, sizes = spmm.bind(A=A, X=X)
    for name, value in (("A", A), ("X", X)):
        decl = spmm.ir.decl(name)
        slow = bind_value(value, name, decl.type, {}, {})
        assert type(slow) is type(fast[name])
        for got, want in zip(fast[name].to_presence(), slow.to_presence()):
            np.testing.assert_array_equal(got, want)


def test_warm_calls_repeat_the_same_answer(spmm):
    A, X = csr32(seed=5), features(seed=6)
    want = A.toarray() @ X
    for _ in range(3):
        np.testing.assert_allclose(spmm(A=A, X=X).Y, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(spmm(A, X).Y, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- what the fast path must hand to the general path

def test_unsorted_indices_are_canonicalized_into_a_copy(spmm):
    # row 0 holds columns 3, 1 (unsorted); row 1 holds column 2
    A = raw_csr([1.0, 2.0, 3.0], [3, 1, 2], [0, 2, 3, 3, 3], (4, 4))
    before = snapshot(A)
    bound, _ = spmm.bind(A=A, X=features(4))
    assert list(bound["A"].indices) == [1, 3, 2]
    assert list(bound["A"].data) == [2.0, 1.0, 3.0]
    assert_unchanged(A, before)
    np.testing.assert_allclose(spmm(A=A, X=features(4)).Y, A.toarray() @ features(4), rtol=1e-6)


def test_duplicate_indices_are_summed(spmm):
    A = raw_csr([1.0, 2.0, 4.0], [1, 1, 0], [0, 2, 3, 3], (3, 3))
    before = snapshot(A)
    bound, _ = spmm.bind(A=A, X=features(3))
    assert list(bound["A"].indices) == [1, 0] and list(bound["A"].data) == [3.0, 4.0]
    assert_unchanged(A, before)


def test_a_stale_has_canonical_format_flag_is_not_trusted(spmm):
    A = csr32(6, 0.6, seed=7)
    assert A.has_canonical_format  # scipy computes and caches the flag
    row = next(r for r in range(6) if A.indptr[r + 1] - A.indptr[r] >= 2)
    lo = A.indptr[row]
    A.indices[[lo, lo + 1]] = A.indices[[lo + 1, lo]]  # in place: scipy does not notice
    A.data[[lo, lo + 1]] = A.data[[lo + 1, lo]]
    assert A.has_canonical_format, "scipy's cached flag is stale, which is what this test is about"
    bound, _ = spmm.bind(A=A, X=features(6))
    assert bound["A"].is_canonical() and bound["A"].indices is not A.indices
    X = features(6)
    np.testing.assert_allclose(spmm(A=A, X=X).Y, A.toarray() @ X, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("indices, indptr, message", [
    ([0, 5], [0, 1, 2, 2], "out of range"),          # column 5 of a 3-column matrix
    ([0, -1], [0, 1, 2, 2], "out of range"),         # a negative column
    ([0, 1], [0, 2, 1, 2], "decreases"),             # indptr goes down
    ([0, 1], [1, 1, 2, 2], "indptr[0]"),             # indptr does not start at 0
    ([0, 1], [0, 1, 2], "length"),                   # indptr one short
])
def test_malformed_structure_is_an_error_naming_the_input(spmm, indices, indptr, message):
    A = raw_csr([1.0, 2.0], indices, indptr, (3, 3))
    before = snapshot(A)
    with pytest.raises(SdslInputError, match="input A") as info:
        spmm(A=A, X=features(3))
    assert message in info.value.message
    assert info.value.span is not None and info.value.span.line == 1
    assert_unchanged(A, before)


def test_spare_capacity_after_indptr_end_is_ignored(spmm):
    # scipy tolerates storage beyond indptr[-1]; it is not part of the matrix
    A = raw_csr([1.0, 2.0, 9.0, 9.0], [0, 2, 1, 1], [0, 1, 2, 2], (3, 3))
    X = features(3)
    want = np.array([[1.0, 0, 0], [0, 0, 2.0], [0, 0, 0]], dtype=np.float32) @ X
    np.testing.assert_allclose(spmm(A=A, X=X).Y, want, rtol=1e-6)
    # a bsr likewise (it was refused: "indptr[-1] is 2 but 3 entries are stored"); the room's block column
    # 7 is out of range, so reading it would be an error
    B = sp.bsr_array((4, 4), blocksize=(2, 1), dtype=np.float32)
    B.indptr = np.array([0, 1, 2], dtype=np.int32)
    B.indices = np.array([0, 2, 7], dtype=np.int32)
    B.data = np.arange(1.0, 7.0, dtype=np.float32).reshape(3, 2, 1)
    X4 = features(4)
    want = np.array([[1.0, 0, 0, 0], [2.0, 0, 0, 0], [0, 0, 3.0, 0], [0, 0, 4.0, 0]], dtype=np.float32) @ X4
    np.testing.assert_allclose(spmm(A=B, X=X4).Y, want, rtol=1e-6)
    assert B.indices.tolist() == [0, 2, 7]


def test_other_dtypes_and_index_widths_take_the_general_path(spmm):
    A = csr32(seed=8)
    X = features(seed=9)
    want = A.toarray() @ X
    A64 = sp.csr_array((A.data.astype(np.float64), A.indices, A.indptr), shape=A.shape)   # cast f64 -> f32
    Aidx = sp.csr_array((A.data, A.indices.astype(np.int64), A.indptr.astype(np.int64)), shape=A.shape)
    mixed = raw_csr(A.data, A.indices, A.indptr, A.shape)
    mixed.indptr = mixed.indptr.astype(np.int64)                                          # int64 indptr, int32 indices
    for value in (A64, Aidx, mixed, A.tocsc(), A.tocoo(), sp.csr_matrix(A)):
        np.testing.assert_allclose(spmm(A=value, X=X).Y, want, rtol=1e-5, atol=1e-5)
    # a float64 X is cast; a strided view and a list work as before
    np.testing.assert_allclose(spmm(A=A, X=X.astype(np.float64)).Y, want, rtol=1e-5, atol=1e-5)
    wide = np.repeat(X, 2, axis=1)
    np.testing.assert_allclose(spmm(A=A, X=wide[:, ::2]).Y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(spmm(A=A, X=X.tolist()).Y, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(SdslInputError, match="input X"):
        spmm(A=A, X=X.astype(np.complex64))
    with pytest.raises(SdslInputError, match="input A"):
        spmm(A=sp.csr_array(A.toarray().astype(np.complex64)), X=X)


def test_sizes_are_checked_across_inputs_and_inside_one(spmm):
    with pytest.raises(SdslInputError, match="size N"):
        spmm(A=csr32(20), X=features(19))
    rect = sp.csr_array(np.eye(4, 5, dtype=np.float32))
    with pytest.raises(SdslInputError, match="size N"):
        spmm(A=rect, X=features(4))
    with pytest.raises(SdslInputError, match="rank"):
        spmm(A=csr32(4), X=features(4)[:, 0])


def test_unknown_and_missing_inputs(spmm):
    with pytest.raises(SdslInputError, match="unknown input 'B'"):
        spmm(A=csr32(), X=features(), B=1)
    with pytest.raises(SdslInputError, match="missing input X"):
        spmm(A=csr32())


def test_pattern_input_keeps_stored_zeros_as_true():
    prog = sd.loads("input A: csr<bool>[N, N]\noutput d: dense<i64>[N]\nd[i] = count[j] A[i, j]\n")
    A = raw_csr([0.0, 2.0, 0.0], [0, 1, 2], [0, 2, 3, 3], (3, 3))
    np.testing.assert_array_equal(prog.compile("ref")(A=A).d, [2, 1, 0])
    bound, _ = InputBinder(prog.ir().program)({"A": A})
    assert bound["A"].dtype == "bool" and bound["A"].data.all()


# ---------------------------------------------------------------- property: fast path == scipy's view of the value

@st.composite
def csr_structures(draw):
    """Random CSR storage, sometimes with unsorted or duplicate column indices and empty rows."""
    rows = draw(st.integers(0, 6))
    cols = draw(st.integers(1, 6))
    canonical = draw(st.booleans())
    indices, counts = [], []
    for _ in range(rows):
        if canonical:
            row = sorted(draw(st.sets(st.integers(0, cols - 1), max_size=min(4, cols))))
        else:
            row = draw(st.lists(st.integers(0, cols - 1), max_size=4))
        indices.extend(row)
        counts.append(len(row))
    indptr = np.concatenate(([0], np.cumsum(counts, dtype=np.int64))).astype(np.int32)
    data = draw(st.lists(st.integers(-3, 3), min_size=len(indices), max_size=len(indices)))
    return raw_csr(np.array(data, dtype=np.float32), indices, indptr, (rows, cols))


@given(csr_structures())
def test_bound_csr_equals_scipys_summed_matrix(A):
    prog = InputBinder(sd.loads("input A: csr<f32>[M, K]\noutput s: dense<f32>[M]\ns[i] = sum[j] A[i, j]\n")
                       .ir().program)
    before = snapshot(A)
    bound, sizes = prog({"A": A})
    t = bound["A"]
    assert sizes == {"M": A.shape[0], "K": A.shape[1]}
    assert t.is_canonical()
    oracle = sp.coo_array(A, copy=True)
    oracle.sum_duplicates()
    present = np.zeros(A.shape, dtype=bool)
    present[tuple(oracle.coords)] = True
    values, got_present = t.to_presence()
    np.testing.assert_array_equal(got_present, present)
    np.testing.assert_array_equal(values, A.toarray())
    assert_unchanged(A, before)
