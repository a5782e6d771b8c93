"""fclens.tree: the split rule, the two modes, degenerate rows, output formats, and a real class."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fclens.ald import regression_fit
from fclens.tree import Node, SplitTree, split_tree

pytestmark = pytest.mark.filterwarnings("error")


def random_row(n: int = 500, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).laplace(scale=0.05, size=n)


def internal(tree: SplitTree) -> list[Node]:
    return [node for node in tree.nodes if not node.is_leaf]


def test_hand_computed_tiny_example():
    # mean 5/6: + = {0: 3, 3: 5, 5: 2}, − = {1: −1, 2: 0, 4: −4};
    # + mean 10/3: ++ = {3: 5}; − mean −5/3: −− = {4: −4}.
    tree = split_tree([3.0, -1.0, 0.0, 5.0, -4.0, 2.0], min_size=2, class_index=7)
    assert [n.path for n in tree.nodes] == ["", "+", "++", "-", "--"]
    assert tree.node("+").indices.tolist() == [0, 3, 5]
    assert tree.node("-").indices.tolist() == [1, 2, 4]
    assert tree.discriminative is tree.node("++") and tree.discriminative.indices.tolist() == [3]
    assert tree.confusing is tree.node("--") and tree.confusing.values.tolist() == [-4.0]
    assert tree.node("root") is tree.root and tree.root.label == "root"
    assert tree.node("+").mean == pytest.approx(10 / 3) and tree.node("-").max == 0.0
    # R² of a child: the paper's fit of its distances from the parent's mean.
    assert tree.node("+").r2 == pytest.approx(regression_fit(np.array([3.0, 5.0, 2.0]) - 5 / 6).r2)
    assert np.isnan(tree.root.r2) and np.isnan(tree.node("++").r2)  # a single value has no line
    assert [n.depth for n in tree.nodes] == [0, 1, 2, 1, 2]
    assert tree.class_index == 7 and tree.mode == "chains" and tree.min_size == 2
    with pytest.raises(KeyError, match="'\\+-'"):
        tree.node("+-")


@pytest.mark.parametrize("mode", ["chains", "full"])
def test_children_partition_by_the_parents_mean(mode: str):
    row = random_row()
    tree = split_tree(row, min_size=10, mode=mode)
    for node in internal(tree):
        np.testing.assert_array_equal(node.values, row[node.indices])
        assert np.all(np.diff(node.indices) > 0) and node.indices.dtype == np.int64
        plus = [c for c in node.children if c.path.endswith("+")]
        minus = [c for c in node.children if c.path.endswith("-")]
        for child in plus:
            assert np.all(child.values >= node.mean)
            assert child.indices.tolist() == node.indices[node.values - node.mean >= 0].tolist()
        for child in minus:
            assert np.all(child.values < node.mean)
        if len(node.children) == 2:  # both children grown: they partition the parent
            both = np.concatenate([c.indices for c in node.children])
            assert sorted(both.tolist()) == node.indices.tolist()


def test_chains_mode_follows_the_sign():
    tree = split_tree(random_row(2000, seed=1), min_size=20)
    assert [c.path for c in tree.root.children] == ["+", "-"]
    for node in internal(tree):
        if node.path:
            assert [c.path for c in node.children] == [node.path + node.path[-1]]
    plus, minus = tree.chain("+"), tree.chain("-")
    assert [n.path for n in plus] == ["+" * k for k in range(1, len(plus) + 1)]
    assert [n.path for n in minus] == ["-" * k for k in range(1, len(minus) + 1)]
    assert len(tree.nodes) == 1 + len(plus) + len(minus)
    assert tree.discriminative is plus[-1] and tree.confusing is minus[-1]
    sizes = [n.size for n in plus]
    assert sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError, match="sign"):
        tree.chain("++")


@pytest.mark.parametrize("mode", ["chains", "full"])
def test_leaves_are_small_or_unsplittable(mode: str):
    row = np.r_[random_row(300, seed=2), np.full(40, 0.3)]  # a constant block makes unsplittable nodes
    tree = split_tree(row, min_size=15, mode=mode)
    leaves = [n for n in tree.nodes if n.is_leaf]
    assert any(leaf.size >= 15 for leaf in leaves)  # the constant block stopped a chain early
    for leaf in leaves:
        assert leaf.size < 15 or np.all(leaf.values == leaf.values[0])
    for node in internal(tree):
        assert node.size >= 15


def test_full_mode_of_distinct_values_splits_down_to_single_neurons():
    row = random_row(137, seed=3)
    tree = split_tree(row, min_size=2, mode="full")
    assert len(tree.nodes) == 2 * row.size - 1  # a full binary tree with one leaf per neuron
    leaves = [n for n in tree.nodes if n.is_leaf]
    assert sorted(int(n.indices[0]) for n in leaves) == list(range(row.size))
    assert all(n.size == 1 for n in leaves)


def test_full_mode_matches_a_recursive_reference():
    row = random_row(400, seed=4)

    def reference(indices: np.ndarray, path: str, out: dict[str, list[int]]) -> None:
        out[path] = indices.tolist()
        values = row[indices]
        if values.size < 12:
            return
        up = values - values.mean() >= 0
        if up.all() or not up.any():
            return
        reference(indices[up], path + "+", out)
        reference(indices[~up], path + "-", out)

    expected: dict[str, list[int]] = {}
    reference(np.arange(row.size), "", expected)
    tree = split_tree(row, min_size=12, mode="full")
    assert {n.path: n.indices.tolist() for n in tree.nodes} == expected
    assert [n.path for n in tree.nodes] == list(expected)  # pre-order, + before −


def test_terminal_nodes_hold_the_extreme_weights():
    row = random_row(1000, seed=5)
    tree = split_tree(row)
    top, bottom = tree.discriminative, tree.confusing
    order = np.sort(row)
    np.testing.assert_array_equal(np.sort(top.values), order[-top.size :])
    np.testing.assert_array_equal(np.sort(bottom.values), order[: bottom.size])


def test_lite0_egyptian_cat_tree(lite0_weight):
    row = lite0_weight[285]
    tree = split_tree(row, class_index=285)
    top, bottom = tree.discriminative, tree.confusing
    assert top is not None and bottom is not None
    assert 0 < top.size < 20 and 0 < bottom.size < 20
    assert top.min > 0 > bottom.max
    assert top.depth >= 3 and bottom.depth >= 3
    assert top.indices.max() < row.numel() == tree.root.size == 1280
    np.testing.assert_allclose(top.values, row.double().numpy()[top.indices])
    text = tree.to_text("Egyptian cat")
    assert 'class 285 "Egyptian cat"' in text
    assert f"{top.path}  n={top.size}" in text and "most discriminative" in text and "most confusing" in text


@pytest.mark.parametrize("row", [np.full(50, 0.25), np.arange(5.0), np.array([1.0])])
def test_degenerate_rows_give_a_single_node(row: np.ndarray):
    tree = split_tree(row)
    assert tree.nodes == [tree.root] and tree.root.is_leaf and tree.root.size == row.size
    assert tree.discriminative is None and tree.confusing is None and tree.chain("+") == []
    assert "root" in tree.to_text()
    json.loads(tree.to_json())


def test_bad_input_is_a_one_line_value_error():
    with pytest.raises(ValueError, match="mode must be one of 'chains', 'full'"):
        split_tree(random_row(), mode="binary")
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="min_size"):
            split_tree(random_row(), min_size=bad)
    with pytest.raises(ValueError, match="NaN or Inf"):
        split_tree(np.r_[random_row(), np.nan])
    with pytest.raises(ValueError, match="one non-empty row"):
        split_tree(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="one non-empty row"):
        split_tree(np.zeros(0))


def test_conv_row_and_tensor_input_give_the_same_tree():
    row = random_row(300, seed=6).astype(np.float32)
    a = split_tree(row)
    b = split_tree(torch.tensor(row).reshape(300, 1, 1).requires_grad_(True))
    assert [(n.path, n.indices.tolist()) for n in a.nodes] == [(n.path, n.indices.tolist()) for n in b.nodes]


def test_to_dict_and_json_round_trip():
    tree = split_tree(random_row(200, seed=7), min_size=10, mode="full", class_index=3)
    doc = json.loads(tree.to_json())
    assert doc == tree.to_dict()
    assert doc["class_index"] == 3 and doc["mode"] == "full" and doc["min_size"] == 10
    assert doc["discriminative"] == tree.discriminative.path and doc["confusing"] == tree.confusing.path
    assert doc["root"]["r2"] is None and doc["root"]["size"] == 200

    def count(node: dict) -> int:
        return 1 + sum(count(c) for c in node["children"])

    assert count(doc["root"]) == len(tree.nodes)
    plus = doc["root"]["children"][0]
    assert plus["path"] == "+" and plus["indices"] == tree.node("+").indices.tolist()
    assert plus["r2"] == pytest.approx(tree.node("+").r2)
