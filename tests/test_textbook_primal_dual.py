"""States of different sizes and operator pairs (issue 27, point 4): PDHG with a
non-square K and a Learned Primal-Dual network, each compiled from the catalog, its blocks
replaced by known maps in float64, against the textbook iteration written here in numpy;
a convolution and its adjoint against a convolution written here in numpy; and every bad
use of a space as a located error."""

import random
import warnings

import numpy
import pytest
import torch
from conftest import EXAMPLES, run_optgen
from test_data_steps import located_errors
from test_reference import assert_agrees
from test_textbook_data_steps import catalog_class, run

import optgen
from optgen import api

BATCH, DIM, M = 4, 5, 8


class Known(torch.nn.Module):
    """A known map in float64, standing for a block."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, z):
        return self.fn(z)


def with_operator(module, weight: numpy.ndarray):
    with torch.no_grad():
        module.blocks["K"][0].weight.copy_(torch.tensor(weight))
    return module


# ---------------------------------------------------------------- PDHG (Condat-Vu)
def textbook_pdhg(A, b, x0, tau, sigma, lam, iterations):
    """Chambolle-Pock with a smooth part (Condat-Vu) for min |x - b|^2/2 + lam |Ax|_1:
    y+ = proj_[-lam, lam](y + sigma A xbar); x+ = x - tau (A'y+ + x - b); xbar+ = 2x+ - x."""
    out = []
    for x in x0:
        xbar, y = x.copy(), numpy.zeros(A.shape[0])
        for _ in range(iterations):
            y = numpy.clip(y + sigma * A @ xbar, -lam, lam)
            x_next = x - tau * (A.T @ y + (x - b))
            xbar, x = 2 * x_next - x, x_next
        out.append(x)
    return numpy.array(out)


@pytest.mark.parametrize("depth", [1, 2, 12])
def test_pdhg_is_the_textbook_iteration_with_a_non_square_operator(depth):
    rng = numpy.random.default_rng(4)
    A = rng.standard_normal((M, DIM)) / 3  # m x dim, m != dim
    b = rng.standard_normal(DIM)
    x0 = rng.standard_normal((BATCH, DIM))
    module = with_operator(catalog_class("pdhg", "PDHG")(DIM, M, depth=depth).double(), A)
    gradient = Known(lambda x: x - torch.tensor(b))
    module.blocks["T"] = torch.nn.ModuleList([gradient] * depth)
    expected = textbook_pdhg(A, b, x0, 0.4, 0.4, 1.0, depth)
    numpy.testing.assert_allclose(run(module, x0), expected, rtol=0, atol=1e-10)


def test_pdhg_reaches_the_solution_of_its_problem():
    """Run long with steps tau*sigma*|A|^2 < 1: the primal iterate solves the problem
    (checked by its optimality condition, x - b + A'y = 0 with y in lam * sign(Ax))."""
    rng = numpy.random.default_rng(5)
    A = rng.standard_normal((M, DIM))
    A /= numpy.linalg.norm(A, 2)
    b = 3 * rng.standard_normal(DIM)
    depth = 2000
    module = with_operator(catalog_class("pdhg", "PDHG")(DIM, M, depth=depth).double(), A)
    module.blocks["T"] = torch.nn.ModuleList([Known(lambda x: x - torch.tensor(b))] * depth)
    x = run(module, b[None, :])[0]
    expected = textbook_pdhg(A, b, b[None, :], 0.4, 0.4, 1.0, depth)[0]
    numpy.testing.assert_allclose(x, expected, rtol=0, atol=1e-10)
    objective = lambda z: 0.5 * numpy.sum((z - b) ** 2) + numpy.abs(A @ z).sum()  # noqa: E731
    for direction in numpy.eye(DIM):
        assert objective(x) <= objective(x + 1e-4 * direction) + 1e-9
        assert objective(x) <= objective(x - 1e-4 * direction) + 1e-9


# ---------------------------------------------------------------- Learned Primal-Dual
def textbook_learned_primal_dual(A, Wd, Wp, x0, sigma, tau, iterations):
    """Adler and Oktem's scheme in residual form, dual in R^m and primal in R^n:
    h+ = h + D(h + sigma A(f - f0)); f+ = f - P(f + tau A'h+), D and P known maps."""
    out = []
    for f0 in x0:
        f, h = f0.copy(), numpy.zeros(A.shape[0])
        for _ in range(iterations):
            h = h + numpy.tanh(Wd @ (h + sigma * A @ (f - f0)))
            f = f - numpy.tanh(Wp @ (f + tau * A.T @ h))
        out.append(f)
    return numpy.array(out)


@pytest.mark.parametrize("depth", [1, 3, 10])
def test_learned_primal_dual_is_its_scheme_with_known_blocks(depth):
    rng = numpy.random.default_rng(6)
    A = rng.standard_normal((M, DIM)) / 2
    Wd = rng.standard_normal((M, M)) / 4
    Wp = rng.standard_normal((DIM, DIM)) / 4
    x0 = rng.standard_normal((BATCH, DIM))
    cls = catalog_class("learned_primal_dual", "LearnedPrimalDual")
    module = with_operator(cls(DIM, M, depth=depth).double(), A)
    dual = Known(lambda h: torch.tanh(h @ torch.tensor(Wd).T))
    primal = Known(lambda f: torch.tanh(f @ torch.tensor(Wp).T))
    module.blocks["D"] = torch.nn.ModuleList([dual] * depth)
    module.blocks["P"] = torch.nn.ModuleList([primal] * depth)
    expected = textbook_learned_primal_dual(A, Wd, Wp, x0, 0.5, 0.5, depth)
    numpy.testing.assert_allclose(run(module, x0), expected, rtol=0, atol=1e-10)


def test_the_dual_state_has_its_own_size_and_the_output_the_input_shape():
    cls = catalog_class("learned_primal_dual", "LearnedPrimalDual")
    module = cls(DIM, 11, depth=2)
    assert module.m == 11 and module.blocks["K"][0].weight.shape == (11, DIM)
    assert module(torch.randn(3, 2, DIM)).shape == (3, 2, DIM)
    with pytest.raises(ValueError, match="m must be an int"):
        cls(DIM, 0)


# ---------------------------------------------------------------- a convolution and K^T
CONV_PDHG = """
network ConvPDHG {
    state x, y: m
    init y = 0
    param tau = 0.3
    param sigma = 0.3
    block K = conv_operator(from=dim, to=m, kernel=3) shared
    block T = conv(kernel=3)
    layers 3
    update {
        y+ = clamp(y + sigma*K(x), -1, 1)
        x+ = x - tau*(K^T(y+) + T(x))
    }
}
"""


def numpy_conv(x: numpy.ndarray, w: numpy.ndarray) -> numpy.ndarray:
    """Cross-correlation with zero padding (same size): x [C, H, W], w [O, C, k, k]."""
    k = w.shape[-1]
    p = k // 2
    padded = numpy.pad(x, ((0, 0), (p, p), (p, p)))
    out = numpy.zeros((w.shape[0], *x.shape[1:]))
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            out[:, i, j] = numpy.tensordot(w, padded[:, i : i + k, j : j + k], axes=3)
    return out


def test_a_convolution_operator_and_its_adjoint_are_those_of_numpy():
    """K as the matrix of numpy's convolution, K^T as its transpose: the generated
    module's conv2d and conv_transpose2d with one weight agree (and PDHG through them)."""
    rng = numpy.random.default_rng(7)
    channels, m, size, depth = 2, 3, 5, 3
    w = rng.standard_normal((m, channels, 3, 3)) / 3
    n = channels * size * size
    matrix = numpy.stack(
        [numpy_conv(e.reshape(channels, size, size), w).ravel() for e in numpy.eye(n)], axis=1
    )
    cls = optgen.loads(CONV_PDHG, "conv_pdhg.opt")["ConvPDHG"]
    module = with_operator(cls(channels, m, depth=depth).double(), w)
    module.blocks["T"] = torch.nn.ModuleList([Known(lambda x: 0.5 * x)] * depth)
    x0 = rng.standard_normal((2, channels, size, size))
    expected = []
    for sample in x0:
        x, y = sample.ravel(), numpy.zeros(matrix.shape[0])
        for _ in range(depth):
            y = numpy.clip(y + 0.3 * matrix @ x, -1, 1)
            x = x - 0.3 * (matrix.T @ y + 0.5 * x)
        expected.append(x.reshape(channels, size, size))
    numpy.testing.assert_allclose(run(module, x0), numpy.array(expected), rtol=0, atol=1e-10)


def test_the_conv_network_agrees_with_the_reference_adjoint_by_autograd():
    network = api.frontend(CONV_PDHG, "conv_pdhg.opt").networks[0]
    cls = optgen.loads(CONV_PDHG, "conv_pdhg.opt")["ConvPDHG"]
    torch.manual_seed(0)
    module = cls(4, 6, depth=3).double()
    assert_agrees(network, module, torch.randn(2, 4, 5, 5, dtype=torch.float64))


# ---------------------------------------------------------------- located errors
RULE = """network Bad {
    state x, y: m
    init y = 0
    param t = 0.5
    param c = 0.5 learnable per_channel
    block K = operator(from=dim, to=m) shared
    block T = mlp()
    update {
        y+ = y + t*K(x)
        x+ = x - t*K^T(y+)
    }
}
"""

ERRORS = {
    "sum of two spaces": (
        ("y+ = y + t*K(x)", "y+ = y + t*x"),
        "9:14: 'y + t*x' adds tensors of two spaces: 'y' lives in m, 't*x' in dim "
        "(the input's space)",
    ),
    "block on the wrong space": (
        ("y+ = y + t*K(x)", "y+ = y + t*K(y)"),
        "9:22: K takes tensors of space dim, but 'y' lives in m",
    ),
    "adjoint on the wrong space": (
        ("x - t*K^T(y+)", "x - t*K^T(x)"),
        "10:24: K^T takes tensors of space m, but 'x' lives in dim",
    ),
    "adjoint of a block that is no operator": (
        ("x - t*K^T(y+)", "x - t*T^T(x)"),
        "10:20: 'T^T': block T is an mlp block, and only an operator block has an adjoint",
    ),
    "adjoint of a map": (
        ("x - t*K^T(y+)", "x - t*relu^T(x)"),
        "10:20: 'relu^T': only an operator block has an adjoint, and 'relu' is not a block",
    ),
    "new value in the wrong space": (
        ("y+ = y + t*K(x)", "y+ = x"),
        "9:14: state 'y' lives in m, but its new value 'x' lives in dim (the input's space)",
    ),
    "init from the input": (
        ("init y = 0", "init y = input"),
        "3:10: state 'y' lives in m, but its init reads input, which lives in dim (the "
        "input's space)",
    ),
    "no init": (
        ("init y = 0", ""),
        "2:17: state 'y' lives in the space m, so it cannot start as input, which lives in dim",
    ),
    "output in another space": (
        ("    update {", "    output y\n    update {"),
        "8:12: output 'y' lives in the space m, and the module returns a tensor of its "
        "input's space, dim",
    ),
    "a space the network lacks": (
        ("to=m", "to=n"),
        "6:37: to=n: block K = operator(...) names a space the network does not have (its "
        "spaces: dim, m)",
    ),
    "a mlp on the other space": (
        ("y+ = y + t*K(x)", "y+ = y + t*K(x) + T(y)"),
        "9:29: T takes tensors of space dim, but 'y' lives in m",
    ),
    "per_channel param on the other space": (
        ("y+ = y + t*K(x)", "y+ = y + c*K(x)"),
        "9:18: per_channel param c holds one value per channel of dim, but 'c*K(x)' scales "
        "a tensor of space m",
    ),
    "dot of two spaces": (
        ("y+ = y + t*K(x)", "y+ = y + dot(x, y)*K(x)"),
        "9:18: dot(...) reads tensors of two spaces: dim and m",
    ),
    "a sum over the other space": (
        ("y+ = y + t*K(x)", "y+ = y + sum(i = 0..k, y[i])"),
        "9:18: a sum over the history of 'y', which lives in space m: sums over history add "
        "tensors of dim only",
    ),
    "a size named as the constructor's": (
        ("state x, y: m", "state x, y: depth"),
        "2:17: size 'depth' would be an argument and an attribute of the generated module, "
        "where that name is taken",
    ),
    "a size named as a param": (
        ("state x, y: m", "state x, y: t"),
        "4:11: 't' is already declared as a size",
    ),
    "checkpoint": (
        ("    update {", "    checkpoint 2\n    update {"),
        "2:17: states of another space than dim are for explicit layers, and network Bad is "
        "checkpointed",
    ),
    "implicit": (
        ("x - t*K^T(y+)", "x - t*K^T(y+) - t*T(x+)"),
        "2:17: states of another space than dim are for explicit layers, and network Bad is "
        "implicit",
    ),
}


def test_the_rule_compiles_before_it_is_broken():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optgen.OptgenWarning)
        assert "Bad" in optgen.loads(RULE, "bad.opt")


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_a_bad_use_of_a_space_is_a_located_error(case):
    (old, new), message = ERRORS[case]
    assert old in RULE
    assert message in located_errors(RULE.replace(old, new))


def test_a_model_stage_cannot_run_a_network_with_another_space():
    text = (
        RULE.replace("block T = mlp()", "block T = conv()")
        .replace("operator(", "conv_operator(")
        .replace("param c = 0.5 learnable per_channel\n", "")
        + "model M {\n    input [3, 8, 8]\n    stem conv(out=8)\n    stage Bad(dim=8, depth=2)\n"
        "    head classifier(classes=10)\n}\n"
    )
    assert (
        "15:11: network Bad has a state in a space of its own (y: m), which a model stage "
        "cannot build yet: a stage gives its network dim only"
    ) in located_errors(text)


def test_the_command_line_exits_1_and_writes_nothing(tmp_path):
    source = tmp_path / "bad.opt"
    source.write_text(RULE.replace("y+ = y + t*K(x)", "y+ = y + t*x"))
    out = tmp_path / "out"
    done = run_optgen("compile", str(source), "-o", str(out))
    assert done.returncode == 1, done.stderr
    assert "bad.opt:9:14: error: 'y + t*x' adds tensors of two spaces" in done.stderr
    assert not out.exists()


def test_the_certificate_says_what_lies_outside_the_theory():
    [certificate] = optgen.check_source((EXAMPLES / "pdhg.opt").read_text(), "pdhg.opt")
    assert certificate["consistent"] is None and certificate["universal"]["guaranteed"] is None
    why = certificate["universal"]["reasons"][0]
    assert "the states live in 2 spaces (y in m; the others in dim)" in why
    assert "K maps dim to m and K^T maps back: linear operators, not gradients" in why


SEQUENCE = """
network TokensPD {
    state x, y: m
    init y = 0
    param t = 0.5
    block K = operator(from=dim, to=m) shared
    block A = transformer(space=m, heads=2)
    block B = transformer(heads=2)
    layers 2
    update {
        r = K(x)
        y+ = y + A(y + t*r)
        x+ = x - t*B(x) - t*K^T(y+)
    }
}
"""


def test_tokens_of_two_widths_agree_with_the_reference():
    """A matrix operator on the token layout: y is [N, L, m] while x is [N, L, dim]."""
    network = api.frontend(SEQUENCE, "tokens_pd.opt").networks[0]
    cls = optgen.loads(SEQUENCE, "tokens_pd.opt")["TokensPD"]
    torch.manual_seed(1)
    module = cls(4, 6, depth=2).double()
    assert_agrees(network, module, torch.randn(2, 3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="m divisible by heads = 2"):
        cls(4, 5)


def test_the_graph_shows_the_adjoint(tmp_path):
    done = run_optgen("inspect", str(EXAMPLES / "pdhg.opt"), "--graph", "mermaid")
    assert done.returncode == 0, done.stderr
    assert '["K^T(.)"]' in done.stdout


MORE_ERRORS = {
    # A network of other spaces only has nothing to return.
    "no state of dim": (
        ("state x, y: m", "state y: m, x: m"),
        "2:5: every state of network Bad lives in a space of its own",
    ),
    "a size read as a value": (
        ("x - t*K^T(y+)", "x - m*K^T(y+)"),
        "10:18: 'm' is a size, which can only be used in block arguments",
    ),
    "a block call in an init": (
        ("init y = 0", "init y = K(input)"),
        "3:14: block call 'K(input)' in an init, which runs once, before the first layer",
    ),
    "a size named as a word of the language": (
        ("state x, y: m", "state x, y: k"),
        "2:17: 'k' is a word of the language (the layer index) and cannot name a size",
    ),
    "the adjoint spelled with a prime": (
        ("K^T(y+)", "K'(y+)"),
        '10:21: unexpected character "\'"',
    ),
}


@pytest.mark.parametrize("case", sorted(MORE_ERRORS))
def test_more_bad_uses_are_located_errors(case):
    (old, new), message = MORE_ERRORS[case]
    assert old in RULE
    assert any(found.startswith(message) for found in located_errors(RULE.replace(old, new)))


def test_the_hints_name_the_adjoint_spelling_and_the_right_operator():
    with pytest.raises(optgen.OptgenError) as info:
        optgen.check_source(RULE.replace("K^T(y+)", "K.T(y+)"), "bad.opt")
    assert info.value.diagnostics[0]["hint"] == (
        "the adjoint of an operator block is written K^T(...)"
    )
    image = (
        RULE.replace("block T = mlp()", "block T = conv(space=m)")
        .replace("operator(", "conv_operator(")
        .replace("        x+ =", "        g = T^T(y)\n        x+ =")
        .replace("param c = 0.5 learnable per_channel\n", "")
    )
    with pytest.raises(optgen.OptgenError) as info:
        optgen.check_source(image, "bad.opt")
    [error] = info.value.diagnostics
    assert error["message"].startswith("'T^T': block T is a conv block")
    assert error["hint"] == "declare it as one: block T = conv_operator(from=dim, to=m)"


def test_a_failed_block_is_not_reported_again_where_its_output_is_read():
    text = RULE.replace("x - t*K^T(y+)", "x - t*K^T(q)").replace(
        "        x+ =", "        q = L^T(y+)\n        x+ ="
    )
    errors = located_errors(text.replace("block T = mlp()", "block L = mlp()"))
    assert len(errors) == 1 and "'L' is a word of the language" in errors[0]


def test_the_constructor_names_the_size_its_check_reads():
    text = SEQUENCE.replace("transformer(space=m, heads=2)", "mlp(space=m, hidden=3*m/2)")
    text = text.replace("transformer(heads=2)", "mlp()").replace("TokensPD", "Frac")
    cls = optgen.loads(text, "frac.opt")["Frac"]
    with pytest.raises(ValueError, match=r"unless 2 divides 3\*m, got m=5"):
        cls(4, 5)
    assert cls(4, 6)(torch.randn(2, 4)).shape == (2, 4)


# ---------------------------------------------------------------- a fuzz sample
def primal_dual_program(rng, index: int) -> str:
    """A random explicit rule over x in dim and y in m, with K, K^T and blocks on each
    space: the forms the catalog's two entries take, recombined."""
    c = [rng.choice(["0.5", "0.3", "-0.2", "0.7", "t", "(1 - t)"]) for _ in range(6)]
    dual = rng.choice(
        [
            f"y + {c[0]}*r",
            f"clamp(y + {c[0]}*r, -1, 1)",
            f"y + D(y + {c[0]}*r)",
            f"{c[1]}*y + relu(r) - {c[2]}*D(y)",
        ]
    )
    back = rng.choice(["y+", "y", f"y+ - {c[3]}*y"])
    primal = rng.choice(
        [
            f"x - t*T(x) - {c[4]}*b",
            f"x - {c[4]}*b + {c[5]}*(x - x-)",
            "softshrink(x - t*(T(x) + b), 0.1)",
        ]
    )
    source = rng.choice(["x", "x - input", f"x + {c[5]}*x-"])
    return f"""
network Pd{index} {{
    state x, y: m
    init y = 0
    param t = 0.4 learnable positive
    block K = operator(from=dim, to=m){rng.choice([" shared", ""])}
    block T = mlp()
    block D = mlp(space=m)
    layers 3
    update {{
        r = K({source})
        y+ = {dual}
        b = K^T({back})
        x+ = {primal}
    }}
}}
"""


def test_a_fuzz_sample_of_primal_dual_rules_agrees_with_the_reference():
    """The fused module against the reference interpreter (its K^T by autograd) and the
    naive forward, outputs and gradients in float64, on random recombinations."""
    from test_naive_check import _naive_function
    from test_reference import build

    from optgen.reference import evaluate

    rng = random.Random(27)
    text = "".join(primal_dual_program(rng, i) for i in range(12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optgen.OptgenWarning)
        classes = optgen.loads(text, "pd_fuzz.opt")
        networks = api.frontend(text, "pd_fuzz.opt").networks
    assert len(networks) == 12
    for index, network in enumerate(networks):
        module = build(network, classes[network.name], seed=index)
        x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(index))
        assert_agrees(network, module, x)
        with torch.no_grad():
            naive = _naive_function(network)(module, x)
            torch.testing.assert_close(naive, evaluate(network, module, x), rtol=1e-12, atol=1e-12)
