"""The experiments' optional dependencies (the `experiments` extra): a clear error without them."""

from __future__ import annotations


class MissingExtra(Exception):
    """matplotlib or tqdm is not installed."""


def require_extras() -> None:
    """Raise MissingExtra unless matplotlib and tqdm are installed."""
    try:
        import matplotlib  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError:
        raise MissingExtra(
            "optgen experiment needs matplotlib and tqdm: pip install 'optgen[experiments]'"
            " (or pip install matplotlib tqdm)"
        ) from None
