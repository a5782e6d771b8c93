"""Class names: one rule that turns what a person writes (an index, a name, a folder's name) into a class.

The model (:meth:`fclens.Classifier.class_index`), a scan (:meth:`fclens.Scan.class_index`), a data set's
labels (class-name subfolders, a list's ``label`` column) and the command line all use it, so that
``Egyptian_cat``, ``egyptian cat`` and ``285`` name the same class everywhere.

The rule, in order: a name equal to a class name; an integer, or a string of digits that is not itself a
class name, is an index, checked against the range; a name equal to a class name when case and separators
(space, ``_``, ``-``, ``.``, ``,``, ``'``) are ignored. Anything else is one line of
:class:`~fclens.errors.FclensError` that names the closest class names ("did you mean …?").
"""

from __future__ import annotations

import difflib
import numbers
import re
from collections.abc import Sequence
from typing import Any

from fclens.errors import FclensError

__all__ = ["ClassNames", "loose"]

_CLOSE = 0.6
"""How alike (difflib's ratio of the loose forms) a class name must be to be offered as what was meant."""


def loose(name: str) -> str:
    """A class name without case and separators: "Egyptian_cat", "egyptian-cat" → "egyptiancat"."""
    return re.sub(r"[\s_\-.,']+", "", name.lower())


class ClassNames:
    """The class names of a model or a scan, looked up by :meth:`index` (each distinct value once).

    ``owner`` names whose classes they are in messages ("the model", "the scan"); ``listing`` says how to
    list them, for a value that nothing is close to (``cli_listing``: the same in the command's words).
    """

    def __init__(
        self,
        names: Sequence[str],
        owner: str = "the model",
        listing: str = "",
        cli_listing: str | None = None,
    ) -> None:
        self.names = [str(name) for name in names]
        self.owner, self.listing = owner, listing
        self.cli_listing = listing if cli_listing is None else cli_listing
        self._exact = {name: i for i, name in enumerate(self.names)}
        self._loose: dict[str, int] = {}
        for i, name in enumerate(self.names):
            self._loose.setdefault(loose(name), i)
        self._known: dict[Any, int] = {}

    def __len__(self) -> int:
        return len(self.names)

    def index(self, value: Any, what: str = "class", hint: str = "", cli_hint: str | None = None) -> int:
        """``value`` (an index, a numeric string or a name) → its class index; FclensError naming the
        closest names otherwise. ``what`` names the value in the message ("label", "subfolder", …) and
        ``hint`` ends it (what to do instead; ``cli_hint``: the same in the command's words)."""
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a numpy or torch scalar
            value = value.item()
        try:
            return self._known[value]
        except (KeyError, TypeError):  # TypeError: an unhashable value, refused below
            pass
        found = self._find(value, what, hint, hint if cli_hint is None else cli_hint)
        self._known[value] = found
        return found

    def _find(self, value: Any, what: str, hint: str, cli_hint: str) -> int:
        if isinstance(value, str) and value in self._exact:
            return self._exact[value]
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return self._in_range(int(value), what)
        if not isinstance(value, str):
            raise FclensError(
                f"a {what} is an index or a name, got {type(value).__name__} {value!r}"
                + (f"; {hint}" if hint else "")
            )
        text = value.strip()
        if text.lstrip("-").isdigit() and text not in self._exact:
            return self._in_range(int(text), what)
        if loose(text) in self._loose:
            return self._loose[loose(text)]
        problem = f"{what} {value!r} matches no class of {self.owner}"
        ending = (f"; {hint}" if hint else "", f"; {cli_hint}" if cli_hint else "")
        raise FclensError(
            problem + self._closest(text, self.listing) + ending[0],
            cli=problem + self._closest(text, self.cli_listing) + ending[1],
        )

    def _in_range(self, index: int, what: str) -> int:
        if not 0 <= index < len(self.names):
            noun = "class index" if what == "class" else what
            raise FclensError(
                f"{noun} {index} is out of range: {self.owner} has classes 0 … {len(self.names) - 1}"
            )
        return index

    def _closest(self, text: str, listing: str) -> str:
        """ "; did you mean 'a', 'b'?" with up to five close names (by spelling, then containing the text)."""
        key = loose(text)
        close = difflib.get_close_matches(key, list(self._loose), n=5, cutoff=_CLOSE)
        close += [name for name in self._loose if key and key in name and name not in close][: 5 - len(close)]
        if not close:
            return f" (no class name is close{'; ' + listing if listing else ''})"
        return f"; did you mean {', '.join(repr(self.names[self._loose[name]]) for name in close)}?"
