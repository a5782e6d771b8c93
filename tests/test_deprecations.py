"""0.1's spellings of the data-set and layer floor still work for one release: each warns, naming the new
spelling, and gives what the new call gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import fclens
import feature_scan
from fclens import FinalLayer, read_scan

CLASSES, DIM = 5, 24


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> fclens.Scan:
    """Five Gaussian classes close enough to be confused, 120 labelled images each."""
    means = feature_scan.class_means(CLASSES, DIM, spread=0.4, seed=5)
    directory = tmp_path_factory.mktemp("old") / "scan"
    counts = np.full(CLASSES, 120)
    feature_scan.write(directory, means, counts, feature_scan.bayes_layer(means, counts / counts.sum()))
    return read_scan(directory)


def old(call, match: str):
    """``call()`` under 0.1's spelling: its result, after checking that it warned with ``match``."""
    with pytest.warns(DeprecationWarning, match=match):
        return call()


def same_layer(a: FinalLayer, b: FinalLayer) -> bool:
    return torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_the_evaluator_and_the_features(scan: fclens.Scan) -> None:
    new = fclens.evaluate(scan, scan.layer)
    one = old(lambda: fclens.evaluate_head(scan.directory, scan), r"evaluate_head.*fclens\.evaluate")
    many = old(lambda: fclens.evaluate_heads(scan, [scan]), r"evaluate_heads.*fclens\.evaluate")
    assert one.accuracy == many[0].accuracy == new.accuracy
    assert np.array_equal(one.confusion, new.confusion)
    with pytest.warns(DeprecationWarning, match=r"HeadEvaluation.*Evaluation"):
        assert fclens.HeadEvaluation is fclens.Evaluation
    features = old(lambda: fclens.read_features(scan.directory), r"read_features.*read_features\(\)")
    assert torch.equal(features.z, scan.read_features().z)
    z = old(scan.features, r"Scan\.features\(\).*read_features")
    assert np.array_equal(z, features.z.numpy())


def test_the_maps_by_row_position(tmp_path: Path) -> None:
    import synthetic_scan
    from fclens.atlasing import read_maps

    synthetic_scan.write(tmp_path / "maps", rows=12)
    scan = read_scan(tmp_path / "maps")
    indices = scan.rows(["index"]).column("index").to_pylist()
    row = 3
    maps = scan.maps([indices[row]])[indices[row]]
    assert maps.node_map.shape == (5, *synthetic_scan.GRID)
    assert np.array_equal(old(lambda: scan.node_maps(row), r"node_maps.*maps\(\[index\]\)"), maps.node_map)
    assert np.array_equal(old(lambda: scan.contrast_map(row), r"contrast_map"), maps.contrast_map)
    flat = old(lambda: read_maps(scan, {indices[row]}), r"read_maps.*scan\.maps")[indices[row]]
    assert np.array_equal(flat["node_map"], maps.node_map.reshape(len(maps.node_map), -1))


def test_the_refits_and_adjustments(scan: fclens.Scan) -> None:
    fitted = old(lambda: fclens.fit_head(scan.directory, loss="pg-prior", max_iter=5), r"fit_head.*fit_layer")
    assert same_layer(fitted, fclens.fit_layer(scan, "pg-prior", max_iter=5))
    adjusted = old(lambda: fclens.adjust_head(str(scan.directory), "tau-norm"), r"adjust_head.*adjust_layer")
    assert same_layer(adjusted, fclens.adjust_layer(scan.layer, "tau-norm"))
    result = old(
        lambda: fclens.rebalance(train=scan, evaluation=scan, methods=["tau-norm"]), r"keyword train=.*scan="
    )
    assert result.evaluations["tau-norm"].accuracy == fclens.evaluate(scan, adjusted).accuracy


def test_the_pair_edit_in_its_old_order_and_keywords(scan: fclens.Scan) -> None:
    new = fclens.pair_edit(scan, 0, 1, 4, rule="contrast")
    edited = old(
        lambda: fclens.pair_edit(str(scan.directory), scan, 0, 1, neurons=4, select="contrast"),
        r"pair_edit\(head, scan, target, rival\).*layer=head",
    )
    assert same_layer(edited, new) and np.array_equal(edited.neurons, new.neurons)
    assert old(lambda: edited.select, "PairLayer.rule") == "contrast"
    assert old(lambda: edited.requested, "PairLayer.m") == 4
    from fclens.edits.pair import select_neurons, split_rows

    chosen = old(
        lambda: select_neurons(scan.layer, 0, 1, 4, select="contrast", features=scan), r"select_neurons"
    )
    assert np.array_equal(chosen, new.neurons)
    halves = old(lambda: split_rows(scan, seed=2), r"split_rows.*split\(seed\)")
    assert all(np.array_equal(a, b) for a, b in zip(halves, scan.read_features().split(2), strict=True))


def test_the_causal_test_with_head_and_class_names(scan: fclens.Scan) -> None:
    new = fclens.causal_test(scan, [(0, 1)], ms=(2,))
    table = old(lambda: fclens.causal_test(scan, [(0, 1)], ms=(2,), head=scan.directory), r"keyword head=")
    assert (
        table.pair(0, 1).trial("tree", 2).equalise.errors_kj
        == new.pair(0, 1).trial("tree", 2).equalise.errors_kj
    )
    named = old(lambda: fclens.causal_test(scan, [(0, 1)], ms=(2,), class_names=list("abcde")), "class_names")
    assert named.pairs[0].target_name == "a"


def test_pruning_with_a_weight_and_the_array_evaluator(scan: fclens.Scan) -> None:
    from fclens.pruning import curve, evaluate

    mask = old(lambda: fclens.prune(weight=scan.layer.weight, sparsity=0.5), r"keyword weight=.*layer=")
    assert torch.equal(mask, fclens.prune(scan.layer, 0.5))
    features = scan.read_features()
    points = old(
        lambda: evaluate(
            features.z.numpy(), scan.weight, scan.bias, labels=features.label.numpy(), sparsities=[0.5]
        ),
        r"pruning\.evaluate.*curve",
    ).points
    assert points == curve(features, sparsities=[0.5]).points


@pytest.mark.parametrize(
    ("module", "name", "home"),
    [
        ("fclens.scanning.store", "Scan", "fclens.scanning.reader"),
        ("fclens.scanning.store", "ScanWriter", "fclens.scanning.writer"),
        ("fclens.edits.layer", "FinalLayer", "fclens.layer"),
        ("fclens.edits.layer", "write_model", "fclens.edits.write"),
        ("fclens.edits.pair", "causal_test", "fclens.edits.causal"),
        ("fclens.images", "Preprocessing", "fclens.preprocessing"),
        ("fclens.images", "sample_folder", "fclens.samples"),
    ],
)
def test_a_name_that_moved_module_still_imports_from_the_old_one(module: str, name: str, home: str) -> None:
    import importlib

    with pytest.warns(DeprecationWarning, match=rf"{module}\.{name} is deprecated.*{home}"):
        value = getattr(importlib.import_module(module), name)
    assert value is getattr(importlib.import_module(home), name)


def test_a_path_is_never_taken_for_a_layer(scan: fclens.Scan) -> None:
    with pytest.raises(fclens.FclensError, match=r"is a path, not a final layer.*read_scan\(path\)\.layer"):
        fclens.adjust_layer(str(scan.directory), "tau-norm")
