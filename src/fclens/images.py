"""Image inputs: what a user hands fclens as an image becomes an RGB 8-bit picture, or one clear error.

A path, a folder, a PIL image or a numpy array becomes a decoded, validated picture here; a file that
cannot become one raises :class:`ImageError`, whose one-line message says what is wrong and what to do,
so that a batch can skip it and report why. Turning pictures into model inputs is
:mod:`fclens.preprocessing`'s job; the photos that ship with fclens are :mod:`fclens.samples`'.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from fclens import deprecation
from fclens.errors import FclensError, as_path, first_line

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "MIN_SIDE",
    "ImageError",
    "ImageInput",
    "decode_image",
    "image_from_array",
    "iter_image_paths",
    "load_image",
    "to_rgb",
]

MAX_PIXELS = 89_478_485
"""Largest width × height decoded (PIL's own default); bigger files are refused from their header."""

MIN_SIDE = 16
"""Shortest side, in pixels, of an image worth explaining; smaller ones are refused."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""Suffixes (lower case) that `iter_image_paths` picks up inside folders."""
ImageInput: TypeAlias = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor
"""What `to_batch` accepts as one image (a tensor may hold several, already preprocessed)."""

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class ImageError(FclensError):
    """An input that cannot become a model input; the message names the problem and the remedy.

    `path` is the file concerned (None for in-memory inputs), `reason` the message without it.
    """

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else Path(path)
        super().__init__(reason if path is None else f"{path}: {reason}")

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, Path | None]]:
        # Keeps `reason` and `path` apart across processes (multiprocessing batch drivers).
        return type(self), (self.reason, self.path)


# --- decoding --------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode one file fully into an upright RGB 8-bit image, or raise ImageError saying why not.

    The whole file is decoded here, so a truncated download fails now rather than later as a grey
    band in the picture. Orientation comes from EXIF; transparency is composited on white.
    """
    path = as_path(path, "path")
    if path.is_dir():
        raise ImageError("is a folder, not an image; pass the image files in it instead", path)
    if not path.exists():
        raise ImageError("no such file; check the path", path)
    if path.stat().st_size == 0:
        raise ImageError("empty file (0 bytes); re-export or re-download it", path)
    try:
        with warnings.catch_warnings():
            # PIL warns, then errs, on oversized headers; both mean the same thing to us.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError(_too_large_reason(), path) from None
    except UnidentifiedImageError:
        raise ImageError(_unidentified_reason(path), path) from None
    except PermissionError:
        raise ImageError("cannot read the file (permission denied); check its permissions", path) from None
    except Exception as error:  # a broken header can raise almost anything inside a PIL plugin
        raise ImageError(f"unreadable image header ({first_line(error)}); re-export it", path) from error
    with image:
        try:
            return decode_image(image)
        except ImageError as error:
            raise ImageError(error.reason, path) from error.__cause__


def image_from_array(array: np.ndarray) -> Image.Image:
    """An RGB image from an HxW, HxWx1, HxWx3 or HxWx4 array of uint8, or of floats in [0, 1]."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageError(
            f"array of shape {array.shape}: expected H×W, H×W×1, H×W×3 or H×W×4 (channels last); "
            "move the channel axis last, e.g. array.transpose(1, 2, 0)"
        )
    _check_side(array.shape[1], array.shape[0])
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(np.min(array)), float(np.max(array))
        if not (low >= 0.0 and high <= 1.0):  # also catches NaN
            raise ImageError(
                f"float array with values in [{low:.4g}, {high:.4g}]: expected values in [0, 1]; "
                "divide by 255 if it holds 0–255 pixel values"
            )
        array = np.round(array.astype(np.float64) * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageError(
            f"array of dtype {array.dtype}: expected uint8, or floats in [0, 1]; convert it first"
        )
    return to_rgb(Image.fromarray(np.ascontiguousarray(array)))


def decode_image(image: Image.Image) -> Image.Image:
    """Check an opened image from its header alone, then decode it fully to upright RGB."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageError(_too_large_reason(width, height))
    _check_side(width, height)
    kind = image.format or "image"
    try:
        frames = getattr(image, "n_frames", 1)
        # MPO is a camera JPEG carrying extra pictures (depth, stereo); its first frame is the photo.
        if frames > 1 and kind != "MPO":
            if kind == "TIFF":
                raise ImageError(f"multi-page TIFF ({frames} pages); save the page you want as its own file")
            raise ImageError(f"animated image ({frames} frames); pass a single frame")
        with _strict_decoding():
            image.load()
        return to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except Exception as error:  # PIL plugins report broken data with many exception types
        if isinstance(error, EOFError) or "truncated" in str(error):
            reason = f"truncated {kind} (the file ends early); re-export or re-download it"
        else:
            reason = f"corrupt {kind} data ({first_line(error)}); re-export or re-download it"
        raise ImageError(reason) from error


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB 8-bit from any PIL mode: 16-bit scaled (not clipped), transparency composited on white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise ImageError(
                f"32-bit integer image with values in [{low}, {high}]: expected 0–65535; "
                "convert it to an 8- or 16-bit image"
            )
        # 0..65535 -> 0..255, rounding to nearest: v * 255 / 65535 = v / 257.
        eight_bit = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(eight_bit).convert("RGB")
    if mode == "F":
        return image_from_array(np.asarray(image))
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError:
        raise ImageError(f"colour mode {mode} cannot be converted to RGB; save it as RGB") from None


_strict_lock = threading.Lock()
_strict_users = 0
_saved_truncated_flag = False


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """Decode with `ImageFile.LOAD_TRUNCATED_IMAGES` off, so a truncated file raises.

    PIL keeps that flag as a module global which a user may have switched on; it is switched off
    while any fclens decode runs and the user's value comes back when the last one ends.
    """
    global _strict_users, _saved_truncated_flag
    with _strict_lock:
        if _strict_users == 0:
            _saved_truncated_flag = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _strict_users += 1
    try:
        yield
    finally:
        with _strict_lock:
            _strict_users -= 1
            if _strict_users == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _saved_truncated_flag


def _check_side(width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            f"image is only {width}×{height} pixels; fclens needs at least {MIN_SIDE} px on the "
            "shorter side, use a larger image"
        )


def _too_large_reason(width: int | None = None, height: int | None = None) -> str:
    size = "" if width is None else f" ({width}×{height} pixels)"
    return (
        f"image too large{size}, over the {MAX_PIXELS:,}-pixel limit that guards against "
        "decompression bombs; downscale it first"
    )


def _unidentified_reason(path: Path) -> str:
    """Why PIL could not identify a file, guessed from its first bytes."""
    with path.open("rb") as file:
        head = file.read(512)
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc"):
        return "HEIC/HEIF photo, which Pillow cannot read; convert it to JPEG or PNG"
    if all(byte >= 32 or byte in b"\t\n\r" for byte in head):
        return "not an image, the file holds text; check that it is the file you meant"
    return "not an image, or a format Pillow cannot read; convert it to PNG or JPEG"


# --- paths -----------------------------------------------------------------------------------------


def iter_image_paths(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files to process, in the order given, each folder expanded to its image files.

    Files named directly are kept whatever their suffix, and paths that do not exist are kept too,
    so that `load_image` reports each with its reason instead of it vanishing silently. Folders are
    searched recursively for `IMAGE_EXTENSIONS` (any case), sorted, skipping hidden files and
    folders (".DS_Store", macOS "._x.jpg" resource forks). A file reached twice is listed once.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()
    for given in map(Path, paths):
        for path in _images_in(given) if given.is_dir() else [given]:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                found.append(path)
    return found


def _images_in(folder: Path) -> list[Path]:
    images = []
    for root, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        images += [
            Path(root, name)
            for name in names
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return sorted(images)


__getattr__ = deprecation.moved(
    __name__,
    {
        "Preprocessing": "fclens.preprocessing",
        "to_batch": "fclens.preprocessing",
        "SAMPLE_NAMES": "fclens.samples",
        "SAMPLE_CLASSES": "fclens.samples",
        "sample_image": "fclens.samples",
        "sample_folder": "fclens.samples",
    },
)
