"""Deprecated: ``fclens.scanning.store`` was split into :mod:`.manifest`, :mod:`.writer` and :mod:`.reader`.

Its names still import from here, with a DeprecationWarning, for one release.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = {
    "HEAD_FILE": "manifest",
    "MANIFEST": "manifest",
    "Manifest": "manifest",
    "ScanError": "manifest",
    "file_sha256": "manifest",
    "head_sha256": "manifest",
    "shard_paths": "manifest",
    "ScanWriter": "writer",
    "shard_bytes": "writer",
    "IncompleteScanWarning": "reader",
    "Scan": "reader",
    "read_scan": "reader",
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = f"fclens.scanning.{_MOVED[name]}"
    warnings.warn(
        f"fclens.scanning.store.{name} is deprecated; import it from {module}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)
