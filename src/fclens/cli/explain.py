"""``fclens explain``: where in each image the class's most discriminative and most confusing neurons fire."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fclens.cli.common import (
    EXIT_PARTIAL,
    batch_size_flag,
    comma_list,
    command,
    curve_flags,
    existing,
    load,
    model_flags,
    print_json,
    tree_flags,
)
from fclens.errors import FclensError
from fclens.formatting import percent
from fclens.options import EXPLAIN_DEFAULTS, MAP_KIND_NAMES, RUNNER_UP


def register(commands: argparse._SubParsersAction) -> None:
    parser = command(
        commands,
        "explain",
        run,
        "where in each image the class's most discriminative and most confusing neurons fire",
    )
    model_flags(parser)
    parser.add_argument(
        "paths",
        nargs="*",
        type=existing("image files or folders"),
        metavar="PATH",
        help="image files or folders",
    )
    parser.add_argument(
        "--sample",
        action="append",
        default=[],
        metavar="NAME",
        help="add a photo shipped with fclens: chelsea (a cat), coffee (an espresso)",
    )
    parser.add_argument("--class", dest="target", help="class index or name (default: the predicted class)")
    parser.add_argument(
        "--contrast",
        metavar="CLASS",
        help=f"also show why the image is not CLASS: {RUNNER_UP} (each image's most probable other class), "
        "or a class index or name",
    )
    parser.add_argument(
        "--map",
        dest="maps",
        default=",".join(EXPLAIN_DEFAULTS.maps),
        help=f"map kinds, comma-separated, the first scored: {', '.join(MAP_KIND_NAMES)} "
        f"(default {','.join(EXPLAIN_DEFAULTS.maps)})",
    )
    tree_flags(parser, EXPLAIN_DEFAULTS)
    parser.add_argument(
        "--out", type=Path, default=Path("fclens-out"), help="output folder (default: fclens-out)"
    )
    curve_flags(parser, EXPLAIN_DEFAULTS)
    parser.add_argument("--html", action="store_true", help="write report.html, one self-contained page")
    parser.add_argument(
        "--overlays",
        action="store_true",
        help="also write an overlay PNG per node and map kind (node-PATH[-KIND].png)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=EXPLAIN_DEFAULTS.seed,
        help=f"seed of the noisy smooth-gradcam++ maps (default {EXPLAIN_DEFAULTS.seed})",
    )
    batch_size_flag(parser, EXPLAIN_DEFAULTS)
    parser.add_argument("--target-layer", help="module name to draw maps from (default: found automatically)")
    parser.add_argument("--force", action="store_true", help="redo images that already have explanation.json")


def run(args: argparse.Namespace) -> int:
    from fclens.images import iter_image_paths
    from fclens.report.folders import explain_to_folder
    from fclens.samples import sample_image

    options = EXPLAIN_DEFAULTS.but(
        maps=tuple(comma_list(args.maps)),
        min_size=args.min_size,
        mode=args.mode,
        curves=args.curves,
        fill=args.fill,
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
    model = load(args)
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
        print_json([_with_explanation(row) for row in done.rows])
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
        f"{row['source']}: {row['prediction']} ({percent(row['probability'])}); target {row['target']}: "
        f"discriminative {number(row['discriminative_score'])}, confusing {number(row['confusing_score'])}{done}"
    )
