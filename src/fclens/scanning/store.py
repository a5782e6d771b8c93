"""A scan directory: the manifest, the final layer, and Parquet shards written atomically as they complete.

The directory is the interface between the scan and everything that reads it (the atlas, pruning, a
user's pandas, DuckDB or Polars query), so it is plain: ``_manifest.json``, ``_head.safetensors`` and
``part-NNNNN.parquet`` (README.md, "Scan a data set"). The leading ``_`` keeps the manifest and the head
out of Parquet dataset discovery, so ``pd.read_parquet("scan/")`` reads the rows. A shard appears whole or
not at all (written beside its name, then renamed), and the set of finished images is read back from the
shards themselves, so a scan killed at any moment resumes without losing an image or writing one twice.

:class:`Manifest` is the one reading of ``_manifest.json`` (version 1 scans, named ``manifest.json`` and
``head.safetensors``, are converted on reading); :meth:`Scan.rows` and :meth:`Scan.batches` are the one
reader of the rows, built on ``pyarrow.dataset`` so that a pass reads only the columns it needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from fclens.errors import FclensError
from fclens.io import atomic_write_bytes, atomic_write_text
from fclens.options import RUNNER_UP, Options
from fclens.scanning.schema import SCHEMA_VERSION, scan_schema
from fclens.scanning.sources import Item

__all__ = [
    "HEAD_FILE",
    "MANIFEST",
    "IncompleteScanWarning",
    "Manifest",
    "Scan",
    "ScanError",
    "ScanWriter",
    "read_scan",
    "shard_paths",
]

MANIFEST = "_manifest.json"
HEAD_FILE = "_head.safetensors"
_V1_NAMES = ("manifest.json", "head.safetensors")
"""Where a version-1 scan keeps its manifest and head (read, never written)."""
_SHARD = re.compile(r"part-(\d{5,})\.parquet")


class ScanError(FclensError):
    """A scan directory that cannot be written, resumed or read (one-line message)."""


class IncompleteScanWarning(UserWarning):
    """A reader works on a scan that did not finish: its results cover only the rows present."""


def shard_paths(directory: Path) -> list[Path]:
    """The finished shards, in the order they were written."""
    found = [path for path in directory.glob("part-*.parquet") if _SHARD.fullmatch(path.name)]
    return sorted(found, key=lambda path: int(_SHARD.fullmatch(path.name).group(1)))


@dataclass
class Manifest:
    """What a scan directory holds and how it was made: one record, read and written in one place.

    ``model``: the scanned model's identity (name, source, weights and their digest, the final layer's
    digest and names, pooling). ``source``: what identifies the images (a folder or list's absolute path,
    or a dataset's type and size). ``options``: the scan's :class:`fclens.options.Options` (batch size
    aside). ``counts``: ``images`` in the source, ``ok`` and ``skipped`` rows written so far.
    """

    model: dict[str, Any]
    source: str
    class_names: list[str]
    num_features: int
    preprocessing: dict[str, Any]
    options: Options
    feature_grid: tuple[int, int] | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"images": 0, "ok": 0, "skipped": 0})
    complete: bool = False
    shards: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    fclens_version: str = ""

    @classmethod
    def of(
        cls, classifier: Any, options: Options, source: str, weight: np.ndarray, bias: np.ndarray, images: int
    ) -> Manifest:
        """The manifest of a new scan of ``images`` images of ``source`` by ``classifier``."""
        from fclens import __version__

        head, weights, preprocessing = classifier.head, classifier.weights, classifier.preprocessing
        model = {
            "name": classifier.name,
            "source": classifier.source,
            "weights": None if weights is None else str(Path(weights).resolve()),
            "weights_sha256": None if weights is None else file_sha256(weights),
            "head_sha256": head_sha256(weight, bias),
            "final_layer": head.layer_name,
            "feature_layer": head.feature_layer_name if head.affine else head.gradient_layer_name,
            "pooling": head.pooling,
        }
        return cls(
            model=model,
            source=source,
            class_names=list(classifier.class_names),
            num_features=int(head.num_features),
            preprocessing={
                "input_size": list(preprocessing.input_size),
                "mean": list(preprocessing.mean),
                "std": list(preprocessing.std),
                "interpolation": preprocessing.interpolation,
                "crop_pct": preprocessing.crop_pct,
                "crop_mode": preprocessing.crop_mode,
            },
            options=options,
            feature_grid=(int(head.grid[0]), int(head.grid[1])),
            counts={"images": images, "ok": 0, "skipped": 0},
            fclens_version=__version__,
        )

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What was scanned and how: a rerun into the directory must match it to resume."""
        model = [self.model.get("name"), self.model.get("weights_sha256"), self.model.get("head_sha256")]
        return {
            "model": model,
            "source": self.source,
            "options": self.options.to_dict(),
            "schema version": self.schema_version,
        }

    def differences(self, now: Manifest) -> list[str]:
        """Each way ``now`` differs from this earlier scan, both values named: "min_size: 20 then, 10 now"."""
        before, after = self.fingerprint, now.fingerprint
        found = []
        for key in before:
            if key == "options":
                old, new = before[key], after[key]
                found += [
                    f"{name}: {old.get(name)!r} then, {new.get(name)!r} now"
                    for name in dict.fromkeys([*old, *new])
                    if old.get(name) != new.get(name)
                ]
            elif before[key] != after[key]:
                found.append(f"{key}: {before[key]!r} then, {after[key]!r} now")
        return found

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``_manifest.json`` (schema version 2)."""
        return {
            "schema_version": self.schema_version,
            "fclens_version": self.fclens_version,
            "model": self.model,
            "source": self.source,
            "class_names": self.class_names,
            "num_features": self.num_features,
            "feature_grid": None if self.feature_grid is None else list(self.feature_grid),
            "preprocessing": self.preprocessing,
            "options": self.options.to_dict(),
            "counts": self.counts,
            "complete": self.complete,
            "shards": self.shards,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Manifest:
        """A manifest from its JSON, version 1 converted: its map kind, scores and tree become Options."""
        if values.get("schema_version") == 1:
            values = _from_version_1(values)
        grid = values.get("feature_grid")
        return cls(
            model=dict(values.get("model") or {}),
            source=str(values.get("source") or ""),
            class_names=list(values["class_names"]),
            num_features=int(values.get("num_features") or 0),
            preprocessing=dict(values.get("preprocessing") or {}),
            options=Options.from_dict(values["options"]),
            feature_grid=None if grid is None else (int(grid[0]), int(grid[1])),
            counts={key: int(value or 0) for key, value in (values.get("counts") or {}).items()},
            complete=bool(values.get("complete")),
            shards=list(values.get("shards") or []),
            schema_version=int(values["schema_version"]),
            fclens_version=str(values.get("fclens_version") or ""),
        )


def _from_version_1(values: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept the options up to three times (``options``, ``tree``, ``map_kind``/``features``/
    ``scores``, the last with None for none); the earliest scans lack ``options``. One Options from them."""
    tree = values.get("tree") or {}
    options = dict(values.get("options") or {})
    options.setdefault("maps", [values.get("map_kind") or "activation"])
    options.setdefault("min_size", tree.get("min_size", 20))
    options.setdefault("mode", tree.get("mode", "chains"))
    options.setdefault("features", bool(values.get("features")))
    options.setdefault("scores", values.get("scores"))
    options["scores"] = options["scores"] or "none"
    options["contrast"] = RUNNER_UP
    options["maps"] = tuple(options["maps"])
    return {**values, "options": options}


class ScanWriter:
    """Collects rows into shards of ``shard_rows`` and keeps the manifest's counts current.

    ``fingerprint`` says what was scanned and how (model, weights, head, source, options): a directory
    holding a scan with another fingerprint is refused unless ``force``, which starts over.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        manifest: Manifest,
        head: tuple[np.ndarray, np.ndarray],
        schema: pa.Schema,
        force: bool = False,
        shard_rows: int = 1024,
    ) -> None:
        self.directory = Path(directory)
        self.schema = schema
        self.shard_rows = shard_rows
        self.manifest = manifest
        self._prepare(force)
        atomic_write_bytes(self.directory / HEAD_FILE, _head_bytes(*head))
        shards = shard_paths(self.directory)
        self._next = 1 + max((int(_SHARD.fullmatch(p.name).group(1)) for p in shards), default=-1)
        self.done: set[int] = set()
        self.counts = {"ok": 0, "skipped": 0}
        for shard in shards:
            self._count(pq.read_table(shard, columns=["index", "status"]))
        self._pending: list[pa.RecordBatch] = []
        self._queued: set[int] = set()  # indices of the pending rows
        self._write_manifest(complete=False)

    def _prepare(self, force: bool) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / ".fclens-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise ScanError(
                f"cannot write to {self.directory}: {error.strerror or error}; choose another --out"
            ) from None
        path = _manifest_path(self.directory)
        if path is None:
            if shard_paths(self.directory):
                raise ScanError(
                    f"{self.directory} holds shards but no manifest; use another --out, or --force"
                )
            return
        if force:
            for stale in [*shard_paths(self.directory), *(self.directory / name for name in _V1_NAMES)]:
                stale.unlink(missing_ok=True)
            return
        differences = _read_manifest(path).differences(self.manifest)
        if differences:
            raise ScanError(
                f"{self.directory} holds another scan ({'; '.join(differences)}); "
                "use another --out, or --force to start over"
            )

    def pending(self, items: list[Item]) -> list[Item]:
        """The items not yet in a finished shard."""
        return [item for item in items if item.index not in self.done]

    def add(self, rows: pa.RecordBatch) -> None:
        """Queue rows; a shard is written each time ``shard_rows`` are queued. Rows already written are dropped."""
        if rows.num_rows == 0:
            return
        fresh = []
        for index in rows.column("index").to_pylist():
            fresh.append(index not in self.done and index not in self._queued)
            if fresh[-1]:
                self._queued.add(index)
        if not all(fresh):  # a retried task may deliver rows twice: each image is kept once
            rows = rows.filter(pa.array(fresh))
        self._pending.append(rows)
        if len(self._queued) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        """Write the queued rows as one shard (atomically) and update the manifest."""
        if not self._queued:
            self._pending = []
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        atomic_write_bytes(self.directory / f"part-{self._next:05d}.parquet", shard_bytes(table))
        self._next += 1
        self._count(table)
        self._pending, self._queued = [], set()
        self._write_manifest(complete=False)

    def _count(self, table: pa.Table) -> None:
        """Record a finished shard's images as done, and its ok and skipped rows in the counts."""
        self.done.update(table.column("index").to_pylist())
        ok = pc.sum(pc.equal(table.column("status"), "ok")).as_py() or 0
        self.counts["ok"] += ok
        self.counts["skipped"] += table.num_rows - ok

    def close(self, total: int) -> None:
        """Write what is queued; the scan is complete when every one of the source's ``total`` images is in."""
        self.flush()
        self._write_manifest(complete=len(self.done) >= total, total=total)

    def _write_manifest(self, complete: bool, total: int | None = None) -> None:
        manifest = self.manifest
        manifest.counts = {
            "images": manifest.counts.get("images", 0) if total is None else total,
            **self.counts,
        }
        manifest.complete = complete
        manifest.shards = [path.name for path in shard_paths(self.directory)]
        atomic_write_text(self.directory / MANIFEST, json.dumps(manifest.to_dict(), indent=1) + "\n")


def shard_bytes(table: pa.Table) -> bytes:
    """A shard as Parquet bytes: zstd-compressed, with dictionary encoding for the text columns only.

    A dictionary of float16 features or maps never pays (every value differs), and reading back its
    fallback pages took 2.5× as long as plain pages (0.94 s against 0.37 s for 50,000 × 1,280 features
    in 1,024-row shards, BENCHMARKS.md "Imbalanced data")."""
    text = [
        field.name if pa.types.is_string(field.type) else f"{field.name}.list.element"
        for field in table.schema
        if pa.types.is_string(field.type)
        or (pa.types.is_list(field.type) and pa.types.is_string(field.type.value_type))
    ]
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd", use_dictionary=text)
    return buffer.getvalue().to_pybytes()


def _head_bytes(weight: np.ndarray, bias: np.ndarray) -> bytes:
    from safetensors.numpy import save

    return save(
        {"weight": np.ascontiguousarray(weight, np.float32), "bias": np.ascontiguousarray(bias, np.float32)}
    )


def head_sha256(weight: np.ndarray, bias: np.ndarray) -> str:
    """A digest of the final layer, so that a rerun knows it is looking at the same model."""
    digest = hashlib.sha256(np.ascontiguousarray(weight, np.float32).tobytes())
    digest.update(np.ascontiguousarray(bias, np.float32).tobytes())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_path(directory: Path) -> Path | None:
    """The manifest of the scan in ``directory`` (version 2's name, else version 1's), or None."""
    for name in (MANIFEST, _V1_NAMES[0]):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_manifest(path: Path) -> Manifest:
    try:
        values = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ScanError(
            f"{path}: cannot read the manifest ({error}); use another --out, or --force"
        ) from None
    version = values.get("schema_version") if isinstance(values, dict) else None
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ScanError(
            f"{path.parent} has scan schema version {version}; this fclens reads up to {SCHEMA_VERSION}: "
            "upgrade fclens"
        )
    try:
        return Manifest.from_dict(values)
    except (KeyError, TypeError, ValueError, FclensError) as error:
        raise ScanError(f"{path}: the manifest is damaged ({error}); rerun the scan with --force") from None


# --- reading ------------------------------------------------------------------------------------------


@dataclass
class Scan:
    """A scan directory, read: its :class:`Manifest`, its final layer and its rows.

    Read rows with :meth:`rows` (a table of the columns asked for) or :meth:`batches` (the same, a
    bounded piece at a time); ``table`` loads every column of every row, maps included.
    """

    directory: Path
    manifest: Manifest
    _head: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    @property
    def has_features(self) -> bool:
        return self.manifest.options.features

    @cached_property
    def grid(self) -> tuple[int, int]:
        """The feature grid (h, w) of the maps: the manifest's (written when a scan starts), or for a
        version-1 scan that never finished (whose manifest got it only at the end) the one whose h·w is a
        shard's map size at the input's aspect ratio."""
        if self.manifest.feature_grid is not None:
            return self.manifest.feature_grid
        sizes = self.rows(["contrast_map"], ok_only=True).column("contrast_map")
        if not len(sizes):
            raise ScanError(f"{self.directory} holds no scanned image yet; rerun the scan to finish it")
        area = int(pc.list_value_length(sizes)[0].as_py())
        height, width = self.manifest.preprocessing.get("input_size") or (1, 1)
        h = max(1, round((area * height / width) ** 0.5))
        return (h, area // h) if area % h == 0 else (area, 1)

    @cached_property
    def dataset(self) -> ds.Dataset:
        """The shards as one ``pyarrow.dataset`` (no manifest or head in it): read with columns and filters."""
        shards = shard_paths(self.directory)
        if not shards:
            return ds.dataset([], schema=scan_schema(self.manifest.options), format="parquet")
        return ds.dataset([str(shard) for shard in shards], format="parquet")

    def rows(
        self,
        columns: Sequence[str] | None = None,
        *,
        ok_only: bool = False,
        filter: ds.Expression | None = None,
    ) -> pa.Table:
        """The rows (sorted by ``index`` when it is among ``columns``) with only ``columns`` (None: all).

        ``ok_only`` keeps the images that were scanned; ``filter`` is any ``pyarrow.dataset`` expression.
        """
        table = self.dataset.to_table(columns=_names(columns), filter=_where(ok_only, filter))
        return table.sort_by("index") if "index" in table.column_names else table

    def batches(
        self, columns: Sequence[str], *, ok_only: bool = False, filter: ds.Expression | None = None
    ) -> Iterator[pa.Table]:
        """The same rows a bounded piece at a time, in no set order: the unit of memory of a pass."""
        for batch in self.dataset.to_batches(columns=_names(columns), filter=_where(ok_only, filter)):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])

    @cached_property
    def table(self) -> pa.Table:
        """Every column of every row, sorted by the images' position in the source. This loads all the
        maps into memory: for a large scan prefer :meth:`rows` with the columns you need."""
        return self.rows()

    def ok(self) -> pa.Table:
        """Every column of the rows of the images that were scanned (status ``ok``); see ``table``."""
        return self.table.filter(pc.equal(self.table.column("status"), "ok"))

    def to_pandas(self, columns: Sequence[str] | None = None) -> Any:
        """The rows as a pandas DataFrame; integer columns stay integers (nullable) where rows are skipped."""
        import pandas as pd

        nullable = {pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}
        return self.rows(columns).to_pandas(types_mapper=nullable.get)

    @property
    def weight(self) -> np.ndarray:
        """The final layer's weight as scanned, (C, D) float32."""
        return self._layer()["weight"]

    @property
    def bias(self) -> np.ndarray:
        """Its bias, (C,) float32."""
        return self._layer()["bias"]

    def features(self) -> np.ndarray:
        """z, the pooled input of the final layer, of every ``ok`` row by ``index``: (N_ok, D) float32."""
        if not self.has_features:
            raise ScanError(f"{self.directory} was scanned without features; rescan with --features")
        column = self.rows(["index", "features"], ok_only=True).column("features").combine_chunks()
        return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), -1)

    def node_maps(self, row: int) -> np.ndarray:
        """Row ``row``'s node maps (in ``node_path`` order) as (n, h, w) float32."""
        maps = self.table.column("node_map")[row].values.flatten()
        return maps.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, *self.grid)

    def contrast_map(self, row: int) -> np.ndarray:
        """Row ``row``'s contrast map (rival over target) as (h, w) float32."""
        values = self.table.column("contrast_map")[row].values
        return values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(self.grid)

    def locate(self, path: str) -> Path:
        """Where a row's image is now. Version 2 stores absolute paths; version 1 stored them relative to
        the scan's working directory, so those are tried from here, then from the folders above the
        recorded source and above the scan directory. The path as given when nothing is found."""
        given = Path(path)
        if given.is_absolute() or given.exists():
            return given
        source = Path(self.manifest.source)
        for base in (*source.parents, *self.directory.resolve().parents):
            if (base / given).exists():
                return base / given
        return given

    def incomplete(self) -> str | None:
        """For a scan that did not finish, a one-line note of how much it holds and how to finish it."""
        if self.manifest.complete:
            return None
        return (
            f"{self.directory} is an incomplete scan ({self.dataset.count_rows()} of "
            f"{self.manifest.counts.get('images', '?')} images); results cover those only. Rerun the same "
            "`fclens scan` command to finish it"
        )

    def warn_if_incomplete(self) -> None:
        """Warn (:class:`IncompleteScanWarning`) that a reader works on part of the data set."""
        note = self.incomplete()
        if note is not None:
            warnings.warn(note, IncompleteScanWarning, stacklevel=3)

    def _layer(self) -> dict[str, np.ndarray]:
        if not self._head:
            from safetensors.numpy import load

            name = HEAD_FILE if (self.directory / HEAD_FILE).is_file() else _V1_NAMES[1]
            self._head.update(load((self.directory / name).read_bytes()))
        return self._head


def _names(columns: Sequence[str] | None) -> list[str] | None:
    return None if columns is None else list(dict.fromkeys(columns))


def _where(ok_only: bool, filter: ds.Expression | None) -> ds.Expression | None:
    ok = ds.field("status") == "ok" if ok_only else None
    if ok is None or filter is None:
        return filter if ok is None else ok
    return ok & filter


def read_scan(directory: str | os.PathLike[str]) -> Scan:
    """Open a scan directory written by :func:`fclens.scan` (finished or not; schema version 1 or 2)."""
    directory = Path(directory)
    path = _manifest_path(directory)
    if path is None:
        raise ScanError(_not_a_scan(directory))
    manifest = _read_manifest(path)
    if not any((directory / name).is_file() for name in (HEAD_FILE, _V1_NAMES[1])):
        raise ScanError(f"{directory} has no {HEAD_FILE}; the scan is incomplete: rerun it")
    return Scan(directory, manifest)


def _not_a_scan(directory: Path) -> str:
    """Why ``directory`` cannot be read, and the commands that make it readable."""
    from fclens.images import IMAGE_EXTENSIONS

    if directory.is_dir():
        entries = islice((p for p in directory.rglob("*") if p.is_file()), 2000)
        if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in entries):
            return (
                f"{directory} is a folder of images, not a scan; scan it first: "
                f"`fclens scan {directory} --out SCAN`, then `fclens atlas SCAN`"
            )
    return f"{directory} is not a scan (no {MANIFEST}); make one with `fclens scan SOURCE --out {directory}`"
