"""A scan directory written directly with pyarrow, in the documented format, with answers known in advance.

Classes come in pairs (k, k ^ 1): each image of class k gives its partner a probability around
``PARTNER`` and up to three other classes a little, and ``error_rate`` of them are predicted as the
partner outright. Only those five classes get a probability, so any number of classes is cheap.
Every class has the same five-node tree ("", "+", "++", "-", "--") with contributions drawn around
:data:`NODE_MEANS`. What the atlas must find is then known: the rivals, the soft confusions, the
errors, the node means, and which rows are the strongest (:func:`write` returns the columns as numpy
arrays to check against).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fclens.options import SCAN_DEFAULTS
from fclens.scanning.manifest import HEAD_FILE, MANIFEST
from fclens.scanning.schema import CLASS_NAMES, SCHEMA_VERSION, class_name_column, scan_schema

PATHS = ["", "+", "++", "-", "--"]
NODE_MEANS = {"": 1.0, "+": 3.0, "++": 2.0, "-": -2.0, "--": -1.5}
SIZES = [64, 30, 12, 34, 14]
PARTNER = 0.2
GRID = (7, 7)
FEATURES = 64


def write(
    directory: Path,
    rows: int,
    classes: int = 10,
    seed: int = 0,
    error_rate: float = 0.1,
    shard_rows: int = 4096,
    labels: bool = True,
    paths: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Write a scan of ``rows`` images into ``directory``; return its columns (numpy) for checking."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, classes, rows)
    partner = label ^ 1
    # Three more classes per image, distinct and never the pair: drawn from disjoint ranges after it.
    count = min(3, classes - 2)
    width = (classes - 2) // count
    offsets = 2 + rng.integers(0, width, (rows, count)) + width * np.arange(count)
    candidates = np.concatenate(
        [label[:, None], partner[:, None], (label - label % 2)[:, None] + offsets], axis=1
    )
    candidates[:, 2:] %= classes
    probability = np.empty(candidates.shape)
    probability[:, 1] = PARTNER + rng.uniform(-0.05, 0.05, rows)
    probability[:, 2:] = rng.uniform(0, 0.02, (rows, count))
    probability[:, 0] = 1 - probability[:, 1:].sum(axis=1)
    wrong = rng.random(rows) < error_rate
    probability[wrong, :2] = probability[wrong, 1::-1]  # the partner wins outright
    order = np.argsort(-probability, axis=1, kind="stable")
    top5 = np.take_along_axis(candidates, order, axis=1)
    top5_prob = np.take_along_axis(probability, order, axis=1)
    logits = np.log(probability)
    target, rival = label, partner  # the partner is the most probable class other than the label
    contribution = np.array([NODE_MEANS[p] for p in PATHS])[None] + rng.normal(0, 0.5, (rows, len(PATHS)))
    columns = {
        "index": np.arange(rows),
        "path": np.array([paths[i] if paths else f"<dataset {i}>" for i in range(rows)], dtype=object),
        "label": label,
        "pred": top5[:, 0],
        "target": target,
        "rival": rival,
        "soft_partner": probability[:, 1],
        "logit_gap": logits[:, 1] - logits[:, 0],
        "contribution": contribution,
    }
    directory.mkdir(parents=True, exist_ok=True)
    schema = scan_schema(SCAN_DEFAULTS)
    class_names = [f"class <{k}>" for k in range(classes)]
    cells = GRID[0] * GRID[1]
    for shard, start in enumerate(range(0, rows, shard_rows)):
        part = slice(start, min(rows, start + shard_rows))
        n = part.stop - part.start
        maps = rng.random((n, len(PATHS), cells)).astype(np.float16)
        contrast = rng.random((n, cells)).astype(np.float16)
        data = {
            "index": pa.array(columns["index"][part], pa.int64()),
            "path": pa.array(columns["path"][part].tolist(), pa.string()),
            "status": pa.array(["ok"] * n, pa.string()),
            "reason": pa.nulls(n, pa.string()),
            "label": pa.array(label[part] if labels else [None] * n, pa.int32()),
            "pred": pa.array(top5[part, 0], pa.int32()),
            "prob": pa.array(top5_prob[part, 0], pa.float32()),
            "top5": pa.array(top5[part].tolist(), pa.list_(pa.int32())),
            "top5_prob": pa.array(top5_prob[part].tolist(), pa.list_(pa.float32())),
            "target": pa.array(target[part], pa.int32()),
            "rival": pa.array(rival[part], pa.int32()),
            "prob_target": pa.array(probability[part, 0], pa.float32()),
            "prob_rival": pa.array(probability[part, 1], pa.float32()),
            "logit_target": pa.array(logits[part, 0], pa.float32()),
            "logit_rival": pa.array(logits[part, 1], pa.float32()),
            "node_path": pa.array([PATHS] * n, pa.list_(pa.string())),
            "node_size": pa.array([SIZES] * n, pa.list_(pa.int32())),
            "node_contribution": pa.array(contribution[part].tolist(), pa.list_(pa.float32())),
            "node_map": pa.array(maps.tolist(), schema.field("node_map").type),
            "contrast_map": pa.array(contrast.tolist(), schema.field("contrast_map").type),
        }
        for name, index in CLASS_NAMES.items():
            data[name] = class_name_column(data[index], pa.array(class_names))
        table = pa.Table.from_pydict(data, schema=schema)
        pq.write_table(table, directory / f"part-{shard:05d}.parquet", compression="zstd")
    _head(directory, classes)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": "synthetic"},
        "class_names": class_names,
        "num_features": FEATURES,
        "feature_grid": list(GRID),
        "preprocessing": {"input_size": [224, 224], "mean": [0.5] * 3, "std": [0.5] * 3},
        "options": SCAN_DEFAULTS.to_dict(),
        "counts": {"images": rows, "ok": rows, "skipped": 0},
        "complete": True,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest))
    return columns


def _head(directory: Path, classes: int) -> None:
    from safetensors.numpy import save

    weight = np.random.default_rng(0).normal(size=(classes, FEATURES)).astype(np.float32)
    (directory / HEAD_FILE).write_bytes(save({"weight": weight, "bias": np.zeros(classes, np.float32)}))
