"""An edited final layer on disk: the scanned model's whole state dict with the new layer, as safetensors.

``fclens.load_model(source, weights=path)`` and ``fclens explain --weights`` read it back; its metadata
says what it was edited from and how (``fclens_edited_from``, the layer's ``method`` and ``tags``), so a
rerun can tell an fclens model from the user's files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from fclens.errors import FclensError
from fclens.io import atomic_write_bytes
from fclens.layer import FinalLayer
from fclens.scanning.reader import Scan, as_scan

__all__ = ["model_source", "write_model"]


def model_source(scan: Scan) -> str:
    """The source the scanned model can be reloaded from (its manifest's ``model.source``); FclensError
    for a model that was passed as a module, which fclens cannot reload to write an edited copy of."""
    source = scan.manifest.model.get("source")
    if not source:
        problem = (
            "the scanned model was passed as a module, so fclens cannot reload it to write an edited (or "
            "pruned) copy; scan a named model (efficientnet_lite0, timm:NAME, torchvision:NAME)"
        )
        raise FclensError(f"{problem} to write one", cli=f"{problem} to use --write")
    return str(source)


def write_model(
    scan: Scan | str | os.PathLike[str],
    layer: FinalLayer,
    path: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Save the scanned model with ``layer`` as its final layer, as safetensors at ``path``.

    The model is reloaded from the scan's manifest (``model.source`` and ``model.weights``) and must still
    have the final layer the scan recorded. The file's metadata: ``fclens_edited_from``, ``method``, the
    layer's ``tags`` and ``metadata``.
    """
    from safetensors.torch import save

    from fclens.models import load_model

    scan = as_scan(scan)
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
    tags = {"fclens_edited_from": source, "method": layer.method, **layer.tags, **(metadata or {})}
    return atomic_write_bytes(path, save(state, metadata=tags))
