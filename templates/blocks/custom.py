def _load_class(target: str) -> type:
    """The `nn.Module` subclass "pkg.module:Class" names (a custom block).

    Importing the module runs its code: a `.opt` file naming custom blocks is
    as trusted as the Python it names. Anything but an `nn.Module` subclass (a
    function, a command runner) is refused before it is called.
    """
    module_name, _, class_name = target.partition(":")
    found = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise TypeError(
            f"custom block {target!r} must name an nn.Module subclass, got {type(found).__name__}"
        )
    return found
