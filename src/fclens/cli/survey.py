"""``fclens survey``: the ALD fit of several models, one row per model."""

from __future__ import annotations

import argparse
from pathlib import Path

from fclens.cli.common import EXIT_PARTIAL, comma_list, command, existing, print_json


def register(commands: argparse._SubParsersAction) -> None:
    parser = command(commands, "survey", run, "the ALD fit of several models, one row per model")
    parser.add_argument(
        "--models",
        required=True,
        help="comma-separated sources: efficientnet_lite0, timm:NAME, torchvision:NAME",
    )
    parser.add_argument(
        "--weights-dir",
        type=existing("a folder of weight files"),
        help="folder of local weight files named after the models (NAME.safetensors/.pth)",
    )
    parser.add_argument("--out", type=Path, help="write the table as CSV here too")


def run(args: argparse.Namespace) -> int:
    from fclens.io import atomic_write_text, csv_text
    from fclens.surveying import SURVEY_COLUMNS, survey

    rows = survey(comma_list(args.models), args.weights_dir)
    table = [{**row.to_dict(), "reason": row.error.cli if row.error else ""} for row in rows]
    text = csv_text(table, SURVEY_COLUMNS)
    if args.out:
        atomic_write_text(args.out, text)
    if args.json:
        print_json(table)
    else:
        print(text, end="")
    return EXIT_PARTIAL if any(row.status != "ok" for row in rows) else 0
