"""The image classifiers of a run, compiled through optgen's public API only.

A network of `--networks` is a catalog model by the name of its generated file
(`wide_gd`, `deep_apg2`, `iso_vit_apg2`, ...) or a `.opt` file, which gives every model it
declares. `prepare_models` compiles and checks each file in memory, once
(`compile_and_check`), and refuses an unknown name before anything is trained or written; the
class is executed from the very text that is written to OUT/modules, so that every rank,
on every node, trains the file `optgen compile` writes without reading it back from a
disk it may not share.
"""

from __future__ import annotations

import hashlib
import types
from dataclasses import dataclass
from pathlib import Path

from .. import compile_and_check, costs
from ..resources import resource_dir

MODELS = resource_dir("examples") / "models"

# The catalog's comparison: per family, the gradient-descent model (the ResNet-like, or
# plain isotropic, baseline) and the models built from the other rules, at equal widths,
# depths, stem, transitions and head.
FAMILIES = {
    "wide": ("staged.opt", "wide-shallow (widths 32/64/128, depth 1 a stage)"),
    "deep": ("staged.opt", "narrow-deep (widths 16/32/64, depth 3 a stage)"),
    "iso_convnext": ("isotropic.opt", "isotropic ConvNeXt (width 32, depth 4)"),
    "iso_vit": ("isotropic.opt", "isotropic ViT (width 32, depth 4)"),
}
RULES = ("gd", "heavy_ball", "nesterov", "apg2")
IMAGE_NETWORKS = (
    *(f"{family}_{rule}" for family in ("wide", "deep") for rule in RULES),
    *(f"{family}_{rule}" for family in ("iso_convnext", "iso_vit") for rule in ("gd", "apg2")),
)
# The default of a data folder (fashion-mnist, folder): the narrow-deep staged family, whose
# multistep models are matched to gd's FLOPs, and both isotropic pairs; the wide family is
# left out to keep the default run of fashion-mnist within about 2 CPU-hours.
SOURCE_NETWORKS = (
    *(f"deep_{rule}" for rule in RULES),
    *(f"{family}_{rule}" for family in ("iso_convnext", "iso_vit") for rule in ("gd", "apg2")),
)
# --quick: one model of each family, baselines and APG2 both present.
QUICK_NETWORKS = ("wide_gd", "deep_apg2", "iso_convnext_gd", "iso_vit_apg2")


@dataclass(frozen=True)
class ModelSource:
    label: str  # its key in the report
    path: Path  # the .opt file
    class_name: str
    file_name: str  # the generated module
    code: str  # its text, as written to OUT/modules
    certificate: dict  # the model's certificate, from compile_and_check
    family: str  # a key of FAMILIES, or "custom"
    rule: str  # a name of RULES, or "custom"

    @property
    def baseline(self) -> bool:
        return self.rule == "gd"

    @property
    def code_digest(self) -> str:
        return hashlib.sha256(self.code.encode("utf-8")).hexdigest()


def prepare_models(names: list[str]) -> tuple[list[ModelSource], dict[str, str]]:
    """Compile the files of every named model in memory; write nothing.

    Returns the models in order and every output file (name to text). Raises
    `FileNotFoundError` for an unknown name or a `.opt` file without a model, and
    `optgen.OptgenError` for a file that does not compile.
    """
    compiled: dict[Path, tuple[dict[str, str], dict[str, dict]]] = {}
    sources: list[ModelSource] = []
    files: dict[str, str] = {}
    located = [(name, *_locate(name)) for name in names]
    # Each file compiled once, for the models wanted of it (a catalog file holds eight;
    # training one need not analyse and write the others), or all of a .opt given.
    wanted_of: dict[Path, set[str] | None] = {}
    for _, path, wanted in located:
        if wanted is None or wanted_of.get(path, set()) is None:
            wanted_of[path] = None
        else:
            wanted_of.setdefault(path, set()).add(wanted)
    for name, path, wanted in located:
        if path not in compiled:
            text = path.read_text(encoding="utf-8")
            outputs, certificates = compile_and_check(text, str(path), wanted_of[path])
            models = {c["name"]: c for c in certificates if c["kind"] == "model"}
            compiled[path] = (outputs, models)
        outputs, models = compiled[path]
        found = [_source(name, path, cert, outputs) for cert in models.values()]
        found = [s for s in found if wanted is None or s.file_name == f"{wanted}.py"]
        if not found:
            raise FileNotFoundError(f"{path} declares no model: it has networks only")
        for source in found:
            sources.append(source)
            files[source.file_name] = source.code
            files[f"test_{source.file_name}"] = outputs[f"test_{source.file_name}"]
    labels = [s.label for s in sources]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise FileNotFoundError(f"network {', '.join(twice)} is given twice")
    return sources, files


def _locate(name: str) -> tuple[Path, str | None]:
    """The .opt file of a catalog model name (and the name) or of a path (None: all)."""
    if name.endswith(".opt"):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"no network {name!r}: the file does not exist")
        return path, None
    family = next((f for f in sorted(FAMILIES, key=len, reverse=True) if name.startswith(f)), None)
    if name not in IMAGE_NETWORKS or family is None:
        raise FileNotFoundError(
            f"no network {name!r}: give a catalog model ({', '.join(IMAGE_NETWORKS)})"
            " or a .opt file with models"
        )
    return MODELS / FAMILIES[family][0], name


def _source(given: str, path: Path, certificate: dict, outputs: dict[str, str]) -> ModelSource:
    class_name = certificate["name"]
    file_name = next(
        f for f, code in outputs.items() if f"\nclass {class_name}(nn.Module):" in code
    )
    stem = Path(file_name).stem
    in_catalog = stem in IMAGE_NETWORKS and path.resolve().parent == MODELS.resolve()
    label = stem if in_catalog or not given.endswith(".opt") else f"{given}:{class_name}"
    family, rule = "custom", "custom"
    if in_catalog:
        family = next(f for f in sorted(FAMILIES, key=len, reverse=True) if stem.startswith(f))
        rule = stem[len(family) + 1 :]
    return ModelSource(
        label, path, class_name, file_name, outputs[file_name], certificate, family, rule
    )


def model_class(source: ModelSource) -> type:
    """The model class, executed from the generated text."""
    module = types.ModuleType(f"optgen_image_{Path(source.file_name).stem}")
    exec(compile(source.code, source.file_name, "exec"), module.__dict__)
    return getattr(module, source.class_name)


def check_input(
    source: ModelSource, cls: type, size: int, channels: int = 1, classes: int = 10
) -> None:
    """Refuse a model that cannot take `channels`-channel size x size images (or give
    `classes` logits)."""
    import torch

    try:
        with torch.no_grad():
            model = cls(num_classes=classes, in_chans=channels).eval()
            logits = model(torch.zeros(1, channels, size, size))
        if tuple(logits.shape) != (1, classes):
            raise ValueError(f"it gives logits of shape {list(logits.shape)}, not [1, {classes}]")
    except Exception as err:  # any failure: the model and the experiment do not fit
        raise ValueError(
            f"network {source.label} ({source.class_name}, declared input"
            f" {list(cls.INPUT_SIZE)}) does not take the [{channels}, {size}, {size}] images"
            f" of the experiment: {type(err).__name__}: {err}"
        ) from None


def cost(cls: type, size: int, channels: int = 1, classes: int = 10) -> dict[str, int]:
    """Parameters, FLOPs and MACs of one image through the model as the experiment builds
    and feeds it (`classes` classes, `channels` channels, size x size), counted as the
    class's FLOPS is (`optgen.costs`: attention by its formula, MACs half the FLOPs)."""
    model = cls(num_classes=classes, in_chans=channels).eval()
    return costs(model, (channels, size, size))
