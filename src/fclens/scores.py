"""How faithful a heatmap is to the model: the author's masked score and deletion/insertion curves.

Every function takes M heatmaps at feature resolution, ``maps`` (M, h, w), with ``rows`` (M,) saying which
image of the preprocessed batch ``inputs`` (N, 3, H, W) each belongs to and ``targets`` (M,) the class
whose probability is read. The model runs on batches of ``batch_size`` modified images, without
autograd, in eval mode; probabilities come back as float32 CPU tensors.

On the CPU these forwards are most of the cost of an explanation, so they run the way a CPU runs a
convolutional network fastest: in channels-last memory order (oneDNN's NHWC convolutions; the same
values to float rounding) and in batches of at most :data:`CPU_BATCH_PIXELS` pixels, which keeps a
batch's activations nearer the cache (BENCHMARKS.md, section 2, "Part 4").

- :func:`masked_score`: PAPER.md §5, the author's recipe: one masked image per map.
- :func:`deletion_insertion`: Petsiuk, Das & Saenko, "RISE", BMVC 2018: reveal or remove pixels in the
  map's order and integrate the probability over the fraction of pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms.functional import gaussian_blur

from fclens.head import evaluating

__all__ = [
    "BLUR_KERNEL",
    "BLUR_SIGMA",
    "CPU_BATCH_PIXELS",
    "Curves",
    "deletion_insertion",
    "masked_score",
    "upsample_normalised",
]

Forward = Callable[[torch.Tensor], torch.Tensor]
"""Anything that maps a preprocessed batch (N, 3, H, W) to logits (N, C): a module or a function."""

BLUR_KERNEL = 11
"""Side, in pixels, of the Gaussian kernel of the insertion curve's starting image (Petsiuk et al.)."""

BLUR_SIGMA = 5.0
"""Its standard deviation, in pixels (Petsiuk et al.)."""

CPU_BATCH_PIXELS = 4 * 224 * 224
"""Most pixels in one batch of modified images on the CPU (4 images at 224 px; more at smaller sizes)."""


def upsample_normalised(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Heatmaps (..., h, w) → (..., H, W): bicubic upsampling, then min-max scaling of each map to [0, 1].

    The scaling comes after the upsampling, as in the author's code, so bicubic overshoot is scaled
    away too. A constant map becomes all zeros (it highlights nothing), also when interpolation has
    left rounding noise on it (a spread under 1e-5 of its magnitude).
    """
    h, w = maps.shape[-2:]
    flat = maps.reshape(-1, 1, h, w).float()
    up = F.interpolate(flat, size=size, mode="bicubic", align_corners=False).flatten(1)
    low = up.min(dim=1, keepdim=True).values
    span = up.max(dim=1, keepdim=True).values - low
    flat_map = span <= 1e-5 * up.abs().max(dim=1, keepdim=True).values
    scaled = (up - low) / torch.where(flat_map, torch.inf, span)
    return scaled.reshape(*maps.shape[:-2], *size)


def masked_score(
    forward: Forward,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 16,
) -> torch.Tensor:
    """The author's score of each map, (M,): softmax probability of the target for input ⊙ mask.

    mask = min-max-scaled bicubic upsampling of the map (:func:`upsample_normalised`); the product is
    taken on the already normalised input (PAPER.md §5), so masked-out pixels are 0 = the mean colour.
    """
    size = (inputs.shape[2], inputs.shape[3])
    rows, targets = rows.to(inputs.device), targets.to(inputs.device)

    def masked(chunk: torch.Tensor) -> torch.Tensor:
        mask = upsample_normalised(maps[chunk].to(inputs.device), size)
        return inputs[rows[chunk]] * mask[:, None]

    return _probabilities(forward, masked, targets, batch_size, size)


@dataclass
class Curves:
    """Deletion and insertion curves of M maps at ``fractions`` (S+1,) of the pixels, each (M, S+1).

    deletion[m, s]: probability of the target once the top ``fractions[s]`` of pixels by map m are set
    to 0 in normalised space (the data set's mean colour): low area = faithful map. insertion[m, s]:
    probability once those pixels are restored into a blurred copy of the image: high area = faithful.
    """

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor

    @property
    def deletion_auc(self) -> torch.Tensor:
        """Area under each deletion curve, (M,), trapezoid rule over the fraction in [0, 1]."""
        return torch.trapezoid(self.deletion, self.fractions, dim=-1)

    @property
    def insertion_auc(self) -> torch.Tensor:
        """Area under each insertion curve, (M,)."""
        return torch.trapezoid(self.insertion, self.fractions, dim=-1)


def deletion_insertion(
    forward: Forward,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 16,
    batch_size: int = 16,
) -> Curves:
    """Deletion and insertion curves (Petsiuk et al. 2018) of each map, ``steps`` + 1 points each.

    Pixels are ranked by the upsampled map (ties in index order); step s changes the top
    round(s / steps · H·W) of them. All 2·M·(steps+1) modified images go through the model in batches.
    """
    device = inputs.device
    height, width = inputs.shape[2:]
    pixels = height * width
    order = (
        upsample_normalised(maps.to(device), (height, width))
        .flatten(1)
        .argsort(dim=1, descending=True, stable=True)
    )
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(pixels, device=device).expand_as(order))
    counts = torch.round(torch.linspace(0, pixels, steps + 1, device=device)).long()
    rows, targets = rows.to(device), targets.to(device)
    blurred = gaussian_blur(inputs, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])

    def curve(top: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        """Probabilities (M, S+1) with the top-ranked pixels taken from ``top``, the others from ``rest``."""

        def image(chunk: torch.Tensor) -> torch.Tensor:
            m, s = chunk // (steps + 1), chunk % (steps + 1)
            shown = (ranks[m] < counts[s, None]).reshape(-1, 1, height, width)
            return torch.where(shown, top[rows[m]], rest[rows[m]])

        per_step = targets.repeat_interleave(steps + 1)
        return _probabilities(forward, image, per_step, batch_size, (height, width)).reshape(
            len(maps), steps + 1
        )

    return Curves(
        fractions=(counts.float() / pixels).cpu(),
        deletion=curve(torch.zeros_like(inputs), inputs),
        insertion=curve(inputs, blurred),
    )


def _probabilities(
    forward: Forward,
    build: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    batch_size: int,
    size: tuple[int, int],
) -> torch.Tensor:
    """Softmax probability of ``targets[e]`` for each modified image e = 0..len(targets)-1, built by chunks.

    ``size`` = (H, W) of the images ``build`` makes, which bounds a chunk on the CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    on_cpu = targets.device.type == "cpu"
    if on_cpu:
        batch_size = max(1, min(batch_size, CPU_BATCH_PIXELS // (size[0] * size[1])))
    layout = torch.channels_last if on_cpu else torch.contiguous_format
    probabilities = []
    mode = evaluating(forward) if isinstance(forward, nn.Module) else nullcontext()
    with mode, torch.no_grad():
        for start in range(0, len(targets), batch_size):
            chunk = torch.arange(start, min(start + batch_size, len(targets)), device=targets.device)
            images = build(chunk)
            try:
                logits = forward(images.contiguous(memory_format=layout))
            except RuntimeError:
                if layout == torch.contiguous_format or start:
                    raise
                layout = torch.contiguous_format  # e.g. a view() of a 4-D map: run as given from now on
                logits = forward(images.contiguous())
            probabilities.append(logits.float().softmax(dim=1).gather(1, targets[chunk, None])[:, 0])
    if not probabilities:
        return torch.empty(0)
    return torch.cat(probabilities).cpu()
