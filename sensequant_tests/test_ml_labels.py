"""Labels and the window dataset: horizon purge at the window end, warm-up from history, no leakage."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from sensequant_assets.ml.dataset import DATASET_COLUMNS, build_dataset
from sensequant_assets.ml.features import (
    FEATURE_COLUMNS,
    MODEL_FEATURES,
    WARMUP_BARS,
    compute_features,
    model_matrix,
)
from sensequant_assets.ml.labels import LabelSpec, make_labels
from sensequant_tests.test_ml_synthetic import make_bars

H = 7
THRESHOLD = 0.02


def test_make_labels_on_a_hand_series() -> None:
    close = pd.Series([100.0, 101.0, 103.0, 99.0, 110.0])
    out = make_labels(close, horizon=2, spec=0.02)
    assert list(out.columns) == ["forward_return", "label"]
    assert out["forward_return"].iloc[:3].tolist() == pytest.approx(
        [0.03, 99.0 / 101.0 - 1.0, 110.0 / 103.0 - 1.0]
    )
    assert out["label"].iloc[:3].tolist() == [1.0, 0.0, 1.0]
    assert out.iloc[3:].isna().all().all()  # horizon runs past the last bar: NaN, not filled


def test_sign_and_vol_scaled_labels_are_direction_aware() -> None:
    close = pd.Series([100.0, 101.0, 103.0, 99.0, 110.0])
    sign = make_labels(close, horizon=1, spec=LabelSpec())
    assert sign["label"].iloc[:4].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert LabelSpec().describe(7) == "7-bar forward return > 0"
    # vol_scaled: the bar needs vol_window past returns; the threshold is k * sigma * sqrt(h).
    rng = np.random.default_rng(0)
    walk = pd.Series(100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 200))))
    spec = LabelSpec(kind="vol_scaled", vol_k=0.5, vol_window=20)
    out = make_labels(walk, horizon=H, spec=spec)
    assert out.iloc[:20].isna().all().all()  # fewer than 20 past returns: no label
    sigma = np.log(walk).diff().rolling(20).std()
    expected = (walk.shift(-H) / walk - 1.0) > 0.5 * sigma * np.sqrt(H)
    rows = out["label"].notna()
    assert (out.loc[rows, "label"] == expected[rows].astype(float)).all()
    for bad in ({"kind": "up"}, {"vol_window": 1}, {"threshold": float("nan")}):
        with pytest.raises(ValueError):
            LabelSpec(**bad)  # type: ignore[arg-type]


def test_make_labels_threshold_is_strict_and_horizon_validated() -> None:
    close = pd.Series([100.0, 102.0])
    # 102/100 - 1 is 0.02 up to rounding; a threshold just below/above decides the label.
    assert make_labels(close, 1, 0.019)["label"].iloc[0] == 1.0
    assert make_labels(close, 1, 0.021)["label"].iloc[0] == 0.0
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="horizon"):
            make_labels(close, bad, 0.02)  # type: ignore[arg-type]


def test_perturbing_the_last_bar_changes_only_labels_within_the_horizon() -> None:
    close = make_bars(120, seed=3)["close"]
    base = make_labels(close, H, THRESHOLD)
    moved_close = close.copy()
    moved_close.iloc[-1] *= 1.5
    moved = make_labels(moved_close, H, THRESHOLD)
    changed = ~np.isclose(
        base["forward_return"].to_numpy(), moved["forward_return"].to_numpy(), equal_nan=True
    )
    assert np.flatnonzero(changed).tolist() == [len(close) - 1 - H]
    assert base.iloc[: len(close) - 1 - H].equals(moved.iloc[: len(close) - 1 - H])


def _window(bars: pd.DataFrame, first: int, last: int) -> tuple[date, date]:
    return bars.index[first].date(), bars.index[last].date()


def test_history_before_the_window_means_no_row_lost_to_warmup() -> None:
    bars = make_bars(WARMUP_BARS + 130, seed=1)
    start, end = _window(bars, WARMUP_BARS, len(bars) - 1)
    result = build_dataset(bars, start, end, H, THRESHOLD, "RELIANCE")
    assert result.in_window_bars == 130
    assert result.history_bars == WARMUP_BARS
    assert result.dropped_warmup == 0
    assert result.dropped_incomplete == 0
    assert result.dropped_horizon == H
    assert result.usable_rows == 130 - H == len(result.frame)
    frame = result.frame
    assert frame["ts"].iloc[0] == bars.index[WARMUP_BARS]  # the first in-window bar is kept
    assert frame["ts"].iloc[-1] == bars.index[-1 - H]  # the last H bars are purged
    assert frame["ts"].is_monotonic_increasing


def test_without_history_rows_are_lost_to_warmup_and_counted() -> None:
    bars = make_bars(200, seed=1)
    start, end = _window(bars, 0, len(bars) - 1)
    result = build_dataset(bars, start, end, H, THRESHOLD, "TCS")
    assert result.history_bars == 0
    assert result.dropped_warmup == WARMUP_BARS
    assert result.dropped_horizon == H
    assert result.usable_rows == 200 - WARMUP_BARS - H
    assert result.frame["ts"].iloc[0] == bars.index[WARMUP_BARS]
    counts = result.counts()
    assert counts["in_window_bars"] == sum(
        counts[k] for k in ("usable_rows", "dropped_horizon", "dropped_warmup", "dropped_incomplete")
    )


def test_frame_columns_types_and_values() -> None:
    bars = make_bars(WARMUP_BARS + 80, seed=6, trend=True)
    start, end = _window(bars, WARMUP_BARS, len(bars) - 1)
    frame = build_dataset(bars, start, end, H, THRESHOLD, "INFY").frame
    assert list(frame.columns) == DATASET_COLUMNS
    assert DATASET_COLUMNS[:7] == ["ts", "symbol", "open", "high", "low", "close", "volume"]
    assert DATASET_COLUMNS[7:22] == FEATURE_COLUMNS
    assert DATASET_COLUMNS[22:24] == ["label", "forward_return"]
    assert DATASET_COLUMNS[24:] == MODEL_FEATURES
    assert frame["label"].dtype == np.int64
    assert set(frame["label"].unique()) <= {0, 1}
    assert (frame["symbol"] == "INFY").all()
    assert not frame.drop(columns=["ts", "symbol"]).isna().any().any()
    # Values are the layer functions' values at those timestamps, labels from closes only.
    indexed = frame.set_index("ts")
    features = compute_features(bars)
    matrix = model_matrix(features, bars)
    labels = make_labels(bars["close"], H, THRESHOLD)
    assert np.array_equal(indexed[FEATURE_COLUMNS].to_numpy(), features.loc[indexed.index].to_numpy())
    assert np.array_equal(indexed[MODEL_FEATURES].to_numpy(), matrix.loc[indexed.index].to_numpy())
    assert np.array_equal(indexed["label"].to_numpy(), labels.loc[indexed.index, "label"].to_numpy())
    expected = bars["close"].shift(-H) / bars["close"] - 1.0
    assert np.allclose(indexed["forward_return"], expected.loc[indexed.index])
    assert ((indexed["forward_return"] > THRESHOLD) == (indexed["label"] == 1)).all()


def test_bars_past_the_window_end_are_refused() -> None:
    bars = make_bars(WARMUP_BARS + 60, seed=2)
    start, end = _window(bars, WARMUP_BARS, len(bars) - 2)
    with pytest.raises(ValueError, match="past window end"):
        build_dataset(bars, start, end, H, THRESHOLD, "RELIANCE")


def test_window_edges_are_read_in_exchange_time() -> None:
    # A bar at 00:00 IST on the window end is still 18:30 UTC of the day before: it must count
    # as inside the window; a bar at 00:00 IST on the next day must be refused.
    bars = make_bars(WARMUP_BARS + 40, seed=8)
    end = bars.index[-1].date()
    assert bars.index[-1].tz_convert("UTC").date() == end - timedelta(days=1)
    result = build_dataset(bars, bars.index[WARMUP_BARS].date(), end, H, THRESHOLD, "X")
    assert result.in_window_bars == 40
    with pytest.raises(ValueError, match="past window end"):
        build_dataset(bars, bars.index[WARMUP_BARS].date(), end - timedelta(days=1), H, 0.0, "X")


def test_labels_never_use_bars_after_the_window_end() -> None:
    bars = make_bars(WARMUP_BARS + 200, seed=12)
    cut = WARMUP_BARS + 100
    start, end = _window(bars, WARMUP_BARS, cut)
    result = build_dataset(bars.iloc[: cut + 1], start, end, H, THRESHOLD, "X")
    # Whatever happens after the window end cannot reach this window's rows.
    wild = bars.copy()
    wild.iloc[cut + 1 :, :4] *= 3.0
    again = build_dataset(wild.iloc[: cut + 1], start, end, H, THRESHOLD, "X")
    assert result.frame.equals(again.frame)
    assert result.frame["ts"].iloc[-1] == bars.index[cut - H]
    # Feature values equal the ones computed on the longer series: nothing in-window moved.
    full = compute_features(bars)
    rows = result.frame.set_index("ts")[FEATURE_COLUMNS]
    assert np.array_equal(rows.to_numpy(), full.loc[rows.index].to_numpy())


def test_window_end_before_start_is_refused() -> None:
    bars = make_bars(30, seed=0)
    with pytest.raises(ValueError, match="before window_start"):
        build_dataset(bars, date(2020, 3, 1), date(2020, 2, 1), H, THRESHOLD, "X")
