"""Kernel subscripts printed unsigned (``backends/numba/subscripts.py``): the rewrite of one printed line, its
meaning kept (random lines evaluated before and after on numpy arrays), and where the code generator applies
it (kernels only, not the host's ``run``)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import sparsedsl as sd
from sparsedsl.backends.numba.subscripts import signed_subscripts, unsigned_subscripts

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("line, expected", [
    ("y[i] = a[i, j] + b[0]", "y[_u(i)] = a[_u(i), _u(j)] + b[0]"),
    ("y[(i + 1)] = 2", "y[_u((i + 1))] = 2"),
    ("a[b[i] + 1] += 1", "a[_u(b[_u(i)] + 1)] += 1"),
    ("c[lo:hi] = d[lo:lo + n]", "c[lo:hi] = d[lo:lo + n]"),
    ("c[a[i]:a[i + 1]] = 0", "c[a[_u(i)]:a[_u(i + 1)]] = 0"),
    ("n = x.shape[1] + x.shape[k]", "n = x.shape[1] + x.shape[k]"),
    ("t = a[-1] + a[n - 1]", "t = a[-1] + a[_u(n - 1)]"),
    ("f(a[i], 'b[j]')  # c[k]", "f(a[_u(i)], 'b[j]')  # c[k]"),
    ("v = np.float64(1e-3) * w[k]", "v = np.float64(1e-3) * w[_u(k)]"),
    ("m = min(p[i], q[_u(j)])", "m = min(p[_u(i)], q[_u(j)])"),
    ("for t in range(n):", "for t in range(n):"),
])
def test_rewrite_of_one_line(line, expected):
    assert unsigned_subscripts(line) == expected
    if "_u(" not in line:
        assert signed_subscripts(expected) == line


def test_rewrite_is_idempotent():
    line = "w_val[w_k] = w_val[w_k] + val_A[p] * x[idx_A[p], d]"
    once = unsigned_subscripts(line)
    assert unsigned_subscripts(once) == once
    assert once == "w_val[_u(w_k)] = w_val[_u(w_k)] + val_A[_u(p)] * x[_u(idx_A[_u(p)]), _u(d)]"


# random expressions over arrays a (1-D) and m (2-D) of small non-negative ints, and variables i, j: the
# rewritten text must evaluate to the same value (numpy takes uint64 indices as the kernel does)
_N = 6
_vars = st.sampled_from(["i", "j", "3", "(i + 1)", "(j * 2)"])


def _index(depth: int):
    if depth == 0:
        return _vars
    sub = _index(depth - 1)
    return st.one_of(_vars, st.builds(lambda x: f"a[{x}]", sub), st.builds(lambda x, y: f"m[{x}, {y}]", sub, sub),
                     st.builds(lambda x: f"min({x}, 5)", sub))


@settings(max_examples=200, deadline=None)
@given(expr=_index(3), i=st.integers(0, 2), j=st.integers(0, 2))
def test_rewrite_keeps_meaning(expr, i, j):
    rng = np.random.default_rng(0)
    env = {"a": rng.integers(0, _N, size=4 * _N), "m": rng.integers(0, _N, size=(4 * _N, 4 * _N)), "i": i, "j": j,
           "min": min, "_u": np.uint64}
    expr = f"a[{expr}]"
    rewritten = unsigned_subscripts(expr)
    assert not re.findall(r"\[(?!_u\(|\d+[\],])", rewritten)  # every first position wrapped but the literals
    assert eval(rewritten, env) == eval(expr, env)  # noqa: S307 - test-built text
    assert signed_subscripts(rewritten) == expr


def test_kernels_index_unsigned_and_the_host_does_not():
    src = sd.loads("""
input  A: csr<f64>[N, M]
input  x: dense<f64>[M]
output y: dense<f64>[N]
y[i] = sum[j] A[i, j] * x[j]
""").compile("numba").executable.source
    kernel = src[src.index("def k0_"):src.index("def run(")]
    host = src[src.index("def run("):]
    assert "_u = np.uint64" in src
    # every subscript of a plain name in the kernel is unsigned or a literal or a slice
    for m in re.finditer(r"(?<![.\w])([A-Za-z_]\w*)\[([^\[\]]*)", kernel):
        first = m.group(2).split(",")[0].strip()
        assert first.startswith("_u(") or first.lstrip("-").isdigit() or ":" in first, m.group(0)
    assert "val_x[_u(" in kernel
    assert "_u(" not in host


def test_empty_and_single_entry_rows_still_right():
    """A kernel whose positions start at the end of the index array (empty trailing rows) and a single
    entry: unsigned positions read nothing out of range."""
    import scipy.sparse as sp

    k = sd.loads("""
input  A: csr<f64>[N, N]
output C: csr<f64>[N, N]
C[i, j] = sum[k] A[i, k] * A[k, j]
""").compile("numba")
    for A in (sp.csr_array((5, 5)), sp.csr_array(([2.0], ([4], [4])), shape=(5, 5)),
              sp.csr_array(([1.0, 3.0], ([0, 0], [0, 4])), shape=(5, 5))):
        C = k(A=A).C
        np.testing.assert_array_equal(C.toarray(), (A @ A).toarray())


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "examples").glob("*.sdsl")))
def test_a_whole_module_differs_only_by_the_wraps(name, monkeypatch):
    """Each example's generated module, wraps taken off, is the module printed without them: the rewrite
    touches subscripts and nothing else (every statement shape the examples print)."""
    import sparsedsl.backends.numba as numba_backend
    import sparsedsl.backends.numba.codegen as codegen

    ir = sd.load(str(ROOT / "examples" / f"{name}.sdsl")).ir().program
    wrapped = numba_backend.render(ir)
    monkeypatch.setattr(codegen, "unsigned_subscripts", lambda line: line)
    plain = numba_backend.render(ir)
    assert wrapped != plain or "def k0_" not in plain
    kept = [ln for ln in signed_subscripts(wrapped).splitlines()
            if ln != "_u = np.uint64" and not ln.startswith("# kernels index with unsigned")]
    assert kept == [ln for ln in plain.splitlines()
                    if ln != "_u = np.uint64" and not ln.startswith("# kernels index with unsigned")]
