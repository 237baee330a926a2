"""Textual form of the tensor IR (``sparsedsl compile --emit ir``).

The text reads like a .sdsl program with everything made explicit: every intermediate is declared with its
dtype, shape and chosen format, every operation is parenthesized, reductions carry their ranges, masks say
whether they are structural (``present(...)``) or read values, and loop-carried names are listed.
"""
from __future__ import annotations

from sparsedsl.tensor_ir import nodes as N


def format_expr(e: N.Expr) -> str:
    match e:
        case N.Lit(value=v, dtype=dt):
            if dt == "bool":
                return "true" if v else "false"
            if isinstance(v, float):
                text = repr(v)
                return f"{dt}({text})" if dt != "f64" else text
            return str(v) if dt == "i64" else f"{dt}({v})"
        case N.ScalarRef(name=n):
            return n
        case N.IndexVal(var=v):
            return v
        case N.Access(tensor=t, pos=pos):
            return f"{t}[{', '.join(format_expr(p) for p in pos)}]"
        case N.Binary(op=op, lhs=a, rhs=b):
            return f"({format_expr(a)} {op} {format_expr(b)})"
        case N.Unary(op="-", operand=a):
            return f"(-{format_expr(a)})"
        case N.Unary(op=op, operand=a):
            return f"({op} {format_expr(a)})"
        case N.Call(fn=fn, args=args):
            return f"{fn}({', '.join(format_expr(a) for a in args)})"
        case N.Cast(operand=a, dtype=dt):
            return f"{dt}({format_expr(a)})"
        case N.Reduce(op=op, vars=vs, body=b):
            return f"({op}[{', '.join(vs)}] {format_expr(b)})"
        case N.Softmax(var=v, body=b):
            return f"(softmax[{v}] {format_expr(b)})"
        case N.TopK(var=v, k=k, group=g, largest=largest, body=b):
            name = "topk" if largest else "bottomk"
            grp = f", group={g}" if g is not None else ""
            return f"({name}[{v}]({format_expr(k)}{grp}) {format_expr(b)})"
        case N.Fill(body=b, value=v):
            return f"fill({format_expr(b)}, {format_expr(v)})"
        case N.Where(body=b, mask=m):
            return f"({format_expr(b)} where {format_mask(m)})"
    raise TypeError(f"internal error: cannot print {type(e).__name__}")


def format_mask(m: N.Mask) -> str:
    match m:
        case N.MaskPresent(expr=e):
            return f"present({format_expr(e)})"
        case N.MaskValue(expr=e):
            return format_expr(e)
        case N.MaskNot(mask=a):
            return f"(not {format_mask(a)})"
        case N.MaskAnd(lhs=a, rhs=b):
            return f"({format_mask(a)} and {format_mask(b)})"
        case N.MaskOr(lhs=a, rhs=b):
            return f"({format_mask(a)} or {format_mask(b)})"
    raise TypeError(f"internal error: cannot print {type(m).__name__}")


def format_stmt(s: N.Stmt, indent: str = "") -> list[str]:
    match s:
        case N.Assign(target=t, idx=idx, op=op, value=v, ranges=ranges):
            lhs = f"{t}[{', '.join(idx)}]" if idx else t
            rng = "  # " + ", ".join(f"{var} < {d}" for var, d in ranges) if ranges else ""
            return [f"{indent}{lhs} {op} {format_expr(v)}{rng}"]
        case N.Repeat(max_iters=n, until=u, body=body, carried=carried):
            head = "repeat"
            if n is not None:
                head += f" at most {format_expr(n)}"
            if u is not None:
                head += f" until {format_expr(u)}"
            head += ":"
            if carried:
                head += f"  # carried: {', '.join(carried)}"
            lines = [indent + head]
            for st in body:
                lines.extend(format_stmt(st, indent + "    "))
            return lines
    raise TypeError(f"internal error: cannot print {type(s).__name__}")


def format_program(p: N.Program) -> str:
    lines = [f"# program {p.name}"]
    if p.sizes:
        lines.append(f"# sizes: {', '.join(p.sizes)}")
    for d in p.decls:
        kw = {"temp": "temp  "}.get(d.kind, f"{d.kind:<6}")
        extra = ""
        if d.kind == "const":
            lines.append(f"const  {d.name}: {d.type} = {format_expr(d.default)}")
            continue
        if d.default is not None:
            extra += f" = {format_expr(d.default)}"
        if d.fill is not None:
            extra += f" fill {format_expr(d.fill)}"
        if d.storage is not None:
            extra += f"  # stored as {d.storage}"
        lines.append(f"{kw} {d.name}: {d.type}{extra}")
    lines.append("")
    for s in p.body:
        lines.extend(format_stmt(s))
    for sch in p.schedules:
        lines.append("")
        lines.append(f"schedule {sch.target}:")
        for d in sch.directives:
            lines.append(f"    {d.name} {', '.join(map(str, d.args))}".rstrip())
    return "\n".join(lines) + "\n"
