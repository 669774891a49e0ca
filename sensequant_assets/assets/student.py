"""`student_model`: a small model distilled from the teacher's out-of-fold soft labels."""

from collections.abc import Iterator
from typing import Literal

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, asset

from sensequant_assets import __version__
from sensequant_assets.artifacts import StudentArtifact, TeacherArtifact
from sensequant_assets.assets.partition_context import (
    BACKFILL_POLICY,
    BATCH_INPUT,
    PartitionWindow,
    by_key,
    compute_partitions,
    emit,
    metadata_value,
)
from sensequant_assets.automation import EVERY_WINDOW_EAGER
from sensequant_assets.ml.student import StudentParams, train_student
from sensequant_assets.ml.teacher import TooFewRowsError
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.resources import PipelineSettings

STUDENT_CODE_VERSION = "1"


class StudentConfig(Config):
    """Student model choice and regularisation; every field reaches `train_student`."""

    kind: Literal["logistic", "lightgbm"] = "logistic"
    C: float = 1.0
    holdout_fraction: float = 0.2
    seed: int = 42
    lgbm_n_estimators: int = 50
    lgbm_num_leaves: int = 7
    lgbm_learning_rate: float = 0.05

    def params(self) -> StudentParams:
        return StudentParams(**self.model_dump())


@asset(
    partitions_def=symbol_window_partitions,
    ins={
        "teacher_labels": AssetIn(metadata=BATCH_INPUT),
        "teacher_model": AssetIn(metadata=BATCH_INPUT),
    },
    io_manager_key="artifacts_io_manager",
    output_required=False,
    backfill_policy=BACKFILL_POLICY,
    automation_condition=EVERY_WINDOW_EAGER,
    code_version=STUDENT_CODE_VERSION,
    group_name="training",
    description="Student trained on the teacher's soft labels; files under student/.",
)
def student_model(
    context: AssetExecutionContext,
    config: StudentConfig,
    teacher_labels: dict[str, pd.DataFrame],
    teacher_model: dict[str, TeacherArtifact],
    settings: PipelineSettings,
) -> Iterator:
    labels_by_key, teachers = by_key(teacher_labels), by_key(teacher_model)
    values, skipped = compute_partitions(
        context,
        "student",
        lambda pw: distil(pw, labels_by_key[pw.key], teachers[pw.key], config, settings.forecast_horizon),
        lambda pw: (
            None
            if pw.key in labels_by_key and pw.key in teachers
            else f"{pw.label}: the teacher was not materialised (nothing to distil)"
        ),
        (TooFewRowsError,),
    )
    yield from emit(context, "result", values, skipped, _metadata, ["student_model"])


def distil(
    pw: PartitionWindow, labels: pd.DataFrame, teacher: TeacherArtifact, config: StudentConfig, horizon: int
) -> StudentArtifact:
    """One partition's student; raises TooFewRowsError when it must be skipped."""
    params = config.params()
    result = train_student(labels, labels["teacher_proba"].to_numpy(), params, horizon)
    metadata = {
        "symbol": pw.symbol,
        "partition_key": pw.key,
        "date_range": {"start": pw.start.isoformat(), "end": pw.end.isoformat()},
        "teacher": {
            "model_sha256": teacher.metadata.get("model_sha256"),
            "data_sha256": teacher.metadata.get("data_sha256"),
            "metrics": teacher.metadata.get("metrics"),
            "hyperparameters": teacher.metadata.get("hyperparameters"),
        },
        "rows": len(labels),
        "train_rows": int(result.train_rows),
        "holdout_rows": int(result.holdout_rows),
        # The naive forecaster the out-of-sample evaluation compares against.
        "train_base_rate": float(labels["label"].mean()),
        "hyperparameters": result.params_used,
        "code_version": f"{__version__}+student.{STUDENT_CODE_VERSION}",
    }
    return StudentArtifact(model=result.model, metrics=result.metrics, metadata=metadata)


def _metadata(artifact: StudentArtifact) -> dict:
    meta = artifact.metadata
    return {
        "rows": meta["rows"],
        "train_rows": meta["train_rows"],
        "holdout_rows": meta["holdout_rows"],
        **{k: metadata_value(v) for k, v in artifact.metrics.items()},
        "params": MetadataValue.json(meta["hyperparameters"]),
    }
