"""The Python API: `compile_source`, `check_source`, `load`, all on one `pipeline.compile`.

Library code raises `OptgenError` for every user error and returns values; only
`cli.py` prints and chooses exit codes.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from pathlib import Path

from . import cache, pipeline
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
    models_only: frozenset[str] | None = None,
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
    result = pipeline.compile(
        source, strict=strict, until=until, formatting=formatting, models_only=models_only
    )
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
    return _certificate_dicts(_compiled(text, filename, until=Stage.ANALYSIS))


def compile_and_check(
    text: str, filename: str = "<string>", models: Collection[str] | None = None
) -> tuple[dict[str, str], list[dict]]:
    """`compile_source` and `check_source` of one text from one run of the pipeline (the
    analysis is half of a compile: tools that need both pay it once).

    `models`: only these models (by name, `DeepGd`, or file stem, `deep_gd`): their files
    and certificates and those of the networks, no network file; an unknown name is
    simply absent. For a tool that trains a few models of a catalog file."""
    if models is not None and (
        isinstance(models, str) or not all(isinstance(m, str) for m in models)
    ):
        raise TypeError("models must be a collection of model names (str)")
    chosen = None if models is None else frozenset(models)
    result = _compiled(text, filename, models_only=chosen)
    return result.outputs, _certificate_dicts(result)


def _certificate_dicts(result: Result) -> list[dict]:
    return [cert.as_dict() for cert in result.certificates] + [
        cert.as_dict() for cert in result.model_certificates
    ]


def load(path: str | Path) -> dict[str, type]:
    """Compile a `.opt` file and return {network or model name: module class}.

    The classes live in real files (a verified package per source in optgen's cache folder,
    imported by location, never from `sys.path`), so that their instances pickle and
    `torch.save` like any module's. See `optgen.cache` for what the cache guarantees.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"optgen.load expects a path to a .opt file, got {type(path).__name__}")
    path = Path(path)
    return loads(path.read_bytes().decode("utf-8"), str(path))  # no newline translation


def loads(text: str, filename: str = "<string>") -> dict[str, type]:
    """`load` for the text of a `.opt` file: {network or model name: module class}."""
    result = _compiled(text, filename)
    modules = cache.load_package(result.outputs, filename)
    return {
        item.name: getattr(modules[snake_case(item.name)], item.name)
        for item in (*result.networks, *result.models)
    }


def costs(model, input_size) -> dict[str, int]:
    """Parameters, FLOPs and MACs of one input of `input_size` (no batch dimension, e.g.
    `(1, 32, 32)`) through `model`, counted as a generated model's `FLOPS`, `MACS` and
    `PARAMS` are: on a forward of zeros, attention by its formula, a multiply-add 2 FLOPs
    and 1 MAC, elementwise work not counted. For a model built with other arguments or fed
    another input than the class's declared ones (another channel count or class count)."""
    from .backend import costs as counting

    flops = counting.count_flops(model, tuple(input_size))["total"]
    return {
        "params": counting.count_params(model)["total"],
        "flops": flops,
        "macs": counting.macs(flops),
    }


def cache_folder() -> Path:
    """Where `load` writes its packages: $OPTGEN_CACHE, else the user's cache folder."""
    return cache.cache_folder()
