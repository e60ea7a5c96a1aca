"""The networks of a run, compiled through optgen's public API only.

Everything the experiments know of a network comes from what the API returns: the
certificates and the files of `compile_and_check` (`<name>.py` beside
`test_<name>.py` for every network, the module's `__all__` naming its class) and the
generated class itself, whose docstring states its input layout. `prepare` compiles and
checks every requested network in memory, so that a bad one stops the run before
anything is written; `write_modules` then writes the files and `import_class` imports a
class back from them, so that what is trained is the file `optgen compile` writes.
"""

from __future__ import annotations

import importlib.util
import re
import types
from dataclasses import dataclass
from pathlib import Path

from .. import compile_and_check
from ..resources import resource_dir

EXAMPLES = resource_dir("examples")
# The layout the experiments feed: a batch of feature vectors (optgen's "vector" layout).
VECTOR = "[..., dim]"
_LAYOUT = re.compile(r"^\s*Input and output layout: (\[[^\]]*\])\.\s*$", re.MULTILINE)


class UnsupportedLayout(Exception):
    """A requested network does not take the [..., dim] vectors the experiments train on."""


@dataclass(frozen=True)
class NetworkSource:
    given: str  # the entry of --networks it comes from
    label: str  # its key in the report: `given`, or `given:Name` for a file of several
    path: Path  # the .opt file
    class_name: str
    file_name: str  # the compiled module, inside OUT/modules
    layout: str  # as the generated class states it, e.g. "[..., dim]"
    certificate: dict


def source_path(name: str) -> Path:
    """The .opt file of a catalog name or a path."""
    path = Path(name) if name.endswith(".opt") else EXAMPLES / f"{name}.opt"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in EXAMPLES.glob("*.opt")))
        raise FileNotFoundError(
            f"no network {name!r}: give a catalog name ({known}) or a .opt file"
        )
    return path


def prepare(names: list[str], experiment: str) -> tuple[list[NetworkSource], dict[str, str]]:
    """Compile every named network in memory and check its layout; write nothing.

    Returns the networks in order and every output file (name to text). Raises
    `FileNotFoundError` for an unknown name, `optgen.OptgenError` for a rule that does not
    compile, and `UnsupportedLayout` naming every network that does not take vectors.
    """
    sources: list[NetworkSource] = []
    files: dict[str, str] = {}
    for name in names:
        path = source_path(name)
        text = path.read_text(encoding="utf-8")
        outputs, certificates = compile_and_check(text, str(path))
        classes = {}
        for file_name, code in outputs.items():
            if f"test_{file_name}" in outputs:  # a module, not the test beside it
                cls = _class_in(code, file_name)
                classes[cls.__name__] = (file_name, cls)
        for certificate in certificates:
            file_name, cls = classes[certificate["name"]]
            label = name if len(certificates) == 1 else f"{name}:{cls.__name__}"
            sources.append(
                NetworkSource(
                    name, label, path, cls.__name__, file_name, layout_of(cls), certificate
                )
            )
        files.update(outputs)
    wrong = [s for s in sources if s.layout != VECTOR]
    if wrong:
        takes = "; ".join(
            f"network {s.class_name} ({s.given}) takes {s.layout} inputs" for s in wrong
        )
        raise UnsupportedLayout(
            f"{takes}; the {experiment} experiment trains networks on {VECTOR} vectors"
        )
    return sources, files


def layout_of(cls: type) -> str:
    """The input layout a generated class states in its docstring."""
    match = _LAYOUT.search(cls.__doc__ or "")
    if match is None:
        raise RuntimeError(f"the generated class {cls.__name__} does not state its input layout")
    return match.group(1)


def _class_in(code: str, file_name: str) -> type:
    """The network class of a generated module's source, executed in memory."""
    module = types.ModuleType(f"optgen_experiment_check_{Path(file_name).stem}")
    exec(compile(code, file_name, "exec"), module.__dict__)
    (class_name,) = module.__all__
    return getattr(module, class_name)


def write_modules(files: dict[str, str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, code in files.items():
        (folder / file_name).write_text(code, encoding="utf-8")


def import_class(path: Path, class_name: str) -> type:
    """Import a written module from its file and return its class."""
    spec = importlib.util.spec_from_file_location(f"optgen_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, class_name)
