"""One symbol-window's training table: bars, features, labels and model inputs, with drop counts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from sensequant_assets.ml.features import (
    BAR_COLUMNS,
    FEATURE_COLUMNS,
    MODEL_FEATURES,
    WARMUP_BARS,
    compute_features,
    model_matrix,
    validate_bars,
)
from sensequant_assets.ml.labels import LabelSpec, make_labels

FeatureFn = Callable[[pd.DataFrame], pd.DataFrame]
"""Bars -> the MODEL_FEATURES columns on the bars' index; must be causal (see ml.leakage)."""


def model_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The real model inputs of a bar frame: the default ``feature_fn`` of :func:`build_dataset`.

    Exposed as one function of the bars so the point-in-time guard (``ml.leakage``) can run it on
    perturbed and truncated copies of exactly what the models are trained on.
    """
    return model_matrix(compute_features(bars), bars)


DATASET_COLUMNS: list[str] = [
    "ts",
    "symbol",
    *BAR_COLUMNS,
    *FEATURE_COLUMNS,
    "label",
    "forward_return",
    *MODEL_FEATURES,
]


@dataclass(frozen=True)
class DatasetResult:
    """The usable rows of a window and where the other in-window bars went.

    ``in_window_bars == usable_rows + dropped_horizon + dropped_warmup + dropped_incomplete``.
    A row is attributed to the first reason that applies, in that order: its label's horizon
    crosses the window end; it has fewer than WARMUP_BARS bars of history; some feature is
    undefined even after warm-up (e.g. 20 bars without volume leave vwap undefined).
    """

    frame: pd.DataFrame
    symbol: str
    window_start: date
    window_end: date
    in_window_bars: int
    dropped_horizon: int
    dropped_warmup: int
    dropped_incomplete: int
    usable_rows: int
    history_bars: int

    def counts(self) -> dict[str, int]:
        """The row accounting as plain ints (for metadata)."""
        return {
            "in_window_bars": self.in_window_bars,
            "history_bars": self.history_bars,
            "dropped_horizon": self.dropped_horizon,
            "dropped_warmup": self.dropped_warmup,
            "dropped_incomplete": self.dropped_incomplete,
            "usable_rows": self.usable_rows,
        }


def _local_wall_time(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Timestamps as exchange-local wall time, so the window is compared in the bars' own zone."""
    return index.tz_localize(None) if index.tz is not None else index


def build_dataset(
    bars: pd.DataFrame,
    window_start: date,
    window_end: date,
    horizon: int,
    label: LabelSpec | float,
    symbol: str,
    feature_fn: FeatureFn | None = None,
) -> DatasetResult:
    """Rows of ``[window_start, window_end]`` (inclusive, in the bars' time zone) ready to train on.

    ``bars`` may start before ``window_start``: that history only warms the indicators up. It
    must not reach past ``window_end`` (ValueError), because labels are computed on exactly the
    bars given and anything later would leak the next window into this one.

    ``label`` defines ``label = 1`` (:class:`~sensequant_assets.ml.labels.LabelSpec`; a plain
    float is the predecessor's fixed threshold).

    ``feature_fn`` replaces :func:`model_features` for the ``m_*`` model inputs (the 15 raw
    features stored alongside are always the predecessor's); it exists so a candidate feature
    set can be checked with ``ml.leakage.check_point_in_time`` and trained through the same path.
    """
    validate_bars(bars)
    if window_end < window_start:
        raise ValueError(f"window_end {window_end} is before window_start {window_start}")
    local = _local_wall_time(bars.index)
    start_ts = pd.Timestamp(window_start)
    after_end = pd.Timestamp(window_end + timedelta(days=1))
    if len(local) and local[-1] >= after_end:
        raise ValueError(
            f"{symbol}: bars reach {bars.index[-1]}, past window end {window_end}; "
            "pass only bars up to the window end so labels cannot look into the next window"
        )

    features = compute_features(bars)
    labels = make_labels(bars["close"], horizon, label)
    if feature_fn is None:
        model_inputs = model_matrix(features, bars)
    else:
        model_inputs = feature_fn(bars)
        absent = [c for c in MODEL_FEATURES if c not in model_inputs.columns]
        if absent or not model_inputs.index.equals(bars.index):
            raise ValueError(f"feature_fn must return {MODEL_FEATURES} on the bars' index; missing {absent}")
        model_inputs = model_inputs[MODEL_FEATURES].astype("float64").replace([np.inf, -np.inf], np.nan)

    in_window = np.asarray(local >= start_ts)
    position = np.arange(len(bars))
    no_label = labels["label"].isna().to_numpy()
    short_history = position < WARMUP_BARS
    incomplete = features.isna().any(axis=1).to_numpy() | model_inputs.isna().any(axis=1).to_numpy()

    dropped_horizon = in_window & no_label
    dropped_warmup = in_window & ~no_label & short_history
    dropped_incomplete = in_window & ~no_label & ~short_history & incomplete
    usable = in_window & ~no_label & ~short_history & ~incomplete

    frame = pd.DataFrame({"ts": bars.index[usable]})
    frame["symbol"] = symbol
    for col in BAR_COLUMNS:
        frame[col] = bars[col].to_numpy(dtype="float64")[usable]
    for col in FEATURE_COLUMNS:
        frame[col] = features[col].to_numpy()[usable]
    frame["label"] = labels["label"].to_numpy()[usable].astype("int64")
    frame["forward_return"] = labels["forward_return"].to_numpy()[usable]
    for col in MODEL_FEATURES:
        frame[col] = model_inputs[col].to_numpy()[usable]

    return DatasetResult(
        frame=frame[DATASET_COLUMNS],
        symbol=symbol,
        window_start=window_start,
        window_end=window_end,
        in_window_bars=int(in_window.sum()),
        dropped_horizon=int(dropped_horizon.sum()),
        dropped_warmup=int(dropped_warmup.sum()),
        dropped_incomplete=int(dropped_incomplete.sum()),
        usable_rows=int(usable.sum()),
        history_bars=int((~in_window).sum()),
    )
