"""Student: exact soft-label distillation, faithful to a known teacher, honest holdout, both kinds.

Distillation is checked on the distilled model's own probabilities (``predict_raw_proba``); the
stored model's calibrated ``predict_proba`` is checked here for its wiring and in
test_calibration for its statistics.
"""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pandas as pd
import pytest

from sensequant_assets.ml.dataset import build_dataset
from sensequant_assets.ml.evaluation import log_loss
from sensequant_assets.ml.features import MODEL_FEATURES, WARMUP_BARS, feature_frame
from sensequant_assets.ml.student import (
    CalibratedStudent,
    StudentParams,
    predict_proba,
    predict_raw_proba,
    train_student,
)
from sensequant_assets.ml.teacher import TeacherParams, TooFewRowsError, train_teacher
from sensequant_tests.test_ml_synthetic import make_bars

H = 7


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    bars = make_bars(WARMUP_BARS + 320, seed=21, trend=True, drift=0.01)
    start, end = bars.index[WARMUP_BARS].date(), bars.index[-1].date()
    return build_dataset(bars, start, end, H, 0.02, "HDFCBANK").frame


@pytest.fixture(scope="module")
def logistic_teacher(frame: pd.DataFrame) -> np.ndarray:
    """A teacher whose probabilities are a known logistic function of the model inputs."""
    x = frame[MODEL_FEATURES].to_numpy()
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    weights = np.zeros(len(MODEL_FEATURES))
    weights[MODEL_FEATURES.index("m_sma_20")] = -1.5
    weights[MODEL_FEATURES.index("m_rsi_14")] = 1.0
    weights[MODEL_FEATURES.index("m_atr_14")] = 0.8
    return 1.0 / (1.0 + np.exp(-(z @ weights + 0.2)))


def _entropy(p: np.ndarray) -> float:
    return log_loss(p, p)


def test_logistic_student_is_faithful_to_a_logistic_teacher(
    frame: pd.DataFrame, logistic_teacher: np.ndarray
) -> None:
    result = train_student(frame, logistic_teacher, StudentParams(), H)
    n = len(frame)
    assert result.train_rows + H + result.holdout_rows == n
    assert result.holdout_rows == int(np.ceil(0.2 * n))
    assert result.metrics["fidelity_agreement"] > 0.9
    holdout_teacher = logistic_teacher[n - result.holdout_rows :]
    # Cross-entropy with soft targets is bounded below by the teacher's own entropy.
    excess = result.metrics["fidelity_logloss"] - _entropy(holdout_teacher)
    assert 0.0 <= excess < 0.05
    for key in ("holdout_accuracy", "teacher_holdout_accuracy"):
        assert 0.0 <= result.metrics[key] <= 1.0
    full = predict_raw_proba(result.model, frame)
    assert full.shape == (n,)
    assert np.corrcoef(full, logistic_teacher)[0, 1] > 0.97
    json.dumps(result.metrics)


def test_soft_labels_are_used_exactly_not_rounded(frame: pd.DataFrame) -> None:
    """Constant soft labels of 0.3: the exact soft-label fit predicts 0.3 everywhere.

    Rounded hard labels would all be 0 and could not produce 0.3. A constant teacher carries no
    information about the labels, so the calibrated student predicts the window's base rate.
    """
    soft = np.full(len(frame), 0.3)
    base_rate = float(frame["label"].mean())
    assert abs(base_rate - 0.3) > 0.05  # the two expectations below are distinguishable
    for kind in ("logistic", "lightgbm"):
        result = train_student(frame, soft, StudentParams(kind=kind), H)
        proba = predict_raw_proba(result.model, frame)
        assert np.allclose(proba, 0.3, atol=0.01), kind
        assert result.metrics["fidelity_agreement"] == 1.0
        np.testing.assert_allclose(predict_proba(result.model, frame), base_rate, atol=1e-9)
        assert result.metrics["calibration_slope"] == StudentParams().calibration_min_slope


def test_lightgbm_student_works_and_follows_the_teacher(
    frame: pd.DataFrame, logistic_teacher: np.ndarray
) -> None:
    params = StudentParams(kind="lightgbm", lgbm_n_estimators=120, lgbm_learning_rate=0.1)
    result = train_student(frame, logistic_teacher, params, H)
    assert result.metrics["fidelity_agreement"] > 0.8
    proba = result.model.predict_proba(frame[MODEL_FEATURES])
    assert proba.shape == (len(frame), 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert result.params_used["model_params"]["objective"] == "cross_entropy"
    assert isinstance(result.model, CalibratedStudent)
    assert result.model.student.regressor.booster_.num_trees() == 120
    restored = pickle.loads(pickle.dumps(result.model))
    assert np.array_equal(predict_proba(restored, frame), predict_proba(result.model, frame))


def test_student_on_real_teacher_oof_is_deterministic(frame: pd.DataFrame) -> None:
    teacher = train_teacher(frame, TeacherParams(n_estimators=30), H)
    a = train_student(frame, teacher.oof_proba, StudentParams(), H)
    b = train_student(frame, teacher.oof_proba, StudentParams(), H)
    assert json.dumps(a.metrics, sort_keys=True) == json.dumps(b.metrics, sort_keys=True)
    assert predict_proba(a.model, frame).tobytes() == predict_proba(b.model, frame).tobytes()
    # The teacher-side holdout figures are the OOF probabilities scored on the same rows.
    holdout = slice(len(frame) - a.holdout_rows, None)
    expected = float(np.mean((teacher.oof_proba[holdout] > 0.5) == (frame["label"].to_numpy()[holdout] == 1)))
    assert a.metrics["teacher_holdout_accuracy"] == expected
    # predict_proba serves the teacher model as well.
    assert predict_proba(teacher.model, frame).shape == (len(frame),)


def test_holdout_model_never_sees_holdout_soft_labels(
    frame: pd.DataFrame, logistic_teacher: np.ndarray
) -> None:
    """Changing soft labels in the holdout (and its purge gap) changes nothing but the score."""
    n = len(frame)
    base = train_student(frame, logistic_teacher, StudentParams(), H)
    tail_start = n - base.holdout_rows - H
    altered = logistic_teacher.copy()
    altered[tail_start:] = 1.0 - altered[tail_start:]
    moved = train_student(frame, altered, StudentParams(), H)
    # Holdout predictions come from the head model: flipping the targets flips agreement.
    assert moved.metrics["fidelity_agreement"] == pytest.approx(1.0 - base.metrics["fidelity_agreement"])
    assert moved.metrics["holdout_accuracy"] == base.metrics["holdout_accuracy"]


def test_too_few_rows_and_bad_soft_labels(frame: pd.DataFrame) -> None:
    few = frame.iloc[:10]
    with pytest.raises(TooFewRowsError) as info:
        train_student(few, np.full(10, 0.5), StudentParams(), H)
    message = str(info.value)
    assert "HDFCBANK" in message
    assert str(few["ts"].iloc[0].date()) in message
    with pytest.raises(ValueError, match="soft_labels"):
        train_student(frame, np.full(len(frame), 1.5), StudentParams(), H)
    with pytest.raises(ValueError, match="soft_labels"):
        train_student(frame, np.full(len(frame) - 1, 0.5), StudentParams(), H)
    with pytest.raises(ValueError, match="kind"):
        StudentParams(kind="forest")


@pytest.mark.parametrize("kind", ["logistic", "lightgbm"])
def test_stored_labels_train_the_same_student_as_in_memory(frame: pd.DataFrame, kind: str) -> None:
    """A labels table read back from labels.csv.gz (one block per column, text timestamps) trains
    exactly the student of the frame it was written from: `feature_frame` changes the layout only."""
    soft = train_teacher(frame, TeacherParams(), H).oof_proba
    labelled = frame.assign(teacher_proba=soft)
    buffer = io.BytesIO()
    labelled.to_csv(buffer, index=False, compression={"method": "gzip", "mtime": 0})
    stored = pd.read_csv(io.BytesIO(buffer.getvalue()), compression="gzip")
    assert np.array_equal(stored[MODEL_FEATURES].to_numpy(), labelled[MODEL_FEATURES].to_numpy())

    params = StudentParams(kind=kind)
    from_memory = train_student(labelled, soft, params, H)
    from_store = train_student(stored, stored["teacher_proba"].to_numpy(), params, H)
    assert json.dumps(from_memory.metrics, sort_keys=True) == json.dumps(from_store.metrics, sort_keys=True)
    assert np.array_equal(predict_proba(from_memory.model, labelled), predict_proba(from_store.model, stored))


def test_feature_frame_is_one_float_block_with_the_same_values(frame: pd.DataFrame) -> None:
    shuffled = frame.iloc[::-1]  # an index that is not 0..n-1
    x = feature_frame(shuffled)
    assert list(x.columns) == list(MODEL_FEATURES)
    assert x.index.equals(shuffled.index)
    assert (x.dtypes == "float64").all()
    assert np.array_equal(x.to_numpy(), shuffled[MODEL_FEATURES].astype("float64").to_numpy(), equal_nan=True)
    assert x.to_numpy().flags["C_CONTIGUOUS"] or x.to_numpy().flags["F_CONTIGUOUS"]
    assert x._mgr.nblocks == 1  # the point of it: one block, not one per column
    renumbered = feature_frame(shuffled, keep_index=False)
    assert renumbered.index.equals(pd.RangeIndex(len(shuffled)))
