"""The binder's structure check of a CSR input, compiled: the numba target hands it to the runtime
(``Executable.csr_check``) in place of the numpy passes that ``sparsedsl.runtime.convert`` uses otherwise.

Binding checks every call's CSR input (the index arrays are mutable, and scipy's ``has_canonical_format`` is
a cached flag that in-place edits do not reset), and on the small sample matrices the numpy passes cost a
tenth to a sixth of a whole SpMM or attention call: each makes a temporary as large as the entries. Here
the same check is a few loops without temporaries that LLVM vectorizes (one call: 30–70 µs on the sample
matrices, against 90–150 µs for the numpy passes in the same process; more while the kernel's threads are
still spinning).
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
    # a negative index becomes a huge unsigned one: one comparison checks both ends
    top = np.uint64(0)
    for q in range(nnz):
        top = max(top, np.uint64(indices[q]))
    if top >= np.uint64(ncols):
        return False
    # Indices strictly increase within a row, so a position whose index does not exceed the one before
    # must be the first of a row: counted over all positions and over the first positions of the nonempty
    # rows after the first entry (distinct positions), the two counts agree exactly when every row is sorted
    # without duplicates. The first loop has no branch and vectorizes; the second is one step per row.
    drops = 0
    for q in range(1, nnz):
        drops += indices[q] <= indices[q - 1]
    starts = 0
    for i in range(1, n):
        s = indptr[i]
        if s > 0 and s < indptr[i + 1]:
            starts += indices[s] <= indices[s - 1]
    return drops == starts
