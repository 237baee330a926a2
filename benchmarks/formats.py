"""Where a bitmap intermediate beats a compressed one: the crossing point behind ``BITMAP_DENSITY``.

    python benchmarks/formats.py                     # n = 1500, estimated densities 5% .. 95%
    python benchmarks/formats.py --n 3000 --repeats 9

Format selection (``sparsedsl/passes/formats.py``) stores an intermediate as a bitmap (values and a presence
flag at every coordinate) when the bound inputs' statistics estimate it at least ``BITMAP_DENSITY`` present,
and as compressed rows otherwise. This script compiles programs whose intermediate ``T = A·B`` has a chosen
estimated density both ways (the pass run with its bitmap threshold at 0, and without statistics) and times the two kernels in
the same process, interleaved, after a warm-up call: median of ``--repeats`` calls each, 2 Numba threads.
Each pair of results is checked against scipy before anything is timed. The table prints both times and
``csr / bitmap`` (above 1: the bitmap is faster).

Programs: ``readers`` (T read at a sparse pattern's entries and summed by rows, as a later masked statement
and a degree count would) and ``chain`` (T multiplied by another sparse matrix: its rows walked whole).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import scipy.sparse as sp

PROGRAMS = {
    "readers": """input  A: csr<f64>[n, n]
input  B: csr<f64>[n, n]
input  M: csr<f64>[n, n]
output C: csr<f64>[n, n]
output r: dense<f64>[n]
T[i, j] = sum[k] A[i, k] * B[k, j]
C[i, j] = T[i, j] * M[i, j] + M[i, j]
r[i] = sum[j] T[i, j]
""",
    "symmetric": """input  A: csr<f64>[n, n]
input  B: csr<f64>[n, n]
input  M: csr<f64>[n, n]
output C: csr<f64>[n, n]
T[i, j] = sum[k] A[i, k] * B[k, j]
C[i, j] = T[i, j] + T[j, i]
""",
    "chain": """input  A: csr<f64>[n, n]
input  B: csr<f64>[n, n]
input  M: csr<f64>[n, n]
output C: csr<f64>[n, n]
T[i, j] = sum[k] A[i, k] * B[k, j]
C[i, j] = sum[k] T[i, k] * M[k, j]
""",
}


def compile_layout(text: str, inputs: dict, bitmap: bool):
    """The numba kernel of ``text`` with ``T`` a bitmap (format selection's threshold at 0) or compressed rows
    (format selection without statistics); returns it with the layout chosen."""
    import sparsedsl as sd
    from sparsedsl.passes.formats import select_formats
    from sparsedsl.passes.fusion import fuse

    nb = sd.api.backend_module("numba")
    program = sd.loads(text, name="formats-bench")
    stats = program.input_statistics(inputs)[0] if bitmap else None
    fused, _ = fuse(program.ir().program)
    lowered, decisions = select_formats(fused, stats, bitmap_density=0.0)
    executable = nb.compile(lowered, {})
    chosen = next(str(d.choice) for d in decisions if d.subject == "T")
    kernel = sd.api.Kernel(program, "numba", {}, executable, lowered, 0.0)
    return kernel, chosen


def reference(name: str, A, B, M) -> dict:
    T = (A @ B).tocsr()
    if name == "readers":
        return {"C": (T.multiply(M) + M).tocsr(), "r": np.asarray(T.sum(axis=1)).ravel()}
    if name == "symmetric":
        return {"C": (T + T.T).tocsr()}
    return {"C": (T @ M).tocsr()}


def check(out, ref: dict) -> None:
    for key, want in ref.items():
        got = out[key]
        if sp.issparse(want):
            diff = abs(sp.csr_array(got) - sp.csr_array(want))
            worst = diff.max() if diff.nnz else 0.0
            scale = max(abs(want).max(), 1.0) if want.nnz else 1.0
        else:
            worst, scale = np.max(np.abs(got - want), initial=0.0), max(np.max(np.abs(want), initial=0.0), 1.0)
        if worst > 1e-9 * scale:
            raise AssertionError(f"{key}: off by {worst} (scale {scale})")


def input_density(target: float, n: int) -> float:
    """The density of A and B that makes A·B's estimate ``1 - (1 - a²)^n`` equal ``target``."""
    return math.sqrt(-math.expm1(math.log1p(-target) / n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--densities", default="0.05,0.15,0.25,0.4,0.6,0.8,0.95")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    print(f"n = {args.n}, {args.threads} threads, median of {args.repeats}; csr/bitmap > 1: bitmap faster")
    print(f"{'program':<8} {'est.':>6} {'actual':>7} {'csr ms':>9} {'bitmap ms':>10} {'csr/bitmap':>11}")
    rng = np.random.default_rng(5)
    for name, text in PROGRAMS.items():
        for target in (float(x) for x in args.densities.split(",")):
            a = input_density(target, args.n)
            A, B = (sp.random_array((args.n, args.n), density=a, format="csr", rng=rng) for _ in range(2))
            M = sp.random_array((args.n, args.n), density=0.01, format="csr", rng=rng)
            inputs = {"A": A, "B": B, "M": M}
            (csr, c1), (bitmap, c2) = (compile_layout(text, inputs, b) for b in (False, True))
            assert (c1, c2) == ("csr", "bitmap"), (c1, c2)
            ref = reference(name, A, B, M)
            for kernel in (csr, bitmap):
                check(kernel(**inputs), ref)
            times: dict[str, list[float]] = {"csr": [], "bitmap": []}
            for _ in range(args.repeats):
                for label, kernel in (("csr", csr), ("bitmap", bitmap)):
                    start = time.perf_counter()
                    kernel(**inputs)
                    times[label].append(time.perf_counter() - start)
            t_csr, t_bitmap = (statistics.median(times[k]) * 1e3 for k in ("csr", "bitmap"))
            actual = (A @ B).nnz / args.n ** 2
            print(f"{name:<8} {target:>6.0%} {actual:>7.1%} {t_csr:>9.2f} {t_bitmap:>10.2f} "
                  f"{t_csr / t_bitmap:>11.2f}")


if __name__ == "__main__":
    main()
