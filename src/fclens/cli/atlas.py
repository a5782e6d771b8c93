"""``fclens atlas``: what a scan says about each class (its rivals, its nodes, the images that show them),
and with ``--causal`` whether the neurons it names cause each confusion."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fclens.cli.common import command, existing, one_line_warnings, print_json, print_removed, split_at
from fclens.edits import TOP_PAIRS
from fclens.errors import FclensError
from fclens.options import ATLAS_TOP_K, SEED


def register(commands: argparse._SubParsersAction) -> None:
    parser = command(
        commands,
        "atlas",
        run,
        "what a scan says about each class: its rivals, its nodes, and the images that show them",
    )
    parser.add_argument(
        "scan_dir",
        type=existing("a directory written by fclens scan"),
        metavar="SCAN_DIR",
        help="a directory written by fclens scan",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for atlas.json (and the HTML pages)")
    parser.add_argument("--html", action="store_true", help="write index.html and one page per class")
    parser.add_argument(
        "--top-k", type=int, default=ATLAS_TOP_K, help=f"images per list and class (default {ATLAS_TOP_K})"
    )
    parser.add_argument(
        "--causal",
        action="store_true",
        help=f"test whether the neurons the atlas names cause each of its top {TOP_PAIRS} pairs: equalise the "
        "rival's weights on them (and on neurons other rules pick), judged on a held-out half of the images; "
        "needs a labelled scan made with fclens scan --features",
    )
    parser.add_argument(
        "--causal-seed",
        type=int,
        metavar="SEED",
        help=f"seed of the split into selection and held-out halves, and of the random rule (default {SEED}; "
        "implies --causal)",
    )
    parser.add_argument(
        "--write",
        metavar="K,J@M",
        help="also save the model with rival J's weights equalised to K's on the M neurons the atlas names "
        "for the pair K → J (chosen on the selection half), as OUT/pair-K-J-M.safetensors; implies --causal",
    )


def run(args: argparse.Namespace) -> int:
    from fclens import report
    from fclens.atlasing import atlas
    from fclens.edits.causal import save_pair_edit
    from fclens.edits.write import model_source
    from fclens.formatting import percent
    from fclens.io import atomic_write_text
    from fclens.report.atlas import PAGES
    from fclens.scanning import read_scan

    wanted = _parse_pair_write(args.write) if args.write else None
    causal = args.causal or wanted is not None or args.causal_seed is not None
    seed = SEED if args.causal_seed is None else args.causal_seed
    with one_line_warnings():
        scan = read_scan(args.scan_dir)
    if causal and not scan.has_features:
        raise FclensError(
            f"--causal edits the final layer on the scan's stored features and {args.scan_dir} has none; "
            "rescan it with fclens scan --features"
        )
    if wanted is not None:
        wanted = (scan.class_index(wanted[0]), scan.class_index(wanted[1]), wanted[2])
        if wanted[0] == wanted[1]:
            raise FclensError(f"--write needs two classes; {args.write!r} names class {wanted[0]} twice")
        model_source(scan)  # a scan of a module cannot be written: say so before any work
    with one_line_warnings():
        found = atlas(scan, top_k=args.top_k, causal=causal, seed=seed)
    saved = None
    if wanted is not None:
        k, j, m = wanted
        saved = save_pair_edit(scan, k, j, m, args.out / f"pair-{k}-{j}-{m}.safetensors", seed=seed)
    data = found.to_dict(written=saved)
    written = [atomic_write_text(args.out / "atlas.json", json.dumps(data, indent=1, allow_nan=False) + "\n")]
    if args.html:
        from fclens.report.atlas import write_atlas_pages

        written += write_atlas_pages(found, args.out, causal=found.causal)
    written += [saved.path] if saved is not None else []
    removed = report.remove_stale(args.out, written, PAGES)
    if args.json:
        print_json(data)
    else:
        for c in found.lowest_accuracy(5) or sorted(found.classes, key=lambda c: -c.n)[:5]:
            rival = f"{c.rivals[0].name} ({c.rivals[0].soft_confusion:.3f})" if c.rivals else "none"
            print(f"{c.name}: {c.n} images, accuracy {percent(c.accuracy)}, top rival {rival}")
        if (
            found.causal is not None
        ):  # the text's first two paragraphs: how the test was made, and its summary
            print("\n" + "\n\n".join(found.causal.to_text().split("\n\n")[:2]).rstrip("\n"))
            print("each pair's sentence and table: pairs[].causal in atlas.json, the class pages (--html)\n")
        if saved is not None:
            print(f"wrote {saved.path}: {saved.test.sentence(saved.layer.m)}")
        pages = f", pages: {args.out / 'index.html'}" if args.html else ""
        print(f"{len(found.classes)} classes, {len(found.pairs)} pairs; atlas: {written[0]}{pages}")
        print_removed(removed)
    return 0


def _parse_pair_write(spec: str) -> tuple[str, str, int]:
    """``"K,J@M"`` → (K, J, M): the classes as given (indices or names, resolved on the scan), M ≥ 1."""
    form = "K,J@M (the classes by index or name, M neurons; e.g. 281,285@8)"
    pair, count = split_at(spec, "--write", form)
    classes = [part.strip() for part in pair.split(",")]
    if len(classes) != 2 or not all(classes):
        raise FclensError(f"--write takes {form}, got {spec!r}")
    try:
        m = int(count)
    except ValueError:
        m = 0
    if m < 1:
        raise FclensError(f"--write K,J@M needs a whole number of neurons M >= 1, got {count!r}")
    return classes[0], classes[1], m
