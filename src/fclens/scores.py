"""How faithful a heatmap is to the model: the author's masked score, deletion/insertion curves, baselines.

Every function takes M heatmaps at feature resolution, ``maps`` (M, h, w), with ``rows`` (M,) saying which
image of the preprocessed batch ``inputs`` (N, 3, H, W) each belongs to and ``targets`` (M,) the class
whose probability is read. The model runs on batches of ``batch_size`` modified images, without
autograd, in eval mode; probabilities come back as float32 CPU tensors.

On the CPU these forwards are most of the cost of an explanation, so they run the way a CPU runs a
convolutional network fastest: in channels-last memory order (oneDNN's NHWC convolutions; the same
values to float rounding) and in batches of at most :data:`CPU_BATCH_PIXELS` pixels, which keeps a
batch's activations nearer the cache (BENCHMARKS.md, section 2, "Part 4").

- :func:`masked_score`: PAPER.md §5, the author's recipe: one masked image per map.
- :func:`deletion_insertion`: Petsiuk, Das & Saenko, "RISE", BMVC 2018: remove pixels in the map's order,
  most relevant first (deletion, MoRF) and least relevant first (insertion read backwards, LeRF), and
  integrate the probability over the fraction of pixels. How a removed pixel is filled is the ``fill``
  (:data:`fclens.options.FILLS`); ``road`` is the noisy linear imputation of Rong, Leemann, Borisov, Kasneci
  & Kasneci, "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022
  (:func:`road_fill`).
- :func:`random_maps`: the baseline a curve is read against: a seeded random map at the feature grid's
  resolution, the same for an image whatever batch it comes in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms.functional import gaussian_blur

from fclens.head import evaluating
from fclens.options import FILLS

__all__ = [
    "BLUR_KERNEL",
    "BLUR_SIGMA",
    "CPU_BATCH_PIXELS",
    "ROAD_NOISE",
    "ROAD_WEIGHTS",
    "Curves",
    "deletion_insertion",
    "image_seeds",
    "masked_score",
    "random_maps",
    "road_fill",
    "upsample_normalised",
]

Forward = Callable[[torch.Tensor], torch.Tensor]
"""Anything that maps a preprocessed batch (N, 3, H, W) to logits (N, C): a module or a function."""

BLUR_KERNEL = 11
"""Side, in pixels, of the Gaussian kernel of the insertion curve's starting image (Petsiuk et al.)."""

BLUR_SIGMA = 5.0
"""Its standard deviation, in pixels (Petsiuk et al.)."""

ROAD_NOISE = 0.01
"""Standard deviation of the noise ROAD adds to imputed pixels, in the [0, 1] pixel range (the authors'
default); :class:`fclens.batch.BatchRunner` divides it by the model's per-channel std."""

ROAD_WEIGHTS = (
    ((-1, 0), 1 / 6), ((1, 0), 1 / 6), ((0, -1), 1 / 6), ((0, 1), 1 / 6),
    ((-1, -1), 1 / 12), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((1, 1), 1 / 12),
)  # fmt: skip
"""ROAD's neighbours of a pixel, ((dy, dx), weight): a side 1/6, a corner 1/12, summing to 1."""

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

    deletion[m, s]: probability of the target once the top ``fractions[s]`` of pixels by map m are removed
    (most relevant first, MoRF): low area = faithful map. insertion[m, s]: probability once only those
    pixels are kept and the rest removed: high area = faithful. Read backwards, insertion is the curve of
    removing the *least* relevant pixels first (LeRF): insertion[m, S − s] removes the bottom
    ``fractions[s]``, so both have the same area. How removed pixels are filled is ``fill``.
    """

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    fill: str = "rise"

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
    fill: str = "rise",
    seed: int = 0,
    noise: float | torch.Tensor = ROAD_NOISE,
) -> Curves:
    """Deletion and insertion curves (Petsiuk et al. 2018) of each map, ``steps`` + 1 points each.

    Pixels are ranked by the upsampled map (ties in index order); step s changes the top
    round(s / steps · H·W) of them. All 2·M·(steps+1) modified images go through the model in batches.

    ``fill`` says what a removed pixel becomes (:data:`fclens.options.FILLS`):

    - ``rise`` (the default; fclens's curves before issue 24): Petsiuk et al.'s pair as they drew it —
      deletion sets pixels to 0 in normalised space (the training set's mean colour), insertion starts
      from a Gaussian-blurred copy (:data:`BLUR_KERNEL`, :data:`BLUR_SIGMA`);
    - ``blur``: the blurred copy in both curves;
    - ``mean``: the image's own mean colour, per channel, in both;
    - ``road``: :func:`road_fill`, each removed pixel the weighted mean of its neighbours plus noise of
      standard deviation ``noise`` (normalised units: a float, or one per channel), drawn from ``seed``
      and the image (:func:`image_seeds`). One sparse solve per modified image, on the CPU.

    A black or blurred hole is an image the model never saw in training; ROAD's imputation keeps the
    removed region's colours continuous with its surroundings, so a drop in probability says more about
    the pixels removed and less about the hole's edges (Rong et al. 2022).
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
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
    deleted, inserted = _fillers(fill, inputs, seed, noise)

    def curve(filled: Filler, removed_on_top: bool) -> torch.Tensor:
        """Probabilities (M, S+1) with the top-ranked pixels removed (or, ``removed_on_top`` False, kept)."""

        def image(chunk: torch.Tensor) -> torch.Tensor:
            m, s = chunk // (steps + 1), chunk % (steps + 1)
            top = (ranks[m] < counts[s, None]).reshape(-1, 1, height, width)
            return filled(rows[m], top if removed_on_top else ~top)

        per_step = targets.repeat_interleave(steps + 1)
        return _probabilities(forward, image, per_step, batch_size, (height, width)).reshape(
            len(maps), steps + 1
        )

    return Curves(
        fractions=(counts.float() / pixels).cpu(),
        deletion=curve(deleted, removed_on_top=True),
        insertion=curve(inserted, removed_on_top=False),
        fill=fill,
    )


Filler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(rows (B,), removed (B, 1, H, W) bool) → the images ``inputs[rows]`` with the removed pixels filled."""


def _fillers(
    fill: str, inputs: torch.Tensor, seed: int, noise: float | torch.Tensor
) -> tuple[Filler, Filler]:
    """The deletion curve's and the insertion curve's way of filling removed pixels."""

    def constant(replacement: torch.Tensor) -> Filler:
        return lambda rows, removed: torch.where(removed, replacement[rows], inputs[rows])

    if fill == "road":
        noise = torch.as_tensor(noise, dtype=torch.float32).reshape(-1, 1, 1)
        fields = torch.stack(
            [
                torch.randn(inputs.shape[1:], generator=torch.Generator().manual_seed(image_seed + 1))
                for image_seed in image_seeds(inputs, seed)
            ]
        )

        def imputed(rows: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
            images = [
                road_fill(inputs[i].cpu(), hole[0].cpu(), noise * fields[i])
                for i, hole in zip(rows.tolist(), removed, strict=True)
            ]
            return torch.stack(images).to(inputs)

        return imputed, imputed
    if fill == "mean":
        mean = inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs)
        return constant(mean), constant(mean)
    blurred = gaussian_blur(inputs, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
    if fill == "rise":
        return constant(torch.zeros_like(inputs)), constant(blurred)
    return constant(blurred), constant(blurred)


def road_fill(image: torch.Tensor, removed: torch.Tensor, noise: torch.Tensor | float = 0.0) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al., ICML 2022) of the ``removed`` (H, W) pixels of ``image``
    (C, H, W), plus ``noise`` (broadcast to the image) on those pixels.

    Each removed pixel p takes the weighted mean of its eight neighbours inside the image, the four
    sharing a side weighing 1/6 and the four diagonal ones 1/12 (:data:`ROAD_WEIGHTS`, the authors'
    choice): s_p x_p − Σ_q w_pq x_q = Σ_{known q} w_pq v_q, with s_p the weight of p's neighbours inside
    the image. One sparse, symmetric, diagonally dominant system for all removed pixels, solved exactly
    by SuperLU for every channel at once; where nothing is left to interpolate from (every pixel
    removed) the removed pixels take the image's mean colour. The equation is invariant under a
    per-channel affine change of units, so it is solved on the normalised image as it is. Written from
    the paper; checked against the authors' code (github.com/tleemann/road_evaluation), not copied.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    channels, height, width = image.shape
    hole = removed.reshape(-1).numpy().astype(bool)
    unknown = np.flatnonzero(hole)
    filled = image.reshape(channels, -1).double().numpy().copy()
    if len(unknown) == 0:
        return image.clone()
    if len(unknown) == hole.size:
        filled[:] = filled.mean(axis=1, keepdims=True)
    else:
        variable = np.full(hole.size, -1)
        variable[unknown] = np.arange(len(unknown))
        ys, xs = np.divmod(unknown, width)
        diagonal = np.zeros(len(unknown))
        right = np.zeros((len(unknown), channels))
        rows, cols, values = [], [], []
        for (dy, dx), weight in ROAD_WEIGHTS:
            y, x = ys + dy, xs + dx
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            diagonal += weight * inside
            neighbour = (y * width + x)[inside]
            known = ~hole[neighbour]
            equation = np.flatnonzero(inside)
            right[equation[known]] += weight * filled[:, neighbour[known]].T
            rows.append(equation[~known])
            cols.append(variable[neighbour[~known]])
            values.append(np.full(int((~known).sum()), -weight))
        n = len(unknown)
        system = coo_matrix(
            (
                np.concatenate([diagonal, *values]),
                (np.concatenate([np.arange(n), *rows]), np.concatenate([np.arange(n), *cols])),
            ),
            shape=(n, n),
        ).tocsc()
        filled[:, unknown] = spsolve(system, right).reshape(n, channels).T
    result = torch.from_numpy(filled).reshape(channels, height, width).to(image.dtype)
    mask = removed.reshape(1, height, width).to(torch.bool)
    return torch.where(mask, result + torch.as_tensor(noise, dtype=image.dtype), image)


def image_seeds(inputs: torch.Tensor, seed: int) -> list[int]:
    """One seed per image of ``inputs`` (N, C, H, W), from ``seed`` and the image's own values.

    An image gets the same random baseline and the same ROAD noise whatever batch, order or run it comes
    in (an explanation and a resumed scan agree), and two images get different ones.
    """
    key = int(seed).to_bytes(8, "little", signed=True)
    values = inputs.detach().float().cpu().contiguous().numpy()
    return [
        int.from_bytes(hashlib.blake2b(image.tobytes(), digest_size=7, key=key).digest(), "little")
        for image in values
    ]


def random_maps(inputs: torch.Tensor, grid: tuple[int, int], seed: int) -> torch.Tensor:
    """A random heatmap per image, (N, h, w) uniform in [0, 1) at the feature grid's resolution ``grid``.

    The baseline of every curve: a map that knows nothing of the model, drawn at the resolution the
    node maps have (upsampled the same way, it has blobs of the same size). Seeded by :func:`image_seeds`.
    """
    maps = [
        torch.rand(grid, generator=torch.Generator().manual_seed(image_seed))
        for image_seed in image_seeds(inputs, seed)
    ]
    return torch.stack(maps).to(inputs.device)


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
