"""Does a final layer's weight matrix follow an Asymmetric Laplace Distribution (ALD)?

Weights only, never images. ``fit_ald`` fits every class (row of the C×D weight matrix W) at once:

* the paper's *regression fit* (PAPER.md §2): per class, a straight line through the log of the sorted
  positive weights against their rank, and the same for the magnitudes of the negative weights; the
  ALD parameters κ, λ and the mean m follow from the line. Also the paper's per-model figures: the
  marginal means (average of the per-class m) and the joint fit of all of W's positive (negative) entries.
* beyond the paper (an fclens addition, labelled as such in every output): the per-class
  maximum-likelihood ALD in ``scipy.stats.laplace_asymmetric``'s parametrisation, a Kolmogorov–Smirnov
  statistic against it, and AIC against a Gaussian and a symmetric Laplace, so that a user can see
  whether the paper's ALD claim holds for their model.

All arithmetic is float64 numpy, vectorised over classes; degenerate classes get NaN and a reason
string instead of an exception or a numpy warning.

Example::

    fit = fclens.fit_ald(model.head.weight)        # C×D tensor or array
    fit.pos.r2, fit.neg.r2                         # per-class R² of the paper's fit
    fit.summary()["marginal_mean_pos"], fit.mle.best
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import scipy.special

from fclens import deprecation
from fclens.errors import FclensError, described
from fclens.io import atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MODELS",
    "ALDFit",
    "MLEFit",
    "PartFit",
    "Quantiles",
    "RegressionFit",
    "fit_ald",
    "regression_fit",
]

METHODS = ("all", "regression", "mle")
MODELS = ("ald", "gauss", "laplace")
"""Names of the hypotheses compared by AIC, in the order of the ``aic_*`` fields."""

_CHUNK = 1 << 17
"""Values per tile of rows: a tile is sorted, logged and summed while it stays in the CPU cache (1 MiB
per float64 temporary; measured faster than 2¹⁶ and 2¹⁸, see BENCHMARKS.md)."""

MIN_VALUES = 3
"""Fewest values a part (or, for the MLE, a row) needs before it is fitted."""

_MLE_NOTE = "maximum-likelihood ALD, KS and AIC: an fclens addition, not in the paper"


# ---------------------------------------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegressionFit:
    """The paper's regression fit (PAPER.md §2) of one sample of positive numbers.

    ``slope`` (a) and ``intercept`` (b) are the least-squares line ln y_(i) ≈ a·(i−1)/n + b through the
    sorted sample; ``r2`` its coefficient of determination; ``kappa`` (κ), ``lam`` (λ) and ``mean`` (m,
    in the units of the sample) the ALD parameters derived from the line. ``n`` counts the values
    fitted, ``n_zero`` the exact zeros left out; ``reason`` is "" for a good fit, else why some numbers
    are NaN.
    """

    slope: float
    intercept: float
    r2: float
    kappa: float
    lam: float
    mean: float
    n: int
    n_zero: int
    reason: str


class Quantiles(NamedTuple):
    """The spread of a per-class figure over the classes (finite values only; None when there are none)."""

    min: float | None
    p05: float | None
    p25: float | None
    p50: float | None
    p75: float | None
    p95: float | None
    max: float | None


@dataclass(frozen=True, eq=False)
class PartFit:
    """The paper's regression fit of one part (positive or negative) of every class: arrays of shape (C,).

    Same fields and meaning as :class:`RegressionFit`, one entry per class. ``n_zero`` counts the exact
    zeros of the row, which belong to the positive part (P = values ≥ 0 in the paper) and are left out
    of its fit (ln 0 = −∞); it is 0 for the negative part.
    """

    slope: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray
    kappa: np.ndarray
    lam: np.ndarray
    mean: np.ndarray
    n: np.ndarray
    n_zero: np.ndarray
    reason: np.ndarray

    def row(self, k: int) -> RegressionFit:
        """Class ``k``'s fit as scalars."""
        return RegressionFit(
            **{f.name: _scalar(getattr(self, f.name)[k]) for f in fields(self)},
        )

    def r2_quantiles(self) -> Quantiles:
        """How well the classes fit, spread over the classes: quantiles of the per-class R²."""
        return _quantiles(self.r2)


@dataclass(frozen=True, eq=False)
class MLEFit:
    """Beyond the paper: per-class maximum-likelihood fits and goodness of fit, arrays of shape (C,).

    ``kappa``, ``loc``, ``scale`` are the MLE of ``scipy.stats.laplace_asymmetric`` (units of the
    weights for ``loc`` and ``scale``) and ``loglik`` the maximised log-likelihood of the row's n
    values (all finite values, zeros included). ``ks`` is the Kolmogorov–Smirnov distance between the
    row and its fitted ALD; ``ks_pvalue`` the textbook p-value for that distance (Stephens'
    approximation), optimistic (too large) because the parameters were fitted on the same data.
    ``aic_ald`` (3 parameters), ``aic_gauss`` (2: mean, standard deviation) and ``aic_laplace`` (2:
    median, mean absolute deviation) compare the hypotheses; ``best`` names the lowest AIC (one of :data:`MODELS`, "" when
    undefined). ``reason`` is "" for a good fit, else why numbers are NaN; a row whose likelihood is
    highest at its minimum or maximum is best described by the limit of the ALD family, a one-sided
    exponential: ``loc``, ``loglik`` and ``aic_ald`` are that limit's, ``kappa``, ``scale`` and ``ks``
    NaN.
    """

    kappa: np.ndarray
    loc: np.ndarray
    scale: np.ndarray
    loglik: np.ndarray
    ks: np.ndarray
    ks_pvalue: np.ndarray
    aic_ald: np.ndarray
    aic_gauss: np.ndarray
    aic_laplace: np.ndarray
    best: np.ndarray
    n: np.ndarray
    reason: np.ndarray

    def best_counts(self) -> dict[str, int]:
        """How many classes each hypothesis of :data:`MODELS` describes best (lowest AIC)."""
        return {name: int(np.sum(self.best == name)) for name in MODELS}


@dataclass(frozen=True, eq=False)
class ALDFit:
    """Everything :func:`fit_ald` learns from a C×D weight matrix.

    ``pos``/``neg``: the paper's per-class regression fits of the positive weights and of the
    magnitudes of the negative weights; ``joint_pos``/``joint_neg``: the same fit once on all positive
    entries of W and once on all negative magnitudes (classes whose row holds NaN/Inf left out);
    ``marginal_mean_pos``/``marginal_mean_neg``: the mean over classes of the per-class m (NaN classes
    skipped). These are None when ``method="mle"``. ``mle`` (beyond the paper) is None when
    ``method="regression"``.
    """

    n_classes: int
    n_inputs: int
    pos: PartFit | None
    neg: PartFit | None
    joint_pos: RegressionFit | None
    joint_neg: RegressionFit | None
    marginal_mean_pos: float | None
    marginal_mean_neg: float | None
    mle: MLEFit | None

    def __repr__(self) -> str:
        fits = [
            name
            for name, part in (("the paper's regression", self.pos), ("maximum likelihood", self.mle))
            if part
        ]
        return f"ALDFit({self.n_classes} classes × {self.n_inputs} inputs; {' and '.join(fits)})"

    def summary(self) -> dict[str, Any]:
        """Per-model figures as a JSON-safe dict (NaN → None).

        Keys: ``n_classes``, ``n_inputs``, ``marginal_mean_pos``, ``marginal_mean_neg``, ``joint``
        ({pos, neg} → {mean, r2, slope, intercept, kappa, lam, n, reason}), ``r2_quantiles`` ({pos, neg}
        → {min, p05, p25, p50, p75, p95, max} over classes), ``degenerate`` (classes with a reason, per
        part and per reason), ``n_zero`` (exact zeros in W), ``mle`` (medians of κ, loc, scale and KS,
        degenerate count) and ``aic`` (how many classes each model wins, median AIC gaps). The keys of
        a part not computed are None.
        """
        out: dict[str, Any] = {
            "n_classes": self.n_classes,
            "n_inputs": self.n_inputs,
            "marginal_mean_pos": _json_float(self.marginal_mean_pos),
            "marginal_mean_neg": _json_float(self.marginal_mean_neg),
            "joint": None,
            "r2_quantiles": None,
            "degenerate": None,
            "n_zero": None,
            "mle": None,
            "aic": None,
        }
        if self.pos is not None and self.neg is not None:
            assert self.joint_pos is not None and self.joint_neg is not None
            out["joint"] = {"pos": _joint_summary(self.joint_pos), "neg": _joint_summary(self.joint_neg)}
            out["r2_quantiles"] = {
                "pos": self.pos.r2_quantiles()._asdict(),
                "neg": self.neg.r2_quantiles()._asdict(),
            }
            out["degenerate"] = {
                "pos": _reason_counts(self.pos.reason),
                "neg": _reason_counts(self.neg.reason),
            }
            out["n_zero"] = int(self.pos.n_zero.sum())
        if self.mle is not None:
            m = self.mle
            out["degenerate"] = {**(out["degenerate"] or {}), "mle": _reason_counts(m.reason)}
            out["mle"] = {
                "note": _MLE_NOTE,
                "median_kappa": _nanmedian(m.kappa),
                "median_loc": _nanmedian(m.loc),
                "median_scale": _nanmedian(m.scale),
                "median_ks": _nanmedian(m.ks),
            }
            out["aic"] = {
                "note": _MLE_NOTE,
                "best_counts": m.best_counts(),
                "median_gauss_minus_ald": _nanmedian(m.aic_gauss - m.aic_ald),
                "median_laplace_minus_ald": _nanmedian(m.aic_laplace - m.aic_ald),
            }
        return out

    def to_text(self, name: str = "the final layer") -> str:
        """The per-model figures as a few lines for a person: the paper's first, then what goes beyond it.

        ``name``: what the first line calls the layer (``fclens weights`` gives the model's name).
        """

        def number(value: float | None) -> str:
            return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"

        lines = [f"{name}: final layer {self.n_classes} classes × {self.n_inputs} inputs"]
        if self.pos is not None and self.neg is not None:
            assert self.joint_pos is not None and self.joint_neg is not None
            pos, neg = self.joint_pos, self.joint_neg
            lines += [
                "the paper's regression fit (arXiv 2205.11908):",
                f"  marginal mean  pos {number(self.marginal_mean_pos)}   neg {number(self.marginal_mean_neg)}",
                f"  joint fit      pos mean {number(pos.mean)} R² {number(pos.r2)}   "
                f"neg mean {number(neg.mean)} R² {number(neg.r2)}",
            ]
            for part, fit in (("pos", self.pos), ("neg", self.neg)):
                q = fit.r2_quantiles()
                lines.append(
                    f"  per-class R² {part}: median {number(q.p50)} (5% {number(q.p05)}, 95% {number(q.p95)})"
                )
        if self.mle is not None:
            counts = ", ".join(f"{model} {count}" for model, count in self.mle.best_counts().items())
            lines += ["beyond the paper (maximum likelihood, AIC):", f"  classes best described by {counts}"]
        return "\n".join(lines)

    def to_json(self, class_names: Sequence[str] | None = None) -> str:
        """The :meth:`summary` plus every per-class array, as a JSON document (NaN → null).

        Layout: ``{"summary": ..., "classes": {"index": [...], "name": [...], "pos": {field: [...]},
        "neg": {...}, "mle": {...}}}``; a part not computed is null.
        """
        names = self._names(class_names)
        doc = {
            "summary": self.summary(),
            "classes": {
                "index": list(range(self.n_classes)),
                "name": names,
                "pos": _columns(self.pos),
                "neg": _columns(self.neg),
                "mle": _columns(self.mle),
            },
        }
        return json.dumps(doc, allow_nan=False)

    def to_csv(
        self, path: str | os.PathLike[str] | None = None, class_names: Sequence[str] | None = None
    ) -> str:
        """One row per class, as CSV text; also written atomically to ``path`` if given.

        Columns: index, name, then pos_/neg_ slope intercept r2 kappa lambda mean n n_zero reason, then
        mle_kappa mle_loc mle_scale mle_loglik mle_ks mle_ks_pvalue aic_ald aic_gauss aic_laplace best
        mle_reason. NaN and parts not computed are empty cells; floats keep full precision.
        """
        names = self._names(class_names)
        part_cols = ("slope", "intercept", "r2", "kappa", "lam", "mean", "n", "n_zero", "reason")
        mle_cols = ("kappa", "loc", "scale", "loglik", "ks", "ks_pvalue")
        aic_cols = ("aic_ald", "aic_gauss", "aic_laplace", "best", "reason")
        header = ["index", "name"]
        for part in ("pos", "neg"):
            header += [f"{part}_{'lambda' if c == 'lam' else c}" for c in part_cols]
        header += [f"mle_{c}" for c in mle_cols] + [c if c != "reason" else "mle_reason" for c in aic_cols]

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        for k in range(self.n_classes):
            row: list[str] = [str(k), names[k] or ""]
            for part in (self.pos, self.neg):
                row += [_csv_cell(part, c, k) for c in part_cols]
            row += [_csv_cell(self.mle, c, k) for c in mle_cols + aic_cols]
            writer.writerow(row)
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def _names(self, class_names: Sequence[str] | None) -> list[str | None]:
        if class_names is None:
            return [None] * self.n_classes
        if len(class_names) != self.n_classes:
            raise FclensError(
                f"class_names has {len(class_names)} entries, the fit has {self.n_classes} classes"
            )
        return [str(name) for name in class_names]

    def _repr_html_(self) -> str:
        """In a notebook: the paper's per-model figures, ours beside them, and the R² histogram."""
        from fclens.report.notebook import ald_html

        return ald_html(self)

    def plot(self, k: int | None = None, weight: Any = None, class_name: str | None = None) -> Figure:
        """The author's fit plot of class ``k``, drawn from ``weight`` (the C×D matrix fitted, or row k);
        without ``k``, the histogram of every class's R²."""
        from fclens.report.notebook import ald_figure

        return ald_figure(self, k, weight, class_name)


# ---------------------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------------------
def fit_ald(weight: Any, method: str = "all", workers: None = None) -> ALDFit:
    """Fit an ALD to every class of a final layer's weight matrix (PAPER.md §2, plus an MLE).

    ``weight``: C classes × D inputs, a torch tensor or anything numpy can read; a C×D×1×1 (1×1 conv
    classifier) is squeezed to C×D and a 1-D row is one class. ``method``: "all", "regression" (the
    paper's fit only, ``mle`` None) or "mle" (the maximum-likelihood fit only, regression parts None).
    ``workers``: deprecated and ignored (fclens 0.1's thread pool is gone: it lost on shared machines).
    """
    if workers is not None:
        deprecation.warn(
            "fit_ald(workers=…)",
            "no workers= (ignored: the fit runs in one thread since 0.1's thread pool went)",
        )
    if method not in METHODS:
        raise FclensError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    w = as_matrix(weight)
    n_classes, n_inputs = w.shape
    with_regression, with_mle = method in ("all", "regression"), method in ("all", "mle")
    tiles = _per_tile(w, with_regression, with_mle)
    non_finite = np.concatenate([tile.non_finite for tile in tiles])
    bad = non_finite > 0

    pos = neg = None
    joint_pos = joint_neg = None
    mean_pos = mean_neg = None
    if with_regression:
        pos, neg = _parts(_joined_sums(tiles), bad)
        # Sorted afresh from W: quicksort is slower on the already row-sorted values.
        everything = np.sort((w[~bad] if bad.any() else w).ravel())[None, :]
        joint_pos, joint_neg = (part.row(0) for part in _fit_parts(everything, np.zeros(1, dtype=np.int64)))
        mean_pos, mean_neg = _nanmean(pos.mean), _nanmean(neg.mean)
    mle = None
    if with_mle:
        mle = _mle_result(np.concatenate([tile.mle for tile in tiles], axis=1), bad, n_inputs)
    return ALDFit(
        n_classes=n_classes,
        n_inputs=n_inputs,
        pos=pos,
        neg=neg,
        joint_pos=joint_pos,
        joint_neg=joint_neg,
        marginal_mean_pos=mean_pos,
        marginal_mean_neg=mean_neg,
        mle=mle,
    )


def regression_fit(values: Any) -> RegressionFit:
    """The paper's regression fit (PAPER.md §2) of one 1-D sample of numbers ≥ 0.

    Exact zeros are left out of the fit and counted in ``n_zero``; a sample holding NaN/Inf, fewer than
    three positive values, constant values or a line with a ≤ e^b gives NaN numbers and a ``reason``.
    Negative values raise ValueError: pass magnitudes. Used by :mod:`fclens.tree` for the R² of a node.
    """
    y = as_numpy(values, "values").reshape(-1)
    if np.any(y < 0):
        raise FclensError("regression_fit takes numbers >= 0 (pass magnitudes of negative weights)")
    finite = np.isfinite(y)
    row = np.sort(np.where(finite, y, 0))[None, :]
    pos, _ = _fit_parts(row, np.array([y.size - np.count_nonzero(finite)]))
    return pos.row(0)


# ---------------------------------------------------------------------------------------------------------
# Every class, a tile of rows at a time
# ---------------------------------------------------------------------------------------------------------
class _PartSums(NamedTuple):
    """What the least-squares line of one part (positive values, or negative magnitudes) needs, per row."""

    n: np.ndarray  # values in the part
    s_t: np.ndarray  # Σt, t = ln|value|
    s_rt: np.ndarray  # Σ rank·t, rank 0..n−1 from the smallest magnitude up
    s_tt: np.ndarray  # Σt²
    constant: np.ndarray  # all values of the part are equal
    n_zero: np.ndarray  # exact zeros of the row left out of the part (only the positive part has any)


class _Tile(NamedTuple):
    """What one tile of rows gives: per row, NaN/Inf count, regression sums (neg, pos), MLE statistics."""

    non_finite: np.ndarray
    sums: tuple[_PartSums, _PartSums] | None
    mle: np.ndarray | None


def _per_tile(w: np.ndarray, regression: bool, mle: bool) -> list[_Tile]:
    """Cut W into tiles of whole rows (about ``_CHUNK`` values each), sort each tile once while it sits
    in the CPU cache, and hand it to the regression sums and/or the MLE. In row order.

    One thread, a plain loop: on the shared 2-core machine a thread pool over the tiles ran a whole
    1000×1280 or 1000×2048 layer at 0.79–0.97× this loop's speed, and every row at once (no tiles)
    took 1.04–1.29× this loop's time (``benchmarks/bench_ald.py --tiles``, BENCHMARKS.md, issue 14).
    """
    n_rows, n = w.shape
    step = max(1, _CHUNK // n)
    # Each tile is sorted in place in this one buffer: no fresh allocation per tile.
    scratch = np.empty((min(step, n_rows), n), dtype=w.dtype)
    tiles = []
    for start in range(0, n_rows, step):
        block = w[start : start + step]
        rows = scratch[: len(block)]
        non_finite = _sort_rows(block, out=rows)
        tiles.append(
            _Tile(
                non_finite=non_finite,
                sums=_regression_sums(rows, non_finite) if regression else None,
                mle=_mle_block(rows) if mle else None,
            )
        )
    return tiles


def _sort_rows(block: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write ``block`` to ``out`` with every row sorted ascending; return per row how many NaN/Inf it held.

    Sorting is exact in the input's own precision (float32 sorts twice as fast as float64). A row with
    NaN/Inf has them replaced by 0 before sorting, so that the sorted layout stays valid; such rows are
    reported with a reason, not fitted.
    """
    out[...] = block
    out.sort(axis=1)
    # NaN sorts last and ±inf to the ends, so a row is finite iff its two ends are: no pass over W.
    bad = ~(np.isfinite(out[:, 0]) & np.isfinite(out[:, -1]))
    non_finite = np.zeros(len(out), dtype=np.int64)
    if bad.any():
        finite = np.isfinite(out[bad])
        non_finite[bad] = out.shape[1] - np.count_nonzero(finite, axis=1)
        out[bad] = np.sort(np.where(finite, out[bad], 0), axis=1)
    return non_finite


# ---------------------------------------------------------------------------------------------------------
# The paper's regression fit, vectorised
# ---------------------------------------------------------------------------------------------------------
def _joined_sums(tiles: list[_Tile]) -> tuple[_PartSums, _PartSums]:
    """The regression sums (negative part, positive part) of all tiles as one, in row order."""
    neg, pos = (
        _PartSums(*(np.concatenate(field) for field in zip(*parts, strict=True)))
        for parts in zip(*(tile.sums for tile in tiles if tile.sums), strict=True)
    )
    return neg, pos


def _parts(sums: tuple[_PartSums, _PartSums], bad: np.ndarray) -> tuple[PartFit, PartFit]:
    """The regression fit of the positive part and of the negative magnitudes of every row, from the
    sums of :func:`_regression_sums` (``bad``: rows that held NaN/Inf)."""
    neg, pos = sums
    return _part_from_sums(pos, bad), _part_from_sums(neg, bad)


def _fit_parts(rows: np.ndarray, n_replaced: np.ndarray) -> tuple[PartFit, PartFit]:
    """The regression fit of the positive part and of the negative magnitudes of every sorted row."""
    return _parts(_regression_sums(rows, n_replaced), n_replaced > 0)


def _regression_sums(rows: np.ndarray, n_replaced: np.ndarray) -> tuple[_PartSums, _PartSums]:
    """The sums behind the regression fit of the negative magnitudes and of the positive part of
    every row.

    ``rows``: R×L, each row sorted ascending and finite. ``n_replaced``: per row, how many NaN/Inf the
    caller replaced by 0 before sorting; these are not counted as zeros.

    In a sorted row the negative values fill the first n_N columns (most negative first, so the
    magnitude in column c has rank n_N − 1 − c) and the positive values, ascending, the last n_P
    columns (rank c − (L − n_P)); exact zeros sit between. So the sums the least-squares line needs are
    sums over contiguous runs of the flattened matrix, whatever the counts: no loop over rows.
    """
    n_rows, length = rows.shape
    n_neg = _count_sorted(rows, strict=True)
    n_pos = length - _count_sorted(rows, strict=False)
    (neg_t, neg_ct, neg_tt), (pos_t, pos_ct, pos_tt) = _log_sums(rows, n_neg, length - n_pos)
    r = np.arange(n_rows)
    last = max(length - 1, 0)
    ends = rows if length else np.zeros((n_rows, 1))  # rows with no value at all: both parts are empty
    neg = _PartSums(
        n=n_neg,
        s_t=neg_t,
        s_rt=(n_neg - 1) * neg_t - neg_ct,
        s_tt=neg_tt,
        constant=ends[r, 0] == ends[r, np.maximum(n_neg - 1, 0)],
        n_zero=np.zeros(n_rows, dtype=np.int64),
    )
    pos = _PartSums(
        n=n_pos,
        s_t=pos_t,
        s_rt=pos_ct - (length - n_pos) * pos_t,
        s_tt=pos_tt,
        constant=ends[r, np.minimum(length - n_pos, last)] == ends[r, last],
        n_zero=length - n_neg - n_pos - n_replaced,
    )
    return neg, pos


def _part_from_sums(sums: _PartSums, bad: np.ndarray) -> PartFit:
    """The line, its R² and the ALD parameters of one part of every row, from its sums over the part
    (``bad``: rows that held NaN/Inf).

    With t_i = ln y_(i) and rank i − 1 = 0..n−1, x_i = (i−1)/n.
    """
    n = sums.n
    with np.errstate(all="ignore"):
        nf = n.astype(np.float64)
        # x_i = (i−1)/n: x̄ = (n−1)/(2n) and Σ(x − x̄)² = (n² − 1)/(12n) are closed-form.
        x_mean = (nf - 1) / (2 * nf)
        s_xx = (nf * nf - 1) / (12 * nf)
        t_mean = sums.s_t / nf
        s_xt = sums.s_rt / nf - x_mean * sums.s_t  # Σ(x − x̄)(t − t̄)
        s_tt_centred = sums.s_tt - sums.s_t * t_mean  # Σ(t − t̄)²
        # Least-squares line t ≈ a·x + b, and R² = 1 − Σ(t − (a x + b))² / Σ(t − t̄)², which for this
        # line equals S_xt² / (S_xx S_tt).
        slope = np.where(sums.constant, 0.0, s_xt / s_xx)  # exactly flat, whatever the sums' round-off
        intercept = t_mean - slope * x_mean
        r2 = s_xt * s_xt / (s_xx * s_tt_centred)
        # ALD parameters from the line (PAPER.md §2): κ = sqrt(e^b / (a − e^b)), λ = a·κ, and the ALD
        # mean at location 0, m = (1 − κ²) / (λ·κ).
        eb = np.exp(intercept)
        kappa = np.sqrt(eb / (slope - eb))
        lam = slope * kappa
        mean = (1 - kappa**2) / (lam * kappa)

    few = n < MIN_VALUES
    constant = sums.constant & ~few
    no_kappa = ~few & ~constant & ~(slope > eb)
    reason = np.full(n.shape, "", dtype=object)
    reason[no_kappa] = "slope a <= e^b: kappa undefined"
    reason[constant] = "constant values"
    reason[few] = f"fewer than {MIN_VALUES} values"
    reason[n == 0] = "empty part"
    reason[bad] = "NaN or Inf in row"

    nan_line = bad | few
    nan_r2 = nan_line | constant
    nan_ald = nan_r2 | no_kappa
    return PartFit(
        slope=np.where(nan_line, np.nan, slope),
        intercept=np.where(nan_line, np.nan, intercept),
        r2=np.where(nan_r2, np.nan, r2),
        kappa=np.where(nan_ald, np.nan, kappa),
        lam=np.where(nan_ald, np.nan, lam),
        mean=np.where(nan_ald, np.nan, mean),
        n=n.astype(np.int64),
        n_zero=np.asarray(sums.n_zero, dtype=np.int64),
        reason=reason.astype(str),
    )


def _count_sorted(rows: np.ndarray, strict: bool) -> np.ndarray:
    """Per row of a row-wise ascending matrix, how many entries are < 0 (``strict``) or ≤ 0: the column
    of its first entry ≥ 0 (> 0), which ``argmax`` of a boolean row finds, or the row length if none."""
    n_rows, length = rows.shape
    if length == 0:
        return np.zeros(n_rows, dtype=np.int64)
    beyond = rows >= 0 if strict else rows > 0
    return np.where(beyond[:, -1], np.argmax(beyond, axis=1), length)


def _log_sums(rows: np.ndarray, neg_end: np.ndarray, pos_start: np.ndarray) -> np.ndarray:
    """Σt, Σc·t and Σt² over each row's negative part (columns < ``neg_end``) and positive part
    (columns ≥ ``pos_start``), with t = ln|value| in float64 and c the column: a (2, 3, R) array, [0]
    for the negative parts, [1] for the positive parts.

    Callers pass a tile small enough for the CPU cache; only rows longer than ``_CHUNK`` values (the
    joint fit's single row) are cut into pieces. In the flattened piece every row is three contiguous
    runs (negative, zero, positive values); t, c·t and t² are written once and all runs are summed by
    ``np.add.reduceat``. Each sum covers exactly its run's values, in an order fixed by the run alone,
    so a class's fit is the same bit for bit whatever else is in the matrix (a BLAS matrix-vector
    product would not promise that).
    """
    n_rows, length = rows.shape
    out = np.zeros((3, 3 * n_rows))  # (Σt, Σc·t, Σt²) × (row, run)
    width = max(1, min(length, _CHUNK))
    column = np.arange(width, dtype=np.float64)
    first = np.stack([np.zeros_like(neg_end), neg_end, pos_start], axis=1)  # first column of each run
    row = np.arange(n_rows)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):  # ln 0 = −inf: only in the zeros' runs, unused
        for c0 in range(0, length, width):
            piece = rows[:, c0 : c0 + width]
            cols = piece.shape[1]
            starts = (np.clip(first - c0, 0, cols) + cols * row).ravel()
            runs = np.flatnonzero(np.diff(starts, append=piece.size))  # empty runs are left out
            # |value| in the input's precision (exact), its logarithm in float64.
            t = np.log(np.abs(piece), dtype=np.float64)
            terms = (t, t * column[:cols], t * t)
            # One 1-D reduceat per term over the flattened piece: every run is a contiguous slice of it.
            sums = [np.add.reduceat(term.ravel(), starts[runs]) for term in terms]
            sums[1] += c0 * sums[0]  # the piece's column j is the row's column c0 + j
            out[:, runs] += sums
    neg, _, pos = out.reshape(3, n_rows, 3).transpose(2, 0, 1)
    return np.stack([neg, pos])


# ---------------------------------------------------------------------------------------------------------
# Beyond the paper: maximum likelihood, KS, AIC
# ---------------------------------------------------------------------------------------------------------
def _mle_result(stats: np.ndarray, bad: np.ndarray, n: int) -> MLEFit:
    """Per-row maximum-likelihood fits, KS and AIC from the statistics of :func:`_mle_block` for rows of
    ``n`` values (``bad``: rows that held NaN/Inf)."""
    n_rows = stats.shape[1]
    kappa, loc, scale, loglik, ks, loglik_gauss, loglik_laplace, edge, distinct = stats
    edge = edge > 0
    with np.errstate(all="ignore"):
        # Stephens' (1970) approximation of the KS p-value, within ~1 % of the exact one for n ≥ 100 and
        # vectorised (scipy's exact kstwo.sf costs ~1 ms per row).
        ks_pvalue = scipy.special.kolmogorov(ks * (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)))

    reason = np.full(n_rows, "", dtype=object)
    constant = distinct == 1
    two_valued = distinct == 2
    too_few = np.full(n_rows, n < MIN_VALUES)
    reason[edge] = "likelihood highest at the sample's edge (one-sided exponential)"
    reason[two_valued] = "fewer than 3 distinct values"
    reason[constant] = "constant values"
    reason[too_few] = f"fewer than {MIN_VALUES} values"
    reason[bad] = "NaN or Inf in row"
    invalid = bad | constant | two_valued | too_few

    def clean(a: np.ndarray) -> np.ndarray:
        return np.where(invalid, np.nan, a)

    aic = np.stack([2 * 3 - 2 * loglik, 2 * 2 - 2 * loglik_gauss, 2 * 2 - 2 * loglik_laplace])
    aic = np.where(invalid[None, :], np.nan, aic)
    winner = np.argmin(np.where(np.isnan(aic), np.inf, aic), axis=0)
    best_name = np.where(np.isfinite(aic).all(axis=0), np.asarray(MODELS)[winner], "")
    return MLEFit(
        kappa=clean(kappa),
        loc=clean(loc),
        scale=clean(scale),
        loglik=clean(loglik),
        ks=clean(ks),
        ks_pvalue=clean(ks_pvalue),
        aic_ald=aic[0],
        aic_gauss=aic[1],
        aic_laplace=aic[2],
        best=best_name.astype(str),
        n=np.full(n_rows, n, dtype=np.int64),
        reason=reason.astype(str),
    )


def _mle_block(rows: np.ndarray) -> np.ndarray:
    """MLE of scipy's laplace_asymmetric(kappa, loc, scale) for a B×n block of ascending rows, exact.

    Density: f(x) = 1/(σ(κ + 1/κ)) · exp(−κ(x−θ)/σ) for x ≥ θ, exp((x−θ)/(κσ)) for x < θ. For a fixed
    location θ let α = mean((x−θ)⁺), β = mean((θ−x)⁺); then ℓ/n = −ln σ − ln(κ + 1/κ) − (κα + β/κ)/σ,
    maximised at σ = κα + β/κ, then at κ⁴ = β/α, which gives

        κ = (β/α)^{1/4},  σ = (αβ)^{1/4}(√α + √β),  ℓ(θ) = −n(2 ln(√α + √β) + 1).

    Between two sample points α and β are linear in θ, so √α + √β is concave there and its minimum
    over θ lies at a sample point. Every sample point x_(j) of every row is evaluated at once from
    cumulative sums: β·n = (j+1)·x_(j) − Σ_{i≤j} x_(i) and α·n = β·n + Σ_i x_(i) − n·x_(j). If the best
    point is the sample's minimum or maximum, the supremum is a one-sided exponential, not an ALD:
    κ and σ are NaN there (``edge`` = 1) while ℓ stays the supremum.

    Also the Kolmogorov–Smirnov distance to the fitted ALD and the maximised log-likelihoods of a
    Gaussian and of a symmetric Laplace. Returns the rows kappa, loc, scale, loglik, ks, loglik_gauss,
    loglik_laplace, edge and distinct (how many distinct values the row holds, counted up to 3) of a
    (9, B) array.
    """
    n_rows, n = rows.shape
    r = np.arange(n_rows)
    j = np.arange(n)
    mid = n // 2
    x = rows.astype(np.float64)
    centre = x[:, mid].copy()  # a median: centring keeps the cumulative sums' round-off small
    x -= centre[:, None]
    with np.errstate(all="ignore"):
        csum = np.cumsum(x, axis=1)
        total = csum[:, -1:]
        below = (j + 1) * x - csum
        above = below + total - n * x
        np.maximum(below, 0, out=below)
        np.maximum(above, 0, out=above)
        profile = np.sqrt(above) + np.sqrt(below)
        best = np.argmin(profile, axis=1)
        alpha, beta = above[r, best] / n, below[r, best] / n
        theta = x[r, best]
        edge = (theta == x[:, 0]) | (theta == x[:, -1])
        loglik = -n * (2 * np.log(profile[r, best] / math.sqrt(n)) + 1)
        kappa = np.where(edge, np.nan, (beta / alpha) ** 0.25)
        scale = np.where(edge, np.nan, (alpha * beta) ** 0.25 * (np.sqrt(alpha) + np.sqrt(beta)))

        # Kolmogorov–Smirnov distance to the fitted ALD, whose CDF at z = (x−θ)/σ is
        # κ²/(1+κ²)·e^{z/κ} for z < 0 and 1 − e^{−κz}/(1+κ²) for z ≥ 0.
        z = (x - theta[:, None]) / scale[:, None]
        left = z < 0
        k = kappa[:, None]
        k2 = k * k
        e = np.exp(z * np.where(left, 1 / k, -k))
        cdf = np.where(left, k2 / (1 + k2) * e, 1 - e / (1 + k2))
        cdf -= j / n  # F(x_(j)) − j/n; the statistic is max over j of it and of (j+1)/n − F(x_(j))
        ks = np.maximum(cdf.max(axis=1), 1 / n - cdf.min(axis=1))

        # Competing hypotheses, each at its own MLE: Gaussian (mean, sd), Laplace (median, mean |x − median|).
        var = np.einsum("ij,ij->i", x, x) / n - (total[:, 0] / n) ** 2
        loglik_gauss = -0.5 * n * (np.log(2 * np.pi * var) + 1)
        mad = (above[:, mid] + below[:, mid]) / n
        loglik_laplace = -n * (np.log(2 * mad) + 1)
    inner = ((rows > rows[:, :1]) & (rows < rows[:, -1:])).any(axis=1)  # a value strictly inside the range
    distinct = np.where(rows[:, 0] == rows[:, -1], 1, np.where(inner, 3, 2))
    return np.stack([kappa, theta + centre, scale, loglik, ks, loglik_gauss, loglik_laplace, edge, distinct])


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------
def as_numpy(x: Any, name: str = "values") -> np.ndarray:
    """A torch tensor (any device or grad) or array-like as a numpy float32 or float64 array, not copied
    when it already is one (callers never write into it); anything but numbers is one line naming ``name``.

    float32 stays float32 (sorting is exact in it and faster); every other type becomes float64.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        x = x.numpy() if str(x.dtype) in ("torch.float32", "torch.float64") else x.double().numpy()
    try:
        a = np.asarray(x)
    except ValueError:  # a ragged list
        a = None
    if a is None or a.dtype.kind not in "biuf":
        raise FclensError(f"{name} must be numbers (a tensor or array of them), got {described(x)}")
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def as_matrix(weight: Any) -> np.ndarray:
    """``weight`` as a float C×D matrix: 1-D → 1×D, C×D×1×1 → C×D; anything else is an FclensError."""
    w = as_numpy(weight, "weight")
    if w.ndim == 4 and w.shape[2:] == (1, 1):
        w = w[:, :, 0, 0]
    elif w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2 or w.size == 0:
        raise FclensError(f"weight must be a non-empty C×D matrix (or C×D×1×1), got shape {tuple(w.shape)}")
    return w


def _scalar(v: Any) -> Any:
    """A numpy scalar as the matching Python scalar."""
    return v.item() if isinstance(v, np.generic) else v


def _json_float(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _nanmean(a: np.ndarray) -> float | None:
    finite = a[np.isfinite(a)]
    return float(finite.mean()) if finite.size else None


def _nanmedian(a: np.ndarray) -> float | None:
    finite = a[np.isfinite(a)]
    return float(np.median(finite)) if finite.size else None


def _quantiles(a: np.ndarray) -> Quantiles:
    """min, 5 %, 25 %, 50 %, 75 %, 95 %, max of the finite entries of ``a`` (None if there are none)."""
    finite = a[np.isfinite(a)]
    if not finite.size:
        return Quantiles(*[None] * len(Quantiles._fields))
    return Quantiles(*map(float, np.quantile(finite, [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1])))


def _reason_counts(reason: np.ndarray) -> dict[str, Any]:
    bad = reason[reason != ""]
    kinds, counts = np.unique(bad, return_counts=True)
    return {"count": int(bad.size), "by_reason": {str(k): int(c) for k, c in zip(kinds, counts, strict=True)}}


def _joint_summary(fit: RegressionFit) -> dict[str, Any]:
    return {
        "mean": _json_float(fit.mean),
        "r2": _json_float(fit.r2),
        "slope": _json_float(fit.slope),
        "intercept": _json_float(fit.intercept),
        "kappa": _json_float(fit.kappa),
        "lam": _json_float(fit.lam),
        "n": fit.n,
        "n_zero": fit.n_zero,
        "reason": fit.reason,
    }


def _columns(result: PartFit | MLEFit | None) -> dict[str, list[Any]] | None:
    """Every array field of ``result`` as a JSON-safe list (NaN → None)."""
    if result is None:
        return None
    out: dict[str, list[Any]] = {}
    for f in fields(result):
        a = getattr(result, f.name)
        if a.dtype.kind == "f":
            out[f.name] = [None if not math.isfinite(v) else v for v in a.tolist()]
        else:
            out[f.name] = a.tolist()
    return out


def _csv_cell(result: PartFit | MLEFit | None, name: str, k: int) -> str:
    if result is None:
        return ""
    v = getattr(result, name)[k]
    if isinstance(v, np.floating):
        return repr(float(v)) if math.isfinite(v) else ""
    return str(v)
