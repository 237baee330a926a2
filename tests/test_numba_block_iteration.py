"""Block iteration: rows of bsr, blockdiag and nm inputs walked in their own layout on the numba target.

A row walk that drives its loop alone (SpMM's ``A[i, k]``, a row reduction, a softmax row, a pattern that masks
SDDMM, SpGEMM's left or right operand) reads the blocks themselves (``Lowerer.block_walk``); everything else
(a merge with another operand, a search) reads the rows placed at the call. Every result must equal the
reference interpreter's (f64 SpMM also the rows-only kernel's: ``blocks=False``) and numpy/scipy's. Inputs:
stored zeros inside blocks and slots (present entries), empty block rows, empty groups, a short last N:M group,
an empty matrix, a single block, the value dtypes, bool patterns; hypothesis draws shapes and densities.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsedsl as sd
from sparsedsl.runtime.tensors import BSR, NM, BlockDiag

FORMATS = ("bsr(2, 3)", "blockdiag(3)", "nm(2, 4)")
NP = {"f64": np.float64, "f32": np.float32, "i64": np.int64, "i32": np.int32, "bool": np.bool_}

PROGRAMS = {
    "spmm": """\
input  A: {fmt}<{dt}>[M, N]
input  X: dense<{dt}>[N, F]
output Y: dense<{dt}>[M, F]
Y[i, f] = sum[k] A[i, k] * X[k, f]
""",
    "rows": """\
input  A: {fmt}<{dt}>[M, N]
output s: dense<{dt}>[M] fill 0
output m: dense<{dt}>[M] fill 0
output c: dense<i64>[M] fill 0
s[i] = sum[j] A[i, j]
m[i] = max[j] A[i, j]
c[i] = count[j] A[i, j]
""",
    "softmax": """\
input  A: {fmt}<{dt}>[M, N]
output P: csr<f64>[M, N]
P[i, j] = softmax[j] f64(A[i, j])
""",
    "attention": """\
input  G: {fmt}<bool>[M, N]
input  Q: dense<f64>[M, D]
input  K: dense<f64>[N, D]
input  V: dense<f64>[N, D]
output O: dense<f64>[M, D]
S[i, j] = sum[d] Q[i, d] * K[j, d] where G[i, j]
P[i, j] = softmax[j] S[i, j]
O[i, d] = sum[j] P[i, j] * V[j, d]
""",
    "left": """\
input  A: {fmt}<{dt}>[M, N]
input  B: csr<{dt}>[N, N]
output C: csr<{dt}>[M, N]
C[i, j] = sum[k] A[i, k] * B[k, j]
""",
    "right": """\
input  B: csr<{dt}>[M, M]
input  A: {fmt}<{dt}>[M, N]
output C: csr<{dt}>[M, N]
C[i, j] = sum[k] B[i, k] * A[k, j]
""",
}

_KERNELS: dict = {}


def kernel(name: str, fmt: str, dt: str, how: str = "blocks"):
    """A program's kernel, compiled once per test session: ``blocks`` (numba), ``rows`` (numba, compressed rows
    only) or ``ref``."""
    key = (name, fmt, dt, how)
    if key not in _KERNELS:
        prog = sd.loads(PROGRAMS[name].format(fmt=fmt, dt=dt), name=f"blk_{name}")
        _KERNELS[key] = prog.compile("ref") if how == "ref" else prog.compile("numba", blocks=how == "blocks")
    return _KERNELS[key]


def block_input(fmt: str, rows_of_blocks: int, density: float, seed: int, dt: str):
    """A random input of ``fmt`` (stored zeros included) and its (present mask, values) as dense arrays."""
    rng = np.random.default_rng(seed)
    np_dt = NP[dt]

    def values(shape):
        v = rng.integers(-2, 3, size=shape)  # a fifth of the stored values are zeros
        return (v != 0) if dt == "bool" else v.astype(np_dt)

    if fmt.startswith("bsr"):
        m, n = 2 * rows_of_blocks, 9
        keep = rng.random((rows_of_blocks, 3)) < density
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
        indices = np.nonzero(keep)[1]
        t = BSR(indptr, indices, values((int(keep.sum()), 2, 3)), (m, n))
    elif fmt.startswith("blockdiag"):
        t = BlockDiag(values((3, rows_of_blocks, 2)))
    else:
        m, n = 2 * rows_of_blocks, 10  # groups of 4 columns, the last one of 2
        offsets = np.full((m, 3, 2), -1, dtype=np.int8)
        for r in range(m):
            full = rng.random() < density  # every slot of the row filled (walked as one run of slots)
            for g, width in enumerate((4, 4, 2)):
                size = 2 if full else rng.integers(0, 3) if density else 0
                take = np.sort(rng.choice(width, size=size, replace=False))
                offsets[r, g, :len(take)] = take
        vals = values((m, 3, 2))
        vals[offsets < 0] = 0
        t = NM(vals, offsets, (m, n), 2, 4)
    csr = t.to_csr()
    present = np.zeros(t.shape, dtype=bool)
    dense = np.zeros(t.shape, dtype=np_dt)
    rows = np.repeat(np.arange(t.shape[0]), np.diff(csr.indptr))
    present[rows, csr.indices] = True
    dense[rows, csr.indices] = csr.data
    return t, present, dense


def _same(a, b, dt):
    a, b = np.asarray(a), np.asarray(b)
    if dt in ("f32",):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def _csr_dense(x):
    return sp.csr_array(x).toarray() if not isinstance(x, np.ndarray) else x


def run_three(name: str, fmt: str, dt: str, inputs: dict, rows: bool = False) -> dict:
    """The outputs of the block-walking kernel, checked equal to the reference's and (``rows``) to those of
    the kernel that reads compressed rows only; the block-walking kernel's are returned."""
    before = {k: _snapshot(v) for k, v in inputs.items()}
    out = kernel(name, fmt, dt)(**inputs)
    others = (kernel(name, fmt, dt, "ref"), *((kernel(name, fmt, dt, "rows"),) if rows else ()))
    for other in (k(**inputs) for k in others):
        for key in out:
            _same(_csr_dense(out[key]), _csr_dense(other[key]), dt if name in ("spmm", "rows") else "f64")
    for k, v in inputs.items():  # inputs are never modified
        np.testing.assert_array_equal(_snapshot(v), before[k])
    return out


def _snapshot(v) -> np.ndarray:
    if sp.issparse(v):
        return np.concatenate([v.indptr, v.indices, v.data]).astype(np.float64)
    if hasattr(v, "to_csr"):
        return np.array(getattr(v, v.value_attr), copy=True)
    return np.array(v, copy=True)


@pytest.mark.parametrize("fmt, dt", [("bsr(2, 3)", "f64"), ("bsr(2, 3)", "f32"), ("bsr(2, 3)", "i64"),
                                     ("bsr(2, 3)", "i32"), ("blockdiag(3)", "f64"), ("blockdiag(3)", "i32"),
                                     ("nm(2, 4)", "f64"), ("nm(2, 4)", "i32")])
def test_block_spmm_matches_scipy(fmt, dt):
    rng = np.random.default_rng(3)
    for rows_of_blocks, density, seed in ((4, 0.5, 1), (3, 0.0, 2), (1, 1.0, 3), (5, 0.3, 4)):
        A, _present, dense = block_input(fmt, rows_of_blocks, density, seed, dt)
        X = rng.integers(-2, 3, size=(A.shape[1], 5)).astype(NP[dt])
        Y = run_three("spmm", fmt, dt, {"A": A, "X": X}, rows=dt == "f64")["Y"]
        np.testing.assert_allclose(np.asarray(Y), dense @ X, rtol=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_block_row_reductions_see_stored_zeros(fmt):
    """count counts stored zeros (present entries); an empty row gets the fill."""
    A, present, dense = block_input(fmt, 4, 0.5, 7, "f64")
    out = run_three("rows", fmt, "f64", {"A": A})
    np.testing.assert_array_equal(np.asarray(out["c"]), present.sum(axis=1))
    np.testing.assert_allclose(np.asarray(out["s"]), dense.sum(axis=1))
    want_max = np.where(present.any(axis=1), np.where(present, dense, -np.inf).max(axis=1), 0.0)
    np.testing.assert_allclose(np.asarray(out["m"]), want_max)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["softmax", "left", "right"])
def test_block_softmax_and_products(fmt, name):
    rng = np.random.default_rng(11)
    for rows_of_blocks, density, seed in ((4, 0.6, 5), (2, 0.0, 6), (3, 1.0, 8)):
        A, present, dense = block_input(fmt, rows_of_blocks, density, seed, "f64")
        inputs = {"A": A}
        if name == "left":
            inputs["B"] = sp.random_array((A.shape[1], A.shape[1]), density=0.4, format="csr", rng=rng)
        if name == "right":
            inputs["B"] = sp.random_array((A.shape[0], A.shape[0]), density=0.4, format="csr", rng=rng)
        out = run_three(name, fmt, "f64", inputs)
        if name == "softmax":
            P = sp.csr_array(out["P"])
            np.testing.assert_array_equal(P.toarray() != 0, present)  # exp of a finite value: never 0 here
            sums = np.asarray(P.sum(axis=1)).ravel()
            np.testing.assert_allclose(sums[present.any(axis=1)], 1.0)
        elif name == "left":
            np.testing.assert_allclose(_csr_dense(out["C"]), dense @ inputs["B"].toarray(), atol=1e-12)
        else:
            np.testing.assert_allclose(_csr_dense(out["C"]), inputs["B"].toarray() @ dense, atol=1e-12)


@pytest.mark.parametrize("fmt", FORMATS)
def test_block_pattern_masks_attention(fmt):
    """A bool block pattern drives SDDMM -> softmax -> SpMM (the softmax's row cache by coordinate)."""
    G, present, _ = block_input(fmt, 4, 0.6, 9, "bool")
    rng = np.random.default_rng(10)
    m, n = G.shape
    Q, K, V = rng.standard_normal((m, 4)), rng.standard_normal((n, 4)), rng.standard_normal((n, 4))
    O = np.asarray(run_three("attention", fmt, "bool", {"G": G, "Q": Q, "K": K, "V": V})["O"])
    S = np.where(present, Q @ K.T, -np.inf)
    with np.errstate(invalid="ignore"):
        P = np.exp(S - S.max(axis=1, keepdims=True))
        P = np.nan_to_num(P / P.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(O, P @ V, atol=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(FORMATS), name=st.sampled_from(["spmm", "rows", "softmax", "left", "right"]),
       rows_of_blocks=st.integers(0, 6), density=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_block_walks_match_the_reference(fmt, name, rows_of_blocks, density, seed):
    dt = "f64"
    if rows_of_blocks == 0 and fmt.startswith("blockdiag"):
        rows_of_blocks = 1  # blockdiag's blocks cannot be empty
    A, _present, _dense = block_input(fmt, rows_of_blocks, density, seed, dt)
    rng = np.random.default_rng(seed)
    inputs = {"A": A}
    if name == "spmm":
        inputs["X"] = rng.integers(-2, 3, size=(A.shape[1], 3)).astype(NP[dt])
    if name in ("left", "right"):
        k = A.shape[1] if name == "left" else A.shape[0]
        B = sp.random_array((k, k), density=0.5, format="csr", rng=rng)
        inputs["B"] = sp.csr_array((rng.integers(-2, 3, size=B.nnz).astype(NP[dt]), B.indices, B.indptr),
                                   shape=B.shape)
    got, want = kernel(name, fmt, dt)(**inputs), kernel(name, fmt, dt, "ref")(**inputs)
    for key in want:
        np.testing.assert_allclose(_csr_dense(got[key]), _csr_dense(want[key]), rtol=1e-12, atol=1e-12)


def test_block_walks_read_the_blocks_and_convert_nothing():
    """SpMM's walk of a bsr row reads consecutive coordinates of the blocks: the module takes the blocks'
    arrays only; a merge with another operand (a union) takes the rows too; explain says which."""
    fast = kernel("spmm", "bsr(2, 3)", "f64")
    module = fast.executable.module
    roles = {p.role for p in module.params if p.tensor == "A"}
    assert roles == {"bptr", "bidx", "bval"}
    assert "consecutive blk_val_A" in fast.executable.loops
    diag = kernel("spmm", "blockdiag(3)", "f64")
    assert {p.role for p in diag.executable.module.params if p.tensor == "A"} == {"bval"}
    nm = kernel("spmm", "nm(2, 4)", "f64")
    assert {p.role for p in nm.executable.module.params if p.tensor == "A"} == {"bval", "boff"}
    union = sd.loads("input A: bsr(2, 3)<f64>[M, N]\ninput B: csr<f64>[M, N]\noutput C: csr<f64>[M, N]\n"
                     "output r: dense<f64>[M] fill 0\nC[i, j] = A[i, j] + B[i, j]\nr[i] = sum[j] A[i, j]\n",
                     name="blk_union").compile("numba")
    both = {p.role for p in union.executable.module.params if p.tensor == "A"}
    assert both == {"ptr", "idx", "val", "bptr", "bidx", "bval"}
    rows_only = kernel("spmm", "bsr(2, 3)", "f64", "rows")
    assert {p.role for p in rows_only.executable.module.params if p.tensor == "A"} == {"ptr", "idx", "val"}


def test_block_parameters_bound_from_the_input(tmp_path):
    """bsr(B, B) takes its block size from the value bound; the CLI's explain names the block iteration."""
    prog = sd.loads("input A: bsr(B, B)<f64>[M, N]\ninput x: dense<f64>[N]\noutput y: dense<f64>[M]\n"
                    "y[i] = sum[j] A[i, j] * x[j]\n", name="blk_sized")
    rng = np.random.default_rng(12)
    for b in (2, 3):
        keep = sp.random_array((4, 4), density=0.5, format="csr", rng=rng)
        A = sp.bsr_array((rng.standard_normal((keep.nnz, b, b)), keep.indices, keep.indptr), shape=(4 * b, 4 * b))
        x = rng.standard_normal(4 * b)
        for kernel in (prog.compile("numba"), prog.compile("ref")):
            np.testing.assert_allclose(np.asarray(kernel(A=A, x=x)["y"]), A @ x, rtol=1e-12)
    path = tmp_path / "p.sdsl"
    path.write_text(PROGRAMS["spmm"].format(fmt="bsr(2, 3)", dt="f64"))
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "sparsedsl", "explain", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "layout of A: block iteration" in res.stdout


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_bool_block_input_is_a_pattern(fmt):
    """A bool block format stores False too (inside blocks, empty slots' neighbours): bound to a bool input it is
    a pattern, True at every stored coordinate, on both targets (the reference read the stored False before)."""
    A, present, dense = next(x for x in (block_input(fmt, 3, 0.7, seed, "bool") for seed in range(13, 60))
                             if x[1].any() and not x[2][x[1]].all())  # some stored entries hold False
    prog = sd.loads(f"input A: {fmt}<bool>[M, N]\noutput X: csr<i64>[M, N]\nX[i, j] = i64(A[i, j])\n",
                    name="blk_pattern")
    for kernel in (prog.compile("numba"), prog.compile("ref")):
        X = sp.csr_array(kernel(A=A)["X"])
        np.testing.assert_array_equal(X.toarray(), present.astype(np.int64))
