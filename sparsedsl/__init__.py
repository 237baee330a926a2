"""sparsedsl: a declarative language for graph-centric sparse computation.

``sd.load(path)`` / ``sd.loads(text)`` give a ``Program``; ``program.compile(target)`` a callable kernel;
``@sd.kernel`` writes the same programs in Python (see ``sparsedsl.frontend.embed`` for the spellings).

The decorator front end and the runtime containers are imported on first use (PEP 562 ``__getattr__``):
a program loaded from a file needs neither to be parsed and checked, and every import shortens a new
process's first call.
"""
import importlib

from sparsedsl.api import IR, Outputs, Program, TARGETS, load, loads
from sparsedsl.core.errors import (
    SdslError,
    SdslImportError,
    SdslInputError,
    SdslNameError,
    SdslRuntimeError,
    SdslScheduleError,
    SdslSyntaxError,
    SdslTargetError,
    SdslTypeError,
)

__version__ = "0.1.0"

_CONTAINERS = ("Tensor", "Dense", "CSR", "CSC", "COO", "BSR", "BlockDiag", "NM")
# sparsedsl.frontend.embed.__all__ (tests/test_startup.py checks that the two lists agree)
_EMBED = (
    "kernel", "Kernel", "indices", "tensor", "const", "size", "schedule", "repeat", "accumulate", "where",
    "IndexVar", "TensorRef", "Expression", "Size", "type_of",
    "sum", "prod", "max", "min", "mean", "var", "std", "count", "any", "all", "argmax", "argmin", "softmax",
    "logsumexp", "topk", "bottomk",
    "exp", "log", "log1p", "sqrt", "rsqrt", "abs", "sign", "relu", "sigmoid", "tanh", "gelu", "silu", "sin",
    "cos", "floor", "ceil", "pow", "maximum", "minimum", "select", "fill",
    "bool_", "i8", "i32", "i64", "f16", "bf16", "f32", "f64", "and_", "or_", "not_",
)
_LAZY = {**{name: "sparsedsl.runtime.tensors" for name in _CONTAINERS},
         **{name: "sparsedsl.frontend.embed" for name in _EMBED}}

__all__ = [
    "load", "loads", "Program", "Outputs", "IR", "TARGETS",
    "SdslError", "SdslSyntaxError", "SdslNameError", "SdslTypeError", "SdslScheduleError", "SdslImportError",
    "SdslInputError", "SdslTargetError", "SdslRuntimeError",
    *_CONTAINERS,
    *_EMBED,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sparsedsl' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
