"""Tests for the prediction-quality metrics (one module) on tiny handmade cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from sensequant_assets.ml.evaluation import (
    accuracy,
    auc,
    auc_rows,
    brier,
    classification_metrics,
    equal_mass_bins,
    expected_calibration_error,
    fidelity,
    log_loss,
    log_loss_series,
    reliability_diagram,
    spearman_ic,
    spearman_rows,
    wilson_interval,
)

PROBA = [0.9, 0.8, 0.3, 0.6, 0.2, 0.4]
LABELS = [1, 1, 0, 0, 1, 0]
FWD = [0.05, 0.03, -0.01, -0.02, 0.04, 0.00]


def test_classification_metrics_hand_case():
    m = classification_metrics(PROBA, LABELS, FWD)
    # AUC: positives {0.9, 0.8, 0.2} vs negatives {0.3, 0.6, 0.4}: 0.9 and 0.8 beat all three,
    # 0.2 beats none -> 6 of 9 pairs.
    assert m["auc"] == pytest.approx(6 / 9)
    # predicted long = [1, 1, 0, 1, 0, 0] vs labels [1, 1, 0, 0, 1, 0] -> 4 of 6 right.
    assert m["accuracy"] == pytest.approx(4 / 6)
    # longs are rows 0, 1, 3 with forward returns 0.05, 0.03, -0.02 -> 2 of 3 positive.
    assert m["hit_rate"] == pytest.approx(2 / 3)
    # squared errors 0.01, 0.04, 0.09, 0.36, 0.64, 0.16.
    assert m["brier"] == pytest.approx(1.3 / 6)
    expected_ll = -sum(math.log(v) for v in (0.9, 0.8, 0.7, 0.4, 0.2, 0.6)) / 6
    assert m["log_loss"] == pytest.approx(expected_ll)
    # Spearman: ranks (6,5,2,4,1,3) vs (6,4,2,1,5,3); sum d^2 = 26 -> 1 - 6*26/(6*35).
    assert m["ic"] == pytest.approx(1 - 156 / 210)
    assert m["n"] == 6


def test_metrics_are_plain_python_and_json_serialisable():
    m = classification_metrics(np.array(PROBA), np.array(LABELS), np.array(FWD))
    for key, value in m.items():
        assert value is None or type(value) in (float, int), key
    assert type(m["n"]) is int
    json.dumps(m)
    f = fidelity(np.array([0.2, 0.7]), np.array([0.3, 0.6]))
    assert all(type(v) in (float, int) for v in f.values())
    json.dumps(f)


def test_classification_metrics_undefined_cases():
    one_class = classification_metrics([0.7, 0.2, 0.9], [1, 1, 1], [0.01, -0.01, 0.02])
    assert one_class["auc"] is None
    assert one_class["accuracy"] == pytest.approx(2 / 3)
    no_longs = classification_metrics([0.1, 0.5, 0.3], [0, 1, 0], [0.01, 0.02, 0.03])
    assert no_longs["hit_rate"] is None  # 0.5 is not > 0.5
    no_fwd = classification_metrics([0.1, 0.9], [0, 1], None)
    assert no_fwd["hit_rate"] is None
    assert no_fwd["ic"] is None
    assert no_fwd["auc"] == 1.0
    with pytest.raises(ValueError):
        classification_metrics([0.1, 1.2], [0, 1], None)
    with pytest.raises(ValueError):
        classification_metrics([0.1, 0.2], [0, 2], None)
    with pytest.raises(ValueError):
        classification_metrics([0.1, 0.2], [0], None)


def test_fidelity_hand_case():
    s = [0.9, 0.4, 0.6, 0.2]
    t = [0.8, 0.6, 0.7, 0.1]
    f = fidelity(s, t)
    # sides: (T,T), (F,T), (T,T), (F,F) -> 3 of 4 agree.
    assert f["agreement"] == pytest.approx(0.75)
    ce = [-(ti * math.log(si) + (1 - ti) * math.log(1 - si)) for si, ti in zip(s, t, strict=True)]
    ent = [-(ti * math.log(ti) + (1 - ti) * math.log(1 - ti)) for ti in t]
    assert f["cross_entropy"] == pytest.approx(sum(ce) / 4)
    assert f["kl_divergence"] == pytest.approx((sum(ce) - sum(ent)) / 4)
    assert f["mean_abs_diff"] == pytest.approx((0.1 + 0.2 + 0.1 + 0.1) / 4)
    assert f["n"] == 4


def test_fidelity_perfect_student():
    t = [0.8, 0.3, 0.55, 0.1]
    f = fidelity(t, t)
    assert f["agreement"] == 1.0
    assert f["kl_divergence"] == pytest.approx(0.0, abs=1e-12)
    assert f["mean_abs_diff"] == 0.0
    # Cross-entropy against itself is the teacher's entropy, not zero.
    assert f["cross_entropy"] > 0.0


def test_spearman_ic():
    assert spearman_ic([0.1, 0.2, 0.3, 0.4], [1.0, 5.0, 7.0, 100.0]) == pytest.approx(1.0)
    assert spearman_ic([0.1, 0.2, 0.3, 0.4], [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # Hand case: ranks (1,2,3,4,5) vs (2,1,4,3,5): sum d^2 = 4, rho = 1 - 6*4/(5*24) = 0.8.
    assert spearman_ic([1, 2, 3, 4, 5], [0.2, 0.1, 0.4, 0.3, 0.5]) == pytest.approx(0.8)
    # NaN pairs are dropped.
    assert spearman_ic([1, 2, 3, 4, 9], [0.2, 0.1, 0.4, 0.3, np.nan]) == pytest.approx(0.6)
    assert spearman_ic([1, 1, 1, 1], [1, 2, 3, 4]) is None


def test_log_loss_series_and_mean():
    out = log_loss_series([0.8, 0.8, 0.5, 0.3], [1, 0, 1, 0.25])
    expected = [
        -math.log(0.8),
        -math.log(0.2),
        -math.log(0.5),
        -(0.25 * math.log(0.3) + 0.75 * math.log(0.7)),
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert log_loss([0.8, 0.8, 0.5, 0.3], [1, 0, 1, 0.25]) == pytest.approx(sum(expected) / 4)
    clipped = log_loss_series([0.0, 1.0], [1, 0])
    assert np.all(np.isfinite(clipped))
    # 1 - 1e-15 is not exact in binary, hence the loose tolerance.
    np.testing.assert_allclose(clipped, [-math.log(1e-15)] * 2, rtol=1e-4)
    with pytest.raises(ValueError):
        log_loss_series([0.5], [2])
    with pytest.raises(ValueError):
        log_loss([], [])


def test_precision_recall_f1_hand_case():
    m = classification_metrics(PROBA, LABELS)
    # predicted long rows 0, 1, 3; positives rows 0, 1, 4 -> TP = 2.
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    nothing_long = classification_metrics([0.1, 0.2], [0, 1])
    assert (nothing_long["precision"], nothing_long["recall"], nothing_long["f1"]) == (0.0, 0.0, 0.0)


def test_single_metrics_agree_with_the_bundle():
    m = classification_metrics(PROBA, LABELS, FWD)
    assert auc(PROBA, LABELS) == m["auc"]
    assert accuracy(PROBA, LABELS) == m["accuracy"]
    assert log_loss(PROBA, LABELS) == m["log_loss"]
    assert auc([0.3, 0.7], [1, 1]) is None


def test_row_wise_auc_and_spearman_match_the_reference_implementations():
    rng = np.random.default_rng(0)
    # Rounded scores make ties, which ROC AUC counts as one half.
    proba = np.round(rng.uniform(size=(20, 60)), 1)
    labels = (rng.uniform(size=(20, 60)) < 0.4).astype(float)
    realised = np.round(rng.normal(size=(20, 60)), 1)
    got_auc = auc_rows(proba, labels)
    got_rho = spearman_rows(proba, realised)
    for i in range(20):
        assert got_auc[i] == pytest.approx(roc_auc_score(labels[i], proba[i]), abs=1e-12)
        assert got_rho[i] == pytest.approx(spearmanr(proba[i], realised[i]).statistic, abs=1e-12)
    one_class = auc_rows(proba[:1], np.ones((1, 60)))
    assert np.isnan(one_class[0])


# ------------------------------------------------------------------------------- calibration


def test_ece_and_reliability_bins_hand_case():
    """PROBA sorted: 0.2 (1), 0.3 (0), 0.4 (0), 0.6 (0), 0.8 (1), 0.9 (1); 3 equal-mass bins of 2."""
    bins = reliability_diagram(PROBA, LABELS, n_bins=3)
    assert [b["bin"] for b in bins] == [0, 1, 2]
    assert [b["n"] for b in bins] == [2, 2, 2]
    assert [b["mean_proba"] for b in bins] == pytest.approx([0.25, 0.5, 0.85])
    assert [b["observed_rate"] for b in bins] == pytest.approx([0.5, 0.0, 1.0])
    assert [(b["proba_min"], b["proba_max"]) for b in bins] == [(0.2, 0.3), (0.4, 0.6), (0.8, 0.9)]
    # ECE = (2 * |0.25 - 0.5| + 2 * |0.5 - 0| + 2 * |0.85 - 1|) / 6 = 1.8 / 6.
    assert expected_calibration_error(PROBA, LABELS, n_bins=3) == pytest.approx(0.3)
    # With the default 10 bins each of the 6 rows is its own bin: ECE = mean |p - y| = 2.4 / 6.
    assert expected_calibration_error(PROBA, LABELS) == pytest.approx(0.4)
    # Wilson 95 % interval of 1 success in 2: centre (1 + z^2/2) / (2 + z^2) = 0.5,
    # half-width z / (2 + z^2) * sqrt(1 * 1 / 2 + z^2 / 4).
    z = 1.959963984540054
    half = z / (2 + z * z) * math.sqrt(0.5 + z * z / 4)
    assert (bins[0]["observed_low"], bins[0]["observed_high"]) == pytest.approx((0.5 - half, 0.5 + half))
    assert bins[1]["observed_low"] == 0.0 and bins[2]["observed_high"] == 1.0
    json.dumps(bins)


def test_equal_mass_bins_keep_ties_together_and_ignore_row_order():
    p = np.array([0.5, 0.5, 0.5, 0.5, 0.9, 0.1])
    y = np.array([1, 0, 0, 0, 1, 0])
    # Sorted 0.1, 0.5 x 4, 0.9: first rank positions 0, 1, 5 -> bins floor(3 * i / 6) = 0, 0, 2.
    assert equal_mass_bins(p, 3).tolist() == [0, 0, 0, 0, 2, 0]
    # Bin 0: mean forecast (0.1 + 4 * 0.5) / 5 = 0.42, observed 1 / 5; bin 2: 0.9 vs 1.
    assert expected_calibration_error(p, y, n_bins=3) == pytest.approx((5 * 0.22 + 0.1) / 6)
    order = np.array([5, 3, 0, 4, 1, 2])
    assert expected_calibration_error(p[order], y[order], n_bins=3) == pytest.approx((5 * 0.22 + 0.1) / 6)
    # A constant forecast is one bin: its ECE is the gap between the forecast and the base rate.
    assert len(reliability_diagram(np.full(8, 0.3), [1, 0, 1, 0, 1, 0, 1, 0])) == 1
    assert expected_calibration_error(np.full(8, 0.3), [1, 0, 1, 0, 1, 0, 1, 0]) == pytest.approx(0.2)
    # Without ties, 10 bins of 23 rows have sizes 2 or 3 (floor / ceil of 2.3).
    sizes = np.bincount(equal_mass_bins(np.linspace(0.01, 0.99, 23)), minlength=10)
    assert set(sizes.tolist()) == {2, 3} and sizes.sum() == 23


def test_reliability_bins_match_sklearn_quantile_calibration_curve():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(5)
    p = rng.uniform(0.05, 0.95, 200)
    y = (rng.uniform(size=200) < p).astype(int)
    bins = reliability_diagram(p, y)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    np.testing.assert_allclose([b["observed_rate"] for b in bins], prob_true)
    np.testing.assert_allclose([b["mean_proba"] for b in bins], prob_pred)
    assert all(b["n"] == 20 for b in bins)


def test_ece_separates_a_calibrated_forecast_from_an_overconfident_one():
    """Simulated: labels drawn from p; the forecast p is calibrated, p pushed to the extremes is not."""
    rng = np.random.default_rng(11)
    eces, bad = [], []
    for _ in range(20):
        p = rng.uniform(0.2, 0.8, 1000)
        y = (rng.uniform(size=1000) < p).astype(int)
        extreme = 1 / (1 + np.exp(-4 * np.log(p / (1 - p))))
        eces.append(expected_calibration_error(p, y))
        bad.append(expected_calibration_error(extreme, y))
    # Noise alone: about 0.8 * sqrt(0.25 / 100) = 0.04 per bin; the overconfident map is off by ~0.2.
    assert max(eces) < 0.07
    assert min(bad) > 0.12


def test_brier_and_bin_validation():
    assert brier(PROBA, LABELS) == pytest.approx(1.3 / 6)
    assert brier(PROBA, LABELS) == classification_metrics(PROBA, LABELS)["brier"]
    with pytest.raises(ValueError, match="n_bins"):
        equal_mass_bins(PROBA, 0)
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(PROBA, [0, 1, 2, 0, 1, 0])


def test_wilson_interval_always_holds_the_observed_rate():
    """Every k of every n up to 80 (k = 0 and k = n included, where rounding bites): low <= k/n <= high."""
    for n in range(1, 81):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0, (k, n)
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0
    # Against statsmodels' implementation.
    from statsmodels.stats.proportion import proportion_confint

    for k, n in ((0, 5), (3, 11), (9, 10), (50, 120)):
        assert wilson_interval(k, n) == pytest.approx(proportion_confint(k, n, alpha=0.05, method="wilson"))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
