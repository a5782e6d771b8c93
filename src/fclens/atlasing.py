"""The atlas of a scan: what a data set says about each class — its rivals, its nodes, the images that show it.

:func:`atlas` reads a scan directory (:func:`fclens.scan`) and answers, per class present: how many
images and how accurate; which classes it is confused with, ranked by *soft* confusion (a 99 % accurate
model still has rivals, and they are what matters) with the count of outright errors beside it; which
nodes of its tree carry it on this data set and which pull it down (the mean contribution of each); the
images where its most confusing node pulls hardest; and, for its top rival, the images with the most
evidence for that rival. Over the data set: the confusion pairs ranked, and the least accurate classes.

A class's images are those it labels, or, without a label, those it is predicted for: the scan's
``target`` column. Soft confusion of class a with rival b is the mean over a's images of the probability
the model gives b. The scan keeps the five most probable classes of each image (``top5``/``top5_prob``),
so b's probability counts as 0 on an image where b is not among them: a lower bound, exact for every
rival that matters (a rival outside an image's top 5 has less than a fifth of the mass left).

The aggregation is columnar, in pyarrow compute, one batch of rows at a time: the scan's one reader
(:meth:`fclens.scanning.Scan.batches`) reads only the columns needed (never the maps), each batch reduced to per-class partial sums and top-k candidates, and merged
into accumulators whose size depends on the classes, not on the images. pyarrow is what the scan is
written with, so the atlas needs no other engine; ``benchmarks/bench_atlas.py`` measures it beside
DuckDB on the same table. Maps are read back only for the few images an HTML page draws.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fclens import deprecation
from fclens.errors import FclensError
from fclens.options import ATLAS_TOP_K, SEED, at_least
from fclens.scanning.reader import Scan, as_scan

if TYPE_CHECKING:
    from fclens.edits.causal import CausalTable, SavedEdit
    from fclens.scanning.manifest import Manifest

__all__ = ["Atlas", "AtlasImage", "BaselineShares", "ClassAtlas", "NodeMean", "Pair", "Rival", "atlas"]

MAX_RIVALS = 10
"""Rivals kept per class, most confusing first."""
MAX_PAIRS = 100
"""Confusion pairs kept over the data set, most confusing first."""
LOWEST = 10
"""Classes listed as the least accurate."""

_AGGREGATED = [
    "index", "path", "label", "pred", "top5", "top5_prob", "target", "rival",
    "logit_target", "logit_rival", "node_path", "node_size", "node_contribution",
]  # fmt: skip
_PICKED = [
    "index", "path", "target", "rival", "logit_target", "logit_rival", "node_path", "node_contribution",
]  # fmt: skip
"""The columns of each pass: the totals, then the top images (never the maps)."""
_CURVES = ["node_deletion_auc", "node_insertion_auc", "random_deletion_auc", "random_insertion_auc"]
"""A scan's curve columns (``curves=True``), read with the totals where the scan has them."""


@dataclass
class Rival:
    """A class that ``soft_confusion`` of the probability goes to, on average; ``errors``: images of the
    class predicted as this rival (None without labels)."""

    index: int
    name: str
    soft_confusion: float
    errors: int | None


@dataclass
class NodeMean:
    """A node of the class's tree and its mean contribution Σ_{j∈node} w_kj z_j over the class's images."""

    path: str
    size: int
    mean_contribution: float


@dataclass
class AtlasImage:
    """One image of the scan (``index`` is its position in the source) and how strongly it shows a thing.

    ``rival`` is set for rival images: the class it argues for.
    """

    index: int
    path: str
    strength: float
    rival: int | None = None


@dataclass
class BaselineShares:
    """Over the ``n`` images of a class with curves, the share where its most discriminative node (``path``)
    beats each baseline: the fields of :class:`fclens.explaining.Verdict`, as fractions of the images;
    and the node's mean deletion and insertion AUCs over those images."""

    path: str
    n: int
    deletes_faster_than_class: float
    deletes_faster_than_random: float
    keeps_longer_than_class: float
    keeps_longer_than_random: float
    deletion_auc: float
    insertion_auc: float


@dataclass
class ClassAtlas:
    """What the data set says about one class.

    ``confusing`` is the path of the tree's most confusing node; ``confusing_images`` are those where it
    pulls the class down the hardest (strength = −its contribution to the logit), ``rival_images`` those
    of the class whose rival is the top rival, by the evidence for it (strength = logit_rival − logit_target,
    the contrast map's mean plus the bias difference). ``accuracy`` is None for a class without labels.
    ``baselines`` is None unless the scan drew curves and the class's tree was split.
    """

    index: int
    name: str
    n: int
    accuracy: float | None
    rivals: list[Rival]
    nodes: list[NodeMean]
    confusing: str | None
    confusing_images: list[AtlasImage] = field(default_factory=list)
    rival_images: list[AtlasImage] = field(default_factory=list)
    baselines: BaselineShares | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.index,
            "name": self.name,
            "n": self.n,
            "accuracy": self.accuracy,
            "rivals": [
                {"class": r.index, "name": r.name, "soft_confusion": r.soft_confusion, "errors": r.errors}
                for r in self.rivals
            ],
            "nodes": [vars(node) for node in self.nodes],
            "confusing_node": self.confusing,
            "confusing_images": [
                {"index": i.index, "path": i.path, "strength": i.strength} for i in self.confusing_images
            ],
            "rival_images": [
                {"index": i.index, "path": i.path, "rival": i.rival, "strength": i.strength}
                for i in self.rival_images
            ],
            "baselines": None if self.baselines is None else vars(self.baselines),
        }


@dataclass
class Pair:
    """Class ``a``'s images give ``soft_confusion`` of their probability to class ``b`` on average."""

    a: int
    b: int
    soft_confusion: float
    errors: int | None


@dataclass
class Atlas:
    """The atlas of a scan: one :class:`ClassAtlas` per class present, by class index.

    ``pairs`` are the confusion pairs over the data set, each direction on its own, most confusing first;
    ``causal``, when asked for, whether the neurons named for the top pairs cause them.
    """

    scan: Scan
    classes: list[ClassAtlas]
    pairs: list[Pair]
    top_k: int
    causal: CausalTable | None = None
    """The causal test of the top pairs (``atlas(scan, causal=True)``), None when not asked for."""

    def __repr__(self) -> str:
        tested = "" if self.causal is None else f", the causal test of {len(self.causal.pairs)} pairs"
        return f"Atlas({str(self.directory)!r}: {len(self.classes)} classes, {len(self.pairs)} pairs{tested})"

    @property
    def directory(self) -> Path:
        return self.scan.directory

    @property
    def manifest(self) -> Manifest:
        return self.scan.manifest

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    @property
    def labelled(self) -> bool:
        return any(c.accuracy is not None for c in self.classes)

    def lowest_accuracy(self, count: int = LOWEST) -> list[ClassAtlas]:
        """The ``count`` least accurate classes with labels (fewest images first among equals)."""
        known = [c for c in self.classes if c.accuracy is not None]
        return sorted(known, key=lambda c: (c.accuracy, c.n))[:count]

    def to_dict(self, written: SavedEdit | None = None) -> dict[str, Any]:
        """What ``fclens atlas --json`` prints and ``atlas.json`` holds; floats are plain, absent
        accuracies null. With the causal test: each pair's test as ``pairs[].causal`` (null for a pair not
        tested) and, under ``causal``, how the test was made, its summary over the pairs and ``written``,
        the pair edit saved as a model (:func:`fclens.edits.causal.save_pair_edit`; null without one)."""
        names = self.class_names
        tested = {} if self.causal is None else {(t.target, t.rival): t for t in self.causal.pairs}
        data: dict[str, Any] = {
            "scan": str(self.directory),
            "model": self.manifest.model.get("name"),
            "top_k": self.top_k,
            "classes": [c.to_dict() for c in self.classes],
            "pairs": [
                {
                    "a": p.a,
                    "b": p.b,
                    "a_name": names[p.a],
                    "b_name": names[p.b],
                    "soft_confusion": p.soft_confusion,
                    "errors": p.errors,
                    **({} if self.causal is None else {"causal": _tested(tested, p)}),
                }
                for p in self.pairs
            ],
            "lowest_accuracy": [
                {"class": c.index, "name": c.name, "n": c.n, "accuracy": c.accuracy}
                for c in self.lowest_accuracy()
            ],
        }
        if self.causal is not None:
            made = {key: value for key, value in self.causal.to_dict().items() if key != "pairs"}
            data["causal"] = {**made, "written": None if written is None else written.to_dict()}
        return data

    def _repr_html_(self) -> str:
        """In a notebook: the classes and the top confusion pairs (with the causal test's held-out errors)."""
        from fclens.report.notebook import atlas_html

        return atlas_html(self)


def _tested(tested: dict[tuple[int, int], Any], pair: Pair) -> dict[str, Any] | None:
    test = tested.get((pair.a, pair.b))
    return None if test is None else test.to_dict()


def atlas(
    scan: Scan | str | os.PathLike[str], top_k: int = ATLAS_TOP_K, *, causal: bool = False, seed: int = SEED
) -> Atlas:
    """The atlas of a scan (a :class:`fclens.Scan` or its directory), ``top_k`` images per list.

    ``causal=True`` also tests whether the neurons named for the top pairs cause them
    (:func:`fclens.causal_test` on the top 20 pairs whose target class has labelled images, the rows
    split by ``seed``): it needs a labelled scan with features. A scan that did not finish gives the
    atlas of the rows it holds, with an ``IncompleteScanWarning``.
    """
    at_least("top_k", top_k, 1)
    scan = as_scan(scan)
    if causal:
        scan.require_features()
    if not scan.dataset.files:
        raise FclensError(f"{scan.directory} holds no rows yet; rerun the scan that writes it to finish it")
    scan.warn_if_incomplete()
    names = scan.class_names
    totals = _Totals()
    curves = set(_CURVES) <= set(scan.dataset.schema.names)
    beats = _Beats()
    for table in scan.batches(_AGGREGATED + (_CURVES if curves else []), ok_only=True):
        # fclens writes a target for every ok row; a table from another writer may lack them
        if table.column("target").null_count:
            missing = f"{scan.directory} has images with no target class, which a scan always writes"
            raise FclensError(
                f"{missing}: rescan the images with fclens.scan",
                cli=f"{missing}: rescan them with fclens scan",
            )
        totals.add(table)
        if curves:
            beats.add(table)
    summary = totals.finish(names)
    shares = beats.shares({k: summary.discriminative(k) for k in summary.classes}) if curves else {}
    confusing = {k: summary.confusing(k) for k in summary.classes}
    top_rival = {k: found[0].index for k, found in summary.rivals.items() if found}
    picks = _Picks(top_k)
    for table in scan.batches(_PICKED, ok_only=True):
        picks.add(table, confusing, top_rival)
    kept = {which: picks.grouped(which, scan.locate) for which in ("confusing", "rival")}
    classes = [
        ClassAtlas(
            index=k,
            name=names[k],
            n=row["n"],
            accuracy=summary.accuracy(k),
            rivals=summary.rivals.get(k, []),
            nodes=summary.nodes.get(k, []),
            confusing=confusing[k],
            confusing_images=kept["confusing"].get(k, []),
            rival_images=kept["rival"].get(k, []),
            baselines=shares.get(k),
        )
        for k, row in sorted(summary.classes.items())
    ]
    found = Atlas(scan, classes, summary.pairs, top_k)
    return found if not causal else replace(found, causal=_causal_test(found, seed))


def _causal_test(found: Atlas, seed: int) -> CausalTable:
    """The causal test of the atlas's top pairs whose target class has labelled images."""
    from fclens.edits.causal import TOP_PAIRS, causal_test

    if not found.labelled:
        raise FclensError(
            f"the causal test judges each edit against the images' labels and {found.directory} has none; "
            "scan a folder of class-name subfolders or a list with a label column"
        )
    labelled = {c.index for c in found.classes if c.accuracy is not None}
    pairs = [(p.a, p.b) for p in found.pairs[:TOP_PAIRS] if p.a in labelled]
    return causal_test(found.scan.read_features(), pairs, seed=seed)


def read_maps(scan: Scan | str | os.PathLike[str], indices: set[int]) -> dict[int, dict[str, Any]]:
    """Deprecated: :meth:`fclens.Scan.maps` (maps shaped (n, h, w) and (h, w))."""
    deprecation.warn("fclens.atlasing.read_maps(scan, indices)", "scan.maps(indices)")
    return {
        index: {
            "node_path": maps.node_path,
            "node_map": maps.node_map.reshape(len(maps.node_map), -1),
            "contrast_map": maps.contrast_map.reshape(-1),
        }
        for index, maps in as_scan(scan).maps(indices).items()
    }


# --- the passes ----------------------------------------------------------------------------------------


def _flat(table: pa.Table, lists: list[str], keep: list[str]) -> pa.Table:
    """The list columns ``lists`` flattened together (one row per element), with the row's ``keep`` columns."""
    parents = pc.list_parent_indices(table.column(lists[0]))
    columns = {name: pc.list_flatten(table.column(name)) for name in lists}
    columns.update({name: pc.take(table.column(name), parents) for name in keep})
    return pa.table(columns)


def _merge(accumulated: pa.Table | None, partial: pa.Table, keys: list[str], sums: list[str]) -> pa.Table:
    """Running sums per key: the accumulator stays one row per key, whatever the number of shards."""
    if accumulated is not None:
        partial = pa.concat_tables(
            [accumulated, partial.select(accumulated.column_names).cast(accumulated.schema)]
        )
    merged = partial.group_by(keys).aggregate([(name, "sum") for name in sums])
    return pa.table({**{key: merged[key] for key in keys}, **{name: merged[f"{name}_sum"] for name in sums}})


class _Totals:
    """Running per-class counts, per-(class, rival) probability sums and errors, per-(class, node) sums."""

    def __init__(self) -> None:
        self.classes: pa.Table | None = None
        self.soft: pa.Table | None = None
        self.errors: pa.Table | None = None
        self.nodes: pa.Table | None = None

    def add(self, table: pa.Table) -> None:
        label, pred, target = table.column("label"), table.column("pred"), table.column("target")
        ones = pa.array(np.ones(table.num_rows, np.int64))
        per_class = pa.table(
            {
                "k": target,
                "n": ones,
                "labelled": pc.cast(pc.is_valid(label), pa.int64()),
                "correct": pc.cast(pc.fill_null(pc.equal(pred, label), False), pa.int64()),
            }
        )
        self.classes = _merge(self.classes, per_class, ["k"], ["n", "labelled", "correct"])

        top = _flat(table, ["top5", "top5_prob"], ["target"])
        top = top.filter(pc.not_equal(top.column("top5"), top.column("target")))
        probability = pc.cast(top.column("top5_prob"), pa.float64())
        self.soft = _merge(
            self.soft,
            pa.table({"k": top.column("target"), "b": top.column("top5"), "p": probability}),
            ["k", "b"],
            ["p"],
        )

        wrong = pc.fill_null(pc.not_equal(pred, label), False)
        errors = pa.table({"k": target, "b": pred, "e": ones}).filter(wrong)
        self.errors = _merge(self.errors, errors, ["k", "b"], ["e"])

        nodes = _flat(table, ["node_path", "node_size", "node_contribution"], ["target"])
        contribution = pc.cast(nodes.column("node_contribution"), pa.float64())
        nodes = pa.table(
            {
                "k": nodes.column("target"),
                "path": nodes.column("node_path"),
                "size": pc.cast(nodes.column("node_size"), pa.int64()),
                "c": contribution,
                "m": pa.array(np.ones(len(contribution), np.int64)),
            }
        )
        self.nodes = _merge(self.nodes, nodes, ["k", "path", "size"], ["c", "m"])

    def finish(self, names: list[str]) -> _Summary:
        """Rank in pyarrow; only the kept rivals, pairs and node means become Python objects."""
        classes = {row["k"]: row for row in self.classes.to_pylist()}
        soft = self.soft.join(self.classes, "k").join(self.errors, ["k", "b"], join_type="left outer")
        labelled = pc.greater(soft.column("labelled"), 0)
        soft = pa.table(
            {
                "k": soft.column("k"),
                "b": soft.column("b"),
                "soft": pc.divide(soft.column("p"), pc.cast(soft.column("n"), pa.float64())),
                "errors": pc.if_else(labelled, pc.fill_null(soft.column("e"), 0), None),
            }
        )
        ranked = _first_per_key(
            soft, [("soft", "descending"), ("errors", "descending"), ("b", "ascending")], MAX_RIVALS
        )
        rivals: dict[int, list[Rival]] = {}
        for row in ranked.to_pylist():
            rivals.setdefault(row["k"], []).append(
                Rival(row["b"], names[row["b"]], row["soft"], row["errors"])
            )
        order = [("soft", "descending"), ("k", "ascending"), ("b", "ascending")]
        pairs = [
            Pair(row["k"], row["b"], row["soft"], row["errors"])
            for row in soft.sort_by(order).slice(0, MAX_PAIRS).to_pylist()
        ]
        nodes: dict[int, list[NodeMean]] = {}
        for row in self.nodes.sort_by([("k", "ascending"), ("path", "ascending")]).to_pylist():
            # "+" sorts before "-": string order is pre-order
            nodes.setdefault(row["k"], []).append(NodeMean(row["path"], row["size"], row["c"] / row["m"]))
        return _Summary(classes, rivals, pairs, nodes)


def _first_per_key(table: pa.Table, order: list[tuple[str, str]], count: int) -> pa.Table:
    """The first ``count`` rows of each ``k`` in ``order``, sorted by ``k`` then ``order``."""
    table = table.sort_by([("k", "ascending"), *order])
    keys = table.column("k").to_numpy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    rank = np.arange(len(keys)) - np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    return table.filter(pa.array(rank < count))


@dataclass
class _Summary:
    """The totals as plain values: per class its count row, its ranked rivals and its node means; the pairs."""

    classes: dict[int, dict[str, int]]
    rivals: dict[int, list[Rival]]
    pairs: list[Pair]
    nodes: dict[int, list[NodeMean]]

    def accuracy(self, k: int) -> float | None:
        row = self.classes[k]
        return None if row["labelled"] == 0 else row["correct"] / row["labelled"]

    def confusing(self, k: int) -> str | None:
        """The end of the all-− chain: the longest path of "-" only (None for a tree never split)."""
        return self._end(k, "-")

    def discriminative(self, k: int) -> str | None:
        """The end of the all-+ chain: the longest path of "+" only (None for a tree never split)."""
        return self._end(k, "+")

    def _end(self, k: int, sign: str) -> str | None:
        chain = [node.path for node in self.nodes.get(k, []) if node.path and set(node.path) == {sign}]
        return max(chain, key=len) if chain else None


class _Beats:
    """Per (class, node): how many images' curves of the node beat the root's and the random map's, and the
    sums of its AUCs."""

    VERDICTS = (
        "deletes_faster_than_class",
        "deletes_faster_than_random",
        "keeps_longer_than_class",
        "keeps_longer_than_random",
    )
    AUCS = ("deletion_auc", "insertion_auc")

    def __init__(self) -> None:
        self.sums: pa.Table | None = None

    def add(self, table: pa.Table) -> None:
        table = table.filter(pc.is_valid(table.column("random_deletion_auc")))
        if not table.num_rows:
            return
        roots = {
            curve: pc.list_element(table.column(f"node_{curve}_auc"), 0)
            for curve in ("deletion", "insertion")
        }
        table = table.append_column("root_deletion", roots["deletion"]).append_column(
            "root_insertion", roots["insertion"]
        )
        keep = ["target", "random_deletion_auc", "random_insertion_auc", "root_deletion", "root_insertion"]
        nodes = _flat(table, ["node_path", "node_deletion_auc", "node_insertion_auc"], keep)
        nodes = nodes.filter(pc.is_valid(nodes.column("node_deletion_auc")))
        deletion, insertion = nodes.column("node_deletion_auc"), nodes.column("node_insertion_auc")
        beaten = {
            "deletes_faster_than_class": pc.less(deletion, nodes.column("root_deletion")),
            "deletes_faster_than_random": pc.less(deletion, nodes.column("random_deletion_auc")),
            "keeps_longer_than_class": pc.greater(insertion, nodes.column("root_insertion")),
            "keeps_longer_than_random": pc.greater(insertion, nodes.column("random_insertion_auc")),
        }
        partial = pa.table(
            {
                "k": pc.cast(nodes.column("target"), pa.int64()),
                "path": nodes.column("node_path"),
                "n": pa.array(np.ones(nodes.num_rows, np.int64)),
                **{name: pc.cast(pc.fill_null(value, False), pa.int64()) for name, value in beaten.items()},
                **{name: pc.cast(nodes.column(f"node_{name}"), pa.float64()) for name in self.AUCS},
            }
        )
        self.sums = _merge(self.sums, partial, ["k", "path"], ["n", *self.VERDICTS, *self.AUCS])

    def shares(self, ends: dict[int, str | None]) -> dict[int, BaselineShares]:
        """For each class whose discriminative end (``ends``) has curves, the shares of its images."""
        found = {}
        for row in [] if self.sums is None else self.sums.to_pylist():
            if row["path"] and ends.get(row["k"]) == row["path"]:
                n = row["n"]
                found[row["k"]] = BaselineShares(
                    row["path"], n, *(row[name] / n for name in (*self.VERDICTS, *self.AUCS))
                )
        return found


class _Picks:
    """The ``top_k`` strongest images per class for each list, kept as small tables across shards."""

    def __init__(self, top_k: int) -> None:
        self.top_k = top_k
        self.kept: dict[str, pa.Table | None] = {"confusing": None, "rival": None}

    def add(self, table: pa.Table, confusing: dict[int, str | None], top_rival: dict[int, int]) -> None:
        ends = [(k, path) for k, path in confusing.items() if path is not None]
        if ends:
            wanted = pa.table(
                {
                    "target": pa.array([k for k, _ in ends], pa.int32()),
                    "node_path": [path for _, path in ends],
                }
            )
            nodes = _flat(table, ["node_path", "node_contribution"], ["target", "index", "path"])
            nodes = nodes.join(wanted, ["target", "node_path"], join_type="inner")
            strength = pc.negate(pc.cast(nodes.column("node_contribution"), pa.float64()))
            self._keep(
                "confusing",
                nodes.column("target"),
                nodes.column("index"),
                nodes.column("path"),
                strength,
                None,
            )
        if top_rival:
            pairs = pa.table(
                {
                    "target": pa.array(list(top_rival), pa.int32()),
                    "rival": pa.array(list(top_rival.values()), pa.int32()),
                }
            )
            rows = table.select(["target", "rival", "index", "path", "logit_target", "logit_rival"])
            rows = rows.join(pairs, ["target", "rival"], join_type="inner")
            strength = pc.subtract(
                pc.cast(rows.column("logit_rival"), pa.float64()),
                pc.cast(rows.column("logit_target"), pa.float64()),
            )
            self._keep(
                "rival",
                rows.column("target"),
                rows.column("index"),
                rows.column("path"),
                strength,
                rows.column("rival"),
            )

    def _keep(self, which: str, k: Any, index: Any, path: Any, strength: Any, rival: Any) -> None:
        rows = pa.table(
            {
                "k": pc.cast(k, pa.int64()),
                "index": index,
                "path": path,
                "strength": strength,
                "rival": pc.cast(rival, pa.int64())
                if rival is not None
                else pa.nulls(len(index), pa.int64()),
            }
        )
        if self.kept[which] is not None:
            rows = pa.concat_tables([self.kept[which], rows])
        self.kept[which] = _first_per_key(
            rows, [("strength", "descending"), ("index", "ascending")], self.top_k
        )

    def grouped(self, which: str, locate: Callable[[str], Path]) -> dict[int, list[AtlasImage]]:
        """The kept images of one list by class, strongest first, each where ``locate`` finds its file."""
        grouped: dict[int, list[AtlasImage]] = {}
        for row in [] if self.kept[which] is None else self.kept[which].to_pylist():
            grouped.setdefault(row["k"], []).append(
                AtlasImage(row["index"], str(locate(row["path"])), row["strength"], row["rival"])
            )
        return grouped
