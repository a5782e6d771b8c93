"""What a Jupyter output cell shows of an fclens result: a small self-contained HTML repr, and the figures
that ``.plot()`` returns.

Each result class has two short methods, ``_repr_html_`` and ``plot``, that import this module inside the
method and call one function here, so nothing upstream imports the report at import time. A repr is one
``<div class="fclens-nb">`` with its own ``<style>``: the rules of the pages' stylesheet it uses
(``templates/style.css``), scoped under that class so that they touch nothing else in the notebook, and
made on the fly from that one stylesheet. No script, no request; every outside string (class names, file
names, model names) reaches the HTML as text through the pages' autoescaping Jinja environment; pictures
are thumbnails (JPEG data URIs of :data:`THUMBNAIL` px or less) and tables stop at :data:`ROWS` rows with
"… N more", so a repr stays small (:data:`LIMIT`) whatever the data set.

Example::

    exp = fclens.explain(model, "cat.jpg")
    exp                      # in a notebook: the tree with each node's map, the top-5
    exp.plot(node="++")      # a matplotlib Figure: that node's map over the image
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from markupsafe import Markup
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from fclens.ald import as_matrix
from fclens.edits.causal import headline_m
from fclens.errors import FclensError
from fclens.formatting import percent, signed
from fclens.maps import MAP_KINDS
from fclens.report._common import fmt
from fclens.report.figures import (
    DPI,
    HEATMAP_CMAP,
    NEG_COLOUR,
    POS_COLOUR,
    figure_png,
    fit_plot,
    node_caption,
    overlay,
    r2_histogram,
)
from fclens.report.html import (
    Card,
    _beyond_facts,
    _data_uri,
    _paper_facts,
    branch_class,
    image_uri,
    nest_cards,
    render,
)
from fclens.report.prune import prune_figure
from fclens.report.rebalance import rebalance_figure

if TYPE_CHECKING:
    from fclens.ald import ALDFit
    from fclens.atlasing import Atlas
    from fclens.edits.causal import CausalTable, PairTest
    from fclens.edits.evaluate import Evaluation
    from fclens.edits.rebalance import Rebalance
    from fclens.explaining import Explanation, NodeExplanation
    from fclens.pruning import PruneCurve
    from fclens.tree import Node, SplitTree

__all__ = [
    "LIMIT",
    "ald_figure",
    "ald_html",
    "atlas_html",
    "causal_figure",
    "causal_html",
    "evaluation_figure",
    "evaluation_html",
    "explanation_figure",
    "explanation_html",
    "prune_figure",
    "prune_html",
    "rebalance_figure",
    "rebalance_html",
    "tree_figure",
    "tree_html",
]

LIMIT = 200_000
"""Most characters a repr may have (the tests hold every repr of real results under it)."""
THUMBNAIL = 120
"""Longest side, in pixels, of a node's map in a repr: the width the pages' cards draw it at."""
COMPACT = 72
"""The same in a compact tree (a full tree, or chains longer than fit a notebook cell: :data:`COLUMNS`)."""
COLUMNS = 5
"""Nodes in a row of a tree that fit a notebook cell (about 900 px) at :data:`THUMBNAIL` px."""
PHOTO = 160
ROWS = 12
"""Rows a repr's table shows before "… N more"."""
PICTURES = 24
"""Most node maps an explanation's repr draws: a full tree's other nodes are text cards."""
SCOPE = "fclens-nb"
"""The class of a repr's outer ``div``: every rule of its inline stylesheet is scoped under it."""
_STYLED = {
    ":root", "table", "th", "td", "thead", ".num", ".meta", ".pos-text", ".neg-text", ".facts",
    ".facts-table", ".top5", ".tree-scroll", ".tree", ".card", f".{SCOPE}",
}  # fmt: skip
"""The selectors (by their first simple selector) of style.css a repr uses."""


# ---------------------------------------------------------------------------------------------------------
# Blocks: what a repr is made of, laid out by templates/notebook.html.j2
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Facts:
    """(name, value) lines."""

    pairs: list[tuple[str, str]]
    kind: ClassVar[str] = "facts"


@dataclass
class Table:
    """A table with its heading; ``numeric`` columns align right; ``left_out`` rows were not shown."""

    heading: str
    columns: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)
    left_out: int = 0
    kind: ClassVar[str] = "table"


@dataclass
class Picture:
    """A data URI shown at most ``width`` px wide."""

    uri: str
    alt: str
    width: int
    kind: ClassVar[str] = "picture"


@dataclass
class Tree:
    """A split tree of cards, left to right (the pages' tree); ``compact`` for a full tree."""

    card: Card
    compact: bool
    kind: ClassVar[str] = "tree"


@dataclass
class Top5:
    """The top-5 predictions as bars; the explained class is marked."""

    predictions: list[dict[str, Any]]
    kind: ClassVar[str] = "top5"


@dataclass
class Note:
    """A sentence in the muted colour."""

    text: str
    kind: ClassVar[str] = "note"


@dataclass
class Heading:
    text: str
    kind: ClassVar[str] = "heading"


@dataclass
class Row:
    """Columns of blocks side by side, wrapping on a narrow cell."""

    columns: list[list[Any]]
    kind: ClassVar[str] = "row"


def _repr(title: str, subtitle: str, blocks: list[Any]) -> str:
    """One repr: the title line, then the blocks, in a scoped ``div`` with its own stylesheet."""
    return render(
        "notebook.html.j2", scope=SCOPE, css=_scoped_css(), title=title, subtitle=subtitle, blocks=blocks
    )


@lru_cache(maxsize=1)
def _scoped_css() -> Markup:
    """The rules of style.css a repr uses (:data:`_STYLED`), each selector put under ``.fclens-nb``.

    ``:root`` (the colours) becomes the scope itself; rules already written for the scope stay as they
    are. The stylesheet is the package's own file, so the result is marked safe for the template.
    """
    text = re.sub(
        r"/\*.*?\*/", "", (files("fclens.report") / "templates" / "style.css").read_text("utf-8"), flags=re.S
    )
    rules = []
    for selectors, body in re.findall(r"([^{}@]+)\{([^{}]*)\}", text):
        parts = [s.strip() for s in selectors.split(",")]
        if not all(_first(s) in _STYLED for s in parts):
            continue
        scoped = [
            f".{SCOPE}" if s == ":root" else s if s.startswith(f".{SCOPE}") else f".{SCOPE} {s}"
            for s in parts
        ]
        rules.append(f"{', '.join(scoped)} {{ {' '.join(body.split())} }}")
    return Markup("\n".join(rules))


def _first(selector: str) -> str:
    """The first simple selector: ".card" of ".card.pos .path", "th" of "th[scope]", ":root"."""
    found = re.match(r":root|[.#]?[A-Za-z][\w-]*", selector)
    return found.group(0) if found else selector


def _table(
    heading: str, columns: list[str], rows: list[list[str]], numeric: Sequence[int] = (), limit: int = ROWS
) -> Table:
    return Table(heading, columns, rows[:limit], set(numeric), max(0, len(rows) - limit))


def _thumbnail(image: Image.Image, side: int) -> Image.Image:
    small = image.convert("RGB")
    small.thumbnail((side, side))
    return small


def _figure_picture(fig: Figure, width: int) -> Picture:
    """A figure as a 256-colour PNG: a third of the size of the pages' full-colour one, and as sharp."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(figure_png(fig))).convert("RGB").quantize(256).save(buffer, "PNG", optimize=True)
    alt = fig.get_suptitle() or (fig.axes[0].get_title() if fig.axes else "")
    return Picture(_data_uri(buffer.getvalue(), "image/png"), alt, width)


# ---------------------------------------------------------------------------------------------------------
# Explanation (PAPER.md §3–4)
# ---------------------------------------------------------------------------------------------------------
def explanation_html(explanation: Explanation) -> str:
    """The input, the top-5, and the split tree with each node's map: the chains of the paper's figure."""
    kind = explanation.primary
    tree = explanation.tree
    compact = tree.mode == "full" or 1 + max(len(tree.chain("+")), len(tree.chain("-"))) > COLUMNS
    small = _thumbnail(explanation.image, COMPACT if compact else THUMBNAIL)
    drawn = _drawn_paths(explanation)

    def card(node: NodeExplanation) -> Card:
        facts = [f"{node.size} neurons"] + ([] if node.score is None else [f"score {fmt(node.score)}"])
        pictures = [image_uri(overlay(small, node.shown(kind)))] if node.path in drawn else []
        return Card(node.path, node.label, branch_class(node.path), facts, node_caption(node, kind), pictures)

    cards, _ = nest_cards(explanation.nodes, card, tree)
    target = explanation.target
    photo = Picture(image_uri(_thumbnail(explanation.image, PHOTO)), f"input: {explanation.source}", PHOTO)
    facts = [
        ("explained class", f"{target.name} (#{target.index}, p = {target.probability:.3f})"),
        ("map kind", f"{kind}: {MAP_KINDS[kind].meaning}" if kind in MAP_KINDS else kind),
        ("feature layer", explanation.feature_layer),
        *((name, value) for name, value in _ends(explanation)),
    ]
    if explanation.seed is not None:
        facts.append(("seed", str(explanation.seed)))
    blocks: list[Any] = [Row([[photo], [Top5(_top5(explanation)), Facts(facts)]])]
    contrast = explanation.contrast
    if contrast is not None:
        rival = contrast.rival
        picture = Picture(
            image_uri(overlay(small, contrast.shown())), f"where the image argues for {rival.name}", THUMBNAIL
        )
        words = (
            f"Why not {rival.name} (#{rival.index}, p = {rival.probability:.3f})? The map shows where the image "
            f"argues for it over {target.name}; logit gap {fmt(contrast.gap, '.4g')}; {len(contrast.neurons)} "
            f"neurons sit on the − side of {target.name}'s tree and the + side of {rival.name}'s."
        )
        blocks.append(Row([[picture], [Note(words)]]))
    shape = "full split tree" if tree.mode == "full" else "the + chain and the − chain"
    blocks += [
        Heading(f"Split tree of {target.name}'s weights: {shape}"),
        Note(
            "Each node is a group of the class's input neurons, split at its mean: + nodes push the class's "
            "score up (the end of the + chain: the most discriminative neurons), − nodes push it down (the "
            f"most confusing). Each picture: where the node's neurons fire ({kind}, min–max per node)."
        ),
        Tree(cards, compact),
    ]
    name = Path(explanation.source).name or explanation.source
    return _repr(f"Explanation of {name}", f"{explanation.model_name}: {target.name}", blocks)


def _drawn_paths(explanation: Explanation) -> set[str]:
    """The nodes whose map a repr draws: all of them, or for a big full tree the root and the two chains."""
    if len(explanation.nodes) <= PICTURES:
        return {node.path for node in explanation.nodes}
    tree = explanation.tree
    return {"", *(node.path for sign in "+-" for node in tree.chain(sign))}


def _ends(explanation: Explanation) -> list[tuple[str, str]]:
    ends = (("most discriminative", explanation.discriminative), ("most confusing", explanation.confusing))
    return [
        (
            name,
            f"{node.label}: {node.size} neurons"
            + ("" if node.score is None else f", score {fmt(node.score)}"),
        )
        for name, node in ends
        if node is not None
    ]


def _top5(explanation: Explanation) -> list[dict[str, Any]]:
    target = explanation.target.index
    return [
        {"name": p.name, "probability": p.probability, "is_target": p.index == target}
        for p in explanation.top5
    ]


def explanation_figure(explanation: Explanation, node: str | None = None, kind: str | None = None) -> Figure:
    """One node's map over the image as the model sees it, with the colour scale.

    ``node``: a path ("", "root", "+", "--", …; default the most discriminative node, the root for a tree
    never split); ``kind``: a map kind the explanation computed (default its primary one).
    """
    kind = kind or explanation.primary
    if kind not in explanation.map_kinds:
        raise FclensError(
            f"this explanation has no {kind!r} maps; it computed {', '.join(explanation.map_kinds)} "
            "(explain(..., maps=[...]) computes others)"
        )
    if node is None:
        chosen = explanation.discriminative or explanation.nodes[0]
    else:
        chosen = explanation.node("" if node == "root" else node)
    fig = Figure(figsize=(4.6, 4.4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.imshow(overlay(explanation.image, chosen.shown(kind)))
    ax.set_axis_off()
    ax.set_title(
        f"{explanation.target.name}: node {node_caption(chosen, kind)}",
        fontsize=10,
        parse_math=False,
        wrap=True,
    )
    fig.colorbar(
        ScalarMappable(Normalize(0, 1), HEATMAP_CMAP), ax=ax, shrink=0.8, label=f"{kind} (min–max per node)"
    )
    return fig


# ---------------------------------------------------------------------------------------------------------
# Weights only: the split tree (PAPER.md §3) and the ALD fit (§2)
# ---------------------------------------------------------------------------------------------------------
def tree_html(tree: SplitTree) -> str:
    """The tree of the class's weights: each node's size and R², the two terminal nodes marked."""

    def card(node: Node) -> Card:
        details = f"mean {fmt(node.mean, '.4g')}, min {fmt(node.min, '.4g')}, max {fmt(node.max, '.4g')}"
        return Card(
            node.path,
            node.label,
            branch_class(node.path),
            [f"n = {node.size}", f"R² {fmt(node.r2)}"],
            details,
        )

    root, _ = nest_cards(tree.nodes, card, tree)
    ends = [("most discriminative", tree.discriminative), ("most confusing", tree.confusing)]
    facts = [
        ("weights", str(tree.root.size)),
        ("mode", tree.mode),
        ("min_size", str(tree.min_size)),
        *((name, f"{node.label}: {node.size} neurons, weights {fmt(node.min, '.4g')} … {fmt(node.max, '.4g')}")
          for name, node in ends if node is not None),
    ]  # fmt: skip
    who = "" if tree.class_index is None else f" of class {tree.class_index}"
    blocks = [
        Facts(facts),
        Note("Split at each node's mean: + holds the weights at or above it, − those below; R² is the paper's fit of the node's weights."),
        Tree(root, compact=tree.mode == "full"),
    ]  # fmt: skip
    return _repr(f"Split tree{who}", f"{len(tree.nodes)} nodes", blocks)


def tree_figure(tree: SplitTree, class_name: str | None = None) -> Figure:
    """The class's weights as a histogram, the means each chain was split at, and the two terminal nodes.

    Where the splits fall on the distribution of the row: the + chain climbs into the right tail, the −
    chain into the left, and what is left at their ends are the most discriminative and most confusing
    neurons.
    """
    values = tree.root.values
    fig = Figure(figsize=(7.0, 3.6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    bins = np.histogram_bin_edges(values, bins=60)
    ax.hist(values, bins=bins, color="#8c8c99", alpha=0.55, label=f"all {values.size} weights")
    for end, colour, name in (
        (tree.discriminative, POS_COLOUR, "most discriminative"),
        (tree.confusing, NEG_COLOUR, "most confusing"),
    ):
        if end is not None:
            ax.hist(
                end.values, bins=bins, color=colour, alpha=0.85, label=f"{name} ({end.label}, {end.size})"
            )
    if not tree.root.is_leaf:
        ax.axvline(tree.root.mean, color="black", lw=1, ls="--", label="a split, at its node's mean")
    for sign, colour in (("+", POS_COLOUR), ("-", NEG_COLOUR)):
        for node in tree.chain(sign)[:-1]:  # each node of the chain that was split again
            ax.axvline(node.mean, color=colour, lw=1, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("weight w_kj")
    ax.set_ylabel("neurons")
    who = class_name or ("a weight row" if tree.class_index is None else f"class {tree.class_index}")
    title = f"Split tree of {who}: dashed, the means each chain splits at"
    ax.set_title(title, fontsize=10, parse_math=False)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def ald_html(fit: ALDFit) -> str:
    """The paper's per-model figures, ours beside them (labelled), and the R² histogram over classes."""
    blocks: list[Any] = []
    if fit.pos is not None:
        paper = [list(facts) for facts in _paper_facts(fit)]
        table = _table("The paper's regression fit", ["", "positive", "negative"], paper, (1, 2), len(paper))
        blocks.append(Row([[table], [_figure_picture(r2_histogram(fit), 340)]]))
        blocks.append(
            Note(
                "fit.plot(k, weight) draws the author's plot of class k: ln of its sorted weights against rank."
            )
        )
    beyond = [list(facts) for facts in _beyond_facts(fit)]
    if beyond:
        heading = "Beyond the paper (fclens): maximum-likelihood ALD, KS, AIC"
        blocks.append(_table(heading, ["", ""], beyond, (1,), len(beyond)))
    return _repr("ALD fit of the final layer", f"{fit.n_classes} classes × {fit.n_inputs} inputs", blocks)


def ald_figure(
    fit: ALDFit, k: int | None = None, weight: Any = None, class_name: str | None = None
) -> Figure:
    """Class ``k``'s fit plot as the author drew it, from ``weight`` (the C×D matrix the fit was made from,
    or row k itself); without ``k``, the histogram of every class's R²."""
    if fit.pos is None:
        raise FclensError("this fit has no regression part to plot; fit_ald(weight, method='all') makes one")
    if k is None:
        return r2_histogram(fit)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < fit.n_classes:
        raise FclensError(f"k must be a class index from 0 to {fit.n_classes - 1}, got {k!r}")
    if weight is None:
        raise FclensError("a class's fit plot draws its weights: pass them, fit.plot(k, model.head.weight)")
    matrix = as_matrix(weight)
    if matrix.shape == (1, fit.n_inputs):
        row = matrix[0]
    elif matrix.shape == (fit.n_classes, fit.n_inputs):
        row = matrix[k]
    else:
        raise FclensError(
            f"the weight has shape {matrix.shape}; this fit was made from {fit.n_classes} × {fit.n_inputs} "
            "(pass that matrix, or the class's row)"
        )
    return fit_plot(row, class_name if class_name is not None else str(k))


# ---------------------------------------------------------------------------------------------------------
# The data-set floor: atlas, causal test, evaluations, re-fits, pruning
# ---------------------------------------------------------------------------------------------------------
def atlas_html(atlas: Atlas) -> str:
    """The classes (least accurate first when labelled, else most images first) and the top confusion
    pairs, with each tested pair's held-out errors before and after the causal test's edit."""
    names = atlas.class_names
    if atlas.labelled:
        order = sorted(atlas.classes, key=lambda c: (c.accuracy is None, c.accuracy or 0.0, -c.n))
    else:
        order = sorted(atlas.classes, key=lambda c: -c.n)
    classes = []
    for c in order:
        top = c.rivals[0] if c.rivals else None
        classes.append(
            [
                f"{c.name} (#{c.index})",
                str(c.n),
                percent(c.accuracy),
                top.name if top else "–",
                fmt(top.soft_confusion) if top else "–",
                "–" if top is None or top.errors is None else str(top.errors),
                c.confusing if c.confusing is not None else "–",
            ]
        )
    tested = {} if atlas.causal is None else {(t.target, t.rival): t for t in atlas.causal.pairs}
    pairs = []
    for p in atlas.pairs:
        row = [
            f"{names[p.a]} → {names[p.b]}",
            fmt(p.soft_confusion),
            "–" if p.errors is None else str(p.errors),
        ]
        if atlas.causal is not None:
            row.append(_held_out(tested.get((p.a, p.b)), atlas.causal.ms))
        pairs.append(row)
    pair_columns = ["images of a → rival b", "soft confusion", "errors a → b"]
    if atlas.causal is not None:
        pair_columns.append(
            f"held-out errors a → b, before → after (tree, m = {headline_m(atlas.causal.ms)})"
        )
    blocks: list[Any] = [
        _table("Classes", ["class", "images", "accuracy", "top rival", "soft confusion", "errors", "confusing node"], classes, (1, 2, 4, 5)),
        _table("Confusion pairs, most confusing first", pair_columns, pairs, (1, 2)),
        Note(
            "Soft confusion: the mean probability the model gives the rival on the class's images (a lower "
            "bound from each image's top 5); errors: images of the class predicted as the rival."
        ),
    ]  # fmt: skip
    if atlas.causal is not None:
        blocks.append(
            Note("atlas.causal shows the causal test of the top pairs, and atlas.causal.plot() its curves.")
        )
    model = atlas.manifest.model.get("name") or "a model"
    images = sum(c.n for c in atlas.classes)
    return _repr(
        f"Atlas of {atlas.directory.name}", f"{model}: {images} images, {len(atlas.classes)} classes", blocks
    )


def _held_out(test: PairTest | None, ms: Sequence[int]) -> str:
    if test is None:
        return "not tested"
    m = headline_m(ms)
    trial = test.trial("tree", m)
    used = "" if len(trial.neurons) == m else f" ({len(trial.neurons)} neurons named)"
    return f"{test.before.errors_kj} → {trial.equalise.errors_kj}{used}"


def causal_html(table: CausalTable) -> str:
    """The summary over the pairs per rule, each pair's held-out errors per rule, and the first pair's
    sentence, all at the headline m."""
    m = headline_m(table.ms)
    rows = []
    for test in table.pairs:
        trials = [test.trial(rule, m) for rule in table.rules]
        rows.append(
            [
                f"{test.target_name} → {test.rival_name}",
                str(test.n_target),
                str(test.before.errors_kj),
                *(str(trial.equalise.errors_kj) for trial in trials),
            ]
        )
    summary = [
        [
            rule, percent(f["soft_cut"]), signed(f["errors_kj"]), signed(f["pair_errors"]),
            signed(f["partial_pair_errors"]), signed(f["accuracy_j"]), signed(f["accuracy_other"]),
        ]
        for rule, per_m in table.summary().items()
        for size, f in per_m.items()
        if size == m
    ]  # fmt: skip
    mean = [
        "rule",
        "soft k→j removed",
        "Δ errors k→j",
        "Δ both ways",
        "Δ both, partial",
        "Δ acc. j",
        "Δ acc. others",
    ]
    columns = ["pair k → j", "held-out images of k", "errors k→j before", *table.rules]
    blocks = [
        _table(f"Equalising the rival's weights on m = {m} neurons: the mean change over the pairs", mean, summary, range(1, 7)),
        Note(
            "tree: the neurons the atlas names (the paper's trees); contrast: every neuron ranked by its "
            "share of the gap on the selection rows; weight: the largest weight differences; random: the "
            "control. Δ: errors in images, accuracy in points; everything on held-out rows."
        ),
        _table(f"Each pair's held-out errors k→j after equalising m = {m} neurons, by rule", columns, rows, range(1, len(columns))),
    ]  # fmt: skip
    if table.pairs:
        blocks.append(Note(f"For example, {table.pairs[0].sentence(m)}"))
    made = (
        f"selected on {table.n_select} rows, judged on {table.n_held_out} held-out rows (seed {table.seed})"
    )
    return _repr(f"Causal test of {len(table.pairs)} confusion pairs", made, blocks)


def causal_figure(table: CausalTable) -> Figure:
    """Per selection rule against m: the share of the held-out soft confusion k→j that equalising removes,
    and what it does to accuracy over all classes (mean over the pairs)."""
    summary = table.summary()
    fig = Figure(figsize=(8.4, 3.8), dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    colours = ("#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#D55E00")
    markers = ("o", "^", "D", "X", "v", "s")
    for i, (rule, per_m) in enumerate(summary.items()):
        ms = sorted(per_m)
        style = {"color": colours[i % 6], "marker": markers[i % 6], "lw": 1.6, "label": rule}
        left.plot(ms, [per_m[m]["soft_cut"] for m in ms], **style)
        right.plot(ms, [per_m[m]["accuracy"] for m in ms], **style)
    for ax, label in ((left, "soft confusion k→j removed"), (right, "Δ accuracy, all classes (points)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(table.ms), [str(m) for m in sorted(table.ms)])
        ax.set_xlabel("m, neurons equalised")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    left.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    right.axhline(0, color="black", lw=0.8)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"Causal test of {len(table.pairs)} pairs, on {table.n_held_out} held-out rows", fontsize=11)
    return fig


def evaluation_html(evaluation: Evaluation) -> str:
    """The summary figures, the least accurate classes and the most frequent confusions k→j."""
    pairs = [
        ("accuracy", percent(evaluation.accuracy)),
        ("balanced accuracy", percent(evaluation.balanced_accuracy)),
    ]
    if evaluation.train_counts is not None:
        pairs += [
            (f"{name}-shot classes", percent(getattr(evaluation, name))) for name in ("many", "medium", "few")
        ]
    if not np.isnan(evaluation.agreement):
        pairs += [
            ("top-1 agreement with the reference", percent(evaluation.agreement)),
            ("KL(reference ‖ this)", fmt(evaluation.kl, ".4f")),
        ]
    counts = evaluation.confusion.sum(axis=1)
    judged = np.flatnonzero(counts > 0)
    worst = judged[np.argsort(evaluation.per_class_accuracy[judged], kind="stable")]
    classes = [[f"#{k}", str(counts[k]), percent(evaluation.per_class_accuracy[k])] for k in worst]
    off = evaluation.confusion.copy()
    np.fill_diagonal(off, 0)
    cells = np.flatnonzero(off)
    cells = cells[np.argsort(-off.flat[cells], kind="stable")]
    confusions = [[f"#{c // off.shape[1]} → #{c % off.shape[1]}", str(off.flat[c])] for c in cells]
    blocks: list[Any] = [
        Facts(pairs),
        Row(
            [
                [_table("Least accurate classes", ["class", "images", "accuracy"], classes, (1, 2))],
                [_table("Errors: images of k predicted as j", ["k → j", "images"], confusions, (1,))],
            ]
        ),
    ]
    subtitle = f"{evaluation.n_images} images, {evaluation.n_labelled} labelled"
    return _repr(f"Evaluation: {evaluation.method}", subtitle, blocks)


def evaluation_figure(
    evaluation: Evaluation, class_names: Sequence[str] | None = None, count: int = 30
) -> Figure:
    """Per-class accuracy of the ``count`` least accurate classes with labelled images, as bars."""
    rows = evaluation.confusion.sum(axis=1)
    judged = np.flatnonzero(rows > 0)
    if not judged.size:
        raise FclensError(
            "this evaluation counted no labelled images: there is no per-class accuracy to draw"
        )
    shown = judged[np.argsort(evaluation.per_class_accuracy[judged], kind="stable")][:count]
    names = [str(class_names[k]) if class_names is not None else f"#{k}" for k in shown]
    fig = Figure(figsize=(7.0, 0.9 + 0.28 * len(shown)), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(shown))
    ax.barh(y, evaluation.per_class_accuracy[shown], color=POS_COLOUR)
    ax.set_yticks(y, [f"{name} ({rows[k]})" for name, k in zip(names, shown, strict=True)], fontsize=8)
    for label in ax.get_yticklabels():
        label.set_parse_math(False)  # a class name with "$" stays text
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.set_xlabel("accuracy (labelled images in brackets)")
    left_out = f", the {len(shown)} least accurate of {judged.size}" if judged.size > len(shown) else ""
    ax.set_title(f"{evaluation.method}: per-class accuracy{left_out}", fontsize=10, parse_math=False)
    ax.grid(alpha=0.3, axis="x")
    return fig


def rebalance_html(result: Rebalance) -> str:
    """Each method's figures on the evaluation scan, the scanned layer's first, and the per-class figure."""
    rows = []
    for row in result.rows():
        fit = result.layers[row["method"]].fit
        ended = "–" if fit is None else f"loss {fit.loss:.4g}, {'converged' if fit.converged else 'stopped'}"
        rows.append(
            [
                row["method"],
                *(percent(row[key]) for key in ("accuracy", "balanced_accuracy", "many", "medium", "few")),
                ended,
            ]
        )
    columns = ["method", "accuracy", "balanced", "many", "medium", "few", "re-fit"]
    blocks = [
        _table("On the evaluation scan", columns, rows, range(1, 6)),
        _figure_picture(rebalance_figure(result), 640),
        Note("many / medium / few: the mean accuracy of classes with > 100, 20–100, < 20 training images."),
    ]
    return _repr("Re-fits of the final layer", f"τ = {result.tau:g}", blocks)


def prune_html(curve: PruneCurve) -> str:
    """The curves of every method and a table of the points."""
    rows = [
        [p.method, f"{p.sparsity:g}", "yes" if p.bias_correction else "no", percent(p.accuracy), percent(p.agreement), fmt(p.kl, ".4f")]
        for p in curve.points
    ]  # fmt: skip
    columns = ["method", "sparsity", "bias corrected", "accuracy", "agreement", "KL"]
    facts = [
        ("unpruned accuracy", percent(curve.reference_accuracy)),
        ("stored features agree with the model's top-1", percent(curve.pred_agreement)),
    ]
    blocks = [
        Facts(facts),
        _figure_picture(prune_figure(curve), 860),
        _table("Points", columns, rows, (1, 3, 4, 5), limit=2 * ROWS),
    ]  # fmt: skip
    return _repr("Pruning the final layer", f"{curve.n_images} images, {curve.n_labelled} labelled", blocks)
