"""`promotion_briefing` and `production_models`: honest statistics, then promotion of survivors."""

import hashlib
import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from sensequant_assets.artifacts import BriefingArtifact
from sensequant_assets.assets.catalog import OWNERS
from sensequant_assets.assets.evaluation import CONFIG_ID_KEY
from sensequant_assets.assets.partition_context import partition_metadata, step_workers
from sensequant_assets.assets.student import default_config_id
from sensequant_assets.assets.symbol_briefing import symbol_page_link
from sensequant_assets.assets.workers import compute_each
from sensequant_assets.automation import AFTER_BATCH_SETTLES
from sensequant_assets.io_manager import ArtifactError, ArtifactsResource, LazyPartitions, codec_for
from sensequant_assets.ml.briefing import (
    BRIEFING_COLUMNS,
    INSUFFICIENT_DATA,
    PromotionGates,
    decide,
    render_markdown,
    symbol_statistics,
)
from sensequant_assets.partitions import split_key
from sensequant_assets.registry import (
    PROMOTE,
    PromotionRefused,
    active_demotion,
    newest_student_of_config,
    promote,
)
from sensequant_assets.resources import PipelineSettings

_DEFAULT_GATES = PromotionGates()


class BriefingConfig(Config):
    """Promotion gates; `extra_trials` counts configurations tried outside this instance's history.

    `config_id` picks the one configuration whose evaluations are judged (None: the code's default
    configuration, `student.default_config_id`): stitching windows of different configurations
    would judge a model that never existed, and promotion follows the configuration judged here.
    """

    min_windows: int = Field(
        default=_DEFAULT_GATES.min_windows,
        description="Fewer evaluated windows than this is INSUFFICIENT_DATA, not a verdict.",
    )
    min_rows: int = Field(
        default=_DEFAULT_GATES.min_rows,
        description=(
            "Fewer out-of-sample rows than this is INSUFFICIENT_DATA, not a verdict. The calibrated "
            "null was measured on 10-year records (~2,340 rows); shorter records may over-reject more."
        ),
    )
    fdr: float = Field(
        default=_DEFAULT_GATES.fdr,
        description=(
            "Benjamini-Hochberg level of the IC test across the briefing's symbols (PROMOTE needs q <= fdr)."
        ),
    )
    null_shift: float = Field(
        default=_DEFAULT_GATES.null_shift,
        description=(
            "Calibrated null of the IC's z-statistic, z ~ null_shift + null_scale * t: its mean, the worst "
            "measured on no-signal records of the real pipeline (docs/methodology.md). 0 with null_scale 1 "
            "is the nominal test (over-rejects on the pipeline's records); raise it to be more cautious."
        ),
    )
    null_scale: float = Field(
        default=_DEFAULT_GATES.null_scale,
        description=(
            "Calibrated null of the IC's z-statistic, z ~ null_shift + null_scale * t: its spread, the "
            "worst measured on no-signal records of the real pipeline (docs/methodology.md). 1 with "
            "null_shift 0 is the nominal test."
        ),
    )
    max_excess_pvalue: float | None = Field(
        default=_DEFAULT_GATES.max_excess_pvalue,
        description=(
            "Gate on the one-sided p-value of a positive mean excess log return over the benchmark; "
            "None: reported, not a gate."
        ),
    )
    benchmark: str = Field(
        default=_DEFAULT_GATES.benchmark,
        description=(
            "What the excess return and the deflated Sharpe ratio are measured against: buy_hold or cash."
        ),
    )
    min_dsr: float | None = Field(
        default=_DEFAULT_GATES.min_dsr,
        description=(
            "Gate: deflated Sharpe ratio of the excess returns above this; None: reported, not a gate."
        ),
    )
    max_dm_pvalue: float | None = Field(
        default=_DEFAULT_GATES.max_dm_pvalue,
        description=(
            "Gate: Diebold-Mariano p-value of the log loss against the base rate's at most this (and the "
            "student's the lower); None: reported, not a gate."
        ),
    )
    alpha: float = Field(
        default=_DEFAULT_GATES.alpha,
        description=(
            "1 - the level of every interval (the IC interval is nominal, not the calibrated null's)."
        ),
    )
    extra_trials: int = Field(
        default=0,
        description="Configurations tried outside this instance's history, added to every symbol's count.",
    )
    config_id: str | None = Field(
        default=None,
        description="The configuration whose evaluations are judged; None: the code's default configuration.",
    )

    def gates(self) -> PromotionGates:
        fields = PromotionGates.__dataclass_fields__
        return PromotionGates(**{k: v for k, v in self.model_dump().items() if k in fields})


def configurations_tried(context: AssetExecutionContext) -> dict[str, int]:
    """Distinct model configurations ever evaluated per symbol, from the instance's event log.

    Counting the history (not just the artifacts on disk, which re-runs overwrite) keeps the
    multiple-testing count honest about how many configurations were tried before this one. One
    pass over the log for all symbols: a briefing of an index reads it once, not once per symbol.
    """
    seen: dict[str, set[str]] = {}
    cursor = None
    while True:
        page = context.instance.fetch_materializations(
            AssetKey("student_evaluation"), limit=1000, cursor=cursor
        )
        for record in page.records:
            mat = record.asset_materialization
            if mat is None or mat.partition is None:
                continue
            config_id = partition_metadata(mat).get(CONFIG_ID_KEY)
            if config_id is not None:
                seen.setdefault(split_key(mat.partition)[0], set()).add(str(config_id))
        if not page.has_more:
            return {symbol: len(ids) for symbol, ids in seen.items()}
        cursor = page.cursor


def judged_config_id(config: BriefingConfig, horizon: int) -> str:
    """The configuration the briefing judges: the one asked for, else the code's default."""
    return config.config_id or default_config_id(horizon)


def _statistics_code() -> str:
    """A digest of the code behind a symbol's statistics: any edit of it invalidates the cache, so
    one briefing never mixes symbols scored by two versions of the method."""
    from sensequant_assets.ml import backtest, evaluation, stats
    from sensequant_assets.ml import briefing as ml_briefing

    modules = (ml_briefing, stats, evaluation, backtest)
    return hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in modules)).hexdigest()


STATISTICS_CODE = _statistics_code()


def _inputs_digest(
    symbol: str, keys: list[str], evaluations: LazyPartitions, judged: str, settings: tuple[int, int, Any]
) -> str:
    """What a symbol's statistics depend on: its evaluations' identities and the briefing's settings."""
    horizon, trials, gates = settings
    parts = [STATISTICS_CODE, symbol, judged, str(horizon), str(trials)]
    parts.append(json.dumps(asdict(gates), sort_keys=True))
    parts += [f"{key}={evaluations.identity(key)}" for key in keys]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def symbol_entry(
    symbol: str,
    keys: list[str],
    evaluations: LazyPartitions,
    judged: str,
    *,
    horizon: int,
    trials: int,
    gates: Any,
    digest: str,
) -> dict[str, Any]:
    """One symbol's statistics over its windows evaluated under `judged`, stored with `digest`
    (`_inputs_digest`: the next briefing reuses the entry while it matches).

    The evaluations are loaded one by one and only the judged configuration's predictions are kept.
    """
    frames = []
    for key in keys:
        evaluation = evaluations[key]
        if evaluation.metrics.get(CONFIG_ID_KEY) == judged:
            frames.append(evaluation.predictions)
    stats = symbol_statistics(_stitched(frames), horizon=horizon, n_trials=trials, gates=gates, symbol=symbol)
    return {
        "digest": digest,
        "statistics": {k: v for k, v in stats.items() if k != "_excess_returns"},
        "left_out": len(keys) - len(frames),
        "judged_windows": len(frames),
        "excess": stats["_excess_returns"],
    }


def _stitched(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(BRIEFING_COLUMNS))


def _with_configuration(briefing: dict, config_id: str, left_out: int, judged_windows: int) -> dict:
    """Name the configuration judged; a symbol with no window of it is INSUFFICIENT_DATA, saying so."""
    out = {**briefing, CONFIG_ID_KEY: config_id, "windows_left_out": left_out}
    if judged_windows == 0:
        out["decision"] = INSUFFICIENT_DATA
        out["reasons"] = [
            f"no window evaluated under configuration {config_id} "
            f"({left_out} window(s) of other configurations left out)"
        ]
    return out


def _with_demotions(markdown: str, base_dir: str, briefings: list[dict]) -> str:
    """Mark each symbol whose production model was demoted, and append why (the registry's record)."""
    lines = []
    for b in briefings:
        demotion = active_demotion(base_dir, b["symbol"])
        if demotion is None:
            continue
        window = split_key(demotion["from"])[1]
        b["demoted"] = {
            "model": demotion["from"],
            "at": demotion["at"],
            "reason": demotion["reason"],
            "archived": demotion.get("archived"),
        }
        lines.append(
            f"- **{b['symbol']}**: {demotion['from']} demoted at {demotion['at']} ({demotion['reason']}); "
            f"no production model until a student of a window after {window} is promoted or a person "
            f"rolls back (archive {demotion.get('archived')})."
        )
    if not lines:
        return markdown
    return markdown + "\n\n## Demoted production models\n\n" + "\n".join(lines) + "\n"


def _configuration_header(markdown: str, config_id: str, default: bool, left_out: dict[str, int]) -> str:
    """Insert, under the title, which configuration was judged and what was left out per symbol."""
    title, _, rest = markdown.partition("\n")
    origin = "the code's default configuration" if default else "selected with BriefingConfig.config_id"
    dropped = ", ".join(f"{s} {n}" for s, n in sorted(left_out.items()) if n) or "none"
    line = (
        f"Configuration judged: `{config_id}` ({origin}). Windows of other configurations left out: "
        f"{dropped}."
    )
    return f"{title}\n\n{line}\n{rest}"


@asset(
    ins={"student_evaluation": AssetIn(metadata={"allow_missing": True, "as_dict": True, "lazy": True})},
    io_manager_key="artifacts_io_manager",
    automation_condition=AFTER_BATCH_SETTLES,
    group_name="evaluation",
    description=(
        "Per symbol: every window evaluated under the judged configuration (default: the code's; "
        "BriefingConfig.config_id) stitched into one out-of-sample record; the rank IC with a HAC interval "
        "and a one-sided p-value against the calibrated null (z referred to null_shift + null_scale * t, "
        "measured on no-signal records; 0 and 1 is nominal) times the configurations tried, "
        "Benjamini-Hochberg across symbols, the excess return over buy-and-hold with its "
        "interval, DSR, Diebold-Mariano vs the base rate, gates and a PROMOTE/REJECT/INSUFFICIENT_DATA "
        "decision. Written to briefings/ (latest and a dated copy)."
    ),
    kinds={"pandas", "scipy"},
    owners=OWNERS,
)
def promotion_briefing(
    context: AssetExecutionContext,
    config: BriefingConfig,
    student_evaluation: LazyPartitions,
    settings: PipelineSettings,
    artifacts: ArtifactsResource,
) -> BriefingArtifact:
    judged = judged_config_id(config, settings.forecast_horizon)
    gates = config.gates()
    tried = configurations_tried(context)
    keys_by_symbol: dict[str, list[str]] = {}
    for key in sorted(student_evaluation):
        keys_by_symbol.setdefault(split_key(key)[0], []).append(key)
    previous = _previous_cache(artifacts)
    horizon = settings.forecast_horizon
    trials = {symbol: max(tried.get(symbol, 0), 1) + config.extra_trials for symbol in keys_by_symbol}
    digests = {
        symbol: _inputs_digest(symbol, keys, student_evaluation, judged, (horizon, trials[symbol], gates))
        for symbol, keys in keys_by_symbol.items()
    }

    def entry_of(symbol: str) -> dict[str, Any]:
        return symbol_entry(
            symbol,
            keys_by_symbol[symbol],
            student_evaluation,
            judged,
            horizon=horizon,
            trials=trials[symbol],
            gates=gates,
            digest=digests[symbol],
        )

    # A previous entry is reused while the digest of its inputs matches (a briefing after one
    # partition's update reads that symbol's evaluations only). The others (every symbol after a new
    # window) are recomputed in forked workers on the idle cores, reading a symbol's evaluations back
    # being most of it; on object storage in the run's process (its client does not survive a fork).
    cache = {
        symbol: cached
        for symbol, cached in previous.items()
        if symbol in digests and cached.get("digest") == digests[symbol]
    }
    reused = len(cache)
    stale = sorted(set(keys_by_symbol) - set(cache))
    workers = step_workers(context, len(stale), 1, "symbols") if student_evaluation.forkable else 1
    for symbol, computed, _ in compute_each(entry_of, stale, (), workers):
        cache[symbol] = computed
    cache = {symbol: cache[symbol] for symbol in sorted(cache)}
    statistics = [
        {**entry["statistics"], "_excess_returns": np.asarray(entry["excess"])} for entry in cache.values()
    ]
    briefings = [
        _with_configuration(b, judged, cache[b["symbol"]]["left_out"], cache[b["symbol"]]["judged_windows"])
        for b in decide(statistics, gates)
    ]
    left_out = {symbol: entry["left_out"] for symbol, entry in cache.items()}
    context.log.info(
        f"briefing of {len(cache)} symbols: {reused} reused unchanged, {len(cache) - reused} recomputed"
    )
    generated_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    is_default = judged == default_config_id(settings.forecast_horizon)
    markdown = _configuration_header(
        render_markdown(briefings, generated_at=generated_at), judged, is_default, left_out
    )
    markdown = _with_demotions(markdown, artifacts.location, briefings)
    counts = pd.Series([b["decision"] for b in briefings], dtype="object").value_counts().to_dict()
    context.add_output_metadata(
        {
            "symbols": len(briefings),
            "symbols_recomputed": len(cache) - reused,  # the others' evaluations had not changed
            **{f"decision_{k.lower()}": int(v) for k, v in counts.items()},
            CONFIG_ID_KEY: MetadataValue.text(judged),
            "config_is_default": is_default,
            "windows_left_out": MetadataValue.json(left_out),
            "briefing": MetadataValue.md(markdown),
        }
    )
    return BriefingArtifact(generated_at=generated_at, symbols=briefings, markdown=markdown, cache=cache)


def _previous_cache(artifacts: ArtifactsResource) -> dict[str, dict[str, Any]]:
    """The last briefing's per-symbol cache ({} on a first briefing or an unreadable one)."""
    try:
        return artifacts.store().read_fixed(codec_for("promotion_briefing"), "promotion_briefing").cache
    except ArtifactError:
        return {}


@asset(
    ins={"promotion_briefing": AssetIn()},
    automation_condition=AFTER_BATCH_SETTLES,
    group_name="evaluation",
    description=(
        "Copies the newest student of the judged configuration of every PROMOTE symbol to "
        "`production/<SYMBOL>/current`, archiving the one it replaces. Never promotes a REJECT or "
        "INSUFFICIENT_DATA, nor a student of a configuration the briefing did not judge."
    ),
    kinds={"python"},
    owners=OWNERS,
)
def production_models(
    context: AssetExecutionContext,
    promotion_briefing: BriefingArtifact,
    artifacts: ArtifactsResource,
) -> MaterializeResult:
    materialised = context.instance.get_materialized_partitions(AssetKey("student_model"))
    base_dir = artifacts.location
    lines = []
    for entry in promotion_briefing.symbols:
        symbol, decision = entry["symbol"], entry["decision"]
        page = symbol_page_link(symbol)
        judged = entry.get(CONFIG_ID_KEY)
        if decision != PROMOTE:
            lines.append(f"| {page} | {decision} | {judged} | not promoted |")
            continue
        if judged is None:
            why = "not promoted: the briefing names no judged configuration (written before they were)"
            lines.append(f"| {page} | {decision} | - | {why} |")
            continue
        choice = newest_student_of_config(base_dir, symbol, materialised, judged)
        passed = "; ".join(f"passed over newer {key} ({why})" for key, why in choice.passed_over)
        if choice.partition_key is None:
            why = f"not promoted: no materialised student of configuration {judged}"
            lines.append(f"| {page} | {decision} | {judged} | {why}{'; ' + passed if passed else ''} |")
            continue
        try:
            record = promote(
                base_dir, symbol, choice.partition_key, decision, entry["gates"], config_id=judged
            )
        except PromotionRefused as exc:  # a demotion in force, or a configuration changed since
            lines.append(f"| {page} | {decision} | {judged} | not promoted: {exc} |")
            continue
        action = f"{record.partition_key} now in production{'; ' + passed if passed else ''}"
        lines.append(f"| {page} | {decision} | {judged} | {action} |")
    table = "| symbol | decision | config | action |\n| --- | --- | --- | --- |\n" + "\n".join(lines)
    return MaterializeResult(metadata={"actions": MetadataValue.md(table)})
