"""Features: causal, correct on hand-checkable cases, scale-free model inputs, settled after warm-up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sensequant_assets.ml.features import (
    FEATURE_COLUMNS,
    MODEL_FEATURES,
    WARMUP_BARS,
    compute_features,
    model_matrix,
)
from sensequant_tests.test_ml_synthetic import make_bars


def _both(bars: pd.DataFrame) -> pd.DataFrame:
    features = compute_features(bars)
    return pd.concat([features, model_matrix(features, bars)], axis=1)


def test_feature_columns_are_the_predecessor_fifteen_in_order() -> None:
    assert FEATURE_COLUMNS == [
        "sma_20",
        "sma_50",
        "ema_12",
        "ema_26",
        "rsi_14",
        "atr_14",
        "vwap",
        "bb_upper",
        "bb_middle",
        "bb_lower",
        "macd_line",
        "macd_signal",
        "macd_histogram",
        "adx_14",
        "obv",
    ]
    bars = make_bars(200, seed=1)
    features = compute_features(bars)
    assert list(features.columns) == FEATURE_COLUMNS
    assert features.index.equals(bars.index)
    assert (features.dtypes == "float64").all()
    matrix = model_matrix(features, bars)
    assert list(matrix.columns) == MODEL_FEATURES
    assert not set(MODEL_FEATURES) & set(FEATURE_COLUMNS)


@pytest.mark.parametrize("t", [60, 149, 250, 398])
def test_no_look_ahead_perturbing_later_bars_leaves_rows_up_to_t_bit_equal(t: int) -> None:
    bars = make_bars(400, seed=7, trend=True)
    rng = np.random.default_rng(t)
    perturbed = bars.copy()
    later = perturbed.index > perturbed.index[t]
    factor = np.exp(rng.normal(0.0, 0.05, later.sum()))
    for col in ("open", "high", "low", "close"):
        perturbed.loc[later, col] = perturbed.loc[later, col] * factor
    perturbed.loc[later, "volume"] = perturbed.loc[later, "volume"] * 3.0

    base, moved = _both(bars), _both(perturbed)
    head_base = base.iloc[: t + 1].to_numpy()
    head_moved = moved.iloc[: t + 1].to_numpy()
    assert np.array_equal(head_base, head_moved, equal_nan=True)
    # The perturbation was real: rows after t did move.
    assert not np.array_equal(base.iloc[t + 1 :].to_numpy(), moved.iloc[t + 1 :].to_numpy())


def test_no_look_ahead_truncated_history_gives_the_same_rows() -> None:
    bars = make_bars(300, seed=11)
    full = _both(bars)
    for t in (30, 121, 222):
        head = _both(bars.iloc[: t + 1])
        assert np.array_equal(head.to_numpy(), full.iloc[: t + 1].to_numpy(), equal_nan=True)


def test_indicators_match_hand_computations() -> None:
    bars = make_bars(260, seed=5)
    f = compute_features(bars)
    close, volume = bars["close"].to_numpy(), bars["volume"].to_numpy()
    typical = ((bars["high"] + bars["low"] + bars["close"]) / 3.0).to_numpy()
    k = 200
    window = close[k - 19 : k + 1]
    assert f["sma_20"].iloc[k] == pytest.approx(window.mean(), rel=1e-12)
    assert f["sma_50"].iloc[k] == pytest.approx(close[k - 49 : k + 1].mean(), rel=1e-12)
    vw = (typical[k - 19 : k + 1] * volume[k - 19 : k + 1]).sum() / volume[k - 19 : k + 1].sum()
    assert f["vwap"].iloc[k] == pytest.approx(vw, rel=1e-12)
    assert f["bb_middle"].iloc[k] == pytest.approx(window.mean(), rel=1e-12)
    assert f["bb_upper"].iloc[k] == pytest.approx(window.mean() + 2 * window.std(ddof=0), rel=1e-12)
    assert f["bb_lower"].iloc[k] == pytest.approx(window.mean() - 2 * window.std(ddof=0), rel=1e-12)
    # EMA with adjust=False is the recursion e_t = a x_t + (1 - a) e_{t-1}, seeded at x_0.
    a = 2.0 / 13.0
    ema = close[0]
    for x in close[1 : k + 1]:
        ema = a * x + (1 - a) * ema
    assert f["ema_12"].iloc[k] == pytest.approx(ema, rel=1e-12)
    assert f["macd_line"].iloc[k] == pytest.approx(f["ema_12"].iloc[k] - f["ema_26"].iloc[k])
    assert f["macd_histogram"].iloc[k] == pytest.approx(f["macd_line"].iloc[k] - f["macd_signal"].iloc[k])
    obv = np.concatenate([[0.0], np.cumsum(np.sign(np.diff(close)) * volume[1:])])
    assert np.allclose(f["obv"].to_numpy(), obv, rtol=0, atol=1e-6)
    settled = f.iloc[WARMUP_BARS:]
    assert settled["rsi_14"].between(0, 100).all()
    assert settled["adx_14"].between(0, 100).all()
    assert (settled["atr_14"] > 0).all()


def test_rsi_and_adx_extremes() -> None:
    n = 80
    index = pd.bdate_range("2021-01-01", periods=n, tz="Asia/Kolkata", name="timestamp")
    up = np.linspace(100.0, 180.0, n)
    rising = pd.DataFrame(
        {"open": up, "high": up + 1, "low": up - 1, "close": up, "volume": 1e5}, index=index
    )
    f_up = compute_features(rising)
    assert (f_up["rsi_14"].dropna() == 100.0).all()
    assert f_up["adx_14"].iloc[-1] > 90.0  # one-directional market: trend strength near 100
    falling = rising.iloc[::-1].set_axis(index)
    assert (compute_features(falling)["rsi_14"].dropna() == 0.0).all()
    flat = pd.DataFrame(
        {"open": 100.0, "high": 100.0, "low": 100.0, "close": 100.0, "volume": 1e5}, index=index
    )
    f_flat = compute_features(flat)
    assert (f_flat["rsi_14"].dropna() == 50.0).all()
    assert (f_flat["adx_14"].dropna() == 0.0).all()
    m_flat = model_matrix(f_flat, flat).iloc[WARMUP_BARS // 2 :]
    assert not m_flat.isna().any().any()
    assert (m_flat["m_bb_position"] == 0.5).all()


def test_warmup_nan_only_at_the_start_and_within_warmup_bars() -> None:
    bars = make_bars(300, seed=2)
    both = _both(bars)
    first_valid = both.apply(lambda col: col.first_valid_index())
    positions = [bars.index.get_loc(ts) for ts in first_valid]
    assert max(positions) < WARMUP_BARS
    assert both.iloc[max(positions) :].notna().all().all()
    assert both.iloc[0].isna().any()  # nothing back-filled


def test_model_matrix_is_scale_free() -> None:
    bars = make_bars(300, seed=9, trend=True)
    scaled = bars.copy()
    scaled[["open", "high", "low", "close"]] *= 37.0
    scaled["volume"] /= 4.0
    a = model_matrix(compute_features(bars), bars)
    b = model_matrix(compute_features(scaled), scaled)
    assert np.allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=1e-12, equal_nan=True)
    assert a["m_obv_flow"].dropna().between(-1, 1).all()


def test_model_inputs_do_not_depend_on_where_history_starts_after_warmup() -> None:
    bars = make_bars(400, seed=4, trend=True)
    offset = 60
    long_history = model_matrix(compute_features(bars), bars)
    short_bars = bars.iloc[offset:]
    short_history = model_matrix(compute_features(short_bars), short_bars)
    common = short_history.index[WARMUP_BARS:]
    diff = (long_history.loc[common] - short_history.loc[common]).abs().to_numpy()
    assert diff.max() < 1e-3


def test_bad_bars_are_refused() -> None:
    bars = make_bars(50, seed=0)
    with pytest.raises(ValueError, match="strictly increasing"):
        compute_features(bars.iloc[::-1])
    with pytest.raises(ValueError, match="strictly increasing"):
        compute_features(pd.concat([bars.iloc[:10], bars.iloc[9:]]))
    with pytest.raises(ValueError, match="volume"):
        compute_features(bars.drop(columns="volume"))
    with pytest.raises(ValueError, match="same index"):
        model_matrix(compute_features(bars), bars.iloc[1:])
