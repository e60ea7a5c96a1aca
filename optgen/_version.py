"""optgen's version, in a module of its own so that any stage can read it without importing
the package's public API (which would import the pipeline)."""

__version__ = "0.1.0"
