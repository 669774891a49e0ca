"""`teacher_model` + `teacher_labels`: the LightGBM teacher of one symbol-window and its soft labels."""

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Config,
    MetadataValue,
    multi_asset,
)

from sensequant_assets import __version__
from sensequant_assets.artifacts import TeacherArtifact
from sensequant_assets.assets.partition_context import (
    BACKFILL_POLICY,
    BATCH_INPUT,
    PartitionWindow,
    by_key,
    compute_partitions,
    emit,
    metadata_value,
)
from sensequant_assets.ml.dataset import build_dataset, model_features
from sensequant_assets.ml.features import FEATURE_COLUMNS, HISTORY_DAYS
from sensequant_assets.ml.labels import LabelSpec
from sensequant_assets.ml.leakage import ensure_point_in_time
from sensequant_assets.ml.teacher import TeacherParams, TooFewRowsError, check_rows, train_teacher
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.resources import MarketDataResource, PipelineSettings

TEACHER_CODE_VERSION = "2"  # 2: direction-aware labels (default "sign")

# TeacherConfig fields that decide how fast, or whether, a window trains, never what it learns: left
# out of the configuration id so that a speed setting does not split one configuration's record.
RUN_ONLY_FIELDS = frozenset({"num_threads", "min_rows"})


class TeacherConfig(Config):
    """Teacher hyper-parameters and labelling; every field reaches the model or the labels."""

    n_estimators: int = 100
    max_depth: int = 5
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 10
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    reg_lambda: float = 0.0
    seed: int = 42
    num_threads: int = 1
    val_fraction: float = 0.2
    n_folds: int = 5
    label: str = "sign"
    label_threshold: float = 0.02
    label_vol_k: float = 0.5
    label_vol_window: int = 20
    min_rows: int = 20

    def label_spec(self) -> LabelSpec:
        """``label``: ``sign`` (default), ``vol_scaled`` (uses ``label_vol_k``/``label_vol_window``)
        or ``fixed`` (the predecessor's ``label_threshold``); see ``ml.labels``."""
        return LabelSpec(
            kind=self.label,
            threshold=self.label_threshold,
            vol_k=self.label_vol_k,
            vol_window=self.label_vol_window,
        )

    def params(self) -> TeacherParams:
        fields = TeacherParams.__dataclass_fields__
        return TeacherParams(**{k: v for k, v in self.model_dump().items() if k in fields})


def teacher_configuration(config: TeacherConfig, horizon: int) -> dict[str, Any]:
    """What shapes the teacher and its labels: every config field but RUN_ONLY_FIELDS, plus the horizon.

    Recorded in the teacher's metadata so its student (possibly trained in a later run) can name the
    configuration it belongs to; a field added to TeacherConfig is covered without touching this.
    """
    fields = {
        k: v
        for k, v in config.model_dump().items()
        if k not in RUN_ONLY_FIELDS | _unused_label_fields(config)
    }
    return {"teacher": fields, "forecast_horizon": int(horizon)}


def _unused_label_fields(config: TeacherConfig) -> frozenset[str]:
    """Label settings the chosen kind ignores: changing them trains the same model, so they must not
    make a new configuration (a new trial for the briefing's multiple-testing count)."""
    used = {"fixed": {"label_threshold"}, "vol_scaled": {"label_vol_k", "label_vol_window"}}.get(
        config.label, set()
    )
    return frozenset({"label_threshold", "label_vol_k", "label_vol_window"} - used)


def bars_hash(bars: pd.DataFrame) -> str:
    """sha256 of the bars the teacher learnt from (history included), to tie a model to its data."""
    hashed = pd.util.hash_pandas_object(bars, index=True).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


@multi_asset(
    outs={
        "teacher_model": AssetOut(
            is_required=False,
            io_manager_key="artifacts_io_manager",
            code_version=TEACHER_CODE_VERSION,
            description="LightGBM teacher: model.pkl, metadata.json, feature_importance.csv.",
        ),
        "teacher_labels": AssetOut(
            is_required=False,
            io_manager_key="artifacts_io_manager",
            code_version=TEACHER_CODE_VERSION,
            description="labels.csv.gz: features, labels, forward returns and out-of-fold teacher_proba.",
        ),
    },
    ins={"market_bars": AssetIn(metadata=BATCH_INPUT)},
    partitions_def=symbol_window_partitions,
    backfill_policy=BACKFILL_POLICY,
    group_name="training",
)
def teacher(
    context: AssetExecutionContext,
    config: TeacherConfig,
    market_bars: dict[str, pd.DataFrame],
    market_data: MarketDataResource,
    settings: PipelineSettings,
) -> Iterator:
    bars_by_key = by_key(market_bars)
    trained, skipped = compute_partitions(
        context,
        "teacher",
        lambda pw: train_partition(pw, bars_by_key[pw.key], config, market_data, settings.forecast_horizon),
        lambda pw: (
            None
            if pw.key in bars_by_key
            else f"{pw.label}: market_bars not materialised (nothing to train on)"
        ),
        (TooFewRowsError,),
        threads_per_task=config.num_threads,
    )
    models = {key: model for key, (model, _) in trained.items()}
    labels = {key: frame for key, (_, frame) in trained.items()}
    outputs = ("teacher_model", "teacher_labels")
    yield from emit(context, "teacher_model", models, skipped, _model_metadata, outputs)
    yield from emit(context, "teacher_labels", labels, skipped, _labels_metadata, ())


def train_partition(
    pw: PartitionWindow,
    window_bars: pd.DataFrame,
    config: TeacherConfig,
    market_data: MarketDataResource,
    horizon: int,
) -> tuple[TeacherArtifact, pd.DataFrame]:
    """One partition's teacher and soft labels; raises TooFewRowsError when it must be skipped."""
    history_start = pw.start - timedelta(days=HISTORY_DAYS)
    history = market_data.source_for(pw.symbol).bars(pw.symbol, history_start, pw.start - timedelta(days=1))
    bars = pd.concat([history, window_bars]) if len(history) else window_bars
    label = config.label_spec()
    ds = build_dataset(bars, pw.start, pw.end, horizon, label, pw.symbol)
    params = config.params()
    check_rows(ds.frame, config.min_rows, pw.symbol, pw.label)
    ensure_point_in_time(model_features, bars)  # refuse features that read future bars
    result = train_teacher(ds.frame, params, horizon)
    frame = ds.frame
    label_counts = frame["label"].value_counts().to_dict()
    metadata = {
        "training_date": datetime.now(UTC).isoformat(timespec="seconds"),
        "symbol": pw.symbol,
        "partition_key": pw.key,
        "date_range": {"start": pw.start.isoformat(), "end": pw.end.isoformat()},
        "total_samples": len(frame),
        "train_samples": int(result.train_rows),
        "val_samples": int(result.val_rows),
        "purged_gap_rows": int(result.gap_rows),
        "rows": ds.counts(),
        "label_distribution": {str(int(k)): int(v) for k, v in sorted(label_counts.items())},
        "features": list(FEATURE_COLUMNS),
        "config": {
            "label_window_days": horizon,
            "label": label.kind,
            "label_definition": label.describe(horizon),
            "label_threshold_pct": config.label_threshold * 100 if label.kind == "fixed" else None,
            "train_split": 1 - config.val_fraction,
            "random_seed": config.seed,
        },
        "hyperparameters": result.params_used,
        "configuration": teacher_configuration(config, horizon),
        "metrics": result.metrics,
        "data_source": market_data.data_source,
        "data_sha256": bars_hash(bars),
        "code_version": f"{__version__}+teacher.{TEACHER_CODE_VERSION}",
    }
    artifact = TeacherArtifact(model=result.model, metadata=metadata, importance=result.importance)
    return artifact, frame.assign(teacher_proba=result.oof_proba)


def _model_metadata(artifact: TeacherArtifact) -> dict:
    meta = artifact.metadata
    return {
        "rows": meta["total_samples"],
        "train_rows": meta["train_samples"],
        "val_rows": meta["val_samples"],
        "label_balance": MetadataValue.float(meta["label_distribution"].get("1", 0) / meta["total_samples"]),
        **{k: metadata_value(v) for k, v in meta["metrics"].items()},
        "top_features": MetadataValue.md(artifact.importance.head(5).to_markdown(index=False)),
        "hyperparameters": MetadataValue.json(meta["hyperparameters"]),
    }


def _labels_metadata(labels: pd.DataFrame) -> dict:
    return {
        "rows": len(labels),
        "positives": int(labels["label"].sum()),
        "label_balance": MetadataValue.float(float(labels["label"].mean())),
        "mean_teacher_proba": MetadataValue.float(float(labels["teacher_proba"].mean())),
    }
