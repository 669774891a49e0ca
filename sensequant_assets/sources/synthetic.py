"""Deterministic synthetic daily bars: the default source, for demos, tests and benchmarks.

A null process (`process`) makes the returns; none of them is predictable in mean, so under every
one E[r_{t->t+h} | past] = h * drift and a direction-aware score has zero information coefficient:
- `garch` (default): GARCH(1,1) (alpha 0.08, beta 0.90) with normal innovations and a small
  per-symbol drift; volatility clustering around a 1.2-2.0 % daily vol.
- `garch_t`: the same with Student-t innovations (6 degrees of freedom, scaled to unit variance)
  and alpha 0.05, beta 0.93 (persistence 0.98 too, and a finite fourth moment): fat tails.
- `regime`: a two-state Markov chain switches the vol between 0.8x (calm, mean stay ~250 bars) and
  2x (stressed, mean stay ~60 bars) the symbol's base vol; normal innovations, drift. The mixture
  gives fat tails and long, persistent vol regimes.
- `random_walk` (also `random_walk=True`): iid normal returns, no drift, constant vol.

Measured per symbol over 2015-2026 (40 symbols): annual vol garch 18-32 %, garch_t 17-33 %, regime
21-39 %, random_walk 20-32 %; kurtosis of daily log returns over ~22k bars (24 symbols, median and
range): garch 4.1 (3.8-5.5), garch_t 7.0 (5.7-9.9), regime 6.1 (5.8-6.5), random_walk 3.0.

A planted signal (`signal_ic` > 0) works on top of any process: a mean-reverting deviation x of the
log price (AR(1), x_t = (1-k) x_{t-1} + s e_t, k = 0.25, half-life ~2.4 bars), so the forward
h-bar log return has E[r_{t->t+h} | x_t] = h * drift - (1 - (1-k)^h) x_t (drift 0 for random_walk).
The innovation scale s is solved analytically (`deviation_scale`) so that this ideal predictor has
Pearson correlation `signal_ic` with the realised forward `signal_horizon`-bar log return;
`ideal_forecast` gives it on the bars' dates so a simulation study can measure it. A deviation cannot
beat the ceiling sqrt((1 - (1-k)^h) / 2) (0.658 at h = 7): its own future innovations are noise in the
forward return.
The default 0.10 is a realistic strength (annual vol rises by ~2 %, and from prices alone a 10-bar
return or an SMA deviation reaches an IC of only ~0.01); SMOKE_TEST_SIGNAL_IC = 0.6246 is the old
`signal_strength=4.0` (innovations of 4 daily vols, 85-160 % annual vol), for smoke tests only.

A given day's bar depends only on (symbol, seed, process, signal_ic, signal_horizon) and that day,
never on the range asked for: the whole path is generated from a fixed epoch, and random numbers
are drawn in fixed-size chunks each seeded from (symbol, seed, chunk number), so extending the
path never changes earlier days.

Change detection follows from that: the data token is the parameters (plus end_date), and a
window's fingerprint is the parameters that shape its bars plus the symbol and the window --
end_date is left out, so moving end_date forward completes new windows without touching the
fingerprints of windows it already covered; the default process without a signal keeps the
fingerprints it had before `process` and `signal_ic` existed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import ClassVar, Final

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

__all__ = [
    "EPOCH",
    "PROCESSES",
    "SMOKE_TEST_SIGNAL_IC",
    "SyntheticSource",
    "deviation_scale",
    "ideal_ic",
    "max_signal_ic",
]

EPOCH = dt.date(2015, 1, 1)
_CHUNK = 512  # trading days per independently seeded block of random numbers

PROCESSES: Final = ("garch", "garch_t", "regime", "random_walk")

# GARCH(1,1): persistence alpha + beta = 0.98 gives visible volatility clustering.
_ALPHA, _BETA = 0.08, 0.90
# garch_t: a smaller alpha keeps the fourth moment finite with t(6) innovations (E[z^4] = 6:
# beta^2 + 2 alpha beta + alpha^2 E[z^4] = 0.973 < 1; kurtosis 8.8 in theory). 5 degrees of freedom
# gave single draws of 20+ vols: sample kurtosis up to 300 and 12-year annual vols up to 48 %.
_ALPHA_T, _BETA_T = 0.05, 0.93
_T_DOF = 6.0
# regime: (calm, stressed) vol multiples of the base vol and mean stays in bars (geometric).
_REGIME_VOL = (0.8, 2.0)
_REGIME_STAY = (250.0, 60.0)
_STRESSED_SHARE = _REGIME_STAY[1] / (_REGIME_STAY[0] + _REGIME_STAY[1])  # stationary P(stressed)
_REGIME_VAR = (1.0 - _STRESSED_SHARE) * _REGIME_VOL[0] ** 2 + _STRESSED_SHARE * _REGIME_VOL[1] ** 2

_REVERSION_SPEED = 0.25  # daily pull of the planted deviation towards 0 (half-life ~2.4 days)
_DEFAULT_HORIZON = 7  # SENSEQUANT_FORECAST_HORIZON's default

# The old signal_strength=4.0 (deviation innovations of 4 daily vols): ideal IC 0.6246 analytically
# (ideal_ic(4 sigma, sigma^2, 7)); measured 0.6235 with the old generator (12 symbols x 20k bars) and
# 0.622-0.624 with this one under each process (24 symbols x 22k bars). A smoke test that the models
# find something, not a realistic world (85-160 % annual vol); at this IC the scale is 3.998 vols.
SMOKE_TEST_SIGNAL_IC: Final = 0.6246


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


# -- calibration of the planted signal ------------------------------------------------------


def max_signal_ic(horizon: int = _DEFAULT_HORIZON, reversion_speed: float = _REVERSION_SPEED) -> float:
    """The IC an AR(1) deviation approaches as its scale grows: sqrt((1 - (1-k)^h) / 2)."""
    return math.sqrt((1.0 - (1.0 - reversion_speed) ** horizon) / 2.0)


def ideal_ic(
    scale: float, daily_var: float, horizon: int = _DEFAULT_HORIZON, reversion_speed: float = _REVERSION_SPEED
) -> float:
    """Pearson corr of -(1-phi^h) x_t with the forward h-bar log return, for innovation sd `scale`.

    With phi = 1-k, V = Var(x) = s^2 / (1 - phi^2) and a = 1 - phi^h: Cov = a^2 V (the deviation's
    part of the forward return is x_{t+h} - x_t), Var(forward) = h sigma^2 + 2 a V, so
    IC = a V / sqrt(V (h sigma^2 + 2 a V)). The null's returns are uncorrelated and independent of x.
    """
    if scale == 0.0:
        return 0.0
    phi = 1.0 - reversion_speed
    a, var_x = 1.0 - phi**horizon, scale * scale / (1.0 - phi * phi)
    return a * var_x / math.sqrt(var_x * (horizon * daily_var + 2.0 * a * var_x))


def deviation_scale(
    signal_ic: float,
    daily_var: float,
    horizon: int = _DEFAULT_HORIZON,
    reversion_speed: float = _REVERSION_SPEED,
) -> float:
    """The innovation sd s that makes ideal_ic(s, daily_var, horizon) == signal_ic (inverse of ideal_ic).

    Squaring IC = a V / sqrt(V (h sigma^2 + 2 a V)) gives V = IC^2 h sigma^2 / (a (a - 2 IC^2)),
    finite only below the ceiling IC^2 < a / 2; then s = sqrt(V (1 - phi^2)).
    """
    ceiling = max_signal_ic(horizon, reversion_speed)
    if not 0.0 <= signal_ic < ceiling:
        raise ValueError(
            f"signal_ic must be in [0, {ceiling:.4f}) for a {horizon}-bar horizon (a mean-reverting "
            f"deviation cannot predict more: its own future innovations are noise), got {signal_ic}"
        )
    phi = 1.0 - reversion_speed
    a = 1.0 - phi**horizon
    ic2 = signal_ic * signal_ic
    var_x = ic2 * horizon * daily_var / (a * (a - 2.0 * ic2))
    return math.sqrt(var_x * (1.0 - phi * phi))


def _base_variance(process: str, p: _Params) -> float:
    """Unconditional variance of the null's daily log return: what the IC calibration divides by."""
    return p.daily_vol**2 * (_REGIME_VAR if process == "regime" else 1.0)


# -- random numbers and the null processes ----------------------------------------------------


def _draws(base_seed: int, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """(5, n) standard normals and (2, n) uniforms; chunk k depends only on (base_seed, k)."""
    normals, uniforms = [], []
    for k in range(n_chunks):
        rng = np.random.default_rng([base_seed, k])
        normals.append(rng.standard_normal((5, _CHUNK)))
        uniforms.append(rng.random((2, _CHUNK)))
    return np.concatenate(normals, axis=1), np.concatenate(uniforms, axis=1)


def _extra_draws(base_seed: int, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square(_T_DOF) draws and uniforms for garch_t and regime, chunk k from (base_seed, k, 1).

    A stream of their own, so the draws of the older processes (and so their bars) are unchanged.
    """
    chi2, uniforms = [], []
    for k in range(n_chunks):
        rng = np.random.default_rng([base_seed, k, 1])
        chi2.append(rng.chisquare(_T_DOF, _CHUNK))
        uniforms.append(rng.random(_CHUNK))
    return np.concatenate(chi2), np.concatenate(uniforms)


def _garch_returns(
    z: np.ndarray, p: _Params, alpha: float = _ALPHA, beta: float = _BETA
) -> tuple[np.ndarray, np.ndarray]:
    """Log-returns and conditional vols; sequential by nature (each day feeds the next)."""
    n = len(z)
    var_target = p.daily_vol**2
    omega = var_target * (1.0 - alpha - beta)
    zs = z.tolist()  # floats: fast loop
    returns, sigmas = [0.0] * n, [0.0] * n
    var, eps_prev = var_target, 0.0
    for t in range(n):
        if t:
            var = omega + alpha * eps_prev * eps_prev + beta * var
        sigma = math.sqrt(var)
        eps = sigma * zs[t]
        returns[t], sigmas[t] = p.drift + eps, sigma
        eps_prev = eps
    return np.asarray(returns), np.asarray(sigmas)


def _regime_sigmas(u: np.ndarray, p: _Params) -> np.ndarray:
    """Daily vol of a two-state Markov chain that starts in its stationary distribution."""
    leave = (1.0 / _REGIME_STAY[0], 1.0 / _REGIME_STAY[1])
    level = (_REGIME_VOL[0] * p.daily_vol, _REGIME_VOL[1] * p.daily_vol)
    us = u.tolist()
    state = 1 if us[0] < _STRESSED_SHARE else 0
    out = [0.0] * len(us)
    for t, v in enumerate(us):
        if t and v < leave[state]:
            state = 1 - state
        out[t] = level[state]
    return np.asarray(out)


def _null_returns(process: str, p: _Params, z_ret: np.ndarray, n_chunks: int) -> tuple[np.ndarray, ...]:
    """(log returns, daily vols, innovations in units of vol) of the null process."""
    if process == "random_walk":
        sigma = np.full(z_ret.shape, p.daily_vol)
        return sigma * z_ret, sigma, z_ret
    if process == "garch":
        return (*_garch_returns(z_ret, p), z_ret)
    chi2, u = _extra_draws(p.base_seed, n_chunks)
    if process == "garch_t":
        z = z_ret * np.sqrt((_T_DOF - 2.0) / chi2)  # Student-t(_T_DOF), unit variance
        return (*_garch_returns(z, p, _ALPHA_T, _BETA_T), z)
    sigma = _regime_sigmas(u, p)
    return p.drift + sigma * z_ret, sigma, z_ret


def _planted_deviation(u: np.ndarray, scale: float) -> np.ndarray:
    """A mean-reverting log-price deviation x (AR(1), pulled back at _REVERSION_SPEED a day).

    Added to the log price, it makes the forward return predictable from where the price stands
    against its recent average (E[x_{t+h} - x_t] = -(1 - (1 - k)^h) x_t), which is exactly what
    the SMA/Bollinger/RSI features see, in every window alike.
    """
    inv_cdf = NormalDist().inv_cdf
    keep, x, out = 1.0 - _REVERSION_SPEED, 0.0, []
    for v in np.clip(u, 1e-12, 1 - 1e-12).tolist():  # plain Python: scipy would cost ~1 s of import
        x = keep * x + scale * inv_cdf(v)
        out.append(x)
    return np.asarray(out)


@lru_cache(maxsize=64)
def _generate(
    symbol: str, seed: int, process: str, signal_ic: float, horizon: int, n_chunks: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """The full bar path from EPOCH for n_chunks * _CHUNK weekdays, and the planted deviation x.

    Cached; never mutate either. x is all zeros without a signal.
    """
    p = _params(symbol, seed)
    normals, uniforms = _draws(p.base_seed, n_chunks)
    z_ret, z_gap, z_high, z_low, z_vol = normals
    returns, sigma, z = _null_returns(process, p, z_ret, n_chunks)
    deviation = np.zeros(len(returns))
    if signal_ic > 0:
        scale = deviation_scale(signal_ic, _base_variance(process, p), horizon)
        deviation = _planted_deviation(uniforms[0], scale)
        returns = returns + np.diff(deviation, prepend=0.0)

    close = p.start_price * np.exp(np.cumsum(returns))
    prev_close = np.concatenate(([p.start_price], close[:-1]))
    open_ = prev_close * np.exp(0.25 * sigma * z_gap)  # overnight gap; close path unaffected
    high = np.maximum(open_, close) * np.exp(0.5 * sigma * np.abs(z_high))
    low = np.minimum(open_, close) * np.exp(-0.5 * sigma * np.abs(z_low))
    # Log-normal volume, higher on days with a large surprise |innovation| (in units of vol).
    # Only same-day draws are used, so a day's volume never depends on the path length.
    volume = np.round(p.base_volume * np.exp(0.35 * z_vol + 0.4 * (np.abs(z) - 0.8)))

    # Rounding is monotone, so it keeps low <= open, close <= high.
    prices = {k: np.round(v, 2) for k, v in (("open", open_), ("high", high), ("close", close))}
    prices["low"] = np.maximum(np.round(low, 2), 0.01)
    index = pd.DatetimeIndex(
        pd.bdate_range(EPOCH, periods=len(close), tz=IST, name="timestamp").as_unit("ns"),
        freq=None,
    )
    data = {**prices, "volume": volume}
    return pd.DataFrame({k: data[k].astype("float64") for k in BAR_COLUMNS}, index=index), deviation


@dataclass(frozen=True)
class SyntheticSource:
    """Synthetic daily bars on Mon-Fri trading days from 2015-01-01 (no holiday calendar).

    `end_date` caps the data (e.g. to emulate "data available up to yesterday"); None: no cap.
    `process` is the null (one of PROCESSES); `random_walk=True` is `process="random_walk"` (both
    fields are set alike after construction). `signal_ic` plants a signal whose ideal predictor has
    that information coefficient at `signal_horizon` bars (see the module docstring).
    """

    seed: int = 0
    end_date: dt.date | None = None
    signal_ic: float = 0.0
    random_walk: bool = False
    process: str = "garch"
    signal_horizon: int = _DEFAULT_HORIZON
    name: ClassVar[str] = "synthetic"

    def __post_init__(self) -> None:
        process = str(self.process).strip().lower()
        if process not in PROCESSES:
            raise ValueError(f"process must be one of {PROCESSES}, got {self.process!r}")
        if self.random_walk and process not in ("garch", "random_walk"):
            raise ValueError(f"random_walk=True is process='random_walk'; it contradicts process={process!r}")
        process = "random_walk" if self.random_walk else process
        object.__setattr__(self, "process", process)
        object.__setattr__(self, "random_walk", process == "random_walk")
        if isinstance(self.signal_horizon, bool) or int(self.signal_horizon) != self.signal_horizon:
            raise ValueError(f"signal_horizon must be a whole number of bars, got {self.signal_horizon!r}")
        object.__setattr__(self, "signal_horizon", int(self.signal_horizon))
        if self.signal_horizon < 1:
            raise ValueError(f"signal_horizon must be at least 1 bar, got {self.signal_horizon}")
        ic = float(self.signal_ic)
        if not math.isfinite(ic):
            raise ValueError(f"signal_ic must be finite, got {self.signal_ic}")
        deviation_scale(ic, 1.0, self.signal_horizon)  # refuses an IC out of range, naming the bound
        object.__setattr__(self, "signal_ic", ic)
        if self.end_date is not None:
            object.__setattr__(self, "end_date", as_date(self.end_date))

    def symbols(self) -> list[str] | None:
        """Any valid symbol works, so there is no list."""
        return None

    def _generated(self, symbol: str, last: dt.date) -> tuple[pd.DataFrame, np.ndarray]:
        n_needed = int(np.busday_count(EPOCH, last + dt.timedelta(days=1)))
        n_chunks = max(1, -(-n_needed // _CHUNK))
        return _generate(symbol, int(self.seed), self.process, self.signal_ic, self.signal_horizon, n_chunks)

    def _span(self, start: dt.date, end: dt.date) -> tuple[dt.date, dt.date]:
        first, last = max(as_date(start), EPOCH), as_date(end)
        if self.end_date is not None:
            last = min(last, self.end_date)
        return first, last

    def bars(self, symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Bars with start <= date <= min(end, end_date); see BarSource for the schema."""
        sym = validate_symbol(symbol)
        first, last = self._span(start, end)
        if first > last:
            return empty_bars()
        return filter_dates(self._generated(sym, last)[0], first, last).copy()

    def planted_deviation(self, symbol: str, start: dt.date, end: dt.date) -> pd.Series:
        """The planted log-price deviation x_t on the dates `bars` returns (zeros without a signal)."""
        sym = validate_symbol(symbol)
        first, last = self._span(start, end)
        if first > last:
            return pd.Series([], index=empty_bars().index, dtype="float64", name="planted_deviation")
        path, deviation = self._generated(sym, last)
        series = pd.Series(deviation, index=path.index, name="planted_deviation")
        return filter_dates(series.to_frame(), first, last)[series.name].copy()

    def ideal_forecast(self, symbol: str, start: dt.date, end: dt.date) -> pd.Series:
        """E[forward signal_horizon-bar log return | planted state] minus the constant h * drift.

        -(1 - (1-k)^h) x_t: the best direction-aware score there is; its Pearson correlation with the
        realised forward return is `signal_ic` (all zeros, no information, without a signal).
        """
        factor = 1.0 - (1.0 - _REVERSION_SPEED) ** self.signal_horizon
        x = self.planted_deviation(symbol, start, end)
        return (-factor * x).rename("ideal_forecast") + 0.0  # + 0.0: no -0.0 without a signal

    # -- change detection ------------------------------------------------------------------

    def data_token(self, symbol: str) -> str:
        """The parameters, readable: they are all the data depends on (the path is deterministic).

        Any valid symbol is known (InvalidSymbolError otherwise); the token is the same for every
        symbol of this source instance.
        """
        validate_symbol(symbol)
        end = self.end_date.isoformat() if self.end_date is not None else "none"
        return (
            f"synthetic:seed={int(self.seed)}:process={self.process}:signal_ic={self.signal_ic!r}"
            f":signal_horizon={self.signal_horizon}:end_date={end}"
        )

    def quick_token(self, symbol: str) -> str:
        """The same as `data_token`: already free (no file behind it)."""
        return self.data_token(symbol)

    def _last_bar(self) -> dt.date | None:
        """Date of the last bar when `end_date` caps the data (None: no bars at all)."""
        if self.end_date is None:
            return None
        day = self.end_date
        while day.weekday() >= 5:
            day -= dt.timedelta(days=1)
        return day if day >= EPOCH else None

    def _shape(self) -> tuple[object, ...]:
        """The parameters that shape the bars, as fingerprint parts.

        The first two are the slots of the retired `signal_strength` (always 0.0 now) and
        `random_walk`; `process` and the signal are appended only when they differ from that old
        default, so bars that did not change keep their fingerprints.
        """
        parts: list[object] = [repr(0.0), self.process == "random_walk"]
        if self.process not in ("garch", "random_walk"):
            parts.append(f"process={self.process}")
        if self.signal_ic > 0:  # the horizon shapes the bars only through the signal's calibration
            parts += [f"signal_ic={self.signal_ic!r}", f"signal_horizon={self.signal_horizon}"]
        return tuple(parts)

    def window_fingerprints(self, symbol: str, windows: Sequence[Window]) -> dict[dt.date, str | None]:
        """sha256 of (symbol, seed, the parameters that shape the bars, window); None while not covered.

        Without `end_date` every window is covered. With it, the last bar is the last weekday on or
        before `end_date`, so by the shared rule (`base.window_is_covered`) a window is None when
        `end_date` is earlier than the window's last weekday. `end_date` is not part of the
        fingerprint: a covered window's bars do not depend on it.
        """
        sym = validate_symbol(symbol)
        last_bar = self._last_bar()
        shape = self._shape()
        out: dict[dt.date, str | None] = {}
        for start, end in check_windows(windows):
            if self.end_date is not None and not window_is_covered(last_bar, start, end):
                out[start] = None
                continue
            out[start] = digest("synthetic", sym, int(self.seed), *shape, start.isoformat(), end.isoformat())
        return out
