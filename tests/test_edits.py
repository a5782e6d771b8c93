"""The head floor: the one evaluator, the prior-aware loss, re-fits and post-hoc adjustments of a final layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fclens
import feature_scan
from fclens import FinalLayer, adjust_layer, evaluate, fit_layer
from fclens.cli import main
from fclens.edits.prior import PriorLoss, class_prior
from fclens.errors import FclensError
from fclens.scanning import read_scan

CLASSES, DIM = 6, 8
MEANS = feature_scan.class_means(CLASSES, DIM, spread=0.7)
TAIL = feature_scan.long_tail(CLASSES, largest=300, imbalance=100)  # 300 … 3 images per class
BALANCED = np.full(CLASSES, 200)


def gaussian_scan(
    directory: Path, counts: np.ndarray, prior: np.ndarray, seed: int = 1, **kwargs: int
) -> Path:
    """A scan of ``counts`` images per class, scanned by the Bayes layer for ``prior``."""
    feature_scan.write(directory, MEANS, counts, feature_scan.bayes_layer(MEANS, prior), seed=seed, **kwargs)
    return directory


def layer_of(directory: Path) -> FinalLayer:
    """The final layer a scan recorded."""
    return read_scan(directory).layer


def written(directory: Path) -> dict[str, np.ndarray]:
    """The labels (−1: none) and the scanned layer's predictions of a scan, by index."""
    rows = read_scan(directory).rows(["index", "label", "pred"])
    label = np.array([-1 if v is None else v for v in rows.column("label").to_pylist()])
    return {"label": label, "pred": rows.column("pred").to_numpy()}


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A long-tailed training scan, a balanced one, and a balanced evaluation scan of the same classes."""
    root = tmp_path_factory.mktemp("gaussian")
    tail_prior = TAIL / TAIL.sum()
    return {
        "tail": gaussian_scan(root / "tail", TAIL, tail_prior, seed=1),
        "balanced": gaussian_scan(root / "balanced", BALANCED, BALANCED / BALANCED.sum(), seed=2),
        "eval": gaussian_scan(root / "eval", BALANCED, tail_prior, seed=3, unlabelled=7),
    }


# ----------------------------------------------------------------------------------------------- evaluate
@pytest.mark.slow
def test_the_scanned_layer_evaluated_on_stored_features_gives_the_scans_own_predictions(
    crop_scan: fclens.Scan, classifier: fclens.Classifier
) -> None:
    ok = crop_scan.rows(["index", "pred", "label"], ok_only=True)
    best = np.sort(crop_scan.layer.logits(crop_scan.read_features().z).numpy(), axis=1)
    clear = best[:, -1] - best[:, -2] > 0.05  # apart by more than float16 rounding of z can move them
    assert clear.sum() >= 4
    for head in (crop_scan, classifier):  # the layer the scan stored, and the loaded model's own
        evaluation = evaluate(crop_scan, head)
        assert evaluation.n_images == ok.num_rows == 6
        assert evaluation.index.tolist() == ok.column("index").to_pylist()
        assert (evaluation.pred[clear] == ok.column("pred").to_numpy()[clear]).all()
        labels = np.array(ok.column("label").to_pylist())
        assert evaluation.accuracy == pytest.approx(np.mean(evaluation.pred == labels))
        assert evaluation.confusion.sum() == 6 and evaluation.confusion.shape == (1000, 1000)
        assert np.isnan(evaluation.per_class_accuracy[0])  # no image of class 0


def test_figures_count_labelled_rows_per_class_and_split_by_training_counts(scans: dict[str, Path]) -> None:
    data = written(scans["eval"])
    evaluation = evaluate(scans["eval"], layer_of(scans["tail"]), train_counts=TAIL)
    label, pred = data["label"], data["pred"]
    known = label >= 0
    assert evaluation.n_images == len(label) and evaluation.n_labelled == known.sum()
    assert np.array_equal(evaluation.pred, pred)  # the Bayes layer applied to the stored float16 features
    recall = np.array([np.mean(pred[label == k] == k) for k in range(CLASSES)])
    assert np.allclose(evaluation.per_class_accuracy, recall)
    assert evaluation.accuracy == pytest.approx(np.mean(pred[known] == label[known]))
    assert evaluation.balanced_accuracy == pytest.approx(recall.mean())
    assert evaluation.confusion[2, 4] == np.sum((label == 2) & (pred == 4))
    assert np.allclose(evaluation.soft_confusion.sum(axis=1), 1.0)
    assert evaluation.many == pytest.approx(recall[TAIL > 100].mean())  # 300, 119
    assert evaluation.medium == pytest.approx(recall[(TAIL >= 20) & (TAIL <= 100)].mean())  # 48
    assert evaluation.few == pytest.approx(recall[TAIL < 20].mean())  # 19, 8, 3


def test_a_scan_without_features_is_refused_with_the_flag_named(tmp_path: Path) -> None:
    import synthetic_scan

    synthetic_scan.write(tmp_path / "plain", rows=20)
    with pytest.raises(FclensError, match="features=True") as refused:
        evaluate(tmp_path / "plain", read_scan(tmp_path / "plain").layer)
    assert "fclens scan --features" in refused.value.cli


# ------------------------------------------------------------------------------------------------- losses
LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-2.0, 1.5, 0.0], [1.0, 1.0, -3.0]])
TARGETS = torch.tensor([0, 2, 1, 1])
PRIOR = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)


@pytest.mark.parametrize(
    ("method", "tau", "shift"), [("balanced-softmax", 0.3, 1.0), ("logit-adjust", 0.5, 0.5)]
)
def test_logit_shifting_losses_are_the_cross_entropy_of_shifted_logits(
    method: str, tau: float, shift: float
) -> None:
    loss = PriorLoss(PRIOR.numpy(), method, tau=tau)(LOGITS, TARGETS)
    expected = F.cross_entropy(LOGITS + shift * PRIOR.log().float(), TARGETS)
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_pg_prior_gradient_is_the_importance_weighted_cross_entropy_gradient(tau: float) -> None:
    logits = LOGITS.clone().requires_grad_(True)
    PriorLoss(PRIOR.numpy(), "pg-prior", tau=tau)(logits, TARGETS).backward()
    rho = ((1 / 3) / PRIOR.float()) ** tau  # π_target / π_train, tempered
    weight = rho[TARGETS]
    # ∇_logits CE_i = softmax_i − onehot_i; the loss is Σ ρ_i CE_i / Σ ρ_i
    per_row = torch.softmax(LOGITS, dim=1) - F.one_hot(TARGETS, 3).float()
    expected = weight[:, None] * per_row / weight.sum()
    assert torch.allclose(logits.grad, expected, atol=1e-6)
    uniform = PriorLoss(np.full(3, 1 / 3), "pg-prior", tau=tau)(LOGITS, TARGETS)
    assert float(uniform) == pytest.approx(float(F.cross_entropy(LOGITS, TARGETS)), abs=1e-6)


def test_a_prior_of_the_wrong_length_or_with_zeros_is_refused() -> None:
    with pytest.raises(FclensError, match="3 classes"):
        class_prior([0.5, 0.5], 3)
    with pytest.raises(FclensError, match="class 1"):
        PriorLoss([0.5, 0.0, 0.5])
    with pytest.raises(FclensError, match="unknown prior loss"):
        PriorLoss([0.5, 0.5], "focal")


# ---------------------------------------------------------------------------------------------- re-fits
def test_a_ce_refit_on_a_balanced_scan_keeps_the_scanned_layers_accuracy(scans: dict[str, Path]) -> None:
    scanned = evaluate(scans["eval"], layer_of(scans["balanced"]))
    layer = fit_layer(scans["balanced"], "ce")
    refit = evaluate(scans["eval"], layer)
    assert abs(refit.accuracy - scanned.accuracy) < 0.01
    assert layer.fit is not None and layer.fit.grad_norm < 1e-3 and layer.method == "ce"


@pytest.mark.slow
def test_prior_aware_refits_beat_plain_ce_on_balanced_accuracy(scans: dict[str, Path]) -> None:
    """At imbalance 100 each prior-aware loss lifts the balanced accuracy by more than 5 points."""
    ce = evaluate(scans["eval"], fit_layer(scans["tail"], "ce")).balanced_accuracy
    for loss in ("pg-prior", "logit-adjust", "balanced-softmax", "crt"):
        balanced = evaluate(scans["eval"], fit_layer(scans["tail"], loss)).balanced_accuracy
        assert balanced > ce + 0.05, loss


def test_a_class_absent_from_the_scan_keeps_its_row(tmp_path: Path) -> None:
    counts = BALANCED.copy()
    counts[4] = 0
    directory = gaussian_scan(tmp_path / "missing", counts // 4, BALANCED / BALANCED.sum())
    layer = fit_layer(directory, "pg-prior")
    scanned = read_scan(directory).layer
    assert torch.equal(layer.weight[4], scanned.weight[4]) and layer.bias[4] == scanned.bias[4]
    assert not torch.equal(layer.weight[3], scanned.weight[3])


def test_a_refit_streamed_from_the_shards_equals_the_one_held_in_memory(tmp_path: Path) -> None:
    directory = gaussian_scan(tmp_path / "shards", BALANCED // 4, BALANCED / BALANCED.sum(), shard_rows=50)
    held = fit_layer(directory, "logit-adjust", max_iter=20)
    streamed = fit_layer(directory, "logit-adjust", max_iter=20, memory_limit=0)
    assert torch.allclose(held.weight, streamed.weight, atol=1e-4)
    assert torch.allclose(held.bias, streamed.bias, atol=1e-4)


def test_crt_from_a_random_start_and_pg_prior_from_the_scanned_layer_converge_to_one_layer(
    scans: dict[str, Path],
) -> None:
    """One objective (class-balanced weights, τ = 1, weight decay: strictly convex), two starts: fits that
    converge land on the same minimum from either."""
    crt, pg = fit_layer(scans["tail"], "crt", seed=3), fit_layer(scans["tail"], "pg-prior")
    assert crt.fit is not None and pg.fit is not None and crt.fit.converged and pg.fit.converged
    assert abs(crt.fit.loss - pg.fit.loss) < 1e-6
    # the rare classes' rows are weakly determined (4 images each): compare what the layers do, not their digits
    same = evaluate(scans["eval"], crt, reference=pg)
    assert same.agreement > 0.99 and same.kl < 1e-4


def test_the_fit_runs_on_centred_features_and_returns_the_layer_for_the_stored_ones(tmp_path: Path) -> None:
    """The centring is internal: the returned layer's loss on the stored (uncentred) features is the one
    the fit reports."""
    counts = BALANCED // 4
    directory = gaussian_scan(tmp_path / "plain", counts, BALANCED / BALANCED.sum())
    layer = fit_layer(directory, "ce")
    features = read_scan(directory).read_features(labelled=True)
    logits = layer.logits(features.z)
    loss = torch.nn.functional.cross_entropy(logits, features.label) + 2.5e-4 * (layer.weight**2).sum()
    assert layer.fit is not None and abs(float(loss) - layer.fit.loss) < 1e-5


# --------------------------------------------------------------------------------------------- post hoc
def test_post_hoc_adjustments_have_their_closed_forms() -> None:
    weight = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 0.0]])
    layer = FinalLayer(weight, torch.tensor([1.0, 2.0, 3.0]))
    adjusted = adjust_layer(layer, "logit-adjust", prior=[0.5, 0.25, 0.25], tau=2.0)
    assert torch.allclose(
        adjusted.bias, torch.tensor([1.0, 2.0, 3.0]) - 2.0 * torch.log(torch.tensor([0.5, 0.25, 0.25]))
    )
    assert torch.equal(adjusted.weight, weight)
    normed = adjust_layer(layer, "tau-norm", tau=1.0)
    assert torch.allclose(normed.weight[:2].norm(dim=1), torch.ones(2))
    assert torch.allclose(normed.bias[:2], torch.tensor([1.0 / 5, 2.0 / 1.0]))
    assert torch.equal(normed.weight[2], weight[2])  # a row of zeros stays
    assert torch.equal(adjust_layer(layer, "tau-norm", tau=0.0).weight, weight)


def test_post_hoc_logit_adjustment_undoes_the_training_prior_of_a_bayes_layer(scans: dict[str, Path]) -> None:
    """The scanned layer is Bayes-optimal for the training prior; subtracting log π_train makes it the
    Bayes layer for the uniform prior, which has the best balanced accuracy of all."""
    adjusted = adjust_layer(layer_of(scans["tail"]), "logit-adjust", prior=scans["tail"])
    balanced = feature_scan.bayes_layer(MEANS, np.full(CLASSES, 1 / CLASSES))
    direct = FinalLayer.of(balanced)
    assert torch.allclose(adjusted.bias - adjusted.bias.mean(), direct.bias - direct.bias.mean(), atol=1e-5)
    before = evaluate(scans["eval"], layer_of(scans["tail"])).balanced_accuracy
    assert evaluate(scans["eval"], adjusted).balanced_accuracy > before + 0.05


# ---------------------------------------------------------------------------------------------------- CLI
def test_rebalance_prints_every_method_beside_the_scanned_layer_and_writes_its_files(
    scans: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["rebalance", str(scans["tail"]), "--eval", str(scans["eval"]), "--out", str(out), "--json",
                 "--methods", "ce,logit-adjust,tau-norm"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["method"] for row in result["methods"]] == ["scanned", "ce", "logit-adjust", "tau-norm"]
    assert result["train_counts"] == TAIL.tolist()
    rows = {row["method"]: row for row in result["methods"]}
    assert rows["ce"]["fit_grad_norm"] < 1e-3 and rows["logit-adjust"]["fit_loss"] is None
    assert rows["logit-adjust"]["balanced_accuracy"] > rows["scanned"]["balanced_accuracy"] + 0.05
    assert {p.name for p in out.iterdir()} == {"rebalance.csv", "rebalance.json", "per-class.png"}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("other model", "another model"),
        ("no features", "--features"),
        ("no labels", "--labels"),
        ("short prior", "the prior has 2 numbers"),
        ("zero prior", "class 1 has 0"),
        ("module", "passed as a module"),
        ("method", "unknown method 'focal'"),
    ],
)
def test_rebalance_refuses_bad_input_in_one_line(
    case: str, message: str, scans: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import synthetic_scan

    train, evaluation, extra = scans["tail"], scans["eval"], []
    if case == "other model":
        evaluation = tmp_path / "other"
        feature_scan.write(
            evaluation, MEANS, BALANCED // 10, feature_scan.bayes_layer(MEANS, BALANCED / 10.0)
        )
    elif case == "no features":
        evaluation = tmp_path / "plain"
        synthetic_scan.write(evaluation, rows=20, classes=CLASSES)
    elif case == "no labels":
        evaluation = tmp_path / "unlabelled"
        feature_scan.write(evaluation, MEANS, np.zeros(CLASSES, int), feature_scan.bayes_layer(
            MEANS, TAIL / TAIL.sum()), unlabelled=30)  # fmt: skip
    extra = {
        "short prior": ["--prior", "1,2"],
        "zero prior": ["--prior", ",".join(["1", "0"] + ["1"] * (CLASSES - 2))],
        "module": ["--write", "ce"],
        "method": ["--methods", "ce,focal"],
    }.get(case, [])
    code = main(["rebalance", str(train), "--eval", str(evaluation), "--out", str(tmp_path / "o"), *extra])
    error = capsys.readouterr().err
    assert code == 2 and message in error and error.count("\n") == 1


@pytest.mark.slow
def test_a_written_model_predicts_on_images_what_evaluate_predicts_on_their_features(
    crop_scan: fclens.Scan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fclens.preprocessing import to_batch

    out = tmp_path / "out"
    argv = ["rebalance", str(crop_scan.directory), "--eval", str(crop_scan.directory), "--out", str(out)]
    assert main([*argv, "--methods", "tau-norm", "--write", "tau-norm"]) == 0
    written = fclens.load_model(weights=out / "rebalanced-tau-norm.safetensors")
    expected = adjust_layer(crop_scan.layer, "tau-norm")
    assert torch.allclose(FinalLayer.of(written).weight, expected.weight)
    evaluation = evaluate(crop_scan, written)
    ok = crop_scan.rows(["index", "path"], ok_only=True)
    batch, _ = to_batch([Path(p) for p in ok.column("path").to_pylist()], written.preprocessing)
    with torch.inference_mode():
        logits = written(batch)
    stored = torch.from_numpy(
        np.stack([np.asarray(v, np.float32) for v in crop_scan.rows(["index", "features"], ok_only=True)
                  .column("features").to_pylist()])
    )  # fmt: skip
    assert torch.allclose(logits, expected.logits(stored), atol=0.05)  # the features are stored as float16
    top2 = logits.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.2
    assert clear.any()
    assert np.array_equal(logits.argmax(dim=1).numpy()[clear.numpy()], evaluation.pred[clear.numpy()])
    # a rerun that writes another method's model removes the one the earlier run wrote
    assert main([*argv, "--methods", "tau-norm", "--write", "logit-adjust"]) == 0
    assert {p.name for p in out.glob("*.safetensors")} == {"rebalanced-logit-adjust.safetensors"}
