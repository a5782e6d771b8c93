"""Writing one explanation to a folder: an overlay PNG per node and map kind, the chain figure, JSON.

Every file is written atomically and ``explanation.json`` comes last (an old one is removed first): its
presence means the image is finished, so a batch that is interrupted and rerun can skip exactly the
images that have it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from fclens.io import atomic_write_bytes, atomic_write_text
from fclens.report.figures import chain_figure, image_bytes, node_caption, overlay, save_figure

if TYPE_CHECKING:
    from fclens.explain import Explanation

__all__ = ["DONE_MARKER", "node_filename", "node_slug", "save_explanation"]

DONE_MARKER = "explanation.json"
"""Written last by :func:`save_explanation`; a folder holding it is a finished explanation."""

_PATH = re.compile(r"[+-]*")


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


def save_explanation(explanation: Explanation, directory: str | Path) -> list[Path]:
    """Write ``explanation`` into ``directory`` (created if needed); return the paths in writing order.

    Files: ``node-<slug>.png`` per node (primary map kind; ``node-<slug>-<kind>.png`` for each other
    kind computed), ``chain.png`` (:func:`~fclens.report.figures.chain_figure`), then ``explanation.json``.
    """
    directory = Path(directory)
    # Rewriting a finished folder: it stops counting as finished until the new marker lands.
    (directory / DONE_MARKER).unlink(missing_ok=True)
    written: list[Path] = []
    for node in explanation.nodes:
        for kind in explanation.map_kinds:
            name = node_filename(node.path, None if kind == explanation.primary else kind)
            picture = overlay(explanation.image, node.shown(kind), node_caption(node, kind))
            written.append(atomic_write_bytes(directory / name, image_bytes(picture)))
    written.append(save_figure(chain_figure(explanation), directory / "chain.png"))
    written.append(atomic_write_text(directory / DONE_MARKER, explanation.to_json()))
    return written
