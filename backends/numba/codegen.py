"""Loop IR → Python source for Numba.

The text is a stand-alone module importing only numpy and numba (the intrinsics reach llvmlite's IR classes
through numba): helper functions, one ``@numba.njit``
function per loop-IR kernel (parallel, its pranges only, where the kernel has a ``prange``; ``fastmath`` off
except LLVM's ``reassoc`` flag on kernels, see ``render_module``; the numpy error model, so division by
zero gives inf/nan/0 as numpy does instead of raising), and a plain Python ``run`` function that allocates, invokes the kernels and returns the raw result arrays by output name.

Every name printed comes from the loop IR, whose lowering mangled it from validated IR names; nothing is
pasted from user text. The output is deterministic (golden-testable). Kernel lines index arrays with unsigned
positions (``a[_u(i)]``, ``subscripts.py``): Numba then compiles no wrap of negative indices.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import replace

import numpy as np

from sparsedsl.loop_ir import nodes as L

from .parallel_options import source_text
from .subscripts import WRAP, unsigned_subscripts

# f16 and bf16 live in float32 arrays (Numba has no CPU float16): arithmetic runs in float32 and every result
# is rounded to the nearest f16 / bf16 value (``_rf16``, ``_rbf16``), as the reference interpreter rounds
# after every numpy operation; the runtime converts f16 arrays at the boundary.
NP_TYPE = {"bool": "np.bool_", "i8": "np.int8", "i32": "np.int32", "i64": "np.int64", "f16": "np.float32",
           "bf16": "np.float32", "f32": "np.float32", "f64": "np.float64"}
_ROUND = {"f16": "_rf16", "bf16": "_rbf16"}
# dtypes whose arithmetic Numba would widen (int32 + int32 is int64 there, numpy keeps int32): results are
# narrowed back after every operation so that wrapping matches numpy
_NARROW = ("i8", "i32", "f32", "f16", "bf16")
_FLOATS = ("f16", "bf16", "f32", "f64")


def conv(dtype: str, text: str) -> str:
    """``text`` converted to ``dtype`` (rounded to the f16 / bf16 grid for those)."""
    if dtype in _ROUND:
        return f"{_ROUND[dtype]}({text})"
    return f"{NP_TYPE[dtype]}({text})"
_BINARY = {"+", "-", "*", "/", "//", "%", "&", "|", "<", "<=", ">", ">=", "==", "!="}
_FUNCS = {"exp": "np.exp", "log": "np.log", "log1p": "np.log1p", "sqrt": "np.sqrt", "tanh": "np.tanh",
          "sin": "np.sin", "cos": "np.cos", "floor": "np.floor", "ceil": "np.ceil", "sign": "np.sign",
          "abs": "np.abs", "sigmoid": "_sigmoid", "silu": "_silu", "gelu": "_gelu"}
INT64_MAX = "9223372036854775807"
# An ``auto`` accumulator up to this many keys is always dense: its value and mark arrays (12 bytes a key with
# f64 values and int32 marks: 768 KiB) fit in a core's 1 MiB L2 cache. Generated SpGEMM on R-MAT 2^16 (65536
# columns), one process, up to 32768 / 65536: 641 / 551 ms and 659 / 576 (hashing light rows paid a second
# probe per key to read the values back in key order).
DENSE_WIDTH = 65536
# ... and beyond this many keys an ``auto`` accumulator is never dense: its dense arrays (about 30 bytes a key
# per thread: values, marks, key list, the sort's bitmaps) are not allocated at all, so a product whose
# output is 2^33 columns wide but has a few entries a row runs on the hash table alone (it failed allocating
# 250 GB per thread). A row dense enough to want them there would have tens of millions of entries.
AUTO_DENSE_MAX = 1 << 24
# Rows of a gathered dense matrix are prefetched this many keys ahead, when the matrix has more bytes than
# PREFETCH_BYTES: half again this machine's 1 MiB L2. Measured on the generated SpMM / SDDMM (one process, prefetch
# on / off, min of 100 calls): ca-HepTh's 2.5 MB rows 0.83 / 1.04 ms and 0.73 / 0.98; wiki-Vote's 1.8 MB 1.23 / 1.36
# and 1.17 / 1.37; ego-Facebook's 1.0 MB even; bcsstk13's 0.5 MB 0.80 / 0.61 (its rows are in L2 already, the
# prefetches are pure cost).
PREFETCH_AHEAD = 8
PREFETCH_BYTES = 3 << 19
# A dense accumulator's marks (the stamp of the row that last touched a key) are int32: half the cache lines of
# int64 marks next to the values (generated SpGEMM, one process, int64 / int32: ca-HepTh 8.6 / 8.1 ms,
# wiki-Vote 28.3 / 27.6, R-MAT 2^16 702 / 647). When a thread's stamp reaches this value the marks are reset
# and the stamps start over, so they never wrap.
STAMP_LIMIT = 2**31 - 2
# Innermost loops over a size parameter get a copy for each of these extents (fully unrolled by LLVM). 64, the
# usual feature / head width, measured (same process, on / off): attention 1.82 / 2.09 ms on bcsstk13, 3.81 /
# 4.27 on wiki-Vote; SpMM and SDDMM 2-10%. Each extent costs compile time (32 and 128 too: attention +2 s).
VERSIONED_EXTENTS: tuple[int, ...] = (64,)

PRELUDE = '''\
import math
import sys
import threading

import numba
import numpy as np
from numba import prange
from numba.core import cgutils as _cgutils
from numba.core import types as _nbtypes
from numba.core.cpu import ParallelOptions as _ParallelOptions
from numba.cpython.unsafe.numbers import trailing_zeros as _ctz
from numba.extending import intrinsic as _intrinsic

# Numba's disk cache records the module's name and imports it again to load a parallel kernel: a module loaded
# by path and not put in sys.modules would leave entries that crash the next process, so it compiles uncached
_CACHE = getattr(sys.modules.get(__name__), "__dict__", None) is globals()
_JIT = dict(cache=_CACHE, fastmath=False, error_model="numpy")


@numba.njit(**_JIT)
def _locate(idx, lo, hi, key):
    """Position of key in the sorted idx[lo:hi], or -1."""
    end = hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if idx[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    if lo < end and idx[lo] == key:
        return lo
    return -1


@numba.njit(**_JIT)
def _sort_segment(a, lo, hi):
    """Sort a[lo:hi] in place: insertion sort for short runs, heapsort otherwise (numba's own sort
    takes seconds to compile at every call site)."""
    n = hi - lo
    if n <= 32:
        for t in range(lo + 1, hi):
            x = a[t]
            u = t - 1
            while u >= lo and a[u] > x:
                a[u + 1] = a[u]
                u -= 1
            a[u + 1] = x
        return
    for start in range(n // 2 - 1, -1, -1):
        _sift(a, lo, start, n)
    for end in range(n - 1, 0, -1):
        x = a[lo]
        a[lo] = a[lo + end]
        a[lo + end] = x
        _sift(a, lo, 0, end)


@numba.njit(**_JIT)
def _sift(a, lo, root, n):
    while True:
        child = 2 * root + 1
        if child >= n:
            return
        if child + 1 < n and a[lo + child + 1] > a[lo + child]:
            child += 1
        if a[lo + root] >= a[lo + child]:
            return
        x = a[lo + root]
        a[lo + root] = a[lo + child]
        a[lo + child] = x
        root = child


@numba.njit(**_JIT)
def _row_split(c, nchunks, n, p, q):
    """First row of chunk c of nchunks contiguous ranges of equal work; row i weighs 1 plus its entries in
    the row-pointer arrays p and q (its work is linear in them)."""
    total = n + (p[n] - p[0]) + (q[n] - q[0])
    target = (total * c + nchunks - 1) // nchunks
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if mid + (p[mid] - p[0]) + (q[mid] - q[0]) < target:
            lo = mid + 1
        else:
            hi = mid
    # the nearer of the two cuts around the target: a heavy row then gets a range of its own rather than
    # taking the rows before it along
    if lo > 0:
        below = (lo - 1) + (p[lo - 1] - p[0]) + (q[lo - 1] - q[0])
        above = lo + (p[lo] - p[0]) + (q[lo] - q[0])
        if target - below < above - target:
            return lo - 1
    return lo


@numba.njit(**_JIT)
def _max2(a, b):
    """numpy.maximum: NaN wins."""
    if a >= b or a != a:
        return a
    return b


@numba.njit(**_JIT)
def _min2(a, b):
    """numpy.minimum: NaN wins."""
    if a <= b or a != a:
        return a
    return b


@numba.njit(**_JIT)
def _sigmoid(x):
    # exp of -|x| only, so it never overflows; below 0, z / (1 + z) keeps tiny values' precision, which
    # 1 - 1 / (1 + z) lost (0.0 instead of 4e-18 at x = -40), as the reference interpreter computes it
    z = np.exp(-np.abs(x))
    return 1.0 / (1.0 + z) if x >= 0 else z / (1.0 + z)


@numba.njit(**_JIT)
def _silu(x):
    return x * _sigmoid(x)


@numba.njit(**_JIT)
def _gelu(x):
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


@_intrinsic
def _f32_bits(typingctx, i):
    """The float32 whose bits are the int32 i."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(_nbtypes.float32))
    return _nbtypes.float32(_nbtypes.int32), codegen


@numba.njit(**_JIT)
def _exp32(x):
    """exp of a float32, within one ulp, with no branch and no call, so that a loop of them vectorizes
    (libm's expf is a call per element; softmax's pass of exponentials over a row took a fifth of graph
    attention). x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts so that r is exact), e**r by Cephes'
    polynomial, times 2**n as two powers of two so that results between 2**-149 and 2**-126 round once as
    subnormals. Overflow gives inf, x below -104 gives 0, NaN stays NaN."""
    c = np.float32(min(max(x, np.float32(-104.0)), np.float32(89.0)))
    n = np.floor(c * np.float32(1.4426950408889634) + np.float32(0.5))
    r = c - n * np.float32(0.693359375)
    r = r - n * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    k = np.int32(n)
    h = k >> 1
    y = p * _f32_bits((h + 127) << 23) * _f32_bits((k - h + 127) << 23)
    return y if x == x else x


@numba.njit(**_JIT)
def _round_to(x, bits, lowest, biggest):
    """x rounded to ``bits`` significant bits (ties to even), quanta no finer than 2**lowest, beyond
    ``biggest`` an infinity: the float16 / bfloat16 grid, kept in float32."""
    y = np.float64(x)
    if y != y or y == 0.0 or y == np.inf or y == -np.inf:
        return np.float32(y)
    e = math.frexp(y)[1]
    q = math.ldexp(1.0, max(e - bits, lowest))
    r = np.rint(y / q) * q
    if abs(r) > biggest:
        r = math.copysign(np.inf, y)
    return np.float32(r)


@numba.njit(**_JIT)
def _rf16(x):
    return _round_to(x, 11, -24, 65504.0)


@numba.njit(**_JIT)
def _rbf16(x):
    return _round_to(x, 8, -133, 3.3895313892515355e38)


def _prefetch_line(context, builder, aryty, ary, inds):
    """LLVM's prefetch (read, keep in all levels) of the line holding ary[inds]: the address only, no bounds
    check (a prefetch never faults)."""
    ary = context.make_array(aryty)(context, builder, ary)
    ptr = _cgutils.get_item_pointer2(context, builder, data=ary.data, shape=_cgutils.unpack_tuple(builder, ary.shape),
                                     strides=_cgutils.unpack_tuple(builder, ary.strides), layout=aryty.layout,
                                     inds=inds, wraparound=False, boundscheck=False)
    i8p, i32 = _cgutils.voidptr_t, _cgutils.int32_t
    # llvmlite's IR classes as numba's cgutils holds them: the module imports numpy and numba only
    fnty = _cgutils.ir.FunctionType(_cgutils.ir.VoidType(), [i8p, i32, i32, i32])
    fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
    builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
    return context.get_dummy_value()


@_intrinsic
def _prefetch(typingctx, arr, i, j):
    """Ask the cache for the line holding arr[i, j]."""
    def codegen(context, builder, signature, args):
        return _prefetch_line(context, builder, signature.args[0], args[0], [args[1], args[2]])
    return _nbtypes.void(arr, i, j), codegen


@_intrinsic
def _prefetch_at(typingctx, arr, i):
    """Ask the cache for the line holding arr[i] of a 1-D array."""
    def codegen(context, builder, signature, args):
        return _prefetch_line(context, builder, signature.args[0], args[0], [args[1]])
    return _nbtypes.void(arr, i), codegen


_KEPT = threading.local()  # scratch arrays kept between calls, per calling thread (a dict: name -> array)
def _scratch(name, shape, dtype):
    """An uninitialized array for scratch ``name``: the one kept from an earlier call on this thread when it
    is large enough and of that dtype (a large fresh array costs a page fault per 4 KiB page written, about
    a third of SpGEMM's one-pass assembly on ego-Facebook), else a new one, kept if under 256 MiB."""
    kept = _KEPT.__dict__.setdefault("arrays", {})
    size = 1
    for x in shape:
        size *= int(x)
    a = kept.get(name)
    if a is None or a.dtype != dtype or a.size < size:
        a = np.empty(size, dtype=dtype)
        if a.nbytes <= 1 << 28:
            kept[name] = a
        else:
            kept.pop(name, None)
    return a[:size].reshape(shape)


@_intrinsic
def _claim(typingctx, counter):
    """Atomically add 1 to counter[0] (an int64 array) and return its previous value: the next unclaimed
    iteration of a parallel loop."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, context.get_constant(_nbtypes.int64, 1), "monotonic")
    return _nbtypes.int64(counter), codegen


@numba.njit(**_JIT)
def _bit_sort(keys, n, bits, top):
    """Sort the n distinct keys[0:n] of [0, 64 * len(bits)) in place through a two-level bitmap: set a bit per
    key, then read the set bits back in order, with a summary bit per bitmap word (top) so that empty stretches
    are skipped 4096 keys at a time. O(n + len(top) + the words touched), no comparisons; both bitmaps are all
    zero again on return."""
    one = np.uint64(1)
    for t in range(n):
        k = keys[t]
        bits[k >> 6] |= one << np.uint64(k & 63)
        top[k >> 12] |= one << np.uint64((k >> 6) & 63)
    m = 0
    for g in range(top.shape[0]):
        s = top[g]
        if s == 0:
            continue
        top[g] = 0
        while s != 0:
            w = (g << 6) + np.int64(_ctz(s))
            s &= s - one
            x = bits[w]
            bits[w] = 0
            while x != 0:
                keys[m] = (w << 6) + np.int64(_ctz(x))
                x &= x - one
                m += 1


@numba.njit(**_JIT)
def _sort_pairs(key, val, lo, hi):
    """Heapsort key[lo:hi] ascending, moving val along."""
    n = hi - lo
    for start in range(n // 2 - 1, -1, -1):
        _sift_pairs(key, val, lo, start, n)
    for end in range(n - 1, 0, -1):
        k = key[lo]
        key[lo] = key[lo + end]
        key[lo + end] = k
        v = val[lo]
        val[lo] = val[lo + end]
        val[lo + end] = v
        _sift_pairs(key, val, lo, 0, end)


@numba.njit(**_JIT)
def _sift_pairs(key, val, lo, root, n):
    while True:
        child = 2 * root + 1
        if child >= n:
            return
        if child + 1 < n and key[lo + child + 1] > key[lo + child]:
            child += 1
        if key[lo + root] >= key[lo + child]:
            return
        k = key[lo + root]
        key[lo + root] = key[lo + child]
        key[lo + child] = k
        v = val[lo + root]
        val[lo + root] = val[lo + child]
        val[lo + child] = v
        root = child


@numba.njit(**_JIT)
def _tk_after(key, cls, a, b):
    """Entry a ranks after entry b: by class, then key, then position (ties to the lower coordinate)."""
    if cls[a] != cls[b]:
        return cls[a] > cls[b]
    if key[a] != key[b]:
        return key[a] > key[b]
    return a > b


@numba.njit(**_JIT)
def _tk_sift(key, cls, order, root, n):
    while True:
        child = 2 * root + 1
        if child >= n:
            return
        if child + 1 < n and _tk_after(key, cls, order[child + 1], order[child]):
            child += 1
        if not _tk_after(key, cls, order[child], order[root]):
            return
        t = order[root]
        order[root] = order[child]
        order[child] = t
        root = child


@numba.njit(**_JIT)
def _topk_select(coord, key, cls, n, k, group, order, sel, out):
    """The coordinates of the k first-ranked of the n collected entries (ascending coordinates) within each
    run of ``group`` consecutive coordinates (group 0: all of them), written ascending into ``out``; returns
    how many."""
    s = 0
    while s < n:
        e = s + 1
        if group > 0:
            run = coord[s] // group
            while e < n and coord[e] // group == run:
                e += 1
        else:
            e = n
        m = e - s
        for t in range(s, e):
            sel[t] = m <= k
        if 0 < k < m:
            for t in range(m):
                order[t] = s + t
            for t in range(m // 2 - 1, -1, -1):
                _tk_sift(key, cls, order, t, m)
            for t in range(m - 1, 0, -1):
                x = order[0]
                order[0] = order[t]
                order[t] = x
                _tk_sift(key, cls, order, 0, t)
            for t in range(k):
                sel[order[t]] = True
        s = e
    c = 0
    for t in range(n):
        if sel[t]:
            out[c] = coord[t]
            c += 1
    return c


@numba.njit(**_JIT)
def _ifloordiv(a, b):
    """i64 floor division as numpy computes it: LLVM's division overflows on INT64_MIN // -1, numpy wraps."""
    if b == -1:
        return -a
    return a // b


@numba.njit(**_JIT)
def _ipow(a, b):
    """Integer power; a negative exponent truncates toward zero like 1 / a**-b."""
    if b < 0:
        if a == 1:
            return 1
        if a == -1:
            return -1 if (-b) % 2 == 1 else 1
        return 0
    r = 1
    while b > 0:
        if b & 1:
            r = r * a
        a = a * a
        b >>= 1
    return r
'''


def _split_prelude(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The prelude's imports and settings, then each helper function as (name, source block): top-level
    blocks are separated by two blank lines (PEP 8), and no helper has two blank lines inside."""
    head, *blocks = text.rstrip("\n").split("\n\n\n")
    return head, tuple((re.search(r"^def (\w+)\(", b, re.M).group(1), b) for b in blocks)


def _closures(helpers: tuple[tuple[str, str], ...], names: re.Pattern) -> dict[str, frozenset[str]]:
    """Each helper with the helpers it calls, directly or not (``_silu`` needs ``_sigmoid``)."""
    blocks = dict(helpers)
    out = {}
    for name in blocks:
        todo, seen = [name], set()
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(names.findall(blocks[n]))
        out[name] = frozenset(seen)
    return out


_PRELUDE_HEAD, _HELPERS = _split_prelude(PRELUDE)
_HELPER_NAME = re.compile(r"\b(" + "|".join(name for name, _ in _HELPERS) + r")\b")
_HELPER_DEPS = _closures(_HELPERS, _HELPER_NAME)


def prelude_for(kernel_text: str) -> str:
    """``PRELUDE`` with only the helper functions that ``kernel_text`` (the rest of the module: kernels and
    ``run``) names, and those they call. Each ``@numba.njit(cache=True)`` function, even one never called,
    costs the import of the generated module a Numba cache locator (file stats and a probe that the cache
    folder is writable), and its text must be compiled. With every helper named, this is ``PRELUDE`` itself."""
    used: set[str] = set()
    for name in set(_HELPER_NAME.findall(kernel_text)):
        used |= _HELPER_DEPS[name]
    return "\n\n\n".join([_PRELUDE_HEAD, *(block for name, block in _HELPERS if name in used)]) + "\n"


class Printer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ws_kind: dict[str, L.Workspace] = {}
        self.ws_op: dict[str, str] = {}  # the operator a workspace accumulates with (a sort merge needs it)
        self.cursor_keys: dict[str, str] = {}
        # the accumulator an ``auto`` workspace is printed with inside one branch of its unswitched row
        self.ws_mode: dict[str, str] = {}
        # workspaces whose next Compact may leave the keys unordered
        self.unordered: set[str] = set()
        # ``auto`` workspaces whose compacted row is read only inside their unswitched row: in its dense
        # branch the values are read in place (``val[cidx[p]]``) rather than gathered first (see direct_values)
        self.in_place: set[str] = set()
        # the host statements are being printed into a compiled function (see render_module)
        self.host_jit = False
        # array -> the constant a host Alloc filled it with
        self.fills: dict[str, L.Expr] = {}
        # filled arrays that their kernel writes whole anyway (``_written_whole``)
        self.written_whole: set[str] = set()
        # kernels may reassociate (render_module's ``reassoc``): a jammed step's accumulations merge
        self.reassoc = False
        # expressions printed as a name bound before the loop being printed (a walk's row start)
        self.bound: dict[L.Expr, str] = {}

    def line(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    # ------------------------------------------------------------ expressions

    def expr(self, e: L.Expr) -> str:
        if self.bound and e in self.bound:
            return self.bound[e]
        match e:
            case L.Var(name=n):
                return n
            case L.Const(value=v, dtype=dt):
                return const(v, dt)
            case L.Load(array=a, index=ix):
                if a.endswith("_cval") and self.direct_values(a[:-len("_cval")]):
                    w = a[:-len("_cval")]
                    return f"{w}_val[{w}_cidx[{self.expr(ix[0])}]]"
                return f"{a}[{', '.join(self.expr(x) for x in ix)}]"
            case L.Cast(arg=a, dtype=dt):
                if dt == "bool":
                    return f"({self.expr(a)} != 0)"
                return conv(dt, self.expr(a))
            case L.Locate(idx=idx, start=s, stop=t, key=k):
                return f"_locate({idx}, {self.expr(s)}, {self.expr(t)}, {self.expr(k)})"
            case L.Op():
                return self.op(e)
        raise TypeError(f"internal error: unknown loop-IR expression {e!r}")

    def op(self, e: L.Op) -> str:
        a = [self.expr(x) for x in e.args]
        dt = e.dtype
        if e.op == "//" and dt == "i64" and not (isinstance(e.args[1], L.Const) and e.args[1].value > 0):
            text = f"_ifloordiv({a[0]}, {a[1]})"
        elif e.op in _BINARY:
            text = f"({a[0]} {e.op} {a[1]})"
            if e.op in ("<", "<=", ">", ">=", "==", "!="):
                return text
        elif e.op == "and":
            return f"({a[0]} and {a[1]})"
        elif e.op == "or":
            return f"({a[0]} or {a[1]})"
        elif e.op == "not":
            return f"(not {a[0]})"
        elif e.op == "isnan":
            return f"({a[0]} != {a[0]})"
        elif e.op == "select":
            return f"({a[1]} if {a[0]} else {a[2]})"
        elif e.op == "neg":
            text = f"(-{a[0]})"
        elif e.op == "row_split":
            return f"_row_split({', '.join(a)})"
        elif e.op == "max2":
            text = f"_max2({a[0]}, {a[1]})"
        elif e.op == "min2":
            text = f"_min2({a[0]}, {a[1]})"
        elif e.op == "relu":
            text = f"_max2({a[0]}, {const(0, dt)})"
        elif e.op == "rsqrt":
            text = f"({const(1, dt)} / np.sqrt({a[0]}))"
        elif e.op == "pow":
            text = f"({a[0]} ** {a[1]})" if dt in _FLOATS else f"_ipow({a[0]}, {a[1]})"
        elif e.op == "exp" and dt == "f32":
            text = f"_exp32({a[0]})"
        elif e.op in _FUNCS:
            text = f"{_FUNCS[e.op]}({a[0]})"
        else:
            raise TypeError(f"internal error: unknown loop-IR operator {e.op!r}")
        if dt in _NARROW or e.op in _FUNCS or e.op in ("pow", "rsqrt"):
            return conv(dt, text)
        return text

    # ------------------------------------------------------------ statements

    def stmts(self, body, depth: int) -> None:
        if not body:
            self.line(depth, "pass")
        body = tuple(body)
        if self.reassoc:
            body = _merge_accumulations(body, self.ws_kind)
        i = 0
        while i < len(body):
            s = body[i]
            plan = _direct_plan(body, i, self.ws_kind, self.fills)
            if plan is not None:
                # the row is copied whole into a dense output row: accumulate without the compaction's copy
                # (without an identity, in that row itself: a row that gets no contribution is never
                # written and keeps the output's fill)
                self.stmt(s, depth)
                end, array, index, ident = plan
                fill = self.fills.get(array)
                # the whole output when the row has no index (a vector result of a reduction over rows)
                row = f"{array}[{', '.join(self.expr(x) for x in index)}]" if index else array
                if ident is not None:
                    # start the row at the reduction's exact identity (-0.0 for a float sum: -0.0 + x is x,
                    # signed zeros included) so that every contribution just combines, with no test of
                    # whether it is the first; a row that got none gets the output's fill. The row
                    # accumulates in the thread's own workspace and is copied out whole at its end: that
                    # array, allocated in the kernel, overlaps no input (nm and bsr SpMM 10-20% faster than
                    # accumulating in the output row, likely since LLVM need not allow for an overlap)
                    self.line(depth, f"{s.ws}_out = {row}")
                    self.line(depth, f"for {s.ws}_t in range({s.ws}_width):")
                    self.line(depth + 1, f"{s.ws}_val[{s.ws}_t] = {ident}")
                    self.ws_mode[s.ws] = "combine"
                else:
                    self.line(depth, f"{s.ws}_val = {row}")
                self.stmts(body[i + 1:end + 1], depth)
                if ident is not None:
                    self.line(depth, f"if {s.ws}_first:")
                    self.line(depth + 1, f"for {s.ws}_t in range({s.ws}_width):")
                    self.line(depth + 2, f"{s.ws}_out[{s.ws}_t] = {self.expr(fill)}")
                    self.line(depth, "else:")
                    self.line(depth + 1, f"for {s.ws}_t in range({s.ws}_width):")
                    self.line(depth + 2, f"{s.ws}_out[{s.ws}_t] = {s.ws}_val[{s.ws}_t]")
                self.ws_mode.pop(s.ws, None)
                i = end + 2
                continue
            if isinstance(s, L.Reset) and self.ws_kind[s.ws].kind == "auto" and s.ws not in self.ws_mode:
                end = next((j for j in range(i + 1, len(body))
                            if isinstance(body[j], L.Compact) and body[j].ws == s.ws), None)
                if end is not None:
                    if not body[end].values and end + 1 < len(body) and _counts_keys(body[end + 1], s.ws):
                        self.unordered.add(s.ws)
                    readers = _value_readers(body, end, s.ws)
                    if readers:
                        self.in_place.add(s.ws)
                    self.unswitched(body[i:end + 1 + readers], s.ws, depth)
                    self.unordered.discard(s.ws)
                    self.in_place.discard(s.ws)
                    i = end + 1 + readers
                    continue
            if isinstance(s, L.Compact) and not s.values and i + 1 < len(body) and _counts_keys(body[i + 1], s.ws):
                # only counted afterwards (a symbolic phase): the keys need no ordering
                self.unordered.add(s.ws)
            self.stmt(s, depth)
            if isinstance(s, L.Compact) and s.ws not in self.ws_mode:
                self.unordered.discard(s.ws)
            i += 1

    def unswitched(self, run, ws: str, d: int) -> None:
        """An ``auto`` workspace's row (Reset .. Compact) printed twice, once per accumulator, under one test
        per row: the per-entry test of the mode kept the inner loops from being optimized (2-3x on SpGEMM)."""
        reset, rest = run[0], run[1:]
        self.reset(reset, d)
        if ws in self.unordered and not any(isinstance(a, L.Accumulate) and a.value is not None
                                            for a in L.walk_stmts(rest)):
            # a row that is only counted and whose work reaches a quarter of the width: a flag byte per key,
            # set with no test, then summed in one vectorized pass (a third faster on ego-Facebook's rows)
            def dense(depth: int) -> None:
                self.branches(depth, ws, f"{ws}_need * 4 >= {ws}_width", ("flags", "dense"),
                              lambda dd: self.stmts(rest, dd))
                self.ws_mode[ws] = "dense"

            self.branches(d, ws, f"{ws}_hash", ("hash", "dense"),
                          lambda depth: self.stmts(rest, depth) if self.ws_mode[ws] == "hash" else dense(depth))
            return
        self.branches(d, ws, f"{ws}_hash", ("hash", "dense"), lambda depth: self.stmts(rest, depth))

    def branches(self, d: int, ws: str, test: str, modes: tuple[str, str], emit) -> None:
        """``if test:`` / ``else:``, with ``emit(depth)`` printing the same code once per workspace mode."""
        self.line(d, f"if {test}:")
        self.ws_mode[ws] = modes[0]
        emit(d + 1)
        self.line(d, "else:")
        self.ws_mode[ws] = modes[1]
        emit(d + 1)
        del self.ws_mode[ws]

    def stmt(self, s: L.Stmt, d: int) -> None:
        match s:
            case L.Let(name=n, dtype=dt, value=v):
                text = self.expr(v)
                if dt != "bool" and not isinstance(v, L.Cast):
                    text = f"{NP_TYPE[dt]}({text})"
                self.line(d, f"{n} = {text}")
            case L.Set(name=n, value=v):
                self.line(d, f"{n} = {self.expr(v)}")
            case L.Store(array=a, index=ix, value=v):
                self.line(d, f"{a}[{', '.join(self.expr(x) for x in ix)}] = {self.expr(v)}")
            case L.Alloc(name=n, dtype=dt, shape=sh, fill=f, narrow=nw, keep=True) if not self.host_jit:
                shape = "(" + ", ".join(self.expr(x) for x in sh) + ("," if len(sh) == 1 else "") + ")"
                dtype = NP_TYPE[dt] if nw is None else f"np.int32 if {self.expr(nw)} < 2147483648 else np.int64"
                self.line(d, f"{n} = _scratch({n!r}, {shape}, {dtype})")
                if f is not None:
                    self.line(d, f"{n}.fill({self.expr(f)})")
            case L.Alloc(name=n, dtype=dt, shape=sh, fill=f, narrow=nw):
                shape = "(" + ", ".join(self.expr(x) for x in sh) + ("," if len(sh) == 1 else "") + ")"
                if nw is not None and f is None and not self.host_jit:
                    # (a compiled host keeps one type per name: int64 there)
                    self.line(d, f"{n} = np.empty({shape}, dtype=np.int32 if {self.expr(nw)} < 2147483648 else np.int64)")
                elif f is None:
                    self.line(d, f"{n} = np.empty({shape}, dtype={NP_TYPE[dt]})")
                elif n in self.written_whole:
                    # the kernel it goes to writes every element first (``_written_whole``): no fill (the
                    # memset of reused memory was 0.1 ms of a 1.5 ms attention call on ca-HepTh)
                    self.line(d, f"{n} = np.empty({shape}, dtype={NP_TYPE[dt]})")
                elif _is_zero(f):
                    # calloc: a large array comes as fresh zero pages, faulted in by the threads that first
                    # write them, instead of a serial memset (SpMM's 2.5 MB output on ca-HepTh: 126 -> 56 µs)
                    self.line(d, f"{n} = np.zeros({shape}, dtype={NP_TYPE[dt]})")
                else:
                    self.line(d, f"{n} = np.full({shape}, {self.expr(f)}, dtype={NP_TYPE[dt]})")
            case L.If(cond=c, then=t, orelse=o):
                self.line(d, f"if {self.expr(c)}:")
                self.stmts(t, d + 1)
                if o:
                    self.line(d, "else:")
                    self.stmts(o, d + 1)
            case L.For(var=v, start=a, stop=b, body=bd, parallel=par, setup=su):
                copies = None if par or su else _slice_copies(s)
                if par:
                    self.claimed(s, d)
                elif copies:
                    # a copy of contiguous runs: slices, which numba copies as memmove does (a one-pass
                    # SpGEMM's placement of its rows: 3-4x faster than the element loop, which it does not
                    # vectorize)
                    n = f"_len{d}"  # (IR names never start with '_')
                    self.line(d, f"{n} = max({self.expr(b)}, 0)")
                    for dst, at, src, frm in copies:
                        at, frm = self.expr(at), self.expr(frm)
                        self.line(d, f"{dst}[{at}:{at} + {n}] = {src}[{frm}:{frm} + {n}]")
                else:
                    if su:
                        self.stmts(su, d)
                    self.line(d, f"for {v} in range({self.expr(a)}, {self.expr(b)}):")
                    self.stmts(bd, d + 1)
            case L.Forall():
                self.forall(s, d)
            case L.Workspace():
                self.workspace(s, d)
            case L.Reset():
                self.reset(s, d)
            case L.Accumulate():
                self.accumulate(s, d)
            case L.Compact():
                self.compact(s, d)
            case L.Invoke(kernel=k, args=args, results=res):
                call = f"{k}({', '.join(args)})"
                self.line(d, f"{', '.join(res)} = {call}" if res else call)
            case L.TopKSelect(name=n, count=cnt, k=k, group=g):
                self.line(d, f"{n}_n = _topk_select({n}_j, {n}_key, {n}_cls, {self.expr(cnt)}, {self.expr(k)}, "
                             f"{0 if g is None else int(g)}, {n}_ord, {n}_sel, {n}_cidx)")
            case L.Loop(count=n, body=bd, until=u):
                it = f"_it{d}"
                if n is None:
                    self.line(d, "while True:")
                else:
                    self.line(d, f"for {it} in range({self.expr(n)}):")
                self.stmts(bd, d + 1)
                if u is not None:
                    self.line(d + 1, f"if {self.expr(u)}:")
                    self.line(d + 2, "break")
            case L.Alias(name=n, source=src):
                self.line(d, f"{n} = {src}")
            case L.PrefixSum(dst=dst, src=src):
                self.line(d, f"{dst}[0] = 0")
                if self.host_jit:
                    # np.cumsum(out=...) is not available in compiled code
                    self.line(d, f"for _t in range({src}.shape[0]):")
                    self.line(d + 1, f"{dst}[_t + 1] = {dst}[_t] + {src}[_t]")
                else:
                    self.line(d, f"np.cumsum({src}, out={dst}[1:])")
            case L.Return(values=vs):
                self.line(d, "return " + ", ".join(self.expr(v) for v in vs))
            case L.Comment(text=t):
                self.line(d, "# " + t.replace("\n", " "))
            case _:
                raise TypeError(f"internal error: unknown loop-IR statement {s!r}")

    def forall(self, s: L.Forall, d: int) -> None:
        it = s.iteration
        v = s.var
        for cur in it.followers:
            self.line(d, f"{cur.pos} = {self.expr(cur.start)}")
            self.line(d, f"{cur.name}_e = {self.expr(cur.stop)}")

        def followers(depth: int) -> None:
            for cur in it.followers:
                self.line(depth, f"while {cur.pos} < {cur.name}_e and {cur.idx}[{cur.pos}] < {v}:")
                self.line(depth + 1, f"{cur.pos} += 1")
                self.line(depth, f"{cur.found} = {cur.pos} < {cur.name}_e and {cur.idx}[{cur.pos}] == {v}")

        if it.kind == "dense":
            first = self.range_first(s)
            if first is not None:
                # a range workspace's first contribution stores, later ones combine: test that once per
                # loop, not per element, so that the loop vectorizes
                self.branches(d, first, f"{first}_first", ("first", "combine"), lambda depth: self.forall(s, depth))
                return
            body = list(s.body)
            flags = _loop_flags(s)
            if flags:
                # ``flag = True`` at every point of a dense range: true iff the range is not empty
                self.line(d, f"if {self.expr(it.extent)} > 0:")
                for f in flags:
                    self.line(d + 1, f"{f} = True")
                body = [b for b in body if not (isinstance(b, L.Set) and b.name in flags)]
            body, hoisted = _hoist_invariants(body, _moving(v, it.followers))
            if hoisted:
                # the parts of the accumulated values that do not change along the loop (an attention
                # weight, an exp), computed once; only if the loop runs, so that nothing new is evaluated
                self.line(d, f"if {self.expr(it.extent)} > 0:")
                d += 1
                for name, e in hoisted:
                    self.line(d, f"{name} = {self.expr(e)}")
            ext = self.expr(it.extent)
            if (VERSIONED_EXTENTS and not it.followers and isinstance(it.extent, L.Var)
                    and it.extent.name.startswith("n_")
                    and not any(isinstance(b, L.Forall) for b in L.walk_stmts(body))):
                # an innermost loop over a size known only at run time: LLVM vectorizes it with a remainder and
                # loop control that a short row (64 features) pays in full; a copy for a common extent lets it
                # unroll completely
                for w in VERSIONED_EXTENTS:
                    self.line(d, f"{'if' if w == VERSIONED_EXTENTS[0] else 'elif'} {ext} == {w}:")
                    self.line(d + 1, f"for {v} in range({w}):")
                    self.loop_body(body, d + 2)
                self.line(d, "else:")
                d += 1
            self.line(d, f"for {v} in range({ext}):")
            followers(d + 1)
            self.loop_body(body, d + 1)
            return
        drivers = it.drivers
        for cur in it.lookups:
            # refill the map only when the segment changed since the last visit
            m = cur.name
            self.line(d, f"{m}_s = {self.expr(cur.start)}")
            self.line(d, f"{m}_e = {self.expr(cur.stop)}")
            self.line(d, f"if {m}_s != {m}_mlo or {m}_e != {m}_mhi:")
            if it.membership:
                if cur.pos in L.free_names(s.body):
                    raise AssertionError(f"internal error: a membership lookup's body reads {cur.pos}")
                # the previous segment's words hold only its own keys: zero them, then set the new keys
                self.line(d + 1, f"for {m}_t in range({m}_mlo, {m}_mhi):")
                self.line(d + 2, f"{m}_bits[{cur.idx}[{m}_t] >> 6] = 0")
                self.line(d + 1, f"for {m}_t in range({m}_s, {m}_e):")
                self.line(d + 2, f"{m}_k = np.int64({cur.idx}[{m}_t])")
                self.line(d + 2, f"{m}_bits[{m}_k >> 6] |= np.int64(1) << ({m}_k & 63)")
            else:
                self.line(d + 1, f"for {m}_t in range({m}_s, {m}_e):")
                self.line(d + 2, f"{m}_map[{cur.idx}[{m}_t]] = {m}_t")
            self.line(d + 1, f"{m}_mlo = {m}_s")
            self.line(d + 1, f"{m}_mhi = {m}_e")
        if it.lookups:
            (cur,) = drivers
            if not it.followers and _speculable(s.body, {v, cur.pos, *(lk.pos for lk in it.lookups)}):
                self.speculated_lookups(s, d)
                return
            self.lookup_loop(s, d)
            self.line(d + 1, "if " + " & ".join(lk.found for lk in it.lookups) + ":")
            followers(d + 2)
            self.stmts(s.body, d + 2)
            return
        if it.kind == "intersect" and len(drivers) == 1 and not it.followers and _counts_only(s):
            # a loop that only counts its coordinates adds the segment's length
            (cur,) = drivers
            n = s.body[0].name
            self.line(d, f"{n} = {n} + ({self.expr(cur.stop)} - {self.expr(cur.start)})")
            return
        if it.kind == "intersect" and len(drivers) == 1:
            (cur,) = drivers
            start = self.expr(cur.start)
            if cur.start not in self.bound and _rereads(s, cur.start):
                # the body reads the row start (a softmax's cached scores at pos - ptr[i]): read it once, or
                # LLVM reloads it at every step (a store might change it) and the loop does not vectorize
                self.line(d, f"{cur.name}_s = {start}")
                self.bound[cur.start] = start = f"{cur.name}_s"
                try:
                    self.walk(s, cur, start, followers, d)
                finally:
                    del self.bound[cur.start]
                return
            self.walk(s, cur, start, followers, d)
            return
        self.walks(s, followers, d)

    def walk(self, s: L.Forall, cur: L.Cursor, start: str, followers, d: int) -> None:
        """The walk of one cursor's segment: jammed, or with what its accumulations do not move hoisted."""
        it, v, body = s.iteration, s.var, s.body
        if cur.shift is not None:
            self.line(d, f"{cur.name}_shift = np.int64({self.expr(cur.shift)})")
        if s.jam is not None:
            start = self.jammed(s, cur, d)
        else:
            body, hoisted = _hoist_invariants(list(body), _moving(v, it.followers) | {cur.pos, cur.found},
                                              cur.name)
            if hoisted:
                # SpGEMM's A[i, k] along the walk of row k: LLVM reloads it at every step, since the
                # workspace's stores might alias it (a sixth of the numeric kernel on bcsstk13)
                self.line(d, f"if {self.expr(cur.stop)} > {start}:")
                d += 1
                for name, e in hoisted:
                    self.line(d, f"{name} = {self.expr(e)}")
        self.line(d, f"for {cur.pos} in range({start}, {self.expr(cur.stop)}):")
        if cur.shift is not None:
            # a row of a block input: coordinates computed (consecutive), or from the slots' offsets
            self.line(d + 1, f"{v} = {self.shifted_key(cur, cur.pos)}")
        elif self.identity_keys(cur.idx):
            # a compacted range workspace lists every key in order: the position is the key
            self.line(d + 1, f"{v} = {cur.pos}")
        else:
            self.line(d + 1, f"{v} = np.int64({cur.idx}[{cur.pos}])")
            self.prefetch_rows(s, cur, d + 1)
        self.line(d + 1, f"{cur.found} = True")
        followers(d + 1)
        self.stmts(body, d + 1)

    def walks(self, s: L.Forall, followers, d: int) -> None:
        """Several cursors walked together: their intersection or their union."""
        it, v, drivers = s.iteration, s.var, s.iteration.drivers
        for cur in drivers:
            self.line(d, f"{cur.pos} = {self.expr(cur.start)}")
            self.line(d, f"{cur.name}_e = {self.expr(cur.stop)}")
        if it.kind == "intersect":
            live = " and ".join(f"{c.pos} < {c.name}_e" for c in drivers)
            self.line(d, f"while {live}:")
            for c in drivers:
                self.line(d + 1, f"{c.name}_k = np.int64({c.idx}[{c.pos}])")
            self.line(d + 1, f"{v} = {c_max([c.name + '_k' for c in drivers])}")
            same = " and ".join(f"{c.name}_k == {v}" for c in drivers)
            self.line(d + 1, f"if {same}:")
            for c in drivers:
                self.line(d + 2, f"{c.found} = True")
            followers(d + 2)
            self.stmts(s.body, d + 2)
            for c in drivers:
                self.line(d + 2, f"{c.pos} += 1")
            self.line(d + 1, "else:")
            for c in drivers:
                self.line(d + 2, f"if {c.name}_k < {v}:")
                self.line(d + 3, f"{c.pos} += 1")
            return
        live = " or ".join(f"{c.pos} < {c.name}_e" for c in drivers)
        self.line(d, f"while {live}:")
        self.line(d + 1, f"{v} = {INT64_MAX}")
        for c in drivers:
            self.line(d + 1, f"if {c.pos} < {c.name}_e and {c.idx}[{c.pos}] < {v}:")
            self.line(d + 2, f"{v} = np.int64({c.idx}[{c.pos}])")
        for c in drivers:
            self.line(d + 1, f"{c.found} = {c.pos} < {c.name}_e and {c.idx}[{c.pos}] == {v}")
        followers(d + 1)
        self.stmts(s.body, d + 1)
        for c in drivers:
            self.line(d + 1, f"if {c.found}:")
            self.line(d + 2, f"{c.pos} += 1")

    def loop_body(self, body, d: int) -> None:
        """A dense loop's body, printed with the workspace modes it starts with (an accumulation in mode
        ``first`` switches its workspace to ``combine`` for the rest of the body)."""
        modes = dict(self.ws_mode)
        self.stmts(body, d)
        self.ws_mode.clear()
        self.ws_mode.update(modes)

    def jammed(self, s: L.Forall, cur: L.Cursor, d: int) -> str:
        """The steps of ``s.jam.factor`` consecutive positions of the cursor's segment; returns the first
        position left for the one-at-a-time loop that follows."""
        n = s.jam.factor
        q, e = f"{cur.name}_q", f"{cur.name}_e"
        self.line(d, f"{q} = np.int64({self.expr(cur.start)})")
        self.line(d, f"{e} = np.int64({self.expr(cur.stop)})")
        self.line(d, f"while {q} + {n} <= {e}:")
        identity = self.identity_keys(cur.idx)
        for u in range(n):
            pos, var = L.Jam.copy_name(cur.pos, u), L.Jam.copy_name(s.var, u)
            self.line(d + 1, f"{pos} = {q} + {u}")
            if cur.shift is not None:
                self.line(d + 1, f"{var} = {self.shifted_key(cur, pos)}")
            else:
                self.line(d + 1, f"{var} = {pos}" if identity else f"{var} = np.int64({cur.idx}[{pos}])")
            self.line(d + 1, f"{L.Jam.copy_name(cur.found, u)} = True")
        # (consecutive coordinates read consecutive rows: the hardware prefetcher follows them)
        rows = [] if identity or cur.shift is not None else _row_gathers(s.body, s.var)
        if rows:
            # the keys PREFETCH_AHEAD positions on, one step's worth (see prefetch_rows)
            a = f"{cur.name}_ahead"
            self.line(d + 1, f"{a} = {q} + {PREFETCH_AHEAD}")
            self.line(d + 1, f"if {a} + {n} <= {cur.idx}.shape[0] and ({_past_l2(rows)}):")
            self.line(d + 2, f"for {a}_t in range({a}, {a} + {n}):")
            self.line(d + 3, f"{a}_k = np.int64({cur.idx}[{a}_t])")
            self.prefetch_lines(cur, rows, f"{a}_k", d + 3)
        self.stmts(s.jam.body, d + 1)
        self.line(d + 1, f"{q} += {n}")
        return q

    def shifted_key(self, cur: L.Cursor, pos: str) -> str:
        """The coordinate at ``pos`` of a walk over a block input's row (``L.Cursor.shift``)."""
        if cur.groups is None:
            return f"{pos} + {cur.name}_shift"
        n, m = (self.expr(x) for x in cur.groups)
        return f"({pos} // {n}) * {m} + np.int64({cur.idx}[{pos}]) + {cur.name}_shift"

    def prefetch_rows(self, s: L.Forall, cur: L.Cursor, d: int) -> None:
        """Rows of dense matrices that the body reads at this loop's key (``X[j, f]`` in SpMM, ``K[j, d]`` in
        SDDMM) are gathered in the order of the row's keys: no hardware prefetcher follows that. The rows of
        the key PREFETCH_AHEAD positions on are requested now, when the matrix outgrows the core's L2 cache
        (SpMM on R-MAT 2^16, 16 MB: 53 -> 21 ms; figures for the small matrices at PREFETCH_BYTES).

        Compressed rows that a lookup loop in the body walks at this loop's key (``L[j, :]`` inside the loop
        over ``j`` of triangle counting) are requested the same way: the key's row start, and the row pointer
        of the key twice as far on (its load would be a cache miss too), when the index array outgrows L2.
        Triangles on R-MAT 2^16, with int32 intermediate indices: 64 -> 45 ms (best of 12)."""
        walks = _row_walks(s.body, s.var)
        if walks:
            n = self.key_ahead(cur, "rahead", [idx for _, idx in walks], d)
            for ptr, idx in walks:
                self.line(d + 1, f"_prefetch_at({idx}, {ptr}[{n}_k])")
            self.line(d + 1, f"if {n} + {PREFETCH_AHEAD} < {cur.idx}.shape[0]:")
            for ptr in dict.fromkeys(ptr for ptr, _ in walks):
                self.line(d + 2, f"_prefetch_at({ptr}, {cur.idx}[{n} + {PREFETCH_AHEAD}])")
        rows = _row_gathers(s.body, s.var)
        if rows:
            n = self.key_ahead(cur, "ahead", rows, d)
            self.prefetch_lines(cur, rows, f"{n}_k", d + 1)

    def claimed(self, s: L.For, d: int) -> None:
        """A parallel loop as one task per thread (``prange`` over the threads), each running the setup once and
        then taking iterations from a shared counter until none is left: a thread that is faster, or has
        drawn lighter iterations, takes more of them (numba's ``prange`` splits iterations evenly up front)."""
        start, stop = self.expr(s.start), self.expr(s.stop)
        nxt = f"{s.var}_next"
        self.line(d, f"{nxt} = np.zeros(1, dtype=np.int64)")
        # (nthreads is a parameter of every kernel with a parallel loop, checked by the verifier; calling
        # numba.get_num_threads() here would make Numba refuse to cache the kernel)
        self.line(d, f"for {s.var}_thread in prange(0, max(min(nthreads, {stop} - {start}), 0)):")
        if s.setup:
            self.stmts(s.setup, d + 1)
        self.line(d + 1, "while True:")
        self.line(d + 2, f"{s.var} = {start} + _claim({nxt})")
        self.line(d + 2, f"if {s.var} >= {stop}:")
        self.line(d + 3, "break")
        self.stmts(s.body, d + 2)

    def prefetch_lines(self, cur: L.Cursor, rows: list[str], key: str, d: int) -> None:
        """Request every cache line of row ``key`` of each 2-D array in ``rows``."""
        for a in rows:
            self.line(d, f"for {cur.name}_line in range(0, {a}.shape[1], 64 // {a}.itemsize):")
            self.line(d + 1, f"_prefetch({a}, {key}, {cur.name}_line)")

    def key_ahead(self, cur: L.Cursor, tag: str, arrays: list[str], d: int) -> str:
        """Open ``if`` the cursor's row has a key PREFETCH_AHEAD positions on and one of ``arrays`` is over
        PREFETCH_BYTES; inside, ``<n>_k`` is that key. Returns ``n``, the position's name."""
        n = f"{cur.name}_{tag}"
        self.line(d, f"{n} = {cur.pos} + {PREFETCH_AHEAD}")
        self.line(d, f"if {n} < {cur.idx}.shape[0] and ({_past_l2(arrays)}):")
        self.line(d + 1, f"{n}_k = np.int64({cur.idx}[{n}])")
        return n

    def lookup_loop(self, s: L.Forall, d: int) -> None:
        """The loop over the driver's keys with each looked-up position and whether it was found."""
        it = s.iteration
        (cur,) = it.drivers
        self.line(d, f"for {cur.pos} in range({self.expr(cur.start)}, {self.expr(cur.stop)}):")
        self.line(d + 1, f"{s.var} = np.int64({cur.idx}[{cur.pos}])")
        self.line(d + 1, f"{cur.found} = True")
        for lk in it.lookups:
            if it.membership:
                self.line(d + 1, f"{lk.found} = (({lk.name}_bits[{s.var} >> 6] >> ({s.var} & 63)) & 1) != 0")
                continue
            self.line(d + 1, f"{lk.pos} = {lk.name}_map[{s.var}]")
            self.line(d + 1, f"{lk.found} = ({lk.pos} >= {lk.name}_s) & ({lk.pos} < {lk.name}_e)")

    def speculated_lookups(self, s: L.Forall, d: int) -> None:
        """A lookup loop whose body only updates scalars, in two versions chosen by the hit rate so far.

        Where most keys are found (a dense community of ego-Facebook: 60%), the update is computed for every
        key and kept only on a hit, with no branch (triangles 11.8 -> 8.7 ms). Below one hit in two the branch
        version stays: it skips the loads of the misses, whose positions (another row's) would be cache misses
        on a large graph (R-MAT), and its branch is often predictable (bcsstk13's band, 34% hits: 2.8 ms with
        the branch, 3.6 without). A key of an empty segment is never found, and a miss's position is -1 or
        another row's, so that the speculative loads stay inside the arrays.

        A membership test (a bitmap) loads nothing at a miss: the branch-free loop only, with no hit rate
        (triangles, one process, median of 30-40: bcsstk13 2.42 -> 2.24 ms, wiki-Vote 9.67 -> 9.26,
        ego-Facebook 5.09 -> 4.87, R-MAT 2^18 425 -> 386; every hit rate threshold from 1/2 to 1/16 measured
        as the two-version loop)."""
        it = s.iteration
        (cur,) = it.drivers
        m = it.lookups[0].name
        hit = " & ".join(lk.found for lk in it.lookups)
        self.line(d, "if " + " and ".join(f"{lk.name}_s < {lk.name}_e" for lk in it.lookups) + ":")
        if it.membership:
            self.lookup_loop(s, d + 1)
            for b in s.body:
                self.speculated_update(b, hit, d + 2)
            return
        self.line(d + 1, f"if {m}_hit * 2 >= {m}_try:")
        self.lookup_loop(s, d + 2)
        for b in s.body:
            self.speculated_update(b, hit, d + 3)
        self.line(d + 3, f"{m}_hit += {hit}")
        self.line(d + 1, "else:")
        self.lookup_loop(s, d + 2)
        self.line(d + 3, f"if {hit}:")
        self.stmts(s.body, d + 4)
        self.line(d + 4, f"{m}_hit += 1")
        self.line(d + 1, f"{m}_try += {self.expr(cur.stop)} - {self.expr(cur.start)}")
        # the rate of the recent rows, not of the whole run
        self.line(d + 1, f"if {m}_try > 65536:")
        self.line(d + 2, f"{m}_hit >>= 1")
        self.line(d + 2, f"{m}_try >>= 1")

    def speculated_update(self, b: L.Set, hit: str, d: int) -> None:
        """``b`` computed whatever ``hit`` is and kept only if it holds, without a branch. An update
        ``x = x op e`` combines ``e`` or the operator's identity, so that the select stays off the chain of
        updates of ``x`` (a FEM matrix's triangles: 7.5 -> 5.8 ms); other updates select the new value."""
        v = b.value
        if v == L.Const(True, "bool"):
            self.line(d, f"{b.name} = {b.name} | {hit}")
            return
        op = {"+": "sum", "*": "prod", "max2": "max", "min2": "min", "or": "any", "and": "all"}.get(
            getattr(v, "op", None))
        ident = _identity_const(op, v.dtype) if op is not None and len(v.args) == 2 \
            and v.args[0] == L.Var(b.name) else None
        if ident is not None:
            # (computed first: a load inside a conditional expression would be a branch again). The operator is
            # printed by expr (casts, NaN rules) with a placeholder operand, replaced by the selected text.
            self.line(d, f"{b.name}_upd = {self.expr(v.args[1])}")
            self.line(d, f"{b.name} = {self.expr(replace(v, args=(v.args[0], L.Var(f'{b.name}_sel'))))}"
                      .replace(f"{b.name}_sel", f"({b.name}_upd if {hit} else {ident})"))
            return
        self.line(d, f"{b.name}_upd = {self.expr(v)}")
        self.line(d, f"{b.name} = {b.name}_upd if {hit} else {b.name}")

    def range_first(self, s: L.Forall) -> str | None:
        """The range workspace this dense loop accumulates into directly, if its first/combine test is
        still undecided here."""
        for b in s.body:
            if isinstance(b, L.Accumulate) and b.value is not None:
                ws = self.ws_kind.get(b.ws)
                if ws is not None and ws.kind == "range" and b.ws not in self.ws_mode:
                    return b.ws
        return None

    def identity_keys(self, idx: str) -> bool:
        return any(ws.kind == "range" and idx == f"{name}_cidx" for name, ws in self.ws_kind.items())

    # ------------------------------------------------------------ workspaces

    def workspace(self, s: L.Workspace, d: int) -> None:
        self.ws_kind[s.name] = s
        w, dt, width = s.name, NP_TYPE[s.dtype], self.expr(s.width)
        self.line(d, f"{w}_width = {width}")
        self.line(d, f"{w}_n = 0")
        self.line(d, f"{w}_stamp = 0")
        if s.kind == "range":
            # every key is written by a row's first contribution: no marks, the compacted row is the
            # value array itself (all keys) or nothing
            self.line(d, f"{w}_val = np.empty({w}_width, dtype={dt})")
            self.line(d, f"{w}_first = True")
            self.line(d, f"{w}_cidx = np.arange({w}_width)")
            self.line(d, f"{w}_cval = {w}_val")
            return
        if s.kind in ("dense", "auto"):
            # the dense arrays' width: an auto workspace wider than AUTO_DENSE_MAX has none (hash rows only)
            dw = f"{w}_dw" if s.kind == "auto" else f"{w}_width"
            if s.kind == "auto":
                self.line(d, f"{dw} = {w}_width if {w}_width <= {AUTO_DENSE_MAX} else 0")
            self.line(d, f"{w}_val = np.empty({dw}, dtype={dt})")
            self.line(d, f"{w}_mark = np.full({dw}, -1, dtype=np.int32)")
            self.line(d, f"{w}_list = np.empty({dw}, dtype=np.int64)")
            self.line(d, f"{w}_dcval = np.empty({dw}, dtype={dt})")
            # the bitmaps that put a row's keys in order (_bit_sort); all zero between rows
            self.line(d, f"{w}_bits = np.zeros(({dw} + 63) >> 6, dtype=np.uint64)")
            self.line(d, f"{w}_top = np.zeros(({dw} + 4095) >> 12, dtype=np.uint64)")
        if s.kind == "auto":
            self.line(d, f"{w}_flag = np.zeros({w}_dw, dtype=np.uint8)")
        if s.kind in ("hash", "auto"):
            self.line(d, f"{w}_cap = 8")
            self.line(d, f"{w}_key = np.full({w}_cap, -1, dtype=np.int64)")
            self.line(d, f"{w}_hval = np.empty({w}_cap, dtype={dt})")
            self.line(d, f"{w}_slot = np.empty(8, dtype=np.int64)")
            self.line(d, f"{w}_hlist = np.empty(8, dtype=np.int64)")
            self.line(d, f"{w}_hcval = np.empty(8, dtype={dt})")
        if s.kind == "sort":
            self.line(d, f"{w}_cap = 8")
            self.line(d, f"{w}_skey = np.empty({w}_cap, dtype=np.int64)")
            self.line(d, f"{w}_sval = np.empty({w}_cap, dtype={dt})")
            self.line(d, f"{w}_cidx = np.empty({w}_cap, dtype=np.int64)")
            self.line(d, f"{w}_cval = np.empty({w}_cap, dtype={dt})")
            return
        if s.kind == "hash":
            self.line(d, f"{w}_hash = True")
        elif s.kind == "dense":
            self.line(d, f"{w}_hash = False")
        else:
            self.line(d, f"{w}_hash = False")
        # the arrays a cursor walks after Compact (rebound by every Compact: the hash buffers may grow)
        if s.kind == "hash":
            self.line(d, f"{w}_cidx = {w}_hlist")
            self.line(d, f"{w}_cval = {w}_hcval")
        else:
            self.line(d, f"{w}_cidx = {w}_list")
            self.line(d, f"{w}_cval = {w}_dcval")

    def reset(self, s: L.Reset, d: int) -> None:
        ws = self.ws_kind[s.ws]
        w = s.ws
        if ws.kind == "range":
            self.line(d, f"{w}_first = True")
            self.line(d, f"{w}_n = 0")
            return
        if ws.kind == "sort":
            # every contribution is a pair until the merge: room for the row's whole work
            self.line(d, f"if {w}_cap < {self.expr(s.flops)}:")
            self.line(d + 1, f"{w}_cap = max({self.expr(s.flops)}, 2 * {w}_cap)")
            self.line(d + 1, f"{w}_skey = np.empty({w}_cap, dtype=np.int64)")
            self.line(d + 1, f"{w}_sval = np.empty({w}_cap, dtype={NP_TYPE[ws.dtype]})")
            self.line(d + 1, f"{w}_cidx = np.empty({w}_cap, dtype=np.int64)")
            self.line(d + 1, f"{w}_cval = np.empty({w}_cap, dtype={NP_TYPE[ws.dtype]})")
            self.line(d, f"{w}_n = 0")
            return
        if ws.kind in ("hash", "auto"):
            # clear the slots the previous row used (only if it used the hash table)
            self.line(d, f"if {w}_hash:")
            self.line(d + 1, f"for {w}_t in range({w}_n):")
            self.line(d + 2, f"{w}_key[{w}_slot[{w}_t]] = -1")
            self.line(d, f"{w}_need = min({self.expr(s.flops)}, {w}_width)")
            if ws.kind == "auto":
                # a row whose work is small next to a wide output touches few cache lines of a dense
                # accumulator, each likely a cache miss: hash it. Up to DENSE_WIDTH keys the dense arrays stay
                # in the core's cache and always win.
                self.line(d, f"{w}_hash = {w}_dw == 0 or ({w}_width > {DENSE_WIDTH} and {w}_need * 32 < {w}_width)")
            self.line(d, f"if {w}_hash:")
            self.line(d + 1, f"if {w}_cap < 2 * {w}_need:")
            self.line(d + 2, f"while {w}_cap < 2 * {w}_need:")
            self.line(d + 3, f"{w}_cap *= 2")
            self.line(d + 2, f"{w}_key = np.full({w}_cap, -1, dtype=np.int64)")
            self.line(d + 2, f"{w}_hval = np.empty({w}_cap, dtype={NP_TYPE[ws.dtype]})")
            self.line(d + 1, f"if {w}_slot.shape[0] < {w}_need:")
            self.line(d + 2, f"{w}_slot = np.empty({w}_need, dtype=np.int64)")
            self.line(d + 2, f"{w}_hlist = np.empty({w}_need, dtype=np.int64)")
            self.line(d + 2, f"{w}_hcval = np.empty({w}_need, dtype={NP_TYPE[ws.dtype]})")
        if ws.kind in ("dense", "auto"):
            self.line(d, f"if {w}_stamp == {STAMP_LIMIT}:")
            self.line(d + 1, f"{w}_mark[:] = -1")
            self.line(d + 1, f"{w}_stamp = 0")
        self.line(d, f"{w}_stamp += 1")
        self.line(d, f"{w}_n = 0")

    def accumulate(self, s: L.Accumulate, d: int) -> None:
        ws = self.ws_kind[s.ws]
        w = s.ws
        if s.op != "pattern":
            self.ws_op[w] = s.op
        self.line(d, f"{w}_k = {self.expr(s.key)}")
        if s.value is not None:
            self.line(d, f"{w}_v = {self.expr(s.value)}")
        if ws.kind == "range":
            if s.value is None:
                return
            if self.ws_mode.get(w) == "first":
                # the loop's first contribution stores; any later one in the same body (the copies of a
                # jammed step) combines with it. The dense loop restores the mode for its next copy.
                self.line(d, f"{w}_val[{w}_k] = {w}_v")
                self.ws_mode[w] = "combine"
                return
            if self.ws_mode.get(w) == "combine":
                self.line(d, f"{w}_val[{w}_k] = {combine(s.op, f'{w}_val[{w}_k]', f'{w}_v', ws.dtype)}")
                return
            self.line(d, f"if {w}_first:")
            self.line(d + 1, f"{w}_val[{w}_k] = {w}_v")
            self.line(d, "else:")
            self.line(d + 1, f"{w}_val[{w}_k] = {combine(s.op, f'{w}_val[{w}_k]', f'{w}_v', ws.dtype)}")
            return
        if ws.kind == "sort":
            self.line(d, f"{w}_skey[{w}_n] = {w}_k")
            if s.value is not None:
                self.line(d, f"{w}_sval[{w}_n] = {w}_v")
            self.line(d, f"{w}_n += 1")
            return
        if ws.kind == "auto" and w in self.ws_mode:
            if self.ws_mode[w] == "hash":
                self.accumulate_hash(s, d)
            elif self.ws_mode[w] == "flags":
                self.line(d, f"{w}_flag[{w}_k] = 1")
            else:
                self.accumulate_dense(s, d)
        elif ws.kind == "auto":
            self.line(d, f"if {w}_hash:")
            self.accumulate_hash(s, d + 1)
            self.line(d, "else:")
            self.accumulate_dense(s, d + 1)
        elif ws.kind == "hash":
            self.accumulate_hash(s, d)
        else:
            self.accumulate_dense(s, d)

    def accumulate_dense(self, s: L.Accumulate, d: int) -> None:
        w = s.ws
        if w in self.unordered and s.value is None:
            # only counted: a key is new when its mark is stale, with no branch to mispredict and no list
            # (about half the tests of a product's keys go either way)
            self.line(d, f"{w}_n += np.int64({w}_mark[{w}_k] != {w}_stamp)")
            self.line(d, f"{w}_mark[{w}_k] = {w}_stamp")
            return
        self.line(d, f"if {w}_mark[{w}_k] != {w}_stamp:")
        self.line(d + 1, f"{w}_mark[{w}_k] = {w}_stamp")
        self.line(d + 1, f"{w}_list[{w}_n] = {w}_k")
        self.line(d + 1, f"{w}_n += 1")
        if s.value is not None:
            self.line(d + 1, f"{w}_val[{w}_k] = {w}_v")
            self.line(d, "else:")
            self.line(d + 1, f"{w}_val[{w}_k] = {combine(s.op, f'{w}_val[{w}_k]', f'{w}_v', self.ws_kind[w].dtype)}")

    def accumulate_hash(self, s: L.Accumulate, d: int) -> None:
        w = s.ws
        self.line(d, f"{w}_h = ({w}_k * 2654435761) & ({w}_cap - 1)")
        self.line(d, f"while {w}_key[{w}_h] != -1 and {w}_key[{w}_h] != {w}_k:")
        self.line(d + 1, f"{w}_h = ({w}_h + 1) & ({w}_cap - 1)")
        self.line(d, f"if {w}_key[{w}_h] == -1:")
        self.line(d + 1, f"{w}_key[{w}_h] = {w}_k")
        self.line(d + 1, f"{w}_slot[{w}_n] = {w}_h")
        self.line(d + 1, f"{w}_hlist[{w}_n] = {w}_k")
        self.line(d + 1, f"{w}_n += 1")
        if s.value is not None:
            self.line(d + 1, f"{w}_hval[{w}_h] = {w}_v")
            self.line(d, "else:")
            self.line(d + 1, f"{w}_hval[{w}_h] = {combine(s.op, f'{w}_hval[{w}_h]', f'{w}_v', self.ws_kind[w].dtype)}")

    def compact(self, s: L.Compact, d: int) -> None:
        ws = self.ws_kind[s.ws]
        w = s.ws
        if ws.kind == "range":
            self.line(d, f"{w}_n = 0 if {w}_first else {w}_width")
            return
        if ws.kind == "sort":
            self.compact_sort(s, d)
            return
        if ws.kind == "auto" and w in self.ws_mode:
            if self.ws_mode[w] == "flags":
                self.line(d, f"{w}_n = 0")
                self.line(d, f"for {w}_t in range({w}_width):")
                self.line(d + 1, f"{w}_n += {w}_flag[{w}_t]")
                self.line(d + 1, f"{w}_flag[{w}_t] = 0")
            elif self.ws_mode[w] == "hash":
                self.compact_hash(s, d)
                self.line(d, f"{w}_cidx = {w}_hlist")
                self.line(d, f"{w}_cval = {w}_hcval")
            else:
                self.compact_dense(s, d)
                self.line(d, f"{w}_cidx = {w}_list")
                self.line(d, f"{w}_cval = {w}_dcval")
        elif ws.kind == "auto":
            self.line(d, f"if {w}_hash:")
            self.compact_hash(s, d + 1)
            self.line(d + 1, f"{w}_cidx = {w}_hlist")
            self.line(d + 1, f"{w}_cval = {w}_hcval")
            self.line(d, "else:")
            self.compact_dense(s, d + 1)
            self.line(d + 1, f"{w}_cidx = {w}_list")
            self.line(d + 1, f"{w}_cval = {w}_dcval")
        elif ws.kind == "hash":
            self.compact_hash(s, d)
            # the hash arrays may have been reallocated by Reset
            self.line(d, f"{w}_cidx = {w}_hlist")
            self.line(d, f"{w}_cval = {w}_hcval")
        else:
            self.compact_dense(s, d)

    def compact_sort(self, s: L.Compact, d: int) -> None:
        w = s.ws
        if s.values:
            self.line(d, f"_sort_pairs({w}_skey, {w}_sval, 0, {w}_n)")
        else:
            self.line(d, f"_sort_segment({w}_skey, 0, {w}_n)")
        self.line(d, f"{w}_m = 0")
        self.line(d, f"for {w}_t in range({w}_n):")
        self.line(d + 1, f"if {w}_m > 0 and {w}_cidx[{w}_m - 1] == {w}_skey[{w}_t]:")
        if s.values:
            acc = f"{w}_cval[{w}_m - 1]"
            self.line(d + 2, f"{acc} = {combine(self.ws_op[w], acc, f'{w}_sval[{w}_t]', self.ws_kind[w].dtype)}")
        else:
            self.line(d + 2, "pass")
        self.line(d + 1, "else:")
        self.line(d + 2, f"{w}_cidx[{w}_m] = {w}_skey[{w}_t]")
        if s.values:
            self.line(d + 2, f"{w}_cval[{w}_m] = {w}_sval[{w}_t]")
        self.line(d + 2, f"{w}_m += 1")
        self.line(d, f"{w}_n = {w}_m")

    def direct_values(self, w: str) -> bool:
        """The compacted values of workspace ``w`` are read where they accumulated, at their key
        (``val[cidx[p]]``), with no gathered copy: always for a dense workspace, and in the dense branch of an
        ``auto`` one whose readers are printed inside its unswitched row. Reading them in place instead of
        gathering them into a row first (one more pass over every entry of the result) made SpGEMM's
        numeric kernel 10-30% faster."""
        ws = self.ws_kind.get(w)
        if ws is None:
            return False
        return ws.kind == "dense" or (w in self.in_place and self.ws_mode.get(w) == "dense")

    def compact_dense(self, s: L.Compact, d: int) -> None:
        w = s.ws
        if w in self.unordered:
            return
        if s.ordered:
            self.sort_keys(f"{w}_list", w, d)
        if s.values and not self.direct_values(w):
            self.line(d, f"for {w}_t in range({w}_n):")
            self.line(d + 1, f"{w}_dcval[{w}_t] = {w}_val[{w}_list[{w}_t]]")

    def sort_keys(self, keys: str, w: str, d: int, bitmaps: str | None = None) -> None:
        """Put the row's distinct keys in order: by insertion for a few, else through the workspace's bitmaps
        (linear: a row of a few hundred keys sorts 3-4x faster than by heapsort). ``bitmaps``: the test that
        the workspace has them (an auto workspace past AUTO_DENSE_MAX keys has none: heapsort)."""
        self.line(d, f"if {w}_n <= 16{f' or not ({bitmaps})' if bitmaps else ''}:")
        self.line(d + 1, f"_sort_segment({keys}, 0, {w}_n)")
        self.line(d, "else:")
        self.line(d + 1, f"_bit_sort({keys}, {w}_n, {w}_bits, {w}_top)")

    def compact_hash(self, s: L.Compact, d: int) -> None:
        w = s.ws
        if w in self.unordered:
            return
        if not s.ordered:
            pass  # read in the order touched (loop_ir/unordered.py)
        elif self.ws_kind[w].kind == "auto":
            self.sort_keys(f"{w}_hlist", w, d, bitmaps=f"{w}_dw > 0")
        else:
            # (a hash workspace may be far wider than any bitmap should be)
            self.line(d, f"_sort_segment({w}_hlist, 0, {w}_n)")
        if s.values:
            self.line(d, f"for {w}_t in range({w}_n):")
            self.line(d + 1, f"{w}_k = {w}_hlist[{w}_t]")
            self.line(d + 1, f"{w}_h = ({w}_k * 2654435761) & ({w}_cap - 1)")
            self.line(d + 1, f"while {w}_key[{w}_h] != {w}_k:")
            self.line(d + 2, f"{w}_h = ({w}_h + 1) & ({w}_cap - 1)")
            self.line(d + 1, f"{w}_hcval[{w}_t] = {w}_hval[{w}_h]")


def _moving(var: str, followers) -> set[str]:
    """The names that change along a loop over ``var``: the variable and its followers' positions."""
    return {var} | {c.pos for c in followers} | {c.found for c in followers}


def _hoist_invariants(body: list, moving: set[str], prefix: str | None = None) -> tuple[list, list]:
    """Accumulate values of a loop body made only of accumulations, with each largest operation or load
    that reads none of the ``moving`` names replaced by a name (``<prefix>_inv<n>``, by default the first
    accumulation's workspace) computed before the loop."""
    if not body or not all(isinstance(b, L.Accumulate) and b.value is not None for b in body):
        return body, []
    prefix = prefix or body[0].ws
    hoisted: list[tuple[str, L.Expr]] = []

    def visit(e: L.Expr) -> L.Expr:
        # a load too (SpMM's A[i, j]: the body writes only its workspace, so the load cannot change along
        # the loop, and LLVM, not knowing that, would repeat it at every step)
        if ((isinstance(e, L.Op) and e.op not in ("select",)) or isinstance(e, L.Load)) \
                and not (L.expr_names(e) & moving):
            name = f"{prefix}_inv{len(hoisted)}"
            hoisted.append((name, e))
            return L.Var(name)
        if isinstance(e, L.Op):
            return replace(e, args=tuple(visit(a) for a in e.args))
        if isinstance(e, L.Cast):
            return replace(e, arg=visit(e.arg))
        return e

    out = [replace(b, value=visit(b.value)) for b in body]
    return (out, hoisted) if hoisted else (body, [])


def _past_l2(arrays: list[str]) -> str:
    """The run-time test that one of ``arrays`` is over PREFETCH_BYTES (prefetching pays only past L2)."""
    return " or ".join(f"{a}.size * {a}.itemsize > {PREFETCH_BYTES}" for a in arrays)


def _row_gathers(body, var: str) -> list[str]:
    """The 2-D arrays that ``body`` loads at ``[var, <a dense loop's variable>]``, in order of appearance."""
    dense_vars = {b.var for b in L.walk_stmts(body) if isinstance(b, L.Forall) and b.iteration.kind == "dense"}
    found: list[str] = []
    for st in L.walk_stmts(body):
        for f in dataclasses.fields(st):
            value = getattr(st, f.name)
            for root in (value if isinstance(value, tuple) else (value,)):
                if not isinstance(root, L.Expr):
                    continue
                for e in L.walk_expr(root):
                    if (isinstance(e, L.Load) and len(e.index) == 2 and e.index[0] == L.Var(var)
                            and isinstance(e.index[1], L.Var) and e.index[1].name in dense_vars
                            and e.array not in found):
                        found.append(e.array)
    return found


def _row_walks(body, var: str) -> list[tuple[str, str]]:
    """``(row pointer, index array)`` of each compressed row a lookup loop in ``body`` walks from ``ptr[var]``.
    Only lookup loops: they do so little per key that the next row's cache miss is not hidden behind the work
    (SpGEMM's rows, whose keys are accumulated, measured the same with and without: R-MAT 2^16 805 / 836 ms)."""
    found: list[tuple[str, str]] = []
    for st in L.walk_stmts(body):
        if isinstance(st, L.Forall) and st.iteration.lookups:
            it = st.iteration
            for c in it.drivers + it.followers + it.lookups:
                if (isinstance(c.start, L.Load) and c.start.index == (L.Var(var),)
                        and (c.start.array, c.idx) not in found):
                    found.append((c.start.array, c.idx))
    return found


def _speculable(body, positions: set[str]) -> bool:
    """``body`` is only scalar updates whose values may be computed whether or not they are kept: every load
    is indexed by ``positions`` (a loop's key or cursor positions) and nothing else is read from memory."""
    if not body or not all(isinstance(b, L.Set) for b in body):
        return False
    for b in body:
        for e in L.walk_expr(b.value):
            if isinstance(e, L.Load) and not all(isinstance(x, L.Var) and x.name in positions for x in e.index):
                return False
            if isinstance(e, L.Locate):
                return False
    return True


def _loop_flags(s: L.Forall) -> list[str]:
    """Names the loop's body sets to True unconditionally and never reads."""
    flags = [b.name for b in s.body if isinstance(b, L.Set) and b.value == L.Const(True, "bool")]
    if not flags:
        return []
    rest = [b for b in s.body if not (isinstance(b, L.Set) and b.name in flags)]
    used = L.free_names(rest)
    return [f for f in flags if f not in used]


def _identity_const(op: str, dtype: str) -> str | None:
    """The exact identity of ``op`` on ``dtype`` as source text (None: not an identity-based reduction)."""
    if dtype == "bool":
        value = {"any": False, "max": False, "all": True, "min": True}.get(op)
        return None if value is None else str(value)
    if dtype in _FLOATS:
        value = {"sum": -0.0, "prod": 1.0, "max": -math.inf, "min": math.inf}.get(op)
    else:
        info = np.iinfo(NP_TYPE[dtype].replace("np.", ""))
        value = {"sum": 0, "count": 0, "prod": 1, "max": int(info.min), "min": int(info.max)}.get(op)
    return None if value is None else const(value, dtype)


def _direct_plan(body: tuple, i: int, ws_kind: dict, fills: dict) -> tuple | None:
    """``(end, array, leading index, identity)`` when ``body[i]`` resets a range workspace whose compacted row
    ``body[end + 1]`` copies whole into a dense output row (``_direct_row``): the printer leaves out the
    compaction's copy. ``identity`` (source text, or None) is the exact identity the row then starts at, when
    its accumulations use one operator that has one and the output's fill is a constant: the row accumulates
    in the workspace from that identity and is copied out whole at its end (the fill where it got no
    contribution). Without one, the row accumulates in the output row itself."""
    s = body[i]
    if not isinstance(s, L.Reset) or ws_kind[s.ws].kind != "range":
        return None
    end = next((j for j in range(i + 1, len(body)) if isinstance(body[j], L.Compact) and body[j].ws == s.ws), None)
    if end is None or end + 1 >= len(body):
        return None
    ws = ws_kind[s.ws]
    row = _direct_row(body[end + 1], ws)
    if row is None:
        return None
    array, index = row
    ops = {a.op for a in L.walk_stmts(body[i + 1:end]) if isinstance(a, L.Accumulate) and a.ws == s.ws}
    ident = _identity_const(ops.pop(), ws.dtype) if len(ops) == 1 and isinstance(fills.get(array), L.Const) \
        else None
    return end, array, index, ident


def _written_whole(module: L.Module) -> set[str]:
    """The dense arrays a host allocates with a fill and hands straight to a kernel that writes every element
    of them before reading it: they need no fill (np.empty, not a memset of reused memory).

    The kernel must be the row loop that ``Lowerer.chunked`` builds over compressed rows (chunks ``row_split``
    cuts from 0 to the row count, so every row is visited once), and each row, unconditionally, a workspace
    row printed in place in ``array[row]`` that starts at its operator's identity (``_direct_plan``): its
    every element is written first. The array must be read nowhere else in the kernel."""
    kernels = {k.name: k for k in module.kernels}
    host = module.host
    fills = {a.name: a.fill for a in L.walk_stmts(host) if isinstance(a, L.Alloc) and a.fill is not None}
    whole: set[str] = set()
    for a, call in zip(host, host[1:]):
        if not (isinstance(a, L.Alloc) and isinstance(a.fill, L.Const) and len(a.shape) == 2
                and isinstance(call, L.Invoke) and call.kernel in kernels and a.name in call.args):
            continue
        if _kernel_writes_rows(kernels[call.kernel].body, a, fills):
            whole.add(a.name)
    return whole


def _kernel_writes_rows(body: tuple, a: L.Alloc, fills: dict) -> bool:
    loops = [s for s in body if isinstance(s, L.For)]
    if len(loops) != 1 or any(not isinstance(s, (L.Let, L.For)) for s in body):
        return False
    chunk = loops[0]
    ws_kind = {w.name: w for w in chunk.setup if isinstance(w, L.Workspace)}
    inner = [s for s in chunk.body if isinstance(s, L.For)]
    if len(inner) != 1 or inner[0].start != L.Const(0, "i64") or inner[0].stop != L.Const(1, "i64"):
        return False
    blocks = inner[0].body
    if len(blocks) != 3 or not all(isinstance(x, L.Let) for x in blocks[:2]) or not isinstance(blocks[2], L.For):
        return False
    lo, hi, rows = blocks
    cuts = [lo.value, hi.value]
    for k, cut in enumerate(cuts):
        # row_split(chunk + k, nchunks, n, p, q) with the chunk loop running over [0, nchunks)
        if not (isinstance(cut, L.Op) and cut.op == "row_split"
                and cut.args[0] == L.Op("+", (L.Var(chunk.var), L.Const(k, "i64")), "i64")
                and cut.args[1] == chunk.stop and chunk.start == L.Const(0, "i64")
                and cut.args[2] == a.shape[0] and cuts[0].args[1:] == cut.args[1:]):
            return False
    if rows.start != L.Var(lo.name) or rows.stop != L.Var(hi.name):
        return False
    row_body = rows.body
    for i in range(len(row_body)):
        plan = _direct_plan(row_body, i, ws_kind, fills)
        if plan is None:
            continue
        end, array, index, ident = plan
        if (array == a.name and ident is not None and index == (L.Var(rows.var),)
                and ws_kind[row_body[i].ws].width == a.shape[1]):
            # everything else the kernel runs, the row's own copy into the array excepted
            others = (*body[:body.index(chunk)], *chunk.setup, *(x for x in chunk.body if x is not inner[0]),
                      lo, hi, *row_body[:end + 1], *row_body[end + 2:])
            return a.name not in L.free_names(others)
    return False


def _direct_row(s: L.Stmt, ws: L.Workspace) -> tuple[str, tuple] | None:
    """(array, leading index) when ``s`` copies the compacted range workspace ``ws``, key by key and without a
    conversion, into ``array[leading..., key]``."""
    if not isinstance(s, L.Forall) or len(s.body) != 1 or not isinstance(s.body[0], L.Store):
        return None
    it = s.iteration
    if (it.kind != "intersect" or len(it.drivers) != 1 or it.followers or it.lookups
            or it.drivers[0].idx != f"{ws.name}_cidx"):
        return None
    cur = it.drivers[0]
    store = s.body[0]
    value = store.value
    if isinstance(value, L.Cast) and value.dtype == ws.dtype:
        value = value.arg
    if value != L.Load(f"{ws.name}_cval", (L.Var(cur.pos),)) or not store.index:
        return None
    *lead, key = store.index
    moving = {s.var, cur.pos, cur.found}
    if key != L.Var(s.var) or any(L.expr_names(x) & moving for x in lead):
        return None
    return store.array, tuple(lead)


def _rereads(s: L.Forall, e: L.Expr) -> bool:
    """The body of ``s`` (its jammed body too) reads the load ``e``, and writes nothing ``e`` reads."""
    if not isinstance(e, L.Load):
        return False
    stmts = (*s.body, *(s.jam.body if s.jam is not None else ()))
    if L.expr_names(e) & L.assigned_names(stmts):
        return False
    stack = [x for t in L.walk_stmts(stmts) for x in _stmt_exprs(t)]
    while stack:
        x = stack.pop()
        if x == e:
            return True
        stack.extend(L.expr_children(x))
    return False


def _stmt_exprs(t: L.Stmt):
    """The expressions a statement holds directly (its loop bounds and cursors' segments included)."""
    for f in dataclasses.fields(t):
        v = getattr(t, f.name)
        if isinstance(v, L.Expr):
            yield v
        elif isinstance(v, tuple):
            yield from (x for x in v if isinstance(x, L.Expr))
        elif isinstance(v, L.Iteration):
            if v.extent is not None:
                yield v.extent
            for c in (*v.drivers, *v.followers, *v.lookups):
                yield c.start
                yield c.stop


_MERGED = {"sum": "+", "max": "max2", "min": "min2"}


def _merge_accumulations(body: tuple, ws_kind: dict) -> tuple:
    """Runs of accumulations into the same key of the same workspace (the copies of a jammed step:
    attention's and SpMM's ``Y[i, f] += p_u * V[j_u, f]``) as one accumulation of their values combined
    pairwise: the workspace element is loaded and stored once per step, not once per copy (LLVM cannot keep
    it in a register, a store to it might change the rows it reads). This reassociates a sum, so it is done
    only when the kernels may reassociate; max and min give the same value in any order (a tie of 0.0 and
    -0.0 may keep the other zero). Narrow floats (rounded after every operation) and workspaces a value
    reads are left alone."""
    out: list = []
    run: list = []

    def flush() -> None:
        if len(run) > 1:
            dt = ws_kind[run[0].ws].dtype
            vals = [L.Cast(a.value, dt) for a in run]
            while len(vals) > 1:
                vals = [L.Op(_MERGED[run[0].op], tuple(vals[k:k + 2]), dt) if k + 1 < len(vals) else vals[k]
                        for k in range(0, len(vals), 2)]
            out.append(replace(run[0], value=vals[0]))
        else:
            out.extend(run)
        run.clear()

    for s in body:
        ws = ws_kind.get(s.ws) if isinstance(s, L.Accumulate) else None
        if (ws is None or s.op not in _MERGED or s.value is None or ws.dtype not in ("f32", "f64", "i32", "i64")
                or L.expr_names(s.value) & set(L.workspace_arrays(s.ws))):
            flush()
            out.append(s)
            continue
        if run and (run[0].ws, run[0].key, run[0].op) != (s.ws, s.key, s.op):
            flush()
        run.append(s)
    flush()
    return tuple(out)


def _value_readers(body: tuple, end: int, ws: str) -> int:
    """How many statements right after ``body[end]`` (a Compact of ``ws``) read its compacted values, when
    they are loops that touch no workspace of their own and nothing later in ``body`` reads them (so that
    they can be printed in each branch of the unswitched row); 0 otherwise."""
    cval = f"{ws}_cval"
    n = 0
    while end + 1 + n < len(body):
        s = body[end + 1 + n]
        if not isinstance(s, L.Forall) or cval not in L.free_names((s,)):
            break
        if any(isinstance(x, (L.Workspace, L.Reset, L.Accumulate, L.Compact, L.TopKSelect))
               for x in L.walk_stmts((s,))):
            return 0
        n += 1
    if n and cval in L.free_names(body[end + 1 + n:]):
        return 0
    return n


def _slice_copies(loop: L.For) -> list[tuple[str, L.Expr, str, L.Expr]] | None:
    """``for t in range(0, n): dst[at + t] = src[from + t]; ...`` as (dst, at, src, from) per statement, when
    every statement of the body is such a copy between 1-D arrays, no array written is read, and the offsets
    do not depend on ``t``; else None."""
    if not (isinstance(loop.start, L.Const) and loop.start.value == 0) or not loop.body:
        return None

    def offset(ix: tuple) -> L.Expr | None:
        if len(ix) != 1 or not (isinstance(ix[0], L.Op) and ix[0].op == "+"):
            return None
        a, b = ix[0].args
        base = a if b == L.Var(loop.var) else b if a == L.Var(loop.var) else None
        return base if base is not None and loop.var not in L.expr_names(base) else None

    out = []
    for st in loop.body:
        if not (isinstance(st, L.Store) and isinstance(st.value, L.Load)):
            return None
        at, frm = offset(st.index), offset(st.value.index)
        if at is None or frm is None:
            return None
        out.append((st.array, at, st.value.array, frm))
    written = {dst for dst, *_ in out}
    if any(src in written for _, _, src, _ in out) or len(written) != len(out):
        return None
    return out


def _is_zero(e: L.Expr) -> bool:
    """A constant whose bytes are all zero (0, False, +0.0; not -0.0)."""
    return isinstance(e, L.Const) and e.value == 0 and math.copysign(1.0, float(e.value)) > 0


def _counts_keys(s: L.Stmt, ws: str) -> bool:
    """``s`` walks the compacted keys of ``ws`` alone and only counts them (order-independent)."""
    if not isinstance(s, L.Forall):
        return False
    it = s.iteration
    return (it.kind == "intersect" and len(it.drivers) == 1 and not it.followers
            and it.drivers[0].idx == f"{ws}_cidx" and _counts_only(s))


def _counts_only(s: L.Forall) -> bool:
    """The loop's body is ``n = n + 1`` and nothing else."""
    if len(s.body) != 1 or not isinstance(s.body[0], L.Set):
        return False
    st = s.body[0]
    return (isinstance(st.value, L.Op) and st.value.op == "+" and len(st.value.args) == 2
            and st.value.args[0] == L.Var(st.name) and isinstance(st.value.args[1], L.Const)
            and st.value.args[1].value == 1 and st.name not in (s.var,))


def combine(op: str, acc: str, x: str, dtype: str) -> str:
    narrow = dtype in _NARROW
    match op:
        case "sum" | "count":
            text = f"{acc} + {x}"
        case "prod":
            text = f"{acc} * {x}"
        case "max":
            return f"_max2({acc}, {x})"
        case "min":
            return f"_min2({acc}, {x})"
        case "any":
            return f"{acc} or {x}"
        case "all":
            return f"{acc} and {x}"
        case _:
            raise TypeError(f"internal error: workspace operator {op!r}")
    return conv(dtype, text) if narrow else text


def c_max(names: list[str]) -> str:
    out = names[0]
    for n in names[1:]:
        out = f"max({out}, {n})"
    return out


def const(v, dtype: str) -> str:
    if dtype == "bool":
        return "True" if v else "False"
    if dtype in _FLOATS:
        f = float(v)
        if dtype == "f16":
            f = float(np.float16(f))
        elif dtype == "bf16":
            from sparsedsl.runtime.dtypes import round_bf16
            f = float(round_bf16(np.float32(f)))
        if math.isnan(f):
            text = "np.nan"
        elif math.isinf(f):
            text = "np.inf" if f > 0 else "-np.inf"
        else:
            text = repr(f)
        return text if dtype == "f64" else f"np.float32({text})"
    iv = int(v)
    return str(iv) if dtype == "i64" else f"{NP_TYPE[dtype]}({iv})"


def render_module(module: L.Module, header: str = "", reassoc: bool = True, compile_host: bool = True) -> str:
    """The Python source of ``module``.

    ``reassoc``: kernels carry LLVM's ``reassoc`` fast-math flag and nothing else of fast-math (no
    no-NaN / no-infinity / signed-zero / reciprocal / approximate-function assumptions), so that a float
    reduction such as a dot product can use vector lanes (6x on SDDMM). The spec allows exactly this
    (language.md § 5: results may differ by reassociation only). False keeps every sum in source order."""
    p = Printer()
    if header:
        for line in header.splitlines():
            p.line(0, "# " + line)
    p.fills = {a.name: a.fill for a in L.walk_stmts(module.host) if isinstance(a, L.Alloc) and a.fill is not None}
    p.written_whole = _written_whole(module)
    prelude_at = len(p.lines)
    p.lines.append(PRELUDE)
    flags = "{'reassoc'}" if reassoc else "False"
    p.reassoc = reassoc
    p.line(0, f"_KJIT = dict(cache=_CACHE, fastmath={flags}, error_model=\"numpy\")")
    if any(k.parallel for k in module.kernels):
        p.line(0, "# parallel kernels run their pranges only, not one launch per allocation (parallel_options.py)")
        p.line(0, source_text("_PRANGE_ONLY"))
    if module.kernels:
        p.line(0, "# kernels index with unsigned positions: no wrap of negative indices to compute (subscripts.py)")
        p.line(0, f"{WRAP} = np.uint64")
    for k in module.kernels:
        p.line(0, "")
        p.line(0, "")
        par = "_PRANGE_ONLY" if k.parallel else "False"
        p.line(0, f"@numba.njit(parallel={par}, **_KJIT)")
        p.line(0, f"def {k.name}({', '.join(k.params)}):")
        p.ws_kind = {}
        body_at = len(p.lines)
        p.stmts(k.body, 1)
        p.lines[body_at:] = [unsigned_subscripts(text) for text in p.lines[body_at:]]
    params = ", ".join(q.name for q in module.params)
    p.line(0, "")
    p.line(0, "")
    if compile_host and any(isinstance(s, L.Loop) for s in module.host):
        # a repeat: the whole host program (allocations, kernel calls, the loop and its test) is compiled
        # too, so that an iteration costs no Python; its results come back as one flat tuple
        flat = [a for r in module.results for a in r.arrays]
        p.host_jit = True
        p.line(0, "@numba.njit(**_KJIT)")
        p.line(0, f"def _host({params}{', ' if params else ''}nthreads):")
        p.stmts(module.host, 1)
        p.line(1, f"return ({', '.join(flat)}{',' if len(flat) == 1 else ''})")
        p.host_jit = False
        p.line(0, "")
        p.line(0, "")
        p.line(0, f"def run({params}):")
        p.line(1, f"_r = _host({params}{', ' if params else ''}numba.get_num_threads())")
        first = 0
        items = []
        for r in module.results:
            parts = [f"_r[{first + k}]" for k in range(len(r.arrays))]
            first += len(r.arrays)
            items.append(f"{r.tensor!r}: ({', '.join(parts)}{',' if len(parts) == 1 else ''})")
        p.line(1, f"return {{{', '.join(items)}}}")
        return _finish(p.lines, prelude_at)
    p.line(0, f"def run({params}):")
    # read here, not inside a kernel: a kernel calling numba.get_num_threads() cannot be cached
    p.line(1, "nthreads = numba.get_num_threads()")
    p.stmts(module.host, 1)
    narrowed = {a.name for a in L.walk_stmts(module.host) if isinstance(a, L.Alloc) and a.narrow is not None}

    def arrays(r: L.Result) -> list[str]:
        if r.kind == "csr" and r.arrays[1] in narrowed:
            # the row pointers were summed in int64: they take the index array's type (int32 when it fits)
            return [f"{r.arrays[0]}.astype({r.arrays[1]}.dtype, copy=False)", *r.arrays[1:]]
        return list(r.arrays)

    items = ", ".join(f"{r.tensor!r}: ({', '.join(arrays(r))}{',' if len(r.arrays) == 1 else ''})"
                      for r in module.results)
    p.line(1, f"return {{{items}}}")
    return _finish(p.lines, prelude_at)


def _finish(lines: list[str], at: int) -> str:
    """The module text, with only the prelude helpers the code after the prelude (at ``lines[at]``) uses."""
    lines[at] = prelude_for("\n".join(lines[at + 1:]))
    return "\n".join(lines) + "\n"
