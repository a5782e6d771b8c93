"""``fclens rebalance`` shown: each class's accuracy against how often training showed it, and a page.

The figure ranks the evaluated classes by their training images, most first, so that it reads the same
whatever the counts (a long tail, or the equal counts of a balanced set, where a log-count axis would put
every class on one vertical line): the training counts on top, each method's per-class accuracy below
(a running mean over neighbouring classes when there are many), and the many / medium / few bands of
the literature's split marked on both. The page (``--html``) holds the table, the figure, one sentence
per method (:data:`fclens.edits.REBALANCE_MEANINGS`, as in the README) and, when the evaluation scan
shares images with the training scan, a warning that its figures mean nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from fclens.edits import REBALANCE_MEANINGS
from fclens.edits.evaluate import FEW, MANY
from fclens.edits.rebalance import SCANNED
from fclens.report._common import fmt, percent
from fclens.report.figures import DPI
from fclens.report.html import figure_uri, render

if TYPE_CHECKING:
    from fclens.edits.rebalance import Rebalance

__all__ = ["METHOD_STYLE", "OUTPUTS", "rebalance_figure", "rebalance_page"]

OUTPUTS = ("rebalance.html", "rebalanced-*.safetensors")
"""What ``fclens rebalance`` writes only when asked (``--html``, ``--write``): a rerun removes those it
did not write this time."""

METHOD_STYLE = {
    SCANNED: ("#000000", "o"),
    "ce": ("#56B4E9", "v"),  # Okabe–Ito sky blue
    "pg-prior": ("#0072B2", "o"),  # blue
    "balanced-softmax": ("#D55E00", "s"),  # vermillion
    "logit-adjust-loss": ("#CC79A7", "D"),  # reddish purple
    "crt": ("#009E73", "^"),  # bluish green
    "logit-adjust": ("#E69F00", "X"),  # orange
    "tau-norm": ("#7F7F7F", "P"),  # grey
}
"""(colour, marker) of each method, fixed so that every figure draws a method the same way."""
SCANNED_MEANING = "the final layer as scanned, unchanged: the reference every method is read against"
NAMED = 20
"""Up to this many classes the figure names each one and draws every class's accuracy; beyond, a
running mean over neighbouring classes."""
_BANDS = (("many", f"> {MANY}"), ("medium", f"{FEW}–{MANY}"), ("few", f"< {FEW}"))


def rebalance_figure(
    result: Rebalance, title: str | None = None, class_names: Sequence[str] | None = None
) -> Figure:
    """Training images per class (top) and each method's per-class accuracy on the evaluation scan
    (bottom), the classes ranked by their training images, most first; many / medium / few marked.
    Classes without evaluation images are left out; ``class_names`` label the classes when few."""
    counts = result.train_counts.astype(float)
    judged = np.flatnonzero(~np.isnan(next(iter(result.evaluations.values())).per_class_accuracy))
    order = judged[np.argsort(-counts[judged], kind="stable")]
    ranks = np.arange(len(order))
    window = 1 if len(order) <= NAMED else max(3, len(order) // 25)
    fig = Figure(figsize=(8.4, 6.0), dpi=DPI, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 3))
    shown = counts[order]
    top.bar(ranks, shown, width=1.0 if len(order) > NAMED else 0.7, color="#8c8c99")
    if shown.size and shown.max() > 20 * max(shown.min(), 1):  # a long tail: counts over decades
        top.set_yscale("log")
    top.set_ylabel("training\nimages")
    for name, evaluation in result.evaluations.items():
        colour, marker = METHOD_STYLE.get(name, ("#000000", "o"))
        accuracy = _running_mean(evaluation.per_class_accuracy[order], window)
        style = {"lw": 2.4, "zorder": 3} if name == SCANNED else {"lw": 1.5}
        few = len(order) <= NAMED
        bottom.plot(ranks, accuracy, color=colour, marker=marker if few else None, ms=5, label=name, **style)
    for ax in (top, bottom):
        _bands(ax, shown, label=ax is bottom)
        ax.grid(alpha=0.3, axis="y")
        ax.set_xlim(-0.6, len(order) - 0.4)
    bottom.set_ylim(-0.02, 1.12)  # room above 100% for the bands' names
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    what = "accuracy on the evaluation scan"
    bottom.set_ylabel(what if window == 1 else f"{what}\n(running mean over {window} classes)")
    if len(order) <= NAMED and class_names is not None:
        bottom.set_xticks(ranks, [_short(class_names[k]) for k in order], rotation=30, ha="right", fontsize=8)
        bottom.set_xlabel("classes, most training images first")
    else:
        bottom.set_xlabel(f"{len(order)} classes ranked by training images, most first")
    handles, labels = bottom.get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False
    )
    fig.suptitle(title or "Per-class accuracy, classes ranked by training images", fontsize=11)
    return fig


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """The mean of each value's ``window`` neighbours (fewer at the ends); ``window`` 1 keeps the values."""
    if window == 1:
        return values
    kernel = np.ones(window)
    total = np.convolve(values, kernel, mode="same")
    return total / np.convolve(np.ones_like(values), kernel, mode="same")


def _bands(ax: object, counts: np.ndarray, label: bool) -> None:
    """Shade the many / medium / few classes (by training images) of a ranked axis, named when ``label``."""
    kinds = np.where(counts > MANY, 0, np.where(counts >= FEW, 1, 2))
    for kind, (name, rule) in enumerate(_BANDS):
        where = np.flatnonzero(kinds == kind)
        if not where.size:
            continue
        low, high = where[0] - 0.5, where[-1] + 0.5
        ax.axvspan(low, high, color=("#e8eef7", "#f4f4f4", "#f7ece4")[kind], zorder=0)
        if label:
            ax.text(
                (low + high) / 2, 1.06, f"{name} ({rule}): {where.size}", ha="center", va="center", fontsize=8
            )


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def rebalance_page(
    result: Rebalance,
    train_name: str,
    eval_name: str,
    model_name: str,
    class_names: Sequence[str] | None = None,
) -> str:
    """One self-contained HTML page: the warning when the scans share images, the table of every method
    with what it does in one sentence, and :func:`rebalance_figure`."""
    judged = next(iter(result.evaluations.values()))
    counts = result.train_counts[~np.isnan(judged.per_class_accuracy)]
    bands = [
        (name, rule, int(size))
        for (name, rule), size in zip(
            _BANDS,
            ((counts > MANY).sum(), ((counts >= FEW) & (counts <= MANY)).sum(), (counts < FEW).sum()),
            strict=True,
        )
    ]
    rows = []
    for row in result.rows():
        method = row["method"]
        converged = "" if result.layers[method].fit is None else _fit(result, method)
        rows.append(
            {
                "method": method,
                "meaning": _code(
                    SCANNED_MEANING if method == SCANNED else REBALANCE_MEANINGS.get(method, "")
                ),
                "cells": [
                    percent(row[key]) for key in ("accuracy", "balanced_accuracy", "many", "medium", "few")
                ],
                "fit": converged,
            }
        )
    return render(
        "rebalance.html.j2",
        title=f"fclens: re-fitting the final layer of {model_name} for imbalanced classes",
        train_name=train_name,
        eval_name=eval_name,
        model_name=model_name,
        n_labelled=judged.n_labelled,
        tau=fmt(result.tau, "g"),
        shared=result.shared,
        bands=bands,
        rows=rows,
        figure=figure_uri(rebalance_figure(result, class_names=class_names)),
    )


def _fit(result: Rebalance, method: str) -> str:
    fit = result.layers[method].fit
    state = "converged" if fit.converged else "stopped before converging"
    return f"{state} · loss {fmt(fit.loss, '.3g')} · gradient {fmt(fit.grad_norm, '.1e')} · {fmt(fit.seconds, '.1f')} s"


def _code(sentence: str) -> list[tuple[str, bool]]:
    """A sentence as (text, is code) runs: backticks mark code, as in the README."""
    return [(part, i % 2 == 1) for i, part in enumerate(re.split(r"`", sentence)) if part]
