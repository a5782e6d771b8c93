"""The ``fclens`` command: one module per subcommand, each holding its flags (``register``) beside its
``run``; this module collects them and is the one place that turns what happened into an exit code.

The rule of this package: at the top of a module, only the standard library and light fclens modules
(errors, options, the edits' vocabularies, runs); every heavy import (torch, timm, numpy, matplotlib,
pyarrow, …) goes inside the ``run`` that needs it, so that ``fclens --help``, ``fclens COMMAND --help``
and ``fclens --version`` answer at once (tests/test_cli.py checks every subcommand). A command does no
library work: what a Python user would otherwise copy lives in the library, and every default and
choice comes from the library's constants.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from fclens import __version__
from fclens.cli import atlas, explain, prune, rebalance, samples, scan, survey, tree, weights
from fclens.cli.common import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL
from fclens.errors import FclensError
from fclens.runs import sigterm_interrupts

__all__ = ["build_parser", "main"]

COMMANDS = (weights, tree, survey, explain, scan, atlas, prune, rebalance, samples)
"""The subcommands, in the order ``fclens --help`` lists them."""

EXIT_CODES = (
    f"Exit codes: {EXIT_OK} done; {EXIT_INTERNAL} internal error, a bug of fclens (rerun with --debug and "
    f"report it); {EXIT_BAD_INPUT} bad or missing input (one line, before any work); {EXIT_PARTIAL} done, "
    f"but some items were skipped (each with its reason in the summary); {EXIT_INTERRUPTED} interrupted "
    "(Ctrl-C or SIGTERM): finished work is kept, rerun to continue."
)

INTERRUPTED = "interrupted; every file written so far is whole: rerun the same command to finish"
"""What Ctrl-C prints when the work itself says nothing more (a scan says how many images it kept)."""


class _Parser(argparse.ArgumentParser):
    """Flag errors in one line, as every other error (argparse prints its whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fclens",
        description="What the final fully-connected layer of an image classifier has learned "
        "(arXiv 2205.11908), and where in an image its most discriminative and most confusing neurons fire.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, or flags refused
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    try:
        with sigterm_interrupts():
            return args.run(args)
    except FclensError as error:
        if args.debug:
            raise
        print(f"fclens: error: {error.cli}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as interrupt:
        print(f"fclens: {interrupt or INTERRUPTED}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if args.debug:
            raise
        print(
            f"fclens: internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
