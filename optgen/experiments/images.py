"""The paper's image-classification comparison on real images: `optgen experiment mnist`
and `optgen experiment digits` (digits from Python packages), `optgen experiment
fashion-mnist` and `optgen experiment folder --data DIR` (a data folder: see
`image_sources`).

Every network is a catalog model (or a model of the user's `.opt` file) compiled by
optgen's public API, built with the data's classes and channels (10 and one for the
digits) and fed 32x32 images.
All networks of a run see the same split (its digest is in the report), the same
optimizer (AdamW), schedule (warm-up, cosine), augmentation (random shift) and seeds
(0, 1, ...: initialisation, data order, augmentation). The run is data-parallel under
`torchrun` (see `distributed`), rank 0 writes OUT/NAME.json after every finished seed
(atomically), and `--resume` continues a killed run from its last finished network and
seed, refusing a file written with other settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

from .distributed import World, broadcast, join, leave, use_cuda
from .extras import MissingExtra, require_extras
from .image_data import ImageData, MissingData, load_images
from .image_models import (
    FAMILIES,
    IMAGE_NETWORKS,
    QUICK_NETWORKS,
    SOURCE_NETWORKS,
    ModelSource,
    check_input,
    cost,
    model_class,
    prepare_models,
)
from .image_plots import plot_images
from .image_sources import DataError, SourceImages, load_source
from .image_train import Runtime, train_seed
from .networks import write_modules
from .progress import Progress, progress
from .report_schema import ReportMismatch, check_report
from .settings import SOURCE_EXPERIMENTS, ImageSettings, check_ranges, image_settings_for
from .stats import majority_error, paired, summarize
from .train import thin

FORMAT = 2  # of the report; a change of layout is a change of settings
# 2: an entry's "macs"; FLOPs with attention by its formula (optgen.backend.costs)


class ResumeRefused(Exception):
    """--resume against a file that is not a run of the same settings."""


# Settings added after the first reports were written: left out of the digest at these
# values, so that those reports keep their digest (and stay resumable).
LATER_SETTINGS = {"bf16": False}


def settings_digest(s: ImageSettings) -> str:
    """The sha256 of everything that decides the numbers of a run, the report's format
    included; the data's own digest is checked beside it."""
    fields = {
        k: v for k, v in asdict(s).items() if k not in LATER_SETTINGS or v != LATER_SETTINGS[k]
    }
    text = json.dumps({"format": FORMAT, **fields}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_images(
    s: ImageSettings,
    out: Path,
    networks: list[str],
    resume: bool = False,
    progress_bar: bool = True,
    images: SourceImages | None = None,
    runtime: Runtime | None = None,
) -> dict | None:
    """Train every network for every seed of `s`; rank 0 writes out/NAME.json and
    out/NAME.png. `images`: the data folder read, for the SOURCE_EXPERIMENTS. Every check
    (names, compilation, input, world size, the resumed file) is done before the first
    network is trained or anything is written. Returns the report on rank 0, None on the
    other ranks. `runtime`: the device, memory format and compilation."""
    import torch

    runtime = runtime or Runtime()
    torch.set_num_threads(1)  # one thread a rank: scale out with ranks, not threads
    sources, files = prepare_models(networks)
    classes = {source.label: model_class(source) for source in sources}
    shape = (images.channels, images.num_classes) if images is not None else (1, 10)
    for source in sources:
        check_input(source, classes[source.label], s.size, *shape)
    data = load_images(s, images)
    world = join(runtime.device)
    try:
        if s.batch % world.size:
            raise ValueError(
                f"the global batch {s.batch} does not split evenly over {world.size} ranks"
            )
        report = broadcast(world, _start(s, out, sources, classes, data, resume, world))
        if isinstance(report, Exception):
            raise report
        if world.is_main:
            write_modules(files, out / "modules")
        _train_all(s, out, sources, classes, data, report, world, progress_bar, runtime)
        if not world.is_main:
            return None
        report["complete"] = True
        _write(out, report)
        plot_images(report, out / f"{s.experiment}.png")
        return report
    finally:
        leave(world)


def _start(s, out, sources, classes, data, resume, world) -> dict | Exception:
    """On rank 0: the report to fill, new or read back for --resume (an exception to raise
    on every rank when it cannot be resumed). Elsewhere: None, rank 0's comes by broadcast."""
    if not world.is_main:
        return None
    fresh = _fresh_report(s, sources, classes, data)
    path = out / f"{s.experiment}.json"
    if not resume or not path.exists():
        return fresh
    try:
        return _resumed(path, fresh, sources)
    except ResumeRefused as err:
        return err


def _fresh_report(s, sources, classes, data: ImageData) -> dict:
    report = {
        "experiment": s.experiment,
        "format": FORMAT,
        "settings": {**asdict(s), "steps": s.steps},
        "settings_digest": settings_digest(s),
        "data": data.record,
        "data_digest": data.record["digest"],
        "complete": False,
        "networks": {},
    }
    for source in sources:
        entry = _network_entry(source, classes[source.label], s, data.channels, data.classes)
        report["networks"][source.label] = entry
    return report


def _network_entry(
    source: ModelSource, cls: type, s: ImageSettings, channels: int = 1, num_classes: int = 10
) -> dict:
    figures = cost(cls, s.size, channels, num_classes)
    universal = source.certificate.get("universal") or {}
    return {
        "class": source.class_name,
        "source": str(source.path),
        "module": source.file_name,
        "module_sha256": source.code_digest,
        "family": source.family,
        "family_description": FAMILIES.get(source.family, (None, "a model of the user's"))[1],
        "rule": source.rule,
        "baseline": source.baseline,
        **figures,  # params, flops, macs
        "certificate": {
            "universal": universal.get("guaranteed"),
            "reasons": universal.get("reasons", []),
            "stages": source.certificate.get("stages", []),
        },
        "runs": {},
        "metrics": {},
        "wall_time_s": 0.0,
    }


def _resumed(path: Path, fresh: dict, sources: list[ModelSource]) -> dict:
    """The report in `path`, checked against the run about to start; raise ResumeRefused
    when it is not a run of the same settings, data and networks."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        old_digest, old_settings = old["settings_digest"], old["settings"]
        old_networks = old["networks"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ResumeRefused(
            f"cannot resume from {path}: it is not the report of an image experiment"
            f" ({type(err).__name__}: {err})"
        ) from None
    if old_digest != fresh["settings_digest"]:
        changed = [
            f"{key} {old_settings.get(key)!r} there, {value!r} now"
            for key, value in fresh["settings"].items()
            if old_settings.get(key) != value
        ]
        raise ResumeRefused(
            f"cannot resume from {path}: it was written with other settings"
            f" ({'; '.join(changed) or 'another report format'}); give another --out, or"
            " leave out --resume to start again"
        )
    if old.get("data_digest") != fresh["data_digest"]:
        raise ResumeRefused(
            f"cannot resume from {path}: its data digest differs from this machine's"
            f" {fresh['experiment']} data (other data, or another version of the data"
            " set's package?)"
        )
    try:
        check_report(old, fresh["settings"]["seeds"])
    except ReportMismatch as err:
        raise ResumeRefused(
            f"cannot resume from {path}: {err}; give another --out, or leave out --resume to"
            " start again"
        ) from None
    for source in sources:
        entry = old_networks.get(source.label)
        if entry is not None and entry.get("module_sha256") != source.code_digest:
            raise ResumeRefused(
                f"cannot resume from {path}: network {source.label} has changed since it"
                " was trained (its generated module differs); give another --out"
            )
    # The networks asked for now, in their order, with what is done; then the rest of the
    # file's networks (same settings, same data), so that nothing in it is lost.
    merged = dict(fresh, networks={})
    for label, entry in fresh["networks"].items():
        merged["networks"][label] = old_networks.get(label, entry)
    for label, entry in old_networks.items():
        merged["networks"].setdefault(label, entry)
    merged["complete"] = False
    return merged


def _train_all(
    s, out, sources, classes, data, report, world: World, progress_bar, runtime: Runtime
) -> None:
    todo = [
        (source, seed)
        for source in sources
        for seed in range(s.seeds)
        if str(seed) not in report["networks"][source.label]["runs"]
    ]
    mode = Progress.of(progress_bar) if world.is_main else Progress.OFF
    with progress(mode, len(todo), s.steps, s.steps_per_epoch, s.experiment) as bar:
        for source, seed in todo:
            bar.set_postfix_str(f"{source.label} seed {seed}")
            result = train_seed(classes[source.label], s, data, seed, world, bar, runtime)
            if world.is_main:
                _record(report["networks"][source.label], seed, result)
                _write(out, report)


def _record(entry: dict, seed: int, result: dict) -> None:
    """Add one finished seed to a network's entry and recompute its summary."""
    result = dict(result, curve=thin(result["curve"]))
    entry["runs"][str(seed)] = _finite_or_none(result)
    runs = [entry["runs"][k] for k in sorted(entry["runs"], key=int)]
    entry["metrics"] = {key: summarize([r[key] for r in runs]) for key in METRICS}
    entry["wall_time_s"] = sum(r["wall_time_s"] for r in runs)


METRICS = ("test_error", "test_loss", "final_train_loss")


def baseline_of(report: dict, label: str) -> str | None:
    """The label of the gd model of `label`'s family in the report (None for a baseline, a
    custom model, or a family whose baseline is not in the report)."""
    entry = report["networks"][label]
    if entry["baseline"] or entry["family"] not in FAMILIES:
        return None
    candidate = f"{entry['family']}_gd"
    return candidate if candidate in report["networks"] else None


def refresh_statistics(report: dict) -> None:
    """Recompute what follows from the runs: each entry's paired differences against its
    family's baseline, seed by seed (`versus_baseline`), and the trivial classifier's test
    error (`trivial`)."""
    networks = report["networks"]
    for label, entry in networks.items():
        base = baseline_of(report, label)
        if base is None:
            entry.pop("versus_baseline", None)
            continue
        seeds = sorted(set(entry["runs"]) | set(networks[base]["runs"]), key=int)
        entry["versus_baseline"] = {"baseline": base}
        for key in METRICS:
            mine = [entry["runs"].get(s, {}).get(key) for s in seeds]
            theirs = [networks[base]["runs"].get(s, {}).get(key) for s in seeds]
            entry["versus_baseline"][key] = paired(mine, theirs)
    data = report["data"]
    if "train_class_counts" in data and "test_class_counts" in data:
        report["trivial"] = {
            "rule": "always the most frequent class of the training set",
            "test_error": majority_error(data["train_class_counts"], data["test_class_counts"]),
        }


def _finite_or_none(value):
    """The value with every NaN or infinity (a diverged run) as None, which JSON can hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def _write(out: Path, report: dict) -> None:
    """Write the report atomically: a run killed while writing keeps the previous file."""
    out.mkdir(parents=True, exist_ok=True)
    refresh_statistics(report)
    path = out / f"{report['experiment']}.json"
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


class ImageExperimentError(Exception):
    """A bad input of `optgen experiment mnist|digits|fashion-mnist|folder`: the CLI prints
    it and exits 1."""


def run_image_command(args, progress_bar: bool = True) -> list[str]:
    """`optgen experiment mnist|digits|fashion-mnist|folder` from its parsed arguments: run,
    and return the lines to print (none on ranks other than 0). Raises
    `ImageExperimentError` for a bad input."""
    if args.networks:
        networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    elif args.quick:
        networks = list(QUICK_NETWORKS)
    else:
        networks = list(SOURCE_NETWORKS if args.name in SOURCE_EXPERIMENTS else IMAGE_NETWORKS)
    data = getattr(args, "data", None)
    test_size = getattr(args, "test_size", None)
    runtime = Runtime(
        getattr(args, "device", None) or "auto",
        bool(getattr(args, "channels_last", False)),
        bool(getattr(args, "compile", False)),
    )
    try:
        use_cuda(runtime.device)  # --device cuda without CUDA: refused before any work
        if data is not None and args.name not in SOURCE_EXPERIMENTS:
            raise ValueError(
                f"--data: only for the {' and '.join(SOURCE_EXPERIMENTS)} experiments (the"
                f" {args.name} experiment reads its images from a Python package)"
            )
        require_extras()
        options = (args.seeds, args.epochs, args.batch, args.train_size, test_size)
        # The options' ranges first, then the data (whose size the defaults depend on).
        check_ranges(*options)
        images = None
        if args.name in SOURCE_EXPERIMENTS:
            images = load_source(args.name, data)
        pool = images.pool if images is not None else None
        bf16 = bool(getattr(args, "bf16", False))
        s = image_settings_for(args.name, args.quick, *options, pool=pool, bf16=bf16)
        report = run_images(s, Path(args.out), networks, args.resume, progress_bar, images, runtime)
    except (
        MissingExtra,
        MissingData,
        DataError,
        ResumeRefused,
        ValueError,
        FileNotFoundError,
    ) as err:
        raise ImageExperimentError(str(err)) from None
    if report is None:
        return []
    lines = []
    for label, entry in report["networks"].items():
        error, loss = entry["metrics"]["test_error"], entry["metrics"]["test_loss"]
        lines.append(
            f"{args.name} {label}: test error {_percent(error)}{_versus(entry)}, test loss"
            f" {_plain(loss['mean'])}, {entry['params']} params,"
            f" {entry['flops'] / 1e6:.1f} MFLOPs, {entry['wall_time_s']:.0f} s"
        )
    if "trivial" in report:
        lines.append(
            f"{args.name}: the trivial classifier ({report['trivial']['rule']}) has test error"
            f" {100 * report['trivial']['test_error']:.2f} %"
        )
    out = Path(args.out)
    lines.append(f"optgen: wrote {out / (args.name + '.json')} and {out / (args.name + '.png')}")
    return lines


def _versus(entry: dict) -> str:
    """` (deep_gd +0.12 ± 0.30 points, paired)`: the paired difference from the baseline,
    with its 95 % interval where there are two seeds or more."""
    versus = entry.get("versus_baseline")
    if versus is None or versus["test_error"]["mean"] is None:
        return ""
    diff = versus["test_error"]
    half = "" if diff["ci95"] is None else f" ± {100 * diff['ci95']:.2f}"
    return f" ({100 * diff['mean']:+.2f}{half} points against {versus['baseline']}, paired)"


def _percent(summary: dict) -> str:
    if summary["mean"] is None:
        return "diverged"
    text = f"{100 * summary['mean']:.2f} ± {100 * summary['std']:.2f} %"
    if summary.get("ci95") is not None:
        low, high = summary["mean"] - summary["ci95"], summary["mean"] + summary["ci95"]
        text += f" (95 % interval {100 * low:.2f} to {100 * high:.2f})"
    return text


def _plain(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"
