"""The quick form of the differential campaign (issue 24; bench/differential.py runs the
full one): generated rules and models compiled, built in float64 and compared with the
reference interpreter on outputs and gradients, and the reproducers of what the campaign
found (strict xfails until the fix)."""

from __future__ import annotations

import importlib.util
import json
import random
import re
from pathlib import Path

import pytest
from campaign_rules import KNOWN, Case, campaign_case, check_batch, known_bug, model_case
from sympy.polys.polyerrors import DomainError

BENCH = Path(__file__).resolve().parent.parent / "bench" / "differential.py"
SAMPLE_SEED, SAMPLE_CASES = 4000, 16


@pytest.fixture(scope="module")
def sample():
    cases = [campaign_case(SAMPLE_SEED + i) for i in range(SAMPLE_CASES)]
    outcomes = []
    for i in range(0, len(cases), 8):
        outcomes += check_batch(cases[i : i + 8], deadline=300)
    return cases, outcomes


def test_a_sample_of_generated_rules_agrees_with_the_reference(sample):
    cases, outcomes = sample
    findings = [f"seed {o.seed}: {o.status} {o.stage} {o.message[-300:]}" for o in outcomes]
    findings = [f for o, f in zip(outcomes, findings) if o.finding]
    assert not findings, "\n".join(findings)
    compared = [o for o in outcomes if o.status == "compared"]
    assert len(compared) >= SAMPLE_CASES - 2  # a rejection or two at most
    # The sample holds what the campaign is for: a model, and rules where the order of the
    # statements matters, compared.
    assert any(o.models for o in compared)
    order = {"order:sum_after_update", "order:local_after_update", "order:reads_next"}
    assert any(order & set(o.features) for o in compared)
    assert any("order:sum_after_update" in o.features for o in compared)


def test_a_case_is_its_seed():
    for seed in (0, 17, 5_000_123):
        assert campaign_case(seed).text == campaign_case(seed).text
    assert campaign_case(1).text != campaign_case(2).text


def _texts(count: int, avoid: bool) -> list[str]:
    return [campaign_case(seed, avoid).text for seed in range(count)]


def _constructs(source: str) -> set[str]:
    """The constructs of the known bugs the networks of a text hold (by their words)."""
    return set().union(*(_network_constructs(t) for t in source.split("network ")[1:]))


def _network_constructs(text: str) -> set[str]:
    update = text.split("update {")[-1]
    found = set()
    checkpoint = "checkpoint" in text
    if checkpoint and any(w in text for w in ("k-1..k", "k-2..k", "k-3..k")):
        found.add("checkpoint_with_a_window")
    if checkpoint and any(f"g{i}-" in text or f"g{i}[k-" in text for i in range(8)):
        found.add("checkpoint_with_local_history")
    if re.search(r"param \w+\[k\+1\]", text) and "learnable" in text:
        found.add("learnable_times_recursive_schedule")
    for line in update.splitlines():
        body = line.split("=", 1)[-1].strip()
        if body.startswith(("relu(", "softshrink(", "clamp(")) and "[k+" in body:
            found.add("schedule_ahead_in_a_map")
    return found


def test_the_generator_avoids_the_known_bugs_only_when_asked():
    avoided = set().union(*(_constructs(t) for t in _texts(400, avoid=True)))
    assert not avoided
    generated = set().union(*(_constructs(t) for t in _texts(400, avoid=False)))
    assert generated == {
        "checkpoint_with_a_window",
        "checkpoint_with_local_history",
        "learnable_times_recursive_schedule",
        "schedule_ahead_in_a_map",
    }


def test_the_generator_writes_every_kind_of_construct():
    features = set()
    for seed in range(300):
        features |= campaign_case(seed).features
    for seed in range(40):
        features |= model_case(seed).features
    expected = {
        "order:sum_after_update",
        "order:local_after_update",
        "order:lag_after_update",
        "order:reads_next",
        "order:reads_new_value",
        "order:reads_k",
        "order:permuted",
        "local",
        "local:history",
        "sum",
        "sum:window",
        "sum:local",
        "lag",
        "param:schedule",
        "param:recursive_schedule",
        "param:learnable",
        "param:per_channel",
        "param:per_layer",
        "read:schedule_ahead",
        "implicit",
        "equilibrium",
        "checkpoint",
        "map:prox",
        "map:learned_threshold",
        "model",
        "carry:states",
        "carry:output",
        "transition:conv",
        "transition:pool",
        "transition:up",
        "transition:norm",
        "build:start",
        "build:other_depth",
    }
    assert expected <= features, sorted(expected - features)


def test_the_runner_writes_its_summary(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_differential", BENCH)
    differential = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(differential)
    out = tmp_path / "campaign.json"
    status = differential.main(["--cases", "3", "--seed", "7", "--out", str(out)])
    summary = json.loads(out.read_text())
    assert status == 0, summary
    assert summary["cases"] == 3 and summary["first_case_seed"] == 7_000_000
    assert summary["mismatches"] == [] and summary["crashes"] == []
    assert summary["compared"] + summary["rejected"] == 3


# ---------------------------------------------------------------------- what it found
# Minimal reproducers of the campaign's findings (docs/robustness.md), each a strict xfail
# on the exception it raises today: a fix turns it into a differential test.
FOUND = {
    # An implicit statement inside a map, with a sum over history: the solved map reads
    # the running sum, which the layer defines after it (UnboundLocalError in forward).
    "implicit_sum_in_a_map": (
        """
network ImplicitSumInMap {
    state x
    block T = mlp()
    layers 2
    update {
        x+ = relu(x - 0.1*sum(i = 0..k, x[i]) - 0.5*T(x+))
    }
}
""",
        UnboundLocalError,
    ),
    # x[0] and a lag scaled by a fraction in k: the analysis' exact roots get sympy's zoo
    # (a DomainError out of compile and check_source: an internal error).
    "analysis_domain_error": (
        """
network InitialAndLag {
    state x
    block T = mlp()
    layers 2
    update {
        x+ = x - x[0] + k/(k+1)*x- - T(x)
    }
}
""",
        Exception,
    ),
    # A sum and a lag scaled by k/(k+1): the analysis evaluates a layer matrix holding
    # (k - 1)/k at k = 0 (a ZeroDivisionError out of compile and check_source).
    "analysis_division_by_zero": (
        """
network SumAndScaledLag {
    state x, y
    block T = mlp()
    layers 2
    output y
    update {
        x+ = x - 0.1*T(x)
        y+ = y - 0.5*sum(i = 0..k, x[i]) + 0.1*k/(k+1)*(x - x-)
    }
}
""",
        ZeroDivisionError,
    ),
    # x[0] scaled by a schedule written with min (or max): the analysis asks sympy for
    # the layers where the coefficient vanishes, which it cannot solve
    # (NotImplementedError out of compile and check_source).
    "analysis_min_schedule": (
        """
network MinSchedule {
    state x
    param p = min(0.5, k/4)
    block T = mlp()
    layers 4
    update { x+ = x - 0.1*T(x) + 0.5*p*x[0] }
}
""",
        NotImplementedError,
    ),
    # ... and by a recursive schedule.
    "analysis_recursive_schedule": (
        """
network RecursiveScalesInitial {
    state x
    param tk[0] = 1
    param tk[k+1] = tk/(1 + tk)
    block T = mlp()
    layers 4
    update { x+ = x - 0.1*T(x) + 0.5*(tk - 1)*x[0] }
}
""",
        NotImplementedError,
    ),
    # A local holding x[0] and a block of x - x-, read at two lags with coefficients in
    # k: the consistency check compares a NaN step h with 0 (sympy's TypeError "Invalid
    # NaN comparison" out of compile; found by the 10,000-case campaign, seed 2000180).
    "analysis_nan_step": (
        """
network NanStep {
    state y
    block T = mlp()
    layers 5
    update {
        g = -1/(k+2)*T(y - y-) + 0.1*y[0]
        y+ = y - 1/(k+2)*g[k-2] - 0.125*g-
    }
}
""",
        TypeError,
    ),
    # `k` in a coefficient holding a learnable param reads the layer loop's k, not
    # start + k: from a later first layer, t*k*T(x) is computed as at k = 0, 1, ...
    "learnable_times_k_ignores_start": (
        """
network LearnableTimesKStart {
    state x
    param t = 0.5 learnable positive
    param s = 1/(k+1)
    block T = mlp()
    layers 2
    update { x+ = x - t*k*T(x) - s*T(x) }
}
""",
        None,
    ),
    # ... and when nothing else reads k, the class takes no `start` at all (docs/language.md
    # section 10: a rule whose coefficients depend on k takes it).
    "learnable_times_k_without_start": (
        """
network LearnableTimesK {
    state x
    param t = 0.5 learnable positive
    block T = mlp()
    layers 2
    update { x+ = x - t*k*T(x) }
}
""",
        TypeError,
    ),
    # ... so a model stage continuing the recurrence (carry states) runs from k = 0: its
    # t*k*T(x) is 0 where the rule says t*1*T(x), and t gets no gradient there.
    "learnable_times_k_in_a_continuing_stage": (
        """
model RestartsK {
    input [3, 8, 8]
    stem conv(out=4, kernel=3)
    stage LearnableK(dim=4, depth=1)
    stage LearnableK(dim=4, depth=1)
    head none
}

network LearnableK {
    state x
    param t = 0.5 learnable positive
    block T = conv()
    update { x+ = x - t*k*T(x) }
}
""",
        None,
    ),
}
SIGNATURE = {
    "analysis_recursive_schedule": "analysis_min_schedule",
    "learnable_times_k_without_start": "learnable_times_k_ignores_start",
    "learnable_times_k_in_a_continuing_stage": "learnable_times_k_ignores_start",
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_what_the_campaign_found(name):
    text, _ = FOUND[name]
    networks = [part.split()[0] for part in text.split("network ")[1:]]
    if "model " in text:
        case = Case(0, "model", text, networks, model="RestartsK", features={"carry:states"})
    else:
        case = Case(0, "network", text, networks, start=1 if "TimesK" in text else 0)
    (outcome,) = check_batch([case])
    if outcome.finding and outcome.known == SIGNATURE.get(name, name):
        pytest.xfail(f"{name}: {outcome.message.strip().splitlines()[-1]}")
    assert outcome.status == "compared", outcome.message


def test_the_found_bugs_are_named_by_their_signature():
    assert {SIGNATURE.get(name, name) for name in FOUND} <= set(KNOWN)
    # The analysis no longer raises it (tests/test_known_bugs.py): sympy's own error stands in.
    text = FOUND["analysis_domain_error"][0]
    caught = DomainError("Numerical domain expected, got ZZ[zoo]")
    assert known_bug(text, caught) == "analysis_domain_error"


def test_the_pilot_seeds_are_reproducible():
    # bench/differential.py's case i of seed S is campaign_case(S*1_000_000 + i).
    rng = random.Random(0)
    seeds = [rng.randrange(10**7) for _ in range(3)]
    assert [campaign_case(s).seed for s in seeds] == seeds


def test_a_rejected_case_leaves_the_rest_of_its_batch_compared():
    valid = "network Good{i} {{\n    state x\n    block T = mlp()\n    update {{ x+ = x - 0.5*T(x) }}\n}}\n"
    invalid = "network Bad {\n    state x\n    block T = mlp()\n    update { x+ = x*T(x) }\n}\n"
    cases = [
        Case(1, "network", valid.format(i=1), ["Good1"]),
        Case(2, "network", invalid, ["Bad"]),
        Case(3, "network", valid.format(i=3), ["Good3"]),
    ]
    outcomes = check_batch(cases)
    assert [o.status for o in outcomes] == ["compared", "rejected", "compared"]
    assert outcomes[1].message.startswith("4:")  # the line within its own case
    assert "product of two tensor expressions" in outcomes[1].message
