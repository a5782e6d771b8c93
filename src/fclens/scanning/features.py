"""A scan's stored features (``fclens scan --features``): read in bounded batches, or held in memory.

z, the pooled input of the final layer, is all an edit of the final layer needs to be judged without the
backbone. :func:`feature_batches` streams (index, z, label) a bounded batch at a time, for passes that must
work on any size; :class:`Features` holds them in memory together with what the edits need from the scan —
its class names, the layer it scanned and the shape of its split trees — so that nothing reopens the scan.
Read them with :meth:`fclens.Scan.read_features`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fclens.errors import FclensError
from fclens.layer import FinalLayer
from fclens.options import EXPLAIN_DEFAULTS

if TYPE_CHECKING:
    from fclens.scanning.reader import Scan

__all__ = ["CHUNK", "Features", "class_counts", "feature_batches", "label_array"]

CHUNK = 8192
"""Rows per batch: bounds the memory of one batch's logits (rows × classes × layers)."""

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


def feature_batches(scan: Scan, labelled: bool = False, rows: Any = None) -> Iterator[Batch]:
    """(index, z, label) of the scan's ``ok`` rows: int64 (n,), float32 (n, D), int64 (n,) with −1 for
    no label, in batches of :data:`CHUNK` rows (the last one smaller). The shards' batches are joined or
    split to that size: small products run slowly, and one batch's logits must stay bounded.
    ``labelled`` keeps the labelled rows only, ``rows`` (source indices) those rows only."""
    scan.require_features()
    classes = len(scan.class_names)
    wanted = None if rows is None else np.asarray(rows, dtype=np.int64)
    pending: list[Batch] = []
    held = 0
    for table in scan.batches(["index", "label", "features"], ok_only=True):
        label = label_array(table.column("label").to_numpy(zero_copy_only=False), table.num_rows)
        if (label >= classes).any():
            raise FclensError(f"{scan.directory} has labels beyond its {classes} classes")
        column = table.column("features").combine_chunks()
        z = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float32)
        index = table.column("index").to_numpy()
        keep = (label >= 0) if labelled else np.ones(len(label), bool)
        if wanted is not None:
            keep &= np.isin(index, wanted)
        if not keep.all():
            index, z, label = index[keep], z[keep], label[keep]
        pending.append((index, z, label))
        held += len(index)
        while held >= CHUNK:
            index, z, label = _joined(pending)
            yield index[:CHUNK], z[:CHUNK], label[:CHUNK]
            pending, held = [(index[CHUNK:], z[CHUNK:], label[CHUNK:])], held - CHUNK
    if held:
        yield _joined(pending)


def _joined(parts: list[Batch]) -> Batch:
    """Batches of (index, z, label) as one."""
    index, z, label = (np.concatenate(column) for column in zip(*parts, strict=True))
    return index, z, label


@dataclass(frozen=True)
class Features:
    """A scan's ``ok`` rows held in memory, and what the edits need to know of the scan.

    ``index`` (N,) int64: the rows' positions in the source; ``z`` (N, D) float32: the pooled input of the
    final layer; ``label`` (N,) int64, −1 for none. ``class_names``; ``layer``: the final layer the scan
    recorded (None for features made from arrays without one); ``min_size`` and ``mode``: the scan's split
    trees. N × D × 4 bytes: 256 MB for 50,000 × 1,280. Evaluate many layers on it, or on a part of it
    (:meth:`select`), and choose rows with :meth:`split`.
    """

    index: np.ndarray
    z: torch.Tensor
    label: torch.Tensor
    class_names: list[str] = field(default_factory=list)
    layer: FinalLayer | None = None
    min_size: int = EXPLAIN_DEFAULTS.min_size
    mode: str = EXPLAIN_DEFAULTS.mode

    def __repr__(self) -> str:
        labelled = int((self.label >= 0).sum())
        return f"Features({len(self)} rows × {self.z.shape[1]}, {labelled} labelled, {len(self.class_names)} classes)"

    def __post_init__(self) -> None:
        if not (
            isinstance(self.index, np.ndarray)
            and isinstance(self.z, torch.Tensor)
            and isinstance(self.label, torch.Tensor)
            and self.z.ndim == 2
            and len(self.index) == len(self.z) == len(self.label)
        ):
            raise FclensError(
                "Features holds (index array, z tensor (N, D), label tensor); make them with "
                "Features.of(z, label, index) or Scan.read_features()"
            )

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def of(
        cls,
        z: Any,
        label: Any = None,
        index: Any = None,
        *,
        class_names: Sequence[str] | None = None,
        layer: Any = None,
    ) -> Features:
        """From arrays: ``label`` with NaN, None or a negative number for unknown (default: all unknown);
        ``index`` defaults to 0 … N−1; ``layer`` anything :meth:`FinalLayer.of` reads."""
        values = torch.as_tensor(np.ascontiguousarray(z, dtype=np.float32))
        if values.ndim != 2:
            raise FclensError(f"features must be (N, D), got shape {tuple(values.shape)}")
        n = values.shape[0]
        known = np.full(n, -1, np.int64) if label is None else label_array(label, n)
        where = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, np.int64).reshape(-1)
        final = None if layer is None else FinalLayer.of(layer)
        if final is not None and final.num_features != values.shape[1]:
            raise FclensError(
                f"features have shape {tuple(values.shape)}; the layer takes {final.num_features} inputs per image"
            )
        names = list(class_names) if class_names is not None else []
        if not names and final is not None:
            names = [str(k) for k in range(final.num_classes)]
        return cls(where, values, torch.from_numpy(known), names, final)

    @classmethod
    def read(cls, scan: Scan, labelled: bool = False, rows: Any = None) -> Features:
        """A scan's ``ok`` rows (``labelled``: the labelled ones; ``rows``: those source indices) read
        into memory once."""
        parts = list(feature_batches(scan, labelled=labelled, rows=rows))
        if parts:
            index, z, label = _joined(parts)
        else:
            index, z, label = np.zeros(0, np.int64), np.zeros((0, scan.num_features), np.float32), np.zeros(0)
        options = scan.manifest.options
        return cls(
            index,
            torch.from_numpy(z),
            torch.from_numpy(label.astype(np.int64)),
            scan.class_names,
            scan.layer,
            options.min_size,
            options.mode,
        )

    def select(self, indices: Any) -> Features:
        """The rows whose ``index`` is in ``indices`` (positions in the source), in this order."""
        keep = np.isin(self.index, np.asarray(indices, dtype=np.int64))
        chosen = torch.from_numpy(keep)
        return replace(self, index=self.index[keep], z=self.z[chosen], label=self.label[chosen])

    def split(self, seed: int = 0, fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """(selection rows, held-out rows): the rows' source indices cut in two, seeded and stratified.

        Each label (−1, no label, is one more stratum) puts ``fraction`` of its rows, rounded half up, in
        the selection half, chosen at random by ``seed``; the two halves are disjoint, cover the rows, and
        come sorted. Choose on the first, judge on the second: a figure measured on the rows that chose
        would flatter the rule that chose them.
        """
        if not 0 < fraction < 1:
            raise FclensError(f"the selection fraction must be between 0 and 1, got {fraction}")
        rng = np.random.default_rng(seed)
        label = self.label.numpy()
        chosen = []
        for value in np.unique(label):
            rows = self.index[label == value]
            chosen.append(rng.permutation(rows)[: int(np.floor(fraction * len(rows) + 0.5))])
        select = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
        return select, np.setdiff1d(self.index, select)

    def chunks(self) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """(index, z, label) :data:`CHUNK` rows at a time."""
        for start in range(0, len(self), CHUNK):
            end = start + CHUNK
            yield self.index[start:end], self.z[start:end], self.label[start:end]


def label_array(labels: Any, n: int) -> np.ndarray:
    """Labels as int64 with −1 for unknown (None, NaN or negative)."""
    values = np.asarray(labels, dtype=np.float64).reshape(-1)
    if values.shape != (n,):
        raise FclensError(f"{values.size} labels for {n} images")
    return np.where(np.isfinite(values) & (values >= 0), values, -1).astype(np.int64)


def class_counts(scan: Scan) -> np.ndarray:
    """How many labelled ``ok`` rows each class has in a scan: (C,) int64."""
    labels = scan.rows(["label"], ok_only=True).column("label").drop_null()
    values = labels.combine_chunks().to_numpy() if hasattr(labels, "combine_chunks") else labels.to_numpy()
    classes = len(scan.class_names)
    return np.bincount(values.astype(np.int64), minlength=classes)[:classes]
