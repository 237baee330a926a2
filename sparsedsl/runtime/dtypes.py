"""sparsedsl dtypes at run time: numpy storage, bf16 rounding, input casting, torch dtypes.

numpy has no bfloat16, so a ``bf16`` value is stored in a float32 array whose values are exactly
representable in bfloat16 (``round_bf16``). Inputs are cast by the rule of interface.md ("numpy's
``same_kind``"): any float to the declared float, any integer to the declared integer when every value fits,
bool to anything. Two extensions, both loss-free: an integer input converts to a declared float (numpy's
``same_kind`` allows it), and to ``bool`` when every value is 0 or 1 (bool's range, as for any integer).
Everything else (float to integer, an overflowing integer, complex, object, strings) is an ``SdslInputError``
naming the input.
"""
from __future__ import annotations

import numpy as np

from sparsedsl.core.errors import SdslInputError, Span
from sparsedsl.tensor_ir.types import DTYPES, NUMPY_DTYPE, is_float, is_int

__all__ = [
    "NUMPY_DTYPE", "numpy_dtype", "dtype_of_numpy", "infer_dtype", "round_bf16", "cast_input",
    "dtype_of_torch", "torch_dtype", "torch_to_numpy", "numpy_to_torch", "index_dtype",
]

INT32_MAX = np.iinfo(np.int32).max

# exact numpy dtype -> sparsedsl dtype (float32 maps to f32: bf16 is never inferred, only declared)
_FROM_NUMPY = {
    np.dtype(np.bool_): "bool", np.dtype(np.int8): "i8", np.dtype(np.int32): "i32", np.dtype(np.int64): "i64",
    np.dtype(np.float16): "f16", np.dtype(np.float32): "f32", np.dtype(np.float64): "f64",
}


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy storage dtype of a sparsedsl dtype (bf16 -> float32)."""
    return NUMPY_DTYPE[dtype]


def dtype_of_numpy(dt) -> str | None:
    """The sparsedsl dtype stored exactly as numpy dtype ``dt``, or None."""
    return _FROM_NUMPY.get(np.dtype(dt))


def infer_dtype(dt) -> str | None:
    """The sparsedsl dtype a value of numpy dtype ``dt`` naturally has (uint8 -> i64, float128 -> f64 ...).

    None for kinds sparsedsl cannot hold (complex, object, strings, datetimes).
    """
    dt = np.dtype(dt)
    exact = _FROM_NUMPY.get(dt)
    if exact is not None:
        return exact
    if dt.kind in "iu":
        return "i64"
    if dt.kind == "f":
        return "f64"
    return None


def round_bf16(a) -> np.ndarray:
    """Round to the nearest bfloat16 (ties to even) on the float32 bits; returns a new float32 array.

    NaNs stay NaN (quieted, sign kept): plain truncation of a NaN whose payload sits in the low 16 bits
    would turn it into an infinity.
    """
    a32 = np.array(a, dtype=np.float32, copy=True)
    bits = a32.view(np.uint32)
    nan = np.isnan(a32)
    lsb = (bits >> np.uint32(16)) & np.uint32(1)
    rounded = (bits + np.uint32(0x7FFF) + lsb) & np.uint32(0xFFFF0000)
    rounded = np.where(nan, (bits & np.uint32(0xFFFF0000)) | np.uint32(0x00400000), rounded)
    return rounded.astype(np.uint32).view(np.float32).reshape(a32.shape)


def _fits(arr: np.ndarray, target: np.dtype) -> bool:
    if arr.size == 0:
        return True
    lo, hi = arr.min(), arr.max()
    if target == np.bool_:
        return int(lo) >= 0 and int(hi) <= 1
    info = np.iinfo(target)
    return int(lo) >= info.min and int(hi) <= info.max


def cast_input(array, dtype: str, what: str, span: Span | None = None) -> np.ndarray:
    """``array`` as the storage of sparsedsl ``dtype`` (a new array when a conversion is needed).

    ``what`` names the input in the error message. The caller's array is never modified.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}")
    arr = np.asarray(array)
    src = arr.dtype
    target = NUMPY_DTYPE[dtype]
    kind = src.kind
    if kind == "b":
        ok = True
    elif kind in "iu":
        if is_float(dtype):
            ok = True
        elif is_int(dtype) or dtype == "bool":
            ok = _fits(arr, target)
            if not ok:
                raise SdslInputError(
                    f"input {what}: integer values [{arr.min()}, {arr.max()}] do not fit the declared dtype {dtype}",
                    span)
        else:
            ok = False
    elif kind == "f":
        ok = is_float(dtype)
    else:
        ok = False
    if not ok:
        raise SdslInputError(
            f"input {what}: cannot convert values of type {src} to the declared dtype {dtype} "
            f"(allowed: float to float, integer to integer or float when the values fit, bool to anything)", span)
    if dtype == "bf16":
        return round_bf16(arr)
    if src == target:
        return arr
    # any float converts to the declared float (interface.md): one past its range is +-inf, as numpy and torch
    # give it, and not a warning that names this file
    with np.errstate(over="ignore"):
        return arr.astype(target)


def index_dtype(*extents: int) -> np.dtype:
    """int32 for index arrays unless an extent (a dimension or nnz) would overflow it."""
    for e in extents:
        if int(e) > INT32_MAX:
            return np.dtype(np.int64)
    return np.dtype(np.int32)


# ---------------------------------------------------------------- torch (imported lazily: an optional extra)

def _torch_table():
    import torch

    return {
        torch.bool: "bool", torch.int8: "i8", torch.int32: "i32", torch.int64: "i64", torch.float16: "f16",
        torch.bfloat16: "bf16", torch.float32: "f32", torch.float64: "f64",
    }


def dtype_of_torch(tdt) -> str | None:
    """The sparsedsl dtype of a torch dtype (torch.bfloat16 -> 'bf16'); None for uint8/int16/complex ..."""
    return _torch_table().get(tdt)


def torch_dtype(dtype: str):
    """The torch dtype of a sparsedsl dtype."""
    for t, name in _torch_table().items():
        if name == dtype:
            return t
    raise ValueError(f"unknown dtype {dtype!r}")


def torch_to_numpy(t) -> np.ndarray:
    """A CPU numpy array with the values of torch tensor ``t`` (bf16 widened exactly to float32).

    The result may share memory with ``t``; callers treat it as read-only.
    """
    import torch

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        t = t.to(torch.float32)
    if t.is_conj():
        t = t.resolve_conj()
    return t.numpy()


def numpy_to_torch(a: np.ndarray, dtype: str):
    """A torch tensor of sparsedsl ``dtype`` from its numpy storage (float32 -> torch.bfloat16 for bf16)."""
    import torch

    a = np.asarray(a)
    if not a.flags.c_contiguous:  # np.ascontiguousarray would turn a 0-d array into 1-d
        a = a.copy(order="C")
    t = torch.from_numpy(a)
    if dtype == "bf16":
        t = t.to(torch.bfloat16)
    return t
