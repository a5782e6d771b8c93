"""``fclens weights``: does the final layer follow an Asymmetric Laplace Distribution? (per class, per model)"""

from __future__ import annotations

import argparse
from pathlib import Path

from fclens.cli.common import comma_list, command, load, model_flags, print_json


def register(commands: argparse._SubParsersAction) -> None:
    parser = command(
        commands,
        "weights",
        run,
        "does the final layer follow an Asymmetric Laplace Distribution? (per class, per model)",
    )
    model_flags(parser)
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for ald.csv, summary.json and figures (default: fclens-weights-MODEL)",
    )
    parser.add_argument(
        "--plots", action="store_true", help="draw the author's per-class fit plots and the summary figures"
    )
    parser.add_argument(
        "--plot-classes",
        default=None,
        help="classes to plot, comma-separated indices or names, or 'all' "
        "(default: some spread over the R² ranking, the worst and the best included)",
    )
    parser.add_argument("--html", action="store_true", help="write the model's self-contained HTML page")


def run(args: argparse.Namespace) -> int:
    from fclens.io import safe_name
    from fclens.report.weights import weights_to_folder

    model = load(args)
    classes = args.plot_classes if args.plot_classes in (None, "all") else comma_list(args.plot_classes)
    out = args.out or Path(f"fclens-weights-{safe_name(model.name)}")
    done = weights_to_folder(model, out, plots=args.plots, html=args.html, classes=classes)
    if args.json:
        print_json({**done.summary, "files": [str(p) for p in done.files]})
    else:
        print(done.fit.to_text(model.name))
        plots = [p for p in done.files if p.parent == out / "classes"]
        listed = [str(p.relative_to(out)) for p in done.files if p not in plots]
        listed += [f"classes/ ({len(plots)} fit plots)"] if plots else []
        print(f"\nwrote {out}/: {', '.join(listed)}")
    return 0
