"""The embedded front end: ``@sd.kernel`` and the Python objects a kernel body is written with.

A decorated function is *traced*: its parameters become proxies, index variables come from ``sd.indices``,
intermediates and outputs from ``sd.tensor``, and every operator on them builds a node of the same AST
(``sparsedsl.frontend.syntax``) that the text parser builds for the same program, so both front ends meet at
the checker and print the same IR. A statement is recorded when a tensor proxy is assigned to
(``C[i, j] = e``, ``C[i, j] += e``); the function's return value names the outputs.

How Python spellings map onto the language (spec § 6):

===========================================  =================================================
Python                                       .sdsl
===========================================  =================================================
``C[i, j] = e``                              ``C[i, j] = e``
``C[i, j] = sd.where(e, c)``                 ``C[i, j] = e where c``  (statement-level where)
``C[i, j] += e``                             ``C[i, j] += e``
``sd.accumulate(C[i, j], e, op="max")``      ``C[i, j] max= e``  (also ``"min"`` and ``"+"``)
``C[...] = A @ B`` (or ``C[()] = ...``)      ``C = A @ B``  (no indices: whole tensor or scalar)
``e.where(c)``, nested ``sd.where(e, c)``    ``(e where c)``
``sd.sum(k, e)``, ``sd.sum((k, l), e)``      ``sum[k] e``, ``sum[k, l] e``  (every reduction)
``sd.topk(j, 2, e, group=4)``                ``topk[j](2, group=4) e``
``sd.maximum(a, b)``, ``sd.minimum(a, b)``   ``max(a, b)``, ``min(a, b)``  (element-wise, two arguments)
``a & b``, ``a | b``, ``~a``                 ``a & b``, ``a | b``, ``not a``
``sd.and_(a, b)``, ``sd.or_(a, b)``          ``a and b``, ``a or b``
``a ** b``                                   ``pow(a, b)``
``sd.f32(x)`` ... ``sd.bool_(x)``            ``f32(x)`` ... ``bool(x)``
``A.T``                                      ``A.T``
``sd.size("N")``, ``A.shape[0]``             ``N`` (a size name used as a value)
===========================================  =================================================

Python evaluates ``1 < x`` as ``x > 1``, so a comparison with a Python number on the left is recorded with
its operands swapped; it means the same, but write the proxy on the left when comparing IR with a text
program. Python's ``and``, ``or``, ``not``, ``if`` and chained comparisons ask a proxy for a truth value,
which it does not have during tracing: they raise an ``SdslError`` that says what to write instead.

Types of inputs come from the parameters' annotations (strings in the type syntax, ``"csr<f32>[M, K]"``;
the program is then generic in its sizes) or, for parameters without one, from the values of a call
(the program is specialized on their formats, dtypes and shapes and cached per signature). A parameter's
Python default becomes the input's default (``input scale: f32 = 0.125``); the language allows defaults
for scalars only, and the checker reports any other.

Tracing state lives in one ``_Trace`` per trace, held by every proxy made during it. Functions that create
statements without a proxy argument (``sd.tensor``, ``sd.schedule``, ...) find the trace of the enclosing
kernel call on the Python call stack, so there is no module-level state and concurrent traces in different
threads do not meet.
"""
from __future__ import annotations

import builtins
import functools
import inspect
import linecache
import math
import numbers
import sys
from dataclasses import replace
from typing import Any, Callable

from sparsedsl.core.errors import (
    SdslError,
    SdslInputError,
    SdslNameError,
    SdslSyntaxError,
    SdslTypeError,
    Source,
    Span,
)
from sparsedsl.core.names import IDENT
from sparsedsl.frontend import syntax

__all__ = [
    "kernel", "Kernel", "indices", "tensor", "const", "size", "schedule", "repeat", "accumulate", "where",
    "IndexVar", "TensorRef", "Expression", "Size", "type_of",
    # reductions and prefix operators
    "sum", "prod", "max", "min", "mean", "var", "std", "count", "any", "all", "argmax", "argmin",
    "softmax", "logsumexp", "topk", "bottomk",
    # element-wise functions
    "exp", "log", "log1p", "sqrt", "rsqrt", "abs", "sign", "relu", "sigmoid", "tanh", "gelu", "silu",
    "sin", "cos", "floor", "ceil", "pow", "maximum", "minimum", "select", "fill",
    # casts
    "bool_", "i8", "i32", "i64", "f16", "bf16", "f32", "f64",
    # logic
    "and_", "or_", "not_",
]

_THIS_FILE = __file__


# ---------------------------------------------------------------- where the user is

def _user_frame():
    """The innermost frame outside this module: the line of user code that is being traced."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == _THIS_FILE:
        frame = frame.f_back
    return frame


def _span_of_frame(frame, sources: dict[str, Source] | None) -> Span | None:
    if frame is None:
        return None
    code = frame.f_code
    filename = code.co_filename
    source = None if sources is None else sources.get(filename)
    if source is None:
        source = Source(filename, "".join(linecache.getlines(filename, frame.f_globals)))
        if sources is not None:
            sources[filename] = source
    line, end_line, col, end_col = frame.f_lineno, None, None, None
    if frame.f_lasti >= 0:
        # Python 3.11+ keeps the column range of every instruction: point at the sub-expression itself.
        for k, pos in enumerate(code.co_positions()):
            if k == frame.f_lasti // 2:
                if pos[0] is not None:
                    line, end_line, col, end_col = pos
                break
    text = source.line(line)
    if col is None:
        col = len(text) - len(text.lstrip())
        end_line, end_col = line, len(text)
    else:
        # co_positions counts UTF-8 bytes; Span counts characters.
        col = len(text.encode("utf-8")[:col].decode("utf-8", "replace"))
        if end_line == line and end_col is not None:
            end_col = len(text.encode("utf-8")[:end_col].decode("utf-8", "replace"))
    return Span(source, line, col + 1, end_line, None if end_col is None else end_col + 1)


def _here(trace: "_Trace | None") -> Span | None:
    return _span_of_frame(_user_frame(), None if trace is None else trace.sources)


def _active_trace(what: str) -> "_Trace":
    """The trace of the innermost ``kernel`` call on the stack (see the module docstring)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _run_trace.__code__:
            return frame.f_locals["trace"]
        frame = frame.f_back
    raise SdslError(f"sd.{what}() can only be used inside the body of an @sd.kernel function",
                    _span_of_frame(_user_frame(), None))


# ---------------------------------------------------------------- the per-trace state

class _Trace:
    def __init__(self, fn: Callable):
        self.fn = fn
        self.sources: dict[str, Source] = {}
        self.blocks: list[list[syntax.Stmt]] = [[]]
        self.names: dict[str, str] = {}  # name -> what declared it ("input", "tensor", "index", "const")
        self.tensors: dict[str, TensorRef] = {}
        self.finished = False  # set when the kernel's function returns: its proxies record nothing after

    def span(self) -> Span | None:
        return _here(self)

    def emit(self, stmt: syntax.Stmt) -> None:
        _usable(self)
        self.blocks[-1].append(stmt)

    def claim(self, name: str, kind: str, span: Span | None) -> None:
        _check_name(name, kind, span)
        prior = self.names.get(name)
        if prior is not None and not (prior == kind == "index"):
            raise SdslNameError(f"'{name}' is already declared as {_KIND_TEXT[prior]} in this kernel", span)
        self.names[name] = kind


_KIND_TEXT = {"input": "an input", "tensor": "a tensor", "index": "an index variable", "const": "a const"}


def _check_name(name: Any, kind: str, span: Span | None) -> None:
    if not isinstance(name, str) or not IDENT.match(name):
        raise SdslNameError(f"{name!r} is not a valid sparsedsl name for {_KIND_TEXT[kind]}", span)
    if name in syntax.KEYWORDS:
        raise SdslNameError(f"'{name}' is a keyword of the language and cannot name {_KIND_TEXT[kind]}", span)


# ---------------------------------------------------------------- expression proxies

_TRUTH_HELP = (
    "a sparsedsl expression has no truth value while a kernel is traced: Python's 'and', 'or', 'not', 'if' "
    "and chained comparisons (a < b < c) cannot be recorded; write sd.and_(a, b), sd.or_(a, b), sd.not_(a) "
    "(or a & b, a | b, ~a), and sd.select(c, a, b) or sd.where(e, c) for a condition"
)


def _node(value: Any, span: Span | None) -> syntax.Expr:
    """The AST node of a Python value used inside an expression."""
    if isinstance(value, Expression):
        return value._as_operand()
    if isinstance(value, builtins.bool):
        return syntax.Bool(value, span=span)
    kind = getattr(getattr(value, "dtype", None), "kind", None) if type(value).__module__ == "numpy" else None
    if kind == "b" and getattr(value, "ndim", 1) == 0:
        return syntax.Bool(builtins.bool(value), span=span)
    if isinstance(value, numbers.Integral):
        return _number(int(value), span)
    if isinstance(value, numbers.Real):
        return _number(float(value), span)
    raise SdslTypeError(
        f"a value of Python type {type(value).__name__} cannot be used in a sparsedsl expression; use kernel "
        "parameters, sd.tensor(...) tensors, index variables and numbers", span)


def _number(value: int | float, span: Span | None) -> syntax.Expr:
    # Negative numbers and inf/nan are spelled as the text front end reads them: '-' applied to a literal,
    # and the constant names inf and nan.
    if isinstance(value, float) and math.isnan(value):
        return syntax.Name("nan", span=span)
    if value < 0 or (isinstance(value, float) and math.copysign(1.0, value) < 0 and value == 0):
        return syntax.UnaryOp("-", _number(-value, span), span=span)
    if isinstance(value, float) and math.isinf(value):
        return syntax.Name("inf", span=span)
    return syntax.Number(value, repr(value) if isinstance(value, float) else str(value), span=span)


def _usable(trace: "_Trace") -> "_Trace":
    """``trace``, if its kernel is still being traced: a proxy kept after its kernel returned (in a global, a
    closure) would otherwise record into a program that is already built."""
    if trace.finished:
        raise SdslError(f"this expression uses a tensor or index of kernel '{trace.fn.__name__}', whose tracing "
                        "has finished: a kernel's tensors and indices are used only inside its own body", _here(None))
    return trace


def _trace_of(*values: Any) -> "_Trace | None":
    traces = [v._trace for v in values if isinstance(v, Expression) and v._trace is not None]
    if not traces:
        return None
    if builtins.any(t is not traces[0] for t in traces[1:]):
        raise SdslError("this expression mixes tensors or indices of two kernels: each kernel's tensors and "
                        "indices are used only inside its own body", _here(None))
    return _usable(traces[0])


def _binary(op: str, left: Any, right: Any) -> "Expression":
    trace = _trace_of(left, right)
    span = _here(trace)
    return Expression(syntax.BinOp(op, _node(left, span), _node(right, span), span=span), trace)


def _call(func: str, *args: Any) -> "Expression":
    trace = _trace_of(*args)
    span = _here(trace)
    nodes = tuple(_node(a, span) for a in args)
    return Expression(syntax.Call(syntax.Name(func, span=span), nodes, span=span), trace)


def _binop_methods(op: str):
    def forward(self, other):
        return _binary(op, self, other)

    def reflected(self, other):
        return _binary(op, other, self)

    return forward, reflected


def _no_inplace(op: str):
    def method(self, other):
        raise SdslError(
            f"'{op}' is not an accumulation of the language: use '+=' or sd.accumulate(X[...], e, op='max'|'min'), "
            f"or write X[...] = X[...] {op[:-1]} e for a new tensor", _here(self._trace))
    return method


class Expression:
    """A sparsedsl expression under construction; operators on it build AST nodes, never values."""

    __slots__ = ("_node_", "_trace")
    # numpy scalars and arrays must defer to our reflected operators instead of broadcasting over the proxy.
    __array_ufunc__ = None

    def __init__(self, node: syntax.Expr, trace: "_Trace | None"):
        self._node_ = node
        self._trace = trace

    @property
    def node(self) -> syntax.Expr:
        """The AST node this expression stands for."""
        return self._node_

    def _as_operand(self) -> syntax.Expr:
        return self._node_

    def __getitem__(self, key: Any):
        # TensorRef overrides this; anything else is an entry or a computed value (A[i][j], (A @ B)[i, j])
        raise SdslError("only named tensors can be indexed, once, with all their positions: A[i, j] (to index a "
                        "computed value, give it a name first: C = sd.tensor('C'); C[i, j] = ...)",
                        _here(self._trace))

    def __repr__(self) -> str:
        try:
            from sparsedsl.frontend.printer import format_expr
            return f"<sparsedsl expression {format_expr(self._as_operand())}>"
        except ImportError:
            return f"<sparsedsl expression {self._as_operand()!r}>"

    __add__, __radd__ = _binop_methods("+")
    __sub__, __rsub__ = _binop_methods("-")
    __mul__, __rmul__ = _binop_methods("*")
    __truediv__, __rtruediv__ = _binop_methods("/")
    __floordiv__, __rfloordiv__ = _binop_methods("//")
    __mod__, __rmod__ = _binop_methods("%")
    __and__, __rand__ = _binop_methods("&")
    __or__, __ror__ = _binop_methods("|")
    __matmul__, __rmatmul__ = _binop_methods("@")
    __lt__ = _binop_methods("<")[0]
    __le__ = _binop_methods("<=")[0]
    __gt__ = _binop_methods(">")[0]
    __ge__ = _binop_methods(">=")[0]
    __eq__ = _binop_methods("==")[0]  # type: ignore[assignment]
    __ne__ = _binop_methods("!=")[0]  # type: ignore[assignment]
    # proxies are compared by identity where Python needs a hash (sets, dict keys)
    __hash__ = object.__hash__

    def __pow__(self, other):
        return _call("pow", self, other)

    def __rpow__(self, other):
        return _call("pow", other, self)

    def __neg__(self):
        span = _here(self._trace)
        return Expression(syntax.UnaryOp("-", self._as_operand(), span=span), self._trace)

    def __pos__(self):
        return self

    def __invert__(self):
        span = _here(self._trace)
        return Expression(syntax.UnaryOp("not", self._as_operand(), span=span), self._trace)

    def __abs__(self):
        return _call("abs", self)

    def __iadd__(self, other):
        return _Accumulation(self, "+=", other)

    __isub__ = _no_inplace("-=")
    __imul__ = _no_inplace("*=")
    __itruediv__ = _no_inplace("/=")

    def __bool__(self):
        raise SdslError(_TRUTH_HELP, _here(self._trace))

    def __iter__(self):
        raise SdslError("a sparsedsl expression cannot be iterated over; index it with index variables "
                        "(A[i, j]) instead", _here(self._trace))

    def __index__(self):
        raise SdslError("a sparsedsl expression is not a Python integer; it has no value while a kernel is "
                        "traced", _here(self._trace))

    __int__ = __index__

    def __float__(self):
        raise SdslError("a sparsedsl expression is not a Python number; it has no value while a kernel is "
                        "traced", _here(self._trace))

    def __xor__(self, other):
        raise SdslError("'^' is not an operator of the language; for booleans write sd.and_/sd.or_/sd.not_ "
                        "or select(...)", _here(self._trace))

    __rxor__ = __xor__

    def where(self, cond: Any) -> "Expression":
        """``(self where cond)``: this expression restricted to where ``cond`` holds (spec § 5.6)."""
        trace = _trace_of(self, cond)
        span = _here(trace)
        return Expression(syntax.Where(self._as_operand(), _node(cond, span), span=span), trace)

    @property
    def T(self) -> "Expression":
        """``self.T``: the transpose of a whole tensor."""
        span = _here(self._trace)
        return Expression(syntax.Attribute(self._as_operand(), "T", span=span), self._trace)


class _StatementWhere(Expression):
    """``sd.where(e, c)``: the trailing ``where`` of a statement when it is the whole right-hand side,
    ``(e where c)`` anywhere else."""

    __slots__ = ("value", "cond")

    def __init__(self, value: syntax.Expr, cond: syntax.Expr, span: Span | None, trace: "_Trace | None"):
        super().__init__(syntax.Where(value, cond, span=span), trace)
        self.value = value
        self.cond = cond


class _Accumulation(Expression):
    """What ``X[...] += e`` hands to ``X.__setitem__``; read as a value it is ``X[...] + e``."""

    __slots__ = ("target", "op", "rhs")

    def __init__(self, target: Expression, op: str, rhs: Any):
        trace = _trace_of(target, rhs)
        span = _here(trace)
        node = syntax.BinOp("+", target._as_operand(), _node(rhs, span), span=span)
        super().__init__(node, trace)
        self.target = target._as_operand()
        self.op = op
        self.rhs = rhs


class IndexVar(Expression):
    """An index variable (``sd.indices("i j k")``); also a value in index arithmetic (``4 * g + r``, ``j <= i``)."""

    __slots__ = ("name",)

    def __init__(self, name: str, span: Span | None, trace: "_Trace | None"):
        super().__init__(syntax.Name(name, span=span), trace)
        self.name = name

    def __repr__(self) -> str:
        return f"IndexVar({self.name!r})"

    def _as_operand(self) -> syntax.Expr:
        # located at the use, so that an index error points at the expression rather than at sd.indices
        return syntax.Name(self.name, span=_here(self._trace))


class TensorRef(Expression):
    """A named tensor or scalar of the program: a kernel parameter (input) or an ``sd.tensor`` declaration.

    ``X[i, j]`` reads it; ``X[i, j] = e`` (``+=``) defines it; used without brackets it is the whole tensor
    (``A @ B``, ``A.T``, ``scale * x[i]``).
    """

    __slots__ = ("name", "kind", "type", "fill", "_declared_at")

    def __init__(self, name: str, kind: str, trace: "_Trace", span: Span | None,
                 type: syntax.TypeExpr | None = None, fill: syntax.Expr | None = None):
        super().__init__(syntax.Name(name, span=span), trace)
        self.name = name
        self.kind = kind
        self.type = type
        self.fill = fill
        self._declared_at = span

    def __repr__(self) -> str:
        return f"TensorRef({self.name!r}, {self.kind})"

    def __iadd__(self, other):
        # `C += B` on the whole tensor: Python rebinds C to what this returns, so the statement is recorded
        # here and C stays this tensor (`C[i, j] += e` goes through the access's __iadd__ and __setitem__)
        self[...] = _Accumulation(self, "+=", other)
        return self

    def _as_operand(self) -> syntax.Expr:
        # a fresh Name per use, so that diagnostics point at the use rather than the declaration
        return syntax.Name(self.name, span=_here(self._trace))

    @property
    def shape(self) -> tuple:
        """The declared dimensions: size names as ``sd.size`` values, literal extents as Python ints."""
        if self.type is None or self.type.is_scalar:
            what = "has no declared type" if self.type is None else "is a scalar"
            raise SdslTypeError(f"'{self.name}' {what}, so it has no shape to read", _here(self._trace))
        return tuple(d if isinstance(d, int) else _size_value(d, self._trace) for d in self.type.shape)

    def __getitem__(self, key: Any) -> Expression:
        parts = key if isinstance(key, tuple) else (key,)
        trace = _trace_of(self, *parts)
        span = _here(trace)
        if key is Ellipsis or (isinstance(key, tuple) and len(key) == 0):
            raise SdslError(f"write {self.name} without brackets for the whole tensor; X[...] is only a "
                            f"statement's left side (to accumulate into the whole tensor: {self.name} += e)", span)
        nodes = tuple(_index_position(p, trace, span) for p in parts)
        return Expression(syntax.Access(syntax.Name(self.name, span=span), nodes, span=span), trace)

    def __setitem__(self, key: Any, value: Any) -> None:
        trace = _trace_of(self, value, *(key if isinstance(key, tuple) else (key,)))
        span = _here(trace)
        if self.kind != "tensor":
            raise SdslError(f"'{self.name}' is {_KIND_TEXT[self.kind]} and cannot be assigned; declare the result "
                            "with sd.tensor(name)", span)
        if key is Ellipsis or (isinstance(key, tuple) and len(key) == 0):
            lhs: tuple[syntax.Name, ...] | None = None
        else:
            parts = key if isinstance(key, tuple) else (key,)
            for p in parts:
                if not isinstance(p, IndexVar):
                    raise SdslError(
                        f"the left side {self.name}[...] takes index variables only (got {_describe(p)}); "
                        "affine and gathered positions belong on the right side", span)
            lhs = tuple(syntax.Name(p.name, span=span) for p in parts)
        op = "="
        if isinstance(value, _Accumulation) and _same_target(value.target, self.name, lhs):
            op, value = value.op, value.rhs
        _emit_assign(trace, self.name, lhs, op, value, span)


def _same_target(target: syntax.Expr, name: str, lhs: tuple[syntax.Name, ...] | None) -> bool:
    if lhs is None:
        return isinstance(target, syntax.Name) and target.id == name
    return (isinstance(target, syntax.Access) and target.base == syntax.Name(name)
            and target.indices == lhs)


def _emit_assign(trace: _Trace, name: str, lhs, op: str, value: Any, span: Span | None) -> None:
    if isinstance(value, _StatementWhere):
        stmt = syntax.Assign(name, lhs, op, value.value, value.cond, span=span)
    else:
        stmt = syntax.Assign(name, lhs, op, _node(value, span), span=span)
    trace.emit(stmt)


def _describe(value: Any) -> str:
    if isinstance(value, Expression):
        return "an expression"
    name = type(value).__name__
    return ("an " if name[:1] in "aeiouAEIOU" else "a ") + name


def _index_position(p: Any, trace: "_Trace | None", span: Span | None) -> syntax.Expr:
    if isinstance(p, slice) or p is Ellipsis or p is None:
        raise SdslError("slices are not accesses of the language: index a tensor with index variables, "
                        "affine expressions of them, integers, or a gather P[i]", span)
    if isinstance(p, (bool,)):
        raise SdslTypeError("a bool cannot be an index position", span)
    if isinstance(p, numbers.Integral):
        return _number(int(p), span)
    if isinstance(p, Expression):
        return p._as_operand()
    raise SdslTypeError(f"{_describe(p)} cannot be an index position; use an index variable, an affine "
                        "expression of index variables, an integer, or a gather P[i]", span)


class Size(Expression):
    """A size name (``N``) as an ``i64`` value. ``str()`` and f-strings give the name, so a type can be written
    from an input's shape in both the annotated and the inferred mode: ``f"dense<f64>[{A.shape[0]}]"``."""

    __slots__ = ("name",)

    def __init__(self, name: str, span: Span | None, trace: "_Trace | None"):
        super().__init__(syntax.Name(name, span=span), trace)
        self.name = name

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)


def _size_value(name: str, trace: "_Trace | None") -> Size:
    return Size(name, _here(trace), trace)


# ---------------------------------------------------------------- declarations inside a kernel body

def indices(names: str | list[str] | tuple[str, ...]) -> tuple[IndexVar, ...]:
    """Index variables: ``i, j, k = sd.indices("i j k")`` (names separated by spaces or commas, or a list).

    Always a tuple, even for one name: ``(k,) = sd.indices("k")``.
    """
    trace = _active_trace("indices")
    span = trace.span()
    if isinstance(names, str):
        parts = names.replace(",", " ").split()
    elif isinstance(names, (list, tuple)) and builtins.all(isinstance(n, str) for n in names):
        parts = list(names)
    else:
        raise SdslError(f"sd.indices takes names, as a string (\"i j k\") or a list of strings, not "
                        f"{_describe(names)}", span)
    out = []
    for n in parts:
        trace.claim(n, "index", span)
        out.append(IndexVar(n, span, trace))
    return tuple(out)


def tensor(name: str, type: str | syntax.TypeExpr | None = None, *, fill: Any = None) -> TensorRef:
    """Declare an intermediate or output tensor (or scalar) ``name`` in a kernel body.

    ``type`` (a string in the type syntax, ``"csr<f32>[M, N]"``) and ``fill`` (``output D: ... fill inf``)
    are only allowed on a tensor the kernel returns: the language declares outputs, and an intermediate's
    format is the compiler's choice (steer it with ``sd.schedule(X, "format csr")``).
    """
    trace = _active_trace("tensor")
    span = trace.span()
    trace.claim(name, "tensor", span)
    ttype = None if type is None else _parse_type(type, span)
    fill_node = None if fill is None else _node(fill, span)
    ref = TensorRef(name, "tensor", trace, span, ttype, fill_node)
    trace.tensors[name] = ref
    return ref


def const(name: str, value: Any) -> TensorRef:
    """``const NAME = value``: a compile-time scalar; returns it as a value for later expressions."""
    trace = _active_trace("const")
    span = trace.span()
    trace.claim(name, "const", span)
    trace.emit(syntax.ConstDecl(name, _node(value, span), span=span))
    return TensorRef(name, "const", trace, span)


def size(name: str) -> Size:
    """A size name (``N`` of ``csr<f64>[N, N]``) used as an ``i64`` value, e.g. ``1.0 / sd.f64(sd.size("N"))``."""
    trace = _active_trace("size")
    span = trace.span()
    if not isinstance(name, str) or not IDENT.match(name) or name in syntax.KEYWORDS:
        raise SdslNameError(f"{name!r} is not a valid size name", span)
    return Size(name, span, trace)


def schedule(target: TensorRef | str, *directives: str, **named: Any) -> None:
    """A ``schedule`` block for ``target``: ``sd.schedule(C, "accumulator hash", "block i 64")`` or
    ``sd.schedule(C, accumulator="hash", parallel=i, order=(i, k, j), block=(i, 64))``.

    Directive words and numbers are passed through unchanged; the checker validates them (spec § 8).
    """
    trace = _active_trace("schedule")
    span = trace.span()
    name = target.name if isinstance(target, TensorRef) else target
    if not isinstance(name, str) or not IDENT.match(name):
        raise SdslNameError(f"sd.schedule needs a tensor or its name, got {_describe(target)}", span)
    out = []
    for text in directives:
        if not isinstance(text, str):
            raise SdslError(f"a schedule directive is a string like 'accumulator hash', got {_describe(text)}",
                            span)
        words = text.replace(",", " ").replace("(", " ").replace(")", " ").split()
        if not words:
            raise SdslError("an empty schedule directive", span)
        out.append(syntax.Directive(words[0], tuple(_directive_arg(w, span) for w in words[1:]), span=span))
    for key, value in named.items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        out.append(syntax.Directive(key, tuple(_directive_arg(v, span) for v in values), span=span))
    if not out:
        raise SdslError(f"sd.schedule({name}) has no directives", span)
    trace.emit(syntax.Schedule(name, tuple(out), span=span))


def _directive_arg(value: Any, span: Span | None) -> str | int:
    if isinstance(value, (IndexVar, TensorRef)):
        return value.name
    if isinstance(value, builtins.bool):
        raise SdslError("a schedule argument is a name or an integer", span)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return value
    raise SdslError(f"a schedule argument is a name or an integer, got {_describe(value)}", span)


class _RepeatBlock:
    """``with sd.repeat(at_most=N) as loop: ...; loop.until(cond)`` records a ``repeat`` block (spec § 6.1)."""

    def __init__(self, trace: _Trace, at_most: Any, span: Span | None):
        self._trace = trace
        self._span = span
        self._at_most = None if at_most is None else _node(at_most, span)
        self._until: syntax.Expr | None = None
        self._open = False

    def __enter__(self) -> "_RepeatBlock":
        self._trace.blocks.append([])
        self._open = True
        return self

    def until(self, cond: Any) -> None:
        """The loop's stopping condition, evaluated after each iteration; write it after the body's statements."""
        span = _here(self._trace)
        if not self._open:
            raise SdslError("loop.until(...) belongs inside its 'with sd.repeat(...)' block", span)
        if self._until is not None:
            raise SdslError("a repeat block has one 'until' condition", span)
        self._until = _node(cond, span)

    def __exit__(self, exc_type, exc, tb) -> bool:
        body = self._trace.blocks.pop()
        self._open = False
        if exc_type is not None:
            return False
        if self._at_most is None and self._until is None:
            raise SdslError("a repeat block needs at_most=N, loop.until(condition), or both", self._span)
        if not body:
            raise SdslError("a repeat block with no statements", self._span)
        self._trace.emit(syntax.Repeat(self._at_most, self._until, tuple(body), span=self._span))
        return False


def repeat(at_most: Any = None) -> _RepeatBlock:
    """``repeat [at most N] [until C]:`` as a ``with`` block; see ``_RepeatBlock``."""
    trace = _active_trace("repeat")
    return _RepeatBlock(trace, at_most, trace.span())


def accumulate(target: Expression, value: Any, op: str = "+") -> None:
    """``X[i, j] op= value`` with ``op`` one of ``"+"``, ``"max"``, ``"min"``; ``value`` may be ``sd.where(e, c)``."""
    trace = _trace_of(target, value) or _active_trace("accumulate")
    span = _here(trace)
    ops = {"+": "+=", "max": "max=", "min": "min=", "+=": "+=", "max=": "max=", "min=": "min="}
    if op not in ops:
        raise SdslError(f"unknown accumulation {op!r}: use '+', 'max' or 'min'", span)
    node = target.node if isinstance(target, Expression) else None
    if isinstance(target, TensorRef):
        name, lhs = target.name, None
    elif (isinstance(node, syntax.Access) and isinstance(node.base, syntax.Name)
          and builtins.all(isinstance(p, syntax.Name) for p in node.indices)):
        name, lhs = node.base.id, tuple(syntax.Name(p.id, span=span) for p in node.indices)
    else:
        raise SdslError("sd.accumulate's first argument is a tensor access X[i, j] with index variables", span)
    ref = trace.tensors.get(name)
    if ref is None:
        raise SdslError(f"'{name}' is not a tensor declared with sd.tensor in this kernel", span)
    _emit_assign(trace, name, lhs, ops[op], value, span)


# ---------------------------------------------------------------- prefix operators and functions

def _index_list(idx: Any, op: str, span: Span | None) -> tuple[syntax.Name, ...]:
    parts = idx if isinstance(idx, (tuple, list)) else (idx,)
    if not parts:
        raise SdslError(f"sd.{op} needs at least one index variable", span)
    for p in parts:
        if not isinstance(p, IndexVar):
            hint = (" (the element-wise maximum/minimum of two values is sd.maximum(a, b) / sd.minimum(a, b))"
                    if op in ("max", "min") else "")
            raise SdslError(f"the first argument of sd.{op} is an index variable or a tuple of them, got "
                            f"{_describe(p)}{hint}", span)
    return tuple(syntax.Name(p.name, span=span) for p in parts)


def _prefix(op: str, idx: Any, body: Any, args: tuple = (), kwargs: tuple = ()) -> Expression:
    trace = _trace_of(body, *(idx if isinstance(idx, (tuple, list)) else (idx,)))
    span = _here(trace)
    names = _index_list(idx, op, span)
    arg_nodes = tuple(_node(a, span) for a in args)
    kw_nodes = tuple(syntax.Keyword(k, _node(v, span), span=span) for k, v in kwargs)
    node = syntax.Prefix(op, names, _node(body, span), arg_nodes, kw_nodes, span=span)
    return Expression(node, trace)


def _make_reduction(op: str) -> Callable[[Any, Any], Expression]:
    _missing = object()

    def reduction(idx, expr=_missing):
        if expr is _missing:
            trace = _trace_of(idx)
            raise SdslError(f"sd.{op} takes the index (or indices) it reduces and the expression: "
                            f"sd.{op}(k, A[i, k] * x[k])", _here(trace))
        return _prefix(op, idx, expr)

    reduction.__name__ = reduction.__qualname__ = op
    reduction.__doc__ = (f"``{op}[idx] expr``: the {op} of the present entries of ``expr`` along ``idx`` "
                         "(an index variable or a tuple of them; spec § 5.5).")
    return reduction


sum = _make_reduction("sum")
prod = _make_reduction("prod")
max = _make_reduction("max")
min = _make_reduction("min")
mean = _make_reduction("mean")
var = _make_reduction("var")
std = _make_reduction("std")
count = _make_reduction("count")
any = _make_reduction("any")
all = _make_reduction("all")
argmax = _make_reduction("argmax")
argmin = _make_reduction("argmin")


def softmax(idx: Any, expr: Any) -> Expression:
    """``softmax[idx] expr``: normalized over the present entries along ``idx`` (spec § 5.7)."""
    return _prefix("softmax", idx, expr)


def logsumexp(idx: Any, expr: Any) -> Expression:
    """``logsumexp[idx] expr`` (spec § 5.7)."""
    return _prefix("logsumexp", idx, expr)


def topk(idx: Any, k: Any, expr: Any, group: Any = None) -> Expression:
    """``topk[idx](k[, group=g]) expr``: the pattern of the k largest present entries along ``idx`` (spec § 5.8)."""
    return _prefix("topk", idx, expr, (k,), () if group is None else (("group", group),))


def bottomk(idx: Any, k: Any, expr: Any, group: Any = None) -> Expression:
    """``bottomk[idx](k[, group=g]) expr``: the k smallest, as ``topk``."""
    return _prefix("bottomk", idx, expr, (k,), () if group is None else (("group", group),))


def where(expr: Any, cond: Any) -> Expression:
    """``e where c``: at the top of a statement's right side it is the statement's ``where``; nested, ``(e where c)``."""
    trace = _trace_of(expr, cond)
    span = _here(trace)
    return _StatementWhere(_node(expr, span), _node(cond, span), span, trace)


def _make_function(name: str, arity: int) -> Callable[..., Expression]:
    def function(*args):
        if len(args) != arity:
            raise SdslError(f"sd.{public_name}() takes {arity} argument{'s' if arity != 1 else ''}, got {len(args)}",
                            _here(_trace_of(*args)))
        return _call(name, *args)

    public_name = {"max": "maximum", "min": "minimum", "bool": "bool_"}.get(name, name)
    function.__name__ = function.__qualname__ = public_name
    function.__doc__ = f"``{name}({', '.join('abcd'[:arity])})`` (spec § 6)."
    return function


exp = _make_function("exp", 1)
log = _make_function("log", 1)
log1p = _make_function("log1p", 1)
sqrt = _make_function("sqrt", 1)
rsqrt = _make_function("rsqrt", 1)
abs = _make_function("abs", 1)
sign = _make_function("sign", 1)
relu = _make_function("relu", 1)
sigmoid = _make_function("sigmoid", 1)
tanh = _make_function("tanh", 1)
gelu = _make_function("gelu", 1)
silu = _make_function("silu", 1)
sin = _make_function("sin", 1)
cos = _make_function("cos", 1)
floor = _make_function("floor", 1)
ceil = _make_function("ceil", 1)
pow = _make_function("pow", 2)
# The language's two-argument max(a, b)/min(a, b); sd.max/sd.min are the reductions max[k]/min[k].
maximum = _make_function("max", 2)
minimum = _make_function("min", 2)
select = _make_function("select", 3)
fill = _make_function("fill", 2)

bool_ = _make_function("bool", 1)
i8 = _make_function("i8", 1)
i32 = _make_function("i32", 1)
i64 = _make_function("i64", 1)
f16 = _make_function("f16", 1)
bf16 = _make_function("bf16", 1)
f32 = _make_function("f32", 1)
f64 = _make_function("f64", 1)


_CAST_DTYPES = {"bool_": "bool", "i8": "i8", "i32": "i32", "i64": "i64", "f16": "f16", "bf16": "bf16",
                "f32": "f32", "f64": "f64"}


def _logical(op: str, args: tuple) -> Expression:
    if len(args) < 2:
        raise SdslError(f"sd.{op}_ takes at least two arguments", _here(_trace_of(*args)))
    out = args[0]
    for a in args[1:]:
        out = _binary(op, out, a)
    return out


def and_(*args: Any) -> Expression:
    """``a and b [and c ...]``, grouped from the left as the text reads."""
    return _logical("and", args)


def or_(*args: Any) -> Expression:
    """``a or b [or c ...]``, grouped from the left as the text reads."""
    return _logical("or", args)


def not_(x: Any) -> Expression:
    """``not x``: the logical complement; on a tensor access, the complement mask (spec § 5.6)."""
    trace = _trace_of(x)
    span = _here(trace)
    return Expression(syntax.UnaryOp("not", _node(x, span), span=span), trace)


# ---------------------------------------------------------------- types

def _parse_type(text: str | syntax.TypeExpr, span: Span | None) -> syntax.TypeExpr:
    """A type written in the text syntax, parsed by the text front end; spans point at the Python code."""
    if isinstance(text, syntax.TypeExpr):
        return text
    if callable(text) and getattr(text, "__module__", None) == __name__ and text.__name__ in _CAST_DTYPES:
        text = _CAST_DTYPES[text.__name__]
    if text in (builtins.float, builtins.int, builtins.bool):
        return syntax.TypeExpr({builtins.float: "f64", builtins.int: "i64", builtins.bool: "bool"}[text], span=span)
    if not isinstance(text, str) or "\n" in text or "#" in text:
        raise SdslTypeError(f"a type is a string such as 'csr<f32>[M, K]' or 'f32', got {text!r}", span)
    from sparsedsl.frontend.parser import parse

    try:
        module = parse(f"input t: {text}\n", "<type>")
    except SdslSyntaxError as err:
        raise SdslSyntaxError(f"bad type {text!r}: {err.message}", span) from None
    decl = module.body[0] if len(module.body) == 1 else None
    if not isinstance(decl, syntax.InputDecl) or decl.default is not None:
        raise SdslSyntaxError(f"bad type {text!r}", span)
    t = decl.type
    return replace(t, span=span, format=None if t.format is None else replace(t.format, span=span))


def _annotation_value(fn: Callable, annotation: Any) -> Any:
    """What an annotation says, also under ``from __future__ import annotations`` (where every annotation is
    the source text: ``"'csr<f32>[M, K]'"``, ``"float"``, ``"sd.f32"``)."""
    if isinstance(annotation, str):
        text = annotation.strip()
        if text[:1] in ("'", '"'):
            import ast

            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return annotation
            return value if isinstance(value, str) else annotation
        parts = text.split(".")
        if builtins.all(IDENT.match(part) for part in parts) and parts[0] not in syntax.KEYWORDS:
            # a dotted Python name (float, sd.f32): resolved by lookup only, never by evaluating code
            scope = {**vars(builtins), **getattr(fn, "__globals__", {})}
            if parts[0] in scope:
                value = scope[parts[0]]
                for part in parts[1:]:
                    value = getattr(value, part, None)
                if value is not None:
                    return value
    return annotation


# numpy dtype names -> sparsedsl dtypes. Unsigned and 16-bit integers widen to the next signed type the
# language has; values are converted at binding time with numpy's same_kind rules.
_NUMPY_TO_SDSL = {
    "bool": "bool", "int8": "i8", "int16": "i32", "int32": "i32", "int64": "i64",
    "uint8": "i32", "uint16": "i32", "uint32": "i64",
    "float16": "f16", "float32": "f32", "float64": "f64", "bfloat16": "bf16",
}


def _dtype_name(dtype: Any, what: str) -> str:
    text = str(dtype).removeprefix("torch.")
    if text in _NUMPY_TO_SDSL:
        return _NUMPY_TO_SDSL[text]
    raise SdslInputError(f"{what} has dtype {text}, which sparsedsl has no type for "
                         f"(supported: {', '.join(sorted(_NUMPY_TO_SDSL))})")


def type_of(value: Any, what: str = "the value") -> syntax.TypeExpr:
    """The type a call-time value gives an unannotated parameter: format, dtype and literal shape."""
    if isinstance(value, builtins.bool):
        return syntax.TypeExpr("bool")
    if isinstance(value, numbers.Integral) and type(value).__module__ == "builtins":
        return syntax.TypeExpr("i64")
    if isinstance(value, builtins.float):
        return syntax.TypeExpr("f64")
    module = type(value).__module__.split(".")[0]
    if module == "numpy":
        import numpy as np

        if isinstance(value, np.generic):
            return syntax.TypeExpr(_dtype_name(value.dtype, what))
        if isinstance(value, np.ndarray):
            dt = _dtype_name(value.dtype, what)
            if value.ndim == 0:
                return syntax.TypeExpr(dt)
            return syntax.TypeExpr(dt, syntax.FormatExpr("dense"), tuple(int(d) for d in value.shape))
    if module == "scipy":
        fmt = getattr(value, "format", None)
        dt = _dtype_name(value.dtype, what)
        shape = tuple(int(d) for d in value.shape)
        if fmt in ("csr", "csc", "coo"):
            return syntax.TypeExpr(dt, syntax.FormatExpr(fmt), shape)
        if fmt == "bsr":
            bm, bn = (int(b) for b in value.blocksize)
            return syntax.TypeExpr(dt, syntax.FormatExpr("bsr", (bm, bn)), shape)
        if fmt is not None:
            # dia/lil/dok have no counterpart; they are passed on as csr (see _prepare_value)
            return syntax.TypeExpr(dt, syntax.FormatExpr("csr"), shape)
    if module == "torch":
        import torch

        if isinstance(value, torch.Tensor):
            dt = _dtype_name(value.dtype, what)
            shape = tuple(int(d) for d in value.shape)
            layouts = {torch.strided: "dense", torch.sparse_csr: "csr", torch.sparse_csc: "csc",
                       torch.sparse_coo: "coo"}
            if value.layout in layouts:
                if not shape:
                    return syntax.TypeExpr(dt)
                return syntax.TypeExpr(dt, syntax.FormatExpr(layouts[value.layout]), shape)
            if value.layout == torch.sparse_bsr:
                bm, bn = (int(b) for b in value.values().shape[1:3])
                return syntax.TypeExpr(dt, syntax.FormatExpr("bsr", (bm, bn)), shape)
            raise SdslInputError(f"{what} is a torch tensor with layout {value.layout}, which sparsedsl cannot read")
    if module == "networkx":
        n = value.number_of_nodes()
        weighted = builtins.any("weight" in d for _, _, d in value.edges(data=True))
        return syntax.TypeExpr("f64" if weighted else "bool", syntax.FormatExpr("csr"), (n, n))
    fmt = getattr(value, "format", None)
    if module == "sparsedsl" and fmt is not None and hasattr(fmt, "name"):
        shape = tuple(int(d) for d in value.shape)
        if not shape:
            return syntax.TypeExpr(value.dtype)
        return syntax.TypeExpr(value.dtype, syntax.FormatExpr(fmt.name, tuple(fmt.params)), shape)
    raise SdslInputError(
        f"cannot infer a sparsedsl type for {what} of Python type {type(value).__qualname__}; pass a scipy sparse "
        "matrix/array, a numpy array, a torch tensor, a networkx graph, a number, or annotate the parameter with "
        "a type string such as 'csr<f32>[M, K]'")


def _prepare_value(value: Any) -> Any:
    """The value as it is handed to the compiled program (scipy formats without a counterpart become csr)."""
    if type(value).__module__.split(".")[0] == "scipy" and getattr(value, "format", None) in ("dia", "lil", "dok"):
        return value.tocsr()
    return value


# ---------------------------------------------------------------- the decorator

def _run_trace(trace: _Trace, fn: Callable, args: list, keywords: dict) -> Any:
    # _active_trace() recognizes this function's frame and reads its local 'trace'.
    try:
        return fn(*args, **keywords)
    finally:
        trace.finished = True


class Kernel:
    """A function traced into a sparsedsl program when called (see ``kernel``)."""

    def __init__(self, fn: Callable, target: str = "ref", options: dict | None = None):
        if not callable(fn):
            raise TypeError("sd.kernel decorates a function")
        self.fn = fn
        self.target = target
        self.options = dict(options or {})
        self.signature = inspect.signature(fn)
        for p in self.signature.parameters.values():
            if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                raise SdslError(f"kernel parameter '{p.name}' of {fn.__qualname__}: *args and **kwargs have no "
                                "input names; list the inputs as named parameters", _def_span(fn, None))
        # one compiled callable per inferred signature of the call's values (per kernel object)
        self._compiled: dict[tuple, tuple[Callable, tuple[str, ...], str]] = {}
        functools.update_wrapper(self, fn)

    # ---- building the program

    def _bind(self, args: tuple, kwargs: dict) -> inspect.BoundArguments:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise SdslInputError(f"{self.fn.__name__}(): {exc}", _def_span(self.fn, None)) from None
        bound.apply_defaults()
        return bound

    def _param_types(self, bound: inspect.BoundArguments | None) -> tuple:
        """Per parameter: the annotated type (generic) or the type of the value passed (specialized)."""
        out = []
        for name, p in self.signature.parameters.items():
            if p.annotation is not inspect.Parameter.empty:
                out.append(("annotated", name))
            elif bound is None or name not in bound.arguments:
                raise SdslInputError(
                    f"parameter '{name}' of {self.fn.__name__} has no type annotation; call the kernel with a value "
                    "for it (its type is inferred from the value) or annotate it, e.g. '{name}: \"csr<f32>[M, K]\"'"
                    .replace("{name}", name), _def_span(self.fn, name))
            else:
                t = type_of(bound.arguments[name], f"argument '{name}'")
                if t.is_scalar and t.dtype in ("i8", "i32", "i64") and isinstance(p.default, float):
                    # `alpha=0.5` called with 2: a float parameter (its default must fit), the 2 converted
                    t = replace(t, dtype="f64")
                out.append(t)
        return tuple(out)

    def trace(self, *args: Any, **kwargs: Any) -> syntax.Module:
        """The AST module of this kernel for a call with these arguments (none needed when all are annotated)."""
        bound = self._bind_partial(args, kwargs)
        return self._build(self._param_types(bound))[0]

    def _bind_partial(self, args: tuple, kwargs: dict) -> inspect.BoundArguments | None:
        if not args and not kwargs:
            try:
                return self._bind(args, kwargs)
            except SdslInputError:
                return None
        return self._bind(args, kwargs)

    def _build(self, types: tuple) -> tuple[syntax.Module, str]:
        """The module, and how the function returned its outputs: "single", "tuple" or "dict"."""
        fn = self.fn
        trace = _Trace(fn)
        proxies = []
        keywords = {}  # keyword-only parameters are passed by name
        inputs = []
        for (name, p), ptype in zip(self.signature.parameters.items(), types):
            span = _def_span(fn, name, trace.sources)
            trace.claim(name, "input", span)
            if ptype == ("annotated", name):
                ptype = _parse_type(_annotation_value(fn, p.annotation), span)
            else:
                ptype = replace(ptype, span=span)
            default = None
            if p.default is not inspect.Parameter.empty:
                default = _node(p.default, span)
            inputs.append(syntax.InputDecl(name, ptype, default, span=span))
            proxy = TensorRef(name, "input", trace, span, ptype)
            if p.kind == p.KEYWORD_ONLY:
                keywords[name] = proxy
            else:
                proxies.append(proxy)
        result = _run_trace(trace, fn, proxies, keywords)
        outputs = self._outputs(trace, result)
        decls = tuple(syntax.OutputDecl(r.name, r.type, r.fill, span=r._declared_at) for r in outputs)
        for ref in trace.tensors.values():
            if (ref.type is not None or ref.fill is not None) and builtins.all(ref is not o for o in outputs):
                what = "a type" if ref.type is not None else "a fill value"
                raise SdslTypeError(
                    f"'{ref.name}' is declared with {what} but is not returned: only outputs are declared in the "
                    f"language; an intermediate's format is the compiler's choice (use "
                    f"sd.schedule({ref.name}, 'format csr') to choose it)", ref._declared_at)
        body = tuple(inputs) + decls + tuple(trace.blocks[0])
        kind = "dict" if isinstance(result, dict) else "tuple" if isinstance(result, (tuple, list)) else "single"
        return syntax.Module(body, name=_source_name(fn), span=_def_span(fn, None, trace.sources)), kind

    def _outputs(self, trace: _Trace, result: Any) -> list[TensorRef]:
        span = _def_span(self.fn, None, trace.sources)
        if isinstance(result, dict):
            items = list(result.items())
            for key, ref in items:
                if isinstance(ref, TensorRef) and key != ref.name:
                    raise SdslNameError(f"returned dict key '{key}' differs from the tensor's name '{ref.name}'; "
                                        "outputs are named by their sd.tensor name", span)
            values = [v for _, v in items]
        elif isinstance(result, (tuple, list)):
            values = list(result)
        else:
            values = [result]
        if not values or (len(values) == 1 and values[0] is None):
            raise SdslError(f"kernel {self.fn.__name__} returns nothing: return the output tensor(s) declared "
                            "with sd.tensor", span)
        seen: list[TensorRef] = []
        for v in values:
            if not isinstance(v, TensorRef) or v.kind != "tensor":
                what = ("an input" if isinstance(v, TensorRef) and v.kind == "input"
                        else "an expression" if isinstance(v, Expression) else f"a {type(v).__name__}")
                raise SdslError(f"kernel {self.fn.__name__} returns {what}; return tensors declared with "
                                "sd.tensor(name) and assigned in the body (C[i, j] = ...)", span)
            if builtins.any(v is s for s in seen):
                raise SdslError(f"output '{v.name}' is returned twice", span)
            seen.append(v)
        return seen

    def program(self, *args: Any, **kwargs: Any):
        """The ``sparsedsl.api.Program`` for a call with these arguments (``.ir()``, ``.compile(...)``)."""
        from sparsedsl.api import program_from_ast

        return program_from_ast(self.trace(*args, **kwargs), self.fn.__name__)

    # ---- calling

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        bound = self._bind(args, kwargs)
        key = self._param_types(bound)
        entry = self._compiled.get(key)
        if entry is None:
            from sparsedsl.api import program_from_ast

            module, shape = self._build(key)
            compiled = program_from_ast(module, self.fn.__name__).compile(self.target, **self.options)
            out_names = tuple(s.name for s in module.body if isinstance(s, syntax.OutputDecl))
            entry = (compiled, out_names, shape)
            self._compiled[key] = entry
        compiled, out_names, shape = entry
        values = {name: _prepare_value(v) for name, v in bound.arguments.items()}
        out = compiled(**values)
        results = [out[name] for name in out_names]
        if shape == "dict":
            return dict(zip(out_names, results))
        if shape == "single":
            return results[0]
        return tuple(results)

    def __repr__(self) -> str:
        return f"<sparsedsl kernel {self.fn.__qualname__} target={self.target!r}>"


def kernel(fn: Callable | None = None, *, target: str = "ref", **options: Any):
    """Decorator: ``@sd.kernel`` or ``@sd.kernel(target="numba", ...)`` (options go to ``Program.compile``).

    Calling the kernel traces the function (once per signature), compiles the program and runs it; a single
    returned tensor comes back as one value, several as a tuple, a dict as a dict.
    """
    if fn is None:
        return lambda f: Kernel(f, target, options)
    return Kernel(fn, target, options)


def _source_name(fn: Callable) -> str:
    code = getattr(fn, "__code__", None)
    return code.co_filename if code is not None else "<kernel>"


def _def_span(fn: Callable, param: str | None, sources: dict | None = None) -> Span | None:
    """The ``def`` line of the kernel, at the parameter's name when given."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    filename = code.co_filename
    source = None if sources is None else sources.get(filename)
    if source is None:
        source = Source(filename, "".join(linecache.getlines(filename, getattr(fn, "__globals__", None))))
        if sources is not None:
            sources[filename] = source
    line = code.co_firstlineno
    # decorators precede the def line; find the line that starts the def itself
    for k in range(line, line + 50):
        if source.line(k).lstrip().startswith(("def ", "async def ")):
            line = k
            break
    text = source.line(line)
    col = len(text) - len(text.lstrip())
    end = len(text)
    if param is not None:
        import re

        m = re.search(rf"\b{re.escape(param)}\b", text[text.find("(") + 1:] if "(" in text else text)
        if m is not None:
            col = (text.find("(") + 1 if "(" in text else 0) + m.start()
            end = col + len(param)
    return Span(source, line, col + 1, line, end + 1)
