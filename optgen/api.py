"""The Python API: the pipeline parse -> resolve -> analyse -> lower -> emit, in memory.

Library code raises `OptgenError` for every user error and returns values; only
`cli.py` prints and chooses exit codes.
"""

from __future__ import annotations

import linecache
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

from . import ir
from .errors import Diagnostic, OptgenError
from .parse import parse
from .resolve import resolve, snake_case
from .source import SourceFile


@dataclass
class Compiled:
    """What the front end knows of one source text."""

    source: SourceFile
    networks: list[ir.Network]
    warnings: list[Diagnostic] = field(default_factory=list)


def frontend(text: str, filename: str = "<string>") -> Compiled:
    source = SourceFile(filename, text)
    warnings: list[Diagnostic] = []
    networks = resolve(parse(source), source, warnings)
    return Compiled(source, networks, warnings)


def certify(net: ir.Network, source: SourceFile) -> dict:
    """The certificate of a network as the dict of `check --json`."""
    from .certify import certificate_dict

    return certificate_dict(net, source)


def strict_failures(net: ir.Network) -> list[Diagnostic]:
    from .certify import strict_diagnostics

    return strict_diagnostics(net)


def compile_source(text: str, filename: str = "<string>", strict: bool = False) -> dict[str, str]:
    """Output file name (`nesterov.py`, `test_nesterov.py`, ...) to source text, every network."""
    compiled = frontend(text, filename)
    outputs: dict[str, str] = {}
    from .codegen import generate

    source_name = Path(filename).name
    for net in compiled.networks:
        if strict:
            failures = strict_failures(net)
            if failures:
                raise OptgenError(failures, compiled.source)
        outputs.update(
            generate(net, certify(net, compiled.source), source_name, compiled.source.sha256)
        )
    return outputs


def check_source(text: str, filename: str = "<string>") -> list[dict]:
    """The certificates of every network, as the dicts of `optgen check --json`."""
    compiled = frontend(text, filename)
    return [certify(net, compiled.source) for net in compiled.networks]


def load(path: str | Path) -> dict[str, type]:
    """Compile a `.opt` file in memory and return {network name: module class}."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    compiled = frontend(text, str(path))
    outputs = compile_source(text, str(path))
    classes = {}
    for net in compiled.networks:
        stem = snake_case(net.name)
        code = outputs[f"{stem}.py"]
        filename = f"<optgen {path.name}:{net.name}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        module = types.ModuleType(f"optgen_generated.{stem}")
        module.__file__ = filename
        sys.modules[module.__name__] = module
        exec(compile(code, filename, "exec"), module.__dict__)
        classes[net.name] = getattr(module, net.name)
    return classes
