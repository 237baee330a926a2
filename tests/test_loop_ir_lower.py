"""Loop IR: lowering derives iteration strategies from the index structure; the verifier and printer."""
from __future__ import annotations

import dataclasses

import pytest

import sparsedsl as sd
from sparsedsl.core.errors import Span
from sparsedsl.loop_ir import nodes as L
from sparsedsl.loop_ir.lower import lower_program
from sparsedsl.loop_ir.printer import format_module
from sparsedsl.loop_ir.verify import LoopIRError, check_module, verify_module


def lower(text: str, **options) -> L.Module:
    module = lower_program(sd.loads(text).ir().program, options)
    verify_module(module)
    return module


def foralls(module: L.Module) -> list[L.Forall]:
    out = []

    def walk(stmts):
        for s in stmts:
            if isinstance(s, L.Forall):
                out.append(s)
            for value in vars(s).values():
                if isinstance(value, tuple) and value and isinstance(value[0], L.Stmt):
                    walk(value)

    for k in module.kernels:
        walk(k.body)
    return out


def kinds(module: L.Module) -> list[tuple[str, str, int, int]]:
    return [(f.var, f.iteration.kind, len(f.iteration.drivers), len(f.iteration.followers)) for f in foralls(module)]


def workspaces(module: L.Module) -> list[L.Workspace]:
    out = []

    def walk(stmts):
        for s in stmts:
            if isinstance(s, L.Workspace):
                out.append(s)
            for value in vars(s).values():
                if isinstance(value, tuple) and value and isinstance(value[0], L.Stmt):
                    walk(value)

    for k in module.kernels:
        walk(k.body)
    return out


HEAD = "input A: csr<f64>[M, N]\ninput B: csr<f64>[M, N]\n"


def test_union_and_intersection_co_iteration():
    m = lower(HEAD + "output C: csr<f64>[M, N]\nC[i, j] = A[i, j] + B[i, j]\n")
    # count and fill phases, each a sorted union of the two rows
    assert kinds(m) == [("x_j", "union", 2, 0), ("x_j", "union", 2, 0)]
    m = lower(HEAD + "output C: csr<f64>[M, N]\nC[i, j] = A[i, j] * B[i, j]\n")
    assert kinds(m) == [("x_j", "intersect", 2, 0)] * 2
    # (A + B) * A: A is needed everywhere, so A drives and B follows
    m = lower(HEAD + "output C: csr<f64>[M, N]\nC[i, j] = (A[i, j] + B[i, j]) * A[i, j]\n")
    assert kinds(m) == [("x_j", "intersect", 1, 1)] * 2


def test_broadcast_operand_does_not_widen_presence():
    m = lower(HEAD + "input v: dense<f64>[N]\noutput C: csr<f64>[M, N]\nC[i, j] = A[i, j] + v[j]\n")
    assert kinds(m) == [("x_j", "intersect", 1, 0)] * 2


def test_dense_operand_in_a_union_iterates_densely_with_a_follower():
    m = lower(HEAD + "input W: dense<f64>[M, N]\noutput C: dense<f64>[M, N]\nC[i, j] = A[i, j] + W[i, j]\n")
    assert kinds(m) == [("x_j", "dense", 0, 1)]


def test_spgemm_is_row_wise_with_a_workspace():
    text = ("input A: csr<f64>[M, K]\ninput B: csr<f64>[K, N]\noutput C: csr<f64>[M, N]\n"
            "C[i, j] = sum[k] A[i, k] * B[k, j]\n")
    m = lower(text, assembly="two-pass")
    assert [w.kind for w in workspaces(m)] == ["auto", "auto"]
    walks = kinds(m)
    # per phase: a work-count pass (k over A's row, j over B's row k), the accumulation, the compacted row
    assert walks.count(("x_k", "intersect", 1, 0)) == 4
    assert walks.count(("x_j", "intersect", 1, 0)) == 6
    # one numeric pass (the default): each row's work (multiply-adds), the chunks cut by its prefix sum and
    # bounded, then one workspace pass
    m = lower(text)
    assert [k.name for k in m.kernels] == ["k0_C_work", "k0_C_bound", "k0_C_fill", "k0_C_place",
                                           "k0_C_big_count", "k0_C_big_fill"]
    (prefix,) = [s for s in m.host if isinstance(s, L.PrefixSum) and s.src.startswith("w_work")]
    bound = next(k for k in m.kernels if k.name == "k0_C_bound")
    assert prefix.dst in bound.params
    # a run-time branch: past the scratch that is kept between calls (2^25 entries), count and fill instead
    (branch,) = [s for s in m.host if isinstance(s, L.If)]
    assert branch.cond.args[1] == L.Const(1 << 25, "i64")
    assert [s.kernel for s in branch.then if isinstance(s, L.Invoke)] == ["k0_C_big_count", "k0_C_big_fill"]
    assert [s.kernel for s in branch.orelse if isinstance(s, L.Invoke)] == ["k0_C_fill", "k0_C_place"]
    kept = [s.name for s in branch.orelse if isinstance(s, L.Alloc) and s.keep]
    assert len(kept) == 2
    one = dataclasses.replace(m, kernels=tuple(k for k in m.kernels if "_big_" not in k.name))
    assert [w.kind for w in workspaces(one)] == ["auto"]
    walks = kinds(one)
    assert walks.count(("x_k", "intersect", 1, 0)) == 3
    assert walks.count(("x_j", "intersect", 1, 0)) == 4
    assert lower(text, one_pass_max_entries=0) != m
    with pytest.raises(sd.SdslError, match="assembly"):
        lower(text, assembly="one")
    m = lower("input A: csr<f64>[M, K]\ninput B: csr<f64>[K, N]\noutput C: csr<f64>[M, N]\n"
              "C[i, j] = sum[k] A[i, k] * B[k, j]\nschedule C:\n    accumulator dense\n")
    assert {w.kind for w in workspaces(m)} == {"dense"}  # the one-pass kernel and the run-time two-pass pair


def test_masked_products_iterate_the_mask():
    sddmm = lower("input G: csr<bool>[N, N]\ninput Q: dense<f32>[N, D]\ninput K: dense<f32>[N, D]\n"
                  "output S: csr<f32>[N, N]\nS[i, j] = sum[d] Q[i, d] * K[j, d] where G[i, j]\n")
    assert not workspaces(sddmm)
    assert ("x_j", "intersect", 1, 0) in kinds(sddmm) and ("x_d", "dense", 0, 0) in kinds(sddmm)
    tri = lower("input L: csr<f64>[N, N]\noutput T: f64\n"
                "T = sum[i, j] (sum[k] L[i, k] * L[j, k] where L[i, j])\n")
    # the scalar reduction's rows are split over threads (a plain loop, not a forall); L[i, :] does not change
    # inside the loop over j, so it is scattered into a map and looked up, driven by L[j, :]
    assert kinds(tri) == [("x_j", "intersect", 1, 0), ("x_k", "intersect", 1, 0)]
    assert all(k.parallel for k in tri.kernels)
    (inner,) = [f for f in foralls(tri) if f.var == "x_k"]
    assert len(inner.iteration.lookups) == 1 and inner.iteration.lookups[0].start != inner.iteration.drivers[0].start
    merged = lower("input L: csr<f64>[N, N]\noutput T: f64\n"
                   "T = sum[i, j] (sum[k] L[i, k] * L[j, k] where L[i, j])\n", lookup=False)
    assert [k for k in kinds(merged) if k[0] == "x_k"] == [("x_k", "intersect", 2, 0)]


def test_softmax_gets_row_passes_before_the_row():
    m = lower("input S: csr<f64>[N, N]\noutput P: csr<f64>[N, N]\nP[i, j] = softmax[j] S[i, j]\n")
    # count phase: presence only; fill phase: max pass, sum pass, then the row
    assert [k for k in kinds(m) if k[0] == "x_j"] == [("x_j", "intersect", 1, 0)] * 4


def test_outer_level_is_chunked_and_parallel_by_default():
    text = HEAD + "output C: csr<f64>[M, N]\nC[i, j] = A[i, j] * B[i, j]\n"
    assert all(k.parallel for k in lower(text).kernels)
    assert not any(k.parallel for k in lower(text, parallel=False).kernels)


def test_printer_is_deterministic_and_shows_strategies():
    text = HEAD + "output C: csr<f64>[M, N]\nC[i, j] = A[i, j] - B[i, j]\n"
    a, b = format_module(lower(text)), format_module(lower(text))
    assert a == b
    assert "forall x_j in union(" in a and "prefix_sum(" in a and "parallel for" in a


def test_spans_do_not_take_part_in_equality():
    a = L.Forall("x_i", L.Iteration("dense", L.Const(3, "i64")), (), span=Span(None, 1, 1))
    b = dataclasses.replace(a, span=Span(None, 7, 2))
    assert a == b and hash(a) == hash(b)


def test_verifier_reports_undefined_names_and_bad_iterations():
    bad = L.Module("m", (), (L.Kernel("k", ("y",), (
        L.Set("nope", L.Var("y")),
        L.Forall("x_i", L.Iteration("intersect"), (L.Store("out", (L.Var("x_i"),), L.Var("ghost")),)),
    )),), (L.Invoke("k", ("y",)),), ())
    problems = check_module(bad)
    assert any("nope is set before it is declared" in p for p in problems)
    assert any("needs drivers" in p for p in problems)
    assert any("ghost" in p for p in problems)
    assert any("host passes y" in p for p in problems)
    with pytest.raises(LoopIRError):
        verify_module(bad)
