"""Diagnostics: the one way optgen reports a problem in the user's text."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

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


class Reporter:
    """Collects diagnostics for one source; `fail` raises at once."""

    def __init__(self, source: SourceFile):
        self.source = source
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def fail(self, span: Span, message: str, hint: str | None = None):
        raise OptgenError([Diagnostic(Severity.ERROR, span, message, hint)], self.source)

    def error(self, span: Span, message: str, hint: str | None = None) -> None:
        self.errors.append(Diagnostic(Severity.ERROR, span, message, hint))

    def warn(self, span: Span, message: str, hint: str | None = None) -> None:
        self.warnings.append(Diagnostic(Severity.WARNING, span, message, hint))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise OptgenError(self.errors, self.source)
