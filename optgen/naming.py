"""Every naming fact of the generated code, in one place.

- How a user's name becomes a file, a module and a constant (`snake_case`, `module_file`,
  `test_file`, `certificate_constant`).
- The one table of reserved names (`Reserved`, `reserved`): what a user's name may not be
  where it lands (a module-level name of a generated file, an attribute of the module, a key
  of `module.blocks`, a local of the generated constructor or schedule helper, a module
  name). The `nn.Module` attribute names are stored data (`torch_names`), so the front end
  never imports torch.
- Legal, unique Python names for the generated code (`Namespace`, after torch.fx's
  `_Namespace`): a name that is a Python keyword, a builtin, or one of the generated file's
  own names gets a trailing underscore (and `_N` on further clashes).
"""

from __future__ import annotations

import ast as pyast
import builtins
import functools
import importlib.metadata
import keyword
import re
import sys
from enum import Enum
from pathlib import Path

from . import torch_names
from .kinds.imports import Import, import_lines
from .resources import resource_dir

# Names the generated forward and module use for themselves.
GENERATED_NAMES = frozenset(
    {"self", "torch", "nn", "F", "Tensor", "math", "importlib", "k", "annotations"}
)
# Names the generated constructor reads, which a recursive schedule's values (a local
# variable of __init__ named after it) must not shadow.
CONSTRUCTOR_LOCALS = frozenset(
    {"self", "start", "depth", "super", "nn", "torch", "math", "float", "range", "list"}
    | {"len", "min", "max", "F", "Tensor", "ValueError", "isinstance", "bool", "int"}
)
# Names of the function that continues a recursive schedule in the module.
SCHEDULE_HELPER_LOCALS = frozenset(
    {"values", "count", "k", "math", "float", "list", "len", "range"}
)


# ---------------------------------------------------------------- names of what optgen writes
def snake_case(name: str) -> str:
    """`HeavyBall` -> `heavy_ball`: the module (and file) name of a network or model."""
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


def module_file(name: str) -> str:
    """The file a network or model is written to: `heavy_ball.py`."""
    return f"{snake_case(name)}.py"


def test_file(name: str) -> str:
    """The file of its generated tests: `test_heavy_ball.py`."""
    return f"test_{snake_case(name)}.py"


def output_files(name: str) -> tuple[str, str]:
    """Both files a network or model writes, the module first."""
    return module_file(name), test_file(name)


def certificate_constant(name: str, stage: int | None = None) -> str:
    """The module-level constant holding a network's certificate (`HEAVY_BALL_CERTIFICATE`),
    or that of a model's stage `stage` whose certificate differs (`DEEP_GD_STAGE_1_CERTIFICATE`)."""
    infix = "" if stage is None else f"_STAGE_{stage}"
    return f"{snake_case(name).upper()}{infix}_CERTIFICATE"


class Namespace:
    def __init__(self, reserved: frozenset[str] = frozenset()):
        self._used: set[str] = set()
        self._reserved = set(reserved) | GENERATED_NAMES

    def _blocked(self, name: str) -> bool:
        return (
            name in self._used
            or name in self._reserved
            or keyword.iskeyword(name)
            or keyword.issoftkeyword(name)
            or hasattr(builtins, name)
            or (name.startswith("__") and name.endswith("__"))
        )

    def create(self, candidate: str) -> str:
        name = re.sub(r"\W", "_", candidate) or "v"
        if name[0].isdigit():
            name = "_" + name
        # A leading double underscore would be name-mangled inside the generated class.
        if name.startswith("__"):
            name = name.strip("_") or "v"
        if self._blocked(name):
            base = name if name.endswith("_") else name + "_"
            name, n = base, 1
            while self._blocked(name):
                n += 1
                name = f"{base}{n}"
        self._used.add(name)
        return name

    def is_used(self, name: str) -> bool:
        return name in self._used


# ---------------------------------------------------------------- names the user may not take
# A user's name becomes a class, a file, an attribute. The reserved sets below are read
# from the objects they protect (nn.Module, the interpreter, the installed packages, the
# templates), so that a new torch or a new template name is covered without an edit here.
_BINDING = re.compile(r"^(?:def|class)\s+([A-Za-z_]\w*)|^([A-Za-z_]\w*)\s*(?::[^=]*)?=(?!=)")
_ATTRIBUTE = re.compile(r"\b(?:self|module)\.([A-Za-z_]\w*)\s*(?::[^=\n]*)?(?:=(?!=)|\b)")
# The runtime functions take the generated module as `module`; a `self` there is one of
# the runtime's own helper objects (`_Learnable.lo`), no attribute of the module.
_MODULE_ATTRIBUTE = re.compile(r"\bmodule\.([A-Za-z_]\w*)\s*(?::[^=\n]*)?(?:=(?!=)|\b)")
# A class constant (`RULE = ...`) or method (`def forward_slots`) of the generated class.
_CLASS_MEMBER = re.compile(r"^    (?:([A-Z][A-Z0-9_]*)\s*=|def\s+([A-Za-z_]\w*))")


def _templates() -> Path:
    return resource_dir("templates")


def _top_level_names(source: str) -> set[str]:
    """The names a Python file binds at module level (defs, classes, assignments, imports)."""
    names: set[str] = set()
    for node in pyast.parse(source).body:
        if isinstance(node, (pyast.FunctionDef, pyast.ClassDef, pyast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (pyast.Import, pyast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (pyast.Assign, pyast.AnnAssign)):
            targets = node.targets if isinstance(node, pyast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, pyast.Name)}
    return names


def _template_bindings(text: str) -> set[str]:
    """The module-level names a jinja template binds: lines without a placeholder, at
    column 0, that define, assign or import (`DIM = ...`, `class ZeroBlock`, `import os`)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith((" ", "\t", "{")):
            continue
        if line.startswith(("import ", "from ")):
            if "{" not in line:
                names |= _top_level_names(line)
        else:
            match = _BINDING.match(line)
            if match:
                names.add(match.group(1) or match.group(2))
    return names


@functools.cache
def generated_names() -> frozenset[str]:
    """Every module-level name of a generated module, model or test file but the class:
    imports (`torch`, `nn`, `F`, `Tensor`, `math`, `os`, `pytest`, ...), the block, stem,
    head and solver sources (`MLP`, `ConvStem`, `_solve`, ...), the test helpers (`DIM`,
    `DEPTH`, `DEVICE`, `ZeroBlock`, `make_input`, ...), and every builtin, which the
    generated code calls (`ValueError`, `float`, ...)."""
    templates = _templates()
    names = set(GENERATED_NAMES) | set(dir(builtins)) | {"__all__"}
    names |= _top_level_names("\n".join(import_lines(frozenset(Import))))
    for path in sorted(templates.rglob("*.py")):
        names |= _top_level_names(path.read_text(encoding="utf-8"))
    for path in sorted(templates.glob("*.j2")):
        names |= _template_bindings(path.read_text(encoding="utf-8"))
    return frozenset(names)


@functools.cache
def module_attributes() -> frozenset[str]:
    """Every attribute a generated module has besides its params: those of `nn.Module`
    (its methods and properties, and `_parameters`, `_modules`, `training`, ... which its
    `__init__` sets), stored in `torch_names`, and those the generated class and the solver
    runtime set or read (`solver`, `backward`, `solver_stats`, `RULE`, `dim`, ...)."""
    names = set(torch_names.NN_MODULE_ATTRIBUTES)
    templates = _templates()
    class_template = templates / "network_class.py.j2"
    for path in [class_template, *sorted(templates.rglob("runtime/*.py"))]:
        text = path.read_text(encoding="utf-8")
        attribute = _ATTRIBUTE if path == class_template else _MODULE_ATTRIBUTE
        names |= set(attribute.findall(text))
        members = (_CLASS_MEMBER.match(line) for line in text.splitlines())
        names |= {m.group(1) or m.group(2) for m in members if m}
    return frozenset(names)


@functools.cache
def module_names() -> frozenset[str]:
    """Top-level module names a generated file must not take: a file `torch.py` or `os.py`
    beside the tests would be imported in place of the real one. The standard library's
    modules, the installed distributions' top-level packages and modules, the Python
    keywords (`from class import Class` does not parse)."""
    installed = importlib.metadata.packages_distributions()
    return frozenset(sys.stdlib_module_names) | frozenset(installed) | frozenset(keyword.kwlist)


# A file name (one path component) of at most 255 bytes: ext4, xfs, btrfs, APFS, NTFS.
MAX_FILE_NAME_BYTES = 255


class Reserved(Enum):
    """Where a user's name lands in the generated code; `reserved(where)` is what is taken."""

    FILE_BINDING = "a module-level name of a generated file"
    MODULE_ATTRIBUTE = "an attribute of the generated module"
    BLOCK_KEY = "a key of the generated module.blocks (an nn.ModuleDict)"
    CONSTRUCTOR_LOCAL = "a local variable of the generated constructor"
    SCHEDULE_LOCAL = "a local of the function that continues a recursive schedule"
    MODULE_NAME = "the name of a generated file's module"


def reserved(where: Reserved) -> frozenset[str]:
    """The one table of reserved names: those a user's name may not be, by where it lands."""
    table = {
        Reserved.FILE_BINDING: generated_names,
        Reserved.MODULE_ATTRIBUTE: module_attributes,
        Reserved.BLOCK_KEY: lambda: torch_names.MODULE_DICT_ATTRIBUTES,
        Reserved.CONSTRUCTOR_LOCAL: lambda: CONSTRUCTOR_LOCALS,
        Reserved.SCHEDULE_LOCAL: lambda: SCHEDULE_HELPER_LOCALS,
        Reserved.MODULE_NAME: module_names,
    }
    return table[where]()
