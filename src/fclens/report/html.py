"""Self-contained HTML pages: a batch of explanations (one page, or a report of many pages), and a
model's weight statistics.

A page is one file that opens from disk and makes no network request: pictures are embedded as
``data:`` URIs, CSS and JavaScript are inline, fonts are the system's; a report of many explanations
is cut into pages of :data:`PAGE_SIZE` images, each standing alone, so that none grows heavy. Templates
live as files in ``fclens/report/templates`` and are rendered by one Jinja2 environment with
autoescaping on, so every outside string (file names, class names, model names, skip reasons) reaches
the page as text.

Python turns results into small view objects (:class:`Card`, :class:`ExplanationView`) with numbers
already formatted; templates only lay them out.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
import torch
from PIL import Image

from fclens.ald import ALDFit
from fclens.maps import MAP_KINDS
from fclens.report._common import as_numpy, fmt, require_regression
from fclens.report.faithfulness import FaithfulnessView, explanation_faithfulness
from fclens.report.figures import (
    colour_scale_css,
    figure_png,
    fit_plot,
    image_bytes,
    node_caption,
    overlays,
    r2_histogram,
    slope_intercept,
)
from fclens.tree import Node, SplitTree, split_tree

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from fclens.explaining import Contrast, Explanation, NodeExplanation

__all__ = [
    "PAGE_SIZE",
    "default_classes",
    "explanations_page",
    "render",
    "report_page_name",
    "report_pages",
    "weights_page",
]

THUMBNAIL = 64
"""Longest side, in pixels, of the photos in a batch's index table (shown at 64 CSS pixels): 2–3 KB each."""

PAGE_SIZE = 10
"""Images per page of a report (:func:`report_pages`): 2–8 MB a page (one to three map kinds, a
contrast), each opening in under a second, as does the index of 500 images (BENCHMARKS.md)."""

TITLE = "fclens: where the final layer looks"

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
    ``gap`` is logit_rival − logit_target, ``verdict`` what its sign says.
    """

    rival: dict[str, Any]
    gap: str
    verdict: str
    picture: str
    pairs: list[tuple[str, Card | None, Card | None]]
    neurons: list[tuple[int, str]]
    count: int


@dataclass
class ExplanationView:
    """One explanation's section of a page."""

    anchor: str
    source: str
    model_name: str
    photo: str
    top5: list[dict[str, Any]]
    target: dict[str, Any]
    tree: Card
    full_tree: bool
    discriminative: Card | None
    confusing: Card | None
    facts: list[tuple[str, str]]
    contrast: ContrastView | None = None
    faithfulness: FaithfulnessView | None = None  # issue 24: the curves beside their baselines


@dataclass
class IndexRow:
    """One image in a batch's index table: a link to its section (on this page or another), its
    thumbnail and its headline numbers."""

    href: str
    thumbnail: str
    source: str
    prediction: dict[str, Any]
    target: str
    rival: str | None
    scores: tuple[str, str]


# ---------------------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------------------
def explanations_page(
    explanations: Sequence[Explanation], skipped: Iterable[tuple[str, str]] = (), title: str = TITLE
) -> str:
    """A self-contained HTML page for a batch of explanations (or of one: ``explanations_page([exp])``).

    Per image: the photo, the top-5 predictions, the split tree with every node's overlay, the
    terminal discriminative and confusing maps beside the photo; a switch between the map kinds that
    were computed, a colour scale, and a click on any map enlarges it. A batch gets an index table on
    top; ``skipped`` lists (file, reason) pairs of inputs that could not be explained. Every picture is
    embedded: for more than :data:`PAGE_SIZE` images, :func:`report_pages` keeps each page light.
    """
    kinds = _kinds(explanations)
    views = [_explanation_view(i, e, kinds) for i, e in enumerate(explanations)]
    skipped = _texts(skipped)
    indexed = len(views) > 1 or skipped
    index = [_index_row(i, e) for i, e in enumerate(explanations)] if indexed else []
    return _page(title, kinds, views, skipped=skipped, index=index, count=len(views))


def report_pages(
    count: int,
    load: Callable[[int], Explanation],
    skipped: Iterable[tuple[str, str]] = (),
    title: str = TITLE,
) -> Iterator[tuple[str, str]]:
    """The pages of a report of ``count`` explanations, as (file name, HTML), ``load(i)`` giving the i-th.

    Up to :data:`PAGE_SIZE` images, one page: :func:`explanations_page`'s, ``report.html``. Beyond,
    ``report.html`` comes first: the index of every image (a thumbnail and the headline numbers each,
    linked to its section) and the ``skipped`` files; then ``report-1.html``, ``report-2.html``, … with
    :data:`PAGE_SIZE` explanations each. Every page is self-contained, as :func:`explanations_page`,
    and links to the others; only one page's explanations are held at a time.
    """
    skipped = _texts(skipped)
    if count <= PAGE_SIZE:
        yield report_page_name(0), explanations_page([load(i) for i in range(count)], skipped, title)
        return
    pages = math.ceil(count / PAGE_SIZE)
    index = [_index_row(i, load(i), report_page_name(1 + i // PAGE_SIZE)) for i in range(count)]
    yield (
        report_page_name(0),
        _page(title, [], [], skipped=skipped, index=index, pager=_pager(pages, 0, count), count=count),
    )
    for number in range(1, pages + 1):
        span = range((number - 1) * PAGE_SIZE, min(count, number * PAGE_SIZE))
        batch = [load(i) for i in span]
        kinds = _kinds(batch)
        views = [_explanation_view(i, e, kinds) for i, e in zip(span, batch, strict=True)]
        pager = _pager(pages, number, count)
        yield (
            report_page_name(number),
            _page(title, kinds, views, pager=pager, span=(span.start + 1, span.stop), count=count),
        )


def report_page_name(number: int) -> str:
    """The file of a report's page ``number``: report.html (the index, or the only page), report-1.html, …"""
    return "report.html" if number == 0 else f"report-{number}.html"


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


def _page(
    title: str,
    kinds: list[str],
    views: list[ExplanationView],
    *,
    skipped: Sequence[tuple[str, str]] = (),
    index: Sequence[IndexRow] = (),
    pager: Sequence[dict[str, Any]] = (),
    span: tuple[int, int] | None = None,
    count: int,
) -> str:
    """One page of explanations: ``span`` (first, last image, from 1) on a page after a report's first."""
    return render(
        "explanations.html.j2",
        title=title,
        kinds=kinds,
        meanings=[MAP_KINDS[kind].meaning if kind in MAP_KINDS else "" for kind in kinds],
        colour_scale=colour_scale_css(),
        explanations=views,
        skipped=skipped,
        index=index,
        pager=pager,
        span=span,
        count=count,
        home=report_page_name(0),
        page_size=PAGE_SIZE,
    )


def _pager(pages: int, current: int, count: int) -> list[dict[str, Any]]:
    """The links of a report's index (page 0) and its ``pages`` pages of explanations, ``current`` marked."""
    return [
        {
            "href": report_page_name(number),
            "label": str(number) if number else "index",
            "images": f"images {(number - 1) * PAGE_SIZE + 1}–{min(count, number * PAGE_SIZE)}"
            if number
            else f"every image, {count}",
            "current": number == current,
        }
        for number in range(pages + 1)
    ]


def _kinds(explanations: Iterable[Explanation]) -> list[str]:
    """Every map kind of a page's explanations, in order of first appearance."""
    return list(dict.fromkeys(kind for e in explanations for kind in e.map_kinds))


def _texts(pairs: Iterable[tuple[Any, Any]]) -> list[tuple[str, str]]:
    return [(str(name), str(reason)) for name, reason in pairs]


# ---------------------------------------------------------------------------------------------------------
# Explanations → views
# ---------------------------------------------------------------------------------------------------------
def _explanation_view(number: int, explanation: Explanation, kinds: list[str]) -> ExplanationView:
    image = explanation.image
    pictures = _pictures(explanation)

    def card(node: NodeExplanation) -> Card:
        images = [pictures.get((id(node), kind)) for kind in kinds]
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
    return ExplanationView(
        anchor=_anchor(number, explanation),
        source=explanation.source,
        model_name=explanation.model_name,
        photo=image_uri(image),
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
            contrast,
            target.name,
            pictures[(id(contrast), "")],
            [None if end is None else by_path[end.path] for end in ends],
            card,
        ),
        faithfulness=explanation_faithfulness(explanation),
    )


def _pictures(explanation: Explanation) -> dict[tuple[int, str], str]:
    """Every overlay of an explanation's page section as a data URI, drawn in one call: (id of the node,
    map kind) → picture, and (id of the contrast, "") → the contrast map's."""
    contrast = explanation.contrast
    nodes = list(explanation.nodes)
    if contrast is not None:
        nodes += [end for end in (contrast.rival_discriminative, contrast.rival_confusing) if end is not None]
    keys = [(id(node), kind) for node in nodes for kind in explanation.map_kinds]
    heat = [node.shown(kind) for node in nodes for kind in explanation.map_kinds]
    if contrast is not None:
        keys.append((id(contrast), ""))
        heat.append(contrast.shown())
    drawn = overlays(explanation.image, torch.stack([h.float() for h in heat]))
    return {key: image_uri(picture) for key, picture in zip(keys, drawn, strict=True)}


def _contrast_view(
    contrast: Contrast,
    target: str,
    picture: str,
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
        verdict=_verdict(contrast.gap, target, rival.name),
        picture=picture,
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


def _verdict(gap: float, target: str, rival: str) -> str:
    """What the sign of logit_rival − logit_target says: which class the model scores higher."""
    if not math.isfinite(gap):
        return "not computed"
    if gap == 0:
        return "zero: the model scores both alike"
    winner = rival if gap > 0 else target  # a target chosen with --class can lose to its rival
    return f"{'above' if gap > 0 else 'below'} zero: {winner} scores higher"


def _index_row(number: int, explanation: Explanation, page: str = "") -> IndexRow:
    """The ``number``-th image's row of an index, linked to its section on ``page`` ("": this page)."""
    thumbnail = explanation.image.copy()
    thumbnail.thumbnail((THUMBNAIL, THUMBNAIL))
    contrast = explanation.contrast
    return IndexRow(
        href=f"{page}#{_anchor(number, explanation)}",
        thumbnail=image_uri(thumbnail),
        source=explanation.source,
        prediction={"name": explanation.top5[0].name, "probability": explanation.top5[0].probability},
        target=explanation.target.name,
        rival=None if contrast is None else contrast.rival.name,
        scores=_scores(explanation),
    )


def _anchor(number: int, explanation: Explanation) -> str:
    """The id of the ``number``-th image's section (from 0): unique in a report, readable in an address."""
    return f"image-{number + 1}-{_slug(explanation.source)}"


def _scores(explanation: Explanation) -> tuple[str, str]:
    """The terminal nodes' scores, "n/a" where the tree never split or nothing was scored."""
    discriminative, confusing = explanation.discriminative, explanation.confusing
    return (
        fmt(None if discriminative is None else discriminative.score),
        fmt(None if confusing is None else confusing.score),
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
