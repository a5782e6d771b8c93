"""What several commands share: the model and tree flags, the one ``X@Y`` parser, inputs that must exist,
lists and numbers in flags, printing.

Standard library and light fclens modules only (the rule atop :mod:`fclens.cli`).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fclens.errors import FclensError
from fclens.options import DEFAULT_MODEL, DEVICE, EMBEDDED_MODELS, FILLS, TREE_MODES, Options

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130

Run = Callable[[argparse.Namespace], int]


def command(commands: Any, name: str, run: Run, help_text: str) -> argparse.ArgumentParser:
    """A subcommand that runs ``run``, with the flags every command has (``--json``, ``--debug``)."""
    parser = commands.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(run=run)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def model_flags(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--weights``, ``--device``: which classifier a command loads, and where it runs."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"{', '.join(EMBEDDED_MODELS)} (offline), timm:NAME, torchvision:NAME (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--weights",
        type=existing("a local weight file"),
        help="local weight file (.safetensors, or .pth read with weights_only)",
    )
    parser.add_argument("--device", default=DEVICE, help=f"cpu, cuda, cuda:N (default {DEVICE})")


def load(args: argparse.Namespace) -> Any:
    """The classifier that the model flags name."""
    from fclens.models import load_model

    return load_model(args.model, weights=args.weights, device=args.device)


def tree_flags(parser: argparse.ArgumentParser, defaults: Options) -> None:
    """``--min-size``, ``--mode``: the shape of each class's split tree."""
    parser.add_argument(
        "--min-size",
        type=_at_least_two,
        default=defaults.min_size,
        help=f"nodes with fewer weights are not split (default {defaults.min_size}, the author's)",
    )
    parser.add_argument(
        "--mode",
        choices=TREE_MODES,
        default=defaults.mode,
        help=f"chains: the author's + and − chains; full: a full binary tree (default {defaults.mode})",
    )


def batch_size_flag(parser: argparse.ArgumentParser, defaults: Options) -> None:
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"images per forward pass (default {defaults.batch_size})",
    )


def curve_flags(parser: argparse.ArgumentParser, defaults: Options) -> None:
    """``--curves`` and ``--fill``: deletion/insertion curves beside a random map's, and how they remove
    pixels."""
    parser.add_argument(
        "--curves",
        action="store_true",
        help="also deletion/insertion AUCs for the terminal nodes and the class, beside a random map's "
        "(many forwards)",
    )
    parser.add_argument(
        "--fill",
        choices=FILLS,
        default=defaults.fill,
        help="how the curves remove pixels: rise (the data set's mean colour, insertion from a blurred copy), "
        f"blur, mean (the image's) or road (noisy linear imputation, slow) (default {defaults.fill})",
    )


def existing(what: str) -> Callable[[str], Path]:
    """An argparse type for an input that must exist (a file, a folder, a scan, a list): a path that does
    not is refused while the flags are read, before any work, naming ``what`` is expected."""

    def check(text: str) -> Path:
        path = Path(text)
        if not path.exists():
            raise argparse.ArgumentTypeError(f"{text} does not exist; give {what}")
        return path

    return check


def split_at(spec: str, flag: str, form: str) -> tuple[str, str]:
    """``X@Y`` → (X, Y), both non-empty: the one reader of every ``--write X@Y``; ``form`` shows the shape."""
    left, at, right = spec.rpartition("@")
    if not at or not left.strip() or not right.strip():
        raise FclensError(f"{flag} takes {form}, got {spec!r}")
    return left.strip(), right.strip()


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def number(text: str, expected: str) -> float:
    """``text`` as a number; else one line: ``expected`` (what the flag takes), and what it got."""
    try:
        return float(text)
    except ValueError:
        raise FclensError(f"{expected}, got {text.strip()!r}") from None


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, allow_nan=False))


def print_removed(removed: list[Path]) -> None:
    if removed:
        print(f"removed what an earlier run wrote and this one did not: {', '.join(str(p) for p in removed)}")


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings while a command reads a scan (an incomplete scan's above all) as one line on stderr each."""

    def show(message: Warning | str, *_: Any, **__: Any) -> None:
        print(f"fclens: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _at_least_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 2:
        raise argparse.ArgumentTypeError("must be at least 2")
    return value
