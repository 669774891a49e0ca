"""The student: a small model distilled from the teacher's out-of-fold probabilities, then calibrated.

It trains on soft labels (the teacher's P(label = 1)) rather than hard 0/1 labels, so it learns
the teacher's confidence, and it is scored on a purged time holdout for fidelity to the teacher
and for accuracy against the true labels.

The teacher's confidence is not the market's: fitted on ~120 rows, the distilled student's
probabilities were far too extreme out of sample (log loss above the base rate's). So the stored
model is a :class:`CalibratedStudent`: the distilled model followed by a strictly increasing map
of its log-odds to P(label = 1), fitted against the TRUE labels on the window's out-of-sample
evidence (:func:`calibrate_student`) and shrunk towards the window's base rate when that evidence
is weak (:func:`fit_platt`).
Being strictly increasing, the map leaves every rank statistic (AUC, information coefficient) of
the student unchanged; it only says how far to trust its ranking.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from lightgbm import LGBMRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sensequant_assets.ml.evaluation import accuracy, auc, fidelity
from sensequant_assets.ml.features import feature_frame
from sensequant_assets.ml.splits import purged_kfold, train_val_split
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
    # Calibration (see calibrate_student): purged folds of the student's cross-fitted scores, the
    # prior sd of the slope and intercept in log-odds, and the floor that keeps the map increasing.
    calibration_folds: int = 5
    calibration_prior_sd: float = 0.25
    calibration_min_slope: float = 1e-3

    def __post_init__(self) -> None:
        if self.kind not in STUDENT_KINDS:
            raise ValueError(f"student kind must be one of {STUDENT_KINDS}, got {self.kind!r}")
        if self.C <= 0:
            raise ValueError(f"C must be > 0, got {self.C}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.lgbm_n_estimators < 1 or self.lgbm_num_leaves < 2 or self.lgbm_learning_rate <= 0:
            raise ValueError("lgbm_n_estimators >= 1, lgbm_num_leaves >= 2, lgbm_learning_rate > 0")
        if self.calibration_folds < 2:
            raise ValueError(f"calibration_folds must be >= 2, got {self.calibration_folds}")
        if not (math.isfinite(self.calibration_prior_sd) and self.calibration_prior_sd > 0):
            raise ValueError(f"calibration_prior_sd must be > 0, got {self.calibration_prior_sd}")
        if not (math.isfinite(self.calibration_min_slope) and self.calibration_min_slope > 0):
            raise ValueError(f"calibration_min_slope must be > 0, got {self.calibration_min_slope}")

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

    def decision_function(self, x: pd.DataFrame) -> np.ndarray:
        """The raw score (log-odds) before the sigmoid: unclipped, so it keeps every rank."""
        return np.asarray(self.regressor.predict(x, raw_score=True), dtype="float64")


# Beyond |35| log-odds the sigmoid is within 1e-15 of 0 or 1: clip there so that calibrated
# probabilities stay strictly inside (0, 1) (float64 rounds sigmoid(37) to exactly 1.0).
_MAX_LOG_ODDS = 35.0


def _sigmoid(eta: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    eta = np.asarray(eta, dtype="float64")
    out = np.empty_like(eta)
    pos = eta >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-eta[pos]))
    e = np.exp(eta[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def raw_score(model: Any, x: pd.DataFrame) -> np.ndarray:
    """An uncalibrated model's log-odds of label = 1 (its decision function where it has one).

    Taken before any sigmoid so that saturated probabilities (1.0 for every log-odds above ~37)
    do not tie rows the model still ranks apart.
    """
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(x), dtype="float64").reshape(-1)
    p = np.clip(np.asarray(model.predict_proba(x), dtype="float64")[:, 1], 1e-15, 1.0 - 1e-15)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class PlattCalibration:
    """``P(label = 1 | score s) = sigmoid(intercept + slope * (s - center) / scale)``.

    ``slope`` is in log-odds per standard deviation (``scale``) of the raw score over the training
    window and is always > 0, so the map is strictly increasing; ``intercept`` is the log-odds at
    the mean raw score ``center``. Plain floats: picklable, JSON-able, deterministic.
    """

    slope: float
    intercept: float
    center: float
    scale: float

    def log_odds(self, score: np.ndarray) -> np.ndarray:
        z = (np.asarray(score, dtype="float64") - self.center) / self.scale
        return np.clip(self.intercept + self.slope * z, -_MAX_LOG_ODDS, _MAX_LOG_ODDS)

    def __call__(self, score: np.ndarray) -> np.ndarray:
        """Calibrated P(label = 1), strictly inside (0, 1)."""
        return _sigmoid(self.log_odds(score))


def _penalised_nll(
    z: np.ndarray, y: np.ndarray, theta: np.ndarray, mode: np.ndarray, lam: float, weight: float
) -> float:
    eta = theta[0] + theta[1] * z
    nll = weight * float(np.sum(np.logaddexp(0.0, eta) - y * eta))
    return nll + 0.5 * lam * float(np.sum((theta - mode) ** 2))


def _newton(
    z: np.ndarray,
    y: np.ndarray,
    theta: np.ndarray,
    mode: np.ndarray,
    lam: float,
    weight: float,
    free: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the penalised negative log-likelihood over the ``free`` parameters (Newton, backtracking).

    Strictly convex (the penalty adds ``lam`` to the Hessian), so the minimum is unique and Newton
    with an Armijo line search converges to it from anywhere; fixed iteration rules keep it
    deterministic. Returns the minimiser and the Hessian there.
    """
    design = np.column_stack([np.ones_like(z), z])
    hess = np.eye(2) * lam
    for _ in range(100):
        p = _sigmoid(theta[0] + theta[1] * z)
        grad = weight * (design.T @ (p - y)) + lam * (theta - mode)
        w = weight * p * (1.0 - p)
        hess = design.T @ (design * w[:, None]) + lam * np.eye(2)
        step = np.zeros(2)
        step[free] = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
        current, decrease = _penalised_nll(z, y, theta, mode, lam, weight), float(grad @ step)
        t = 1.0
        while (
            t > 1e-10
            and _penalised_nll(z, y, theta - t * step, mode, lam, weight) > current - 1e-4 * t * decrease
        ):
            t *= 0.5
        theta = theta - t * step
        if np.max(np.abs(t * step)) < 1e-10:
            break
    return theta, hess


def fit_platt(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    base_rate: float,
    prior_sd: float = 0.25,
    min_slope: float = 1e-3,
    row_weight: float = 1.0,
) -> tuple[PlattCalibration, dict[str, float]]:
    """Platt scaling of out-of-sample raw scores against true 0/1 labels, shrunk towards the base rate.

    The maximum a posteriori fit of ``y ~ Bernoulli(sigmoid(c + a z))`` on the standardised score
    ``z`` under independent Gaussian priors ``a ~ N(0, prior_sd^2)`` and
    ``c ~ N(logit(base_rate), prior_sd^2)``, subject to ``a >= min_slope``: with no evidence (no
    rows, or a score unrelated to the labels) it predicts the base rate; with n rows the slope is
    shrunk by about ``m p(1-p) / (m p(1-p) + 1 / prior_sd^2)``, ``m = n * row_weight`` the
    effective number of rows. ``row_weight = 1 / horizon`` counts overlapping forward labels as
    the ~n / horizon independent outcomes they are, rather than as n. Nothing assumes a particular
    base rate; one of exactly 0 or 1 is moved half a row inwards only so that its logit is finite.

    Returns the map and its diagnostics: ``slope_sd`` (posterior sd of the slope, from the
    Hessian), ``rows`` and ``base_rate``.
    """
    s = np.asarray(scores, dtype="float64").reshape(-1)
    y = np.asarray(labels, dtype="float64").reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) must have the same length")
    if not np.all(np.isfinite(s)) or not np.all(np.isin(y, (0.0, 1.0))):
        raise ValueError("scores must be finite and labels 0 or 1")
    if not (math.isfinite(base_rate) and 0.0 <= base_rate <= 1.0):
        raise ValueError(f"base_rate must be a probability, got {base_rate!r}")
    if not prior_sd > 0 or not min_slope > 0 or not row_weight > 0:
        raise ValueError("prior_sd, min_slope and row_weight must be > 0")
    n = s.size
    # A base rate of exactly 0 or 1 (one class) becomes half a row from it: a finite logit.
    edge = 0.5 / (n + 1)
    rate = base_rate if 0.0 < base_rate < 1.0 else min(max(base_rate, edge), 1.0 - edge)
    center = float(s.mean()) if n else 0.0
    spread = float(s.std()) if n else 0.0
    scale = spread if spread > 1e-12 else 1.0
    z = (s - center) / scale
    lam = 1.0 / prior_sd**2
    mode = np.array([math.log(rate / (1.0 - rate)), 0.0])
    theta, hess = _newton(z, y, mode.copy(), mode, lam, row_weight, np.array([True, True]))
    if theta[1] < min_slope:
        # Convex objective: if the unconstrained optimum violates the bound, the constrained one
        # lies on it; optimise the intercept with the slope held at the floor.
        start = np.array([theta[0], min_slope])
        theta, hess = _newton(z, y, start, mode, lam, row_weight, np.array([True, False]))
    calibration = PlattCalibration(
        slope=float(theta[1]), intercept=float(theta[0]), center=center, scale=float(scale)
    )
    slope_sd = float(math.sqrt(np.linalg.inv(hess)[1, 1]))
    return calibration, {"slope_sd": slope_sd, "rows": int(n), "base_rate": float(rate)}


class CalibratedStudent:
    """The distilled student followed by its calibration map: what is stored and served.

    ``predict_proba`` returns calibrated probabilities (evaluation, backtest signal, briefing all
    see these); ``predict_raw_proba`` and ``decision_function`` expose the distilled model itself,
    for fidelity to the teacher and for before/after comparisons.
    """

    classes_ = np.array([0, 1])

    def __init__(self, student: Any, calibration: PlattCalibration) -> None:
        self.student = student
        self.calibration = calibration

    def decision_function(self, x: pd.DataFrame) -> np.ndarray:
        """The distilled model's raw log-odds (uncalibrated)."""
        return raw_score(self.student, x)

    def predict_raw_proba(self, x: pd.DataFrame) -> np.ndarray:
        """The distilled model's own ``(n, 2)`` probabilities (uncalibrated)."""
        return np.asarray(self.student.predict_proba(x), dtype="float64")

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        p = self.calibration(self.decision_function(x))
        return np.column_stack([1.0 - p, p])


@dataclass
class StudentResult:
    """The calibrated student fitted on all rows and its holdout metrics (fitted on the head only)."""

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
    """P(label = 1) of a teacher or student model for the MODEL_FEATURES columns of ``frame``.

    For a :class:`CalibratedStudent` these are the calibrated probabilities.
    """
    x = feature_frame(frame)
    return np.asarray(model.predict_proba(x), dtype="float64")[:, 1]


def predict_raw_proba(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """The uncalibrated P(label = 1) of a student (the model's own for a model without calibration)."""
    x = feature_frame(frame)
    raw = getattr(model, "predict_raw_proba", model.predict_proba)
    return np.asarray(raw(x), dtype="float64")[:, 1]


def standardized_score(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """The student's ranking score, comparable across windows: raw log-odds in training-window sd.

    A :class:`CalibratedStudent` standardises its raw log-odds by the centre and scale of its own
    training window (known at the window's start, so free of look-ahead); each window's student
    is then on the same footing, which pooled rank statistics across windows need. Calibrated
    probabilities are not: shrinking each window's slope toward 0 compresses its spread, so the
    windows' intercepts would dominate a pooled ranking. Other models give their log-odds.
    """
    x = feature_frame(frame)
    calibration = getattr(model, "calibration", None)
    if isinstance(calibration, PlattCalibration):
        return (model.decision_function(x) - calibration.center) / calibration.scale
    return raw_score(model, x)


def crossfit_scores(
    params: StudentParams, x: pd.DataFrame, soft: np.ndarray, horizon: int, n_folds: int
) -> np.ndarray:
    """Out-of-sample raw scores of the student over the window: purged k-fold cross-fitting.

    Each contiguous time block is scored by a student fitted on the rest, minus ``horizon`` rows
    on both sides of the block (:func:`~sensequant_assets.ml.splits.purged_kfold`). NaN where a
    block has no training rows left (tiny windows).

    Not evidence about the labels: the soft labels of the training rows are the teacher's
    out-of-fold probabilities, made by teachers that were fitted on the scored block's labels, and
    through them the block's labels reach these scores (on no-signal data their in-window AUC
    averaged 0.71; see :func:`calibrate_student`). They measure how well the student tracks the
    teacher on rows it was not fitted to.
    """
    n = len(x)
    scores = np.full(n, np.nan)
    if n < 2:
        return scores
    for train, test in purged_kfold(n, min(n_folds, n), gap=horizon):
        if len(train) < 2:
            continue
        model = _fit_student(params, x.iloc[train], soft[train])
        scores[test] = raw_score(model, x.iloc[test])
    return scores


def _logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype="float64"), eps, 1.0 - eps)
    return np.log(q) - np.log1p(-q)


def calibrate_student(
    distilled: Any,
    params: StudentParams,
    x: pd.DataFrame,
    soft: np.ndarray,
    labels: np.ndarray,
    horizon: int,
) -> tuple[PlattCalibration, dict[str, Any]]:
    """The student's calibration map, from out-of-sample evidence of the window only.

    The evidence about the labels is the teacher's out-of-fold log-odds ``t`` (purged k-fold: the
    teacher that predicted a row never saw the labels around it): :func:`fit_platt` maps the
    standardised ``t`` to P(label = 1) against the true labels, with slope ``a``, each row
    weighted ``1 / horizon`` (overlapping labels). The student is a distillation of ``t``, so its
    standardised raw score ``z_s`` stands for ``E[z_t | z_s] = rho z_s`` standard deviations of
    the teacher, ``rho`` the correlation of the student's cross-fitted scores
    (:func:`crossfit_scores`) with ``t``. The student's map is therefore
    ``sigmoid(c + max(a rho, min_slope) z_s)``, ``z_s`` standardised by the distilled model's own
    scores over the window: as much trust as the teacher earned out of sample, discounted by how
    well the student follows the teacher on rows it did not fit.

    Why not Platt on the student's cross-fitted scores directly: those scores inherit the labels
    of the block they predict through the teacher's soft labels (see :func:`crossfit_scores`);
    fitted on them, the map trusted a no-signal student with slopes of 0.4-0.8 and lost to the
    base rate out of sample.

    The discount by ``rho`` is the cautious side: a student that keeps the teacher's signal and
    drops its noise deserves more (up to ``a / rho``), which the window cannot tell apart. On a
    strong planted signal the maps' slopes averaged ~0.05 where ~0.5 would have been best out of
    sample; on no-signal data they cost ~0.0005 nats a row against the base rate.
    """
    y = np.asarray(labels, dtype="float64")
    base_rate = float(y.mean())
    teacher_logit = _logit(soft)
    teacher_map, diagnostics = fit_platt(
        teacher_logit,
        y,
        base_rate=base_rate,
        prior_sd=params.calibration_prior_sd,
        min_slope=params.calibration_min_slope,
        row_weight=1.0 / max(horizon, 1),
    )
    cross = crossfit_scores(params, x, soft, horizon, params.calibration_folds)
    ok = np.isfinite(cross)
    rho = 0.0
    if ok.sum() >= 3 and np.std(cross[ok]) > 1e-12 and np.std(teacher_logit[ok]) > 1e-12:
        rho = float(np.corrcoef(cross[ok], teacher_logit[ok])[0, 1])
    own = raw_score(distilled, x)
    spread = float(np.std(own))
    calibration = PlattCalibration(
        slope=max(teacher_map.slope * max(rho, 0.0), params.calibration_min_slope),
        intercept=teacher_map.intercept,
        center=float(np.mean(own)),
        scale=spread if spread > 1e-12 else 1.0,
    )
    details = {
        "calibration_slope": calibration.slope,
        "calibration_intercept": calibration.intercept,
        "calibration_center": calibration.center,
        "calibration_scale": calibration.scale,
        "calibration_teacher_slope": teacher_map.slope,
        "calibration_teacher_slope_sd": diagnostics["slope_sd"],
        "calibration_student_teacher_corr": rho,
        "calibration_rows": diagnostics["rows"],
        "calibration_effective_rows": diagnostics["rows"] / max(horizon, 1),
        "calibration_base_rate": diagnostics["base_rate"],
    }
    return calibration, details


def train_student(
    frame: pd.DataFrame, soft_labels: np.ndarray, params: StudentParams, horizon: int
) -> StudentResult:
    """Distil the teacher's soft labels, calibrate against the true labels, score on a purged holdout.

    ``soft_labels`` must be out-of-fold teacher probabilities aligned with ``frame`` rows. The
    returned model is a :class:`CalibratedStudent` (the distilled model fitted on all rows plus
    :func:`calibrate_student`); the ``holdout_*`` and ``fidelity_*`` metrics
    are the distilled model's (fitted on the head only), the ``calibration_*`` ones describe the map.
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

    x = feature_frame(frame, keep_index=False)
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
    distilled = _fit_student(params, x, soft)
    calibration, details = calibrate_student(distilled, params, x, soft, y, horizon)
    metrics.update(details)
    model = CalibratedStudent(distilled, calibration)
    params_used = {
        **asdict(params),
        "model_params": params.lightgbm_params() if params.kind == "lightgbm" else params.logistic_params(),
        "holdout_gap": horizon,
        "horizon": horizon,
        "soft_labels": "teacher out-of-fold probabilities",
        "calibration": (
            "Platt map of the standardised raw log-odds: MAP fit of the teacher's out-of-fold log-odds "
            "against the true labels (rows weighted 1/horizon; N(0, prior_sd^2) on the slope, "
            "N(logit(base rate), prior_sd^2) on the intercept) times the correlation of the student's "
            f"{params.calibration_folds}-fold purged cross-fitted scores with the teacher; "
            "slope >= calibration_min_slope"
        ),
    }
    return StudentResult(
        model=model,
        metrics=metrics,
        train_rows=len(head),
        holdout_rows=len(holdout),
        params_used=params_used,
    )
