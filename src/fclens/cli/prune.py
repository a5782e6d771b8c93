"""``fclens prune``: prune the final layer guided by the split trees and the ALD prior, against magnitude
and random pruning, measured on a scan's stored features."""

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
    split_at,
)
from fclens.errors import FclensError
from fclens.options import BIAS_CORRECTIONS, PRUNE_DEFAULT_METHODS, PRUNE_METHODS, PRUNE_SPARSITIES, SEED

SPARSITY = "sparsity must be a number in [0, 1)"


def register(commands: argparse._SubParsersAction) -> None:
    parser = command(
        commands,
        "prune",
        run,
        "prune the final layer guided by the split trees and the ALD prior, against magnitude and random "
        "pruning, measured on a scan's stored features",
    )
    parser.add_argument(
        "scan_dir",
        type=existing("a directory written by fclens scan --features"),
        metavar="SCAN_DIR",
        help="a directory written by fclens scan --features",
    )
    parser.add_argument(
        "--methods",
        default=",".join(PRUNE_DEFAULT_METHODS),
        help=f"comma-separated: {', '.join(PRUNE_METHODS)} (default %(default)s)",
    )
    parser.add_argument(
        "--sparsity",
        default=",".join(f"{s:g}" for s in PRUNE_SPARSITIES),
        help="comma-separated shares of the final layer's weights to zero, each in [0, 1) (default %(default)s)",
    )
    off = next(word for word, value in BIAS_CORRECTIONS.items() if value is False)
    parser.add_argument(
        "--bias-correction",
        choices=tuple(BIAS_CORRECTIONS),
        default=off,
        help=f"move the removed weights' mean contribution into the bias: {', '.join(BIAS_CORRECTIONS)} "
        f"(both: each point twice; default {off}); --write applies it unless {off}",
    )
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed of the random method (default {SEED})")
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for prune.csv, prune.json and curves.png (default fclens-prune-SCAN); what an earlier "
        "run wrote there and this one does not (prune.html, pruned models) is removed",
    )
    parser.add_argument("--html", action="store_true", help="write prune.html, one self-contained page")
    parser.add_argument(
        "--write",
        metavar="METHOD@SPARSITY",
        help="also save the pruned model as safetensors (e.g. tree@0.9), for load_model(..., weights=)",
    )


def run(args: argparse.Namespace) -> int:
    from fclens import report
    from fclens.edits.write import model_source
    from fclens.io import atomic_write_text, safe_name
    from fclens.pruning import prune_curve, write_pruned
    from fclens.report.prune import OUTPUTS, prune_figure, prune_page
    from fclens.scanning import read_scan

    methods = comma_list(args.methods)
    sparsities = [number(text, SPARSITY) for text in comma_list(args.sparsity)]
    wanted = _parse_write(args.write) if args.write else None
    scan = read_scan(args.scan_dir)
    if wanted is not None:
        model_source(scan)  # a scan of a module cannot be written: say so before the curves are computed
        methods += [wanted[0]] if wanted[0] not in methods else []
        sparsities += [wanted[1]] if wanted[1] not in sparsities else []
    correction = BIAS_CORRECTIONS[args.bias_correction]
    with one_line_warnings():
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
        print_json(
            {**curve.to_dict(), "files": [str(p) for p in written], "removed": [str(p) for p in removed]}
        )
    else:
        print(curve.to_text(), end="")
        print(f"wrote {', '.join(str(p) for p in written)}")
        print_removed(removed)
    return 0


def _parse_write(spec: str) -> tuple[str, float]:
    """``"METHOD@SPARSITY"`` (e.g. ``tree@0.9``) → (method, sparsity); the sparsity's range is the curve's to check."""
    method, sparsity = split_at(spec, "--write", "METHOD@SPARSITY (e.g. tree@0.9)")
    if method not in PRUNE_METHODS:
        raise FclensError(f"unknown pruning method {method!r}; choose from {', '.join(PRUNE_METHODS)}")
    return method, number(sparsity, SPARSITY)
