"""Deterministic synthetic daily bars: the default source, for demos, tests and benchmarks.

Three regimes of the same generator:
- default: realistic OHLCV (GARCH(1,1) volatility clustering around ~1.5 % daily vol, a small
  positive drift, volume that rises on large moves). No deliberate predictability.
- `signal_strength > 0`: adds a mean-reverting deviation to the log price (AR(1), half-life ~2.4
  days, innovations of signal_strength x daily vol), so the forward 7-bar return is predictable
  from where the price stands against its recent averages (SMA, Bollinger, RSI): a known,
  learnable signal, equally present in every window, to check that the models find something real.
- `random_walk=True`: the null case, iid normal log-returns with zero drift and constant vol;
  nothing is predictable, so any out-of-sample skill found on it is leakage.

A given day's bar depends only on (symbol, seed, signal_strength, random_walk) and that day, never
on the range asked for: the whole path is generated from a fixed epoch, and random numbers are
drawn in fixed-size chunks each seeded from (symbol, seed, chunk number), so extending the path
never changes earlier days.

Change detection follows from that: the data token is the parameters (seed, signal_strength,
random_walk, end_date), and a window's fingerprint is the parameters that shape its bars plus the
symbol and the window -- end_date is left out, so moving end_date forward completes new windows
without touching the fingerprints of windows it already covered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import ClassVar

import numpy as np
import pandas as pd

from .base import (
    BAR_COLUMNS,
    IST,
    Window,
    as_date,
    check_windows,
    digest,
    empty_bars,
    filter_dates,
    window_is_covered,
)
from .symbols import validate_symbol

__all__ = ["EPOCH", "SyntheticSource"]

EPOCH = dt.date(2015, 1, 1)
_CHUNK = 512  # trading days per independently seeded block of random numbers

# GARCH(1,1): persistence alpha + beta = 0.98 gives visible volatility clustering.
_ALPHA, _BETA = 0.08, 0.90
_REVERSION_SPEED = 0.25  # daily pull of the planted deviation towards 0 (half-life ~2.4 days)


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


def _garch_returns(z: np.ndarray, p: _Params) -> tuple[np.ndarray, np.ndarray]:
    """Log-returns and conditional vols; sequential by nature (each day feeds the next)."""
    n = len(z)
    var_target = p.daily_vol**2
    omega = var_target * (1.0 - _ALPHA - _BETA)
    zs = z.tolist()  # floats: fast loop
    returns, sigmas = [0.0] * n, [0.0] * n
    var, eps_prev = var_target, 0.0
    for t in range(n):
        if t:
            var = omega + _ALPHA * eps_prev * eps_prev + _BETA * var
        sigma = math.sqrt(var)
        eps = sigma * zs[t]
        returns[t], sigmas[t] = p.drift + eps, sigma
        eps_prev = eps
    return np.asarray(returns), np.asarray(sigmas)


def _planted_deviation(u: np.ndarray, p: _Params, signal_strength: float) -> np.ndarray:
    """A mean-reverting log-price deviation x (AR(1), pulled back at _REVERSION_SPEED a day).

    Added to the log price, it makes the forward return predictable from where the price stands
    against its recent average (E[x_{t+h} - x_t] = -(1 - (1 - k)^h) x_t), which is exactly what
    the SMA/Bollinger/RSI features see, in every window alike.
    """
    scale, inv_cdf = signal_strength * p.daily_vol, NormalDist().inv_cdf
    keep, x, out = 1.0 - _REVERSION_SPEED, 0.0, []
    for v in np.clip(u, 1e-12, 1 - 1e-12).tolist():  # plain Python: scipy would cost ~1 s of import
        x = keep * x + scale * inv_cdf(v)
        out.append(x)
    return np.asarray(out)


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
        returns, sigma = _garch_returns(z_ret, p)
        if signal_strength > 0:
            returns = returns + np.diff(_planted_deviation(uniforms[0], p, signal_strength), prepend=0.0)

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

    # -- change detection ------------------------------------------------------------------

    def data_token(self, symbol: str) -> str:
        """The parameters, readable: they are all the data depends on (the path is deterministic).

        Any valid symbol is known (InvalidSymbolError otherwise); the token is the same for every
        symbol of this source instance.
        """
        validate_symbol(symbol)
        end = self.end_date.isoformat() if self.end_date is not None else "none"
        return (
            f"synthetic:seed={int(self.seed)}:signal_strength={float(self.signal_strength)!r}"
            f":random_walk={bool(self.random_walk)}:end_date={end}"
        )

    def _last_bar(self) -> dt.date | None:
        """Date of the last bar when `end_date` caps the data (None: no bars at all)."""
        if self.end_date is None:
            return None
        day = self.end_date
        while day.weekday() >= 5:
            day -= dt.timedelta(days=1)
        return day if day >= EPOCH else None

    def window_fingerprints(self, symbol: str, windows: Sequence[Window]) -> dict[dt.date, str | None]:
        """sha256 of (symbol, seed, signal_strength, random_walk, window); None while not covered.

        Without `end_date` every window is covered. With it, the last bar is the last weekday on or
        before `end_date`, so by the shared rule (`base.window_is_covered`) a window is None when
        `end_date` is earlier than the window's last weekday. `end_date` is not part of the
        fingerprint: a covered window's bars do not depend on it.
        """
        sym = validate_symbol(symbol)
        last_bar = self._last_bar()
        out: dict[dt.date, str | None] = {}
        for start, end in check_windows(windows):
            if self.end_date is not None and not window_is_covered(last_bar, start, end):
                out[start] = None
                continue
            out[start] = digest(
                "synthetic",
                sym,
                int(self.seed),
                repr(float(self.signal_strength)),
                bool(self.random_walk),
                start.isoformat(),
                end.isoformat(),
            )
        return out
