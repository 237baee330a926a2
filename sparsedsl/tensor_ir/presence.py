"""Static presence analysis: is an expression present at every coordinate of its index space?

Used to choose storage (a value present everywhere is best stored dense) and by the checker for untyped
outputs. A reduction over an empty range combines no entries and is absent (spec § 5 rule 5), so a reduction
that keeps an index is only surely present when ``assume_nonempty`` is set: the checker sets it to pick an
untyped output's format (a dense output stores 0 where absent, which is that format's meaning); the storage pass
does not, because an intermediate must keep presence exactly.
"""
from __future__ import annotations

from typing import Callable

from sparsedsl.tensor_ir import nodes as N


def is_full(e: N.Expr, tensor_full: Callable[[str], bool], assume_nonempty: bool = False) -> bool:
    """True when ``e`` is statically present everywhere; ``tensor_full(name)`` answers for stored tensors."""

    def full(x):
        return is_full(x, tensor_full, assume_nonempty)

    match e:
        case N.Lit() | N.IndexVal():
            return True
        case N.ScalarRef(name=name, is_size=is_size):
            return is_size or tensor_full(name)  # a scalar intermediate read from a sparse tensor may be absent
        case N.Access(tensor=t, pos=pos):
            return all(isinstance(p, N.IndexVal) for p in pos) and tensor_full(t)
        case N.Binary(op=op, lhs=a, rhs=b) if op in N.UNION_OPS:
            return _union_full(e, (a, b), full)
        case N.Call(fn=fn, args=args) if fn in N.UNION_FUNCS and len(args) == 2:
            return _union_full(e, args, full)
        case N.Binary(lhs=a, rhs=b):
            return full(a) and full(b)
        case N.Unary(operand=a) | N.Cast(operand=a):
            return full(a)
        case N.Call(args=args):
            return all(full(x) for x in args)
        case N.Reduce(body=b):
            return not N.free_indices(e) or (assume_nonempty and full(b))
        case N.Softmax(body=b):
            return full(b)
        case N.Fill():
            return True
    return False


def _union_full(e: N.Expr, operands, full) -> bool:
    """A union is as present as its operands that mention every index (broadcast operands never widen it);
    with no such operand it is an intersection (docs/language.md)."""
    want = set(N.free_indices(e))
    covering = [x for x in operands if want <= set(N.free_indices(x))]
    if covering:
        return any(full(x) for x in covering)
    return all(full(x) for x in operands)


# the pattern of an expression present at every coordinate (``same_pattern``)
FULL = "full"


def same_pattern(e: N.Expr, tensor_full: Callable[[str], bool]):
    """The stored pattern that ``e`` is present exactly on: ``(tensor, index variables)`` when ``e`` is present
    where ``tensor`` stores ``(v1, v2, ...)`` and nowhere else, ``FULL`` when it is present everywhere, None when
    neither can be shown statically.

    Used to store an intermediate computed entry by entry from one sparse operand (``exp(A[i, j])``,
    ``2 * A[i, j] * X[i, j]`` with X dense, ``softmax[j] A[i, j]``) with that operand's row pointer and column
    indices instead of new ones: only its values are computed. Exactness matters more than reach: an entry a
    value mask may drop, a union with another pattern or a reduction gives None."""

    def pat(x):
        return same_pattern(x, tensor_full)

    match e:
        case N.Lit() | N.IndexVal() | N.Fill():
            return FULL
        case N.ScalarRef(name=name, is_size=is_size):
            return FULL if is_size or tensor_full(name) else None
        case N.Access(tensor=t, pos=pos):
            if not all(isinstance(p, N.IndexVal) for p in pos):
                return None
            return FULL if tensor_full(t) else (t, tuple(p.var for p in pos))
        case N.Binary(op=op, lhs=a, rhs=b) if op in N.UNION_OPS:
            return _union_pattern(e, (a, b), pat)
        case N.Call(fn=fn, args=args) if fn in N.UNION_FUNCS and len(args) == 2:
            return _union_pattern(e, args, pat)
        case N.Binary(lhs=a, rhs=b):
            return _meet(pat(a), pat(b))
        case N.Unary(operand=a) | N.Cast(operand=a) | N.Softmax(body=a):
            return pat(a)
        case N.Call(args=args):
            out = FULL
            for x in args:
                out = _meet(out, pat(x))
            return out
        case N.Where(body=b, mask=m):
            return _meet(pat(b), _mask_pattern(m, pat))
    return None


def _meet(a, b):
    """The pattern of an intersection of two operands' patterns."""
    if a is None or b is None:
        return None
    if a == FULL:
        return b
    if b == FULL or a == b:
        return a
    return None


def _mask_pattern(m: N.Mask, pat):
    match m:
        case N.MaskPresent(expr=x):
            return pat(x)
        case N.MaskAnd(lhs=a, rhs=b):
            return _meet(_mask_pattern(a, pat), _mask_pattern(b, pat))
    return None  # value masks read values; complements and unions widen or cut in ways not tracked


def _union_pattern(e: N.Expr, operands, pat):
    """As ``_union_full``: the operands that mention every index unite; without one it is an intersection."""
    want = set(N.free_indices(e))
    covering = [x for x in operands if want <= set(N.free_indices(x))]
    if not covering:
        out = FULL
        for x in operands:
            out = _meet(out, pat(x))
        return out
    found = [pat(x) for x in covering]
    if any(f == FULL for f in found):
        return FULL
    if found[0] is not None and all(f == found[0] for f in found):
        return found[0]
    return None
