"""The rule evaluated as written: Python source of a plain function for the generated test.

`naive_source` writes, from a network's resolved IR, a function `naive_forward(module, x)`
that evaluates the update layer by layer and statement by statement, the way
`optgen.reference` interprets it (docs/reference.md), with torch alone: every iterate of
every state and every local kept in Python lists (`states["x"][j]` is x_j), each term
`coef * atom` of a statement written out and added in order, block calls made on the
values the statement names, sums over history as loops over the stored iterates,
implicit statements and equilibria solved by plain fixed-point iteration. No fusion, no
lerp or addcmul, no slot rotation: it shares nothing with lowering (`lower*.py`),
`plan.py` or `writer.py` (tests/test_architecture.py checks the imports), so that a
miscompile there shows up as a disagreement in the generated test.

The module is read only as the store of what the rule leaves to it: `module.blocks`,
`module.params()` (learnable params at the values the rule uses), `module.depth` and
`module.start`. Fixed params and schedules are computed from the IR's values, printed as
Python (a recursive schedule iterated in float64).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import sympy
from sympy.printing.pycode import PythonCodePrinter

from .. import ir
from ..kinds.blocks import Layout
from ..naming import snake_case
from ..schedules import PREVIOUS, RecursiveSchedule, lagged, lags_of, mod_code

MAPS = ("relu", "sigmoid", "tanh", "softshrink", "clamp")


class NaiveUnsupported(Exception):
    """A construct the naive evaluation does not write (the message says which)."""


@dataclass(frozen=True)
class NaiveSource:
    """The functions of some networks, the helpers they call, and the imports they need."""

    text: str
    imports: tuple[str, ...]


# ---------------------------------------------------------------- coefficients
# `L` in a coefficient: the depth the module under test is built with.
DEPTH = "module.depth"


class _Printer(PythonCodePrinter):
    """sympy to Python: each symbol by the name given it, a recursive schedule as a call
    of its helper (`_naive_schedule_tk(k + 1)`), `math.sqrt` and the like for functions."""

    printmethod = "_naive_code"  # not the schedules' own `_pythoncode`

    def __init__(self, names: dict[str, str]):
        super().__init__({"fully_qualified_modules": True, "strict": True})
        self.names = names
        self.schedules: set[type] = set()
        self.tensors: set[str] = set()  # symbols holding a per-sample dot or norm

    def _per_sample(self, expr) -> bool:
        return any(s.name in self.tensors for s in expr.free_symbols)

    def _print_Max(self, expr):
        if not self._per_sample(expr):
            return super()._print_Max(expr)
        return f"_naive_max({', '.join(self._print(a) for a in expr.args)})"

    def _print_Min(self, expr):
        if not self._per_sample(expr):
            return super()._print_Min(expr)
        return f"-_naive_max({', '.join(f'-({self._print(a)})' for a in expr.args)})"

    def _print_Abs(self, expr):
        if not self._per_sample(expr):
            return super()._print_Abs(expr)
        return f"torch.abs({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        value = self._print(expr.args[0])
        if not self._per_sample(expr):
            return f"(1 if {value} > 0 else -1 if {value} < 0 else 0)"
        return f"torch.where({value} > 0, 1.0, torch.where({value} < 0, -1.0, 0.0))"

    def _print_Function(self, expr):
        # sympy dispatches a subclass named otherwise (`tk`) to _print_Function.
        if isinstance(expr, RecursiveSchedule):
            self.schedules.add(expr.func)
            return f"_naive_schedule_{expr.func.__name__}({self._print(expr.args[0])})"
        if self._per_sample(expr) and type(expr).__name__ in ("exp", "log", "cos", "sin"):
            return f"torch.{type(expr).__name__}({self._print(expr.args[0])})"
        return super()._print_Function(expr)

    _print_exp = _print_log = _print_cos = _print_sin = _print_Function

    def _print_Symbol(self, expr):
        if expr.name not in self.names:
            raise NaiveUnsupported(f"a coefficient reads {expr.name}, which has no value")
        return self.names[expr.name]

    def _print_Rational(self, expr):
        return f"({expr.p}/{expr.q})"

    def _print_Mod(self, expr):
        return mod_code(self, expr)

    def parenthesize(self, item, level, strict=False):
        if isinstance(item, sympy.Mod) or (item.is_Rational and not item.is_Integer):
            return self._print(item)  # printed in parentheses already
        return super().parenthesize(item, level, strict)

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.base, expr.exp
        if exp.is_Integer:  # t^2, t^-1 of a learnable tensor, k^-2 of an int
            return f"({self._print(base)})**({int(exp)})"
        if self._per_sample(base):  # sqrt(dot(s, s)): a tensor's power, not math's
            return f"({self._print(base)})**({self._print(exp)})"
        return super()._print_Pow(expr, rational)


def _safe(text: str) -> str:
    """User text made safe for a one-line comment."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    hidden = ("Cc", "Cf", "Zl", "Zp")
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in hidden else c for c in text)


def _coefficients(form: ir.LinearForm):
    """Every scalar expression `form` reads: its coefficients, nested ones and map scalars."""
    for atom, coef in form.terms:
        yield coef
        if isinstance(atom, ir.MapOut):
            yield from atom.scalars
        if isinstance(atom, ir.DataScaled):
            yield atom.factor
        for inner in ir.inner_forms(atom):
            yield from _coefficients(inner)


def _reads_unknown(atom: ir.Atom, unknowns: frozenset[str]) -> bool:
    """Whether `atom` reads the next iterate of an unknown of a solve."""
    for inner in ir.LinearForm.of(atom).walk():
        if isinstance(inner, ir.StateAt) and inner.lag == 1 and inner.name in unknowns:
            return True
        if isinstance(inner, ir.History) and inner.is_state and inner.offset > 0:
            if inner.name in unknowns:
                return True
    return False


def _is_implicit(stmt: ir.Assign) -> bool:
    """A statement that reads the next iterate it defines (language.md 6.2)."""
    return any(
        isinstance(atom, ir.StateAt) and atom.name == stmt.target and atom.lag == 1
        for atom in stmt.form.walk()
    )


# ---------------------------------------------------------------- one function body
class _Body:
    """The lines of one function: forms written as sums of terms, the block calls, maps
    and sums they read as variables computed first (once a layer, as language.md 5.2
    defines a block call), a solve as a nested function iterated to its fixed point."""

    def __init__(self, net: ir.Network, printer: _Printer, layer: str, k: str, init=False):
        self.net = net
        self.init = init  # an init reads the input, params and earlier inits only
        self.printer = printer
        self.layer = layer  # the module's layer number: "n", or "0" for the inits
        self.k = k  # the layer index k the coefficients read
        self.lines: list[str] = []
        self.indent = 1
        self.count = 0
        self.calls: dict[ir.Atom, str] = {}
        self.unknowns: frozenset[str] = frozenset()
        self.inner: list[str] | None = None  # the lines of a solve's nested function

    # ------------------------------------------------------------ lines
    def emit(self, line: str, inner: bool = False) -> None:
        if inner and self.inner is not None:
            self.inner.append("    " * (self.indent + 1) + line)
        else:
            self.lines.append("    " * self.indent + line)

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    # ------------------------------------------------------------ forms
    def coefficient(self, coef: sympy.Expr) -> str:
        return self.printer.doprint(sympy.sympify(coef))

    def form(self, form: ir.LinearForm, index: str | None = None) -> str:
        """sum_j c_j * a_j, terms in the IR's order; zeros shaped as the input when empty."""
        if not form.terms:
            return "torch.zeros_like(input_)"
        text = ""
        for atom, coef in form.terms:
            value = self.atom(atom, index)
            if coef == 1:
                term, sign = value, "+"
            elif coef == -1:
                term, sign = value, "-"
            else:
                term, sign = f"({self.coefficient(coef)}) * {value}", "+"
            if not text:
                text = term if sign == "+" else f"-{term}"
            else:
                text += f" {sign} {term}"
        return text

    def atom(self, atom: ir.Atom, index: str | None) -> str:
        if self.init and not isinstance(atom, (ir.Initial, ir.InputValue, ir.MapOut)):
            raise NaiveUnsupported(f"{atom.show()} in an init")
        if isinstance(atom, ir.StateAt):
            return self.state(atom)
        if isinstance(atom, ir.Initial):
            return f"initial[{atom.name!r}]"
        if isinstance(atom, ir.Local):
            return f"locals_[{atom.name!r}][{self.before(atom.lag)}]"
        if isinstance(atom, ir.InputValue):
            return "input_"
        if isinstance(atom, ir.History):
            return self.history(atom, index)
        if isinstance(atom, (ir.BlockOut, ir.MapOut, ir.HistorySum, ir.DataScaled)):
            return self.computed(atom, index)
        raise NaiveUnsupported(f"atom {atom.show()}")

    def before(self, lag: int) -> str:
        """The history index of layer `layer + lag`, layer 0's before layer 0 exists."""
        return self.layer if lag == 0 else f"max(0, {self.layer} - {-lag})"

    def state(self, atom: ir.StateAt) -> str:
        if atom.lag == 1:
            return f"new[{atom.name!r}]"
        if atom.lag > 1:
            raise NaiveUnsupported(f"{atom.show()}: a state read ahead")
        return f"states[{atom.name!r}][{self.before(atom.lag)}]"

    def history(self, atom: ir.History, index: str | None) -> str:
        if index is None:
            raise NaiveUnsupported(f"{atom.show()} outside a sum")
        at = index if not atom.offset else f"{index} {'+' if atom.offset > 0 else '-'} "
        at += str(abs(atom.offset)) if atom.offset else ""
        if not atom.is_state:
            return f"locals_[{atom.name!r}][max(0, {at})]"
        stored = f"states[{atom.name!r}][max(0, {at})]"
        if atom.offset <= 0:  # i <= k: the iterate x_i, never this layer's new value
            return stored
        return f"(new[{atom.name!r}] if {at} == {self.layer} + 1 else {stored})"

    # ------------------------------------------------------------ block calls, maps, sums
    def computed(self, atom: ir.Atom, index: str | None) -> str:
        """A variable holding the atom's value, computed first (once, where it may be)."""
        inner = _reads_unknown(atom, self.unknowns)
        keep = index is None and not inner
        if keep and atom in self.calls:
            return self.calls[atom]
        if isinstance(atom, ir.BlockOut):
            name = self.fresh("b")
            argument = self.form(atom.arg, index)
            if atom.adjoint:  # by autograd, not by the weight the module's code reads
                source = self.net.block(atom.block).source_space
                axis = Layout(self.net.layout).channel_axis
                call = (
                    f"_naive_adjoint({self.block(atom.block)}, {argument}, module.{source}, {axis})"
                )
                self.emit(f"{name} = {call}", inner)
            else:
                self.emit(f"{name} = {self.block(atom.block)}({argument})", inner)
        elif isinstance(atom, ir.MapOut):
            if atom.fn not in MAPS:
                raise NaiveUnsupported(f"map {atom.fn}")
            name = self.fresh("m")
            scalars = "".join(f", {self.coefficient(s)}" for s in atom.scalars)
            argument = self.form(atom.arg, index)
            self.emit(f"{name} = _naive_{atom.fn}({argument}{scalars})", inner)
        elif isinstance(atom, ir.DataScaled):
            name = self.data_scaled(atom, index, inner)
        else:
            name = self.history_sum(atom, inner)
        if keep:
            self.calls[atom] = name
        return name

    def data_scaled(self, atom: ir.DataScaled, index: str | None, inner: bool) -> str:
        """factor * arg, the factor computed from per-sample reductions of the forms."""
        for symbol, reduction in atom.symbols().items():
            kind = reduction.kind.value
            var = self.fresh(kind)
            args = ", ".join(self.form(a, index) for a in reduction.args)
            self.emit(f"{var} = _naive_{kind}({args})", inner)
            self.printer.names[symbol.name] = var
            self.printer.tensors.add(symbol.name)
        name = self.fresh("d")
        argument = self.form(atom.arg, index)
        self.emit(f"{name} = ({self.coefficient(atom.factor)}) * {argument}", inner)
        return name

    def block(self, name: str) -> str:
        shared = self.net.block(name).shared or self.net.equilibrium
        return f"module.blocks[{name!r}][{'0' if shared else self.layer}]"

    def history_sum(self, atom: ir.HistorySum, inner: bool) -> str:
        """sum(i = lo..k, body): a loop over the stored iterates, zero at layers k < lo."""
        name = self.fresh("s")
        var = f"i_{atom.var.name}"
        self.printer.names[atom.var.name] = var
        first = str(atom.lo) if atom.window is None else f"max(0, {self.layer} - {atom.window})"
        self.emit(f"{name} = torch.zeros_like(input_)", inner)
        self.emit(f"for {var} in range({first}, {self.layer} + 1):", inner)
        self.indent += 1
        body = self.form(atom.body, var)
        self.emit(f"{name} = {name} + {body}", inner)
        self.indent -= 1
        return name

    # ------------------------------------------------------------ statements
    def statement(self, stmt: ir.Assign) -> None:
        self.emit(f"# {_safe(stmt.text)}")
        if not stmt.is_state:
            value = self.form(stmt.form)
            self.emit(f"locals_[{stmt.target!r}].append({value})")
        elif _is_implicit(stmt):
            self.solve(stmt)
        else:
            value = self.form(stmt.form)
            self.emit(f"new[{stmt.target!r}] = {value}")

    def solve(self, stmt: ir.Assign) -> None:
        """z = form(z) for the statement's next iterate z, from x_k (language.md 6.2)."""
        target = stmt.target
        function = self.fresh("statement")
        self.unknowns = frozenset({target})
        self.inner = [
            "    " * (self.indent + 1) + f"new[{target!r}] = z[{target!r}]",
        ]
        value = self.form(stmt.form)
        inner, self.inner, self.unknowns = self.inner, None, frozenset()
        self.emit(f"def {function}(z: dict[str, Tensor]) -> dict[str, Tensor]:")
        self.lines += inner
        self.emit(f"    return {{{target!r}: {value}}}")
        self.emit("")
        start = f"{{{target!r}: states[{target!r}][{self.layer}]}}"
        self.emit(f"new[{target!r}] = _naive_fixed_point({function}, {start})[{target!r}]")


# ---------------------------------------------------------------- one network
def _symbols(forms) -> set[str]:
    names: set[str] = set()
    for form in forms:
        for coef in _coefficients(form):
            names |= {s.name for s in sympy.sympify(coef).free_symbols}
    return names


class _Network:
    """The functions of one network: `naive_forward<suffix>` and its layer."""

    def __init__(self, net: ir.Network, suffix: str):
        self.net = net
        self.forward = f"naive_forward{suffix}"
        self.layer = f"_naive_layer{suffix}"
        self.schedules: set[type] = set()

    def printer(self, k: str) -> _Printer:
        names = {"k": k, "L": DEPTH, **{p.symbol.name: f"p_{p.name}" for p in self.net.params}}
        return _Printer(names)

    def bindings(self, body: _Body, forms) -> list[str]:
        """`p_t = ...` for each param the forms read, at the body's layer and k."""
        used = _symbols(forms)
        lines = []
        for p in self.net.params:
            if p.symbol.name not in used:
                continue
            if p.learnable:
                value = f"params[{p.name!r}]"
                if p.per_layer:
                    value += f"[{body.layer}]"
                if p.per_channel and self.net.layout == "image":
                    value += ".reshape(-1, 1, 1)"
            else:
                printer = _Printer({"k": body.k, "L": DEPTH})
                value = printer.doprint(p.value)
                self.schedules |= printer.schedules
            lines.append(f"    p_{p.name} = {value}")
        return lines

    def source(self) -> str:
        return "\n\n\n".join((self.forward_source(), self.layer_source()))

    def forward_source(self) -> str:
        net = self.net
        body = _Body(net, self.printer("0"), "0", "0", init=True)
        for init in net.init:
            space = net.space(init.state)
            if not init.form.terms and space != ir.DIM_SPACE:  # zeros of another size
                axis = Layout(net.layout).channel_axis
                value = f"_naive_zeros(input_, module.{space}, {axis})"
            else:
                value = body.form(init.form)
            body.emit(f"initial[{init.state!r}] = {value}")
        for state in net.states:
            if state not in {i.state for i in net.init}:
                body.emit(f"initial[{state!r}] = input_")
        self.schedules |= body.printer.schedules
        lines = [
            f"def {self.forward}(module: nn.Module, input_: Tensor) -> Tensor:",
            f'    """{net.name} evaluated as written, statement by statement."""',
            "    params = module.params()",
            *self.bindings(body, [i.form for i in net.init]),
            "    initial: dict[str, Tensor] = {}",
            *body.lines,
        ]
        locals_ = "{" + "".join(f"{s.target!r}: [], " for s in net.statements if not s.is_state)
        locals_ = locals_.removesuffix(", ") + "}"
        states = ", ".join(map(repr, net.states)) + ("," if len(net.states) == 1 else "")
        output = repr(net.output)
        if net.equilibrium:
            lines += [
                "",
                "    def update(z: dict[str, Tensor]) -> dict[str, Tensor]:",
                f"        states = {{name: [z[name]] for name in ({states})}}",
                f"        locals_: dict[str, list[Tensor]] = {locals_}",
                f"        return {self.layer}(module, params, input_, initial, states, locals_, 0, 0)",
                "",
                f"    return _naive_fixed_point(update, dict(initial))[{output}]",
            ]
            return "\n".join(lines)
        if _has_sums(net):
            lines += [
                "    if getattr(module, 'start', 0) != 0:",
                "        raise NotImplementedError('a sum over history from a layer k > 0')",
            ]
        lines += [
            f"    states = {{name: [initial[name]] for name in ({states})}}",
            f"    locals_: dict[str, list[Tensor]] = {locals_}",
            "    for n in range(module.depth):",
            "        k = getattr(module, 'start', 0) + n",
            f"        new = {self.layer}(module, params, input_, initial, states, locals_, n, k)",
            "        for name, value in new.items():",
            "            states[name].append(value)",
            f"    return states[{output}][-1]",
        ]
        return "\n".join(lines)

    def layer_source(self) -> str:
        net = self.net
        body = _Body(net, self.printer("k"), "n", "k")
        for stmt in net.statements:
            body.statement(stmt)
        self.schedules |= body.printer.schedules
        signature = (
            f"def {self.layer}(\n"
            "    module: nn.Module,\n"
            "    params: dict[str, Tensor],\n"
            "    input_: Tensor,\n"
            "    initial: dict[str, Tensor],\n"
            "    states: dict[str, list[Tensor]],\n"
            "    locals_: dict[str, list[Tensor]],\n"
            "    n: int,\n"
            "    k: int,\n"
            ") -> dict[str, Tensor]:"
        )
        lines = [
            signature,
            f'    """One layer of {net.name}: layer n of the module, at index k; the states\''
            ' new values."""',
            *self.bindings(body, [s.form for s in net.statements]),
            "    new: dict[str, Tensor] = {}",
            *body.lines,
            "    return new",
        ]
        return "\n".join(lines)


# ---------------------------------------------------------------- helpers
_FIXED_POINT = '''def _naive_fixed_point(f, z: dict[str, Tensor]) -> dict[str, Tensor]:
    """Simple iteration z <- f(z) until the largest relative residual of a sample,
    ||f(z) - z|| / ||f(z)||, is at most 1e-12 (at most 2000 steps)."""
    for _ in range(2000):
        fz = f(z)
        diff = sum((fz[s] - z[s]).reshape(fz[s].shape[0], -1).square().sum(1) for s in fz)
        size = sum(fz[s].reshape(fz[s].shape[0], -1).square().sum(1) for s in fz)
        if (diff.sqrt() <= 1e-12 * size.sqrt()).all():
            return fz
        z = fz
    raise RuntimeError("the naive fixed-point iteration did not converge")'''

_MAP_SOURCES = {
    "relu": """def _naive_relu(e: Tensor) -> Tensor:
    return torch.where(e > 0, e, torch.zeros_like(e))""",
    "sigmoid": """def _naive_sigmoid(e: Tensor) -> Tensor:
    return torch.sigmoid(e)""",
    "tanh": """def _naive_tanh(e: Tensor) -> Tensor:
    return torch.tanh(e)""",
    "softshrink": '''def _naive_softshrink(e: Tensor, lam) -> Tensor:
    """e - lam above lam, e + lam below -lam, 0 between."""
    lam = torch.as_tensor(lam, dtype=e.dtype, device=e.device)
    return torch.where(e > lam, e - lam, torch.where(e < -lam, e + lam, torch.zeros_like(e)))''',
    "clamp": """def _naive_clamp(e: Tensor, lo, hi) -> Tensor:
    lo = torch.as_tensor(lo, dtype=e.dtype, device=e.device)
    hi = torch.as_tensor(hi, dtype=e.dtype, device=e.device)
    return torch.minimum(torch.maximum(e, lo), hi)""",
}


def _schedule_source(function: type, more: set[type]) -> str:
    """A recursive schedule's helper: its recursion iterated in float64."""
    rule = function.rule
    lags = lags_of(rule.step)
    names = {"k": "k", PREVIOUS.name: "previous"}
    names.update({lagged(j).name: f"previous_{j}" for j in lags})
    printer = _Printer(names)
    start = printer.doprint(sympy.sympify(rule.start))
    step = printer.doprint(rule.step)
    more |= printer.schedules
    name = function.__name__
    doc = f'    """{_safe(rule.text)}, iterated in float64."""'.replace("\\", "\\\\")
    if printer.schedules:
        # One that reads other schedules (which may read it back) is called at every k:
        # its values are kept between calls, in a list of the test module.
        return "\n".join(
            [
                f"_naive_values_{name}: list[float] = []",
                "",
                "",
                f"def _naive_schedule_{name}(n: int) -> float:",
                doc,
                f"    values = _naive_values_{name}",
                "    if not values:",
                f"        values.append(float({start}))",
                "    for k in range(len(values) - 1, n):",
                *(["        previous = values[k]"] if re.search(r"\bprevious\b", step) else []),
                *(f"        previous_{j} = values[max(k - {j}, 0)]" for j in lags),
                f"        values.append(float({step}))",
                "    return values[n]",
            ]
        )
    if not lags:
        index = "k" if "k" in {x.name for x in sympy.sympify(rule.step).free_symbols} else "_"
        return "\n".join(
            [
                f"def _naive_schedule_{name}(n: int) -> float:",
                doc,
                f"    previous = float({start})",
                f"    for {index} in range(n):",
                f"        previous = float({step})",
                "    return previous",
            ]
        )
    # tk[k-j] reads an earlier value: keep them all (tk[0] before the start).
    return "\n".join(
        [
            f"def _naive_schedule_{name}(n: int) -> float:",
            doc,
            f"    values = [float({start})]",
            "    for k in range(n):",
            "        previous = values[k]",
            *(f"        previous_{j} = values[max(k - {j}, 0)]" for j in lags),
            f"        values.append(float({step}))",
            "    return values[n]",
        ]
    )


_DATA_SOURCES = {
    "dot": '''def _naive_dot(a: Tensor, b: Tensor) -> Tensor:
    """sum of a*b over each sample, as a [B, 1, ...] tensor."""
    per_sample = (a * b).reshape(a.shape[0], -1).sum(dim=1)
    return per_sample.reshape([a.shape[0]] + [1] * (a.dim() - 1))''',
    "norm": '''def _naive_norm(a: Tensor) -> Tensor:
    """The Euclidean norm of each sample, as a [B, 1, ...] tensor."""
    per_sample = a.reshape(a.shape[0], -1).norm(dim=1)
    return per_sample.reshape([a.shape[0]] + [1] * (a.dim() - 1))''',
    "adjoint": '''def _naive_adjoint(block: nn.Module, y: Tensor, size: int, axis: int) -> Tensor:
    """K^T(y) of a linear block K: the vector-Jacobian product of K (at zero) with y."""
    shape = list(y.shape)
    shape[axis] = size
    outer = torch.is_grad_enabled()
    with torch.enable_grad():
        z = y.new_zeros(shape).requires_grad_()
        (vjp,) = torch.autograd.grad(block(z), z, y, create_graph=outer)
    return vjp''',
    "zeros": '''def _naive_zeros(like: Tensor, size: int, axis: int) -> Tensor:
    """Zeros shaped as `like` but for `size` entries on the channel axis."""
    shape = list(like.shape)
    shape[axis] = size
    return like.new_zeros(shape)''',
    "max": '''def _naive_max(*values):
    """The largest of numbers and per-sample tensors, elementwise."""
    out = next(v for v in values if isinstance(v, Tensor))
    for v in values:
        out = torch.where(out >= v, out, v if isinstance(v, Tensor) else torch.full_like(out, v))
    return out''',
}


def _helpers(text: str, schedules: set[type]) -> list[str]:
    found = [_FIXED_POINT] if "_naive_fixed_point(" in text else []
    found += [source for fn, source in _MAP_SOURCES.items() if f"_naive_{fn}(" in text]
    found += [source for fn, source in _DATA_SOURCES.items() if f"_naive_{fn}(" in text]
    done: set[type] = set()
    pending = set(schedules)
    while pending:
        function = min(pending, key=lambda f: f.__name__)
        pending.discard(function)
        if function in done:
            continue
        done.add(function)
        more: set[type] = set()
        found.append(_schedule_source(function, more))
        pending |= more - done
    return found


def naive_source(networks: list[tuple[ir.Network, str]]) -> NaiveSource:
    """The naive functions of `networks`, each `(network, suffix)` written as
    `naive_forward<suffix>`, then the helpers they call; NaiveUnsupported for a construct
    it does not write."""
    parts, schedules = [], set()
    for net, suffix in networks:
        writer = _Network(net, suffix)
        parts.append(writer.source())
        schedules |= writer.schedules
    text = "\n\n\n".join(parts)
    text = "\n\n\n".join([text, *_helpers(text, schedules)])
    imports = ("import math",) if re.search(r"\bmath\.", text) else ()
    return NaiveSource(text + "\n", imports)


def naive_network(net: ir.Network, suffix: str = "") -> NaiveSource | str:
    """The naive source of one network, or why it has none."""
    try:
        return naive_source([(net, suffix)])
    except NaiveUnsupported as err:
        return str(err)


@dataclass(frozen=True)
class NaiveStages:
    """The naive functions of a model's stage networks, for its generated test."""

    source: NaiveSource | None
    # (stage index, its naive function, its input shape without the batch, solved)
    stages: tuple[tuple[int, str, tuple[int, ...], bool], ...]
    skipped: tuple[str, ...]  # "network: why" for each network without one


def naive_stages(model: ir.Model, networks) -> NaiveStages:
    """Each stage's network evaluated as written, one function a network."""
    by_name = {net.name: net for net in networks}
    written, skipped = [], []
    for net in dict.fromkeys(by_name[stage.network] for stage in model.stages):
        suffix = f"_{snake_case(net.name)}"
        found = naive_network(net, suffix)
        if isinstance(found, str):
            skipped.append(f"{net.name}: {found}")
        else:
            written.append((net, suffix))
    names = {net.name: f"naive_forward{suffix}" for net, suffix in written}
    stages = []
    for i, stage in enumerate(model.stages):
        net = by_name[stage.network]
        if stage.network not in names:
            continue
        if _continues(model, by_name, i) and _has_sums(net):
            # Run alone from k > 0, its sum lacks the iterates before: undefined.
            skipped.append(f"stage {i}: a sum over history in a stage that continues")
            continue
        stages.append((i, names[stage.network], tuple(model.shapes[i]), net.kind != "explicit"))
    source = naive_source(written) if written else None
    return NaiveStages(source, tuple(stages), tuple(skipped))


def _continues(model: ir.Model, by_name: dict, index: int) -> bool:
    """Whether stage `index` continues the recurrence of the one before (its k > 0)."""
    if index == 0:
        return False
    before = by_name[model.stages[index - 1].network]
    return model.transitions[index - 1].carry == ir.Carry.STATES and not before.equilibrium


def _has_sums(net: ir.Network) -> bool:
    return any(isinstance(a, ir.HistorySum) for s in net.statements for a in s.form.walk())
