"""Out-of-sample classification metrics and student-teacher fidelity.

Pure numpy/scikit-learn; no Dagster, no file I/O. Every value is computed from the inputs and
returned as a plain Python ``float``/``int`` (or ``None`` when undefined) so the dicts can be
written to JSON as they are.

A bar is "predicted long" when ``proba > 0.5`` (strictly), the same threshold used for accuracy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score

from sensequant_assets.ml.stats import _as_1d, log_loss_series, spearman_ic

THRESHOLD = 0.5


def _check_proba(p: np.ndarray, name: str) -> None:
    if np.any((p < 0.0) | (p > 1.0)):
        raise ValueError(f"{name} must lie in [0, 1]")


def classification_metrics(
    proba: ArrayLike, labels: ArrayLike, forward_returns: ArrayLike | None
) -> dict[str, Any]:
    """Metrics of predicted probabilities against 0/1 labels and the realised forward returns.

    - ``auc``: ROC AUC (Hanley & McNeil 1982; scikit-learn), ``None`` if only one class is present.
    - ``accuracy``: share of ``(proba > 0.5) == label``.
    - ``hit_rate``: among predicted-long bars, share with forward return > 0 -- what a long/flat
      strategy would actually see; ``None`` if nothing is predicted long.
    - ``brier``: ``mean((proba - label)^2)`` (Brier 1950); ``log_loss``: mean clipped
      cross-entropy (:func:`~sensequant_assets.ml.stats.log_loss_series`).
    - ``ic``: Spearman rank correlation of ``proba`` with the forward return.
    - ``n``: number of rows.

    ``forward_returns`` may be ``None`` (then ``hit_rate`` and ``ic`` are ``None``); NaN forward
    returns are ignored by ``hit_rate`` and ``ic``. ``proba`` and ``labels`` must be complete.
    """
    p = _as_1d(proba, "proba")
    y = _as_1d(labels, "labels")
    if p.shape != y.shape:
        raise ValueError("proba and labels must have the same length")
    if p.size == 0:
        raise ValueError("no rows to evaluate")
    _check_proba(p, "proba")
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise ValueError("labels must be 0 or 1")

    pred_long = p > THRESHOLD
    auc = float(roc_auc_score(y, p)) if np.unique(y).size == 2 else None

    hit_rate: float | None = None
    ic: float | None = None
    if forward_returns is not None:
        fr = _as_1d(forward_returns, "forward_returns", allow_nan=True)
        if fr.shape != p.shape:
            raise ValueError("forward_returns must have the same length as proba")
        longs = pred_long & np.isfinite(fr)
        if longs.any():
            hit_rate = float(np.mean(fr[longs] > 0.0))
        ic = spearman_ic(p, fr)

    return {
        "auc": auc,
        "accuracy": float(np.mean(pred_long == (y == 1.0))),
        "hit_rate": hit_rate,
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": float(np.mean(log_loss_series(p, y))),
        "ic": ic,
        "n": int(p.size),
    }


def fidelity(student_proba: ArrayLike, teacher_proba: ArrayLike) -> dict[str, Any]:
    """How closely a distilled student reproduces its teacher (Hinton et al. 2015 soft targets).

    - ``agreement``: share of rows where both sides fall on the same side of 0.5.
    - ``cross_entropy``: mean ``-(t log s + (1 - t) log(1 - s))`` of the student ``s`` against the
      teacher's soft targets ``t`` (the distillation loss).
    - ``kl_divergence``: cross-entropy minus the teacher's own entropy; 0 iff ``s == t``.
    - ``mean_abs_diff``: mean ``|s - t|``; ``n``: number of rows.
    """
    s = _as_1d(student_proba, "student_proba")
    t = _as_1d(teacher_proba, "teacher_proba")
    if s.shape != t.shape:
        raise ValueError("student_proba and teacher_proba must have the same length")
    if s.size == 0:
        raise ValueError("no rows to compare")
    _check_proba(s, "student_proba")
    _check_proba(t, "teacher_proba")
    ce = log_loss_series(s, t)
    teacher_entropy = log_loss_series(t, t)
    return {
        "agreement": float(np.mean((s > THRESHOLD) == (t > THRESHOLD))),
        "cross_entropy": float(np.mean(ce)),
        "kl_divergence": float(max(0.0, np.mean(ce - teacher_entropy))),
        "mean_abs_diff": float(np.mean(np.abs(s - t))),
        "n": int(s.size),
    }
