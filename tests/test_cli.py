"""The command line (interface.md § Command line): every command, exit statuses 0/1/2, diagnostics."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl import cli
from conftest import DATA, EXAMPLES, random_graph, run_cli

SPGEMM = EXAMPLES / "spgemm.sdsl"
DIAG = re.compile(r"^(?P<file>[^\n:]+):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.+)$", re.M)


def write_mtx(path, matrix):
    scipy.io.mmwrite(str(path), sp.coo_array(matrix))
    return path


class Result:
    """What an in-process ``cli.main`` call returned and printed (same fields as ``subprocess.run``)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli_main(capsys):
    """Run ``sparsedsl ARGS`` in this process: the same ``main`` as the console script, without start-up cost."""

    def run(*argv: str) -> Result:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def parse_diag(stderr: str):
    """The diagnostic's location and message, and the caret's column (1-based) on the line after the source."""
    m = DIAG.search(stderr)
    assert m, stderr
    lines = stderr[m.end():].lstrip("\n").splitlines()
    assert len(lines) >= 2, stderr
    caret_col = lines[1].index("^") + 1
    return m["file"], int(m["line"]), int(m["col"]), m["msg"], lines[0], caret_col


# ---------------------------------------------------------------- help and usage

@pytest.mark.parametrize("command", ["check", "compile", "run", "sim", "explain", "demo"])
def test_help_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sparsedsl {command}")


def test_top_level_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("check", "compile", "run", "sim", "explain", "demo"):
        assert command in result.stdout


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["check"],
    ["compile", str(SPGEMM)],                               # --target is required
    ["compile", str(SPGEMM), "--target", "gpu"],
    ["compile", str(SPGEMM), "--target", "ref", "--emit", "asm"],
    ["run", str(SPGEMM), "--input", "A"],                   # NAME=VALUE expected
    ["run", str(SPGEMM), "--size", "N=many"],
])
def test_bad_usage_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        code = cli.main(argv)
        raise SystemExit(code)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# ---------------------------------------------------------------- check

def test_check_success_prints_nothing():
    files = [str(p) for p in sorted(EXAMPLES.glob("*.sdsl"))]
    result = run_cli("check", *files)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_check_syntax_error_diagnostic(tmp_path):
    bad = tmp_path / "bad.sdsl"
    bad.write_text("input A: csr<f32>[N, N]\noutput C: csr<f32>[N, N]\nC[i, j] = A[i, j] * * 2\n")
    result = run_cli("check", str(bad))
    assert result.returncode == 1 and result.stdout == ""
    file, line, col, _msg, src, caret = parse_diag(result.stderr)
    assert (file, line) == (str(bad), 3)
    assert src == "C[i, j] = A[i, j] * * 2"
    assert caret == col == 21  # the second '*'
    assert "Traceback" not in result.stderr


def test_check_name_error_diagnostic(tmp_path):
    bad = tmp_path / "names.sdsl"
    bad.write_text("input A: csr<f32>[N, N]\noutput C: csr<f32>[N, N]\n\nC[i, j] = A[i, j] + B[i, j]\n")
    result = run_cli("check", str(bad))
    assert result.returncode == 1
    file, line, col, msg, src, caret = parse_diag(result.stderr)
    assert (file, line, col, caret) == (str(bad), 4, 21, 21)
    assert "B" in msg and src.startswith("C[i, j]")


def test_check_reports_every_bad_file(tmp_path, cli_main):
    bad1 = tmp_path / "a.sdsl"
    bad1.write_text("input A: csr<f32>[N, N]\noutput C: dense<f32>[N]\nC[i] = sum[j] A[i, q]\n")
    bad2 = tmp_path / "b.sdsl"
    bad2.write_text("input x: f32\noutput y: f32\ny = x +\n")
    result = cli_main("check", str(bad1), str(SPGEMM), str(bad2))
    assert result.returncode == 1
    files = [m["file"] for m in DIAG.finditer(result.stderr)]
    assert files == [str(bad1), str(bad2)]


def test_check_missing_file(cli_main):
    result = cli_main("check", "no/such/file.sdsl")
    assert result.returncode == 1
    # located at the file's start, as every user error is (spec § 10), though there is no text to show
    assert result.stderr.splitlines()[0] == "no/such/file.sdsl:1:1: error: cannot read 'no/such/file.sdsl': no such file"
    assert "Traceback" not in result.stderr


BAD_PROGRAMS = [
    # (program text, line, column) of the first error
    ("input A: csr<f32>[N, N]\noutput C: csr<f32>[N, N]\nC[i, j] = A[i, j] +\n", 3, 20),
    ("input A: csr<f32>[N, N]\noutput C: csr<f32>[N, N]\nC[i, j] = A[i, j] + Z[i, j]\n", 3, 21),
    ("input A: csr<f32>[N, N]\noutput C: dense<f32>[N]\nC[i] = A[i, j]\n", 3, 13),
    ("input A: csr<f32>[N, N]\ninput A: csr<f32>[N, N]\noutput C: csr<f32>[N, N]\nC[i, j] = A[i, j]\n", 2, 1),
    ("input A: csr<f99>[N, N]\noutput C: csr<f32>[N, N]\nC[i, j] = A[i, j]\n", 1, 14),
    ("input A: csr<f32>[N, N]\noutput C: csr<f32>[N, N]\nC[i, j] = A[i, j]\n"
     "schedule C:\n    accumulator quantum\n", 5, 5),
    ("import nosuchmodule\ninput A: csr<f32>[N, N]\noutput C: csr<f32>[N, N]\nC[i, j] = A[i, j]\n", 1, 1),
    ("input A: csr<f32>[N, N]\noutput C: csr<f32>[N, N]\nC[i, j] = A[i, j]\nC[i, j] = A[j, i]\n", 4, 1),
    ("input x: f32\noutput y: f32\ny = x +* 2\n", 3, 8),
    ("input A: csr<f32>[N, N]\noutput C: csr<f32>[N, N]\nrepeat:\n    C[i, j] = A[i, j]\n", 3, 1),
]


@pytest.mark.parametrize("text, line, col", BAD_PROGRAMS)
def test_bad_programs_are_diagnostics_with_location(text, line, col, tmp_path, cli_main):
    path = tmp_path / "bad.sdsl"
    path.write_text(text)
    result = cli_main("check", str(path))
    assert result.returncode == 1, result.stderr
    file, got_line, got_col, _msg, src, caret = parse_diag(result.stderr)
    assert file == str(path)
    assert got_line == line, result.stderr
    assert src == text.splitlines()[got_line - 1]
    assert caret == got_col == col, result.stderr


@settings(max_examples=60)
@given(data=st.data())
def test_mutated_programs_never_reach_an_internal_error(data, tmp_path_factory):
    """Delete, duplicate or replace a random span of a valid example: the CLI answers 0 or 1, never 3."""
    examples = sorted(EXAMPLES.glob("*.sdsl"))
    text = data.draw(st.sampled_from(examples)).read_text()
    start = data.draw(st.integers(0, len(text)))
    stop = data.draw(st.integers(start, min(len(text), start + 12)))
    insert = data.draw(st.sampled_from(["", "(", ")", "[", "]", ":", "\n", "    ", "where", "sum[k]", "@", ".T",
                                        "0x", "1e", "#", ",", "=", "+=", "csr", "<f32>", "not", "inf", "A"]))
    path = tmp_path_factory.mktemp("fuzz") / "mutant.sdsl"
    path.write_text(text[:start] + insert + text[stop:])
    code = cli.main(["check", str(path)])
    assert code in (0, 1)


# ---------------------------------------------------------------- compile

def test_compile_emit_ast_is_valid_source(tmp_path, cli_main):
    result = cli_main("compile", str(SPGEMM), "--target", "ref", "--emit", "ast")
    assert result.returncode == 0, result.stderr
    assert "sum[k]" in result.stdout and "schedule C" in result.stdout
    again = tmp_path / "again.sdsl"
    again.write_text(result.stdout)
    assert cli_main("check", str(again)).returncode == 0


def test_compile_emit_ir(cli_main):
    result = cli_main("compile", str(SPGEMM), "--target", "ref", "--emit", "ir")
    assert result.returncode == 0, result.stderr
    from sparsedsl import load

    assert result.stdout.rstrip("\n") == str(load(SPGEMM).ir()).rstrip("\n")


def test_compile_ref_has_no_loop_ir(cli_main):
    result = cli_main("compile", str(SPGEMM), "--target", "ref", "--emit", "loops")
    assert result.returncode == 1
    assert result.stderr.startswith("error: target 'ref' has no loop IR yet")
    assert "Traceback" not in result.stderr


def test_compile_emit_code_prints_the_backend_source(cli_main):
    from sparsedsl import load

    result = cli_main("compile", str(SPGEMM), "--target", "ref", "--emit", "code")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == load(SPGEMM).compile("ref").source.rstrip("\n")
    # the generated module names the package's version, as `sparsedsl --version` does
    result = cli_main("compile", str(SPGEMM), "--target", "numba", "--emit", "code")
    assert result.stdout.startswith(f"# generated by sparsedsl {sd.__version__} (numba target "), result.stdout[:80]


def test_compile_quiet_success(cli_main):
    result = cli_main("compile", str(SPGEMM), "--target", "ref")
    assert (result.returncode, result.stdout) == (0, "")


def test_unbuilt_target_is_a_clean_diagnostic():
    import importlib.util

    if importlib.util.find_spec("sparsedsl.backends.piuma") is not None:
        pytest.skip("the piuma backend is part of this build")
    result = run_cli("compile", str(SPGEMM), "--target", "piuma")
    assert result.returncode == 1
    # at the program's first declaration: the target cannot compute any of it
    first = DIAG.match(result.stderr)
    assert first and first["file"] == str(SPGEMM) and first["msg"] == "target 'piuma' is not available in this build"
    assert int(first["line"]) == sd.load(SPGEMM).ir().program.span.line and "^" in result.stderr


# ---------------------------------------------------------------- run

def test_run_writes_outputs_matching_scipy(tmp_path):
    rng = np.random.default_rng(0)
    A = sp.random_array((30, 20), density=0.15, format="csr", rng=rng, dtype=np.float32)
    B = sp.random_array((20, 25), density=0.15, format="csr", rng=rng, dtype=np.float32)
    write_mtx(tmp_path / "A.mtx", A)
    write_mtx(tmp_path / "B.mtx", B)
    out = tmp_path / "out"
    result = run_cli("run", str(SPGEMM), "--input", f"A={tmp_path / 'A.mtx'}", f"B={tmp_path / 'B.mtx'}",
                     "--output", str(out), "--time")
    assert result.returncode == 0, result.stderr
    want = sp.csr_array(A @ B)
    want.sort_indices()
    got = sp.csr_array(scipy.io.mmread(str(out / "C.mtx")))
    got.sort_indices()
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=1e-5)
    assert re.search(rf"^C: shape 30x25, format csr, dtype f32, {want.nnz} stored entries$", result.stdout, re.M)
    assert re.search(r"^compile time: [\d.]+ ms \(of which [\d.]+ ms at the first call\)$", result.stdout, re.M)
    assert re.search(r"^run time: [\d.]+ ms$", result.stdout, re.M)


def test_run_dense_output_npy_and_scalar_input(tmp_path):
    G = random_graph(25, 0.1, 1)
    rng = np.random.default_rng(2)
    H = rng.standard_normal((25, 4)).astype(np.float32)
    W = rng.standard_normal((4, 3)).astype(np.float32)
    write_mtx(tmp_path / "G.mtx", G)
    np.save(tmp_path / "H.npy", H)
    np.save(tmp_path / "W.npy", W)
    result = run_cli("run", str(EXAMPLES / "gin.sdsl"), "--input", f"G={tmp_path / 'G.mtx'}",
                     f"H={tmp_path / 'H.npy'}", f"W={tmp_path / 'W.npy'}", "eps=0.5", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    Y = np.load(tmp_path / "Y.npy")
    want = np.maximum((1.5 * H + (G.toarray() != 0).astype(np.float32) @ H) @ W, 0)
    np.testing.assert_allclose(Y, want, rtol=1e-5, atol=1e-5)
    assert "Y: shape 25x3, format dense, dtype f32, 75 stored entries" in result.stdout


def test_run_scalar_output_on_edge_list(tmp_path):
    edges = tmp_path / "k4.el"
    edges.write_text("0 1\n1 0\n0 2\n2 0\n0 3\n3 0\n1 2\n2 1\n1 3\n3 1\n2 3\n3 2\n")
    result = run_cli("run", str(EXAMPLES / "triangles.sdsl"), "--input", f"A={edges}")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^triangles: .*value 4$", result.stdout, re.M)  # K4 has 4 triangles


def test_run_random_input_with_size(tmp_path, cli_main):
    result = cli_main("run", str(EXAMPLES / "spmm.sdsl"), "--input", "A=random:1", "X=random:2",
                     "--size", "N=40", "F=3", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "Y.npy").shape == (40, 3)


def test_run_bad_input_is_a_user_error(tmp_path, cli_main):
    write_mtx(tmp_path / "A.mtx", sp.eye(4, format="csr"))
    write_mtx(tmp_path / "B.mtx", sp.eye(5, format="csr"))
    (tmp_path / "garbage.mtx").write_text("%%MatrixMarket matrix coordinate real general\n3 3 2\n1 1\n")
    np.save(tmp_path / "vector.npy", np.ones(4, dtype=np.float32))
    (tmp_path / "B.xyz").write_text("1 2\n")
    bad_values = [
        "B=" + str(tmp_path / "B.mtx"),        # K is 4 in A but 5 in B
        "B=" + str(tmp_path / "nope.mtx"),     # no such file
        "B=" + str(tmp_path / "garbage.mtx"),  # unreadable Matrix Market
        "B=" + str(tmp_path / "vector.npy"),   # wrong rank
        "B=" + str(tmp_path / "B.xyz"),        # unknown file type
        "B=1.5",                               # a scalar for a matrix
        "B=random:seed",                       # not an integer seed
        "Z=1",                                 # no such input
        "A=" + str(tmp_path / "A.mtx"),        # given twice
    ]
    for value in bad_values:
        result = cli_main("run", str(SPGEMM), "--input", f"A={tmp_path / 'A.mtx'}", value)
        assert result.returncode == 1, (value, result.stderr)
        assert "error:" in result.stderr, value
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr, value


def test_run_random_inputs_numpy_cannot_draw_are_input_errors(cli_main):
    # numpy raised ValueError ("array is too big", "expected non-negative integer"): an internal error
    for value, sizes in (("A=random:1", ("N=100000000000", "F=4")), ("A=random:-5", ("N=6", "F=3"))):
        result = cli_main("run", str(EXAMPLES / "spmm.sdsl"), "--input", value, "X=random:2", "--size", *sizes)
        assert result.returncode == 1, (value, result.stderr)
        assert "input A: cannot draw" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr


def test_run_scalar_input_type_errors(cli_main):
    result = cli_main("run", str(EXAMPLES / "bfs.sdsl"), "--input", "A=random:1", "source=1.5",
                                  "--size", "N=8")
    assert result.returncode == 1
    assert "source" in result.stderr and "internal error" not in result.stderr


def test_run_missing_input_points_at_its_declaration(tmp_path, cli_main):
    write_mtx(tmp_path / "A.mtx", sp.eye(4, format="csr"))
    result = cli_main("run", str(SPGEMM), "--input", f"A={tmp_path / 'A.mtx'}")
    assert result.returncode == 1
    file, line, _col, msg, src, _caret = parse_diag(result.stderr)
    assert (file, line) == (str(SPGEMM), 3) and "B" in msg and src.startswith("input  B")


# ---------------------------------------------------------------- sim, explain, demo

def test_sim_without_piuma_is_a_clean_diagnostic():
    import importlib.util

    if importlib.util.find_spec("sparsedsl.backends.piuma") is not None:
        pytest.skip("the piuma backend is part of this build")
    result = run_cli("sim", str(SPGEMM), "--input", "A=random:1", "B=random:2", "--size", "M=4", "K=4", "N=4")
    assert result.returncode == 1
    first = DIAG.match(result.stderr)
    assert first and first["file"] == str(SPGEMM) and first["msg"] == "target 'piuma' is not available in this build"
    assert result.stdout == ""


def test_explain_prints_formats(tmp_path, cli_main):
    write_mtx(tmp_path / "G.mtx", random_graph(10, 0.3, 3))
    result = cli_main("explain", str(EXAMPLES / "graph_attention.sdsl"), "--input", f"G={tmp_path / 'G.mtx'}")
    assert result.returncode == 0, result.stderr
    assert "sizes: N=10" in result.stdout
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.startswith("  ")}
    assert {"G", "Q", "K", "V", "scale", "O", "S", "P"} <= set(rows)
    assert "csr<bool>[N, N]" in rows["G"] and "declared" in rows["G"]
    assert "temp" in rows["S"] and "temp" in rows["P"]


def test_check_and_explain_a_module_of_defs(tmp_path, cli_main):
    from test_api import GNN_MODULE

    path = tmp_path / "gnn.sdsl"
    path.write_text(GNN_MODULE)
    assert (cli_main("check", str(path)).returncode, cli_main("check", str(path)).stderr) == (0, "")
    explained = cli_main("explain", str(path))
    assert explained.returncode == 0
    assert explained.stdout.splitlines()[0] == f"module {path}"
    assert "def gin" in explained.stdout and "def mean_agg" in explained.stdout
    ran = cli_main("run", str(path))
    assert ran.returncode == 1 and "is a module of defs (gin, mean_agg), not a program" in ran.stderr


def test_demo_counts_triangles(tmp_path):
    result = run_cli("demo", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "triangles: 1,612,010 (matches" in result.stdout
    assert "target numba" in result.stdout  # the compiled target unless --target says otherwise


def test_run_compiles_for_numba_unless_told(cli_main, monkeypatch):
    """interface.md: `run FILE [--target numba]`; `--target ref` interprets."""
    from sparsedsl import api

    asked = []
    compile_ = api.Program.compile
    monkeypatch.setattr(api.Program, "compile", lambda self, target="ref", **kw: asked.append(target)
                        or compile_(self, target, **kw))
    args = ("run", str(EXAMPLES / "spmm.sdsl"), "--input", "A=random:1", "X=random:2", "--size", "N=6", "F=3")
    assert cli_main(*args).returncode == 0
    assert cli_main(*args, "--target", "ref").returncode == 0
    assert asked == ["numba", "ref"]


def test_python_dash_m_and_console_script_agree():
    exe = shutil.which("sparsedsl")
    if exe is None:
        pytest.skip("the sparsedsl console script is not on PATH")
    import subprocess

    result = subprocess.run([exe, "check", str(SPGEMM)], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")


def test_debug_keeps_user_errors_as_diagnostics(tmp_path, cli_main):
    bad = tmp_path / "bad.sdsl"
    bad.write_text("input A: csr<f32>[N, N]\noutput C: csr<f32>[N, N]\nC[i, j] = A[i, j] +\n")
    plain = cli_main("check", str(bad))
    debug = cli_main("--debug", "check", str(bad))
    assert plain.returncode == debug.returncode == 1
    assert "Traceback" not in plain.stderr
    assert DIAG.search(plain.stderr) and DIAG.search(debug.stderr)


def test_internal_errors_exit_3_and_debug_shows_the_traceback(monkeypatch, capsys):
    from sparsedsl import api

    def broken(path):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "load", broken)
    assert cli.main(["check", str(SPGEMM)]) == 3
    err = capsys.readouterr().err
    assert err.strip() == "internal error: RuntimeError: boom (run with --debug for a traceback)"
    assert cli.main(["check", str(SPGEMM), "--debug"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err


def test_data_files_are_bundled():
    for name in ("ego-Facebook", "ca-HepTh", "wiki-Vote", "bcsstk13"):
        assert (DATA / f"{name}.mtx.gz").stat().st_size > 10_000
        assert name in (DATA / "README.md").read_text()


def test_unknown_input_name_is_located_at_the_input_declarations(cli_main):
    res = cli_main("run", str(EXAMPLES / "pagerank.sdsl"), "--input", "B=1")
    assert res.returncode == 1
    file, line, col, msg, _, caret = parse_diag(res.stderr)
    assert (line, col, caret) == (2, 1, 1)
    assert "no input named 'B'" in msg and "inputs: A, alpha" in msg


def test_compile_numba_artifact_runs_without_sparsedsl(tmp_path, cli_main):
    import subprocess
    import sys

    res = cli_main("compile", str(SPGEMM), "--target", "numba", "-o", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    module = tmp_path / "out" / "kernel_numba.py"
    assert module.is_file()
    A = sp.random_array((40, 30), density=0.1, format="csr", dtype=np.float32, random_state=5)
    B = sp.random_array((30, 20), density=0.1, format="csr", dtype=np.float32, random_state=6)
    np.savez(tmp_path / "in.npz", pa=A.indptr, ia=A.indices, va=A.data, pb=B.indptr, ib=B.indices, vb=B.data)
    # sparsedsl made unimportable: the module must need only numpy and numba
    script = (
        "import sys, importlib.util, numpy as np\n"
        "sys.modules['sparsedsl'] = None\n"
        f"spec = importlib.util.spec_from_file_location('k', {str(module)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"d = np.load({str(tmp_path / 'in.npz')!r})\n"
        "i64 = lambda a: a.astype(np.int64)\n"
        "out = m.run(i64(d['pa']), i64(d['ia']), d['va'], i64(d['pb']), i64(d['ib']), d['vb'], 40, 30, 20)\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, p=out['C'][0], i=out['C'][1], v=out['C'][2])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "out.npz")
    C = sp.csr_array((got["v"], got["i"], got["p"]), shape=(40, 20))
    np.testing.assert_allclose(C.toarray(), (A @ B).toarray(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("command", ["run", "compile"])
@pytest.mark.parametrize("where", ["a-file", "below-a-file"])
def test_an_output_folder_that_cannot_be_one_is_a_user_error(command, where, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    folder = blocker if where == "a-file" else blocker / "sub"
    np.save(tmp_path / "A.npy", np.eye(3))
    prog = tmp_path / "p.sdsl"
    prog.write_text("input A: csr<f64>[N, N]\noutput B: csr<f64>[N, N]\nB[i, j] = 2.0 * A[i, j]\n")
    if command == "run":
        argv = ["run", str(prog), "--input", f"A={tmp_path / 'A.npy'}", "--output", str(folder)]
    else:
        argv = ["compile", str(prog), "--target", "numba", "-o", str(folder)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    # at the first output (run) or the program's first declaration (compile): what the folder was for
    assert err.startswith(f"{prog}:{2 if command == 'run' else 1}:1: error: "), err
    assert str(folder) in err and "cannot use it as the output folder" in err, err
    assert "internal error" not in err and blocker.read_text() == "not a folder"


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_an_empty_program_is_located_in_its_file(text, tmp_path, capsys):
    path = tmp_path / "empty.sdsl"
    path.write_text(text)
    assert cli.main(["check", str(path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"{path}:1:1: error: this file declares no inputs or outputs: it is a module, not a program"
    assert lines[1] == text.rstrip("\n") and lines[2] == "^"


def test_input_and_size_errors_are_located_or_named(tmp_path, capsys):
    bsr = tmp_path / "bsr.sdsl"
    bsr.write_text("input W: bsr(2, 2)<f32>[N, M]\noutput c: f32\nc = sum[i, j] W[i, j]\n")
    np.save(tmp_path / "A.npy", np.eye(5))
    spmv = tmp_path / "s.sdsl"
    spmv.write_text("input A: csr<f64>[N, N]\noutput B: csr<f64>[N, N]\nB[i, j] = 2.0 * A[i, j]\n")
    a = f"A={tmp_path / 'A.npy'}"
    cases = [
        # a random input of sizes its blocks do not divide: at the input's declaration
        (["run", str(bsr), "--input", "W=random:1", "--size", "N=5", "M=4"],
         f"{bsr}:1:1: error: input W: shape (5, 4) is not divisible by the block size (2, 2)"),
        (["run", str(spmv), "--input", a, a], f"{spmv}:1:1: error: input 'A' is given twice"),
        (["run", str(bsr), "--input", "W=random:1", "--size", "N=4", "M=4", "Q=3"],
         f"{bsr}:1:1: error: --size Q=3: {bsr} has no size named 'Q' (sizes: M, N)"),
        # at the declaration of the input that fixes the size
        (["run", str(spmv), "--input", a, "--size", "N=7"], f"{spmv}:1:1: error: --size N=7, but input A fixes N = 5"),
    ]
    for argv, first_line in cases:
        assert cli.main(argv) == 1, argv
        assert capsys.readouterr().err.splitlines()[0] == first_line
    assert cli.main(["run", str(spmv), "--input", a, "--size", "N=5"]) == 0  # agreeing with the inputs is fine


def test_a_misspelt_compile_option_is_an_error():
    prog = sd.loads("input A: csr<f64>[N, N]\noutput B: csr<f64>[N, N]\nB[i, j] = 2.0 * A[i, j]\n")
    with pytest.raises(sd.SdslTargetError, match="unknown option of target 'numba': reasoc") as info:
        prog.compile("numba", reasoc=False)
    assert (info.value.line, info.value.col) == (1, 1)  # the program's first declaration


def test_a_file_that_is_not_utf8_is_located_at_the_byte(tmp_path, capsys):
    path = tmp_path / "latin1.sdsl"
    path.write_bytes(b"input A: csr<f64>[N, N]\noutput B: csr<f64>[N, N]\nB[i, j] = A[i, j]  # caf\xe9\n")
    assert cli.main(["check", str(path)]) == 1
    head, line, caret = capsys.readouterr().err.splitlines()
    assert head == f"{path}:3:25: error: not UTF-8 text (invalid continuation byte at byte 73)"
    assert line == "B[i, j] = A[i, j]  # caf\ufffd" and caret == " " * 24 + "^"


def test_time_counts_the_first_calls_compilation_as_compile_time(tmp_path, cli_main):
    np.save(tmp_path / "A.npy", np.eye(4))
    prog = tmp_path / "double.sdsl"
    prog.write_text("input A: csr<f64>[N, N]\noutput B: csr<f64>[N, N]\nB[i, j] = 2.0 * A[i, j]\n")
    result = cli_main("run", str(prog), "--input", f"A={tmp_path / 'A.npy'}", "--time", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    compiled = re.search(r"^compile time: ([0-9.]+) ms \(of which ([0-9.]+) ms at the first call\)$", result.stdout, re.M)
    ran = re.search(r"^run time: ([0-9.]+) ms$", result.stdout, re.M)
    assert compiled and ran, result.stdout
    assert float(compiled[2]) <= float(compiled[1])
    # the outputs are those of a call (the second): still right
    np.testing.assert_array_equal(scipy.io.mmread(str(tmp_path / "B.mtx")).toarray(), 2 * np.eye(4))


def test_a_pattern_file_feeds_an_integer_input_and_a_column_file_a_vector(tmp_path, cli_main):
    pattern = tmp_path / "g.mtx"
    pattern.write_text("%%MatrixMarket matrix coordinate pattern general\n3 3 3\n1 2\n2 3\n3 1\n")
    prog = tmp_path / "deg.sdsl"
    prog.write_text("input A: csr<i32>[N, N]\noutput d: coo<i32>[N]\nd[i] = sum[j] A[i, j] where i != 1\n")
    out = tmp_path / "out"
    result = cli_main("run", str(prog), "--target", "ref", "--input", f"A={pattern}", "--output", str(out))
    assert result.returncode == 0, result.stderr
    written = scipy.io.mmread(str(out / "d.mtx"))
    assert written.shape == (3, 1)
    np.testing.assert_array_equal(written.toarray().ravel(), [1, 0, 1])
    # run's own rank-1 output read back as a rank-1 input
    again = tmp_path / "twice.sdsl"
    again.write_text("input d: coo<i32>[N]\noutput e: dense<i64>[N]\ne[i] = 2 * fill(d[i], 5)\n")
    result = cli_main("run", str(again), "--target", "ref", "--input", f"d={out / 'd.mtx'}", "--output", str(out))
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(out / "e.npy"), [2, 10, 2])


def test_a_float_past_the_declared_range_is_inf_without_a_warning(tmp_path, cli_main):
    prog = tmp_path / "narrow.sdsl"
    prog.write_text("input s: f32\noutput t: f32\nt = s * 2.0\n")
    result = cli_main("run", str(prog), "--target", "ref", "--input", "s=1e39")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "value inf" in result.stdout
