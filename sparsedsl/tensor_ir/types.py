"""Types of the tensor IR: dtypes, formats (as levels with properties), tensor types and promotion.

A format is described by properties, not by its name, so that later layers ask "is it compressed along
rows?" rather than "is it csr?" (TACO's lesson).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

DTYPES = ("bool", "i8", "i32", "i64", "f16", "bf16", "f32", "f64")
INT_DTYPES = ("i8", "i32", "i64")
FLOAT_DTYPES = ("f16", "bf16", "f32", "f64")
# Promotion order (spec § 6); bf16 is placed with f16 and the pair promotes to f32.
_RANK = {"bool": 0, "i8": 1, "i32": 2, "i64": 3, "f16": 4, "bf16": 4, "f32": 5, "f64": 6}

# numpy storage dtype of each sparsedsl dtype. numpy has no bfloat16: bf16 values are stored in float32
# and rounded to bf16 precision after every operation (see runtime.dtypes.round_bf16).
NUMPY_DTYPE = {
    "bool": np.dtype(np.bool_), "i8": np.dtype(np.int8), "i32": np.dtype(np.int32), "i64": np.dtype(np.int64),
    "f16": np.dtype(np.float16), "bf16": np.dtype(np.float32), "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
}


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def is_int(dtype: str) -> bool:
    return dtype in INT_DTYPES


def promote(a: str, b: str) -> str:
    """The common dtype of two operands (spec § 6: bool < i8 < i32 < i64 < f16 < f32 < f64)."""
    if a == b:
        return a
    if {a, b} == {"f16", "bf16"}:
        return "f32"
    return a if _RANK[a] > _RANK[b] else b


Dim = Union[str, int]  # a size name or a literal extent


@dataclass(frozen=True)
class Format:
    """A storage format. ``name`` is one of dense csr csc coo bsr blockdiag nm, or ``auto`` (compiler's choice).

    ``params``: bsr → (BM, BN); blockdiag → (NB,); nm → (N, M). Parameters may be size names bound at call time.
    """

    name: str
    params: tuple[Dim, ...] = ()

    @property
    def is_dense(self) -> bool:
        return self.name == "dense"

    @property
    def is_sparse(self) -> bool:
        return self.name not in ("dense", "auto")

    @property
    def compressed_rows(self) -> bool:
        return self.name in ("csr", "bsr", "nm")

    @property
    def compressed_cols(self) -> bool:
        return self.name == "csc"

    @property
    def blocked(self) -> bool:
        return self.name in ("bsr", "blockdiag")

    def __str__(self) -> str:
        if self.params:
            return f"{self.name}({', '.join(str(p) for p in self.params)})"
        return self.name


DENSE = Format("dense")
AUTO = Format("auto")

# formats and the tensor ranks they can hold
FORMAT_RANKS = {
    "dense": None,  # any rank
    "csr": (1, 2),  # rank 1: a compressed sparse vector
    "csc": (2,),
    "coo": None,
    "bsr": (2,),
    "blockdiag": (2,),
    "nm": (2,),
}
FORMAT_NPARAMS = {"dense": 0, "csr": 0, "csc": 0, "coo": 0, "bsr": 2, "blockdiag": 1, "nm": 2}


@dataclass(frozen=True)
class TensorType:
    """dtype, shape (size names or literals) and format; a scalar is rank 0 with the dense format."""

    dtype: str
    shape: tuple[Dim, ...] = ()
    format: Format = DENSE

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_scalar(self) -> bool:
        return not self.shape

    def __str__(self) -> str:
        if self.is_scalar:
            return self.dtype
        return f"{self.format}<{self.dtype}>[{', '.join(str(d) for d in self.shape)}]"
