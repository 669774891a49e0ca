"""Promotion briefing: a planted signal is promoted, each gate decides alone, numbers are reproducible.

The methodology test runs the whole pure-layer protocol (``walk_forward`` in
test_ml_walk_forward, with the pipeline's defaults) on the synthetic source's planted-signal
symbols; the gate tests use handmade prediction frames in which exactly one gate fails.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t

from sensequant_assets.ml.briefing import (
    INSUFFICIENT_DATA,
    PROMOTE,
    REJECT,
    PromotionGates,
    brief_symbols,
    decide,
    render_markdown,
    symbol_briefing,
    symbol_statistics,
)
from sensequant_assets.ml.evaluation import auc, log_loss_series, spearman_ic
from sensequant_assets.ml.stats import (
    deflated_sharpe_ratio,
    diebold_mariano,
    hac_mean_test,
    rank_ic_test,
    sharpe_ratio,
)
from sensequant_assets.sources.synthetic import SyntheticSource
from sensequant_tests.test_ml_walk_forward import (
    PLANTED_IC,
    PROTOCOL_SYMBOLS,
    PROTOCOL_TRIALS,
    PROTOCOL_WINDOWS,
    H,
    walk_forward,
)


@pytest.fixture(scope="module")
def planted() -> dict[str, pd.DataFrame]:
    source = SyntheticSource(seed=0, signal_ic=PLANTED_IC)
    return {symbol: walk_forward(source, symbol, PROTOCOL_WINDOWS)[0] for symbol in PROTOCOL_SYMBOLS}


def test_planted_signal_is_promoted(planted: dict[str, pd.DataFrame]) -> None:
    """The smoke-test signal (ideal IC 0.62) is promoted on every default symbol, judged as one family."""
    briefings = brief_symbols(planted, horizon=H, n_trials=PROTOCOL_TRIALS, gates=PromotionGates())
    for b in briefings:
        assert b["windows"] == 5, b["symbol"]
        assert b["decision"] == PROMOTE, (b["symbol"], b["reasons"], b["gates"])
        assert b["ic"]["ci_low"] > 0.0 and b["ic"]["q_value"] <= 0.05, b["symbol"]
        assert b["ic"]["family_size"] == len(planted)
        # Diebold-Mariano, DSR and the excess return are reported but are not default gates.
        assert b["diebold_mariano"]["p_value"] is not None, b["symbol"]
        assert set(b["gates"]) == {"min_windows", "min_rows", "ic_fdr"}
        assert b["excess"]["ci_low"] < b["excess"]["annualised"] < b["excess"]["ci_high"]


def test_briefing_numbers_are_recomputed_from_the_predictions(planted: dict[str, pd.DataFrame]) -> None:
    pred = planted["INFY"]
    b = symbol_briefing(pred, horizon=H, n_trials=2, gates=PromotionGates())
    ordered = pred.sort_values("ts")
    score = ordered["student_score"]  # standardised raw log-odds: what the IC and AUC rank
    assert b["n"] == len(pred)
    assert b["auc"]["pooled"] == pytest.approx(auc(1.0 / (1.0 + np.exp(-score)), ordered["label"]))
    assert b["ic"]["pooled"] == pytest.approx(spearman_ic(score, ordered["forward_return"]))
    ic = rank_ic_test(score, ordered["forward_return"], horizon=H)
    assert b["ic"]["p_value"] == ic["p_greater"] and b["ic"]["se"] == ic["se"]
    # The calibrated null: z referred to shift + scale * t (the no-signal spread the study measured).
    gates = PromotionGates()
    assert (
        (b["ic"]["null_shift"], b["ic"]["null_scale"]) == (gates.null_shift, gates.null_scale) == (0.15, 1.10)
    )
    assert b["ic"]["stat"] == ic["stat"]
    calibrated = student_t.sf((ic["stat"] - 0.15) / 1.10, ic["df"])
    assert b["ic"]["p_value_calibrated"] == pytest.approx(calibrated)
    assert b["ic"]["p_value_adjusted"] == pytest.approx(min(1.0, 2 * calibrated))  # two configurations
    nominal_gates = PromotionGates(null_shift=0.0, null_scale=1.0)
    nominal = symbol_briefing(pred, horizon=H, n_trials=2, gates=nominal_gates)
    assert nominal["ic"]["p_value_adjusted"] == pytest.approx(min(1.0, 2 * ic["p_greater"]))
    # The decision's gates decide the adjustment, whatever gates the statistics were computed under.
    stats = symbol_statistics(pred, horizon=H, n_trials=2, gates=PromotionGates())
    (redecided,) = decide([stats], nominal_gates)
    assert redecided["ic"]["p_value_adjusted"] == nominal["ic"]["p_value_adjusted"]
    assert redecided["ic"]["null_scale"] == 1.0
    assert b["ic"]["q_value"] == b["ic"]["p_value_adjusted"]  # a family of one
    per_window = [auc(g["student_proba"], g["label"]) for _, g in ordered.groupby("window")]
    # Within a window the calibrated probability ranks exactly like the score (the map is increasing).
    assert b["auc"]["mean_per_window"] == pytest.approx(np.mean(per_window))
    assert b["ic"]["ci_low"] < b["ic"]["pooled"] < b["ic"]["ci_high"]
    returns = ordered["strategy_return"].to_numpy()
    excess = np.log1p(returns) - np.log1p(ordered["buy_hold_return"].to_numpy())
    assert b["excess"]["annualised"] == pytest.approx(252 * excess.mean())
    assert b["excess"]["p_value"] == hac_mean_test(excess)["p_greater"]
    assert b["sharpe"]["annualised"] == sharpe_ratio(returns)
    assert b["sharpe"]["dsr"] == deflated_sharpe_ratio(excess, 2)["dsr"]
    labels = ordered["label"].to_numpy(dtype=float)
    dm = diebold_mariano(
        log_loss_series(ordered["student_proba"], labels),
        log_loss_series(ordered["baseline_proba"], labels),
        h=H,
    )
    assert b["diebold_mariano"]["p_value"] == dm["p_value"]
    assert b["strategy"]["cumulative_return"] == pytest.approx(np.prod(1 + returns) - 1)
    assert b["buy_hold"]["cumulative_return"] == pytest.approx(np.prod(1 + ordered["buy_hold_return"]) - 1)
    cash = symbol_briefing(pred, horizon=H, n_trials=2, gates=PromotionGates(benchmark="cash"))
    assert cash["excess"]["annualised"] == pytest.approx(252 * np.log1p(returns).mean())


def test_briefing_is_deterministic(planted: dict[str, pd.DataFrame]) -> None:
    pred = planted["TCS"]
    gates = PromotionGates()
    a = symbol_briefing(pred, horizon=H, n_trials=3, gates=gates)
    b = symbol_briefing(pred.copy(), horizon=H, n_trials=3, gates=gates)
    shuffled = symbol_briefing(pred.sample(frac=1.0, random_state=1), horizon=H, n_trials=3, gates=gates)
    assert a == b == shuffled
    assert json.dumps(a, sort_keys=True) == json.dumps(shuffled, sort_keys=True)


# ------------------------------------------------------------------------------- handmade gates


def handmade(
    *,
    windows: int = 3,
    rows: int = 200,
    strategy_drift: float = 0.002,
    buy_hold_drift: float = 0.0005,
    proba: str = "informative",
    baseline: float = 0.5,
) -> pd.DataFrame:
    """A predictions frame built by hand: labels in runs of 10, chosen probabilities and returns."""
    rng = np.random.default_rng(0)
    n = windows * rows
    label = ((np.arange(n) // 10) % 2 == 0).astype(int)
    noise = rng.uniform(-0.15, 0.15, n)
    student = {
        "informative": np.where(label == 1, 0.7, 0.3) + noise,
        # Ranks perfectly but says "up" with >= 90 % everywhere: terrible log loss.
        "overconfident": np.where(label == 1, 0.99, 0.9) + noise / 20,
        "uninformative": 0.5 + noise / 3,
    }[proba]
    return pd.DataFrame(
        {
            "ts": pd.bdate_range("2023-01-02", periods=n, tz="Asia/Kolkata"),
            "symbol": "AAA",
            "window": np.repeat([f"AAA|w{k}" for k in range(windows)], rows),
            "close": 100.0,
            "label": label,
            "forward_return": np.where(label == 1, 0.03, -0.03) + rng.normal(0, 0.01, n),
            "teacher_proba": student,
            "student_proba": student,
            "baseline_proba": baseline,
            "position": (student > 0.5).astype(int),
            "strategy_return": strategy_drift + rng.normal(0, 0.01, n),
            "buy_hold_return": buy_hold_drift + rng.normal(0, 0.01, n),
        }
    )


def _brief(frame: pd.DataFrame, **gates: object) -> dict:
    return symbol_briefing(frame, horizon=H, n_trials=1, gates=PromotionGates(**gates))


def test_handmade_frame_passes_every_gate() -> None:
    b = _brief(handmade(), max_excess_pvalue=0.05, min_dsr=0.95)
    assert b["decision"] == PROMOTE
    assert b["reasons"] == ["min_windows", "min_rows", "ic_fdr", "excess_return", "dsr"]
    assert all(g["passed"] for g in b["gates"].values())
    json.dumps(b)
    gated = _brief(handmade(), max_excess_pvalue=0.05, min_dsr=0.95, max_dm_pvalue=0.05)
    assert gated["decision"] == PROMOTE
    assert gated["reasons"] == [*b["reasons"], "dm_pvalue"]


@pytest.mark.parametrize(
    ("change", "gates", "gate"),
    [
        ({"buy_hold_drift": 0.004}, {"max_excess_pvalue": 0.05}, "excess_return"),
        # Beats buy-and-hold by too little to be sure, once the trials are deflated.
        ({"strategy_drift": 0.0008, "buy_hold_drift": 0.0005}, {"min_dsr": 0.95}, "dsr"),
        # Chance ranking, but still a better log loss than a badly wrong base rate.
        (
            {"proba": "uninformative", "baseline": 0.05},
            {"max_excess_pvalue": 0.05, "min_dsr": 0.95},
            "ic_fdr",
        ),
    ],
)
def test_one_failing_gate_rejects_and_is_named(change: dict, gates: dict, gate: str) -> None:
    b = _brief(handmade(**change), **gates)
    assert b["decision"] == REJECT
    assert b["reasons"] == [gate]
    assert not b["gates"][gate]["passed"]


def test_volatility_alone_is_not_promoted() -> None:
    """A score that knows how big the next move is, but not its sign, fails the direction-aware gate.

    Its AUC against the predecessor's "+2 %" label is well above 0.5 -- the old gate passed it.
    """
    rng = np.random.default_rng(4)
    n = 1200
    vol = np.repeat(rng.uniform(0.005, 0.04, n // 20), 20)
    forward = rng.normal(0.0, vol)
    frame = handmade(windows=4, rows=n // 4).assign(
        student_proba=np.clip(vol * 10, 0.01, 0.99),
        forward_return=forward,
        label=(forward > 0.02).astype(int),
    )
    b = _brief(frame)
    assert b["auc"]["pooled"] > 0.65
    assert b["decision"] == REJECT and b["reasons"] == ["ic_fdr"]


def test_the_family_and_the_configurations_tried_raise_the_bar() -> None:
    """A p-value that promotes a symbol alone does not survive 50 no-edge neighbours or 40 configurations."""
    rng = np.random.default_rng(8)
    weak = handmade(proba="uninformative", windows=10, rows=60)
    weak = weak.assign(forward_return=(weak["student_proba"] - 0.5) * 0.06 + rng.normal(0, 0.02, len(weak)))
    alone = _brief(weak)
    assert alone["decision"] == PROMOTE and 0.001 < alone["ic"]["p_value_calibrated"] < 0.05
    many_configs = symbol_briefing(weak, horizon=H, n_trials=40, gates=PromotionGates())
    assert many_configs["decision"] == REJECT
    assert many_configs["ic"]["p_value_adjusted"] == pytest.approx(
        min(1.0, 40 * alone["ic"]["p_value_calibrated"])
    )
    family = {"AAA": weak}
    for k in range(50):
        noise = handmade(proba="uninformative", windows=10, rows=60).assign(symbol=f"N{k:02d}")
        family[f"N{k:02d}"] = noise.assign(forward_return=rng.normal(0, 0.02, len(noise)))
    decided = {b["symbol"]: b for b in brief_symbols(family, horizon=H, n_trials=1, gates=PromotionGates())}
    assert decided["AAA"]["decision"] == REJECT
    assert decided["AAA"]["ic"]["q_value"] > alone["ic"]["q_value"]
    assert decided["AAA"]["ic"]["family_size"] == 51
    assert decided["AAA"]["sharpe"]["dsr_trials"] == 51


def test_diebold_mariano_is_reported_by_default_and_gates_when_set() -> None:
    """A student significantly worse than the base rate: reported by default, REJECTED once gated.

    It ranks perfectly (every other gate passes) but says "up" with >= 90 % everywhere. A
    significant DM result in the baseline's favour must not pass the gate.
    """
    frame = handmade(proba="overconfident")
    reported = _brief(frame)
    dm = reported["diebold_mariano"]
    assert dm["p_value"] < 0.05
    assert dm["mean_diff"] > 0  # the student's log loss is the larger
    assert dm["student_log_loss"] > dm["baseline_log_loss"]
    assert "dm_pvalue" not in reported["gates"]
    assert reported["gates_config"]["max_dm_pvalue"] is None
    assert reported["decision"] == PROMOTE

    gated = _brief(frame, max_dm_pvalue=0.05)
    assert gated["decision"] == REJECT
    assert gated["reasons"] == ["dm_pvalue"]
    assert gated["gates"]["dm_pvalue"] == {
        "value": dm["p_value"],
        "threshold": 0.05,
        "op": "<=",
        "passed": False,
    }
    # Everything but the decision is the same briefing.
    assert gated["diebold_mariano"] == dm
    assert gated["ic"] == reported["ic"]


def test_too_little_data_is_insufficient_not_a_verdict() -> None:
    one_window = _brief(handmade(windows=1, rows=600))
    assert one_window["decision"] == INSUFFICIENT_DATA
    assert one_window["reasons"] == ["min_windows"]
    few_rows = _brief(handmade(windows=2, rows=40, proba="uninformative"))
    assert few_rows["decision"] == INSUFFICIENT_DATA
    assert few_rows["reasons"] == ["min_rows"]
    empty = symbol_briefing(handmade().iloc[:0], horizon=H, n_trials=1, gates=PromotionGates(), symbol="AAA")
    assert empty["decision"] == INSUFFICIENT_DATA
    assert empty["reasons"] == ["min_windows", "min_rows"]
    json.dumps(empty)
    # A symbol short of data is not part of the multiple-testing family.
    decided = brief_symbols(
        {"AAA": handmade(), "BBB": handmade(windows=1).assign(symbol="BBB")},
        horizon=H,
        n_trials=1,
        gates=PromotionGates(),
    )
    assert [b["ic"]["family_size"] for b in decided] == [1, 1]


def test_bad_input_is_refused() -> None:
    frame = handmade()
    with pytest.raises(ValueError, match="several symbols"):
        _brief(pd.concat([frame, frame.assign(symbol="BBB", ts=frame["ts"] + pd.Timedelta(days=1000))]))
    with pytest.raises(ValueError, match="student_proba"):
        _brief(frame.drop(columns="student_proba"))
    with pytest.raises(ValueError, match="repeat"):
        _brief(pd.concat([frame, frame]))
    for bad in ({"fdr": 0.0}, {"benchmark": "nifty"}, {"min_dsr": 1.0}, {"max_excess_pvalue": 0.0}):
        with pytest.raises(ValueError):
            PromotionGates(**bad)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="max_dm_pvalue"):
            PromotionGates(max_dm_pvalue=bad)
    assert PromotionGates(max_dm_pvalue=1.0).max_dm_pvalue == 1.0
    for bad in ({"null_shift": -0.1}, {"null_shift": 4.0}, {"null_scale": 0.9}, {"null_scale": 3.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PromotionGates(**bad)


def test_render_markdown_has_a_row_and_gate_lines_per_symbol() -> None:
    promoted = _brief(handmade())
    rejected = {**_brief(handmade(buy_hold_drift=0.004), max_excess_pvalue=0.05), "symbol": "BBB"}
    md = render_markdown([promoted, rejected], generated_at="2024-07-01T00:00:00Z")
    assert "2024-07-01T00:00:00Z" in md
    assert "| symbol | decision | windows | n | IC [CI] | p (calibrated, x configs) | q | AUC |" in md
    assert "The IC interval is nominal while the test uses the calibrated null" in md
    ic = promoted["ic"]
    z, scaled = ic["stat"], (ic["stat"] - 0.15) / 1.10
    assert f"IC z {z:.2f}, p-value {ic['p_value']:.4f} (nominal), " in md
    assert f"against the calibrated null (z - 0.15) / 1.10 = {scaled:.2f}, " in md
    table = [line for line in md.splitlines() if line.startswith("| AAA") or line.startswith("| BBB")]
    assert len(table) == 2
    assert "| AAA | PROMOTE | 3 | 600 |" in table[0]
    assert "## BBB: REJECT" in md
    ex = rejected["gates"]["excess_return"]
    assert f"- FAIL `excess_return`: {ex['value']:.4f}, needs <= 0.0500" in md
    assert "- pass `ic_fdr`: " in md
    assert f"{promoted['ic']['pooled']:.3f} [{promoted['ic']['ci_low']:.3f}" in table[0]
    # Reported-not-a-gate lines for what does not gate.
    assert md.count("- reported, not a gate: Diebold-Mariano p-value ") == 2
    assert md.count("- reported, not a gate: excess log return") == 1
    assert "`dm_pvalue`" not in md


def test_render_markdown_shows_a_dm_gate_as_pass_or_fail() -> None:
    worse = _brief(handmade(proba="overconfident"))
    worse_gated = _brief(handmade(proba="overconfident"), max_dm_pvalue=0.05)
    better_gated = {**_brief(handmade(), max_dm_pvalue=0.05), "symbol": "BBB"}
    dm = worse["diebold_mariano"]
    losses = f"({dm['student_log_loss']:.3f} vs {dm['baseline_log_loss']:.3f})"

    md = render_markdown([worse], generated_at="t")
    assert f"- reported, not a gate: Diebold-Mariano p-value {dm['p_value']:.3f}, " in md
    assert f"student log loss above the base rate's {losses}" in md
    assert "## AAA: PROMOTE" in md

    md = render_markdown([worse_gated, better_gated], generated_at="t")
    assert "Diebold-Mariano p-value" not in md.split("## AAA")[1].split("## BBB")[0].replace("FAIL", "")
    assert "## AAA: REJECT" in md and "## BBB: PROMOTE" in md
    assert f"- FAIL `dm_pvalue`: {dm['p_value']:.4f}, needs <= 0.0500 with the student's log loss below" in md
    assert "- pass `dm_pvalue`: " in md


def test_the_ic_ranks_student_score_where_recorded() -> None:
    """``student_score`` (comparable across windows) is what is ranked; old records rank the probability."""
    frame = handmade()
    assert _brief(frame)["ic"]["pooled"] > 0.5
    reversed_score = _brief(frame.assign(student_score=-frame["student_proba"]))
    assert reversed_score["ic"]["pooled"] < -0.5 and reversed_score["decision"] == REJECT
    assert reversed_score["auc"]["pooled"] < 0.5


# ------------------------------------------------------------------------ the calibrated null


NOMINAL = PromotionGates(null_shift=0.0, null_scale=1.0)


def _weak(seed: int, slope: float) -> pd.DataFrame:
    """An uninformative-looking record whose forward return leans on the score by ``slope``."""
    rng = np.random.default_rng(seed)
    frame = handmade(proba="uninformative", windows=10, rows=60)
    return frame.assign(
        forward_return=(frame["student_proba"] - 0.5) * slope + rng.normal(0, 0.02, len(frame))
    )


def test_the_calibrated_null_rejects_a_borderline_record_the_nominal_test_promotes() -> None:
    """Nominal p in (0.026, 0.05): PROMOTE under the nominal null, REJECT (ic_fdr) under the default."""
    frame = _weak(2, 0.02)
    nominal = symbol_briefing(frame, horizon=H, n_trials=1, gates=NOMINAL)
    calibrated = _brief(frame)
    assert 0.026 < nominal["ic"]["p_value"] < 0.05
    assert nominal["ic"]["p_value"] == calibrated["ic"]["p_value"]  # the same record, the same z
    assert nominal["decision"] == PROMOTE
    assert calibrated["ic"]["p_value_calibrated"] > 0.05
    assert calibrated["decision"] == REJECT and calibrated["reasons"] == ["ic_fdr"]


def test_the_calibrated_null_holds_a_family_of_twenty_the_nominal_test_would_promote() -> None:
    """Best nominal p of 20 symbols in (0.0006, 0.0025): BH promotes it under the nominal null
    (20 p <= 0.05), nothing under the calibrated one (its calibrated p is above 0.05 / 20)."""
    rng = np.random.default_rng(7)
    base = handmade(proba="uninformative", windows=10, rows=60)
    family = {
        "AAA": base.assign(forward_return=(base["student_proba"] - 0.5) * 0.06 + rng.normal(0, 0.02, 600))
    }
    for k in range(19):
        family[f"N{k:02d}"] = base.assign(symbol=f"N{k:02d}", forward_return=rng.normal(0, 0.02, 600))
    stats = [
        symbol_statistics(f, horizon=H, n_trials=1, gates=PromotionGates()) for _, f in sorted(family.items())
    ]
    best = min(stats, key=lambda s: s["ic"]["p_value"])
    assert best["symbol"] == "AAA" and 0.0006 < best["ic"]["p_value"] < 0.0025
    nominal = decide(stats, NOMINAL)
    assert [b["symbol"] for b in nominal if b["decision"] == PROMOTE] == ["AAA"]
    assert all(b["ic"]["family_size"] == 20 for b in nominal)
    calibrated = decide(stats, PromotionGates())
    assert [b["decision"] for b in calibrated] == [REJECT] * 20
    assert min(b["ic"]["q_value"] for b in calibrated) > 0.05


def test_redeciding_under_other_gates_records_them_and_refuses_what_needs_new_statistics() -> None:
    frame = _weak(2, 0.02)
    stats = symbol_statistics(frame, horizon=H, n_trials=1, gates=PromotionGates())
    other = PromotionGates(fdr=0.10, null_shift=0.0, null_scale=1.0, min_rows=100, min_dsr=0.5)
    (redecided,) = decide([stats], other)
    assert redecided["gates_config"] == asdict(other)
    assert redecided["gates"]["ic_fdr"]["threshold"] == 0.10 and "dsr" in redecided["gates"]
    assert stats["gates_config"] == asdict(PromotionGates())  # the statistics are not changed
    with pytest.raises(ValueError, match=r"alpha=0\.05.*alpha=0\.1.*recompute"):
        decide([stats], PromotionGates(alpha=0.1))
    with pytest.raises(ValueError, match=r"AAA.*benchmark='buy_hold'.*benchmark='cash'"):
        decide([stats], PromotionGates(benchmark="cash"))
    # Recomputed under the new benchmark, the same gates decide.
    cash = symbol_statistics(frame, horizon=H, n_trials=1, gates=PromotionGates(benchmark="cash"))
    assert (
        decide([cash], PromotionGates(benchmark="cash", fdr=0.10))[0]["gates_config"]["benchmark"] == "cash"
    )


def test_an_ic_p_value_without_its_statistic_is_refused_not_dropped() -> None:
    stats = symbol_statistics(handmade(), horizon=H, n_trials=1, gates=PromotionGates())
    for key in ("stat", "df"):
        broken = {**stats, "ic": {**stats["ic"], key: None}}
        with pytest.raises(ValueError, match=rf"AAA.*'{key}'"):
            decide([broken], PromotionGates())
    # No p-value at all (a degenerate record) is not an error: it has nothing to correct.
    empty = {**stats, "ic": {**stats["ic"], "p_value": None, "stat": None, "df": None}}
    (decided,) = decide([empty], PromotionGates())
    assert decided["ic"]["p_value_adjusted"] is None and decided["decision"] == REJECT
