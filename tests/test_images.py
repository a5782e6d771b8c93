"""Tests for fclens.images: every kind of bad file fails with its reason, every good one decodes to
the right RGB pixels, and preprocessing equals timm's evaluation transform value for value."""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image, ImageFile
from torchvision.transforms import functional as F

from fclens import images
from fclens.images import ImageError, image_from_array, iter_image_paths, load_image
from fclens.preprocessing import Preprocessing, to_batch
from fclens.samples import SAMPLE_NAMES, sample_image

LITE0 = Preprocessing(input_size=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return load_image(sample_image("chelsea"))


def rgb(image: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, int, int]:
    assert image.mode == "RGB"
    return image.getpixel(xy)


def assert_fails(path: Path, *words: str) -> ImageError:
    with pytest.raises(ImageError) as caught:
        load_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert caught.value.path == path
    for word in words:
        assert word in message
    return caught.value


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width × height: a decompression bomb that costs nothing."""
    Image.new("RGB", (32, 32), "red").save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data follows signature, length, type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


# --- files that must fail, each with its reason ----------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert_fails(tmp_path / "cat.jpg", "no such file")


def test_directory(tmp_path: Path) -> None:
    assert_fails(tmp_path, "is a folder")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "cat.jpg"
    path.write_bytes(b"")
    assert_fails(path, "empty file")


def test_image_error_pickles_with_its_path(tmp_path: Path) -> None:
    error = assert_fails(tmp_path / "cat.jpg", "no such file")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.reason, copy.path) == (str(error), error.reason, error.path)


def test_text_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "cat.jpg"
    path.write_text("<html>404 Not Found</html>\n")
    assert_fails(path, "not an image", "text")


def test_unknown_binary(tmp_path: Path) -> None:
    path = tmp_path / "cat.jpg"
    path.write_bytes(bytes(range(256)) * 4)
    assert_fails(path, "not an image", "convert it to PNG or JPEG")


def test_heic_is_named(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0001.jpg"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(100))
    assert_fails(path, "HEIC", "convert it to JPEG or PNG")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(tmp_path: Path, photo: Image.Image, fmt: str) -> None:
    path = tmp_path / f"cat.{fmt.lower()}"
    photo.save(path, fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_fails(path, f"truncated {fmt}", "ends early", "re-download")


def test_truncated_is_caught_even_when_pil_is_told_to_tolerate_it(
    tmp_path: Path, photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cat.jpg"
    photo.save(path)
    path.write_bytes(path.read_bytes()[:-2000])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert_fails(path, "truncated JPEG")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the user's setting is given back


def test_corrupt_png(tmp_path: Path, photo: Image.Image) -> None:
    path = tmp_path / "cat.png"
    photo.save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside IDAT: the chunk's CRC no longer matches
    path.write_bytes(bytes(data))
    assert_fails(path, "corrupt PNG data", "re-export")


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated(tmp_path: Path, fmt: str) -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue")]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:])
    assert_fails(path, "animated image (2 frames); pass a single frame")


def test_multipage_tiff(tmp_path: Path) -> None:
    pages = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue", "green")]
    path = tmp_path / "scan.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert_fails(path, "multi-page TIFF (3 pages)")


@pytest.mark.parametrize("size", [(10, 10), (15, 200), (200, 15)])
def test_tiny(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / "icon.png"
    Image.new("RGB", size, "red").save(path)
    assert_fails(path, f"only {size[0]}×{size[1]} pixels", "at least 16 px")


@pytest.mark.parametrize("side", [10_000, 20_000])  # PIL warns at 10k × 10k and errs at 20k × 20k
def test_decompression_bomb(tmp_path: Path, side: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object) -> None:
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    assert_fails(png_declaring(tmp_path / "bomb.png", side, side), "too large", "decompression bomb")


def test_pixel_limit_holds_without_pil_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = png_declaring(tmp_path / "bomb.png", 20_000, 20_000)
    assert_fails(path, "too large (20000×20000 pixels)")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 40)).save(path)
    assert_fails(path, "too large (40×40 pixels)", "1,000-pixel limit")


# --- files that must decode, to the right pixels ----------------------------------------------------


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(16, axis=0).repeat(4, axis=1)
    path = tmp_path / "depth.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as opened:
        assert opened.mode == "I;16"
    image = load_image(path)
    assert [rgb(image, (4 * i, 0)) for i in range(4)] == [(0, 0, 0), (1, 1, 1), (128, 128, 128), (255,) * 3]


def test_thirty_two_bit_integer_tiff(tmp_path: Path) -> None:
    path = tmp_path / "scan.tif"
    values = np.full((16, 16), 65535, dtype=np.int32)
    Image.fromarray(values, "I").save(path)
    assert rgb(load_image(path)) == (255, 255, 255)
    Image.fromarray(values * 2, "I").save(path)
    assert_fails(path, "32-bit integer image", "expected 0–65535")


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path)
    r, g, b = rgb(load_image(path), (16, 16))
    assert r > 230 and g < 25 and b < 25


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "logo.png"
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 0, 128))
    image.save(path)
    loaded = load_image(path)
    assert rgb(loaded, (0, 0)) == (255, 255, 255)
    assert rgb(loaded, (1, 0)) == (127, 127, 127)
    assert rgb(loaded, (5, 5)) == (255, 0, 0)


def test_grey_with_alpha(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    Image.new("LA", (32, 32), (10, 0)).save(path)
    assert rgb(load_image(path)) == (255, 255, 255)


def test_palette_with_transparency(tmp_path: Path) -> None:
    path = tmp_path / "icon.png"
    image = Image.new("P", (32, 32), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    image.save(path, transparency=1)
    loaded = load_image(path)
    assert rgb(loaded, (0, 0)) == (255, 255, 255)
    assert rgb(loaded, (5, 5)) == (255, 0, 0)


def test_opaque_palette_gif(tmp_path: Path) -> None:
    path = tmp_path / "still.gif"
    Image.new("RGB", (32, 32), (0, 0, 255)).save(path)
    assert rgb(load_image(path)) == (0, 0, 255)


@pytest.mark.parametrize(("mode", "value", "expected"), [("L", 100, 100), ("1", 1, 255)])
def test_grayscale(tmp_path: Path, mode: str, value: int, expected: int) -> None:
    path = tmp_path / ("scan.jpg" if mode == "L" else "scan.png")
    Image.new(mode, (32, 32), value).save(path)
    r, g, b = rgb(load_image(path), (16, 16))
    assert r == g == b and abs(r - expected) <= 1


def test_exif_orientation(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    image.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.size == (20, 40)
    top, bottom = rgb(loaded, (10, 5)), rgb(loaded, (10, 35))
    assert top[0] > 200 and top[2] < 50  # the left side went up
    assert bottom[2] > 200 and bottom[0] < 50


def test_camera_mpo_gives_its_first_picture(tmp_path: Path) -> None:
    path = tmp_path / "stereo.jpg"  # phones save depth or stereo pairs as MPO under .jpg
    first, second = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    first.save(path, "MPO", save_all=True, append_images=[second])
    r, g, b = rgb(load_image(path), (16, 16))
    assert r > 230 and g < 25 and b < 25


def test_loaded_image_is_detached_from_file(tmp_path: Path, photo: Image.Image) -> None:
    path = tmp_path / "cat.jpg"
    photo.save(path)
    loaded = load_image(path)
    path.unlink()
    assert loaded.mode == "RGB" and loaded.size == (451, 300)
    assert np.asarray(loaded).mean() > 10


# --- arrays -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1), (20, 30, 3)])
def test_array_uint8(shape: tuple[int, ...]) -> None:
    image = image_from_array(np.full(shape, 77, dtype=np.uint8))
    assert image.size == (30, 20) and rgb(image) == (77, 77, 77)


def test_array_rgba_and_float() -> None:
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    assert rgb(image_from_array(rgba)) == (255, 255, 255)
    floats = np.zeros((20, 20, 3))
    floats[..., 0], floats[..., 1] = 1.0, 0.5
    assert rgb(image_from_array(floats)) == (255, 128, 0)


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((3, 20, 20), np.uint8), "channels last"),
        (np.zeros((20, 20, 2), np.uint8), "shape (20, 20, 2)"),
        (np.zeros((20,), np.uint8), "shape (20,)"),
        (np.full((20, 20, 3), 255.0), "divide by 255"),
        (np.full((20, 20), np.nan), "expected values in [0, 1]"),
        (np.zeros((20, 20), np.int64), "dtype int64"),
        (np.zeros((8, 20, 3), np.uint8), "only 20×8 pixels"),
    ],
)
def test_array_errors(array: np.ndarray, words: str) -> None:
    with pytest.raises(ImageError) as caught:
        image_from_array(array)
    assert words in str(caught.value)
    assert caught.value.path is None


# --- paths ------------------------------------------------------------------------------------------


def test_iter_image_paths(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for name in [
        "b.jpg",
        "a.PNG",
        "sub/c.webp",
        "sub/deeper/d.TIFF",
        "notes.txt",
        ".hidden/e.jpg",
        "._f.jpg",
    ]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    odd = tmp_path / "scan.xyz"
    odd.write_bytes(b"x")
    missing = tmp_path / "gone.jpg"
    found = iter_image_paths([odd, folder, missing, str(folder), folder / "sub" / ".." / "b.jpg"])
    assert found == [
        odd,
        folder / "a.PNG",
        folder / "b.jpg",
        folder / "sub/c.webp",
        folder / "sub/deeper/d.TIFF",
        missing,
    ]
    assert iter_image_paths(str(odd)) == [odd]
    assert iter_image_paths([]) == []


# --- preprocessing ----------------------------------------------------------------------------------


def inputs(photo: Image.Image) -> list[Image.Image]:
    """Landscape, portrait, and one smaller than the model input (upscaled)."""
    return [photo, photo.transpose(Image.Transpose.TRANSPOSE), photo.resize((150, 97))]


@pytest.mark.parametrize(
    "name", ["tf_efficientnet_lite0", "resnet18", "vit_tiny_patch16_224", "convnext_tiny"]
)
def test_equals_timm_for_models(name: str, photo: Image.Image) -> None:
    model = timm.create_model(name, pretrained=False)
    cfg = timm.data.resolve_data_config({}, model=model)
    expected = timm.data.create_transform(**cfg)
    preprocessing = Preprocessing.from_timm_config(cfg)
    assert preprocessing == Preprocessing.from_timm_config(model.pretrained_cfg)
    for image in inputs(photo):
        out = preprocessing(image)
        assert out.dtype == torch.float32 and out.shape == (3, 224, 224)
        assert (out - expected(image)).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    "cfg",
    [
        dict(input_size=(3, 192, 256), crop_pct=0.9, crop_mode="center", interpolation="bilinear"),
        dict(input_size=(3, 240, 240), crop_pct=1.0, crop_mode="squash", interpolation="bicubic"),
        dict(input_size=(3, 224, 288), crop_pct=0.95, crop_mode="squash", interpolation="lanczos"),
        dict(input_size=(3, 224, 224), crop_pct=1.0, crop_mode="border", interpolation="bicubic"),
        dict(input_size=(3, 200, 260), crop_pct=0.8, crop_mode="border", interpolation="nearest"),
        dict(input_size=(3, 224, 224), crop_pct=1.15, crop_mode="center", interpolation="bilinear"),
    ],
    ids=lambda cfg: f"{cfg['crop_mode']}-{cfg['input_size'][1]}x{cfg['input_size'][2]}-{cfg['crop_pct']}",
)
def test_equals_timm_for_crop_modes(cfg: dict, photo: Image.Image) -> None:
    cfg = {**cfg, **IMAGENET}
    expected = timm.data.create_transform(**cfg)
    preprocessing = Preprocessing.from_timm_config(cfg)
    for image in inputs(photo):
        out = preprocessing(image)
        assert out.shape == (3, *cfg["input_size"][1:])
        assert (out - expected(image)).abs().max().item() < 1e-5


def test_display_and_denormalize(photo: Image.Image) -> None:
    preprocessing = Preprocessing(input_size=(192, 256), **IMAGENET)
    display = preprocessing.display(photo)
    assert display.mode == "RGB" and display.size == (256, 192)
    tensor = preprocessing(photo)
    assert torch.equal(tensor, preprocessing.normalize(display))
    restored = preprocessing.denormalize(tensor)
    assert (restored - F.to_tensor(display)).abs().max().item() < 1e-6
    batch = preprocessing.denormalize(torch.stack([tensor, tensor]))
    assert batch.shape == (2, 3, 192, 256) and torch.equal(batch[1], restored)


def test_from_timm_config_defaults_and_errors() -> None:
    cfg = {"input_size": (3, 224, 224), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": None}
    assert Preprocessing.from_timm_config(cfg) == LITE0
    with pytest.raises(ValueError, match="input_size"):
        Preprocessing.from_timm_config({"mean": (0.5,) * 3})
    with pytest.raises(ValueError, match="4 input channels"):
        Preprocessing.from_timm_config({**cfg, "input_size": (4, 28, 28)})
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing.from_timm_config({**cfg, "interpolation": "cubic"})
    with pytest.raises(ValueError, match="crop_mode"):
        Preprocessing(input_size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3, crop_mode="random")
    with pytest.raises(ValueError, match="std"):
        Preprocessing(input_size=(224, 224), mean=(0.5,) * 3, std=(0.5, 0.0, 0.5))


# --- batches ----------------------------------------------------------------------------------------


def test_to_batch_mixed_inputs(photo: Image.Image) -> None:
    path = sample_image("coffee")
    array = np.asarray(photo)
    one = LITE0(photo)
    two = torch.stack([LITE0(load_image(path)), one])
    batch, displays = to_batch([path, photo, array, one, two], LITE0)
    assert batch.shape == (6, 3, 224, 224) and batch.dtype == torch.float32
    assert len(displays) == 6 and all(d.size == (224, 224) and d.mode == "RGB" for d in displays)
    assert torch.equal(batch[0], LITE0(load_image(path)))
    for row in (1, 2, 3, 5):
        assert torch.equal(batch[row], one)
    assert torch.equal(batch[4], two[0])
    # a tensor's display is its denormalised pixels: the same picture, to the 8-bit level
    assert np.abs(np.asarray(displays[3], int) - np.asarray(displays[1], int)).max() <= 1


def test_to_batch_single_inputs(photo: Image.Image) -> None:
    for item in (sample_image(), str(sample_image()), photo, np.asarray(photo), LITE0(photo)):
        batch, displays = to_batch(item, LITE0)
        assert batch.shape == (1, 3, 224, 224) and len(displays) == 1
    batch, displays = to_batch(torch.stack([LITE0(photo)] * 3), LITE0)
    assert batch.shape == (3, 3, 224, 224) and len(displays) == 3


def test_to_batch_pil_inputs_are_made_rgb() -> None:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    _, (display,) = to_batch(image, LITE0)
    assert rgb(display) == (255, 255, 255)


@pytest.mark.parametrize("shape", [(224, 224, 3), (2, 1, 224, 224), (1, 1, 3, 224, 224), (224,), (3, 0, 224)])
def test_to_batch_wrong_tensor_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageError, match=r"expected a preprocessed \(3, 224, 224\) or \(N, 3, 224, 224\)"):
        to_batch(torch.zeros(shape), LITE0)


def test_to_batch_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"dtype torch\.uint8"):
        to_batch(torch.zeros((3, 224, 224), dtype=torch.uint8), LITE0)
    with pytest.raises(ImageError, match="no images given"):
        to_batch([], LITE0)
    with pytest.raises(ImageError, match="cannot use a int"):
        to_batch([3], LITE0)
    with pytest.raises(ImageError, match="no such file") as caught:
        to_batch([sample_image(), tmp_path / "gone.jpg"], LITE0)
    assert caught.value.path == tmp_path / "gone.jpg"
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with Image.open(tmp_path / "a.gif") as animated, pytest.raises(ImageError, match="animated"):
        to_batch(animated, LITE0)


# --- sample photos ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size"), [("chelsea", (451, 300)), ("coffee", (600, 400))])
def test_sample_images(name: str, size: tuple[int, int]) -> None:
    path = sample_image(name)
    assert path.suffix == ".jpg" and path.is_file()
    image = load_image(path)
    assert image.size == size
    skimage_data = pytest.importorskip("skimage.data")
    original = getattr(skimage_data, name)().astype(float)
    mse = ((np.asarray(image, float) - original) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 35  # dB: a faithful copy of scikit-image's photo


def test_sample_names_and_attribution() -> None:
    assert set(SAMPLE_NAMES) == {"chelsea", "coffee"}
    with pytest.raises(ValueError, match="available: chelsea, coffee"):
        sample_image("dog")
    attribution = (sample_image().parent / "ATTRIBUTION.md").read_text()
    for words in ("scikit-image", "CC0", "Stefan van der Walt", "Rachel Michetti"):
        assert words in attribution
