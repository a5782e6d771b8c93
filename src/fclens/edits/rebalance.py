"""Every imbalanced-data method on one training scan, judged on another scan of the same model.

``rebalance(scan, evaluation)`` re-fits or adjusts the final layer on the training scan's stored
features (:data:`fclens.edits.REBALANCE_METHODS`) and evaluates each layer, and the scanned one, on the
evaluation scan with :func:`fclens.evaluate`: the rows that choose an edit never judge it. ``fclens rebalance`` prints its table and writes its files.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc

from fclens import deprecation
from fclens.edits import POST_HOC, PRIOR_TAU, REBALANCE_DEFAULTS, REBALANCE_METHODS, REFITS
from fclens.edits.evaluate import FEW, MANY, Evaluation, evaluate
from fclens.edits.prior import adjust_layer, class_prior, fit_layer
from fclens.errors import FclensError
from fclens.formatting import percent
from fclens.io import csv_text
from fclens.layer import FinalLayer
from fclens.options import SEED
from fclens.runs import progress_bar
from fclens.scanning.features import class_counts
from fclens.scanning.manifest import head_sha256
from fclens.scanning.reader import Scan, as_scan

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Rebalance", "rebalance", "shared_images"]

SCANNED = "scanned"
"""The row of the layer as scanned: the reference every method is read against."""


@dataclass
class Rebalance:
    """Each method's layer and its figures on the evaluation scan, the scanned layer's first."""

    layers: dict[str, FinalLayer]
    evaluations: dict[str, Evaluation]
    train_counts: np.ndarray
    tau: float
    shared: str | None = None
    """Why the evaluation scan is no fair judge (:func:`shared_images`), or None."""

    def __repr__(self) -> str:
        figures = ", ".join(f"{name} {percent(e.balanced_accuracy)}" for name, e in self.evaluations.items())
        return f"Rebalance(balanced accuracy: {figures}; tau {self.tau})"

    def rows(self) -> list[dict[str, Any]]:
        """One summary row per method (the figures of :meth:`Evaluation.to_dict`, no per-class list)."""
        rows = []
        for name, evaluation in self.evaluations.items():
            row = {key: v for key, v in evaluation.to_dict().items() if key != "per_class_accuracy"}
            fit = self.layers[name].fit
            row["method"] = name
            row["fit_loss"] = None if fit is None else fit.loss
            row["fit_grad_norm"] = None if fit is None else fit.grad_norm
            row["fit_seconds"] = None if fit is None else fit.seconds
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "tau": self.tau,
            "shared_images": self.shared,
            "train_counts": [int(v) for v in self.train_counts],
            "methods": self.rows(),
            "per_class_accuracy": {
                name: evaluation.to_dict()["per_class_accuracy"]
                for name, evaluation in self.evaluations.items()
            },
        }

    def to_csv(self) -> str:
        rows = self.rows()
        return csv_text(rows, list(rows[0]))

    def to_text(self) -> str:
        """The table: method, accuracy, balanced accuracy, many / medium / few (:func:`percent`)."""

        def cell(value: float | None) -> str:
            return "–" if value is None else percent(value)

        heads = ("method", "accuracy", "balanced", "many", "medium", "few")
        lines = [f"{heads[0]:<20}" + "".join(f"{h:>10}" for h in heads[1:])]
        for row in self.rows():
            figures = (row["accuracy"], row["balanced_accuracy"], row["many"], row["medium"], row["few"])
            lines.append(f"{row['method']:<20}" + "".join(f"{cell(v):>10}" for v in figures))
        judged = next(iter(self.evaluations.values())).confusion.sum(axis=1) > 0
        counts = self.train_counts[judged]
        lines.append(
            f"many / medium / few: classes with > {MANY}, {FEW}–{MANY}, < {FEW} training images "
            f"({(counts > MANY).sum()}, {((counts >= FEW) & (counts <= MANY)).sum()}, {(counts < FEW).sum()} "
            "of the classes evaluated)"
        )
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        """In a notebook: each method's figures on the evaluation scan and the per-class figure."""
        from fclens.report.notebook import rebalance_html

        return rebalance_html(self)

    def plot(self) -> Figure:
        """Per-class accuracy on the evaluation scan against training images, one line per method."""
        from fclens.report.notebook import rebalance_figure

        return rebalance_figure(self)


def rebalance(
    scan: Scan | str | os.PathLike[str] | None = None,
    evaluation: Scan | str | os.PathLike[str] | None = None,
    methods: Sequence[str] = REBALANCE_DEFAULTS,
    tau: float = PRIOR_TAU,
    prior: Any = "labels",
    seed: int = SEED,
    *,
    progress: bool = True,
    **old: Any,
) -> Rebalance:
    """Each of ``methods`` fitted or adjusted on the training ``scan`` and evaluated on the ``evaluation``
    scan (see the module).

    ``prior``: the training prior, ``"labels"`` (the training scan's labelled rows) or C numbers.
    ``tau`` applies to pg-prior, logit-adjust-loss, logit-adjust and tau-norm. ``progress``: a bar on
    stderr, method by method, when it is a terminal.
    """
    deprecation.keyword(old, "train", "scan")
    scan = old.pop("scan", scan)
    if old:
        raise FclensError(f"rebalance() got unknown keywords {', '.join(sorted(old))}")
    if scan is None or evaluation is None:
        raise FclensError(
            "rebalance needs a training scan and an evaluation scan: rebalance(scan, evaluation)"
        )
    train, evaluation = as_scan(scan), as_scan(evaluation)
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in REBALANCE_METHODS]
    if unknown or not methods:
        raise FclensError(
            f"unknown method {unknown[0] if unknown else ''!r}; choose from {', '.join(REBALANCE_METHODS)}"
        )
    _check_pair(train, evaluation)
    for scan in (train, evaluation):
        scan.warn_if_incomplete()
    shared = shared_images(train, evaluation)
    if shared is not None:
        warnings.warn(shared, stacklevel=2)
    counts = class_counts(train)
    priors = class_prior(prior, len(train.class_names), train)
    layers: dict[str, FinalLayer] = {SCANNED: train.layer}
    with progress_bar(len(methods), enabled=progress, desc="rebalance", unit="method") as bar:
        for method in methods:
            if method in POST_HOC:
                layers[method] = adjust_layer(train.layer, method, prior=priors, tau=tau)
            else:
                fitted = fit_layer(train, REFITS[method], prior=priors, tau=tau, seed=seed)
                layers[method] = FinalLayer(fitted.weight, fitted.bias, method=method, fit=fitted.fit)
            bar.update()
    judged = evaluate(evaluation, list(layers.values()), train_counts=counts)  # one read of the features
    evaluations = dict(zip(layers, judged, strict=True))
    return Rebalance(layers, evaluations, counts, float(tau), shared)


def shared_images(train: Scan, evaluation: Scan) -> str | None:
    """Why ``evaluation`` cannot judge layers fitted on ``train``, in one sentence, or None: it is the same
    scan, it holds image files the training scan holds, or both scan one torch Dataset (same type and
    size: its items, "<dataset 3>", name no file to compare). A re-fit judged on the images it was
    fitted on reads near 100% and says nothing."""
    judged = (
        "re-fits judged on the images they were fitted on read near 100%; judge on a scan of other images"
    )
    if train.directory.resolve() == evaluation.directory.resolve():
        return f"the evaluation scan is the training scan ({train.directory}): {judged}"
    source = train.manifest.source
    if source.startswith("dataset:") and source == evaluation.manifest.source:
        return f"both scans are of one dataset ({source}), so they may hold the same images: {judged}"
    paths = [scan.rows(["path"], ok_only=True).column("path") for scan in (train, evaluation)]
    files = [pc.filter(path, pc.invert(pc.starts_with(path, "<"))) for path in paths]  # not "<dataset 3>"
    shared = pc.sum(pc.is_in(files[1], value_set=files[0].unique())).as_py() or 0
    if shared:
        return (
            f"{shared} of the evaluation scan's {len(paths[1])} images are in the training scan too "
            f"({train.directory}): {judged}"
        )
    return None


def _check_pair(train: Scan, evaluation: Scan) -> None:
    """Both scans have features and labels, and are scans of the same final layer."""
    for scan, role in ((train, "training"), (evaluation, "evaluation")):
        if not scan.has_features:
            problem = f"the {role} scan {scan.directory} has no features"
            raise FclensError(
                f"{problem}; rescan it with features=True",
                cli=f"{problem}; rescan it with fclens scan --features",
            )
        if class_counts(scan).sum() == 0:
            problem = f"the {role} scan {scan.directory} has no labelled rows; rescan a labelled source"
            raise FclensError(
                f"{problem} (class-name subfolders or a label column) with labels='auto'",
                cli=f"{problem} (class-name subfolders or a label column) with --labels auto",
            )
    if head_sha256(train.weight, train.bias) != head_sha256(evaluation.weight, evaluation.bias):
        raise FclensError(
            f"{evaluation.directory} is a scan of another model than {train.directory} (their final layers "
            "differ); scan both with the same model"
        )
