"""Expressions of an update and an init: the values `Scalar` and `Tensor`, the `Scope` of
one statement, names and lags (`x`, `x+`, `x-`, `x[k-2]`, `g[i]` in a sum), calls of
blocks, maps and scalar functions, sums over history, and the scalar-coefficient rule: a
tensor expression is a linear form, tensors combined with scalar coefficients."""

from __future__ import annotations

import dataclasses

import sympy

from .. import ir
from ..present import number
from ..source import Span
from ..syntax import ast
from .calls import CallResolver
from .context import Context, Job, _clip, _did_you_mean
from .data_scalars import DataScalars, data_term
from .scalars import CONSTANTS, ScalarResolver
from .spaces import SpaceRules
from .sums import HistorySums
from .values import DataScalar, Scalar, ScalarLike, Scope, Tensor, Value

# A limit on the size of one file's items (docs/robustness.md, "Limits"): each coefficient
# is simplified exactly, at a cost that grows faster than its size.
MAX_COEFFICIENT_PARAMS = 32  # params and k in one coefficient: (p0 + ... + p31)*T(x)


class ExpressionResolver(CallResolver):
    """The value of an expression of the update or an init, in the `Scope` of its statement."""

    def __init__(self, ctx: Context, scalars: ScalarResolver):
        super().__init__(ctx)
        self.scalars = scalars
        self.maps = MapArgumentChecks(ctx)
        self.data = DataScalars(ctx, scalars)
        self.sums = HistorySums(ctx, scalars)
        self.spaces = SpaceRules(ctx)
        # The scope of the expression being folded, for `combine`.
        self._scope: Scope | None = None

    def value(self, node, scope: Scope) -> Value:
        self._scope = scope
        return ast.fold(node, lambda leaf: self.value_leaf(leaf, scope), self.negate, self.combine)

    def value_leaf(self, node, scope: Scope) -> Value:
        if (getattr(node, "id", None) or getattr(node, "func", None)) in self.poisoned:
            self.report.abandon()
        method = getattr(self, f"_value_{type(node).__name__}")
        return method(node, scope)

    def _value_Number(self, node: ast.Number, scope: Scope) -> Value:
        return Scalar(self.scalars.number(node), node.span)

    def _value_Name(self, node: ast.Name, scope: Scope) -> Value:
        name = node.id
        if name in scope.scalar_locals and name != scope.current_target:
            return dataclasses.replace(scope.scalar_locals[name], span=node.span)
        if scope.sum_var is not None and name == scope.sum_var:
            return Scalar(sympy.Symbol(name, integer=True), node.span)
        if name in scope.params:
            return Scalar(scope.params[name].symbol, node.span)
        if name == "k":
            return Scalar(ir.K, node.span)
        if name == "L":
            return Scalar(ir.L, node.span)
        if name in CONSTANTS:
            return Scalar(CONSTANTS[name], node.span)
        if name in scope.states:
            lag = 1 if name in scope.rebound else 0
            return Tensor(ir.LinearForm.of(ir.StateAt(name, lag)), node.span, scope.space(name))
        if name in scope.locals_:
            return Tensor(
                ir.LinearForm.of(ir.Local(name)), node.span, self.local_space(name, scope)
            )
        if name == "input":
            scope.uses_input = True
            return Tensor(ir.LinearForm.of(ir.InputValue()), node.span)
        if name in scope.blocks:
            self.fail(node.span, f"block '{name}' must be applied to a tensor: {name}(...)")
        if name == "dim" or name in self.ctx.sizes:
            self.fail(
                node.span,
                f"'{name}' is a size, which can only be used in block arguments",
                (
                    "sizes are integer arguments of blocks, such as hidden=2*m"
                    if name != "dim"
                    else None
                ),
            )
        if name == scope.current_target:
            self.fail(node.span, f"local '{name}' is used in its own definition")
        known = set(scope.states) | set(scope.params) | scope.locals_ | {"k", "input"}
        self.undefined(name, node.span, f"undefined name '{name}'", _did_you_mean(name, known))

    def _next_state(self, name: str, span: Span, scope: Scope) -> Value:
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
        return Tensor(ir.LinearForm.of(ir.StateAt(name, 1)), span, scope.space(name))

    def _value_NextName(self, node: ast.NextName, scope: Scope) -> Value:
        return self._next_state(node.id, node.span, scope)

    def _value_PrevName(self, node: ast.PrevName, scope: Scope) -> Value:
        self.no_history(node.id, node, scope)
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
        return Tensor(ir.LinearForm.of(ir.StateAt(node.id, -1)), node.span, scope.space(node.id))

    def _value_Indexed(self, node: ast.Indexed, scope: Scope) -> Value:
        name = node.id
        self.no_history(name, node, scope)
        is_state = name in scope.states
        if name == scope.current_target and not is_state and name not in scope.params:
            self.fail(node.span, f"local '{name}' is used in its own definition")
        if (
            not is_state
            and name not in scope.locals_
            and not (scope.sum_var and name != scope.sum_var and name in self.ctx.local_names)
        ):
            param = scope.params.get(name)
            if param is not None and not param.learnable and param.depends_on_k:
                return Scalar(self.scalars.schedule_read(node, param.value), node.span)
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
        index = self.scalars.scalar(node.index, index_vars, "an index")
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
            space = scope.space(name) if is_state else self.local_space(name, scope)
            return Tensor(ir.LinearForm.of(ir.History(name, is_state)), node.span, space)
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
            if lag < -64:
                self.fail(
                    node.index.span, f"lag {lag} is too deep", "read at most 64 iterates back"
                )
            return Tensor(ir.LinearForm.of(ir.StateAt(name, lag)), node.span, scope.space(name))
        if not index.free_symbols and index == 0 and is_state:
            return Tensor(ir.LinearForm.of(ir.Initial(name)), node.span, scope.space(name))
        self.fail(
            node.index.span,
            f"unsupported index '{self.text(node.index)}'",
            "write x[k+1], x[k], x[k-1], ..., or x[0]",
        )

    def no_history(self, name: str, node, scope: Scope) -> None:
        if name in scope.scalar_locals:
            self.fail(
                node.span,
                f"'{self.text(node)}': the local '{name}' holds a scalar, which has no "
                "history (it is read in its place)",
                "compute it again from the earlier values, e.g. with g- for g",
            )

    def local_history(self, name: str, lag: int, node, scope: Scope) -> Value:
        """`g-`, `g[k-2]`: local g of an earlier layer (its value at layer 0 before that)."""
        if name == scope.current_target:
            self.fail(node.span, f"local '{name}' is used in its own definition")
        return Tensor(
            ir.LinearForm.of(ir.Local(name, lag)), node.span, self.local_space(name, scope)
        )

    @staticmethod
    def local_space(name: str, scope: Scope) -> str | None:
        """The space of a tensor local; None (any) when its statement failed."""
        return scope.local_spaces.get(name)

    def _learnable(self, symbol, scope: Scope) -> bool:
        name = ir.symbol_param(symbol) if isinstance(symbol, sympy.Symbol) else None
        return name is not None and name in scope.params and scope.params[name].learnable

    def _value_HistorySum(self, node: ast.HistorySum, scope: Scope) -> Value:
        total = self.sums.resolve(node, scope, self.tensor, self._learnable)
        self.spaces.history_sum(node, total.form.terms[0][0].body, scope)
        return total

    def negate(self, node: ast.Neg, v: Value) -> Value:
        if isinstance(v, Scalar):
            return Scalar(-v.expr, node.span)
        if isinstance(v, DataScalar):
            return DataScalar(-v.expr, v.reductions, node.span)
        return Tensor(v.form.scale(sympy.Integer(-1)), node.span, v.space)

    def combine(self, node: ast.Binary, left: Value, right: Value) -> Value:
        """`left op right`, each operand already evaluated."""
        op = node.op
        if isinstance(left, Scalar) and isinstance(right, Scalar):
            if op == "^" and any(self._learnable(s, self._scope) for s in right.expr.free_symbols):
                self.fail(node.right.span, "an exponent must be fixed, not learnable")
            value = self.scalars.scalar_binary(node, left.expr, right.expr)
            self.check_symbol_count(value.free_symbols, node)
            return Scalar(value, node.span)
        if isinstance(left, ScalarLike) and isinstance(right, ScalarLike):
            if op == "^" and any(self._learnable(s, self._scope) for s in right.expr.free_symbols):
                self.fail(node.right.span, "an exponent must be fixed, not learnable")
            value = self.data.binary(node, left, right, self._scope)
            self.check_symbol_count(value.expr.free_symbols, node)
            return value
        if op == "%":
            which = "left" if isinstance(left, Tensor) else "right"
            self.fail(
                node.span,
                f"'%' takes integers, but the {which} side of '{_clip(self.text(node))}' is a tensor",
                "'%' is for coefficients of the layer index (k % 4)",
            )
        if op == "^":
            which = "base" if isinstance(left, Tensor) else "exponent"
            self.fail(
                node.span,
                f"'^' takes scalars, but the {which} of '{_clip(self.text(node))}' is a tensor",
                "powers are for coefficients (t^2, k^(1/2)); an update is linear in the tensors",
            )
        if op in "+-":
            if isinstance(left, ScalarLike) or isinstance(right, ScalarLike):
                scalar = left if isinstance(left, ScalarLike) else right
                self.fail(
                    node.span,
                    f"'{self.text(node)}' adds the scalar '{self.text(node.left if scalar is left else node.right)}' to a tensor",
                    "an update is a linear combination of tensors; scale a tensor instead (t*x)",
                )
            other = right.form if op == "+" else right.form.scale(sympy.Integer(-1))
            self.check_coefficient_size(left.form, other, node)
            return Tensor(left.form + other, node.span, self.spaces.combined(node, left, right))
        if op == "*":
            if isinstance(left, Tensor) and isinstance(right, Tensor):
                self.fail(
                    node.span,
                    f"product of two tensor expressions: '{self.text(node)}'",
                    "coefficients must be scalars (numbers, params, k); a product of tensors is not a linear combination",
                )
            scalar, tensor = (left, right) if isinstance(left, ScalarLike) else (right, left)
            self.spaces.scaled(node, tensor, scalar.expr, self._scope)
            if isinstance(scalar, DataScalar):
                text = self.text(node.left if scalar is left else node.right)
                form = data_term(scalar, tensor.form, text)
                return Tensor(self.finite_form(form, node), node.span, tensor.space)
            form = self.finite_form(tensor.form.scale(scalar.expr), node)
            return Tensor(form, node.span, tensor.space)
        # division
        if isinstance(right, Tensor):
            self.fail(
                node.span,
                f"division by a tensor expression: '{self.text(node)}'",
                "coefficients must be scalars (numbers, params, k)",
            )
        if right.expr == 0:
            self.fail(node.right.span, "division by zero")
        self.spaces.scaled(node, left, right.expr, self._scope)
        if isinstance(right, DataScalar):
            form = self.data.divided(node, left.form, right, self._scope)
            return Tensor(self.finite_form(form, node), node.span, left.space)
        form = self.finite_form(left.form.scale(1 / right.expr), node)
        return Tensor(form, node.span, left.space)

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
            self.scalars.finite(coef, node)
        return form

    def tensor(self, node, scope: Scope, what: str) -> ir.LinearForm:
        return self.as_tensor(self.value(node, scope), node, what)

    def tensor_value(self, node, scope: Scope, what: str) -> Tensor:
        """The value of a tensor expression, with its space."""
        value = self.value(node, scope)
        self.as_tensor(value, node, what)
        return value

    def as_tensor(self, v: Value, node, what: str) -> ir.LinearForm:
        if isinstance(v, ScalarLike):
            self.fail(
                node.span,
                f"{what} must be a tensor expression, but '{self.text(node)}' is a scalar",
            )
        return v.form


class MapArgumentChecks(Job):
    """The fixed arguments of a map, checked at every layer of the network."""

    def check_map_arguments(self, func: str, node: ast.Call, scalars: list, scope: Scope) -> None:
        """softshrink's threshold is >= 0 and clamp's bounds are ordered, at every layer."""
        if func not in ("softshrink", "clamp"):
            return
        if func == "softshrink":
            self.check_trained_threshold(node.args[1], sympy.sympify(scalars[0]), scope)
        # Learnable params are checked at their start values.
        start = {p.symbol: p.value for p in scope.params.values()}
        values = [sympy.sympify(v).xreplace(start) for v in scalars]
        layers = range(self.ctx.depth) if any(ir.K in v.free_symbols for v in values) else [0]
        for k in layers:
            at = [v.xreplace({ir.K: k}) for v in values]
            if any(v.free_symbols or not v.is_finite for v in at):
                return  # not a number here: nothing to check
            where = f" at layer k={k}" if len(layers) > 1 else ""
            if func == "softshrink" and at[0] < 0:
                self.fail(
                    node.args[1].span,
                    f"the threshold of softshrink is {number(at[0])}{where}; it must be >= 0",
                    "softshrink(e, lam) shrinks e towards 0 by lam",
                )
            if func == "clamp" and at[0] > at[1]:
                self.fail(
                    node.span,
                    f"clamp's lower bound {number(at[0])} is above its upper bound "
                    f"{number(at[1])}{where}",
                    "write clamp(e, lo, hi) with lo <= hi",
                )

    def check_trained_threshold(self, node, threshold: sympy.Expr, scope: Scope) -> None:
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
        layers = range(self.ctx.depth) if depends_on_k else [0]
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
