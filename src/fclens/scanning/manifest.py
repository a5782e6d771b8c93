"""The scan directory's layout and its manifest: what a scan holds and how it was made, read and written here.

A scan directory holds ``_manifest.json``, ``_head.safetensors`` and ``part-NNNNN.parquet`` shards
(README.md, "Scan a data set"); the leading ``_`` keeps the manifest and the head out of Parquet dataset
discovery. :class:`Manifest` is the one reading of ``_manifest.json``. Every manifest an earlier commit
could write reads (the row schema itself never changed; ``tests/fixtures`` holds a scan of each, made by
its own release):

- c2c429a (the first scan) to 284cd16 (fclens 0.1): ``manifest.json`` and ``head.safetensors``, schema 1,
  ``options`` spelt as then (``map_kind``; ``scores`` None for none; no ``contrast``), and beside them
  ``tree``, ``map_kind``, ``features``, ``scores`` and a rerun ``fingerprint``;
- 067169c to 4c67e93: the same files and copies, ``options`` spelt as today;
- 3286d7d to 6707476: ``_manifest.json`` and ``_head.safetensors``, schema 1, one ``options``;
- 3eab21a on: schema 2 (the same, with absolute image paths).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fclens import deprecation
from fclens.errors import FclensError
from fclens.formatting import differences
from fclens.options import RUNNER_UP, Options, updated_options
from fclens.scanning.schema import SCHEMA_VERSION

__all__ = [
    "HEAD_FILE",
    "MANIFEST",
    "Manifest",
    "ScanError",
    "file_sha256",
    "head_sha256",
    "manifest_path",
    "read_manifest",
    "shard_number",
    "shard_paths",
]

MANIFEST = "_manifest.json"
HEAD_FILE = "_head.safetensors"
_V1_NAMES = ("manifest.json", "head.safetensors")
"""Where a version-1 scan up to 4c67e93 keeps its manifest and head (read, never written)."""
_V1_COPIES = ("tree", "map_kind", "features", "scores", "fingerprint")
"""Keys of a version-1 manifest up to 4c67e93 that repeat its options (or its rerun fingerprint): dropped."""
_SHARD = re.compile(r"part-(\d{5,})\.parquet")


class ScanError(FclensError):
    """A scan directory that cannot be written, resumed or read (one-line message)."""


def shard_paths(directory: Path) -> list[Path]:
    """The finished shards, in the order they were written."""
    found = [path for path in directory.glob("part-*.parquet") if _SHARD.fullmatch(path.name)]
    return sorted(found, key=shard_number)


def shard_number(path: Path) -> int:
    """A shard's number: ``part-00012.parquet`` → 12."""
    return int(_SHARD.fullmatch(path.name).group(1))


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
                found += differences(before[key], after[key])
            elif key == "schema version" and before[key] != after[key]:
                found.append(
                    f"written by an earlier fclens, scan schema {before[key]} (this one writes {after[key]}): "
                    "it reads as it is, but cannot be resumed"
                )
            elif key != "schema version":
                found += differences({key: before[key]}, {key: after[key]})
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
        """A manifest from its JSON, version 1 converted. Raises KeyError, TypeError or ValueError (or
        FclensError for bad options) where the JSON is not a manifest of any release."""
        if not isinstance(values["options"], dict):
            raise TypeError("options is not a mapping")
        if values.get("schema_version") == 1:
            values = _from_version_1(values)
        names, grid = values["class_names"], values.get("feature_grid")
        if not (isinstance(names, list) and names and all(isinstance(name, str) for name in names)):
            raise TypeError("class_names is not a list of names")
        return cls(
            model=dict(values.get("model") or {}),
            source=str(values.get("source") or ""),
            class_names=names,
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

    def __getitem__(self, key: str) -> Any:
        """``scan.manifest["counts"]``, as when the manifest was a dict (fclens 0.1): deprecated."""
        values = self.to_dict()
        if key not in values:
            raise KeyError(key)
        deprecation.warn(f"scan.manifest[{key!r}]", f"scan.manifest.{key}")
        return values[key]


def _from_version_1(values: dict[str, Any]) -> dict[str, Any]:
    """Version 1 as version 2: the copies beside the options dropped, the options spelt as today (through
    :func:`fclens.options.updated_options`, the one table of old spellings), the runner-up contrast
    that every version-1 scan drew made explicit."""
    options, _ = updated_options(values["options"])
    kept = {key: value for key, value in values.items() if key not in _V1_COPIES}
    return {**kept, "options": {**options, "contrast": RUNNER_UP}}


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


def manifest_path(directory: Path) -> Path | None:
    """The manifest of the scan in ``directory`` (version 2's name, else version 1's), or None."""
    for name in (MANIFEST, _V1_NAMES[0]):
        if (directory / name).is_file():
            return directory / name
    return None


def read_manifest(path: Path) -> Manifest:
    """The manifest at ``path``, whichever release wrote it; a ScanError of one line where it cannot be read,
    is damaged (not a manifest of any release), or comes from a newer fclens."""
    try:
        values = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        problem = f"{path}: cannot read the manifest ({error})"
        raise ScanError(
            f"{problem}; pass another out= directory, or force=True",
            cli=f"{problem}; use another --out, or --force",
        ) from None
    version = values.get("schema_version") if isinstance(values, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ScanError(
            f"{path.parent} has scan schema version {version}; this fclens reads up to {SCHEMA_VERSION}: "
            "upgrade fclens"
        )
    try:
        if not isinstance(values, dict):
            raise TypeError(f"a JSON {type(values).__name__}, not an object")
        if version not in range(1, SCHEMA_VERSION + 1) or isinstance(version, bool):
            raise ValueError(f"schema_version {version!r}")
        return Manifest.from_dict(values)
    except KeyError as error:
        problem = f"{path}: the manifest is damaged (no {error.args[0]})"
        raise ScanError(
            f"{problem}; rerun the scan with force=True", cli=f"{problem}; rerun the scan with --force"
        ) from None
    except (TypeError, ValueError, FclensError) as error:
        problem = f"{path}: the manifest is damaged ({error})"
        raise ScanError(
            f"{problem}; rerun the scan with force=True", cli=f"{problem}; rerun the scan with --force"
        ) from None
