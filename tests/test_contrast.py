"""Contrast maps: where an image argues for a rival class over the target, exact for affine heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fclens.errors import FclensError
from fclens.maps import capture, contrast_maps
from fclens.models import Classifier, load_model
from test_maps import SMALL, random_inputs, zoo


def runner_up(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 and top-2 classes of each row."""
    top = logits.topk(2, dim=1).indices
    return top[:, 0], top[:, 1]


def assert_mean_is_the_logit_difference(classifier: Classifier, inputs: torch.Tensor) -> None:
    """mean_xy(contrast) + b_j − b_k = logit_j − logit_k, for the runner-up j and a far class."""
    head = classifier.head
    captured = capture(classifier.module, head, inputs)
    logits = captured.logits.double()
    targets, rivals = runner_up(captured.logits)
    far = captured.logits.argmin(dim=1)
    bias = head.bias.double()
    for other in (rivals, far):
        maps = contrast_maps(captured, head, targets, other)
        assert maps.shape == (len(inputs), *captured.features.shape[2:])
        rows = torch.arange(len(inputs), device=inputs.device)
        expected = logits[rows, other] - logits[rows, targets]
        got = maps.double().mean(dim=(1, 2)) + bias[other] - bias[targets]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * float(logits.abs().max()))


@pytest.mark.usefixtures("float32")
def test_contrast_mean_is_the_logit_difference_on_real_photos(
    classifier: Classifier, photos: torch.Tensor
) -> None:
    assert_mean_is_the_logit_difference(classifier, photos)


@pytest.mark.usefixtures("float32")
def test_contrast_mean_is_the_logit_difference_after_a_layernorm(device: torch.device) -> None:
    """avg-norm (ConvNeXt): the per-image scale and offset of the LayerNorm enter the map."""
    classifier = zoo("convnext_tiny", device)
    assert classifier.head.pooling == "avg-norm"
    assert_mean_is_the_logit_difference(classifier, random_inputs(2, device))


def test_contrast_of_a_class_with_itself_is_zero(classifier: Classifier, photos: torch.Tensor) -> None:
    captured = capture(classifier.module, classifier.head, photos)
    targets, _ = runner_up(captured.logits)
    assert contrast_maps(captured, classifier.head, targets, targets).abs().max() == 0


class MLPHead(nn.Module):
    """Conv features → mean → an MLP: logits are not affine in the feature map."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2)
        )
        self.rest = nn.Sequential(
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 6)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.features(x))


def test_non_affine_head_gets_gradient_times_activation_of_the_difference() -> None:
    """Checked against autograd of logit_j − logit_k taken by hand at the gradient layer."""
    model = MLPHead()
    classifier = load_model(model, preprocessing=SMALL)
    head = classifier.head
    assert not head.affine
    inputs = random_inputs(3, torch.device("cpu"))
    captured = capture(model, head, inputs, graph=True)
    targets, rivals = runner_up(captured.logits)
    maps = contrast_maps(captured, head, targets, rivals)

    kept: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        output.retain_grad()
        kept["a"] = output

    handle = head.gradient_layer.register_forward_hook(keep)
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    rows = torch.arange(len(inputs))
    (logits[rows, rivals] - logits[rows, targets]).sum().backward()
    activations = head.spatial(kept["a"])
    expected = (head.spatial(kept["a"].grad) * activations).sum(dim=1).detach()
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    assert maps.abs().max() > 0


def test_non_affine_head_needs_a_capture_with_a_graph() -> None:
    classifier = load_model(MLPHead(), preprocessing=SMALL)
    captured = capture(classifier.module, classifier.head, random_inputs(1, torch.device("cpu")))
    targets, rivals = runner_up(captured.logits)
    with pytest.raises(FclensError, match="graph=True"):
        contrast_maps(captured, classifier.head, targets, rivals)
