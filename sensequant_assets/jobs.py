"""Jobs: per-partition training + evaluation, the briefing, and registry rollback."""

from dagster import AssetSelection, Config, OpExecutionContext, define_asset_job, job, op

from sensequant_assets.io_manager import PartitionDirIOManager
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.registry import rollback

PARTITION_ASSETS = ("market_bars", "teacher_model", "teacher_labels", "student_model", "student_evaluation")

train_job = define_asset_job(
    name="train_job",
    selection=AssetSelection.assets(*PARTITION_ASSETS),
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


@op(required_resource_keys={"artifacts_io_manager"})
def rollback_model(context: OpExecutionContext, config: RollbackConfig) -> None:
    store: PartitionDirIOManager = context.resources.artifacts_io_manager
    record = rollback(store.base_dir, config.symbol, config.to or None)
    context.log.info(f"{config.symbol}: production model is now {record.partition_key}")


@job(description="Restore an archived production model of one symbol (see production/<SYMBOL>/).")
def rollback_job() -> None:
    rollback_model()
