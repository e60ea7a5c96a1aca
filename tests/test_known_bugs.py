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
        v+ = v - 0.5*G(v) + (1 - p0)*sum(i = 0..k, v[i]) + 0.25*sum(i = 1..k, (i+1)*v[i])
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
