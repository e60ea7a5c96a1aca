"""Every user error of the language: a located message, exit status 1, nothing written."""

import pytest
from conftest import run_optgen

import optgen

# name: (source, line, col, message)
ERRORS = {
    "syntax_missing_operand": (
        "network A {\n    state x\n    update {\n        x+ = x -\n    }\n}\n",
        4,
        17,
        "unexpected end of line, expected '(', '+', '-', a name or a number",
    ),
    "syntax_two_statements_on_a_line": (
        "network A {\n    state x\n    update { x+ = x y+ = x }\n}\n",
        3,
        21,
        "unexpected 'y+', expected '(', '*', '+', '-', '/', '[', '}' or a new line or ';'",
    ),
    "syntax_unclosed_brace": (
        "network A {\n    state x\n",
        2,
        12,
        "unexpected end of file, expected 'backward', 'block', 'init', 'layers', 'output', 'param', 'solver', 'state', 'update' or '}'",
    ),
    "undefined_name": (
        "network A {\n    state x\n    block T = mlp()\n    update {\n        x+ = x - tau*T(x)\n    }\n}\n",
        5,
        18,
        "undefined name 'tau'",
    ),
    "state_assigned_twice": (
        "network A {\n    state x\n    block T = mlp()\n    update {\n        x+ = x - T(x)\n        x = x\n    }\n}\n",
        6,
        9,
        "state 'x' is assigned twice in one update",
    ),
    "state_never_assigned": (
        "network A {\n    state x, y\n    block T = mlp()\n    update {\n        x+ = x - T(x)\n    }\n}\n",
        4,
        5,
        "state 'y' is never assigned in the update",
    ),
    "next_read_before_defined": (
        "network A {\n    state x, y\n    block T = mlp()\n    update {\n        y+ = x+ - T(y)\n        x+ = x - T(x)\n    }\n}\n",
        5,
        14,
        "'x+' is read before it is defined",
    ),
    "tensor_product": (
        "network A {\n    state x, y\n    block T = mlp()\n    update {\n        x+ = x - x*T(x)\n        y+ = y\n    }\n}\n",
        5,
        18,
        "product of two tensor expressions: 'x*T(x)'",
    ),
    "tensor_quotient": (
        "network A {\n    state x\n    block T = mlp()\n    update {\n        x+ = x/T(x)\n    }\n}\n",
        5,
        14,
        "division by a tensor expression: 'x/T(x)'",
    ),
    "block_in_block": (
        "network A {\n    state x\n    block T = mlp()\n    update {\n        x+ = x - T(T(x))\n    }\n}\n",
        5,
        20,
        "block call 'T(x)' inside the argument of block 'T'",
    ),
    "unknown_block_kind": (
        "network A {\n    state x\n    block T = mpl(hidden=dim)\n    update {\n        x+ = x - T(x)\n    }\n}\n",
        3,
        15,
        "unknown block kind 'mpl'",
    ),
    "unknown_block_argument": (
        "network A {\n    state x\n    block T = mlp(hiden=dim)\n    update {\n        x+ = x - T(x)\n    }\n}\n",
        3,
        19,
        "mlp has no argument 'hiden'",
    ),
    "constraint_violated": (
        "network A {\n    state x\n    param beta = 1.2 in [0, 1)\n    block T = mlp()\n    update {\n        x+ = x - T(x) + beta*(x - x-)\n    }\n}\n",
        3,
        18,
        "param beta = 1.2 violates its constraint 0 <= beta < 1",
    ),
    "name_not_a_class": (
        "network nesterov {\n    state x\n    block T = mlp()\n    update {\n        x+ = x - T(x)\n    }\n}\n",
        1,
        9,
        "network name 'nesterov' is not a CamelCase class name",
    ),
    "name_keyword": (
        "network None {\n    state x\n    block T = mlp()\n    update {\n        x+ = x - T(x)\n    }\n}\n",
        1,
        9,
        "network name 'None' is a Python keyword",
    ),
    "state_named_input": (
        "network A {\n    state input\n    block T = mlp()\n    update {\n        input+ = input - T(input)\n    }\n}\n",
        2,
        11,
        "'input' is a word of the language (the network input) and cannot name a state",
    ),
    "param_named_k": (
        "network A {\n    state x\n    param k = 0.5\n    block T = mlp()\n    update {\n        x+ = x - k*T(x)\n    }\n}\n",
        3,
        11,
        "'k' is a word of the language (the layer index) and cannot name a param",
    ),
    "state_named_like_block": (
        "network A {\n    state x, T\n    block T = mlp()\n    update {\n        x+ = x - T(x)\n    }\n}\n",
        3,
        11,
        "'T' is already declared as a state",
    ),
    "mixed_layouts": (
        "network A {\n    state x\n    block T = mlp()\n    block G = conv()\n    update {\n        x+ = x - T(x) - G(x)\n    }\n}\n",
        4,
        5,
        "block 'G' takes [N, dim, H, W] inputs but block 'T' takes [..., dim]",
    ),
    "implicit_forward_reference": (
        "network A {\n    state x, y\n    block T = mlp()\n    update {\n        x+ = x - T(y+)\n        y+ = y\n    }\n}\n",
        5,
        20,
        "'y+' is defined by a later statement, inside the block call of an implicit rule",
    ),
    "unknown_solver_option": (
        "network A {\n    state x\n    block T = mlp()\n    solver anderson(max_iters=10)\n    update {\n        x+ = x - 0.5*T(x+)\n    }\n}\n",
        4,
        21,
        "solver anderson has no option 'max_iters'",
    ),
    "unknown_solver": (
        "network A {\n    state x\n    block T = mlp()\n    solver andersen(m=3)\n    update {\n        x+ = x - 0.5*T(x+)\n    }\n}\n",
        4,
        12,
        "unknown solver 'andersen'",
    ),
    "unknown_backward": (
        "network A {\n    state x\n    block T = mlp()\n    backward implict\n    update {\n        x+ = x - 0.5*T(x+)\n    }\n}\n",
        4,
        14,
        "unknown backward 'implict'",
    ),
    "equilibrium_with_schedule": (
        "network A {\n    state x\n    param beta = k/(k+3)\n    block T = mlp()\n    layers equilibrium\n    update {\n        x+ = x - beta*T(x) + 0.5*(input - x)\n    }\n}\n",
        3,
        5,
        "param beta depends on the layer, but an equilibrium network has no layers",
    ),
    "param_undefined_at_a_layer": (
        "network A {\n    state x\n    param b = 1/(k-3)\n    block T = mlp()\n    update {\n        x+ = x - b*T(x)\n    }\n}\n",
        3,
        15,
        "param b is undefined at layer k=3 (division by zero or overflow)",
    ),
}


# Misspelled options are never ignored: the message offers the near name.
HINTS = {
    "unknown_solver_option": "did you mean 'max_iter'?",
    "unknown_solver": "did you mean 'anderson'?",
    "unknown_backward": "did you mean 'implicit'?",
    "unknown_block_kind": "did you mean 'mlp'?",
    "unknown_block_argument": "did you mean 'hidden'?",
    "undefined_name": None,
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_api_raises_a_located_optgen_error(name):
    text, line, col, message = ERRORS[name]
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(text, "rule.opt")
    diagnostic = info.value.diagnostics[0]
    assert (diagnostic["line"], diagnostic["col"], diagnostic["message"]) == (line, col, message)
    assert diagnostic["severity"] == "error"
    if name in HINTS:
        assert diagnostic["hint"] == HINTS[name]


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_cli_prints_file_line_col_and_a_caret_and_writes_nothing(name, tmp_path):
    text, line, col, message = ERRORS[name]
    source = tmp_path / "rule.opt"
    source.write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.py").write_text("# an earlier file is not touched\n")
    result = run_optgen("compile", str(source), "-o", str(out))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    first, source_line, caret = result.stderr.splitlines()[:3]
    assert first == f"{source}:{line}:{col}: error: {message}"
    assert source_line == (text.splitlines() or [""])[line - 1]
    assert caret.index("^") == col - 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.py"]
    assert (out / "keep.py").read_text() == "# an earlier file is not touched\n"
    assert result.stdout == ""
