"""`student_model`: a small model distilled from the teacher's out-of-fold soft labels."""

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetRecordsFilter,
    Config,
    Failure,
    MetadataValue,
    asset,
)

from sensequant_assets import __version__
from sensequant_assets.artifacts import StudentArtifact, TeacherArtifact
from sensequant_assets.assets.catalog import OWNERS
from sensequant_assets.assets.partition_context import (
    BACKFILL_POLICY,
    BATCH_INPUT,
    SKIP_METADATA_KEY,
    PartitionWindow,
    by_key,
    compute_partitions,
    emit,
    metadata_value,
    run_partition_keys,
    window_of,
)
from sensequant_assets.assets.teacher import TeacherConfig, teacher_configuration
from sensequant_assets.ml.student import StudentParams, train_student
from sensequant_assets.ml.teacher import TooFewRowsError
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.resources import PipelineSettings

STUDENT_CODE_VERSION = "2"  # 2: calibrated student; student_score in predictions

# The metadata key (student metadata.json, evaluation metrics and Dagster metadata) of the
# configuration id: one id per teacher + student configuration, i.e. one 'trial' for the deflated Sharpe.
CONFIG_ID_KEY = "config_id"


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


def model_configuration(teacher: Mapping[str, Any], config: StudentConfig) -> dict[str, Any]:
    """The whole configuration of a student: its teacher's (from `teacher_configuration`) and its own."""
    return {**teacher, "student": config.model_dump()}


def config_hash(configuration: Mapping[str, Any]) -> str:
    """A short, stable id of a configuration (JSON with sorted keys, so dict order does not matter)."""
    canonical = json.dumps(configuration, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def default_config_id(horizon: int) -> str:
    """The id of the code's default configuration at `horizon`, computed without any trained model.

    Built by the same functions a run uses to record its id, so a default run records exactly this.
    """
    return config_hash(model_configuration(teacher_configuration(TeacherConfig(), horizon), StudentConfig()))


def _teacher_part(teacher: TeacherArtifact) -> dict[str, Any]:
    """The teacher's recorded configuration; a teacher trained before it was recorded gets its
    hyper-parameters and label settings instead, which never match a current configuration."""
    recorded = teacher.metadata.get("configuration")
    if recorded is not None:
        return dict(recorded)
    return {
        "legacy_teacher": {
            "hyperparameters": teacher.metadata.get("hyperparameters"),
            "config": teacher.metadata.get("config"),
        }
    }


@asset(
    partitions_def=symbol_window_partitions,
    ins={
        "teacher_labels": AssetIn(metadata=BATCH_INPUT),
        "teacher_model": AssetIn(metadata=BATCH_INPUT),
    },
    io_manager_key="artifacts_io_manager",
    output_required=False,
    backfill_policy=BACKFILL_POLICY,
    code_version=STUDENT_CODE_VERSION,
    group_name="training",
    description="Student trained on the teacher's soft labels; files under student/.",
    kinds={"scikit-learn", "lightgbm"},
    owners=OWNERS,
)
def student_model(
    context: AssetExecutionContext,
    config: StudentConfig,
    teacher_labels: dict[str, pd.DataFrame],
    teacher_model: dict[str, TeacherArtifact],
    settings: PipelineSettings,
) -> Iterator:
    labels_by_key, teachers = by_key(teacher_labels), by_key(teacher_model)
    keys = list(run_partition_keys(context))
    single_skip: str | None = None
    if len(keys) == 1 and not (keys[0] in labels_by_key and keys[0] in teachers):
        # Asked for this partition alone (the UI, a sensor): a green run that trained nothing would
        # hide a teacher that was never trained, so that fails; a teacher that skipped the partition
        # (no bars, too few rows) is a skip passed on, as in a run of the whole graph. In a batch a
        # missing partition is skipped with its reason, as the others go on.
        single_skip, message = missing_teacher(context, window_of(keys[0]))
        if single_skip is None:
            raise Failure(description=message, allow_retries=False)
    values, skipped = compute_partitions(
        context,
        "student",
        lambda pw: distil(pw, labels_by_key[pw.key], teachers[pw.key], config, settings.forecast_horizon),
        lambda pw: (
            None
            if pw.key in labels_by_key and pw.key in teachers
            else single_skip or f"{pw.label}: the teacher was not materialised (nothing to distil)"
        ),
        (TooFewRowsError,),
    )
    yield from emit(context, "result", values, skipped, _metadata, ["student_model"])


def missing_teacher(context: AssetExecutionContext, pw: PartitionWindow) -> tuple[str | None, str]:
    """Why the student of `pw` has no teacher to distil: (the skip reason to pass on, or None; a message).

    The teacher's latest events say which: skipped (inside a batch Dagster records the partition as
    materialised, and its event names the reason; in a run of its own an observation newer than any
    materialisation does), materialised with its files gone since, or never materialised.
    """
    where = AssetRecordsFilter(asset_key=AssetKey("teacher_model"), asset_partitions=[pw.key])
    materialised = next(iter(context.instance.fetch_materializations(where, limit=1).records), None)
    observed = next(iter(context.instance.fetch_observations(where, limit=1).records), None)
    skip = materialised.asset_materialization.metadata.get(SKIP_METADATA_KEY) if materialised else None
    if skip is None and observed and (not materialised or observed.storage_id > materialised.storage_id):
        skip = observed.asset_observation.metadata.get(SKIP_METADATA_KEY)
    if skip is not None:
        return f"{pw.label}: the teacher skipped this partition ({skip.value})", ""
    if materialised:
        cause = f"teacher_model was materialised but its files are missing from {pw.label}/"
    else:
        cause = "teacher_model and teacher_labels were never materialised for this partition"
    return None, (
        f"student_model {pw.key} (symbol {pw.symbol}, window {pw.start} to {pw.end}): nothing to distil, "
        f"{cause}. Materialise the partition with its upstream (in the UI: Lineage, select "
        "`+key:student_model`, 'Materialize all…', i.e. market_bars, teacher_model, teacher_labels and "
        f"student_model) or run `sensequant train --symbols {pw.symbol} --start {pw.start} --end {pw.end}`."
    )


def distil(
    pw: PartitionWindow, labels: pd.DataFrame, teacher: TeacherArtifact, config: StudentConfig, horizon: int
) -> StudentArtifact:
    """One partition's student; raises TooFewRowsError when it must be skipped."""
    params = config.params()
    # The teacher's side comes from the teacher artifact, not this run's TeacherConfig: a student-only
    # run distils a teacher that an earlier run may have trained under another configuration.
    configuration = model_configuration(_teacher_part(teacher), config)
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
        "configuration": configuration,
        CONFIG_ID_KEY: config_hash(configuration),
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
        CONFIG_ID_KEY: MetadataValue.text(str(meta[CONFIG_ID_KEY])),
    }
