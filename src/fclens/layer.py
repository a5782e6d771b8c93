"""A final layer as numbers: :class:`FinalLayer` (weight, bias), the one type every edit takes and yields.

``fclens.head.Head`` is the final layer *discovered* in a loaded model (its module, the feature layer,
the pooling); a scan records the layer it scanned (:attr:`fclens.Scan.layer`); a re-fit, a post-hoc
adjustment, a pruning mask and a pair edit each make a new one. What judges or changes a final layer
takes it as this one type; :meth:`FinalLayer.of` makes one from anything that holds a final layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fclens.errors import FclensError, described

__all__ = ["FinalLayer", "FitReport"]


@dataclass(frozen=True)
class FitReport:
    """How a re-fit ended, so that a user can tell a converged fit from one that ran out of iterations."""

    loss: float
    """The objective at the returned layer (weighted cross-entropy plus the weight decay term)."""
    grad_norm: float
    """The gradient's 2-norm there (over the rows and biases that were fitted)."""
    iterations: int
    evaluations: int
    """Full passes over the rows (each one logits product forward and backward)."""
    seconds: float
    converged: bool = True
    """False when the fit ran out of iterations before its tolerance was met."""


@dataclass(frozen=True)
class FinalLayer:
    """A final layer: ``weight`` (C, D) and ``bias`` (C,), float32 CPU tensors.

    ``method`` names what made it ("scanned", a re-fit's loss, a pruning method, …); ``fit`` says how a
    re-fit ended (None for other layers); ``tags`` are written into a saved model's metadata.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    method: str = "scanned"
    fit: FitReport | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.weight, torch.Tensor) or not isinstance(self.bias, torch.Tensor):
            raise FclensError(
                f"a FinalLayer holds two tensors, got {described(self.weight)} and {described(self.bias)}; "
                "FinalLayer.of((weight, bias)) reads arrays too"
            )
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise FclensError(
                f"a final layer needs weight (C, D) and bias (C,), got {tuple(self.weight.shape)} and "
                f"{tuple(self.bias.shape)}"
            )

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """z Wᵀ + b for a batch of pooled features (N, D)."""
        return torch.addmm(self.bias, features, self.weight.T)

    @classmethod
    def of(cls, layer: Any, method: str = "scanned") -> FinalLayer:
        """A FinalLayer from one (returned as it is), a loaded model (its final layer), its ``Head``, a
        ``torch.nn.Linear``, a scan (the layer it scanned), :class:`~fclens.scanning.features.Features`
        read from a scan, or a (weight, bias) pair of tensors or arrays (a bias of None counts as zeros;
        a 1×1-conv classifier's (C, D, 1, 1) weight is read as (C, D))."""
        if isinstance(layer, FinalLayer):
            return layer
        if isinstance(layer, (str, os.PathLike)):
            raise FclensError(
                f"{os.fspath(layer)!r} is a path, not a final layer; for the layer a scan recorded pass "
                "fclens.read_scan(path).layer"
            )
        held = getattr(layer, "layer", None)
        if isinstance(held, FinalLayer):  # a Scan, Features
            return held
        if hasattr(layer, "head") and hasattr(layer.head, "weight"):  # a loaded Classifier
            weight, bias = layer.head.weight, layer.head.bias
        elif isinstance(layer, tuple) and len(layer) == 2:
            weight, bias = layer
        elif hasattr(layer, "weight") and hasattr(layer, "bias"):  # fclens.head.Head, nn.Linear
            weight, bias = layer.weight, layer.bias
        else:
            raise FclensError(
                f"cannot read a final layer from {type(layer).__name__}; give a FinalLayer, a loaded model, "
                "a scan or (weight, bias)"
            )
        weight = _tensor(weight, "weight")
        if weight.ndim not in (2, 4):
            raise FclensError(f"a final layer's weight is (C, D), got shape {tuple(weight.shape)}")
        weight = weight.reshape(weight.shape[0], -1)
        bias = torch.zeros(weight.shape[0]) if bias is None else _tensor(bias, "bias").reshape(-1)
        return cls(weight, bias, method=method)


def _tensor(values: Any, what: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float32).contiguous()
    try:
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    except (TypeError, ValueError) as error:
        raise FclensError(f"a final layer's {what} must be numbers, got {type(values).__name__}") from error
