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
    exp.save("out/")
"""

from __future__ import annotations

import json
import math
import numbers
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from fclens.errors import FclensError
from fclens.head import Head, find_head
from fclens.images import ImageInput, iter_image_paths, to_batch
from fclens.maps import MAP_KINDS, NodeBatch, branch_sign, capture, node_maps, node_membership, oriented
from fclens.models import Classifier, load_model
from fclens.scores import deletion_insertion, masked_score, upsample_normalised
from fclens.tree import Node, SplitTree, class_trees

__all__ = ["Explanation", "NodeExplanation", "Prediction", "explain"]

Target = int | str | None


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
class Explanation:
    """Where one image drives the neurons of its target class's split tree.

    ``image`` is the picture the model sees (resized and cropped); ``nodes`` follow the tree in
    pre-order; ``map_kinds`` were computed for every node, ``primary`` (the first) is the one scored.
    ``seed`` drove the noise of noisy map kinds (None when none was asked for). ``feature_layer`` names
    the layer the maps are drawn on. The class AUCs are those of the root, the map of all neurons.
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
            }
        )

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Overlays per node and kind, the chain figure and ``explanation.json``; returns the paths written."""
        from fclens.report import save_explanation

        return save_explanation(self, directory)

    def to_html(self) -> str:
        """A self-contained HTML page of this explanation (:func:`fclens.report.explanations_page`)."""
        from fclens.report import explanations_page

        return explanations_page([self])


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
    if any(MAP_KINDS[kind].noisy for kind in kinds):
        seed = secrets.randbits(31) if seed is None else int(seed)
    else:
        seed = None
    options = _Options(kinds, min_size, mode, scores, curves, seed, batch_size)
    explanations: list[Explanation] = []
    for start in range(0, len(items), batch_size):
        stop = start + batch_size
        explanations += _explain_batch(classifier, head, items[start:stop], targets[start:stop], options)
    return explanations


@dataclass(frozen=True)
class _Options:
    kinds: list[str]
    min_size: int
    mode: str
    scores: bool
    curves: bool
    seed: int | None
    batch_size: int


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
    captured = capture(module, head, inputs, graph=not head.affine)
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
            )
        )
    return explanations


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
