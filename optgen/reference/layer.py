"""One layer of a rule, evaluated statement by statement from the IR's definition.

A `Layer` holds what the statements of layer k may read (language.md section 5):

    x, x[k]           the state's iterate x_k            StateAt(x, 0)
    x-, x[k-j]        x_{k-j}, equal to x_0 before it exists  StateAt(x, -j)
    x+, x[k+1]        the value a statement of this layer gave x  StateAt(x, 1)
    x[0]              the state's initial value          Initial(x)
    g, g[k-j]         a local of this layer, or of an earlier one (its layer-0 value
                      before that layer exists)          Local(g, -j)
    input             the module's input                 InputValue()
    T(e)              this layer's instance of block T applied to e
    relu(e), ...      the fixed maps of `maps`
    sum(i = lo..k, b) b at every i from lo (or k - m, at least 0) to k; v[i] is the state's
                      iterate x_i (x_k at i = k, never x_{k+1}) or the local's value at
                      layer i; zero at layers k < lo
    c(dot(a, b))*e    the factor from per-sample reductions of a and b, times e

Histories are indexed by the module's layer number (0 for its first layer); `k` itself,
which coefficients and schedules read, is that number plus the module's `start`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import ir
from .maps import MAPS
from .scalars import Coefficients, Unsupported

BlockLookup = Callable[[str], torch.nn.Module]


class Layer:
    """The values one layer reads, and the statements' results as they come."""

    def __init__(
        self,
        *,
        number: int,
        local_number: int,
        coefficients: Coefficients,
        states: dict[str, list[torch.Tensor]],
        initial: dict[str, torch.Tensor],
        local_history: dict[str, list[torch.Tensor]],
        block: BlockLookup,
        input: torch.Tensor,
        adjoint=None,
    ):
        self.number = number  # this layer's index in the states' histories
        # ... and in the locals' (a model's stage carries its states, not its locals).
        self.local_number = local_number
        self.coefficients = coefficients
        self.states = states  # state -> [x_0, ..., x_k] (index: layer number)
        self.initial = initial
        self.local_history = local_history  # local -> its values at earlier layers
        self.block = block
        self.input = input
        self.adjoint = adjoint  # (block name, y) -> K^T(y)
        self.new: dict[str, torch.Tensor] = {}  # state -> its next value, once assigned
        self.locals: dict[str, torch.Tensor] = {}  # this layer's locals
        # Block outputs of this layer by call (`T(x)` twice is one call, language.md 5.2);
        # calls that read an unknown of a solve are never kept (their argument changes).
        self._calls: dict[ir.BlockOut, torch.Tensor] = {}
        self.unknowns: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ forms
    def form(self, form: ir.LinearForm, index=None) -> torch.Tensor:
        """sum_j c_j * a_j; `index = (var, i)` inside a sum (atoms History, coefficients in i)."""
        total = None
        for atom, coef in form.terms:
            term = self.coefficients.value(coef, index) * self.atom(atom, index)
            total = term if total is None else total + term
        return torch.zeros_like(self.input) if total is None else total

    def atom(self, atom: ir.Atom, index=None) -> torch.Tensor:
        if isinstance(atom, ir.StateAt):
            return self._state(atom)
        if isinstance(atom, ir.Initial):
            return self.initial[atom.name]
        if isinstance(atom, ir.Local):
            return self._local(atom.name, self.local_number + atom.lag)
        if isinstance(atom, ir.InputValue):
            return self.input
        if isinstance(atom, ir.History):
            return self._history(atom, index)
        if isinstance(atom, ir.BlockOut):
            return self._block_call(atom)
        if isinstance(atom, ir.MapOut):
            return self._map(atom)
        if isinstance(atom, ir.HistorySum):
            return self._sum(atom)
        if isinstance(atom, ir.DataScaled):
            return self._data_scaled(atom, index)
        raise Unsupported(f"atom {atom!r}")

    # ------------------------------------------------------------------ atoms
    def _state(self, atom: ir.StateAt) -> torch.Tensor:
        if atom.lag == 1:
            if atom.name not in self.new:
                raise Unsupported(f"{atom.show()} read before a statement defines it")
            return self.new[atom.name]
        if atom.lag > 1:
            raise Unsupported(f"{atom.show()}: a state read ahead")
        # Before an earlier iterate exists it equals x_0 (language.md 6.1).
        return self.states[atom.name][max(0, self.number + atom.lag)]

    def _local(self, name: str, layer: int) -> torch.Tensor:
        """The local at `layer`; at layers before 0, its value at layer 0 (language.md 5.2)."""
        if layer == self.local_number:
            if name not in self.locals:
                raise Unsupported(f"local {name} read before its statement")
            return self.locals[name]
        if layer > self.local_number:
            raise Unsupported(f"local {name} read ahead")
        history = self.local_history[name]
        if layer < 0:
            return history[0] if history else self._local(name, self.local_number)
        return history[layer]

    def _history(self, atom: ir.History, index) -> torch.Tensor:
        if index is None:
            raise Unsupported(f"{atom.show()} outside a sum")
        i = index[1] + atom.offset
        if not atom.is_state:
            return self._local(atom.name, i)
        if i == self.number + 1:
            return self._state(ir.StateAt(atom.name, 1))
        return self.states[atom.name][max(0, i)]

    def _block_call(self, atom: ir.BlockOut) -> torch.Tensor:
        keep = not _reads_next(atom, self.unknowns)
        if keep and atom in self._calls:
            return self._calls[atom]
        if atom.adjoint:
            out = self.adjoint(atom.block, self.form(atom.arg))
        else:
            out = self.block(atom.block)(self.form(atom.arg))
        if keep:
            self._calls[atom] = out
        return out

    def _map(self, atom: ir.MapOut) -> torch.Tensor:
        if atom.fn not in MAPS:
            raise Unsupported(f"map {atom.fn}")
        scalars = [self.coefficients.value(s) for s in atom.scalars]
        return MAPS[atom.fn](self.form(atom.arg), *scalars)

    def _data_scaled(self, atom: ir.DataScaled, index) -> torch.Tensor:
        reductions = {
            symbol: _reduce(r.kind, [self.form(a, index) for a in r.args])
            for symbol, r in atom.symbols().items()
        }
        return self.coefficients.per_sample(atom.factor, reductions) * self.form(atom.arg, index)

    def _sum(self, atom: ir.HistorySum) -> torch.Tensor:
        # The reference refuses sums where a layer's number is not k (a first layer at
        # k > 0, carried states: network.py), so the summation index i is a layer number.
        k = self.number
        total = torch.zeros_like(self.input)
        for i in range(atom.first_term(k), k + 1):  # empty (zero) at layers k < lo
            total = total + self.form(atom.body, (atom.var, i))
        return total


def _reduce(kind: ir.ReductionKind, args: list[torch.Tensor]) -> torch.Tensor:
    """dot(a, b) or norm(a) of each sample (every dimension but the first), [B, 1, ...]."""
    first = args[0]
    rows = [a.reshape(first.shape[0], -1) for a in args]
    if kind is ir.ReductionKind.DOT:
        values = torch.linalg.vecdot(rows[0], rows[1])
    else:
        values = torch.linalg.vector_norm(rows[0], dim=1)
    return values.reshape((first.shape[0],) + (1,) * (first.dim() - 1))


def _reads_next(atom: ir.Atom, names: frozenset[str]) -> bool:
    """Whether `atom` reads the next iterate of one of `names` (an unknown of a solve)."""
    if not names:
        return False
    for inner in ir.LinearForm.of(atom).walk():
        if isinstance(inner, ir.StateAt) and inner.lag == 1 and inner.name in names:
            return True
    return False
