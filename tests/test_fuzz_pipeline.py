"""Robustness of the whole front half: any text, however broken, gives a diagnostic or a checked program.

Mutations of valid programs (token and character edits) go through parse → check → passes; the only exception
allowed out is SdslError, and its location must lie inside the text. A fixed corpus of broken programs goes
through the command line: exit status 1, a `FILE:LINE:COL: error:` line and a caret, never a traceback.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsedsl.core.errors import SdslError
from sparsedsl.frontend.parser import parse
from sparsedsl.passes.pipeline import run_passes
from sparsedsl.tensor_ir.check import check_module
from sparsedsl.tensor_ir.loader import ModuleLoader

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted((ROOT / "examples").glob("*.sdsl")) + sorted((ROOT / "tests" / "programs").glob("*.sdsl"))
TEXTS = [p.read_text() for p in CORPUS]
TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|\d+\.?\d*(?:e-?\d+)?|//|<=|>=|==|!=|\+=|[^\sA-Za-z0-9_]")
VOCAB = ["input", "output", "const", "def", "return", "where", "repeat", "at", "most", "until", "schedule", "sum",
         "max", "softmax", "topk", "csr", "dense", "bsr", "f32", "i64", "bool", "(", ")", "[", "]", ",", ":", "=",
         "+=", "max=", "*", "+", "-", "@", ".T", "<", "==", "not", "and", "or", "i", "j", "k", "A", "B", "C", "N",
         "\n", "\n    ", " ", "1", "0.5", "-1", "fill", "import", "from", "#"]


def front_half(text: str) -> str:
    """'ok' for a checked program, 'error' for a well-located diagnostic; any other exception fails the test."""
    try:
        prog = check_module(parse(text, "fuzz.sdsl"), ModuleLoader([ROOT / "examples"], use_env=False))
        run_passes(prog)
        return "ok"
    except SdslError as err:
        if err.span is not None:
            lines = text.splitlines() or [""]
            assert 1 <= err.line <= len(lines) + 1, err.render()
            assert err.col >= 1, err.render()
        assert err.render().count("error:") >= 1  # rendering never fails either
        return "error"


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(TEXTS))
    toks = TOKEN.findall(text)
    for _ in range(draw(st.integers(1, 4))):
        if not toks:
            break
        at = draw(st.integers(0, len(toks) - 1))
        kind = draw(st.sampled_from(["delete", "insert", "duplicate", "swap", "replace"]))
        if kind == "delete":
            del toks[at]
        elif kind == "insert":
            toks.insert(at, draw(st.sampled_from(VOCAB)))
        elif kind == "duplicate":
            toks.insert(at, toks[at])
        elif kind == "swap" and at + 1 < len(toks):
            toks[at], toks[at + 1] = toks[at + 1], toks[at]
        else:
            toks[at] = draw(st.sampled_from(VOCAB))
    return "".join(toks)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_programs_give_diagnostics_or_ir(text):
    assert front_half(text) in ("ok", "error")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(VOCAB), max_size=40).map("".join))
def test_token_soup_gives_diagnostics(text):
    assert front_half(text) in ("ok", "error")


BROKEN = {
    "syntax.sdsl": "input A: csr<f32>[M, K\noutput C\nC = A\n",
    "keyword.sdsl": "input sum: f32\noutput C: f32\nC = sum\n",
    "names.sdsl": "input A: csr<f32>[M, K]\noutput C: csr<f32>[M, K]\nC[i, k] = Z[i, k]\n",
    "ranges.sdsl": "input A: csr<f32>[M, K]\ninput B: csr<f32>[M, K]\noutput C\nC = A @ B\n",
    "types.sdsl": "input A: csr<f32>[M, K]\noutput C: csr<i8>[M, K]\nC[i, k] = A[i, k]\n",
    "schedule.sdsl": "input A: csr<f32>[M, K]\noutput C: csr<f32>[M, K]\nC[i, k] = A[i, k]\nschedule C:\n    tile i\n",
    "indent.sdsl": "input x: f64\noutput y: f64\ny = x\nrepeat at most 2:\n    y = y + 1.0\n      y = y\n",
    "format.sdsl": "input A: bsr(2)<f32>[M, K]\noutput C: f32\nC = sum[i, k] A[i, k]\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_cli_reports_broken_programs(name, tmp_path):
    path = tmp_path / name
    path.write_text(BROKEN[name])
    proc = subprocess.run([sys.executable, "-m", "sparsedsl", "check", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    first = proc.stderr.splitlines()[0]
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: error: ", first), proc.stderr
    assert any(set(line.strip()) <= {"^", "~"} and "^" in line for line in proc.stderr.splitlines()[1:]), proc.stderr
