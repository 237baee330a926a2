"""Loop IR: imperative loop nests with sparse iteration strategies, workspaces and two-phase assembly.

A ``Module`` is a list of ``Kernel``s (loop nests a backend compiles) and a ``host`` body that allocates
arrays, invokes kernels and runs the prefix sums of sparse assembly. Names are already mangled, valid Python
identifiers (tensors' arrays ``ptr_A idx_A val_A mask_A``, scalars ``s_x``, sizes ``n_N``, index variables
``x_i``, temporaries ``w_*``); a backend prints them as they are.

Iteration (``Forall``) is the heart: a loop over one index variable whose coordinates come from

* ``dense``: ``range(extent)``;
* ``intersect``: the sorted intersection of the driver cursors' coordinates;
* ``union``: the sorted union of the driver cursors' coordinates;

and, in every case, follower cursors that advance monotonically to the current coordinate (a sorted walk
that does not drive the loop but whose presence the body reads). A ``Cursor`` walks a sorted segment
``idx[start:stop]`` (a compressed row of a CSR tensor, or a compacted workspace); inside the loop body its
position is the variable ``<cursor>_p`` and whether it sits on the current coordinate is ``<cursor>_f``.

Workspaces (``Workspace``) accumulate values by a key (a coordinate) with a reduction operator: ``dense``
(a sparse accumulator: values, a stamp per key and a list of touched keys), ``hash`` (open addressing,
growing), ``sort`` (appends key/value pairs, then sorts and merges them), or ``auto`` (per row: hash when the row's flop count is small next to the width). ``Compact`` turns
a workspace into sorted coordinate and value arrays that a ``Cursor`` can walk, and clears it.

Every node is a frozen dataclass; ``span`` (the tensor-IR statement a node comes from) is excluded from
equality so that structurally equal loop nests compare equal.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from sparsedsl.core.errors import Span


@dataclass(frozen=True)
class Node:
    span: Span | None = field(default=None, compare=False, hash=False, repr=False, kw_only=True)


# ---------------------------------------------------------------- scalar expressions

@dataclass(frozen=True)
class Expr(Node):
    pass


@dataclass(frozen=True)
class Var(Expr):
    name: str


@dataclass(frozen=True)
class Const(Expr):
    """A literal of a sparsedsl dtype (``i64`` for positions and counts)."""

    value: Union[bool, int, float]
    dtype: str


@dataclass(frozen=True)
class Load(Expr):
    array: str
    index: tuple[Expr, ...]


# Operators of ``Op``: arithmetic and comparisons on operands already converted to a common dtype, logical
# ``and or not``, ``neg``, ``max2 min2`` (NaN-propagating), ``select`` (cond, a, b: lazily evaluated
# branches), ``isnan``, and the element-wise functions of the language (``exp``, ``log``, ``pow``...).
OPS = (
    "+", "-", "*", "/", "//", "%", "&", "|", "<", "<=", ">", ">=", "==", "!=",
    "and", "or", "not", "neg", "max2", "min2", "select", "isnan",
    "exp", "log", "log1p", "sqrt", "rsqrt", "abs", "sign", "relu", "sigmoid", "tanh", "gelu", "silu",
    "sin", "cos", "floor", "ceil", "pow",
    # row_split(c, nchunks, n, ptr, ptr2): the first row of chunk c when rows [0, n) are cut into nchunks
    # ranges of equal work, a row weighing 1 plus its entries in the row-pointer arrays ptr and ptr2 (Vars)
    "row_split",
)


@dataclass(frozen=True)
class Op(Expr):
    """``op(args)`` computed in ``dtype`` (the result's dtype)."""

    op: str
    args: tuple[Expr, ...]
    dtype: str


@dataclass(frozen=True)
class Cast(Expr):
    """Conversion to ``dtype`` (to ``bool``: ``!= 0``)."""

    arg: Expr
    dtype: str


@dataclass(frozen=True)
class Locate(Expr):
    """The position of coordinate ``key`` in the sorted segment ``idx[start:stop]``, or -1 (binary search)."""

    idx: str
    start: Expr
    stop: Expr
    key: Expr


# ---------------------------------------------------------------- iteration

@dataclass(frozen=True)
class Cursor(Node):
    """A sorted walk over ``idx[start:stop]``; its body variables are ``<name>_p`` and ``<name>_f``.

    The rows of block inputs (``loop_ir.lower.Lowerer.block_walk``) are walks of other shapes:

    * ``shift`` alone: consecutive coordinates, ``p + shift`` at position ``p``, no index loaded (a row of a
      block of a ``bsr`` or ``blockdiag`` input);
    * ``shift`` and ``groups`` = (N, M): slots of an N:M row, ``(p // N) * M + idx[p] + shift`` (``idx`` holds
      each slot's offset in its group of M columns).

    ``values``: the array the positions index for values, when it is not the tensor's own (None)."""

    name: str
    idx: str
    start: Expr
    stop: Expr
    shift: Expr | None = None
    groups: tuple[Expr, Expr] | None = None
    values: str | None = None

    @property
    def pos(self) -> str:
        return self.name + "_p"

    @property
    def found(self) -> str:
        return self.name + "_f"


ITERATION_KINDS = ("dense", "intersect", "union")


@dataclass(frozen=True)
class Iteration(Node):
    """How a ``Forall`` enumerates its coordinates (see the module docstring)."""

    kind: str
    extent: Expr | None = None  # dense only
    drivers: tuple[Cursor, ...] = ()
    followers: tuple[Cursor, ...] = ()
    # intersect only: segments found through a scatter map (``<name>_map``, key -> position, allocated by
    # the kernel) instead of merging. The map is refilled only when the segment's bounds change (it is
    # invariant in the enclosing loop), and an entry counts only inside the current segment's bounds, so
    # stale entries need no clearing.
    lookups: tuple[Cursor, ...] = ()
    # lookups that answer membership only (the body never reads the found positions: the segment's values are
    # a constant): a bitmap of the segment's keys (``<name>_bits``, int64 words) stands for the map, small
    # enough to stay in cache; refilling it clears the words of the previous segment first.
    membership: bool = False


# ---------------------------------------------------------------- statements

@dataclass(frozen=True)
class Stmt(Node):
    pass


@dataclass(frozen=True)
class Let(Stmt):
    """Declare a local of ``dtype`` and set it (a later ``Set`` may change it)."""

    name: str
    dtype: str
    value: Expr


@dataclass(frozen=True)
class Set(Stmt):
    name: str
    value: Expr


@dataclass(frozen=True)
class Store(Stmt):
    array: str
    index: tuple[Expr, ...]
    value: Expr


@dataclass(frozen=True)
class Alloc(Stmt):
    """A new array; ``fill`` None leaves it uninitialized (every element is written before it is read).

    ``narrow``, on an i64 index array of a sparse result: the array may be int32 instead when this value is
    below 2**31 (it bounds every index stored and the entry count), as scipy's own index arrays are.

    ``keep``: scratch (never a result; uninitialized unless ``fill`` is given) whose memory the host may keep
    for the next call, so that a large scratch array is not page-faulted in again on every call."""

    name: str
    dtype: str
    shape: tuple[Expr, ...]
    fill: Expr | None = None
    narrow: Expr | None = None
    keep: bool = False


@dataclass(frozen=True)
class If(Stmt):
    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class For(Stmt):
    """A counted loop ``for var in range(start, stop)``; ``parallel`` distributes it over threads.

    A parallel loop's iterations are claimed one at a time by the threads from a shared counter (dynamic
    scheduling), not split into equal halves up front: the iterations' work is only estimated, and cores are
    not equally fast (a virtual machine's second core can run at two thirds of the first's speed while another
    guest uses it). So an iteration must not depend on which thread runs it or on the order of iterations.
    ``setup`` runs once per thread before its first iteration (serially: once before the loop); what it
    defines (per-thread workspaces) carries from one iteration to the next on that thread."""

    var: str
    start: Expr
    stop: Expr
    body: tuple[Stmt, ...]
    parallel: bool = False
    setup: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class Jam(Node):
    """``factor`` consecutive coordinates of a single-cursor ``Forall`` run at once (unroll-and-jam, set by
    ``sparsedsl.loop_ir.jam``). ``body`` does the work of ``factor`` iterations: it reads copy ``u``'s
    coordinate as ``<var>_u<u>`` and its cursor position as ``<pos>_u<u>``. The coordinates left over at the
    end of a segment (fewer than ``factor``) run the ``Forall``'s own body."""

    factor: int
    body: tuple[Stmt, ...]

    @staticmethod
    def copy_name(name: str, u: int) -> str:
        return f"{name}_u{u}"


@dataclass(frozen=True)
class Forall(Stmt):
    """A loop over the coordinates of index variable ``var`` (see ``Iteration``); ``jam`` (None: one
    coordinate at a time) runs several coordinates per step."""

    var: str
    iteration: Iteration
    body: tuple[Stmt, ...]
    jam: Jam | None = None


# "range": every contribution to a row covers the whole key range (the loop over the key is dense and
# unguarded, as for SpMM's `f` over a dense right operand): no per-key presence, the compacted row is all keys
# or none; the lowering picks it, a schedule cannot ask for it
WORKSPACE_KINDS = ("dense", "hash", "sort", "auto", "range")
ACCUMULATE_OPS = ("sum", "prod", "max", "min", "any", "all", "count", "pattern")


@dataclass(frozen=True)
class Workspace(Stmt):
    """Allocate a keyed accumulator of ``width`` keys in ``[0, width)`` with values of ``dtype``.

    Its arrays are named from ``name`` (``<name>_val``, ``<name>_key`` ...). After ``Compact`` the sorted
    keys are ``<name>_cidx[0:<name>_n]`` and the values ``<name>_cval``.
    """

    name: str
    kind: str
    dtype: str
    width: Expr


@dataclass(frozen=True)
class Reset(Stmt):
    """Start a new accumulation (per row). ``flops`` (an i64 expression) is the row's work estimate an
    ``auto`` workspace chooses its accumulator by; None for the others."""

    ws: str
    stamp: Expr
    flops: Expr | None = None


@dataclass(frozen=True)
class Accumulate(Stmt):
    """``ws[key] op= value``; op ``pattern`` records the key only (the symbolic phase)."""

    ws: str
    key: Expr
    op: str
    value: Expr | None


@dataclass(frozen=True)
class Compact(Stmt):
    """Sort the touched keys of ``ws`` into ``<ws>_cidx[0:<ws>_n]`` (and values into ``<ws>_cval``).

    ``ordered=False``: the keys may stay in the order they were touched (``loop_ir/unordered.py``: nothing
    merges the row with another and its entries go to coordinates of a dense or bitmap result)."""

    ws: str
    values: bool = True
    ordered: bool = True


@dataclass(frozen=True)
class TopKSelect(Stmt):
    """Choose among ``count`` collected entries — coordinates ``<name>_j`` in ascending order with rank keys
    ``<name>_key`` and rank classes ``<name>_cls`` (lower ranks first; ties to the lower coordinate) — the
    ``k`` first within each run of ``group`` consecutive coordinates (None: among all). The chosen
    coordinates go, ascending, to ``<name>_cidx[0:<name>_n]`` (a sorted segment a ``Cursor`` walks)."""

    name: str
    count: Expr
    k: Expr
    group: int | None = None

    @property
    def arrays(self) -> tuple[str, ...]:
        return tuple(self.name + s for s in ("_j", "_key", "_cls", "_ord", "_sel", "_cidx"))


@dataclass(frozen=True)
class Invoke(Stmt):
    """Host: call a kernel; ``results`` receive what it returns (its ``Return``)."""

    kernel: str
    args: tuple[str, ...]
    results: tuple[str, ...] = ()


@dataclass(frozen=True)
class Loop(Stmt):
    """Host: run ``body`` at most ``count`` times (None: no bound), stopping after an iteration at whose end
    ``until`` (a host boolean, None: never) holds — a ``repeat`` block driving compiled kernels."""

    count: Expr | None
    body: tuple[Stmt, ...]
    until: Expr | None = None


@dataclass(frozen=True)
class Alias(Stmt):
    """Host: ``name`` is the array ``source`` itself, not a copy (an intermediate stored with the row pointer
    and column indices of the tensor whose pattern it has; ``Lowerer.shared_pattern``). Neither is written
    after this point."""

    name: str
    source: str


@dataclass(frozen=True)
class PrefixSum(Stmt):
    """Host: ``dst[0] = 0; dst[k + 1] = dst[k] + src[k]`` (the row pointer of a sparse output)."""

    dst: str
    src: str


@dataclass(frozen=True)
class Return(Stmt):
    values: tuple[Expr, ...]


@dataclass(frozen=True)
class Comment(Stmt):
    text: str


# ---------------------------------------------------------------- containers

@dataclass(frozen=True)
class Kernel(Node):
    """A loop nest compiled as one function; ``params`` are the names it reads or writes from outside."""

    name: str
    params: tuple[str, ...]
    body: tuple[Stmt, ...]
    parallel: bool = False


STORAGE_KINDS = ("scalar", "dense", "bitmap", "csr", "size")
ROLES = ("ptr", "idx", "val", "mask", "scalar", "size")


@dataclass(frozen=True)
class Param(Node):
    """A host-level argument: one array (or value) of the run-time layout of tensor ``tensor``.

    ``kind`` is the tensor's storage (scalar, dense, bitmap — values plus a presence array —, csr, or size)
    and ``role`` which of its arrays this is (ptr, idx, val, mask, scalar, size).
    """

    name: str
    kind: str
    role: str
    dtype: str
    tensor: str


@dataclass(frozen=True)
class Result(Node):
    """An output of the program: its storage kind and the host names of its arrays (ptr, idx, val / val,
    mask / val / the scalar)."""

    tensor: str
    kind: str
    dtype: str
    arrays: tuple[str, ...]


@dataclass(frozen=True)
class Module(Node):
    """``host`` runs in order: allocations, kernel invocations, prefix sums; ``results`` lists every output
    of the program and the host names holding it."""

    name: str
    params: tuple[Param, ...]
    kernels: tuple[Kernel, ...]
    host: tuple[Stmt, ...]
    results: tuple[Result, ...]


# ---------------------------------------------------------------- queries

def expr_children(e: Expr) -> tuple[Expr, ...]:
    match e:
        case Load(index=ix):
            return tuple(ix)
        case Op(args=args):
            return tuple(args)
        case Cast(arg=a):
            return (a,)
        case Locate(start=a, stop=b, key=k):
            return (a, b, k)
    return ()


def walk_expr(e: Expr):
    """``e`` and, depth first, every expression inside it."""
    yield e
    for x in expr_children(e):
        yield from walk_expr(x)


def expr_names(e: Expr) -> set[str]:
    """Every name an expression reads (variables and arrays)."""
    out: set[str] = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Var):
            out.add(x.name)
        elif isinstance(x, Load):
            out.add(x.array)
        elif isinstance(x, Locate):
            out.add(x.idx)
        stack.extend(expr_children(x))
    return out


def workspace_arrays(name: str) -> tuple[str, ...]:
    """The names a workspace declares (so the verifier and printers know them)."""
    return tuple(name + s for s in ("_val", "_mark", "_list", "_n", "_key", "_slot", "_cidx", "_cval", "_dcval", "_hash",
                                     "_skey", "_sval", "_first"))


def walk_stmts(stmts):
    """Every statement of ``stmts`` and, depth first, of the bodies and branches nested in them (a ``Forall``'s
    ``jam`` body excluded: it repeats its ``body``)."""
    for s in stmts:
        yield s
        for child in (getattr(s, "setup", ()), getattr(s, "body", ()), getattr(s, "then", ()),
                      getattr(s, "orelse", ())):
            if isinstance(child, tuple):
                yield from walk_stmts(child)


def assigned_names(stmts) -> set[str]:
    """Every name the statements (nested ones included) assign, define or store into: locals, arrays
    allocated or stored into, loop variables, and the arrays of the workspaces they declare or update."""
    out: set[str] = set()
    for t in walk_stmts(stmts):
        match t:
            case Let(name=n) | Set(name=n) | Alloc(name=n) | Store(array=n) | Alias(name=n):
                out.add(n)
            case For(var=n) | Forall(var=n):
                out.add(n)
            case Workspace(name=w) | Reset(ws=w) | Accumulate(ws=w) | Compact(ws=w):
                out.update(workspace_arrays(w))
            case TopKSelect() | Invoke():
                out.update(free_names((t,)))
    return out


def free_names(body) -> set[str]:
    """Names a statement list reads or writes that it does not define itself (a kernel's parameters)."""
    defined: set[str] = set()
    used: set[str] = set()

    def expr(e):
        used.update(expr_names(e))

    def walk(stmts):
        for s in stmts:
            match s:
                case Let(name=n, value=v):
                    expr(v)
                    defined.add(n)
                case Set(name=n, value=v):
                    expr(v)
                    used.add(n)
                case Store(array=a, index=ix, value=v):
                    used.add(a)
                    for x in ix:
                        expr(x)
                    expr(v)
                case Alloc(name=n, shape=sh, fill=f, narrow=nw):
                    for x in sh:
                        expr(x)
                    for x in (f, nw):
                        if x is not None:
                            expr(x)
                    defined.add(n)
                case If(cond=cnd, then=t, orelse=o):
                    expr(cnd)
                    walk(t)
                    walk(o)
                case For(var=v, start=a, stop=b, body=bd, setup=su):
                    expr(a)
                    expr(b)
                    if s.parallel:
                        used.add("nthreads")  # one task per thread
                    walk(su)
                    defined.add(v)
                    walk(bd)
                case Forall(var=v, iteration=it, body=bd):
                    if it.extent is not None:
                        expr(it.extent)
                    for cur in it.drivers + it.followers + it.lookups:
                        expr(cur.start)
                        expr(cur.stop)
                        for x in (cur.shift, *(cur.groups or ())):
                            if x is not None:
                                expr(x)
                        if cur.values is not None:
                            used.add(cur.values)
                        used.add(cur.idx)
                        defined.update((cur.pos, cur.found))
                    for cur in it.lookups:
                        used.update((cur.name + ("_bits" if it.membership else "_map"), cur.name + "_mlo",
                                     cur.name + "_mhi"))
                    defined.add(v)
                    walk(bd)
                    if s.jam is not None:
                        cursors = it.drivers
                        defined.update(Jam.copy_name(x, u) for u in range(s.jam.factor)
                                       for x in (v, *(c.pos for c in cursors), *(c.found for c in cursors)))
                        walk(s.jam.body)
                case Workspace(name=n, width=wd):
                    expr(wd)
                    defined.update(workspace_arrays(n))
                case Reset(stamp=st, flops=fl):
                    expr(st)
                    if fl is not None:
                        expr(fl)
                case Accumulate(key=k, value=v):
                    expr(k)
                    if v is not None:
                        expr(v)
                case Return(values=vs):
                    for x in vs:
                        expr(x)
                case TopKSelect(name=n, count=cnt, k=k):
                    expr(cnt)
                    expr(k)
                    used.update(a for a in s.arrays if a not in defined)
                    defined.add(n + "_n")
                case Alias(name=n, source=src):
                    used.add(src)
                    defined.add(n)
    walk(body)
    return used - defined
