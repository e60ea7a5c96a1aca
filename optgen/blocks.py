"""The built-in block kinds and elementwise maps, each with its facts in one entry.

A block kind says which input layout it takes, which arguments it accepts, whether it
holds the two-layer substructure W2·σ(W1 z + b) of the universality theorem, and the
class that implements it in the generated file (`templates/blocks/<file>`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

# Attributes of nn.ModuleDict (torch 2.13): a block with one of these names could not be a
# key of the generated `module.blocks`.
MODULE_DICT_ATTRIBUTES = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "clear",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "items",
        "keys",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "pop",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "update",
        "values",
        "xpu",
        "zero_grad",
    }
)

LAYOUTS = {
    "vector": "[..., dim]",
    "image": "[N, dim, H, W]",
    "sequence": "[N, L, dim]",
}


@dataclass(frozen=True, slots=True)
class Arg:
    """One keyword argument of a block kind: `kind` is "int" (an expression in dim) or "choice"."""

    kind: str
    default: object
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BlockKind:
    name: str
    class_name: str
    template: str
    layout: str | None
    args: dict[str, Arg] = field(default_factory=dict)
    # Whether the kind holds W2·σ(W1 z + b); None: depends on the activation or unknown.
    two_layer: bool | None = True
    doc: str = ""


BLOCK_KINDS: dict[str, BlockKind] = {
    "mlp": BlockKind(
        "mlp",
        "MLP",
        "mlp.py",
        "vector",
        {
            "hidden": Arg("int", "dim"),
            "act": Arg("choice", "relu", tuple(ACTIVATIONS)),
            "norm": Arg("choice", "none", ("none", "layer")),
        },
        two_layer=None,
        doc="Linear-act-Linear",
    ),
    "linear": BlockKind(
        "linear", "LinearBlock", "linear.py", "vector", {}, two_layer=False, doc="one Linear"
    ),
    "conv": BlockKind(
        "conv",
        "ConvBlock",
        "conv.py",
        "image",
        {
            "hidden": Arg("int", "dim"),
            "kernel": Arg("int", 3),
            "act": Arg("choice", "relu", tuple(ACTIVATIONS)),
        },
        two_layer=None,
        doc="pre-activation BN-act-Conv-BN-act-Conv",
    ),
    "convnext": BlockKind(
        "convnext",
        "ConvNeXtBlock",
        "convnext.py",
        "image",
        {"kernel": Arg("int", 7), "expand": Arg("int", 4)},
        two_layer=True,
        doc="depthwise conv, LayerNorm, 1x1, GELU, 1x1",
    ),
    "transformer": BlockKind(
        "transformer",
        "TransformerBlock",
        "transformer.py",
        "sequence",
        {"heads": Arg("int", 1), "expand": Arg("int", 4)},
        two_layer=True,
        doc="Attn(z) + MLP(z + Attn(z)) with pre-norm",
    ),
    "custom": BlockKind(
        "custom", "", "custom.py", None, {}, two_layer=None, doc="user class Class(dim, **kwargs)"
    ),
}

# Keys a `custom(...)` block understands itself; every other key goes to the user's class.
CUSTOM_META_ARGS = {
    "layout": Arg("choice", "vector", tuple(LAYOUTS)),
    "universal": Arg("choice", "unknown", ("yes", "no", "unknown")),
}


@dataclass(frozen=True, slots=True)
class ElementwiseMap:
    """A fixed elementwise map (a proximal operator): `torch_name(tensor, *scalars)`."""

    name: str
    scalar_args: tuple[str, ...]
    emit: str  # format string over {x} and the scalar argument names


ELEMENTWISE_MAPS: dict[str, ElementwiseMap] = {
    "relu": ElementwiseMap("relu", (), "torch.relu({x})"),
    "sigmoid": ElementwiseMap("sigmoid", (), "torch.sigmoid({x})"),
    "tanh": ElementwiseMap("tanh", (), "torch.tanh({x})"),
    "softshrink": ElementwiseMap("softshrink", ("lam",), "F.softshrink({x}, {lam})"),
    "clamp": ElementwiseMap("clamp", ("lo", "hi"), "torch.clamp({x}, {lo}, {hi})"),
}


def two_layer_fact(kind: BlockKind, args: dict[str, object]) -> tuple[bool | None, str]:
    """Whether a block of `kind` with `args` holds the two-layer substructure, and why."""
    if kind.name == "custom":
        declared = args.get("universal", "unknown")
        if declared == "yes":
            return True, "custom block declared universal=yes"
        if declared == "no":
            return False, "custom block declared universal=no"
        return (
            None,
            "custom block: its structure is unknown (declare universal=yes if it holds W2·σ(W1 z + b))",
        )
    if kind.two_layer is not None:
        if kind.two_layer:
            return True, f"{kind.name} holds W2·σ(W1 z + b) ({kind.doc})"
        return False, f"{kind.name}() has no two-layer substructure W2·σ(W1 z + b)"
    act = str(args.get("act", "relu"))
    if act in POLYNOMIAL_ACTIVATIONS:
        return False, f"{kind.name} with act={act} is polynomial: no non-polynomial activation"
    return True, f"{kind.name} holds W2·σ(W1 z + b) with σ = {act}"
