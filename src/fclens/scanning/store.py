"""A scan directory: the manifest, the final layer, and Parquet shards written atomically as they complete.

The directory is the interface between the scan and everything that reads it (the atlas, pruning, a
user's DuckDB or Polars query), so it is plain: ``manifest.json``, ``head.safetensors`` and
``part-NNNNN.parquet`` (README.md, "Scan a data set"). A shard appears whole or not at all (written beside its
name, then renamed), and the set of finished images is read back from the shards themselves, so a scan
killed at any moment resumes without losing an image or writing one twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fclens.errors import FclensError
from fclens.io import atomic_write_bytes, atomic_write_text
from fclens.options import Options
from fclens.scanning.schema import SCHEMA_VERSION, scan_schema
from fclens.scanning.sources import Item

__all__ = ["HEAD_FILE", "MANIFEST", "Scan", "ScanError", "ScanWriter", "read_scan", "shard_paths"]

MANIFEST = "manifest.json"
HEAD_FILE = "head.safetensors"
_SHARD = re.compile(r"part-(\d{5,})\.parquet")


class ScanError(FclensError):
    """A scan directory that cannot be written, resumed or read (one-line message)."""


def shard_paths(directory: Path) -> list[Path]:
    """The finished shards, in the order they were written."""
    found = [path for path in directory.glob("part-*.parquet") if _SHARD.fullmatch(path.name)]
    return sorted(found, key=lambda path: int(_SHARD.fullmatch(path.name).group(1)))


class ScanWriter:
    """Collects rows into shards of ``shard_rows`` and keeps the manifest's counts current.

    ``fingerprint`` says what was scanned and how (model, weights, head, source, options): a directory
    holding a scan with another fingerprint is refused unless ``force``, which starts over.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        manifest: dict[str, Any],
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
        path = self.directory / MANIFEST
        if not path.is_file():
            if shard_paths(self.directory):
                raise ScanError(f"{self.directory} holds shards but no manifest; use another --out, or --force")
            return
        if force:
            for shard in shard_paths(self.directory):
                shard.unlink()
            return
        earlier = _read_manifest(path)
        if earlier.get("fingerprint") != self.manifest["fingerprint"]:
            before, now = earlier.get("fingerprint") or {}, self.manifest["fingerprint"]
            differ = sorted(key for key in set(before) | set(now) if before.get(key) != now.get(key))
            raise ScanError(
                f"{self.directory} holds another scan (it differs in: {', '.join(differ) or 'schema'}); "
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
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, compression="zstd")
        atomic_write_bytes(self.directory / f"part-{self._next:05d}.parquet", buffer.getvalue().to_pybytes())
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

    def close(self, total: int, grid: tuple[int, int] | None) -> None:
        """Write what is queued; the scan is complete when every one of the source's ``total`` images is in."""
        self.flush()
        if grid is not None:
            self.manifest["feature_grid"] = list(grid)
        self._write_manifest(complete=len(self.done) >= total, total=total)

    def _write_manifest(self, complete: bool, total: int | None = None) -> None:
        self.manifest["counts"] = {
            "images": total if total is not None else self.manifest.get("counts", {}).get("images"),
            **self.counts,
        }
        self.manifest["complete"] = complete
        self.manifest["shards"] = [path.name for path in shard_paths(self.directory)]
        atomic_write_text(self.directory / MANIFEST, json.dumps(self.manifest, indent=1) + "\n")


def _head_bytes(weight: np.ndarray, bias: np.ndarray) -> bytes:
    from safetensors.numpy import save

    return save({"weight": np.ascontiguousarray(weight, np.float32), "bias": np.ascontiguousarray(bias, np.float32)})


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


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ScanError(f"{path}: cannot read the manifest ({error}); use another --out, or --force") from None


# --- reading ------------------------------------------------------------------------------------------


@dataclass
class Scan:
    """A scan directory, read: its manifest, its final layer and its rows (sorted by ``index``)."""

    directory: Path
    manifest: dict[str, Any]
    _head: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def has_features(self) -> bool:
        return bool(self.manifest["options"]["features"])

    @property
    def grid(self) -> tuple[int, int]:
        """The feature grid (h, w) of the maps."""
        h, w = self.manifest["feature_grid"]
        return int(h), int(w)

    @cached_property
    def table(self) -> pa.Table:
        """Every row of every shard, sorted by the images' position in the source."""
        shards = shard_paths(self.directory)
        if not shards:
            return scan_schema(Options.from_dict(self.manifest["options"])).empty_table()
        return pa.concat_tables([pq.read_table(shard) for shard in shards]).sort_by("index")

    def ok(self) -> pa.Table:
        """The rows of the images that were scanned (status ``ok``)."""
        return self.table.filter(pc.equal(self.table.column("status"), "ok"))

    def to_pandas(self) -> Any:
        return self.table.to_pandas()

    @property
    def weight(self) -> np.ndarray:
        """The final layer's weight as scanned, (C, D) float32."""
        return self._layer()["weight"]

    @property
    def bias(self) -> np.ndarray:
        """Its bias, (C,) float32."""
        return self._layer()["bias"]

    def features(self) -> np.ndarray:
        """z, the pooled input of the final layer, of every ``ok`` row: (N_ok, D) float32."""
        if not self.has_features:
            raise ScanError(f"{self.directory} was scanned without features; rescan with --features")
        column = self.ok().column("features").combine_chunks()
        return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), -1)

    def node_maps(self, row: int) -> np.ndarray:
        """Row ``row``'s node maps (in ``node_path`` order) as (n, h, w) float32."""
        maps = self.table.column("node_map")[row].values.flatten()
        return maps.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, *self.grid)

    def contrast_map(self, row: int) -> np.ndarray:
        """Row ``row``'s contrast map (rival over target) as (h, w) float32."""
        values = self.table.column("contrast_map")[row].values
        return values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(self.grid)

    def _layer(self) -> dict[str, np.ndarray]:
        if not self._head:
            from safetensors.numpy import load

            self._head.update(load((self.directory / HEAD_FILE).read_bytes()))
        return self._head


def read_scan(directory: str | os.PathLike[str]) -> Scan:
    """Open a scan directory written by :func:`fclens.scan` (finished or not)."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ScanError(f"{directory} is not a scan (no {MANIFEST}); run `fclens scan SOURCE --out {directory}` first")
    manifest = _read_manifest(path)
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ScanError(
            f"{directory} has scan schema version {version}; this fclens reads up to {SCHEMA_VERSION}: upgrade fclens"
        )
    if not (directory / HEAD_FILE).is_file():
        raise ScanError(f"{directory} has no {HEAD_FILE}; the scan is incomplete: rerun it")
    return Scan(directory, manifest)
