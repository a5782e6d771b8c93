"""Scan a whole data set: every image's prediction, tree, node maps and contrast, in one Parquet table.

::

    scan = fclens.scan(model, "val/", out="val-scan/")    # class-name subfolders give the labels
    df = fclens.read_scan("val-scan/").to_pandas()        # one row per image

Layers, each one job: :mod:`.sources` (folders, lists, Datasets → numbered items; labels matched to the
model's classes), :mod:`.core` (one preprocessed batch → rows: the part both engines share),
:mod:`.manifest` (the directory's layout and what it was made with), :mod:`.writer` (atomic
shards, resume), :mod:`.reader` (:class:`Scan`, the one reader), and the engines that only move
batches behind one protocol (:class:`Engine`), fed by :mod:`.decoding`: :class:`LocalEngine` (DataLoader
workers) and :class:`RayEngine` (Ray Data; Ray is imported only when it runs).
The package is called ``scanning`` so that the function :func:`fclens.scan` is never shadowed by it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from torch.utils.data import Dataset

from fclens import deprecation
from fclens.errors import FclensError, as_path, described
from fclens.layer import FinalLayer
from fclens.models import Classifier, load_model
from fclens.options import LABEL_MODES, RUNNER_UP, SCAN_DEFAULTS, Options, at_least, with_keywords
from fclens.runs import progress_bar, sigterm_interrupts
from fclens.scanning.core import BatchScanner
from fclens.scanning.decoding import Decoder, Decoding
from fclens.scanning.local import LocalEngine
from fclens.scanning.manifest import Manifest, ScanError
from fclens.scanning.ray_engine import RayEngine, dataset_items
from fclens.scanning.reader import Scan, read_scan
from fclens.scanning.sources import Item, resolve_source
from fclens.scanning.writer import ScanWriter

__all__ = ["Engine", "LocalEngine", "RayEngine", "Scan", "ScanError", "read_scan", "scan"]

OLD_ENGINES: dict[str, type[LocalEngine] | type[RayEngine]] = {"local": LocalEngine, "ray": RayEngine}
"""``scan(engine="local"|"ray")`` of fclens 0.1 (commit 284cd16) → today's engines."""

OLD_ENGINE_KEYWORDS: dict[str, str] = {"workers": "workers", "ray_address": "address", "actors": "actors"}
"""``scan()``'s engine keywords of fclens 0.1 → the engines' fields (each engine takes the ones it has)."""


class Engine(Protocol):
    """What moves a scan's batches: decode ``decoding``'s items, scan them with ``scanner`` (the per-batch
    core), hand every row to ``writer`` and call ``on_batch`` with the number of images each batch held."""

    def run(
        self, scanner: BatchScanner, decoding: Decoding, writer: ScanWriter, on_batch: Callable[[int], None]
    ) -> None: ...


def scan(
    model: Classifier | Any,
    source: str | os.PathLike[str] | Dataset | Any,
    out: str | os.PathLike[str],
    *,
    options: Options | None = None,
    engine: Engine | None = None,
    labels: str = "auto",
    force: bool = False,
    device: str | None = None,
    progress: bool = True,
    shard_rows: int = 1024,
    **option_fields: Any,
) -> Scan:
    """Scan ``source`` with ``model`` into the directory ``out``, resuming what an earlier run finished.

    ``source``: a folder (searched recursively; subfolders named after classes give labels), a CSV or
    Parquet list with a ``path`` and optionally a ``label`` column, a torch Dataset yielding (image,
    label), or a Ray Dataset with ``path`` (and ``label``) columns. ``labels``: "auto" or "none".
    ``options`` (default :data:`fclens.options.SCAN_DEFAULTS`), overridden field by field by keywords
    (``min_size=``, ``maps="contribution"``, ``features=True``, ``scores="terminal"``, ``batch_size=``…):
    a scan stores one map kind and contrasts with the runner-up; ``curves=True`` (with ``fill=``) adds the
    root's and the leaves' deletion/insertion AUCs and each image's random baseline's. ``engine``:
    :class:`LocalEngine` (default) or :class:`RayEngine`. ``device``: where a model loaded from a name
    runs, or where a given classifier is moved. ``progress``: a bar on stderr when it is a terminal, and
    a line saying what a rerun found. Ctrl-C or SIGTERM keeps every finished image and raises
    KeyboardInterrupt saying how many; a rerun continues. Returns the scan, read back. Deprecated, for
    one release: fclens 0.1's ``engine="local"|"ray"`` with ``workers=``, ``ray_address=``, ``actors=``,
    and ``map_kind=``, ``scores=None``.
    """
    out = as_path(out, "out")
    at_least("shard_rows", shard_rows, 1)
    engine = _engine(engine, option_fields)
    hint = " (engine settings go in engine=LocalEngine(workers=…) or RayEngine(…))"
    options, notes = with_keywords(options, SCAN_DEFAULTS, option_fields, hint)
    for old, new in notes:
        deprecation.warn(old, new, stacklevel=3)
    _refuse_unstorable(options)
    if labels not in LABEL_MODES:
        raise FclensError(f"labels must be one of {', '.join(LABEL_MODES)}; got {labels!r}")
    if isinstance(model, Classifier):
        classifier = model if device is None else model.to(device)
    else:
        classifier = load_model(model, device=device or "cpu")
    items, dataset, identity = _items(source, classifier, labels)
    layer = FinalLayer.of(classifier)
    weight, bias = layer.weight.numpy(), layer.bias.numpy()
    manifest = Manifest.of(classifier, options, identity, weight, bias, len(items))
    scanner = BatchScanner(classifier, options)
    with sigterm_interrupts():
        writer = ScanWriter(out, manifest, (weight, bias), scanner.schema, force=force, shard_rows=shard_rows)
        pending = writer.pending(items)
        if progress:
            _say_what_was_found(writer, len(items), len(pending))
        names = tuple(classifier.class_names) if labels == "auto" else None
        decoding = Decoding(pending, Decoder(classifier.preprocessing, dataset, names))
        bar = progress_bar(
            len(items), len(items) - len(pending), enabled=progress and bool(pending), desc="scan", unit="img"
        )
        interrupted = False
        try:
            if pending:  # a finished scan starts no decode workers and no Ray
                engine.run(scanner, decoding, writer, bar.update)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            writer.close(len(items))  # however it stopped: the queued rows become a last shard
    if interrupted:
        kept = f"{len(writer.done)} of {len(items)} images kept in {out}"
        raise KeyboardInterrupt(f"interrupted: {kept}; rerun to continue")
    return read_scan(out)


def _engine(engine: Engine | str | None, fields: dict[str, Any]) -> Engine:
    """The engine to scan with: ``engine``, or the one fclens 0.1's keywords name (``engine="ray"``,
    ``ray_address=``, ``actors=``, ``workers=``, taken out of ``fields``), with a DeprecationWarning."""
    old = {name: fields.pop(name) for name in list(fields) if name in OLD_ENGINE_KEYWORDS}
    if engine is None and not old:
        return LocalEngine()
    if engine is None or isinstance(engine, str):
        kind = OLD_ENGINES.get(engine or "local")
        if kind is None:
            raise FclensError(f"engine must be LocalEngine(…) or RayEngine(…); got {engine!r}")
        given = {"engine": engine} if engine else {}
        settings = {
            OLD_ENGINE_KEYWORDS[name]: value
            for name, value in old.items()
            if value is not None and OLD_ENGINE_KEYWORDS[name] in kind.__dataclass_fields__
        }
        chosen = kind(**settings)
        spelt = ", ".join(f"{name}={value!r}" for name, value in {**given, **old}.items())
        now = ", ".join(f"{name}={value!r}" for name, value in settings.items())
        deprecation.warn(f"scan({spelt})", f"engine={kind.__name__}({now})", stacklevel=4)
        return chosen
    if old:
        fields_now = ", ".join(f"{OLD_ENGINE_KEYWORDS[name]}=…" for name in old)
        raise FclensError(
            f"give {', '.join(old)} to the engine: engine={type(engine).__name__}({fields_now})"
        )
    if not callable(getattr(engine, "run", None)):
        raise FclensError(f"engine must be LocalEngine(…) or RayEngine(…); got {described(engine)}")
    return engine


def _refuse_unstorable(options: Options) -> None:
    """Refuse, in one line, the options a scan cannot store."""
    if len(options.maps) != 1:
        raise FclensError(f"a scan stores one map kind; got maps={', '.join(options.maps)}: choose one")
    if options.contrast != RUNNER_UP:
        raise FclensError(f"a scan always contrasts with the runner-up; got contrast={options.contrast!r}")


def _say_what_was_found(writer: ScanWriter, total: int, pending: int) -> None:
    """On a rerun, one line on stderr: how much was already scanned, or that nothing is left to do."""
    if not pending:
        counts = writer.counts
        print(
            f"scan is complete: {total} images ({counts['ok']} ok, {counts['skipped']} skipped); nothing to do",
            file=sys.stderr,
        )
    elif pending < total:
        print(f"resuming: {total - pending} of {total} images already scanned", file=sys.stderr)


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
        items = dataset_items(source, classifier.class_names, labels)
        return items, None, f"ray-dataset:{len(items)}"
    raise FclensError(
        f"cannot scan a {type(source).__name__}; give a folder, a .csv/.parquet list or a torch Dataset"
    )
