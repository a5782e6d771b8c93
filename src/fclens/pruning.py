"""Pruning the final layer, guided by the split trees and the ALD prior, measured on a scan (PAPER.md §6).

The paper proposes that the fitted prior tells which final-layer weights can go. This module makes
that a tool with a control group: every method orders the weights of W (C×D), a sparsity s zeroes the
first s of that order, and :func:`prune_curve` measures the pruned layer on the pooled features that a
scan stored (``fclens scan --features``): logits = z (W∘M)ᵀ + b for every image at once, with one matrix
product per (method, sparsity) and no backbone. The reference is the unpruned layer on the same stored
features, so the float16 rounding of the stored z never counts as a disagreement.

Methods (:data:`METHODS`; "global" orders the whole layer, "per class" each row, pruning round(s·D)
weights of every row):

- ``magnitude`` (global): the smallest |w| go first.
- ``magnitude-per-class``: the same within each row.
- ``random`` (global): a seeded random order — the control.
- ``tree`` (per class): the class's split tree (:func:`fclens.split_tree`, the author's chains) orders
  its weights: those that leave the + or − chain nearest the class mean (in "+" but not "++", in "−"
  but not "−−") go first, then those that leave one split deeper, and so on; the two terminal nodes
  (the most discriminative and the most confusing neurons) go last. Within a level, nearest the class
  mean first.
- ``ald`` (per class): the class's maximum-likelihood ALD (:func:`fclens.fit_ald`, location μ, scale σ,
  asymmetry κ) gives each weight the probability of a weight at least as extreme on its side of μ:
  P(X ≥ w) = e^{−κ(w−μ)/σ} / (1+κ²) above μ, P(X ≤ w) = κ² e^{(w−μ)/(κσ)} / (1+κ²) below. The most
  probable (most typical, near μ) go first, the tails last. Why this rule: the prior describes the bulk
  of a class's weights as interchangeable draws of one distribution; what carries the class is what the
  prior finds improbable, so the weights the prior explains best are the ones to remove. It differs
  from magnitude pruning in centring on μ (not 0) and in measuring each side on its own scale.
- ``ald-deviant`` (per class): the paper's literal sentence, "weights that deviate strongly from the
  fitted prior can be removed", read on the paper's own fit (PAPER.md §2): a weight's deviation is its
  residual |ln y_(i) − (a·x_i + b)| from the regression line of its part (positive weights, or the
  magnitudes of the negative ones; exact zeros deviate infinitely and go first); the largest
  deviations go first. Measured beside ``ald``, so that either reading's result is on record: on
  EfficientNet-Lite0 neither beats magnitude pruning, and this one is as bad as random (BENCHMARKS.md).

``bias_correction=True`` moves the removed weights' mean contribution over the scan into the bias,
b'_k = b_k + Σ_{removed c} w_kc · E[z_c], a standard correction for a layer whose inputs are not centred.

Example::

    mask = fclens.prune(scan.layer, 0.9, method="tree")             # bool, True = kept
    curve = fclens.prune_curve(scan, methods=["tree", "magnitude"], sparsities=[0.5, 0.9])
    print(curve.to_text()); curve.point("tree", 0.9).agreement
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fclens import deprecation
from fclens.ald import as_matrix, fit_ald
from fclens.errors import FclensError
from fclens.formatting import percent
from fclens.io import atomic_write_text
from fclens.options import MIN_SIZE, PRUNE_DEFAULT_METHODS, PRUNE_METHODS, PRUNE_SPARSITIES, SEED
from fclens.tree import split_tree

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from fclens.scanning.features import Features
    from fclens.scanning.reader import Scan

__all__ = [
    "DEFAULT_SPARSITIES",
    "METHODS",
    "PruneCurve",
    "PrunePoint",
    "curve",
    "prune",
    "prune_curve",
    "pruning_ranks",
    "write_pruned",
]

METHODS = PRUNE_METHODS
"""The pruning methods, in the order tables list them (defined in :mod:`fclens.options` for the CLI)."""
_GLOBAL = ("magnitude", "random")
"""Methods that order the whole layer at once; the others order each class's row."""
DEFAULT_SPARSITIES = PRUNE_SPARSITIES


# ---------------------------------------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrunePoint:
    """One pruned layer evaluated on a scan's features.

    ``sparsity``: the fraction asked for; ``zeroed``: the fraction of W's entries the mask removes
    (they differ only by the rounding of s·D per row, or s·C·D for a global method). ``accuracy``: top-1
    against the scan's labels (None without labels); ``agreement``: the share of images whose top-1
    equals the unpruned layer's; ``kl``: the mean KL(unpruned softmax ‖ pruned softmax), in nats.
    """

    method: str
    sparsity: float
    zeroed: float
    bias_correction: bool
    accuracy: float | None
    agreement: float
    kl: float


@dataclass(frozen=True, eq=False)
class PruneCurve:
    """What :func:`prune_curve` measured: one :class:`PrunePoint` per (method, sparsity, correction).

    ``n_images``: images evaluated (the scan's ok rows); ``n_labelled``: those with a label;
    ``reference_accuracy``: the unpruned layer's top-1 accuracy on them (None without labels);
    ``pred_agreement``: the share of images whose unpruned top-1, recomputed from the stored float16
    features, equals the ``pred`` the scan stored from the full-precision forward (None when not
    known) — the check that the features stand in for the model; ``seed``: the ``random`` method's.
    """

    points: list[PrunePoint]
    n_images: int
    n_labelled: int
    reference_accuracy: float | None
    pred_agreement: float | None
    seed: int

    def __repr__(self) -> str:
        methods = ", ".join(dict.fromkeys(p.method for p in self.points))
        sparsities = ", ".join(f"{s:g}" for s in dict.fromkeys(p.sparsity for p in self.points))
        return f"PruneCurve({methods} at {sparsities}; {self.n_images} images, {self.n_labelled} labelled)"

    def point(self, method: str, sparsity: float, bias_correction: bool = False) -> PrunePoint:
        """The point of ``method`` at ``sparsity`` (to 1e-9); KeyError if the curve has none."""
        for p in self.points:
            if (
                p.method == method
                and abs(p.sparsity - sparsity) < 1e-9
                and p.bias_correction == bias_correction
            ):
                return p
        raise KeyError(f"no point {method}@{sparsity} (bias_correction={bias_correction}) in this curve")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``points`` as a list of dicts, then the counts and settings."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """One row per point (columns: the :class:`PrunePoint` fields; no labels → empty accuracy); also
        written atomically to ``path`` if given."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        names = [f.name for f in fields(PrunePoint)]
        writer.writerow(names)
        for p in self.points:
            writer.writerow(["" if getattr(p, n) is None else getattr(p, n) for n in names])
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_text(self) -> str:
        """A table for a terminal: one line per point, accuracy as n/a without labels."""
        ref = percent(self.reference_accuracy)
        lines = [
            f"{self.n_images} images ({self.n_labelled} labelled); unpruned accuracy {ref}",
            f"{'method':<20} {'sparsity':>8} {'bias':>4} {'accuracy':>8} {'agreement':>9} {'KL':>8}",
        ]
        for p in self.points:
            lines.append(
                f"{p.method:<20} {p.sparsity:>8.3f} {'yes' if p.bias_correction else 'no':>4} "
                f"{percent(p.accuracy):>8} {percent(p.agreement):>9} {p.kl:>8.4f}"
            )
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        """In a notebook: the curves of every method and a table of the points."""
        from fclens.report.notebook import prune_html

        return prune_html(self)

    def plot(self) -> Figure:
        """Agreement, accuracy (when labelled) and KL against sparsity, one line per method."""
        from fclens.report.notebook import prune_figure

        return prune_figure(self)


# ---------------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------------
def prune(
    layer: Any = None,
    sparsity: float = 0.5,
    method: str = "magnitude",
    seed: int = SEED,
    min_size: int = MIN_SIZE,
    **old: Any,
) -> Any:
    """The mask of ``method`` at ``sparsity``: bool, True = kept, the shape of the layer's weight.

    ``layer``: a :class:`~fclens.FinalLayer` (or a loaded model, a scan: anything ``FinalLayer.of``
    reads), or a weight, C×D (or C×D×1×1) tensor or array. The mask is of the same kind, so that
    ``weight * mask`` works as it stands: a tensor (or a layer) gives a bool tensor on its device,
    anything else a numpy array. ``sparsity`` in [0, 1): the fraction of weights to zero, round(s·D) of
    every row for the per-class methods, round(s·C·D) of the layer for the global ones (see the module
    docstring for each method). ``seed`` drives ``random``; ``min_size`` is the split trees' (``tree`` only).
    """
    deprecation.keyword(old, "weight", "layer")
    layer = old.pop("layer", layer)
    if old:
        raise FclensError(f"prune() got unknown keywords {', '.join(sorted(old))}")
    _check_sparsity(sparsity)
    weight = _weight_of(layer)
    w = as_matrix(weight)
    mask = _mask(pruning_ranks(w, method, seed=seed, min_size=min_size), method, sparsity)
    mask = mask.reshape(tuple(weight.shape) if hasattr(weight, "shape") else np.shape(weight))
    torch = sys.modules.get("torch")  # a tensor can only come from a process that imported torch
    if torch is not None and isinstance(weight, torch.Tensor):
        return torch.from_numpy(mask).to(weight.device)
    return mask


def _weight_of(layer: Any) -> Any:
    """The weight to prune: a tensor, an array or nested lists as given, else its final layer's weight."""
    torch = sys.modules.get("torch")
    if isinstance(layer, (np.ndarray, list)) or (torch is not None and isinstance(layer, torch.Tensor)):
        return layer
    if layer is None:
        raise FclensError("prune needs a final layer: prune(layer, sparsity, method=…)")
    from fclens.layer import FinalLayer

    return FinalLayer.of(layer).weight


def pruning_ranks(w: np.ndarray, method: str, seed: int = SEED, min_size: int = MIN_SIZE) -> np.ndarray:
    """Each weight's place in ``method``'s pruning order (0 = removed first): int64, shape of ``w`` (C×D),
    counted over the whole layer for a global method and within each row otherwise."""
    if method not in METHODS:
        raise FclensError(f"unknown pruning method {method!r}; choose from {', '.join(METHODS)}")
    w = np.asarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        raise FclensError("the weight matrix contains NaN or Inf")
    if method == "magnitude":
        return _ranks(np.abs(w), per_row=False)
    if method == "random":
        order = np.random.default_rng(seed).permutation(w.size)
        return _inverse(order).reshape(w.shape)
    if method == "magnitude-per-class":
        return _ranks(np.abs(w), per_row=True)
    if method == "tree":
        return _ranks(*_tree_keys(w, min_size), per_row=True)
    if method == "ald":
        return _ranks(_ald_keys(w), per_row=True)
    return _ranks(-_deviation(w), per_row=True)


def _check_sparsity(sparsity: float) -> None:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise FclensError(f"sparsity must be a number in [0, 1), got {sparsity!r}")


def _mask(ranks: np.ndarray, method: str, sparsity: float) -> np.ndarray:
    count = round(sparsity * (ranks.size if method in _GLOBAL else ranks.shape[1]))
    return ranks >= count


def _ranks(key: np.ndarray, tiebreak: np.ndarray | None = None, *, per_row: bool) -> np.ndarray:
    """Ranks of ``key`` ascending (then ``tiebreak``, then position): within rows or over the whole."""
    rows = np.repeat(np.arange(key.shape[0]), key.shape[1]) if per_row else np.zeros(key.size, np.int64)
    keys = (key.ravel(),) if tiebreak is None else (tiebreak.ravel(), key.ravel())
    order = np.lexsort((*keys, rows))  # stable: equal keys keep their position order
    ranks = _inverse(order)
    if per_row:
        ranks = ranks - rows * key.shape[1]
    return ranks.reshape(key.shape)


def _inverse(order: np.ndarray) -> np.ndarray:
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size)
    return ranks


def _tree_keys(w: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(level, distance) per weight: the depth of the deepest chain node holding it (terminal nodes at
    D + 1, after every other level), and |w − class mean| to order a level."""
    level = np.zeros(w.shape, dtype=np.int64)
    for k, row in enumerate(w):
        tree = split_tree(row, min_size=min_size, mode="chains")
        for sign in "+-":
            chain = tree.chain(sign)
            for depth, node in enumerate(chain, start=1):
                level[k, node.indices] = depth  # nodes are nested: the deepest one writes last
            if chain:
                level[k, chain[-1].indices] = w.shape[1] + 1
    return level, np.abs(w - w.mean(axis=1, keepdims=True))


def _ald_keys(w: np.ndarray) -> np.ndarray:
    """−ln P(a weight at least as extreme on its side of μ) under the class's MLE ALD: small = typical.

    Rows without a full ALD fit (a degenerate or one-sided row, see :class:`fclens.ald.MLEFit`) fall back
    to |w|, the order of ``magnitude-per-class``.
    """
    mle = fit_ald(w, method="mle").mle
    assert mle is not None
    kappa, loc, scale = (np.asarray(a, dtype=np.float64)[:, None] for a in (mle.kappa, mle.loc, mle.scale))
    good = np.isfinite(kappa) & np.isfinite(loc) & (scale > 0)
    kappa, loc, scale = np.where(good, kappa, 1.0), np.where(good, loc, 0.0), np.where(good, scale, 1.0)
    x = (w - loc) / scale
    log_tail = np.where(
        x >= 0, -kappa * x - np.log1p(kappa**2), 2 * np.log(kappa) - np.log1p(kappa**2) + x / kappa
    )
    return np.where(good, -log_tail, np.abs(w))


def _deviation(w: np.ndarray) -> np.ndarray:
    """|ln y_(i) − (a·x_i + b)| per weight: its residual from the paper's regression line of its part.

    Positive part: w > 0 sorted ascending, x_i = (i−1)/n (PAPER.md §2); negative part: the magnitudes
    −w of w < 0, likewise. Exact zeros (left out of the paper's fit) deviate infinitely; a part whose
    fit failed (NaN line) gets deviation 0, so its weights go last.
    """
    fit = fit_ald(w, method="regression")
    assert fit.pos is not None and fit.neg is not None
    order = np.argsort(w, axis=1, kind="stable")
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(w.shape[1])[None, :], axis=1)
    n_neg = (w < 0).sum(axis=1, keepdims=True)
    n_pos = (w > 0).sum(axis=1, keepdims=True)
    first_pos = w.shape[1] - n_pos  # ascending order: negatives, zeros, then positives
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(w > 0, (position - first_pos) / n_pos, (n_neg - 1 - position) / n_neg)
        slope = np.where(w > 0, fit.pos.slope[:, None], fit.neg.slope[:, None])
        intercept = np.where(w > 0, fit.pos.intercept[:, None], fit.neg.intercept[:, None])
        residual = np.abs(np.log(np.abs(w)) - (slope * x + intercept))
    return np.where(w == 0, np.inf, np.nan_to_num(residual, nan=0.0))


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------
def prune_curve(
    scan: Scan | Features | str | os.PathLike[str],
    methods: Sequence[str] = PRUNE_DEFAULT_METHODS,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    bias_correction: bool | Literal["both"] = False,
    seed: int = SEED,
    min_size: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> PruneCurve:
    """Accuracy, agreement and KL of each method's pruned layer at each sparsity, on a scan's features.

    ``scan``: a :class:`fclens.Scan` or its directory, made with ``features=True``, or its features read
    into memory (``scan.read_features()``: then ``pred_agreement`` is not known).
    ``bias_correction``: False, True, or "both" (each point twice). ``min_size``: the split trees' (the
    scan's own by default). ``device``: where the products run (default cpu). ``progress``: a bar on
    stderr while the layers are judged, when it is a terminal.
    """
    from fclens.scanning.features import Features
    from fclens.scanning.reader import as_scan

    pred = None
    if not isinstance(scan, Features):
        scan = as_scan(scan)
        scan.warn_if_incomplete()
        pred = scan.rows(["index", "pred"], ok_only=True).column("pred").to_numpy(zero_copy_only=False)
        scan = scan.read_features()
    return curve(
        scan,
        pred=pred,
        methods=methods,
        sparsities=sparsities,
        bias_correction=bias_correction,
        seed=seed,
        min_size=min_size,
        device=device,
        progress=progress,
    )


def curve(
    features: Features,
    *,
    pred: Any = None,
    methods: Sequence[str] = PRUNE_DEFAULT_METHODS,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    bias_correction: bool | Literal["both"] = False,
    seed: int = SEED,
    min_size: int | None = None,
    device: str | None = None,
    progress: bool = False,
) -> PruneCurve:
    """:func:`prune_curve` on features held in memory with their layer (``Features.layer``); ``pred``
    (N,): the top-1 the scan stored, for ``pred_agreement`` (optional).

    Every pruned layer is held at once, (methods × sparsities) × C × D float32: 123 MB for 24 points of
    a 1000×1280 layer; they are judged by the one evaluator of any final layer (:func:`fclens.evaluate`),
    against the unpruned layer as its reference."""
    import torch

    from fclens.edits.evaluate import evaluate
    from fclens.layer import FinalLayer

    methods = list(dict.fromkeys(_listed(methods, "methods")))
    if not methods:
        raise FclensError(f"no pruning method given; choose from {', '.join(METHODS)}")
    for method in methods:
        if method not in METHODS:
            raise FclensError(f"unknown pruning method {method!r}; choose from {', '.join(METHODS)}")
    sparsities = _listed(sparsities, "sparsities")
    for s in sparsities:
        _check_sparsity(s)
    sparsities = list(dict.fromkeys(float(s) for s in sparsities))
    if not sparsities:
        raise FclensError("no sparsity given; give numbers in [0, 1)")
    if bias_correction not in (False, True, "both"):
        raise FclensError(f"bias_correction must be False, True or 'both', got {bias_correction!r}")
    corrections = [False, True] if bias_correction == "both" else [bool(bias_correction)]

    if features.layer is None:
        raise FclensError("these features hold no final layer to prune: read them from a scan")
    w, b = features.layer.weight.numpy(), features.layer.bias.numpy()
    if len(features) == 0:
        raise FclensError("the scan has no evaluated images (no rows with status ok)")
    min_size = features.min_size if min_size is None else min_size
    mean = features.z.numpy().mean(axis=0, dtype=np.float64)

    # One layer per (method, sparsity, correction); a bias-corrected twin shares its weight tensor and
    # sparsity 0 the unpruned one, so the evaluator computes one product for each.
    unpruned = FinalLayer(torch.from_numpy(w), torch.from_numpy(b), method="unpruned")
    configs: list[tuple[str, float, bool, float]] = []
    layers: list[FinalLayer] = []
    for method in methods:
        ranks = pruning_ranks(w, method, seed=seed, min_size=min_size)
        for s in sparsities:
            mask = _mask(ranks, method, s)
            pruned = unpruned.weight if s == 0 else torch.from_numpy(np.where(mask, w, 0))
            for corrected in corrections:
                configs.append((method, s, corrected, 1.0 - float(mask.mean())))
                layer_b = b + bias_shift(w, mask, mean) if corrected else b
                layers.append(FinalLayer(pruned, torch.from_numpy(layer_b), method=method))
    reference, *evaluations = evaluate(
        features, [unpruned, *layers], reference=unpruned, device=device, progress=progress
    )

    n, n_labelled = len(features), reference.n_labelled
    points = [
        PrunePoint(
            method=method,
            sparsity=s,
            zeroed=float(zeroed),
            bias_correction=corrected,
            accuracy=evaluation.accuracy if n_labelled else None,
            agreement=evaluation.agreement,
            kl=evaluation.kl,
        )
        for (method, s, corrected, zeroed), evaluation in zip(configs, evaluations, strict=True)
    ]
    stored = None if pred is None else np.asarray(pred, np.int64).reshape(-1)
    return PruneCurve(
        points=points,
        n_images=n,
        n_labelled=n_labelled,
        reference_accuracy=reference.accuracy if n_labelled else None,
        pred_agreement=None if stored is None else float((reference.pred == stored).mean()),
        seed=seed,
    )


def _listed(values: Any, name: str) -> list[Any]:
    """One value or a sequence of them as a list; anything else is one line naming ``name``."""
    if isinstance(values, (str, int, float)):
        return [values]
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise FclensError(f"{name} must be a list, got {type(values).__name__} {values!r}")
    return list(values)


def bias_shift(w: np.ndarray, mask: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The removed weights' mean contribution per class, Σ_{c removed} w_kc · E[z_c]: (C,) float32."""
    return (np.where(mask, 0, w).astype(np.float64) @ np.asarray(mean, np.float64)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# A pruned model on disk
# ---------------------------------------------------------------------------------------------------------
def write_pruned(
    scan: Scan | str | os.PathLike[str],
    method: str,
    sparsity: float,
    path: str | os.PathLike[str],
    bias_correction: bool = False,
    seed: int = SEED,
    min_size: int | None = None,
) -> Path:
    """Save the scanned model with ``method``'s mask at ``sparsity`` applied to its final layer.

    The model is loaded from the scan's manifest (``model.source`` and ``model.weights``); the pruned
    weights of its final layer are zeroed (and the bias corrected if asked, from the scan's feature
    means), and the whole state dict is written atomically as safetensors to ``path``, which
    ``fclens.load_model(source, weights=path)`` reads back. A scan of a model passed as a module has no
    source to reload: FclensError.
    """
    import torch

    from fclens.edits.write import model_source, write_model
    from fclens.layer import FinalLayer
    from fclens.scanning.reader import as_scan

    scan = as_scan(scan)
    _check_sparsity(sparsity)
    source = model_source(scan)
    if min_size is None:
        min_size = scan.manifest.options.min_size
    w = scan.weight.astype(np.float32)
    mask = _mask(pruning_ranks(w, method, seed=seed, min_size=min_size), method, sparsity)
    bias = scan.bias.astype(np.float64)
    if bias_correction:
        bias = bias + bias_shift(w, mask, scan.read_features().z.numpy().mean(axis=0, dtype=np.float64))
    layer = FinalLayer(
        torch.from_numpy(w * mask),
        torch.from_numpy(bias.astype(np.float32)),
        method=f"prune:{method}@{sparsity!r}",
    )
    return write_model(scan, layer, path, metadata=_metadata(source, method, sparsity, bias_correction))


def _metadata(source: str, method: str, sparsity: float, bias_correction: bool) -> dict[str, str]:
    return {
        "fclens_pruned_from": source,
        "method": method,
        "sparsity": repr(sparsity),
        "bias_correction": str(bias_correction).lower(),
    }


def evaluate(
    features: Any, weight: Any, bias: Any, labels: Any = None, pred: Any = None, **options: Any
) -> PruneCurve:
    """Deprecated: :func:`curve` on ``Features.of(features, labels, layer=(weight, bias))``."""
    from fclens.scanning.features import Features

    deprecation.warn(
        "fclens.pruning.evaluate(features, weight, bias, …)", "fclens.pruning.curve(Features, …)"
    )
    return curve(Features.of(features, labels, layer=(weight, bias)), pred=pred, **options)
