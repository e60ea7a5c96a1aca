"""Every user error of the language: a located message, exit status 1, nothing written."""

import pytest
from conftest import EXAMPLES, run_optgen

import optgen

# name: (source, line, col, message)
ERRORS = {
    "softshrink_negative_threshold_at_a_layer": (
        "network A {\n    state x\n    param lam = 0.1 - 0.1*k\n    block T = mlp()\n"
        "    layers 4\n    update { x+ = softshrink(x - T(x), lam) }\n}\n",
        6,
        40,
        "the threshold of softshrink is -0.1 at layer k=2; it must be >= 0",
    ),
    "clamp_bounds_out_of_order": (
        "network A {\n    state x\n    block T = mlp()\n    update { x+ = clamp(x - T(x), 1, -1) }\n}\n",
        4,
        19,
        "clamp's lower bound 1 is above its upper bound -1",
    ),
    "init_uses_the_layer_index": (
        "network A {\n    state x, y\n    init y = k*x\n    block T = mlp()\n"
        "    update { x+ = x - T(x); y+ = y }\n}\n",
        3,
        14,
        "an init cannot use k: it runs once, before the first layer",
    ),
    "init_uses_a_schedule": (
        "network A {\n    state x, y\n    param b = k/(k+1)\n    init y = b*x\n"
        "    block T = mlp()\n    update { x+ = x - T(x); y+ = y }\n}\n",
        4,
        14,
        "an init cannot use the per-layer param b: it runs once, before the first layer",
    ),
    "even_conv_kernel": (
        "network A {\n    state x\n    block T = conv(kernel=4)\n    update { x+ = x - T(x) }\n}\n",
        3,
        27,
        "kernel of conv must be odd, got 4",
    ),
    "reserved_word_as_state_is_reported_once": (
        "network A {\n    state x, k\n    block T = mlp()\n    update { x+ = x - T(x) }\n}\n",
        2,
        14,
        "'k' is a word of the language (the layer index) and cannot name a state",
    ),
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
        "unexpected 'y+', expected '%', '(', '*', '+', '-', '/', '[', '^', '}' or a new line or ';'",
    ),
    "syntax_unclosed_brace": (
        "network A {\n    state x\n",
        2,
        12,
        "unexpected end of file, expected 'backward', 'block', 'checkpoint', 'init', 'layers', 'output', 'param', 'solver', 'state', 'update' or '}'",
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
    # A param option is given at most once, and a param has at most one constraint.
    "param_learnable_twice": (
        "network A {\n    state x\n    param beta = 0.5 learnable learnable\n    block T = mlp()\n    update {\n        x+ = x - beta*T(x)\n    }\n}\n",
        3,
        32,
        "param beta: 'learnable' is given twice",
    ),
    "param_per_layer_twice": (
        "network A {\n    state x\n    param t = 0.5 learnable per_layer per_layer\n    block T = mlp()\n    update {\n        x+ = x - t*T(x)\n    }\n}\n",
        3,
        39,
        "param t: 'per_layer' is given twice",
    ),
    "param_positive_twice": (
        "network A {\n    state x\n    param t = 0.5 positive positive\n    block T = mlp()\n    update {\n        x+ = x - t*T(x)\n    }\n}\n",
        3,
        28,
        "param t: 'positive' is given twice",
    ),
    "param_two_intervals": (
        "network A {\n    state x\n    param beta = 0.5 in [0,1) in (0.6,2)\n    block T = mlp()\n    update {\n        x+ = x - beta*T(x)\n    }\n}\n",
        3,
        31,
        "param beta has two constraints: in [0, 1) and in (0.6, 2)",
    ),
    "param_positive_and_interval": (
        "network A {\n    state x\n    param t = 0.5 positive in (0, 1)\n    block T = mlp()\n    update {\n        x+ = x - t*T(x)\n    }\n}\n",
        3,
        28,
        "param t has two constraints: positive and in (0, 1)",
    ),
    "param_interval_and_positive": (
        "network A {\n    state x\n    param t = 0.5 in (0, 1) learnable positive\n    block T = mlp()\n    update {\n        x+ = x - t*T(x)\n    }\n}\n",
        3,
        39,
        "param t has two constraints: in (0, 1) and positive",
    ),
    # custom("pkg.module:Class"): the message names what is wrong with the class string.
    "custom_without_colon": (
        'network A {\n    state x\n    block T = custom("nope.mod.Cls")\n    update {\n        x+ = x - T(x)\n    }\n}\n',
        3,
        22,
        "custom block T: 'nope.mod.Cls' has no ':' between the module and the class",
    ),
    "custom_without_class_argument": (
        "network A {\n    state x\n    block T = custom(layout=vector)\n    update {\n        x+ = x - T(x)\n    }\n}\n",
        3,
        15,
        "custom block T needs the class as its first argument",
    ),
    "custom_empty_module": (
        'network A {\n    state x\n    block T = custom(":Cls")\n    update {\n        x+ = x - T(x)\n    }\n}\n',
        3,
        22,
        "custom block T: ':Cls' has no module before the ':'",
    ),
    "custom_empty_class": (
        'network A {\n    state x\n    block T = custom("pkg.mod:")\n    update {\n        x+ = x - T(x)\n    }\n}\n',
        3,
        22,
        "custom block T: 'pkg.mod:' has no class after the ':'",
    ),
    "custom_two_colons": (
        'network A {\n    state x\n    block T = custom("pkg:mod:Cls")\n    update {\n        x+ = x - T(x)\n    }\n}\n',
        3,
        22,
        "custom block T: 'pkg:mod:Cls' has more than one ':'",
    ),
    "custom_module_not_dotted_names": (
        'network A {\n    state x\n    block T = custom("my-pkg..mod:Cls")\n    update {\n        x+ = x - T(x)\n    }\n}\n',
        3,
        22,
        "custom block T: the module 'my-pkg..mod' is not a dotted Python name",
    ),
    "custom_class_not_a_name": (
        'network A {\n    state x\n    block T = custom("pkg.mod:Outer.Inner")\n    update {\n        x+ = x - T(x)\n    }\n}\n',
        3,
        22,
        "custom block T: the class 'Outer.Inner' is not a Python name",
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
    "param_learnable_twice": "remove the second 'learnable'",
    "param_two_intervals": "keep one: a param has at most one constraint, positive or an interval",
    "param_positive_and_interval": (
        "keep one: a param has at most one constraint, positive or an interval"
    ),
    "custom_without_colon": 'write custom("pkg.module:Class"), here custom("nope.mod:Cls")',
    "custom_without_class_argument": 'write custom("pkg.module:Class")',
    "custom_empty_module": 'write custom("pkg.module:Class")',
    "custom_empty_class": 'write custom("pkg.module:Class")',
    "custom_module_not_dotted_names": "join Python names with '.', like torch.nn",
    "custom_class_not_a_name": "name one class of the module after the ':', like torch.nn:Identity",
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_api_raises_a_located_optgen_error(name):
    text, line, col, message = ERRORS[name]
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(text, "rule.opt")
    (diagnostic,) = info.value.diagnostics  # one mistake, one error: nothing follows from it
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
    assert result.stderr.count(": error: ") == 1
    first, source_line, caret = result.stderr.splitlines()[:3]
    assert first == f"{source}:{line}:{col}: error: {message}"
    assert source_line == (text.splitlines() or [""])[line - 1]
    assert caret.index("^") == col - 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.py"]
    assert (out / "keep.py").read_text() == "# an earlier file is not touched\n"
    assert result.stdout == ""


def test_the_repeated_options_of_one_param_are_each_reported():
    text = (
        "network A {\n    state x\n"
        "    param beta = 0.5 in [0,1) in (0.6,2) learnable learnable\n"
        "    block T = mlp()\n    update {\n        x+ = x - T(x) + beta*(x - x-)\n    }\n}\n"
    )
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(text, "rule.opt")
    assert [(d["line"], d["col"], d["message"]) for d in info.value.diagnostics] == [
        (3, 31, "param beta has two constraints: in [0, 1) and in (0.6, 2)"),
        (3, 52, "param beta: 'learnable' is given twice"),
    ]


# Three independent mistakes in two networks: every one is reported, in source order.
THREE_ERRORS = """\
network A {
    state x
    block T = mpl(hidden=dim)
    update {
        x+ = x - tau*T(x)
    }
}

network B {
    state x
    param beta = 1.2 in [0, 1)
    block T = mlp()
    update {
        x+ = x - T(x) + beta*(x - x-)
    }
}
"""
THREE_DIAGNOSTICS = [
    (3, 15, "unknown block kind 'mpl'", "did you mean 'mlp'?"),
    (5, 18, "undefined name 'tau'", None),
    (11, 18, "param beta = 1.2 violates its constraint 0 <= beta < 1", None),
]


@pytest.mark.parametrize(
    "entry", [optgen.compile_source, optgen.check_source, optgen.compile_and_check]
)
def test_api_reports_every_error_of_a_file_in_source_order(entry):
    with pytest.raises(optgen.OptgenError) as info:
        entry(THREE_ERRORS, "rules.opt")
    found = [(d["line"], d["col"], d["message"], d["hint"]) for d in info.value.diagnostics]
    assert found == THREE_DIAGNOSTICS
    assert {d["severity"] for d in info.value.diagnostics} == {"error"}
    assert str(info.value).count("rules.opt:") == 3


def test_compile_and_check_of_some_models_is_the_whole_compile_restricted_to_them():
    text = (EXAMPLES / "models" / "staged.opt").read_text()
    files, certificates = optgen.compile_and_check(text, "staged.opt", models={"deep_gd", "WideGd"})
    assert sorted(files) == ["deep_gd.py", "test_deep_gd.py", "test_wide_gd.py", "wide_gd.py"]
    whole = optgen.compile_source(text, "staged.opt")
    assert all(files[name] == whole[name] for name in files)
    kinds = [(c["kind"], c["name"]) for c in certificates if c["kind"] == "model"]
    assert kinds == [("model", "WideGd"), ("model", "DeepGd")]
    assert {c["name"] for c in certificates if c["kind"] != "model"} == {
        "GdStage",
        "HeavyBallStage",
        "NesterovStage",
        "Apg2Stage",
    }
    with pytest.raises(TypeError):
        optgen.compile_and_check(text, "staged.opt", models="deep_gd")


def test_compile_and_check_is_compile_source_and_check_source_in_one_run():
    text = (EXAMPLES / "nesterov.opt").read_text()
    files, certificates = optgen.compile_and_check(text, "nesterov.opt")
    assert files == optgen.compile_source(text, "nesterov.opt")
    assert certificates == optgen.check_source(text, "nesterov.opt")


def test_cli_prints_every_error_of_a_file_and_writes_nothing(tmp_path):
    source = tmp_path / "rules.opt"
    source.write_text(THREE_ERRORS)
    out = tmp_path / "out"
    result = run_optgen("compile", str(source), "-o", str(out))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stdout == ""
    heads = [line for line in result.stderr.splitlines() if line.startswith(f"{source}:")]
    assert heads == [
        f"{source}:{line}:{col}: error: {message}" for line, col, message, _ in THREE_DIAGNOSTICS
    ]
    lines = result.stderr.splitlines()
    for line, col, _, _ in THREE_DIAGNOSTICS:
        at = lines.index(next(h for h in heads if h.startswith(f"{source}:{line}:{col}:")))
        assert lines[at + 1] == THREE_ERRORS.splitlines()[line - 1]
        assert lines[at + 2].index("^") == col - 1
    assert not out.exists()


def diagnostics_of(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(text, "rule.opt")
    return [(d["line"], d["col"], d["message"]) for d in info.value.diagnostics]


# After an error, checking goes on without reporting what follows from it.
RECOVERY = {
    # A failed statement still defines its target: g and x are not reported again.
    "failed_statement_defines_its_target": (
        "network A {\n    state x, y\n    block T = mlp()\n    update {\n"
        "        g = T(x) - 1\n        x+ = x - g\n        y+ = y - x*g\n    }\n}\n",
        [
            (5, 13, "'T(x) - 1' adds the scalar '1' to a tensor"),
            (7, 18, "product of two tensor expressions: 'x*g'"),
        ],
    ),
    # `z+ = ...` with no state z: later uses of z+ are not reported, x is still assigned.
    "failed_target_is_not_reported_again": (
        "network A {\n    state x\n    block T = mlp()\n    update {\n"
        "        z+ = x - T(x)\n        x+ = z+\n    }\n}\n",
        [(5, 9, "'z+' : 'z' is not a state")],
    ),
    # A param whose check failed is still a param; a param built on it is not checked.
    "failed_param_is_still_a_param": (
        "network A {\n    state x\n    param t = 1/(k-3)\n    param s = 2*t in (0, 1)\n"
        "    block T = mlp()\n    update {\n        x+ = x - s*t*T(x) - u*T(x)\n    }\n}\n",
        [
            (3, 15, "param t is undefined at layer k=3 (division by zero or overflow)"),
            (7, 29, "undefined name 'u'"),
        ],
    ),
    # A block whose declaration failed is still a block.
    "failed_block_is_still_a_block": (
        "network A {\n    state x\n    block T = mlp(hiden=dim)\n    block G = mlp()\n"
        "    update {\n        x+ = x - T(x) - G(T)\n    }\n}\n",
        [
            (3, 19, "mlp has no argument 'hiden'"),
            (6, 27, "block 'T' must be applied to a tensor: T(...)"),
        ],
    ),
    # An undefined name is reported once per network.
    "undefined_name_once": (
        "network A {\n    state x, y\n    block T = mlp()\n    update {\n"
        "        x+ = x - tau*T(x)\n        y+ = y - tau*T(y)\n    }\n}\n",
        [(5, 18, "undefined name 'tau'")],
    ),
    # A name declared as two things: its uses are not reported, nor a state never assigned.
    "name_declared_twice": (
        "network A {\n    state x, T\n    param t = 2 in (0, 1)\n    block T = mlp()\n"
        "    update {\n        x+ = x - T(x)\n    }\n}\n",
        [
            (3, 15, "param t = 2 violates its constraint 0 < t < 1"),
            (4, 11, "'T' is already declared as a state"),
        ],
    ),
    # Every declaration is checked on its own.
    "independent_declarations": (
        "network nesterov {\n    state x\n    init y = x\n    param t = 0.5 learnable learnable\n"
        "    block T = mlp()\n    layers 0\n    solver andersen()\n    update {\n"
        "        x+ = x - t*T(x)\n    }\n    output z\n}\n",
        [
            (1, 9, "network name 'nesterov' is not a CamelCase class name"),
            (3, 10, "init of 'y', which is not a state"),
            (4, 29, "param t: 'learnable' is given twice"),
            (6, 5, "layers 0 is out of range"),
            (7, 12, "unknown solver 'andersen'"),
            (11, 12, "output 'z' is not a state"),
        ],
    ),
    # Networks with the same name are both checked.
    "networks_defined_twice": (
        "network A {\n    state x\n    update {\n        x+ = x - q\n    }\n}\n"
        "network A {\n    state x\n    update {\n        x+ = x - r\n    }\n}\n",
        [
            (4, 18, "undefined name 'q'"),
            (7, 9, "network A is defined twice"),
            (10, 18, "undefined name 'r'"),
        ],
    ),
    # A syntax error stops at once: nothing after it is checked.
    "syntax_error_alone": (
        "network A {\n    state x\n    update {\n        x+ = x - q\n    }\n}\n"
        "network B {\n    state x\n    update {\n        x+ = x -\n    }\n}\n",
        [(10, 17, "unexpected end of line, expected '(', '+', '-', a name or a number")],
    ),
}


@pytest.mark.parametrize("name", sorted(RECOVERY))
def test_checking_goes_on_after_an_error_without_cascades(name):
    text, expected = RECOVERY[name]
    assert diagnostics_of(text) == expected
