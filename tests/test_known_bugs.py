"""The bugs the reference interpreter found (tests/reference_rules.py, `FOUND_BUGS`), each
compiled from its reproducer and compared with `optgen.reference` (outputs and gradients),
with variations that reach the same code by other ways: deeper modules, a later `start`,
other maps, wider windows, other `checkpoint` group sizes, a model's stage.

Before its fix each raised: the module (IndexError, NameError, UnboundLocalError) or the
analysis (a TypeError out of sympy). One variation was a silent miscompile: a coefficient
holding a learnable param and `k` read the module's own layer count for `k`, not
`start + k` (a module with `start = 2` disagreed with the reference by 100%).
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from reference_rules import ANALYSIS_CRASH, FOUND_BUGS
from test_reference import DIM, _compiled, assert_agrees, build, compare, sample_input

import optgen
from optgen.reference import evaluate_model


@functools.cache
def _compiled_once(text: str):
    return _compiled(text, "known_bugs.opt")


def _certificates(text: str) -> dict[str, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optgen.OptgenWarning)  # not zero-stable: not ours
        return {c["name"]: c for c in optgen.check_source(text, "known_bugs.opt")}


def _network(text: str, name: str | None = None):
    networks, classes, _ = _compiled_once(text)
    name = name or next(iter(networks))
    return networks[name], classes[name]


def _agrees(text: str, depth: int, start: int = 0, checkpoint=(), name: str | None = None):
    """The network of `text` at this depth and start agrees with the reference, under
    each `checkpoint` group size given (the constructor's default when none is)."""
    network, cls = _network(text, name)
    torch.manual_seed(depth + start)
    module = build(network, cls, seed=depth + start, depth=depth)
    if start:
        state = module.state_dict()
        module = cls(DIM, depth=depth, start=start).double()
        module.load_state_dict(state)
    x = sample_input(network, depth)
    for every in checkpoint or (getattr(module, "checkpoint", None),):
        module.checkpoint = every
        assert_agrees(network, module, x)


# ---------------------------------------------------------------------- schedules
AHEAD_ELSEWHERE = """
network AheadInScalar {
    state x
    param tk[0] = 1
    param tk[k+1] = tk/2 + 1
    block T = mlp()
    layers 3
    update { x+ = softshrink(x - 0.5*T(x), 0.1*tk[k+2]) }
}

network AheadNested {
    state x, y
    param tk[0] = 1
    param tk[k+1] = (1 + sqrt(1 + 4*tk^2))/2
    block T = mlp()
    layers 3
    update {
        x+ = clamp(y - T(relu(y - tk[k+3]*x)), -1, 1.5)
        y = x+ + 0.5*(x+ - x)
    }
}
"""


@pytest.mark.parametrize("depth, start", [(2, 0), (5, 0), (3, 2)])
def test_schedule_ahead_in_a_map_is_sized_for_its_reads(depth, start):
    _agrees(FOUND_BUGS["schedule_ahead_in_a_map"], depth, start)


@pytest.mark.parametrize("name", ["AheadInScalar", "AheadNested"])
def test_a_schedule_ahead_in_map_scalars_and_nested_arguments_is_sized_for_its_reads(name):
    # tk[k+2] as softshrink's threshold, tk[k+3] in relu inside a block inside clamp.
    _agrees(AHEAD_ELSEWHERE, depth=4, name=name)
    _agrees(AHEAD_ELSEWHERE, depth=2, start=3, name=name)


LEARNABLE_IN_K = """
network LearnableTimesK {
    state x
    param s = 0.5 learnable positive
    param a = k/(k+1)
    block T = mlp()
    layers 3
    update { x+ = x - s*k/(k+2)*T(x) + (s - a)*x }
}

network PerLayerTimesRecursive {
    state x, y
    param tk[0] = 1
    param tk[k+1] = (1 + sqrt(1 + 4*tk^2))/2
    param c = 0.4 learnable in (0, 1) per_layer
    param w = 0.3 learnable positive per_channel
    block T = mlp()
    layers 3
    update {
        x+ = softshrink(y - c*tk[k+1]*T(y), 0.1*w*tk) + w*(tk - 1)/tk[k+1]*(y - x)
        y = x+ + c/(c + tk)*(x+ - x)
    }
}
"""


@pytest.mark.parametrize("depth, start", [(2, 0), (5, 0), (3, 2)])
def test_learnable_times_recursive_schedule_reads_a_per_layer_table(depth, start):
    _agrees(FOUND_BUGS["learnable_times_recursive_schedule"], depth, start)


@pytest.mark.parametrize("name", ["LearnableTimesK", "PerLayerTimesRecursive"])
def test_a_learnable_coefficient_in_k_counts_its_layers_from_start(name):
    # Before the fix LearnableTimesK computed s*k/(k+2) with the module's own k (0, 1, ...)
    # also where its first layer is k = start: a silent miscompile.
    for depth, start in [(3, 0), (3, 2), (1, 5)]:
        _agrees(LEARNABLE_IN_K, depth, start, name=name)


def test_a_learnable_coefficient_reads_its_fixed_part_from_a_table():
    # The forward computes s + (1 - tk) with the fixed part from __init__'s table.
    network, cls = _network(FOUND_BUGS["learnable_times_recursive_schedule"])
    module = cls(DIM, depth=3)
    assert module.coef == pytest.approx([0.0, -0.5, -0.75])


# ---------------------------------------------------------------------- checkpoint
CHECKPOINT_VARIATIONS = """
network CheckpointWide {
    state x, v
    param c = 0.4 learnable in (0, 1) per_layer
    block T = mlp()
    block S = linear() shared
    layers 6
    checkpoint 3
    update {
        g = T(x)
        h = S(x - x-)
        v+ = c*v + sum(i = k-3..k, g[i] + (i+1)*h[i]) - 0.1*sum(i = k-2..k, x[i])
        x+ = x - 0.25*v+ + 0.2*(g - g[k-3]) - 0.1*h[k-2] + 0.05*sum(i = 2..k, v[i])
    }
}

network CheckpointStateWindow {
    state x
    block T = mlp(act=tanh)
    layers 5
    checkpoint 2
    update { x+ = x - 0.3*T(x) - 0.1*sum(i = k-2..k, x[i]) }
}
"""
GROUPS = (None, 0, 1, 2, 3)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_checkpoint_with_a_window_hands_the_window_on(depth):
    _agrees(FOUND_BUGS["checkpoint_with_a_window"], depth, checkpoint=GROUPS)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_checkpoint_with_local_history_hands_the_history_on(depth):
    _agrees(FOUND_BUGS["checkpoint_with_local_history"], depth, checkpoint=GROUPS)


@pytest.mark.parametrize("name", ["CheckpointWide", "CheckpointStateWindow"])
def test_checkpoint_3_with_wide_windows_and_local_history_agrees(name):
    # Two windows (4 and 3 terms, over locals and a state), g[k-3] and h[k-2], a sum from
    # layer 2, a per-layer param: under groups of 3 (the declared), 1 and 2, and depths that
    # end inside a group.
    for depth in (4, 7):
        _agrees(CHECKPOINT_VARIATIONS, depth, checkpoint=(3, 1, 2), name=name)


def test_the_checkpointed_layer_takes_what_it_keeps_as_slots():
    files = optgen.compile_source(FOUND_BUGS["checkpoint_with_a_window"], "w.opt")
    text = files["checkpoint_window.py"]
    assert "window = []" not in text
    assert "x, history_sum, window_prev, window_prev2 = slots" in text


CHECKPOINTED_STAGE = """
network LagStage {
    state x
    block T = conv()
    checkpoint 2
    update {
        g = T(x)
        x+ = x - 0.5*g + 0.25*g- + 0.1*g[k-2] + 0.3*(x - x-)
    }
}

model LagModel {
    input [3, 8, 8]
    stem conv(out=4, kernel=3)
    stage LagStage(dim=4, depth=3)
    down conv(out=8, stride=2)
    stage LagStage(dim=8, depth=2)
    head classifier(classes=10)
}
"""


def test_a_checkpointed_stage_starts_its_local_history_again():
    # A model's stage hands on its slots (x, x_prev), not g's history, which starts again
    # at its first layer (language.md 5.2): forward_slots makes it, _layer carries it.
    networks, classes, result = _compiled_once(CHECKPOINTED_STAGE)
    (model,) = result.models
    torch.manual_seed(0)
    module = classes["LagModel"]().double().eval()
    with torch.no_grad():
        for stage in module.stages:
            for p in stage.blocks.parameters():
                p.mul_(0.3)
    image = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for every in (2, 1, 0):
        for stage in module.stages:
            stage.checkpoint = every
        found = compare(
            module, lambda z: evaluate_model(model, networks.values(), module, z), image
        )
        worst = max(found, key=found.get)
        assert found[worst] <= 1e-10, f"checkpoint {every}: {worst} differs by {found[worst]:.3g}"


# ---------------------------------------------------------------------- the analysis
ANALYSIS_VARIATIONS = """
network RecursiveBesideLaterSum {
    state v, z
    param p0[0] = 1
    param p0[k+1] = p0/2 + 1/(k+2)
    block G = mlp() shared
    layers 3
    update {
        v+ = v - 0.5*G(v) + (1 - p0)*(v - v-) + 0.25*sum(i = 1..k, (i+1)*v[i])
        z = z - 0.1*sum(i = 0..k, v[i])
    }
}

network InitialScaledByRecursive {
    state y
    param p0[0] = 1
    param p0[k+1] = p0/2 + 1/(k+2)
    block T = mlp(act=tanh)
    layers 4
    update { y+ = y - 0.5*T(y) - p0*y[0] }
}
"""


def test_the_analysis_crash_rule_is_analysed():
    (certificate,) = _certificates(ANALYSIS_CRASH).values()
    assert certificate["rho_text"].startswith("z^9")
    assert certificate["zero_stable"] is False  # root 1 triple: the certificate says why
    _agrees(ANALYSIS_CRASH, depth=4)


@pytest.mark.parametrize("name", ["RecursiveBesideLaterSum", "InitialScaledByRecursive"])
def test_a_recursive_schedule_beside_a_step_function_is_analysed(name):
    # The same TypeError with a recursive schedule in the matrix (the found rule had a
    # closed-form one), and sympy's NotImplementedError solving p0(k) = 0 for the layers
    # where x[0]'s coefficient vanishes (checked over the declared depth instead).
    certificates = _certificates(ANALYSIS_VARIATIONS)
    assert certificates[name]["rho_text"] is not None
    assert "only the finite depth is covered" in " ".join(certificates[name]["notes"])
    _agrees(ANALYSIS_VARIATIONS, depth=4, name=name)


def test_backward_reversible_with_local_history_is_a_located_error():
    # Found beside the checkpoint bugs: `_layer` of a reversible rule read `g_prev`, which
    # its slots do not hold (UnboundLocalError in forward), and `_inverse_layer` cannot
    # give the history back. Now refused at the `backward reversible` line.
    text = """
network ReversibleLocalLag {
    state x
    block T = mlp()
    layers 3
    backward reversible
    update {
        g = T(x)
        x+ = x - 0.5*g- + 0.5*(x - x-)
    }
}
"""
    with pytest.raises(optgen.OptgenError, match="history of a local") as raised:
        optgen.compile_source(text, "reversible.opt")
    assert "reversible.opt:6:5" in str(raised.value)


# ---------------------------------------------------------------------- the differential campaign
# The bugs tests/test_differential_campaign.py found (`FOUND` there holds the reproducers).
SUMS_IN_IMPLICIT_TERMS = """
network ImplicitSumInMap {
    state x
    block T = mlp()
    layers 2
    update { x+ = relu(x - 0.1*sum(i = 0..k, x[i]) - 0.5*T(x+)) }
}

network WindowInMap {
    state x
    block T = mlp()
    layers 3
    update { x+ = relu(x - 0.1*sum(i = k-2..k, x[i]) - 0.5*T(x+)) }
}

network LaterSumInMap {
    state x
    block T = mlp()
    layers 3
    update { x+ = tanh(x - 0.1*sum(i = 1..k, (i+1)*x[i]) - 0.5*T(x+)) }
}

network LocalSumInMap {
    state x
    block T = mlp()
    block S = mlp()
    layers 3
    update {
        g = T(x)
        x+ = softshrink(x - 0.1*sum(i = 0..k, g[i]) - 0.5*S(x+), 0.05)
    }
}

network SumInImplicitBlockArg {
    state x
    block T = mlp()
    layers 3
    update { x+ = x - 0.5*T(x+ - 0.1*sum(i = 0..k, x[i])) }
}

network TwoSumsOfTwoStatesInMap {
    state x, y
    block T = mlp()
    layers 3
    update {
        y+ = y - 0.2*T(y)
        x+ = relu(x - 0.1*sum(i = 0..k, y[i] + x[i]) - 0.05*sum(i = k-1..k, x[i]) - 0.5*T(x+) + 0.1*y+)
    }
}
"""
SUM_IN_MAP_MODEL = """
network SumMapStage {
    state x
    block T = conv()
    update { x+ = relu(x - 0.1*sum(i = 0..k, x[i]) - 0.5*T(x+)) }
}

model SumMapModel {
    input [3, 8, 8]
    stem conv(out=4, kernel=3)
    stage SumMapStage(dim=4, depth=2)
    down conv(out=8, stride=2) carry output
    stage SumMapStage(dim=8, depth=3)
    head classifier(classes=10)
}
"""


@pytest.mark.parametrize(
    "name",
    [
        "ImplicitSumInMap",
        "WindowInMap",
        "LaterSumInMap",
        "LocalSumInMap",
        "SumInImplicitBlockArg",
        "TwoSumsOfTwoStatesInMap",
    ],
)
def test_implicit_sum_in_a_map_is_accumulated_once_before_the_solve(name):
    # The solved map of x+ = relu(x - 0.1*sum(...) - 0.5*T(x+)) added x to history_sum
    # itself: a name the map does not hold (UnboundLocalError in forward), and a total
    # that every solver iteration would have added to again.
    for depth in (1, 4):
        _agrees(SUMS_IN_IMPLICIT_TERMS, depth, name=name)


def test_implicit_sum_in_a_map_in_a_model_stage_agrees():
    # In a model it failed at compile time, where the FLOPs are measured.
    networks, classes, result = _compiled_once(SUM_IN_MAP_MODEL)
    (model,) = result.models
    torch.manual_seed(0)
    module = classes["SumMapModel"]().double().eval()
    with torch.no_grad():
        for stage in module.stages:
            for p in stage.blocks.parameters():
                p.mul_(0.3)
            stage.solver = {"name": "anderson", "m": 5, "max_iter": 500, "tol": 1e-12}
            stage.backward = {"name": "implicit", "max_iter": 500, "tol": 1e-12}
    image = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    found = compare(module, lambda z: evaluate_model(model, networks.values(), module, z), image)
    worst = max(found, key=found.get)
    assert found[worst] <= 1e-7, f"{worst} differs by {found[worst]:.3g}"


# A coefficient read at an earlier layer: the differenced update of a rule with x[0] or a
# sum over history holds F_{k-1}, and a local's history g[k-j] the local's coefficients at
# k - j. Each was evaluated before the first layer (k/(k+1) at k = -1, 1/(k+2) at k = -2):
# sympy's zoo, then a DomainError (nroots), a ZeroDivisionError (the float layers) or a
# NaN step h (TypeError). The language reads the first layer's value before it exists.
def _net(name: str, update: str, layers: int, states: str = "x", extra: str = "") -> str:
    output = "    output y\n" if states == "x, y" else ""
    return (
        f"network {name} {{\n    state {states}\n{output}{extra}    block T = mlp()\n"
        f"    layers {layers}\n    update {{\n{update}\n    }}\n}}\n"
    )


INITIAL_AND_LAG = {
    "InitialAndLag": _net("InitialAndLag", "x+ = x - x[0] + k/(k+1)*x- - T(x)", 2),
    "InitialAndLagDeep": _net("InitialAndLagDeep", "x+ = x - x[0] + k/(k+1)*x- - T(x)", 12),
    "InitialAndSecondLag": _net("InitialAndSecondLag", "x+ = x - x[0] + k/(k+1)*x[k-2] - T(x)", 4),
    "InitialAndScheduledLag": _net(
        "InitialAndScheduledLag",
        "x+ = x - x[0] + a*x- - T(x)",
        4,
        extra="    param a = k/(k+1)\n",
    ),
}
SUM_AND_SCALED_LAG = {
    "SumAndScaledLag": _net(
        "SumAndScaledLag",
        "x+ = x - 0.1*T(x)\ny+ = y - 0.5*sum(i = 0..k, x[i]) + 0.1*k/(k+1)*(x - x-)",
        2,
        "x, y",
    ),
    "WindowAndScaledLag": _net(
        "WindowAndScaledLag",
        "x+ = x - 0.1*T(x)\ny+ = y - 0.5*sum(i = k-1..k, x[i]) + 0.1*k/(k+1)*(x - x-)",
        5,
        "x, y",
    ),
    "LocalSumAndScaledLag": _net(
        "LocalSumAndScaledLag",
        "g = T(x)\nx+ = x - 0.1*g\ny+ = y - 0.5*sum(i = 0..k, g[i]) + 0.1*k/(k+2)*(x - x[k-2])",
        6,
        "x, y",
    ),
    # Past the exact layers: the float layer matrices met (k - 1)/k at k = 0 too.
    "SumAndScaledLagDeep": _net(
        "SumAndScaledLagDeep",
        "x+ = x - 0.1*T(x)\ny+ = y - 0.5*sum(i = 0..k, x[i]) + 0.1*k/(k+1)*(x - x-)",
        200,
        "x, y",
    ),
}
NAN_STEP = {
    "NanStep": _net(
        "NanStep", "g = -1/(k+2)*T(y - y-) + 0.1*y[0]\ny+ = y - 1/(k+2)*g[k-2] - 0.125*g-", 5, "y"
    ),
    "NanStepDeep": _net(
        "NanStepDeep",
        "g = -1/(k+2)*T(y - y-) + 0.1*y[0]\ny+ = y - 1/(k+2)*g[k-2] - 0.125*g-",
        9,
        "y",
    ),
    "NanStepWithoutInitial": _net(
        "NanStepWithoutInitial",
        "g = -1/(k+2)*T(y - y-)\ny+ = y - 1/(k+3)*g[k-3] - 0.125*g-",
        6,
        "y",
    ),
    "NanStepScheduled": _net(
        "NanStepScheduled",
        "g = -a*T(y - y-)\ny+ = y - a*g[k-2] - 0.125*g-",
        6,
        "y",
        extra="    param a = 1/(k+2)\n",
    ),
}


def _analysed(texts: dict[str, str], name: str) -> dict:
    """The certificate of `name`: derived, with the verdicts decided at every layer."""
    certificate = _certificates(texts[name])[name]
    assert certificate["rho_text"] is not None
    assert isinstance(certificate["zero_stable"], bool), certificate["zero_stability"]
    assert isinstance(certificate["consistent"], bool), certificate["consistency"]
    assert all(r is not None and r == r for r in certificate["per_layer"])
    return certificate


@pytest.mark.parametrize("name", sorted(INITIAL_AND_LAG))
def test_analysis_domain_error_x0_and_a_lag_scaled_by_k_is_analysed(name):
    certificate = _analysed(INITIAL_AND_LAG, name)
    # x[0] differenced: root 1 twice at the first layer, where F_{k-1} has no k - 1.
    assert certificate["zero_stability"].startswith("at layer k=0: root 1 of rho is a double")
    _agrees(INITIAL_AND_LAG[name], depth=3)


@pytest.mark.parametrize("name", sorted(SUM_AND_SCALED_LAG))
def test_analysis_division_by_zero_a_sum_and_a_lag_scaled_by_k_is_analysed(name):
    certificate = _analysed(SUM_AND_SCALED_LAG, name)
    assert len(certificate["per_layer"]) == certificate["depth"]
    _agrees(SUM_AND_SCALED_LAG[name], depth=3)


@pytest.mark.parametrize("name", sorted(NAN_STEP))
def test_analysis_nan_step_a_local_read_at_lags_has_a_step_at_every_layer(name):
    certificate = _analysed(NAN_STEP, name)
    assert certificate["consistency"].startswith("at layer k=0")  # decided, not NaN
    _agrees(NAN_STEP[name], depth=4)


@pytest.mark.parametrize("coefficient, extra", [("k/(k+1)", ""), ("a", "param a = k/(k+1)")])
def test_a_local_read_before_the_first_layer_has_the_first_layers_coefficient(coefficient, extra):
    # g[k-2] and g- at layer k: g's coefficient at k-2 and k-1, or at k = 0 (the first
    # layer's) before those exist. A scheduled param moves with k too: before the fix the
    # steps of `a` read a(k), not a(k-1) (0.5, 0.667, 0.75 from layer 1: silently wrong).
    text = _net(
        "LaggedLocal",
        f"g = -{coefficient}*T(y)\ny+ = y + 0.5*g[k-2] + 0.5*g-",
        4,
        "y",
        extra=f"    {extra}\n" if extra else "",
    )
    certificate = _certificates(text)["LaggedLocal"]
    assert certificate["per_layer_step"] == pytest.approx([0, 0, 0.25, 0.5 * (1 / 2 + 2 / 3)])


@pytest.mark.parametrize(
    "update",
    [
        "x+ = x - 1/(k-1)*T(x)",
        "x+ = x - 0.1*T(x) + 1/(k-1)*(x - x-)",
        "g = T(x)\nx+ = x - 1/(k-1)*T(x - 0.5*g)",  # a one-step Runge-Kutta method
    ],
)
def test_a_coefficient_undefined_at_a_layer_leaves_the_verdicts_unknown(update):
    # A division by zero the rule itself writes (at k = 1): the analysis cannot check that
    # layer, and says so, where it raised sympy's TypeError or DomainError.
    certificate = _certificates(_net("Undefined", update, 3))["Undefined"]
    assert certificate["zero_stable"] is None and certificate["consistent"] is None
    assert certificate["universal"]["guaranteed"] is None
    assert any("unknown: at layer k=1" in r for r in certificate["universal"]["reasons"])
    assert any(n.startswith("limit: at layer k=1") for n in certificate["notes"])


def test_a_sum_scaled_by_a_schedule_is_outside_the_theory():
    # (1 - p0)*sum(...) with p0 following k: differencing leaves (p0(k-1) - p0(k))*S_{k-1},
    # as it does for (1 - k/(k+2))*sum(...). The analysis read p0 as a constant (its
    # symbol holds no k) and certified a recurrence the rule does not follow.
    for coefficient in ("(1 - p0)", "(1 - k/(k+2))"):
        text = f"""
network ScaledSum {{
    state v
    param p0 = k/(k+2)
    block G = mlp()
    layers 3
    update {{ v+ = v - 0.5*G(v) + {coefficient}*sum(i = 0..k, v[i]) }}
}}
"""
        certificate = _certificates(text)["ScaledSum"]
        assert certificate["rho_text"] is None
        assert "depends on k, so differencing the update does not remove it" in (
            certificate["universal"]["reasons"][0]
        )


# Found by the 10,000-case campaign (seed 3002005): a schedule sqrt(k+1)/(k+2) puts an
# irrational number, sqrt(2)/24, into a per-layer characteristic polynomial; its root was
# made a sympy.Rational, which refuses it (TypeError out of compile and check_source).
IRRATIONAL_ROOT = """
network IrrationalRoot {
    state v, z
    param p0 = sqrt(k+1)/(k+2)
    block T = mlp(act=tanh)
    layers 4
    init z = 0
    update {
        z+ = z + 0.5*p0*0.25*(z - z-)
        v = v + p0[k+1]*z+ - 0.1*T(v)
    }
}
"""


def test_an_irrational_per_layer_root_is_analysed():
    (certificate,) = _certificates(IRRATIONAL_ROOT).values()
    assert certificate["per_layer"] is not None and len(certificate["per_layer"]) == 4
    _agrees(IRRATIONAL_ROOT, depth=4)


# Found by the same campaign (seed 3002233): a schedule 0.9^k is a power, not a function,
# so charpoly did not stand it in as a symbol, and sympy compared -1 with an expression in
# 0.9^k while ordering the factors (the "truth value of Relational" TypeError again).
POWER_SCHEDULE = """
network PowerSchedule {
    state y, x
    param p0 = 0.9^k
    block T = mlp()
    layers 4
    output x
    update {
        y = y + 0.5*p0*(y - y-) - 0.1*T(y)
        x+ = x + 1/(k+2)*x- - 0.1*T(x)
    }
}
"""


def test_a_power_schedule_in_the_matrix_is_analysed():
    (certificate,) = _certificates(POWER_SCHEDULE).values()
    assert certificate["per_layer"] is not None
    _agrees(POWER_SCHEDULE, depth=4)


# Found by the 10,000-case campaign, part 3 (seed 3006087): a schedule min(0.5, k/4) read
# at k+1 puts `Min` in the layer matrix. charpoly stood functions in as symbols, but Min
# and Max are sympy applications, not Functions, so sympy compared expressions in Min while
# ordering the factors: "cannot determine truth value of Relational" (an internal error).
MIN_SCHEDULE_AHEAD = """
network MinScheduleAhead {
    state y, x
    param p2 = min(0.5, k/4)
    block T = linear() shared
    layers 4
    output x
    update {
        x = x + p2[k+1]*x[0]
        g0 = T(x+ - x)
        y = y + (1 - p2)*x
    }
}
"""


def test_a_min_schedule_in_the_matrix_is_analysed():
    (certificate,) = _certificates(MIN_SCHEDULE_AHEAD).values()
    assert certificate["per_layer"] is not None
    _agrees(MIN_SCHEDULE_AHEAD, depth=4)


def test_the_reference_solve_reaches_a_map_that_sends_a_sample_to_zero():
    # Campaign seed 3005766 (the reference's, not the compiler's): a shrinkage that maps
    # the first guess to exactly 0 made the relative residual ||f(z) - z|| / ||f(z)||
    # overflow to inf, reported as divergence; the next step is the fixed point 0.
    from optgen.reference.solve import FixedPoint, relative_residual

    z = {"x": torch.ones(2, 3, dtype=torch.float64)}
    zero = {"x": torch.zeros(2, 3, dtype=torch.float64)}
    assert relative_residual(zero, z) == 1.0
    solved = FixedPoint(tol=1e-12).solve(lambda s: {"x": torch.relu(s["x"] - 5)}, z)
    assert torch.equal(solved["x"], zero["x"])


# Found by the same part (seed 3007145): exp(-1) squared as a coefficient gives a step h in
# exp(2), exp(4), ... whose sign sympy cannot decide exactly: `h <= 0` raised "cannot
# determine truth value of Relational" (an internal error). It is now decided to 60 digits.
EXP_COEFFICIENT = """
network ExpCoefficient {
    state lambda
    param p0 = min(0.3, 1/3)
    param p2 = 0.9^k
    param p3 = exp(-1)
    block T = mlp(hidden=2*dim, act=gelu) shared
    layers 5
    output lambda
    update {
        g0 = T(lambda)
        lambda+ = lambda - 0.5*p3^2*(lambda - lambda-) + 0.125*sum(i = k-3..k, g0[i]) - p0*0.5*lambda[k-2]
    }
}
"""


def test_a_step_in_exp_constants_is_decided():
    (certificate,) = _certificates(EXP_COEFFICIENT).values()
    assert certificate["per_layer"] is not None
    _agrees(EXP_COEFFICIENT, depth=5)
