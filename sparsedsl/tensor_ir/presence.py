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
