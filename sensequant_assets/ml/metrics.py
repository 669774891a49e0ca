"""Metric helpers shared by teacher and student, returning plain floats so JSON stays exact.

Kept in one place so every reported number is computed the same way, from data.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

LOGLOSS_EPS: float = 1e-15


def _as_1d(values: object, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype="float64").reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def safe_auc(y_true: object, proba: object) -> float | None:
    """ROC AUC, or None when only one class is present (AUC is undefined, not 0.5)."""
    y = _as_1d(y_true, "y_true")
    p = _as_1d(proba, "proba")
    if y.size == 0 or np.unique(y).size < 2:
        return None
    return float(roc_auc_score(y, p))


def log_loss(targets: object, proba: object, eps: float = LOGLOSS_EPS) -> float:
    """Mean binary cross-entropy; targets may be soft (in [0, 1]); proba is clipped to [eps, 1-eps]."""
    t = _as_1d(targets, "targets")
    p = np.clip(_as_1d(proba, "proba"), eps, 1.0 - eps)
    if t.shape != p.shape:
        raise ValueError(f"targets {t.shape} and proba {p.shape} differ in length")
    if t.size == 0:
        raise ValueError("log loss of zero rows is undefined")
    return float(-np.mean(t * np.log(p) + (1.0 - t) * np.log1p(-p)))


def accuracy(y_true: object, y_pred: object) -> float:
    """Share of equal labels."""
    y = _as_1d(y_true, "y_true")
    yp = _as_1d(y_pred, "y_pred")
    if y.size == 0:
        raise ValueError("accuracy of zero rows is undefined")
    return float(np.mean(y == yp))


def agreement(proba_a: object, proba_b: object, threshold: float = 0.5) -> float:
    """Share of rows where two probability vectors fall on the same side of ``threshold``."""
    a = _as_1d(proba_a, "proba_a") > threshold
    b = _as_1d(proba_b, "proba_b") > threshold
    if a.size == 0:
        raise ValueError("agreement of zero rows is undefined")
    return float(np.mean(a == b))


def classification_metrics(y_true: object, proba: object, threshold: float = 0.5) -> dict[str, float | None]:
    """accuracy, precision, recall, f1 (0 when undefined) and AUC (None for one class)."""
    y = _as_1d(y_true, "y_true").astype("int64")
    p = _as_1d(proba, "proba")
    pred = (p > threshold).astype("int64")
    true_pos = int(np.sum((pred == 1) & (y == 1)))
    pred_pos = int(np.sum(pred == 1))
    actual_pos = int(np.sum(y == 1))
    precision = true_pos / pred_pos if pred_pos else 0.0
    recall = true_pos / actual_pos if actual_pos else 0.0
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "accuracy": accuracy(y, pred),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "auc": safe_auc(y, p),
    }
