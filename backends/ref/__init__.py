"""The reference target (``--target ref``): the tensor IR evaluated literally on dense arrays plus presence masks.

It is the oracle the other backends are tested against: obviously right rather than fast. See README.md.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from sparsedsl.core.errors import located
from sparsedsl.tensor_ir import nodes
from sparsedsl.tensor_ir.types import Format, TensorType

from .interp import Evaluator, Space, evaluate

__all__ = ["compile", "Executable", "evaluate", "Evaluator", "Space", "EMITS"]

# what `sparsedsl compile --emit` may ask of this target besides the AST and the IR
EMITS: tuple[str, ...] = ("code",)


class Executable:
    """A program ready to run on the reference interpreter."""

    def __init__(self, program: nodes.Program, options: Mapping[str, Any] | None = None):
        self.program = program
        self.options = dict(options or {})
        self.source = _describe(program)

    def run(self, bound: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
        """Outputs by name as runtime containers of their declared formats, from bound input containers."""
        env = {name: _to_presence(value) for name, value in bound.items()}
        results = evaluate(self.program, env, dict(sizes))
        out = {}
        for decl in self.program.outputs:
            values, present = results[decl.name]
            out[decl.name] = _container(values, present, decl, dict(sizes))
        return out

    def __repr__(self) -> str:
        return f"<ref Executable {self.program.name!r}>"


def compile(program: nodes.Program, options: Mapping[str, Any] | None = None) -> Executable:  # noqa: A001
    return Executable(program, options)


def _describe(program: nodes.Program) -> str:
    try:
        from sparsedsl.tensor_ir.printer import format_program
    except ImportError:
        return f"# reference interpreter: {program.name}, {len(program.body)} statements\n"
    return "# reference interpreter: evaluates this tensor IR on dense arrays plus presence masks\n" + \
        format_program(program)


def _to_presence(value) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(value, "to_presence"):
        return value.to_presence()
    arr = np.asarray(value)
    return arr, np.ones(arr.shape, bool)


def _container(values: np.ndarray, present: np.ndarray, decl: nodes.Decl, sizes: dict[str, int]):
    from sparsedsl.runtime.tensors import from_presence

    ttype = decl.type
    if ttype.format.name == "auto":
        # the checker resolves output formats; should one reach here, dense when everything is present
        if ttype.is_scalar or present.all():
            name = "dense"
        else:
            name = "csr" if ttype.rank == 2 else "coo"
        ttype = TensorType(ttype.dtype, ttype.shape, Format(name))
    fill = decl.fill.value if decl.fill is not None else 0
    with located(decl.span):
        return from_presence(values, present, ttype, sizes, f"output {decl.name}", fill)
