"""Static presence analysis: is an expression present at every coordinate of its index space?

Used to choose formats (a value present everywhere is best stored dense) and by the checker for untyped
outputs. It assumes non-empty index ranges; it is a format hint, never a semantic decision.
"""
from __future__ import annotations

from typing import Callable

from sparsedsl.tensor_ir import nodes as N


def is_full(e: N.Expr, tensor_full: Callable[[str], bool]) -> bool:
    """True when ``e`` is statically present everywhere; ``tensor_full(name)`` answers for stored tensors."""
    match e:
        case N.Lit() | N.IndexVal() | N.ScalarRef():
            return True
        case N.Access(tensor=t, pos=pos):
            return all(isinstance(p, N.IndexVal) for p in pos) and tensor_full(t)
        case N.Binary(op=op, lhs=a, rhs=b):
            if op in N.UNION_OPS:
                fi = set(N.free_indices(e))
                return any(is_full(x, tensor_full) and set(N.free_indices(x)) >= fi for x in (a, b)) or (
                    is_full(a, tensor_full) and is_full(b, tensor_full))
            return is_full(a, tensor_full) and is_full(b, tensor_full)
        case N.Unary(operand=a) | N.Cast(operand=a):
            return is_full(a, tensor_full)
        case N.Call(fn=fn, args=args):
            if fn in N.UNION_FUNCS:
                return any(is_full(x, tensor_full) for x in args)
            return all(is_full(x, tensor_full) for x in args)
        case N.Reduce(body=b):
            return not N.free_indices(e) or is_full(b, tensor_full)
        case N.Softmax(body=b):
            return is_full(b, tensor_full)
        case N.Fill():
            return True
    return False
