"""Storage selection for intermediates whose format is the compiler's choice (``auto``).

Rewrite: ``temp T: auto<dt>[...]`` gets ``storage FMT`` with a recorded reason. The semantic format stays
``auto`` (presence is kept exactly whatever the layout), so this pass can never change a result:

* scalar → dense;
* statically present everywhere (a product of dense operands, a ``fill``, ...) → dense: a sparse format would
  store every coordinate plus index arrays;
* a matrix that every later statement reads by columns (``T[k, i]`` with ``k`` reduced and ``i`` free on the
  left) → csc, so those reads walk compressed columns;
* any other matrix → csr (rows are what row-wise products and row reductions walk);
* a vector or a tensor of rank 3 or more → coo.

A ``schedule T: format ...`` directive has already fixed the format in the checker; it is reported, not changed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from sparsedsl.core.errors import Span
from sparsedsl.tensor_ir import nodes as N
from sparsedsl.tensor_ir.presence import is_full
from sparsedsl.tensor_ir.types import DENSE, Format


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


def select_formats(program: N.Program) -> tuple[N.Program, list[Decision]]:
    decisions: list[Decision] = []
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
        if d.type.format.name != "auto":
            decisions.append(Decision(d.name, "format", str(d.type.format), "schedule directive", d.span))
            new_decls.append(d)
            continue
        if d.type.is_scalar:
            fmt, why = DENSE, "a scalar"
        elif full.get(d.name, False):
            fmt, why = DENSE, "present at every coordinate, so index arrays would only add cost"
        elif d.type.rank == 2 and _read_by_columns(program, d.name):
            fmt, why = Format("csc"), "sparse, and every later read walks its columns"
        elif d.type.rank == 2:
            fmt, why = Format("csr"), "sparse; later statements walk its rows"
        else:
            fmt, why = Format("coo"), f"sparse of rank {d.type.rank}"
        decisions.append(Decision(d.name, "format", str(fmt), why, d.span))
        new_decls.append(replace(d, storage=fmt))
    return replace(program, decls=tuple(new_decls)), decisions


def _declared_type(d: N.Decl) -> bool:
    # An output's span starts at its declaration; untyped outputs were given a format by the checker.
    text = d.span.source.line(d.span.line) if d.span and d.span.source else ""
    return ":" in text.split("#", 1)[0]
