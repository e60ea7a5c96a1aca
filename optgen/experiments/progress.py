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


def progress(mode: Progress, runs: int, steps: int, every: int, desc: str):
    """Progress over `runs` runs of `steps` steps each (a run: what `set_postfix_str`
    names, a network and seed): two bars, plain lines every `every` steps of a run, or
    nothing."""
    if mode is Progress.LINES:
        return LogLines(runs * steps, every, desc)
    return Bars(runs, steps, desc, disable=mode is Progress.OFF)


class Bars:
    """On a terminal: a bar of the runs overall, and below it one of the steps of the
    run in training (network and seed)."""

    def __init__(self, runs: int, steps: int, desc: str, disable: bool = False):
        import tqdm

        self.tqdm, self.steps, self.disable = tqdm.tqdm, steps, disable
        self.overall = tqdm.tqdm(total=runs, desc=desc, unit="run", disable=disable)
        self.run = None

    def set_postfix_str(self, text: str) -> None:
        self._finish_run()
        self.run = self.tqdm(
            total=self.steps, desc=text, unit="step", leave=False, position=1, disable=self.disable
        )

    def update(self, n: int = 1) -> None:
        if self.run is not None:
            self.run.update(n)

    def _finish_run(self) -> None:
        if self.run is not None:
            self.run.close()
            self.overall.update(1)
            self.run = None

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc) -> None:
        self._finish_run()
        self.overall.close()


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
