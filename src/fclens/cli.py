"""The ``fclens`` command: weights, tree, survey, explain, and for data sets scan, atlas, prune and samples.

Exit codes: 0 done; 2 bad input (one line on stderr; the traceback only with ``--debug``); 3 done, but
some items (images, models) were skipped — each with its reason in the summary.

The rule of this module: at the top, only the standard library and light fclens modules (no torch,
timm, numpy, matplotlib, …); every heavy import goes inside the ``_run_*`` function that needs it, so
that ``fclens --help``, ``fclens COMMAND --help`` and ``fclens --version`` answer at once
(tests/test_cli.py checks every subcommand).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fclens import __version__
from fclens.edits import REBALANCE_DEFAULTS, REBALANCE_METHODS
from fclens.errors import FclensError
from fclens.io import atomic_write_text, csv_text, safe_name
from fclens.options import (
    BIAS_CORRECTIONS,
    EXPLAIN_DEFAULTS,
    LABEL_MODES,
    MAP_KIND_NAMES,
    PRUNE_DEFAULT_METHODS,
    PRUNE_METHODS,
    PRUNE_SPARSITIES,
    RUNNER_UP,
    SCAN_DEFAULTS,
    SCORED_NODES,
    TREE_MODES,
    Options,
)

EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except FclensError as error:
        if args.debug:
            raise
        print(f"fclens: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as interrupt:  # a scan says how much it kept; other commands keep finished files
        print(
            f"fclens: {interrupt or 'interrupted; finished work is kept, rerun to continue'}", file=sys.stderr
        )
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(
            f"fclens: internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fclens",
        description="What the final fully-connected layer of an image classifier has learned "
        "(arXiv 2205.11908), and where in an image its most discriminative and most confusing neurons fire.",
        epilog="Exit codes: 0 done, 2 bad input, 3 done but some items were skipped (see the summary).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    weights = _command(
        commands,
        "weights",
        _run_weights,
        "does the final layer follow an Asymmetric Laplace Distribution? (per class, per model)",
    )
    weights.add_argument(
        "--out",
        type=Path,
        help="folder for ald.csv, summary.json and figures (default: fclens-weights-MODEL)",
    )
    weights.add_argument(
        "--plots", action="store_true", help="draw the author's per-class fit plots and the summary figures"
    )
    weights.add_argument(
        "--plot-classes",
        default=None,
        help="classes to plot, comma-separated indices or names, or 'all' "
        "(default: 12 spread over the R² ranking, worst and best included)",
    )
    weights.add_argument("--html", action="store_true", help="write the model's self-contained HTML page")

    tree = _command(commands, "tree", _run_tree, "the recursive split of one class's weights")
    tree.add_argument("--class", dest="target", required=True, help="class index or name")
    _tree_options(tree)

    survey = _command(
        commands,
        "survey",
        _run_survey,
        "the ALD fit of several models, one row per model",
        model_option=False,
    )
    survey.add_argument(
        "--models",
        required=True,
        help="comma-separated sources: efficientnet_lite0, timm:NAME, torchvision:NAME",
    )
    survey.add_argument(
        "--weights-dir",
        type=Path,
        help="folder of local weight files named after the models (NAME.safetensors/.pth)",
    )
    survey.add_argument("--out", type=Path, help="write the table as CSV here too")

    explain = _command(
        commands,
        "explain",
        _run_explain,
        "where in each image the class's most discriminative and most confusing neurons fire",
    )
    explain.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="image files or folders")
    explain.add_argument(
        "--sample",
        action="append",
        default=[],
        metavar="NAME",
        help="add a photo shipped with fclens: chelsea (a cat), coffee (an espresso)",
    )
    explain.add_argument("--class", dest="target", help="class index or name (default: the predicted class)")
    explain.add_argument(
        "--contrast",
        metavar="CLASS",
        help="also show why the image is not CLASS: runner-up (each image's most probable other class), "
        "or a class index or name",
    )
    explain.add_argument(
        "--map",
        dest="maps",
        default=",".join(EXPLAIN_DEFAULTS.maps),
        help=f"map kinds, comma-separated, the first scored: {', '.join(MAP_KIND_NAMES)} "
        f"(default {','.join(EXPLAIN_DEFAULTS.maps)})",
    )
    _tree_options(explain)
    explain.add_argument(
        "--out", type=Path, default=Path("fclens-out"), help="output folder (default: fclens-out)"
    )
    explain.add_argument(
        "--curves",
        action="store_true",
        help="also deletion/insertion AUCs for the terminal nodes and the class (many forwards)",
    )
    explain.add_argument("--html", action="store_true", help="write report.html, one self-contained page")
    explain.add_argument(
        "--overlays",
        action="store_true",
        help="also write an overlay PNG per node and map kind (node-PATH[-KIND].png)",
    )
    explain.add_argument(
        "--seed",
        type=int,
        default=EXPLAIN_DEFAULTS.seed,
        help=f"seed of the noisy smooth-gradcam++ maps (default {EXPLAIN_DEFAULTS.seed})",
    )
    _batch_size_option(explain, EXPLAIN_DEFAULTS)
    explain.add_argument(
        "--target-layer", help="module name to draw maps from (default: found automatically)"
    )
    explain.add_argument(
        "--force", action="store_true", help="redo images that already have explanation.json"
    )

    scan = _command(
        commands,
        "scan",
        _run_scan,
        "scan a data set into one Parquet table: each image's prediction, rival, tree, node maps and contrast",
    )
    scan.add_argument(
        "source", type=Path, metavar="SOURCE", help="a folder of images, or a .csv/.parquet list"
    )
    scan.add_argument(
        "--out", type=Path, required=True, help="the scan directory (manifest + Parquet shards)"
    )
    scan.add_argument(
        "--labels",
        choices=LABEL_MODES,
        default="auto",
        help="auto: class-name subfolders or the list's label column (default); none: no labels",
    )
    _tree_options(scan, SCAN_DEFAULTS)
    scan.add_argument(
        "--map",
        dest="maps",
        choices=MAP_KIND_NAMES,
        default=SCAN_DEFAULTS.primary,
        help=f"the map kind stored per node (default {SCAN_DEFAULTS.primary})",
    )
    scan.add_argument(
        "--features", action="store_true", help="store the final layer's pooled input (for fclens prune)"
    )
    scan.add_argument(
        "--scores",
        choices=SCORED_NODES,
        default=SCAN_DEFAULTS.scores,
        help=f"nodes that get the author's masked score, one forward each (default {SCAN_DEFAULTS.scores})",
    )
    _batch_size_option(scan, SCAN_DEFAULTS)
    scan.add_argument("--engine", choices=("local", "ray"), default="local", help="local (default) or ray")
    scan.add_argument(
        "--workers",
        type=int,
        help="decode processes, or ray: decode tasks beside GPU actors (default: the CPUs)",
    )
    scan.add_argument("--ray-address", help="ray: join this Ray cluster (e.g. auto); default: a local Ray")
    scan.add_argument("--actors", type=int, help="ray: model actors (default: one per GPU, else one per CPU)")
    scan.add_argument(
        "--force", action="store_true", help="start over in a directory that holds another scan"
    )

    atlas = _command(
        commands,
        "atlas",
        _run_atlas,
        "what a scan says about each class: its rivals, its nodes, and the images that show them",
        model_option=False,
    )
    atlas.add_argument("scan_dir", type=Path, metavar="SCAN_DIR", help="a directory written by fclens scan")
    atlas.add_argument("--out", type=Path, required=True, help="folder for atlas.json (and the HTML pages)")
    atlas.add_argument("--html", action="store_true", help="write index.html and one page per class")
    atlas.add_argument("--top-k", type=int, default=8, help="images per list and class (default 8)")
    atlas.add_argument(
        "--causal",
        action="store_true",
        help="test whether the neurons the atlas names cause each of its top 20 pairs: equalise the rival's "
        "weights on them (and on neurons other rules pick), judged on a held-out half of the images; needs "
        "a labelled scan made with fclens scan --features",
    )
    atlas.add_argument(
        "--causal-seed",
        type=int,
        metavar="SEED",
        help="seed of the split into selection and held-out halves, and of the random rule (default 0; "
        "implies --causal)",
    )
    atlas.add_argument(
        "--write",
        metavar="K,J@M",
        help="also save the model with rival J's weights equalised to K's on the M neurons the atlas names "
        "for the pair K → J (chosen on the selection half), as OUT/pair-K-J-M.safetensors; implies --causal",
    )

    prune = _command(
        commands,
        "prune",
        _run_prune,
        "prune the final layer guided by the split trees and the ALD prior, against magnitude and random "
        "pruning, measured on a scan's stored features",
        model_option=False,
    )
    prune.add_argument(
        "scan_dir", type=Path, metavar="SCAN_DIR", help="a directory written by fclens scan --features"
    )
    prune.add_argument(
        "--methods",
        default=",".join(PRUNE_DEFAULT_METHODS),
        help=f"comma-separated: {', '.join(PRUNE_METHODS)} (default %(default)s)",
    )
    prune.add_argument(
        "--sparsity",
        default=",".join(f"{s:g}" for s in PRUNE_SPARSITIES),
        help="comma-separated shares of the final layer's weights to zero, each in [0, 1) "
        "(default %(default)s)",
    )
    prune.add_argument(
        "--bias-correction",
        choices=tuple(BIAS_CORRECTIONS),
        default="off",
        help="move the removed weights' mean contribution into the bias: off (default), on, both (each "
        "point twice); --write applies it unless off",
    )
    prune.add_argument("--seed", type=int, default=0, help="seed of the random method (default 0)")
    prune.add_argument(
        "--out",
        type=Path,
        help="folder for prune.csv, prune.json and curves.png (default fclens-prune-SCAN); what an earlier "
        "run wrote there and this one does not (prune.html, pruned models) is removed",
    )
    prune.add_argument("--html", action="store_true", help="write prune.html, one self-contained page")
    prune.add_argument(
        "--write",
        metavar="METHOD@SPARSITY",
        help="also save the pruned model as safetensors (e.g. tree@0.9), for load_model(..., weights=)",
    )

    rebalance = _command(
        commands,
        "rebalance",
        _run_rebalance,
        "re-fit or adjust the final layer for imbalanced classes (the paper's prior-aware loss beside "
        "logit adjustment, Balanced Softmax, cRT and tau-normalisation), on a training scan's stored "
        "features, judged on an evaluation scan",
        model_option=False,
    )
    rebalance.add_argument(
        "train_dir", type=Path, metavar="TRAIN_SCAN", help="a labelled scan made with fclens scan --features"
    )
    rebalance.add_argument(
        "--eval",
        type=Path,
        required=True,
        metavar="EVAL_SCAN",
        help="a labelled scan of other images, same model",
    )
    rebalance.add_argument(
        "--methods",
        default=",".join(REBALANCE_DEFAULTS),
        help=f"comma-separated: {', '.join(REBALANCE_METHODS)} (default %(default)s)",
    )
    rebalance.add_argument(
        "--tau",
        type=float,
        default=1.0,
        help="strength of the prior (pg-prior, logit-adjust, tau-norm; default 1)",
    )
    rebalance.add_argument(
        "--prior",
        help="the training prior as C comma-separated numbers (default: the training scan's labels)",
    )
    rebalance.add_argument("--seed", type=int, default=0, help="seed of crt's starting layer (default 0)")
    rebalance.add_argument(
        "--out",
        type=Path,
        help="folder for rebalance.csv, rebalance.json and per-class.png (default "
        "fclens-rebalance-TRAIN_SCAN)",
    )
    rebalance.add_argument(
        "--write", metavar="METHOD", help="also save the model with that method's final layer as safetensors"
    )

    samples = _command(
        commands,
        "samples",
        _run_samples,
        "write a labelled folder of real photos (crops and mirror images of fclens's two sample photos, "
        "filed under the ImageNet class each shows) to try scan, atlas and prune on",
        model_option=False,
    )
    samples.add_argument("--out", type=Path, required=True, help="where to write them, a folder per class")
    samples.add_argument("--count", type=int, default=100, help="how many photos (default 100)")
    samples.add_argument("--seed", type=int, default=0, help="seed of the crops (default 0)")
    return parser


def _command(
    commands: Any,
    name: str,
    run: Callable[[argparse.Namespace], int],
    help_text: str,
    model_option: bool = True,
) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help_text, description=help_text)
    command.set_defaults(run=run)
    if model_option:
        command.add_argument(
            "--model",
            default=None,
            help="efficientnet_lite0 (default, offline), efficientnet_lite1/2, timm:NAME, torchvision:NAME",
        )
        command.add_argument(
            "--weights", type=Path, help="local weight file (.safetensors, or .pth read with weights_only)"
        )
        command.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    command.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    command.add_argument("--debug", action="store_true", help="show tracebacks")
    return command


def _tree_options(command: argparse.ArgumentParser, defaults: Options = EXPLAIN_DEFAULTS) -> None:
    command.add_argument(
        "--min-size",
        type=_at_least_two,
        default=defaults.min_size,
        help=f"nodes with fewer weights are not split (default {defaults.min_size}, the author's)",
    )
    command.add_argument(
        "--mode",
        choices=TREE_MODES,
        default=defaults.mode,
        help=f"chains: the author's + and − chains; full: a full binary tree (default {defaults.mode})",
    )


def _batch_size_option(command: argparse.ArgumentParser, defaults: Options) -> None:
    command.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"images per forward pass (default {defaults.batch_size})",
    )


def _at_least_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 2:
        raise argparse.ArgumentTypeError("must be at least 2")
    return value


def _load(args: argparse.Namespace):
    from fclens.models import load_model

    return load_model(args.model, weights=args.weights, device=args.device)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, allow_nan=False))


# --------------------------------------------------------------------------------------------- weights
def _run_weights(args: argparse.Namespace) -> int:
    from fclens.ald import fit_ald

    model = _load(args)
    weight = model.head.weight.cpu()
    fit = fit_ald(weight)
    out = args.out or Path(f"fclens-weights-{safe_name(model.name)}")
    summary = {
        "model": model.name,
        "classes": int(weight.shape[0]),
        "inputs": int(weight.shape[1]),
        **fit.summary(),
    }
    fit.to_csv(out / "ald.csv", class_names=model.class_names)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False))
    written = [out / "ald.csv", out / "summary.json"]
    if args.plots or args.html:
        classes = _plot_classes(args.plot_classes, fit, model)
        written += _weights_figures(out, model, fit, classes, html=args.html, plots=args.plots)
    if args.json:
        _print_json({**summary, "files": [str(p) for p in written]})
    else:
        print(_weights_text(summary))
        print(f"\nwrote {', '.join(str(p) for p in written[:4])}{' …' if len(written) > 4 else ''}")
    return 0


def _plot_classes(spec: str | None, fit: Any, model: Any) -> list[int]:
    """The classes to draw: the user's list, 'all', or the page's default spread over the R² ranking."""
    from fclens.report import default_classes

    if spec == "all":
        return list(range(model.num_classes))
    if spec:
        return [model.class_index(item) for item in spec.split(",") if item.strip()]
    return default_classes(fit)


def _weights_figures(
    out: Path, model: Any, fit: Any, classes: list[int], html: bool, plots: bool
) -> list[Path]:
    from tqdm import tqdm

    from fclens import report

    weight = model.head.weight.cpu()
    written: list[Path] = []
    if plots:
        for name, figure in (
            ("r2-histogram.png", report.r2_histogram(fit)),
            ("slope-intercept.png", report.slope_intercept(fit, model.class_names)),
        ):
            written.append(report.save_figure(figure, out / name))
        for k in tqdm(classes, desc="fit plots", unit="class", leave=False):
            figure = report.fit_plot(weight[k], model.class_names[k])
            written.append(
                report.save_figure(figure, out / "classes" / f"{k:04d}-{safe_name(model.class_names[k])}.png")
            )
    if html:
        page = report.weights_page(model.name, fit, model.class_names, weight, classes_to_plot=classes)
        written.append(atomic_write_text(out / "weights.html", page))
    return written


def _weights_text(summary: dict[str, Any]) -> str:
    def number(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4g}"

    joint = summary["joint"]
    lines = [
        f"{summary['model']}: final layer {summary['classes']} classes × {summary['inputs']} inputs",
        "the paper's regression fit (arXiv 2205.11908):",
        f"  marginal mean  pos {number(summary['marginal_mean_pos'])}   neg {number(summary['marginal_mean_neg'])}",
        f"  joint fit      pos mean {number(joint['pos']['mean'])} R² {number(joint['pos']['r2'])}   "
        f"neg mean {number(joint['neg']['mean'])} R² {number(joint['neg']['r2'])}",
    ]
    for part in ("pos", "neg"):
        q = summary["r2_quantiles"][part]
        lines.append(
            f"  per-class R² {part}: median {number(q['p50'])} (5% {number(q['p05'])}, 95% {number(q['p95'])})"
        )
    counts = ", ".join(f"{name} {count}" for name, count in summary["aic"]["best_counts"].items())
    lines += ["beyond the paper (maximum likelihood, AIC):", f"  classes best described by {counts}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ tree
def _run_tree(args: argparse.Namespace) -> int:
    from fclens.tree import split_tree

    model = _load(args)
    k = model.class_index(args.target)
    tree = split_tree(model.head.weight[k].cpu(), min_size=args.min_size, mode=args.mode, class_index=k)
    if args.json:
        _print_json(
            {"model": model.name, "class": {"index": k, "name": model.class_names[k]}, **tree.to_dict()}
        )
    else:
        print(tree.to_text(class_name=model.class_names[k]))
    return 0


# ---------------------------------------------------------------------------------------------- survey
SURVEY_COLUMNS = (
    "model",
    "status",
    "classes",
    "inputs",
    "marginal_mean_pos",
    "marginal_mean_neg",
    "joint_pos_mean",
    "joint_pos_r2",
    "joint_neg_mean",
    "joint_neg_r2",
    "median_r2_pos",
    "median_r2_neg",
    "ald_preferred",
    "reason",
)


def _run_survey(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    sources = [s.strip() for s in args.models.split(",") if s.strip()]
    if not sources:
        raise FclensError(
            "--models is empty; give comma-separated models, e.g. timm:resnet50,efficientnet_lite0"
        )
    if args.weights_dir is not None and not args.weights_dir.is_dir():
        raise FclensError(f"--weights-dir {args.weights_dir} is not a folder")
    rows = [_survey_row(source, args.weights_dir) for source in tqdm(sources, desc="models", unit="model")]
    table = csv_text(rows, SURVEY_COLUMNS)
    if args.out:
        atomic_write_text(args.out, table)
    if args.json:
        _print_json(rows)
    else:
        print(table, end="")
    return EXIT_PARTIAL if any(row["status"] != "ok" for row in rows) else 0


def _survey_row(source: str, weights_dir: Path | None) -> dict[str, Any]:
    """One model's ALD figures, or its failure reason: one bad model never stops the survey."""
    from fclens.ald import fit_ald
    from fclens.models import load_model

    row: dict[str, Any] = dict.fromkeys(SURVEY_COLUMNS)
    row["model"] = source
    try:
        weights = _weights_file(source, weights_dir)
        model = load_model(source, weights=weights)
        summary = fit_ald(model.head.weight.cpu()).summary()
    except FclensError as error:
        return {**row, "status": "failed", "reason": str(error)}
    except Exception as error:  # a broken third-party model must not end the survey
        return {**row, "status": "failed", "reason": f"{type(error).__name__}: {error}"}
    quantiles = summary["r2_quantiles"]
    row.update(
        status="ok",
        classes=model.num_classes,
        inputs=model.head.num_features,
        marginal_mean_pos=summary["marginal_mean_pos"],
        marginal_mean_neg=summary["marginal_mean_neg"],
        joint_pos_mean=summary["joint"]["pos"]["mean"],
        joint_pos_r2=summary["joint"]["pos"]["r2"],
        joint_neg_mean=summary["joint"]["neg"]["mean"],
        joint_neg_r2=summary["joint"]["neg"]["r2"],
        median_r2_pos=quantiles["pos"]["p50"],
        median_r2_neg=quantiles["neg"]["p50"],
        ald_preferred=summary["aic"]["best_counts"]["ald"],
        reason="",
    )
    return row


def _weights_file(source: str, weights_dir: Path | None) -> Path | None:
    if weights_dir is None:
        return None
    stem = source.split(":", 1)[-1]
    for suffix in WEIGHT_SUFFIXES:
        if (weights_dir / f"{stem}{suffix}").is_file():
            return weights_dir / f"{stem}{suffix}"
    return None


# --------------------------------------------------------------------------------------------- explain
def _run_explain(args: argparse.Namespace) -> int:
    from fclens.images import iter_image_paths, sample_image
    from fclens.report.folders import explain_to_folder

    options = EXPLAIN_DEFAULTS.but(
        maps=tuple(kind.strip() for kind in args.maps.split(",") if kind.strip()),
        min_size=args.min_size,
        mode=args.mode,
        curves=args.curves,
        seed=args.seed,
        batch_size=args.batch_size,
        contrast=args.contrast,
    )
    names = {sample_image(name): f"sample:{name}" for name in args.sample}  # not a path in site-packages
    paths = iter_image_paths(args.paths) + list(names)
    if not paths:
        raise FclensError("no images given or found; give image files or folders, or --sample chelsea")
    out = args.out.resolve()
    paths = [path for path in paths if out not in path.resolve().parents]  # never explain our own output
    model = _load(args)
    target = None if args.target is None else model.class_index(args.target)  # fail before any work
    if args.contrast not in (None, RUNNER_UP):
        model.class_index(args.contrast)
    done = explain_to_folder(
        model,
        paths,
        args.out,
        options=options,
        target=target,
        target_layer=args.target_layer,
        names=names,
        overlays=args.overlays,
        html=args.html,
        force=args.force,
        on_row=None if args.json else lambda row: print(_explain_line(row), flush=True),
    )
    if args.json:
        _print_json([_with_explanation(row) for row in done.rows])
    else:
        print(f"summary: {done.summary}" + (f", report: {done.page}" if done.page else ""))
    return EXIT_PARTIAL if done.skipped else 0


def _with_explanation(row: dict[str, Any]) -> dict[str, Any]:
    """A summary row with what its ``explanation.json`` holds (no maps), under ``explanation``."""
    if row["status"] == "skipped":
        return row
    return {**row, "explanation": json.loads(Path(row["output"], "explanation.json").read_text("utf-8"))}


def _explain_line(row: dict[str, Any]) -> str:
    if row["status"] == "skipped":
        return f"{row['source']}: skipped: {row['reason']}"

    def number(value: float | None) -> str:
        return "none (tree not split)" if value is None else f"{value:.3f}"

    done = " (done earlier)" if row["status"] == "done earlier" else ""
    return (
        f"{row['source']}: {row['prediction']} ({row['probability']:.1%}); target {row['target']}: "
        f"discriminative {number(row['discriminative_score'])}, confusing {number(row['confusing_score'])}{done}"
    )


# ------------------------------------------------------------------------------------------------ scan
def _run_scan(args: argparse.Namespace) -> int:
    from fclens.scanning import LocalEngine, RayEngine, scan

    if args.engine == "ray":
        engine = RayEngine(address=args.ray_address, actors=args.actors, workers=args.workers)
    elif args.ray_address or args.actors is not None:
        raise FclensError("--ray-address and --actors are for --engine ray")
    else:
        engine = LocalEngine(workers=args.workers)
    before = _finished_counts(args.out) if not args.force else None
    result = scan(
        _load(args),
        args.source,
        args.out,
        engine=engine,
        labels=args.labels,
        force=args.force,
        batch_size=args.batch_size,
        min_size=args.min_size,
        mode=args.mode,
        maps=args.maps,
        features=args.features,
        scores=args.scores,
    )
    counts = result.manifest.counts
    if args.json:
        _print_json({"out": str(args.out), "counts": counts, "complete": result.manifest.complete})
    elif before != counts:  # the same counts in a scan that was already complete: scan() said so, nothing ran
        import pyarrow.dataset as ds

        skipped = result.rows(["index", "path", "reason"], filter=ds.field("status") == "skipped")
        for path, reason in zip(
            skipped.column("path").to_pylist(), skipped.column("reason").to_pylist(), strict=True
        ):
            print(f"{path}: skipped: {reason}")
        print(
            f"scanned {counts['ok']} of {counts['images']} images ({counts['skipped']} skipped) into {args.out}"
        )
    return EXIT_PARTIAL if counts["skipped"] else 0


def _finished_counts(directory: Path) -> dict[str, Any] | None:
    """The counts of a complete scan in ``directory`` (None if there is none): a rerun that leaves them
    unchanged had nothing to do."""
    from fclens.scanning import ScanError, read_scan

    try:
        manifest = read_scan(directory).manifest
    except ScanError:
        return None
    return dict(manifest.counts) if manifest.complete else None


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings while a command reads a scan (an incomplete scan's above all) as one line on stderr each."""
    import warnings

    def show(message: Warning | str, *_: Any, **__: Any) -> None:
        print(f"fclens: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


# ----------------------------------------------------------------------------------------------- atlas
def _run_atlas(args: argparse.Namespace) -> int:
    from fclens import report
    from fclens.atlasing import atlas
    from fclens.report.atlas import PAGES, atlas_with_causal
    from fclens.scanning import read_scan

    wanted = _parse_pair_write(args.write) if args.write else None
    causal = args.causal or wanted is not None or args.causal_seed is not None
    with _one_line_warnings():
        scan = read_scan(args.scan_dir)
    if causal and not scan.has_features:
        raise FclensError(
            f"--causal edits the final layer on the scan's stored features and {args.scan_dir} has none; "
            "rescan it with fclens scan --features"
        )
    if wanted is not None:
        from fclens.edits.layer import model_source

        wanted = (_scan_class(scan, wanted[0]), _scan_class(scan, wanted[1]), wanted[2])
        if wanted[0] == wanted[1]:
            raise FclensError(f"--write needs two classes; {args.write!r} names class {wanted[0]} twice")
        model_source(scan)  # a scan of a module cannot be written: say so before any work
    with _one_line_warnings():
        found = atlas(scan, top_k=args.top_k)
    data = found.to_dict()
    table = model = None
    if causal:
        table, model = _causal(found, args.causal_seed or 0, wanted, args.out)
        data = atlas_with_causal(data, table, model)
    written = [atomic_write_text(args.out / "atlas.json", json.dumps(data, indent=1, allow_nan=False) + "\n")]
    if args.html:
        from fclens.report.atlas import write_atlas_pages

        written += write_atlas_pages(found, args.out, causal=table)
    written += [Path(model["path"])] if model is not None else []
    removed = report.remove_stale(args.out, written, PAGES)
    if args.json:
        _print_json(data)
    else:
        for c in found.lowest_accuracy(5) or sorted(found.classes, key=lambda c: -c.n)[:5]:
            rival = f"{c.rivals[0].name} ({c.rivals[0].soft_confusion:.3f})" if c.rivals else "none"
            accuracy = "n/a" if c.accuracy is None else f"{c.accuracy:.3f}"
            print(f"{c.name}: {c.n} images, accuracy {accuracy}, top rival {rival}")
        if table is not None:  # the text's first two paragraphs: how the test was made, and its summary
            print("\n" + "\n\n".join(table.to_text().split("\n\n")[:2]).rstrip("\n"))
            print("each pair's sentence and table: pairs[].causal in atlas.json, the class pages (--html)\n")
        if model is not None:
            print(f"wrote {model['path']}: {model['sentence']}")
        pages = f", pages: {args.out / 'index.html'}" if args.html else ""
        print(f"{len(found.classes)} classes, {len(found.pairs)} pairs; atlas: {written[0]}{pages}")
        _print_removed(removed)
    return 0


def _causal(
    found: Any, seed: int, wanted: tuple[int, int, int] | None, out: Path
) -> tuple[Any, dict[str, Any] | None]:
    """The causal test of the atlas's top pairs, the features read once; with ``wanted`` (K, J, M) the
    edited model written too, and described by its own held-out test at m = M."""
    from functools import partial

    from fclens.edits.evaluate import read_features
    from fclens.edits.layer import write_model
    from fclens.edits.pair import TOP_PAIRS, causal_test, pair_edit

    if not found.labelled:
        raise FclensError(
            f"--causal judges each edit against the images' labels and {found.directory} has none; scan a "
            "folder of class-name subfolders or a list with a label column"
        )
    labelled = {c.index for c in found.classes if c.accuracy is not None}
    scan = found.scan
    options = scan.manifest.options
    shape = {"min_size": options.min_size, "mode": options.mode}  # the scan's trees, as the atlas draws
    features = read_features(scan)
    test = partial(causal_test, features, seed=seed, head=scan, class_names=scan.class_names, **shape)
    table = test([(p.a, p.b) for p in found.pairs[:TOP_PAIRS] if p.a in labelled])
    if wanted is None:
        return table, None
    k, j, m = wanted
    own = test([(k, j)], ms=(m,)).pair(k, j)
    layer = pair_edit(scan, features, k, j, neurons=m, split=True, seed=seed, **shape)
    tags = {
        "fclens_pair": f"{k}->{j}",
        "fclens_neurons": ",".join(str(c) for c in layer.neurons),
        "fclens_split_seed": str(seed),
    }
    path = write_model(scan, layer, out / f"pair-{k}-{j}-{m}.safetensors", metadata=tags)
    model = {
        "path": str(path),
        "target": k,
        "rival": j,
        "m": m,
        "neurons": [int(c) for c in layer.neurons],
        "method": layer.method,
        "seed": seed,
        "sentence": own.sentence(m),
    }
    return table, model


def _parse_pair_write(spec: str) -> tuple[str, str, int]:
    """``"K,J@M"`` → (K, J, M): the classes as given (indices or names, resolved on the scan), M ≥ 1."""
    pair, at, count = spec.rpartition("@")
    classes = [part.strip() for part in pair.split(",")]
    if not at or len(classes) != 2 or not all(classes):
        raise FclensError(
            f"--write takes K,J@M (the classes by index or name, M neurons; e.g. 281,285@8), got {spec!r}"
        )
    try:
        m = int(count)
    except ValueError:
        m = 0
    if m < 1:
        raise FclensError(f"--write K,J@M needs a whole number of neurons M >= 1, got {count.strip()!r}")
    return classes[0], classes[1], m


def _scan_class(scan: Any, text: str) -> int:
    """A class of the scan by index or name (exact, else ignoring case) → its index."""
    names = list(scan.class_names)
    if text.lstrip("-").isdigit():
        k = int(text)
        if not 0 <= k < len(names):
            raise FclensError(f"class index {k} is out of range: the scan has classes 0 … {len(names) - 1}")
        return k
    if text in names:
        return names.index(text)
    lowered = [name.lower() for name in names]
    if lowered.count(text.lower()) == 1:
        return lowered.index(text.lower())
    raise FclensError(f"{text!r} names no single class of the scan; give the class's index or exact name")


# ----------------------------------------------------------------------------------------------- prune
def _run_prune(args: argparse.Namespace) -> int:
    from fclens import report
    from fclens.edits.layer import model_source
    from fclens.pruning import parse_write, prune_curve, write_pruned
    from fclens.report.prune import OUTPUTS, prune_figure, prune_page
    from fclens.scanning import read_scan

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    sparsities = [_sparsity(text) for text in args.sparsity.split(",") if text.strip()]
    wanted = parse_write(args.write) if args.write else None
    scan = read_scan(args.scan_dir)
    if wanted is not None:
        model_source(scan)  # a scan of a module cannot be written: say so before the curves are computed
        methods += [wanted[0]] if wanted[0] not in methods else []
        sparsities += [wanted[1]] if wanted[1] not in sparsities else []
    correction = BIAS_CORRECTIONS[args.bias_correction]
    with _one_line_warnings():
        curve = prune_curve(
            scan, methods=methods, sparsities=sparsities, bias_correction=correction, seed=args.seed
        )
    out = args.out or Path(f"fclens-prune-{safe_name(args.scan_dir.resolve().name)}")
    model_name = str(scan.manifest.model.get("name") or "the scanned model")
    written = [
        atomic_write_text(out / "prune.csv", curve.to_csv()),
        atomic_write_text(out / "prune.json", json.dumps(curve.to_dict(), indent=1, allow_nan=False) + "\n"),
        report.save_figure(
            prune_figure(curve, title=f"Pruning the final layer of {model_name}"), out / "curves.png"
        ),
    ]
    if args.html:
        written.append(
            atomic_write_text(out / "prune.html", prune_page(curve, args.scan_dir.name, model_name))
        )
    if wanted is not None:
        method, sparsity = wanted
        path = out / f"pruned-{method}-{sparsity:g}.safetensors"
        written.append(
            write_pruned(scan, method, sparsity, path, bias_correction=bool(correction), seed=args.seed)
        )
    removed = report.remove_stale(out, written, OUTPUTS)
    if args.json:
        _print_json(
            {**curve.to_dict(), "files": [str(p) for p in written], "removed": [str(p) for p in removed]}
        )
    else:
        print(curve.to_text(), end="")
        print(f"wrote {', '.join(str(p) for p in written)}")
        _print_removed(removed)
    return 0


def _print_removed(removed: list[Path]) -> None:
    if removed:
        print(f"removed what an earlier run wrote and this one did not: {', '.join(str(p) for p in removed)}")


# ------------------------------------------------------------------------------------------- rebalance
def _run_rebalance(args: argparse.Namespace) -> int:
    from fclens import report
    from fclens.edits.layer import model_source, write_model
    from fclens.edits.rebalance import rebalance
    from fclens.report.rebalance import rebalance_figure
    from fclens.scanning import read_scan

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.write:
        if args.write not in REBALANCE_METHODS:
            raise FclensError(
                f"--write takes one method of {', '.join(REBALANCE_METHODS)}, got {args.write!r}"
            )
        methods += [args.write] if args.write not in methods else []
    prior = "labels" if args.prior is None else [_number(text, "--prior") for text in args.prior.split(",")]
    train = read_scan(args.train_dir)
    if args.write:
        model_source(train)  # a scan of a module cannot be written: say so before anything is fitted
    with _one_line_warnings():
        result = rebalance(train, read_scan(args.eval), methods, tau=args.tau, prior=prior, seed=args.seed)
    out = args.out or Path(f"fclens-rebalance-{safe_name(args.train_dir.resolve().name)}")
    written = [
        atomic_write_text(out / "rebalance.csv", result.to_csv()),
        atomic_write_text(out / "rebalance.json", json.dumps(result.to_dict(), indent=1) + "\n"),
        report.save_figure(rebalance_figure(result), out / "per-class.png"),
    ]
    if args.write:
        written.append(
            write_model(train, result.layers[args.write], out / f"rebalanced-{args.write}.safetensors")
        )
    removed = report.remove_stale(out, written, ("rebalanced-*.safetensors",))
    if args.json:
        _print_json({**result.to_dict(), "files": [str(p) for p in written]})
    else:
        print(result.to_text(), end="")
        print(f"wrote {', '.join(str(p) for p in written)}")
        _print_removed(removed)
    return 0


def _number(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FclensError(f"{flag} takes numbers, got {text.strip()!r}") from None


# --------------------------------------------------------------------------------------------- samples
def _run_samples(args: argparse.Namespace) -> int:
    from fclens.images import SAMPLE_CLASSES, sample_folder

    out = sample_folder(args.out, args.count, seed=args.seed)
    classes = sorted({path.parent.name for path in out.rglob("*.jpg")})
    if args.json:
        _print_json({"out": str(out), "images": args.count, "classes": classes})
    else:
        photos = ", ".join(f"{name} → {label}" for name, label in SAMPLE_CLASSES.items())
        print(f"{args.count} photos in {out} ({photos}; licence in {out / 'ATTRIBUTION.md'})")
        print(f"next: fclens scan {out} --out scan/ --features && fclens atlas scan/ --out atlas/ --html")
    return 0


def _sparsity(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FclensError(f"sparsity must be a number in [0, 1), got {text.strip()!r}") from None


if __name__ == "__main__":
    sys.exit(main())
