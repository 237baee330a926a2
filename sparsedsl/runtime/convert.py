"""Conversion between user values and sparsedsl containers.

``bind_inputs`` turns the keyword arguments of a call into validated, canonical containers of the declared
dtype and format, and binds the size names (language spec § 3, interface.md "Python"). ``to_user`` turns a
result container into what a user expects back: numpy / scipy.sparse arrays, or torch tensors.

Accepted input values: scipy.sparse matrices and arrays of every format, numpy arrays and scalars, Python
scalars and (nested) lists, torch tensors (strided, sparse COO/CSR/CSC/BSR/BSC, any device), networkx graphs,
and sparsedsl containers. Rules beyond interface.md, chosen to match what scipy/GraphBLAS users expect:

* a dense value for a sparse declaration stores its nonzeros; a sparse value for a dense declaration is
  densified with 0 where absent;
* a ``bool`` sparse declaration is a pattern (spec § 3): any bool/integer/float sparse value is accepted and
  its stored coordinates become ``True`` entries (stored zeros included);
* a networkx graph is its adjacency in ``G``'s node order: the ``weight`` attribute (default 1) as values, or
  the bare pattern for a ``bool`` input;
* a ``bsr``/``blockdiag``/``nm`` parameter that is a size name is bound from a value of that same format
  (a scipy/torch BSR's block size, a ``BlockDiag``'s number of blocks, an ``NM``'s N and M); a value of
  another format is re-blocked to the parameters already bound.

No input is ever modified: arrays are wrapped without copies where possible, and anything that needs
canonicalizing (unsorted or duplicate indices), casting or re-blocking is done into new arrays.
"""
from __future__ import annotations

import sys

import numpy as np

from sparsedsl.core.errors import SdslInputError
from sparsedsl.runtime.dtypes import NUMPY_DTYPE, cast_input, numpy_to_torch, torch_to_numpy
from sparsedsl.runtime.tensors import (
    BSR, COO, CSC, CSR, NM, BlockDiag, Dense, FORMAT_CLASSES, Tensor, _index_array,
)
from sparsedsl.tensor_ir import nodes
from sparsedsl.tensor_ir.types import TensorType

__all__ = ["bind_inputs", "InputBinder", "bind_value", "as_container", "convert_format", "to_user"]


# ---------------------------------------------------------------- binding

def bind_inputs(program: nodes.Program, kwargs: dict) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Validate and convert a call's keyword arguments; returns (containers by input name, sizes by name)."""
    return InputBinder(program)(kwargs)


class InputBinder:
    """``bind_inputs`` for one program, with what does not depend on the values worked out once.

    A compiled kernel keeps one and calls it on every call. Two kinds of input take a fast path: a scipy CSR
    for a ``csr`` declaration and a numpy array for a ``dense`` one, each already of the declared storage
    dtype. The fast path checks the same structure ``bind_value`` checks (shape, sizes, indptr, index range,
    sorted unique indices per row), vectorized, and stops at the first thing that is not already right: the
    input then goes through ``bind_value``, which raises the precise error or builds the canonical copy. So
    the fast path returns a container only where ``bind_value`` would return an equal one, and never raises.
    """

    __slots__ = ("program", "_names", "_plans")

    def __init__(self, program: nodes.Program, checks=None):
        """``checks``: a backend's compiled structure checks, by format name (see ``_InputPlan``):

        * ``"csr"``: its own version of ``csr_canonical`` (same contract), used by the CSR fast path instead
          of the numpy passes (the numba target's compiled check is two to three times faster);
        * ``"nm"``: ``check(offsets, m, ncols) -> bool``, whether an ``NM`` container's offsets are valid
          (``NM.validate``) and canonical (``NM.is_canonical``). With it, an ``NM`` value of the declared
          format and dtype is bound as it is after that one pass (without it, after the numpy checks of
          ``bind_value``, several passes over all the offsets)."""
        self.program = program
        inputs = program.inputs
        self._names = frozenset(d.name for d in inputs)
        self._plans = tuple(_InputPlan(d, checks or {}) for d in inputs)

    def __call__(self, kwargs: dict) -> tuple[dict[str, Tensor], dict[str, int]]:
        names = self._names
        for key in kwargs:
            if key not in names:
                self._reject(kwargs)
        sizes: dict[str, int] = {}
        bound_by: dict[str, str] = {}
        bound: dict[str, Tensor] = {}
        for plan in self._plans:
            name = plan.name
            if name in kwargs:
                value = kwargs[name]
            elif plan.has_default:
                value = plan.default
            else:
                self._reject(kwargs)
            tensor = plan.fast(value, sizes, bound_by) if plan.fast is not None else None
            if tensor is None:
                try:
                    tensor = bind_value(value, name, plan.ttype, sizes, bound_by)
                except SdslInputError as err:
                    if err.span is None:
                        raise SdslInputError(err.message, plan.decl.span, err.notes) from None
                    raise
            bound[name] = tensor
        return bound, sizes

    def _reject(self, kwargs: dict):
        """Raise the error for unknown or missing inputs (called only when there is one)."""
        program = self.program
        inputs = program.inputs
        names = [d.name for d in inputs]
        unknown = [k for k in kwargs if k not in self._names]
        if unknown:
            span = inputs[0].span if inputs else None
            valid = ", ".join(names) if names else "none"
            raise SdslInputError(
                f"unknown input{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"the inputs of {program.name} are: {valid}", span)
        missing = [d for d in inputs if d.name not in kwargs and d.default is None]
        listed = ", ".join(f"{d.name}: {d.type}" for d in missing)
        raise SdslInputError(f"missing input{'s' if len(missing) > 1 else ''} {listed}", missing[0].span)


_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
_UNSIGNED = {np.dtype(np.int32): np.dtype(np.uint32), np.dtype(np.int64): np.dtype(np.uint64)}
_count = np.count_nonzero


def csr_canonical(indptr: np.ndarray, indices: np.ndarray, ncols: int) -> bool:
    """Whether ``(indptr, indices)`` (1-D, one index dtype) is canonical CSR with ``ncols`` columns:
    ``indptr`` starts at 0, never decreases and ends at ``len(indices)``; every index is in ``[0, ncols)``;
    indices strictly increase within each row. O(rows + entries) in a handful of numpy calls;
    np.count_nonzero is the cheapest boolean reduction on small arrays (ndarray.any/all go through a
    Python-level wrapper)."""
    nnz = indices.shape[0]
    if indptr.shape[0] < 1 or indptr[0] != 0 or indptr[-1] != nnz:
        return False
    if _count(indptr[1:] < indptr[:-1]):
        return False
    if not nnz:
        return True
    # negative indices wrap to huge unsigned values: one comparison checks both bounds
    if _count(indices.view(_UNSIGNED[indices.dtype]) >= ncols):
        return False
    increasing = indices[1:] > indices[:-1]
    if _count(increasing) != nnz - 1:
        # a row may start below the previous row's last index; nothing else may fail to increase
        row_start = np.zeros(nnz + 1, dtype=bool)
        row_start[indptr] = True
        if _count(increasing | row_start[1:nnz]) != nnz - 1:
            return False
    return True


class _InputPlan:
    """One input declaration: its type read once, and the fast path that applies to it (or None)."""

    __slots__ = ("decl", "name", "ttype", "has_default", "default", "dims", "repeated", "storage", "pattern",
                 "fast", "csr_check", "nm_check")

    def __init__(self, decl: nodes.Decl, checks: dict):
        self.decl = decl
        self.csr_check = checks.get("csr") or csr_canonical
        self.nm_check = checks.get("nm")
        self.name = decl.name
        self.ttype = ttype = decl.type
        self.has_default = decl.default is not None
        self.default = decl.default.value if decl.default is not None else None
        self.dims = tuple(ttype.shape)
        named = [d for d in self.dims if isinstance(d, str)]
        self.repeated = len(set(named)) != len(named)  # A: csr[N, N]: both extents must agree
        self.pattern = ttype.dtype == "bool" and ttype.format.is_sparse
        self.storage = NUMPY_DTYPE[ttype.dtype]
        fmt = ttype.format.name
        self.fast = None
        # bf16 is rounded on the way in (a new array): nothing to gain from a fast path
        if ttype.dtype == "bf16" or ttype.is_scalar:
            return
        if fmt == "csr" and ttype.rank == 2:
            self.fast = self._fast_scipy_csr
        elif fmt in ("dense", "auto"):
            self.fast = self._fast_ndarray
        elif fmt == "nm" and self.nm_check is not None:
            self.fast = self._fast_nm

    def _fits_sizes(self, shape: tuple, sizes: dict[str, int]) -> bool:
        """Whether ``shape`` matches the declared dimensions and the sizes bound so far (binds nothing)."""
        for dim, extent in zip(self.dims, shape):
            if dim.__class__ is int:
                if extent != dim:
                    return False
            else:
                known = sizes.get(dim)
                if known is not None and known != extent:
                    return False
        if self.repeated:
            seen: dict = {}
            for dim, extent in zip(self.dims, shape):
                if seen.setdefault(dim, extent) != extent:
                    return False
        return True

    def _bind_sizes(self, shape: tuple, sizes: dict[str, int], bound_by: dict[str, str]) -> None:
        for dim, extent in zip(self.dims, shape):
            if dim.__class__ is not int and dim not in sizes:
                sizes[dim] = extent
                bound_by[dim] = self.name

    def _fast_ndarray(self, value, sizes, bound_by):
        # exactly ndarray: subclasses (np.matrix, masked arrays) carry meaning np.asarray resolves
        if value.__class__ is not np.ndarray or value.dtype != self.storage:
            return None
        shape = value.shape
        if len(shape) != len(self.dims) or not self._fits_sizes(shape, sizes):
            return None
        self._bind_sizes(shape, sizes, bound_by)
        return Dense._raw(values=value, dtype=self.ttype.dtype, shape=shape)

    def _fast_scipy_csr(self, value, sizes, bound_by):
        sp = sys.modules.get("scipy.sparse")
        if sp is None or (value.__class__ is not sp.csr_array and value.__class__ is not sp.csr_matrix):
            return None
        indptr, indices, data = value.indptr, value.indices, value.data
        idt = indptr.dtype
        if (indices.dtype != idt or idt not in _INDEX_DTYPES or indptr.ndim != 1 or indices.ndim != 1
                or data.ndim != 1):
            return None
        if self.pattern:
            if data.dtype.kind not in "biuf":
                return None
        elif data.dtype != self.storage:
            return None
        shape = value.shape
        if len(shape) != 2:  # scipy also has 1-D csr arrays
            return None
        shape = (int(shape[0]), int(shape[1]))
        if not self._fits_sizes(shape, sizes):
            return None
        nnz = indices.shape[0]
        # indptr[-1] == nnz also excludes scipy's spare capacity (bind_value trims it into a view)
        if indptr.shape[0] != shape[0] + 1 or data.shape[0] != nnz or indptr[0] != 0 or indptr[-1] != nnz:
            return None
        # No trust in scipy's has_canonical_format: it is a cached flag that in-place edits of .indices do
        # not reset, and an unsorted row reaching a kernel gives a wrong answer silently.
        if nnz and not self.csr_check(indptr, indices, shape[1]):
            return None
        self._bind_sizes(shape, sizes, bound_by)
        values = np.ones(nnz, dtype=bool) if self.pattern else data
        return CSR._raw(indptr=indptr, indices=indices, data=values, shape=shape, dtype=self.ttype.dtype)

    def _fast_nm(self, value, sizes, bound_by):
        # what bind_value returns for an NM of the declared dtype and parameters that is valid and canonical:
        # the value itself (a pattern's stored values must all be True already, as in as_container)
        if value.__class__ is not NM or value.dtype != self.ttype.dtype:
            return None
        shape = value.shape
        if len(shape) != 2 or not self._fits_sizes(shape, sizes):
            return None
        values, offsets = value.values, value.offsets
        expect = (shape[0], value.groups, value.n)
        if (values.shape != expect or offsets.shape != expect or offsets.dtype.kind not in "iu"
                or value.n < 1 or value.m < 1):
            return None
        # parameters are looked up as bind_value does: sizes bound so far, then this value's own extents
        fixed: dict[str, int] = {d: e for d, e in zip(self.dims, shape) if d.__class__ is not int}
        for p, v in zip(self.ttype.format.params, (value.n, value.m)):
            known = p if p.__class__ is int else sizes.get(p, fixed.get(p))
            if known is None:
                fixed[p] = v
            elif known != v:
                return None
        if self.pattern and not values.all():
            return None
        if offsets.size and not self.nm_check(offsets, value.m, shape[1]):
            return None
        for p, v in fixed.items():
            if p not in sizes:
                sizes[p] = v
                bound_by[p] = self.name
        return value


def bind_value(value, name: str, ttype: TensorType, sizes: dict[str, int], bound_by: dict[str, str]) -> Tensor:
    """Convert one value to ``ttype``, binding new sizes into ``sizes`` (and ``bound_by``: size -> input)."""
    what = f"input {name}"
    if ttype.is_scalar:
        return _bind_scalar(value, name, ttype)
    pattern = ttype.dtype == "bool" and ttype.format.is_sparse
    src = as_container(value, name, ttype.dtype, sparse_target=ttype.format.is_sparse, pattern=pattern)
    if len(src.shape) != ttype.rank:
        raise SdslInputError(f"{what}: expected rank {ttype.rank} ({ttype}), got a value of shape {src.shape}")
    for axis, (dim, extent) in enumerate(zip(ttype.shape, src.shape)):
        if isinstance(dim, int):
            if extent != dim:
                raise SdslInputError(f"{what}: dimension {axis} must be {dim} ({ttype}), got {extent} "
                                     f"(shape {src.shape})")
        elif dim in sizes:
            if sizes[dim] != extent:
                raise SdslInputError(
                    f"size {dim} is {sizes[dim]} from input {bound_by[dim]} but input {name} has {extent} "
                    f"along dimension {axis} (shape {src.shape})")
        else:
            sizes[dim] = extent
            bound_by[dim] = name
    fmt = ttype.format
    if fmt.name == "auto":
        return src.canonical()
    params = []
    for k, p in enumerate(fmt.params):
        if isinstance(p, int):
            params.append(p)
        elif p in sizes:
            params.append(sizes[p])
        elif src.format_name == fmt.name:
            sizes[p] = src.params[k]
            bound_by[p] = name
            params.append(src.params[k])
        else:
            raise SdslInputError(
                f"{what}: format parameter {p} of {fmt} is not fixed: pass a {fmt.name} value "
                f"(sd.{FORMAT_CLASSES[fmt.name].__name__}{' or a scipy/torch bsr array' if fmt.name == 'bsr' else ''}) "
                f"or bind {p} through an earlier input")
    return convert_format(src, fmt.name, tuple(params), what)


def _bind_scalar(value, name: str, ttype: TensorType) -> Dense:
    what = f"input {name}"
    if isinstance(value, Dense):
        arr = value.values
    elif _is_torch(value):
        arr = torch_to_numpy(value)
    elif isinstance(value, (bool, int, float, np.generic, np.ndarray)):
        try:
            arr = np.asarray(value)
        except OverflowError:
            raise SdslInputError(f"{what}: {value} does not fit the declared dtype {ttype.dtype}") from None
    else:
        raise SdslInputError(f"{what}: expected a scalar {ttype.dtype}, got a value of type {type(value).__name__}")
    if arr.ndim != 0:
        raise SdslInputError(f"{what}: expected a scalar {ttype.dtype}, got an array of shape {arr.shape}")
    if arr.dtype == object:
        raise SdslInputError(f"{what}: {value!r} does not fit the declared dtype {ttype.dtype}")
    return Dense._raw(values=cast_input(arr, ttype.dtype, name), dtype=ttype.dtype, shape=())


def convert_format(src: Tensor, fmt_name: str, params: tuple[int, ...], what: str) -> Tensor:
    """``src`` (validated) as a canonical container of format ``fmt_name`` with ``params``."""
    if src.format_name == fmt_name and tuple(src.params) == tuple(params):
        return src.canonical()
    return FORMAT_CLASSES[fmt_name].from_coo(src.to_coo(), tuple(params), what)


# ---------------------------------------------------------------- user value -> container

def _is_torch(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_networkx(value) -> bool:
    nx = sys.modules.get("networkx")
    return nx is not None and isinstance(value, nx.Graph)


def _values(arr: np.ndarray, dtype: str, name: str, pattern: bool) -> np.ndarray:
    """Stored values cast to ``dtype``; for a pattern, True at every stored coordinate."""
    if pattern:
        if arr.dtype.kind not in "biuf":
            raise SdslInputError(f"input {name}: cannot use values of type {arr.dtype} as a bool pattern")
        return np.ones(arr.shape, dtype=bool)
    return cast_input(arr, dtype, name)


def _from_dense_array(arr: np.ndarray, name: str, dtype: str, sparse_target: bool, pattern: bool) -> Tensor:
    if arr.dtype.kind not in "biuf":
        raise SdslInputError(f"input {name}: cannot convert values of type {arr.dtype} to the declared dtype {dtype}")
    if not sparse_target:
        return Dense._raw(values=cast_input(arr, dtype, name), dtype=dtype, shape=tuple(arr.shape))
    if arr.ndim == 0:
        raise SdslInputError(f"input {name}: expected a tensor, got a scalar")
    nz = np.nonzero(arr)
    coords = np.stack(nz).astype(np.int64) if nz else np.zeros((0, 0), np.int64)
    return COO._raw(coords=coords, data=_values(arr[nz], dtype, name, pattern), shape=tuple(arr.shape), dtype=dtype)


def as_container(value, name: str, dtype: str, sparse_target: bool = True, pattern: bool = False) -> Tensor:
    """Wrap a user value as a validated container of ``dtype``, keeping the value's own format.

    Arrays are shared, not copied, where no cast is needed; the result may be non-canonical (it comes straight
    from the user's storage). A dense value for a ``sparse_target`` becomes a COO of its nonzeros.
    """
    what = f"input {name}"
    if isinstance(value, Tensor):
        value.validate(name)
        if isinstance(value, Dense):
            return _from_dense_array(value.values, name, dtype, sparse_target, pattern)
        if pattern:
            # True at every stored coordinate, whatever the entry holds: a bool block format stores False too
            # (a blockdiag's or bsr's entries outside the nonzeros, an nm's empty slots)
            if value.dtype == "bool" and getattr(value, value.value_attr).all():
                return value
            return _pattern_of(value, name)
        if value.dtype == dtype:
            return value
        return value.astype(dtype, name)
    if _is_scipy_sparse(value):
        src = _from_scipy(value, name, dtype, pattern)
    elif _is_torch(value):
        src = _from_torch(value, name, dtype, sparse_target, pattern)
    elif _is_networkx(value):
        src = _from_networkx(value, name, dtype, pattern)
    elif isinstance(value, (np.ndarray, np.generic, bool, int, float, list, tuple)):
        try:
            arr = np.asarray(value)
        except (ValueError, OverflowError) as err:
            raise SdslInputError(f"{what}: cannot read the value as an array ({err})") from None
        return _from_dense_array(arr, name, dtype, sparse_target, pattern)
    else:
        raise SdslInputError(
            f"{what}: cannot use a value of type {type(value).__module__}.{type(value).__qualname__} "
            "(expected a scipy.sparse matrix or array, a numpy array, a torch tensor, a networkx graph, "
            "or a sparsedsl tensor)")
    src.validate(name)
    return src


def _pattern_of(t: Tensor, name: str) -> Tensor:
    vals = getattr(t, t.value_attr)
    return t.replace(**{t.value_attr: _values(vals, "bool", name, True), "dtype": "bool"})


def _is_scipy_sparse(value) -> bool:
    sp = sys.modules.get("scipy.sparse")
    return sp is not None and sp.issparse(value)


def _without_spare(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray):
    """(indices, values) without the spare room scipy tolerates after indptr[-1] in a csr, csc or bsr (not
    part of the matrix); as given when there is none or indptr is malformed (validation reports that)."""
    if indptr.ndim == 1 and indptr.size:
        end = int(indptr[-1])
        if 0 <= end < min(indices.shape[0], values.shape[0]):
            return indices[:end], values[:end]
    return indices, values


def _from_scipy(m, name: str, dtype: str, pattern: bool) -> Tensor:
    what = f"input {name}"
    shape = tuple(int(s) for s in m.shape)
    fmt = m.format
    if fmt in ("csr", "csc"):
        indptr = _index_array(m.indptr, what, "indptr")
        indices = _index_array(m.indices, what, "indices")
        indices, data = _without_spare(indptr, indices, np.asarray(m.data))
        if indptr.dtype != indices.dtype:
            indptr, indices = indptr.astype(np.int64), indices.astype(np.int64)
        cls = CSR if fmt == "csr" else CSC
        if fmt == "csc" and len(shape) != 2:
            raise SdslInputError(f"{what}: a csc value must be two-dimensional, got shape {shape}")
        return cls._raw(indptr=indptr, indices=indices, data=_values(data, dtype, name, pattern), shape=shape,
                        dtype=dtype)
    if fmt == "bsr":
        indptr = _index_array(m.indptr, what, "indptr")
        indices = _index_array(m.indices, what, "indices")
        indices, blocks = _without_spare(indptr, indices, np.asarray(m.data))
        if indptr.dtype != indices.dtype:
            indptr, indices = indptr.astype(np.int64), indices.astype(np.int64)
        return BSR._raw(indptr=indptr, indices=indices, blocks=_values(blocks, dtype, name, pattern), shape=shape,
                        blocksize=tuple(int(b) for b in m.blocksize), dtype=dtype)
    if fmt != "coo":
        m = m.tocoo()  # lil, dok, dia: scipy's own conversion, into a new object
    coords = np.stack([np.asarray(c) for c in m.coords]) if m.nnz or len(m.coords) else np.zeros((len(shape), 0))
    coords = coords.reshape(len(shape), -1)
    if coords.dtype != np.int64:
        coords = _index_array(coords, what, "coordinates").astype(np.int64)
    return COO._raw(coords=coords, data=_values(np.asarray(m.data), dtype, name, pattern), shape=shape, dtype=dtype)


def _from_torch(t, name: str, dtype: str, sparse_target: bool, pattern: bool) -> Tensor:
    import torch

    what = f"input {name}"
    t = t.detach()
    if t.device.type != "cpu":
        try:
            t = t.cpu()
        except (NotImplementedError, RuntimeError) as exc:  # a meta tensor has no values to copy
            raise SdslInputError(f"{what}: cannot copy the torch tensor from device '{t.device}' to the CPU: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    layout = t.layout
    shape = tuple(int(s) for s in t.shape)
    if layout == torch.strided:
        return _from_dense_array(torch_to_numpy(t), name, dtype, sparse_target, pattern)
    if layout == torch.sparse_coo and t.dense_dim() == 0:
        # coalesce() returns a new tensor (sorted, duplicates summed) unless t already is coalesced
        c = t if t.is_coalesced() else t.coalesce()
        coords = c.indices().numpy()
        return COO._raw(coords=coords.astype(np.int64, copy=False), data=_values(torch_to_numpy(c.values()), dtype,
                        name, pattern), shape=shape, dtype=dtype)
    if layout in (torch.sparse_csr, torch.sparse_csc) and t.ndim == 2 and t.dense_dim() == 0:
        if layout == torch.sparse_csr:
            indptr, indices, cls = t.crow_indices(), t.col_indices(), CSR
        else:
            indptr, indices, cls = t.ccol_indices(), t.row_indices(), CSC
        ip = _index_array(indptr.numpy(), what, "indptr")
        ix = _index_array(indices.numpy(), what, "indices")
        if ip.dtype != ix.dtype:
            ip, ix = ip.astype(np.int64), ix.astype(np.int64)
        return cls._raw(indptr=ip, indices=ix, data=_values(torch_to_numpy(t.values()), dtype, name, pattern),
                        shape=shape, dtype=dtype)
    if layout == torch.sparse_bsr and t.ndim == 2 and t.dense_dim() == 0:
        ip = _index_array(t.crow_indices().numpy(), what, "indptr")
        ix = _index_array(t.col_indices().numpy(), what, "indices")
        if ip.dtype != ix.dtype:
            ip, ix = ip.astype(np.int64), ix.astype(np.int64)
        blocks = torch_to_numpy(t.values())
        return BSR._raw(indptr=ip, indices=ix, blocks=_values(blocks, dtype, name, pattern), shape=shape,
                        blocksize=tuple(int(b) for b in blocks.shape[1:]), dtype=dtype)
    if layout == torch.sparse_bsc or (layout != torch.strided and t.dense_dim() == 0 and t.ndim == 2):
        return _from_torch(t.to_sparse_coo(), name, dtype, sparse_target, pattern)
    # batched or hybrid sparse layouts: their presence is not a coordinate set sparsedsl can hold
    return _from_dense_array(torch_to_numpy(t.to_dense()), name, dtype, sparse_target, pattern)


def _from_networkx(g, name: str, dtype: str, pattern: bool) -> Tensor:
    import networkx as nx

    use_pattern = pattern or dtype == "bool"
    if len(g) == 0:  # networkx refuses to build the adjacency of a graph without nodes: it is 0 x 0
        return CSR._raw(indptr=np.zeros(1, dtype=np.int64), indices=np.zeros(0, dtype=np.int64),
                        data=_values(np.zeros(0, dtype=np.float64), dtype, name, pattern), shape=(0, 0), dtype=dtype)
    try:
        adj = nx.to_scipy_sparse_array(g, nodelist=list(g), weight=None if use_pattern else "weight",
                                       format="csr")
    except (TypeError, ValueError, nx.NetworkXError) as exc:  # an edge weight that is not a number, say
        raise SdslInputError(f"input {name}: cannot read the networkx graph's adjacency: {exc}") from None
    if use_pattern:
        adj.data = np.ones(adj.data.shape, dtype=bool)
    return _from_scipy(adj, name, dtype, pattern)


# ---------------------------------------------------------------- container -> user value

def to_user(tensor: Tensor, torch_like: bool = False):
    """A result as numpy (dense; a 0-d result as a numpy scalar), scipy.sparse arrays, or torch tensors.

    csr -> csr_array (rank 1: a 1-D csr_array), csc -> csc_array, coo -> coo_array (any rank),
    bsr -> bsr_array, blockdiag -> bsr_array of its diagonal blocks, nm -> csr_array. With ``torch_like``:
    strided / sparse_csr / sparse_csc / sparse_coo / sparse_bsr tensors (blockdiag as sparse_bsr, nm as
    sparse_csr, a rank-1 csr as a 1-D sparse_coo); bf16 as torch.bfloat16 (numpy has no
    bfloat16, so without ``torch_like`` bf16 comes back as float32 holding bf16 values). scipy.sparse has no
    float16 either: f16 sparse results come back as float32 scipy arrays (exact); dense f16 stays float16.
    """
    if torch_like:
        return _to_torch(tensor)
    import scipy.sparse as sp

    if isinstance(tensor, Dense):
        return tensor.values[()] if tensor.values.ndim == 0 else tensor.values
    vals = getattr(tensor, tensor.value_attr)
    if vals.dtype == np.float16:
        tensor = tensor.replace(**{tensor.value_attr: vals.astype(np.float32)})
    if isinstance(tensor, NM):
        tensor = CSR.from_coo(tensor.to_coo(), ())
    if isinstance(tensor, CSR):
        return sp.csr_array((tensor.data, tensor.indices, tensor.indptr), shape=tensor.shape)
    if isinstance(tensor, CSC):
        return sp.csc_array((tensor.data, tensor.indices, tensor.indptr), shape=tensor.shape)
    if isinstance(tensor, COO):
        c = tensor.canonical()
        out = sp.coo_array((c.data, tuple(c.coords)), shape=c.shape)
        out.has_canonical_format = True
        return out
    if isinstance(tensor, BSR):
        return sp.bsr_array((tensor.blocks, tensor.indices, tensor.indptr), shape=tensor.shape,
                            blocksize=tuple(tensor.blocksize))
    if isinstance(tensor, BlockDiag):
        b = _blockdiag_as_bsr(tensor)
        return sp.bsr_array((b.blocks, b.indices, b.indptr), shape=b.shape, blocksize=b.blocksize)
    raise TypeError(f"not a sparsedsl tensor: {type(tensor).__name__}")


def _blockdiag_as_bsr(t: BlockDiag) -> BSR:
    nb, bm, bn = t.blocks.shape
    idx = np.arange(nb + 1, dtype=np.int32)
    return BSR._raw(indptr=idx, indices=idx[:-1], blocks=t.blocks, shape=t.shape, blocksize=(bm, bn), dtype=t.dtype)


def _to_torch(tensor: Tensor):
    import torch

    dt = tensor.dtype
    if isinstance(tensor, Dense):
        return numpy_to_torch(tensor.values, dt)
    if isinstance(tensor, BlockDiag):
        tensor = _blockdiag_as_bsr(tensor)
    if isinstance(tensor, NM) or (isinstance(tensor, CSR) and tensor.ndim == 1):
        tensor = (COO if tensor.ndim == 1 else CSR).from_coo(tensor.to_coo(), ())
    if isinstance(tensor, CSR):
        return torch.sparse_csr_tensor(torch.from_numpy(tensor.indptr), torch.from_numpy(tensor.indices),
                                       numpy_to_torch(tensor.data, dt), size=tensor.shape, check_invariants=False)
    if isinstance(tensor, CSC):
        return torch.sparse_csc_tensor(torch.from_numpy(tensor.indptr), torch.from_numpy(tensor.indices),
                                       numpy_to_torch(tensor.data, dt), size=tensor.shape, check_invariants=False)
    if isinstance(tensor, COO):
        c = tensor.canonical()
        return torch.sparse_coo_tensor(torch.from_numpy(c.coords), numpy_to_torch(c.data, dt), size=c.shape,
                                       is_coalesced=True, check_invariants=False)
    if isinstance(tensor, BSR):
        return torch.sparse_bsr_tensor(torch.from_numpy(tensor.indptr), torch.from_numpy(tensor.indices),
                                       numpy_to_torch(tensor.blocks, dt), size=tensor.shape, check_invariants=False)
    raise TypeError(f"not a sparsedsl tensor: {type(tensor).__name__}")

