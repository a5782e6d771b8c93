"""The figure of ``fclens rebalance``: each class's accuracy against how often training showed it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from fclens.report.figures import DPI

if TYPE_CHECKING:
    from fclens.edits.rebalance import Rebalance

__all__ = ["rebalance_figure"]


def rebalance_figure(result: Rebalance, title: str | None = None) -> Figure:
    """Per-class accuracy on the evaluation scan against training images per class (log scale), one
    line per method; classes without evaluation images are left out."""
    counts = result.train_counts.astype(float)
    fig = Figure(figsize=(7.5, 4.6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for name, evaluation in result.evaluations.items():
        accuracy = evaluation.per_class_accuracy
        shown = ~np.isnan(accuracy) & (counts > 0)
        order = np.argsort(counts[shown], kind="stable")
        style = {"color": "black", "lw": 2.2} if name == "scanned" else {"lw": 1.5}
        ax.plot(counts[shown][order], accuracy[shown][order], marker="o", ms=4, label=name, **style)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("accuracy on the evaluation scan")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "Per-class accuracy against training frequency", fontsize=11)
    return fig
