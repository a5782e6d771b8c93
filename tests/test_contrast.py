"""Contrast maps: where an image argues for a rival class over the target, exact for affine heads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crops import CATS
from fclens.cli import main
from fclens.errors import FclensError
from fclens.explaining import Explanation, explain
from fclens.maps import capture, contrast_maps
from fclens.models import Classifier, load_model
from fclens.report import explanations_page
from zoo import SMALL, random_inputs, zoo


def runner_up(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 and top-2 classes of each row."""
    top = logits.topk(2, dim=1).indices
    return top[:, 0], top[:, 1]


def assert_mean_is_the_logit_difference(classifier: Classifier, inputs: torch.Tensor) -> None:
    """mean_xy(contrast) + b_j − b_k = logit_j − logit_k, for the runner-up j and a far class."""
    head = classifier.head
    captured = capture(classifier.module, head, inputs)
    logits = captured.logits.double()
    targets, rivals = runner_up(captured.logits)
    far = captured.logits.argmin(dim=1)
    bias = head.bias.double()
    for other in (rivals, far):
        maps = contrast_maps(captured, head, targets, other)
        assert maps.shape == (len(inputs), *captured.features.shape[2:])
        rows = torch.arange(len(inputs), device=inputs.device)
        expected = logits[rows, other] - logits[rows, targets]
        got = maps.double().mean(dim=(1, 2)) + bias[other] - bias[targets]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * float(logits.abs().max()))


@pytest.mark.usefixtures("float32")
def test_contrast_mean_is_the_logit_difference_on_real_photos(
    classifier: Classifier, photos: torch.Tensor
) -> None:
    assert_mean_is_the_logit_difference(classifier, photos)


@pytest.mark.usefixtures("float32")
def test_contrast_mean_is_the_logit_difference_after_a_layernorm(device: torch.device) -> None:
    """avg-norm (ConvNeXt): the per-image scale and offset of the LayerNorm enter the map."""
    classifier = zoo("convnext_tiny", device)
    assert classifier.head.pooling == "avg-norm"
    assert_mean_is_the_logit_difference(classifier, random_inputs(2, device))


def test_contrast_of_a_class_with_itself_is_zero(classifier: Classifier, photos: torch.Tensor) -> None:
    captured = capture(classifier.module, classifier.head, photos)
    targets, _ = runner_up(captured.logits)
    assert contrast_maps(captured, classifier.head, targets, targets).abs().max() == 0


class MLPHead(nn.Module):
    """Conv features → mean → an MLP: logits are not affine in the feature map."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2)
        )
        self.rest = nn.Sequential(
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 6)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.features(x))


def test_non_affine_head_gets_gradient_times_activation_of_the_difference() -> None:
    """Checked against autograd of logit_j − logit_k taken by hand at the gradient layer."""
    model = MLPHead()
    classifier = load_model(model, preprocessing=SMALL)
    head = classifier.head
    assert not head.affine
    inputs = random_inputs(3, torch.device("cpu"))
    captured = capture(model, head, inputs, graph=True)
    targets, rivals = runner_up(captured.logits)
    maps = contrast_maps(captured, head, targets, rivals)

    kept: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        output.retain_grad()
        kept["a"] = output

    handle = head.gradient_layer.register_forward_hook(keep)
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    rows = torch.arange(len(inputs))
    (logits[rows, rivals] - logits[rows, targets]).sum().backward()
    activations = head.spatial(kept["a"])
    expected = (head.spatial(kept["a"].grad) * activations).sum(dim=1).detach()
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    assert maps.abs().max() > 0


def test_non_affine_head_needs_a_capture_with_a_graph() -> None:
    classifier = load_model(MLPHead(), preprocessing=SMALL)
    captured = capture(classifier.module, classifier.head, random_inputs(1, torch.device("cpu")))
    targets, rivals = runner_up(captured.logits)
    with pytest.raises(FclensError, match="graph=True"):
        contrast_maps(captured, classifier.head, targets, rivals)


# --- explain(..., contrast=) ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def contrasted(classifier: Classifier, chelsea: Path, coffee: Path) -> list[Explanation]:
    return explain(classifier, [chelsea, coffee], maps=("activation", "contribution"), contrast="runner-up")


def test_runner_up_is_the_most_probable_other_class(contrasted: list[Explanation]) -> None:
    for explanation in contrasted:
        contrast = explanation.contrast
        assert contrast is not None
        others = [p for p in explanation.top5 if p.index != explanation.target.index]
        assert contrast.rival.index == others[0].index and contrast.rival.name == others[0].name
        assert contrast.rival.probability == pytest.approx(others[0].probability)
    assert contrasted[0].contrast.rival.index in CATS  # a cat's rival is another cat


@pytest.mark.usefixtures("float32")
def test_explained_contrast_map_adds_up_to_the_logit_gap(
    contrasted: list[Explanation], classifier: Classifier
) -> None:
    bias = classifier.head.bias.cpu().double()
    for explanation in contrasted:
        contrast = explanation.contrast
        j, k = contrast.rival.index, explanation.target.index
        assert contrast.map.shape == (7, 7) and contrast.map.device.type == "cpu"
        mean = float(contrast.map.double().mean() + bias[j] - bias[k])
        assert mean == pytest.approx(contrast.gap, abs=1e-4 * max(1.0, abs(contrast.gap)))
        # The gap is also what the two probabilities say: log(p_j / p_k).
        ratio = np.log(contrast.rival.probability / explanation.target.probability)
        assert contrast.gap == pytest.approx(ratio, abs=1e-3)
        assert contrast.gap < 0  # the target is the top-1 class


def test_contrast_neurons_are_against_the_target_and_for_the_rival(
    contrasted: list[Explanation], classifier: Classifier
) -> None:
    weight = classifier.head.weight.detach().cpu().numpy()
    for explanation in contrasted:
        contrast = explanation.contrast
        j, k = contrast.rival.index, explanation.target.index
        expected = set(explanation.tree.node("-").indices) & set(contrast.rival_tree.node("+").indices)
        assert set(contrast.neurons.tolist()) == expected and len(expected) > 10
        assert (weight[k, contrast.neurons] < weight[k].mean()).all()
        assert (weight[j, contrast.neurons] >= weight[j].mean()).all()
        assert (np.diff(contrast.evidence) <= 0).all() and contrast.evidence[0] > 0
        assert contrast.rival_tree.class_index == j


def test_contrast_holds_the_rival_terminal_nodes_in_every_kind(contrasted: list[Explanation]) -> None:
    contrast = contrasted[0].contrast
    ends = (contrast.rival_discriminative, contrast.rival_confusing)
    assert [end.path for end in ends] == [
        contrast.rival_tree.discriminative.path,
        contrast.rival_tree.confusing.path,
    ]
    for end in ends:
        assert list(end.maps) == ["activation", "contribution"] and end.score is None
        assert end.map.shape == (7, 7)
    # the rival's − node pulls the rival's logit down: its contribution map is ≤ 0 on average
    assert float(contrast.rival_confusing.maps["contribution"].mean()) < 0


def test_contrast_with_a_named_class_and_in_json(classifier: Classifier, chelsea: Path) -> None:
    explanation = explain(classifier, chelsea, contrast="espresso", scores="none")
    assert explanation.contrast.rival.name == "espresso" and explanation.contrast.gap < -5
    data = json.loads(explanation.to_json())["contrast"]
    assert data["rival"]["index"] == 967 and len(data["map"]) == 7
    assert data["neurons"][:3] == explanation.contrast.neurons[:3].tolist()
    plain = explain(classifier, chelsea, scores="none")
    assert plain.contrast is None and plain.to_dict()["contrast"] is None


def test_contrast_with_the_target_itself_is_refused(classifier: Classifier, chelsea: Path) -> None:
    with pytest.raises(FclensError, match="explained class itself"):
        explain(classifier, chelsea, target=285, contrast=285, scores="none")


def test_contrast_on_a_non_affine_head() -> None:
    classifier = load_model(MLPHead(), preprocessing=SMALL)
    inputs = random_inputs(2, torch.device("cpu"))
    explanations = explain(classifier, inputs, contrast="runner-up", min_size=8, scores="none")
    for explanation in explanations:
        assert explanation.contrast.map.shape == explanation.nodes[0].map.shape
        assert torch.isfinite(explanation.contrast.map).all() and explanation.contrast.map.abs().max() > 0


def test_page_shows_the_contrast_and_the_pair(contrasted: list[Explanation]) -> None:
    page = explanations_page(contrasted)
    assert page.count('<figure class="big contrast">') == 2
    assert page.count('<table class="pair">') == 2
    rival = contrasted[0].contrast.rival.name
    assert f"Why not {rival}" in page
    plain = explanations_page([dataclasses.replace(contrasted[0], contrast=None)])
    assert "big contrast" not in plain and 'class="pair"' not in plain


def test_cli_contrast(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(
        [
            "explain",
            "--sample",
            "chelsea",
            "--contrast",
            "runner-up",
            "--out",
            str(tmp_path),
            "--json",
            "--html",
        ]
    )
    (row,) = json.loads(capsys.readouterr().out)
    assert code == 0 and row["explanation"]["contrast"]["rival"]["index"] in CATS
    assert "Why not" in (tmp_path / "report.html").read_text("utf-8")
    code = main(["explain", "--sample", "chelsea", "--contrast", "espreso", "--out", str(tmp_path)])
    assert code == 2 and "did you mean" in capsys.readouterr().err
