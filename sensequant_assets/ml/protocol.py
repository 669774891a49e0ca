"""The walk-forward protocol of the asset graph as one pure loop over a symbol's windows.

For each window: the dataset (with history for warm-up), the teacher, the student on the
teacher's out-of-fold soft labels, and the evaluation of the *previous* window's student on this
window's rows -- exactly what the assets do partition by partition. The methodology study
(``bench/methodology.py``) and the statistical tests run it on simulated universes, so what they
measure is the pipeline's behaviour, not a model of it.

Pure pandas/numpy; no Dagster, no file I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from sensequant_assets.ml.dataset import FeatureFn, build_dataset
from sensequant_assets.ml.features import HISTORY_DAYS
from sensequant_assets.ml.labels import LabelSpec
from sensequant_assets.ml.student import StudentParams, train_student
from sensequant_assets.ml.teacher import TeacherParams, TooFewRowsError, check_rows, train_teacher
from sensequant_assets.ml.walk_forward import evaluate_window


class BarSource(Protocol):
    """Anything with the sources' ``bars(symbol, start, end)``."""

    def bars(self, symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame: ...


def month_windows(start: dt.date, count: int, months: int = 6) -> list[tuple[dt.date, dt.date]]:
    """``count`` consecutive windows of ``months`` calendar months: (first day, last day)."""
    out = []
    for _ in range(count):
        total = start.month - 1 + months
        nxt = dt.date(start.year + total // 12, total % 12 + 1, 1)
        out.append((start, nxt - dt.timedelta(days=1)))
        start = nxt
    return out


# Earlier windows each fit also learns from, by default (the assets' `TeacherConfig.lookback_windows`
# takes its default from here). 2 since the paired study through this protocol (20 planted-reversal
# symbols per strength on a GARCH-t null, the same paths, 10 years): the student's out-of-sample IC
# median rose from 0.069 to 0.105 at an ideal IC of 0.15 (symbols with one-sided p <= 0.025: 7/20 ->
# 13/20), 0.113 -> 0.143 at 0.20 (14/20 -> 18/20), 0.049 -> 0.060 at 0.10 (5/20 -> 6/20); see
# docs/methodology.md. A 6-month window alone is ~120 rows.
DEFAULT_LOOKBACK_WINDOWS = 2


@dataclass(frozen=True)
class WalkForwardSettings:
    """Everything that shapes one symbol's walk-forward run (the assets' defaults by default).

    ``lookback_windows``: each fit also learns from up to this many earlier windows of the symbol
    (its training rows run from the earliest of them to the window's end, labels purged at the
    window end); the first windows have fewer (cut at the first window, as the assets cut it at
    the first partition); 0 trains on the window alone. Default ``DEFAULT_LOOKBACK_WINDOWS`` (2),
    as the assets.
    """

    horizon: int = 7
    label: LabelSpec = field(default_factory=LabelSpec)
    teacher: TeacherParams = field(default_factory=TeacherParams)
    student: StudentParams = field(default_factory=StudentParams)
    cost_bps: float = 10.0
    min_rows: int = 20
    lookback_windows: int = DEFAULT_LOOKBACK_WINDOWS


@dataclass(frozen=True)
class WalkForwardResult:
    """Stitched out-of-sample predictions (``ml.walk_forward.PREDICTION_COLUMNS``) and per-window notes."""

    predictions: pd.DataFrame
    windows: list[dict[str, Any]]


def walk_forward(
    source: BarSource,
    symbol: str,
    windows: list[tuple[dt.date, dt.date]],
    settings: WalkForwardSettings | None = None,
    *,
    feature_fn: FeatureFn | None = None,
) -> WalkForwardResult:
    """Every window's out-of-sample predictions (concatenated) and per-window in-window scores.

    A window whose teacher cannot train (too few rows, one label class) is skipped like the asset
    skips it, so the next window has no previous student and is not evaluated either.
    """
    s = settings or WalkForwardSettings()
    predictions: list[pd.DataFrame] = []
    notes: list[dict[str, Any]] = []
    previous = None  # (student model, training base rate)
    for k, (start, end) in enumerate(windows):
        train_start = windows[max(0, k - s.lookback_windows)][0]
        bars = source.bars(symbol, train_start - dt.timedelta(days=HISTORY_DAYS), end)
        frame = build_dataset(bars, train_start, end, s.horizon, s.label, symbol, feature_fn=feature_fn).frame
        in_window = frame[pd.to_datetime(frame["ts"]).dt.tz_localize(None) >= pd.Timestamp(start)]
        note: dict[str, Any] = {"window": start.isoformat(), "rows": len(in_window), "train_rows": len(frame)}
        stamps = pd.DatetimeIndex(bars.index)
        own_bars = (stamps.tz_localize(None) if stamps.tz is not None else stamps) >= pd.Timestamp(start)
        if not own_bars.any():  # as the asset: a window without bars of its own trains nothing
            notes.append({**note, "skipped": "no bars in the window"})
            previous = None
            continue
        try:
            check_rows(frame, s.min_rows, symbol, start.isoformat())
            fitted = train_teacher(frame, s.teacher, s.horizon)
        except TooFewRowsError as exc:
            notes.append({**note, "skipped": str(exc)})
            previous = None
            continue
        oof = pd.Series(fitted.oof_proba, index=frame.index)
        if previous is not None and len(in_window) >= 2:
            result = evaluate_window(
                previous[0],
                in_window.assign(teacher_proba=oof.loc[in_window.index].to_numpy()).reset_index(drop=True),
                train_base_rate=previous[1],
                cost_bps=s.cost_bps,
                window=f"{symbol}|{start.isoformat()}",
            )
            predictions.append(result.predictions)
        distilled = train_student(frame, fitted.oof_proba, s.student, s.horizon)
        notes.append({**note, **fitted.metrics})
        previous = (distilled.model, float(frame["label"].mean()))
    stitched = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame()
    return WalkForwardResult(predictions=stitched, windows=notes)
