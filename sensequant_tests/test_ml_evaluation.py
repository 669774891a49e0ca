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
    classification_metrics,
    fidelity,
    log_loss,
    log_loss_series,
    spearman_ic,
    spearman_rows,
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
