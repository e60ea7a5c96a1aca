"""The compiler's structure, read from its source: layered packages whose imports only go
down, files and classes of a readable size, and a front end that loads neither torch nor
the code writer's libraries."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "optgen"
MAX_FILE_LINES = 700
MAX_CLASS_LINES = 450


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST):
    """Every import statement, at any depth (a function's lazy import counts), but those
    under `if TYPE_CHECKING:`, which never run."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            stack.append(child)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The optgen modules an import statement runs."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if node.level:
        base = module.split(".") if _is_package(module) else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if not source.startswith("optgen"):
        return set()
    found = set()
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        found.add(submodule if submodule in MODULES else source)
    return {name for name in found if name in MODULES}


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges = set()
        for node in _imports(tree):
            edges |= _targets(name, node)
        graph[name] = edges - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle_even_through_lazy_imports():
    # Lazy imports count as edges: with none of them closing a cycle, no lazy import is
    # there to avoid one (those left are for start-up: torch, jinja2, black, matplotlib).
    graph = import_graph()
    assert len(graph) > 40  # the walk found the package
    assert _cycles(graph) == []


def test_the_graph_walk_finds_a_cycle_where_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


LAYERS = {
    # A package imports only from its own layer or below (the front end never reaches up to
    # the code writer; the analysis never to lowering).
    "optgen.syntax": {"optgen.syntax", "optgen.source", "optgen.errors", "optgen.resources"}
    | {"optgen.cache", "optgen._version"},  # the parser's tables are kept in the cache
    "optgen.kinds": {"optgen.kinds", "optgen.ir", "optgen.source", "optgen.resources"}
    | {"optgen.torch_names", "optgen.schedules", "optgen.present"},
    "optgen.analysis": {"optgen.analysis", "optgen.ir", "optgen.kinds", "optgen.present"}
    | {"optgen.source", "optgen.errors", "optgen.schedules"},
    # The checks on the IR (ranges, reach, carried slots) run before lowering, without it.
    "optgen.checks": {"optgen.checks", "optgen.ir", "optgen.kinds", "optgen.schedules"}
    | {"optgen.errors", "optgen.source", "optgen.analysis", "optgen.naming"},
}


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_a_lower_layer_imports_nothing_above_it(package):
    allowed = LAYERS[package]
    graph = import_graph()
    for module, edges in graph.items():
        if module == package or module.startswith(package + "."):
            outside = {
                e for e in edges if not any(e == a or e.startswith(a + ".") for a in allowed)
            }
            assert not outside, f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize("name", sorted(MODULES), ids=str)
def test_files_and_classes_stay_readable(name):
    path = MODULES[name]
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_FILE_LINES, f"{path.name}: split it by job"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"class {node.name} of {path.name}: {size} lines"


def _attributes_bound(function: ast.FunctionDef) -> set[str]:
    """The attributes `self.name = ...` binds in a method (not through a subscript)."""
    found = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        else:
            continue
        for target in targets:
            for item in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(item, ast.Attribute) and getattr(item.value, "id", "") == "self":
                    found.add(item.attr)
    return found


def test_the_lowerer_binds_each_attribute_first_in_an_init():
    # One object per job (names, terms, forms, solves, the lowerer): each initialises the
    # attributes its methods write, so that none appears halfway through a lowering.
    from optgen.backend.lower import Lowerer

    in_init, elsewhere = set(), {}
    for cls in Lowerer.__mro__[:-1]:
        (tree,) = ast.parse(textwrap.dedent(inspect.getsource(cls))).body
        for method in tree.body:
            if isinstance(method, ast.FunctionDef):
                for name in _attributes_bound(method):
                    if method.name == "__init__":
                        in_init.add(name)
                    else:
                        elsewhere[name] = f"{cls.__name__}.{method.name}"
    assert {k: v for k, v in elsewhere.items() if k not in in_init} == {}


FRONT_END = """
import sys
import optgen
from optgen.tools import graph  # noqa: F401 - a view of the IR, no torch either

optgen.check_source(open(sys.argv[1]).read(), sys.argv[1])
optgen.check_source(open(sys.argv[2]).read(), sys.argv[2])
print(sorted(m for m in ("torch", "jinja2", "black") if m in sys.modules))
"""


def test_the_front_end_imports_neither_torch_nor_jinja2_nor_black():
    examples = [str(ROOT / "examples" / "nesterov.opt"), str(ROOT / "examples/models/staged.opt")]
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", FRONT_END, *examples],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.strip() == "[]"


def test_the_stored_torch_names_cover_the_installed_torch():
    # The front end reads nn.Module's attribute names from data; a torch that adds one
    # fails here until `python -m optgen.torch_names` refreshes the list.
    from optgen import torch_names

    module, module_dict = torch_names.installed()
    assert module <= torch_names.NN_MODULE_ATTRIBUTES
    assert module_dict <= torch_names.MODULE_DICT_ATTRIBUTES


PARSE = """
import sys
from unittest import mock

from lark import Lark

from optgen.syntax import parse

with mock.patch.object(parse, "_build", wraps=parse._build) as build:
    parse._parser().parse("network A { state x }")
print(build.call_count)
"""


def _builds(env) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PARSE], capture_output=True, text=True, check=True, env=env
    )
    return int(out.stdout.strip())


def test_the_parser_tables_are_built_once_and_rebuilt_when_damaged(tmp_path):
    import os

    env = {**os.environ, "OPTGEN_CACHE": str(tmp_path / "cache")}
    assert _builds(env) == 1  # first process: built and kept
    (kept,) = (tmp_path / "cache" / "parser").glob("opt-*.lark")
    assert oct(kept.stat().st_mode & 0o777) == "0o600"
    assert _builds(env) == 0  # later processes load the tables
    kept.write_bytes(b"not a parser")
    assert _builds(env) == 1  # a damaged file is rebuilt, never an error
    assert kept.read_bytes() != b"not a parser"
    assert _builds(env) == 0


def test_a_parser_cache_others_can_write_is_not_used(tmp_path):
    import os

    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    env = {**os.environ, "OPTGEN_CACHE": str(folder)}
    assert _builds(env) == 1
    assert _builds(env) == 1  # nothing kept, nothing read: built in each process
    assert not list(folder.rglob("*.lark"))


DOC = ROOT / "docs" / "architecture.md"
NAMED = re.compile(r"`([A-Za-z_][\w/.]*?(?:\.py|/))`")


def test_every_module_the_architecture_page_names_exists():
    text = DOC.read_text(encoding="utf-8")
    files = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py") if ".git" not in p.parts}
    folders = {p.relative_to(ROOT).as_posix() + "/" for p in ROOT.rglob("*") if p.is_dir()}
    missing = []
    for name in sorted(set(NAMED.findall(text))):
        pool = folders if name.endswith("/") else files
        if not any(path == name or path.endswith("/" + name) for path in pool):
            missing.append(name)
    assert missing == []


def test_the_architecture_page_names_every_package_and_top_level_module():
    text = DOC.read_text(encoding="utf-8")
    for name, path in MODULES.items():
        parts = name.split(".")
        if len(parts) == 2 and path.name != "__init__.py":  # optgen/<module>.py
            assert f"`{parts[1]}.py`" in text, f"{path.name} is not on the page"
        elif len(parts) == 2:  # a package of optgen
            assert f"`{parts[1]}/`" in text, f"{parts[1]}/ is not on the page"
