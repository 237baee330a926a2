"""Source spans and user-facing diagnostics.

Every error a user can cause is an ``SdslError`` carrying a ``Span``; ``render()`` formats it as
``FILE:LINE:COL: error: message`` followed by the source line and a caret, as language spec § 10 requires.
Internal errors (bugs in sparsedsl) are ordinary Python exceptions and are never dressed up as user errors.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Source:
    """A source text and the name it is reported under (a path, or ``<inline>``)."""

    name: str
    text: str = field(repr=False)

    def line(self, lineno: int) -> str:
        # Lines are counted by "\n" alone, as the lexer counts them (splitlines would also break at \f, \u2028...).
        lines = self.text.split("\n")
        if 1 <= lineno <= len(lines):
            return lines[lineno - 1].removesuffix("\r")
        return ""


@dataclass(frozen=True)
class Span:
    """A region of a source: 1-based line and column of its first and last-plus-one character."""

    source: Source | None = field(compare=False, hash=False, repr=False)
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    @property
    def file(self) -> str:
        return self.source.name if self.source is not None else "<unknown>"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SdslError(Exception):
    """A user error: bad program text, bad input, or a target that cannot compute a statement."""

    kind = "error"

    def __init__(self, message: str, span: Span | None = None, notes: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.span = span
        self.notes = tuple(notes)

    @property
    def file(self) -> str | None:
        return self.span.file if self.span else None

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def col(self) -> int | None:
        return self.span.col if self.span else None

    def render(self) -> str:
        """The diagnostic as the command line prints it."""
        if self.span is None:
            head = f"error: {self.message}"
            return "\n".join([head, *(f"note: {n}" for n in self.notes)])
        head = f"{self.span}: error: {self.message}"
        out = [head]
        if self.span.source is not None:  # the line may be empty (an empty file): the caret still says where
            src_line = self.span.source.line(self.span.line)
            out.append(src_line)
            width = 1
            if self.span.end_line == self.span.line and self.span.end_col and self.span.end_col > self.span.col:
                width = self.span.end_col - self.span.col
            # tabs keep their width so the caret lines up under the offending text
            pad = "".join("\t" if ch == "\t" else " " for ch in src_line[: self.span.col - 1])
            out.append(pad + "^" + "~" * (width - 1))
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


class SdslSyntaxError(SdslError):
    """The text does not parse."""


class SdslNameError(SdslError):
    """An unknown, duplicate or misused name."""


class SdslTypeError(SdslError):
    """A dtype, shape, index or format mismatch found by the checker."""


class SdslScheduleError(SdslError):
    """A bad schedule directive."""


class SdslImportError(SdslError):
    """A module that cannot be found, or an import cycle."""


class SdslInputError(SdslError):
    """A value passed at call time that does not fit its declaration."""


class SdslTargetError(SdslError):
    """A target that cannot compute a statement (refused at compile time)."""


class SdslRuntimeError(SdslError):
    """A failure while running a program that the user can act on (e.g. an index out of range in a gather)."""


@contextlib.contextmanager
def located(span: Span | None):
    """An ``SdslError`` raised inside without a location gets ``span`` (an input's or output's declaration):
    the runtime checks a container without knowing where the program declared it."""
    try:
        yield
    except SdslError as err:
        if err.span is not None or span is None:
            raise
        raise type(err)(err.message, span, err.notes) from None
