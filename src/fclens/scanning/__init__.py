"""Scan a whole data set: every image's prediction, tree, node maps and contrast, in one Parquet table.

::

    scan = fclens.scan(model, "val/", out="val-scan/")    # class-name subfolders give the labels
    df = fclens.read_scan("val-scan/").to_pandas()        # one row per image

Layers, each one job: :mod:`.sources` (folders, lists, Datasets → numbered items; labels matched to the
model's classes), :mod:`.core` (one preprocessed batch → rows: the part both engines share),
:mod:`.store` (manifest, final layer, atomic shards, resume, reading), and the engines that only move
batches: :mod:`.local` (DataLoader workers) and :mod:`.ray_engine` (Ray Data; imported only when asked for).
The package is called ``scanning`` so that the function :func:`fclens.scan` is never shadowed by it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from fclens.errors import FclensError
from fclens.models import Classifier, load_model
from fclens.options import SCAN_DEFAULTS
from fclens.scanning.core import BatchScanner
from fclens.scanning.local import Decoding, default_workers, run_local
from fclens.scanning.sources import LABEL_MODES, Item, resolve_source
from fclens.scanning.store import Manifest, Scan, ScanError, ScanWriter, read_scan

__all__ = ["ENGINES", "Scan", "ScanError", "read_scan", "scan"]

ENGINES = ("local", "ray")


def scan(
    model: Classifier | Any,
    source: str | os.PathLike[str] | Dataset | Any,
    out: str | os.PathLike[str],
    *,
    labels: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    min_size: int = 20,
    mode: str = "chains",
    map_kind: str = "activation",
    features: bool = False,
    scores: str | None = None,
    seed: int = 0,
    engine: str = "local",
    ray_address: str | None = None,
    actors: int | None = None,
    force: bool = False,
    device: str | None = None,
    progress: bool = True,
    shard_rows: int = 1024,
) -> Scan:
    """Scan ``source`` with ``model`` into the directory ``out``, resuming what an earlier run finished.

    ``source``: a folder (searched recursively; subfolders named after classes give labels), a CSV or
    Parquet list with a ``path`` and optionally a ``label`` column, a torch Dataset yielding (image,
    label), or with ``engine="ray"`` a Ray Dataset with ``path`` (and ``label``) columns. ``labels``:
    "auto" or "none". ``min_size``/``mode`` shape each target class's tree as in :func:`fclens.explain`;
    ``map_kind`` is the map stored per node; ``features`` stores the final layer's input z (what pruning
    needs); ``scores`` adds the author's masked scores ("terminal" or "all": one forward per node).
    ``workers`` decode processes (default: the usable CPUs, at most 8). Returns the scan, read back.
    """
    if engine not in ENGINES:
        raise FclensError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if labels not in LABEL_MODES:
        raise FclensError(f"labels must be one of {', '.join(LABEL_MODES)}; got {labels!r}")
    if workers is not None and workers < 0:
        raise FclensError(f"workers must be 0 or more, got {workers}")
    options = SCAN_DEFAULTS.but(
        min_size=min_size, mode=mode, maps=(map_kind,), features=features, scores=scores or "none",
        batch_size=batch_size, seed=seed,
    )  # fmt: skip
    classifier = model if isinstance(model, Classifier) else load_model(model, device=device or "cpu")
    items, dataset, identity = _items(source, classifier, labels)
    head = classifier.head
    weight = head.weight.detach().float().cpu().numpy()
    bias = head.bias.detach().float().cpu().numpy() if head.bias is not None else np.zeros(len(weight), np.float32)
    manifest = Manifest.of(classifier, options, identity, weight, bias, len(items))
    scanner = BatchScanner(classifier, options)
    writer = ScanWriter(out, manifest, (weight, bias), scanner.schema, force=force, shard_rows=shard_rows)
    pending = writer.pending(items)
    bar = _progress(len(items), len(items) - len(pending), progress)
    try:
        names = classifier.class_names if labels == "auto" else None
        decoding = Decoding(pending, classifier.preprocessing, dataset, names)
        if engine == "ray":
            from fclens.scanning.ray_engine import run_ray

            run_ray(scanner, decoding, writer, address=ray_address, actors=actors, workers=workers,
                    on_batch=bar.update)
        else:
            run_local(scanner, decoding, writer, default_workers() if workers is None else workers, bar.update)
    finally:
        bar.close()
        writer.close(len(items), scanner.grid)
    return read_scan(out)


def _items(source: Any, classifier: Classifier, labels: str) -> tuple[list[Item], Any, str]:
    """(items, the Dataset they index or None, what identifies the source in the manifest)."""
    if isinstance(source, (str, os.PathLike)):
        items = resolve_source(source, classifier.class_names, labels)
        return items, None, str(Path(source).resolve())
    if isinstance(source, Dataset) or (hasattr(source, "__getitem__") and hasattr(source, "__len__")):
        count = len(source)
        if count == 0:
            raise FclensError("the dataset is empty")
        items = [Item(i, f"<dataset {i}>") for i in range(count)]
        return items, source, f"dataset:{type(source).__name__}:{count}"
    if type(source).__module__.startswith("ray."):
        from fclens.scanning.ray_engine import dataset_items

        items = dataset_items(source, classifier.class_names, labels)
        return items, None, f"ray-dataset:{len(items)}"
    raise FclensError(
        f"cannot scan a {type(source).__name__}; give a folder, a .csv/.parquet list or a torch Dataset"
    )


def _progress(total: int, done: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="scan", unit="img", disable=None if enabled else True, smoothing=0.1)
