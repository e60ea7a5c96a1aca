"""Issue 16: no input breaks the compiler, no output breaks the user's tree, no name breaks
the module. One section per point of the issue; docs/robustness.md has the figures."""

import ast as pyast
import errno
import os
import stat
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from conftest import EXAMPLES, GENERATED, ROOT

import optgen
from optgen import cli, naming
from optgen import output as output_tree
from optgen.api import frontend
from optgen.backend import lower

# Random-looking rules fail their convergence conditions: a warning, not the point here.
pytestmark = pytest.mark.filterwarnings("ignore::optgen.OptgenWarning")

RULE = "    state x\n    block T = mlp()\n    update { x+ = x - 0.5*T(x) }\n"


def net(name: str = "A", body: str = RULE) -> str:
    return f"network {name} {{\n{body}}}\n"


def error_of(text: str) -> tuple[int, int, str]:
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(text, "r.opt")
    first = info.value.diagnostics[0]
    return first["line"], first["col"], first["message"]


def cpu_seconds(work) -> float:
    # CPU time, not wall time: a loaded machine slows the clock, not the work.
    start = time.process_time()
    work()
    return time.process_time() - start


# ---------------------------------------------------------------- 1. resources bounded
def peak_rss_mib(text_expr: str) -> float:
    """The peak resident memory of a fresh process that runs the front end on a text."""
    code = (
        "import optgen\nfrom optgen.api import frontend\n"
        f"text = {text_expr}\n"
        "try:\n    frontend(text)\nexcept optgen.OptgenError:\n    pass\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of
        # a large pytest process would report the parent's size.
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return int(done.stdout.split()[-1]) / 1024


@pytest.mark.parametrize("separator", ["\\n", ";", "#\\n"])
def test_a_run_of_separators_takes_constant_memory(separator):
    # 3 MB of one separator: about 2 GiB before (700 bytes a separator), a few MiB now.
    text = (
        f"'network A {{ state x; block T = mlp()\\n update {{' + '{separator}' * 1_500_000"
        " + ' x+ = x - T(x) } }'"
    )
    assert peak_rss_mib(text) < 400


@pytest.mark.parametrize(
    "expression",
    [
        "x" + " + 0.001*T(x)" * 500,
        "-" * 500 + "x",
        "x" + " - (x" * 1000 + ")" * 1000,
        "x" + " + 0.5*(x - x-)" * 2000,
    ],
    ids=["500_terms", "500_minus", "1000_parentheses", "2000_terms"],
)
def test_long_expressions_compile_without_recursion(expression):
    text = net(body=f"    state x\n    block T = mlp()\n    update {{ x+ = {expression} }}\n")
    assert cpu_seconds(lambda: optgen.compile_source(text)) < 60


def test_a_sum_of_many_params_is_a_located_limit_in_bounded_time():
    params = "".join(f"    param p{i} = 0.001 learnable\n" for i in range(500))
    total = " + ".join(f"p{i}" for i in range(500))
    text = net(
        body=f"    state x\n{params}    block T = mlp()\n    update {{ x+ = x - ({total})*T(x) }}\n"
    )
    tracemalloc.start()
    seconds = cpu_seconds(lambda: error_of(text))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    line, col, message = error_of(text)
    assert line == 504 and "holds more than 32 params" in message
    assert seconds < 30 and peak < 200 * 2**20


def test_separate_terms_of_many_params_are_a_located_limit():
    params = "".join(f"    param p{i} = 0.001 learnable\n" for i in range(100))
    terms = "".join(f" - p{i}*T(x)" for i in range(100))
    text = net(body=f"    state x\n{params}    block T = mlp()\n    update {{ x+ = x{terms} }}\n")
    assert "holds more than 32 params" in error_of(text)[2]


def test_ten_megabytes_of_code_are_refused_fast_and_located():
    text = net(body="    state x\n    update { x+ = x" + " + x" * 2_500_000 + " }\n")
    seconds = cpu_seconds(lambda: error_of(text))
    line, col, message = error_of(text)
    assert "the file is too large" in message and line == 3
    assert seconds < 10


def test_deep_nesting_is_a_located_limit():
    text = net(body="    state x\n    update { x+ = " + "relu(" * 60 + "x" + ")" * 60 + " }\n")
    line, col, message = error_of(text)
    assert line == 3 and "nest more than 48 deep" in message


@pytest.mark.parametrize(
    "text, message",
    [
        (
            net(body="    state " + ", ".join(f"s{i}" for i in range(600)) + "\n    update { }\n"),
            "declares more than 512 states",
        ),
        (
            net(body="    state x\n    update {\n" + "        g = x\n" * 2100 + "    }\n"),
            "more than 2048 statements",
        ),
        ("".join(net(f"A{i}") for i in range(70)), "more than 64 networks and models"),
    ],
    ids=["states", "statements", "items"],
)
def test_size_limits_are_located_errors(text, message):
    assert message in error_of(text)[2]


# ---------------------------------------------------------------- 2. numbers
@pytest.mark.parametrize(
    "body, line, col",
    [
        ("    param a = 1e309\n" + RULE.replace("0.5*", "a*"), 2, 15),
        ("    param a = -1e200*1e200\n" + RULE.replace("0.5*", "a*"), 2, 15),
        (RULE.replace("0.5*", "1e200*1e200*"), 4, 23),
        (RULE.replace("0.5*", "1e-200*1e-200*"), 4, 23),
        ("    param a = 0.5 learnable\n" + RULE.replace("0.5*", "1e300*a*1e300*"), 5, 23),
        ("    param a = " + "9" * 400 + "\n" + RULE.replace("0.5*", "a*"), 2, 15),
    ],
    ids=["literal", "param_product", "inline_product", "underflow", "with_a_param", "400_digits"],
)
def test_a_coefficient_outside_float64_is_a_located_error(body, line, col):
    assert cpu_seconds(lambda: error_of(net(body=body))) < 10  # sympy's log took minutes
    got = error_of(net(body=body))
    assert got[:2] == (line, col) and "outside the range of a float64" in got[2]


# ---------------------------------------------------------------- 3. exit 1, located
def compile_cli(tmp_path, text: str, *extra: str, out: Path | None = None) -> int:
    source = tmp_path / "r.opt"
    source.write_text(text)
    return cli.main(["compile", str(source), "-o", str(out or tmp_path / "out"), *extra])


def test_an_output_folder_that_is_a_file_or_a_dangling_link_is_exit_1(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert compile_cli(tmp_path, net(), out=tmp_path / "file") == 1
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert compile_cli(tmp_path, net(), out=tmp_path / "link") == 1
    assert "internal error" not in capsys.readouterr().err


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC, errno.ENAMETOOLONG])
def test_a_file_system_refusal_is_exit_1_and_located(tmp_path, monkeypatch, capsys, code):
    # Root may write into a read-only folder: the refusal is injected where optgen writes.
    def refuse(output, mode):
        raise OSError(code, os.strerror(code), str(output.path))

    monkeypatch.setattr(output_tree, "_write_temporary", refuse)
    assert compile_cli(tmp_path, net()) == 1
    err = capsys.readouterr().err
    assert f"r.opt:1:9: error: cannot write {tmp_path / 'out' / 'a.py'}" in err
    assert "nothing was written" in err and "internal error" not in err


def test_a_name_too_long_for_a_file_name_is_located():
    line, col, message = error_of(net("A" + "b" * 300))
    assert (line, col) == (1, 9) and "too long" in message


def test_check_of_a_non_utf8_output_is_out_of_date_not_a_crash(tmp_path, capsys):
    assert compile_cli(tmp_path, net()) == 0
    (tmp_path / "out" / "a.py").write_bytes(b"# Generated by optgen \xff\xfe\n")
    assert compile_cli(tmp_path, net(), "--check") == 1
    assert "a.py is out of date" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["Class", "Lambda", "Import", "Def", "Pass", "Async"])
def test_a_network_whose_file_is_a_keyword_is_located(name):
    assert error_of(net(name))[:2] == (1, 9)


@pytest.mark.parametrize("key", ["class", "lambda", "None", "True"])
def test_a_custom_argument_named_by_a_keyword_is_located(key):
    body = f'    state x\n    block T = custom("torch.nn:Identity", {key}=1)\n'
    line, col, message = error_of(net(body=body + "    update { x+ = x - T(x) }\n"))
    assert (line, col) == (3, 43) and "Python keyword" in message


# ---------------------------------------------------------------- 4. names
@pytest.mark.parametrize("name", ["Torch", "Os", "Sys", "Numpy", "Sympy", "Typing", "Pytest"])
def test_a_network_whose_file_shadows_a_module_is_located(name):
    line, col, message = error_of(net(name))
    assert (line, col) == (1, 9) and "shadows the module" in message


@pytest.mark.parametrize(
    "name", ["F", "MLP", "ZeroBlock", "DIM", "DEPTH", "DEVICE", "Tensor", "ConvStem", "ValueError"]
)
def test_a_network_named_like_the_generated_code_is_located(name):
    line, col, message = error_of(net(name))
    assert (line, col) == (1, 9) and "generated code already uses" in message


def test_a_model_named_like_the_generated_code_is_located():
    text = net("Stage") + (
        "model Norm {\n    input [3, 8, 8]\n    stem conv(out=8)\n    stage Stage(depth=1)\n"
        "    head classifier(classes=2)\n}\n"
    )
    assert "generated code already uses" in error_of(text)[2]


def test_networks_writing_the_same_test_file_are_located():
    line, col, message = error_of(net("Foo") + net("TestFoo"))
    assert (line, col) == (6, 9) and "test_foo.py" in message


@pytest.mark.parametrize(
    "param",
    [
        "named_parameters = 0.5 learnable",
        "load_state_dict = 0.5 learnable",
        "_apply = 0.5 learnable",
        "_modules = 0.5 learnable",
        "training = 0.5 learnable",
        "solver = 0.5 learnable",
        "backward = 0.5 learnable",
        "CERTIFICATE = 0.5 learnable",
        "state_dict = 1/(k+1)",
        "register = 0.5 learnable positive",  # the attribute register_raw is not taken
    ],
)
def test_params_named_like_module_attributes_are_located(param):
    body = f"    param {param}\n" + RULE.replace("0.5*", f"{param.split()[0]}*")
    if param.startswith("register "):
        optgen.compile_source(net(body=body))
        return
    line, col, message = error_of(net(body=body))
    assert (line, col) == (2, 11) and "the generated module already has" in message


def test_the_reserved_sets_come_from_the_real_objects():
    from torch import nn

    # torch.export and dynamo patch a "___..." marker onto nn.Module once they have run.
    found = set(dir(nn.Module)) | set(vars(nn.Module()))
    assert {n for n in found if not n.startswith("___")} <= naming.module_attributes()
    assert {
        "solver",
        "backward",
        "solver_stats",
        "on_failure",
        "RULE",
    } <= naming.module_attributes()
    assert set(sys.stdlib_module_names) <= naming.module_names()
    assert {"torch", "numpy", "sympy", "lark", "class"} <= naming.module_names()


def test_the_generated_names_cover_every_name_a_generated_file_binds():
    # What the generated files bind at module level, but their own class and certificate.
    own: set[str] = set()
    for path in [*sorted(EXAMPLES.glob("*.opt")), *sorted((EXAMPLES / "models").glob("*.opt"))]:
        result = frontend(path.read_text(), path.name)
        own |= {item.name for item in (*result.networks, *result.models)}
        # A recursive schedule's table and function are named after its network and itself.
        own |= {
            name
            for net in result.networks
            for r in lower.lower(net).recurrences
            for name in (r.function, r.table)
        }
        # ... and the joint function of coupled ones after the network and all of them.
        own |= {c.function for net in result.networks for c in lower.lower(net).coupled}
        own |= {naming.snake_case(model.name) for model in result.models}  # timm's entry
    # generated/ is the catalog compiled (test_codegen checks it fresh, byte for byte).
    bound: set[str] = set()
    for path in sorted(GENERATED.glob("*.py")):
        for node in pyast.parse(path.read_text()).body:
            bound |= naming._top_level_names(pyast.unparse(node))
    # The naive evaluation's functions of a test file are named after their network
    # (`naive_forward_<network>`, `_naive_layer_<network>`, `_naive_<map>`), and a model's
    # timm entry point after the model: all lowercase or private, so no network or model
    # name (CamelCase) can be one of them.
    naive = ("naive_forward", "_naive_")
    bound = {n for n in bound if not n.startswith(naive) and n not in own}
    assert {n for n in bound if not n.endswith("_CERTIFICATE")} <= naming.generated_names()


# ---------------------------------------------------------------- 5. the output tree
def test_a_file_optgen_did_not_write_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for stem in ("Setup", "Conftest"):
        user_file = out / f"{stem.lower()}.py"
        user_file.write_text("from setuptools import setup\n")
        assert compile_cli(tmp_path, net(stem)) == 1
        assert user_file.read_text() == "from setuptools import setup\n"
        err = capsys.readouterr().err
        assert f"r.opt:1:9: error: network {stem} would overwrite" in err
        assert not (out / f"test_{stem.lower()}.py").exists()


def test_outputs_get_the_mode_of_the_umask_and_keep_their_own(tmp_path):
    old = os.umask(0o027)
    try:
        assert compile_cli(tmp_path, net()) == 0
        assert stat.S_IMODE((tmp_path / "out" / "a.py").stat().st_mode) == 0o640
        os.chmod(tmp_path / "out" / "a.py", 0o644)
        assert compile_cli(tmp_path, net(body=RULE.replace("0.5", "0.25"))) == 0
        assert stat.S_IMODE((tmp_path / "out" / "a.py").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def catalog_sources(tmp_path) -> list[str]:
    names = ["gd", "heavy_ball", "nesterov", "dense", "ppm", "nesterov_k", "ladmm"]
    paths = []
    for name in names:
        target = tmp_path / f"{name}.opt"
        target.write_text((EXAMPLES / f"{name}.opt").read_text())
        paths.append(str(target))
    return paths


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("phase", ["writing", "replacing"])
def test_a_failure_part_way_leaves_every_output_as_it_was(tmp_path, monkeypatch, capsys, phase):
    sources, out = catalog_sources(tmp_path), tmp_path / "out"
    assert cli.main(["compile", *sources[:3], "-o", str(out)]) == 0  # 6 of the 14 exist
    (out / "gd.py").write_bytes((out / "gd.py").read_bytes() + b"# an older version\n")
    before = snapshot(out)
    calls = {"n": 0}
    if phase == "writing":  # a full disk after 9 files
        real = output_tree._write_temporary

        def fill(output, mode):
            calls["n"] += 1
            if calls["n"] > 9:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(output, mode)

        monkeypatch.setattr(output_tree, "_write_temporary", fill)
        expected = "nothing was written"
    else:  # the 9th replacement fails
        real_replace = os.replace

        def replace(source, target):
            if str(source).endswith(output_tree.TEMP_SUFFIX):
                calls["n"] += 1
                if calls["n"] == 9:
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
            return real_replace(source, target)

        monkeypatch.setattr(output_tree.os, "replace", replace)
        expected = "every output was restored as it was"
    assert cli.main(["compile", *sources, "-o", str(out)]) == 1
    assert expected in capsys.readouterr().err
    assert snapshot(out) == before  # no temporary or backup left either


def test_orphan_temporaries_of_a_killed_run_are_cleaned(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / f".a.py.abc123{output_tree.TEMP_SUFFIX}").write_text("half")
    (out / f".a.py.def456{output_tree.BACKUP_SUFFIX}").write_text("old")
    (out / ".hidden_user_file").write_text("mine")
    assert compile_cli(tmp_path, net()) == 0
    assert sorted(p.name for p in out.iterdir()) == [".hidden_user_file", "a.py", "test_a.py"]


def test_check_reports_outputs_of_networks_that_no_longer_exist(tmp_path, capsys):
    assert compile_cli(tmp_path, net("A") + net("B")) == 0
    other = tmp_path / "other.opt"
    other.write_text(net("C"))
    assert cli.main(["compile", str(other), "-o", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert compile_cli(tmp_path, net("A"), "--check") == 1
    err = capsys.readouterr().err
    assert "b.py is from a network or model its file no longer has" in err
    assert "test_b.py" in err and "c.py" not in err  # another source's outputs are not stale


# ---------------------------------------------------------------- 6. text
def test_a_byte_order_mark_is_accepted(tmp_path):
    (tmp_path / "r.opt").write_bytes(b"\xef\xbb\xbf" + net().encode())
    assert cli.main(["compile", str(tmp_path / "r.opt"), "-o", str(tmp_path / "out")]) == 0
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source("\ufeffnetwork A { state x; update { x+ = Q(x) } }")
    assert info.value.diagnostics[0]["col"] == 36
    assert "update { x+ = Q(x) }" in str(info.value)


@pytest.mark.parametrize("odd", ["\u2028", "\x0c", "\x85", "\r", "\u2029", "\x1c"])
def test_odd_line_breaks_in_comments_do_not_shift_later_lines(odd):
    text = f"# one{odd}two\n" + net(body="    state x\n    update { x+ = Q(x) }\n")
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(text, "r.opt")
    assert info.value.diagnostics[0]["line"] == 4
    assert str(info.value).splitlines()[1] == "    update { x+ = Q(x) }"
