"""The one per-batch step: preprocessed images in, every tensor an explanation or a scan row needs out.

:func:`fclens.explain` and both scan engines call a :class:`BatchRunner`; an :class:`~fclens.Explanation`
and an Arrow row are two formatters of its :class:`BatchResult`, so they cannot drift apart. Per batch:
one captured forward pass → the top classes → each image's target (given, else predicted) and, when a
contrast is asked for, its rival → the target's split tree and node membership (both cached per class,
reused batch after batch) → every node map of every image in one batched product per kind → each node's
share of the logit → the contrast map → the author's masked score of the chosen nodes, and their deletion
and insertion curves beside each image's baselines (a seeded random map; the root is the class's map).

One rule each: the rival is the class asked for, or the most probable class other than the target; the
nodes scored are every node ("all") or the root and the leaves ("terminal"); a node's membership is a
boolean row over the final layer's D inputs, built once per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fclens.errors import FclensError, described
from fclens.head import Head
from fclens.maps import (
    MAP_KINDS,
    Capture,
    NodeBatch,
    branch_sign,
    capture,
    contrast_maps,
    node_maps,
    node_rows,
    oriented,
    stack_rows,
)
from fclens.models import Classifier
from fclens.options import RUNNER_UP, TOP, Options
from fclens.scores import ROAD_NOISE, deletion_insertion, masked_score, random_maps
from fclens.tree import SplitTree, class_trees

__all__ = ["BatchResult", "BatchRunner"]


@dataclass
class BatchResult:
    """What one batch of N images gave, as tensors on the model's device (n: the largest tree's node count).

    ``trees[i]`` is image i's target tree; node m of it is column m of ``maps[kind]`` (N, n, h, w, raw:
    not oriented), ``contributions`` (N, n: Σ_{j∈node} w_kj z_j), ``scores`` and the AUCs (N, n float32
    on the CPU, NaN where not computed; None when not asked for). ``valid`` (N, n) says which columns
    are nodes. ``rivals``/``contrast`` (N, h, w) are None without a contrast; ``rival_ends`` holds, per
    kind, the maps of the rival's (discriminative, confusing) ends (N, 2, h, w; zero where the rival's
    tree was never split), when asked for. With curves, ``random_maps`` (N, h, w) are the images' random
    baselines and ``random_deletion_auc``/``random_insertion_auc`` (N,) their AUCs, float32 on the CPU.
    """

    logits: torch.Tensor
    probabilities: torch.Tensor
    top_values: torch.Tensor
    top_indices: torch.Tensor
    targets: torch.Tensor
    trees: list[SplitTree]
    maps: dict[str, torch.Tensor]
    contributions: torch.Tensor
    prelogits: torch.Tensor
    valid: torch.Tensor
    rivals: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    rival_ends: dict[str, torch.Tensor] | None = None
    scores: torch.Tensor | None = None
    deletion_auc: torch.Tensor | None = None
    insertion_auc: torch.Tensor | None = None
    random_maps: torch.Tensor | None = None
    random_deletion_auc: torch.Tensor | None = None
    random_insertion_auc: torch.Tensor | None = None


class BatchRunner:
    """Runs :class:`Options` on batches of one classifier's preprocessed images.

    ``head``: the classifier's own, or one found at another layer (:func:`fclens.head.find_head`). Trees
    and node memberships are cached per class, so a scan of many batches splits each class once.
    """

    def __init__(self, classifier: Classifier, options: Options, head: Head | None = None) -> None:
        for name, value, kind in (("classifier", classifier, Classifier), ("options", options, Options)):
            if not isinstance(value, kind):
                raise FclensError(f"{name} must be an fclens.{kind.__name__}, got {described(value)}")
        if head is not None and not isinstance(head, Head):
            raise FclensError(
                f"head must be None or an fclens.head.Head (fclens.head.find_head), got {described(head)}"
            )
        unknown = [kind for kind in options.maps if kind not in MAP_KINDS]
        if unknown:
            raise FclensError(f"unknown map kind {unknown[0]!r}; choose from {', '.join(MAP_KINDS)}")
        self.classifier = classifier
        self.options = options
        self.head = head or classifier.head
        fixed = options.contrast
        self.rival = None if fixed in (None, RUNNER_UP) else classifier.class_index(fixed)
        self._trees: dict[int, SplitTree] = {}
        self._membership: dict[int, torch.Tensor] = {}  # class → (nodes, D) bool on the model's device

    def tree(self, k: int) -> SplitTree:
        """Class ``k``'s split tree (cached)."""
        return self.trees([k])[k]

    def trees(self, classes: Sequence[int]) -> dict[int, SplitTree]:
        """The split trees of ``classes``, computed once per class (one copy of their rows to the CPU)."""
        missing = sorted(set(classes) - set(self._trees))
        if missing:
            rows = self.head.weight[missing].detach().float().cpu().numpy()
            found = class_trees(rows, missing, self.options.min_size, self.options.mode)
            self._trees.update(zip(missing, found, strict=True))
        return {k: self._trees[k] for k in classes}

    def __call__(
        self, inputs: torch.Tensor, targets: Sequence[int | None], *, rival_ends: bool = False
    ) -> BatchResult:
        """The result for ``inputs`` (N, channels, H, W); ``targets[i]`` is image i's class, None for the predicted."""
        options, module = self.options, self.classifier.module
        inputs = inputs.to(self.classifier.device, non_blocking=True)
        result = self._forward(inputs, targets, rival_ends)
        primary = oriented(result.maps[options.primary], options.primary, self._signs(result))

        shape = result.valid.shape
        if options.scores != "none":
            rows, nodes = self._chosen(result.trees, every_node=options.scores == "all")
            found = masked_score(
                module, inputs, primary[rows, nodes], rows, result.targets[rows], options.batch_size
            )
            result.scores = self._spread(found, (rows, nodes), shape)
        if options.curves:
            self._curves(inputs, primary, result)
        return result

    def _curves(self, inputs: torch.Tensor, primary: torch.Tensor, result: BatchResult) -> None:
        """Deletion/insertion AUCs of the root and the leaves and of each image's random map, in one batched
        run of the modified images (the random maps' curves are the only forwards the baselines add)."""
        options, count = self.options, len(inputs)
        rows, nodes = self._chosen(result.trees, every_node=False)
        randoms = random_maps(inputs, tuple(primary.shape[-2:]), options.seed or 0)
        everyone = torch.arange(count)
        curves = deletion_insertion(
            self.classifier.module,
            inputs,
            torch.cat([primary[rows, nodes], randoms]),
            torch.cat([rows, everyone]),
            torch.cat([result.targets[rows], result.targets]),
            batch_size=options.batch_size,
            fill=options.fill,
            seed=options.seed or 0,
            noise=ROAD_NOISE / torch.tensor(self.classifier.preprocessing.std, dtype=torch.float32),
        )
        deletion, insertion = curves.deletion_auc, curves.insertion_auc
        result.deletion_auc = self._spread(deletion[:-count], (rows, nodes), result.valid.shape)
        result.insertion_auc = self._spread(insertion[:-count], (rows, nodes), result.valid.shape)
        result.random_maps = randoms
        result.random_deletion_auc, result.random_insertion_auc = deletion[-count:], insertion[-count:]

    def _forward(self, inputs: torch.Tensor, wanted: Sequence[int | None], rival_ends: bool) -> BatchResult:
        """Everything that reads the capture; returns detached tensors, so a non-affine head's autograd
        graph is freed before the scoring forwards."""
        head, options = self.head, self.options
        captured = self._capture(inputs)
        logits = captured.logits.float()
        probabilities = logits.softmax(dim=1)
        top = probabilities.topk(min(TOP, probabilities.shape[1]), dim=1)
        given = torch.tensor([-1 if k is None else k for k in wanted], device=inputs.device)
        targets = torch.where(given >= 0, given, top.indices[:, 0])
        target_list = targets.tolist()
        trees = self.trees(target_list)
        image_trees = [trees[k] for k in target_list]
        membership = self._memberships(target_list)
        batch = NodeBatch(
            self.classifier.module, head, inputs, captured, targets, membership, seed=options.seed or 0
        )
        maps = {kind: value.detach() for kind, value in node_maps(batch, options.maps).items()}
        prelogits = captured.prelogits.detach().float()
        shares = prelogits * head.weight.to(prelogits)[targets]  # w_kj z_j, (N, D)
        contributions = torch.bmm(membership, shares[:, :, None])[:, :, 0]
        counts = torch.tensor([len(tree.nodes) for tree in image_trees], device=inputs.device)
        valid = torch.arange(membership.shape[1], device=inputs.device)[None, :] < counts[:, None]
        result = BatchResult(
            logits=logits,
            probabilities=probabilities,
            top_values=top.values,
            top_indices=top.indices,
            targets=targets,
            trees=image_trees,
            maps=maps,
            contributions=contributions,
            prelogits=prelogits,
            valid=valid,
        )
        if options.contrast is not None:
            result.rivals = self._rivals(probabilities, targets)
            result.contrast = contrast_maps(captured, head, targets, result.rivals).detach()
            if rival_ends:
                result.rival_ends = self._rival_ends(batch, result.rivals)
        return result

    def _capture(self, inputs: torch.Tensor) -> Capture:
        """The batch's forward pass; an input size that the model cannot take is a one-line FclensError.

        A size other than the model's own is tried, except where the head reads a grid of tokens (ViT,
        DeiT): its layout was found at the model's size, as were the position embeddings of most.
        """
        classifier, head = self.classifier, self.head
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
        channels = classifier.preprocessing.channels
        raise FclensError(
            f"{classifier.name} cannot be explained on ({channels}, {size[0]}, {size[1]}) inputs, only at its "
            f"input size ({channels}, {height}, {width}): {reason}; resize the tensor, or pass a path, PIL image "
            "or array"
        )

    def _rivals(self, probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The class asked for, or each image's most probable class other than its target."""
        if self.rival is None:
            if probabilities.shape[1] == 1:
                return targets
            return probabilities.scatter(1, targets[:, None], -1.0).argmax(dim=1)
        if bool((targets == self.rival).any()):
            raise FclensError(
                f"the contrast class {self.rival} is the explained class itself; give another, or {RUNNER_UP}"
            )
        return torch.full_like(targets, self.rival)

    def _rival_ends(self, batch: NodeBatch, rivals: torch.Tensor) -> dict[str, torch.Tensor]:
        """Maps of each rival's discriminative and confusing nodes, (N, 2, h, w) per kind."""
        rows = []
        for j in rivals.tolist():
            tree, membership = self.tree(j), self._class_membership(j)
            ends = (tree.discriminative, tree.confusing)
            nothing = torch.zeros_like(membership[0])
            rows.append(
                torch.stack([nothing if end is None else membership[tree.nodes.index(end)] for end in ends])
            )
        rival_batch = NodeBatch(
            batch.module, batch.head, batch.inputs, batch.capture, rivals, stack_rows(rows), seed=batch.seed
        )
        return {kind: value.detach() for kind, value in node_maps(rival_batch, self.options.maps).items()}

    def _class_membership(self, k: int) -> torch.Tensor:
        """Class ``k``'s (nodes, D) boolean node membership on the model's device, built once."""
        if k not in self._membership:
            nodes = [node.indices for node in self.tree(k).nodes]
            self._membership[k] = node_rows(nodes, self.head.num_features, self.classifier.device)
        return self._membership[k]

    def _memberships(self, targets: list[int]) -> torch.Tensor:
        """(N, n, D) float membership of each image's target nodes, zero rows past a smaller tree's end."""
        return stack_rows([self._class_membership(k) for k in targets])

    def _signs(self, result: BatchResult) -> torch.Tensor:
        """(N, n) branch signs of each image's nodes (+1 past a tree's end)."""
        width = result.valid.shape[1]
        signs = [
            [branch_sign(node.path) for node in tree.nodes] + [1] * (width - len(tree.nodes))
            for tree in result.trees
        ]
        return torch.tensor(signs, device=result.valid.device)

    @staticmethod
    def _chosen(trees: list[SplitTree], every_node: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, nodes) of the nodes to score: every node, or the root and the leaves."""
        pairs = [
            (i, m)
            for i, tree in enumerate(trees)
            for m, node in enumerate(tree.nodes)
            if every_node or node.is_leaf or not node.path
        ]
        where = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
        return where[:, 0], where[:, 1]

    @staticmethod
    def _spread(
        values: torch.Tensor, where: tuple[torch.Tensor, torch.Tensor], shape: torch.Size
    ) -> torch.Tensor:
        """``values`` of the chosen nodes as (N, n) float32 on the CPU, NaN elsewhere."""
        grid = torch.full(tuple(shape), float("nan"))
        grid[where[0], where[1]] = values.detach().float().cpu()
        return grid
