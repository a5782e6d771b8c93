"""Reading what ``fclens atlas`` wrote: its JSON, and whether an edit of the causal test changed anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(out: Path) -> dict[str, Any]:
    return json.loads((out / "atlas.json").read_text("utf-8"))


def unchanged(after: dict[str, Any], before: dict[str, Any]) -> bool:
    """The JSON's figures of an edit that changed no error and no accuracy (null: no images either way)."""
    keys = ("errors_kj", "errors_jk", "accuracy_k", "accuracy_j", "accuracy_other")
    return all(after[key] == before[key] for key in keys)
