"""Lowering: tensor IR → loop IR.

The loops are derived from the index structure of each statement, never from which named kernel it is:

* the output's free index variables become nested levels in left-hand order; the outermost dense level is
  split into chunks distributed over threads (per-thread workspaces live in a chunk);
* at every level, the iteration over the level's variable ``v`` comes from a *presence lattice* of the
  expression (spec § 5): a compressed operand whose row is already bound (``A[i, v]`` with ``i`` bound, or a
  compacted workspace) is a leaf; intersection operators and ``where`` combine with "and", union operators
  with "or", everything else (dense operands, complements, values) is "all". The loop enumerates a superset
  of the coordinates where the expression can be present — the intersection of the leaves every present
  coordinate needs, else the union of the leaves, else the dense range — and presence is then evaluated
  exactly at each coordinate. So a mask or an intersection drives the loop and masked-out work is never done;
* a reduction evaluated at a point loops over its own variables the same way (sorted intersection of
  ``L[i, k]`` and ``L[j, k]`` for the masked product of triangle counting, a row walk for SpMV, a dense
  range over ``d`` for SDDMM);
* a reduction with a free variable ``v`` whose operands are stored with a reduction variable before ``v``
  (``sum[k] A[i, k] * B[k, j]``: ``B`` is row-major in ``k``) is evaluated row-wise (Gustavson) into a
  workspace keyed by ``v`` before the loop over ``v``, unless an operand outside it already drives that loop
  (then it is evaluated only at the driven coordinates); the compacted workspace is then a leaf like a
  compressed row;
* ``softmax[v]`` computes its row statistics (max, sum of exponentials) in passes before the loop over ``v``;
  reductions that do not depend on ``v`` are hoisted before it;
* sparse outputs are assembled in two phases: a symbolic kernel counts each row's entries (values are not
  computed unless presence reads them), a prefix sum gives the row pointer, a numeric kernel fills.

Anything outside this is refused with ``SdslTargetError`` naming the statement and the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from sparsedsl.core.errors import SdslTargetError
from sparsedsl.core.names import NameSupply, mangle
from sparsedsl.loop_ir import nodes as L
from sparsedsl.loop_ir.order import LoopOrder, orders
from sparsedsl.loop_ir.unordered import unorder_compacts
from sparsedsl.tensor_ir import nodes as T
from sparsedsl.tensor_ir.presence import is_full, same_pattern
from sparsedsl.tensor_ir.types import FLOAT_DTYPES, Dim, is_float, is_int, promote

SUPPORTED_DTYPES = ("bool", "i8", "i32", "i64", "f16", "bf16", "f32", "f64")
# reductions a keyed workspace can accumulate (the others are evaluated at each output coordinate)
WORKSPACE_REDUCTIONS = ("sum", "prod", "max", "min", "any", "all", "count")
ACCUMULATORS = ("dense", "hash", "sort", "auto")
ASSEMBLIES = ("auto", "two-pass")
# rows per block of the outermost parallel loop, and chunks of rows per thread (see Lowerer.chunked)
CHUNK_BLOCK = 16
# scratch arrays (L.Alloc.keep) of at most this many bytes are kept between calls (backends/numba/codegen.py's
# _scratch): a one-pass assembly whose scratch is larger takes two passes instead (Lowerer.one_pass)
SCRATCH_KEPT_BYTES = 1 << 28
CHUNKS_PER_THREAD = 16
# storage kinds from the least to the most general: a name assigned several times (a repeat's carried
# name, an accumulation) takes the most general kind any of its assignments needs
_GENERALITY = {"scalar": 0, "oscalar": 1, "dense": 0, "bitmap": 1, "csr": 1}

_FUSED = "it is computed inside the loops of the statement that reads it (fused), in their order"

TRUE = L.Const(True, "bool")
FALSE = L.Const(False, "bool")
I64_ZERO = L.Const(0, "i64")
I64_ONE = L.Const(1, "i64")


class Refused(Exception):
    """Raised inside lowering; turned into an SdslTargetError carrying the statement's span."""


class _Restart(Exception):
    """A name needs a more general storage kind than its first assignment gave it: lower again."""

    def __init__(self, name: str, kind: str):
        super().__init__(name, kind)
        self.name = name
        self.kind = kind


class _Materialize(Exception):
    """A softmax or top-k cannot be computed where it stands (its coordinate is not iterated after the
    others it depends on): compute it into a temporary first."""

    def __init__(self, node: T.Expr):
        super().__init__(node)
        self.node = node


# ---------------------------------------------------------------- storage of named values

@dataclass(frozen=True)
class Storage:
    """How a named tensor is laid out at run time.

    kind: ``scalar`` (a value), ``oscalar`` (a value and whether it is present), ``dense`` (an array, every
    entry present), ``bitmap`` (values + presence array: sparse values of rank 1 or of rank 3 and more),
    ``csr`` (row pointer, column indices, values). ``tag`` distinguishes the arrays of a reassignment from
    those it replaces (the new value is computed while the old one is read). ``const``, on a sparse kind: the
    value every present entry holds (a ``bool`` pattern's True, ``i64(A[i, j])`` of one), so that readers use
    the constant instead of loading it (triangle counting's lookups then touch no value array).

    ``block``, on an input declared ``bsr``, ``blockdiag``, ``nm`` or ``csc``: its format (``T.Format``). Such an
    input has two run-time layouts: its compressed rows (the ``csr`` arrays, made at each call from what it
    stores) and its own arrays (``blocks``: ``blk_ptr``/``blk_idx``/``blk_val`` of bsr and csc, ``blk_val`` of
    blockdiag, ``blk_val``/``blk_off`` of nm, values flattened in C order). A row walk that drives its loop
    alone reads a block format's blocks (``Lowerer.block_walk``); a csc's own arrays are the compressed rows of
    its transpose (``Lowerer.transpose``); everything else reads the rows. Only the arrays the kernels read
    are parameters of the module (``Lowerer.lower``), so an input read only in its own layout is never
    converted.

    ``alias``: the (ptr, idx, val) names of arrays this storage reads instead of its own (a csc input's
    transpose is its own arrays).
    """

    name: str
    kind: str
    dtype: str
    shape: tuple[Dim, ...]
    tag: str = ""
    const: bool | int | float | None = None
    block: T.Format | None = None
    alias: tuple[str, str, str] | None = None

    @property
    def val(self) -> str:
        if self.alias is not None:
            return self.alias[2]
        return mangle(self.name, "s_" if self.kind in ("scalar", "oscalar") else "val_") + self.tag

    @property
    def ptr(self) -> str:
        return mangle(self.name, "ptr_") + self.tag if self.alias is None else self.alias[0]

    @property
    def idx(self) -> str:
        return mangle(self.name, "idx_") + self.tag if self.alias is None else self.alias[1]

    @property
    def mask(self) -> str:
        return mangle(self.name, "has_" if self.kind == "oscalar" else "mask_") + self.tag

    def blk(self, role: str) -> str:
        """The name of one of a block input's own arrays (``ptr idx val off``)."""
        return mangle(self.name, f"blk_{role}_") + self.tag

    @property
    def blocks(self) -> tuple[tuple[str, str], ...]:
        """(array, role) of a block input's own layout (see the class docstring); () for any other."""
        roles = {"bsr": ("ptr", "idx", "val"), "blockdiag": ("val",), "nm": ("val", "off"),
                 "csc": ("ptr", "idx", "val")}
        if self.block is None:
            return ()
        return tuple((self.blk(r), "b" + r) for r in roles[self.block.name])

    @property
    def arrays(self) -> tuple[str, ...]:
        return tuple(name for name, _role in self.roles)

    @property
    def roles(self) -> tuple[tuple[str, str], ...]:
        return {"scalar": ((self.val, "scalar"),), "oscalar": ((self.val, "scalar"), (self.mask, "mask")),
                "dense": ((self.val, "val"),),
                "bitmap": ((self.val, "val"), (self.mask, "mask")),
                "csr": ((self.ptr, "ptr"), (self.idx, "idx"), (self.val, "val"))}[self.kind]


def size_name(name: str) -> str:
    return mangle(name, "n_")


def index_name(var: str) -> str:
    return mangle(var, "x_")


def dim_expr(d: Dim) -> L.Expr:
    return L.Var(size_name(d)) if isinstance(d, str) else L.Const(int(d), "i64")


# ---------------------------------------------------------------- presence lattice

@dataclass(frozen=True)
class Lat:
    kind: str  # all | leaf | and | or
    leaf: object = None
    parts: tuple["Lat", ...] = ()


ALL = Lat("all")


def lat_and(parts) -> Lat:
    flat: list[Lat] = []
    for p in parts:
        if p.kind == "and":
            flat.extend(p.parts)
        elif p.kind != "all":
            flat.append(p)
    if not flat:
        return ALL
    return flat[0] if len(flat) == 1 else Lat("and", parts=tuple(flat))


def lat_or(parts) -> Lat:
    flat: list[Lat] = []
    for p in parts:
        if p.kind == "all":
            return ALL
        flat.extend(p.parts if p.kind == "or" else (p,))
    if not flat:
        return ALL
    return flat[0] if len(flat) == 1 else Lat("or", parts=tuple(flat))


def _required(lat: Lat) -> list:
    """Leaves every present coordinate needs."""
    if lat.kind == "leaf":
        return [lat.leaf]
    if lat.kind == "and":
        out: list = []
        for p in lat.parts:
            out.extend(x for x in _required(p) if x not in out)
        return out
    if lat.kind == "or":
        sets = [_required(p) for p in lat.parts]
        return [x for x in sets[0] if all(x in s for s in sets[1:])]
    return []


def _leaves(lat: Lat) -> list:
    if lat.kind == "leaf":
        return [lat.leaf]
    out: list = []
    for p in lat.parts:
        out.extend(x for x in _leaves(p) if x not in out)
    return out


@dataclass(frozen=True)
class BlockPos:
    """Where the slot-by-slot walk of an ``nm`` row (``Lowerer.block_walk``) stands, in place of a cursor:
    ``at`` is the position of the entry in the input's flattened values ``val``."""

    name: str
    val: str

    @property
    def at(self) -> str:
        return self.name + "_p"

    @property
    def found(self) -> str:
        return self.name + "_f"


@dataclass(frozen=True)
class WsLeaf:
    """A compacted workspace standing for a reduction (a sorted sparse vector over the level's variable)."""

    ws: str
    dtype: str = "f64"  # of its values


@dataclass(frozen=True)
class TopKLeaf:
    """The selected coordinates of a top-k pattern along the level's variable (a sorted list)."""

    name: str


# ---------------------------------------------------------------- lowering context

@dataclass(frozen=True)
class Ctx:
    bound: tuple[str, ...] = ()
    cursors: dict = field(default_factory=dict)  # leaf -> (Cursor, always found)
    values: dict = field(default_factory=dict)  # hoisted T.Expr -> (value, presence)
    workspaces: dict = field(default_factory=dict)  # T.Reduce -> workspace name
    # T.Softmax -> (shift var, sum var, row cache or None, the leaf whose row positions index the cache or None)
    softmax: dict = field(default_factory=dict)
    topk: dict = field(default_factory=dict)  # T.TopK -> selection name
    pattern: bool = False  # symbolic phase: only presence is needed

    def with_(self, **kw) -> "Ctx":
        return replace(self, **kw)


def _walk(e: T.Expr):
    stack = [e]
    while stack:
        x = stack.pop()
        yield x
        stack.extend(reversed(T.children(x)))


def _stmt_exprs(s: L.Stmt) -> tuple[L.Expr, ...]:
    """The expressions a statement holds itself (not those of the statements nested in it)."""
    match s:
        case L.Let(value=v) | L.Set(value=v):
            return (v,)
        case L.Store(index=ix, value=v):
            return (*ix, v)
        case L.If(cond=cnd):
            return (cnd,)
        case L.Accumulate(key=k, value=v):
            return (k,) if v is None else (k, v)
        case L.For(start=a, stop=b):
            return (a, b)
    return ()


def _positions_vars(e: T.Expr) -> set[str]:
    return set(T.free_indices(e))


# ---------------------------------------------------------------- the lowerer

class Lowerer:
    def __init__(self, program: T.Program, options: dict | None = None, force: dict | None = None):
        self.program = program
        self.options = dict(options or {})
        self.force = dict(force or {})  # name -> storage kind a later assignment needs (see _Restart)
        self.decls = {d.name: d for d in program.decls}
        self.names = NameSupply(("np", "numba", "prange", "run", "math"))
        # names of tensors lowering introduces (an accumulation's update, a materialized softmax, a
        # repeat's condition): never a user's name, and their mangled arrays never collide with one
        self.tnames = NameSupply(tuple(self.decls) + tuple(program.sizes))
        self._tags = 0
        # the transposed copies lowering made (``transpose``): never searched for, never transposed again
        self.transposed: set[str] = set()
        self.copies: dict[tuple, str] = {}  # (matrix, host body) -> the transposed copy of its current value
        # (subject, kind, choice, reason, span) of each choice lowering makes, for ``sparsedsl explain``
        self.notes: list[tuple] = []
        self.storage: dict[str, Storage] = {}
        self.kernels: list[L.Kernel] = []
        self.host: list[L.Stmt] = []
        self.params: list[L.Param] = []
        self._top: list[L.Stmt] = []
        # statements whose row-wise reduction split its rows over the threads (split_rows): the index
        self._split: dict[str, str] = {}
        self._prologue: list[L.Stmt] | None = None
        self._parallel = False
        # how the next outermost chunked loop takes its row ranges (see one_pass): None, or a dict with
        # "bounds" (the array of the chunks' first rows), "write" (True: this loop computes and stores them)
        # and "init"/"fini" (statements at the start and end of each chunk)
        self._chunks: dict | None = None
        # names whose value changes after their first assignment (reassigned, accumulated, carried by a
        # repeat): code reading them may run against any of their values, so none of them is a constant
        self.varying = _varying(program.body)
        self._block_shared: set[str] = set()  # intermediates stored in a block input's blocks (fill_shared)
        # the ``order`` directives (loop_ir/order.py), and the one of the statement being lowered; an
        # accumulation's update (a temporary) takes its target's
        self.orders = orders(program)
        self.order: LoopOrder | None = None
        self._order_alias: dict[str, str] = {}
        for d in program.decls:
            if d.kind == "input":
                self.storage[d.name] = self.input_storage(d)
        for d in program.decls:
            if d.kind == "const" and d.default is not None:
                self.storage[d.name] = Storage(d.name, "scalar", d.type.dtype, ())

    # ------------------------------------------------------------ storage decisions

    def input_storage(self, d: T.Decl) -> Storage:
        t = d.type
        if t.rank == 0:
            kind = "scalar"
        elif t.format.is_dense:
            kind = "dense"
        elif t.rank == 2:
            kind = "csr"
        else:
            kind = "bitmap"
        # a bool sparse input is a pattern (interface.md): every stored entry is True once bound
        const = True if kind in ("csr", "bitmap") and t.dtype == "bool" else None
        block = t.format if kind == "csr" and t.format.name in ("bsr", "blockdiag", "nm", "csc") else None
        return Storage(d.name, kind, t.dtype, t.shape, const=const, block=block)

    def result_storage(self, st: T.Assign, decl: T.Decl | None) -> Storage:
        dtype = decl.type.dtype if decl is not None else st.value.dtype
        shape = decl.type.shape if decl is not None else tuple(st.range_of(v) for v in st.idx)
        fmt = decl.type.format if decl is not None else None
        rank = len(st.idx)
        forced = self.force.get(st.target)
        if rank == 0:
            optional = forced == "oscalar" and (decl is None or decl.kind != "output")
            return Storage(st.target, "oscalar" if optional else "scalar", dtype, ())
        full = self.static_full(st.value) and forced is None
        if fmt is not None and fmt.is_dense:
            return Storage(st.target, "dense", dtype, shape)
        if full and (fmt is None or fmt.name == "auto"):
            return Storage(st.target, "dense", dtype, shape)
        # format selection found it nearly full from the bound inputs' statistics (passes/formats.py)
        if rank == 2 and not (decl is not None and decl.storage is not None and decl.storage.name == "bitmap") \
                and not self.by_columns(st, decl):
            return Storage(st.target, "csr", dtype, shape)
        return Storage(st.target, "bitmap", dtype, shape)

    def by_columns(self, st: T.Assign, decl: T.Decl | None) -> bool:
        """Whether ``st`` computes an accumulation's update (declared nowhere: format selection did not see
        it) whose ``order`` puts a column loop outside its rows: compressed rows could not be assembled in that
        order, so it is stored as a bitmap (written by coordinate) instead."""
        order = self.order_of(st.target)
        if decl is not None or order is None or order.free(st.idx) == st.idx:
            return False
        self.notes.append((st.target, "layout", "bitmap", f"its order puts {order.free(st.idx)[0]} outermost, and "
                           "compressed rows are assembled row by row: it is written by coordinate", st.span))
        return True

    def stored_full(self, name: str) -> bool:
        """Whether ``name`` is stored with every coordinate present (dense or a scalar), as far as lowering knows."""
        s = self.storage.get(name)
        return s is not None and s.kind in ("dense", "scalar")

    def static_full(self, e: T.Expr) -> bool:
        """Present at every coordinate, whatever the inputs hold (a reduction over an empty range is absent)."""
        return is_full(e, self.stored_full)

    # ------------------------------------------------------------ program

    def lower(self) -> L.Module:
        for d in self.program.inputs:
            s = self.storage[d.name]
            for a, role in s.roles + s.blocks:
                self.params.append(L.Param(a, s.kind, role, s.dtype, d.name, span=d.span))
        for d in self.program.decls:
            if d.kind == "const" and d.default is not None:
                s = self.storage[d.name]
                self.params.append(L.Param(s.val, "scalar", "scalar", s.dtype, d.name, span=d.span))
        for size in self._sizes():
            self.params.append(L.Param(size_name(size), "size", "size", "i64", size))
        for st in self.program.body:
            self.statement(st)
        self.loop_directives()
        results = []
        for d in self.program.outputs:
            s = self.storage.get(d.name)
            if s is None:
                raise SdslTargetError(f"output '{d.name}' is never assigned", d.span)
            results.append(L.Result(d.name, s.kind, s.dtype, s.arrays, span=d.span))
        # of a block input's two layouts, only the arrays something reads are passed (the other is not made)
        read = (L.free_names(self.host) | {a for r in results for a in r.arrays}
                | {a for t in L.walk_stmts(self.host) if isinstance(t, L.Invoke) for a in t.args})
        twofold = {a for d in self.program.inputs for a, _ in self.storage[d.name].roles + self.storage[d.name].blocks
                   if self.storage[d.name].block is not None}
        params = tuple(p for p in self.params if p.name not in twofold or p.name in read)
        for name in self._block_shared:
            if any(a in read for a in self.storage[name].arrays):
                raise _Restart(name, "csr")  # a statement reads its compressed rows, which sharing never made
        return L.Module(self.program.name, params, tuple(self.kernels), tuple(self.host),
                        tuple(results), span=self.program.span)

    def row_tile(self, st, v: str) -> int | None:
        """The tile of a ``block`` directive on ``st``'s outermost index ``v``: the rows a chunk that a thread
        claims holds (by work where the rows walk compressed rows: a chunk per ``tile`` rows, of equal work)."""
        if st is None or not st.idx or v not in st.idx:
            return None
        tiles = [int(args[1]) for args in self.directives(st.target, "block") if str(args[0]) == v]
        return tiles[-1] if tiles else None

    def directives(self, target: str, name: str) -> list[tuple]:
        """The arguments of every ``name`` directive in the schedules of ``target``, in program order."""
        return [dr.args for sch in self.program.schedules if sch.target == target
                for dr in sch.directives if dr.name == name]

    def order_of(self, target: str) -> LoopOrder | None:
        """The ``order`` directive on ``target`` (an accumulation's update: on the accumulated name)."""
        return self.orders.get(self._order_alias.get(target, target))

    def loop_indices(self, st: T.Assign, kind: str) -> tuple[str, ...]:
        """The free indices of ``st`` in the order its loops nest. For a result written by coordinate (dense,
        bitmap): an ``order`` directive's, else with the index a ``parallel`` directive names first (the
        outermost loop is the one split over threads). Otherwise the statement's (a compressed result is
        assembled row by row)."""
        if kind not in ("dense", "bitmap"):
            return st.idx
        order = self.order_of(st.target)
        if order is not None:
            return order.free(st.idx)
        named = [str(args[0]) for args in self.directives(self._order_alias.get(st.target, st.target), "parallel")]
        if named and named[-1] in st.idx:
            return (named[-1],) + tuple(v for v in st.idx if v != named[-1])
        return st.idx

    def loop_directives(self) -> None:
        """Say what became of the ``parallel``, ``order`` and ``block`` directives (spec § 8: a schedule never
        changes a result). The outermost loop of a statement is split into chunks of rows (16 rows each, or a
        ``block`` directive's tile: see ``chunked``) that the threads claim; no other loop is tiled or split
        over threads. An ``order`` steers the loops (``loop_ir/order.py``) and is then checked against the
        loops the kernels nest: one they do not follow is refused at the directive."""
        first = {}
        for st in _all_assigns(self.program.body):
            first.setdefault(st.target, st)
        for sch in self.program.schedules:
            st = first.get(sch.target)
            for dr in sch.directives:
                if dr.name not in ("parallel", "order", "block"):
                    continue
                if st is None:  # fused into its reader (passes/fusion.py)
                    self.notes.append((sch.target, "schedule", f"{dr.text}: not applied",
                                       _FUSED + "; the result is the same either way", dr.span or sch.span))
                    continue
                stored = self.storage.get(st.target)
                loops = self.loop_indices(st, stored.kind if stored is not None else "")
                outer = loops[0] if loops else None
                text = dr.text
                if dr.name == "parallel" and dr.args and self._split.get(st.target) == dr.args[0]:
                    choice, why = "applied", (f"no loop encloses the reduction over {dr.args[0]}: its rows are "
                                              "split over the threads, a range each, and the partial results "
                                              "merged in order")
                elif dr.name == "parallel" and dr.args and dr.args[0] == outer \
                        and self.options.get("parallel", True):
                    choice, why = "applied", (f"the loop over {outer} is outermost and split over the threads "
                                              "(chunks of its range)")
                elif dr.name == "parallel" and outer and stored is not None and stored.kind == "csr" \
                        and dr.args[0] in st.idx:
                    choice, why = "not applied", (f"a compressed result is assembled row by row: its loop over "
                                                  f"{outer} is the one split over threads")
                elif dr.name == "parallel":
                    choice, why = "not applied", (f"this target splits only the outermost loop ({outer}) over "
                                                  "threads" if outer else
                                                  "a reduction to a scalar is split over the rows it reduces")
                elif dr.name == "order":
                    choice, why = self.checked_order(sch.target, LoopOrder(tuple(map(str, dr.args))), dr.span)
                elif dr.args and dr.args[0] == outer:
                    choice, why = "applied", (f"the loop over {outer} is cut into chunks of {dr.args[1]} rows that "
                                              "the threads claim (where rows walk compressed rows, chunks of "
                                              "equal work, as many as tiles of that size)")
                else:
                    choice, why = "not applied", (f"this target tiles only the outer loop ({outer}), in chunks of "
                                                  f"{CHUNK_BLOCK} rows unless a block directive names it"
                                                  if outer else "this target tiles only a statement's outer loop")
                self.notes.append((sch.target, "schedule", f"{text}: {choice}",
                                   why + "; the result is the same either way", dr.span or sch.span))

    def checked_order(self, target: str, order: LoopOrder, span) -> tuple[str, str]:
        """(choice, reason) of ``explain`` for an ``order`` directive on ``target``, after lowering; raises
        ``SdslTargetError`` at the directive where the kernels computing ``target`` nest a loop against it."""
        nests = []
        for st in _all_assigns(self.program.body):
            if st.target == target:
                nests.extend((st, n) for n in self.loop_nests(st))
        for st, nest in nests:
            if order.follows(nest):
                continue
            stored = self.storage.get(st.target)
            if stored is not None and stored.kind == "csr" and order.free(st.idx) != st.idx:
                why = (f"a compressed result is assembled row by row, so its loops over {', '.join(st.idx)} "
                       "nest in that order")
            else:
                why = (f"its kernels nest the loops as {', '.join(nest)}: a reduction runs either just before the "
                       "last free index (row by row, into a workspace; sum, prod, max, min, any, all and count "
                       "only) or after every free index (at each coordinate), and a compressed operand is walked "
                       "from its rows")
            raise SdslTargetError(f"the numba target cannot run the loops of '{target}' in the order "
                                  f"{', '.join(order.indices)}: {why}", span)
        if not nests:
            return "not applied", _FUSED
        return "applied", "the loops run in this order"

    def loop_nests(self, st: T.Assign) -> list[tuple[str, ...]]:
        """Every nest of loops over ``st``'s indices in the kernels computing it (outermost first)."""
        names = {index_name(v): v for v, _ in st.ranges} | {index_name(v): v for v in st.idx}
        return [n for kernel in self.kernels if kernel.span == st.span for n in _loop_nests(kernel.body, names)]

    def _sizes(self) -> list[str]:
        """Every size name the program mentions (declared sizes, shapes, ranges and size values)."""
        out = list(self.program.sizes)

        def add(d):
            if isinstance(d, str) and d not in out:
                out.append(d)

        for d in self.program.decls:
            for x in d.type.shape:
                add(x)
            if d.kind == "input" and d.type.rank == 2 and d.type.format.name in ("bsr", "blockdiag", "nm"):
                for x in d.type.format.params:  # read by block walks
                    add(x)
        for st in _all_assigns(self.program.body):
            for _v, dim in st.ranges:
                add(dim)
            for x in _walk(st.value):
                if isinstance(x, T.ScalarRef) and x.is_size:
                    add(x.name)
        return out

    def statement(self, st: T.Stmt) -> None:
        if isinstance(st, T.Repeat):
            self.repeat(st)
            return
        assert isinstance(st, T.Assign)
        if st.op != "=" and st.target in self.storage:
            self.accumulation(st)
            return
        order = self.order_of(st.target)
        if order is not None:
            st = replace(st, value=order.reorder(st.value))
        for _attempt in range(16):
            mark = (len(self.kernels), len(self.host), dict(self.storage))
            names = set(self.names.taken)
            try:
                self.assign(st)
                flips = self.transposable(st, self.searched_by_rows(mark[0]))
                if not flips:
                    return
                # lowered again, reading transposed copies of the matrices it searched row by row (with the
                # generated names of the attempt given back, so the kernels are named as if it never ran)
                del self.kernels[mark[0]:]
                del self.host[mark[1]:]
                self.storage = mark[2]
                self.names.taken = names
                st = self.read_transposed(st, flips)
                continue
            except Refused as exc:
                raise SdslTargetError(f"the numba target cannot compute this statement: {exc}",
                                      st.span) from None
            except _Materialize as m:
                del self.kernels[mark[0]:]
                del self.host[mark[1]:]
                self.storage = mark[2]
                st = self.materialize(st, m.node)
        raise SdslTargetError("the numba target cannot compute this statement: its softmax / top-k "
                              "operators depend on each other too deeply", st.span)

    def searched_by_rows(self, first_kernel: int) -> set[tuple[str, str]]:
        """``(tensor, index variable)`` of each compressed matrix the kernels from ``first_kernel`` on read
        against its rows: a dense loop over the matrix's rows, inside another loop, that searches each row for a
        coordinate bound outside it (``T[j, i]`` in a loop over ``j`` inside one over ``i``) or walks each row
        (``sum[k] A[i, k] * B[j, k]``: B's row ``j`` intersected with A's row ``i`` for every ``j``). Either
        costs O(n) rows per outer coordinate, O(n^2) for the statement, where a transposed copy costs
        O(nnz + n) once and lets the loop be driven by what is stored (A·Bᵀ: 222 ms -> a row-wise product
        over Bᵀ's rows, n = 4000 with 8 per row; scipy 2.3 ms)."""
        ptrs = {s.ptr: name for name, s in self.storage.items()
                if s.kind == "csr" and len(s.shape) == 2 and name not in self.transposed}
        found: set[tuple[str, str]] = set()
        walked: set[tuple[str, str]] = set()

        def search(loop: L.Forall) -> None:
            row = L.Var(loop.var)

            def of_row(e) -> bool:
                return isinstance(e, L.Load) and e.index == (row,) and e.array in ptrs

            for x in L.walk_stmts(loop.body):
                for e in _stmt_exprs(x):
                    for sub in L.walk_expr(e):
                        if isinstance(sub, L.Locate) and of_row(sub.start) and loop.var not in L.expr_names(sub.key):
                            found.add((ptrs[sub.start.array], loop.var))
                if isinstance(x, L.Forall):
                    it = x.iteration
                    for cur in it.drivers + it.followers + it.lookups:
                        if of_row(cur.start):
                            walked.add((ptrs[cur.start.array], loop.var))

        def visit(stmts, nested: bool) -> None:
            for x in stmts:
                if nested and isinstance(x, L.Forall) and x.iteration.kind == "dense":
                    search(x)
                inner = nested or isinstance(x, (L.For, L.Forall))
                for child in (getattr(x, "setup", ()), getattr(x, "body", ()), getattr(x, "then", ()),
                              getattr(x, "orelse", ())):
                    if isinstance(child, tuple):
                        visit(child, inner)

        for k in self.kernels[first_kernel:]:
            visit(k.body, False)
        # a loop made dense by a search also walks the rows a row-wise product reads at its coordinates
        # (Aᵀ·B: B's row k at each k of the loop that searches A's rows): those walks are right once the search
        # is gone, so only a loop that searches nothing is answered by transposing what it walks
        searched_vars = {v for _t, v in found}
        return found | {(t, v) for t, v in walked if v not in searched_vars}

    def transposable(self, st: T.Assign, searched: set[tuple[str, str]]) -> dict[str, set[T.Access]]:
        """The reads of ``st`` that ``searched_by_rows`` found, by matrix: each ``T[j, i]`` (plain index
        variables) whose row variable ``j`` is one a dense loop searched. Other reads stay searched."""
        flips: dict[str, set[T.Access]] = {}
        for tensor, var in searched:
            for x in _walk(st.value):
                if (isinstance(x, T.Access) and x.tensor == tensor and len(x.pos) == 2
                        and all(isinstance(p, T.IndexVal) for p in x.pos)
                        and index_name(x.pos[0].var) == var and x.pos[0].var != x.pos[1].var):
                    flips.setdefault(tensor, set()).add(x)
        return flips

    def read_transposed(self, st: T.Assign, flips: dict[str, set[T.Access]]) -> T.Assign:
        """``st`` with each read ``T[j, i]`` of ``flips`` replaced by ``T_t[i, j]`` of a transposed copy
        (``transpose``) computed before it."""
        value = st.value
        for tensor in sorted(flips):
            name = self.transpose(tensor, st)
            for x in flips[tensor]:
                value = T.substitute(value, x, T.Access(name, (x.pos[1], x.pos[0]), x.dtype, span=x.span))
        return replace(st, value=value)

    def transpose(self, tensor: str, st: T.Assign) -> str:
        """Host and kernels computing the transposed copy of the compressed matrix ``tensor`` (its current
        value) as a new compressed matrix: a count of each column's entries, their prefix sum, and a pass over
        the rows in order that appends each entry to its column's row of the copy, so the copy's rows come out
        sorted. Serial: O(nnz + n) and memory-bound (R-MAT 2^16, 10^6 entries: a few milliseconds)."""
        src = self.storage[tensor]
        # one copy per value of the matrix, shared by the statements after it in the same host body until the
        # matrix is assigned again (``assign`` drops it); a copy made inside a repeat is not read after it (the
        # loop may not run)
        key = (tensor, id(self.host))
        if key in self.copies and self.copies[key] in self.storage:
            return self.copies[key]
        name = self.tnames.fresh(f"{tensor}_transposed")
        self.transposed.add(name)
        self.copies[key] = name
        if src.block is not None and src.block.name == "csc" and src.tag == "":
            # a csc input's columns are its transpose's rows: nothing to compute
            self.storage[name] = Storage(name, "csr", src.dtype, (src.shape[1], src.shape[0]), const=src.const,
                                         alias=(src.blk("ptr"), src.blk("idx"), src.blk("val")))
            self.notes.append((tensor, "layout", "columns as stored",
                               f"a statement reads {tensor} against its rows: its compressed columns (csc) are "
                               "walked as the rows of its transpose", st.span))
            return name
        rows, cols = (dim_expr(d) for d in src.shape)
        out = Storage(name, "csr", src.dtype, (src.shape[1], src.shape[0]), const=src.const)
        self.notes.append((tensor, "layout", "transposed copy",
                           f"a statement reads {tensor} against its rows (a loop over its rows inside a loop over "
                           f"its columns): a transposed copy (a counting sort, O(nnz + n)) is walked by rows "
                           f"instead of searching every row of {tensor} for each column", st.span))
        counts = self.names.fresh("w_colnnz")
        base = self.names.fresh(f"k{len(self.kernels)}_{name}")
        p, r, c, k, q, nxt = (self.names.fresh(x) for x in ("w_tp", "x_tr", "w_tc", "w_tk", "w_tq", "w_tnext"))
        entries = (L.Load(src.ptr, (I64_ZERO,)), L.Load(src.ptr, (rows,)))
        col = L.Load(src.idx, (L.Var(p),))
        count = [L.For(p, *entries, (L.Store(counts, (col,), L.Op("+", (L.Load(counts, (col,)), I64_ONE),
                                                                    "i64")),), span=st.span)]
        self.host.append(L.Alloc(counts, "i64", (cols,), I64_ZERO, span=st.span))
        self.add_kernel(base + "_count", count, False, st)
        self.host.append(L.Invoke(base + "_count", self.kernel_params(base + "_count"), span=st.span))
        self.alloc_csr(st, out, (cols, rows), counts)
        row = L.Var(r)
        fill = [
            L.Alloc(nxt, "i64", (cols,), span=st.span),
            L.For(k, I64_ZERO, cols, (L.Store(nxt, (L.Var(k),), L.Load(out.ptr, (L.Var(k),))),), span=st.span),
            L.For(r, I64_ZERO, rows, (
                L.For(p, L.Load(src.ptr, (row,)), L.Load(src.ptr, (L.Op("+", (row, I64_ONE), "i64"),)), (
                    L.Let(c, "i64", L.Cast(col, "i64")),
                    L.Let(q, "i64", L.Load(nxt, (L.Var(c),))),
                    L.Store(out.idx, (L.Var(q),), row),
                    L.Store(out.val, (L.Var(q),), L.Load(src.val, (L.Var(p),))),
                    L.Store(nxt, (L.Var(c),), L.Op("+", (L.Var(q), I64_ONE), "i64")),
                ), span=st.span),
            ), span=st.span),
        ]
        self.add_kernel(base + "_fill", fill, False, st)
        self.host.append(L.Invoke(base + "_fill", self.kernel_params(base + "_fill"), span=st.span))
        self.storage[name] = out
        return name

    def materialize(self, st: T.Assign, node: T.Expr) -> T.Assign:
        """Compute ``node`` (a softmax or top-k) into a temporary indexed with its own coordinate last, so
        that its row statistics are complete before its coordinates are visited; ``st`` then reads it."""
        fr = T.free_indices(node)
        order = [v for v in st.idx if v in fr and v != node.var]
        order += [v for v in fr if v not in order and v != node.var]
        order.append(node.var)
        if st.value == node and tuple(order) == st.idx:
            given = self.order_of(st.target)
            if given is not None:
                # the statement's own loops would iterate the coordinate last: the order is what asks otherwise
                spans = [dr.span for sch in self.program.schedules
                         if sch.target == self._order_alias.get(st.target, st.target)
                         for dr in sch.directives if dr.name == "order"]
                span = spans[-1] if spans else st.span
                raise SdslTargetError(f"the numba target cannot run the loops of '{st.target}' in the order "
                                      f"{', '.join(given.indices)}: the {type(node).__name__.lower()} along "
                                      f"'{node.var}' needs its coordinate iterated last", span)
            raise SdslTargetError("the numba target cannot compute this statement: the "
                                  f"{type(node).__name__.lower()} along '{node.var}' reads coordinates "
                                  "that are not iterated before it", st.span)
        kind = "topk" if isinstance(node, T.TopK) else "softmax"
        name = self.tnames.fresh(f"{st.target}_{kind}")
        # the subject is the user's tensor: the temporary's name is made here, so it is introduced, not assumed
        self.notes.append((st.target, "temporary", f"its {kind} first, as {name}[{', '.join(order)}]",
                           f"the {kind} along '{node.var}' needs its coordinate iterated last", st.span))
        # the extents of the reductions inside the node as well (a softmax of a product: sum[f] ... * ...)
        inner = T.reduced_vars(node)
        ranges = tuple((v, st.range_of(v)) for v in order) + tuple((v, d) for v, d in st.ranges
                                                                   if v in inner and v not in order)
        self.statement(T.Assign(name, tuple(order), "=", node, ranges, span=st.span))
        acc = T.Access(name, tuple(T.IndexVal(v) for v in order), node.dtype, span=node.span)
        return replace(st, value=T.substitute(st.value, node, acc))

    def accumulation(self, st: T.Assign) -> None:
        """``X[idx] op= e``: the update is computed into a temporary, then united with X (spec § 6: present
        where either is; combined with op where both are)."""
        old_storage = self.storage[st.target]
        xd = old_storage.dtype
        tmp = self.tnames.fresh(f"{st.target}_update")
        self._order_alias[tmp] = self._order_alias.get(st.target, st.target)
        self.statement(T.Assign(tmp, st.idx, "=", st.value, st.ranges, span=st.span))
        if st.idx:
            old: T.Expr = T.Access(st.target, tuple(T.IndexVal(v) for v in st.idx), xd)
            new: T.Expr = T.Access(tmp, tuple(T.IndexVal(v) for v in st.idx), st.value.dtype)
        else:
            old = T.ScalarRef(st.target, xd)
            new = T.ScalarRef(tmp, st.value.dtype)
        if st.value.dtype != xd:
            new = T.Cast(new, xd)
        if st.op == "+=":
            combined: T.Expr = T.Binary("+", old, new, xd)
        else:
            combined = T.Call("max" if st.op == "max=" else "min", (old, new), xd)
        self.statement(T.Assign(st.target, st.idx, "=", combined, st.ranges, span=st.span))

    def repeat(self, st: T.Repeat) -> None:
        """A host loop around the body's kernels; the bound and the condition are scalar temporaries."""
        count = None
        if st.max_iters is not None:
            if isinstance(st.max_iters, T.Lit):
                count = L.Const(int(st.max_iters.value), "i64")
            else:
                name = self.tnames.fresh("repeat_count")
                value = st.max_iters if st.max_iters.dtype == "i64" else T.Cast(st.max_iters, "i64")
                self.statement(T.Assign(name, (), "=", value, self.infer_ranges(value), span=st.span))
                count = self.scalar_test(name, numeric=True)
        saved = self.host
        self.host = []
        for inner in st.body:
            self.statement(inner)
        until = None
        if st.until is not None:
            name = self.tnames.fresh("repeat_until")
            self.statement(T.Assign(name, (), "=", st.until, self.infer_ranges(st.until),
                                    span=st.until.span or st.span))
            until = self.scalar_test(name)
        body = self.host
        self.host = saved
        # the loop may not run: copies made in its body are not there after it (keyed by the body's identity,
        # which a later list could take over once this one is gone)
        self.copies = {k: v for k, v in self.copies.items() if k[1] != id(body)}
        self.host.append(L.Loop(count, tuple(body), until, span=st.span))

    def scalar_test(self, name: str, numeric: bool = False) -> L.Expr:
        s = self.storage[name]
        if s.kind == "oscalar":
            if numeric:
                return L.Op("select", (L.Var(s.mask), L.Var(s.val), I64_ZERO), "i64")
            return _and(L.Var(s.mask), self.truthy(L.Var(s.val), s.dtype))
        return L.Var(s.val) if numeric else self.truthy(L.Var(s.val), s.dtype)

    def infer_ranges(self, e: T.Expr) -> tuple[tuple[str, Dim], ...]:
        """Extents of the index variables of an expression outside a statement (a repeat's condition), from
        the shapes of the tensors they index."""
        out: dict[str, Dim] = {}
        for x in _walk(e):
            if isinstance(x, T.Access):
                shape = self.decls[x.tensor].type.shape if x.tensor in self.decls else \
                    self.storage[x.tensor].shape
                for p, d in zip(x.pos, shape):
                    if isinstance(p, T.IndexVal) and p.var not in out:
                        out[p.var] = d
        return tuple(out.items())

    def precheck(self, st: T.Assign) -> None:
        for x in _walk(st.value):
            if isinstance(x, T.Access):
                s = self.storage.get(x.tensor)
                if s is None:
                    raise Refused(f"'{x.tensor}' is read before it is computed")
            if isinstance(x, T.ScalarRef) and not x.is_size and x.name not in self.storage:
                raise Refused(f"'{x.name}' is read before it is computed")

    def accumulator(self, target: str) -> str:
        per_row = ("per row: a dense accumulator when the output has at most 65536 columns (it stays in the "
                   "core's cache) or the row's work times 32 reaches the width, a hash table otherwise (few "
                   "touched columns of a wide output) and past 2^24 columns (no dense arrays are allocated "
                   "there); keys are put in order through a bitmap (by heapsort past 2^24 columns)")
        self.acc_reason = per_row
        forced = self.options.get("accumulator")
        if forced is not None:
            if forced not in ACCUMULATORS:
                raise SdslTargetError(f"unknown accumulator option {forced!r} (one of {', '.join(ACCUMULATORS)})")
            self.acc_reason = "the compile option 'accumulator'" + ("; " + per_row if forced == "auto" else "")
            return forced
        for sch in self.program.schedules:
            if sch.target == target:
                for dr in sch.directives:
                    if dr.name == "accumulator" and dr.args:
                        kind = str(dr.args[0])
                        if kind not in ACCUMULATORS:
                            raise SdslTargetError(
                                f"the numba target does not implement the '{kind}' accumulator yet "
                                f"(available: {', '.join(ACCUMULATORS)})", dr.span or sch.span)
                        self.acc_reason = "schedule directive" + ("; " + per_row if kind == "auto" else "")
                        return kind
        return "auto"

    # ------------------------------------------------------------ one statement

    def assign(self, st: T.Assign) -> None:
        self.precheck(st)
        self._split.pop(st.target, None)
        self.copies = {k: v for k, v in self.copies.items() if k[0] != st.target}
        decl = self.decls.get(st.target)
        out = self.result_storage(st, decl)
        if decl is not None and decl.storage is not None and decl.storage.name == "csc" and out.kind == "csr":
            # say so rather than let explain's "stored as csc" stand for this target
            self.notes.append((st.target, "layout", "csr",
                               "this target computes sparse matrices by rows, so the statements that read it by "
                               "columns read a transposed copy made once per call; with the inputs bound "
                               "(explain --input, compile(like=...)) format selection stores such a matrix "
                               "as a bitmap instead", st.span))
        elif decl is not None and decl.storage is not None and out.kind == "csr" \
                and decl.storage.name in ("bsr", "blockdiag", "nm", "coo"):
            self.notes.append((st.target, "layout", "csr",
                               f"this target stores an intermediate asked for as {decl.storage} in compressed rows "
                               "(presence kept); an intermediate computed entry by entry from a block input is "
                               "stored in that input's blocks instead", st.span))
        previous = self.storage.get(st.target)
        if previous is not None:
            if previous.kind != out.kind:
                if _GENERALITY[out.kind] > _GENERALITY[previous.kind]:
                    raise _Restart(st.target, out.kind)
                # a value present everywhere stored into a sparse layout: every coordinate is stored
                out = replace(out, kind=previous.kind)
            out = replace(out, tag=self.fresh_tag(out))
        self.ranges = {v: dim_expr(d) for v, d in st.ranges}
        self.stmt = st
        self.order = self.order_of(st.target)
        self.acc_kind = self.accumulator(st.target)
        for v in st.idx:
            if v not in self.ranges:
                self.ranges[v] = dim_expr(out.shape[st.idx.index(v)])
        base = self.names.fresh(f"k{len(self.kernels)}_{st.target}")
        fill = self.fill_value(decl, out)
        shape = tuple(dim_expr(d) for d in out.shape)
        if out.kind in ("scalar", "oscalar"):
            def scalar_body() -> list[L.Stmt]:
                body: list[L.Stmt] = []
                val, pres = self.ev(st.value, Ctx(), body)
                if out.kind == "oscalar":
                    present = self.bind(pres, "bool", body, "w_has")
                    value = L.Op("select", (present, self.cast(val, out.dtype, st.value.dtype), fill), out.dtype)
                    body.append(L.Return((value, present)))
                    return body
                if pres != TRUE:
                    if decl is None or decl.kind != "output":
                        raise _Restart(st.target, "oscalar")
                    val = L.Op("select", (pres, self.cast(val, out.dtype, st.value.dtype), fill), out.dtype)
                body.append(L.Return((self.cast(val, out.dtype),)))
                return body

            body = self.kernel_body(scalar_body)
            self.add_kernel(base, body, self._parallel, st)
            self.host.append(L.Invoke(base, self.kernel_params(base), out.arrays, span=st.span))
        elif out.kind == "csr":
            nnz_name = self.names.fresh("w_rownnz")
            inherited = self.mask_rows(st)
            shared = self.shared_pattern(st, decl, out)
            if shared is not None:
                out = self.fill_shared(st, out, shared, base, shape)
            elif inherited is not None:
                # the pattern is the mask's: each row's count is the mask row's length, no product needed
                # (SDDMM: the symbolic phase was a parallel pass over the mask's keys)
                self.host.append(L.Alloc(nnz_name, "i64", (shape[0],), span=st.span))
                count = self.kernel_body(lambda: self.row_lengths(*inherited, nnz_name))
                self.add_kernel(base + "_count", count, False, st)
                self.fill_counted(st, out, base, shape, nnz_name)
            elif not self.one_pass(st, out, base, shape, nnz_name):
                self.two_pass(st, out, base, shape, nnz_name)
        else:
            # A bitmap's values are read only where its presence flag is set: they need no clearing. An
            # intermediate bitmap assigned once is scratch: its memory is kept for the next call, so that its
            # pages are not faulted in again (most of a bitmap's cost over compressed rows at 25-60% density).
            scratch = out.kind == "bitmap" and decl is not None and decl.kind == "temp" \
                and st.target not in self.varying
            self.host.append(L.Alloc(out.val, out.dtype, shape, None if out.kind == "bitmap" else fill,
                                     keep=scratch, span=st.span))
            if out.kind == "bitmap":
                self.host.append(L.Alloc(out.mask, "bool", shape, FALSE, keep=scratch, span=st.span))
            # written by coordinate: a row-wise reduction walked on its own needs no key order
            body = list(unorder_compacts(self.kernel_body(lambda: self.levels(st, out, "store", None))))
            if any(isinstance(x, L.Compact) and not x.ordered for x in L.walk_stmts(body)):
                self.notes.append((st.target, "key order", "as touched",
                                   f"its rows are written by coordinate into a {out.kind} result and merged with "
                                   "nothing: they are not put in order", st.span))
            self.add_kernel(base, body, self._parallel, st)
            self.host.append(L.Invoke(base, self.kernel_params(base), span=st.span))
        if out.kind in ("csr", "bitmap") and st.target not in self.varying and st.value.dtype == out.dtype:
            out = replace(out, const=self.const_value(st.value))
        if out.tag:
            # the new value replaces the old under the name's own arrays (a repeat's next iteration reads them)
            base_storage = replace(out, tag="")
            for new_name, old_name in zip(out.arrays, base_storage.arrays):
                self.host.append(L.Set(old_name, L.Var(new_name), span=st.span))
            out = base_storage
        self.storage[st.target] = out

    def alloc_csr(self, st: T.Assign, out: Storage, shape, nnz_name: str) -> None:
        """Host: the row pointer of a sparse result from its row counts, and its index and value arrays."""
        self.host.append(L.Alloc(out.ptr, "i64", (L.Op("+", (shape[0], I64_ONE), "i64"),), span=st.span))
        self.host.append(L.PrefixSum(out.ptr, nnz_name, span=st.span))
        total = L.Load(out.ptr, (shape[0],))
        # index arrays are int32 when they can be (the backend decides at run time): scipy would otherwise
        # check and convert an output's on every call, and an intermediate read row by row (triangle
        # counting's L) is half the memory traffic (R-MAT 2^16 triangles, best of 12: 82 -> 64 ms)
        narrow = L.Op("max2", (total, shape[1]), "i64") if len(shape) == 2 else None
        self.host.append(L.Alloc(out.idx, "i64", (total,), narrow=narrow, span=st.span))
        self.host.append(L.Alloc(out.val, out.dtype, (total,), span=st.span))

    def one_pass(self, st: T.Assign, out: Storage, base: str, shape, nnz_name: str) -> bool:
        """Assemble a sparse result whose rows come out of a row-wise workspace (SpGEMM's
        ``sum[k] A[i, k] * B[k, j]``) in one numeric pass instead of a symbolic and a numeric one.

        A first kernel counts each row's work (its multiply-adds, SpGEMM's flops); their prefix sum cuts the
        rows into chunks of about equal work (``row_split`` weighs a row one plus twice its work:
        on a power-law graph a row's flops can be a thousand times the median's while its entries are not),
        and a second, cheap kernel bounds each chunk's entries by its rows' work (a row has at most
        min(its multiply-adds, the width) entries). The numeric kernel then writes each
        chunk's rows one after the other into its own region of scratch arrays of that total size, and
        records the row counts; the row pointer is their prefix sum, and a last kernel copies each chunk's
        region to its place in the result. The symbolic pass cost as much as the product's traversal again
        (a quarter to a third of SpGEMM); the copy is one streaming pass over the entries, and the scratch
        arrays are kept for the next call (``L.Alloc.keep``) so their pages are not faulted in again.
        False (nothing emitted) where the rows do not come out of a workspace or do not walk compressed rows
        (chunks of contiguous rows are needed); ``compile(..., assembly="two-pass")`` keeps the two passes."""
        assembly = self.options.get("assembly", "auto")
        if assembly not in ASSEMBLIES:
            raise SdslTargetError(f"unknown assembly option {assembly!r} (one of {', '.join(ASSEMBLIES)})")
        if assembly == "two-pass" or len(st.idx) != 2:
            return False
        row, col = st.idx
        r = _row_reduce(st.value)
        if r is None or not self.row_wise(r, col, False):
            return False
        names = self.names
        nch, bounds, ub, off = names.fresh("w_nch"), names.fresh("w_bounds"), names.fresh("w_ub"), names.fresh("w_off")
        total, pos, start = names.fresh("w_bound"), names.fresh("w_pos"), names.fresh("w_start")
        tidx, tval = names.fresh("w_tidx"), names.fresh("w_tval")
        work, workptr = names.fresh("w_work"), names.fresh("w_workptr")
        width = self.ranges[col]
        chunks = {"bounds": bounds, "write": True, "weights": workptr,
                  "init": (lambda ch: L.Let(total, "i64", I64_ZERO),),
                  "fini": (lambda ch: L.Store(ub, (ch,), L.Var(total)),)}

        def row_work(c: Ctx, b: list[L.Stmt]) -> str:
            """Count the row's multiply-adds into a fresh variable (the loop over a compressed row that only
            counts becomes one subtraction of its row pointers); returns its name."""
            flops = names.fresh("w_flops")
            b.append(L.Let(flops, "i64", I64_ZERO))
            self.workspace_nest(r, col, c.with_(pattern=not _reads_values(r.body)), b,
                                lambda cc, val, bb: bb.append(
                                    L.Set(flops, L.Op("+", (L.Var(flops), I64_ONE), "i64"))))
            return flops

        def work_body() -> list[L.Stmt]:
            body: list[L.Stmt] = []

            def per_row(c: Ctx, b: list[L.Stmt]) -> None:
                b.append(L.Store(work, (L.Var(index_name(row)),), L.Var(row_work(c, b))))

            self.forall(row, [st.value], Ctx(pattern=True), body, per_row, outer=True)
            return body

        def bound_body() -> list[L.Stmt]:
            body: list[L.Stmt] = []

            def per_row(c: Ctx, b: list[L.Stmt]) -> None:
                flops = L.Load(work, (L.Var(index_name(row)),))
                b.append(L.Set(total, L.Op("+", (L.Var(total), L.Op("min2", (flops, width), "i64")), "i64")))

            self._chunks = chunks
            self.forall(row, [], Ctx(pattern=True), body, per_row, outer=True)
            self._chunks = None
            return body

        counted = self.kernel_body(work_body)
        parallel = self._parallel
        body = self.kernel_body(bound_body)
        if not chunks.get("written"):
            return False
        self.notes.append((st.target, "assembly", "one pass",
                           "its rows come out of a workspace: each chunk of rows is written once into scratch "
                           "bounded by the rows' work, then copied into place (no symbolic pass)", st.span))
        self.notes.append((st.target, "partition", "by work",
                           "the threads take chunks of contiguous rows of about equal work, a row weighing one "
                           "plus twice its multiply-adds (counted by a first pass): a heavy row of a power-law "
                           "graph gets a chunk of its own", st.span))
        n = self.ranges[row]
        host = saved_host = self.host
        host.append(L.Alloc(work, "i64", (n,), span=st.span))
        self.add_kernel(base + "_work", counted, parallel, st)
        host.append(L.Invoke(base + "_work", self.kernel_params(base + "_work"), span=st.span))
        host.append(L.Alloc(workptr, "i64", (L.Op("+", (n, I64_ONE), "i64"),), span=st.span))
        host.append(L.PrefixSum(workptr, work, span=st.span))
        host.append(L.Let(nch, "i64", chunk_count(n, self.row_tile(st, row)), span=st.span))
        host.append(L.Alloc(bounds, "i64", (L.Op("+", (L.Var(nch), I64_ONE), "i64"),), I64_ZERO, span=st.span))
        host.append(L.Alloc(ub, "i64", (L.Var(nch),), span=st.span))
        self.add_kernel(base + "_bound", body, self._parallel, st)
        host.append(L.Invoke(base + "_bound", self.kernel_params(base + "_bound"), span=st.span))
        host.append(L.Alloc(off, "i64", (L.Op("+", (L.Var(nch), I64_ONE), "i64"),), span=st.span))
        host.append(L.PrefixSum(off, ub, span=st.span))
        room = L.Load(off, (L.Var(nch),))
        # Scratch too large to be kept between calls would be page-faulted in on every call and then copied:
        # past that size a symbolic pass costs less (R-MAT 2^18 A·A, 133 M entries: 3.4 s one pass, 2.4 s two
        # passes; R-MAT 2^16, 30 M entries, scratch kept: 0.30-0.37 s one pass, 0.33-0.40 s two).
        limit = self.options.get("one_pass_max_entries", SCRATCH_KEPT_BYTES // 8)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise SdslTargetError(f"one_pass_max_entries must be a non-negative integer, not {limit!r}")
        huge = L.Op(">", (room, L.Const(limit, "i64")), "bool")
        one_pass: list[L.Stmt] = []
        host = self.host = one_pass
        host.append(L.Alloc(tidx, "i64", (room,), narrow=L.Op("max2", (room, width), "i64"), keep=True,
                            span=st.span))
        host.append(L.Alloc(tval, out.dtype, (room,), keep=True, span=st.span))
        host.append(L.Alloc(nnz_name, "i64", (shape[0],), span=st.span))

        def fill_body() -> list[L.Stmt]:
            self._chunks = {"bounds": bounds, "write": False,
                            "init": (lambda ch: L.Let(pos, "i64", L.Load(off, (ch,))),)}
            b = self.levels(st, out, "fill", nnz_name, one_pass=(pos, start, tidx, tval))
            self._chunks = None
            return b

        fill = self.kernel_body(fill_body)
        self.add_kernel(base + "_fill", fill, self._parallel, st)
        host.append(L.Invoke(base + "_fill", self.kernel_params(base + "_fill"), span=st.span))
        self.alloc_csr(st, out, shape, nnz_name)
        # each chunk's region to its rows' place in the result
        ch, at, size, src, t = (names.fresh(x) for x in ("w_chunk", "w_at", "w_len", "w_from", "w_t"))
        ch1 = L.Op("+", (L.Var(ch), I64_ONE), "i64")
        at_t = (L.Op("+", (L.Var(at), L.Var(t)), "i64"),)
        src_t = (L.Op("+", (L.Var(src), L.Var(t)), "i64"),)
        parallel = bool(self.options.get("parallel", True))
        copy = [L.For(ch, I64_ZERO, L.Var(nch), (
            L.Let(at, "i64", L.Load(out.ptr, (L.Load(bounds, (L.Var(ch),)),))),
            L.Let(size, "i64", L.Op("-", (L.Load(out.ptr, (L.Load(bounds, (ch1,)),)), L.Var(at)), "i64")),
            L.Let(src, "i64", L.Load(off, (L.Var(ch),))),
            L.For(t, I64_ZERO, L.Var(size), (L.Store(out.idx, at_t, L.Load(tidx, src_t)),
                                            L.Store(out.val, at_t, L.Load(tval, src_t)))),
        ), parallel=parallel, span=st.span)]
        self.add_kernel(base + "_place", copy, parallel, st)
        host.append(L.Invoke(base + "_place", self.kernel_params(base + "_place"), span=st.span))
        two_pass: list[L.Stmt] = []
        self.host = two_pass
        self.two_pass(st, out, base + "_big", shape, nnz_name)
        self.host = saved_host
        saved_host.append(L.If(huge, tuple(two_pass), tuple(one_pass), span=st.span))
        return True

    def two_pass(self, st: T.Assign, out: Storage, base: str, shape, nnz_name: str) -> None:
        """A sparse result in a symbolic pass (each row's entry count), a prefix sum and a numeric fill."""
        self.host.append(L.Alloc(nnz_name, "i64", (shape[0],), I64_ZERO, span=st.span))
        count = self.kernel_body(lambda: self.levels(st, out, "count", nnz_name))
        self.add_kernel(base + "_count", count, self._parallel, st)
        self.fill_counted(st, out, base, shape, nnz_name)

    def fill_counted(self, st: T.Assign, out: Storage, base: str, shape, nnz_name: str) -> None:
        """Host: run the ``_count`` kernel, allocate the result from its row counts, and fill it."""
        self.host.append(L.Invoke(base + "_count", self.kernel_params(base + "_count"), span=st.span))
        self.alloc_csr(st, out, shape, nnz_name)
        fill_body = self.kernel_body(lambda: self.levels(st, out, "fill", nnz_name))
        self.add_kernel(base + "_fill", fill_body, self._parallel, st)
        self.host.append(L.Invoke(base + "_fill", self.kernel_params(base + "_fill"), span=st.span))

    def mask_rows(self, st: T.Assign) -> tuple[Storage, L.Expr] | None:
        """``(mask storage, condition)`` when a sparse result's pattern is a CSR mask's rows exactly while the
        condition holds and empty otherwise: ``X[i, j] = e where M[i, j]`` with a structural mask over the
        result's own indices and ``e`` present everywhere once its reductions' ranges are not empty (SDDMM's
        ``sum[d] Q[i, d] * K[j, d]``); the condition is that no such range is empty."""
        e = st.value
        if not isinstance(e, T.Where) or not isinstance(e.mask, T.MaskPresent) or len(st.idx) != 2:
            return None
        m = e.mask.expr
        if not isinstance(m, T.Access) or tuple(getattr(p, "var", None) for p in m.pos if
                                                 isinstance(p, T.IndexVal)) != st.idx:
            return None
        src = self.storage.get(m.tensor)
        if src is None or src.kind != "csr" or src.tag or m.tensor == st.target:
            return None
        if not is_full(e.body, self.stored_full, assume_nonempty=True):
            return None
        cond: L.Expr = TRUE
        for x in _walk(e.body):
            if isinstance(x, T.Reduce):
                for v in x.vars:
                    cond = _and(cond, L.Op(">", (self.ranges[v], I64_ZERO), "bool"))
        self.notes.append((st.target, "pattern", f"the rows of {m.tensor}",
                           f"{st.target} is present exactly where the structural mask {m.tensor} is: its row "
                           f"lengths are the mask's, with no symbolic pass", st.span))
        return src, cond

    def shared_pattern(self, st: T.Assign, decl: T.Decl | None, out: Storage) -> Storage | None:
        """The stored matrix whose pattern arrays an intermediate can use as its own: ``T[i, j] = e`` where
        ``e`` is present exactly where one stored matrix ``A[i, j]`` is (in that index order;
        ``tensor_ir.presence.same_pattern``): an element-wise function of A and of operands present everywhere,
        ``softmax[j] A[i, j]``, ``A[i, j] where A[i, j]``. Only intermediates (an output's arrays are handed to
        the caller, who may change them), assigned once and not inside a repeat, from a matrix whose arrays are
        never replaced: compressed rows (an input, an intermediate, a transposed copy), or an input of a block
        format read in its own layout (then T is stored in A's blocks, and the statements reading T walk
        them; should one need T's compressed rows, T is lowered again without this, see ``lower``)."""
        if decl is None or decl.kind != "temp" or st.op != "=" or len(st.idx) != 2 or out.tag \
                or st.target in self.varying or self.force.get(st.target) == "csr":
            return None
        found = same_pattern(st.value, self.stored_full)
        if not isinstance(found, tuple) or found[1] != st.idx or found[0] == st.target:
            return None
        src = self.storage.get(found[0])
        if src is None or src.kind != "csr" or src.tag or found[0] in self.varying:
            return None
        if src.block is not None and (src.block.name == "csc" or self.options.get("blocks") is False):
            return None
        return src

    def fill_shared(self, st: T.Assign, out: Storage, src: Storage, base: str, shape) -> Storage:
        """Host: the result's pattern arrays are ``src``'s (a block input's block arrays, or compressed rows'
        row pointer and column indices); one kernel computes its values, walking ``src``'s rows and writing
        each value where ``src`` holds its entry. Returns the result's storage."""
        if src.block is not None:
            out = replace(out, block=src.block)
            for array, role in out.blocks:
                if role != "bval":
                    self.host.append(L.Alias(array, src.blk(role[1:]), span=st.span))
            self.host.append(L.Alloc(out.blk("val"), out.dtype, (self.block_values(src),), span=st.span))
            self._block_shared.add(st.target)
            how = f"in {src.name}'s {src.block} blocks, with its block pointers and columns"
        else:
            self.host.append(L.Alias(out.ptr, src.ptr, span=st.span))
            self.host.append(L.Alias(out.idx, src.idx, span=st.span))
            self.host.append(L.Alloc(out.val, out.dtype, (L.Load(out.ptr, (shape[0],)),), span=st.span))
            how = f"with {src.name}'s row pointer and column indices"
        body = self.kernel_body(lambda: self.levels(st, out, "fill", None, shared=src.name))
        self.add_kernel(base + "_fill", body, self._parallel, st)
        self.host.append(L.Invoke(base + "_fill", self.kernel_params(base + "_fill"), span=st.span))
        self.notes.append((st.target, "pattern", f"shared with {src.name}",
                           f"{st.target} is present exactly where {src.name} is: it is stored {how} (shared, "
                           "not copied), and only its values are computed, in one pass (no count pass, no index "
                           "written)", st.span))
        return out

    def block_values(self, s: Storage) -> L.Expr:
        """The length of a block input's flattened values (``Storage``): bsr's stored blocks times their
        size, blockdiag's rows times a block's width, nm's rows times its groups times N."""
        def op(o, a, b):
            return L.Op(o, (a, b), "i64")

        params = [L.Const(p, "i64") if isinstance(p, int) else L.Var(size_name(p)) for p in s.block.params]
        rows, cols = (dim_expr(d) for d in s.shape)
        if s.block.name == "bsr":
            bm, bn = params
            nblocks = L.Cast(L.Load(s.blk("ptr"), (op("//", rows, bm),)), "i64")
            return op("*", nblocks, op("*", bm, bn))
        if s.block.name == "blockdiag":
            return op("*", rows, op("//", cols, params[0]))
        n, m = params
        return op("*", op("*", rows, op("//", op("+", cols, op("-", m, I64_ONE)), m)), n)

    def row_lengths(self, src: Storage, cond: L.Expr, nnz_name: str) -> list[L.Stmt]:
        """``nnz[i] = (ptr[i + 1] - ptr[i]) if cond else 0`` over the rows of ``src``: a serial loop (a pass
        over the row pointers is too short to be worth waking threads for)."""
        row = self.names.fresh("x_row")
        i = L.Var(row)
        length = L.Op("-", (L.Load(src.ptr, (L.Op("+", (i, I64_ONE), "i64"),)), L.Load(src.ptr, (i,))), "i64")
        if cond != TRUE:
            length = L.Op("select", (cond, length, I64_ZERO), "i64")
        it = L.Iteration("dense", dim_expr(src.shape[0]))
        return [L.Forall(row, it, (L.Store(nnz_name, (i,), length),), span=self.stmt.span)]

    def const_value(self, e: T.Expr):
        """The value ``e`` has wherever it is present, when that is one constant (else None): a literal, a
        constant-valued sparse tensor, a cast of a bool constant or of an integer one to an integer type,
        either under a ``where``."""
        match e:
            case T.Lit(value=v):
                return v
            case T.Access(tensor=t):
                st = self.storage.get(t)
                return st.const if st is not None and st.kind in ("csr", "bitmap") else None
            case T.Where(body=b):
                return self.const_value(b)
            case T.Cast(operand=a, dtype=dt):
                v = self.const_value(a)
                if v is None or (a.dtype != "bool" and not (is_int(a.dtype) and is_int(dt))):
                    return None
                if dt == "bool":
                    return bool(v)
                return float(v) if is_float(dt) else int(v)
        return None

    def fresh_tag(self, s: Storage) -> str:
        """A suffix making ``s``'s arrays differ from every array name of the program."""
        taken = set()
        for d in list(self.decls) + list(self.storage) + list(self.tnames.taken):
            for p in ("s_", "val_", "ptr_", "idx_", "mask_", "has_"):
                taken.add(mangle(d, p))
        while True:
            self._tags += 1
            tag = f"_v{self._tags}"
            if not any(a + tag in taken for a in replace(s, tag="").arrays):
                return tag

    def fill_value(self, decl: T.Decl | None, out: Storage) -> L.Expr:
        if decl is not None and decl.kind == "output" and decl.fill is not None:
            return self.cast(L.Const(decl.fill.value, decl.fill.dtype), out.dtype)
        return self.cast(L.Const(0, "i64"), out.dtype)

    def kernel_body(self, build) -> list[L.Stmt]:
        """A kernel's statements: workspaces allocated once at its start, then what ``build`` emits."""
        self._top = []
        self._prologue = None
        self._parallel = False
        body = build()
        return self._top + body

    def add_kernel(self, name: str, body: list[L.Stmt], parallel: bool, st: T.Assign) -> None:
        params = tuple(sorted(L.free_names(body)))
        self.kernels.append(L.Kernel(name, params, tuple(body), parallel, span=st.span))

    def kernel_params(self, name: str) -> tuple[str, ...]:
        return next(k.params for k in self.kernels if k.name == name)

    # ------------------------------------------------------------ output levels

    def levels(self, st: T.Assign, out: Storage, phase: str, nnz_name: str | None,
               one_pass: tuple[str, str, str, str] | None = None, shared: str | None = None) -> list[L.Stmt]:
        """The loop nest over the result's free variables; ``phase`` is count, fill or store. ``one_pass``
        (fill only): (position, row start, index and value arrays) of ``Lowerer.one_pass``: the rows go to
        those arrays from a position each chunk starts, and their counts to ``nnz_name``. ``shared`` (fill
        only): the tensor whose pattern arrays the result shares (``fill_shared``): each value is written at
        the position of that tensor's entry, and nothing else is."""
        # the symbolic phase skips values only when presence cannot depend on them (no value mask): it must
        # count exactly the entries the numeric phase writes
        ctx = Ctx(pattern=(phase == "count" and not _reads_values(st.value)))
        body: list[L.Stmt] = []
        idx = st.idx
        loops = self.loop_indices(st, out.kind)
        count_var = self.names.fresh("w_cnt")
        pos_var = one_pass[0] if one_pass else self.names.fresh("w_pos")

        def emit_point(c: Ctx, block: list[L.Stmt]) -> None:
            val, pres = self.ev(st.value, c, block)
            action: list[L.Stmt] = []
            coords = tuple(L.Var(index_name(v)) for v in idx)
            if phase == "count":
                action.append(L.Set(count_var, L.Op("+", (L.Var(count_var), I64_ONE), "i64")))
            elif phase == "fill" and shared:
                action.append(L.Store(out.blk("val") if out.block else out.val,
                                      (self.shared_position(shared, c, out),), self.cast(val, out.dtype)))
            elif phase == "fill":
                idx_array, val_array = one_pass[2:] if one_pass else (out.idx, out.val)
                action.append(L.Store(idx_array, (L.Var(pos_var),), coords[-1]))
                action.append(L.Store(val_array, (L.Var(pos_var),), self.cast(val, out.dtype)))
                action.append(L.Set(pos_var, L.Op("+", (L.Var(pos_var), I64_ONE), "i64")))
            else:
                action.append(L.Store(out.val, coords, self.cast(val, out.dtype)))
                if out.kind == "bitmap":
                    action.append(L.Store(out.mask, coords, TRUE))
            block.extend(_guard(pres, action))

        def level(depth: int, c: Ctx, block: list[L.Stmt]) -> None:
            v = loops[depth]
            last = depth == len(loops) - 1

            def inner(c2: Ctx, b2: list[L.Stmt]) -> None:
                if last:
                    emit_point(c2, b2)
                    return
                if out.kind == "csr" and depth == len(idx) - 2:
                    row = L.Var(index_name(v))
                    if phase == "count":
                        b2.append(L.Let(count_var, "i64", I64_ZERO))
                    elif shared:
                        pass  # written at the shared tensor's positions
                    elif one_pass:
                        b2.append(L.Let(one_pass[1], "i64", L.Var(pos_var)))
                    else:
                        b2.append(L.Let(pos_var, "i64", L.Load(out.ptr, (row,))))
                    level(depth + 1, c2, b2)
                    if phase == "count":
                        b2.append(L.Store(nnz_name, (row,), L.Var(count_var)))
                    elif one_pass:
                        b2.append(L.Store(nnz_name, (row,), L.Op("-", (L.Var(pos_var), L.Var(one_pass[1])), "i64")))
                    return
                level(depth + 1, c2, b2)

            self.forall(v, [st.value], c, block, inner, outer=(depth == 0))

        if not idx:
            emit_point(ctx, body)
        else:
            level(0, ctx, body)
        return body

    def shared_position(self, src: str, c: Ctx, out: Storage) -> L.Expr:
        """Where the entry of ``src`` at the current coordinates is stored: the position of its row walk, in
        the layout ``out`` shares (a block walk's position in the flattened blocks for a result stored in
        ``src``'s blocks; any walk's position in ``src``'s compressed rows otherwise)."""
        for leaf, (cur, _always) in c.cursors.items():
            if isinstance(leaf, T.Access) and leaf.tensor == src \
                    and tuple(getattr(p, "var", None) for p in leaf.pos) == self.stmt.idx:
                if isinstance(cur, BlockPos):
                    return L.Var(cur.at)
                if out.block is None or cur.values == self.storage[src].blk("val"):
                    return L.Var(cur.pos)
        # src's row was not walked in the layout the result shares (a block input merged with another
        # operand is read in compressed rows): lower this statement without sharing
        raise _Restart(self.stmt.target, "csr")

    # ------------------------------------------------------------ loops

    def lattice(self, e: T.Expr, v: str, c: Ctx) -> Lat:
        if e in c.values:
            return ALL
        match e:
            case T.Access():
                if self.walkable(e, v, c):
                    return Lat("leaf", e)
                return ALL
            case T.Binary(op=op, lhs=a, rhs=b):
                if op in T.UNION_OPS:
                    return self.union_lattice(e, (a, b), v, c)
                return lat_and([self.lattice(a, v, c), self.lattice(b, v, c)])
            case T.Unary(operand=a) | T.Cast(operand=a):
                return self.lattice(a, v, c)
            case T.Call(fn=fn, args=args):
                if fn in T.UNION_FUNCS and len(args) == 2:
                    return self.union_lattice(e, args, v, c)
                return lat_and([self.lattice(a, v, c) for a in args])
            case T.Reduce(body=b):
                if e in c.workspaces:
                    # a workspace is a sparse vector over the one free index it is keyed by; a loop over
                    # another index (Y[i, f] = sum[j] T[i, j] * X[j, f] with T fused: the loop over f inside
                    # the walk of T's row) reads it at the cursor of its own loop
                    return Lat("leaf", WsLeaf(*c.workspaces[e])) if v in T.free_indices(e) else ALL
                if v in T.free_indices(e):
                    return self.lattice(b, v, c)
                return ALL
            case T.Softmax(body=b):
                return self.lattice(b, v, c)
            case T.TopK(body=b):
                if e in c.topk:
                    return Lat("leaf", TopKLeaf(c.topk[e]))
                # the selection is a subset of the body's present entries
                return self.lattice(b, v, c)
            case T.Where(body=b, mask=m):
                return lat_and([self.lattice(b, v, c), self.mask_lattice(m, v, c)])
        return ALL

    def union_lattice(self, e: T.Expr, operands, v: str, c: Ctx) -> Lat:
        want = set(T.free_indices(e))
        full = [x for x in operands if want <= set(T.free_indices(x))]
        if full:
            return lat_or([self.lattice(x, v, c) for x in full])
        return lat_and([self.lattice(x, v, c) for x in operands])

    def mask_lattice(self, m: T.Mask, v: str, c: Ctx) -> Lat:
        match m:
            case T.MaskPresent(expr=x) | T.MaskValue(expr=x):
                return self.lattice(x, v, c)
            case T.MaskAnd(lhs=a, rhs=b):
                return lat_and([self.mask_lattice(a, v, c), self.mask_lattice(b, v, c)])
            case T.MaskOr(lhs=a, rhs=b):
                return lat_or([self.mask_lattice(a, v, c), self.mask_lattice(b, v, c)])
        return ALL

    def walkable(self, e: T.Access, v: str, c: Ctx) -> bool:
        """``A[r, v]`` of a CSR tensor with the row a plain variable already bound: a compressed-row walk."""
        s = self.storage[e.tensor]
        if s.kind != "csr" or len(e.pos) != 2:
            return False
        row, col = e.pos
        return (isinstance(col, T.IndexVal) and col.var == v and isinstance(row, T.IndexVal)
                and row.var in c.bound and row.var != v)

    def leaves_in(self, exprs, v: str, c: Ctx) -> list:
        out: list = []
        stack = list(exprs)
        while stack:
            x = stack.pop()
            if x in c.values:
                continue
            if isinstance(x, T.Reduce) and x in c.workspaces:
                leaf = WsLeaf(*c.workspaces[x])
                if leaf not in out and v in T.free_indices(x):  # (keyed by another index: see lattice)
                    out.append(leaf)
                continue
            if isinstance(x, T.TopK) and x in c.topk:
                leaf = TopKLeaf(c.topk[x])
                if leaf not in out:
                    out.append(leaf)
                continue
            if isinstance(x, T.Access) and self.walkable(x, v, c) and x not in out:
                out.append(x)
            stack.extend(T.children(x))
        return out

    def cursor_for(self, leaf, c: Ctx) -> L.Cursor:
        name = self.names.fresh("w_c")
        if isinstance(leaf, WsLeaf):
            return L.Cursor(name, leaf.ws + "_cidx", I64_ZERO, L.Var(leaf.ws + "_n"))
        if isinstance(leaf, TopKLeaf):
            return L.Cursor(name, leaf.name + "_cidx", I64_ZERO, L.Var(leaf.name + "_n"))
        s = self.storage[leaf.tensor]
        row = L.Var(index_name(leaf.pos[0].var))
        return L.Cursor(name, s.idx, L.Load(s.ptr, (row,)),
                        L.Load(s.ptr, (L.Op("+", (row, I64_ONE), "i64"),)))

    def block_layout(self, leaf) -> bool:
        """Whether ``leaf`` (a driver walked alone) is a row of a block input read in its own layout."""
        if not isinstance(leaf, T.Access) or self.options.get("blocks") is False:
            return False
        s = self.storage[leaf.tensor]
        return s.block is not None and s.block.name != "csc" and s.tag == ""

    def block_walk(self, v: str, leaf: T.Access, c: Ctx, block: list[L.Stmt], inner) -> None:
        """Row ``i`` of a block input walked in its own layout, coordinates ascending (block iteration):

        * ``bsr(BM, BN)``: a loop over the blocks of block row ``i // BM``, and in each a walk of the ``BN``
          consecutive entries of its row ``i % BM`` (columns ``BN * block column`` on);
        * ``blockdiag(NB)``: the walk of the ``bn`` consecutive entries of row ``i`` of diagonal block
          ``i // bm``: the blocks in C order are the rows in order;
        * ``nm(N, M)``: a row whose slots are all filled, one walk over them (coordinates from the offsets,
          ``L.Cursor.groups``); another, per group of ``M`` columns its filled slots (offset >= 0).

        bsr and blockdiag rows are walks of consecutive coordinates (``L.Cursor.shift``): no index is loaded.
        The code generator treats these walks as any row walk (unroll-and-jam included). Nothing is converted
        at the call (see ``Storage``)."""
        s = self.storage[leaf.tensor]
        fmt = s.block
        w = self.names.fresh("w_b")
        row = L.Var(index_name(leaf.pos[0].var))
        col = index_name(v)
        i64 = "i64"

        def op(o, a, b):
            return L.Op(o, (a, b), i64)

        def walk(start: L.Expr, length: L.Expr, first: L.Expr) -> L.Forall:
            """The walk of ``length`` values from ``start`` in the flattened values, at columns ``first`` on."""
            cur = L.Cursor(w, s.blk("val"), start, op("+", start, length), op("-", first, start), values=s.blk("val"))
            c2 = c.with_(bound=c.bound + (v,), cursors={**c.cursors, leaf: (cur, True)})
            body: list[L.Stmt] = []
            inner(c2, body)
            return L.Forall(col, L.Iteration("intersect", None, (cur,)), tuple(body), span=self.stmt.span)

        params = [L.Const(p, i64) if isinstance(p, int) else L.Var(size_name(p)) for p in fmt.params]
        if fmt.name == "bsr":
            bm, bn = params
            # (names of their own: the code generator derives the walk's locals from the cursor's name)
            q, brow, ii = (L.Var(self.names.fresh(x)) for x in ("w_bq", "w_brow", "w_bii"))
            block.append(L.Let(brow.name, i64, op("//", row, bm)))
            block.append(L.Let(ii.name, i64, op("-", row, op("*", brow, bm))))
            start = op("*", op("+", op("*", q, bm), ii), bn)
            first = op("*", L.Cast(L.Load(s.blk("idx"), (q,)), i64), bn)
            block.append(L.For(q.name, L.Cast(L.Load(s.blk("ptr"), (brow,)), i64),
                               L.Cast(L.Load(s.blk("ptr"), (op("+", brow, I64_ONE),)), i64),
                               (walk(start, bn, first),)))
        elif fmt.name == "blockdiag":
            (nb,) = params
            bm, bn = (op("//", dim_expr(d), nb) for d in s.shape)
            block.append(walk(op("*", row, bn), bn, op("*", op("//", row, bm), bn)))
        else:
            n, m = params
            groups, full, g, t, off = (L.Var(self.names.fresh(x))
                                       for x in ("w_groups", "w_full", "w_bg", "w_bt", "w_boff"))
            block.append(L.Let(groups.name, i64, op("//", op("+", dim_expr(s.shape[1]), op("-", m, I64_ONE)), m)))
            # a row whose slots are all filled (a pruned weight's usually are) is one walk over its slots, which
            # the code generator unrolls like any row walk; another visits each slot and skips the empty ones
            first = op("*", op("*", row, groups), n)
            stop = op("+", first, op("*", groups, n))
            block.append(L.Let(full.name, "bool", TRUE))
            block.append(L.For(t.name, first, stop, (
                L.If(L.Op("<", (L.Cast(L.Load(s.blk("off"), (t,)), i64), I64_ZERO), "bool"),
                     (L.Set(full.name, FALSE),)),)))
            shift = L.Op("neg", (op("*", op("*", row, groups), m),), i64)
            cur = L.Cursor(w, s.blk("off"), first, stop, shift, (n, m), s.blk("val"))
            c2 = c.with_(bound=c.bound + (v,), cursors={**c.cursors, leaf: (cur, True)})
            body: list[L.Stmt] = []
            inner(c2, body)
            whole = L.Forall(col, L.Iteration("intersect", None, (cur,)), tuple(body), span=self.stmt.span)
            pos = BlockPos(self.names.fresh("w_bs"), s.blk("val"))
            c2 = c.with_(bound=c.bound + (v,), cursors={**c.cursors, leaf: (pos, True)})
            at = op("+", op("*", op("+", op("*", row, groups), g), n), t)
            body = [L.Let(col, i64, op("+", op("*", g, m), off)), L.Let(pos.at, i64, at)]
            inner(c2, body)
            slot = (L.Let(off.name, i64, L.Cast(L.Load(s.blk("off"), (at,)), i64)),
                    L.If(L.Op(">=", (off, I64_ZERO), "bool"), tuple(body)))
            slots = L.For(g.name, I64_ZERO, groups, (L.For(t.name, I64_ZERO, n, slot),))
            block.append(L.If(full, (whole,), (slots,)))
        self.notes.append((leaf.tensor, "layout", "block iteration",
                           f"rows of {leaf.tensor} ({fmt}) are walked in its own blocks, not converted to "
                           "compressed rows", self.stmt.span))

    def forall(self, v: str, exprs, c: Ctx, block: list[L.Stmt], inner, outer: bool = False,
               partials=()) -> None:
        """A loop over ``v`` evaluating ``exprs`` at each coordinate (see the module docstring)."""
        c = self.hoist(v, exprs, c, block)
        lat = lat_and([self.lattice(e, v, c) for e in exprs])
        leaves = self.leaves_in(exprs, v, c)
        if lat.kind == "all":
            kind, drivers = "dense", []
        else:
            req = _required(lat)
            kind, drivers = ("intersect", req) if req else ("union", _leaves(lat))
        followers = [x for x in leaves if x not in drivers]
        if kind == "intersect" and len(drivers) == 1 and not followers and self.block_layout(drivers[0]):
            self.block_walk(v, drivers[0], c, block, inner)
            return
        cursors = dict(c.cursors)
        dcur = []
        for leaf in drivers:
            cur = self.cursor_for(leaf, c)
            cursors[leaf] = (cur, kind == "intersect")
            dcur.append(cur)
        fcur = []
        for leaf in followers:
            cur = self.cursor_for(leaf, c)
            cursors[leaf] = (cur, False)
            fcur.append(cur)
        c2 = c.with_(bound=c.bound + (v,), cursors=cursors)
        lookups, membership = self.lookups(v, kind, drivers, dcur, c)
        dcur = [x for x in dcur if x not in lookups]
        iteration = L.Iteration(kind, self.ranges[v] if kind == "dense" else None, tuple(dcur), tuple(fcur),
                                tuple(lookups), membership)
        if outer and kind == "dense" and not fcur:
            self.chunked(v, c2, block, inner, partials)
            return
        # a reduction to a scalar whose outer loop turned out not to be a dense range (it walks the keys of a
        # row-wise reduction hoisted before it, as in sum[j] (max[i] A[i, j])): one serial loop, the partials
        # then plain accumulators
        block.extend(L.Let(name, dt, ident) for name, dt, ident, _op in partials)
        body: list[L.Stmt] = []
        inner(c2, body)
        block.append(L.Forall(index_name(v), iteration, tuple(body), span=self.stmt.span))

    def lookups(self, v: str, kind: str, drivers: list, cursors: list[L.Cursor],
                c: Ctx) -> tuple[list[L.Cursor], bool]:
        """Of an intersection of two tensor rows, the one that does not change in the innermost enclosing
        loop (``L[i, k]`` inside a loop over ``j`` of ``L[i, k] * L[j, k]``): scattered once into a map, it
        is then found per coordinate of the other, O(len(other)) per visit instead of O(both) by merging
        (triangle counting, masked products). A row whose values are a constant is never read at the found
        positions: a bitmap of its keys does (``membership``; R-MAT's lookups then hit the cache)."""
        if kind != "intersect" or len(drivers) != 2 or not c.bound or self.options.get("lookup") is False:
            return [], False
        inner_var = index_name(c.bound[-1])
        moving = [any(inner_var in L.expr_names(e) for e in (cur.start, cur.stop)) for cur in cursors]
        if sorted(moving) != [False, True] or not all(isinstance(d, T.Access) for d in drivers):
            return [], False
        still = cursors[moving.index(False)]
        extent = self.ranges[v]
        membership = self.storage[drivers[moving.index(False)].tensor].const is not None
        if membership:
            words = L.Op("//", (L.Op("+", (extent, L.Const(63, "i64")), "i64"), L.Const(64, "i64")), "i64")
            self.alloc_array(L.Alloc(still.name + "_bits", "i64", (words,), I64_ZERO, span=self.stmt.span))
        else:
            self.alloc_array(L.Alloc(still.name + "_map", "i64", (extent,), L.Const(-1, "i64"),
                                     span=self.stmt.span))
        for state in ("_mlo", "_mhi"):
            self.alloc_array(L.Let(still.name + state, "i64", L.Const(-1, "i64"), span=self.stmt.span))
        if not membership:
            # how often a key was found so far (hits over tries): a backend may branch or not on a hit by it
            # (a membership test loads nothing at a miss, so it needs no such choice)
            for state in ("_hit", "_try"):
                self.alloc_array(L.Let(still.name + state, "i64", I64_ZERO, span=self.stmt.span))
        return [still], membership

    def chunked(self, v: str, c: Ctx, block: list[L.Stmt], inner, partials=()) -> None:
        """The outermost dense level: chunks of rows that the threads claim one at a time (``L.For``'s dynamic
        scheduling), ``CHUNKS_PER_THREAD`` per thread so that a faster thread can take more of them, with
        workspaces allocated once per thread.

        Where the rows walk compressed rows, a chunk is a contiguous range of rows of equal work (``row_split``
        over the row pointers: a row weighs 1 plus its stored entries): on power-law and banded matrices the
        heavy rows cluster (low row numbers of an R-MAT graph, one community of ego-Facebook), and ranges of
        equal row counts left one thread with most of the work; contiguous ranges also keep each thread's
        writes to per-row arrays (row counts, dense output rows) on cache lines of their own. Otherwise (rows
        of uniform work) a chunk takes every ``nchunks``-th block of ``CHUNK_BLOCK`` rows.

        ``partials``: (name, dtype, identity, op) of scalars the rows combine into (a reduction to a scalar):
        each chunk starts its own at the identity and leaves it in a per-chunk array, and the chunks' values
        are combined in order after the loop, under the same name."""
        parallel = bool(self.options.get("parallel", True))
        self._parallel = self._parallel or parallel
        extent = self.ranges[v]
        nchunks = self.names.fresh("w_nchunks")
        nblocks = self.names.fresh("w_nblocks")
        chunk = self.names.fresh("w_chunk")
        t = self.names.fresh("w_t")
        lo, hi = self.names.fresh("w_lo"), self.names.fresh("w_hi")
        tile = self.row_tile(self.stmt, v)
        width = L.Const(tile or CHUNK_BLOCK, "i64")
        block.append(L.Let(nblocks, "i64", L.Op("//", (L.Op("+", (extent, L.Const(width.value - 1, "i64")), "i64"),
                                                        width), "i64")))
        block.append(L.Let(nchunks, "i64", chunk_count(extent, tile)))
        chunks, self._chunks = self._chunks, None
        saved = self._prologue
        self._prologue = []
        rows: list[L.Stmt] = []
        inner(c, rows)
        prologue = self._prologue
        self._prologue = saved
        ptrs = _row_pointers(rows, index_name(v))
        weights = chunks.get("weights") if chunks is not None else None
        if chunks is not None and not chunks["write"]:
            # the ranges another kernel of this statement chose (one_pass): its chunks are this one's
            b = chunks["bounds"]
            blocks_body = (L.Let(lo, "i64", L.Load(b, (L.Var(chunk),))),
                           L.Let(hi, "i64", L.Load(b, (L.Op("+", (L.Var(chunk), I64_ONE), "i64"),))),
                           L.For(index_name(v), L.Var(lo), L.Var(hi), tuple(rows)))
            count = I64_ONE
        elif ptrs or weights:
            # rows walk compressed rows: contiguous ranges of equal work (rows plus entries), so that a few
            # heavy rows of a power-law graph do not leave the other threads idle; one_pass gives the prefix
            # sum of each row's multiply-adds instead (a row then weighs one plus twice its work)
            p, q = (weights, weights) if weights else (ptrs * 2)[:2]
            at = _work_cuts(chunk, nchunks, extent, p, q)
            blocks_body = (L.Let(lo, "i64", at[0]), L.Let(hi, "i64", at[1]),
                           L.For(index_name(v), L.Var(lo), L.Var(hi), tuple(rows)))
            if chunks is not None:
                # (row_split(0) is 0: the host allocated the bounds with a zero first element)
                chunks["written"] = True
                blocks_body = (*blocks_body[:2], L.Store(chunks["bounds"], (L.Op("+", (L.Var(chunk), I64_ONE), "i64"),),
                                                         L.Var(hi)), blocks_body[2])
            count = I64_ONE
        else:
            # blocks chunk, chunk + nchunks, ...: (nblocks - chunk + nchunks - 1) // nchunks of them
            count = L.Op("//", (L.Op("+", (L.Op("-", (L.Var(nblocks), L.Var(chunk)), "i64"),
                                           L.Op("-", (L.Var(nchunks), I64_ONE), "i64")), "i64"), L.Var(nchunks)),
                         "i64")
            start = L.Op("*", (L.Op("+", (L.Var(chunk), L.Op("*", (L.Var(t), L.Var(nchunks)), "i64")), "i64"),
                               width), "i64")
            blocks_body = (
                L.Let(lo, "i64", start),
                L.Let(hi, "i64", L.Op("min2", (L.Op("+", (L.Var(lo), width), "i64"), extent), "i64")),
                L.For(index_name(v), L.Var(lo), L.Var(hi), tuple(rows)),
            )
        init = [L.Let(name, dt, ident) for name, dt, ident, _op in partials]
        parts = [self.names.fresh(f"{name}_part") for name, *_rest in partials]
        fini = [L.Store(part, (L.Var(chunk),), L.Var(name)) for part, (name, *_rest) in zip(parts, partials)]
        if chunks is not None:
            init += [f(L.Var(chunk)) for f in chunks.get("init", ())]
            fini += [f(L.Var(chunk)) for f in chunks.get("fini", ())]
        for part, (_name, dt, _ident, _op) in zip(parts, partials):
            block.append(L.Alloc(part, dt, (L.Var(nchunks),), span=self.stmt.span))
        chunk_body = (*init, L.For(t, I64_ZERO, count, blocks_body), *fini)
        block.append(L.For(chunk, I64_ZERO, L.Var(nchunks), chunk_body, parallel=parallel, setup=tuple(prologue),
                           span=self.stmt.span))
        if partials:
            total = self.names.fresh("w_part")
            merge = []
            for part, (name, dt, ident, op) in zip(parts, partials):
                block.append(L.Let(name, dt, ident))
                merge.append(L.Set(name, _combine(op, L.Var(name), L.Load(part, (L.Var(total),)), dt)))
            block.append(L.For(total, I64_ZERO, L.Var(nchunks), tuple(merge)))

    def alloc_workspace(self, ws: L.Workspace, block: list[L.Stmt]) -> None:
        if self._prologue is not None:
            self._prologue.append(ws)
        else:
            self._top.append(ws)

    # ------------------------------------------------------------ hoisting before a loop over v

    def hoist(self, v: str, exprs, c: Ctx, block: list[L.Stmt]) -> Ctx:
        bound = set(c.bound)
        values = dict(c.values)
        workspaces = dict(c.workspaces)
        softmax = dict(c.softmax)
        base_lat = lat_and([self.lattice(e, v, c) for e in exprs])
        driven = base_lat.kind != "all"
        stack = list(exprs)
        pending_softmax = []
        pending_topk = []
        topk = dict(c.topk)
        # reductions inside a softmax whose scores are cached: only their presence is still needed
        presence_only: set = set()
        while stack:
            x = stack.pop()
            if x in values or x in workspaces:
                continue
            fr = set(T.free_indices(x))
            if isinstance(x, T.Softmax) and x in softmax and softmax[x][2] is not None:
                presence_only.update(y for y in _walk(x.body) if isinstance(y, T.Reduce))
            if isinstance(x, T.Reduce):
                if v not in fr and fr <= bound:
                    cc = c.with_(values=values, workspaces=workspaces, softmax=softmax)
                    need = x not in presence_only
                    val, pres = self.ev(x, cc, block, need_value=need)
                    val = self.bind(val, x.dtype, block, "w_red") if need else val
                    values[x] = (val, self.bind(pres, "bool", block, "w_has"))
                    continue
                if v in fr and fr <= bound | {v} and self.row_wise(x, v, driven):
                    cc = c.with_(values=values, workspaces=workspaces, softmax=softmax)
                    workspaces[x] = self.workspace(x, v, cc, block)
                    continue
            if isinstance(x, T.Softmax) and x.var == v and fr <= bound | {v}:
                pending_softmax.append(x)
            if isinstance(x, T.TopK):
                if x in topk:
                    continue
                if x.var == v and fr <= bound | {v}:
                    pending_topk.append(x)
            stack.extend(T.children(x))
        c = c.with_(values=values, workspaces=workspaces)
        # inner selections first: an outer one may read them
        for tk in reversed(pending_topk):
            if tk not in topk:
                topk[tk] = self.topk_select(tk, v, c.with_(topk=topk), block)
        c = c.with_(topk=topk)
        if not c.pattern:
            for sm in reversed(pending_softmax):
                if sm not in softmax:
                    softmax[sm] = self.softmax_stats(sm, v, c.with_(softmax=softmax), block, base_lat)
        return c.with_(softmax=softmax)

    def row_wise(self, r: T.Reduce, v: str, driven: bool) -> bool:
        """Whether ``r`` is evaluated row-wise into a workspace keyed by ``v`` before the loop over ``v``:
        as an ``order`` directive places its indices (before ``v``: yes; a reduction fused in from another
        statement has indices the directive does not name), else where its operands are stored
        with a reduced index before ``v`` and nothing else drives that loop."""
        if self.order is not None and self.order.names(r.vars + (v,)):
            return r.op in WORKSPACE_REDUCTIONS and self.order.outside(r.vars, v)
        return not driven and self.wants_workspace(r, v)

    def wants_workspace(self, r: T.Reduce, v: str) -> bool:
        if r.op not in WORKSPACE_REDUCTIONS:
            return False
        for x in _walk(r.body):
            if isinstance(x, T.Access):
                seen_reduced = False
                for p in x.pos:
                    pv = _positions_vars(p)
                    if v in pv and seen_reduced:
                        return True
                    if pv & set(r.vars):
                        seen_reduced = True
        return False

    def bind(self, e: L.Expr, dtype: str, block: list[L.Stmt], hint: str) -> L.Expr:
        if isinstance(e, (L.Const, L.Var)):
            return e
        name = self.names.fresh(hint)
        block.append(L.Let(name, dtype, e))
        return L.Var(name)

    # ------------------------------------------------------------ workspaces (row-wise reductions)

    def workspace(self, r: T.Reduce, v: str, c: Ctx, block: list[L.Stmt]) -> str:
        ws = self.names.fresh("w_ws")
        kind = self.acc_kind
        op = "pattern" if c.pattern else r.op

        def point(cc: Ctx, val, b: list[L.Stmt]) -> None:
            if op == "pattern":
                b.append(L.Accumulate(ws, L.Var(index_name(v)), "pattern", None))
            else:
                b.append(L.Accumulate(ws, L.Var(index_name(v)), op, self.reduce_input(r, val)))

        nest: list[L.Stmt] = []
        self.workspace_nest(r, v, c, nest, point)
        if not c.bound and not c.pattern:
            merged = self.split_rows(r, v, ws, nest, block)
            if merged is not None:
                return (merged, _acc(r.dtype))
        reason = self.acc_reason
        if kind in ("dense", "auto"):
            ranged = _whole_range(nest, ws, index_name(v))
            if ranged is not None:
                kind, nest = "range", ranged
                reason = ("every contribution covers the whole row (the loop over the key is dense and "
                          "unguarded): a dense row without per-key presence")
        self.notes.append((self.stmt.target, "accumulator", kind, reason, self.stmt.span))
        self.alloc_workspace(L.Workspace(ws, kind, _acc(r.dtype), self.ranges[v], span=self.stmt.span), block)
        flops = None
        if kind in ("hash", "sort", "auto"):
            fname = self.names.fresh("w_flops")
            block.append(L.Let(fname, "i64", I64_ZERO))
            # the work count bounds the hash table's size, so it must not miss an entry a value mask keeps
            self.workspace_nest(r, v, c.with_(pattern=not _reads_values(r.body)), block,
                                lambda cc, val, b: b.append(
                                    L.Set(fname, L.Op("+", (L.Var(fname), I64_ONE), "i64"))))
            flops = L.Var(fname)
        block.append(L.Reset(ws, I64_ZERO, flops, span=self.stmt.span))
        block.extend(nest)
        block.append(L.Compact(ws, values=not c.pattern, span=self.stmt.span))
        return (ws, _acc(r.dtype))

    def split_rows(self, r: T.Reduce, v: str, ws: str, nest: list[L.Stmt], block: list[L.Stmt]) -> str | None:
        """A row-wise reduction that no loop encloses (``y[j] = sum[i] A[i, j] * x[i]``, column sums, in-degree
        counts) runs its rows on every thread: each thread takes a contiguous range of the rows over
        ``r.vars[0]`` (of equal work where they walk compressed rows) and combines their contributions into a
        dense row of its own that starts at the operator's identity — no workspace bookkeeping, the loop is
        scipy's scatter. Whether anything reached a key is a flag stored beside its value; where every
        contribution covers the whole row (a dense, unguarded loop over the key, as in column sums), one flag
        for the row. The thread's row goes to a row of partials; those are merged in order, key by key,
        straight into the arrays a compacted workspace leaves, which the statement reads as it would have read
        the serial one. Returns that workspace's name, or None (``block`` untouched) where the rows are not a
        plain dense loop, in serial kernels, or inside a parallel loop already."""
        if self._prologue is not None or not self.options.get("parallel", True):
            return None
        rows = index_name(r.vars[0])
        if len(nest) != 1 or not isinstance(nest[0], L.Forall) or nest[0].var != rows:
            return None
        it = nest[0].iteration
        if it.kind != "dense" or it.drivers or it.followers or it.lookups or nest[0].jam is not None:
            return None
        span, dt, width, key, extent = self.stmt.span, _acc(r.dtype), self.ranges[v], index_name(v), it.extent
        whole = _whole_range(nest, ws, key)  # the nest with "<ws>_first = False" after each whole row
        op = "sum" if r.op == "count" else r.op
        # -0.0 for a float sum: -0.0 + x is x, signed zeros included
        ident = L.Const(-0.0, dt) if op == "sum" and is_float(dt) else _identity(op, dt, r.dtype)
        part, nparts = self.names.fresh("w_part"), self.names.fresh("w_nparts")
        lo, hi = self.names.fresh("w_lo"), self.names.fresh("w_hi")
        parts = self.names.fresh("w_parts")
        k, p_ = L.Var(key), L.Var(part)
        const = (lambda x: L.Const(x, "i64"))
        if whole:
            # the row: value per key; flags: one per part, set where a row of the range contributed
            flags, touched = self.names.fresh("w_parts_has"), self.names.fresh("w_touched")
            row, row_shape, at = self.names.fresh("w_row"), (width,), (lambda key_: (key_,))
            flagged = L.Load(flags, (p_,))
        elif r.op == "count":
            # the row: a count per key, which is its own flag (a key nothing reached counts 0)
            row_shape, at, row = (width,), (lambda key_: (p_, key_)), parts
            flagged = L.Op("!=", (L.Load(parts, (p_, k)), I64_ZERO), "bool")
        else:
            # the row: (value, flag) per key, side by side, so that the flag's store hits the cache line the
            # value's brought in (a separate flag array cost a third more than the scatter itself); the
            # thread's row of partials itself (a scatter does not vectorize: no copy of its own is needed)
            row_shape, at, row = (width, const(2)), (lambda key_: (p_, key_, I64_ZERO)), parts
            flagged = L.Cast(L.Load(parts, (p_, k, I64_ONE)), "bool")
        one = L.Const(True if dt == "bool" else 1, dt)

        def scatter(stmts) -> tuple[L.Stmt, ...]:
            out: list[L.Stmt] = []
            for s in stmts:
                if isinstance(s, L.Accumulate) and s.ws == ws:
                    out.append(L.Store(row, at(s.key), _combine(op, L.Load(row, at(s.key)), s.value, dt), span=span))
                    if len(row_shape) == 2:
                        out.append(L.Store(row, (p_, s.key, I64_ONE), one, span=span))
                elif isinstance(s, L.Set) and s.name == ws + "_first":
                    out.append(L.Set(touched, TRUE))
                elif isinstance(s, (L.Forall, L.For)):
                    out.append(replace(s, body=scatter(s.body)))
                elif isinstance(s, L.If):
                    out.append(replace(s, then=scatter(s.then), orelse=scatter(s.orelse)))
                else:
                    out.append(s)
            return tuple(out)

        ptrs = _row_pointers(list(nest[0].body), rows)
        if ptrs:
            p, q = (ptrs * 2)[:2]
            cuts = _work_cuts(part, nparts, extent, p, q)
        else:
            cuts = [L.Op("//", (L.Op("*", (extent, L.Op("+", (p_, const(c)), "i64")), "i64"), L.Var(nparts)), "i64")
                    for c in (0, 1)]
        dense = (lambda *body: L.Forall(key, L.Iteration("dense", width), tuple(body), span=span))
        zero = L.Const(False if dt == "bool" else 0, dt)
        cut = [L.Let(lo, "i64", cuts[0]), L.Let(hi, "i64", cuts[1])]
        if whole:
            # the thread's own row (allocated in the loop: LLVM knows it overlaps no input, so that the dense
            # loop over the key vectorizes), copied to the partials at the end
            body = [L.Alloc(row, dt, (width,), span=span), dense(L.Store(row, at(k), ident)), *cut,
                    L.Let(touched, "bool", FALSE),
                    L.For(rows, L.Var(lo), L.Var(hi), scatter(whole[0].body), span=span),
                    L.Store(flags, (p_,), L.Var(touched)),
                    dense(L.Store(parts, (p_, k), L.Load(row, (k,))))]
        else:
            first = (L.Store(parts, at(k), ident),) + ((L.Store(parts, (p_, k, I64_ONE), zero),)
                                                        if len(row_shape) == 2 else ())
            body = [dense(*first), *cut, L.For(rows, L.Var(lo), L.Var(hi), scatter(nest[0].body), span=span)]
        block.append(L.Let(nparts, "i64", L.Op("max2", (L.Op("min2", (L.Var("nthreads"), extent), "i64"), I64_ONE),
                                                "i64")))
        block.append(L.Alloc(parts, dt, (L.Var(nparts),) + row_shape, span=span))
        if whole:
            block.append(L.Alloc(flags, "bool", (L.Var(nparts),), span=span))
        block.append(L.For(part, I64_ZERO, L.Var(nparts), tuple(body), parallel=True, span=span))
        self._parallel = True
        # the merge (a count adds the parts' counts), into the arrays a compacted workspace leaves
        merged = self.names.fresh("w_ws")
        n, acc, has = merged + "_n", self.names.fresh("w_acc"), self.names.fresh("w_has")
        take = (L.Set(acc, _combine(op, L.Var(acc), L.Load(parts, (p_, k) if whole else at(k)), dt)),
                L.Set(has, TRUE))
        keep = (L.Store(merged + "_cidx", (L.Var(n),), k), L.Store(merged + "_cval", (L.Var(n),), L.Var(acc)),
                L.Set(n, L.Op("+", (L.Var(n), I64_ONE), "i64")))
        block.extend((L.Let(n, "i64", I64_ZERO), L.Alloc(merged + "_cidx", "i64", (width,), span=span),
                      L.Alloc(merged + "_cval", dt, (width,), span=span),
                      dense(L.Let(acc, dt, ident), L.Let(has, "bool", FALSE),
                            L.For(part, I64_ZERO, L.Var(nparts), (L.If(flagged, take),)), L.If(L.Var(has), keep))))
        self._split[self.stmt.target] = r.vars[0]
        self.notes.append((self.stmt.target, "parallel", f"rows of {r.vars[0]} split over the threads",
                           f"no loop encloses the reduction over {r.vars[0]}: each thread combines a range of its "
                           "rows into a dense row of partial results, merged in order after", span))
        return merged

    def workspace_nest(self, r: T.Reduce, v: str, c: Ctx, block: list[L.Stmt], point) -> None:
        vars_ = list(r.vars) + [v]

        def loop(depth: int, cc: Ctx, b: list[L.Stmt]) -> None:
            def inner(c2: Ctx, b2: list[L.Stmt]) -> None:
                if depth + 1 < len(vars_):
                    loop(depth + 1, c2, b2)
                    return
                val, pres = self.ev(r.body, c2, b2, need_value=not c2.pattern)
                action: list[L.Stmt] = []
                point(c2, val, action)
                b2.extend(_guard(pres, action))

            self.forall(vars_[depth], [r.body], cc, b, inner)

        loop(0, c, block)

    def reduce_input(self, r: T.Reduce, val: L.Expr) -> L.Expr:
        if r.op == "count":
            return L.Const(1, r.dtype)
        if r.op in ("any", "all"):
            return self.cast(self.truthy(val, r.body.dtype), r.dtype)
        return self.cast(val, _acc(r.dtype), r.body.dtype)

    # ------------------------------------------------------------ top-k selections

    def alloc_array(self, a: L.Alloc) -> None:
        """A scratch array allocated once per kernel (per chunk of rows in a parallel kernel)."""
        if self._prologue is not None:
            self._prologue.append(a)
        else:
            self._top.append(a)

    def topk_select(self, tk: T.TopK, v: str, c: Ctx, block: list[L.Stmt]) -> str:
        """Collect the present entries of ``tk.body`` along ``v`` with their rank keys, then select (spec § 5
        rule 8: by value, ties to the lower index, NaN the smallest; within runs of ``group``)."""
        name = self.names.fresh("w_tk")
        extent = self.ranges[v]
        body_dt = tk.body.dtype
        key_dt = "f64" if is_float(body_dt) else "i64"
        for suffix, dt in (("_j", "i64"), ("_key", key_dt), ("_cls", "i64"), ("_ord", "i64"), ("_sel", "bool"),
                           ("_cidx", "i64")):
            self.alloc_array(L.Alloc(name + suffix, dt, (extent,), span=self.stmt.span))
        cnt = self.names.fresh("w_tkn")
        block.append(L.Let(cnt, "i64", I64_ZERO))
        at = L.Var(cnt)

        def collect(cc: Ctx, b: list[L.Stmt]) -> None:
            val, pres = self.ev(tk.body, cc, b)
            action: list[L.Stmt] = []
            x = self.bind(self.cast(val, key_dt, body_dt), key_dt, action, "w_tkx")
            if is_float(body_dt):
                nan = L.Op("isnan", (x,), "bool")
                cls = L.Op("select", (nan, L.Const(2 if tk.largest else 0, "i64"), I64_ONE), "i64")
                ordered = L.Op("neg", (x,), "f64") if tk.largest else x
                key = L.Op("select", (nan, L.Const(0.0, "f64"), ordered), "f64")
            else:
                cls = I64_ONE
                # ~x = -x - 1 orders descending without overflow (wrapping arithmetic)
                key = L.Op("-", (L.Op("neg", (x,), "i64"), I64_ONE), "i64") if tk.largest else x
            action += [L.Store(name + "_j", (at,), L.Var(index_name(v))), L.Store(name + "_key", (at,), key),
                       L.Store(name + "_cls", (at,), cls), L.Set(cnt, L.Op("+", (at, I64_ONE), "i64"))]
            b.extend(_guard(pres, action))

        self.forall(v, [tk.body], c, block, collect)
        kval, _ = self.ev(tk.k, c, block)
        block.append(L.TopKSelect(name, at, self.cast(kval, "i64", tk.k.dtype), tk.group, span=self.stmt.span))
        return name

    # ------------------------------------------------------------ softmax statistics

    def softmax_stats(self, sm: T.Softmax, v: str, c: Ctx, block: list[L.Stmt], reader: Lat = ALL):
        """The row's shift (its maximum, 0 for a row of -inf) and sum of exponentials, before the row is visited.

        A body with a reduction in it (a sampled dot product: attention) is computed once per coordinate,
        in the first pass, into a row cache; the sum pass replaces each score by its exponential, which the
        points that read the softmax load and divide by the sum (their presence is still evaluated, without
        values). The cache is indexed by the position in the row of the one sparse operand that drives the
        body, when that operand also drives the reading loop (``reader``, its lattice): every pass then stands
        on the same position at a present coordinate, and a row's scores lie side by side in the cache
        instead of scattered over the row's width (R-MAT 2^18 attention: median 441 -> 403 ms, best of six
        equal; no change on the sample matrices). Otherwise the cache is indexed by the coordinate."""
        work = _float_work(sm.dtype)
        m = self.names.fresh("w_max")
        s = self.names.fresh("w_sum")
        cache = None
        leaf = None
        if any(isinstance(x, T.Reduce) for x in _walk(sm.body)):
            cache = self.names.fresh("w_row")
            self.alloc_array(L.Alloc(cache, work, (self.ranges[v],), span=self.stmt.span))
            own = _required(self.lattice(sm.body, v, c))
            # (not a block input's: its rows may be walked in blocks by one pass and as rows by another)
            if (len(own) == 1 and isinstance(own[0], T.Access) and _required(reader) == own
                    and not self.block_layout(own[0])):
                leaf = own[0]
            self.notes.append((self.stmt.target, "softmax", "row cache",
                               f"the scores along '{v}' are computed once per row and kept for the "
                               "normalization passes" + (f", by position in the rows of {leaf.tensor}"
                                                         if leaf is not None else ""), self.stmt.span))
        block.append(L.Let(m, work, L.Const(float("-inf"), work)))

        def pass_max(cc: Ctx, b: list[L.Stmt]) -> None:
            val, pres = self.ev(sm.body, cc, b)
            x = self.cast(val, work, sm.body.dtype)
            action: list[L.Stmt] = []
            if cache is not None:
                x = self.bind(x, work, action, "w_score")
                action.append(L.Store(cache, _cache_slot(cc, v, leaf), x))
            action.append(L.Set(m, L.Op("max2", (L.Var(m), x), work)))
            b.extend(_guard(pres, action))

        self.forall(v, [sm.body], c, block, pass_max)
        shift = self.names.fresh("w_shift")
        # max-subtracted as spec § 5.7 writes it, also for a +inf maximum (the row is NaN, as scipy's and
        # torch's softmax give); a row of -inf keeps shift 0 (exp gives 0, the row 0 / 0 = NaN either way)
        some = L.Op("!=", (L.Var(m), L.Const(float("-inf"), work)), "bool")
        block.append(L.Let(shift, work, L.Op("select", (some, L.Var(m), L.Const(0.0, work)), work)))
        block.append(L.Let(s, work, L.Const(0.0, work)))

        def pass_sum(cc: Ctx, b: list[L.Stmt]) -> None:
            if cache is not None:
                _, pres = self.ev(sm.body, cc, b, need_value=False)
                val = L.Load(cache, _cache_slot(cc, v, leaf))
            else:
                val, pres = self.ev(sm.body, cc, b)
            e = L.Op("exp", (L.Op("-", (self.cast(val, work, sm.body.dtype if cache is None else work),
                                        L.Var(shift)), work),), work)
            action: list[L.Stmt] = []
            if cache is not None:
                # the cache now keeps the exponential: the reader divides by the sum and computes no exp
                e = self.bind(e, work, action, "w_exp")
                action.append(L.Store(cache, _cache_slot(cc, v, leaf), e))
            action.append(L.Set(s, L.Op("+", (L.Var(s), e), work)))
            b.extend(_guard(pres, action))

        self.forall(v, [sm.body], c, block, pass_sum)
        return (L.Var(shift), L.Var(s), cache, leaf)

    # ------------------------------------------------------------ expressions at a point

    def ev(self, e: T.Expr, c: Ctx, block: list[L.Stmt], need_value: bool = True) -> tuple[L.Expr, L.Expr]:
        """(value, presence) of ``e`` at the current coordinates. An absent entry's value is never read."""
        if e in c.values:
            return c.values[e]
        match e:
            case T.Lit(value=value, dtype=dtype):
                return L.Const(value, dtype), TRUE
            case T.ScalarRef(name=name, dtype=dtype, is_size=True):
                return self.cast(L.Var(size_name(name)), dtype), TRUE
            case T.ScalarRef(name=name, dtype=dtype):
                s = self.storage[name]
                pres = L.Var(s.mask) if s.kind == "oscalar" else TRUE
                return self.cast(L.Var(s.val), dtype, s.dtype), pres
            case T.IndexVal(var=var, dtype=dtype):
                return self.cast(L.Var(index_name(var)), dtype, "i64"), TRUE
            case T.Access():
                return self.access(e, c, block)
            case T.Binary():
                return self.shallow(*self.binary(e, c, block, need_value), e.dtype, block)
            case T.Unary(op=op, operand=a, dtype=dtype):
                v, p = self.ev(a, c, block, need_value)
                if op == "not":
                    return self.cast(L.Op("not", (self.truthy(v, a.dtype),), "bool"), dtype), p
                if op == "-":
                    w = _compute(dtype)
                    return self.cast(L.Op("neg", (self.cast(v, w, a.dtype),), w), dtype), p
                return self.cast(v, dtype, a.dtype), p
            case T.Cast(operand=a, dtype=dtype):
                v, p = self.ev(a, c, block, need_value)
                return self.cast(v, dtype, a.dtype), p
            case T.Call():
                return self.call(e, c, block, need_value)
            case T.Reduce():
                if e in c.workspaces:
                    return self.cursor_value(WsLeaf(*c.workspaces[e]), c, e.dtype)
                return self.reduce_point(e, c, block, need_value)
            case T.Softmax(body=b, dtype=dtype):
                if c.pattern or not need_value:
                    _, p = self.ev(b, c, block, need_value)
                    return L.Const(0, dtype), p
                if e not in c.softmax:
                    raise _Materialize(e)
                shift, total, cache, leaf = c.softmax[e]
                work = _float_work(dtype)
                if cache is not None:
                    # the sum pass left exp(score - shift) in the row cache
                    _, p = self.ev(b, c, block, need_value=False)
                    ex = L.Load(cache, _cache_slot(c, e.var, leaf))
                else:
                    v, p = self.ev(b, c, block, need_value)
                    ex = L.Op("exp", (L.Op("-", (self.cast(v, work, b.dtype), shift), work),), work)
                return self.cast(L.Op("/", (ex, total), work), dtype), p
            case T.Fill(body=b, value=fv, dtype=dtype):
                v, p = self.ev(b, c, block, need_value)
                f, _ = self.ev(fv, c, block, need_value)
                return L.Op("select", (p, self.cast(v, dtype, b.dtype), self.cast(f, dtype, fv.dtype)), dtype), TRUE
            case T.Where(body=b, mask=m):
                v, p = self.ev(b, c, block, need_value)
                return v, _and(p, self.mask(m, c, block))
            case T.TopK():
                if e not in c.topk:
                    raise _Materialize(e)
                return self.cursor_value(TopKLeaf(c.topk[e]), c, "bool")
        raise Refused(f"{type(e).__name__} expressions are not supported yet")

    def shallow(self, val: L.Expr, pres: L.Expr, dtype: str, block: list[L.Stmt]) -> tuple[L.Expr, L.Expr]:
        """``(val, pres)``, each bound to a local once it nests ``MAX_DEPTH`` operators deep: the generated
        Python nests a parenthesis per operator and stops at 200 (a sum of hundreds of terms is that deep)."""
        if _ldepth(val) >= MAX_DEPTH:
            val = self.bind(val, getattr(val, "dtype", dtype), block, "w_part")
        if _ldepth(pres) >= MAX_DEPTH:
            pres = self.bind(pres, "bool", block, "w_part_has")
        return val, pres

    def mask(self, m: T.Mask, c: Ctx, block: list[L.Stmt]) -> L.Expr:
        match m:
            case T.MaskPresent(expr=x):
                return self.ev(x, c, block, need_value=False)[1]
            case T.MaskValue(expr=x):
                v, p = self.ev(x, c, block)
                return _and(p, self.truthy(v, x.dtype))
            case T.MaskNot(mask=a):
                return _not(self.mask(a, c, block))
            case T.MaskAnd(lhs=a, rhs=b):
                return _and(self.mask(a, c, block), self.mask(b, c, block))
            case T.MaskOr(lhs=a, rhs=b):
                return _or(self.mask(a, c, block), self.mask(b, c, block))
        raise Refused(f"mask {type(m).__name__} is not supported")

    def cursor_value(self, leaf, c: Ctx, dtype: str, stored: str | None = None):
        cur, always = c.cursors[leaf]
        if isinstance(leaf, TopKLeaf):
            return TRUE, TRUE if always else L.Var(cur.found)
        const = None
        if isinstance(leaf, WsLeaf):
            array = leaf.ws + "_cval"
            stored = leaf.dtype
        else:
            array = self.storage[leaf.tensor].val
            const = self.storage[leaf.tensor].const
        if isinstance(cur, BlockPos):
            array, at = cur.val, cur.at
        else:
            at = cur.pos
            if cur.values is not None:
                array = cur.values  # a walk of a block input's own layout
        pres = TRUE if always else L.Var(cur.found)
        load = L.Load(array, (L.Var(at),)) if const is None else L.Const(const, stored or dtype)
        val = load if always else L.Op("select", (pres, load, self.zero(stored or dtype)), stored or dtype)
        return self.cast(val, dtype, stored or dtype), pres

    def position(self, p: T.Expr, extent: Dim, c: Ctx, block) -> tuple[L.Expr, L.Expr]:
        """A coordinate and whether it is present and inside ``[0, extent)``."""
        if isinstance(p, T.IndexVal) and p.var in c.bound:
            return L.Var(index_name(p.var)), TRUE
        v, pres = self.ev(p, c, block)
        v = self.bind(self.cast(v, "i64", p.dtype), "i64", block, "w_at")
        inside = _and(L.Op(">=", (v, I64_ZERO), "bool"), L.Op("<", (v, dim_expr(extent)), "bool"))
        ok = self.bind(_and(pres, inside), "bool", block, "w_in")
        return L.Op("select", (ok, v, I64_ZERO), "i64"), ok

    def access(self, e: T.Access, c: Ctx, block) -> tuple[L.Expr, L.Expr]:
        s = self.storage[e.tensor]
        if s.kind == "scalar":
            return self.cast(L.Var(s.val), e.dtype, s.dtype), TRUE
        if s.kind == "oscalar":
            return self.cast(L.Var(s.val), e.dtype, s.dtype), L.Var(s.mask)
        if s.kind == "csr" and e in c.cursors:
            return self.cursor_value(e, c, e.dtype, s.dtype)
        coords, pres = [], TRUE
        for p, d in zip(e.pos, s.shape):
            cv, cp = self.position(p, d, c, block)
            coords.append(cv)
            pres = _and(pres, cp)
        if s.kind in ("dense", "bitmap"):
            if s.kind == "bitmap":
                pres = _and(pres, L.Load(s.mask, tuple(coords)))
                pres = self.bind(pres, "bool", block, "w_has")
            load = L.Load(s.val, tuple(coords)) if s.const is None else L.Const(s.const, s.dtype)
            val = load if pres == TRUE else L.Op("select", (pres, load, self.zero(s.dtype)), s.dtype)
            return self.cast(val, e.dtype, s.dtype), pres
        row, col = coords
        start = L.Load(s.ptr, (row,))
        stop = L.Load(s.ptr, (L.Op("+", (row, I64_ONE), "i64"),))
        found = L.Locate(s.idx, start, stop, col)
        if pres != TRUE:
            found = L.Op("select", (pres, found, L.Const(-1, "i64")), "i64")
        at = self.bind(found, "i64", block, "w_at")
        has = L.Op(">=", (at, I64_ZERO), "bool")
        load = L.Load(s.val, (at,)) if s.const is None else L.Const(s.const, s.dtype)
        val = L.Op("select", (has, load, self.zero(s.dtype)), s.dtype)
        return self.cast(val, e.dtype, s.dtype), has

    def binary(self, e: T.Binary, c: Ctx, block, need_value: bool):
        va, pa = self.ev(e.lhs, c, block, need_value)
        vb, pb = self.ev(e.rhs, c, block, need_value)
        od = promote(e.lhs.dtype, e.rhs.dtype)
        if e.op in T.UNION_OPS:
            pres = self.union_presence(e, (e.lhs, e.rhs), (pa, pb))
            va = va if pa == TRUE else L.Op("select", (pa, va, self.zero(e.lhs.dtype)), e.lhs.dtype)
            vb = vb if pb == TRUE else L.Op("select", (pb, vb, self.zero(e.rhs.dtype)), e.rhs.dtype)
        else:
            pres = _and(pa, pb)
        if not need_value:
            return L.Const(0, e.dtype), pres
        return self.arith(e.op, va, vb, e.lhs.dtype, e.rhs.dtype, e.dtype, od), pres

    def arith(self, op: str, va, vb, da: str, db: str, dtype: str, od: str) -> L.Expr:
        if op in T.COMPARISONS:
            return L.Op(op, (self.cast(va, od, da), self.cast(vb, od, db)), "bool")
        if op in ("and", "or") or (op in ("&", "|") and (dtype == "bool" or is_float(dtype))):
            logical = {"&": "and", "|": "or"}.get(op, op)
            return self.cast(L.Op(logical, (self.truthy(va, da), self.truthy(vb, db)), "bool"), dtype)
        if op in ("&", "|"):
            return L.Op(op, (self.cast(va, dtype, da), self.cast(vb, dtype, db)), dtype)
        if op == "/":
            work = dtype if is_float(dtype) else "f64"
            return self.cast(L.Op("/", (self.cast(va, work, da), self.cast(vb, work, db)), work), dtype)
        work = _compute(dtype)
        return self.cast(L.Op(op, (self.cast(va, work, da), self.cast(vb, work, db)), work), dtype)

    def union_presence(self, e: T.Expr, operands, presences) -> L.Expr:
        want = set(T.free_indices(e))
        full = [p for x, p in zip(operands, presences) if want <= set(T.free_indices(x))]
        if not full:
            out = TRUE
            for p in presences:
                out = _and(out, p)
            return out
        out = FALSE
        for p in full:
            out = _or(out, p)
        return out

    def call(self, e: T.Call, c: Ctx, block, need_value: bool):
        args = [self.ev(a, c, block, need_value) for a in e.args]
        dtype = e.dtype
        if len(args) == 1:
            (v, p), a = args[0], e.args[0]
            if not need_value:
                return L.Const(0, dtype), p
            if e.fn in ("abs", "sign", "relu"):
                w = _compute(dtype)
                return self.cast(L.Op(e.fn, (self.cast(v, w, a.dtype),), w), dtype), p
            if e.fn in ("floor", "ceil") and not is_float(dtype) and not is_float(a.dtype):
                return self.cast(v, dtype, a.dtype), p
            w = _float_work(dtype)
            return self.cast(L.Op(e.fn, (self.cast(v, w, a.dtype),), w), dtype), p
        if e.fn in T.UNION_FUNCS and len(args) == 2:
            (va, pa), (vb, pb) = args
            pres = self.union_presence(e, e.args, (pa, pb))
            if not need_value:
                return L.Const(0, dtype), pres
            w = _compute(dtype)
            xa = self.cast(va, w, e.args[0].dtype)
            xb = self.cast(vb, w, e.args[1].dtype)
            both = L.Op("max2" if e.fn == "max" else "min2", (xa, xb), w)
            val = L.Op("select", (_and(pa, pb), both, L.Op("select", (pa, xa, xb), w)), w)
            return self.cast(val, dtype), pres
        pres = TRUE
        for _v, p in args:
            pres = _and(pres, p)
        if not need_value:
            return L.Const(0, dtype), pres
        if e.fn == "pow":
            (va, _), (vb, _) = args
            w = _compute(dtype)
            return self.cast(L.Op("pow", (self.cast(va, w, e.args[0].dtype), self.cast(vb, w, e.args[1].dtype)),
                                  w), dtype), pres
        if e.fn == "select":
            (vc, _), (va, _), (vb, _) = args
            return L.Op("select", (self.truthy(vc, e.args[0].dtype), self.cast(va, dtype, e.args[1].dtype),
                                   self.cast(vb, dtype, e.args[2].dtype)), dtype), pres
        raise Refused(f"function {e.fn} of {len(args)} arguments is not supported")

    # ------------------------------------------------------------ reductions at a point

    def reduce_point(self, r: T.Reduce, c: Ctx, block, need_value: bool):
        op = r.op
        scalar = not T.free_indices(r)
        has = self.names.fresh("w_has")
        block.append(L.Let(has, "bool", FALSE))
        if c.pattern or not need_value:
            def only_presence(cc, val, pres, b):
                b.extend(_guard(pres, [L.Set(has, TRUE)]))

            self.reduce_nest(r, c, block, only_presence, need_value=False)
            return L.Const(0, r.dtype), TRUE if scalar else L.Var(has)
        acc = self.names.fresh("w_acc")
        result: L.Expr
        if op in ("sum", "prod", "max", "min", "count", "any", "all"):
            w = _acc(r.dtype) if op not in ("any", "all") else "bool"

            def combine(cc, val, pres, b):
                x = self.reduce_input(r, val) if op in ("count", "any", "all") else self.cast(val, w, r.body.dtype)
                b.extend(_guard(pres, [L.Set(acc, _combine(op, L.Var(acc), x, w)), L.Set(has, TRUE)]))

            if scalar and not c.bound and self.lattice(r.body, r.vars[0], c).kind == "all":
                # a reduction to a scalar outside every loop: its outermost index is split over threads,
                # each chunk of rows reducing into its own partial (reassociation, which spec § 5 allows)
                block.pop()
                partials = ((acc, w, _identity(op, w, r.dtype), op), (has, "bool", FALSE, "any"))
                self.reduce_nest(r, c, block, combine, partials=partials)
            else:
                block.append(L.Let(acc, w, _identity(op, w, r.dtype)))
                self.reduce_nest(r, c, block, combine)
            result = self.cast(L.Var(acc), r.dtype, w)
        elif op in ("mean", "var", "std"):
            w = _float_work(r.dtype)
            n = self.names.fresh("w_n")
            block.append(L.Let(acc, w, L.Const(0.0, w)))
            block.append(L.Let(n, w, L.Const(0.0, w)))

            def add(cc, val, pres, b):
                b.extend(_guard(pres, [L.Set(acc, L.Op("+", (L.Var(acc), self.cast(val, w, r.body.dtype)), w)),
                                       L.Set(n, L.Op("+", (L.Var(n), L.Const(1.0, w)), w)),
                                       L.Set(has, TRUE)]))

            self.reduce_nest(r, c, block, add)
            mean = self.bind(L.Op("/", (L.Var(acc), L.Var(n)), w), w, block, "w_mean")
            if op == "mean":
                result = self.cast(mean, r.dtype, w)
            else:
                sq = self.names.fresh("w_sq")
                block.append(L.Let(sq, w, L.Const(0.0, w)))

                def centered(cc, val, pres, b):
                    d = L.Op("-", (self.cast(val, w, r.body.dtype), mean), w)
                    b.extend(_guard(pres, [L.Set(sq, L.Op("+", (L.Var(sq), L.Op("*", (d, d), w)), w))]))

                self.reduce_nest(r, c, block, centered)
                var = L.Op("/", (L.Var(sq), L.Var(n)), w)
                result = self.cast(var if op == "var" else L.Op("sqrt", (var,), w), r.dtype, w)
        elif op in ("argmax", "argmin"):
            w = _compute(r.body.dtype)
            best = self.names.fresh("w_best")
            block.append(L.Let(best, w, self.zero(w)))
            block.append(L.Let(acc, "i64", L.Const(-1, "i64")))
            flat = I64_ZERO
            for var in r.vars:
                flat = L.Op("+", (L.Op("*", (flat, self.ranges[var]), "i64"), L.Var(index_name(var))), "i64")
            cmp = ">" if op == "argmax" else "<"

            def pick(cc, val, pres, b):
                x = self.cast(val, w, r.body.dtype)
                better = L.Op(cmp, (x, L.Var(best)), "bool")
                if is_float(w):
                    better = _or(better, _and(L.Op("isnan", (x,), "bool"),
                                              _not(L.Op("isnan", (L.Var(best),), "bool"))))
                take = _or(_not(L.Var(has)), better)
                b.extend(_guard(pres, [L.If(take, (L.Set(best, x), L.Set(acc, flat))), L.Set(has, TRUE)]))

            self.reduce_nest(r, c, block, pick)
            result = self.cast(L.Var(acc), r.dtype, "i64")
        elif op == "logsumexp":
            w = _float_work(r.dtype)
            m = self.names.fresh("w_max")
            block.append(L.Let(m, w, L.Const(float("-inf"), w)))

            def pmax(cc, val, pres, b):
                b.extend(_guard(pres, [L.Set(m, L.Op("max2", (L.Var(m), self.cast(val, w, r.body.dtype)), w)),
                                       L.Set(has, TRUE)]))

            self.reduce_nest(r, c, block, pmax)
            finite = L.Op("==", (L.Op("-", (L.Var(m), L.Var(m)), w), L.Const(0.0, w)), "bool")
            shift = self.bind(L.Op("select", (finite, L.Var(m), L.Const(0.0, w)), w), w, block, "w_shift")
            block.append(L.Let(acc, w, L.Const(0.0, w)))

            def psum(cc, val, pres, b):
                ex = L.Op("exp", (L.Op("-", (self.cast(val, w, r.body.dtype), shift), w),), w)
                b.extend(_guard(pres, [L.Set(acc, L.Op("+", (L.Var(acc), ex), w))]))

            self.reduce_nest(r, c, block, psum)
            result = self.cast(L.Op("+", (L.Op("log", (L.Var(acc),), w), shift), w), r.dtype, w)
        else:
            raise Refused(f"reduction {op} is not supported")
        value = self.bind(result, r.dtype, block, "w_red")
        return value, TRUE if scalar else L.Var(has)

    def reduce_nest(self, r: T.Reduce, c: Ctx, block, point, need_value: bool = True, partials=()) -> None:
        vars_ = list(r.vars)

        def loop(depth: int, cc: Ctx, b: list[L.Stmt]) -> None:
            def inner(c2: Ctx, b2: list[L.Stmt]) -> None:
                if depth + 1 < len(vars_):
                    loop(depth + 1, c2, b2)
                    return
                val, pres = self.ev(r.body, c2, b2, need_value=need_value)
                point(c2, val, pres, b2)

            self.forall(vars_[depth], [r.body], cc, b, inner, outer=bool(partials) and depth == 0,
                        partials=partials if depth == 0 else ())

        loop(0, c, block)

    # ------------------------------------------------------------ small helpers

    def cast(self, e: L.Expr, dtype: str, src: str | None = None) -> L.Expr:
        if src == dtype:
            return e
        if isinstance(e, L.Const):
            v = e.value
            if dtype == "bool":
                return L.Const(bool(v), "bool")
            if is_int(dtype) and isinstance(v, (bool, int)):
                return L.Const(int(v), dtype)
            if is_float(dtype) and isinstance(v, (bool, int, float)):
                return L.Const(float(v), dtype)
            return L.Cast(e, dtype)
        if isinstance(e, L.Op) and e.dtype == dtype and e.op not in ("select",):
            return e
        if isinstance(e, L.Cast) and e.dtype == dtype:
            return e
        return L.Cast(e, dtype)

    def truthy(self, e: L.Expr, dtype: str) -> L.Expr:
        return e if dtype == "bool" else self.cast(e, "bool", dtype)

    def zero(self, dtype: str) -> L.Expr:
        return L.Const(False if dtype == "bool" else 0.0 if is_float(dtype) else 0, dtype)


# ---------------------------------------------------------------- module-level helpers

def _compute(dtype: str) -> str:
    """Arithmetic of ``bool`` reads 0/1 integers (spec § 6)."""
    return "i64" if dtype == "bool" else dtype


def _float_work(dtype: str) -> str:
    # f16 / bf16 transcendentals and statistics run in f32 and are rounded once, as the reference does
    if dtype in ("f16", "bf16"):
        return "f32"
    return dtype if dtype in FLOAT_DTYPES else "f64"


def _acc(dtype: str) -> str:
    """The accumulator dtype of a reduction to ``dtype`` (f16 / bf16 sums accumulate in f32)."""
    return "f32" if dtype in ("f16", "bf16") else _compute(dtype)


def _identity(op: str, dtype: str, of: str | None = None) -> L.Expr:
    """``op``'s identity in the accumulator dtype ``dtype``, for a reduction to ``of``: a ``bool`` max or min
    accumulates 0/1 in i64, but over no entries it is false (max) or true (min), not INT64_MIN cast to true."""
    if of == "bool" and op in ("max", "min"):
        return L.Const(0 if op == "max" else 1, dtype)
    if op in ("sum", "count"):
        return L.Const(0.0 if is_float(dtype) else 0, dtype)
    if op == "prod":
        return L.Const(1.0 if is_float(dtype) else 1, dtype)
    if op == "any":
        return FALSE
    if op == "all":
        return TRUE
    if op in ("max", "min"):
        if is_float(dtype):
            return L.Const(float("-inf") if op == "max" else float("inf"), dtype)
        import numpy as np

        from sparsedsl.tensor_ir.types import NUMPY_DTYPE
        info = np.iinfo(NUMPY_DTYPE[dtype])
        return L.Const(int(info.min if op == "max" else info.max), dtype)
    raise Refused(f"reduction {op} has no identity here")


def _combine(op: str, acc: L.Expr, x: L.Expr, dtype: str) -> L.Expr:
    match op:
        case "sum" | "count":
            return L.Op("+", (acc, x), dtype)
        case "prod":
            return L.Op("*", (acc, x), dtype)
        case "max":
            return L.Op("max2", (acc, x), dtype)
        case "min":
            return L.Op("min2", (acc, x), dtype)
        case "any":
            return L.Op("or", (acc, x), "bool")
        case "all":
            return L.Op("and", (acc, x), "bool")
    raise Refused(f"reduction {op} cannot be combined")


def _and(a: L.Expr, b: L.Expr) -> L.Expr:
    if a == TRUE:
        return b
    if b == TRUE:
        return a
    if a == FALSE or b == FALSE:
        return FALSE
    return L.Op("and", (a, b), "bool")


def _or(a: L.Expr, b: L.Expr) -> L.Expr:
    if a == FALSE:
        return b
    if b == FALSE:
        return a
    if a == TRUE or b == TRUE:
        return TRUE
    return L.Op("or", (a, b), "bool")


def _not(a: L.Expr) -> L.Expr:
    if a == TRUE:
        return FALSE
    if a == FALSE:
        return TRUE
    return L.Op("not", (a,), "bool")


def _guard(pres: L.Expr, action: list[L.Stmt]) -> list[L.Stmt]:
    if pres == TRUE:
        return list(action)
    if pres == FALSE:
        return []
    return [L.If(pres, tuple(action))]


def _cache_slot(c: Ctx, v: str, leaf) -> tuple[L.Expr]:
    """Where a softmax row cache keeps the current coordinate's score: the position in ``leaf``'s row (its
    cursor stands on the coordinate wherever the score is present), or the coordinate itself."""
    if leaf is None:
        return (L.Var(index_name(v)),)
    cur = c.cursors[leaf][0]
    return (L.Op("-", (L.Var(cur.pos), cur.start), "i64"),)


def _whole_range(nest: list[L.Stmt], ws: str, key: str) -> list[L.Stmt] | None:
    """``nest`` with ``<ws>_first = False`` after each loop over ``key``, when every accumulation into ``ws``
    is an unguarded statement directly in a dense loop over ``key`` (so each contribution writes every key
    of the row); None otherwise."""
    first = L.Set(ws + "_first", FALSE)

    def walk(stmts, inside: bool):
        out: list[L.Stmt] = []
        for s in stmts:
            match s:
                case L.Accumulate(ws=w):
                    if w == ws and not inside:
                        return None
                    out.append(s)
                case L.Forall(var=var, iteration=it, body=bd):
                    whole = var == key and it.kind == "dense"
                    hoisted = _invariant_guard(s, key)
                    if whole and hoisted is not None:
                        # a guard that does not depend on the key skips a whole contribution: test it once,
                        # outside the loop, so that a skipped contribution leaves the row untouched
                        cond, then = hoisted
                        if any(not isinstance(x, L.Accumulate) for x in then):
                            return None
                        out.append(L.If(cond, (replace(s, body=then), first), ()))
                    elif whole:
                        # accumulations must sit directly in this loop's body, not under a guard
                        for x in bd:
                            if not isinstance(x, L.Accumulate) and walk([x], False) is None:
                                return None
                        out.extend((s, first))
                    else:
                        inner = walk(bd, False)
                        if inner is None:
                            return None
                        out.append(replace(s, body=tuple(inner)))
                case L.For(body=bd):
                    inner = walk(bd, False)
                    if inner is None:
                        return None
                    out.append(replace(s, body=tuple(inner)))
                case L.If(then=t, orelse=o):
                    a, b = walk(t, False), walk(o, False)
                    if a is None or b is None:
                        return None
                    out.append(replace(s, then=tuple(a), orelse=tuple(b)))
                case _:
                    out.append(s)
        return out

    def direct(x: L.Forall) -> tuple:
        guarded = _invariant_guard(x, key)
        return guarded[1] if guarded is not None else x.body

    found = any(isinstance(x, L.Forall) and x.var == key and x.iteration.kind == "dense"
                and any(isinstance(y, L.Accumulate) and y.ws == ws for y in direct(x)) for x in _all_stmts(nest))
    return walk(nest, False) if found else None


def _row_reduce(e: T.Expr) -> T.Reduce | None:
    """The reduction a result's value is, under casts (its rows come out of that reduction's workspace)."""
    while isinstance(e, T.Cast):
        e = e.operand
    return e if isinstance(e, T.Reduce) else None


def chunk_count(extent: L.Expr, tile: int | None = None) -> L.Expr:
    """How many chunks the outermost parallel loop over ``extent`` rows is cut into: CHUNKS_PER_THREAD per
    thread, none of fewer than CHUNK_BLOCK rows, at least one; or, for a ``block`` directive's ``tile``, one
    chunk per ``tile`` rows."""
    width = tile or CHUNK_BLOCK
    blocks = L.Op("//", (L.Op("+", (extent, L.Const(width - 1, "i64")), "i64"), L.Const(width, "i64")), "i64")
    if tile:
        return L.Op("max2", (blocks, I64_ONE), "i64")
    per_thread = L.Op("*", (L.Const(CHUNKS_PER_THREAD, "i64"), L.Var("nthreads")), "i64")
    return L.Op("max2", (L.Op("min2", (blocks, per_thread), "i64"), I64_ONE), "i64")


def _work_cuts(chunk: str, nchunks: str, extent: L.Expr, p: str, q: str) -> list[L.Expr]:
    """The first row of chunk ``chunk`` and of the next, when rows [0, extent) are cut into ``nchunks``
    contiguous ranges of equal work, a row weighing 1 plus its entries in the row-pointer arrays p and q."""
    return [L.Op("row_split", (L.Op("+", (L.Var(chunk), L.Const(k, "i64")), "i64"), L.Var(nchunks), extent,
                               L.Var(p), L.Var(q)), "i64") for k in (0, 1)]


def _row_pointers(rows: list[L.Stmt], row: str) -> list[str]:
    """Row-pointer arrays of the compressed rows the loop body over ``row`` walks directly (at most two)."""
    out: list[str] = []
    for s in _all_stmts(rows):
        if not isinstance(s, L.Forall):
            continue
        it = s.iteration
        for cur in it.drivers + it.lookups:
            if (isinstance(cur.start, L.Load) and cur.start.index == (L.Var(row),)
                    and cur.start.array not in out and len(out) < 2):
                out.append(cur.start.array)
    return out


def _invariant_guard(loop: L.Forall, key: str):
    """``(cond, body)`` when the loop's body is ``if cond: body`` with ``cond`` independent of the loop."""
    if len(loop.body) != 1 or not isinstance(loop.body[0], L.If) or loop.body[0].orelse:
        return None
    guard = loop.body[0]
    if key in L.expr_names(guard.cond):
        return None
    return guard.cond, guard.then


def _all_stmts(stmts):
    for s in stmts:
        yield s
        match s:
            case L.For(setup=su, body=bd):
                yield from _all_stmts(su)
                yield from _all_stmts(bd)
            case L.Forall(body=bd):
                yield from _all_stmts(bd)
            case L.If(then=t, orelse=o):
                yield from _all_stmts(t)
                yield from _all_stmts(o)


def _reads_values(e: T.Expr) -> bool:
    """Whether presence in ``e`` depends on values (a value mask, a top-k selection)."""
    for x in _walk(e):
        if isinstance(x, T.TopK):
            return True
        if isinstance(x, T.Where):
            stack = [x.mask]
            while stack:
                m = stack.pop()
                if isinstance(m, T.MaskValue):
                    return True
                if isinstance(m, T.MaskNot):
                    stack.append(m.mask)
                elif isinstance(m, (T.MaskAnd, T.MaskOr)):
                    stack.extend((m.lhs, m.rhs))
    return False


def _varying(stmts) -> frozenset[str]:
    """Names assigned more than once, accumulated into, or assigned inside a repeat."""
    seen: set[str] = set()
    out: set[str] = set()
    for st in stmts:
        if isinstance(st, T.Repeat):
            out.update(a.target for a in _all_assigns(st.body))
        elif isinstance(st, T.Assign):
            if st.target in seen or st.op != "=":
                out.add(st.target)
            seen.add(st.target)
    return frozenset(out)


MAX_DEPTH = 40  # operators nested in one expression of the generated code (``Lowerer.shallow``)


def _ldepth(e: L.Expr) -> int:
    """How deeply a loop-IR expression nests (a leaf is 0), without recursion."""
    best, todo = 0, [(e, 0)]
    while todo:
        x, d = todo.pop()
        best = max(best, d)
        todo.extend((c, d + 1) for c in L.expr_children(x))
    return best


def _all_assigns(stmts):
    for s in stmts:
        if isinstance(s, T.Assign):
            yield s
        elif isinstance(s, T.Repeat):
            yield from _all_assigns(s.body)


def _loop_nests(stmts, names: dict[str, str], path: tuple[str, ...] = ()):
    """Every nest of loops over the index variables ``names`` (mangled name -> index) in ``stmts``, outermost
    first, as tuples of index names (a loop over an index already in the nest adds nothing)."""
    for s in stmts:
        here = path
        if isinstance(s, (L.For, L.Forall)) and s.var in names and names[s.var] not in path:
            here = path + (names[s.var],)
        bodies = [v for f in fields(s) if isinstance(v := getattr(s, f.name), tuple) and v
                  and all(isinstance(x, L.Stmt) for x in v)]
        if not bodies:
            yield here
        for body in bodies:
            yield from _loop_nests(body, names, here)


def lower_program(program: T.Program, options: dict | None = None) -> L.Module:
    """The loop IR of ``program``; raises ``SdslTargetError`` naming the first statement it cannot compute."""
    return lower_with_notes(program, options)[0]


def lower_with_notes(program: T.Program, options: dict | None = None) -> tuple[L.Module, list[tuple]]:
    """The loop IR and the choices made on the way: ``(subject, kind, choice, reason, span)`` tuples (the
    accumulator of each row-wise reduction, temporaries introduced for softmax / top-k / accumulation)."""
    force: dict[str, str] = {}
    # each restart makes one name's storage strictly more general, so this ends
    for _ in range(2 * len(program.decls) + 2):
        try:
            lowerer = Lowerer(program, options, force)
            module = lowerer.lower()
            return module, lowerer.notes
        except _Restart as r:
            force[r.name] = r.kind
    raise SdslTargetError("internal error: storage kinds of reassigned names do not settle", program.span)
