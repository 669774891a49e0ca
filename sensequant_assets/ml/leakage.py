"""A point-in-time guard: a feature at bar t must not move when anything after t changes.

Walk-forward evaluation cannot catch a feature that reads the future: the leaked value is
computed inside the evaluated window too, so the "out-of-sample" score is as inflated as the
in-window one. The only reliable defence is to test the feature function itself, which is what
:func:`check_point_in_time` does, cheaply enough to run on every training run.

Pure pandas/numpy; no Dagster, no file I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close")


class LookAheadError(ValueError):
    """``feature_fn`` changed a value at or before a cut point when only later bars changed."""

    def __init__(self, features: Sequence[str], first_moved: object, cut: object, end: object) -> None:
        self.features = list(features)
        self.first_moved = first_moved
        self.cut = cut
        self.end = end
        super().__init__(
            f"look-ahead: features {self.features} changed at {first_moved}, at or before {cut}, "
            f"when the bars after {cut} were replaced and those after {end} removed; "
            "a feature at bar t may only use bars <= t"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.features, self.first_moved, self.cut, self.end))


def _moved(base: pd.DataFrame, other: pd.DataFrame, upto: int, rtol: float, atol: float) -> np.ndarray:
    """Boolean (rows, features) of values in rows ``0..upto`` that differ (NaN == NaN)."""
    a = base.iloc[: upto + 1].to_numpy(dtype="float64")
    b = other.reindex(columns=base.columns).iloc[: upto + 1].to_numpy(dtype="float64")
    if b.shape != a.shape:
        return np.ones(a.shape, dtype=bool)
    same = np.isclose(a, b, rtol=rtol, atol=atol) | (np.isnan(a) & np.isnan(b))
    return ~same


def _perturb_after(bars: pd.DataFrame, cut: int, rng: np.random.Generator) -> pd.DataFrame:
    """Bars after ``cut`` replaced by an independent, valid continuation of the path.

    Every value of every later bar is drawn afresh: the gap from the previous close, the body
    (close against open), the wick above and the wick below the body, and the volume. Scaling
    the old later bars instead (one common factor for all of a bar's OHLC) kept every ratio
    within a bar, so a feature reading the next bar's shape, e.g. ``(close / open - 1).shift(-1)``,
    never moved; a fresh path leaves no function of the later bars invariant except constants
    (a coarse one, such as the next bar's direction, still keeps its value by chance: about
    half the time per probe).
    It starts at the close at ``cut`` and moves with the bars' own daily volatility, so it is a
    plausible input rather than a jump a feature could choke on, and it keeps what the sources
    guarantee: 0 < low <= min(open, close), high >= max(open, close), whole volume >= 0.
    Other columns are left as they are.
    """
    out = bars.copy()
    n_after = len(bars) - cut - 1
    gap, body, upper, lower, volume_noise = rng.standard_normal((5, n_after))
    prices = [c for c in PRICE_COLUMNS if c in bars.columns]
    if prices:
        ref = bars["close" if "close" in prices else prices[0]].to_numpy(dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ref = np.log(ref)
            vol = float(np.nanstd(np.diff(log_ref))) if len(ref) > 2 else 0.0
        vol = vol if np.isfinite(vol) and vol > 0 else 0.02
        anchor = float(log_ref[cut]) if np.isfinite(log_ref[cut]) else 0.0
        body = vol * body
        log_close = anchor + np.cumsum(0.5 * vol * gap + body)
        log_open = log_close - body
        fresh = {
            "open": log_open,
            "close": log_close,
            "high": np.maximum(log_open, log_close) + 0.5 * vol * np.abs(upper),
            "low": np.minimum(log_open, log_close) - 0.5 * vol * np.abs(lower),
        }
        for c in prices:
            column = bars[c].to_numpy(dtype="float64", copy=True)
            column[cut + 1 :] = np.exp(fresh[c])
            out[c] = column
    if "volume" in bars.columns:
        column = bars["volume"].to_numpy(dtype="float64", copy=True)
        positive = column[np.isfinite(column) & (column > 0)]
        scale = float(np.median(positive)) if len(positive) else 1000.0
        column[cut + 1 :] = np.round(scale * np.exp(0.5 * volume_noise))
        out["volume"] = column.astype(bars["volume"].dtype) if bars["volume"].dtype.kind in "iu" else column
    return out


def check_point_in_time(
    feature_fn: Callable[[pd.DataFrame], pd.DataFrame],
    bars: pd.DataFrame,
    *,
    probes: int = 5,
    seed: int = 0,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> None:
    """Raise :class:`LookAheadError` if any feature at or before a cut point depends on later bars.

    For ``probes`` cut points t (drawn with ``seed``, spread over the bars), ``feature_fn`` is
    recomputed on the bars cut short at a random point u > t with every bar in ``(t, u]``
    replaced by an independently drawn path (every open, high, low, close and volume new, see
    :func:`_perturb_after`). A causal function gives the same values at rows <= t (up to
    ``rtol``/``atol``; NaN equals NaN). The replaced bars catch reads of values up to ``u - t``
    bars ahead (``shift(-k)``, centred windows, the next bar's shape); the cut catches longer reads,
    back-filling and whole-series statistics (global normalisation). The error names the
    features that moved and the first timestamp that moved. Costs ``probes + 1`` calls of
    ``feature_fn`` (tens of milliseconds each for a window of daily bars) and a few
    milliseconds of drawing, so it can run every time a model is trained.
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    n = len(bars)
    if n < 3:
        raise ValueError(f"need at least 3 bars to probe, got {n}")
    base = feature_fn(bars)
    if len(base) != n:
        raise ValueError(f"feature_fn returned {len(base)} rows for {n} bars")
    rng = np.random.default_rng(seed)
    # One cut point per equal slice of the bars, so the probes spread over the series (warm-up
    # included: back-filled warm-up rows are look-ahead too) and each leaves later bars to read.
    edges = np.linspace(0, n - 1, min(probes, n - 1) + 1).astype(int)
    cuts = sorted({int(rng.integers(a, max(a + 1, b))) for a, b in itertools.pairwise(edges)})
    for cut in cuts:
        end = int(rng.integers(cut + 1, n))  # last bar kept, inclusive
        changed = feature_fn(_perturb_after(bars.iloc[: end + 1], cut, rng))
        moved = _moved(base, changed, cut, rtol, atol)
        if moved.any():
            rows, cols = np.nonzero(moved)
            features = [str(base.columns[j]) for j in sorted(set(cols.tolist()))]
            raise LookAheadError(features, base.index[int(rows.min())], base.index[cut], bars.index[end])


_VERIFIED: set[Callable[[pd.DataFrame], pd.DataFrame]] = set()


def ensure_point_in_time(feature_fn: Callable[[pd.DataFrame], pd.DataFrame], bars: pd.DataFrame) -> None:
    """`check_point_in_time` once per feature function and process.

    Causality is a property of the function, not of one window's data, so a process that trains
    hundreds of partitions pays for the probes once instead of on every model.
    """
    if feature_fn not in _VERIFIED:
        check_point_in_time(feature_fn, bars)
        _VERIFIED.add(feature_fn)
