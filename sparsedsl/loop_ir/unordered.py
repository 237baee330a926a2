"""Which compacted rows need their keys in order.

A row-wise reduction's workspace is compacted into a sorted row (``Compact``) because a compressed result stores
its columns in order and because merging co-iteration (a union or intersection with another row, a follower
cursor) relies on it. A result laid out by coordinate (dense, or a bitmap: values plus presence) is written at
random access, so when every loop that walks the compacted row is driven by it alone — no other operand merged
with it — the ordering (about a third of a SpGEMM row's time) is skipped: ``Compact.ordered`` becomes False.
"""
from __future__ import annotations

from dataclasses import replace

from sparsedsl.loop_ir import nodes as L


def unorder_compacts(body: tuple | list) -> tuple:
    """``body`` (one kernel's statements, writing a dense or bitmap result) with every ``Compact`` whose row
    is only ever walked alone marked unordered."""
    walked: dict[str, bool] = {}
    for s in L.walk_stmts(body):
        if not isinstance(s, L.Forall):
            continue
        it = s.iteration
        for cur in it.drivers + it.followers + it.lookups:
            if cur.idx.endswith("_cidx"):
                ws = cur.idx[: -len("_cidx")]
                alone = it.drivers == (cur,) and not it.followers and not it.lookups
                walked[ws] = walked.get(ws, True) and alone
    free = {ws for ws, alone in walked.items() if alone}
    return _rewrite(tuple(body), free) if free else tuple(body)


def _rewrite(stmts: tuple, free: set[str]) -> tuple:
    out = []
    for s in stmts:
        if isinstance(s, L.Compact) and s.ws in free:
            s = replace(s, ordered=False)
        changes = {}
        for field in ("setup", "body", "then", "orelse"):
            child = getattr(s, field, None)
            if isinstance(child, tuple):
                changes[field] = _rewrite(child, free)
        out.append(replace(s, **changes) if changes else s)
    return tuple(out)
