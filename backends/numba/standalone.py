"""The by-name entry point of the stand-alone module that ``sparsedsl compile --target numba -o DIR`` writes.

The generated module's ``run(...)`` takes the raw arrays of the loop IR's parameters in order (row pointers,
column indices, values, sizes) and returns raw arrays: what ``Executable.run`` feeds it after sparsedsl's
binder has checked and converted the inputs. Without sparsedsl, a user has none of that, so the artifact
also gets ``compute(**inputs)``: inputs by their declared names, as the Python API takes them (scipy sparse
matrices and arrays of any format, numpy arrays, Python and numpy scalars, anything ``numpy.asarray`` reads;
declared defaults apply), outputs by name as scipy sparse arrays (when scipy is installed; else the tuple
``(indptr, indices, data, shape)``), numpy arrays and numpy scalars.

It binds inputs as interface.md says the Python API does: numpy's ``same_kind`` casting plus a range check for
integers, f16 and bf16 values rounded to their grid, unsorted and duplicate sparse indices summed into a copy
(inputs are never modified), sizes taken from the shapes and checked for agreement. ``blockdiag`` and ``nm``
inputs have no type outside sparsedsl that could hold them with their structure guaranteed, so ``compute``
refuses them by name; ``run`` still takes their arrays.

What is rendered from the program is three tables of plain literals (names through ``repr``, never pasted
as code); the code that reads them (``_ENTRY``) is the same text for every program.
"""
from __future__ import annotations

import inspect
import math
from typing import Sequence

from sparsedsl.runtime.dtypes import round_bf16
from sparsedsl.tensor_ir import nodes as T

# the kernel's array dtype per sparsedsl dtype (f16 and bf16 travel as float32 on their grid) and the dtype
# an output is given back in; mirrors the backend's KERNEL_DTYPE / NUMPY_DTYPE (tested to agree)
KERNEL_NAMES = {"bool": "bool", "i8": "int8", "i32": "int32", "i64": "int64", "f16": "float32",
                "bf16": "float32", "f32": "float32", "f64": "float64"}
OUTPUT_NAMES = dict(KERNEL_NAMES, f16="float16")


def _dim(d) -> object:
    return int(d) if isinstance(d, int) else str(d)


def _py(x) -> str:
    """A literal as Python source: strings through repr (never pasted), inf and nan as float('inf') etc."""
    if type(x).__module__ == "numpy":
        x = x.item()  # a numpy scalar: its Python value
    if isinstance(x, float) and not math.isfinite(x):
        return f"float({str(x)!r})"
    if isinstance(x, tuple):
        return "(" + ", ".join(_py(v) for v in x) + ("," if len(x) == 1 else "") + ")"
    assert x is None or isinstance(x, (bool, int, float, str)), x
    return repr(x)


def _table(name: str, table: dict | tuple) -> list[str]:
    """``name = {...}`` or ``name = (...)``, an entry a line."""
    if isinstance(table, dict):
        return [f"{name} = {{", *(f"    {_py(k)}: {_py(v)}," for k, v in table.items()), "}"]
    return [f"{name} = (", *(f"    {_py(v)}," for v in table), ")"]


def render_entry(program: T.Program, params: Sequence, results: Sequence) -> str:
    """The text appended to the generated module: the tables and ``compute``.

    ``params`` are the loop IR's parameters in ``run``'s order (``kind``, ``role``, ``tensor``); ``results``
    its results in the order ``run`` returns them (``tensor``, ``kind``, ``dtype``)."""
    decls = {d.name: d for d in program.decls}
    inputs = {}
    for d in program.decls:
        if d.kind != "input":
            continue
        t = d.type
        inputs[d.name] = (t.format.name, tuple(_dim(p) for p in t.format.params), t.dtype,
                          tuple(_dim(s) for s in t.shape), None if d.default is None else d.default.value)
    order = tuple((p.tensor, p.kind, p.role) for p in params)
    outputs = {}
    for r in results:
        t = decls[r.tensor].type
        fill = decls[r.tensor].fill
        outputs[r.tensor] = (r.kind, t.format.name, tuple(_dim(p) for p in t.format.params), r.dtype,
                             tuple(_dim(s) for s in t.shape), 0 if fill is None else fill.value)
    lines = [
        "",
        "",
        "# ---- compute(**inputs): the program's inputs and outputs by name (see compute's docstring)",
        "# input -> (format, format parameters, dtype, shape, default)",
        *_table("_INPUTS", inputs),
        "# run()'s parameters in order: (tensor, storage, role)",
        *_table("_PARAMS", order),
        "# output -> (storage, format, format parameters, dtype, shape, fill)",
        *_table("_OUTPUTS", outputs),
        *_table("_KERNEL_DTYPE", KERNEL_NAMES),
        *_table("_OUTPUT_DTYPE", OUTPUT_NAMES),
    ]
    # bf16 rounding: the runtime's own function (numpy only), so that both round alike
    return "\n".join(lines) + "\n" + _ENTRY + "\n\n" + inspect.getsource(round_bf16)


# The program-independent half of the entry point. It is Python source for the generated module, kept here as
# text (like codegen.PRELUDE) so that the module stays stand-alone; tests/test_standalone.py runs it.
_ENTRY = '''

def compute(**inputs):
    """Run the program on its inputs given by their declared names; the outputs by name (a dict).

    A sparse input may be any scipy sparse matrix or array (or a dense array: its nonzeros are the entries),
    a dense input anything numpy.asarray reads, a scalar a Python or numpy number; an input with a default
    may be left out. Sparse outputs come back as scipy sparse arrays of the declared format (csr for a
    format scipy lacks; f16 values in float32, as scipy has no float16) when scipy is installed, else as
    (indptr, indices, data, shape) of their rows.
    Inputs are never modified. A wrong input raises TypeError (a name, a kind) or ValueError (a value)."""
    unknown = [name for name in inputs if name not in _INPUTS]
    if unknown:
        raise TypeError(f"compute() got an unknown input {unknown[0]!r}; the program's inputs: "
                        + ", ".join(_INPUTS))
    sizes = {}
    arrays = {}
    for name, (fmt, fparams, dtype, shape, default) in _INPUTS.items():
        if name not in inputs:
            if default is None:
                raise TypeError(f"compute() is missing input {name!r}")
            arrays[name] = {"scalar.scalar": np.dtype(_KERNEL_DTYPE[dtype]).type(default)}
            continue
        value = inputs[name]
        if fmt == "bsr" and hasattr(value, "blocksize"):
            # a block size named by a size: the bsr value's own blocks fix it
            for p, n in zip(fparams, value.blocksize):
                if not isinstance(p, int) and sizes.setdefault(p, int(n)) != n:
                    raise ValueError(f"input {name!r}: blocks of {n} where size {p} = {sizes[p]}")
        needed = {storage + "." + role for tensor, storage, role in _PARAMS if tensor == name}
        arrays[name] = _bind_input(name, value, fmt, fparams, dtype, shape, sizes, needed)
    args = []
    for tensor, storage, role in _PARAMS:
        if storage == "size":
            if tensor not in sizes:
                raise ValueError(f"no input fixes size {tensor}")
            args.append(np.int64(sizes[tensor]))
        else:
            args.append(arrays[tensor][storage + "." + role])
    raw = run(*args)
    return {name: _give_output(name, raw[name], sizes) for name in _OUTPUTS}


def _array(name, value, dtype):
    """numpy's view of value, refused by name unless it holds booleans or numbers."""
    try:
        a = np.asarray(value)
    except Exception as e:  # numpy cannot read it (a torch sparse tensor, ...): say which input, and why
        raise TypeError(f"input {name!r}: numpy cannot read a {type(value).__name__}: {e}") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"input {name!r}: {a.dtype} values, expected {dtype}")
    return a


def _cast(name, value, dtype):
    """value as the kernel's array of dtype, by numpy's same_kind rule (an integer must fit)."""
    a = _array(name, value, dtype)
    storage = np.dtype(_KERNEL_DTYPE[dtype])
    target = np.dtype(np.float16) if dtype == "f16" else storage
    if a.dtype != np.bool_ and not np.can_cast(a.dtype, target, "same_kind"):
        if not (a.dtype.kind in "iu" and target.kind in "iub"):
            raise TypeError(f"input {name!r}: {a.dtype} values cannot be cast to {dtype}")
    if a.dtype.kind in "iu" and target.kind in "iub" and a.size:
        lo, hi = (0, 1) if target == np.bool_ else (np.iinfo(target).min, np.iinfo(target).max)
        if int(a.min()) < lo or int(a.max()) > hi:
            raise ValueError(f"input {name!r}: a value does not fit {dtype}")
    if dtype == "f16":
        return np.array(a, dtype=np.float16).astype(np.float32)
    if dtype == "bf16":
        return round_bf16(a)
    return np.array(a, dtype=storage)


def _fix_sizes(name, shape, got, sizes):
    """Bind the size names of a declared shape to the extents got, checking literals and earlier bindings."""
    if len(got) != len(shape):
        raise ValueError(f"input {name!r} has {len(got)} dimension(s), the program declares {len(shape)}")
    for dim, n in zip(shape, got):
        if isinstance(dim, int):
            if n != dim:
                raise ValueError(f"input {name!r}: extent {n} where the program declares {dim}")
        elif sizes.setdefault(dim, int(n)) != n:
            raise ValueError(f"input {name!r}: size {dim} = {n}, but an earlier input fixes {dim} = {sizes[dim]}")


def _index(a):
    a = np.asarray(a)
    return np.ascontiguousarray(a) if a.dtype in (np.int32, np.int64) else np.ascontiguousarray(a, dtype=np.int64)


def _check_structure(name, value):
    """A scipy csr, csc, bsr or coo value's index arrays, checked before scipy or a kernel reads them: scipy's
    own conversions (tocoo, toarray) trust them, and a falling indptr or an index past the end makes them
    write out of bounds (a crash, or a silently wrong matrix). Objects scipy checks on every change (lil,
    dok, dia) and anything else pass through."""
    fmt = getattr(value, "format", None)
    if fmt not in ("csr", "csc", "bsr", "coo") or not hasattr(value, "shape"):
        return
    shape = tuple(int(n) for n in value.shape)
    if fmt == "coo":
        coords = tuple(value.coords) if hasattr(value, "coords") else (value.row, value.col)
        nnz = np.asarray(value.data).shape[0]
        for d, (c, n) in enumerate(zip(coords, shape)):
            c = np.asarray(c)
            if c.shape != (nnz,):
                raise ValueError(f"input {name!r}: coordinate array {d} has shape {c.shape}, expected ({nnz},)")
            if nnz and (c.min() < 0 or c.max() >= n):
                raise ValueError(f"input {name!r}: a coordinate of dimension {d} is out of range [0, {n})")
        return
    if fmt == "bsr":
        bm, bn = (int(b) for b in value.blocksize)
        major, minor, label = shape[0] // bm, shape[1] // bn, "block column"
    elif len(shape) == 1:
        major, minor, label = 1, shape[0], "index"
    else:
        major, minor = (shape[0], shape[1]) if fmt == "csr" else (shape[1], shape[0])
        label = "column" if fmt == "csr" else "row"
    ptr, idx = np.asarray(value.indptr), np.asarray(value.indices)
    stored = min(idx.shape[0], np.asarray(value.data).shape[0]) if idx.ndim == 1 else -1
    if ptr.ndim != 1 or ptr.shape[0] != major + 1 or stored < 0:
        raise ValueError(f"input {name!r}: its {fmt} indptr has shape {ptr.shape}, expected ({major + 1},)")
    falls = np.flatnonzero(ptr[1:] < ptr[:-1])
    if falls.size:
        k = int(falls[0])
        raise ValueError(f"input {name!r}: its {fmt} indptr decreases at position {k + 1} "
                         f"({int(ptr[k])} -> {int(ptr[k + 1])})")
    if ptr[0] != 0 or ptr[-1] > stored:
        raise ValueError(f"input {name!r}: its {fmt} indptr runs from {int(ptr[0])} to {int(ptr[-1])}, "
                         f"expected 0 to at most the {stored} stored entries")
    nnz = int(ptr[-1])
    if nnz and (idx[:nnz].min() < 0 or idx[:nnz].max() >= minor):
        raise ValueError(f"input {name!r}: a {label} index is out of range [0, {minor})")


def _trimmed(value):
    """A scipy csr, csc or bsr value without the spare room some keep after indptr[-1] (not part of the
    matrix; scipy's tocoo reads it as entries): the same object when there is none, else a new one over
    slices of its arrays (the user's value is not changed)."""
    if getattr(value, "format", None) not in ("csr", "csc", "bsr"):
        return value
    end = int(value.indptr[-1])
    if value.indices.shape[0] == end and value.data.shape[0] == end:
        return value
    return type(value)((value.data[:end], value.indices[:end], value.indptr), shape=value.shape)


def _coords(name, value, rank):
    """The entries of a sparse or dense value: (coordinate arrays, values, shape), duplicates summed later."""
    if hasattr(value, "tocoo"):
        coo = value.tocoo()
        shape = tuple(int(n) for n in coo.shape)
        if rank == 1 and len(shape) == 2 and 1 in shape:
            coords = (coo.col,) if shape[0] == 1 else (coo.row,)
            return coords, np.asarray(coo.data), (shape[1] if shape[0] == 1 else shape[0],)
        coords = tuple(coo.coords) if hasattr(coo, "coords") else (coo.row, coo.col)
        return coords, np.asarray(coo.data), shape
    a = _array(name, value, "numbers")
    if a.ndim != rank:
        raise ValueError(f"input {name!r} has {a.ndim} dimension(s), the program declares {rank}")
    coords = np.nonzero(a)
    return coords, a[coords], a.shape


def _canonical_csr(value):
    """The (indptr, indices) of a scipy csr whose rows are already sorted and free of duplicates, else None:
    checked here in O(nnz), not trusted from scipy's flag, and cheaper than sorting a large graph again.
    The value has passed _check_structure and _trimmed (indptr valid, indices in range, no spare room)."""
    if getattr(value, "format", None) != "csr" or len(value.shape) != 2:
        return None
    ptr, idx = np.asarray(value.indptr), np.asarray(value.indices)
    nnz = idx.size
    rising = np.diff(idx) > 0
    inner = ptr[1:-1]
    rising[inner[(inner > 0) & (inner < nnz)] - 1] = True  # a row's first entry follows another row's last
    return (ptr, idx) if rising.all() else None


def _rows(name, value, dtype):
    """A rank-2 sparse (or dense) value as canonical CSR arrays (sorted rows, duplicates summed) in a copy."""
    canonical = _canonical_csr(value)
    if canonical is not None:
        # the values are cast into a new array; the index arrays are only read
        return canonical[0], canonical[1], _cast(name, np.asarray(value.data)[:canonical[1].size], dtype), \
            tuple(int(n) for n in value.shape)
    coords, data, shape = _coords(name, value, 2)
    if len(shape) != 2:
        raise ValueError(f"input {name!r} has {len(shape)} dimension(s), the program declares 2")
    data = _cast(name, data, dtype)
    rows, cols = (np.asarray(c, dtype=np.int64) for c in coords)
    if rows.size and (rows.min() < 0 or cols.min() < 0 or rows.max() >= shape[0] or cols.max() >= shape[1]):
        raise ValueError(f"input {name!r}: an index is out of range")
    key = rows * shape[1] + cols
    order = np.argsort(key, kind="stable")
    key, data = key[order], data[order]
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    if dtype == "bool":
        data = np.logical_or.reduceat(data, starts) if data.size else data
    else:
        data = np.add.reduceat(data, starts).astype(data.dtype) if data.size else data
    key = key[starts]
    rows, cols = key // shape[1], key % shape[1]
    ptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=ptr[1:])
    if dtype == "f16" or dtype == "bf16":
        data = _cast(name, data, dtype)  # a sum of grid values may fall between them
    return ptr, cols, np.ascontiguousarray(data), shape


def _bind_input(name, value, fmt, fparams, dtype, shape, sizes, needed):
    """The arrays of input name that run() takes (needed: "storage.role" keys), from the user's value."""
    if fmt in ("blockdiag", "nm"):
        raise TypeError(f"input {name!r} is {fmt}: no type outside sparsedsl holds one with its structure "
                        "guaranteed; give run() its arrays")
    _check_structure(name, value)
    value = _trimmed(value)
    if not shape:
        a = _cast(name, value, dtype)
        if a.size != 1:
            raise ValueError(f"input {name!r} is a scalar, got {a.size} values")
        return {"scalar.scalar": a.reshape(())[()]}
    if fmt == "dense":
        a = value.toarray() if hasattr(value, "toarray") else value
        a = np.ascontiguousarray(_cast(name, a, dtype))
        _fix_sizes(name, shape, a.shape, sizes)
        return {"dense.val": a}
    if len(shape) == 1:
        coords, data, got = _coords(name, value, 1)
        _fix_sizes(name, shape, got, sizes)
        data = _cast(name, data, dtype)
        values = np.zeros(got, dtype=data.dtype)
        present = np.zeros(got, dtype=np.bool_)
        idx = np.asarray(coords[0], dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= got[0]):
            raise ValueError(f"input {name!r}: an index is out of range")
        if dtype == "bool":
            np.logical_or.at(values, idx, data)
        else:
            np.add.at(values, idx, data)
        present[idx] = True
        if dtype == "f16" or dtype == "bf16":
            values = _cast(name, values, dtype)  # a sum of grid values may fall between them
        return {"bitmap.val": values, "bitmap.mask": present, "dense.val": values}
    ptr, cols, data, got = _rows(name, value, dtype)
    _fix_sizes(name, shape, got, sizes)
    bound = {"csr.ptr": _index(ptr), "csr.idx": _index(cols), "csr.val": data}
    if needed <= set(bound):
        return bound  # read by rows only (the usual case): no per-entry row array is made
    rows = np.repeat(np.arange(got[0]), np.diff(ptr))
    if needed & {"dense.val", "bitmap.val", "bitmap.mask"}:
        dense = np.zeros(got, dtype=data.dtype)
        dense[rows, cols] = data
        present = np.zeros(got, dtype=np.bool_)
        present[rows, cols] = True
        bound.update({"dense.val": dense, "bitmap.val": dense, "bitmap.mask": present})
    if fmt == "csc" and needed & {"csr.bptr", "csr.bidx", "csr.bval"}:
        order = np.lexsort((rows, cols))
        cptr = np.zeros(got[1] + 1, dtype=np.int64)
        np.cumsum(np.bincount(cols, minlength=got[1]), out=cptr[1:])
        bound.update({"csr.bptr": cptr, "csr.bidx": rows[order], "csr.bval": data[order]})
    elif fmt == "bsr" and needed & {"csr.bptr", "csr.bidx", "csr.bval"}:
        bm, bn = (p if isinstance(p, int) else sizes.get(p) for p in fparams)
        if bm is None or bn is None:
            raise ValueError(f"input {name!r}: no input fixes its block size")
        if bm <= 0 or bn <= 0 or got[0] % bm or got[1] % bn:
            raise ValueError(f"input {name!r}: shape {got} is not a whole number of {bm}x{bn} blocks")
        ncb = got[1] // bn
        block = (rows // bm) * ncb + cols // bn
        keys = np.unique(block)
        bptr = np.zeros(got[0] // bm + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys // ncb, minlength=got[0] // bm), out=bptr[1:])
        blocks = np.zeros((keys.size, bm, bn), dtype=data.dtype)
        blocks[np.searchsorted(keys, block), rows % bm, cols % bn] = data
        bound.update({"csr.bptr": bptr, "csr.bidx": keys % ncb, "csr.bval": blocks.reshape(-1)})
    return {k: (_index(v) if k.endswith(("ptr", "idx")) else v) for k, v in bound.items() if k in needed}


def _give_output(name, arrays, sizes):
    storage, fmt, fparams, dtype, shape, fill = _OUTPUTS[name]
    out = np.dtype(_OUTPUT_DTYPE[dtype])
    if storage == "scalar":
        return np.asarray(arrays[0]).astype(out)[()]
    if storage == "dense":
        return np.asarray(arrays[0]).astype(out, copy=False)
    extents = tuple(d if isinstance(d, int) else sizes[d] for d in shape)
    if out == np.float16 and fmt not in ("dense", "auto"):
        out = np.dtype(np.float32)  # scipy.sparse has no float16: the f16 values come back exact in float32
    if storage == "bitmap":
        values, present = np.asarray(arrays[0]), np.asarray(arrays[1])
        if fmt in ("dense", "auto"):
            return np.where(present, values, fill).astype(out)
        coords = np.nonzero(present)
        data = values[coords].astype(out)
    else:
        ptr, idx, data = (np.asarray(a) for a in arrays)
        data = data.astype(out, copy=False)
        coords = (np.repeat(np.arange(extents[0]), np.diff(ptr)), idx)
    try:
        import scipy.sparse as sp
    except ImportError:
        if storage == "bitmap":
            return (np.array([0, coords[0].size]), coords[0], data, extents)
        return (ptr, idx, data, extents)
    if len(extents) == 1:
        return sp.coo_array((data, coords), shape=extents).tocsr()
    if storage == "bitmap":
        m = sp.coo_array((data, coords), shape=extents).tocsr()
    else:
        m = sp.csr_array((data, idx, ptr), shape=extents)
    if fmt in ("coo", "csc"):
        return m.asformat(fmt)
    if fmt == "bsr":
        blocksize = tuple(p if isinstance(p, int) else sizes[p] for p in fparams)
        return m.tobsr(blocksize=blocksize)
    return m
'''
