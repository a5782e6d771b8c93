"""Image inputs: decoding, validation, preprocessing and the sample photos.

Everything a user may hand fclens as an image — a path, a folder, a PIL image, a numpy array or an
already preprocessed tensor — becomes an RGB 8-bit picture here, then a model input made exactly as
timm's evaluation transform makes it. A file that cannot become a picture raises `ImageError`, whose
one-line message says what is wrong and what to do, so that a batch can skip it and report why.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from fclens.errors import FclensError, as_path, described
from fclens.options import at_least

MAX_PIXELS = 89_478_485
"""Largest width × height decoded (PIL's own default); bigger files are refused from their header."""

MIN_SIDE = 16
"""Shortest side, in pixels, of an image worth explaining; smaller ones are refused."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""Suffixes (lower case) that `iter_image_paths` picks up inside folders."""

SAMPLE_NAMES: tuple[str, ...] = ("chelsea", "coffee")
"""Photos shipped in fclens/samples (CC0, from scikit-image; see samples/ATTRIBUTION.md)."""

SAMPLE_CLASSES: Mapping[str, str] = {"chelsea": "tabby", "coffee": "espresso"}
"""The ImageNet class each sample photo shows: :func:`sample_folder` files its crops under that name."""

ImageInput: TypeAlias = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor
"""What `to_batch` accepts as one image (a tensor may hold several, already preprocessed)."""

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
_CROP_MODES = ("center", "squash", "border")
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
        raise ImageError(f"unreadable image header ({_one_line(error)}); re-export it", path) from error
    with image:
        try:
            return _decode(image)
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
    return _to_rgb(Image.fromarray(np.ascontiguousarray(array)))


def _decode(image: Image.Image) -> Image.Image:
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
        return _to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except Exception as error:  # PIL plugins report broken data with many exception types
        if isinstance(error, EOFError) or "truncated" in str(error):
            reason = f"truncated {kind} (the file ends early); re-export or re-download it"
        else:
            reason = f"corrupt {kind} data ({_one_line(error)}); re-export or re-download it"
        raise ImageError(reason) from error


def _to_rgb(image: Image.Image) -> Image.Image:
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


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


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


# --- preprocessing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocessing:
    """A model's input preparation: timm's evaluation transform, as data.

    An image is resized so that the crop keeps `crop_pct` of it, cropped to `input_size` = (H, W)
    pixels and normalised per channel, (x - mean) / std with x in [0, 1]. `crop_mode` is timm's:
    "center" keeps the aspect ratio and crops, "squash" stretches both sides, "border" fits the
    longer side and pads with the mean colour. The result equals timm's
    `create_transform(**resolve_data_config(...))` for the same configuration, value for value (bit for
    bit on the sample photos, for every crop mode tested).

    ``channels`` is 3 (RGB) or 1 (grayscale); left out, it is the number of values in ``mean``. A
    one-channel preprocessing turns every image into PIL's "L" (``convert("L")``, ITU-R 601 luma) before
    the resize and yields (1, H, W) inputs; its ``display`` is still an RGB picture (the grey one, in
    three equal channels) so that overlays draw as for any model.

    Why not call timm's transform: fclens also needs the picture the model sees before normalisation
    (`display`, for overlays) from the same single resize, which timm's composed transform does not hand
    out; and torchvision models and modules of one's own, which have no timm config, go through the same
    code. The configuration does come from timm where a model has one (`from_timm_config`).
    """

    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    channels: int | None = None
    """1 or 3 once made; None (the default) takes the number of values in ``mean``."""

    def __post_init__(self) -> None:
        if not isinstance(self.crop_pct, (int, float, np.number)):
            raise FclensError(f"crop_pct must be a number, got {described(self.crop_pct)}")
        fields: dict[str, Any] = {
            "input_size": _each(int, self.input_size, "input_size", "(height, width) in pixels"),
            "mean": _each(float, self.mean, "mean", "one number per channel"),
            "std": _each(float, self.std, "std", "one number per channel"),
            "crop_pct": float(self.crop_pct),
        }
        # A manifest written before `channels` existed holds no such key: its length of mean says it.
        fields["channels"] = len(fields["mean"]) if self.channels is None else self.channels
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        if len(self.input_size) != 2 or min(self.input_size) <= 0:
            raise FclensError(f"input_size must be (height, width) in pixels, got {self.input_size}")
        if isinstance(self.channels, bool) or self.channels not in (1, 3):
            raise FclensError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels!r}")
        n = self.channels
        if len(self.mean) != n or len(self.std) != n or min(self.std) <= 0:
            raise FclensError(
                f"mean and std need {n} value{'s' * (n > 1)} each for {n} channel{'s' * (n > 1)}, std > 0; "
                f"got {self.mean}, {self.std}"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise FclensError(f"interpolation {self.interpolation!r} is not one of {_INTERPOLATIONS}")
        if self.crop_mode not in _CROP_MODES:
            raise FclensError(f"crop_mode {self.crop_mode!r} is not one of {_CROP_MODES}")
        if not self.crop_pct > 0:
            raise FclensError(f"crop_pct must be positive, got {self.crop_pct}")

    @classmethod
    def from_timm_config(cls, cfg: Mapping[str, Any]) -> Preprocessing:
        """From timm's `model.pretrained_cfg` or `timm.data.resolve_data_config(...)` dict.

        interpolation, crop_pct and crop_mode may be missing or None, as timm allows; they then
        take timm's defaults, which are this class's defaults.
        """
        try:
            channels, height, width = cfg["input_size"]
            mean, std = cfg["mean"], cfg["std"]
        except (KeyError, TypeError, ValueError) as error:
            raise FclensError(
                f"a timm data config needs input_size (3, H, W), mean and std; got keys {sorted(cfg)}"
            ) from error
        if channels not in (1, 3):
            raise FclensError(
                f"fclens handles RGB and grayscale models only; this config has {channels} input channels"
            )
        optional = {key: cfg[key] for key in ("interpolation", "crop_pct", "crop_mode") if cfg.get(key)}
        if channels == 1 and len(mean) == 3:  # a one-channel timm model keeps its RGB statistics
            return cls(input_size=(height, width), mean=mean, std=std, **optional).grayscale()
        return cls(input_size=(height, width), mean=mean, std=std, channels=channels, **optional)

    def grayscale(self) -> Preprocessing:
        """The same preparation for a one-channel model: mean and std become the mean of their values.

        A model of one's own trained on grayscale data usually has its own statistics (pass them); for a
        model with no data config, the average of the RGB statistics is the usual stand-in (for
        ImageNet's, 0.449 and 0.226), as the grey of an image is close to the average of its channels.
        """
        if self.channels == 1:
            return self
        mean, std = (sum(values) / len(values) for values in (self.mean, self.std))
        return replace(self, mean=(mean,), std=(std,), channels=1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """The model input for one image: float32 (channels, H, W)."""
        return self.normalize(self.display(image))

    def display(self, image: Image.Image) -> Image.Image:
        """The RGB picture the model sees — resized and cropped, not normalised — for overlays.

        For one channel it is the grey picture in RGB: its three channels equal, so that `normalize`
        gets the grey values back exactly (PIL's luma weights sum to one).
        """
        if self.channels == 1:
            return self._geometry(_to_rgb(image).convert("L")).convert("RGB")
        return self._geometry(_to_rgb(image))

    def _geometry(self, image: Image.Image) -> Image.Image:
        """Resize and crop (or pad) `image`, in its own mode, to `input_size`."""
        height, width = self.input_size
        scale = (math.floor(height / self.crop_pct), math.floor(width / self.crop_pct))
        mode = InterpolationMode(self.interpolation)
        if self.crop_mode == "squash":
            return F.center_crop(F.resize(image, list(scale), mode), [height, width])
        if self.crop_mode == "border":
            image = F.resize(image, _keep_ratio_size(image, scale, fit_longer=True), mode)
            fill = [round(255 * v) for v in self.mean]
            return _center_crop_or_pad(image, height, width, fill[0] if self.channels == 1 else fill)
        if scale[0] == scale[1]:
            image = F.resize(image, scale[0], mode)  # shorter side to scale, as torchvision rounds it
        else:
            image = F.resize(image, _keep_ratio_size(image, scale, fit_longer=False), mode)
        return F.center_crop(image, [height, width])

    def normalize(self, display: Image.Image) -> torch.Tensor:
        """The model input for a picture already at the model's geometry (the output of `display`)."""
        picture = display.convert("L") if self.channels == 1 else display
        return F.normalize(F.to_tensor(picture), list(self.mean), list(self.std))

    def denormalize(self, tensor: torch.Tensor) -> torch.Tensor:
        """Model input(s), (C, H, W) or (N, C, H, W), back to values in [0, 1], C = `channels`."""
        shape = (self.channels, 1, 1)
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(shape)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(shape)
        return (tensor * std + mean).clamp(0.0, 1.0)


def _keep_ratio_size(image: Image.Image, target: tuple[int, int], fit_longer: bool) -> list[int]:
    """(H, W) that scales `image` so its shorter (or longer) side fits `target`, rounded as timm does."""
    width, height = image.size
    ratios = (height / target[0], width / target[1])
    ratio = max(ratios) if fit_longer else min(ratios)
    return [round(height / ratio), round(width / ratio)]


def _center_crop_or_pad(image: Image.Image, height: int, width: int, fill: list[int]) -> Image.Image:
    """Centre crop to (height, width), padding with `fill` first where the image is smaller."""
    extra_w, extra_h = max(width - image.width, 0), max(height - image.height, 0)
    if extra_w or extra_h:
        padding = [extra_w // 2, extra_h // 2, (extra_w + 1) // 2, (extra_h + 1) // 2]
        image = F.pad(image, padding, fill=fill)
    return F.center_crop(image, [height, width])


def _each(kind: type, values: Any, name: str, meaning: str) -> tuple[Any, ...]:
    """Every item of ``values`` as ``kind``; anything else is one line naming ``name`` and what it means."""
    try:
        return tuple(kind(value) for value in values)
    except (TypeError, ValueError):
        raise FclensError(f"{name} must be {meaning}, got {described(values)}") from None


# --- batches ---------------------------------------------------------------------------------------


def to_batch(
    images: ImageInput | Sequence[ImageInput], preprocessing: Preprocessing
) -> tuple[torch.Tensor, list[Image.Image]]:
    """Stack images of any accepted kind into one model input, with the pictures the model sees.

    Paths, PIL images and arrays are decoded and preprocessed; a tensor is taken as already
    preprocessed, (C, H, W) or (N, C, H, W) with C = ``preprocessing.channels``: values as the model
    expects them, at its input size or at any other that the model takes; its picture is recovered by
    `denormalize`. Returns the float32 batch (N, C, H, W) — on the CPU, or on the device of the tensors given — and N display images, one
    per row, for overlays. The first input that cannot be used raises ImageError, as do inputs of
    different sizes; skipping bad files is the batch driver's choice.
    """
    items = list(images) if isinstance(images, Sequence) and not isinstance(images, str) else [images]
    rows: list[torch.Tensor] = []
    displays: list[Image.Image | None] = []  # None: a tensor row, pictured below with all the others
    for item in items:
        if isinstance(item, torch.Tensor):
            batch = _check_tensor(item, preprocessing)
            rows.append(batch)
            displays += [None] * len(batch)
        else:
            display = preprocessing.display(_as_image(item))
            rows.append(preprocessing.normalize(display)[None])
            displays.append(display)
    if not displays:
        raise ImageError("no images given; pass at least one path, PIL image, array or tensor")
    sizes = list(dict.fromkeys(tuple(row.shape[1:]) for row in rows))
    if len(sizes) > 1:
        raise ImageError(
            f"inputs of different sizes in one batch, {sizes[0]} and {sizes[1]}; give one size at a time"
        )
    devices = {row.device for row in rows}
    batch = torch.cat(rows if len(devices) == 1 else [row.cpu() for row in rows])
    given = [i for i, display in enumerate(displays) if display is None]
    if given:
        pictures = iter(_tensors_to_images(preprocessing.denormalize(batch[given])))
        displays = [next(pictures) if display is None else display for display in displays]
    return batch, displays


def _as_image(item: object) -> Image.Image:
    if isinstance(item, (str, os.PathLike)):
        return load_image(item)
    if isinstance(item, Image.Image):
        return _decode(item)
    if isinstance(item, np.ndarray):
        return image_from_array(item)
    raise ImageError(
        f"cannot use a {described(item)} as an image; pass a path, PIL image, numpy array or tensor"
    )


def _check_tensor(tensor: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """A preprocessed input as a float32 (N, C, H, W) batch on its own device, or ImageError naming the shape expected.

    Any H × W is taken: whether the model takes it is the model's to say (:func:`fclens.explain`).
    """
    (height, width), c = preprocessing.input_size, preprocessing.channels
    batch = tensor[None] if tensor.ndim == 3 else tensor
    if batch.ndim != 4 or batch.shape[1] != c or min(batch.shape[2:]) < 1:
        raise ImageError(
            f"tensor of shape {tuple(tensor.shape)}: expected a preprocessed ({c}, {height}, {width}) or "
            f"(N, {c}, {height}, {width}) tensor (or another H×W that the model takes); pass a path, PIL "
            "image or array to have it preprocessed"
        )
    if not batch.is_floating_point():
        raise ImageError(
            f"tensor of dtype {tensor.dtype}: expected floats normalised with the model's mean and std; "
            "pass a PIL image or array for raw pixels"
        )
    return batch.detach().to(dtype=torch.float32)  # stays on its device: no round trip through the CPU


def _tensors_to_images(batch: torch.Tensor) -> list[Image.Image]:
    """(N, 3 or 1, H, W) values in [0, 1] as N RGB 8-bit pictures (grey in three equal channels): one
    conversion and one copy for the batch."""
    batch = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch
    pixels = (batch * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return [Image.fromarray(picture) for picture in pixels]


# --- sample photos ---------------------------------------------------------------------------------


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
    count: int = 100,
    seed: int = 0,
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
