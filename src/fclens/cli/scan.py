"""``fclens scan``: a data set into one Parquet table, a row per image."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fclens.cli.common import (
    EXIT_PARTIAL,
    batch_size_flag,
    command,
    curve_flags,
    existing,
    load,
    model_flags,
    print_json,
    tree_flags,
)
from fclens.errors import FclensError
from fclens.options import ENGINES, LABEL_MODES, MAP_KIND_NAMES, SCAN_DEFAULTS, SCORED_NODES


def register(commands: argparse._SubParsersAction) -> None:
    parser = command(
        commands,
        "scan",
        run,
        "scan a data set into one Parquet table: each image's prediction, rival, tree, node maps and contrast",
    )
    model_flags(parser)
    parser.add_argument(
        "source",
        type=existing("a folder of images or a .csv/.parquet list"),
        metavar="SOURCE",
        help="a folder of images, or a .csv/.parquet list",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="the scan directory (manifest + Parquet shards)"
    )
    parser.add_argument(
        "--labels",
        choices=LABEL_MODES,
        default=LABEL_MODES[0],
        help="auto: class-name subfolders or the list's label column (default); none: no labels",
    )
    tree_flags(parser, SCAN_DEFAULTS)
    parser.add_argument(
        "--map",
        dest="maps",
        choices=MAP_KIND_NAMES,
        default=SCAN_DEFAULTS.primary,
        help=f"the map kind stored per node (default {SCAN_DEFAULTS.primary})",
    )
    parser.add_argument(
        "--features", action="store_true", help="store the final layer's pooled input (for fclens prune)"
    )
    parser.add_argument(
        "--scores",
        choices=SCORED_NODES,
        default=SCAN_DEFAULTS.scores,
        help=f"nodes that get the author's masked score, one forward each (default {SCAN_DEFAULTS.scores})",
    )
    batch_size_flag(parser, SCAN_DEFAULTS)
    curve_flags(parser, SCAN_DEFAULTS)
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=ENGINES[0],
        help=f"what moves the batches: {' or '.join(ENGINES)} (default {ENGINES[0]})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="decode processes, or ray: decode tasks beside GPU actors (default: the CPUs)",
    )
    parser.add_argument("--ray-address", help="ray: join this Ray cluster (e.g. auto); default: a local Ray")
    parser.add_argument(
        "--actors", type=int, help="ray: model actors (default: one per GPU, else one per CPU)"
    )
    parser.add_argument(
        "--force", action="store_true", help="start over in a directory that holds another scan"
    )


def run(args: argparse.Namespace) -> int:
    from fclens.scanning import LocalEngine, RayEngine, scan

    if args.engine == "ray":
        engine = RayEngine(address=args.ray_address, actors=args.actors, workers=args.workers)
    elif args.ray_address or args.actors is not None:
        raise FclensError("--ray-address and --actors are for --engine ray")
    else:
        engine = LocalEngine(workers=args.workers)
    before = _finished_counts(args.out) if not args.force else None
    result = scan(
        load(args),
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
        curves=args.curves,
        fill=args.fill,
    )
    counts = result.manifest.counts
    if args.json:
        print_json({"out": str(args.out), "counts": counts, "complete": result.manifest.complete})
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
