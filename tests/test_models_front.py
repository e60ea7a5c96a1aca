"""The `model` item from text to IR: grammar, resolution, shapes, and every located error
(API and command line: exit 1, nothing written)."""

from __future__ import annotations

import pytest
from conftest import run_optgen

import optgen
from optgen import ir
from optgen.api import frontend
from optgen.cli import main
from optgen.pipeline import Stage, compile
from optgen.resolve import resolve
from optgen.source import SourceFile, Span
from optgen.syntax import ast
from optgen.syntax.parse import parse

# The networks every model below may run: Hb and Nag (image), Vit (tokens), Mlp (vector).
NETS = """
network Hb {
    state x
    param beta = 0.5 in [0, 1)
    block T = conv()
    update { x+ = x - T(x) + beta*(x - x-) }
}
network Nag {
    state x, y
    init y = x
    block T = conv()
    update { x+ = y - T(y); y = x+ + 0.5*(x+ - x) }
}
network Vit {
    state x
    block T = transformer(heads=4)
    update { x+ = x - T(x) }
}
network Mlp {
    state x
    block T = mlp()
    update { x+ = x - T(x) }
}
"""


def model(*lines: str, name: str = "M") -> str:
    """A model (line 1: `model M {`, line 2 on: its declarations at column 5), then NETS."""
    return f"model {name} {{\n" + "".join(f"    {line}\n" for line in lines) + "}\n" + NETS


def models_of(text: str) -> tuple[ir.Model, ...]:
    return frontend(text, "rule.opt").models


def diagnostics_of(text: str) -> list[tuple[int, int, str, str | None]]:
    with pytest.raises(optgen.OptgenError) as info:
        frontend(text, "rule.opt")
    return [(d["line"], d["col"], d["message"], d["hint"]) for d in info.value.diagnostics]


RESNET = model(
    "input [3, 32, 32]                  # channels, height, width",
    "stem conv(out=32, kernel=5)",
    "stage Hb(dim=32, depth=3)",
    "down conv(out=64, stride=2)",
    "stage Hb(dim=64, depth=2)",
    "down pool(out=128) carry output",
    "stage Nag(dim=128, depth=4)",
    "head classifier(classes=10)",
    name="OptResNet",
)


# ---------------------------------------------------------------- the IR
def test_a_three_stage_model_resolves_to_its_full_ir():
    (m,) = models_of(RESNET)
    # The span of the declaration on each line, its comment left out.
    line = {
        n: Span(n, 5, n, 5 + len(RESNET.splitlines()[n - 1].split("#")[0].strip()))
        for n in range(2, 10)
    }
    assert m == ir.Model(
        name="OptResNet",
        input=(3, 32, 32),
        stem=ir.Stem("conv", (("out", 32), ("kernel", 5), ("stride", 1)), span=line[3]),
        stages=(
            ir.Stage("Hb", dim=32, depth=3, span=line[4]),
            ir.Stage("Hb", dim=64, depth=2, span=line[6]),
            ir.Stage("Nag", dim=128, depth=4, span=line[8]),
        ),
        transitions=(
            ir.Transition(
                "down conv",
                64,
                ir.Carry.STATES,
                line[5],
                (("out", 64), ("stride", 2), ("kernel", 3)),
            ),
            ir.Transition(
                "down pool", 128, ir.Carry.OUTPUT, line[7], (("out", 128), ("stride", 2))
            ),
        ),
        head=ir.Head("classifier", (("classes", 10),), line[9]),
        layout="image",
        shapes=((32, 32, 32), (64, 16, 16), (128, 8, 8)),
        output_shape=(128, 8, 8),
        span=Span(1, 1, 10, 2),
    )
    assert m.stem.span == Span(3, 5, 3, 32) and m.head.span == Span(9, 5, 9, 32)


def test_resolve_returns_the_networks_and_the_models_of_a_file():
    source = SourceFile("rule.opt", RESNET)
    program = resolve(parse(source), source)
    assert isinstance(program, ir.Program)
    assert [n.name for n in program.networks] == ["Hb", "Nag", "Vit", "Mlp"]
    assert [m.name for m in program.models] == ["OptResNet"]
    assert [n.name for n in program] == ["Hb", "Nag", "Vit", "Mlp"]  # iterating: the networks
    assert program.model("OptResNet").stages[2].network == program.network("Nag").name
    result = compile(source, until=Stage.FRONTEND)
    assert result.ok and result.models == program.models and result.networks == program.networks
    assert compile(source, until=Stage.ANALYSIS).models == program.models
    assert compile(SourceFile("a.opt", NETS), until=Stage.FRONTEND).models == ()


GD = "network Gd {\n    state x\n    block T = conv()\n    update { x+ = x - T(x) }\n}\n"


def test_the_defaults_of_stems_transitions_and_carries():
    (m,) = models_of(
        model(
            "input [3, 32, 32]",
            "stem conv(out=16)",
            "stage Hb(dim=16, depth=1)",
            "down conv(out=32)",
            "stage Hb(dim=32, depth=1)",
            "down pool(out=32)",
            "stage Gd(dim=32, depth=1)",
            "up conv(out=8) carry output",
            "stage Nag(dim=8, depth=1)",
            "norm",
            "stage Nag(dim=8, depth=1)",
            "stage Hb(dim=8, depth=1)",
            "norm carry output",
            "stage Hb(dim=8, depth=1)",
            "head none",
        )
        + GD
    )
    assert (m.stem.arg("kernel"), m.stem.arg("stride")) == (3, 1)
    assert [(t.kind, t.out, t.carry) for t in m.transitions] == [
        ("down conv", 32, ir.Carry.STATES),  # the same network: its states go on
        ("down pool", 32, ir.Carry.OUTPUT),  # another network, with the same states
        ("up conv", 8, ir.Carry.OUTPUT),  # other states: written
        ("norm", 8, ir.Carry.STATES),  # norm keeps the channels
        ("identity", 8, ir.Carry.OUTPUT),  # two stages one after the other
        ("norm", 8, ir.Carry.OUTPUT),  # as written
    ]
    down_conv, down_pool, up_conv = m.transitions[:3]
    assert dict(down_conv.args) == {"out": 32, "stride": 2, "kernel": 3}
    assert dict(down_pool.args) == {"out": 32, "stride": 2}
    assert dict(up_conv.args) == {"out": 8, "scale": 2, "kernel": 3}
    assert m.transitions[4].span == Span(13, 5, 13, 29)  # an identity sits at the next stage
    assert m.shapes == (
        (16, 32, 32),
        (32, 16, 16),
        (32, 8, 8),
        (8, 16, 16),
        (8, 16, 16),
        (8, 16, 16),
        (8, 16, 16),
    )
    assert m.output_shape == (8, 16, 16) and m.head.classes is None


def test_written_arguments_replace_the_defaults():
    (m,) = models_of(
        model(
            "input [1, 48, 24]",
            "stem conv(out=8, kernel=7, stride=2)",
            "stage Hb(dim=8, depth=2)",
            "down conv(out=16, stride=3, kernel=5)",
            "stage Hb(dim=16, depth=2)",
            "down pool(out=16, stride=4)",
            "stage Hb(dim=16, depth=2)",
            "up conv(out=4, scale=3, kernel=1)",
            "stage Hb(dim=4, depth=2)",
            "head classifier(classes=2)",
        )
    )
    assert (m.stem.arg("kernel"), m.stem.arg("stride")) == (7, 2)
    assert [(t.arg("stride", 1), t.arg("kernel", 3), t.arg("scale", 1)) for t in m.transitions] == [
        (3, 5, 1),
        (4, 3, 1),
        (1, 1, 3),
    ]
    assert m.shapes == ((8, 24, 12), (16, 8, 4), (16, 2, 1), (4, 6, 3))
    assert m.output_shape == (4, 6, 3) and m.head.classes == 2


def test_a_tokens_stem_gives_the_token_layout():
    (m,) = models_of(
        model(
            "input [3, 32, 16]",
            "stem tokens(out=64, size=4)",
            "stage Vit(dim=64, depth=6)",
            "norm",
            "stage Vit(dim=64, depth=6)",
            "head classifier(classes=100)",
        )
    )
    assert m.layout == "sequence"
    assert m.stem == ir.Stem("tokens", (("out", 64), ("size", 4)), Span(3, 5, 3, 32))
    assert m.shapes == ((32, 64), (32, 64)) and m.output_shape == (32, 64)
    assert [(t.kind, t.carry) for t in m.transitions] == [("norm", ir.Carry.STATES)]


def test_a_patch_stem_gives_the_image_layout():
    (m,) = models_of(
        model(
            "input [3, 64, 64]",
            "stem patch(out=96, size=4)",
            "stage Hb(dim=96, depth=3)",
            "head none",
        )
    )
    assert m.layout == "image" and m.transitions == ()
    assert (m.stem.kind, m.stem.args) == ("patch", (("out", 96), ("size", 4)))
    assert m.shapes == ((96, 16, 16),) and m.output_shape == (96, 16, 16)


def test_networks_and_models_come_in_any_order_and_one_file_holds_several():
    text = (
        "model First { input [3, 8, 8]; stem conv(out=4); stage Hb(dim=4, depth=1); head none }\n"
        + NETS
        + "\nmodel Second {\n    input [3, 8, 8]\n    stem conv(out=4)\n"
        "    stage Nag(dim=4, depth=1)\n    head none\n}\n"
    )
    first, second = models_of(text)
    assert (first.name, second.name) == ("First", "Second")
    assert second.stages[0].network == "Nag"


def test_the_words_of_models_stay_names_inside_networks():
    text = """
network Words {
    state x, stage, stem, head, down, up, carry, states, model, input_
    param norm = 0.5
    block T = mlp(norm=layer)
    update {
        output = x - norm*T(x) + 0.1*(input - x)
        x+ = output
        stage+ = stage; stem+ = stem; head+ = head; down+ = down; up+ = up
        carry+ = carry; states+ = states; model+ = model; input_+ = input_
    }
    output x
}
model WordsModel {
    input [3, 8, 8]
    stem conv(out=4)
    stage Hb(dim=4, depth=1)
    head none
}
""" + NETS
    result = frontend(text, "words.opt")
    assert result.networks[0].states[:3] == ("x", "stage", "stem")
    assert result.networks[0].block("T").arg("norm") == "layer"
    assert result.models[0].name == "WordsModel"


def test_the_parser_keeps_each_declaration_with_its_span():
    source = SourceFile("m.opt", RESNET)
    (node,) = parse(source).models
    assert node.name == ast.Ident("OptResNet", Span(1, 7, 1, 16))
    kinds = [type(d).__name__ for d in node.decls]
    assert kinds == [
        "InputDecl",
        "StemDecl",
        "StageDecl",
        "TransitionDecl",
        "StageDecl",
        "TransitionDecl",
        "StageDecl",
        "HeadDecl",
    ]
    pool = node.decls[5]
    assert (pool.word.id, pool.kind.id, pool.carry.id) == ("down", "pool", "output")
    assert pool.carry.span == Span(7, 30, 7, 36)
    assert node.text.startswith("model OptResNet {") and node.text.endswith("}")


# ---------------------------------------------------------------- errors
# name: (text, line, col, message, hint): the one error of the text.
ERRORS = {
    "unknown_network": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stage Hbb(dim=32, depth=3)", "head none"),
        4,
        11,
        "unknown network 'Hbb'",
        "did you mean 'Hb'?",
    ),
    "unknown_network_no_match": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stage Zzz(dim=32, depth=3)", "head none"),
        4,
        11,
        "unknown network 'Zzz'",
        "a stage runs a network of this file: Hb, Mlp, Nag, Vit",
    ),
    "unknown_network_in_a_file_without_networks": (
        "model M {\n    input [3, 32, 32]\n    stem conv(out=32)\n"
        "    stage Hb(dim=32, depth=3)\n    head none\n}\n",
        4,
        11,
        "unknown network 'Hb'",
        "declare it in this file: network Hb { ... }",
    ),
    "stage_names_a_model": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stage M(dim=32, depth=3)", "head none"),
        4,
        11,
        "'M' is a model; a stage runs a network",
        None,
    ),
    "token_stage_after_a_conv_stem": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stage Vit(dim=32, depth=3)", "head none"),
        4,
        11,
        "stage Vit has blocks of the token layout [N, L, dim], but the conv stem gives the "
        "image layout [N, C, H, W]",
        "after a conv or patch stem, a stage runs a network of conv or convnext blocks",
    ),
    "image_stage_after_a_tokens_stem": (
        model(
            "input [3, 32, 32]",
            "stem tokens(out=32, size=4)",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        4,
        11,
        "stage Hb has blocks of the image layout [N, dim, H, W], but the tokens stem gives the "
        "token layout [N, L, C]",
        "after a tokens stem, a stage runs a network of transformer blocks",
    ),
    "vector_stage_after_a_patch_stem": (
        model(
            "input [3, 32, 32]",
            "stem patch(out=32, size=4)",
            "stage Mlp(dim=32, depth=3)",
            "head none",
        ),
        4,
        11,
        "stage Mlp has blocks of the vector layout [..., dim], but the patch stem gives the "
        "image layout [N, C, H, W]",
        "after a conv or patch stem, a stage runs a network of conv or convnext blocks",
    ),
    "image_stage_after_a_token_stage": (
        model(
            "input [3, 32, 32]",
            "stem tokens(out=32, size=4)",
            "stage Vit(dim=32, depth=3)",
            "norm",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        6,
        11,
        "stage Hb has blocks of the image layout [N, dim, H, W], but the tokens stem gives the "
        "token layout [N, L, C]",
        "after a tokens stem, a stage runs a network of transformer blocks",
    ),
    "dim_differs_from_the_stem": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stage Hb(dim=16, depth=3)", "head none"),
        4,
        18,
        "stage Hb has dim=16, but stem conv gives 32 channels",
        "write dim=32",
    ),
    "dim_differs_from_a_down_conv": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "down conv(out=64)",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        6,
        18,
        "stage Hb has dim=32, but down conv gives 64 channels",
        "write dim=64",
    ),
    "dim_differs_after_norm": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "norm",
            "stage Hb(dim=64, depth=3)",
            "head none",
        ),
        6,
        18,
        "stage Hb has dim=64, but norm keeps the 32 channels of stage Hb",
        "write dim=32",
    ),
    "dim_differs_from_the_stage_before": (
        model(
            "input [3, 32, 32]",
            "stem tokens(out=32, size=4)",
            "stage Vit(dim=32, depth=3)",
            "stage Vit(dim=64, depth=3)",
            "head none",
        ),
        5,
        19,
        "stage Vit has dim=64, but stage Vit before it gives 32 features",
        "write dim=32",
    ),
    "carry_states_between_different_state_sets": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "down conv(out=64) carry states",
            "stage Nag(dim=64, depth=3)",
            "head none",
        ),
        5,
        29,
        "carry states between Hb (states x) and Nag (states x, y), whose state sets differ",
        "write carry output: stage Nag then starts from its init",
    ),
    "transition_between_different_state_sets_must_say_carry_output": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Nag(dim=32, depth=3)",
            "down pool(out=64)",
            "stage Hb(dim=64, depth=3)",
            "head none",
        ),
        5,
        5,
        "down pool between Nag (states x, y) and Hb (states x) must say carry output",
        "their state sets differ, so only the output state is handed over: "
        "write down pool(...) carry output",
    ),
    "norm_between_different_state_sets_must_say_carry_output": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Nag(dim=32, depth=3)",
            "norm",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        5,
        5,
        "norm between Nag (states x, y) and Hb (states x) must say carry output",
        "their state sets differ, so only the output state is handed over: "
        "write norm carry output",
    ),
    "no_stem": (
        model("input [3, 32, 32]", "stage Hb(dim=32, depth=3)", "head none"),
        1,
        7,
        "model M has no stem",
        "add a line: stem conv(out=32)",
    ),
    "no_input": (
        model("stem conv(out=32)", "stage Hb(dim=32, depth=3)", "head none"),
        1,
        7,
        "model M declares no input",
        "add a line: input [3, 32, 32]",
    ),
    "no_head": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stage Hb(dim=32, depth=3)"),
        1,
        7,
        "model M has no head",
        "add a line: head classifier(classes=10), or head none to return features",
    ),
    "no_stage": (
        model("input [3, 32, 32]", "stem conv(out=32)", "norm", "head none"),
        1,
        7,
        "model M has no stage",
        "add a line: stage Net(dim=32, depth=4), Net a network of this file",
    ),
    "two_stems": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "stem conv(out=32)",
            "head none",
        ),
        5,
        5,
        "'stem' is declared twice in model M",
        "a model has one stem",
    ),
    "two_heads": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "head none",
            "stage Hb(dim=32, depth=3)",
            "head classifier(classes=10)",
        ),
        6,
        5,
        "'head' is declared twice in model M",
        "a model has one head",
    ),
    "two_inputs": (
        model(
            "input [3, 32, 32]",
            "input [3, 64, 64]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        3,
        5,
        "'input' is declared twice in model M",
        "a model has one input",
    ),
    "transition_before_the_first_stage": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "down conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        4,
        5,
        "down conv comes before the first stage of model M",
        "a transition sits between two stages; the stem feeds the first stage",
    ),
    "transition_after_the_last_stage": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "norm",
            "head none",
        ),
        5,
        5,
        "norm comes after the last stage of model M",
        "the last stage feeds the head: add a stage after it, or remove it",
    ),
    "two_transitions_in_a_row": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "down conv(out=64)",
            "norm",
            "stage Hb(dim=64, depth=3)",
            "head none",
        ),
        6,
        5,
        "norm is a second transition after stage Hb",
        "write one transition between two stages",
    ),
    "unknown_stem": (
        model("input [3, 32, 32]", "stem cnv(out=32)", "stage Hb(dim=32, depth=3)", "head none"),
        3,
        10,
        "unknown stem 'cnv'",
        "did you mean 'conv'?",
    ),
    "unknown_stem_argument": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32, strde=1)",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        3,
        23,
        "stem conv has no argument 'strde'",
        "did you mean 'stride'?",
    ),
    "unknown_transition": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "down poll(out=64)",
            "stage Hb(dim=64, depth=3)",
            "head none",
        ),
        5,
        10,
        "unknown transition 'down poll'",
        "did you mean 'down pool'?",
    ),
    "unknown_up_transition": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "up pool(out=64)",
            "stage Hb(dim=64, depth=3)",
            "head none",
        ),
        5,
        8,
        "unknown transition 'up pool'",
        "known: down conv, down pool, up conv, norm",
    ),
    "unknown_transition_argument": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "up conv(out=64, scael=2)",
            "stage Hb(dim=64, depth=3)",
            "head none",
        ),
        5,
        21,
        "up conv has no argument 'scael'",
        "did you mean 'scale'?",
    ),
    "pool_takes_no_kernel": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "down pool(out=64, kernel=3)",
            "stage Hb(dim=64, depth=3)",
            "head none",
        ),
        5,
        23,
        "down pool has no argument 'kernel'",
        "its arguments: out, stride",
    ),
    "unknown_carry": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "norm carry state",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        5,
        16,
        "unknown carry 'state'",
        "did you mean 'states'?",
    ),
    "unknown_head": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "head classify(classes=10)",
        ),
        5,
        10,
        "unknown head 'classify'",
        "did you mean 'classifier'?",
    ),
    "unknown_head_argument": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "head classifier(class=10)",
        ),
        5,
        21,
        "head classifier has no argument 'class'",
        "did you mean 'classes'?",
    ),
    "head_none_takes_no_arguments": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "head none(classes=10)",
        ),
        5,
        15,
        "head none has no argument 'classes'",
        "head none takes no arguments",
    ),
    "unknown_stage_argument": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stage Hb(dim=32, dpeth=3)", "head none"),
        4,
        22,
        "stage Hb has no argument 'dpeth'",
        "did you mean 'depth'?",
    ),
    "stage_without_depth": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stage Hb(dim=32)", "head none"),
        4,
        11,
        "stage Hb needs the argument depth",
        "write depth=... between its parentheses",
    ),
    "classifier_without_classes": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "head classifier",
        ),
        5,
        10,
        "head classifier needs the argument classes",
        "write classes=... between its parentheses",
    ),
    "patch_without_size": (
        model("input [3, 32, 32]", "stem patch(out=32)", "stage Hb(dim=32, depth=3)", "head none"),
        3,
        10,
        "stem patch needs the argument size",
        "write size=... between its parentheses",
    ),
    "argument_given_twice": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32, out=64)",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        3,
        23,
        "argument 'out' is given twice",
        None,
    ),
    "dim_not_a_positive_integer": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stage Hb(dim=0, depth=3)", "head none"),
        4,
        18,
        "dim of stage Hb must be a positive integer, got 0",
        None,
    ),
    "fractional_classes": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "head classifier(classes=2.5)",
        ),
        5,
        29,
        "classes of head classifier must be a positive integer, got 2.5",
        None,
    ),
    "argument_is_a_name": (
        model("input [3, 32, 32]", "stem conv(out=c)", "stage Hb(dim=32, depth=3)", "head none"),
        3,
        19,
        "'c' cannot be used in the argument out",
        "the argument out may use numbers",
    ),
    "depth_out_of_range": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=100001)",
            "head none",
        ),
        4,
        28,
        "depth 100001 of stage Hb is out of range",
        "use between 1 and 100000 layers",
    ),
    "even_stem_kernel": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32, kernel=4)",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        3,
        30,
        "kernel of stem conv must be odd, got 4",
        "'same' padding keeps the size only for odd kernels: use 5",
    ),
    "even_transition_kernel": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "up conv(out=32, kernel=2)",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        5,
        28,
        "kernel of up conv must be odd, got 2",
        "'same' padding keeps the size only for odd kernels: use 3",
    ),
    "stage_dim_rejected_by_a_block": (
        model(
            "input [3, 32, 32]",
            "stem tokens(out=30, size=4)",
            "stage Vit(dim=30, depth=3)",
            "head none",
        ),
        4,
        19,
        "stage Vit with dim=30: block T = transformer(heads=4) needs dim divisible by heads = 4",
        "choose a dim that the blocks of the network accept",
    ),
    "input_with_two_sizes": (
        model("input [3, 32]", "stem conv(out=32)", "stage Hb(dim=32, depth=3)", "head none"),
        2,
        5,
        "input takes three sizes [channels, height, width], got 2",
        "write input [3, 32, 32]",
    ),
    "input_size_zero": (
        model("input [3, 0, 32]", "stem conv(out=32)", "stage Hb(dim=32, depth=3)", "head none"),
        2,
        15,
        "height of the input must be a positive integer, got 0",
        None,
    ),
    "stem_stride_does_not_divide": (
        model(
            "input [3, 32, 30]",
            "stem conv(out=32, stride=4)",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        3,
        30,
        "stride=4 of stem conv does not divide its input's width 30",
        "use one that divides 32 and 30",
    ),
    "patch_size_does_not_divide": (
        model(
            "input [3, 30, 30]",
            "stem patch(out=32, size=4)",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        3,
        29,
        "size=4 of stem patch does not divide its input's height and width 30",
        "use one that divides 30",
    ),
    "tokens_size_does_not_divide": (
        model(
            "input [3, 30, 32]",
            "stem tokens(out=32, size=4)",
            "stage Vit(dim=32, depth=3)",
            "head none",
        ),
        3,
        30,
        "size=4 of stem tokens does not divide its input's height 30",
        "use one that divides 30 and 32",
    ),
    "down_stride_does_not_divide": (
        model(
            "input [3, 28, 28]",
            "stem conv(out=32, stride=2)",
            "stage Hb(dim=32, depth=3)",
            "down conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "down pool(out=32)",
            "stage Hb(dim=32, depth=3)",
            "head none",
        ),
        7,
        10,
        "stride=2 of down pool does not divide its input's height and width 7",
        "use one that divides 7",
    ),
    "down_on_tokens": (
        model(
            "input [3, 32, 32]",
            "stem tokens(out=32, size=4)",
            "stage Vit(dim=32, depth=3)",
            "down conv(out=32)",
            "stage Vit(dim=32, depth=3)",
            "head none",
        ),
        5,
        5,
        "down conv needs the image layout [N, C, H, W], but the tokens stem gives the token "
        "layout [N, L, C]",
        "between token stages write norm, or nothing",
    ),
    "up_on_tokens": (
        model(
            "input [3, 32, 32]",
            "stem tokens(out=32, size=4)",
            "stage Vit(dim=32, depth=3)",
            "up conv(out=32)",
            "stage Vit(dim=32, depth=3)",
            "head none",
        ),
        5,
        5,
        "up conv needs the image layout [N, C, H, W], but the tokens stem gives the token "
        "layout [N, L, C]",
        "between token stages write norm, or nothing",
    ),
    "model_name_not_camel_case": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "head none",
            name="resnet",
        ),
        1,
        7,
        "model name 'resnet' is not a CamelCase class name",
        "write Resnet",
    ),
    "model_name_keyword": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "head none",
            name="None",
        ),
        1,
        7,
        "model name 'None' is a Python keyword",
        "pick a CamelCase class name such as OptResNet",
    ),
    "model_has_the_name_of_a_network": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stage Hb(dim=32, depth=3)", "head none")
        + "model Hb { input [3, 8, 8]; stem conv(out=8); stage Nag(dim=8, depth=1); head none }\n",
        30,
        7,
        "model Hb has the name of network Hb",
        "a model and a network of one file need different names",
    ),
    "network_has_the_name_of_an_earlier_model": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stage Hb(dim=32, depth=3)", "head none")
        + "network M { state x; block T = conv(); update { x+ = x - T(x) } }\n",
        30,
        9,
        "network M has the name of model M",
        "a model and a network of one file need different names",
    ),
    "model_writes_the_file_of_another_model": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "head none",
            name="ResNet",
        )
        + "model Res_Net { input [3, 8, 8]; stem conv(out=8); stage Hb(dim=8, depth=1); head none }\n",
        30,
        7,
        "model Res_Net writes the same file as model ResNet (res_net.py)",
        None,
    ),
    "model_writes_the_file_of_a_network": (
        NETS
        + "model HB { input [3, 8, 8]; stem conv(out=8); stage Hb(dim=8, depth=1); head none }\n",
        24,
        7,
        "model HB writes the same file as network Hb (hb.py)",
        None,
    ),
    "network_writes_the_file_of_an_earlier_model": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=32, depth=3)",
            "head none",
            name="HB",
        ),
        8,
        9,
        "network Hb writes the same file as model HB (hb.py)",
        None,
    ),
    "model_defined_twice": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stage Hb(dim=32, depth=3)", "head none")
        + "model M { input [3, 8, 8]; stem conv(out=8); stage Hb(dim=8, depth=1); head none }\n",
        30,
        7,
        "model M is defined twice",
        None,
    ),
    "syntax_positional_argument": (
        model("input [3, 32, 32]", "stem conv(32)", "stage Hb(dim=32, depth=3)", "head none"),
        3,
        15,
        "unexpected '32', expected ')' or a name",
        "the arguments of a stem, stage, transition or head are keywords: conv(out=32)",
    ),
    "syntax_misspelled_declaration": (
        model("input [3, 32, 32]", "stem conv(out=32)", "stgae Hb(dim=32, depth=3)", "head none"),
        4,
        5,
        "unexpected 'stgae', expected 'down', 'head', 'input', 'norm', 'stage', 'stem', 'up' "
        "or '}'",
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_api_reports_the_error_located_with_its_hint(name):
    text, line, col, message, hint = ERRORS[name]
    assert diagnostics_of(text) == [(line, col, message, hint)]
    with pytest.raises(optgen.OptgenError):
        optgen.compile_source(text, "rule.opt")


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_cli_prints_the_error_with_a_caret_and_writes_nothing(name, tmp_path, capsys):
    text, line, col, message, hint = ERRORS[name]
    source = tmp_path / "rule.opt"
    source.write_text(text)
    out = tmp_path / "out"
    assert main(["compile", str(source), "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    first, source_line, caret, *rest = captured.err.splitlines()
    assert first == f"{source}:{line}:{col}: error: {message}"
    assert source_line == text.splitlines()[line - 1]
    assert caret.index("^") == col - 1
    assert rest[: 1 if hint else 0] == ([f"hint: {hint}"] if hint else [])
    assert captured.err.count(": error: ") == 1
    assert not out.exists() or not any(out.iterdir())


def test_the_command_line_reports_the_errors_of_every_model_file_and_writes_nothing(tmp_path):
    names = sorted(ERRORS)
    paths = []
    for i, name in enumerate(names):
        path = tmp_path / f"case{i}.opt"
        path.write_text(ERRORS[name][0])
        paths.append(str(path))
    out = tmp_path / "out"
    result = run_optgen("compile", *paths, "-o", str(out))
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    for path, name in zip(paths, names):
        _, line, col, message, _ = ERRORS[name]
        assert f"{path}:{line}:{col}: error: {message}\n" in result.stderr, name
    assert not out.exists()


# ---------------------------------------------------------------- recovery
RECOVERY = {
    # Every declaration of a model is checked on its own.
    "independent_declarations": (
        model(
            "input [3, 32, 2.5]",
            "stem cnv(out=32)",
            "stage Hb(dim=32, depth=3, dpeth=3)",
            "down poll(out=64)",
            "stage Hbb(dim=64, depth=3)",
            "down conv(out=32, strid=2) carry state",
            "stage Hb(dim=32, depth=3)",
            "head classify(classes=10)",
            name="model_",
        ),
        [
            (1, 7, "model name 'model_' is not a CamelCase class name"),
            (2, 19, "width of the input must be a positive integer, got 2.5"),
            (3, 10, "unknown stem 'cnv'"),
            (4, 31, "stage Hb has no argument 'dpeth'"),
            (5, 10, "unknown transition 'down poll'"),
            (6, 11, "unknown network 'Hbb'"),
            (7, 23, "down conv has no argument 'strid'"),
            (7, 38, "unknown carry 'state'"),
            (9, 10, "unknown head 'classify'"),
        ],
    ),
    # The chain goes on after a mismatch, with the stage's own dim.
    "every_mismatch_of_the_chain": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Hb(dim=16, depth=3)",
            "down conv(out=64)",
            "stage Hb(dim=32, depth=3)",
            "norm",
            "stage Hb(dim=16, depth=3)",
            "stage Hb(dim=8, depth=3)",
            "head none",
        ),
        [
            (4, 18, "stage Hb has dim=16, but stem conv gives 32 channels"),
            (6, 18, "stage Hb has dim=32, but down conv gives 64 channels"),
            (8, 18, "stage Hb has dim=16, but norm keeps the 32 channels of stage Hb"),
            (9, 18, "stage Hb has dim=8, but stage Hb before it gives 16 channels"),
        ],
    ),
    # A stage that failed says nothing of the channels: the next stage is not compared.
    "failed_stage_is_not_compared": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Nope(dim=16, depth=3)",
            "stage Hb(dim=64, depth=3)",
            "head none",
        ),
        [
            (
                4,
                11,
                "unknown network 'Nope'",
                "a stage runs a network of this file: Hb, Mlp, Nag, Vit",
            )
        ],
    ),
    # A stage of a network with errors is not reported again.
    "stage_of_a_failed_network": (
        model(
            "input [3, 32, 32]",
            "stem conv(out=32)",
            "stage Bad(dim=32, depth=3)",
            "stage Bad(dim=32, depth=3)",
            "head none",
        )
        + "network Bad {\n    state x\n    update { x+ = x - q }\n}\n",
        [(33, 23, "undefined name 'q'")],
    ),
    # No stage: the misplaced transition is not reported besides.
    "no_stage_only": (
        model("input [3, 32, 32]", "stem conv(out=32)", "norm carry output", "head none"),
        [(1, 7, "model M has no stage")],
    ),
    # A failed model does not stop the next, nor the networks.
    "two_failed_models": (
        model("input [3, 32, 32]", "stem conv(out=16)", "stage Hb(dim=32, depth=3)", "head none")
        + "model N {\n    input [3, 32, 32]\n    stem conv(out=32)\n    head none\n}\n"
        + "network Broken { state x; update { x+ = x*x } }\n",
        [
            (4, 18, "stage Hb has dim=32, but stem conv gives 16 channels"),
            (30, 7, "model N has no stage"),
            (35, 41, "product of two tensor expressions: 'x*x'"),
        ],
    ),
    # A missing stem or input stops the shape checks only.
    "missing_stem_and_input": (
        model(
            "stage Hb(dim=32, depth=3)",
            "down pool(out=64)",
            "stage Nag(dim=64, depth=3)",
            "head none",
        ),
        [
            (1, 7, "model M declares no input"),
            (1, 7, "model M has no stem"),
            (3, 5, "down pool between Hb (states x) and Nag (states x, y) must say carry output"),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(RECOVERY))
def test_checking_goes_on_after_an_error_without_cascades(name):
    text, expected = RECOVERY[name]
    found = diagnostics_of(text)
    if expected and len(expected[0]) == 4:
        assert found == expected
    else:
        assert [d[:3] for d in found] == expected


# ---------------------------------------------------------------- the documentation
def test_the_model_examples_of_the_reference_resolve_or_fail_as_shown():
    from test_docs import BLOCKS, is_error_example

    examples = [(i, b) for i, b in enumerate(BLOCKS) if b.text.lstrip().startswith("model ")]
    assert len(examples) >= 2
    assert any(is_error_example(b) for _, b in examples)
    for index, block in examples:
        where = f"docs/language.md:{block.line}"
        if not is_error_example(block):
            assert models_of(block.text), where
            continue
        with pytest.raises(optgen.OptgenError) as caught:
            frontend(block.text, "rule.opt")
        following = BLOCKS[index + 1]
        assert following.text.startswith("rule.opt:"), where
        assert str(caught.value).strip() == following.text.strip(), where
