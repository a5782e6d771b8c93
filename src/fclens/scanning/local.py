"""The local engine: decoding in DataLoader worker processes, overlapped with one forward per batch.

Workers decode and preprocess (the CPU-bound part) while the main process runs the model; the loader's
queue holds at most ``2 × workers`` batches, so memory stays flat however long the scan. A file that
cannot be decoded comes back as a reason instead of a tensor and becomes a skipped row: one bad image
never stops the scan.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from fclens.errors import FclensError
from fclens.images import ImageError, Preprocessing
from fclens.scanning.core import BatchScanner
from fclens.scanning.schema import skipped_rows
from fclens.scanning.sources import Item, decode, decode_dataset_item, match_label
from fclens.scanning.store import ScanWriter

__all__ = ["DecodedBatch", "Decoding", "default_workers", "run_local"]

DecodedBatch = tuple[list[Item], torch.Tensor | None, list[Item], list[str]]
"""(items decoded, their stacked inputs or None, items skipped, why each was skipped)."""


def default_workers() -> int:
    """Decode workers: the CPUs this process may use, at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


class Decoding(Dataset):
    """Items → (item with its label, model input or None, reason or None), for a DataLoader's workers.

    With ``dataset`` (a torch Dataset yielding (image, label) or image), item i is its element i and the
    label is matched to ``class_names`` here (None: labels are ignored); otherwise items are files.
    """

    def __init__(
        self,
        items: Sequence[Item],
        preprocessing: Preprocessing,
        dataset: Any = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.items = list(items)
        self.preprocessing = preprocessing
        self.dataset = dataset
        self.class_names = None if class_names is None else list(class_names)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[Item, torch.Tensor | None, str | None]:
        item = self.items[position]
        try:
            if self.dataset is None:
                return item, decode(item, self.preprocessing), None
            element = self.dataset[item.index]
            image, label = element if isinstance(element, (tuple, list)) and len(element) == 2 else (element, None)
            if self.class_names is not None and label is not None and not (isinstance(label, float) and label != label):
                item = replace(item, label=match_label(label, self.class_names))
            return item, decode_dataset_item(image, self.preprocessing), None
        except ImageError as error:
            return item, None, error.reason
        except FclensError as error:
            return item, None, str(error)
        except Exception as error:  # the user's Dataset failed on this item: skip it, say why, go on
            return item, None, f"the dataset raised {type(error).__name__}: {' '.join(str(error).split())}"


def collate(records: list[tuple[Item, torch.Tensor | None, str | None]]) -> DecodedBatch:
    """Stack the decoded images; the first one's shape is the batch's, another shape is skipped."""
    shape = next((tensor.shape for _, tensor, _ in records if tensor is not None), None)
    decoded, tensors, skipped, reasons = [], [], [], []
    for item, tensor, reason in records:
        if tensor is not None and tensor.shape != shape:
            tensor, reason = None, (
                f"preprocessed to {tuple(tensor.shape)}, but the batch is {tuple(shape)}; "
                "give every image of a data set the same size"
            )
        if tensor is None:
            skipped.append(item)
            reasons.append(reason or "could not be decoded")
        else:
            decoded.append(item)
            tensors.append(tensor)
    return decoded, torch.stack(tensors) if tensors else None, skipped, reasons


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # a decode worker is one core; torch's own threads would fight the model's


def run_local(
    scanner: BatchScanner,
    decoding: Decoding,
    writer: ScanWriter,
    workers: int,
    on_batch: Callable[[int], None] = lambda count: None,
) -> None:
    """Decode with ``workers`` processes (0: in this one), scan each batch, hand the rows to ``writer``."""
    cuda = scanner.classifier.device.type == "cuda"
    loader = DataLoader(
        decoding,
        batch_size=scanner.options.batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=cuda,
        worker_init_fn=_one_thread if workers else None,
        prefetch_factor=2 if workers else None,
    )
    for decoded, inputs, skipped, reasons in loader:
        if inputs is not None:
            writer.add(scanner(inputs, decoded))
        if skipped:
            writer.add(skipped_rows(skipped, reasons, scanner.schema))
        on_batch(len(decoded) + len(skipped))
