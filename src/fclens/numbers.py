"""Numbers as fclens reports them: NaN means "nothing to count", and says so the same way everywhere.

The mean of what is known, NaN → None in JSON, a share as a percent and a signed change: written once,
so that a table, a page and a JSON file never disagree about a missing figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["json_number", "nan_mean", "percent", "signed"]


def nan_mean(values: Iterable[float] | np.ndarray) -> float:
    """The mean of the values that are not NaN; NaN when there are none."""
    known = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    known = known[~np.isnan(known)]
    return float(known.mean()) if known.size else float("nan")


def json_number(value: Any) -> Any:
    """A JSON-ready number: numpy scalars become Python ones, NaN (and ±Inf) floats become None."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def percent(value: float | None, digits: int = 1) -> str:
    """A share (0.88) as a percent ("88.0%"); "n/a" for None or NaN."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.{digits}f}%"


def signed(value: float | None, digits: int = 2) -> str:
    """A change with its sign ("+0.25", "-1.50"); "n/a" for None or NaN."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}"
