"""Format selection: the rewrite it makes and why, and that it never touches declared formats."""
import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.frontend.parser import parse
from sparsedsl.passes.pipeline import run_passes
from sparsedsl.tensor_ir.check import check_module
from sparsedsl.tensor_ir.loader import ModuleLoader


def run(src):
    prog = check_module(parse(src, "p.sdsl"), ModuleLoader([], use_env=False))
    return prog, *run_passes(prog, fusion=False)  # format selection alone (fusion: test_fusion.py)


ATTENTION = """
input  G: csr<bool>[N, N]
input  Q: dense<f32>[N, D]
input  K: dense<f32>[N, D]
input  V: dense<f32>[N, D]
output O: dense<f32>[N, D]
S[i, j] = sum[d] Q[i, d] * K[j, d] where G[i, j]
P[i, j] = softmax[j] S[i, j]
O[i, d] = sum[j] P[i, j] * V[j, d]
"""


def test_masked_scores_are_csr_and_dense_products_dense():
    before, after, decisions = run(ATTENTION + "H[i, d] = Q[i, d] * 2.0\nT = sum[i, d] H[i, d]\n")
    fmt = {d.name: (d.storage or d.type.format).name for d in after.decls}
    assert {d.name: d.type.format.name for d in after.decls}["S"] == "auto"  # semantics untouched
    assert fmt["S"] == "csr" and fmt["P"] == "csr"
    assert fmt["H"] == "dense" and fmt["T"] == "dense"
    assert fmt["O"] == "dense"
    reasons = {d.subject: d.reason for d in decisions}
    assert "every coordinate" in reasons["H"]


def test_column_reads_choose_csc():
    _, after, _ = run("input A: csr<f32>[M, K]\ninput X: dense<f32>[M, F]\noutput Y\n"
                      "T[i, k] = A[i, k] * 2.0\nY[k, f] = sum[i] T[i, k] * X[i, f]\n")
    assert after.decl("T").storage.name == "csc"


def test_schedule_format_is_kept():
    _, after, decisions = run("input A: csr<f32>[M, K]\noutput s\nT[i, k] = A[i, k] * 2.0\n"
                              "s = sum[i, k] T[i, k]\nschedule T:\n    format coo\n")
    # the storage, never the meaning: presence stays exact (a schedule never changes a result)
    assert after.decl("T").type.format.name == "auto" and after.decl("T").storage.name == "coo"
    assert any(d.subject == "T" and d.reason == "schedule directive" for d in decisions)


@pytest.mark.parametrize("target", ["ref", "numba"])
@pytest.mark.parametrize("fmt", ["dense", "csr", "csc", "coo", "bsr(2, 3)", None])
def test_a_format_directive_never_changes_a_result(fmt, target):
    text = ("input A: csr<f64>[N, N]\ninput B: csr<f64>[N, N]\noutput R: dense<i64>[N]\noutput s: f64\n"
            "T[i, j] = sum[k] A[i, k] * B[k, j]\nR[i] = fill(count[j] T[i, j], 0)\ns = sum[i, j] T[i, j]\n")
    if fmt is not None:
        text += f"schedule T:\n    format {fmt}\n"
    A = sp.random_array((6, 6), density=0.2, format="csr", rng=np.random.default_rng(3))
    B = sp.random_array((6, 6), density=0.2, format="csr", rng=np.random.default_rng(4))
    out = sd.loads(text).compile(target)(A=A, B=B)
    product = sp.csr_array(A @ B)
    np.testing.assert_array_equal(out["R"], np.diff(product.indptr))
    np.testing.assert_allclose(out["s"], product.sum())


CLOSURE_STEP = """input  A: csr<f64>[N, N]
output R: csr<f64>[N, N]
R[i, j] = A[i, j]
repeat at most 3:
    T[i, j] = min[k] (R[i, k] + A[k, j]) where not R[i, j]
    R[i, j] += T[i, j]
"""


@pytest.mark.parametrize("directives", [("format coo",), ("format dense", "accumulator hash", "block i 2",
                                                           "order i, k, j")])
def test_a_schedule_may_name_a_tensor_local_to_a_repeat(directives):
    """spec § 8: a schedule tells how to compute the statements that define NAME, wherever they are; T is
    local to the loop body (it was refused as 'not a tensor this program computes')."""
    text = CLOSURE_STEP + "schedule T:\n" + "".join(f"    {d}\n" for d in directives)
    program = sd.loads(text, name="closure")
    fmt = directives[0].split()[1]
    _, after, decisions = run(text)
    # dense storage of a tensor with absent entries keeps a presence bitmap beside the values
    assert after.decl("T").storage.name == {"dense": "bitmap"}.get(fmt, fmt)
    assert any(d.subject == "T" and d.reason.startswith("schedule directive") for d in decisions)
    explained = program.explain()
    for directive in directives[1:]:
        said = "accumulator of T: hash" if directive == "accumulator hash" else f"schedule of T: {directive}: applied"
        assert said in explained, explained
    A = sp.random_array((9, 9), density=0.2, format="csr", rng=np.random.default_rng(5))
    A.data = np.round(A.data * 4) + 1
    # three steps of min-plus closure over paths of length 2.. with scipy: dense with inf for absent
    D = np.where(A.toarray() != 0, A.toarray(), np.inf)
    R = D.copy()
    for _ in range(3):
        step = np.min(R[:, :, None] + D[None, :, :], axis=1)
        R = np.where(np.isinf(R), step, R)
    for kernel in (program.compile("ref"), program.compile("numba", parallel=False)):
        got = kernel(A=A)["R"].toarray()
        np.testing.assert_array_equal(got, np.where(np.isinf(R), 0, R), err_msg=f"{kernel.target} {directives}")


def test_a_schedule_of_a_name_no_statement_defines_is_still_an_error():
    with pytest.raises(sd.SdslScheduleError, match="schedule names 'U', which is not a tensor"):
        sd.loads(CLOSURE_STEP + "schedule U:\n    format dense\n", name="closure")
    # fuse names the loop's local too, and refuses it for the documented reason (not as an unknown name)
    with pytest.raises(sd.SdslScheduleError, match="cannot fuse 'T' into 'R': .* outside every repeat"):
        sd.loads(CLOSURE_STEP + "schedule R:\n    fuse T, R\n", name="closure").compile("numba")


def test_passes_do_not_change_statements():
    before, after, _ = run(ATTENTION)
    assert before.body == after.body


# ---------------------------------------------------------------- with bound inputs' statistics

from sparsedsl.passes.density import InputStats, Statistics  # noqa: E402
from sparsedsl.passes.formats import BITMAP_DENSITY, select_formats  # noqa: E402

PRODUCT = """input A: csr<f64>[n, n]
input B: csr<f64>[n, n]
output C: csr<f64>[n, n]
output r: dense<f64>[n]
T[i, j] = sum[k] A[i, k] * B[k, j]
C[i, j] = T[i, j] * A[i, j]
r[i] = sum[j] T[i, j]
"""


def with_stats(src: str, n: int, nnz: int, **kw):
    prog = check_module(parse(src, "p.sdsl"), ModuleLoader([], use_env=False))
    stats = Statistics({"n": n}, {"A": InputStats((n, n), nnz), "B": InputStats((n, n), nnz)})
    return select_formats(prog, stats, **kw)


def test_a_nearly_full_intermediate_is_a_bitmap():
    after, decisions = with_stats(PRODUCT, 1000, 40_000)  # 4% each: A·B estimated 80% present
    assert after.decl("T").storage.name == "bitmap"
    assert after.decl("T").type.format.name == "auto"  # semantics untouched: presence kept exactly
    reason = next(d.reason for d in decisions if d.subject == "T")
    assert "estimated 79.8% present" in reason and "bound inputs" in reason
    assert with_stats(PRODUCT, 1000, 20_000)[0].decl("T").storage.name == "csr"  # 33%: below the threshold


def test_a_sparse_intermediate_stays_compressed_and_says_its_estimate():
    after, decisions = with_stats(PRODUCT, 1000, 5_000)  # 0.5% each: 2.5% present
    assert after.decl("T").storage.name == "csr"
    reason = next(d.reason for d in decisions if d.subject == "T")
    assert "estimated 2.47% present" in reason


def test_the_threshold_and_the_size_cap_decide():
    assert with_stats(PRODUCT, 1000, 40_000, bitmap_density=0.9)[0].decl("T").storage.name == "csr"
    assert with_stats(PRODUCT, 1000, 5_000, bitmap_density=0.0)[0].decl("T").storage.name == "bitmap"
    # 2^14 × 2^14 coordinates is over the cap however dense: the bitmap would be gigabytes
    assert with_stats(PRODUCT, 1 << 14, 1 << 24, bitmap_density=0.0)[0].decl("T").storage.name == "csr"
    assert 0 < BITMAP_DENSITY < 1


def test_without_statistics_nothing_changes():
    _, after, _ = run(PRODUCT)
    assert after.decl("T").storage.name == "csr"


def test_a_matrix_read_against_its_rows_is_a_bitmap_at_any_density():
    src = PRODUCT.replace("C[i, j] = T[i, j] * A[i, j]", "C[i, j] = T[i, j] + T[j, i]")
    after, decisions = with_stats(src, 1000, 1_000)  # 0.1% each: A·B 0.1% present
    assert after.decl("T").storage.name == "bitmap"
    reason = next(d.reason for d in decisions if d.subject == "T")
    assert "T[j, i] at line 6 reads it against its rows" in reason
    # the column reads that chose csc without statistics are against the rows too
    cols = ("input A: csr<f32>[M, K]\ninput X: dense<f32>[M, F]\noutput Y\n"
            "T[i, k] = A[i, k] * 2.0\nY[k, f] = sum[i] T[i, k] * X[i, f]\n")
    prog = check_module(parse(cols, "p.sdsl"), ModuleLoader([], use_env=False))
    stats = Statistics({"M": 50, "K": 40, "F": 8}, {"A": InputStats((50, 40), 30)})
    assert select_formats(prog, stats)[0].decl("T").storage.name == "bitmap"
    # rows walked in order (T[k, j] of a product, T[i, j] element-wise) are not against them
    assert with_stats(PRODUCT, 1000, 1_000)[0].decl("T").storage.name == "csr"
    # without sizes there is no bound on the bitmap's memory: compressed, as before
    assert run(src)[1].decl("T").storage.name == "csr"


def test_an_order_with_a_column_loop_outermost_stores_the_intermediate_by_coordinate():
    """Compressed rows are assembled row by row: an intermediate whose ``order`` puts j outside i is written
    by coordinate (a bitmap) so that the order can be run; the statement's own order keeps csr, and a
    ``format`` directive is kept as asked."""
    src = ATTENTION + "schedule S:\n    order {}\n"
    for order, want in (("j, i, d", "bitmap"), ("i, j, d", "csr"), ("i, d, j", "csr")):
        _, after, decisions = run(src.format(order))
        assert after.decl("S").storage.name == want, order
        if want == "bitmap":
            assert any(d.subject == "S" and "order puts j outermost" in d.reason for d in decisions)
    _, after, _ = run(src.format("j, i, d") + "    format csr\n")
    assert after.decl("S").storage.name == "csr"
