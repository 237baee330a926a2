"""bind_inputs / to_user: user values (scipy, numpy, torch, networkx, containers) <-> containers.

Oracles: scipy's toarray() and its stored coordinates (after sum_duplicates on a copy), torch's to_dense(),
networkx's edge lists, hand-computed values. Inputs are hashed before and after to prove they are untouched.
"""
from __future__ import annotations

import hashlib

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparsedsl.core.errors import SdslInputError, Source, Span
from sparsedsl.runtime.convert import bind_inputs, to_user
from sparsedsl.runtime.tensors import BSR, COO, CSC, CSR, NM, BlockDiag, Dense
from sparsedsl.tensor_ir import nodes
from sparsedsl.tensor_ir.types import DTYPES, NUMPY_DTYPE, Format, TensorType


def make_program(*decls: tuple) -> nodes.Program:
    """A program with the given inputs, declaration k on line k + 1 of a fake source."""
    lines, out = [], []
    for k, d in enumerate(decls):
        name, ttype = d[0], d[1]
        default = nodes.Lit(d[2], ttype.dtype) if len(d) > 2 else None
        lines.append(f"input {name}: {ttype}" + (f" = {d[2]}" if default else ""))
        out.append((name, ttype, default, k + 1))
    src = Source("prog.sdsl", "\n".join(lines) + "\n")
    ds = tuple(nodes.Decl(n, t, "input", default=dv, span=Span(src, line, 1, line, 6)) for n, t, dv, line in out)
    return nodes.Program("prog", ds, (), span=Span(src, 1, 1))


def T(fmt: str, dtype: str, *shape, params=()) -> TensorType:
    return TensorType(dtype, tuple(shape), Format(fmt, tuple(params)))


def bind1(value, ttype: TensorType):
    bound, sizes = bind_inputs(make_program(("A", ttype)), {"A": value})
    return bound["A"], sizes


def scipy_oracle(m) -> tuple[np.ndarray, np.ndarray]:
    """(dense values, presence mask) of a scipy matrix from scipy's own canonical stored coordinates."""
    c = sp.coo_array(m, copy=True)
    c.sum_duplicates()
    present = np.zeros(c.shape, dtype=bool)
    present[tuple(c.coords)] = True
    return np.asarray(m.toarray()), present


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()


def scipy_digest(m) -> str:
    if m.format in ("csr", "csc", "bsr"):
        return digest(m.indptr, m.indices, m.data)
    if m.format == "coo":
        return digest(*m.coords, m.data)
    return digest(m.toarray())


def unsorted_csr() -> sp.csr_array:
    # row 0: columns 3, 0, 3 (unsorted, a duplicate); row 1 empty; row 2: 2, 1
    m = sp.csr_array((np.array([1.0, 2.0, 4.0, 8.0, 16.0]), np.array([3, 0, 3, 2, 1]), np.array([0, 3, 3, 5])),
                     shape=(3, 4))
    assert not m.has_sorted_indices
    return m


SCIPY_KINDS = ["csr", "csc", "coo", "bsr", "lil", "dok", "dia"]


def scipy_value(kind: str, dense: np.ndarray, as_matrix: bool):
    make = {"csr": sp.csr_array, "csc": sp.csc_array, "coo": sp.coo_array, "bsr": sp.bsr_array,
            "lil": sp.lil_array, "dok": sp.dok_array, "dia": sp.dia_array}[kind]
    m = make(dense)
    if as_matrix:
        m = sp.csr_matrix(m).asformat(kind)
    return m


# ---------------------------------------------------------------- scipy in, every format out

@pytest.mark.parametrize("kind", SCIPY_KINDS)
@pytest.mark.parametrize("target", ["csr", "csc", "coo", "dense"])
@pytest.mark.parametrize("as_matrix", [False, True])
def test_scipy_round_trip(kind, target, as_matrix):
    rng = np.random.default_rng(1)
    dense = np.where(rng.random((6, 4)) < 0.4, rng.standard_normal((6, 4)), 0.0)
    dense[2] = 0.0  # an empty row
    m = scipy_value(kind, dense, as_matrix)
    before = scipy_digest(m)
    t, sizes = bind1(m, T(target, "f64", "M", "K"))
    assert sizes == {"M": 6, "K": 4}
    assert t.format.name == target and t.dtype == "f64" and t.is_canonical()
    values, present = t.to_presence()
    oracle_values, oracle_present = scipy_oracle(m)
    np.testing.assert_array_equal(values, oracle_values)
    np.testing.assert_array_equal(present, oracle_present if target != "dense" else np.ones_like(oracle_present))
    assert scipy_digest(m) == before


def test_scipy_unsorted_and_duplicates_are_canonicalized_into_a_copy():
    m = unsorted_csr()
    before = scipy_digest(m)
    t, _ = bind1(m, T("csr", "f64", "M", "N"))
    assert scipy_digest(m) == before and not m.has_sorted_indices
    oracle = m.copy()
    oracle.sum_duplicates()
    np.testing.assert_array_equal(t.indptr, oracle.indptr)
    np.testing.assert_array_equal(t.indices, oracle.indices)
    np.testing.assert_array_equal(t.data, oracle.data)
    coo = sp.coo_array((np.array([1, 2, 3]), (np.array([1, 0, 1]), np.array([1, 1, 1]))), shape=(2, 2))
    before = scipy_digest(coo)
    t, _ = bind1(coo, T("coo", "i64", "M", "N"))
    np.testing.assert_array_equal(t.coords, [[0, 1], [1, 1]])
    np.testing.assert_array_equal(t.data, [2, 4])
    assert scipy_digest(coo) == before


def test_scipy_explicit_zeros_stay_present():
    m = sp.csr_array((np.array([0.0, 5.0]), np.array([1, 0]), np.array([0, 1, 2])), shape=(2, 2))
    t, _ = bind1(m, T("csr", "f32", "M", "N"))
    _, present = t.to_presence()
    np.testing.assert_array_equal(present, [[False, True], [True, False]])


def test_scipy_int64_indices_are_kept_without_copy():
    m = sp.csr_array((np.array([1.0, 2.0]), np.array([1, 0], dtype=np.int64), np.array([0, 1, 2], dtype=np.int64)),
                     shape=(2, 2))
    t, _ = bind1(m, T("csr", "f64", "M", "N"))
    assert t.indices.dtype == np.int64 and t.indptr.dtype == np.int64
    assert np.shares_memory(t.indices, m.indices)


@pytest.mark.parametrize("shape, nnz_rows", [((0, 0), []), ((0, 5), []), ((5, 0), []), ((3, 3), []), ((4, 5), [2])])
@pytest.mark.parametrize("target", ["csr", "csc", "coo", "dense", "bsr", "nm"])
def test_empty_and_single_entry(shape, nnz_rows, target):
    dense = np.zeros(shape)
    for r in nnz_rows:
        dense[r, 3] = 7.0
    params = {"bsr": (1, 1), "nm": (2, 4)}.get(target, ())
    t, _ = bind1(sp.csr_array(dense), T(target, "f32", "M", "N", params=params))
    values, present = t.to_presence()
    assert values.shape == shape and values.dtype == np.float32
    np.testing.assert_array_equal(values, dense)
    if target != "dense":
        np.testing.assert_array_equal(present, dense != 0)
        assert t.nnz == len(nnz_rows)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype(dtype):
    src = {"bool": np.array([[True, False], [False, True]]), "i8": np.array([[1, 0], [0, -7]], np.int8)}.get(
        dtype, np.array([[1, 0], [0, 3]], dtype=NUMPY_DTYPE[dtype] if dtype != "f16" else np.float32))
    for fmt in ("csr", "dense", "coo"):
        t, _ = bind1(sp.csr_array(src), T(fmt, dtype, 2, 2))
        assert t.dtype == dtype
        values, _ = t.to_presence()
        assert values.dtype == NUMPY_DTYPE[dtype]
        np.testing.assert_array_equal(values, src.astype(NUMPY_DTYPE[dtype]))
        out = to_user(t)
        if fmt == "dense":
            assert out.dtype == NUMPY_DTYPE[dtype]
        else:  # scipy.sparse has no float16: f16 comes back as (exact) float32
            assert out.dtype == (np.float32 if dtype == "f16" else NUMPY_DTYPE[dtype])
        np.testing.assert_array_equal(out.toarray() if sp.issparse(out) else out, src)


def test_bool_sparse_declaration_is_a_pattern():
    m = sp.csr_array((np.array([0.0, 2.5, -1.0]), np.array([0, 1, 1]), np.array([0, 2, 3])), shape=(2, 2))
    t, _ = bind1(m, T("csr", "bool", "N", "N"))
    assert t.data.dtype == np.bool_ and t.data.all()
    np.testing.assert_array_equal(t.to_presence()[1], [[True, True], [False, True]])
    # a dense bool declaration reads values: floats are refused, 0/1 integers accepted
    with pytest.raises(SdslInputError, match="cannot convert values of type float64 to the declared dtype bool"):
        bind1(m, T("dense", "bool", "N", "N"))
    t, _ = bind1(np.array([[0, 1], [1, 0]]), T("dense", "bool", "N", "N"))
    np.testing.assert_array_equal(t.values, [[False, True], [True, False]])


# ---------------------------------------------------------------- numpy, Python values, containers

def test_numpy_dense_for_sparse_declaration_stores_nonzeros():
    a = np.array([[0.0, 1.5, 0.0], [np.nan, 0.0, -2.0]])
    before = digest(a)
    t, sizes = bind1(a, T("csr", "f32", "M", "N"))
    assert sizes == {"M": 2, "N": 3}
    np.testing.assert_array_equal(t.indptr, [0, 1, 3])
    np.testing.assert_array_equal(t.indices, [1, 0, 2])
    np.testing.assert_array_equal(t.data, np.array([1.5, np.nan, -2.0], np.float32))
    assert digest(a) == before


def test_numpy_dense_shares_memory_when_no_cast():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t, _ = bind1(a, T("dense", "f32", "M", "N"))
    assert np.shares_memory(t.values, a)
    t, _ = bind1(a, T("dense", "f64", "M", "N"))
    assert not np.shares_memory(t.values, a) and t.values.dtype == np.float64


def test_lists_and_rank1():
    t, sizes = bind1([1, 0, 3], T("csr", "i32", "N"))
    assert isinstance(t, CSR) and t.shape == (3,) and sizes == {"N": 3}
    np.testing.assert_array_equal(t.indices, [0, 2])
    v = sp.coo_array(np.array([0.0, 2.0, 0.0, 4.0]))
    t, _ = bind1(v, T("csr", "f64", "N"))
    np.testing.assert_array_equal(t.to_presence()[0], v.toarray())
    with pytest.raises(SdslInputError, match="cannot read the value as an array"):
        bind1([[1, 2], [3]], T("dense", "f32", "M", "N"))


def test_dense_sparse_to_dense_declaration():
    m = sp.csc_array(np.array([[0.0, 2.0], [3.0, 0.0]]))
    t, _ = bind1(m, T("dense", "f64", "M", "N"))
    assert isinstance(t, Dense)
    np.testing.assert_array_equal(t.values, m.toarray())


def test_scalars_and_defaults():
    prog = make_program(("A", T("dense", "f32", "N")), ("eps", TensorType("f32"), 0.5),
                        ("k", TensorType("i8"), 3), ("flag", TensorType("bool"), False))
    bound, sizes = bind_inputs(prog, {"A": np.ones(4), "k": np.int64(-128)})
    assert bound["eps"].shape == () and bound["eps"].values.dtype == np.float32 and bound["eps"].item() == 0.5
    assert bound["k"].item() == -128 and bound["k"].values.dtype == np.int8
    assert bound["flag"].item() is False
    bound, _ = bind_inputs(prog, {"A": np.ones(4), "eps": 2, "flag": True, "k": torch.tensor(5)})
    assert bound["eps"].item() == 2.0 and bound["flag"].item() is True and bound["k"].item() == 5
    with pytest.raises(SdslInputError) as info:
        bind_inputs(prog, {"A": np.ones(4), "k": 300})
    assert info.value.message == "input k: integer values [300, 300] do not fit the declared dtype i8"
    assert info.value.line == 3
    with pytest.raises(SdslInputError, match="input k: cannot convert values of type float64 to the declared dtype i8"):
        bind_inputs(prog, {"A": np.ones(4), "k": 1.5})
    with pytest.raises(SdslInputError, match=r"input eps: expected a scalar f32, got an array of shape \(2,\)"):
        bind_inputs(prog, {"A": np.ones(4), "eps": np.ones(2)})
    with pytest.raises(SdslInputError, match="input eps: expected a scalar f32, got a value of type str"):
        bind_inputs(prog, {"A": np.ones(4), "eps": "0.1"})
    with pytest.raises(SdslInputError, match="input k: 1180591620717411303424 does not fit the declared dtype i8"):
        bind_inputs(prog, {"A": np.ones(4), "k": 2**70})


def test_containers_as_inputs():
    a = CSR([0, 2, 2], [1, 0], np.array([1.0, 2.0]), (2, 3))  # unsorted row 0
    before = digest(a.indptr, a.indices, a.data)
    t, _ = bind1(a, T("csr", "f32", "M", "N"))
    np.testing.assert_array_equal(t.indices, [0, 1])
    np.testing.assert_array_equal(t.data, np.array([2.0, 1.0], np.float32))
    assert digest(a.indptr, a.indices, a.data) == before
    same, _ = bind1(t, T("csr", "f32", "M", "N"))
    assert same is t
    nm = NM(np.array([[[1.0, 2.0]]]), np.array([[[0, 2]]], np.int8), (1, 4), 2, 4)
    t, sizes = bind1(nm, T("nm", "f64", "M", "N", params=("NN", "MM")))
    assert t is nm and sizes == {"M": 1, "N": 4, "NN": 2, "MM": 4}
    t, _ = bind1(nm, T("csc", "bool", "M", "N"))
    np.testing.assert_array_equal(t.to_presence()[1], [[True, False, True, False]])


# ---------------------------------------------------------------- block formats

def test_bsr_params_bound_from_scipy_bsr_and_reblocked():
    dense = np.zeros((4, 6))
    dense[0, 4] = 1.0
    dense[3, 1] = 2.0
    m = sp.bsr_array(dense, blocksize=(2, 3))
    prog = make_program(("A", T("bsr", "f64", "M", "N", params=("BM", "BN"))),
                        ("B", T("bsr", "f64", "M", "N", params=("BM", "BN"))))
    b = sp.bsr_array(dense, blocksize=(1, 1))
    bound, sizes = bind_inputs(prog, {"A": m, "B": b})
    assert sizes == {"M": 4, "N": 6, "BM": 2, "BN": 3}
    assert bound["A"].blocksize == (2, 3) and bound["B"].blocksize == (2, 3)
    for t in bound.values():
        values, present = t.to_presence()
        np.testing.assert_array_equal(values, dense)
        expect = np.zeros((4, 6), bool)
        expect[0:2, 3:6] = True
        expect[2:4, 0:3] = True
        np.testing.assert_array_equal(present, expect)
    with pytest.raises(SdslInputError) as info:
        bind_inputs(prog, {"A": sp.csr_array(dense), "B": b})
    assert "input A: format parameter BM of bsr(BM, BN) is not fixed" in info.value.message
    assert info.value.line == 1


def test_bsr_divisibility_error():
    with pytest.raises(SdslInputError, match=r"input A: shape \(3, 4\) is not divisible by the block size \(2, 2\)"):
        bind1(np.ones((3, 4)), T("bsr", "f32", "M", "N", params=(2, 2)))


def test_blockdiag_binding_and_errors():
    blocks = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    bd = BlockDiag(blocks)
    t, sizes = bind1(bd, T("blockdiag", "f32", "N", "N", params=("NB",)))
    assert t is bd and sizes == {"N": 4, "NB": 2}
    # from scipy: entries inside the blocks are fine; stored blocks become dense (zeros present)
    dense = np.zeros((6, 6))
    dense[0, 1] = 1.0
    dense[5, 4] = 2.0
    t, _ = bind1(sp.csr_array(dense), T("blockdiag", "f64", "N", "N", params=(3,)))
    assert isinstance(t, BlockDiag) and t.blocks.shape == (3, 2, 2)
    values, present = t.to_presence()
    np.testing.assert_array_equal(values, dense)
    np.testing.assert_array_equal(present, np.kron(np.eye(3, dtype=bool), np.ones((2, 2), bool)))
    dense[0, 5] = 3.0
    with pytest.raises(SdslInputError, match=r"input A: entry \(0, 5\) lies outside the diagonal blocks"):
        bind1(sp.csr_array(dense), T("blockdiag", "f64", "N", "N", params=(3,)))
    with pytest.raises(SdslInputError, match="not divisible by the number of blocks NB = 4"):
        bind1(sp.csr_array(dense), T("blockdiag", "f64", "N", "N", params=(4,)))


def test_nm_rule_checked():
    ok = np.array([[1.0, 0, 2, 0, 3, 0], [0, 0, 0, 4, 5, 6]])
    t, _ = bind1(ok, T("nm", "f32", "M", "N", params=(2, 4)))
    assert isinstance(t, NM) and t.nnz == 6
    np.testing.assert_array_equal(t.to_presence()[0], ok)
    bad = ok.copy()
    bad[1, 0] = 7.0
    bad[1, 1] = 8.0
    with pytest.raises(SdslInputError) as info:
        bind1(sp.csr_array(bad), T("nm", "f32", "M", "N", params=(2, 4)))
    assert info.value.message == ("input A: row 1 has 3 stored entries in columns 0..3; nm(2, 4) allows at most 2 "
                                  "in every 4 consecutive entries of a row")


# ---------------------------------------------------------------- structure errors, sizes, names

@pytest.mark.parametrize("make, fragment", [
    (lambda: sp.csr_array((np.ones(2), np.array([0, 5]), np.array([0, 1, 2])), shape=(2, 3)),
     "input A: column index 5 is out of range [0, 3)"),
    (lambda: CSR(np.array([0, 2, 1]), np.array([0, 1]), np.ones(2), (2, 3)),
     "input A: indptr decreases at position 2 (2 -> 1)"),
    (lambda: CSR(np.array([0, 1, 2, 2]), np.array([0, 1]), np.ones(2), (2, 3)),
     "input A: indptr has length 4, expected 3"),
    (lambda: COO(np.array([[0, 2], [0, 1]]), np.ones(2), (2, 3)),
     "input A: coordinate of dimension 0 2 is out of range [0, 2)"),
])
def test_structure_errors_name_the_input(make, fragment):
    with pytest.raises(SdslInputError) as info:
        bind1(make(), T("csr", "f64", "M", "N"))
    assert fragment in info.value.message
    assert info.value.file == "prog.sdsl" and info.value.line == 1


def test_size_conflict_names_both_inputs():
    prog = make_program(("A", T("csr", "f32", "M", "K")), ("B", T("csr", "f32", "K", "N")))
    with pytest.raises(SdslInputError) as info:
        bind_inputs(prog, {"A": np.ones((2, 3)), "B": np.ones((4, 5))})
    err = info.value
    assert err.message == "size K is 3 from input A but input B has 4 along dimension 0 (shape (4, 5))"
    assert err.line == 2
    assert "prog.sdsl:2:1: error: size K is 3" in err.render()
    bound, sizes = bind_inputs(prog, {"A": np.ones((2, 3)), "B": np.ones((3, 5))})
    assert sizes == {"M": 2, "K": 3, "N": 5}


def test_literal_dims_and_rank():
    with pytest.raises(SdslInputError, match=r"input A: dimension 1 must be 4 \(dense<f32>\[N, 4\]\), got 3"):
        bind1(np.ones((2, 3)), T("dense", "f32", "N", 4))
    with pytest.raises(SdslInputError, match=r"input A: expected rank 2 \(csr<f32>\[M, N\]\), got a value of shape"):
        bind1(np.ones(3), T("csr", "f32", "M", "N"))


def test_missing_and_unknown_inputs():
    prog = make_program(("A", T("csr", "f32", "M", "N")), ("B", T("dense", "f32", "N")),
                        ("alpha", TensorType("f64"), 0.85))
    with pytest.raises(SdslInputError) as info:
        bind_inputs(prog, {"A": np.ones((2, 2))})
    assert info.value.message == "missing input B: dense<f32>[N]" and info.value.line == 2
    with pytest.raises(SdslInputError) as info:
        bind_inputs(prog, {"A": np.ones((2, 2)), "B": np.ones(2), "C": 1})
    assert info.value.message == "unknown input 'C'; the inputs of prog are: A, B, alpha"
    assert info.value.line == 1
    with pytest.raises(SdslInputError, match="missing inputs A: csr<f32>\\[M, N\\], B: dense<f32>\\[N\\]"):
        bind_inputs(prog, {})
    with pytest.raises(SdslInputError, match="cannot use a value of type builtins.dict"):
        bind_inputs(prog, {"A": {}, "B": np.ones(2)})


def test_unknown_input_of_a_program_without_inputs():
    prog = nodes.Program("empty", (), ())
    with pytest.raises(SdslInputError) as info:
        bind_inputs(prog, {"X": 1})
    assert info.value.span is None and "the inputs of empty are: none" in info.value.message


# ---------------------------------------------------------------- torch

def test_torch_layouts():
    dense = torch.tensor([[0.0, 1.5, 0.0, 0.0], [2.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0]])
    oracle = dense.numpy().copy()
    variants = {
        "strided": dense,
        "coo": dense.to_sparse_coo(),
        "csr": dense.to_sparse_csr(),
        "csc": dense.to_sparse_csc(),
        "bsr": dense.to_sparse_bsr((2, 2)),
        "bsc": dense.to_sparse_bsc((2, 2)),
    }
    for layout, t in variants.items():
        for target in ("csr", "dense", "coo"):
            got, _ = bind1(t, T(target, "f32", "M", "N"))
            values, present = got.to_presence()
            np.testing.assert_array_equal(values, oracle, err_msg=layout)
            if target != "dense" and layout not in ("bsr", "bsc"):
                np.testing.assert_array_equal(present, oracle != 0, err_msg=layout)
    got, sizes = bind1(variants["bsr"], T("bsr", "f32", "M", "N", params=("BM", "BN")))
    assert sizes["BM"] == 2 and got.blocksize == (2, 2)


def test_torch_uncoalesced_coo_and_bf16_and_no_modification():
    idx = torch.tensor([[1, 0, 1], [0, 1, 0]])
    t = torch.sparse_coo_tensor(idx, torch.tensor([1.0, 2.0, 3.0]), (2, 2))
    assert not t.is_coalesced()
    got, _ = bind1(t, T("csr", "f64", "M", "N"))
    np.testing.assert_array_equal(got.to_presence()[0], t.to_dense().numpy())
    assert not t.is_coalesced() and t._indices().tolist() == [[1, 0, 1], [0, 1, 0]]
    b = torch.tensor([[1.0, 0.0], [3.140625, 0.0]], dtype=torch.bfloat16)
    got, _ = bind1(b, T("dense", "bf16", "M", "N"))
    assert got.dtype == "bf16" and got.values.dtype == np.float32
    np.testing.assert_array_equal(got.values, b.float().numpy())
    with pytest.raises(SdslInputError, match="cannot convert values of type float32 to the declared dtype i32"):
        bind1(torch.ones(2, 2), T("dense", "i32", "M", "N"))
    ints = torch.tensor([[1, 2]], dtype=torch.int16)
    got, _ = bind1(ints, T("dense", "i8", "M", "N"))
    np.testing.assert_array_equal(got.values, [[1, 2]])


def test_torch_tensor_without_values_is_an_input_error():
    # a meta tensor has a shape and no data: torch raised NotImplementedError through the binder
    for ttype in (T("dense", "f32", "M", "N"), T("csr", "f32", "M", "N")):
        with pytest.raises(SdslInputError, match="input A: cannot copy the torch tensor from device 'meta'"):
            bind1(torch.empty(2, 2, device="meta"), ttype)


# ---------------------------------------------------------------- networkx

def test_networkx_graphs():
    g = nx.karate_club_graph()
    nodes_ = list(g)
    pos = {v: k for k, v in enumerate(nodes_)}
    t, sizes = bind1(g, T("csr", "bool", "N", "N"))
    assert sizes == {"N": 34} and t.nnz == 2 * g.number_of_edges()
    present = t.to_presence()[1]
    expect = np.zeros((34, 34), bool)
    for u, v in g.edges:
        expect[pos[u], pos[v]] = expect[pos[v], pos[u]] = True
    np.testing.assert_array_equal(present, expect)
    t, _ = bind1(g, T("csr", "f64", "N", "N"))
    values = t.to_presence()[0]
    for u, v, w in g.edges(data="weight", default=1):
        assert values[pos[u], pos[v]] == w and values[pos[v], pos[u]] == w

    d = nx.DiGraph()
    d.add_nodes_from(["c", "a", "b"])  # G's node order, not sorted order
    d.add_edge("a", "b", weight=2.5)
    d.add_edge("c", "a")
    d.add_edge("b", "b", weight=0.0)  # a stored zero stays present
    t, _ = bind1(d, T("csr", "f32", "N", "N"))
    values, present = t.to_presence()
    np.testing.assert_array_equal(values, [[0, 1, 0], [0, 0, 2.5], [0, 0, 0]])
    np.testing.assert_array_equal(present, [[0, 1, 0], [0, 0, 1], [0, 0, 1]])
    t, _ = bind1(d, T("dense", "bool", "N", "N"))
    np.testing.assert_array_equal(t.values, [[0, 1, 0], [0, 0, 1], [0, 0, 1]])


def test_networkx_graphs_without_nodes_or_with_unreadable_weights():
    # networkx raises NetworkXError for the adjacency of a graph with no nodes; it is the 0 x 0 matrix
    for g in (nx.Graph(), nx.DiGraph(), nx.MultiGraph()):
        for fmt, dtype in (("csr", "bool"), ("csr", "f64"), ("dense", "f32")):
            t, sizes = bind1(g, T(fmt, dtype, "N", "N"))
            assert sizes == {"N": 0} and t.shape == (0, 0), (g, fmt, dtype)
    t, sizes = bind1(nx.empty_graph(3), T("csr", "f64", "N", "N"))
    assert sizes == {"N": 3} and t.nnz == 0
    w = nx.Graph()
    w.add_edge(0, 1, weight="heavy")
    with pytest.raises(SdslInputError, match="input A: cannot read the networkx graph's adjacency"):
        bind1(w, T("csr", "f64", "N", "N"))
    bind1(w, T("csr", "bool", "N", "N"))  # a pattern reads no weight


# ---------------------------------------------------------------- to_user

def sample(fmt: str, dtype: str = "f32"):
    dense = np.array([[1, 0, 2, 0], [0, 0, 0, 0], [0, 3, 0, 4], [5, 0, 0, 0]], dtype=NUMPY_DTYPE[dtype])
    params = {"bsr": (2, 2), "blockdiag": (2,), "nm": (1, 2)}.get(fmt, ())
    if fmt == "blockdiag":
        dense *= np.kron(np.eye(2, dtype=dense.dtype), np.ones((2, 2), dtype=dense.dtype))
    if fmt == "nm":
        dense[0, 2] = 0
    t, _ = bind1(dense, T(fmt, dtype, 4, 4, params=params))
    return t


@pytest.mark.parametrize("fmt, cls", [("csr", sp.csr_array), ("csc", sp.csc_array), ("coo", sp.coo_array),
                                      ("bsr", sp.bsr_array), ("blockdiag", sp.bsr_array), ("nm", sp.csr_array)])
def test_to_user_scipy(fmt, cls):
    t = sample(fmt)
    out = to_user(t)
    assert type(out) is cls and out.dtype == np.float32
    values, present = t.to_presence()
    np.testing.assert_array_equal(out.toarray(), values)
    _, oracle_present = scipy_oracle(out)
    np.testing.assert_array_equal(oracle_present, present)
    if fmt == "blockdiag":
        assert out.blocksize == (2, 2) and out.nnz == 8


@pytest.mark.parametrize("fmt, layout", [("csr", torch.sparse_csr), ("csc", torch.sparse_csc),
                                         ("coo", torch.sparse_coo), ("bsr", torch.sparse_bsr),
                                         ("blockdiag", torch.sparse_bsr), ("nm", torch.sparse_csr),
                                         ("dense", torch.strided)])
@pytest.mark.parametrize("dtype", ["f32", "bf16", "i64"])
def test_to_user_torch(fmt, layout, dtype):
    t = sample(fmt, dtype)
    out = to_user(t, torch_like=True)
    assert out.layout == layout
    assert out.dtype == {"f32": torch.float32, "bf16": torch.bfloat16, "i64": torch.int64}[dtype]
    np.testing.assert_array_equal(out.to_dense().to(torch.float64).numpy(), t.to_presence()[0].astype(np.float64))


def test_to_user_dense_scalar_and_vectors():
    s = bind_inputs(make_program(("x", TensorType("f32"))), {"x": 2.5})[0]["x"]
    out = to_user(s)
    assert isinstance(out, np.float32) and out == 2.5
    assert to_user(s, torch_like=True).shape == ()
    v, _ = bind1(np.array([0.0, 2.0, 0.0, 3.0]), T("csr", "f64", "N"))
    u = to_user(v)
    assert u.shape == (4,)
    np.testing.assert_array_equal(u.toarray(), [0, 2, 0, 3])
    tv = to_user(v, torch_like=True)
    np.testing.assert_array_equal(tv.to_dense().numpy(), [0, 2, 0, 3])
    c = COO(np.array([[0, 1], [1, 0], [2, 2]]), np.array([1.0, 2.0]), (2, 2, 3))
    out = to_user(c)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out.toarray(), c.to_presence()[0])


# ---------------------------------------------------------------- property test

@given(st.integers(0, 2**32 - 1), st.sampled_from(SCIPY_KINDS), st.sampled_from(["csr", "csc", "coo", "dense"]),
       st.integers(0, 6), st.integers(0, 6))
def test_property_scipy_to_any_format(seed, kind, target, rows, cols):
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((rows, cols)) < 0.3, rng.integers(-5, 6, (rows, cols)), 0).astype(np.float64)
    m = scipy_value(kind, dense, as_matrix=False)
    t, _ = bind1(m, T(target, "f64", "M", "N"))
    values, present = t.to_presence()
    oracle_values, oracle_present = scipy_oracle(m)
    np.testing.assert_array_equal(values, oracle_values)
    if target != "dense":
        np.testing.assert_array_equal(present, oracle_present)
    back = to_user(t)
    np.testing.assert_array_equal(back.toarray() if sp.issparse(back) else back, oracle_values)


def test_bsr_from_torch_and_scipy_matches_container():
    blocks = np.arange(8, dtype=np.float64).reshape(2, 2, 2)
    ref = BSR(np.array([0, 1, 2]), np.array([1, 0]), blocks, (4, 4))
    m = sp.bsr_array((blocks, np.array([1, 0]), np.array([0, 1, 2])), shape=(4, 4))
    t, _ = bind1(m, T("bsr", "f64", 4, 4, params=(2, 2)))
    np.testing.assert_array_equal(t.to_presence()[0], ref.to_presence()[0])
    np.testing.assert_array_equal(t.to_presence()[1], ref.to_presence()[1])
    assert isinstance(t, BSR) and np.shares_memory(t.blocks, m.data)


def test_csc_declaration_from_csr_is_column_compressed():
    dense = np.array([[0.0, 1.0], [2.0, 3.0], [0.0, 4.0]])
    t, _ = bind1(sp.csr_array(dense), T("csc", "f64", "M", "N"))
    assert isinstance(t, CSC)
    oracle = sp.csc_array(dense)
    np.testing.assert_array_equal(t.indptr, oracle.indptr)
    np.testing.assert_array_equal(t.indices, oracle.indices)
    np.testing.assert_array_equal(t.data, oracle.data)
