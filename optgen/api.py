"""The Python API: `compile_source`, `check_source`, `load`, all on one `pipeline.compile`.

Library code raises `OptgenError` for every user error and returns values; only
`cli.py` prints and chooses exit codes.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from . import pipeline
from ._version import __version__
from .errors import OptgenWarning
from .naming import snake_case
from .pipeline import Result, Stage
from .source import SourceFile


def _compiled(
    text: str,
    filename: str,
    strict: bool = False,
    until: Stage = Stage.EMIT,
    line_length: int | None = None,
) -> Result:
    if not isinstance(text, str):
        raise TypeError(f"expected the text of a .opt file as str, got {type(text).__name__}")
    if not isinstance(filename, str):
        raise TypeError(f"expected the file name as str, got {type(filename).__name__}")
    formatting = None
    if line_length is not None:
        if not isinstance(line_length, int) or isinstance(line_length, bool) or line_length < 1:
            raise ValueError(f"line_length must be a positive int, got {line_length!r}")
        from .backend.formatting import Formatting

        formatting = Formatting(line_length=line_length)
    source = SourceFile(filename, text)
    result = pipeline.compile(source, strict=strict, until=until, formatting=formatting)
    result.raise_for_errors()
    for warning in result.warnings:
        # The API warns where the CLI prints: a rule that fails its convergence conditions.
        warnings.warn(warning.render(result.source), OptgenWarning, stacklevel=3)
    return result


def frontend(text: str, filename: str = "<string>") -> Result:
    """The IR of every network of a text (no analysis, no files): for tools and tests."""
    return _compiled(text, filename, until=Stage.FRONTEND)


def compile_source(
    text: str, filename: str = "<string>", strict: bool = False, line_length: int | None = None
) -> dict[str, str]:
    """Output file name (`nesterov.py`, `test_nesterov.py`, ...) to source text, every network.

    The files are formatted as black's defaults do (88 columns), or at `line_length`.
    """
    return _compiled(text, filename, strict, line_length=line_length).outputs


def check_source(text: str, filename: str = "<string>") -> list[dict]:
    """The certificates of every network, as the dicts of `optgen check --json`."""
    result = _compiled(text, filename, until=Stage.ANALYSIS)
    return [cert.as_dict() for cert in result.certificates] + [
        cert.as_dict() for cert in result.model_certificates
    ]


def load(path: str | Path) -> dict[str, type]:
    """Compile a `.opt` file and return {network or model name: module class}.

    The classes live in real files (a package per source in optgen's cache folder, on
    `sys.path`), so that their instances pickle and `torch.save` like any module's.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"optgen.load expects a path to a .opt file, got {type(path).__name__}")
    path = Path(path)
    return loads(path.read_bytes().decode("utf-8"), str(path))  # no newline translation


def loads(text: str, filename: str = "<string>") -> dict[str, type]:
    """`load` for the text of a `.opt` file: {network or model name: module class}."""
    result = _compiled(text, filename)
    package = _cached_package(result, filename)
    classes = {}
    for item in (*result.networks, *result.models):
        module = importlib.import_module(f"{package}.{snake_case(item.name)}")
        classes[item.name] = getattr(module, item.name)
    return classes


def cache_folder() -> Path:
    """Where `load` writes its packages: $OPTGEN_CACHE, else the user's cache folder."""
    configured = os.environ.get("OPTGEN_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "optgen"


def _cached_package(result: Result, filename: str) -> str:
    """The package holding the generated modules of `result`, written once per source.

    Its name is a digest of the source's file name and of the generated files: the same
    source always imports the same package, and a changed one (or a change of optgen that
    changes the code, within one version) never meets a stale file.
    """
    parts = [__version__, Path(filename).name]
    parts += [f"{name}\0{code}" for name, code in sorted(result.outputs.items())]
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:20]
    package = f"optgen_{digest}"
    root = _writable_cache()
    folder = root / package
    if not (folder / "__init__.py").is_file():
        staging = Path(tempfile.mkdtemp(prefix=f".{package}.", dir=root))
        for name, code in result.outputs.items():
            if not name.startswith("test_"):
                (staging / name).write_text(code, encoding="utf-8")
        (staging / "__init__.py").write_text(
            f'"""Compiled by optgen from {Path(filename).name!r}."""\n'
        )
        try:
            os.replace(staging, folder)
        except OSError:  # another process wrote the same package first: keep that one
            shutil.rmtree(staging, ignore_errors=True)
    if str(root) not in sys.path:
        sys.path.append(str(root))
    importlib.invalidate_caches()
    return package


def _writable_cache() -> Path:
    root = cache_folder() / f"modules-{__version__}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe.")
        probe.close()
    except OSError:  # a read-only home: a folder of the temporary directory instead
        root = Path(tempfile.gettempdir()) / f"optgen-{os.getuid()}" / f"modules-{__version__}"
        root.mkdir(parents=True, exist_ok=True)
    return root
