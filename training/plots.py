"""Learning-curve plot from the JSON-lines metrics log."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt


def plot_learning_curve(metrics_path: Path, out_path: Path) -> Path:
    """Train loss/accuracy and validation accuracy against episodes, as a PNG."""
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot([r["episode"] for r in train], [r["loss"] for r in train], lw=1)
    loss_axis.set(xlabel="episode", ylabel="training loss", yscale="log", title="loss")
    acc_axis.plot(
        [r["episode"] for r in train],
        [r["accuracy"] for r in train],
        lw=1,
        label="train (episode query accuracy)",
    )
    acc_axis.plot(
        [r["episode"] for r in val], [r["accuracy"] for r in val], "o-", lw=1.5, label="validation"
    )
    acc_axis.set(xlabel="episode", ylabel="accuracy", title="accuracy")
    acc_axis.legend(loc="lower right")
    for axis in (loss_axis, acc_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_path, dpi=100)
    plt.close(figure)
    return out_path
