"""Promotion statistics of each symbol's stitched out-of-sample record, gates and decisions.

Every evaluated window of a symbol (the student of window k-1 predicting window k, see
``ml.walk_forward``) is stitched into one time-ordered record; every number here is recomputed
from those stored predictions, so a briefing can be reproduced from the artifacts alone and
nothing is simulated.

The decision is built to hold its error rate (``docs/methodology.md`` has the simulation study
behind every choice):

- **Direction, not volatility.** The primary statistic is the rank information coefficient of
  the student's score (``student_score``: its raw log-odds standardised by its training window,
  comparable across windows; the calibrated probability for records without it) against the
  forward return. A score that only knows "a big move is coming" ranks both tails alike, so it
  cannot move this statistic when returns are symmetric about a level that does not depend on
  the volatility; skew or a volatility-dependent drift can (the null is that the score does not
  predict the forward return's rank, see ``stats.rank_ic_test``). AUC is reported but
  gates nothing: for a threshold label it is largely a volatility score.
- **Honest uncertainty under overlap.** The IC's interval and one-sided p-value use a HAC
  variance with ``horizon - 1`` lags (exact under the null for h-bar overlapping returns, see
  ``stats.rank_ic_test``) and Student's t with ``n / horizon - 1`` degrees of freedom; analytic,
  so a briefing of 500 symbols stays cheap and its p-values are fine-grained enough for a
  multiple-testing correction.
- **Multiplicity.** The IC's z-statistic is referred to a calibrated null,
  ``null_shift + null_scale * t`` (0.15 + 1.10 t: the worst mean and spread of z measured on
  no-signal records of the real pipeline, about 2,340 rows each, h = 7, ``sign`` label; see
  ``docs/methodology.md``), not to ``t``. That p-value is multiplied by the configurations tried
  for the symbol (Bonferroni: the judged configuration may be the best of several), then the
  symbols of one briefing are corrected together with Benjamini-Hochberg at ``fdr``, which
  targets a share of no-edge symbols among the promoted of at most ``fdr`` (and, in a universe
  with no edge anywhere, no promotion with probability ``1 - fdr``). The target holds as well as
  the calibrated null does: it was measured on 10-year records, and shorter ones (down to
  ``min_rows``) may over-reject more than it allows for.
- **Worth trading.** The strategy's log return in excess of a benchmark (buy-and-hold by default)
  has its own HAC interval and one-sided p-value; with ``max_excess_pvalue`` set it is a gate.
  The deflated Sharpe ratio of the excess returns counts every configuration of every symbol in
  the briefing as a trial; the Diebold-Mariano test of the log loss against the base rate is
  reported; each becomes a gate when its threshold is set.

Pure pandas/numpy/scipy; no Dagster, no file I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from sensequant_assets.ml.evaluation import auc, log_loss_series
from sensequant_assets.ml.stats import (
    benjamini_hochberg,
    deflated_sharpe_ratio,
    diebold_mariano,
    hac_mean_test,
    rank_ic_test,
    sharpe_ratio,
)

PROMOTE = "PROMOTE"
REJECT = "REJECT"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"

BRIEFING_COLUMNS = (
    "ts",
    "symbol",
    "window",
    "label",
    "forward_return",
    "student_proba",
    "baseline_proba",
    "position",
    "strategy_return",
    "buy_hold_return",
)
DATA_GATES = ("min_windows", "min_rows")
BENCHMARKS = ("buy_hold", "cash")
PERIODS_PER_YEAR = 252


@dataclass(frozen=True)
class PromotionGates:
    """Thresholds of the promotion decision.

    ``fdr``: Benjamini-Hochberg level on the symbols' one-sided IC p-values, each referred to
    the calibrated null and multiplied by its configurations tried. ``null_shift`` /
    ``null_scale``: the calibrated null. On no-signal records of the real pipeline the IC's
    z-statistic has a mean up to +0.15 and a spread up to 1.10 by null (646 symbols,
    ``docs/methodology.md``), so it is referred to ``null_shift + null_scale * t`` instead of
    ``t``: that holds the decision's error rate in the far tail that a correction over hundreds
    of symbols reads, where a constant factor on the p-value does not. ``(0, 1)`` is the
    nominal test.
    ``max_excess_pvalue``: the one-sided p-value of a positive mean log return in excess of
    ``benchmark`` (``buy_hold`` or ``cash``) must be at most this; None reports it without gating.
    ``min_dsr`` / ``max_dm_pvalue``: None reports the deflated Sharpe ratio / Diebold-Mariano
    test; a number makes it a gate (the DM gate also needs the student's log loss below the base
    rate's). ``alpha``: 1 - the level of every interval. Fewer than ``min_windows`` windows or
    ``min_rows`` rows is INSUFFICIENT_DATA, not a verdict.
    """

    min_windows: int = 2
    min_rows: int = 500
    fdr: float = 0.05
    null_shift: float = 0.15
    null_scale: float = 1.10
    max_excess_pvalue: float | None = None
    benchmark: str = "buy_hold"
    min_dsr: float | None = None
    max_dm_pvalue: float | None = None
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if self.min_windows < 1 or self.min_rows < 1:
            raise ValueError("min_windows and min_rows must be >= 1")
        if not 0.0 < self.fdr < 1.0:
            raise ValueError(f"fdr must be in (0, 1), got {self.fdr}")
        if not 0.0 <= self.null_shift <= 3.0:
            raise ValueError(f"null_shift must be in [0, 3], got {self.null_shift}")
        if not 1.0 <= self.null_scale <= 3.0:
            raise ValueError(f"null_scale must be in [1, 3], got {self.null_scale}")
        for name in ("max_excess_pvalue", "max_dm_pvalue"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.min_dsr is not None and not 0.0 <= self.min_dsr < 1.0:
            raise ValueError(f"min_dsr must be in [0, 1), got {self.min_dsr}")
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {self.benchmark!r}")
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")


# --------------------------------------------------------------------------------------------
# Pieces of the briefing
# --------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """A plain float, or None for missing/NaN/inf: the briefing must stay valid JSON."""
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _prepare(predictions: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in BRIEFING_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    symbols = sorted(map(str, pd.unique(predictions["symbol"])))
    if len(symbols) > 1:
        raise ValueError(f"predictions hold several symbols {symbols}; brief one symbol at a time")
    frame = predictions.assign(ts=pd.to_datetime(predictions["ts"]))
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    if frame["ts"].duplicated().any():
        raise ValueError("predictions repeat a timestamp (the same window evaluated twice?)")
    return frame


def ranking_score(frame: pd.DataFrame) -> tuple[pd.Series, str]:
    """The score the IC ranks and its column: ``student_score`` if every row has one, else the
    calibrated ``student_proba`` for the whole record (evaluations written before
    ``student_score`` existed; across windows calibration shifts it, so the briefing names the
    column it ranked, and re-evaluating the old windows restores the comparable score)."""
    if "student_score" in frame.columns and frame["student_score"].notna().all():
        return frame["student_score"].astype("float64"), "student_score"
    return frame["student_proba"].astype("float64"), "student_proba"


def _ic(frame: pd.DataFrame, horizon: int, alpha: float) -> dict[str, Any]:
    """Pooled rank IC with its HAC interval and one-sided p-value, and the per-window ICs."""
    score, column = ranking_score(frame)
    per_window = []
    for window, part in frame.groupby("window", sort=True):
        test = rank_ic_test(score[part.index], part["forward_return"], horizon=horizon, alpha=alpha)
        per_window.append({"window": str(window), "n": len(part), "ic": _num(test["ic"])})
    pooled = rank_ic_test(score, frame["forward_return"], horizon=horizon, alpha=alpha)
    defined = [w["ic"] for w in per_window if w["ic"] is not None]
    return {
        "pooled": _num(pooled["ic"]),
        "se": _num(pooled["se"]),
        "null_se": _num(pooled["null_se"]),
        "null_kernel": pooled["null_kernel"],
        "df": _num(pooled["df"]),
        "ci_low": _num(pooled["ci_low"]),
        "ci_high": _num(pooled["ci_high"]),
        "p_value": _num(pooled["p_greater"]),
        "stat": _num(pooled["stat"]),
        "score": column,
        "kernel": pooled["kernel"],
        "lags": pooled["lags"],
        "mean_per_window": _num(np.mean(defined)) if defined else None,
        "per_window": per_window,
    }


def _auc(frame: pd.DataFrame) -> dict[str, Any]:
    """Descriptive AUC (pooled and per window); it gates nothing (see the module docstring)."""
    score = ranking_score(frame)[0].rank(pct=True)  # AUC is rank-based; percentiles lie in (0, 1]
    per_window = [
        {"window": str(window), "n": len(part), "auc": _num(auc(score[part.index], part["label"]))}
        for window, part in frame.groupby("window", sort=True)
    ]
    defined = [w["auc"] for w in per_window if w["auc"] is not None]
    pooled = auc(score, frame["label"]) if len(frame) >= 2 else None
    return {
        "pooled": _num(pooled),
        "mean_per_window": _num(np.mean(defined)) if defined else None,
        "per_window": per_window,
    }


def excess_log_returns(frame: pd.DataFrame, benchmark: str) -> NDArray[np.float64]:
    """Per-bar log return of the strategy minus the benchmark's (costs included on both legs).

    Log returns make the excess additive over time and keep a fat-tailed bar from dominating
    through compounding; ``cash`` is a zero return.
    """
    strategy = np.log1p(frame["strategy_return"].to_numpy(dtype="float64"))
    if benchmark == "cash":
        return strategy
    return strategy - np.log1p(frame["buy_hold_return"].to_numpy(dtype="float64"))


def _excess(frame: pd.DataFrame, gates: PromotionGates) -> dict[str, Any]:
    """Annualised mean excess log return with a HAC (Newey-West) interval and one-sided p-value."""
    out: dict[str, Any] = {"benchmark": gates.benchmark}
    keys = ("annualised", "ci_low", "ci_high", "p_value", "lags")
    if len(frame) < 3:
        return {**out, **dict.fromkeys(keys)}
    test = hac_mean_test(excess_log_returns(frame, gates.benchmark), alpha=gates.alpha)
    scale = PERIODS_PER_YEAR
    return {
        **out,
        "annualised": _num(test["mean"] * scale),
        "ci_low": _num(None if test["ci_low"] is None else test["ci_low"] * scale),
        "ci_high": _num(None if test["ci_high"] is None else test["ci_high"] * scale),
        "p_value": _num(test["p_greater"]),
        "lags": test["lags"],
    }


def _leg(returns: NDArray[np.float64], position: NDArray[np.float64] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cumulative_return": _num(np.prod(1.0 + returns) - 1.0) if returns.size else None,
        "annualised_sharpe": _num(sharpe_ratio(returns)),
    }
    if position is not None:
        out["exposure"] = _num(position.mean()) if position.size else None
    return out


def _diebold_mariano(frame: pd.DataFrame, horizon: int) -> dict[str, Any]:
    """DM test of the student's per-row log loss against the base rate's (negative: student better)."""
    out: dict[str, Any] = dict.fromkeys(("stat", "p_value", "mean_diff", "kernel", "student_log_loss"))
    out.update(baseline_log_loss=None, h=int(horizon))
    if frame.empty:
        return out
    labels = frame["label"].to_numpy(dtype="float64")
    student = log_loss_series(frame["student_proba"], labels)
    baseline = log_loss_series(frame["baseline_proba"], labels)
    out["student_log_loss"] = _num(student.mean())
    out["baseline_log_loss"] = _num(baseline.mean())
    if len(frame) > max(1, horizon):
        dm = diebold_mariano(student, baseline, h=horizon)
        out.update(stat=_num(dm["stat"]), p_value=_num(dm["p_value"]), mean_diff=_num(dm["mean_diff"]))
        out["kernel"] = dm["kernel"]
    return out


def symbol_statistics(
    predictions: pd.DataFrame,
    *,
    horizon: int,
    n_trials: int,
    gates: PromotionGates,
    symbol: str | None = None,
) -> dict[str, Any]:
    """Every statistic of one symbol's record, before any decision (which needs the whole family).

    ``n_trials``: configurations tried for this symbol (:func:`decide` refers the IC to the
    calibrated null and multiplies by it). ``symbol`` is only needed when ``predictions`` is empty.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    frame = _prepare(predictions)
    if symbol is None:
        if frame.empty:
            raise ValueError("empty predictions: pass symbol= to brief a symbol with no evaluated window")
        symbol = str(frame["symbol"].iloc[0])
    n = len(frame)
    strategy = frame["strategy_return"].to_numpy(dtype="float64")
    buy_hold = frame["buy_hold_return"].to_numpy(dtype="float64")
    ic = _ic(frame, horizon, gates.alpha) if n else _ic_empty()
    return {
        "symbol": symbol,
        "windows": int(frame["window"].nunique()),
        "n": int(n),
        "first_ts": frame["ts"].iloc[0].isoformat() if n else None,
        "last_ts": frame["ts"].iloc[-1].isoformat() if n else None,
        "horizon": int(horizon),
        "n_trials": int(n_trials),
        "ic": ic,
        "auc": _auc(frame) if n else {"pooled": None, "mean_per_window": None, "per_window": []},
        "excess": _excess(frame, gates),
        "diebold_mariano": _diebold_mariano(frame, horizon),
        "strategy": _leg(strategy, frame["position"].to_numpy(dtype="float64")),
        "buy_hold": _leg(buy_hold, None),
        "_excess_returns": excess_log_returns(frame, gates.benchmark),
        "gates_config": asdict(gates),
    }


def _adjusted(ic: dict[str, Any], n_trials: int, gates: PromotionGates, symbol: str) -> dict[str, Any]:
    """The IC's p-value under the calibrated null, and that times the configurations tried
    (what Benjamini-Hochberg corrects).

    An IC with a p-value but no z-statistic or degrees of freedom (statistics written before the
    calibrated null, or edited by hand) is refused: left out, it would silently leave the family.
    """
    stat, df = ic.get("stat"), ic.get("df")
    if ic.get("p_value") is not None and (stat is None or df is None):
        raise ValueError(
            f"{symbol}: the IC has a p-value but no z-statistic ('stat') or degrees of freedom ('df'), "
            "so it cannot be referred to the calibrated null; recompute its statistics with "
            "symbol_statistics"
        )
    z = calibrated = None
    if stat is not None and df is not None:
        from scipy.stats import t as student_t

        z = (stat - gates.null_shift) / gates.null_scale
        calibrated = float(student_t.sf(z, df))
    return {
        "null_shift": gates.null_shift,
        "null_scale": gates.null_scale,
        "z_calibrated": _num(z),
        "p_value_calibrated": _num(calibrated),
        "p_value_adjusted": None if calibrated is None else min(1.0, calibrated * n_trials),
    }


def _ic_empty() -> dict[str, Any]:
    keys = ("pooled", "se", "null_se", "null_kernel", "df", "ci_low", "ci_high", "p_value", "stat", "score")
    keys += ("kernel", "lags")
    keys += ("mean_per_window",)
    return {**dict.fromkeys(keys), "per_window": []}


def _gate(value: Any, threshold: Any, op: str, passed: bool) -> dict[str, Any]:
    return {"value": value, "threshold": threshold, "op": op, "passed": bool(passed)}


def _sufficient(stats: dict[str, Any], gates: PromotionGates) -> bool:
    return stats["windows"] >= gates.min_windows and stats["n"] >= gates.min_rows


def _sharpe(stats: dict[str, Any], total_trials: int) -> dict[str, Any]:
    """Annualised Sharpe of the strategy; PSR and DSR of its excess returns over the benchmark."""
    dsr = deflated_sharpe_ratio(stats["_excess_returns"], total_trials)
    return {
        "annualised": stats["strategy"]["annualised_sharpe"],
        "excess_annualised": _num(None if dsr["sr"] is None else dsr["sr"] * math.sqrt(PERIODS_PER_YEAR)),
        "psr": _num(dsr["psr"]),
        "dsr": _num(dsr["dsr"]),
        "dsr_trials": int(total_trials),
        "sr_benchmark": _num(dsr["sr_benchmark"]),
    }


def _gates(stats: dict[str, Any], gates: PromotionGates) -> dict[str, dict[str, Any]]:
    windows, n = stats["windows"], stats["n"]
    q = stats["ic"]["q_value"]
    out = {
        "min_windows": _gate(windows, gates.min_windows, ">=", windows >= gates.min_windows),
        "min_rows": _gate(n, gates.min_rows, ">=", n >= gates.min_rows),
        "ic_fdr": _gate(q, gates.fdr, "<=", q is not None and q <= gates.fdr),
    }
    if gates.max_excess_pvalue is not None:
        p = stats["excess"]["p_value"]
        out["excess_return"] = _gate(
            p, gates.max_excess_pvalue, "<=", p is not None and p <= gates.max_excess_pvalue
        )
    if gates.min_dsr is not None:
        dsr = stats["sharpe"]["dsr"]
        out["dsr"] = _gate(dsr, gates.min_dsr, ">", dsr is not None and dsr > gates.min_dsr)
    if gates.max_dm_pvalue is not None:
        dm = stats["diebold_mariano"]
        # Significant AND in the student's favour: a significantly worse student must not pass.
        out["dm_pvalue"] = _gate(
            dm["p_value"],
            gates.max_dm_pvalue,
            "<=",
            dm["p_value"] is not None
            and dm["p_value"] <= gates.max_dm_pvalue
            and dm["mean_diff"] is not None
            and dm["mean_diff"] < 0.0,
        )
    return out


def _decide(gate_results: dict[str, dict[str, Any]]) -> tuple[str, list[str]]:
    """INSUFFICIENT_DATA before any verdict; REJECT names every failing gate; PROMOTE all of them."""
    short = [name for name in DATA_GATES if not gate_results[name]["passed"]]
    if short:
        return INSUFFICIENT_DATA, short
    failing = [name for name, g in gate_results.items() if not g["passed"]]
    if failing:
        return REJECT, failing
    return PROMOTE, list(gate_results)


def decide(statistics: list[dict[str, Any]], gates: PromotionGates) -> list[dict[str, Any]]:
    """Gates and decisions for one family of symbols (one briefing), from :func:`symbol_statistics`.

    The family of the multiple-testing correction is every symbol with enough data; the
    deflated Sharpe ratio counts the configurations tried over the whole family as trials.

    ``gates`` may differ from the gates the statistics were computed under in what is decided
    here: ``fdr``, ``min_windows``, ``min_rows``, ``null_shift``, ``null_scale``,
    ``max_excess_pvalue``, ``max_dm_pvalue`` and ``min_dsr`` (the calibrated p-value, its
    adjustment and every gate follow ``gates``, and each briefing's ``gates_config`` is
    ``gates``). ``alpha`` (the level of every interval) and ``benchmark`` (the excess return and
    the deflated Sharpe ratio's returns) are baked into the statistics: a different one raises
    ValueError, and needs the statistics recomputed with :func:`symbol_statistics`.
    """
    for s in statistics:
        own = s.get("gates_config")
        if own is None:
            raise ValueError(
                f"{s.get('symbol')}: statistics without gates_config; compute them with symbol_statistics"
            )
        for name in ("alpha", "benchmark"):
            if own[name] != getattr(gates, name):
                raise ValueError(
                    f"{s['symbol']}: the statistics were computed with {name}={own[name]!r}, the "
                    f"decision asks for {name}={getattr(gates, name)!r}; {name} is part of the "
                    "statistics (intervals, excess returns), so recompute them with "
                    "symbol_statistics under these gates"
                )
    # The adjustment follows these gates (statistics may have been computed under others).
    ics = [{**s["ic"], **_adjusted(s["ic"], s["n_trials"], gates, s["symbol"])} for s in statistics]
    family = [i for i, s in enumerate(statistics) if _sufficient(s, gates)]
    tested = [i for i in family if ics[i]["p_value_adjusted"] is not None]
    q_values = benjamini_hochberg([ics[i]["p_value_adjusted"] for i in tested])
    q_by_index = dict(zip(tested, q_values.tolist(), strict=True))
    total_trials = max(1, sum(statistics[i]["n_trials"] for i in family))
    out = []
    for i, stats in enumerate(statistics):
        briefing = {k: v for k, v in stats.items() if not k.startswith("_")}
        briefing["gates_config"] = asdict(gates)
        briefing["ic"] = {**ics[i], "q_value": _num(q_by_index.get(i)), "family_size": len(tested)}
        briefing["sharpe"] = _sharpe(stats, total_trials)
        briefing["gates"] = _gates(briefing, gates)
        briefing["decision"], briefing["reasons"] = _decide(briefing["gates"])
        out.append(briefing)
    return out


def brief_symbols(
    predictions: Mapping[str, pd.DataFrame],
    *,
    horizon: int,
    n_trials: Mapping[str, int] | int,
    gates: PromotionGates,
) -> list[dict[str, Any]]:
    """Statistics, gates and decisions for every symbol of one briefing, in symbol order.

    ``predictions``: per symbol, the concatenated ``ml.walk_forward`` predictions of its evaluated
    windows (any row order). ``n_trials``: configurations tried, per symbol or for all.
    Deterministic: the same inputs give an identical list.
    """
    stats = [
        symbol_statistics(
            frame,
            horizon=horizon,
            n_trials=n_trials if isinstance(n_trials, int) else n_trials[symbol],
            gates=gates,
            symbol=symbol,
        )
        for symbol, frame in sorted(predictions.items())
    ]
    return decide(stats, gates)


def symbol_briefing(
    predictions: pd.DataFrame,
    *,
    horizon: int,
    n_trials: int,
    gates: PromotionGates,
    symbol: str | None = None,
) -> dict[str, Any]:
    """One symbol judged alone (a family of one): :func:`brief_symbols` for a single record."""
    stats = symbol_statistics(predictions, horizon=horizon, n_trials=n_trials, gates=gates, symbol=symbol)
    return decide([stats], gates)[0]


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{100.0 * value:+.1f}%" if pct else f"{value:.{digits}f}"


def _with_ci(metric: dict[str, Any], key: str = "pooled", pct: bool = False) -> str:
    low, high = _fmt(metric["ci_low"], pct=pct), _fmt(metric["ci_high"], pct=pct)
    return f"{_fmt(metric[key], pct=pct)} [{low}, {high}]"


def _dm_side(dm: dict[str, Any]) -> str:
    """Which way the (ungated) Diebold-Mariano comparison went: mean_diff < 0 favours the student."""
    diff = dm["mean_diff"]
    if diff is None:
        return "vs"
    return "below" if diff < 0 else "above" if diff > 0 else "equal to"


def render_markdown(briefings: list[dict[str, Any]], *, generated_at: str) -> str:
    """A human-readable briefing: one table row per symbol, then every gate of every symbol."""
    level = 1.0 - briefings[0]["gates_config"]["alpha"] if briefings else 0.95
    lines = [
        "# Promotion briefing",
        "",
        f"Generated {generated_at}. Every number is computed from the stored out-of-sample "
        "predictions (the student of window k-1 predicting window k), stitched per symbol. "
        f"Intervals are {100 * level:.0f} %, HAC (overlap-aware). The IC p-value is one-sided, "
        "referred to the calibrated null (the no-signal spread measured in docs/methodology.md) and "
        "multiplied by the configurations tried for the symbol; q is its Benjamini-Hochberg value "
        "across the symbols of this briefing. The IC interval is nominal while the test uses the "
        "calibrated null, so an interval can exclude 0 while the symbol is REJECTed.",
        "",
        "| symbol | decision | windows | n | IC [CI] | p (calibrated, x configs) | q | AUC | excess/yr [CI] "
        "| Sharpe | DSR "
        "| log loss vs base |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for b in briefings:
        dm = b["diebold_mariano"]
        lines.append(
            f"| {b['symbol']} | {b['decision']} | {b['windows']} | {b['n']} | {_with_ci(b['ic'])} | "
            f"{_fmt(b['ic']['p_value_adjusted'], 4)} | {_fmt(b['ic']['q_value'], 4)} | "
            f"{_fmt(b['auc']['pooled'])} | {_with_ci(b['excess'], 'annualised', pct=True)} | "
            f"{_fmt(b['sharpe']['annualised'], 2)} | {_fmt(b['sharpe']['dsr'])} | "
            f"{_fmt(dm['student_log_loss'])} vs {_fmt(dm['baseline_log_loss'])} |"
        )
    for b in briefings:
        lines += ["", *symbol_section(b)]
    return "\n".join(lines) + "\n"


def symbol_section(b: dict[str, Any]) -> list[str]:
    """One symbol's part of the briefing: what decided it, its statistics, and every gate."""
    dm = b["diebold_mariano"]
    lines = [
        f"## {b['symbol']}: {b['decision']}",
        "",
        f"Decided by: {', '.join(b['reasons']) if b['reasons'] else 'n/a'}. "
        f"{b['windows']} windows, {b['n']} rows ({b['first_ts'] or 'n/a'} to {b['last_ts'] or 'n/a'}); "
        f"mean per-window IC {_fmt(b['ic']['mean_per_window'])}, "
        f"AUC {_fmt(b['auc']['mean_per_window'])}; "
        f"IC z {_fmt(b['ic'].get('stat'), 2)}, p-value {_fmt(b['ic']['p_value'], 4)} (nominal), "
        f"{_fmt(b['ic'].get('p_value_calibrated'), 4)} against the calibrated null "
        f"(z - {_fmt(b['ic'].get('null_shift'), 2)}) / {_fmt(b['ic'].get('null_scale'), 2)} "
        f"= {_fmt(b['ic'].get('z_calibrated'), 2)}, "
        f"x {b['n_trials']} configuration(s), "
        f"family of {b['ic']['family_size']} symbol(s); excess over {b['excess']['benchmark']}; "
        f"DSR over {b['sharpe']['dsr_trials']} trial(s).",
        "",
    ]
    losses = f"({_fmt(dm['student_log_loss'])} vs {_fmt(dm['baseline_log_loss'])})"
    for name, g in b["gates"].items():
        line = (
            f"- {'pass' if g['passed'] else 'FAIL'} `{name}`: {_fmt(g['value'], 4)}, "
            f"needs {g['op']} {_fmt(g['threshold'], 4)}"
        )
        if name == "dm_pvalue":
            line += f" with the student's log loss below the base rate's {losses}"
        lines.append(line)
    if "excess_return" not in b["gates"]:
        lines.append(
            f"- reported, not a gate: excess log return over {b['excess']['benchmark']} "
            f"{_with_ci(b['excess'], 'annualised', pct=True)} a year, "
            f"one-sided p {_fmt(b['excess']['p_value'], 4)}"
        )
    if "dsr" not in b["gates"]:
        lines.append(f"- reported, not a gate: deflated Sharpe ratio {_fmt(b['sharpe']['dsr'])}")
    if "dm_pvalue" not in b["gates"]:
        lines.append(
            f"- reported, not a gate: Diebold-Mariano p-value {_fmt(dm['p_value'])}, "
            f"student log loss {_dm_side(dm)} the base rate's {losses}"
        )
    return lines


def render_symbol_markdown(b: dict[str, Any], *, generated_at: str) -> str:
    """One symbol's page: its briefing section, then its out-of-sample record window by window."""
    auc_by_window = {w["window"]: w["auc"] for w in b["auc"].get("per_window", [])}
    lines = [
        *symbol_section(b),
        "",
        f"### Out of sample, window by window (briefing of {generated_at})",
        "",
        "Each window is scored by the student of the window before it, which never saw it.",
        "",
        "| window | rows | IC | AUC |",
        "| --- | ---: | ---: | ---: |",
    ]
    for w in b["ic"].get("per_window", []):
        window_auc = _fmt(auc_by_window.get(w["window"]))
        window = str(w["window"]).rpartition("|")[2]  # a partition key (SYMBOL|start): its start
        lines.append(f"| {window} | {w['n']} | {_fmt(w['ic'])} | {window_auc} |")
    if not b["ic"].get("per_window"):
        lines.append("| (no evaluated window) | 0 | n/a | n/a |")
    return "\n".join(lines) + "\n"
