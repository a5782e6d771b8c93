"""A small classifier trained on known-answer images in a few seconds: noise plus sine stripes, the class
given by the colour channel and the direction. Its scans carry real errors and real features."""

from __future__ import annotations

import torch
from torch import nn

import fclens
from fclens.preprocessing import Preprocessing

CLASSES, SIDE = 6, 16


def striped_images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise plus sine stripes: the class picks the colour channel (k mod 3) and the direction (k < 3)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    images = 0.3 * torch.randn(count, 3, SIDE, SIDE, generator=generator)
    wave = torch.sin(torch.arange(SIDE) * 1.6)
    for i, k in enumerate(labels.tolist()):
        images[i, k % 3] += wave[:, None] if k < 3 else wave[None, :]
    return images, labels


class Pairs(torch.utils.data.Dataset):
    """(image, label) pairs of preprocessed tensors, the form fclens.scan takes from a Dataset."""

    def __init__(self, images: torch.Tensor, labels: list[int]) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], self.labels[i]


def train() -> fclens.Classifier:
    """A conv net → global average pool → Linear(48, 6), trained in a few seconds to read the stripes."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 48, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(48, CLASSES),
    )
    images, labels = striped_images(400, seed=0)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(40):
        batch = torch.randint(0, len(labels), (32,))
        loss = nn.functional.cross_entropy(net(images[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    preprocessing = Preprocessing((SIDE, SIDE), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear", 1.0)
    names = [f"{colour} {way}" for way in ("rows", "columns") for colour in ("red", "green", "blue")]
    return fclens.load_model(net.eval(), class_names=names, preprocessing=preprocessing)
