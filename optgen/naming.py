"""Legal, unique Python names for the generated code (after torch.fx's `_Namespace`).

User names never reach the output raw: a name that is a Python keyword, a builtin,
or one of the generated file's own names gets a trailing underscore (and `_N` on
further clashes).
"""

from __future__ import annotations

import builtins
import keyword
import re

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
