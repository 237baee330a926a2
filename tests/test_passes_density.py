"""Density estimates from bound inputs' statistics: the rules, and that they track real products."""
import math

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.frontend.parser import parse
from sparsedsl.passes.density import InputStats, Statistics, estimate_densities
from sparsedsl.tensor_ir.check import check_module
from sparsedsl.tensor_ir.loader import ModuleLoader


def estimate(src: str, sizes: dict, inputs: dict) -> dict:
    prog = check_module(parse(src, "p.sdsl"), ModuleLoader([], use_env=False))
    stats = Statistics(sizes, {k: InputStats(shape, nnz) for k, (shape, nnz) in inputs.items()})
    return estimate_densities(prog, stats)


HEADER = "input A: csr<f64>[n, n]\ninput B: csr<f64>[n, n]\ninput X: dense<f64>[n, n]\noutput s: f64\n"
STATS = {"A": ((100, 100), 1000), "B": ((100, 100), 500)}


def rule(body: str) -> float:
    return estimate(HEADER + body + "s = sum[i, j] T[i, j]\n", {"n": 100}, STATS)["T"]


def test_inputs_hold_their_stored_fraction():
    est = estimate(HEADER + "s = sum[i, j] A[i, j]\n", {"n": 100}, STATS)
    assert est["A"] == pytest.approx(0.1) and est["B"] == pytest.approx(0.05) and est["X"] == 1.0


def test_intersection_multiplies_and_union_combines():
    assert rule("T[i, j] = A[i, j] * B[i, j]\n") == pytest.approx(0.1 * 0.05)
    assert rule("T[i, j] = A[i, j] + B[i, j]\n") == pytest.approx(1 - 0.9 * 0.95)
    assert rule("T[i, j] = max(A[i, j], B[i, j])\n") == pytest.approx(1 - 0.9 * 0.95)
    # a dense operand neither thins an intersection nor leaves a union sparse
    assert rule("T[i, j] = A[i, j] * X[i, j]\n") == pytest.approx(0.1)
    assert rule("T[i, j] = A[i, j] + X[i, j]\n") == 1.0


def test_reduction_is_present_where_any_term_is():
    assert rule("T[i, j] = sum[k] A[i, k] * B[k, j]\n") == pytest.approx(1 - (1 - 0.1 * 0.05) ** 100)


def test_masks_and_complements():
    assert rule("T[i, j] = X[i, j] where A[i, j]\n") == pytest.approx(0.1)
    assert rule("T[i, j] = X[i, j] where not A[i, j]\n") == pytest.approx(0.9)
    assert rule("T[i, j] = X[i, j] where A[i, j] and B[i, j]\n") == pytest.approx(0.005)


def test_index_predicates():
    assert rule("T[i, j] = A[i, j] where j < i\n") == pytest.approx(0.05)
    assert rule("T[i, j] = X[i, j] where j == i\n") == pytest.approx(0.01)
    assert rule("T[i, j] = X[i, j] where not (j == i)\n") == pytest.approx(0.99)


def test_topk_keeps_at_most_k_of_the_extent():
    assert rule("T[i, j] = X[i, j] where topk[j](3) X[i, j]\n") == pytest.approx(0.03)


def test_accumulation_unions_with_what_was_there():
    src = HEADER + "T[i, j] = A[i, j]\nT[i, j] += B[i, j]\ns = sum[i, j] T[i, j]\n"
    assert estimate(src, {"n": 100}, STATS)["T"] == pytest.approx(1 - 0.9 * 0.95)


def test_unknown_statistics_give_no_estimate():
    src = HEADER + "T[i, j] = sum[k] A[i, k] * B[k, j]\ns = sum[i, j] T[i, j]\n"
    assert "T" not in estimate(src, {}, STATS)  # the reduced extent n is not bound
    assert "T" not in estimate(src, {"n": 100}, {"A": STATS["A"]})  # B unknown


def test_empty_inputs_and_empty_reductions():
    assert InputStats((0, 5), 0).density == 1.0  # nothing to be present at: never divides by zero
    src = HEADER + "T[i, j] = sum[k] A[i, k] * B[k, j]\ns = sum[i, j] T[i, j]\n"
    assert estimate(src, {"n": 0}, {"A": ((0, 0), 0), "B": ((0, 0), 0)})["T"] == 0.0


@pytest.mark.parametrize("a, b", [(0.01, 0.01), (0.02, 0.05), (0.05, 0.05)])
def test_estimate_tracks_random_products(a, b):
    """On uniformly random matrices (the estimate's assumption) it is within a few points of A·B's density."""
    n = 400
    rng = np.random.default_rng(3)
    A = sp.random_array((n, n), density=a, format="csr", rng=rng)
    B = sp.random_array((n, n), density=b, format="csr", rng=rng)
    src = HEADER + "T[i, j] = sum[k] A[i, k] * B[k, j]\ns = sum[i, j] T[i, j]\n"
    est = estimate(src, {"n": n}, {"A": ((n, n), A.nnz), "B": ((n, n), B.nnz)})["T"]
    actual = (A @ B).nnz / n ** 2
    assert abs(est - actual) < 0.03, (est, actual)
    assert est == pytest.approx(-math.expm1(n * math.log1p(-(A.nnz / n ** 2) * (B.nnz / n ** 2))))


def test_program_statistics_come_from_bound_inputs():
    prog = sd.loads(HEADER + "T[i, j] = sum[k] A[i, k] * B[k, j]\ns = sum[i, j] T[i, j]\n", name="p")
    A = sp.random_array((30, 30), density=0.1, format="csr", rng=1)
    stats, sizes = prog.input_statistics({"A": A})
    assert sizes == {"n": 30} and stats.inputs["A"] == InputStats((30, 30), A.nnz)
