"""Long/flat daily backtest with transaction costs, against buy-and-hold on the same bars.

Pure pandas/numpy; no Dagster, no file I/O.

Timing convention (no look-ahead)
---------------------------------
Bars are indexed ``t = 0 .. T-1`` by their close timestamp. ``signal[t]`` in {0, 1} is decided at
the close of bar t using information up to that close, and is traded at that close. It is
therefore the position held over the *next* bar, ``t -> t+1``::

    asset_return[t] = close[t] / close[t-1] - 1          (t >= 1; row 0 has no return: 0.0)
    position[t]     = signal[t-1]                        (position[0] = 0: start flat)
    turnover[t]     = |position[t] - position[t-1]|      (the trade made at close t-1)
    strategy_return[t] = (1 - turnover[t] * c) * (1 + position[t] * asset_return[t]) - 1

with ``c = cost_bps / 1e4`` per side. The cost of a trade is a fraction ``c`` of the equity traded,
paid at the close where the trade happens (equity is fully in or fully out, so the traded notional
is the equity); it is booked in the row of the first bar that holds the new position. The initial
entry from flat is charged. The signal of the last bar is never traded (there is no next bar) and
open positions are not closed at the end, matching buy-and-hold.

Buy-and-hold: enter at the first close paying ``c`` once, then hold, so its final equity is
``(1 - c) * close[T-1] / close[0]``.

Equity starts at 1.0 at row 0. Summary statistics use the ``T - 1`` bar returns (rows 1..T-1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sensequant_assets.ml.stats import sharpe_ratio


@dataclass(frozen=True)
class BacktestResult:
    """Per-bar equity curves and a JSON-serialisable summary.

    ``equity`` columns: ``position`` (held over the bar ending at the row, 0/1),
    ``asset_return``, ``cost`` (fraction of equity paid, booked on that row), ``strategy_return``
    (net), ``strategy_equity``, ``buy_hold_return`` (net), ``buy_hold_equity``.
    ``summary``: ``{"strategy": {...}, "buy_hold": {...}, "n_bars", "n_returns", "cost_bps",
    "periods_per_year"}``; each leg has ``cumulative_return``, ``annualised_sharpe`` (None if
    the net returns have zero std), ``max_drawdown`` (<= 0), ``turnover`` (sum of |position
    changes|), ``exposure`` (share of return bars held long), ``n_trades`` (position changes,
    entries and exits counted separately), ``cost_paid`` (costs in units of the initial equity 1.0).
    """

    equity: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _max_drawdown(equity: np.ndarray) -> float:
    """Most negative ``equity / running_peak - 1`` (0.0 if equity never falls below a peak)."""
    peak = np.maximum.accumulate(equity)
    return float(min(0.0, np.min(equity / peak - 1.0)))


def _leg_summary(
    position: np.ndarray,
    turnover: np.ndarray,
    net: np.ndarray,
    equity: np.ndarray,
    c: float,
    periods_per_year: int,
) -> dict[str, Any]:
    bar_net = net[1:]
    prev_equity = equity[:-1]
    return {
        "cumulative_return": float(equity[-1] - 1.0),
        "annualised_sharpe": sharpe_ratio(bar_net, periods_per_year=periods_per_year),
        "max_drawdown": _max_drawdown(equity),
        "turnover": float(turnover.sum()),
        "exposure": float(position[1:].mean()),
        "n_trades": int(np.count_nonzero(turnover)),
        "cost_paid": float(np.sum(prev_equity * turnover[1:] * c)),
    }


def _simulate(
    position: np.ndarray, asset_return: np.ndarray, c: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Turnover, cost fraction, net return and equity for a 0/1 position path (row 0 flat)."""
    turnover = np.abs(np.diff(position, prepend=0.0))
    cost = turnover * c
    net = (1.0 - cost) * (1.0 + position * asset_return) - 1.0
    net[0] = 0.0
    cost[0] = 0.0
    equity = np.cumprod(1.0 + net)
    return turnover, cost, net, equity


def backtest_long_flat(
    close: pd.Series,
    signal: pd.Series,
    cost_bps: float = 10.0,
    periods_per_year: int = 252,
) -> BacktestResult:
    """Backtest a long/flat daily ``signal`` on ``close`` net of ``cost_bps`` per side.

    See the module docstring for the exact timing and cost conventions: ``signal[t]`` earns the
    return of bar ``t -> t+1`` and every position change costs ``cost_bps / 1e4`` of equity.
    ``signal`` is aligned to ``close.index``; it must cover every bar and take values in {0, 1}.
    """
    if not isinstance(close, pd.Series) or not isinstance(signal, pd.Series):
        raise TypeError("close and signal must be pandas Series")
    if len(close) < 2:
        raise ValueError("need at least 2 bars")
    if not close.index.is_monotonic_increasing or close.index.has_duplicates:
        raise ValueError("close index must be strictly increasing")
    if cost_bps < 0 or not math.isfinite(cost_bps):
        raise ValueError("cost_bps must be a non-negative finite number")
    px = close.to_numpy(dtype=float)
    if not np.all(np.isfinite(px)) or np.any(px <= 0):
        raise ValueError("close must be positive and finite")
    sig = signal.reindex(close.index)
    if sig.isna().any():
        raise ValueError("signal is missing for some bars of close")
    sig_arr = sig.to_numpy(dtype=float)
    if not np.all(np.isin(sig_arr, (0.0, 1.0))):
        raise ValueError("signal must take values in {0, 1}")

    c = float(cost_bps) / 1e4
    asset_return = np.zeros_like(px)
    asset_return[1:] = px[1:] / px[:-1] - 1.0

    position = np.zeros_like(px)
    position[1:] = sig_arr[:-1]
    turnover, cost, net, equity = _simulate(position, asset_return, c)

    bh_position = np.ones_like(px)
    bh_position[0] = 0.0
    bh_turnover, _bh_cost, bh_net, bh_equity = _simulate(bh_position, asset_return, c)

    frame = pd.DataFrame(
        {
            "position": position.astype(int),
            "asset_return": asset_return,
            "cost": cost,
            "strategy_return": net,
            "strategy_equity": equity,
            "buy_hold_return": bh_net,
            "buy_hold_equity": bh_equity,
        },
        index=close.index.copy(),
    )
    summary: dict[str, Any] = {
        "strategy": _leg_summary(position, turnover, net, equity, c, periods_per_year),
        "buy_hold": _leg_summary(bh_position, bh_turnover, bh_net, bh_equity, c, periods_per_year),
        "n_bars": len(px),
        "n_returns": len(px) - 1,
        "cost_bps": float(cost_bps),
        "periods_per_year": int(periods_per_year),
    }
    return BacktestResult(equity=frame, summary=summary)
