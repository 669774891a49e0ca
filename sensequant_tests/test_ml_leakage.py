"""The point-in-time guard: it refuses features that read the future and passes the real ones.

The canary shows why the guard is needed: a feature that leaks the forward return scores
perfectly in-window AND survives the out-of-sample protocol (the leak is recomputed in every
evaluated window), so only a test of the feature function itself can stop it.
"""

from __future__ import annotations

import datetime as dt
import pickle
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from sensequant_assets.ml.briefing import PROMOTE, PromotionGates, symbol_briefing
from sensequant_assets.ml.dataset import build_dataset, model_features
from sensequant_assets.ml.features import compute_features
from sensequant_assets.ml.leakage import LookAheadError, check_point_in_time
from sensequant_assets.ml.teacher import TeacherParams, train_teacher
from sensequant_assets.sources.synthetic import SyntheticSource
from sensequant_tests.test_ml_walk_forward import (
    HISTORY_DAYS,
    PROTOCOL_TRIALS,
    PROTOCOL_WINDOWS,
    THRESHOLD,
    H,
    walk_forward,
)

START, END = dt.date(2023, 1, 1), dt.date(2023, 12, 31)


def leaky(bars: pd.DataFrame) -> pd.DataFrame:
    """The real model inputs with one column replaced by the forward return: the canary."""
    out = model_features(bars)
    out["m_obv_flow"] = bars["close"].shift(-H) / bars["close"] - 1.0
    return out


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    """One 12-month window of a pure random walk plus the history the teacher asset fetches."""
    source = SyntheticSource(seed=0, random_walk=True)
    return source.bars("RELIANCE", START - dt.timedelta(days=HISTORY_DAYS), END)


def test_real_model_matrix_passes_cheaply(bars: pd.DataFrame) -> None:
    for seed in range(4):
        check_point_in_time(model_features, bars, seed=seed)
    check_point_in_time(compute_features, bars, probes=3)
    began = time.perf_counter()
    check_point_in_time(model_features, bars)
    # probes + 1 calls of a ~10 ms function; generous bound for a loaded 2-core machine.
    assert time.perf_counter() - began < 2.0


def test_leaky_canary_scores_high_in_window_but_is_refused(bars: pd.DataFrame) -> None:
    leaked = build_dataset(bars, START, END, H, THRESHOLD, "RELIANCE", feature_fn=leaky).frame
    honest = build_dataset(bars, START, END, H, THRESHOLD, "RELIANCE").frame
    assert train_teacher(leaked, TeacherParams(), H).metrics["oof_auc"] > 0.95
    assert train_teacher(honest, TeacherParams(), H).metrics["oof_auc"] < 0.65
    with pytest.raises(LookAheadError) as info:
        check_point_in_time(leaky, bars)
    err = info.value
    assert err.features == ["m_obv_flow"]
    # shift(-H): the rows within H bars before the cut read replaced or removed bars.
    cut = bars.index.get_loc(err.cut)
    assert err.first_moved == bars.index[cut - H + 1]
    assert "m_obv_flow" in str(err) and str(err.first_moved) in str(err)
    assert pickle.loads(pickle.dumps(err)).features == ["m_obv_flow"]


def test_out_of_sample_protocol_alone_would_promote_the_leak() -> None:
    """Without the guard, a random walk plus a leaked feature passes every statistical gate.

    The protocol is the pipeline's defaults (see test_ml_walk_forward); measured stitched AUC
    0.985 [0.976, ...], Diebold-Mariano p ~1e-25 in the student's favour.
    """
    predictions, in_window = walk_forward(
        SyntheticSource(seed=0, random_walk=True), "RELIANCE", PROTOCOL_WINDOWS, feature_fn=leaky
    )
    assert min(w["oof_auc"] for w in in_window) > 0.95
    briefing = symbol_briefing(predictions, horizon=H, n_trials=PROTOCOL_TRIALS, gates=PromotionGates())
    assert briefing["auc"]["pooled"] > 0.75
    assert briefing["decision"] == PROMOTE
    # Not even the optional Diebold-Mariano gate stops it: the leak is calibrated as well.
    gated = symbol_briefing(
        predictions, horizon=H, n_trials=PROTOCOL_TRIALS, gates=PromotionGates(max_dm_pvalue=0.05)
    )
    assert gated["decision"] == PROMOTE


@pytest.mark.parametrize(
    ("name", "transform"),
    [
        ("shift", lambda f: f.shift(-1)),
        ("centred", lambda f: f.rolling(5, center=True, min_periods=1).mean()),
        ("global_zscore", lambda f: (f - f.mean()) / f.std()),
        # Holes filled from the next bar: caught when a cut lands on a hole (every other row here).
        ("backfill", lambda f: f.where(np.arange(len(f)) % 2 == 1).bfill()),
        ("last_close", lambda f: f * 0 + f.iloc[-1]),
    ],
)
def test_kinds_of_look_ahead_are_caught(
    bars: pd.DataFrame, name: str, transform: Callable[[pd.Series], pd.Series]
) -> None:
    def feature_fn(b: pd.DataFrame) -> pd.DataFrame:
        out = model_features(b)
        out["m_sma_50"] = transform(out["m_sma_50"])
        return out

    with pytest.raises(LookAheadError) as info:
        check_point_in_time(feature_fn, bars)
    assert info.value.features == ["m_sma_50"], name


def test_guard_is_deterministic_and_validates(bars: pd.DataFrame) -> None:
    messages = []
    for _ in range(2):
        with pytest.raises(LookAheadError) as info:
            check_point_in_time(leaky, bars, seed=5)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    with pytest.raises(ValueError, match="probes"):
        check_point_in_time(model_features, bars, probes=0)
    with pytest.raises(ValueError, match="3 bars"):
        check_point_in_time(model_features, bars.iloc[:2])


def test_build_dataset_takes_a_feature_fn(bars: pd.DataFrame) -> None:
    default = build_dataset(bars, START, END, H, THRESHOLD, "RELIANCE").frame
    explicit = build_dataset(bars, START, END, H, THRESHOLD, "RELIANCE", feature_fn=model_features).frame
    pd.testing.assert_frame_equal(default, explicit)

    def missing(b: pd.DataFrame) -> pd.DataFrame:
        return model_features(b).drop(columns="m_rsi_14")

    with pytest.raises(ValueError, match="m_rsi_14"):
        build_dataset(bars, START, END, H, THRESHOLD, "RELIANCE", feature_fn=missing)

    def infinite(b: pd.DataFrame) -> pd.DataFrame:
        out = model_features(b)
        out.loc[out.index[-30], "m_rsi_14"] = np.inf
        return out

    # inf is undefined like NaN: that row is dropped as incomplete, never trained on.
    frame = build_dataset(bars, START, END, H, THRESHOLD, "RELIANCE", feature_fn=infinite).frame
    assert len(frame) == len(default) - 1
