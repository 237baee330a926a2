"""Unroll-and-jam of a compressed walk around a dense inner loop (register blocking over the sparse index).

SpMM (``Y[i, f] = sum[j] A[i, j] * X[j, f]``), SDDMM (``S[i, j] = sum[d] Q[i, d] * K[j, d] where G[i, j]``)
and the score and weighted-sum passes of graph attention walk a compressed row and run, for every key ``j``,
a dense loop over the features. One key per step, every step reads again the row that does not depend on
``j`` (``Q[i, :]``) or loads and stores again the accumulated row (``Y[i, :]``). Taking ``FACTOR`` keys per
step and running their dense loops as one loop, the copies' bodies side by side, reads that row once per
``FACTOR`` keys and gives the vector units ``FACTOR`` independent chains: 25-35% off SpMM and SDDMM on the
sample matrices (bcsstk13 0.47 -> 0.34 ms, ego-Facebook 1.81 -> 1.37 ms SpMM; 0.54 -> 0.40 ms SDDMM), and
no change where the rows of the dense operand come from memory (R-MAT 2^16).

A ``Forall`` over one cursor (no followers, no lookups) is jammed when its body is

* pre: ``Let`` statements;
* guard (optional): an ``If`` without ``else`` around all the rest, on a pre local whose value does not
  change along the walk (the presence of a reduction over a dense range: its extent is not zero);
* inner: a dense ``Forall`` whose body only updates pre locals (``Set``) or accumulates into a ``range`` or
  ``dense`` workspace at the inner loop's own key;
* tail: statements without loops.

A step runs the copies' pre statements in order, one inner loop with the copies' bodies in order, then the
copies' tails in order. Every update of a name that the copies share keeps its original order when the
tail writes nothing that the pre statements, the guard or the inner loop read, and the inner loop writes
(its workspace) nothing that the pre statements or the tail read: each workspace key still receives its
contributions in the order of the walk, so the result is the same, bit for bit with the numba target's
``reassoc`` off (with it on, LLVM may split a dot product over vector lanes differently in the jammed loop, as
it may in any loop: the difference is rounding, as between any two vector widths). The one exception is a
``range`` workspace's ``_first`` flag, which the tail clears after the inner loop: the code generator's
rule for several accumulations in one loop (the first stores, the others combine) keeps it exact.

The pass also folds a presence flag set by a dense loop that does nothing else (``let f = false``, ``forall
x in dense [0, n): f = true``) into ``let f = n > 0``, which is what exposes the guard of attention's
weighted sum.
"""
from __future__ import annotations

from dataclasses import replace

from sparsedsl.loop_ir import nodes as L

FACTOR = 4
_JAMMABLE_WORKSPACES = ("range", "dense")
_TRUE = L.Const(True, "bool")
_FALSE = L.Const(False, "bool")


def jam_module(module: L.Module, targets: dict | None = None) -> tuple[L.Module, list[tuple]]:
    """The module with every eligible walk jammed, and a ``(subject, kind, choice, reason, span)`` note per
    jammed walk; ``targets`` maps a tensor-IR statement's span to the name it assigns (the note's subject)."""
    notes: list[tuple] = []
    kernels = []
    for k in module.kernels:
        kinds = {s.name: s.kind for s in L.walk_stmts(k.body) if isinstance(s, L.Workspace)}
        kernels.append(replace(k, body=_visit(k.body, kinds, notes, targets or {})))
    return replace(module, kernels=tuple(kernels)), notes


def _visit(body, kinds: dict, notes: list, targets: dict) -> tuple:
    out = []
    for s in body:
        if isinstance(s, L.If):
            s = replace(s, then=_visit(s.then, kinds, notes, targets), orelse=_visit(s.orelse, kinds, notes, targets))
        elif isinstance(s, L.For):
            s = replace(s, setup=_visit(s.setup, kinds, notes, targets), body=_visit(s.body, kinds, notes, targets))
        elif isinstance(s, L.Forall):
            s = replace(s, body=_visit(s.body, kinds, notes, targets))
            jammed = jam_forall(s, kinds)
            if jammed is not None:
                s = jammed
                inner = next(b for b in L.walk_stmts(s.body) if isinstance(b, L.Forall))
                notes.append((targets.get(s.span, "?"), "unroll-and-jam", f"{FACTOR} entries of '{_user(s.var)}' "
                              f"per step",
                              f"the loop over '{_user(inner.var)}' runs once for {FACTOR} entries: what does not "
                              f"depend on '{_user(s.var)}' is read once per step, and the vector units get "
                              f"{FACTOR} independent chains", s.span))
        out.append(s)
    return tuple(out)


def jam_forall(s: L.Forall, kinds: dict) -> L.Forall | None:
    """``s`` with its ``Jam`` (and its presence flags folded), or None when it does not qualify."""
    it = s.iteration
    if s.jam is not None or it.kind != "intersect" or len(it.drivers) != 1 or it.followers or it.lookups:
        return None
    body = fold_flags(s.body)
    split = _split(body)
    if split is None:
        return None
    pre, guard, inner, tail = split
    (cur,) = it.drivers
    lets = {p.name for p in pre}
    local = {s.var, cur.pos, cur.found} | lets | {t.name for t in L.walk_stmts(tail) if isinstance(t, L.Let)}
    if not _inner_ok(inner, lets - {guard}, local, kinds):
        return None
    if any(isinstance(t, (L.For, L.Forall, L.Workspace, L.Reset, L.Compact, L.TopKSelect)) for t in L.walk_stmts(tail)):
        return None
    if guard is not None:
        defining = next(p for p in pre if p.name == guard)
        if L.expr_names(defining.value) & local or guard in L.assigned_names(inner.body) | L.assigned_names(tail):
            return None
    front = set().union(*(L.expr_names(p.value) for p in pre)) | _reads(inner) | ({guard} if guard else set())
    if (L.assigned_names(tail) - local) & front:
        return None
    ws_state = set()
    for a in inner.body:
        if isinstance(a, L.Accumulate):
            ws_state |= set(L.workspace_arrays(a.ws)) - {a.ws + "_first"}
    back = set().union(*(L.expr_names(p.value) for p in pre)) | L.free_names(tail)
    if ws_state & back:
        return None

    def copy(u: int, stmts) -> list:
        names = {x: L.Jam.copy_name(x, u) for x in local}
        return [_rename(t, names) for t in stmts]

    pre_copies = [t for u in range(FACTOR) for t in copy(u, pre)]
    steps = replace(inner, body=tuple(t for u in range(FACTOR) for t in copy(u, inner.body)))
    tails = [t for u in range(FACTOR) for t in copy(u, tail)]
    if guard is None:
        jammed = (*pre_copies, steps, *tails)
    else:
        jammed = (*pre_copies, L.If(L.Var(L.Jam.copy_name(guard, 0)), (steps, *tails), span=s.span))
    return replace(s, body=body, jam=L.Jam(FACTOR, jammed, span=s.span))


def fold_flags(body) -> tuple:
    """``let f = false`` ... ``forall x in dense [0, n): f = true`` (a loop setting flags only, nothing in
    between touching them) becomes ``let f = n > 0``."""
    body = list(body)
    for i, s in enumerate(body):
        if not (isinstance(s, L.Forall) and s.iteration.kind == "dense" and not s.iteration.followers and s.body
                and all(isinstance(b, L.Set) and b.value == _TRUE for b in s.body)):
            continue
        names = {b.name for b in s.body}
        lets = [j for j in range(i) if isinstance(body[j], L.Let) and body[j].name in names]
        if len(lets) != len(names) or any(body[j].value != _FALSE for j in lets):
            continue
        between = [body[j] for j in range(min(lets), i) if j not in lets and body[j] is not None]
        if names & L.free_names(between) or names & L.expr_names(s.iteration.extent):
            continue
        cond = L.Op(">", (s.iteration.extent, L.Const(0, "i64")), "bool")
        for j in lets:
            body[j] = replace(body[j], value=cond)
        body[i] = None
    return tuple(b for b in body if b is not None)


def _split(body):
    """(pre, guard name or None, inner dense Forall, tail) of a jammable body, or None."""
    i = 0
    while i < len(body) and isinstance(body[i], L.Let):
        i += 1
    pre, rest, guard = body[:i], body[i:], None
    if len(rest) == 1 and isinstance(rest[0], L.If) and not rest[0].orelse and isinstance(rest[0].cond, L.Var) \
            and rest[0].cond.name in {p.name for p in pre}:
        guard, rest = rest[0].cond.name, rest[0].then
    if not rest or not isinstance(rest[0], L.Forall) or rest[0].iteration.kind != "dense" or rest[0].jam:
        return None
    it = rest[0].iteration
    if it.followers or it.lookups or it.drivers:
        return None
    return pre, guard, rest[0], rest[1:]


def _inner_ok(inner: L.Forall, settable: set, local: set, kinds: dict) -> bool:
    if L.expr_names(inner.iteration.extent) & local:
        return False
    work = False
    for b in inner.body:
        if isinstance(b, L.Set) and b.name in settable:
            work = work or b.value != _TRUE
        elif (isinstance(b, L.Accumulate) and b.value is not None and b.key == L.Var(inner.var)
              and kinds.get(b.ws) in _JAMMABLE_WORKSPACES):
            work = True
        else:
            return False
    return work


def _reads(inner: L.Forall) -> set:
    out = set(L.expr_names(inner.iteration.extent))
    for b in inner.body:
        out |= L.expr_names(b.value) if b.value is not None else set()
        if isinstance(b, L.Set):
            out.add(b.name)
        if isinstance(b, L.Accumulate):
            out |= L.expr_names(b.key)
    return out


def _rename_expr(e: L.Expr, names: dict) -> L.Expr:
    match e:
        case L.Var(name=n):
            return L.Var(names[n]) if n in names else e
        case L.Load(index=ix):
            return replace(e, index=tuple(_rename_expr(x, names) for x in ix))
        case L.Op(args=args):
            return replace(e, args=tuple(_rename_expr(x, names) for x in args))
        case L.Cast(arg=a):
            return replace(e, arg=_rename_expr(a, names))
        case L.Locate(start=a, stop=b, key=k):
            return replace(e, start=_rename_expr(a, names), stop=_rename_expr(b, names), key=_rename_expr(k, names))
    return e


def _rename(s: L.Stmt, names: dict) -> L.Stmt:
    match s:
        case L.Let(name=n, value=v) | L.Set(name=n, value=v):
            return replace(s, name=names.get(n, n), value=_rename_expr(v, names))
        case L.Store(index=ix, value=v):
            return replace(s, index=tuple(_rename_expr(x, names) for x in ix), value=_rename_expr(v, names))
        case L.If(cond=c, then=t, orelse=o):
            return replace(s, cond=_rename_expr(c, names), then=tuple(_rename(x, names) for x in t),
                           orelse=tuple(_rename(x, names) for x in o))
        case L.Accumulate(key=k, value=v):
            return replace(s, key=_rename_expr(k, names), value=None if v is None else _rename_expr(v, names))
        case L.Comment():
            return s
    raise TypeError(f"internal error: a jammed body cannot hold {type(s).__name__}")


def _user(var: str) -> str:
    """The index variable's name in the program (``x_d_1`` -> ``d``)."""
    name = var[2:] if var.startswith("x_") else var
    head, _, tail = name.rpartition("_")
    return head if head and tail.isdigit() else name
