"""Intermediates stored with another matrix's pattern (``Lowerer.shared_pattern``): ``T[i, j] = e`` where ``e``
is present exactly where a compressed matrix is keeps that matrix's row pointer and column indices and
computes only values. Checked against the reference interpreter on inputs with empty rows, an empty matrix,
a single entry, scipy's unsorted and duplicate indices, int64 indices and read-only arrays; the explain line
shows when the arrays are shared and when they must not be (value masks, unions of two patterns, outputs,
repeats)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.tensor_ir import nodes as N
from sparsedsl.tensor_ir.presence import FULL, same_pattern

SHARED = "pattern of {t}: shared with {src}"

HEAD = "input A: csr<f64>[N, N]\ninput B: csr<f64>[N, N]\ninput X: dense<f64>[N, N]\ninput m: dense<f64>[N]\n"
OUTS = "output Y: dense<f64>[N, N]\noutput r: dense<f64>[N]\n"
# T read by two statements, so that it is stored (not fused into its one reader)
READ_TWICE = "Y[i, k] = sum[j] T[i, j] * X[j, k]\nr[i] = count[j] T[i, j] + sum[j] T[i, j]\n"

CASES = {
    # name: (statements defining T from A/B/X/m, the tensor T shares arrays with or None)
    "exp": ("T[i, j] = exp(A[i, j])\n", "A"),
    "dense-factor-and-broadcast": ("T[i, j] = A[i, j] * X[i, j] + m[i]\n", "A"),
    "softmax": ("T[i, j] = softmax[j] (2.0 * A[i, j])\n", "A"),
    "same-mask": ("T[i, j] = A[i, j] * 3.0 where A[i, j]\n", "A"),
    "self-union": ("T[i, j] = A[i, j] + A[i, j] * A[i, j]\n", "A"),
    "chain": ("U[i, j] = abs(A[i, j]) - 1.0\nT[i, j] = U[i, j] * U[i, j]\nr2[i] = max[j] U[i, j]\n", "A"),
    "value-mask": ("T[i, j] = A[i, j] where A[i, j] > 0.5\n", None),
    "union-of-two": ("T[i, j] = A[i, j] + B[i, j]\n", None),
    "intersection-of-two": ("T[i, j] = A[i, j] * B[i, j]\n", None),
    "index-predicate": ("T[i, j] = A[i, j] where j < i\n", None),
    "transposed": ("T[i, j] = A[j, i] * 2.0\n", "A_transposed"),  # the transposed copy made once per call
}


def program(stmts: str) -> str:
    outs = OUTS + ("output r2: dense<f64>[N]\n" if "r2[" in stmts else "")
    return HEAD + outs + stmts + READ_TWICE


@pytest.fixture(scope="module")
def kernels():
    memo: dict = {}

    def get(name: str):
        if name not in memo:
            prog = sd.loads(program(CASES[name][0]), name=f"shared_{name.replace('-', '_')}")
            memo[name] = (prog, prog.compile("ref"), prog.compile("numba", parallel=False))
        return memo[name]

    return get


def random_csr(rng, n, density, empty_rows=()):
    keep = rng.random((n, n)) < density
    keep[list(empty_rows)] = False
    vals = rng.standard_normal((n, n))
    return sp.csr_array(np.where(keep, vals, 0.0))


def inputs_for(rng, n, kind):
    A = random_csr(rng, n, 0.3, empty_rows=range(0, n, 3))
    if kind == "single" and n:
        A = sp.csr_array(([1.5], ([n - 1], [0])), shape=(n, n))
    elif kind == "scipy-unsorted-duplicates" and n:
        coo = A.tocoo()
        rows = np.concatenate([coo.row, coo.row[:3]])[::-1]
        cols = np.concatenate([coo.col, coo.col[:3]])[::-1]
        vals = np.concatenate([coo.data, np.full(min(3, coo.nnz), 0.25)])[::-1]
        A = sp.csr_array((vals, (rows, cols)), shape=(n, n))
        A.has_sorted_indices = False
    elif kind == "int64-readonly":
        A = sp.csr_array((A.data.copy(), A.indices.astype(np.int64), A.indptr.astype(np.int64)), shape=(n, n))
        for a in (A.data, A.indices, A.indptr):
            a.flags.writeable = False
    B = random_csr(rng, n, 0.2)
    X = rng.standard_normal((n, n))
    m = rng.standard_normal(n)
    return {"A": A, "B": B, "X": X, "m": m}


def same(want, got, what):
    """Dense outputs (every output here is): equal up to reassociation, NaN where the other has NaN."""
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=what)


@pytest.mark.parametrize("name", CASES)
def test_explain_says_when_the_pattern_is_shared(name, kernels):
    prog, _, _ = kernels(name)
    text = prog.explain()
    src = CASES[name][1]
    target = "U" if name == "chain" else "T"
    if src is None:
        assert "shared with" not in text, text
    else:
        assert SHARED.format(t=target, src=src) in text, text
    if name == "chain":  # and T shares U's arrays, which are A's
        assert SHARED.format(t="T", src="U") in text, text


@pytest.mark.parametrize("kind", ["random", "single", "scipy-unsorted-duplicates", "int64-readonly"])
@pytest.mark.parametrize("n", [0, 1, 7])
@pytest.mark.parametrize("name", CASES)
def test_same_as_reference(name, n, kind, kernels):
    _, ref, numba = kernels(name)
    rng = np.random.default_rng(n * 31 + len(kind))
    inputs = inputs_for(rng, n, kind)
    before = {k: (v.data.copy(), v.indices.copy(), v.indptr.copy()) for k, v in inputs.items() if sp.issparse(v)}
    want, got = ref(**inputs), numba(**inputs)
    for out in want:
        same(want[out], got[out], f"{name}/{out}")
    for k, (data, indices, indptr) in before.items():  # inputs are never written, shared or not
        np.testing.assert_array_equal(inputs[k].data, data)
        np.testing.assert_array_equal(inputs[k].indices, indices)
        np.testing.assert_array_equal(inputs[k].indptr, indptr)


def test_an_output_never_shares_an_inputs_arrays():
    prog = sd.loads("input A: csr<f64>[N, N]\noutput T: csr<f64>[N, N]\nT[i, j] = 2.0 * A[i, j]\n")
    assert "shared with" not in prog.explain()
    A = sp.csr_array(np.eye(4))
    T = prog.compile("numba", parallel=False)(A=A)["T"]
    assert not np.shares_memory(T.indices, A.indices) and not np.shares_memory(T.indptr, A.indptr)
    T.indices[0] = 3  # the caller may change what it got back; the input stays as it was
    assert A.indices[0] == 0


def test_not_shared_inside_a_repeat():
    text = ("input A: csr<f64>[N, N]\ninput x: dense<f64>[N]\noutput y: dense<f64>[N]\ny[i] = x[i]\n"
            "repeat at most 3:\n    T[i, j] = A[i, j] * y[j]\n    y[i] = sum[j] T[i, j] + 0.5 * max[j] T[i, j]\n")
    prog = sd.loads(text)
    assert "shared with" not in prog.explain()
    A = random_csr(np.random.default_rng(3), 6, 0.4, empty_rows=(2,))
    x = np.linspace(0.0, 1.0, 6)
    same(prog.compile("ref")(A=A, x=x)["y"], prog.compile("numba", parallel=False)(A=A, x=x)["y"], "y")


# ---------------------------------------------------------------- the analysis itself

def acc(t, *vs):
    return N.Access(t, tuple(N.IndexVal(v) for v in vs), "f64")


def test_same_pattern_rules():
    sparse = {"A", "B"}.__contains__

    def full(name):
        return not sparse(name)

    a, b, x = acc("A", "i", "j"), acc("B", "i", "j"), acc("X", "i", "j")
    m = N.Access("M", (N.IndexVal("i"),), "f64")
    assert same_pattern(a, full) == ("A", ("i", "j"))
    assert same_pattern(acc("A", "j", "i"), full) == ("A", ("j", "i"))
    assert same_pattern(x, full) == FULL
    assert same_pattern(N.Binary("*", a, x, "f64"), full) == ("A", ("i", "j"))
    assert same_pattern(N.Binary("+", a, x, "f64"), full) == FULL  # a union with a full operand
    assert same_pattern(N.Binary("+", a, b, "f64"), full) is None
    assert same_pattern(N.Binary("*", a, b, "f64"), full) is None
    assert same_pattern(N.Binary("*", a, m, "f64"), lambda t: t != "M" and full(t)) is None  # sparse vector cuts
    assert same_pattern(N.Binary("+", a, m, "f64"), lambda t: t != "M" and full(t)) == ("A", ("i", "j"))
    assert same_pattern(N.Where(a, N.MaskPresent(a), "f64"), full) == ("A", ("i", "j"))
    assert same_pattern(N.Where(a, N.MaskValue(N.Binary(">", a, N.Lit(0.0, "f64"), "bool")), "f64"), full) is None
    assert same_pattern(N.Where(a, N.MaskNot(N.MaskPresent(b)), "f64"), full) is None
    assert same_pattern(N.Reduce("sum", ("k",), a, "f64"), full) is None


# ---------------------------------------------------------------- block inputs: intermediates in their blocks

BLOCK_BODIES = {
    # T read only by row walks: stored in A's blocks
    "walked": ("T[i, j] = exp(A[i, j]) - 1.0\nY[i, f] = sum[j] T[i, j] * X[j, f]\n"
               "r[i] = count[j] T[i, j] + max[j] T[i, j]\n", True),
    "softmax": ("T[i, j] = softmax[j] (0.5 * A[i, j])\nY[i, f] = sum[j] T[i, j] * X[j, f]\nr[i] = sum[j] T[i, j]\n",
                True),
    # A's rows merged with B's inside T's own statement: walked in compressed rows, so T is not in A's blocks
    "follower": ("T[i, j] = A[i, j] * fill(B[i, j], 1.0)\nY[i, f] = sum[j] T[i, j] * X[j, f]\n"
                 "r[i] = max[j] T[i, j]\n", False),
    # a statement merges T's rows with B's: T is lowered again in compressed rows
    "merged": ("T[i, j] = 2.0 * A[i, j]\nY[i, f] = sum[j] T[i, j] * X[j, f]\nr[i] = sum[j] (T[i, j] + B[i, j])\n",
               False),
}
BLOCK_FORMATS = ("bsr(2, 4)", "blockdiag(4)", "nm(2, 4)")


@pytest.fixture(scope="module")
def block_kernels():
    memo: dict = {}

    def get(fmt: str, body: str):
        key = (fmt, body)
        if key not in memo:
            text = (f"input A: {fmt}<f64>[M, N]\ninput B: csr<f64>[M, N]\ninput X: dense<f64>[N, F]\n"
                    "output Y: dense<f64>[M, F]\noutput r: dense<f64>[M]\n" + BLOCK_BODIES[body][0])
            prog = sd.loads(text)
            memo[key] = (prog, prog.compile("ref"), prog.compile("numba", parallel=False))
        return memo[key]

    return get


def block_input(fmt: str, m: int, n: int, rng, sparse_slots: bool):
    from sparsedsl.runtime.tensors import BSR, NM, BlockDiag

    if fmt.startswith("bsr"):
        keep = sp.random_array((m // 2, n // 4), density=0.4, format="csr", rng=rng) if m and n else \
            sp.csr_array((m // 2, n // 4))
        return BSR(keep.indptr, keep.indices, rng.standard_normal((keep.nnz, 2, 4)), (m, n))
    if fmt.startswith("blockdiag"):
        return BlockDiag(rng.standard_normal((4, m // 4, n // 4)))
    dense = rng.standard_normal((m, n))
    dense[:, 1::2] = 0.0  # two of every four columns
    if sparse_slots:
        dense[rng.random((m, n)) < 0.5] = 0.0  # groups with one or no entry: the slot-by-slot walk
    return NM.from_dense(dense, 2, 4)


@pytest.mark.parametrize("shape", [(8, 16), (0, 0), (4, 8)])
@pytest.mark.parametrize("sparse_slots", [False, True])
@pytest.mark.parametrize("body", BLOCK_BODIES)
@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
def test_block_intermediates_same_as_reference(fmt, body, sparse_slots, shape, block_kernels):
    if fmt.startswith("blockdiag") and shape != (8, 16):
        shape = (8, 8) if shape == (4, 8) else shape
    prog, ref, numba = block_kernels(fmt, body)
    text = prog.explain()
    if BLOCK_BODIES[body][1]:
        assert f"pattern of T: shared with A — T is present exactly where A is: it is stored in A's {fmt}" in text
        assert "layout of T: block iteration" in text
    else:
        assert "shared with" not in text, text
    m, n = shape
    rng = np.random.default_rng(m + n + sparse_slots)
    A = block_input(fmt, m, n, rng, sparse_slots)
    B = random_csr(rng, max(m, n), 0.3)[:m, :n]
    X = rng.standard_normal((n, 3))
    want, got = ref(A=A, B=B, X=X), numba(A=A, B=B, X=X)
    for out in want:
        same(want[out], got[out], f"{fmt}/{body}/{out}")


def test_blocks_false_keeps_compressed_rows():
    """``blocks=False`` reads every block input in compressed rows: nothing is stored in blocks."""
    from sparsedsl.backends.numba import lower
    from sparsedsl.loop_ir import nodes as L

    text = ("input A: bsr(2, 2)<f64>[N, N]\ninput X: dense<f64>[N, F]\noutput Y: dense<f64>[N, F]\n"
            "output r: dense<f64>[N]\n" + BLOCK_BODIES["walked"][0])
    ir = sd.loads(text).ir(optimized=True).program
    for blocks, shared in ((True, True), (False, False)):
        host = lower(ir, {"blocks": blocks, "parallel": False}).host
        assert any(isinstance(s, L.Alias) and s.name.startswith("blk_") for s in host) == shared
