"""`teacher_model` + `teacher_labels`: the LightGBM teacher of one symbol-window and its soft labels."""

import hashlib
import math
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AssetOut, Config, MetadataValue, Output, multi_asset

from sensequant_assets import __version__
from sensequant_assets.artifacts import TeacherArtifact
from sensequant_assets.assets.partition_context import metadata_value, partition_window, skip
from sensequant_assets.ml.dataset import build_dataset, model_features
from sensequant_assets.ml.features import FEATURE_COLUMNS, WARMUP_BARS
from sensequant_assets.ml.leakage import ensure_point_in_time
from sensequant_assets.ml.teacher import TeacherParams, TooFewRowsError, check_rows, train_teacher
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.resources import MarketDataResource, PipelineSettings

TEACHER_CODE_VERSION = "1"


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
    label_threshold: float = 0.02
    min_rows: int = 20

    def params(self) -> TeacherParams:
        fields = TeacherParams.__dataclass_fields__
        return TeacherParams(**{k: v for k, v in self.model_dump().items() if k in fields})


def bars_hash(bars: pd.DataFrame) -> str:
    """sha256 of the bars the teacher learnt from (history included), to tie a model to its data."""
    hashed = pd.util.hash_pandas_object(bars, index=True).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def _history_days() -> int:
    """Calendar days that hold WARMUP_BARS trading days, with room for holidays."""
    return math.ceil(WARMUP_BARS * 7 / 5 * 1.15) + 10


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
    ins={"market_bars": AssetIn()},
    partitions_def=symbol_window_partitions,
    group_name="training",
)
def teacher(
    context: AssetExecutionContext,
    config: TeacherConfig,
    market_bars: pd.DataFrame,
    market_data: MarketDataResource,
    settings: PipelineSettings,
) -> Iterator:
    pw = partition_window(context)
    horizon = settings.forecast_horizon
    history_start = pw.start - timedelta(days=_history_days())
    history = market_data.source_for(pw.symbol).bars(pw.symbol, history_start, pw.start - timedelta(days=1))
    bars = pd.concat([history, market_bars]) if len(history) else market_bars
    ds = build_dataset(bars, pw.start, pw.end, horizon, config.label_threshold, pw.symbol)
    params = config.params()
    try:
        check_rows(ds.frame, config.min_rows, pw.symbol, pw.label)
        ensure_point_in_time(model_features, bars)  # refuse features that read future bars
        result = train_teacher(ds.frame, params, horizon)
    except TooFewRowsError as exc:
        yield from skip(context, ["teacher_model", "teacher_labels"], str(exc))
        return
    frame = ds.frame
    label_counts = frame["label"].value_counts().to_dict()
    distribution = {str(int(k)): int(v) for k, v in sorted(label_counts.items())}
    metadata = {
        "training_date": datetime.now(UTC).isoformat(timespec="seconds"),
        "symbol": pw.symbol,
        "partition_key": str(context.partition_key),
        "date_range": {"start": pw.start.isoformat(), "end": pw.end.isoformat()},
        "total_samples": len(frame),
        "train_samples": int(result.train_rows),
        "val_samples": int(result.val_rows),
        "purged_gap_rows": int(result.gap_rows),
        "rows": ds.counts(),
        "label_distribution": distribution,
        "features": list(FEATURE_COLUMNS),
        "config": {
            "label_window_days": horizon,
            "label_threshold_pct": config.label_threshold * 100,
            "train_split": 1 - config.val_fraction,
            "random_seed": config.seed,
        },
        "hyperparameters": result.params_used,
        "metrics": result.metrics,
        "data_source": market_data.data_source,
        "data_sha256": bars_hash(bars),
        "code_version": f"{__version__}+teacher.{TEACHER_CODE_VERSION}",
    }
    labels = frame.assign(teacher_proba=result.oof_proba)
    top = result.importance.head(5)
    yield Output(
        TeacherArtifact(model=result.model, metadata=metadata, importance=result.importance),
        output_name="teacher_model",
        metadata={
            "rows": len(frame),
            "train_rows": int(result.train_rows),
            "val_rows": int(result.val_rows),
            "label_balance": MetadataValue.float(float(frame["label"].mean())),
            **{k: metadata_value(v) for k, v in result.metrics.items()},
            "top_features": MetadataValue.md(top.to_markdown(index=False)),
            "hyperparameters": MetadataValue.json(asdict(params)),
        },
    )
    yield Output(
        labels,
        output_name="teacher_labels",
        metadata={
            "rows": len(labels),
            "positives": int(labels["label"].sum()),
            "label_balance": MetadataValue.float(float(labels["label"].mean())),
            "mean_teacher_proba": MetadataValue.float(float(labels["teacher_proba"].mean())),
        },
    )
