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
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import NoReturn

import sympy

from . import ast, ir
from .blocks import (
    BACKWARD_KINDS,
    BLOCK_KINDS,
    ELEMENTWISE_MAPS,
    INTEGER_OPTIONS,
    LAYOUTS,
    MODULE_DICT_ATTRIBUTES,
    SOLVER_KINDS,
    ArgKind,
    Layout,
)
from .errors import Abandon, Reporter
from .ir import DIM
from .source import SourceFile, Span

RESERVED = {"input": "the network input", "k": "the layer index", "dim": "the feature size"}
DEFAULT_DEPTH = 8
MAX_DEPTH = 100_000
MAX_EXPONENT = 400
# Options and defaults of each solver and backward mode, from the registry.
SOLVERS = {name: dict(kind.options) for name, kind in SOLVER_KINDS.items()}
BACKWARDS = {name: dict(kind.options) for name, kind in BACKWARD_KINDS.items()}


def _did_you_mean(word: str, options) -> str | None:
    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


def snake_case(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


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
                f"use a magnitude between 1e-{MAX_EXPONENT} and 1e{MAX_EXPONENT}",
            )
        return sympy.Rational(Fraction(dec))

    def text(self, node) -> str:
        span = node.span
        if span.line == span.end_line:
            return self.source.line_text(span.line)[span.col - 1 : span.end_col - 1]
        return self.source.line_text(span.line)[span.col - 1 :] + " ..."

    # ------------------------------------------------------------ scalar expressions (params, bounds, block args)
    def scalar(self, node, allowed: dict[str, sympy.Expr], what: str) -> sympy.Expr:
        """A scalar expression whose names must be keys of `allowed`."""
        if isinstance(node, ast.Number):
            return self.number(node)
        if isinstance(node, ast.Name):
            if node.id in allowed:
                return allowed[node.id]
            self.fail(
                node.span,
                f"'{node.id}' cannot be used in {what}",
                _did_you_mean(node.id, allowed)
                or f"{what} may use numbers{''.join(', ' + n for n in sorted(allowed))}",
            )
        if isinstance(node, ast.Neg):
            return -self.scalar(node.operand, allowed, what)
        if isinstance(node, ast.Binary):
            left = self.scalar(node.left, allowed, what)
            right = self.scalar(node.right, allowed, what)
            if node.op == "/":
                if right == 0:
                    self.fail(node.right.span, "division by zero")
                return left / right
            return {"+": left + right, "-": left - right, "*": left * right}[node.op]
        self.fail(
            node.span,
            f"'{self.text(node)}' cannot be used in {what}",
            f"{what} may use numbers{''.join(', ' + n for n in sorted(allowed))}",
        )

    # ------------------------------------------------------------ tensor/scalar expressions in update and init
    def value(self, node, scope: _Scope) -> Value:
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
        if node.id not in scope.states:
            if node.id in (*scope.locals_, *scope.params, *scope.blocks):
                self.fail(
                    node.span,
                    f"'{node.id}-' : only states have a previous iterate, and '{node.id}' is not a state",
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
        if (
            not is_state
            and name not in scope.locals_
            and not (scope.sum_var and name != scope.sum_var and name in self._local_names)
        ):
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
                self.fail(
                    node.span,
                    f"local '{name}' has no history outside a sum",
                    f"use sum(i = 0..k, {name}[i]), or make it a state",
                )
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
                    self.fail(extra.span, f"the extra arguments of {func} must be scalars")
                if any(self._learnable(s, scope) for s in v.expr.free_symbols):
                    self.fail(
                        extra.span, f"the extra arguments of {func} must be fixed, not learnable"
                    )
                scalars.append(v.expr)
            return Tensor(ir.LinearForm.of(ir.MapOut(func, arg, tuple(scalars))), node.span)
        if func == "sum":
            self.fail(node.span, "sum over history is written sum(i = 0..k, expr)")
        known = set(scope.blocks) | set(ELEMENTWISE_MAPS)
        self.undefined(
            func,
            node.func_span,
            f"unknown function '{func}'",
            _did_you_mean(func, known) or f"known: {', '.join(sorted(known))}",
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
        lo = self.scalar(node.lo, {}, "the lower bound of a sum")
        if not lo.is_integer or lo < 0:
            self.fail(node.lo.span, "the lower bound of a sum must be a non-negative integer")
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
        return Tensor(
            ir.LinearForm.of(ir.HistorySum(sympy.Symbol(var, integer=True), int(lo), body)),
            node.span,
        )

    def _value_Neg(self, node: ast.Neg, scope: _Scope) -> Value:
        v = self.value(node.operand, scope)
        if isinstance(v, Scalar):
            return Scalar(-v.expr, node.span)
        return Tensor(v.form.scale(sympy.Integer(-1)), node.span)

    def _value_Binary(self, node: ast.Binary, scope: _Scope) -> Value:
        left = self.value(node.left, scope)
        right = self.value(node.right, scope)
        op = node.op
        if isinstance(left, Scalar) and isinstance(right, Scalar):
            if op == "/":
                if right.expr == 0:
                    self.fail(node.right.span, "division by zero")
                return Scalar(left.expr / right.expr, node.span)
            return Scalar(
                {
                    "+": left.expr + right.expr,
                    "-": left.expr - right.expr,
                    "*": left.expr * right.expr,
                }[op],
                node.span,
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
            return Tensor(left.form + other, node.span)
        if op == "*":
            if isinstance(left, Tensor) and isinstance(right, Tensor):
                self.fail(
                    node.span,
                    f"product of two tensor expressions: '{self.text(node)}'",
                    "coefficients must be scalars (numbers, params, k); a product of tensors is not a linear combination",
                )
            scalar, tensor = (left, right) if isinstance(left, Scalar) else (right, left)
            return Tensor(tensor.form.scale(scalar.expr), node.span)
        # division
        if isinstance(right, Tensor):
            self.fail(
                node.span,
                f"division by a tensor expression: '{self.text(node)}'",
                "coefficients must be scalars (numbers, params, k)",
            )
        if right.expr == 0:
            self.fail(node.right.span, "division by zero")
        return Tensor(left.form.scale(1 / right.expr), node.span)

    def tensor(self, node, scope: _Scope, what: str) -> ir.LinearForm:
        v = self.value(node, scope)
        if isinstance(v, Scalar):
            self.fail(
                node.span,
                f"{what} must be a tensor expression, but '{self.text(node)}' is a scalar",
            )
        return v.form

    # ------------------------------------------------------------ declarations
    def network(self, node: ast.Network) -> ir.Network | None:
        """The IR of one network, or None when it has errors (all recorded in `report`)."""
        errors_before = len(self.report.errors)
        self.poisoned = set()
        name = node.name.id
        if keyword.iskeyword(name) or keyword.issoftkeyword(name):
            self.report.error(
                node.name.span,
                f"network name '{name}' is a Python keyword",
                "pick a CamelCase class name such as Nesterov",
            )
        elif not name[0].isupper():
            self.report.error(
                node.name.span,
                f"network name '{name}' is not a CamelCase class name",
                f"write {name[0].upper() + name[1:]}",
            )
        decls: dict[type, list] = {}
        for d in node.decls:
            decls.setdefault(type(d), []).append(d)
        for kind, label in (
            (ast.StateDecl, "state"),
            (ast.LayersDecl, "layers"),
            (ast.UpdateDecl, "update"),
            (ast.OutputDecl, "output"),
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

        blocks: dict[str, ir.Block] = {}
        block_names: set[str] = set()  # every block of the network, a failed one included
        for d in decls.get(ast.BlockDecl, []):
            owned = claim(d.name, "block")
            if d.name.id.startswith("_") or d.name.id in MODULE_DICT_ATTRIBUTES:
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
        param_decls = decls.get(ast.ParamDecl, [])
        owned_params = [claim(d.name, "param") for d in param_decls]
        declared = {d.name.id for d in param_decls}
        for d, owned in zip(param_decls, owned_params):
            param = self.attempt(self.param, d, params, declared, depth, unknown)
            if not owned:
                continue
            if param is None:
                unknown.add(d.name.id)
                param = ir.Param(
                    d.name.id, sympy.Integer(0), d.learnable, d.per_layer, None, d.positive, d.span
                )
            params[d.name.id] = param

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
        if len(self.report.errors) > errors_before:
            return None
        if (solver or backward) and not (implicit or equilibrium):
            d = decls[ast.SolverDecl][0]
            self.report.warn(d.span, f"'{d.role}' has no effect: network {name} is explicit")
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
            spans={"name": node.name.span},
        )
        ir.validate(net)
        return net

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
            if isinstance(atom, (ir.HistorySum, ir.Initial)):
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
        param = ir.Param(d.name.id, value, d.learnable, d.per_layer, bound, d.positive, d.span)
        values = self.layer_values(param, d, depth)
        if bound is not None:
            self.check_bound(param, d, values)
        return param

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


def _show(v: float) -> str:
    return f"{v:g}"


def _mentions(node, name: str) -> bool:
    if isinstance(node, ast.Name):
        return node.id == name
    for child in ("left", "right", "operand", "index", "body", "lo", "hi"):
        sub = getattr(node, child, None)
        if sub is not None and _mentions(sub, name):
            return True
    return any(_mentions(a, name) for a in getattr(node, "args", ()) or ())


def _state_names(node, states: list[str]) -> set[str]:
    found = set()
    if isinstance(node, ast.Name) and node.id in states:
        found.add(node.id)
    for child in ("left", "right", "operand"):
        sub = getattr(node, child, None)
        if sub is not None:
            found |= _state_names(sub, states)
    return found


def resolve(
    module: ast.Module, source: SourceFile, warnings: list | None = None
) -> list[ir.Network]:
    """Check every network of a parsed file and return their IR (warnings appended to `warnings`).

    Raises one `OptgenError` holding every error of the file, in source order.
    """
    resolver = Resolver(source)
    networks = []
    seen: dict[str, ast.Network] = {}
    for node in module.networks:
        file_name = snake_case(node.name.id)
        if file_name in seen:
            other = seen[file_name].name.id
            what = (
                "is defined twice"
                if other == node.name.id
                else f"writes the same file as network {other} ({file_name}.py)"
            )
            resolver.report.error(node.name.span, f"network {node.name.id} {what}")
        else:
            seen[file_name] = node
        net = resolver.attempt(resolver.network, node)  # checked even after an earlier failed
        if net is not None:
            networks.append(net)
    if not module.networks:
        resolver.report.error(
            Span.point(1, 1),
            "no network in this file",
            "a file holds one or more `network Name { ... }` items",
        )
    resolver.report.raise_if_errors()
    if warnings is not None:
        warnings.extend(resolver.report.warnings)
    return networks
