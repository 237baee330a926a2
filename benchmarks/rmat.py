"""Synthetic sparse matrices with fixed seeds: R-MAT (power-law graphs) and Erdős–Rényi (uniform graphs).

Both return a canonical ``scipy.sparse.csr_array`` (sorted, unique column indices) of ``float64`` values drawn
uniformly from [0.5, 1.5), so that products exercise real arithmetic and no stored value is zero. The same
arguments give the same matrix on every machine (numpy's ``PCG64`` generator, no global random state).

R-MAT (Chakrabarti, Zhan, Faloutsos 2004) with the Graph500 quadrant probabilities a=0.57, b=0.19, c=0.19
(d = 1 - a - b - c): each edge picks one quadrant per bit of its coordinates. Duplicate edges are common in
R-MAT, so edges are drawn in batches until ``n * avg_degree`` *distinct* ones exist (the first ones drawn are
kept), which makes the average degree the one asked for rather than the one before de-duplication. Vertex
labels are then permuted at random, as Graph500 does, so that the heavy rows are not all at the top and no
library gains from an accidental locality of the generator.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["rmat", "erdos_renyi", "symmetric_pattern"]

GRAPH500_PROBABILITIES = (0.57, 0.19, 0.19)


def _assemble(rows: np.ndarray, cols: np.ndarray, n: int, rng: np.random.Generator) -> sp.csr_array:
    values = rng.uniform(0.5, 1.5, size=rows.size)
    matrix = sp.csr_array((values, (rows, cols)), shape=(n, n))
    matrix.sum_duplicates()  # the edges are distinct already: this sorts the column indices of each row
    return matrix


def _distinct_edges(draw, n: int, target: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Calls ``draw(count) -> (rows, cols)`` until ``target`` distinct edges exist; keeps the first drawn."""
    keys = np.empty(0, dtype=np.int64)
    while True:
        missing = target - keys.size
        # R-MAT repeats many edges; over-draw so that one or two batches usually suffice
        rows, cols = draw(max(missing + missing // 2, 1024))
        keys = np.concatenate([keys, rows.astype(np.int64) * n + cols])
        _unique, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]
        if keys.size >= target:
            keys = keys[:target]
            return keys // n, keys % n


def rmat(scale: int, avg_degree: int = 16, seed: int = 0,
         probabilities: tuple[float, float, float] = GRAPH500_PROBABILITIES) -> sp.csr_array:
    """A directed R-MAT graph with ``2**scale`` vertices and ``2**scale * avg_degree`` distinct edges."""
    if scale < 1 or scale > 30:
        raise ValueError(f"scale must be in 1..30, not {scale}")
    n = 1 << scale
    target = n * avg_degree
    if target > n * n:
        raise ValueError(f"{target} distinct edges do not fit in a {n}×{n} matrix")
    a, b, c = probabilities
    rng = np.random.default_rng(seed)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.zeros(count, dtype=np.int64)
        cols = np.zeros(count, dtype=np.int64)
        for bit in range(scale):
            u = rng.random(count)
            # quadrants: [0, a) top-left, [a, a+b) top-right, [a+b, a+b+c) bottom-left, rest bottom-right
            right = ((u >= a) & (u < a + b)) | (u >= a + b + c)
            down = u >= a + b
            rows |= down.astype(np.int64) << bit
            cols |= right.astype(np.int64) << bit
        return rows, cols

    rows, cols = _distinct_edges(draw, n, target, rng)
    relabel = rng.permutation(n)
    return _assemble(relabel[rows], relabel[cols], n, rng)


def erdos_renyi(n: int, avg_degree: float = 16, seed: int = 0) -> sp.csr_array:
    """A directed G(n, m) graph: ``round(n * avg_degree)`` distinct edges, uniformly at random."""
    if n < 1:
        raise ValueError(f"n must be positive, not {n}")
    target = int(round(n * avg_degree))
    if target > n * n:
        raise ValueError(f"{target} distinct edges do not fit in a {n}×{n} matrix")
    rng = np.random.default_rng(seed)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, n, size=count), rng.integers(0, n, size=count)

    rows, cols = _distinct_edges(draw, n, target, rng)
    return _assemble(rows, cols, n, rng)


def symmetric_pattern(matrix) -> sp.csr_array:
    """The undirected graph of a square matrix: ``bool`` pattern of ``A + Aᵀ`` without the diagonal."""
    coo = sp.coo_array(matrix)
    off_diagonal = coo.row != coo.col
    rows = np.concatenate([coo.row[off_diagonal], coo.col[off_diagonal]])
    cols = np.concatenate([coo.col[off_diagonal], coo.row[off_diagonal]])
    pattern = sp.csr_array((np.ones(rows.size, dtype=bool), (rows, cols)), shape=coo.shape)
    pattern.sum_duplicates()  # for bool data, a duplicate stays True
    return pattern
