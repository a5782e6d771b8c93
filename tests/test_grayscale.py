"""Grayscale models: one-channel preprocessing, its inference from the model, explain and scan end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import functional as F

import fclens
from fclens.errors import FclensError
from fclens.images import ImageError
from fclens.models import IMAGENET_MEAN, IMAGENET_STD, ModelError
from fclens.preprocessing import Preprocessing, to_batch
from fclens.scanning import LocalEngine

SIDE = 32
GRAY = Preprocessing((SIDE, SIDE), (0.45,), (0.25,))


def gray_cnn(seed: int = 0) -> nn.Module:
    """A tiny one-channel CNN: two convolutions, global average pooling, a 4-class linear layer."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )  # fmt: skip


@pytest.fixture(scope="module")
def gray() -> fclens.Classifier:
    return fclens.load_model(gray_cnn(), class_names=list("abcd"), preprocessing=GRAY)


def test_one_channel_preprocessing_is_pil_luma_resized_and_normalised() -> None:
    photo = fclens.load_image(fclens.sample_image("coffee"))
    tensor = GRAY(photo)
    assert tensor.shape == (1, SIDE, SIDE) and tensor.dtype == torch.float32
    luma = photo.convert("L")
    expected = Preprocessing((SIDE, SIDE), (0.0,), (1.0,)).display(luma).convert("L")
    assert torch.equal(tensor, F.normalize(F.to_tensor(expected), [0.45], [0.25]))
    display = np.asarray(GRAY.display(photo))
    assert display.shape == (SIDE, SIDE, 3)  # an RGB picture for overlays, its channels equal
    assert (display == display[..., :1]).all()


def test_a_colour_photo_and_its_grey_version_give_the_same_input() -> None:
    photo = Image.open(fclens.sample_image("chelsea"))
    assert torch.equal(GRAY(photo), GRAY(photo.convert("L")))


def test_channels_follow_the_mean_unless_given_and_are_checked() -> None:
    assert GRAY.channels == 1
    assert Preprocessing((SIDE, SIDE), IMAGENET_MEAN, IMAGENET_STD).channels == 3
    with pytest.raises(FclensError, match="1 value each for 1 channel"):
        Preprocessing((SIDE, SIDE), IMAGENET_MEAN, IMAGENET_STD, channels=1)
    with pytest.raises(FclensError, match="channels must be 1"):
        Preprocessing((SIDE, SIDE), (0.5, 0.5), (0.5, 0.5))
    settings = {"input_size": [SIDE, SIDE], "mean": [0.45], "std": [0.25], "crop_mode": "center"}
    assert Preprocessing(**settings) == GRAY  # a scan manifest's settings, which name no channels


def test_grayscale_of_rgb_statistics_averages_them() -> None:
    rgb = Preprocessing((SIDE, SIDE), IMAGENET_MEAN, IMAGENET_STD)
    gray = rgb.grayscale()
    assert gray.channels == 1 and gray.grayscale() is gray
    assert gray.mean == pytest.approx((0.449,)) and gray.std == pytest.approx((0.226,))
    assert (
        Preprocessing.from_timm_config(
            {"input_size": (1, SIDE, SIDE), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        )
        == gray
    )


def test_border_crop_pads_grey_pictures_with_the_mean() -> None:
    border = Preprocessing((SIDE, SIDE), (0.5,), (0.25,), crop_mode="border")
    tensor = border(fclens.load_image(fclens.sample_image("coffee")))  # 3:2, so padded top and bottom
    assert tensor.shape == (1, SIDE, SIDE)
    assert tensor[0, 0].abs().max() < 0.02  # the pad is the mean grey, 0 once normalised


def test_a_one_channel_model_gets_a_grayscale_default() -> None:
    classifier = fclens.load_model(gray_cnn(), input_size=SIDE)
    assert classifier.preprocessing.channels == 1
    assert classifier.preprocessing.mean == pytest.approx((sum(IMAGENET_MEAN) / 3,))
    assert classifier.head.num_features == 16


def test_a_preprocessing_with_the_wrong_channels_is_one_line_naming_both() -> None:
    rgb = Preprocessing((SIDE, SIDE), IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(ModelError) as raised:
        fclens.load_model(gray_cnn(), preprocessing=rgb)
    message = str(raised.value)
    assert "\n" not in message and "1-channel" in message and "makes 3" in message
    assert "channels=1" in message
    with pytest.raises(ModelError, match=r"3-channel images .* makes 1"):
        fclens.load_model(
            nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.LazyLinear(2)), preprocessing=GRAY
        )


def test_tensors_must_have_the_preprocessing_channels(gray: fclens.Classifier) -> None:
    tensor = GRAY(fclens.load_image(fclens.sample_image("coffee")))
    batch, pictures = to_batch([tensor], gray.preprocessing)
    assert batch.shape == (1, 1, SIDE, SIDE) and pictures[0].mode == "RGB"
    with pytest.raises(ImageError, match=r"expected a preprocessed \(1, 32, 32\)"):
        to_batch(tensor.expand(3, -1, -1), gray.preprocessing)


def test_explain_a_colour_photo_and_a_grey_image_alike(gray: fclens.Classifier) -> None:
    photo = fclens.sample_image("chelsea")
    colour = fclens.explain(gray, photo)
    grey = fclens.explain(gray, Image.open(photo).convert("L"))
    assert colour.image.mode == "RGB" and colour.image.size == (SIDE, SIDE)
    logits = gray.module(GRAY(fclens.load_image(photo))[None])
    assert colour.target.index == grey.target.index
    assert colour.target.probability == pytest.approx(logits.softmax(1).max().item(), abs=1e-6)
    assert colour.target.probability == grey.target.probability
    assert colour.nodes and all(
        torch.equal(a.map, b.map) for a, b in zip(colour.nodes, grey.nodes, strict=True)
    )
    assert colour.nodes[0].map.shape == (SIDE, SIDE)  # the feature map, no pooling before the head


def test_scan_a_folder_with_features(gray: fclens.Classifier, tmp_path: Path) -> None:
    folder = fclens.sample_folder(tmp_path / "photos", count=6, side=48)
    names = list(fclens.samples.SAMPLE_CLASSES.values())
    classifier = fclens.load_model(gray_cnn(), class_names=[*names, "c", "d"], preprocessing=GRAY)
    found = fclens.scan(
        classifier, folder, tmp_path / "scan", engine=LocalEngine(workers=0), features=True, progress=False
    )
    assert found.manifest.counts == {"images": 6, "ok": 6, "skipped": 0}
    rows = found.ok().to_pylist()
    paths = [found.locate(row["path"]) for row in rows]
    inputs = torch.stack([GRAY(fclens.load_image(path)) for path in paths])
    with torch.no_grad():
        pooled = classifier.module[:-1](inputs)
        probabilities = classifier.module(inputs).softmax(1)
    np.testing.assert_allclose(
        found.read_features().z.numpy(), pooled.numpy(), rtol=2e-3, atol=1e-4
    )  # float16 storage
    for row, expected in zip(rows, probabilities, strict=True):
        stored = dict(zip(row["top5"], row["top5_prob"], strict=True))  # all 4 classes, matched by index
        assert sorted(stored) == [0, 1, 2, 3]
        assert [stored[k] for k in range(4)] == pytest.approx(expected.tolist(), abs=1e-5)
        assert row["label"] == names.index(Path(row["path"]).parent.name)


def test_a_one_channel_timm_model_keeps_its_config_in_grey() -> None:
    timm = pytest.importorskip("timm")
    module = timm.create_model("test_resnet", in_chans=1, pretrained=False)
    rgb = fclens.Preprocessing.from_timm_config(timm.data.resolve_data_config({}, model=module))
    classifier = fclens.load_model(module)
    assert classifier.preprocessing == rgb.grayscale()
    explanation = fclens.explain(classifier, fclens.sample_image("coffee"))
    assert explanation.image.mode == "RGB" and explanation.image.size == rgb.input_size[::-1]
