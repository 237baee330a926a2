"""Shared test set-up: paths, a private compilation cache per test, small graphs, and a CLI runner."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DATA = ROOT / "sparsedsl" / "data"
BENCHMARKS = ROOT / "benchmarks"

# Property tests stay fast on the 2-core CI machine; a test that needs more examples says so itself.
settings.register_profile("sparsedsl", deadline=None, max_examples=40)
settings.load_profile("sparsedsl")


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory, worker_id):
    """One folder for the whole run: under xdist, the workers' temporary folders share a parent, and a program
    one worker compiled (Numba's JIT included) is loaded by the other. Two workers compiling the same program
    at once is what the cache is built to survive (tests/test_numba_cache.py)."""
    if worker_id == "master":
        return tmp_path_factory.mktemp("sdsl-shared-cache")
    folder = tmp_path_factory.getbasetemp().parent / "sdsl-shared-cache"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(autouse=True)
def _test_cache(request, _session_cache, tmp_path_factory, monkeypatch):
    """Compiled artifacts go to a throw-away folder, never to the user's ~/.cache. The tests of one run share
    it, so that a program one test compiled is loaded, not JIT-compiled again, by the next; a test that counts, inspects or damages the folder's entries gets its own (``private_cache``)."""
    private = request.node.get_closest_marker("private_cache") is not None
    folder = tmp_path_factory.mktemp("sdsl-cache") if private else _session_cache
    monkeypatch.setenv("SDSL_CACHE_DIR", str(folder))


@pytest.fixture
def examples_dir() -> Path:
    return EXAMPLES


def random_graph(n: int, density: float, seed: int, symmetric: bool = False, weighted: bool = False,
                 self_loops: bool = False) -> sp.csr_array:
    """A random directed (or symmetric) graph as a CSR array; values 1 unless weighted (then in [1, 10))."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n, n)) < density
    if not self_loops:
        np.fill_diagonal(mask, False)
    if symmetric:
        mask = np.triu(mask, 1)
        mask = mask | mask.T
    values = rng.uniform(1.0, 10.0, size=(n, n)) if weighted else np.ones((n, n))
    if symmetric and weighted:
        values = np.triu(values, 1)
        values = values + values.T
    dense = np.where(mask, values, 0.0)
    out = sp.csr_array(dense)
    out.sort_indices()
    return out


def run_cli(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m sparsedsl ARGS`` in a fresh process (as a user would) and capture its output."""
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    return subprocess.run([sys.executable, "-m", "sparsedsl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@contextlib.contextmanager
def benchmark_module(filename: str):
    """A script of benchmarks/ imported as a module, with benchmarks/ first on sys.path as when it runs as a
    script (it imports its siblings, cpu.py and rmat.py, by name); both undone on exit."""
    saved_path = list(sys.path)
    sys.path.insert(0, str(BENCHMARKS))
    name = "sparsedsl_benchmarks_" + filename.removesuffix(".py")
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / filename)
        module = importlib.util.module_from_spec(spec)
        # dataclasses resolve string annotations through sys.modules while the module executes
        sys.modules[name] = module
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
        sys.path[:] = saved_path
