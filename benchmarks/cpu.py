"""CPU benchmark: sparsedsl's numba target against scipy, python-graphblas and torch, in one run.

    python benchmarks/cpu.py                      # every kernel on every matrix (about 10 minutes, 2 cores)
    python benchmarks/cpu.py --quick              # the sample matrices and R-MAT 2^16 only, 3 repeats
    python benchmarks/cpu.py --only spgemm --matrix ego-Facebook --repeats 7
    python benchmarks/cpu.py --json results.json  # also the raw times, for scripts

Method (design.md § 4): every library gets its inputs in its own native form, built before the clock starts;
each timed callable is called ``--warmup`` times (sparsedsl's first call includes Numba's JIT), then
``--repeats`` times, or more for a short call: as many as take about ``--min-seconds`` by the warm-up call's
time, at most ``MAX_REPEATS`` (a median of 5 sub-millisecond calls swung by 30% between runs), and the median
is reported. The result of the last timed call is checked against a scipy
reference computed in float64 (and triangle counts against the known answers of the sample data) before any
time is reported; a wrong result is reported as WRONG and makes the run exit with status 1. A library that
cannot run a kernel is reported as n/a with the reason, never with a number.

sparsedsl is timed as a user calls it (``kernel(A=..., ...)`` on scipy/numpy inputs: input validation,
binding, the compiled code and conversion of the outputs); the ``sdsl run`` column is the compiled code alone
(``Executable.run`` on inputs bound beforehand), to show the fixed overhead. Speedups are peer time divided
by sparsedsl's (user call) time: above 1 means sparsedsl is faster.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy
import scipy.io
import scipy.sparse as sp

import rmat  # benchmarks/ is sys.path[0] when this file runs as a script

KERNELS = ("spgemm", "spmm", "sddmm", "triangles", "attention")
PEERS = ("scipy", "graphblas", "torch")
FEATURES = 64          # columns of X in SpMM, of the factors in SDDMM and attention
ATTENTION_SCALE = 0.125
RMAT_SCALES = (16, 18)
RMAT_AVG_DEGREE = 16
# Graph500's skew (0.57, 0.19, 0.19) makes A·A of the 2^16 graph produce 183 M entries (50 s per scipy call,
# 2.2 GB per result) and that of the 2^18 graph not fit in memory; this milder skew is still heavy-tailed
# (the heaviest row is 16-26x the mean) and keeps the whole run near ten minutes. --rmat-probabilities changes it.
RMAT_PROBABILITIES = (0.45, 0.15, 0.15)
# `sdsl run` (the compiled code without binding) is timed only for calls shorter than this: it exists to show
# the fixed per-call overhead, which longer calls hide, and timing it doubles sparsedsl's share of the run.
OVERHEAD_VISIBLE_BELOW = 1.0
# SpGEMM's work grows faster than its input: A·A of R-MAT 2^18 (271 MFLOP, 133 M output entries) takes 3-10 s
# per call per library and 5 GB. The issue asks for every kernel on 2^18, so no case is left out by default;
# `--max-spgemm-mflop 100` leaves it out for a shorter run.
MAX_SPGEMM_MFLOP = float("inf")
# Short calls are timed more often than --repeats (Protocol.repeats_for), up to this many times.
MAX_REPEATS = 51
MIN_SECONDS = 0.1
SEEDS = {"rmat": 2026, "features": 7, "er": 11}
KNOWN_TRIANGLES = {"ego-Facebook": 1_612_010, "ca-HepTh": 28_339, "bcsstk13": 342_300}
# Normwise tolerance of a float result against the float64 reference, by the kernel's working precision:
# max |x - ref| <= RTOL * max |ref|.
RTOL = {"f32": 1e-4, "f64": 1e-10}
# Issue 3, "Figures it must reach": (kernel, peer) -> minimum geometric-mean speedup.
# Attention's figure is against "the best unfused composition of torch scatter/gather ops": the compositions
# built from indexing, gather and scatter alone (the message passing of PyG and DGL's examples). The "torch"
# row stands for the fastest composition of any torch ops (sampled_addmm and sparse.mm, sparse kernels that
# are not gather/scatter ops): a stricter reading, shown without a target.
TARGETS = {("spgemm", "graphblas"): 1.5, ("spgemm", "scipy"): 1.5, ("triangles", "graphblas"): 2.0,
           ("spmm", "torch"): 1.2, ("sddmm", "torch"): 1.0, ("attention", "torch scatter/gather"): 3.0}
# (kernel, peer) -> {summary row: the variants (Case.variants) it takes the best of}
VARIANT_ROWS = {("attention", "torch"): {"torch scatter/gather": ("gather→scatter softmax→index_add",
                                                                   "gather→segment softmax→segment_reduce")}}

PROGRAMS = {
    "spgemm": """
input  A: csr<f64>[N, N]
output C: csr<f64>[N, N]
C[i, j] = sum[k] A[i, k] * A[k, j]
""",
    "spmm": """
input  A: csr<f32>[N, N]
input  X: dense<f32>[N, F]
output Y: dense<f32>[N, F]
Y[i, f] = sum[j] A[i, j] * X[j, f]
""",
    "sddmm": """
input  G: csr<bool>[N, N]
input  Q: dense<f32>[N, D]
input  K: dense<f32>[N, D]
output S: csr<f32>[N, N]
S[i, j] = sum[d] Q[i, d] * K[j, d] where G[i, j]
""",
    "triangles": """
input  A: csr<bool>[N, N]
output triangles: i64
L[i, j] = i64(A[i, j]) where j < i
triangles = sum[i, j] (sum[k] L[i, k] * L[j, k] where L[i, j])
""",
    "attention": f"""
input  G: csr<bool>[N, N]
input  Q: dense<f32>[N, D]
input  K: dense<f32>[N, D]
input  V: dense<f32>[N, D]
input  scale: f32 = {ATTENTION_SCALE}
output O: dense<f32>[N, D]
S[i, j] = scale * sum[d] Q[i, d] * K[j, d] where G[i, j]
P[i, j] = softmax[j] S[i, j]
O[i, d] = sum[j] P[i, j] * V[j, d]
""",
}

FLOP_NOTES = {
    "spgemm": "2 per multiply-add: 2 * sum over A's nonzeros (i,k) of nnz(A[k,:])",
    "spmm": "2 * nnz(A) * 64",
    "sddmm": "2 * nnz(G) * 64",
    "triangles": "2 * the multiply-adds left under the mask (= 2 * triangles); the timed work also "
                 "builds L from the symmetric adjacency",
    "attention": "4 * nnz(G) * 64 (SDDMM + SpMM; the softmax's exp/max/sum not counted)",
}


# ---------------------------------------------------------------- results

@dataclasses.dataclass
class Timing:
    """One library on one (kernel, matrix): the median, or why there is none."""
    library: str
    status: str                      # ok | n/a | WRONG | failed | crashed | skipped
    seconds: float | None = None     # median of the timed repeats
    times: tuple[float, ...] = ()
    note: str = ""
    # the peer's call as it returns, before finishing its result the way sparsedsl's is (Case.as_returned)
    as_returned: float | None = None
    # a peer timed in several compositions (Case.variants): each correct one's median
    variants: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Row:
    kernel: str
    matrix: str
    n: int
    nnz: int
    flops: int
    timings: dict[str, Timing]
    reference_note: str = ""

    def speedup(self, peer: str) -> float | None:
        mine, theirs = self.timings.get("sparsedsl"), self.timings.get(peer)
        if mine is None or theirs is None or mine.status != "ok" or theirs.status != "ok":
            return None
        return theirs.seconds / mine.seconds


@dataclasses.dataclass
class Report:
    rows: list[Row]
    environment: dict[str, Any]
    options: dict[str, Any]
    incidents: list[str] = dataclasses.field(default_factory=list)

    @property
    def failures(self) -> list[tuple[str, str, Timing]]:
        return [(r.kernel, r.matrix, t) for r in self.rows for t in r.timings.values()
                if t.status in ("WRONG", "failed", "crashed")]


class ResultMismatch(Exception):
    """A library's result differs from the reference (the message says where and by how much)."""


# ---------------------------------------------------------------- matrices

@dataclasses.dataclass(frozen=True)
class MatrixSpec:
    name: str
    origin: str
    build: Callable[[], sp.csr_array]


def _canonical(matrix) -> sp.csr_array:
    csr = sp.csr_array(matrix)
    csr.sum_duplicates()
    return csr


def _default_data_dir() -> Path:
    return Path(str(resources.files("sparsedsl.data")))


def matrix_specs(data_dir: Path, rmat_scales, rmat_probabilities, er_sizes) -> list[MatrixSpec]:
    """Every matrix the run may use, built lazily (R-MAT 2^18 takes several seconds to generate)."""
    specs = []
    for path in sorted(Path(data_dir).glob("*.mtx.gz")):
        name = path.name[: -len(".mtx.gz")]
        specs.append(MatrixSpec(name, f"{path.name}",
                                lambda p=path: _canonical(scipy.io.mmread(p)).astype(np.float64)))
    for scale in rmat_scales:
        specs.append(MatrixSpec(
            f"rmat-{scale}", f"R-MAT 2^{scale}, avg degree {RMAT_AVG_DEGREE}, abc={rmat_probabilities}, "
                             f"seed {SEEDS['rmat'] + scale}",
            lambda s=scale: rmat.rmat(s, RMAT_AVG_DEGREE, SEEDS["rmat"] + s, rmat_probabilities)))
    for size in er_sizes:
        specs.append(MatrixSpec(f"er-{size}", f"Erdős–Rényi {size} rows, avg degree 8, seed {SEEDS['er']}",
                                lambda s=size: rmat.erdos_renyi(s, 8, SEEDS["er"])))
    return specs


# ---------------------------------------------------------------- checking

def _as_scipy_csr(result) -> sp.csr_array:
    import torch
    import graphblas as gb

    if isinstance(result, torch.Tensor):
        if result.layout != torch.sparse_csr:
            result = result.to_sparse_csr()
        return _canonical(sp.csr_array((result.values().numpy(), result.col_indices().numpy(),
                                        result.crow_indices().numpy()), shape=tuple(result.shape)))
    if isinstance(result, gb.Matrix):
        indptr, indices, values = result.to_csr()
        return _canonical(sp.csr_array((values, indices, indptr), shape=result.shape))
    return _canonical(result)


def _as_numpy(result) -> np.ndarray:
    import torch
    import graphblas as gb

    if isinstance(result, torch.Tensor):
        return result.numpy()
    if isinstance(result, gb.Matrix):
        return result.to_dense(fill_value=0)
    return np.asarray(result)


def check_dense(result, reference: np.ndarray, rtol: float) -> None:
    got = _as_numpy(result)
    if got.shape != reference.shape:
        raise ResultMismatch(f"shape {got.shape}, expected {reference.shape}")
    scale = max(float(np.abs(reference).max(initial=0.0)), 1e-30)
    err = float(np.abs(got.astype(np.float64) - reference).max(initial=0.0))
    if not err <= rtol * scale:  # written so that NaN fails
        raise ResultMismatch(f"max |error| {err:.3g} > {rtol:g} * max |reference| {scale:.3g}")


def check_sparse(result, reference: sp.csr_array, rtol: float) -> None:
    """The reference's pattern must be stored (extra stored entries are allowed only where they are ~0,
    as a computed zero that scipy drops) and the values must agree normwise."""
    got = _as_scipy_csr(result)
    if got.shape != reference.shape:
        raise ResultMismatch(f"shape {got.shape}, expected {reference.shape}")
    ref_pattern = sp.csr_array((np.ones(reference.nnz, bool), reference.indices, reference.indptr),
                               shape=reference.shape)
    got_pattern = sp.csr_array((np.ones(got.nnz, bool), got.indices, got.indptr), shape=got.shape)
    kept = ref_pattern.multiply(got_pattern).nnz
    if kept != reference.nnz:
        raise ResultMismatch(f"{reference.nnz - kept} of the reference's {reference.nnz} entries are missing")
    scale = max(float(np.abs(reference.data).max(initial=0.0)), 1e-30)
    diff = got.astype(np.float64) - reference
    err = float(np.abs(diff.data).max(initial=0.0))
    if not err <= rtol * scale:
        raise ResultMismatch(f"max |error| {err:.3g} > {rtol:g} * max |reference| {scale:.3g}")


def check_count(result, reference: int) -> None:
    got = int(_as_numpy(result).item() if not isinstance(result, int) else result)
    if got != reference:
        raise ResultMismatch(f"count {got}, expected {reference}")


# ---------------------------------------------------------------- the cases

@dataclasses.dataclass
class Case:
    """One kernel on one matrix: the inputs of each library, the reference and how to compare to it."""
    flops: int
    sdsl_inputs: dict[str, Any]
    peers: dict[str, Callable[[], Any] | str]   # a callable to time, or the reason it is n/a
    check: Callable[[Any], None]
    reference_note: str = ""
    variants: dict[str, dict[str, Callable[[], Any]]] = dataclasses.field(default_factory=dict)
    # seconds of one call already known (the scipy reference is scipy's own computation): a peer over
    # --max-call-seconds is skipped without spending a warm-up call on it
    known_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    # a peer whose own call returns less than sparsedsl does (SpGEMM rows left unsorted: scipy's and torch's
    # come out of their accumulators unsorted, SuiteSparse leaves them "jumbled" until the matrix is waited
    # on), timed also as it returns; the figures compare the finished call (``peers``), the table notes this
    as_returned: dict[str, Callable[[], Any]] = dataclasses.field(default_factory=dict)


def _row_of_entry(indptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))


def _torch_csr(matrix: sp.csr_array, dtype):
    import torch

    return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr.astype(np.int64)),
                                   torch.from_numpy(matrix.indices.astype(np.int64)),
                                   torch.from_numpy(np.ascontiguousarray(matrix.data, dtype=dtype)),
                                   size=matrix.shape)


def _gb_matrix(matrix: sp.csr_array, dtype):
    import graphblas as gb

    return gb.Matrix.from_csr(matrix.indptr, matrix.indices, np.ascontiguousarray(matrix.data, dtype=dtype),
                              nrows=matrix.shape[0], ncols=matrix.shape[1])


def _features(n: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(SEEDS["features"])
    return [rng.standard_normal((n, FEATURES)).astype(np.float32) for _ in range(count)]


def _sampled_dots(pattern: sp.csr_array, Q: np.ndarray, K: np.ndarray, dtype, chunk: int = 1 << 18):
    """Q[i]·K[j] for every stored (i, j), in chunks so that the gathered rows stay small."""
    rows = _row_of_entry(pattern.indptr)
    cols = pattern.indices
    out = np.empty(rows.size, dtype=dtype)
    Qc, Kc = Q.astype(dtype, copy=False), K.astype(dtype, copy=False)
    for start in range(0, rows.size, chunk):
        stop = min(start + chunk, rows.size)
        out[start:stop] = np.einsum("ij,ij->i", Qc[rows[start:stop]], Kc[cols[start:stop]])
    return out


def _segment_softmax_numpy(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Softmax of each CSR row's stored values (max-subtracted); empty rows have nothing to normalize."""
    nonempty = np.flatnonzero(np.diff(indptr))
    if values.size == 0:
        return values.copy()
    starts = indptr[nonempty]
    counts = np.diff(indptr)[nonempty]
    row_max = np.repeat(np.maximum.reduceat(values, starts), counts)
    e = np.exp(values - row_max)
    return e / np.repeat(np.add.reduceat(e, starts), counts)


def _spgemm_flops(A: sp.csr_array, B: sp.csr_array) -> int:
    return 2 * int(np.diff(B.indptr)[A.indices].sum())


def case_spgemm(A: sp.csr_array) -> Case:
    import graphblas as gb
    import torch

    A = A.astype(np.float64)
    start = time.perf_counter()
    reference = _canonical(A @ A)
    scipy_seconds = time.perf_counter() - start
    A_gb = _gb_matrix(A, np.float64)
    A_t = _torch_csr(A, np.float64)

    # sparsedsl returns sorted rows (spec: csr coordinates are sorted); the peers finish theirs so too
    def scipy_sorted():
        C = A @ A
        C.sort_indices()  # in place, on the fresh product
        return C

    def graphblas_sorted():
        C = A_gb.mxm(A_gb, gb.semiring.plus_times).new()
        C.wait()  # SuiteSparse sorts a "jumbled" result's rows here (burble: "GrB_Matrix_wait ... jumbled")
        return C

    return Case(
        flops=_spgemm_flops(A, A),
        sdsl_inputs={"A": A},
        peers={"scipy": scipy_sorted, "graphblas": graphblas_sorted,
               "torch": lambda: torch.sparse.mm(A_t, A_t)},
        check=lambda out: check_sparse(out, reference, RTOL["f64"]),
        reference_note=f"scipy f64, {reference.nnz} entries",
        known_seconds={"scipy": scipy_seconds},
        as_returned={"scipy": lambda: A @ A,
                     "graphblas": lambda: A_gb.mxm(A_gb, gb.semiring.plus_times).new()})


def case_spmm(A: sp.csr_array) -> Case:
    import graphblas as gb
    import torch

    (X,) = _features(A.shape[0], 1)
    A32 = A.astype(np.float32)
    reference = A.astype(np.float64) @ X.astype(np.float64)
    A_gb, X_gb = _gb_matrix(A32, np.float32), gb.Matrix.from_dense(X)
    A_t, X_t = _torch_csr(A32, np.float32), torch.from_numpy(X)
    return Case(
        flops=2 * A.nnz * FEATURES,
        sdsl_inputs={"A": A32, "X": X},
        peers={"scipy": lambda: A32 @ X,
               "graphblas": lambda: A_gb.mxm(X_gb, gb.semiring.plus_times).new(),
               "torch": lambda: torch.sparse.mm(A_t, X_t)},
        check=lambda out: check_dense(out, reference, RTOL["f32"]),
        reference_note="scipy f64")


def _pattern(A: sp.csr_array) -> sp.csr_array:
    return sp.csr_array((np.ones(A.nnz, dtype=bool), A.indices, A.indptr), shape=A.shape)


def case_sddmm(A: sp.csr_array) -> Case:
    import graphblas as gb
    import torch

    G = _pattern(A)
    Q, K = _features(A.shape[0], 2)
    reference = sp.csr_array((_sampled_dots(G, Q, K, np.float64), G.indices, G.indptr), shape=G.shape)
    G_gb = _gb_matrix(G, bool)
    Q_gb, K_gb = gb.Matrix.from_dense(Q), gb.Matrix.from_dense(K)
    # sampled_addmm reads its input's values (times beta = 0): a float pattern of ones
    G_t = _torch_csr(G, np.float32)
    Q_t, K_t = torch.from_numpy(Q), torch.from_numpy(K)
    return Case(
        flops=2 * G.nnz * FEATURES,
        sdsl_inputs={"G": G, "Q": Q, "K": K},
        peers={"scipy": lambda: sp.csr_array((_sampled_dots(G, Q, K, np.float32), G.indices, G.indptr),
                                             shape=G.shape),
               "graphblas": lambda: Q_gb.mxm(K_gb.T, gb.semiring.plus_times).new(mask=G_gb.S),
               "torch": lambda: torch.sparse.sampled_addmm(G_t, Q_t, K_t.t(), beta=0.0, alpha=1.0)},
        check=lambda out: check_sparse(out, reference, RTOL["f32"]),
        reference_note="numpy f64 dots on the pattern")


def case_triangles(A: sp.csr_array, known: int | None) -> Case:
    import graphblas as gb

    S = rmat.symmetric_pattern(A)

    def scipy_count() -> int:
        L = sp.tril(S, -1, format="csr").astype(np.int64)
        return int((L @ L.T).multiply(L).sum())

    start = time.perf_counter()
    reference = scipy_count()
    scipy_seconds = time.perf_counter() - start
    if known is not None and reference != known:
        raise RuntimeError(f"scipy counts {reference} triangles, the data's README says {known}")
    S_gb = _gb_matrix(S, bool)

    def graphblas_count() -> int:
        L = gb.select.tril(S_gb, -1).new()
        C = L.mxm(L.T, gb.semiring.plus_pair[gb.dtypes.INT64]).new(mask=L.S)
        return C.reduce_scalar(gb.monoid.plus).new().value

    note = "scipy (L·Lᵀ)∘L" + (f" = README's {known}" if known is not None else "")
    return Case(
        flops=2 * reference,
        sdsl_inputs={"A": S},
        peers={"scipy": scipy_count, "graphblas": graphblas_count,
               "torch": "no masked sparse×sparse product in torch.sparse"},
        check=lambda out: check_count(out, reference),
        reference_note=note,
        known_seconds={"scipy": scipy_seconds})


def case_attention(A: sp.csr_array) -> Case:
    import graphblas as gb
    import torch

    G = _pattern(A)
    n = G.shape[0]
    Q, K, V = _features(n, 3)
    scale = ATTENTION_SCALE
    P64 = _segment_softmax_numpy(scale * _sampled_dots(G, Q, K, np.float64), G.indptr)
    reference = sp.csr_array((P64, G.indices, G.indptr), shape=G.shape) @ V.astype(np.float64)

    def scipy_attention():
        p = _segment_softmax_numpy(np.float32(scale) * _sampled_dots(G, Q, K, np.float32), G.indptr)
        return sp.csr_array((p, G.indices, G.indptr), shape=G.shape) @ V

    G_gb = _gb_matrix(G, bool)
    Q_gb, K_gb, V_gb = (gb.Matrix.from_dense(x) for x in (Q, K, V))

    def graphblas_attention():
        S = Q_gb.mxm(K_gb.T, gb.semiring.plus_times).new(mask=G_gb.S)
        S = S.apply(gb.binary.times, right=np.float32(scale)).new()
        row_max = S.reduce_rowwise(gb.monoid.max).new()
        # a diagonal matrix times S under (any, rminus) subtracts row i's max from row i's entries
        E = row_max.diag().mxm(S, gb.semiring.any_rminus).new()
        E = E.apply(gb.unary.exp).new()
        row_sum = E.reduce_rowwise(gb.monoid.plus).new()
        P = row_sum.diag().mxm(E, gb.semiring.any_rdiv).new()
        return P.mxm(V_gb, gb.semiring.plus_times).new()

    G_t = _torch_csr(G, np.float32)
    crow, col = G_t.crow_indices(), G_t.col_indices()
    rows = torch.from_numpy(_row_of_entry(G.indptr))
    Q_t, K_t, V_t = (torch.from_numpy(x) for x in (Q, K, V))

    def softmax_by_row(values):
        row_max = torch.full((n,), -torch.inf, dtype=values.dtype).scatter_reduce_(
            0, rows, values, reduce="amax", include_self=True)
        e = torch.exp(values - row_max[rows])
        row_sum = torch.zeros(n, dtype=values.dtype).index_add_(0, rows, e)
        return e / row_sum[rows]

    def torch_sampled_csr():
        S = torch.sparse.sampled_addmm(G_t, Q_t, K_t.t(), beta=0.0, alpha=scale)
        P = torch.sparse_csr_tensor(crow, col, softmax_by_row(S.values()), size=(n, n))
        return torch.sparse.mm(P, V_t)

    def torch_gather_scatter():
        scores = (Q_t[rows] * K_t[col]).sum(dim=1) * scale
        p = softmax_by_row(scores)
        return torch.zeros(n, FEATURES, dtype=torch.float32).index_add_(0, rows, V_t[col] * p[:, None])

    def torch_gather_segment():
        # the same gather, with the rows' reductions over the sorted entries' segments (torch.segment_reduce
        # on the row pointers) instead of scatters by row index
        scores = (Q_t[rows] * K_t[col]).sum(dim=1) * scale
        e = torch.exp(scores - torch.segment_reduce(scores, "max", offsets=crow)[rows])
        p = e / torch.segment_reduce(e, "sum", offsets=crow)[rows]
        return torch.segment_reduce(V_t[col] * p[:, None], "sum", offsets=crow, axis=0)

    def torch_sparse_softmax():
        S = torch.sparse.sampled_addmm(G_t, Q_t, K_t.t(), beta=0.0, alpha=scale)
        P = torch.sparse.softmax(S.to_sparse_coo(), dim=1)
        return torch.sparse.mm(P, V_t)

    return Case(
        flops=4 * G.nnz * FEATURES,
        sdsl_inputs={"G": G, "Q": Q, "K": K, "V": V},
        peers={"scipy": scipy_attention, "graphblas": graphblas_attention},
        variants={"torch": {"sampled_addmm→scatter softmax→sparse.mm": torch_sampled_csr,
                            "gather→scatter softmax→index_add": torch_gather_scatter,
                            "gather→segment softmax→segment_reduce": torch_gather_segment,
                            "sampled_addmm→COO sparse.softmax→sparse.mm": torch_sparse_softmax}},
        check=lambda out: check_dense(out, reference, RTOL["f32"]),
        reference_note="numpy/scipy f64 composition")


def build_case(kernel: str, matrix_name: str, A: sp.csr_array) -> Case:
    if kernel == "spgemm":
        return case_spgemm(A)
    if kernel == "spmm":
        return case_spmm(A)
    if kernel == "sddmm":
        return case_sddmm(A)
    if kernel == "triangles":
        return case_triangles(A, KNOWN_TRIANGLES.get(matrix_name))
    if kernel == "attention":
        return case_attention(A)
    raise ValueError(f"unknown kernel {kernel!r} (kernels: {', '.join(KERNELS)})")


# ---------------------------------------------------------------- timing

@dataclasses.dataclass(frozen=True)
class Protocol:
    warmup: int
    repeats: int
    max_call_seconds: float
    max_spgemm_mflop: float = MAX_SPGEMM_MFLOP
    min_seconds: float = 0.0  # a short call is repeated until the timed calls take about this long

    def repeats_for(self, warm: float | None) -> int:
        """Timed calls for a callable whose warm-up call took ``warm`` seconds (None: no warm-up)."""
        if warm is None or warm <= 0 or self.min_seconds <= 0:
            return self.repeats
        return max(self.repeats, min(MAX_REPEATS, math.ceil(self.min_seconds / warm)))


def measure(library: str, fn: Callable[[], Any], check: Callable[[Any], None], protocol: Protocol) -> Timing:
    """Warm up, time ``protocol.repeats_for`` calls, check the last call's result; a failure is reported,
    not raised."""
    gc.collect()
    warm = None
    try:
        for _ in range(protocol.warmup):
            start = time.perf_counter()
            fn()
            warm = time.perf_counter() - start
    except Exception as exc:  # a peer or sparsedsl raising is a result of the benchmark, not a crash of it
        return Timing(library, "failed", note=f"{type(exc).__name__}: {_first_line(exc)}")
    if protocol.warmup and warm > protocol.max_call_seconds:
        # a first call can carry one-time costs (a cache being loaded, a code path compiled); one more
        # call decides
        try:
            start = time.perf_counter()
            fn()
            warm = time.perf_counter() - start
        except Exception as exc:
            return Timing(library, "failed", note=f"{type(exc).__name__}: {_first_line(exc)}")
    if protocol.warmup and warm > protocol.max_call_seconds:
        return Timing(library, "skipped", note=f"warm-up call took {warm:.1f} s > --max-call-seconds "
                                               f"{protocol.max_call_seconds:g}")
    times = []
    result = None
    try:
        for _ in range(protocol.repeats_for(warm)):
            result = None  # let the previous result go before the next call allocates its own
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
    except Exception as exc:
        return Timing(library, "failed", note=f"{type(exc).__name__}: {_first_line(exc)}")
    try:
        check(result)
    except ResultMismatch as exc:
        return Timing(library, "WRONG", note=str(exc))
    return Timing(library, "ok", statistics.median(times), tuple(times))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def sparsedsl_kernel(kernel: str) -> tuple[Any, float]:
    """The compiled numba kernel (or the reason there is none, a string) and the seconds that compiling it
    and a first call on a 64-row graph took: Numba compiles at the first call, and that call should not be
    any real matrix's warm-up (nor count against --max-call-seconds)."""
    start = time.perf_counter()
    try:
        import sparsedsl as sd

        compiled = sd.loads(PROGRAMS[kernel], name=f"bench_{kernel}").compile(target="numba")
        case = build_case(kernel, "jit", rmat.erdos_renyi(64, 4, SEEDS["er"]))
        case.check(compiled(**case.sdsl_inputs)[compiled.ir.outputs[0].name])
    except ResultMismatch as exc:
        return f"wrong result on the 64-row warm-up graph: {exc}", time.perf_counter() - start
    except Exception as exc:
        return f"not available: {type(exc).__name__}: {_first_line(exc)}", time.perf_counter() - start
    return compiled, time.perf_counter() - start


def run_case(kernel: str, matrix: str, A: sp.csr_array, compiled, libraries, protocol: Protocol) -> Row:
    if kernel == "spgemm" and _spgemm_flops(A, A) > protocol.max_spgemm_mflop * 1e6:
        note = (f"{_spgemm_flops(A, A) / 1e6:.0f} MFLOP > --max-spgemm-mflop {protocol.max_spgemm_mflop:g}")
        return Row(kernel, matrix, A.shape[0], A.nnz, _spgemm_flops(A, A),
                   {lib: Timing(lib, "skipped", note=note) for lib in ("sparsedsl", "sdsl run", *PEERS)
                    if lib in libraries or (lib == "sdsl run" and "sparsedsl" in libraries)})
    case = build_case(kernel, matrix, A)
    timings: dict[str, Timing] = {}
    if "sparsedsl" in libraries:
        if isinstance(compiled, str):
            status = "WRONG" if compiled.startswith("wrong") else "n/a"
            timings["sparsedsl"] = Timing("sparsedsl", status, note=compiled)
            timings["sdsl run"] = Timing("sdsl run", status, note=compiled)
        else:
            out_name = compiled.ir.outputs[0].name
            timings["sparsedsl"] = measure("sparsedsl", lambda: compiled(**case.sdsl_inputs)[out_name],
                                           case.check, protocol)
            call = timings["sparsedsl"]
            if call.status == "ok" and call.seconds >= OVERHEAD_VISIBLE_BELOW:
                timings["sdsl run"] = Timing("sdsl run", "skipped", note=f"the call takes {call.seconds:.1f} s: "
                                                                         f"fixed overhead is not visible")
            else:
                timings["sdsl run"] = _measure_executable(compiled, case, out_name, protocol)
    for peer in PEERS:
        if peer not in libraries:
            continue
        if peer in case.variants:
            timings[peer] = _best_variant(peer, case.variants[peer], case.check, protocol)
            continue
        target = case.peers.get(peer, "not implemented for this kernel")
        known = case.known_seconds.get(peer, 0.0)
        if known > protocol.max_call_seconds:
            timings[peer] = Timing(peer, "skipped", note=f"one call (the reference) took {known:.1f} s > "
                                                         f"--max-call-seconds {protocol.max_call_seconds:g}")
        elif isinstance(target, str):
            timings[peer] = Timing(peer, "n/a", note=target)
        else:
            timings[peer] = measure(peer, target, case.check, protocol)
            if peer in case.as_returned and timings[peer].status == "ok":
                raw = measure(peer, case.as_returned[peer], case.check, protocol)
                if raw.status == "ok":
                    timings[peer] = dataclasses.replace(
                        timings[peer], as_returned=raw.seconds,
                        note=f"rows sorted as sparsedsl's; as returned (rows unsorted): {raw.seconds * 1e3:.2f} ms")
    return Row(kernel, matrix, A.shape[0], A.nnz, case.flops, timings, case.reference_note)


def _measure_executable(compiled, case: Case, out_name: str, protocol: Protocol) -> Timing:
    from sparsedsl.runtime.convert import to_user

    try:
        bound, sizes = compiled.bind(**case.sdsl_inputs)
    except Exception as exc:
        return Timing("sdsl run", "failed", note=f"{type(exc).__name__}: {_first_line(exc)}")
    return measure("sdsl run", lambda: compiled.executable.run(bound, sizes)[out_name],
                   lambda out: case.check(to_user(out, False)), protocol)


def _best_variant(peer: str, variants: dict[str, Callable[[], Any]], check, protocol: Protocol) -> Timing:
    """Each composition is timed; the fastest correct one stands for the peer, the others are noted."""
    measured = {name: measure(peer, fn, check, protocol) for name, fn in variants.items()}
    ok = {name: t for name, t in measured.items() if t.status == "ok"}
    others = "; ".join(f"{name}: {t.seconds * 1e3:.1f} ms" if t.status == "ok" else f"{name}: {t.status}"
                       for name, t in measured.items())
    if not ok:
        return Timing(peer, "failed", note=others)
    best = min(ok, key=lambda name: ok[name].seconds)
    return dataclasses.replace(ok[best], note=f"best: {best} ({others})",
                               variants={name: t.seconds for name, t in ok.items()})


# ---------------------------------------------------------------- environment

def configure_threads(threads: int) -> dict[str, str]:
    """Sets each library's thread count for this process and returns the settings as printed."""
    import graphblas as gb
    import numba
    import torch

    torch.set_num_threads(threads)
    gb.ss.config["nthreads"] = threads
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return {
        "sparsedsl": f"numba {numba.__version__}, {numba.get_num_threads()} threads "
                     f"(numba.set_num_threads; layer {numba.config.THREADING_LAYER})",
        "scipy": f"scipy {scipy.__version__}: 1 thread (scipy.sparse kernels are single-threaded)",
        "graphblas": f"python-graphblas {_version('graphblas')} / SuiteSparse:GraphBLAS "
                     f"{'.'.join(map(str, gb.ss.about['library_version']))}: "
                     f"gb.ss.config['nthreads'] = {gb.ss.config['nthreads']}",
        "torch": f"torch {torch.__version__}: torch.set_num_threads({torch.get_num_threads()})",
        "numpy": f"numpy {np.__version__}",
        "environment": ", ".join(f"{k}={os.environ[k]}" for k in
                                 ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                  "OPENBLAS_CORETYPE", "NUMBA_NUM_THREADS", "OMP_WAIT_POLICY")
                                 if k in os.environ) or
                       "no thread or OpenBLAS variables set",
    }


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:
        return "?"


def describe_machine() -> dict[str, str]:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": str(os.cpu_count())}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    for line in lscpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "L2 cache", "L3 cache",
                           "Hypervisor vendor", "Flags") and value.strip():
            value = value.strip()
            if key.strip() == "Flags":  # only the vector extensions matter here
                value = " ".join(f for f in value.split() if f.startswith(("avx", "fma", "sse4")))
            info[key.strip()] = value
    return info


# ---------------------------------------------------------------- printing

def _fmt_time(t: Timing | None) -> str:
    if t is None:
        return "-"
    if t.status == "ok":
        return f"{t.seconds * 1e3:.2f}"
    return t.status


def _fmt_rate(flops: int, t: Timing | None) -> str:
    if t is None or t.status != "ok" or t.seconds <= 0:
        return "-"
    return f"{flops / t.seconds / 1e9:.2f}"


def format_table(report: Report) -> str:
    libraries = [lib for lib in ("sparsedsl", "sdsl run", *PEERS) if lib in report.options["libraries_shown"]]
    peers = [p for p in PEERS if p in libraries]
    head = ["kernel", "matrix", "n", "nnz", "MFLOP"]
    for lib in libraries:
        head += [f"{lib} ms", "GF/s"]
    head += [f"x {p}" for p in peers]
    lines = [head]
    notes = []
    for row in report.rows:
        cells = [row.kernel, row.matrix, str(row.n), str(row.nnz), f"{row.flops / 1e6:.1f}"]
        for lib in libraries:
            t = row.timings.get(lib)
            cells += [_fmt_time(t), _fmt_rate(row.flops, t)]
            if t is not None and t.note:
                notes.append(f"{row.kernel}/{row.matrix}/{lib}: {t.status}: {t.note}")
        for p in peers:
            s = row.speedup(p)
            cells.append("-" if s is None else f"{s:.2f}")
        lines.append(cells)
    widths = [max(len(line[c]) for line in lines) for c in range(len(head))]
    text = ["  ".join(cell.rjust(w) if c >= 2 else cell.ljust(w) for c, (cell, w) in enumerate(zip(line, widths)))
            for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    out = "\n".join(text)
    if notes:
        out += "\n\nNotes:\n" + "\n".join(f"  {n}" for n in notes)
    return out


def _geometric_mean(ratios: list[float]) -> float | None:
    return math.exp(sum(math.log(s) for s in ratios) / len(ratios)) if ratios else None


def geometric_means(report: Report) -> list[tuple[str, str, float | None, int, float | None]]:
    """(kernel, peer, geometric-mean speedup or None, matrices counted, target or None); a peer also timed
    as it returns (``Case.as_returned``) adds a row "<peer> as returned" without a target."""
    out = []
    kernels = [k for k in KERNELS if any(r.kernel == k for r in report.rows)]
    for kernel in kernels:
        for peer in PEERS:
            ratios = [s for r in report.rows if r.kernel == kernel and (s := r.speedup(peer)) is not None]
            out.append((kernel, peer, _geometric_mean(ratios), len(ratios), TARGETS.get((kernel, peer))))
            raw = [r.timings[peer].as_returned / r.timings["sparsedsl"].seconds for r in report.rows
                   if r.kernel == kernel and r.speedup(peer) is not None and r.timings[peer].as_returned]
            if raw:
                out.append((kernel, f"{peer} as returned", _geometric_mean(raw), len(raw), None))
            for label, names in VARIANT_ROWS.get((kernel, peer), {}).items():
                ratios = []
                for r in report.rows:
                    if r.kernel != kernel or r.speedup(peer) is None:
                        continue
                    times = [r.timings[peer].variants[v] for v in names if v in r.timings[peer].variants]
                    if times:
                        ratios.append(min(times) / r.timings["sparsedsl"].seconds)
                out.append((kernel, label, _geometric_mean(ratios), len(ratios), TARGETS.get((kernel, label))))
    return out


def format_summary(report: Report) -> str:
    lines = ["Geometric mean of sparsedsl's speedup (peer time / sparsedsl time) over the matrices:",
             f"  {'kernel':<10} {'peer':<10} {'speedup':>8} {'matrices':>8}  target"]
    for kernel, peer, gm, count, target in geometric_means(report):
        if peer.split()[0] not in report.options["libraries_shown"]:
            continue
        verdict = ""
        if target is not None:
            verdict = f">= {target:g}  " + ("-" if gm is None else ("met" if gm >= target else "NOT met"))
        remark = ("(the peer's rows left unsorted)" if peer.endswith("as returned") else
                  "(the fastest composition of any of its ops)" if (kernel, peer) in VARIANT_ROWS else "")
        lines.append(f"  {kernel:<10} {peer:<10} {'-' if gm is None else f'{gm:.2f}':>8} {count:>8}  {verdict}"
                     + remark)
    return "\n".join(lines)


def format_header(report: Report) -> str:
    env = report.environment
    lines = [f"sparsedsl CPU benchmark, {env['date']}",
             "machine: " + ", ".join(f"{k}: {v}" for k, v in env["machine"].items()),
             "threads and versions:"]
    lines += [f"  {k}: {v}" for k, v in env["threads"].items()]
    opts = report.options
    more = (f" (a short call: as many as take {opts['min_seconds']:g} s, up to {MAX_REPEATS})"
            if opts.get("min_seconds") else "")
    lines.append(f"protocol: {opts['warmup']} warm-up call(s), median of {opts['repeats']} timed calls{more}, "
                 f"results checked against scipy (float64) before reporting; times in ms, GF/s = GFLOP/s; "
                 f"'x peer' = peer time / sparsedsl time")
    lines.append(f"load average (1, 5, 15 min) at start: {env.get('load_average_at_start')}, "
                 f"at end: {env.get('load_average_at_end')} ({env['machine'].get('cpus')} cores)")
    first_call = env.get("sparsedsl_first_call_seconds")
    if first_call:
        lines.append("sparsedsl compile + first call (Numba JIT) on a 64-row graph, untimed: " +
                     ", ".join(f"{k} {v:.1f} s" for k, v in first_call.items()))
    if opts.get("isolated"):
        lines.append("each kernel ran in its own worker process (a crash costs one case, not the run)")
    lines.append("flops: " + "; ".join(f"{k}: {v}" for k, v in FLOP_NOTES.items() if k in opts["kernels"]))
    lines.append("matrices: " + "; ".join(f"{name}: {origin}" for name, origin in opts["matrix_origins"]))
    return "\n".join(lines)


def format_report(report: Report) -> str:
    parts = [format_header(report), format_table(report), format_summary(report)]
    if report.incidents:
        parts.append("Incidents:\n" + "\n".join(f"  {i}" for i in report.incidents))
    return "\n\n".join(parts)


# ---------------------------------------------------------------- driver

def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/cpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the sample matrices and R-MAT 2^16 only (no 2^18), 3 repeats")
    parser.add_argument("--only", action="append", choices=KERNELS, metavar="KERNEL",
                        help=f"run only this kernel (repeatable): {', '.join(KERNELS)}")
    parser.add_argument("--matrix", action="append", metavar="NAME",
                        help="run only this matrix (repeatable): a data file's name without .mtx.gz, "
                             "rmat-16, rmat-18, or er-N for a matrix given with --er")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (default 1)")
    parser.add_argument("--min-seconds", type=float, default=MIN_SECONDS,
                        help="time a short call more than --repeats times, as many as take about this long "
                             f"by its warm-up call, at most {MAX_REPEATS} (default %(default)s; 0: --repeats)")
    parser.add_argument("--threads", type=int, default=2, help="threads for numba, graphblas and torch")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of .mtx.gz matrices (default: the sample data shipped with sparsedsl)")
    parser.add_argument("--er", type=int, action="append", default=[], metavar="N",
                        help="also an Erdős–Rényi matrix of N rows (average degree 8), named er-N")
    parser.add_argument("--rmat-probabilities", default=",".join(map(str, RMAT_PROBABILITIES)),
                        metavar="A,B,C", help="R-MAT quadrant probabilities (default %(default)s)")
    parser.add_argument("--max-call-seconds", type=float, default=30.0,
                        help="skip timing a library whose warm-up call took longer (default %(default)s)")
    parser.add_argument("--max-spgemm-mflop", type=float, default=MAX_SPGEMM_MFLOP,
                        help="skip SpGEMM cases of more MFLOP (default %(default)s; 'inf' for none)")
    parser.add_argument("--libraries", default="sparsedsl,scipy,graphblas,torch",
                        help="comma-separated subset of sparsedsl,scipy,graphblas,torch")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results as JSON")
    parser.add_argument("--no-isolate", dest="isolate", action="store_false",
                        help="run every kernel in this process (default: one worker process per kernel, so "
                             "that a crashing kernel costs one case, not the run)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.repeats < 1 or args.warmup < 0 or not args.min_seconds >= 0:
        parser.error("--repeats must be at least 1, --warmup and --min-seconds at least 0")
    try:
        probabilities = tuple(float(x) for x in args.rmat_probabilities.split(","))
    except ValueError:
        parser.error("--rmat-probabilities takes three numbers: A,B,C")
    if len(probabilities) != 3 or min(probabilities) < 0 or sum(probabilities) > 1:
        parser.error("--rmat-probabilities takes three non-negative numbers with a sum of at most 1")
    args.rmat_probabilities = probabilities
    args.libraries = [lib.strip() for lib in args.libraries.split(",") if lib.strip()]
    unknown = set(args.libraries) - {"sparsedsl", *PEERS}
    if unknown:
        parser.error(f"unknown libraries: {', '.join(sorted(unknown))}")
    return args


def select_specs(args) -> list[MatrixSpec]:
    if args.worker is not None:
        # a worker reads the matrices its parent built, in the order the parent gives
        folder = Path(args.worker)
        return [MatrixSpec(name, "", lambda p=folder / f"{name}.npz": sp.csr_array(sp.load_npz(p)))
                for name in args.matrix]
    scales = RMAT_SCALES[:1] if args.quick else RMAT_SCALES
    specs = matrix_specs(args.data or _default_data_dir(), scales, args.rmat_probabilities, args.er)
    if args.matrix:
        known = {s.name for s in specs}
        missing = [m for m in args.matrix if m not in known]
        if missing:
            raise SystemExit(f"unknown matrix {', '.join(missing)} (matrices: {', '.join(sorted(known))})")
        specs = [s for s in specs if s.name in args.matrix]
    return specs


def run(argv=None, progress=sys.stderr) -> Report:
    """Runs the benchmark described by the command-line arguments ``argv`` and returns the report;
    progress lines go to ``progress`` (None: nowhere)."""
    args = parse_args(argv)

    def say(text: str) -> None:
        if progress is not None:
            print(text, file=progress, flush=True)

    kernels = tuple(args.only) if args.only else KERNELS
    specs = select_specs(args)
    # numba's, SuiteSparse's and torch's OpenMP runtimes each keep their threads spinning after a parallel
    # region; on two cores the next library's threads then wait for a scheduler slice (a 1 ms torch SpMM
    # took 32 ms after a graphblas call). Passive waiting puts idle threads to sleep at once. It must be set
    # before the runtimes load (workers inherit it); a user's own setting is kept and printed.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threads = configure_threads(args.threads)
    protocol = Protocol(args.warmup, args.repeats, args.max_call_seconds, args.max_spgemm_mflop, args.min_seconds)
    shown = [lib for lib in ("sparsedsl", "sdsl run", *PEERS)
             if lib in args.libraries or (lib == "sdsl run" and "sparsedsl" in args.libraries)]
    environment = {"date": datetime.date.today().isoformat(), "machine": describe_machine(), "threads": threads,
                   "load_average_at_start": _load_average()}
    options = {"kernels": kernels, "repeats": args.repeats, "warmup": args.warmup, "min_seconds": args.min_seconds,
               "libraries_shown": shown, "matrix_origins": [(s.name, s.origin) for s in specs],
               "max_call_seconds": args.max_call_seconds, "max_spgemm_mflop": args.max_spgemm_mflop,
               "isolated": args.isolate and args.worker is None}
    report = Report([], environment, options)

    def save() -> None:
        if args.json is not None:
            partial = args.json.with_name(args.json.name + ".partial")
            partial.write_text(json.dumps(_jsonable(report), indent=1), encoding="utf-8")
            partial.replace(args.json)  # a worker that dies mid-run leaves the rows it finished

    if options["isolated"]:
        _run_isolated(args, kernels, specs, report, say)
    else:
        _run_in_process(kernels, specs, args.libraries, protocol, report, say, save)
    environment["load_average_at_end"] = _load_average()
    save()
    return report


def _load_average() -> str:
    # the run shares the machine with whatever else is running: a load above the core count means the
    # times include waiting for a core
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _run_in_process(kernels, specs, libraries, protocol: Protocol, report: Report, say, save) -> None:
    compiled = {}
    jit = report.environment.setdefault("sparsedsl_first_call_seconds", {})
    with warnings.catch_warnings():
        # torch warns that sparse CSR is beta and numba that it cannot cache: noise, not results
        warnings.simplefilter("ignore")
        if "sparsedsl" in libraries:
            for kernel in kernels:
                compiled[kernel], jit[kernel] = sparsedsl_kernel(kernel)
                say(f"[sparsedsl {kernel}: compile + first call on a 64-row graph {jit[kernel]:.1f} s]")
        for spec in specs:
            start = time.perf_counter()
            A = spec.build()
            say(f"[{spec.name}: {A.shape[0]} rows, {A.nnz} entries, built in {time.perf_counter() - start:.1f} s]")
            for kernel in kernels:
                start = time.perf_counter()
                row = run_case(kernel, spec.name, A, compiled.get(kernel), libraries, protocol)
                report.rows.append(row)
                save()
                summary = ", ".join(f"{lib} {_fmt_time(t)}" for lib, t in row.timings.items())
                say(f"  {kernel:<10} {summary}  ({time.perf_counter() - start:.1f} s)")
            del A


def _run_isolated(args, kernels, specs, report: Report, say) -> None:
    """One worker process per kernel, so that a crash (a compiled kernel writing out of bounds kills the
    process) costs one case, not the run: the case is re-run without sparsedsl and the rest resumes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sparsedsl-bench-") as folder:
        shapes = {}
        for spec in specs:
            start = time.perf_counter()
            A = spec.build()
            sp.save_npz(Path(folder) / f"{spec.name}.npz", A, compressed=False)
            shapes[spec.name] = (A.shape[0], A.nnz)
            say(f"[{spec.name}: {A.shape[0]} rows, {A.nnz} entries, built in {time.perf_counter() - start:.1f} s]")
            del A
        jit = report.environment.setdefault("sparsedsl_first_call_seconds", {})
        for kernel in kernels:
            remaining = [s.name for s in specs]
            while remaining:
                rows, died, first_call = _worker(args, kernel, remaining, args.libraries, folder)
                jit.update(first_call)
                report.rows.extend(rows)
                if died is None:
                    break
                if len(rows) == len(remaining):
                    # every case finished and was checked; the process died afterwards (at exit, say)
                    report.incidents.append(f"{kernel}: the worker process died ({died}) after its last case")
                    break
                crashed = remaining[len(rows)]
                say(f"  {kernel:<10} on {crashed}: the process died ({died}); re-running it without sparsedsl")
                peers = [lib for lib in args.libraries if lib != "sparsedsl"]
                peer_rows, died_again, _ = _worker(args, kernel, [crashed], peers, folder) if peers else ([], None, {})
                note = f"the benchmark process died ({died}) during this case"
                if died_again is None and peer_rows:
                    row = peer_rows[0]
                    note += "; without sparsedsl it completes"
                else:
                    n, nnz = shapes[crashed]
                    row = Row(kernel, crashed, n, nnz, 0,
                              {lib: Timing(lib, "crashed", note=note) for lib in peers})
                if "sparsedsl" in args.libraries:
                    row.timings = {"sparsedsl": Timing("sparsedsl", "crashed", note=note),
                                   "sdsl run": Timing("sdsl run", "crashed", note=note), **row.timings}
                report.rows.append(row)
                remaining = remaining[len(rows) + 1:]


def _worker(args, kernel: str, matrices: list[str], libraries: list[str], folder: str):
    """Runs ``kernel`` on ``matrices`` in a child process: (rows, None or how it died, first-call seconds)."""
    import signal
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sparsedsl-bench-out-") as out:
        out_json = Path(out) / "rows.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", folder, "--only", kernel,
               "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--min-seconds", str(args.min_seconds),
               "--threads", str(args.threads),
               "--max-call-seconds", str(args.max_call_seconds), "--max-spgemm-mflop", str(args.max_spgemm_mflop),
               "--libraries", ",".join(libraries),
               "--json", str(out_json)]
        for name in matrices:
            cmd += ["--matrix", name]
        code = subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode
        data = json.loads(out_json.read_text(encoding="utf-8")) if out_json.exists() else {"rows": []}
    rows = [_row_from_json(r) for r in data["rows"]]
    first_call = data.get("environment", {}).get("sparsedsl_first_call_seconds", {})
    if code < 0:
        died = f"signal {signal.Signals(-code).name}"
    elif code not in (0, 1) or len(rows) < len(matrices):
        died = f"exit status {code}"
    else:
        died = None
    return rows, died, first_call


def _row_from_json(data: dict) -> Row:
    timings = {k: Timing(**{**v, "times": tuple(v["times"])}) for k, v in data["timings"].items()}
    return Row(**{**data, "timings": timings})


def _jsonable(report: Report) -> dict:
    return {"environment": report.environment, "options": report.options, "incidents": report.incidents,
            "rows": [dataclasses.asdict(r) for r in report.rows],
            "geometric_means": [dict(zip(("kernel", "peer", "speedup", "matrices", "target"), g))
                                for g in geometric_means(report)]}


def main(argv=None) -> int:
    report = run(argv)
    print(format_report(report))
    for kernel, matrix, timing in report.failures:
        print(f"error: {kernel} on {matrix}: {timing.library} {timing.status}: {timing.note}", file=sys.stderr)
    for incident in report.incidents:
        print(f"error: {incident}", file=sys.stderr)
    return 1 if report.failures or report.incidents else 0


if __name__ == "__main__":
    sys.exit(main())
