"""The pass pipeline: a named, ordered list of IR → IR passes, each returning its decisions for ``explain``.

Every pass is a pure function ``Program -> (Program, [Decision])``; the pipeline verifies nothing it cannot
check cheaply and never changes a result (spec § 8: schedules and passes change speed, not answers).
"""
from __future__ import annotations

from sparsedsl.passes.formats import Decision, select_formats
from sparsedsl.tensor_ir import nodes as N

PASSES = (
    ("select-formats", select_formats),
)


def run_passes(program: N.Program) -> tuple[N.Program, list[Decision]]:
    decisions: list[Decision] = []
    for _, fn in PASSES:
        program, made = fn(program)
        decisions.extend(made)
    return program, decisions
