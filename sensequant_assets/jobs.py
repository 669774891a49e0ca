"""Jobs: per-partition training + evaluation, the briefing, registry rollback and demotion."""

from dagster import (
    AssetKey,
    AssetObservation,
    AssetSelection,
    Config,
    MetadataValue,
    OpExecutionContext,
    define_asset_job,
    job,
    op,
)

from sensequant_assets.io_manager import ArtifactsResource
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.registry import demote, rollback

# The partitioned training assets of one symbol-window.
PARTITION_ASSETS = (
    "market_bars",
    "teacher_model",
    "teacher_labels",
    "student_model",
    "student_evaluation",
)
# What train_job, the history backfills and the sensors' runs materialise: the training assets
# and, leading them, whatever fills the data source's cache (the assets market_bars depends on:
# breeze_bars with Breeze, none for a source read directly). The ingestion assets are the ones
# build_definitions chose with the source; this selection resolves against the definitions
# loaded, so nothing here reads the environment or is fixed at import.
PARTITION_SELECTION = AssetSelection.assets(*PARTITION_ASSETS) | AssetSelection.assets(
    "market_bars"
).upstream(include_self=False)


def partition_asset_keys(asset_graph) -> set[AssetKey]:
    """PARTITION_SELECTION's asset keys in `asset_graph` (a code location's)."""
    return set(PARTITION_SELECTION.resolve(asset_graph))


train_job = define_asset_job(
    name="train_job",
    selection=PARTITION_SELECTION,
    partitions_def=symbol_window_partitions,
    description="Bars, teacher, student and out-of-sample evaluation of one symbol-window partition.",
)

briefing_job = define_asset_job(
    name="briefing_job",
    selection=AssetSelection.assets("promotion_briefing", "production_models"),
    description="Stitch every evaluation into the promotion briefing and promote the survivors.",
)


class RollbackConfig(Config):
    """Which symbol to roll back, and to which archived model (default: the most recent archive)."""

    symbol: str
    to: str = ""


@op
def rollback_model(context: OpExecutionContext, config: RollbackConfig, artifacts: ArtifactsResource) -> None:
    record = rollback(artifacts.location, config.symbol, config.to or None)
    context.log.info(f"{config.symbol}: production model is now {record.partition_key}")


@job(description="Restore an archived production model of one symbol (see `production/<SYMBOL>/`).")
def rollback_job() -> None:
    rollback_model()


class DemoteConfig(Config):
    """Which production model to stop serving (`expected`: the partition the decay verdict judged)."""

    symbol: str
    expected: str
    expected_promoted_at: str = ""  # with `expected`: the very promotion judged (a re-promotion is another)
    reason: str
    after_window: str  # the newest evaluated window behind the verdict; retraining waits for a newer one


@op
def demote_model(context: OpExecutionContext, config: DemoteConfig, artifacts: ArtifactsResource) -> None:
    entry = demote(
        artifacts.location,
        config.symbol,
        expected=config.expected,
        expected_promoted_at=config.expected_promoted_at or None,
        reason=config.reason,
        evidence={"after_window": config.after_window, "run_id": context.run_id},
    )
    if entry is None:
        context.log.warning(
            f"{config.symbol}: production no longer serves {config.expected} (promoted or rolled back "
            "since the verdict); nothing demoted"
        )
        return
    context.log.warning(f"{config.symbol}: demoted {config.expected}: {config.reason}")
    context.log_event(
        AssetObservation(
            asset_key="production_models",
            metadata={
                "symbol": config.symbol,
                "action": "demoted",
                "model": config.expected,
                "reason": MetadataValue.text(config.reason),
                "archived_as": entry["archived"],
            },
        )
    )


@job(
    description=(
        "Stop serving a decayed production model (archived, restorable with rollback_job); requested "
        "by the model_decay sensor, once per promoted model."
    )
)
def demote_job() -> None:
    demote_model()
