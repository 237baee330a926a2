"""The ``order`` schedule directive (spec § 8) on the numba target: an order is either run — the loops the
kernels nest follow it, and the result is the reference interpreter's — or refused at the directive, located.
Never accepted and silently ignored."""
from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.loop_ir.order import LoopOrder
from sparsedsl.tensor_ir import nodes as T

RNG = np.random.default_rng(41)
A = sp.random_array((12, 9), density=0.25, format="coo", rng=RNG)
A = sp.csr_array((A.data[A.row != 3], (A.row[A.row != 3], A.col[A.row != 3])), shape=A.shape)  # row 3 empty
B = sp.random_array((9, 11), density=0.25, format="csr", rng=RNG)
M = sp.random_array((12, 11), density=0.3, format="csr", rng=RNG)
X = RNG.random((9, 5))
HEAD = "input A: csr<f64>[N, K]\ninput B: csr<f64>[K, J]\ninput M: csr<f64>[N, J]\ninput X: dense<f64>[K, F]\n"
INPUTS = dict(A=A, B=B, M=M, X=X)
LOOP = re.compile(r"^(\s*)(?:parallel )?for(?:all)? x_(\w+) ")

# (output declaration, statement, the orders this target must run: at least these)
CASES = {
    "spgemm-csr": ("output C: csr<f64>[N, J]", "C[i, j] = sum[k] A[i, k] * B[k, j]", {"ikj", "ijk"}),
    "spgemm-dense": ("output C: dense<f64>[N, J]", "C[i, j] = sum[k] A[i, k] * B[k, j]",
                     {"ikj", "ijk", "jik", "jki"}),
    "masked-csr": ("output C: csr<f64>[N, J]", "C[i, j] = sum[k] A[i, k] * B[k, j] where M[i, j]", {"ikj", "ijk"}),
    "masked-dense": ("output C: dense<f64>[N, J]", "C[i, j] = sum[k] A[i, k] * B[k, j] where M[i, j]",
                     {"ikj", "ijk", "jik", "jki"}),
    "tropical-csr": ("output C: csr<f64>[N, J]", "C[i, j] = min[k] (A[i, k] + B[k, j])", {"ikj", "ijk"}),
    "spmm": ("output C: dense<f64>[N, F]", "C[i, f] = sum[k] A[i, k] * X[k, f]", {"ikf", "ifk", "fik", "fki"}),
    # argmax runs only at each coordinate (its index innermost)
    "argmax": ("output C: dense<i64>[N, J]", "C[i, j] = argmax[k] A[i, k] * B[k, j]", {"ijk", "jik"}),
}


def nests(loops: str) -> list[tuple[str, ...]]:
    """The nests of loops over index variables in ``--emit loops`` text (``x_<name>`` loops), outermost first."""
    out, stack = [], []
    for line in loops.splitlines():
        if not line.startswith(" "):  # a kernel's header, the host's: nests start over
            stack = []
        m = LOOP.match(line)
        if not m:
            continue
        depth = len(m[1])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        stack.append((depth, m[2]))
        out.append(tuple(v for _, v in stack))
    return out


def program(case: str, order: str) -> str:
    decl, stmt, _ = CASES[case]
    return f"{HEAD}{decl}\n{stmt}\nschedule C:\n    order {', '.join(order)}\n"


def dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_order_is_run_as_given_or_refused_at_the_directive(case):
    indices = "ijk" if "f" not in CASES[case][1] else "ikf"
    ran = set()
    for order in itertools.permutations(indices):
        prog = sd.loads(program(case, order), name="ordered.sdsl")
        try:
            kernel = prog.compile("numba", parallel=False)
        except sd.SdslError as exc:
            assert exc.span is not None and exc.span.line == 8 and exc.span.col == 5, str(exc)
            assert "cannot run the loops of 'C' in the order " + ", ".join(order) in str(exc)
            continue
        ran.add("".join(order))
        rank = {v: n for n, v in enumerate(order)}
        for nest in nests(kernel.executable.loops):
            nest = [v for v in nest if v in rank]  # (not a transposed copy's own loops)
            assert [rank[v] for v in nest] == sorted(rank[v] for v in nest), (order, nest, kernel.executable.loops)
        assert f"order {', '.join(order)}: applied" in prog.explain()
        want = prog.compile("ref")(**INPUTS)["C"]
        got = kernel(**INPUTS)["C"]
        if sp.issparse(want):
            assert sp.issparse(got)
            np.testing.assert_array_equal(sp.csr_array(got).indptr, sp.csr_array(want).indptr)
        np.testing.assert_allclose(dense(got), dense(want), rtol=1e-12)
    assert CASES[case][2] <= ran, (case, ran)


def test_the_order_decides_between_row_wise_and_inner_products():
    """``i, k, j``: a workspace keyed by j filled from A's row; ``i, j, k``: for each (i, j), A's row walked and
    j looked up in B's row k, no workspace."""
    gustavson = sd.loads(program("spgemm-csr", "ikj")).compile("numba").executable.loops
    inner = sd.loads(program("spgemm-csr", "ijk")).compile("numba").executable.loops

    def workspaces(loops):
        return [line for line in loops.splitlines() if line.strip().startswith("workspace ")]

    assert workspaces(gustavson) and not workspaces(inner) and "locate(idx_B" in inner
    assert ("i", "k", "j") in nests(gustavson) and ("i", "j", "k") in nests(inner)
    assert ("i", "j", "k") not in nests(gustavson) and ("i", "k", "j") not in nests(inner)


def test_a_reduction_over_several_indices_walks_them_in_the_order_given():
    src = ("input T: dense<f64>[N, K, L]\noutput y: dense<f64>[N]\ny[i] = sum[k, l] T[i, k, l] * T[i, k, l]\n"
           "schedule y:\n    order {}\n")
    T3 = RNG.random((4, 3, 5))
    for order in ("i, k, l", "i, l, k"):
        kernel = sd.loads(src.format(order)).compile("numba", parallel=False)
        assert tuple(order.split(", ")) in nests(kernel.executable.loops)
        np.testing.assert_allclose(kernel(T=T3)["y"], (T3 ** 2).sum(axis=(1, 2)))


def test_parallel_and_block_follow_the_outer_loop_an_order_gives():
    src = ("input A: csr<f64>[N, K]\ninput X: dense<f64>[K, F]\noutput Y: dense<f64>[N, F]\n"
           "Y[i, f] = sum[k] A[i, k] * X[k, f]\nschedule Y:\n    order f, i, k\n    parallel f\n    block f 2\n")
    prog = sd.loads(src)
    text = prog.explain()
    assert "parallel f: applied" in text and "block f 2: applied" in text
    np.testing.assert_allclose(prog.compile("numba")(A=A, X=X)["Y"], A @ X)


def test_an_ordered_intermediate_keeps_its_own_loops():
    """Fusion would run an intermediate inside its reader's loops, which an order on it asks not to: the
    fusion pass leaves it alone unless ``fuse`` forces it, and then the order is reported not applied."""
    base = (HEAD + "output Y: dense<f64>[N, J]\nC[i, j] = sum[k] A[i, k] * B[k, j]\nY[i, j] = C[i, j] * 2.0\n"
            "schedule C:\n    order i, j, k\n")
    alone = sd.loads(base).explain()
    assert "order i, j, k: applied" in alone and "computed inside Y" not in alone
    forced = sd.loads(base + "    fuse C, Y\n").explain()
    assert "computed inside Y" in forced and "order i, j, k: not applied" in forced
    want = 2.0 * (A @ B).toarray()
    for src in (base, base + "    fuse C, Y\n"):
        np.testing.assert_allclose(sd.loads(src).compile("numba", parallel=False)(**INPUTS)["Y"], want)


def test_a_refused_order_is_a_located_cli_diagnostic(tmp_path, capsys):
    from sparsedsl import cli

    path = tmp_path / "ordered.sdsl"
    path.write_text(program("spgemm-csr", "kij"))
    assert cli.main(["compile", str(path), "--target", "numba"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:8:5: error: the numba target cannot run the loops of 'C' in the order k, i, j")
    assert "    order k, i, j\n    ^" in err and "Traceback" not in err


def test_loop_order_rules():
    o = LoopOrder(("i", "k", "j"))
    assert o.free(("i", "j")) == ("i", "j") and LoopOrder(("j", "i")).free(("i", "j")) == ("j", "i")
    assert o.outside(("k",), "j") and not o.outside(("k",), "i") and not LoopOrder(("i", "j", "k")).outside(("k",), "j")
    assert o.follows(("i", "k", "j")) and o.follows(("i", "j")) and not o.follows(("k", "i"))
    # an index the order does not name (a fused producer's own reduction) constrains nothing
    assert o.follows(("i", "q", "k", "j")) and o.follows(("q", "i", "j")) and not o.follows(("q", "j", "i"))
    assert o.names(("i", "k")) and not o.names(("i", "q"))
    r = T.Reduce("sum", ("j", "k"), T.Lit(1.0, "f64"), "f64")
    assert o.reorder(r).vars == ("k", "j")
    argmax = T.Reduce("argmax", ("j", "k"), T.Lit(1.0, "f64"), "i64")
    assert o.reorder(argmax).vars == ("j", "k")  # which entry wins a tie depends on the walk: kept


def test_an_order_putting_columns_outermost_runs_on_intermediates_and_updates():
    """An intermediate (by format selection) and an accumulation's update (by lowering) are written by
    coordinate when their order puts a column loop outermost; a csr output cannot be, and is refused."""
    temp = (HEAD + "output Y: dense<f64>[N, J]\nT[i, j] = sum[k] A[i, k] * B[k, j]\nY[i, j] = T[i, j] * 2.0\n"
            "schedule T:\n    order j, i, k\n")
    update = ("input A: csr<f64>[N, K]\ninput X: dense<f64>[K, F]\noutput Y: dense<f64>[N, F]\n"
              "Y[i, f] = 1.0\nY[i, f] += sum[k] A[i, k] * X[k, f]\nschedule Y:\n    order f, i, k\n")
    for src, want in ((temp, 2.0 * (A @ B).toarray()), (update, 1.0 + A @ X)):
        prog = sd.loads(src)
        assert "applied" in prog.explain() and "bitmap" in prog.explain()
        np.testing.assert_allclose(prog.compile("numba")(**{k: v for k, v in INPUTS.items() if k in src})["Y"],
                                   want)
    with pytest.raises(sd.SdslError, match="compressed result is assembled row by row"):
        sd.loads(program("spgemm-csr", "jik")).compile("numba")


def test_parallel_on_a_free_index_puts_its_loop_outermost():
    """``parallel f`` without an order: the loop over f becomes the outermost one, split over the threads
    (a dense result); on a csr result the rows stay outermost and the directive is reported not applied."""
    src = ("input A: csr<f64>[N, K]\ninput X: dense<f64>[K, F]\noutput Y: dense<f64>[N, F]\n"
           "Y[i, f] = sum[k] A[i, k] * X[k, f]\nschedule Y:\n    parallel f\n")
    prog = sd.loads(src)
    kernel = prog.compile("numba")
    assert "parallel f: applied" in prog.explain()
    own = [n for n in nests(kernel.executable.loops) if "f" in n]  # (not a transposed copy's loops)
    assert own and all(n[0] == "f" for n in own), own
    wide = RNG.random((9, 40))  # more columns than one chunk, so both threads take some
    np.testing.assert_allclose(kernel(A=A, X=wide)["Y"], A @ wide)
    csr = sd.loads(program("spgemm-csr", "ikj").replace("    order i, k, j\n", "    parallel j\n"))
    assert "parallel j: not applied — a compressed result is assembled row by row" in csr.explain()
    np.testing.assert_allclose(csr.compile("numba")(**INPUTS)["C"].toarray(), (A @ B).toarray())


def test_an_order_a_softmax_cannot_follow_is_refused_at_the_directive():
    """softmax[j] needs its row's statistics before its coordinates: j iterated last. An order putting j
    outside is refused at the directive (it was refused at the statement, as if the program were at fault)."""
    src = ("input B: csr<f64>[N, K]\noutput X: dense<f64>[N, K]\nX[i, j] = softmax[j] B[i, j]\n"
           "schedule X:\n    order j, i\n")
    with pytest.raises(sd.SdslError) as err:
        sd.loads(src).compile("numba")
    assert err.value.span.line == 5, err.value.render()
    assert "cannot run the loops of 'X' in the order j, i: the softmax along 'j'" in str(err.value)
    fine = sd.loads(src.replace("order j, i", "order i, j"))
    B = sp.random_array((6, 5), density=0.5, format="csr", rng=RNG)
    np.testing.assert_allclose(fine.compile("numba")(B=B)["X"], fine.compile("ref")(B=B)["X"])
