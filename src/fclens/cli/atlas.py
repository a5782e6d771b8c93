"""``fclens atlas``: what a scan says about each class (its rivals, its nodes, the images that show them),
and with ``--causal`` whether the neurons it names cause each confusion."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

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
    from fclens.io import atomic_write_text
    from fclens.report.atlas import PAGES, atlas_with_causal
    from fclens.scanning import read_scan

    wanted = _parse_pair_write(args.write) if args.write else None
    causal = args.causal or wanted is not None or args.causal_seed is not None
    with one_line_warnings():
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
    with one_line_warnings():
        found = atlas(scan, top_k=args.top_k)
    data = found.to_dict()
    table = model = None
    if causal:
        seed = SEED if args.causal_seed is None else args.causal_seed
        table, model = _causal(found, seed, wanted, args.out)
        data = atlas_with_causal(data, table, model)
    written = [atomic_write_text(args.out / "atlas.json", json.dumps(data, indent=1, allow_nan=False) + "\n")]
    if args.html:
        from fclens.report.atlas import write_atlas_pages

        written += write_atlas_pages(found, args.out, causal=table)
    written += [Path(model["path"])] if model is not None else []
    removed = report.remove_stale(args.out, written, PAGES)
    if args.json:
        print_json(data)
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
        print_removed(removed)
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
