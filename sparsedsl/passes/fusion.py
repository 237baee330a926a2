"""Fusion: an intermediate read once is computed where it is read instead of being stored.

Rewrite: ``X[a, b] = E`` followed (later, at the same level) by the only statement reading ``X``, once, as
``X[i, j]`` with plain index variables, becomes that statement with ``E`` (its indices renamed to ``i, j``, its
own reduction indices renamed apart) in place of the read, and ``X``'s statement disappears. Presence is kept
exactly: ``X`` is an ``auto`` intermediate, which stores exactly the present coordinates of ``E`` (spec § 5
rule 10), so reading ``X[i, j]`` and evaluating ``E`` at ``(i, j)`` give the same value and presence.

Legal when ``X`` is a temporary of semantic format ``auto`` assigned once with ``=`` outside every ``repeat``,
read in exactly one later statement outside every ``repeat``, once, at distinct plain index variables, and no
statement from ``X``'s definition to that reader (the reader included) reassigns anything ``E`` reads.

Done automatically only where it cannot add work, which is where the loops of the reader can be driven by
``E``'s own pattern:

* the reader is element-wise over ``X`` (reads it at its own free indices, in order, outside every reduction):
  the element-wise chain runs as ``E`` is produced (``C = A @ B`` then ``D = relu(C)``: one SpGEMM);

* ``E`` is element-wise (no reduction, softmax or top-k): evaluating it costs what reading ``X`` costs;
* ``E`` is ``body where M[a, b]`` with ``M`` a stored tensor read at exactly ``X``'s indices and every
  reduction inside the body over dense ranges (a sampled product, SDDMM): the reader walks ``M`` as it would
  have walked ``X``;
* ``E`` is ``softmax[b] F`` with ``F`` one of the above (after its own fusion): attention, SDDMM → softmax
  → SpMM, runs as one pass per row and the score matrix is never stored.

``schedule T: fuse X, Y`` forces ``X`` into ``Y`` (where legal; otherwise it is an error naming the reason).
An intermediate whose schedule gives an ``order`` keeps its own loops (it is fused only when forced).
Every fusion, and every ``fuse`` request, is reported to ``sparsedsl explain`` with its reason.
"""
from __future__ import annotations

from dataclasses import fields, replace

from sparsedsl.core.errors import SdslScheduleError
from sparsedsl.passes.formats import Decision
from sparsedsl.tensor_ir import nodes as N


def fuse(program: N.Program) -> tuple[N.Program, list[Decision]]:
    decisions: list[Decision] = []
    forced = _forced(program)
    for name, (consumer, span) in forced.items():
        reason = _illegal(program, name)
        if reason is None:
            reader = _reader(program, name)
            if reader.target != consumer:
                reason = f"its only reader is '{reader.target}'"
        if reason is not None:
            raise SdslScheduleError(f"cannot fuse '{name}' into '{consumer}': {reason}", span)
    while True:
        step = _one_fusion(program, forced)
        if step is None:
            break
        program, made = step
        decisions.append(made)
    return program, decisions


def _forced(program: N.Program) -> dict[str, tuple[str, object]]:
    """``fuse X, Y, Z``: X is computed inside Y, and Y inside Z (each inside the next one named)."""
    out: dict[str, tuple[str, object]] = {}
    for sched in program.schedules:
        for d in sched.directives:
            if d.name == "fuse":
                names = [str(a) for a in d.args]
                for name, reader in zip(names, names[1:]):
                    out[name] = (reader, d.span)
    return out


def _reader(program: N.Program, name: str) -> N.Assign:
    return next(s for s in program.body if _reads(s, name))


def _one_fusion(program: N.Program, forced) -> tuple[N.Program, Decision] | None:
    decls = {d.name: d for d in program.decls}
    ordered = {sch.target for sch in program.schedules for d in sch.directives if d.name == "order"}
    body = list(program.body)
    for at, st in enumerate(body):
        if not isinstance(st, N.Assign) or _illegal(program, st.target) is not None:
            continue
        reader_at = next(k for k in range(at + 1, len(body)) if _reads(body[k], st.target))
        reader = body[reader_at]
        if st.target in ordered and st.target not in forced:
            continue  # its schedule orders its own loops, which computing it inside the reader's would lose
        why = _profitable(st.value, decls) or _elementwise_reader(reader, st.target)
        if why is None and st.target not in forced:
            continue
        if why is None:
            why = "the schedule asks for it (fuse)"
        (access,) = N.accesses(reader.value, st.target)
        value = _renamed(st, access, reader)
        if st.value.dtype != decls[st.target].type.dtype:
            value = N.Cast(value, decls[st.target].type.dtype, span=value.span)
        ranges = dict(reader.ranges)
        for var, dim in _own_ranges(st, access, reader):
            ranges.setdefault(var, dim)
        new_reader = replace(reader, value=N.substitute(reader.value, access, value), ranges=tuple(ranges.items()))
        body[reader_at] = new_reader
        del body[at]
        new_decls = tuple(d for d in program.decls if d.name != st.target)
        made = Decision(st.target, "fusion", f"computed inside {reader.target}, not stored",
                        why, st.span)
        return replace(program, body=tuple(body), decls=new_decls), made
    return None


def _illegal(program: N.Program, name: str) -> str | None:
    """Why ``name`` cannot be fused into its reader (None: it can)."""
    decls = {d.name: d for d in program.decls}
    d = decls.get(name)
    if d is None or d.kind != "temp":
        return "only an intermediate (not an output) can be computed where it is read"
    if d.type.format.name != "auto":
        return f"a schedule stores it as {d.type.format.name}, which changes what reading it gives"
    top = [s for s in program.body if isinstance(s, N.Assign) and s.target == name]
    every = [s for s in N.walk_assigns(program.body) if s.target == name]
    if len(top) != 1 or len(every) != 1 or top[0].op != "=" or not top[0].idx:
        return "it must be a tensor assigned once, with '=', outside every repeat"
    body = list(program.body)
    at = body.index(top[0])
    readers = [k for k, s in enumerate(body) if _reads(s, name)]
    if len(readers) != 1 or readers[0] <= at or not isinstance(body[readers[0]], N.Assign):
        return "it must be read by exactly one later statement, outside every repeat"
    reader = body[readers[0]]
    accesses = N.accesses(reader.value, name)
    if len(accesses) != 1:
        return f"{reader.target} reads it more than once"
    pos = accesses[0].pos
    if not all(isinstance(p, N.IndexVal) for p in pos) or len({p.var for p in pos}) != len(pos):
        return f"{reader.target} reads it at computed positions, not at distinct index variables"
    written = {s.target for s in N.walk_assigns(body[at + 1:readers[0] + 1])}
    clash = written & set(N.tensors_read(top[0].value))
    if clash:
        return f"'{sorted(clash)[0]}' changes between its definition and its reader"
    if _has_topk(top[0].value):
        return "a top-k selection is computed whole before it is read"
    return None


def _profitable(e: N.Expr, decls: dict) -> str | None:
    """Why computing ``e`` at each point its reader visits costs no more than reading it stored."""
    if not _has_row_ops(e):
        return "element-wise: evaluating it where it is read costs what loading it would"
    if isinstance(e, N.Where) and _pattern_mask(e, decls) and not _has_row_ops(e.body, allow_dense_reduce=True,
                                                                                 decls=decls):
        return "a product sampled at a stored pattern: the reader walks that pattern instead of a stored copy"
    if isinstance(e, N.Softmax) and _profitable(e.body, decls) is not None:
        return ("softmax along a row of a sampled product: one pass per row computes the scores, their "
                "statistics and the reader's result without storing the score matrix")
    return None


def _elementwise_reader(reader: N.Assign, name: str) -> str | None:
    """The reader is element-wise over ``name``: it reads it at its own free indices, in order, outside every
    reduction, softmax or top-k, so its loops are the producer's and the value is used as it is produced."""
    (access,) = N.accesses(reader.value, name)
    if tuple(p.var for p in access.pos) != reader.idx:
        return None
    stack = [reader.value]
    while stack:
        x = stack.pop()
        if isinstance(x, (N.Reduce, N.Softmax, N.TopK)) and access in N.accesses(x, name):
            return None
        stack.extend(N.children(x))
    return "read element-wise by its only reader: each entry is used where it is produced"


def _pattern_mask(e: N.Where, decls: dict) -> bool:
    """``body where M[a, b]`` (possibly among other conditions) with M a stored sparse tensor at the free
    indices of ``e``."""
    free = set(N.free_indices(e))

    def masks(m):
        match m:
            case N.MaskPresent(expr=N.Access() as a):
                yield a
            case N.MaskAnd(lhs=l, rhs=r):
                yield from masks(l)
                yield from masks(r)

    for a in masks(e.mask):
        d = decls.get(a.tensor)
        if (d is not None and not d.type.format.is_dense and all(isinstance(p, N.IndexVal)
                                                                              for p in a.pos)
                and {p.var for p in a.pos} == free):
            return True
    return False


def _has_row_ops(e: N.Expr, allow_dense_reduce: bool = False, decls: dict | None = None) -> bool:
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, (N.Softmax, N.TopK)):
            return True
        if isinstance(x, N.Reduce):
            if not allow_dense_reduce or not _dense_operands(x.body, decls or {}):
                return True
            continue
        stack.extend(N.children(x))
    return False


def _dense_operands(e: N.Expr, decls: dict) -> bool:
    """Every tensor ``e`` reads is stored dense (a reduction over it walks a dense range)."""
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, (N.Reduce, N.Softmax, N.TopK)):
            return False
        if isinstance(x, N.Access):
            d = decls.get(x.tensor)
            if d is None or not d.type.format.is_dense:
                return False
        stack.extend(N.children(x))
    return True


def _has_topk(e: N.Expr) -> bool:
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, N.TopK):
            return True
        stack.extend(N.children(x))
    return False


def _reads(st: N.Stmt, name: str) -> bool:
    if isinstance(st, N.Assign):
        return name in N.tensors_read(st.value)
    if isinstance(st, N.Repeat):
        conds = [x for x in (st.max_iters, st.until) if x is not None]
        return any(_reads(s, name) for s in st.body) or any(name in N.tensors_read(c) for c in conds)
    return False


def _renaming(st: N.Assign, access: N.Access, reader: N.Assign) -> dict[str, str]:
    """The definition's variables in the reader's terms: free ones to the read's variables, bound ones to
    names the reader does not use."""
    mapping = {v: p.var for v, p in zip(st.idx, access.pos)}
    taken = {v for v, _ in reader.ranges} | set(reader.idx) | set(mapping.values())
    for v in sorted(N.reduced_vars(st.value)):
        name, k = v, 0
        while name in taken:
            k += 1
            name = f"{v}_{k}"
        mapping[v] = name
        taken.add(name)
    return mapping


def _own_ranges(st: N.Assign, access: N.Access, reader: N.Assign):
    mapping = _renaming(st, access, reader)
    for v, dim in st.ranges:
        if v in N.reduced_vars(st.value):
            yield mapping[v], dim


def _renamed(st: N.Assign, access: N.Access, reader: N.Assign) -> N.Expr:
    return _rename(st.value, _renaming(st, access, reader))


def _rename(x, mapping: dict[str, str]):
    """``x`` (an expression or mask) with every index variable renamed."""
    if isinstance(x, tuple):
        return tuple(_rename(y, mapping) for y in x)
    if not isinstance(x, N.Node):
        return x
    changes = {}
    for f in fields(x):
        if f.name == "span":
            continue
        old = getattr(x, f.name)
        if f.name == "var" and isinstance(old, str):
            new = mapping.get(old, old)
        elif f.name == "vars" and isinstance(x, N.Reduce):
            new = tuple(mapping.get(v, v) for v in old)
        else:
            new = _rename(old, mapping)
        if new is not old:
            changes[f.name] = new
    return replace(x, **changes) if changes else x
