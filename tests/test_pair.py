"""Confusion-pair edits (issue 17): the selection rules, the edit, the held-out split and the causal table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import feature_scan
from fclens import FinalLayer, causal_test, evaluate, pair_edit, read_scan
from fclens.edits.evaluate import PairOutcome
from fclens.edits.pair import pair_neurons, select_neurons
from fclens.errors import FclensError
from fclens.scanning.features import Features

# --- a layer whose pair neurons are set by construction -----------------------------------------------
# Four classes, 48 neurons: ten "own" neurons per class (weight 1 on its row) and six neurons T that
# argue for class 1 (w_1 = 1.5) against class 0 (w_0 = −0.5). Half of class 0's images fire T hard: the
# layer calls them class 1. The pair 0 → 1 is caused by T, and only by T.
D, K, J = 48, 0, 1
T = np.arange(40, 46)


def built() -> tuple[FinalLayer, Features]:
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.05, (4, D))
    for c in range(4):
        weight[c, 10 * c : 10 * c + 10] = 1.0
    weight[J, T], weight[K, T] = 1.5, -0.5
    bias = np.array([0.3, -0.2, 0.1, 0.0])
    label = np.repeat(np.arange(4), 200)
    z = rng.uniform(0, 0.2, (len(label), D))
    for c in range(4):
        rows = label == c
        z[rows, 10 * c : 10 * c + 10] = 1 + 0.2 * rng.standard_normal((rows.sum(), 10))
    confused = (label == K) & (np.arange(len(label)) % 2 == 0)
    z[np.ix_(confused, T)] = 2.5 + 0.2 * rng.standard_normal((confused.sum(), len(T)))
    z[np.ix_(label == J, T)] = 1.0
    layer = FinalLayer(torch.tensor(weight, dtype=torch.float32), torch.tensor(bias, dtype=torch.float32))
    features = Features.of(
        np.clip(z, 0, None),
        label,
        index=np.arange(len(label), dtype=np.int64) * 3 + 5,  # source indices need not be positions
        layer=layer,
    )
    return layer, features


@pytest.fixture(scope="module")
def made() -> tuple[FinalLayer, Features]:
    return built()


def test_the_named_neurons_of_the_built_pair_hold_its_cause_and_tree_ranks_them_first(made) -> None:
    layer, features = made
    named = pair_neurons(layer, K, J, min_size=20)
    assert set(T) <= set(named)  # also class 1's own neurons: − for class 0, + for class 1
    assert set(select_neurons(features, K, J, len(T), rule="tree", min_size=20)) == set(T)
    assert set(select_neurons(features, K, J, len(T), rule="weight")) == set(T)  # w_1 − w_0 = 2 on T only
    random = select_neurons(features, K, J, 12, rule="random", seed=3)
    assert len(set(random)) == 12 and np.array_equal(
        random[:4], select_neurons(features, K, J, 4, rule="random", seed=3)
    )


def test_equalise_changes_only_the_rivals_row_on_the_chosen_columns(made) -> None:
    layer, features = made
    edited = pair_edit(features, K, J, 8, rule="contrast")
    changed = np.argwhere((edited.weight != layer.weight).numpy())
    assert set(changed[:, 0]) == {J}
    assert set(changed[:, 1]) <= set(edited.neurons) and len(edited.neurons) == 8
    assert torch.equal(edited.weight[J, edited.neurons], layer.weight[K, edited.neurons])
    assert torch.equal(edited.bias, layer.bias) and edited.strength == 1.0 and edited.rival == J


def test_with_every_neuron_equalised_the_gap_is_the_bias_difference_on_every_image(made) -> None:
    layer, features = made
    edited = pair_edit(features, K, J, D, rule="weight")
    assert torch.equal(edited.weight[J], layer.weight[K])
    shares = features.z @ edited.weight.T  # the neurons' part of each logit: equal for j and k, bit for bit
    assert torch.equal(shares[:, J], shares[:, K])
    logits = edited.logits(features.z)  # so the gap is b_j − b_k, up to float32 rounding of the sums
    gap = (logits[:, J] - logits[:, K]).double()
    assert torch.allclose(gap, torch.full_like(gap, float(layer.bias[J] - layer.bias[K])), rtol=0, atol=1e-5)


def test_tree_repairs_the_built_pair_on_held_out_rows_and_random_does_not(made) -> None:
    _, features = made
    table = causal_test(features, pairs=[(K, J)], ms=(6,), min_size=20)
    test = table.pair(K, J)
    assert test.n_target == 100 and test.before.errors_kj >= 40  # half of the held-out 0s, confused
    tree, random = test.trial("tree", 6), test.trial("random", 6)
    assert set(tree.neurons) == set(T)
    assert tree.equalise.errors_kj <= 1 and tree.equalise.soft_kj < 0.05 * test.before.soft_kj
    assert random.equalise.errors_kj >= test.before.errors_kj / 2
    assert tree.equalise.accuracy_other == test.before.accuracy_other == 1.0
    assert tree.partial.errors_kj <= 1 and tree.strength > 0.5  # on the selection rows, s must be large


def test_the_held_out_and_selection_rows_are_disjoint_cover_the_rows_and_are_stratified(made) -> None:
    _, features = made
    select, held = features.split(seed=4)
    assert len(np.intersect1d(select, held)) == 0
    assert np.array_equal(np.sort(np.concatenate([select, held])), np.sort(features.index))
    label = dict(zip(features.index.tolist(), features.label.tolist(), strict=True))
    assert all(sum(label[i] == c for i in select) == 100 for c in range(4))
    again, _ = features.split(seed=4)
    other, _ = features.split(seed=5)
    assert np.array_equal(select, again) and not np.array_equal(select, other)


# --- on a scan with stored features ---------------------------------------------------------------------
CLASSES, DIM = 6, 40


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six Gaussian classes, close enough to be confused, 150 images each, one unlabelled handful."""
    means = feature_scan.class_means(CLASSES, DIM, spread=0.35, seed=2)
    directory = tmp_path_factory.mktemp("pairs") / "scan"
    counts = np.full(CLASSES, 150)
    feature_scan.write(
        directory, means, counts, feature_scan.bayes_layer(means, counts / counts.sum()), unlabelled=9
    )
    return directory


def test_split_rows_covers_every_ok_row_of_a_scan_labelled_or_not(scan_dir: Path) -> None:
    features = read_scan(scan_dir).read_features()
    select, held = features.split(seed=0)
    index = features.index
    assert len(np.intersect1d(select, held)) == 0 and len(select) + len(held) == len(index) == 909
    assert np.array_equal(np.union1d(select, held), np.sort(index))


def test_the_fast_path_equals_evaluate_of_the_edited_layer_on_the_held_out_rows(scan_dir: Path) -> None:
    pairs = [(0, 1), (3, 2)]
    table = causal_test(scan_dir, pairs=pairs, ms=(1, 4, 16), seed=1)
    rows = read_scan(scan_dir).read_features()  # read once; its trees are the default min_size 20, "chains"
    select, held = rows.split(seed=1)
    assert table.n_held_out == len(held)
    for k, j in pairs:
        test = table.pair(k, j)
        assert _same(test.before, PairOutcome.of(evaluate(rows, rows.layer, rows=held), k, j))
        for trial in test.trials:
            for edit, outcome in (("equalise", trial.equalise), ("partial", trial.partial)):
                edited = pair_edit(rows, k, j, trial.m, rule=trial.rule, edit=edit, rows=select, seed=1)
                assert np.array_equal(edited.neurons, trial.neurons)
                assert edited.strength == (1.0 if edit == "equalise" else trial.strength)
                assert _same(outcome, PairOutcome.of(evaluate(rows, edited, rows=held), k, j))
    exact = causal_test(scan_dir, pairs=pairs, ms=(1, 4, 16), seed=1, exact=True)
    for fast, slow in zip(table.pairs, exact.pairs, strict=True):
        for a, b in zip(fast.trials, slow.trials, strict=True):
            assert _same(a.equalise, b.equalise) and _same(a.partial, b.partial)


def _same(a: PairOutcome, b: PairOutcome) -> bool:
    counts = (a.errors_kj, a.errors_jk) == (b.errors_kj, b.errors_jk)
    rates = ("soft_kj", "soft_jk", "accuracy_k", "accuracy_j", "accuracy_other", "accuracy")
    return counts and all(getattr(a, r) == pytest.approx(getattr(b, r), abs=1e-6) for r in rates)


def test_the_table_defaults_to_the_top_pairs_and_reads_as_json_and_text(scan_dir: Path) -> None:
    table = causal_test(scan_dir, ms=(2, 8), top=3)
    assert len(table.pairs) == 3
    data = json.loads(json.dumps(table.to_dict(), allow_nan=False))
    assert data["pairs"][0]["trials"][0]["rule"] == "tree" and set(data["summary"]) == {
        "tree", "contrast", "weight", "random"
    }  # fmt: skip
    assert data["pairs"][0]["sentence"].startswith("class ")
    text = table.to_text()
    assert "equalising" in text and "held-out" in text and "random 8" in text


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: pair_edit(s, 0, 6), "rival class 6 is out of range"),
        (lambda s: pair_edit(s, 2, 2), "the same class"),
        (lambda s: pair_edit(s, 0, 1, m=0), "must be an integer >= 1"),
        (lambda s: pair_edit(s, 0, 1, rule="best"), "unknown selection rule 'best'"),
        (lambda s: pair_edit(s, 0, 1, edit="zero"), "unknown edit 'zero'"),
        (lambda s: causal_test(s, ms=(4, 0)), "must be an integer >= 1"),
        (lambda s: causal_test(s, pairs=[(0, 1)], objective="f1"), "unknown objective 'f1'"),
        (lambda s: read_scan(s).read_features().split(fraction=1.0), "between 0 and 1"),
    ],
)
def test_bad_input_is_one_clear_line(scan_dir: Path, call, message: str) -> None:
    with pytest.raises(FclensError, match=message) as raised:
        call(scan_dir)
    assert "\n" not in str(raised.value)


def test_a_scan_without_features_is_refused_with_the_flag_named(tmp_path: Path) -> None:
    import synthetic_scan

    synthetic_scan.write(tmp_path / "plain", rows=20)
    with pytest.raises(FclensError, match="features=True") as refused:
        causal_test(tmp_path / "plain", pairs=[(0, 1)])
    assert "fclens scan --features" in refused.value.cli
