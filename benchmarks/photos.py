"""A folder of real photos for the data-set benchmarks: crops and flips of scikit-image's and fclens's photos.

No labelled data set can be downloaded here, so a few hundred distinct images are cut from the real photos
that ship with scikit-image (CC0 / public domain) and fclens: random crops (40–100 % of each side), mirror
images and small rotations, saved as JPEG in one subfolder per source photo (``--labels none`` when
scanned: the subfolders are not ImageNet classes). Seeded: the same call makes the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel",
          "camera", "coins", "clock", "brick", "gravel")


def photos() -> dict[str, Image.Image]:
    """The source photos as RGB pictures."""
    import skimage.data

    return {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS}


def make_photo_folder(root: str | Path, count: int = 300, seed: int = 0, side: int | None = None) -> Path:
    """``count`` JPEGs under ``root``/PHOTO/, cut from :func:`photos`; ``side`` resizes each to a small square."""
    root = Path(root)
    if root.is_dir() and len(list(root.rglob("*.jpg"))) == count:
        return root
    rng = np.random.default_rng(seed)
    sources = list(photos().items())
    for i in range(count):
        name, photo = sources[i % len(sources)]
        width, height = photo.size
        w, h = (int(width * rng.uniform(0.4, 1.0)), int(height * rng.uniform(0.4, 1.0)))
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        image = photo.crop((x, y, x + w, y + h)).rotate(float(rng.uniform(-8, 8)), expand=False)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        if side is not None:
            image = image.resize((side, side), Image.BILINEAR)
        (root / name).mkdir(parents=True, exist_ok=True)
        image.save(root / name / f"{name}-{i:05d}.jpg", quality=90)
    return root
