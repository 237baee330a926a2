"""The ``order`` schedule directive (spec § 8): the loop order a statement asks for, as lowering reads it.

An order lists every index of the statements defining a name once (the checker sees to that). Lowering
derives its loops from the index structure (``lower.py``); an order steers the two choices that structure
leaves open:

* the order of the free indices' loops, for a result written by coordinate (dense, bitmap); a compressed
  result is assembled row by row, so its row index stays outermost;
* where each reduction runs: a reduction whose indices come before the last free index is evaluated row-wise
  into a workspace keyed by that index (``i, k, j``: Gustavson), one whose indices come after it at each
  output coordinate (``i, j, k``: inner products); a reduction over several indices walks them in the order
  given.

What the kernels then nest is checked against the order (``follows``); lowering refuses an order its loops
do not follow, naming the order they do run in (spec § 8: "the compiler refuses orders it cannot iterate").
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from sparsedsl.tensor_ir import nodes as T

# reductions whose result does not depend on the order their indices are walked in (beyond floating-point
# reassociation, which a schedule may change): their indices may be walked in the order a directive gives
COMMUTATIVE = ("sum", "prod", "max", "min", "any", "all", "count", "mean", "var", "std", "logsumexp")


@dataclass(frozen=True)
class LoopOrder:
    """``order`` of one statement: the indices, outermost first."""

    indices: tuple[str, ...]

    def rank(self, var: str) -> int:
        return self.indices.index(var) if var in self.indices else len(self.indices)

    def names(self, indices) -> bool:
        """Whether the order names every one of ``indices``."""
        return all(v in self.indices for v in indices)

    def free(self, idx: tuple[str, ...]) -> tuple[str, ...]:
        """The free indices ``idx`` in the order's order (an index the order does not name keeps its place
        after those it names)."""
        return tuple(sorted(idx, key=self.rank))

    def outside(self, reduce_vars: tuple[str, ...], v: str) -> bool:
        """Whether every index of a reduction comes before ``v``: the reduction is then walked outside the
        loop over ``v`` (into a workspace keyed by ``v``)."""
        return all(self.rank(r) < self.rank(v) for r in reduce_vars)

    def follows(self, nest: tuple[str, ...]) -> bool:
        """Whether a nest of loops (outermost first) runs in this order, as far as the order names its
        indices (a reduction fused in from another statement brings indices of its own)."""
        ranks = [self.rank(v) for v in nest if v in self.indices]
        return ranks == sorted(ranks)

    def reorder(self, e: T.Expr) -> T.Expr:
        """``e`` with the indices of each order-insensitive reduction in the order's order."""
        return _map(e, self._reduce)

    def _reduce(self, e: T.Expr) -> T.Expr:
        if isinstance(e, T.Reduce) and e.op in COMMUTATIVE and len(e.vars) > 1:
            return replace(e, vars=tuple(sorted(e.vars, key=self.rank)))
        return e


def orders(program: T.Program) -> dict[str, LoopOrder]:
    """The ``order`` directive of each scheduled name (the last one where a schedule repeats it)."""
    out: dict[str, LoopOrder] = {}
    for sch in program.schedules:
        for dr in sch.directives:
            if dr.name == "order":
                out[sch.target] = LoopOrder(tuple(map(str, dr.args)))
    return out


def _map(x, fn):
    """``x`` (an expression, mask or tuple of them) rebuilt bottom-up with ``fn`` applied to every
    expression node."""
    if isinstance(x, tuple):
        return tuple(_map(y, fn) for y in x)
    if not isinstance(x, (T.Expr, T.Mask)):
        return x
    changes = {}
    for f in fields(x):
        value = getattr(x, f.name)
        if f.name != "span" and isinstance(value, (T.Expr, T.Mask, tuple)):
            updated = _map(value, fn)
            if updated != value:
                changes[f.name] = updated
    x = replace(x, **changes) if changes else x
    return fn(x) if isinstance(x, T.Expr) else x
