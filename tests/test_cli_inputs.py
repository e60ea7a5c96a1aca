"""The command line as black and ruff users expect it (issue 15, point 8): folders and `-`
as inputs, --quiet, --diff, several files for inspect, help for every argument, and the
stale message repeating the command to run."""

import argparse
import json
import subprocess
import sys

from conftest import EXAMPLES, ROOT, run_optgen

from optgen.cli import build_parser

GD = (EXAMPLES / "gd.opt").read_text()


def test_a_folder_stands_for_every_opt_file_below_it(tmp_path):
    rules = tmp_path / "rules"
    (rules / "deeper").mkdir(parents=True)
    (rules / ".hidden").mkdir()
    (rules / "gd.opt").write_text(GD)
    (rules / "deeper" / "heavy_ball.opt").write_text((EXAMPLES / "heavy_ball.opt").read_text())
    (rules / ".hidden" / "broken.opt").write_text("network {")
    (rules / "notes.txt").write_text("not a rule")
    out = tmp_path / "out"
    result = run_optgen("compile", str(rules), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "gd.py",
        "heavy_ball.py",
        "test_gd.py",
        "test_heavy_ball.py",
    ]
    check = run_optgen("check", str(rules), "--json")
    # In the order of their sorted paths: deeper/heavy_ball.opt, then gd.opt.
    assert [c["name"] for c in json.loads(check.stdout)] == ["HeavyBall", "GD"]
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = run_optgen("compile", str(empty), "-o", str(out))
    assert refused.returncode == 1 and "a folder with no .opt file below it" in refused.stderr


def test_a_dash_reads_the_rule_from_standard_input(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "optgen", "compile", "-", "-o", str(out)],
        input=GD,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "GD: <stdin> -> " in result.stdout
    assert "from <stdin>" in (out / "gd.py").read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "optgen", "check", "-"],
        input="network A {\n  state x\n  update { x+ = x*x }\n}\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("<stdin>:3:")


def test_quiet_prints_only_problems(tmp_path):
    rule = tmp_path / "gd.opt"
    rule.write_text(GD)
    out = tmp_path / "out"
    result = run_optgen("compile", str(rule), "-o", str(out), "--quiet")
    assert result.returncode == 0 and result.stdout == "" and (out / "gd.py").is_file()
    assert run_optgen("check", str(rule), "-q").stdout == ""


def test_diff_shows_what_would_change_and_writes_nothing(tmp_path):
    rule = tmp_path / "gd.opt"
    rule.write_text(GD)
    out = tmp_path / "out"
    assert run_optgen("compile", str(rule), "-o", str(out)).returncode == 0
    before = (out / "gd.py").read_text()
    rule.write_text(GD.replace("param t = 1.0", "param t = 0.25"))
    diff = run_optgen("compile", str(rule), "-o", str(out), "--diff")
    assert diff.returncode == 0
    assert f"--- {out / 'gd.py'}" in diff.stdout and "+        t = 0.25" in diff.stdout
    assert (out / "gd.py").read_text() == before
    assert run_optgen("compile", str(rule), "-o", str(out), "--diff", "--check").returncode == 1
    stale = run_optgen("compile", str(rule), "-o", str(out), "--check")
    assert stale.returncode == 1
    assert f"run `optgen compile {rule} -o {out}` to regenerate" in stale.stderr


def test_inspect_takes_several_files():
    result = run_optgen("inspect", "examples/gd.opt", "examples/heavy_ball.opt")
    assert result.returncode == 0
    assert "class GD(nn.Module)" in result.stdout and "class HeavyBall(nn.Module)" in result.stdout
    one = run_optgen(
        "inspect", "examples/gd.opt", "examples/heavy_ball.opt", "--network", "HeavyBall"
    )
    assert "class HeavyBall(nn.Module)" in one.stdout and "class GD(" not in one.stdout


def test_every_argument_has_help():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {action.dest}"
        for name, command in commands.choices.items()
        for action in command._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert missing == []
