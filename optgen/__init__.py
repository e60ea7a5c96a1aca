"""optgen: compile first-order optimization update rules into checked PyTorch modules."""

from ._version import __version__
from .api import check_source, compile_and_check, compile_source, costs, load, loads
from .errors import OptgenError, OptgenWarning

__all__ = [
    "OptgenError",
    "OptgenWarning",
    "check_source",
    "compile_and_check",
    "compile_source",
    "costs",
    "load",
    "loads",
    "__version__",
]
