"""Masked score (the author's recipe), deletion/insertion curves, their fills and baselines, on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms.functional import gaussian_blur

import known_answers as ka
from fclens.atlasing import atlas
from fclens.cli import main
from fclens.errors import FclensError
from fclens.explaining import explain
from fclens.head import evaluating
from fclens.models import Classifier
from fclens.options import FILLS, Options
from fclens.scanning import LocalEngine, scan
from fclens.scores import (
    BLUR_KERNEL,
    BLUR_SIGMA,
    ROAD_WEIGHTS,
    deletion_insertion,
    masked_score,
    random_maps,
    road_fill,
    upsample_normalised,
)


def probabilities(classifier: Classifier, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), evaluating(classifier.module):
        return classifier(inputs).softmax(dim=1).cpu()


def class_map(classifier: Classifier, inputs: torch.Tensor, k: int) -> torch.Tensor:
    """The class activation map of class k, (N, h, w): a map that should be faithful."""
    with torch.no_grad():
        features = classifier.module.forward_features(inputs)
    return torch.einsum("d,ndhw->nhw", classifier.head.weight[k].to(features), features)


def test_upsampling_scales_each_map_to_the_unit_interval() -> None:
    maps = torch.randn(2, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    maps[1, 2] = 5.0  # constant: highlights nothing
    up = upsample_normalised(maps, (224, 200))
    assert up.shape == (2, 3, 224, 200)
    flat = up.flatten(2)
    assert torch.equal(flat[1, 2], torch.zeros(224 * 200))
    assert torch.allclose(flat.amin(dim=2), torch.zeros(2, 3))
    assert torch.allclose(flat.amax(dim=2)[[0, 0, 0, 1, 1], [0, 1, 2, 0, 1]], torch.ones(5))


@pytest.mark.usefixtures("float32")
def test_masked_score_is_the_authors_recipe(classifier: Classifier, photos: torch.Tensor) -> None:
    """Bicubic to the input size, min-max to [0, 1], times the normalised input, softmax of the target."""
    maps = class_map(classifier, photos, 285)
    rows, targets = torch.tensor([0, 1]), torch.tensor([285, 967])
    scores = masked_score(classifier.module, photos, maps, rows, targets, batch_size=1)

    mask = F.interpolate(maps[:, None].float(), size=photos.shape[2:], mode="bicubic", align_corners=False)
    low, high = mask.amin(dim=(2, 3), keepdim=True), mask.amax(dim=(2, 3), keepdim=True)
    expected = probabilities(classifier, photos * (mask - low) / (high - low))[[0, 1], [285, 967]]
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)
    # Batching the forwards changes nothing.
    torch.testing.assert_close(
        masked_score(classifier.module, photos, maps, rows, targets, batch_size=16), scores
    )


@pytest.mark.usefixtures("float32")
def test_curves_start_and_end_where_they_must(classifier: Classifier, photos: torch.Tensor) -> None:
    chelsea = photos[:1]
    k = int(probabilities(classifier, chelsea).argmax())
    heat = class_map(classifier, chelsea, k)
    curves = deletion_insertion(
        classifier.module, chelsea, heat, torch.tensor([0]), torch.tensor([k]), steps=4
    )
    assert curves.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curves.deletion.shape == curves.insertion.shape == (1, 5)
    clean = probabilities(classifier, chelsea)[0, k]
    blurred = gaussian_blur(chelsea, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
    for value, expected in [
        (curves.deletion[0, 0], clean),  # nothing deleted yet
        (curves.insertion[0, -1], clean),  # everything inserted
        (
            curves.deletion[0, -1],
            probabilities(classifier, torch.zeros_like(chelsea))[0, k],
        ),  # all mean colour
        (curves.insertion[0, 0], probabilities(classifier, blurred)[0, k]),
    ]:
        torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-5)
    for auc in (curves.deletion_auc, curves.insertion_auc):
        assert auc.shape == (1,) and 0.0 <= float(auc) <= 1.0
    torch.testing.assert_close(curves.deletion_auc, torch.trapezoid(curves.deletion, curves.fractions))


def test_a_faithful_map_beats_its_opposite(classifier: Classifier, photos: torch.Tensor) -> None:
    """The class activation map vs its negation: deleting what it ranks first hurts more, inserting helps more."""
    rows, targets = torch.tensor([0, 0, 1, 1]), torch.tensor([285, 285, 967, 967])
    heat = class_map(classifier, photos, 285)
    heat[1] = class_map(classifier, photos[1:], 967)[0]
    maps = torch.stack([heat[0], -heat[0], heat[1], -heat[1]])
    curves = deletion_insertion(classifier.module, photos, maps, rows, targets, steps=8)
    deletion, insertion = curves.deletion_auc, curves.insertion_auc
    assert deletion[0] < deletion[1] and deletion[2] < deletion[3]
    assert insertion[0] > insertion[1] and insertion[2] > insertion[3]


def test_a_model_that_cannot_take_channels_last_is_scored_as_given() -> None:
    """The CPU runs scoring forwards in channels-last order; a model whose view() refuses it still scores."""

    class Viewing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            maps = torch.relu(self.conv(x))
            return self.fc(maps.view(maps.shape[0], -1))  # view() needs contiguous maps

    torch.manual_seed(0)
    model = Viewing().eval()
    inputs = torch.randn(2, 3, 32, 32)
    with pytest.raises(RuntimeError, match="view"):
        model(inputs.contiguous(memory_format=torch.channels_last))
    maps = torch.rand(3, 8, 8)
    rows, targets = torch.tensor([0, 1, 1]), torch.tensor([2, 0, 1])
    scores = masked_score(model, inputs, maps, rows, targets, batch_size=2)
    with torch.no_grad():
        expected = model(inputs[rows] * upsample_normalised(maps, (32, 32))[:, None]).softmax(dim=1)
    torch.testing.assert_close(scores, expected[[0, 1, 2], targets])


# --- fills and baselines (issue 24) ---------------------------------------------------------------------


def test_road_fill_makes_each_removed_pixel_the_weighted_mean_of_its_neighbours() -> None:
    """ROAD's equation, checked pixel by pixel: s_p x_p = Σ_q w_pq x_q over the neighbours inside the image."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(3, 20, 24, generator=generator)
    removed = torch.rand(20, 24, generator=generator) < 0.4
    removed[:6, :6] = True  # a hole on the corner, too
    filled = road_fill(image, removed)
    assert torch.equal(filled[:, ~removed], image[:, ~removed])
    weights = torch.zeros(3, 3, dtype=torch.float64)
    for (dy, dx), weight in ROAD_WEIGHTS:
        weights[1 + dy, 1 + dx] = weight
    kernel = weights.expand(3, 1, 3, 3)
    neighbours = F.conv2d(filled.double()[None], kernel, padding=1, groups=3)[0]
    inside = F.conv2d(torch.ones(1, 1, 20, 24, dtype=torch.float64), weights[None, None], padding=1)[0]
    torch.testing.assert_close(
        (inside * filled.double())[:, removed], neighbours[:, removed], rtol=0, atol=1e-5
    )


def test_road_fill_keeps_a_linear_ramp_and_follows_a_change_of_units() -> None:
    """A plane is its own neighbours' mean, so a hole clear of the border is filled exactly; and imputing in
    normalised units is normalising the imputed image (the equation is affine-invariant)."""
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    ramp = torch.stack([0.1 * ys - 0.05 * xs, 0.02 * xs + 0.3, -0.04 * ys])
    removed = torch.zeros(16, 16, dtype=torch.bool)
    removed[3:12, 4:13] = True
    torch.testing.assert_close(road_fill(ramp, removed), ramp, rtol=0, atol=1e-5)
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    scale, shift = torch.tensor([2.0, 0.5, 4.0])[:, None, None], torch.tensor([-1.0, 0.2, 0.0])[:, None, None]
    torch.testing.assert_close(
        road_fill(image * scale + shift, removed),
        road_fill(image, removed) * scale + shift,
        rtol=0,
        atol=1e-5,
    )
    everything = torch.ones(16, 16, dtype=torch.bool)  # nothing left to interpolate from: the mean colour
    torch.testing.assert_close(
        road_fill(image, everything), image.mean(dim=(1, 2), keepdim=True).expand_as(image)
    )
    assert torch.equal(road_fill(image, ~everything), image)


@pytest.mark.usefixtures("float32")
@pytest.mark.parametrize("fill", FILLS)
def test_every_fill_starts_and_ends_where_it_must(
    classifier: Classifier, photos: torch.Tensor, fill: str
) -> None:
    """Nothing removed: the clean image; everything removed: the fill alone, in both curves (``rise`` fills
    deletion with the mean colour and insertion with a blurred copy, as fclens always did)."""
    chelsea = photos[:1]
    heat = class_map(classifier, chelsea, 285)
    curves = deletion_insertion(
        classifier.module,
        chelsea,
        heat,
        torch.tensor([0]),
        torch.tensor([285]),
        steps=2,
        fill=fill,
        noise=0.0,
    )
    blurred = gaussian_blur(chelsea, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
    mean = chelsea.mean(dim=(2, 3), keepdim=True).expand_as(chelsea)
    emptied = {"rise": (torch.zeros_like(chelsea), blurred), "blur": (blurred, blurred)}.get(
        fill, (mean, mean)
    )
    clean = probabilities(classifier, chelsea)[0, 285]
    assert curves.fill == fill
    torch.testing.assert_close(curves.deletion[0, 0], clean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(curves.insertion[0, -1], clean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        curves.deletion[0, -1], probabilities(classifier, emptied[0])[0, 285], rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        curves.insertion[0, 0], probabilities(classifier, emptied[1])[0, 285], rtol=1e-4, atol=1e-5
    )


def test_an_unknown_fill_is_refused() -> None:
    with pytest.raises(FclensError, match="fill must be one of rise, blur, mean, road; got 'black'"):
        Options(fill="black")


def test_the_random_baseline_is_seeded_by_the_image_not_its_batch(photos: torch.Tensor) -> None:
    both = random_maps(photos, (7, 7), seed=0)
    assert both.shape == (2, 7, 7) and bool(((both >= 0) & (both < 1)).all())
    assert torch.equal(random_maps(photos[1:], (7, 7), seed=0)[0], both[1])
    assert torch.equal(random_maps(photos.flip(0), (7, 7), seed=0), both.flip(0))
    assert not torch.equal(both[0], both[1])
    assert not torch.equal(random_maps(photos, (7, 7), seed=1), both)


def test_explain_sets_each_scored_node_beside_the_class_map_and_a_random_map(
    classifier: Classifier, chelsea: Path, tmp_path: Path
) -> None:
    """Through the command: --curves --fill mean gives the random map's AUCs, the fill, and a verdict per node
    that says how its AUCs compare with the root's and the random map's."""
    assert (
        main(["explain", str(chelsea), "--curves", "--fill", "mean", "--out", str(tmp_path), "--json"]) == 0
    )
    (written,) = tmp_path.glob("*/explanation.json")
    found = json.loads(written.read_text("utf-8"))
    baselines = found["baselines"]
    assert baselines["fill"] == "mean" and found["seed"] == 0
    assert np.asarray(baselines["random_map"]).shape == (7, 7)
    root = found["nodes"][0]
    scored = [node for node in found["nodes"] if node["deletion_auc"] is not None]
    assert [node["path"] for node in scored] == ["", found["discriminative"], found["confusing"]]
    assert root["verdict"]["deletes_faster_than_class"] is None
    for node in scored:
        verdict = node["verdict"]
        assert verdict["deletes_faster_than_random"] == (
            node["deletion_auc"] < baselines["random_deletion_auc"]
        )
        assert verdict["keeps_longer_than_random"] == (
            node["insertion_auc"] > baselines["random_insertion_auc"]
        )
        if node["path"]:
            assert verdict["deletes_faster_than_class"] == (node["deletion_auc"] < root["deletion_auc"])
            assert verdict["keeps_longer_than_class"] == (node["insertion_auc"] > root["insertion_auc"])
    unscored = [node for node in found["nodes"] if node["deletion_auc"] is None]
    assert unscored and all(node["verdict"] is None for node in unscored)


@pytest.mark.slow
def test_a_scan_with_curves_agrees_with_explain_and_the_atlas_counts_the_verdicts(
    shapes: Classifier, tmp_path: Path
) -> None:
    """On the shapes model: the scan's curve columns hold what explain gives the same images (the root's AUCs
    are the class map's, the random map's are per image), and the atlas's shares count the discriminative
    node's verdicts and its mean areas over each class's images."""
    data = ka.make(3, seed=1)
    scanned = scan(
        shapes, ka.KnownAnswersDataset(data), tmp_path / "scan", min_size=ka.MIN_SIZE, curves=True, fill="blur",
        engine=LocalEngine(workers=0), batch_size=7, progress=False,
    )  # fmt: skip
    assert scanned.manifest.options.curves and scanned.manifest.options.fill == "blur"
    rows = scanned.table.sort_by("index").to_pylist()
    explained = explain(shapes, data.images, data.labels.tolist(), curves=True, fill="blur", min_size=ka.MIN_SIZE,
                        scores="none", batch_size=5)  # fmt: skip
    for row, explanation in zip(rows, explained, strict=True):
        baselines = explanation.baselines
        assert row["random_deletion_auc"] == pytest.approx(baselines.random_deletion_auc, abs=1e-5)
        assert row["random_insertion_auc"] == pytest.approx(baselines.random_insertion_auc, abs=1e-5)
        for node, deletion, insertion in zip(
            explanation.nodes, row["node_deletion_auc"], row["node_insertion_auc"], strict=True
        ):
            assert (deletion is None) == (node.deletion_auc is None)
            if deletion is not None:
                assert deletion == pytest.approx(node.deletion_auc, abs=1e-5)
                assert insertion == pytest.approx(node.insertion_auc, abs=1e-5)
    found = atlas(scanned)
    for c in found.classes:
        mine = [e for e in explained if e.target.index == c.index]
        verdicts = [e.discriminative.verdict for e in mine]
        assert c.baselines is not None and c.baselines.path == mine[0].discriminative.path
        assert c.baselines.n == len(mine) == 3
        for name in ("deletes_faster_than_class", "deletes_faster_than_random", "keeps_longer_than_random"):
            assert getattr(c.baselines, name) == pytest.approx(np.mean([getattr(v, name) for v in verdicts]))
        for curve in ("deletion_auc", "insertion_auc"):
            mean = np.mean([getattr(e.discriminative, curve) for e in mine])
            assert getattr(c.baselines, curve) == pytest.approx(mean, abs=1e-4)
    assert json.loads(json.dumps(found.to_dict()))["classes"][0]["baselines"]["n"] == 3


def test_the_class_map_is_cam_and_gradcam_is_its_relu(classifier: Classifier, photos: torch.Tensor) -> None:
    """The root's contribution map, the class map a node's curves are read against, is CAM (Zhou et al. 2016);
    pytorch-grad-cam's Grad-CAM at the feature layer is its ReLU, scaled and resized the library's way: its
    channel weights, the mean gradients of the logit over the grid, are w_kj / (h·w)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    root = explain(classifier, photos, [282, 967], maps="contribution", scores="none", min_size=5000)
    cam = torch.stack([e.nodes[0].map for e in root])
    expected_cam = torch.stack(
        [class_map(classifier, photos[i : i + 1], k)[0] for i, k in enumerate((282, 967))]
    )
    torch.testing.assert_close(cam, expected_cam.float().cpu(), rtol=1e-4, atol=1e-4)
    layer = dict(classifier.module.named_modules())[classifier.head.feature_layer_name]
    with GradCAM(model=classifier.module, target_layers=[layer]) as gradcam:
        theirs = gradcam(
            input_tensor=photos, targets=[ClassifierOutputTarget(282), ClassifierOutputTarget(967)]
        )
    # ReLU, min-max and resize per layer, then min-max again over the layers' mean: pytorch-grad-cam's steps
    expected = scale_cam_image(scale_cam_image(cam.clamp(min=0).numpy(), (224, 224)))
    np.testing.assert_allclose(theirs, expected, atol=1e-4)
