"""Element-wise arithmetic of the reference interpreter in sparsedsl dtypes.

Every value is a numpy array in the storage dtype of its sparsedsl dtype (``types.NUMPY_DTYPE``); ``bf16``
lives in float32 and is rounded to bf16 after every operation. Operations are numpy's, in the node's dtype,
so integer arithmetic wraps as numpy's does and ``//``/``%`` have floor semantics. Callers run under
``np.errstate(all="ignore")``: division by zero, overflow and invalid casts give numpy's results silently.
"""
from __future__ import annotations

import numpy as np
from scipy import special

from sparsedsl.runtime.dtypes import round_bf16
from sparsedsl.tensor_ir.types import NUMPY_DTYPE, is_float, is_int


def np_dtype(dtype: str) -> np.dtype:
    return NUMPY_DTYPE[dtype]


def convert(values, dtype: str) -> np.ndarray:
    """``values`` in the storage of ``dtype`` (bf16: rounded); float to bool is ``!= 0`` (NaN is true)."""
    arr = np.asarray(values)
    target = NUMPY_DTYPE[dtype]
    if dtype == "bool" and arr.dtype != np.bool_:
        return arr != 0
    out = arr.astype(target, copy=False)
    if dtype == "bf16":
        out = round_bf16(out)
    return out


def truthy(values) -> np.ndarray:
    arr = np.asarray(values)
    return arr if arr.dtype == np.bool_ else arr != 0


def compute_dtype(dtype: str) -> str:
    """The dtype arithmetic of ``dtype`` is carried out in: bool arithmetic reads bools as 0/1 integers."""
    return "i64" if dtype == "bool" else dtype


def lowest(dtype: str):
    """The identity of ``max`` in ``dtype``'s storage."""
    if dtype == "bool":
        return False
    if is_int(dtype):
        return np.iinfo(NUMPY_DTYPE[dtype]).min
    return -np.inf


def highest(dtype: str):
    if dtype == "bool":
        return True
    if is_int(dtype):
        return np.iinfo(NUMPY_DTYPE[dtype]).max
    return np.inf


_ARITH = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "//": np.floor_divide, "%": np.mod,
}
_COMPARE = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal, "!=": np.not_equal,
}


def binary(op: str, a, b, dtype: str, operand_dtype: str) -> np.ndarray:
    """``a op b`` with result ``dtype``; ``operand_dtype`` is the promoted dtype of the operands."""
    if op in _COMPARE:
        return _COMPARE[op](convert(a, operand_dtype), convert(b, operand_dtype))
    if op in ("and", "or"):
        fn = np.logical_and if op == "and" else np.logical_or
        return convert(fn(truthy(a), truthy(b)), dtype)
    if op in ("&", "|"):
        if dtype == "bool" or is_float(dtype):
            fn = np.logical_and if op == "&" else np.logical_or
            return convert(fn(truthy(a), truthy(b)), dtype)
        fn = np.bitwise_and if op == "&" else np.bitwise_or
        return fn(convert(a, dtype), convert(b, dtype))
    if op == "/":
        work = dtype if is_float(dtype) else "f64"
        return convert(np.true_divide(convert(a, work), convert(b, work)), dtype)
    work = compute_dtype(dtype)
    return convert(_ARITH[op](convert(a, work), convert(b, work)), dtype)


def negate(a, dtype: str) -> np.ndarray:
    work = compute_dtype(dtype)
    return convert(np.negative(convert(a, work)), dtype)


def _sigmoid(x):
    # exp of -|x| only: never overflows, and the negative branch keeps its tiny values' precision
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


def _float_work(dtype: str) -> str:
    # transcendental functions of f16/bf16 are computed in f32 and rounded back, as numpy does for f16
    return "f32" if dtype in ("f16", "bf16") else dtype if is_float(dtype) else "f64"


def unary_func(fn: str, a, dtype: str) -> np.ndarray:
    """A function of one argument with result ``dtype``."""
    if fn in ("abs", "sign", "relu"):
        x = convert(a, compute_dtype(dtype))
        if fn == "abs":
            r = np.abs(x)
        elif fn == "sign":
            r = np.sign(x)
        else:
            r = np.maximum(x, np.zeros((), x.dtype))
        return convert(r, dtype)
    if fn in ("floor", "ceil"):
        if not is_float(dtype) and np.asarray(a).dtype.kind in "biu":
            return convert(a, dtype)
        x = convert(a, _float_work(dtype))
        return convert(np.floor(x) if fn == "floor" else np.ceil(x), dtype)
    x = convert(a, _float_work(dtype))
    match fn:
        case "exp":
            r = np.exp(x)
        case "log":
            r = np.log(x)
        case "log1p":
            r = np.log1p(x)
        case "sqrt":
            r = np.sqrt(x)
        case "rsqrt":
            r = 1.0 / np.sqrt(x)
        case "sigmoid":
            r = _sigmoid(x)
        case "tanh":
            r = np.tanh(x)
        case "gelu":
            r = 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))
        case "silu":
            r = x * _sigmoid(x)
        case "sin":
            r = np.sin(x)
        case "cos":
            r = np.cos(x)
        case _:
            raise ValueError(f"unknown function {fn!r}")
    return convert(r, dtype)


def power(a, b, dtype: str) -> np.ndarray:
    """``pow(a, b)``. numpy refuses integers to negative integer powers; here they truncate toward zero like
    ``1 / a**-b`` in integer arithmetic (1 for a = 1, ±1 for a = -1, 0 otherwise, 0 for a = 0)."""
    work = compute_dtype(dtype)
    x, y = np.broadcast_arrays(convert(a, work), convert(b, work))
    if is_float(work):
        return convert(np.power(x, y), dtype)
    negative = y < 0
    safe = np.power(x, np.where(negative, 0, y).astype(y.dtype))
    odd = (np.abs(y) % 2) == 1
    neg_result = np.where(x == 1, 1, np.where(x == -1, np.where(odd, -1, 1), 0)).astype(safe.dtype)
    return convert(np.where(negative, neg_result, safe), dtype)


def maximum(a, b, dtype: str) -> np.ndarray:
    work = compute_dtype(dtype)
    return convert(np.maximum(convert(a, work), convert(b, work)), dtype)


def minimum(a, b, dtype: str) -> np.ndarray:
    work = compute_dtype(dtype)
    return convert(np.minimum(convert(a, work), convert(b, work)), dtype)


def accumulate(op: str, old, new, dtype: str) -> np.ndarray:
    """The combination of an accumulating assignment (``+=``, ``max=``, ``min=``) where both are present."""
    if op == "+=":
        return binary("+", old, new, dtype, dtype)
    if op == "max=":
        return maximum(old, new, dtype)
    if op == "min=":
        return minimum(old, new, dtype)
    raise ValueError(f"unknown accumulation {op!r}")
