"""A model's final-layer weights into a folder: the ALD fit as CSV and JSON, its figures, its page.

What ``fclens weights`` writes, as a library call::

    done = fclens.report.weights_to_folder(model, "weights/", plots=True, html=True)
    print(done.fit.to_text(model.name)); done.files

Every file is written whole (atomically); Ctrl-C keeps those finished and says how many.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from fclens.ald import ALDFit, fit_ald
from fclens.io import atomic_write_text, safe_name
from fclens.models import Classifier
from fclens.report.figures import fit_plot, r2_histogram, save_figure, slope_intercept
from fclens.report.html import default_classes, weights_page
from fclens.runs import progress_bar

__all__ = ["WeightsFolder", "weights_to_folder"]

PAGE = "weights.html"


@dataclass(frozen=True)
class WeightsFolder:
    """What :func:`weights_to_folder` wrote: ``summary`` is what ``summary.json`` holds."""

    fit: ALDFit
    summary: dict[str, Any]
    files: list[Path]
    page: Path | None


def weights_to_folder(
    model: Classifier,
    out: str | os.PathLike[str],
    *,
    fit: ALDFit | None = None,
    plots: bool = False,
    html: bool = False,
    classes: Sequence[int | str] | Literal["all"] | None = None,
    progress: bool = True,
) -> WeightsFolder:
    """Fit an ALD to ``model``'s final layer (unless ``fit`` is given) and write what it says into ``out``.

    Always ``ald.csv`` (a row per class) and ``summary.json`` (the model's figures); with ``plots`` the
    R² histogram, the slope/intercept scatter and the author's fit plot of each of ``classes`` under
    ``classes/``; with ``html`` the self-contained page ``weights.html``. ``classes``: indices or
    names, "all", or None for :func:`~fclens.report.default_classes` (12 spread over the R² ranking).
    ``progress``: a bar on stderr when it is a terminal.
    """
    out = Path(out)
    weight = model.head.weight.cpu()
    fit = fit_ald(weight) if fit is None else fit
    summary = {
        "model": model.name,
        "classes": int(weight.shape[0]),
        "inputs": int(weight.shape[1]),
        **fit.summary(),
    }
    fit.to_csv(out / "ald.csv", class_names=model.class_names)
    files = [
        out / "ald.csv",
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False)),
    ]
    page = None
    if not (plots or html):
        return WeightsFolder(fit, summary, files, page)
    chosen = _classes(model, fit, classes)
    names = model.class_names
    drawings: dict[str, Callable[[], Any]] = {}
    if plots:
        drawings["r2-histogram.png"] = partial(r2_histogram, fit)
        drawings["slope-intercept.png"] = partial(slope_intercept, fit, names)
        for k in chosen:
            drawings[f"classes/{k:04d}-{safe_name(names[k])}.png"] = partial(fit_plot, weight[k], names[k])
    with progress_bar(len(drawings) + int(html), enabled=progress, desc="weights", unit="file") as bar:
        try:
            for name, draw in drawings.items():
                files.append(save_figure(draw(), out / name))
                bar.update()
            if html:  # the page draws its classes' plots again, inside
                page = atomic_write_text(
                    out / PAGE, weights_page(model.name, fit, names, weight, classes_to_plot=chosen)
                )
                files.append(page)
                bar.update()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"interrupted: {len(files)} files kept in {out}, each whole; rerun to write them all"
            ) from None
    return WeightsFolder(fit, summary, files, page)


def _classes(
    model: Classifier, fit: ALDFit, classes: Sequence[int | str] | Literal["all"] | None
) -> list[int]:
    """The classes to draw: all, the caller's (indices or names), or the page's spread over the R² ranking."""
    if classes == "all":
        return list(range(model.num_classes))
    if classes is None:
        return default_classes(fit)
    return [model.class_index(c) for c in classes]
