"""The ref backend's interface: compile(program) -> Executable, run on runtime containers of every format."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl.api as sd
from sparsedsl.backends import ref
from sparsedsl.runtime import tensors
from sparsedsl.tensor_ir import nodes as N
from sparsedsl.tensor_ir.types import Format, TensorType


def _dense_with_blocks() -> np.ndarray:
    # 4 x 8, block-diagonal in 2 x 4 blocks, at most 2 entries in every run of 4 along a row
    a = np.zeros((4, 8))
    a[0, 0], a[0, 2], a[1, 1], a[2, 4], a[2, 7], a[3, 6] = 1.0, -2.0, 3.0, 4.0, 5.0, -6.0
    return a


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc", "coo", "bsr(2, 4)", "blockdiag(2)", "nm(2, 4)"])
def test_every_format_in_and_out(fmt):
    a = _dense_with_blocks()
    prog = sd.loads(f"""
input  A: {fmt}<f64>[M, N]
output B: {fmt}<f64>[M, N]
output T: dense<f64>[N, M]
B[i, j] = 2.0 * A[i, j]
T[j, i] = A[i, j]
""")
    kernel = prog.compile(target="ref")
    value = {"dense": a, "csr": sp.csr_array(a), "csc": sp.csc_array(a), "coo": sp.coo_array(a),
             "bsr(2, 4)": sp.bsr_array(a, blocksize=(2, 4)), "blockdiag(2)": sp.bsr_array(a, blocksize=(2, 4)),
             "nm(2, 4)": sp.csr_array(a)}[fmt]
    out = kernel.run_tensors(A=value)
    assert out["B"].format.name == fmt.split("(")[0]
    values, present = out["B"].to_presence()
    np.testing.assert_array_equal(values, 2.0 * a)
    if fmt == "dense":
        assert present.all()
    elif fmt in ("bsr(2, 4)", "blockdiag(2)"):
        assert (present >= (a != 0)).all()   # whole blocks are stored
    else:
        np.testing.assert_array_equal(present, a != 0)
    np.testing.assert_array_equal(out["T"].to_presence()[0], a.T)


def test_compile_and_run_directly_on_containers():
    prog = N.Program("axpy", (
        N.Decl("x", TensorType("f32", ("N",), Format("csr")), "input"),
        N.Decl("a", TensorType("f32"), "input"),
        N.Decl("y", TensorType("f32", ("N",), Format("dense")), "output", fill=N.Lit(-1.0, "f32")),
        N.Decl("s", TensorType("f32"), "output"),
    ), (
        N.Assign("y", ("i",), "=", N.Binary("*", N.ScalarRef("a", "f32"), N.Access("x", (N.IndexVal("i"),), "f32"),
                                            "f32"), (("i", "N"),)),
        N.Assign("s", (), "=", N.Reduce("sum", ("i",), N.Access("x", (N.IndexVal("i"),), "f32"), "f32"),
                 (("i", "N"),)),
    ))
    exe = ref.compile(prog)
    assert isinstance(exe.source, str) and "y[i]" in exe.source
    x = tensors.COO(np.array([[0, 3]]), np.array([1.5, 2.0], np.float32), (5,), "f32")
    x = tensors.CSR.from_coo(x.to_coo())
    out = exe.run({"x": x, "a": tensors.Dense(np.float32(2.0), "f32")}, {"N": 5})
    assert isinstance(out["y"], tensors.Dense) and out["y"].dtype == "f32"
    np.testing.assert_array_equal(out["y"].values, np.array([3.0, -1, -1, 4.0, -1], np.float32))
    assert out["s"].values.shape == () and out["s"].values == np.float32(3.5)


def test_auto_output_becomes_dense_or_sparse():
    def prog(value):
        return N.Program("p", (
            N.Decl("x", TensorType("f64", ("N", "N"), Format("csr")), "input"),
            N.Decl("y", TensorType("f64", ("N", "N"), Format("auto")), "output"),
        ), (N.Assign("y", ("i", "j"), "=", value, (("i", "N"), ("j", "N"))),))
    x = tensors.CSR.from_coo(tensors.COO(np.array([[0], [1]]), np.array([4.0]), (2, 2), "f64"))
    sparse = ref.compile(prog(N.Access("x", (N.IndexVal("i"), N.IndexVal("j")), "f64"))).run({"x": x}, {"N": 2})
    assert sparse["y"].format.name == "csr" and sparse["y"].nnz == 1
    full = ref.compile(prog(N.Fill(N.Access("x", (N.IndexVal("i"), N.IndexVal("j")), "f64"), N.Lit(0.0, "f64"),
                                   "f64"))).run({"x": x}, {"N": 2})
    assert full["y"].format.name == "dense"
    np.testing.assert_array_equal(full["y"].values, [[0.0, 4.0], [0.0, 0.0]])


def test_inputs_are_not_modified():
    A = sp.csr_array(np.array([[1.0, 0.0], [2.0, 3.0]]))
    before = (A.data.copy(), A.indices.copy(), A.indptr.copy())
    out = sd.loads("""
input  A: csr<f64>[N, N]
output B: csr<f64>[N, N]
B[i, j] = A[i, j]
B[i, j] += A[j, i]
""").compile(target="ref")(A=A)["B"]
    for got, want in zip((A.data, A.indices, A.indptr), before):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(out.toarray(), [[2.0, 2.0], [2.0, 6.0]])


def test_argmax_over_a_matrix_with_no_rows():
    import scipy.sparse as sp

    import sparsedsl as sd

    prog = sd.loads("input A: csr<f64>[M, N]\noutput g: dense<i64>[M]\ng[i] = argmax[j] A[i, j]\n")
    g = prog.compile(target="ref")(A=sp.csr_array((0, 5))).g
    assert g.shape == (0,) and g.dtype == np.int64
