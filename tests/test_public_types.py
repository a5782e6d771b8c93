"""A wrong type given to any public entry point is one line of FclensError, never an AttributeError or a
TypeError from inside fclens (issue 21).

Each case calls one function of ``fclens.__all__`` (or the constructor of an input type) with a wrong
type in one main argument: an int for a path, a string for a model or a layer, None, a dict; and the
entry points that 0.2 keeps in their submodules (find_head, register_map, the engines, …).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import fclens
from conftest import FIXTURES
from fclens import FclensError
from fclens.ald import regression_fit
from fclens.batch import BatchRunner
from fclens.edits.pair import PairLayer, pair_neurons, select_neurons
from fclens.head import find_head
from fclens.maps import register_map
from fclens.scanning import LocalEngine, RayEngine
from fclens.scanning.features import Features

Case = Callable[[SimpleNamespace], Any]
CASES: dict[str, Case | Any] = {
    "load_model(42)": lambda g: fclens.load_model(42),
    "load_model({})": lambda g: fclens.load_model({}),
    "load_model(weights=42)": lambda g: fclens.load_model(weights=42),
    "load_model(class_names=5)": lambda g: fclens.load_model(class_names=5),
    "load_model(class_names=[1, 2])": lambda g: fclens.load_model(class_names=[1, 2]),
    "load_model(preprocessing='x')": lambda g: fclens.load_model(preprocessing="x"),
    "load_model(input_size='big')": lambda g: fclens.load_model(input_size="big"),
    "load_image(42)": lambda g: fclens.load_image(42),
    "load_image(None)": lambda g: fclens.load_image(None),
    "load_image([path])": lambda g: fclens.load_image([g.image]),
    "sample_image(42)": lambda g: fclens.sample_image(42),
    "sample_folder(42)": lambda g: fclens.sample_folder(42),
    "sample_folder(seed='x')": lambda g: fclens.sample_folder(g.tmp / "photos", count=2, seed="x"),
    "sample_folder(side='x')": lambda g: fclens.sample_folder(g.tmp / "photos", count=2, side="x"),
    "find_head('model', size)": lambda g: find_head("model", (224, 224)),
    "find_head(None, size)": lambda g: find_head(None, (224, 224)),
    "find_head(module, '224')": lambda g: find_head(g.model.module, "224"),
    "fit_ald('weights')": lambda g: fclens.fit_ald("weights"),
    "fit_ald(None)": lambda g: fclens.fit_ald(None),
    "fit_ald({})": lambda g: fclens.fit_ald({"w": 1}),
    "regression_fit(None)": lambda g: regression_fit(None),
    "regression_fit('x')": lambda g: regression_fit("x"),
    "split_tree('row')": lambda g: fclens.split_tree("row"),
    "split_tree(None)": lambda g: fclens.split_tree(None),
    "split_tree(row, class_index='x')": lambda g: fclens.split_tree(g.weight[0], class_index="x"),
    "register_map(42, meaning)": lambda g: register_map(42, "a map"),
    "register_map(name, 42)": lambda g: register_map("mine", 42),
    "register_map(...)(42)": lambda g: register_map("mine", "a map")(42),
    "explain(42, image)": lambda g: fclens.explain(42, g.image),
    "explain(model, 42)": lambda g: fclens.explain(g.model, 42),
    "explain(model, None)": lambda g: fclens.explain(g.model, None),
    "explain(model, {})": lambda g: fclens.explain(g.model, {"cat": g.image}),
    "explain(model, [42])": lambda g: fclens.explain(g.model, [42]),
    "explain(target=3.5)": lambda g: fclens.explain(g.model, g.image, target=3.5),
    "explain(target=[None, 1.5])": lambda g: fclens.explain(g.model, [g.image, g.image], target=[None, 1.5]),
    "explain(options='fast')": lambda g: fclens.explain(g.model, g.image, options="fast"),
    "explain(maps=3)": lambda g: fclens.explain(g.model, g.image, maps=3),
    "explain(seed='x')": lambda g: fclens.explain(g.model, g.image, seed="x"),
    "explain(contrast=2.5)": lambda g: fclens.explain(g.model, g.image, contrast=2.5),
    "scan(42, source, out)": lambda g: fclens.scan(42, g.photos, g.tmp / "scan"),
    "scan(model, 42, out)": lambda g: fclens.scan(g.model, 42, g.tmp / "scan"),
    "scan(model, source, 42)": lambda g: fclens.scan(g.model, g.photos, 42),
    "scan(model, source, None)": lambda g: fclens.scan(g.model, g.photos, None),
    "scan(engine=42)": lambda g: fclens.scan(g.model, g.photos, g.tmp / "scan", engine=42),
    "scan(options={})": lambda g: fclens.scan(g.model, g.photos, g.tmp / "scan", options={}),
    "scan(shard_rows='x')": lambda g: fclens.scan(g.model, g.photos, g.tmp / "scan", shard_rows="x"),
    "read_scan(42)": lambda g: fclens.read_scan(42),
    "read_scan(None)": lambda g: fclens.read_scan(None),
    "atlas(42)": lambda g: fclens.atlas(42),
    "atlas(None)": lambda g: fclens.atlas(None),
    "atlas(scan, top_k='x')": lambda g: fclens.atlas(g.scan, top_k="x"),
    "Options(maps=42)": lambda g: fclens.Options(maps=42),
    "Options(min_size='x')": lambda g: fclens.Options(min_size="x"),
    "Options(contrast=[1])": lambda g: fclens.Options(contrast=[1]),
    "Options(seed='x')": lambda g: fclens.Options(seed="x"),
    "Options(features='yes')": lambda g: fclens.Options(features="yes"),
    "Preprocessing(input_size='x')": lambda g: fclens.Preprocessing("x", (0.5,) * 3, (0.5,) * 3),
    "Preprocessing(mean=3)": lambda g: fclens.Preprocessing((224, 224), 3, (0.5,) * 3),
    "Preprocessing(crop_pct='x')": lambda g: fclens.Preprocessing(
        (224, 224), (0.5,) * 3, (0.5,) * 3, crop_pct="x"
    ),
    "LocalEngine(workers='x')": lambda g: LocalEngine(workers="x"),
    "RayEngine(address=42)": lambda g: RayEngine(address=42),
    "RayEngine(actors='x')": lambda g: RayEngine(actors="x"),
    "BatchRunner(42, options)": lambda g: BatchRunner(42, fclens.Options()),
    "BatchRunner(model, 42)": lambda g: BatchRunner(g.model, 42),
    "BatchRunner(model, options, head=42)": lambda g: BatchRunner(g.model, fclens.Options(), head=42),
    # the data-set and layer floor
    "prune('weights', 0.5)": lambda g: fclens.prune("weights", 0.5),
    "prune(layer, 'half')": lambda g: fclens.prune(g.layer, "half"),
    "prune_curve(42)": lambda g: fclens.prune_curve(42),
    "prune_curve(scan, methods=42)": lambda g: fclens.prune_curve(g.scan, methods=42),
    "prune_curve(scan, sparsities='x')": lambda g: fclens.prune_curve(g.scan, sparsities="x"),
    "evaluate(42, layer)": lambda g: fclens.evaluate(42, g.layer),
    "evaluate(scan, 42)": lambda g: fclens.evaluate(g.scan, 42),
    "evaluate(scan, 'x')": lambda g: fclens.evaluate(g.scan, "x"),
    "fit_layer(42)": lambda g: fclens.fit_layer(42),
    "fit_layer(scan, method=3)": lambda g: fclens.fit_layer(g.scan, method=3),
    "adjust_layer('x')": lambda g: fclens.adjust_layer("x"),
    "adjust_layer(layer, method=3)": lambda g: fclens.adjust_layer(g.layer, method=3),
    "pair_edit(42, 1, 2)": lambda g: fclens.pair_edit(42, 1, 2),
    "pair_edit(scan, 'a', 2)": lambda g: fclens.pair_edit(g.scan, "a", 2),
    "pair_edit(scan, 1, 2, m='x')": lambda g: fclens.pair_edit(g.scan, 1, 2, m="x"),
    "pair_neurons('x', 1, 2)": lambda g: pair_neurons("x", 1, 2),
    "pair_neurons(layer, 'a', 2)": lambda g: pair_neurons(g.layer, "a", 2),
    "select_neurons(42, 1, 2, 4)": lambda g: select_neurons(42, 1, 2, 4),
    "causal_test(42)": lambda g: fclens.causal_test(42),
    "causal_test(scan, pairs=42)": lambda g: fclens.causal_test(g.scan, pairs=42),
    "rebalance(42, 42)": lambda g: fclens.rebalance(42, 42),
    "to_fiftyone(42)": lambda g: fclens.to_fiftyone(42),
    "FinalLayer('w', 'b')": lambda g: fclens.FinalLayer("w", "b"),
    "FinalLayer(None, None)": lambda g: fclens.FinalLayer(None, None),
    "FinalLayer.of('x')": lambda g: fclens.FinalLayer.of("x"),
    "PairLayer('w', 'b')": lambda g: PairLayer("w", "b"),
    "PriorLoss('x')": lambda g: fclens.PriorLoss("x"),
    "Features(42, 42, 42)": lambda g: Features(42, 42, 42),
}

RESULTS = {
    "ALDFit", "Atlas", "CausalTable", "Classifier", "Evaluation", "Explanation", "PruneCurve", "Rebalance",
    "Scan", "SplitTree",
}  # fmt: skip
"""Public types that fclens makes and hands back (a caller reads them, never builds them from input)."""


@pytest.fixture(scope="module")
def given(classifier: fclens.Classifier, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Right values for the arguments a case does not get wrong: the model, a photo, a scan, a layer."""
    tmp = tmp_path_factory.mktemp("types")
    scan = fclens.read_scan(FIXTURES / "scan-v1")
    head = classifier.head
    return SimpleNamespace(
        model=classifier,
        image=fclens.sample_image("chelsea"),
        photos=FIXTURES / "photos",
        scan=scan,
        weight=head.weight.detach(),
        layer=fclens.FinalLayer(head.weight.detach(), head.bias.detach()),
        tmp=tmp,
    )


@pytest.mark.parametrize("call", list(CASES.values()), ids=list(CASES))
def test_a_wrong_type_is_one_line_of_fclens_error(call: Case, given: SimpleNamespace) -> None:
    with pytest.raises(FclensError) as caught:
        call(given)
    message = str(caught.value)
    assert message and "\n" not in message


def test_every_public_entry_point_has_a_case() -> None:
    """A new public function or input type comes with its wrong-type case here."""
    named = {case.split("(")[0].split(".")[0] for case in CASES}
    callables = {name for name in fclens.__all__ if callable(getattr(fclens, name))}
    errors = {
        name
        for name in callables
        if inspect.isclass(getattr(fclens, name)) and issubclass(getattr(fclens, name), Exception)
    }
    assert callables - errors - RESULTS - named == set()


def test_a_missing_file_is_still_named_in_one_line(tmp_path: Path) -> None:
    """The type checks come first but change nothing for the right type: a path that is not there."""
    with pytest.raises(FclensError, match=rf"^{tmp_path / 'gone.jpg'}: no such file; check the path$"):
        fclens.load_image(tmp_path / "gone.jpg")
