"""IR to EmitPlan: the straight-line per-layer program of an explicit network.

Every assignment of the update is a linear combination of tensors. Here each one is
emitted with the fewest elementwise kernels:

* a single term with coefficient 1 is an alias (no kernel);
* a term with coefficient 1 starts the sum, every further term costs one fused
  kernel: `torch.add(a, b, alpha=c)` (fixed c) or `torch.addcmul(a, c, b)` (c a
  tensor, e.g. a learnable param);
* two coefficients that sum to 1 are one `torch.lerp(a, b, w)`;
* otherwise the first term is scaled (`torch.mul`) and the rest are added in place
  into that fresh temporary, which autograd never saved.

Coefficients are folded: fixed params become numbers, `k`-dependent ones a per-layer
table of Python floats built in `__init__`, learnable ones are computed once per
call from their raw parameter (softplus / scaled sigmoid reparametrization).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import sympy

from . import ir
from .blocks import BLOCK_KINDS, ELEMENTWISE_MAPS
from .naming import Namespace
from .resolve import DIM

# Attributes an nn.Module (and the generated class) already has.
MODULE_ATTRS = frozenset(
    {
        "training",
        "forward",
        "blocks",
        "depth",
        "dim",
        "solver_stats",
        "RULE",
        "CERTIFICATE",
        "parameters",
        "buffers",
        "children",
        "modules",
        "state_dict",
        "train",
        "eval",
        "to",
        "cuda",
        "cpu",
        "double",
        "float",
        "half",
        "type",
        "apply",
        "zero_grad",
        "register_buffer",
        "register_parameter",
        "extra_repr",
    }
)
ONE = sympy.Integer(1)


@dataclass(frozen=True)
class Coef:
    """A folded coefficient: a number, a fixed per-layer schedule, or a tensor (learnable).

    For a tensor coefficient c = factor * base, `factor` is a number and `base` the
    tensor part, so that `torch.addcmul(a, base, b, value=factor)` needs no extra kernel.
    Code is only made when a combination uses it (`Lowerer.code`), so that nothing
    unused is computed.
    """

    value: sympy.Expr
    kind: str  # "number" | "schedule" | "tensor"
    factor: sympy.Expr = ONE
    base: sympy.Expr = ONE


@dataclass
class ParamPlan:
    name: str
    attr: str  # the nn.Parameter attribute
    var: str  # the forward-local variable holding the constrained value
    init_code: str  # python expression building the raw initial tensor in __init__
    value_code: str  # python expression in forward computing the value from the raw
    doc: str


@dataclass
class BlockPlan:
    name: str  # key in module.blocks
    var: str
    ctor: str  # python expression constructing one instance (uses `dim`)
    shared: bool


@dataclass
class EmitPlan:
    class_name: str
    file_stem: str
    depth: int
    layout: str
    params: list[ParamPlan]
    blocks: list[BlockPlan]
    schedules: list[tuple[str, str, str]]  # (attribute, python expr in k, shown expr)
    input_var: str
    prologue: list[str]  # forward, before the loop
    layer_setup: list[str]  # loop, fetching the blocks of layer k
    body: list[str]  # loop body
    epilogue: list[str]  # loop end: rotation of states and lags
    output_var: str
    block_templates: list[str]
    needs_activation: bool
    needs_custom: bool
    kernels_per_layer: int = 0
    kind: str = "explicit"  # "explicit" | "implicit" | "equilibrium"
    solver: dict = field(default_factory=dict)
    backward: dict = field(default_factory=dict)
    equilibrium_body: list[str] = field(default_factory=list)

    @property
    def loop(self) -> list[str]:
        lines = self.layer_setup + self.body + self.epilogue
        return lines if any(not line.startswith("#") for line in lines) else lines + ["pass"]


def _float(value) -> str:
    return repr(float(value))


def _pyexpr(expr: sympy.Expr, names: dict[sympy.Symbol, str]) -> str:
    """Python source for a sympy expression, symbols renamed (rationals as true divisions)."""
    if not expr.free_symbols:
        return _float(expr)
    renamed = expr.subs({s: sympy.Symbol(n) for s, n in names.items()}, simultaneous=True)
    return sympy.sstr(renamed, order="lex")


def dim_code(expr) -> str:
    """Python source for an integer block argument, an expression in `dim`."""
    expr = sympy.sympify(expr)
    code = sympy.sstr(expr.subs(DIM, sympy.Symbol("dim")))
    poly = sympy.Poly(expr, DIM) if expr.free_symbols else None
    if poly is None or all(c.is_integer for c in poly.coeffs()):
        return code
    return f"int({code})"


class Lowerer:
    def __init__(self, net: ir.Network):
        self.net = net
        self.ns = Namespace()
        self.attrs = Namespace(reserved=MODULE_ATTRS)
        self.fixed = {p.symbol: p.value for p in net.params if not p.learnable}
        self.learnable = {p.symbol: p for p in net.params if p.learnable}
        self.prologue: list[str] = []
        self.layer_setup: list[str] = []
        self.schedules: list[tuple[str, str, str]] = []
        self._schedule_of: dict[sympy.Expr, str] = {}
        self._call_tensor_of: dict[sympy.Expr, str] = {}
        self._layer_tensor_of: dict[sympy.Expr, str] = {}
        self.kernels = 0

    # ------------------------------------------------------------ names
    def allocate(self) -> None:
        net = self.net
        self.state_var = {s: self.ns.create(s) for s in net.states}
        self.block_var = {b.name: self.ns.create(b.name) for b in net.blocks}
        self.local_var = {
            st.target: self.ns.create(st.target) for st in net.statements if not st.is_state
        }
        self.param_var = {p.name: self.ns.create(p.name) for p in net.params if p.learnable}
        if self.ns.is_used("x"):
            self.input_var = self.ns.create("input_")
            self.prologue.append(f"{self.input_var} = x")
        else:
            self.input_var = self.ns.create("x")
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

    # ------------------------------------------------------------ params
    def param_plans(self) -> list[ParamPlan]:
        plans = []
        for p in self.net.params:
            if not p.learnable:
                continue
            var = self.param_var[p.name]
            constrained = p.bound is not None
            attr = self.attrs.create(f"{p.name}_raw" if constrained else p.name)
            raw = self._raw_code(p)
            if p.per_layer:
                init = f"nn.Parameter(torch.tensor([{raw} for k in range(depth)]))"
            else:
                init = f"nn.Parameter(torch.tensor({raw}))"
            value = self._reparam_code(p, f"self.{attr}")
            plans.append(ParamPlan(p.name, attr, var, init, value, self._param_doc(p)))
            self.prologue.append(f"{var} = {value}")
        return plans

    def _raw_code(self, p: ir.Param) -> str:
        if p.per_layer:
            v = _pyexpr(p.value, {ir.K: "k"})
            v = f"float({v})"
        else:
            v = None
        value = float(p.value) if v is None else None
        b = p.bound
        if b is None:
            return v if v is not None else _float(value)
        if b.hi is None:  # positive: inverse softplus
            if v is not None:
                return f"math.log(math.expm1({v}))"
            return _float(math.log(math.expm1(value)))
        lo, hi = float(b.lo), float(b.hi)
        if v is not None:
            return f"math.log(({v} - {lo!r}) / ({hi!r} - {v}))"
        return _float(math.log((value - lo) / (hi - value)))

    def _reparam_code(self, p: ir.Param, raw: str) -> str:
        b = p.bound
        if b is None:
            return raw
        if b.hi is None:
            return f"F.softplus({raw})"
        lo, hi = float(b.lo), float(b.hi)
        if lo == 0.0 and hi == 1.0:
            return f"torch.sigmoid({raw})"
        return f"torch.sigmoid({raw}) * {hi - lo!r} + {lo!r}"

    def _param_doc(self, p: ir.Param) -> str:
        where = p.bound.show(p.name) if p.bound else "unconstrained"
        how = "softplus" if p.positive else ("scaled sigmoid" if p.bound else "identity")
        per = ", one per layer" if p.per_layer else ""
        return f"{p.name}: learnable{per}, {where} ({how} reparametrization), starts at {p.value}"

    # ------------------------------------------------------------ coefficients
    def coef(self, value: sympy.Expr) -> Coef:
        value = sympy.simplify(value.subs(self.fixed)) if value.free_symbols else value
        symbols = value.free_symbols
        if not symbols:
            return Coef(value, "number")
        if not any(s in self.learnable for s in symbols):
            return Coef(value, "schedule")
        factor, base = value.as_coeff_Mul()
        if factor.is_zero or not factor.is_number:
            factor, base = ONE, value
        return Coef(value, "tensor", factor, base)

    def code(self, c: Coef) -> str:
        """Python code for the whole coefficient (a float or a 0-dim tensor)."""
        if c.kind == "number":
            return _float(c.value)
        if c.kind == "schedule":
            return self.schedule(c.value)
        return self.tensor_coef(c.value)

    def schedule(self, value: sympy.Expr) -> str:
        """A fixed coefficient that depends on k: a per-layer table of floats."""
        if value not in self._schedule_of:
            attr = self.attrs.create(f"coef{len(self.schedules) + 1}")
            shown = sympy.sstr(
                value.subs(
                    {s: sympy.Symbol(ir.symbol_param(s) or s.name) for s in value.free_symbols}
                )
            )
            self.schedules.append((attr, _pyexpr(value, {ir.K: "k"}), shown))
            self._schedule_of[value] = f"self.{attr}[k]"
        return self._schedule_of[value]

    def tensor_coef(self, value: sympy.Expr) -> str:
        """A coefficient with learnable params: computed once per call, or once per layer."""
        symbols = value.free_symbols
        per_layer = ir.K in symbols or any(
            self.learnable[s].per_layer for s in symbols if s in self.learnable
        )
        names = {}
        for s in symbols:
            if s == ir.K:
                names[s] = "k"
            elif s in self.learnable:
                p = self.learnable[s]
                names[s] = f"{self.param_var[p.name]}[k]" if p.per_layer else self.param_var[p.name]
        if len(symbols) == 1 and value in self.learnable and not per_layer:
            return self.param_var[self.learnable[value].name]
        table, lines = (
            (self._layer_tensor_of, self.layer_setup)
            if per_layer
            else (self._call_tensor_of, self.prologue)
        )
        if value not in table:
            var = self.ns.create("coef")
            if ir.K in symbols:
                names[ir.K] = "k"
            lines.append(f"{var} = {_pyexpr(value, names)}")
            table[value] = var
        return table[value]

    # ------------------------------------------------------------ combinations
    def combine(self, target: str, terms: list[tuple[str, Coef]], like: str) -> list[str]:
        """Lines that set `target` to sum(c * v) with the fewest kernels (module docstring)."""
        if not terms:
            self.kernels += 1
            return [f"{target} = torch.zeros_like({like})"]
        terms = list(terms)
        lines: list[str] = []
        first = next((t for t in terms if t[1].value == 1), None)
        if first is not None:
            terms.remove(first)
            if not terms:
                return [] if first[0] == target else [f"{target} = {first[0]}"]
            var, c = terms.pop(0)
            lines.append(f"{target} = {self._add(first[0], var, c)}")
        else:
            pair = self._lerp_pair(terms)
            if pair is not None:
                (a, _), (b, cb) = pair
                terms.remove(pair[0])
                terms.remove(pair[1])
                lines.append(f"{target} = torch.lerp({a}, {b}, {self.code(cb)})")
            else:
                var, c = terms.pop(0)
                lines.append(f"{target} = torch.mul({var}, {self.code(c)})")
        self.kernels += 1
        if any(var == target for var, _ in terms):
            # The first op rebinds `target`; a later term still reads its old value.
            fresh = self.ns.create(f"{target}_new")
            lines[0] = lines[0].replace(f"{target} = ", f"{fresh} = ", 1)
            lines += [f"{fresh}.{self._add_inplace(var, c)}" for var, c in terms]
            self.kernels += len(terms)
            return lines + [f"{target} = {fresh}"]
        for var, c in terms:
            lines.append(f"{target}.{self._add_inplace(var, c)}")
            self.kernels += 1
        return lines

    def _lerp_pair(self, terms):
        """Two terms whose coefficients sum to 1, the one with the simpler weight second."""
        for i, a in enumerate(terms):
            for b in terms[i + 1 :]:
                if sympy.simplify(a[1].value + b[1].value - 1) == 0:
                    return (a, b) if self._simpler(b[1].value, a[1].value) else (b, a)
        return None

    @staticmethod
    def _simpler(x: sympy.Expr, y: sympy.Expr) -> bool:
        if x.is_number and y.is_number:
            return abs(x) <= abs(y)
        return sympy.count_ops(x) <= sympy.count_ops(y)

    def _tensor_parts(self, c: Coef) -> tuple[str, str]:
        value = "" if c.factor == 1 else f", value={_float(c.factor)}"
        return self.tensor_coef(c.base), value

    def _add(self, a: str, b: str, c: Coef) -> str:
        """`a + c*b` as one out-of-place kernel."""
        op, args = self._fused_add(b, c)
        return f"torch.{op}({a}, {args})"

    def _add_inplace(self, b: str, c: Coef) -> str:
        """`+= c*b` as one in-place kernel (a method call on the accumulating tensor)."""
        op, args = self._fused_add(b, c)
        return f"{op}_({args})"

    def _fused_add(self, b: str, c: Coef) -> tuple[str, str]:
        if c.kind == "tensor":
            base, value = self._tensor_parts(c)
            return "addcmul", f"{base}, {b}{value}"
        if c.value == 1:
            return "add", b
        if c.value == -1:
            return "sub", b
        return "add", f"{b}, alpha={self.code(c)}"

    # ------------------------------------------------------------ the layer
    def lower(self) -> EmitPlan:
        net = self.net
        self.allocate()
        params = self.param_plans()
        blocks = [
            BlockPlan(b.name, self.block_var[b.name], block_ctor(b), b.shared) for b in net.blocks
        ]
        self.init_states()
        self.accumulators: dict[ir.HistorySum, str] = {}
        for st in net.statements:
            for atom in st.form.walk():
                if isinstance(atom, ir.HistorySum) and atom not in self.accumulators:
                    var = self.ns.create("history_sum")
                    self.accumulators[atom] = var
                    self.prologue.append(f"{var} = torch.zeros_like({self.input_var})")
        for b in blocks:
            line = f"{b.var} = self.blocks[{b.name!r}][{'0' if b.shared else 'k'}]"
            (self.prologue if b.shared else self.layer_setup).append(line)
        body = self.layer_body()
        epilogue = self.rotation()
        self.drop_unused_input_alias(body)
        equilibrium_body = self.equilibrium(body, epilogue) if net.equilibrium else []
        kinds = sorted({b.kind for b in net.blocks})
        templates = [BLOCK_KINDS[k].template for k in kinds]
        return EmitPlan(
            class_name=net.name,
            file_stem="",
            depth=net.depth,
            layout=net.layout,
            params=params,
            blocks=blocks,
            schedules=self.schedules,
            input_var=self.input_var,
            prologue=self.prologue,
            layer_setup=self.layer_setup,
            body=body,
            epilogue=epilogue,
            output_var=self.state_var[net.output],
            block_templates=templates,
            needs_activation=bool({"mlp", "conv"} & set(kinds)),
            needs_custom="custom" in kinds,
            kernels_per_layer=self.kernels,
            kind=net.kind,
            solver=solver_config(net),
            backward=backward_config(net),
            equilibrium_body=equilibrium_body,
        )

    def equilibrium(self, body: list[str], epilogue: list[str]) -> list[str]:
        """The whole update as one map of the packed iterates, solved for its fixed point."""
        packed = [self.state_var[s] for s in self.net.states]
        packed += [lag for s in self.net.states for lag in self.lag_var[s]]
        fn, z = self.ns.create("update"), self.ns.create("z")
        joined = ", ".join(packed)
        if len(packed) == 1:
            start, unpack, pack = packed[0], f"{packed[0]} = {z}", packed[0]
        else:
            start, unpack, pack = (
                f"_pack([{joined}])",
                f"{joined} = {z}.unbind(1)",
                f"_pack([{joined}])",
            )
        lines = ["k = 0", f"def {fn}({z}: Tensor) -> Tensor:", f"    {unpack}"]
        lines += ["    " + line for line in self.layer_setup + body + epilogue]
        lines += [f"    return {pack}", f"{z} = _solve(self, {fn}, {start}, 0)", unpack]
        return lines

    def drop_unused_input_alias(self, body: list[str]) -> None:
        alias = f"{self.input_var} = x"
        if alias not in self.prologue:
            return
        pattern = re.compile(rf"\b{re.escape(self.input_var)}\b")
        rest = [line for line in self.prologue + self.layer_setup + body if line != alias]
        if not any(pattern.search(line) for line in rest):
            self.prologue.remove(alias)

    def init_states(self) -> None:
        values: dict[ir.Atom, str] = {ir.InputValue(): self.input_var}
        for assign in self.net.init:
            var = self.state_var[assign.state]
            terms = [(values[a], self.coef(c)) for a, c in assign.form.terms]
            if var == "x" and terms == [(self.input_var, self.coef(ONE))]:
                pass  # the forward argument `x` already holds the input
            else:
                self.prologue.extend(self.combine(var, terms, self.input_var))
            values[ir.Initial(assign.state)] = var
        for s in self.net.states:
            if s in self.initial_var:
                self.prologue.append(f"{self.initial_var[s]} = {self.state_var[s]}")
            for lag in self.lag_var[s]:
                self.prologue.append(f"{lag} = {self.state_var[s]}")

    def layer_body(self) -> list[str]:
        net = self.net
        values: dict[ir.Atom, str] = {ir.InputValue(): self.input_var}
        for s in net.states:
            values[ir.StateAt(s, 0)] = self.state_var[s]
            for j, lag in enumerate(self.lag_var[s], start=1):
                values[ir.StateAt(s, -j)] = lag
            if s in self.initial_var:
                values[ir.Initial(s)] = self.initial_var[s]
        self.next_var: dict[str, str] = {}
        lines: list[str] = []
        for index, st in enumerate(net.statements):
            lines.append(f"# {st.text}")
            if st.is_state and self.self_referencing(st):
                lines.extend(self.implicit_statement(st, index, values))
                continue
            single = st.form.terms[0] if len(st.form.terms) == 1 else None
            for atom in st.form.atoms():
                # `g = T(x)`: the block output is named g itself.
                name = (
                    self.local_var[st.target]
                    if (single and single[1] == 1 and not st.is_state)
                    else None
                )
                lines.extend(self.materialize(atom, values, name))
            if st.is_state:
                target = self.next_target(st.target, index)
                values[ir.StateAt(st.target, 1)] = target
            else:
                target = self.local_var[st.target]
                values[ir.Local(st.target)] = target
            terms = [(values[a], self.coef(c)) for a, c in st.form.terms]
            lines.extend(self.combine(target, terms, self.input_var))
        return lines

    @staticmethod
    def self_referencing(st: ir.Assign) -> bool:
        """Whether a block in the statement is applied to the value the statement defines."""
        return ir.StateAt(st.target, 1) in st.form.walk()

    def implicit_statement(self, st: ir.Assign, index: int, values: dict) -> list[str]:
        """`x+ = v + sum c_j B_j(args(x+))`: v computed once, then z = f(z) solved per layer."""
        unknown = ir.StateAt(st.target, 1)
        implicit = [(a, c) for a, c in st.form.terms if unknown in ir.LinearForm.of(a).walk()]
        explicit = [(a, c) for a, c in st.form.terms if unknown not in ir.LinearForm.of(a).walk()]
        lines: list[str] = []
        known = (
            self.operand(ir.LinearForm(tuple(explicit)), values, lines, f"{st.target}_explicit")
            if explicit
            else None
        )
        fn = self.ns.create(f"{st.target}_map")
        z = self.ns.create("z")
        inner = dict(values)
        inner[unknown] = z
        body: list[str] = []
        for atom, _ in implicit:
            body.extend(self.materialize(atom, inner))
        out = self.ns.create(f"{st.target}_map_out")
        terms = ([(known, self.coef(ONE))] if known else []) + [
            (inner[a], self.coef(c)) for a, c in implicit
        ]
        body.extend(self.combine(out, terms, z))
        lines.append(f"def {fn}({z}: Tensor) -> Tensor:")
        lines.extend("    " + line for line in body)
        lines.append(f"    return {out}")
        target = self.next_target(st.target, index)
        values[unknown] = target
        guess = known or values[ir.StateAt(st.target, 0)]
        lines.append(f"{target} = _solve(self, {fn}, {guess}, k)")
        return lines

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

    def materialize(self, atom: ir.Atom, values: dict, name: str | None = None) -> list[str]:
        if atom in values:
            return []
        lines: list[str] = []
        if isinstance(atom, ir.BlockOut):
            arg = self.operand(atom.arg, values, lines, f"{atom.block}_in")
            var = name or self.ns.create(
                f"{atom.block}_{arg}"
                if arg.isidentifier() and len(arg) < 12
                else f"{atom.block}_out"
            )
            lines.append(f"{var} = {self.block_var[atom.block]}({arg})")
        elif isinstance(atom, ir.MapOut):
            arg = self.operand(atom.arg, values, lines, f"{atom.fn}_in")
            var = name or self.ns.create(f"{atom.fn}_out")
            spec = ELEMENTWISE_MAPS[atom.fn]
            scalars = {
                name: self.code(self.coef(v)) for name, v in zip(spec.scalar_args, atom.scalars)
            }
            lines.append(f"{var} = {spec.emit.format(x=arg, **scalars)}")
            self.kernels += 1
        elif isinstance(atom, ir.HistorySum):
            var = self.accumulators[atom]
            for inner, coef in atom.body.terms:
                source = (
                    values[ir.Local(inner.name)]
                    if not inner.is_state
                    else values[ir.StateAt(inner.name, 0)]
                )
                c = self.coef(coef.subs(atom.var, ir.K))
                if atom.lo > 0:
                    c = self.coef(
                        sympy.Piecewise((0, ir.K < atom.lo), (coef.subs(atom.var, ir.K), True))
                    )
                lines.append(f"{var} = {self._add(var, source, c)}")
                self.kernels += 1
        else:  # pragma: no cover - resolve only produces the atoms above
            raise AssertionError(f"cannot materialize {atom}")
        values[atom] = var
        return lines

    def operand(self, form: ir.LinearForm, values: dict, lines: list[str], name: str) -> str:
        """The variable holding a tensor linear form (an alias when it is one atom)."""
        for atom in form.atoms():
            lines.extend(self.materialize(atom, values))
        if len(form.terms) == 1 and form.terms[0][1] == 1:
            return values[form.terms[0][0]]
        var = self.ns.create(name)
        lines.extend(
            self.combine(var, [(values[a], self.coef(c)) for a, c in form.terms], self.input_var)
        )
        return var

    def rotation(self) -> list[str]:
        targets, sources = [], []
        for s in self.net.states:
            # x_prevL, ..., x_prev, x = x_prev(L-1), ..., x, x_next
            chain = [*reversed(self.lag_var[s]), self.state_var[s]]
            shifted = chain[1:] + [self.next_var[s]]
            if chain == shifted:
                continue
            targets.extend(chain)
            sources.extend(shifted)
        if not targets:
            return []
        return [f"{', '.join(targets)} = {', '.join(sources)}"]


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
                need(atom.name, False, layer)
            elif isinstance(atom, ir.History):
                need(atom.name, atom.is_state, history_index + atom.offset)
            elif isinstance(atom, ir.BlockOut):
                blocks.add((atom.block, layer))
                visit(atom.arg, layer, history_index)
            elif isinstance(atom, ir.MapOut):
                visit(atom.arg, layer, history_index)
            elif isinstance(atom, ir.HistorySum):
                for i in range(atom.lo, layer + 1):
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


DEFAULT_SOLVER = {"name": "anderson", "m": 5, "max_iter": 50, "tol": 1e-4}


def solver_config(net: ir.Network) -> dict:
    if net.kind == "explicit":
        return {}
    if net.solver is None:
        return dict(DEFAULT_SOLVER)
    return {"name": net.solver.name, **dict(net.solver.options)}


def backward_config(net: ir.Network) -> dict:
    """The backward mode; implicit adjoint solves inherit max_iter and tol from the solver."""
    if net.kind == "explicit":
        return {}
    solver = solver_config(net)
    if net.backward is None:
        return {"name": "implicit", "max_iter": solver["max_iter"], "tol": solver["tol"]}
    config = {"name": net.backward.name, **dict(net.backward.options)}
    if config["name"] == "implicit":
        config = {
            "name": "implicit",
            "max_iter": solver["max_iter"],
            "tol": solver["tol"],
            **dict(net.backward.options),
        }
    return config


def block_ctor(block: ir.Block) -> str:
    kind = BLOCK_KINDS[block.kind]
    args = dict(block.args)
    if block.kind == "custom":
        kwargs = [
            f"{k}={_custom_value(v)}"
            for k, v in sorted(args.items())
            if k not in ("layout", "universal")
        ]
        return f"_load_class({block.target!r})(dim{''.join(', ' + a for a in kwargs)})"
    parts = ["dim"]
    for key, spec in kind.args.items():
        value = args.get(key, spec.default)
        parts.append(f"{key}={value!r}" if spec.kind == "choice" else f"{key}={dim_code(value)}")
    return f"{kind.class_name}({', '.join(parts)})"


def _custom_value(v) -> str:
    if isinstance(v, (str, bool)) or v is None:
        return repr(v)
    v = sympy.sympify(v)
    if DIM in v.free_symbols:
        return dim_code(v)
    return str(int(v)) if v.is_integer else _float(v)


def lower(net: ir.Network) -> EmitPlan:
    return Lowerer(net).lower()
