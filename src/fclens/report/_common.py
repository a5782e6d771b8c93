"""Small conversions shared by the figures and the pages, so that each exists once."""

from __future__ import annotations

from typing import Any

import numpy as np

from fclens import ald
from fclens.ald import ALDFit
from fclens.formatting import fmt, percent

__all__ = ["as_numpy", "fmt", "percent", "require_regression"]  # fmt, percent: the pages' number formats


def as_numpy(values: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor (any device, dtype, grad) or array-like."""
    return ald.as_numpy(values).astype(np.float64)


def require_regression(fit: ALDFit) -> None:
    """Figures and pages of the weights show the paper's fit: refuse a fit made without it."""
    if fit.pos is None or fit.neg is None:
        raise ValueError("this needs the paper's regression fit: call fit_ald(weight) with method='all'")
