"""`student_evaluation`: the student of window k-1 predicts window k of the same symbol."""

import hashlib
import json
from collections.abc import Iterator

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    Config,
    DimensionPartitionMapping,
    IdentityPartitionMapping,
    MetadataValue,
    MultiPartitionMapping,
    Output,
    TimeWindowPartitionMapping,
    asset,
)

from sensequant_assets.artifacts import EvaluationArtifact, StudentArtifact
from sensequant_assets.assets.partition_context import metadata_value, partition_window, skip
from sensequant_assets.automation import EVERY_WINDOW_EAGER
from sensequant_assets.ml.walk_forward import evaluate_window
from sensequant_assets.partitions import symbol_window_partitions, window_partitions
from sensequant_assets.plots import equity_png, png_markdown

EVALUATION_CODE_VERSION = "1"

# Both dimensions mapped: same symbol, previous window. Leaving `symbol` out would make every
# symbol's student an upstream of every evaluation.
PREVIOUS_WINDOW_SAME_SYMBOL = MultiPartitionMapping(
    {
        "symbol": DimensionPartitionMapping("symbol", IdentityPartitionMapping()),
        "window": DimensionPartitionMapping(
            "window",
            TimeWindowPartitionMapping(
                start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
            ),
        ),
    }
)


CONFIG_ID_KEY = "config_id"


def configuration_id(student_metadata: dict) -> str:
    """A short id of the teacher + student hyper-parameters: one 'trial' for the deflated Sharpe."""
    params = {
        "teacher": student_metadata.get("teacher", {}).get("hyperparameters"),
        "student": student_metadata.get("hyperparameters"),
    }
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


class EvaluationConfig(Config):
    """Backtest costs, charged on every position change."""

    cost_bps: float = 10.0


@asset(
    partitions_def=symbol_window_partitions,
    ins={
        "previous_student": AssetIn(
            "student_model",
            partition_mapping=PREVIOUS_WINDOW_SAME_SYMBOL,
            metadata={"allow_missing": True},
        ),
        "teacher_labels": AssetIn(metadata={"allow_missing": True}),
    },
    io_manager_key="artifacts_io_manager",
    output_required=False,
    automation_condition=EVERY_WINDOW_EAGER,
    code_version=EVALUATION_CODE_VERSION,
    group_name="evaluation",
    description=(
        "Out-of-sample evaluation: the previous window's student predicts this window. Metrics, "
        "predictions, and a long/flat backtest against buy-and-hold under evaluation/."
    ),
)
def student_evaluation(
    context: AssetExecutionContext,
    config: EvaluationConfig,
    previous_student: StudentArtifact | None,
    teacher_labels: pd.DataFrame | None,
) -> Iterator:
    pw = partition_window(context)
    if previous_student is None:
        first = window_partitions.get_first_partition_key()
        reason = (
            f"{pw.label}: first window, no earlier student to evaluate"
            if pw.window_key == first
            else f"{pw.label}: the previous window's student_model was not materialised"
        )
        yield from skip(context, ["student_evaluation"], reason)
        return
    if teacher_labels is None:
        reason = f"{pw.label}: this window's teacher_labels were not materialised (nothing to score)"
        yield from skip(context, ["student_evaluation"], reason)
        return
    result = evaluate_window(
        previous_student.model,
        teacher_labels,
        train_base_rate=float(previous_student.metadata["train_base_rate"]),
        cost_bps=config.cost_bps,
        window=str(context.partition_key),
    )
    config_id = configuration_id(previous_student.metadata)
    metrics = {
        **result.metrics,
        "evaluated_partition": str(context.partition_key),
        "model_partition": previous_student.metadata.get("partition_key"),
        "model_sha256": previous_student.metadata.get("model_sha256"),
        CONFIG_ID_KEY: config_id,
    }
    png = equity_png(result.equity, f"{pw.label}: student of the previous window, out of sample")
    headline = {k: metadata_value(v) for k, v in result.metrics.items() if not isinstance(v, dict)}
    yield Output(
        EvaluationArtifact(metrics, result.predictions, result.equity, png),
        metadata={
            **headline,
            "model_partition": MetadataValue.text(str(metrics["model_partition"])),
            CONFIG_ID_KEY: MetadataValue.text(config_id),
            "equity_curve": MetadataValue.md(png_markdown(png, "equity curve")),
        },
    )
