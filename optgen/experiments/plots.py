"""The figure of a run: per network, the fitted function and the training curves."""

from __future__ import annotations

from pathlib import Path

from .settings import Settings


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
