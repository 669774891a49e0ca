"""SyntheticSource: deterministic, range-independent, well-formed, with a known signal or none."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from sensequant_assets.sources import (
    BAR_COLUMNS,
    IST,
    BarSource,
    InvalidSymbolError,
    SyntheticSource,
    validate_bars,
)
from sensequant_assets.sources.synthetic import EPOCH

D = dt.date


def _trailing_vs_forward_rho(close: pd.Series, trailing: int = 10, forward: int = 7) -> float:
    """Spearman rho of the trailing log return against the forward one (> 0 trend, < 0 reversion)."""
    log_close = np.log(close)
    past = log_close - log_close.shift(trailing)
    future = log_close.shift(-forward) - log_close
    ok = past.notna() & future.notna()
    return float(spearmanr(past[ok], future[ok])[0])


def assert_bar_schema(bars: pd.DataFrame) -> None:
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert all(bars[c].dtype == np.float64 for c in BAR_COLUMNS)
    assert isinstance(bars.index, pd.DatetimeIndex)
    assert bars.index.name == "timestamp"
    assert str(bars.index.tz) == IST
    assert bars.index.is_unique
    assert bars.index.is_monotonic_increasing
    assert (bars.index == bars.index.normalize()).all()  # midnight IST


def test_is_a_bar_source_with_any_symbol() -> None:
    source = SyntheticSource()
    assert isinstance(source, BarSource)
    assert source.name == "synthetic"
    assert source.symbols() is None


def test_schema_dtypes_and_timezone() -> None:
    bars = SyntheticSource().bars("RELIANCE", D(2023, 1, 1), D(2023, 12, 31))
    assert_bar_schema(bars)
    assert bars.index[0] == pd.Timestamp("2023-01-02", tz=IST)  # Jan 1 2023 was a Sunday
    assert bars.index[-1] == pd.Timestamp("2023-12-29", tz=IST)


def test_output_passes_shared_validation_unchanged() -> None:
    bars = SyntheticSource(seed=3).bars("TCS", D(2015, 1, 1), D(2027, 12, 31))
    pd.testing.assert_frame_equal(validate_bars(bars, origin="synthetic"), bars)


@pytest.mark.parametrize(
    "source",
    [SyntheticSource(), SyntheticSource(signal_strength=1.0), SyntheticSource(random_walk=True)],
    ids=["default", "signal", "random_walk"],
)
def test_ohlc_consistency_and_positive_volume(source: SyntheticSource) -> None:
    bars = source.bars("INFY", D(2015, 1, 1), D(2026, 12, 31))
    assert len(bars) > 3000
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["low"] > 0).all()
    assert (bars["volume"] > 0).all()
    assert not bars.isna().any().any()


def test_weekdays_only_and_every_weekday_present() -> None:
    bars = SyntheticSource().bars("TCS", D(2020, 1, 1), D(2020, 12, 31))
    assert set(bars.index.dayofweek) == {0, 1, 2, 3, 4}
    expected = pd.bdate_range("2020-01-01", "2020-12-31")
    assert list(bars.index.date) == list(expected.date)


def test_same_arguments_give_identical_frames() -> None:
    a = SyntheticSource(seed=7).bars("RELIANCE", D(2022, 1, 1), D(2022, 6, 30))
    b = SyntheticSource(seed=7).bars("reliance ", D(2022, 1, 1), D(2022, 6, 30))
    pd.testing.assert_frame_equal(a, b)


def test_returned_frame_is_a_copy_not_the_cache() -> None:
    source = SyntheticSource(seed=11)
    first = source.bars("TCS", D(2022, 1, 1), D(2022, 1, 31))
    first.iloc[:, :] = -1.0
    again = source.bars("TCS", D(2022, 1, 1), D(2022, 1, 31))
    assert (again["close"] > 0).all()


def test_different_seed_or_symbol_gives_different_bars() -> None:
    span = (D(2022, 1, 1), D(2022, 6, 30))
    base = SyntheticSource(seed=0).bars("RELIANCE", *span)["close"].to_numpy()
    other_seed = SyntheticSource(seed=1).bars("RELIANCE", *span)["close"].to_numpy()
    other_symbol = SyntheticSource(seed=0).bars("TCS", *span)["close"].to_numpy()
    assert not np.allclose(base, other_seed)
    assert not np.allclose(base, other_symbol)


def test_price_levels_differ_per_symbol_and_look_like_equities() -> None:
    first_close = [
        SyntheticSource().bars(s, EPOCH, D(2015, 1, 31))["close"].iloc[0]
        for s in ("RELIANCE", "TCS", "INFY", "HDFCBANK", "ICICIBANK", "M&M")
    ]
    assert len(set(first_close)) == 6
    assert all(50 < p < 4000 for p in first_close)


def test_a_day_is_the_same_whatever_range_is_asked() -> None:
    source = SyntheticSource(seed=5, signal_strength=0.5)
    short = source.bars("HDFCBANK", D(2023, 3, 1), D(2023, 3, 31))
    # A long range forces a longer generated path (more random-number chunks) than the short one.
    long = source.bars("HDFCBANK", D(2016, 1, 1), D(2031, 12, 31))
    pd.testing.assert_frame_equal(short, long.loc[short.index])
    fresh = SyntheticSource(seed=5, signal_strength=0.5).bars("HDFCBANK", D(2023, 3, 6), D(2023, 3, 6))
    pd.testing.assert_frame_equal(fresh, short.loc[fresh.index])
    assert len(fresh) == 1


def test_range_is_inclusive_on_both_ends() -> None:
    bars = SyntheticSource().bars("TCS", D(2024, 1, 1), D(2024, 1, 5))
    assert list(bars.index.date) == [D(2024, 1, d) for d in range(1, 6)]


def test_end_date_caps_the_data() -> None:
    capped = SyntheticSource(end_date=D(2023, 6, 15))
    bars = capped.bars("INFY", D(2023, 6, 1), D(2023, 12, 31))
    assert bars.index[-1] == pd.Timestamp("2023-06-15", tz=IST)
    uncapped = SyntheticSource().bars("INFY", D(2023, 6, 1), D(2023, 6, 15))
    pd.testing.assert_frame_equal(bars, uncapped)
    empty = capped.bars("INFY", D(2023, 7, 1), D(2023, 7, 31))
    assert empty.empty
    assert_bar_schema(empty)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (D(2023, 5, 10), D(2023, 5, 1)),  # reversed
        (D(2023, 1, 7), D(2023, 1, 8)),  # a weekend
        (D(2010, 1, 1), D(2014, 12, 31)),  # before the epoch
    ],
)
def test_empty_range_gives_empty_frame_with_schema(start: dt.date, end: dt.date) -> None:
    bars = SyntheticSource().bars("TCS", start, end)
    assert bars.empty
    assert_bar_schema(bars)


def test_range_starting_before_epoch_starts_at_epoch() -> None:
    bars = SyntheticSource().bars("TCS", D(2010, 1, 1), D(2015, 1, 9))
    assert bars.index[0] == pd.Timestamp(EPOCH, tz=IST)


def test_datetime_arguments_are_accepted() -> None:
    source = SyntheticSource()
    by_date = source.bars("TCS", D(2024, 1, 1), D(2024, 1, 31))
    by_ts = source.bars("TCS", pd.Timestamp("2024-01-01"), dt.datetime(2024, 1, 31, 15, 30))
    pd.testing.assert_frame_equal(by_date, by_ts)


def test_invalid_symbol_is_refused() -> None:
    with pytest.raises(InvalidSymbolError, match="A/B"):
        SyntheticSource().bars("A/B", D(2024, 1, 1), D(2024, 1, 31))


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="signal_strength"):
        SyntheticSource(signal_strength=-0.5)
    with pytest.raises(ValueError, match="random_walk"):
        SyntheticSource(random_walk=True, signal_strength=1.0)


def test_default_has_volatility_clustering_and_realistic_vol() -> None:
    bars = SyntheticSource(seed=2).bars("RELIANCE", D(2015, 1, 1), D(2026, 12, 31))
    returns = np.log(bars["close"]).diff().dropna()
    assert 0.008 < returns.std() < 0.03
    # GARCH: |returns| are autocorrelated; a constant-vol walk would give ~0.
    assert pd.Series(returns.abs().to_numpy()).autocorr(lag=1) > 0.05


def test_volume_is_higher_on_large_move_days() -> None:
    bars = SyntheticSource(seed=4).bars("TCS", D(2015, 1, 1), D(2026, 12, 31))
    abs_ret = np.log(bars["close"]).diff().abs()
    big = abs_ret > abs_ret.quantile(0.9)
    small = abs_ret < abs_ret.quantile(0.5)
    assert bars.loc[big, "volume"].median() > 1.2 * bars.loc[small, "volume"].median()


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_signal_makes_forward_return_predictable(seed: int) -> None:
    """The planted deviation mean-reverts: a rise over the last 10 bars predicts a fall over the next 7.

    Measured rho (RELIANCE, 2015-2026) at strength 0 / 1 / 4: seed 0 -0.03 / -0.14 / -0.31,
    seed 1 -0.03 / -0.15 / -0.38.
    """
    rho = {}
    for strength in (0.0, 1.0, 4.0):
        bars = SyntheticSource(seed=seed, signal_strength=strength).bars(
            "RELIANCE", D(2015, 1, 1), D(2026, 12, 31)
        )
        rho[strength] = _trailing_vs_forward_rho(bars["close"])
    assert rho[4.0] < -0.2
    assert abs(rho[0.0]) < 0.1
    assert rho[4.0] < rho[0.0] - 0.2  # clearly more negative than without the planted component
    assert rho[4.0] < rho[1.0] - 0.1 and rho[1.0] < rho[0.0] - 0.05  # and monotone in the strength


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_walk_has_no_signal(seed: int) -> None:
    source = SyntheticSource(seed=seed, random_walk=True)
    bars = source.bars("RELIANCE", D(2015, 1, 1), D(2026, 12, 31))
    assert abs(_trailing_vs_forward_rho(bars["close"])) < 0.1
    returns = np.log(bars["close"]).diff().dropna()
    # iid, constant vol: no clustering either.
    assert abs(pd.Series(returns.abs().to_numpy()).autocorr(lag=1)) < 0.06


def test_full_history_is_fast() -> None:
    source = SyntheticSource(seed=12345)
    t0 = time.perf_counter()
    bars = source.bars("NEWSYMBOL", D(2015, 1, 1), D(2026, 12, 31))
    elapsed = time.perf_counter() - t0
    assert len(bars) > 3000
    assert elapsed < 0.5
