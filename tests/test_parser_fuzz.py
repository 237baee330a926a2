"""Fuzzing the parser: whatever the text, parse() returns a Module or raises SdslSyntaxError whose span lies
inside the text and whose message speaks the language, never Lark's; nothing else escapes."""
from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsedsl.core.errors import SdslSyntaxError
from sparsedsl.frontend import syntax as ast
from sparsedsl.frontend.parser import parse

PROGRAMS = Path(__file__).parent / "programs"
CORPUS = [p.read_text() for p in sorted(PROGRAMS.glob("*.sdsl"))]

PUNCTUATION = [
    "(", ")", "[", "]", "{", "}", ",", ":", ".", "=", "+=", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*",
    "/", "//", "%", "&", "|", "@", "->",
]
WORDS = sorted(ast.KEYWORDS) + ["fill", "x", "A", "i", "j", "k", "N", "inf", "gnn", "T", "group", "hash"]
NUMBERS = ["0", "42", "0x2A", "1.5", "1e-3", ".5", "2.", "1e", "0x"]
LAYOUT = ["\n", "\n    ", "\n\t", "\n  ", "\r\n", "  ", "# note\n", "#", "\n\n"]
JUNK = ["$", "'", '"', "?", "!", "\\", "\x00", "é", "\u2028", "\x0c", ";", "`"]
VOCABULARY = PUNCTUATION + WORDS + NUMBERS + LAYOUT + JUNK

LARK_NAMES = re.compile(r"\b(RSQB|LSQB|LPAR|RPAR|COMMA|__ANON_\d+|_NEWLINE|_INDENT|_DEDENT|\$END|NAME|NUMBER)\b")


def check(text: str) -> str:
    """The property every input must satisfy; returns "parsed" or "diagnosed" (any other exception fails)."""
    try:
        module = parse(text, "fuzz.sdsl")
    except SdslSyntaxError as err:
        span = err.span
        assert span is not None and span.source is not None and span.source.text == text
        lines = text.split("\n")
        assert 1 <= span.line <= len(lines), (span, text)
        assert 1 <= span.col <= len(lines[span.line - 1]) + 1, (span, text)
        assert err.message and not LARK_NAMES.search(err.message), err.message
        assert err.render().startswith(f"fuzz.sdsl:{span.line}:{span.col}: error: ")
        return "diagnosed"
    assert isinstance(module, ast.Module)
    return "parsed"


tokens = st.sampled_from(VOCABULARY)
separators = st.sampled_from(["", " ", " ", " "])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(tokens, separators), max_size=40))
def test_random_token_streams(pairs):
    assert check("".join(tok + sep for tok, sep in pairs)) in ("parsed", "diagnosed")


# Statement-shaped streams get further into the grammar than uniform noise does.
_starts = st.sampled_from(["x = ", "X[i, j] = ", "input A: ", "output y", "repeat ", "def f(", "schedule C:\n    ",
                           "y[i] max= ", "from a import ", "import "])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_starts, st.lists(st.tuples(tokens, separators), max_size=10)), min_size=1, max_size=4))
def test_random_statement_shaped_streams(lines):
    assert check("".join(start + "".join(t + s for t, s in rest) + "\n" for start, rest in lines)) in (
        "parsed", "diagnosed")


_TOKEN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|0[xX][0-9a-fA-F]+|\d+\.\d+|\d+|\.\d+|//|->|[+<>=!]=|\s+|#[^\n]*|.", re.S)


def _tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def _mutate(text: str, data) -> str:
    pieces = _tokenize(text) if data.draw(st.booleans(), label="token level") else list(text)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        if not pieces:
            pieces = [data.draw(tokens)]
        i = data.draw(st.integers(0, len(pieces) - 1), label="at")
        op = data.draw(st.sampled_from(["delete", "insert", "duplicate", "swap", "replace"]), label="op")
        if op == "delete":
            del pieces[i]
        elif op == "insert":
            pieces.insert(i, data.draw(st.one_of(tokens, st.characters()), label="new"))
        elif op == "duplicate":
            pieces.insert(i, pieces[i])
        elif op == "swap" and i + 1 < len(pieces):
            pieces[i], pieces[i + 1] = pieces[i + 1], pieces[i]
        elif op == "replace":
            pieces[i] = data.draw(tokens, label="new")
    return "".join(pieces)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), st.data())
def test_mutated_corpus_programs(program, data):
    assert check(_mutate(program, data)) in ("parsed", "diagnosed")


def test_corpus_itself_parses():
    for text in CORPUS:
        assert check(text) == "parsed", text


def test_edge_texts():
    for text in ["", "\n", "\r\n", "#", "(", ")", "]", "[" * 50, "x = " + "(" * 300 + "1" + ")" * 300,
                 "x = " + "-" * 500 + "1", "\t", "\x00", "x =\\\n 1", "repeat", "def", ":", "\n    x = 1\n"]:
        assert check(text) in ("parsed", "diagnosed"), repr(text)
