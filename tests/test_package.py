"""The package's face: every public name resolves, lazily, to the same object as before."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import fclens

PROBE = """
import json, sys
import fclens
before = sorted(n for n in ("torch", "timm", "matplotlib") if n in sys.modules)
import fclens.explaining                   # the module that holds the function
from fclens import explain
import fclens.report
print(json.dumps({"before": before, "callable": callable(fclens.explain), "same": fclens.explain is explain,
                  "report": hasattr(fclens.report, "save_explanation")}))
"""


def test_every_public_name_resolves_and_is_listed_once():
    assert len(fclens.__all__) <= 35, "the public face is a screenful: internals stay in their modules"
    for name in fclens.__all__:
        module, attribute = fclens._PUBLIC[name]
        assert getattr(fclens, name) is getattr(importlib.import_module(module), attribute)
    assert set(fclens.__all__) <= set(dir(fclens))


# Every top-level name of 0.1 that 0.2 renamed or kept in its submodule only.
OLD_NAMES = [
    "BatchResult", "BatchRunner", "Contrast", "EXPLAIN_DEFAULTS", "Features", "Head", "HeadEvaluation",
    "ImageError", "LocalEngine", "MAP_KINDS", "MLEFit", "ModelError", "Node", "NodeExplanation", "PairLayer",
    "PartFit", "Prediction", "PrunePoint", "RUNNER_UP", "RayEngine", "RegressionFit", "SCAN_DEFAULTS",
    "ScanError", "find_head", "pair_neurons", "register_map", "regression_fit", "select_neurons",
]  # fmt: skip


@pytest.mark.parametrize("name", OLD_NAMES)
def test_a_name_of_0_1_still_resolves_with_a_warning_naming_its_home(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=rf"fclens\.{name} is deprecated.*use fclens\."):
        value = getattr(fclens, name)
    module = str(fclens._moved(name)[0])
    assert value is getattr(importlib.import_module(module), fclens._moved(name)[1])


def test_no_module_shares_its_name_with_a_public_name():
    """So ``import fclens.X`` can never replace the public ``fclens.X`` (no module-class hack needed)."""
    shared = [name for name in fclens.__all__ if importlib.util.find_spec(f"fclens.{name}") is not None]
    assert shared == []


def test_import_is_lazy_and_the_function_outlives_its_module_import():
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=True
    )
    assert json.loads(done.stdout) == {"before": [], "callable": True, "same": True, "report": True}


def test_unknown_names_are_attribute_errors():
    assert not hasattr(fclens, "no_such_thing") and not hasattr(fclens, "_private")


def test_results_never_reach_back_into_the_report():
    """Results → report, one way: no module the report reads imports fclens.report, except inside the two
    methods a notebook calls on a result (``_repr_html_`` and ``plot``), which import it when called. So
    ``import fclens`` and every computation stay free of the report (Jinja, the figures), and a result type
    still shows itself in Jupyter. The CLI and the integrations sit downstream of the report, like it."""
    package = Path(fclens.__file__).parent
    downstream = ("report", "cli", "integrations", "__main__")
    reached = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0].removesuffix(".py") in downstream:
            continue
        tree = ast.parse(path.read_text("utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            if any(name == "fclens.report" or name.startswith("fclens.report.") for name in names):
                method, owner = parents.get(node), None
                while method is not None and not isinstance(method, ast.FunctionDef):
                    method = parents.get(method)
                owner = parents.get(method) if method is not None else None
                allowed = isinstance(owner, ast.ClassDef) and method.name in ("_repr_html_", "plot")
                if not allowed:
                    reached.append(f"{path.relative_to(package)}:{node.lineno}")
    assert reached == []
