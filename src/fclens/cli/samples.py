"""``fclens samples``: a labelled folder of real photos to try scan, atlas and prune on, offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from fclens.cli.common import command, print_json
from fclens.options import SAMPLE_COUNT, SEED


def register(commands: argparse._SubParsersAction) -> None:
    parser = command(
        commands,
        "samples",
        run,
        "write a labelled folder of real photos (crops and mirror images of fclens's two sample photos, "
        "filed under the ImageNet class each shows) to try scan, atlas and prune on",
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write them, a folder per class")
    parser.add_argument(
        "--count", type=int, default=SAMPLE_COUNT, help=f"how many photos (default {SAMPLE_COUNT})"
    )
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed of the crops (default {SEED})")


def run(args: argparse.Namespace) -> int:
    from fclens.samples import SAMPLE_CLASSES, sample_folder

    out = sample_folder(args.out, args.count, seed=args.seed)
    classes = sorted({path.parent.name for path in out.rglob("*.jpg")})
    if args.json:
        print_json({"out": str(out), "images": args.count, "classes": classes})
    else:
        photos = ", ".join(f"{name} → {label}" for name, label in SAMPLE_CLASSES.items())
        print(f"{args.count} photos in {out} ({photos}; licence in {out / 'ATTRIBUTION.md'})")
        print(f"next: fclens scan {out} --out scan/ --features && fclens atlas scan/ --out atlas/ --html")
    return 0
