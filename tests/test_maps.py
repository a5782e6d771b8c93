"""Node heatmaps: exact identities, the author's Smooth Grad-CAM++ reproduced, every architecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fclens.errors import FclensError
from fclens.explaining import explain
from fclens.head import evaluating
from fclens.maps import MAP_KINDS, NodeBatch, capture, node_maps, node_membership
from fclens.models import Classifier, load_model
from fclens.preprocessing import to_batch
from fclens.tree import SplitTree, split_tree
from zoo import SMALL, random_inputs, zoo


def node_batch(
    classifier: Classifier, inputs: torch.Tensor, graph: bool = False, min_size: int = 20, **options: float
) -> tuple[NodeBatch, list[SplitTree]]:
    """The nodes of each image's predicted class, ready for :func:`node_maps`."""
    head = classifier.head
    captured = capture(classifier.module, head, inputs, graph=graph)
    targets = captured.logits.argmax(dim=1)
    trees = [split_tree(head.weight[k].cpu(), min_size) for k in targets.tolist()]
    membership = node_membership(
        [[n.indices for n in t.nodes] for t in trees], head.num_features, inputs.device
    )
    return NodeBatch(classifier.module, head, inputs, captured, targets, membership, **options), trees


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


# --- contribution: each node's exact share of the logit --------------------------------------------------


def assert_contributions_sum_to_logits(
    classifier: Classifier, inputs: torch.Tensor, min_size: int = 20
) -> None:
    """mean_xy(contribution map of "+") + mean_xy(map of "−") + b_k = logit_k, and the same for the root."""
    explanations = explain(classifier, inputs, maps="contribution", scores="none", min_size=min_size)
    with torch.no_grad(), evaluating(classifier.module):
        logits = classifier(inputs).cpu().double()
    bias = classifier.head.bias.cpu().double()
    for row, explanation in zip(logits, explanations, strict=True):
        k = explanation.target.index
        halves = sum(explanation.node(path).map.double().mean() for path in ("+", "-"))
        root = explanation.node("").map.double().mean()
        tolerance = 1e-4 * float(row.abs().max())
        assert abs(float(halves + bias[k] - row[k])) <= tolerance
        assert abs(float(root + bias[k] - row[k])) <= tolerance


@pytest.mark.usefixtures("float32")
def test_contributions_sum_to_the_logit_on_real_photos(classifier: Classifier, photos: torch.Tensor) -> None:
    assert_contributions_sum_to_logits(classifier, photos)


@pytest.mark.parametrize(
    "name",
    ["tf_efficientnet_lite0", "resnet18", "convnext_tiny", "swin_tiny_patch4_window7_224", "dla34",
     "vit_tiny_patch16_224+avg"],
)  # fmt: skip
@pytest.mark.usefixtures("float32")
def test_contributions_sum_to_the_logit_on_every_affine_head(name: str, device: torch.device) -> None:
    """avg (EfficientNet, ResNet), avg-norm (ConvNeXt, ViT with average pooling), NHWC (Swin), 1×1 conv (DLA)."""
    classifier = zoo(name, device)
    assert classifier.head.affine
    assert_contributions_sum_to_logits(classifier, random_inputs(2, device))


def test_gradient_times_activation_is_the_closed_form_over_hw(
    classifier: Classifier, photos: torch.Tensor
) -> None:
    """On an avg-pooled head ∂z_j/∂F_j(x, y) = 1/(h·w): both paths of ``contribution`` agree."""
    batch, _ = node_batch(classifier, photos, graph=True)
    weights = batch.membership * batch.class_weights[:, None, :]
    closed = batch.combine(weights)
    area = closed.shape[2] * closed.shape[3]
    torch.testing.assert_close(
        batch.gradient_map(weights) * area, closed, rtol=1e-4, atol=1e-4 * float(closed.abs().max())
    )


def test_activation_is_the_sum_of_the_node_channels(classifier: Classifier, photos: torch.Tensor) -> None:
    batch, trees = node_batch(classifier, photos)
    maps = node_maps(batch, ["activation"])["activation"]
    features = classifier.module.forward_features(photos).detach()
    for i, tree in enumerate(trees):
        for m, node in enumerate(tree.nodes):
            expected = features[i, torch.as_tensor(node.indices)].sum(dim=0)
            torch.testing.assert_close(maps[i, m], expected, rtol=1e-5, atol=1e-3)


# --- smooth-gradcam++: the author's maps -----------------------------------------------------------------


class Backbone(nn.Module):
    """The author's model for torchcam: the classifier up to its 4-D features (timm's forward_features)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def torchcam_maps(
    classifier: Classifier, inputs: torch.Tensor, tree: SplitTree, paths: list[str], seed: int
) -> list[torch.Tensor]:
    """torchcam 0.5.0's SmoothGradCAMpp driven the author's way, one call per node after manual_seed(seed).

    The author passed the node's channels as ``class_idx`` and the backbone's 4-D output as ``scores``
    (torchcam 0.3.1); on 0.5.0 the same objective — the sum of the node's channels — is a ``targets``
    callable.
    """
    from torchcam.methods import SmoothGradCAMpp

    backbone = Backbone(classifier.module).eval()
    layer = f"model.{classifier.head.feature_layer_name}"
    maps = []
    with SmoothGradCAMpp(backbone, layer) as extractor:
        for path in paths:
            channels = torch.as_tensor(tree.node(path).indices, device=inputs.device)
            torch.manual_seed(seed)
            scores = backbone(inputs)
            (cam,) = extractor(targets=lambda sample, c=channels: sample[c].sum(), scores=scores)
            maps.append(cam[0].detach())
    return maps


@pytest.mark.parametrize("which", ["terminal", pytest.param("all", marks=pytest.mark.slow)])
def test_smooth_gradcampp_reproduces_torchcam_with_the_same_seed(
    classifier: Classifier, photos: torch.Tensor, which: str
) -> None:
    chelsea = photos[:1]
    seed = 7
    batch, (tree,) = node_batch(classifier, chelsea, seed=seed)
    ours = node_maps(batch, ["smooth-gradcam++"])["smooth-gradcam++"][0]
    paths = (
        [n.path for n in tree.nodes] if which == "all" else [tree.discriminative.path, tree.confusing.path]
    )
    for path, theirs in zip(paths, torchcam_maps(classifier, chelsea, tree, paths, seed), strict=True):
        mine = ours[[n.path for n in tree.nodes].index(path)]
        assert pearson(mine, theirs) >= 0.99, path


def test_smooth_gradcampp_depends_on_the_seed(classifier: Classifier, photos: torch.Tensor) -> None:
    """Two seeds of the author's procedure agree only moderately (PAPER.md §4), hence the stored seed."""
    first, _ = node_batch(classifier, photos[:1], seed=0)
    second, _ = node_batch(classifier, photos[:1], seed=1)
    a = node_maps(first, ["smooth-gradcam++"])["smooth-gradcam++"][0]
    b = node_maps(second, ["smooth-gradcam++"])["smooth-gradcam++"][0]
    same = node_maps(node_batch(classifier, photos[:1], seed=0)[0], ["smooth-gradcam++"])["smooth-gradcam++"][
        0
    ]
    torch.testing.assert_close(a, same)
    agreement = [pearson(x, y) for x, y in zip(a, b, strict=True)]
    assert np.mean(agreement) < 0.99


def test_smooth_gradcampp_without_noise_is_its_closed_form(
    classifier: Classifier, photos: torch.Tensor
) -> None:
    """std = 0: ReLU(Σ_{j∈S} h·w / (2 + Σ_xy F_j) · F_j), with no backward pass (PAPER.md §4)."""
    batch, trees = node_batch(classifier, photos, noise_std=0.0)
    maps = node_maps(batch, ["smooth-gradcam++"])["smooth-gradcam++"]
    features = classifier.module.forward_features(photos).detach().double()
    h, w = features.shape[2:]
    weights = h * w / (2 + features.sum(dim=(2, 3)))
    for i, tree in enumerate(trees):
        for m, node in enumerate(tree.nodes):
            j = torch.as_tensor(node.indices)
            expected = torch.relu((weights[i, j, None, None] * features[i, j]).sum(dim=0))
            torch.testing.assert_close(
                maps[i, m].double(), expected, rtol=1e-4, atol=1e-4 * float(expected.max())
            )


def test_smooth_gradcampp_needs_an_affine_head(device: torch.device) -> None:
    classifier = zoo("torchvision:vgg11", device)
    with pytest.raises(FclensError, match="smooth-gradcam"):
        explain(classifier, random_inputs(1, device), maps="smooth-gradcam++", scores="none", min_size=512)


# --- every architecture ----------------------------------------------------------------------------------

ZOO = [
    "resnet18", "efficientnet_b0", "tf_efficientnet_lite0", "mobilenetv3_large_100", "convnext_tiny",
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "dla34", "dpn68",
    pytest.param("vgg11", marks=pytest.mark.slow),  # a 100M-weight conv head: each node's backward takes ~0.4 s
    "torchvision:resnet18", "torchvision:vgg11", "torchvision:mobilenet_v3_small", "own",
]  # fmt: skip


@pytest.mark.parametrize("name", ZOO)
def test_every_architecture_gets_finite_informative_maps(name: str, device: torch.device) -> None:
    classifier = zoo(name, device)
    kinds = ["activation", "contribution"] + (["smooth-gradcam++"] if classifier.head.affine else [])
    # About 8 nodes per class whatever D is: the gradient path's cost grows with the node count.
    min_size = max(4, classifier.head.num_features // 8)
    explanations = explain(classifier, random_inputs(2, device), maps=kinds, scores="none", min_size=min_size)
    for explanation in explanations:
        assert len(explanation.nodes) >= 3
        for node in explanation.nodes:
            for kind, heat in node.maps.items():
                assert heat.device.type == "cpu" and heat.dtype == torch.float32
                assert heat.ndim == 2 and heat.numel() > 1, (node.label, kind)
                assert torch.isfinite(heat).all(), (node.label, kind)
                # The author's ReLU'd map may be all zero where a random model's node fires negatively.
                assert heat.max() > heat.min() or kind == "smooth-gradcam++", (node.label, kind)


# --- hygiene ---------------------------------------------------------------------------------------------


def assert_no_hooks(module: nn.Module) -> None:
    for name, m in module.named_modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, name
        assert not m._backward_hooks and not m._backward_pre_hooks, name


class Trap(nn.Module):
    """Lets ``allowed`` forward passes through, then raises: an error in the middle of the network."""

    allowed: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.allowed is not None:
            if self.allowed == 0:
                raise RuntimeError("boom")
            self.allowed -= 1
        return x


@pytest.mark.parametrize(
    ("head", "kind", "allowed"),
    [
        ("affine", "activation", 0),  # fails in the capture
        ("affine", "activation", 1),  # in the masked-score forward
        ("affine", "smooth-gradcam++", 1),  # in the noisy forward
        ("mlp", "contribution", 0),  # in the capture that keeps a graph
        ("mlp", "contribution", 1),  # in the masked-score forward after a backward
    ],
)
def test_hooks_removed_and_modes_restored_even_after_an_error(head: str, kind: str, allowed: int) -> None:
    trap = Trap()
    mlp = [nn.Linear(32, 32), nn.ReLU()] if head == "mlp" else []
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), trap, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(0.5), *mlp, nn.Linear(32, 5),
    )  # fmt: skip
    classifier = load_model(model, preprocessing=SMALL)
    assert classifier.head.affine == (head == "affine")
    model.train()
    model[1].eval()  # a mixed state, as when a user freezes batch norm: each flag must come back
    flags = [m.training for m in model.modules()]
    trap.allowed = allowed
    with pytest.raises(RuntimeError, match="boom"):
        explain(classifier, random_inputs(1, torch.device("cpu")), maps=kind, min_size=4)
    assert_no_hooks(model)
    assert [m.training for m in model.modules()] == flags


def test_hooks_removed_after_a_gradient_map(device: torch.device) -> None:
    classifier = zoo("torchvision:mobilenet_v3_small", device)
    assert not classifier.head.affine
    explain(classifier, random_inputs(2, device), maps=["activation", "contribution"], min_size=128)
    assert_no_hooks(classifier.module)


def test_map_kinds_are_registered_with_their_meaning() -> None:
    assert list(MAP_KINDS)[:3] == ["activation", "contribution", "smooth-gradcam++"]
    assert all(kind.meaning for kind in MAP_KINDS.values())
    assert [name for name, kind in MAP_KINDS.items() if kind.noisy] == ["smooth-gradcam++"]


def test_capture_is_in_eval_mode_whatever_the_model_was(classifier: Classifier, chelsea: Path) -> None:
    inputs, _ = to_batch([chelsea], classifier.preprocessing)
    inputs = inputs.to(classifier.device)
    evaluated = capture(classifier.module, classifier.head, inputs)
    classifier.module.train()
    try:
        trained = capture(classifier.module, classifier.head, inputs)
        assert classifier.module.training
    finally:
        classifier.module.eval()
    torch.testing.assert_close(trained.features, evaluated.features)
    torch.testing.assert_close(trained.logits, evaluated.logits)


@pytest.mark.parametrize("enabled", [True, False])
def test_capture_builds_only_the_head_graph_and_restores_grad_mode(
    enabled: bool, device: torch.device
) -> None:
    classifier = zoo("torchvision:mobilenet_v3_small", device)
    with torch.set_grad_enabled(enabled):
        captured = capture(classifier.module, classifier.head, random_inputs(1, device), graph=True)
        assert torch.is_grad_enabled() == enabled
    assert captured.activations.is_leaf and captured.activations.requires_grad
    assert captured.prelogits.requires_grad and not captured.features.requires_grad
