"""History of locals and sums from any lower bound (language.md section 12)."""

import pytest
import torch
from torch import nn

import optgen
from tests.conftest import load_generated, run_optgen


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """`optgen.loads` writes its packages here: never a stale one of an older optgen."""
    monkeypatch.setenv("OPTGEN_CACHE", str(tmp_path / "cache"))


def network(update: str, params: str = "    param t = 0.1", layers: int = 6, name: str = "A"):
    return f"""network {name} {{
    state x
{params}
    block T = mlp(hidden=dim)
    layers {layers}
    update {{
        {update}
    }}
}}
"""


class Scaled(nn.Module):
    """T(z) = a*z + b: a block whose outputs are easy to follow by hand."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, z):
        return self.a * z + self.b


def with_blocks(module: nn.Module, depth: int) -> nn.Module:
    module.blocks["T"] = nn.ModuleList([Scaled(0.5 + 0.1 * k, 0.01 * k) for k in range(depth)])
    return module.double()


def reference(update, depth: int, x0: torch.Tensor) -> torch.Tensor:
    """Run `update(k, x, history of g)` with g_k = T_k(x_k) kept in a list."""
    blocks = [Scaled(0.5 + 0.1 * k, 0.01 * k) for k in range(depth)]
    x, g = x0, []
    for k in range(depth):
        g.append(blocks[k](x))
        x = update(k, x, g)
    return x


def at(g: list, i: int):
    """g[i], with the language's convention: before layer 0 a local equals its layer-0 value."""
    return g[max(i, 0)]


# ---------------------------------------------------------------- history of locals
def test_previous_values_of_a_local_feed_the_update():
    text = network("g = T(x); x+ = x - t*(3/2*g - 1/2*g-)")
    module = with_blocks(optgen.loads(text, "ab2.opt")["A"](3), 6)
    x0 = torch.randn(2, 3, dtype=torch.float64)
    expected = reference(lambda k, x, g: x - 0.1 * (1.5 * g[k] - 0.5 * at(g, k - 1)), 6, x0)
    torch.testing.assert_close(module(x0), expected, rtol=1e-12, atol=1e-12)


def test_indexed_history_of_a_local_reaches_several_layers_back():
    text = network("g = T(x); x+ = x - t*(g + 2*g[k-1] - g[k-3])", layers=7)
    module = with_blocks(optgen.loads(text, "lags.opt")["A"](3), 7)
    x0 = torch.randn(4, 3, dtype=torch.float64)
    expected = reference(lambda k, x, g: x - 0.1 * (g[k] + 2 * at(g, k - 1) - at(g, k - 3)), 7, x0)
    torch.testing.assert_close(module(x0), expected, rtol=1e-12, atol=1e-12)


def test_the_generated_forward_keeps_the_history_by_rotation():
    text = open(load_generated("adams_bashforth3").__file__).read()
    assert "if k == 0:\n                g_prev, g_prev2 = g, g" in text
    assert "g_prev2, g_prev = g_prev, g" in text
    forward = text.split("def forward(self, x")[1]
    calls = [line for line in forward.splitlines() if "T(" in line and "#" not in line]
    assert calls == ["            g = T(x)"]  # one block call per layer


def test_the_certificate_reads_the_history_of_a_local_as_the_block_at_earlier_iterates():
    (cert,) = optgen.check_source(open("examples/adams_bashforth3.opt").read(), "ab3.opt")
    assert cert["rho"] == [0.0, 0.0, -1.0, 1.0]  # z^3 - z^2
    t = 0.1
    assert cert["sigma"]["T"] == pytest.approx([5 / 12 * t, -16 / 12 * t, 23 / 12 * t, 0.0])
    assert cert["zero_stable"] is True and cert["consistent"] is True
    assert cert["step"] == pytest.approx(t)
    assert cert["universal"]["guaranteed"] is True


def test_a_local_that_holds_a_sum_has_no_history_in_the_theory():
    text = network("s = sum(i = 0..k, x[i]); g = T(x); x+ = x - t*g + t*s-")
    (cert,) = optgen.check_source(text, "r.opt")
    assert cert["universal"]["guaranteed"] is None
    assert "outside the theory" in " ".join(cert["universal"]["reasons"])


# ---------------------------------------------------------------- sums from any lower bound
def test_a_sum_from_a_later_layer_starts_there():
    text = network("g = T(x); x+ = x[0] - t*sum(i = 2..k, g[i])")
    module = with_blocks(optgen.loads(text, "from2.opt")["A"](3), 6)
    x0 = torch.randn(2, 3, dtype=torch.float64)
    expected = reference(lambda k, x, g: x0 - 0.1 * sum(g[2 : k + 1], torch.zeros_like(x0)), 6, x0)
    torch.testing.assert_close(module(x0), expected, rtol=1e-12, atol=1e-12)


def test_a_sliding_window_sums_the_last_terms_and_is_clipped_at_zero():
    text = network("g = T(x); x+ = x[0] - t*sum(i = k-2..k, g[i])", layers=7)
    module = with_blocks(optgen.loads(text, "window.opt")["A"](3), 7)
    x0 = torch.randn(2, 3, dtype=torch.float64)
    expected = reference(
        lambda k, x, g: x0 - 0.1 * sum(g[max(0, k - 2) : k + 1], torch.zeros_like(x0)), 7, x0
    )
    torch.testing.assert_close(module(x0), expected, rtol=1e-12, atol=1e-12)


def test_a_window_with_coefficients_in_the_index():
    text = network("g = T(x); x+ = x[0] - t*sum(i = k-1..k, (i+1)*g[i] + x[i])", layers=5)
    module = with_blocks(optgen.loads(text, "weighted.opt")["A"](3), 5)
    x0 = torch.randn(2, 3, dtype=torch.float64)
    xs = [x0]

    def update(k, x, g):
        terms = [(i + 1) * g[i] + xs[i] for i in range(max(0, k - 1), k + 1)]
        xs.append(x0 - 0.1 * sum(terms, torch.zeros_like(x0)))
        return xs[-1]

    torch.testing.assert_close(module(x0), reference(update, 5, x0), rtol=1e-12, atol=1e-12)


def test_the_generated_window_keeps_only_its_last_terms():
    text = network("g = T(x); x+ = x[0] - t*sum(i = k-2..k, g[i])")
    files = optgen.compile_source(text, "window.opt")
    code = files["a.py"]
    assert "window: list[Tensor] = []" in code
    assert "if len(window) > 3:" in code
    assert "history_sum = history_sum - window.pop(0)" in code


def test_the_certificate_differences_a_window_sum():
    """x+ = x[0] - t*sum(i = k-2..k, g[i]) differenced: x+ = x - t*(g_k - g_{k-3}) from
    layer 3 on, so sigma(1) = 0 there: no positive step, not consistent (honestly)."""
    text = network("g = T(x); x+ = x[0] - t*sum(i = k-2..k, g[i])")
    (cert,) = optgen.check_source(text, "window.opt")
    assert cert["slots"] == ["x", "x-", "x[k-2]", "x[k-3]"]
    assert cert["zero_stable"] is True
    assert cert["consistent"] is False
    assert "at layer k=3" in cert["consistency"]
    assert cert["per_layer_step"][:3] == [0.1, 0.1, 0.1]


def test_the_dense_sum_from_zero_is_unchanged():
    (cert,) = optgen.check_source(open("examples/dense.opt").read(), "dense.opt")
    assert cert["consistent"] is True and cert["rho"] == [-1.0, 1.0]


# ---------------------------------------------------------------- located errors
ERRORS = {
    "local_read_ahead": (
        "g = T(x); x+ = x - t*g[k+1]",
        (7, 32),
        "'g[k+1]' lies in the future: a local has no next value",
    ),
    "local_in_its_own_history": (
        "g = T(x) + g-; x+ = x - t*g",
        (7, 20),
        "local 'g' is used in its own definition",
    ),
    "local_indexed_own_history": (
        "g = T(x) + g[k-1]; x+ = x - t*g",
        (7, 20),
        "local 'g' is used in its own definition",
    ),
    "local_lag_too_deep": (
        "g = T(x); x+ = x - t*g[k-65]",
        (7, 32),
        "lag -65 is too deep",
    ),
    "previous_of_a_param": (
        "x+ = x - t*T(x) + t-*x",
        (7, 27),
        "'t-' : only states and locals have a previous value, and 't' is neither",
    ),
    "sum_bound_ahead": (
        "x+ = x - t*sum(i = k+1..k, x[i])",
        (7, 28),
        "the lower bound 'k+1' of a sum must be an integer or k - m",
    ),
    "sum_bound_scaled": (
        "x+ = x - t*sum(i = 2*k..k, x[i])",
        (7, 28),
        "the lower bound '2*k' of a sum must be an integer or k - m",
    ),
    "sum_window_too_wide": (
        "x+ = x - t*sum(i = k-70..k, x[i])",
        (7, 28),
        "a window of 71 terms is too wide",
    ),
    "sum_negative_bound": (
        "x+ = x - t*sum(i = -1..k, x[i])",
        (7, 28),
        "the lower bound of a sum must be a non-negative integer or k - m",
    ),
}


def error_text(name: str) -> str:
    return network(ERRORS[name][0])


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_each_history_error_is_located(name):
    _, (line, col), message = ERRORS[name]
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(error_text(name), "rule.opt")
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic["line"], diagnostic["col"], diagnostic["message"]) == (line, col, message)


def test_an_equilibrium_has_no_history_of_locals():
    text = """network E {
    state x
    param t = 0.1
    block T = mlp(hidden=dim)
    layers equilibrium
    update {
        g = T(x); x+ = x - t*(g - g-) + t*(input - x)
    }
}
"""
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(text, "eq.opt")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic["message"] == "'g-' has no meaning in an equilibrium network"
    assert diagnostic["line"] == 7


def test_the_cli_prints_every_history_error_and_writes_nothing(tmp_path):
    texts, expected, offset = [], [], 0
    for index, name in enumerate(sorted(ERRORS)):
        text = error_text(name).replace("network A", f"network A{index}")
        _, (line, col), message = ERRORS[name]
        expected.append(f"{tmp_path / 'rule.opt'}:{line + offset}:{col}: error: {message}")
        texts.append(text)
        offset += text.count("\n")
    source = tmp_path / "rule.opt"
    source.write_text("".join(texts))
    out = tmp_path / "out"
    out.mkdir()
    result = run_optgen("compile", str(source), "-o", str(out))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if ": error: " in line] == expected
    assert list(out.iterdir()) == []


def test_a_model_stage_refuses_a_sliding_window_and_keeps_the_history_of_locals():
    stage = """network Stage {{
    state x
    param t = 0.1
    block T = conv(hidden=dim)
    layers 2
    update {{
        g = T(x)
        x+ = {rule}
    }}
}}
model M {{
    input [3, 8, 8]
    stem conv(out=8, kernel=3)
    stage Stage(dim=8, depth=2)
    head classifier(classes=10)
}}
"""
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(stage.format(rule="x[0] - t*sum(i = k-1..k, g[i])"), "m.opt")
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic["line"], diagnostic["col"]) == (14, 11)
    assert "sums over a sliding window (sum(i = k-1..k, g[i]))" in diagnostic["message"]
    model = optgen.loads(stage.format(rule="x - t*(3/2*g - 1/2*g-)"), "m.opt")["M"]()
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
