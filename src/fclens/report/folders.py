"""Explain many image files into a folder: one sub-folder per image, a summary, optionally one page.

What ``fclens explain`` does, as a library call: images already explained (their ``explanation.json``
exists) are skipped unless ``force``, an image that cannot be read is reported and skipped without
stopping the others, and only the explanations of the current batch are held in memory (the page keeps
those it shows). ``summary.csv`` has one row per image, in the order given.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fclens.explaining import explain
from fclens.images import ImageError, load_image
from fclens.io import atomic_write_text, csv_text, safe_name
from fclens.models import Classifier
from fclens.options import Options
from fclens.report.files import remove_stale, save_explanation
from fclens.report.html import explanations_page

__all__ = ["SUMMARY_COLUMNS", "ExplainedFolder", "explain_to_folder", "output_folder"]

SUMMARY_COLUMNS = (
    "source",
    "status",
    "reason",
    "prediction",
    "probability",
    "target",
    "discriminative_score",
    "confusing_score",
    "output",
)
"""The columns of ``summary.csv``; ``status`` is ok, done earlier, or skipped (with its ``reason``)."""


@dataclass
class ExplainedFolder:
    """What :func:`explain_to_folder` wrote: a summary row per image, the summary file and the page."""

    rows: list[dict[str, Any]]
    summary: Path
    page: Path | None

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] == "skipped"]


def output_folder(out: Path, path: Path) -> Path:
    """One folder per image, named after it; a short hash of the full path keeps namesakes apart."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return out / f"{safe_name(path.stem)}-{digest}"


def explain_to_folder(
    model: Classifier,
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    options: Options,
    target: int | None = None,
    target_layer: str | None = None,
    names: dict[Path, str] | None = None,
    overlays: bool = False,
    html: bool = False,
    force: bool = False,
    progress: bool = True,
) -> ExplainedFolder:
    """Explain each image file of ``paths`` into ``out`` (see the module's docstring).

    ``names`` gives an image the name it is shown under (a shipped sample is "sample:chelsea", not a
    path in site-packages). ``options``, ``target`` and ``target_layer`` are :func:`fclens.explain`'s.
    """
    from tqdm import tqdm

    out, paths = Path(out), [Path(path) for path in paths]
    names = names or {}
    rows: list[dict[str, Any]] = [{} for _ in paths]
    shown = []  # only for the page: a long run must not hold every explanation
    todo: list[tuple[int, Path, Any]] = []
    bar = tqdm(total=len(paths), desc="images", unit="image", disable=None if progress else True)

    def flush() -> None:
        if not todo:
            return
        images = [image for _, _, image in todo]
        explanations = explain(model, images, target, options=options, target_layer=target_layer)
        for (position, path, _), explanation in zip(todo, explanations, strict=True):
            explanation.source = names.get(path, str(path))
            folder = output_folder(out, path)
            save_explanation(explanation, folder, overlays=overlays)
            rows[position] = _row(explanation.to_dict(), folder)
            if html:
                shown.append(explanation)
        bar.update(len(todo))
        todo.clear()

    for position, path in enumerate(paths):
        folder = output_folder(out, path)
        finished = folder / "explanation.json"
        if not force and finished.is_file():
            rows[position] = {
                **_row(json.loads(finished.read_text("utf-8")), folder),
                "status": "done earlier",
            }
            bar.update(1)
            continue
        try:
            todo.append((position, path, load_image(path)))
        except ImageError as error:
            rows[position] = {
                "source": names.get(path, str(path)),
                "status": "skipped",
                "reason": error.reason,
            }
            bar.update(1)
            continue
        if len(todo) == options.batch_size:
            flush()
    flush()
    bar.close()
    summary = atomic_write_text(out / "summary.csv", csv_text(rows, SUMMARY_COLUMNS))
    page = out / "report.html"
    written = [page] if html else []
    if html:
        skipped = [(row["source"], row["reason"]) for row in rows if row["status"] == "skipped"]
        earlier = [
            (row["source"], f"explained in an earlier run, see {row['output']}; --force puts it on this page")
            for row in rows
            if row["status"] == "done earlier"
        ]
        atomic_write_text(page, explanations_page(shown, skipped + earlier))
    remove_stale(out, written, ("report.html",))  # a page of an earlier run would contradict this one
    return ExplainedFolder(rows, summary, page if html else None)


def _row(explanation: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A summary row from an explanation's JSON form (this run's, or an earlier run's file)."""

    def score(path: str | None) -> float | None:
        return next((node["score"] for node in explanation["nodes"] if node["path"] == path), None)

    return {
        "source": explanation["source"],
        "status": "ok",
        "reason": "",
        "prediction": explanation["prediction"]["name"],
        "probability": round(explanation["prediction"]["probability"], 6),
        "target": explanation["target"]["name"],
        "discriminative_score": score(explanation["discriminative"]),
        "confusing_score": score(explanation["confusing"]),
        "output": str(folder),
    }
