"""`student_model`: a small model distilled from the teacher's out-of-fold soft labels."""

from collections.abc import Iterator
from dataclasses import asdict
from typing import Literal

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, Output, asset

from sensequant_assets import __version__
from sensequant_assets.artifacts import StudentArtifact, TeacherArtifact
from sensequant_assets.assets.partition_context import metadata_value, partition_window, skip
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
    ins={"teacher_labels": AssetIn(), "teacher_model": AssetIn()},
    io_manager_key="artifacts_io_manager",
    output_required=False,
    automation_condition=EVERY_WINDOW_EAGER,
    code_version=STUDENT_CODE_VERSION,
    group_name="training",
    description="Student trained on the teacher's soft labels; files under student/.",
)
def student_model(
    context: AssetExecutionContext,
    config: StudentConfig,
    teacher_labels: pd.DataFrame,
    teacher_model: TeacherArtifact,
    settings: PipelineSettings,
) -> Iterator:
    pw = partition_window(context)
    params = config.params()
    try:
        result = train_student(
            teacher_labels, teacher_labels["teacher_proba"].to_numpy(), params, settings.forecast_horizon
        )
    except TooFewRowsError as exc:
        yield from skip(context, ["student_model"], str(exc))
        return
    metadata = {
        "symbol": pw.symbol,
        "partition_key": str(context.partition_key),
        "date_range": {"start": pw.start.isoformat(), "end": pw.end.isoformat()},
        "teacher": {
            "model_sha256": teacher_model.metadata.get("model_sha256"),
            "data_sha256": teacher_model.metadata.get("data_sha256"),
            "metrics": teacher_model.metadata.get("metrics"),
            "hyperparameters": teacher_model.metadata.get("hyperparameters"),
        },
        "train_rows": int(result.train_rows),
        "holdout_rows": int(result.holdout_rows),
        # The naive forecaster the out-of-sample evaluation compares against.
        "train_base_rate": float(teacher_labels["label"].mean()),
        "hyperparameters": result.params_used,
        "code_version": f"{__version__}+student.{STUDENT_CODE_VERSION}",
    }
    yield Output(
        StudentArtifact(model=result.model, metrics=result.metrics, metadata=metadata),
        metadata={
            "rows": len(teacher_labels),
            "train_rows": int(result.train_rows),
            "holdout_rows": int(result.holdout_rows),
            **{k: metadata_value(v) for k, v in result.metrics.items()},
            "params": MetadataValue.json(asdict(params)),
        },
    )
