"""What a scan reads: folders, CSV/Parquet lists and torch Datasets, turned into numbered items.

Every image of a source becomes an :class:`Item` whose ``index`` is its position in the source, so that a
rerun can tell which images are finished whatever order the workers deliver them in. Labels come from
class-name subfolders or a list's ``label`` column and are matched to the model's class names here,
before any image is decoded: a label that matches no class stops the scan with its name and the closest
classes, not after an hour of work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fclens.classes import ClassNames
from fclens.errors import FclensError, first_line
from fclens.images import IMAGE_EXTENSIONS, ImageError, image_from_array, iter_image_paths, load_image
from fclens.preprocessing import Preprocessing

__all__ = ["UNLABELLED", "Item", "decode", "decode_dataset_item", "label_matcher", "resolve_source"]

"""``auto``: labels from class-name subfolders or a list's ``label`` column; ``none``: no labels."""

_LIST_SUFFIXES = (".csv", ".parquet")
UNLABELLED = (
    "rename it to a class name or index, or pass labels='none'",
    "rename it to a class name or index, or pass --labels none",
)
"""What to do about a label that names no class, in Python's words and the command's: the end of that error."""
_LIST_CLASSES = 'python -c "import fclens; print(fclens.load_model().class_names)"'


@dataclass(frozen=True)
class Item:
    """One image of a source: its position, where it is (a file's absolute, normalised path, so that any
    later reader finds it from any working directory), and its class index when known."""

    index: int
    path: str
    label: int | None = None


def resolve_source(
    source: str | os.PathLike[str], class_names: Sequence[str], labels: str = "auto"
) -> list[Item]:
    """The items of a folder (searched recursively) or of a CSV/Parquet list with a ``path`` column.

    In a folder, an image inside a subfolder gets the subfolder's class (its first level below the folder);
    images directly in the folder have no label. A list's relative paths are relative to the list file.
    Paths come back absolute and normalised (``..`` resolved, symbolic links kept).
    """
    path = Path(source)
    if path.is_dir():
        return _folder_items(path, class_names, labels == "auto")
    if path.suffix.lower() in _LIST_SUFFIXES:
        return _list_items(path, class_names, labels == "auto")
    if not path.exists():
        raise FclensError(f"{path}: no such file or folder; give a folder of images or a .csv/.parquet list")
    raise FclensError(f"{path}: not a folder or a .csv/.parquet list of images; give one of those")


def _folder_items(folder: Path, class_names: Sequence[str], with_labels: bool) -> list[Item]:
    files = iter_image_paths(folder)
    if not files:
        raise FclensError(
            f"{folder}: no image files found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    matcher = label_matcher(class_names)
    items = []
    for position, file in enumerate(files):
        parts = file.relative_to(folder).parts
        label = matcher.index(parts[0], "subfolder", *UNLABELLED) if with_labels and len(parts) > 1 else None
        items.append(Item(position, os.path.abspath(file), label))
    return items


def _list_items(path: Path, class_names: Sequence[str], with_labels: bool) -> list[Item]:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".csv":
            table = pa_csv.read_csv(
                path,
                convert_options=pa_csv.ConvertOptions(
                    column_types={"path": pa.string(), "label": pa.string()}
                ),
            )
        else:
            table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise FclensError(
            f"{path}: cannot read the list ({first_line(error)}); check that it is a valid "
            f"{path.suffix[1:].upper()} file"
        ) from None
    if "path" not in table.column_names:
        raise FclensError(
            f"{path}: the list has no 'path' column (columns: {', '.join(table.column_names) or 'none'}); "
            "add a header line with 'path' and optionally 'label'"
        )
    paths = table.column("path").to_pylist()
    given = (
        table.column("label").to_pylist()
        if with_labels and "label" in table.column_names
        else [None] * len(paths)
    )
    matcher = label_matcher(class_names)
    items = []
    for position, (file, label) in enumerate(zip(paths, given, strict=True)):
        if file is None or not str(file).strip():
            raise FclensError(f"{path}: row {position + 1} has an empty path; every row needs one")
        file = Path(str(file))
        label = (
            None if label is None or str(label).strip() == "" else matcher.index(label, "label", *UNLABELLED)
        )
        items.append(Item(position, os.path.abspath(path.parent / file), label))
    if not items:
        raise FclensError(f"{path}: the list has no rows")
    return items


def label_matcher(class_names: Sequence[str]) -> ClassNames:
    """The model's class names, looked up by :mod:`fclens.classes`'s one rule (each distinct label once)."""
    return ClassNames(
        class_names,
        listing="they are model.class_names",
        cli_listing=f"list them with `{_LIST_CLASSES}`, naming your model",
    )


# --- decoding ------------------------------------------------------------------------------------------


def decode(item: Item, preprocessing: Preprocessing) -> torch.Tensor:
    """The model input of one file, (C, H, W) float32; raises :class:`ImageError` saying why not."""
    return preprocessing(load_image(item.path))


def decode_dataset_item(image: Any, preprocessing: Preprocessing) -> torch.Tensor:
    """A Dataset's image as a model input: a tensor is taken as preprocessed (C, H, W); else decoded."""
    if isinstance(image, torch.Tensor):
        c = preprocessing.channels
        if image.ndim != 3 or image.shape[0] != c or not image.is_floating_point():
            raise ImageError(
                f"tensor of shape {tuple(image.shape)} and dtype {image.dtype}: expected a preprocessed "
                f"float ({c}, H, W); yield a PIL image or an array to have it preprocessed"
            )
        return image.detach().float()
    if isinstance(image, (str, os.PathLike)):
        return preprocessing(load_image(image))
    if isinstance(image, np.ndarray):
        return preprocessing(image_from_array(image))
    if isinstance(image, Image.Image):
        return preprocessing(image)
    raise ImageError(
        f"a {type(image).__name__} is not an image; yield a PIL image, an array, a path or a tensor"
    )
