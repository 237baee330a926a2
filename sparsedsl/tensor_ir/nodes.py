"""Tensor IR nodes.

A program is a list of statements in index notation. Every expression node carries its ``dtype``; its free
index variables are computed by ``free_indices``. Whole-tensor sugar (``@``, ``.T``, element-wise whole-tensor
expressions), defs, imports and statement-level ``where`` are gone: the checker has rewritten them into
index notation with explicit ``Where`` nodes. Presence (spec § 5) is explicit in the node kinds:

* union operators: ``Binary`` with op in ``UNION_OPS`` and ``Call`` of ``max``/``min``;
* intersection operators: every other ``Binary`` and ``Call`` with two or more arguments;
* ``Where(body, mask)`` with a ``Mask`` tree: structural (``MaskPresent``), value (``MaskValue``), complement
  and combinations;
* ``Reduce``, ``Softmax``, ``TopK``, ``Fill`` as in spec § 5 rules 5, 7, 8, 9.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Union

from sparsedsl.core.errors import Span
from sparsedsl.tensor_ir.types import Dim, Format, TensorType


@dataclass(frozen=True)
class Node:
    span: Span | None = field(default=None, compare=False, hash=False, repr=False, kw_only=True)


# ---------------------------------------------------------------- expressions

@dataclass(frozen=True)
class Expr(Node):
    pass


@dataclass(frozen=True)
class Lit(Expr):
    """A constant; present everywhere."""

    value: Union[bool, int, float]
    dtype: str


@dataclass(frozen=True)
class ScalarRef(Expr):
    """A scalar variable: a scalar input, a const, a scalar intermediate, or a size name (``is_size``)."""

    name: str
    dtype: str
    is_size: bool = False


@dataclass(frozen=True)
class IndexVal(Expr):
    """An index variable used as a value (``i - j``, ``f32(i)``); dtype i64, present everywhere."""

    var: str
    dtype: str = "i64"


@dataclass(frozen=True)
class Access(Expr):
    """``tensor[pos0, pos1, ...]``.

    A position is ``IndexVal(v)`` for a plain index variable; otherwise an i64 expression of index variables,
    literals and scalars (affine: ``4 * g + r``, ``i + 1``) or one level of indirection through an integer
    tensor (``P[i]``, an ``Access``). A coordinate outside ``[0, extent)`` is absent.
    """

    tensor: str
    pos: tuple[Expr, ...]
    dtype: str


UNION_OPS = ("+", "-", "|", "or")
INTERSECTION_OPS = ("*", "/", "//", "%", "&", "and", "<", "<=", ">", ">=", "==", "!=")
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


@dataclass(frozen=True)
class Binary(Expr):
    op: str
    lhs: Expr
    rhs: Expr
    dtype: str


@dataclass(frozen=True)
class Unary(Expr):
    """``-x`` or ``not x`` (a value negation; a complemented *mask* is ``MaskNot``)."""

    op: str
    operand: Expr
    dtype: str


UNARY_FUNCS = (
    "exp", "log", "log1p", "sqrt", "rsqrt", "abs", "sign", "relu", "sigmoid", "tanh", "gelu", "silu",
    "sin", "cos", "floor", "ceil",
)
UNION_FUNCS = ("max", "min")  # max(a, b), min(a, b): union with the other operand as identity
MULTI_FUNCS = ("pow", "select", "max", "min")


@dataclass(frozen=True)
class Call(Expr):
    """A built-in element-wise function (``UNARY_FUNCS``, ``MULTI_FUNCS``)."""

    fn: str
    args: tuple[Expr, ...]
    dtype: str


@dataclass(frozen=True)
class Cast(Expr):
    operand: Expr
    dtype: str


REDUCE_OPS = (
    "sum", "prod", "max", "min", "mean", "var", "std", "count", "any", "all", "argmax", "argmin", "logsumexp",
)


@dataclass(frozen=True)
class Reduce(Expr):
    """``op[vars] body``; present where at least one entry was combined; to a scalar always present."""

    op: str
    vars: tuple[str, ...]
    body: Expr
    dtype: str


@dataclass(frozen=True)
class Softmax(Expr):
    """``softmax[var] body``: normalized over the present entries along ``var``; presence of ``body``."""

    var: str
    body: Expr
    dtype: str


@dataclass(frozen=True)
class TopK(Expr):
    """``topk[var](k, group=g) body`` (or bottomk when ``largest`` is False): a bool pattern."""

    var: str
    k: Expr
    group: int | None
    largest: bool
    body: Expr
    dtype: str = "bool"


@dataclass(frozen=True)
class Fill(Expr):
    """``fill(body, value)``: present everywhere; ``value`` where ``body`` is absent."""

    body: Expr
    value: Expr
    dtype: str


# masks: total boolean functions of the coordinates

@dataclass(frozen=True)
class Mask(Node):
    pass


@dataclass(frozen=True)
class MaskPresent(Mask):
    """Structural mask: true where ``expr`` is present (values are not read)."""

    expr: Expr


@dataclass(frozen=True)
class MaskValue(Mask):
    """Value mask: true where the bool ``expr`` is present and true."""

    expr: Expr


@dataclass(frozen=True)
class MaskNot(Mask):
    mask: Mask


@dataclass(frozen=True)
class MaskAnd(Mask):
    lhs: Mask
    rhs: Mask


@dataclass(frozen=True)
class MaskOr(Mask):
    lhs: Mask
    rhs: Mask


@dataclass(frozen=True)
class Where(Expr):
    """``body where mask``: present where body is present and the mask holds."""

    body: Expr
    mask: Mask
    dtype: str


# ---------------------------------------------------------------- statements

@dataclass(frozen=True)
class Stmt(Node):
    pass


@dataclass(frozen=True)
class Assign(Stmt):
    """``target[idx] op value``.

    ``op`` is ``=`` or an accumulation ``+=``, ``max=``, ``min=``. ``idx`` are plain index variables (empty
    for a scalar target). ``ranges`` gives the extent of every index variable of the statement (free and
    reduced), as a size name or literal.
    """

    target: str
    idx: tuple[str, ...]
    op: str
    value: Expr
    ranges: tuple[tuple[str, Dim], ...] = ()

    def range_of(self, var: str) -> Dim:
        for v, d in self.ranges:
            if v == var:
                return d
        raise KeyError(var)


@dataclass(frozen=True)
class Repeat(Stmt):
    """``repeat at most max_iters until until: body``; ``carried`` lists the loop-carried names."""

    max_iters: Expr | None
    until: Expr | None
    body: tuple[Stmt, ...]
    carried: tuple[str, ...] = ()


# ---------------------------------------------------------------- program

@dataclass(frozen=True)
class Decl(Node):
    """A named value: ``kind`` is input, output, const or temp (an intermediate).

    ``default`` (inputs) and ``value`` (consts) are literals; ``fill`` is what a dense output stores where absent.

    ``type.format`` is semantic: for an intermediate it is ``auto`` (presence kept exactly). ``storage`` is how a
    backend lays an intermediate out in memory: a ``format`` schedule directive's choice (set by the checker), else
    the format-selection pass's recommendation; a backend that follows it must still keep presence exactly (a
    schedule never changes a result, spec § 8).
    """

    name: str
    type: TensorType
    kind: str
    default: Lit | None = None
    fill: Lit | None = None
    storage: "Format | None" = None


@dataclass(frozen=True)
class ScheduleDirective(Node):
    name: str
    args: tuple[Union[str, int], ...] = ()

    @property
    def text(self) -> str:
        """As written: ``order i, k, j``, ``block i 64``, ``format bsr(4, 4)``."""
        words = [str(a) for a in self.args]
        if self.name == "format" and len(words) > 1:
            return f"format {words[0]}({', '.join(words[1:])})"
        sep = ", " if len(words) > 1 and all(isinstance(a, str) for a in self.args) else " "
        return " ".join([self.name] + ([sep.join(words)] if words else []))


@dataclass(frozen=True)
class Schedule(Node):
    target: str
    directives: tuple[ScheduleDirective, ...]


@dataclass(frozen=True)
class Program(Node):
    """A checked, inlined program. ``decls`` holds every named value in order of first definition."""

    name: str
    decls: tuple[Decl, ...]
    body: tuple[Stmt, ...]
    schedules: tuple[Schedule, ...] = ()
    sizes: tuple[str, ...] = ()

    @property
    def inputs(self) -> tuple[Decl, ...]:
        return tuple(d for d in self.decls if d.kind == "input")

    @property
    def outputs(self) -> tuple[Decl, ...]:
        return tuple(d for d in self.decls if d.kind == "output")

    def decl(self, name: str) -> Decl:
        for d in self.decls:
            if d.name == name:
                return d
        raise KeyError(name)


# ---------------------------------------------------------------- queries

def children(e: Expr) -> tuple[Expr, ...]:
    """The sub-expressions of ``e`` (masks flattened to the expressions they read)."""
    match e:
        case Access(pos=pos):
            return tuple(pos)
        case Binary(lhs=a, rhs=b):
            return (a, b)
        case Unary(operand=a) | Cast(operand=a):
            return (a,)
        case Call(args=args):
            return tuple(args)
        case Reduce(body=b) | Softmax(body=b):
            return (b,)
        case TopK(k=k, body=b):
            return (k, b)
        case Fill(body=b, value=v):
            return (b, v)
        case Where(body=b, mask=m):
            return (b, *mask_exprs(m))
    return ()


def mask_exprs(m: Mask) -> tuple[Expr, ...]:
    match m:
        case MaskPresent(expr=e) | MaskValue(expr=e):
            return (e,)
        case MaskNot(mask=a):
            return mask_exprs(a)
        case MaskAnd(lhs=a, rhs=b) | MaskOr(lhs=a, rhs=b):
            return mask_exprs(a) + mask_exprs(b)
    raise TypeError(m)


def free_indices(e: Expr) -> tuple[str, ...]:
    """Free index variables of ``e`` in order of first appearance."""
    out: list[str] = []

    def add(vs):
        for v in vs:
            if v not in out:
                out.append(v)

    match e:
        case IndexVal(var=v):
            add((v,))
        case Reduce(vars=vs, body=b):
            add(v for v in free_indices(b) if v not in vs)
        case TopK(k=k, body=b):
            add(free_indices(b))
            add(free_indices(k))
        case _:
            for c in children(e):
                add(free_indices(c))
    return tuple(out)


def tensors_read(e: Expr) -> tuple[str, ...]:
    """Names of tensors and scalars that ``e`` reads."""
    out: list[str] = []
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Access) and x.tensor not in out:
            out.append(x.tensor)
        if isinstance(x, ScalarRef) and not x.is_size and x.name not in out:
            out.append(x.name)
        stack.extend(reversed(children(x)))
    return tuple(out)


def walk_assigns(stmts):
    """Every ``Assign`` in ``stmts``, descending into ``repeat`` bodies, in program order."""
    for s in stmts:
        if isinstance(s, Assign):
            yield s
        elif isinstance(s, Repeat):
            yield from walk_assigns(s.body)


def accesses(e: Expr, name: str) -> list[Access]:
    """Every read of tensor ``name`` inside ``e``."""
    out = []
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Access) and x.tensor == name:
            out.append(x)
        stack.extend(children(x))
    return out


def reduced_vars(e: Expr) -> set[str]:
    """Index variables bound by the reductions inside ``e`` (softmax and top-k axes stay free)."""
    out: set[str] = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Reduce):
            out |= set(x.vars)
        stack.extend(children(x))
    return out


def substitute(x, old: Expr, new: Expr):
    """``x`` (an expression, mask or tuple of them) with every sub-expression equal to ``old`` replaced."""
    if x == old and isinstance(x, Expr):
        return new
    if isinstance(x, tuple):
        return tuple(substitute(y, old, new) for y in x)
    if not isinstance(x, (Expr, Mask)):
        return x
    changes = {}
    for f in fields(x):
        if f.name == "span":
            continue
        value = getattr(x, f.name)
        if isinstance(value, (Expr, Mask, tuple)):
            updated = substitute(value, old, new)
            if updated is not value:
                changes[f.name] = updated
    return replace(x, **changes) if changes else x
