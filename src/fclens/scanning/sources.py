"""What a scan reads: folders, CSV/Parquet lists and torch Datasets, turned into numbered items.

Every image of a source becomes an :class:`Item` whose ``index`` is its position in the source, so that a
rerun can tell which images are finished whatever order the workers deliver them in. Labels come from
class-name subfolders or a list's ``label`` column and are matched to the model's class names here,
before any image is decoded: a label that matches no class stops the scan with its name and the closest
classes, not after an hour of work.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fclens.errors import FclensError
from fclens.images import (
    IMAGE_EXTENSIONS,
    ImageError,
    Preprocessing,
    image_from_array,
    iter_image_paths,
    load_image,
)

__all__ = ["Item", "decode", "decode_dataset_item", "match_label", "resolve_source"]

"""``auto``: labels from class-name subfolders or a list's ``label`` column; ``none``: no labels."""

_LIST_SUFFIXES = (".csv", ".parquet")
_CLOSE = 0.7
"""How alike (difflib's ratio) a class name must be to a label to be offered as what was meant."""
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
    matcher = _LabelMatcher(class_names)
    items = []
    for position, file in enumerate(files):
        parts = file.relative_to(folder).parts
        label = matcher(parts[0], "subfolder") if with_labels and len(parts) > 1 else None
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
            f"{path}: cannot read the list ({_first_line(error)}); check that it is a valid "
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
    matcher = _LabelMatcher(class_names)
    items = []
    for position, (file, label) in enumerate(zip(paths, given, strict=True)):
        if file is None or not str(file).strip():
            raise FclensError(f"{path}: row {position + 1} has an empty path; every row needs one")
        file = Path(str(file))
        label = None if label is None or str(label).strip() == "" else matcher(label, "label")
        items.append(Item(position, os.path.abspath(path.parent / file), label))
    if not items:
        raise FclensError(f"{path}: the list has no rows")
    return items


def match_label(value: Any, class_names: Sequence[str], what: str = "label") -> int:
    """A class given as a name (exact, or ignoring case and separators) or an index → its index."""
    return _LabelMatcher(class_names)(value, what)


class _LabelMatcher:
    """Match labels to class names once per distinct value (a folder's images share their label)."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.names = list(class_names)
        self.exact = {name: i for i, name in enumerate(self.names)}
        self.loose: dict[str, int] = {}
        for i, name in enumerate(self.names):
            self.loose.setdefault(_loose(name), i)
        self.known: dict[Any, int] = {}

    def __call__(self, value: Any, what: str) -> int:
        key = value.item() if isinstance(value, (np.generic, torch.Tensor)) else value
        if key not in self.known:
            self.known[key] = self._match(key, what)
        return self.known[key]

    def _match(self, value: Any, what: str) -> int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            index = int(value)
        elif isinstance(value, str) and value.strip().isdigit() and value.strip() not in self.exact:
            index = int(value.strip())
        else:
            text = str(value)
            if text in self.exact:
                return self.exact[text]
            if _loose(text) in self.loose:
                return self.loose[_loose(text)]
            close = difflib.get_close_matches(_loose(text), list(self.loose), n=3, cutoff=_CLOSE)
            problem = f"{what} {text!r} matches no class of the model"
            fix = "rename it to a class name or index"
            if close:
                hint = "closest: " + ", ".join(repr(self.names[self.loose[c]]) for c in close)
                raise FclensError(
                    f"{problem} ({hint}); {fix}, or pass labels='none'",
                    cli=f"{problem} ({hint}); {fix}, or pass --labels none",
                )
            raise FclensError(
                f"{problem} (no class name is close; they are model.class_names); {fix}, or pass labels='none'",
                cli=f"{problem} (no class name is close; list them with `{_LIST_CLASSES}`, naming your model); "
                f"{fix}, or pass --labels none",
            )
        if not 0 <= index < len(self.names):
            raise FclensError(f"{what} {index} is out of range: the model has {len(self.names)} classes")
        return index


def _loose(name: str) -> str:
    """A class name without case and separators: "Egyptian_cat", "egyptian-cat" → "egyptiancat"."""
    return re.sub(r"[\s_\-.,']+", "", name.lower())


def _first_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


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
