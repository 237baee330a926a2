"""sparsedsl: a declarative language for graph-centric sparse computation.

``sd.load(path)`` / ``sd.loads(text)`` give a ``Program``; ``program.compile(target)`` a callable kernel;
``@sd.kernel`` writes the same programs in Python (see ``sparsedsl.frontend.embed`` for the spellings).
"""
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
from sparsedsl.frontend.embed import *  # noqa: F401,F403  (kernel, indices, tensor, sum, ... : its __all__)
from sparsedsl.frontend.embed import __all__ as _embed_all
from sparsedsl.runtime.tensors import BSR, COO, CSC, CSR, NM, BlockDiag, Dense, Tensor

__version__ = "0.1.0"

__all__ = [
    "load", "loads", "Program", "Outputs", "IR", "TARGETS",
    "SdslError", "SdslSyntaxError", "SdslNameError", "SdslTypeError", "SdslScheduleError", "SdslImportError",
    "SdslInputError", "SdslTargetError", "SdslRuntimeError",
    "Tensor", "Dense", "CSR", "CSC", "COO", "BSR", "BlockDiag", "NM",
    *_embed_all,
]
