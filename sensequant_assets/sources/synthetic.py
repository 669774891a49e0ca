"""Deterministic synthetic daily bars: the default source, for demos, tests and benchmarks.

Three regimes of the same generator:
- default: realistic OHLCV (GARCH(1,1) volatility clustering around ~1.5 % daily vol, a small
  positive drift, volume that rises on large moves). No deliberate predictability.
- `signal_strength > 0`: adds hidden drift regimes (+/- signal_strength x conditional daily vol,
  mean duration ~40 trading days), so the forward 7-bar return is predictable from the trailing
  trend: a known, learnable signal to check that the models find something real.
- `random_walk=True`: the null case, iid normal log-returns with zero drift and constant vol;
  nothing is predictable, so any out-of-sample skill found on it is leakage.

A given day's bar depends only on (symbol, seed, signal_strength, random_walk) and that day, never
on the range asked for: the whole path is generated from a fixed epoch, and random numbers are
drawn in fixed-size chunks each seeded from (symbol, seed, chunk number), so extending the path
never changes earlier days.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import pandas as pd

from .base import BAR_COLUMNS, IST, as_date, empty_bars, filter_dates
from .symbols import validate_symbol

__all__ = ["EPOCH", "SyntheticSource"]

EPOCH = dt.date(2015, 1, 1)
_CHUNK = 512  # trading days per independently seeded block of random numbers

# GARCH(1,1): persistence alpha + beta = 0.98 gives visible volatility clustering.
_ALPHA, _BETA = 0.08, 0.90
_REGIME_REDRAW = 1.0 / 20.0  # daily chance to redraw the hidden state; ~half keep it -> ~40 days
_REVERSION_SCALE = 0.5  # log-price deviation at which regimes lean ~73 % towards reverting


def _digest(*parts: object) -> bytes:
    """Stable across processes and Python versions, unlike hash()."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()


@dataclass(frozen=True)
class _Params:
    base_seed: int
    start_price: float
    daily_vol: float
    drift: float
    base_volume: float


def _params(symbol: str, seed: int) -> _Params:
    """Per-symbol constants, derived from the same stable hash as the random numbers."""
    d = _digest("sensequant-synthetic", symbol, seed)
    u = [int.from_bytes(d[8 + 4 * i : 12 + 4 * i], "little") / 2**32 for i in range(4)]
    return _Params(
        base_seed=int.from_bytes(d[:8], "little"),
        start_price=math.exp(math.log(100.0) + u[0] * math.log(30.0)),  # 100 .. 3000
        daily_vol=0.012 + 0.008 * u[1],  # 1.2 % .. 2.0 %
        drift=0.0002 + 0.0003 * u[2],  # ~5 % .. 13 % a year
        base_volume=math.exp(math.log(2e5) + u[3] * math.log(25.0)),  # 2e5 .. 5e6 shares
    )


def _draws(base_seed: int, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """(5, n) standard normals and (2, n) uniforms; chunk k depends only on (base_seed, k)."""
    normals, uniforms = [], []
    for k in range(n_chunks):
        rng = np.random.default_rng([base_seed, k])
        normals.append(rng.standard_normal((5, _CHUNK)))
        uniforms.append(rng.random((2, _CHUNK)))
    return np.concatenate(normals, axis=1), np.concatenate(uniforms, axis=1)


def _garch_returns(
    z: np.ndarray,
    u_redraw: np.ndarray,
    u_sign: np.ndarray,
    p: _Params,
    signal_strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-returns and conditional vols; sequential by nature (each day feeds the next)."""
    n = len(z)
    var_target = p.daily_vol**2
    omega = var_target * (1.0 - _ALPHA - _BETA)
    zs, redraws, signs = z.tolist(), u_redraw.tolist(), u_sign.tolist()  # floats: fast loop
    returns, sigmas = [0.0] * n, [0.0] * n
    var, eps_prev, log_dev = var_target, 0.0, 0.0
    state = 1.0 if signs[0] < 0.5 else -1.0
    signal = signal_strength > 0.0
    for t in range(n):
        if t:
            var = omega + _ALPHA * eps_prev * eps_prev + _BETA * var
        sigma = math.sqrt(var)
        eps = sigma * zs[t]
        r = p.drift + eps
        if signal:
            if t and redraws[t] < _REGIME_REDRAW:
                # Lean towards the regime that pulls the price back to its trend, so planted
                # drifts of a daily vol per day cannot push prices to absurd levels.
                p_up = 1.0 / (1.0 + math.exp(log_dev / _REVERSION_SCALE))
                state = 1.0 if signs[t] < p_up else -1.0
            r += state * signal_strength * sigma
            log_dev += r - p.drift
        returns[t], sigmas[t] = r, sigma
        eps_prev = eps
    return np.asarray(returns), np.asarray(sigmas)


@lru_cache(maxsize=64)
def _path(symbol: str, seed: int, signal_strength: float, random_walk: bool, n_chunks: int) -> pd.DataFrame:
    """The full bar path from EPOCH for n_chunks * _CHUNK weekdays (cached; never mutate it)."""
    p = _params(symbol, seed)
    normals, uniforms = _draws(p.base_seed, n_chunks)
    z_ret, z_gap, z_high, z_low, z_vol = normals
    if random_walk:
        sigma = np.full(z_ret.shape, p.daily_vol)
        returns = sigma * z_ret
    else:
        returns, sigma = _garch_returns(z_ret, uniforms[0], uniforms[1], p, signal_strength)

    close = p.start_price * np.exp(np.cumsum(returns))
    prev_close = np.concatenate(([p.start_price], close[:-1]))
    open_ = prev_close * np.exp(0.25 * sigma * z_gap)  # overnight gap; close path unaffected
    high = np.maximum(open_, close) * np.exp(0.5 * sigma * np.abs(z_high))
    low = np.minimum(open_, close) * np.exp(-0.5 * sigma * np.abs(z_low))
    # Log-normal volume, higher on days with a large surprise |innovation| (in units of vol).
    # Only same-day draws are used, so a day's volume never depends on the path length.
    volume = np.round(p.base_volume * np.exp(0.35 * z_vol + 0.4 * (np.abs(z_ret) - 0.8)))

    # Rounding is monotone, so it keeps low <= open, close <= high.
    prices = {k: np.round(v, 2) for k, v in (("open", open_), ("high", high), ("close", close))}
    prices["low"] = np.maximum(np.round(low, 2), 0.01)
    index = pd.DatetimeIndex(
        pd.bdate_range(EPOCH, periods=len(close), tz=IST, name="timestamp").as_unit("ns"),
        freq=None,
    )
    data = {**prices, "volume": volume}
    return pd.DataFrame({k: data[k].astype("float64") for k in BAR_COLUMNS}, index=index)


@dataclass(frozen=True)
class SyntheticSource:
    """Synthetic daily bars on Mon-Fri trading days from 2015-01-01 (no holiday calendar).

    `end_date` caps the data (e.g. to emulate "data available up to yesterday"); None: no cap.
    """

    seed: int = 0
    end_date: dt.date | None = None
    signal_strength: float = 0.0
    random_walk: bool = False
    name: ClassVar[str] = "synthetic"

    def __post_init__(self) -> None:
        if not math.isfinite(self.signal_strength) or self.signal_strength < 0:
            raise ValueError(f"signal_strength must be finite and >= 0, got {self.signal_strength}")
        if self.random_walk and self.signal_strength > 0:
            raise ValueError(
                "random_walk=True is the no-signal null case; it cannot be combined with "
                f"signal_strength={self.signal_strength}"
            )
        if self.end_date is not None:
            object.__setattr__(self, "end_date", as_date(self.end_date))

    def symbols(self) -> list[str] | None:
        """Any valid symbol works, so there is no list."""
        return None

    def bars(self, symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Bars with start <= date <= min(end, end_date); see BarSource for the schema."""
        sym = validate_symbol(symbol)
        first = max(as_date(start), EPOCH)
        last = as_date(end)
        if self.end_date is not None:
            last = min(last, self.end_date)
        if first > last:
            return empty_bars()
        n_needed = int(np.busday_count(EPOCH, last + dt.timedelta(days=1)))
        n_chunks = max(1, -(-n_needed // _CHUNK))
        path = _path(sym, int(self.seed), float(self.signal_strength), bool(self.random_walk), n_chunks)
        return filter_dates(path, first, last).copy()
