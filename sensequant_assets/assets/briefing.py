"""`promotion_briefing` and `production_models`: honest statistics, then promotion of survivors."""

from datetime import UTC, datetime

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
)

from sensequant_assets.artifacts import BriefingArtifact, EvaluationArtifact
from sensequant_assets.assets.evaluation import CONFIG_ID_KEY
from sensequant_assets.assets.partition_context import partition_metadata
from sensequant_assets.automation import AFTER_BATCH_SETTLES
from sensequant_assets.io_manager import PartitionDirIOManager
from sensequant_assets.ml.briefing import PromotionGates, render_markdown, symbol_briefing
from sensequant_assets.partitions import latest_by_symbol, split_key
from sensequant_assets.registry import promote
from sensequant_assets.resources import PipelineSettings


class BriefingConfig(Config):
    """Promotion gates; `extra_trials` counts configurations tried outside this instance's history."""

    min_windows: int = 2
    min_rows: int = 100
    auc_lower_bound: float = 0.5
    min_dsr: float = 0.95
    require_beats_buy_hold: bool = True
    max_dm_pvalue: float | None = None  # None: Diebold-Mariano reported, not a gate
    n_boot: int = 1000
    seed: int = 0
    extra_trials: int = 0

    def gates(self) -> PromotionGates:
        fields = PromotionGates.__dataclass_fields__
        return PromotionGates(**{k: v for k, v in self.model_dump().items() if k in fields})


def configurations_tried(context: AssetExecutionContext, symbol: str) -> int:
    """Distinct model configurations ever evaluated for `symbol`, from the instance's event log.

    Counting the history (not just the artifacts on disk, which re-runs overwrite) keeps the
    deflated Sharpe ratio honest about how many configurations were tried before this one.
    """
    seen: set[str] = set()
    cursor = None
    while True:
        page = context.instance.fetch_materializations(
            AssetKey("student_evaluation"), limit=1000, cursor=cursor
        )
        for record in page.records:
            mat = record.asset_materialization
            if mat is None or mat.partition is None or split_key(mat.partition)[0] != symbol:
                continue
            config_id = partition_metadata(mat).get(CONFIG_ID_KEY)
            if config_id is not None:
                seen.add(str(config_id))
        if not page.has_more:
            return max(len(seen), 1)
        cursor = page.cursor


@asset(
    ins={"student_evaluation": AssetIn(metadata={"allow_missing": True, "as_dict": True})},
    io_manager_key="artifacts_io_manager",
    automation_condition=AFTER_BATCH_SETTLES,
    group_name="evaluation",
    description=(
        "Per symbol: every evaluated window stitched into one out-of-sample record; bootstrap CIs, "
        "PSR/DSR, Diebold-Mariano vs the base rate, gates and a PROMOTE/REJECT/INSUFFICIENT_DATA "
        "decision. Written to briefings/ (latest and a dated copy)."
    ),
)
def promotion_briefing(
    context: AssetExecutionContext,
    config: BriefingConfig,
    student_evaluation: dict[str, EvaluationArtifact],
    settings: PipelineSettings,
) -> BriefingArtifact:
    by_symbol: dict[str, list[pd.DataFrame]] = {}
    for key, evaluation in sorted(student_evaluation.items()):
        by_symbol.setdefault(split_key(key)[0], []).append(evaluation.predictions)
    gates = config.gates()
    briefings = []
    for symbol, frames in sorted(by_symbol.items()):
        n_trials = configurations_tried(context, symbol) + config.extra_trials
        briefing = symbol_briefing(
            pd.concat(frames, ignore_index=True),
            horizon=settings.forecast_horizon,
            n_trials=n_trials,
            gates=gates,
            symbol=symbol,
        )
        briefings.append({"symbol": symbol, **briefing})
    generated_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    markdown = render_markdown(briefings, generated_at=generated_at)
    counts = pd.Series([b["decision"] for b in briefings], dtype="object").value_counts().to_dict()
    context.add_output_metadata(
        {
            "symbols": len(briefings),
            **{f"decision_{k.lower()}": int(v) for k, v in counts.items()},
            "briefing": MetadataValue.md(markdown),
        }
    )
    return BriefingArtifact(generated_at=generated_at, symbols=briefings, markdown=markdown)


@asset(
    ins={"promotion_briefing": AssetIn()},
    automation_condition=AFTER_BATCH_SETTLES,
    group_name="evaluation",
    description=(
        "Copies the newest student of every PROMOTE symbol to production/<SYMBOL>/current, "
        "archiving the one it replaces. Never promotes a REJECT or INSUFFICIENT_DATA."
    ),
)
def production_models(
    context: AssetExecutionContext,
    promotion_briefing: BriefingArtifact,
    artifacts_io_manager: ResourceParam[PartitionDirIOManager],
) -> MaterializeResult:
    latest = latest_by_symbol(context.instance.get_materialized_partitions(AssetKey("student_model")))
    lines = []
    for entry in promotion_briefing.symbols:
        symbol, decision = entry["symbol"], entry["decision"]
        if decision != "PROMOTE":
            lines.append(f"| {symbol} | {decision} | not promoted |")
            continue
        if symbol not in latest:
            lines.append(f"| {symbol} | {decision} | no materialised student to promote |")
            continue
        record = promote(artifacts_io_manager.base_dir, symbol, latest[symbol], decision, entry["gates"])
        lines.append(f"| {symbol} | {decision} | {record.partition_key} now in production |")
    table = "| symbol | decision | action |\n| --- | --- | --- |\n" + "\n".join(lines)
    return MaterializeResult(metadata={"actions": MetadataValue.md(table)})
