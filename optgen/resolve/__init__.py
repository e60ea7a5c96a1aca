"""Resolution: the frozen AST to the typed IR, every semantic error located."""

from .resolver import Resolver, resolve

__all__ = ["Resolver", "resolve"]
