"""Block-format inputs: SpMM over bsr, blockdiag (Monarch's factor) and 2:4 matrices against the peers.

    python benchmarks/blocks.py                  # n = 4096, 64 features, f32, 2 threads
    python benchmarks/blocks.py --n 8192 --repeats 9

For each format, ``Y = A·X`` (``Y[i, f] = sum[k] A[i, k] * X[k, f]``) is timed for sparsedsl's numba target
reading the blocks (block iteration, the default), sparsedsl reading compressed rows made from the blocks at
every call (``compile(..., blocks=False)``), and the libraries a user would call instead, in one process: one
warm-up call, then the median of ``--repeats`` calls, interleaved by round so that a slow period of the machine
hits every library alike. Every result is checked against scipy (float64) before anything is timed. Threads:
sparsedsl 2 (Numba), torch 2, scipy 1 (its kernels are serial).

* ``bsr``: 32×32 blocks, 5% of the block grid stored (stored zeros inside blocks are entries); peers:
  scipy ``bsr_array @ X``, torch ``sparse_bsr_tensor @ X`` and torch CSR ``sparse.mm`` of the same entries.
* ``blockdiag``: n/64 diagonal blocks of 64×64 (a Monarch factor); peers: torch ``bmm`` over the blocks (the
  dense batched product a Monarch layer runs), scipy CSR of the same entries.
* ``nm``: 2:4 (two stored entries in every four columns, as sparse tensor cores take); peers: scipy CSR and
  torch CSR of the same entries (neither has a CPU 2:4 kernel).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import scipy.sparse as sp

SPMM = """\
input  A: {fmt}<f32>[M, K]
input  X: dense<f32>[K, F]
output Y: dense<f32>[M, F]
Y[i, f] = sum[k] A[i, k] * X[k, f]
"""


def make_inputs(fmt: str, n: int, features: int, rng):
    """(sparsedsl input, scipy CSR of the same entries, torch peers as name -> callable factory, format text)."""
    from sparsedsl.runtime.tensors import BSR, NM, BlockDiag

    if fmt == "bsr":
        keep = sp.random_array((n // 32, n // 32), density=0.05, format="csr", rng=rng)
        blocks = rng.standard_normal((keep.nnz, 32, 32)).astype(np.float32)
        A = BSR(keep.indptr, keep.indices, blocks, (n, n))
        return A, sp.csr_array(sp.bsr_array((blocks, keep.indices, keep.indptr), shape=(n, n))), "bsr(32, 32)"
    if fmt == "blockdiag":
        A = BlockDiag(rng.standard_normal((n // 64, 64, 64)).astype(np.float32))
        return A, sp.csr_array(sp.block_diag(list(A.blocks), format="csr")), f"blockdiag({n // 64})"
    dense = rng.standard_normal((n, n)).astype(np.float32)
    groups = dense.reshape(n, n // 4, 4)
    drop = np.argsort(rng.random((n, n // 4, 4)), axis=2)[:, :, :2]  # two of every four columns are zero
    np.put_along_axis(groups, drop, 0.0, axis=2)
    A = NM.from_dense(dense, 2, 4)
    return A, sp.csr_array(dense), "nm(2, 4)"


def peers(fmt: str, A, csr, X):
    import torch

    Xt = torch.from_numpy(X)
    crow, col = (torch.from_numpy(a.astype(np.int64)) for a in (csr.indptr, csr.indices))
    At = torch.sparse_csr_tensor(crow, col, torch.from_numpy(csr.data), size=csr.shape)
    out = {"torch csr": lambda: torch.sparse.mm(At, Xt)}
    if fmt == "bsr":
        bsr = sp.bsr_array(csr, blocksize=(32, 32))
        bsr.sort_indices()
        Ab = torch.sparse_bsr_tensor(torch.from_numpy(bsr.indptr.astype(np.int64)),
                                     torch.from_numpy(bsr.indices.astype(np.int64)), torch.from_numpy(bsr.data),
                                     size=bsr.shape)
        out["torch bsr"] = lambda: Ab @ Xt
        out["scipy bsr"] = lambda: bsr @ X
    elif fmt == "blockdiag":
        blocks = torch.from_numpy(A.blocks)
        nb, bm, bn = A.blocks.shape
        out["torch bmm"] = lambda: torch.bmm(blocks, Xt.view(nb, bn, -1)).view(nb * bm, -1)
    out["scipy csr"] = lambda: csr @ X
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--formats", default="bsr,blockdiag,nm")
    args = ap.parse_args()
    # torch's OpenMP threads spin after each call and steal the cores from the next library's threads (see
    # cpu.py): idle threads sleep at once instead; set before the runtimes load, a user's setting is kept
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import numba
    import torch

    import sparsedsl as sd

    numba.set_num_threads(2)
    torch.set_num_threads(2)
    rng = np.random.default_rng(2026)
    rows = []
    for fmt in args.formats.split(","):
        A, csr, text = make_inputs(fmt, args.n, args.features, rng)
        X = rng.standard_normal((args.n, args.features)).astype(np.float32)
        prog = sd.loads(SPMM.format(fmt=text), name=f"blocks_{fmt}")
        calls = {"sparsedsl blocks": (lambda k: lambda: k(A=A, X=X)["Y"])(prog.compile("numba")),
                 "sparsedsl rows": (lambda k: lambda: k(A=A, X=X)["Y"])(prog.compile("numba", blocks=False))}
        calls.update(peers(fmt, A, csr, X))
        want = csr.astype(np.float64) @ X.astype(np.float64)
        for name, f in calls.items():
            got = np.asarray(f(), dtype=np.float64)
            err = np.abs(got - want).max() / max(1.0, np.abs(want).max())
            if not err < 1e-4:
                raise SystemExit(f"{fmt}/{name}: result differs from scipy's (relative error {err:.2e})")
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, f in calls.items():
                t = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t)
        best_peer = min((statistics.median(v), k) for k, v in times.items() if not k.startswith("sparsedsl"))
        ours = statistics.median(times["sparsedsl blocks"])
        for name, v in times.items():
            rows.append((fmt, text, csr.nnz, name, statistics.median(v) * 1e3, statistics.median(v) / ours))
        rows.append((fmt, text, csr.nnz, f"best peer: {best_peer[1]}", best_peer[0] * 1e3, best_peer[0] / ours))
    print(f"SpMM Y = A·X, n = {args.n}, {args.features} features, f32; median of {args.repeats}, after a warm-up; "
          "'x' = time / sparsedsl blocks (above 1: sparsedsl reading the blocks is faster); "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    print(f"{'format':10s} {'declared':14s} {'entries':>9s}  {'who':30s} {'ms':>8s} {'x':>6s}")
    for fmt, text, nnz, name, ms, ratio in rows:
        print(f"{fmt:10s} {text:14s} {nnz:9d}  {name:30s} {ms:8.3f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
