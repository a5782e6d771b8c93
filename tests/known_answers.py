"""A data set whose answers are known by construction, and a small CNN that learns it in seconds on a CPU.

Six classes in three confusable pairs: a square of one colour filled with stripes, horizontal or
vertical; a class's partner has the same colour and the other orientation. Every image holds one large
square of its class on a noisy grey background; ``partner_share`` of the images also hold a small square
of the partner class elsewhere. On those images the model's rival should be the partner, and the
evidence for it should sit in the small square's box: the answer a contrast map is checked against.

Everything is seeded: the same call gives the same pixels, boxes and trained weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from fclens.preprocessing import Preprocessing

SIZE = 48
"""Side of an image, pixels."""
MAIN_SIDE = (19, 21)
"""Range of the large square's side."""
SMALL_SIDE = (10, 12)
"""Range of the small partner square's side."""
PERIOD = 4
"""Stripe period in pixels: two on, two off."""
COLOURS = {"red": (0.9, 0.15, 0.1), "green": (0.1, 0.7, 0.2), "blue": (0.15, 0.3, 0.95)}
CLASS_NAMES = [f"{colour} {stripes}" for colour in COLOURS for stripes in ("horizontal", "vertical")]
PREPROCESSING = Preprocessing((SIZE, SIZE), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
"""The images are made at the model's size; (x − 0.5) / 0.5 is all the preparation they need."""
MIN_SIZE = 8
"""Tree nodes of the 64-neuron final layer with fewer weights are not split."""


def partner(label: int) -> int:
    """The class of the same colour and the other stripes."""
    return label ^ 1


@dataclass
class KnownAnswers:
    """N images with their answers: ``images`` (N, 3, SIZE, SIZE) preprocessed, boxes (y0, x0, y1, x1)
    exclusive, ``small`` (N, 4) all −1 where an image has no partner square."""

    images: torch.Tensor
    labels: torch.Tensor
    main: np.ndarray
    small: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def with_partner(self) -> np.ndarray:
        """Indices of the images that hold a small partner square."""
        return np.flatnonzero(self.small[:, 0] >= 0)


class KnownAnswersDataset(torch.utils.data.Dataset):
    """(image, label) pairs, as ``fclens.scan`` reads a torch Dataset."""

    def __init__(self, data: KnownAnswers) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.data.images[i], int(self.data.labels[i])


def make(per_class: int, seed: int, partner_share: float = 0.5) -> KnownAnswers:
    """``per_class`` images of each class, in an order shuffled by ``seed``."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(CLASS_NAMES)), per_class))
    images = np.empty((len(labels), 3, SIZE, SIZE), dtype=np.float32)
    main = np.empty((len(labels), 4), dtype=np.int64)
    small = np.full((len(labels), 4), -1, dtype=np.int64)
    for i, label in enumerate(labels):
        image = 0.5 + 0.08 * rng.standard_normal((3, SIZE, SIZE))
        main[i], placed = _boxes(rng, rng.random() < partner_share)
        _paint(image, main[i], int(label), rng)
        if placed is not None:
            small[i] = placed
            _paint(image, small[i], partner(int(label)), rng)
        images[i] = np.clip(image, 0, 1)
    inputs = (torch.from_numpy(images) - 0.5) / 0.5
    return KnownAnswers(inputs, torch.from_numpy(labels), main, small)


def _boxes(rng: np.random.Generator, with_partner: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The large box, and a small one at least 2 px clear of it; a large box that leaves no room for the
    small one (one near the middle) is drawn again."""
    while True:
        main = _box(rng, int(rng.integers(*MAIN_SIDE, endpoint=True)))
        if not with_partner:
            return main, None
        side = int(rng.integers(*SMALL_SIDE, endpoint=True))
        for _ in range(50):
            small = _box(rng, side)
            if _apart(small, main, 2):
                return main, small


def _box(rng: np.random.Generator, side: int) -> np.ndarray:
    y, x = rng.integers(0, SIZE - side, size=2, endpoint=True)
    return np.array([y, x, y + side, x + side])


def _apart(a: np.ndarray, b: np.ndarray, gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _paint(image: np.ndarray, box: np.ndarray, label: int, rng: np.random.Generator) -> None:
    y0, x0, y1, x1 = box
    colour = np.array(COLOURS[CLASS_NAMES[label].split()[0]])[:, None, None]
    ys, xs = np.mgrid[y0:y1, x0:x1]
    phase = int(rng.integers(PERIOD))
    on = (((ys if label % 2 == 0 else xs) + phase) % PERIOD) < PERIOD // 2
    shade = np.where(on, 1.0, 0.35)[None]
    image[:, y0:y1, x0:x1] = colour * shade + 0.04 * rng.standard_normal((3, y1 - y0, x1 - x0))


class SmallCNN(nn.Module):
    """conv → ReLU → pool, three times, then global average pooling and one linear layer (64 → 6).

    The feature grid is 12 × 12 for a 48-px image: one cell per 4 px.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 24, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(24, 48, 3, padding=1), nn.ReLU(),
            nn.Conv2d(48, 64, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(64, len(CLASS_NAMES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)))


@lru_cache(maxsize=2)
def trained(seed: int = 0, per_class: int = 120, epochs: int = 8) -> SmallCNN:
    """A :class:`SmallCNN` trained on ``make(per_class, seed)``; memoised, so tests share it.

    Its parameters must not be changed by a caller.
    """
    torch.manual_seed(seed)
    data = make(per_class, seed)
    model = SmallCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(data), generator=order).split(64):
            loss = nn.functional.cross_entropy(model(data.images[batch]), data.labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def in_box(heat: np.ndarray, box: np.ndarray, tolerance: int = 0) -> tuple[bool, float]:
    """Pointing game and energy of a (SIZE, SIZE) map in a box: whether its maximum is inside the box
    grown by ``tolerance`` px, and the share of its positive mass inside the box itself."""
    heat = np.clip(heat, 0, None)
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    y0, x0, y1, x1 = box
    hit = y0 - tolerance <= y < y1 + tolerance and x0 - tolerance <= x < x1 + tolerance
    total = float(heat.sum())
    energy = float(heat[y0:y1, x0:x1].sum()) / total if total > 0 else 0.0
    return bool(hit), energy


def classifier(seed: int = 0):
    """The trained :class:`SmallCNN` as an fclens Classifier with the data set's names and preparation."""
    from fclens.models import load_model

    return load_model(trained(seed), class_names=CLASS_NAMES, preprocessing=PREPROCESSING)


@dataclass
class Evidence:
    """Pointing-game hit rate and mean energy in the box, per map, over the images with a partner square.

    ``contrast`` and ``gradcam_rival`` are read in the small (partner) box, ``discriminative`` and
    ``gradcam_target`` in the large one; ``rival_is_partner`` is the share of those images whose
    runner-up is the designed partner, ``images`` their number.
    """

    images: int
    rival_is_partner: float
    contrast: tuple[float, float]
    gradcam_rival: tuple[float, float]
    discriminative: tuple[float, float]
    gradcam_target: tuple[float, float]


def evidence(seed: int = 0, per_class: int = 40) -> Evidence:
    """Contrast and discriminative maps against pytorch-grad-cam's Grad-CAM on held-out images (seed + 1).

    Every map is brought to the image's size the same way (bilinear, as pytorch-grad-cam resizes its
    own), clipped at zero, and scored by :func:`in_box` without tolerance.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from fclens.explaining import explain

    model = classifier(seed)
    data = make(per_class, seed + 1)
    chosen = data.with_partner
    explanations = explain(model, data.images[chosen], contrast="runner-up", min_size=MIN_SIZE, scores="none")
    rivals = [e.contrast.rival.index for e in explanations]
    targets = [e.target.index for e in explanations]
    with GradCAM(model=model.module, target_layers=[model.module.features[-1]]) as cam:
        inputs = data.images[chosen]
        of_rival = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(j) for j in rivals])
        of_target = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(k) for k in targets])

    def resized(heat: torch.Tensor) -> np.ndarray:
        return nn.functional.interpolate(heat[None, None], (SIZE, SIZE), mode="bilinear")[0, 0].numpy()

    def score(maps: list[np.ndarray], boxes: np.ndarray) -> tuple[float, float]:
        results = [in_box(heat, box) for heat, box in zip(maps, boxes, strict=True)]
        return float(np.mean([hit for hit, _ in results])), float(np.mean([energy for _, energy in results]))

    small, main = data.small[chosen], data.main[chosen]
    return Evidence(
        images=len(chosen),
        rival_is_partner=float(
            np.mean([j == partner(int(data.labels[i])) for i, j in zip(chosen, rivals, strict=True)])
        ),
        contrast=score([resized(e.contrast.shown()) for e in explanations], small),
        gradcam_rival=score(list(of_rival), small),
        discriminative=score([resized(e.discriminative.map) for e in explanations], main),
        gradcam_target=score(list(of_target), main),
    )
