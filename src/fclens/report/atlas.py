"""The atlas as HTML: an index page of every class, and one self-contained page per class.

The index is a table of the classes (sortable by any column, filterable by name or index, as the weights
page is), the confusion pairs and the least accurate classes; each row links to the class's page. A
class page shows its tree with the mean contribution of every node on this data set, its rivals, and
the top-k images twice: where the most confusing node pulls hardest (that node's map over the image)
and where the image argues most for the top rival (the contrast map). Only those images are drawn,
re-read from their path and prepared as the scan prepared them; a file that is gone, unreadable, or a
Dataset item (which has no file) is marked on the page instead.

With the causal test (``fclens atlas --causal``, :func:`fclens.causal_test`), each class page also shows,
per tested rival, what equalising the rival's weights on the named neurons does on held-out images beside
the other selection rules, and the index the summary over the pairs; :func:`atlas_with_causal` adds the
same figures to the atlas's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fclens.atlasing import Atlas, AtlasImage, ClassAtlas, NodeMean, read_maps
from fclens.edits.pair import headline_m
from fclens.images import ImageError, Preprocessing, load_image
from fclens.io import atomic_write_text
from fclens.maps import MAP_KINDS, branch_sign
from fclens.report._common import fmt
from fclens.report.faithfulness import atlas_faithfulness
from fclens.report.figures import colour_scale_css, overlay
from fclens.report.html import Card, branch_class, image_uri, nest_cards, render
from fclens.tree import class_trees

if TYPE_CHECKING:
    from fclens.edits.pair import CausalTable, Outcome, PairTest

__all__ = [
    "CAUSAL_MS",
    "INDEX",
    "PAGES",
    "atlas_with_causal",
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
    """One drawn image of a class page: its overlay (None where the file could not be read) and caption."""

    index: int
    path: str
    picture: str | None
    caption: str
    problem: str = ""


@dataclass
class _Drawing:
    """What the pages of one atlas share: the scan's preparation, grid, the maps of the drawn rows."""

    preprocessing: Preprocessing
    grid: tuple[int, int]
    maps: dict[int, dict[str, Any]]
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
        picture = self.picture(image.path)
        if isinstance(picture, str):
            return Shot(image.index, image.path, None, caption, f"not shown: {picture}")
        if heat is None:
            return Shot(image.index, image.path, None, caption, "not shown: the scan has no map for this row")
        return Shot(image.index, image.path, image_uri(overlay(picture, heat.reshape(self.grid))), caption)


def write_atlas_pages(found: Atlas, out: str | Path, causal: CausalTable | None = None) -> list[Path]:
    """Write ``index.html`` and ``class-<k>.html`` for every class into ``out``; return the paths.

    ``causal``: the causal test of the atlas's pairs, shown on the class pages of the tested pairs' first
    classes and summarised on the index."""
    out = Path(out)
    settings = found.manifest.preprocessing
    preprocessing = Preprocessing(**{key: value for key, value in settings.items() if value is not None})
    drawn = {i.index for c in found.classes for i in (*c.confusing_images, *c.rival_images)}
    drawing = _Drawing(preprocessing, found.scan.grid, read_maps(found.scan, drawn) if drawn else {})
    trees = _trees(found)
    written = []
    present = {c.index for c in found.classes}
    for c in found.classes:
        page = _class_page(found, c, drawing, trees.get(c.index), present, causal)
        written.append(atomic_write_text(out / class_page_name(c.index), page))
        drawing.pictures.clear()  # a class's pictures are not needed by the next class
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
                    (fmt(c.accuracy), "" if c.accuracy is None else c.accuracy),
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
        {"name": c.name, "href": class_page_name(c.index), "accuracy": fmt(c.accuracy), "n": c.n}
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
    rival_name = found.class_names[c.rivals[0].index] if c.rivals else None
    rival = [
        drawing.shot(i, _contrast(drawing.maps.get(i.index)), f"logit gap {fmt(i.strength, '.4g')}")
        for i in c.rival_images
    ]
    card_tree = (
        None if tree is None else nest_cards(tree.nodes, lambda node: _mean_card(node, means), tree)[0]
    )
    return render(
        "atlas-class.html.j2",
        title=f"{c.name} (#{c.index}): what the data set says",
        name=c.name,
        facts=[
            ("images", str(c.n)),
            ("accuracy", fmt(c.accuracy)),
            ("most confusing node", node_in_words(c.confusing, tree)),
            *(_scan_facts(found)),
        ],
        rivals=rivals,
        tree=card_tree,
        confusing_node=None if c.confusing is None else _spaced(c.confusing),
        confusing=confusing,
        colour_scale=colour_scale_css(),
        rival_name=rival_name,
        rival=rival,
        index_href=INDEX,
        causal_ran=causal is not None,
        causal=[_causal_pair(test, causal) for test in pairs] if causal is not None else [],
        faithfulness=atlas_faithfulness(c.baselines, kind, found.manifest.options.fill),
    )


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


def _node_map(row: dict[str, Any] | None, path: str | None, kind: str) -> np.ndarray | None:
    """A node's stored map as shown: a signed kind's − node negated (:func:`fclens.maps.oriented`)."""
    if row is None or path is None or path not in row["node_path"]:
        return None
    heat = row["node_map"][row["node_path"].index(path)]
    signed = kind in MAP_KINDS and MAP_KINDS[kind].signed
    return heat * branch_sign(path) if signed else heat


def _contrast(row: dict[str, Any] | None) -> np.ndarray | None:
    """The contrast map as shown: the evidence for the rival, zero where the image argues for the class."""
    return None if row is None else np.clip(row["contrast_map"], 0, None)


# --- the causal test -------------------------------------------------------------------------------


def atlas_with_causal(
    data: dict[str, Any], table: CausalTable, written: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The atlas's JSON (:meth:`Atlas.to_dict`) with each pair's test as ``pairs[].causal`` (null for a
    pair not tested), and under ``causal`` how the test was made, its summary over the pairs and
    ``written``, the model ``--write`` saved (null without one): one file answers both questions."""
    tested = _tested(table)
    pairs = [
        {**pair, "causal": test.to_dict() if (test := tested.get((pair["a"], pair["b"]))) else None}
        for pair in data["pairs"]
    ]
    made = {key: value for key, value in table.to_dict().items() if key != "pairs"}
    return {**data, "pairs": pairs, "causal": {**made, "written": written}}


@dataclass
class CausalRow:
    """One row of a pair's causal table: a rule at one m (or the figures before any edit)."""

    rule: str
    m: str
    cells: list[str]
    kind: str = ""
    """"before", "headline" (the row the pair's sentence tells) or ""."""


@dataclass
class CausalPair:
    """A tested rival of a class page: its sentence and its table."""

    anchor: str
    rival: str
    sentence: str
    held_out: str
    rows: list[CausalRow]


def _tested(table: CausalTable | None) -> dict[tuple[int, int], PairTest]:
    return {} if table is None else {(p.target, p.rival): p for p in table.pairs}


def _anchor(rival: int) -> str:
    return f"causal-{rival}"


def _causal_pair(test: PairTest, table: CausalTable) -> CausalPair:
    m = headline_m(table.ms)
    shown = [size for size in table.ms if size in CAUSAL_MS] or list(table.ms)
    rows = [
        CausalRow("before", "no edit", _outcome_cells(test.before, str(test.before.pair_errors)), "before")
    ]
    for rule in table.rules:
        for size in shown:
            trial = test.trial(rule, size)
            used = len(trial.neurons)
            rows.append(
                CausalRow(
                    rule,
                    str(size) if used == size else f"{size} ({used} used)",
                    _outcome_cells(trial.equalise, f"{trial.partial.pair_errors} (s {trial.strength:.2f})"),
                    "headline" if (rule, size) == ("tree", m) else "",
                )
            )
    return CausalPair(
        anchor=_anchor(test.rival),
        rival=test.rival_name,
        sentence=test.sentence(m) if "tree" in table.rules else "",
        held_out=f"{test.n_target} held-out images of {test.target_name}, {test.n_rival} of {test.rival_name}",
        rows=rows,
    )


def _outcome_cells(outcome: Outcome, partial: str) -> list[str]:
    return [
        str(outcome.errors_kj),
        str(outcome.errors_jk),
        fmt(outcome.soft_kj),
        _percent(outcome.accuracy_k),
        _percent(outcome.accuracy_j),
        _percent(outcome.accuracy_other),
        partial,
    ]


def _tree_errors(test: PairTest | None, m: int) -> list[str] | None:
    """The index's cells of a tested pair: its held-out errors k→j, then j→k, before → after ``tree``
    equalises m neurons (both ways: the edit trades one for the other)."""
    if test is None or "tree" not in {t.select for t in test.trials}:
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
                _percent(f["soft_cut"]),
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


def _percent(value: float | None) -> str:
    text = fmt(None if value is None else 100 * value, ".1f")
    return text if text == "n/a" else f"{text}%"


def _errors(count: int | None) -> str:
    return "n/a" if count is None else str(count)


def _scan_facts(found: Atlas) -> list[tuple[str, str]]:
    manifest = found.manifest
    scanned = str(manifest.counts.get("ok", "?"))
    if not manifest.complete:
        held = found.scan.dataset.count_rows()
        scanned += f" (incomplete scan: {held} of {manifest.counts.get('images', '?')} images)"
    return [
        ("model", str(manifest.model.get("name", "?"))),
        ("scan", str(found.directory)),
        ("images scanned", scanned),
        ("classes present", str(len(found.classes))),
        ("map kind", manifest.options.primary),
    ]
