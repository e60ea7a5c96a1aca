"""Differential tests: every compiled module against the reference interpreter.

`optgen.reference` evaluates the IR from the language's definition and shares no code with
the code writer, so a miscompile (a lowering that reads the wrong value, a fused kernel
with a wrong coefficient) shows up here as a disagreement, on the output or on a gradient.
Each module is built in float64 with its own blocks; the reference reads those blocks and
its raw params. Explicit rules agree to 1e-10 (relative); implicit and equilibrium ones to
1e-8, both sides solving to a relative residual of 1e-12 or less.
"""

from __future__ import annotations

import ast
import random
import warnings
from pathlib import Path

import pytest
import torch
from conftest import construct
from fuzzing import generate_program
from reference_rules import FOUND_BUGS, data_program, rich_program

import optgen
from optgen import api
from optgen.reference import (
    FixedPoint,
    NotConverged,
    Unsupported,
    evaluate,
    evaluate_model,
    trace,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
EXPLICIT_RTOL = 1e-10
SOLVED_RTOL = 1e-8
SOLVER_TOL = 1e-13  # the compiled module's solves (the reference's own: 1e-12)
DIM, DEPTH = 4, 3
SHAPES = {"vector": (3, DIM), "image": (2, DIM, 5, 5), "sequence": (2, 3, DIM)}
FUZZ_CASES = 30


def _compiled(text: str, filename: str):
    """(network IR by name, module class by name) of a source."""
    with warnings.catch_warnings():
        # Rules that fail their convergence conditions compile with a warning: not ours.
        warnings.simplefilter("ignore", optgen.OptgenWarning)
        classes = optgen.loads(text, filename)
        result = api.frontend(text, filename)
    return {n.name: n for n in result.networks}, classes, result


@pytest.fixture(scope="module")
def catalog(compiled_catalog):
    return compiled_catalog


CATALOG_NAMES = [
    line.split()[1]
    for path in sorted(EXAMPLES.glob("*.opt"))
    for line in path.read_text().splitlines()
    if line.startswith("network ")
]


# ---------------------------------------------------------------------- helpers
def build(network, cls, seed: int, dim: int = DIM, depth: int = DEPTH):
    """A float64 module with random blocks and learnable params moved off their starts
    (so that every layer and channel holds its own value); blocks of a solved rule are
    scaled so that its maps contract (both solvers then reach one fixed point)."""
    torch.manual_seed(seed)
    module = construct(cls, dim, depth=depth).double()
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.startswith("blocks."):
                if network.kind != "explicit":
                    parameter.mul_(0.3)
            else:
                parameter.add_(0.3 * torch.randn_like(parameter))
    if network.kind != "explicit":
        module.solver = {"name": "anderson", "m": 5, "max_iter": 500, "tol": SOLVER_TOL}
        module.backward = {"name": "implicit", "max_iter": 500, "tol": SOLVER_TOL}
    return module


def sample_input(network, seed: int, dim: int = DIM) -> torch.Tensor:
    torch.manual_seed(1000 + seed)
    shape = SHAPES[str(network.layout)]
    return torch.randn((*shape[:-1], dim) if shape[-1] == DIM else shape, dtype=torch.float64)


# A value that is zero in exact arithmetic comes out as 0 in one implementation and as
# rounding residue (1e-17) in the other (a block applied to `nn - z` with nn == z, which
# the two compute in different orders). So each tensor's error is measured against its own
# largest entry, but never against less than this fraction of the largest gradient (or of
# 1, the scale of the input: a random rule can cancel its output down to rounding noise).
FLOOR = 1e-4


def relative_error(actual, expected, floor: float = 0.0) -> float:
    """max |actual - expected| / max(max |expected|, floor) (None: no gradient, zeros)."""
    if actual is None and expected is None:
        return 0.0
    if actual is None:
        actual = torch.zeros_like(expected)
    if expected is None:
        expected = torch.zeros_like(actual)
    scale = max(_largest(expected), floor, 1e-300)
    return (actual - expected).abs().max().item() / scale


def _largest(tensor) -> float:
    return 0.0 if tensor is None or tensor.numel() == 0 else tensor.abs().max().item()


def outputs_and_gradients(module, run, x: torch.Tensor):
    """run(x) and the gradients of a fixed random projection of it w.r.t. x and every
    parameter of the module."""
    x = x.detach().clone().requires_grad_(True)
    out = run(x)
    # Not randn_like: it copies the output's strides (a permuted block output), and the
    # same random numbers would then weigh other entries in the two runs.
    weights = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(7))
    inputs = [x, *module.parameters()]
    grads = torch.autograd.grad((out * weights).sum(), inputs, allow_unused=True)
    return out.detach(), grads


def differences(network, module, x) -> dict[str, float]:
    """Relative differences of module and reference: output, input gradient, each param's."""
    return compare(module, lambda z: evaluate(network, module, z), x)


def compare(module, reference_run, x) -> dict[str, float]:
    """Relative differences of `module(x)` and `reference_run(x)` and of their gradients."""
    compiled = outputs_and_gradients(module, module, x)
    reference = outputs_and_gradients(module, reference_run, x)
    names = ["output", "d/dinput", *(f"d/d{n}" for n, _ in module.named_parameters())]
    values = [compiled[0], *compiled[1]]
    expected = [reference[0], *reference[1]]
    floor = FLOOR * max(1.0, *(_largest(g) for g in reference[1]))
    return {n: relative_error(a, b, floor) for n, a, b in zip(names, values, expected)}


def assert_agrees(network, module, x, rtol=None):
    rtol = rtol or (EXPLICIT_RTOL if network.kind == "explicit" else SOLVED_RTOL)
    found = differences(network, module, x)
    worst = max(found, key=found.get)
    assert found[worst] <= rtol, f"{network.name}: {worst} differs by {found[worst]:.3g}"


# ---------------------------------------------------------------------- the catalog
@pytest.mark.parametrize("name", CATALOG_NAMES)
def test_every_catalog_network_agrees_with_the_reference(catalog, name):
    networks, classes = catalog
    network = networks[name]
    module = build(network, classes[name], seed=len(name))
    assert_agrees(network, module, sample_input(network, len(name)))


def test_the_reference_reads_learnable_params_as_the_module_reports_them(catalog):
    # params() is the module's own account of the values its rule uses; the reference
    # computes them from the raw parameters and the IR's constraint.
    from optgen.reference.params import LearnableParams

    networks, classes = catalog
    for name in ("Nesterov", "HeavyBallChannel", "Lista"):
        module = build(networks[name], classes[name], seed=3)
        values = LearnableParams(networks[name], module).values
        reported = module.params()
        for param, value in values.items():
            torch.testing.assert_close(
                value.detach().reshape(reported[param.name].shape),
                reported[param.name],
                rtol=1e-14,
                atol=0,
            )


def test_the_reference_matches_a_loop_written_by_hand(catalog):
    # The interpreter itself against Nesterov written out in torch, so that a shared
    # misreading of the IR by both implementations would still show.
    networks, classes = catalog
    module = build(networks["Nesterov"], classes["Nesterov"], seed=5)
    x = sample_input(networks["Nesterov"], 5)
    t = torch.nn.functional.softplus(module.t_raw)[0]
    state, y = x, x
    for k in range(DEPTH):
        state_next = y - t * module.blocks["T"][k](y)
        y = state_next + 0.9 * (state_next - state)
        state = state_next
    torch.testing.assert_close(evaluate(networks["Nesterov"], module, x), state, rtol=1e-14, atol=0)


def test_a_deeper_module_and_a_later_start_agree(catalog):
    # Fista's tk past the declared depth (the module continues the recursion in float64,
    # the reference evaluates it exactly) and NesterovK from k = 2 (its `start`).
    networks, classes = catalog
    fista = build(networks["Fista"], classes["Fista"], seed=1, depth=20)
    assert_agrees(networks["Fista"], fista, sample_input(networks["Fista"], 1))
    torch.manual_seed(2)
    later = classes["NesterovK"](DIM, depth=DEPTH, start=2).double()
    assert_agrees(networks["NesterovK"], later, sample_input(networks["NesterovK"], 2))


# ---------------------------------------------------------------------- fuzzed rules
def _fuzz_source() -> str:
    """FUZZ_CASES generated rules in one source (one compile), renamed apart."""
    rng = random.Random(20240601)
    programs = []
    for index in range(FUZZ_CASES):
        text = generate_program(rng)
        first, rest = text.split("{", 1)
        programs.append(f"network Fuzzed{index} {{{rest}")
    return "\n".join(programs)


@pytest.fixture(scope="module")
def fuzzed():
    networks, classes, _ = _compiled(_fuzz_source(), "fuzz.opt")
    return networks, classes


@pytest.mark.parametrize("index", range(FUZZ_CASES))
def test_fuzzed_rules_agree_with_the_reference(fuzzed, index):
    networks, classes = fuzzed
    name = f"Fuzzed{index}"
    network = networks[name]
    module = build(network, classes[name], seed=index, depth=network.depth)
    assert_agrees(network, module, sample_input(network, index))


# A seed whose 20 rules hold every construct the generator once avoided (checkpoint with
# windows and local history, tk[k+1] in a map, learnable params beside recursive schedules).
RICH_SEED, RICH_CASES = 10, 20


@pytest.fixture(scope="module")
def rich():
    rng = random.Random(RICH_SEED)
    text = "\n".join(rich_program(rng, index) for index in range(RICH_CASES))
    networks, classes, _ = _compiled(text, "rich.opt")
    return networks, classes


@pytest.mark.parametrize("index", range(RICH_CASES))
def test_richer_random_rules_agree_with_the_reference(rich, index):
    networks, classes = rich
    name = f"Rich{index}"
    network = networks[name]
    module = build(network, classes[name], seed=index, depth=network.depth)
    assert_agrees(network, module, sample_input(network, index))


# Random rules with per-sample coefficients (dot, norm): explicit ones only, since an
# implicit rule, an equilibrium or `backward reversible` refuses them.
DATA_SEED, DATA_CASES = 27, 12


@pytest.fixture(scope="module")
def data_rules():
    rng = random.Random(DATA_SEED)
    text = "\n".join(data_program(rng, index) for index in range(DATA_CASES))
    networks, classes, _ = _compiled(text, "data.opt")
    return networks, classes


@pytest.mark.parametrize("index", range(DATA_CASES))
def test_random_rules_with_per_sample_steps_agree_with_the_reference(data_rules, index):
    networks, classes = data_rules
    name = f"Data{index}"
    network = networks[name]
    module = build(network, classes[name], seed=index, depth=network.depth)
    assert_agrees(network, module, sample_input(network, index))


# ---------------------------------------------------------------------- known miscompiles
SUM_BUG = """
network SumBug {
    state x, m
    param t = 0.5
    block T = custom("torch.nn:Identity", universal=no)
    layers 1
    update {
        x+ = x - t*T(x)
        m+ = sum(i = 0..k, x[i])
    }
    output m
}
"""


@pytest.fixture(scope="module")
def sum_bug():
    networks, classes, _ = _compiled(SUM_BUG, "sum_bug.opt")
    return networks["SumBug"], classes["SumBug"]


@pytest.mark.parametrize("depth, expected", [(1, 1.0), (2, 1.5), (3, 1.75)])
def test_the_reference_sums_the_iterates_x0_to_xk(sum_bug, depth, expected):
    # x_i = 0.5^i with T the identity: m_depth = x_0 + ... + x_(depth-1).
    network, cls = sum_bug
    module = cls(4, depth=depth).double()
    out = evaluate(network, module, torch.ones(1, 4, dtype=torch.float64))
    torch.testing.assert_close(out, torch.full((1, 4), expected, dtype=torch.float64))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_sum_bug_agrees_with_the_reference(sum_bug, depth):
    network, cls = sum_bug
    module = cls(4, depth=depth).double()
    assert_agrees(network, module, torch.ones(1, 4, dtype=torch.float64))


# The same defect where the state is assigned without `+` (`x = ...`, read as the new value
# afterwards) and in a sliding window: a sum's x[k] is still x_k. Fixed with SumBug
# (tests/test_miscompiles.py); these now agree with the reference.
SUM_BUG_VARIANTS = """
network SumBugNoPlus {
    state x, m
    block T = mlp()
    layers 3
    update {
        x = x - 0.5*T(x)
        m+ = m + sum(i = 0..k, x[i])
    }
    output m
}

network SumBugWindow {
    state x, m
    block T = mlp()
    layers 3
    update {
        x+ = x - 0.5*T(x)
        m+ = m + sum(i = k-1..k, x[i])
    }
    output m
}
"""


@pytest.mark.parametrize("name", ["SumBugNoPlus", "SumBugWindow"])
def test_sum_bug_variants_agree_with_the_reference(name):
    networks, classes, _ = _compiled(SUM_BUG_VARIANTS, "sum_bug_variants.opt")
    module = build(networks[name], classes[name], seed=0)
    assert_agrees(networks[name], module, sample_input(networks[name], 0))


@pytest.mark.parametrize("case", sorted(FOUND_BUGS))
def test_the_bugs_found_by_the_reference_agree_with_it(case):
    # Each failed once (an exception in the module or the analysis: reference_rules.py);
    # tests/test_known_bugs.py tests each further, with variations.
    networks, classes, _ = _compiled(FOUND_BUGS[case], f"{case}.opt")
    ((name, network),) = networks.items()
    module = build(network, classes[name], seed=0)
    assert_agrees(network, module, sample_input(network, 0))


HALPERN = """
network Halpern {
    state x
    param t = 0.5
    param lam = 1/(k+2)
    block T = mlp(hidden=2*dim)
    layers 4
    update {
        x+ = lam*x[0] + (1-lam)*(x - t*T(x))
    }
}
"""


def test_halpern_compiles_and_agrees_with_the_reference():
    networks, classes, _ = _compiled(HALPERN, "halpern.opt")
    network = networks["Halpern"]
    module = build(network, classes["Halpern"], seed=11, depth=4)
    assert_agrees(network, module, sample_input(network, 11))


# ---------------------------------------------------------------------- other constructs
CONSTRUCTS = """
network Windows {
    state x, v
    init v = 0
    param t = 0.25
    param c = 0.5 learnable in (0, 1) per_layer
    block T = mlp()
    block S = linear() shared
    layers 5
    update {
        g = T(x)
        v+ = c*v + sum(i = k-2..k, g[i]) - 0.1*sum(i = 2..k, (i+1)*x[i])
        x+ = x - t*v+ + 0.2*(g - g[k-3]) - t*S(relu(x - x-))
    }
}

network Prox {
    state x
    param t = 0.1
    param lo = -0.5 learnable in (-1, 0) per_channel
    param lam = 0.2
    block T = mlp()
    layers 3
    update {
        x+ = clamp(softshrink(x - t*T(x), lam*t), lo, 1) + 0.1*tanh(x) - 0.1*sigmoid(x[k-2])
    }
}

network Powers {
    state x, y
    init y = 0.5*x
    param t = 0.5 learnable positive
    param s = sqrt(2)/(k + 1)^(1/2)
    param tk[0] = 1
    param tk[k+1] = tk/2 + exp(-k)
    block T = mlp()
    layers 4
    update {
        x+ = y - t^2*s*T(y)
        y = x+ + (tk - 1)/tk[k+1]*(x+ - x) + min(s, 0.3)*(input - x)
    }
}

network RelaxedPpm {
    state x, y
    param t = 0.5
    block T = mlp()
    block G = mlp()
    layers 3
    solver fixed_point(max_iter=500, tol=1e-4)
    update {
        x+ = relu(x - t*T(x+))
        y+ = 0.5*y + 0.5*x+ - t*G(y+)
    }
}

network HeavyDeq {
    state x, v
    param t = 0.5
    block T = mlp()
    layers equilibrium
    update {
        v+ = 0.5*v - t*T(x) + t*(input - x)
        x+ = x + 0.5*v+ + 0.2*(x - x-)
    }
}
"""


@pytest.fixture(scope="module")
def constructs():
    networks, classes, _ = _compiled(CONSTRUCTS, "constructs.opt")
    return networks, classes


@pytest.mark.parametrize("name", ["Windows", "Prox", "Powers", "RelaxedPpm", "HeavyDeq"])
def test_other_constructs_agree_with_the_reference(constructs, name):
    networks, classes = constructs
    network = networks[name]
    module = build(network, classes[name], seed=21, depth=network.depth)
    assert_agrees(network, module, sample_input(network, 21))


def test_a_sliding_window_is_clipped_at_layer_zero(constructs):
    # sum(i = k-2..k, g[i]) at layer 1 is g_0 + g_1 (language.md 5.2), checked on the
    # reference's own trace.
    networks, classes = constructs
    network = networks["Windows"]
    module = build(network, classes["Windows"], seed=4, depth=2)
    run = trace(network, module, sample_input(network, 4))
    g = run.locals["g"]
    c = torch.sigmoid(module.c_raw[1])
    x = run.states["x"]
    expected = c * run.states["v"][1] + g[0] + g[1]  # the i >= 2 sum is empty at k = 1
    torch.testing.assert_close(run.states["v"][2], expected, rtol=1e-14, atol=1e-15)
    assert len(x) == 3


def test_a_solve_that_does_not_contract_is_refused(catalog):
    networks, classes = catalog
    module = classes["Ppm"](DIM, depth=1).double()
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(30.0)
    with pytest.raises((NotConverged, FloatingPointError)):
        evaluate(
            networks["Ppm"],
            module,
            torch.randn(3, DIM, dtype=torch.float64),
            solver=FixedPoint(max_iter=50),
        )


def test_what_the_reference_does_not_define_is_refused(catalog):
    # A sum over history in a network whose first layer is k > 0 needs the iterates of
    # the layers before it, which a standalone module does not have.
    networks, classes = catalog
    module = build(networks["Dense"], classes["Dense"], seed=0)
    with pytest.raises(Unsupported, match="sum over history"):
        evaluate(networks["Dense"], module, sample_input(networks["Dense"], 0), start=1)


# ---------------------------------------------------------------------- models
MODELS = """
model Staged {
    input [3, 8, 8]
    stem conv(out=4, kernel=3)
    stage Apg2Image(dim=4, depth=2)
    down conv(out=8, stride=2)
    stage Apg2Image(dim=8, depth=2)
    down pool(out=8) carry output
    stage PpmImage(dim=8, depth=2)
    norm
    stage HeavyImage(dim=8, depth=1)
    head classifier(classes=3)
}

network Apg2Image {
    state x, z
    init z = x
    param theta = 2/(k+2)
    param t = 0.5
    block T = conv()
    update {
        y = (1 - theta)*x + theta*z
        z+ = z - (t/theta)*T(y)
        x+ = (1 - theta)*x + theta*z+ + 0.1*(x[0] - x)
    }
}

network PpmImage {
    state x
    param t = 0.5
    block T = conv()
    update { x+ = x - t*T(x+) }
}

model Tokens {
    input [3, 8, 8]
    stem tokens(out=8, size=4)
    stage NesterovTokens(dim=8, depth=2)
    norm
    stage NesterovTokens(dim=8, depth=1)
    head none
}

network NesterovTokens {
    state x, y
    init y = x
    param t = 0.5 learnable positive
    param beta = k/(k+3)
    block T = transformer(heads=2, expand=2)
    update {
        x+ = y - t*T(y)
        y = x+ + beta*(x+ - x)
    }
}

network HeavyImage {
    state x
    param beta = 0.5 learnable in (0, 1)
    block T = conv()
    update { x+ = x - 0.5*T(x) + beta*(x - x-) }
}
"""


@pytest.fixture(scope="module")
def catalog_models():
    text = "\n".join(p.read_text() for p in sorted((EXAMPLES / "models").glob("*.opt")))
    networks, classes, result = _compiled(text, "models.opt")
    return networks, classes, {m.name: m for m in result.models}


CATALOG_MODELS = [
    line.split()[1]
    for path in sorted((EXAMPLES / "models").glob("*.opt"))
    for line in path.read_text().splitlines()
    if line.startswith("model ")
]


@pytest.mark.slow  # the catalog's models take 20 s to compile (their FLOPs are measured)
@pytest.mark.parametrize("name", CATALOG_MODELS)
def test_every_catalog_model_agrees_with_the_reference_in_eval_mode(catalog_models, name):
    networks, classes, models = catalog_models
    model = models[name]
    torch.manual_seed(len(name))
    module = classes[name]().double().eval()
    image = torch.randn(1, *model.input, dtype=torch.float64)
    found = compare(module, lambda z: evaluate_model(model, networks.values(), module, z), image)
    worst = max(found, key=found.get)
    assert found[worst] <= EXPLICIT_RTOL, f"{worst} differs by {found[worst]:.3g}"


@pytest.fixture(scope="module")
def models():
    networks, classes, result = _compiled(MODELS, "models.opt")
    return networks, classes, {m.name: m for m in result.models}


# Staged: carry states with a schedule going on in k and x[0] carried, `carry output` to
# an implicit stage, `norm` with the default carry; Tokens: the token layout, `head none`.
@pytest.mark.parametrize("name", ["Staged", "Tokens"])
def test_models_agree_with_the_reference_in_eval_mode(models, name):
    networks, classes, by_name = models
    model = by_name[name]
    torch.manual_seed(0)
    module = classes[name]().double().eval()
    with torch.no_grad():
        for stage in module.stages:
            for p in stage.blocks.parameters():
                p.mul_(0.3)
    for index, stage in enumerate(model.stages):
        if networks[stage.network].kind != "explicit":
            module.stages[index].solver = {
                "name": "anderson",
                "m": 5,
                "max_iter": 500,
                "tol": SOLVER_TOL,
            }
            module.stages[index].backward = {"name": "implicit", "max_iter": 500, "tol": SOLVER_TOL}
    image = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    found = compare(module, lambda z: evaluate_model(model, networks.values(), module, z), image)
    worst = max(found, key=found.get)
    assert found[worst] <= SOLVED_RTOL, f"{worst} differs by {found[worst]:.3g}"


# ---------------------------------------------------------------------- independence
ALLOWED_IMPORTS = {"optgen.ir", "optgen.schedules", "optgen.kinds", "optgen.errors"}
ALLOWED_IMPORTS |= {"optgen.source", "optgen.reference"}


def test_the_reference_shares_no_code_with_the_code_writer():
    for path in sorted((ROOT / "optgen" / "reference").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    target = f"optgen.reference.{node.module}" if node.module else None
                elif node.level == 2:
                    target = f"optgen.{node.module}" if node.module else None
                else:
                    target = node.module
                names = [target] if target else [f"optgen.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("optgen"):
                    allowed = any(name == a or name.startswith(a + ".") for a in ALLOWED_IMPORTS)
                    assert allowed, f"{path.name} imports {name}"
                else:
                    assert name.split(".")[0] in {
                        "torch",
                        "sympy",
                        "__future__",
                        "collections",
                        "dataclasses",
                    }, f"{path.name} imports {name}"
