"""Colour for the command line, as compilers and black print it: in diagnostics the
location in bold, `error` in red, `warning` in magenta, the caret in green and `hint` in
cyan; in compile's summary lines the verdicts, yes in green and no in red. `--color auto` (the default) colours a terminal only and honours `NO_COLOR`;
`always` and `never` decide alone. The text itself never changes: colour is added to the
rendered diagnostic, so a log or a pipe reads exactly what the API raises."""

from __future__ import annotations

import os
import re
from enum import Enum
from typing import TextIO


class ColorMode(str, Enum):
    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


BOLD, RED, MAGENTA, GREEN, CYAN, RESET = (
    "\033[1m",
    "\033[31m",
    "\033[35m",
    "\033[32m",
    "\033[36m",
    "\033[0m",
)
_HEAD = re.compile(r"^(?P<where>.+?:\d+:\d+:) (?P<severity>error|warning):(?P<rest>.*)$")
_CARET = re.compile(r"^\s*\^~*$")

_enabled = False  # diagnostics, on stderr
_summary_enabled = False  # summary lines, on stdout

# A summary's verdicts (`zero-stable yes, consistent no, universal guaranteed`).
_VERDICT = re.compile(
    r"\b(zero-stable|consistent|universal) (yes|no|\?|guaranteed|not guaranteed|unknown)\b"
)
_VERDICT_COLOUR = {"yes": GREEN, "guaranteed": GREEN, "no": RED, "not guaranteed": RED}


def use(mode: str, stream: TextIO, results: TextIO | None = None) -> None:
    """Decide once, from `--color` and the streams diagnostics and results go to."""
    global _enabled, _summary_enabled
    _enabled = _decide(ColorMode(mode), stream)
    _summary_enabled = _decide(ColorMode(mode), results) if results is not None else False


def _decide(mode: ColorMode, stream: TextIO) -> bool:
    if mode is ColorMode.AUTO:
        return not os.environ.get("NO_COLOR") and stream.isatty()
    return mode is ColorMode.ALWAYS


def summary(line: str) -> str:
    """A compile summary line with its verdicts coloured (yes green, no red, unknown as is)."""
    if not _summary_enabled:
        return line

    def paint(match: re.Match) -> str:
        colour = _VERDICT_COLOUR.get(match[2])
        return match[0] if colour is None else f"{match[1]} {colour}{match[2]}{RESET}"

    return _VERDICT.sub(paint, line)


def diagnostics(text: str) -> str:
    """`text` (rendered diagnostics) with its parts coloured, when colour is on."""
    if not _enabled:
        return text
    return "\n".join(_line(line) for line in text.split("\n"))


def _line(line: str) -> str:
    head = _HEAD.match(line)
    if head:
        colour = RED if head["severity"] == "error" else MAGENTA
        return (
            f"{BOLD}{head['where']}{RESET} {BOLD}{colour}{head['severity']}:{RESET}"
            f"{BOLD}{head['rest']}{RESET}"
        )
    if _CARET.match(line):
        return f"{GREEN}{line}{RESET}"
    if line.startswith("hint: "):
        return f"{CYAN}hint:{RESET} {line[len('hint: '):]}"
    return line
