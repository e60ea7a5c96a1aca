"""Diagnostics: the one way optgen reports a problem in the user's text."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NoReturn

from .source import SourceFile, Span


class Severity(str, Enum):
    """How bad a diagnostic is; the value is the word printed (`file:1:2: error: ...`)."""

    ERROR = "error"
    WARNING = "warning"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One located message."""

    severity: Severity
    span: Span
    message: str
    hint: str | None = None

    def as_dict(self) -> dict:
        return {
            "severity": Severity(self.severity).value,
            "line": self.span.line,
            "col": self.span.col,
            "message": self.message,
            "hint": self.hint,
        }

    def render(self, source: SourceFile) -> str:
        head = f"{source.path}:{self.span.line}:{self.span.col}: {Severity(self.severity).value}: {self.message}"
        parts = [head, source.excerpt(self.span)]
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


class OptgenWarning(UserWarning):
    """A warning of the compiler through the Python API (the CLI prints the same text)."""


class OptgenError(Exception):
    """A user error in a `.opt` text. `diagnostics` lists every problem found."""

    def __init__(self, diagnostics: list[Diagnostic], source: SourceFile):
        self.source = source
        self._diagnostics = list(diagnostics)
        super().__init__(self.render())

    @property
    def diagnostics(self) -> list[dict]:
        return [d.as_dict() for d in self._diagnostics]

    @property
    def located(self) -> list[Diagnostic]:
        return list(self._diagnostics)

    def render(self) -> str:
        return "\n".join(d.render(self.source) for d in self._diagnostics)

    def __str__(self) -> str:
        return self.render()


class Abandon(Exception):
    """Raised by `Reporter.fail` after it recorded its diagnostic: the check in progress
    stops there. The resolver catches it at the end of one unit (a declaration, an update
    statement, a network) and goes on with the next, so it never leaves `resolve`."""


class Reporter:
    """Collects the diagnostics of one source, so that every error of a file is reported.

    `error` records and returns; `fail` records and abandons the unit being checked;
    `abandon` stops a unit silently, when its problem is a consequence of an error already
    recorded. `raise_if_errors` raises one `OptgenError` holding every error in source order.
    """

    def __init__(self, source: SourceFile):
        self.source = source
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def fail(self, span: Span, message: str, hint: str | None = None) -> NoReturn:
        self.error(span, message, hint)
        raise Abandon

    def abandon(self) -> NoReturn:
        raise Abandon

    def error(self, span: Span, message: str, hint: str | None = None) -> None:
        diagnostic = Diagnostic(Severity.ERROR, span, message, hint)
        if diagnostic not in self.errors:
            self.errors.append(diagnostic)

    def warn(self, span: Span, message: str, hint: str | None = None) -> None:
        self.warnings.append(Diagnostic(Severity.WARNING, span, message, hint))

    def raise_if_errors(self) -> None:
        if self.errors:
            ordered = sorted(self.errors, key=lambda d: (d.span.line, d.span.col))
            raise OptgenError(ordered, self.source)
