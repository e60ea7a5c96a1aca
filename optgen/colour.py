"""Colour for the command line's diagnostics, as compilers and black print them: the
location in bold, `error` in red, `warning` in magenta, the caret in green and `hint` in
cyan. `--color auto` (the default) colours a terminal only and honours `NO_COLOR`;
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

_enabled = False


def use(mode: str, stream: TextIO) -> None:
    """Decide once, from `--color` and the stream diagnostics go to."""
    global _enabled
    chosen = ColorMode(mode)
    if chosen is ColorMode.AUTO:
        _enabled = not os.environ.get("NO_COLOR") and stream.isatty()
    else:
        _enabled = chosen is ColorMode.ALWAYS


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
