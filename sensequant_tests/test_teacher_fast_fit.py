"""The teacher's auxiliary fits (holdout and folds) use native LightGBM and match LGBMClassifier bit for bit.

``train_teacher`` fits its six discarded models with ``lightgbm.train`` instead of the scikit-learn
wrapper, only to save the wrapper's overhead. These tests pin that the saving changes nothing: the
same resolved LightGBM config, the same trees and the same probabilities, for the default params,
for bagging with feature subsampling and for two threads.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier

from sensequant_assets.ml.dataset import build_dataset
from sensequant_assets.ml.evaluation import accuracy, auc, classification_metrics, log_loss
from sensequant_assets.ml.features import MODEL_FEATURES, WARMUP_BARS
from sensequant_assets.ml.splits import purged_kfold, train_val_split
from sensequant_assets.ml.teacher import TeacherParams, _fit_booster, _fit_predict, train_teacher
from sensequant_assets.sources.synthetic import SyntheticSource
from sensequant_tests.test_ml_synthetic import make_bars

H = 7
THRESHOLD = 0.02

PARAMS = {
    "default": TeacherParams(),
    "bagging_2_threads": TeacherParams(subsample=0.7, colsample_bytree=0.6, num_threads=2),
    "custom": TeacherParams(
        n_estimators=30,
        max_depth=3,
        num_leaves=5,
        learning_rate=0.2,
        min_child_samples=4,
        reg_lambda=1.5,
        seed=9,
    ),
}


def _source_frame(symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    """One six-month partition (~125 rows) of the planted-signal source, as the teacher asset sees it."""
    source = SyntheticSource(seed=0, signal_ic=0.6246)
    bars = source.bars(symbol, start - dt.timedelta(days=210), end)
    return build_dataset(bars, start, end, H, THRESHOLD, symbol).frame


def _bars_frame(n_window: int, seed: int) -> pd.DataFrame:
    bars = make_bars(WARMUP_BARS + n_window, seed=seed, trend=True, drift=0.01)
    start, end = bars.index[WARMUP_BARS].date(), bars.index[-1].date()
    return build_dataset(bars, start, end, H, THRESHOLD, "RELIANCE").frame


@pytest.fixture(scope="module")
def frames() -> list[pd.DataFrame]:
    return [
        _source_frame("TCS", dt.date(2023, 1, 1), dt.date(2023, 6, 30)),
        _source_frame("INFY", dt.date(2022, 7, 1), dt.date(2022, 12, 31)),
        _bars_frame(160, seed=3),
    ]


def _xy(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    x = frame[MODEL_FEATURES].astype("float64").reset_index(drop=True)
    return x, x.to_numpy(), frame["label"].to_numpy().astype("int64")


def _splits(n: int, params: TeacherParams) -> list[tuple[np.ndarray, np.ndarray]]:
    """The holdout split (predicting train and validation rows) and every purged fold."""
    train_idx, val_idx = train_val_split(n, params.val_fraction, gap=H)
    return [(train_idx, np.concatenate([train_idx, val_idx])), *purged_kfold(n, params.n_folds, gap=H)]


def _wrapper_proba(params: TeacherParams, x: pd.DataFrame, y: np.ndarray, fit_idx, pred_idx) -> np.ndarray:
    model = LGBMClassifier(**params.lightgbm_params()).fit(x.iloc[fit_idx], y[fit_idx])
    return model.predict_proba(x.iloc[pred_idx])[:, 1]


def _without_pandas_metadata(model_string: str) -> str:
    # The wrapper's model string ends with the pandas categorical mapping of its DataFrame input
    # (`[]` vs `null` for numpy input): Python-side metadata, not part of the model.
    return "\n".join(line for line in model_string.splitlines() if not line.startswith("pandas_categorical:"))


@pytest.mark.parametrize("name", list(PARAMS))
def test_native_params_are_the_wrapper_params_minus_the_round_count(name: str) -> None:
    params = PARAMS[name]
    native, rounds = params.native_params()
    wrapper = params.lightgbm_params()
    assert rounds == params.n_estimators == wrapper.pop("n_estimators")
    assert native == wrapper
    assert native is not params.native_params()[0]  # a fresh dict per call: callers may not share it


@pytest.mark.parametrize("name", list(PARAMS))
def test_native_booster_is_the_wrapper_booster(name: str, frames: list[pd.DataFrame]) -> None:
    """Same resolved config (the model string's `parameters:` block) and the same trees."""
    params = PARAMS[name]
    native, rounds = params.native_params()
    for frame in frames:
        x, x_np, y = _xy(frame)
        wrapper = LGBMClassifier(**params.lightgbm_params()).fit(x, y).booster_.model_to_string()
        booster = _fit_booster(native, rounds, x_np, y, feature_names=list(MODEL_FEATURES))
        assert _without_pandas_metadata(booster.model_to_string()) == _without_pandas_metadata(wrapper)
        assert booster.num_trees() == params.n_estimators
    resolved = booster.model_to_string()
    assert f"[num_iterations: {params.n_estimators}]" in resolved
    assert f"[num_threads: {params.num_threads}]" in resolved
    assert f"[seed: {params.seed}]" in resolved
    assert f"[bagging_fraction: {params.subsample:g}]" in resolved
    assert f"[bagging_freq: {1 if params.subsample < 1.0 else 0}]" in resolved
    assert f"[feature_fraction: {params.colsample_bytree:g}]" in resolved
    assert f"[min_data_in_leaf: {params.min_child_samples}]" in resolved
    assert f"[lambda_l2: {params.reg_lambda:g}]" in resolved


@pytest.mark.parametrize("name", list(PARAMS))
def test_fit_predict_equals_lgbmclassifier_bitwise(name: str, frames: list[pd.DataFrame]) -> None:
    params = PARAMS[name]
    native, rounds = params.native_params()
    for frame in frames:
        x, x_np, y = _xy(frame)
        for fit_idx, pred_idx in _splits(len(frame), params):
            assert np.unique(y[fit_idx]).size == 2  # a real fit, not the base-rate fallback
            proba, fallback = _fit_predict(native, rounds, x_np[fit_idx], y[fit_idx], x_np[pred_idx])
            assert fallback is False
            assert proba.dtype == np.float64 and proba.shape == (len(pred_idx),)
            np.testing.assert_array_equal(proba, _wrapper_proba(params, x, y, fit_idx, pred_idx))


def test_bagging_params_change_the_probabilities(frames: list[pd.DataFrame]) -> None:
    """Control for the equality tests: the bagging case is a different model, not a no-op."""
    _, x_np, y = _xy(frames[0])
    plain = _fit_predict(*PARAMS["default"].native_params(), x_np, y, x_np)[0]
    bagged = _fit_predict(*PARAMS["bagging_2_threads"].native_params(), x_np, y, x_np)[0]
    assert not np.array_equal(plain, bagged)


def test_fit_predict_falls_back_to_the_base_rate() -> None:
    native, rounds = TeacherParams().native_params()
    x_pred = np.zeros((4, len(MODEL_FEATURES)))
    empty, fallback = _fit_predict(
        native, rounds, np.zeros((0, len(MODEL_FEATURES))), np.array([], "int64"), x_pred
    )
    np.testing.assert_array_equal(empty, np.full(4, 0.5))
    assert fallback is True
    for label in (0, 1):
        x_train = np.random.default_rng(label).standard_normal((30, len(MODEL_FEATURES)))
        proba, fallback = _fit_predict(native, rounds, x_train, np.full(30, label, "int64"), x_pred)
        np.testing.assert_array_equal(proba, np.full(4, float(label)))
        assert fallback is True


def test_fit_booster_rejects_non_binary_labels() -> None:
    native, rounds = TeacherParams().native_params()
    x = np.random.default_rng(0).standard_normal((30, len(MODEL_FEATURES)))
    with pytest.raises(ValueError, match="binary labels"):
        _fit_booster(native, rounds, x, np.arange(30) % 3)


@pytest.mark.parametrize("name", ["default", "bagging_2_threads"])
def test_train_teacher_matches_an_all_wrapper_reference(name: str, frames: list[pd.DataFrame]) -> None:
    """End to end: out-of-fold labels and holdout metrics as if every fit were an LGBMClassifier."""
    params = PARAMS[name]
    for frame in frames:
        x, _, y = _xy(frame)
        n = len(frame)
        result = train_teacher(frame, params, H)

        oof = np.empty(n)
        for fit_idx, test_idx in purged_kfold(n, params.n_folds, gap=H):
            oof[test_idx] = _wrapper_proba(params, x, y, fit_idx, test_idx)
        np.testing.assert_array_equal(result.oof_proba, oof)

        train_idx, val_idx = train_val_split(n, params.val_fraction, gap=H)
        proba = _wrapper_proba(params, x, y, train_idx, np.concatenate([train_idx, val_idx]))
        val = classification_metrics(proba[len(train_idx) :], y[val_idx])
        expected = {
            "train_accuracy": accuracy(proba[: len(train_idx)], y[train_idx]),
            "val_accuracy": val["accuracy"],
            "val_auc": val["auc"],
            "val_f1": val["f1"],
            "oof_auc": auc(oof, y),
            "oof_logloss": log_loss(oof, y),
            "val_base_rate_fallback": False,
            "oof_base_rate_folds": 0,
        }
        assert {key: result.metrics[key] for key in expected} == expected
        final = LGBMClassifier(**params.lightgbm_params()).fit(x, y)
        assert isinstance(result.model, LGBMClassifier)
        assert result.model.booster_.model_to_string() == final.booster_.model_to_string()
