"""A fast, seeded version of the methodology study (``bench/methodology.py``) through the real pipeline.

The full study (``docs/methodology.md``) measures the error rates over hundreds of simulated
symbols; this one runs a handful in ``make test`` so a change that breaks the decision's error
control or its intervals fails here. Every symbol goes through ``ml.protocol.walk_forward``
(dataset, LightGBM teacher, distilled and calibrated student, out-of-sample evaluation of
window k-1's student on window k) and the briefing's ``brief_symbols``; nothing is simulated
but the market.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from sensequant_assets.ml.briefing import PROMOTE, PromotionGates, brief_symbols
from sensequant_assets.ml.dataset import model_features
from sensequant_assets.ml.features import MODEL_FEATURES
from sensequant_assets.ml.protocol import WalkForwardSettings, month_windows, walk_forward
from sensequant_assets.ml.stats import rank_ic_test
from sensequant_assets.sources.synthetic import SMOKE_TEST_SIGNAL_IC, SyntheticSource

H = 7
WINDOWS = month_windows(dt.date(2016, 1, 1), 6)  # 5 evaluated windows, ~600 out-of-sample rows
# The null universe runs the default configuration (two earlier windows in each fit), whose error
# rates the tolerances below quote. The degraded-pipeline test fits each window alone (lookback 0,
# the protocol on which its ICs were measured, at a third of the rows to fit).
DEFAULT = WalkForwardSettings(horizon=H)
SETTINGS = WalkForwardSettings(horizon=H, lookback_windows=0)
NULL_PROCESSES = ("random_walk", "garch", "garch_t", "regime")


@pytest.fixture(scope="module")
def null_universe() -> dict[str, pd.DataFrame]:
    """Eight no-signal symbols, two per null process (volatility clusters, fat tails, drift, regimes)."""
    out = {}
    for k, process in enumerate(NULL_PROCESSES):
        source = SyntheticSource(seed=100 + k, process=process)
        for symbol in (f"N{k}A", f"N{k}B"):
            out[symbol] = walk_forward(source, symbol, WINDOWS, DEFAULT).predictions
    return out


def test_a_null_universe_promotes_nothing_and_its_ic_intervals_cover_zero(
    null_universe: dict[str, pd.DataFrame],
) -> None:
    """Claims and tolerances (one seeded universe, so each is a check with a stated chance of failing):

    - nothing promoted: with 8 symbols BH's first threshold is a calibrated p <= 0.00625 (nominal z
      >= 0.15 + 1.10 * 2.50); under the normal fits of the study's default-configuration nulls
      (``docs/methodology.md``, 397 records each, z sd 0.92-1.00) a universe of 20 promotes
      something on at most 1.4 % of seeds, and one of 8 on fewer;
    - the 95 % IC interval covers the null IC of 0 for at least 6 of 8 symbols: an exact interval
      misses that on 0.6 % of universes, at the study's lowest measured coverage by null under
      the default (94.0 %) on 1.0 % (this seed covers 0 with 6: short records, 5 windows);
    - every one-sided IC p-value is a number (no symbol lost to a degenerate record).
    """
    briefed = brief_symbols(null_universe, horizon=H, n_trials=1, gates=PromotionGates())
    assert len(briefed) == 8 and all(b["windows"] == 5 for b in briefed)
    promoted = [b["symbol"] for b in briefed if b["decision"] == PROMOTE]
    assert promoted == [], [(b["symbol"], b["ic"]) for b in briefed]
    covered = [b["ic"]["ci_low"] <= 0.0 <= b["ic"]["ci_high"] for b in briefed]
    assert sum(covered) >= 6, [(b["symbol"], b["ic"]["ci_low"], b["ic"]["ci_high"]) for b in briefed]
    assert all(0.0 <= b["ic"]["p_value"] <= 1.0 for b in briefed)
    assert all(0.0 <= b["ic"]["p_value_calibrated"] <= 1.0 for b in briefed)


def _half_noise(seed: int):
    """``model_features`` with the inputs of a random half of the bars replaced by independent noise.

    Half the rows, not half the columns: the 14 model inputs are redundant transforms of one price
    path, and noising either half of the columns *raised* the out-of-sample IC (smoke strength,
    same 4 symbols: 0.362 all inputs, 0.430 even columns noised, 0.392 odd columns noised), so a
    column-half "degradation" destroys no information; see ``docs/methodology.md``.
    """

    def features(bars: pd.DataFrame) -> pd.DataFrame:
        out = model_features(bars)
        rng = np.random.default_rng(seed)
        rows = rng.random(len(out)) < 0.5
        out.loc[rows, MODEL_FEATURES] = rng.normal(size=(int(rows.sum()), len(MODEL_FEATURES)))
        return out

    return features


def test_a_degraded_pipeline_scores_lower() -> None:
    """With half of every window's inputs replaced by noise, the out-of-sample IC falls.

    Four symbols with the smoke-test signal (ideal IC 0.62: the score must be measurable in five
    windows on every symbol, which realistic strengths are not; see the power table of
    ``docs/methodology.md``). Same windows, seeds and models; only the inputs differ. Measured IC
    intact -> degraded: 0.366 -> 0.165, 0.486 -> 0.139, 0.358 -> 0.072, 0.319 -> 0.077; the claim
    checked is a drop of at least a third on each symbol.
    """
    source = SyntheticSource(seed=7, signal_ic=SMOKE_TEST_SIGNAL_IC, process="garch_t")
    for k, symbol in enumerate(("P0", "P1", "P2", "P3")):
        ics = []
        for fn in (None, _half_noise(k)):
            pred = walk_forward(source, symbol, WINDOWS, SETTINGS, feature_fn=fn).predictions
            ics.append(rank_ic_test(pred["student_score"], pred["forward_return"], horizon=H)["ic"])
        intact, degraded = ics
        assert intact > 0.2 and degraded < intact * 2 / 3, (symbol, intact, degraded)
