"""Numba's parallel options for the generated kernels: the pranges only.

With ``parallel=True`` Numba would also turn every np.zeros / np.ones / np.arange / fill / slice assignment /
array expression outside the pranges into a parallel loop of its own, and each one is a launch of the thread
team: under ``OMP_WAIT_POLICY=PASSIVE`` (the benchmark harness's setting, where an idle worker sleeps) about
70-100 us on the 2-vCPU VM, where the ``np.zeros(1)`` of a claimed loop's counter doubled the launches of
SpMM (compiled code alone: bcsstk13 362 -> 268 us, ego-Facebook 639 -> 529 us).

Numba must be given a ``ParallelOptions`` object, not the dict: it empties a dict when it compiles the first
specialization, and the next one (int64 indices after int32) would get every option back.
"""
from __future__ import annotations

PRANGE_ONLY = {"prange": True, "numpy": False, "setitem": False, "reduction": False, "inplace_binop": False,
               "comprehension": False, "stencil": False, "fusion": False}


def source_text(name: str) -> str:
    """Python source assigning the options object to ``name`` (generated modules import only numpy and
    numba)."""
    items = ", ".join(f"{key}={value}" for key, value in PRANGE_ONLY.items())
    return f"{name} = _ParallelOptions(dict(\n    {items}))"
