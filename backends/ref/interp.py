"""The reference interpreter: the tensor IR evaluated literally on dense numpy arrays plus presence masks.

Every expression is evaluated over an *index space*: an ordered list of index variables, each with the
coordinates it takes (a statement's left-hand indices, then each enclosing reduction's indices). A value is a
pair ``(values, present)`` of arrays with one axis per variable of the space; an axis the expression does not
depend on has length 1 and broadcasts. Presence follows language spec § 5 rule by rule; values at absent
coordinates are never read except through an operator's identity.

Reductions whose index space would be large are evaluated in chunks (see ``Evaluator.reduce``), and a sum of a
product (SpGEMM, SpMM, SDDMM, matrix-vector) or an ``any`` of a conjunction (boolean products) goes through
``fastpath`` — same presence, same values up to floating-point reassociation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import fastpath
from .numeric import (
    accumulate, binary, convert, maximum, minimum, negate, power, truthy, unary_func,
)
from .reductions import CHUNK_COMBINE, CHUNK_ELEMENTS, reduce_raw, softmax, topk_pattern
from sparsedsl.core.errors import SdslInputError
from sparsedsl.tensor_ir import nodes
from sparsedsl.tensor_ir.types import AUTO, NUMPY_DTYPE, Dim, TensorType, promote

Value = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Space:
    """Index variables and the coordinates each takes; a later variable of the same name shadows an earlier."""

    vars: tuple[str, ...] = ()
    coords: tuple[np.ndarray, ...] = ()

    @property
    def ndim(self) -> int:
        return len(self.vars)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.coords)

    def axis(self, var: str) -> int:
        for a in range(len(self.vars) - 1, -1, -1):
            if self.vars[a] == var:
                return a
        raise KeyError(f"index variable {var!r} is not bound here")

    def extend(self, vars: tuple[str, ...], coords: tuple[np.ndarray, ...]) -> "Space":
        return Space(self.vars + tuple(vars), self.coords + tuple(coords))

    def replace(self, axis: int, coords: np.ndarray) -> "Space":
        return Space(self.vars, self.coords[:axis] + (coords,) + self.coords[axis + 1:])

    def along(self, axis: int, arr: np.ndarray) -> np.ndarray:
        """A 1-d array laid along ``axis`` (length 1 on every other axis)."""
        shape = [1] * self.ndim
        shape[axis] = arr.shape[0]
        return arr.reshape(shape)

    def ones(self) -> tuple[int, ...]:
        return (1,) * self.ndim


def resolve_dim(d: Dim, sizes: dict[str, int]) -> int:
    return int(d) if isinstance(d, int) else int(sizes[d])


def resolve_shape(ttype: TensorType, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(resolve_dim(d, sizes) for d in ttype.shape)


def evaluate(program: nodes.Program, env: dict[str, Value], sizes: dict[str, int]) -> dict[str, Value]:
    """Run ``program`` on inputs ``env`` (name -> (values, present) of full shape; scalars 0-d).

    Inputs missing from ``env`` take their declared default. Returns every output as (values, present) of
    full shape; values at absent coordinates are 0.
    """
    with np.errstate(all="ignore"):
        ev = Evaluator(program, sizes)
        ev.bind(env)
        for st in program.body:
            ev.statement(st)
        return {d.name: ev.output(d) for d in program.outputs}


class Evaluator:
    """Evaluation state of one run: the named values and the extents of the current statement's indices."""

    def __init__(self, program: nodes.Program, sizes: dict[str, int]):
        self.program = program
        self.sizes = dict(sizes)
        self.env: dict[str, Value] = {}
        self.ranges: dict[str, int] = {}
        self._decls = {d.name: d for d in program.decls}

    # ------------------------------------------------------------ names

    def bind(self, env: dict[str, Value]) -> None:
        for name, (values, present) in env.items():
            decl = self._decls.get(name)
            values = np.asarray(values)
            present = np.asarray(present, dtype=bool)
            if decl is not None:
                values = convert(values, decl.type.dtype)
                shape = resolve_shape(decl.type, self.sizes)
                values = np.broadcast_to(values, shape)
                present = np.broadcast_to(present, shape)
            self.env[name] = (values, present)
        for d in self.program.decls:
            if d.name in self.env:
                continue
            if d.kind in ("input", "const") and d.default is not None:
                self.env[d.name] = (convert(np.asarray(d.default.value), d.type.dtype), np.ones((), bool))
            elif d.kind == "input":
                raise SdslInputError(f"missing input '{d.name}'", d.span)

    def decl_of(self, name: str, dtype: str, shape: tuple[int, ...]) -> nodes.Decl:
        decl = self._decls.get(name)
        if decl is None:
            # an intermediate the program does not list: keep presence exactly, as for an 'auto' intermediate
            decl = nodes.Decl(name, TensorType(dtype, shape, AUTO), "temp")
        return decl

    def output(self, decl: nodes.Decl) -> Value:
        shape = resolve_shape(decl.type, self.sizes)
        if decl.name in self.env:
            values, present = self.env[decl.name]
        else:
            values = np.zeros(shape, NUMPY_DTYPE[decl.type.dtype])
            present = np.zeros(shape, bool)
            values, present = self._store_format(decl, values, present)
        values = np.broadcast_to(values, shape)
        present = np.broadcast_to(present, shape)
        zero = np.zeros((), values.dtype)
        return np.where(present, values, zero), np.array(present, dtype=bool)

    # ------------------------------------------------------------ statements

    def statement(self, st: nodes.Stmt) -> None:
        if isinstance(st, nodes.Assign):
            self.assign(st)
        elif isinstance(st, nodes.Repeat):
            self.repeat(st)
        else:
            raise TypeError(f"unknown statement {st!r}")

    def assign(self, st: nodes.Assign) -> None:
        self.ranges = {v: resolve_dim(d, self.sizes) for v, d in st.ranges}
        known = self._decls.get(st.target)
        if known is not None:
            shape = resolve_shape(known.type, self.sizes)
        else:
            shape = tuple(self.ranges[v] for v in st.idx)
        decl = self.decl_of(st.target, st.value.dtype, shape)
        space = Space(tuple(st.idx), tuple(np.arange(n, dtype=np.int64) for n in shape))
        values, present = self.expr(st.value, space)
        values = np.broadcast_to(convert(values, decl.type.dtype), shape)
        present = np.broadcast_to(present, shape)
        if st.op != "=":
            old = self.env.get(st.target)
            if old is None:
                old_v, old_p = np.zeros(shape, values.dtype), np.zeros(shape, bool)
            else:
                old_v, old_p = old
            both = old_p & present
            combined = accumulate(st.op, old_v, values, decl.type.dtype)
            values = np.where(both, combined, np.where(present, values, old_v))
            present = old_p | present
        values, present = self._store_format(decl, values, present)
        self.env[st.target] = (np.array(values, order="C", copy=None), np.array(present, order="C", copy=None))

    def _store_format(self, decl: nodes.Decl, values: np.ndarray, present: np.ndarray) -> Value:
        """Spec § 5 rule 10: a dense format stores 0 (an output's declared fill) where absent."""
        if not decl.type.format.is_dense:
            return values, present
        fill = decl.fill.value if (decl.kind == "output" and decl.fill is not None) else 0
        filled = np.where(present, values, convert(np.asarray(fill), decl.type.dtype))
        return filled, np.ones(filled.shape, bool)

    def repeat(self, st: nodes.Repeat) -> None:
        limit = None
        if st.max_iters is not None:
            self.ranges = {}
            v, _p = self.expr(st.max_iters, Space())
            limit = int(np.asarray(v).reshape(()))
        local = [n for n in _assigned(st.body) if n not in st.carried]
        done = 0
        while limit is None or done < limit:
            if done:
                for name in local:
                    self.env.pop(name, None)
            for inner in st.body:
                self.statement(inner)
            done += 1
            if st.until is not None:
                self.ranges = {}
                v, p = self.expr(st.until, Space())
                if bool(np.asarray(p).reshape(())) and bool(truthy(np.asarray(v).reshape(()))):
                    break

    # ------------------------------------------------------------ expressions

    def expr(self, e: nodes.Expr, space: Space) -> Value:
        match e:
            case nodes.Lit(value=value, dtype=dtype):
                return convert(np.full(space.ones(), value), dtype), np.ones(space.ones(), bool)
            case nodes.ScalarRef(name=name, dtype=dtype, is_size=True):
                return convert(np.full(space.ones(), self.sizes[name]), dtype), np.ones(space.ones(), bool)
            case nodes.ScalarRef(name=name, dtype=dtype):
                values, present = self.env[name]
                return (convert(np.asarray(values).reshape(space.ones()), dtype),
                        np.asarray(present).reshape(space.ones()))
            case nodes.IndexVal(var=var, dtype=dtype):
                a = space.axis(var)
                return convert(space.along(a, space.coords[a]), dtype), np.ones(space.ones(), bool)
            case nodes.Access():
                return self.access(e, space)
            case nodes.Binary():
                return self.binary(e, space)
            case nodes.Unary(op=op, operand=operand, dtype=dtype):
                v, p = self.expr(operand, space)
                if op == "not":
                    return convert(~truthy(v), dtype), p
                if op == "-":
                    return negate(v, dtype), p
                if op == "+":
                    return convert(v, dtype), p
                raise ValueError(f"unknown unary operator {op!r}")
            case nodes.Cast(operand=operand, dtype=dtype):
                v, p = self.expr(operand, space)
                return convert(v, dtype), p
            case nodes.Call():
                return self.call(e, space)
            case nodes.Reduce():
                return self.reduce(e, space)
            case nodes.Softmax(var=var, body=body, dtype=dtype):
                a = space.axis(var)
                v, p = self._full_along(self.expr(body, space), a, space)
                return softmax(v, p, a, dtype), p
            case nodes.TopK():
                return self.topk(e, space)
            case nodes.Fill(body=body, value=value, dtype=dtype):
                v, p = self.expr(body, space)
                fv, _fp = self.expr(value, space)
                out = np.where(p, convert(v, dtype), convert(fv, dtype))
                return out, np.ones(space.ones(), bool)
            case nodes.Where(body=body, mask=mask):
                v, p = self.expr(body, space)
                return v, p & self.mask(mask, space)
        raise TypeError(f"unknown expression {e!r}")

    def mask(self, m: nodes.Mask, space: Space) -> np.ndarray:
        match m:
            case nodes.MaskPresent(expr=e):
                return self.expr(e, space)[1]
            case nodes.MaskValue(expr=e):
                v, p = self.expr(e, space)
                return p & truthy(v)
            case nodes.MaskNot(mask=a):
                return ~self.mask(a, space)
            case nodes.MaskAnd(lhs=a, rhs=b):
                return self.mask(a, space) & self.mask(b, space)
            case nodes.MaskOr(lhs=a, rhs=b):
                return self.mask(a, space) | self.mask(b, space)
        raise TypeError(f"unknown mask {m!r}")

    def _full_along(self, value: Value, axis: int, space: Space) -> Value:
        """Values and presence broadcast to a common shape that is full along ``axis``."""
        v, p = value
        shape = list(np.broadcast_shapes(np.shape(v), np.shape(p)))
        shape[axis] = space.shape[axis]
        return np.broadcast_to(v, shape), np.broadcast_to(p, shape)

    # ------------------------------------------------------------ access

    def access(self, e: nodes.Access, space: Space) -> Value:
        values, present = self.env[e.tensor]
        values = np.asarray(values)
        present = np.asarray(present)
        if len(e.pos) != values.ndim:
            raise ValueError(f"{e.tensor} has rank {values.ndim}, accessed with {len(e.pos)} positions")
        sliced = self._access_by_slices(e, values, present, space)
        if sliced is not None:
            v, p = sliced
            return convert(v, e.dtype), p
        index = []
        valid = np.ones(space.ones(), bool)
        for d, pos in enumerate(e.pos):
            pv, pp = self.expr(pos, space)
            pv = np.asarray(pv).astype(np.int64)
            inside = pp & (pv >= 0) & (pv < values.shape[d])
            valid = valid & inside
            index.append(np.where(inside, pv, 0))
        if not e.pos:
            return (convert(values.reshape(space.ones()), e.dtype), present.reshape(space.ones()))
        shape = np.broadcast_shapes(*(i.shape for i in index), valid.shape)
        if values.size == 0:
            return np.zeros(shape, NUMPY_DTYPE[e.dtype]), np.zeros(shape, bool)
        index = tuple(index)
        return convert(values[index], e.dtype), present[index] & valid

    def _access_by_slices(self, e: nodes.Access, values, present, space: Space) -> Value | None:
        """``A[i, j]`` with plain, distinct index variables whose coordinates lie inside A: a view of A
        rearranged to the space's axis order (no gather). None when the access needs the general path."""
        axes = []
        slices = []
        for d, pos in enumerate(e.pos):
            if not isinstance(pos, nodes.IndexVal):
                return None
            try:
                a = space.axis(pos.var)
            except KeyError:
                return None
            c = space.coords[a]
            if len(c):
                lo, hi = int(c[0]), int(c[-1]) + 1
                if lo < 0 or hi > values.shape[d] or hi - lo != len(c):
                    return None
                slices.append(slice(lo, hi))
            else:
                slices.append(slice(0, 0))
            axes.append(a)
        if len(set(axes)) != len(axes):
            return None
        order = sorted(range(len(axes)), key=lambda t: axes[t])
        shape = [1] * space.ndim
        for a in axes:
            shape[a] = space.shape[a]
        v = values[tuple(slices)].transpose(order).reshape(shape)
        p = present[tuple(slices)].transpose(order).reshape(shape)
        return v, p

    # ------------------------------------------------------------ element-wise operators

    def binary(self, e: nodes.Binary, space: Space) -> Value:
        va, pa = self.expr(e.lhs, space)
        vb, pb = self.expr(e.rhs, space)
        operand_dtype = promote(e.lhs.dtype, e.rhs.dtype)
        if e.op not in nodes.UNION_OPS:
            return binary(e.op, va, vb, e.dtype, operand_dtype), pa & pb
        present = _union_presence(e, (e.lhs, e.rhs), (pa, pb))
        zero = np.zeros((), bool)
        va = np.where(pa, va, zero.astype(va.dtype))
        vb = np.where(pb, vb, zero.astype(vb.dtype))
        return binary(e.op, va, vb, e.dtype, operand_dtype), present

    def call(self, e: nodes.Call, space: Space) -> Value:
        args = [self.expr(a, space) for a in e.args]
        if len(args) == 1:
            (v, p), = args
            return unary_func(e.fn, v, e.dtype), p
        if e.fn in nodes.UNION_FUNCS:
            (va, pa), (vb, pb) = args
            fn = maximum if e.fn == "max" else minimum
            both = fn(va, vb, e.dtype)
            # an absent operand is the identity: the result is the other operand
            values = np.where(pa & pb, both, np.where(pa, convert(va, e.dtype), convert(vb, e.dtype)))
            return values, _union_presence(e, e.args, (pa, pb))
        present = args[0][1]
        for _v, p in args[1:]:
            present = present & p
        if e.fn == "pow":
            (va, _), (vb, _) = args
            return power(va, vb, e.dtype), present
        if e.fn == "select":
            (vc, _), (va, _), (vb, _) = args
            return np.where(truthy(vc), convert(va, e.dtype), convert(vb, e.dtype)), present
        raise ValueError(f"unknown function {e.fn!r} of {len(args)} arguments")

    # ------------------------------------------------------------ reductions and friends

    def extent(self, var: str, body: nodes.Expr) -> int:
        if var in self.ranges:
            return self.ranges[var]
        # outside a statement (a repeat's condition) the extent comes from a tensor the variable indexes
        found = _extent_from_accesses(var, body, self.env)
        if found is None:
            raise KeyError(f"no extent known for index variable {var!r}")
        return found

    def reduce(self, e: nodes.Reduce, space: Space) -> Value:
        rcoords = tuple(np.arange(self.extent(v, e.body), dtype=np.int64) for v in e.vars)
        result = fastpath.reduce_product(self, e, space, rcoords)
        if result is None:
            result = self._reduce_chunked(e, space, rcoords)
        values, present = result
        if not nodes.free_indices(e):
            # spec § 5 rule 5: a reduction to a scalar is always present (the identity over no entries)
            present = np.ones(np.shape(present), bool)
        return values, present

    def _reduce_chunked(self, e: nodes.Reduce, space: Space, rcoords: tuple[np.ndarray, ...]) -> Value:
        inner = space.extend(e.vars, rcoords)
        used = nodes.free_indices(e.body)
        volume = math.prod(inner.shape[inner.axis(v)] for v in used if v in inner.vars)
        if volume > CHUNK_ELEMENTS:
            coupled = _coupled_vars(e.body)
            for a, var in enumerate(space.vars):
                n = space.shape[a]
                if n > 1 and var in used and var not in e.vars and var not in coupled and space.axis(var) == a:
                    return self._chunk_free_axis(e, space, rcoords, a, max(1, CHUNK_ELEMENTS * n // volume))
            if e.op in CHUNK_COMBINE and e.vars[0] not in coupled and len(rcoords[0]) > 1:
                return self._chunk_reduced_axis(e, space, rcoords, volume)
        v, p = self.expr(e.body, inner)
        full = np.broadcast_shapes(np.shape(v), np.shape(p), inner.shape)
        v = np.broadcast_to(v, full)
        p = np.broadcast_to(p, full)
        axes = tuple(range(space.ndim, inner.ndim))
        return reduce_raw(e.op, v, p, axes, e.dtype, e.body.dtype)

    def _chunk_free_axis(self, e, space: Space, rcoords, axis: int, step: int) -> Value:
        coords = space.coords[axis]
        parts_v, parts_p = [], []
        for lo in range(0, len(coords), step):
            sub = space.replace(axis, coords[lo:lo + step])
            v, p = self._reduce_chunked(e, sub, rcoords)
            shape = np.broadcast_shapes(np.shape(v), np.shape(p), _one_except(sub, axis))
            parts_v.append(np.broadcast_to(v, shape))
            parts_p.append(np.broadcast_to(p, shape))
        return np.concatenate(parts_v, axis=axis), np.concatenate(parts_p, axis=axis)

    def _chunk_reduced_axis(self, e, space: Space, rcoords, volume: int) -> Value:
        first = rcoords[0]
        step = max(1, CHUNK_ELEMENTS * len(first) // volume)
        combine = CHUNK_COMBINE[e.op]
        values = present = None
        for lo in range(0, len(first), step):
            v, p = self._reduce_chunked(e, space, (first[lo:lo + step],) + tuple(rcoords[1:]))
            if values is None:
                values, present = v, p
                continue
            stacked_v = np.stack(np.broadcast_arrays(values, v))
            stacked_p = np.stack(np.broadcast_arrays(present, p))
            values, present = reduce_raw(combine, stacked_v, stacked_p, (0,), e.dtype, e.dtype)
        return values, present

    def topk(self, e: nodes.TopK, space: Space) -> Value:
        a = space.axis(e.var)
        v, p = self._full_along(self.expr(e.body, space), a, space)
        kv, _kp = self.expr(e.k, space)
        k = np.asarray(kv).astype(np.int64)
        chosen = topk_pattern(v, p, k, a, e.group, e.largest, e.body.dtype)
        return np.ones(chosen.shape, bool), chosen


# ---------------------------------------------------------------- helpers

def _union_presence(e: nodes.Expr, operands, presences) -> np.ndarray:
    """Spec § 5 rule 3: present where any operand mentioning every index of ``e`` is present; broadcast
    operands never widen presence. When no operand mentions every index, presence is the intersection."""
    wanted = set(nodes.free_indices(e))
    full = [p for x, p in zip(operands, presences) if wanted <= set(nodes.free_indices(x))]
    if not full:
        out = presences[0]
        for p in presences[1:]:
            out = out & p
        return out
    out = full[0]
    for p in full[1:]:
        out = out | p
    return out


def _one_except(space: Space, axis: int) -> tuple[int, ...]:
    shape = [1] * space.ndim
    shape[axis] = space.shape[axis]
    return tuple(shape)


def _coupled_vars(e: nodes.Expr) -> set[str]:
    """Index variables along which ``e`` couples coordinates (softmax, top-k): chunking must not split them."""
    out: set[str] = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, (nodes.Softmax, nodes.TopK)):
            out.add(x.var)
        stack.extend(nodes.children(x))
    return out


def _extent_from_accesses(var: str, e: nodes.Expr, env: dict[str, Value]) -> int | None:
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, nodes.Access) and x.tensor in env:
            for d, pos in enumerate(x.pos):
                if isinstance(pos, nodes.IndexVal) and pos.var == var:
                    return int(np.shape(env[x.tensor][0])[d])
        stack.extend(nodes.children(x))
    return None


def _assigned(body: tuple[nodes.Stmt, ...]) -> list[str]:
    out: list[str] = []
    for st in body:
        if isinstance(st, nodes.Assign):
            if st.target not in out:
                out.append(st.target)
        elif isinstance(st, nodes.Repeat):
            for n in _assigned(st.body):
                if n not in out:
                    out.append(n)
    return out
