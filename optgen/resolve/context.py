"""What every job of resolution shares: the `Context` of the file being checked (its
source, its reporter, the state of the network being checked), the `Job` base class that
gives each job its helpers (`fail`, `attempt`, `text`, ...), and the words and limits that
several jobs read. The underscored helpers are private to the package, not to one module."""

from __future__ import annotations

import difflib
from typing import NoReturn

import sympy

from ..errors import Abandon, Reporter
from ..present import number
from ..source import SourceFile, Span

RESERVED = {
    "input": "the network input",
    "k": "the layer index",
    "dim": "the feature size",
    "pi": "the constant pi",
    "L": "the depth the module is built with",
}
MAX_DEPTH = 100_000


class Context:
    """The file being checked, shared by every job, and the state of the network being
    checked, which `NetworkResolver.network` starts afresh for each network (and
    `UpdateResolver.update` for the locals of its update)."""

    def __init__(self, source: SourceFile):
        self.source = source
        self.report = Reporter(source)
        # Names whose meaning is lost (see `Job`), per network.
        self.poisoned: set[str] = set()
        # The layers the fixed arguments of maps are checked for.
        self.depth = 1
        # The locals of the update being checked.
        self.local_names: set[str] = set()
        # The sizes of the network's other spaces (`state y: m`), in order of declaration.
        self.sizes: tuple[str, ...] = ()
        # Recursive schedules of the network being checked (`param tk[k+1] = ...`), and
        # while the recursion of one is read: its name and start value.
        self.schedules: dict[str, type] = {}
        self.recursion: tuple[str, sympy.Expr] | None = None
        # Every recursive schedule of the network, defined or not yet: a recursion may read
        # one declared after it (coupled schedules), whose values are checked once both are.
        self.pending: dict = {}  # name -> schedules.Recurrence
        self.coupled: list[tuple] = []  # (param, its step's declaration), checked at the end


class Job:
    """One job of resolution (scalars, expressions, params, ...), on a shared `Context`.

    Recovery: `fail` records an error and abandons the unit being checked, and
    `attempt` runs one unit, so the next declaration or statement is still checked.
    What a failed unit declares stays known, so that no error follows from another:
    a failed param or block is still a name of its kind (a param built on a failed
    one is not checked), a failed statement still defines its target. A name whose
    meaning is lost is `poisoned`: one declared as two different things, one already
    reported as undefined, the target of a statement that failed before naming a state.
    A later expression that reads a poisoned name is abandoned without a message.
    """

    def __init__(self, ctx: Context):
        self.ctx = ctx

    @property
    def report(self) -> Reporter:
        return self.ctx.report

    @property
    def poisoned(self) -> set[str]:
        return self.ctx.poisoned

    def fail(self, span: Span, message: str, hint: str | None = None) -> NoReturn:
        self.report.fail(span, message, hint)

    def undefined(self, name: str, span: Span, message: str, hint: str | None) -> NoReturn:
        """Report a name that means nothing, once per network: later uses are abandoned."""
        self.poisoned.add(name)
        self.fail(span, message, hint)

    def attempt(self, check, *args):
        """`check(*args)`, or None when it failed (its error is recorded)."""
        try:
            return check(*args)
        except Abandon:
            return None

    def text(self, node) -> str:
        span = node.span
        if span.line == span.end_line:
            return self.ctx.source.line_text(span.line)[span.col - 1 : span.end_col - 1]
        return self.ctx.source.line_text(span.line)[span.col - 1 :] + " ..."


def _did_you_mean(word: str, options) -> str | None:
    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


def _clip(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _show(v: float) -> str:
    return number(v)
