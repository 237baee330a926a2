"""Reductions over a graph's rows into a vector ("push" steps), against the peers, in one run.

    python benchmarks/push.py                      # sample matrices and R-MAT 2^16, 2^18
    python benchmarks/push.py --quick              # sample matrices and R-MAT 2^16
    python benchmarks/push.py --parallel false     # sparsedsl's serial kernels

Such a statement (``y[j] = sum[i] A[i, j] * x[i]``, column sums, in-degrees; PageRank's and SSSP's step) has no
loop around its reduction: the numba target splits the reduction's rows over the threads and merges the
partial rows (``Lowerer.split_rows``). Timed here, each median of ``--repeats`` calls after warm-up:

* ``ATx``: y = Aᵀx (f32), against scipy's ``A.T @ x`` (1 thread) and torch's ``sparse.mm`` on Aᵀ as CSR made
  once, outside the timing (2 threads: the peer's best case);
* ``colsum``: h = column sums of a dense N×64 f32 matrix, against ``numpy.sum(axis=0)`` and ``torch.sum``;
* ``indegree``: d[j] = count of A's entries in column j, against ``numpy.bincount(A.indices)``;
* ``pagerank``: ``examples/pagerank.sdsl`` to its fixed point on the unweighted graph, against networkx's
  ``pagerank`` (scipy-based; same alpha, same stopping rule: an l1 change below 1e-12), sample graphs only.

sparsedsl's time is the whole call (input checks included: every csr input's structure is validated on each
call, 0.4-2 ms on R-MAT). Nothing is asserted; ratios are peer time / sparsedsl time.
"""
from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import sparsedsl as sd  # noqa: E402
from rmat import rmat  # noqa: E402

PROGRAMS = {
    "ATx": "input A: csr<f32>[N, N]\ninput x: dense<f32>[N]\noutput y: dense<f32>[N]\n"
           "y[j] = sum[i] A[i, j] * x[i]\n",
    "colsum": "input X: dense<f32>[N, F]\noutput h: dense<f32>[F]\nh[f] = sum[i] X[i, f]\n",
    "indegree": "input A: csr<f32>[N, N]\noutput d: dense<i64>[N]\nd[j] = count[i] A[i, j]\n",
}
DATA = HERE.parent / "sparsedsl" / "data"


def median_ms(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def matrices(quick: bool, data: Path):
    out = {}
    for path in sorted(data.glob("*.mtx.gz")):
        with gzip.open(path) as f:
            A = sp.csr_array(scipy.io.mmread(f))
        A.sum_duplicates()
        out[path.name.removesuffix(".mtx.gz")] = A
    out["rmat-16"] = rmat(16)
    if not quick:
        out["rmat-18"] = rmat(18)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", default="true", choices=["true", "false"])
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()

    import numba
    import torch

    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    parallel = args.parallel == "true"
    kernels = {name: sd.loads(src, name=name).compile("numba", parallel=parallel) for name, src in PROGRAMS.items()}
    pagerank = sd.loads((HERE.parent / "examples" / "pagerank.sdsl").read_text(), name="pagerank").compile(
        "numba", parallel=parallel)
    rows = []
    for mname, A in matrices(args.quick, args.data).items():
        A = sp.csr_array(A, dtype=np.float32)
        n = A.shape[0]
        rng = np.random.default_rng(0)
        x = rng.random(n, dtype=np.float32)
        X = rng.random((n, 64), dtype=np.float32)
        At = A.T.tocsr()
        At_t = torch.sparse_csr_tensor(torch.from_numpy(At.indptr.astype(np.int64)),
                                       torch.from_numpy(At.indices.astype(np.int64)), torch.from_numpy(At.data),
                                       size=At.shape)
        x_t, X_t = torch.from_numpy(x), torch.from_numpy(X)

        cases = {
            "ATx": (lambda: kernels["ATx"](A=A, x=x)["y"], {"scipy": lambda: A.T @ x,
                                                            "torch": lambda: torch.sparse.mm(At_t, x_t[:, None])},
                    A.T @ x),
            "colsum": (lambda: kernels["colsum"](X=X)["h"], {"numpy": lambda: X.sum(axis=0),
                                                             "torch": lambda: X_t.sum(dim=0)},
                       X.sum(axis=0, dtype=np.float64)),
            "indegree": (lambda: kernels["indegree"](A=A)["d"],
                         {"numpy": lambda: np.bincount(A.indices, minlength=n)}, np.bincount(A.indices, minlength=n)),
        }
        if not mname.startswith("rmat"):
            import networkx as nx

            # the unweighted graph (bcsstk13's weights are signed); networkx stops when the l1 change is below
            # N * tol: tol = 1e-12 / N is the example's own rule (l1 change below 1e-12)
            P = sp.csr_array((np.ones(A.nnz), A.indices, A.indptr), shape=A.shape)
            G = nx.from_scipy_sparse_array(P, create_using=nx.DiGraph)
            ranks = nx.pagerank(G, alpha=0.85, tol=1e-12 / n, max_iter=400)
            cases["pagerank"] = (lambda: pagerank(A=P)["r"],
                                 {"networkx": lambda: nx.pagerank(G, alpha=0.85, tol=1e-12 / n, max_iter=400)},
                                 np.array([ranks[v] for v in range(n)]))
        for kernel, (ours, peers, want) in cases.items():
            got = np.asarray(ours())
            if want is not None:
                np.testing.assert_allclose(got, np.asarray(want), rtol=2e-4, atol=1e-6)
            t_ours = median_ms(ours, args.repeats, args.warmup)
            row = [kernel, mname, n, A.nnz, t_ours]
            for peer, fn in peers.items():
                t = median_ms(fn, args.repeats, args.warmup)
                row.append(f"{peer} {t:.2f} ms ({t / t_ours:.2f}x)")
            rows.append(row)
            print(f"{kernel:9s} {mname:13s} {n:7d} {A.nnz:8d}  sparsedsl {t_ours:8.2f} ms   " + "   ".join(row[5:]),
                  flush=True)
    print(f"\n{args.threads} threads for numba and torch, scipy and numpy 1 thread; median of {args.repeats} "
          f"after {args.warmup} warm-up calls; parallel={parallel}; x = peer time / sparsedsl time")


if __name__ == "__main__":
    main()
