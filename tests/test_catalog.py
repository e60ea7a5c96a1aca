"""Every catalog module equals a plain hand-written implementation of its rule."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import load_generated

torch.set_default_dtype(torch.float32)
DIM = 6


def vector_input():
    return torch.randn(5, DIM, generator=torch.Generator().manual_seed(1))


def gd(m, x):
    for k in range(m.depth):
        x = x - 1.0 * m.blocks["T"][k](x)
    return x


def heavy_ball(m, x):
    t, beta = 0.5, 0.5
    x_prev = x
    for k in range(m.depth):
        x_next = x - t * m.blocks["T"][k](x) + beta * (x - x_prev)
        x_prev, x = x, x_next
    return x


def nesterov_with(beta_of):
    def run(m, x):
        t = F.softplus(m.t_raw)
        y = x
        for k in range(m.depth):
            beta = beta_of(k)
            x_next = y - t * m.blocks["T"][k](y)
            y = x_next + beta * (x_next - x)
            x = x_next
        return x

    return run


def dense(m, x):
    t = 0.5
    x0 = x
    gs = []
    for k in range(m.depth):
        gs.append(m.blocks["T"][k](x))
        x = x0 - t * sum(gs)
    return x


def fista(m, x):
    t, tk = 0.5, 1.0
    y = x
    for k in range(m.depth):
        tk_next = (1 + math.sqrt(1 + 4 * tk**2)) / 2
        x_next = y - t * m.blocks["T"][k](y)
        y = x_next + (tk - 1) / tk_next * (x_next - x)
        x, tk = x_next, tk_next
    return x


def adams_bashforth3(m, x):
    t = 0.1
    gs = []
    for k in range(m.depth):
        gs.append(m.blocks["T"][k](x))
        g1, g2 = gs[max(k - 1, 0)], gs[max(k - 2, 0)]
        x = x - t * (23 / 12 * gs[k] - 16 / 12 * g1 + 5 / 12 * g2)
    return x


def ladmm(m, x):
    t, rho = 0.5, 0.5
    z = x
    lam = torch.zeros_like(x)
    for k in range(m.depth):
        x_next = x - t * (m.blocks["F"][k](x) + lam + rho * (x - z))
        z_next = z - t * (m.blocks["G"][k](z) - lam - rho * (x_next - z))
        lam = lam + rho * (x_next - z_next)
        x, z = x_next, z_next
    return x


def heavy_ball_channel(m, x):
    t, beta = F.softplus(m.t_raw), 0.5  # t: one step per channel, shape [dim]
    x_prev = x
    for k in range(m.depth):
        x_next = x - t * m.blocks["T"][k](x) + beta * (x - x_prev)
        x_prev, x = x, x_next
    return x


def lista(m, x):
    t = 0.1
    lam = F.softplus(m.lam_raw)  # [depth, dim]: a threshold per layer and channel
    for k in range(m.depth):
        z = x - t * m.blocks["T"][k](x)
        x = torch.sign(z) * torch.clamp(z.abs() - t * lam[k], min=0)
    return x


CASES = {
    "gd": ("GD", gd, vector_input),
    "heavy_ball": ("HeavyBall", heavy_ball, vector_input),
    "nesterov": ("Nesterov", nesterov_with(lambda k: 0.9), vector_input),
    "nesterov_k": ("NesterovK", nesterov_with(lambda k: k / (k + 3)), vector_input),
    "dense": ("Dense", dense, vector_input),
    "fista": ("Fista", fista, vector_input),
    "adams_bashforth3": ("AdamsBashforth3", adams_bashforth3, vector_input),
    "ladmm": ("LADMM", ladmm, vector_input),
    "heavy_ball_channel": ("HeavyBallChannel", heavy_ball_channel, vector_input),
    "lista": ("Lista", lista, vector_input),
    "nesterov_conv": (
        "NesterovConv",
        nesterov_with(lambda k: 0.9),
        lambda: torch.randn(2, DIM, 5, 5, generator=torch.Generator().manual_seed(1)),
    ),
    "nesterov_convnext": (
        "NesterovConvnext",
        nesterov_with(lambda k: 0.9),
        lambda: torch.randn(2, DIM, 8, 8, generator=torch.Generator().manual_seed(1)),
    ),
    "nesterov_transformer": (
        "NesterovTransformer",
        nesterov_with(lambda k: 0.9),
        lambda: torch.randn(2, 4, DIM, generator=torch.Generator().manual_seed(1)),
    ),
}


@pytest.mark.parametrize("stem", sorted(CASES))
def test_generated_module_equals_the_hand_written_rule(stem):
    class_name, reference, make_input = CASES[stem]
    torch.manual_seed(0)
    # float64, so that the comparison measures the rule and not float32 rounding of fused ops.
    module = getattr(load_generated(stem), class_name)(DIM).double()
    x = make_input().double()
    with torch.no_grad():
        # A non-trivial learnable step, so that reading it wrongly would show.
        if hasattr(module, "t_raw"):
            module.t_raw.fill_(math.log(math.expm1(0.3)))
        torch.testing.assert_close(module(x), reference(module, x), rtol=1e-6, atol=1e-6)


def test_depth_can_be_overridden_by_the_constructor():
    module = load_generated("nesterov_k").NesterovK(DIM, depth=3)
    assert len(module.blocks["T"]) == 3
    assert module.depth == 3
    x = vector_input()
    with torch.no_grad():
        torch.testing.assert_close(module(x), nesterov_with(lambda k: k / (k + 3))(module, x))


def test_fifty_training_steps_lower_the_loss_of_nesterov():
    torch.manual_seed(0)
    module = load_generated("nesterov").Nesterov(8, depth=4)
    x = torch.randn(64, 8)
    target = torch.sin(2 * x) + 0.5 * x.roll(1, dims=1)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = F.mse_loss(module(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
