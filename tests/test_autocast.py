"""Every rule and model runs under autocast, learnable steps included (issue 25, point 4).

Under `torch.autocast` a block's matmuls and convolutions run in bfloat16 or float16 while
the module's parameters stay float32. A learnable step used to be a float32 tensor of
shape [1]: it promoted bfloat16 states to float32, and `torch.lerp` (which wants its start,
end and weight in one dtype) then failed ("expected dtype float for `end`"). Each learnable
value is now cast to the states' dtype where it is computed. Checked here over the catalog,
rules whose steps are learnable scalars, per-layer and per-channel values in every position
a fused op can put them, random valid rules with learnable params, and models whose stems
hand their stages reduced-precision tensors.
"""

import random
import warnings
from pathlib import Path

import pytest
import torch
from conftest import construct
from fuzzing import generate_program

import optgen

ROOT = Path(__file__).resolve().parent.parent
DTYPES = [torch.bfloat16, torch.float16]
SHAPES = {"vector": (3, 8), "image": (2, 8, 4, 4), "sequence": (2, 3, 8)}

LEARNABLE_RULES = """
network HeavyBallLearnable {
    state x
    param t = 0.5 learnable positive
    param beta = 0.5 learnable in [0, 1)
    block T = mlp()
    layers 3
    update { x+ = x - t*T(x) + beta*(x - x-) }
}
network NesterovLearnable {
    state x, y
    param t = 0.5 learnable positive
    param beta = 0.9 learnable in [0, 1)
    block T = conv()
    layers 3
    update { x+ = y - t*T(y); y = x+ + beta*(x+ - x) }
}
network NesterovPerLayer {
    state x, y
    param t = 0.5 learnable positive per_layer
    param beta = 0.9 learnable in [0, 1) per_layer
    block T = conv()
    layers 3
    update { x+ = y - t*T(y); y = x+ + beta*(x+ - x) }
}
network NesterovPerChannel {
    state x, y
    param t = 0.5 learnable positive per_channel
    param beta = 0.9 learnable in [0, 1) per_channel
    block T = conv()
    layers 3
    update { x+ = y - t*T(y); y = x+ + beta*(x+ - x) }
}
network MomentumReversible {
    state x, v
    init v = 0
    param t = 0.5 learnable positive
    param beta = 0.9
    block T = mlp()
    layers 3
    backward reversible
    update {
        v+ = beta*v - t*T(x)
        x+ = x + v+
    }
}
network NesterovCheckpointed {
    state x, y
    param t = 0.5 learnable positive
    param beta = 0.9 learnable in [0, 1)
    block T = mlp()
    layers 4
    checkpoint 2
    update { x+ = y - t*T(y); y = x+ + beta*(x+ - x) }
}
network ShiftedRange {
    state x
    param c = -0.2 learnable in (-1, 1)
    block T = mlp()
    layers 3
    update { x+ = x - 0.5*T(x) + c*x }
}
network Relaxed {
    state x
    param a = 0.5 learnable in (0, 1)
    block T = mlp()
    layers 3
    update { x+ = (1 - a)*x + a*T(x) }
}
"""

LEARNABLE_MODEL = """
network Hb {
    state x
    param t = 0.5 learnable positive
    param beta = 0.5 learnable in [0, 1)
    block T = conv(hidden=dim)
    update { x+ = x - t*T(x) + beta*(x - x-) }
}
model HbNet {
    input [3, 16, 16]
    stem conv(out=8)
    stage Hb(dim=8, depth=2)
    down conv(out=16) carry states
    stage Hb(dim=16, depth=2)
    head classifier(classes=4)
}
"""


def _classes(text: str, name: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optgen.OptgenWarning)
        return optgen.loads(text, name)


def _input(cls, dtype: torch.dtype) -> torch.Tensor:
    torch.manual_seed(0)
    if hasattr(cls, "INPUT_SIZE"):
        return torch.randn(2, *cls.INPUT_SIZE).to(dtype)
    # The layout its docstring states ("Input and output layout: [N, dim, H, W].").
    layout = next(k for k, text in LAYOUT_TEXT.items() if text in cls.__doc__)
    return torch.randn(SHAPES[layout]).to(dtype)


LAYOUT_TEXT = {"vector": "[..., dim]", "image": "[N, dim, H, W]", "sequence": "[N, L, dim]"}


def _runs_under_autocast(module, cls, dtype: torch.dtype, input_dtype: torch.dtype):
    """The module's output and the gradients of its parameters under autocast, finite."""
    module.zero_grad()
    x = _input(cls, input_dtype)
    with torch.autocast("cpu", dtype=dtype):
        out = module(x)
    assert torch.isfinite(out.float()).all()
    if not out.requires_grad:  # a random rule whose output ignores its blocks and params
        return out
    out.float().square().mean().backward()
    # (A block that never reaches the output, LADMM's G at the last layer, has none.)
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return out


def _check(cls, module=None) -> None:
    module = module or (cls() if hasattr(cls, "INPUT_SIZE") else cls(8))
    reference = module(_input(cls, torch.float32)).detach()
    for dtype in DTYPES:
        # A float32 input (the usual case: autocast casts inside the blocks) and an input
        # already in the reduced dtype (a stem's output under autocast).
        for input_dtype in (torch.float32, dtype):
            out = _runs_under_autocast(module, cls, dtype, input_dtype)
            close = torch.allclose(out.float(), reference, rtol=0.1, atol=0.1)
            assert close, f"{cls.__name__}: {dtype} differs from float32"


@pytest.fixture(scope="module")
def learnable():
    return _classes(LEARNABLE_RULES, "learnable.opt")


@pytest.mark.parametrize(
    "name",
    [
        "HeavyBallLearnable",
        "NesterovLearnable",
        "NesterovPerLayer",
        "NesterovPerChannel",
        "MomentumReversible",
        "NesterovCheckpointed",
        "ShiftedRange",
        "Relaxed",
    ],
)
def test_learnable_steps_run_under_autocast(learnable, name):
    _check(learnable[name])


def test_a_model_with_learnable_steps_runs_under_autocast():
    _check(_classes(LEARNABLE_MODEL, "hb_net.opt")["HbNet"])


def test_the_learnable_value_keeps_the_states_dtype(learnable):
    # The states stay in the input's dtype: bfloat16 in, bfloat16 out.
    cls = learnable["NesterovPerChannel"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cls(8)(_input(cls, torch.bfloat16))
    assert out.dtype == torch.bfloat16


CATALOG = sorted((ROOT / "examples").glob("*.opt"))


@pytest.mark.parametrize("path", CATALOG, ids=lambda p: p.stem)
def test_every_catalog_rule_runs_under_autocast(path):
    for cls in _classes(path.read_text(), path.name).values():
        module = construct(cls, 8)
        if hasattr(module, "solver"):
            # Reduced precision cannot meet the solver's 1e-6 default: loosen it.
            module.solver = {**module.solver, "tol": 1e-2}
            module.on_failure = "warn"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for dtype in DTYPES:
                _runs_under_autocast(module, cls, dtype, dtype)


def test_random_rules_with_learnable_params_run_under_autocast():
    rng = random.Random(25)
    programs, count = [], 0
    while count < 12:
        text = generate_program(rng)
        if "learnable" not in text:
            continue
        rest = text.split("{", 1)[1]
        programs.append(f"network Auto{count} {{{rest}")
        count += 1
    checked = 0
    for text in programs:
        try:
            classes = _classes(text, "auto.opt")
        except optgen.OptgenError:
            continue  # a generated rule the compiler refuses: not what this test is about
        for cls in classes.values():
            module = cls(8)
            if hasattr(module, "solver"):
                continue
            for dtype in DTYPES:
                _runs_under_autocast(module, cls, dtype, dtype)
            checked += 1
    assert checked >= 6
