"""How a run shows its progress on stderr: a tqdm bar on a terminal, one plain line per
epoch (or per tenth of a synthetic run) in a log, nothing with `-q`. Only rank 0 shows
any. The object returned stands for a tqdm bar: `update(n)` and `set_postfix_str(text)`."""

from __future__ import annotations

import sys
import time
from enum import Enum
from typing import TextIO


class Progress(str, Enum):
    BAR = "bar"  # a terminal
    LINES = "lines"  # a log or a pipe
    OFF = "off"  # -q

    @staticmethod
    def for_stream(stream: TextIO, quiet: bool = False) -> Progress:
        if quiet:
            return Progress.OFF
        return Progress.BAR if stream.isatty() else Progress.LINES

    @staticmethod
    def of(value: Progress | bool) -> Progress:
        """The mode of a `progress_bar` argument: True and False are a bar and nothing."""
        if isinstance(value, Progress):
            return value
        return Progress.BAR if value else Progress.OFF


def progress(mode: Progress, total: int, every: int, desc: str):
    """A bar, a writer of plain lines every `every` steps, or a bar that shows nothing."""
    if mode is Progress.LINES:
        return LogLines(total, every, desc)
    import tqdm

    return tqdm.tqdm(total=total, desc=desc, unit="step", disable=mode is Progress.OFF, leave=False)


class LogLines:
    """Progress for a log: `optgen: mnist deep_gd seed 0: step 250, 250 of 8,000 in all,
    12 s`, every `every` steps of what the postfix names (a network, or one of its seeds)."""

    def __init__(self, total: int, every: int, desc: str, stream: TextIO | None = None):
        self.total, self.every, self.desc = total, max(1, every), desc
        self.stream = stream or sys.stderr
        self.done = self.run_done = 0
        self.what = ""
        self.start = time.monotonic()

    def set_postfix_str(self, text: str) -> None:
        self.what, self.run_done = text, 0  # a new network or seed

    def update(self, n: int = 1) -> None:
        self.done += n
        self.run_done += n
        if self.run_done % self.every == 0:
            name = f"{self.desc} {self.what}".strip()
            print(
                f"optgen: {name}: step {self.run_done:,}, {self.done:,} of {self.total:,} in"
                f" all, {time.monotonic() - self.start:.0f} s",
                file=self.stream,
                flush=True,
            )

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc) -> None:
        return None
