def _load_class(target: str) -> type:
    """The class named by "pkg.module:Class" (a custom block)."""
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
