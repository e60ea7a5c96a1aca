"""Generated files read as hand-written: a module file holds its rule and model classes
and what they use, nothing else; one layer loop a class; prose wrapped to the file's
line length; a user's `ruff check --select E,W,F,B` finds nothing."""

import ast as pyast
import re
import subprocess
import sys
from pathlib import Path

import black
import pytest
from conftest import EXAMPLES, GENERATED

import optgen
from optgen.backend import formatting

# Rule and model classes over all the lines of the catalog's module files: 28 % before
# the runtime, stems, heads and activations were copied by use and stage certificates by
# difference.
CLASS_SHARE = 0.39
RUFF_RULES = "E,W,F,B"


def module_files(folder: Path = GENERATED) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("test_"))


def catalog() -> list[Path]:
    return [*sorted(EXAMPLES.glob("*.opt")), *sorted((EXAMPLES / "models").glob("*.opt"))]


def is_rule_or_model_class(node: pyast.stmt) -> bool:
    """A class holding a rule (`RULE = ...`) or a model of rules (`RULES = ...`)."""
    return isinstance(node, pyast.ClassDef) and any(
        isinstance(s, pyast.Assign)
        and {"RULE", "RULES"} & {getattr(t, "id", "") for t in s.targets}
        for s in node.body
    )


def bound_names(node: pyast.stmt) -> list[str]:
    if isinstance(node, (pyast.FunctionDef, pyast.ClassDef)):
        return [node.name]
    if isinstance(node, (pyast.Assign, pyast.AnnAssign)):
        targets = node.targets if isinstance(node, pyast.Assign) else [node.target]
        return [t.id for t in targets if isinstance(t, pyast.Name)]
    return []


def public_names(tree: pyast.Module) -> set[str]:
    for node in tree.body:
        if "__all__" in bound_names(node):
            return {element.value for element in node.value.elts} | {"__all__"}
    return set()


def ruff(paths, line_length: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache"]
        + ["--select", RUFF_RULES, "--line-length", str(line_length), *map(str, paths)],
        capture_output=True,
        text=True,
    )


def test_rule_and_model_classes_are_the_bulk_of_the_module_files():
    total = classes = 0
    for path in module_files():
        text = path.read_text()
        total += len(text.splitlines())
        for node in pyast.parse(text).body:
            if is_rule_or_model_class(node):
                classes += node.end_lineno - node.lineno + 1
    assert classes / total >= CLASS_SHARE, f"{classes} of {total} lines"


@pytest.mark.parametrize("path", module_files(), ids=lambda p: p.name)
def test_every_module_level_definition_is_used_in_its_file(path):
    tree = pyast.parse(path.read_text())
    public = public_names(tree)
    assert public, "no __all__"
    for node in tree.body:
        for name in bound_names(node):
            if name in public:
                continue
            # Read anywhere in the file but in its own definition.
            elsewhere = [
                n
                for other in tree.body
                if other is not node
                for n in pyast.walk(other)
                if isinstance(n, pyast.Name) and n.id == name
            ]
            assert elsewhere, f"{path.name}: {name} is defined and never used"


@pytest.mark.parametrize("path", module_files(), ids=lambda p: p.name)
def test_the_learnable_runtime_comes_with_learnable_params_only(path):
    tree = pyast.parse(path.read_text())
    learnable = [
        s.value
        for node in tree.body
        if is_rule_or_model_class(node)
        for s in node.body
        if isinstance(s, pyast.Assign) and getattr(s.targets[0], "id", "") == "LEARNABLE_PARAMS"
    ]
    has_learnable = any(d.keys for d in learnable)
    defined = {name for node in tree.body for name in bound_names(node)}
    assert ("_Learnable" in defined) == has_learnable
    assert ("_start" in defined) == has_learnable


def _layer_loops(node: pyast.AST) -> int:
    """The `for` loops over the module's layers (`range(self.depth)` and the like)."""
    return sum(
        isinstance(n, pyast.For)
        and any(isinstance(a, pyast.Attribute) and a.attr == "depth" for a in pyast.walk(n.iter))
        for n in pyast.walk(node)
    )


@pytest.mark.parametrize("path", module_files(), ids=lambda p: p.name)
def test_each_class_runs_its_layers_in_one_loop(path):
    for node in pyast.parse(path.read_text()).body:
        if is_rule_or_model_class(node):
            assert _layer_loops(node) <= 1, f"{path.name}: {node.name}"


def test_the_generated_folder_is_ruff_clean_at_its_line_length():
    # generated/ is formatted as this repository's black settings say (100 columns).
    length = formatting.for_directory(GENERATED).line_length
    result = ruff(sorted(GENERATED.glob("*.py")), length)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr


# Beyond the catalog: the memory runtimes, learnable params of every kind, a statement
# longer than a line, a long network name.
RUNTIMES = """
network ReversibleNesterov {
    state x, y
    init y = x
    param t = 0.1 learnable positive
    param beta = 0.9 in [0, 1)
    block T = mlp(hidden=2*dim)
    layers 4
    backward reversible
    update {
        x+ = y - t*T(y)
        y = x+ + beta*(x+ - x)
    }
}

network ReversibleHeavyBall {
    state x
    param t = 0.5
    param beta = 0.9 in [0, 1)
    block T = mlp(hidden=2*dim)
    layers 4
    backward reversible
    update { x+ = x - t*T(x) + beta*(x - x-) }
}

network CheckpointedGradientDescentWithAVeryLongNameIndeed {
    state x
    param t = 0.5
    param s = 0.1*(k + 1) learnable per_layer positive
    param gamma = 0.7 learnable in (0.5, 2)
    param c = 0.1 learnable
    block T = mlp(hidden=dim)
    layers 4
    checkpoint 2
    update {
        x+ = x - t*T(x) - s*gamma*T(x) + 0.0123456789*c*(x - T(x)) - 0.0987654321*c*T(x)
    }
}
"""


def _compiled(tmp_path: Path, line_length: int | None, sources) -> list[Path]:
    files = []
    for text, name in sources:
        outputs = optgen.compile_source(text, name, line_length=line_length)
        for file_name, source in outputs.items():
            (tmp_path / file_name).write_text(source)
            files.append(tmp_path / file_name)
            mode = black.Mode(line_length=line_length or formatting.DEFAULT_LINE_LENGTH)
            assert black.format_str(source, mode=mode) == source, file_name
    return files


@pytest.mark.filterwarnings("ignore::optgen.OptgenWarning")
def test_the_catalog_is_ruff_clean_at_blacks_default_line_length(tmp_path):
    sources = [(p.read_text(), p.name) for p in catalog()] + [(RUNTIMES, "runtimes.opt")]
    files = _compiled(tmp_path, None, sources)
    result = ruff(files, formatting.DEFAULT_LINE_LENGTH)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr


@pytest.mark.filterwarnings("ignore::optgen.OptgenWarning")
def test_files_compiled_for_79_columns_are_ruff_clean_at_79(tmp_path):
    names = ("nesterov_k.opt", "ppm.opt", "fista.opt", "nesterov_transformer.opt")
    sources = [((EXAMPLES / n).read_text(), n) for n in names]
    sources += [((EXAMPLES / "models" / n).read_text(), n) for n in ("staged.opt", "isotropic.opt")]
    files = _compiled(tmp_path, 79, sources + [(RUNTIMES, "runtimes.opt")])
    result = ruff(files, 79)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr


def test_prose_past_the_line_length_is_split_and_code_is_left_alone():
    from optgen.backend.prose import wrap_prose

    long = "word  " * 20 + "end."
    source = black.format_str(
        f'def f(x):\n    """{long}\n\n    - a bullet {long}\n    """\n'
        f"    # {long}\n    return {'x + ' * 30}x\n",
        mode=black.Mode(line_length=60),
    )
    wrapped = wrap_prose(source, 60)
    code = [line for line in wrapped.splitlines() if "return" in line or "x +" in line]
    assert code == [line for line in source.splitlines() if "return" in line or "x +" in line]
    prose = [line for line in wrapped.splitlines() if line not in code]
    assert all(len(line) <= 60 and line == line.rstrip() for line in prose)
    assert "      word" in wrapped  # a bullet's text hangs under it
    assert black.format_str(wrapped, mode=black.Mode(line_length=60)) == wrapped
    assert pyast.get_docstring(pyast.parse(wrapped).body[0]).split() == (
        pyast.get_docstring(pyast.parse(source).body[0]).split()
    )


def test_a_long_certificate_string_is_pieces_that_join_back():
    from optgen.backend.emit import pyrepr

    value = {"notes": ["a sentence " * 12 + "end", "short"], "text": "b " * 50}
    literal = pyrepr(value, 79)
    assert eval(literal) == value
    source = black.format_str(f"X = {literal}\n", mode=black.Mode(line_length=79))
    assert max(len(line) for line in source.splitlines()) <= 79


@pytest.mark.parametrize("path", module_files(), ids=lambda p: p.name)
def test_the_activation_table_holds_the_activations_the_file_builds(path):
    text = path.read_text()
    built = set(re.findall(r'act="(\w+)"', text))
    table = re.search(r"table = \{\n(.*?)\n    \}", text, re.S)
    assert (table is None) == (not built)
    if table is not None:
        assert set(re.findall(r'"(\w+)": nn\.', table.group(1))) == built
