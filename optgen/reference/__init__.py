"""Reference semantics: a second implementation of the `.opt` language, for trust.

An interpreter that evaluates a resolved network (`optgen.ir.Network`) directly from its
definition in docs/language.md, statement by statement, in whatever dtype its input has
(float64 for checking). It shares nothing with the code writer (`optgen.backend`): no
lowering, no plan, no emitted code; it reads the IR, the schedules and sympy only. A
compiled module serves as the store of the learnable values (its blocks and raw
parameters), never as code: its `forward` is not called.

    from optgen.reference import evaluate
    expected = evaluate(network, module, x)     # what module(x) should return

See docs/reference.md for the API, what is covered and the tolerance of solves.
"""

from .model import evaluate_model
from .network import Trace, evaluate, trace
from .scalars import Unsupported
from .solve import FixedPoint, NotConverged

__all__ = [
    "FixedPoint",
    "NotConverged",
    "Trace",
    "Unsupported",
    "evaluate",
    "evaluate_model",
    "trace",
]
