"""fclens: what the final fully-connected layer of an image classifier has learned, and where it looks.

Implements Siddhartha, "An interpretation of the final fully connected layer" (arXiv 2205.11908)::

    import fclens
    model = fclens.load_model()                       # EfficientNet-Lite0, ImageNet, offline
    fit = fclens.fit_ald(model.head.weight)           # does each class follow an ALD?
    tree = fclens.split_tree(model.head.weight[285])  # the recursive split of one class
    exp = fclens.explain(model, fclens.sample_image("chelsea"))  # one image: one Explanation
    exp.discriminative.map, exp.confusing.score
    fclens.report.save_explanation(exp, "out/")       # chain figure, maps.npz, explanation.json

Names are imported on first use (PEP 562), so that ``import fclens`` and ``fclens --help`` do not pay
for torch, timm and matplotlib before something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fclens.ald import ALDFit, MLEFit, PartFit, RegressionFit, fit_ald, regression_fit
    from fclens.atlasing import Atlas, atlas
    from fclens.batch import BatchResult, BatchRunner
    from fclens.edits.evaluate import Features, HeadEvaluation, evaluate_head, evaluate_heads, read_features
    from fclens.edits.layer import FinalLayer
    from fclens.edits.pair import (
        CausalTable,
        PairLayer,
        causal_test,
        pair_edit,
        pair_neurons,
        select_neurons,
        split_rows,
    )
    from fclens.edits.prior import PriorLoss, adjust_head, fit_head
    from fclens.edits.rebalance import Rebalance, rebalance
    from fclens.errors import FclensError
    from fclens.explaining import Contrast, Explanation, NodeExplanation, Prediction, explain
    from fclens.head import Head, find_head
    from fclens.images import ImageError, Preprocessing, load_image, sample_folder, sample_image
    from fclens.integrations.fiftyone import to_fiftyone
    from fclens.maps import MAP_KINDS, register_map
    from fclens.models import Classifier, ModelError, load_model
    from fclens.options import EXPLAIN_DEFAULTS, RUNNER_UP, SCAN_DEFAULTS, Options
    from fclens.pruning import PruneCurve, PrunePoint, prune, prune_curve
    from fclens.scanning import LocalEngine, RayEngine, Scan, ScanError, read_scan, scan
    from fclens.tree import Node, SplitTree, split_tree

__version__ = "0.1.0"

_SOURCES = {
    "fclens.ald": ("ALDFit", "MLEFit", "PartFit", "RegressionFit", "fit_ald", "regression_fit"),
    "fclens.atlasing": ("Atlas", "atlas"),
    "fclens.batch": ("BatchResult", "BatchRunner"),
    "fclens.edits.evaluate": (
        "Features",
        "HeadEvaluation",
        "evaluate_head",
        "evaluate_heads",
        "read_features",
    ),
    "fclens.edits.layer": ("FinalLayer",),
    "fclens.edits.pair": (
        "CausalTable",
        "PairLayer",
        "causal_test",
        "pair_edit",
        "pair_neurons",
        "select_neurons",
        "split_rows",
    ),
    "fclens.edits.prior": ("PriorLoss", "adjust_head", "fit_head"),
    "fclens.edits.rebalance": ("Rebalance", "rebalance"),
    "fclens.errors": ("FclensError",),
    "fclens.explaining": ("Contrast", "Explanation", "NodeExplanation", "Prediction", "explain"),
    "fclens.head": ("Head", "find_head"),
    "fclens.images": ("ImageError", "Preprocessing", "load_image", "sample_folder", "sample_image"),
    "fclens.integrations.fiftyone": ("to_fiftyone",),
    "fclens.maps": ("MAP_KINDS", "register_map"),
    "fclens.models": ("Classifier", "ModelError", "load_model"),
    "fclens.pruning": ("PruneCurve", "PrunePoint", "prune", "prune_curve"),
    "fclens.options": ("EXPLAIN_DEFAULTS", "RUNNER_UP", "SCAN_DEFAULTS", "Options"),
    "fclens.scanning": ("LocalEngine", "RayEngine", "Scan", "ScanError", "read_scan", "scan"),
    "fclens.tree": ("Node", "SplitTree", "split_tree"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [
    "EXPLAIN_DEFAULTS",
    "MAP_KINDS",
    "RUNNER_UP",
    "SCAN_DEFAULTS",
    "ALDFit",
    "Atlas",
    "BatchResult",
    "BatchRunner",
    "CausalTable",
    "Classifier",
    "Contrast",
    "Explanation",
    "FclensError",
    "Features",
    "FinalLayer",
    "Head",
    "HeadEvaluation",
    "ImageError",
    "LocalEngine",
    "MLEFit",
    "ModelError",
    "Node",
    "NodeExplanation",
    "Options",
    "PairLayer",
    "PartFit",
    "Prediction",
    "Preprocessing",
    "PriorLoss",
    "PruneCurve",
    "PrunePoint",
    "RayEngine",
    "Rebalance",
    "RegressionFit",
    "Scan",
    "ScanError",
    "SplitTree",
    "adjust_head",
    "atlas",
    "causal_test",
    "evaluate_head",
    "evaluate_heads",
    "explain",
    "find_head",
    "fit_ald",
    "fit_head",
    "load_image",
    "load_model",
    "pair_edit",
    "pair_neurons",
    "prune",
    "prune_curve",
    "read_features",
    "read_scan",
    "rebalance",
    "register_map",
    "regression_fit",
    "sample_folder",
    "sample_image",
    "scan",
    "select_neurons",
    "split_rows",
    "split_tree",
    "to_fiftyone",
]


def __getattr__(name: str) -> Any:
    """``fclens.NAME``: a public name, imported from its module on first use; else a submodule."""
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(_MODULE_OF[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
