"""The Ray engine: the scan as Ray Data batch inference, on a local Ray or on a cluster.

Pending items → ``from_arrow`` → ``map_batches(_decode)`` (the scan's
:class:`~fclens.scanning.decoding.Decoder`, which the local engine runs too: a preprocessed image per row,
or the reason it could not be read) → ``map_batches(_ModelActor)`` on a pool of model actors, each of which builds one
:class:`~fclens.scanning.core.BatchScanner`, the core that the local engine calls too → the driver hands
every block of rows to :class:`~fclens.scanning.writer.ScanWriter`, which writes shards atomically and
resumes. So the rows are the local engine's rows, wherever they were computed.

With GPUs there is one actor per GPU and decoding runs as CPU tasks beside them. Without, there is one
actor per CPU and Ray Data fuses the decoding into the actors (the two stages ask for the same resources):
each CPU decodes and scans its own batches, as fast as any split of the CPUs between the stages, and no
decode task ever waits for a CPU that an actor holds.

Between the two stages an image travels as the raw bytes of its float32 tensor with its shape, in plain
Arrow columns (null for a file that could not be decoded), so nothing depends on Ray's tensor types.
Ray Data restarts a model actor that dies and retries its batch; the writer keeps each image once.

Ray is optional (``pip install 'fclens[ray]'``) and imported only when a :class:`RayEngine` runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from fclens.errors import FclensError
from fclens.models import Classifier
from fclens.options import Options, at_least
from fclens.scanning.core import BatchScanner
from fclens.scanning.decoding import Decoder, Decoding, batch_rows, collate
from fclens.scanning.sources import UNLABELLED, Item, label_matcher
from fclens.scanning.writer import ScanWriter

__all__ = ["RayEngine", "dataset_items"]

_NEEDS_RAY = "the ray engine needs Ray: pip install 'fclens[ray]'"

_DECODED = pa.schema(
    [
        ("index", pa.int64()),
        ("path", pa.string()),
        ("label", pa.int32()),
        ("reason", pa.string()),
        ("image", pa.large_binary()),
        ("shape", pa.list_(pa.int32())),
    ]
)
"""What a decode task hands a model actor: the item, and its image's float32 bytes and shape or why not."""


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise FclensError(_NEEDS_RAY) from None
    return ray


@dataclass(frozen=True)
class RayEngine:
    """Scan with Ray Data: decode tasks feed a pool of model actors; the driver writes the rows.

    ``address``: None starts a local Ray for this scan (shut down after); "auto" or "ray://…" joins a
    running cluster, which is left running. A Ray already initialised in this process is used as it is.
    ``actors``: model actors (default: one per GPU of the cluster, else one per CPU). ``workers``:
    decode tasks at a time beside GPU actors (default: as many as the free CPUs allow).
    """

    address: str | None = None
    actors: int | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.address is not None and not isinstance(self.address, str):
            raise FclensError(f"address must be None, 'auto' or 'ray://…', got {self.address!r}")
        if self.actors is not None:
            at_least("actors", self.actors, 1)
        if self.workers is not None:
            at_least("workers", self.workers, 0)

    def run(
        self,
        scanner: BatchScanner,
        decoding: Decoding,
        writer: ScanWriter,
        on_batch: Callable[[int], None],
    ) -> None:
        """Scan ``decoding``'s items with Ray Data and hand the rows to ``writer`` as they arrive.

        The decoder (and a torch Dataset that the items index) travels to the decode tasks; the
        classifier travels to each model actor, which moves it to its GPU when it has one.
        """
        ray = _ray()
        if not decoding.items:
            return
        with _quiet_ray(), _connected(ray, self.address):
            count, gpus = _pool(ray.cluster_resources(), self.actors)
            classifier, options = scanner.classifier, scanner.options
            rows = (
                ray.data.from_arrow(_item_blocks(decoding.items, options.batch_size))
                .map_batches(
                    _decode,
                    batch_size=options.batch_size,
                    batch_format="pyarrow",
                    fn_kwargs={"decoder": decoding.decoder},
                    # a capped task pool is never fused into CPU actors, whose CPUs it would then wait for
                    compute=ray.data.TaskPoolStrategy(size=self.workers) if self.workers and gpus else None,
                )
                .map_batches(
                    _ModelActor,
                    batch_size=options.batch_size,
                    batch_format="pyarrow",
                    fn_constructor_args=(classifier, options, gpus > 0),
                    compute=ray.data.ActorPoolStrategy(size=count),
                    num_gpus=1 if gpus else None,
                )
            )
            for block in rows.iter_batches(batch_size=None, batch_format="pyarrow"):
                for batch in block.to_batches():
                    writer.add(batch)
                on_batch(block.num_rows)


def _pool(resources: dict[str, float], actors: int | None) -> tuple[int, int]:
    """(model actors, GPUs of the cluster): one actor per GPU, else per CPU; never more than fit."""
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    kind, available = ("GPUs", gpus) if gpus else ("CPUs", cpus)
    if actors is not None and actors > available:
        problem = f"{actors} model actors asked for, but the Ray cluster has {available} {kind}"
        raise FclensError(
            f"{problem}; use RayEngine(actors={available}) or fewer",
            cli=f"{problem}; use --actors {available} or fewer",
        )
    return actors or max(available, 1), gpus


_HARMLESS = {
    # a local Ray started for one scan has token authentication on by default, and says so at every start
    "ray._private.authentication.authentication_token_setup": "Token authentication is enabled for this Ray",
    # the scan turns Ray Data's progress bars off on purpose: its own bar counts images
    "ray.data._internal.progress": "Progress bars disabled",
}
"""Ray's log records that a scan drops: logger → how the message begins (notes about what the scan chose)."""


class _Drop(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


@contextmanager
def _quiet_ray() -> Iterator[None]:
    """For the scan's duration: drop the :data:`_HARMLESS` notes, and Ray Data's INFO lines (execution start,
    plan, finish), which the scan's bar replaces; its warnings and errors still show. Restored after.

    Not dropped, because it is written by Ray's C++ core, not Python's logging: Ray Data's own
    ``core_worker.cc`` line "... has constructor arguments in the object store and max_restarts > 0",
    which Ray Data prints for any actor pool (ray-project/ray#57733, open): it passes references into
    every model actor's constructor. Here it is harmless: Ray Data holds them for the whole execution, and
    a lost model actor is restarted (tests/test_scan_ray.py kills one mid-scan).
    """
    dropped = [(logging.getLogger(name), _Drop(start)) for name, start in _HARMLESS.items()]
    data = logging.getLogger("ray.data")
    level = data.level
    for logger, rule in dropped:
        logger.addFilter(rule)
    data.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        data.setLevel(level)
        for logger, rule in dropped:
            logger.removeFilter(rule)


@contextmanager
def _connected(ray: Any, address: str | None) -> Iterator[None]:
    """Ray for the length of a scan: the one already up, a cluster joined, or a local one started."""
    if ray.is_initialized():
        yield
        return
    ray.init(address=address or "local", logging_level="WARNING")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the scan's own bar counts images
    try:
        yield
    finally:
        ray.shutdown()  # disconnects from a joined cluster; stops only a Ray started here


def _item_blocks(items: Sequence[Item], size: int) -> list[pa.Table]:
    """The items in blocks of one batch each: Ray Data runs one task (or actor call) per block at a time."""
    table = pa.table(
        {
            "index": pa.array([item.index for item in items], pa.int64()),
            "path": pa.array([item.path for item in items], pa.string()),
            "label": pa.array([item.label for item in items], pa.int32()),
        }
    )
    return [table.slice(start, size) for start in range(0, table.num_rows, size)]


def _items_of(batch: pa.Table) -> list[Item]:
    return [
        Item(index, path, label)
        for index, path, label in zip(
            batch.column("index").to_pylist(),
            batch.column("path").to_pylist(),
            batch.column("label").to_pylist(),
            strict=True,
        )
    ]


def _decode(batch: pa.Table, decoder: Decoder) -> pa.Table:
    """A decode task: each item's preprocessed image as bytes and shape, or why it was skipped."""
    torch.set_num_threads(1)  # one task is one core
    records = [decoder(item) for item in _items_of(batch)]
    images = [
        None if tensor is None else tensor.numpy().astype(np.float32, copy=False) for _, tensor, _ in records
    ]
    return pa.table(
        {
            "index": [item.index for item, _, _ in records],
            "path": [item.path for item, _, _ in records],
            "label": [item.label for item, _, _ in records],
            "reason": [reason for _, _, reason in records],
            "image": [None if image is None else image.tobytes() for image in images],
            "shape": [None if image is None else list(image.shape) for image in images],
        },
        schema=_DECODED,
    )


class _ModelActor:
    """A model actor: the classifier (on this actor's GPU when it has one) and one BatchScanner for it."""

    def __init__(self, classifier: Classifier, options: Options, cuda: bool) -> None:
        self.scanner = BatchScanner(classifier.to("cuda") if cuda else classifier, options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = [
            (item, None if image is None else torch.from_numpy(_array(image, shape)), reason)
            for item, image, shape, reason in zip(
                _items_of(batch),
                batch.column("image").to_pylist(),
                batch.column("shape").to_pylist(),
                batch.column("reason").to_pylist(),
                strict=True,
            )
        ]
        return pa.Table.from_batches(batch_rows(self.scanner, collate(records)), schema=self.scanner.schema)


def _array(data: bytes, shape: list[int]) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float32).reshape(shape).copy()  # writable, as torch wants


def dataset_items(dataset: Any, class_names: Sequence[str], labels: str = "auto") -> list[Item]:
    """The items of a Ray Dataset with a ``path`` (and optionally a ``label``) column, in its row order."""
    ray = _ray()
    columns = dataset.columns() or []
    if "path" not in columns:
        raise FclensError(
            f"the Ray Dataset has no 'path' column (columns: {', '.join(columns) or 'none'}); give it one"
        )
    wanted = ["path", "label"] if labels == "auto" and "label" in columns else ["path"]
    selected = dataset.select_columns(wanted)
    options = selected.context.execution_options
    ordered, options.preserve_order = options.preserve_order, True  # positions must not change between runs
    try:
        table = pa.concat_tables(
            [ray.get(ref) for ref in selected.to_arrow_refs()], promote_options="default"
        )
    finally:
        options.preserve_order = ordered
    paths = table.column("path").to_pylist()
    given = table.column("label").to_pylist() if "label" in wanted else [None] * len(paths)
    if not paths:
        raise FclensError("the Ray Dataset has no rows")
    matcher = label_matcher(class_names)
    classes = {label: matcher.index(label, "label", *UNLABELLED) for label in set(given) - {None}}
    return [
        Item(position, str(path), classes.get(label))
        for position, (path, label) in enumerate(zip(paths, given, strict=True))
    ]
