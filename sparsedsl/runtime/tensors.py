"""Tensor containers: one small class per storage format of language spec § 3.

Every container has ``dtype`` (a sparsedsl dtype name), ``shape`` (a tuple of ints), ``format``
(``tensor_ir.types.Format``) and ``nnz`` (the number of *present* entries), and two views of its contents:

* the presence view used by the reference interpreter: ``to_presence() -> (values, present)``, dense arrays of
  the full shape, and ``from_presence(values, present, ttype, sizes)`` building the container of
  ``ttype.format``;
* the raw arrays as attributes (``indptr``, ``indices``, ``data``, ``blocks`` ...) used by compiled backends,
  which never pay for presence masks.

Containers are frozen: attributes cannot be rebound, and nothing here writes into an array a container holds,
so wrapping a user's arrays never copies them and never modifies them. Values are kept in the numpy storage
dtype of ``dtype`` (``tensor_ir.types.NUMPY_DTYPE``; bf16 as float32 rounded to bf16).

Canonical form. CSR/CSC/BSR hold sorted, unique coordinates per row/column/block row, COO lexicographically
sorted unique coordinates, NM sorted offsets inside every group. Libraries do produce non-canonical storage
(scipy's unsorted or duplicate indices), so a container may hold it; ``is_canonical()`` tells, and
``canonical()`` returns a sorted copy with duplicates summed, as scipy does. ``validate(name)`` rejects
structure that no library would produce (wrong lengths, out-of-range indices, decreasing indptr, bad blocks).
Everything sparsedsl hands to a backend is validated and canonical.

Index arrays are int32, switching to int64 when nnz or a dimension would overflow int32; int64 indices given
by the user are kept.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from sparsedsl.core.errors import SdslInputError
from sparsedsl.runtime.dtypes import NUMPY_DTYPE, cast_input, index_dtype, infer_dtype, round_bf16
from sparsedsl.tensor_ir.types import DTYPES, Format, TensorType

__all__ = [
    "Tensor", "Dense", "CSR", "CSC", "COO", "BSR", "BlockDiag", "NM", "FORMAT_CLASSES", "container_class",
    "from_presence", "resolve_params", "resolve_shape", "canonicalize_coords",
]


# ---------------------------------------------------------------- helpers

def _storage(values, dtype: str | None, what: str) -> tuple[np.ndarray, str]:
    """Values in the storage dtype of ``dtype`` (inferred when None); copies only when a cast is needed."""
    arr = np.asarray(values)
    if dtype is None:
        dtype = infer_dtype(arr.dtype)
        if dtype is None:
            raise SdslInputError(f"{what}: values of type {arr.dtype} are not supported")
    elif dtype not in DTYPES:
        raise SdslInputError(f"{what}: unknown dtype {dtype!r} (expected one of {', '.join(DTYPES)})")
    if dtype == "bf16" or arr.dtype != NUMPY_DTYPE[dtype]:
        arr = cast_input(arr, dtype, what)
    return arr, dtype


def _internal_storage(values, dtype: str) -> np.ndarray:
    """Computed values into storage: an unchecked cast (the backend's arithmetic already decided the dtype)."""
    arr = np.asarray(values)
    if dtype == "bf16":
        return round_bf16(arr)
    target = NUMPY_DTYPE[dtype]
    return arr if arr.dtype == target else arr.astype(target)


def _index_array(a, what: str, label: str) -> np.ndarray:
    """An int32/int64 index array; user arrays of those dtypes are kept, lists get int32 where it suffices."""
    from_list = not isinstance(a, np.ndarray)
    arr = np.asarray(a)
    if from_list and arr.dtype.kind in "iu" and (arr.size == 0 or (int(arr.min()) >= np.iinfo(np.int32).min
                                                                  and int(arr.max()) <= np.iinfo(np.int32).max)):
        return arr.astype(np.int32)
    if arr.dtype.kind not in "iu":
        if arr.size == 0:
            return arr.astype(np.int32)
        raise SdslInputError(f"{what}: {label} must be an integer array, got {arr.dtype}")
    if arr.dtype not in (np.int32, np.int64):
        if arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise SdslInputError(f"{what}: {label} holds values too large for int64")
        arr = arr.astype(np.int64)
    return arr


def _same_index_dtype(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Index arrays of one container share a dtype (int64 if any is)."""
    if any(a.dtype == np.int64 for a in arrays):
        return tuple(a if a.dtype == np.int64 else a.astype(np.int64) for a in arrays)
    return arrays


def _shape(shape, what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise SdslInputError(f"{what}: shape must be a tuple of integers, got {shape!r}") from None
    if any(s < 0 for s in out):
        raise SdslInputError(f"{what}: negative dimension in shape {out}")
    return out


def _lex_increasing(coords: np.ndarray, strict: bool = True) -> bool:
    """Whether the columns of ``coords`` (ndim, nnz) are in (strictly) increasing lexicographic order."""
    if coords.shape[1] < 2:
        return True
    if coords.shape[0] == 0:
        return False
    a, b = coords[:, :-1], coords[:, 1:]
    # fold from the last coordinate: greater-than decided by the first coordinate that differs
    result = (b[-1] > a[-1]) if strict else (b[-1] >= a[-1])
    for d in range(coords.shape[0] - 2, -1, -1):
        result = (b[d] > a[d]) | ((b[d] == a[d]) & result)
    return bool(result.all())


def canonicalize_coords(coords: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (ndim, nnz) sorted lexicographically, duplicates summed (new arrays unless already canonical)."""
    if _lex_increasing(coords):
        return coords, data
    order = np.lexsort(coords[::-1])
    c = coords[:, order]
    d = data[order]
    dup = np.all(c[:, 1:] == c[:, :-1], axis=0)
    if dup.any():
        starts = np.flatnonzero(np.concatenate(([True], ~dup)))
        d = np.add.reduceat(d, starts, dtype=d.dtype)
        c = c[:, starts]
    return c, d


def _sorted_within_segments(indptr: np.ndarray, indices: np.ndarray) -> bool:
    """Whether ``indices`` strictly increase inside every segment ``indptr[k]:indptr[k+1]``.

    ``indptr`` must be valid (non-decreasing, ending at nnz). Few numpy calls: this runs on every bound input.
    """
    nnz = indices.shape[0]
    if nnz < 2:
        return True
    increasing = indices[1:] > indices[:-1]
    if increasing.all():
        return True
    starts = np.zeros(nnz + 1, dtype=bool)
    starts[indptr] = True
    return bool((increasing | starts[1:nnz]).all())


def _check_indptr(indptr: np.ndarray, nseg: int, nnz: int, what: str, label: str = "indptr") -> None:
    if indptr.ndim != 1 or indptr.shape[0] != nseg + 1:
        raise SdslInputError(
            f"{what}: {label} has length {indptr.shape[0] if indptr.ndim == 1 else indptr.shape}, "
            f"expected {nseg + 1}")
    if indptr[0] != 0:
        raise SdslInputError(f"{what}: {label}[0] is {int(indptr[0])}, expected 0")
    if nseg and (indptr[1:] < indptr[:-1]).any():
        k = int(np.flatnonzero(indptr[1:] < indptr[:-1])[0])
        raise SdslInputError(f"{what}: {label} decreases at position {k + 1} ({int(indptr[k])} -> {int(indptr[k + 1])})")
    if int(indptr[-1]) != nnz:
        raise SdslInputError(f"{what}: {label}[-1] is {int(indptr[-1])} but {nnz} entries are stored")


def _check_range(idx: np.ndarray, extent: int, what: str, label: str) -> None:
    if idx.size == 0:
        return
    # one comparison on the unsigned view catches negatives too (they wrap to huge values)
    unsigned = idx.view(np.dtype(f"u{idx.dtype.itemsize}")) if idx.dtype.kind == "i" else idx
    if (unsigned >= extent).any():
        lo, hi = int(idx.min()), int(idx.max())
        bad = lo if lo < 0 else hi
        raise SdslInputError(f"{what}: {label} {bad} is out of range [0, {extent})")


def _one_dim(a: np.ndarray, what: str, label: str) -> None:
    if a.ndim != 1:
        raise SdslInputError(f"{what}: {label} must be one-dimensional, got shape {a.shape}")


def resolve_params(fmt: Format, sizes: dict[str, int], what: str = "value") -> tuple[int, ...]:
    """Format parameters as integers, size names looked up in ``sizes``."""
    out = []
    for p in fmt.params:
        if isinstance(p, str):
            if p not in sizes:
                raise SdslInputError(f"{what}: format parameter {p} of {fmt} is not bound by any input")
            out.append(int(sizes[p]))
        else:
            out.append(int(p))
    return tuple(out)


def resolve_shape(ttype: TensorType, sizes: dict[str, int], what: str = "value") -> tuple[int, ...]:
    out = []
    for d in ttype.shape:
        if isinstance(d, str):
            if d not in sizes:
                raise SdslInputError(f"{what}: size {d} is not bound by any input")
            out.append(int(sizes[d]))
        else:
            out.append(int(d))
    return tuple(out)


# ---------------------------------------------------------------- base

class Tensor(ABC):
    """Base of the containers. Subclasses set ``format_name`` and implement the coordinate view."""

    __slots__ = ("dtype", "shape")
    format_name = ""

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _set(self, **attrs) -> None:
        for k, v in attrs.items():
            object.__setattr__(self, k, v)

    value_attr = "data"  # the attribute holding the stored values

    def replace(self, **attrs) -> "Tensor":
        """A container of the same class with some attributes replaced (unchecked, as ``_raw``)."""
        current = {k: getattr(self, k) for c in type(self).__mro__ for k in getattr(c, "__slots__", ())}
        current.update(attrs)
        return type(self)._raw(**current)

    @classmethod
    def _raw(cls, **attrs):
        """Internal constructor: trusts that arrays already have storage dtypes and valid structure."""
        obj = object.__new__(cls)
        obj._set(**attrs)
        return obj

    # -- description
    @property
    def params(self) -> tuple[int, ...]:
        return ()

    @property
    def format(self) -> Format:
        return Format(self.format_name, self.params)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    @abstractmethod
    def nnz(self) -> int:
        """The number of present entries."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.format}<{self.dtype}>{list(self.shape)}, nnz={self.nnz})"

    # -- coordinate view
    @abstractmethod
    def _coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Present coordinates (ndim, nnz) int64 and their values, in storage order (maybe unsorted)."""

    def is_canonical(self) -> bool:
        return True

    def canonical(self) -> "Tensor":
        """Self if canonical, else a sorted copy with duplicate coordinates summed."""
        if self.is_canonical():
            return self
        return type(self).from_coo(self.to_coo(), self.params)

    def to_coo(self) -> "COO":
        """The present entries as a canonical COO (shares nothing mutable with self that it writes)."""
        coords, data = self._coords()
        coords, data = canonicalize_coords(coords, data)
        return COO._raw(coords=coords, data=data, shape=self.shape, dtype=self.dtype)

    @classmethod
    @abstractmethod
    def from_coo(cls, coo: "COO", params: tuple[int, ...] = (), what: str = "value") -> "Tensor":
        """The container of this class holding the entries of canonical ``coo``; ``what`` names it in errors."""

    def to_csr(self) -> "CSR":
        """The present entries of a rank-2 tensor as a canonical CSR (the layout the numba kernels read).
        Formats whose storage order is not row-major sort their coordinates here; block formats override it
        with a placement that needs no sort."""
        return CSR.from_coo(self.to_coo())

    def to_presence(self) -> tuple[np.ndarray, np.ndarray]:
        coords, data = self._coords()
        coords, data = canonicalize_coords(coords, data)
        values = np.zeros(self.shape, dtype=NUMPY_DTYPE[self.dtype])
        present = np.zeros(self.shape, dtype=bool)
        idx = tuple(coords)
        values[idx] = data
        present[idx] = True
        return values, present

    @classmethod
    def from_presence(cls, values, present, ttype: TensorType, sizes: dict[str, int], what: str = "value",
                      fill=0) -> "Tensor":
        """The container of ``ttype.format`` (whatever class this is called on) holding the present entries.

        ``values`` and ``present`` are arrays of the full shape. A dense result holds ``fill`` where absent.
        A ``bsr`` result stores every block holding a present entry, and the absent entries inside such a block
        become stored zeros; ``blockdiag`` likewise inside its diagonal blocks. Entries a format cannot hold
        (outside the diagonal blocks, more than N per M) raise ``SdslInputError`` naming ``what``.
        """
        return from_presence(values, present, ttype, sizes, what, fill)

    @abstractmethod
    def validate(self, name: str) -> None:
        """Raise SdslInputError naming input ``name`` for structure that no library would produce."""

    @abstractmethod
    def astype(self, dtype: str, name: str = "value") -> "Tensor":
        """The same structure with values converted by the input casting rule (a new container if needed)."""


def _what(name: str) -> str:
    return f"input {name}"


# ---------------------------------------------------------------- dense

class Dense(Tensor):
    """Every entry present. Rank 0 is a scalar. ``values``: the numpy array (storage dtype)."""

    __slots__ = ("values",)
    format_name = "dense"
    value_attr = "values"

    def __init__(self, values, dtype: str | None = None):
        vals, dt = _storage(values, dtype, "Dense")
        self._set(values=vals, dtype=dt, shape=tuple(int(s) for s in vals.shape))

    @property
    def nnz(self) -> int:
        return int(self.values.size)

    def _coords(self):
        if not self.shape:
            return np.zeros((0, 1), dtype=np.int64), self.values.reshape(1)
        coords = np.indices(self.shape).reshape(len(self.shape), -1).astype(np.int64)
        return coords, self.values.reshape(-1)

    def to_presence(self):
        return self.values, np.ones(self.shape, dtype=bool)

    @classmethod
    def from_coo(cls, coo, params=(), what="value"):
        values = np.zeros(coo.shape, dtype=coo.data.dtype)
        values[tuple(coo.coords)] = coo.data
        return cls._raw(values=values, dtype=coo.dtype, shape=coo.shape)

    def validate(self, name):
        if self.values.dtype != NUMPY_DTYPE[self.dtype]:
            raise SdslInputError(f"{_what(name)}: values are {self.values.dtype}, expected {NUMPY_DTYPE[self.dtype]}")

    def astype(self, dtype, name="value"):
        return Dense._raw(values=cast_input(self.values, dtype, name), dtype=dtype, shape=self.shape)

    def item(self):
        """The Python value of a scalar."""
        return self.values.item()


# ---------------------------------------------------------------- compressed rows / columns

class _Compressed(Tensor):
    __slots__ = ("indptr", "indices", "data")

    def __init__(self, indptr, indices, data, shape, dtype: str | None = None):
        what = type(self).__name__
        shape = _shape(shape, what)
        indptr = _index_array(indptr, what, "indptr")
        indices = _index_array(indices, what, "indices")
        indptr, indices = _same_index_dtype(indptr, indices)
        data, dtype = _storage(data, dtype, what)
        self._set(indptr=indptr, indices=indices, data=data, shape=shape, dtype=dtype)

    @property
    def nnz(self) -> int:
        return int(self.data.shape[0]) if self.data.ndim == 1 else int(self.data.size)

    @abstractmethod
    def _nseg_extent(self) -> tuple[int, int]:
        """(number of compressed segments, extent of the stored index)."""

    def is_canonical(self) -> bool:
        return _sorted_within_segments(self.indptr, self.indices)

    def validate(self, name):
        what = _what(name)
        ranks = (1, 2) if isinstance(self, CSR) else (2,)
        if len(self.shape) not in ranks:
            raise SdslInputError(f"{what}: {self.format_name} holds rank {' or '.join(map(str, ranks))}, "
                                 f"got shape {self.shape}")
        _one_dim(self.indptr, what, "indptr")
        _one_dim(self.indices, what, "indices")
        _one_dim(self.data, what, "data")
        if self.indices.shape[0] != self.data.shape[0]:
            raise SdslInputError(f"{what}: {self.indices.shape[0]} indices but {self.data.shape[0]} values")
        nseg, extent = self._nseg_extent()
        _check_indptr(self.indptr, nseg, self.indices.shape[0], what)
        _check_range(self.indices, extent, what, "row index" if isinstance(self, CSC) else "column index")

    def astype(self, dtype, name="value"):
        return type(self)._raw(indptr=self.indptr, indices=self.indices, data=cast_input(self.data, dtype, name),
                               shape=self.shape, dtype=dtype)


class CSR(_Compressed):
    """Compressed sparse rows: ``indptr`` (rows + 1), ``indices`` (column of each entry), ``data``.

    Rank 1 (a sparse vector) is one row: ``indptr == [0, nnz]`` and ``indices`` are positions.
    """

    __slots__ = ()
    format_name = "csr"

    def _nseg_extent(self):
        if len(self.shape) == 1:
            return 1, self.shape[0]
        return self.shape[0], self.shape[1]

    def to_csr(self):
        return self if self.is_canonical() else CSR.from_coo(self.to_coo())

    def _coords(self):
        if len(self.shape) == 1:
            return self.indices.astype(np.int64)[None, :], self.data
        rows = np.repeat(np.arange(self.shape[0], dtype=np.int64), np.diff(self.indptr))
        return np.stack([rows, self.indices.astype(np.int64)]), self.data

    @classmethod
    def from_coo(cls, coo, params=(), what="value"):
        shape = coo.shape
        nnz = coo.coords.shape[1]
        if len(shape) == 1:
            idt = index_dtype(nnz, shape[0])
            return cls._raw(indptr=np.array([0, nnz], dtype=idt), indices=coo.coords[0].astype(idt),
                            data=coo.data, shape=shape, dtype=coo.dtype)
        if len(shape) != 2:
            raise SdslInputError(f"{what}: csr holds rank 1 or 2, got shape {shape}")
        idt = index_dtype(nnz, *shape)
        counts = np.bincount(coo.coords[0], minlength=shape[0])
        indptr = np.zeros(shape[0] + 1, dtype=idt)
        np.cumsum(counts, out=indptr[1:])
        return cls._raw(indptr=indptr, indices=coo.coords[1].astype(idt), data=coo.data, shape=shape, dtype=coo.dtype)


class CSC(_Compressed):
    """Compressed sparse columns: ``indptr`` (cols + 1), ``indices`` (row of each entry), ``data``."""

    __slots__ = ()
    format_name = "csc"

    def _nseg_extent(self):
        return self.shape[1], self.shape[0]

    def _coords(self):
        cols = np.repeat(np.arange(self.shape[1], dtype=np.int64), np.diff(self.indptr))
        return np.stack([self.indices.astype(np.int64), cols]), self.data

    @classmethod
    def from_coo(cls, coo, params=(), what="value"):
        shape = coo.shape
        if len(shape) != 2:
            raise SdslInputError(f"{what}: csc holds rank 2, got shape {shape}")
        rows, cols = coo.coords
        order = np.lexsort((rows, cols))
        nnz = rows.shape[0]
        idt = index_dtype(nnz, *shape)
        counts = np.bincount(cols, minlength=shape[1])
        indptr = np.zeros(shape[1] + 1, dtype=idt)
        np.cumsum(counts, out=indptr[1:])
        return cls._raw(indptr=indptr, indices=rows[order].astype(idt), data=coo.data[order], shape=shape,
                        dtype=coo.dtype)


# ---------------------------------------------------------------- coordinates

class COO(Tensor):
    """Coordinate list: ``coords`` (ndim, nnz) int64 and ``data`` (nnz); any rank >= 1.

    Canonical: lexicographically sorted (row-major) and unique.
    """

    __slots__ = ("coords", "data")
    format_name = "coo"

    def __init__(self, coords, data, shape, dtype: str | None = None):
        shape = _shape(shape, "COO")
        coords = np.asarray(coords)
        if coords.dtype.kind not in "iu":
            if coords.size:
                raise SdslInputError(f"COO: coords must be an integer array, got {coords.dtype}")
        if coords.dtype != np.int64:
            coords = coords.astype(np.int64)
        if coords.ndim == 1 and len(shape) == 1:
            coords = coords[None, :]
        data, dtype = _storage(data, dtype, "COO")
        self._set(coords=coords, data=data, shape=shape, dtype=dtype)

    @property
    def nnz(self) -> int:
        return int(self.data.shape[0])

    def _coords(self):
        return self.coords, self.data

    def is_canonical(self) -> bool:
        return _lex_increasing(self.coords)

    def to_coo(self):
        return self.canonical()

    def canonical(self):
        if self.is_canonical():
            return self
        c, d = canonicalize_coords(self.coords, self.data)
        return COO._raw(coords=c, data=d, shape=self.shape, dtype=self.dtype)

    @classmethod
    def from_coo(cls, coo, params=(), what="value"):
        return coo

    def validate(self, name):
        what = _what(name)
        if len(self.shape) < 1:
            raise SdslInputError(f"{what}: coo holds rank >= 1, got a scalar")
        _one_dim(self.data, what, "data")
        if self.coords.ndim != 2 or self.coords.shape != (len(self.shape), self.data.shape[0]):
            raise SdslInputError(f"{what}: coords have shape {self.coords.shape}, expected "
                                 f"({len(self.shape)}, {self.data.shape[0]})")
        for d, extent in enumerate(self.shape):
            _check_range(self.coords[d], extent, what, f"coordinate of dimension {d}")

    def astype(self, dtype, name="value"):
        return COO._raw(coords=self.coords, data=cast_input(self.data, dtype, name), shape=self.shape, dtype=dtype)


# ---------------------------------------------------------------- blocks

class BSR(Tensor):
    """Block sparse rows: dense ``blocks`` (nblocks, BM, BN) at block columns ``indices``, rows by ``indptr``.

    Every entry inside a stored block is present (stored zeros included).
    """

    __slots__ = ("indptr", "indices", "blocks", "blocksize")
    format_name = "bsr"
    value_attr = "blocks"

    def __init__(self, indptr, indices, blocks, shape, blocksize=None, dtype: str | None = None):
        shape = _shape(shape, "BSR")
        indptr = _index_array(indptr, "BSR", "indptr")
        indices = _index_array(indices, "BSR", "indices")
        indptr, indices = _same_index_dtype(indptr, indices)
        blocks, dtype = _storage(blocks, dtype, "BSR")
        if blocksize is None:
            if blocks.ndim != 3:
                raise SdslInputError(f"BSR: blocks must have shape (nblocks, BM, BN), got {blocks.shape}")
            blocksize = blocks.shape[1:]
        blocksize = _shape(blocksize, "BSR")
        self._set(indptr=indptr, indices=indices, blocks=blocks, shape=shape, blocksize=blocksize, dtype=dtype)

    @property
    def params(self):
        return tuple(self.blocksize)

    @property
    def nnz(self) -> int:
        return int(self.blocks.size)

    @property
    def data(self) -> np.ndarray:
        return self.blocks

    def is_canonical(self):
        return _sorted_within_segments(self.indptr, self.indices)

    def _coords(self):
        bm, bn = self.blocksize
        nb = self.indices.shape[0]
        brow = np.repeat(np.arange(self.indptr.shape[0] - 1, dtype=np.int64), np.diff(self.indptr))
        r = np.arange(bm, dtype=np.int64)
        c = np.arange(bn, dtype=np.int64)
        rows = (brow[:, None, None] * bm + r[None, :, None]) + np.zeros((1, 1, bn), dtype=np.int64)
        cols = (self.indices.astype(np.int64)[:, None, None] * bn + c[None, None, :]) + np.zeros((1, bm, 1), np.int64)
        return np.stack([rows.reshape(-1), cols.reshape(-1)]), self.blocks.reshape(nb * bm * bn)

    def to_csr(self):
        """Each entry goes straight to its place: row ``br * BM + r`` holds, block after block of block row
        ``br`` (block columns ascending), the ``BN`` entries of the block's row ``r``. O(nnz), no sort (sorting
        the coordinates cost 20x the SpMM that reads them: 4096², 32x32 blocks at 5%, 55 ms against 2.6 ms)."""
        src = self.canonical()
        bm, bn = src.blocksize
        nbr = src.indptr.shape[0] - 1
        per_brow = np.diff(src.indptr).astype(np.int64)
        nnz = int(src.blocks.size)
        idt = index_dtype(nnz, *src.shape)
        indptr = np.zeros(src.shape[0] + 1, dtype=idt)
        np.cumsum(np.repeat(per_brow * bn, bm), out=indptr[1:])
        brow = np.repeat(np.arange(nbr, dtype=np.int64), per_brow)
        rank = np.arange(brow.shape[0], dtype=np.int64) - src.indptr[brow].astype(np.int64)  # within its block row
        c = np.arange(bn, dtype=np.int64)
        first = indptr[brow[:, None] * bm + np.arange(bm, dtype=np.int64)[None, :]].astype(np.int64)
        pos = first[:, :, None] + (rank * bn)[:, None, None] + c[None, None, :]
        indices = np.empty(nnz, dtype=idt)
        data = np.empty(nnz, dtype=src.blocks.dtype)
        indices[pos] = src.indices.astype(np.int64)[:, None, None] * bn + c[None, None, :]
        data[pos] = src.blocks
        return CSR._raw(indptr=indptr, indices=indices, data=data, shape=src.shape, dtype=src.dtype)

    def canonical(self):
        if self.is_canonical():
            return self
        # sum duplicate blocks block-wise (values inside a block never collide with another block's)
        bm, bn = self.blocksize
        brow = np.repeat(np.arange(self.indptr.shape[0] - 1, dtype=np.int64), np.diff(self.indptr))
        order = np.lexsort((self.indices, brow))
        keys = np.stack([brow[order], self.indices[order].astype(np.int64)])
        blocks = self.blocks[order]
        dup = np.all(keys[:, 1:] == keys[:, :-1], axis=0)
        if dup.any():
            starts = np.flatnonzero(np.concatenate(([True], ~dup)))
            blocks = np.add.reduceat(blocks, starts, axis=0, dtype=blocks.dtype)
            keys = keys[:, starts]
        nbr = self.indptr.shape[0] - 1
        idt = self.indptr.dtype
        indptr = np.zeros(nbr + 1, dtype=idt)
        np.cumsum(np.bincount(keys[0], minlength=nbr), out=indptr[1:])
        return BSR._raw(indptr=indptr, indices=keys[1].astype(idt), blocks=blocks, shape=self.shape,
                        blocksize=self.blocksize, dtype=self.dtype)

    @classmethod
    def from_coo(cls, coo, params=(), what="value"):
        bm, bn = params
        shape = coo.shape
        _check_block_shape(shape, (bm, bn), what)
        rows, cols = coo.coords
        br, bc = rows // bm, cols // bn
        nbr, nbc = shape[0] // bm, shape[1] // bn
        key = br * nbc + bc if nbc else br
        ukeys, inverse = np.unique(key, return_inverse=True)
        nblocks = ukeys.shape[0]
        blocks = np.zeros((nblocks, bm, bn), dtype=coo.data.dtype)
        blocks[inverse, rows - br * bm, cols - bc * bn] = coo.data
        ubr = ukeys // nbc if nbc else ukeys
        idt = index_dtype(nblocks * bm * bn, *shape)
        indptr = np.zeros(nbr + 1, dtype=idt)
        np.cumsum(np.bincount(ubr, minlength=nbr), out=indptr[1:])
        indices = (ukeys - ubr * nbc).astype(idt)
        return cls._raw(indptr=indptr, indices=indices, blocks=blocks, shape=shape, blocksize=(bm, bn),
                        dtype=coo.dtype)

    def validate(self, name):
        what = _what(name)
        if len(self.shape) != 2:
            raise SdslInputError(f"{what}: bsr holds rank 2, got shape {self.shape}")
        bm, bn = self.blocksize
        _check_block_shape(self.shape, (bm, bn), what)
        if self.blocks.ndim != 3 or self.blocks.shape[1:] != (bm, bn):
            raise SdslInputError(f"{what}: blocks have shape {self.blocks.shape}, expected (nblocks, {bm}, {bn})")
        _one_dim(self.indptr, what, "indptr")
        _one_dim(self.indices, what, "indices")
        if self.indices.shape[0] != self.blocks.shape[0]:
            raise SdslInputError(f"{what}: {self.indices.shape[0]} block indices but {self.blocks.shape[0]} blocks")
        _check_indptr(self.indptr, self.shape[0] // bm, self.indices.shape[0], what)
        _check_range(self.indices, self.shape[1] // bn, what, "block column index")

    def astype(self, dtype, name="value"):
        return BSR._raw(indptr=self.indptr, indices=self.indices, blocks=cast_input(self.blocks, dtype, name),
                        shape=self.shape, blocksize=self.blocksize, dtype=dtype)


def _check_block_shape(shape, blocksize, what):
    bm, bn = blocksize
    if bm < 1 or bn < 1:
        raise SdslInputError(f"{what}: block size ({bm}, {bn}) must be positive")
    if len(shape) != 2 or shape[0] % bm or shape[1] % bn:
        raise SdslInputError(f"{what}: shape {tuple(shape)} is not divisible by the block size ({bm}, {bn})")


class BlockDiag(Tensor):
    """``NB`` dense blocks on the diagonal: ``blocks`` (NB, bm, bn), shape (NB*bm, NB*bn).

    Entries inside the blocks are present (stored zeros included); all others are absent.
    """

    __slots__ = ("blocks",)
    format_name = "blockdiag"
    value_attr = "blocks"

    def __init__(self, blocks, shape=None, dtype: str | None = None):
        blocks, dtype = _storage(blocks, dtype, "BlockDiag")
        if blocks.ndim != 3:
            raise SdslInputError(f"BlockDiag: blocks must have shape (NB, bm, bn), got {blocks.shape}")
        nb, bm, bn = blocks.shape
        shape = (nb * bm, nb * bn) if shape is None else _shape(shape, "BlockDiag")
        self._set(blocks=blocks, shape=shape, dtype=dtype)

    @property
    def nblocks(self) -> int:
        return int(self.blocks.shape[0])

    @property
    def params(self):
        return (self.nblocks,)

    @property
    def nnz(self) -> int:
        return int(self.blocks.size)

    @property
    def data(self) -> np.ndarray:
        return self.blocks

    def to_csr(self):
        """The blocks in C order are the matrix's rows in order: row ``b * bm + r`` is block ``b``'s row ``r``."""
        nb, bm, bn = self.blocks.shape
        idt = index_dtype(int(self.blocks.size), *self.shape)
        indptr = (np.arange(nb * bm + 1, dtype=np.int64) * bn).astype(idt)
        cols = np.arange(nb, dtype=np.int64)[:, None, None] * bn + np.arange(bn, dtype=np.int64)[None, None, :]
        indices = np.broadcast_to(cols, (nb, bm, bn)).reshape(-1).astype(idt)
        return CSR._raw(indptr=indptr, indices=indices, data=self.blocks.reshape(-1).copy(), shape=self.shape,
                        dtype=self.dtype)

    def _coords(self):
        nb, bm, bn = self.blocks.shape
        b, r, c = np.indices((nb, bm, bn), dtype=np.int64).reshape(3, -1)
        # C order over (block, row, col) is already row-major order of the whole matrix
        return np.stack([b * bm + r, b * bn + c]), self.blocks.reshape(-1)

    @classmethod
    def from_coo(cls, coo, params=(), what="value"):
        (nb,) = params
        shape = coo.shape
        _check_blockdiag_shape(shape, nb, what)
        bm, bn = shape[0] // nb, shape[1] // nb
        rows, cols = coo.coords
        b = rows // bm
        outside = (cols // bn) != b
        if outside.any():
            k = int(np.flatnonzero(outside)[0])
            raise SdslInputError(f"{what}: entry ({int(rows[k])}, {int(cols[k])}) lies outside the diagonal blocks "
                                 f"of blockdiag({nb}) (blocks of {bm}x{bn})")
        blocks = np.zeros((nb, bm, bn), dtype=coo.data.dtype)
        blocks[b, rows - b * bm, cols - b * bn] = coo.data
        return cls._raw(blocks=blocks, shape=shape, dtype=coo.dtype)

    def validate(self, name):
        what = _what(name)
        nb, bm, bn = self.blocks.shape
        _check_blockdiag_shape(self.shape, nb, what)
        if self.shape != (nb * bm, nb * bn):
            raise SdslInputError(f"{what}: {nb} blocks of {bm}x{bn} do not make shape {self.shape}")

    def astype(self, dtype, name="value"):
        return BlockDiag._raw(blocks=cast_input(self.blocks, dtype, name), shape=self.shape, dtype=dtype)


def _check_blockdiag_shape(shape, nb, what):
    if nb < 1:
        raise SdslInputError(f"{what}: blockdiag needs at least one block, got NB = {nb}")
    if len(shape) != 2 or shape[0] % nb or shape[1] % nb:
        raise SdslInputError(f"{what}: shape {tuple(shape)} is not divisible by the number of blocks NB = {nb}")


# ---------------------------------------------------------------- N:M

def _offset_dtype(m: int) -> np.dtype:
    for dt in (np.int8, np.int16, np.int32):
        if m - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


class NM(Tensor):
    """N:M structured sparsity: at most ``n`` stored entries in every run of ``m`` consecutive entries of a row.

    Storage, per row ``r`` and group ``g`` (columns ``g*m .. g*m+m-1``; the last group may be short;
    ``groups = ceil(cols / m)``):

    * ``values`` (rows, groups, n): the stored values, in slots;
    * ``offsets`` (rows, groups, n): the column offset of each slot inside its group, or -1 for an empty slot.
      Filled slots come first, with strictly increasing offsets; empty slots hold value 0. The smallest integer
      dtype that holds ``m - 1`` (int8 for m <= 128).

    The entry in slot ``s`` of group ``g`` of row ``r`` is at column ``g*m + offsets[r, g, s]``.
    """

    __slots__ = ("values", "offsets", "n", "m")
    format_name = "nm"
    value_attr = "values"

    def __init__(self, values, offsets, shape, n: int, m: int, dtype: str | None = None):
        shape = _shape(shape, "NM")
        values, dtype = _storage(values, dtype, "NM")
        offsets = np.asarray(offsets)
        if offsets.dtype.kind not in "iu" and offsets.size:
            raise SdslInputError(f"NM: offsets must be an integer array, got {offsets.dtype}")
        self._set(values=values, offsets=offsets, shape=shape, n=int(n), m=int(m), dtype=dtype)

    @classmethod
    def from_dense(cls, array, n: int, m: int, dtype: str | None = None) -> "NM":
        """The N:M container of a dense 2-D array's nonzeros (SdslInputError if a group holds more than n)."""
        vals, dtype = _storage(array, dtype, "NM")
        if vals.ndim != 2:
            raise SdslInputError(f"NM: expected a two-dimensional array, got shape {vals.shape}")
        coords = np.stack(np.nonzero(vals)).astype(np.int64)
        coo = COO._raw(coords=coords, data=vals[tuple(coords)], shape=tuple(vals.shape), dtype=dtype)
        return cls.from_coo(coo, (int(n), int(m)), "NM")

    @property
    def params(self):
        return (self.n, self.m)

    @property
    def groups(self) -> int:
        return -(-self.shape[1] // self.m) if self.m > 0 else 0

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.offsets >= 0))

    def _coords(self):
        filled = self.offsets >= 0
        r, g, _ = np.nonzero(filled)
        cols = g.astype(np.int64) * self.m + self.offsets[filled].astype(np.int64)
        return np.stack([r.astype(np.int64), cols]), self.values[filled]

    def is_canonical(self):
        off = self.offsets
        if off.shape[-1] < 2:
            return True
        later = off[..., 1:] >= 0
        return bool((~later | (off[..., 1:] > off[..., :-1])).all())

    @classmethod
    def from_coo(cls, coo, params=(), what="value"):
        n, m = params
        shape = coo.shape
        if len(shape) != 2:
            raise SdslInputError(f"{what}: nm holds rank 2, got shape {shape}")
        if n < 1 or m < 1:
            raise SdslInputError(f"{what}: nm({n}, {m}) needs N >= 1 and M >= 1")
        rows, cols = coo.coords
        groups = -(-shape[1] // m)
        g = cols // m
        key = rows * groups + g
        nnz = key.shape[0]
        values = np.zeros((shape[0], groups, n), dtype=coo.data.dtype)
        offsets = np.full((shape[0], groups, n), -1, dtype=_offset_dtype(m))
        if nnz:
            # canonical coo: entries of one (row, group) are consecutive, columns increasing
            starts_mask = np.concatenate(([True], key[1:] != key[:-1]))
            starts = np.flatnonzero(starts_mask)
            run = np.cumsum(starts_mask) - 1
            slot = np.arange(nnz) - starts[run]
            if slot.max() >= n:
                k = int(np.flatnonzero(slot >= n)[0])
                r, gg = int(rows[k]), int(g[k])
                count = int(np.count_nonzero(key == key[k]))
                raise SdslInputError(
                    f"{what}: row {r} has {count} stored entries in columns {gg * m}..{min(gg * m + m, shape[1]) - 1}; "
                    f"nm({n}, {m}) allows at most {n} in every {m} consecutive entries of a row")
            values[rows, g, slot] = coo.data
            offsets[rows, g, slot] = cols - g * m
        return cls._raw(values=values, offsets=offsets, shape=shape, n=n, m=m, dtype=coo.dtype)

    def validate(self, name):
        what = _what(name)
        if len(self.shape) != 2:
            raise SdslInputError(f"{what}: nm holds rank 2, got shape {self.shape}")
        n, m = self.n, self.m
        if n < 1 or m < 1:
            raise SdslInputError(f"{what}: nm({n}, {m}) needs N >= 1 and M >= 1")
        expect = (self.shape[0], self.groups, n)
        if self.values.shape != expect or self.offsets.shape != expect:
            raise SdslInputError(f"{what}: values {self.values.shape} and offsets {self.offsets.shape} must both "
                                 f"have shape (rows, ceil(cols / M), N) = {expect}")
        off = self.offsets
        if off.size:
            if int(off.min()) < -1 or int(off.max()) >= m:
                raise SdslInputError(f"{what}: offsets must lie in [-1, {m}), got [{int(off.min())}, {int(off.max())}]")
            filled = off >= 0
            if (filled[..., 1:] & ~filled[..., :-1]).any():
                raise SdslInputError(f"{what}: an empty slot (offset -1) precedes a filled one in a group")
            # only the last group can reach past the last column (every earlier one ends before it): checking
            # it alone spares two int64 copies of the offsets (a 4096² 2:4 matrix: 50 ms of every call's binding)
            last = off[:, -1, :]
            if ((last >= 0) & (last.astype(np.int64) + (self.groups - 1) * m >= self.shape[1])).any():
                raise SdslInputError(f"{what}: an offset points past the last column {self.shape[1] - 1}")

    def astype(self, dtype, name="value"):
        return NM._raw(values=cast_input(self.values, dtype, name), offsets=self.offsets, shape=self.shape,
                       n=self.n, m=self.m, dtype=dtype)


# ---------------------------------------------------------------- dispatch

FORMAT_CLASSES: dict[str, type[Tensor]] = {
    "dense": Dense, "csr": CSR, "csc": CSC, "coo": COO, "bsr": BSR, "blockdiag": BlockDiag, "nm": NM,
}


def container_class(format_name: str) -> type[Tensor]:
    return FORMAT_CLASSES[format_name]


def from_presence(values, present, ttype: TensorType, sizes: dict[str, int], what: str = "value",
                  fill=0) -> Tensor:
    """See ``Tensor.from_presence``."""
    values = np.asarray(values)
    present = np.asarray(present, dtype=bool)
    if values.shape != present.shape:
        raise ValueError(f"values {values.shape} and presence {present.shape} differ in shape")
    dtype = ttype.dtype
    fmt = ttype.format
    if fmt.name in ("dense", "auto"):
        full = values if present.all() else np.where(present, values, fill)
        stored = _internal_storage(full, dtype)
        return Dense._raw(values=stored, dtype=dtype, shape=tuple(stored.shape))
    coords = np.stack(np.nonzero(present)).astype(np.int64) if values.ndim else np.zeros((0, 0), np.int64)
    data = _internal_storage(values[present], dtype)
    coo = COO._raw(coords=coords.reshape(values.ndim, -1), data=data, shape=tuple(values.shape), dtype=dtype)
    params = resolve_params(fmt, sizes, what)
    return FORMAT_CLASSES[fmt.name].from_coo(coo, params, what)

