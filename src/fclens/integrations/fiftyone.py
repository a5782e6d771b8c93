"""A scan's findings as fields of a FiftyOne dataset, and the atlas's confusion pairs as its saved views.

FiftyOne's users asked to see saliency "as overlay or next to images … to see in detail what is causing
the model to get it wrong" (voxel51/fiftyone#1231), maps "in a separate ``Heatmap`` field … toggle each
map on/off" (#1680), and confusion views that keep only the off-diagonal cells (#2574). A scan knows,
per image, the rival class, where the image argues for it and which neurons carry the class, so
:func:`to_fiftyone` adds them to a dataset as fields, the FiftyOne way (as
``fiftyone.brain.compute_mistakenness`` does), and saves one view per confusion pair of the atlas::

    dataset = fclens.to_fiftyone("val-scan/", nodes=["discriminative", "confusing"])
    fo.launch_app(dataset)

FiftyOne is imported only when called (``pip install 'fclens[fiftyone]'``). The fields are listed in
README.md ("FiftyOne"); :func:`fiftyone_samples` builds the same samples without a database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from fclens.errors import FclensError

if TYPE_CHECKING:
    import fiftyone as fo

    from fclens.scanning.reader import Scan

__all__ = ["LABEL_FIELD", "RUN_KEY", "TERMINALS", "fiftyone_samples", "heatmap", "node_field", "to_fiftyone"]

LABEL_FIELD = "ground_truth"
"""Where the scan's labels go: FiftyOne's default ``gt_field``. A dataset's own field of that name is kept."""
RUN_KEY = "fclens"
"""The run :func:`to_fiftyone` records: ``dataset.get_run_info("fclens").config`` says which scan wrote
which fields and views."""
TERMINALS = {"discriminative": "+", "confusing": "-"}
"""Nodes named by their role: the terminal node of the all-+ (all-−) chain of each image's target tree,
the class's most discriminative (most confusing) neurons (PAPER.md §3)."""

_COLUMNS = [
    "index", "path", "label_name", "pred_name", "prob", "target_name", "prob_target", "logit_target",
    "rival_name", "prob_rival", "logit_rival", "node_path", "node_contribution", "contrast_map",
]  # fmt: skip
_MATRICES = ("contrast_map", "node_map", "features")


def to_fiftyone(
    scan: Scan | str | os.PathLike[str],
    dataset: fo.Dataset | None = None,
    *,
    name: str | None = None,
    nodes: Sequence[str] = (),
    pairs: int = 10,
) -> fo.Dataset:
    """Add a scan's findings to ``dataset`` (a new one named ``name`` when None) and return it.

    Samples are matched by ``filepath`` (the scan's ``path``); an image the dataset lacks is added; the
    dataset's other fields stay, and so does a ``ground_truth`` that fclens did not write. ``nodes``:
    node maps to add as one ``Heatmap`` field each, by path (``"+"``, ``"--"``, ``""`` for the root) or
    role (``"discriminative"``, ``"confusing"``: each image's terminal nodes). ``pairs``: the atlas's
    top confusion pairs to save as views, the images of class a whose rival is b with the most evidence
    for b first. A rerun replaces what the last one wrote, removing its fields and views that this one
    does not write.
    """
    scan, nodes = _scan(scan), _nodes(nodes)  # a wrong argument is said before FiftyOne is needed
    fo = _fiftyone()
    if dataset is None:
        dataset = _new_dataset(fo, name)
    elif not isinstance(dataset, fo.Dataset):
        raise FclensError(f"dataset must be a fiftyone.Dataset or None, got {type(dataset).__name__}")
    earlier = dataset.get_run_info(RUN_KEY).config.serialize() if dataset.has_run(RUN_KEY) else {}
    theirs = dataset.has_sample_field(LABEL_FIELD) and LABEL_FIELD not in earlier.get("fields", [])
    dataset.merge_samples(
        fiftyone_samples(scan, nodes),
        key_field="filepath",
        omit_fields=[LABEL_FIELD] if theirs else None,
        merge_lists=False,  # a rerun replaces the node lists instead of appending to them
        progress=False,
    )
    fields = [field for field in _fields(scan, nodes) if not (theirs and field == LABEL_FIELD)]
    stale = [field for field in earlier.get("fields", []) if field not in fields]
    dataset.delete_sample_fields([field for field in stale if dataset.has_sample_field(field)])
    views = _save_pair_views(dataset, scan, pairs)
    for view in earlier.get("views", []):
        if view not in views and dataset.has_saved_view(view):
            dataset.delete_saved_view(view)
    from fclens import __version__

    config = dataset.init_run(
        scan=str(scan.directory.resolve()),
        model=scan.manifest.model.get("name"),
        schema_version=scan.manifest.schema_version,
        fclens_version=__version__,
        fields=[field for field in fields if dataset.has_sample_field(field)],
        nodes=list(nodes),
        views=views,
    )
    dataset.register_run(RUN_KEY, config, overwrite=True)
    return dataset


def fiftyone_samples(scan: Scan | str | os.PathLike[str], nodes: Sequence[str] = ()) -> Iterator[fo.Sample]:
    """The scan's ``ok`` rows as FiftyOne samples, in no set order, without a database: what
    :func:`to_fiftyone` merges into a dataset. ``logits`` (the scanned layer on the stored features)
    and ``fclens_features`` need a scan made with features."""
    import torch

    scan, nodes = _scan(scan), _nodes(nodes)  # a wrong argument is said before FiftyOne is needed
    fo = _fiftyone()
    layer = scan.layer if scan.has_features else None
    columns = [*_COLUMNS, *(["node_map"] if nodes else []), *(["features"] if layer else [])]
    for table in scan.batches(columns, ok_only=True):
        rows = table.drop_columns([c for c in _MATRICES if c in table.column_names]).to_pylist()
        contrast = _matrix(table.column("contrast_map"))
        z = _matrix(table.column("features")) if layer else None
        logits = None if z is None else layer.logits(torch.from_numpy(z)).numpy()
        node_maps = table.column("node_map") if nodes else None
        for i, row in enumerate(rows):
            sample = fo.Sample(filepath=str(scan.locate(row["path"]).absolute()))
            if row["label_name"] is not None:
                sample[LABEL_FIELD] = fo.Classification(label=row["label_name"])
            sample["fclens_index"] = row["index"]
            sample["fclens_pred"] = fo.Classification(
                label=row["pred_name"], confidence=row["prob"], logits=None if logits is None else logits[i]
            )
            for role in ("target", "rival"):
                sample[f"fclens_{role}"] = fo.Classification(
                    label=row[f"{role}_name"], confidence=row[f"prob_{role}"], logit=row[f"logit_{role}"]
                )
            sample["fclens_gap"] = row["logit_rival"] - row["logit_target"]
            sample["fclens_contrast"] = heatmap(contrast[i].reshape(scan.grid))
            sample["fclens_node_path"] = row["node_path"]
            sample["fclens_node_contribution"] = row["node_contribution"]
            if z is not None:
                sample["fclens_features"] = z[i]
            if node_maps is not None:
                maps = _matrix(node_maps[i].values).reshape(-1, *scan.grid)
                for node in nodes:
                    position = _node_position(node, row["node_path"])
                    sample[node_field(node)] = None if position is None else heatmap(maps[position])
            yield sample


def heatmap(values: np.ndarray) -> fo.Heatmap:
    """A map as FiftyOne draws it: float32 (its App cannot decode float16) with a ``range`` that is
    symmetric about 0 for a signed map, so that 0 sits mid-scale, and [0, max] for one that is not."""
    import fiftyone as fo

    values = np.asarray(values, dtype=np.float32)
    top = float(np.abs(values).max()) or 1.0
    return fo.Heatmap(map=values, range=[-top if values.min() < 0 else 0.0, top])


def node_field(node: str) -> str:
    """The field of a node's maps: ``fclens_discriminative``, ``fclens_confusing``, ``fclens_node_root``
    (path ""), ``fclens_node_plus_minus`` (path "+-"), …"""
    if node in TERMINALS:
        return f"fclens_{node}"
    return "fclens_node_" + ("_".join("plus" if sign == "+" else "minus" for sign in node) or "root")


def _fields(scan: Scan, nodes: Sequence[str]) -> list[str]:
    """Every field :func:`fiftyone_samples` can write for ``scan``."""
    fields = [LABEL_FIELD, "fclens_index", "fclens_pred", "fclens_target", "fclens_rival", "fclens_gap"]
    fields += ["fclens_contrast", "fclens_node_path", "fclens_node_contribution"]
    return fields + (["fclens_features"] if scan.has_features else []) + [node_field(n) for n in nodes]


def _node_position(node: str, paths: list[str]) -> int | None:
    """Where ``node`` (a path or a role) is in an image's ``node_path``; None where its tree lacks it."""
    if node in TERMINALS:
        chain = [path for path in paths if path and set(path) == {TERMINALS[node]}]
        return paths.index(max(chain, key=len)) if chain else None
    return paths.index(node) if node in paths else None


def _save_pair_views(dataset: fo.Dataset, scan: Scan, count: int) -> list[str]:
    """One saved view per top confusion pair (a, b) of the atlas; their names."""
    if count <= 0:
        return []
    from fiftyone import ViewField as F

    from fclens.atlasing import atlas

    names, saved = scan.class_names, []
    for pair in atlas(scan).pairs[:count]:
        a, b = names[pair.a], names[pair.b]
        view = dataset.match((F("fclens_target.label") == a) & (F("fclens_rival.label") == b))
        name = f"fclens {a} ({pair.a}) vs {b} ({pair.b})"
        description = (
            f"images of {a} whose rival is {b}, most evidence for {b} first (fclens_gap); "
            f"soft confusion {pair.soft_confusion:.3g}"
        )
        dataset.save_view(
            name, view.sort_by("fclens_gap", reverse=True), description=description, overwrite=True
        )
        saved.append(name)
    return saved


def _matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A list column of equal-length float lists as an (n, k) float32 array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), -1)


def _scan(scan: Any) -> Scan:
    """The scan, opened; one whose images are files (a torch Dataset's items are not)."""
    from fclens.scanning.reader import as_scan

    scan = as_scan(scan)
    first = scan.rows(["path"], ok_only=True).column("path")[:1].to_pylist()
    if first and first[0].startswith("<"):
        raise FclensError(
            f"{scan.directory} was scanned from a Python Dataset, whose images are not files FiftyOne can "
            "show; scan a folder or a list of files"
        )
    return scan


def _nodes(nodes: Any) -> tuple[str, ...]:
    """``nodes`` checked: each a path of "+" and "-" or a role of :data:`TERMINALS`."""
    nodes = (nodes,) if isinstance(nodes, str) else nodes
    if not isinstance(nodes, Sequence) or any(not isinstance(node, str) for node in nodes):
        raise FclensError(f"nodes must be a list of node paths or roles, got {nodes!r}")
    for node in nodes:
        if node not in TERMINALS and set(node) - {"+", "-"}:
            raise FclensError(
                f'unknown node {node!r}: name a node by its path ("", "+", "--", …) or its role '
                '("discriminative", "confusing")'
            )
    return tuple(dict.fromkeys(nodes))


def _new_dataset(fo: Any, name: str | None) -> fo.Dataset:
    """A new dataset; a name in use or a database that does not start is one line saying what to do."""
    from fiftyone.core.service import ServiceException
    from pymongo.errors import ConnectionFailure

    if name is not None and not isinstance(name, str):
        raise FclensError(f"name must be a string or None, got {type(name).__name__}")
    try:
        if name is not None and fo.dataset_exists(name):
            raise FclensError(
                f"a FiftyOne dataset named {name!r} exists already: add to it with "
                f"to_fiftyone(scan, fo.load_dataset({name!r})), or give another name"
            )
        return fo.Dataset(name)
    except (ServiceException, ConnectionFailure) as error:
        raise FclensError(
            f"FiftyOne's database did not start ({type(error).__name__}: {error}); point FiftyOne at a "
            'MongoDB of your own with FIFTYONE_DATABASE_URI=mongodb://HOST:PORT (README, "FiftyOne")'
        ) from None


def _fiftyone() -> Any:
    try:
        import fiftyone
    except ImportError:
        raise FclensError("to_fiftyone needs FiftyOne: pip install 'fclens[fiftyone]'") from None
    return fiftyone
