"""The binder's CSR structure check, in its two versions: numpy passes (``runtime.convert.csr_canonical``, every
target) and the numba target's compiled loops (``backends.numba.validate.canonical_csr``). Both must answer
exactly what a row-by-row Python oracle answers, on random structures with every defect the check exists for;
a wrong True would let an unsorted row or an out-of-range index reach a kernel.

Also: a kernel called with a matrix whose indices were edited in place (scipy's cached canonical flag still
set) gets the canonical copy, never the edited arrays."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

import sparsedsl as sd
from sparsedsl.backends.numba.validate import canonical_csr
from sparsedsl.runtime.convert import csr_canonical

CHECKS = {"numpy": csr_canonical, "numba": canonical_csr}


def oracle(indptr, indices, ncols) -> bool:
    indptr, indices = [int(x) for x in indptr], [int(x) for x in indices]
    if not indptr or indptr[0] != 0 or indptr[-1] != len(indices):
        return False
    if any(b < a for a, b in zip(indptr, indptr[1:])):
        return False
    if any(not 0 <= j < ncols for j in indices):
        return False
    for a, b in zip(indptr, indptr[1:]):
        row = indices[a:b]
        if any(y <= x for x, y in zip(row, row[1:])):
            return False
    return True


@st.composite
def structures(draw):
    """Row lengths and sorted unique rows, then (sometimes) one defect: a swapped pair, a duplicate, an
    index out of range or negative, a decreasing or shifted row pointer."""
    ncols = draw(st.integers(1, 12))
    nrows = draw(st.integers(0, 8))
    rows = [sorted(draw(st.sets(st.integers(0, ncols - 1), max_size=ncols))) for _ in range(nrows)]
    indptr = np.zeros(nrows + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.array([j for r in rows for j in r], dtype=np.int64)
    nnz = len(indices)
    defect = draw(st.sampled_from(["none", "swap", "dup", "high", "negative", "ptr_down", "ptr_end", "ptr_start"]))
    if defect in ("swap", "dup") and nnz >= 2:
        q = draw(st.integers(1, nnz - 1))
        if defect == "swap":
            indices[q - 1], indices[q] = indices[q], indices[q - 1]
        else:
            indices[q] = indices[q - 1]
    elif defect in ("high", "negative") and nnz:
        q = draw(st.integers(0, nnz - 1))
        indices[q] = ncols + draw(st.integers(0, 3)) if defect == "high" else -draw(st.integers(1, 3))
    elif defect == "ptr_down" and nrows >= 2 and nnz:
        r = draw(st.integers(1, nrows - 1))
        indptr[r] = indptr[r + 1] + 1 if indptr[r + 1] < nnz else max(indptr[r - 1] - 1, 0)
    elif defect == "ptr_end":
        indptr[-1] += draw(st.sampled_from([-1, 1]))
    elif defect == "ptr_start" and nrows:
        indptr[0] = 1
    dtype = draw(st.sampled_from([np.int32, np.int64]))
    return indptr.astype(dtype), indices.astype(dtype), ncols


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
@settings(max_examples=400, deadline=None)
@given(case=structures())
def test_check_answers_what_the_oracle_answers(check, case):
    indptr, indices, ncols = case
    before = (indptr.copy(), indices.copy())
    assert bool(check(indptr, indices, ncols)) == oracle(indptr, indices, ncols)
    assert np.array_equal(indptr, before[0]) and np.array_equal(indices, before[1])


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_check_on_edge_structures(check):
    i32 = np.int32
    assert check(np.array([0], i32), np.array([], i32), 3)                  # no rows
    assert check(np.array([0, 0, 0], i32), np.array([], i32), 3)            # empty rows, no entries
    assert check(np.array([0, 1], i32), np.array([2], i32), 3)              # a single entry
    assert not check(np.array([0, 1], i32), np.array([3], i32), 3)          # index == ncols
    assert check(np.array([0, 0, 2, 2, 3], i32), np.array([0, 2, 1], i32), 3)  # empty rows around a drop
    assert not check(np.array([0, 0, 2, 2, 3], i32), np.array([2, 0, 1], i32), 3)
    # a drop at a row start is fine; the same drop one position later is not
    assert check(np.array([0, 2, 4], i32), np.array([1, 2, 0, 1], i32), 3)
    assert not check(np.array([0, 3, 4], i32), np.array([1, 2, 0, 1], i32), 3)
    big = np.int64(2**40)
    assert check(np.array([0, 2], np.int64), np.array([0, big], np.int64), big + 1)
    assert not check(np.array([0, 2], np.int64), np.array([0, big], np.int64), big)


@pytest.mark.parametrize("target", ["ref", "numba"])
def test_indices_edited_in_place_are_canonicalized_not_trusted(target):
    kernel = sd.loads("input A: csr<f64>[M, N]\ninput X: dense<f64>[N, F]\noutput Y: dense<f64>[M, F]\n"
                      "Y[i, f] = sum[j] A[i, j] * X[j, f]\n", name="edited").compile(target=target)
    A = sp.csr_array(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 4.0]]))
    X = np.arange(6.0).reshape(3, 2)
    assert A.has_canonical_format
    A.indices[[2, 3]] = A.indices[[3, 2]]   # row 1 now lists column 2 before column 1 (the flag stays set)
    A.data[[2, 3]] = A.data[[3, 2]]
    expected = A.toarray() @ X
    indices = A.indices.copy()
    np.testing.assert_allclose(kernel(A=A, X=X)["Y"], expected)
    np.testing.assert_array_equal(A.indices, indices)   # the input is not sorted in place
