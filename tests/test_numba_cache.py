"""The numba target's compilation cache on disk, across processes.

Two processes compile and run the same program at the same moment into one fresh ``SDSL_CACHE_DIR``: both
answer correctly, the cache holds one generated module for the one key, whole (it equals the source each
process rendered), and no temporary file is left behind. A third process afterwards compiles the same
program again: it rewrites nothing — the generated module's file and Numba's index and data files keep their
modification times, so the module was imported from the cache and Numba loaded the machine code it had saved
instead of compiling again. Timings are printed by the children (pytest -s shows them), never asserted.

Oracle: scipy's row sums and ``A @ x`` of the same matrix.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROGRAM = """input  A: csr<f64>[N, M]
input  x: dense<f64>[M]
output y: dense<f64>[N]
output s: dense<f64>[N]
y[i] = sum[j] A[i, j] * x[j]
s[i] = sum[j] A[i, j]
"""

CHILD = r"""
import hashlib, json, os, sys, time
start = time.perf_counter()
import numpy as np
import scipy.sparse as sp
import sparsedsl as sd
ready, go, program = sys.argv[1], sys.argv[2], sys.argv[3]
prog = sd.loads(program, name="cached")
open(ready, "w").close()
while go != "-" and not os.path.exists(go):
    time.sleep(0.002)
t0 = time.perf_counter()
kernel = prog.compile(target="numba", parallel=False)
t1 = time.perf_counter()
rng = np.random.default_rng(0)
A = sp.random_array((40, 30), density=0.2, format="csr", dtype=np.float64, rng=rng)
x = rng.standard_normal(30)
out = kernel(A=A, x=x)
t2 = time.perf_counter()
ok = bool(np.allclose(out.y, A @ x, rtol=1e-12, atol=1e-12) and np.allclose(out.s, A.sum(axis=1), rtol=1e-12))
print(json.dumps({"ok": ok, "source_sha256": hashlib.sha256(kernel.source.encode()).hexdigest(),
                  "compile_s": t1 - t0, "first_call_s": t2 - t1, "process_s": t2 - start}))
"""


def _start(tmp: Path, tag: str, cache: Path, barrier: bool) -> tuple[subprocess.Popen, Path]:
    ready = tmp / f"ready-{tag}"
    go = str(tmp / "go") if barrier else "-"
    env = dict(os.environ, SDSL_CACHE_DIR=str(cache), PYTHONHASHSEED="0")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(ready), go, PROGRAM], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, ready


def _finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    print(report)  # timings for the reader (pytest -s); nothing is asserted about them
    return report


def _files(cache: Path) -> dict[str, tuple[int, int]]:
    """Every file under the cache: relative path -> (mtime_ns, size)."""
    return {str(p.relative_to(cache)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(cache.rglob("*")) if p.is_file()}


def test_two_processes_compile_at_once_then_a_third_reuses_the_cache(tmp_path):
    cache = tmp_path / "cache"
    procs = [_start(tmp_path, tag, cache, barrier=True) for tag in ("a", "b")]
    deadline = time.monotonic() + 120
    while not all(ready.exists() for _, ready in procs):
        assert time.monotonic() < deadline, "children did not start"
        assert all(p.poll() is None for p, _ in procs), [p.communicate() for p, _ in procs if p.poll() is not None]
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both are past their imports: they compile at the same moment
    first = [_finish(p) for p, _ in procs]
    assert all(r["ok"] for r in first)
    assert first[0]["source_sha256"] == first[1]["source_sha256"]

    files = _files(cache)
    modules = [name for name in files if name.endswith(".py")]
    assert len(modules) == 1, files  # one key, one entry
    text = (cache / modules[0]).read_bytes()
    assert hashlib.sha256(text).hexdigest() == first[0]["source_sha256"]  # whole, not a partial write
    assert not [name for name in files if Path(name).name.startswith(".tmp")], files
    numba_files = [name for name in files if name.endswith((".nbi", ".nbc"))]
    assert numba_files, files  # Numba saved its machine code next to the module

    third = _finish(_start(tmp_path, "c", cache, barrier=False)[0])
    assert third["ok"] and third["source_sha256"] == first[0]["source_sha256"]
    # nothing rewritten: the module came from the cache and Numba found its saved code valid for it
    assert _files(cache) == files
