"""Old spellings keep working for one release, each with a DeprecationWarning that names the new one.

Three kinds, one helper each: a name that moved to another module (:func:`moved`, a module's
``__getattr__``), a function that was renamed (:func:`renamed`), and a keyword that was renamed
(:func:`keyword`). Everything here is removed in the release after 0.2.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["keyword", "moved", "renamed", "warn"]

F = TypeVar("F", bound=Callable[..., Any])


def warn(old: str, new: str, stacklevel: int = 3) -> None:
    """``old`` is deprecated: use ``new`` (a DeprecationWarning pointing at the caller's line)."""
    warnings.warn(
        f"{old} is deprecated and goes in the next release; use {new}", DeprecationWarning, stacklevel
    )


def moved(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for names that moved: ``names`` maps each old name to ``"pkg.mod"`` (same
    name there) or ``"pkg.mod:new.name"``; each access warns and returns the object from its new home."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, _, new_name = names[name].partition(":")
        new_name = new_name or name
        warn(f"{module}.{name}", f"{target}.{new_name}")
        return functools.reduce(getattr, new_name.split("."), importlib.import_module(target))

    return __getattr__


def renamed(old: str, new: str, function: F) -> F:
    """``function`` under its old name: the same call, with a DeprecationWarning naming ``new``."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warn(old, new)
        return function(*args, **kwargs)

    wrapper.__doc__ = f"Deprecated: use :func:`{new}`."
    return wrapper  # type: ignore[return-value]


def keyword(kwargs: dict[str, Any], old: str, new: str, convert: Callable[[Any], Any] | None = None) -> None:
    """Move ``kwargs[old]`` to ``kwargs[new]`` (through ``convert``), warning; both at once is an error."""
    if old not in kwargs:
        return
    from fclens.errors import FclensError

    if new in kwargs:
        raise FclensError(f"{old}= and {new}= mean the same; give only {new}=")
    warn(f"the keyword {old}=", f"{new}=", stacklevel=4)
    value = kwargs.pop(old)
    kwargs[new] = convert(value) if convert is not None else value
