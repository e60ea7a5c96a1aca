"""One pipeline, one channel of diagnostics: every warning printed, every file checked."""

import json

import pytest
from conftest import EXAMPLES, run_optgen

import optgen
from optgen import pipeline
from optgen.errors import Severity
from optgen.source import SourceFile

LEARNABLE_BETA = """network Hb {
    state x
    param t = 0.5
    param beta = 1.2 learnable
    block T = mlp(hidden=dim)
    layers 4
    update {
        x+ = x - t*T(x) + beta*(x - x-)
    }
}
"""

BAD = """network Bad {
    state x
    block T = mlp(hidden=dim)
    update {
        x+ = x - t*T(x)
    }
}
"""


def test_the_analysis_warnings_reach_stderr(opt_file, tmp_path):
    path = opt_file(LEARNABLE_BETA, "hb.opt")
    warning = (
        f"{path}:8:9: warning: network Hb is not zero-stable: root 1.2 of rho lies outside "
        "the unit circle at its initial values\n"
        "        x+ = x - t*T(x) + beta*(x - x-)\n"
    )
    for command in (["check", str(path)], ["compile", str(path), "-o", str(tmp_path / "out")]):
        result = run_optgen(*command)
        assert result.returncode == 0, result.stderr
        assert warning in result.stderr, result.stderr
    assert (tmp_path / "out" / "hb.py").is_file()


def test_a_result_holds_networks_certificates_outputs_and_diagnostics():
    result = pipeline.compile(SourceFile("hb.opt", LEARNABLE_BETA))
    assert [net.name for net in result.networks] == ["Hb"]
    assert result.certificate(result.networks[0]).zero_stable is False
    assert sorted(result.outputs) == ["hb.py", "test_hb.py"]
    assert [d.severity for d in result.diagnostics] == [Severity.WARNING, Severity.WARNING]
    assert result.ok


def test_strict_reuses_the_analysis_and_turns_failures_into_errors():
    text = LEARNABLE_BETA.replace("param beta = 1.2 learnable", "param beta = 1.2")
    result = pipeline.compile(SourceFile("hb.opt", text), strict=True)
    assert not result.ok and result.outputs == {}
    assert [(d.severity, d.span.line, d.span.col) for d in result.errors] == [
        (Severity.ERROR, 4, 5),
        (Severity.ERROR, 4, 5),
    ]
    with pytest.raises(
        optgen.OptgenError,
        match=r"^hb.opt:4:5: error: network Hb is not zero-stable: root 1.2 of rho lies outside the unit circle\n",
    ):
        optgen.compile_source(text, "hb.opt", strict=True)


def test_a_bad_file_does_not_stop_the_others_from_being_checked(opt_file):
    bad = opt_file(BAD, "bad.opt")
    gd, heavy = str(EXAMPLES / "gd.opt"), str(EXAMPLES / "heavy_ball.opt")
    result = run_optgen("check", gd, str(bad), heavy)
    assert result.returncode == 1
    assert "network GD:" in result.stdout and "network HeavyBall:" in result.stdout
    assert f"{bad}:5:18: error: undefined name 't'" in result.stderr
    assert "Traceback" not in result.stderr


def test_compile_reports_every_bad_file_and_writes_nothing(opt_file, tmp_path):
    bad = opt_file(BAD, "bad.opt")
    worse = opt_file(BAD.replace("Bad", "Worse").replace("mlp(", "mpl("), "worse.opt")
    out = tmp_path / "out"
    result = run_optgen("compile", str(EXAMPLES / "gd.opt"), str(bad), str(worse), "-o", str(out))
    assert result.returncode == 1
    assert f"{bad}:5:18: error: undefined name 't'" in result.stderr
    assert f"{worse}:3:15: error: unknown block kind 'mpl'" in result.stderr
    assert "optgen: nothing was written" in result.stderr
    assert not out.exists()


def test_check_json_of_a_file_with_an_error_holds_its_diagnostics(opt_file):
    bad = opt_file(BAD, "bad.opt")
    result = run_optgen("check", str(EXAMPLES / "gd.opt"), str(bad), "--json")
    assert result.returncode == 1
    objects = json.loads(result.stdout)
    assert [o.get("name") for o in objects] == ["GD", None]
    assert objects[1] == {
        "file": str(bad),
        "diagnostics": [
            {
                "severity": "error",
                "line": 5,
                "col": 18,
                "message": "undefined name 't'",
                "hint": None,
            }
        ],
    }


@pytest.mark.parametrize(
    "args, start, suggestion",
    [
        (
            ["compile", "--chek", "examples/gd.opt"],
            "optgen: error: unrecognized arguments: --chek",
            "; did you mean '--check'?",
        ),
        (
            ["chek", "examples/gd.opt"],
            "optgen: error: argument command: invalid choice: 'chek' (choose from ",
            "; did you mean 'check'?",
        ),
        (
            ["inspect", "examples/gd.opt", "--graph", "mermiad"],
            "optgen: error: argument --graph: invalid choice: 'mermiad' (choose from ",
            "; did you mean 'mermaid'?",
        ),
        ([], "optgen: error: the following arguments are required: command", ""),
    ],
)
def test_usage_errors_are_user_errors_with_a_did_you_mean(args, start, suggestion):
    result = run_optgen(*args)
    assert result.returncode == 1, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(start) and first.endswith(suggestion), first
    assert "usage: optgen" in result.stderr and "Traceback" not in result.stderr


def test_a_reader_that_stops_early_is_not_an_internal_error(opt_file):
    import subprocess
    import sys

    # The whole catalog in one file: far more output than a pipe buffers.
    catalog = opt_file("\n".join(p.read_text() for p in sorted(EXAMPLES.glob("*.opt"))))
    process = subprocess.Popen(
        [sys.executable, "-m", "optgen", "inspect", str(catalog)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.read(10)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, stderr
    assert "internal error" not in stderr


def test_suggestions_come_from_the_subcommand_used():
    result = run_optgen("compile", str(EXAMPLES / "gd.opt"), "--jsno")
    assert result.stderr.splitlines()[0] == "optgen: error: unrecognized arguments: --jsno"
    assert result.stderr.splitlines()[1].startswith("usage: optgen compile")
    # --graph is an option of inspect, not of check: no suggestion of itself.
    result = run_optgen("check", str(EXAMPLES / "gd.opt"), "--graph", "dot")
    assert result.stderr.splitlines()[0] == "optgen: error: unrecognized arguments: --graph dot"


def test_check_json_keeps_the_argument_order_and_names_unreadable_files(opt_file, tmp_path):
    bad = opt_file(BAD, "bad.opt")
    missing = tmp_path / "missing.opt"
    args = [str(EXAMPLES / "gd.opt"), str(bad), str(missing), str(EXAMPLES / "heavy_ball.opt")]
    result = run_optgen("check", *args, "--json")
    assert result.returncode == 1
    objects = json.loads(result.stdout)
    assert [o.get("name", o.get("file")) for o in objects] == [
        "GD",
        str(bad),
        str(missing),
        "HeavyBall",
    ]
    assert objects[2]["diagnostics"][0]["message"] == "cannot read the file"


def test_the_api_warns_where_the_cli_prints():
    with pytest.warns(optgen.OptgenWarning) as record:
        optgen.compile_source(LEARNABLE_BETA, "hb.opt")
    heads = [str(w.message).splitlines()[0] for w in record]
    assert heads == [
        "hb.opt:8:9: warning: network Hb is not zero-stable: root 1.2 of rho lies outside the "
        "unit circle at its initial values",
        "hb.opt:8:9: warning: network Hb is not consistent: the step h = -2.5 of block T is not "
        "positive: the rule integrates the ODE backward in time at its initial values",
    ]


def test_the_api_refuses_what_is_not_text_with_a_type_error():
    with pytest.raises(TypeError, match=r"^expected the text of a .opt file as str, got bytes$"):
        optgen.compile_source(b"network A {}", "a.opt")
    with pytest.raises(TypeError, match=r"^expected the file name as str, got int$"):
        optgen.check_source("network A {}", 3)
    with pytest.raises(TypeError, match=r"^optgen.load expects a path to a .opt file, got int$"):
        optgen.load(3)
