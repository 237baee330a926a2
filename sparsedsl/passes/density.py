"""Estimated density of every named value from the statistics of bound inputs.

When a program is compiled for (or explained with) actual inputs, their shapes and stored-entry counts are known;
from them this module estimates, for each intermediate, the fraction of its coordinates that will be present, so
that format selection can store a nearly full intermediate as a bitmap (values plus a presence array) rather than
as compressed rows. The estimate assumes entries are placed independently and uniformly:

* an input holds ``nnz / size`` of its coordinates (a dense input all of them);
* an intersection (``*``, ``and``, a mask, a function of several operands) multiplies densities;
* a union (``+``, ``-``, ``or``, ``max(a, b)``) of densities a and b is ``1 - (1 - a)(1 - b)``;
* a reduction over K coordinates of a body of density d is present with probability ``1 - (1 - d)^K``;
* a complement mask ``not m`` keeps ``1 - d(m)``; a ``topk`` of k along an extent n keeps ``min(d, k / n)``;
* an index predicate ``j < i`` (any order) keeps half, ``j == i`` one coordinate in n.

Power-law graphs break the independence assumption (their products are denser in a few rows and sparser
elsewhere), so the estimate only chooses a layout: a wrong guess costs speed, never a result, because every
layout keeps presence exactly. ``None`` means "unknown" (an extent no bound input fixes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from sparsedsl.tensor_ir import nodes as N
from sparsedsl.tensor_ir.types import Dim


@dataclass(frozen=True)
class InputStats:
    """What the passes may know about one bound input: its shape and how many entries it stores."""

    shape: tuple[int, ...]
    nnz: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def density(self) -> float:
        return 1.0 if self.size == 0 else min(1.0, self.nnz / self.size)


@dataclass(frozen=True)
class Statistics:
    """Bound sizes (by size name) and per-input statistics (by input name); either may be partial."""

    sizes: Mapping[str, int]
    inputs: Mapping[str, InputStats]

    def extent(self, d: Dim) -> int | None:
        return d if isinstance(d, int) else self.sizes.get(d)


def estimate_densities(program: N.Program, stats: Statistics) -> dict[str, float]:
    """Density estimate of every value assigned by the program (and of every input with statistics).

    A value assigned several times (accumulated, reassigned, carried by a repeat) gets the largest estimate of
    its assignments, each an accumulation's union with what was there."""
    decls = {d.name: d for d in program.decls}
    dens: dict[str, float | None] = {}
    for d in program.decls:
        if d.kind == "input":
            if d.type.format.is_dense or d.type.is_scalar:
                dens[d.name] = 1.0
            elif d.name in stats.inputs:
                dens[d.name] = stats.inputs[d.name].density
            else:
                dens[d.name] = None
        elif d.kind == "const":
            dens[d.name] = 1.0
    for s in N.walk_assigns(program.body):
        est = _Estimator(s, dens, stats).expr(s.value)
        d = decls.get(s.target)
        if d is not None and d.type.format.is_dense:
            est = 1.0
        if s.target in dens:  # assigned before: the largest estimate, an accumulation adding to what was there
            old = dens[s.target]
            if s.op != "=":
                est = _union([old, est])
            est = None if old is None or est is None else max(old, est)
        dens[s.target] = est
    return {k: v for k, v in dens.items() if v is not None}


def _union(ds) -> float | None:
    if any(d is None for d in ds):
        return None
    return 1.0 - math.prod(1.0 - d for d in ds)


def _inter(ds) -> float | None:
    if any(d is None for d in ds):
        return None
    return math.prod(ds)


class _Estimator:
    """Density of an expression of one statement: the probability that it is present at one coordinate of
    its free indices."""

    def __init__(self, stmt: N.Assign, dens: Mapping[str, float | None], stats: Statistics):
        self.stmt = stmt
        self.dens = dens
        self.stats = stats

    def extent(self, var: str) -> int | None:
        try:
            return self.stats.extent(self.stmt.range_of(var))
        except KeyError:
            return None

    def expr(self, e: N.Expr) -> float | None:
        match e:
            case N.Lit() | N.IndexVal() | N.Fill():
                return 1.0
            case N.ScalarRef(name=name, is_size=is_size):
                return 1.0 if is_size else self.dens.get(name)
            case N.Access(tensor=t):
                return self.dens.get(t)
            case N.Binary(op=op, lhs=a, rhs=b) if op in N.UNION_OPS:
                return self.union(e, (a, b))
            case N.Call(fn=fn, args=args) if fn in N.UNION_FUNCS and len(args) == 2:
                return self.union(e, args)
            case N.Binary(op=op, lhs=N.IndexVal(var=a), rhs=N.IndexVal(var=b)) if op in N.COMPARISONS and a != b:
                return self.index_predicate(op, a, b)
            case N.Binary(lhs=a, rhs=b):
                return _inter([self.expr(a), self.expr(b)])
            case N.Unary(operand=a) | N.Cast(operand=a):
                return self.expr(a)
            case N.Call(args=args):
                return _inter([self.expr(x) for x in args])
            case N.Reduce(vars=vs, body=b):
                return self.reduce(vs, self.expr(b))
            case N.Softmax(body=b):
                return self.expr(b)
            case N.TopK(var=v, k=k, body=b):
                return self.topk(v, k, self.expr(b))
            case N.Where(body=b, mask=m):
                return _inter([self.expr(b), self.mask(m)])
        return None

    def union(self, e: N.Expr, operands) -> float | None:
        # as presence.is_full: operands that do not mention every free index never widen a union
        want = set(N.free_indices(e))
        covering = [x for x in operands if want <= set(N.free_indices(x))]
        if covering:
            return _union([self.expr(x) for x in covering])
        return _inter([self.expr(x) for x in operands])

    def index_predicate(self, op: str, a: str, b: str) -> float:
        """How often ``a OP b`` holds over the index space: half of it for an order (the triangle of
        ``j < i``), one coordinate in n for ``==``."""
        n = max(self.extent(a) or 1, self.extent(b) or 1)
        if op == "==":
            return 1.0 / n
        if op == "!=":
            return 1.0 - 1.0 / n
        return 0.5

    def reduce(self, vs, body: float | None) -> float | None:
        if body is None:
            return None
        count = 1
        for v in vs:
            n = self.extent(v)
            if n is None:
                return None
            count *= n
        if count == 0:
            return 0.0
        if body >= 1.0:
            return 1.0
        # 1 - (1 - d)^K without cancellation for tiny d
        return -math.expm1(count * math.log1p(-body))

    def topk(self, var: str, k: N.Expr, body: float | None) -> float | None:
        n = self.extent(var)
        if body is None or n is None or n == 0 or not isinstance(k, N.Lit):
            return body
        return min(body, float(k.value) / n)

    def mask(self, m: N.Mask) -> float | None:
        match m:
            case N.MaskPresent(expr=x) | N.MaskValue(expr=x):
                return self.expr(x)
            case N.MaskNot(mask=inner):
                d = self.mask(inner)
                return None if d is None else 1.0 - d
            case N.MaskAnd(lhs=a, rhs=b):
                return _inter([self.mask(a), self.mask(b)])
            case N.MaskOr(lhs=a, rhs=b):
                return _union([self.mask(a), self.mask(b)])
        return None
