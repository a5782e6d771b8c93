"""The per-batch core of a scan: a preprocessed batch in, one table row per image out.

Both engines (the local DataLoader loop and Ray Data's model actors) call :class:`BatchScanner`, so they
write the same rows. Per batch there is one captured forward pass; every node map of every image comes
from it in one batched product (:func:`fclens.maps.node_maps`), the contrast map too
(:func:`fclens.maps.contrast_maps`), and the node contributions are one product with the final layer's
input. Nothing loops over nodes in Python per image: the ragged per-image node lists become Arrow list
columns through offsets. The columns are documented in README.md ("Scan a data set").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch

from fclens.maps import NodeBatch, branch_sign, capture, contrast_maps, node_maps, oriented
from fclens.models import Classifier
from fclens.options import Options
from fclens.scanning.schema import SCHEMA_VERSION, TOP, scan_schema, skipped_rows
from fclens.scanning.sources import Item
from fclens.scores import masked_score
from fclens.tree import SplitTree, class_trees

__all__ = ["SCHEMA_VERSION", "BatchScanner", "scan_schema", "skipped_rows"]


class BatchScanner:
    """Turns preprocessed batches of a classifier's images into scan rows (one forward per batch).

    ``grid`` is the feature grid (h, w) of the last batch, which the writer records in the manifest.
    """

    def __init__(self, classifier: Classifier, options: Options) -> None:
        self.classifier = classifier
        self.options = options
        self.head = classifier.head
        self.schema = scan_schema(options)
        self.grid: tuple[int, int] | None = None
        self._membership: dict[int, torch.Tensor] = {}  # class → (n, D) node membership on the device

    def __call__(self, inputs: torch.Tensor, items: Sequence[Item]) -> pa.RecordBatch:
        """Rows for ``items``, whose preprocessed images are ``inputs`` (N, 3, H, W), in the same order."""
        classifier, head, options = self.classifier, self.head, self.options
        device = classifier.device
        inputs = inputs.to(device, non_blocking=True)
        captured = capture(classifier.module, head, inputs, graph=not head.affine)
        logits = captured.logits.float()
        probabilities = logits.softmax(dim=1)
        top = probabilities.topk(min(TOP, probabilities.shape[1]), dim=1)
        labels = torch.tensor([-1 if item.label is None else item.label for item in items], device=device)
        targets = torch.where(labels >= 0, labels, top.indices[:, 0])
        everything_else = probabilities.scatter(1, targets[:, None], -1.0)
        rivals = everything_else.argmax(dim=1) if probabilities.shape[1] > 1 else targets

        target_list = targets.tolist()
        classes = sorted(set(target_list))
        rows = head.weight[classes].detach().float().cpu().numpy()
        trees = dict(zip(classes, class_trees(rows, classes, options.min_size, options.mode), strict=True))
        image_trees = [trees[k] for k in target_list]
        membership = self._memberships(trees, target_list)  # (N, n, D)
        node_batch = NodeBatch(
            classifier.module, head, inputs, captured, targets, membership, seed=options.seed
        )
        maps = node_maps(node_batch, [options.primary])[options.primary].detach()
        weights = head.weight.to(captured.prelogits)[targets]
        shares = captured.prelogits.detach().float() * weights.float()  # w_kj z_j, (N, D)
        contributions = torch.bmm(membership, shares[:, :, None])[:, :, 0]  # Σ_{j∈node} w_kj z_j
        contrast = contrast_maps(captured, head, targets, rivals).detach()
        prelogits = captured.prelogits.detach()
        del node_batch, captured  # frees a non-affine head's autograd graph before scoring
        scores = self._scores(inputs, maps, targets, image_trees) if options.scores != "none" else None

        self.grid = (int(maps.shape[2]), int(maps.shape[3]))
        counts = np.array([len(tree.nodes) for tree in image_trees])
        valid = (
            torch.arange(maps.shape[1], device=device)[None, :]
            < torch.as_tensor(counts, device=device)[:, None]
        )
        take = np.arange(len(items))
        columns = {
            "index": pa.array([item.index for item in items], pa.int64()),
            "path": pa.array([item.path for item in items], pa.string()),
            "status": pa.array(["ok"] * len(items), pa.string()),
            "reason": pa.nulls(len(items), pa.string()),
            "label": pa.array([item.label for item in items], pa.int32()),
            "pred": _numpy(top.indices[:, 0], np.int32),
            "prob": _numpy(top.values[:, 0], np.float32),
            "top5": _lists(_numpy(top.indices, np.int32)),
            "top5_prob": _lists(_numpy(top.values, np.float32)),
            "target": _numpy(targets, np.int32),
            "rival": _numpy(rivals, np.int32),
            "prob_target": _numpy(probabilities[take, targets], np.float32),
            "prob_rival": _numpy(probabilities[take, rivals], np.float32),
            "logit_target": _numpy(logits[take, targets], np.float32),
            "logit_rival": _numpy(logits[take, rivals], np.float32),
            "node_path": _ragged([node.path for tree in image_trees for node in tree.nodes], counts),
            "node_size": _ragged(
                np.concatenate([_sizes(tree) for tree in image_trees]).astype(np.int32), counts
            ),
            "node_contribution": _ragged(_numpy(contributions[valid], np.float32), counts),
            "node_map": _ragged(_lists(_numpy(maps[valid].flatten(1), np.float16)), counts),
            "contrast_map": _lists(_numpy(contrast.flatten(1), np.float16)),
        }
        if options.features:
            columns["features"] = _lists(_numpy(prelogits, np.float16))
        if scores is not None:
            columns["node_score"] = _ragged(scores[valid.cpu().numpy()], counts)
        return pa.RecordBatch.from_arrays([columns[field.name] for field in self.schema], schema=self.schema)

    def _memberships(self, trees: dict[int, SplitTree], targets: list[int]) -> torch.Tensor:
        """(N, n, D) node membership per image, built once per class and then reused batch after batch."""
        for k, tree in trees.items():
            if k not in self._membership:
                rows = torch.zeros(len(tree.nodes), self.head.num_features, dtype=torch.bool)
                for m, node in enumerate(tree.nodes):
                    rows[m, torch.as_tensor(np.asarray(node.indices), dtype=torch.long)] = True
                self._membership[k] = rows.to(
                    self.classifier.device
                )  # bool: 1 byte per entry, 1000s of classes
        width = max(len(tree.nodes) for tree in trees.values())
        stacked = {
            k: torch.nn.functional.pad(self._membership[k], (0, 0, 0, width - len(tree.nodes))).float()
            for k, tree in trees.items()
        }
        return torch.stack([stacked[k] for k in targets])

    def _scores(
        self, inputs: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, image_trees: list[SplitTree]
    ) -> np.ndarray:
        """The author's masked score of the chosen nodes, (N, n) float32 with NaN where not scored."""
        pairs = [
            (i, m, branch_sign(node.path))
            for i, tree in enumerate(image_trees)
            for m, node in enumerate(tree.nodes)
            if self.options.scores == "all" or node.is_leaf or not node.path
        ]
        where = torch.tensor(pairs, dtype=torch.long, device=inputs.device)
        rows, nodes, signs = where[:, 0], where[:, 1], where[:, 2]
        chosen = oriented(maps[rows, nodes], self.options.primary, signs)
        found = masked_score(
            self.classifier.module, inputs, chosen, rows, targets[rows], self.options.batch_size
        )
        scores = np.full(tuple(maps.shape[:2]), np.nan, dtype=np.float32)
        scores[rows.cpu().numpy(), nodes.cpu().numpy()] = found.numpy()
        return scores


def _numpy(values: torch.Tensor, dtype: type) -> np.ndarray:
    return values.detach().cpu().numpy().astype(dtype, copy=False)


def _sizes(tree: SplitTree) -> np.ndarray:
    return np.array([node.size for node in tree.nodes], dtype=np.int32)


def _lists(matrix: np.ndarray) -> pa.ListArray:
    """An (N, K) array as N lists of K values."""
    rows, width = matrix.shape
    offsets = np.arange(0, rows * width + 1, width, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.ascontiguousarray(matrix).reshape(-1)))


def _ragged(values: pa.Array | np.ndarray | list, counts: np.ndarray) -> pa.ListArray:
    """Flat ``values`` as one list per image, image i taking the next ``counts[i]``."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    flat = values if isinstance(values, pa.Array) else pa.array(values)
    if isinstance(values, np.ndarray) and values.dtype == np.float32:
        flat = pa.array(values, mask=np.isnan(values))  # unscored nodes are null, not NaN
    return pa.ListArray.from_arrays(pa.array(offsets), flat)
