"""`optgen inspect --graph`: edge labels are the coefficients in the user's names."""

import pytest
from conftest import run_optgen

from optgen.api import frontend
from optgen.tools.graph import render_graph

# Names that a text replacement of the internal prefix `p_` would mangle.
RULE = """\
network G {
    state x
    param step_size = 0.5 learnable positive
    param p_q = 0.25 learnable
    param pp = 2 learnable
    block T = mlp()
    update {
        x+ = x - step_size*T(x) + p_q*pp*(x - x-)
    }
}
"""


def edge_labels(text: str) -> list[str]:
    return [line.split("|")[1] for line in text.splitlines() if "-->|" in line]


def test_mermaid_edges_carry_the_coefficients_in_the_users_names():
    (net,) = frontend(RULE, "g.opt").networks
    labels = edge_labels(render_graph(net, "mermaid"))
    assert sorted(labels) == sorted(["-step_size", "p_q*pp + 1", "-p_q*pp"])


def test_dot_edges_carry_the_coefficients_in_the_users_names():
    (net,) = frontend(RULE, "g.opt").networks
    text = render_graph(net, "dot")
    assert '[label="-step_size"]' in text
    assert '[label="p_q*pp + 1"]' in text and '[label="-p_q*pp"]' in text


@pytest.mark.parametrize("kind", ["mermaid", "dot"])
def test_cli_graph_shows_user_names(kind, tmp_path):
    path = tmp_path / "g.opt"
    path.write_text(RULE)
    result = run_optgen("inspect", str(path), "--graph", kind)
    assert result.returncode == 0, result.stderr
    assert "-step_size" in result.stdout and "-p_q*pp" in result.stdout
    assert "stesize" not in result.stdout and "p_step" not in result.stdout
