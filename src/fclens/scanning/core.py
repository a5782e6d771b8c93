"""A scan's rows: the per-batch step's result (:class:`fclens.batch.BatchResult`) formatted as Arrow rows.

Both engines (the local DataLoader loop and Ray Data's model actors) call :class:`BatchScanner`, so they
write the same rows; :func:`fclens.explain` formats the same result as Explanation objects. Nothing loops
over nodes in Python per image: the ragged per-image node lists become Arrow list columns through
offsets. The columns are documented in README.md ("Scan a data set").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch

from fclens.batch import BatchRunner
from fclens.models import Classifier
from fclens.options import Options
from fclens.scanning.schema import CLASS_NAMES, SCHEMA_VERSION, class_name_column, scan_schema, skipped_rows
from fclens.scanning.sources import Item
from fclens.tree import SplitTree

__all__ = ["SCHEMA_VERSION", "BatchScanner", "scan_schema", "skipped_rows"]


class BatchScanner:
    """Turns preprocessed batches of a classifier's images into scan rows (one forward per batch)."""

    def __init__(self, classifier: Classifier, options: Options) -> None:
        self.classifier = classifier
        self.options = options
        self.schema = scan_schema(options)
        self.class_names = pa.array(classifier.class_names, pa.string())
        self._runner = BatchRunner(classifier, options)

    def __call__(self, inputs: torch.Tensor, items: Sequence[Item]) -> pa.RecordBatch:
        """Rows for ``items``, whose preprocessed images are ``inputs`` (N, 3, H, W), in the same order.

        An image's target is its label where it has one, else its predicted class.
        """
        result = self._runner(inputs, [item.label for item in items])
        trees = result.trees
        counts = np.array([len(tree.nodes) for tree in trees])
        valid = result.valid
        take = torch.arange(len(items), device=valid.device)
        targets, rivals = result.targets, result.rivals
        probabilities, logits = result.probabilities, result.logits
        columns = {
            "index": pa.array([item.index for item in items], pa.int64()),
            "path": pa.array([item.path for item in items], pa.string()),
            "status": pa.array(["ok"] * len(items), pa.string()),
            "reason": pa.nulls(len(items), pa.string()),
            "label": pa.array([item.label for item in items], pa.int32()),
            "pred": _numpy(result.top_indices[:, 0], np.int32),
            "prob": _numpy(result.top_values[:, 0], np.float32),
            "top5": _lists(_numpy(result.top_indices, np.int32)),
            "top5_prob": _lists(_numpy(result.top_values, np.float32)),
            "target": _numpy(targets, np.int32),
            "rival": _numpy(rivals, np.int32),
            "prob_target": _numpy(probabilities[take, targets], np.float32),
            "prob_rival": _numpy(probabilities[take, rivals], np.float32),
            "logit_target": _numpy(logits[take, targets], np.float32),
            "logit_rival": _numpy(logits[take, rivals], np.float32),
            "node_path": _ragged([node.path for tree in trees for node in tree.nodes], counts),
            "node_size": _ragged(np.concatenate([_sizes(tree) for tree in trees]), counts),
            "node_contribution": _ragged(_numpy(result.contributions[valid], np.float32), counts),
            "node_map": _ragged(
                _lists(_numpy(result.maps[self.options.primary][valid].flatten(1), np.float16)), counts
            ),
            "contrast_map": _lists(_numpy(result.contrast.flatten(1), np.float16)),
        }
        for name, index in CLASS_NAMES.items():
            columns[name] = class_name_column(columns[index], self.class_names)
        if self.options.features:
            columns["features"] = _lists(_numpy(result.prelogits, np.float16))
        if result.scores is not None:
            columns["node_score"] = _ragged(result.scores.numpy()[valid.cpu().numpy()], counts)
        if result.random_maps is not None:
            for curve in ("deletion", "insertion"):
                per_node = getattr(result, f"{curve}_auc").numpy()[valid.cpu().numpy()]
                columns[f"node_{curve}_auc"] = _ragged(per_node, counts)
                columns[f"random_{curve}_auc"] = _numpy(getattr(result, f"random_{curve}_auc"), np.float32)
        return pa.RecordBatch.from_arrays([columns[field.name] for field in self.schema], schema=self.schema)


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
