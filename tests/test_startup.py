"""A new process's first call: what it imports, what it finds in the caches, and that the answers stay right.

Behaviour only, never timings (``benchmarks/overhead.py --new-process`` prints those):

* ``import sparsedsl`` imports no Lark, scipy, torch, networkx or Numba, and neither the decorator front end
  nor the runtime containers, which still come on first use under the same names;
* a program loaded before (same text and name) comes from the parsed-AST cache without importing Lark, and
  equals a fresh parse, source positions included; a different or broken text is parsed afresh;
* a program compiled before for the numba target comes from the compile index without importing the loop
  IR or the code generator, and computes the same answer; damaged entries are misses, not errors;
* ``codegen.prelude_for`` keeps exactly the helpers a module names (and those they call), and a module built
  with it runs.

Oracles: scipy / numpy products, the Lark parser itself (for the AST), hand-computed helper values.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.backends.numba import codegen
from sparsedsl.frontend.parser import parse

# every test here counts, inspects or damages cache entries, or needs a miss: a folder of its own each
pytestmark = pytest.mark.private_cache

SPMM = """input  A: csr<f64>[N, N]
input  X: dense<f64>[N, F]
output Y: dense<f64>[N, F]
Y[i, f] = sum[j] A[i, j] * X[j, f]
"""


def _child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter (this test's cache folder via the environment); its last stdout
    line is JSON."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=dict(os.environ),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- import sparsedsl


def test_import_sparsedsl_is_light():
    report = _child("""
        import json, sys
        import sparsedsl
        print(json.dumps(sorted(sys.modules)))
    """)
    heavy = {"lark", "scipy", "torch", "networkx", "numba", "llvmlite",
             "sparsedsl.frontend.embed", "sparsedsl.runtime.tensors", "sparsedsl.loop_ir"}
    assert not {m for m in report if m in heavy or m.split(".")[0] in heavy}


def test_lazy_names_are_the_real_ones():
    from sparsedsl.frontend import embed
    from sparsedsl.runtime import tensors

    assert set(sd._EMBED) == set(embed.__all__)
    for name in embed.__all__:
        assert getattr(sd, name) is getattr(embed, name)
    for name in ("Tensor", "Dense", "CSR", "CSC", "COO", "BSR", "BlockDiag", "NM"):
        assert getattr(sd, name) is getattr(tensors, name)
    assert set(sd.__all__) <= set(dir(sd))
    with pytest.raises(AttributeError):
        sd.no_such_name  # noqa: B018
    scope: dict = {}
    exec("from sparsedsl import *", scope)  # noqa: S102 - the star import of a user script
    assert scope["kernel"] is embed.kernel and scope["CSR"] is tensors.CSR


def test_source_fingerprint_follows_the_source_files(tmp_path, monkeypatch):
    from sparsedsl.runtime.cache import source_fingerprint

    fingerprint = source_fingerprint.__wrapped__  # the memo would hide the edits below
    package = tmp_path / "startup_fp_pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "sub" / "mod.py").write_text("X = 1\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    base = fingerprint(("startup_fp_pkg",))
    (package / "notes.txt").write_text("not code", encoding="utf-8")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "mod.py").write_text("stale", encoding="utf-8")
    assert fingerprint(("startup_fp_pkg",)) == base
    (package / "sub" / "mod.py").write_text("X = 2\n", encoding="utf-8")
    edited = fingerprint(("startup_fp_pkg",))
    assert edited != base
    (package / "grammar.lark").write_text("start: NAME\n", encoding="utf-8")
    assert fingerprint(("startup_fp_pkg",)) not in (base, edited)


# ---------------------------------------------------------------- parse cache


def _positions(node, out=None) -> list:
    """Every AST node's type and span, depth first: spans are left out of the nodes' equality."""
    out = [] if out is None else out
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        span = getattr(node, "span", None)
        out.append((type(node).__name__, None if span is None else
                    (span.line, span.col, span.end_line, span.end_col, span.file)))
        for f in dataclasses.fields(node):
            if f.name != "span":
                _positions(getattr(node, f.name), out)
    elif isinstance(node, (tuple, list)):
        for item in node:
            _positions(item, out)
    return out


def test_second_load_uses_the_parse_cache_and_equals_a_fresh_parse(tmp_path):
    path = tmp_path / "prog.sdsl"
    path.write_text(SPMM + "# a comment\n", encoding="utf-8")
    code = """
        import json, pickle, sys
        import sparsedsl as sd
        prog = sd.load(sys.argv[1])
        print(json.dumps({"lark": "lark" in sys.modules, "ast": pickle.dumps(prog.module).hex(),
                          "ir": str(prog.ir())}))
    """
    first = _child(code, str(path))
    second = _child(code, str(path))
    assert first["lark"] and not second["lark"]  # the second process never imported the parser
    import pickle

    fresh = parse(path.read_text(encoding="utf-8"), str(path))
    cached = pickle.loads(bytes.fromhex(second["ast"]))
    assert cached == fresh
    assert _positions(cached) == _positions(fresh)
    assert second["ir"] == first["ir"]


def test_parse_cache_misses_on_other_text_and_never_hides_errors(tmp_path):
    path = tmp_path / "p.sdsl"
    path.write_text(SPMM, encoding="utf-8")
    assert sd.load(path).module == parse(SPMM, str(path))
    changed = SPMM.replace("A[i, j] * X[j, f]", "A[i, j] * X[j, f] * 2.0")
    path.write_text(changed, encoding="utf-8")
    assert sd.load(path).module == parse(changed, str(path))
    # same text under another name: diagnostics must name the other file
    assert sd.loads(changed, name="other").module.body[0].span.source.name == "other"
    path.write_text(SPMM.replace("sum[j]", "sum[j"), encoding="utf-8")
    with pytest.raises(sd.SdslSyntaxError) as err:
        sd.load(path)
    assert err.value.span.line == 4


def test_damaged_parse_cache_entry_is_parsed_again():
    sd.loads(SPMM, name="dmg")
    entries = list(Path(os.environ["SDSL_CACHE_DIR"]).rglob("*.ast"))
    assert entries
    for entry in entries:
        entry.write_bytes(b"not a pickle")
    assert sd.loads(SPMM, name="dmg").module == parse(SPMM, "dmg")


# ---------------------------------------------------------------- compile index

_RUN = """
    import json, sys
    import numpy as np, scipy.sparse as sp
    import sparsedsl as sd
    kernel = sd.loads(sys.argv[1], name="startup").compile(target="numba", parallel=False)
    rng = np.random.default_rng(3)
    A = sp.random_array((30, 30), density=0.2, format="csr", dtype=np.float64, rng=rng)
    X = rng.standard_normal((30, 5))
    Y = kernel(A=A, X=X).Y
    report = {"ok": bool(np.allclose(Y, A @ X, rtol=1e-12, atol=1e-12)),
              "lowered": "sparsedsl.loop_ir.lower" in sys.modules,
              "codegen": "sparsedsl.backends.numba.codegen" in sys.modules,
              "lark": "lark" in sys.modules}
    # asked for after the call: the loop IR is lowered again on demand
    report.update(loops=kernel.executable.loops, source=kernel.source)
    print(json.dumps(report))
"""


def test_second_process_takes_the_compiled_module_from_the_index():
    first = _child(_RUN, SPMM)
    second = _child(_RUN, SPMM)
    assert first["ok"] and second["ok"]
    assert first["lowered"] and first["codegen"] and first["lark"]
    assert not second["lowered"] and not second["codegen"] and not second["lark"]
    assert second["source"] == first["source"] and second["loops"] == first["loops"]


def _spmm_scaled(c: str) -> str:
    return SPMM.replace("A[i, j] * X[j, f]", f"A[i, j] * X[j, f] * {c}")


def test_programs_and_options_that_differ_get_their_own_entries():
    import sparsedsl.backends.numba as numba_backend

    rng = np.random.default_rng(0)
    A = sp.random_array((12, 12), density=0.3, format="csr", dtype=np.float64, rng=rng)
    X = rng.standard_normal((12, 3))
    # three programs-with-options, each compiled twice: the second time comes from the index
    for c, reassoc in (("2.0", True), ("3.0", True), ("2.0", False)) * 2:
        program = sd.loads(_spmm_scaled(c))
        kernel = program.compile(target="numba", parallel=False, reassoc=reassoc)
        np.testing.assert_allclose(kernel(A=A, X=X).Y, float(c) * (A @ X), rtol=1e-12, atol=1e-12)
        # the module is the one these options render, not another entry's
        fresh = numba_backend.render(program.ir(optimized=True).program, {"parallel": False, "reassoc": reassoc})
        assert kernel.source == fresh


@pytest.mark.parametrize("damage", ["garbage", "missing module", "other module"])
def test_damaged_index_entries_compile_again(damage):
    rng = np.random.default_rng(1)
    A = sp.random_array((10, 10), density=0.3, format="csr", dtype=np.float64, rng=rng)
    X = rng.standard_normal((10, 2))
    sd.loads(_spmm_scaled("5.0")).compile(target="numba", parallel=False)
    sd.loads(_spmm_scaled("7.0")).compile(target="numba", parallel=False)
    cache = Path(os.environ["SDSL_CACHE_DIR"])
    entries = sorted(cache.rglob("*.numba.json"))
    assert len(entries) == 2
    if damage == "garbage":
        entries[0].write_text("{", encoding="utf-8")
    elif damage == "missing module":
        for module in cache.rglob("*.py"):
            module.unlink()
    else:  # each entry's file holds the other program's entry
        texts = [e.read_text(encoding="utf-8") for e in entries]
        entries[0].write_text(texts[1], encoding="utf-8")
        entries[1].write_text(texts[0], encoding="utf-8")
    for c in ("5.0", "7.0"):
        kernel = sd.loads(_spmm_scaled(c)).compile(target="numba", parallel=False)
        np.testing.assert_allclose(kernel(A=A, X=X).Y, float(c) * (A @ X), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- prelude_for


def _helpers_defined(text: str) -> set[str]:
    return {line[4:line.index("(")] for line in text.splitlines() if line.startswith("def _")}


def test_prelude_for_keeps_only_named_helpers_and_their_callees():
    all_names = _helpers_defined(codegen.PRELUDE)
    assert {"_locate", "_sigmoid", "_silu", "_gelu", "_max2", "_sort_pairs", "_sift_pairs"} <= all_names
    assert codegen.prelude_for(" ".join(sorted(all_names))) == codegen.PRELUDE
    assert _helpers_defined(codegen.prelude_for("y = 1\n")) == set()
    assert _helpers_defined(codegen.prelude_for("    v = _silu(x)\n")) == {"_silu", "_sigmoid"}
    assert _helpers_defined(codegen.prelude_for("_sort_pairs(k, v, 0, n)")) == {"_sort_pairs", "_sift_pairs"}
    assert _helpers_defined(codegen.prelude_for("_topk_select(c, k, s, n, 3, 0, o, m, out)")) == {
        "_topk_select", "_tk_sift", "_tk_after"}
    # a name that merely starts like a helper's is not a use of it
    assert _helpers_defined(codegen.prelude_for("_sift_pairs(k, v, 0, 0, n)")) == {"_sift_pairs"}
    assert _helpers_defined(codegen.prelude_for("x_locate = 1; _max2x = 2")) == set()
    head = codegen.prelude_for("")
    assert "import numba" in head and "from numba import prange" in head and "_JIT = " in head


def test_module_built_with_prelude_for_runs(tmp_path):
    kernels = textwrap.dedent('''
        @numba.njit(cache=True)
        def k_silu(x, out):
            for t in range(x.shape[0]):
                out[t] = _silu(x[t])


        @numba.njit(cache=True)
        def k_find(idx, keys, out):
            for t in range(keys.shape[0]):
                out[t] = _locate(idx, 0, idx.shape[0], keys[t])
    ''')
    text = codegen.prelude_for(kernels) + kernels
    assert _helpers_defined(text) == {"_silu", "_sigmoid", "_locate"}
    path = tmp_path / "startup_prelude_mod.py"
    path.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("startup_prelude_mod", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        x = np.array([-30.0, -1.5, 0.0, 0.25, 4.0, 40.0])
        out = np.empty_like(x)
        module.k_silu(x, out)
        np.testing.assert_allclose(out, x / (1.0 + np.exp(-x)), rtol=1e-12, atol=1e-300)
        idx = np.array([1, 4, 6, 9], dtype=np.int64)
        keys = np.array([0, 1, 4, 5, 9, 10], dtype=np.int64)
        found = np.empty(keys.shape[0], dtype=np.int64)
        module.k_find(idx, keys, found)
        assert found.tolist() == [-1, 0, 1, -1, 3, -1]
    finally:
        del sys.modules[spec.name]


RELU = """input  A: csr<f64>[N, N]
input  X: dense<f64>[N, F]
output Y: dense<f64>[N, F]
Y[i, f] = relu(sum[j] A[i, j] * X[j, f])
"""


def test_generated_module_defines_only_the_helpers_it_uses():
    """render_module builds its prelude with prelude_for: every helper the module defines is called in it."""
    kernel = sd.loads(RELU).compile(target="numba", parallel=False)
    source = kernel.source
    defined = _helpers_defined(source)
    assert "_max2" in defined  # relu
    assert not defined & {"_gelu", "_silu", "_sigmoid", "_rf16", "_rbf16", "_round_to", "_topk_select", "_ipow"}
    for name in defined:
        assert source.count(f"{name}(") > source.count(f"def {name}("), name
    rng = np.random.default_rng(2)
    A = sp.random_array((15, 15), density=0.3, format="csr", dtype=np.float64, rng=rng)
    X = rng.standard_normal((15, 4))
    np.testing.assert_allclose(kernel(A=A, X=X).Y, np.maximum(A @ X, 0.0), rtol=1e-12, atol=1e-12)


def test_new_process_benchmark_runs(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        import overhead
    finally:
        sys.path.pop(0)
    overhead.new_process(["spmm"], runs=2, n=8, features=2, parallel=False)
    out = capsys.readouterr().out
    assert out.count("run 2:") == 2 and "floor:" in out and "spmm:" in out
    assert "first call" in out.split("spmm:")[1]
