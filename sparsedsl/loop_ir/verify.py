"""Checks of a loop-IR module (run after lowering): every name is defined before it is used, every kernel
invoked exists and is given exactly its parameters, workspaces are declared before use, iterations are
well formed and operators and dtypes are known. A failure is an internal error (a lowering bug), never a
user error: ``verify_module`` raises ``LoopIRError`` listing every problem found."""
from __future__ import annotations

from sparsedsl.loop_ir import nodes as L

DTYPES = ("bool", "i8", "i32", "i64", "f16", "bf16", "f32", "f64")
# names the host provides: the number of threads kernels split their outer loop for
PROVIDED = frozenset({"nthreads"})


class LoopIRError(Exception):
    """The loop IR violates an invariant (an internal error)."""


def check_module(m: L.Module) -> list[str]:
    """The problems found (empty when the module is well formed)."""
    problems: list[str] = []
    kernels = {}
    for k in m.kernels:
        if k.name in kernels:
            problems.append(f"kernel {k.name} is defined twice")
        kernels[k.name] = k
        scope = set(k.params)
        _check_stmts(k.body, scope, set(), problems, f"kernel {k.name}")
        if k.parallel and not _has_parallel(k.body):
            problems.append(f"kernel {k.name} is marked parallel but has no parallel loop")
        if _has_parallel(k.body) and "nthreads" not in k.params:
            # a parallel loop starts one task per thread (L.For): the kernel must be told how many
            problems.append(f"kernel {k.name} has a parallel loop but no nthreads parameter")
    host_scope = {p.name for p in m.params} | PROVIDED
    _check_host(m.host, host_scope, kernels, problems)
    for r in m.results:
        for a in r.arrays:
            if a not in host_scope:
                problems.append(f"result {r.tensor} names {a}, which the host never defines")
    return problems


def _check_host(body, host_scope: set, kernels: dict, problems: list) -> None:
    for s in body:
        if isinstance(s, L.Invoke):
            k = kernels.get(s.kernel)
            if k is None:
                problems.append(f"host invokes unknown kernel {s.kernel}")
                continue
            if tuple(s.args) != tuple(k.params):
                problems.append(f"host invokes {s.kernel} with {s.args}, expected {k.params}")
            for a in s.args:
                if a not in host_scope:
                    problems.append(f"host passes {a} to {s.kernel} before it is defined")
            host_scope.update(s.results)
        elif isinstance(s, L.If):
            # a run-time choice between two ways of computing the same results: what both branches define
            # is defined after it
            _check_expr(s.cond, host_scope, problems, "host")
            branches = []
            for body in (s.then, s.orelse):
                scope = set(host_scope)
                _check_host(body, scope, kernels, problems)
                branches.append(scope)
            host_scope.update(branches[0] & branches[1])
        elif isinstance(s, L.Loop):
            if s.count is not None:
                _check_expr(s.count, host_scope, problems, "host")
            if s.count is None and s.until is None:
                problems.append("host loop has neither a count nor a condition")
            # names first defined in the body are only defined after it has run once: the body is
            # checked in the enclosing scope, so later statements may read what it defines
            _check_host(s.body, host_scope, kernels, problems)
            if s.until is not None:
                _check_expr(s.until, host_scope, problems, "host")
        else:
            _check_stmts((s,), host_scope, set(), problems, "host")


def verify_module(m: L.Module) -> None:
    problems = check_module(m)
    if problems:
        raise LoopIRError("internal error: invalid loop IR:\n  " + "\n  ".join(problems))


def _has_parallel(body) -> bool:
    for s in body:
        if isinstance(s, L.For) and (s.parallel or _has_parallel(s.setup) or _has_parallel(s.body)):
            return True
        if isinstance(s, (L.Forall,)) and _has_parallel(s.body):
            return True
        if isinstance(s, L.If) and (_has_parallel(s.then) or _has_parallel(s.orelse)):
            return True
    return False


def _check_expr(e: L.Expr, scope: set, problems: list, where: str) -> None:
    for name in sorted(L.expr_names(e)):
        if name not in scope:
            problems.append(f"{where}: {name} is used before it is defined")
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, L.Op) and x.op not in L.OPS:
            problems.append(f"{where}: unknown operator {x.op}")
        if isinstance(x, (L.Op, L.Cast, L.Const)) and x.dtype not in DTYPES:
            problems.append(f"{where}: unknown dtype {x.dtype}")
        stack.extend(L.expr_children(x))


def _check_stmts(body, scope: set, workspaces: set, problems: list, where: str) -> None:
    for s in body:
        match s:
            case L.Let(name=n, dtype=dt, value=v):
                _check_expr(v, scope, problems, where)
                if dt not in DTYPES:
                    problems.append(f"{where}: let {n} has unknown dtype {dt}")
                scope.add(n)
            case L.Set(name=n, value=v):
                _check_expr(v, scope, problems, where)
                if n not in scope:
                    problems.append(f"{where}: {n} is set before it is declared")
            case L.Store(array=a, index=ix, value=v):
                if a not in scope:
                    problems.append(f"{where}: store into undefined array {a}")
                for x in ix:
                    _check_expr(x, scope, problems, where)
                _check_expr(v, scope, problems, where)
            case L.Alloc(name=n, shape=sh, fill=f, narrow=nw):
                for x in sh:
                    _check_expr(x, scope, problems, where)
                for x in (f, nw):
                    if x is not None:
                        _check_expr(x, scope, problems, where)
                scope.add(n)
            case L.If(cond=c, then=t, orelse=o):
                _check_expr(c, scope, problems, where)
                _check_stmts(t, set(scope), set(workspaces), problems, where)
                _check_stmts(o, set(scope), set(workspaces), problems, where)
            case L.For(var=v, start=a, stop=b, body=bd, setup=su):
                _check_expr(a, scope, problems, where)
                _check_expr(b, scope, problems, where)
                # what the per-thread setup defines is seen by the body, not after the loop
                inner, inner_ws = set(scope), set(workspaces)
                _check_stmts(su, inner, inner_ws, problems, where)
                _check_stmts(bd, inner | {v}, inner_ws, problems, where)
            case L.Forall(var=v, iteration=it, body=bd):
                inner = set(scope) | {v}
                if it.kind not in L.ITERATION_KINDS:
                    problems.append(f"{where}: unknown iteration {it.kind}")
                if it.kind == "dense":
                    if it.extent is None or it.drivers:
                        problems.append(f"{where}: a dense forall over {v} needs an extent and no drivers")
                    else:
                        _check_expr(it.extent, scope, problems, where)
                elif not it.drivers:
                    problems.append(f"{where}: a {it.kind} forall over {v} needs drivers")
                if it.lookups and it.kind != "intersect":
                    problems.append(f"{where}: lookups need an intersect forall over {v}")
                for c in it.lookups:
                    for state in (c.name + ("_bits" if it.membership else "_map"), c.name + "_mlo", c.name + "_mhi"):
                        if state not in scope:
                            problems.append(f"{where}: lookup {c.name} needs {state} declared")
                for c in it.drivers + it.followers + it.lookups:
                    _check_expr(c.start, scope, problems, where)
                    _check_expr(c.stop, scope, problems, where)
                    if c.values is not None and c.values not in scope:
                        problems.append(f"{where}: cursor {c.name} reads undefined {c.values}")
                    if c.groups is not None and c.shift is None:
                        problems.append(f"{where}: cursor {c.name} walks N:M slots without a shift")
                    if c.shift is not None:
                        for x in (c.shift, *(c.groups or ())):
                            _check_expr(x, scope, problems, where)
                        if it.kind != "intersect" or len(it.drivers) != 1 or c not in it.drivers:
                            problems.append(f"{where}: consecutive cursor {c.name} must drive its loop alone")
                    if c.idx not in scope:
                        problems.append(f"{where}: cursor {c.name} walks undefined {c.idx}")
                    inner |= {c.pos, c.found}
                _check_stmts(bd, inner, set(workspaces), problems, where)
                if s.jam is not None:
                    if it.kind != "intersect" or len(it.drivers) != 1 or it.followers or it.lookups:
                        problems.append(f"{where}: a jammed forall over {v} must walk one cursor")
                    (cur,) = it.drivers[:1] or (None,)
                    copies = {L.Jam.copy_name(x, u) for u in range(s.jam.factor)
                              for x in (v, *((cur.pos, cur.found) if cur else ()))}
                    _check_stmts(s.jam.body, set(scope) | copies, set(workspaces), problems, where)
            case L.Workspace(name=n, kind=k, dtype=dt, width=w):
                if k not in L.WORKSPACE_KINDS:
                    problems.append(f"{where}: unknown workspace kind {k}")
                if dt not in DTYPES:
                    problems.append(f"{where}: workspace {n} has unknown dtype {dt}")
                _check_expr(w, scope, problems, where)
                scope.update(L.workspace_arrays(n))
                workspaces.add(n)
            case L.Reset(ws=w, stamp=st, flops=f):
                if w not in workspaces:
                    problems.append(f"{where}: workspace {w} is used before it is declared")
                _check_expr(st, scope, problems, where)
                if f is not None:
                    _check_expr(f, scope, problems, where)
            case L.Compact(ws=w):
                if w not in workspaces:
                    problems.append(f"{where}: workspace {w} is used before it is declared")
            case L.Accumulate(ws=w, key=k, op=op, value=v):
                if w not in workspaces:
                    problems.append(f"{where}: workspace {w} is used before it is declared")
                if op not in L.ACCUMULATE_OPS:
                    problems.append(f"{where}: unknown accumulation {op}")
                if (v is None) != (op == "pattern"):
                    problems.append(f"{where}: accumulation {op} into {w} with value {v!r}")
                _check_expr(k, scope, problems, where)
                if v is not None:
                    _check_expr(v, scope, problems, where)
            case L.TopKSelect(name=n, count=cnt, k=k):
                _check_expr(cnt, scope, problems, where)
                _check_expr(k, scope, problems, where)
                for a in s.arrays:
                    if a not in scope:
                        problems.append(f"{where}: top-k selection {n} uses undefined {a}")
                scope.add(n + "_n")
            case L.PrefixSum(dst=d, src=src):
                for n in (d, src):
                    if n not in scope:
                        problems.append(f"{where}: prefix sum of undefined {n}")
            case L.Alias(name=n, source=src):
                if where != "host":
                    problems.append(f"{where}: an alias ({n} = {src}) is a host statement")
                if src not in scope:
                    problems.append(f"{where}: {n} aliases undefined {src}")
                scope.add(n)
            case L.Return(values=vs):
                for x in vs:
                    _check_expr(x, scope, problems, where)
            case L.Comment():
                pass
            case L.Invoke() | L.Loop():
                problems.append(f"{where}: a kernel cannot invoke another kernel or run a host loop")
            case _:
                problems.append(f"{where}: unknown statement {type(s).__name__}")
