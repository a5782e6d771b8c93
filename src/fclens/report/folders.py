"""Explain many image files into a folder: one sub-folder per image, a summary, optionally a report.

What ``fclens explain`` does, as a library call, to the standard of a scan:

- each image's ``explanation.json`` records what made it (``made_with``: the model, its weights and
  final layer, the options, the class asked for, the target layer). A rerun skips the images finished
  the same way; if any image of the request was explained another way, it refuses before any work, in
  one line naming each difference ("contrast: None then, 'runner-up' now"), as a scan does: an
  explanation can have cost many forwards (``curves``, every node scored), and only ``force`` (which
  redoes every image) may replace it.
- an image that cannot be read is reported and skipped without stopping the others;
- Ctrl-C or SIGTERM keeps every finished image, writes the summary and the report of what is finished,
  and raises KeyboardInterrupt saying how many images were kept; a rerun continues;
- ``summary.csv`` and the report are built from what is on disk for every image of the request,
  finished earlier or now, so a rerun never empties them; the report is a page per
  :data:`~fclens.report.html.PAGE_SIZE` images beyond that many, with an index.

Only one batch of explanations is held in memory at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fclens import __version__
from fclens.errors import FclensError
from fclens.explaining import explain, uses_seed
from fclens.formatting import differences
from fclens.images import ImageError, load_image
from fclens.io import atomic_write_text, csv_text, safe_name
from fclens.layer import FinalLayer
from fclens.models import Classifier
from fclens.options import RUNNER_UP, Options
from fclens.report.files import (
    load_explanation,
    node_filename,
    read_record,
    remove_stale,
    save_explanation,
    save_overlays,
)
from fclens.report.html import report_page_name, report_pages
from fclens.runs import progress_bar, sigterm_interrupts
from fclens.scanning.manifest import file_sha256, head_sha256

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

_REPORT_FILES = (report_page_name(0), "report-*.html")
_DIGESTS = ("weights_sha256", "head_sha256")


@dataclass
class ExplainedFolder:
    """What :func:`explain_to_folder` wrote: a summary row per image, the summary file and the report
    (``page`` is its first page, ``report.html``; ``pages`` every page)."""

    rows: list[dict[str, Any]]
    summary: Path
    page: Path | None
    pages: list[Path] = field(default_factory=list)

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
    target: int | str | None = None,
    target_layer: str | None = None,
    names: dict[Path, str] | None = None,
    overlays: bool = False,
    html: bool = False,
    force: bool = False,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> ExplainedFolder:
    """Explain each image file of ``paths`` into ``out`` (see the module's docstring).

    ``names`` gives an image the name it is shown under (a shipped sample is "sample:chelsea", not a
    path in site-packages). ``options``, ``target`` and ``target_layer`` are :func:`fclens.explain`'s.
    ``overlays`` adds a PNG per node and map kind (drawn from the folder for an image done earlier);
    ``html`` writes the report. ``progress``: a bar on stderr when it is a terminal. ``on_row`` is called
    with each image's summary row as soon as the image is finished (or found finished, or skipped).
    """
    out, paths = Path(out), [Path(path) for path in paths]
    names = names or {}
    target = None if target is None else model.class_index(target)
    if options.contrast not in (None, RUNNER_UP):  # "285" and "Egyptian cat" are one request
        options = options.but(contrast=model.class_index(options.contrast))
    if not uses_seed(options):
        options = options.but(seed=None)  # as explain() does: nothing random, no seed to differ
    made_with = _made_with(model, options, target, target_layer)
    folders = [output_folder(out, path) for path in paths]
    rows = [None] * len(paths) if force else _finished_rows(out, folders, made_with, model.class_names)
    earlier = sum(row is not None for row in rows)
    todo: list[tuple[int, Path, Any]] = []
    bar = progress_bar(
        len(paths), earlier, enabled=progress and earlier < len(paths), desc="explain", unit="img"
    )

    def finish(position: int, row: dict[str, Any]) -> None:
        rows[position] = row
        if on_row is not None:
            with tqdm.external_write_mode():  # a line printed above the bar, not through it
                on_row(row)

    def flush() -> None:
        if not todo:
            return
        images = [image for _, _, image in todo]
        explanations = explain(model, images, target, options=options, target_layer=target_layer)
        for (position, path, _), explanation in zip(todo, explanations, strict=True):
            explanation.source = names.get(path, str(path))
            save_explanation(explanation, folders[position], overlays=overlays, made_with=made_with)
            finish(position, _row(explanation.to_dict(), folders[position]))
            bar.update(1)
        todo.clear()

    interrupted = False
    with sigterm_interrupts():
        try:
            for position, (path, folder, row) in enumerate(zip(paths, folders, list(rows), strict=True)):
                if row is not None:  # finished earlier, the same way
                    if overlays:
                        _complete_overlays(folder, model)
                    finish(position, row)
                    continue
                try:
                    todo.append((position, path, load_image(path)))
                except ImageError as error:
                    finish(
                        position,
                        {"source": names.get(path, str(path)), "status": "skipped", "reason": error.reason},
                    )
                    bar.update(1)
                if len(todo) == options.batch_size:
                    flush()
            flush()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        kept = [row for row in rows if row is not None]  # every image finished, earlier or now
        explained = sum(row["status"] != "skipped" for row in kept)
        line = f"{explained} of {len(paths)} images kept in {out}"
        try:
            summary = atomic_write_text(out / "summary.csv", csv_text(kept, SUMMARY_COLUMNS))
            pages = _write_report(out, model, kept) if html else []
            remove_stale(out, pages, _REPORT_FILES)  # pages of an earlier run would contradict this one
        except KeyboardInterrupt:  # a second Ctrl-C while writing: every image is kept all the same
            raise KeyboardInterrupt(
                f"interrupted: {line}; the report may be behind; rerun to continue"
            ) from None
    if interrupted:
        raise KeyboardInterrupt(f"interrupted: {line}; rerun to continue")
    return ExplainedFolder(kept, summary, out / report_page_name(0) if html else None, pages)


def _write_report(out: Path, model: Classifier, rows: list[dict[str, Any]]) -> list[Path]:
    """The report of every explained image of ``rows``, each read back from its folder."""
    folders = [Path(row["output"]) for row in rows if row["status"] != "skipped"]
    skipped = [(row["source"], row["reason"]) for row in rows if row["status"] == "skipped"]
    pages = report_pages(len(folders), lambda i: load_explanation(folders[i], model), skipped)
    return [atomic_write_text(out / name, page) for name, page in pages]


def _complete_overlays(folder: Path, model: Classifier) -> None:
    """Draw the overlay PNGs an image done earlier lacks (it was explained without ``overlays``)."""
    record = read_record(folder)
    if record is None:  # removed since it was found finished: nothing to draw from
        return
    kinds, primary = record["map_kinds"], record["primary"]
    wanted = [
        node_filename(node["path"], None if kind == primary else kind)
        for node in record["nodes"]
        for kind in kinds
    ]
    if not all((folder / name).is_file() for name in wanted):
        save_overlays(load_explanation(folder, model), folder)


def _made_with(
    model: Classifier, options: Options, target: int | None, target_layer: str | None
) -> dict[str, Any]:
    """What makes an explanation: recorded in each ``explanation.json``, compared on a rerun."""
    layer = FinalLayer.of(model)
    return {
        "fclens": __version__,
        "model": model.name,
        "weights_sha256": None if model.weights is None else file_sha256(model.weights),
        "head_sha256": head_sha256(layer.weight.numpy(), layer.bias.numpy()),
        "class": target,
        "target_layer": target_layer,
        "options": options.to_dict(),
    }


def _finished_rows(
    out: Path, folders: list[Path], made_with: dict[str, Any], class_names: Sequence[str]
) -> list[dict[str, Any] | None]:
    """The summary row of each image finished earlier ("done earlier"), None for the others; one line of
    FclensError naming each way an image was made otherwise. Only the rows are kept, not the records."""
    rows: list[dict[str, Any] | None] = []
    differences: dict[str, None] = {}  # in order of first appearance, each once
    count = 0
    for folder in folders:
        record = read_record(folder)
        if record is None:
            rows.append(None)
            continue
        found = _differences(record.get("made_with"), made_with, class_names)
        count += bool(found)
        differences.update(dict.fromkeys(found))
        rows.append({**_row(record, folder), "status": "done earlier"})
    if count:
        images = "1 image" if count == 1 else f"{count} images"
        raise FclensError(
            f"{out} holds {images} of this request explained another way ({'; '.join(differences)}); "
            f"give the same options, another --out, or --force to redo {'it' if count == 1 else 'them'}"
        )
    return rows


def _differences(then: Any, now: dict[str, Any], class_names: Sequence[str]) -> list[str]:
    """Each way ``then`` (an explanation's ``made_with``) differs from ``now``: "min_size: 20 then, 10 now"."""
    if not isinstance(then, dict):
        return ["explained by an earlier fclens, which did not record how"]

    def flat(made: dict[str, Any]) -> dict[str, Any]:
        return {
            **{key: value for key, value in made.items() if key not in ("fclens", "options")},
            **(made.get("options") or {}),
        }

    def shown(key: str, value: Any) -> str:
        if key == "class" and value is None:
            return "the predicted class"
        if key == "class" and isinstance(value, int) and 0 <= value < len(class_names):
            return f"{value} ({class_names[value]})"
        if key in _DIGESTS and isinstance(value, str):
            return f"{value[:12]}…"
        return repr(value)

    return differences(flat(then), flat(now), shown)


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
