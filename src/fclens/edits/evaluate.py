"""The one evaluator of any final layer: its figures on the pooled features a scan stored.

``evaluate(scan, layers)`` runs logits = z Wᵀ + b for every layer over a scan's ``ok`` rows (``fclens
scan --features``), one bounded batch of rows at a time and each batch read once for all the layers, and
counts, against the labels: accuracy, balanced accuracy (the mean of per-class recall), per-class
accuracy, the confusion matrix (row = label), the soft confusion (mean p(j | images of k)) and, given the
training set's class counts, the many / medium / few split of the long-tail literature (> 100, 20–100,
< 20 training images). Given a ``reference`` layer it also counts, over every row labelled or not, the
share of images whose top-1 agrees with the reference's and the mean KL(reference ‖ layer): what pruning
reports. Every edit of the final layer — a re-fit, a post-hoc adjustment, a pruning mask, a pair edit —
is judged here. :func:`evaluate_logits` is the same count on logits computed elsewhere, and
:class:`PairCount` the same count of one pair's figures for an edit that changes one row of the layer
(the causal test's thousands of edits), in O(rows) per edit; the tests hold it equal to :func:`evaluate`.

The stored z are float16, so the scanned layer's top-1 on them can differ from the scan's ``pred``
(computed from float32) where two logits nearly tie; judge edits against the scanned layer evaluated
here, not against ``pred``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import torch

from fclens import deprecation
from fclens.errors import FclensError
from fclens.formatting import json_number, nan_mean, percent
from fclens.layer import FinalLayer
from fclens.runs import progress_bar
from fclens.scanning.features import CHUNK, Features, class_counts, feature_batches
from fclens.scanning.reader import Scan, as_scan

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FEW", "MANY", "Evaluation", "PairCount", "PairOutcome", "evaluate", "evaluate_logits"]

MANY = 100
"""A class with more than this many training images is a "many-shot" class."""
FEW = 20
"""One with fewer is "few-shot"; between the two (inclusive), "medium"."""

ScanLike = Scan | Features | str | os.PathLike[str]
"""What the evaluator reads features from: a scan, its directory, or features read from one."""


@dataclass
class Evaluation:
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

    def __repr__(self) -> str:
        return (
            f"Evaluation({self.method!r}: {self.n_images} images, {self.n_labelled} labelled, accuracy "
            f"{percent(self.accuracy)}, balanced {percent(self.balanced_accuracy)})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The summary figures (not the matrices) as JSON-ready values; NaN becomes None."""
        figures = ("n_images", "n_labelled", "accuracy", "balanced_accuracy", "many", "medium", "few")
        return {
            "method": self.method,
            **{name: json_number(getattr(self, name)) for name in (*figures, "agreement", "kl")},
            "per_class_accuracy": [json_number(v) for v in self.per_class_accuracy],
        }

    def _repr_html_(self) -> str:
        """In a notebook: the figures, the least accurate classes and the most frequent errors k→j."""
        from fclens.report.notebook import evaluation_html

        return evaluation_html(self)

    def plot(self, class_names: Sequence[str] | None = None) -> Figure:
        """Per-class accuracy of the least accurate classes, as bars (``class_names`` label them)."""
        from fclens.report.notebook import evaluation_figure

        return evaluation_figure(self, class_names)


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

    def result(self, method: str, counts: np.ndarray | None, referenced: bool) -> Evaluation:
        index = np.concatenate(self.indices) if self.indices else np.zeros(0, np.int64)
        order = np.argsort(index, kind="stable")
        matrix = self.confusion.reshape(self.classes, self.classes).cpu().numpy()
        rows = matrix.sum(axis=1)
        n_labelled, n = int(rows.sum()), len(index)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_class = np.where(rows > 0, np.diag(matrix) / rows, np.nan)
            soft_confusion = self.soft.cpu().numpy() / rows[:, None]
        evaluation = Evaluation(
            method=method,
            n_images=n,
            n_labelled=n_labelled,
            accuracy=float(np.trace(matrix) / n_labelled) if n_labelled else float("nan"),
            balanced_accuracy=nan_mean(per_class),
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
            evaluation.many = nan_mean(per_class[counts > MANY])
            evaluation.medium = nan_mean(per_class[(counts >= FEW) & (counts <= MANY)])
            evaluation.few = nan_mean(per_class[counts < FEW])
        return evaluation


@overload
def evaluate(
    scan: ScanLike,
    layers: FinalLayer | Any,
    train_counts: Any = None,
    *,
    rows: Any = None,
    reference: Any = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Evaluation: ...


@overload
def evaluate(
    scan: ScanLike,
    layers: list[FinalLayer | Any],
    train_counts: Any = None,
    *,
    rows: Any = None,
    reference: Any = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> list[Evaluation]: ...


def evaluate(
    scan: ScanLike,
    layers: Any,
    train_counts: Any = None,
    *,
    rows: Any = None,
    reference: Any = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Evaluation | list[Evaluation]:
    """Final layers judged on ``scan``'s stored features, all in one read of them (see the module).

    ``scan``: a scan, its directory, or :class:`~fclens.scanning.features.Features` read from one.
    ``layers``: one layer (gives one :class:`Evaluation`) or a list of them (gives a list), each a
    :class:`~fclens.FinalLayer` or anything :meth:`FinalLayer.of` reads; layers that share one weight
    tensor share its product. ``train_counts``: the training images per class, (C,) numbers or a
    training scan, for the many / medium / few split (NaN without it). ``rows``: the source indices to
    evaluate on (default all). ``reference``: a layer to count agreement and KL against. ``progress``: a
    bar on stderr, image by image, when it is a terminal.
    """
    one = not isinstance(layers, list)
    given = [layers] if one else layers
    if not given:
        raise FclensError("no final layer given to evaluate")
    finals = [FinalLayer.of(layer) for layer in given]
    read, classes, expected, what = _source(scan, finals[0])
    ref = None if reference is None else FinalLayer.of(reference)
    for layer in (*finals, *([] if ref is None else [ref])):
        if tuple(layer.weight.shape) != expected:
            raise FclensError(
                f"the final layer is {layer.num_classes}×{layer.num_features}; {what} "
                f"{expected[0]}×{expected[1]}"
            )
    counts = None if train_counts is None else _counts(train_counts, classes)
    dev = torch.device(device or "cpu")
    weights = {id(layer.weight): layer.weight.to(dev) for layer in finals}
    shared: dict[int, list[int]] = {}  # layers by the weight they share: one product per batch each
    for position, layer in enumerate(finals):
        shared.setdefault(id(layer.weight), []).append(position)
    biases = [layer.bias.to(dev) for layer in finals]
    tallies = [_Tally(classes, dev) for _ in finals]
    with (
        torch.inference_mode(),
        progress_bar(_row_count(read, rows), enabled=progress, desc="evaluate", unit="img") as bar,
    ):
        for index, z, label in _batches(read, rows):
            bar.update(len(index))
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
    results = [
        tally.result(layer.method, counts, ref is not None)
        for layer, tally in zip(finals, tallies, strict=True)
    ]
    return results[0] if one else results


def _source(scan: ScanLike, first: FinalLayer) -> tuple[Scan | Features, int, tuple[int, int], str]:
    """(what to read, the classes, the layer shape every layer must have, how to say whose shape it is)."""
    if isinstance(scan, Features):
        if scan.layer is not None:
            return scan, scan.layer.num_classes, tuple(scan.layer.weight.shape), "the scanned one is"
        shape = (first.num_classes, scan.z.shape[1])
        return scan, first.num_classes, shape, "the features and the first layer give"
    read = as_scan(scan)
    read.require_features()
    return read, len(read.class_names), tuple(read.weight.shape), "the scanned one is"


def evaluate_logits(
    logits: torch.Tensor,
    label: torch.Tensor,
    *,
    method: str = "",
    index: np.ndarray | None = None,
    train_counts: Any = None,
) -> Evaluation:
    """The same figures from logits (N, C) computed elsewhere and their labels (N,), −1 for none."""
    classes = logits.shape[1]
    counts = None if train_counts is None else _counts(train_counts, classes)
    where = np.arange(len(label), dtype=np.int64) if index is None else np.asarray(index, np.int64)
    tally = _Tally(classes, logits.device)
    with torch.inference_mode():
        for start in range(0, len(label), CHUNK):
            end = start + CHUNK
            tally.add(logits[start:end], label[start:end].to(logits.device), where[start:end])
    return tally.result(method, counts, referenced=False)


def _row_count(source: Scan | Features, rows: Any) -> int:
    """How many rows an evaluation reads: the ``ok`` rows, or those of ``rows`` among them."""
    if rows is not None:
        return len(np.unique(np.asarray(rows)))
    return len(source) if isinstance(source, Features) else int(source.manifest.counts.get("ok") or 0)


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
    counts = class_counts(as_scan(given)) if isinstance(given, (Scan, str, os.PathLike)) else given
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    if counts.shape != (classes,):
        raise FclensError(f"the training counts have {counts.size} numbers; the scan has {classes} classes")
    return counts


# --- one pair, edited in one row -------------------------------------------------------------------


@dataclass
class PairOutcome:
    """A layer's figures for one pair (k → j) on the held-out rows: the errors both ways, the soft
    confusion both ways (mean p(j) over k's images, mean p(k) over j's), and the accuracy of k, of j, of
    the images of every other class together, and of all; NaN where a class has no images."""

    errors_kj: int
    errors_jk: int
    soft_kj: float
    soft_jk: float
    accuracy_k: float
    accuracy_j: float
    accuracy_other: float
    accuracy: float

    @property
    def pair_errors(self) -> int:
        return self.errors_kj + self.errors_jk

    @classmethod
    def of(cls, evaluation: Evaluation, k: int, j: int) -> PairOutcome:
        """The pair's figures read from a full evaluation (what the fast path must reproduce)."""
        confusion = evaluation.confusion
        others = np.setdiff1d(np.arange(len(confusion)), [k, j])
        counted = confusion[others].sum()
        return cls(
            errors_kj=int(confusion[k, j]),
            errors_jk=int(confusion[j, k]),
            soft_kj=float(evaluation.soft_confusion[k, j]),
            soft_jk=float(evaluation.soft_confusion[j, k]),
            accuracy_k=float(evaluation.per_class_accuracy[k]),
            accuracy_j=float(evaluation.per_class_accuracy[j]),
            accuracy_other=float(confusion[others, others].sum() / counted) if counted else float("nan"),
            accuracy=float(evaluation.accuracy),
        )

    def to_dict(self) -> dict[str, Any]:
        return {key: json_number(value) for key, value in vars(self).items()}


class PairCount:
    """One pair's figures (k → j) for any new column j of fixed logits, in O(rows) per new column: the
    evaluator's count for an edit that changes only row j of the layer (the tests hold it equal to
    :func:`evaluate` of the edited layer, through :meth:`PairOutcome.of`).

    Once per pair: each row's best class other than j (value, index: torch's argmax takes the first of
    equal maxima) and, on the rows of k and j, the log-sum-exp of the logits without column j. A new
    logit_j then decides each row's top-1 (j, or that best other) and p(j) = σ(logit_j − lse_other).
    """

    def __init__(
        self,
        logits: torch.Tensor,
        label: torch.Tensor,
        k: int,
        j: int,
        top: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.k, self.j = k, j
        self.label = label
        values, indices = torch.topk(logits, 2, dim=1) if top is None else top
        first = indices[:, 0] == j
        self.best = torch.where(first, values[:, 1], values[:, 0])
        self.best_index = torch.where(first, indices[:, 1], indices[:, 0])
        self.of_k, self.of_j = label == k, label == j
        self.pair = torch.nonzero(self.of_k | self.of_j).squeeze(1)
        without = logits[self.pair].clone()
        without[:, j] = -torch.inf
        self.lse = torch.logsumexp(without, dim=1)
        self.logit_k = logits[self.pair, k]
        self.pair_is_k = self.of_k[self.pair]
        known = label >= 0
        self.other = known & ~self.of_k & ~self.of_j
        self.n_k, self.n_j = int(self.of_k.sum()), int(self.of_j.sum())
        self.n_other, self.n = int(self.other.sum()), int(known.sum())

    def _wins(self, column: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Where logit_j is the top-1: above the best other, or equal to it with j the lower index
        (``rows``: the rows ``column`` holds, all by default)."""
        best, index = (
            (self.best, self.best_index) if rows is None else (self.best[rows], self.best_index[rows])
        )
        if column.ndim == 2:
            best, index = best[:, None], index[:, None]
        return (column > best) | ((column == best) & (index > self.j))

    def outcome(self, column: torch.Tensor) -> PairOutcome:
        wins = self._wins(column)
        kept = ~wins
        correct_other = kept & (self.best_index == self.label)
        log_total = torch.logaddexp(column[self.pair], self.lse)
        p_j = torch.exp(column[self.pair] - log_total)
        p_k = torch.exp(self.logit_k - log_total)
        k_right = int((kept & self.of_k & (self.best_index == self.k)).sum())
        j_right = int((wins & self.of_j).sum())
        other_right = int((correct_other & self.other).sum())
        return PairOutcome(
            errors_kj=int((wins & self.of_k).sum()),
            errors_jk=int((kept & self.of_j & (self.best_index == self.k)).sum()),
            soft_kj=ratio(float(p_j[self.pair_is_k].double().sum()), self.n_k),
            soft_jk=ratio(float(p_k[~self.pair_is_k].double().sum()), self.n_j),
            accuracy_k=ratio(k_right, self.n_k),
            accuracy_j=ratio(j_right, self.n_j),
            accuracy_other=ratio(other_right, self.n_other),
            accuracy=ratio(k_right + j_right + other_right, self.n),
        )

    def errors(
        self, column: torch.Tensor, delta: torch.Tensor, objective: str, strengths: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For logit_j = ``column`` + s·``delta`` at each s of ``strengths``: the errors
        ``objective`` counts (``pair``: k→j + j→k; ``accuracy``: every labelled row's), up to a constant,
        and the pair's summed soft confusion (mean p(j) over k's rows + mean p(k) over j's).

        logit_j moves linearly in s, so a row's top-1 can change only where it differs at s = 0 and
        s = 1: the errors are counted on those rows alone (the others add the same to every s)."""
        grid = torch.as_tensor(strengths, dtype=column.dtype)
        moving = torch.nonzero(self._wins(column) != self._wins(column + delta)).squeeze(1)
        wins = self._wins(column[moving, None] + delta[moving, None] * grid, moving)
        label, best = self.label[moving, None], self.best_index[moving, None]
        if objective == "pair":
            errors = (wins & (label == self.k)).sum(0) + (~wins & (label == self.j) & (best == self.k)).sum(0)
        else:
            errors = (torch.where(wins, label != self.j, best != label) & (label >= 0)).sum(0)
        pair = column[self.pair, None] + delta[self.pair, None] * grid
        log_total = torch.logaddexp(pair, self.lse[:, None])
        p_j = torch.exp(pair - log_total)[self.pair_is_k].sum(0) / max(self.n_k, 1)
        p_k = torch.exp(self.logit_k[:, None] - log_total)[~self.pair_is_k].sum(0) / max(self.n_j, 1)
        return errors, p_j + p_k


def ratio(count: float, total: int) -> float:
    """count / total, NaN for nothing to count."""
    return count / total if total else float("nan")


# --- the names of 0.1, for one release ----------------------------------------------------------------


def evaluate_head(source: ScanLike, head: Any, train_counts: Any = None, **options: Any) -> Evaluation:
    """Deprecated: :func:`evaluate` with one layer."""
    deprecation.warn("fclens.evaluate_head", "fclens.evaluate(scan, layer)")
    return evaluate(source, head, train_counts, **options)


def evaluate_heads(
    source: ScanLike, heads: Sequence[Any], train_counts: Any = None, **options: Any
) -> list[Evaluation]:
    """Deprecated: :func:`evaluate` with a list of layers."""
    deprecation.warn("fclens.evaluate_heads", "fclens.evaluate(scan, [layers])")
    return evaluate(source, list(heads), train_counts, **options)


def read_features(scan: Scan | str | os.PathLike[str] | Features, labelled: bool = False) -> Features:
    """Deprecated: :meth:`fclens.Scan.read_features`."""
    deprecation.warn("fclens.read_features(scan)", "fclens.read_scan(path).read_features()")
    return scan if isinstance(scan, Features) else as_scan(scan).read_features(labelled=labelled)


__getattr__ = deprecation.moved(
    __name__,
    {
        "HeadEvaluation": "fclens.edits.evaluate:Evaluation",
        "Features": "fclens.scanning.features",
        "class_counts": "fclens.scanning.features",
        "feature_batches": "fclens.scanning.features",
    },
)
