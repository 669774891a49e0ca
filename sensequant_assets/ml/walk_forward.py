"""Out-of-sample evaluation of one window: the student of window k-1 predicts window k.

The only honest test of a per-window model is on bars it has never seen, so the student
trained on window k-1 scores window k's rows (the ``teacher_labels`` table of window k), and its
long/flat signal is backtested on the same bars against buy-and-hold. The per-row predictions
are kept so the promotion briefing can stitch every window of a symbol into one record and
recompute all its statistics from them.

Pure pandas/numpy; no Dagster, no file I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sensequant_assets.ml.backtest import backtest_long_flat
from sensequant_assets.ml.evaluation import (
    CALIBRATION_BINS,
    THRESHOLD,
    brier,
    classification_metrics,
    expected_calibration_error,
    fidelity,
    log_loss,
    reliability_diagram,
)
from sensequant_assets.ml.features import MODEL_FEATURES
from sensequant_assets.ml.student import predict_proba, predict_raw_proba, standardized_score

PREDICTION_COLUMNS: list[str] = [
    "ts",
    "symbol",
    "window",
    "close",
    "label",
    "forward_return",
    "teacher_proba",
    "student_proba",
    "student_score",
    "baseline_proba",
    "position",
    "strategy_return",
    "buy_hold_return",
]

_FRAME_COLUMNS = ["ts", "symbol", "close", "label", "forward_return", "teacher_proba", *MODEL_FEATURES]


@dataclass(frozen=True)
class WindowEvaluation:
    """Per-row predictions (:data:`PREDICTION_COLUMNS`), metrics and the backtest's equity curves.

    ``metrics`` holds plain JSON numbers: the classification metrics of
    :func:`~sensequant_assets.ml.evaluation.classification_metrics` at the top level (of the
    served, calibrated probabilities) with their ``ece``, the fidelity to this window's teacher as
    ``fidelity_*``, the naive baseline as ``baseline_*`` (log loss, Brier, ECE), the distilled
    student before calibration as ``uncalibrated_*`` (log loss, Brier, ECE), the reliability-diagram
    bins of both under ``reliability``, and the long/flat backtest summary under ``backtest``
    (``strategy`` and ``buy_hold`` legs).
    ``equity`` is :attr:`BacktestResult.equity` indexed by ``ts``.
    """

    predictions: pd.DataFrame
    metrics: dict[str, Any]
    equity: pd.DataFrame


def evaluate_window(
    model: Any,
    frame: pd.DataFrame,
    *,
    train_base_rate: float,
    cost_bps: float = 10.0,
    window: str,
) -> WindowEvaluation:
    """Score ``model`` (trained on an earlier window) on ``frame`` and backtest its signal.

    ``frame`` is window k's ``teacher_labels`` table in time order. ``train_base_rate`` is the
    share of positive labels the model was trained on: the naive forecast whose log loss the
    student must beat (the briefing's Diebold-Mariano test compares them row by row).

    The long/flat signal is ``student_proba > 0.5``, decided at a bar's close and held over the
    next bar (see :mod:`~sensequant_assets.ml.backtest`), net of ``cost_bps`` per side.
    Buy-and-hold enters at the window's first close and pays the entry cost once. The
    backtest covers the window's usable rows: the last ``horizon`` bars of a window carry no
    label, so they are not in ``frame`` and neither leg trades over them.
    """
    missing = [c for c in _FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"window {window}: frame lacks columns {missing}")
    if len(frame) < 2:
        raise ValueError(f"window {window}: {len(frame)} rows, at least 2 needed to evaluate")
    if not (math.isfinite(train_base_rate) and 0.0 <= train_base_rate <= 1.0):
        raise ValueError(f"train_base_rate must be a probability, got {train_base_rate!r}")
    ts = pd.DatetimeIndex(pd.to_datetime(frame["ts"]))
    if not ts.is_monotonic_increasing or ts.has_duplicates:
        raise ValueError(f"window {window}: ts must be strictly increasing")

    student = predict_proba(model, frame)
    uncalibrated = predict_raw_proba(model, frame)
    teacher = frame["teacher_proba"].to_numpy(dtype="float64")
    labels = frame["label"].to_numpy(dtype="float64")
    forward = frame["forward_return"].to_numpy(dtype="float64")
    baseline = np.full(len(frame), float(train_base_rate))

    close = pd.Series(frame["close"].to_numpy(dtype="float64"), index=ts)
    signal = pd.Series((student > THRESHOLD).astype("float64"), index=ts)
    backtest = backtest_long_flat(close, signal, cost_bps=cost_bps)
    equity = backtest.equity
    equity.index.name = "ts"

    predictions = pd.DataFrame(
        {
            "ts": frame["ts"].to_numpy(),
            "symbol": frame["symbol"].to_numpy(),
            "window": window,
            "close": close.to_numpy(),
            "label": frame["label"].to_numpy(dtype="int64"),
            "forward_return": forward,
            "teacher_proba": teacher,
            "student_proba": student,
            "student_score": standardized_score(model, frame),
            "baseline_proba": baseline,
            "position": equity["position"].to_numpy(dtype="int64"),
            "strategy_return": equity["strategy_return"].to_numpy(),
            "buy_hold_return": equity["buy_hold_return"].to_numpy(),
        }
    )[PREDICTION_COLUMNS]

    fid = fidelity(student, teacher)
    metrics: dict[str, Any] = {
        "window": window,
        **classification_metrics(student, labels, forward),
        "fidelity_agreement": fid["agreement"],
        "fidelity_cross_entropy": fid["cross_entropy"],
        "fidelity_kl_divergence": fid["kl_divergence"],
        "fidelity_mean_abs_diff": fid["mean_abs_diff"],
        # ECE and the reliability bins: CALIBRATION_BINS equal-mass bins (ml.evaluation.equal_mass_bins).
        "ece": expected_calibration_error(student, labels),
        "baseline_proba": float(train_base_rate),
        "baseline_log_loss": log_loss(baseline, labels),
        "baseline_brier": brier(baseline, labels),
        "baseline_ece": expected_calibration_error(baseline, labels),
        "uncalibrated_log_loss": log_loss(uncalibrated, labels),
        "uncalibrated_brier": brier(uncalibrated, labels),
        "uncalibrated_ece": expected_calibration_error(uncalibrated, labels),
        "reliability": {
            "binning": f"{CALIBRATION_BINS} equal-mass bins by predicted probability, ties kept together",
            "student": reliability_diagram(student, labels),
            "uncalibrated": reliability_diagram(uncalibrated, labels),
        },
        "backtest": backtest.summary,
    }
    return WindowEvaluation(predictions=predictions, metrics=metrics, equity=equity)
