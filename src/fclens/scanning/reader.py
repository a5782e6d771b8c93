"""Reading a scan: :class:`Scan` is the one reader of a scan's rows, features and maps.

Built on ``pyarrow.dataset``, so that a pass reads only the columns (and rows) it needs: the atlas,
pruning, the edits and a user's own queries all read through it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from fclens import deprecation
from fclens.classes import ClassNames
from fclens.errors import as_path, described
from fclens.layer import FinalLayer
from fclens.scanning.features import Features
from fclens.scanning.manifest import (
    _V1_NAMES,
    HEAD_FILE,
    MANIFEST,
    Manifest,
    ScanError,
    manifest_path,
    read_manifest,
    shard_paths,
)
from fclens.scanning.schema import CLASS_NAMES, class_name_column, scan_schema

__all__ = ["IncompleteScanWarning", "RowMaps", "Scan", "as_features", "as_scan", "read_scan"]


class IncompleteScanWarning(UserWarning):
    """A reader works on a scan that did not finish: its results cover only the rows present."""


@dataclass(frozen=True)
class RowMaps:
    """One image's maps as scanned: ``node_path`` (the target tree's nodes, pre-order), ``node_map``
    (n, h, w) float32 in that order (the scan's map kind) and ``contrast_map`` (h, w) float32: where the
    image argues for the rival over the target."""

    node_path: list[str]
    node_map: np.ndarray
    contrast_map: np.ndarray


@dataclass
class Scan:
    """A scan directory, read: its :class:`Manifest`, its final layer and its rows.

    Read rows with :meth:`rows` (a table of the columns asked for) or :meth:`batches` (the same, a
    bounded piece at a time); the stored features with :meth:`read_features`, the maps of chosen images
    with :meth:`maps`; ``table`` loads every column of every row, maps included. Rows of a scan made
    before schema version 3 get its class-name columns too, from the manifest's ``class_names``.
    """

    directory: Path
    manifest: Manifest
    _head: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        counts = self.manifest.counts
        state = "complete" if self.manifest.complete else "incomplete"
        features = ", features" if self.has_features else ""
        return f"Scan({str(self.directory)!r}: {counts.get('ok', 0)} of {counts.get('images', 0)} images, {state}{features})"

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
        table = self.dataset.to_table(columns=self._stored(columns), filter=_where(ok_only, filter))
        table = self._named(table, columns)
        return table.sort_by("index") if "index" in table.column_names else table

    def batches(
        self, columns: Sequence[str], *, ok_only: bool = False, filter: ds.Expression | None = None
    ) -> Iterator[pa.Table]:
        """The same rows a bounded piece at a time, in no set order: the unit of memory of a pass."""
        for batch in self.dataset.to_batches(columns=self._stored(columns), filter=_where(ok_only, filter)):
            if batch.num_rows:
                yield self._named(pa.Table.from_batches([batch]), columns)

    @cached_property
    def _derived(self) -> dict[str, str]:
        """The class-name columns the shards lack (scans before schema version 3), by their index column."""
        stored = self.dataset.schema.names
        return {name: index for name, index in CLASS_NAMES.items() if name not in stored and index in stored}

    def _stored(self, columns: Sequence[str] | None) -> list[str] | None:
        """The columns to read from the shards for ``columns``: a derived name's index column in its place."""
        names = _names(columns)
        if names is None or not self._derived:
            return names
        return list(dict.fromkeys(self._derived.get(name, name) for name in names))

    def _named(self, table: pa.Table, columns: Sequence[str] | None) -> pa.Table:
        """``table`` with the derived class-name columns asked for, each beside its index column."""
        if not self._derived:
            return table
        class_names = pa.array(self.class_names, pa.string())
        for name, index in self._derived.items():
            if columns is None or name in columns:
                where = table.schema.get_field_index(index) + 1
                table = table.add_column(where, name, class_name_column(table.column(index), class_names))
        return table if columns is None else table.select(_names(columns))

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

    @cached_property
    def layer(self) -> FinalLayer:
        """The final layer as scanned (the same numbers as :attr:`weight` and :attr:`bias`, as tensors)."""
        return FinalLayer.of((self.weight, self.bias))

    @property
    def num_features(self) -> int:
        """D, the inputs of the final layer."""
        return int(self.weight.shape[1])

    def class_index(self, value: int | str) -> int:
        """A class of the scan by index or name (:mod:`fclens.classes`'s one rule) → its index."""
        return self._classes.index(value)

    @cached_property
    def _classes(self) -> ClassNames:
        return ClassNames(self.manifest.class_names, owner=f"the scan {self.directory}")

    def require_features(self) -> None:
        """Refuse, in one line, work that needs the features on a scan made without them."""
        if not self.has_features:
            problem = f"{self.directory} was scanned without features"
            raise ScanError(
                f"{problem}; rescan it with features=True",
                cli=f"{problem}; rescan it with fclens scan --features",
            )

    def read_features(self, labelled: bool = False, rows: Any = None) -> Features:
        """The stored features of the ``ok`` rows (``labelled``: the labelled ones; ``rows``: those source
        indices), held in memory with the scan's class names, layer and tree shape: every edit takes them
        in place of the scan, so that the shards are read once."""
        return Features.read(self, labelled=labelled, rows=rows)

    def maps(self, indices: Iterable[int]) -> dict[int, RowMaps]:
        """The maps of the ``ok`` rows with these source indices, in one filtered read of only those rows
        (what a page draws, never the whole table); an index that is not there is left out."""
        wanted = ds.field("index").isin(pa.array(sorted({int(i) for i in indices}), pa.int64()))
        found: dict[int, RowMaps] = {}
        h, w = self.grid
        columns = ["index", "node_path", "node_map", "contrast_map"]
        for table in self.batches(columns, ok_only=True, filter=wanted):
            counts = pc.list_value_length(table.column("node_path")).to_numpy()
            maps = _floats(pc.list_flatten(pc.list_flatten(table.column("node_map"))))
            maps = np.split(maps.reshape(int(counts.sum()), h, w), np.cumsum(counts)[:-1])
            contrast = _floats(pc.list_flatten(table.column("contrast_map"))).reshape(table.num_rows, h, w)
            for i, (index, paths) in enumerate(
                zip(table.column("index").to_pylist(), table.column("node_path").to_pylist(), strict=True)
            ):
                found[index] = RowMaps(paths, maps[i], contrast[i])
        return found

    def features(self) -> np.ndarray:
        """Deprecated: ``read_features().z.numpy()``."""
        deprecation.warn("Scan.features()", "scan.read_features().z (a Features, with labels and index)")
        return self.read_features().z.numpy()

    def pred_probs(self) -> np.ndarray:
        """softmax(z Wᵀ + b) of the scanned layer on the stored features: (N_ok, C) float32, one row per
        ``ok`` row by ``index`` (the rows of :meth:`read_features`), one column per class in ``class_names``
        order, each row summing to 1: what cleanlab calls ``pred_probs``. The stored z are float16, so
        these can differ from the scan's ``prob`` (from float32 z) in the fourth decimal."""
        import torch

        self.require_features()
        return torch.softmax(self.layer.logits(self.read_features().z), dim=1).numpy()

    def node_maps(self, row: int) -> np.ndarray:
        """Deprecated: ``maps([index])[index].node_map`` (by the image's index, not its row position)."""
        return self._row_maps(row, "node_maps").node_map

    def contrast_map(self, row: int) -> np.ndarray:
        """Deprecated: ``maps([index])[index].contrast_map`` (by the image's index, not its row position)."""
        return self._row_maps(row, "contrast_map").contrast_map

    def _row_maps(self, row: int, name: str) -> RowMaps:
        deprecation.warn(
            f"Scan.{name}(row)", "scan.maps([index])[index] (by the image's index)", stacklevel=4
        )
        index = self.rows(["index"]).column("index")[row].as_py()
        return self.maps([index])[index]

    def locate(self, path: str) -> Path:
        """Where a row's image is now: the stored path where it exists. Else a relative one (version 1
        stored paths relative to the folder the scan ran in) is tried from the folders above the recorded
        source and above the scan directory; an absolute one under the recorded source (images moved
        together with their scan) from the folders above the scan directory, its longest tail first, down
        to the tail that starts at the source folder's own name. The path as given when nothing is found."""
        given = Path(path)
        if given.exists():
            return given
        source = Path(self.manifest.source)
        if not given.is_absolute():
            tails, bases = [given], [*source.parents, *self.directory.resolve().parents]
        elif source.is_absolute() and given.is_relative_to(source):
            tails = [Path(*given.parts[start:]) for start in range(1, len(source.parts))]
            bases = list(self.directory.resolve().parents)
        else:
            return given
        return next((base / tail for tail in tails for base in bases if (base / tail).exists()), given)

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


def _floats(values: Any) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)


def _names(columns: Sequence[str] | None) -> list[str] | None:
    return None if columns is None else list(dict.fromkeys(columns))


def _where(ok_only: bool, filter: ds.Expression | None) -> ds.Expression | None:
    ok = ds.field("status") == "ok" if ok_only else None
    if ok is None or filter is None:
        return filter if ok is None else ok
    return ok & filter


def read_scan(directory: str | os.PathLike[str]) -> Scan:
    """Open a scan directory written by :func:`fclens.scan` (finished or not; any schema version)."""
    directory = as_path(directory, "directory")
    path = manifest_path(directory)
    if path is None:
        raise _not_a_scan(directory)
    manifest = read_manifest(path)
    if not any((directory / name).is_file() for name in (HEAD_FILE, _V1_NAMES[1])):
        raise ScanError(f"{directory} has no {HEAD_FILE}; the scan is incomplete: rerun it")
    return Scan(directory, manifest)


def as_scan(scan: Scan | str | os.PathLike[str]) -> Scan:
    """A :class:`Scan` from itself or its directory: every function that works on a data set opens its
    scan here, once, and passes the Scan down; anything else is one line of ScanError."""
    if isinstance(scan, Scan):
        return scan
    if not isinstance(scan, (str, os.PathLike)):
        raise ScanError(f"scan must be a Scan or a scan directory, got {described(scan)}")
    return read_scan(scan)


def as_features(scan: Scan | Features | str | os.PathLike[str]) -> Features:
    """The stored features of a scan (or its directory), read once; :class:`Features` as they are."""
    return scan if isinstance(scan, Features) else as_scan(scan).read_features()


def _not_a_scan(directory: Path) -> ScanError:
    """Why ``directory`` cannot be read, and the calls (or commands) that make it readable."""
    from fclens.images import IMAGE_EXTENSIONS

    if directory.is_dir():
        entries = islice((p for p in directory.rglob("*") if p.is_file()), 2000)
        if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in entries):
            problem = f"{directory} is a folder of images, not a scan; scan it first"
            return ScanError(
                f"{problem}: fclens.scan(model, {str(directory)!r}, out=SCAN), then pass SCAN",
                cli=f"{problem}: `fclens scan {directory} --out SCAN`, then `fclens atlas SCAN`",
            )
    problem = f"{directory} is not a scan (no {MANIFEST})"
    return ScanError(
        f"{problem}; make one with fclens.scan(model, source, out={str(directory)!r})",
        cli=f"{problem}; make one with `fclens scan SOURCE --out {directory}`",
    )
