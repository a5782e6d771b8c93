"""Writing a scan: rows collected into Parquet shards, each written atomically as it completes.

A shard appears whole or not at all (written beside its name, then renamed), and the set of finished
images is read back from the shards themselves, so a scan killed at any moment resumes without losing an
image or writing one twice. ``fingerprint`` refuses a rerun of another scan into the same directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fclens.io import atomic_write_bytes, atomic_write_text
from fclens.scanning.manifest import (
    _V1_NAMES,
    HEAD_FILE,
    MANIFEST,
    Manifest,
    ScanError,
    manifest_path,
    read_manifest,
    shard_number,
    shard_paths,
)
from fclens.scanning.sources import Item

__all__ = ["ScanWriter", "shard_bytes"]


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
        self._next = 1 + max(map(shard_number, shards), default=-1)
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
            problem = f"cannot write to {self.directory}: {error.strerror or error}"
            raise ScanError(
                f"{problem}; pass another out= directory", cli=f"{problem}; choose another --out"
            ) from None
        path = manifest_path(self.directory)
        if path is None:
            if shard_paths(self.directory):
                problem = f"{self.directory} holds shards but no manifest"
                raise ScanError(
                    f"{problem}; pass another out= directory, or force=True",
                    cli=f"{problem}; use another --out, or --force",
                )
            return
        if force:
            for stale in [*shard_paths(self.directory), *(self.directory / name for name in _V1_NAMES)]:
                stale.unlink(missing_ok=True)
            return
        differences = read_manifest(path).differences(self.manifest)
        if differences:
            problem = f"{self.directory} holds another scan ({'; '.join(differences)})"
            raise ScanError(
                f"{problem}; pass another out= directory, or force=True to start over",
                cli=f"{problem}; use another --out, or --force to start over",
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
