"""The photos that ship with fclens (CC0, from scikit-image), and labelled folders cut from them.

Demos, tests and the README's walk-throughs run offline on them; their licence is in
``fclens/samples/ATTRIBUTION.md`` and goes beside every folder :func:`sample_folder` writes.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
from collections.abc import Mapping
from importlib.resources import as_file, files
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fclens.errors import FclensError, as_path
from fclens.images import load_image
from fclens.options import SAMPLE_COUNT, SEED, at_least

__all__ = ["SAMPLE_CLASSES", "SAMPLE_NAMES", "sample_folder", "sample_image"]


SAMPLE_NAMES: tuple[str, ...] = ("chelsea", "coffee")
"""Photos shipped in fclens/samples (CC0, from scikit-image; see samples/ATTRIBUTION.md)."""

SAMPLE_CLASSES: Mapping[str, str] = {"chelsea": "tabby", "coffee": "espresso"}
"""The ImageNet class each sample photo shows: :func:`sample_folder` files its crops under that name."""


def sample_image(name: str = "chelsea") -> Path:
    """Path to a photo shipped with fclens, so that demos and tests run offline.

    "chelsea" is a tabby cat (451×300 px), "coffee" a cup of espresso (600×400 px).
    """
    if name not in SAMPLE_NAMES:
        raise FclensError(f"unknown sample image {name!r}; available: {', '.join(SAMPLE_NAMES)}")
    return _sample_path(name)


_sample_files = contextlib.ExitStack()
atexit.register(_sample_files.close)


@functools.cache
def _sample_path(name: str) -> Path:
    """A real file path even from a zipped install, kept until the interpreter exits."""
    return _sample_files.enter_context(as_file(files("fclens") / "samples" / f"{name}.jpg"))


def sample_folder(
    out: str | os.PathLike[str],
    count: int = SAMPLE_COUNT,
    seed: int = SEED,
    side: int | None = None,
    photos: Mapping[str, Image.Image] | None = None,
) -> Path:
    """A labelled folder of real photos to try ``fclens scan``, ``atlas`` and ``prune`` on, offline.

    ``count`` JPEGs under ``out/LABEL/``, each a random crop (40–100 % of each side), a small rotation
    and, half the time, the mirror image of a photo, taken from each photo in turn. By default the
    photos are fclens's own samples, filed under the ImageNet class each shows (:data:`SAMPLE_CLASSES`),
    so that a scan reads their labels from the folder names, and their licence goes beside them in
    ``out/ATTRIBUTION.md``; ``photos`` (label → picture) takes others. ``side`` resizes every crop to a
    small square. Seeded: the same call makes the same files, and a folder that already holds ``count``
    JPEGs is kept as it is. Returns ``out``.
    """
    at_least("count", count, 1)
    at_least("seed", seed, 0)
    if side is not None:
        at_least("side", side, 1)
    root = as_path(out, "out")
    if root.exists() and not root.is_dir():
        raise FclensError(f"{root} is a file; give a folder for the photos")
    if root.is_dir() and len(list(root.rglob("*.jpg"))) == count:
        return root
    if photos is None:
        photos = {label: load_image(sample_image(name)) for name, label in SAMPLE_CLASSES.items()}
        root.mkdir(parents=True, exist_ok=True)
        (root / "ATTRIBUTION.md").write_bytes((files("fclens") / "samples" / "ATTRIBUTION.md").read_bytes())
    rng = np.random.default_rng(seed)
    sources = list(photos.items())
    for i in range(count):
        label, photo = sources[i % len(sources)]
        width, height = photo.size
        w, h = (int(width * rng.uniform(0.4, 1.0)), int(height * rng.uniform(0.4, 1.0)))
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        image = photo.crop((x, y, x + w, y + h)).rotate(float(rng.uniform(-8, 8)), expand=False)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        if side is not None:
            image = image.resize((side, side), Image.BILINEAR)
        (root / label).mkdir(parents=True, exist_ok=True)
        image.save(root / label / f"{label}-{i:05d}.jpg", quality=90)
    return root
