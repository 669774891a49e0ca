"""Promotion statistics of one symbol's stitched out-of-sample record, gates and a decision.

Every evaluated window of a symbol (the student of window k-1 predicting window k, see
``ml.walk_forward``) is stitched into one time-ordered record; every number here is recomputed
from those stored predictions, so a briefing can be reproduced from the artifacts alone and
nothing is simulated. The gates are deliberately few and standard: a block-bootstrap interval
for AUC that excludes chance, a deflated Sharpe ratio that survives the number of
configurations tried, and a strategy that beats simply holding the stock after costs.

A Diebold-Mariano test of the student's log loss against the naive base rate is computed and
reported in every briefing. It is a gate only when ``PromotionGates.max_dm_pvalue`` is set: a
per-window student ranks well out of sample (AUC) long before its probabilities are calibrated
across windows, and the default decision judges ranking and trading, not calibration.

Pure pandas/numpy/scipy; no Dagster, no file I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from sensequant_assets.ml.evaluation import auc, auc_rows, log_loss_series, spearman_ic, spearman_rows
from sensequant_assets.ml.stats import (
    bootstrap_statistic_ci,
    default_block_length,
    deflated_sharpe_ratio,
    diebold_mariano,
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
BOOTSTRAP_METHOD = "circular"


@dataclass(frozen=True)
class PromotionGates:
    """Thresholds of the promotion decision and the bootstrap that feeds it.

    ``auc_lower_bound``: the lower end of the AUC's ``1 - alpha`` interval must exceed it.
    ``min_dsr``: the deflated Sharpe ratio must exceed it. ``require_beats_buy_hold``: the
    strategy's cumulative return after costs must exceed buy-and-hold's. ``max_dm_pvalue``:
    None (the default) reports the Diebold-Mariano test without gating on it; a number makes
    it a gate: the student's log loss must be below the base rate's with a p-value at most this
    (two-sided test, so the one-sided level is half of it). Fewer than ``min_windows`` windows
    or ``min_rows`` rows is INSUFFICIENT_DATA, not a verdict on the model.
    """

    min_windows: int = 2
    min_rows: int = 100
    auc_lower_bound: float = 0.5
    min_dsr: float = 0.95
    require_beats_buy_hold: bool = True
    max_dm_pvalue: float | None = None
    n_boot: int = 1000
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_windows < 1 or self.min_rows < 1:
            raise ValueError("min_windows and min_rows must be >= 1")
        if not 0.0 <= self.auc_lower_bound < 1.0:
            raise ValueError(f"auc_lower_bound must be in [0, 1), got {self.auc_lower_bound}")
        if not 0.0 <= self.min_dsr < 1.0:
            raise ValueError(f"min_dsr must be in [0, 1), got {self.min_dsr}")
        if self.max_dm_pvalue is not None and not 0.0 < self.max_dm_pvalue <= 1.0:
            raise ValueError(f"max_dm_pvalue must be in (0, 1], got {self.max_dm_pvalue}")
        if self.n_boot < 100:
            raise ValueError(f"n_boot must be >= 100 for a percentile interval, got {self.n_boot}")
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


def _ci_block(n: int, horizon: int) -> int:
    """Blocks at least one label horizon long: labels of neighbouring rows overlap by h - 1 bars."""
    return max(int(horizon), default_block_length(n))


def _rank_metric(
    frame: pd.DataFrame, target: str, horizon: int, gates: PromotionGates, kind: str
) -> dict[str, Any]:
    """Mean per-window value, pooled value and a block-bootstrap interval of AUC or IC.

    The interval resamples blocks of consecutive rows of the stitched record and recomputes the
    statistic on each replicate (vectorised, see ``evaluation.auc_rows``).
    """
    score, rows = (auc, auc_rows) if kind == "auc" else (spearman_ic, spearman_rows)
    per_window = [
        {"window": str(window), "n": len(part), kind: _num(score(part["student_proba"], part[target]))}
        for window, part in frame.groupby("window", sort=True)
    ]
    defined = [w[kind] for w in per_window if w[kind] is not None]
    data = frame[["student_proba", target]].dropna()
    p = data["student_proba"].to_numpy(dtype="float64")
    t = data[target].to_numpy(dtype="float64")
    pooled: float | None = None
    lo = hi = None
    if len(data) >= 3:
        pooled = score(p, t)
        if pooled is not None:
            lo, hi = bootstrap_statistic_ci(
                len(data),
                lambda idx: rows(p[idx], t[idx]),
                block=_ci_block(len(data), horizon),
                n_boot=gates.n_boot,
                alpha=gates.alpha,
                seed=gates.seed,
                method=BOOTSTRAP_METHOD,
            )
    return {
        "mean_per_window": _num(np.mean(defined)) if defined else None,
        "pooled": _num(pooled),
        "ci_low": _num(lo),
        "ci_high": _num(hi),
        "per_window": per_window,
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


def _gate(value: Any, threshold: Any, op: str, passed: bool) -> dict[str, Any]:
    return {"value": value, "threshold": threshold, "op": op, "passed": bool(passed)}


def _gates(briefing: dict[str, Any], gates: PromotionGates) -> dict[str, dict[str, Any]]:
    auc_low = briefing["auc"]["ci_low"]
    dsr = briefing["sharpe"]["dsr"]
    dm = briefing["diebold_mariano"]
    strategy = briefing["strategy"]["cumulative_return"]
    buy_hold = briefing["buy_hold"]["cumulative_return"]
    windows, n = briefing["windows"], briefing["n"]
    auc_passed = auc_low is not None and auc_low > gates.auc_lower_bound
    out = {
        "min_windows": _gate(windows, gates.min_windows, ">=", windows >= gates.min_windows),
        "min_rows": _gate(n, gates.min_rows, ">=", n >= gates.min_rows),
        "auc_ci_lower": _gate(auc_low, gates.auc_lower_bound, ">", auc_passed),
        "dsr": _gate(dsr, gates.min_dsr, ">", dsr is not None and dsr > gates.min_dsr),
    }
    if gates.require_beats_buy_hold:
        out["beats_buy_hold"] = _gate(
            strategy, buy_hold, ">", strategy is not None and buy_hold is not None and strategy > buy_hold
        )
    if gates.max_dm_pvalue is not None:
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


def symbol_briefing(
    predictions: pd.DataFrame,
    *,
    horizon: int,
    n_trials: int,
    gates: PromotionGates,
    symbol: str | None = None,
) -> dict[str, Any]:
    """Statistics, gates and decision for one symbol's evaluated windows, as plain JSON values.

    ``predictions``: the concatenated ``ml.walk_forward`` predictions of every evaluated window
    of one symbol (any row order; sorted by ``ts`` here). ``horizon``: the label horizon in bars,
    used as the minimum bootstrap block and as the Diebold-Mariano ``h`` (overlapping labels).
    ``n_trials``: configurations tried, for the deflated Sharpe ratio. ``symbol`` is only needed
    when ``predictions`` is empty. Deterministic: the same inputs give an identical dict.

    The stitched strategy and buy-and-hold returns are each window's backtest rows in time
    order: every window starts flat (its first row has a zero return for both legs) and the
    last ``horizon`` bars of a window, which carry no label, are traded by neither leg.
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
    strategy = frame["strategy_return"].to_numpy(dtype="float64")
    buy_hold = frame["buy_hold_return"].to_numpy(dtype="float64")
    n = len(frame)

    dsr = deflated_sharpe_ratio(strategy, n_trials)
    strategy_leg = _leg(strategy, frame["position"].to_numpy(dtype="float64"))
    briefing: dict[str, Any] = {
        "symbol": symbol,
        "windows": int(frame["window"].nunique()),
        "n": int(n),
        "first_ts": frame["ts"].iloc[0].isoformat() if n else None,
        "last_ts": frame["ts"].iloc[-1].isoformat() if n else None,
        "horizon": int(horizon),
        "n_trials": int(n_trials),
        "auc": _rank_metric(frame, "label", horizon, gates, "auc"),
        "ic": _rank_metric(frame, "forward_return", horizon, gates, "ic"),
        "sharpe": {
            "annualised": strategy_leg["annualised_sharpe"],
            "psr": _num(dsr["psr"]),
            "dsr": _num(dsr["dsr"]),
            "sr_per_period": _num(dsr["sr"]),
            "sr_benchmark": _num(dsr["sr_benchmark"]),
        },
        "diebold_mariano": _diebold_mariano(frame, horizon),
        "strategy": strategy_leg,
        "buy_hold": _leg(buy_hold, None),
        "bootstrap": {
            "method": BOOTSTRAP_METHOD,
            "block": _ci_block(n, horizon) if n else None,
            "n_boot": gates.n_boot,
            "alpha": gates.alpha,
            "seed": gates.seed,
        },
        "gates_config": asdict(gates),
    }
    briefing["gates"] = _gates(briefing, gates)
    briefing["decision"], briefing["reasons"] = _decide(briefing["gates"])
    return briefing


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


def _with_ci(metric: dict[str, Any]) -> str:
    return f"{_fmt(metric['pooled'])} [{_fmt(metric['ci_low'])}, {_fmt(metric['ci_high'])}]"


def _dm_side(dm: dict[str, Any]) -> str:
    """Which way the (ungated) Diebold-Mariano comparison went: mean_diff < 0 favours the student."""
    diff = dm["mean_diff"]
    if diff is None:
        return "vs"
    return "below" if diff < 0 else "above" if diff > 0 else "equal to"


def render_markdown(briefings: list[dict[str, Any]], *, generated_at: str) -> str:
    """A human-readable briefing: one table row per symbol, then every gate of every symbol.

    The Diebold-Mariano p-value is always in the table; below, it is a pass/FAIL line when it
    is a gate and a "reported, not a gate" line otherwise.
    """
    lines = [
        "# Promotion briefing",
        "",
        f"Generated {generated_at}. Every number is computed from the stored out-of-sample "
        "predictions (the student of window k-1 predicting window k), stitched per symbol.",
        "",
        "| symbol | decision | windows | n | AUC [CI] | IC [CI] | Sharpe | PSR | DSR | DM p "
        "| strategy vs buy&hold |",
        "| --- | --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for b in briefings:
        lines.append(
            f"| {b['symbol']} | {b['decision']} | {b['windows']} | {b['n']} | {_with_ci(b['auc'])} | "
            f"{_with_ci(b['ic'])} | {_fmt(b['sharpe']['annualised'], 2)} | {_fmt(b['sharpe']['psr'])} | "
            f"{_fmt(b['sharpe']['dsr'])} | {_fmt(b['diebold_mariano']['p_value'])} | "
            f"{_fmt(b['strategy']['cumulative_return'], pct=True)} vs "
            f"{_fmt(b['buy_hold']['cumulative_return'], pct=True)} |"
        )
    for b in briefings:
        boot = b["bootstrap"]
        lines += [
            "",
            f"## {b['symbol']}: {b['decision']}",
            "",
            f"Decided by: {', '.join(b['reasons']) if b['reasons'] else 'n/a'}. "
            f"{b['windows']} windows, {b['n']} rows ({b['first_ts'] or 'n/a'} to {b['last_ts'] or 'n/a'}); "
            f"mean per-window AUC {_fmt(b['auc']['mean_per_window'])}, "
            f"IC {_fmt(b['ic']['mean_per_window'])}; "
            f"{boot['method']} block bootstrap, block {boot['block']}, {boot['n_boot']} replicates, "
            f"alpha {boot['alpha']}; DSR over {b['n_trials']} configuration(s).",
            "",
        ]
        dm = b["diebold_mariano"]
        losses = f"({_fmt(dm['student_log_loss'])} vs {_fmt(dm['baseline_log_loss'])})"
        for name, g in b["gates"].items():
            pct = name == "beats_buy_hold"  # cumulative returns: strategy vs buy-and-hold
            line = (
                f"- {'pass' if g['passed'] else 'FAIL'} `{name}`: {_fmt(g['value'], pct=pct)}, "
                f"needs {g['op']} {_fmt(g['threshold'], pct=pct)}"
            )
            if name == "dm_pvalue":
                line += f" with the student's log loss below the base rate's {losses}"
            lines.append(line)
        if "dm_pvalue" not in b["gates"]:
            lines.append(
                f"- reported, not a gate: Diebold-Mariano p-value {_fmt(dm['p_value'])}, "
                f"student log loss {_dm_side(dm)} the base rate's {losses}"
            )
    return "\n".join(lines) + "\n"
