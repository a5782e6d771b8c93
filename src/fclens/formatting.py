"""How a number reads wherever fclens shows it: pages, figures' captions, terminal tables and JSON alike.

Standard library only, so that any module may use it (the tables' ``to_text`` as much as the pages).
One format per kind of number: an accuracy (or any share of images) is a percent with one decimal,
"88.0%", everywhere a person reads it; files (JSON, CSV) keep the raw fraction. NaN means "nothing to
count" and says so the same way everywhere: "n/a" to a person, null in JSON, left out of a mean.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["differences", "fmt", "json_number", "nan_mean", "percent", "signed"]


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


def signed(value: Any, digits: int = 2) -> str:
    """A change with its sign, "+0.25" or "-1.50"; "n/a" as :func:`fmt`."""
    return fmt(value, f"+.{digits}f")


def json_number(value: Any) -> Any:
    """A JSON-ready number: numpy scalars become Python ones, NaN (and ±Inf) become None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value) if math.isfinite(value) else None


def nan_mean(values: Iterable[Any]) -> float:
    """The mean of the values that are not NaN; NaN when there are none."""
    known = [float(v) for v in values if not math.isnan(float(v))]
    return math.fsum(known) / len(known) if known else float("nan")


def differences(
    then: Mapping[str, Any], now: Mapping[str, Any], shown: Callable[[str, Any], str] | None = None
) -> list[str]:
    """Each key whose value differs, in order of first appearance, both values named (``shown``, else
    ``repr``): "min_size: 20 then, 10 now". How a rerun says why it refuses (a scan, a folder of
    explanations)."""
    show = shown or (lambda key, value: repr(value))
    return [
        f"{key}: {show(key, then.get(key))} then, {show(key, now.get(key))} now"
        for key in dict.fromkeys([*then, *now])
        if then.get(key) != now.get(key)
    ]
