"""The template sources a generated file copies, one definition at a time.

`templates/runtime/*.py` and `templates/models/*.py` are libraries: a generated file
copies the definitions its classes call (the names the plan says: `_solve` for a
solve, `ConvStem` for a conv stem, ...) and those they read in turn, nothing else.
"""

from __future__ import annotations

import ast as pyast
import functools
from collections.abc import Iterable
from dataclasses import dataclass

from ..resources import resource_path
from .prose import comment_lines

# The runtime a generated file may copy (templates/runtime/), in the order it is written.
RUNTIME_FILES = (
    "params.py",
    "solvers.py",
    "layers.py",
    "checkpoint.py",
    "reversible.py",
    "models.py",
    "reductions.py",
)
# What the class template calls for learnable params: their `_Learnable` specs, their
# float64 starts (`_start`), params(), set_params() and the exact starts kept by `_apply`.
LEARNABLE_RUNTIME = (
    "_Learnable",
    "_start",
    "_param_values",
    "_set_param_values",
    "_params_at_start",
    "_restore_starts",
)


@dataclass(frozen=True)
class Definition:
    """One module-level statement of a template source: what it binds, the module-level
    names it reads, and its text (with the comment lines above it)."""

    names: tuple[str, ...]
    reads: frozenset[str]
    text: str
    paragraph: tuple[str, int]  # (file, paragraph): adjacent lines stay together


def _bound(node: pyast.stmt) -> tuple[str, ...]:
    if isinstance(node, (pyast.FunctionDef, pyast.ClassDef)):
        return (node.name,)
    if isinstance(node, (pyast.Assign, pyast.AnnAssign)):
        targets = node.targets if isinstance(node, pyast.Assign) else [node.target]
        return tuple(t.id for t in targets if isinstance(t, pyast.Name))
    return ()


@functools.cache
def library(folder: str, files: tuple[str, ...]) -> dict[str, Definition]:
    """The definitions of some template sources by the name each binds, in file order."""
    found: dict[str, Definition] = {}
    for name in files:
        text = resource_path(folder, name).read_text("utf-8")
        lines = text.splitlines()
        comments = comment_lines(text)
        paragraph, end = 0, 0
        for node in pyast.parse(text).body:
            start = node.lineno - 1
            # The comment lines right above a statement belong to it.
            while start > end and start in comments:
                start -= 1
            if any(not line.strip() for line in lines[end:start]):
                paragraph += 1
            reads = frozenset(n.id for n in pyast.walk(node) if isinstance(n, pyast.Name))
            definition = Definition(
                _bound(node),
                reads,
                "\n".join(lines[start : node.end_lineno]),
                (name, paragraph),
            )
            for bound in definition.names:
                found[bound] = definition
            end = node.end_lineno
    return found


def copied_sources(folder: str, files: tuple[str, ...], wanted: Iterable[str]) -> list[str]:
    """The definitions of `files` that `wanted` names need, and those they read in turn,
    in file order; adjacent definitions of one paragraph stay one source."""
    defs = library(folder, files)
    needed: set[str] = set()
    todo = [name for name in wanted if name in defs]
    unknown = [name for name in wanted if name not in defs]
    if unknown:
        raise KeyError(f"no definition of {', '.join(unknown)} in {folder}")
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        todo += [n for n in defs[name].reads if n in defs and n != name]
    sources: list[str] = []
    last = None
    for definition in dict.fromkeys(defs.values()):
        if not needed & set(definition.names):
            continue
        if sources and last == definition.paragraph:
            sources[-1] += "\n" + definition.text
        else:
            sources.append(definition.text)
        last = definition.paragraph
    return sources
