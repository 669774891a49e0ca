"""Calibrated student probabilities: the map, its guarantees, and its out-of-sample effect.

The statistical tests run the pipeline's walk-forward protocol (``ml.protocol.walk_forward``, the
assets' defaults) over 11 six-month windows (10 evaluated out of sample) on several synthetic
symbols, and score the stored model's calibrated probabilities against the base-rate forecast
(the training window's share of label 1) row by row. The distilled student before calibration
is scored on the same rows through a spy on ``evaluate_window``.

Tolerance of "no worse than the base rate": the mean per-row difference of log loss (or Brier)
must stay below two standard errors, clustered by evaluated window. Clustered by window, not
HAC with a lag of the horizon, because the map is fitted once per window: its error (a slope or
an intercept off by a little) is shared by every row of the window it predicts.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import pickle
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

import sensequant_assets.ml.protocol as protocol
from sensequant_assets.artifacts import EvaluationArtifact
from sensequant_assets.io_manager import CHECKSUMS, ArtifactStore, codec_for, sha256_bytes
from sensequant_assets.ml.dataset import build_dataset
from sensequant_assets.ml.evaluation import (
    auc,
    brier,
    expected_calibration_error,
    log_loss,
    log_loss_series,
    spearman_ic,
)
from sensequant_assets.ml.features import MODEL_FEATURES
from sensequant_assets.ml.labels import LabelSpec
from sensequant_assets.ml.protocol import HISTORY_DAYS, month_windows
from sensequant_assets.ml.student import (
    CalibratedStudent,
    PlattCalibration,
    StudentParams,
    fit_platt,
    predict_proba,
    predict_raw_proba,
    train_student,
)
from sensequant_assets.ml.teacher import TeacherParams, train_teacher
from sensequant_assets.ml.walk_forward import evaluate_window
from sensequant_assets.plots import reliability_png
from sensequant_assets.sources.synthetic import SMOKE_TEST_SIGNAL_IC, SyntheticSource

H = 7
SYMBOLS = ["RELIANCE", "TCS", "INFY", "HDFCBANK"]
WINDOWS = month_windows(dt.date(2018, 1, 1), 11)  # 2018-01 .. 2023-06, 10 evaluated
# Each fit on its window alone (lookback 0, the default before the methodology study made it 2): the
# protocol on which the log losses quoted below were measured. With the default's three windows of
# rows the uncalibrated student is less overconfident (no-signal seed 0: log loss 0.885 against the
# base rate's 0.698, instead of 1.307), so the calibration claims are made where it is needed most.
SETTINGS = protocol.WalkForwardSettings(horizon=H, lookback_windows=0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------------------------- fit_platt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_platt_recovers_a_known_map_when_the_evidence_is_plentiful(seed: int) -> None:
    """20 000 rows of ``y ~ Bernoulli(sigmoid(-1 + 0.8 z))``: the prior barely matters.

    The raw score is ``3 + 2 z`` (any location and scale): the slope is per standard deviation.
    Standard errors at this size are ~0.02 for both parameters; tolerance 0.06 (3 s.e.).
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(20_000)
    y = (rng.uniform(size=z.size) < _sigmoid(-1.0 + 0.8 * z)).astype(int)
    cal, info = fit_platt(3.0 + 2.0 * z, y, base_rate=float(y.mean()))
    assert cal.slope == pytest.approx(0.8, abs=0.06)
    # The intercept is the log-odds at the mean score (z = (center - 3) / 2).
    assert cal.intercept == pytest.approx(-1.0 + 0.8 * (cal.center - 3.0) / 2.0, abs=0.06)
    grid = np.linspace(-3.0, 3.0, 61)
    np.testing.assert_allclose(cal(3.0 + 2.0 * grid), _sigmoid(-1.0 + 0.8 * grid), atol=0.03)
    assert info["rows"] == 20_000 and 0 < info["slope_sd"] < 0.03


def test_fit_platt_shrinks_weak_evidence_towards_the_base_rate() -> None:
    """No signal, 120 rows weighted 1/7 (a window of overlapping 7-bar labels), 300 simulations.

    The rows here are independent, so the maximum-likelihood slope (prior sd 100) scatters with
    sd ~ 1 / sqrt(120 * 0.24) ~ 0.19 (floor-truncated mean ~0.4 * 0.19 ~ 0.075). Weighted as
    overlapping labels the evidence counts ~4, against the default prior's precision 16 (sd
    0.25): the map keeps about a fifth of the slope and stays near the base rate.
    """
    rng = np.random.default_rng(7)
    mle, shrunk, gaps = [], [], []
    for _ in range(300):
        s = rng.standard_normal(120)
        y = (rng.uniform(size=120) < 0.4).astype(int)
        rate = float(y.mean())
        cal, _ = fit_platt(s, y, base_rate=rate, row_weight=1 / 7)
        loose, _ = fit_platt(s, y, base_rate=rate, row_weight=1 / 7, prior_sd=100.0)
        mle.append(loose.slope)
        shrunk.append(cal.slope)
        gaps.append(float(np.max(np.abs(cal(s) - rate))))
        assert cal.slope <= loose.slope + 1e-12
    assert 0.05 < np.mean(mle) < 0.1
    assert np.mean(shrunk) < 0.3 * np.mean(mle)
    assert np.quantile(shrunk, 0.95) < 0.1
    assert np.median(gaps) < 0.05


@pytest.mark.parametrize("rate", [0.03, 0.3, 0.5, 0.8, 0.97])
def test_fit_platt_works_for_any_base_rate(rate: float) -> None:
    """No evidence about ranking: the calibrated mean equals the base rate, whatever it is."""
    rng = np.random.default_rng(int(rate * 100))
    s = rng.standard_normal(600)
    y = (rng.uniform(size=600) < rate).astype(int)
    cal, info = fit_platt(s, y, base_rate=float(y.mean()), row_weight=1 / 7)
    assert float(np.mean(cal(s))) == pytest.approx(float(y.mean()), abs=0.01)
    assert info["base_rate"] == pytest.approx(float(y.mean()))


def test_fit_platt_never_inverts_a_ranking_and_handles_no_rows() -> None:
    """An inverse relation gets the slope floor (never a negative slope); no rows give the prior."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal(5000)
    y = (rng.uniform(size=z.size) < _sigmoid(-1.5 * z)).astype(int)
    cal, _ = fit_platt(z, y, base_rate=float(y.mean()), min_slope=1e-3)
    assert cal.slope == 1e-3
    empty, info = fit_platt(np.array([]), np.array([]), base_rate=0.3)
    assert empty.slope == 1e-3 and info["rows"] == 0
    assert empty(np.array([0.0]))[0] == pytest.approx(0.3)
    for bad in (
        {"base_rate": 1.5},
        {"base_rate": 0.3, "prior_sd": 0.0},
        {"base_rate": 0.3, "row_weight": -1},
    ):
        with pytest.raises(ValueError):
            fit_platt(z, y, **bad)
    with pytest.raises(ValueError, match="labels"):
        fit_platt(z, np.full(z.size, 2), base_rate=0.3)


def test_platt_map_is_strictly_increasing_and_maps_into_the_open_interval() -> None:
    cal = PlattCalibration(slope=1e-3, intercept=-0.4, center=2.0, scale=3.0)
    grid = np.linspace(-100.0, 100.0, 20_001)
    p = cal(grid)
    assert np.all(np.diff(p) > 0)
    steep = PlattCalibration(slope=50.0, intercept=0.0, center=0.0, scale=1.0)
    extreme = steep(np.array([-1e300, -1e6, -1.0, 0.0, 1.0, 1e6, 1e300]))
    assert np.all((extreme > 0.0) & (extreme < 1.0))
    assert np.all(np.diff(extreme) >= 0)


# ------------------------------------------------------------------------------- the stored student


@pytest.fixture(scope="module")
def frames() -> list[pd.DataFrame]:
    """Two consecutive windows' teacher_labels of a planted-signal symbol (0, 1) and a null one (2, 3)."""
    out = []
    for source, symbol in (
        (SyntheticSource(seed=4, signal_ic=0.2), "TCS"),
        (SyntheticSource(seed=4), "INFY"),
    ):
        for start, end in WINDOWS[:2]:
            bars = source.bars(symbol, start - dt.timedelta(days=HISTORY_DAYS), end)
            frame = build_dataset(bars, start, end, H, LabelSpec(), symbol).frame
            out.append(frame.assign(teacher_proba=train_teacher(frame, TeacherParams(), H).oof_proba))
    return out


@pytest.mark.parametrize("kind", ["logistic", "lightgbm"])
def test_calibration_leaves_every_rank_statistic_unchanged(frames: list[pd.DataFrame], kind: str) -> None:
    """On any rows (in-window, the next window, another symbol, nonsense features) the calibrated
    probabilities rank exactly as the distilled model's log-odds: same AUC, same IC."""
    train = frames[0]
    model = train_student(train, train["teacher_proba"].to_numpy(), StudentParams(kind=kind), H).model
    assert isinstance(model, CalibratedStudent)
    rng = np.random.default_rng(0)
    nonsense = frames[3].copy()
    nonsense[MODEL_FEATURES] = rng.standard_normal((len(nonsense), len(MODEL_FEATURES)))
    absurd = nonsense.copy()
    absurd[MODEL_FEATURES] *= 1e6
    # Absurd inputs drive the log-odds past the +-35 clip: still strictly inside (0, 1), in order.
    extreme = predict_proba(model, absurd)
    assert np.all((extreme > 0.0) & (extreme < 1.0))
    order = np.argsort(model.decision_function(absurd[MODEL_FEATURES]), kind="stable")
    assert np.all(np.diff(extreme[order]) >= 0)
    for frame in (*frames, nonsense):
        x = frame[MODEL_FEATURES].astype("float64")
        calibrated = predict_proba(model, frame)
        score = model.decision_function(x)
        assert np.all((calibrated > 0.0) & (calibrated < 1.0))
        # Same order: sorting by the raw score sorts the calibrated probabilities (ties stay ties).
        order = np.argsort(score, kind="stable")
        assert np.all(np.diff(calibrated[order]) >= 0)
        assert np.array_equal(np.diff(score[order]) > 0, np.diff(calibrated[order]) > 0)
        # AUC of the log-odds themselves (as ranks in [0, 1]: the model's own probabilities round to
        # exactly 0 or 1 beyond ~37 log-odds and would tie rows the score still orders).
        assert auc(calibrated, frame["label"]) == auc(rankdata(score) / len(score), frame["label"])
        assert spearman_ic(calibrated, frame["forward_return"]) == pytest.approx(
            spearman_ic(score, frame["forward_return"]), abs=1e-12
        )
        raw = predict_raw_proba(model, frame)
        np.testing.assert_allclose(raw, model.student.predict_proba(x)[:, 1])


def test_calibrated_student_is_picklable_deterministic_and_records_its_map(
    frames: list[pd.DataFrame],
) -> None:
    train = frames[2]
    a = train_student(train, train["teacher_proba"].to_numpy(), StudentParams(), H)
    b = train_student(train, train["teacher_proba"].to_numpy(), StudentParams(), H)
    assert json.dumps(a.metrics, sort_keys=True) == json.dumps(b.metrics, sort_keys=True)
    restored = pickle.loads(pickle.dumps(a.model))
    assert predict_proba(restored, frames[3]).tobytes() == predict_proba(a.model, frames[3]).tobytes()
    assert pickle.dumps(a.model) == pickle.dumps(b.model)
    cal = a.model.calibration
    m = a.metrics
    assert (m["calibration_slope"], m["calibration_intercept"]) == (cal.slope, cal.intercept)
    assert (m["calibration_center"], m["calibration_scale"]) == (cal.center, cal.scale)
    assert m["calibration_slope"] >= StudentParams().calibration_min_slope
    assert m["calibration_rows"] == len(train)
    assert m["calibration_effective_rows"] == pytest.approx(len(train) / H)
    assert m["calibration_base_rate"] == pytest.approx(float(train["label"].mean()))
    assert -1.0 <= m["calibration_student_teacher_corr"] <= 1.0
    # The map's slope is the teacher's out-of-sample slope discounted by the student's agreement.
    expected = m["calibration_teacher_slope"] * max(m["calibration_student_teacher_corr"], 0.0)
    assert m["calibration_slope"] == pytest.approx(max(expected, StudentParams().calibration_min_slope))
    assert "calibration" in a.params_used
    json.dumps(m)


def test_evaluate_window_reports_calibration_next_to_the_base_rate(frames: list[pd.DataFrame]) -> None:
    train, test = frames[0], frames[1]
    model = train_student(train, train["teacher_proba"].to_numpy(), StudentParams(), H).model
    q = float(train["label"].mean())
    result = evaluate_window(model, test, train_base_rate=q, window="TCS|2018-07-01")
    m = result.metrics
    y = test["label"].to_numpy(dtype="float64")
    student, raw = predict_proba(model, test), predict_raw_proba(model, test)
    assert m["ece"] == expected_calibration_error(student, y)
    assert m["uncalibrated_ece"] == expected_calibration_error(raw, y)
    assert m["uncalibrated_log_loss"] == log_loss(raw, y)
    assert m["uncalibrated_brier"] == brier(raw, y)
    # The constant forecast q: Brier r (1 - q)^2 + (1 - r) q^2 and ECE |q - r|, r this window's rate.
    r = float(y.mean())
    assert m["baseline_brier"] == pytest.approx(r * (1 - q) ** 2 + (1 - r) * q**2)
    assert m["baseline_ece"] == pytest.approx(abs(q - r))
    rel = m["reliability"]
    assert "10 equal-mass bins" in rel["binning"]
    assert sum(b["n"] for b in rel["student"]) == sum(b["n"] for b in rel["uncalibrated"]) == len(test)
    json.dumps(m)


# ------------------------------------------------------------------------------- the diagram's file


def test_reliability_png_is_written_with_a_checksum_and_read_back(tmp_path: Path, frames) -> None:
    train, test = frames[0], frames[1]
    model = train_student(train, train["teacher_proba"].to_numpy(), StudentParams(), H).model
    result = evaluate_window(model, test, train_base_rate=0.5, window="TCS|2018-07-01")
    rel = result.metrics["reliability"]
    png = reliability_png({"calibrated": rel["student"], "raw": rel["uncalibrated"]}, "t", base_rate=0.5)
    assert png.startswith(b"\x89PNG")
    assert png == reliability_png(
        {"calibrated": rel["student"], "raw": rel["uncalibrated"]}, "t", base_rate=0.5
    )
    store, codec = ArtifactStore(tmp_path), codec_for("student_evaluation")
    art = EvaluationArtifact(result.metrics, result.predictions, result.equity, b"\x89PNG-equity", png)
    directory = store.write("TCS|2018-07-01", codec, art)
    assert (directory / "evaluation" / "reliability.png").read_bytes() == png
    sums = json.loads((directory / CHECKSUMS).read_text())
    assert sums["evaluation/reliability.png"] == sha256_bytes(png)
    assert store.read("TCS|2018-07-01", codec, "student_evaluation").reliability_png == png
    # An evaluation stored before the diagram existed still loads (without a diagram)...
    (directory / "evaluation" / "reliability.png").unlink()
    del sums["evaluation/reliability.png"]
    (directory / CHECKSUMS).write_text(json.dumps(sums))
    assert store.read("TCS|2018-07-01", codec, "student_evaluation").reliability_png == b""
    # ...but a diagram that is present and does not match its checksum is refused.
    store.write("TCS|2018-07-01", codec, art)
    (directory / "evaluation" / "reliability.png").write_bytes(png + b"x")
    with pytest.raises(Exception, match="corrupt"):
        store.read("TCS|2018-07-01", codec, "student_evaluation")


# ------------------------------------------------------------------------------- out of sample


@contextmanager
def _spy_uncalibrated() -> Iterator[list[np.ndarray]]:
    """Record the distilled student's own probabilities on every row the protocol evaluates."""
    recorded: list[np.ndarray] = []
    real = protocol.evaluate_window

    def spy(model: object, frame: pd.DataFrame, **kwargs: object) -> object:
        result = real(model, frame, **kwargs)
        recorded.append(predict_raw_proba(model, frame))
        return result

    protocol.evaluate_window = spy
    try:
        yield recorded
    finally:
        protocol.evaluate_window = real


def _walk_forward(source: SyntheticSource) -> tuple[pd.DataFrame, float]:
    """Stitched out-of-sample rows of every symbol (calibrated, uncalibrated, base rate) and seconds."""
    started = time.perf_counter()
    frames = []
    for symbol in SYMBOLS:
        with _spy_uncalibrated() as raw:
            predictions = protocol.walk_forward(source, symbol, WINDOWS, SETTINGS).predictions
        frames.append(predictions.assign(uncalibrated_proba=np.concatenate(raw)))
    return pd.concat(frames, ignore_index=True), time.perf_counter() - started


def _scores(rows: pd.DataFrame) -> dict[str, float]:
    """Pooled log loss, Brier and ECE of each forecast, and the student-minus-base-rate differences
    with their standard errors clustered by evaluated window."""
    y = rows["label"].to_numpy(dtype="float64")
    out: dict[str, float] = {"rows": len(rows), "windows": rows["window"].nunique()}
    losses = {}
    for name in ("student", "uncalibrated", "baseline"):
        p = rows[f"{name}_proba"].to_numpy()
        losses[name] = {"log_loss": log_loss_series(p, y), "brier": (p - y) ** 2}
        out[f"{name}_log_loss"] = float(losses[name]["log_loss"].mean())
        out[f"{name}_brier"] = float(losses[name]["brier"].mean())
        out[f"{name}_ece"] = expected_calibration_error(p, y)
    for metric in ("log_loss", "brier"):
        d = pd.Series(losses["student"][metric] - losses["baseline"][metric])
        sums = d.groupby(rows["window"].to_numpy()).sum()
        resid = sums - d.groupby(rows["window"].to_numpy()).size() * d.mean()
        g = len(sums)
        out[f"{metric}_diff"] = float(d.mean())
        out[f"{metric}_diff_se"] = float(math.sqrt(g / (g - 1) * float((resid**2).sum())) / len(d))
    return out


@pytest.fixture(scope="module")
def null_scores() -> dict[str, float]:
    """GARCH no-signal symbols (seed 0), 4 symbols x 10 evaluated windows."""
    rows, seconds = _walk_forward(SyntheticSource(seed=0))
    return {**_scores(rows), "seconds": seconds}


def test_calibrated_student_is_no_worse_than_the_base_rate_on_no_signal_data(null_scores) -> None:
    """Measured here (seed 0): log loss 0.7013 calibrated, 1.3071 before calibration, 0.7016 base rate.

    The same protocol on seeds 1-5 (4 symbols each) gave calibrated-minus-base-rate log loss of
    +0.0010, +0.0002, -0.0010, +0.0016, +0.0018 (0.7, 0.2, -1.5, 1.8, 1.7 clustered s.e.; seed 0:
    -0.3): a cost of ~0.0005 nats a row on average, within noise, against +0.49 to +0.67 before
    calibration. The tolerance is two clustered standard errors.
    """
    s = null_scores
    print("\nno-signal out-of-sample scores:", json.dumps({k: round(v, 4) for k, v in s.items()}))
    assert s["windows"] == len(SYMBOLS) * (len(WINDOWS) - 1)
    for metric in ("log_loss", "brier"):
        assert s[f"{metric}_diff"] < 2.0 * s[f"{metric}_diff_se"], metric
    # Without calibration the distilled student is far worse than the base rate on the same rows.
    assert s["uncalibrated_log_loss"] > s["baseline_log_loss"] + 0.2
    assert s["uncalibrated_brier"] > s["baseline_brier"] + 0.03
    assert s["student_ece"] < s["uncalibrated_ece"]


@pytest.fixture(scope="module")
def planted_scores() -> dict[str, float]:
    """A strong planted signal (the smoke-test IC), 4 symbols x 10 evaluated windows."""
    rows, seconds = _walk_forward(SyntheticSource(seed=0, signal_ic=SMOKE_TEST_SIGNAL_IC))
    return {**_scores(rows), "seconds": seconds}


def test_calibrated_student_beats_the_base_rate_on_a_planted_signal(planted_scores) -> None:
    """Measured here (seed 0): log loss 0.6838 calibrated, 0.7867 before, 0.6949 base rate (-7 s.e.).

    The strong smoke-test signal, because at a realistic IC the pipeline's student barely learns
    the signal out of sample (pooled AUC ~0.51-0.55) and no forecast of it can beat the base rate
    measurably in 40 windows: at signal_ic 0.10 and 0.20 (seeds 0-3) the calibrated student was
    within -0.0017..+0.0005 nats of the base rate (all within 1.7 clustered s.e.), while the
    uncalibrated one was +0.46 to +0.62 worse.
    """
    s = planted_scores
    print("\nplanted-signal out-of-sample scores:", json.dumps({k: round(v, 4) for k, v in s.items()}))
    for metric in ("log_loss", "brier"):
        assert s[f"{metric}_diff"] < -2.0 * s[f"{metric}_diff_se"], metric
    assert s["student_log_loss"] < s["uncalibrated_log_loss"]
