"""Items → model inputs or skip reasons: the decoding both engines run, in a DataLoader worker or a Ray task.

:class:`Decoder` is the small picklable recipe (preprocessing, the user's Dataset if any, the class names
that labels are matched to) that travels to wherever decoding runs; :class:`Decoding` is a torch Dataset
of items for the local engine's DataLoader; :func:`collate` stacks a batch and :func:`batch_rows` scans it. A file that cannot be decoded
comes back as a reason instead of a tensor and becomes a skipped row: one bad image never stops a scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import pyarrow as pa
import torch
from torch.utils.data import Dataset

from fclens.classes import ClassNames
from fclens.errors import FclensError
from fclens.images import ImageError
from fclens.preprocessing import Preprocessing
from fclens.scanning.core import BatchScanner
from fclens.scanning.schema import skipped_rows
from fclens.scanning.sources import UNLABELLED, Item, decode, decode_dataset_item, label_matcher

__all__ = ["DecodedBatch", "Decoder", "Decoding", "Record", "batch_rows", "collate"]

Record = tuple[Item, torch.Tensor | None, str | None]
"""One decoded item: the item (with its label), its model input or None, why it was skipped or None."""

DecodedBatch = tuple[list[Item], torch.Tensor | None, list[Item], list[str]]
"""(items decoded, their stacked inputs or None, items skipped, why each was skipped)."""


@dataclass(frozen=True)
class Decoder:
    """How an item becomes a model input: files are read and preprocessed; a Dataset's element i is item i.

    ``class_names``: a Dataset's labels are matched to these (None: its labels are ignored). Every
    input must come out at the preprocessing's size: a scan stores one feature grid for all its rows.
    """

    preprocessing: Preprocessing
    dataset: Any = None
    class_names: tuple[str, ...] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of every model input, (C, H, W), C = 3 or 1 (grayscale)."""
        return (self.preprocessing.channels, *self.preprocessing.input_size)

    @cached_property
    def _labels(self) -> ClassNames:
        return label_matcher(self.class_names or ())

    def __call__(self, item: Item) -> Record:
        try:
            if self.dataset is None:
                tensor = decode(item, self.preprocessing)
            else:
                element = self.dataset[item.index]
                pair = isinstance(element, (tuple, list)) and len(element) == 2
                image, label = element if pair else (element, None)
                if self.class_names is not None and label is not None and not _missing(label):
                    item = replace(item, label=self._labels.index(label, "label", *UNLABELLED))
                tensor = decode_dataset_item(image, self.preprocessing)
        except ImageError as error:
            return item, None, error.reason
        except FclensError as error:
            return item, None, str(error)
        except Exception as error:  # the user's Dataset failed on this item: skip it, say why, go on
            return item, None, f"the dataset raised {type(error).__name__}: {' '.join(str(error).split())}"
        if tuple(tensor.shape) != self.shape:
            return (
                item,
                None,
                (
                    f"preprocessed to {tuple(tensor.shape)}, but the model's input is {self.shape}; "
                    "give every image of a data set the model's input size"
                ),
            )
        return item, tensor, None


def _missing(label: Any) -> bool:
    """A float NaN label (pandas' missing value) means no label."""
    return isinstance(label, float) and label != label


class Decoding(Dataset):
    """The items a scan still has to do, decoded by ``decoder`` (for a DataLoader's workers)."""

    def __init__(self, items: Sequence[Item], decoder: Decoder) -> None:
        self.items = list(items)
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> Record:
        return self.decoder(self.items[position])


def collate(records: Sequence[Record]) -> DecodedBatch:
    """Stack a batch's decoded images; the items that could not be decoded are set aside with their reasons."""
    decoded, tensors, skipped, reasons = [], [], [], []
    for item, tensor, reason in records:
        if tensor is None:
            skipped.append(item)
            reasons.append(reason or "could not be decoded")
        else:
            decoded.append(item)
            tensors.append(tensor)
    return decoded, torch.stack(tensors) if tensors else None, skipped, reasons


def batch_rows(scanner: BatchScanner, batch: DecodedBatch) -> list[pa.RecordBatch]:
    """A collated batch's rows: the scanned images', then the skipped ones' (the one step of both engines)."""
    decoded, inputs, skipped, reasons = batch
    parts = [] if inputs is None else [scanner(inputs, decoded)]
    if skipped:
        parts.append(skipped_rows(skipped, reasons, scanner.schema, scanner.class_names))
    return parts
