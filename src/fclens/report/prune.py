"""The pruning curves (:func:`fclens.prune_curve`) as a figure and as a self-contained page.

One line per method, against sparsity on a scale that spreads out the high end (0.9, 0.95, 0.99 are as
far apart as 0, 0.5, 0.8), ticked at the sparsities measured and nowhere else: agreement with the
unpruned layer, accuracy where the scan has labels (the unpruned layer's as a dotted line), and the
mean KL divergence. Colour-blind safe twice over: Okabe–Ito colours and a distinct marker per method;
bias-corrected curves are dashed with open markers. The figure is at most ~1,170 px wide, so that the
page shows it whole in a 1,280 px window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator, PercentFormatter

from fclens.report._common import fmt, percent
from fclens.report.figures import DPI
from fclens.report.html import figure_uri, render

if TYPE_CHECKING:
    from fclens.pruning import PruneCurve

__all__ = ["METHOD_STYLE", "OUTPUTS", "prune_figure", "prune_page", "raised_accuracy"]

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
_PANEL_INCHES = 3.5
"""Width of one panel: three panels and their margin make ~1,170 px at the figures' DPI."""


def _nines(s: Any) -> Any:
    """Sparsity → −log10(1 − s): each step 0.9 → 0.99 → 0.999 is one unit."""
    return -np.log10(1 - np.minimum(s, 1 - 1e-9))


def _sparsity(x: Any) -> Any:
    return 1 - 10.0 ** (-np.asarray(x))


def prune_figure(curve: PruneCurve, title: str | None = None) -> Figure:
    """Agreement, accuracy (when labelled) and KL against sparsity, one line per method and correction."""
    panels = [("agreement", "top-1 agreement with the unpruned layer")]
    if curve.n_labelled:
        panels.append(("accuracy", "top-1 accuracy"))
    panels.append(("kl", "mean KL(unpruned ‖ pruned), nats"))
    fig = Figure(figsize=(_PANEL_INCHES * len(panels) + 0.2, 4.4), dpi=DPI, layout="constrained")
    ticks = _sparsities(curve)
    # A little room beyond the first and last sparsity (on the spread-out scale): no marker on the frame.
    low, high = float(_nines(ticks[0])), float(_nines(ticks[-1]))
    margin = max(high - low, 0.3) * 0.08
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
            reference = ax.axhline(curve.reference_accuracy, color="black", lw=1.0, ls=":")
            named = f"unpruned layer's accuracy ({percent(curve.reference_accuracy)})"
            ax.legend([reference], [named], loc="best", fontsize=8)
        if field == "kl":
            ax.set_yscale("symlog", linthresh=0.01)
        else:
            ax.set_ylim(-0.02, 1.02)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))  # shares read as on the page
        ax.set_xscale("function", functions=(_nines, _sparsity))
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.set_xlim(_sparsity(low - margin), _sparsity(high + margin))
        ax.set_xlabel("sparsity (share of weights zeroed)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    # As many columns as fit (about 2.6 inches each); with both corrections and room, one per method,
    # the plain curve above its corrected twin.
    columns = min(len(labels), max(1, int(fig.get_figwidth() // 2.6)))
    if len(labels) == 2 * len(methods) and len(methods) <= columns:
        columns = len(methods)
    fig.legend(handles, labels, loc="outside lower center", ncol=columns, fontsize=8, frameon=False)
    fig.suptitle(title or f"Pruning the final layer: {curve.n_images} images", fontsize=11, parse_math=False)
    return fig


def prune_page(curve: PruneCurve, scan_name: str, model_name: str) -> str:
    """One self-contained HTML page: the figure, a sentence where pruning beats the unpruned layer's
    accuracy, and the table of every point (accuracy and agreement as :func:`percent`)."""

    rows = [
        {
            "method": p.method,
            "sparsity": f"{p.sparsity:g}",
            "zeroed": f"{p.zeroed:.4f}",
            "bias": "yes" if p.bias_correction else "no",
            "accuracy": percent(p.accuracy),
            "agreement": percent(p.agreement),
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
        reference=percent(curve.reference_accuracy),
        pred_agreement=percent(curve.pred_agreement),
        figure=figure_uri(prune_figure(curve)),
        caption=_caption(curve),
        raised=raised_accuracy(curve),
        rows=rows,
    )


def raised_accuracy(curve: PruneCurve) -> str:
    """Where pruning raises accuracy above the unpruned layer's (by one labelled image or more), a sentence
    saying where and why it can; "" where it does not, or without labels."""
    reference = curve.reference_accuracy
    if reference is None or not curve.n_labelled:
        return ""
    above = [
        p
        for p in curve.points
        if p.accuracy is not None and round((p.accuracy - reference) * curve.n_labelled) >= 1
    ]
    if not above:
        return ""
    best = max(above, key=lambda p: p.accuracy)
    corrected = ", bias corrected" if best.bias_correction else ""
    return (
        f"Pruning raises accuracy above the unpruned layer’s {percent(reference)} at {len(above)} of "
        f"{len(curve.points)} points, the most with {best.method} at sparsity {best.sparsity:g} "
        f"({percent(best.accuracy)}{corrected}). It can: the unpruned layer’s errors are the model’s own "
        "confusions, most often of classes that look alike to it (ImageNet’s tabby, tiger cat and Egyptian "
        "cat are a well-known case), whose logits lie close together; removing weights moves those logits "
        "and can tip such images to their label. It does not make the pruned layer a better one — random "
        "pruning can do the same: judge on a large labelled scan, with agreement and KL beside."
    )


def _caption(curve: PruneCurve) -> str:
    """What the figure shows, panel by panel (the accuracy panel only for a labelled scan)."""
    panels = ["left: the share of images whose top-1 class stays the unpruned layer's"]
    if curve.n_labelled:
        panels.append("middle: top-1 accuracy against the scan's labels, dotted the unpruned layer's")
    panels.append("right: the mean KL divergence of the pruned softmax from the unpruned one (log scale)")
    return (
        f"Each pruning method at the sparsities measured ({', '.join(f'{s:g}' for s in _sparsities(curve))}), "
        f"on {curve.n_images} images; {'; '.join(panels)}. One colour and marker per method; dashed with open "
        "markers: with bias correction. The x axis spreads out the high sparsities (−log10(1 − s))."
    )


def _sparsities(curve: PruneCurve) -> list[float]:
    return sorted({p.sparsity for p in curve.points})
