"""The checker's rewrites and typing: what each construct becomes in the tensor IR."""
import pytest

from sparsedsl.frontend.parser import parse
from sparsedsl.tensor_ir import nodes as N
from sparsedsl.tensor_ir.check import check_function, check_module
from sparsedsl.tensor_ir.loader import ModuleLoader
from sparsedsl.tensor_ir.printer import format_program


def check(src, tmp_path=None, name="prog.sdsl"):
    loader = ModuleLoader([tmp_path] if tmp_path else [], use_env=False)
    return check_module(parse(src, name), loader)


def stmt(prog, target):
    for s in prog.body:
        if isinstance(s, N.Assign) and s.target == target:
            return s
    raise KeyError(target)


SPGEMM = """
input  A: csr<f32>[M, K]
input  B: csr<f32>[K, N]
output C: csr<f32>[M, N]
C[i, j] = sum[k] A[i, k] * B[k, j]
schedule C:
    accumulator hash
"""


def test_spgemm_types_and_ranges():
    p = check(SPGEMM)
    s = stmt(p, "C")
    assert dict(s.ranges) == {"i": "M", "j": "N", "k": "K"}
    assert isinstance(s.value, N.Reduce) and s.value.op == "sum" and s.value.vars == ("k",)
    assert s.value.dtype == "f32"
    assert p.sizes == ("M", "K", "N")
    assert p.schedules[0].directives[0].args == ("hash",)


def test_matmul_sugar_equals_index_notation():
    sugar = check("input A: csr<f32>[M, K]\ninput B: csr<f32>[K, N]\noutput C: csr<f32>[M, N]\nC = A @ B\n")
    explicit = check("input A: csr<f32>[M, K]\ninput B: csr<f32>[K, N]\noutput C: csr<f32>[M, N]\n"
                     "C[i, j] = sum[k] A[i, k] * B[k, j]\n")
    assert stmt(sugar, "C").value == stmt(explicit, "C").value


def test_vector_dot_sugar_is_a_scalar_sum():
    sugar = check("input v: dense<f64>[K]\ninput w: coo<f64>[K]\noutput d\nd = v @ w + 1.0\n")
    explicit = check("input v: dense<f64>[K]\ninput w: coo<f64>[K]\noutput d\nd = sum[k] v[k] * w[k] + 1.0\n")
    assert stmt(sugar, "d").value == stmt(explicit, "d").value
    assert sugar.decl("d").type.rank == 0


def test_transpose_and_elementwise_sugar():
    p = check("input A: csr<f32>[N, N]\ninput B: csr<f32>[N, N]\noutput C\nC = A.T + 2 * B\n")
    v = stmt(p, "C").value
    assert v == N.Binary("+", N.Access("A", (N.IndexVal("j"), N.IndexVal("i")), "f32"),
                         N.Binary("*", N.Lit(2.0, "f32"), N.Access("B", (N.IndexVal("i"), N.IndexVal("j")), "f32"),
                                  "f32"), "f32")
    # a union of sparse operands is not statically full: the untyped output becomes csr
    assert p.decl("C").type.format.name == "csr"


def test_masked_matmul_sugar():
    p = check("input L: csr<f64>[N, N]\noutput C\nC = L @ L.T where L\n")
    v = stmt(p, "C").value
    assert isinstance(v, N.Where) and isinstance(v.mask, N.MaskPresent)
    assert v.mask.expr == N.Access("L", (N.IndexVal("i"), N.IndexVal("j")), "f64")


def test_literals_adopt_operand_dtype():
    p = check("input x: dense<i8>[N]\ninput h: dense<f16>[N]\noutput a\noutput b\noutput c\n"
              "a[i] = x[i] * 2\nb[i] = h[i] * 0.5\nc[i] = x[i] * 0.5\n")
    assert stmt(p, "a").value.dtype == "i8"
    assert stmt(p, "b").value.dtype == "f16"
    assert stmt(p, "c").value.dtype == "f64"


def test_promotion_rules():
    p = check("input a: dense<bf16>[N]\ninput b: dense<f16>[N]\ninput c: dense<i32>[N]\ninput d: dense<bool>[N]\n"
              "output s\noutput t\noutput u\noutput v\n"
              "s[i] = a[i] + b[i]\nt[i] = c[i] / c[i]\nu[i] = d[i] + d[i]\nv[i] = c[i] < 3\n")
    assert stmt(p, "s").value.dtype == "f32"
    assert stmt(p, "t").value.dtype == "f64"
    assert stmt(p, "u").value.dtype == "i64"
    assert stmt(p, "v").value.dtype == "bool"


def test_reduction_result_dtypes():
    p = check("input A: csr<i32>[M, N]\noutput s\noutput m\noutput c\noutput g\n"
              "s[i] = sum[j] A[i, j]\nm[i] = mean[j] A[i, j]\nc[i] = count[j] A[i, j]\ng[i] = argmax[j] A[i, j]\n")
    assert [stmt(p, n).value.dtype for n in "smcg"] == ["i32", "f64", "i64", "i64"]


def test_prefix_binds_whole_term():
    p = check("input Q: dense<f32>[N, D]\ninput K: dense<f32>[N, D]\ninput G: csr<bool>[N, N]\n"
              "input scale: f32 = 0.125\noutput S\nS[i, j] = scale * sum[d] Q[i, d] * K[j, d] where G[i, j]\n")
    v = stmt(p, "S").value
    assert isinstance(v, N.Where)
    assert isinstance(v.body, N.Binary) and v.body.op == "*"
    assert isinstance(v.body.rhs, N.Reduce)
    assert p.decl("scale").default == N.Lit(0.125, "f32")


def test_consts_are_folded():
    p = check("const two = 1 + 1\ninput x: dense<f16>[N]\noutput y\ny[i] = x[i] * two\n")
    assert stmt(p, "y").value.rhs == N.Lit(2.0, "f16")


def test_index_predicates_and_complement_masks():
    p = check("input A: csr<f32>[N, N]\ninput M: csr<bool>[N, N]\noutput C\n"
              "C[i, j] = A[i, j] where j <= i and not M[i, j]\n")
    m = stmt(p, "C").value.mask
    assert isinstance(m, N.MaskAnd)
    assert isinstance(m.lhs, N.MaskValue) and isinstance(m.rhs, N.MaskNot)
    assert isinstance(m.rhs.mask, N.MaskPresent)


def test_affine_and_gather_positions():
    p = check("input X: dense<f32>[N, F]\ninput P: dense<i64>[B]\ninput W: dense<f32>[G, R]\n"
              "output Y: dense<f32>[B, F]\noutput Z: dense<f32>[G, R]\n"
              "Y[b, f] = X[P[b], f]\nZ[g, r] = W[g, r] + W[g, r + 1]\n")
    y = stmt(p, "Y").value
    assert isinstance(y.pos[0], N.Access) and y.pos[0].tensor == "P"
    z = stmt(p, "Z").value
    assert isinstance(z.rhs.pos[1], N.Binary)


def test_topk_group_and_pattern_mask():
    p = check("input W: dense<f16>[M, K]\noutput P\nP[i, j] = W[i, j] where topk[j](2, group=4) abs(W[i, j])\n")
    m = stmt(p, "P").value.mask
    assert isinstance(m, N.MaskPresent) and isinstance(m.expr, N.TopK)
    assert m.expr.group == 4 and m.expr.largest


PAGERANK = """
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


def test_pagerank_repeat_carries_r():
    p = check(PAGERANK)
    loop = p.body[-1]
    assert isinstance(loop, N.Repeat)
    assert loop.carried == ("r",)
    assert isinstance(loop.until, N.Binary) and loop.until.op == "<"
    assert loop.max_iters == N.Lit(200, "i64")
    assert p.decl("outdeg").kind == "temp"


def test_repeat_locals_are_not_visible_after_loop():
    with pytest.raises(Exception) as info:
        check("input x: f64\noutput y: f64\ny = x\nrepeat at most 3:\n    t = y * 2.0\n    y = t\ny = t\n")
    assert "t" in str(info.value)


def test_def_inlining_renames_locals(tmp_path):
    (tmp_path / "gnn.sdsl").write_text(
        "def gin(G: csr<bool>[N, N], H: dense<f32>[N, F], eps: f32) -> dense<f32>[N, F]:\n"
        "    agg[i, f] = sum[j] G[i, j] * H[j, f]\n"
        "    out[i, f] = (1 + eps) * H[i, f] + agg[i, f]\n"
        "    return out\n")
    src = ("import gnn\ninput G: csr<bool>[V, V]\ninput H: dense<f32>[V, D]\noutput agg: dense<f32>[V, D]\n"
           "agg = gnn.gin(G, H, 0.5)\n")
    p = check(src, tmp_path, name=str(tmp_path / "main.sdsl"))
    names = [d.name for d in p.decls]
    assert "agg" in names and "gin_agg" in names  # the def's local did not capture the caller's output
    text = format_program(p)
    assert "gin_agg[i, f]" in text


def test_from_import_and_function(tmp_path):
    (tmp_path / "lib.sdsl").write_text("def double(X: dense<f64>[N]) -> dense<f64>[N]:\n    Y = 2 * X\n"
                                       "    return Y\n")
    p = check("from lib import double as dbl\ninput A: dense<f64>[N]\noutput C\nC = dbl(dbl(A))\n", tmp_path,
              name=str(tmp_path / "main.sdsl"))
    assert p.decl("C").type.shape == ("N",)
    mod = parse((tmp_path / "lib.sdsl").read_text(), str(tmp_path / "lib.sdsl"))
    f = check_function(mod, "double", ModuleLoader([tmp_path], use_env=False))
    assert [d.name for d in f.inputs] == ["X"] and [d.name for d in f.outputs] == ["out"]


def test_untyped_output_formats():
    p = check("input A: csr<f32>[M, K]\ninput X: dense<f32>[K, F]\noutput Y\noutput Z\noutput s\n"
              "Y = A @ X\nZ[i] = sum[k] A[i, k]\ns = sum[i, k] A[i, k]\n")
    # SpMM of a sparse A: rows of A with no entries are absent, so Y is not statically full
    assert p.decl("Y").type.format.name == "csr"
    assert p.decl("Z").type.format.name == "coo"
    assert p.decl("s").type.is_scalar


def test_output_fill_and_accumulate():
    p = check("input A: csr<f32>[N, N]\noutput D: dense<f32>[N, N] fill inf\nD[i, j] = A[i, j]\n"
              "D[i, j] min= A[i, j] + 1\n")
    assert p.decl("D").fill.value == float("inf")
    assert [s.op for s in p.body] == ["=", "min="]


def test_until_and_at_most_may_reduce():
    p = check("input y0: dense<f64>[N]\noutput y: dense<f64>[N]\ny[i] = y0[i]\n"
              "repeat at most count[i] y0[i] until (sum[i] y[i]) > 20.0:\n    y[i] = y[i] * 2.0\n")
    loop = p.body[-1]
    assert isinstance(loop.until.lhs, N.Reduce)
    assert isinstance(loop.max_iters, N.Reduce)
