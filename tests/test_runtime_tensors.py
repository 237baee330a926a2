"""Runtime containers and dtypes: presence views, canonical form, validation, bf16 rounding, input casting.

Oracles: hand-written dense matrices, scipy.sparse (sum_duplicates / toarray), torch's bfloat16 conversion.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparsedsl.core.errors import SdslInputError
from sparsedsl.runtime.dtypes import (
    cast_input, dtype_of_numpy, dtype_of_torch, index_dtype, infer_dtype, round_bf16, torch_dtype,
)
from sparsedsl.runtime.tensors import (
    BSR, COO, CSC, CSR, NM, BlockDiag, Dense, from_presence,
)
from sparsedsl.tensor_ir.types import DTYPES, NUMPY_DTYPE, Format, TensorType

# a 3x4 matrix used throughout: row 1 empty, an explicit stored zero at (2, 3)
M = np.array([[1.0, 0.0, 2.0, 0.0],
              [0.0, 0.0, 0.0, 0.0],
              [0.0, 3.0, 0.0, 0.0]])
M_PRESENT = np.array([[True, False, True, False],
                      [False, False, False, False],
                      [False, True, False, True]])


def csr_of_m() -> CSR:
    return CSR([0, 2, 2, 4], [0, 2, 1, 3], [1.0, 2.0, 3.0, 0.0], (3, 4))


# ---------------------------------------------------------------- dtypes

def test_round_bf16_matches_torch():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.standard_normal(2000).astype(np.float32) * np.float32(1e3),
        rng.standard_normal(200).astype(np.float32) * np.float32(1e-39),  # subnormals
        np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1.0, 65504.0], dtype=np.float32),
    ])
    expect = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    got = round_bf16(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expect)


def test_round_bf16_ties_to_even_and_nan():
    # 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even mantissa (1.0)
    assert round_bf16(np.float32(1 + 2**-8)) == np.float32(1.0)
    # 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even)
    assert round_bf16(np.float32(1 + 3 * 2**-8)) == np.float32(1 + 2**-6)
    nan_low_payload = np.array([0x7F800001, 0xFF800001, 0x7FC00000], dtype=np.uint32).view(np.float32)
    out = round_bf16(nan_low_payload)
    assert np.isnan(out).all()
    assert np.signbit(out).tolist() == [False, True, False]
    src = nan_low_payload.copy()
    round_bf16(nan_low_payload)
    np.testing.assert_array_equal(src.view(np.uint32), nan_low_payload.view(np.uint32))


def test_dtype_tables():
    for name in DTYPES:
        assert dtype_of_torch(torch_dtype(name)) == name
    assert dtype_of_torch(torch.bfloat16) == "bf16"
    assert dtype_of_torch(torch.uint8) is None
    assert dtype_of_numpy(np.float32) == "f32"
    assert dtype_of_numpy(np.uint8) is None
    assert infer_dtype(np.uint16) == "i64"
    assert infer_dtype(np.complex64) is None
    assert index_dtype(10, 2**31 - 1) == np.int32
    assert index_dtype(2**31) == np.int64


@pytest.mark.parametrize("src, dtype, expect", [
    (np.array([1.5, -2.25]), "f32", np.array([1.5, -2.25], dtype=np.float32)),
    (np.array([1.5, 2.0], dtype=np.float32), "f64", np.array([1.5, 2.0])),
    (np.array([1.0, 3.0]), "bf16", np.array([1.0, 3.0], dtype=np.float32)),
    (np.array([1, -128, 127]), "i8", np.array([1, -128, 127], dtype=np.int8)),
    (np.array([1, 2], dtype=np.uint64), "i32", np.array([1, 2], dtype=np.int32)),
    (np.array([3, 4], dtype=np.int8), "f16", np.array([3, 4], dtype=np.float16)),
    (np.array([True, False]), "i32", np.array([1, 0], dtype=np.int32)),
    (np.array([True, False]), "f64", np.array([1.0, 0.0])),
    (np.array([0, 1]), "bool", np.array([False, True])),
    (np.array([], dtype=np.int64), "i8", np.array([], dtype=np.int8)),
])
def test_cast_input_allowed(src, dtype, expect):
    before = src.copy()
    out = cast_input(src, dtype, "A")
    assert out.dtype == NUMPY_DTYPE[dtype]
    np.testing.assert_array_equal(out, expect)
    np.testing.assert_array_equal(src, before)


@pytest.mark.parametrize("src, dtype, fragment", [
    (np.array([1.0, 2.0]), "i32", "cannot convert values of type float64 to the declared dtype i32"),
    (np.array([1.0]), "bool", "cannot convert values of type float64"),
    (np.array([200]), "i8", "integer values [200, 200] do not fit the declared dtype i8"),
    (np.array([2**40]), "i32", "do not fit the declared dtype i32"),
    (np.array([-1]), "bool", "do not fit the declared dtype bool"),
    (np.array([1 + 2j]), "f64", "complex128"),
    (np.array(["a"]), "f32", "<U1"),
    (np.array([object()]), "f32", "object"),
])
def test_cast_input_refused(src, dtype, fragment):
    with pytest.raises(SdslInputError) as info:
        cast_input(src, dtype, "A")
    assert info.value.message.startswith("input A: ")
    assert fragment in info.value.message


def test_cast_input_bf16_rounds():
    out = cast_input(np.array([1 + 2**-8 + 2**-12]), "bf16", "x")
    assert out.dtype == np.float32 and out[0] == np.float32(1 + 2**-7)


# ---------------------------------------------------------------- presence views

def test_csr_presence_and_attributes():
    a = csr_of_m()
    assert (a.dtype, a.shape, a.format, a.nnz) == ("f64", (3, 4), Format("csr"), 4)
    assert a.indptr.dtype == np.int32 and a.indices.dtype == np.int32
    values, present = a.to_presence()
    np.testing.assert_array_equal(values, M)
    np.testing.assert_array_equal(present, M_PRESENT)
    assert values.dtype == np.float64 and present.dtype == bool


def test_csc_coo_dense_presence():
    csc = CSC([0, 1, 2, 3, 4], [0, 2, 0, 2], [1.0, 3.0, 2.0, 0.0], (3, 4))
    coo = COO([[0, 0, 2, 2], [0, 2, 1, 3]], [1.0, 2.0, 3.0, 0.0], (3, 4))
    for t in (csc, coo):
        values, present = t.to_presence()
        np.testing.assert_array_equal(values, M)
        np.testing.assert_array_equal(present, M_PRESENT)
    d = Dense(M)
    values, present = d.to_presence()
    np.testing.assert_array_equal(values, M)
    assert present.all() and d.nnz == 12
    s = Dense(np.float32(2.5))
    assert s.shape == () and s.dtype == "f32" and s.item() == 2.5
    assert s.to_presence()[1].shape == () and bool(s.to_presence()[1])


def test_csr_rank1_is_a_sparse_vector():
    v = CSR([0, 2], [1, 4], [5, 6], (6,))
    values, present = v.to_presence()
    np.testing.assert_array_equal(values, [0, 5, 0, 0, 6, 0])
    np.testing.assert_array_equal(present, [False, True, False, False, True, False])
    assert v.dtype == "i64"
    v.validate("v")


def test_coo_nd():
    coords = np.array([[0, 1, 1], [2, 0, 0], [1, 0, 3]])
    t = COO(coords, np.array([1, 2, 3], dtype=np.int32), (2, 3, 4))
    values, present = t.to_presence()
    expect = np.zeros((2, 3, 4), np.int32)
    expect[0, 2, 1], expect[1, 0, 0], expect[1, 0, 3] = 1, 2, 3
    np.testing.assert_array_equal(values, expect)
    np.testing.assert_array_equal(present, expect != 0)


def test_bsr_presence_includes_stored_zeros():
    blocks = np.array([[[1, 0], [0, 2]], [[0, 0], [0, 0]]], dtype=np.float32)
    t = BSR([0, 1, 2], [1, 0], blocks, (4, 4))
    assert t.blocksize == (2, 2) and t.format == Format("bsr", (2, 2)) and t.nnz == 8
    values, present = t.to_presence()
    oracle = sp.bsr_array((blocks, [1, 0], [0, 1, 2]), shape=(4, 4)).toarray()
    np.testing.assert_array_equal(values, oracle)
    expect_present = np.zeros((4, 4), bool)
    expect_present[0:2, 2:4] = True
    expect_present[2:4, 0:2] = True
    np.testing.assert_array_equal(present, expect_present)


def test_blockdiag_presence():
    blocks = np.arange(12, dtype=np.float64).reshape(3, 2, 2)
    t = BlockDiag(blocks)
    assert t.shape == (6, 6) and t.format == Format("blockdiag", (3,)) and t.nnz == 12
    values, present = t.to_presence()
    import scipy.linalg

    np.testing.assert_array_equal(values, scipy.linalg.block_diag(*blocks))
    np.testing.assert_array_equal(present, scipy.linalg.block_diag(*np.ones((3, 2, 2), bool)))


def test_nm_storage_and_presence():
    # 2:4 on a 2x6 matrix: groups are columns 0-3 and the short group 4-5
    values = np.array([[[1, 2], [3, 0]], [[0, 0], [4, 5]]], dtype=np.float32)
    offsets = np.array([[[0, 3], [1, -1]], [[-1, -1], [0, 1]]], dtype=np.int8)
    t = NM(values, offsets, (2, 6), 2, 4)
    t.validate("W")
    assert t.nnz == 5 and t.groups == 2 and t.format == Format("nm", (2, 4))
    v, p = t.to_presence()
    np.testing.assert_array_equal(v, [[1, 0, 0, 2, 0, 3], [0, 0, 0, 0, 4, 5]])
    np.testing.assert_array_equal(p, [[1, 0, 0, 1, 0, 1], [0, 0, 0, 0, 1, 1]])


def test_nm_from_dense():
    w = np.array([[0.0, 1.0, 0.0, 2.0, 3.0], [4.0, 0.0, 0.0, 0.0, 0.0]])
    t = NM.from_dense(w, 2, 4)
    assert t.values.shape == (2, 2, 2) and t.offsets.dtype == np.int8
    np.testing.assert_array_equal(t.offsets, [[[1, 3], [0, -1]], [[0, -1], [-1, -1]]])
    np.testing.assert_array_equal(t.to_presence()[0], w)
    with pytest.raises(SdslInputError, match=r"NM: row 0 has 2 stored entries in columns 0\.\.3; nm\(1, 4\)"):
        NM.from_dense(w, 1, 4)


def test_containers_are_immutable_and_share_user_arrays():
    data = np.array([1.0, 2.0])
    indices = np.array([0, 1], dtype=np.int32)
    indptr = np.array([0, 1, 2], dtype=np.int32)
    t = CSR(indptr, indices, data, (2, 2))
    assert t.data is data and t.indices is indices and t.indptr is indptr
    with pytest.raises(AttributeError):
        t.data = np.zeros(2)


def test_constructor_casts_only_into_copies():
    data = np.array([1.0, 2.0])
    t = CSR([0, 1, 2], [0, 1], data, (2, 2), dtype="f32")
    assert t.data.dtype == np.float32 and data.dtype == np.float64
    with pytest.raises(SdslInputError, match="cannot convert values of type float64 to the declared dtype i32"):
        CSR([0, 1, 2], [0, 1], data, (2, 2), dtype="i32")


# ---------------------------------------------------------------- canonical form

def test_canonical_sorts_and_sums_like_scipy():
    indptr = np.array([0, 4, 4, 7])
    indices = np.array([3, 0, 3, 1, 2, 2, 0])
    data = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
    t = CSR(indptr, indices, data, (3, 4))
    t.validate("A")
    assert not t.is_canonical()
    c = t.canonical()
    assert c.is_canonical()
    oracle = sp.csr_array((data.copy(), indices.copy(), indptr.copy()), shape=(3, 4))
    oracle.sum_duplicates()
    np.testing.assert_array_equal(c.indptr, oracle.indptr)
    np.testing.assert_array_equal(c.indices, oracle.indices)
    np.testing.assert_array_equal(c.data, oracle.data)
    np.testing.assert_array_equal(indices, [3, 0, 3, 1, 2, 2, 0])  # the original is untouched


def test_canonical_coo_and_bsr():
    coo = COO([[1, 0, 1, 0], [0, 1, 0, 1]], [1, 2, 3, 4], (2, 2))
    assert not coo.is_canonical()
    c = coo.canonical()
    np.testing.assert_array_equal(c.coords, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(c.data, [6, 4])
    blocks = np.ones((3, 1, 2))
    b = BSR([0, 3], [1, 0, 1], blocks, (1, 4))
    assert not b.is_canonical()
    cb = b.canonical()
    np.testing.assert_array_equal(cb.indices, [0, 1])
    np.testing.assert_array_equal(cb.to_presence()[0], [[1, 1, 2, 2]])


# ---------------------------------------------------------------- from_presence

FORMATS = [Format("dense"), Format("csr"), Format("csc"), Format("coo"), Format("nm", (2, 4)),
           Format("bsr", ("BM", 2)), Format("blockdiag", ("NB",))]


@given(st.integers(0, 2**32 - 1), st.sampled_from(FORMATS), st.sampled_from(["f32", "i32", "bool", "bf16", "f64"]))
def test_from_presence_round_trip(seed, fmt, dtype):
    rng = np.random.default_rng(seed)
    rows, cols = 4, 8
    present = rng.random((rows, cols)) < 0.3
    if fmt.name == "nm":  # keep at most 2 per group of 4
        for r in range(rows):
            for g in range(0, cols, 4):
                on = np.flatnonzero(present[r, g:g + 4])
                present[r, g + on[2:]] = False
    if fmt.name == "blockdiag":
        present &= np.kron(np.eye(2, dtype=bool), np.ones((2, 4), bool))
    # small integers: exact in every dtype, so the oracle needs no rounding
    values = rng.integers(0, 10, size=(rows, cols)).astype(NUMPY_DTYPE[dtype])
    t = from_presence(values, present, TensorType(dtype, ("M", "N"), fmt), {"BM": 2, "NB": 2})
    assert t.format.name == fmt.name and t.dtype == dtype and t.shape == (rows, cols)
    t.validate("X")
    assert t.is_canonical()
    got_v, got_p = t.to_presence()
    if fmt.name == "dense":
        expect_p = np.ones_like(present)
    elif fmt.name == "bsr":  # every block holding a present entry is stored whole
        blk = present.reshape(2, 2, 4, 2).any(axis=(1, 3))
        expect_p = np.kron(blk, np.ones((2, 2), bool)).astype(bool)
    elif fmt.name == "blockdiag":
        expect_p = np.kron(np.eye(2, dtype=bool), np.ones((2, 4), bool))
    else:
        expect_p = present
    np.testing.assert_array_equal(got_p, expect_p)
    np.testing.assert_array_equal(got_v, np.where(present, values, 0))
    assert got_v.dtype == NUMPY_DTYPE[dtype]


def test_from_presence_dense_fill_and_called_on_any_class():
    values = np.array([1.0, 2.0, 3.0])
    present = np.array([True, False, True])
    t = CSR.from_presence(values, present, TensorType("f64", ("N",), Format("dense")), {}, fill=np.inf)
    assert isinstance(t, Dense)
    np.testing.assert_array_equal(t.values, [1.0, np.inf, 3.0])
    v = Dense.from_presence(values, present, TensorType("f64", ("N",), Format("csr")), {})
    assert isinstance(v, CSR) and v.shape == (3,)
    np.testing.assert_array_equal(v.indices, [0, 2])


def test_from_presence_errors():
    present = np.eye(4, dtype=bool)
    present[0, 3] = True
    with pytest.raises(SdslInputError, match=r"entry \(0, 3\) lies outside the diagonal blocks of blockdiag\(2\)"):
        from_presence(np.ones((4, 4)), present, TensorType("f32", (4, 4), Format("blockdiag", (2,))), {})
    with pytest.raises(SdslInputError, match=r"row 0 has 3 stored entries in columns 0\.\.3; nm\(2, 4\) allows"):
        from_presence(np.ones((1, 4)), np.array([[1, 1, 1, 0]], bool),
                      TensorType("f32", (1, 4), Format("nm", (2, 4))), {})
    with pytest.raises(SdslInputError, match="format parameter BM of bsr"):
        from_presence(np.ones((4, 4)), present, TensorType("f32", (4, 4), Format("bsr", ("BM", 2))), {})


def test_index_dtype_switches_to_int64():
    # a wide matrix whose column count overflows int32 (nothing of that size is allocated)
    n = 2**31 + 5
    coo = COO([[0, 1], [1, n - 1]], [1.0, 2.0], (2, n))
    t = CSR.from_coo(coo)
    assert t.indptr.dtype == np.int64 and t.indices.dtype == np.int64
    assert t.indices.tolist() == [1, n - 1]
    t.validate("A")
    assert CSC.from_coo(COO([[0, n - 1], [1, 0]], [1.0, 2.0], (n, 2))).indices.dtype == np.int64
    small = CSR.from_coo(COO([[0], [1]], [1.0], (2, 3)))
    assert small.indices.dtype == np.int32
    mixed = CSR(np.array([0, 1], dtype=np.int64), np.array([0], dtype=np.int32), [1.0], (1, 1))
    assert mixed.indptr.dtype == mixed.indices.dtype == np.int64


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("make, fragment", [
    (lambda: CSR([0, 2, 1, 3], [0, 1, 2], [1, 2, 3], (3, 3)), "indptr decreases at position 2 (2 -> 1)"),
    (lambda: CSR([0, 1, 2], [0, 1], [1, 2], (3, 3)), "indptr has length 3, expected 4"),
    (lambda: CSR([1, 1, 2, 2], [0, 1], [1, 2], (3, 3)), "indptr[0] is 1, expected 0"),
    (lambda: CSR([0, 1, 2, 2], [0, 1], [1, 2, 3], (3, 3)), "2 indices but 3 values"),
    (lambda: CSR([0, 1, 2, 2], [0, 1, 2], [1, 2, 3], (3, 3)), "indptr[-1] is 2 but 3 entries are stored"),
    (lambda: CSR([0, 1, 2, 2], [0, 3], [1, 2], (3, 3)), "column index 3 is out of range [0, 3)"),
    (lambda: CSR([0, 1, 2, 2], [0, -1], [1, 2], (3, 3)), "column index -1 is out of range [0, 3)"),
    (lambda: CSC([0, 1, 2, 2], [0, 5], [1, 2], (3, 3)), "row index 5 is out of range [0, 3)"),
    (lambda: COO([[0, 3], [0, 0]], [1, 2], (3, 3)), "coordinate of dimension 0 3 is out of range"),
    (lambda: COO([[0, 1]], [1, 2], (3, 3)), "coords have shape (1, 2), expected (2, 2)"),
    (lambda: BSR([0, 1], [0], np.ones((1, 2, 2)), (3, 4)), "shape (3, 4) is not divisible by the block size (2, 2)"),
    (lambda: BSR([0, 1, 1], [2], np.ones((1, 2, 2)), (4, 4)), "block column index 2 is out of range [0, 2)"),
    (lambda: BlockDiag(np.ones((2, 2, 2)), (4, 5)), "shape (4, 5) is not divisible by the number of blocks"),
    (lambda: NM(np.zeros((1, 1, 2)), np.array([[[-1, 0]]]), (1, 4), 2, 4), "an empty slot (offset -1) precedes"),
    (lambda: NM(np.zeros((1, 1, 2)), np.array([[[0, 4]]]), (1, 4), 2, 4), "offsets must lie in [-1, 4)"),
    (lambda: NM(np.zeros((1, 2, 2)), np.array([[[0, 1], [2, -1]]]), (1, 6), 2, 4), "past the last column 5"),
    (lambda: NM(np.zeros((1, 1, 2)), np.zeros((1, 1, 2), int), (1, 6), 2, 4), "must both have shape"),
])
def test_validate_rejects_bad_structure(make, fragment):
    with pytest.raises(SdslInputError) as info:
        make().validate("A")
    assert info.value.message.startswith("input A: ")
    assert fragment in info.value.message


def test_index_arrays_must_be_integers():
    with pytest.raises(SdslInputError, match="indices must be an integer array, got float64"):
        CSR([0, 1], [0.5], [1.0], (1, 2))


# ---------------------------------------------------------------- to_csr (the numba kernels' layout)

@given(st.integers(0, 4), st.integers(0, 4), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_block_formats_to_csr_keep_every_stored_entry_in_row_order(nbr, nbc, bm, bn, seed):
    """BSR and BlockDiag place their entries row by row without sorting; the rows come out sorted and every
    entry of a stored block is present (zeros included), as scipy's own conversion keeps them."""
    rng = np.random.default_rng(seed)
    keep = rng.random((nbr, nbc)) < 0.5
    dense = rng.integers(-2, 3, size=(nbr * bm, nbc * bn)).astype(np.float64)  # zeros inside blocks too
    blocks_at = sp.csr_array(keep.astype(np.float64))
    blocks = np.stack([dense[r * bm:(r + 1) * bm, c * bn:(c + 1) * bn]
                       for r in range(nbr) for c in blocks_at.indices[blocks_at.indptr[r]:blocks_at.indptr[r + 1]]]
                      ) if blocks_at.nnz else np.zeros((0, bm, bn))
    bsr = BSR(blocks_at.indptr, blocks_at.indices, blocks, (nbr * bm, nbc * bn))
    scipy_bsr = sp.bsr_array((blocks, blocks_at.indices, blocks_at.indptr), shape=bsr.shape)
    for tensor, want in ((bsr, sp.csr_array(scipy_bsr)),
                         (BlockDiag(blocks[:min(len(blocks), 3)]) if len(blocks) else None, None)):
        if tensor is None:
            continue
        if want is None:
            want = sp.csr_array(sp.block_diag(list(tensor.blocks)))
        csr = tensor.to_csr()
        assert isinstance(csr, CSR) and csr.is_canonical()
        assert csr.nnz == tensor.nnz
        np.testing.assert_array_equal(np.diff(csr.indptr), np.diff(want.indptr))
        np.testing.assert_array_equal(csr.indices, want.indices)
        np.testing.assert_array_equal(csr.data, want.data)


def test_to_csr_of_every_format_equals_its_coordinates():
    """Unsorted and duplicate BSR blocks are summed first; CSC, COO and NM go through their coordinates."""
    bsr = BSR([0, 2, 3], [1, 1, 0], np.arange(12, dtype=np.float64).reshape(3, 2, 2), (4, 4))  # block (0,1) twice
    want = np.zeros((4, 4))
    want[0:2, 2:4] = np.arange(4).reshape(2, 2) + np.arange(4, 8).reshape(2, 2)
    want[2:4, 0:2] = np.arange(8, 12).reshape(2, 2)
    for tensor in (bsr, CSC([0, 1, 1, 3, 3], [2, 0, 2], [3.0, 2.0, 0.0], (3, 4)),
                   COO([[2, 0, 2, 0], [3, 2, 1, 0]], [0.0, 2.0, 3.0, 1.0], (3, 4)),
                   NM.from_dense(M, 2, 4), csr_of_m()):
        csr = tensor.to_csr()
        assert csr.is_canonical()
        values, present = csr.to_presence()
        want_values, want_present = tensor.to_presence()
        np.testing.assert_array_equal(values, want_values)
        np.testing.assert_array_equal(present, want_present)
    np.testing.assert_array_equal(bsr.to_csr().to_presence()[0], want)
