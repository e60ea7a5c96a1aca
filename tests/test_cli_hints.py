"""Hints a new user meets (issue 28, points 4 and 5): a param that nothing reads, and a
generated module given where its `.opt` source is wanted."""

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


def test_every_param_of_the_catalog_is_read():
    files = [*sorted(EXAMPLES.glob("*.opt")), *sorted((EXAMPLES / "models").glob("*.opt"))]
    done = run_optgen("check", "-q", *map(str, files))
    assert done.returncode == 0, done.stderr
    assert "never read" not in done.stderr


@pytest.mark.parametrize("command", ["check", "inspect", "compile"])
def test_a_generated_module_is_refused_with_the_name_of_its_source(tmp_path, command):
    out = tmp_path / "out"
    extra = ["-o", str(out)] if command == "compile" else []
    done = run_optgen(command, str(GENERATED / "gd.py"), *extra)
    assert done.returncode == 1
    message = f"{GENERATED / 'gd.py'} is a module optgen generated: give its source gd.opt"
    assert done.stderr.splitlines()[0] == f"optgen: error: {message}"
    assert not out.exists()
