"""The typed lowering plan and its one writer: structure, dead code, imports, readable code."""

import re
import subprocess
import sys

import pytest
import torch
from conftest import EXAMPLES, GENERATED, ROOT, assert_generated_tests_pass

import optgen
from optgen.api import frontend
from optgen.backend import plan
from optgen.backend.lower import lower


def plan_of(text: str, name: str = "rule.opt"):
    (net,) = frontend(text, name).networks
    return lower(net)


def module_of(text: str, stem: str) -> str:
    return optgen.compile_source(text, f"{stem}.opt")[f"{stem}.py"]


def forward_of(source: str) -> str:
    return source[source.index("    def forward(self, x: Tensor)") :]


def test_lowering_and_codegen_do_no_text_surgery():
    pattern = re.compile(r'replace\(|startswith\("#"\)|re\.sub')
    for name in ("backend/lower.py", "backend/emit.py"):
        text = (ROOT / "optgen" / name).read_text()
        assert not pattern.search(text), name


def test_every_op_records_what_it_defines_and_uses():
    p = plan_of((EXAMPLES / "heavy_ball.opt").read_text())
    (loop,) = [op for op in p.forward if isinstance(op, plan.Loop)]
    lerp = next(op for op in loop.body if isinstance(op, plan.Lerp))
    assert lerp.defines == ("x_next",)
    assert set(lerp.uses) == {"x", "x_prev", "beta"}
    rotate = next(op for op in loop.body if isinstance(op, plan.Rotate))
    assert rotate.defines == ("x_prev", "x") and rotate.uses == ("x", "x_next")


def test_dead_code_removal_works_over_uses():
    ops = (
        plan.Const("beta", 0.9),
        plan.Const("unused", 1.0),
        plan.Alias("input_", "x"),
        plan.Loop((plan.AddAlpha("x", "x", "x", plan.Scalar("beta", ("beta",))),)),
    )
    kept = plan.remove_dead(ops, {"x"})
    assert [type(op).__name__ for op in kept] == ["Const", "Loop"]
    assert kept[0].target == "beta"


def test_the_input_alias_goes_where_the_argument_still_holds_the_input():
    for stem in ("ladmm", "dense"):
        forward = forward_of((GENERATED / f"{stem}.py").read_text())
        assert "input_" not in forward, stem
    # The equilibrium map rebinds x, so the input needs its own name there.
    assert "input_ = x" in forward_of((GENERATED / "deq.py").read_text())


def test_equilibrium_forward_has_no_dead_layer_index_and_solves_into_the_state():
    forward = forward_of((GENERATED / "deq.py").read_text())
    assert "k = 0" not in forward
    assert "x = _solve(self, update, x, 0)" in forward
    assert "z = _solve" not in forward


def test_imports_are_derived_from_the_ops_used():
    gd = (GENERATED / "gd.py").read_text()
    assert "import torch.nn.functional as F" not in gd
    nesterov = (GENERATED / "nesterov.py").read_text()
    assert "import torch.nn.functional as F" in nesterov  # softplus of the learnable t
    assert "import warnings" in (GENERATED / "ppm.py").read_text()
    assert "import warnings" not in gd


def test_generated_files_are_pyflakes_clean():
    files = sorted(str(p) for p in GENERATED.glob("*.py"))
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F", *files],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_folded_constants_keep_the_rule_names():
    nesterov = (GENERATED / "nesterov.py").read_text()
    forward = forward_of(nesterov)
    assert "beta = 0.9" in forward
    assert "y = torch.lerp(x_next, x, -beta)" in forward
    assert "-0.9" not in forward
    ladmm = forward_of((GENERATED / "ladmm.py").read_text())
    assert "x = torch.lerp(x, z, rho * t)" in ladmm
    assert "x.add_(F_x, alpha=-t)" in ladmm
    nesterov_k = (GENERATED / "nesterov_k.py").read_text()
    assert (
        "self.neg_beta = [float(-k / (k + 3)) for k in range(start, start + depth)]" in nesterov_k
    )
    assert "coef1" not in nesterov_k


def test_a_fused_statement_says_what_it_computes():
    forward = forward_of((GENERATED / "nesterov.py").read_text())
    assert "# y = -beta*x + (1 + beta)*x_next\n" in forward
    ladmm = forward_of((GENERATED / "ladmm.py").read_text())
    assert "# x = -t*F_x - t*lam + (1 - rho*t)*x + rho*t*z\n" in ladmm


def test_the_certificate_is_a_module_constant_the_class_references():
    source = (GENERATED / "nesterov.py").read_text()
    assert "\nNESTEROV_CERTIFICATE = {" in source
    assert "    CERTIFICATE = NESTEROV_CERTIFICATE\n" in source
    classes = optgen.load(EXAMPLES / "nesterov.opt")
    assert (
        classes["Nesterov"].CERTIFICATE
        == optgen.check_source((EXAMPLES / "nesterov.opt").read_text(), "nesterov.opt")[0]
    )


EQUILIBRIUM_CONTINUED = """network EqCont {
    state x
    param t = 0.5
    block T = mlp(hidden=dim) shared
    layers equilibrium
    update {
        x+ = x - t*T(x) \\
             + t*(input - x)
    }
}
"""


def test_equilibrium_statement_with_a_line_continuation_compiles(tmp_path):
    source = module_of(EQUILIBRIUM_CONTINUED, "eq_cont")
    assert "# x+ = x - t*T(x) + t*(input - x)\n" in source
    (tmp_path / "eq.opt").write_text(EQUILIBRIUM_CONTINUED)
    result = subprocess.run(
        [sys.executable, "-m", "optgen", "compile", str(tmp_path / "eq.opt"), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert_generated_tests_pass(tmp_path, tmp_path)


TWO_STATE_EQUILIBRIUM = """network EqTwo {
    state x, y
    param t = 0.5
    block T = mlp(hidden=dim)
    layers equilibrium
    update {
        x+ = y - t*T(y) + t*(input - y)
        y = x+ + 0.2*(x+ - x)
    }
}
"""


def test_an_equilibrium_of_two_states_builds_and_solves():
    namespace: dict = {}
    exec(compile(module_of(TWO_STATE_EQUILIBRIUM, "eq_two"), "eq_two.py", "exec"), namespace)
    module = namespace["EqTwo"](4)
    x = torch.randn(3, 4)
    out = module(x)
    assert out.shape == x.shape
    assert all(s["converged"] for s in module.solver_stats)


@pytest.mark.parametrize("lo", [1, 2])
def test_a_sum_from_a_positive_lower_bound(tmp_path, lo):
    text = f"""network SumFrom {{
    state x
    param t = 0.5
    block T = mlp(hidden=dim)
    layers 4
    update {{
        g = T(x)
        x+ = x[0] - t*sum(i = {lo}..k, g[i])
    }}
}}
"""
    source = module_of(text, "sum_from")
    assert "Piecewise" not in source
    # k counts from the module's first layer (`start`, for a stage continuing a recurrence).
    assert f"if self.start + k >= {lo}:" in source
    namespace: dict = {}
    exec(compile(source, "sum_from.py", "exec"), namespace)
    module = namespace["SumFrom"](4)
    x = torch.randn(2, 4)
    with torch.no_grad():
        gs, ref = [], x
        for k in range(4):
            gs.append(module.blocks["T"][k](ref))
            ref = x - 0.5 * sum(gs[lo:], torch.zeros_like(x))
        torch.testing.assert_close(module(x), ref)


def test_lerp_pairs_coefficients_that_sum_to_one_as_written():
    # t = beta = 0.5: (1 + beta) and -t sum to 1 only by value; the code keeps the rule's
    # reading, lerp(x, x_prev, -beta), not lerp(x, T_x, -t).
    forward = forward_of((GENERATED / "heavy_ball.py").read_text())
    assert "x_next = torch.lerp(x, x_prev, -beta)" in forward
    assert "x_next.add_(T_x, alpha=-t)" in forward
