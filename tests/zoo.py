"""Randomly initialised models of many architectures (timm, torchvision, one of a user's own), built for
small inputs so that the zoo runs in seconds."""

from __future__ import annotations

import timm
import torch
import torchvision
from torch import nn

from fclens.models import Classifier, load_model
from fclens.preprocessing import Preprocessing

SMALL = Preprocessing((96, 96), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
"""A small input so that the zoo of randomly initialised models runs in seconds."""


def own_model() -> nn.Module:
    """A user's model without any metadata."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 32, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip


def zoo_module(name: str) -> nn.Module:
    """A randomly initialised model, built for 96-px inputs where it has a fixed input size.

    Norm layers get scales away from 1, as training leaves them: at γ = 1, β = 0 a LayerNorm output
    sums to 0 over its channels, so the root's activation objective Σ_j z_j of a ViT would be constant.
    """
    torch.manual_seed(0)
    if name == "own":
        return own_model()
    if name.startswith("torchvision:"):
        model = torchvision.models.get_model(name.split(":")[1], weights=None)
    else:
        base, _, options = name.partition("+")
        kwargs: dict[str, object] = {"global_pool": "avg"} if options == "avg" else {}
        if base.startswith(("vit", "deit")):
            kwargs["img_size"] = 96
        if base.startswith("swin"):
            kwargs.update(img_size=96, window_size=3)
        model = timm.create_model(base, **kwargs)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.LayerNorm) and layer.weight is not None:
                layer.weight.uniform_(0.5, 1.5)
    return model


def zoo(name: str, device: torch.device) -> Classifier:
    return load_model(zoo_module(name), device=device, preprocessing=SMALL)


def random_inputs(count: int, device: torch.device) -> torch.Tensor:
    return torch.randn(count, 3, *SMALL.input_size, generator=torch.Generator().manual_seed(1)).to(device)
