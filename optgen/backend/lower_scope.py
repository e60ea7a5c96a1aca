"""The names of a network's forward, and the Python text of a folded value.

`Scope` gives every value of the rule its variable once, before any op is lowered: the
states, blocks, locals and learnable params under their own names, the input (`x`, or
`input_` where the rule names something `x`), the lags (`x_prev`, `x_prev2`), the
initial values read as `x[0]` (`x0`), the history of locals (`g_prev`) and the fixed
params' named constants. Temporaries come later from the same namespace.
"""

from __future__ import annotations

import sympy

from .. import ir, naming, schedules
from ..naming import Namespace
from ..present import float_literal


def pyexpr(expr: sympy.Expr, names: dict[sympy.Symbol, str]) -> str:
    """Python source for a sympy expression, symbols renamed (rationals as true divisions)."""
    if not expr.free_symbols:
        return float_literal(expr)
    return schedules.python_code(ir.renamed(expr, {s: sympy.Symbol(n) for s, n in names.items()}))


def torch_expr(expr: sympy.Expr, names: dict[sympy.Symbol, str], tensors: set[str]) -> str:
    """Python source for a sympy expression some of whose symbols are tensors (`tensors`,
    by their new names): functions of those are torch's (`torch.sqrt`, `torch.clamp_min`)."""
    renamed = ir.renamed(expr, {s: sympy.Symbol(n) for s, n in names.items()})
    return schedules.tensor_code(renamed, tensors)


def user_text(expr: sympy.Expr) -> str:
    """A coefficient in the rule's names (for comments): beta, -k/(k + 3)."""
    names = {s: sympy.Symbol(ir.symbol_param(s) or s.name) for s in expr.free_symbols}
    return schedules.user_str(ir.renamed(expr, names), order="rev-lex").replace("**", "^")


class Scope:
    """The variables of one network's forward (and of its `_layer` / `_inverse_layer`)."""

    def __init__(self, net: ir.Network):
        self.net = net
        self.ns = Namespace()
        # Attributes the module already has (nn.Module's and the generated class's, read
        # from torch and the templates): a schedule named `params` must not shadow a method.
        self.attrs = Namespace(reserved=naming.reserved(naming.Reserved.MODULE_ATTRIBUTE))
        self.fixed = {p.symbol: p.value for p in net.params if not p.learnable}
        self.learnable = {p.symbol: p for p in net.params if p.learnable}
        # Fixed params with one value for every layer: named constants of the forward.
        self.constants = {p.symbol: p for p in net.params if not p.learnable and not p.depends_on_k}
        # ------------------------------------------------------------ names, in this order
        self.state_var = {s: self.ns.create(s) for s in net.states}
        self.block_var = {b.name: self.ns.create(b.name) for b in net.blocks}
        self.local_var = {
            st.target: self.ns.create(st.target) for st in net.statements if not st.is_state
        }
        self.param_var = {p.name: self.ns.create(p.name) for p in net.params if p.learnable}
        self.alias_input = self.ns.is_used("x")
        self.input_var = self.ns.create("input_" if self.alias_input else "x")
        # The slots the layer loop carries (`ir.carried_slots`): the lags and x[0]s get
        # their variables here, the sums' running totals with the forward's init.
        self.carried = ir.carried_slots(net)
        self.max_lag = ir.read_lags(net)
        self.lag_var: dict[str, list[str]] = {s: [] for s in net.states}
        self.initial_var: dict[str, str] = {}
        for slot in self.carried:
            if isinstance(slot.atom, ir.StateAt) and slot.atom.lag < 0:
                self.lag_var[slot.atom.name].append(self.ns.create(slot.name))
            elif isinstance(slot.atom, ir.Initial):
                self.initial_var[slot.atom.name] = self.ns.create(slot.name)
        # The history of locals (`g-`, `g[k-2]`): g_prev, g_prev2, ... rotated like a state's.
        local_lag: dict[str, int] = {}
        for st in net.statements:
            for atom in st.form.walk():
                if isinstance(atom, ir.Local) and atom.lag < 0:
                    local_lag[atom.name] = max(local_lag.get(atom.name, 0), -atom.lag)
        self.local_lag_var = {
            name: [self.ns.create(ir.lag_name(name, j)) for j in range(1, local_lag[name] + 1)]
            for name in self.local_var
            if name in local_lag
        }
        self.constant_var = {s: self.ns.create(p.name) for s, p in self.constants.items()}
        # Where each state's next value goes (`next_target`), as the layer body is lowered.
        self.next_var: dict[str, str] = {}

    def next_target(self, state: str, index: int) -> str:
        """Write x+ straight into x when nothing reads x_k after this statement."""
        later_reads = any(_reads_current(st.form, state) for st in self.net.statements[index + 1 :])
        if self.max_lag[state] == 0 and not later_reads:
            var = self.state_var[state]
        else:
            var = self.ns.create(f"{state}_next")
        self.next_var[state] = var
        return var


def _reads_current(form: ir.LinearForm, state: str) -> bool:
    """Whether `form` reads x_k, the value `state` has before this layer's update: `x`
    itself, or the newest term `x[i]` of a sum over its history (at i = k)."""
    current = ir.StateAt(state, 0)
    for atom in form.walk():
        if atom == current:
            return True
        if isinstance(atom, ir.History) and atom.is_state and atom.name == state:
            if atom.offset == 0:
                return True
    return False
