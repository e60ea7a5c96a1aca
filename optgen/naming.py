"""Legal, unique Python names for the generated code (after torch.fx's `_Namespace`).

User names never reach the output raw: a name that is a Python keyword, a builtin,
or one of the generated file's own names gets a trailing underscore (and `_N` on
further clashes).
"""

from __future__ import annotations

import ast as pyast
import builtins
import functools
import importlib.metadata
import keyword
import re
import sys
from pathlib import Path

# Names the generated forward and module use for themselves.
GENERATED_NAMES = frozenset(
    {"self", "torch", "nn", "F", "Tensor", "math", "importlib", "k", "annotations"}
)


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
    from .resources import resource_dir

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
    from .backend import emit as codegen
    from .backend import plan

    templates = _templates()
    names = set(GENERATED_NAMES) | set(dir(builtins)) | {"__all__"}
    names |= _top_level_names("\n".join(codegen._imports(frozenset(plan.Import))))
    for path in sorted(templates.rglob("*.py")):
        names |= _top_level_names(path.read_text(encoding="utf-8"))
    for path in sorted(templates.glob("*.j2")):
        names |= _template_bindings(path.read_text(encoding="utf-8"))
    return frozenset(names)


@functools.cache
def module_attributes() -> frozenset[str]:
    """Every attribute a generated module has besides its params: those of `nn.Module`
    (its methods and properties, and `_parameters`, `_modules`, `training`, ... which its
    `__init__` sets), read from torch itself, and those the generated class and the solver
    runtime set or read (`solver`, `backward`, `solver_stats`, `RULE`, `dim`, ...)."""
    from torch import nn

    names = set(dir(nn.Module)) | set(vars(nn.Module()))
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
