"""Small conversions shared by the figures and the pages, so that each exists once."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fclens import ald
from fclens.ald import ALDFit


def as_numpy(values: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor (any device, dtype, grad) or array-like."""
    return ald.as_numpy(values).astype(np.float64)


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number for a caption or a table cell in format ``spec``; "n/a" for None, NaN or Inf.

    ".3f" suits bounded numbers (R², probabilities, scores), ".4g" those of any magnitude (weights, means).
    """
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return format(float(value), spec)


def require_regression(fit: ALDFit) -> None:
    """Figures and pages of the weights show the paper's fit: refuse a fit made without it."""
    if fit.pos is None or fit.neg is None:
        raise ValueError("this needs the paper's regression fit: call fit_ald(weight) with method='all'")
