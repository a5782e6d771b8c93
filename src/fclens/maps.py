"""Node heatmaps: where in an image the neurons of a split-tree node fire (PAPER.md §4).

A node is a set S of the final layer's input neurons (indices into the D columns of W). Its heatmap is a
map on the feature grid (h, w) of :attr:`Head.feature_layer`. The kinds of map are named, because they
answer different questions:

- ``activation``: Σ_{j∈S} F_j(x, y), the node's feature channels summed — what the author's figures
  show, and what Smooth Grad-CAM++ with the author's objective reduces to without noise. The weights
  enter only through which neurons S holds: the root's map (every channel) is the same for every class.
- ``contribution``: Σ_{j∈S} w_kj (a_j F_j(x, y) + c_j), each pixel's share of the node's part of the
  logit of class k. Its spatial mean, summed over a partition of the neurons, plus the bias, *is* the
  logit. At the root it is class activation mapping (CAM: Zhou et al., "Learning Deep Features for
  Discriminative Localization", CVPR 2016); at a node, CAM restricted to the node's neurons. For an
  average-pooled affine head Grad-CAM (Selvaraju et al., ICCV 2017) at the feature layer weights
  channel j by ∂logit_k/∂(mean F_j)/(h·w) = w_kj/(h·w), so Grad-CAM = ReLU(root contribution)/(h·w):
  the root's map is Grad-CAM without its ReLU. It is signed: a node of the −
  branch has a map ≤ 0 where it pulls the class down, so it is shown and scored negated (:func:`oriented`).
- ``smooth-gradcam++``: the author's maps, torchcam's Smooth Grad-CAM++ as the author drove it, computed
  without a backward pass (see :func:`smooth_gradcampp`).

For an affine head (the final layer sees the spatial mean of the features, possibly through a LayerNorm)
every kind is a closed form of one forward pass: with the node membership as an (N, n, D) coefficient
tensor, the maps of all nodes of all images are one batched matrix product with the (N, D, h·w) features.
For any other head (ViT's CLS token, VGG's MLP, MobileNetV3's conv head) ``activation`` and
``contribution`` become gradient × activation at :attr:`Head.gradient_layer` for the objective
Σ_{j∈S} z_j (resp. Σ_{j∈S} w_kj z_j) on the final layer's input z, all nodes in one batched backward.

A new kind is one function decorated with :func:`register_map`, taking a :class:`NodeBatch` and returning
(N, n, h, w) maps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn

from fclens.errors import FclensError, described
from fclens.head import Head, evaluating

__all__ = [
    "MAP_KINDS",
    "SMOOTH_SAMPLES",
    "SMOOTH_STD",
    "Capture",
    "MapKind",
    "NodeBatch",
    "branch_sign",
    "capture",
    "contrast_maps",
    "node_maps",
    "node_membership",
    "node_rows",
    "oriented",
    "register_map",
    "stack_rows",
]

SMOOTH_SAMPLES = 4
"""torchcam's default number of noisy samples for Smooth Grad-CAM++, which the author used."""

SMOOTH_STD = 0.3
"""torchcam's default noise standard deviation, in units of the normalised input."""

_EPS = 1e-8
"""torchcam's ε in the Grad-CAM++ denominator."""


@dataclass(frozen=True)
class MapKind:
    """A named way of turning nodes into heatmaps; ``meaning`` is the one line a report shows."""

    name: str
    meaning: str
    compute: Callable[[NodeBatch], torch.Tensor]
    noisy: bool = False
    signed: bool = False


MAP_KINDS: dict[str, MapKind] = {}
"""Every map kind by name, in registration order (``activation`` first: the default)."""


def register_map(
    name: str, meaning: str, noisy: bool = False, signed: bool = False
) -> Callable[[Callable[[NodeBatch], torch.Tensor]], Callable[[NodeBatch], torch.Tensor]]:
    """Register a map kind; ``noisy`` kinds draw random numbers and so depend on the seed.

    ``signed`` kinds carry the sign of the class weights: see :func:`oriented`.
    """
    if not (isinstance(name, str) and name and isinstance(meaning, str)):
        raise FclensError(
            f"a map kind's name and meaning are text, got {described(name)}, {described(meaning)}"
        )

    def decorate(compute: Callable[[NodeBatch], torch.Tensor]) -> Callable[[NodeBatch], torch.Tensor]:
        if not callable(compute):
            raise FclensError(f"register_map({name!r}, …) decorates a function, got {described(compute)}")
        if name in MAP_KINDS:
            raise FclensError(f"map kind {name!r} is already registered")
        MAP_KINDS[name] = MapKind(name, meaning, compute, noisy, signed)
        return compute

    return decorate


def branch_sign(path: str) -> int:
    """−1 for the nodes of the negative branch ("-", "--", "-+", …), +1 for the root and the + branch."""
    return -1 if path.startswith("-") else 1


def oriented(maps: torch.Tensor, kind: str, signs: torch.Tensor | int) -> torch.Tensor:
    """Maps as they are shown and scored: hot = where the node's neurons push hardest.

    A signed kind's map of a negative-branch node is ≤ 0 where the node pulls the class down; min-max
    scaling would make its *quietest* region the hottest. Multiplying by the branch sign (one per map,
    broadcast over (h, w)) turns it into the strength of the pull. Unsigned kinds are returned as they are.
    """
    if not MAP_KINDS[kind].signed:
        return maps
    signs = torch.as_tensor(signs, dtype=maps.dtype, device=maps.device)
    return maps * signs.reshape(*signs.shape, 1, 1)


# --- one forward pass, with hooks ------------------------------------------------------------------------


@dataclass
class Capture:
    """What one forward pass records.

    ``logits`` (N, C) and ``prelogits`` z (N, D) are the final layer's output and input; ``features``
    (N, D', h, w) is the feature layer's output on its grid. With ``graph=True``, ``activations`` is the
    gradient layer's raw output, a leaf of the autograd graph that leads to ``prelogits``.
    """

    logits: torch.Tensor
    prelogits: torch.Tensor
    features: torch.Tensor
    activations: torch.Tensor | None = None


def capture(module: nn.Module, head: Head, inputs: torch.Tensor, graph: bool = False) -> Capture:
    """Run ``module`` on preprocessed ``inputs`` (N, 3, H, W) once and record what the maps need.

    Hooks are removed and the train/eval flags restored whatever happens. The network continues on a
    copy of each recorded output, so an in-place operation downstream cannot overwrite what is kept.
    With ``graph``, the gradient layer's output becomes a leaf that requires grad and autograd is
    switched on from there: only the layers after it record a graph, for a backward that stops there.
    """
    kept: dict[str, torch.Tensor] = {}

    def keep_output(
        names: Sequence[str], _module: nn.Module, _args: tuple, output: torch.Tensor
    ) -> torch.Tensor:
        if "activations" in names:
            output = output.detach().requires_grad_(True)
            torch.set_grad_enabled(True)  # until the end of the forward pass (no_grad below restores)
        for name in names:
            kept[name] = output
        return output.clone()

    def keep_final(_module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        kept["prelogits"] = args[0].reshape(args[0].shape[0], -1)
        kept["logits"] = output.reshape(output.shape[0], -1)

    layers: dict[nn.Module, list[str]] = {head.feature_layer: ["features"]}
    if graph:
        layers.setdefault(head.gradient_layer, []).append("activations")
    handles = [layer.register_forward_hook(partial(keep_output, names)) for layer, names in layers.items()]
    handles.append(head.layer.register_forward_hook(keep_final))
    try:
        with evaluating(module), torch.no_grad():
            module(inputs)
    finally:
        for handle in handles:
            handle.remove()
    prelogits = kept["prelogits"] if graph else kept["prelogits"].detach()
    features = head.spatial(kept["features"]).detach()
    return Capture(kept["logits"].detach(), prelogits, features, kept.get("activations"))


# --- nodes of a batch ------------------------------------------------------------------------------------


def node_rows(
    nodes: Sequence[np.ndarray], num_features: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """One image's (or one class's) node membership as bool (n, D): [m, j] is set when neuron j is in node m.

    Boolean, one byte an entry, so a scan can keep the rows of thousands of classes on the device.
    """
    rows = torch.zeros(len(nodes), num_features, dtype=torch.bool)
    for m, indices in enumerate(nodes):
        rows[m, torch.as_tensor(np.asarray(indices), dtype=torch.long)] = True
    return rows.to(device)


def stack_rows(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image :func:`node_rows` as float32 (N, n, D); an image with fewer than n nodes gets zero rows
    (its maps there are zero and are never read)."""
    width = max((len(part) for part in rows), default=0)
    return torch.stack([torch.nn.functional.pad(part, (0, 0, 0, width - len(part))).float() for part in rows])


def node_membership(
    nodes_per_image: Sequence[Sequence[np.ndarray]], num_features: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Node membership as float32 (N, n, D): entry [i, m, j] is 1 when neuron j is in image i's node m."""
    return stack_rows([node_rows(nodes, num_features, device) for nodes in nodes_per_image])


@dataclass
class NodeBatch:
    """Everything a map kind may read for N images and their nodes.

    ``inputs`` (N, 3, H, W) is the preprocessed batch on the model's device, ``targets`` (N,) the class
    whose tree each image is explained with, ``membership`` (N, n, D) from :func:`node_membership`.
    ``seed`` drives the noise of noisy kinds: image i receives the noise torchcam would draw for it
    alone after ``torch.manual_seed(seed)``, so a result does not depend on how images are batched.
    """

    module: nn.Module
    head: Head
    inputs: torch.Tensor
    capture: Capture
    targets: torch.Tensor
    membership: torch.Tensor
    seed: int = 0
    noise_std: float = SMOOTH_STD
    noise_samples: int = SMOOTH_SAMPLES
    _noisy: torch.Tensor | None = field(default=None, init=False, repr=False)

    @property
    def class_weights(self) -> torch.Tensor:
        """Row w_k of W for each image's target, (N, D)."""
        return self.head.weight.to(self.membership)[self.targets]

    def combine(
        self,
        coefficients: torch.Tensor,
        features: torch.Tensor | None = None,
        offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Closed-form maps Σ_j coefficients[i, m, j] · F_ij(x, y) + offset[i, m], as (N, n, h, w).

        One batched matrix product for every node of every image; ``features`` defaults to the
        captured ones.
        """
        return _combine(self.capture.features if features is None else features, coefficients, offset)

    def gradient_map(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Gradient × activation at the gradient layer for objectives Σ_j coefficients[i, m, j] z_ij.

        Returns (N, n, h, w): Σ_channels ∂objective/∂A ⊙ A on the grid. One backward for all nodes via
        ``is_grads_batched``; a loop over nodes where an operation has no batching rule (or the batched
        backward runs out of memory).
        For an avg-pooled head this equals :meth:`combine` divided by h·w.
        """
        return _gradient_map(self.capture, self.head, coefficients)

    def noisy_features(self) -> torch.Tensor:
        """Feature grid (N, D, h, w) of the inputs plus the *last* of torchcam's noisy samples.

        torchcam's SmoothGradCAMpp adds ε ~ N(0, std²) (``torch.distributions.Normal(0, std).sample``
        on the CPU generator, once per sample, shape of the input) and its map multiplies the feature
        map of the last noisy forward; the earlier samples only advance the random stream. Every image
        gets the noise torchcam draws for a batch of that one image.
        """
        if self._noisy is None:
            generator = torch.Generator().manual_seed(self.seed)
            for _ in range(self.noise_samples):
                noise = torch.normal(0.0, self.noise_std, (1, *self.inputs.shape[1:]), generator=generator)
            self._noisy = capture(self.module, self.head, self.inputs + noise.to(self.inputs)).features
        return self._noisy


def _combine(
    features: torch.Tensor, coefficients: torch.Tensor, offset: torch.Tensor | None = None
) -> torch.Tensor:
    """Σ_j coefficients[i, m, j] · features[i, j] + offset[i, m] as (N, n, h, w): one batched product."""
    images, channels, h, w = features.shape
    maps = torch.bmm(coefficients, features.reshape(images, channels, h * w))
    if offset is not None:
        maps = maps + offset[..., None]
    return maps.reshape(images, -1, h, w)


def _gradient_map(capture: Capture, head: Head, coefficients: torch.Tensor) -> torch.Tensor:
    """:meth:`NodeBatch.gradient_map` for any capture made with ``graph=True``."""
    activations = capture.activations
    if activations is None:
        raise FclensError("gradient maps need a capture made with graph=True")
    prelogits = capture.prelogits
    per_node = coefficients.transpose(0, 1).to(prelogits)  # (n, N, D)
    try:
        (grads,) = torch.autograd.grad(
            prelogits, activations, per_node, retain_graph=True, is_grads_batched=True
        )
    except RuntimeError:  # an operation without a batching rule: one backward per node
        grads = torch.stack(
            [torch.autograd.grad(prelogits, activations, node, retain_graph=True)[0] for node in per_node]
        )
    nodes, images = per_node.shape[:2]
    grid = head.spatial(grads.reshape(nodes * images, *grads.shape[2:]))
    values = head.spatial(activations.detach())
    maps = (grid.reshape(nodes, images, *grid.shape[1:]) * values).sum(dim=2)
    return maps.transpose(0, 1)


def _logit_shares(capture: Capture, head: Head, weights: torch.Tensor) -> torch.Tensor:
    """Maps of Σ_j weights[i, m, j] z_ij per location, (N, n, h, w).

    Affine head: Σ_j weights_imj (a_ij F_ij(x, y) + c_ij) with a, c from :meth:`Head.pool_affine`, whose
    spatial mean is the sum exactly. Any other head: gradient × activation of the sum.
    """
    if not head.affine:
        return _gradient_map(capture, head, weights)
    scale, offset = head.pool_affine(capture.features, capture.prelogits)
    return _combine(capture.features, weights * scale[:, None, :], (weights * offset[:, None, :]).sum(dim=2))


def contrast_maps(capture: Capture, head: Head, targets: torch.Tensor, rivals: torch.Tensor) -> torch.Tensor:
    """Where each image argues for its rival j over its target k, as (N, h, w) on the capture's device.

    Affine head: Σ_c (w_jc − w_kc)(a_c F_c(x, y) + c_c), the ``contribution`` map of every neuron for the
    weight difference; its spatial mean + b_j − b_k = logit_j − logit_k exactly, so it is positive where
    the image pulls toward j and needs no pass beyond the capture. Any other head: gradient × activation
    of logit_j − logit_k (the capture must be made with ``graph=True``).
    """
    weight = head.weight.to(capture.prelogits)
    difference = weight[rivals.to(weight.device)] - weight[targets.to(weight.device)]
    return _logit_shares(capture, head, difference[:, None, :])[:, 0]


def node_maps(batch: NodeBatch, kinds: Iterable[str]) -> dict[str, torch.Tensor]:
    """Maps of every node of every image for each kind: kind → (N, n, h, w) on the model's device."""
    return {kind: _kind(kind).compute(batch) for kind in kinds}


def _kind(name: str) -> MapKind:
    if name not in MAP_KINDS:
        raise FclensError(f"unknown map kind {name!r}; choose from {', '.join(MAP_KINDS)}")
    return MAP_KINDS[name]


# --- the kinds -------------------------------------------------------------------------------------------


@register_map("activation", "sum of the node's feature channels: where its neurons fire")
def activation(batch: NodeBatch) -> torch.Tensor:
    """Σ_{j∈S} F_j(x, y); gradient × activation of Σ_{j∈S} z_j for a non-affine head."""
    if batch.head.affine:
        return batch.combine(batch.membership)
    return batch.gradient_map(batch.membership)


@register_map(
    "contribution",
    "the node's share of the class logit at each location (w_kj-weighted channels; − nodes: the pull down)",
    signed=True,
)
def contribution(batch: NodeBatch) -> torch.Tensor:
    """Σ_{j∈S} w_kj (a_j F_j(x, y) + c_j), with a, c from :meth:`Head.pool_affine` (1 and 0 for ``avg``):
    CAM (Zhou et al. 2016) restricted to the node's neurons; the root's is CAM, Grad-CAM before its ReLU.

    mean_xy of the map = Σ_{j∈S} w_kj z_j exactly; a non-affine head gets gradient × activation of it.
    """
    return _logit_shares(batch.capture, batch.head, batch.membership * batch.class_weights[:, None, :])


@register_map(
    "smooth-gradcam++",
    "the author's maps: torchcam's Smooth Grad-CAM++ with the sum of the node's channels as objective",
    noisy=True,
)
def smooth_gradcampp(batch: NodeBatch) -> torch.Tensor:
    """ReLU(Σ_{j∈S} h·w / (2 + Σ_xy F_j + ε) · F̃_j(x, y)), torchcam 0.5.0's map before min-max scaling.

    With the objective Σ_{j∈S} Σ_xy F_j(x, y) the gradient is 1 on the node's channels and 0 elsewhere
    for every noisy sample, so Grad-CAM++'s α is 1 / (2 + Σ_xy F_j) with F the *clean* features, and
    torchcam weights the feature map F̃ of its last noisy sample by Σ_xy α (PAPER.md §4). Only a head
    that pools the feature channels it is given has such an objective.
    """
    if not batch.head.affine:
        raise FclensError(
            f"smooth-gradcam++ reproduces the author's maps, which need a final layer fed by pooled feature "
            f"channels; this head pools by {batch.head.pooling!r}: use activation or contribution"
        )
    features = batch.capture.features
    area = features.shape[2] * features.shape[3]
    weights = area / (2 + features.sum(dim=(2, 3)) + _EPS)
    return torch.relu(batch.combine(batch.membership * weights[:, None, :], features=batch.noisy_features()))
