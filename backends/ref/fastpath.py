"""Contractions for ``sum`` of a product and ``any`` of a conjunction (SpGEMM, SpMM, SDDMM, SpMV, BFS steps).

``sum[k] a * b * ...`` evaluated literally materializes the whole index space (M·K·N for a matrix product).
Here each factor is evaluated on its own axes and the reduction becomes a contraction:

* presence: an entry is present where at least one k has every factor present, i.e. where the contraction of
  the factors' presence masks (as 0/1 floats: exact counts) is positive;
* values (``sum``): absent entries set to 0 contribute 0 to every product, so the contraction of the zeroed
  values equals the sum over present terms — provided no present value is inf or NaN (0·inf is NaN), which is
  checked; otherwise the caller falls back to the literal evaluation;
* values (``any`` of ``and``/``&``): the contraction of "present and true" masks is positive.

A two-factor matrix product with a sparse operand goes through scipy.sparse; the rest through numpy.einsum.
Results equal the literal evaluation's up to floating-point reassociation.
"""
from __future__ import annotations

import math
import string

import numpy as np
import scipy.sparse as sp

from .numeric import convert, truthy
from .reductions import CHUNK_ELEMENTS
from sparsedsl.tensor_ir import nodes
from sparsedsl.tensor_ir.types import is_float

_SUM_DTYPES = ("f32", "f64", "i32", "i64")
# an operand sparser than this goes through scipy.sparse (a dense BLAS product is faster above it)
_SPARSE_DENSITY = 0.3


def _factors(e: nodes.Expr, ops: tuple[str, ...], dtype: str) -> list[nodes.Expr]:
    if isinstance(e, nodes.Binary) and e.op in ops and e.dtype == dtype:
        return _factors(e.lhs, ops, dtype) + _factors(e.rhs, ops, dtype)
    return [e]


def reduce_product(ev, e: nodes.Reduce, space, rcoords) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, combined) of ``e`` by contraction, or None where this path does not apply."""
    if e.op == "sum" and e.dtype in _SUM_DTYPES:
        factors = _factors(e.body, ("*",), e.dtype)
    elif e.op == "any" and e.body.dtype == "bool":
        factors = _factors(e.body, ("and", "&"), "bool")
    else:
        return None
    if len(factors) < 2:
        return None
    inner = space.extend(e.vars, rcoords)
    if 0 in inner.shape:
        return None
    used: set[int] = set()
    for f in factors:
        axes = {inner.axis(v) for v in nodes.free_indices(f) if v in inner.vars}
        if math.prod(inner.shape[a] for a in axes) > CHUNK_ELEMENTS:
            return None
        used |= axes
    reduced_axes = range(space.ndim, inner.ndim)
    if any(a not in used and inner.shape[a] > 1 for a in reduced_axes):
        return None  # a reduced index no factor mentions: sum multiplies by its extent; keep it literal

    values_ops, presence_ops, subs = [], [], []
    for f in factors:
        v, p = ev.expr(f, inner)
        shape = np.broadcast_shapes(np.shape(v), np.shape(p))
        axes = tuple(a for a in range(inner.ndim) if shape[a] != 1)
        squeeze = tuple(a for a in range(inner.ndim) if shape[a] == 1)
        v = np.broadcast_to(v, shape).squeeze(axis=squeeze)
        p = np.broadcast_to(p, shape).squeeze(axis=squeeze)
        if e.op == "sum":
            x = convert(v, e.dtype)
            zeroed = np.where(p, x, np.zeros((), x.dtype))
            if is_float(e.dtype) and not np.isfinite(zeroed).all():
                return None
            values_ops.append(zeroed)
        else:
            values_ops.append((p & truthy(v)).astype(np.float64))
        presence_ops.append(p)
        subs.append(axes)
    out_axes = tuple(sorted(a for a in set().union(*subs) if a < space.ndim))

    contracted = _sparse_product(values_ops, presence_ops, subs, out_axes)
    if contracted is None:
        spec = ",".join(_letters(s) for s in subs) + "->" + _letters(out_axes)
        values = np.einsum(spec, *values_ops, optimize=True)
        counts = np.einsum(spec, *(p.astype(np.float64) for p in presence_ops), optimize=True)
    else:
        values, counts = contracted
    out_shape = [1] * space.ndim
    for a in out_axes:
        out_shape[a] = space.shape[a]
    present = (counts > 0.5).reshape(out_shape)
    if e.op == "sum":
        values = convert(values, e.dtype)
    else:
        values = values > 0.5
    return values.reshape(out_shape), present


def _letters(axes) -> str:
    return "".join(string.ascii_letters[a] for a in axes)


def _sparse_product(values_ops, presence_ops, subs, out):
    """(values, counts) of a product of two matrices over one shared axis, times scalars, through
    scipy.sparse when either matrix is sparse; None for any other shape or two dense matrices."""
    matrices = [i for i, s in enumerate(subs) if len(s) == 2]
    scalars = [i for i, s in enumerate(subs) if len(s) == 0]
    if len(matrices) != 2 or len(scalars) != len(subs) - 2 or len(out) != 2:
        return None
    ix, iy = matrices
    xs, ys = subs[ix], subs[iy]
    shared = set(xs) & set(ys)
    if len(shared) != 1:
        return None
    (k,) = shared
    xo = xs[0] if xs[1] == k else xs[1]
    yo = ys[0] if ys[1] == k else ys[1]
    if k in out or {xo, yo} != set(out):
        return None
    px, py = presence_ops[ix], presence_ops[iy]
    sparse_x = np.count_nonzero(px) < _SPARSE_DENSITY * max(px.size, 1)
    sparse_y = np.count_nonzero(py) < _SPARSE_DENSITY * max(py.size, 1)
    if not (sparse_x or sparse_y):
        return None
    vx, cx = _operand(values_ops[ix], px, xs == (xo, k), sparse_x)
    vy, cy = _operand(values_ops[iy], py, ys == (k, yo), sparse_y)
    values = _dense(vx @ vy)
    counts = _dense(cx @ cy)
    for i in scalars:
        values = values * values_ops[i]
        counts = counts * presence_ops[i]
    if xo > yo:
        values, counts = values.T, counts.T
    return values, counts


def _dense(m) -> np.ndarray:
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def _operand(values: np.ndarray, present: np.ndarray, upright: bool, sparse: bool):
    """(values, presence as 0/1 floats) of one matrix operand, transposed unless ``upright``.

    A sparse operand's pattern is found once, from the contiguous presence array (scanning a transposed view
    is slow; transposing a scipy matrix is free), and the values are gathered on that pattern."""
    if not sparse:
        v = values if upright else values.T
        p = present if upright else present.T
        return np.ascontiguousarray(v), np.ascontiguousarray(p, dtype=np.float64)
    pattern = sp.csr_array(np.ascontiguousarray(present))
    rows = np.repeat(np.arange(pattern.shape[0]), np.diff(pattern.indptr))
    data = np.asarray(values)[rows, pattern.indices]
    vm = sp.csr_array((data, pattern.indices, pattern.indptr), shape=pattern.shape)
    pm = sp.csr_array((np.ones(len(data)), pattern.indices, pattern.indptr), shape=pattern.shape)
    if not upright:
        vm, pm = vm.T.tocsr(), pm.T.tocsr()
    return vm, pm
