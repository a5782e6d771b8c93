"""Find a classifier's final linear layer and the feature map that feeds it, for any architecture.

The paper's code took "the last two state_dict keys", which breaks on 1×1-conv classifiers (DLA, DPN)
and on MLP heads (VGG). Here the model runs once, at its own input size, with hooks that record the
order in which modules finish.

- A timm model (one with ``get_classifier``, ``forward_features`` and ``forward_head``) says where its
  head is: the pass runs as ``forward_head(forward_features(x))``, which is timm's definition of its
  ``forward`` (still one pass), the final layer is ``get_classifier()`` and the feature layer is the
  last module whose output ``forward_features`` returns.
- Anything else — torchvision models, a module of one's own, and the timm models where that split says
  nothing usable (a classifier that is not one Linear or 1×1 Conv2d, as in distilled DeiT or LeViT;
  features that are not a spatial map, as in PiT) — is searched, the fallback: the final layer is the
  last Linear (or 1×1 Conv2d) whose output *is* the logits, and the feature layer is the last module
  before it whose output is a spatial map (N,C,h,w), (N,h,w,C) or a token sequence (N,T,C), preferring
  one that the head pools affinely. tests/test_head.py checks both ways, with random weights, on
  eleven timm architectures (ResNet, EfficientNet, EfficientNet-Lite, MobileNetV3, ConvNeXt, ViT, DeiT,
  Swin, DLA, DPN, VGG) and three torchvision ones; other families are expected to work by the same
  rules, not proven to.

Comparing that map with the final layer's input tells how features are pooled — and so whether a
node's heatmap has a closed form:

- ``avg``: the final layer sees the spatial mean of the feature map (ResNet, EfficientNet, Swin, DLA);
- ``avg-norm``: the spatial mean, then a LayerNorm (ConvNeXt, ViT with ``global_pool="avg"``): still
  affine for a given image, with per-image scale and offset;
- ``token``: the final layer sees one token (the CLS token of ViT/DeiT): not affine;
- ``other``: anything else (VGG's MLP, MobileNetV3's conv head after pooling): not affine.

The prelogits are what the final layer receives in that pass, recorded by its hook: for timm models
this is ``forward_head(x, pre_logits=True)`` value for value, so asking timm again would only be a
second head pass for the same tensor. For the same reason the scan and explain paths keep capturing
features, prelogits and logits by hooks in the model's own single forward (:func:`fclens.maps.capture`):
it works for every module, and reaches the gradient layer, which timm has no accessor for.
"""

from __future__ import annotations

import contextlib
import ctypes
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fclens.errors import FclensError, described

Layout = Literal["nchw", "nhwc", "tokens"]
Pooling = Literal["avg", "avg-norm", "token", "other"]


class HeadError(FclensError):
    """The model has no final layer fclens can read (one-line message for the user)."""


_TARGET_LAYER_FLAG = "name a spatial layer with fclens explain --target-layer NAME"
"""The command's words for ``target_layer=``."""


@dataclass
class Head:
    """The final layer of a classifier and the features it sees.

    ``weight`` is C×D (a 1×1-conv classifier's C×D×1×1 weight is reshaped), ``bias`` has C entries or
    is None. ``feature_layer`` produces the feature map that heatmaps are drawn from; for a non-affine
    head, ``gradient_layer`` is where gradient-based maps read activations (it differs from the feature
    layer only where the feature layer's tokens cannot influence the output, e.g. after ViT's last
    block, where only the CLS token reaches the head).
    """

    layer: nn.Module
    layer_name: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    feature_layer: nn.Module
    feature_layer_name: str
    layout: Layout
    num_prefix_tokens: int
    grid: tuple[int, int]
    pooling: Pooling
    norm: nn.Module | None
    gradient_layer: nn.Module
    gradient_layer_name: str

    @property
    def affine(self) -> bool:
        """True when logits are an affine function of the feature map: closed-form maps are exact."""
        return self.pooling in ("avg", "avg-norm")

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @property
    def num_features(self) -> int:
        return self.weight.shape[1]

    def spatial(self, output: torch.Tensor, layout: Layout | None = None) -> torch.Tensor:
        """A feature-layer output as a channels-first grid (N, C, h, w); prefix tokens are dropped."""
        return to_grid(output, layout or self.layout, self.num_prefix_tokens, self.grid)

    def pool_affine(
        self, features: torch.Tensor, prelogits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image scale ``a`` and offset ``c`` (each N×D) with prelogits = a ⊙ mean_hw(features) + c.

        For ``avg`` a = 1, c = 0. For ``avg-norm`` the LayerNorm after pooling normalises by the pooled
        vector's own statistics, so for a fixed image it is affine: a = γ / sqrt(var(m) + ε) and
        c = z − a ⊙ m, which makes the identity exact by construction.
        """
        if not self.affine:
            raise HeadError(f"the head pools features by {self.pooling!r}, which is not affine")
        pooled = features.mean(dim=(2, 3))
        if self.pooling == "avg":
            return torch.ones_like(pooled), torch.zeros_like(pooled)
        assert self.norm is not None
        var = pooled.var(dim=1, unbiased=False, keepdim=True)
        gamma = self.norm.weight if self.norm.weight is not None else torch.ones_like(pooled[0])
        scale = gamma.to(pooled) / torch.sqrt(var + self.norm.eps)
        return scale, prelogits - scale * pooled


def to_grid(
    output: torch.Tensor, layout: Layout, num_prefix_tokens: int, grid: tuple[int, int]
) -> torch.Tensor:
    """Reshape a feature tensor of the given layout to (N, C, h, w)."""
    if layout == "nchw":
        return output
    if layout == "nhwc":
        return output.permute(0, 3, 1, 2)
    tokens = output[:, num_prefix_tokens:]
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode, then give every submodule back its own train/eval flag."""
    flags = [(m, m.training) for m in module.modules()]
    if any(training for _, training in flags):
        module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            if m.training != training:
                m.training = training


@dataclass(eq=False)  # identity, not tensor equality: one module may be called twice
class _Call:
    name: str
    module: nn.Module
    input: torch.Tensor | None
    output: torch.Tensor


@contextmanager
def _recording(model: nn.Module) -> Iterator[list[_Call]]:
    """Record every module call in the order calls finish; hooks are removed whatever happens.

    Every output is kept (the feature layer is searched among them); inputs only where they are read:
    a candidate final layer's and a LayerNorm's. The probe's memory goes back to the system after
    (:func:`_release_freed_memory`).
    """
    calls: list[_Call] = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                wanted = _is_final_layer_type(module) or isinstance(module, nn.LayerNorm)
                first = args[0] if wanted and args and isinstance(args[0], torch.Tensor) else None
                # Clone: a later in-place activation must not rewrite what we recorded.
                calls.append(
                    _Call(
                        name,
                        module,
                        None if first is None else first.detach().clone(),
                        output.detach().clone(),
                    )
                )

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _release_freed_memory() -> None:
    """Hand the probe's freed tensors back to the system (glibc's ``malloc_trim``; a no-op elsewhere).

    glibc keeps freed memory for reuse; DataLoader workers forked later write into it and so each end up
    with a private copy: measured, a scan's process tree peaked at 1.25× the plain pipeline without this.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _is_final_layer_type(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    tol = 1e-4 * float(b.abs().max()) + 1e-6
    return bool((a - b).abs().max() <= tol)


def _layouts(output: torch.Tensor, channels: int) -> list[Layout]:
    """The layouts an output could be read as, given the channel count the head expects."""
    if output.ndim == 4 and output.shape[2] * output.shape[3] > 1 and output.shape[1] == channels:
        return ["nchw"]
    if output.ndim == 4 and output.shape[1] * output.shape[2] > 1 and output.shape[3] == channels:
        return ["nhwc"]
    if output.ndim == 3 and output.shape[1] > 1 and output.shape[2] == channels:
        return ["tokens"]
    return []


def _is_spatial(output: torch.Tensor) -> bool:
    return (output.ndim == 4 and output.shape[2] * output.shape[3] > 1) or (
        output.ndim == 3 and output.shape[1] > 1
    )


def _token_grid(tokens: int, model: nn.Module) -> tuple[int, int]:
    patch_embed = getattr(model, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    if grid is not None and grid[0] * grid[1] <= tokens:
        return int(grid[0]), int(grid[1])
    side = round(tokens**0.5)
    if side * side != tokens:
        problem = f"cannot arrange {tokens} tokens on a square grid"
        raise HeadError(
            f"{problem}; pass target_layer= a spatial layer", cli=f"{problem}; {_TARGET_LAYER_FLAG}"
        )
    return side, side


def _logits_of(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise HeadError("the model's forward does not return a tensor of logits; wrap it so that it does")


def _timm_classifier(model: nn.Module) -> nn.Module | None:
    """timm's ``get_classifier()``, where the model offers timm's split forward and it is one final layer."""
    if not all(
        callable(getattr(model, n, None)) for n in ("get_classifier", "forward_features", "forward_head")
    ):
        return None
    layer = model.get_classifier()
    return layer if isinstance(layer, nn.Module) and _is_final_layer_type(layer) else None


def _makes_logits(call: _Call, logits: torch.Tensor) -> bool:
    return (
        _is_final_layer_type(call.module)
        and call.output.numel() == logits.numel()
        and _close(call.output.reshape(logits.shape), logits)
    )


def input_channels(model: nn.Module) -> int | None:
    """The channels a model's images have: its first Conv2d's ``in_channels`` (None if it has none).

    "First" is the first in ``model.named_modules()``, registration order, which is the stem for every
    architecture in timm and torchvision and for the usual module of one's own.
    """
    return next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def find_head(
    model: nn.Module,
    input_size: tuple[int, int],
    target_layer: str | None = None,
    channels: int | None = None,
) -> Head:
    """Run ``model`` once on a seeded random image of its own input size (H, W) and describe its head.

    timm's ``get_classifier()`` and ``forward_features`` name the layers where the model offers them;
    otherwise they are searched (the module docstring says how). ``target_layer`` (a module name from
    ``model.named_modules()``) overrides the layer that heatmaps are drawn from. ``channels``: the
    image's (1 for a grayscale model); None takes :func:`input_channels`, else 3.
    """
    if not isinstance(model, nn.Module):
        raise HeadError(f"model must be a torch.nn.Module, got {described(model)}")
    if not (
        isinstance(input_size, (tuple, list))
        and len(input_size) == 2
        and all(
            isinstance(side, numbers.Integral) and not isinstance(side, bool) and side > 0
            for side in input_size
        )
    ):
        raise HeadError(f"input_size must be (height, width) in pixels, got {described(input_size)}")
    channels = channels or input_channels(model) or 3
    head = _probe(model, (channels, *input_size), target_layer)
    _release_freed_memory()  # the probe kept a copy of every layer's output, all freed by now
    return head


def _probe(model: nn.Module, shape: tuple[int, int, int], target_layer: str | None) -> Head:
    """:func:`find_head`'s work: one recorded forward, then the search."""
    modules = dict(model.named_modules())
    if target_layer is not None and target_layer not in modules:
        raise HeadError(
            f"no layer named {target_layer!r} in the model; see model.named_modules() for names",
            cli=f"no layer named {target_layer!r} in the model (--target-layer); see the module names "
            "that model.named_modules() gives in Python",
        )
    param = next(model.parameters(), None)
    if param is None:
        raise HeadError("the model has no parameters, so it has no final linear layer")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, *shape, generator=generator).to(param.device, param.dtype)
    classifier = _timm_classifier(model)
    features: object = None  # what timm's forward_features returned, for a timm model
    feature_calls = 0  # how many module calls forward_features made
    try:
        with evaluating(model), torch.no_grad(), _recording(model) as calls:
            if classifier is None:
                output = model(x)
            else:  # timm's forward, split where its features end
                features = model.forward_features(x)
                feature_calls = len(calls)
                output = model.forward_head(features)
            logits = _logits_of(output)
    except HeadError:
        raise
    except Exception as error:  # the user's model failed on an image of its own size
        raise HeadError(f"the model failed on a 1×{'×'.join(map(str, shape))} input: {error}") from error
    if logits.ndim != 2:
        raise HeadError(
            f"the model returns a tensor of shape {tuple(logits.shape)}, not (batch, classes) logits"
        )

    makers = [i for i, call in enumerate(calls) if _makes_logits(call, logits)]
    final_at = next(
        (i for i in reversed(makers) if calls[i].module is classifier), makers[-1] if makers else None
    )
    if final_at is None:
        raise HeadError(
            "no Linear or 1×1 Conv2d layer produces the model's logits; fclens needs a linear final layer"
        )
    final = calls[final_at]
    weight = final.module.weight.detach()
    weight = weight.reshape(weight.shape[0], -1)
    bias = final.module.bias.detach() if final.module.bias is not None else None
    assert final.input is not None
    prelogits = final.input.reshape(1, -1)

    before = calls[:final_at]
    if target_layer is not None:
        call = next((c for c in reversed(before) if c.name == target_layer), None)
        if call is None or not _is_spatial(call.output):
            raise HeadError(
                f"layer {target_layer!r} does not output a spatial feature map before the final layer"
            )
        return _describe(model, final, weight, bias, prelogits, call, before)
    if isinstance(features, torch.Tensor) and _is_spatial(features):
        call = next(
            (
                c
                for c in reversed(calls[:feature_calls])
                if c.output.shape == features.shape and _close(c.output, features)
            ),
            None,
        )
        if call is not None:
            with contextlib.suppress(HeadError):  # not readable as a grid: the search below decides
                return _describe(model, final, weight, bias, prelogits, call, before)
    spatial = [c for c in before if _is_spatial(c.output)]
    if not spatial:
        problem = "no layer before the final layer outputs a spatial feature map"
        raise HeadError(f"{problem}; pass target_layer=", cli=f"{problem}; {_TARGET_LAYER_FLAG}")
    # Prefer the latest layer that the head pools affinely; else the latest readable spatial layer.
    fallback: Head | None = None
    for call in reversed(spatial):
        try:
            head = _describe(model, final, weight, bias, prelogits, call, before)
        except HeadError:  # e.g. attention internals: 3-D but not a token grid
            continue
        if head.affine:
            return head
        fallback = fallback or head
    if fallback is None:
        problem = "no layer before the final layer outputs a readable feature map"
        raise HeadError(f"{problem}; pass target_layer=", cli=f"{problem}; {_TARGET_LAYER_FLAG}")
    return fallback


def _describe(
    model: nn.Module,
    final: _Call,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    prelogits: torch.Tensor,
    call: _Call,
    before: list[_Call],
) -> Head:
    """Classify how the final layer sees ``call``'s output."""
    channels = weight.shape[1]
    prefix = int(
        getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0)
    )
    output = call.output
    layouts = _layouts(output, channels) or (["tokens"] if output.ndim == 3 else ["nchw"])
    layout = layouts[0]
    if layout == "tokens":
        prefix = min(prefix, output.shape[1] - 1)
        grid = _token_grid(output.shape[1] - prefix, model)
    else:
        prefix = 0
        grid = (output.shape[2], output.shape[3]) if layout == "nchw" else (output.shape[1], output.shape[2])
    pooling: Pooling = "other"
    norm = None
    if output.shape[-1 if layout != "nchw" else 1] == channels:
        features = to_grid(output, layout, prefix, grid)
        pooled = features.mean(dim=(2, 3))
        if _close(pooled, prelogits):
            pooling = "avg"
        elif layout == "tokens" and prefix and _close(output[:, 0], prelogits):
            pooling = "token"
        else:
            index = before.index(call)
            norm = next(
                (
                    c.module
                    for c in before[index + 1 :]
                    if isinstance(c.module, nn.LayerNorm)
                    and c.input is not None
                    and c.input.numel() == pooled.numel()
                    and _close(c.input.reshape(pooled.shape), pooled)
                    and _close(c.output.reshape(prelogits.shape), prelogits)
                ),
                None,
            )
            pooling = "avg-norm" if norm is not None else "other"
    gradient_name, gradient_layer = call.name, call.module
    if pooling == "token":
        blocks = getattr(model, "blocks", None)
        if isinstance(blocks, nn.Sequential) and len(blocks) and hasattr(blocks[-1], "norm1"):
            # After the last block only the CLS token reaches the head; read the last block's input.
            gradient_layer = blocks[-1].norm1
            gradient_name = next(n for n, m in model.named_modules() if m is gradient_layer)
    return Head(
        layer=final.module,
        layer_name=final.name,
        weight=weight,
        bias=bias,
        feature_layer=call.module,
        feature_layer_name=call.name,
        layout=layout,
        num_prefix_tokens=prefix,
        grid=grid,
        pooling=pooling,
        norm=norm,
        gradient_layer=gradient_layer,
        gradient_layer_name=gradient_name,
    )
