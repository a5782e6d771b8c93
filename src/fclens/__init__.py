"""fclens: what the final fully-connected layer of an image classifier has learned, and where it looks.

Implements Siddhartha, "An interpretation of the final fully connected layer" (arXiv 2205.11908)::

    import fclens
    model = fclens.load_model()                       # EfficientNet-Lite0, ImageNet, offline
    fit = fclens.fit_ald(model.head.weight)           # does each class follow an ALD?
    tree = fclens.split_tree(model.head.weight[285])  # the recursive split of one class
    exp = fclens.explain(model, fclens.sample_image("chelsea"))  # one image: one Explanation
    scan = fclens.scan(model, "photos/", out="scan/", features=True)   # a data set: one table
    found = fclens.atlas(scan)                        # per class: rivals, nodes, images
    layer = fclens.fit_layer(scan, "pg-prior")        # a FinalLayer, judged by fclens.evaluate

One calling convention: image work takes the model first (``explain``, ``scan``); data-set work takes the
scan first (a :class:`Scan`, or its directory, opened once); what judges or changes a final layer takes it
as one type, :class:`FinalLayer`.

The public names are written once, in ``__init__.pyi`` beside this file: type checkers read it, and this
module reads the same lines to import each name from its module on first use (PEP 562, as SPEC 1's
lazy_loader does), so that ``import fclens`` and ``fclens --help`` do not pay for torch, timm and
matplotlib before something needs them. Names of 0.1 that moved into submodules or were renamed still
work for one release, with a DeprecationWarning naming the new spelling.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

__version__ = "0.2.0"


def _public_names() -> dict[str, tuple[str, str]]:
    """Each public name → (its module, its name there), read from the stub's ``from M import N as N``."""
    stub = ast.parse(Path(__file__).with_suffix(".pyi").read_text("utf-8"))
    return {
        alias.asname or alias.name: (node.module, alias.name)
        for node in stub.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }


_PUBLIC = _public_names()
__all__ = sorted(_PUBLIC)

_RENAMED = {
    "evaluate_head": "fclens.edits.evaluate",
    "evaluate_heads": "fclens.edits.evaluate",
    "read_features": "fclens.edits.evaluate",
    "fit_head": "fclens.edits.prior",
    "adjust_head": "fclens.edits.prior",
    "split_rows": "fclens.edits.pair",
}
"""0.1's top-level functions that 0.2 renamed: each still works, and warns when called."""

_MOVED = {
    "fclens.ald": ("MLEFit", "PartFit", "RegressionFit", "regression_fit"),
    "fclens.batch": ("BatchResult", "BatchRunner"),
    "fclens.edits.pair": ("PairLayer", "pair_neurons", "select_neurons"),
    "fclens.explaining": ("Contrast", "NodeExplanation", "Prediction"),
    "fclens.head": ("Head", "find_head"),
    "fclens.images": ("ImageError",),
    "fclens.maps": ("MAP_KINDS", "register_map"),
    "fclens.models": ("ModelError",),
    "fclens.options": ("EXPLAIN_DEFAULTS", "RUNNER_UP", "SCAN_DEFAULTS"),
    "fclens.pruning": ("PrunePoint",),
    "fclens.scanning": ("LocalEngine", "RayEngine", "ScanError"),
    "fclens.scanning.features": ("Features",),
    "fclens.tree": ("Node",),
}
"""0.1's top-level names that 0.2 keeps in their submodules only (still importable from there)."""


def __getattr__(name: str) -> Any:
    """``fclens.NAME``: a public name, imported from its module on first use; a name of 0.1, with a
    DeprecationWarning; else a submodule."""
    if name in _PUBLIC:
        module, attribute = _PUBLIC[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    if name in _RENAMED:
        return getattr(importlib.import_module(_RENAMED[name]), name)
    moved = _moved(name)
    if moved is not None:
        from fclens import deprecation

        module, attribute = moved
        deprecation.warn(f"fclens.{name}", f"{module}.{attribute}")
        return getattr(importlib.import_module(module), attribute)
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _moved(name: str) -> tuple[str, str] | None:
    """Where a 0.1 top-level name lives now: (module, name)."""
    if name == "HeadEvaluation":
        return "fclens.edits.evaluate", "Evaluation"
    return next(((module, name) for module, names in _MOVED.items() if name in names), None)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
