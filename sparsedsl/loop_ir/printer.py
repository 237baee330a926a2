"""Textual form of the loop IR (``sparsedsl compile --emit loops``). Deterministic; one statement a line."""
from __future__ import annotations

from sparsedsl.loop_ir import nodes as L

_INFIX = {"+", "-", "*", "/", "//", "%", "&", "|", "<", "<=", ">", ">=", "==", "!=", "and", "or"}


def format_expr(e: L.Expr) -> str:
    match e:
        case L.Var(name=n):
            return n
        case L.Const(value=v, dtype=dt):
            if dt == "bool":
                return "true" if v else "false"
            return f"{v}" if dt in ("i64", "f64") else f"{dt}({v})"
        case L.Load(array=a, index=ix):
            return f"{a}[{', '.join(format_expr(x) for x in ix)}]"
        case L.Cast(arg=a, dtype=dt):
            return f"{dt}({format_expr(a)})"
        case L.Locate(idx=idx, start=s, stop=t, key=k):
            return f"locate({idx}[{format_expr(s)}:{format_expr(t)}], {format_expr(k)})"
        case L.Op(op=op, args=args):
            if op in _INFIX and len(args) == 2:
                return f"({format_expr(args[0])} {op} {format_expr(args[1])})"
            if op == "select":
                c, a, b = args
                return f"({format_expr(a)} if {format_expr(c)} else {format_expr(b)})"
            return f"{op}({', '.join(format_expr(a) for a in args)})"
    raise TypeError(f"internal error: unknown loop-IR expression {e!r}")


def _cursor(c: L.Cursor) -> str:
    if c.groups is not None:
        n, m = (format_expr(x) for x in c.groups)
        return (f"{c.name}: slots {c.idx}[{format_expr(c.start)}:{format_expr(c.stop)}] "
                f"at ({c.name}_p // {n}) * {m} + {c.idx}[{c.name}_p] + {format_expr(c.shift)}")
    if c.shift is not None:
        return (f"{c.name}: consecutive {c.idx}[{format_expr(c.start)}:{format_expr(c.stop)}] "
                f"at {c.name}_p + {format_expr(c.shift)}")
    return f"{c.name}: {c.idx}[{format_expr(c.start)}:{format_expr(c.stop)}]"


def format_stmts(body, depth: int = 0) -> list[str]:
    pad = "  " * depth
    out: list[str] = []
    for s in body:
        match s:
            case L.Let(name=n, dtype=dt, value=v):
                out.append(f"{pad}let {n}: {dt} = {format_expr(v)}")
            case L.Set(name=n, value=v):
                out.append(f"{pad}{n} = {format_expr(v)}")
            case L.Store(array=a, index=ix, value=v):
                out.append(f"{pad}{a}[{', '.join(format_expr(x) for x in ix)}] = {format_expr(v)}")
            case L.Alloc(name=n, dtype=dt, shape=sh, fill=f, narrow=nw):
                init = "" if f is None else f" fill {format_expr(f)}"
                if nw is not None:
                    init += f" (i32 if {format_expr(nw)} < 2^31)"
                if s.keep:
                    init += " (scratch kept between calls)"
                out.append(f"{pad}alloc {n}: {dt}[{', '.join(format_expr(x) for x in sh)}]{init}")
            case L.If(cond=c, then=t, orelse=o):
                out.append(f"{pad}if {format_expr(c)}:")
                out.extend(format_stmts(t, depth + 1))
                if o:
                    out.append(f"{pad}else:")
                    out.extend(format_stmts(o, depth + 1))
            case L.For(var=v, start=a, stop=b, body=bd, parallel=par, setup=su):
                kw = "parallel for" if par else "for"
                claim = ", claimed one at a time" if par else ""
                out.append(f"{pad}{kw} {v} in [{format_expr(a)}, {format_expr(b)}){claim}:")
                if su:
                    out.append(f"{pad}  {'per thread' if par else 'before the first'}:")
                    out.extend(format_stmts(su, depth + 2))
                out.extend(format_stmts(bd, depth + 1))
            case L.Forall(var=v, iteration=it, body=bd):
                if it.kind == "dense":
                    how = f"dense [0, {format_expr(it.extent)})"
                else:
                    how = f"{it.kind}(" + ", ".join(_cursor(c) for c in it.drivers) + ")"
                if it.lookups:
                    how += (" member(" if it.membership else " lookup(") + ", ".join(_cursor(c) for c in it.lookups) \
                        + ")"
                if it.followers:
                    how += " follow(" + ", ".join(_cursor(c) for c in it.followers) + ")"
                out.append(f"{pad}forall {v} in {how}:")
                out.extend(format_stmts(bd, depth + 1))
                if s.jam is not None:
                    # the steps of several entries come first; the body above runs the entries left over
                    out.append(f"{pad}  jammed, {s.jam.factor} entries per step ({v}_u0 ...):")
                    out.extend(format_stmts(s.jam.body, depth + 2))
            case L.Workspace(name=n, kind=k, dtype=dt, width=w):
                out.append(f"{pad}workspace {n}: {k}<{dt}>[{format_expr(w)}]")
            case L.Reset(ws=w, flops=f):
                out.append(f"{pad}reset {w}" + ("" if f is None else f" (row work {format_expr(f)})"))
            case L.Accumulate(ws=w, key=k, op=op, value=v):
                val = "" if v is None else f" {format_expr(v)}"
                out.append(f"{pad}{w}[{format_expr(k)}] {op}={val}")
            case L.Compact(ws=w, values=vals, ordered=ordered):
                out.append(f"{pad}compact {w}" + ("" if vals else " (pattern)") + ("" if ordered else " (unordered)"))
            case L.Invoke(kernel=k, args=args, results=res):
                lhs = f"{', '.join(res)} = " if res else ""
                out.append(f"{pad}{lhs}{k}({', '.join(args)})")
            case L.TopKSelect(name=n, count=cnt, k=k, group=g):
                grp = "" if g is None else f", group {g}"
                out.append(f"{pad}{n}_n = select_first({n}_j[0:{format_expr(cnt)}], k {format_expr(k)}{grp})")
            case L.Loop(count=n, body=bd, until=u):
                head = "repeat" + ("" if n is None else f" at most {format_expr(n)}")
                out.append(f"{pad}{head}" + ("" if u is None else f" until {format_expr(u)}") + ":")
                out.extend(format_stmts(bd, depth + 1))
            case L.PrefixSum(dst=d, src=src):
                out.append(f"{pad}{d} = prefix_sum({src})")
            case L.Alias(name=n, source=src):
                out.append(f"{pad}{n} = {src} (shared, not copied)")
            case L.Return(values=vs):
                out.append(f"{pad}return {', '.join(format_expr(v) for v in vs)}")
            case L.Comment(text=t):
                out.append(f"{pad}# {t}")
            case _:
                raise TypeError(f"internal error: unknown loop-IR statement {s!r}")
    return out


def format_module(m: L.Module) -> str:
    lines = [f"# loops of {m.name}"]
    for p in m.params:
        lines.append(f"param {p.name}: {p.kind}.{p.role} <{p.dtype}> of {p.tensor}")
    for k in m.kernels:
        lines.append("")
        lines.append(f"kernel {k.name}({', '.join(k.params)})" + (" parallel" if k.parallel else "") + ":")
        lines.extend(format_stmts(k.body, 1))
    lines.append("")
    lines.append("host:")
    lines.extend(format_stmts(m.host, 1))
    for r in m.results:
        lines.append(f"result {r.tensor}: {r.kind}<{r.dtype}> = ({', '.join(r.arrays)})")
    return "\n".join(lines) + "\n"
