"""Model inputs: timm's evaluation transform as data (:class:`Preprocessing`), and batches of inputs.

Pictures (:mod:`fclens.images`) become model inputs exactly as timm's evaluation transform makes them;
:func:`to_batch` stacks inputs of any accepted kind into one batch, with the pictures the model sees.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from fclens.errors import FclensError, described
from fclens.images import ImageError, ImageInput, decode_image, image_from_array, load_image, to_rgb

__all__ = ["Preprocessing", "to_batch"]

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
_CROP_MODES = ("center", "squash", "border")


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
            return self._geometry(to_rgb(image).convert("L")).convert("RGB")
        return self._geometry(to_rgb(image))

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
        return decode_image(item)
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
