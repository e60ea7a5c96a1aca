"""Solves in the forward: a statement whose blocks read its own next value (implicit,
`z = f(z)` per layer), a whole update solved for its fixed point (equilibrium), and
`_inverse_layer` of `backward reversible`, whose block arguments known only through an
equation are solved for (`analysis.reversible`)."""

from __future__ import annotations

from .. import ir
from ..analysis import reversible
from . import plan
from .lower_forms import Forms

ONE = ir.ONE


class Solves(Forms):
    """The ops of each solve, built from the same forms and kernels as the layer body."""

    def implicit_statement(self, st: ir.Assign, index: int, values: dict) -> list[plan.Op]:
        """`x+ = v + sum c_j B_j(args(x+))`: v computed once, then z = f(z) solved per layer."""
        unknown = ir.StateAt(st.target, 1)
        implicit = [(a, c) for a, c in st.form.terms if unknown in ir.LinearForm.of(a).walk()]
        explicit = [(a, c) for a, c in st.form.terms if unknown not in ir.LinearForm.of(a).walk()]
        ops: list[plan.Op] = []
        known = None
        if explicit:
            known = self.operand(
                ir.LinearForm(tuple(explicit)), values, ops, f"{st.target}_explicit"
            )
        # A sum over history inside an implicit term (`relu(x - sum(...) - T(x+))`) is a
        # running total the layer adds to once: it never reads x+ (language.md: v[i] is x_i,
        # never x_{k+1}), so it is accumulated before the solve, not in the map, where each
        # iteration would add again to a name the map does not hold.
        for atom, _ in implicit:
            for inner_atom in ir.LinearForm.of(atom).walk():
                if isinstance(inner_atom, ir.HistorySum):
                    ops.extend(self.materialize(inner_atom, values))
        fn = self.ns.create(f"{st.target}_map")
        z = self.ns.create("z")
        inner = dict(values)
        inner[unknown] = z
        body: list[plan.Op] = []
        for atom, _ in implicit:
            body.extend(self.materialize(atom, inner))
        out = self.ns.create(f"{st.target}_map_out")
        terms = [(known, self.coef(ONE))] if known else []
        terms += [(inner[a], self.coef(c)) for a, c in implicit]
        body.extend(self.combine(out, terms, z))
        target = self.next_target(st.target, index)
        values[unknown] = target
        guess = known or values[ir.StateAt(st.target, 0)]
        ops.append(plan.Solve(target, fn, z, tuple(body), out, guess, plan.Scalar("k")))
        return ops

    def equilibrium(self, layer: tuple[plan.Op, ...]) -> tuple[plan.Op, ...]:
        """The whole update as one map of the packed iterates, solved for its fixed point."""
        packed = [self.state_var[s] for s in self.net.states]
        packed += [lag for s in self.net.states for lag in self.lag_var[s]]
        fn = self.ns.create("update")
        zero = plan.Scalar("0")
        if len(packed) == 1:
            (state,) = packed
            return (plan.Solve(state, fn, state, layer, state, state, zero),)
        z, z_next, z0 = self.ns.create("z"), self.ns.create("z_next"), self.ns.create("z0")
        body = (plan.Unstack(tuple(packed), z), *layer, plan.Stack(z_next, tuple(packed)))
        return (
            plan.Stack(z0, tuple(packed)),
            plan.Solve(z, fn, z, body, z_next, z0, zero),
            plan.Unstack(tuple(packed), z),
        )

    def inverse_layer(self, slots: tuple[str, ...]) -> tuple[tuple[plan.Op, ...], tuple[str, ...]]:
        """`_inverse_layer(k, slots)`: each slot before layer k from the slots after it
        (`analysis.reversible`); returns its ops and the names it returns, in slot order."""
        inverse = reversible.invert(self.net)
        var = {}
        for s in self.net.states:
            var[(s, 0)] = self.state_var[s]
            for j, lag in enumerate(self.lag_var[s], start=1):
                var[(s, -j)] = lag
        values: dict[ir.Atom, str] = {
            reversible.after_atom(slot): name for slot, name in var.items()
        }
        values[ir.InputValue()] = self.input_var
        ops: list[plan.Op] = []
        if inverse.solves:
            ops.extend(self.solve_inverse(inverse.solves, values))
        before: dict[str, str] = {}
        solved = {s.equation: values[s.unknown] for s in inverse.solves}
        self.inverse_forms = {}
        # The slots without a block call first: a block argument equal to one of them is
        # then that variable, the very tensor backward's recompute differentiates at
        # (`plan.BlockReuse`), not a second tensor of the same value.
        order = sorted(
            inverse.before,
            key=lambda item: any(isinstance(a, ir.BlockOut) for a in item[1].atoms()),
        )
        for slot, form in order:
            if form in solved:  # the slot is a solve's unknown (Nesterov's y)
                before[var[slot]] = solved[form]
                continue
            single = form.terms[0] if len(form.terms) == 1 else None
            if single is not None and single[1] == 1 and single[0] in values:
                before[var[slot]] = values[single[0]]  # a lag: the slot one layer on
                continue
            for atom in form.atoms():
                ops.extend(self.materialize(atom, values))
            target = self.ns.create(f"{var[slot]}_before")
            terms = [(values[a], self.coef(c)) for a, c in form.terms]
            ops.extend(self.combine(target, terms, self.input_var))
            before[var[slot]] = target
            self.inverse_forms[form] = target
        self.inverse_forms = None
        result = tuple(before.get(name, name) for name in slots)
        body = (*self.prologue, plan.Unpack(slots, "slots"), *self.layer_setup, *ops)
        return plan.remove_dead(body, set(result)), result

    def solve_inverse(self, solves, values: dict) -> list[plan.Op]:
        """The block arguments known only through an equation (Nesterov's
        y = x+ + t*T(y)): `v = _solve_inverse(self, map, start)`, the map v -> start +
        c*T(v); the exact block calls it reads are computed once, before it."""
        ops: list[plan.Op] = []
        for shown in reversible.solve_summaries(self.net, solves):
            arg, equation = shown["argument"], shown["iteration"].split(" <- ", 1)[1]
            ops.append(
                plan.Comment(
                    f"{arg} = {equation}: fixed-point iteration from {shown['start']}"
                    f" (converges when {shown['condition']})"
                )
            )
        unknowns = {s.unknown for s in solves}
        for solve in solves:
            for atom in solve.equation.atoms():
                if not (unknowns & set(ir.LinearForm.of(atom).walk())):
                    ops.extend(self.materialize(atom, values))
        starts = [self.operand(s.known, values, ops, f"{s.call.block}_start") for s in solves]
        params = [self.ns.create("v") for _ in solves]
        inner = dict(values)
        inner.update({s.unknown: p for s, p in zip(solves, params)})
        body: list[plan.Op] = []
        results = []
        for solve, start, param in zip(solves, starts, params):
            terms = [(start, self.coef(ONE))]
            for atom, coef in solve.equation.terms:
                if atom in solve.known.as_dict():
                    continue
                body.extend(self.materialize(atom, inner))
                terms.append((inner[atom], self.coef(coef)))
            out = self.ns.create(f"{param}_next")
            body.extend(self.combine(out, terms, start))
            results.append(out)
        fn = self.ns.create(f"{solves[0].unknown.name}_map" if len(solves) == 1 else "args_map")
        targets = tuple(self.ns.create(f"{s.unknown.name}_solved") for s in solves)
        ops.append(
            plan.SolveInverse(
                targets, fn, tuple(params), tuple(body), tuple(results), tuple(starts)
            )
        )
        values.update({s.unknown: t for s, t in zip(solves, targets)})
        return ops
