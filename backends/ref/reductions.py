"""Operators along axes, on (values, present) arrays: reductions, softmax, top-k (spec § 5 rules 5, 7, 8).

Inputs are full (already broadcast) arrays. Reductions return the raw result: values and "at least one entry
combined"; where nothing was combined the value is the reduction's identity, so the caller can apply the
scalar rule (a reduction to a scalar is always present) or combine partial results of a chunked reduction.
"""
from __future__ import annotations

import numpy as np

from .numeric import compute_dtype, convert, highest, lowest, np_dtype, truthy
from sparsedsl.tensor_ir.types import is_float

# The most elements a reduction's body (or one factor of a contraction) is evaluated over at once.
CHUNK_ELEMENTS = 2 ** 24

# Reductions whose partial results over disjoint chunks of the reduced indices combine with the same operator
# (count: partial counts add up). A chunked reduction of these never materializes the whole index space.
CHUNK_COMBINE = {"sum": "sum", "count": "sum", "prod": "prod", "max": "max", "min": "min", "any": "any",
                 "all": "all"}


def _float_work(dtype: str) -> str:
    return "f32" if dtype in ("f16", "bf16") else dtype if is_float(dtype) else "f64"


def reduce_raw(op: str, values: np.ndarray, present: np.ndarray, axes: tuple[int, ...], dtype: str,
               body_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """``op`` over ``axes`` of the present entries; returns (values in ``dtype``, combined-anything mask)."""
    count = present.sum(axis=axes)
    combined = count > 0
    if op == "count":
        return convert(count, dtype), combined
    if op in ("any", "all"):
        t = truthy(values)
        r = (present & t).any(axis=axes) if op == "any" else (~present | t).all(axis=axes)
        return convert(r, dtype), combined
    if op in ("argmax", "argmin"):
        return _arg(op, values, present, axes, body_dtype, combined), combined
    if op in ("sum", "prod", "max", "min"):
        work = compute_dtype(dtype)
        x = convert(values, work)
        if dtype == "bf16":
            work = "f32"
        npw = np_dtype(work)
        if op == "sum":
            r = np.sum(np.where(present, x, np.zeros((), npw)), axis=axes, dtype=npw)
        elif op == "prod":
            r = np.prod(np.where(present, x, np.ones((), npw)), axis=axes, dtype=npw)
        elif op == "max":
            # (a bool max accumulates 0/1 in i64; over no entries it is false, not INT64_MIN cast to true)
            low = npw.type(lowest("bool" if dtype == "bool" else work))
            r = np.max(np.where(present, x, low), axis=axes, initial=low)
        else:
            high = npw.type(highest("bool" if dtype == "bool" else work))
            r = np.min(np.where(present, x, high), axis=axes, initial=high)
        return convert(r, dtype), combined
    work = _float_work(dtype)
    x = convert(values, work)
    npw = np_dtype(work)
    zero = np.zeros((), npw)
    if op in ("mean", "var", "std"):
        n = count.astype(npw)
        total = np.sum(np.where(present, x, zero), axis=axes, dtype=npw)
        mean = total / n
        if op == "mean":
            return convert(mean, dtype), combined
        centered = np.where(present, x - np.expand_dims(mean, axes), zero)
        var = np.sum(centered * centered, axis=axes, dtype=npw) / n
        return convert(var if op == "var" else np.sqrt(var), dtype), combined
    if op == "logsumexp":
        m = np.max(np.where(present, x, npw.type(-np.inf)), axis=axes, keepdims=True, initial=-np.inf)
        shift = np.where(np.isfinite(m), m, zero)
        s = np.sum(np.where(present, np.exp(x - shift), zero), axis=axes, dtype=npw)
        return convert(np.log(s) + np.squeeze(shift, axis=axes), dtype), combined
    raise ValueError(f"unknown reduction {op!r}")


def _arg(op: str, values, present, axes, body_dtype, combined) -> np.ndarray:
    """Flat (row-major) index over ``axes`` of the first extreme present entry; -1 where none.

    Extremes are found by value first, then the first present entry equal to it, so an absent entry can never
    win a tie. A NaN, as in numpy's argmax, is the extreme.
    """
    nd = values.ndim
    rest = [a for a in range(nd) if a not in axes]
    moved = np.moveaxis(values, list(axes), list(range(nd - len(axes), nd)))
    pmoved = np.moveaxis(present, list(axes), list(range(nd - len(axes), nd)))
    lead = moved.shape[: len(rest)]
    # the reduced extent is spelled out: reshape(..., -1) is ambiguous when a kept axis has length 0
    reduced = int(np.prod(moved.shape[len(rest):], dtype=np.int64))
    flat = moved.reshape(lead + (reduced,))
    pflat = pmoved.reshape(lead + (reduced,))
    if flat.shape[-1] == 0:
        return np.full(lead, -1, np.int64)
    work = compute_dtype(body_dtype)
    x = convert(flat, work)
    if op == "argmax":
        fill = np_dtype(work).type(lowest(work))
        extreme = np.max(np.where(pflat, x, fill), axis=-1, keepdims=True)
    else:
        fill = np_dtype(work).type(highest(work))
        extreme = np.min(np.where(pflat, x, fill), axis=-1, keepdims=True)
    hit = pflat & (x == extreme)
    if is_float(work):
        hit |= pflat & np.isnan(x) & np.isnan(extreme)
    idx = np.argmax(hit, axis=-1).astype(np.int64)
    return np.where(combined, idx, -1)


def softmax(values: np.ndarray, present: np.ndarray, axis: int, dtype: str) -> np.ndarray:
    """Softmax along ``axis`` over the present entries, max-subtracted; values at absent entries are 0."""
    work = _float_work(dtype)
    npw = np_dtype(work)
    x = convert(values, work)
    zero = np.zeros((), npw)
    m = np.max(np.where(present, x, npw.type(-np.inf)), axis=axis, keepdims=True, initial=-np.inf)
    # max-subtracted also for a +inf maximum: that row is NaN, as scipy's and torch's softmax give
    shift = np.where(m == -np.inf, zero, m)
    with np.errstate(invalid="ignore"):
        e = np.where(present, np.exp(x - shift), zero)
    s = np.sum(e, axis=axis, keepdims=True, dtype=npw)
    return convert(np.where(present, e / s, zero), dtype)


def topk_pattern(values: np.ndarray, present: np.ndarray, k: np.ndarray, axis: int, group: int | None,
                 largest: bool, body_dtype: str) -> np.ndarray:
    """The selected coordinates of ``topk``/``bottomk`` along ``axis`` (within aligned runs of ``group``).

    Order: by value (largest or smallest first), ties to the lower index; NaN ranks as the smallest value
    (last for topk, first for bottomk); absent entries are never selected. ``k`` broadcasts against values.
    """
    x = np.moveaxis(values, axis, -1)
    p = np.moveaxis(present, axis, -1)
    kk = np.moveaxis(np.broadcast_to(k, np.broadcast_shapes(k.shape, values.shape)), axis, -1)
    n = x.shape[-1]
    if group is not None and group > 0:
        runs = -(-n // group)
        pad = runs * group - n
        if pad:
            widths = [(0, 0)] * (x.ndim - 1) + [(0, pad)]
            x = np.pad(x, widths)
            p = np.pad(p, widths)
            kk = np.pad(kk, widths, mode="edge") if n else np.pad(kk, widths)
        x = x.reshape(x.shape[:-1] + (runs, group))
        p = p.reshape(p.shape[:-1] + (runs, group))
        kk = kk.reshape(kk.shape[:-1] + (runs, group))
    work = compute_dtype(body_dtype)
    xv = convert(x, work)
    if is_float(work):
        nan = np.isnan(xv)
        key = np.where(nan, 0, -xv if largest else xv).astype(np.float64)
        # rank classes: 0 first; NaN sorts first for bottomk and last (before absent) for topk
        cls = np.where(nan, 2 if largest else 0, 1)
    else:
        ints = xv.astype(np.int64)
        key = np.invert(ints) if largest else ints  # ~x = -x - 1 orders descending without overflow
        cls = np.ones(xv.shape, np.int64)
    cls = np.where(p, cls, 3)
    order = np.lexsort((key, cls), axis=-1) if key.size else np.zeros(key.shape, np.int64)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(order.shape[-1]), order.shape), axis=-1)
    chosen = p & (rank < kk)
    if group is not None and group > 0:
        # spelled-out length: reshape(..., -1) is ambiguous when another axis has length 0
        chosen = chosen.reshape(chosen.shape[:-2] + (chosen.shape[-2] * chosen.shape[-1],))[..., :n]
    return np.moveaxis(chosen, -1, axis)
