"""Source files and spans: where a piece of text came from, and how to point at it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source text, 1-based lines and columns, end exclusive."""

    line: int
    col: int
    end_line: int
    end_col: int

    @staticmethod
    def point(line: int, col: int) -> Span:
        return Span(line, col, line, col + 1)

    @staticmethod
    def of(meta_or_token) -> Span:
        """The span of a lark tree meta or token."""
        line = getattr(meta_or_token, "line", None) or 1
        col = getattr(meta_or_token, "column", None) or 1
        end_line = getattr(meta_or_token, "end_line", None) or line
        end_col = getattr(meta_or_token, "end_column", None) or col + 1
        return Span(line, col, end_line, end_col)

    def join(self, other: Span) -> Span:
        start = min((self.line, self.col), (other.line, other.col))
        end = max((self.end_line, self.end_col), (other.end_line, other.end_col))
        return Span(start[0], start[1], end[0], end[1])


NO_SPAN = Span(1, 1, 1, 2)


BYTE_ORDER_MARK = "\ufeff"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """The text of one `.opt` file and the name it is reported under.

    Lines end at '\\n' only (a '\\r' before it is dropped), as the parser counts them: a
    form feed, U+0085 or U+2028 in a comment does not start a line, so the line numbers of
    the errors after it match the excerpts shown. A leading UTF-8 byte-order mark, which
    some editors write, is not part of the text."""

    path: str
    text: str

    def __post_init__(self) -> None:
        if isinstance(self.text, str) and self.text.startswith(BYTE_ORDER_MARK):
            object.__setattr__(self, "text", self.text[len(BYTE_ORDER_MARK) :])

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def lines(self) -> list[str]:
        lines = self.text.split("\n")
        if len(lines) > 1 and lines[-1] == "":
            lines.pop()
        return [line.removesuffix("\r") for line in lines]

    def line_text(self, line: int) -> str:
        lines = self.lines
        if 1 <= line <= len(lines):
            return lines[line - 1]
        return ""

    def end_span(self) -> Span:
        """The position just past the last character (for end-of-input errors)."""
        lines = self.text.split("\n")
        # A trailing newline ends the last line; point after its last character.
        if len(lines) > 1 and lines[-1] == "":
            lines.pop()
        line = len(lines)
        col = len(lines[-1]) + 1
        return Span.point(line, col)

    def excerpt(self, span: Span) -> str:
        """The source line of `span` and a caret line under it."""
        text = self.line_text(span.line).replace("\t", " ")
        width = span.end_col - span.col if span.end_line == span.line else len(text) - span.col + 1
        width = max(1, width)
        return f"{text}\n{' ' * (span.col - 1)}^{'~' * (width - 1)}"
