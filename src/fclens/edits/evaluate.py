"""The one evaluator of any final layer: its figures on the pooled features a scan stored.

``evaluate_head(scan, head)`` runs logits = z Wᵀ + b over a scan's ``ok`` rows (``fclens scan
--features``), a bounded batch at a time, and counts, against the labels: accuracy, balanced accuracy
(the mean of per-class recall), per-class accuracy, the confusion matrix (row = label), the soft
confusion (mean p(j | images of k)) and, given the training set's class counts, the many / medium / few
split of the long-tail literature (> 100, 20–100, < 20 training images). The stored z are float16, so
the scanned layer's top-1 on them can differ from the scan's ``pred`` (computed from float32) where two
logits nearly tie; judge edits against the scanned layer evaluated here, not against ``pred``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from fclens.edits.layer import as_final_layer, open_scan
from fclens.errors import FclensError

if TYPE_CHECKING:
    from fclens.scanning.store import Scan

__all__ = ["FEW", "MANY", "HeadEvaluation", "class_counts", "evaluate_head", "feature_batches"]

MANY = 100
"""A class with more than this many training images is a "many-shot" class."""
FEW = 20
"""One with fewer is "few-shot"; between the two (inclusive), "medium"."""


def feature_batches(
    scan: Scan, labelled: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(index, z, label) of the scan's ``ok`` rows, a bounded batch at a time: int64 (n,), float32
    (n, D), int64 (n,) with −1 for no label. ``labelled`` keeps the labelled rows only."""
    if not scan.has_features:
        raise FclensError(f"{scan.directory} was scanned without features; rescan it with --features")
    classes = len(scan.class_names)
    for table in scan.batches(["index", "label", "features"], ok_only=True):
        label = table.column("label").to_numpy(zero_copy_only=False)
        label = np.where(np.isnan(label.astype(np.float64)), -1, label).astype(np.int64)
        if (label >= classes).any():
            raise FclensError(f"{scan.directory} has labels beyond its {classes} classes")
        column = table.column("features").combine_chunks()
        z = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float32)
        index = table.column("index").to_numpy()
        if labelled and (label < 0).any():
            keep = label >= 0
            index, z, label = index[keep], z[keep], label[keep]
        if len(label):
            yield index, z, label


def class_counts(scan: Scan | str | os.PathLike[str]) -> np.ndarray:
    """How many labelled ``ok`` rows each class has in a scan: (C,) int64."""
    scan = open_scan(scan)
    labels = scan.rows(["label"], ok_only=True).column("label").drop_null()
    values = labels.to_numpy() if isinstance(labels, pa.Array) else labels.combine_chunks().to_numpy()
    return np.bincount(values.astype(np.int64), minlength=len(scan.class_names))[: len(scan.class_names)]


@dataclass
class HeadEvaluation:
    """A final layer's figures on a scan's labelled rows (NaN where a figure has no rows to count).

    ``confusion[k, j]`` counts images of class k predicted as j (the errors k→j off the diagonal);
    ``soft_confusion[k, j]`` is the mean probability of j over images of k. ``index`` and ``pred`` are
    every ``ok`` row's position in the source and top-1 under this layer, labelled or not, by index.
    """

    method: str
    n_images: int
    n_labelled: int
    accuracy: float
    balanced_accuracy: float
    per_class_accuracy: np.ndarray
    confusion: np.ndarray
    soft_confusion: np.ndarray
    index: np.ndarray
    pred: np.ndarray
    train_counts: np.ndarray | None = None
    many: float = float("nan")
    medium: float = float("nan")
    few: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The summary figures (not the matrices) as JSON-ready values; NaN becomes None."""

        def number(value: float) -> float | None:
            return None if np.isnan(value) else float(value)

        return {
            "method": self.method,
            "n_images": self.n_images,
            "n_labelled": self.n_labelled,
            "accuracy": number(self.accuracy),
            "balanced_accuracy": number(self.balanced_accuracy),
            "many": number(self.many),
            "medium": number(self.medium),
            "few": number(self.few),
            "per_class_accuracy": [number(v) for v in self.per_class_accuracy],
        }


def evaluate_head(
    scan: Scan | str | os.PathLike[str],
    head: Any,
    train_counts: Any = None,
    device: str | torch.device | None = None,
) -> HeadEvaluation:
    """``head``'s figures on ``scan``'s stored features (see the module's docstring).

    ``head``: a :class:`FinalLayer`, a loaded model (its final layer), a scan (the layer it scanned) or
    (weight, bias). ``train_counts``: the training images per class, (C,) numbers or a training scan
    (its labelled rows are counted), for the many / medium / few split (NaN without it).
    """
    scan = open_scan(scan)
    layer = as_final_layer(head)
    classes = len(scan.class_names)
    if tuple(layer.weight.shape) != scan.weight.shape:
        raise FclensError(
            f"the final layer is {layer.num_classes}×{layer.num_features}; the scanned one is "
            f"{scan.weight.shape[0]}×{scan.weight.shape[1]}"
        )
    counts = None if train_counts is None else _counts(train_counts, classes)
    dev = torch.device(device or "cpu")
    weight, bias = layer.weight.to(dev), layer.bias.to(dev)
    confusion = torch.zeros(classes * classes, dtype=torch.int64, device=dev)
    soft = torch.zeros(classes, classes, dtype=torch.float64, device=dev)
    indices, preds = [], []
    with torch.inference_mode():
        for index, z, label in feature_batches(scan):
            logits = torch.addmm(bias, torch.from_numpy(z).to(dev), weight.T)
            pred = logits.argmax(dim=1)
            indices.append(index)
            preds.append(pred.cpu().numpy())
            y = torch.from_numpy(label).to(dev)
            known = y >= 0
            if not bool(known.all()):
                logits, pred, y = logits[known], pred[known], y[known]
            confusion += torch.bincount(y * classes + pred, minlength=classes * classes)
            # summed per batch in float32 (C×C), across batches in float64
            soft += torch.zeros_like(soft, dtype=logits.dtype).index_add_(0, y, torch.softmax(logits, 1))
    index = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    order = np.argsort(index, kind="stable")
    matrix = confusion.reshape(classes, classes).cpu().numpy()
    rows = matrix.sum(axis=1)
    n_labelled = int(rows.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = np.where(rows > 0, np.diag(matrix) / rows, np.nan)
        soft_confusion = soft.cpu().numpy() / rows[:, None]
    evaluation = HeadEvaluation(
        method=layer.method,
        n_images=len(index),
        n_labelled=n_labelled,
        accuracy=float(np.trace(matrix) / n_labelled) if n_labelled else float("nan"),
        balanced_accuracy=_mean(per_class),
        per_class_accuracy=per_class,
        confusion=matrix,
        soft_confusion=soft_confusion,
        index=index[order],
        pred=(np.concatenate(preds) if preds else np.zeros(0, np.int64))[order],
        train_counts=counts,
    )
    if counts is not None:
        evaluation.many = _mean(per_class[counts > MANY])
        evaluation.medium = _mean(per_class[(counts >= FEW) & (counts <= MANY)])
        evaluation.few = _mean(per_class[counts < FEW])
    return evaluation


def _counts(given: Any, classes: int) -> np.ndarray:
    """Training images per class from (C,) numbers or a training scan (or its directory)."""
    from fclens.scanning.store import Scan

    counts = class_counts(given) if isinstance(given, (Scan, str, os.PathLike)) else given
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    if counts.shape != (classes,):
        raise FclensError(f"the training counts have {counts.size} numbers; the scan has {classes} classes")
    return counts


def _mean(values: np.ndarray) -> float:
    """The mean of the numbers that are not NaN; NaN when there are none."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")
