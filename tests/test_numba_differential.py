"""Differential test: the numba target against the reference interpreter on generated programs.

A hypothesis strategy writes small valid programs from a grammar of index-notation statements — element-wise
union and intersection, unary functions, casts, reductions over a product of two accesses sharing an index,
structural / complement / value masks, index predicates, ``fill``, row ``softmax`` — over 1–3 inputs of random
formats (csr, csc, coo, dense; bsr, blockdiag and nm with parameters that any shape and pattern meet), dtypes
and ranks, with outputs declared dense, csr or left to the compiler.
Every program runs on two input sets (ordinary, then degenerate: 0-size dimensions, empty rows, a single entry,
no entries); the presence of every output must match exactly and its values within the spec's tolerance.

Numba compiles slowly, so kernels are serial (``parallel=False``), every compilation shares one cache folder
for the module, sizes are symbolic (one compilation serves both input sets), and the example count is small.
Floating inputs are multiples of 1/4, so sums and products are exact and ties (argmax, max) are real ties.
The minimal program of the one mismatch this test found (a dense-stored reduction over an empty range) is kept
as a regression test at the end of this file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, note, settings
from hypothesis import strategies as st

import sparsedsl as sd
from sparsedsl.core.errors import SdslTargetError
from sparsedsl.runtime.tensors import from_presence
from sparsedsl.tensor_ir import nodes as T
from sparsedsl.tensor_ir.types import promote

DTYPES = ("f32", "f64", "i32", "i64", "bool")
FLOATS = ("f32", "f64")
TOL = {"f32": 1e-5, "f64": 1e-12}
SIZE_NAMES = ("M", "N", "K")
MATRIX_DIMS = (("M", "N"), ("N", "K"), ("M", "K"), ("N", "N"))
VECTOR_DIMS = (("N",), ("M",), ("K",))
REDUCTIONS = ("sum", "max", "min", "count", "any", "mean", "argmax")
INPUT_NAMES = ("A", "B", "C")
MAX_EXAMPLES = 32  # about 3 s each on the 2-core CI machine, nearly all of it Numba JIT


@dataclass(frozen=True)
class Operand:
    """A tensor a later statement may read: its name, dimensions (size names), dtype, and whether it is an
    input (exp is applied to inputs only, whose values are small, so no intermediate overflows)."""

    name: str
    dims: tuple[str, ...]
    dtype: str
    is_input: bool


@dataclass(frozen=True)
class InputSet:
    sizes: tuple[tuple[str, int], ...]
    seed: int
    mode: str  # random | single | empty


@dataclass(frozen=True)
class Case:
    source: str
    input_sets: tuple[InputSet, ...]


def _arith(a: str, b: str) -> str:
    d = promote(a, b)
    return "i64" if d == "bool" else d


def _access(op: Operand, idx: tuple[str, ...]) -> str:
    return f"{op.name}[{', '.join(idx)}]" if op.dims else op.name


def _literal(dtype: str, draw) -> str:
    if dtype == "bool":
        return draw(st.sampled_from(["true", "false"]))
    if dtype in FLOATS:
        return draw(st.sampled_from(["0.5", "-2.0", "1.25"]))
    return draw(st.sampled_from(["-1", "3", "0"]))


def _index_predicate(rank: int, idx: tuple[str, ...], draw) -> str:
    if rank == 2:
        i, j = idx
        return draw(st.sampled_from([f"{j} <= {i}", f"{i} < {j}", f"{i} != {j}", f"{i} - {j} < 2",
                                     f"{j} % 2 == 0"]))
    (i,) = idx
    return draw(st.sampled_from([f"{i} % 2 == 0", f"{i} < 3"]))


def _mask(env: list[Operand], dims: tuple[str, ...], idx: tuple[str, ...], draw) -> str:
    """A trailing condition over the result's indices: structural, complement, value, or an index predicate."""
    same = [o for o in env if o.dims == dims]
    flipped = [o for o in env if len(dims) == 2 and o.dims == dims[::-1]]
    kinds = ["index"] + (["structural", "complement", "value"] if same or flipped else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "index":
        return _index_predicate(len(dims), idx, draw)
    m = draw(st.sampled_from(same + flipped))
    access = _access(m, idx if m.dims == dims else idx[::-1])
    if kind == "structural":
        return access
    if kind == "complement":
        return f"not {access}"
    if m.dtype == "bool":
        return f"{access} == false" if draw(st.booleans()) else access
    return f"{access} {draw(st.sampled_from(['>', '<=', '!=']))} 0"


def _statement(env: list[Operand], target: str, draw) -> tuple[str, Operand]:
    """One statement ``target[...] = ...`` over operands in ``env``; returns its text and the result."""
    tensors = [o for o in env if o.dims]
    mats = [o for o in tensors if len(o.dims) == 2]
    kind = draw(st.sampled_from(["ewise", "ewise", "ewise", "unary", "cast", "reduce", "reduce", "reduce",
                                 "reduce", "softmax", "fill"]))
    maskable = True
    if kind == "reduce":
        red = draw(st.sampled_from(REDUCTIONS))
        if mats:
            a = draw(st.sampled_from(mats))
            p, q = a.dims
            # reductions over a's last index, and over its first: aᵀ·b, aᵀ·v and a's columns, which walk a
            # compressed matrix against its rows or reduce a dense one into a vector
            shapes = ([("mm", b) for b in mats if b.dims[0] == q] + [("mmT", b) for b in mats if b.dims[1] == q]
                      + [("mv", v) for v in tensors if v.dims == (q,)]
                      + [("Tmm", b) for b in mats if b.dims[0] == p] + [("Tmv", v) for v in tensors if v.dims == (p,)]
                      + [("col", a)])
            shape, b = draw(st.sampled_from(shapes))  # a·aᵀ is always among them
            if shape == "mm":
                dims, body = (p, b.dims[1]), f"{a.name}[i, k] * {b.name}[k, j]"
            elif shape == "mmT":
                dims, body = (p, b.dims[0]), f"{a.name}[i, k] * {b.name}[j, k]"
            elif shape == "mv":
                dims, body = (p,), f"{a.name}[i, k] * {b.name}[k]"
            elif shape == "Tmm":
                dims, body = (q, b.dims[1]), f"{a.name}[k, i] * {b.name}[k, j]"
            elif shape == "Tmv":
                dims, body = (q,), f"{a.name}[k, i] * {b.name}[k]"
            else:
                dims, body = (q,), f"{a.name}[k, i]"
            if draw(st.integers(0, 5)) == 0 and red != "argmax":
                # a whole reduction to a scalar of one operand
                dims, body, b = (), f"{a.name}[i, k]", a
                red_idx = "i, k"
            else:
                red_idx = "k"
        else:
            a = draw(st.sampled_from(tensors))
            b = draw(st.sampled_from([o for o in tensors if o.dims == a.dims]))
            dims, body, red_idx = (), f"{a.name}[k] * {b.name}[k]", "k"
        inner = _arith(a.dtype, b.dtype) if "*" in body else a.dtype
        dtype = {"count": "i64", "any": "bool", "argmax": "i64",
                 "mean": inner if inner in FLOATS else "f64"}.get(red, "i64" if inner == "bool" else inner)
        idx = ("i", "j")[:len(dims)]
        first = next((f"{a.name}[{x}]" for x in ("i, k", "k, i") if f"{a.name}[{x}]" in body), None)
        if red_idx == "k" and first and draw(st.integers(0, 3)) == 0:
            # a mask inside the reduction, on one operand only
            body = body.replace(first, f"({first} where k != i)", 1)
        text = f"{red}[{red_idx}] {body}"
        addends = [o for o in tensors if dims and o.dims == dims]
        if addends and draw(st.integers(0, 3)) == 0:
            # the union of a reduction with a tensor: (Σ ...) + C[i, j], as the spec's precedence reads it
            text += f" + {_access(draw(st.sampled_from(addends)), idx)}"
        maskable = bool(dims)
    else:
        a = draw(st.sampled_from(tensors))
        dims = a.dims
        idx = ("i", "j")[:len(dims)]
        x = _access(a, idx)
        if kind == "ewise":
            op = draw(st.sampled_from(["+", "-", "*", "max", "min"]))
            partners = [o for o in tensors if o.dims == dims]
            broadcast = [(p, v) for p, d in enumerate(dims) for v in tensors if len(dims) == 2 and v.dims == (d,)]
            how = draw(st.sampled_from(["same"] * 3 + (["broadcast"] if broadcast else [])
                                       + (["literal"] if a.dtype != "bool" else [])))
            if how == "same":
                b = draw(st.sampled_from(partners))
                y, bdt = _access(b, idx), b.dtype
            elif how == "broadcast":
                p, v = draw(st.sampled_from(broadcast))
                y, bdt = _access(v, (idx[p],)), v.dtype
            else:
                y, bdt = _literal(a.dtype, draw), a.dtype
            text = f"{op}({x}, {y})" if op in ("max", "min") else f"{x} {op} {y}"
            dtype = promote(a.dtype, bdt) if op in ("max", "min") else _arith(a.dtype, bdt)
        elif kind == "unary":
            fns = ["abs", "relu", "neg"] + (["exp"] if a.dtype in FLOATS and a.is_input else [])
            fn = draw(st.sampled_from(fns))
            text = f"-{x}" if fn == "neg" else f"{fn}({x})"
            dtype = "i64" if a.dtype == "bool" else a.dtype
        elif kind == "cast":
            dtype = draw(st.sampled_from(DTYPES))
            text = f"{dtype}({x})"
        elif kind == "softmax":
            if len(dims) == 2:
                text = f"softmax[j] {x}"
            else:
                text = f"softmax[i] {x}"
            dtype = a.dtype if a.dtype in FLOATS else "f64"
        else:
            text = f"fill({x}, {_literal(a.dtype, draw)})"
            dtype = a.dtype
    if maskable and draw(st.integers(0, 2)) == 0:
        text += f" where {_mask(env, dims, idx, draw)}"
    lhs = f"{target}[{', '.join(idx)}]" if dims else target
    return f"{lhs} = {text}", Operand(target, dims, dtype, False)


@st.composite
def programs(draw) -> Case:
    env: list[Operand] = []
    decls = []
    for name in INPUT_NAMES[:draw(st.integers(1, 3))]:
        rank = draw(st.sampled_from([2, 2, 2, 1]))
        if rank == 2 and env and env[0].dims and draw(st.booleans()):
            # bias towards operands that chain with the first input (A·B, A·v)
            q = env[0].dims[-1]
            dims = draw(st.sampled_from([d for d in MATRIX_DIMS if d[0] == q] or list(MATRIX_DIMS)))
        else:
            dims = draw(st.sampled_from(MATRIX_DIMS if rank == 2 else VECTOR_DIMS))
        # (block formats whose constraints every drawn size and pattern meets: rows walked in blocks)
        fmt = draw(st.sampled_from(["csr", "csc", "coo", "dense", "bsr(1, 1)", "blockdiag(1)", "nm(4, 4)"]
                                   if rank == 2 else ["csr", "coo", "dense"]))
        dtype = draw(st.sampled_from(DTYPES))
        env.append(Operand(name, dims, dtype, True))
        decls.append(f"input {name}: {fmt}<{dtype}>[{', '.join(dims)}]")
    stmts = []
    results = []
    count = draw(st.integers(1, 3))
    for n in range(count):
        text, result = _statement(env, f"X{n + 1}", draw)
        stmts.append(text)
        results.append(result)
        env.append(result)
    # A result no later statement reads is an output (so every statement is observed); others may be.
    read = {name for text in stmts for name in re.findall(r"\b(X\d)\[", text.split("=", 1)[1])}
    outputs = [r for r in results if r.name not in read or draw(st.booleans())]
    # Output dtypes come from the checker (a first pass with untyped outputs), so declarations always agree.
    probe = "\n".join(decls + [f"output {o.name}" for o in outputs] + stmts) + "\n"
    inferred = {d.name: d.type for d in sd.loads(probe).ir().program.outputs}
    for o in outputs:
        t = inferred[o.name]
        style = draw(st.sampled_from(["dense", "csr", "untyped"]))
        if style == "untyped" or (not t.shape and draw(st.booleans())):
            decls.append(f"output {o.name}")
        elif not t.shape:
            decls.append(f"output {o.name}: {t.dtype}")
        else:
            fill = ""
            if style == "dense" and draw(st.integers(0, 3)) == 0:
                fill = f" fill {_literal(t.dtype, draw)}"
            decls.append(f"output {o.name}: {style}<{t.dtype}>[{', '.join(t.shape)}]{fill}")
    source = "\n".join(decls + stmts) + "\n"
    ordinary = InputSet(tuple((s, draw(st.integers(1, 6))) for s in SIZE_NAMES), draw(st.integers(0, 2**31)),
                        "random")
    degenerate = InputSet(tuple((s, draw(st.integers(0, 4))) for s in SIZE_NAMES), draw(st.integers(0, 2**31)),
                          draw(st.sampled_from(["random", "single", "empty"])))
    return Case(source, (ordinary, degenerate))


def make_inputs(program: sd.Program, inputs: InputSet) -> dict:
    """Containers for every input: values multiples of 1/4 (floats) or small integers; for sparse formats a
    random pattern with some rows emptied, a single entry, or none, as ``inputs.mode`` says."""
    rng = np.random.default_rng(inputs.seed)
    sizes = dict(inputs.sizes)
    out = {}
    for decl in program.inputs:
        t = decl.type
        shape = tuple(sizes[d] for d in t.shape)
        if t.format.is_dense:
            present = np.ones(shape, bool)
        elif inputs.mode == "empty":
            present = np.zeros(shape, bool)
        elif inputs.mode == "single":
            present = np.zeros(shape, bool)
            if present.size:
                present.flat[rng.integers(present.size)] = True
        else:
            present = rng.random(shape) < rng.choice([0.15, 0.4, 0.8])
            if len(shape) == 2:
                present &= (rng.random(shape[0]) >= 0.3)[:, None]
        if t.dtype == "bool":
            values = present.copy() if not t.format.is_dense else rng.random(shape) < 0.5
        elif t.dtype in FLOATS:
            values = rng.integers(-8, 9, shape) / 4.0
        else:
            values = rng.integers(-3, 4, shape)
        out[decl.name] = from_presence(values, present, t, sizes, decl.name)
    return out


def assert_same(want, got, dtype: str, what: str) -> None:
    wv, wp = want.to_presence()
    gv, gp = got.to_presence()
    assert gv.shape == wv.shape, f"shape of {what}"
    np.testing.assert_array_equal(gp, wp, err_msg=f"presence of {what}")
    wv = np.where(wp, wv, 0)
    gv = np.where(gp, gv, 0)
    if dtype in TOL:
        wv = wv.astype(np.float64)
        gv = gv.astype(np.float64)
        scale = max(1.0, float(np.abs(wv[np.isfinite(wv)]).max(initial=0.0)))
        np.testing.assert_allclose(gv, wv, rtol=TOL[dtype], atol=TOL[dtype] * scale, equal_nan=True,
                                   err_msg=f"values of {what}")
    else:
        np.testing.assert_array_equal(gv, wv, err_msg=f"values of {what}")


# Every example JITs a program: derandomized, MAX_EXAMPLES of them, and no shrinking (every step would JIT a new
# program, minutes; the drawn programs are small already).
JIT_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                        phases=(Phase.explicit, Phase.generate),
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    """One compilation cache for the module, so a program drawn twice is not compiled again."""
    return str(tmp_path_factory.mktemp("numba-differential-cache"))


def _reduces(e: T.Expr) -> set[str]:
    found = set(e.vars) if isinstance(e, T.Reduce) else set()
    for c in T.children(e):
        found |= _reduces(c)
    return found


def differential(source: str, input_sets, cache_dir: str, like_first: bool = False) -> int:
    """Run ``source`` on both targets for every input set; raises on any difference, returns how many input
    sets were compared. ``SdslTargetError`` (a refusal) propagates to the caller. ``like_first``: the numba
    kernel is compiled for the first input set's statistics (``compile(like=...)``)."""
    program = sd.loads(source, name="generated")
    ref = program.compile(target="ref")
    like = make_inputs(program, input_sets[0]) if like_first else None
    fast = program.compile(target="numba", like=like, parallel=False, cache_dir=cache_dir)
    compared = 0
    for inputs in input_sets:
        compared += 1
        bound = make_inputs(program, inputs)
        want = ref.run_tensors(**bound)
        got = fast.run_tensors(**bound)
        for decl in program.outputs:
            what = f"{decl.name} with sizes {dict(inputs.sizes)}, mode {inputs.mode}"
            assert got[decl.name].format.name == want[decl.name].format.name, what
            assert_same(want[decl.name], got[decl.name], decl.type.dtype, what)
    return compared


def test_generated_programs_are_valid():
    """The generator's own contract, cheaply: every drawn program type-checks (no JIT involved)."""
    @settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(programs())
    def check(case):
        program = sd.loads(case.source, name="generated")
        assert program.outputs
        for inputs in case.input_sets:
            make_inputs(program, inputs)

    check()


def test_numba_matches_reference(cache_dir):
    refusals: list[str] = []
    runs: list[str] = []

    @JIT_SETTINGS
    @given(programs())
    def check(case):
        note(case.source)
        try:
            compared = differential(case.source, case.input_sets, cache_dir)
        except SdslTargetError as err:
            refusals.append(f"{err.render()}\n--- program ---\n{case.source}")
            return
        runs.append(compared)

    check()
    # the ordinary input set (every size at least 1) is always compared
    assert runs and min(runs) >= 1
    assert not refusals, (f"the numba target refused {len(refusals)} of {len(refusals) + len(runs)} generated "
                          "programs:\n\n" + "\n\n".join(refusals))


def test_bitmap_intermediates_match_reference(cache_dir, monkeypatch):
    """Format selection with the bitmap threshold at 0 and the first input set's statistics: programs with an
    intermediate stored as a bitmap (others are drawn again: no JIT for them) against the reference."""
    from sparsedsl.passes import formats

    monkeypatch.setattr(formats, "BITMAP_DENSITY", 0.0)
    compared: list[int] = []

    @settings(max_examples=12, deadline=None, derandomize=True, phases=(Phase.explicit, Phase.generate),
              suppress_health_check=list(HealthCheck))
    @given(programs())
    def check(case):
        program = sd.loads(case.source, name="generated")
        stats = program.input_statistics(make_inputs(program, case.input_sets[0]))[0]
        lowered = sd.api.run_passes(program.ir().program, stats=stats)[0]
        assume(any(d.storage is not None and d.storage.name == "bitmap" for d in lowered.decls))
        note(case.source)
        compared.append(differential(case.source, case.input_sets, cache_dir, like_first=True))

    check()
    assert compared and min(compared) >= 1


# ---------------------------------------------------------------- regressions found by the generator

DENSE_TEMP_OF_EMPTY_REDUCTION = """\
input  A: dense<f64>[M, N]
output Y: dense<f64>[M]
X[i] = sum[k] A[i, k]
Y[i] = fill(X[i], 1.0)
"""


def test_dense_temp_of_empty_reduction_is_absent(cache_dir):
    program = sd.loads(DENSE_TEMP_OF_EMPTY_REDUCTION, name="regression")
    A = np.zeros((2, 0))
    fast = program.compile(target="numba", parallel=False, cache_dir=cache_dir)
    np.testing.assert_array_equal(program.compile(target="ref")(A=A)["Y"], [1.0, 1.0])
    np.testing.assert_array_equal(fast(A=A)["Y"], [1.0, 1.0])


# ---------------------------------------------------------------- fused schedules

# The generator above draws no schedules, so the fusion pass only meets what it fuses on its own. These draw a
# producer T and a reader Y of it (sometimes a middle stage U between them), then ask for the fusion with
# `fuse T, Y` (or `fuse T, U, Y`) or leave it to the pass. Square operands A, B (N x N); X (N x F) and Q
# (N x F) give a second free index F that differs from N, as the fused reader of a workspace must respect.
FUSE_PRODUCERS = {  # text -> rank of T
    "T[i, j] = sum[k] A[i, k] * B[k, j]": 2,
    "T[i, j] = min[k] (A[i, k] + B[k, j])": 2,
    "T[i, j] = max[k] A[i, k] * B[j, k]": 2,
    "T[i, j] = any[k] (A[i, k] > B[k, j])": 2,
    "T[i, j] = A[i, j] * B[i, j]": 2,
    "T[i, j] = A[i, j] + B[j, i]": 2,
    "T[i, j] = max(A[i, j], 0.5)": 2,
    "T[i, j] = sum[f] Q[i, f] * X[j, f] where A[i, j]": 2,
    "T[i, j] = 0.5 * sum[f] Q[i, f] * X[j, f] where B[i, j]": 2,
    "T[i, j] = softmax[j] A[i, j]": 2,
    "T[i, j] = A[i, j] where A[i, j] > 0": 2,
    "T[i, j] = A[i, j] where not B[i, j]": 2,
    "T[i, j] = A[i, j] - 1 where j <= i": 2,
    "T[i, j] = fill(A[i, j], 2)": 2,
    "T[i] = sum[j] A[i, j]": 1,
    "T[i] = max[j] A[i, j] * B[j, i]": 1,
    "T[i] = count[j] A[i, j]": 1,
}
FUSE_MIDDLES = (  # U from T (rank 2 only)
    "U[i, j] = T[i, j] * 2.0", "U[i, j] = softmax[j] T[i, j]", "U[i, j] = exp(T[i, j] * 0.25)",
    "U[i, j] = T[i, j] where T[i, j] != 0", "U[i, j] = abs(T[i, j]) + B[i, j]",
)
FUSE_READERS = {
    2: ("Y[i, f] = sum[j] S[i, j] * X[j, f]", "Y[i, f] = sum[j] S[j, i] * X[j, f]",
        "Y[i, j] = sum[k] S[i, k] * B[k, j]", "Y[i, j] = sum[k] A[i, k] * S[k, j]",
        "Y[i] = sum[j] S[i, j]", "Y[i] = max[j] S[i, j]", "Y[i] = count[j] S[i, j]", "Y[i] = argmax[j] S[i, j]",
        "Y[i, j] = S[i, j] * 2", "Y[i, j] = relu(S[i, j])", "Y[i, j] = S[i, j] + A[i, j]",
        "Y[i, j] = S[i, j] * B[i, j]", "Y[i, j] = softmax[j] S[i, j]", "Y[i, j] = S[j, i] - 1",
        "Y[i, j] = S[i, j] where B[i, j]", "Y[i, j] = S[i, j] where not A[i, j]", "Y = sum[i, j] S[i, j]",
        "Y[i, f] = max[j] (S[i, j] + X[j, f])"),
    1: ("Y[i, f] = S[i] * X[i, f]", "Y = sum[i] S[i]", "Y[i] = S[i] + 1", "Y[i] = max[j] A[i, j] * S[j]",
        "Y[i] = S[i] where B[i, i]"),
}
FUSE_INPUTS = {"A": "N, N", "B": "N, N", "X": "N, F", "Q": "N, F"}


@st.composite
def fused_programs(draw) -> tuple[Case, bool]:
    """A producer / (middle) / reader chain; returns the case and whether its schedule forces the fusion."""
    producer = draw(st.sampled_from(sorted(FUSE_PRODUCERS)))
    rank = FUSE_PRODUCERS[producer]
    stmts, chain = [producer], ["T"]
    if rank == 2 and draw(st.integers(0, 2)) == 0:
        stmts.append(draw(st.sampled_from(FUSE_MIDDLES)))
        chain.append("U")
    reader = draw(st.sampled_from(FUSE_READERS[rank]))
    stmts.append(reader.replace("S[", f"{chain[-1]}["))
    chain.append("Y")
    forced = draw(st.integers(0, 3)) > 0
    body = "\n".join(stmts) + "\n"
    decls = []
    for name, dims in FUSE_INPUTS.items():
        if re.search(rf"\b{name}\[", body):
            fmt = draw(st.sampled_from(["dense"] if name == "Q" else
                                       ["csr", "csr", "csc", "coo", "dense", "bsr(1, 1)"]))
            dtype = draw(st.sampled_from(FLOATS if name in "XQ" else ("f64", "f32", "i64", "i32", "bool")))
            decls.append(f"input {name}: {fmt}<{dtype}>[{dims}]")
    probe = "\n".join(decls + ["output Y"]) + "\n" + body
    y = next(d for d in sd.loads(probe).ir().program.outputs if d.name == "Y").type
    style = draw(st.sampled_from(["dense", "csr", "untyped"])) if y.shape else "untyped"
    decls.append(f"output Y: {style}<{y.dtype}>[{', '.join(y.shape)}]" if style != "untyped" else "output Y")
    schedule = f"schedule Y:\n    fuse {', '.join(chain)}\n" if forced else ""
    source = "\n".join(decls) + "\n" + body + schedule
    sizes = ("N", "F")
    ordinary = InputSet(tuple((s, draw(st.integers(1, 7))) for s in sizes), draw(st.integers(0, 2**31)), "random")
    degenerate = InputSet(tuple((s, draw(st.integers(0, 4))) for s in sizes), draw(st.integers(0, 2**31)),
                          draw(st.sampled_from(["random", "single", "empty"])))
    return Case(source, (ordinary, degenerate)), forced


def _fused(program: sd.Program) -> bool:
    return any("computed inside" in line for line in program.explain().splitlines())


def test_generated_fused_programs_are_valid():
    """Every drawn chain type-checks; a forced fusion is legal or refused at its directive (no JIT here)."""
    outcomes = {"fused": 0, "refused": 0}

    @settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(fused_programs())
    def check(drawn):
        case, forced = drawn
        program = sd.loads(case.source, name="generated")
        try:
            fused = _fused(program)
        except sd.SdslError as err:
            assert forced and "cannot fuse" in err.render() and "^" in err.render(), err.render()
            outcomes["refused"] += 1
            return
        outcomes["fused"] += fused
        for inputs in case.input_sets:
            make_inputs(program, inputs)

    check()
    # the generator is useful only if most chains really fuse
    assert outcomes["fused"] > 4 * outcomes["refused"], outcomes


def test_fused_schedules_match_reference(cache_dir):
    """Fused chains (forced by `fuse` or chosen by the fusion pass) against the reference, which runs them
    unfused."""
    runs: list[bool] = []

    @JIT_SETTINGS
    @given(fused_programs())
    def check(drawn):
        case, _ = drawn
        note(case.source)
        program = sd.loads(case.source, name="generated")
        try:
            fused = _fused(program)
        except sd.SdslError:
            return  # an illegal `fuse`, refused at its directive (the test above checks how)
        differential(case.source, case.input_sets, cache_dir)
        runs.append(fused)

    check()
    assert sum(runs) >= len(runs) // 2 > 0, f"{sum(runs)} of {len(runs)} chains fused"


# ---------------------------------------------------------------- loop orders

@st.composite
def ordered_programs(draw) -> tuple[Case, str, int]:
    """A drawn program with an ``order`` on one of its statements, any permutation of that statement's
    indices; also the scheduled name and the directive's line."""
    case = draw(programs())
    body = sd.loads(case.source, name="generated").ir().program.body
    stmts = [s for s in body if isinstance(s, T.Assign) and len({v for v, _ in s.ranges}) >= 2]
    assume(stmts)
    st_ = draw(st.sampled_from(stmts))
    order = draw(st.permutations([v for v, _ in st_.ranges]))
    line = case.source.count("\n") + 2
    source = case.source + f"schedule {st_.target}:\n    order {', '.join(order)}\n"
    return Case(source, case.input_sets), st_.target, line


def test_ordered_programs_match_reference_or_are_refused_at_the_order(cache_dir):
    """Spec § 8: a schedule never changes a result, and the compiler refuses orders it cannot iterate. A
    drawn order is either run, with the reference's result, or refused at its own directive."""
    outcomes = {"ran": 0, "refused": 0}

    @JIT_SETTINGS
    @given(ordered_programs())
    def check(drawn):
        case, target, line = drawn
        note(case.source)
        try:
            differential(case.source, case.input_sets, cache_dir)
        except SdslTargetError as err:
            assert err.span is not None and err.span.line == line, err.render()
            assert f"cannot run the loops of '{target}' in the order" in str(err), err.render()
            outcomes["refused"] += 1
            return
        outcomes["ran"] += 1

    check()
    assert outcomes["ran"] >= outcomes["refused"] and outcomes["ran"] > 0, outcomes
