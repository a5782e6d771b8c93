"""A model of one's own at its own input size, and preprocessed tensors of other sizes where the model takes them."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torch.nn import functional as F

from fclens.errors import FclensError
from fclens.explaining import explain
from fclens.head import evaluating
from fclens.images import ImageError
from fclens.models import Classifier, load_model
from fclens.preprocessing import Preprocessing, to_batch
from fclens.samples import sample_image

CLASSES = ["circle", "square", "stripe"]


class SmallNet(nn.Module):
    """conv → ReLU → conv → ReLU → AdaptiveAvgPool2d → Linear; normalises inside, so it takes RGB in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features((x - self.mean) / self.std)).flatten(1))


@pytest.fixture(scope="module")
def small() -> Classifier:
    torch.manual_seed(0)
    return load_model(SmallNet(), class_names=CLASSES, input_size=(64, 64))


def pictures(count: int, side: int) -> torch.Tensor:
    """Values as SmallNet expects them: RGB in [0, 1]."""
    return torch.rand(count, 3, side, side, generator=torch.Generator().manual_seed(side))


def test_input_size_sets_the_preprocessing_and_the_traced_forward() -> None:
    seen: list[tuple[int, ...]] = []
    net = SmallNet()
    net.register_forward_pre_hook(lambda _module, args: seen.append(tuple(args[0].shape)))
    model = load_model(net, class_names=CLASSES, input_size=(64, 64))
    assert model.preprocessing.input_size == (64, 64)
    assert model.head.layer is net.fc and model.head.pooling == "avg"
    assert seen == [(1, 3, 64, 64)]  # the forward that found the final layer ran at the model's size
    assert model.head.grid == (16, 16)
    assert load_model(SmallNet(), class_names=CLASSES, input_size=48).preprocessing.input_size == (48, 48)
    mine = Preprocessing((224, 224), mean=(0.0,) * 3, std=(1.0,) * 3, interpolation="bilinear")
    kept = load_model(SmallNet(), class_names=CLASSES, preprocessing=mine, input_size=(64, 80)).preprocessing
    assert kept.input_size == (64, 80) and kept.mean == (0.0,) * 3 and kept.interpolation == "bilinear"
    with pytest.raises(FclensError, match="input_size must be"):
        load_model(SmallNet(), class_names=CLASSES, input_size=(64, 0))


@pytest.mark.parametrize("side", [64, 96])
def test_maps_and_scores_at_the_models_size_and_another(small: Classifier, side: int) -> None:
    """Maps on the grid of the input given, scores with the mask upsampled to that input: by hand."""
    x = pictures(2, side)
    explanations = explain(small, x, min_size=8)
    module = small.module
    with torch.no_grad(), evaluating(module):
        logits = module(x)
        features = module.features((x - module.mean) / module.std)
    assert features.shape[2:] == (side // 4, side // 4)
    for i, exp in enumerate(explanations):
        assert exp.image.size == (side, side)
        assert exp.target.index == int(logits[i].argmax())
        assert len(exp.nodes) > 1 and exp.discriminative is not None
        for node in exp.nodes:
            # activation = the sum of the node's feature channels, on this input's grid
            expected = features[i, torch.as_tensor(node.indices)].sum(dim=0)
            torch.testing.assert_close(node.map, expected, rtol=1e-4, atol=1e-5)
            # the author's score: bicubic to this input's size, min-max, times the input, softmax
            up = F.interpolate(node.map[None, None], size=(side, side), mode="bicubic", align_corners=False)
            mask = (up - up.min()) / (up.max() - up.min())
            with torch.no_grad():
                chance = module(x[i : i + 1] * mask).softmax(dim=1)[0, exp.target.index]
            assert node.score == pytest.approx(float(chance), abs=1e-5)


def test_sizes_may_mix_across_one_call(small: Classifier) -> None:
    """Each run of one size is its own batch; the results keep the order given."""
    a, b = pictures(2, 64), pictures(1, 96)
    mixed = explain(small, [a[0], b[0], a[1]], scores="none", batch_size=8, min_size=8)
    assert [e.map_kinds for e in mixed] == [["activation"]] * 3
    assert [tuple(e.nodes[0].map.shape) for e in mixed] == [(16, 16), (24, 24), (16, 16)]
    alone = explain(small, b, scores="none", min_size=8)[0]
    torch.testing.assert_close(mixed[1].nodes[0].map, alone.nodes[0].map)
    assert [e.source for e in mixed] == ["<tensor 0>", "<tensor 1>", "<tensor 2>"]
    with pytest.raises(ImageError, match=r"different sizes in one batch, \(3, 64, 64\) and \(3, 96, 96\)"):
        to_batch([a[0], b[0]], small.preprocessing)


def test_files_are_prepared_at_the_models_size(small: Classifier) -> None:
    """A module that normalises inside itself gets files as RGB in [0, 1] with mean 0, std 1."""
    plain = Preprocessing((64, 64), mean=(0.0,) * 3, std=(1.0,) * 3)
    model = load_model(small.module, class_names=CLASSES, preprocessing=plain)
    exp = explain(model, sample_image("chelsea"), min_size=8)
    assert exp.image.size == (64, 64) and exp.nodes[0].map.shape == (16, 16)
    tensor, _ = to_batch(sample_image("chelsea"), plain)
    assert float(tensor.min()) >= 0 and float(tensor.max()) <= 1
    (again,) = explain(model, tensor, min_size=8)
    assert [n.score for n in again.nodes] == pytest.approx([n.score for n in exp.nodes], abs=1e-6)


def test_a_size_the_model_cannot_take_is_a_one_line_error() -> None:
    """A ViT reads a fixed grid of tokens; a CNN that flattens its map needs one size: both say which."""
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=1, num_classes=3)
    model = load_model(vit, class_names=CLASSES, input_size=(64, 64))
    assert model.head.layout == "tokens"
    assert len(explain(model, pictures(1, 64), scores="none", min_size=64)) == 1  # its own size works
    with pytest.raises(FclensError) as caught:
        explain(model, pictures(1, 96), scores="none")
    message = str(caught.value)
    assert "\n" not in message
    assert "cannot be explained on (3, 96, 96) inputs, only at its input size (3, 64, 64)" in message

    flat = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 3)
    )
    fixed = load_model(flat, class_names=CLASSES, input_size=(64, 64))
    with pytest.raises(FclensError, match=r"only at its input size \(3, 64, 64\): mat1 and mat2 shapes"):
        explain(fixed, pictures(1, 96), scores="none")
