"""The atoms of a linear form as ops: block calls, elementwise maps and sums over
history (running totals, sliding windows), each computed once per layer, and the operand
holding a whole form (an alias when it is one atom with coefficient 1)."""

from __future__ import annotations

from .. import ir
from ..kinds.blocks import BLOCK_KINDS, ELEMENTWISE_MAPS
from . import plan
from .lower_terms import CoefKind, Terms


class Forms(Terms):
    """`values` maps each atom already computed to its variable; `materialize` adds one."""

    def __init__(self, net: ir.Network):
        super().__init__(net)
        # Each sum over history: its running total, and the window of a sliding one (both
        # carried by the layer loop, created with the forward's init).
        self.accumulators: dict[ir.HistorySum, str] = {}
        self.windows: dict[ir.HistorySum, str] = {}
        # With `checkpoint N` a sliding window is tensors the layer hands on (`_layer`'s
        # slots: no list): its last m + 1 terms, the newest first.
        self.window_slots: dict[ir.HistorySum, tuple[str, ...]] = {}
        self.reads_k = False  # a sum gains its first term at a layer after the first
        # In `_inverse_layer` only (every form there reads the slots after the layer, which
        # do not change): the variable already holding a linear form, so that a block
        # argument equal to a rebuilt slot (a momentum ResNet's x = x+ - v+) is that slot.
        self.inverse_forms: dict[ir.LinearForm, str] | None = None

    def materialize(self, atom: ir.Atom, values: dict, name: str | None = None) -> list[plan.Op]:
        if atom in values:
            return []
        ops: list[plan.Op] = []
        if isinstance(atom, ir.BlockOut):
            arg = self.operand(atom.arg, values, ops, f"{atom.block}_in")
            short = arg.isidentifier() and len(arg) < 12
            call = f"{atom.block}_T" if atom.adjoint else atom.block
            var = name or self.ns.create(f"{call}_{arg}" if short else f"{call}_out")
            adjoint = BLOCK_KINDS[self.net.block(atom.block).kind].adjoint if atom.adjoint else None
            ops.append(plan.BlockCall(var, self.block_var[atom.block], arg, adjoint=adjoint))
            self.block_outputs.add(var)
            if self.net.block(atom.block).kind == "operator":
                self.matrix_products.add(var)
        elif isinstance(atom, ir.MapOut):
            arg = self.operand(atom.arg, values, ops, f"{atom.fn}_in")
            var = name or self.ns.create(f"{atom.fn}_out")
            spec = ELEMENTWISE_MAPS[atom.fn]
            coefs = [(key, self.coef(v)) for key, v in zip(spec.scalar_args, atom.scalars)]
            tensors = frozenset(key for key, c in coefs if c.kind is CoefKind.TENSOR)
            template, imports, kernels = spec.emit_for(tensors)
            scalars = tuple((key, self.scalar(c)) for key, c in coefs)
            ops.append(plan.MapCall(var, template, arg, scalars, imports, kernels))
        elif isinstance(atom, ir.DataScaled):
            arg = self.operand(atom.arg, values, ops, "scaled_in")
            names = {s: self.reduction(r, values, ops) for s, r in atom.symbols().items()}
            short = arg.isidentifier() and len(arg) < 12 and not arg.startswith("scaled")
            var = name or self.ns.create(f"scaled_{arg}" if short else "scaled")
            # The step is computed in float32 at least (the reductions are); the term keeps
            # the dtype of what it scales, as a learnable param's value does.
            step = self.ns.create("step")
            ops.append(plan.ScalarDef(step, self.data_factor(atom.factor, names)))
            ops.append(plan.Scale(var, arg, plan.Scalar(f"{step}.to({arg}.dtype)", (step, arg))))
        elif isinstance(atom, ir.HistorySum):
            var = self.accumulators[atom]
            accumulate: list[plan.Op] = []
            for inner, coef in atom.body.terms:
                source = (
                    values[ir.Local(inner.name)]
                    if not inner.is_state
                    else values[ir.StateAt(inner.name, 0)]
                )
                accumulate.append(self.add(var, var, source, self.coef(coef.subs(atom.var, ir.K))))
            if atom.window is not None:
                ops.extend(self.window_sum(atom, var, values))
            # sum(i = lo..k, ...) gains its first term at layer lo.
            elif atom.lo == 0:
                ops.extend(accumulate)
            else:
                self.reads_k = True
                ops.extend([plan.FromLayer(atom.lo, tuple(accumulate))])
        else:  # pragma: no cover - resolve only produces the atoms above
            raise AssertionError(f"cannot materialize {atom}")
        values[atom] = var
        return ops

    def reduction(self, reduction: ir.Reduction, values: dict, ops: list[plan.Op]) -> str:
        """The variable of a per-sample `dot` or `norm`, computed once per layer."""
        if reduction not in values:
            kind = reduction.kind.value
            args = tuple(self.operand(a, values, ops, f"{kind}_in") for a in reduction.args)
            short = all(a.isidentifier() and len(a) < 12 for a in args)
            var = self.ns.create("_".join((kind, *args)) if short else kind)
            ops.append(plan.Reduce(var, kind, args))
            values[reduction] = var
        return values[reduction]

    def window_sum(self, total: ir.HistorySum, var: str, values: dict) -> list[plan.Op]:
        """sum(i = k-m..k, ...): a running sum, less the term that leaves the window."""
        terms = []
        for inner, coef in total.body.terms:
            atom = ir.Local(inner.name) if not inner.is_state else ir.StateAt(inner.name, 0)
            terms.append((values[atom], self.coef(coef.subs(total.var, ir.K))))
        ops: list[plan.Op] = []
        if len(terms) == 1 and terms[0][1].value == 1:
            term = terms[0][0]
        else:
            term = self.ns.create("term")
            ops.extend(self.combine(term, terms, self.input_var))
        ops.append(plan.AddAlpha(var, var, term, None))
        if total in self.window_slots:
            # The terms start as zeros: subtracting one changes nothing (x - 0 is x).
            kept = self.window_slots[total]
            ops.append(plan.AddAlpha(var, var, kept[-1], None, subtract=True))
            ops.append(plan.Rotate(tuple(reversed(kept)), (*reversed(kept[:-1]), term)))
            return ops
        ops.append(plan.SlideWindow(self.windows[total], term, var, total.window + 1))
        return ops

    def operand(self, form: ir.LinearForm, values: dict, ops: list[plan.Op], name: str) -> str:
        """The variable holding a tensor linear form (an alias when it is one atom)."""
        if self.inverse_forms is not None and form in self.inverse_forms:
            return self.inverse_forms[form]
        for atom in form.atoms():
            ops.extend(self.materialize(atom, values))
        if len(form.terms) == 1 and form.terms[0][1] == 1:
            return values[form.terms[0][0]]
        if form in values:  # `x+ - x` read twice in a layer (a dot and a scaled term)
            return values[form]
        # x_next_minus_x for what a reduction or a per-sample step reads (5.6).
        readable = _difference_name(form, values) if name in DATA_OPERANDS else None
        var = self.ns.create(readable or name)
        terms = [(values[a], self.coef(c)) for a, c in form.terms]
        ops.extend(self.combine(var, terms, self.input_var))
        values[form] = var
        return var


DATA_OPERANDS = ("scaled_in", "dot_in", "norm_in")


def _difference_name(form: ir.LinearForm, values: dict) -> str | None:
    """`x_next_minus_x` for the form x+ - x of two short names; else None."""
    if len(form.terms) != 2:
        return None
    (a, ca), (b, cb) = form.terms
    if {ca, cb} != {1, -1}:
        return None
    plus, minus = (values[a], values[b]) if ca == 1 else (values[b], values[a])
    if not (plus.isidentifier() and minus.isidentifier() and len(plus) + len(minus) < 16):
        return None
    return f"{plus}_minus_{minus}"
