"""The package's face: every public name resolves, lazily, to the same object as before."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

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


def test_every_public_name_resolves_and_is_listed():
    assert sorted(fclens._MODULE_OF) == sorted(fclens.__all__)
    for name in fclens.__all__:
        assert getattr(fclens, name) is getattr(importlib.import_module(fclens._MODULE_OF[name]), name)
    assert set(fclens.__all__) <= set(dir(fclens))


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
    """explain → report, one way: no import of fclens.report in fclens.explaining, not even inside a function."""
    tree = ast.parse(Path(importlib.import_module("fclens.explaining").__file__).read_text("utf-8"))
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported and not [name for name in imported if name.startswith("fclens.report")]
