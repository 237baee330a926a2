"""Every user mistake the checker catches is an SdslError at the right line and column with a clear message.

Each case is (program text, line, column, message fragment). Columns are 1-based, as the CLI prints them.
"""
import pytest

from sparsedsl.core.errors import SdslError
from sparsedsl.frontend.parser import parse
from sparsedsl.tensor_ir.check import check_module
from sparsedsl.tensor_ir.loader import ModuleLoader

HEAD = "input A: csr<f32>[M, K]\ninput B: csr<f32>[K, N]\n"

CASES = [
    # names
    ("unknown-tensor", HEAD + "output C: csr<f32>[M, N]\nC[i, j] = sum[k] A[i, k] * Bx[k, j]\n",
     4, 28, "unknown tensor 'Bx'"),
    ("use-before-assign", HEAD + "output C: dense<f32>[M, K]\nC[i, k] = T[i, k]\nT[i, k] = A[i, k]\n",
     4, 11, "'T' is used before it is assigned"),
    ("duplicate-input", HEAD + "input A: f32\noutput C: dense<f32>[M, K]\nC[i, k] = A[i, k]\n",
     3, 1, "'A' is already defined"),
    ("assign-input", HEAD + "output C: dense<f32>[M, K]\nA[i, k] = 1.0\nC[i, k] = A[i, k]\n",
     4, 1, "cannot assign to input 'A'"),
    ("single-assignment", HEAD + "output C: dense<f32>[M, K]\nC[i, k] = A[i, k]\nC[i, k] = A[i, k]\n",
     5, 1, "'C' is already assigned"),
    ("output-never-assigned", HEAD + "output C: dense<f32>[M, K]\noutput D: dense<f32>[M, K]\nC[i, k] = A[i, k]\n",
     4, 1, "output 'D' is never assigned"),
    ("accumulate-before-assign", HEAD + "output C: dense<f32>[M, K]\nC[i, k] += A[i, k]\n",
     4, 1, "must be assigned before '+='"),
    ("unknown-function", HEAD + "output C: csr<f32>[M, K]\nC[i, k] = expp(A[i, k])\n",
     4, 11, "unknown function 'expp'"),
    ("scalar-indexed", "input s: f32\ninput A: csr<f32>[M, K]\noutput C: csr<f32>[M, K]\nC[i, k] = s[i] * A[i, k]\n",
     4, 11, "'s' is a scalar and cannot be indexed"),
    ("tensor-without-indices", HEAD + "output C: csr<f32>[M, K]\nC[i, k] = A * A[i, k]\n",
     4, 11, "'A' is a tensor of rank 2"),
    ("builtin-constant-redefined", "input inf: f32\noutput C: f32\nC = inf\n", 1, 1, "built-in constant"),
    # indices and shapes
    ("index-range-clash", HEAD + "output C: csr<f32>[M, N]\nC[i, j] = sum[k] A[i, k] * B[j, k]\n",
     4, 30, "index 'j' ranges over K here"),
    ("free-index-not-on-left", HEAD + "output C: csr<f32>[M, N]\nC[i, j] = A[i, k] * B[k, j]\n",
     4, 16, "index 'k' is free on the right side but not on the left"),
    ("wrong-rank-access", HEAD + "output C: csr<f32>[M, K]\nC[i, k] = A[i]\n",
     4, 11, "'A' has rank 2 but is indexed with 1 index"),
    ("wrong-rank-target", HEAD + "output C: csr<f32>[M, K]\nC[i] = sum[k] A[i, k]\n",
     4, 1, "'C' has rank 2 but is assigned with 1 index"),
    ("lhs-index-twice", HEAD + "output C: dense<f32>[M, M]\nC[i, i] = sum[k] A[i, k]\n",
     4, 6, "index 'i' appears twice on the left side"),
    ("unranged-lhs-index", HEAD + "output C\nC[i, q] = sum[k] A[i, k]\n",
     4, 6, "cannot tell the range of index 'q'"),
    ("reduced-index-missing", HEAD + "output C: dense<f32>[M, K]\nC[i, k] = sum[q] A[i, k]\n",
     4, 15, "index 'q' does not appear"),
    ("argmax-two-indices", HEAD + "output C: dense<i64>[M]\nC[i] = argmax[i, k] A[i, k]\n",
     4, 8, "'argmax' takes exactly one index"),
    ("matmul-in-index-notation", HEAD + "output C: csr<f32>[M, N]\nC[i, j] = A[i, k] @ B[k, j]\n",
     4, 11, "'@' multiplies whole tensors"),
    ("transpose-in-index-notation", HEAD + "output C: csr<f32>[K, M]\nC[k, i] = A.T[k, i]\n",
     4, 11, "'.T' is whole-tensor sugar"),
    ("whole-shape-mismatch", HEAD + "output C\nC = A @ A\n", 4, 5, "ranges over"),
    ("elementwise-rank-mismatch", "input A: csr<f32>[M, K]\ninput v: dense<f32>[K]\noutput C\nC = A + v\n",
     4, 5, "element-wise '+' of tensors of ranks 2 and 1"),
    ("affine-product-of-indices", "input A: dense<f32>[N]\noutput C: dense<f32>[N]\nC[i] = A[i * i]\n",
     3, 10, "may multiply an index only by a constant"),
    ("coordinate-divided-by-zero", "input A: dense<f32>[N]\noutput C: dense<f32>[N]\nC[i] = A[i // 0]\n",
     3, 15, "divides by zero ('// 0')"),
    ("coordinate-modulo-zero", "input A: dense<f32>[N]\noutput C: dense<f32>[N]\nC[i] = A[(i + 1) % 0]\n",
     3, 20, "divides by zero ('% 0')"),
    ("float-gather", "input P: dense<f32>[N]\ninput A: dense<f32>[N]\noutput C: dense<f32>[N]\nC[i] = A[P[i]]\n",
     4, 10, "gather index must be an integer tensor"),
    ("nested-gather", "input P: dense<i64>[N]\ninput A: dense<f32>[N]\noutput C: dense<f32>[N]\nC[i] = A[P[P[i]]]\n",
     4, 12, "only one level of indirection"),
    # types
    ("float-into-int-output", HEAD + "output C: csr<i32>[M, K]\nC[i, k] = A[i, k]\n",
     4, 11, "cannot store a f32 value in 'C' of type i32"),
    ("bitand-floats", HEAD + "output C: csr<f32>[M, K]\nC[i, k] = A[i, k] & A[i, k]\n",
     4, 11, "'&' needs bool or integer operands"),
    ("where-not-boolean", HEAD + "output C: csr<f32>[M, K]\nC[i, k] = A[i, k] where A[i, k] + 1\n",
     4, 25, "a where condition must be boolean"),
    ("until-not-bool", "input x: f64\noutput y: f64\ny = x\nrepeat at most 3 until y:\n    y = y * 2.0\n",
     4, 24, "'until' needs a bool condition"),
    ("at-most-float", "input x: f64\noutput y: f64\ny = x\nrepeat at most 2.5:\n    y = y * 2.0\n",
     4, 16, "'at most' needs an integer"),
    ("default-on-tensor", "input A: csr<f32>[M, K] = 1.0\noutput C: csr<f32>[M, K]\nC[i, k] = A[i, k]\n",
     1, 27, "only scalar inputs may have a default"),
    ("float-default-for-int", "input n: i32 = 1.5\noutput C: i32\nC = n\n", 1, 16, "is a float but the type is i32"),
    ("fill-on-sparse-output", HEAD + "output C: csr<f32>[M, K] fill 0.0\nC[i, k] = A[i, k]\n",
     3, 31, "fill applies to dense outputs"),
    ("topk-float-k", HEAD + "output C: csr<f32>[M, K]\nC[i, k] = A[i, k] where topk[k](1.5) A[i, k]\n",
     4, 33, "k must be a scalar integer"),
    ("topk-bad-kwarg", HEAD + "output C: csr<f32>[M, K]\nC[i, k] = A[i, k] where topk[k](2, grp=4) A[i, k]\n",
     4, 36, "has no argument 'grp'"),
    ("softmax-two-indices", HEAD + "output C: csr<f32>[M, K]\nC[i, k] = softmax[i, k] A[i, k]\n",
     4, 11, "'softmax' takes exactly one index"),
    ("cast-arity", HEAD + "output C: csr<f32>[M, K]\nC[i, k] = f32(A[i, k], 2)\n",
     4, 11, "'f32' takes 1 argument"),
    ("int-literal-past-i64", HEAD + "output C: csr<f32>[M, K]\nC[i, k] = A[i, k] * 99999999999999999999\n",
     4, 21, "integer literal 99999999999999999999 does not fit in i64"),
    ("int-literal-past-i64-in-coordinate", HEAD + "output C: csr<f32>[M, K]\nC[i, k] = A[i, k + 9223372036854775808]\n",
     4, 20, "does not fit in i64"),
    ("literal-too-big-for-i8", "input x: dense<i8>[N]\noutput y\ny[i] = x[i] < 300\n",
     3, 15, "the literal 300 does not fit in i8, the type it takes from the other operand"),
    # formats
    ("bsr-without-params", "input A: bsr<f32>[M, K]\noutput C: bsr(2, 2)<f32>[M, K]\nC[i, k] = A[i, k]\n",
     1, 10, "format 'bsr' takes 2 parameters"),
    ("csc-rank-3", "input A: csc<f32>[M, K, L]\noutput C: f32\nC = sum[i, j, l] A[i, j, l]\n",
     1, 10, "format 'csc' holds tensors of rank 2"),
    ("nm-n-greater-than-m", "input A: nm(4, 2)<f16>[M, K]\noutput C: f32\nC = sum[i, j] A[i, j]\n",
     1, 10, "N must not exceed M"),
    ("output-size-unbound", HEAD + "output C: dense<f32>[P, K]\nC[i, k] = A[i, k]\n",
     3, 11, "size 'P' of output 'C' is not fixed by any input"),
    # defs and imports
    ("def-arity", "def f(X: dense<f32>[N]) -> dense<f32>[N]:\n    return X\ninput A: dense<f32>[N]\noutput C\nC = f(A, A)\n",
     5, 5, "'f' takes 1 argument, got 2"),
    ("def-size-clash", "def f(X: dense<f32>[N], Y: dense<f32>[N]) -> dense<f32>[N]:\n    Z[i] = X[i] + Y[i]\n    return Z\n"
     "input A: dense<f32>[P]\ninput B: dense<f32>[Q]\noutput C\nC = f(A, B)\n",
     7, 10, "size 'N' of 'f' is P from an earlier argument but Q"),
    ("def-in-index-notation", "def f(X: dense<f32>[N]) -> dense<f32>[N]:\n    return X\ninput A: dense<f32>[N]\n"
     "output C: dense<f32>[N]\nC[i] = f(A)[i]\n", 5, 8, "only named tensors can be indexed"),
    ("recursion", "def f(X: dense<f32>[N]) -> dense<f32>[N]:\n    Y = f(X)\n    return Y\ninput A: dense<f32>[N]\n"
     "output C\nC = f(A)\n", 2, 9, "recursive call of 'f'"),
    ("missing-module", "import nosuchmodule\ninput A: dense<f32>[N]\noutput C\nC = A\n", 1, 1,
     "no module named 'nosuchmodule'"),
    ("return-outside-def", HEAD + "output C\nreturn A\n", 4, 1, "'return' outside a def"),
    ("module-not-program", "def f(X: dense<f32>[N]) -> dense<f32>[N]:\n    return X\n", 1, 1,
     "it is a module, not a program"),
    # schedules
    ("unknown-directive", HEAD + "output C: csr<f32>[M, N]\nC[i, j] = sum[k] A[i, k] * B[k, j]\nschedule C:\n    vectorize j\n",
     6, 5, "unknown schedule directive 'vectorize'"),
    ("bad-accumulator", HEAD + "output C: csr<f32>[M, N]\nC[i, j] = sum[k] A[i, k] * B[k, j]\nschedule C:\n    accumulator heap\n",
     6, 5, "accumulator takes one of"),
    ("parallel-unknown-index", HEAD + "output C: csr<f32>[M, N]\nC[i, j] = sum[k] A[i, k] * B[k, j]\nschedule C:\n    parallel q\n",
     6, 5, "parallel takes one index"),
    ("order-incomplete", HEAD + "output C: csr<f32>[M, N]\nC[i, j] = sum[k] A[i, k] * B[k, j]\nschedule C:\n    order i, j\n",
     6, 5, "order must list every index"),
    ("schedule-unknown-tensor", HEAD + "output C: csr<f32>[M, N]\nC[i, j] = sum[k] A[i, k] * B[k, j]\nschedule D:\n    parallel i\n",
     5, 1, "schedule names 'D'"),
    ("format-on-output", HEAD + "output C: csr<f32>[M, N]\nC[i, j] = sum[k] A[i, k] * B[k, j]\nschedule C:\n    format csc\n",
     6, 5, "format applies to intermediates"),
    ("format-param-count", HEAD + "output C: csr<f32>[M, K]\nT[i, k] = 2.0 * A[i, k]\nC[i, k] = T[i, k]\nschedule T:\n    format bsr(4)\n",
     7, 5, "format bsr takes 2 parameters, got 1"),
    ("format-params-on-csr", HEAD + "output C: csr<f32>[M, K]\nT[i, k] = 2.0 * A[i, k]\nC[i, k] = T[i, k]\nschedule T:\n    format csr(2)\n",
     7, 5, "format csr takes 0 parameters, got 1"),
    ("format-param-zero", HEAD + "output C: csr<f32>[M, K]\nT[i, k] = 2.0 * A[i, k]\nC[i, k] = T[i, k]\nschedule T:\n    format bsr(0, 4)\n",
     7, 5, "format parameters must be positive, got 0"),
    ("format-nm-n-over-m", HEAD + "output C: csr<f32>[M, K]\nT[i, k] = 2.0 * A[i, k]\nC[i, k] = T[i, k]\nschedule T:\n    format nm(4, 2)\n",
     7, 5, "N must not exceed M"),
    ("format-param-unknown-size", HEAD + "output C: csr<f32>[M, K]\nT[i, k] = 2.0 * A[i, k]\nC[i, k] = T[i, k]\nschedule T:\n    format bsr(Q, 4)\n",
     7, 5, "size 'Q' of schedule T is not fixed by any input"),
    ("block-size-zero", HEAD + "output C: csr<f32>[M, N]\nC[i, j] = sum[k] A[i, k] * B[k, j]\nschedule C:\n    block i 0\n",
     6, 5, "block takes an index and a positive tile size"),
]


@pytest.mark.parametrize("name,src,line,col,msg", CASES, ids=[c[0] for c in CASES])
def test_diagnostic(name, src, line, col, msg, tmp_path):
    with pytest.raises(SdslError) as info:
        check_module(parse(src, "prog.sdsl"), ModuleLoader([tmp_path], use_env=False))
    err = info.value
    assert msg in err.message, err.render()
    assert (err.line, err.col) == (line, col), err.render()
    assert err.file == "prog.sdsl"
    rendered = err.render()
    assert rendered.startswith(f"prog.sdsl:{line}:{col}: error: ")
    assert "^" in rendered.splitlines()[2]


def test_enough_distinct_cases():
    assert len({c[4] for c in CASES}) >= 40


def test_import_cycle(tmp_path):
    (tmp_path / "a.sdsl").write_text("import b\ndef fa(X: dense<f32>[N]) -> dense<f32>[N]:\n    return X\n")
    (tmp_path / "b.sdsl").write_text("import a\ndef fb(X: dense<f32>[N]) -> dense<f32>[N]:\n    return X\n")
    prog = tmp_path / "main.sdsl"
    prog.write_text("import a\ninput A: dense<f32>[N]\noutput C\nC = a.fa(A)\n")
    with pytest.raises(SdslError) as info:
        check_module(parse(prog.read_text(), str(prog)), ModuleLoader([], use_env=False))
    assert "import cycle" in info.value.message
    assert info.value.line == 1


def test_from_import_missing_def(tmp_path):
    (tmp_path / "m.sdsl").write_text("def g(X: dense<f32>[N]) -> dense<f32>[N]:\n    return X\n")
    prog = tmp_path / "main.sdsl"
    prog.write_text("from m import h\ninput A: dense<f32>[N]\noutput C\nC = A\n")
    with pytest.raises(SdslError) as info:
        check_module(parse(prog.read_text(), str(prog)), ModuleLoader([], use_env=False))
    assert "module 'm' has no def 'h'" in info.value.message
    assert (info.value.line, info.value.col) == (1, 15)
