"""Masked score (the author's recipe) and deletion/insertion curves, on the embedded model."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms.functional import gaussian_blur

from fclens.head import evaluating
from fclens.models import Classifier
from fclens.scores import BLUR_KERNEL, BLUR_SIGMA, deletion_insertion, masked_score, upsample_normalised


def probabilities(classifier: Classifier, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), evaluating(classifier.module):
        return classifier(inputs).softmax(dim=1).cpu()


def class_map(classifier: Classifier, inputs: torch.Tensor, k: int) -> torch.Tensor:
    """The class activation map of class k, (N, h, w): a map that should be faithful."""
    with torch.no_grad():
        features = classifier.module.forward_features(inputs)
    return torch.einsum("d,ndhw->nhw", classifier.head.weight[k].to(features), features)


def test_upsampling_scales_each_map_to_the_unit_interval() -> None:
    maps = torch.randn(2, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    maps[1, 2] = 5.0  # constant: highlights nothing
    up = upsample_normalised(maps, (224, 200))
    assert up.shape == (2, 3, 224, 200)
    flat = up.flatten(2)
    assert torch.equal(flat[1, 2], torch.zeros(224 * 200))
    assert torch.allclose(flat.amin(dim=2), torch.zeros(2, 3))
    assert torch.allclose(flat.amax(dim=2)[[0, 0, 0, 1, 1], [0, 1, 2, 0, 1]], torch.ones(5))


@pytest.mark.usefixtures("float32")
def test_masked_score_is_the_authors_recipe(classifier: Classifier, photos: torch.Tensor) -> None:
    """Bicubic to the input size, min-max to [0, 1], times the normalised input, softmax of the target."""
    maps = class_map(classifier, photos, 285)
    rows, targets = torch.tensor([0, 1]), torch.tensor([285, 967])
    scores = masked_score(classifier.module, photos, maps, rows, targets, batch_size=1)

    mask = F.interpolate(maps[:, None].float(), size=photos.shape[2:], mode="bicubic", align_corners=False)
    low, high = mask.amin(dim=(2, 3), keepdim=True), mask.amax(dim=(2, 3), keepdim=True)
    expected = probabilities(classifier, photos * (mask - low) / (high - low))[[0, 1], [285, 967]]
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)
    # Batching the forwards changes nothing.
    torch.testing.assert_close(
        masked_score(classifier.module, photos, maps, rows, targets, batch_size=16), scores
    )


@pytest.mark.usefixtures("float32")
def test_curves_start_and_end_where_they_must(classifier: Classifier, photos: torch.Tensor) -> None:
    chelsea = photos[:1]
    k = int(probabilities(classifier, chelsea).argmax())
    heat = class_map(classifier, chelsea, k)
    curves = deletion_insertion(
        classifier.module, chelsea, heat, torch.tensor([0]), torch.tensor([k]), steps=4
    )
    assert curves.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curves.deletion.shape == curves.insertion.shape == (1, 5)
    clean = probabilities(classifier, chelsea)[0, k]
    blurred = gaussian_blur(chelsea, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
    for value, expected in [
        (curves.deletion[0, 0], clean),  # nothing deleted yet
        (curves.insertion[0, -1], clean),  # everything inserted
        (
            curves.deletion[0, -1],
            probabilities(classifier, torch.zeros_like(chelsea))[0, k],
        ),  # all mean colour
        (curves.insertion[0, 0], probabilities(classifier, blurred)[0, k]),
    ]:
        torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-5)
    for auc in (curves.deletion_auc, curves.insertion_auc):
        assert auc.shape == (1,) and 0.0 <= float(auc) <= 1.0
    torch.testing.assert_close(curves.deletion_auc, torch.trapezoid(curves.deletion, curves.fractions))


def test_a_faithful_map_beats_its_opposite(classifier: Classifier, photos: torch.Tensor) -> None:
    """The class activation map vs its negation: deleting what it ranks first hurts more, inserting helps more."""
    rows, targets = torch.tensor([0, 0, 1, 1]), torch.tensor([285, 285, 967, 967])
    heat = class_map(classifier, photos, 285)
    heat[1] = class_map(classifier, photos[1:], 967)[0]
    maps = torch.stack([heat[0], -heat[0], heat[1], -heat[1]])
    curves = deletion_insertion(classifier.module, photos, maps, rows, targets, steps=8)
    deletion, insertion = curves.deletion_auc, curves.insertion_auc
    assert deletion[0] < deletion[1] and deletion[2] < deletion[3]
    assert insertion[0] > insertion[1] and insertion[2] > insertion[3]


def test_a_model_that_cannot_take_channels_last_is_scored_as_given() -> None:
    """The CPU runs scoring forwards in channels-last order; a model whose view() refuses it still scores."""

    class Viewing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            maps = torch.relu(self.conv(x))
            return self.fc(maps.view(maps.shape[0], -1))  # view() needs contiguous maps

    torch.manual_seed(0)
    model = Viewing().eval()
    inputs = torch.randn(2, 3, 32, 32)
    with pytest.raises(RuntimeError, match="view"):
        model(inputs.contiguous(memory_format=torch.channels_last))
    maps = torch.rand(3, 8, 8)
    rows, targets = torch.tensor([0, 1, 1]), torch.tensor([2, 0, 1])
    scores = masked_score(model, inputs, maps, rows, targets, batch_size=2)
    with torch.no_grad():
        expected = model(inputs[rows] * upsample_normalised(maps, (32, 32))[:, None]).softmax(dim=1)
    torch.testing.assert_close(scores, expected[[0, 1, 2], targets])
