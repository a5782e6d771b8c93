"""How a number reads wherever fclens shows it: pages, figures' captions and terminal tables alike.

Standard library only, so that any module may use it (the tables' ``to_text`` as much as the pages).
One format per kind of number: an accuracy (or any share of images) is a percent with one decimal,
"88.0%", everywhere a person reads it; files (JSON, CSV) keep the raw fraction.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fmt", "percent"]


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number for a caption or a table cell in format ``spec``; "n/a" for None, NaN or Inf.

    ".3f" suits bounded numbers (R², probabilities, scores), ".4g" those of any magnitude (weights, means).
    """
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return format(float(value), spec)


def percent(share: Any) -> str:
    """A share in [0, 1] (an accuracy, an agreement) as a person reads it: 0.88 → "88.0%"; "n/a" as
    :func:`fmt`."""
    text = fmt(None if share is None else 100 * float(share), ".1f")
    return text if text == "n/a" else f"{text}%"
