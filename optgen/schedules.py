"""Scalar functions of schedules and recursive schedules (`param tk[k+1] = ...`).

A param value may use `sqrt`, `exp`, `log`, `cos`, `sin`, `floor`, `ceil`, `abs`, `min`,
`max`, `^`, `%` and `pi`; these are sympy functions of the params and `k`, so the analysis
reads them exactly. A recursive schedule

    param tk[0] = 1
    param tk[k+1] = (1 + sqrt(1 + 4*tk^2))/2

has no closed form: it is the sympy function `tk(k)` of the layer index (a subclass of
`RecursiveSchedule`) whose value at an integer is computed on demand, with exact rationals
while the recursion stays rational, and with `DIGITS` significant digits (mpmath) once a
`sqrt`, `exp` or `log` makes it irrational (the value is then the exact rational of that
approximation, so that the analysis keeps computing with rationals). The generated module
holds these values, rounded to float64, for the declared depth, and computes the entries
of a deeper constructor depth itself, in float64 (`recurrence_function`).
"""

from __future__ import annotations

from dataclasses import dataclass

import mpmath
import sympy
from sympy.printing.str import StrPrinter

from . import ir

# Significant digits of an irrational schedule value (float64 needs 17).
DIGITS = 50
# Digits of the numerator and denominator of an exact value before it is approximated:
# `tk[k+1] = tk^2 + 1/3` doubles them at every layer.
MAX_EXACT_DIGITS = 60
MAX_EXPONENT = 307
MAX_FLOAT = sympy.Integer(10) ** MAX_EXPONENT
# The value of the previous layer inside the recursion (`tk` in `tk[k+1] = ...tk...`).
PREVIOUS = sympy.Symbol("_previous", real=True)
# How far back a recursion may read its own values (`tk[k-1]`, ..., `tk[k-MAX_LAG]`).
MAX_LAG = 64


def lagged(lag: int) -> sympy.Symbol:
    """`tk[k - lag]` inside the recursion of tk (lag >= 1): before layer lag, tk[0]."""
    return sympy.Symbol(f"_previous{lag}", real=True)


def lags_of(step: sympy.Expr) -> list[int]:
    """The lags j >= 1 of `tk[k - j]` a recursion's step reads, in order."""
    found = []
    for s in step.free_symbols:
        if s.name.startswith("_previous") and s.name != PREVIOUS.name:
            found.append(int(s.name[len("_previous") :]))
    return sorted(found)


@dataclass(frozen=True)
class ScalarFunction:
    name: str
    arity: tuple[int, int | None]  # fewest and most arguments (None: any number)
    build: object  # sympy constructor
    signature: str


SCALAR_FUNCTIONS = {
    f.name: f
    for f in (
        ScalarFunction("sqrt", (1, 1), sympy.sqrt, "sqrt(a)"),
        ScalarFunction("exp", (1, 1), sympy.exp, "exp(a)"),
        ScalarFunction("log", (1, 1), sympy.log, "log(a)"),
        ScalarFunction("cos", (1, 1), sympy.cos, "cos(a)"),
        ScalarFunction("sin", (1, 1), sympy.sin, "sin(a)"),
        ScalarFunction("floor", (1, 1), sympy.floor, "floor(a)"),
        ScalarFunction("ceil", (1, 1), sympy.ceiling, "ceil(a)"),
        ScalarFunction("abs", (1, 1), sympy.Abs, "abs(a)"),
        ScalarFunction("sign", (1, 1), sympy.sign, "sign(a)"),
        ScalarFunction("min", (2, None), sympy.Min, "min(a, b, ...)"),
        ScalarFunction("max", (2, None), sympy.Max, "max(a, b, ...)"),
    )
}


class Depth(sympy.Function):
    """`L`, the depth, as the code writer sees it: `Depth(k)` is a function of the layer
    index only so that every coefficient that reads it is computed where those that read
    `k` are, in the per-layer tables the constructor fills (`for k in range(start, start +
    depth)`), where it is printed `depth`. The analysis never sees it (`ir.at_depth`)."""

    nargs = 1

    def _modulecode(self, printer) -> str:
        return "depth"

    def _sympystr(self, printer) -> str:  # what users read: the language's name
        return "L"

    def _eval_is_integer(self):
        return True

    def _eval_is_positive(self):
        return True


class RecursiveSchedule(sympy.Function):
    """`name(n)`: the recursive schedule at layer n; a subclass per schedule holds its rule.

    Printed `tk[k + 1]` (the generated module keeps a list `tk` of its values)."""

    nargs = 1
    rule: Recurrence

    @classmethod
    def eval(cls, n):
        if n.is_Integer and n >= 0 and cls.rule.ready():
            return cls.rule.value(int(n))
        return None

    def _sympystr(self, printer) -> str:
        return f"{self.func.__name__}[{printer._print(self.args[0])}]"

    _modulecode = _sympystr

    def _call_code(self, printer) -> str:
        # lambdify calls the schedule (its `_imp_`) rather than indexing a list.
        return f"{self.func.__name__}({printer._print(self.args[0])})"

    _pythoncode = _lambdacode = _numpycode = _mpmathcode = _call_code

    def _eval_is_real(self):
        return True


class Recurrence:
    """`name[0] = start; name[k+1] = step` with `step` in PREVIOUS (name[k]) and k."""

    def __init__(self, name: str, start: sympy.Expr, step: sympy.Expr, text: str = ""):
        self.name = name
        self.define(start, step, text)

    def define(self, start: sympy.Expr, step: sympy.Expr, text: str = "") -> None:
        """Give the rule its start and step: a schedule that a recursion declared before it
        reads (coupled schedules, `Recurrence.pending`) exists before its step is known."""
        self.start, self.step = start, step
        self.text = text or f"{self.name}[0] = {start}; {self.name}[k+1] = {step}"
        self._values: list[sympy.Rational] = [] if start is None else [sympy.Rational(start)]
        self._numeric = None  # the step as an mpmath function once a value is approximate

    def ready(self, seen: frozenset = frozenset()) -> bool:
        """Whether its values can be computed: its step is known, and so are those of the
        schedules it reads (a coupled one may still be pending while the file resolves)."""
        if getattr(self, "_ready", False) or self.name in seen:
            return True
        if self.step is None:
            return False
        others = (f.rule for f in schedule_functions(self.step))
        self._ready = all(rule.ready(seen | {self.name}) for rule in others)
        return self._ready

    @staticmethod
    def pending(name: str) -> Recurrence:
        """A schedule to be defined later (`define`), readable meanwhile as a function."""
        return Recurrence(name, None, None, name)

    def function(self) -> type[RecursiveSchedule]:
        """The sympy function of this schedule (one class per rule)."""
        if getattr(self, "_function", None) is None:

            def numeric(n) -> float:
                if not self.ready():  # sympy's evalf gives up on a ValueError
                    raise ValueError(f"schedule {self.name} is not defined yet")
                return float(self.value(int(n)))

            attributes = {"rule": self, "_imp_": staticmethod(numeric)}
            self._function = type(self.name, (RecursiveSchedule,), attributes)
        return self._function

    def value(self, n: int) -> sympy.Rational:
        """name[n], exact or to DIGITS significant digits; ValueError when not finite."""
        while len(self._values) <= n:
            k = len(self._values) - 1
            self._values.append(self._next(self._values[k], k))
        return self._values[n]

    def _next(self, previous: sympy.Rational, k: int) -> sympy.Rational:
        lags = lags_of(self.step)
        earlier = [self._values[max(k - j, 0)] for j in lags]  # before the start: tk[0]
        if self._numeric is None:
            bindings = {PREVIOUS: previous, ir.K: sympy.Integer(k)}
            bindings.update({lagged(j): v for j, v in zip(lags, earlier)})
            exact = self.step.xreplace(bindings)
            if exact.is_Rational and _small(exact):
                return self._in_range(exact, k)
            if exact.is_Rational or not exact.is_finite or exact.is_real is False:
                if not exact.is_finite or exact.is_real is False:
                    raise ValueError(f"{self.name}[{k + 1}] is not a finite real number")
            symbols = (PREVIOUS, *(lagged(j) for j in lags), ir.K)
            # Another schedule the step reads, at its exact (or 50-digit) values: called by a
            # plain name, since lambdify would prefer the schedule's own float `_imp_`.
            plain = {f: sympy.Function(f"_mp_{f.__name__}") for f in schedule_functions(self.step)}
            others = {g.__name__: _mp_values(f) for f, g in plain.items()}
            step = self.step.replace(
                lambda e: isinstance(e, RecursiveSchedule), lambda e: plain[e.func](*e.args)
            )
            self._numeric = sympy.lambdify(symbols, step, [others, "mpmath"])
        with mpmath.workdps(DIGITS):
            try:
                inputs = [mpmath.mpf(v.p) / v.q for v in (previous, *earlier)]
                value = self._numeric(*inputs, k)
            except (ZeroDivisionError, OverflowError, ValueError) as err:
                raise ValueError(f"{self.name}[{k + 1}] is not a finite real number") from err
            if isinstance(value, mpmath.mpc) or not mpmath.isfinite(value):
                raise ValueError(f"{self.name}[{k + 1}] is not a finite real number")
            sign, man, exp, _ = mpmath.mpf(value)._mpf_
            exact = (-1) ** sign * sympy.Integer(man) * sympy.Integer(2) ** exp
            return self._in_range(exact, k)

    def _in_range(self, value: sympy.Rational, k: int) -> sympy.Rational:
        """`value`, when a float64 holds it (the module computes in float64)."""
        if abs(value) > MAX_FLOAT:
            raise ValueError(f"{self.name}[{k + 1}] overflows a float64 (above 1e{MAX_EXPONENT})")
        return value

    def float_values(self, count: int) -> list[float]:
        return [float(self.value(n)) for n in range(count)]


def _mp_values(function):
    def value(n) -> mpmath.mpf:
        exact = function.rule.value(int(n))
        return mpmath.mpf(exact.p) / exact.q

    return value


def _small(value: sympy.Rational) -> bool:
    return len(str(abs(value.p))) + len(str(value.q)) <= MAX_EXACT_DIGITS


def reachable(start, edges: dict) -> set:
    """What `start` reaches along `edges` (node -> the nodes it reads), itself excluded
    unless on a cycle: the schedules a recursion reads, directly or through others."""
    seen, todo = set(), list(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    return seen


def schedule_functions(expr) -> set[type[RecursiveSchedule]]:
    """The recursive schedules `expr` reads."""
    return {a.func for a in sympy.sympify(expr).atoms(RecursiveSchedule)}


class _Spelling(StrPrinter):
    """What the module's Python and the language write alike: `abs`, `min`, `max` and `%`
    (in parentheses, see `mod_code`)."""

    def _print_Abs(self, expr) -> str:
        return f"abs({self._print(expr.args[0])})"

    def _print_Min(self, expr) -> str:
        return f"min({', '.join(self._print(a) for a in expr.args)})"

    def _print_Max(self, expr) -> str:
        return f"max({', '.join(self._print(a) for a in expr.args)})"

    def _print_Mod(self, expr) -> str:
        return mod_code(self, expr)

    def parenthesize(self, item, level, strict=False) -> str:
        if isinstance(item, sympy.Mod):  # printed in parentheses already
            return self._print(item)
        return super().parenthesize(item, level, strict)


class _ModulePrinter(_Spelling):
    """Python for the generated module: sympy's text with `math.sqrt`, `math.exp`,
    `math.log`, `math.cos`, `math.sin`, `math.floor`, `math.ceil`, `math.pi`, `abs`, `min`,
    `max`, `%` and `tk[k + 1]` (a list of the module)."""

    printmethod = "_modulecode"

    def _print_Pow(self, expr, rational=False) -> str:
        if expr.exp == sympy.S.Half:
            return f"math.sqrt({self._print(expr.base)})"
        if expr.exp == -sympy.S.Half:
            return f"1/math.sqrt({self._print(expr.base)})"
        return super()._print_Pow(expr, rational)

    def _print_exp(self, expr) -> str:
        return f"math.exp({self._print(expr.args[0])})"

    def _print_log(self, expr) -> str:
        return f"math.log({self._print(expr.args[0])})"

    def _print_Exp1(self, expr) -> str:
        return "math.e"

    def _print_Pi(self, expr) -> str:
        return "math.pi"

    def _print_cos(self, expr) -> str:
        return f"math.cos({self._print(expr.args[0])})"

    def _print_sin(self, expr) -> str:
        return f"math.sin({self._print(expr.args[0])})"

    def _print_floor(self, expr) -> str:
        return f"math.floor({self._print(expr.args[0])})"

    def _print_ceiling(self, expr) -> str:
        return f"math.ceil({self._print(expr.args[0])})"

    def _print_sign(self, expr) -> str:
        # -1, 0 or 1 as Python ints: (a > 0) - (a < 0).
        value = self._print(expr.args[0])
        return f"(({value} > 0) - ({value} < 0))"


class _TensorPrinter(_ModulePrinter):
    """`_ModulePrinter` where some symbols are tensors (a per-sample `dot`, a learnable
    param): a function of one is torch's (`torch.sqrt(d)`, `torch.clamp_min(d, 1e-12)`,
    `torch.maximum(a, b)`); a function of numbers alone stays `math`'s."""

    def __init__(self, tensors: set[str]):
        super().__init__()
        self.tensors = tensors

    def _print_Rational(self, expr) -> str:
        # A guard as written (1e-12), not as sympy keeps it (1/1000000000000).
        return repr(float(expr)) if expr.q > 1000 else super()._print_Rational(expr)

    def _is_tensor(self, expr) -> bool:
        return any(s.name in self.tensors for s in expr.free_symbols)

    def _function(self, name: str, expr) -> str | None:
        if not self._is_tensor(expr):
            return None
        return f"torch.{name}({self._print(expr.args[0])})"

    def _print_Pow(self, expr, rational=False) -> str:
        if self._is_tensor(expr.base) and expr.exp == sympy.S.Half:
            return f"torch.sqrt({self._print(expr.base)})"
        if self._is_tensor(expr.base) and expr.exp == -sympy.S.Half:
            return f"torch.rsqrt({self._print(expr.base)})"
        return super()._print_Pow(expr, rational)

    def _print_exp(self, expr) -> str:
        return self._function("exp", expr) or super()._print_exp(expr)

    def _print_log(self, expr) -> str:
        return self._function("log", expr) or super()._print_log(expr)

    def _print_cos(self, expr) -> str:
        return self._function("cos", expr) or super()._print_cos(expr)

    def _print_sin(self, expr) -> str:
        return self._function("sin", expr) or super()._print_sin(expr)

    def _print_Abs(self, expr) -> str:
        return self._function("abs", expr) or super()._print_Abs(expr)

    def _print_sign(self, expr) -> str:
        return self._function("sign", expr) or super()._print_sign(expr)

    def _print_Max(self, expr) -> str:
        return self._extremum(expr, "maximum", "clamp_min") or super()._print_Max(expr)

    def _print_Min(self, expr) -> str:
        return self._extremum(expr, "minimum", "clamp_max") or super()._print_Min(expr)

    def _extremum(self, expr, pairwise: str, clamp: str) -> str | None:
        """max(a, b, c) of tensors: torch.maximum pairwise; the numbers among the
        arguments (sympy keeps one) as a clamp of the rest."""
        if not self._is_tensor(expr):
            return None
        numbers = [a for a in expr.args if not self._is_tensor(a)]
        text = self._print(next(a for a in expr.args if self._is_tensor(a)))
        for other in [a for a in expr.args if self._is_tensor(a)][1:]:
            text = f"torch.{pairwise}({text}, {self._print(other)})"
        for number in numbers:
            text = f"torch.{clamp}({text}, {self._print(number)})"
        return text


def tensor_code(expr, tensors: set[str]) -> str:
    """Python for `expr`, the symbols named in `tensors` being tensors (`_TensorPrinter`)."""
    return _TensorPrinter(tensors).doprint(expr)


def mod_code(printer, expr) -> str:
    """`(a % b)`: Python's % is sympy's Mod (the sign of the divisor). Always in
    parentheses: sympy's printers put a product's sign and factors around it
    (`-Mod(k, 3)/20` printed `-k % 3/20`, which Python reads as `((-k) % 3)/20`)."""
    left, right = (printer._print(a) for a in expr.args)
    left = left if expr.args[0].is_Atom else f"({left})"
    right = right if expr.args[1].is_Atom else f"({right})"
    return f"({left} % {right})"


class _LanguagePrinter(_Spelling):
    """sympy's text in the language's spelling, for what users read (certificates,
    comments, messages): `k % 3`, `ceil(a)`, `abs(a)`, `min`, `max` for sympy's Mod,
    ceiling, Abs, Min and Max."""

    def _print_ceiling(self, expr) -> str:
        return f"ceil({self._print(expr.args[0])})"


def user_str(expr, **settings) -> str:
    """`sympy.sstr(expr, **settings)` in the language's spelling (see `_LanguagePrinter`)."""
    return _LanguagePrinter(settings).doprint(expr)


def needs_math(expr) -> bool:
    """Whether the module text of `expr` calls a function of `math`."""
    return "math." in python_code(expr)


def python_code(expr) -> str:
    return _ModulePrinter().doprint(expr)


def recurrence_code(rule: Recurrence) -> str:
    """The step of `rule` as a Python expression in `name` (the previous value) and k."""
    step = rule.step.xreplace({PREVIOUS: sympy.Symbol(rule.name)})
    return python_code(step)


def lag_name(previous: str, lag: int) -> str:
    """The variable of `tk[k - lag]` beside `previous` (tk[k]) in the code that iterates it."""
    return f"{previous}_{lag}_back"
