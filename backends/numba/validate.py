"""The binder's structure checks of CSR and N:M inputs, compiled: the numba target hands them to the runtime
(``Executable.structure_checks``) in place of the numpy passes that ``sparsedsl.runtime.convert`` and
``sparsedsl.runtime.tensors`` use otherwise.

Binding checks every call's CSR input (the index arrays are mutable, and scipy's ``has_canonical_format`` is
a cached flag that in-place edits do not reset), and on the small sample matrices the numpy passes cost a
tenth to a sixth of a whole SpMM or attention call: each makes a temporary as large as the entries. Here
the same check is a few loops without temporaries that LLVM vectorizes (one call: 30–70 µs on the sample
matrices, against 90–150 µs for the numpy passes in the same process; more while the kernel's threads are
still spinning). An ``NM`` container's offsets are checked the same way on every call, for the same reason.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def canonical_csr(indptr, indices, ncols):
    """Whether ``(indptr, indices)`` is canonical CSR with ``ncols`` columns: ``indptr`` starts at 0, never
    decreases and ends at ``len(indices)``; every index is in ``[0, ncols)``; indices strictly increase
    within each row (sorted, no duplicates)."""
    n = indptr.shape[0] - 1
    nnz = indices.shape[0]
    if n < 0 or indptr[0] != 0 or indptr[n] != nnz:
        return False
    falls = 0
    for i in range(n):
        falls += indptr[i + 1] < indptr[i]
    if falls:
        return False
    if nnz == 0:
        return True
    # A negative index becomes a huge unsigned one: one comparison checks both ends. Indices strictly
    # increase within a row, so a position whose index does not exceed the one before must be the first of
    # a row: counted over all positions and over the first positions of the nonempty rows after the first
    # entry (distinct positions), the two counts agree exactly when every row is sorted without duplicates.
    # The pass over the entries has no branch and vectorizes, both counts in one read of the indices (two
    # passes: 0.70 ms on R-MAT 2^16's int64 indices, one: 0.47 ms); the second loop is one step per row.
    top = np.uint64(indices[0])
    drops = 0
    for q in range(1, nnz):
        top = max(top, np.uint64(indices[q]))
        drops += indices[q] <= indices[q - 1]
    if top >= np.uint64(ncols):
        return False
    starts = 0
    for i in range(1, n):
        s = indptr[i]
        if s > 0 and s < indptr[i + 1]:
            starts += indices[s] <= indices[s - 1]
    return drops == starts


def canonical_nm(offsets, m, ncols) -> bool:
    """Whether an ``NM`` container's ``offsets`` (rows, groups, N) are valid and canonical for groups of ``m``
    columns and ``ncols`` columns in all: every offset in ``[-1, m)``; in each group the filled slots (offset
    >= 0) come first with strictly increasing offsets; no offset of the last group points past the last
    column. ``NM.validate`` and ``NM.is_canonical`` say the same in several numpy passes over all the offsets,
    each with a temporary as large (a 4096² 2:4 matrix: 12–17 ms of every call); this takes about 4 ms."""
    rows, groups, n = offsets.shape
    if offsets.size == 0:
        return True
    flat = np.ascontiguousarray(offsets).reshape(-1)  # a view unless the user's array is strided
    return bool(_canonical_nm(flat, offsets[:, -1, :], n, m, ncols - (groups - 1) * m))


@numba.njit(cache=True, nogil=True)
def _canonical_nm(flat, last, n, m, width):
    """``canonical_nm`` on the offsets flattened (``flat``) and those of the last group (``last``, ``width``
    columns wide)."""
    # bounds in the offsets' own integer type: the loop vectorizes over all of them at once
    lo = flat[0]
    hi = flat[0]
    for q in range(flat.shape[0]):
        lo = min(lo, flat[q])
        hi = max(hi, flat[q])
    if lo < -1 or hi >= m:
        return False
    # each slot after the first of its group: empty, or filled after a filled slot with a smaller offset
    bad = 0
    for s in range(1, n):
        for g in range(s, flat.shape[0], n):
            cur = flat[g]
            prev = flat[g - 1]
            bad += (cur >= 0) & ((prev < 0) | (cur <= prev))
    for r in range(last.shape[0]):
        for s in range(n):
            bad += last[r, s] >= width
    return bad == 0
