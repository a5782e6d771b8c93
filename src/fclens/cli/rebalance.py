"""``fclens rebalance``: re-fit or adjust the final layer for imbalanced classes, on a training scan's
stored features, judged on an evaluation scan."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fclens.cli.common import (
    comma_list,
    command,
    existing,
    number,
    one_line_warnings,
    print_json,
    print_removed,
)
from fclens.edits import PRIOR_TAU, REBALANCE_DEFAULTS, REBALANCE_METHODS
from fclens.errors import FclensError
from fclens.options import SEED


def register(commands: argparse._SubParsersAction) -> None:
    parser = command(
        commands,
        "rebalance",
        run,
        "re-fit or adjust the final layer for imbalanced classes (the paper's prior-aware loss beside "
        "logit adjustment, Balanced Softmax, cRT and tau-normalisation), on a training scan's stored "
        "features, judged on an evaluation scan",
    )
    labelled_scan = existing("a labelled scan made with fclens scan --features")
    parser.add_argument(
        "train_dir",
        type=labelled_scan,
        metavar="TRAIN_SCAN",
        help="a labelled scan made with fclens scan --features",
    )
    parser.add_argument(
        "--eval",
        type=labelled_scan,
        required=True,
        metavar="EVAL_SCAN",
        help="a labelled scan of other images, same model",
    )
    parser.add_argument(
        "--methods",
        default=",".join(REBALANCE_DEFAULTS),
        help=f"comma-separated: {', '.join(REBALANCE_METHODS)} (default %(default)s)",
    )
    parser.add_argument(
        "--tau",
        type=float,
        default=PRIOR_TAU,
        help=f"strength of the prior (pg-prior, logit-adjust, tau-norm; default {PRIOR_TAU:g})",
    )
    parser.add_argument(
        "--prior",
        help="the training prior as C comma-separated numbers (default: the training scan's labels)",
    )
    parser.add_argument(
        "--seed", type=int, default=SEED, help=f"seed of crt's starting layer (default {SEED})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for rebalance.csv, rebalance.json and per-class.png (default fclens-rebalance-TRAIN_SCAN)",
    )
    parser.add_argument("--html", action="store_true", help="write rebalance.html, one self-contained page")
    parser.add_argument(
        "--write", metavar="METHOD", help="also save the model with that method's final layer as safetensors"
    )


def run(args: argparse.Namespace) -> int:
    from fclens import report
    from fclens.edits.rebalance import rebalance
    from fclens.edits.write import model_source, write_model
    from fclens.io import atomic_write_text, safe_name
    from fclens.report.rebalance import OUTPUTS, rebalance_figure, rebalance_page
    from fclens.scanning import read_scan

    methods = comma_list(args.methods)
    if args.write:
        if args.write not in REBALANCE_METHODS:
            raise FclensError(
                f"--write takes one method of {', '.join(REBALANCE_METHODS)}, got {args.write!r}"
            )
        methods += [args.write] if args.write not in methods else []
    prior = (
        "labels"
        if args.prior is None
        else [number(text, "--prior takes numbers") for text in args.prior.split(",")]
    )
    train = read_scan(args.train_dir)
    if args.write:
        model_source(train)  # a scan of a module cannot be written: say so before anything is fitted
    with one_line_warnings():
        result = rebalance(train, read_scan(args.eval), methods, tau=args.tau, prior=prior, seed=args.seed)
    out = args.out or Path(f"fclens-rebalance-{safe_name(args.train_dir.resolve().name)}")
    written = [
        atomic_write_text(out / "rebalance.csv", result.to_csv()),
        atomic_write_text(out / "rebalance.json", json.dumps(result.to_dict(), indent=1) + "\n"),
        report.save_figure(rebalance_figure(result, class_names=train.class_names), out / "per-class.png"),
    ]
    if args.html:
        model_name = str(train.manifest.model.get("name") or "the scanned model")
        page = rebalance_page(result, args.train_dir.name, args.eval.name, model_name, train.class_names)
        written.append(atomic_write_text(out / "rebalance.html", page))
    if args.write:
        written.append(
            write_model(train, result.layers[args.write], out / f"rebalanced-{args.write}.safetensors")
        )
    removed = report.remove_stale(out, written, OUTPUTS)
    if args.json:
        print_json({**result.to_dict(), "files": [str(p) for p in written]})
    else:
        print(result.to_text(), end="")
        print(f"wrote {', '.join(str(p) for p in written)}")
        print_removed(removed)
    return 0
