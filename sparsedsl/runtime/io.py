"""Files and command-line values: what ``sparsedsl run --input NAME=VALUE`` reads and ``--output DIR`` writes.

A VALUE (interface.md) is one of

* a path: ``.mtx`` / ``.mtx.gz`` (Matrix Market, ``scipy.io.mmread``), ``.npy``, ``.npz`` (a scipy sparse
  matrix saved by ``scipy.sparse.save_npz``, or arrays saved by ``np.savez``: the only array, or the one named
  like the input), ``.el`` / ``.txt`` edge lists (below);
* a scalar literal: ``0.1``, ``3``, ``0x2A``, ``-1e-3``, ``inf``, ``nan``, ``true``, ``false``;
* ``random:SEED``: a value of the declared type drawn from ``numpy.random.default_rng(SEED)``.

Edge lists: one edge per line, ``u v`` or ``u v w`` separated by whitespace (commas also accepted), 0-based
node ids, ``#`` and ``%`` start comments. The matrix is ``n x n`` with ``n`` = largest id + 1, unless the
declaration fixes the extents (a literal, or a size already bound by another input or ``--size``); an input
whose two dimensions are different sizes gets rows from the sources and columns from the targets. Missing
weights are 1; repeated edges are summed (as scipy does).

Random values: dense floats uniform in [0, 1), integers in [0, 10), bools fair coin flips; sparse formats hold
about 10% of their coordinates (``bsr``: 10% of the blocks; ``blockdiag``: every diagonal block; ``nm(N, M)``:
N entries in every group of M, fewer in a short last group); a ``bool`` sparse value is a pattern.

Every failure (missing file, unreadable contents, unknown extension) is an ``SdslInputError`` naming the input
and the path.
"""
from __future__ import annotations

import gzip
import math
import os
import re
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse as sp

from sparsedsl.core.errors import SdslInputError
from sparsedsl.runtime.convert import to_user
from sparsedsl.runtime.dtypes import round_bf16
from sparsedsl.runtime.tensors import (
    COO, FORMAT_CLASSES, BlockDiag, Dense, Tensor, _check_block_shape, _check_blockdiag_shape,
)
from sparsedsl.tensor_ir import nodes
from sparsedsl.tensor_ir.types import NUMPY_DTYPE, is_float, is_int

__all__ = ["read_value", "write_output", "read_edge_list", "random_value", "parse_scalar"]

RANDOM_DENSITY = 0.1

_INT_RE = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)")
_FLOAT_RE = re.compile(r"[+-]?((\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|inf|nan)", re.IGNORECASE)


def parse_scalar(text: str):
    """The Python value of a scalar literal, or None if ``text`` is not one."""
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if _INT_RE.fullmatch(t):
        return int(t, 0) if not re.fullmatch(r"[+-]?0\d+", t) else int(t, 10)
    if _FLOAT_RE.fullmatch(t):
        return float(t)
    return None


def read_value(text: str, decl: nodes.Decl, sizes: dict[str, int], size_overrides: dict[str, int]):
    """The user value that ``text`` denotes for input ``decl`` (bound later by ``convert.bind_inputs``)."""
    name = decl.name
    if text.startswith("random:"):
        seed_text = text[len("random:"):]
        try:
            seed = int(seed_text, 0)
        except ValueError:
            raise SdslInputError(f"input {name}: 'random:{seed_text}' needs an integer seed", decl.span) from None
        try:
            return random_value(decl, seed, sizes, size_overrides)
        except (MemoryError, ValueError, OverflowError) as exc:  # numpy: "array is too big", a seed out of range
            raise SdslInputError(f"input {name}: cannot draw 'random:{seed_text}' for sizes "
                                 f"{ {**sizes, **size_overrides} }: {type(exc).__name__}: {exc}", decl.span) from None
    scalar = parse_scalar(text)
    if scalar is not None and (decl.type.is_scalar or not os.path.exists(text)):
        if not decl.type.is_scalar:
            raise SdslInputError(f"input {name}: expected a tensor ({decl.type}) but got the scalar {text!r}",
                                 decl.span)
        return scalar
    return _read_file(text, decl, sizes, size_overrides)


def _read_file(path_text: str, decl: nodes.Decl, sizes, size_overrides):
    name = decl.name
    path = Path(path_text)
    lower = path.name.lower()
    if not path.is_file():
        why = "is a folder, not a file" if path.is_dir() else "no such file"
        hint = "" if decl.type.is_scalar or path.suffix else " (a VALUE is a path, a scalar or random:SEED)"
        raise SdslInputError(f"input {name}: cannot read {path_text!r}: {why}{hint}", decl.span)
    try:
        if lower.endswith((".mtx", ".mtx.gz", ".mtx.bz2")):
            return _read_matrix_market(path, decl)
        if lower.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        if lower.endswith(".npz"):
            return _read_npz(path, decl)
        if lower.endswith((".el", ".txt", ".el.gz", ".txt.gz")):
            return read_edge_list(path, decl, _known_extents(decl, sizes, size_overrides))
    except SdslInputError as err:
        raise SdslInputError(err.message, err.span or decl.span) from None
    except Exception as err:  # any reader failure is the file's fault, reported without a traceback
        raise SdslInputError(f"input {name}: cannot read {path_text!r}: {type(err).__name__}: {err}",
                             decl.span) from None
    raise SdslInputError(
        f"input {name}: cannot read {path_text!r}: unknown file type (expected .mtx, .mtx.gz, .npy, .npz, .el or .txt)",
        decl.span)


def _read_matrix_market(path: Path, decl: nodes.Decl):
    """A Matrix Market file as scipy reads it, with two adjustments a user of ``run`` expects: a ``pattern``
    file's entries are ``true`` (scipy gives float ones, which an integer input would refuse as floats; bool
    converts to any dtype), and an n x 1 or 1 x n matrix given for a rank-1 input is that vector (``run``
    writes a rank-1 sparse output as an n x 1 column)."""
    value = scipy.io.mmread(str(path))
    if scipy.io.mminfo(str(path))[4] == "pattern" and sp.issparse(value):
        value = sp.coo_array(value)
        value = sp.coo_array((np.ones(value.nnz, dtype=bool), value.coords), shape=value.shape)
    if decl.type.rank == 1 and len(value.shape) == 2 and 1 in value.shape:
        axis = 0 if value.shape[1] == 1 else 1
        if sp.issparse(value):
            value = sp.coo_array(value)
            value = sp.coo_array((value.data, (value.coords[axis],)), shape=(value.shape[axis],))
        else:
            value = np.asarray(value).reshape(-1)
    return value


def _read_npz(path: Path, decl: nodes.Decl):
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.files)
        if "format" in keys and "shape" in keys:
            return sp.load_npz(path)
        if len(keys) == 1:
            return z[keys[0]]
        if decl.name in keys:
            return z[decl.name]
    if not keys:
        raise SdslInputError(f"input {decl.name}: {str(path)!r} holds no arrays", decl.span)
    raise SdslInputError(f"input {decl.name}: {str(path)!r} holds arrays {', '.join(keys)}; "
                         f"name one of them {decl.name} or save a single array", decl.span)


def _known_extents(decl: nodes.Decl, sizes, size_overrides) -> list[int | None]:
    out = []
    for d in decl.type.shape:
        if isinstance(d, int):
            out.append(d)
        elif d in sizes:
            out.append(int(sizes[d]))
        elif d in size_overrides:
            out.append(int(size_overrides[d]))
        else:
            out.append(None)
    return out


def read_edge_list(path, decl: nodes.Decl, extents: list[int | None]):
    """A scipy csr_array from an edge-list file (see the module docstring)."""
    name = decl.name
    if decl.type.rank != 2:
        raise SdslInputError(f"input {name}: an edge list gives a matrix, but {name} is {decl.type}", decl.span)
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    us, vs, ws = [], [], []
    weighted = False
    with opener(path, "rt") as f:
        for lineno, raw in enumerate(f, 1):
            line = re.split(r"[#%]", raw, maxsplit=1)[0].replace(",", " ").split()
            if not line:
                continue
            if len(line) not in (2, 3):
                raise SdslInputError(f"input {name}: {str(path)!r} line {lineno}: expected 'u v' or 'u v w', "
                                     f"got {raw.strip()!r}", decl.span)
            try:
                u, v = int(line[0]), int(line[1])
            except ValueError:
                raise SdslInputError(f"input {name}: {str(path)!r} line {lineno}: node ids must be integers, "
                                     f"got {raw.strip()!r}", decl.span) from None
            if u < 0 or v < 0:
                raise SdslInputError(f"input {name}: {str(path)!r} line {lineno}: negative node id", decl.span)
            w = 1
            if len(line) == 3:
                weighted = True
                w = parse_scalar(line[2])
                if w is None or isinstance(w, bool):
                    raise SdslInputError(f"input {name}: {str(path)!r} line {lineno}: bad weight {line[2]!r}",
                                         decl.span)
            us.append(u)
            vs.append(v)
            ws.append(w)
    rows = np.array(us, dtype=np.int64)
    cols = np.array(vs, dtype=np.int64)
    if weighted and any(isinstance(w, float) for w in ws):
        data = np.array(ws, dtype=np.float64)
    else:
        data = np.array(ws, dtype=np.int64)
    d0, d1 = decl.type.shape
    max_u = int(rows.max()) + 1 if rows.size else 0
    max_v = int(cols.max()) + 1 if cols.size else 0
    if d0 == d1:
        n = extents[0] if extents[0] is not None else max(max_u, max_v)
        shape = (n, n)
    else:
        shape = (extents[0] if extents[0] is not None else max_u, extents[1] if extents[1] is not None else max_v)
    if max_u > shape[0] or max_v > shape[1]:
        raise SdslInputError(f"input {name}: {str(path)!r} has node ids up to {max(max_u, max_v) - 1}, "
                             f"outside the shape {shape}", decl.span)
    return sp.coo_array((data, (rows, cols)), shape=shape).tocsr()


# ---------------------------------------------------------------- random values

def _resolve(dim, decl: nodes.Decl, sizes, size_overrides) -> int:
    if isinstance(dim, int):
        return dim
    if dim in sizes:
        return int(sizes[dim])
    if dim in size_overrides:
        return int(size_overrides[dim])
    raise SdslInputError(f"size {dim} is not fixed by any input; pass --size {dim}=...", decl.span)


def _random_values(rng: np.random.Generator, dtype: str, shape) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if is_int(dtype):
        return rng.integers(0, 10, size=shape).astype(NUMPY_DTYPE[dtype])
    assert is_float(dtype)
    vals = rng.random(shape)
    if dtype == "bf16":
        return round_bf16(vals)
    return vals.astype(NUMPY_DTYPE[dtype])


def random_value(decl: nodes.Decl, seed: int, sizes: dict[str, int], size_overrides: dict[str, int]):
    """A random value of ``decl``'s type (see the module docstring); sizes from ``sizes``, then overrides."""
    rng = np.random.default_rng(seed)
    ttype = decl.type
    dtype = ttype.dtype
    if ttype.is_scalar:
        return _random_values(rng, dtype, ()).item()
    shape = tuple(_resolve(d, decl, sizes, size_overrides) for d in ttype.shape)
    fmt = ttype.format
    if not fmt.is_sparse:
        return _random_values(rng, dtype, shape)
    params = tuple(_resolve(p, decl, sizes, size_overrides) for p in fmt.params)
    what = f"input {decl.name}"
    pattern = dtype == "bool"

    def values(n):
        return np.ones(n, dtype=bool) if pattern else _random_values(rng, dtype, n)

    if fmt.name == "blockdiag":
        (nb,) = params
        _check_blockdiag_shape(shape, nb, what)
        bm, bn = shape[0] // nb, shape[1] // nb
        return BlockDiag._raw(blocks=values(nb * bm * bn).reshape(nb, bm, bn), shape=shape, dtype=dtype)
    if fmt.name == "bsr":
        bm, bn = params
        _check_block_shape(shape, (bm, bn), what)
        grid = (shape[0] // bm, shape[1] // bn)
        bcoords = _random_coords(rng, grid)
        rows = (bcoords[0][:, None, None] * bm + np.arange(bm)[None, :, None] + np.zeros((1, 1, bn), np.int64))
        cols = (bcoords[1][:, None, None] * bn + np.arange(bn)[None, None, :] + np.zeros((1, bm, 1), np.int64))
        coords = np.stack([rows.reshape(-1), cols.reshape(-1)])
        coo = COO._raw(coords=coords, data=values(coords.shape[1]), shape=shape, dtype=dtype).canonical()
        return FORMAT_CLASSES["bsr"].from_coo(coo, params, what)
    if fmt.name == "nm":
        n, m = params
        coords = _random_nm_coords(rng, shape, n, m)
        coo = COO._raw(coords=coords, data=values(coords.shape[1]), shape=shape, dtype=dtype)
        return FORMAT_CLASSES["nm"].from_coo(coo, params, what)
    coords = _random_coords(rng, shape)
    coo = COO._raw(coords=coords, data=values(coords.shape[1]), shape=shape, dtype=dtype)
    return FORMAT_CLASSES[fmt.name].from_coo(coo, params, what)


def _random_coords(rng: np.random.Generator, shape) -> np.ndarray:
    """About 10% of the coordinates of ``shape``, distinct, in row-major order, as (ndim, nnz) int64."""
    total = math.prod(shape)
    nnz = int(round(RANDOM_DENSITY * total))
    if total and nnz == 0:
        nnz = 1
    lin = np.sort(rng.choice(total, size=nnz, replace=False)) if nnz else np.zeros(0, np.int64)
    return np.stack(np.unravel_index(lin, shape)).astype(np.int64).reshape(len(shape), -1)


def _random_nm_coords(rng: np.random.Generator, shape, n: int, m: int) -> np.ndarray:
    rows, ncols = shape
    groups = -(-ncols // m) if m else 0
    keys = rng.random((rows, groups, m))
    col = np.arange(groups)[:, None] * m + np.arange(m)[None, :]
    keys[:, col >= ncols] = np.inf  # a short last group only offers its real columns
    take = np.sort(np.argsort(keys, axis=-1)[..., :n], axis=-1)
    r = np.broadcast_to(np.arange(rows)[:, None, None], take.shape)
    c = np.arange(groups)[None, :, None] * m + take
    keep = c < ncols
    return np.stack([r[keep], c[keep]]).astype(np.int64)


# ---------------------------------------------------------------- output

def write_output(directory, name: str, tensor: Tensor) -> Path:
    """Write an output: sparse as ``NAME.mtx`` (Matrix Market), dense as ``NAME.npy``; returns the path.

    A rank-1 sparse output is written as an n x 1 column; sparse outputs of rank 3 or more, which Matrix Market
    cannot hold, go to ``NAME.npz`` (``scipy.sparse.save_npz`` of an n-D coo_array). bf16 values are written as
    float32 (they are exact there).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(tensor, Dense):
        path = directory / f"{name}.npy"
        np.save(path, tensor.values, allow_pickle=False)
        return path
    user = to_user(tensor)
    if tensor.ndim == 1:
        c = tensor.to_coo()
        user = sp.coo_array((c.data, (c.coords[0], np.zeros_like(c.coords[0]))), shape=(tensor.shape[0], 1))
    elif tensor.ndim > 2:
        path = directory / f"{name}.npz"
        sp.save_npz(path, user)
        return path
    path = directory / f"{name}.mtx"
    # symmetry="general": the file holds exactly the stored entries (and scipy's symmetry probe fails on bools)
    if tensor.dtype == "bool":
        # a bool sparse output is a pattern: its stored coordinates are what it means
        user = sp.coo_array(user)
        all_true = bool(user.data.all())
        user = user.astype(np.int8)
        if all_true:
            scipy.io.mmwrite(str(path), user, field="pattern", symmetry="general")
            return path
    scipy.io.mmwrite(str(path), user, symmetry="general")
    return path
