"""Calls in an expression of the update or an init: a block (`T(e)`, the adjoint `K^T(e)`
of an operator), an elementwise map (`relu`, `softshrink`, `clamp`), a scalar function
(`sqrt`, `min`, ...) and a per-sample reduction (`dot`, `norm`). `CallResolver` is the
part of `ExpressionResolver` (expressions.py) that resolves them: it uses that class's
`value`, `tensor_value`, `maps`, `data`, `spaces` and `scalars`."""

from __future__ import annotations

from .. import ir, schedules
from ..kinds.blocks import ELEMENTWISE_MAPS
from ..syntax import ast
from .context import Job, _clip, _did_you_mean
from .data_scalars import REDUCTIONS
from .values import DataScalar, Scalar, Scope, Tensor, Value


class CallResolver(Job):
    """Calls of blocks, maps, scalar functions and reductions (a part of
    `ExpressionResolver`)."""

    def _value_Call(self, node: ast.Call, scope: Scope) -> Value:
        func = node.func
        if func in scope.blocks and not scope.data_allowed:  # in an init
            self.fail(
                node.span,
                f"block call '{_clip(self.text(node))}' in an init, which runs once, before "
                "the first layer",
                "start the state at 0, input or another state; call the block in the update",
            )
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
                arg = self.tensor_value(node.args[0], scope, f"the argument of {func}")
            finally:
                scope.in_block = None
            space = self.spaces.block_call(node, arg, scope)
            out = ir.BlockOut(func, arg.form, node.adjoint)
            return Tensor(ir.LinearForm.of(out), node.span, space)
        if node.adjoint:
            self.fail(
                node.func_span,
                f"'{func}^T': only an operator block has an adjoint, and '{func}' is not a block",
                "declare one: block K = operator(from=dim, to=m), then write K^T(y)",
            )
        if func in ELEMENTWISE_MAPS:
            spec = ELEMENTWISE_MAPS[func]
            if len(node.args) != 1 + len(spec.scalar_args):
                sig = ", ".join(("e",) + spec.scalar_args)
                self.fail(
                    node.span,
                    f"{func} takes {1 + len(spec.scalar_args)} argument(s): {func}({sig})",
                )
            arg = self.tensor_value(node.args[0], scope, f"the argument of {func}")
            scalars = []
            for extra in node.args[1:]:
                v = self.value(extra, scope)
                if isinstance(v, DataScalar):
                    self.fail(
                        extra.span,
                        f"the extra arguments of {func} must be fixed, but "
                        f"'{_clip(self.text(extra))}' depends on the data",
                        "use numbers, params and k, e.g. softshrink(e, t*lam)",
                    )
                if not isinstance(v, Scalar):
                    self.fail(
                        extra.span,
                        f"the extra arguments of {func} must be scalars, not a tensor expression",
                        "use numbers, params and k, e.g. softshrink(e, t*lam)",
                    )
                scalars.append(v.expr)
            self.maps.check_map_arguments(func, node, scalars, scope)
            out = ir.MapOut(func, arg.form, tuple(scalars))
            return Tensor(ir.LinearForm.of(out), node.span, arg.space)
        if func in schedules.SCALAR_FUNCTIONS:
            return self.scalar_call(node, scope)
        if func in REDUCTIONS:
            spaces: list[str] = []

            def tensor(arg, scope: Scope, what: str) -> ir.LinearForm:
                value = self.tensor_value(arg, scope, what)
                spaces.append(value.space)
                return value.form

            scalar = self.data.reduction(node, scope, tensor)
            self.spaces.same_space(node, spaces, f"{func}(...)")
            return scalar
        if func == "sum":
            self.fail(node.span, "sum over history is written sum(i = 0..k, expr)")
        known = (
            set(scope.blocks)
            | set(ELEMENTWISE_MAPS)
            | set(schedules.SCALAR_FUNCTIONS)
            | set(REDUCTIONS)
        )
        self.undefined(
            func,
            node.func_span,
            f"unknown function '{func}'",
            _did_you_mean(func, known) or f"known: {', '.join(sorted(known))}",
        )

    def scalar_call(self, node: ast.Call, scope: Scope) -> Value:
        """sqrt, exp, log, min, max, ... in an update: of fixed scalars, or of per-sample
        scalars (dot, norm) where the function is not an integer one."""
        values = []
        for arg in node.args:
            v = self.value(arg, scope)
            if isinstance(v, Tensor):
                self.fail(
                    arg.span,
                    f"{node.func} takes scalars, but '{_clip(self.text(arg))}' is a tensor",
                    f"{node.func} is for coefficients (numbers, params, k, dot(a, b), norm(a)); "
                    "an update is linear in the tensors",
                )
            values.append(v)
        if any(isinstance(v, DataScalar) for v in values):  # a tensor anyway: torch computes it
            return self.data.function(node, values, scope)
        for arg, v in zip(node.args, values):
            if any(self._learnable(s, scope) for s in v.expr.free_symbols):
                self.fail(
                    arg.span,
                    f"{node.func} of a learnable param is not supported: its argument must be fixed",
                    "declare the coefficient as a learnable param of its own",
                )
        return Scalar(self.scalars.scalar_function(node, [v.expr for v in values]), node.span)
