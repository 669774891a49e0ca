"""The teacher: a LightGBM classifier per symbol-window, honest validation and out-of-fold labels.

Validation is a time-ordered holdout purged by the label horizon, with no early stopping and
nothing tuned on it, so the reported validation numbers are out-of-sample. The student's soft
labels come from purged k-fold out-of-fold predictions, never from in-sample fits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier

from sensequant_assets.ml.evaluation import accuracy, auc, classification_metrics, log_loss
from sensequant_assets.ml.features import MODEL_FEATURES
from sensequant_assets.ml.splits import purged_kfold, train_val_split


class TooFewRowsError(ValueError):
    """A window cannot train a model: too few usable rows, or only one label class.

    Callers treat it as "skip this window", not as a failure; the message names the symbol,
    the window, the count and the minimum so the skip is explainable.
    """

    def __init__(self, symbol: str, window: str, rows: int, min_rows: int, reason: str | None = None) -> None:
        self.symbol = symbol
        self.window = window
        self.rows = rows
        self.min_rows = min_rows
        self.reason = reason
        detail = reason or f"{rows} usable rows, at least {min_rows} needed"
        super().__init__(
            f"{symbol} window {window}: cannot train ({detail}; rows={rows}, minimum={min_rows})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the exception picklable (run workers ship errors between processes).
        return (type(self), (self.symbol, self.window, self.rows, self.min_rows, self.reason))


def check_rows(frame: pd.DataFrame, min_rows: int, symbol: str, window_label: str) -> None:
    """Raise TooFewRowsError when ``frame`` has fewer than ``min_rows`` rows or one label class."""
    rows = len(frame)
    if rows < min_rows:
        raise TooFewRowsError(symbol, window_label, rows, min_rows)
    classes = sorted(pd.unique(frame["label"]).tolist()) if rows else []
    if len(classes) < 2:
        raise TooFewRowsError(
            symbol,
            window_label,
            rows,
            min_rows,
            reason=f"only one label class present ({classes})",
        )


@dataclass(frozen=True)
class TeacherParams:
    """Teacher hyper-parameters; every field reaches the model or the split (see params_used)."""

    n_estimators: int = 100
    max_depth: int = 5
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 10
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    reg_lambda: float = 0.0
    seed: int = 42
    num_threads: int = 1
    val_fraction: float = 0.2
    n_folds: int = 5

    def __post_init__(self) -> None:
        if self.n_estimators < 1:
            raise ValueError(f"n_estimators must be >= 1, got {self.n_estimators}")
        if self.num_leaves < 2:
            raise ValueError(f"num_leaves must be >= 2, got {self.num_leaves}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 < self.subsample <= 1.0 or not 0.0 < self.colsample_bytree <= 1.0:
            raise ValueError("subsample and colsample_bytree must be in (0, 1]")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {self.n_folds}")
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")

    def lightgbm_params(self) -> dict[str, Any]:
        """Exactly the keyword arguments given to LGBMClassifier (CPU, deterministic)."""
        return {
            "objective": "binary",
            "n_estimators": self.n_estimators,
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "subsample": self.subsample,
            # LightGBM ignores subsample unless bagging is switched on with a frequency.
            "subsample_freq": 1 if self.subsample < 1.0 else 0,
            "colsample_bytree": self.colsample_bytree,
            "reg_lambda": self.reg_lambda,
            "random_state": self.seed,
            "n_jobs": self.num_threads,
            "deterministic": True,
            "force_col_wise": True,
            "device_type": "cpu",
            "verbose": -1,
        }

    def native_params(self) -> tuple[dict[str, Any], int]:
        """:meth:`lightgbm_params` for native ``lightgbm.train``: (params, boosting rounds).

        Derived from :meth:`lightgbm_params`, not a second copy, so the two cannot drift. The only
        translation is ``n_estimators`` -> ``num_boost_round``: LightGBM's native config reads the
        scikit-learn names as aliases (random_state = seed, n_jobs = num_threads, subsample =
        bagging_fraction, subsample_freq = bagging_freq, colsample_bytree = feature_fraction,
        reg_lambda = lambda_l2, min_child_samples = min_data_in_leaf), and the wrapper's defaults
        for what we leave unset (boosting_type, reg_alpha, min_child_weight, min_split_gain,
        subsample_for_bin, metric) equal the native ones. test_teacher_fast_fit checks that the
        resolved configs and the trees are identical to an ``LGBMClassifier`` fit.
        """
        native = self.lightgbm_params()
        rounds = int(native.pop("n_estimators"))
        return native, rounds


@dataclass
class TeacherResult:
    """The final model (fitted on all rows), honest metrics and the out-of-fold soft labels."""

    model: LGBMClassifier
    metrics: dict[str, Any]
    importance: pd.DataFrame
    oof_proba: np.ndarray
    train_rows: int
    val_rows: int
    gap_rows: int
    params_used: dict[str, Any]


def _window_label(frame: pd.DataFrame) -> str:
    if "ts" in frame.columns and len(frame):
        return f"{pd.Timestamp(frame['ts'].iloc[0]).date()}..{pd.Timestamp(frame['ts'].iloc[-1]).date()}"
    return "?"


def _symbol(frame: pd.DataFrame) -> str:
    if "symbol" in frame.columns and len(frame):
        return str(frame["symbol"].iloc[0])
    return "?"


def _fit_booster(
    native: dict[str, Any],
    rounds: int,
    x_train: np.ndarray,
    y_train: np.ndarray,
    feature_names: list[str] | str = "auto",
) -> lgb.Booster:
    """The booster ``LGBMClassifier(**lightgbm_params()).fit`` would build, without its overhead.

    The wrapper deep-copies its params, converts the frame and, through
    ``keep_training_booster=False``, serialises and reloads the booster after every fit; here
    ``x_train`` is already float64 and the booster is kept as trained. ``y_train`` must hold
    two classes; it is encoded like the wrapper does (sorted classes -> 0, 1).
    """
    classes = np.unique(y_train)
    if classes.size != 2:
        raise ValueError(f"binary labels expected, got classes {classes.tolist()}")
    labels = np.searchsorted(classes, y_train)
    train_set = lgb.Dataset(x_train, label=labels, feature_name=feature_names, params=native)
    return lgb.train(native, train_set, num_boost_round=rounds, keep_training_booster=True)


def _fit_predict(
    native: dict[str, Any], rounds: int, x_train: np.ndarray, y_train: np.ndarray, x_pred: np.ndarray
) -> tuple[np.ndarray, bool]:
    """P(label = 1) for ``x_pred``; the training base rate when training has one class or no rows.

    ``native, rounds`` come from :meth:`TeacherParams.native_params`; the probabilities equal
    ``LGBMClassifier(**lightgbm_params()).fit(x_train, y_train).predict_proba(x_pred)[:, 1]``
    bit for bit, at a fraction of the cost (the model is discarded, so it need not be one).
    Returns the probabilities and whether the base-rate fallback was used.
    """
    if y_train.size == 0:
        return np.full(len(x_pred), 0.5), True
    if np.unique(y_train).size < 2:
        return np.full(len(x_pred), float(np.mean(y_train))), True
    booster = _fit_booster(native, rounds, x_train, y_train)
    # Like the wrapper's predict_proba, hand the params (num_threads among them) to the predictor.
    proba = booster.predict(x_pred, **native)
    return np.asarray(proba, dtype="float64"), False


def feature_importance(model: LGBMClassifier) -> pd.DataFrame:
    """Total split gain per feature, rank 1 = largest (ties keep feature order)."""
    gain = model.booster_.feature_importance(importance_type="gain").astype("float64")
    table = pd.DataFrame({"feature": list(model.booster_.feature_name()), "importance": gain})
    table = table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    return table


def train_teacher(frame: pd.DataFrame, params: TeacherParams, horizon: int) -> TeacherResult:
    """Fit, validate on a purged time holdout, refit on all rows, and predict out of fold.

    ``frame`` is a :func:`build_dataset` frame in time order. Raises TooFewRowsError when the
    frame has one label class (nothing to learn) or too few rows for the split and folds.
    """
    symbol, window = _symbol(frame), _window_label(frame)
    n = len(frame)
    minimum = max(params.n_folds, 2 * horizon + 2)
    if n < minimum:
        raise TooFewRowsError(symbol, window, n, minimum, reason="too few rows for split and folds")
    check_rows(frame, minimum, symbol, window)
    x = frame[MODEL_FEATURES].astype("float64").reset_index(drop=True)
    x_np = np.ascontiguousarray(x.to_numpy(dtype="float64"))  # converted once, for the six auxiliary fits
    y = frame["label"].to_numpy().astype("int64")
    lgbm_params = params.lightgbm_params()
    native, rounds = params.native_params()

    try:
        train_idx, val_idx = train_val_split(n, params.val_fraction, gap=horizon)
    except ValueError as exc:
        raise TooFewRowsError(symbol, window, n, minimum, reason=str(exc)) from exc
    gap_rows = int(val_idx[0] - train_idx[-1] - 1)

    # Split model: fitted on the head only, scored once on the purged tail.
    x_fit = x_np[np.concatenate([train_idx, val_idx])]
    proba_fit, split_fallback = _fit_predict(native, rounds, x_np[train_idx], y[train_idx], x_fit)
    train_proba, val_proba = proba_fit[: len(train_idx)], proba_fit[len(train_idx) :]
    val = classification_metrics(val_proba, y[val_idx])

    # Out-of-fold probabilities: each row predicted by a model that never saw its label
    # neighbourhood (purge and embargo of `horizon` rows around each test block).
    oof = np.empty(n, dtype="float64")
    constant_folds = 0
    for fold_train, fold_test in purged_kfold(n, params.n_folds, gap=horizon):
        proba, used_fallback = _fit_predict(native, rounds, x_np[fold_train], y[fold_train], x_np[fold_test])
        oof[fold_test] = proba
        constant_folds += int(used_fallback)

    # The kept model stays an LGBMClassifier (saved, explained and typed as one downstream).
    final = LGBMClassifier(**lgbm_params)
    final.fit(x, y)

    metrics: dict[str, Any] = {
        "train_accuracy": accuracy(train_proba, y[train_idx]),
        "val_accuracy": val["accuracy"],
        "val_precision": val["precision"],
        "val_recall": val["recall"],
        "val_f1": val["f1"],
        "val_auc": val["auc"],
        "oof_auc": auc(oof, y),
        "oof_logloss": log_loss(oof, y),
        "val_base_rate_fallback": split_fallback,
        "oof_base_rate_folds": constant_folds,
    }
    params_used = {
        **lgbm_params,
        "val_fraction": params.val_fraction,
        "n_folds": params.n_folds,
        "purge_gap": horizon,
        "horizon": horizon,
        "early_stopping": False,
        "teacher_params": asdict(params),
    }
    return TeacherResult(
        model=final,
        metrics=metrics,
        importance=feature_importance(final),
        oof_proba=oof,
        train_rows=len(train_idx),
        val_rows=len(val_idx),
        gap_rows=gap_rows,
        params_used=params_used,
    )
