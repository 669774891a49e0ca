"""Tests for sensequant_assets.ml.stats against hand computations and reference implementations."""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest
from statsmodels.tsa.stattools import diebold_mariano_test

from sensequant_assets.ml import stats as S

# A fixed, slightly skewed daily return series (positive mean) used by the Sharpe-family tests.
RETURNS = np.array(
    [
        0.012,
        -0.004,
        0.007,
        0.021,
        -0.015,
        0.003,
        0.009,
        -0.002,
        0.011,
        -0.027,
        0.006,
        0.004,
        0.015,
        -0.008,
        0.002,
        0.010,
        -0.005,
        0.013,
        0.001,
        0.008,
    ]
)

GAMMA = 0.5772156649015329
PHI = NormalDist().cdf
PHI_INV = NormalDist().inv_cdf


def _hand_moments(x: list[float]) -> tuple[float, float, float, float]:
    """(SR per period with ddof=1 std, skewness, non-excess kurtosis, n) in plain Python."""
    n = len(x)
    mean = sum(x) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    m2 = sum((v - mean) ** 2 for v in x) / n
    m3 = sum((v - mean) ** 3 for v in x) / n
    m4 = sum((v - mean) ** 4 for v in x) / n
    return mean / sd, m3 / m2**1.5, m4 / m2**2, n


def _hand_psr(x: list[float], sr_star: float) -> float:
    sr, g3, g4, n = _hand_moments(x)
    return PHI((sr - sr_star) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))


def _hand_emax(n_trials: int, var: float) -> float:
    return math.sqrt(var) * (
        (1 - GAMMA) * PHI_INV(1 - 1 / n_trials) + GAMMA * PHI_INV(1 - 1 / (n_trials * math.e))
    )


# ------------------------------------------------------------------------------- Sharpe / PSR


def test_sharpe_ratio_matches_hand_computation():
    x = RETURNS.tolist()
    sr, _, _, _ = _hand_moments(x)
    assert S.sharpe_ratio(RETURNS, annualise=False) == pytest.approx(sr, rel=1e-12)
    assert S.sharpe_ratio(RETURNS) == pytest.approx(sr * math.sqrt(252), rel=1e-12)
    assert S.sharpe_ratio(RETURNS, periods_per_year=12) == pytest.approx(sr * math.sqrt(12))
    assert S.sharpe_ratio([0.01, 0.01, 0.01]) is None
    assert S.sharpe_ratio([0.01]) is None


def test_psr_matches_hand_formula():
    x = RETURNS.tolist()
    sr, g3, g4, _ = _hand_moments(x)
    # The series must really be non-normal for the moment terms to matter.
    assert abs(g3) > 0.3
    assert g4 > 3.5
    assert S.probabilistic_sharpe_ratio(RETURNS) == pytest.approx(_hand_psr(x, 0.0), abs=1e-12)
    assert S.probabilistic_sharpe_ratio(RETURNS, sr_benchmark=0.1) == pytest.approx(
        _hand_psr(x, 0.1), abs=1e-12
    )
    # Benchmark equal to the observed SR gives exactly one half.
    assert S.probabilistic_sharpe_ratio(RETURNS, sr_benchmark=sr) == pytest.approx(0.5)


def test_psr_increases_with_sample_length_for_positive_sr():
    values = [S.probabilistic_sharpe_ratio(np.tile(RETURNS, k)) for k in (1, 2, 4, 8)]
    assert all(b > a for a, b in itertools.pairwise(values))
    # A negative SR goes the other way.
    neg = [S.probabilistic_sharpe_ratio(-np.tile(RETURNS, k)) for k in (1, 2, 4)]
    assert all(b < a for a, b in itertools.pairwise(neg))


def test_psr_undefined_for_flat_returns():
    assert S.probabilistic_sharpe_ratio(np.zeros(10)) is None


# ------------------------------------------------------------------------------- E[max SR] / DSR


@pytest.mark.parametrize("n_trials", [2, 10, 100, 1000])
@pytest.mark.parametrize("var", [1.0, 0.25, 0.003])
def test_expected_max_sharpe_matches_formula(n_trials, var):
    assert S.expected_max_sharpe(n_trials, var) == pytest.approx(_hand_emax(n_trials, var), rel=1e-10)


def test_expected_max_sharpe_known_value_and_edges():
    assert S.expected_max_sharpe(100, 1.0) == pytest.approx(2.5306, abs=1e-4)
    assert S.expected_max_sharpe(100, 4.0) == pytest.approx(2 * 2.5306, abs=2e-4)
    assert S.expected_max_sharpe(1, 1.0) == 0.0
    assert S.expected_max_sharpe(10, 1.0) < S.expected_max_sharpe(100, 1.0)
    with pytest.raises(ValueError):
        S.expected_max_sharpe(0, 1.0)


def test_dsr_with_estimator_variance_matches_hand_computation():
    x = RETURNS.tolist()
    sr, g3, g4, n = _hand_moments(x)
    var = (1 - g3 * sr + (g4 - 1) / 4 * sr**2) / (n - 1)
    sr_star = _hand_emax(25, var)
    out = S.deflated_sharpe_ratio(RETURNS, n_trials=25)
    assert out["var_source"] == "estimator"
    assert out["var_trial_sr"] == pytest.approx(var, rel=1e-12)
    assert out["sr_benchmark"] == pytest.approx(sr_star, rel=1e-10)
    assert out["dsr"] == pytest.approx(_hand_psr(x, sr_star), abs=1e-10)
    assert out["psr"] == pytest.approx(_hand_psr(x, 0.0), abs=1e-12)
    assert out["sr"] == pytest.approx(sr)
    assert out["skew"] == pytest.approx(g3)
    assert out["kurtosis"] == pytest.approx(g4)


def test_dsr_with_trial_variance_matches_hand_computation():
    x = RETURNS.tolist()
    out = S.deflated_sharpe_ratio(RETURNS, n_trials=8, var_trial_sr=0.01)
    assert out["var_source"] == "trials"
    assert out["dsr"] == pytest.approx(_hand_psr(x, _hand_emax(8, 0.01)), abs=1e-10)


def test_dsr_properties():
    one = S.deflated_sharpe_ratio(RETURNS, n_trials=1)
    assert one["dsr"] == pytest.approx(S.probabilistic_sharpe_ratio(RETURNS), abs=1e-15)
    assert one["sr_benchmark"] == 0.0
    dsrs = [S.deflated_sharpe_ratio(RETURNS, n_trials=k)["dsr"] for k in (1, 2, 10, 100)]
    assert all(b < a for a, b in itertools.pairwise(dsrs))
    assert dsrs[-1] < S.probabilistic_sharpe_ratio(RETURNS)


def test_dsr_undefined_returns_nones():
    out = S.deflated_sharpe_ratio(np.full(5, 0.01), n_trials=3)
    assert out["dsr"] is None
    assert out["psr"] is None
    assert out["n"] == 5


# ------------------------------------------------------------------------------- Diebold-Mariano

LOSS_A = [1.0, 2.0, 0.5, 3.0, 1.5, 2.5, 0.0, 1.0, 2.0, 0.5]
LOSS_B = [0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.0, 1.5, 1.0]


def _hand_dm(a: list[float], b: list[float], h: int) -> tuple[float, float]:
    """DM 1995 (rectangular autocovariances to lag h-1) with the HLN 1997 correction, by hand."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    dbar = sum(d) / n
    gamma = []
    for k in range(h):
        gamma.append(sum((d[t] - dbar) * (d[t - k] - dbar) for t in range(k, n)) / n)
    lrv = gamma[0] + 2 * sum(gamma[1:])
    dm = dbar / math.sqrt(lrv / n)
    hln = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    return hln * dm, dbar


@pytest.mark.parametrize("h", [1, 3])
def test_diebold_mariano_matches_hand_computation(h):
    from scipy import stats as sps

    stat, dbar = _hand_dm(LOSS_A, LOSS_B, h)
    out = S.diebold_mariano(LOSS_A, LOSS_B, h=h)
    assert out["kernel"] == "rectangular"
    assert out["mean_diff"] == pytest.approx(dbar)
    assert out["stat"] == pytest.approx(stat, rel=1e-12)
    assert out["p_value"] == pytest.approx(2 * sps.t.sf(abs(stat), df=len(LOSS_A) - 1), rel=1e-12)
    assert out["stat"] > 0  # a has the higher loss here


@pytest.mark.parametrize("h", [1, 3, 5])
def test_diebold_mariano_bartlett_matches_statsmodels(h):
    rng = np.random.default_rng(h)
    y = rng.normal(size=120)
    fa = y + rng.normal(scale=0.9, size=120)
    fb = y + rng.normal(scale=1.0, size=120)
    ref = diebold_mariano_test(y, fa, fb, lags=h - 1, harvey_adj=True, horizon=h)
    out = S.diebold_mariano((y - fa) ** 2, (y - fb) ** 2, h=h, kernel="bartlett")
    assert out["stat"] == pytest.approx(ref.statistic, rel=1e-10)
    assert out["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    if h == 1:  # no autocovariances: both kernels coincide
        rect = S.diebold_mariano((y - fa) ** 2, (y - fb) ** 2, h=1)
        assert rect["stat"] == pytest.approx(ref.statistic, rel=1e-10)


def test_diebold_mariano_is_antisymmetric():
    ab = S.diebold_mariano(LOSS_A, LOSS_B, h=3)
    ba = S.diebold_mariano(LOSS_B, LOSS_A, h=3)
    assert ba["stat"] == pytest.approx(-ab["stat"])
    assert ba["p_value"] == pytest.approx(ab["p_value"])
    assert ba["mean_diff"] == pytest.approx(-ab["mean_diff"])


def test_diebold_mariano_degenerate_cases():
    same = S.diebold_mariano(LOSS_A, LOSS_A, h=2)
    assert same["stat"] == 0.0
    assert same["p_value"] == 1.0
    shifted = S.diebold_mariano(np.array(LOSS_A) + 1.0, LOSS_A)
    assert shifted["stat"] is None
    assert shifted["p_value"] is None
    assert shifted["mean_diff"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        S.diebold_mariano([1.0, 2.0], [1.0], h=1)
    with pytest.raises(ValueError):
        S.diebold_mariano([1.0, 2.0, 3.0], [1.0, 2.0, 2.0], h=3)


def test_diebold_mariano_falls_back_to_bartlett_when_rectangular_variance_is_negative():
    # Strongly alternating differential: large negative lag-1 autocovariance.
    d = np.array([1.0, -0.8, 1.0, -0.8, 1.0, -0.8, 1.0, -0.8, 1.0, -0.7])
    out = S.diebold_mariano(d, np.zeros_like(d), h=2)
    assert out["kernel"] == "bartlett"
    ref = S.diebold_mariano(d, np.zeros_like(d), h=2, kernel="bartlett")
    assert out["stat"] == pytest.approx(ref["stat"])
    assert out["p_value"] is not None
