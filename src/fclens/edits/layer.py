"""A final layer as numbers (weight, bias), what one can be made from, and a model written with it.

``fclens.Head`` is the *discovered* final layer of a loaded model (its module, the feature layer, the
pooling); an edit needs only the numbers, so it has its own small type, :class:`FinalLayer`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fclens.errors import FclensError
from fclens.io import atomic_write_bytes

if TYPE_CHECKING:
    from fclens.scanning.reader import Scan

__all__ = ["FinalLayer", "FitReport", "as_final_layer", "model_source", "open_scan", "write_model"]


@dataclass(frozen=True)
class FitReport:
    """How a re-fit ended, so that a user can tell a converged fit from one that ran out of iterations."""

    loss: float
    """The objective at the returned head (weighted cross-entropy plus the weight decay term)."""
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
    """An edited final layer: ``weight`` (C, D) and ``bias`` (C,), float32 CPU tensors.

    ``method`` names the edit that made it; ``fit`` says how a re-fit ended (None for other edits).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    method: str = "scanned"
    fit: FitReport | None = None

    def __post_init__(self) -> None:
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


def as_final_layer(head: Any) -> FinalLayer:
    """A :class:`FinalLayer` from one, a loaded model (its final layer), an ``fclens.Head``, a scan or its
    directory (the layer it scanned) or a (weight, bias) pair; a bias of None counts as zeros."""
    from fclens.scanning.reader import Scan

    if isinstance(head, FinalLayer):
        return head
    if isinstance(head, (str, os.PathLike)):
        head = open_scan(head)
    if isinstance(head, Scan):
        weight, bias = head.weight, head.bias
    elif hasattr(head, "head") and hasattr(head.head, "weight"):  # a loaded Classifier
        weight, bias = head.head.weight, head.head.bias
    elif hasattr(head, "weight") and hasattr(head, "bias"):  # fclens.Head, nn.Linear
        weight, bias = head.weight, head.bias
    elif isinstance(head, tuple) and len(head) == 2:
        weight, bias = head
    else:
        raise FclensError(
            f"cannot read a final layer from {type(head).__name__}; give a FinalLayer, a loaded model, "
            "a scan or (weight, bias)"
        )
    weight = _tensor(weight)
    weight = weight.reshape(weight.shape[0], -1)  # a 1×1-conv classifier's (C, D, 1, 1)
    bias = torch.zeros(weight.shape[0]) if bias is None else _tensor(bias).reshape(-1)
    return FinalLayer(weight, bias)


def _tensor(values: Any) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float32).contiguous()
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def open_scan(scan: Scan | str | os.PathLike[str]) -> Scan:
    """A :class:`fclens.Scan` from itself or its directory."""
    from fclens.scanning.reader import read_scan

    return read_scan(scan) if isinstance(scan, (str, os.PathLike)) else scan


def model_source(scan: Scan) -> str:
    """The source the scanned model can be reloaded from (its manifest's ``model.source``); FclensError
    for a model that was passed as a module, which fclens cannot reload to write an edited copy of."""
    source = scan.manifest.model.get("source")
    if not source:
        raise FclensError(
            "the scanned model was passed as a module, so fclens cannot reload it to write an edited (or pruned) copy; "
            "scan a named model (efficientnet_lite0, timm:NAME, torchvision:NAME) to use --write"
        )
    return str(source)


def write_model(
    scan: Scan | str | os.PathLike[str],
    layer: FinalLayer,
    path: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Save the scanned model with ``layer`` as its final layer, as safetensors at ``path``.

    The model is reloaded from the scan's manifest (``model.source`` and ``model.weights``) and must still
    have the final layer the scan recorded; ``fclens.load_model(source, weights=path)`` reads the file back.
    """
    from safetensors.torch import save

    from fclens.models import load_model

    scan = open_scan(scan)
    source = model_source(scan)
    classifier = load_model(source, weights=scan.manifest.model.get("weights"))
    final = classifier.head.layer
    recorded = torch.from_numpy(np.ascontiguousarray(scan.weight, np.float32))
    loaded = final.weight.detach().cpu().reshape(recorded.shape)
    if loaded.shape != recorded.shape or not torch.allclose(loaded, recorded, rtol=0, atol=1e-6):
        raise FclensError(f"{source} as loaded now does not have the final layer this scan recorded")
    if tuple(layer.weight.shape) != tuple(recorded.shape):
        raise FclensError(
            f"the new final layer is {tuple(layer.weight.shape)}; {source}'s is {tuple(recorded.shape)}"
        )
    with torch.no_grad():
        final.weight.copy_(layer.weight.reshape(final.weight.shape))
        if final.bias is not None:
            final.bias.copy_(layer.bias)
        elif bool(layer.bias.any()):
            raise FclensError(f"the final layer of {source} has no bias to hold the new one")
    # Tensors that share storage (tied weights) cannot be saved as one by safetensors: copy each.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in classifier.module.state_dict().items()}
    tags = {"fclens_edited_from": source, "method": layer.method, **(metadata or {})}
    return atomic_write_bytes(path, save(state, metadata=tags))
