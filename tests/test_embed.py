"""The embedded front end (``@sd.kernel``): same AST and IR as the text front end, right results, clear errors.

Each program is written twice, as .sdsl text and as a decorated Python function; the text parser's AST and the
traced AST must be equal (spans and the module name excluded), and both must print the same IR. Results of
the inferred-signature path are checked against scipy / numpy / networkx.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from sparsedsl.core.errors import SdslError, SdslNameError, SdslTypeError
from sparsedsl.frontend import embed as sd
from sparsedsl.frontend import syntax

THIS_FILE = str(Path(__file__))


def _parse(text: str) -> syntax.Module:
    from sparsedsl.frontend.parser import parse

    return parse(text, "<test>")


def _line_of(marker: str) -> int:
    """The line of this file holding ``marker`` (a comment on the statement an error must point at)."""
    lines = Path(__file__).read_text().splitlines()
    hits = [n for n, text in enumerate(lines, 1) if text.rstrip().endswith("# " + marker)]
    assert len(hits) == 1, marker
    return hits[0]


def assert_same_program(text: str, kern: sd.Kernel, *args):
    """Text and decorated kernel: equal AST bodies and identical printed IR."""
    from sparsedsl import api

    traced = kern.trace(*args)
    parsed = _parse(text)
    assert traced.body == parsed.body
    assert str(api.loads(text, name=kern.__name__).ir()) == str(kern.program(*args).ir())


# ---------------------------------------------------------------- the same program from both front ends

SPGEMM_TEXT = """
input  A: csr<f32>[M, K]
input  B: csr<f32>[K, N]
output C: csr<f32>[M, N]

C[i, j] = sum[k] A[i, k] * B[k, j]

schedule C:
    accumulator hash
"""


@sd.kernel
def spgemm(A: "csr<f32>[M, K]", B: "csr<f32>[K, N]"):
    i, j, k = sd.indices("i j k")
    C = sd.tensor("C", "csr<f32>[M, N]")
    C[i, j] = sd.sum(k, A[i, k] * B[k, j])
    sd.schedule(C, accumulator="hash")
    return C


def test_spgemm_same_as_text():
    assert_same_program(SPGEMM_TEXT, spgemm)


BLOCK_TEMP_TEXT = """
input A: bsr(4, 4)<f64>[N, N]
input X: dense<f64>[N, F]
output Y: dense<f64>[N, F]
T[i, j] = 3.0 * A[i, j]
Y[i, f] = sum[j] T[i, j] * X[j, f]

schedule T:
    format bsr(4, 4)
"""


@sd.kernel
def block_temp(A: "bsr(4, 4)<f64>[N, N]", X: "dense<f64>[N, F]"):
    i, j, f = sd.indices("i j f")
    T = sd.tensor("T")
    T[i, j] = 3.0 * A[i, j]
    Y = sd.tensor("Y", "dense<f64>[N, F]")
    Y[i, f] = sd.sum(j, T[i, j] * X[j, f])
    sd.schedule(T, "format bsr(4, 4)")
    return Y


def test_schedule_format_with_parameters_same_as_text():
    assert_same_program(BLOCK_TEMP_TEXT, block_temp)


ATTENTION_TEXT = """
input  G: csr<bool>[N, N]
input  Q: dense<f32>[N, D]
input  K: dense<f32>[N, D]
input  V: dense<f32>[N, D]
input  scale: f32 = 0.125
output O: dense<f32>[N, D]

S[i, j] = scale * sum[d] Q[i, d] * K[j, d] where G[i, j]     # SDDMM
P[i, j] = softmax[j] S[i, j]                                  # over stored entries only
O[i, d] = sum[j] P[i, j] * V[j, d]                            # SpMM
"""


@sd.kernel
def attention(G: "csr<bool>[N, N]", Q: "dense<f32>[N, D]", K: "dense<f32>[N, D]", V: "dense<f32>[N, D]",
              scale: "f32" = 0.125):
    i, j, d = sd.indices("i j d")
    S, P = sd.tensor("S"), sd.tensor("P")
    O = sd.tensor("O", "dense<f32>[N, D]")
    S[i, j] = sd.where(scale * sd.sum(d, Q[i, d] * K[j, d]), G[i, j])
    P[i, j] = sd.softmax(j, S[i, j])
    O[i, d] = sd.sum(j, P[i, j] * V[j, d])
    return O


def test_attention_same_as_text():
    assert_same_program(ATTENTION_TEXT, attention)


TRIANGLES_TEXT = """
input  A: csr<f64>[N, N]
output T

L[i, j] = A[i, j] where j < i
C[i, j] = sum[k] L[i, k] * L[j, k] where L[i, j]
T = sum[i, j] C[i, j]
"""


def _triangles(A):
    i, j, k = sd.indices("i j k")
    L, C, T = sd.tensor("L"), sd.tensor("C"), sd.tensor("T")
    L[i, j] = sd.where(A[i, j], j < i)
    C[i, j] = sd.where(sd.sum(k, L[i, k] * L[j, k]), L[i, j])
    T[...] = sd.sum((i, j), C[i, j])
    return T


def _copy(fn, **annotations):
    """The same function with other annotations (none: every type is inferred from the call's values)."""
    twin = type(fn)(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    twin.__annotations__ = dict(annotations)
    return twin


def _with_annotations(fn, **annotations):
    return sd.kernel(_copy(fn, **annotations))


def test_masked_triangle_count_same_as_text():
    triangles_annotated = _with_annotations(_triangles, A="csr<f64>[N, N]")
    assert_same_program(TRIANGLES_TEXT, triangles_annotated)


ARGMAX_TEXT = """
input  X: dense<f32>[N, F]
output m
output a

m[i] = max[f] X[i, f]
a[i] = argmax[f] X[i, f] where count[f] (X[i, f] where X[i, f] > 0.0) >= 1
"""


@sd.kernel
def row_max(X: "dense<f32>[N, F]"):
    i, f = sd.indices("i f")
    m, a = sd.tensor("m"), sd.tensor("a")
    m[i] = sd.max(f, X[i, f])
    a[i] = sd.where(sd.argmax(f, X[i, f]), sd.count(f, X[i, f].where(X[i, f] > 0.0)) >= 1)
    return m, a


def test_reduction_with_argmax_same_as_text():
    assert_same_program(ARGMAX_TEXT, row_max)


TOPK_TEXT = """
input  W: dense<f32>[R, C]
output P: csr<f32>[R, C]

P[i, j] = W[i, j] where topk[j](2, group=4) abs(W[i, j])
"""


@sd.kernel
def prune_2_4(W: "dense<f32>[R, C]"):
    i, j = sd.indices("i j")
    P = sd.tensor("P", "csr<f32>[R, C]")
    P[i, j] = sd.where(W[i, j], sd.topk(j, 2, sd.abs(W[i, j]), group=4))
    return P


def test_topk_with_group_same_as_text():
    assert_same_program(TOPK_TEXT, prune_2_4)


GATHER_TEXT = """
input  X: dense<f64>[N, F]
input  P: dense<i64>[N]
output Y: dense<f64>[N, F]

Y[i, f] = X[P[i], f] - X[i + 1, f] + 2 * X[i, f]
"""


@sd.kernel
def gather_shift(X: "dense<f64>[N, F]", P: "dense<i64>[N]"):
    i, f = sd.indices("i f")
    Y = sd.tensor("Y", "dense<f64>[N, F]")
    Y[i, f] = X[P[i], f] - X[i + 1, f] + 2 * X[i, f]
    return Y


def test_gather_and_shift_same_as_text():
    assert_same_program(GATHER_TEXT, gather_shift)


BLOCKS_TEXT = """
input  x: dense<f32>[N]
output s: dense<f32>[G]
output z

s[g] = sum[r] x[4 * g + r] where r < 4
z = sum[g] (s[g] where not (g % 2 == 0) or g >= 3)
"""


def test_affine_access_and_index_predicates_same_ast():
    @sd.kernel
    def blocks(x: "dense<f32>[N]"):
        g, r = sd.indices("g r")
        s = sd.tensor("s", "dense<f32>[G]")
        z = sd.tensor("z")
        s[g] = sd.where(sd.sum(r, x[4 * g + r]), r < 4)
        z[()] = sd.sum(g, s[g].where(sd.or_(~(g % 2 == 0), g >= 3)))
        return s, z

    assert blocks.trace().body == _parse(BLOCKS_TEXT).body


PAGERANK_TEXT = """
input  A: csr<f64>[N, N]
input  alpha: f64 = 0.85
output r: dense<f64>[N]

outdeg[i] = sum[j] A[i, j]
r[i] = 1.0 / f64(N)
repeat at most 200 until err < 1e-12:
    dangling = sum[i] (r[i] where not outdeg[i])
    c[j] = sum[i] r[i] * A[i, j] / outdeg[i]
    rn[j] = alpha * fill(c[j], 0.0) + (alpha * dangling + 1.0 - alpha) / f64(N)
    err = sum[j] abs(rn[j] - r[j])
    r = rn
"""


def _pagerank(A, alpha=0.85):
    i, j = sd.indices("i j")
    # the shape's size is the name N when A is annotated and the literal extent when inferred from a value
    outdeg, r = sd.tensor("outdeg"), sd.tensor("r", f"dense<f64>[{A.shape[0]}]")
    dangling, c, rn, err = sd.tensor("dangling"), sd.tensor("c"), sd.tensor("rn"), sd.tensor("err")
    n = sd.f64(A.shape[0])
    outdeg[i] = sd.sum(j, A[i, j])
    r[i] = 1.0 / n
    with sd.repeat(at_most=200) as loop:
        dangling[...] = sd.sum(i, r[i].where(sd.not_(outdeg[i])))
        c[j] = sd.sum(i, r[i] * A[i, j] / outdeg[i])
        rn[j] = alpha * sd.fill(c[j], 0.0) + (alpha * dangling + 1.0 - alpha) / n
        err[...] = sd.sum(j, sd.abs(rn[j] - r[j]))
        r[...] = rn
        loop.until(err < 1e-12)
    return r


def test_scalar_default_and_repeat_same_as_text():
    # a scalar input with a Python default becomes `input alpha: f64 = 0.85`
    pagerank = _with_annotations(_pagerank, A="csr<f64>[N, N]", alpha="f64")
    assert_same_program(PAGERANK_TEXT, pagerank)


def test_whole_tensor_sugar_and_accumulation_same_ast():
    text = """
input  A: csr<f32>[N, N]
input  B: csr<f32>[N, N]
input  M: csr<bool>[N, N]
output X
output Y: csr<f32>[N, N]
output D: dense<f32>[N, N] fill inf

X = A @ B.T where M
Y[i, j] = A[i, j] * -1.5
Y[i, j] += B[i, j] where not M[i, j]
Y[i, j] max= (A[i, j] where M[i, j])
D[i, j] = min(A[i, j], pow(f32(i), 2))
D[i, j] min= B[i, j]
"""

    @sd.kernel
    def sugar(A: "csr<f32>[N, N]", B: "csr<f32>[N, N]", M: "csr<bool>[N, N]"):
        i, j = sd.indices("i j")
        X, Y = sd.tensor("X"), sd.tensor("Y", "csr<f32>[N, N]")
        D = sd.tensor("D", "dense<f32>[N, N]", fill=float("inf"))
        X[...] = sd.where(A @ B.T, M)
        Y[i, j] = A[i, j] * -1.5
        Y[i, j] += sd.where(B[i, j], ~M[i, j])
        sd.accumulate(Y[i, j], A[i, j].where(M[i, j]), op="max")
        D[i, j] = sd.minimum(A[i, j], sd.f32(i) ** 2)
        sd.accumulate(D[i, j], B[i, j], op="min")
        return X, Y, D

    assert sugar.trace().body == _parse(text).body  # `x ** 2` is recorded as pow(x, 2)


# ---------------------------------------------------------------- the inferred-signature path, against scipy/numpy

def _rand_csr(rng, m, n, density, dtype=np.float64):
    mat = sp.random(m, n, density=density, format="csr", dtype=dtype, random_state=rng)
    mat.data[:] = rng.uniform(0.5, 2.0, mat.nnz)
    return mat


def test_inferred_types_from_values():
    rng = np.random.default_rng(0)
    A = _rand_csr(rng, 5, 4, 0.5, np.float32)
    B = sp.csc_matrix(_rand_csr(rng, 4, 6, 0.5))
    mod = spgemm_untyped.trace(A, B)
    decls = {s.name: s for s in mod.body if isinstance(s, syntax.InputDecl)}
    assert decls["A"].type == syntax.TypeExpr("f32", syntax.FormatExpr("csr"), (5, 4))
    assert decls["B"].type == syntax.TypeExpr("f64", syntax.FormatExpr("csc"), (4, 6))
    assert sd.type_of(np.zeros((2, 3), dtype=np.int32)) == syntax.TypeExpr("i32", syntax.FormatExpr("dense"), (2, 3))
    assert sd.type_of(1.5) == syntax.TypeExpr("f64")
    assert sd.type_of(3) == syntax.TypeExpr("i64")
    assert sd.type_of(True) == syntax.TypeExpr("bool")
    assert sd.type_of(np.float32(2)) == syntax.TypeExpr("f32")
    bsr = sp.bsr_matrix(np.ones((4, 6)), blocksize=(2, 3))
    assert sd.type_of(bsr) == syntax.TypeExpr("f64", syntax.FormatExpr("bsr", (2, 3)), (4, 6))
    with pytest.raises(SdslError, match="cannot infer a sparsedsl type"):
        sd.type_of("text")


@sd.kernel
def spgemm_untyped(A, B):
    i, j, k = sd.indices("i j k")
    C = sd.tensor("C")
    C[i, j] = sd.sum(k, A[i, k] * B[k, j])
    return C


def _dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def test_spgemm_matches_scipy_and_caches_per_signature():
    rng = np.random.default_rng(1)
    A, B = _rand_csr(rng, 7, 5, 0.4), _rand_csr(rng, 5, 6, 0.4)
    kern = sd.kernel(spgemm_untyped.fn)
    C = kern(A, B)
    np.testing.assert_allclose(_dense(C), (A @ B).toarray(), rtol=1e-12)
    kern(_rand_csr(rng, 7, 5, 0.4), B=_rand_csr(rng, 5, 6, 0.4))
    assert len(kern._compiled) == 1
    A2 = _rand_csr(rng, 3, 5, 0.5)
    np.testing.assert_allclose(_dense(kern(A2, B)), (A2 @ B).toarray(), rtol=1e-12)
    assert len(kern._compiled) == 2


def test_attention_matches_numpy():
    rng = np.random.default_rng(2)
    n, d = 6, 3
    G = _rand_csr(rng, n, n, 0.4)
    G.data[:] = 1.0
    G = G.astype(bool)
    Q, K, V = (rng.standard_normal((n, d)) for _ in range(3))

    @sd.kernel
    def attn(G, Q, K, V, scale=0.5):
        i, j, e = sd.indices("i j e")
        S, P, O = sd.tensor("S"), sd.tensor("P"), sd.tensor("O")
        S[i, j] = sd.where(scale * sd.sum(e, Q[i, e] * K[j, e]), G[i, j])
        P[i, j] = sd.softmax(j, S[i, j])
        O[i, e] = sd.sum(j, P[i, j] * V[j, e])
        return O

    scores = 0.5 * Q @ K.T
    mask = G.toarray()
    expect = np.zeros((n, d))
    for row in range(n):
        cols = np.flatnonzero(mask[row])
        if cols.size:
            w = np.exp(scores[row, cols] - scores[row, cols].max())
            expect[row] = (w / w.sum()) @ V[cols]
    np.testing.assert_allclose(_dense(attn(G, Q, K, V)), expect, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_dense(attn(G, Q, K, V, scale=0.0)),
                               np.array([V[np.flatnonzero(mask[r])].mean(0) if mask[r].any() else np.zeros(d)
                                         for r in range(n)]), rtol=1e-10, atol=1e-12)


def test_triangle_count_matches_networkx():
    graph = nx.karate_club_graph()
    A = sp.csr_matrix(nx.to_scipy_sparse_array(graph, weight=None, dtype=np.float64))
    count = sd.kernel(_triangles)(A)
    assert float(np.asarray(count)) == sum(nx.triangles(graph).values()) // 3 == 45


def test_argmax_and_max_match_numpy():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5, 4)).astype(np.float32)
    X[2] = -np.abs(X[2])  # a row without positive entries: a is absent there (stored as 0 in a dense output)
    m, a = sd.kernel(_copy(row_max.fn))(X)
    np.testing.assert_allclose(_dense(m), X.max(axis=1), rtol=1e-6)
    expect = np.where((X > 0).any(axis=1), X.argmax(axis=1), 0)
    assert np.array_equal(np.asarray(_dense(a)).ravel(), expect)


def test_topk_group_matches_numpy():
    rng = np.random.default_rng(4)
    W = rng.standard_normal((3, 8))
    P = prune_2_4(W)  # annotated: the shape-generic program, W converted from f64 to f32
    keep = np.zeros_like(W, dtype=bool)
    for r in range(3):
        for g in range(0, 8, 4):
            block = np.abs(W[r, g:g + 4])
            keep[r, g + np.argsort(-block, kind="stable")[:2]] = True
    assert sp.issparse(P) or isinstance(P, np.ndarray)
    np.testing.assert_array_equal(_dense(P), np.where(keep, W.astype(np.float32), 0.0))


def test_gather_matches_numpy():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((5, 3))
    perm = rng.permutation(5).astype(np.int64)
    Y = gather_shift(X, perm)
    shifted = np.vstack([X[1:], np.zeros((1, 3))])
    np.testing.assert_allclose(_dense(Y), X[perm] - shifted + 2 * X, rtol=1e-12)


def test_pagerank_matches_networkx():
    graph = nx.gnp_random_graph(30, 0.1, seed=7, directed=True)
    A = sp.csr_matrix(nx.to_scipy_sparse_array(graph, nodelist=range(30), weight=None, dtype=np.float64))
    pagerank = sd.kernel(_pagerank)
    ranks = np.asarray(_dense(pagerank(A)))
    expect = nx.pagerank(graph, alpha=0.85, tol=1e-14, max_iter=1000)
    np.testing.assert_allclose(ranks, [expect[v] for v in range(30)], rtol=1e-8, atol=1e-12)


def test_python_scalars_and_dict_result():
    @sd.kernel
    def scaled(x, a, flag):
        i, = sd.indices("i")
        y, s = sd.tensor("y"), sd.tensor("s")
        y[i] = sd.select(flag, a * x[i], -x[i])
        s[()] = sd.sum(i, y[i])
        return {"y": y, "s": s}

    x = np.arange(4, dtype=np.float64)
    decls = {d.name: d.type.dtype for d in scaled.trace(x, 2, True).body if isinstance(d, syntax.InputDecl)}
    assert decls == {"x": "f64", "a": "i64", "flag": "bool"}
    out = scaled(x, 3, True)
    np.testing.assert_allclose(_dense(out["y"]), 3 * x)
    assert float(np.asarray(out["s"])) == 18.0
    out = scaled(x, 3, False)
    np.testing.assert_allclose(_dense(out["y"]), -x)


# ---------------------------------------------------------------- errors at the user's Python line

def test_python_and_if_on_proxies_are_errors():
    @sd.kernel
    def uses_and(A: "csr<f32>[N, N]"):
        i, j = sd.indices("i j")
        C = sd.tensor("C")
        C[i, j] = A[i, j] and A[j, i]  # marker: python-and
        return C

    with pytest.raises(SdslError, match=r"sd\.and_") as info:
        uses_and.trace()
    assert info.value.file == THIS_FILE and info.value.line == _line_of("marker: python-and")

    @sd.kernel
    def uses_if(A: "csr<f32>[N, N]"):
        i, j = sd.indices("i j")
        C = sd.tensor("C")
        if A[i, j] > 0:  # marker: python-if
            C[i, j] = A[i, j]
        return C

    with pytest.raises(SdslError, match="no truth value") as info:
        uses_if.trace()
    assert info.value.line == _line_of("marker: python-if")


def test_checker_errors_point_at_the_python_line():
    @sd.kernel
    def wrong_rank(A: "csr<f32>[N, N]"):
        i, j = sd.indices("i j")
        C = sd.tensor("C")
        C[i, j] = A[i] * 2.0  # marker: wrong-rank
        return C

    with pytest.raises(SdslError) as info:
        wrong_rank.program()
    err = info.value
    assert err.file == THIS_FILE and err.line == _line_of("marker: wrong-rank")
    assert "C[i, j] = A[i] * 2.0" in err.render()

    @sd.kernel
    def unbound(A: "csr<f32>[N, N]"):
        i, j, k = sd.indices("i j k")
        C = sd.tensor("C")
        C[i, j] = A[i, k]  # marker: unbound-index
        return C

    with pytest.raises(SdslError) as info:
        unbound.program()
    assert info.value.file == THIS_FILE and info.value.line == _line_of("marker: unbound-index")


@pytest.mark.parametrize("body, message, error", [
    ("C = sd.tensor('sum')", "keyword", SdslNameError),
    ("C = sd.tensor('A')", "already declared", SdslNameError),
    ("C = sd.tensor('C', 'csr<f32>[N, N]'); T = sd.tensor('T', 'f32'); C[i, j] = A[i, j]; T[()] = 1.0",
     "not returned", SdslTypeError),
    ("C = sd.tensor('C'); C[i, j] = A[:, j]", "slices", SdslError),
    ("C = sd.tensor('C'); C[i, j] = sd.max(A[i, j], A[j, i])", "sd.maximum", SdslError),
    ("C = sd.tensor('C'); C[i, 0] = A[i, j]", "index variables only", SdslError),
    ("C = sd.tensor('C'); A[i, j] = C[i, j]", "cannot be assigned", SdslError),
    ("C = sd.tensor('C'); C[i, j] = A[i, j] ^ A[j, i]", "not an operator", SdslError),
    ("C = sd.tensor('C'); C[i, j] = A[i, j]; C[i, j] -= A[i, j]", "not an accumulation", SdslError),
    ("C = sd.tensor('C'); C[i, j] = A[i, j] * 'x'", "Python type str", SdslTypeError),
])
def test_tracing_errors(body, message, error):
    namespace = {"sd": sd}
    exec(compile(f"def f(A: 'csr<f32>[N, N]'):\n    i, j = sd.indices('i j')\n    {body}\n    return C\n",
                 "<kernel>", "exec"), namespace)
    with pytest.raises(error, match=message):
        sd.kernel(namespace["f"]).trace()


def test_returns_and_declarations_outside_a_kernel():
    with pytest.raises(SdslError, match="inside the body of an @sd.kernel"):
        sd.tensor("C")
    with pytest.raises(SdslError, match="inside the body of an @sd.kernel"):
        sd.indices("i j")

    @sd.kernel
    def returns_input(A: "f32"):
        return A

    with pytest.raises(SdslError, match="returns an input"):
        returns_input.trace()

    @sd.kernel
    def returns_nothing(A: "f32"):
        sd.tensor("C")

    with pytest.raises(SdslError, match="returns nothing"):
        returns_nothing.trace()

    @sd.kernel
    def missing(A):
        C = sd.tensor("C")
        C[()] = A
        return C

    with pytest.raises(SdslError, match="no type annotation") as info:
        missing.trace()
    assert info.value.line == inspect.getsourcelines(missing.fn)[1] + 1


def test_bad_annotation_is_reported_at_the_def():
    @sd.kernel
    def bad(A: "csr<f32>[N,", B: "f32"):
        C = sd.tensor("C")
        C[()] = B
        return C

    with pytest.raises(SdslError, match="bad type") as info:
        bad.trace()
    assert info.value.file == THIS_FILE
    assert info.value.line == inspect.getsourcelines(bad.fn)[1] + 1


def test_no_state_shared_between_kernels():
    # two traces of the same function are independent: names may be reused, statements do not leak
    first = spgemm.trace()
    second = spgemm.trace()
    assert first.body == second.body
    assert sum(isinstance(s, syntax.Assign) for s in second.body) == 1
    assert not any(isinstance(v, sd._Trace) for v in vars(sd).values())


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_inferred_types_of_torch_and_networkx_values():
    torch = pytest.importorskip("torch")
    dense = torch.zeros((3, 4), dtype=torch.float32)
    assert sd.type_of(dense) == syntax.TypeExpr("f32", syntax.FormatExpr("dense"), (3, 4))
    assert sd.type_of(dense.to_sparse_csr()) == syntax.TypeExpr("f32", syntax.FormatExpr("csr"), (3, 4))
    assert sd.type_of(dense.to_sparse_coo()) == syntax.TypeExpr("f32", syntax.FormatExpr("coo"), (3, 4))
    assert sd.type_of(torch.zeros((4, 4), dtype=torch.bfloat16).to_sparse_bsr((2, 2))) == \
        syntax.TypeExpr("bf16", syntax.FormatExpr("bsr", (2, 2)), (4, 4))
    assert sd.type_of(nx.path_graph(5)) == syntax.TypeExpr("bool", syntax.FormatExpr("csr"), (5, 5))
    weighted = nx.Graph()
    weighted.add_edge(0, 1, weight=2.5)
    assert sd.type_of(weighted) == syntax.TypeExpr("f64", syntax.FormatExpr("csr"), (2, 2))
    with pytest.raises(SdslError, match="complex128"):
        sd.type_of(np.zeros(3, dtype=np.complex128))


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_torch_inputs_give_torch_outputs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    A = _rand_csr(rng, 4, 5, 0.5)
    B = rng.standard_normal((5, 3))
    C = sd.kernel(spgemm_untyped.fn)(torch.from_numpy(A.toarray()).to_sparse_csr(), torch.from_numpy(B))
    assert isinstance(C, torch.Tensor)
    dense = C.to_dense() if C.layout != torch.strided else C
    np.testing.assert_allclose(dense.numpy(), A.toarray() @ B, rtol=1e-12)


def test_keyword_only_parameters_float_defaults_and_whole_tensor_accumulation():
    A = sp.csr_array(np.array([[1.0, 0.0], [2.0, 3.0]]))

    @sd.kernel
    def scaled(A, alpha=0.5, *, beta=1.0):
        i, j = sd.indices("i j")
        C = sd.tensor("C")
        C[i, j] = alpha * beta * A[i, j]
        return C

    # an int passed where the default is a float makes a float parameter; keyword-only parameters are inputs
    np.testing.assert_allclose(scaled(A, 2, beta=3.0).toarray(), 6.0 * A.toarray())
    np.testing.assert_allclose(scaled(A).toarray(), 0.5 * A.toarray())

    @sd.kernel
    def summed(A, B):
        i, j = sd.indices("i j")
        C = sd.tensor("C")
        C[i, j] = A[i, j]
        C += B  # the whole-tensor accumulation `C += B` of the text language
        return C

    np.testing.assert_allclose(summed(A, A).toarray(), 2.0 * A.toarray())

    @sd.kernel
    def wrong(A):
        i, j = sd.indices(5)
        return A

    with pytest.raises(sd.SdslError, match="sd.indices takes names"):
        wrong(A)


def test_indexing_an_entry_and_a_reduction_without_its_expression_are_diagnostics():
    A = sp.csr_array(np.eye(3))

    @sd.kernel
    def twice_indexed(A):
        i, j = sd.indices("i j")
        C = sd.tensor("C")
        C[i, j] = A[i][j]
        return C

    @sd.kernel
    def no_body(A):
        i, j = sd.indices("i j")
        C = sd.tensor("C")
        C[i] = sd.sum(A[i, j])
        return C

    with pytest.raises(SdslError, match="only named tensors can be indexed") as info:
        twice_indexed(A)
    assert info.value.line is not None
    with pytest.raises(SdslError, match=r"sd.sum takes the index \(or indices\) it reduces and the expression"):
        no_body(A)


def test_a_proxy_kept_from_another_kernel_is_a_diagnostic():
    """A tensor or index proxy kept after its kernel returned (in a dict, a closure) used to record into that
    finished trace: nothing reached the program being traced. Using it, or mixing it into another kernel's
    statement, is now an error at the line that does it."""
    A = sp.csr_array(np.eye(3))
    kept = {}

    @sd.kernel
    def first(A):
        i, j = sd.indices("i j")
        kept.update(A=A, i=i, j=j)
        C = sd.tensor("C")
        C[i, j] = A[i, j] * 2.0
        return C

    @sd.kernel
    def second(B):
        i, j = sd.indices("i j")
        D = sd.tensor("D")
        D[i, j] = kept["A"][i, j] + B[i, j]
        return D

    @sd.kernel
    def third(B):
        D = sd.tensor("D")
        D[kept["i"], kept["j"]] = B[kept["i"], kept["j"]]
        return D

    np.testing.assert_array_equal(first(A).toarray(), 2 * np.eye(3))
    with pytest.raises(SdslError, match="mixes tensors or indices of two kernels") as info:
        second(A)
    assert info.value.line is not None
    with pytest.raises(SdslError, match="mixes tensors or indices of two kernels"):
        third(A)
    with pytest.raises(SdslError, match="kernel 'first', whose tracing has finished"):
        kept["A"][kept["i"], kept["j"]]
