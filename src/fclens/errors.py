"""The one exception type that means "the user's input is wrong": the CLI prints it in one line.

Errors speak the caller's language. The message (``str(error)``) is for a Python caller and names
keywords as Python spells them (``force=True``, ``out=``, ``weights=PATH``); where the ``fclens`` command
spells the fix otherwise (``--force``, ``--out``, ``--weights PATH``), ``cli=`` carries the whole
sentence in its words, and the command prints that instead::

    problem = f"{directory} holds another scan ({difference})"
    raise ScanError(
        f"{problem}; pass another out= directory, or force=True to start over",
        cli=f"{problem}; use another --out, or --force to start over",
    )

A message that names no keyword needs no ``cli=``: both callers read the same line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class FclensError(ValueError):
    """Bad input or an unusable model; the message names the problem and what to do about it.

    ``cli``: the same message in the command's words (flags, not keywords); the message itself when
    they are the same.
    """

    def __init__(self, message: str, *, cli: str | None = None) -> None:
        super().__init__(message)
        self.cli = message if cli is None else cli


def first_line(error: BaseException) -> str:
    """An exception as one line of text (its message with white space folded, else its type's name)."""
    return " ".join(str(error).split()) or type(error).__name__


def as_path(value: Any, name: str) -> Path:
    """``value`` as a Path: a wrong type is one line naming ``name`` (never a TypeError from deep inside)."""
    if not isinstance(value, (str, os.PathLike)):
        raise FclensError(f"{name} must be a path (str or os.PathLike), got {described(value)}")
    return Path(value)


def described(value: Any) -> str:
    """A wrong value in a message: its type and a short repr, ``int 42``."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
