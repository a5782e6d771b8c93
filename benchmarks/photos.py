"""A folder of real photos for the data-set benchmarks: crops and flips of twelve of scikit-image's photos.

No labelled data set can be downloaded here, so a few hundred distinct images are cut from the real photos
that ship with scikit-image (CC0 / public domain) by :func:`fclens.sample_folder` (which, for users, cuts
fclens's own two samples): random crops (40–100 % of each side), mirror images and small rotations, saved
as JPEG in one subfolder per source photo (``--labels none`` when scanned: the subfolders are not ImageNet
classes). Seeded: the same call makes the same files.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from fclens.samples import sample_folder

PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "colorwheel",
    "camera",
    "coins",
    "clock",
    "brick",
    "gravel",
)


def photos() -> dict[str, Image.Image]:
    """The source photos as RGB pictures."""
    import skimage.data

    return {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS}


def make_photo_folder(root: str | Path, count: int = 300, seed: int = 0, side: int | None = None) -> Path:
    """``count`` JPEGs under ``root``/PHOTO/, cut from :func:`photos` as :func:`fclens.sample_folder` cuts."""
    return sample_folder(root, count, seed=seed, side=side, photos=photos())
