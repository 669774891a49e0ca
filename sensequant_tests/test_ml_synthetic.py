"""Synthetic daily bars for the ML tests (no dependency on the sources package), and their checks.

``make_bars`` draws a random walk with GARCH(1,1)-style volatility; ``trend=True`` adds drift
regimes (persistent up/down runs) so that a model has a real, planted signal to find.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TZ = "Asia/Kolkata"


def make_bars(
    n: int,
    seed: int = 0,
    *,
    start: str = "2020-01-01",
    trend: bool = False,
    drift: float = 0.006,
    mean_regime: int = 40,
    price: float = 1000.0,
) -> pd.DataFrame:
    """``n`` business-day bars at IST midnight with columns open, high, low, close, volume."""
    rng = np.random.default_rng(seed)
    omega, alpha, beta = 2e-6, 0.08, 0.9
    var = omega / (1.0 - alpha - beta)
    shocks = rng.standard_normal(n)
    returns = np.empty(n)
    prev = 0.0
    for i in range(n):
        var = omega + alpha * prev**2 + beta * var
        prev = np.sqrt(var) * shocks[i]
        returns[i] = prev
    if trend:
        mu = np.empty(n)
        i, sign = 0, 1.0
        while i < n:
            length = int(rng.geometric(1.0 / mean_regime)) + 5
            mu[i : i + length] = sign * drift
            sign = -sign
            i += length
        returns = returns + mu
    close = price * np.exp(np.cumsum(returns))
    prev_close = np.concatenate([[price], close[:-1]])
    sigma = np.sqrt(omega / (1.0 - alpha - beta))
    open_ = prev_close * np.exp(0.2 * sigma * rng.standard_normal(n))
    high = np.maximum(open_, close) * np.exp(0.5 * sigma * np.abs(rng.standard_normal(n)))
    low = np.minimum(open_, close) * np.exp(-0.5 * sigma * np.abs(rng.standard_normal(n)))
    volume = np.round(1e6 * np.exp(0.3 * rng.standard_normal(n) + 20.0 * np.abs(returns)))
    index = pd.bdate_range(start, periods=n, tz=TZ, name="timestamp")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=index,
    ).astype("float64")


def test_make_bars_is_a_valid_bar_frame() -> None:
    bars = make_bars(300, seed=3, trend=True)
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert str(bars.index.tz) == TZ
    assert bars.index.name == "timestamp"
    assert bars.index.is_monotonic_increasing and bars.index.is_unique
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["volume"] > 0).all()
    assert bars.equals(make_bars(300, seed=3, trend=True))
