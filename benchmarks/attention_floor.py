"""How far graph attention can go: sparsedsl's fused kernel and torch's best composition against the cost of
only reading the rows they must read, in one run.

    python benchmarks/attention_floor.py            # the sample matrices and R-MAT 2^16, 2^18
    python benchmarks/attention_floor.py --quick    # the sample matrices and R-MAT 2^16

Row-wise attention (``benchmarks/cpu.py``'s program: SDDMM -> softmax -> SpMM over the pattern G, 64 f32
features) reads, for every stored (i, j), the rows K[j] and V[j]: 512 bytes per entry, at addresses the
pattern scatters. Fusion removes the score matrix between the steps, not those reads; torch's composition
(sampled_addmm, a scatter softmax, sparse.mm) makes the same reads in two passes. The floor timed here is a
Numba loop that does only that: for each row, add up K[j] + V[j] over its entries (parallel over rows, four
entries at a time, the rows eight entries ahead prefetched, unsigned subscripts and a constant row width as
in the generated kernels: of the variants tried on this machine, none was faster). It does no
multiplication and no exponential, so no kernel that reads each K and V row once per entry, in row order,
is expected to run faster; ``torch / floor`` is then about the largest speedup over torch such a kernel can
show. It is a measurement, not a proof: a kernel that reorders the work so that K and V rows are reused
from cache (column-blocked visits, a reordered graph) reads less.

Same protocol as cpu.py (median of ``--repeats`` after ``--warmup``, OMP_WAIT_POLICY=PASSIVE unless set,
2 threads for every library); sparsedsl is timed as a user calls it, and its result is checked against the
float64 reference before any time is printed. Nothing is asserted about the times.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as cpu.py: before any OpenMP runtime loads

import cpu  # noqa: E402


def gather_floor_kernel(prefetch, width: int, itemsize: int = 4):
    """The floor loop for rows of ``width`` values of ``itemsize`` bytes, compiled on first use, written as
    the generated kernels are (unsigned subscripts, a constant trip count); ``prefetch(arr, i, j)`` asks for
    the cache line of arr[i, j] (the generated kernels' own intrinsic, taken from the compiled module)."""
    import numba
    from numba import prange

    u = np.uint64
    step = 64 // itemsize  # values per cache line

    @numba.njit(parallel=True, fastmath={"reassoc"}, cache=False)
    def floor(indptr, indices, K, V, out):
        n = indptr.shape[0] - 1
        nnz = indices.shape[0]
        for i in prange(n):
            acc = np.zeros(width, dtype=K.dtype)
            p, end = indptr[i], indptr[i + 1]
            while p + 4 <= end:
                j0, j1, j2, j3 = u(indices[p]), u(indices[p + 1]), u(indices[p + 2]), u(indices[p + 3])
                if p + 12 <= nnz:
                    for t in range(p + 8, p + 12):
                        ahead = np.int64(indices[t])
                        for line in range(0, width, step):
                            prefetch(K, ahead, np.int64(line))
                            prefetch(V, ahead, np.int64(line))
                for d in range(width):
                    e = u(d)
                    acc[e] += (K[j0, e] + V[j0, e] + K[j1, e] + V[j1, e]) + (K[j2, e] + V[j2, e] + K[j3, e] + V[j3, e])
                p += 4
            for q in range(p, end):
                j = u(indices[q])
                for d in range(width):
                    acc[u(d)] += K[j, u(d)] + V[j, u(d)]
            out[i, :] = acc

    return floor


def floor_for(compiled, width: int = cpu.FEATURES):
    """The floor loop with the prefetch of ``compiled``'s (cpu.py's attention program's) generated module."""
    return gather_floor_kernel(compiled.executable._pymod._prefetch, width)


def run(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the sample matrices and R-MAT 2^16 only")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--matrix", action="append", default=[],
                        help="run only this matrix (repeatable): a data file's name without .mtx.gz, rmat-16, rmat-18")
    args = parser.parse_args(argv)

    import sparsedsl as sd

    threads = cpu.configure_threads(args.threads)
    protocol = cpu.Protocol(args.warmup, args.repeats, max_call_seconds=60.0)
    compiled = sd.loads(cpu.PROGRAMS["attention"], name="bench_attention").compile(target="numba")
    floor = floor_for(compiled)
    scales = cpu.RMAT_SCALES[:1] if args.quick else cpu.RMAT_SCALES
    specs = cpu.matrix_specs(cpu._default_data_dir(), scales, cpu.RMAT_PROBABILITIES, [])
    if args.matrix:
        unknown = set(args.matrix) - {s.name for s in specs}
        if unknown:
            parser.error(f"unknown matrix {', '.join(sorted(unknown))}")
        specs = [s for s in specs if s.name in args.matrix]
    rows = []
    print(f"threads: {threads['sparsedsl']}; {threads['torch']}; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    print(f"{'matrix':<13} {'nnz':>8} {'sparsedsl ms':>12} {'torch ms':>9} {'floor ms':>9} "
          f"{'sdsl/floor':>10} {'torch/floor':>11} {'x torch':>8}")
    for spec in specs:
        A = spec.build()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: sparse CSR is beta
            case = cpu.case_attention(A)
            sdsl = cpu.measure("sparsedsl", lambda: compiled(**case.sdsl_inputs)["O"], case.check, protocol)
            torch = cpu._best_variant("torch", case.variants["torch"], case.check, protocol)
        G, K, V = case.sdsl_inputs["G"], case.sdsl_inputs["K"], case.sdsl_inputs["V"]
        out = np.empty_like(K)
        gather = cpu.measure("floor", lambda: floor(G.indptr, G.indices, K, V, out), lambda _: None, protocol)
        if sdsl.status != "ok" or torch.status != "ok":
            print(f"{spec.name:<13} sparsedsl {sdsl.status} ({sdsl.note}); torch {torch.status} ({torch.note})")
            continue
        row = {"matrix": spec.name, "nnz": G.nnz, "sparsedsl": sdsl.seconds, "torch": torch.seconds,
               "floor": gather.seconds}
        rows.append(row)
        print(f"{spec.name:<13} {G.nnz:>8} {sdsl.seconds * 1e3:>12.2f} {torch.seconds * 1e3:>9.2f} "
              f"{gather.seconds * 1e3:>9.2f} {sdsl.seconds / gather.seconds:>10.2f} "
              f"{torch.seconds / gather.seconds:>11.2f} {torch.seconds / sdsl.seconds:>8.2f}", flush=True)
    if rows:
        geo = lambda key: float(np.exp(np.mean([np.log(r["torch"] / r[key]) for r in rows])))  # noqa: E731
        print(f"geometric mean over {len(rows)} matrices: sparsedsl {geo('sparsedsl'):.2f}x torch; "
              f"the floor {geo('floor'):.2f}x torch")
    return rows


if __name__ == "__main__":
    run()
