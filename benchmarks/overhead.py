"""Fixed per-call overhead of a compiled kernel on small inputs, split into its parts.

    python benchmarks/overhead.py                  # serial kernels (parallel=False), 20×20 CSR, 20×4 dense
    python benchmarks/overhead.py --parallel       # the default parallel kernels (adds the threading layer)
    python benchmarks/overhead.py --calls 20000 --n 20 --features 4
    python benchmarks/overhead.py --new-process    # a cached program's first call in a new process

Issue 3 asks for a warm call's fixed overhead (input validation, conversions, dispatch) under 200 µs for
small inputs. A call ``kernel(A=A, X=X)`` is timed whole and in parts, each the median of ``--calls`` timed
calls after warm-up:

* ``bind``: ``kernel.bind(...)``, validating and converting the inputs (dtype, shape, sizes, indptr/indices
  structure, canonical order);
* ``executable.run``: the backend's ``run`` on inputs bound beforehand; of it, ``generated run`` is the
  generated module's ``run(*arrays)`` alone (numba dispatch of every kernel plus the compiled loops), so
  ``run - generated`` is the backend's unpacking of containers and packing of results;
* ``to_user``: converting the outputs to numpy / scipy;
* ``njit floor``: calling an empty ``numba.njit`` function with as many arguments, the least any numba
  kernel call costs.

``overhead`` is ``call - generated run``: everything sparsedsl adds around the compiled loops. Nothing here
is asserted; the numbers are printed so that the figure can be re-measured on any machine. ``--clock cpu``
times with this thread's CPU clock instead of the wall clock: on a machine busy with other work the wall clock
also counts the time the process waited for a core (with ``--parallel``, the cpu clock misses the work of
Numba's worker threads: use the wall clock there).

``--new-process`` measures instead what issue 3 bounds at 1 s: a cached program's first call in a new
process. Each kernel's program is written to a file; a child process then imports sparsedsl, loads and
compiles the file and calls the kernel once, ``--runs`` times in a row on one cache folder. The first run
fills the caches (Numba's compile included); the later runs are the figure. Each child reports its phases
(numpy and scipy, ``import sparsedsl``, ``load``, ``compile``, the first call), and the whole process is also
timed from outside (interpreter start-up and exit included). ``floor`` is a child that only imports numpy,
scipy.sparse and Numba and calls one cached ``@njit`` function: the part no sparsedsl change can remove.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp

PROGRAMS = {
    "spmm": """input  A: csr<f32>[N, N]
input  X: dense<f32>[N, F]
output Y: dense<f32>[N, F]
Y[i, f] = sum[j] A[i, j] * X[j, f]
""",
    "spgemm": """input  A: csr<f64>[N, N]
input  B: csr<f64>[N, N]
output C: csr<f64>[N, N]
C[i, j] = sum[k] A[i, k] * B[k, j]
""",
}


def median_us(fn, calls: int, clock=time.perf_counter) -> float:
    for _ in range(min(200, calls)):
        fn()
    times = []
    for _ in range(calls):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times) * 1e6


def _generated_call(executable, bound, sizes):
    """The generated module's run and the arguments Executable.run passes it (None where not observable)."""
    pymod = getattr(executable, "_pymod", None)
    if pymod is None or not callable(getattr(pymod, "run", None)):
        return None, None
    captured = {}
    original = pymod.run

    def spy(*args):
        captured["args"] = args
        return original(*args)

    pymod.run = spy
    try:
        executable.run(bound, sizes)
    finally:
        pymod.run = original
    return original, captured.get("args")


def _njit_floor(nargs: int, calls: int, sample_args, clock) -> float:
    import numba

    names = ", ".join(f"a{k}" for k in range(nargs))
    scope: dict = {"numba": numba}
    exec(f"@numba.njit\ndef empty({names}):\n    return 0\n", scope)  # noqa: S102 - a fixed, local template
    empty = scope["empty"]
    empty(*sample_args)
    return median_us(lambda: empty(*sample_args), calls, clock)


def measure(kind: str, n: int, features: int, calls: int, parallel: bool, target: str,
            clock=time.perf_counter) -> dict[str, float]:
    import sparsedsl as sd
    from sparsedsl.runtime.convert import to_user

    rng = np.random.default_rng(0)
    options = {} if target != "numba" else {"parallel": parallel}
    start = time.perf_counter()
    kernel = sd.loads(PROGRAMS[kind], name=kind).compile(target=target, **options)
    compile_s = time.perf_counter() - start
    if kind == "spmm":
        inputs = {"A": sp.random_array((n, n), density=0.2, format="csr", dtype=np.float32, rng=rng),
                  "X": rng.random((n, features), dtype=np.float32)}
    else:
        inputs = {"A": sp.random_array((n, n), density=0.2, format="csr", dtype=np.float64, rng=rng),
                  "B": sp.random_array((n, n), density=0.2, format="csr", dtype=np.float64, rng=rng)}
    start = time.perf_counter()
    kernel(**inputs)
    first_s = time.perf_counter() - start

    def median(fn):
        return median_us(fn, calls, clock)

    bound, sizes = kernel.bind(**inputs)
    tensors = kernel.executable.run(bound, sizes)
    row = {
        "compile ms": compile_s * 1e3,
        "first call ms": first_s * 1e3,
        "call": median(lambda: kernel(**inputs)),
        "bind": median(lambda: kernel.bind(**inputs)),
        "executable.run": median(lambda: kernel.executable.run(bound, sizes)),
        "to_user": median(lambda: [to_user(t, False) for t in tensors.values()]),
    }
    generated, args = _generated_call(kernel.executable, bound, sizes) if target == "numba" else (None, None)
    if generated is not None and args is not None:
        row["generated run"] = median(lambda: generated(*args))
        row["njit floor"] = _njit_floor(len(args), calls, args, clock)
        row["overhead"] = row["call"] - row["generated run"]
    return row


_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import scipy.sparse as sp
t1 = time.perf_counter()
import sparsedsl as sd
t2 = time.perf_counter()
program = sd.load(sys.argv[1])
t3 = time.perf_counter()
kernel = program.compile(target="numba", parallel=sys.argv[3] == "parallel")
t4 = time.perf_counter()
rng = np.random.default_rng(0)
n = int(sys.argv[4])
if sys.argv[2] == "spmm":
    inputs = {"A": sp.random_array((n, n), density=0.2, format="csr", dtype=np.float32, rng=rng),
              "X": rng.random((n, int(sys.argv[5])), dtype=np.float32)}
else:
    inputs = {"A": sp.random_array((n, n), density=0.2, format="csr", dtype=np.float64, rng=rng),
              "B": sp.random_array((n, n), density=0.2, format="csr", dtype=np.float64, rng=rng)}
t5 = time.perf_counter()
kernel(**inputs)
t6 = time.perf_counter()
print(json.dumps({"numpy+scipy": t1 - t0, "import sparsedsl": t2 - t1, "load": t3 - t2, "compile": t4 - t3,
                  "first call": t6 - t5, "total": (t6 - t0) - (t5 - t4)}))
"""

_FLOOR = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import scipy.sparse as sp
import numba
sys.path.insert(0, sys.argv[1])
import sdsl_floor_probe
sdsl_floor_probe.f(1.0)
print(json.dumps({"total": time.perf_counter() - t0}))
"""


def new_process(kinds, runs: int, n: int, features: int, parallel: bool) -> None:
    """Print each run's phases (ms) of a child process that loads, compiles and calls a program once."""
    import json
    import subprocess

    folder = os.environ["SDSL_CACHE_DIR"]
    probe = os.path.join(folder, "sdsl_floor_probe.py")
    with open(probe, "w", encoding="utf-8") as fh:
        fh.write("import numba\n\n\n@numba.njit(cache=True)\ndef f(x):\n    return x + 1.0\n")
    cases = [("floor", [sys.executable, "-c", _FLOOR, folder])]
    for kind in kinds:
        path = os.path.join(folder, f"{kind}.sdsl")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(PROGRAMS[kind])
        cases.append((kind, [sys.executable, "-c", _CHILD, path, kind, "parallel" if parallel else "serial",
                             str(n), str(features)]))
    for kind, command in cases:
        print(f"\n{kind}:")
        for run in range(1, runs + 1):
            start = time.perf_counter()
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            process = time.perf_counter() - start
            phases = json.loads(out.stdout.strip().splitlines()[-1])
            cells = "  ".join(f"{name} {seconds * 1e3:6.0f}" for name, seconds in phases.items())
            print(f"  run {run}{' (fills the caches)' if run == 1 else ''}: {cells}  process {process * 1e3:6.0f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="rows/columns of the sparse matrix (default 20)")
    parser.add_argument("--features", type=int, default=4, help="columns of the dense operand (default 4)")
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per figure (default 5000)")
    parser.add_argument("--parallel", action="store_true", help="compile parallel kernels (numba's default)")
    parser.add_argument("--target", default="numba", choices=("numba", "ref"))
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="wall: time.perf_counter; cpu: this thread's CPU time (steadier on a busy machine)")
    parser.add_argument("--kernels", default="spmm,spgemm", help="comma-separated: spmm, spgemm")
    parser.add_argument("--new-process", action="store_true",
                        help="time a cached program's first call in a new process instead (see above)")
    parser.add_argument("--runs", type=int, default=4, help="child processes per kernel with --new-process")
    args = parser.parse_args(argv)
    # a fresh cache folder unless the caller chose one: the first call then includes Numba's compile
    os.environ.setdefault("SDSL_CACHE_DIR", tempfile.mkdtemp(prefix="sdsl-overhead-"))
    if args.new_process:
        print(f"python {sys.version.split()[0]}; a new process per run; cache folder {os.environ['SDSL_CACHE_DIR']}; "
              f"{'parallel' if args.parallel else 'serial (parallel=False)'} kernels; times in ms")
        new_process([k.strip() for k in args.kernels.split(",")], args.runs, args.n, args.features, args.parallel)
        return 0

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}; target {args.target}"
          f"{'' if args.target != 'numba' else ', parallel' if args.parallel else ', serial (parallel=False)'}; "
          f"n={args.n}, features={args.features}, median of {args.calls} calls; {args.clock} clock; times in µs")
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    order = ("call", "bind", "executable.run", "generated run", "to_user", "njit floor", "overhead")
    for kind in args.kernels.split(","):
        row = measure(kind.strip(), args.n, args.features, args.calls, args.parallel, args.target, clock)
        print(f"\n{kind}: compile {row['compile ms']:.0f} ms, first call {row['first call ms']:.0f} ms")
        for key in order:
            if key in row:
                print(f"  {key:<15} {row[key]:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
