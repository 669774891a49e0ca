"""The student: a small model distilled from the teacher's out-of-fold probabilities.

It trains on soft labels (the teacher's P(label = 1)) rather than hard 0/1 labels, so it learns
the teacher's confidence, and it is scored on a purged time holdout for fidelity to the teacher
and for accuracy against the true labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from lightgbm import LGBMRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sensequant_assets.ml.evaluation import accuracy, auc, fidelity
from sensequant_assets.ml.features import MODEL_FEATURES
from sensequant_assets.ml.splits import train_val_split
from sensequant_assets.ml.teacher import TooFewRowsError
from sensequant_assets.ml.threads import single_threaded_blas

STUDENT_KINDS = ("logistic", "lightgbm")


@dataclass(frozen=True)
class StudentParams:
    """Student hyper-parameters; ``kind`` picks logistic regression or a small LightGBM."""

    kind: str = "logistic"
    C: float = 1.0
    holdout_fraction: float = 0.2
    seed: int = 42
    lgbm_n_estimators: int = 50
    lgbm_num_leaves: int = 7
    lgbm_learning_rate: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in STUDENT_KINDS:
            raise ValueError(f"student kind must be one of {STUDENT_KINDS}, got {self.kind!r}")
        if self.C <= 0:
            raise ValueError(f"C must be > 0, got {self.C}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.lgbm_n_estimators < 1 or self.lgbm_num_leaves < 2 or self.lgbm_learning_rate <= 0:
            raise ValueError("lgbm_n_estimators >= 1, lgbm_num_leaves >= 2, lgbm_learning_rate > 0")

    def lightgbm_params(self) -> dict[str, Any]:
        """Keyword arguments of the LightGBM student (cross-entropy on probabilities)."""
        return {
            "objective": "cross_entropy",
            "n_estimators": self.lgbm_n_estimators,
            "num_leaves": self.lgbm_num_leaves,
            "learning_rate": self.lgbm_learning_rate,
            "random_state": self.seed,
            "n_jobs": 1,
            "deterministic": True,
            "force_col_wise": True,
            "device_type": "cpu",
            "verbose": -1,
        }

    def logistic_params(self) -> dict[str, Any]:
        """Keyword arguments of the LogisticRegression inside the student pipeline."""
        return {"C": self.C, "max_iter": 1000, "random_state": self.seed}


class SoftLabelLGBMStudent:
    """LGBMRegressor with the cross-entropy objective, exposing ``predict_proba`` like a classifier.

    LightGBM's classifier only accepts hard classes; the regressor with ``cross_entropy``
    accepts targets in [0, 1] and predicts probabilities, which is what distillation needs.
    """

    classes_ = np.array([0, 1])

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = dict(params)
        self.regressor = LGBMRegressor(**self.params)

    def fit(self, x: pd.DataFrame, soft_labels: np.ndarray) -> SoftLabelLGBMStudent:
        self.regressor.fit(x, soft_labels)
        return self

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        p = np.clip(np.asarray(self.regressor.predict(x), dtype="float64"), 0.0, 1.0)
        return np.column_stack([1.0 - p, p])


@dataclass
class StudentResult:
    """The student fitted on all rows and its holdout metrics (fitted on the head only)."""

    model: Any
    metrics: dict[str, Any]
    train_rows: int
    holdout_rows: int
    params_used: dict[str, Any]


def _fit_student(params: StudentParams, x: pd.DataFrame, soft: np.ndarray) -> Any:
    if params.kind == "lightgbm":
        return SoftLabelLGBMStudent(params.lightgbm_params()).fit(x, soft)
    # Exact soft-label logistic regression: the log-likelihood of a soft target p equals that of
    # the row seen once as y=1 with weight p and once as y=0 with weight 1-p.
    n = len(x)
    x2 = pd.concat([x, x], ignore_index=True)
    y2 = np.concatenate([np.ones(n, dtype="int64"), np.zeros(n, dtype="int64")])
    w2 = np.concatenate([soft, 1.0 - soft])
    single_threaded_blas()
    model = Pipeline(
        [
            ("scaler", StandardScaler()),
            ("logisticregression", LogisticRegression(**params.logistic_params())),
        ]
    )
    model.fit(x2, y2, logisticregression__sample_weight=w2)
    return model


def predict_proba(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """P(label = 1) of a teacher or student model for the MODEL_FEATURES columns of ``frame``."""
    x = frame[MODEL_FEATURES].astype("float64")
    return np.asarray(model.predict_proba(x), dtype="float64")[:, 1]


def train_student(
    frame: pd.DataFrame, soft_labels: np.ndarray, params: StudentParams, horizon: int
) -> StudentResult:
    """Distil the teacher's soft labels; score fidelity and accuracy on a purged time holdout.

    ``soft_labels`` must be out-of-fold teacher probabilities aligned with ``frame`` rows.
    """
    n = len(frame)
    soft = np.asarray(soft_labels, dtype="float64").reshape(-1)
    if soft.shape[0] != n:
        raise ValueError(f"soft_labels has {soft.shape[0]} values for {n} rows")
    if not np.all(np.isfinite(soft)) or soft.min(initial=0.0) < 0 or soft.max(initial=0.0) > 1:
        raise ValueError("soft_labels must be finite probabilities in [0, 1]")
    symbol = str(frame["symbol"].iloc[0]) if "symbol" in frame.columns and n else "?"
    window = (
        f"{pd.Timestamp(frame['ts'].iloc[0]).date()}..{pd.Timestamp(frame['ts'].iloc[-1]).date()}"
        if "ts" in frame.columns and n
        else "?"
    )
    minimum = 2 * horizon + 2
    if n < minimum:
        raise TooFewRowsError(symbol, window, n, minimum, reason="too few rows for a holdout")
    try:
        head, holdout = train_val_split(n, params.holdout_fraction, gap=horizon)
    except ValueError as exc:
        raise TooFewRowsError(symbol, window, n, minimum, reason=str(exc)) from exc

    x = frame[MODEL_FEATURES].astype("float64").reset_index(drop=True)
    y = frame["label"].to_numpy().astype("int64")

    head_model = _fit_student(params, x.iloc[head], soft[head])
    student_p = np.asarray(head_model.predict_proba(x.iloc[holdout]), dtype="float64")[:, 1]
    teacher_p = soft[holdout]
    fid = fidelity(student_p, teacher_p)
    metrics: dict[str, Any] = {
        "fidelity_agreement": fid["agreement"],
        # The distillation loss: cross-entropy of the student against the teacher's soft labels.
        "fidelity_logloss": fid["cross_entropy"],
        "holdout_accuracy": accuracy(student_p, y[holdout]),
        "holdout_auc": auc(student_p, y[holdout]),
        "teacher_holdout_accuracy": accuracy(teacher_p, y[holdout]),
        "teacher_holdout_auc": auc(teacher_p, y[holdout]),
    }
    model = _fit_student(params, x, soft)
    params_used = {
        **asdict(params),
        "model_params": params.lightgbm_params() if params.kind == "lightgbm" else params.logistic_params(),
        "holdout_gap": horizon,
        "horizon": horizon,
        "soft_labels": "teacher out-of-fold probabilities",
    }
    return StudentResult(
        model=model,
        metrics=metrics,
        train_rows=len(head),
        holdout_rows=len(holdout),
        params_used=params_used,
    )
