"""Every prediction-quality metric of the project, computed in this one place.

Teacher validation, student holdout, out-of-sample window evaluation and the promotion briefing
all score probabilities with these functions, so a number means the same thing wherever it is
reported. Pure numpy/scipy/scikit-learn; no Dagster, no file I/O. Values are plain Python
``float``/``int`` (or ``None`` when undefined, e.g. AUC with one class) so dicts go to JSON as
they are.

Conventions: probabilities come first, then the targets (``f(proba, labels)``). A bar is
"predicted long" when ``proba > 0.5`` (strictly), the threshold used by accuracy, precision,
hit rate, agreement and the long/flat backtest alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sensequant_assets.ml.stats import as_1d

THRESHOLD = 0.5
LOGLOSS_EPS = 1e-15


def _proba(values: ArrayLike, name: str) -> NDArray[np.float64]:
    p = as_1d(values, name)
    if np.any((p < 0.0) | (p > 1.0)):
        raise ValueError(f"{name} must lie in [0, 1]")
    return p


def _pair(proba: ArrayLike, targets: ArrayLike, target_name: str) -> tuple[NDArray, NDArray]:
    p = _proba(proba, "proba")
    y = as_1d(targets, target_name)
    if p.shape != y.shape:
        raise ValueError(f"proba ({p.size}) and {target_name} ({y.size}) must have the same length")
    if p.size == 0:
        raise ValueError("no rows to evaluate")
    return p, y


def _hard_labels(proba: ArrayLike, labels: ArrayLike) -> tuple[NDArray, NDArray]:
    p, y = _pair(proba, labels, "labels")
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise ValueError("labels must be 0 or 1")
    return p, y


def log_loss_series(proba: ArrayLike, targets: ArrayLike, eps: float = LOGLOSS_EPS) -> NDArray[np.float64]:
    """Per-row binary cross-entropy ``-(y log p + (1 - y) log(1 - p))``.

    ``proba`` is clipped to ``[eps, 1 - eps]`` so a confident miss costs a large finite loss
    instead of infinity. ``targets`` may be hard (0/1) or soft in ``[0, 1]`` (teacher
    probabilities). Per row so it can feed the Diebold-Mariano test.
    """
    p, y = _pair(proba, targets, "targets")
    if np.any((y < 0.0) | (y > 1.0)):
        raise ValueError("targets must lie in [0, 1]")
    pc = np.clip(p, eps, 1.0 - eps)
    return -(y * np.log(pc) + (1.0 - y) * np.log1p(-pc))


def log_loss(proba: ArrayLike, targets: ArrayLike) -> float:
    """Mean of :func:`log_loss_series`."""
    return float(np.mean(log_loss_series(proba, targets)))


def auc_rows(proba: NDArray[np.float64], labels: NDArray[np.float64]) -> NDArray[np.float64]:
    """ROC AUC of each row of a ``(rows, n)`` matrix: the one AUC implementation of the project.

    Mann-Whitney form ``(sum of positive ranks - n1 (n1 + 1) / 2) / (n1 n0)`` with average ranks
    for ties, which equals the area under the ROC curve with ties counted as one half (Hanley &
    McNeil 1982). Vectorised over rows (one row is the common case). NaN
    where a row holds one class. No validation: :func:`auc` is the checked entry point.
    """
    from scipy.stats import rankdata  # lazy: scipy.stats is slow to import

    ranks = rankdata(proba, axis=1)
    n_pos = labels.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((ranks * labels).sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def auc(proba: ArrayLike, labels: ArrayLike) -> float | None:
    """ROC AUC (:func:`auc_rows`), ``None`` with one class: undefined, not 0.5."""
    p, y = _hard_labels(proba, labels)
    value = float(auc_rows(p[None, :], y[None, :])[0])
    return value if np.isfinite(value) else None


def accuracy(proba: ArrayLike, labels: ArrayLike) -> float:
    """Share of rows where ``proba > 0.5`` equals the 0/1 label."""
    p, y = _hard_labels(proba, labels)
    return float(np.mean((p > THRESHOLD) == (y == 1.0)))


def spearman_rows(pred: NDArray[np.float64], realised: NDArray[np.float64]) -> NDArray[np.float64]:
    """Spearman correlation of each row of two ``(rows, n)`` matrices (Pearson of average ranks).

    Vectorised over rows like :func:`auc_rows`; NaN where a row of either side is
    constant. No validation: :func:`spearman_ic` is the checked entry point.
    """
    from scipy.stats import rankdata

    a = rankdata(pred, axis=1)
    b = rankdata(realised, axis=1)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def spearman_ic(pred: ArrayLike, realised: ArrayLike) -> float | None:
    """Information coefficient: Spearman rank correlation of predictions and realised outcomes.

    Rank-based, so it measures ordering skill regardless of calibration (Grinold & Kahn, Active
    Portfolio Management). Pairs where either value is NaN are dropped (e.g. purged forward
    returns). ``None`` with fewer than 3 pairs or when either side is constant.
    """
    p = as_1d(pred, "pred", allow_nan=True)
    r = as_1d(realised, "realised", allow_nan=True)
    if p.shape != r.shape:
        raise ValueError("pred and realised must have the same length")
    keep = np.isfinite(p) & np.isfinite(r)
    p, r = p[keep], r[keep]
    if p.size < 3 or np.all(p == p[0]) or np.all(r == r[0]):
        return None
    rho = float(spearman_rows(p[None, :], r[None, :])[0])
    return rho if np.isfinite(rho) else None


def classification_metrics(
    proba: ArrayLike, labels: ArrayLike, forward_returns: ArrayLike | None = None
) -> dict[str, Any]:
    """Metrics of predicted probabilities against 0/1 labels and the realised forward returns.

    - ``auc``: :func:`auc`; ``accuracy``: :func:`accuracy`.
    - ``precision``/``recall``/``f1`` of the predicted-long class (0.0 when undefined).
    - ``hit_rate``: among predicted-long bars, share with forward return > 0 -- what a long/flat
      strategy would actually see; ``None`` if nothing is predicted long.
    - ``brier``: ``mean((proba - label)^2)`` (Brier 1950); ``log_loss``: :func:`log_loss`.
    - ``ic``: :func:`spearman_ic` of ``proba`` with the forward return.
    - ``n``: number of rows.

    ``forward_returns`` may be ``None`` (then ``hit_rate`` and ``ic`` are ``None``); NaN forward
    returns are ignored by ``hit_rate`` and ``ic``. ``proba`` and ``labels`` must be complete.
    """
    p, y = _hard_labels(proba, labels)
    pred_long = p > THRESHOLD
    positive = y == 1.0
    true_pos = int(np.sum(pred_long & positive))
    pred_pos, actual_pos = int(pred_long.sum()), int(positive.sum())
    precision = true_pos / pred_pos if pred_pos else 0.0
    recall = true_pos / actual_pos if actual_pos else 0.0
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0

    hit_rate: float | None = None
    ic: float | None = None
    if forward_returns is not None:
        fr = as_1d(forward_returns, "forward_returns", allow_nan=True)
        if fr.shape != p.shape:
            raise ValueError("forward_returns must have the same length as proba")
        longs = pred_long & np.isfinite(fr)
        if longs.any():
            hit_rate = float(np.mean(fr[longs] > 0.0))
        ic = spearman_ic(p, fr)

    return {
        "auc": auc(p, y),
        "accuracy": accuracy(p, y),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "hit_rate": hit_rate,
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": log_loss(p, y),
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
    s = _proba(student_proba, "student_proba")
    t = _proba(teacher_proba, "teacher_proba")
    if s.shape != t.shape:
        raise ValueError("student_proba and teacher_proba must have the same length")
    ce = log_loss_series(s, t)
    teacher_entropy = log_loss_series(t, t)
    return {
        "agreement": float(np.mean((s > THRESHOLD) == (t > THRESHOLD))),
        "cross_entropy": float(np.mean(ce)),
        "kl_divergence": float(max(0.0, np.mean(ce - teacher_entropy))),
        "mean_abs_diff": float(np.mean(np.abs(s - t))),
        "n": int(s.size),
    }


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------

CALIBRATION_BINS = 10
_WILSON_Z = 1.959963984540054  # two-sided 95 %


def equal_mass_bins(proba: ArrayLike, n_bins: int = CALIBRATION_BINS) -> NDArray[np.int64]:
    """Bin index of each row: ``n_bins`` bins of (nearly) equal row counts, ties kept together.

    Rows are ranked by probability; a row whose 0-based rank position is ``i`` (a group of tied
    probabilities taking the position of its first member) falls in bin ``floor(n_bins * i / n)``.
    Without ties the bins are contiguous and their sizes differ by at most one; tied rows never
    straddle two bins (a constant forecast is one bin), so the result does not depend on row order.
    Bins can be empty (ties, or fewer rows than bins).
    """
    p = _proba(proba, "proba")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    first = np.searchsorted(np.sort(p, kind="stable"), p, side="left")
    return (n_bins * first) // max(p.size, 1)


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of ``k`` successes in ``n`` (Wilson 1927); always holds ``k / n``.

    The bounds are pinned to ``k / n`` where rounding would push them past it (e.g. ``k = 0``).
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    z2 = _WILSON_Z**2
    centre = (k + z2 / 2.0) / (n + z2)
    half = _WILSON_Z / (n + z2) * float(np.sqrt(k * (n - k) / n + z2 / 4.0))
    rate = k / n
    return max(0.0, min(centre - half, rate)), min(1.0, max(centre + half, rate))


def reliability_diagram(
    proba: ArrayLike, labels: ArrayLike, n_bins: int = CALIBRATION_BINS
) -> list[dict[str, Any]]:
    """Reliability-diagram data: per non-empty :func:`equal_mass_bins` bin, forecast vs outcome.

    Each bin gives ``bin``, ``n``, ``proba_min``/``proba_max``, ``mean_proba`` (the average
    forecast), ``observed_rate`` (the share of label 1) and its 95 % Wilson score interval
    ``observed_low``/``observed_high``. The interval treats rows as independent; overlapping
    forward labels are not, so it is too narrow and serves as a visual guide only. A calibrated
    forecast has ``observed_rate ~ mean_proba`` in every bin.
    """
    p, y = _hard_labels(proba, labels)
    bins = equal_mass_bins(p, n_bins)
    out: list[dict[str, Any]] = []
    for b in range(n_bins):
        mask = bins == b
        n = int(mask.sum())
        if not n:
            continue
        k = int(y[mask].sum())
        low, high = wilson_interval(k, n)
        out.append(
            {
                "bin": b,
                "n": n,
                "proba_min": float(p[mask].min()),
                "proba_max": float(p[mask].max()),
                "mean_proba": float(p[mask].mean()),
                "observed_rate": k / n,
                "observed_low": low,
                "observed_high": high,
            }
        )
    return out


def expected_calibration_error(proba: ArrayLike, labels: ArrayLike, n_bins: int = CALIBRATION_BINS) -> float:
    """ECE over ``n_bins`` equal-mass bins (:func:`equal_mass_bins`): ``sum_b (n_b / n) |mean p_b - rate_b|``.

    The row-weighted gap between the average forecast and the observed frequency of label 1 in
    each bin (Naeini, Cooper & Hauskrecht 2015). 0 for a perfectly calibrated forecast on
    infinite data; on ~10 rows a bin, sampling noise alone gives about ``0.8 sqrt(p (1 - p) / n_b)``
    per bin, so compare ECEs on the same rows rather than against 0.
    """
    bins = reliability_diagram(proba, labels, n_bins)
    total = sum(b["n"] for b in bins)
    return float(sum(b["n"] * abs(b["mean_proba"] - b["observed_rate"]) for b in bins) / total)


def brier(proba: ArrayLike, labels: ArrayLike) -> float:
    """Brier score ``mean((proba - label)^2)`` (Brier 1950), as in :func:`classification_metrics`."""
    p, y = _hard_labels(proba, labels)
    return float(np.mean((p - y) ** 2))
