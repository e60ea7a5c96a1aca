"""The module-level imports a generated file may hold, and the block they are written as."""

from __future__ import annotations

from enum import Enum

# Every generated module imports these; the rest only where an op or a kind needs them.
ALWAYS = ("import torch", "from torch import Tensor, nn")


class Import(Enum):
    """Module-level imports an op may need beyond `torch` and `from torch import Tensor, nn`."""

    FUNCTIONAL = "import torch.nn.functional as F"
    MATH = "import math"
    IMPORTLIB = "import importlib"
    WARNINGS = "import warnings"
    SYS = "import sys"  # a model file: timm registers a module found in sys.modules

    @property
    def stdlib(self) -> bool:
        return self is not Import.FUNCTIONAL


def import_lines(needed: frozenset[Import]) -> list[str]:
    """The import block, from what the plan's ops and block sources need (sorted, fx-style)."""
    lines = sorted(i.value for i in needed if i.stdlib)
    if lines:
        lines.append("")
    lines.append(ALWAYS[0])
    if Import.FUNCTIONAL in needed:
        lines.append(Import.FUNCTIONAL.value)
    lines.append(ALWAYS[1])
    return lines
