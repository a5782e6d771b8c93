"""A scan with stored features, written directly with pyarrow, whose best final layer is known in advance.

Each class k has a mean μ_k; an image of class k has features z = μ_k + ε, ε ~ N(0, σ² I). Under a
class prior π the Bayes classifier is linear: logit_k = μ_k·z / σ² − ‖μ_k‖² / (2σ²) + log π_k, so the
layer trained on data drawn with prior π is known (:func:`bayes_layer`), and a long-tailed scan (class
counts ``counts``) has a scanned layer that favours its frequent classes exactly as cross-entropy would.
Only the columns the head floor reads are filled (index, path, status, label, pred, features).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fclens.options import SCAN_DEFAULTS
from fclens.scanning.manifest import HEAD_FILE, MANIFEST
from fclens.scanning.schema import CLASS_NAMES, SCHEMA_VERSION, class_name_column, scan_schema

SIGMA = 1.0


def class_means(classes: int, dim: int, spread: float, seed: int = 0) -> np.ndarray:
    """(C, D) class means, the same for every scan made with the same arguments."""
    return np.random.default_rng(seed).normal(0, spread, (classes, dim))


def bayes_layer(means: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Bayes-optimal (weight, bias) for data drawn with class prior ``prior``."""
    weight = means / SIGMA**2
    bias = -(means**2).sum(axis=1) / (2 * SIGMA**2) + np.log(prior)
    return weight.astype(np.float32), bias.astype(np.float32)


def long_tail(classes: int, largest: int, imbalance: float) -> np.ndarray:
    """Images per class on the exponential profile: ``largest`` down to ``largest / imbalance``."""
    return np.round(largest * imbalance ** (-np.arange(classes) / max(classes - 1, 1))).astype(np.int64)


def write(
    directory: Path,
    means: np.ndarray,
    counts: np.ndarray,
    layer: tuple[np.ndarray, np.ndarray],
    seed: int = 1,
    shard_rows: int = 4096,
    unlabelled: int = 0,
) -> dict[str, np.ndarray]:
    """A scan of ``counts[k]`` images of each class k (plus ``unlabelled`` rows with no label) scanned by
    ``layer``; returns its features (float16-rounded, as stored), labels and the layer's predictions."""
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(len(counts)), counts)
    label = np.concatenate([label, rng.integers(0, len(counts), unlabelled)])
    rng.shuffle(label)
    z = (means[label] + rng.normal(0, SIGMA, (len(label), means.shape[1]))).astype(np.float16)
    weight, bias = layer
    pred = (z.astype(np.float32) @ weight.T + bias).argmax(axis=1)
    known = np.ones(len(label), bool)
    known[rng.permutation(len(label))[:unlabelled]] = False
    options = replace(SCAN_DEFAULTS, features=True)
    schema = scan_schema(options)
    class_names = [f"class {k}" for k in range(len(counts))]
    directory.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, len(label), shard_rows)):
        part = slice(start, min(len(label), start + shard_rows))
        n = part.stop - part.start
        given = {
            "index": pa.array(np.arange(part.start, part.stop), pa.int64()),
            "path": pa.array([f"<image {i}>" for i in range(part.start, part.stop)], pa.string()),
            "status": pa.array(["ok"] * n, pa.string()),
            "label": pa.array(np.where(known[part], label[part], 0), pa.int32(), mask=~known[part]),
            "pred": pa.array(pred[part], pa.int32()),
            "features": pa.ListArray.from_arrays(
                pa.array(np.arange(n + 1) * z.shape[1], pa.int32()), pa.array(z[part].reshape(-1))
            ),
        }
        given |= {
            name: class_name_column(given[index], pa.array(class_names))
            for name, index in CLASS_NAMES.items()
            if index in given
        }
        columns = [given.get(f.name, pa.nulls(n, f.type)) for f in schema]
        pq.write_table(pa.Table.from_arrays(columns, schema=schema), directory / f"part-{shard:05d}.parquet")
    from safetensors.numpy import save

    (directory / HEAD_FILE).write_bytes(save({"weight": weight, "bias": bias}))
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": "gaussian classes"},
        "source": "synthetic",
        "class_names": class_names,
        "num_features": means.shape[1],
        "preprocessing": {"input_size": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
        "options": options.to_dict(),
        "counts": {"images": len(label), "ok": len(label), "skipped": 0},
        "complete": True,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest))
    return {"features": z, "label": np.where(known, label, -1), "pred": pred}
