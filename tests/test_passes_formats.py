"""Format selection: the rewrite it makes and why, and that it never touches declared formats."""
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
    assert after.decl("T").type.format.name == "coo"
    assert any(d.subject == "T" and d.reason == "schedule directive" for d in decisions)


def test_passes_do_not_change_statements():
    before, after, _ = run(ATTENTION)
    assert before.body == after.body
