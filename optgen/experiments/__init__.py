"""The paper's experiments: the small synthetic ones (rings, parity, Telgarsky's sawtooth)
here, the image classification on real digits (mnist, digits) in `images`.

Every network is a generated module of the catalog (compiled by optgen into the output
folder and imported from there, unchanged) inside the same thin wrapper: a linear lift
of the input to width `dim`, the module, a linear read-out. All networks of a run see
the same data, optimizer, schedule and seeds; the JSON records a digest of the data to
prove it, and each network's certificate next to its metrics.

This package sits above optgen's public API: it compiles networks with
`optgen.compile_and_check` only, never with the compiler's stages. The networks must take `[..., dim]` vectors; any other layout is refused before
anything is trained or written.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .data import digest, make_data
from .extras import MissingExtra, require_extras
from .image_models import IMAGE_NETWORKS, QUICK_NETWORKS
from .images import ImageExperimentError, run_image_command, run_images
from .networks import UnsupportedLayout, import_class, prepare, write_modules
from .plots import plot
from .progress import Progress, progress
from .settings import IMAGE_EXPERIMENTS, ImageSettings, Settings, image_settings_for, settings_for
from .train import train_network

__all__ = [
    "DEFAULT_NETWORKS",
    "EXPERIMENTS",
    "IMAGE_EXPERIMENTS",
    "IMAGE_NETWORKS",
    "QUICK_NETWORKS",
    "ImageExperimentError",
    "ImageSettings",
    "MissingExtra",
    "Settings",
    "UnsupportedLayout",
    "image_settings_for",
    "require_extras",
    "run",
    "run_image_command",
    "run_images",
]

DEFAULT_NETWORKS = ("gd", "heavy_ball", "nesterov", "nesterov_k", "dense", "ladmm")
EXPERIMENTS = ("rings", "parity", "telgarsky")


def run(
    name: str,
    out: Path,
    networks: list[str],
    quick: bool = False,
    seeds: int | None = None,
    progress_bar: bool = True,
) -> dict:
    """Train every network on experiment `name`; write out/NAME.json and out/NAME.png.

    Every network is compiled and checked before the first is trained: an unknown name
    (`FileNotFoundError`), a rule that does not compile (`optgen.OptgenError`) or a network
    that does not take vectors (`UnsupportedLayout`) leaves `out` untouched.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"no experiment {name!r}: choose one of {', '.join(EXPERIMENTS)}")
    require_extras()
    import torch

    # Small models: one thread is fastest and does not fight other processes for the cores.
    torch.set_num_threads(1)
    sources, files = prepare(networks, name)
    s = settings_for(name, quick, seeds)
    modules = out / "modules"
    write_modules(files, modules)
    data = make_data(s)
    data_digest = digest(*data)
    results: dict[str, dict] = {}
    fitted: dict[str, object] = {}
    mode, every = Progress.of(progress_bar), max(1, s.steps // 10)
    with progress(mode, len(sources), s.seeds * s.steps, every, name) as bar:
        for source in sources:
            bar.set_postfix_str(source.label)
            cls = import_class(modules / source.file_name, source.class_name)
            entry, model = train_network(cls, source, s, data, data_digest, bar)
            results[source.label], fitted[source.label] = entry, model
    report = {
        "experiment": name,
        "settings": asdict(s),
        "data_digest": data_digest,
        "networks": results,
    }
    (out / f"{name}.json").write_text(
        json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    plot(name, s, data, results, fitted, out / f"{name}.png")
    return report
