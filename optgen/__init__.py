"""optgen: compile first-order optimization update rules into checked PyTorch modules."""

__version__ = "0.1.0"

from .api import check_source, compile_source, load, loads  # noqa: E402
from .errors import OptgenError, OptgenWarning  # noqa: E402

__all__ = [
    "OptgenError",
    "OptgenWarning",
    "check_source",
    "compile_source",
    "load",
    "loads",
    "__version__",
]
