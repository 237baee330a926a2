"""Bound inputs into the layout the kernels read (compressed rows), compiled.

A ``csc`` input is transposed by a counting sort: count each row's entries, prefix sums, then the columns in
order append their entries to their rows, so each row comes out sorted (R-MAT-sized 2^16 x 2^16 with 10^6
entries: a lexsort of the coordinates took 175 ms of a 1.8 ms SpMV).

A ``bsr`` input's entries are placed row by row: row ``br * BM + r`` is, block after block of block row ``br``
(block columns ascending in a canonical BSR), the ``BN`` entries of each block's row ``r``. The numpy placement
(``sparsedsl.runtime.tensors.BSR.to_csr``) builds an index array as large as the entries and scatters through
it; this loop writes each entry once (4096², 32x32 blocks at 5%, 852 k entries: numpy 5.1 ms, here ~1 ms, the
SpMM reading it 2.5 ms; sorting the coordinates, as before, took 55 ms).
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _bsr_rows(indptr, indices, blocks, out_indptr, out_indices, out_data):
    nbr = indptr.shape[0] - 1
    bm = blocks.shape[1]
    bn = blocks.shape[2]
    pos = 0
    out_indptr[0] = 0
    for br in range(nbr):
        for r in range(bm):
            for b in range(indptr[br], indptr[br + 1]):
                first = indices[b] * bn
                for c in range(bn):
                    out_indices[pos] = first + c
                    out_data[pos] = blocks[b, r, c]
                    pos += 1
            out_indptr[br * bm + r + 1] = pos


def bsr_to_csr(value):
    """(indptr, indices, data) of a bound BSR container's entries as compressed rows (index arrays int32
    when the entry count and the width fit, as the kernels' other inputs)."""
    from sparsedsl.runtime.dtypes import index_dtype

    src = value.canonical()
    nnz = int(src.blocks.size)
    idt = index_dtype(nnz, *src.shape)
    indptr = np.empty(src.shape[0] + 1, dtype=idt)
    indices = np.empty(nnz, dtype=idt)
    data = np.empty(nnz, dtype=src.blocks.dtype)
    _bsr_rows(src.indptr, src.indices, np.ascontiguousarray(src.blocks), indptr, indices, data)
    return indptr, indices, data


@numba.njit(cache=True, nogil=True)
def _csc_rows(indptr, indices, data, out_indptr, out_indices, out_data):
    ncols = indptr.shape[0] - 1
    nrows = out_indptr.shape[0] - 1
    for r in range(nrows + 1):
        out_indptr[r] = 0
    for p in range(indptr[0], indptr[ncols]):
        out_indptr[indices[p] + 1] += 1
    for r in range(nrows):
        out_indptr[r + 1] += out_indptr[r]
    nxt = out_indptr[:nrows].copy()
    for c in range(ncols):
        for p in range(indptr[c], indptr[c + 1]):
            r = indices[p]
            q = nxt[r]
            out_indices[q] = c
            out_data[q] = data[p]
            nxt[r] = q + 1


def csc_to_csr(value):
    """(indptr, indices, data) of a bound CSC container's entries as compressed rows."""
    from sparsedsl.runtime.dtypes import index_dtype

    src = value.canonical()
    nnz = int(src.indices.shape[0])
    idt = index_dtype(nnz, *src.shape)
    indptr = np.empty(src.shape[0] + 1, dtype=idt)
    indices = np.empty(nnz, dtype=idt)
    data = np.empty(nnz, dtype=src.data.dtype)
    _csc_rows(src.indptr, src.indices, src.data, indptr, indices, data)
    return indptr, indices, data
