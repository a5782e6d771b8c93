"""The sample photos as test data: a labelled folder of their crops (with the bad files a real folder
holds), and what the embedded model sees in them."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

import fclens

CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def make_photo_folder(root: Path, copies: int = 4) -> Path:
    """Crops and flips of the shipped photos in class-name subfolders, a truncated JPEG and a text file."""
    for sample, folder in (("chelsea", "Tiger_Cat"), ("coffee", "espresso")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        photo = Image.open(fclens.sample_image(sample)).convert("RGB")
        width, height = photo.size
        for i in range(copies):
            crop = photo.crop((7 * i, 5 * i, width - 6 * i, height - 4 * i))
            (ImageOps.mirror(crop) if i % 2 else crop).save(root / folder / f"{sample}-{i}.jpg", quality=92)
    (root / "Tiger_Cat" / "broken.jpg").write_bytes(fclens.sample_image("chelsea").read_bytes()[:2000])
    (root / "espresso" / "notes.png").write_text("not a picture")
    return root
