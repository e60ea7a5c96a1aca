"""Per-sample scalars in coefficients, `dot(a, b)` and `norm(a)` (issue 27, point 3;
language.md 5.6): every function of them against the reference interpreter (which
evaluates the factor from the IR with its own reductions, not the printed Python), over
vector and image layouts and with learnable params; the certificate's reason; the
warning of an unguarded division; and every bad use as a located error."""

import json
import warnings

import pytest
import torch
from conftest import run_optgen
from test_reference import assert_agrees, build, sample_input

import optgen
from optgen import api

EVERY_FUNCTION = """
network EveryFunction {
    state x, v
    init v = 0
    param t = 0.3 learnable positive
    param c = 0.5
    param w = 0.2*cos(pi*k/L)
    block T = mlp(hidden=dim)
    layers 5
    update {
        g = T(x)
        v+ = c*v - t*g/(norm(g) + 1e-6) + w*sqrt(dot(x, x) + 1)*(x - x-)
        a = exp(-dot(g, g))*log(2 + abs(dot(g, x)))*g/4
        b = (1 - sign(dot(g, v+)))/2*min(norm(v+), c)*max(dot(x, input), -1)*x/10
        e = cos(dot(x, g))*sin(norm(x - input))*t^2*input/10
        x+ = x + v+ - a + b + e
    }
    output x
}
"""

IMAGE = """
network ImageSteps {
    state x
    param t = 0.5
    block T = conv(kernel=3)
    layers 3
    update {
        g = T(x)
        x+ = x - t*dot(g, x)/max(dot(g, g), 1e-12)*g - 0.1*norm(x)*g/max(norm(g), 1e-12)
    }
    output x
}
"""


def compiled(text: str, name: str):
    network = api.frontend(text, f"{name}.opt").networks[0]
    return network, optgen.loads(text, f"{name}.opt")[network.name]


@pytest.mark.parametrize("text", [EVERY_FUNCTION, IMAGE], ids=["vector", "image"])
def test_the_module_agrees_with_the_reference(text):
    network, cls = compiled(text, "rule")
    for seed in (1, 2):
        module = build(network, cls, seed=seed)
        assert_agrees(network, module, sample_input(network, seed))


def test_each_sample_gets_its_own_step():
    network, cls = compiled(IMAGE, "image")
    module = build(network, cls, seed=3).eval()  # BatchNorm in training mixes samples
    x = sample_input(network, 3)
    together = module(x)
    alone = torch.cat([module(x[i : i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-12)


def test_the_certificate_says_why_the_rule_is_outside_the_theory(tmp_path):
    source = tmp_path / "image.opt"
    source.write_text(IMAGE)
    done = run_optgen("check", str(source), "--json")
    assert done.returncode == 0, done.stderr
    (certificate,) = json.loads(done.stdout)
    assert certificate["zero_stable"] is None and certificate["consistent"] is None
    reason, _ = certificate["universal"]["reasons"]
    assert reason.startswith("outside the theory: the coefficient ")
    assert reason.endswith(
        " depends on the data (dot, norm): its value changes with the input, so the rule is"
        " not a linear multistep method with coefficients fixed per layer"
    )
    assert "dot(g, x)/max(dot(g, g), 1e-12)" in reason or "norm(x)" in reason
    assert run_optgen("check", str(source), "--strict").returncode == 0


UNGUARDED = """
network Unguarded {
    state x
    block T = mlp()
    layers 3
    update {
        g = T(x)
        x+ = x - STEP*g
    }
}
"""


@pytest.mark.parametrize(
    "step, warned",
    [
        ("dot(g, x)/dot(g, g)", "8:28: warning: division by 'dot(g, g)', which is 0 for some"),
        ("1/norm(g)", "8:20: warning: division by 'norm(g)', which is 0 for some inputs"),
        ("dot(g, x)/max(dot(g, g), 1e-12)", None),
        ("1/(norm(g) + 1e-9)", None),
        ("1/(dot(g, g) + 1)", None),
    ],
)
def test_a_division_that_can_be_zero_warns_at_the_divisor(step, warned):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optgen.check_source(UNGUARDED.replace("STEP", step), "rule.opt")
    found = [str(w.message) for w in caught if "division by" in str(w.message)]
    if warned is None:
        assert not found
    else:
        (text,) = found
        assert f"rule.opt:{warned}" in text
        divisor = warned.split("'")[1]
        assert f"hint: guard it with a floor, e.g. max({divisor}, 1e-12)" in text


RULE = """
network Bad {
    state x
    DECLARE
    block T = mlp()
    layers 3
    update {
        x+ = x - STEP*T(x)
    }
}
"""
ERRORS = {
    "dot(x)": ("8:18", "dot takes 2 tensor arguments, got 1"),
    "norm(x, x)": ("8:18", "norm takes 1 tensor argument, got 2"),
    "dot(x, 2)": ("8:25", "an argument of dot must be a tensor expression, but '2' is a scalar"),
    "floor(dot(x, x))": ("8:18", "floor of a per-sample scalar is not supported"),
    "(dot(x, x) % 2)": ("8:19", "'%' takes integers, but 'dot(x, x)' is not one"),
    "dott(x, x)": ("8:18", "unknown function 'dott'"),
    "softshrink(x, dot(x, x))": (
        "8:32",
        "the extra arguments of softshrink must be fixed, but 'dot(x, x)' depends on the data",
    ),
    "sum(i = 0..k, dot(x, x)*x[i])": (
        "8:32",
        "dot(...) inside a sum: the terms of a sum have fixed coefficients",
    ),
    "(x + dot(x, x))": ("8:19", "'x + dot(x, x)' adds the scalar 'dot(x, x)' to a tensor"),
}


def write(tmp_path, text: str):
    source = tmp_path / "bad.opt"
    source.write_text(text)
    return source


def located_errors(text: str) -> list[str]:
    """`line:col: message` of each error of `text`, through the API (no process each)."""
    with pytest.raises(optgen.OptgenError) as info:
        optgen.check_source(text, "bad.opt")
    return [f"{d['line']}:{d['col']}: {d['message']}" for d in info.value.diagnostics]


@pytest.mark.parametrize("step", sorted(ERRORS))
def test_a_bad_use_is_a_located_error(step):
    where, message = ERRORS[step]
    assert f"{where}: {message}" in located_errors(
        RULE.replace("DECLARE", "").replace("STEP", step)
    )


def test_the_command_line_exits_1_and_writes_nothing(tmp_path):
    source = write(tmp_path, RULE.replace("DECLARE", "").replace("STEP", "dot(x)"))
    out = tmp_path / "out"
    done = run_optgen("compile", str(source), "-o", str(out))
    assert done.returncode == 1, done.stderr
    assert "bad.opt:8:18: error: dot takes 2 tensor arguments, got 1" in done.stderr
    assert not out.exists()


NOT_EXPLICIT = {
    "implicit": (
        RULE.replace("DECLARE", "").replace("x - STEP*T(x)", "x - dot(x, x)*T(x+)"),
        "8:18: error: dot and norm scale explicit layers only, and network Bad is implicit",
    ),
    "reversible": (
        RULE.replace("DECLARE", "backward reversible").replace("STEP", "dot(x, x)"),
        "8:18: error: dot and norm scale explicit layers only, and network Bad is reversible",
    ),
    "equilibrium": (
        RULE.replace("DECLARE", "")
        .replace("layers 3", "layers equilibrium")
        .replace("x - STEP*T(x)", "x - norm(x)*T(x) + input"),
        "8:18: error: dot and norm scale explicit layers only, and network Bad is an equilibrium",
    ),
    "init": (
        RULE.replace("DECLARE", "init x = dot(input, input)*input").replace("STEP", "1"),
        "4:14: error: dot(...) reads the data of a layer, and an init runs before the first",
    ),
}


@pytest.mark.parametrize("case", sorted(NOT_EXPLICIT))
def test_dot_outside_an_explicit_update_is_a_located_error(case):
    text, message = NOT_EXPLICIT[case]
    assert message.replace(" error:", "") in located_errors(text)


def test_the_graph_shows_each_reduction_feeding_the_scaled_term(tmp_path):
    source = write(tmp_path, IMAGE)
    done = run_optgen("inspect", str(source), "--graph", "mermaid")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('["dot(.)"]') == 2 and done.stdout.count('["norm(.)"]') == 2
    assert done.stdout.count('["* per sample"]') == 2


@pytest.mark.parametrize(
    "step, warned",
    [
        ("0.1*sqrt(dot(g, x))", "8:27: warning: sqrt of 'dot(g, x)', which is negative for some"),
        ("0.1*log(norm(g))", "8:26: warning: log of 'norm(g)', which is 0 or negative for some"),
        ("0.1*sqrt(dot(g, g))", None),
        ("0.1*log(1 + norm(g))", None),
    ],
)
def test_sqrt_and_log_outside_their_domain_warn(step, warned):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optgen.check_source(UNGUARDED.replace("STEP", step), "rule.opt")
    found = [str(w.message) for w in caught if " of '" in str(w.message)]
    if warned is None:
        assert not found
    else:
        (text,) = found
        assert f"rule.opt:{warned}" in text


# A local holding a scalar is read in its place: Fletcher-Reeves' beta.
FLETCHER_REEVES = """
network FletcherReeves {
    state x, d
    init d = 0
    param t = 0.1
    param c = 0.5 learnable positive
    block T = mlp(hidden=dim)
    layers 4
    update {
        g = T(x)
        beta = min(k, 1)*dot(g, g)/max(dot(g-, g-), 1e-12)
        half = c/2
        d+ = -g + min(beta, half + 1)*d
        x+ = x + t*d+
    }
}
"""


def test_a_scalar_local_is_read_in_its_place():
    network, cls = compiled(FLETCHER_REEVES, "fr")
    assert [st.target for st in network.statements] == ["g", "d", "x"]
    for seed in (1, 2):
        module = build(network, cls, seed=seed)
        assert_agrees(network, module, sample_input(network, seed))


@pytest.mark.parametrize(
    "read, message",
    [
        ("beta-", "13:19: 'beta-': the local 'beta' holds a scalar, which has no history"),
        ("beta[k-1]", "13:19: 'beta[k-1]': the local 'beta' holds a scalar, which has no"),
    ],
)
def test_a_scalar_local_has_no_history(read, message):
    text = FLETCHER_REEVES.replace("min(beta, half + 1)*d", f"{read}*d")
    assert any(e.startswith(message) for e in located_errors(text))
