"""IR to EmitPlan: the generated forward as typed ops (`plan.py`), never as source text.

Every assignment of the update is a linear combination of tensors. Here each one is
lowered to the fewest elementwise kernels:

* a single term with coefficient 1 is an alias (no kernel);
* a term with coefficient 1 starts the sum, every further term costs one fused
  kernel: `torch.add(a, b, alpha=c)` (fixed c) or `torch.addcmul(a, c, b)` (c a
  tensor, e.g. a learnable param);
* two coefficients that sum to 1 are one `torch.lerp(a, b, w)`;
* otherwise the first term is scaled (`torch.mul`) and the rest are added in place
  into that fresh temporary, which autograd never saved.

Coefficients are folded, but keep the rule's names: a fixed param becomes a named
constant of the forward (`beta = 0.9`, then `torch.lerp(x_next, x, -beta)`), a
`k`-dependent one a per-layer table of floats named after what it holds
(`self.neg_beta[k]`), a learnable one is computed once per call from its raw parameter
(softplus / scaled sigmoid reparametrization).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from enum import Enum

import sympy

from .. import ir, naming, schedules
from ..analysis import reversible
from ..kinds import blocks
from ..kinds.blocks import BLOCK_KINDS, ELEMENTWISE_MAPS, Layout
from ..naming import Namespace, snake_case
from . import plan

ONE = ir.ONE


class CoefKind(Enum):
    NUMBER = "number"  # a fixed number (possibly written with fixed params' names)
    SCHEDULE = "schedule"  # fixed, depends on k: a per-layer table
    TENSOR = "tensor"  # holds learnable params: a 0-dim tensor computed in forward


@dataclass(frozen=True)
class Coef:
    """A folded coefficient.

    `value` has the fixed params substituted (decisions are made on it: is it 1, do two
    coefficients sum to 1); `expr` keeps them as symbols, so that the code can print the
    coefficient in the rule's names.
    """

    value: sympy.Expr
    expr: sympy.Expr
    kind: CoefKind


@dataclass
class ParamPlan:
    name: str
    attr: str  # the nn.Parameter attribute
    var: str  # the forward-local variable holding the constrained value
    init_code: str  # python expression building the raw initial tensor in __init__
    doc: str
    needs_math: bool = False
    spec: str = ""  # the `_Learnable(...)` of params() and set_params()


@dataclass
class BlockPlan:
    name: str  # key in module.blocks
    var: str
    ctor: str  # python expression constructing one instance (uses `dim`)
    shared: bool


@dataclass(frozen=True)
class Schedule:
    """A fixed per-layer coefficient: `self.<attr> = [float(<expr in k>) for k in ...]`."""

    attr: str
    expr: str
    shown: str


@dataclass(frozen=True)
class RecurrencePlan:
    """A recursive schedule: optgen's values for the declared depth, continued by the
    module-level `function` in float64 for a deeper module (`name = function(count)`)."""

    name: str
    function: str  # the module-level function computing the values
    table: str  # the module-level tuple of optgen's values
    values: tuple[float, ...]
    previous: str  # the name of the previous value inside `function`
    step: str  # Python expression of the next value in `previous` and k
    shown: str  # the two equations as the rule writes them
    count: str  # how many values __init__ needs: "start + depth + 1"


@dataclass
class EmitPlan:
    class_name: str
    depth: int
    layout: Layout
    params: list[ParamPlan]
    blocks: list[BlockPlan]
    schedules: list[Schedule]
    forward: tuple[plan.Op, ...]  # the statements of forward, before its return
    output_var: str
    kinds: tuple[str, ...]  # the block kinds used, sorted
    dim_checks: tuple[blocks.DimCheck, ...] = ()
    kernels_per_layer: int = 0
    # For a model's stages: the loop-carried names, and the ops of `init_slots(x)` and
    # `forward_slots(slots)` (empty for an equilibrium, which carries its output only).
    slots: tuple[str, ...] = ()
    init_slots: tuple[plan.Op, ...] = ()
    forward_slots: tuple[plan.Op, ...] = ()
    kind: str = "explicit"  # "explicit" | "implicit" | "equilibrium"
    solver: dict = field(default_factory=dict)
    backward: dict = field(default_factory=dict)
    # The layer index k is read (schedules, k-dependent start values, sums from a layer on):
    # the class takes `start`, the k of its first layer, to continue an earlier recurrence.
    uses_k: bool = False
    param_names: tuple[str, ...] = ()  # every param, in declaration order (params())
    fixed_params: list[tuple[str, str]] = field(default_factory=list)  # (name, expression)
    recurrences: tuple[RecurrencePlan, ...] = ()
    # Memory in backward (language.md section 15): who runs the layer loop, the declared
    # `checkpoint N`, the ops of `_layer(k, slots)` and of `_inverse_layer(k, slots)`
    # (backward reversible), and the names the latter returns.
    runtime: plan.LayerRuntime | None = None
    checkpoint: int | None = None
    layer: tuple[plan.Op, ...] = ()
    inverse: tuple[plan.Op, ...] = ()
    inverse_result: tuple[str, ...] = ()

    @property
    def block_kinds(self) -> list[blocks.BlockKind]:
        return [BLOCK_KINDS[k] for k in self.kinds]

    @property
    def sources(self) -> list[str]:
        """The block sources the file copies: each kind's helpers first, each once."""
        names = [h for kind in self.block_kinds for h in kind.helpers]
        texts = [blocks.helper_source(name) for name in dict.fromkeys(names)]
        return texts + [kind.source_text() for kind in self.block_kinds]

    @property
    def imports(self) -> frozenset[plan.Import]:
        found = set(plan.imports((*self.forward, *self.layer, *self.inverse)))
        if any(p.needs_math for p in self.params):
            found.add(plan.Import.MATH)
        texts = [s.expr for s in self.schedules] + [code for _, code in self.fixed_params]
        texts += [r.step for r in self.recurrences]
        texts += [text for op in plan.walk(self.forward) for text in _scalar_texts(op)]
        if any("math." in text for text in texts):
            found.add(plan.Import.MATH)
        for kind in self.block_kinds:
            found |= kind.imports
        if self.kind != "explicit":
            found.add(plan.Import.WARNINGS)  # the solver runtime warns on a missed tolerance
        if self.runtime is plan.LayerRuntime.REVERSIBLE:
            found.add(plan.Import.WARNINGS)  # a depth float32 cannot carry back
        return frozenset(found)


def _scalar_texts(op: plan.Op) -> list[str]:
    """The coefficients an op prints (a fixed `sqrt(t)` is written math.sqrt(t))."""
    texts = []
    for f in dataclasses.fields(op):
        value = getattr(op, f.name)
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, tuple):  # MapCall's (name, Scalar) pairs
                item = item[-1] if item else None
            if isinstance(item, plan.Scalar):
                texts.append(item.text)
    return texts


def _float(value) -> str:
    return repr(float(value))


def _inverse_softplus(value: float) -> float:
    """log(expm1(v)); past 700, expm1 overflows and the form without it is exact."""
    return math.log(math.expm1(value)) if value < 700 else value + math.log(-math.expm1(-value))


def _pyexpr(expr: sympy.Expr, names: dict[sympy.Symbol, str]) -> str:
    """Python source for a sympy expression, symbols renamed (rationals as true divisions)."""
    if not expr.free_symbols:
        return _float(expr)
    return schedules.python_code(ir.renamed(expr, {s: sympy.Symbol(n) for s, n in names.items()}))


def _user_text(expr: sympy.Expr) -> str:
    """A coefficient in the rule's names (for comments): beta, -k/(k + 3)."""
    names = {s: sympy.Symbol(ir.symbol_param(s) or s.name) for s in expr.free_symbols}
    return sympy.sstr(ir.renamed(expr, names), order="rev-lex")


def coef_name(expr: sympy.Expr) -> str:
    """A name for a coefficient from the params it holds: beta, neg_beta, rho_t; else coef."""
    if expr.is_Symbol:
        return ir.symbol_param(expr) or expr.name
    if expr.is_Mul:
        factor, rest = expr.as_coeff_Mul()
        if factor == -1:
            inner = coef_name(rest)
            return "coef" if inner == "coef" else f"neg_{inner}"
        if factor == 1 and all(a.is_Symbol for a in expr.args):
            return "_".join(coef_name(a) for a in sorted(expr.args, key=str))
    return "coef"


class Lowerer:
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
        self.prologue: list[plan.Op] = []
        self.layer_setup: list[plan.Op] = []
        self.schedules: list[Schedule] = []
        self._schedule_of: dict[sympy.Expr, str] = {}
        self._call_tensor_of: dict[sympy.Expr, str] = {}
        self._layer_tensor_of: dict[sympy.Expr, str] = {}
        self.reads_k = False  # a sum gains its first term at a layer after the first
        self.block_outputs: set[str] = set()  # names bound to a block's output
        # In `_inverse_layer` only (every form there reads the slots after the layer, which
        # do not change): the variable already holding a linear form, so that a block
        # argument equal to a rebuilt slot (a momentum ResNet's x = x+ - v+) is that slot.
        self.inverse_forms: dict[ir.LinearForm, str] | None = None

    # ------------------------------------------------------------ names
    def allocate(self) -> None:
        net = self.net
        self.state_var = {s: self.ns.create(s) for s in net.states}
        self.block_var = {b.name: self.ns.create(b.name) for b in net.blocks}
        self.local_var = {
            st.target: self.ns.create(st.target) for st in net.statements if not st.is_state
        }
        self.param_var = {p.name: self.ns.create(p.name) for p in net.params if p.learnable}
        self.alias_input = self.ns.is_used("x")
        self.input_var = self.ns.create("input_" if self.alias_input else "x")
        self.max_lag = {s: 0 for s in net.states}
        self.needs_initial: set[str] = set()
        for st in net.statements:
            for atom in st.form.walk():
                if isinstance(atom, ir.StateAt) and atom.lag < 0:
                    self.max_lag[atom.name] = max(self.max_lag[atom.name], -atom.lag)
                if isinstance(atom, ir.Initial):
                    self.needs_initial.add(atom.name)
        self.lag_var = {
            s: [
                self.ns.create(f"{s}_prev" if j == 1 else f"{s}_prev{j}")
                for j in range(1, self.max_lag[s] + 1)
            ]
            for s in net.states
        }
        self.initial_var = {s: self.ns.create(f"{s}0") for s in sorted(self.needs_initial)}
        # The history of locals (`g-`, `g[k-2]`): g_prev, g_prev2, ... rotated like a state's.
        local_lag: dict[str, int] = {}
        for st in net.statements:
            for atom in st.form.walk():
                if isinstance(atom, ir.Local) and atom.lag < 0:
                    local_lag[atom.name] = max(local_lag.get(atom.name, 0), -atom.lag)
        self.local_lag_var = {
            name: [
                self.ns.create(f"{name}_prev" if j == 1 else f"{name}_prev{j}")
                for j in range(1, local_lag[name] + 1)
            ]
            for name in self.local_var
            if name in local_lag
        }
        self.constant_var = {s: self.ns.create(p.name) for s, p in self.constants.items()}

    # ------------------------------------------------------------ params
    def param_plans(self) -> list[ParamPlan]:
        plans = []
        for p in self.net.params:
            if not p.learnable:
                continue
            var = self.param_var[p.name]
            constrained = p.bound is not None
            attr = self.attrs.create(f"{p.name}_raw" if constrained else p.name)
            raw, needs_math = self._raw_code(p)
            # The start in float64 (exact after .double()); a scalar with shape [1], not
            # 0-dim: FSDP2's fully_shard shards 1-D parameters only.
            # A per-channel param starts with the same value in each of the `dim` channels.
            start = f"[{raw}] * dim" if p.per_channel else f"[{raw}]"
            if p.per_layer:
                each = start if p.per_channel else raw
                if p.depends_on_k:
                    layers = "range(start, start + depth)"
                    init = f"_start(self, {attr!r}, [{each} for k in {layers}])"
                else:  # one start value, computed here, for every layer
                    init = f"_start(self, {attr!r}, [{each} for _ in range(depth)])"
            else:
                init = f"_start(self, {attr!r}, {start})"
            how, lo, hi = self._reparametrization(p)
            spec = self._learnable_spec(p, attr, how, lo, hi)
            plans.append(ParamPlan(p.name, attr, var, init, self._param_doc(p), needs_math, spec))
            spatial = self._spatial_axes() if p.per_channel else 0
            self.prologue.append(plan.ParamValue(var, attr, how, lo, hi, spatial))
        return plans

    def _spatial_axes(self) -> int:
        """The axes after the channel axis of the layout, which a per-channel value
        broadcasts along: H and W of [N, dim, H, W]; none where channels come last."""
        return 2 if Layout(self.net.layout) is Layout.IMAGE else 0

    @staticmethod
    def _learnable_spec(p: ir.Param, attr: str, how, lo: float, hi: float) -> str:
        """The `_Learnable(...)` describing the param to `params()` and `set_params()`."""
        kind = {
            plan.Reparametrization.IDENTITY: "identity",
            plan.Reparametrization.SOFTPLUS: "softplus",
        }.get(how, "sigmoid")
        upper = None if kind != "sigmoid" else hi
        declared = p.bound.show(p.name) if p.bound else "unconstrained"
        per_channel = ", per_channel=True" if p.per_channel else ""
        return (
            f"_Learnable({attr!r}, {kind!r}, {lo!r}, {upper!r}, {p.per_layer!r}, {declared!r}"
            f"{per_channel})"
        )

    def fixed_param_values(self) -> list[tuple[str, str]]:
        """(name, Python expression) of each fixed param: a float, or a list over the layers."""
        found = []
        for p in self.net.params:
            if p.learnable:
                continue
            value = sympy.sympify(p.value)
            if value.free_symbols - {ir.K}:
                continue  # given by other params: params() lists the ones the rule names
            if p.depends_on_k:
                found.append(
                    (
                        p.name,
                        f"[float({_pyexpr(value, {ir.K: 'k'})}) for k in range(start, start + depth)]",
                    )
                )
            else:
                found.append((p.name, _float(value)))
        return found

    def _raw_code(self, p: ir.Param) -> tuple[str, bool]:
        """The raw parameter's start value (the inverse of its reparametrization)."""
        b = p.bound
        if p.per_layer and p.depends_on_k:
            v = f"float({_pyexpr(p.value, {ir.K: 'k'})})"
            if b is None:
                return v, False
            if b.hi is None:  # positive: inverse softplus, log(expm1(v)) without overflow
                return f"{v} + math.log(-math.expm1(-{v}))", True
            lo, hi = float(b.lo), float(b.hi)
            return f"math.log(({v} - {lo!r}) / ({hi!r} - {v}))", True
        value = float(p.value)
        if b is None:
            return _float(value), False
        if b.hi is None:
            return _float(_inverse_softplus(value)), False
        lo, hi = float(b.lo), float(b.hi)
        return _float(math.log((value - lo) / (hi - value))), False

    @staticmethod
    def _reparametrization(p: ir.Param) -> tuple[plan.Reparametrization, float, float]:
        how = plan.Reparametrization
        b = p.bound
        if b is None:
            return how.IDENTITY, 0.0, 1.0
        if b.hi is None:
            return how.SOFTPLUS, 0.0, 1.0
        lo, hi = float(b.lo), float(b.hi)
        if lo == 0.0 and hi == 1.0:
            return how.SIGMOID, lo, hi
        return how.SCALED_SIGMOID, lo, hi

    def _param_doc(self, p: ir.Param) -> str:
        where = p.bound.show(p.name) if p.bound else "unconstrained"
        how = "softplus" if p.positive else ("scaled sigmoid" if p.bound else "identity")
        per = ", one per layer" if p.per_layer else ""
        per += ", one per channel" if p.per_channel else ""
        return f"{p.name}: learnable{per}, {where} ({how} reparametrization), starts at {p.value}"

    # ------------------------------------------------------------ coefficients
    def coef(self, expr: sympy.Expr) -> Coef:
        expr = sympy.sympify(expr)
        value = ir.simplified(expr.subs(self.fixed)) if expr.free_symbols else expr
        symbols = value.free_symbols
        if not symbols:
            return Coef(value, expr, CoefKind.NUMBER)
        if not any(s in self.learnable for s in symbols):
            return Coef(value, expr, CoefKind.SCHEDULE)
        return Coef(value, expr, CoefKind.TENSOR)

    def _named(self, expr: sympy.Expr) -> bool:
        """Whether `expr` can be printed with the forward's named constants."""
        return bool(expr.free_symbols) and expr.free_symbols <= set(self.constants)

    def scalar(self, c: Coef) -> plan.Scalar:
        """The whole coefficient as an operand (a float, a constant expression, a tensor)."""
        if c.kind is CoefKind.NUMBER:
            return self.number(c.expr, c.value)
        if c.kind is CoefKind.SCHEDULE:
            return plan.Scalar(self.schedule(c))
        var = self.tensor_coef(c)
        return plan.Scalar(var, (var,))

    def number(self, expr: sympy.Expr, value: sympy.Expr) -> plan.Scalar:
        if not self._named(expr):
            return plan.Scalar.number(value)
        names = {s: self.constant_var[s] for s in expr.free_symbols}
        return plan.Scalar(_pyexpr(expr, names), tuple(sorted(names.values())))

    def schedule(self, c: Coef) -> str:
        """A fixed coefficient that depends on k: a per-layer table of floats."""
        if c.value not in self._schedule_of:
            attr = self.attrs.create(coef_name(c.expr))
            shown = _user_text(c.value)
            if c.expr != c.value:
                shown = f"{_user_text(c.expr)} = {shown}"
            self.schedules.append(Schedule(attr, _pyexpr(c.value, {ir.K: "k"}), shown))
            self._schedule_of[c.value] = f"self.{attr}[k]"
        return self._schedule_of[c.value]

    def _tensor_names(self, expr: sympy.Expr) -> dict[sympy.Symbol, str]:
        names = {}
        for s in expr.free_symbols:
            if s == ir.K:
                names[s] = "k"
            elif s in self.learnable:
                p = self.learnable[s]
                names[s] = f"{self.param_var[p.name]}[k]" if p.per_layer else self.param_var[p.name]
            elif s in self.constants:
                names[s] = self.constant_var[s]
        return names

    def tensor_coef(self, c: Coef) -> str:
        """A coefficient with learnable params: computed once per call, or once per layer."""
        expr = (
            c.expr
            if not (c.expr.free_symbols - set(self.constants) - set(self.learnable))
            else None
        )
        printed = expr if expr is not None else c.value
        symbols = printed.free_symbols
        learnable = [self.learnable[s] for s in symbols if s in self.learnable]
        per_layer = ir.K in symbols or any(p.per_layer for p in learnable)
        if printed.is_Symbol and printed in self.learnable and not per_layer:
            return self.param_var[self.learnable[printed].name]
        table, ops = (
            (self._layer_tensor_of, self.layer_setup)
            if per_layer
            else (self._call_tensor_of, self.prologue)
        )
        if c.value not in table:
            names = self._tensor_names(printed)
            var = self.ns.create(coef_name(printed) if expr is not None else "coef")
            uses = tuple(sorted({v.split("[")[0] for v in names.values() if v != "k"}))
            ops.append(plan.ScalarDef(var, plan.Scalar(_pyexpr(printed, names), uses)))
            table[c.value] = var
        return table[c.value]

    def _tensor_parts(self, c: Coef) -> tuple[str, plan.Scalar | None]:
        """c = factor * base with base holding the learnable params, factor fixed."""
        learnable = [s for s in c.expr.free_symbols if s in self.learnable]
        factor, base = c.expr.as_independent(*learnable, as_Add=False)
        if (
            factor == 0
            or ir.K in factor.free_symbols
            or not (factor.is_number or self._named(factor))
        ):
            factor, base = ONE, c.expr
        base_coef = self.coef(base)
        factor_value = ir.simplified(factor.subs(self.fixed))
        if factor_value == 0:  # pragma: no cover - a zero term never reaches lowering
            factor, factor_value, base_coef = ONE, ONE, c
        value = None if factor_value == 1 else self.number(factor, factor_value)
        return self.tensor_coef(base_coef), value

    # ------------------------------------------------------------ combinations
    def combine(self, target: str, terms: list[tuple[str, Coef]], like: str) -> list[plan.Op]:
        """Ops that set `target` to sum(c * v) with the fewest kernels (module docstring)."""
        if not terms:
            return [plan.Zeros(target, like)]
        terms = list(terms)
        shown = self._form_text(target, terms)
        # Decisions on the coefficients as written (the code prints them with the rule's
        # names): heavy ball with t = beta = 0.5 must not become lerp(x, T_x, -t).
        first = next((t for t in terms if t[1].expr == 1), None)
        if first is not None:
            terms.remove(first)
            if not terms:
                return [] if first[0] == target else [plan.Alias(target, first[0])]
            var, c = terms.pop(0)
            start = self.add(target, first[0], var, c)
        else:
            pair = self._lerp_pair(terms)
            if pair is not None:
                (a, _), (b, cb) = pair
                terms.remove(pair[0])
                terms.remove(pair[1])
                start = plan.Lerp(target, a, b, self.scalar(cb), self._cast(a, b))
            else:
                var, c = terms.pop(0)
                start = plan.Scale(target, var, self.scalar(c))
        ops: list[plan.Op] = []
        if terms or not isinstance(start, (plan.AddAlpha, plan.AddCMul)):
            # A fused statement: say what it computes in the code's names.
            ops.append(plan.Comment(shown))
        if any(var == target for var, _ in terms):
            # The first op rebinds `target`; a later term still reads its old value.
            fresh = self.ns.create(f"{target}_new")
            ops.append(start.retargeted(fresh))
            ops += [self.add(fresh, fresh, var, c, inplace=True) for var, c in terms]
            return ops + [plan.Alias(target, fresh)]
        ops.append(start)
        ops += [self.add(target, target, var, c, inplace=True) for var, c in terms]
        return ops

    def _form_text(self, target: str, terms: list[tuple[str, Coef]]) -> str:
        parts = []
        for var, c in terms:
            expr = c.expr
            if expr == 1:
                parts.append(f"+ {var}")
            elif expr == -1:
                parts.append(f"- {var}")
            else:
                negative = expr.as_coeff_Mul()[0] < 0
                size = -expr if negative else expr
                if size.is_number:
                    text = f"{float(size):g}"
                else:
                    plain = size.is_Symbol or (
                        size.is_Mul and all(a.is_Symbol or a.is_number for a in size.args)
                    )
                    text = _user_text(size) if plain else f"({_user_text(size)})"
                parts.append(f"{'-' if negative else '+'} {text}*{var}")
        text = " ".join(parts)
        text = text[2:] if text.startswith("+ ") else "-" + text[2:]
        return f"{target} = {text}"

    def _cast(self, start: str, end: str) -> str | None:
        """Which lerp operand is a block output, to take the other's dtype (plan.Lerp)."""
        outputs = (start in self.block_outputs, end in self.block_outputs)
        return {(True, False): "start", (False, True): "end"}.get(outputs)

    def _lerp_pair(self, terms):
        """Two terms whose coefficients sum to 1, the one with the simpler weight second."""
        for i, a in enumerate(terms):
            for b in terms[i + 1 :]:
                if sympy.simplify(a[1].expr + b[1].expr - 1) == 0:
                    return (a, b) if self._simpler(b[1].value, a[1].value) else (b, a)
        return None

    @staticmethod
    def _simpler(x: sympy.Expr, y: sympy.Expr) -> bool:
        if x.is_number and y.is_number:
            return abs(x) <= abs(y)
        return sympy.count_ops(x) <= sympy.count_ops(y)

    def add(self, target: str, a: str, b: str, c: Coef, inplace: bool = False) -> plan.Op:
        """`a + c*b` as one kernel (in place into `target` when `inplace`, then a is target)."""
        if c.kind is CoefKind.TENSOR:
            base, value = self._tensor_parts(c)
            return plan.AddCMul(target, a, base, b, value, inplace)
        if c.value == 1:
            return plan.AddAlpha(target, a, b, None, inplace=inplace)
        if c.value == -1:
            return plan.AddAlpha(target, a, b, None, subtract=True, inplace=inplace)
        return plan.AddAlpha(target, a, b, self.scalar(c), inplace=inplace)

    # ------------------------------------------------------------ the layer
    def lower(self) -> EmitPlan:
        net = self.net
        self.allocate()
        # Three parts: `prologue` (constants, param values, shared blocks: no input needed),
        # `init` (the states, lags, x[0] and sums from the input), and the layer loop.
        self.prologue.extend(
            plan.Const(self.constant_var[s], float(p.value)) for s, p in self.constants.items()
        )
        self.init: list[plan.Op] = []
        if self.alias_input:
            self.init.append(plan.Alias(self.input_var, "x"))
        params = self.param_plans()
        blocks_ = [
            BlockPlan(b.name, self.block_var[b.name], block_ctor(b), b.shared) for b in net.blocks
        ]
        self.init_states()
        self.accumulators: dict[ir.HistorySum, str] = {}
        self.windows: dict[ir.HistorySum, str] = {}
        for st in net.statements:
            for atom in st.form.walk():
                if isinstance(atom, ir.HistorySum) and atom not in self.accumulators:
                    var = self.ns.create("history_sum")
                    self.accumulators[atom] = var
                    self.init.append(plan.Zeros(var, self.input_var))
                    if atom.window is not None:
                        self.windows[atom] = self.ns.create("window")
                        self.init.append(plan.EmptyWindow(self.windows[atom]))
        for b in blocks_:
            fetch = plan.FetchBlock(b.var, b.name, b.shared)
            (self.prologue if b.shared else self.layer_setup).append(fetch)
        body = self.layer_body()
        rotation = self.rotation()
        layer = tuple(self.layer_setup + body + rotation)
        output = self.state_var[net.output]
        runtime = None
        layer_method, inverse_method, inverse_result = (), (), ()
        if net.equilibrium:
            forward = self._finish((*self.prologue, *self.init, *self.equilibrium(layer)), {output})
            slots, init_slots, forward_slots = (), (), ()
        else:
            loop = plan.Loop(layer)
            slots = self.slots(loop)
            unpack = plan.Unpack(slots, "slots")
            runtime = self.layer_runtime()
            # A module saving memory in backward runs its layers through the runtime, one
            # `_layer(k, slots)` call at a time (language.md section 15).
            run = loop if runtime is None else plan.RunLayers(slots, slots, runtime)
            forward = self._finish((*self.prologue, *self.init, run), {output})
            init_slots = self._finish((*self.prologue, *self.init), set(slots))
            forward_slots = plan.remove_dead((*self.prologue, unpack, run), set(slots))
            if runtime is not None:
                layer_method = plan.remove_dead((*self.prologue, unpack, *layer), set(slots))
                layer_method = plan.free_temporaries(layer_method, set(slots), repeats=False)
            if runtime is plan.LayerRuntime.REVERSIBLE:
                inverse_method, inverse_result = self.inverse_layer(slots)
                inverse_method = plan.reuse_block_calls(inverse_method, plan.BlockReuse.KEEP)
                layer_method = plan.reuse_block_calls(layer_method, plan.BlockReuse.REUSE)
                inverse_method = plan.free_temporaries(
                    inverse_method, set(inverse_result), repeats=False
                )
            # Last: a block output must not stay alive through the next block call.
            forward = plan.free_loop_temporaries(forward, set(slots))
            forward_slots = plan.free_loop_temporaries(forward_slots, set(slots))
        kinds = tuple(sorted({b.kind for b in net.blocks}))
        checks = tuple(
            c for b in net.blocks for c in BLOCK_KINDS[b.kind].dim_checks(b, BLOCK_KINDS[b.kind])
        )
        return EmitPlan(
            class_name=net.name,
            depth=net.depth,
            layout=Layout(net.layout),
            params=params,
            blocks=blocks_,
            schedules=self.schedules,
            param_names=tuple(p.name for p in net.params),
            fixed_params=self.fixed_param_values(),
            forward=forward,
            output_var=output,
            kinds=kinds,
            dim_checks=tuple(dict.fromkeys(checks)),
            kernels_per_layer=plan.kernels(layer),
            slots=slots,
            init_slots=init_slots,
            forward_slots=forward_slots,
            kind=net.kind,
            solver=solver_config(net),
            backward=backward_config(net),
            uses_k=bool(self.schedules) or self.reads_k or any(p.depends_on_k for p in net.params),
            recurrences=self.recurrence_plans(),
            runtime=runtime,
            checkpoint=net.checkpoint,
            layer=layer_method,
            inverse=inverse_method,
            inverse_result=inverse_result,
        )

    def recurrence_plans(self) -> tuple[RecurrencePlan, ...]:
        """The recursive schedules the module computes, each read up to tk[k + ahead]."""
        functions = {f for p in self.net.params for f in schedules.schedule_functions(p.value)}
        reads = [
            a
            for p in self.net.params
            for a in sympy.sympify(p.value).atoms(schedules.RecursiveSchedule)
        ]
        for st in self.net.statements:
            for _, coef in st.form.terms:
                reads += sympy.sympify(coef).atoms(schedules.RecursiveSchedule)
        plans = []
        prefix = snake_case(self.net.name)
        for function in sorted(functions, key=lambda f: f.__name__):
            name = function.__name__
            rule = function.rule
            ahead = max(
                (
                    int(a.args[0] - ir.K)
                    for a in reads
                    if a.func is function and ir.K in a.args[0].free_symbols
                ),
                default=0,
            )
            fixed_reads = [
                int(a.args[0]) for a in reads if a.func is function and a.args[0].is_Integer
            ]
            count = self.net.depth + self.net.start + ahead
            count = max(count, *(n + 1 for n in fixed_reads)) if fixed_reads else count
            previous = (
                name if name not in naming.reserved(naming.Reserved.SCHEDULE_LOCAL) else "previous"
            )
            step = rule.step.subs(schedules.PREVIOUS, sympy.Symbol(previous))
            need = "start + depth" + (f" + {ahead}" if ahead else "")
            if fixed_reads:
                need = f"max({need}, {max(fixed_reads) + 1})"
            plans.append(
                RecurrencePlan(
                    name=name,
                    function=f"_{prefix}_{name}",
                    table=f"_{prefix}_{name}_values".upper(),
                    values=tuple(rule.float_values(count)),
                    previous=previous,
                    step=schedules.python_code(step),
                    shown=rule.text,
                    count=need,
                )
            )
        return tuple(plans)

    def layer_runtime(self) -> plan.LayerRuntime | None:
        if self.net.reversible:
            return plan.LayerRuntime.REVERSIBLE
        if self.net.checkpoint is not None:
            return plan.LayerRuntime.CHECKPOINT
        return None

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

    def _finish(self, ops: tuple[plan.Op, ...], live: set[str]) -> tuple[plan.Op, ...]:
        if self.alias_input:
            ops = plan.rename_input(ops, self.input_var, "x")
        return plan.remove_dead(ops, live)

    def slots(self, loop: plan.Loop) -> tuple[str, ...]:
        """What the layer loop carries: states, lags, x[0], sums, and the input it reads.

        A model's stage hands these to the next stage (`carry states`).
        """
        names = [self.state_var[s] for s in self.net.states]
        names += [lag for s in self.net.states for lag in self.lag_var[s]]
        names += [self.initial_var[s] for s in sorted(self.initial_var)]
        names += list(self.accumulators.values())
        read = {n for op in plan.walk(loop.body) for n in op.uses}
        if self.input_var != "x" and self.input_var in read:
            names.append(self.input_var)
        elif self.input_var == "x" and "x" not in names and "x" in read:
            names.append("x")
        return tuple(names)

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

    def init_states(self) -> None:
        values: dict[ir.Atom, str] = {ir.InputValue(): self.input_var}
        for assign in self.net.init:
            var = self.state_var[assign.state]
            terms = [(values[a], self.coef(c)) for a, c in assign.form.terms]
            if var == "x" and terms == [(self.input_var, self.coef(ONE))]:
                pass  # the forward argument `x` already holds the input
            else:
                self.init.extend(self.combine(var, terms, self.input_var))
            values[ir.Initial(assign.state)] = var
        for s in self.net.states:
            if s in self.initial_var:
                self.init.append(plan.Alias(self.initial_var[s], self.state_var[s]))
            for lag in self.lag_var[s]:
                self.init.append(plan.Alias(lag, self.state_var[s]))

    def layer_body(self) -> list[plan.Op]:
        net = self.net
        values: dict[ir.Atom, str] = {ir.InputValue(): self.input_var}
        for s in net.states:
            values[ir.StateAt(s, 0)] = self.state_var[s]
            for j, lag in enumerate(self.lag_var[s], start=1):
                values[ir.StateAt(s, -j)] = lag
            if s in self.initial_var:
                values[ir.Initial(s)] = self.initial_var[s]
        self.next_var: dict[str, str] = {}
        ops: list[plan.Op] = []
        for index, st in enumerate(net.statements):
            ops.append(plan.Comment(st.text))
            if st.is_state and self.self_referencing(st):
                ops.extend(self.implicit_statement(st, index, values))
                continue
            single = st.form.terms[0] if len(st.form.terms) == 1 else None
            for atom in st.form.atoms():
                # `g = T(x)`: the block output is named g itself.
                name = (
                    self.local_var[st.target]
                    if (single and single[1] == 1 and not st.is_state)
                    else None
                )
                ops.extend(self.materialize(atom, values, name))
            if st.is_state:
                target = self.next_target(st.target, index)
                values[ir.StateAt(st.target, 1)] = target
            else:
                target = self.local_var[st.target]
                values[ir.Local(st.target)] = target
            terms = [(values[a], self.coef(c)) for a, c in st.form.terms]
            ops.extend(self.combine(target, terms, self.input_var))
            if not st.is_state and st.target in self.local_lag_var:
                ops.extend(self.local_history(st.target, target, values))
        return ops

    def local_history(self, name: str, value: str, values: dict) -> list[plan.Op]:
        """Before layer 0 a local's history equals its value at layer 0."""
        lags = self.local_lag_var[name]
        for j, var in enumerate(lags, start=1):
            values[ir.Local(name, -j)] = var
        return [plan.FirstLayer((plan.Rotate(tuple(lags), (value,) * len(lags)),))]

    @staticmethod
    def self_referencing(st: ir.Assign) -> bool:
        """Whether a block in the statement is applied to the value the statement defines."""
        return ir.StateAt(st.target, 1) in st.form.walk()

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

    def next_target(self, state: str, index: int) -> str:
        """Write x+ straight into x when nothing reads x_k after this statement."""
        current = ir.StateAt(state, 0)
        later_reads = any(current in st.form.walk() for st in self.net.statements[index + 1 :])
        if self.max_lag[state] == 0 and not later_reads:
            var = self.state_var[state]
        else:
            var = self.ns.create(f"{state}_next")
        self.next_var[state] = var
        return var

    def materialize(self, atom: ir.Atom, values: dict, name: str | None = None) -> list[plan.Op]:
        if atom in values:
            return []
        ops: list[plan.Op] = []
        if isinstance(atom, ir.BlockOut):
            arg = self.operand(atom.arg, values, ops, f"{atom.block}_in")
            short = arg.isidentifier() and len(arg) < 12
            var = name or self.ns.create(f"{atom.block}_{arg}" if short else f"{atom.block}_out")
            ops.append(plan.BlockCall(var, self.block_var[atom.block], arg))
            self.block_outputs.add(var)
        elif isinstance(atom, ir.MapOut):
            arg = self.operand(atom.arg, values, ops, f"{atom.fn}_in")
            var = name or self.ns.create(f"{atom.fn}_out")
            spec = ELEMENTWISE_MAPS[atom.fn]
            coefs = [(key, self.coef(v)) for key, v in zip(spec.scalar_args, atom.scalars)]
            tensors = frozenset(key for key, c in coefs if c.kind is CoefKind.TENSOR)
            template, imports, kernels = spec.emit_for(tensors)
            scalars = tuple((key, self.scalar(c)) for key, c in coefs)
            ops.append(plan.MapCall(var, template, arg, scalars, imports, kernels))
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
        var = self.ns.create(name)
        terms = [(values[a], self.coef(c)) for a, c in form.terms]
        ops.extend(self.combine(var, terms, self.input_var))
        return var

    def rotation(self) -> list[plan.Op]:
        targets, sources = [], []
        for s in self.net.states:
            # x_prevL, ..., x_prev, x = x_prev(L-1), ..., x, x_next
            chain = [*reversed(self.lag_var[s]), self.state_var[s]]
            shifted = chain[1:] + [self.next_var[s]]
            if chain == shifted:
                continue
            targets.extend(chain)
            sources.extend(shifted)
        for name, lags in self.local_lag_var.items():
            # g_prev2, g_prev = g_prev, g
            chain = list(reversed(lags))
            targets.extend(chain)
            sources.extend(chain[1:] + [self.local_var[name]])
        if not targets:
            return []
        return [plan.Rotate(tuple(targets), tuple(sources))]


@dataclass(frozen=True)
class Reach:
    """What the network's output depends on over a number of unrolled layers."""

    blocks: frozenset[tuple[str, int]]  # block instances (name, layer)
    params: frozenset[str]  # params (learnable or not) in a coefficient on the way


def reaching_output(net: ir.Network, depth: int) -> Reach:
    """The block instances and params the output of a `depth`-layer network depends on.

    A backward liveness walk over the unrolled layers: start from the output state after
    the last layer and follow what each needed value is computed from (states at any
    lag, `x[0]` and the init rules, locals, sum histories, block arguments). A block
    instance or learnable param outside the result gets no gradient: G in linearized
    ADMM in the last layer when x is the output, or everything that only feeds a state
    the output never reads. An equilibrium is one map solved to a fixed point, with one
    instance of each block: every state it reads is the fixed point itself.
    """
    defs = {(st.target, st.is_state): st.form for st in net.statements}
    inits = {init.state: init.form for init in net.init}
    symbols = {p.symbol: p.name for p in net.params}
    if net.equilibrium:
        depth = 1
    blocks: set[tuple[str, int]] = set()
    params: set[str] = set()
    needed: set[tuple[str, bool, int]] = set()  # (name, is_state, index)
    work: list[tuple[str, bool, int]] = []

    def need(name: str, is_state: bool, index: int) -> None:
        # A state at index j is its value after layer j - 1, index 0 its initial value
        # (which lags reaching before the first layer read too).
        if is_state:
            index = 1 if net.equilibrium else max(index, 0)
        if (name, is_state, index) not in needed:
            needed.add((name, is_state, index))
            work.append((name, is_state, index))

    def visit(form: ir.LinearForm, layer: int, history_index: int = 0) -> None:
        for atom, coef in form.terms:
            params.update(symbols[s] for s in coef.free_symbols if s in symbols)
            if isinstance(atom, ir.StateAt):
                need(atom.name, True, layer + atom.lag)
            elif isinstance(atom, ir.Initial):
                need(atom.name, True, 0)
            elif isinstance(atom, ir.Local):
                need(atom.name, False, max(layer + atom.lag, 0))
            elif isinstance(atom, ir.History):
                need(atom.name, atom.is_state, history_index + atom.offset)
            elif isinstance(atom, ir.BlockOut):
                blocks.add((atom.block, layer))
                visit(atom.arg, layer, history_index)
            elif isinstance(atom, ir.MapOut):
                # A learnable threshold or bound reaches the output through the map.
                for scalar in atom.scalars:
                    free = sympy.sympify(scalar).free_symbols
                    params.update(symbols[s] for s in free if s in symbols)
                visit(atom.arg, layer, history_index)
            elif isinstance(atom, ir.HistorySum):
                for i in range(atom.first_term(layer), layer + 1):
                    visit(atom.body, layer, i)

    need(net.output, True, depth)
    while work:
        name, is_state, index = work.pop()
        if is_state and index == 0 and not net.equilibrium:
            if name in inits:
                visit(inits[name], 0)
            continue
        # A state's value at index j comes from layer j - 1; a local's at index j from layer j.
        layer = index - 1 if is_state else index
        if 0 <= layer < depth and (name, is_state) in defs:
            visit(defs[(name, is_state)], layer)
    return Reach(frozenset(blocks), frozenset(params))


def solver_config(net: ir.Network) -> dict:
    return {} if net.kind == "explicit" else blocks.solver_config(net.solver)


def backward_config(net: ir.Network) -> dict:
    """The backward mode; implicit adjoint solves inherit max_iter and tol from the solver."""
    if net.kind == "explicit":
        return {}
    return blocks.backward_config(net.backward, solver_config(net))


def block_ctor(block: ir.Block) -> str:
    kind = BLOCK_KINDS[block.kind]
    return kind.constructor(block, kind)


@functools.cache
def lower(net: ir.Network) -> EmitPlan:
    """The plan of one network (cached: a model's checks and its files use it again)."""
    return Lowerer(net).lower()
