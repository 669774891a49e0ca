"""Tests for the long/flat backtest: timing, costs and buy-and-hold against hand calculations."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from sensequant_assets.ml.backtest import backtest_long_flat

C = 10.0 / 1e4  # default cost per side


def _series(values, start="2024-01-01") -> pd.Series:
    idx = pd.date_range(start, periods=len(values), freq="B", tz="Asia/Kolkata")
    return pd.Series(np.asarray(values, dtype=float), index=idx)


PATH = _series([100.0, 110.0, 99.0, 121.0])


def test_buy_and_hold_matches_hand_calculation_with_entry_cost():
    res = backtest_long_flat(PATH, _series([0, 0, 0, 0]), cost_bps=10.0)
    bh = res.equity["buy_hold_equity"].to_numpy()
    # Pay 0.1% at the first close, then ride 100 -> 110 -> 99 -> 121.
    expected = [1.0, 0.999 * 1.10, 0.999 * 0.99, 0.999 * 1.21]
    np.testing.assert_allclose(bh, expected, rtol=1e-12)
    s = res.summary["buy_hold"]
    assert s["cumulative_return"] == pytest.approx(0.999 * 1.21 - 1.0, abs=1e-12)
    assert s["cumulative_return"] == pytest.approx(0.20879, abs=1e-12)
    assert s["cost_paid"] == pytest.approx(0.001)
    assert s["turnover"] == 1.0
    assert s["n_trades"] == 1
    assert s["exposure"] == 1.0
    assert s["max_drawdown"] == pytest.approx(0.99 / 1.10 - 1.0)  # -10% from the 110 peak
    net = [0.999 * 1.1 - 1, 0.99 / 1.1 - 1, 1.21 / 0.99 - 1]
    mean = sum(net) / 3
    sd = math.sqrt(sum((r - mean) ** 2 for r in net) / 2)
    assert s["annualised_sharpe"] == pytest.approx(mean / sd * math.sqrt(252), rel=1e-10)


def test_always_long_signal_equals_buy_and_hold():
    res = backtest_long_flat(PATH, _series([1, 1, 1, 1]))
    np.testing.assert_allclose(
        res.equity["strategy_equity"].to_numpy(), res.equity["buy_hold_equity"].to_numpy()
    )
    assert res.summary["strategy"] == res.summary["buy_hold"]


def test_always_flat_signal_has_zero_return_and_turnover():
    res = backtest_long_flat(PATH, _series([0, 0, 0, 0]))
    s = res.summary["strategy"]
    assert s["cumulative_return"] == 0.0
    assert s["turnover"] == 0.0
    assert s["n_trades"] == 0
    assert s["cost_paid"] == 0.0
    assert s["exposure"] == 0.0
    assert s["max_drawdown"] == 0.0
    assert s["annualised_sharpe"] is None
    assert (res.equity["strategy_equity"] == 1.0).all()
    assert (res.equity["position"] == 0).all()


def test_signal_at_t_earns_bar_t_to_t_plus_1():
    # Long only on the decision at bar 1 -> held over 110 -> 99 (a -10% bar), no costs.
    res = backtest_long_flat(PATH, _series([0, 1, 0, 0]), cost_bps=0.0)
    assert res.equity["position"].tolist() == [0, 0, 1, 0]
    assert res.summary["strategy"]["cumulative_return"] == pytest.approx(99 / 110 - 1)
    # A look-ahead implementation (signal earning the bar that ends at t) would have got +10%.
    assert res.summary["strategy"]["cumulative_return"] < 0
    # With costs: entry at close 1 and exit at close 2, each 10 bps of the equity then.
    res_c = backtest_long_flat(PATH, _series([0, 1, 0, 0]), cost_bps=10.0)
    assert res_c.summary["strategy"]["cumulative_return"] == pytest.approx((1 - C) * (99 / 110) * (1 - C) - 1)
    assert res_c.summary["strategy"]["cost_paid"] == pytest.approx(C + C * (1 - C) * 0.9)


def test_strategy_returns_equal_shifted_signal_times_returns_without_costs():
    rng = np.random.default_rng(5)
    close = _series(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 60))))
    signal = _series((rng.random(60) > 0.5).astype(int))
    res = backtest_long_flat(close, signal, cost_bps=0.0)
    expected = (signal.shift(1).fillna(0) * close.pct_change().fillna(0)).to_numpy()
    np.testing.assert_allclose(res.equity["strategy_return"].to_numpy(), expected, atol=1e-15)
    # Changing the future must not change the past: alter closes after bar 30.
    close2 = close.copy()
    close2.iloc[31:] *= 1.5
    res2 = backtest_long_flat(close2, signal, cost_bps=0.0)
    pd.testing.assert_series_equal(
        res.equity["strategy_equity"].iloc[:31], res2.equity["strategy_equity"].iloc[:31]
    )


def test_costs_charged_on_every_position_change():
    flat_price = _series([50.0] * 9)
    signal = _series([1, 0, 1, 1, 0, 0, 1, 0, 1])
    res = backtest_long_flat(flat_price, signal, cost_bps=25.0)
    c = 25.0 / 1e4
    # position = signal shifted: [0,1,0,1,1,0,0,1,0] -> changes at bars 1,2,3,5,7,8 (6 changes);
    # the last signal (1 at bar 8) has no next bar and is never traded.
    assert res.equity["position"].tolist() == [0, 1, 0, 1, 1, 0, 0, 1, 0]
    s = res.summary["strategy"]
    assert s["n_trades"] == 6
    assert s["turnover"] == 6.0
    assert s["exposure"] == pytest.approx(4 / 8)  # long over bars 1, 3, 4, 7
    charged = res.equity["cost"].to_numpy()
    np.testing.assert_allclose(charged, [0, c, c, c, 0, c, 0, c, c])
    # Price never moves, so all the loss is cost: equity (1 - c)^6, paid 1 - (1 - c)^6.
    assert s["cumulative_return"] == pytest.approx((1 - c) ** 6 - 1, abs=1e-14)
    assert s["cost_paid"] == pytest.approx(1 - (1 - c) ** 6, abs=1e-14)
    # Doubling the cost loses more.
    res2 = backtest_long_flat(flat_price, signal, cost_bps=50.0)
    assert res2.summary["strategy"]["cumulative_return"] < s["cumulative_return"]


def test_frame_layout_and_summary_is_json_serialisable():
    res = backtest_long_flat(PATH, _series([1, 0, 1, 1]))
    for col in ("position", "strategy_return", "strategy_equity", "buy_hold_equity"):
        assert col in res.equity.columns
    assert res.equity.index.equals(PATH.index)
    json.dumps(res.summary)
    assert res.summary["n_bars"] == 4
    assert res.summary["n_returns"] == 3


def test_signal_is_aligned_by_index_and_validated():
    # Same values, reversed order: alignment must use the index, not positions.
    signal = _series([0, 1, 0, 0])
    res = backtest_long_flat(PATH, signal.iloc[::-1], cost_bps=0.0)
    assert res.equity["position"].tolist() == [0, 0, 1, 0]
    with pytest.raises(ValueError):
        backtest_long_flat(PATH, _series([0, 2, 0, 0]))
    with pytest.raises(ValueError):
        backtest_long_flat(PATH, signal.iloc[:3])
    with pytest.raises(ValueError):
        backtest_long_flat(_series([100.0, -1.0, 100.0, 100.0]), signal)
    with pytest.raises(ValueError):
        backtest_long_flat(PATH.iloc[:1], signal.iloc[:1])
