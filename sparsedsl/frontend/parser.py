"""The text front end: ``.sdsl`` source to ``syntax.Module``.

``parse(text, name)`` lexes with Lark's basic lexer, runs a Python-style indenter over the tokens (a fresh
one per call, so nothing is shared between parses), feeds them to the LALR parser built once per process from
``sparsedsl.grammar/sdsl.lark``, and turns the tree into AST nodes (``to_ast``).  Every failure is an
``SdslSyntaxError`` with the exact location and a message written for people: Lark's exceptions never
escape, and Lark's terminal names (``RSQB``, ``__ANON_3``) never appear in a message.

The indenter is not handed to Lark as ``postlex``: Lark would keep that one stateful object inside the cached
parser, shared by every parse.  Feeding tokens ourselves also lets a diagnostic look at the token before the
failure (``y = sum + 1`` is a keyword used as a name, found only at the '+').
"""
from __future__ import annotations

import functools
import importlib.resources
import importlib.util
from collections.abc import Iterable, Iterator

from lark import Lark, Token
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError
from lark.indenter import DedentError, Indenter
from lark.lexer import BasicLexer, LexerThread
from lark.parsers.lalr_interactive_parser import InteractiveParser

from sparsedsl.core.errors import SdslError, SdslSyntaxError, Source, Span
from sparsedsl.frontend import syntax
from sparsedsl.frontend.to_ast import ToAst

__all__ = ["parse", "grammar_text", "lark_parser"]

_OPENERS = {"LPAR", "LSQB", "LBRACE"}
_CLOSERS = {"RPAR", "RSQB", "RBRACE"}
_LAYOUT = {"_NEWLINE", "_INDENT", "_DEDENT"}

# Tokens whose spelling is not a fixed string get a description instead of a quoted value.
_DESCRIPTIONS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "_NEWLINE": "end of line",
    "_INDENT": "an indented block",
    "_DEDENT": "end of block",
    "$END": "end of input",
}

# Keywords that start an expression only when followed by '[' or '(' (sum[k] e, f32(x), max(a, b)); seen
# alone, the user meant them as a name.
_BRACKETED_KEYWORDS = frozenset(syntax.PREFIX_OPS) | frozenset(syntax.SCALAR_TYPES)


def grammar_text() -> str:
    """The grammar, read from the installed package (works from a wheel, without the source tree)."""
    return importlib.resources.files("sparsedsl.grammar").joinpath("sdsl.lark").read_text(encoding="utf-8")


@functools.cache
def lark_parser() -> Lark:
    """The LALR parser, built once per process (a Lark object is not modified by parsing).

    ``cache=True`` keeps the analysed grammar in the temp folder, keyed by the grammar's hash, so a new process
    loads the table instead of rebuilding it (about 1 s saved on every command). Lark falls back to building
    when that file is missing or unreadable. Strict mode (no shift/reduce conflicts, no colliding terminals) is
    proven by tests/test_parser.py::test_grammar_builds_in_strict_mode rather than re-proven at every start.
    """
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="basic",
        propagate_positions=True,
        maybe_placeholders=True,
        cache=True,
    )


@functools.cache
def _lexer() -> BasicLexer:
    # Lark.lex() would rebuild the lexer (and recompile its regexes) on every call when a parser is built.
    return BasicLexer(lark_parser().lexer_conf)


def parse(text: str, name: str = "<inline>") -> syntax.Module:
    """Parse a whole ``.sdsl`` file; raises ``SdslSyntaxError`` on any malformed input."""
    source = Source(name, text)
    run = _ParseRun(source)
    tree = run.tree()
    try:
        return ToAst(source).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, SdslError):
            raise exc.orig_exc from None
        raise


# ---------------------------------------------------------------------------------------------- indenter


class _Problem(Exception):
    """Raised inside the token stream; turned into an SdslSyntaxError by ``_ParseRun``."""

    def __init__(self, message: str, line: int, col: int, end_col: int | None = None):
        super().__init__(message)
        self.message, self.line, self.col, self.end_col = message, line, col, end_col


class _SdslIndenter(Indenter):
    """Lark's indenter with positions that point at the indented line, bracket tracking for messages,
    and tolerance for a missing final newline, a comment at the very end, and stray closing brackets."""

    NL_type = "_NEWLINE"
    OPEN_PAREN_types = ["LPAR", "LSQB", "LBRACE"]
    CLOSE_PAREN_types = ["RPAR", "RSQB", "RBRACE"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.open_brackets: list[Token] = []

    @staticmethod
    def _marker(kind: str, line: int, col: int, pos: int) -> Token:
        # Zero-width, so a block's span ends where its last statement ends.
        return Token(kind, "", pos, line, col, line, col, pos)

    def handle_NL(self, token: Token) -> Iterator[Token]:
        if self.open_brackets:
            return
        yield token
        if token.end_pos >= len(self.text):
            return  # the end of the text: the closing dedents come from process()
        indent_str = token.value.rsplit("\n", 1)[1]
        indent = indent_str.count(" ") + indent_str.count("\t") * self.tab_len + indent_str.count("\f")
        line, col, pos = token.end_line, token.end_column, token.end_pos
        if indent > self.indent_level[-1]:
            self.indent_level.append(indent)
            yield self._marker(self.INDENT_type, line, col, pos)
            return
        while indent < self.indent_level[-1]:
            self.indent_level.pop()
            yield self._marker(self.DEDENT_type, token.line, token.column, token.start_pos)
        if indent != self.indent_level[-1]:
            raise _Problem("unindent does not match any outer indentation level", line, col)

    def process(self, stream: Iterable[Token]) -> Iterator[Token]:
        self.paren_level = 0
        self.indent_level = [0]
        self.open_brackets = []
        last: Token | None = None
        for token in stream:
            if last is None and token.type != self.NL_type and token.column != 1:
                raise _Problem("unexpected indent", token.line, token.column)
            if token.type == self.NL_type:
                yield from self.handle_NL(token)
            else:
                yield token
            if token.type in _OPENERS:
                self.open_brackets.append(token)
            elif token.type in _CLOSERS and self.open_brackets:
                # A mismatched closer is the parser's to report; the indenter only tracks depth.
                self.open_brackets.pop()
            self.paren_level = len(self.open_brackets)
            last = token
        if self.open_brackets:
            opener = self.open_brackets[-1]
            raise _Problem(
                f"unexpected end of input; unclosed '{opener.value}'", opener.line, opener.column, opener.end_column
            )
        if last is not None and last.type != self.NL_type:
            # The text ends without a newline: the last statement still ends there.
            yield self._marker(self.NL_type, last.end_line, last.end_column, last.end_pos)
        line, col, pos = (last.end_line, last.end_column, last.end_pos) if last is not None else (1, 1, 0)
        while len(self.indent_level) > 1:
            self.indent_level.pop()
            yield self._marker(self.DEDENT_type, line, col, pos)


# ---------------------------------------------------------------------------------------------- driver


class _ParseRun:
    """One parse of one text: feeds the indented token stream to the LALR parser and explains failures."""

    def __init__(self, source: Source):
        self.source = source
        self.text = source.text
        self.lark = lark_parser()
        self.previous: Token | None = None
        self.last_real: Token | None = None
        self.indenter = _SdslIndenter(self.text)

    def tree(self):
        parser = self.lark.parse_interactive()
        token: Token | None = None
        try:
            for token in self.indenter.process(LexerThread.from_text(_lexer(), self.text).lex(None)):
                parser.feed_token(token)
                self.previous = token
                if token.type not in _LAYOUT:
                    self.last_real = token
            return parser.feed_eof(self.previous)
        except _Problem as problem:
            raise self._error(problem.message, problem.line, problem.col, problem.end_col) from None
        except UnexpectedToken as exc:
            raise self._unexpected_token(exc, parser) from None
        except UnexpectedCharacters as exc:
            char = self.text[exc.pos_in_stream] if 0 <= exc.pos_in_stream < len(self.text) else ""
            raise self._error(f"unexpected character {_quote(char)}", exc.line, exc.column) from None
        except (UnexpectedInput, DedentError, LarkError) as exc:
            # Every bad-input path is covered above; this keeps any other Lark complaint a user error.
            line, col = self._end_position() if token is None else (token.line, token.column)
            raise self._error("invalid syntax", line, col) from None

    # ------------------------------------------------------------------ messages

    def _error(self, message: str, line: int, col: int, end_col: int | None = None, notes=()) -> SdslSyntaxError:
        line, col = self._clamp(line, col)
        if end_col is not None and end_col <= col:
            end_col = None
        span = Span(self.source, line, col, line, end_col if end_col is not None else col + 1)
        return SdslSyntaxError(message, span, notes=tuple(notes))

    def _clamp(self, line: int, col: int) -> tuple[int, int]:
        lines = self.text.split("\n")
        line = min(max(line, 1), len(lines))
        col = min(max(col, 1), len(lines[line - 1]) + 1)
        return line, col

    def _end_position(self) -> tuple[int, int]:
        """Just after the last token that is not layout: where the text stopped making sense."""
        last = self.last_real
        if last is None:
            return 1, 1
        return last.end_line, last.end_column

    def _at_end(self, token: Token) -> bool:
        """True when nothing but blanks and comments follows the token's start."""
        if token.type == "$END":
            return True
        if token.type not in ("_NEWLINE", "_DEDENT"):
            return False
        rest = self.text[token.start_pos:] if token.start_pos is not None else ""
        return all(not line.strip() or line.lstrip().startswith("#") for line in rest.split("\n"))

    def _unexpected_token(self, exc: UnexpectedToken, parser: InteractiveParser) -> SdslSyntaxError:
        token: Token = exc.token
        expected = self._expected(exc, parser)
        at_end = self._at_end(token)
        if token.type == "$END" or at_end:
            line, col = self._end_position()
            end_col = None
        else:
            line, col, end_col = token.line, token.column, token.end_column

        keyword_misuse = self._keyword_as_name(token, expected)
        if keyword_misuse is not None:
            return keyword_misuse
        if "_INDENT" in expected and token.type != "_INDENT":
            return self._error("expected an indented block", line, col, end_col)
        if token.type == "_INDENT":
            return self._error("unexpected indent", line, col)

        what = "end of input" if at_end else _describe_token(token)
        message = f"unexpected {what}"
        described = self._describe_expected(expected)
        if described:
            message += f"; expected {described[0]}" if len(described) == 1 else (
                "; expected one of: " + ", ".join(described))
        notes = []
        if self.indenter.open_brackets and token.type not in _CLOSERS:
            opener = self.indenter.open_brackets[-1]
            if opener.line != token.line:
                notes.append(f"the '{opener.value}' at line {opener.line}, column {opener.column} is not closed")
        return self._error(message, line, col, end_col, notes)

    def _keyword_as_name(self, token: Token, expected: set[str]) -> SdslSyntaxError | None:
        prev = self.previous
        if token.value in syntax.KEYWORDS and token.type != "NAME" and "NAME" in expected:
            return self._error(_keyword_message(token.value), token.line, token.column, token.end_column)
        if (
            prev is not None
            and prev.value in _BRACKETED_KEYWORDS
            and prev.type != "NAME"
            and expected
            and expected <= {"LSQB", "LPAR"}
        ):
            return self._error(_keyword_message(prev.value), prev.line, prev.column, prev.end_column)
        return None

    @staticmethod
    def _expected(exc: UnexpectedToken, parser: InteractiveParser) -> set[str]:
        # The failed feed left the parser in a valid state.  Asking it which tokens it accepts is exact,
        # whereas exc.expected lists the LALR state's lookaheads, which are merged with those of unrelated
        # contexts that share the state (a keyword in a schedule directive and `sum` before its '[').
        try:
            accepted = set(parser.accepts())
        except LarkError:
            accepted = set()
        return accepted or set(exc.expected or ())

    def _describe_expected(self, expected: set[str]) -> list[str]:
        names: set[str] = set()
        for terminal in expected:
            names.add(self._terminal_description(terminal))
        expression_starts = {self._terminal_description(t) for t in _expression_start_terminals(self.lark)}
        if expression_starts <= names:
            names -= expression_starts
            names -= {"'not'", "'-'"}
            names.add("an expression")
        type_starts = {_quote(t) for t in syntax.SCALAR_TYPES + syntax.FORMATS}
        if type_starts <= names:
            names -= type_starts
            names.add("a type")
        if "'+='" in names:
            # Only an assignment accepts '+=', and there `max`/`min` are the first half of `max=`/`min=`.
            names = {{"'max'": "'max='", "'min'": "'min='"}.get(n, n) for n in names}
        # Descriptions first (they name whole categories), then the fixed spellings.
        return sorted(names, key=lambda n: (n.startswith("'"), n))

    def _terminal_description(self, terminal: str) -> str:
        if terminal in _DESCRIPTIONS:
            return _DESCRIPTIONS[terminal]
        try:
            pattern = self.lark.get_terminal(terminal).pattern
        except KeyError:
            return terminal.lower()
        if pattern.type == "str":
            return _quote(pattern.value)
        return terminal.lower()


@functools.cache
def _expression_start_terminals(lark: Lark) -> frozenset[str]:
    """Terminals that can begin an operand (after '*'): collapsed into "an expression" in messages."""
    spellings = {"(", "true", "false", "-", *syntax.PREFIX_OPS, *syntax.SCALAR_TYPES}
    names = {"NAME", "NUMBER"}
    for terminal in lark.terminals:
        if terminal.pattern.type == "str" and terminal.pattern.value in spellings:
            names.add(terminal.name)
    return frozenset(names)


def _keyword_message(word: str) -> str:
    return f"'{word}' is a keyword and cannot be used as a name"


def _quote(text: str) -> str:
    if text == "'":
        return '"\'"'
    if text.isprintable():
        return f"'{text}'"
    return repr(text)


def _describe_token(token: Token) -> str:
    if token.type in ("_NEWLINE", "_INDENT", "_DEDENT", "$END"):
        return {"_NEWLINE": "end of line", "_INDENT": "indent", "_DEDENT": "dedent", "$END": "end of input"}[
            token.type
        ]
    return _quote(str(token.value))
