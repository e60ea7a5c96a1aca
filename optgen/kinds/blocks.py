"""The registry of kinds: block kinds, elementwise maps, solvers and backward modes.

Each entry holds every fact the pipeline needs about its kind, so that adding a kind
touches this file alone. A block kind says which input layout it takes, which arguments
it accepts (with their defaults), whether it holds the two-layer substructure
W2·σ(W1 z + b) of the universality theorem, how the generated file constructs it, the
source it copies into that file (`templates/blocks/<file>`, or inline text), what it
imports, and what the generated tests feed it. An elementwise map says how it is
emitted; a solver or backward mode its options, defaults and what the adjoint inherits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import sympy

from .. import torch_names
from ..ir import DIM, DIM_SPACE
from ..present import literal
from ..resources import resource_path
from .calls import DIM as DIM_CODE
from .calls import Call, Code, Value
from .imports import Import

# Activations a block may use; every one but `identity` is non-polynomial.
ACTIVATIONS: dict[str, str] = {
    "relu": "nn.ReLU()",
    "gelu": "nn.GELU()",
    "tanh": "nn.Tanh()",
    "sigmoid": "nn.Sigmoid()",
    "silu": "nn.SiLU()",
    "elu": "nn.ELU()",
    "softplus": "nn.Softplus()",
    "leaky_relu": "nn.LeakyReLU()",
    "identity": "nn.Identity()",
}
POLYNOMIAL_ACTIVATIONS = frozenset({"identity"})

# A block named after an attribute of nn.ModuleDict could not be a key of `module.blocks`.
MODULE_DICT_ATTRIBUTES = torch_names.MODULE_DICT_ATTRIBUTES


class Layout(str, Enum):
    """The tensor layout a block takes; all blocks of one network share one."""

    VECTOR = "vector"
    IMAGE = "image"
    SEQUENCE = "sequence"

    # Hash and compare as the plain word, so that "vector" and Layout.VECTOR are one key.
    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value

    @property
    def shape(self) -> str:
        return {"vector": "[..., dim]", "image": "[N, dim, H, W]", "sequence": "[N, L, dim]"}[
            self.value
        ]

    @property
    def channel_axis(self) -> int:
        """The axis that holds dim (or the size m of another space): 1 of [N, dim, H, W],
        the last of the others."""
        return 1 if self is Layout.IMAGE else -1

    @property
    def test_input(self) -> str:
        """The shape the generated tests feed a module of this layout (`batch`, `DIM` names)."""
        return {
            "vector": "batch + 1, DIM",
            "image": "batch, DIM, 4, 4",
            "sequence": "batch, 3, DIM",
        }[self.value]


LAYOUTS = {layout: layout.shape for layout in Layout}


class ArgKind(str, Enum):
    INT = "int"  # an integer expression in dim
    CHOICE = "choice"  # one word of a fixed list
    SPACE = "space"  # a size of the network: dim, or a size a state is declared with

    __hash__ = str.__hash__


@dataclass(frozen=True, slots=True)
class Arg:
    """One keyword argument of a block kind."""

    kind: ArgKind
    default: object
    choices: tuple[str, ...] = ()
    odd: bool = False  # a kernel size: odd, so that "same" padding keeps the spatial size


def dim_code(expr) -> str:
    """Python source for an integer block argument, an expression in `dim`.

    A fractional coefficient (`hidden=3*dim/2`) is an exact floor division; the generated
    constructor checks beforehand that it divides (`BlockKind.dim_checks`).
    """
    expr = sympy.sympify(expr)
    if not expr.free_symbols:
        return str(int(expr))
    numerator, denominator = sympy.fraction(sympy.together(expr))
    code = sympy.sstr(numerator.subs(DIM, sympy.Symbol("dim")))
    if denominator == 1:
        return code
    return f"{_operand(numerator, code)} // {denominator}"


def _operand(expr: sympy.Expr, code: str) -> str:
    """`code` ready for a left operand of // or %: a sum needs parentheses."""
    return f"({code})" if expr.is_Add else code


@dataclass(frozen=True, slots=True)
class DimCheck:
    """A condition on `dim` the generated constructor tests before building a block."""

    condition: str  # Python source in `dim`, true when the block cannot be built
    message: str  # what is wrong, naming the block and the rule
    size: str = DIM_SPACE  # the size the condition reads (`m` of a block with space=m)


def _two_layer_by_activation(kind: BlockKind, args: dict) -> tuple[bool | None, str]:
    act = str(args.get("act", "relu"))
    if act in POLYNOMIAL_ACTIVATIONS:
        return False, f"{kind.name} with act={act} is polynomial: no non-polynomial activation"
    return True, f"{kind.name} holds W2·σ(W1 z + b) with σ = {act}"


def _two_layer_always(kind: BlockKind, args: dict) -> tuple[bool | None, str]:
    return True, f"{kind.name} holds W2·σ(W1 z + b) ({kind.doc})"


def _two_layer_never(kind: BlockKind, args: dict) -> tuple[bool | None, str]:
    return False, f"{kind.name}() has no two-layer substructure W2·σ(W1 z + b)"


def _two_layer_declared(kind: BlockKind, args: dict) -> tuple[bool | None, str]:
    declared = args.get("universal", "unknown")
    if declared == "yes":
        return True, "custom block declared universal=yes"
    if declared == "no":
        return False, "custom block declared universal=no"
    return (
        None,
        "custom block: its structure is unknown (declare universal=yes if it holds W2·σ(W1 z + b))",
    )


def _fractional_dims(block, kind: BlockKind) -> list[DimCheck]:
    """An int argument with a fractional coefficient in dim must come out whole."""
    checks = []
    for key, value in sorted(dict(block.args).items()):
        if key not in kind.args or kind.args[key].kind is not ArgKind.INT:
            continue
        value = sympy.sympify(value)
        numerator, denominator = sympy.fraction(sympy.together(value))
        if denominator != 1 and value.free_symbols:
            code = sympy.sstr(numerator.subs(DIM, sympy.Symbol("dim")))
            shown = sympy.sstr(value)
            checks.append(
                DimCheck(
                    f"{_operand(numerator, code)} % {denominator}",
                    f"block {block.name} = {kind.name}({key}={shown}): {key} is not a whole "
                    f"number unless {denominator} divides {code}",
                    str(next(iter(value.free_symbols))),
                )
            )
    return checks


def _heads_divide_dim(block, kind: BlockKind) -> list[DimCheck]:
    heads = dim_code(dict(block.args).get("heads", 1))
    size = dict(block.args).get("space", DIM_SPACE)  # the width it attends over
    checks = _fractional_dims(block, kind)
    if heads != "1":
        checks.append(
            DimCheck(
                f"{size} % {heads}" if heads.isdigit() else f"{size} % ({heads})",
                f"block {block.name} = {kind.name}(heads={heads}) needs {size} divisible by "
                f"heads = {heads}",
                size,
            )
        )
    return checks


def _dim_value(expr) -> Value:
    """An integer argument: a number, or Python source in `dim`."""
    code = dim_code(expr)
    return int(code) if code.lstrip("-").isdigit() else Code(code)


def size_code(space: str) -> Code:
    """The constructor's variable holding the size of a space (`dim`, or `m` of `y: m`)."""
    return DIM_CODE if space == DIM_SPACE else Code(space)


def _keyword_constructor(block, kind: BlockKind) -> Call:
    args = dict(block.args)
    kwargs = []
    for key, spec in kind.args.items():
        if spec.kind is ArgKind.SPACE:
            continue
        value = args.get(key, spec.default)
        shown = str(value) if spec.kind is ArgKind.CHOICE else _dim_value(value)
        kwargs.append((key, shown))
    return Call(kind.class_name, (size_code(args.get("space", DIM_SPACE)),), tuple(kwargs))


def _operator_constructor(block, kind: BlockKind) -> Call:
    """A torch module without bias: K(e) is linear, and K^T(e) its adjoint (`adjoint`)."""
    args = dict(block.args)
    sizes = (size_code(args["from"]), size_code(args["to"]))
    if "kernel" not in args:
        return Call(kind.class_name, sizes, (("bias", False),))
    kernel = _dim_value(args["kernel"])
    padding = kernel // 2 if isinstance(kernel, int) else Code(f"({kernel}) // 2")
    return Call(kind.class_name, (*sizes, kernel), (("padding", padding), ("bias", False)))


def _custom_value(v) -> Value:
    if isinstance(v, (str, bool)) or v is None:
        return v
    v = sympy.sympify(v)
    if DIM in v.free_symbols:
        return _dim_value(v)
    return Code(literal(v))


def _custom_constructor(block, kind: BlockKind) -> Call:
    kwargs = tuple(
        (k, _custom_value(v))
        for k, v in sorted(dict(block.args).items())
        if k not in kind.meta_args
    )
    return Call(Call("_load_class", (block.target,)), (DIM_CODE,), kwargs)


@dataclass(frozen=True, slots=True)
class BlockKind:
    """Everything the pipeline knows of one block kind (one entry of `BLOCK_KINDS`)."""

    name: str
    class_name: str  # the class the generated file defines ("" when the user brings it)
    template: str  # the file under templates/blocks/ it copies (or a name for `source`)
    layout: Layout | None  # None: chosen by a `layout=` argument (custom)
    args: dict[str, Arg] = field(default_factory=dict)
    # Whether the kind holds W2·σ(W1 z + b), and why: (True | False | None, reason).
    two_layer: Callable[[BlockKind, dict], tuple[bool | None, str]] = _two_layer_always
    doc: str = ""
    helpers: tuple[str, ...] = ()  # other sources it needs, e.g. _activation.py
    imports: frozenset[Import] = frozenset()
    constructor: Callable[[object, BlockKind], Call] = _keyword_constructor
    dim_checks: Callable[[object, BlockKind], list[DimCheck]] = _fractional_dims
    # The test width must be a multiple of this argument's value (transformer heads).
    test_dim_multiple_of: str | None = None
    # custom: a first positional argument "pkg.module:Class", keys of its own (layout,
    # universal), every other key passed through to the user's class.
    takes_target: bool = False
    meta_args: dict[str, Arg] = field(default_factory=dict)
    source: str | None = None  # inline source instead of templates/blocks/<template>
    # An operator between two spaces (`from=`, `to=`): `K^T(e)`, its adjoint sharing its
    # weight, is this format string over {block} (the module) and {x} (the argument).
    adjoint: str | None = None

    def source_text(self) -> str:
        if self.source is not None:
            return self.source.strip()
        return resource_path("templates/blocks", self.template).read_text(encoding="utf-8").strip()

    def fact(self, args: dict) -> tuple[bool | None, str]:
        return self.two_layer(self, args)


_ACT = Arg(ArgKind.CHOICE, "relu", tuple(ACTIVATIONS))
# The space a block maps to itself: `mlp(space=m)` acts on a state declared `y: m`.
_SPACE = Arg(ArgKind.SPACE, DIM_SPACE)

BLOCK_KINDS: dict[str, BlockKind] = {
    "mlp": BlockKind(
        "mlp",
        "MLP",
        "mlp.py",
        Layout.VECTOR,
        {
            "hidden": Arg(ArgKind.INT, "dim"),
            "act": _ACT,
            "norm": Arg(ArgKind.CHOICE, "none", ("none", "layer")),
            "space": _SPACE,
        },
        two_layer=_two_layer_by_activation,
        doc="Linear-act-Linear",
        helpers=("_activation.py",),
    ),
    "linear": BlockKind(
        "linear",
        "LinearBlock",
        "linear.py",
        Layout.VECTOR,
        {"space": _SPACE},
        two_layer=_two_layer_never,
        doc="one Linear",
    ),
    # Operators between two spaces, with their adjoints: `K(x)` maps the space `from` to
    # `to`, and `K^T(y)` maps back with the same weight (PDHG's K and K^T).
    "operator": BlockKind(
        "operator",
        "nn.Linear",
        "",
        Layout.VECTOR,
        {"from": _SPACE, "to": _SPACE},
        two_layer=_two_layer_never,
        doc="a linear map without bias between two spaces",
        constructor=_operator_constructor,
        dim_checks=lambda block, kind: [],
        source="",
        adjoint="torch.matmul({x}, {block}.weight)",
    ),
    "conv_operator": BlockKind(
        "conv_operator",
        "nn.Conv2d",
        "",
        Layout.IMAGE,
        {"from": _SPACE, "to": _SPACE, "kernel": Arg(ArgKind.INT, 3, odd=True)},
        two_layer=_two_layer_never,
        doc="a convolution without bias between two spaces",
        constructor=_operator_constructor,
        dim_checks=lambda block, kind: [],
        source="",
        imports=frozenset({Import.FUNCTIONAL}),  # conv_transpose2d
        adjoint="F.conv_transpose2d({x}, {block}.weight, padding={block}.padding)",
    ),
    "conv": BlockKind(
        "conv",
        "ConvBlock",
        "conv.py",
        Layout.IMAGE,
        {
            "hidden": Arg(ArgKind.INT, "dim"),
            "kernel": Arg(ArgKind.INT, 3, odd=True),
            "act": _ACT,
            "space": _SPACE,
        },
        two_layer=_two_layer_by_activation,
        doc="pre-activation BN-act-Conv-BN-act-Conv",
        helpers=("_activation.py",),
    ),
    "convnext": BlockKind(
        "convnext",
        "ConvNeXtBlock",
        "convnext.py",
        Layout.IMAGE,
        {"kernel": Arg(ArgKind.INT, 7, odd=True), "expand": Arg(ArgKind.INT, 4), "space": _SPACE},
        doc="depthwise conv, LayerNorm, 1x1, GELU, 1x1",
    ),
    "transformer": BlockKind(
        "transformer",
        "TransformerBlock",
        "transformer.py",
        Layout.SEQUENCE,
        {"heads": Arg(ArgKind.INT, 1), "expand": Arg(ArgKind.INT, 4), "space": _SPACE},
        doc="Attn(z) + MLP(z + Attn(z)) with pre-norm",
        imports=frozenset({Import.FUNCTIONAL}),  # scaled_dot_product_attention
        dim_checks=_heads_divide_dim,
        test_dim_multiple_of="heads",
    ),
    "custom": BlockKind(
        "custom",
        "",
        "custom.py",
        None,
        two_layer=_two_layer_declared,
        doc="user class Class(dim, **kwargs)",
        imports=frozenset({Import.IMPORTLIB}),
        constructor=_custom_constructor,
        dim_checks=lambda block, kind: [],
        takes_target=True,
        meta_args={
            "layout": Arg(ArgKind.CHOICE, "vector", tuple(Layout)),
            "universal": Arg(ArgKind.CHOICE, "unknown", ("yes", "no", "unknown")),
        },
    ),
}

# Keys a `custom(...)` block understands itself; every other key goes to the user's class.
CUSTOM_META_ARGS = BLOCK_KINDS["custom"].meta_args


@dataclass(frozen=True, slots=True)
class ElementwiseMap:
    """A fixed elementwise map (a proximal operator): `torch_name(tensor, *scalars)`."""

    name: str
    scalar_args: tuple[str, ...]
    emit: str  # format string over {x} and the scalar argument names
    imports: tuple[Import, ...] = ()
    # With learnable params in scalar arguments (LISTA's thresholds), those arguments are
    # tensors: (the tensor arguments, the format string, the kernels it launches).
    tensor_emits: tuple[tuple[frozenset[str], str, int], ...] = ()

    def emit_for(self, tensors: frozenset[str]) -> tuple[str, tuple[Import, ...], int]:
        """The format string, its imports and its kernels when `tensors` are tensors."""
        if not tensors:
            return self.emit, self.imports, 1
        template, kernels = next((t, n) for args, t, n in self.tensor_emits if args == tensors)
        return template, (), kernels


ELEMENTWISE_MAPS: dict[str, ElementwiseMap] = {
    "relu": ElementwiseMap("relu", (), "torch.relu({x})"),
    "sigmoid": ElementwiseMap("sigmoid", (), "torch.sigmoid({x})"),
    "tanh": ElementwiseMap("tanh", (), "torch.tanh({x})"),
    # F.softshrink takes a float threshold only: a tensor one shrinks by subtracting the
    # clamped value (e - clamp(e, -lam, lam) is e - lam, 0 or e + lam).
    "softshrink": ElementwiseMap(
        "softshrink",
        ("lam",),
        "F.softshrink({x}, {lam})",
        (Import.FUNCTIONAL,),
        ((frozenset({"lam"}), "{x} - torch.clamp({x}, -{lam}, {lam})", 2),),
    ),
    # torch.clamp takes two numbers or two tensors, not one of each.
    "clamp": ElementwiseMap(
        "clamp",
        ("lo", "hi"),
        "torch.clamp({x}, {lo}, {hi})",
        (),
        (
            (frozenset({"lo", "hi"}), "torch.clamp({x}, {lo}, {hi})", 1),
            (frozenset({"lo"}), "torch.clamp({x}, min={lo}).clamp(max={hi})", 2),
            (frozenset({"hi"}), "torch.clamp({x}, min={lo}).clamp(max={hi})", 2),
        ),
    ),
}


def helper_source(name: str, activations: frozenset[str] | None = None) -> str:
    """A source several kinds share (templates/blocks/<name>), e.g. `_activation`; its
    table of activations cut down to `activations` (those the file's blocks use) when
    given, so that a file carries only what it uses."""
    text = resource_path("templates/blocks", name).read_text(encoding="utf-8").strip()
    if activations is None:
        return text
    kept = [
        line
        for line in text.splitlines()
        if not (entry := _TABLE_ENTRY.match(line)) or entry.group(1) in activations
    ]
    return "\n".join(kept)


# One row of the activation table of templates/blocks/_activation.py: `"relu": nn.ReLU,`.
_TABLE_ENTRY = re.compile(r'^\s+"(\w+)": nn\.\w+,$')


def two_layer_fact(kind: BlockKind, args: dict[str, object]) -> tuple[bool | None, str]:
    """Whether a block of `kind` with `args` holds the two-layer substructure, and why."""
    return kind.fact(args)


# ---------------------------------------------------------------- solvers and backward modes
@dataclass(frozen=True, slots=True)
class SolverKind:
    """A fixed-point solver of implicit layers: its options and their defaults."""

    name: str
    options: dict[str, float | int]


@dataclass(frozen=True, slots=True)
class BackwardKind:
    """A backward mode; `inherits` names the solver options an adjoint solve takes over
    unless the mode sets them (`backward implicit` solves with the solver's max_iter, tol)."""

    name: str
    options: dict[str, float | int | None]
    inherits: tuple[str, ...] = ()
    # A mode of explicit rules (`reversible`), which the solver runtime never sees.
    explicit_only: bool = False


SOLVER_KINDS: dict[str, SolverKind] = {
    # `iterations=n`: exactly n steps, no tolerance test (the exportable path).
    "fixed_point": SolverKind("fixed_point", {"max_iter": 50, "tol": 1e-4, "iterations": None}),
    "anderson": SolverKind("anderson", {"m": 5, "max_iter": 50, "tol": 1e-4}),
}
DEFAULT_SOLVER = "anderson"
BACKWARD_KINDS: dict[str, BackwardKind] = {
    "implicit": BackwardKind("implicit", {"max_iter": None, "tol": None}, ("max_iter", "tol")),
    "phantom": BackwardKind("phantom", {"steps": 5}),
    "unroll": BackwardKind("unroll", {}),
    # Explicit rules only: layers undone in backward from the next layer's slots
    # (optgen.analysis.reversible), so that a training step's memory does not grow with depth.
    "reversible": BackwardKind("reversible", {}, explicit_only=True),
}
REVERSIBLE = "reversible"
DEFAULT_BACKWARD = "implicit"
INTEGER_OPTIONS = frozenset({"max_iter", "m", "steps", "iterations"})


# The smallest relative residual a float32 solve reaches reliably (float32 resolves about
# 1.2e-7 relative, and a residual is a ratio of norms of differences): tolerances below it
# are met in float64 only.
FLOAT32_TOLERANCE_FLOOR = 1e-6


def tolerances_below_float32(net) -> list[tuple[str, float, object]]:
    """(role, tol, span) of each solve of `net` that asks more than float32 can give."""
    found = []
    solver = solver_config(net.solver)
    backward = backward_config(net.backward, solver)
    for role, options, spec in (
        ("solver", solver, net.solver),
        ("backward", backward, net.backward),
    ):
        tol = options.get("tol")
        if tol is not None and tol < FLOAT32_TOLERANCE_FLOOR:
            found.append((role, tol, spec.span if spec is not None else net.span))
    return found


def solver_config(spec) -> dict:
    """The solver of an implicit network as the generated module's `solver` dict."""
    if spec is None:
        return {"name": DEFAULT_SOLVER, **SOLVER_KINDS[DEFAULT_SOLVER].options}
    return {"name": spec.name, **dict(spec.options)}


def backward_config(spec, solver: dict) -> dict:
    """The backward mode as the module's `backward` dict (inherited options filled in)."""
    kind = BACKWARD_KINDS[spec.name if spec is not None else DEFAULT_BACKWARD]
    given = dict(spec.options) if spec is not None else {}
    inherited = {key: solver[key] for key in kind.inherits if key in solver}
    return {"name": kind.name, **inherited, **given}
