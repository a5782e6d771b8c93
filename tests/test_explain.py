"""fclens.explain on real photos: what a user reads off an Explanation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crops import CATS
from fclens.errors import FclensError
from fclens.explaining import Explanation, explain
from fclens.models import Classifier
from fclens.preprocessing import to_batch


@pytest.fixture(scope="module")
def pair(classifier: Classifier, chelsea: Path, coffee: Path) -> list[Explanation]:
    """Chelsea and coffee with every map kind and every node's masked score."""
    return explain(classifier, [chelsea, coffee], maps=("activation", "contribution", "smooth-gradcam++"))


def test_one_explanation_per_image_with_the_predicted_class(pair: list[Explanation], chelsea: Path) -> None:
    cat, cup = pair
    assert cat.source == str(chelsea)
    assert cat.target.index in CATS and cat.target == cat.top5[0]
    assert cup.target.index == 967 and cup.target.name == "espresso" and cup.target.probability > 0.9
    assert [p.probability for p in cat.top5] == sorted((p.probability for p in cat.top5), reverse=True)
    assert cat.image.size == (224, 224) and cat.model_name == "efficientnet_lite0"
    assert cat.feature_layer == "bn2"


def test_nodes_follow_the_tree_with_terminal_nodes(pair: list[Explanation], classifier: Classifier) -> None:
    for explanation in pair:
        tree = explanation.tree
        assert [n.path for n in explanation.nodes] == [n.path for n in tree.nodes]
        assert (
            explanation.nodes[0].label == "root" and explanation.nodes[0].size == classifier.head.num_features
        )
        assert (
            set(explanation.discriminative.path) == {"+"}
            and tree.node(explanation.discriminative.path).is_leaf
        )
        assert set(explanation.confusing.path) == {"-"} and tree.node(explanation.confusing.path).is_leaf
        weights = classifier.head.weight[explanation.target.index].cpu().numpy()
        node = explanation.discriminative
        assert node.min == pytest.approx(float(weights[node.indices].min()))


def test_maps_are_cpu_tensors_at_feature_resolution(pair: list[Explanation]) -> None:
    node = pair[0].discriminative
    assert list(node.maps) == ["activation", "contribution", "smooth-gradcam++"]
    assert pair[0].primary == "activation" and node.map is node.maps["activation"]
    for heat in node.maps.values():
        assert heat.shape == (7, 7) and heat.device.type == "cpu" and heat.dtype == torch.float32
    up = node.upsampled((224, 224), kind="contribution")
    assert up.shape == (224, 224) and float(up.min()) == 0.0 and float(up.max()) == pytest.approx(1.0)


def test_scores_are_probabilities(pair: list[Explanation]) -> None:
    for explanation in pair:
        assert all(0.0 <= node.score <= 1.0 for node in explanation.nodes)
        assert all(node.deletion_auc is None and node.insertion_auc is None for node in explanation.nodes)
        assert explanation.class_deletion_auc is None and explanation.class_insertion_auc is None


@pytest.mark.slow
def test_curves_for_terminal_nodes_and_the_class(classifier: Classifier, chelsea: Path) -> None:
    explanation = explain(classifier, chelsea, curves=True)
    ends = {"", explanation.discriminative.path, explanation.confusing.path}
    for node in explanation.nodes:
        has_curves = node.deletion_auc is not None and node.insertion_auc is not None
        assert has_curves == (node.path in ends), node.label
        if has_curves:
            assert 0.0 <= node.deletion_auc <= 1.0 and 0.0 <= node.insertion_auc <= 1.0
    assert explanation.class_deletion_auc == explanation.nodes[0].deletion_auc
    assert explanation.class_insertion_auc == explanation.nodes[0].insertion_auc


def test_discriminative_neurons_keep_the_cat_better_than_confusing_ones(pair: list[Explanation]) -> None:
    """The paper's reading of the terminal nodes, on chelsea (0.54 vs 0.29 for activation maps)."""
    cat = pair[0]
    assert cat.discriminative.score > cat.confusing.score + 0.1


def test_json_is_complete_and_strict(pair: list[Explanation]) -> None:
    data = json.loads(pair[0].to_json())
    assert data["target"]["index"] == pair[0].target.index and len(data["top5"]) == 5
    assert data["seed"] == 0 and data["map_kinds"] == ["activation", "contribution", "smooth-gradcam++"]
    assert data["nodes"][0]["r2"] is None  # the root has no fit of its own: NaN becomes null
    assert np.array(data["nodes"][0]["maps"]["contribution"]).shape == (7, 7)
    assert data["discriminative"] == pair[0].discriminative.path


def test_targets_by_name_index_and_list(classifier: Classifier, chelsea: Path, coffee: Path) -> None:
    by_name = explain(classifier, chelsea, target="Egyptian cat", scores="none")
    by_index = explain(classifier, chelsea, target=285, scores="none")
    assert by_name.target.index == by_index.target.index == 285
    torch.testing.assert_close(by_name.discriminative.map, by_index.discriminative.map)
    swapped = explain(classifier, [chelsea, coffee], target=[967, "tabby"], scores="none")
    assert [e.target.index for e in swapped] == [967, 281]
    with pytest.raises(FclensError, match="one per image"):
        explain(classifier, [chelsea, coffee], target=[967], scores="none")
    with pytest.raises(FclensError, match="matches no class"):
        explain(classifier, chelsea, target="not a class", scores="none")


@pytest.mark.usefixtures("float32")
def test_tensor_inputs_give_the_same_explanation(classifier: Classifier, chelsea: Path, coffee: Path) -> None:
    batch, _ = to_batch([chelsea, coffee], classifier.preprocessing)
    from_paths = explain(classifier, [chelsea, coffee], maps=["contribution"])
    from_batch = explain(classifier, batch, maps=["contribution"])
    from_row = explain(classifier, batch[1], maps=["contribution"])
    assert [e.source for e in from_batch] == ["<tensor 0>", "<tensor 1>"]
    for a, b in zip(from_paths + from_paths[1:], [*from_batch, from_row], strict=True):
        assert (a.target.index, a.target.name) == (b.target.index, b.target.name)
        assert a.target.probability == pytest.approx(b.target.probability, abs=1e-5)
        assert [n.score for n in a.nodes] == pytest.approx([n.score for n in b.nodes], abs=1e-5)
        torch.testing.assert_close(a.confusing.map, b.confusing.map, rtol=1e-4, atol=1e-4)


def test_pil_images_and_arrays(classifier: Classifier, chelsea: Path) -> None:
    with Image.open(chelsea) as picture:
        pixels = np.asarray(picture)
        explanations = explain(classifier, [picture, pixels, Image.fromarray(pixels)], scores="none")
    assert [e.target.index for e in explanations] == [explanations[0].target.index] * 3
    assert [e.source for e in explanations] == [str(chelsea), "<array 1>", "<image 2>"]


@pytest.mark.usefixtures("float32")
def test_batching_does_not_change_results(classifier: Classifier, chelsea: Path, coffee: Path) -> None:
    kinds = ["smooth-gradcam++", "activation"]
    together = explain(classifier, [chelsea, coffee, chelsea], maps=kinds, batch_size=3, seed=3)
    alone = explain(classifier, [coffee], maps=kinds, seed=3) + explain(
        classifier, [chelsea], maps=kinds, seed=3
    )
    for a, b in zip(together[1:], alone, strict=True):  # equal up to float summation order
        torch.testing.assert_close(a.discriminative.map, b.discriminative.map, rtol=1e-4, atol=1e-4)
        assert a.discriminative.score == pytest.approx(b.discriminative.score, abs=1e-5)


def test_seed_is_recorded_only_for_noisy_maps(classifier: Classifier, chelsea: Path) -> None:
    assert explain(classifier, chelsea, scores="none").seed is None
    fresh = explain(classifier, chelsea, maps="smooth-gradcam++", scores="none", seed=None)
    assert isinstance(fresh.seed, int)
    again = explain(classifier, chelsea, maps="smooth-gradcam++", scores="none", seed=fresh.seed)
    torch.testing.assert_close(again.discriminative.map, fresh.discriminative.map)


def test_target_layer_draws_maps_elsewhere(classifier: Classifier, chelsea: Path) -> None:
    explanation = explain(classifier, chelsea, maps=["activation", "contribution"], target_layer="blocks.4")
    assert explanation.feature_layer == "blocks.4"
    assert explanation.discriminative.map.shape == (14, 14)
    assert all(torch.isfinite(heat).all() for node in explanation.nodes for heat in node.maps.values())


def test_full_tree(classifier: Classifier, chelsea: Path) -> None:
    explanation = explain(classifier, chelsea, mode="full", min_size=200, scores="none")
    assert any("+" in n.path and "-" in n.path for n in explanation.nodes)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"maps": "gradcam"}, "unknown map kind"),
        ({"maps": []}, "no map kind"),
        ({"mode": "bushy"}, "mode"),
        ({"min_size": 1}, "min_size"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_options_are_user_errors(
    classifier: Classifier, chelsea: Path, options: dict, message: str
) -> None:
    with pytest.raises(FclensError, match=message):
        explain(classifier, chelsea, **options)


def test_a_tree_that_is_never_split(classifier: Classifier, chelsea: Path) -> None:
    explanation = explain(classifier, chelsea, min_size=2000, curves=True)
    assert [n.path for n in explanation.nodes] == [""]
    assert explanation.discriminative is None and explanation.confusing is None
    root = explanation.nodes[0]
    assert explanation.class_deletion_auc == root.deletion_auc and 0.0 <= root.deletion_auc <= 1.0
    assert explanation.class_insertion_auc == root.insertion_auc and 0.0 <= root.insertion_auc <= 1.0
    assert json.loads(explanation.to_json())["discriminative"] is None


def test_negative_branch_contribution_is_shown_as_its_pull_down(pair: list[Explanation]) -> None:
    """A confusing node's contribution is ≤ 0 where it fires; shown and scored, hot = where it pulls hardest."""
    for explanation in pair:
        node = explanation.confusing
        signed, fires = node.maps["contribution"].flatten(), node.maps["activation"].flatten()
        assert float(signed.max()) <= 1e-6 < float(-signed.min())
        shown = node.shown("contribution").flatten()
        assert torch.corrcoef(torch.stack([shown, fires]))[0, 1] > 0.5
        assert torch.equal(
            explanation.discriminative.shown("contribution"), explanation.discriminative.maps["contribution"]
        )


def test_negative_branch_contribution_score_uses_the_shown_map(classifier: Classifier, chelsea: Path) -> None:
    explanation = explain(classifier, chelsea, maps="contribution")
    node = explanation.confusing
    batch, _ = to_batch(chelsea, classifier.preprocessing)
    with torch.no_grad():
        masked = batch * node.upsampled((224, 224))[None, None]
        expected = classifier(masked).softmax(-1)[0, explanation.target.index]
    assert node.score == pytest.approx(float(expected), rel=1e-4)
