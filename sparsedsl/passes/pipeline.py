"""The pass pipeline: a named, ordered list of IR → IR passes, each returning its decisions for ``explain``.

Every pass is a pure function ``Program -> (Program, [Decision])``; the pipeline verifies nothing it cannot
check cheaply and never changes a result (spec § 8: schedules and passes change speed, not answers).
"""
from __future__ import annotations

from sparsedsl.passes.density import Statistics
from sparsedsl.passes.formats import Decision, select_formats
from sparsedsl.passes.fusion import fuse
from sparsedsl.tensor_ir import nodes as N

# fusion first: a fused intermediate needs no storage decision
PASSES = (
    ("fuse", fuse),
    ("select-formats", select_formats),
)


def run_passes(program: N.Program, fusion: bool = True,
               stats: Statistics | None = None) -> tuple[N.Program, list[Decision]]:
    """``fusion=False`` skips the fusion pass (the reference interpreter evaluates the program as written, so
    that it stays an independent oracle for fused code). ``stats``: what is known of the inputs the program
    will run on (format selection uses it)."""
    decisions: list[Decision] = []
    for name, fn in PASSES:
        if name == "fuse" and not fusion:
            continue
        program, made = fn(program, stats) if name == "select-formats" else fn(program)
        decisions.extend(made)
    return program, decisions
