"""Final-layer discovery across architectures: the layer that makes the logits, and how it pools."""

import dataclasses

import pytest
import timm
import torch
import torchvision
from torch import nn

from fclens import head as head_module
from fclens.head import Head, HeadError, find_head

# name -> (how pooled, feature layer name)
TIMM = {
    "resnet18": ("avg", "layer4"),
    "efficientnet_b0": ("avg", "bn2"),
    "tf_efficientnet_lite0": ("avg", "bn2"),
    "mobilenetv3_large_100": ("other", "blocks"),  # a 1×1 conv + activation after pooling
    "convnext_tiny": ("avg-norm", "norm_pre"),  # LayerNorm after pooling
    "vit_tiny_patch16_224": ("token", "norm"),
    "deit_tiny_patch16_224": ("token", "norm"),
    "swin_tiny_patch4_window7_224": ("avg", "norm"),  # channels-last
    "dla34": ("avg", "level5"),  # 1×1-conv classifier
    "dpn68": ("avg", "features"),  # 1×1-conv classifier
    "vgg11": ("other", "features"),  # MLP head: the final layer sees the previous FC's neurons
}
TORCHVISION = {
    "resnet18": ("avg", "fc"),
    "vgg11": ("other", "classifier.6"),
    "mobilenet_v3_small": ("other", "classifier.3"),
}


@pytest.mark.parametrize("name", TIMM)
def test_timm_head_is_the_classifier(name: str) -> None:
    model = timm.create_model(name)
    head = find_head(model, (224, 224))
    classifier = model.get_classifier()
    assert head.layer is classifier
    assert head.weight.shape == (1000, getattr(model, "head_hidden_size", model.num_features))
    assert torch.equal(head.weight, classifier.weight.detach().reshape(1000, -1))
    assert (head.pooling, head.feature_layer_name) == TIMM[name]
    assert head.affine == (TIMM[name][0] in ("avg", "avg-norm"))


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_head_is_the_last_linear(name: str) -> None:
    model = torchvision.models.get_model(name, weights=None)
    head = find_head(model, (224, 224))
    pooling, layer_name = TORCHVISION[name]
    assert head.layer_name == layer_name and head.pooling == pooling
    assert head.bias is not None and head.bias.shape == (1000,)


def test_token_model_reads_gradients_before_the_last_block() -> None:
    """After ViT's last block only the CLS token reaches the head, so maps read the block's input."""
    head = find_head(timm.create_model("vit_tiny_patch16_224"), (224, 224))
    assert head.gradient_layer_name == "blocks.11.norm1"
    assert head.grid == (14, 14) and head.num_prefix_tokens == 1


def test_own_module_without_metadata() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, 2, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )
    head = find_head(model, (64, 64))
    assert head.layer is model[6] and head.pooling == "avg" and head.grid == (16, 16)


def test_avg_norm_affine_terms_reproduce_prelogits() -> None:
    """ConvNeXt's LayerNorm after pooling is, for a fixed image, affine: z = a·mean(F) + c exactly."""
    model = timm.create_model("convnext_tiny").eval()
    head = find_head(model, (224, 224))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        features = model.forward_features(x)
        prelogits = model.forward_head(features, pre_logits=True)
    scale, offset = head.pool_affine(features, prelogits)
    assert not torch.allclose(scale, torch.ones_like(scale))
    assert torch.allclose(scale * features.mean((2, 3)) + offset, prelogits, atol=1e-5)
    norm = head.norm
    assert torch.allclose(norm(features.mean((2, 3), keepdim=True)).flatten(1), prelogits, atol=1e-5)


@pytest.mark.parametrize(
    "model, message",
    [
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), "no Linear or 1×1 Conv2d"),
        (nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), "spatial feature map"),
        (
            nn.Sequential(
                nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3), nn.Tanh()
            ),
            "no Linear or 1×1 Conv2d",
        ),
        (nn.Identity(), "no parameters"),
    ],
)
def test_unusable_models_give_a_clear_error(model: nn.Module, message: str) -> None:
    with pytest.raises(HeadError, match=message):
        find_head(model, (32, 32))


def test_hooks_are_removed_and_mode_restored() -> None:
    model = timm.create_model("resnet18").train()
    find_head(model, (64, 64))
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_a_module_called_twice_is_fine() -> None:
    """One ReLU used at two places and an MLP head: recorded calls are told apart by identity."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2, self.act = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.ReLU()
            self.hidden, self.out = nn.Linear(8, 8), nn.Linear(8, 4)  # same width: the LayerNorm search runs

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.act(self.conv2(self.act(self.conv1(x))))
            return self.out(self.act(self.hidden(features.mean((2, 3)))))

    model = Net()
    head = find_head(model, (32, 32))
    assert head.layer is model.out and head.pooling == "other" and head.feature_layer is model.act


@pytest.mark.parametrize(
    "name, side",
    [
        ("resnet18", 64),
        ("mobilenetv3_small_100", 64),
        ("convnext_atto", 64),
        ("dla34", 64),
        ("vit_tiny_patch16_224", 224),
    ],
)
def test_timm_split_and_search_find_the_same_head(
    name: str, side: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """timm's get_classifier/forward_features and the fallback search agree; the prelogits are timm's."""
    model = timm.create_model(name).eval()
    by_timm = find_head(model, (side, side))
    monkeypatch.setattr(head_module, "_timm_classifier", lambda _: None)
    by_search = find_head(model, (side, side))
    for field in dataclasses.fields(Head):
        a, b = getattr(by_timm, field.name), getattr(by_search, field.name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a is b or a == b, field.name

    seen: list[torch.Tensor] = []
    handle = by_timm.layer.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(x)
        prelogits = model.forward_head(model.forward_features(x), pre_logits=True)
    handle.remove()
    assert torch.equal(seen[0].reshape(2, -1), prelogits)
