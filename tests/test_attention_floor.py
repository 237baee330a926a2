"""benchmarks/attention_floor.py: its floor loop adds up exactly the rows it claims to read.

The floor is only a measurement if it does the reads of attention: for every stored (i, j), K[j] + V[j] once.
Checked against scipy on a pattern with empty rows, rows shorter and longer than its four-entry steps, and a
last row whose prefetch would run past the end. Times are not asserted.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

pytest.importorskip("torch")
pytest.importorskip("graphblas")


@pytest.fixture(scope="module")
def floor_module():
    saved_path = list(sys.path)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("sparsedsl_benchmarks_floor", BENCHMARKS / "attention_floor.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("sparsedsl_benchmarks_floor", None)
        sys.path[:] = saved_path


def test_floor_reads_each_k_and_v_row_once_per_entry(floor_module, tmp_path):
    import sparsedsl as sd

    cpu = floor_module.cpu
    compiled = sd.loads(cpu.PROGRAMS["attention"], name="floor_test").compile(target="numba",
                                                                              cache_dir=str(tmp_path))
    floor = floor_module.floor_for(compiled)
    rng = np.random.default_rng(5)
    n = 40
    lengths = [0, 1, 3, 4, 5, 8, 9, 0, 13, 2] * 4
    rows = [np.sort(rng.choice(n, size=k, replace=False)) for k in lengths]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    indices = np.concatenate(rows).astype(np.int32)
    G = sp.csr_array((np.ones(indices.size, dtype=bool), indices, indptr), shape=(n, n))
    K = rng.standard_normal((n, cpu.FEATURES)).astype(np.float32)
    V = rng.standard_normal((n, cpu.FEATURES)).astype(np.float32)
    out = np.full((n, cpu.FEATURES), np.nan, dtype=np.float32)
    floor(G.indptr, G.indices, K, V, out)
    want = G.astype(np.float64) @ (K.astype(np.float64) + V.astype(np.float64))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)
    assert not out[np.array(lengths) == 0].any()
