"""Every explicit catalog module under torch.compile(fullgraph=True) and torch.export, in
autocast, and on channels_last inputs (issue 7, points 4-5; the quick form CI runs)."""

import pytest
import torch
from conftest import construct, load_generated

EXPLICIT = {
    "gd": ("GD", (4, 8)),
    "heavy_ball": ("HeavyBall", (4, 8)),
    "nesterov": ("Nesterov", (4, 8)),
    "nesterov_k": ("NesterovK", (4, 8)),
    "dense": ("Dense", (4, 8)),
    "ladmm": ("LADMM", (4, 8)),
    "heavy_ball_channel": ("HeavyBallChannel", (4, 8)),
    "lista": ("Lista", (4, 8)),
    "nesterov_conv": ("NesterovConv", (2, 8, 5, 5)),
    "nesterov_convnext": ("NesterovConvnext", (2, 8, 6, 6)),
    "nesterov_transformer": ("NesterovTransformer", (2, 3, 8)),
    "fista_restart": ("FistaRestart", (4, 8)),  # per-sample dot and sign (language.md 5.6)
    # A dual state of its own size, K and K^T (language.md 4.1.1)
    "pdhg": ("PDHG", (4, 8)),
    "learned_primal_dual": ("LearnedPrimalDual", (4, 8)),
}


def make(stem: str):
    class_name, shape = EXPLICIT[stem]
    torch.manual_seed(0)
    module = construct(getattr(load_generated(stem), class_name), 8, depth=3)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    return module, x


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(EXPLICIT))
def test_torch_compile_fullgraph_matches_eager_forward_and_backward(stem):
    torch._dynamo.reset()
    module, x = make(stem)
    x = x.requires_grad_()
    eager = module(x)
    (grad_eager,) = torch.autograd.grad(eager.square().sum(), x)
    compiled = torch.compile(module, fullgraph=True)
    out = compiled(x)
    (grad_compiled,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_compiled, grad_eager, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stem", sorted(EXPLICIT))
def test_torch_export_matches_eager(stem):
    module, x = make(stem)
    module.eval()
    program = torch.export.export(module, (x,))
    torch.testing.assert_close(program.module()(x), module(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "stem",
    [
        "nesterov",
        "ladmm",
        "nesterov_conv",
        "nesterov_transformer",
        "lista",
        "fista_restart",
        "learned_primal_dual",
    ],
)
def test_autocast_runs_and_stays_close_to_float32(stem, dtype):
    module, x = make(stem)
    reference = module(x)
    with torch.autocast("cpu", dtype=dtype):
        out = module(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out.float() - reference).abs().max() < 0.1 * reference.abs().max() + 0.1


@pytest.mark.parametrize("stem", ["nesterov_conv", "nesterov_convnext"])
def test_channels_last_inputs_give_the_same_result(stem):
    module, x = make(stem)
    module = module.to(memory_format=torch.channels_last)
    out = module(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, module(x.contiguous()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stem", sorted(EXPLICIT))
def test_forward_and_backward_stay_on_the_modules_device(stem):
    # Without a GPU, the meta device stands in for "not the CPU": a tensor the generated
    # code created without the input's device (torch.zeros(n), torch.eye(n), ...) would
    # land on the CPU, and meeting a meta tensor raises (0-dim CPU tensors are the one
    # exception torch allows, as it does on CUDA).
    module, x = make(stem)
    module = module.to("meta")
    x = x.to("meta").requires_grad_()
    out = module(x)
    assert out.device.type == "meta" and out.shape == x.shape
    out.sum().backward()
    assert x.grad.device.type == "meta"
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(grad.device.type == "meta" for grad in grads)
