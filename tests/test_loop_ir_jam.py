"""Unroll-and-jam (``sparsedsl.loop_ir.jam``): where it applies, where it must not, and that jammed kernels
give the answers of unjammed ones, of the reference interpreter and of numpy/scipy."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
import sparsedsl.backends.numba as numba_backend
from sparsedsl.loop_ir import nodes as L
from sparsedsl.loop_ir.jam import FACTOR, fold_flags, jam_forall
from sparsedsl.loop_ir.verify import verify_module

SPMM = """
input  A: csr<{t}>[N, N]
input  X: dense<{t}>[N, F]
output Y: {out}<{t}>[N, F]
Y[i, f] = {red}[j] A[i, j] * X[j, f]
"""

SDDMM = """
input  G: csr<bool>[N, N]
input  Q: dense<{t}>[N, D]
input  K: dense<{t}>[N, D]
output S: csr<{t}>[N, N]
S[i, j] = sum[d] Q[i, d] * K[j, d] where G[i, j]
"""

ATTENTION = """
input  G: csr<bool>[N, N]
input  Q: dense<f64>[N, D]
input  K: dense<f64>[N, D]
input  V: dense<f64>[N, D]
output O: dense<f64>[N, D]
S[i, j] = sum[d] Q[i, d] * K[j, d] where G[i, j]
P[i, j] = softmax[j] S[i, j]
O[i, d] = sum[j] P[i, j] * V[j, d]
"""

TRIANGLES = """
input  A: csr<bool>[N, N]
output t: i64
L[i, j] = i64(A[i, j]) where j < i
t = sum[i, j] (sum[k] L[i, k] * L[j, k] where L[i, j])
"""

SPGEMM = """
input  A: csr<f64>[N, N]
output C: csr<f64>[N, N]
C[i, j] = sum[k] A[i, k] * A[k, j]
"""


def _module(text: str, **options) -> L.Module:
    program = sd.loads(text, name="jam").ir(optimized=True).program
    module = numba_backend.lower(program, options)
    verify_module(module)
    return module


def _jammed(module: L.Module) -> list[L.Forall]:
    return [s for k in module.kernels for s in L.walk_stmts(k.body) if isinstance(s, L.Forall) and s.jam is not None]


# ---------------------------------------------------------------- where it applies


@pytest.mark.parametrize("text, count", [
    (SPMM.format(t="f32", out="dense", red="sum"), 1),
    (SDDMM.format(t="f32"), 1),
    (ATTENTION, 2),  # the scores and the weighted sum; not the exp pass (no loop over d)
    (TRIANGLES, 0),
    (SPGEMM, 0),  # the inner loop walks B's row: no dense loop to jam
])
def test_jammed_walks(text, count):
    assert len(_jammed(_module(text))) == count
    assert _jammed(_module(text, jam=False)) == []


def test_a_jammed_step_holds_one_inner_loop_with_every_copy():
    (s,) = _jammed(_module(SPMM.format(t="f64", out="dense", red="sum")))
    assert s.jam.factor == FACTOR
    (inner,) = [b for b in s.jam.body if isinstance(b, L.Forall)]
    keys = [a.value for a in inner.body if isinstance(a, L.Accumulate)]
    assert len(keys) == FACTOR
    # copy u reads its own coordinate, and the copies come in the walk's order
    for u, v in enumerate(keys):
        assert L.Jam.copy_name(s.var, u) in L.expr_names(v)
        assert s.var not in L.expr_names(v)


def test_explain_reports_the_jam():
    text = sd.loads(SPMM.format(t="f32", out="dense", red="sum"), name="jam_explain").explain()
    assert "unroll-and-jam of Y: 4 entries of 'j' per step" in text
    assert "loop over 'f'" in text


def test_loops_and_code_show_the_jam():
    loops = sd.loads(SDDMM.format(t="f32"), name="jam_loops").compile(target="numba")
    assert "x_j_u3" in loops.executable.source
    off = sd.loads(SDDMM.format(t="f32"), name="jam_loops").compile(target="numba", jam=False)
    assert "_u0" not in off.executable.source


# ---------------------------------------------------------------- where it must not


def _walk_over(body, ws_kind="range"):
    """A kernel-less Forall over one compressed row (``x_j``, cursor ``w_c``) with ``body``."""
    cur = L.Cursor("w_c", "idx_A", L.Load("ptr_A", (L.Var("x_i"),)),
                   L.Load("ptr_A", (L.Op("+", (L.Var("x_i"), L.Const(1, "i64")), "i64"),)))
    return L.Forall("x_j", L.Iteration("intersect", drivers=(cur,)), tuple(body)), {"w_ws": ws_kind}


def _dense(var, body):
    return L.Forall(var, L.Iteration("dense", extent=L.Var("n_F")), tuple(body))


def _acc(key="x_f", ws="w_ws"):
    value = L.Op("*", (L.Load("val_A", (L.Var("w_c_p"),)), L.Load("val_X", (L.Var("x_j"), L.Var("x_f")))), "f64")
    return L.Accumulate(ws, L.Var(key), "sum", value)


def test_the_plain_accumulating_walk_is_jammed():
    s, kinds = _walk_over([_dense("x_f", [_acc()])])
    assert jam_forall(s, kinds) is not None


@pytest.mark.parametrize("kind", ["hash", "sort", "auto"])
def test_no_jam_into_an_unordered_workspace(kind):
    s, kinds = _walk_over([_dense("x_f", [_acc()])], ws_kind=kind)
    assert jam_forall(s, kinds) is None


def test_no_jam_when_the_key_is_not_the_inner_variable():
    # every step would hit key x_j from several copies in a new order
    s, kinds = _walk_over([_dense("x_f", [_acc(key="x_j")])])
    assert jam_forall(s, kinds) is None


def test_no_jam_when_the_tail_writes_what_the_inner_loop_reads():
    # the tail rescales X's row j: a later copy's inner loop would read X before an earlier tail changed it
    store = L.Store("val_X", (L.Var("x_j"), L.Const(0, "i64")), L.Const(0.0, "f64"))
    s, kinds = _walk_over([_dense("x_f", [_acc()]), store])
    assert jam_forall(s, kinds) is None


def test_no_jam_when_a_pre_statement_reads_what_the_tail_writes():
    pre = L.Let("w_at", "i64", L.Var("w_pos"))
    inner = _dense("x_f", [L.Set("w_s", L.Op("+", (L.Var("w_s"), L.Var("w_at")), "i64"))])
    tail = L.Set("w_pos", L.Op("+", (L.Var("w_pos"), L.Const(1, "i64")), "i64"))
    s, kinds = _walk_over([pre, L.Let("w_s", "i64", L.Const(0, "i64")), inner, tail])
    assert jam_forall(s, kinds) is None
    # the same walk without the read of w_pos is fine
    s, kinds = _walk_over([L.Let("w_at", "i64", L.Const(1, "i64")), L.Let("w_s", "i64", L.Const(0, "i64")),
                           inner, tail])
    assert jam_forall(s, kinds) is not None


def test_no_jam_when_the_tail_reads_the_workspace():
    tail = L.Set("w_last", L.Load("w_ws_val", (L.Const(0, "i64"),)))
    s, kinds = _walk_over([_dense("x_f", [_acc()]), tail])
    assert jam_forall(s, kinds) is None


def test_no_jam_under_a_guard_that_changes_along_the_walk():
    guard = L.Let("w_g", "bool", L.Op(">", (L.Var("x_j"), L.Const(3, "i64")), "bool"))
    s, kinds = _walk_over([guard, L.If(L.Var("w_g"), (_dense("x_f", [_acc()]),))])
    assert jam_forall(s, kinds) is None
    invariant = L.Let("w_g", "bool", L.Op(">", (L.Var("n_F"), L.Const(0, "i64")), "bool"))
    s, kinds = _walk_over([invariant, L.If(L.Var("w_g"), (_dense("x_f", [_acc()]),))])
    assert jam_forall(s, kinds) is not None


def test_flags_of_a_flag_only_loop_fold_unless_read_in_between():
    flag_loop = _dense("x_d", [L.Set("w_has", L.Const(True, "bool"))])
    folded = fold_flags((L.Let("w_has", "bool", L.Const(False, "bool")), flag_loop))
    assert folded == (L.Let("w_has", "bool", L.Op(">", (L.Var("n_F"), L.Const(0, "i64")), "bool")),)
    read = L.Set("w_seen", L.Var("w_has"))
    kept = (L.Let("w_has", "bool", L.Const(False, "bool")), read, flag_loop)
    assert fold_flags(kept) == kept


# ---------------------------------------------------------------- same answers


def _random_csr(n, density, seed, dtype=np.float64, lengths=None):
    rng = np.random.default_rng(seed)
    if lengths is None:
        a = sp.random_array((n, n), density=density, format="csr", rng=rng)
    else:
        # rows of every length from 0 to FACTOR * 2 + 1: full steps, left-over entries, both, neither
        rows = [np.sort(rng.choice(n, size=min(n, lengths[i % len(lengths)]), replace=False)) for i in range(n)]
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
        a = sp.csr_array((np.ones(indptr[-1]), np.concatenate(rows).astype(np.int64), indptr), shape=(n, n))
    vals = rng.integers(-4, 5, a.nnz) if np.dtype(dtype).kind == "i" else rng.standard_normal(a.nnz)
    return sp.csr_array((vals.astype(dtype), a.indices, a.indptr), shape=(n, n))


LENGTHS = list(range(2 * FACTOR + 2))


@functools.lru_cache(maxsize=None)
def _kernels(text):
    """Jammed and unjammed serial kernels (Numba compiles serial ones faster; the jam is the same) with
    ``reassoc`` off, so that every sum runs in source order and the two must agree bit for bit."""
    program = sd.loads(text, name="jam_same")
    options = {"parallel": False, "reassoc": False}
    return (program.compile(target="numba", **options), program.compile(target="numba", jam=False, **options),
            program.compile(target="ref"))


def _run_both(text, inputs):
    return tuple(k(**inputs) for k in _kernels(text))


def _dense_of(x):
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x)


@pytest.mark.parametrize("dtype, t, out, red", [
    (np.float64, "f64", "dense", "sum"),
    (np.float32, "f32", "csr", "sum"),  # a row workspace compacted into CSR: its first contribution stores
    (np.float64, "f64", "csr", "max"),  # ... and with max, a later copy that stored too would win wrongly
    (np.int64, "i64", "dense", "min"),
])
@pytest.mark.parametrize("f", [0, 1, 3, 64, 65])
def test_spmm_jammed_equals_unjammed_reference_and_numpy(dtype, t, out, red, f):
    n = 23
    A = _random_csr(n, 0, seed=f + len(out), dtype=dtype, lengths=LENGTHS)
    rng = np.random.default_rng(f)
    X = (rng.integers(-3, 4, (n, f)) if t == "i64" else rng.standard_normal((n, f))).astype(dtype)
    text = SPMM.format(t=t, out=out, red=red)
    # reassoc off: every sum in source order, so the jammed kernel must agree bit for bit
    on, off, ref = (_dense_of(r["Y"]) for r in _run_both(text, {"A": A, "X": X}))
    np.testing.assert_array_equal(on, off)
    np.testing.assert_array_equal(np.signbit(on), np.signbit(off))
    np.testing.assert_allclose(on, ref, rtol=1e-5 if t == "f32" else 1e-12)
    dense = A.toarray()
    expect = np.zeros((n, f), dtype=np.float64)
    for i in range(n):
        cols = A.indices[A.indptr[i]:A.indptr[i + 1]]
        if len(cols) and f:
            prods = dense[i, cols][:, None].astype(np.float64) * X[cols].astype(np.float64)
            expect[i] = {"sum": prods.sum, "max": prods.max, "min": prods.min}[red](axis=0)
    np.testing.assert_allclose(on, expect, rtol=1e-5 if t == "f32" else 1e-12, atol=1e-5 if t == "f32" else 0)


@pytest.mark.parametrize("d", [0, 1, 5, 64])
def test_sddmm_jammed_equals_unjammed_and_scipy(d):
    n = 29
    G = _random_csr(n, 0, seed=d, lengths=LENGTHS)
    G = sp.csr_array((np.ones(G.nnz, dtype=bool), G.indices, G.indptr), shape=G.shape)
    rng = np.random.default_rng(d)
    Q, K = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    on, off, ref = (r["S"] for r in _run_both(SDDMM.format(t="f64"), {"G": G, "Q": Q, "K": K}))
    np.testing.assert_array_equal(_dense_of(on), _dense_of(off))
    np.testing.assert_allclose(_dense_of(on), _dense_of(ref), rtol=1e-12, atol=1e-12)
    expect = G.toarray() * (Q @ K.T) if d else np.zeros((n, n))
    np.testing.assert_allclose(_dense_of(on), expect, rtol=1e-12, atol=1e-12)
    # an empty reduction range leaves no entry at all (the reference's rule), jammed or not
    assert sp.csr_array(on).nnz == (G.nnz if d else 0)


@pytest.mark.parametrize("d", [1, 8, 64])
def test_attention_jammed_equals_unjammed_and_numpy(d):
    n = 31
    G = _random_csr(n, 0, seed=d + 100, lengths=LENGTHS)
    G = sp.csr_array((np.ones(G.nnz, dtype=bool), G.indices, G.indptr), shape=G.shape)
    rng = np.random.default_rng(d)
    Q, K, V = (rng.standard_normal((n, d)) for _ in range(3))
    on, off, ref = (np.asarray(r["O"]) for r in _run_both(ATTENTION, {"G": G, "Q": Q, "K": K, "V": V}))
    np.testing.assert_array_equal(on, off)
    np.testing.assert_allclose(on, ref, rtol=1e-12, atol=1e-12)
    expect = np.zeros((n, d))
    for i in range(n):
        cols = G.indices[G.indptr[i]:G.indptr[i + 1]]
        if len(cols):
            s = K[cols] @ Q[i]
            p = np.exp(s - s.max())
            expect[i] = (p / p.sum()) @ V[cols]
    np.testing.assert_allclose(on, expect, rtol=1e-10, atol=1e-12)


def test_spmm_on_a_real_graph_with_reassociation_matches_scipy():
    from pathlib import Path

    import scipy.io

    path = Path(__file__).resolve().parent.parent / "sparsedsl" / "data" / "ca-HepTh.mtx.gz"
    A = sp.csr_array(scipy.io.mmread(path)).astype(np.float32)
    A.sum_duplicates()
    A.sort_indices()
    X = np.random.default_rng(0).standard_normal((A.shape[0], 64)).astype(np.float32)
    Y = sd.loads(SPMM.format(t="f32", out="dense", red="sum"), name="jam_real").compile(target="numba")(A=A, X=X)["Y"]
    np.testing.assert_allclose(np.asarray(Y), (A.astype(np.float64) @ X.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_the_verifier_checks_the_jammed_body():
    import dataclasses

    from sparsedsl.loop_ir.verify import check_module

    module = _module(SPMM.format(t="f64", out="dense", red="sum"))
    assert check_module(module) == []
    (s,) = _jammed(module)
    beyond = L.Jam.copy_name(s.var, FACTOR)  # a copy the step does not have
    bad = dataclasses.replace(s, jam=L.Jam(FACTOR, (L.Let("w_bad", "i64", L.Var(beyond)),)))

    def swap(stmts):
        out = []
        for t in stmts:
            if t is s:
                t = bad
            else:
                for field in ("body", "then", "orelse"):
                    if isinstance(getattr(t, field, None), tuple):
                        t = dataclasses.replace(t, **{field: swap(getattr(t, field))})
            out.append(t)
        return tuple(out)

    broken = dataclasses.replace(module, kernels=tuple(dataclasses.replace(k, body=swap(k.body))
                                                       for k in module.kernels))
    assert any(beyond in p for p in check_module(broken))
