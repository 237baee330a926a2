"""The numba target's compiled check of an ``NM`` input (``backends.numba.validate.canonical_nm``) and the
binder's fast path that trusts it.

The check must answer exactly "``NM.validate`` passes and ``NM.is_canonical()``" (the numpy checks every other
path uses), on random offsets with every defect those checks exist for: a wrong True would let an offset out
of its group, a filled slot after an empty one or an unsorted group reach a kernel, which reads slots without
checking them. The fast path must bind what ``bind_value`` binds, and hand everything else to it (which
raises the precise error or canonicalizes)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

import sparsedsl as sd
from sparsedsl.backends.numba.validate import canonical_nm
from sparsedsl.core.errors import SdslInputError
from sparsedsl.runtime.convert import InputBinder
from sparsedsl.runtime.tensors import NM


def numpy_answer(t: NM) -> bool:
    try:
        t.validate("A")
    except SdslInputError:
        return False
    return t.is_canonical()


@st.composite
def containers(draw):
    """A valid canonical N:M container, then (sometimes) one defect: an offset below -1 or at m or more, a
    filled slot after an empty one, a swapped or repeated pair, an offset of the last group past the last
    column. The offsets' integer type varies too."""
    n = draw(st.integers(1, 4))
    m = draw(st.integers(n, 6))
    rows = draw(st.integers(1, 5))
    ncols = draw(st.integers(1, 14))
    groups = -(-ncols // m)
    dtype = draw(st.sampled_from([np.int8, np.int16, np.int32, np.int64]))
    off = np.full((rows, groups, n), -1, dtype=dtype)
    for r in range(rows):
        for g in range(groups):
            width = min(m, ncols - g * m)
            cols = sorted(draw(st.sets(st.integers(0, width - 1), max_size=min(n, width))))
            off[r, g, :len(cols)] = cols
    defect = draw(st.sampled_from(["none", "low", "high", "gap", "swap", "dup", "past"]))
    r, g = draw(st.integers(0, rows - 1)), draw(st.integers(0, groups - 1))
    filled = int(np.count_nonzero(off[r, g] >= 0))
    if defect == "low":
        off[r, g, draw(st.integers(0, n - 1))] = -draw(st.integers(2, 5))
    elif defect == "high":
        off[r, g, draw(st.integers(0, n - 1))] = m + draw(st.integers(0, 3))
    elif defect == "gap" and 0 < filled < n:
        off[r, g, filled] = off[r, g, filled - 1]
        off[r, g, filled - 1] = -1
    elif defect in ("swap", "dup") and filled >= 2:
        s = draw(st.integers(1, filled - 1))
        if defect == "swap":
            off[r, g, s - 1], off[r, g, s] = off[r, g, s], off[r, g, s - 1]
        else:
            off[r, g, s] = off[r, g, s - 1]
    elif defect == "past" and ncols % m:
        off[r, groups - 1, 0] = ncols - (groups - 1) * m + draw(st.integers(0, m - 1 - ncols % m))  # from the first past
    values = np.arange(1, off.size + 1, dtype=np.float64).reshape(off.shape) * (off >= 0)
    return NM._raw(values=values, offsets=off, shape=(rows, ncols), n=n, m=m, dtype="f64")


@settings(max_examples=400)  # cheap: one compiled call per example
@given(containers())
def test_compiled_check_answers_what_the_numpy_checks_answer(t):
    assert bool(canonical_nm(t.offsets, t.m, t.shape[1])) == numpy_answer(t)


def test_each_defect_is_caught():
    # the numpy checks' own verdicts, then the compiled one on the same offsets
    base = np.array([[[0, 2], [1, -1]]], dtype=np.int8)  # one row, groups of 4, 7 columns
    bad = {"below -1": [[[-2, 2], [1, -1]]], "at m": [[[0, 4], [1, -1]]], "filled after empty": [[[0, 2], [-1, 1]]],
           "unsorted": [[[2, 0], [1, -1]]], "repeated": [[[1, 1], [1, -1]]], "past the last column": [[[0, 2], [3, -1]]]}
    for what, off in {"valid": base, **{k: np.array(v, dtype=np.int8) for k, v in bad.items()}}.items():
        t = NM._raw(values=np.ones(off.shape), offsets=off, shape=(1, 7), n=2, m=4, dtype="f64")
        assert bool(canonical_nm(off, 4, 7)) == (what == "valid") == numpy_answer(t), what


SPMM = """input  A: nm(2, 4)<f64>[N, K]
input  X: dense<f64>[K, F]
output Y: dense<f64>[N, F]
Y[i, f] = sum[k] A[i, k] * X[k, f]
"""


def _program(src=SPMM):
    return sd.loads(src, name="nm_check")


def test_binder_takes_a_valid_container_as_it_is():
    ir = _program().ir()
    dense = np.array([[1.0, 0, 2, 0, 0, 3, 0], [0, 0, 0, 0, 4, 0, 5]])
    t = sd.NM.from_dense(dense, 2, 4)
    X = np.ones((7, 3))
    fast, fast_sizes = InputBinder(ir, checks={"nm": canonical_nm})({"A": t, "X": X})
    slow, slow_sizes = InputBinder(ir)({"A": t, "X": X})
    assert fast["A"] is t  # bound without a copy or a conversion
    assert fast_sizes == slow_sizes == {"N": 2, "K": 7, "F": 3}
    np.testing.assert_array_equal(fast["A"].offsets, slow["A"].offsets)
    np.testing.assert_array_equal(fast["A"].values, slow["A"].values)


@pytest.mark.parametrize("decl", ["nm(2, 4)<f64>", "nm(P, Q)<f64>", "nm(P, 4)<f64>"])
def test_fast_path_binds_the_same_sizes_as_bind_value(decl):
    src = SPMM.replace("nm(2, 4)<f64>", decl)
    ir = _program(src).ir()
    t = sd.NM.from_dense(np.eye(5), 2, 4)
    args = {"A": t, "X": np.ones((5, 2))}
    fast, fast_sizes = InputBinder(ir, checks={"nm": canonical_nm})(args)
    slow, slow_sizes = InputBinder(ir)(args)
    assert fast["A"] is t
    assert fast_sizes == slow_sizes


def test_other_parameters_or_dtypes_leave_the_fast_path():
    ir = _program().ir()
    X = np.ones((8, 2))
    wide = sd.NM.from_dense(np.eye(8), 2, 8)  # nm(2, 8): converted to nm(2, 4)
    as_f32 = sd.NM.from_dense(np.eye(8, dtype=np.float32), 2, 4)  # f32: cast to f64
    for t in (wide, as_f32):
        fast, _ = InputBinder(ir, checks={"nm": canonical_nm})({"A": t, "X": X})
        slow, _ = InputBinder(ir)({"A": t, "X": X})
        assert fast["A"] is not t and (fast["A"].n, fast["A"].m, fast["A"].dtype) == (2, 4, "f64")
        np.testing.assert_array_equal(fast["A"].offsets, slow["A"].offsets)
        np.testing.assert_array_equal(fast["A"].values, slow["A"].values)


def test_kernel_with_defective_offsets_raises_or_canonicalizes():
    kernel = _program().compile(target="numba", parallel=False)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((7, 3))
    dense = np.array([[1.0, 0, 2, 0, 0, 3, 0], [0, 0, 0, 0, 4, 0, 5]])
    good = sd.NM.from_dense(dense, 2, 4)
    np.testing.assert_allclose(kernel(A=good, X=X).Y, dense @ X, rtol=1e-12)
    # unsorted slots: the same matrix, canonicalized at the call (the user's arrays untouched)
    off = good.offsets.copy()
    vals = good.values.copy()
    off[0, 0] = off[0, 0, ::-1]
    vals[0, 0] = vals[0, 0, ::-1]
    swapped = sd.NM(vals, off, (2, 7), 2, 4)
    np.testing.assert_allclose(kernel(A=swapped, X=X).Y, dense @ X, rtol=1e-12)
    assert (swapped.offsets == off).all()
    # a filled slot after an empty one, an offset past the last column: the numpy check's own errors
    gap = good.offsets.copy()
    gap[0, 1] = [-1, 1]
    past = good.offsets.copy()
    past[1, 1] = [0, 3]
    for bad, message in ((gap, "an empty slot (offset -1) precedes a filled one"),
                         (past, "an offset points past the last column 6")):
        with pytest.raises(sd.SdslInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            kernel(A=sd.NM(good.values, bad, (2, 7), 2, 4), X=X)


def test_bool_pattern_with_empty_slots_is_still_a_pattern():
    src = """input  G: nm(2, 4)<bool>[N, N]
input  X: dense<f64>[N, F]
output Y: dense<f64>[N, F]
Y[i, f] = sum[j] f64(G[i, j]) * X[j, f]
"""
    kernel = sd.loads(src, name="nm_pattern").compile(target="numba", parallel=False)
    mask = sp.random_array((8, 8), density=0.3, format="csr", rng=np.random.default_rng(2)) != 0
    dense = mask.toarray()
    dense[:, 1::4] = False  # at most 3 per group of 4: keep 2
    dense[:, 2::4] = False
    G = sd.NM.from_dense(dense, 2, 4)
    X = np.random.default_rng(3).standard_normal((8, 2))
    np.testing.assert_allclose(kernel(G=G, X=X).Y, dense.astype(float) @ X, rtol=1e-12)
