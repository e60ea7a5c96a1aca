"""The figure of an image run: test error against FLOPs (one point per network, its 95 %
interval over the seeds, baselines circled), each model's paired difference from its
baseline with its 95 % interval, and the training curves, staged and isotropic apart."""

from __future__ import annotations

from pathlib import Path

RULE_STYLE = {  # colour per rule: the same rule looks the same in every family
    "gd": "black",
    "heavy_ball": "tab:blue",
    "nesterov": "tab:green",
    "apg2": "tab:red",
    "custom": "tab:purple",
}
FAMILY_MARKER = {"wide": "s", "deep": "o", "iso_convnext": "D", "iso_vit": "^", "custom": "P"}


def plot_images(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = {k: v for k, v in report["networks"].items() if v["runs"]}
    fig, (ax, paired_ax, staged_ax, iso_ax) = plt.subplots(1, 4, figsize=(22, 5.2))
    shape = report.get("data", {}).get("input", [1, 32, 32])
    _error_against_flops(ax, networks, "x".join(str(n) for n in shape))
    if "trivial" in report:
        ax.axhline(100 * report["trivial"]["test_error"], color="grey", ls=":", lw=1)
        ax.annotate(
            "trivial classifier",
            (0.02, 100 * report["trivial"]["test_error"]),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            color="grey",
            va="bottom",
        )
    _paired(paired_ax, networks)
    isotropic = {"iso_convnext", "iso_vit"}
    epochs = report["settings"]["epochs"]
    _curves(staged_ax, {k: v for k, v in networks.items() if v["family"] not in isotropic}, epochs)
    staged_ax.set_title("training loss: staged (and custom) models", fontsize=9)
    _curves(iso_ax, {k: v for k, v in networks.items() if v["family"] in isotropic}, epochs)
    iso_ax.set_title("training loss: isotropic models", fontsize=9)
    s = report["settings"]
    fig.suptitle(
        f"optgen experiment {report['experiment']}: {s['n_train']} training / {s['n_test']} test"
        f" images at {shape}, {s['epochs']} epoch(s) ({s['steps']} steps of {s['batch']}),"
        f" {s['seeds']} seed(s)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _error_against_flops(ax, networks: dict, shape: str = "1x32x32") -> None:
    for label, entry in networks.items():
        error = entry["metrics"]["test_error"]
        if error["mean"] is None:  # every seed diverged: nothing to place
            continue
        x, y = entry["flops"] / 1e6, 100 * error["mean"]
        spread = 100 * (error.get("ci95") or 0.0)
        colour = RULE_STYLE.get(entry["rule"], "tab:purple")
        marker = FAMILY_MARKER.get(entry["family"], "P")
        ax.errorbar(x, y, yerr=spread, fmt=marker, color=colour, ms=7, capsize=3)
        if entry["baseline"]:
            ax.scatter([x], [y], s=260, facecolors="none", edgecolors="black", linewidths=1.2)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(f"MFLOPs per image ({shape})")
    ax.set_ylabel("test error (%), mean and 95 % interval over seeds")
    ax.set_title("test error against FLOPs (circled: the gd baseline of each family)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)


def _paired(ax, networks: dict) -> None:
    """Per model with a baseline: the mean paired difference of test error (points), with
    its 95 % interval; left of 0 is better than the baseline."""
    rows = [
        (label, entry["versus_baseline"]["test_error"])
        for label, entry in networks.items()
        if "versus_baseline" in entry and entry["versus_baseline"]["test_error"]["n"]
    ]
    for i, (label, diff) in enumerate(rows):
        colour = RULE_STYLE.get(networks[label]["rule"], "tab:purple")
        spread = 100 * (diff["ci95"] or 0.0)
        ax.errorbar(100 * diff["mean"], i, xerr=spread, fmt="o", color=colour, capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(
        range(len(rows)),
        [f"{label} - {networks[label]['versus_baseline']['baseline']}" for label, _ in rows],
        fontsize=7,
    )
    ax.set_xlabel("test error difference (points), paired by seed, 95 % interval")
    ax.set_title("each model against its family's gd baseline", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)


def _curves(ax, networks: dict, epochs: int) -> None:
    for label, entry in networks.items():
        curves = [run["curve"] for run in entry["runs"].values()]
        length = min(len(c) for c in curves)
        mean = [
            sum(c[i] for c in curves if c[i] is not None)
            / max(1, sum(c[i] is not None for c in curves))
            for i in range(length)
        ]
        ax.plot(
            [epochs * (i + 1) / length for i in range(length)],
            mean,
            color=RULE_STYLE.get(entry["rule"], "tab:purple"),
            ls="-" if entry["family"] in ("wide", "iso_convnext") else "--",
            lw=1,
            label=label,
        )
    if networks:
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("epoch (training loss of the global batch, mean over seeds)")
