"""The scan directory's layout and its manifest: what a scan holds and how it was made, read and written here.

A scan directory holds ``_manifest.json``, ``_head.safetensors`` and ``part-NNNNN.parquet`` shards
(README.md, "Scan a data set"); the leading ``_`` keeps the manifest and the head out of Parquet dataset
discovery. :class:`Manifest` is the one reading of ``_manifest.json``: every earlier release's manifest is
converted on reading (version 1 scans, named ``manifest.json`` and ``head.safetensors``, included), so
that a scan written by any fclens release reads.
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

from fclens.errors import FclensError
from fclens.options import RUNNER_UP, Options
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
"""Where a version-1 scan keeps its manifest and head (read, never written)."""
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
                old, new = before[key], after[key]
                found += [
                    f"{name}: {old.get(name)!r} then, {new.get(name)!r} now"
                    for name in dict.fromkeys([*old, *new])
                    if old.get(name) != new.get(name)
                ]
            elif before[key] != after[key]:
                found.append(f"{key}: {before[key]!r} then, {after[key]!r} now")
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
        """A manifest from its JSON, version 1 converted: its map kind, scores and tree become Options."""
        if values.get("schema_version") == 1:
            values = _from_version_1(values)
        grid = values.get("feature_grid")
        return cls(
            model=dict(values.get("model") or {}),
            source=str(values.get("source") or ""),
            class_names=list(values["class_names"]),
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


def _from_version_1(values: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept the options up to three times (``options``, ``tree``, ``map_kind``/``features``/
    ``scores``, the last with None for none); the earliest scans lack ``options``. One Options from them."""
    tree = values.get("tree") or {}
    options = dict(values.get("options") or {})
    options.setdefault("maps", [values.get("map_kind") or "activation"])
    options.setdefault("min_size", tree.get("min_size", 20))
    options.setdefault("mode", tree.get("mode", "chains"))
    options.setdefault("features", bool(values.get("features")))
    options.setdefault("scores", values.get("scores"))
    options["scores"] = options["scores"] or "none"
    options["contrast"] = RUNNER_UP
    options["maps"] = tuple(options["maps"])
    return {**values, "options": options}


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
    try:
        values = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        problem = f"{path}: cannot read the manifest ({error})"
        raise ScanError(
            f"{problem}; pass another out= directory, or force=True",
            cli=f"{problem}; use another --out, or --force",
        ) from None
    version = values.get("schema_version") if isinstance(values, dict) else None
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ScanError(
            f"{path.parent} has scan schema version {version}; this fclens reads up to {SCHEMA_VERSION}: "
            "upgrade fclens"
        )
    try:
        return Manifest.from_dict(values)
    except (KeyError, TypeError, ValueError, FclensError) as error:
        problem = f"{path}: the manifest is damaged ({error})"
        raise ScanError(
            f"{problem}; rerun the scan with force=True", cli=f"{problem}; rerun the scan with --force"
        ) from None
