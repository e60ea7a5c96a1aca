"""What a new user meets on the command line (issue 28): a param that nothing reads (point
4), a generated module given where its `.opt` source is wanted (point 5), and the closing
counts of compile and check (point 2)."""

import pytest
from conftest import EXAMPLES, GENERATED, run_optgen

UNREAD = """network HeavyBall {
    state x
    param t = 0.5
    param beta = 0.9 in [0, 1)
    param bta = 0.8
    param delta = 0.1
    param tk[0] = 1
    param tk[k+1] = tk/2
    block T = mlp()
    layers 4
    update { x+ = x - t*T(x) + beta*(x - x-) }
}
"""


def test_a_param_nothing_reads_is_a_located_warning(tmp_path):
    source = tmp_path / "hb.opt"
    source.write_text(UNREAD)
    done = run_optgen("check", str(source))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    warned = [line.split(f"{source}:")[1] for line in lines if "never read" in line]
    assert warned == [
        "5:11: warning: param 'bta' is declared but never read",
        "6:11: warning: param 'delta' is declared but never read",
        "7:11: warning: param 'tk' is declared but never read",  # its recursion reads itself
    ]
    hints = [lines[i + 3] for i, line in enumerate(lines) if "never read" in line]
    assert hints == [
        "hint: did you mean 'beta'? The rule reads it",
        "hint: read it in the update, or remove it",
        "hint: read it in the update, or remove it",
    ]


@pytest.mark.parametrize("command", ["check", "inspect", "compile"])
def test_a_generated_module_is_refused_with_the_name_of_its_source(tmp_path, command):
    out = tmp_path / "out"
    extra = ["-o", str(out)] if command == "compile" else []
    done = run_optgen(command, str(GENERATED / "gd.py"), *extra)
    assert done.returncode == 1
    message = f"{GENERATED / 'gd.py'} is a module optgen generated: give its source gd.opt"
    assert done.stderr.splitlines()[0] == f"optgen: error: {message}"
    assert not out.exists()


# Issue 28, point 2: a closing count, as black prints one.
def test_compile_counts_what_it_wrote_and_what_was_unchanged(tmp_path):
    files = [str(EXAMPLES / "gd.opt"), str(EXAMPLES / "nesterov.opt")]
    out = tmp_path / "out"
    first = run_optgen("compile", *files, "-o", str(out))
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines()[-1] == "optgen: 4 files written, 0 unchanged"
    edited = (out / "gd.py").read_text() + "# edited\n"  # optgen's header kept: its file
    (out / "gd.py").write_text(edited)
    again = run_optgen("compile", *files, "-o", str(out), "-v")
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines()[-5:] == [
        f"optgen: {out / 'gd.py'} written",
        f"optgen: {out / 'test_gd.py'} unchanged",
        f"optgen: {out / 'nesterov.py'} unchanged",
        f"optgen: {out / 'test_nesterov.py'} unchanged",
        "optgen: 1 file written, 3 unchanged",
    ]
    quiet = run_optgen("compile", *files, "-o", str(out), "-q")
    assert quiet.stdout == "" and "unchanged" not in quiet.stderr
    (out / "gd.py").write_text(edited)
    checked = run_optgen("compile", *files, "-o", str(out), "--check")
    assert checked.returncode == 1
    assert "optgen: 1 file would change, 3 up to date" in checked.stderr.splitlines()


def test_a_failed_file_among_several_is_counted_and_nothing_is_written(tmp_path):
    bad = tmp_path / "bad.opt"
    bad.write_text("network B {\n    state x\n    update { x+ = y }\n}\n")
    out = tmp_path / "out"
    done = run_optgen("compile", str(EXAMPLES / "gd.opt"), str(bad), "-o", str(out))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-2:] == [
        "optgen: 1 of 2 files failed",
        "optgen: nothing was written",
    ]
    assert not out.exists()
    checked = run_optgen("check", str(EXAMPLES / "gd.opt"), str(bad))
    assert checked.returncode == 1
    assert checked.stderr.splitlines()[-1] == "optgen: 1 of 2 files failed"
    fine = run_optgen("check", str(EXAMPLES / "gd.opt"), str(EXAMPLES / "heavy_ball.opt"))
    assert fine.stderr.splitlines()[-1] == "optgen: 2 files checked, 0 failed"


# Issue 28, point 1: colour for diagnostics on a terminal, --color and NO_COLOR.
BAD = "network B {\n    state x\n    update { x+ = y }\n}\n"
RED_ERROR = "\033[1m\033[31merror:"


def _stderr_through_a_terminal(args, env) -> str:
    """The command's stderr when it is a terminal (a pseudo-terminal here)."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    try:
        subprocess.run(
            [sys.executable, "-m", "optgen", *args],
            stdout=subprocess.DEVNULL, stderr=follower, env=env, timeout=120,
        )  # fmt: skip
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end is closed: all is read
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(leader)


@pytest.mark.parametrize(
    "mode, no_color, coloured",
    [
        ("auto", False, True),
        ("auto", True, False),  # NO_COLOR honoured
        ("never", False, False),
        ("always", True, True),  # an explicit choice wins
    ],
)
def test_colour_on_a_terminal_follows_the_mode_and_no_color(tmp_path, mode, no_color, coloured):
    import os

    source = tmp_path / "bad.opt"
    source.write_text(BAD)
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    if no_color:
        env["NO_COLOR"] = "1"
    text = _stderr_through_a_terminal(["check", str(source), "--color", mode], env)
    assert "undefined name 'y'" in text
    assert (RED_ERROR in text) is coloured


def test_no_colour_in_a_pipe_unless_asked(tmp_path):
    source = tmp_path / "bad.opt"
    source.write_text(BAD)
    piped = run_optgen("compile", str(source), "-o", str(tmp_path / "out"))
    assert "\033[" not in piped.stderr
    source.write_text(
        BAD.replace("state x", "state x\n    param t = 1").replace("= y", "= x - tt*x")
    )
    asked = run_optgen("compile", str(source), "-o", str(tmp_path / "out"), "--color", "always")
    assert RED_ERROR in asked.stderr and "\033[36mhint:\033[0m did you mean 't'?" in asked.stderr
    assert asked.returncode == 1 and not (tmp_path / "out").exists()


# Issue 28, point 6: the certificate states each fact once, in the same words.
DOUBLE_ROOT = """network Double {
    state x, y
    param t = 0.5
    block T = mlp()
    layers 4
    update {
        x+ = x - t*T(x)
        y+ = y
    }
}
"""


def test_zero_stability_and_consistency_agree_on_the_multiplicity_of_root_1(tmp_path):
    import json

    source = tmp_path / "double.opt"
    source.write_text(DOUBLE_ROOT)
    files = [str(source), *map(str, sorted(EXAMPLES.glob("*.opt")))]
    done = run_optgen("check", "--json", *files)
    assert done.returncode == 0, done.stderr
    for cert in json.loads(done.stdout):
        stability = cert["zero_stability"] or ""
        consistency = cert["consistency"] or ""
        assert "are simple" not in stability and "is not simple" not in consistency
        if "1 (a double root, semisimple)" in stability:  # the double-root rule
            assert "root 1 of rho is a double root (rho'(1) = 0)" in consistency
        elif "on the circle: 1 (simple)" in stability:
            assert "root 1 of rho is a" not in consistency, cert["name"]
    (double,) = [c for c in json.loads(done.stdout) if c["name"] == "Double"]
    assert double["zero_stability"].endswith("on the circle: 1 (a double root, semisimple)")


def test_the_summary_colours_its_verdicts_when_asked(tmp_path):
    files = [str(EXAMPLES / "gd.opt"), str(EXAMPLES / "polyak.opt")]
    asked = run_optgen("compile", *files, "-o", str(tmp_path / "a"), "--color", "always")
    gd, polyak = asked.stdout.splitlines()
    assert "zero-stable \033[32myes\033[0m" in gd and "universal \033[32mguaranteed\033[0m" in gd
    assert polyak.endswith("(explicit, 16 layers; zero-stable ?, consistent ?, universal unknown)")
    piped = run_optgen("compile", *files, "-o", str(tmp_path / "b"))
    assert "\033[" not in piped.stdout


def test_a_statement_broken_over_lines_is_told_about_the_backslash():
    import optgen

    broken = "network A {\n    state x\n    block T = mlp()\n    update {\n        x+ = (x - T(x)\n             - x/2)\n    }\n}\n"
    with pytest.raises(optgen.OptgenError) as info:
        optgen.check_source(broken, "broken.opt")
    (error,) = info.value.diagnostics
    assert (error["line"], error["col"]) == (5, 23)
    assert (
        error["hint"] == "a statement ends at the end of its line: continue it with \\ at the end"
    )
    joined = broken.replace("T(x)\n", "T(x) \\\n")
    assert optgen.check_source(joined, "joined.opt")[0]["name"] == "A"
