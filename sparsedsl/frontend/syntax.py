"""AST of a .sdsl file: what was written, with source spans, before any name or type is resolved.

Frozen dataclasses; ``span`` is excluded from equality and hashing so that ``parse(print(ast)) == ast``.
Both front ends (text and ``@sd.kernel``) build these nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from sparsedsl.core.errors import Span


@dataclass(frozen=True)
class Node:
    span: Span | None = field(default=None, compare=False, hash=False, repr=False, kw_only=True)


# ---------------------------------------------------------------- types

@dataclass(frozen=True)
class FormatExpr(Node):
    """``dense``, ``csr``, ``bsr(4, 4)`` ...; params are integer literals or size names."""

    name: str
    params: tuple[Union[int, str], ...] = ()


@dataclass(frozen=True)
class TypeExpr(Node):
    """A scalar type (``format is None and shape == ()``) or a tensor type ``format<dtype>[dims]``."""

    dtype: str
    format: FormatExpr | None = None
    shape: tuple[Union[int, str], ...] = ()

    @property
    def is_scalar(self) -> bool:
        return self.format is None


# ---------------------------------------------------------------- expressions

@dataclass(frozen=True)
class Expr(Node):
    pass


@dataclass(frozen=True)
class Name(Expr):
    id: str


@dataclass(frozen=True)
class Number(Expr):
    """An integer or float literal; ``text`` keeps the spelling (``0x2A``, ``1e-3``) for printing."""

    value: Union[int, float]
    text: str = field(default="", compare=False)


@dataclass(frozen=True)
class Bool(Expr):
    value: bool


@dataclass(frozen=True)
class Access(Expr):
    """``base[i, 4 * g + r, P[j]]``: a tensor access; each index position is an expression."""

    base: Expr
    indices: tuple[Expr, ...]


@dataclass(frozen=True)
class Attribute(Expr):
    """``A.T`` or ``module.def_name``."""

    value: Expr
    attr: str


@dataclass(frozen=True)
class Keyword(Node):
    name: str
    value: Expr


@dataclass(frozen=True)
class Call(Expr):
    """``exp(x)``, ``f32(x)``, ``max(a, b)``, ``fill(e, v)``, ``gnn.gin(G, H, eps)``."""

    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...] = ()


@dataclass(frozen=True)
class BinOp(Expr):
    """Binary operators: ``+ - | * / // % & @ and or < <= > >= == !=``."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class UnaryOp(Expr):
    """``-x`` and ``not x``."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class Prefix(Expr):
    """A prefix operator over an index list, applying to the whole term that follows.

    ``op`` is a reduction (``sum prod max min mean var std count any all argmax argmin``), ``softmax``,
    ``logsumexp``, ``topk`` or ``bottomk``. ``args``/``kwargs`` hold ``(k, group=g)`` of topk/bottomk.
    """

    op: str
    indices: tuple[Name, ...]
    body: Expr
    args: tuple[Expr, ...] = ()
    kwargs: tuple[Keyword, ...] = ()


@dataclass(frozen=True)
class Where(Expr):
    """``(value where cond)`` inside an expression."""

    value: Expr
    cond: Expr


# ---------------------------------------------------------------- statements and declarations

@dataclass(frozen=True)
class Stmt(Node):
    pass


@dataclass(frozen=True)
class InputDecl(Stmt):
    name: str
    type: TypeExpr
    default: Expr | None = None


@dataclass(frozen=True)
class OutputDecl(Stmt):
    name: str
    type: TypeExpr | None = None
    fill: Expr | None = None


@dataclass(frozen=True)
class ConstDecl(Stmt):
    name: str
    value: Expr


@dataclass(frozen=True)
class Assign(Stmt):
    """``target[indices] op value [where cond]``; ``indices is None`` for ``X = ...`` (no brackets).

    ``op`` is one of ``=``, ``+=``, ``max=``, ``min=``.
    """

    target: str
    indices: tuple[Name, ...] | None
    op: str
    value: Expr
    where: Expr | None = None


@dataclass(frozen=True)
class Repeat(Stmt):
    max_iters: Expr | None
    until: Expr | None
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Param(Node):
    name: str
    type: TypeExpr


@dataclass(frozen=True)
class Return(Stmt):
    value: Expr


@dataclass(frozen=True)
class FuncDef(Stmt):
    name: str
    params: tuple[Param, ...]
    result: TypeExpr | None
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Import(Stmt):
    """``import a.b [as c]``: module path is dotted for nested folders."""

    module: str
    alias: str | None = None


@dataclass(frozen=True)
class ImportName(Node):
    name: str
    alias: str | None = None


@dataclass(frozen=True)
class FromImport(Stmt):
    module: str
    names: tuple[ImportName, ...]


@dataclass(frozen=True)
class Directive(Node):
    """One schedule line: ``accumulator hash``, ``block i 64``, ``order i, k, j``, ``fuse P, O``.

    ``args`` are the words and numbers after the directive name, in order (names as ``str``, numbers as ``int``).
    """

    name: str
    args: tuple[Union[str, int], ...] = ()


@dataclass(frozen=True)
class Schedule(Stmt):
    target: str
    directives: tuple[Directive, ...]


@dataclass(frozen=True)
class Module(Node):
    """A whole file: a program (has input/output declarations) or a module (only defs/imports)."""

    body: tuple[Stmt, ...]
    name: str = field(default="<inline>", compare=False)


# ---------------------------------------------------------------- vocabulary shared by both front ends

SCALAR_TYPES = ("bool", "i8", "i32", "i64", "f16", "bf16", "f32", "f64")
FORMATS = ("dense", "csr", "csc", "coo", "bsr", "blockdiag", "nm")
REDUCTIONS = ("sum", "prod", "max", "min", "mean", "var", "std", "count", "any", "all", "argmax", "argmin")
PREFIX_OPS = REDUCTIONS + ("softmax", "logsumexp", "topk", "bottomk")
KEYWORDS = frozenset(
    "input output const def return import from as where repeat at most until schedule and or not true false".split()
) | frozenset(SCALAR_TYPES) | frozenset(FORMATS) | frozenset(PREFIX_OPS)
# Built-in element-wise functions (spec § 6); casts are the scalar type names.
FUNCTIONS = (
    "exp", "log", "log1p", "sqrt", "rsqrt", "abs", "sign", "relu", "sigmoid", "tanh", "gelu", "silu",
    "sin", "cos", "floor", "ceil", "pow", "max", "min", "select", "fill",
)
ACCUMULATE_OPS = ("=", "+=", "max=", "min=")
