"""Issue 16, continued: coefficients past float32, the FLOPs of several models, long sums
of params, and what the 10,000-case fuzz campaign found (docs/robustness.md)."""

import types

import pytest

import optgen

pytestmark = pytest.mark.filterwarnings("ignore::optgen.OptgenWarning")


def rule(params: str, update: str, layers: str = "") -> str:
    return (
        f"network A {{\n    state x\n{params}    block T = mlp()\n{layers}"
        f"    update {{ {update} }}\n}}\n"
    )


def first_error(text: str) -> tuple[int, int, str]:
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(text, "r.opt")
    first = info.value.diagnostics[0]
    return first["line"], first["col"], first["message"]


def construct(outputs: dict[str, str], name: str = "a.py"):
    module = types.ModuleType(name[:-3])
    exec(compile(outputs[name], name, "exec"), module.__dict__)
    return getattr(module, module.__all__[0])(3)


# ---------------------------------------------------------------- numbers past float32
@pytest.mark.parametrize(
    "params, update, layers, shown",
    [
        # torch.add(x, T_x, alpha=-1e307) on float32: "cannot be converted ... overflow".
        ("    param t = 1e307\n", "x+ = x - t*T(x)", "", "-t is -1e+307"),
        # No number the user wrote is past float32; the product the code computes is.
        ("    param t = 1e20\n", "x+ = x - t*t*T(x)", "", "-t**2 is -1e+40"),
        ("    param t = 1e20 learnable\n", "x+ = x - t*t*T(x)", "", "-t**2 is -1e+40"),
        ("    param t = 1e36*k\n", "x+ = x - t*T(x)", "    layers 400\n", "at layer k=341"),
        ("", "x+ = x - 1e-39*T(x)", "", "underflows a float32"),
        ("    param t = 1e-20\n", "x+ = x - t*t*T(x)", "", "-t**2 is -1e-40"),
    ],
    ids=["literal", "product", "learnable_product", "schedule", "underflow", "tiny_product"],
)
def test_a_coefficient_past_float32_is_a_located_error(params, update, layers, shown):
    text = rule(params, update, layers)
    line, col, message = first_error(text)
    assert (line, col) == (text.split("\n").index(f"    update {{ {update} }}") + 1, 14)
    assert shown in message and "float32" in message, message


def test_a_learnable_param_starting_past_float32_is_located():
    text = rule("    param a = 1e39 learnable\n", "x+ = x - 1e-30*a*T(x)")
    line, col, message = first_error(text)
    assert (line, col) == (3, 5) and "learnable param a starts at 1e+39" in message


@pytest.mark.parametrize(
    "params, update",
    [
        ("    param t = 1e30\n", "x+ = x - 1e-30*t*T(x)"),
        ("    param t = 1e-30\n", "x+ = x - t*T(x)"),
        # log(expm1(1e30)) overflowed at compile time (an internal error).
        ("    param a = 1e30 learnable positive\n", "x+ = x - 1e-30*a*T(x)"),
        ("    param a = 1000*(k+1) learnable positive per_layer\n", "x+ = x - 1e-4*a*T(x)"),
    ],
    ids=["large", "small", "large_positive_start", "large_per_layer_start"],
)
def test_coefficients_inside_float32_compile_and_construct(params, update):
    import torch

    outputs = optgen.compile_source(rule(params, update), "r.opt")
    module = construct(outputs)
    out = module(torch.randn(2, 3))
    assert torch.isfinite(out).all()
    for name, value in module.params().items():
        assert torch.isfinite(value).all(), name
