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
    """Bars after ``cut`` replaced by a different, still valid path (OHLC scaled row by row)."""
    out = bars.copy()
    n_after = len(bars) - cut - 1
    price_factor = np.exp(np.cumsum(rng.normal(0.0, 0.05, n_after)))
    volume_factor = np.exp(rng.normal(0.0, 0.5, n_after))
    cols = [c for c in PRICE_COLUMNS if c in bars.columns]
    out.iloc[cut + 1 :, [out.columns.get_loc(c) for c in cols]] = (
        bars[cols].iloc[cut + 1 :].to_numpy(dtype="float64") * price_factor[:, None]
    )
    if "volume" in bars.columns:
        vol = bars["volume"].iloc[cut + 1 :].to_numpy(dtype="float64")
        out.iloc[cut + 1 :, out.columns.get_loc("volume")] = np.round(vol * volume_factor)
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
    replaced by a different price/volume path. A causal function gives the same values at rows
    <= t (up to ``rtol``/``atol``; NaN equals NaN). The replaced bars catch reads of values up
    to ``u - t`` bars ahead (``shift(-k)``, centred windows); the cut catches longer reads,
    back-filling and whole-series statistics (global normalisation). The error names the
    features that moved and the first timestamp that moved. Costs ``probes + 1`` calls of
    ``feature_fn`` (milliseconds each for a window of daily bars), so it can run every time a
    model is trained.
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
