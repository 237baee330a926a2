"""CLI values and output files: Matrix Market / .npy / .npz / edge lists, scalars, random:SEED, write_output.

Oracles: the shapes and entry counts in the data README, scipy.io.mmread / np.load of what was written,
hand-written files with known contents.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from sparsedsl.core.errors import SdslInputError, Source, Span
from sparsedsl.runtime.convert import bind_inputs, bind_value
from sparsedsl.runtime.io import parse_scalar, read_value, write_output
from sparsedsl.runtime.tensors import NM, BlockDiag, BSR, CSR, Dense
from sparsedsl.tensor_ir import nodes
from sparsedsl.tensor_ir.types import Format, TensorType

ROOT = Path(__file__).resolve().parent.parent
DATA_DIRS = [ROOT / "sparsedsl" / "data", ROOT.parent / "shared" / "data"]
DATA = next((d for d in DATA_DIRS if (d / "wiki-Vote.mtx.gz").exists()), None)

SRC = Source("prog.sdsl", "input A: csr<f32>[N, N]\n")
SPAN = Span(SRC, 1, 7, 1, 8)


def decl(ttype: TensorType, name: str = "A") -> nodes.Decl:
    return nodes.Decl(name, ttype, "input", span=SPAN)


def T(fmt: str, dtype: str, *shape, params=()) -> TensorType:
    return TensorType(dtype, tuple(shape), Format(fmt, tuple(params)))


def bind(value, ttype: TensorType, name: str = "A"):
    return bind_value(value, name, ttype, {}, {})


# ---------------------------------------------------------------- the shipped matrices

@pytest.mark.skipif(DATA is None, reason="sample matrices not found")
@pytest.mark.parametrize("name, n, nnz", [
    ("ego-Facebook", 4039, 176_468), ("ca-HepTh", 9877, 51_971), ("wiki-Vote", 7115, 103_689),
    ("bcsstk13", 2003, 83_883),
])
def test_sample_matrices(name, n, nnz):
    path = DATA / f"{name}.mtx.gz"
    for ttype in (T("csr", "bool", "N", "N"), T("csr", "f64", "N", "N")):
        value = read_value(str(path), decl(ttype), {}, {})
        t = bind(value, ttype)
        assert isinstance(t, CSR) and t.shape == (n, n) and t.nnz == nnz
        assert t.is_canonical()
    if name in ("ego-Facebook", "ca-HepTh", "bcsstk13"):  # symmetric: the pattern equals its transpose
        a = sp.csr_array((np.ones(t.nnz), t.indices, t.indptr), shape=t.shape)
        assert (a != a.T).nnz == 0
    if name == "ca-HepTh":
        assert int(np.count_nonzero(t.to_coo().coords[0] == t.to_coo().coords[1])) == 25
    if name == "bcsstk13":
        rows, cols = t.to_coo().coords
        assert np.count_nonzero(rows == cols) == n  # full diagonal


# ---------------------------------------------------------------- file kinds

def test_mtx_plain_and_gz_and_dense(tmp_path):
    m = sp.coo_array((np.array([1.5, -2.0, 3.0]), (np.array([0, 2, 1]), np.array([1, 0, 3]))), shape=(3, 4))
    scipy.io.mmwrite(str(tmp_path / "m.mtx"), m)
    with open(tmp_path / "m.mtx", "rb") as f, gzip.open(tmp_path / "m.mtx.gz", "wb") as g:
        g.write(f.read())
    for fname in ("m.mtx", "m.mtx.gz"):
        t = bind(read_value(str(tmp_path / fname), decl(T("csr", "f32", "M", "N")), {}, {}), T("csr", "f32", "M", "N"))
        np.testing.assert_array_equal(t.to_presence()[0], m.toarray())
    scipy.io.mmwrite(str(tmp_path / "d.mtx"), np.arange(6.0).reshape(2, 3))
    v = read_value(str(tmp_path / "d.mtx"), decl(T("dense", "f64", "M", "N")), {}, {})
    np.testing.assert_array_equal(v, np.arange(6.0).reshape(2, 3))


def test_npy_and_npz(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(read_value(str(tmp_path / "x.npy"), decl(T("dense", "f32", "M", "N")), {}, {}), x)
    m = sp.random_array((5, 6), density=0.3, rng=3, format="csr")
    sp.save_npz(tmp_path / "m.npz", m)
    v = read_value(str(tmp_path / "m.npz"), decl(T("csr", "f64", "M", "N")), {}, {})
    assert sp.issparse(v) and (v != m).nnz == 0
    np.savez(tmp_path / "one.npz", x)
    np.testing.assert_array_equal(read_value(str(tmp_path / "one.npz"), decl(T("dense", "f32", "M", "N")), {}, {}), x)
    np.savez(tmp_path / "many.npz", A=x, B=x + 1)
    np.testing.assert_array_equal(read_value(str(tmp_path / "many.npz"), decl(T("dense", "f32", "M", "N"), "B"),
                                             {}, {}), x + 1)
    with pytest.raises(SdslInputError, match="holds arrays A, B; name one of them C or save a single array"):
        read_value(str(tmp_path / "many.npz"), decl(T("dense", "f32", "M", "N"), "C"), {}, {})
    np.savez(tmp_path / "none.npz")
    with pytest.raises(SdslInputError, match="'[^']*none.npz' holds no arrays\n"):
        read_value(str(tmp_path / "none.npz"), decl(T("dense", "f32", "M", "N")), {}, {})


def test_edge_list(tmp_path):
    p = tmp_path / "g.el"
    p.write_text("# a comment\n% another\n0 1\n1 2   # trailing comment\n\n2 0\n1 2\n")
    ttype = T("csr", "f64", "N", "N")
    v = read_value(str(p), decl(ttype), {}, {})
    t = bind(v, ttype)
    expect = np.zeros((3, 3))
    expect[0, 1] = 1
    expect[1, 2] = 2  # repeated edge summed
    expect[2, 0] = 1
    np.testing.assert_array_equal(t.to_presence()[0], expect)
    # a size already known widens the matrix beyond the largest id
    v = read_value(str(p), decl(ttype), {"N": 5}, {})
    assert v.shape == (5, 5)
    v = read_value(str(p), decl(ttype), {}, {"N": 4})
    assert v.shape == (4, 4)
    with pytest.raises(SdslInputError, match=r"has node ids up to 2, outside the shape \(2, 2\)"):
        read_value(str(p), decl(ttype), {"N": 2}, {})
    w = tmp_path / "w.txt"
    w.write_text("0 3 0.5\n2 1 -1.25\n")
    v = read_value(str(w), decl(T("coo", "f32", "M", "K")), {}, {})
    assert v.shape == (3, 4)
    np.testing.assert_array_equal(v.toarray(), [[0, 0, 0, 0.5], [0, 0, 0, 0], [0, -1.25, 0, 0]])
    bad = tmp_path / "bad.el"
    bad.write_text("0 1\n1 x\n")
    with pytest.raises(SdslInputError) as info:
        read_value(str(bad), decl(ttype), {}, {})
    assert "line 2: node ids must be integers" in info.value.message and info.value.line == 1
    bad.write_text("0 1 2 3\n")
    with pytest.raises(SdslInputError, match="line 1: expected 'u v' or 'u v w'"):
        read_value(str(bad), decl(ttype), {}, {})


def test_file_errors(tmp_path):
    d = decl(T("csr", "f32", "N", "N"))
    with pytest.raises(SdslInputError) as info:
        read_value(str(tmp_path / "nope.mtx"), d, {}, {})
    assert info.value.message == f"input A: cannot read {str(tmp_path / 'nope.mtx')!r}: no such file"
    assert info.value.file == "prog.sdsl" and info.value.line == 1 and info.value.col == 7
    junk = tmp_path / "junk.mtx"
    junk.write_text("this is not matrix market\n")
    with pytest.raises(SdslInputError, match=r"input A: cannot read '.*junk.mtx': "):
        read_value(str(junk), d, {}, {})
    (tmp_path / "junk.npy").write_bytes(b"\x00\x01garbage")
    with pytest.raises(SdslInputError, match=r"input A: cannot read '.*junk.npy'"):
        read_value(str(tmp_path / "junk.npy"), d, {}, {})
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(SdslInputError, match="unknown file type"):
        read_value(str(tmp_path / "x.csv"), d, {}, {})
    with pytest.raises(SdslInputError, match="is a folder, not a file"):
        read_value(str(tmp_path), d, {}, {})
    with pytest.raises(SdslInputError, match="expected a tensor"):
        read_value("0.5", d, {}, {})


# ---------------------------------------------------------------- scalars

@pytest.mark.parametrize("text, expect", [
    ("0.1", 0.1), ("3", 3), ("-7", -7), ("0x2A", 42), ("1e-3", 1e-3), ("true", True), ("False", False),
    ("inf", float("inf")), ("-2.5E2", -250.0), ("007", 7), (".5", 0.5),
])
def test_scalar_literals(text, expect):
    assert parse_scalar(text) == expect
    v = read_value(text, decl(TensorType("f64"), "x"), {}, {})
    assert v == expect and type(v) is type(expect)


def test_scalar_nan_and_non_literals():
    assert np.isnan(parse_scalar("nan"))
    for text in ("abc", "1.2.3", "", "0x", "1e"):
        assert parse_scalar(text) is None
    with pytest.raises(SdslInputError, match="no such file"):
        read_value("abc", decl(TensorType("f64"), "x"), {}, {})


# ---------------------------------------------------------------- random

def test_random_dense_and_determinism():
    d = decl(T("dense", "f32", "N", "D"))
    a = read_value("random:7", d, {"N": 5}, {"D": 3})
    b = read_value("random:7", d, {"N": 5}, {"D": 3})
    c = read_value("random:8", d, {"N": 5}, {"D": 3})
    assert a.shape == (5, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert ((a >= 0) & (a < 1)).all()
    i = read_value("random:1", decl(T("dense", "i8", 4, 4)), {}, {})
    assert i.dtype == np.int8 and ((i >= 0) & (i < 10)).all()
    s = read_value("random:1", decl(TensorType("f64"), "alpha"), {}, {})
    assert isinstance(s, float)
    # `sizes` (bound by other inputs) comes before the overrides
    assert read_value("random:1", d, {"N": 5, "D": 2}, {"D": 9}).shape == (5, 2)


def test_random_size_not_fixed():
    with pytest.raises(SdslInputError) as info:
        read_value("random:1", decl(T("csr", "f32", "N", "N")), {}, {})
    assert info.value.message == "size N is not fixed by any input; pass --size N=..."
    assert info.value.line == 1
    with pytest.raises(SdslInputError, match="needs an integer seed"):
        read_value("random:x", decl(T("csr", "f32", "N", "N")), {"N": 3}, {})


@pytest.mark.parametrize("fmt, params", [("csr", ()), ("csc", ()), ("coo", ())])
def test_random_sparse_density(fmt, params):
    ttype = T(fmt, "f64", "N", "N", params=params)
    v = read_value("random:3", decl(ttype), {"N": 100}, {})
    t = bind(v, ttype)
    assert t.format.name == fmt and t.nnz == 1000  # 10% of 100 x 100
    _, present = t.to_presence()
    assert present.sum() == 1000


def test_random_pattern_and_nd():
    v = read_value("random:3", decl(T("csr", "bool", "N", "N")), {"N": 20}, {})
    t = bind(v, T("csr", "bool", "N", "N"))
    assert t.data.all() and t.nnz == 40
    c = read_value("random:3", decl(T("coo", "i32", 4, 5, 6)), {}, {})
    t = bind(c, T("coo", "i32", 4, 5, 6))
    assert t.nnz == 12 and t.is_canonical()


def test_random_block_formats_honor_structure():
    bsr_t = T("bsr", "f32", "M", "N", params=("BM", 4))
    v = read_value("random:5", decl(bsr_t), {"M": 40, "N": 40, "BM": 2}, {})
    t = bind_value(v, "A", bsr_t, {"BM": 2}, {})
    assert isinstance(t, BSR) and t.blocksize == (2, 4) and t.indices.shape[0] == 20  # 10% of 20 x 10 blocks
    values, present = t.to_presence()
    blk = present.reshape(20, 2, 10, 4)
    assert (blk.all(axis=(1, 3)) == blk.any(axis=(1, 3))).all()  # every block wholly present or absent

    bd_t = T("blockdiag", "f64", "N", "N", params=(3,))
    t = bind(read_value("random:5", decl(bd_t), {"N": 6}, {}), bd_t)
    assert isinstance(t, BlockDiag) and t.blocks.shape == (3, 2, 2)

    nm_t = T("nm", "f32", "M", "N", params=(2, 4))
    t = bind(read_value("random:5", decl(nm_t), {"M": 6, "N": 10}, {}), nm_t)
    assert isinstance(t, NM)
    present = t.to_presence()[1]
    padded = np.zeros((6, 12), bool)
    padded[:, :10] = present
    per_group = padded.reshape(6, 3, 4).sum(axis=2)
    np.testing.assert_array_equal(per_group, [[2, 2, 2]] * 6)  # the short last group has 2 columns: both taken


def test_random_then_bind_through_program():
    prog = nodes.Program("p", (decl(T("csr", "f32", "N", "N")), decl(T("dense", "f32", "N", "D"), "X")), ())
    sizes: dict[str, int] = {}
    a = read_value("random:1", prog.inputs[0], sizes, {"N": 30})
    x = read_value("random:2", prog.inputs[1], {"N": 30}, {"D": 4})
    bound, sizes = bind_inputs(prog, {"A": a, "X": x})
    assert sizes == {"N": 30, "D": 4}


# ---------------------------------------------------------------- output

def test_write_output_sparse_and_dense(tmp_path):
    m = sp.random_array((6, 5), density=0.4, rng=2, format="csr")
    t = bind(m, T("csr", "f64", "M", "N"))
    p = write_output(tmp_path / "out", "C", t)
    assert p == tmp_path / "out" / "C.mtx"
    back = scipy.io.mmread(str(p))
    np.testing.assert_array_equal(back.toarray(), m.toarray())
    d = bind(np.arange(6.0).reshape(2, 3), T("dense", "f32", "M", "N"))
    p = write_output(tmp_path, "D", d)
    assert p.name == "D.npy"
    got = np.load(p)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.arange(6.0).reshape(2, 3))
    s = Dense(np.float64(3.5))
    assert np.load(write_output(tmp_path, "s", s)) == 3.5


def test_write_output_pattern_vector_blocks(tmp_path):
    pat = bind(np.array([[0, 1], [1, 1]]), T("csr", "bool", "N", "N"))
    p = write_output(tmp_path, "P", pat)
    assert "pattern" in p.read_text().splitlines()[0]
    np.testing.assert_array_equal(scipy.io.mmread(str(p)).toarray() != 0, [[False, True], [True, True]])
    # a stored false (P[i, j] = C[i, j] > 0.1 keeps one) would read back as true from a pattern file
    with_false = CSR(np.array([0, 1, 2]), np.array([1, 0]), np.array([True, False]), (2, 2))
    p = write_output(tmp_path, "F", with_false)
    assert "pattern" not in p.read_text().splitlines()[0]
    back = scipy.io.mmread(str(p))
    assert back.nnz == 2 and back.toarray().tolist() == [[0, 1], [0, 0]]
    v = bind(np.array([0.0, 2.0, 0.0, 5.0]), T("csr", "f64", "N"))
    back = scipy.io.mmread(str(write_output(tmp_path, "v", v)))
    assert back.shape == (4, 1)
    np.testing.assert_array_equal(back.toarray()[:, 0], [0, 2, 0, 5])
    bd = BlockDiag(np.arange(8, dtype=np.float32).reshape(2, 2, 2))
    back = scipy.io.mmread(str(write_output(tmp_path, "B", bd)))
    np.testing.assert_array_equal(back.toarray(), bd.to_presence()[0])
    coo3 = bind(np.arange(8.0).reshape(2, 2, 2), T("coo", "f64", 2, 2, 2))
    p = write_output(tmp_path, "T", coo3)
    assert p.name == "T.npz"
    np.testing.assert_array_equal(sp.load_npz(p).toarray(), np.arange(8.0).reshape(2, 2, 2))
