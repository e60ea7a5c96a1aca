"""The paper's small experiments: rings, parity and Telgarsky's sawtooth.

Every network is a generated module of the catalog (compiled by optgen into the output
folder and imported from there, unchanged) inside the same thin wrapper: a linear lift
of the input to width `dim`, the module, a linear read-out. All networks of a run see
the same data, optimizer, schedule and seeds; the JSON records a digest of the data to
prove it, and each network's certificate next to its metrics.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .api import certify, compile_source, frontend
from .resolve import snake_case
from .resources import resource_dir

DEFAULT_NETWORKS = ("gd", "heavy_ball", "nesterov", "nesterov_k", "dense", "ladmm")
EXPERIMENTS = ("rings", "parity", "telgarsky")
EXAMPLES = resource_dir("examples")


class MissingExtra(Exception):
    """matplotlib or tqdm is not installed."""


@dataclass(frozen=True)
class Settings:
    experiment: str
    dim: int = 32
    depth: int = 8
    steps: int = 1500
    batch: int = 256
    lr: float = 3e-3
    seeds: int = 3
    n_train: int = 2048
    n_test: int = 2048
    data_seed: int = 1234
    rings: int = 4
    parity_bits: int = 6
    tent_compositions: int = 4


def settings_for(name: str, quick: bool, seeds: int | None) -> Settings:
    base = Settings(name)
    if name == "telgarsky":
        base = replace(base, n_train=1024, n_test=1000)
    if quick:
        base = replace(base, steps=150, seeds=1, n_train=512, n_test=512)
    if seeds is not None:
        base = replace(base, seeds=seeds)
    return base


# ---------------------------------------------------------------- data
def make_data(s: Settings):
    """(x_train, y_train, x_test, y_test), the same for every network of a run."""
    import torch

    g = torch.Generator().manual_seed(s.data_seed)
    if s.experiment == "rings":

        def sample(n):
            ring = torch.randint(0, s.rings, (n,), generator=g)
            angle = 2 * math.pi * torch.rand(n, generator=g)
            radius = 1.0 + ring.float() + 0.08 * torch.randn(n, generator=g)
            x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1) / s.rings
            return x, (ring % 2).float().unsqueeze(1)

    elif s.experiment == "parity":

        def sample(n):
            x = 2 * torch.rand(n, s.parity_bits, generator=g) - 1
            y = ((x < 0).sum(dim=1) % 2).float().unsqueeze(1)
            return x, y

    else:

        def sample(n, grid=False):
            x = torch.linspace(0, 1, n).unsqueeze(1) if grid else torch.rand(n, 1, generator=g)
            return x, sawtooth(x, s.tent_compositions)

    x_train, y_train = sample(s.n_train)
    x_test, y_test = (
        sample(s.n_test, grid=True) if s.experiment == "telgarsky" else sample(s.n_test)
    )
    return x_train, y_train, x_test, y_test


def sawtooth(x, m: int):
    """The tent map composed m times on [0, 1] (2^(m-1) teeth)."""
    for _ in range(m):
        x = 1 - (2 * x - 1).abs()
    return x


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- networks
@dataclass(frozen=True)
class NetworkSource:
    label: str  # as named on the command line
    path: Path  # the .opt file
    class_name: str
    module_path: Path  # the compiled module
    certificate: dict


def compile_networks(names: list[str], out: Path) -> list[NetworkSource]:
    """Compile each named catalog rule (or .opt path) into out/modules and locate its class."""
    modules = out / "modules"
    modules.mkdir(parents=True, exist_ok=True)
    sources = []
    for name in names:
        path = Path(name) if name.endswith(".opt") else EXAMPLES / f"{name}.opt"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in EXAMPLES.glob("*.opt")))
            raise FileNotFoundError(
                f"no network {name!r}: give a catalog name ({known}) or a .opt file"
            )
        text = path.read_text(encoding="utf-8")
        compiled = frontend(text, str(path))
        files = compile_source(text, str(path))
        for file_name, code in files.items():
            (modules / file_name).write_text(code, encoding="utf-8")
        for net in compiled.networks:
            label = name if len(compiled.networks) == 1 else f"{name}:{net.name}"
            sources.append(
                NetworkSource(
                    label,
                    path,
                    net.name,
                    modules / f"{snake_case(net.name)}.py",
                    certify(net, compiled.source),
                )
            )
    return sources


def import_class(source: NetworkSource):
    spec = importlib.util.spec_from_file_location(
        f"optgen_experiment_{source.module_path.stem}", source.module_path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, source.class_name)


def wrap(cls, s: Settings, in_features: int, out_features: int):
    """Linear lift -> generated module -> linear read-out."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(in_features, s.dim),
        cls(s.dim, depth=s.depth),
        torch.nn.Linear(s.dim, out_features),
    )


# ---------------------------------------------------------------- training
def train_one(cls, s: Settings, data, seed: int, progress=None) -> dict:
    import torch
    import torch.nn.functional as F

    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model = wrap(cls, s, x_train.shape[1], 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.steps)
    g = torch.Generator().manual_seed(seed)
    classify = s.experiment != "telgarsky"
    loss_fn = F.binary_cross_entropy_with_logits if classify else F.mse_loss
    curve = []
    for _ in range(s.steps):
        index = torch.randint(0, x_train.shape[0], (s.batch,), generator=g)
        optimizer.zero_grad()
        loss = loss_fn(model(x_train[index]), y_train[index])
        loss.backward()
        optimizer.step()
        schedule.step()
        curve.append(loss.item())
        if progress is not None:
            progress.update(1)
    model.eval()
    with torch.no_grad():
        out = model(x_test)
        metrics = {"test_loss": loss_fn(out, y_test).item()}
        if classify:
            metrics["test_accuracy"] = ((out > 0).float() == y_test).float().mean().item()
        if s.experiment == "rings":
            signed = (2 * y_test - 1) * out
            metrics["margin"] = signed.min().item()
        if s.experiment == "telgarsky":
            metrics["test_mse"] = metrics["test_loss"]
    return {"metrics": metrics, "curve": curve, "model": model}


def summarize(values: list[float]) -> dict:
    """Mean and std over seeds; a diverged run (NaN or inf) is kept as null and counted."""
    finite = [v for v in values if math.isfinite(v)]
    mean = statistics.fmean(finite) if finite else None
    std = (statistics.pstdev(finite) if len(finite) > 1 else 0.0) if finite else None
    return {
        "mean": mean,
        "std": std,
        "values": [v if math.isfinite(v) else None for v in values],
        "diverged": len(values) - len(finite),
    }


def run(
    name: str,
    out: Path,
    networks: list[str],
    quick: bool = False,
    seeds: int | None = None,
    progress_bar: bool = True,
) -> dict:
    """Train every network on experiment `name`; write out/NAME.json and out/NAME.png."""
    try:
        import matplotlib  # noqa: F401
        import tqdm
    except ImportError:
        raise MissingExtra(
            "optgen experiment needs matplotlib and tqdm: pip install 'optgen[experiments]'"
            " (or pip install matplotlib tqdm)"
        ) from None
    import torch

    # Small models: one thread is fastest and does not fight other processes for the cores.
    torch.set_num_threads(1)
    s = settings_for(name, quick, seeds)
    out.mkdir(parents=True, exist_ok=True)
    sources = compile_networks(networks, out)
    data = make_data(s)
    data_digest = digest(*data)
    results: dict[str, dict] = {}
    fitted: dict[str, object] = {}
    total = len(sources) * s.seeds * s.steps
    with tqdm.tqdm(
        total=total, desc=name, unit="step", disable=not progress_bar, leave=False
    ) as bar:
        for source in sources:
            cls = import_class(source)
            runs, start = [], time.perf_counter()
            for seed in range(s.seeds):
                runs.append(train_one(cls, s, data, seed, bar))
            wall = time.perf_counter() - start
            keys = runs[0]["metrics"].keys()
            results[source.label] = {
                "source": str(source.path),
                "class": source.class_name,
                "certificate": {
                    "zero_stable": source.certificate.get("zero_stable"),
                    "consistent": source.certificate.get("consistent"),
                    "step": source.certificate.get("step"),
                    "universal": (source.certificate.get("universal") or {}).get("guaranteed"),
                    "reasons": (source.certificate.get("universal") or {}).get("reasons", []),
                },
                "metrics": {k: summarize([r["metrics"][k] for r in runs]) for k in keys},
                "curves": [
                    [v if math.isfinite(v) else None for v in _thin(r["curve"])] for r in runs
                ],
                "data_digest": data_digest,
                "wall_time_s": wall,
            }
            fitted[source.label] = runs[0]["model"]
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


def _thin(curve: list[float], points: int = 100) -> list[float]:
    """The training curve, averaged into at most `points` values."""
    if len(curve) <= points:
        return curve
    size = len(curve) / points
    return [statistics.fmean(curve[int(i * size) : int((i + 1) * size)]) for i in range(points)]


# ---------------------------------------------------------------- plots
def plot(name: str, s: Settings, data, results: dict, fitted: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    labels = list(results)
    cols = len(labels)
    fig, axes = plt.subplots(2, cols, figsize=(3.2 * cols, 6.4), squeeze=False)
    x_train, y_train, x_test, y_test = data
    for col, label in enumerate(labels):
        ax = axes[0][col]
        model = fitted[label]
        metrics = results[label]["metrics"]
        if name == "rings":
            grid = torch.linspace(-1.3, 1.3, 120)
            gx, gy = torch.meshgrid(grid, grid, indexing="xy")
            with torch.no_grad():
                z = model(torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)).reshape(gx.shape)
            ax.contourf(
                gx, gy, (z > 0).float(), levels=[-0.5, 0.5, 1.5], colors=["#dbe9f6", "#fde0c5"]
            )
            ax.contour(gx, gy, z, levels=[0.0], colors="k", linewidths=0.8)
            pts = x_test[:400]
            ax.scatter(pts[:, 0], pts[:, 1], c=y_test[:400, 0], cmap="coolwarm", s=3)
            ax.set_aspect("equal")
            ax.set_title(
                f"{label}\nacc {metrics['test_accuracy']['mean']:.3f}, margin {metrics['margin']['mean']:.2f}",
                fontsize=8,
            )
        elif name == "telgarsky":
            with torch.no_grad():
                ax.plot(x_test[:, 0], y_test[:, 0], "k", lw=0.8, label="target")
                ax.plot(x_test[:, 0], model(x_test)[:, 0], "tab:red", lw=0.8, label="fit")
            ax.set_title(f"{label}\nmse {metrics['test_mse']['mean']:.2e}", fontsize=8)
            ax.legend(fontsize=6)
        else:
            with torch.no_grad():
                out = model(x_test)[:, 0]
            ax.hist(
                [out[y_test[:, 0] == 0].numpy(), out[y_test[:, 0] == 1].numpy()],
                bins=30,
                label=["even", "odd"],
            )
            ax.set_title(f"{label}\nacc {metrics['test_accuracy']['mean']:.3f}", fontsize=8)
            ax.legend(fontsize=6)
        verdict = results[label]["certificate"]["universal"]
        ax.set_xlabel(
            f"universal: {'guaranteed' if verdict else ('no' if verdict is False else 'unknown')}",
            fontsize=7,
        )
        curve_ax = axes[1][col]
        for curve in results[label]["curves"]:
            curve_ax.plot(curve, lw=0.8)
        curve_ax.set_yscale("log")
        curve_ax.set_title("training loss", fontsize=8)
    fig.suptitle(
        f"optgen experiment {name}: {s.steps} steps, width {s.dim}, depth {s.depth}, {s.seeds} seed(s)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
