"""The grammar: the seed rule as written, postfix +/- disambiguation, separators, comments."""

import pytest

from optgen.api import frontend
from optgen.source import SourceFile
from optgen.syntax import ast
from optgen.syntax.parse import parse


def update_of(text: str) -> tuple:
    source = SourceFile("t.opt", "network A {\n state x, y\n update {\n" + text + "\n }\n}\n")
    (network,) = parse(source).networks
    (update,) = [d for d in network.decls if isinstance(d, ast.UpdateDecl)]
    return update.statements


def shape(node) -> str:
    """A compact form of an expression tree, for comparisons."""
    if isinstance(node, ast.Binary):
        return f"({shape(node.left)} {node.op} {shape(node.right)})"
    if isinstance(node, ast.Neg):
        return f"(-{shape(node.operand)})"
    if isinstance(node, ast.NextName):
        return f"{node.id}@next"
    if isinstance(node, ast.PrevName):
        return f"{node.id}@prev"
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Number):
        return node.text
    if isinstance(node, ast.Call):
        return f"{node.func}[{', '.join(shape(a) for a in node.args)}]"
    if isinstance(node, ast.Indexed):
        return f"{node.id}<{shape(node.index)}>"
    raise AssertionError(node)


def test_the_seed_line_parses_exactly_as_written():
    first, second = update_of("x+ = y - t*T(y); y = x+ + beta*(x+ - x)")
    assert shape(first.target) == "x@next" and shape(first.value) == "(y - (t * T[y]))"
    assert shape(second.target) == "y" and shape(second.value) == "(x@next + (beta * (x@next - x)))"
    assert first.text == "x+ = y - t*T(y)"


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("x+y", "(x + y)"),
        ("x + y", "(x + y)"),
        ("x+ y", "(x + y)"),
        ("x+ + y", "(x@next + y)"),
        ("x - x-", "(x - x@prev)"),
        ("beta*(x - x-)", "(beta * (x - x@prev))"),
        ("x[k+1] - x[k-2] + x[0]", "((x<(k + 1)> - x<(k - 2)>) + x<0>)"),
        ("2*x-1*y", "((2 * x) - (1 * y))"),
        ("-x - -y", "((-x) - (-y))"),
        ("x+-y", "(x@next - y)"),
    ],
)
def test_postfix_plus_and_minus_follow_the_disambiguation_rule(expr, expected):
    (statement,) = update_of(f"z = {expr}")
    assert shape(statement.value) == expected


def test_statements_end_at_newlines_or_semicolons_and_comments_are_ignored():
    statements = update_of(
        "  # a comment line\n  g = T(x);; h = g   # trailing\n\n  x+ = h; y+ = y"
    )
    assert [shape(s.target) for s in statements] == ["g", "h", "x@next", "y@next"]


def test_every_declaration_of_the_language_parses():
    text = """
network Full {
    state x, y, z
    init { y = x; z = 0 }
    param t = 0.5 learnable positive
    param beta = k/(k+3)
    param gamma = 0.5 learnable per_layer in (0, 1]
    param lam = 1e-2
    block T = mlp(hidden=2*dim, act=gelu, norm=layer)
    block G = custom("torch.nn:Identity", layout=vector, universal=no) shared
    layers 4
    update {
        g = T(x)
        x+ = x[0] - t*sum(i = 0..k, g[i]) + beta*(x - x-) + gamma*(G(y) - y)
        y = softshrink(x+, lam) - 0.0*relu(y)
        z+ = z + clamp(x+ - y, -1, 1) - tanh(z) + sigmoid(x[k-2]) - sigmoid(x[k-2])
    }
    output y
}
"""
    (net,) = frontend(text, "full.opt").networks
    assert net.states == ("x", "y", "z") and net.depth == 4 and net.output == "y"
    assert [b.shared for b in net.blocks] == [False, True]
    assert [p.learnable for p in net.params] == [True, False, True, False]


def test_param_options_are_kept_as_written_with_their_spans():
    text = "network A {\n state x\n param b = 0.5 in [0,1) learnable learnable\n}\n"
    (network,) = parse(SourceFile("t.opt", text)).networks
    (param,) = [d for d in network.decls if isinstance(d, ast.ParamDecl)]
    interval, first, second = param.options
    assert isinstance(interval, ast.Interval) and interval.lo_closed and not interval.hi_closed
    assert (first.word, second.word) == ("learnable", "learnable")
    assert [(o.span.line, o.span.col, o.span.end_col) for o in param.options] == [
        (3, 16, 24),
        (3, 25, 34),
        (3, 35, 44),
    ]
    assert param.learnable and not param.per_layer and not param.positive
    assert param.interval is interval
