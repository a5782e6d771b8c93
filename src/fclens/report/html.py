"""Self-contained HTML pages: a batch of explanations, and a model's weight statistics.

A page is one file that opens from disk and makes no network request: pictures are embedded as
``data:`` URIs, CSS and JavaScript are inline, fonts are the system's. Templates live as files in
``fclens/report/templates`` and are rendered by one Jinja2 environment with autoescaping on, so every
outside string (file names, class names, model names, skip reasons) reaches the page as text.

Python turns results into small view objects (:class:`Card`, :class:`ExplanationView`) with numbers
already formatted; templates only lay them out.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
from PIL import Image

from fclens.ald import ALDFit
from fclens.maps import MAP_KINDS
from fclens.report._common import as_numpy, fmt, require_regression
from fclens.report.faithfulness import FaithfulnessView, explanation_faithfulness
from fclens.report.figures import (
    figure_png,
    fit_plot,
    image_bytes,
    node_caption,
    overlay,
    r2_histogram,
    slope_intercept,
)
from fclens.tree import Node, SplitTree, split_tree

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from fclens.explaining import Contrast, Explanation, NodeExplanation

__all__ = ["default_classes", "explanations_page", "render", "weights_page"]

THUMBNAIL = 96
"""Longest side, in pixels, of the photos in a batch's index table."""

NEURONS_SHOWN = 10
"""How many of a contrast's neurons a page lists, strongest first."""

CLASS_TABLE_PAGE = 50
"""Rows a class table (the weights page's, the atlas index's) shows at a time: its filter searches every
row, and a 1,000-class table stays a screenful instead of burying what follows it."""


# ---------------------------------------------------------------------------------------------------------
# View objects
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Card:
    """One tree node as a page draws it.

    ``images`` holds one data URI per map kind of the page (None where this explanation lacks that
    kind); empty for a weights-only tree. ``facts`` are the short lines under the label, ``details`` the
    longer tooltip / enlarged-view caption, ``badge`` marks the two terminal nodes of PAPER.md §3.
    """

    path: str
    label: str
    sign: str
    facts: list[str]
    details: str
    images: list[str | None] = field(default_factory=list)
    children: list[Card] = field(default_factory=list)
    badge: str = ""


@dataclass
class ContrastView:
    """An explanation's contrast: the rival, its map, and the two trees' terminal nodes side by side.

    ``pairs`` rows are (title, the target's card, the rival's card), a card None where a tree was never
    split; ``neurons`` the strongest (neuron, evidence) of :attr:`fclens.explaining.Contrast.neurons`.
    """

    rival: dict[str, Any]
    gap: str
    picture: str
    pairs: list[tuple[str, Card | None, Card | None]]
    neurons: list[tuple[int, str]]
    count: int


@dataclass
class ExplanationView:
    """One explanation's section of the batch page, and its row in the index table."""

    anchor: str
    source: str
    model_name: str
    photo: str
    thumbnail: str
    top5: list[dict[str, Any]]
    target: dict[str, Any]
    tree: Card
    full_tree: bool
    discriminative: Card | None
    confusing: Card | None
    scores: tuple[str, str]
    facts: list[tuple[str, str]]
    contrast: ContrastView | None = None
    faithfulness: FaithfulnessView | None = None  # issue 24: the curves beside their baselines


# ---------------------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------------------
def explanations_page(
    explanations: Sequence[Explanation],
    skipped: Iterable[tuple[str, str]] = (),
    title: str = "fclens: where the final layer looks",
) -> str:
    """A self-contained HTML page for a batch of explanations (or of one: ``explanations_page([exp])``).

    Per image: the photo, the top-5 predictions, the split tree with every node's overlay, the
    terminal discriminative and confusing maps beside the photo; a switch between the map kinds that
    were computed, and a click on any map enlarges it. A batch gets an index table on top; ``skipped``
    lists (file, reason) pairs of inputs that could not be explained.
    """
    kinds = list(dict.fromkeys(kind for e in explanations for kind in e.map_kinds))
    views = [_explanation_view(i, e, kinds) for i, e in enumerate(explanations)]
    return render(
        "explanations.html.j2",
        title=title,
        kinds=kinds,
        meanings=[MAP_KINDS[kind].meaning if kind in MAP_KINDS else "" for kind in kinds],
        explanations=views,
        skipped=[(str(name), str(reason)) for name, reason in skipped],
    )


def weights_page(
    model_name: str,
    fit: ALDFit,
    class_names: Sequence[str],
    weight: Any,
    trees: dict[int, SplitTree] | None = None,
    classes_to_plot: Sequence[int] | None = None,
) -> str:
    """A self-contained HTML page on whether a model's final layer follows an ALD (PAPER.md §2–3).

    Pictures first: the R² histogram and the slope/intercept scatter; then the paper's per-model figures
    and our maximum-likelihood additions (labelled "beyond the paper"); for each class of
    ``classes_to_plot`` (default: :func:`default_classes`) the author's fit plot and its split tree —
    taken from ``trees`` when given there, else split here; last, a table of every class, filterable and
    shown :data:`CLASS_TABLE_PAGE` rows at a time.
    """
    require_regression(fit)
    if len(class_names) != fit.n_classes:
        raise ValueError(f"{len(class_names)} class names for {fit.n_classes} classes")
    matrix = as_numpy(weight)
    matrix = matrix.reshape(matrix.shape[0], -1)  # a 1×1-conv C×D×1×1 weight is C×D
    plotted = list(default_classes(fit) if classes_to_plot is None else classes_to_plot)
    trees = trees or {}
    sections = []
    for k in plotted:
        tree = trees.get(k) or split_tree(matrix[k], class_index=k)
        sections.append(
            {
                "index": k,
                "name": class_names[k],
                "anchor": f"class-{k}",
                "fit": figure_uri(fit_plot(matrix[k], class_names[k])),
                "tree": nest_cards(tree.nodes, _weights_card, tree)[0],
            }
        )
    return render(
        "weights.html.j2",
        title=f"fclens: final-layer weights of {model_name}",
        model_name=model_name,
        shape=(fit.n_classes, fit.n_inputs),
        paper=_paper_facts(fit),
        beyond=_beyond_facts(fit),
        histogram=figure_uri(r2_histogram(fit)),
        scatter=figure_uri(slope_intercept(fit, class_names)),
        rows=_class_rows(fit, class_names, set(plotted)),
        mle=fit.mle is not None,
        sections=sections,
        page_size=CLASS_TABLE_PAGE,
    )


def default_classes(fit: ALDFit, count: int = 12) -> list[int]:
    """``count`` classes spread evenly over the ranking of the positive part's R², worst and best included.

    A page stays light and still shows both the classes that fit the ALD worst and those that fit best.
    """
    require_regression(fit)
    order = np.argsort(np.where(np.isfinite(fit.pos.r2), fit.pos.r2, -np.inf), kind="stable")
    picks = np.unique(np.linspace(0, order.size - 1, min(count, order.size)).round().astype(int))
    return sorted(int(order[i]) for i in picks)


def render(template: str, **context: Any) -> str:
    """Render one of fclens's page templates (the single place where HTML is produced)."""
    return _environment().get_template(template).render(**context)


# ---------------------------------------------------------------------------------------------------------
# Explanations → views
# ---------------------------------------------------------------------------------------------------------
def _explanation_view(number: int, explanation: Explanation, kinds: list[str]) -> ExplanationView:
    image = explanation.image

    def card(node: NodeExplanation) -> Card:
        images = [
            image_uri(overlay(image, node.shown(kind))) if kind in explanation.map_kinds else None
            for kind in kinds
        ]
        details = " | ".join(
            [
                node_caption(node),
                f"mean {fmt(node.mean, '.4g')}, min {fmt(node.min, '.4g')}, max {fmt(node.max, '.4g')}, R² {fmt(node.r2)}",
                *(
                    f"{name} {value}"
                    for name, value in _computed(
                        ("deletion AUC", node.deletion_auc), ("insertion AUC", node.insertion_auc)
                    )
                ),
            ]
        )
        facts = [f"{node.size} neurons", f"score {fmt(node.score)}"]
        return Card(node.path, node.label, branch_class(node.path), facts, details, images)

    tree, by_path = nest_cards(explanation.nodes, card, explanation.tree)
    ends = (explanation.discriminative, explanation.confusing)  # None when the root was never split
    contrast = explanation.contrast
    target = explanation.target
    thumbnail = image.copy()
    thumbnail.thumbnail((THUMBNAIL, THUMBNAIL))
    return ExplanationView(
        anchor=f"image-{number + 1}-{_slug(explanation.source)}",
        source=explanation.source,
        model_name=explanation.model_name,
        photo=image_uri(image),
        thumbnail=image_uri(thumbnail),
        top5=[
            {
                "name": p.name,
                "index": p.index,
                "probability": p.probability,
                "is_target": p.index == target.index,
            }
            for p in explanation.top5
        ],
        target={"name": target.name, "index": target.index, "probability": target.probability},
        tree=tree,
        full_tree=explanation.tree.mode == "full",
        discriminative=None if ends[0] is None else by_path[ends[0].path],
        confusing=None if ends[1] is None else by_path[ends[1].path],
        scores=tuple(fmt(None if end is None else end.score) for end in ends),
        facts=[
            ("model", explanation.model_name),
            ("feature layer", explanation.feature_layer),
            ("scored map", explanation.primary),
            *_computed(
                ("seed", explanation.seed),
                ("class deletion AUC", explanation.class_deletion_auc),
                ("class insertion AUC", explanation.class_insertion_auc),
            ),
        ],
        contrast=None
        if contrast is None
        else _contrast_view(
            contrast, image, [None if end is None else by_path[end.path] for end in ends], card
        ),
        faithfulness=explanation_faithfulness(explanation),
    )


def _contrast_view(
    contrast: Contrast,
    image: Image.Image,
    target_ends: list[Card | None],
    card: Callable[[NodeExplanation], Card],
) -> ContrastView:
    rival = contrast.rival
    rival_ends = [
        None if node is None else card(node)
        for node in (contrast.rival_discriminative, contrast.rival_confusing)
    ]
    return ContrastView(
        rival={"name": rival.name, "index": rival.index, "probability": rival.probability},
        gap=fmt(contrast.gap, ".4g"),
        picture=image_uri(overlay(image, contrast.shown())),
        pairs=[
            ("Most discriminative", target_ends[0], rival_ends[0]),
            ("Most confusing", target_ends[1], rival_ends[1]),
        ],
        neurons=[
            (int(c), fmt(e, ".4g"))
            for c, e in zip(contrast.neurons[:NEURONS_SHOWN], contrast.evidence[:NEURONS_SHOWN], strict=True)
        ],
        count=len(contrast.neurons),
    )


def _computed(*facts: tuple[str, float | int | None]) -> list[tuple[str, str]]:
    """(name, formatted value) of the facts that were computed: AUCs and the seed are optional."""
    return [
        (name, str(value) if isinstance(value, int) else fmt(value))
        for name, value in facts
        if value is not None
    ]


def _weights_card(node: Node) -> Card:
    facts = [f"n = {node.size}", f"R² {fmt(node.r2)}"]
    details = f"mean {fmt(node.mean, '.4g')}, min {fmt(node.min, '.4g')}, max {fmt(node.max, '.4g')}"
    return Card(node.path, node.label, branch_class(node.path), facts, details)


def nest_cards(
    nodes: Iterable[Any], make: Callable[[Any], Card], tree: SplitTree
) -> tuple[Card, dict[str, Card]]:
    """The root card and every card by path, for pre-order ``nodes`` (anything with a ``path``).

    Cards are linked parent → children by path; ``tree``'s two terminal nodes get their badge.
    """
    cards: dict[str, Card] = {}
    for node in nodes:
        card = make(node)
        cards[card.path] = card
        if card.path:
            cards[card.path[:-1]].children.append(card)
    for end, badge in ((tree.discriminative, "most discriminative"), (tree.confusing, "most confusing")):
        if end is not None:
            cards[end.path].badge = badge
    return cards[""], cards


def branch_class(path: str) -> str:
    """CSS class of a node: where it sits relative to the two chains."""
    return "root" if not path else "pos" if path[-1] == "+" else "neg"


# ---------------------------------------------------------------------------------------------------------
# Weights → rows
# ---------------------------------------------------------------------------------------------------------
def _paper_facts(fit: ALDFit) -> list[tuple[str, str, str]]:
    """(what, positive part, negative part) rows of the paper's per-model figures."""
    assert fit.joint_pos is not None and fit.joint_neg is not None
    q = fit.summary()["r2_quantiles"]
    jp, jn = fit.joint_pos, fit.joint_neg
    return [
        (
            "marginal mean m (average over classes)",
            fmt(fit.marginal_mean_pos, ".4g"),
            fmt(fit.marginal_mean_neg, ".4g"),
        ),
        ("joint fit: mean m", fmt(jp.mean, ".4g"), fmt(jn.mean, ".4g")),
        ("joint fit: R²", fmt(jp.r2), fmt(jn.r2)),
        (
            "joint fit: slope a, intercept b",
            f"{fmt(jp.slope)}, {fmt(jp.intercept)}",
            f"{fmt(jn.slope)}, {fmt(jn.intercept)}",
        ),
        ("joint fit: κ, λ", f"{fmt(jp.kappa)}, {fmt(jp.lam)}", f"{fmt(jn.kappa)}, {fmt(jn.lam)}"),
        ("joint fit: weights fitted", str(jp.n), str(jn.n)),
        *(
            (f"per-class R²: {label}", fmt(q["pos"][key]), fmt(q["neg"][key]))
            for key, label in (
                ("min", "minimum"),
                ("p05", "5 %"),
                ("p50", "median"),
                ("p95", "95 %"),
                ("max", "maximum"),
            )
        ),
        (
            "classes without a fit",
            str(int(np.sum(fit.pos.reason != ""))),
            str(int(np.sum(fit.neg.reason != ""))),
        ),
        ("exact zeros left out", str(int(fit.pos.n_zero.sum())), "–"),
    ]


def _beyond_facts(fit: ALDFit) -> list[tuple[str, str]]:
    """(what, value) rows of the maximum-likelihood additions; empty when the MLE was not computed."""
    summary = fit.summary()
    if fit.mle is None:
        return []
    mle, aic = summary["mle"], summary["aic"]
    wins = ", ".join(f"{name} {count}" for name, count in aic["best_counts"].items())
    return [
        ("median κ (asymmetry)", fmt(mle["median_kappa"])),
        ("median location", fmt(mle["median_loc"], ".4g")),
        ("median scale", fmt(mle["median_scale"], ".4g")),
        ("median Kolmogorov–Smirnov distance", fmt(mle["median_ks"])),
        ("classes best described by (lowest AIC)", wins),
        ("median AIC gap, Gaussian − ALD", fmt(aic["median_gauss_minus_ald"], ".1f")),
        ("median AIC gap, Laplace − ALD", fmt(aic["median_laplace_minus_ald"], ".1f")),
        ("classes without an MLE fit", str(int(np.sum(fit.mle.reason != "")))),
    ]


def _class_rows(fit: ALDFit, class_names: Sequence[str], plotted: set[int]) -> list[dict[str, Any]]:
    pos, neg, mle = fit.pos, fit.neg, fit.mle
    assert pos is not None and neg is not None
    rows = []
    for k in range(fit.n_classes):
        cells = [
            fmt(pos.r2[k]), fmt(neg.r2[k]),
            fmt(pos.slope[k]), fmt(pos.intercept[k]), fmt(neg.slope[k]), fmt(neg.intercept[k]),
            fmt(pos.mean[k], ".4g"), fmt(neg.mean[k], ".4g"),
            str(pos.n[k]), str(neg.n[k]), str(pos.n_zero[k]),
        ]  # fmt: skip
        if mle is not None:
            cells += [fmt(mle.kappa[k]), fmt(mle.ks[k]), str(mle.best[k]) or "–"]
        notes = "; ".join(
            f"{part}: {reason}"
            for part, reason in (
                ("+", pos.reason[k]),
                ("−", neg.reason[k]),
                ("MLE", mle.reason[k] if mle else ""),
            )
            if reason
        )
        name = str(class_names[k])
        rows.append(
            {
                "index": k,
                "name": name,
                "search": name.lower(),
                "cells": cells,
                "notes": notes,
                "plotted": k in plotted,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------
def _data_uri(data: bytes, mime: str) -> str:
    """The one place a data: URI is built."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_uri(image: Image.Image) -> str:
    """A photo or overlay as a JPEG data URI: a tenth of a PNG's size, and these pictures are photos."""
    return _data_uri(image_bytes(image, "JPEG"), "image/jpeg")


def figure_uri(fig: Figure) -> str:
    return _data_uri(figure_png(fig), "image/png")


def _slug(source: str) -> str:
    """An HTML id fragment from a source's file name: ASCII letters, digits and hyphens only.

    The image's number, put before it, keeps ids unique; the name only makes an address readable.
    """
    name = re.split(r"[\\/]", source)[-1]
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "image"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("fclens.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
