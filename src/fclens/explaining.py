"""Explain images: for each, the target class's split tree with a heatmap and a score per node.

:func:`explain` cuts the images into batches and runs each through :class:`fclens.batch.BatchRunner`,
the per-batch step the data-set scan calls too (one forward pass, every node map of every image at once,
batched scoring forwards); this module formats its tensors as one :class:`Explanation` per image, holding
plain values and CPU tensors only.

Example::

    model = fclens.load_model()
    exp = fclens.explain(model, "cat.jpg")                     # one image: one Explanation
    exp.target.name, exp.discriminative.score, exp.confusing.map   # (h, w) tensor
    fclens.report.save_explanation(exp, "out/")                   # files and pages: fclens.report

Results flow one way: :mod:`fclens.report` reads explanations, this module imports it only when a
notebook asks an Explanation to show itself (``_repr_html_``, ``plot``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import torch
from PIL import Image
from torch import nn

from fclens import deprecation
from fclens.batch import BatchResult, BatchRunner
from fclens.errors import FclensError, described
from fclens.head import find_head
from fclens.images import ImageInput, iter_image_paths
from fclens.maps import MAP_KINDS, branch_sign, oriented
from fclens.models import Classifier, load_model
from fclens.options import EXPLAIN_DEFAULTS, RUNNER_UP, Options, with_keywords
from fclens.preprocessing import to_batch
from fclens.scores import upsample_normalised
from fclens.tree import Node, SplitTree, pair_indices

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "RUNNER_UP",
    "Baselines",
    "Contrast",
    "Explanation",
    "NodeExplanation",
    "Prediction",
    "Verdict",
    "explain",
]

Target = int | str | None


@dataclass
class Prediction:
    """A class and the model's softmax probability for it on the (unmodified) image."""

    index: int
    name: str
    probability: float


@dataclass(frozen=True)
class Verdict:
    """How one node's deletion and insertion curves compare with its image's two baselines.

    ``deletes_faster``: its deletion AUC (most relevant pixels first) is lower, i.e. removing what the
    node's map ranks first takes the class's probability down faster; ``keeps_longer``: its insertion
    AUC is higher, i.e. removing what it ranks last first keeps the class longer. Each against the
    class's whole map (the root; None for the root itself) and against the image's random map. For a
    node of the + branch (the paper's "most discriminative") yes is what a faithful map does; a node
    of the − branch shows what argues *against* the class, and removing it should not delete the class.
    """

    deletes_faster_than_class: bool | None
    deletes_faster_than_random: bool
    keeps_longer_than_class: bool | None
    keeps_longer_than_random: bool


@dataclass
class NodeExplanation:
    """One node of the target class's split tree, seen on one image.

    ``indices`` are the node's neurons (columns of W), ``mean``/``min``/``max`` statistics of their
    weights w_kj and ``r2`` the node's ALD fit. ``maps`` holds kind → (h, w) float32 CPU heatmap at
    feature resolution, the primary kind first. ``score`` is the author's masked score of the primary
    map (PAPER.md §5) where scores were asked for; ``contribution`` the node's share Σ_{j∈node} w_kj z_j of
    the logit; the AUCs are filled for terminal nodes and the root when curves were asked for, and then
    ``verdict`` sets them beside the image's baselines (:class:`Baselines`).
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
    contribution: float | None = None
    deletion_auc: float | None = None
    insertion_auc: float | None = None
    verdict: Verdict | None = None

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
            "contribution": self.contribution,
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "verdict": None if self.verdict is None else vars(self.verdict),
            "maps": {kind: heat.tolist() for kind, heat in self.maps.items()},
        }


@dataclass
class Baselines:
    """What each node's deletion and insertion AUCs are read against on one image (README, "How far to trust
    a map").

    The class's whole map is the root's own (:attr:`Explanation.class_deletion_auc`); ``random_map`` (h, w)
    is a seeded uniform map at the feature grid's resolution (:func:`fclens.scores.random_maps`), its
    curves drawn the same way. ``fill`` is how the curves removed pixels (:data:`fclens.options.FILLS`).
    """

    fill: str
    random_map: torch.Tensor
    random_deletion_auc: float
    random_insertion_auc: float

    def verdict(self, node: NodeExplanation, root: NodeExplanation) -> Verdict | None:
        """``node``'s curves beside the class map's (``root``) and the random map's; None if not drawn."""
        if node.deletion_auc is None or node.insertion_auc is None:
            return None
        own = node is root or root.deletion_auc is None or root.insertion_auc is None
        return Verdict(
            deletes_faster_than_class=None if own else node.deletion_auc < root.deletion_auc,
            deletes_faster_than_random=node.deletion_auc < self.random_deletion_auc,
            keeps_longer_than_class=None if own else node.insertion_auc > root.insertion_auc,
            keeps_longer_than_random=node.insertion_auc > self.random_insertion_auc,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fill": self.fill,
            "random_deletion_auc": self.random_deletion_auc,
            "random_insertion_auc": self.random_insertion_auc,
            "random_map": self.random_map.tolist(),
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
    ``seed`` drove the noise of noisy map kinds and the curves' random map (None when neither was asked for). ``feature_layer`` names
    the layer the maps are drawn on. The class AUCs are those of the root, the map of all neurons;
    ``baselines`` holds the random map's when curves were asked for. ``contrast`` is filled when
    :func:`explain` was asked for one.
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
    baselines: Baselines | None = None

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
                "baselines": None if self.baselines is None else self.baselines.to_dict(),
            }
        )

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def _repr_html_(self) -> str:
        """In a notebook: the input, the top-5 and the tree with each node's map (small, self-contained)."""
        from fclens.report.notebook import explanation_html

        return explanation_html(self)

    def plot(self, node: str | None = None, kind: str | None = None) -> Figure:
        """One node's map over the image (default: the most discriminative node, the primary map kind)."""
        from fclens.report.notebook import explanation_figure

        return explanation_figure(self, node, kind)


@overload
def explain(
    model: Classifier | nn.Module | str | None,
    images: str | os.PathLike[str] | Image.Image | np.ndarray,
    target: Target | Sequence[Target] = None,
    *,
    options: Options | None = None,
    target_layer: str | None = None,
    **option_fields: Any,
) -> Explanation: ...


@overload
def explain(
    model: Classifier | nn.Module | str | None,
    images: torch.Tensor,
    target: Target | Sequence[Target] = None,
    *,
    options: Options | None = None,
    target_layer: str | None = None,
    **option_fields: Any,
) -> Explanation | list[Explanation]: ...


@overload
def explain(
    model: Classifier | nn.Module | str | None,
    images: Sequence[ImageInput],
    target: Target | Sequence[Target] = None,
    *,
    options: Options | None = None,
    target_layer: str | None = None,
    **option_fields: Any,
) -> list[Explanation]: ...


def explain(
    model: Classifier | nn.Module | str | None,
    images: ImageInput | Sequence[ImageInput],
    target: Target | Sequence[Target] = None,
    *,
    options: Options | None = None,
    target_layer: str | None = None,
    **option_fields: Any,
) -> Explanation | list[Explanation]:
    """Explain images by the split tree of their target class.

    The result follows the input, as Captum's do: one image (a file path, a PIL image, an (H, W, 3)
    array) gives one :class:`Explanation`; a sequence (of paths, folders, which give their images,
    PIL images, arrays or tensors) gives a list, one per image, in order. A tensor gives one for one
    image, (3, H, W) ((1, H, W) for a one-channel model), and a list for a batch, (N, 3, H, W).

    ``model``: a loaded :class:`~fclens.models.Classifier`, or anything :func:`~fclens.load_model` takes.
    ``target``: None for the predicted class, a class index or name, or one per image. ``options``
    (:class:`~fclens.options.Options`, default :data:`~fclens.options.EXPLAIN_DEFAULTS`) and any of its
    fields as keywords (``maps``, ``min_size``, ``mode``, ``scores``, ``curves``, ``contrast``, ``seed``,
    ``batch_size``; a keyword wins over ``options``) say what is computed: the map kinds (the first is
    primary and scored), the tree's shape, which nodes get the author's masked score ("all", "terminal",
    "none"), deletion/insertion AUCs for the root and the leaves beside a seeded random map's, removing
    pixels by ``fill`` (:attr:`Explanation.baselines`, :attr:`NodeExplanation.verdict`), and a contrast with the runner-up
    (:data:`~fclens.options.RUNNER_UP`) or a class, in :attr:`Explanation.contrast`. ``seed`` drives noisy
    kinds and the curves' random baseline (None: a fresh seed, recorded in :attr:`Explanation.seed`).
    ``target_layer`` draws the maps at another layer. Deprecated, for one release: fclens 0.1's
    ``scores=True``/``False`` and ``map_kind=``, and one folder as ``images`` (a list; pass ``[folder]``).
    """
    options, notes = with_keywords(options, EXPLAIN_DEFAULTS, option_fields)
    for old, new in notes:
        deprecation.warn(old, new, stacklevel=3)
    single = _single(images)
    classifier = model if isinstance(model, Classifier) else load_model(model)
    if uses_seed(options):
        options = options.but(seed=secrets.randbits(31) if options.seed is None else int(options.seed))
    else:
        options = options.but(seed=None)
    head = classifier.head
    if target_layer is not None:
        head = find_head(classifier.module, classifier.preprocessing.input_size, target_layer)
    runner = BatchRunner(classifier, options, head)
    items = _items(images)
    targets = _targets(classifier, target, len(items))
    explanations: list[Explanation] = []
    for batch in _batches(items, options.batch_size, classifier.preprocessing.input_size):
        inputs, displays = to_batch([item for _, item in items[batch]], classifier.preprocessing)
        result = runner(inputs, targets[batch], rival_ends=True)
        sources = [source for source, _ in items[batch]]
        explanations += _explanations(runner, result, sources, displays)
    return explanations[0] if single else explanations


def uses_seed(options: Options) -> bool:
    """Whether anything ``options`` asks for is random: a noisy map kind, or the curves' random baseline."""
    return options.curves or any(MAP_KINDS[kind].noisy for kind in options.maps if kind in MAP_KINDS)


def _single(images: ImageInput | Sequence[ImageInput]) -> bool:
    """One image asked for: a path, a PIL image, an array, or a tensor of one image (3-D). A path that is a
    folder gives a list for one more release, with a DeprecationWarning (its type hangs on the disk)."""
    if isinstance(images, (str, os.PathLike)):
        if os.path.isdir(images):
            deprecation.warn(
                f"explain(model, {str(images)!r}) of a folder returning a list",
                f"[{str(images)!r}] for a list",
                4,
            )
            return False
        return True
    if isinstance(images, torch.Tensor):
        return images.ndim == 3
    return isinstance(images, (Image.Image, np.ndarray))


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


def _explanations(
    runner: BatchRunner, result: BatchResult, sources: list[str], displays: list[Image.Image]
) -> list[Explanation]:
    """The batch's result as one :class:`Explanation` per image, holding CPU values only."""
    classifier, options = runner.classifier, runner.options
    head = runner.head
    heat = {kind: value.float().cpu() for kind, value in result.maps.items()}
    contributions = result.contributions.cpu()
    probabilities = result.probabilities.cpu()
    top_indices, top_values = result.top_indices.cpu(), result.top_values.cpu()
    nothing = torch.full(result.valid.shape, float("nan"))
    scores = nothing if result.scores is None else result.scores
    deletion = nothing if result.deletion_auc is None else result.deletion_auc
    insertion = nothing if result.insertion_auc is None else result.insertion_auc
    contrasts = _contrasts(runner, result) if result.rivals is not None else [None] * len(sources)
    layer = head.feature_layer_name if head.affine else head.gradient_layer_name
    baselines = _baselines(result, options.fill)
    explanations = []
    for i, (source, tree, k) in enumerate(zip(sources, result.trees, result.targets.tolist(), strict=True)):
        nodes = [
            NodeExplanation(
                **_facts(node),
                maps={kind: heat[kind][i, m] for kind in options.maps},
                score=_number(scores[i, m]),
                contribution=float(contributions[i, m]),
                deletion_auc=_number(deletion[i, m]),
                insertion_auc=_number(insertion[i, m]),
            )
            for m, node in enumerate(tree.nodes)
        ]
        if baselines[i] is not None:
            for node in nodes:
                node.verdict = baselines[i].verdict(node, nodes[0])
        predictions = zip(top_indices[i].tolist(), top_values[i].tolist(), strict=True)
        explanations.append(
            Explanation(
                source=source,
                image=displays[i],
                model_name=classifier.name,
                top5=[_prediction(classifier, index, chance) for index, chance in predictions],
                target=_prediction(classifier, k, float(probabilities[i, k])),
                tree=tree,
                nodes=nodes,
                map_kinds=list(options.maps),
                primary=options.primary,
                seed=options.seed,
                feature_layer=layer,
                class_deletion_auc=nodes[0].deletion_auc,
                class_insertion_auc=nodes[0].insertion_auc,
                contrast=contrasts[i],
                baselines=baselines[i],
            )
        )
    return explanations


def _baselines(result: BatchResult, fill: str) -> list[Baselines | None]:
    """Each image's :class:`Baselines`, or None for every image when no curves were drawn."""
    if result.random_maps is None:
        return [None] * len(result.targets)
    maps = result.random_maps.float().cpu()
    deletion, insertion = result.random_deletion_auc.tolist(), result.random_insertion_auc.tolist()
    return [Baselines(fill, maps[i], deletion[i], insertion[i]) for i in range(len(maps))]


def _number(value: torch.Tensor) -> float | None:
    """A computed value as a float; NaN (not computed) as None."""
    number = float(value)
    return None if math.isnan(number) else number


def _contrasts(runner: BatchRunner, result: BatchResult) -> list[Contrast]:
    """Each image's :class:`Contrast` with its rival: the map, the gap, the pair's neurons, the rival's ends."""
    classifier, kinds = runner.classifier, runner.options.maps
    weight = runner.head.weight.detach().float().cpu()
    prelogits, logits = result.prelogits.cpu(), result.logits.cpu()
    probabilities = result.probabilities.cpu()
    maps = result.contrast.float().cpu()
    ends = {kind: value.float().cpu() for kind, value in (result.rival_ends or {}).items()}
    contrasts = []
    for i, (k, j) in enumerate(zip(result.targets.tolist(), result.rivals.tolist(), strict=True)):
        target_tree, rival_tree = runner.tree(k), runner.tree(j)
        side = pair_indices(target_tree, rival_tree)
        columns = torch.as_tensor(side)
        evidence = ((weight[j, columns] - weight[k, columns]) * prelogits[i, columns]).numpy()
        order = np.argsort(-evidence, kind="stable")
        discriminative, confusing = (
            None
            if end is None
            else NodeExplanation(**_facts(end), maps={kind: ends[kind][i, e] for kind in kinds}, score=None)
            for e, end in enumerate((rival_tree.discriminative, rival_tree.confusing))
        )
        contrasts.append(
            Contrast(
                rival=_prediction(classifier, j, float(probabilities[i, j])),
                map=maps[i],
                gap=float(logits[i, j] - logits[i, k]),
                neurons=side[order],
                evidence=evidence[order],
                rival_tree=rival_tree,
                rival_discriminative=discriminative,
                rival_confusing=confusing,
            )
        )
    return contrasts


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
    elif isinstance(target, (Sequence, np.ndarray)) and all(
        t is None or isinstance(t, (str, numbers.Integral)) for t in target
    ):
        targets = list(target)
        if len(targets) != count:
            raise FclensError(
                f"{len(targets)} targets given for {count} images; give one per image, or one for all"
            )
    else:
        raise FclensError(
            f"target must be None, a class index or name, or a list of them, one per image; got {described(target)}"
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
