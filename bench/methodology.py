"""The methodology study: how often the promotion decision is wrong, and how often it is right.

Runs the real pipeline (``ml.protocol.walk_forward``: dataset, LightGBM teacher, distilled and
calibrated student, out-of-sample evaluation of window k-1's student on window k) on simulated
universes, stores every symbol's out-of-sample predictions, then scores the briefing's decision
and every interval it prints on them. Scoring is cheap and can be repeated with other gates; the
pipeline runs once per symbol.

    .venv/bin/python bench/methodology.py run --out data/study            # default scenarios
    .venv/bin/python bench/methodology.py report --out data/study         # tables (markdown)
    .venv/bin/python bench/methodology.py ceiling                           # best IC from prices

``run`` resumes: symbols already stored are skipped, so an interrupted study continues where it
stopped. Scenarios: ``null:<process>`` (no signal: random_walk, garch, garch_t, regime) and
``ic:<target>`` (a planted signal whose ideal predictor has that IC against the forward return,
on the garch_t null), each with ``--null-symbols`` / ``--signal-symbols`` symbols of
``--windows`` six-month windows from 2015-07-01. See docs/methodology.md for the results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import multiprocessing
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sensequant_assets.ml.briefing import (  # noqa: E402
    PROMOTE,
    PromotionGates,
    decide,
    excess_log_returns,
    symbol_statistics,
)
from sensequant_assets.ml.labels import LabelSpec  # noqa: E402
from sensequant_assets.ml.protocol import WalkForwardSettings, month_windows, walk_forward  # noqa: E402
from sensequant_assets.ml.stats import rank_ic_test  # noqa: E402
from sensequant_assets.sources.synthetic import SyntheticSource, _params  # noqa: E402

FIRST_WINDOW = dt.date(2015, 7, 1)
HORIZON = 7
NULLS = ("random_walk", "garch", "garch_t", "regime")
STRENGTHS = (0.02, 0.05, 0.10, 0.15, 0.20)
SIGNAL_NULL = "garch_t"


@dataclass(frozen=True)
class Scenario:
    """One kind of symbol: a null process, optionally with a planted signal, and the protocol."""

    process: str
    signal_ic: float = 0.0
    label: str = "sign"
    lookback: int = 0
    signal_kind: str = "latent"

    @property
    def name(self) -> str:
        prefix = "ic" if self.signal_kind == "latent" else "rev"
        planted = f"{prefix}{self.signal_ic:.2f}-{self.process}"
        kind = f"null-{self.process}" if self.signal_ic == 0 else planted
        suffix = "" if self.label == "sign" else f"-{self.label}"
        return kind + suffix + (f"-lb{self.lookback}" if self.lookback else "")

    @property
    def seed(self) -> int:
        """Independent paths per process and strength, the same paths across label and lookback
        variants (so those comparisons are paired): the seed is a hash of the kind of symbol."""
        kind = f"{self.signal_kind}:{self.process}:{self.signal_ic!r}"
        return int.from_bytes(hashlib.sha256(kind.encode()).digest()[:4], "little")


# ------------------------------------------------------------------------------ observable signal

REVERSAL_SMA = 20  # the planted reversal leans against the close's deviation from its 20-bar mean


def _plant_reversal(log_close: np.ndarray, strength: float) -> np.ndarray:
    """Log closes with a reversal planted: each bar's return gains ``-strength * d_t``, where
    ``d_t`` is the planted path's log close minus its trailing ``REVERSAL_SMA``-bar mean at t
    (observable from bars, so a model of the bars can reach the signal's whole IC)."""
    returns = np.diff(log_close, prepend=log_close[0])
    out = np.empty_like(log_close)
    out[0] = log_close[0]
    window: list[float] = [out[0]]
    total = out[0]
    for t in range(1, len(log_close)):
        deviation = out[t - 1] - total / len(window)
        out[t] = out[t - 1] + returns[t] - strength * deviation
        window.append(out[t])
        total += out[t]
        if len(window) > REVERSAL_SMA:
            total -= window.pop(0)
    return out


def _reversal_ic(log_close: np.ndarray) -> float:
    """Spearman IC of ``-d_t`` (the observable predictor) against the forward HORIZON-bar log return."""
    series = pd.Series(log_close)
    deviation = series - series.rolling(REVERSAL_SMA, min_periods=1).mean()
    forward = series.shift(-HORIZON) - series
    ok = forward.notna()
    return float(pd.Series(-deviation[ok]).corr(forward[ok], method="spearman"))


_STRENGTHS: dict[tuple[str, float], float] = {}


def reversal_strength(process: str, target: float) -> float:
    """The planted strength whose observable IC is ``target`` on a long calibration path of ``process``.

    Calibrated by bisection on 40 years of one synthetic symbol that no study symbol uses.
    """
    key = (process, target)
    if key not in _STRENGTHS:
        source = SyntheticSource(seed=987_654, process=process)
        bars = source.bars("CALIBRATION", dt.date(1990, 1, 1), dt.date(2030, 1, 1))
        base = np.log(bars["close"].to_numpy(dtype="float64"))
        low, high = 0.0, 1.0
        for _ in range(30):
            mid = (low + high) / 2.0
            low, high = (mid, high) if _reversal_ic(_plant_reversal(base, mid)) < target else (low, mid)
        _STRENGTHS[key] = (low + high) / 2.0
    return _STRENGTHS[key]


class ReversalSource:
    """A synthetic null source with an observable short-term reversal planted (see ``_plant_reversal``).

    The latent planted signal of ``SyntheticSource`` is a deviation no model of the bars can see
    well (the ``ceiling`` command measures how little); this one is a function of past closes, so
    its IC is what a perfect model of the bars would reach. OHLC are moved with the close (each
    bar keeps its shape), volume is unchanged. Paths are generated over a fixed span, as the
    source does, so a window's bars do not depend on the range asked for.
    """

    SPAN = (dt.date(2014, 1, 1), dt.date(2027, 1, 1))

    def __init__(self, seed: int, process: str, target_ic: float) -> None:
        self.null = SyntheticSource(seed=seed, process=process)
        self.strength = reversal_strength(process, target_ic)
        self._paths: dict[str, pd.DataFrame] = {}

    def _path(self, symbol: str) -> pd.DataFrame:
        if symbol not in self._paths:
            bars = self.null.bars(symbol, *self.SPAN)
            log_close = np.log(bars["close"].to_numpy(dtype="float64"))
            factor = np.exp(_plant_reversal(log_close, self.strength) - log_close)
            moved = bars.copy()
            for column in ("open", "high", "low", "close"):
                moved[column] = bars[column].to_numpy(dtype="float64") * factor
            self._paths[symbol] = moved
        return self._paths[symbol]

    def bars(self, symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        if start < self.SPAN[0] or end > self.SPAN[1]:
            raise ValueError(f"ReversalSource covers {self.SPAN}, asked for {start}..{end}")
        path = self._path(symbol)
        local = path.index.tz_localize(None).normalize()
        return path[(local >= pd.Timestamp(start)) & (local <= pd.Timestamp(end))]

    def ideal_forecast(self, symbol: str, start: dt.date, end: dt.date) -> pd.Series:
        """The observable predictor ``-d_t`` on the bars' dates."""
        path = self._path(symbol)
        log_close = np.log(path["close"])
        forecast = -(log_close - log_close.rolling(REVERSAL_SMA, min_periods=1).mean())
        local = path.index.tz_localize(None).normalize()
        return forecast[(local >= pd.Timestamp(start)) & (local <= pd.Timestamp(end))]


def symbol_name(index: int) -> str:
    return f"SYM{index:04d}"


def _run_one(task: tuple[Scenario, int, int, str]) -> tuple[str, float]:
    """Run the pipeline for one symbol and store its predictions and truth; returns (name, seconds)."""
    scenario, index, n_windows, out = task
    began = time.perf_counter()
    symbol = symbol_name(index)
    if scenario.signal_kind == "reversal":
        source: Any = ReversalSource(scenario.seed, scenario.process, scenario.signal_ic)
    else:
        source = SyntheticSource(seed=scenario.seed, process=scenario.process, signal_ic=scenario.signal_ic)
    windows = month_windows(FIRST_WINDOW, n_windows)
    settings = WalkForwardSettings(
        horizon=HORIZON, label=LabelSpec(kind=scenario.label), lookback_windows=scenario.lookback
    )
    result = walk_forward(source, symbol, windows, settings)
    predictions = result.predictions
    truth: dict[str, Any] = {
        "scenario": scenario.name,
        "process": scenario.process,
        "signal_ic": scenario.signal_ic,
        "signal_kind": scenario.signal_kind,
        "label": scenario.label,
        "lookback": scenario.lookback,
        "symbol": symbol,
        "seed": scenario.seed,
        "log_drift": 0.0 if scenario.process == "random_walk" else _params(symbol, scenario.seed).drift,
        "windows": len(windows),
        "seconds": None,
    }
    if len(predictions):
        ideal = source.ideal_forecast(symbol, windows[0][0], windows[-1][1])
        ts = pd.DatetimeIndex(pd.to_datetime(predictions["ts"]))
        truth["ideal_ic"] = rank_ic_test(
            ideal.reindex(ts).to_numpy(), predictions["forward_return"].to_numpy(), horizon=HORIZON
        )["ic"]
    directory = Path(out) / scenario.name
    directory.mkdir(parents=True, exist_ok=True)
    truth["seconds"] = time.perf_counter() - began
    predictions.to_parquet(directory / f"{symbol}.parquet.tmp")
    (directory / f"{symbol}.json.tmp").write_text(json.dumps(truth))
    (directory / f"{symbol}.parquet.tmp").replace(directory / f"{symbol}.parquet")
    (directory / f"{symbol}.json.tmp").replace(directory / f"{symbol}.json")
    return f"{scenario.name}/{symbol}", truth["seconds"]


def scenarios(args: argparse.Namespace) -> list[tuple[Scenario, int]]:
    """(scenario, number of symbols) for the command line."""
    out: list[tuple[Scenario, int]] = []
    for process in args.nulls:
        out.append((Scenario(process, label=args.label, lookback=args.lookback), args.null_symbols))
    for strength in args.strengths:
        planted = Scenario(SIGNAL_NULL, strength, args.label, args.lookback, args.signal_kind)
        out.append((planted, args.signal_symbols))
    return out


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    tasks = [
        (scenario, i, args.windows, str(out))
        for scenario, count in scenarios(args)
        for i in range(args.first_symbol, args.first_symbol + count)
        if not (out / scenario.name / f"{symbol_name(i)}.json").exists()
    ]
    tasks.sort(key=lambda task: task[1])  # every scenario advances together: a cut-short study is balanced
    print(f"{len(tasks)} symbol(s) to run with {args.workers} worker(s)", flush=True)
    began = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.workers, maxtasksperchild=20) as pool:
        for done, (name, seconds) in enumerate(pool.imap_unordered(_run_one, tasks), start=1):
            print(
                f"[{done}/{len(tasks)}] {name} {seconds:.1f}s (elapsed {time.perf_counter() - began:.0f}s)",
                flush=True,
            )


# ------------------------------------------------------------------------------------------- ceiling


def observable_ic(target: float, *, n: int = 200_000, daily_vol: float = 0.015, seed: int = 0) -> tuple:
    """(ideal IC, IC of the best forecast from prices alone) for a planted signal of ``target``.

    The planted deviation x is latent: the log price is a random walk plus x. The best any model
    of the bars can do is the Kalman filter of x from the returns, run here with the true
    parameters (AR(1) x with the source's reversion speed and innovation scale, constant-vol
    normal noise), so the second number is a ceiling on what the pipeline can reach.
    """
    from sensequant_assets.sources.synthetic import _REVERSION_SPEED, deviation_scale

    phi = 1.0 - _REVERSION_SPEED
    scale = deviation_scale(target, daily_vol**2, HORIZON)
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, scale, n)
    x = np.zeros(n)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + shocks[t]
    returns = np.diff(x, prepend=0.0) + rng.normal(0.0, daily_vol, n)
    # State (x_t, x_{t-1}); observation r_t = x_t - x_{t-1} + noise.
    f = np.array([[phi, 0.0], [1.0, 0.0]])
    q = np.array([[scale**2, 0.0], [0.0, 0.0]])
    obs = np.array([1.0, -1.0])
    mean, cov = np.zeros(2), np.eye(2) * scale**2 / (1.0 - phi**2)
    filtered = np.zeros(n)
    for t in range(1, n):
        mean, cov = f @ mean, f @ cov @ f.T + q
        gain = cov @ obs / (obs @ cov @ obs + daily_vol**2)
        mean = mean + gain * (returns[t] - obs @ mean)
        cov = cov - np.outer(gain, obs @ cov)
        filtered[t] = mean[0]
    log_price = np.cumsum(returns)
    forward = log_price[HORIZON:] - log_price[:-HORIZON]
    ideal = float(np.corrcoef(-x[:-HORIZON], forward)[0, 1])
    return ideal, float(np.corrcoef(-filtered[:-HORIZON], forward)[0, 1])


def ceiling(args: argparse.Namespace) -> None:
    print("| ideal IC (target) | ideal IC (simulated) | best IC from prices (Kalman, true parameters) |")
    print("| ---: | ---: | ---: |")
    for target in args.strengths:
        ideal, observable = observable_ic(target)
        print(f"| {target:.2f} | {ideal:.3f} | {observable:.3f} |")


# -------------------------------------------------------------------------------------------- report


@dataclass
class Record:
    """One stored symbol: its truth, its statistics under the gates, and interval checks."""

    truth: dict[str, Any]
    stats: dict[str, Any]
    predictions: pd.DataFrame


def load(out: Path, gates: PromotionGates, first_null: int = 0) -> dict[str, list[Record]]:
    """Every stored symbol, by scenario name; no-signal symbols from index ``first_null`` on (a
    confirmation scores only the paths that ran after the rule it confirms was fixed)."""
    by_scenario: dict[str, list[Record]] = {}
    for meta in sorted(out.glob("*/*.json")):
        truth = json.loads(meta.read_text())
        if truth["signal_ic"] == 0 and int(truth["symbol"].removeprefix("SYM")) < first_null:
            continue
        predictions = pd.read_parquet(meta.with_suffix(".parquet"))
        if predictions.empty:
            continue
        stats = symbol_statistics(predictions, horizon=HORIZON, n_trials=1, gates=gates)
        by_scenario.setdefault(truth["scenario"], []).append(Record(truth, stats, predictions))
    return by_scenario


def excess_estimand(record: Record, benchmark: str) -> float:
    """The true mean daily excess log return given the positions, under a null (known log drift).

    Under a null the conditional mean of the next log return is the drift, so the expected excess
    of each bar is its realised excess with the realised log return replaced by the drift.
    """
    frame = record.predictions.sort_values("ts", kind="stable")
    excess = excess_log_returns(frame, benchmark)
    close = frame["close"].to_numpy(dtype="float64")
    first = (frame["window"] != frame["window"].shift()).to_numpy()
    log_return = np.zeros(len(frame))
    log_return[1:] = np.log(close[1:] / close[:-1])
    log_return[first] = 0.0
    position = frame["position"].to_numpy(dtype="float64")
    weight = position - 1.0 if benchmark == "buy_hold" else position
    surprise = np.where(first, 0.0, log_return - record.truth["log_drift"])
    return float(np.mean(excess - weight * surprise)) * 252


def one_sided_upper(k: int, n: int, level: float = 0.95) -> float:
    """Clopper-Pearson one-sided upper bound of a rate with k events in n trials."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(level, k + 1, n - k))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a rate with k events in n trials."""
    from scipy.stats import beta

    tail = (1.0 - level) / 2.0
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high


def _coverage(k: int, n: int) -> str:
    if n == 0:
        return "n/a"
    low, high = clopper_pearson(k, n)
    return f"{k}/{n} = {100 * k / n:.1f} % [{100 * low:.1f}, {100 * high:.1f}]"


def universes(records: list[Record], size: int) -> Iterable[list[Record]]:
    """Disjoint universes of ``size`` independent symbols (the remainder is left out)."""
    for start in range(0, len(records) - size + 1, size):
        yield records[start : start + size]


def promoted(records: list[Record], gates: PromotionGates) -> list[bool]:
    decisions = decide([r.stats for r in records], gates)
    return [d["decision"] == PROMOTE for d in decisions]


def _rate(k: int, n: int) -> str:
    if n == 0:
        return "n/a"
    return f"{k}/{n} = {100 * k / n:.1f} % (95 % upper {100 * one_sided_upper(k, n):.1f} %)"


def _covers(
    interval: dict[str, Any], value: float, low: str = "ci_low", high: str = "ci_high"
) -> bool | None:
    if interval.get(low) is None or interval.get(high) is None:
        return None
    return interval[low] <= value <= interval[high]


def resampled_fwer(records: list[Record], gates: PromotionGates, size: int, draws: int = 2000) -> float:
    """Share of universes of ``size`` symbols, drawn without replacement from the pool, with any
    PROMOTE: a plug-in estimate of the family-wise rate from the pool's p-values (universes
    share symbols, so its precision is that of the pool's tail, not of ``draws``)."""
    rng = np.random.default_rng(0)
    stats = [r.stats for r in records]
    hits = 0
    for _ in range(draws):
        members = [stats[i] for i in rng.choice(len(stats), size, replace=False)]
        hits += any(d["decision"] == PROMOTE for d in decide(members, gates))
    return hits / draws


def null_table(
    by: dict[str, list[Record]], gates: PromotionGates, size: int, label: str, lookback: int = 0
) -> list[str]:
    """Per null: the IC statistic's bias and spread, p-value tail rates, false promotions of a
    one-symbol briefing and of disjoint universes of ``size`` (with the pool-resampled estimate),
    and the coverage of the intervals."""
    from scipy.stats import kstest

    lines = [
        "| null | symbols | mean z (sd) | IC p <= 0.05 | IC p <= 0.01 | KS uniform p | promoted alone "
        f"| universes of {size} with a PROMOTE | the same, resampled | IC 95 % CI covers 0 "
        "| excess 95 % CI covers estimand | log loss - base (median) |",
        "| --- | ---: | --- | --- | --- | ---: | --- | --- | ---: | --- | --- | ---: |",
    ]
    for process in NULLS:
        records = by.get(Scenario(process, label=label, lookback=lookback).name, [])
        if not records:
            continue
        p = np.array([r.stats["ic"]["p_value"] for r in records if r.stats["ic"]["p_value"] is not None])
        z = np.array(
            [
                r.stats["ic"]["pooled"] / r.stats["ic"]["null_se"]
                for r in records
                if r.stats["ic"].get("null_se")
            ]
        )
        ic_cover = [_covers(r.stats["ic"], 0.0) for r in records]
        ex_cover = [_covers(r.stats["excess"], excess_estimand(r, gates.benchmark)) for r in records]
        loss = [
            r.stats["diebold_mariano"]["student_log_loss"] - r.stats["diebold_mariano"]["baseline_log_loss"]
            for r in records
        ]
        fwer = resampled_fwer(records, gates, size) if len(records) >= size else float("nan")
        alone = sum(promoted([r], gates)[0] for r in records)
        disjoint = [any(promoted(u, gates)) for u in universes(records, size)]
        lines.append(
            f"| {process} | {len(records)} | {z.mean():+.2f} ({z.std(ddof=1):.2f}) "
            f"| {_rate(int(np.sum(p <= 0.05)), p.size)} | {_rate(int(np.sum(p <= 0.01)), p.size)} "
            f"| {kstest(p, 'uniform').pvalue:.3f} | {_rate(alone, len(records))} "
            f"| {_rate(sum(disjoint), len(disjoint))} | {100 * fwer:.1f} % "
            f"| {_coverage(sum(c is True for c in ic_cover), sum(c is not None for c in ic_cover))} "
            f"| {_coverage(sum(c is True for c in ex_cover), sum(c is not None for c in ex_cover))} "
            f"| {np.median(loss):+.4f} |"
        )
    return lines


FAMILY_SIZES = (20, 100, 500)


def _any_rejection(z: np.ndarray, gates: PromotionGates) -> float:
    """Share of universes (rows of ``z``) where Benjamini-Hochberg at ``gates.fdr`` rejects anything,
    each z referred to the gates' calibrated null (normal reference: the records' t has ~330 df)."""
    from scipy.stats import norm

    m = z.shape[1]
    p = np.sort(norm.sf((z - gates.null_shift) / gates.null_scale), axis=1)
    return float(np.mean(np.any(p <= gates.fdr * np.arange(1, m + 1) / m, axis=1)))


def fitted_family_rates(
    z: np.ndarray, gates: PromotionGates, size: int, *, draws: int = 20_000, boot: int = 100, seed: int = 0
) -> dict[str, float]:
    """The share of all-null universes of ``size`` symbols with any PROMOTE, from a normal fit of a
    null's z-statistics: at the estimated (mean, sd) with ``draws`` universes (and its Monte Carlo
    SE), and its 95th percentile when the estimation error of (mean, sd) is propagated (``boot``
    parametric-bootstrap fits of ``len(z)`` records, 1,000 universes each). The far tail a large
    family reads lies beyond the records' largest z, so these are normal-tail extrapolations."""
    rng = np.random.default_rng(seed)
    n, mean, sd = z.size, float(z.mean()), float(z.std(ddof=1))
    at_estimate = _any_rejection(rng.normal(mean, sd, (draws, size)), gates)
    rates = []
    for _ in range(boot):
        sample = rng.normal(mean, sd, n)
        fit_mean, fit_sd = sample.mean(), sample.std(ddof=1)
        rates.append(_any_rejection(rng.normal(fit_mean, fit_sd, (1_000, size)), gates))
    return {
        "rate": at_estimate,
        "mc_se": float(np.sqrt(at_estimate * (1 - at_estimate) / draws)),
        "p95": float(np.quantile(rates, 0.95)),
    }


def family_table(
    by: dict[str, list[Record]], gates: PromotionGates, label: str, lookback: int = 0
) -> list[str]:
    """Per null: estimated share of all-null universes of 20, 100 and 500 symbols with any PROMOTE,
    under the gates' null and under the nominal one (normal fit of the null's z; see
    :func:`fitted_family_rates`)."""
    nominal = replace(gates, null_shift=0.0, null_scale=1.0)
    head = " | ".join(f"{m} symbols" for m in FAMILY_SIZES)
    lines = [
        f"| null | records | z mean (sd) | max z | null | {head} |",
        "| --- | ---: | --- | ---: | --- |" + " --- |" * len(FAMILY_SIZES),
    ]
    for process in NULLS:
        records = by.get(Scenario(process, label=label, lookback=lookback).name, [])
        z = np.array([r.stats["ic"]["stat"] for r in records if r.stats["ic"].get("stat") is not None])
        if z.size < 2:
            continue
        for name, g in (("calibrated", gates), ("nominal", nominal)):
            cells = []
            for m in FAMILY_SIZES:
                r = fitted_family_rates(z, g, m)
                cells.append(
                    f"{100 * r['rate']:.1f} % (SE {100 * r['mc_se']:.1f}; 95th pct {100 * r['p95']:.1f} %)"
                )
            lines.append(
                f"| {process} | {z.size} | {z.mean():+.2f} ({z.std(ddof=1):.2f}) | {z.max():.2f} | {name} | "
                + " | ".join(cells)
                + " |"
            )
    return lines


def mixed_table(
    by: dict[str, list[Record]],
    gates: PromotionGates,
    size: int,
    label: str,
    lookback: int,
    strengths: list[float],
    signal_kind: str = "latent",
    redraws: int = 0,
    seed: int = 0,
) -> list[str]:
    """Power per strength and the false discovery rate in universes mixing planted and null symbols.

    Each universe holds one planted symbol of every strength and ``size - len(strengths)`` garch_t
    nulls; there are as many universes as planted symbols per strength (nulls are re-drawn per
    universe, so universes share nulls: the FDR estimate is unbiased, its spread understated).
    ``redraws``: also judge each planted set with that many fresh draws of the nulls (a plug-in
    estimate from the pool: the universes share records, so it has no honest binomial bound).
    """
    nulls = by.get(Scenario(SIGNAL_NULL, label=label, lookback=lookback).name, [])
    planted = {s: by.get(Scenario(SIGNAL_NULL, s, label, lookback, signal_kind).name, []) for s in strengths}
    n_universes = min((len(v) for v in planted.values()), default=0)
    n_nulls = size - len(strengths)
    if n_universes == 0 or len(nulls) < n_nulls:
        return [f"(mixed universes need planted symbols of every strength and {n_nulls} nulls)"]
    rng = np.random.default_rng(seed)
    hits = dict.fromkeys(strengths, 0)
    fdp = []
    for u in range(n_universes):
        chosen = [nulls[i] for i in rng.choice(len(nulls), n_nulls, replace=False)]
        members = [planted[s][u] for s in strengths] + chosen
        flags = promoted(members, gates)
        for s, flag in zip(strengths, flags, strict=False):
            hits[s] += flag
        false = sum(flags[len(strengths) :])
        fdp.append(false / max(1, sum(flags)))
    lines = [
        "| ideal IC (target) | ideal IC (median) | model IC (median) | symbols | promoted (power) |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for s in strengths:
        ideal = np.median([r.truth.get("ideal_ic") or np.nan for r in planted[s]])
        model = np.median([r.stats["ic"]["pooled"] for r in planted[s]])
        lines.append(
            f"| {s:.2f} | {ideal:.3f} | {model:.3f} | {len(planted[s])} | {_rate(hits[s], n_universes)} |"
        )
    lines.append("")
    lines.append(
        f"False discovery proportion over {n_universes} mixed universes of {size}: "
        f"mean {np.mean(fdp):.3f}; universes with any false promotion: "
        f"{_rate(sum(1 for f in fdp if f > 0), n_universes)}."
    )
    if redraws:
        fdp_all, found = [], dict.fromkeys(strengths, 0)
        for u in range(n_universes):
            for _ in range(redraws):
                chosen = [nulls[i] for i in rng.choice(len(nulls), n_nulls, replace=False)]
                flags = promoted([planted[s][u] for s in strengths] + chosen, gates)
                for s, flag in zip(strengths, flags, strict=False):
                    found[s] += flag
                fdp_all.append(sum(flags[len(strengths) :]) / max(1, sum(flags)))
        total = n_universes * redraws
        power = ", ".join(f"{s:.2f}: {100 * found[s] / total:.1f} %" for s in strengths)
        lines.append(
            f"With {redraws} draws of the nulls per planted set ({total} universes sharing records): "
            f"mean false discovery proportion {np.mean(fdp_all):.4f}, any false promotion in "
            f"{100 * np.mean([f > 0 for f in fdp_all]):.2f} %; power {power}."
        )
    return lines


def report(args: argparse.Namespace) -> None:
    gates = PromotionGates(**json.loads(args.gates)) if args.gates else PromotionGates()
    by = load(Path(args.out), gates, args.first_symbol)
    print(f"Gates: {gates}\n")
    for name, records in sorted(by.items()):
        secs = [r.truth["seconds"] for r in records]
        print(f"- {name}: {len(records)} symbols, {np.median(secs):.1f} s per symbol (median)")
    print()
    mixed = (args.universe, args.label, args.lookback, args.strengths, args.signal_kind, args.redraws)
    print("\n".join(null_table(by, gates, args.universe, args.label, args.lookback)))
    print()
    print("\n".join(family_table(by, gates, args.label, args.lookback)))
    print()
    print("\n".join(mixed_table(by, gates, *mixed)))
    if args.variants:
        for variant in json.loads(args.variants):
            g = replace(gates, **variant)
            print(f"\n### variant {variant}\n")
            print("\n".join(null_table(by, g, args.universe, args.label, args.lookback)))
            print()
            print("\n".join(mixed_table(by, g, *mixed)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("run", "report", "ceiling"))
    parser.add_argument("--out", default="data/study")
    parser.add_argument("--nulls", type=lambda s: [x for x in s.split(",") if x], default=list(NULLS))
    parser.add_argument(
        "--strengths", type=lambda s: [float(x) for x in s.split(",") if x], default=list(STRENGTHS)
    )
    parser.add_argument("--null-symbols", type=int, default=100)
    parser.add_argument(
        "--first-symbol",
        type=int,
        default=0,
        help="run: index of the first symbol (fresh paths); report: the first no-signal symbol scored",
    )
    parser.add_argument("--signal-symbols", type=int, default=20)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--label", default="sign")
    parser.add_argument(
        "--signal-kind",
        choices=("latent", "reversal"),
        default="latent",
        help="latent: the source's planted deviation; reversal: an observable 20-bar reversal",
    )
    parser.add_argument("--lookback", type=int, default=2)
    parser.add_argument("--workers", type=int, default=max(1, (multiprocessing.cpu_count() or 1)))
    parser.add_argument("--universe", type=int, default=20, help="symbols per simulated universe")
    parser.add_argument("--gates", default="", help="PromotionGates fields as JSON")
    parser.add_argument("--variants", default="", help="a JSON list of gate overrides to score too")
    parser.add_argument(
        "--redraws", type=int, default=0, help="report: fresh null draws per planted set in mixed universes"
    )
    args = parser.parse_args(argv)
    {"run": run, "report": report, "ceiling": ceiling}[args.command](args)


if __name__ == "__main__":
    main()
