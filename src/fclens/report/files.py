"""Writing one explanation to a folder, and reading it back: the picture, the chain figure, the maps as
numbers, and the JSON record.

A folder costs a few hundred kilobytes, not megabytes: the picture and the chain figure are JPEGs, the
maps are float16 arrays in ``maps.npz`` (not lists of floats in the JSON), and the per-node overlay PNGs
are written only when asked for. Every file is written atomically and ``explanation.json`` comes last (an
old one is removed first): its presence means the image is finished, so a batch that is interrupted and
rerun can skip exactly the images that have it. :func:`load_explanation` reads a folder back, so that a
page or the overlays can be drawn later without running the model again.

A command that writes a fixed set of files into a folder (``fclens prune``, ``fclens atlas``) clears
what an earlier run left there and this run did not write (:func:`remove_stale`), so that the folder
never holds two runs' answers at once.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from fclens.errors import FclensError
from fclens.explaining import Contrast, Explanation, NodeExplanation, Prediction
from fclens.io import atomic_write_bytes, atomic_write_text
from fclens.report.figures import chain_figure, image_bytes, node_caption, overlay
from fclens.tree import SplitTree, class_trees

if TYPE_CHECKING:
    from fclens.models import Classifier

__all__ = [
    "CHAIN_FILE",
    "DONE_MARKER",
    "IMAGE_FILE",
    "MAPS_FILE",
    "load_explanation",
    "node_filename",
    "node_slug",
    "read_record",
    "remove_stale",
    "save_explanation",
    "save_overlays",
]

DONE_MARKER = "explanation.json"
"""Written last by :func:`save_explanation`; a folder holding it is a finished explanation."""
MAPS_FILE = "maps.npz"
"""Every node's maps: one (nodes, h, w) array per map kind, nodes in the order of the JSON's ``nodes``."""
CHAIN_FILE = "chain.jpg"
"""The chain figure (:func:`~fclens.report.figures.chain_figure`) of the primary map kind."""
CHAIN_QUALITY = 80
"""JPEG quality of the chain figure: 180–280 KB for thirteen 224-pixel photos, even of gravel."""
IMAGE_FILE = "image.jpg"
"""The picture as the model sees it (resized and cropped), behind every overlay drawn from the folder."""
IMAGE_QUALITY = 92
"""JPEG quality of the picture: 20–40 KB at 224 pixels, and overlays drawn on it look as on the original."""

_PATH = re.compile(r"[+-]*")
_GENERATOR = b'<meta name="generator" content="fclens">'
"""Every fclens page carries this in its head (templates/base.html.j2)."""
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def node_slug(path: str) -> str:
    """A tree path as a file-name fragment: "" → "root", "+" → "p", "-" → "m" ("+-" → "pm")."""
    if not _PATH.fullmatch(path):
        raise ValueError(f"a node path holds only '+' and '-', got {path!r}")
    return path.replace("+", "p").replace("-", "m") or "root"


def node_filename(path: str, kind: str | None = None) -> str:
    """``node-pp.png`` for the primary map, ``node-pp-KIND.png`` for another map kind.

    ``KIND`` keeps letters, digits and hyphens; "+" becomes "p" ("smooth-gradcam++" → "smooth-gradcampp"),
    anything else "_", so every name is safe on every file system.
    """
    suffix = "" if kind is None else "-" + re.sub(r"[^A-Za-z0-9-]", "_", kind.replace("+", "p"))
    return f"node-{node_slug(path)}{suffix}.png"


def save_explanation(
    explanation: Explanation,
    directory: str | Path,
    overlays: bool = False,
    made_with: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``explanation`` into ``directory`` (created if needed); return the paths in writing order.

    Files: ``image.jpg`` (:data:`IMAGE_FILE`), with ``overlays`` a ``node-<slug>.png`` per node (primary
    map kind; ``node-<slug>-<kind>.png`` for each other kind computed), ``chain.jpg``, ``maps.npz``
    (:data:`MAPS_FILE`), then ``explanation.json``: :meth:`~fclens.explaining.Explanation.to_dict` with
    the nodes' maps replaced by ``"maps": {"file": "maps.npz", "shape": [nodes, h, w]}``, and
    ``made_with`` (what made it: model, options, class; :func:`fclens.report.explain_to_folder` compares
    it on a rerun) under ``"made_with"`` when given.
    """
    directory = Path(directory)
    # Rewriting a finished folder: it stops counting as finished until the new marker lands.
    (directory / DONE_MARKER).unlink(missing_ok=True)
    picture = image_bytes(explanation.image, "JPEG", IMAGE_QUALITY)
    written = [atomic_write_bytes(directory / IMAGE_FILE, picture)]
    if overlays:
        written += save_overlays(explanation, directory)
    chain = image_bytes(chain_figure(explanation), "JPEG", CHAIN_QUALITY)
    written.append(atomic_write_bytes(directory / CHAIN_FILE, chain))
    arrays = _compact_maps(explanation)
    written.append(atomic_write_bytes(directory / MAPS_FILE, _npz(arrays)))
    record = explanation.to_dict()
    for node in record["nodes"]:
        del node["maps"]
    record["maps"] = {"file": MAPS_FILE, "shape": list(next(iter(arrays.values())).shape)}
    if made_with is not None:
        record["made_with"] = made_with
    written.append(atomic_write_text(directory / DONE_MARKER, json.dumps(record, allow_nan=False)))
    return written


def save_overlays(explanation: Explanation, directory: str | Path) -> list[Path]:
    """Write a captioned overlay PNG per node and map kind into ``directory`` (:func:`node_filename`)."""
    written = []
    for node in explanation.nodes:
        for kind in explanation.map_kinds:
            name = node_filename(node.path, None if kind == explanation.primary else kind)
            picture = overlay(explanation.image, node.shown(kind), node_caption(node, kind))
            written.append(atomic_write_bytes(Path(directory) / name, image_bytes(picture)))
    return written


def read_record(directory: str | Path) -> dict[str, Any] | None:
    """The ``explanation.json`` of a finished folder; None where there is none or it cannot be read
    (a folder that is not finished, whatever it holds)."""
    try:
        record = json.loads((Path(directory) / DONE_MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def load_explanation(directory: str | Path, classifier: Classifier) -> Explanation:
    """The explanation :func:`save_explanation` wrote into ``directory``, read back without the model's
    forward pass: numbers from the JSON, maps from ``maps.npz`` (float16 precision), the picture from
    ``image.jpg``.

    The JSON keeps each node's statistics, not its weights, so the split trees are split again from
    ``classifier``'s final layer: it must be the layer that made the explanation (one line of
    FclensError where the trees differ). A folder without ``image.jpg`` (written before fclens kept
    it) cannot be read back: explain the image again.
    """
    directory = Path(directory)
    record = read_record(directory)
    missing = [name for name in (DONE_MARKER, IMAGE_FILE, MAPS_FILE) if not (directory / name).is_file()]
    if record is None or missing:
        lacks = ", ".join(missing) or f"a readable {DONE_MARKER}"
        raise FclensError(
            f"{directory} holds no finished explanation to read back (it lacks {lacks}); "
            "explain the image again (--force)"
        )
    with np.load(directory / MAPS_FILE) as arrays:
        maps = {kind: torch.from_numpy(arrays[kind].astype(np.float32)) for kind in record["map_kinds"]}
    with Image.open(directory / IMAGE_FILE) as picture:
        image = picture.convert("RGB")
    weight = classifier.head.weight.detach().float().cpu().numpy()

    def tree(k: int) -> SplitTree:
        (split,) = class_trees(weight[[k]], [k], record["min_size"], record["mode"])
        return split

    target = Prediction(**record["target"])
    target_tree = tree(target.index)
    if [node.path for node in target_tree.nodes] != [node["path"] for node in record["nodes"]]:
        raise FclensError(
            f"{directory} was explained with another final layer than {classifier.name}'s; "
            "load it with the model that made it"
        )
    nodes = [
        _node(values, {kind: maps[kind][m] for kind in maps}) for m, values in enumerate(record["nodes"])
    ]
    contrast = record.get("contrast")
    if contrast is not None:

        def end(values: dict[str, Any] | None) -> NodeExplanation | None:
            if values is None:
                return None
            return _node(values, {kind: torch.tensor(heat) for kind, heat in values["maps"].items()})

        rival = Prediction(**contrast["rival"])
        contrast = Contrast(
            rival=rival,
            map=torch.tensor(contrast["map"], dtype=torch.float32),
            gap=contrast["gap"],
            neurons=np.asarray(contrast["neurons"], dtype=np.int64),
            evidence=np.asarray(contrast["evidence"], dtype=np.float64),
            rival_tree=tree(rival.index),
            rival_discriminative=end(contrast["rival_discriminative"]),
            rival_confusing=end(contrast["rival_confusing"]),
        )
    return Explanation(
        source=record["source"],
        image=image,
        model_name=record["model"],
        top5=[Prediction(**p) for p in record["top5"]],
        target=target,
        tree=target_tree,
        nodes=nodes,
        map_kinds=list(record["map_kinds"]),
        primary=record["primary"],
        seed=record["seed"],
        feature_layer=record["feature_layer"],
        class_deletion_auc=record["class_deletion_auc"],
        class_insertion_auc=record["class_insertion_auc"],
        contrast=contrast,
    )


def _node(values: dict[str, Any], maps: dict[str, torch.Tensor]) -> NodeExplanation:
    """A node of the JSON (:meth:`~fclens.explaining.NodeExplanation.to_dict`) with its maps."""
    return NodeExplanation(
        path=values["path"],
        size=values["size"],
        indices=np.asarray(values["indices"], dtype=np.int64),
        mean=values["mean"],
        min=values["min"],
        max=values["max"],
        r2=float("nan") if values["r2"] is None else values["r2"],
        maps=maps,
        score=values["score"],
        contribution=values["contribution"],
        deletion_auc=values["deletion_auc"],
        insertion_auc=values["insertion_auc"],
    )


def _compact_maps(explanation: Explanation) -> dict[str, np.ndarray]:
    """Map kind → (nodes, h, w) array, float16 (three significant digits; float32 for a kind whose
    values exceed float16's range)."""
    arrays = {}
    for kind in explanation.map_kinds:
        values = np.stack([node.maps[kind].numpy() for node in explanation.nodes]).astype(np.float32)
        finite = values[np.isfinite(values)]
        fits = finite.size == 0 or float(np.abs(finite).max()) <= _FLOAT16_MAX
        arrays[kind] = values.astype(np.float16) if fits else values
    return arrays


def _npz(arrays: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def remove_stale(folder: str | Path, written: list[Path], patterns: tuple[str, ...]) -> list[Path]:
    """Delete the files of ``folder`` that match ``patterns``, were made by fclens, and are not in
    ``written`` (this run's); return them.

    A page counts as fclens's if it carries fclens's generator tag, a model file if its metadata names
    what it was edited (or pruned) from; any other file (the user's own ``index.html``, say) is left alone.
    """
    keep = {Path(path).resolve() for path in written}
    removed = []
    for pattern in patterns:
        for path in sorted(Path(folder).glob(pattern)):
            if path.resolve() not in keep and path.is_file() and _made_by_fclens(path):
                path.unlink()
                removed.append(path)
    return removed


def _made_by_fclens(path: Path) -> bool:
    if path.suffix == ".html":
        with open(path, "rb") as file:
            return _GENERATOR in file.read(4096)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="numpy") as file:
                tags = file.metadata() or {}
                return "fclens_edited_from" in tags or "fclens_pruned_from" in tags  # every fclens model
        except (SafetensorError, OSError):  # not a safetensors file after all: not ours to delete
            return False
    return False
