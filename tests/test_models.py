"""Models: the generated classifier, carrying the iterates across stages, certificates."""

import json

import pytest
import torch
from conftest import assert_generated_tests_pass, run_optgen
from torch.utils.flop_counter import FlopCounterMode

import optgen

STAGES = """
network HeavyBall {
    state x
    param t = 0.5
    param beta = 0.5
    block T = conv(hidden=dim)
    layers 2
    update { x+ = x - t*T(x) + beta*(x - x-) }
}

network Nesterov {
    state x, y
    init y = x
    param t = 0.5
    param beta = 0.9 in [0, 1)
    block T = conv(hidden=dim)
    layers 2
    update {
        x+ = y - t*T(y)
        y = x+ + beta*(x+ - x)
    }
}

network Gd {
    state x
    param t = 0.5
    block T = conv(hidden=dim)
    update { x+ = x - t*T(x) }
}

network Apg2 {
    state x, z
    init z = x
    param theta = 2/(k+2)
    param t = 0.5
    block T = conv(hidden=dim)
    layers 2
    update {
        y = (1 - theta)*x + theta*z
        z+ = z - (t/theta)*T(y)
        x+ = (1 - theta)*x + theta*z+
    }
}
"""

CLASSIFIER = STAGES + """
model Staged {
    input [3, 8, 8]
    stem conv(out=4, kernel=3)
    stage HeavyBall(dim=4, depth=2)
    down conv(out=8, stride=2)
    stage HeavyBall(dim=8, depth=2)
    down pool(out=8) carry output
    stage Gd(dim=8, depth=1)
    head classifier(classes=5)
}
"""


def load(text: str, name: str) -> dict:
    namespace: dict = {}
    source = optgen.compile_source(text, "models.opt")[name]
    exec(compile(source, name, "exec"), namespace)
    return namespace


def test_the_classifier_follows_timm_conventions():
    Staged = load(CLASSIFIER, "staged.py")["Staged"]
    model = Staged()
    assert model.num_classes == 5 and model.num_features == 8
    assert isinstance(model.stages, torch.nn.ModuleList) and len(model.stages) == 3
    x = torch.randn(2, 3, 8, 8)
    assert model(x).shape == (2, 5)
    assert model.forward_features(x).shape == (2, 8, 2, 2)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 8)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7)
    assert Staged(num_classes=3, in_chans=1)(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    assert set(Staged.RULES) == {"HeavyBall", "Gd"}
    # One certificate per stage, in stage order, at the stage's depth and first layer.
    assert [c["name"] for c in Staged.CERTIFICATES] == ["HeavyBall", "HeavyBall", "Gd"]
    assert [(c["depth"], c.get("start", 0)) for c in Staged.CERTIFICATES] == [
        (2, 0),
        (2, 2),
        (1, 0),
    ]
    assert Staged.CERTIFICATE["universal"]["guaranteed"] is True


def test_flops_and_params_are_measured_on_the_module():
    Staged = load(CLASSIFIER, "staged.py")["Staged"]
    torch.manual_seed(0)
    model = Staged().eval()
    assert Staged.PARAMS == sum(p.numel() for p in model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 8, 8))
    assert Staged.FLOPS == counter.get_total_flops() > 0


def carried(rule: str) -> str:
    return STAGES + f"""
model Carried {{
    input [4, 6, 6]
    stem conv(out=4)
    stage {rule}(dim=4, depth=2)
    stage {rule}(dim=4, depth=3)
    head none
}}
"""


@pytest.mark.parametrize("rule", ["HeavyBall", "Nesterov", "Apg2"])
def test_carrying_the_states_through_identity_transitions_is_one_longer_network(rule):
    # Apg2's theta = 2/(k+2) depends on the layer: the second stage goes on at k = 2.
    namespace = load(carried(rule), "carried.py")
    model = namespace["Carried"]().double().eval()
    single = namespace[rule](4, depth=5).double()
    for k in range(5):
        stage, layer = (0, k) if k < 2 else (1, k - 2)
        single.blocks["T"][k] = model.stages[stage].blocks["T"][layer]
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = single(model.stem(x))
        torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)


def test_carrying_the_output_equals_the_chained_modules():
    text = carried("HeavyBall").replace(
        "stage HeavyBall(dim=4, depth=3)", "norm carry output\n    stage HeavyBall(dim=4, depth=3)"
    )
    namespace = load(text, "carried.py")
    model = namespace["Carried"]().double().eval()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        chained = model.stages[1](model.transitions[0](model.stages[0](model.stem(x))))
        torch.testing.assert_close(model(x), chained, rtol=1e-9, atol=1e-9)
    # Carrying the states instead differs: x- goes through the transition too.
    states = load(text.replace("carry output", "carry states"), "carried.py")["Carried"]
    assert (
        "batched = self.transitions[0](torch.cat(slots))\n"
        in optgen.compile_source(text.replace("carry output", "carry states"), "m.opt")[
            "carried.py"
        ]
    )
    assert states().double().eval()(x).shape == x.shape


def test_carried_slots_share_one_batchnorm_statistic_in_training_and_eval():
    """Slot by slot, a transition's BatchNorm normalized x and x- each on its own in
    training but with one running statistic in eval: the trained network was not the one
    tested (heavy ball's MNIST error 69 % in eval, 5 % with batch statistics)."""
    text = carried("HeavyBall").replace(
        "stage HeavyBall(dim=4, depth=3)", "norm carry states\n    stage HeavyBall(dim=4, depth=3)"
    )
    model = load(text, "carried.py")["Carried"]().double()
    norm = model.transitions[0]
    calls = []
    norm.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    model.train()
    slots = model.stages[0].forward_slots(model.stages[0].init_slots(model.stem(x)))
    model(x)
    assert calls == [3 * len(slots)]  # one call on every slot at once
    # The same affine map on each slot: the momentum x - x- is scaled, not shifted.
    with torch.no_grad():
        out = norm(torch.cat(slots)).chunk(len(slots))
    var = torch.cat(slots).var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    expected = (
        (slots[0] - slots[1]) / torch.sqrt(var + norm.norm.eps) * norm.norm.weight.view(1, -1, 1, 1)
    )
    torch.testing.assert_close(out[0] - out[1], expected, rtol=1e-9, atol=1e-9)


def test_the_generated_model_tests_pass(tmp_path):
    for name, text in optgen.compile_source(CLASSIFIER, "models.opt").items():
        if "staged" in name:
            (tmp_path / name).write_text(text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["staged.py", "test_staged.py"]
    assert_generated_tests_pass(tmp_path, tmp_path)


def test_the_model_certificate_names_the_deciding_stage(opt_file):
    bad = CLASSIFIER.replace("param beta = 0.5\n", "param beta = 1.2\n", 1)
    (cert,) = [c for c in optgen.check_source(bad, "m.opt") if c.get("kind") == "model"]
    assert cert["universal"]["guaranteed"] is False
    assert cert["universal"]["reasons"][0].startswith(
        "stage 0 (HeavyBall) is not guaranteed: not zero-stable: root 1.2 of rho"
    )
    path = opt_file(bad, "m.opt")
    result = run_optgen("check", str(path))
    assert "model Staged: 3 stage(s)" in result.stdout
    assert "  stage 0 HeavyBall: zero-stable no, consistent no, universal not guaranteed" in (
        result.stdout
    )
    assert run_optgen("check", str(path), "--strict").returncode == 1
    listing = json.loads(run_optgen("check", str(opt_file(CLASSIFIER, "ok.opt")), "--json").stdout)
    assert [c["name"] for c in listing if c.get("kind") == "model"] == ["Staged"]


def test_inspect_summary_lists_every_part_with_params_flops_and_shapes(opt_file):
    path = opt_file(CLASSIFIER, "m.opt")
    result = run_optgen("inspect", str(path), "--summary")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "model Staged: input [3, 8, 8], one image"
    rows = [line for line in lines[2:] if not line.strip().startswith("(")]
    names = [line[2:].split("  ")[0] for line in rows]
    assert names == [
        "stem conv(4)",
        "stage 0 HeavyBall(dim=4, depth=2)",
        "down conv(8), carry states",
        "stage 1 HeavyBall(dim=8, depth=2)",
        "down pool(8), carry output",
        "stage 2 Gd(dim=8, depth=1)",
        "head classifier(5)",
        "total",
    ]
    Staged = load(CLASSIFIER, "staged.py")["Staged"]
    total = rows[-1].split()
    assert total[1] == f"{Staged.PARAMS:,}" and total[2] == f"{Staged.FLOPS:,}"
    assert total[3] == f"{Staged.MACS:,}" and 2 * Staged.MACS == Staged.FLOPS
    assert "[8, 2, 2]" in rows[-3] and total[4] == "[5]"
    assert lines[1].split() == ["part", "params", "FLOPs", "MACs", "output", "universal"]
    assert "a multiply-add counts 2 FLOPs and 1 MAC" in lines[-1]
    only_networks = opt_file(STAGES, "n.opt")
    refused = run_optgen("inspect", str(only_networks), "--summary")
    assert refused.returncode == 1
    assert (
        refused.stderr
        == f"optgen: error: --summary describes models, and {only_networks} has none\n"
    )


def test_the_catalog_models_are_compiled_fresh_into_generated():
    from conftest import EXAMPLES, ROOT

    files = sorted(str(p.relative_to(ROOT)) for p in (EXAMPLES / "models").glob("*.opt"))
    assert files, "no catalog model"
    result = run_optgen("compile", *files, "--check")
    assert result.returncode == 0, result.stderr + "\nregenerate: optgen compile " + " ".join(files)


def test_carry_states_between_stages_that_carry_different_values_is_an_error(opt_file, tmp_path):
    text = STAGES + """
model Mixed {
    input [3, 8, 8]
    stem conv(out=4)
    stage HeavyBall(dim=4, depth=2)
    norm carry states
    stage Gd(dim=4, depth=2)
    head none
}
"""
    with pytest.raises(optgen.OptgenError) as err:
        optgen.compile_source(text, "m.opt")
    (diagnostic,) = err.value.diagnostics
    line = text.splitlines().index("    norm carry states") + 1
    assert (diagnostic["line"], diagnostic["col"]) == (line, 5)
    assert diagnostic["message"] == (
        "carry states from HeavyBall to Gd: their layers carry different values (x, x_prev) and (x)"
    )
    assert diagnostic["hint"] == "write carry output after the transition"
    out = tmp_path / "out"
    result = run_optgen("compile", str(opt_file(text, "m.opt")), "-o", str(out))
    assert (
        result.returncode == 1
        and f"m.opt:{line}:5: error: carry states from HeavyBall" in result.stderr
    )
    assert not out.exists()


def test_inspect_graph_draws_the_model(opt_file):
    path = opt_file(CLASSIFIER, "m.opt")
    mermaid = run_optgen("inspect", str(path), "--network", "Staged", "--graph", "mermaid")
    assert mermaid.returncode == 0, mermaid.stderr
    lines = mermaid.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    assert '    stage0["stage 0: HeavyBall x2"]' in lines
    assert "    stem -->|4x8x8| stage0" in lines
    assert "    stage0 -->|carry states| transition0" in lines
    assert "    transition1 -->|8x2x2| stage2" in lines
    assert "    stage2 -->|8x2x2| head" in lines
    dot = run_optgen("inspect", str(path), "--network", "Staged", "--graph", "dot")
    assert dot.stdout.startswith("digraph Staged {") and "  stage1 -> transition1" in dot.stdout


def test_the_training_example_of_docs_models_runs_and_lowers_the_loss(capsys, monkeypatch):
    import re

    from conftest import ROOT

    text = (ROOT / "docs" / "models.md").read_text()
    code = re.search(r"## A few training steps\n\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(ROOT)
    exec(compile(code, "docs/models.md", "exec"), {})
    losses = [float(line.split()[1]) for line in capsys.readouterr().out.splitlines()]
    assert len(losses) == 5 and losses[-1] < losses[0]


def test_a_stage_that_carries_the_states_in_continues_the_layer_index():
    namespace = load(carried("Apg2"), "carried.py")
    model = namespace["Carried"]()
    assert [stage.start for stage in model.stages] == [0, 2]
    assert model.stages[1].theta == [2 / 4, 2 / 5, 2 / 6]
    text = optgen.compile_source(carried("Apg2"), "m.opt")["carried.py"]
    assert "Apg2(4, depth=3, start=2)," in text and "layers k = 2..4" in text
    # After `carry output` the stage starts from its own init, at k = 0.
    restarted = carried("Apg2").replace(
        "    stage Apg2(dim=4, depth=3)", "    norm carry output\n    stage Apg2(dim=4, depth=3)"
    )
    assert [s.start for s in load(restarted, "carried.py")["Carried"]().stages] == [0, 0]
    # A rule whose coefficients do not depend on k takes no `start`.
    assert "start: int" not in optgen.compile_source(carried("HeavyBall"), "m.opt")["heavy_ball.py"]


SCHEDULED = STAGES + """
network Growing {
    state x
    param t = 0.5
    param beta = k/2
    block T = conv(hidden=dim)
    layers 2
    update { x+ = x - t*T(x) + beta*(x - x-) }
}

model Long {
    input [3, 8, 8]
    stem conv(out=4)
    stage Growing(dim=4, depth=4)
    head classifier(classes=2)
}
"""


def test_a_stage_is_certified_at_its_own_depth(opt_file):
    """beta = k/2 passes over the declared 2 layers and fails at k = 2 of a 4-layer stage."""
    certs = {c["name"]: c for c in optgen.check_source(SCHEDULED, "m.opt")}
    assert certs["Growing"]["zero_stable"] is True and certs["Growing"]["depth"] == 2
    model = certs["Long"]
    assert model["stages"][0]["depth"] == 4 and model["stages"][0]["zero_stable"] is False
    assert model["universal"]["guaranteed"] is False
    assert model["universal"]["reasons"][0].startswith(
        "stage 0 (Growing) is not guaranteed: not zero-stable"
    )
    Long = load(SCHEDULED, "long.py")["Long"]
    assert Long.CERTIFICATES[0]["zero_stability"].startswith("at layer k=2:")
    path = opt_file(SCHEDULED, "m.opt")
    assert run_optgen("check", str(path)).returncode == 0
    strict = run_optgen("check", str(path), "--strict")
    assert strict.returncode == 1 and "m.opt:" in strict.stderr and "k=2" in strict.stderr


IMPLICIT = STAGES + """
network Prox {
    state x
    param t = 0.5
    block T = conv(hidden=dim)
    layers 1
    solver anderson(m=3, max_iter=7, tol=1e-4)
    update { x+ = x - t*T(x+) }
}

model Solving {
    input [3, 8, 8]
    stem conv(out=4)
    stage Gd(dim=4, depth=1)
    norm carry output
    stage Prox(dim=4, depth=1)
    head classifier(classes=3)
}
"""


def test_a_solving_stage_is_counted_at_its_whole_iteration_budget(tmp_path):
    Solving = load(IMPLICIT, "solving.py")["Solving"]
    assert isinstance(Solving.FLOPS, int) and Solving.FLOPS > 0
    torch.manual_seed(0)
    model = Solving().eval()
    solver = model.stages[1].solver
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 8, 8))
    converged = counter.get_total_flops()
    assert model.stages[1].solver == solver  # measuring leaves the module as it was
    assert converged < Solving.FLOPS  # a converged solve stops before max_iter
    for name, text in optgen.compile_source(IMPLICIT, "m.opt").items():
        if "solving" in name:
            (tmp_path / name).write_text(text)
    assert_generated_tests_pass(tmp_path, tmp_path)
