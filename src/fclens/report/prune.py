"""The pruning curves (:func:`fclens.prune_curve`) as a figure and as a self-contained page.

One line per method, against sparsity on a scale that spreads out the high end (0.9, 0.95, 0.99 are as
far apart as 0, 0.5, 0.8): agreement with the unpruned layer, accuracy where the scan has labels, and
the mean KL divergence. Colour-blind safe twice over: Okabe–Ito colours and a distinct marker per
method; bias-corrected curves are dashed with open markers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from fclens.report._common import fmt
from fclens.report.figures import DPI
from fclens.report.html import _figure_uri, render

if TYPE_CHECKING:
    from fclens.prune import PruneCurve

__all__ = ["METHOD_STYLE", "OUTPUTS", "prune_figure", "prune_page"]

OUTPUTS = ("prune.html", "pruned-*.safetensors")
"""What ``fclens prune`` writes only when asked (``--html``, ``--write``): a rerun removes those it did
not write this time, so that no page or model of an earlier run sits beside the new curves."""

METHOD_STYLE = {
    "tree": ("#0072B2", "o"),  # Okabe–Ito blue
    "ald": ("#D55E00", "s"),  # vermillion
    "ald-deviant": ("#CC79A7", "D"),  # reddish purple
    "magnitude": ("#009E73", "^"),  # bluish green
    "magnitude-per-class": ("#56B4E9", "v"),  # sky blue
    "random": ("#E69F00", "X"),  # orange
}
"""(colour, marker) of each method, fixed so that every figure draws a method the same way."""
_TICKS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)


def _nines(s: Any) -> Any:
    """Sparsity → −log10(1 − s): each step 0.9 → 0.99 → 0.999 is one unit."""
    return -np.log10(1 - np.clip(s, 0, 1 - 1e-9))


def _sparsity(x: Any) -> Any:
    return 1 - 10.0 ** (-np.asarray(x))


def prune_figure(curve: PruneCurve, title: str | None = None) -> Figure:
    """Agreement, accuracy (when labelled) and KL against sparsity, one line per method and correction."""
    panels = [("agreement", "top-1 agreement with the unpruned layer")]
    if curve.n_labelled:
        panels.append(("accuracy", "top-1 accuracy"))
    panels.append(("kl", "mean KL(unpruned ‖ pruned), nats"))
    fig = Figure(figsize=(4.2 * len(panels), 4.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    methods = list(dict.fromkeys(p.method for p in curve.points))
    for ax, (field, label) in zip(axes, panels, strict=True):
        for method in methods:
            colour, marker = METHOD_STYLE.get(method, ("#000000", "o"))
            for corrected in (False, True):
                points = sorted(
                    (p for p in curve.points if p.method == method and p.bias_correction == corrected),
                    key=lambda p: p.sparsity,
                )
                if not points:
                    continue
                ax.plot(
                    [p.sparsity for p in points],
                    [getattr(p, field) for p in points],
                    linestyle="--" if corrected else "-",
                    marker=marker,
                    color=colour,
                    markerfacecolor="white" if corrected else colour,
                    lw=1.6,
                    ms=6,
                    label=method + (" + bias correction" if corrected else ""),
                )
        if field == "accuracy" and curve.reference_accuracy is not None:
            ax.axhline(curve.reference_accuracy, color="black", lw=0.8, ls=":", label="unpruned")
        if field == "kl":
            ax.set_yscale("symlog", linthresh=0.01)
        else:
            ax.set_ylim(-0.02, 1.02)
        ax.set_xscale("function", functions=(_nines, _sparsity))
        ax.xaxis.set_major_locator(FixedLocator(_TICKS))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}" for t in _TICKS])
        high = max(p.sparsity for p in curve.points)
        ax.set_xlim(-0.02, max(0.99, high) + (1 - max(0.99, high)) * 0.3)
        ax.set_xlabel("sparsity (share of the final layer's weights zeroed)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    # As many columns as fit (about 2.8 inches each); with both corrections and room, one per method,
    # the plain curve above its corrected twin.
    columns = min(len(labels), max(1, int(fig.get_figwidth() // 2.8)))
    if len(labels) == 2 * len(methods) and len(methods) <= columns:
        columns = len(methods)
    fig.legend(handles, labels, loc="outside lower center", ncol=columns, fontsize=8, frameon=False)
    fig.suptitle(title or f"Pruning the final layer: {curve.n_images} images", fontsize=11, parse_math=False)
    return fig


def prune_page(curve: PruneCurve, scan_name: str, model_name: str) -> str:
    """One self-contained HTML page: the figure and the table of every point."""

    rows = [
        {
            "method": p.method,
            "sparsity": f"{p.sparsity:g}",
            "zeroed": f"{p.zeroed:.4f}",
            "bias": "yes" if p.bias_correction else "no",
            "accuracy": fmt(p.accuracy, ".4f"),
            "agreement": fmt(p.agreement, ".4f"),
            "kl": fmt(p.kl, ".4f"),
        }
        for p in curve.points
    ]
    return render(
        "prune.html.j2",
        title=f"fclens: pruning the final layer of {model_name}",
        scan_name=scan_name,
        model_name=model_name,
        curve=curve,
        reference=fmt(curve.reference_accuracy, ".4f"),
        pred_agreement=fmt(curve.pred_agreement, ".4f"),
        figure=_figure_uri(prune_figure(curve)),
        rows=rows,
    )
