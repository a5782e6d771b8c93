"""Sanity checks of every map kind (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

A map that explains a model must change when what it explains changes. On the known-answer shapes model
(tests/known_answers.py, trained in the session), each node's map of 24 held-out images is set beside the
same node's map after one change: the final layer re-initialised (the tree is split anew from the random
weights), the backbone re-initialised (the tree stays), or the target class replaced by its partner (the
class of the same colour, the hardest change to see). Two maps are compared by Spearman's rank correlation
over the feature grid's 12 × 12 cells; a map kind passes a check when the mean over the images is below
:data:`BOUND`. The negative control, an edge detector that never looks at the model, correlates 1.0 under
every check and the same assertion rejects it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.nn import functional as F

import known_answers as ka
from fclens.explaining import Explanation, explain
from fclens.maps import MAP_KINDS, NodeBatch, register_map
from fclens.models import Classifier, load_model

BOUND = 0.8
"""The most mean rank correlation a map may keep with itself across a change and still be said to depend on
what changed. Grad-CAM++ and LayerCAM keep 0.93–0.95 on Lite0 after the final layer is randomised
(BENCHMARKS.md, "Sanity checks"); fclens's node maps of the shapes model keep at most ~0.7."""

CHECKS = ("final layer", "backbone", "target class")

pytestmark = pytest.mark.slow  # the shapes model trains in ~15 s, once a session


def mean_rank_correlation(before: list[np.ndarray], after: list[np.ndarray]) -> float:
    """Mean over images of Spearman's ρ between two maps of each; a pair where either map is constant
    counts as unchanged (1.0) when both are equal, as uncorrelated (0.0) otherwise."""

    def rho(a: np.ndarray, b: np.ndarray) -> float:
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            return 1.0 if np.array_equal(a, b) else 0.0
        return float(spearmanr(a, b).statistic)

    return float(np.mean([rho(a, b) for a, b in zip(before, after, strict=True)]))


def reinitialised(classifier: Classifier, part: Callable[[nn.Module], nn.Module]) -> Classifier:
    """A copy of ``classifier`` whose ``part`` has fresh, seeded default initial weights."""
    module = copy.deepcopy(classifier.module)
    torch.manual_seed(1)
    for layer in part(module).modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return load_model(module.eval(), class_names=ka.CLASS_NAMES, preprocessing=ka.PREPROCESSING)


EDGES = "edge detector"
"""The negative control's map kind, registered only while the checks run."""


def edge_maps(batch: NodeBatch) -> torch.Tensor:
    """Sobel gradient magnitude of each image's grey level, averaged over each cell of the feature grid, for
    every node alike: a "map" that sees only the picture, (N, n, h, w)."""
    grey = batch.inputs.mean(dim=1, keepdim=True)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).to(grey)
    magnitude = F.conv2d(grey, torch.stack([sobel, sobel.T])[:, None], padding=1).norm(dim=1, keepdim=True)
    cells = F.adaptive_avg_pool2d(magnitude, batch.capture.features.shape[2:])
    return cells.expand(-1, batch.membership.shape[1], -1, -1)


NODES = {"+": "discriminative", "-": "confusing", "": "root"}


def node_maps(explanations: list[Explanation], node: str) -> list[np.ndarray]:
    """The shown map of each explanation's discriminative ("+"), confusing ("-") or root ("") node."""
    picked = [e.nodes[0] if node == "" else getattr(e, NODES[node]) for e in explanations]
    return [n.shown().flatten().numpy() for n in picked]


@pytest.fixture(scope="module")
def held_out() -> ka.KnownAnswers:
    return ka.make(4, seed=1)


@pytest.fixture(scope="module")
def correlations(shapes: Classifier, held_out: ka.KnownAnswers) -> dict[tuple[str, str, str], float]:
    """Mean rank correlation for (map kind, node, check): every kind (the control's too), every node."""
    images, labels = held_out.images, held_out.labels.tolist()
    variants = {
        "final layer": (reinitialised(shapes, lambda m: m.fc), labels),
        "backbone": (reinitialised(shapes, lambda m: m.features), labels),
        "target class": (shapes, [ka.partner(label) for label in labels]),
    }

    def explained(classifier: Classifier, targets: list[int], kind: str) -> list[Explanation]:
        return explain(classifier, images, targets, maps=kind, scores="none", min_size=ka.MIN_SIZE, seed=0)

    found = {}
    register_map(EDGES, "the negative control: Sobel edges of the picture")(edge_maps)
    try:
        for kind in MAP_KINDS:
            before = explained(shapes, labels, kind)
            for check, (classifier, targets) in variants.items():
                after = explained(classifier, targets, kind)
                for node in NODES:
                    found[kind, node, check] = mean_rank_correlation(
                        node_maps(before, node), node_maps(after, node)
                    )
    finally:
        del MAP_KINDS[EDGES]
    return found


def test_the_shapes_model_explains_its_own_classes(shapes: Classifier, held_out: ka.KnownAnswers) -> None:
    """The checks compare a model that has learned the task (every held-out image right) with changed ones."""
    with torch.no_grad():
        predicted = shapes.module(held_out.images).argmax(dim=1)
    assert torch.equal(predicted, held_out.labels)


@pytest.mark.parametrize("kind", list(MAP_KINDS))
@pytest.mark.parametrize("check", CHECKS)
def test_every_kind_of_terminal_node_map_changes_with_the_weights_and_the_class(
    correlations: dict, kind: str, check: str
) -> None:
    for node in ("+", "-"):
        assert correlations[kind, node, check] < BOUND, (
            kind,
            NODES[node],
            check,
            correlations[kind, node, check],
        )


@pytest.mark.parametrize("check", CHECKS)
def test_the_class_activation_map_changes_with_the_weights_and_the_class(
    correlations: dict, check: str
) -> None:
    """The root's contribution map is CAM (Zhou et al. 2016): Σ_j w_kj F_j, every neuron weighted by the class."""
    assert correlations["contribution", "", check] < BOUND


@pytest.mark.parametrize("kind", [kind for kind, found in MAP_KINDS.items() if not found.signed])
def test_an_unweighted_root_map_is_the_same_for_every_class(correlations: dict, kind: str) -> None:
    """The root holds every neuron: summing them unweighted (activation, smooth-gradcam++) draws where the
    features fire at all, the same map whatever the final layer or the class, and the check rejects it.
    (After the backbone is re-initialised it moves, but random convolutions still trace the picture's
    structure: 0.85 and 0.22 here, for activation and smooth-gradcam++.) A node is read against the
    class's map in the primary kind; for a class-specific one, CAM, choose ``contribution``."""
    assert correlations[kind, "", "final layer"] == pytest.approx(1.0)
    assert correlations[kind, "", "target class"] == pytest.approx(1.0)


@pytest.mark.parametrize("check", CHECKS)
def test_an_edge_detector_is_rejected_by_the_same_check(correlations: dict, check: str) -> None:
    """The negative control: a map of the picture alone, drawn through the same explanations, is the same
    under every change, so the assertion the node maps pass fails for it at every node."""
    for node in NODES:
        assert correlations[EDGES, node, check] == pytest.approx(1.0)
        assert not correlations[EDGES, node, check] < BOUND
