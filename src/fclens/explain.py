"""Explain images: for each, the target class's split tree with a heatmap and a score per node.

:func:`explain` ties the pipeline together per batch of images: one forward pass captures the features
and the top-5 predictions; the target class's tree (:func:`fclens.tree.split_tree` of w_k, cached per
class) gives the nodes; :mod:`fclens.maps` draws every node of every image at once; :mod:`fclens.scores`
scores them in batched forwards. The result is one :class:`Explanation` per image, holding plain values
and CPU tensors only.

Example::

    model = fclens.load_model()
    (exp,) = fclens.explain(model, "cat.jpg")
    exp.target.name, exp.discriminative.score, exp.confusing.map   # (h, w) tensor
    fclens.report.save_explanation(exp, "out/")                   # files and pages: fclens.report

Results flow one way: :mod:`fclens.report` reads explanations, this module never imports it.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from fclens.errors import FclensError
from fclens.head import Head, find_head
from fclens.images import ImageInput, iter_image_paths, to_batch
from fclens.maps import (
    MAP_KINDS,
    Capture,
    NodeBatch,
    branch_sign,
    capture,
    contrast_maps,
    node_maps,
    node_membership,
    oriented,
)
from fclens.models import Classifier, load_model
from fclens.scores import deletion_insertion, masked_score, upsample_normalised
from fclens.tree import Node, SplitTree, class_trees

__all__ = ["RUNNER_UP", "Contrast", "Explanation", "NodeExplanation", "Prediction", "explain"]

Target = int | str | None

RUNNER_UP = "runner-up"
"""``contrast=RUNNER_UP``: contrast each image's target with its most probable other class."""


@dataclass
class Prediction:
    """A class and the model's softmax probability for it on the (unmodified) image."""

    index: int
    name: str
    probability: float


@dataclass
class NodeExplanation:
    """One node of the target class's split tree, seen on one image.

    ``indices`` are the node's neurons (columns of W), ``mean``/``min``/``max`` statistics of their
    weights w_kj and ``r2`` the node's ALD fit. ``maps`` holds kind → (h, w) float32 CPU heatmap at
    feature resolution, the primary kind first. ``score`` is the author's masked score of the primary
    map (PAPER.md §5); the AUCs are filled for terminal nodes and the root when curves were asked for.
    """

    path: str
    size: int
    indices: np.ndarray
    mean: float
    min: float
    max: float
    r2: float
    maps: dict[str, torch.Tensor]
    score: float | None
    deletion_auc: float | None = None
    insertion_auc: float | None = None

    @property
    def map(self) -> torch.Tensor:
        """The primary kind's heatmap, (h, w)."""
        return next(iter(self.maps.values()))

    @property
    def label(self) -> str:
        return self.path or "root"

    def shown(self, kind: str | None = None) -> torch.Tensor:
        """The (h, w) map as shown and scored: a signed kind is negated on the − branch (:func:`oriented`)."""
        kind = kind or next(iter(self.maps))
        return oriented(self.maps[kind], kind, branch_sign(self.path))

    def upsampled(self, size: tuple[int, int], kind: str | None = None) -> torch.Tensor:
        """The heatmap at ``size`` = (H, W), bicubic and scaled to [0, 1]: what the masked score uses."""
        return upsample_normalised(self.shown(kind), size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "label": self.label,
            "size": self.size,
            "indices": [int(i) for i in self.indices],
            "mean": self.mean,
            "min": self.min,
            "max": self.max,
            "r2": self.r2,
            "score": self.score,
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "maps": {kind: heat.tolist() for kind, heat in self.maps.items()},
        }


@dataclass
class Contrast:
    """Why the image is explained as the target k and not the rival j: where, and by which neurons.

    ``map`` (h, w) is :func:`fclens.maps.contrast_maps`: positive where the image argues for j over k. For
    an affine head its spatial mean + b_j − b_k is ``gap`` = logit_j − logit_k exactly (the gradient
    form for other heads). ``neurons`` are the neurons on the − side of k's tree and the + side of j's:
    the "−" child of k's root and the "+" child of j's (each row split at its own mean, PAPER.md §3).
    Both trees file them against k and for j, so they are fixed by the weights alone and every image of
    the pair is read with the same set. A row's mean is close to zero, so w_jc > w_kc for (nearly) all
    of them: with non-negative features (ReLU networks) one that fires widens the gap toward j, one that
    is silent adds nothing. They are ordered by ``evidence``, their share
    (w_jc − w_kc) z_c of the logit gap on this image, largest first. ``rival_discriminative`` and
    ``rival_confusing`` are j's terminal nodes seen on this image, in the explanation's map kinds
    (not scored; None when j's tree was never split), to set beside the target's own.
    """

    rival: Prediction
    map: torch.Tensor
    gap: float
    neurons: np.ndarray
    evidence: np.ndarray
    rival_tree: SplitTree
    rival_discriminative: NodeExplanation | None
    rival_confusing: NodeExplanation | None

    def shown(self) -> torch.Tensor:
        """The map as shown: the evidence for the rival, zero where the image argues for the target."""
        return self.map.clamp(min=0)

    def to_dict(self) -> dict[str, Any]:
        ends = (self.rival_discriminative, self.rival_confusing)
        return {
            "rival": vars(self.rival),
            "gap": self.gap,
            "map": self.map.tolist(),
            "neurons": [int(c) for c in self.neurons],
            "evidence": [float(e) for e in self.evidence],
            "rival_discriminative": None if ends[0] is None else ends[0].to_dict(),
            "rival_confusing": None if ends[1] is None else ends[1].to_dict(),
        }


@dataclass
class Explanation:
    """Where one image drives the neurons of its target class's split tree.

    ``image`` is the picture the model sees (resized and cropped); ``nodes`` follow the tree in
    pre-order; ``map_kinds`` were computed for every node, ``primary`` (the first) is the one scored.
    ``seed`` drove the noise of noisy map kinds (None when none was asked for). ``feature_layer`` names
    the layer the maps are drawn on. The class AUCs are those of the root, the map of all neurons.
    ``contrast`` is filled when :func:`explain` was asked for one.
    """

    source: str
    image: Image.Image
    model_name: str
    top5: list[Prediction]
    target: Prediction
    tree: SplitTree
    nodes: list[NodeExplanation]
    map_kinds: list[str]
    primary: str
    seed: int | None
    feature_layer: str
    class_deletion_auc: float | None = None
    class_insertion_auc: float | None = None
    contrast: Contrast | None = None

    @property
    def discriminative(self) -> NodeExplanation | None:
        """The end of the positive chain: the neurons most in favour of the class (PAPER.md §3).

        None when the root was never split (fewer than ``min_size`` neurons).
        """
        end = self.tree.discriminative
        return None if end is None else self.node(end.path)

    @property
    def confusing(self) -> NodeExplanation | None:
        """The end of the negative chain: the neurons most against the class (None if never split)."""
        end = self.tree.confusing
        return None if end is None else self.node(end.path)

    def node(self, path: str) -> NodeExplanation:
        """The node at ``path`` ("" for the root, "+", "++", "-", …)."""
        for node in self.nodes:
            if node.path == path:
                return node
        raise FclensError(f"no node {path!r}; this tree has {', '.join(repr(n.path) for n in self.nodes)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (non-finite numbers become None); maps at feature resolution."""
        return _finite(
            {
                "source": self.source,
                "model": self.model_name,
                "feature_layer": self.feature_layer,
                "prediction": vars(self.top5[0]),
                "target": vars(self.target),
                "top5": [vars(p) for p in self.top5],
                "map_kinds": self.map_kinds,
                "primary": self.primary,
                "seed": self.seed,
                "min_size": self.tree.min_size,
                "mode": self.tree.mode,
                "class_deletion_auc": self.class_deletion_auc,
                "class_insertion_auc": self.class_insertion_auc,
                "discriminative": None if self.tree.discriminative is None else self.tree.discriminative.path,
                "confusing": None if self.tree.confusing is None else self.tree.confusing.path,
                "nodes": [node.to_dict() for node in self.nodes],
                "contrast": None if self.contrast is None else self.contrast.to_dict(),
            }
        )

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def explain(
    model: Classifier | nn.Module | str | None,
    images: ImageInput | Sequence[ImageInput],
    target: Target | Sequence[Target] = None,
    min_size: int = 20,
    mode: str = "chains",
    maps: str | Sequence[str] = ("activation",),
    scores: bool = True,
    curves: bool = False,
    seed: int | None = 0,
    target_layer: str | None = None,
    batch_size: int = 16,
    contrast: Target = None,
) -> list[Explanation]:
    """Explain each image by the split tree of its target class: one :class:`Explanation` per image.

    ``model``: a loaded :class:`~fclens.models.Classifier`, or anything :func:`~fclens.load_model` takes.
    ``images``: paths (folders are expanded), PIL images, arrays, or preprocessed tensors (3, H, W) /
    (N, 3, H, W). ``target``: None for the predicted class, a class index or name, or one per image.
    ``min_size`` and ``mode`` shape the tree (:func:`~fclens.tree.split_tree`). ``maps``: the map kinds
    (:data:`fclens.maps.MAP_KINDS`); the first is primary and scored. ``curves`` adds deletion/insertion
    AUCs for the terminal nodes and the whole class. ``seed`` drives noisy kinds (None: a fresh seed,
    recorded in the result). ``target_layer`` draws the maps on another layer (a module name).
    ``batch_size`` images go through the model together, and as many masked images per scoring forward.
    ``contrast``: ``"runner-up"`` (each image's most probable class other than its target), a class index
    or name, or None; fills :attr:`Explanation.contrast`.
    """
    classifier = model if isinstance(model, Classifier) else load_model(model)
    kinds = _map_kinds(maps)
    if batch_size < 1:
        raise FclensError(f"batch_size must be at least 1, got {batch_size}")
    head = classifier.head
    if target_layer is not None:
        head = find_head(classifier.module, classifier.preprocessing.input_size, target_layer)
    items = _items(images)
    targets = _targets(classifier, target, len(items))
    rival = None if contrast in (None, RUNNER_UP) else classifier.class_index(contrast)
    if any(MAP_KINDS[kind].noisy for kind in kinds):
        seed = secrets.randbits(31) if seed is None else int(seed)
    else:
        seed = None
    options = _Options(kinds, min_size, mode, scores, curves, seed, batch_size, contrast is not None, rival)
    explanations: list[Explanation] = []
    for batch in _batches(items, batch_size, classifier.preprocessing.input_size):
        explanations += _explain_batch(classifier, head, items[batch], targets[batch], options)
    return explanations


def _batches(items: list[tuple[str, ImageInput]], batch_size: int, size: tuple[int, int]) -> list[slice]:
    """Runs of consecutive items of one input size, cut into batches of at most ``batch_size``.

    A tensor comes at its own size; every other kind of image is prepared at the model's ``size``.
    """
    sizes = [tuple(item.shape[-2:]) if isinstance(item, torch.Tensor) else size for _, item in items]
    batches, start = [], 0
    for stop in range(1, len(items) + 1):
        if stop == len(items) or stop - start == batch_size or sizes[stop] != sizes[start]:
            batches.append(slice(start, stop))
            start = stop
    return batches


@dataclass(frozen=True)
class _Options:
    kinds: list[str]
    min_size: int
    mode: str
    scores: bool
    curves: bool
    seed: int | None
    batch_size: int
    contrast: bool = False
    rival: int | None = None  # the contrast class asked for; None: each image's runner-up


def _explain_batch(
    classifier: Classifier,
    head: Head,
    items: list[tuple[str, ImageInput]],
    wanted: list[int | None],
    options: _Options,
) -> list[Explanation]:
    inputs, displays = to_batch([item for _, item in items], classifier.preprocessing)
    inputs = inputs.to(classifier.device)
    module = classifier.module
    captured = _capture(classifier, head, inputs)
    probabilities = captured.logits.float().softmax(dim=1).cpu()
    top = probabilities.topk(min(5, probabilities.shape[1]), dim=1)
    targets = [int(top.indices[i, 0]) if k is None else k for i, k in enumerate(wanted)]
    # Work per class, not per image: images of a batch often share their class.
    classes = sorted(set(targets))
    # The rows come to the CPU in one copy: one device synchronisation per batch, not per class.
    rows = head.weight[classes].detach().float().cpu().numpy()
    trees = class_trees(rows, classes, options.min_size, options.mode)
    facts = [[_facts(node) for node in tree.nodes] for tree in trees]
    position = [classes.index(k) for k in targets]
    image_trees = [trees[c] for c in position]
    on_device = torch.tensor(targets, device=classifier.device)
    indices = [[node.indices for node in tree.nodes] for tree in trees]
    membership = node_membership(indices, head.num_features, inputs.device)[torch.tensor(position)]
    batch = NodeBatch(module, head, inputs, captured, on_device, membership, seed=options.seed or 0)
    heat = {kind: value.detach() for kind, value in node_maps(batch, options.kinds).items()}
    contrasts = _contrasts(classifier, batch, probabilities, targets, options) if options.contrast else None
    del batch, captured  # frees the autograd graph of a non-affine head before scoring

    width = heat[options.kinds[0]].shape[1]  # trees of different classes have different node counts
    signs = torch.tensor(
        [
            [branch_sign(node.path) for node in tree.nodes] + [1] * (width - len(tree.nodes))
            for tree in image_trees
        ],
        device=inputs.device,
    )
    primary = oriented(heat[options.kinds[0]], options.kinds[0], signs)
    scores: dict[tuple[int, int], float] = {}
    if options.scores:
        every = _pairs(image_trees, every_node=True)
        rows = every[:, 0]
        found = masked_score(
            module, inputs, primary[rows, every[:, 1]], rows, on_device[rows], options.batch_size
        )
        scores = dict(zip(map(tuple, every.tolist()), found.tolist(), strict=True))
    aucs: dict[tuple[int, int], tuple[float, float]] = {}
    if options.curves:
        ends = _pairs(image_trees, every_node=False)
        rows = ends[:, 0]
        curves = deletion_insertion(
            module, inputs, primary[rows, ends[:, 1]], rows, on_device[rows], batch_size=options.batch_size
        )
        areas = zip(curves.deletion_auc.tolist(), curves.insertion_auc.tolist(), strict=True)
        aucs = dict(zip(map(tuple, ends.tolist()), areas, strict=True))

    heat = {kind: value.float().cpu() for kind, value in heat.items()}
    layer = head.feature_layer_name if head.affine else head.gradient_layer_name
    explanations = []
    for i, ((source, _), c, k) in enumerate(zip(items, position, targets, strict=True)):
        nodes = [
            NodeExplanation(
                **known,
                maps={kind: heat[kind][i, m] for kind in options.kinds},
                score=scores.get((i, m)),
                deletion_auc=aucs.get((i, m), (None, None))[0],
                insertion_auc=aucs.get((i, m), (None, None))[1],
            )
            for m, known in enumerate(facts[c])
        ]
        predictions = zip(top.indices[i].tolist(), top.values[i].tolist(), strict=True)
        explanations.append(
            Explanation(
                source=source,
                image=displays[i],
                model_name=classifier.name,
                top5=[_prediction(classifier, index, chance) for index, chance in predictions],
                target=_prediction(classifier, k, float(probabilities[i, k])),
                tree=trees[c],
                nodes=nodes,
                map_kinds=list(options.kinds),
                primary=options.kinds[0],
                seed=options.seed,
                feature_layer=layer,
                class_deletion_auc=nodes[0].deletion_auc,
                class_insertion_auc=nodes[0].insertion_auc,
                contrast=None if contrasts is None else contrasts[i],
            )
        )
    return explanations


def _contrasts(
    classifier: Classifier,
    batch: NodeBatch,
    probabilities: torch.Tensor,
    targets: list[int],
    options: _Options,
) -> list[Contrast]:
    """Each image's :class:`Contrast` with its rival: from the capture, plus maps of the rival's two ends."""
    head = batch.head
    rivals = [_rival(row, k, options.rival) for row, k in zip(probabilities, targets, strict=True)]
    on_device = torch.tensor(rivals, device=batch.targets.device)
    maps = contrast_maps(batch.capture, head, batch.targets, on_device).detach().float().cpu()
    classes = sorted(set(rivals) | set(targets))
    weight = head.weight.detach().float().cpu()
    trees = dict(
        zip(
            classes,
            class_trees(weight[classes].numpy(), classes, options.min_size, options.mode),
            strict=True,
        )
    )
    ends = [(trees[j].discriminative, trees[j].confusing) for j in rivals]
    present = [[end for end in pair if end is not None] for pair in ends]
    heat: dict[str, torch.Tensor] = {}
    if any(present):
        indices = [[node.indices for node in nodes] for nodes in present]
        membership = node_membership(indices, head.num_features, batch.inputs.device)
        rival_batch = NodeBatch(
            batch.module, head, batch.inputs, batch.capture, on_device, membership, seed=batch.seed
        )
        heat = {
            kind: value.detach().float().cpu()
            for kind, value in node_maps(rival_batch, options.kinds).items()
        }
    prelogits = batch.capture.prelogits.detach().float().cpu()
    logits = batch.capture.logits.detach().float().cpu()
    contrasts = []
    for i, (k, j) in enumerate(zip(targets, rivals, strict=True)):
        side = np.intersect1d(_side(trees[k], "-"), _side(trees[j], "+"))
        columns = torch.as_tensor(side)
        evidence = ((weight[j, columns] - weight[k, columns]) * prelogits[i, columns]).numpy()
        order = np.argsort(-evidence, kind="stable")
        seen = iter(
            NodeExplanation(
                **_facts(node), maps={kind: heat[kind][i, m] for kind in options.kinds}, score=None
            )
            for m, node in enumerate(present[i])
        )
        discriminative, confusing = (None if end is None else next(seen) for end in ends[i])
        contrasts.append(
            Contrast(
                rival=_prediction(classifier, j, float(probabilities[i, j])),
                map=maps[i],
                gap=float(logits[i, j] - logits[i, k]),
                neurons=side[order],
                evidence=evidence[order],
                rival_tree=trees[j],
                rival_discriminative=discriminative,
                rival_confusing=confusing,
            )
        )
    return contrasts


def _rival(probabilities: torch.Tensor, target: int, asked: int | None) -> int:
    """The class asked for, or the most probable class other than ``target``."""
    if asked is None:
        top = probabilities.topk(min(2, probabilities.numel())).indices.tolist()
        return next(c for c in top if c != target)
    if asked == target:
        raise FclensError(
            f"the contrast class {asked} is the explained class itself; give another, or runner-up"
        )
    return asked


def _side(tree: SplitTree, sign: str) -> np.ndarray:
    """The neurons of the root's ``sign`` child; an unsplit tree has only one side, all its neurons."""
    return tree.root.indices if tree.root.is_leaf else tree.node(sign).indices


def _capture(classifier: Classifier, head: Head, inputs: torch.Tensor) -> Capture:
    """The batch's forward pass; an input size that the model cannot take is a one-line FclensError.

    A size other than the model's own is tried, except where the head reads a grid of tokens (ViT,
    DeiT): its layout was found at the model's size, as were the position embeddings of most.
    """
    size = tuple(inputs.shape[2:])
    if size == classifier.preprocessing.input_size:
        return capture(classifier.module, head, inputs, graph=not head.affine)
    if head.layout == "tokens":
        reason = f"its features are a {head.grid[0]}×{head.grid[1]} grid of tokens at that size"
    else:
        try:
            return capture(classifier.module, head, inputs, graph=not head.affine)
        except Exception as error:  # the model's own refusal, of whatever type it raises
            reason = " ".join(str(error).split()) or type(error).__name__
    height, width = classifier.preprocessing.input_size
    raise FclensError(
        f"{classifier.name} cannot be explained on (3, {size[0]}, {size[1]}) inputs, only at its input size "
        f"(3, {height}, {width}): {reason}; resize the tensor, or pass a path, PIL image or array"
    )


def _pairs(trees: list[SplitTree], every_node: bool) -> torch.Tensor:
    """(image, node) positions as an (M, 2) long tensor: every node, or only the root and the leaves."""
    pairs = [
        (i, m)
        for i, tree in enumerate(trees)
        for m, node in enumerate(tree.nodes)
        if every_node or node.is_leaf or not node.path
    ]
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def _facts(node: Node) -> dict[str, Any]:
    """What a :class:`NodeExplanation` copies from its tree node: the same for every image of a class."""
    return {
        "path": node.path,
        "size": int(node.size),
        "indices": np.asarray(node.indices),
        "mean": float(node.mean),
        "min": float(node.min),
        "max": float(node.max),
        "r2": float(node.r2),
    }


def _prediction(classifier: Classifier, index: int, probability: float) -> Prediction:
    return Prediction(index, classifier.class_names[index], probability)


def _map_kinds(maps: str | Sequence[str]) -> list[str]:
    kinds = list(dict.fromkeys([maps] if isinstance(maps, str) else maps))
    if not kinds:
        raise FclensError(f"no map kind asked for; choose from {', '.join(MAP_KINDS)}")
    unknown = [kind for kind in kinds if kind not in MAP_KINDS]
    if unknown:
        raise FclensError(f"unknown map kind {unknown[0]!r}; choose from {', '.join(MAP_KINDS)}")
    return kinds


def _items(images: ImageInput | Sequence[ImageInput]) -> list[tuple[str, ImageInput]]:
    """One (source, image) per image: folders expanded, batched tensors split into rows.

    The source is the file path, or "<tensor i>", "<image i>", "<array i>" with i the image's position.
    """
    given = list(images) if isinstance(images, Sequence) and not isinstance(images, str) else [images]
    items: list[tuple[str, ImageInput]] = []
    for item in given:
        if isinstance(item, (str, os.PathLike)):
            items += [(str(path), path) for path in iter_image_paths(item)]
        elif isinstance(item, torch.Tensor):
            rows = item if item.ndim == 4 else [item]
            items += [(f"<tensor {len(items) + i}>", row) for i, row in enumerate(rows)]
        elif isinstance(item, Image.Image):
            items.append((str(getattr(item, "filename", "")) or f"<image {len(items)}>", item))
        else:
            items.append((f"<array {len(items)}>", item))
    if not items:
        raise FclensError("no images given; pass at least one path, PIL image, array or tensor")
    return items


def _targets(classifier: Classifier, target: Target | Sequence[Target], count: int) -> list[int | None]:
    """One class index (or None: the predicted class) per image."""
    if target is None or isinstance(target, (str, numbers.Integral)):
        targets: list[Target] = [target] * count
    else:
        targets = list(target)
        if len(targets) != count:
            raise FclensError(
                f"{len(targets)} targets given for {count} images; give one per image, or one for all"
            )
    return [
        None if t is None else classifier.class_index(int(t) if isinstance(t, numbers.Integral) else t)
        for t in targets
    ]


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
