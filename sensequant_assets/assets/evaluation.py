"""`student_evaluation`: the student of window k-1 predicts window k of the same symbol.

It scores window k's own rows of `teacher_labels` only: a teacher trained with a lookback stores
the earlier windows' training rows there too (the student learns from them), and those are in the
previous student's training data.
"""

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
    TimeWindowPartitionMapping,
    asset,
)

from sensequant_assets.artifacts import EvaluationArtifact, StudentArtifact
from sensequant_assets.assets.catalog import OWNERS
from sensequant_assets.assets.checks import EVALUATION_CHECKS
from sensequant_assets.assets.partition_context import (
    BACKFILL_POLICY,
    BATCH_INPUT,
    PartitionWindow,
    by_key,
    emit,
    metadata_value,
    partition_windows,
)
from sensequant_assets.assets.student import CONFIG_ID_KEY, config_hash
from sensequant_assets.assets.teacher import window_rows
from sensequant_assets.ml.evaluation import CALIBRATION_BINS
from sensequant_assets.ml.walk_forward import evaluate_window
from sensequant_assets.partitions import make_key, previous_window, symbol_window_partitions
from sensequant_assets.plots import equity_png, png_markdown, reliability_png

EVALUATION_CODE_VERSION = "2"  # 2: student_score, ECE and reliability.png

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


def configuration_id(student_metadata: dict) -> str:
    """The configuration id the student recorded when it was trained (see `student.config_hash`).

    The briefing compares it with `default_config_id`, so it must not be recomputed from anything the
    student did not record. A student trained before ids were recorded gets the hash of its
    hyper-parameters that was its id then: still one distinct 'trial', never equal to a current
    configuration's id.
    """
    recorded = student_metadata.get(CONFIG_ID_KEY)
    if recorded:
        return str(recorded)
    params = {
        "teacher": student_metadata.get("teacher", {}).get("hyperparameters"),
        "student": student_metadata.get("hyperparameters"),
    }
    return config_hash(params)


class EvaluationConfig(Config):
    """Backtest costs, charged on every position change."""

    cost_bps: float = 10.0


@asset(
    partitions_def=symbol_window_partitions,
    ins={
        "previous_student": AssetIn(
            "student_model", partition_mapping=PREVIOUS_WINDOW_SAME_SYMBOL, metadata=BATCH_INPUT
        ),
        "teacher_labels": AssetIn(metadata=BATCH_INPUT),
    },
    io_manager_key="artifacts_io_manager",
    output_required=False,
    backfill_policy=BACKFILL_POLICY,
    code_version=EVALUATION_CODE_VERSION,
    group_name="evaluation",
    description=(
        "Out-of-sample evaluation: the previous window's student predicts this window. Metrics, "
        "predictions, and a long/flat backtest against buy-and-hold under evaluation/."
    ),
    kinds={"scikit-learn", "pandas", "matplotlib"},
    owners=OWNERS,
    check_specs=EVALUATION_CHECKS.specs,
)
def student_evaluation(
    context: AssetExecutionContext,
    config: EvaluationConfig,
    previous_student: dict[str, StudentArtifact],
    teacher_labels: dict[str, pd.DataFrame],
) -> Iterator:
    students, labels = by_key(previous_student), by_key(teacher_labels)
    values, skipped = {}, {}
    for pw in partition_windows(context):
        previous = previous_window(pw.window_key)
        student = students.get(str(make_key(pw.symbol, previous))) if previous else None
        if previous is None:
            skipped[pw.key] = f"{pw.label}: first window, no earlier student to evaluate"
        elif student is None:
            skipped[pw.key] = f"{pw.label}: the previous window's student_model was not materialised"
        elif pw.key not in labels:
            skipped[pw.key] = (
                f"{pw.label}: this window's teacher_labels were not materialised (nothing to score)"
            )
        elif len(rows := window_rows(labels[pw.key], pw.start, pw.end)) < 2:
            skipped[pw.key] = (
                f"{pw.label}: {len(rows)} of teacher_labels' rows lie in this window, "
                "at least 2 needed to score"
            )
        else:
            values[pw.key] = evaluate(pw, student, rows, config.cost_bps)
    checks = EVALUATION_CHECKS.evaluate(
        context, values, lambda pw: window_rows(labels[pw.key], pw.start, pw.end)
    )
    skipped.update(checks.refused)  # a blocking check failed: not written, the briefing never sees it
    kept = checks.keep(values)
    yield from emit(context, "result", kept, skipped, _metadata, ["student_evaluation"], per_partition=True)
    yield from checks.events(context)


def evaluate(
    pw: PartitionWindow, student: StudentArtifact, labels: pd.DataFrame, cost_bps: float
) -> EvaluationArtifact:
    """Score the previous window's student on this window's rows (`window_rows` of `labels`, which
    may hold a lookback's earlier rows too), with an equity curve."""
    labels = window_rows(labels, pw.start, pw.end)
    result = evaluate_window(
        student.model,
        labels,
        train_base_rate=float(student.metadata["train_base_rate"]),
        cost_bps=cost_bps,
        window=pw.key,
    )
    metrics = {
        **result.metrics,
        "evaluated_partition": pw.key,
        "model_partition": student.metadata.get("partition_key"),
        "model_sha256": student.metadata.get("model_sha256"),
        CONFIG_ID_KEY: configuration_id(student.metadata),
    }
    png = equity_png(result.equity, f"{pw.label}: student of the previous window, out of sample")
    reliability = result.metrics["reliability"]
    diagram = reliability_png(
        {
            f"student, calibrated (ECE {result.metrics['ece']:.3f})": reliability["student"],
            f"before calibration (ECE {result.metrics['uncalibrated_ece']:.3f})": reliability["uncalibrated"],
        },
        f"{pw.label}\nreliability out of sample, {CALIBRATION_BINS} equal-mass bins",
        base_rate=float(labels["label"].mean()),
    )
    return EvaluationArtifact(metrics, result.predictions, result.equity, png, diagram)


def _metadata(artifact: EvaluationArtifact) -> dict:
    metrics = artifact.metrics
    return {
        **{k: metadata_value(v) for k, v in metrics.items() if isinstance(v, int | float | type(None))},
        "model_partition": MetadataValue.text(str(metrics["model_partition"])),
        CONFIG_ID_KEY: MetadataValue.text(metrics[CONFIG_ID_KEY]),
        # Figures inline for a run of one partition; `emit` leaves them out of batches (files only).
        "equity_curve": MetadataValue.md(png_markdown(artifact.equity_png, "equity curve")),
        "reliability_diagram": MetadataValue.md(
            png_markdown(artifact.reliability_png, "reliability diagram")
        ),
    }
