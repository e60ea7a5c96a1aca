"""The result tables of `docs/experiments.md`, made from the reports' JSON by code.

A table in a Markdown file is marked with the report it shows:

    <!-- table: images experiments/fashion-mnist/fashion-mnist.json -->
    | ... the table, written by this module ... |
    <!-- end table -->

and `python -m optgen.experiments.tables docs/experiments.md` rewrites every marked table
from its JSON (`--check`: exit 1 and name the tables that differ, write nothing). The
path is relative to the Markdown file. Every figure is computed here from the per-seed
values the report keeps, whatever its format wrote into its own summaries (format 1's
`std` was the population std): sample std, 95 % intervals and paired differences as
`optgen.experiments.stats` defines them.

Kinds: `synthetic` (rings, parity, telgarsky: each metric, the paired difference of the
headline metric against gd, and the trivial predictor from the run's own data), `images`
(test error with its interval and its paired difference against the family's baseline,
test loss, params, FLOPs, MACs, wall time, and the trivial classifier), `seeds` (an image
run's test error per seed) and `files` (the data files an image run read).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

from .stats import paired, summarize

MARK = re.compile(
    r"<!-- table: (?P<kind>[\w-]+) (?P<path>\S+) -->\n(?P<body>.*?)<!-- end table -->",
    re.S,
)

# Per synthetic experiment: its metrics (column, JSON key) and the headline one that the
# paired difference and the trivial predictor are given for.
SYNTHETIC = {
    "rings": ((("test accuracy", "test_accuracy"), ("margin", "margin"), ("test loss", "test_loss")), "margin"),
    "parity": ((("test accuracy", "test_accuracy"), ("test loss", "test_loss")), "test_accuracy"),
    "telgarsky": ((("test MSE", "test_mse"),), "test_mse"),
}  # fmt: skip
BASELINE = "gd"


class TableError(Exception):
    """A marked table that cannot be made: an unknown kind, a missing or foreign report."""


def number(value: float | None, digits: int = 4) -> str:
    """A figure as the tables print it: `digits` significant digits, n/a for None."""
    if value is None:
        return "n/a"
    return f"{value:.{min(digits, 3)}g}" if abs(value) < 0.01 else f"{value:.{digits}g}"


def mean_std(summary: dict, scale: float = 1.0, fixed: int | None = None) -> str:
    """`mean ± sample std`; `fixed`: that many decimals instead of significant digits."""
    if summary["mean"] is None:  # every seed diverged, or none has run yet
        return "diverged" if summary["diverged"] else "not run"
    mean, std = scale * summary["mean"], scale * summary["std"]
    text = (
        f"{mean:.{fixed}f} ± {std:.{fixed}f}"
        if fixed is not None
        else f"{number(mean)} ± {number(std, 2)}"
    )
    return text + (f" ({summary['diverged']} diverged)" if summary["diverged"] else "")


def interval(summary: dict, scale: float = 1.0, fixed: int = 2) -> str:
    """The 95 % interval of the mean, `[low, high]`; n/a with fewer than two seeds."""
    if summary["ci95"] is None:
        return "n/a"
    mean, half = scale * summary["mean"], scale * summary["ci95"]
    return f"[{mean - half:.{fixed}f}, {mean + half:.{fixed}f}]"


def difference(summary: dict, scale: float = 1.0, fixed: int | None = None) -> str:
    """A paired difference: `+mean ± half-width of its 95 % interval`."""
    if summary["mean"] is None:
        return "n/a"
    mean = scale * summary["mean"]
    half = None if summary["ci95"] is None else scale * summary["ci95"]
    if fixed is not None:
        text = f"{mean:+.{fixed}f}"
        return text if half is None else f"{text} ± {half:.{fixed}f}"
    sign = "-" if mean < 0 else "+"
    return f"{sign}{abs(mean):.3g}" + ("" if half is None else f" ± {half:.2g}")


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# -- synthetic experiments ------------------------------------------------------------


def synthetic_table(report: dict) -> str:
    experiment = report["experiment"]
    if experiment not in SYNTHETIC:
        raise TableError(f"a synthetic table shows rings, parity or telgarsky, not {experiment}")
    columns, headline = SYNTHETIC[experiment]
    name = dict((key, column) for column, key in columns)[headline]
    header = ["network", *(c for c, _ in columns), f"{name}: 95 % interval"]
    header += [f"{name}: paired difference from {BASELINE}", "wall time (s)"]
    networks = report["networks"]
    base = networks[BASELINE]["metrics"][headline]["values"] if BASELINE in networks else None
    rows = []
    for label, entry in networks.items():
        metrics = {key: summarize(entry["metrics"][key]["values"]) for _, key in columns}
        cells = [label, *(mean_std(metrics[key]) for _, key in columns)]
        cells.append(_interval_significant(metrics[headline]))
        if label == BASELINE or base is None:
            cells.append("(baseline)" if label == BASELINE else "n/a")
        else:
            cells.append(difference(paired(entry["metrics"][headline]["values"], base)))
        cells.append(f"{entry['wall_time_s']:.0f}")
        rows.append(cells)
    trivial_name, trivial_cells = trivial_predictor(report)
    cells = [f"*{trivial_cells[key]}*" if key in trivial_cells else "" for _, key in columns]
    rows.append([f"*{trivial_name}*", *cells, "", "", ""])
    return markdown(header, rows)


def _interval_significant(summary: dict) -> str:
    if summary["ci95"] is None:
        return "n/a"
    low, high = summary["mean"] - summary["ci95"], summary["mean"] + summary["ci95"]
    return f"[{number(low, 3)}, {number(high, 3)}]"


def trivial_predictor(report: dict) -> tuple[str, dict[str, str]]:
    """The trivial predictor's name and its figures (by metric key), on the run's own data:
    made again from the report's settings, and refused unless its digest is the report's."""
    import torch

    from .data import digest, make_data
    from .settings import Settings

    settings = {k: v for k, v in report["settings"].items() if k in Settings.__dataclass_fields__}
    data = make_data(Settings(**settings))
    if digest(*data) != report["data_digest"]:
        raise TableError(
            f"the {report['experiment']} data made from the report's settings has another"
            " digest than the report's: the data generator has changed since the run"
        )
    _, y_train, _, y_test = data
    if report["experiment"] == "telgarsky":
        mean = y_train.mean()
        mse = torch.mean((y_test - mean) ** 2).item()
        return f"constant: the training mean, {mean.item():.3f}", {"test_mse": number(mse)}
    majority = float(y_train.mean().item() >= 0.5)
    accuracy = (y_test == majority).float().mean().item()
    # A constant predictor separates nothing: its margin is at most 0.
    cells = {"test_accuracy": number(accuracy), "margin": "≤ 0"}
    return f"constant: the majority class of the training set, {majority:.0f}", cells


# -- image experiments ----------------------------------------------------------------


def _with_statistics(report: dict) -> dict:
    """A copy of the report with every summary computed again from its runs."""
    from .images import METRICS, refresh_statistics

    report = copy.deepcopy(report)
    for entry in report["networks"].values():
        runs = [entry["runs"][k] for k in sorted(entry["runs"], key=int)]
        entry["metrics"] = {key: summarize([r[key] for r in runs]) for key in METRICS}
    refresh_statistics(report)
    return report


def images_table(report: dict) -> str:
    report = _with_statistics(report)
    shape = "x".join(str(n) for n in report["data"].get("input", [1, 32, 32]))
    header = [
        "network",
        "test error (%)",
        "95 % interval",
        "paired difference from the baseline (points)",
        "test loss",
        "params",
        f"MFLOPs ({shape})",
        "MMACs",
        "wall time (s)",
    ]
    rows = []
    for label, entry in report["networks"].items():
        error = entry["metrics"]["test_error"]
        versus = entry.get("versus_baseline")
        if entry["baseline"]:
            against = "(baseline)"
        elif versus is None:
            against = "n/a"
        else:
            against = difference(versus["test_error"], 100, 2)
        flops = entry["flops"]
        rows.append(
            [
                f"**{label}**" if entry["baseline"] else label,
                mean_std(error, 100, 2),
                interval(error, 100),
                against,
                mean_std(entry["metrics"]["test_loss"], fixed=3),
                f"{entry['params']:,}",
                "?" if flops is None else f"{flops / 1e6:.1f}",
                _macs(entry),
                f"{entry['wall_time_s']:.0f}",
            ]
        )
    if "trivial" in report:
        rows.append(
            [f"*{report['trivial']['rule']}*", f"*{100 * report['trivial']['test_error']:.2f}*"]
            + [""] * (len(header) - 2)
        )
    table = markdown(header, rows)
    if report.get("format", 1) < 2:
        table += (
            "\n*This report is of format 1: its FLOPs are torch's counter on the CPU, which"
            " has no formula for the fused attention kernel, so the ViT-like models' figures"
            " miss attention's two matmuls; its MACs are those FLOPs / 2.*\n"
        )
    return table


def _macs(entry: dict) -> str:
    """MMACs: the entry's own (format 2), else its FLOPs / 2, the one convention."""
    macs = entry.get("macs")
    if macs is None and entry["flops"] is not None:
        macs = entry["flops"] // 2
    return "?" if macs is None else f"{macs / 1e6:.1f}"


def seeds_table(report: dict) -> str:
    seeds = report["settings"]["seeds"]
    header = ["network", *(f"seed {s}" for s in range(seeds))]
    rows = []
    for label, entry in report["networks"].items():
        cells = [label]
        for s in range(seeds):
            run = entry["runs"].get(str(s))
            value = None if run is None else run["test_error"]
            cells.append("n/a" if value is None else f"{100 * value:.2f}")
        rows.append(cells)
    return markdown(header, rows)


def files_table(report: dict) -> str:
    files = report["data"].get("files")
    if not files:
        raise TableError(f"the {report['experiment']} report names no data files")
    rows = []
    for name, record in files.items():
        if "sha256" in record:
            digest = f"`{record['sha256'][:8]}…{record['sha256'][-6:]}`"
            rows.append([f"`{name}`", f"{record['bytes']:,}", digest])
    return markdown(["file", "size (bytes)", "sha256"], rows)


KINDS = {
    "synthetic": synthetic_table,
    "images": images_table,
    "seeds": seeds_table,
    "files": files_table,
}


def render(kind: str, path: Path) -> str:
    if kind not in KINDS:
        raise TableError(f"no table kind {kind!r}: {', '.join(KINDS)}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TableError(f"cannot read the report {path}: {err}") from None
    return KINDS[kind](report)


def refresh(text: str, base: Path) -> tuple[str, list[str]]:
    """The Markdown text with every marked table made again, and the tables that changed."""
    changed: list[str] = []

    def replace(match: re.Match) -> str:
        body = render(match["kind"], base / match["path"])
        if body != match["body"]:
            changed.append(f"{match['kind']} {match['path']}")
        return f"<!-- table: {match['kind']} {match['path']} -->\n{body}<!-- end table -->"

    return MARK.sub(replace, text), changed


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [Path(a) for a in args if a != "--check"]
    if not paths:
        print("usage: python -m optgen.experiments.tables FILE.md ... [--check]", file=sys.stderr)
        return 1
    status = 0
    for path in paths:
        text = path.read_text(encoding="utf-8")
        try:
            new, changed = refresh(text, path.parent)
        except TableError as err:
            print(f"{path}: {err}", file=sys.stderr)
            return 1
        if changed and check:
            print(f"{path}: tables differ from their JSON: {'; '.join(changed)}", file=sys.stderr)
            status = 1
        elif changed:
            path.write_text(new, encoding="utf-8")
            print(f"{path}: rewrote {len(changed)} table(s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
