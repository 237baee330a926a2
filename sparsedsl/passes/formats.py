"""Storage selection for intermediates whose format is the compiler's choice (``auto``).

Rewrite: ``temp T: auto<dt>[...]`` gets ``storage FMT`` with a recorded reason. The semantic format stays
``auto`` (presence is kept exactly whatever the layout), so this pass can never change a result:

* scalar → dense;
* statically present everywhere (a product of dense operands, a ``fill``, ...) → dense: a sparse format would
  store every coordinate plus index arrays;
* a matrix that every later statement reads by columns (``T[k, i]`` with ``k`` reduced and ``i`` free on the
  left) → csc, so those reads walk compressed columns;
* with bound inputs' statistics (``explain`` with inputs, ``sparsedsl run``, ``compile(like=...)``), a tensor
  of at most ``BITMAP_MAX_SIZE`` coordinates at the bound sizes → bitmap, a storage-only layout (values at
  every coordinate plus a presence array), when it is estimated at least ``BITMAP_DENSITY`` present
  (``density.py``; a presence byte per coordinate then costs less than an index per entry and a row-wise
  product writes its rows without ordering them), or when a later statement reads it against its rows
  (``T[j, i]`` inside a loop over ``i``: each read is one load instead of a search in row ``j``).
  benchmarks/formats.py measured both: parity with compressed rows at 55-60% density, 1.1-1.4× faster at
  95%; a transposed read 4-11× faster at any density;
* any other matrix → csr (rows are what row-wise products and row reductions walk);
* a vector or a tensor of rank 3 or more → coo.

A ``schedule T: format ...`` directive has already chosen the storage in the checker; it is reported and kept (a
``format dense`` of a matrix that may be absent somewhere becomes a bitmap: dense values plus presence flags).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from sparsedsl.core.errors import Span
from sparsedsl.passes.density import Statistics, estimate_densities
from sparsedsl.tensor_ir import nodes as N
from sparsedsl.tensor_ir.presence import is_full
from sparsedsl.tensor_ir.types import DENSE, Format

# storage only (never a declared format): dense values and a presence flag per coordinate
BITMAP = Format("bitmap")
BITMAP_DENSITY = 0.6
BITMAP_MAX_SIZE = 1 << 26


@dataclass(frozen=True)
class Decision:
    """One choice a pass made, for ``sparsedsl explain``."""

    subject: str
    kind: str
    choice: str
    reason: str
    span: Span | None = None

    def __str__(self) -> str:
        return f"{self.kind} of {self.subject}: {self.choice} — {self.reason}"


def _read_by_columns(program: N.Program, name: str) -> bool:
    reads = []
    for s in N.walk_assigns(program.body):
        reduced = N.reduced_vars(s.value)
        for acc in N.accesses(s.value, name):
            p0, p1 = acc.pos
            if not (isinstance(p0, N.IndexVal) and isinstance(p1, N.IndexVal)):
                return False
            reads.append(p0.var in reduced and p1.var in s.idx)
    return bool(reads) and all(reads)


def _ordered_outer(program: N.Program, name: str) -> str | None:
    """The free index an ``order`` directive puts outermost in the statement defining ``name`` where it is
    not the statement's first (rows would be assembled out of order), else None."""
    order = [tuple(map(str, d.args)) for sch in program.schedules if sch.target == name
             for d in sch.directives if d.name == "order"]
    st = next((s for s in N.walk_assigns(program.body) if s.target == name), None)
    if not order or st is None or len(st.idx) < 2:
        return None
    first = min(st.idx, key=lambda v: order[-1].index(v) if v in order[-1] else len(order[-1]))
    return first if first != st.idx[0] else None


def select_formats(program: N.Program, stats: Statistics | None = None,
                   bitmap_density: float | None = None) -> tuple[N.Program, list[Decision]]:
    """``bitmap_density``: the estimated density from which an intermediate is stored as a bitmap
    (``BITMAP_DENSITY`` when None; benchmarks/formats.py times both layouts at every density)."""
    if bitmap_density is None:
        bitmap_density = BITMAP_DENSITY
    decisions: list[Decision] = []
    density = estimate_densities(program, stats) if stats is not None else {}
    full: dict[str, bool] = {}
    decls = {d.name: d for d in program.decls}

    def tensor_full(name: str) -> bool:
        d = decls.get(name)
        return d is not None and (d.type.format.is_dense or full.get(name, False))

    for s in N.walk_assigns(program.body):
        value_full = is_full(s.value, tensor_full)
        if s.op == "=":
            full[s.target] = value_full and full.get(s.target, True) if s.target in full else value_full
        else:
            full[s.target] = full.get(s.target, False) or value_full
    new_decls = []
    for d in program.decls:
        if d.kind == "output":
            decisions.append(Decision(d.name, "format", str(d.type.format),
                                      "declared" if d.span and _declared_type(d) else "chosen for the output",
                                      d.span))
        if d.kind != "temp":
            new_decls.append(d)
            continue
        if d.storage is not None:  # a schedule's format directive (the checker put it there)
            fmt, why = d.storage, "schedule directive"
            if fmt.is_dense and not full.get(d.name, False):
                fmt, why = BITMAP, ("schedule directive format dense: values at every coordinate and a presence "
                                    "flag, since a schedule never changes a result (absent stays absent)")
            decisions.append(Decision(d.name, "format", str(fmt), why, d.span))
            new_decls.append(replace(d, storage=fmt))
            continue
        if d.type.is_scalar:
            fmt, why = DENSE, "a scalar"
        elif full.get(d.name, False):
            fmt, why = DENSE, "present at every coordinate, so index arrays would only add cost"
        elif (bitmap := _bitmap_reason(program, d, density.get(d.name), stats, bitmap_density)) is not None:
            fmt, why = BITMAP, bitmap
        elif (outer := _ordered_outer(program, d.name)) is not None:
            fmt, why = BITMAP, (f"its schedule's order puts {outer} outermost, and compressed rows are assembled "
                                "row by row: written by coordinate")
        elif d.type.rank == 2 and _read_by_columns(program, d.name):
            fmt, why = Format("csc"), "sparse, and every later read walks its columns"
        elif d.type.rank == 2:
            fmt, why = Format("csr"), "sparse; later statements walk its rows"
        else:
            fmt, why = Format("coo"), f"sparse of rank {d.type.rank}"
        if d.name in density and fmt != BITMAP and not fmt.is_dense:
            why += f" (estimated {_percent(density[d.name])} present from the bound inputs)"
        decisions.append(Decision(d.name, "format", str(fmt), why, d.span))
        new_decls.append(replace(d, storage=fmt))
    return replace(program, decls=tuple(new_decls)), decisions


def _bitmap_reason(program: N.Program, d: N.Decl, density: float | None, stats: Statistics | None,
                   threshold: float) -> str | None:
    """Why ``d`` is best a bitmap, or None: nearly full, or read against its rows (both measured in
    benchmarks/formats.py), when the bound sizes put it under the size cap."""
    if stats is None:
        return None
    extents = [stats.extent(x) for x in d.type.shape]
    if any(x is None for x in extents):
        return None
    size = math.prod(extents)
    if size > BITMAP_MAX_SIZE:
        return None
    if density is not None and density >= threshold:
        return (f"estimated {_percent(density)} present from the bound inputs (at least {_percent(threshold)}), "
                f"{size} coordinates: a presence array costs less than index arrays")
    against = _read_against_rows(program, d.name) if d.type.rank == 2 else None
    if against is not None:
        return (f"{against} reads it against its rows: a bitmap answers each read with one load where "
                f"compressed rows need a search ({size} coordinates at the bound sizes)")
    return None


def _read_against_rows(program: N.Program, name: str) -> str | None:
    """The first read of matrix ``name`` that does not walk its rows: its column index is the reading
    statement's outer (row) loop while its row index is not (``T[j, i]`` in ``C[i, j] = ...``,
    ``T[i, k]`` in ``Y[k, f] = sum[i] ...``), or a position is computed (a gather or an affine index)."""
    for s in N.walk_assigns(program.body):
        outer = s.idx[0] if s.idx else None
        for acc in N.accesses(s.value, name):
            p0, p1 = acc.pos
            plain = isinstance(p0, N.IndexVal) and isinstance(p1, N.IndexVal)
            if not plain or (p1.var == outer and p0.var != outer):
                where = f"line {acc.span.line}" if acc.span is not None else "a later statement"
                return f"{name}[{', '.join(_show(p) for p in acc.pos)}] at {where}"
    return None


def _show(p: N.Expr) -> str:
    return p.var if isinstance(p, N.IndexVal) else "..."


def _percent(x: float) -> str:
    return f"{100 * x:.3g}%"


def _declared_type(d: N.Decl) -> bool:
    # An output's span starts at its declaration; untyped outputs were given a format by the checker.
    text = d.span.source.line(d.span.line) if d.span and d.span.source else ""
    return ":" in text.split("#", 1)[0]
