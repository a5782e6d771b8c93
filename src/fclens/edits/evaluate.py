"""The one evaluator of any final layer: its figures on the pooled features a scan stored.

``evaluate_heads(scan, heads)`` runs logits = z Wᵀ + b for every layer over a scan's ``ok`` rows
(``fclens scan --features``), one bounded batch of rows at a time and each batch read once for all the
layers, and counts, against the labels: accuracy, balanced accuracy (the mean of per-class recall),
per-class accuracy, the confusion matrix (row = label), the soft confusion (mean p(j | images of k))
and, given the training set's class counts, the many / medium / few split of the long-tail literature
(> 100, 20–100, < 20 training images). Given a ``reference`` layer it also counts, over every row
labelled or not, the share of images whose top-1 agrees with the reference's and the mean KL(reference
‖ layer): what pruning reports. Every edit of the final layer — a re-fit, a post-hoc adjustment, a
pruning mask, a pair edit — is judged here. :func:`evaluate_logits` is the same count on logits
computed elsewhere (a rank-m edit changes one column of them).

The stored z are float16, so the scanned layer's top-1 on them can differ from the scan's ``pred``
(computed from float32) where two logits nearly tie; judge edits against the scanned layer evaluated
here, not against ``pred``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from fclens.edits.layer import as_final_layer, open_scan
from fclens.errors import FclensError

if TYPE_CHECKING:
    from fclens.scanning.reader import Scan

__all__ = [
    "FEW",
    "MANY",
    "Features",
    "HeadEvaluation",
    "class_counts",
    "evaluate_head",
    "evaluate_heads",
    "evaluate_logits",
    "feature_batches",
    "read_features",
]

MANY = 100
"""A class with more than this many training images is a "many-shot" class."""
FEW = 20
"""One with fewer is "few-shot"; between the two (inclusive), "medium"."""
_CHUNK = 8192
"""Rows per logits product: bounds the memory of a batch's logits (rows × classes × layers)."""


def feature_batches(
    scan: Scan, labelled: bool = False, rows: Any = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(index, z, label) of the scan's ``ok`` rows: int64 (n,), float32 (n, D), int64 (n,) with −1 for
    no label, in batches of ``_CHUNK`` rows (the last one smaller). The shards' batches are joined or
    split to that size: small products run slowly, and one batch's logits must stay bounded.
    ``labelled`` keeps the labelled rows only, ``rows`` (source indices) those rows only."""
    if not scan.has_features:
        raise FclensError(f"{scan.directory} was scanned without features; rescan it with --features")
    classes = len(scan.class_names)
    wanted = None if rows is None else np.asarray(rows, dtype=np.int64)
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    held = 0
    for table in scan.batches(["index", "label", "features"], ok_only=True):
        label = _label_array(table.column("label").to_numpy(zero_copy_only=False), table.num_rows)
        if (label >= classes).any():
            raise FclensError(f"{scan.directory} has labels beyond its {classes} classes")
        column = table.column("features").combine_chunks()
        z = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float32)
        index = table.column("index").to_numpy()
        keep = (label >= 0) if labelled else np.ones(len(label), bool)
        if wanted is not None:
            keep &= np.isin(index, wanted)
        if not keep.all():
            index, z, label = index[keep], z[keep], label[keep]
        pending.append((index, z, label))
        held += len(index)
        while held >= _CHUNK:
            index, z, label = _joined(pending)
            yield index[:_CHUNK], z[:_CHUNK], label[:_CHUNK]
            pending, held = [(index[_CHUNK:], z[_CHUNK:], label[_CHUNK:])], held - _CHUNK
    if held:
        yield _joined(pending)


def _joined(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batches of (index, z, label) as one."""
    index, z, label = (np.concatenate(column) for column in zip(*parts, strict=True))
    return index, z, label


@dataclass(frozen=True)
class Features:
    """A scan's ``ok`` rows held in memory: ``index`` (N,) int64, their positions in the source;
    ``z`` (N, D) float32, the pooled input of the final layer; ``label`` (N,) int64, −1 for none.

    Read once (:func:`read_features`) and evaluate many layers on it, or on a part of it
    (:meth:`select`): N × D × 4 bytes, 256 MB for 50,000 × 1,280."""

    index: np.ndarray
    z: torch.Tensor
    label: torch.Tensor

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def of(cls, z: Any, label: Any = None, index: Any = None) -> Features:
        """From arrays: ``label`` with NaN, None or a negative number for unknown (default: all unknown);
        ``index`` defaults to 0 … N−1."""
        values = torch.as_tensor(np.ascontiguousarray(z, dtype=np.float32))
        if values.ndim != 2:
            raise FclensError(f"features must be (N, D), got shape {tuple(values.shape)}")
        n = values.shape[0]
        known = np.full(n, -1, np.int64) if label is None else _label_array(label, n)
        where = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, np.int64).reshape(-1)
        return cls(where, values, torch.from_numpy(known))

    def select(self, indices: Any) -> Features:
        """The rows whose ``index`` is in ``indices`` (positions in the source), in this order."""
        keep = np.isin(self.index, np.asarray(indices, dtype=np.int64))
        chosen = torch.from_numpy(keep)
        return Features(self.index[keep], self.z[chosen], self.label[chosen])

    def chunks(self) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), _CHUNK):
            end = start + _CHUNK
            yield self.index[start:end], self.z[start:end], self.label[start:end]


def read_features(scan: Scan | str | os.PathLike[str], labelled: bool = False) -> Features:
    """A scan's ``ok`` rows (``labelled``: the labelled ones) read into memory once."""
    scan = open_scan(scan)
    parts = list(feature_batches(scan, labelled=labelled))
    if not parts:
        dim = scan.weight.shape[1]
        return Features(np.zeros(0, np.int64), torch.zeros(0, dim), torch.zeros(0, dtype=torch.int64))
    index, z, label = _joined(parts)
    return Features(index, torch.from_numpy(z), torch.from_numpy(label))


def _label_array(labels: Any, n: int) -> np.ndarray:
    """Labels as int64 with −1 for unknown (None, NaN or negative)."""
    values = np.asarray(labels, dtype=np.float64).reshape(-1)
    if values.shape != (n,):
        raise FclensError(f"{values.size} labels for {n} images")
    return np.where(np.isfinite(values) & (values >= 0), values, -1).astype(np.int64)


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
    every evaluated row's position in the source and top-1 under this layer, labelled or not, by index.
    ``agreement`` (share of top-1 equal to the reference layer's) and ``kl`` (mean KL(reference ‖ this),
    nats) count every evaluated row; NaN without a reference.
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
    agreement: float = float("nan")
    kl: float = float("nan")

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
            "agreement": number(self.agreement),
            "kl": number(self.kl),
            "per_class_accuracy": [number(v) for v in self.per_class_accuracy],
        }


class _Tally:
    """One layer's running counts over batches of logits; :meth:`result` turns them into figures."""

    def __init__(self, classes: int, device: torch.device) -> None:
        self.classes = classes
        self.confusion = torch.zeros(classes * classes, dtype=torch.int64, device=device)
        self.soft = torch.zeros(classes, classes, dtype=torch.float64, device=device)
        self.indices: list[np.ndarray] = []
        self.preds: list[np.ndarray] = []
        self.agree = self.kl = 0.0

    def add(
        self,
        logits: torch.Tensor,
        label: torch.Tensor,
        index: np.ndarray,
        reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Count a batch; ``reference``: the reference layer's (log-probabilities, top-1) on it."""
        pred = logits.argmax(dim=1)
        log_p = torch.log_softmax(logits, dim=1)
        self.indices.append(index)
        self.preds.append(pred.cpu().numpy())
        if reference is not None:
            ref_log_p, ref_top = reference
            self.agree += float((pred == ref_top).sum())
            self.kl += float((ref_log_p.exp() * (ref_log_p - log_p)).sum(dim=1).double().sum())
        known = label >= 0
        if not bool(known.all()):
            log_p, pred, label = log_p[known], pred[known], label[known]
        cells = label * self.classes + pred
        self.confusion.index_put_((cells,), torch.ones_like(cells), accumulate=True)
        # index_put_ with accumulate: 5 ms for 1,024 rows of 1,000 classes where index_add_ took 88 ms
        self.soft.index_put_((label,), log_p.exp().double(), accumulate=True)

    def result(self, method: str, counts: np.ndarray | None, referenced: bool) -> HeadEvaluation:
        index = np.concatenate(self.indices) if self.indices else np.zeros(0, np.int64)
        order = np.argsort(index, kind="stable")
        matrix = self.confusion.reshape(self.classes, self.classes).cpu().numpy()
        rows = matrix.sum(axis=1)
        n_labelled, n = int(rows.sum()), len(index)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_class = np.where(rows > 0, np.diag(matrix) / rows, np.nan)
            soft_confusion = self.soft.cpu().numpy() / rows[:, None]
        evaluation = HeadEvaluation(
            method=method,
            n_images=n,
            n_labelled=n_labelled,
            accuracy=float(np.trace(matrix) / n_labelled) if n_labelled else float("nan"),
            balanced_accuracy=_mean(per_class),
            per_class_accuracy=per_class,
            confusion=matrix,
            soft_confusion=soft_confusion,
            index=index[order],
            pred=(np.concatenate(self.preds) if self.preds else np.zeros(0, np.int64))[order],
            train_counts=counts,
        )
        if referenced and n:
            evaluation.agreement = self.agree / n
            evaluation.kl = max(self.kl / n, 0.0)  # ≥ 0 in exact arithmetic; rounding can dip below
        if counts is not None:
            evaluation.many = _mean(per_class[counts > MANY])
            evaluation.medium = _mean(per_class[(counts >= FEW) & (counts <= MANY)])
            evaluation.few = _mean(per_class[counts < FEW])
        return evaluation


def evaluate_heads(
    source: Scan | Features | str | os.PathLike[str],
    heads: Sequence[Any],
    train_counts: Any = None,
    *,
    rows: Any = None,
    reference: Any = None,
    device: str | torch.device | None = None,
) -> list[HeadEvaluation]:
    """Each of ``heads`` evaluated on ``source``'s features in one pass (see the module's docstring).

    ``source``: a scan, its directory, or :class:`Features` read from one. ``heads``: each a
    :class:`FinalLayer`, a loaded model (its final layer), a scan (the layer it scanned) or (weight,
    bias); layers that share one weight tensor share its product. ``train_counts``: the training images
    per class, (C,) numbers or a training scan, for the many / medium / few split (NaN without it).
    ``rows``: the source indices to evaluate on (default all). ``reference``: a layer to count agreement
    and KL against.
    """
    layers = [as_final_layer(head) for head in heads]
    if not layers:
        raise FclensError("no final layer given to evaluate")
    if isinstance(source, Features):
        expected, what = (layers[0].num_classes, source.z.shape[1]), "the features and the first layer give"
        classes, read = layers[0].num_classes, source
    else:
        read = open_scan(source)
        expected, what = tuple(read.weight.shape), "the scanned one is"
        classes = len(read.class_names)
    ref = None if reference is None else as_final_layer(reference)
    for layer in (*layers, *([] if ref is None else [ref])):
        if tuple(layer.weight.shape) != expected:
            raise FclensError(
                f"the final layer is {layer.num_classes}×{layer.num_features}; {what} "
                f"{expected[0]}×{expected[1]}"
            )
    counts = None if train_counts is None else _counts(train_counts, classes)
    dev = torch.device(device or "cpu")
    weights = {id(layer.weight): layer.weight.to(dev) for layer in layers}
    shared: dict[int, list[int]] = {}  # layers by the weight they share: one product per batch each
    for position, layer in enumerate(layers):
        shared.setdefault(id(layer.weight), []).append(position)
    biases = [layer.bias.to(dev) for layer in layers]
    tallies = [_Tally(classes, dev) for _ in layers]
    with torch.inference_mode():
        for index, z, label in _batches(read, rows):
            z, label = z.to(dev), label.to(dev)
            against, ref_product = None, None
            if ref is not None:
                ref_product = z @ ref.weight.to(dev).T
                ref_logits = ref_product + ref.bias.to(dev)
                against = (torch.log_softmax(ref_logits, dim=1), ref_logits.argmax(dim=1))
            for key, positions in shared.items():
                shares_reference = ref is not None and key == id(ref.weight)
                product = ref_product if shares_reference else z @ weights[key].T
                for i in positions:
                    tallies[i].add(product + biases[i], label, index, against)
    return [
        tally.result(layer.method, counts, ref is not None)
        for layer, tally in zip(layers, tallies, strict=True)
    ]


def evaluate_head(
    source: Scan | Features | str | os.PathLike[str],
    head: Any,
    train_counts: Any = None,
    *,
    rows: Any = None,
    reference: Any = None,
    device: str | torch.device | None = None,
) -> HeadEvaluation:
    """``head``'s figures on ``source``'s features: :func:`evaluate_heads` for one layer."""
    return evaluate_heads(source, [head], train_counts, rows=rows, reference=reference, device=device)[0]


def evaluate_logits(
    logits: torch.Tensor,
    label: torch.Tensor,
    *,
    method: str = "",
    index: np.ndarray | None = None,
    train_counts: Any = None,
) -> HeadEvaluation:
    """The same figures from logits (N, C) computed elsewhere and their labels (N,), −1 for none."""
    classes = logits.shape[1]
    counts = None if train_counts is None else _counts(train_counts, classes)
    where = np.arange(len(label), dtype=np.int64) if index is None else np.asarray(index, np.int64)
    tally = _Tally(classes, logits.device)
    with torch.inference_mode():
        for start in range(0, len(label), _CHUNK):
            end = start + _CHUNK
            tally.add(logits[start:end], label[start:end].to(logits.device), where[start:end])
    return tally.result(method, counts, referenced=False)


def _batches(source: Scan | Features, rows: Any) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """(index, z, label) a bounded batch at a time, from memory or from the shards; ``rows``: the
    source indices to keep (None: all)."""
    if isinstance(source, Features):
        yield from (source if rows is None else source.select(rows)).chunks()
        return
    for index, z, label in feature_batches(source, rows=rows):
        yield index, torch.from_numpy(z), torch.from_numpy(label)


def _counts(given: Any, classes: int) -> np.ndarray:
    """Training images per class from (C,) numbers or a training scan (or its directory)."""
    from fclens.scanning.reader import Scan

    counts = class_counts(given) if isinstance(given, (Scan, str, os.PathLike)) else given
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    if counts.shape != (classes,):
        raise FclensError(f"the training counts have {counts.size} numbers; the scan has {classes} classes")
    return counts


def _mean(values: np.ndarray) -> float:
    """The mean of the numbers that are not NaN; NaN when there are none."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")
