"""AST to IR: names, lags, assign-once, the scalar-coefficient rule, block kinds.

Every check here records a located diagnostic whose message names the offending
sub-expression, in the spirit of cvxpy's DCP errors. Checking goes on after an error,
one unit at a time (a network, a declaration, an update statement, an init), so that
every error of a file is reported at once; see `Resolver.attempt`.
"""

from __future__ import annotations

import difflib
import keyword
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import NoReturn

import sympy

from .. import ir, naming, schedules
from ..errors import Abandon, Reporter
from ..ir import DIM
from ..kinds.blocks import (
    BACKWARD_KINDS,
    BLOCK_KINDS,
    ELEMENTWISE_MAPS,
    INTEGER_OPTIONS,
    LAYOUTS,
    REVERSIBLE,
    SOLVER_KINDS,
    ArgKind,
    Layout,
)
from ..source import SourceFile, Span
from ..syntax import ast

RESERVED = {"input": "the network input", "k": "the layer index", "dim": "the feature size"}
DEFAULT_DEPTH = 8
MAX_DEPTH = 100_000
MAX_EXPONENT = 400
# Limits on the size of one file's items (docs/robustness.md, "Limits"): the analysis and
# the generated code grow faster than linearly past them, so a larger input is refused
# with a located error instead of taking minutes and gigabytes.
MAX_ITEMS = 64  # networks and models of one file
MAX_STATES = 512  # states of one network
MAX_STATEMENTS = 2048  # statements of one update
MAX_COEFFICIENT_PARAMS = 32  # params and k in one coefficient: (p0 + ... + p31)*T(x)
# A coefficient must be a normal float64 number: the module computes in floating point.
MAX_EXPONENT_FLOAT = 307
MAX_FLOAT = sympy.Rational(10) ** MAX_EXPONENT_FLOAT
MIN_FLOAT = sympy.Rational(1, 10**MAX_EXPONENT_FLOAT)
# Options and defaults of each solver and backward mode, from the registry.
SOLVERS = {name: dict(kind.options) for name, kind in SOLVER_KINDS.items()}
BACKWARDS = {name: dict(kind.options) for name, kind in BACKWARD_KINDS.items()}


def _did_you_mean(word: str, options) -> str | None:
    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


# ---------------------------------------------------------------- values
@dataclass(frozen=True)
class Scalar:
    expr: sympy.Expr
    span: Span


@dataclass(frozen=True)
class Tensor:
    form: ir.LinearForm
    span: Span


Value = Scalar | Tensor


@dataclass
class _Scope:
    """What names mean while one update statement is resolved."""

    states: tuple[str, ...]
    params: dict[str, ir.Param]
    blocks: Collection[str]  # block names, a block whose declaration failed included
    locals_: set[str] = field(default_factory=set)
    assigned: set[str] = field(default_factory=set)  # states whose next value is defined
    rebound: set[str] = field(default_factory=set)  # states assigned as `x = ...`: `x` now means x+
    current_target: str | None = None
    in_block: str | None = None
    sum_var: str | None = None
    implicit_reasons: list[str] = field(default_factory=list)
    forward_refs: list[tuple[str, Span]] = field(
        default_factory=list
    )  # x+ read in a block before defined
    uses_input: bool = False


class Resolver:
    """Checks the networks of one file, recording every error in `report`.

    Recovery: `fail` records an error and abandons the unit being checked, and
    `attempt` runs one unit, so the next declaration or statement is still checked.
    What a failed unit declares stays known, so that no error follows from another:
    a failed param or block is still a name of its kind (a param built on a failed
    one is not checked), a failed statement still defines its target. A name whose
    meaning is lost is `poisoned`: one declared as two different things, one already
    reported as undefined, the target of a statement that failed before naming a state.
    A later expression that reads a poisoned name is abandoned without a message.
    """

    def __init__(self, source: SourceFile):
        self.source = source
        self.report = Reporter(source)
        self.poisoned: set[str] = set()
        self._local_names: set[str] = set()
        # Recursive schedules of the network being checked (`param tk[k+1] = ...`), and
        # while the recursion of one is read: its name and start value.
        self._schedules: dict[str, type] = {}
        self._recursion: tuple[str, sympy.Expr] | None = None

    # ------------------------------------------------------------ helpers
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

    def number(self, node: ast.Number) -> sympy.Rational:
        try:
            dec = Decimal(node.text)
        except InvalidOperation:  # pragma: no cover - the grammar only lets decimals through
            self.fail(node.span, f"'{node.text}' is not a number")
        if dec != 0 and abs(dec.adjusted()) > MAX_EXPONENT:
            self.fail(
                node.span,
                f"the number {node.text} is out of range",
                f"use a magnitude between 1e-{MAX_EXPONENT_FLOAT} and 1e{MAX_EXPONENT_FLOAT}",
            )
        return self.finite(sympy.Rational(Fraction(dec)), node)

    def text(self, node) -> str:
        span = node.span
        if span.line == span.end_line:
            return self.source.line_text(span.line)[span.col - 1 : span.end_col - 1]
        return self.source.line_text(span.line)[span.col - 1 :] + " ..."

    # ------------------------------------------------------------ scalar expressions (params, bounds, block args)
    def scalar(self, node, allowed: dict[str, sympy.Expr], what: str) -> sympy.Expr:
        """A scalar expression whose names must be keys of `allowed`."""
        value = ast.fold(
            node,
            lambda leaf: self.scalar_leaf(leaf, allowed, what),
            lambda neg, operand: -operand,
            self.scalar_binary,
        )
        return self.finite(value, node)

    def scalar_leaf(self, node, allowed: dict[str, sympy.Expr], what: str) -> sympy.Expr:
        if isinstance(node, ast.Number):
            return self.number(node)
        if isinstance(node, ast.Call) and node.func in schedules.SCALAR_FUNCTIONS:
            args = [self.scalar(a, allowed, what) for a in node.args]
            return self.scalar_function(node, args)
        if isinstance(node, ast.Indexed) and node.id in allowed and node.id != "k":
            return self.schedule_read(node, allowed[node.id])
        if isinstance(node, ast.Name):
            if node.id in allowed:
                return allowed[node.id]
            self.fail(
                node.span,
                f"'{node.id}' cannot be used in {what}",
                _did_you_mean(node.id, allowed)
                or f"{what} may use numbers{''.join(', ' + n for n in sorted(allowed))}",
            )
        self.fail(
            node.span,
            f"'{self.text(node)}' cannot be used in {what}",
            f"{what} may use numbers{''.join(', ' + n for n in sorted(allowed))}",
        )

    def scalar_binary(self, node: ast.Binary, left: sympy.Expr, right: sympy.Expr) -> sympy.Expr:
        if node.op == "^":
            return self.power(node, left, right)
        if node.op == "/":
            if right == 0:
                self.fail(node.right.span, "division by zero")
            return self.finite(left / right, node)
        return self.finite({"+": left + right, "-": left - right, "*": left * right}[node.op], node)

    def scalar_function(self, node: ast.Call, args: list[sympy.Expr]) -> sympy.Expr:
        """`sqrt(a)`, `exp(a)`, `log(a)`, `min(a, b, ...)`, `max(a, b, ...)` of scalars."""
        spec = schedules.SCALAR_FUNCTIONS[node.func]
        fewest, most = spec.arity
        if len(args) < fewest or (most is not None and len(args) > most):
            count = f"{fewest}" if fewest == most else f"at least {fewest}"
            self.fail(
                node.span,
                f"{node.func} takes {count} argument{'s' if fewest > 1 else ''}, got {len(args)}",
                f"write {spec.signature}",
            )
        if node.func == "exp" and not args[0].free_symbols and args[0] > 710:
            self.fail(node.span, f"'{_clip(self.text(node))}' overflows a float64")
        return self.finite(spec.build(*args), node)

    def power(self, node: ast.Binary, base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr:
        """`base ^ exponent`, refused before sympy computes a number past float64."""
        if not exponent.free_symbols and abs(exponent) > MAX_EXPONENT and base.free_symbols:
            self.fail(node.right.span, f"the exponent {exponent} is too large")
        if not (base.free_symbols or exponent.free_symbols) and base != 0:
            if abs(base) != 1 and abs(exponent) > 10**6:  # 2^2^2^2^2^2: no float holds it
                self.fail(
                    node.span, f"'{_clip(self.text(node))}' is outside the range of a float64"
                )
            size = float(exponent) * math.log10(abs(float(base))) if abs(base) != 1 else 0.0
            if abs(size) > MAX_EXPONENT_FLOAT:
                self.fail(
                    node.span,
                    f"'{_clip(self.text(node))}' is about 1e{math.floor(size)}, outside the range of a float64",
                )
        if base == 0 and not exponent.free_symbols and exponent < 0:
            self.fail(node.span, "division by zero: 0 raised to a negative power")
        return self.finite(sympy.Pow(base, exponent), node)

    def schedule_read(self, node: ast.Indexed, value: sympy.Expr) -> sympy.Expr:
        """`tk[k+1]`, `tk[k]`, `tk[3]`: a schedule at another layer.

        Inside the recursion of tk, `tk` and `tk[k]` are the previous value, `tk[0]` its
        start; `tk[k+1]` and later lie ahead of the value being defined."""
        index = self.scalar(node.index, {"k": ir.K}, "an index")
        offset = sympy.expand(index - ir.K) if ir.K in index.free_symbols else None
        shape_ok = (offset is not None and offset.is_Integer and offset >= 0) or (
            offset is None and index.is_Integer and index >= 0
        )
        if not shape_ok:
            self.fail(
                node.index.span,
                f"unsupported index '{self.text(node.index)}' of schedule '{node.id}'",
                f"read {node.id}[k], {node.id}[k+1], ... or a fixed layer such as {node.id}[0]",
            )
        if self._recursion is not None and self._recursion[0] == node.id:
            if offset is not None and offset > 0:
                self.fail(
                    node.span,
                    f"the recursion of {node.id} refers forward: '{self.text(node)}' is not known "
                    f"when {node.id}[k+1] is computed",
                    f"write {node.id}[k+1] in terms of {node.id} (= {node.id}[k]), k and fixed params",
                )
            if offset == 0:
                return schedules.PREVIOUS
            if index == 0:
                return self._recursion[1]
            self.fail(
                node.index.span,
                f"the recursion of {node.id} can only read {node.id}[k] and {node.id}[0]",
            )
        if ir.K not in value.free_symbols:
            self.fail(
                node.span,
                f"param '{node.id}' does not depend on k; it has one value, write {node.id}",
            )
        return value.xreplace({ir.K: index})

    def finite(self, value: sympy.Expr, node) -> sympy.Expr:
        """`value`, when it is a float64 number (or holds symbols); an error otherwise.

        Numbers are exact rationals here, but the module computes in floating point: a
        coefficient past float64 (1e200*1e200) would be written as inf, and the
        certificate would reason about a rule the module does not run. A number below the
        smallest float64 (1e-200*1e-200) is zero there; it is refused alike."""
        if not value.free_symbols and not value.is_Rational:
            return self.finite_number(value, node)
        numbers = value.atoms(sympy.Rational) if value.free_symbols else {value}
        for number in numbers:
            magnitude = abs(number)
            if number == 0 or MIN_FLOAT <= magnitude <= MAX_FLOAT:
                continue
            # math.log10 of the exact integers: sympy's log of a 400-digit number is slow.
            shown = math.floor(math.log10(magnitude.p) - math.log10(magnitude.q))
            self.fail(
                node.span,
                f"'{_clip(self.text(node))}' is about 1e{shown}, outside the range of a float64",
                f"keep every number and product of numbers between 1e-{MAX_EXPONENT_FLOAT} "
                f"and 1e{MAX_EXPONENT_FLOAT} in magnitude",
            )
        return value

    def finite_number(self, value: sympy.Expr, node) -> sympy.Expr:
        """A constant holding sqrt, exp, log, min, max or a rational power (`finite`)."""
        if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo) or not value.is_finite:
            self.fail(node.span, f"'{_clip(self.text(node))}' is not a finite number")
        if value.is_real is False or (value.is_real is None and sympy.im(value.evalf()) != 0):
            self.fail(node.span, f"'{_clip(self.text(node))}' is not a real number")
        magnitude = abs(value.evalf(30))
        if magnitude != 0 and not (MIN_FLOAT <= magnitude <= MAX_FLOAT):
            shown = math.floor(float(sympy.log(magnitude, 10)))
            self.fail(
                node.span,
                f"'{_clip(self.text(node))}' is about 1e{shown}, outside the range of a float64",
            )
        return value

    # ------------------------------------------------------------ tensor/scalar expressions in update and init
    def value(self, node, scope: _Scope) -> Value:
        self._scope = scope
        return ast.fold(node, lambda leaf: self.value_leaf(leaf, scope), self.negate, self.combine)

    def value_leaf(self, node, scope: _Scope) -> Value:
        if (getattr(node, "id", None) or getattr(node, "func", None)) in self.poisoned:
            self.report.abandon()
        method = getattr(self, f"_value_{type(node).__name__}")
        return method(node, scope)

    def _value_Number(self, node: ast.Number, scope: _Scope) -> Value:
        return Scalar(self.number(node), node.span)

    def _value_Name(self, node: ast.Name, scope: _Scope) -> Value:
        name = node.id
        if scope.sum_var is not None and name == scope.sum_var:
            return Scalar(sympy.Symbol(name, integer=True), node.span)
        if name in scope.params:
            return Scalar(scope.params[name].symbol, node.span)
        if name == "k":
            return Scalar(ir.K, node.span)
        if name in scope.states:
            lag = 1 if name in scope.rebound else 0
            return Tensor(ir.LinearForm.of(ir.StateAt(name, lag)), node.span)
        if name in scope.locals_:
            return Tensor(ir.LinearForm.of(ir.Local(name)), node.span)
        if name == "input":
            scope.uses_input = True
            return Tensor(ir.LinearForm.of(ir.InputValue()), node.span)
        if name in scope.blocks:
            self.fail(node.span, f"block '{name}' must be applied to a tensor: {name}(...)")
        if name == "dim":
            self.fail(node.span, "'dim' can only be used in block arguments")
        if name == scope.current_target:
            self.fail(node.span, f"local '{name}' is used in its own definition")
        known = set(scope.states) | set(scope.params) | scope.locals_ | {"k", "input"}
        self.undefined(name, node.span, f"undefined name '{name}'", _did_you_mean(name, known))

    def _next_state(self, name: str, span: Span, scope: _Scope) -> Value:
        if name not in scope.states:
            if name in scope.locals_ or name in scope.params or name in scope.blocks:
                self.fail(
                    span,
                    f"'{name}+' : only states have a next iterate, and '{name}' is not a state",
                )
            self.undefined(
                name, span, f"undefined state '{name}'", _did_you_mean(name, scope.states)
            )
        if name not in scope.assigned:
            if scope.in_block is None:
                self.fail(
                    span,
                    f"'{name}+' is read before it is defined",
                    f"define {name}+ in an earlier statement, or read the current iterate '{name}'",
                )
            scope.implicit_reasons.append(
                f"block {scope.in_block} is applied to {name}+, which depends on its own output"
            )
            scope.forward_refs.append((name, span))
        return Tensor(ir.LinearForm.of(ir.StateAt(name, 1)), span)

    def _value_NextName(self, node: ast.NextName, scope: _Scope) -> Value:
        return self._next_state(node.id, node.span, scope)

    def _value_PrevName(self, node: ast.PrevName, scope: _Scope) -> Value:
        if node.id not in scope.states and (
            node.id in scope.locals_ or node.id == scope.current_target
        ):
            return self.local_history(node.id, -1, node, scope)
        if node.id not in scope.states:
            if node.id in (*scope.locals_, *scope.params, *scope.blocks):
                self.fail(
                    node.span,
                    f"'{node.id}-' : only states and locals have a previous value, and '{node.id}' is neither",
                )
            self.undefined(
                node.id,
                node.span,
                f"undefined state '{node.id}'",
                _did_you_mean(node.id, scope.states),
            )
        return Tensor(ir.LinearForm.of(ir.StateAt(node.id, -1)), node.span)

    def _value_Indexed(self, node: ast.Indexed, scope: _Scope) -> Value:
        name = node.id
        is_state = name in scope.states
        if name == scope.current_target and not is_state and name not in scope.params:
            self.fail(node.span, f"local '{name}' is used in its own definition")
        if (
            not is_state
            and name not in scope.locals_
            and not (scope.sum_var and name != scope.sum_var and name in self._local_names)
        ):
            param = scope.params.get(name)
            if param is not None and not param.learnable and param.depends_on_k:
                return Scalar(self.schedule_read(node, param.value), node.span)
            if name in scope.params:
                self.fail(
                    node.span,
                    f"param '{name}' cannot be indexed; params are scalars (use k in its value for a schedule)",
                )
            self.undefined(
                name,
                node.span,
                f"undefined name '{name}'",
                _did_you_mean(name, set(scope.states) | scope.locals_),
            )
        index_vars = {"k": ir.K}
        if scope.sum_var:
            index_vars[scope.sum_var] = sympy.Symbol(scope.sum_var, integer=True)
        index = self.scalar(node.index, index_vars, "an index")
        poly = sympy.Poly(index, *index_vars.values()) if index.free_symbols else None
        if (
            scope.sum_var
            and index.free_symbols == {index_vars[scope.sum_var]}
            and poly.total_degree() == 1
        ):
            offset = index - index_vars[scope.sum_var]
            if not offset.is_integer or offset != 0:
                self.fail(
                    node.index.span,
                    f"inside a sum, index '{name}' by '{scope.sum_var}' itself",
                    f"write {name}[{scope.sum_var}]",
                )
            return Tensor(ir.LinearForm.of(ir.History(name, is_state)), node.span)
        if (
            index.free_symbols == {ir.K}
            and poly.total_degree() == 1
            and sympy.expand(index - ir.K).is_integer
        ):
            lag = int(index - ir.K)
            if not is_state:
                if lag == 0:
                    return self._value_Name(ast.Name(name, node.span), scope)
                if lag > 0:
                    self.fail(
                        node.index.span,
                        f"'{name}[k{lag:+d}]' lies in the future: a local has no next value",
                        f"read {name}, {name}- or {name}[k-2], ...",
                    )
                if lag < -64:
                    self.fail(
                        node.index.span, f"lag {lag} is too deep", "read at most 64 layers back"
                    )
                return self.local_history(name, lag, node, scope)
            if lag == 1:
                return self._next_state(name, node.span, scope)
            if lag > 1:
                self.fail(
                    node.index.span,
                    f"'{name}[k{lag:+d}]' lies in the future",
                    "an update can read x[k+1] at most",
                )
            if lag == 0:
                return Tensor(ir.LinearForm.of(ir.StateAt(name, 0)), node.span)
            if lag < -64:
                self.fail(
                    node.index.span, f"lag {lag} is too deep", "read at most 64 iterates back"
                )
            return Tensor(ir.LinearForm.of(ir.StateAt(name, lag)), node.span)
        if not index.free_symbols and index == 0 and is_state:
            return Tensor(ir.LinearForm.of(ir.Initial(name)), node.span)
        self.fail(
            node.index.span,
            f"unsupported index '{self.text(node.index)}'",
            "write x[k+1], x[k], x[k-1], ..., or x[0]",
        )

    def local_history(self, name: str, lag: int, node, scope: _Scope) -> Value:
        """`g-`, `g[k-2]`: local g of an earlier layer (its value at layer 0 before that)."""
        if name == scope.current_target:
            self.fail(node.span, f"local '{name}' is used in its own definition")
        return Tensor(ir.LinearForm.of(ir.Local(name, lag)), node.span)

    def _value_Call(self, node: ast.Call, scope: _Scope) -> Value:
        func = node.func
        if func in scope.blocks:
            if len(node.args) != 1:
                self.fail(
                    node.span, f"block '{func}' takes one tensor argument, got {len(node.args)}"
                )
            if scope.in_block is not None:
                self.fail(
                    node.span,
                    f"block call '{self.text(node)}' inside the argument of block '{scope.in_block}'",
                    "compute it first as a local: g = " + self.text(node),
                )
            scope.in_block = func
            try:
                arg = self.tensor(node.args[0], scope, f"the argument of {func}")
            finally:
                scope.in_block = None
            return Tensor(ir.LinearForm.of(ir.BlockOut(func, arg)), node.span)
        if func in ELEMENTWISE_MAPS:
            spec = ELEMENTWISE_MAPS[func]
            if len(node.args) != 1 + len(spec.scalar_args):
                sig = ", ".join(("e",) + spec.scalar_args)
                self.fail(
                    node.span,
                    f"{func} takes {1 + len(spec.scalar_args)} argument(s): {func}({sig})",
                )
            arg = self.tensor(node.args[0], scope, f"the argument of {func}")
            scalars = []
            for extra in node.args[1:]:
                v = self.value(extra, scope)
                if not isinstance(v, Scalar):
                    self.fail(
                        extra.span,
                        f"the extra arguments of {func} must be scalars, not a tensor expression",
                        "use numbers, params and k, e.g. softshrink(e, t*lam)",
                    )
                scalars.append(v.expr)
            self.check_map_arguments(func, node, scalars, scope)
            return Tensor(ir.LinearForm.of(ir.MapOut(func, arg, tuple(scalars))), node.span)
        if func in schedules.SCALAR_FUNCTIONS:
            return self.scalar_call(node, scope)
        if func == "sum":
            self.fail(node.span, "sum over history is written sum(i = 0..k, expr)")
        known = set(scope.blocks) | set(ELEMENTWISE_MAPS) | set(schedules.SCALAR_FUNCTIONS)
        self.undefined(
            func,
            node.func_span,
            f"unknown function '{func}'",
            _did_you_mean(func, known) or f"known: {', '.join(sorted(known))}",
        )

    def scalar_call(self, node: ast.Call, scope: _Scope) -> Value:
        """sqrt, exp, log, min, max in an update: functions of fixed scalars only."""
        args = []
        for arg in node.args:
            v = self.value(arg, scope)
            if isinstance(v, Tensor):
                self.fail(
                    arg.span,
                    f"{node.func} takes scalars, but '{_clip(self.text(arg))}' is a tensor",
                    f"{node.func} is for coefficients (numbers, fixed params, k); "
                    "an update is linear in the tensors",
                )
            if any(self._learnable(s, scope) for s in v.expr.free_symbols):
                self.fail(
                    arg.span,
                    f"{node.func} of a learnable param is not supported: its argument must be fixed",
                    "declare the coefficient as a learnable param of its own",
                )
            args.append(v.expr)
        return Scalar(self.scalar_function(node, args), node.span)

    def check_map_arguments(self, func: str, node: ast.Call, scalars: list, scope: _Scope) -> None:
        """softshrink's threshold is >= 0 and clamp's bounds are ordered, at every layer."""
        if func not in ("softshrink", "clamp"):
            return
        if func == "softshrink":
            self.check_trained_threshold(node.args[1], sympy.sympify(scalars[0]), scope)
        # Learnable params are checked at their start values.
        start = {p.symbol: p.value for p in scope.params.values()}
        values = [sympy.sympify(v).xreplace(start) for v in scalars]
        layers = (
            range(getattr(self, "depth", 1)) if any(ir.K in v.free_symbols for v in values) else [0]
        )
        for k in layers:
            at = [v.xreplace({ir.K: k}) for v in values]
            if any(v.free_symbols or not v.is_finite for v in at):
                return  # not a number here: nothing to check
            where = f" at layer k={k}" if len(layers) > 1 else ""
            if func == "softshrink" and at[0] < 0:
                self.fail(
                    node.args[1].span,
                    f"the threshold of softshrink is {float(at[0]):g}{where}; it must be >= 0",
                    "softshrink(e, lam) shrinks e towards 0 by lam",
                )
            if func == "clamp" and at[0] > at[1]:
                self.fail(
                    node.span,
                    f"clamp's lower bound {float(at[0]):g} is above its upper bound "
                    f"{float(at[1]):g}{where}",
                    "write clamp(e, lo, hi) with lo <= hi",
                )

    def check_trained_threshold(self, node, threshold: sympy.Expr, scope: _Scope) -> None:
        """A threshold holding learnable params should stay >= 0 whatever training does:
        each param is replaced by the values its constraint lets it reach."""
        learnable = [p for p in scope.params.values() if p.learnable]
        held = [p for p in learnable if p.symbol in threshold.free_symbols]
        if not held:
            return
        fixed = {p.symbol: p.value for p in scope.params.values() if not p.learnable}
        reachable = {}
        for p in held:
            lo = p.bound.lo if p.bound is not None else None
            if lo is None or lo < 0:
                reachable = None
                break
            reachable[p.symbol] = lo + sympy.Symbol(f"trained_{p.name}", positive=True)
        value = None if reachable is None else threshold.xreplace(fixed).xreplace(reachable)
        depends_on_k = value is not None and ir.K in value.free_symbols
        layers = range(getattr(self, "depth", 1)) if depends_on_k else [0]
        if value is not None and all(
            sympy.simplify(value.xreplace({ir.K: k})).is_nonnegative for k in layers
        ):
            return
        names = ", ".join(p.name for p in held)
        self.report.warn(
            node.span,
            f"the threshold of softshrink holds the learnable {names}; training may make "
            "it negative",
            "constrain the param, e.g. param lam = 0.1 learnable positive",
        )

    def _learnable(self, symbol, scope: _Scope) -> bool:
        name = ir.symbol_param(symbol) if isinstance(symbol, sympy.Symbol) else None
        return name is not None and name in scope.params and scope.params[name].learnable

    def _value_HistorySum(self, node: ast.HistorySum, scope: _Scope) -> Value:
        if node.func != "sum":
            self.fail(
                node.span,
                f"'{node.func}(i = ..)' is not a function; did you mean sum(i = 0..k, ...)?",
            )
        if scope.sum_var is not None:
            self.fail(node.span, "sums cannot be nested")
        var = node.var
        if var in scope.states or var in scope.params or var in scope.locals_ or var in RESERVED:
            self.fail(
                node.span,
                f"the summation index '{var}' hides another name; pick a fresh one (i, j)",
            )
        lo = self.scalar(node.lo, {"k": ir.K}, "the lower bound of a sum")
        window = None
        if ir.K in lo.free_symbols:
            width = sympy.expand(ir.K - lo)
            if not (width.is_Integer and width >= 0):
                self.fail(
                    node.lo.span,
                    f"the lower bound '{self.text(node.lo)}' of a sum must be an integer or k - m",
                    "write sum(i = 0..k, ...) over every layer, or sum(i = k-2..k, ...) over the last three",
                )
            if width > 64:
                self.fail(
                    node.lo.span,
                    f"a window of {width + 1} terms is too wide",
                    "sum at most 65 terms",
                )
            window, lo = int(width), sympy.Integer(0)
        elif not lo.is_integer or lo < 0:
            self.fail(
                node.lo.span, "the lower bound of a sum must be a non-negative integer or k - m"
            )
        hi = self.scalar(node.hi, {"k": ir.K}, "the upper bound of a sum")
        if hi != ir.K:
            self.fail(node.hi.span, "a sum runs up to k: sum(i = 0..k, ...)")
        scope.sum_var = var
        try:
            body = self.tensor(node.body, scope, "the body of a sum")
        finally:
            scope.sum_var = None
        for atom in body.atoms():
            if not isinstance(atom, ir.History):
                self.fail(
                    node.body.span,
                    f"every term of a sum must be indexed by '{var}', like g[{var}]; '{atom.show()}' is not",
                )
        for _, coef in body.terms:
            if ir.K in coef.free_symbols:
                self.fail(node.body.span, "the terms of a sum may depend on the index, not on k")
            if any(self._learnable(s, scope) for s in coef.free_symbols):
                self.fail(
                    node.body.span, "the coefficients inside a sum must be fixed, not learnable"
                )
        total = ir.HistorySum(sympy.Symbol(var, integer=True), int(lo), body, window)
        return Tensor(ir.LinearForm.of(total), node.span)

    def negate(self, node: ast.Neg, v: Value) -> Value:
        if isinstance(v, Scalar):
            return Scalar(-v.expr, node.span)
        return Tensor(v.form.scale(sympy.Integer(-1)), node.span)

    def combine(self, node: ast.Binary, left: Value, right: Value) -> Value:
        """`left op right`, each operand already evaluated."""
        op = node.op
        if isinstance(left, Scalar) and isinstance(right, Scalar):
            if op == "^" and any(self._learnable(s, self._scope) for s in right.expr.free_symbols):
                self.fail(node.right.span, "an exponent must be fixed, not learnable")
            value = self.scalar_binary(node, left.expr, right.expr)
            self.check_symbol_count(value.free_symbols, node)
            return Scalar(value, node.span)
        if op == "^":
            which = "base" if isinstance(left, Tensor) else "exponent"
            self.fail(
                node.span,
                f"'^' takes scalars, but the {which} of '{_clip(self.text(node))}' is a tensor",
                "powers are for coefficients (t^2, k^(1/2)); an update is linear in the tensors",
            )
        if op in "+-":
            if isinstance(left, Scalar) or isinstance(right, Scalar):
                scalar = left if isinstance(left, Scalar) else right
                self.fail(
                    node.span,
                    f"'{self.text(node)}' adds the scalar '{self.text(node.left if scalar is left else node.right)}' to a tensor",
                    "an update is a linear combination of tensors; scale a tensor instead (t*x)",
                )
            other = right.form if op == "+" else right.form.scale(sympy.Integer(-1))
            self.check_coefficient_size(left.form, other, node)
            return Tensor(left.form + other, node.span)
        if op == "*":
            if isinstance(left, Tensor) and isinstance(right, Tensor):
                self.fail(
                    node.span,
                    f"product of two tensor expressions: '{self.text(node)}'",
                    "coefficients must be scalars (numbers, params, k); a product of tensors is not a linear combination",
                )
            scalar, tensor = (left, right) if isinstance(left, Scalar) else (right, left)
            return Tensor(self.finite_form(tensor.form.scale(scalar.expr), node), node.span)
        # division
        if isinstance(right, Tensor):
            self.fail(
                node.span,
                f"division by a tensor expression: '{self.text(node)}'",
                "coefficients must be scalars (numbers, params, k)",
            )
        if right.expr == 0:
            self.fail(node.right.span, "division by zero")
        return Tensor(self.finite_form(left.form.scale(1 / right.expr), node), node.span)

    def check_coefficient_size(self, left: ir.LinearForm, right: ir.LinearForm, node) -> None:
        """The coefficients of a sum of two forms hold at most MAX_COEFFICIENT_PARAMS
        symbols: each is simplified exactly, at a cost that grows faster than its size."""
        mine = dict(left.terms)
        for atom, coef in right.terms:
            symbols = coef.free_symbols | (mine[atom].free_symbols if atom in mine else set())
            self.check_symbol_count(symbols, node)

    def check_symbol_count(self, symbols, node) -> None:
        if len(symbols) > MAX_COEFFICIENT_PARAMS:
            self.fail(
                node.span,
                f"a coefficient of '{_clip(self.text(node))}' holds more than "
                f"{MAX_COEFFICIENT_PARAMS} params",
                "combine them into fewer params",
            )

    def finite_form(self, form: ir.LinearForm, node) -> ir.LinearForm:
        """`form`, when each of its coefficients is a float64 number (see `finite`)."""
        for _, coef in form.terms:
            self.finite(coef, node)
        return form

    def tensor(self, node, scope: _Scope, what: str) -> ir.LinearForm:
        v = self.value(node, scope)
        if isinstance(v, Scalar):
            self.fail(
                node.span,
                f"{what} must be a tensor expression, but '{self.text(node)}' is a scalar",
            )
        return v.form

    # ------------------------------------------------------------ declarations
    def check_class_name(self, ident: ast.Ident, what: str, example: str) -> None:
        """A network or model name becomes a class name: CamelCase, not a keyword."""
        name = ident.id
        if keyword.iskeyword(name) or keyword.issoftkeyword(name):
            self.report.error(
                ident.span,
                f"{what} name '{name}' is a Python keyword",
                f"pick a CamelCase class name such as {example}",
            )
        elif not name[0].isupper():
            self.report.error(
                ident.span,
                f"{what} name '{name}' is not a CamelCase class name",
                f"write {name[0].upper() + name[1:]}",
            )
        elif name in naming.reserved(
            naming.Reserved.FILE_BINDING
        ) or name == naming.certificate_constant(name):
            self.report.error(
                ident.span,
                f"{what} name '{name}' is a name the generated code already uses",
                f"the generated module and its tests define or import {name}; "
                f"pick another name, such as {name}Rule",
            )
        else:
            self.check_file_names(ident, what)

    def check_file_names(self, ident: ast.Ident, what: str) -> None:
        """The files `<stem>.py` and `test_<stem>.py` must be importable, shadow no module
        and fit in a file name."""
        test_file = naming.test_file(ident.id)
        if len(test_file.encode("utf-8")) > naming.MAX_FILE_NAME_BYTES:
            self.report.error(
                ident.span,
                f"{what} name '{ident.id[:40]}...' is too long: its test file name would be "
                f"{len(test_file.encode('utf-8'))} bytes",
                f"file names hold at most {naming.MAX_FILE_NAME_BYTES} bytes; "
                f"use a name of at most {naming.MAX_FILE_NAME_BYTES - len('test_.py')} characters",
            )
            return
        for module in (name.removesuffix(".py") for name in naming.output_files(ident.id)):
            if keyword.iskeyword(module):
                self.report.error(
                    ident.span,
                    f"{what} {ident.id} would write {module}.py, and '{module}' is a Python "
                    "keyword: its test could not import it",
                    f"pick another name, such as {ident.id}Rule",
                )
            elif module in naming.reserved(naming.Reserved.MODULE_NAME):
                self.report.error(
                    ident.span,
                    f"{what} {ident.id} would write {module}.py, which shadows the module "
                    f"'{module}' for code beside it (the generated tests import torch, os, ...)",
                    f"pick another name, such as {ident.id}Rule",
                )

    def network(self, node: ast.Network) -> ir.Network | None:
        """The IR of one network, or None when it has errors (all recorded in `report`)."""
        errors_before = len(self.report.errors)
        self.poisoned = set()
        name = node.name.id
        self.check_class_name(node.name, "network", "Nesterov")
        decls: dict[type, list] = {}
        for d in node.decls:
            decls.setdefault(type(d), []).append(d)
        for kind, label in (
            (ast.StateDecl, "state"),
            (ast.LayersDecl, "layers"),
            (ast.UpdateDecl, "update"),
            (ast.OutputDecl, "output"),
            (ast.CheckpointDecl, "checkpoint"),
        ):
            for extra in decls.get(kind, [])[1:]:
                self.report.error(
                    extra.span,
                    f"'{label}' is declared twice in network {name}",
                    "merge the two declarations",
                )
        for role in ("solver", "backward"):
            dup = [d for d in decls.get(ast.SolverDecl, []) if d.role == role]
            for extra in dup[1:]:
                self.report.error(extra.span, f"'{role}' is declared twice in network {name}")
        has_states = ast.StateDecl in decls
        if not has_states:
            self.report.error(
                node.name.span, f"network {name} declares no state", "add a line: state x"
            )
        if ast.UpdateDecl not in decls:
            self.report.error(
                node.name.span, f"network {name} has no update", "add: update { x+ = x - t*T(x) }"
            )

        taken: dict[str, str] = {}

        def claim(ident: ast.Ident, what: str) -> bool:
            """Whether the name is this declaration's (an earlier one may have taken it)."""
            word = ident.id
            if word in taken:
                self.report.error(ident.span, f"'{word}' is already declared as a {taken[word]}")
                if not what == taken[word] == "state":
                    self.poisoned.add(word)  # two meanings: which one a use means is unknown
                return False
            if word in RESERVED or word in ELEMENTWISE_MAPS:
                why = (
                    f"a word of the language ({RESERVED[word]})"
                    if word in RESERVED
                    else "a built-in map of the language"
                )
                self.report.error(ident.span, f"'{word}' is {why} and cannot name a {what}")
                # Not declared: later statements about it would only repeat this error.
                self.poisoned.add(word)
                return False
            taken[word] = what
            return True

        if has_states and len(decls[ast.StateDecl][0].names) > MAX_STATES:
            extra = decls[ast.StateDecl][0].names[MAX_STATES]
            self.report.error(
                extra.span,
                f"network {name} declares more than {MAX_STATES} states",
                "the analysis and the generated layers grow with the square of the states",
            )
        states = []
        for ident in decls[ast.StateDecl][0].names if has_states else ():
            if claim(ident, "state"):
                states.append(ident.id)

        depth, equilibrium = DEFAULT_DEPTH, False
        if ast.LayersDecl in decls:
            layers = decls[ast.LayersDecl][0]
            if layers.equilibrium:
                equilibrium, depth = True, 1
            else:
                depth = layers.depth
                if not 1 <= depth <= MAX_DEPTH:
                    self.report.error(
                        layers.span,
                        f"layers {depth} is out of range",
                        f"use between 1 and {MAX_DEPTH} layers",
                    )
                    depth = min(max(depth, 1), MAX_DEPTH)
        self.depth = depth  # the layers the fixed arguments of maps are checked for

        blocks: dict[str, ir.Block] = {}
        block_names: set[str] = set()  # every block of the network, a failed one included
        for d in decls.get(ast.BlockDecl, []):
            owned = claim(d.name, "block")
            if d.name.id.startswith("_") or d.name.id in naming.reserved(naming.Reserved.BLOCK_KEY):
                self.report.error(
                    d.name.span,
                    f"block name '{d.name.id}' cannot be a key of the generated module.blocks (an nn.ModuleDict)",
                    "rename the block: no leading underscore, not an nn.ModuleDict attribute such as keys or update",
                )
            block = self.attempt(self.block, d, d.shared or equilibrium)
            if owned:
                block_names.add(d.name.id)
                if block is not None:
                    blocks[d.name.id] = block
        layouts = {b.layout for b in blocks.values()}
        if len(layouts) > 1:
            first = next(iter(blocks.values()))
            odd = next(b for b in blocks.values() if b.layout != first.layout)
            self.report.error(
                odd.span,
                f"block '{odd.name}' takes {LAYOUTS[odd.layout]} inputs but block '{first.name}' takes {LAYOUTS[first.layout]}",
                "all blocks of one network share a layout",
            )

        # Every param of the network; one whose declaration failed is a placeholder,
        # with its name and declared options but an unknown value.
        params: dict[str, ir.Param] = {}
        unknown: set[str] = set()
        self._schedules = {}
        param_decls = decls.get(ast.ParamDecl, [])
        units = self.param_units(param_decls)
        owned_params = [claim(d.name, "param") for d, _ in units]
        declared = {d.name.id for d in param_decls}
        for (d, equations), owned in zip(units, owned_params):
            if equations is None:
                param = self.attempt(self.param, d, params, declared, depth, unknown)
            elif equations:
                param = self.attempt(
                    self.recursive_param, *equations, params, declared, depth, unknown
                )
            else:
                param = None  # a broken recursive schedule, already reported
            if not owned:
                continue
            if equations is None:
                self.check_param_attribute(d)
            if param is None:
                unknown.add(d.name.id)
                param = ir.Param(
                    d.name.id, sympy.Integer(0), d.learnable, d.per_layer, None, d.positive, d.span
                )
            params[d.name.id] = param
        self.check_channel_axis(param_decls, decls.get(ast.BlockDecl, []), blocks)

        init: list[ir.InitAssign] = []
        statements: list[ir.Assign] = []
        reasons: list[str] = []
        uses_input = False
        if has_states:
            init = self.init(decls.get(ast.InitDecl, []), states, params)
        if has_states and ast.UpdateDecl in decls:
            statements, reasons, uses_input = self.update(
                decls[ast.UpdateDecl][0], states, params, block_names, taken
            )

        output = states[0] if states else None
        if ast.OutputDecl in decls and has_states:
            out = decls[ast.OutputDecl][0]
            if out.name.id in states:
                output = out.name.id
            elif out.name.id not in self.poisoned:
                self.report.error(
                    out.name.span,
                    f"output '{out.name.id}' is not a state",
                    _did_you_mean(out.name.id, states),
                )

        solver = backward = None
        for d in decls.get(ast.SolverDecl, []):
            spec = self.attempt(self.solver, d)
            if d.role == "solver":
                solver = solver or spec
            else:
                backward = backward or spec
        implicit = bool(reasons)
        if equilibrium:
            known = {n: p for n, p in params.items() if n not in unknown}
            self.check_equilibrium(node, statements, known, implicit)
        reversible = backward is not None and backward.name == REVERSIBLE
        checkpoint = None
        if ast.CheckpointDecl in decls:
            checkpoint = self.attempt(self.checkpoint, decls[ast.CheckpointDecl][0])
        self.check_memory_modes(
            name, decls, implicit or equilibrium, "an equilibrium" if equilibrium else "implicit"
        )
        if len(self.report.errors) > errors_before:
            return None
        for d in decls.get(ast.SolverDecl, []):
            if not (implicit or equilibrium) and not (reversible and d.role == "backward"):
                self.report.warn(d.span, f"'{d.role}' has no effect: network {name} is explicit")
                break
        if equilibrium and not uses_input:
            self.report.warn(
                node.name.span,
                f"equilibrium network {name} never reads 'input' in its update",
                "inject the input, e.g. x+ = x - t*T(x) + t*(input - x)",
            )

        rule = "; ".join(s.text for s in decls[ast.UpdateDecl][0].statements)
        net = ir.Network(
            name=name,
            states=tuple(states),
            init=tuple(init),
            params=tuple(params.values()),
            blocks=tuple(blocks.values()),
            depth=depth,
            equilibrium=equilibrium,
            statements=tuple(statements),
            output=output,
            implicit=implicit,
            implicit_reasons=tuple(dict.fromkeys(reasons)),
            rule=rule,
            span=node.span,
            source_text=node.text,
            solver=solver,
            backward=backward,
            checkpoint=checkpoint,
            spans={"name": node.name.span, **self.memory_spans(decls)},
        )
        ir.validate(net)
        return net

    def checkpoint(self, d: ast.CheckpointDecl) -> int:
        """`checkpoint N`: a positive whole number of layers per recomputed group."""
        value = self.scalar(d.value, {}, "checkpoint")
        if not value.is_integer:
            self.fail(
                d.value.span,
                f"checkpoint takes a whole number of layers, not {_show(float(value))}",
                "e.g. checkpoint 2: the layers are recomputed in groups of 2 in backward",
            )
        if value <= 0:
            self.fail(
                d.value.span,
                f"checkpoint {int(value)} must be a positive number of layers",
                "write checkpoint 1 to recompute every layer, or drop the line to keep them all",
            )
        return int(min(value, MAX_DEPTH))

    def check_memory_modes(self, name: str, decls: dict, solves: bool, kind: str) -> None:
        """`backward reversible` and `checkpoint` are for explicit rules, one at a time."""
        backwards = [d for d in decls.get(ast.SolverDecl, []) if d.role == "backward"]
        reversible = next((d for d in backwards if d.name.id == REVERSIBLE), None)
        checkpoint = next(iter(decls.get(ast.CheckpointDecl, [])), None)
        if reversible is not None and solves:
            self.report.error(
                reversible.span,
                f"backward reversible is for explicit rules: network {name} is {kind}",
                "an implicit layer has no update to undo; use backward implicit, whose memory"
                " does not grow with the solver's iterations",
            )
        if checkpoint is not None and solves:
            self.report.error(
                checkpoint.span,
                f"checkpoint is for explicit rules: network {name} is {kind}",
                "backward implicit already keeps no solver iteration for backward",
            )
        if reversible is not None and checkpoint is not None and not solves:
            self.report.error(
                checkpoint.span,
                f"network {name} declares both checkpoint and backward reversible",
                "backward reversible keeps no layer for backward already: drop checkpoint",
            )

    @staticmethod
    def memory_spans(decls: dict) -> dict:
        spans = {}
        for d in decls.get(ast.SolverDecl, []):
            if d.role == "backward" and d.name.id == REVERSIBLE:
                spans["reversible"] = d.span
        for d in decls.get(ast.CheckpointDecl, []):
            spans["checkpoint"] = d.span
        return spans

    def check_equilibrium(self, node: ast.Network, statements, params, implicit: bool) -> None:
        """An equilibrium iterates one shared update to its fixed point: no layer index, no history sums."""
        if implicit:
            self.report.error(
                node.name.span,
                f"equilibrium network {node.name.id} also applies a block to a next iterate",
                "an equilibrium is solved as a whole; write the update explicitly",
            )
        for p in params.values():
            if p.depends_on_k or p.per_layer:
                self.report.error(
                    p.span,
                    f"param {p.name} depends on the layer, but an equilibrium network has no layers",
                    "use a constant value",
                )
        for st in statements:
            self.attempt(self.check_equilibrium_statement, st)

    def check_equilibrium_statement(self, st: ir.Assign) -> None:
        for atom in st.form.walk():
            if isinstance(atom, (ir.HistorySum, ir.Initial)) or (
                isinstance(atom, ir.Local) and atom.lag < 0
            ):
                self.fail(
                    st.span,
                    f"'{atom.show()}' has no meaning in an equilibrium network",
                    "an equilibrium has no layer history",
                )
        for _, coef in st.form.terms:
            if ir.K in coef.free_symbols:
                self.fail(st.span, "k has no meaning in an equilibrium network")

    def block(self, d: ast.BlockDecl, shared: bool) -> ir.Block:
        kind_name = d.kind.id
        if kind_name not in BLOCK_KINDS:
            self.fail(
                d.kind.span,
                f"unknown block kind '{kind_name}'",
                _did_you_mean(kind_name, BLOCK_KINDS) or f"known kinds: {', '.join(BLOCK_KINDS)}",
            )
        kind = BLOCK_KINDS[kind_name]
        args: dict[str, object] = {}
        target = None
        spec = {**kind.args, **kind.meta_args}
        if kind.takes_target:
            positional = [a for a in d.args if a.key is None]
            if not positional:
                self.fail(
                    d.kind.span,
                    f"{kind_name} block {d.name.id} needs the class as its first argument",
                    f'write {kind_name}("pkg.module:Class")',
                )
            target = self.custom_target(d.name.id, positional[0].value)
            if len(positional) > 1:
                self.fail(
                    positional[1].span, f"{kind_name} takes one positional argument, the class"
                )
        for a in d.args:
            if a.key is None:
                if not kind.takes_target:
                    self.fail(a.span, f"{kind_name} takes keyword arguments only (key=value)")
                continue
            key = a.key.id
            if key in args:
                self.fail(a.key.span, f"argument '{key}' is given twice")
            if key not in spec:
                if kind.takes_target and keyword.iskeyword(key):
                    self.fail(
                        a.key.span,
                        f"'{key}' is a Python keyword: the class of {kind_name} block "
                        f"{d.name.id} cannot take it as a keyword argument",
                        "rename the argument of the class",
                    )
                if kind.takes_target and key == "self":
                    # Class(dim, self=...) binds `self` twice, whatever the class.
                    self.fail(
                        a.key.span,
                        f"'self' is the instance of the class of {kind_name} block "
                        f"{d.name.id}: it cannot be a keyword argument",
                        "rename the argument of the class",
                    )
                if kind.takes_target:  # the user's class takes every other keyword
                    args[key] = self.custom_arg(a)
                    continue
                self.fail(
                    a.key.span,
                    f"{kind_name} has no argument '{key}'",
                    _did_you_mean(key, spec)
                    or (
                        f"its arguments: {', '.join(spec)}"
                        if spec
                        else f"{kind_name} takes no arguments"
                    ),
                )
            arg = spec[key]
            if arg.kind is ArgKind.CHOICE:
                word = (
                    a.value.value
                    if isinstance(a.value, ast.StringLit)
                    else getattr(a.value, "id", None)
                )
                if word is None or word not in arg.choices:
                    shown = word if word is not None else self.text(a.value)
                    self.fail(
                        a.value.span,
                        f"'{shown}' is not a valid {key} for {kind_name}",
                        _did_you_mean(str(shown), arg.choices)
                        or f"choose one of: {', '.join(arg.choices)}",
                    )
                args[key] = word
            else:
                if isinstance(a.value, ast.StringLit):
                    self.fail(
                        a.value.span, f"{key} must be an integer expression in dim, not a string"
                    )
                value = sympy.expand(self.scalar(a.value, {"dim": DIM}, f"the argument {key}"))
                self._check_int_arg(value, a.value.span, key)
                if arg.odd and not value.free_symbols and value % 2 == 0:
                    self.fail(
                        a.value.span,
                        f"{key} of {kind_name} must be odd, got {value}",
                        f"'same' padding keeps the size only for odd kernels: use {value + 1}",
                    )
                args[key] = value
        layout = kind.layout or Layout(args.get("layout", Layout.VECTOR))
        if kind.takes_target:  # the user's class keeps its own defaults
            full = {k: v.default for k, v in kind.meta_args.items()}
        else:  # every argument spelled out, "dim" defaults as the symbol
            full = {
                k: (v.default if v.kind is ArgKind.CHOICE or v.default != "dim" else DIM)
                for k, v in spec.items()
            }
        full.update(args)
        return ir.Block(
            d.name.id, kind_name, tuple(sorted(full.items())), shared, layout, d.span, target
        )

    def custom_target(self, block: str, literal: ast.StringLit) -> str:
        """The "pkg.module:Class" of a custom block, checked part by part."""
        text = literal.value
        hint = 'write custom("pkg.module:Class")'
        module, colon, class_name = text.partition(":")
        if not colon:
            head, dot, tail = text.rpartition(".")
            if dot and head and tail:
                hint += f', here custom("{head}:{tail}")'
            self.fail(
                literal.span,
                f"custom block {block}: '{text}' has no ':' between the module and the class",
                hint,
            )
        if ":" in class_name:
            self.fail(literal.span, f"custom block {block}: '{text}' has more than one ':'", hint)
        if not module:
            self.fail(
                literal.span, f"custom block {block}: '{text}' has no module before the ':'", hint
            )
        if not class_name:
            self.fail(
                literal.span, f"custom block {block}: '{text}' has no class after the ':'", hint
            )
        if not all(part.isidentifier() for part in module.split(".")):
            self.fail(
                literal.span,
                f"custom block {block}: the module '{module}' is not a dotted Python name",
                "join Python names with '.', like torch.nn",
            )
        if not class_name.isidentifier():
            self.fail(
                literal.span,
                f"custom block {block}: the class '{class_name}' is not a Python name",
                "name one class of the module after the ':', like torch.nn:Identity",
            )
        return text

    def custom_arg(self, a: ast.BlockArg):
        if isinstance(a.value, ast.StringLit):
            return a.value.value
        if isinstance(a.value, ast.Name) and a.value.id in ("true", "false", "none"):
            return {"true": True, "false": False, "none": None}[a.value.id]
        return sympy.nsimplify(
            self.scalar(a.value, {"dim": DIM}, f"the argument {a.key.id}"), rational=True
        )

    def _check_int_arg(self, value: sympy.Expr, span: Span, key: str) -> None:
        for dim in (1, 2, 3, 64):
            v = value.subs(DIM, dim)
            if not v.is_integer or v <= 0:
                if value.free_symbols:
                    continue
                self.fail(span, f"{key} must be a positive integer, got {value}")
        if value.free_symbols - {DIM}:
            self.fail(span, f"{key} may only use dim and numbers")

    def param(
        self,
        d: ast.ParamDecl,
        fixed: dict[str, ir.Param],
        declared: set[str],
        depth: int,
        unknown: Collection[str] = (),
    ) -> ir.Param:
        """Param `d`, given the params before it (`unknown`: those whose value failed)."""
        self.param_options(d)
        allowed: dict[str, sympy.Expr] = {"k": ir.K}
        for p in fixed.values():
            if not p.learnable and p.name not in unknown:
                allowed[p.name] = p.value
        for other in declared - set(fixed):
            if other != d.name.id and _mentions(d.value, other):
                self.fail(
                    d.value.span,
                    f"param '{d.name.id}' uses '{other}', which is declared after it",
                    "declare params before they are used",
                )
        for p in fixed.values():
            if p.learnable and _mentions(d.value, p.name):
                self.fail(
                    d.value.span,
                    f"param '{d.name.id}' uses the learnable param '{p.name}'",
                    "a param's value may only use numbers, k and fixed params; write the product in the update instead",
                )
        if any(_mentions(d.value, other) for other in (*unknown, *self.poisoned)):
            self.report.abandon()  # its value rests on one already reported
        value = sympy.simplify(self.scalar(d.value, allowed, f"the value of param {d.name.id}"))
        bound = None
        if d.positive:
            bound = ir.Bound(sympy.Integer(0), None, False, False)
        if d.interval is not None:
            iv = d.interval
            lo = self.scalar(iv.lo, {}, "an interval bound")
            hi = self.scalar(iv.hi, {}, "an interval bound")
            if lo >= hi:
                self.fail(iv.span, f"empty interval: {lo} is not below {hi}")
            bound = ir.Bound(lo, hi, iv.lo_closed, iv.hi_closed)
        if d.per_layer and not d.learnable:
            self.fail(
                d.span,
                f"per_layer only applies to learnable params; '{d.name.id}' is fixed",
                "add 'learnable', or use k in its value for a schedule",
            )
        if d.learnable and ir.K in value.free_symbols and not d.per_layer:
            self.fail(
                d.value.span,
                f"learnable param '{d.name.id}' depends on k but is shared by all layers",
                "add 'per_layer'",
            )
        if d.per_channel and not d.learnable:
            self.fail(
                _flag_span(d, "per_channel"),
                f"per_channel only applies to learnable params; '{d.name.id}' is fixed",
                "a fixed param has one value for every channel: add 'learnable', or drop "
                "'per_channel'",
            )
        param = ir.Param(
            d.name.id, value, d.learnable, d.per_layer, bound, d.positive, d.span, d.per_channel
        )
        values = self.layer_values(param, d, depth)
        if bound is not None:
            self.check_bound(param, d, values)
        return param

    def check_channel_axis(
        self, param_decls: list, block_decls: list, blocks: dict[str, ir.Block]
    ) -> None:
        """A per-channel param needs to know which axis holds the channels: a custom block
        that does not declare its layout leaves it unknown."""
        per_channel = next((d for d in param_decls if d.per_channel), None)
        if per_channel is None:
            return
        for d in block_decls:
            block = blocks.get(d.name.id)
            declared = any(a.key is not None and a.key.id == "layout" for a in d.args)
            if block is not None and block.kind == "custom" and not declared:
                self.report.error(
                    _flag_span(per_channel, "per_channel"),
                    f"per_channel param {per_channel.name.id}: the channel axis of custom "
                    f"block {d.name.id} is unknown, since it declares no layout",
                    f"add layout=vector (channels last), layout=sequence ([N, L, dim]) or "
                    f"layout=image ([N, dim, H, W]) to block {d.name.id}",
                )
                return

    def param_units(self, param_decls: list[ast.ParamDecl]) -> list[tuple]:
        """The params declared: (decl, None) for `param p = ...`, (decl, (start, step))
        for the two equations `param tk[0] = ...` and `param tk[k+1] = ...` of a recursive
        schedule, (decl, ()) for a recursive schedule with an error (reported here)."""
        units: list[tuple] = []
        groups: dict[str, dict[str, ast.ParamDecl]] = {}
        for d in param_decls:
            if d.index is None:
                units.append((d, None))
                continue
            role = self.attempt(self.equation_role, d)
            group = groups.get(d.name.id)
            if group is None:
                group = groups[d.name.id] = {}
                units.append((d, group))
            if role is None:
                group["error"] = d
            elif role in group:
                what = "start value" if role == "start" else "recursion"
                self.report.error(
                    d.span,
                    f"the {what} of schedule {d.name.id} is given twice",
                    f"keep one 'param {self.text(d.name)}[{'0' if role == 'start' else 'k+1'}] = ...'",
                )
                group["error"] = d
            else:
                group[role] = d
        resolved = []
        for d, group in units:
            if group is None:
                resolved.append((d, None))
                continue
            resolved.append((d, self.equations(d.name.id, group)))
        return resolved

    def equation_role(self, d: ast.ParamDecl) -> str:
        """'start' for `param tk[0] = ...`, 'step' for `param tk[k+1] = ...`."""
        index = self.scalar(d.index, {"k": ir.K}, "the index of a schedule")
        if index == 0:
            role = "start"
        elif index == ir.K + 1:
            role = "step"
        else:
            self.fail(
                d.index.span,
                f"a schedule is defined by {d.name.id}[0] = ... and {d.name.id}[k+1] = ..., "
                f"not {d.name.id}[{self.text(d.index)}]",
                "write param tk[0] = 1 and param tk[k+1] = (1 + sqrt(1 + 4*tk^2))/2",
            )
        for option in d.options:
            if isinstance(option, ast.ParamFlag) and option.word in ("learnable", "per_layer"):
                self.fail(
                    option.span,
                    f"schedule {d.name.id} is defined by a recursion, so it is fixed: "
                    f"'{option.word}' does not apply",
                    "declare a learnable per_layer param for coefficients learned per layer",
                )
            if role == "start":
                self.fail(
                    option.span,
                    f"put the options of schedule {d.name.id} on its recursion {d.name.id}[k+1]",
                )
        return role

    def equations(self, name: str, group: dict) -> tuple:
        if "error" in group:
            return ()
        if "start" not in group:
            self.report.error(
                group["step"].span,
                f"schedule {name} has a recursion but no start value",
                f"add: param {name}[0] = ...",
            )
            return ()
        if "step" not in group:
            self.report.error(
                group["start"].span,
                f"schedule {name} has a start value but no recursion",
                f"add: param {name}[k+1] = ... (or write param {name} = ... for a constant)",
            )
            return ()
        return (group["start"], group["step"])

    def recursive_param(
        self,
        start: ast.ParamDecl,
        step: ast.ParamDecl,
        fixed: dict[str, ir.Param],
        declared: set[str],
        depth: int,
        unknown: Collection[str] = (),
    ) -> ir.Param:
        """`param tk[0] = a` and `param tk[k+1] = f(tk, k)`: the sympy function tk(k)."""
        name = step.name.id
        if name in naming.reserved(naming.Reserved.CONSTRUCTOR_LOCAL):
            self.fail(
                step.name.span,
                f"'{name}' cannot name a recursive schedule: the generated constructor "
                "holds its values in a variable of that name, which it already uses",
                f"rename it, such as {name}_k",
            )
        self.param_options(step)
        allowed: dict[str, sympy.Expr] = {"k": ir.K}
        for p in fixed.values():
            if not p.learnable and p.name not in unknown:
                allowed[p.name] = p.value
        for d in (start, step):
            for other in declared - set(fixed) - {name}:
                if _mentions(d.value, other):
                    self.fail(
                        d.value.span,
                        f"schedule {name} uses '{other}', which is declared after it",
                        "declare params before they are used",
                    )
            for p in fixed.values():
                if p.learnable and _mentions(d.value, p.name):
                    self.fail(
                        d.value.span,
                        f"schedule {name} uses the learnable param '{p.name}'",
                        "a schedule may only use numbers, k and fixed params",
                    )
            if any(_mentions(d.value, other) for other in (*unknown, *self.poisoned)):
                self.report.abandon()
        if _mentions(start.value, name):
            self.fail(start.value.span, f"the start value of {name} cannot use {name} itself")
        first = self.scalar(start.value, allowed, f"the start value of {name}")
        if first.free_symbols:
            self.fail(
                start.value.span,
                f"the start value of {name} must be a number, not depend on k",
            )
        for other in self._schedules:
            if _mentions(step.value, other):
                self.fail(
                    step.value.span,
                    f"the recursion of {name} reads the recursive schedule '{other}'",
                    "a recursion may use its own previous value, k, numbers and fixed params",
                )
        self._recursion = (name, first)
        try:
            inside = {**allowed, name: schedules.PREVIOUS}
            rule = self.scalar(step.value, inside, f"the recursion of {name}")
        finally:
            self._recursion = None
        text = f"{name}[0] = {self.text(start.value)}; {name}[k+1] = {self.text(step.value)}"
        recurrence = schedules.Recurrence(name, first, sympy.simplify(rule), text)
        for n in range(min(depth, MAX_DEPTH) + 1):
            try:
                recurrence.value(n)
            except ValueError as err:
                self.fail(
                    step.value.span,
                    f"schedule {err} within the declared depth ({depth} layers)",
                    "keep the recursion finite at every layer",
                )
        function = recurrence.function()
        self._schedules[name] = function
        bound = None
        if step.positive:
            bound = ir.Bound(sympy.Integer(0), None, False, False)
        if step.interval is not None:
            iv = step.interval
            lo = self.scalar(iv.lo, {}, "an interval bound")
            hi = self.scalar(iv.hi, {}, "an interval bound")
            if lo >= hi:
                self.fail(iv.span, f"empty interval: {lo} is not below {hi}")
            bound = ir.Bound(lo, hi, iv.lo_closed, iv.hi_closed)
        param = ir.Param(name, function(ir.K), False, False, bound, step.positive, step.span)
        if bound is not None:
            values = [(n, float(recurrence.value(n))) for n in range(min(depth, MAX_DEPTH))]
            self.check_bound(param, step, values)
        return param

    def check_param_attribute(self, d: ast.ParamDecl) -> None:
        """A learnable param is the attribute `module.<name>` (`<name>_raw` when it is
        constrained); a k-dependent one the table `module.<name>`. Neither may be an
        attribute the module has already (`named_parameters`, `_modules`, `solver`, ...)."""
        if not (d.learnable or _mentions(d.value, "k")):
            return  # a fixed number: a local of forward, named freely
        constrained = d.learnable and (d.positive or d.interval is not None)
        attribute = f"{d.name.id}_raw" if constrained else d.name.id
        if attribute in naming.reserved(naming.Reserved.MODULE_ATTRIBUTE):
            self.report.error(
                d.name.span,
                f"param {d.name.id} would be the attribute module.{attribute}, which the "
                "generated module already has (from nn.Module or its solver settings)",
                f"rename the param, such as {d.name.id.strip('_')}_value",
            )

    def param_options(self, d: ast.ParamDecl) -> None:
        """Each option at most once, and at most one constraint (`positive` or an interval)."""
        name = d.name.id
        flags: set[str] = set()
        constraint = None
        ok = True
        for option in d.options:
            if isinstance(option, ast.ParamFlag):
                if option.word in flags:
                    self.report.error(
                        option.span,
                        f"param {name}: '{option.word}' is given twice",
                        f"remove the second '{option.word}'",
                    )
                    ok = False
                    continue
                flags.add(option.word)
                if option.word != "positive":
                    continue
            text = self.constraint_text(option)
            if constraint is None:
                constraint = text
                continue
            self.report.error(
                option.span,
                f"param {name} has two constraints: {constraint} and {text}",
                "keep one: a param has at most one constraint, positive or an interval",
            )
            ok = False
        if not ok:
            self.report.abandon()

    def constraint_text(self, option) -> str:
        if isinstance(option, ast.ParamFlag):
            return option.word
        return (
            f"in {'[' if option.lo_closed else '('}{self.text(option.lo)}, "
            f"{self.text(option.hi)}{']' if option.hi_closed else ')'}"
        )

    def layer_values(
        self, param: ir.Param, d: ast.ParamDecl, depth: int
    ) -> list[tuple[int, float]]:
        """The value at every layer k < depth (k-dependent) or once; an undefined value is an error."""
        layers = list(range(min(depth, MAX_DEPTH))) if param.depends_on_k else [0]
        fn = sympy.lambdify(ir.K, param.value, "math")
        values = []
        for k in layers:
            try:
                v = float(fn(k))
            except (ZeroDivisionError, OverflowError, ValueError, TypeError):
                v = math.nan
            if not math.isfinite(v):
                at = f" at layer k={k}" if param.depends_on_k else ""
                self.fail(
                    d.value.span,
                    f"param {param.name} is undefined{at} (division by zero or overflow)",
                    "keep the value finite at every layer",
                )
            values.append((k, v))
        return values

    def check_bound(
        self, param: ir.Param, d: ast.ParamDecl, values: list[tuple[int, float]]
    ) -> None:
        for k, v in values:
            inside = param.bound.contains(v)
            strict = ir.Bound(param.bound.lo, param.bound.hi, False, False).contains(v)
            at = f" at layer k={k}" if param.depends_on_k else ""
            if not inside:
                self.fail(
                    d.value.span,
                    f"param {param.name} = {_show(v)}{at} violates its constraint {param.bound.show(param.name)}",
                )
            if param.learnable and not strict:
                self.fail(
                    d.value.span,
                    f"learnable param {param.name} starts at {_show(v)}{at}, on the boundary of {param.bound.show(param.name)}",
                    "a reparametrized param can only approach its bounds; start strictly inside",
                )

    def init(
        self, decls: list[ast.InitDecl], states: list[str], params: dict[str, ir.Param]
    ) -> list[ir.InitAssign]:
        given: dict[str, ast.InitAssign] = {}
        for d in decls:
            for a in d.assigns:
                if a.target.id in self.poisoned:
                    continue
                if a.target.id not in states:
                    self.report.error(
                        a.target.span,
                        f"init of '{a.target.id}', which is not a state",
                        _did_you_mean(a.target.id, states),
                    )
                elif a.target.id in given:
                    self.report.error(a.target.span, f"state '{a.target.id}' is initialised twice")
                else:
                    given[a.target.id] = a
        ready = {s for s in states if s not in given}
        result = [
            ir.InitAssign(s, ir.LinearForm.of(ir.InputValue()), Span.point(1, 1))
            for s in states
            if s not in given
        ]
        pending = list(given.values())
        while pending:
            progress = False
            for a in list(pending):
                if all(s in ready for s in _state_names(a.value, states)):
                    form = self.attempt(self.init_form, a.value, states, params)
                    if form is not None:
                        result.append(ir.InitAssign(a.target.id, form, a.span))
                    ready.add(a.target.id)  # a failed init still defines its state
                    pending.remove(a)
                    progress = True
            if not progress:
                # Report the cycle once; the inits that wait on it are still checked.
                a = pending.pop(0)
                self.report.error(
                    a.span, f"the init of '{a.target.id}' depends on itself through other inits"
                )
                ready.add(a.target.id)
        return result

    def init_form(self, node, states: list[str], params: dict[str, ir.Param]) -> ir.LinearForm:
        if isinstance(node, ast.Number):
            if self.number(node) == 0:
                return ir.LinearForm()
            self.fail(
                node.span,
                f"init to the number {node.text}: a state starts as a tensor",
                "use 0, input, or another state",
            )
        if isinstance(node, ast.Name):
            if node.id == "input":
                return ir.LinearForm.of(ir.InputValue())
            if node.id in states:
                return ir.LinearForm.of(ir.Initial(node.id))
            self.fail(
                node.span,
                f"'{node.id}' cannot be used in an init",
                "an init may use input, states, 0 and params",
            )
        scope = _Scope(tuple(states), params, {})
        scope.assigned = set()
        value = self.value(node, scope)
        if isinstance(value, Scalar):
            if value.expr == 0:
                return ir.LinearForm()
            self.fail(node.span, "an init must be a tensor expression (input, a state, 0)")
        # In an init, a state name means its initial value.
        terms = {}
        for atom, coef in value.form.terms:
            if isinstance(atom, ir.StateAt) and atom.lag == 0:
                atom = ir.Initial(atom.name)
            elif not isinstance(atom, ir.InputValue):
                self.fail(
                    node.span,
                    f"'{atom.show()}' cannot be used in an init",
                    "an init may use input, states, 0 and params",
                )
            terms[atom] = terms.get(atom, 0) + coef
        for coef in terms.values():
            layered = [
                p.name
                for p in params.values()
                if p.symbol in coef.free_symbols and (p.depends_on_k or p.per_layer)
            ]
            if ir.K in coef.free_symbols or layered:
                what = "k" if ir.K in coef.free_symbols else f"the per-layer param {layered[0]}"
                self.fail(
                    node.span,
                    f"an init cannot use {what}: it runs once, before the first layer",
                    "use numbers and params with one value for every layer",
                )
        return ir.LinearForm.from_dict(terms)

    def update(
        self, d: ast.UpdateDecl, states: list[str], params, blocks, taken
    ) -> tuple[list[ir.Assign], list[str], bool]:
        scope = _Scope(tuple(states), params, blocks)
        self._local_names = set()
        statements = []
        if len(d.statements) > MAX_STATEMENTS:
            self.report.error(
                d.statements[MAX_STATEMENTS].span,
                f"the update has more than {MAX_STATEMENTS} statements",
                "split the rule into several networks (stages of a model)",
            )
            return [], [], False
        for stmt in d.statements:
            assign = self.attempt(self.statement, stmt, scope, taken)
            if assign is not None:
                statements.append(assign)
        missing = [s for s in states if s not in scope.assigned and s not in self.poisoned]
        if missing:
            self.report.error(
                d.span,
                f"state '{missing[0]}' is never assigned in the update",
                f"add a statement {missing[0]}+ = ... (write {missing[0]}+ = {missing[0]} to keep it)",
            )
        return statements, scope.implicit_reasons, scope.uses_input

    def statement(self, stmt: ast.Statement, scope: _Scope, taken) -> ir.Assign:
        """One update statement; failed or not, it defines its target for the next ones."""
        try:
            target, is_state, tspan = self.target(stmt.target, scope)
        except Abandon:
            name = stmt.target.id
            if name in scope.states:
                scope.assigned.add(name)
            elif name not in (*scope.params, *scope.blocks, *scope.locals_):
                self.poisoned.add(name)  # `z+ = ...` with no state z: what z is, is unknown
            raise
        scope.current_target = target
        try:
            if is_state:
                if target in scope.assigned:
                    self.fail(
                        tspan,
                        f"state '{target}' is assigned twice in one update",
                        "each state gets one new value per layer; use a local for intermediate values",
                    )
            else:
                if target in scope.locals_:
                    self.fail(
                        tspan,
                        f"local '{target}' is assigned twice in one update",
                        "give the second value another name",
                    )
                if target in taken:
                    self.fail(
                        tspan,
                        f"'{target}' is a {taken[target]}; it cannot be assigned in the update",
                    )
                if target in RESERVED or target in ELEMENTWISE_MAPS:
                    self.fail(
                        tspan, f"'{target}' is a word of the language and cannot name a local"
                    )
            before = len(scope.forward_refs)
            form = self.tensor(stmt.value, scope, f"the new value of '{target}'")
            for name, span in scope.forward_refs[before:]:
                if not (is_state and name == target):
                    self.fail(
                        span,
                        f"'{name}+' is defined by a later statement, inside the block call of an implicit rule",
                        f"optgen solves a statement for its own next iterate only; move the block call into the statement {name}+ = ...",
                    )
        finally:
            scope.current_target = None
            if is_state:
                scope.assigned.add(target)
                if isinstance(stmt.target, ast.Name):
                    scope.rebound.add(target)
            elif target in RESERVED or target in ELEMENTWISE_MAPS:
                self.poisoned.add(target)
            elif target not in taken:
                scope.locals_.add(target)
                self._local_names.add(target)
        return ir.Assign(target, is_state, form, stmt.span, stmt.text)

    def target(self, node, scope: _Scope) -> tuple[str, bool, Span]:
        if node.id in self.poisoned and node.id not in scope.states:
            self.report.abandon()  # its declaration failed: that error said it all
        if isinstance(node, ast.NextName):
            if node.id not in scope.states:
                self.fail(
                    node.span,
                    f"'{node.id}+' : '{node.id}' is not a state",
                    _did_you_mean(node.id, scope.states) or "declare it: state " + node.id,
                )
            return node.id, True, node.span
        if isinstance(node, ast.Indexed):
            index = self.scalar(node.index, {"k": ir.K}, "an index")
            if node.id in scope.states and index == ir.K + 1:
                return node.id, True, node.span
            self.fail(
                node.span,
                f"cannot assign to '{self.text(node)}'",
                f"assign the next iterate: {node.id}+ = ... or {node.id}[k+1] = ...",
            )
        name = node.id
        if name in scope.states:
            return name, True, node.span
        if name in scope.params:
            self.fail(node.span, f"'{name}' is a param; params cannot be assigned in the update")
        if name in scope.blocks:
            self.fail(node.span, f"'{name}' is a block; blocks cannot be assigned in the update")
        return name, False, node.span

    def solver(self, d: ast.SolverDecl) -> ir.SolverSpec:
        table = SOLVERS if d.role == "solver" else BACKWARDS
        name = d.name.id
        if name not in table:
            self.fail(
                d.name.span,
                f"unknown {d.role} '{name}'",
                _did_you_mean(name, table) or f"known: {', '.join(table)}",
            )
        options = dict(table[name])
        for opt in d.options:
            key = opt.key.id
            if key not in table[name]:
                self.fail(
                    opt.key.span,
                    f"{d.role} {name} has no option '{key}'",
                    _did_you_mean(key, table[name])
                    or (
                        f"its options: {', '.join(table[name])}"
                        if table[name]
                        else f"{name} takes no options"
                    ),
                )
            value = self.scalar(opt.value, {}, f"the option {key}")
            if value <= 0:
                self.fail(opt.value.span, f"option {key} must be positive")
            if key in INTEGER_OPTIONS:
                if not value.is_integer:
                    self.fail(opt.value.span, f"option {key} must be an integer")
                options[key] = int(value)
            else:
                options[key] = float(value)
        return ir.SolverSpec(
            name, tuple((k, v) for k, v in options.items() if v is not None), d.span
        )

    # ------------------------------------------------------------ models (docs/language.md, "Models")
    def model(
        self, node: ast.Model, networks: dict[str, ir.Network], declared: dict[str, set[str]]
    ) -> ir.Model | None:
        """The IR of one model, or None when it has errors (all recorded in `report`).

        `networks` are the file's networks that resolved, `declared` the names of its
        networks and of its models: a stage of a network that failed is not reported again.
        """
        errors_before = len(self.report.errors)
        name = node.name.id
        self.check_class_name(node.name, "model", "OptResNet")
        decls: dict[type, list] = {}
        for d in node.decls:
            decls.setdefault(type(d), []).append(d)
        for kind, label in (
            (ast.InputDecl, "input"),
            (ast.StemDecl, "stem"),
            (ast.HeadDecl, "head"),
        ):
            for extra in decls.get(kind, [])[1:]:
                self.report.error(
                    extra.span,
                    f"'{label}' is declared twice in model {name}",
                    f"a model has one {label}",
                )
        for kind, message, hint in (
            (ast.InputDecl, f"model {name} declares no input", "add a line: input [3, 32, 32]"),
            (ast.StemDecl, f"model {name} has no stem", "add a line: stem conv(out=32)"),
            (
                ast.StageDecl,
                f"model {name} has no stage",
                "add a line: stage Net(dim=32, depth=4), Net a network of this file",
            ),
            (
                ast.HeadDecl,
                f"model {name} has no head",
                "add a line: head classifier(classes=10), or head none to return features",
            ),
        ):
            if kind not in decls:
                self.report.error(node.name.span, message, hint)

        size = None
        if ast.InputDecl in decls:
            size = self.attempt(self.model_input, decls[ast.InputDecl][0])
        stem = None
        if ast.StemDecl in decls:
            stem = self.attempt(self.model_stem, decls[ast.StemDecl][0])
        head = None
        if ast.HeadDecl in decls:
            head = self.attempt(self.model_head, decls[ast.HeadDecl][0])

        stages, between = self.model_sequence(node, networks, declared)

        layout = _STEM_LAYOUTS[stem.kind] if stem is not None else None
        # What flows into the next stage: its channels (and what gives them, for messages)
        # and the spatial size, (H, W) or (L,); None where an earlier error left it unknown.
        channels: int | None = None
        giver = ""
        spatial: tuple[int, ...] | None = None
        if stem is not None:
            channels, giver = stem.out, f"stem {stem.kind} gives {stem.out} {_unit(layout)}"
            if size is not None:
                spatial = self.attempt(self.stem_shape, stem, size, decls[ast.StemDecl][0])
        shapes: list[tuple[int, ...]] = []
        transitions: list[ir.Transition] = []
        for i, (d, stage, net) in enumerate(stages):
            if i > 0:
                written = between[i - 1]
                prev_decl, _, prev_net = stages[i - 1]
                transition = self.attempt(
                    self.model_transition,
                    written,
                    d,
                    layout,
                    channels,
                    prev_net,
                    net,
                )
                if transition is None:
                    channels = spatial = None
                else:
                    transitions.append(transition)
                    channels = transition.out
                    if written is not None and written[0].kind is not None:
                        giver = f"{_transition_text(written[0])} gives {channels} {_unit(layout)}"
                    elif written is not None:
                        giver = (
                            f"norm keeps the {channels} {_unit(layout)} of stage "
                            f"{prev_decl.network.id}"
                        )
                    if spatial is not None:
                        spatial = self.attempt(self.transition_shape, transition, written, spatial)
            if stage is None:
                channels = None
                continue
            if net is not None and layout is not None and net.layout != layout:
                self.report.error(
                    d.network.span,
                    f"stage {net.name} {_blocks_text(net)}, but {_layout_giver(stem)}",
                    _LAYOUT_HINTS[layout],
                )
            if channels is not None and stage.dim != channels:
                self.report.error(
                    _arg_span(d, "dim"),
                    f"stage {stage.network} has dim={stage.dim}, but {giver}",
                    f"write dim={channels}",
                )
            if net is not None:
                self.attempt(self.stage_dim_checks, d, stage, net)
            if spatial is not None:
                shapes.append((stage.dim, *spatial) if layout == "image" else (*spatial, stage.dim))
            channels = stage.dim
            giver = f"stage {stage.network} before it gives {channels} {_unit(layout)}"

        if len(self.report.errors) > errors_before:
            return None
        if any(stage is None or net is None for _, stage, net in stages):
            return None  # a stage runs a network whose errors are already reported
        output_shape = (channels, *spatial) if layout == "image" else (*spatial, channels)
        model = ir.Model(
            name=name,
            input=size,
            stem=stem,
            stages=tuple(stage for _, stage, _ in stages),
            transitions=tuple(transitions),
            head=head,
            layout=layout,
            shapes=tuple(shapes),
            output_shape=output_shape,
            span=node.span,
        )
        assert len(model.transitions) == len(model.stages) - 1 == len(model.shapes) - 1
        return model

    def model_sequence(
        self, node: ast.Model, networks: dict[str, ir.Network], declared: dict[str, set[str]]
    ) -> tuple[list, list]:
        """The stages in order, each `(decl, stage or None, network or None)`, and the
        transition written before each stage but the first, `(decl, args or None)` or None
        where two stages follow one another. A misplaced transition is reported here."""
        name = node.name.id
        stages: list[tuple[ast.StageDecl, ir.Stage | None, ir.Network | None]] = []
        between: list[tuple[ast.TransitionDecl, dict | None] | None] = []
        pending: tuple[ast.TransitionDecl, dict | None] | None = None
        misplaced: list[tuple[ast.TransitionDecl, str, str]] = []
        for d in node.decls:
            if isinstance(d, ast.StageDecl):
                checked = self.attempt(self.model_stage, d, networks, declared)
                stage, net = checked if checked is not None else (None, None)
                if stages:
                    between.append(pending)
                stages.append((d, stage, net))
                pending = None
            elif isinstance(d, ast.TransitionDecl):
                args = self.attempt(self.model_transition_args, d)
                what = _transition_text(d)
                if not stages:
                    misplaced.append(
                        (
                            d,
                            f"{what} comes before the first stage of model {name}",
                            "a transition sits between two stages; the stem feeds the first stage",
                        )
                    )
                elif pending is not None:
                    misplaced.append(
                        (
                            d,
                            f"{what} is a second transition after stage {stages[-1][0].network.id}",
                            "write one transition between two stages",
                        )
                    )
                else:
                    pending = (d, args)
        if pending is not None:
            d = pending[0]
            misplaced.append(
                (
                    d,
                    f"{_transition_text(d)} comes after the last stage of model {name}",
                    "the last stage feeds the head: add a stage after it, or remove it",
                )
            )
        if stages:
            for d, message, hint in misplaced:
                self.report.error(d.word.span, message, hint)
        return stages, between

    def model_args(
        self, args: tuple[ast.Option, ...], spec: dict[str, int | None], what: str, at: Span
    ) -> tuple[dict[str, int], dict[str, Span]]:
        """The arguments of a stem, stage, transition or head: positive integers, every
        unknown, repeated or bad one reported, defaults filled in; and the span of each."""
        values: dict[str, int] = {}
        spans: dict[str, Span] = {}
        given: set[str] = set()
        ok, misspelled = True, False
        for a in args:
            key = a.key.id
            if key in given:
                self.report.error(a.key.span, f"argument '{key}' is given twice")
                ok = False
                continue
            given.add(key)
            if key not in spec:
                self.report.error(
                    a.key.span,
                    f"{what} has no argument '{key}'",
                    _did_you_mean(key, spec)
                    or (
                        f"its arguments: {', '.join(spec)}"
                        if spec
                        else f"{what} takes no arguments"
                    ),
                )
                ok, misspelled = False, True
                continue
            value = self.attempt(
                self.positive_int, a.value, f"{key} of {what}", f"the argument {key}"
            )
            if value is None:
                ok = False
                continue
            values[key], spans[key] = value, a.value.span
        for key, default in spec.items():
            if key in given:
                continue
            if default is not None:
                values[key], spans[key] = default, at
                continue
            ok = False
            if not misspelled:  # a misspelled key is likely the missing one: said once
                self.report.error(
                    at,
                    f"{what} needs the argument {key}",
                    f"write {key}=... between its parentheses",
                )
        if not ok:
            self.report.abandon()
        return values, spans

    def positive_int(self, node, what: str, context: str) -> int:
        value = self.scalar(node, {}, context)
        if not (value.is_integer and value > 0):
            self.fail(node.span, f"{what} must be a positive integer, got {self.text(node)}")
        return int(value)

    def odd_kernel(self, kernel: int, span: Span, what: str) -> None:
        if kernel % 2 == 0:
            self.fail(
                span,
                f"kernel of {what} must be odd, got {kernel}",
                f"'same' padding keeps the size only for odd kernels: use {kernel + 1}",
            )

    def model_input(self, d: ast.InputDecl) -> tuple[int, int, int]:
        if len(d.sizes) != 3:
            self.fail(
                d.span,
                f"input takes three sizes [channels, height, width], got {len(d.sizes)}",
                "write input [3, 32, 32]",
            )
        sizes = [
            self.attempt(self.positive_int, node, f"{label} of the input", "an input size")
            for node, label in zip(d.sizes, ("channels", "height", "width"))
        ]
        if None in sizes:
            self.report.abandon()
        return tuple(sizes)

    def model_stem(self, d: ast.StemDecl) -> ir.Stem:
        kind = d.kind.id
        if kind not in _STEM_ARGS:
            self.fail(
                d.kind.span,
                f"unknown stem '{kind}'",
                _did_you_mean(kind, _STEM_ARGS) or f"known: {', '.join(_STEM_ARGS)}",
            )
        args, spans = self.model_args(d.args, _STEM_ARGS[kind], f"stem {kind}", d.kind.span)
        if kind == "conv":
            self.odd_kernel(args["kernel"], spans["kernel"], "stem conv")
            return ir.Stem(ir.StemKind.CONV, args["out"], args["kernel"], args["stride"], d.span)
        return ir.Stem(ir.StemKind(kind), args["out"], args["size"], args["size"], d.span)

    def model_head(self, d: ast.HeadDecl) -> ir.Head:
        kind = d.kind.id
        if kind not in _HEAD_ARGS:
            self.fail(
                d.kind.span,
                f"unknown head '{kind}'",
                _did_you_mean(kind, _HEAD_ARGS) or f"known: {', '.join(_HEAD_ARGS)}",
            )
        args, _ = self.model_args(d.args, _HEAD_ARGS[kind], f"head {kind}", d.kind.span)
        return ir.Head(args.get("classes"), d.span)

    def model_stage(
        self, d: ast.StageDecl, networks: dict[str, ir.Network], declared: dict[str, set[str]]
    ) -> tuple[ir.Stage, ir.Network | None]:
        """The stage and its network (None when the network has errors of its own)."""
        name = d.network.id
        unknown = None
        if name in declared["network"]:
            pass
        elif name in declared["model"]:
            unknown = (f"'{name}' is a model; a stage runs a network", None)
        else:
            names = sorted(declared["network"])
            unknown = (
                f"unknown network '{name}'",
                _did_you_mean(name, names)
                or (
                    f"a stage runs a network of this file: {', '.join(names)}"
                    if names
                    else f"declare it in this file: network {name} {{ ... }}"
                ),
            )
        if unknown is not None:
            self.report.error(d.network.span, *unknown)
        args, spans = self.model_args(d.args, _STAGE_ARGS, f"stage {name}", d.network.span)
        if args["depth"] > MAX_DEPTH:
            self.fail(
                spans["depth"],
                f"depth {args['depth']} of stage {name} is out of range",
                f"use between 1 and {MAX_DEPTH} layers",
            )
        if unknown is not None:
            self.report.abandon()
        net = networks.get(name)
        window = next(
            (
                atom
                for st in (net.statements if net else ())
                for atom in st.form.walk()
                if isinstance(atom, ir.HistorySum) and atom.window is not None
            ),
            None,
        )
        if window is not None:
            self.fail(
                d.network.span,
                f"network {name} sums over a sliding window ({window.show()}), which a model "
                "stage cannot hold yet",
                "sum from a fixed layer (sum(i = 0..k, ...)) in a model's stages",
            )
        return ir.Stage(name, args["dim"], args["depth"], d.span), net

    def stage_dim_checks(self, d: ast.StageDecl, stage: ir.Stage, net: ir.Network) -> None:
        """The conditions the generated constructor puts on dim (fractional block
        arguments, transformer heads), checked here for the stage's dim."""
        for block in net.blocks:
            kind = BLOCK_KINDS[block.kind]
            for check in kind.dim_checks(block, kind):
                if eval(check.condition, {"__builtins__": {}}, {"dim": stage.dim}):
                    self.fail(
                        _arg_span(d, "dim"),
                        f"stage {net.name} with dim={stage.dim}: {check.message}",
                        "choose a dim that the blocks of the network accept",
                    )

    def model_transition_args(self, d: ast.TransitionDecl) -> dict[str, int]:
        word = d.word.id
        if d.carry is not None and d.carry.id not in _CARRIES:
            self.report.error(
                d.carry.span,
                f"unknown carry '{d.carry.id}'",
                _did_you_mean(d.carry.id, _CARRIES) or "write carry states or carry output",
            )
        if d.kind is None:  # norm
            if d.carry is not None and d.carry.id not in _CARRIES:
                self.report.abandon()
            return {}
        kind = d.kind.id
        if kind not in _TRANSITION_ARGS[word]:
            match = difflib.get_close_matches(kind, sorted(_TRANSITION_ARGS[word]), n=1, cutoff=0.6)
            known = [f"{w} {k}" for w, kinds in _TRANSITION_ARGS.items() for k in kinds]
            self.fail(
                d.kind.span,
                f"unknown transition '{word} {kind}'",
                (
                    f"did you mean '{word} {match[0]}'?"
                    if match
                    else f"known: {', '.join(known)}, norm"
                ),
            )
        args, _ = self.model_args(
            d.args, _TRANSITION_ARGS[word][kind], f"{word} {kind}", d.kind.span
        )
        if "kernel" in args:
            span = _arg_span(d, "kernel") or d.kind.span
            self.odd_kernel(args["kernel"], span, f"{word} {kind}")
        if d.carry is not None and d.carry.id not in _CARRIES:
            self.report.abandon()
        return args

    def model_transition(
        self,
        written: tuple[ast.TransitionDecl, dict | None] | None,
        next_decl: ast.StageDecl,
        layout: str | None,
        channels: int | None,
        prev_net: ir.Network | None,
        next_net: ir.Network | None,
    ) -> ir.Transition:
        """The transition before stage `next_decl` (IDENTITY when none is written)."""
        same = prev_net is not None and next_net is not None and prev_net.name == next_net.name
        default = ir.Carry.STATES if same else ir.Carry.OUTPUT
        if written is None:
            if channels is None:
                self.report.abandon()
            return ir.Transition(ir.TransitionKind.IDENTITY, channels, default, next_decl.span)
        d, args = written
        what = _transition_text(d)
        if d.kind is not None and layout == "sequence":
            self.report.error(
                d.word.span,
                f"{what} needs the image layout [N, C, H, W], but the tokens stem gives "
                "the token layout [N, L, C]",
                "between token stages write norm, or nothing",
            )
        carry = default
        if prev_net is not None and next_net is not None:
            differ = set(prev_net.states) != set(next_net.states)
            pair = f"{_states_text(prev_net)} and {_states_text(next_net)}"
            if d.carry is not None and d.carry.id == "states" and differ:
                self.report.error(
                    d.carry.span,
                    f"carry states between {pair}, whose state sets differ",
                    f"write carry output: stage {next_net.name} then starts from its init",
                )
            elif d.carry is None and differ:
                self.report.error(
                    d.word.span,
                    f"{what} between {pair} must say carry output",
                    "their state sets differ, so only the output state is handed over: "
                    f"write {what}{'(...)' if d.kind else ''} carry output",
                )
        if d.carry is not None and d.carry.id in _CARRIES:
            carry = ir.Carry(d.carry.id)
        if args is None:
            self.report.abandon()
        if d.kind is None:
            if channels is None:
                self.report.abandon()
            return ir.Transition(ir.TransitionKind.NORM, channels, carry, d.span)
        kind = ir.TransitionKind(f"{d.word.id} {d.kind.id}")
        return ir.Transition(
            kind,
            args["out"],
            carry,
            d.span,
            stride=args.get("stride", 1),
            kernel=args.get("kernel", 3),
            scale=args.get("scale", 1),
        )

    def divides(self, step: int, span: Span, what: str, height: int, width: int) -> None:
        bad = [(label, n) for label, n in (("height", height), ("width", width)) if n % step]
        if not bad:
            return
        if len(bad) == 2 and height == width:
            shown = f"height and width {height}"
        else:
            shown = " and ".join(f"{label} {n}" for label, n in bad)
        self.fail(
            span,
            f"{what} does not divide its input's {shown}",
            "use one that divides " + (f"{height}" if height == width else f"{height} and {width}"),
        )

    def stem_shape(
        self, stem: ir.Stem, size: tuple[int, int, int], d: ast.StemDecl
    ) -> tuple[int, ...]:
        """The spatial size the stem gives the first stage: (H, W), or (L,) for tokens."""
        _, height, width = size
        key = "stride" if stem.kind is ir.StemKind.CONV else "size"
        step = stem.stride
        span = _arg_span(d, key) or d.kind.span
        self.divides(step, span, f"{key}={step} of stem {stem.kind}", height, width)
        if stem.kind is ir.StemKind.CONV:
            return (-(-height // step), -(-width // step))
        if stem.kind is ir.StemKind.PATCH:
            return (height // step, width // step)
        return ((height // step) * (width // step),)

    def transition_shape(
        self,
        transition: ir.Transition,
        written: tuple[ast.TransitionDecl, dict | None] | None,
        spatial: tuple[int, ...],
    ) -> tuple[int, ...]:
        """The spatial size after a transition."""
        kind = transition.kind
        if kind in (ir.TransitionKind.IDENTITY, ir.TransitionKind.NORM):
            return spatial
        if len(spatial) != 2:
            self.report.abandon()  # a down or up transition on tokens: reported already
        height, width = spatial
        if kind is ir.TransitionKind.UP_CONV:
            return (height * transition.scale, width * transition.scale)
        d = written[0]
        step = transition.stride
        span = _arg_span(d, "stride") or d.kind.span
        self.divides(step, span, f"stride={step} of {kind}", height, width)
        if kind is ir.TransitionKind.DOWN_CONV:
            return (-(-height // step), -(-width // step))
        return (height // step, width // step)


# ---------------------------------------------------------------- models
# The arguments of each stem, stage, transition and head; None marks a required one.
_STEM_ARGS: dict[str, dict[str, int | None]] = {
    "conv": {"out": None, "kernel": 3, "stride": 1},
    "patch": {"out": None, "size": None},
    "tokens": {"out": None, "size": None},
}
_STAGE_ARGS: dict[str, int | None] = {"dim": None, "depth": None}
_TRANSITION_ARGS: dict[str, dict[str, dict[str, int | None]]] = {
    "down": {
        "conv": {"out": None, "stride": 2, "kernel": 3},
        "pool": {"out": None, "stride": 2},
    },
    "up": {"conv": {"out": None, "scale": 2, "kernel": 3}},
}
_HEAD_ARGS: dict[str, dict[str, int | None]] = {"classifier": {"classes": None}, "none": {}}
_CARRIES = ("states", "output")
_STEM_LAYOUTS = {
    ir.StemKind.CONV: Layout.IMAGE.value,
    ir.StemKind.PATCH: Layout.IMAGE.value,
    ir.StemKind.TOKENS: Layout.SEQUENCE.value,
}
_LAYOUT_NAMES = {
    "vector": "the vector layout [..., dim]",
    "image": "the image layout [N, dim, H, W]",
    "sequence": "the token layout [N, L, dim]",
}
_LAYOUT_HINTS = {
    "image": "after a conv or patch stem, a stage runs a network of conv or convnext blocks",
    "sequence": "after a tokens stem, a stage runs a network of transformer blocks",
}


def _unit(layout: str | None) -> str:
    return "features" if layout == "sequence" else "channels"


def _flag_span(d: ast.ParamDecl, word: str) -> Span:
    return next(o.span for o in d.options if isinstance(o, ast.ParamFlag) and o.word == word)


def _arg_span(d, key: str) -> Span | None:
    return next((a.value.span for a in d.args if a.key.id == key), None)


def _transition_text(d: ast.TransitionDecl) -> str:
    return d.word.id if d.kind is None else f"{d.word.id} {d.kind.id}"


def _states_text(net: ir.Network) -> str:
    return f"{net.name} (states {', '.join(net.states)})"


def _blocks_text(net: ir.Network) -> str:
    return f"has blocks of {_LAYOUT_NAMES[net.layout]}" if net.blocks else "has no blocks"


def _layout_giver(stem: ir.Stem) -> str:
    if stem.kind is ir.StemKind.TOKENS:
        return "the tokens stem gives the token layout [N, L, C]"
    return f"the {stem.kind} stem gives the image layout [N, C, H, W]"


def _clip(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _show(v: float) -> str:
    return f"{v:g}"


def _mentions(node, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


def _state_names(node, states: list[str]) -> set[str]:
    """The states an init reads through sums, products and signs (not inside calls)."""
    found, stack = set(), [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Name) and current.id in states:
            found.add(current.id)
        if isinstance(current, (ast.Binary, ast.Neg)):
            stack.extend(ast.sub_expressions(current))
    return found


def resolve(module: ast.Module, source: SourceFile, warnings: list | None = None) -> ir.Program:
    """Check every network and model of a parsed file and return their IR (warnings
    appended to `warnings`). The models are checked after every network.

    Raises one `OptgenError` holding every error of the file, in source order.
    """
    resolver = Resolver(source)
    # Every item writes the file of its snake_case name: no two may share one.
    items = sorted(
        [("network", n) for n in module.networks] + [("model", m) for m in module.models],
        key=lambda item: (item[1].span.line, item[1].span.col),
    )
    if len(items) > MAX_ITEMS:
        what, node = items[MAX_ITEMS]
        resolver.report.error(
            node.name.span,
            f"this file holds more than {MAX_ITEMS} networks and models",
            "split it into several .opt files",
        )
        resolver.report.raise_if_errors()
    seen: dict[str, tuple[str, str]] = {}
    names: dict[str, set[str]] = {"network": set(), "model": set()}
    written: dict[str, tuple[str, str]] = {}  # every output file: the item that writes it
    for what, node in items:
        name = node.name.id
        files = naming.output_files(name)
        file_name = naming.snake_case(name)
        clash = next((written[f] for f in files if f in written), None)
        hint = None
        if name in names[what]:
            message = f"{what} {name} is defined twice"
        elif name in names["model" if what == "network" else "network"]:
            other_what = "model" if what == "network" else "network"
            message = f"{what} {name} has the name of {other_what} {name}"
            hint = "a model and a network of one file need different names"
        elif file_name in seen:
            other_what, other = seen[file_name]
            message = f"{what} {name} writes the same file as {other_what} {other} ({file_name}.py)"
        elif clash is not None:
            shared = next(f for f in files if f in written)
            message = f"{what} {name} writes the same file as {clash[0]} {clash[1]} ({shared})"
            hint = "a network Foo writes foo.py and test_foo.py: rename one of the two"
        else:
            message = None
        if message is not None:
            resolver.report.error(node.name.span, message, hint)
        for f in files:
            written.setdefault(f, (what, name))
        seen.setdefault(file_name, (what, name))
        names[what].add(name)
    networks = []
    for node in module.networks:
        net = resolver.attempt(resolver.network, node)  # checked even after an earlier failed
        if net is not None:
            networks.append(net)
    by_name = {net.name: net for net in reversed(networks)}  # the first of a repeated name
    models = []
    for node in module.models:
        model = resolver.attempt(resolver.model, node, by_name, names)
        if model is not None:
            models.append(model)
    if not module.networks and not module.models:
        resolver.report.error(
            Span.point(1, 1),
            "no network in this file",
            "a file holds one or more `network Name { ... }` items",
        )
    resolver.report.raise_if_errors()
    if warnings is not None:
        warnings.extend(resolver.report.warnings)
    return ir.Program(tuple(networks), tuple(models))
