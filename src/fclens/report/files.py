"""Writing one explanation to a folder: the chain figure, the maps as numbers, and the JSON record.

A folder costs a few hundred kilobytes, not megabytes: the chain figure is a JPEG, the maps are float16
arrays in ``maps.npz`` (not lists of floats in the JSON), and the per-node overlay PNGs are written only
when asked for. Every file is written atomically and ``explanation.json`` comes last (an old one is
removed first): its presence means the image is finished, so a batch that is interrupted and rerun can
skip exactly the images that have it.

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

from fclens.io import atomic_write_bytes, atomic_write_text
from fclens.report.figures import chain_figure, image_bytes, node_caption, overlay

if TYPE_CHECKING:
    from fclens.explaining import Explanation

__all__ = [
    "CHAIN_FILE",
    "DONE_MARKER",
    "MAPS_FILE",
    "node_filename",
    "node_slug",
    "remove_stale",
    "save_explanation",
]

DONE_MARKER = "explanation.json"
"""Written last by :func:`save_explanation`; a folder holding it is a finished explanation."""
MAPS_FILE = "maps.npz"
"""Every node's maps: one (nodes, h, w) array per map kind, nodes in the order of the JSON's ``nodes``."""
CHAIN_FILE = "chain.jpg"
"""The chain figure (:func:`~fclens.report.figures.chain_figure`) of the primary map kind."""
CHAIN_QUALITY = 80
"""JPEG quality of the chain figure: 180–280 KB for thirteen 224-pixel photos, even of gravel."""

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


def save_explanation(explanation: Explanation, directory: str | Path, overlays: bool = False) -> list[Path]:
    """Write ``explanation`` into ``directory`` (created if needed); return the paths in writing order.

    Files: ``chain.jpg``, ``maps.npz`` (:data:`MAPS_FILE`), with ``overlays`` a ``node-<slug>.png`` per
    node (primary map kind; ``node-<slug>-<kind>.png`` for each other kind computed), then
    ``explanation.json``: :meth:`~fclens.explaining.Explanation.to_dict` with the nodes' maps replaced by
    ``"maps": {"file": "maps.npz", "shape": [nodes, h, w]}``.
    """
    directory = Path(directory)
    # Rewriting a finished folder: it stops counting as finished until the new marker lands.
    (directory / DONE_MARKER).unlink(missing_ok=True)
    written: list[Path] = []
    if overlays:
        for node in explanation.nodes:
            for kind in explanation.map_kinds:
                name = node_filename(node.path, None if kind == explanation.primary else kind)
                picture = overlay(explanation.image, node.shown(kind), node_caption(node, kind))
                written.append(atomic_write_bytes(directory / name, image_bytes(picture)))
    chain = image_bytes(chain_figure(explanation), "JPEG", CHAIN_QUALITY)
    written.append(atomic_write_bytes(directory / CHAIN_FILE, chain))
    arrays = _compact_maps(explanation)
    written.append(atomic_write_bytes(directory / MAPS_FILE, _npz(arrays)))
    record = explanation.to_dict()
    for node in record["nodes"]:
        del node["maps"]
    record["maps"] = {"file": MAPS_FILE, "shape": list(next(iter(arrays.values())).shape)}
    written.append(atomic_write_text(directory / DONE_MARKER, json.dumps(record, allow_nan=False)))
    return written


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
