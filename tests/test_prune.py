"""fclens.prune: each method's order, the masks, the evaluation against a direct one, scans and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from PIL import Image
from torch import nn

import fclens
from fclens.cli import main
from fclens.errors import FclensError
from fclens.formatting import percent
from fclens.pruning import METHODS, curve, prune, pruning_ranks
from fclens.scanning import LocalEngine
from fclens.scanning.features import Features
from fclens.tree import split_tree
from striped import CLASSES, Pairs, striped_images

PER_CLASS = [m for m in METHODS if m not in ("magnitude", "random")]


def laplace_layer(classes: int = 12, inputs: int = 200, seed: int = 0) -> np.ndarray:
    """A layer whose rows are asymmetric-Laplace-like, as the paper finds in trained classifiers."""
    rng = np.random.default_rng(seed)
    pos = rng.exponential(0.05, size=(classes, inputs))
    neg = -rng.exponential(0.03, size=(classes, inputs))
    return np.where(rng.random((classes, inputs)) < 0.4, pos, neg) - 0.01


def direct(z: np.ndarray, w: np.ndarray, b: np.ndarray, mask: np.ndarray, shift: bool):
    """The unpruned and the pruned top-1 per image and the mean KL, computed the plain way in float64."""

    def log_softmax(logits: np.ndarray) -> np.ndarray:
        top = logits.max(axis=1, keepdims=True)
        return logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))

    z, w, b = z.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    ref = z @ w.T + b
    removed = np.where(mask, 0.0, w)
    logits = z @ np.where(mask, w, 0.0).T + b + (removed @ z.mean(axis=0) if shift else 0.0)
    ref_log, log = log_softmax(ref), log_softmax(logits)
    kl = (np.exp(ref_log) * (ref_log - log)).sum(axis=1).mean()
    return ref.argmax(axis=1), logits.argmax(axis=1), kl


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9, 0.99])
def test_masks_remove_the_asked_share_and_are_nested(method: str, sparsity: float):
    w = laplace_layer()
    mask = prune(w, sparsity, method=method)
    assert mask.dtype == bool and mask.shape == w.shape
    if method in PER_CLASS:
        assert (~mask).sum(axis=1).tolist() == [round(sparsity * w.shape[1])] * w.shape[0]
    else:
        assert (~mask).sum() == round(sparsity * w.size)
    # A sparser mask removes a superset: the curve walks one order, it never reshuffles.
    assert not (prune(w, min(sparsity + 0.05, 0.995), method=method) & ~mask).any()


def test_magnitude_removes_the_smallest_weights_globally_and_per_class():
    w = laplace_layer()
    mask = prune(w, 0.7, "magnitude")
    assert np.abs(w[~mask]).max() <= np.abs(w[mask]).min()
    per_class = prune(w, 0.7, "magnitude-per-class")
    for row, keep in zip(w, per_class, strict=True):
        assert np.abs(row[~keep]).max() <= np.abs(row[keep]).min()
    assert (per_class != mask).any()  # the two differ on a layer whose rows differ in scale


def test_random_is_seeded():
    w = laplace_layer()
    np.testing.assert_array_equal(prune(w, 0.5, "random", seed=3), prune(w, 0.5, "random", seed=3))
    assert (prune(w, 0.5, "random", seed=3) != prune(w, 0.5, "random", seed=4)).any()


def test_tree_prunes_level_by_level_and_keeps_the_terminal_nodes_last():
    w = laplace_layer(classes=3, inputs=400)
    ranks = pruning_ranks(w, "tree", min_size=20)
    for row, rank in zip(w, ranks, strict=True):
        tree = split_tree(row, min_size=20)
        plus, minus = tree.chain("+"), tree.chain("-")
        terminal = np.union1d(plus[-1].indices, minus[-1].indices)
        # The weights kept last are exactly the two terminal nodes.
        last = np.argsort(rank)[-terminal.size :]
        np.testing.assert_array_equal(np.sort(last), terminal)
        # The first to go left a chain at its first split ("+" but not "++", "-" but not "--").
        first_level = np.union1d(
            np.setdiff1d(plus[0].indices, plus[1].indices), np.setdiff1d(minus[0].indices, minus[1].indices)
        )
        first = np.argsort(rank)[: first_level.size]
        np.testing.assert_array_equal(np.sort(first), first_level)
        # Within that level, nearest the class mean first.
        distance = np.abs(row - row.mean())[np.argsort(rank)[: first_level.size]]
        assert np.all(np.diff(distance) >= 0)


def test_ald_prunes_the_most_probable_weights_under_the_fitted_prior_first():
    from fclens.ald import fit_ald

    w = laplace_layer(classes=4)
    mle = fit_ald(w, method="mle").mle
    ranks = pruning_ranks(w, "ald")
    for k, row in enumerate(w):
        prior = scipy.stats.laplace_asymmetric(mle.kappa[k], loc=mle.loc[k], scale=mle.scale[k])
        tail = np.where(row >= mle.loc[k], prior.sf(row), prior.cdf(row))
        np.testing.assert_array_equal(np.argsort(ranks[k]), np.argsort(-tail, kind="stable"))
    # It is not magnitude pruning: it centres on the fitted location and scales each side.
    assert (ranks != pruning_ranks(w, "magnitude-per-class")).any()


def test_ald_deviant_prunes_the_largest_residuals_from_the_papers_line_first():
    w = laplace_layer(classes=2, inputs=300)
    w[0, 5] = 0.0  # an exact zero is left out of the paper's fit: it deviates most
    ranks = pruning_ranks(w, "ald-deviant")
    for k, row in enumerate(w):
        residual = np.empty_like(row)
        for part in (row > 0, row < 0):
            y = np.abs(row[part])
            order = np.argsort(y)
            x = np.arange(y.size) / y.size
            slope, intercept = np.polyfit(x, np.log(y[order]), 1)
            r = np.empty_like(y)
            r[order] = np.abs(np.log(y[order]) - (slope * x + intercept))
            residual[part] = r
        residual[row == 0] = np.inf
        np.testing.assert_array_equal(np.argsort(ranks[k]), np.argsort(-residual, kind="stable"))
    assert np.argsort(ranks[0])[0] == 5


def test_a_conv_shaped_layer_gets_a_mask_of_its_shape():
    w = torch.from_numpy(laplace_layer()).reshape(12, 200, 1, 1)
    mask = prune(w, 0.5, "tree")
    assert mask.shape == (12, 200, 1, 1)
    np.testing.assert_array_equal(mask[:, :, 0, 0].numpy(), prune(laplace_layer(), 0.5, "tree"))


def test_the_mask_is_the_kind_of_the_weight_so_that_weight_times_mask_works():
    array = laplace_layer()
    tensor = nn.Parameter(torch.from_numpy(array))
    from_tensor, from_array = prune(tensor, 0.7, "magnitude"), prune(array, 0.7, "magnitude")
    assert isinstance(from_tensor, torch.Tensor) and from_tensor.dtype == torch.bool
    assert isinstance(from_array, np.ndarray) and from_array.dtype == bool
    np.testing.assert_array_equal(from_tensor.numpy(), from_array)
    assert (tensor.detach() * from_tensor == 0).float().mean().item() == pytest.approx(0.7, abs=1e-3)


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, True, float("nan")])
def test_sparsity_outside_zero_one_is_refused(sparsity: float):
    with pytest.raises(FclensError, match=r"sparsity must be a number in \[0, 1\)"):
        prune(laplace_layer(), sparsity)


def test_unknown_method_lists_the_choices():
    with pytest.raises(FclensError, match="choose from magnitude, magnitude-per-class, random, tree, ald"):
        prune(laplace_layer(), 0.5, method="biggest")


def curve_of(z: np.ndarray, w: np.ndarray, b: np.ndarray | None, labels=None, **options) -> fclens.PruneCurve:
    """The curve of the layer (w, b) on features z held in memory."""
    return curve(Features.of(z, labels, layer=(w, b)), **options)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_the_curve_equals_a_direct_evaluation_of_each_pruned_layer(bias_correction: bool):
    rng = np.random.default_rng(1)
    w = laplace_layer(classes=8, inputs=64)
    b = rng.normal(0, 0.1, 8).astype(np.float32)
    z = np.maximum(rng.normal(0.3, 1, size=(500, 64)), 0).astype(np.float32)
    y = (z @ w.T + b).argmax(axis=1)
    y[::3] = rng.integers(0, 8, size=y[::3].shape)  # some labels the layer gets wrong
    labels = y.astype(np.float64)
    labels[::7] = np.nan  # and some images without a label
    curve = curve_of(
        z,
        w,
        b,
        labels=labels,
        methods=METHODS,
        sparsities=[0.5, 0.0, 0.95, 0.9],
        bias_correction=bias_correction,
    )
    # In the order asked for.
    assert [(p.method, p.sparsity) for p in curve.points[:4]] == [
        (METHODS[0], s) for s in (0.5, 0.0, 0.95, 0.9)
    ]
    assert curve.n_images == 500 and curve.n_labelled == 500 - len(range(0, 500, 7))
    known = np.isfinite(labels)
    for point in curve.points:
        mask = prune(w, point.sparsity, point.method)
        ref_top, top, kl = direct(z, w, b, mask, bias_correction)
        assert point.bias_correction is bias_correction
        assert point.zeroed == pytest.approx(1 - mask.mean())
        assert point.accuracy == pytest.approx((top == y)[known].mean(), abs=1e-12)
        assert point.agreement == pytest.approx((top == ref_top).mean(), abs=1e-12)
        assert point.kl == pytest.approx(kl, rel=1e-4, abs=1e-6)
        if point.sparsity == 0:
            assert point.agreement == 1 and point.kl < 1e-9
    assert curve.reference_accuracy == pytest.approx((ref_top == y)[known].mean())


def test_both_corrections_in_one_pass_and_the_correction_helps_uncentred_inputs():
    rng = np.random.default_rng(2)
    w = laplace_layer(classes=10, inputs=128)
    z = (rng.exponential(1.0, size=(800, 128)) + 1.0).astype(np.float32)  # every input well above 0
    curve = curve_of(z, w, None, methods=["random"], sparsities=[0.8], bias_correction="both")
    plain, corrected = curve.point("random", 0.8), curve.point("random", 0.8, bias_correction=True)
    assert (plain.bias_correction, corrected.bias_correction) == (False, True)
    assert corrected.kl < plain.kl and curve.n_labelled == 0 and plain.accuracy is None


def test_the_curve_refuses_bad_input():
    w, z = laplace_layer(), np.ones((5, 200), np.float32)
    with pytest.raises(FclensError, match="choose from"):
        curve_of(z, w, None, methods=["tree", "smallest"])
    with pytest.raises(FclensError, match=r"\[0, 1\)"):
        curve_of(z, w, None, sparsities=[0.5, 1.0])
    with pytest.raises(FclensError, match="200 inputs"):
        curve_of(np.ones((5, 20), np.float32), w, None)


def test_the_curve_as_csv_json_and_text():
    w = laplace_layer()
    z = np.abs(np.random.default_rng(0).normal(size=(50, 200))).astype(np.float32)
    curve = curve_of(z, w, None, methods=["magnitude", "tree"], sparsities=[0.5])
    lines = curve.to_csv().splitlines()
    assert lines[0] == "method,sparsity,zeroed,bias_correction,accuracy,agreement,kl"
    assert lines[1].startswith("magnitude,0.5,0.5,False,,") and len(lines) == 3
    doc = json.loads(curve.to_json())
    assert doc["points"][1]["method"] == "tree" and doc["points"][1]["accuracy"] is None
    assert "tree" in curve.to_text() and "n/a" in curve.to_text()
    with pytest.raises(KeyError, match=r"random@0\.5"):
        curve.point("random", 0.5)


# ---------------------------------------------------------------------------------------------------------
# On scans: a small classifier trained here, and the embedded model
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scanned(trained: fclens.Classifier, tmp_path_factory: pytest.TempPathFactory) -> fclens.Scan:
    """300 held-out images, a tenth of them mislabelled (so accuracy and agreement differ), with features."""
    images, labels = striped_images(300, seed=1)
    noisy = labels.tolist()
    for i in range(0, 300, 10):
        noisy[i] = (noisy[i] + 1) % CLASSES
    out = tmp_path_factory.mktemp("prune") / "scan"
    return fclens.scan(
        trained, Pairs(images, noisy), out, features=True, engine=LocalEngine(workers=0), progress=False
    )


@pytest.mark.slow
def test_a_scans_curve_equals_a_direct_evaluation_of_its_features(scanned: fclens.Scan):
    from fclens.pruning import prune_curve

    curve = prune_curve(scanned, methods=METHODS, sparsities=[0.0, 0.5, 0.9], bias_correction="both")
    z = scanned.read_features().z.numpy()
    y = np.asarray(scanned.ok().column("label").to_pylist())
    stored_pred = np.asarray(scanned.ok().column("pred").to_pylist())
    assert curve.n_images == curve.n_labelled == 300
    for point in curve.points:
        mask = prune(scanned.weight, point.sparsity, point.method)
        ref_top, top, kl = direct(z, scanned.weight, scanned.bias, mask, point.bias_correction)
        assert point.accuracy == pytest.approx((top == y).mean(), abs=1e-12)
        assert point.agreement == pytest.approx((top == ref_top).mean(), abs=1e-12)
        assert point.kl == pytest.approx(kl, rel=1e-4, abs=1e-6)
    assert curve.point("tree", 0.0).agreement == 1 and curve.point("ald", 0.0).kl < 1e-9
    # The float16 features stand in for the model: the unpruned layer on them gives the stored top-1.
    assert curve.pred_agreement >= 0.99 and (ref_top == stored_pred).mean() >= 0.99
    assert 0.8 <= curve.reference_accuracy <= 0.92  # a tenth of the labels are wrong on purpose


@pytest.mark.slow
def test_random_pruning_is_worse_than_magnitude_pruning_at_high_sparsity(scanned: fclens.Scan):
    from fclens.pruning import prune_curve

    curve = prune_curve(scanned, methods=["magnitude", "random"], sparsities=[0.8, 0.9])
    for s in (0.8, 0.9):
        magnitude, random = curve.point("magnitude", s), curve.point("random", s)
        assert magnitude.kl < random.kl and magnitude.agreement >= random.agreement


@pytest.mark.slow
def test_cli_prints_the_table_and_writes_the_curves(scanned: fclens.Scan, tmp_path: Path, capsys):
    out = tmp_path / "out"
    code = main(["prune", str(scanned.directory), "--sparsity", "0.5,0.9", "--out", str(out), "--html"])
    printed = capsys.readouterr().out
    assert code == 0
    for method in ("tree", "ald", "magnitude", "random"):
        assert sum(line.startswith(method + " ") for line in printed.splitlines()) == 2
    assert {p.name for p in out.iterdir()} == {"prune.csv", "prune.json", "curves.png", "prune.html"}
    assert len(read_csv(out / "prune.csv")) == 8 and "<table" in (out / "prune.html").read_text()
    # A rerun without --html: the old page would contradict the new curves, so it goes; the user's own
    # files (a page fclens did not make, a model without fclens's metadata) stay.
    (out / "notes.html").write_text("<p>mine</p>")
    (out / "pruned-mine.safetensors").write_bytes(b"not a pruned model")
    assert main(["prune", str(scanned.directory), "--methods", "magnitude", "--sparsity", "0.9", "--out",
                 str(out), "--bias-correction", "both", "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert [p["bias_correction"] for p in doc["points"]] == [False, True] and doc["n_images"] == 300
    assert doc["removed"] == [str(out / "prune.html")]
    assert {p.name for p in out.iterdir()} == {
        "prune.csv", "prune.json", "curves.png", "notes.html", "pruned-mine.safetensors"
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sparsity", "0.5,1"], r"sparsity must be a number in [0, 1), got 1.0"),
        (["--sparsity", "half"], "sparsity must be a number in [0, 1), got 'half'"),
        (
            ["--methods", "tree,biggest"],
            "choose from magnitude, magnitude-per-class, random, tree, ald, ald-deviant",
        ),
        (["--write", "tree@0.9"], "passed as a module"),
        (["--write", "tree"], "METHOD@SPARSITY"),
    ],
)
def test_cli_bad_input_is_exit_2_with_one_line(
    scanned: fclens.Scan, tmp_path: Path, capsys, arguments: list[str], message: str
):
    assert main(["prune", str(scanned.directory), "--out", str(tmp_path), *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "prune.csv").exists()


@pytest.mark.slow
def test_cli_refuses_a_scan_without_features_naming_the_option(
    trained: fclens.Classifier, tmp_path: Path, capsys
):
    images, labels = striped_images(8, seed=2)
    bare = fclens.scan(
        trained,
        Pairs(images, labels.tolist()),
        tmp_path / "bare",
        engine=LocalEngine(workers=0),
        progress=False,
    )
    assert main(["prune", str(bare.directory), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--features" in err and err.count("\n") == 1


@pytest.mark.slow
def test_a_written_pruned_model_predicts_what_the_curve_said(
    classifier: fclens.Classifier, tmp_path: Path, capsys
):
    from PIL import ImageOps

    from fclens.preprocessing import to_batch

    photos = [Image.open(fclens.sample_image(name)).convert("RGB") for name in ("chelsea", "coffee")]
    photos += [ImageOps.mirror(p) for p in photos] + [
        p.crop((30, 20, p.width - 40, p.height - 10)) for p in photos
    ]
    scanned = fclens.scan(classifier, Pairs(photos, [282, 967] * 3), tmp_path / "scan", features=True,
                          engine=LocalEngine(workers=0), progress=False)  # fmt: skip
    out = tmp_path / "out"
    args = ["prune", str(scanned.directory), "--sparsity", "0.9", "--out", str(out), "--json"]
    assert main([*args, "--write", "tree@0.9", "--bias-correction", "on"]) == 0
    doc = json.loads(capsys.readouterr().out)
    written = out / "pruned-tree-0.9.safetensors"
    assert str(written) in doc["files"]
    point = next(p for p in doc["points"] if p["method"] == "tree")

    reloaded = fclens.load_model(scanned.manifest.model["source"], weights=written)
    layer = reloaded.head.layer.weight.detach().reshape(scanned.weight.shape).numpy()
    mask = prune(scanned.weight, 0.9, "tree")
    np.testing.assert_array_equal(layer != 0, mask)  # exactly the curve's weights were zeroed
    batch, _ = to_batch(photos, reloaded.preprocessing)
    with torch.no_grad():
        pruned_top = reloaded(batch).argmax(dim=1).numpy()
    _, expected_top, _ = direct(
        scanned.read_features().z.numpy(), scanned.weight, scanned.bias, mask, shift=True
    )
    np.testing.assert_array_equal(pruned_top, expected_top)
    stored_pred = np.asarray(scanned.ok().column("pred").to_pylist())
    assert (pruned_top == stored_pred).mean() == pytest.approx(point["agreement"])
    # The rest of the model is untouched.
    for name, tensor in reloaded.module.state_dict().items():
        if not name.startswith(reloaded.head.layer_name):
            torch.testing.assert_close(tensor, classifier.module.state_dict()[name].cpu())
    # Rerun without --write: the model of the earlier run is not this run's, so it goes.
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == [str(written)] and not written.exists()


def read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_the_figure_draws_one_line_per_method_and_correction_and_the_page_embeds_it():
    from fclens.report.prune import METHOD_STYLE, prune_figure, prune_page

    rng = np.random.default_rng(3)
    w = laplace_layer(classes=6, inputs=40)
    z = np.abs(rng.normal(size=(60, 40))).astype(np.float32)
    unlabelled = curve_of(
        z, w, None, methods=["tree", "random"], sparsities=[0.5, 0.9], bias_correction="both"
    )
    figure = prune_figure(unlabelled)
    assert [ax.get_ylabel().split(" ")[0] for ax in figure.axes] == ["top-1", "mean"]  # no accuracy panel
    lines = figure.axes[0].get_lines()
    assert [(line.get_color(), line.get_marker(), line.get_linestyle()) for line in lines] == [
        (METHOD_STYLE["tree"][0], "o", "-"), (METHOD_STYLE["tree"][0], "o", "--"),
        (METHOD_STYLE["random"][0], "X", "-"), (METHOD_STYLE["random"][0], "X", "--"),
    ]  # fmt: skip
    # Ticked at the sparsities asked for and nowhere else; narrow enough for a 1280 px window.
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["0.5", "0.9"]
    assert figure.get_figwidth() * figure.dpi <= 1200
    labelled = curve_of(z, w, None, labels=rng.integers(0, 6, 60), methods=["tree"], sparsities=[0.5, 0.95])
    three = prune_figure(labelled)
    assert len(three.axes) == 3 and three.get_figwidth() * three.dpi <= 1200
    legend = three.axes[1].get_legend()  # the dotted line of the unpruned layer says what it is
    reference = f"unpruned layer's accuracy ({percent(labelled.reference_accuracy)})"
    assert [t.get_text() for t in legend.get_texts()] == [reference]
    assert three.axes[1].get_yticklabels()[-1].get_text().endswith("%")  # accuracy as every page prints it
    caption = prune_page(labelled, "s", "m")
    assert "sparsities measured (0.5, 0.95)" in caption and "middle: top-1 accuracy" in caption
    page = prune_page(unlabelled, "my-scan", "my <model>")
    assert page.count("<tr><td>") == 8 and "data:image/png;base64," in page and "my &lt;model&gt;" in page
    assert "http://" not in page and "https://" not in page


def test_the_page_says_where_pruning_raises_accuracy_and_why_it_can():
    from fclens.pruning import PruneCurve, PrunePoint
    from fclens.report.prune import prune_page, raised_accuracy

    def curve(*accuracies: float) -> PruneCurve:
        points = [PrunePoint(m, s, s, False, a, 0.8, 0.1) for (m, s), a in zip(
            [("tree", 0.5), ("ald", 0.8), ("random", 0.9)], accuracies, strict=True)]  # fmt: skip
        return PruneCurve(
            points, n_images=100, n_labelled=100, reference_accuracy=0.44, pred_agreement=1.0, seed=0
        )

    raised = raised_accuracy(curve(0.45, 0.79, 0.40))
    assert raised.startswith("Pruning raises accuracy above the unpruned layer’s 44.0% at 2 of 3 points")
    assert "the most with ald at sparsity 0.8 (79.0%)" in raised and "look alike" in raised
    page = prune_page(curve(0.45, 0.79, 0.40), "scan", "model")
    assert "Unpruned accuracy 44.0% of the 100 labelled images" in page and "79.0%" in page
    assert raised in page
    assert raised_accuracy(curve(0.44, 0.43, 0.2)) == ""  # none above: no sentence
    assert raised_accuracy(curve(0.444, 0.44, 0.2)) == ""  # less than one image of 100 is noise, not a rise
