"""The one exception type that means "the user's input is wrong": the CLI prints it in one line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class FclensError(ValueError):
    """Bad input or an unusable model; the message names the problem and what to do about it."""


def as_path(value: Any, name: str) -> Path:
    """``value`` as a Path: a wrong type is one line naming ``name`` (never a TypeError from deep inside)."""
    if not isinstance(value, (str, os.PathLike)):
        raise FclensError(f"{name} must be a path (str or os.PathLike), got {described(value)}")
    return Path(value)


def described(value: Any) -> str:
    """A wrong value in a message: its type and a short repr, ``int 42``."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
