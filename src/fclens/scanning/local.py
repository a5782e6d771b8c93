"""The local engine: decoding in DataLoader worker processes, overlapped with one forward per batch.

Workers decode and preprocess (the CPU-bound part) while the main process runs the model; the loader's
queue holds at most ``2 × workers`` batches, so memory stays flat however long the scan.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from fclens.options import at_least
from fclens.scanning.core import BatchScanner
from fclens.scanning.decoding import Decoding, batch_rows, collate
from fclens.scanning.writer import ScanWriter

__all__ = ["LocalEngine", "default_workers"]


def default_workers() -> int:
    """Decode workers: the CPUs this process may use, at most 8."""
    return max(
        1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # a decode worker is one core; torch's own threads would fight the model's


@dataclass(frozen=True)
class LocalEngine:
    """Scan in this process, with ``workers`` decode processes (0: decode here too; None: the usable CPUs, at most 8)."""

    workers: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None:
            at_least("workers", self.workers, 0)

    def run(
        self,
        scanner: BatchScanner,
        decoding: Decoding,
        writer: ScanWriter,
        on_batch: Callable[[int], None],
    ) -> None:
        """Decode ``decoding``'s items, scan each batch, hand the rows to ``writer``, report each batch's size."""
        workers = default_workers() if self.workers is None else self.workers
        loader = DataLoader(
            decoding,
            batch_size=scanner.options.batch_size,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=scanner.classifier.device.type == "cuda",
            worker_init_fn=_one_thread if workers else None,
            prefetch_factor=2 if workers else None,
        )
        for batch in loader:
            for rows in batch_rows(scanner, batch):
                writer.add(rows)
            on_batch(len(batch[0]) + len(batch[2]))
