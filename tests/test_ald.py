"""fclens.ald: the paper's regression fit against the author's loop, degenerate rows, the MLE against
scipy, the result files, and the real EfficientNet-Lite0 classifier."""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch

from fclens.ald import _CHUNK, MODELS, fit_ald, regression_fit

# Degenerate input must give NaN and a reason, never a numpy warning.
pytestmark = pytest.mark.filterwarnings("error")


def author_fit(y: np.ndarray) -> dict[str, float]:
    """The author's per-class computation (PAPER.md §2) for one part, with np.polyfit."""
    y = np.sort(np.asarray(y, dtype=np.float64))
    x = np.arange(y.size) / y.size
    t = np.log(y)
    a, b = np.polyfit(x, t, 1)
    r2 = 1 - np.sum((t - (a * x + b)) ** 2) / np.sum((t - t.mean()) ** 2)
    kappa = math.sqrt(math.exp(b) / (a - math.exp(b)))
    lam = a * kappa
    return {
        "slope": a,
        "intercept": b,
        "r2": r2,
        "kappa": kappa,
        "lam": lam,
        "mean": (1 - kappa**2) / (lam * kappa),
    }


def ald_rows(n_rows: int, n: int, seed: int) -> np.ndarray:
    """Rows of ALD samples with varied asymmetry, so that the positive/negative counts are ragged."""
    rng = np.random.default_rng(seed)
    kappa = rng.uniform(0.5, 2.0, size=(n_rows, 1))
    return scipy.stats.laplace_asymmetric.rvs(kappa, loc=0.0, scale=0.03, size=(n_rows, n), random_state=rng)


# --------------------------------------------------------------------------------------------------------
# The paper's regression fit
# --------------------------------------------------------------------------------------------------------
def test_regression_fit_equals_the_authors_polyfit_loop():
    w = ald_rows(40, 301, seed=1)
    fit = fit_ald(w, method="regression")
    for k, row in enumerate(w):
        for part, sample in ((fit.pos, row[row > 0]), (fit.neg, -row[row < 0])):
            ref = author_fit(sample)
            assert part.n[k] == sample.size
            for name, value in ref.items():
                assert getattr(part, name)[k] == pytest.approx(value, rel=1e-9), (k, name)
    for joint, sample in ((fit.joint_pos, w[w > 0]), (fit.joint_neg, -w[w < 0])):
        ref = author_fit(sample)
        for name, value in ref.items():
            assert getattr(joint, name) == pytest.approx(value, rel=1e-9), name
        assert joint.n == sample.size and joint.reason == ""
    assert fit.marginal_mean_pos == pytest.approx(np.mean(fit.pos.mean), rel=1e-12)
    assert fit.marginal_mean_neg == pytest.approx(np.mean(fit.neg.mean), rel=1e-12)


def test_rows_longer_than_a_processing_chunk():
    w = ald_rows(3, _CHUNK + 4_001, seed=15)  # each row is summed in two pieces, and so is the joint fit
    fit = fit_ald(w, method="regression")
    for k, row in enumerate(w):
        for part, sample in ((fit.pos, row[row > 0]), (fit.neg, -row[row < 0])):
            ref = author_fit(sample)
            assert [getattr(part, name)[k] for name in ref] == pytest.approx(list(ref.values()), rel=1e-9)
    ref = author_fit(w[w > 0])
    assert [getattr(fit.joint_pos, name) for name in ref] == pytest.approx(list(ref.values()), rel=1e-9)


def test_float32_input_gives_the_float64_fit_of_the_same_values():
    w32 = ald_rows(10, 500, seed=2).astype(np.float32)
    a, b = fit_ald(w32), fit_ald(w32.astype(np.float64))
    np.testing.assert_array_equal(a.pos.slope, b.pos.slope)
    np.testing.assert_array_equal(a.neg.r2, b.neg.r2)
    np.testing.assert_array_equal(a.mle.loglik, b.mle.loglik)


def test_regression_fit_of_one_sample_is_the_same_fit_as_a_class_row():
    w = ald_rows(3, 200, seed=3)
    fit = fit_ald(w, method="regression")
    one, row = regression_fit(w[1][w[1] > 0]), fit.pos.row(1)
    for name in ("slope", "intercept", "r2", "kappa", "lam", "mean"):
        assert getattr(one, name) == pytest.approx(getattr(row, name), rel=1e-12)
    assert (one.n, one.n_zero, one.reason) == (row.n, row.n_zero, row.reason)
    neg = regression_fit(-w[2][w[2] < 0])
    assert neg.r2 == pytest.approx(fit.neg.r2[2], rel=1e-12)
    with pytest.raises(ValueError, match=">= 0"):
        regression_fit([1.0, -2.0, 3.0])


def test_exact_zeros_are_left_out_and_counted():
    rng = np.random.default_rng(4)
    row = rng.laplace(size=200)
    row[[3, 50, 51, 120]] = 0.0
    fit = fit_ald(row, method="regression")  # a 1-D row is one class
    assert fit.n_classes == 1
    assert fit.pos.n_zero[0] == 4 and fit.neg.n_zero[0] == 0
    assert fit.pos.n[0] == np.sum(row > 0) and fit.neg.n[0] == np.sum(row < 0)
    ref = author_fit(row[row > 0])
    assert fit.pos.r2[0] == pytest.approx(ref["r2"], rel=1e-9)
    assert fit.pos.reason[0] == ""
    assert regression_fit(np.abs(row)).n_zero == 4


def test_degenerate_rows_give_nan_and_a_reason():
    n = 64
    x = np.arange(n) / n
    rows = np.stack(
        [
            np.full(n, 0.5),  # constant: positive part flat, no negative part
            np.r_[np.geomspace(1e-3, 0.1, n - 2), -1.0, -2.0],  # two negatives only
            np.exp(0.5 * x),  # ln y = 0.5 x + 0: slope a = 0.5 <= e^b = 1
            np.r_[np.full(n - 10, -0.25), np.linspace(0.1, 1, 10)],  # constant negative part
        ]
    )
    fit = fit_ald(rows)
    assert list(fit.pos.reason) == ["constant values", "", "slope a <= e^b: kappa undefined", ""]
    assert list(fit.neg.reason) == ["empty part", "fewer than 3 values", "empty part", "constant values"]
    assert math.isnan(fit.pos.r2[0]) and math.isnan(fit.pos.kappa[0])
    assert fit.pos.slope[0] == 0.0  # the line itself exists
    assert math.isnan(fit.neg.slope[1]) and fit.neg.n[1] == 2
    assert fit.pos.slope[2] == pytest.approx(0.5) and fit.pos.r2[2] == pytest.approx(1.0)
    assert math.isnan(fit.pos.kappa[2]) and math.isnan(fit.pos.mean[2])
    assert fit.mle.reason[0] == "constant values" and math.isnan(fit.mle.loglik[0])
    summary = fit.summary()
    assert summary["degenerate"]["neg"]["count"] == 4
    assert summary["degenerate"]["pos"]["by_reason"] == {
        "constant values": 1,
        "slope a <= e^b: kappa undefined": 1,
    }
    json.dumps(summary, allow_nan=False)


@pytest.mark.parametrize(
    "weight",
    [[[1.0]], [[1.0, -2.0]], np.zeros((3, 5)), np.full((2, 4), np.nan), np.arange(12).reshape(3, 4)],
)
def test_tiny_empty_and_integer_inputs_do_not_crash(weight):
    fit = fit_ald(weight)
    json.loads(fit.to_json())
    assert fit.to_csv().count("\n") == fit.n_classes + 1
    assert all(reason for reason in fit.mle.reason) or fit.n_inputs >= 3
    assert regression_fit([]).reason == "empty part" and regression_fit([0.0, 0.0]).n_zero == 2


def test_nan_and_inf_rows_are_reported_and_do_not_touch_the_others():
    w = ald_rows(5, 100, seed=5)
    bad = w.copy()
    bad[1, 7] = np.nan
    bad[3, 0] = np.inf
    fit, clean = fit_ald(bad), fit_ald(w[[0, 2, 4]])
    for part in ("pos", "neg"):
        got = getattr(fit, part)
        assert list(got.reason[[1, 3]]) == ["NaN or Inf in row"] * 2
        assert np.isnan(got.r2[[1, 3]]).all() and np.isnan(got.slope[[1, 3]]).all()
        np.testing.assert_array_equal(got.r2[[0, 2, 4]], getattr(clean, part).r2)
    assert fit.pos.n_zero[1] == 0  # the replaced NaN is not counted as a zero
    assert fit.pos.n[1] + fit.neg.n[1] == 99
    # The joint fit uses the finite classes only.
    assert fit.joint_pos.r2 == clean.joint_pos.r2 and fit.joint_neg.n == clean.joint_neg.n
    assert list(fit.mle.reason[[1, 3]]) == ["NaN or Inf in row"] * 2
    assert fit.mle.best[1] == "" and np.isnan(fit.mle.aic_ald[3])
    np.testing.assert_array_equal(fit.mle.loglik[[0, 2, 4]], clean.mle.loglik)


def test_conv_weight_tensor_and_shapes():
    w = ald_rows(6, 80, seed=6).astype(np.float32)
    conv = torch.tensor(w).reshape(6, 80, 1, 1).requires_grad_(True)
    a, b = fit_ald(conv), fit_ald(w)
    assert (a.n_classes, a.n_inputs) == (6, 80)
    np.testing.assert_array_equal(a.pos.r2, b.pos.r2)
    np.testing.assert_array_equal(a.mle.kappa, b.mle.kappa)
    assert fit_ald(torch.tensor(w, dtype=torch.bfloat16)).n_classes == 6
    for shape in [(6, 80, 3, 3), (2, 3, 4), (0, 5)]:
        with pytest.raises(ValueError, match="C×D"):
            fit_ald(np.zeros(shape))


def test_method_selects_the_parts():
    w = ald_rows(4, 100, seed=7)
    reg, mle = fit_ald(w, method="regression"), fit_ald(w, method="mle")
    assert reg.mle is None and reg.pos is not None and reg.joint_neg is not None
    assert mle.pos is None and mle.neg is None and mle.joint_pos is None and mle.marginal_mean_pos is None
    assert mle.mle is not None
    assert reg.summary()["mle"] is None and mle.summary()["joint"] is None
    assert mle.to_csv().count("\n") == 5
    with pytest.raises(ValueError, match="'all', 'regression', 'mle'"):
        fit_ald(w, method="ols")


def test_tiles_of_rows_join_in_order_without_changing_a_bit():
    w = ald_rows(700, 400, seed=16)  # 280 000 values: three tiles of rows
    w[650, 3] = np.nan  # a bad row in the last tile
    fit = fit_ald(w)
    for k in (0, 326, 327, 653, 654, 699):  # either side of each tile boundary: the same as fitted alone
        alone = fit_ald(w[k])
        for part in ("pos", "neg"):
            for name in ("slope", "r2", "n", "reason"):
                assert getattr(getattr(fit, part), name)[k] == getattr(getattr(alone, part), name)[0]
        assert fit.mle.loglik[k] == alone.mle.loglik[0]
    assert fit.mle.reason[650] == "NaN or Inf in row"
    row = w[699]  # the last class comes back in its place
    assert fit.pos.r2[699] == pytest.approx(author_fit(row[row > 0])["r2"], rel=1e-9)


# --------------------------------------------------------------------------------------------------------
# Beyond the paper: maximum likelihood, KS, AIC
# --------------------------------------------------------------------------------------------------------
def test_mle_closed_form_is_the_maximum_of_scipys_likelihood():
    x = scipy.stats.laplace_asymmetric.rvs(0.7, loc=0.2, scale=1.5, size=60, random_state=8)
    m = fit_ald(x, method="mle").mle
    kappa, loc, scale, loglik = m.kappa[0], m.loc[0], m.scale[0], m.loglik[0]
    # The closed form is scipy's log-likelihood at the returned parameters ...
    assert scipy.stats.laplace_asymmetric.logpdf(x, kappa, loc, scale).sum() == pytest.approx(
        loglik, rel=1e-12
    )

    # ... and no other (κ, σ) at any location, sample point or not, does better.
    def neg_profile(theta: float) -> float:
        res = scipy.optimize.minimize(
            lambda p: -scipy.stats.laplace_asymmetric.logpdf(x, np.exp(p[0]), theta, np.exp(p[1])).sum(),
            x0=[np.log(kappa), np.log(scale)],
            method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000},
        )
        return res.fun

    grid = np.r_[np.sort(x)[1:-1], np.linspace(x.min(), x.max(), 41)[1:-1]]
    assert max(-neg_profile(theta) for theta in grid) <= loglik + 1e-9 * abs(loglik)
    assert -neg_profile(loc) == pytest.approx(loglik, rel=1e-9)


@pytest.mark.parametrize(("kappa", "loc", "scale"), [(0.6, 0.1, 2.0), (1.0, -3.0, 0.5), (1.8, 0.0, 0.02)])
def test_mle_recovers_known_parameters(kappa: float, loc: float, scale: float):
    x = scipy.stats.laplace_asymmetric.rvs(kappa, loc=loc, scale=scale, size=(2, 20000), random_state=9)
    m = fit_ald(x, method="mle").mle
    np.testing.assert_allclose(m.kappa, kappa, rtol=0.03)
    np.testing.assert_allclose(m.scale, scale, rtol=0.03)
    np.testing.assert_allclose(m.loc, loc, atol=0.03 * scale)
    assert list(m.reason) == ["", ""]
    # κ = 1 is the symmetric Laplace, which AIC rightly prefers (same fit, one parameter fewer).
    assert list(m.best) == (["laplace", "laplace"] if kappa == 1.0 else ["ald", "ald"])


def test_mle_likelihood_is_at_least_scipys_fit_and_parameters_agree():
    rng = np.random.default_rng(10)
    rows = np.stack(
        [
            scipy.stats.laplace_asymmetric.rvs(k, loc=0.05, scale=0.02, size=4000, random_state=rng)
            for k in (0.5, 0.8, 1.0, 1.4, 2.0)
        ]
    )
    m = fit_ald(rows, method="mle").mle
    for k, x in enumerate(rows):
        params = scipy.stats.laplace_asymmetric.fit(x)
        ll_scipy = scipy.stats.laplace_asymmetric.logpdf(x, *params).sum()
        assert m.loglik[k] >= ll_scipy - 1e-6 * abs(ll_scipy)
        np.testing.assert_allclose([m.kappa[k], m.loc[k], m.scale[k]], params, rtol=5e-3, atol=1e-5)


def test_ks_and_aic_match_scipy():
    rng = np.random.default_rng(11)
    rows = np.stack(
        [
            scipy.stats.laplace_asymmetric.rvs(0.5, size=3000, random_state=rng),
            rng.normal(size=3000),
            rng.laplace(size=3000),
        ]
    )
    m = fit_ald(rows, method="mle").mle
    for k, x in enumerate(rows):
        ald = scipy.stats.laplace_asymmetric(m.kappa[k], m.loc[k], m.scale[k])
        ks = scipy.stats.kstest(x, ald.cdf)
        assert m.ks[k] == pytest.approx(ks.statistic, rel=1e-9)
        assert m.ks_pvalue[k] == pytest.approx(ks.pvalue, rel=0.05, abs=1e-3)
        gauss = scipy.stats.norm.logpdf(x, x.mean(), x.std()).sum()
        med = np.median(x)
        laplace = scipy.stats.laplace.logpdf(x, med, np.abs(x - med).mean()).sum()
        assert m.aic_ald[k] == pytest.approx(6 - 2 * m.loglik[k], rel=1e-12)
        assert m.aic_gauss[k] == pytest.approx(4 - 2 * gauss, rel=1e-9)
        assert m.aic_laplace[k] == pytest.approx(4 - 2 * laplace, rel=1e-9)
    assert list(m.best) == ["ald", "gauss", "laplace"]
    assert set(m.best) <= set(MODELS)


def test_one_sided_sample_is_flagged_not_fitted():
    x = np.random.default_rng(12).exponential(2.0, size=500) + 1.0
    m = fit_ald(x, method="mle").mle
    assert m.reason[0] == "likelihood highest at the sample's edge (one-sided exponential)"
    assert math.isnan(m.kappa[0]) and math.isnan(m.scale[0])
    assert m.loc[0] == x.min()
    assert m.loglik[0] == pytest.approx(-x.size * (np.log(np.mean(x - x.min())) + 1), rel=1e-12)


# --------------------------------------------------------------------------------------------------------
# Results: summary, JSON, CSV
# --------------------------------------------------------------------------------------------------------
def test_to_json_round_trip():
    w = ald_rows(6, 120, seed=13)
    w[2] = 1.0  # a degenerate class: NaN must become null
    fit = fit_ald(w)
    names = [f"class {k}" for k in range(6)]
    doc = json.loads(fit.to_json(class_names=names))
    assert doc["summary"] == json.loads(json.dumps(fit.summary()))
    assert doc["classes"]["name"] == names and doc["classes"]["index"] == list(range(6))
    for part in ("pos", "neg", "mle"):
        got = getattr(fit, part)
        for name, values in doc["classes"][part].items():
            expected = getattr(got, name)
            if expected.dtype.kind == "f":
                back = np.array([np.nan if v is None else v for v in values])
                np.testing.assert_array_equal(back, expected)
            else:
                assert values == expected.tolist()
    summary = doc["summary"]
    assert summary["r2_quantiles"]["pos"]["p50"] == pytest.approx(np.nanmedian(fit.pos.r2))
    assert set(summary["joint"]["pos"]) >= {"mean", "r2"} and summary["marginal_mean_neg"] is not None
    assert sum(summary["aic"]["best_counts"].values()) == 5
    assert "not in the paper" in summary["mle"]["note"]


def test_to_csv_round_trip_and_atomic_write(tmp_path):
    w = ald_rows(4, 150, seed=14)
    w[1, :] = np.abs(w[1])  # no negative part: empty cells
    fit = fit_ald(w)
    path = tmp_path / "fit.csv"
    text = fit.to_csv(path, class_names=["a", "b", "c", "d"])
    assert path.read_text(encoding="utf-8") == text
    assert os.listdir(tmp_path) == ["fit.csv"]  # no temporary file left behind
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["name"] for r in rows] == ["a", "b", "c", "d"]
    assert rows[1]["neg_reason"] == "empty part" and rows[1]["neg_r2"] == ""

    def num(cell: str) -> float:
        return float(cell) if cell else math.nan

    for k, row in enumerate(rows):
        assert int(row["index"]) == k
        assert num(row["pos_r2"]) == fit.pos.r2[k]
        assert num(row["pos_lambda"]) == fit.pos.lam[k]
        assert int(row["neg_n"]) == fit.neg.n[k]
        assert num(row["mle_loglik"]) == fit.mle.loglik[k]
        assert num(row["aic_gauss"]) == fit.mle.aic_gauss[k]
        assert row["best"] == fit.mle.best[k]
    with pytest.raises(ValueError, match="class_names"):
        fit.to_csv(class_names=["too", "few"])


# --------------------------------------------------------------------------------------------------------
# Real weights
# --------------------------------------------------------------------------------------------------------
def test_lite0_classifier_r2_in_the_papers_band(lite0_weight):
    fit = fit_ald(lite0_weight)
    summary = fit.summary()
    q = summary["r2_quantiles"]
    # Measured: median per-class R² 0.847 (pos) and 0.813 (neg); the paper: mostly 0.78–0.90.
    assert 0.78 <= q["pos"]["p50"] <= 0.90
    assert 0.78 <= q["neg"]["p50"] <= 0.90
    assert 0.75 <= summary["joint"]["pos"]["r2"] <= 0.90 and 0.75 <= summary["joint"]["neg"]["r2"] <= 0.90
    assert summary["degenerate"]["pos"]["count"] == 0 and summary["degenerate"]["neg"]["count"] == 0
    assert (fit.n_classes, fit.n_inputs) == (1000, 1280)
    assert np.isfinite(fit.mle.loglik).all()


def test_to_text_reads_the_typed_fields_and_leaves_out_parts_not_fitted():
    w = np.random.default_rng(3).laplace(0.0, 1.0, (30, 200))
    fit = fit_ald(w)
    text = fit.to_text("toy")
    summary = fit.summary()
    assert text.splitlines()[0] == "toy: final layer 30 classes × 200 inputs"
    assert f"median {summary['r2_quantiles']['pos']['p50']:.4g}" in text and "n/a" not in text
    counts = summary["aic"]["best_counts"]
    assert f"ald {counts['ald']}, gauss {counts['gauss']}, laplace {counts['laplace']}" in text
    assert fit.pos.r2_quantiles().p50 == summary["r2_quantiles"]["pos"]["p50"]
    assert "beyond the paper" not in fit_ald(w, method="regression").to_text()
    only_mle = fit_ald(w, method="mle").to_text()
    assert "regression" not in only_mle and "classes best described by" in only_mle
