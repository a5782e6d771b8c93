"""The atlas as HTML: an index page of every class, and one self-contained page per class.

The index is a table of the classes (sortable by any column, filterable by name or index and shown a page
at a time, as the weights page's), the confusion pairs and the least accurate classes; each row links to
the class's page. A class page leads with pictures: its tree with the mean contribution of every node on
this data set, then the top-k images twice — where the most confusing node pulls hardest (that node's map
over the image) and where the images argue for the top rival (the contrast map) — then its rivals. Only
those images are drawn, re-read from their path and prepared as the scan prepared them; a file that is
gone, unreadable, or a Dataset item (which has no file) is marked on the page instead. Every count says
its base: all the scan's images of the class, or the causal test's held-out half.

With the causal test (``fclens atlas --causal``, :func:`fclens.causal_test`), each class page ends with
its tested rivals, each collapsed until opened: a chart of the held-out errors against m per rule, the
sentence, and the table (the rows where an edit changes no error and no accuracy left out, and named);
the index shows the summary over the pairs (the same figures as the atlas's JSON, :meth:`fclens.Atlas.to_dict`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fclens.atlasing import Atlas, AtlasImage, ClassAtlas, NodeMean
from fclens.edits.causal import headline_m
from fclens.images import ImageError, load_image
from fclens.io import atomic_write_text
from fclens.maps import MAP_KINDS, branch_sign
from fclens.preprocessing import Preprocessing
from fclens.report._common import fmt, percent
from fclens.report.faithfulness import atlas_faithfulness
from fclens.report.figures import colour_scale_css, overlay
from fclens.report.html import CLASS_TABLE_PAGE, Card, branch_class, image_uri, nest_cards, render
from fclens.runs import progress_bar
from fclens.tree import class_trees

if TYPE_CHECKING:
    from fclens.edits.causal import CausalTable, PairTest
    from fclens.edits.evaluate import PairOutcome
    from fclens.scanning.reader import RowMaps

__all__ = [
    "CAUSAL_MS",
    "INDEX",
    "PAGES",
    "class_page_name",
    "node_in_words",
    "write_atlas_pages",
]

INDEX = "index.html"
PAGES = (INDEX, "class-*.html", "pair-*.safetensors")
"""The files an atlas run may write (its pages, and the model of ``--write``): a rerun removes those it
did not write this time."""
CAUSAL_MS = (1, 4, 8, 32)
"""The numbers of neurons a class page's causal table shows (of those the test ran): enough to see the
trend without a row per m."""


def class_page_name(k: int) -> str:
    """``class-<k>.html``: named by index, so that no class name ever reaches a file name."""
    return f"class-{k}.html"


@dataclass
class Shot:
    """One drawn image of a class page: its overlay (None where the file could not be read) and caption;
    ``name`` is the file's name, what the page prints (the whole ``path`` shows on hover)."""

    index: int
    path: str
    name: str
    picture: str | None
    caption: str
    problem: str = ""


@dataclass
class _Drawing:
    """What the pages of one atlas share: the scan's preparation, grid, the maps of the drawn rows."""

    preprocessing: Preprocessing
    grid: tuple[int, int]
    maps: dict[int, RowMaps]
    pictures: dict[str, Image.Image | str] = field(default_factory=dict)

    def picture(self, path: str) -> Image.Image | str:
        """The image as the model saw it, or why it cannot be shown (a short reason)."""
        if path not in self.pictures:
            try:
                self.pictures[path] = self.preprocessing.display(load_image(path))
            except (ImageError, OSError) as error:
                self.pictures[path] = getattr(error, "reason", None) or str(error)
        return self.pictures[path]

    def shot(self, image: AtlasImage, heat: np.ndarray | None, caption: str) -> Shot:
        picture, name = self.picture(image.path), file_name(image.path)
        if isinstance(picture, str):
            return Shot(image.index, image.path, name, None, caption, f"not shown: {picture}")
        if heat is None:
            return Shot(
                image.index, image.path, name, None, caption, "not shown: the scan has no map for this row"
            )
        uri = image_uri(overlay(picture, heat.reshape(self.grid)))
        return Shot(image.index, image.path, name, uri, caption)


def write_atlas_pages(
    found: Atlas, out: str | Path, causal: CausalTable | None = None, *, progress: bool = True
) -> list[Path]:
    """Write ``index.html`` and ``class-<k>.html`` for every class into ``out``; return the paths.

    ``causal``: the causal test of the atlas's pairs, shown on the class pages of the tested pairs' first
    classes and summarised on the index. ``progress``: a bar on stderr when it is a terminal (a class page
    decodes its images: a thousand classes take minutes)."""
    out = Path(out)
    settings = found.manifest.preprocessing
    preprocessing = Preprocessing(**{key: value for key, value in settings.items() if value is not None})
    drawn = {i.index for c in found.classes for i in (*c.confusing_images, *c.rival_images)}
    drawing = _Drawing(preprocessing, found.scan.grid, found.scan.maps(drawn) if drawn else {})
    trees = _trees(found)
    written = []
    present = {c.index for c in found.classes}
    with progress_bar(len(found.classes), enabled=progress, desc="atlas pages", unit="class") as bar:
        for c in found.classes:
            page = _class_page(found, c, drawing, trees.get(c.index), present, causal)
            written.append(atomic_write_text(out / class_page_name(c.index), page))
            drawing.pictures.clear()  # a class's pictures are not needed by the next class
            bar.update()
    written.append(atomic_write_text(out / INDEX, _index_page(found, causal)))
    return written


def _trees(found: Atlas) -> dict[int, Any]:
    """The split tree of every class present, from the scanned final layer with the scan's settings."""
    weight = found.scan.weight
    classes = [c.index for c in found.classes]
    options = found.manifest.options
    grown = class_trees(weight[classes], classes, options.min_size, options.mode)
    return dict(zip(classes, grown, strict=True))


def _index_page(found: Atlas, causal: CausalTable | None) -> str:
    names = found.class_names
    tested = _tested(causal)
    m = headline_m(causal.ms) if causal is not None else 0
    rows = []
    for c in found.classes:
        top = c.rivals[0] if c.rivals else None
        rows.append(
            {
                "index": c.index,
                "name": c.name,
                "search": c.name.lower(),
                "href": class_page_name(c.index),
                "cells": [
                    (str(c.n), c.n),
                    (percent(c.accuracy), "" if c.accuracy is None else c.accuracy),
                    (top.name if top else "–", None),
                    (fmt(top.soft_confusion) if top else "–", top.soft_confusion if top else ""),
                    (
                        _errors(top.errors) if top else "–",
                        "" if top is None or top.errors is None else top.errors,
                    ),
                ],
            }
        )
    pairs = [
        {
            "a": names[p.a],
            "b": names[p.b],
            "a_href": class_page_name(p.a),
            "soft": fmt(p.soft_confusion),
            "errors": _errors(p.errors),
            "causal": _tree_errors(tested.get((p.a, p.b)), m),
            "causal_href": f"{class_page_name(p.a)}#{_anchor(p.b)}",
        }
        for p in found.pairs[:20]
    ]
    lowest = [
        {
            "name": c.name,
            "href": class_page_name(c.index),
            "accuracy": percent(c.accuracy),
            "n": c.n,
            "errors": _most_errors(c),
        }
        for c in found.lowest_accuracy()
    ]
    return render(
        "atlas-index.html.j2",
        title=f"fclens atlas: {found.manifest.model.get('name', 'a model')} on a scan",
        facts=_scan_facts(found),
        rows=rows,
        pairs=pairs,
        lowest=lowest,
        labelled=found.labelled,
        causal=None if causal is None else _causal_summary(causal),
        page_size=CLASS_TABLE_PAGE,
    )


def _class_page(
    found: Atlas,
    c: ClassAtlas,
    drawing: _Drawing,
    tree: Any,
    present: set[int],
    causal: CausalTable | None,
) -> str:
    means = {node.path: node for node in c.nodes}
    tested = _tested(causal)
    rivals = [
        {
            "name": r.name,
            "index": r.index,
            "href": class_page_name(r.index) if r.index in present else None,
            "soft": fmt(r.soft_confusion),
            "errors": _errors(r.errors),
            "causal_href": f"#{_anchor(r.index)}" if (c.index, r.index) in tested else None,
        }
        for r in c.rivals
    ]
    pairs = [tested[c.index, r.index] for r in c.rivals if (c.index, r.index) in tested]
    kind = found.manifest.options.primary
    confusing = [
        drawing.shot(
            i, _node_map(drawing.maps.get(i.index), c.confusing, kind), f"pull {fmt(i.strength, '.4g')}"
        )
        for i in c.confusing_images
    ]
    card_tree = (
        None if tree is None else nest_cards(tree.nodes, lambda node: _mean_card(node, means), tree)[0]
    )
    tests = [_causal_pair(test, causal) for test in pairs] if causal is not None else []
    return render(
        "atlas-class.html.j2",
        title=f"{c.name} (#{c.index}): what the data set says",
        name=c.name,
        lead=_lead(c),
        facts=[
            ("images", f"{c.n}, all the scan’s images of the class"),
            ("accuracy", _accuracy(c)),
            ("most confusing node", node_in_words(c.confusing, tree)),
            ("scan", _scan_line(found)),
        ],
        rivals=rivals,
        tree=card_tree,
        confusing_node=None if c.confusing is None else _spaced(c.confusing),
        confusing=confusing,
        colour_scale=colour_scale_css(),
        evidence=_evidence(c, drawing),
        index_href=INDEX,
        causal_ran=causal is not None,
        causal=[test for test in tests if isinstance(test, CausalPair)],
        quiet=[test for test in tests if isinstance(test, QuietPair)],
        headline=(_headline_rule(causal), headline_m(causal.ms)) if causal else None,
        rules=[(rule, *RULE_STYLE.get(rule, _OTHER_RULE)) for rule in causal.rules] if causal else [],
        faithfulness=atlas_faithfulness(c.baselines, kind, found.manifest.options.fill),
    )


def file_name(path: str) -> str:
    """What a caption prints of an image's path: its file name (a Dataset item's "<dataset 3>" whole)."""
    return re.split(r"[\\/]", path.rstrip("\\/"))[-1] or path


def node_in_words(path: str | None, tree: Any) -> str:
    """A node as a reader says it: "6 splits down the negative chain (− − − − − −), 13 neurons"."""
    if path is None:
        return "none (tree never split)"
    chains = {"+": "the positive chain", "-": "the negative chain"}
    where = chains[path[0]] if len(set(path)) == 1 else "the tree"
    splits = f"{len(path)} split{'' if len(path) == 1 else 's'} down {where} ({_spaced(path)})"
    sizes = [node.size for node in (tree.nodes if tree is not None else []) if node.path == path]
    return f"{splits}, {sizes[0]} neurons" if sizes else splits


def _spaced(path: str) -> str:
    """A node path in typographic signs, one apart from the next: "+-" → "+ −"."""
    return " ".join("−" if sign == "-" else sign for sign in path)


def _mean_card(node: Any, means: dict[str, NodeMean]) -> Card:
    mean = means.get(node.path)
    value = "n/a" if mean is None else fmt(mean.mean_contribution, ".4g")
    facts = [f"{node.size} neurons", f"mean {value}"]
    details = f"mean contribution to the logit over the class's images: {value}"
    return Card(node.path, node.label, branch_class(node.path), facts, details)


def _node_map(row: RowMaps | None, path: str | None, kind: str) -> np.ndarray | None:
    """A node's stored map as shown: a signed kind's − node negated (:func:`fclens.maps.oriented`)."""
    if row is None or path is None or path not in row.node_path:
        return None
    heat = row.node_map[row.node_path.index(path)]
    signed = kind in MAP_KINDS and MAP_KINDS[kind].signed
    return heat * branch_sign(path) if signed else heat


def _contrast(row: RowMaps | None) -> np.ndarray | None:
    """The contrast map as shown: the evidence for the rival, zero where the image argues for the class."""
    return None if row is None else np.clip(row.contrast_map, 0, None)


# --- what the numbers say, with their base ------------------------------------------------------------


def _accuracy(c: ClassAtlas) -> str:
    """The class's accuracy and what it is counted on."""
    if c.accuracy is None:
        return "n/a (the scan has no labels for this class)"
    return f"{percent(c.accuracy)} of all {c.n} images"


def _where_errors_go(c: ClassAtlas, count: int) -> str:
    """ "42 Egyptian cat, 3 tiger cat and 2 cheetah": the class's errors on its ``count`` most erring
    rivals (all images of the class)."""
    wrong = [
        f"{r.errors} {r.name}" for r in sorted((r for r in c.rivals if r.errors), key=lambda r: -r.errors)
    ]
    named = wrong[:count]
    return ", ".join(named[:-1]) + (" and " if len(named) > 1 else "") + (named[-1] if named else "")


def _most_errors(c: ClassAtlas) -> str:
    """ "42 called Egyptian cat": the class's rival with the most errors, or "" without one."""
    wrong = max((r for r in c.rivals if r.errors), key=lambda r: r.errors, default=None)
    return "" if wrong is None else f"{wrong.errors} called {wrong.name}"


def _lead(c: ClassAtlas) -> str:
    """For a class the model gets mostly wrong, a newcomer's first sentence: where its images go, and why
    that is most often the model's confusion of near classes rather than a fault of the data."""
    if c.accuracy is None or c.accuracy >= 0.5 or not any(r.errors for r in c.rivals):
        return ""
    return (
        f"The model gets {percent(c.accuracy)} of these {c.n} images right: it calls "
        f"{_where_errors_go(c, 3)}. Errors gathered on a few rivals mean the model tells these classes "
        "apart badly, most often because they look alike to it (ImageNet’s tabby, tiger cat and Egyptian "
        "cat are one of its best-known confusions). The tree and the images below show where it looks; "
        "the rivals and their errors follow."
    )


@dataclass
class Evidence:
    """The class's images against its top rival: those that argue for it (logit gap rival − class > 0,
    so the model predicts the rival) and those where the rival comes closest without; ``sentence`` says
    how many of all the class's images argue for it."""

    rival: str
    sentence: str
    arguing: list[Shot]
    closest: list[Shot]


def _evidence(c: ClassAtlas, drawing: _Drawing) -> Evidence | None:
    if not c.rivals:
        return None
    top = c.rivals[0]

    def shot(image: AtlasImage) -> Shot:
        contrast = _contrast(drawing.maps.get(image.index))
        return drawing.shot(image, contrast, f"logit gap {fmt(image.strength, '+.3g')}")

    arguing = [shot(i) for i in c.rival_images if i.strength > 0]
    closest = [shot(i) for i in c.rival_images if i.strength <= 0]
    if top.errors is None:
        sentence = (
            f"The scan has no labels for {c.name}: each image is filed under the class it is predicted "
            f"as, so none argues for {top.name} outright."
        )
    elif top.errors == 0:
        sentence = f"None of the {c.n} images of {c.name} argues for {top.name}: {c.name} wins on every one."
    else:
        shown = "all are shown" if len(arguing) == top.errors else f"the {len(arguing)} strongest are shown"
        sentence = (
            f"{top.errors} of the {c.n} images of {c.name} argue for {top.name} (its logit above "
            f"{c.name}’s: the model predicts {top.name}); {shown}."
        )
    return Evidence(top.name, sentence, arguing, closest)


# --- the causal test -------------------------------------------------------------------------------


RULE_STYLE = {
    "tree": ("#0072B2", "circle", ""),
    "contrast": ("#D55E00", "square", ""),
    "weight": ("#009E73", "triangle", "6 3"),
    "random": ("#E69F00", "diamond", "2 3"),
}
"""(colour, marker, SVG dash) of each selection rule in the charts: Okabe–Ito colours, a marker each,
and the controls dashed, so that no rule is told by its colour alone (tree and random as in pruning's)."""
_OTHER_RULE = ("#000000", "circle", "")


@dataclass
class CausalRow:
    """One row of a pair's causal table: a rule at one m (or the figures before any edit)."""

    rule: str
    m: str
    cells: list[str]
    kind: str = ""
    """"before", "headline" (the row the pair's sentence tells) or ""."""


@dataclass
class ChartLine:
    """One rule's line in a :class:`Chart`: its style and its points in the chart's pixels."""

    rule: str
    colour: str
    marker: str
    dash: str
    points: list[tuple[float, float]]

    @property
    def polyline(self) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.points)


@dataclass
class Chart:
    """A small line chart of held-out errors against m, laid out here in pixels, drawn by the page as
    inline SVG: one line per rule, the figure before any edit a dashed grey line."""

    title: str
    description: str
    width: int
    height: int
    box: tuple[float, float, float, float]
    """The plot area: left, top, right, bottom."""
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    before: float
    lines: list[ChartLine]


@dataclass
class CausalPair:
    """A tested rival of a class page: its summary line, sentence, charts and table (trimmed)."""

    anchor: str
    rival: str
    summary: str
    sentence: str
    held_out: str
    charts: list[Chart]
    rows: list[CausalRow]
    trimmed: str


@dataclass
class QuietPair:
    """A tested rival where no edit changed an error or an accuracy: one line, no table."""

    anchor: str
    rival: str
    figures: str
    """Its held-out errors k→j and j→k, and soft confusion before → after the headline edit."""


def _tested(table: CausalTable | None) -> dict[tuple[int, int], PairTest]:
    return {} if table is None else {(p.target, p.rival): p for p in table.pairs}


def _anchor(rival: int) -> str:
    return f"causal-{rival}"


_COMPARED = ("errors_kj", "errors_jk", "accuracy_k", "accuracy_j", "accuracy_other")


def _unchanged(after: PairOutcome, before: PairOutcome) -> bool:
    """No error either way and no accuracy moved (NaN, a class without held-out images, equals NaN)."""
    return all(
        a == b or (math.isnan(a) and math.isnan(b))
        for a, b in ((float(getattr(after, key)), float(getattr(before, key))) for key in _COMPARED)
    )


def _quiet(trial: Any, before: PairOutcome) -> bool:
    """A trial with nothing to say: neither edit changed an error or an accuracy on the held-out half."""
    return _unchanged(trial.equalise, before) and _unchanged(trial.partial, before)


def _headline_rule(table: CausalTable) -> str:
    return "tree" if "tree" in table.rules else table.rules[0]


def _causal_pair(test: PairTest, table: CausalTable) -> CausalPair | QuietPair:
    """The pair's collapsible section, or for a pair where no edit changed anything one line saying so."""
    m, lead = headline_m(table.ms), _headline_rule(table)
    before = test.before
    if all(_quiet(trial, before) for trial in test.trials):
        soft = test.trial(lead, m).equalise.soft_kj
        return QuietPair(
            _anchor(test.rival),
            test.rival_name,
            f"{before.errors_kj} and {before.errors_jk}; soft confusion {fmt(before.soft_kj)} → {fmt(soft)}",
        )
    shown = [size for size in table.ms if size in CAUSAL_MS] or list(table.ms)
    rows = [CausalRow("before", "no edit", _outcome_cells(before, str(before.pair_errors)), "before")]
    left_out: dict[str, list[int]] = {}
    for rule in table.rules:
        for size in shown:
            trial = test.trial(rule, size)
            headline = (rule, size) == (lead, m)
            if _quiet(trial, before) and not headline:
                left_out.setdefault(rule, []).append(size)
                continue
            used = len(trial.neurons)
            rows.append(
                CausalRow(
                    rule,
                    str(size) if used == size else f"{size} ({used} used)",
                    _outcome_cells(trial.equalise, f"{trial.partial.pair_errors} (s {trial.strength:.2f})"),
                    "headline" if headline else "",
                )
            )
    others = ", ".join(
        f"{rule} {test.trial(rule, m).equalise.errors_kj}" for rule in table.rules if rule != lead
    )
    k, j = test.target_name, test.rival_name
    return CausalPair(
        anchor=_anchor(test.rival),
        rival=j,
        summary=(
            f"held-out errors {k}→{j}: {before.errors_kj} → {test.trial(lead, m).equalise.errors_kj} with "
            f"{lead} at m = {m}" + (f" ({others})" if others else "")
        ),
        sentence=test.sentence(m) if "tree" in table.rules else "",
        held_out=f"{test.n_target} held-out images of {k}, {test.n_rival} of {j}",
        charts=[
            _chart(test, table, f"errors {k}→{j}", lambda o: o.errors_kj),
            _chart(test, table, "errors both ways", lambda o: o.pair_errors),
        ],
        rows=rows,
        trimmed="; ".join(f"{rule} at m = {', '.join(map(str, sizes))}" for rule, sizes in left_out.items()),
    )


_CHART = (300, 190, (40.0, 26.0, 290.0, 156.0))
"""Width, height and plot area (left, top, right, bottom) of a causal chart, in CSS pixels."""


def _chart(test: PairTest, table: CausalTable, title: str, value: Any) -> Chart:
    """Held-out ``value`` (a :class:`PairOutcome`'s errors) after equalising, against m on a log scale."""
    width, height, (left, top, right, bottom) = _CHART
    ms = list(table.ms)
    logs = [math.log2(m) for m in ms]
    low, span = min(logs), (max(logs) - min(logs)) or 1.0

    def x(m: int) -> float:
        return left + (right - left) * (math.log2(m) - low) / span

    counts = {rule: [value(test.trial(rule, m).equalise) for m in ms] for rule in table.rules}
    before = value(test.before)
    ticks = _ticks(max([before, *(v for values in counts.values() for v in values)]))

    def y(count: float) -> float:
        return bottom - (bottom - top) * count / ticks[-1]

    lines = [
        ChartLine(
            rule, *RULE_STYLE.get(rule, _OTHER_RULE), [(x(m), y(v)) for m, v in zip(ms, values, strict=True)]
        )
        for rule, values in counts.items()
    ]
    described = "; ".join(f"{rule}: {', '.join(map(str, values))}" for rule, values in counts.items())
    return Chart(
        title=title,
        description=f"{title} on the held-out half against m = {', '.join(map(str, ms))}: before {before}; {described}",
        width=width,
        height=height,
        box=(left, top, right, bottom),
        x_ticks=[(x(m), str(m)) for m in ms],
        y_ticks=[(y(t), str(t)) for t in ticks],
        before=y(before),
        lines=lines,
    )


def _ticks(largest: float) -> list[int]:
    """Whole-number ticks from 0 to just past ``largest``, at most 6, in steps of 1, 2 or 5 × 10ⁿ."""
    largest = max(1, math.ceil(largest))
    step = next(s * 10**e for e in range(12) for s in (1, 2, 5) if largest <= 5 * s * 10**e)
    return list(range(0, step * math.ceil(largest / step) + 1, step))


def _outcome_cells(outcome: PairOutcome, partial: str) -> list[str]:
    return [
        str(outcome.errors_kj),
        str(outcome.errors_jk),
        fmt(outcome.soft_kj),
        percent(outcome.accuracy_k),
        percent(outcome.accuracy_j),
        percent(outcome.accuracy_other),
        partial,
    ]


def _tree_errors(test: PairTest | None, m: int) -> list[str] | None:
    """The index's cells of a tested pair: its held-out errors k→j, then j→k, before → after ``tree``
    equalises m neurons (both ways: the edit trades one for the other)."""
    if test is None or "tree" not in {t.rule for t in test.trials}:
        return None
    before, after = test.before, test.trial("tree", m).equalise
    return [f"{before.errors_kj} → {after.errors_kj}", f"{before.errors_jk} → {after.errors_jk}"]


def _causal_summary(table: CausalTable) -> dict[str, Any]:
    """The index's summary: per rule at the headline m, the figures :meth:`CausalTable.summary` gives."""
    m = headline_m(table.ms)
    rows = [
        (
            rule,
            [
                percent(f["soft_cut"]),
                fmt(f["errors_kj"], "+.2f"),
                fmt(f["pair_errors"], "+.2f"),
                fmt(f["partial_pair_errors"], "+.2f"),
                fmt(f["accuracy_j"], "+.1f"),
                fmt(f["accuracy_other"], "+.2f"),
                fmt(f["partial_accuracy"], "+.2f"),
            ],
        )
        for rule, per_m in table.summary().items()
        for f in [per_m[m]]
    ]
    return {
        "m": m,
        "pairs": len(table.pairs),
        "n_select": table.n_select,
        "n_held_out": table.n_held_out,
        "seed": table.seed,
        "rows": rows,
    }


def _errors(count: int | None) -> str:
    return "n/a" if count is None else str(count)


def _scan_facts(found: Atlas) -> list[tuple[str, str]]:
    manifest = found.manifest
    return [
        ("model", str(manifest.model.get("name", "?"))),
        ("scan", str(found.directory)),
        ("images scanned", _scanned(found)),
        ("classes present", str(len(found.classes))),
        ("map kind", manifest.options.primary),
    ]


def _scan_line(found: Atlas) -> str:
    """The scan in one line, for a class page: where, which model, how many images, which maps."""
    manifest = found.manifest
    return (
        f"{found.directory}: {manifest.model.get('name', '?')}, {_scanned(found)} images scanned, "
        f"{len(found.classes)} classes present, {manifest.options.primary} maps"
    )


def _scanned(found: Atlas) -> str:
    manifest = found.manifest
    scanned = str(manifest.counts.get("ok", "?"))
    if not manifest.complete:
        held = found.scan.dataset.count_rows()
        scanned += f" (incomplete scan: {held} of {manifest.counts.get('images', '?')} images)"
    return scanned
