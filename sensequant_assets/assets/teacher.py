"""`teacher_model` + `teacher_labels`: the LightGBM teacher of one symbol-window and its soft labels.

The teacher's features need `HISTORY_DAYS` of bars before its window (indicator warm-up), which lie
in the earlier windows of the same symbol. They come from those windows' `market_bars` partitions,
declared as part of the `market_bars` input (`WINDOW_AND_HISTORY`), so Dagster's lineage and
automation see that new bars of window k-1 touch the teachers of windows k and k+1 (two windows of
history) of that symbol. The part of the history that no materialised partition holds (before the
first window, or a window never materialised or skipped for lack of bars) is read from the data
source for exactly those days, as before, and the teacher's metadata says which days came from where:
the first window, and a symbol backfilled from a later window, train as they always did.
"""

import hashlib
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Config,
    DimensionPartitionMapping,
    IdentityPartitionMapping,
    MetadataValue,
    MultiPartitionMapping,
    TimeWindowPartitionMapping,
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
from sensequant_assets.automation import EVERY_WINDOW_EAGER
from sensequant_assets.ml.dataset import build_dataset, model_features
from sensequant_assets.ml.features import FEATURE_COLUMNS, HISTORY_DAYS
from sensequant_assets.ml.labels import LabelSpec
from sensequant_assets.ml.leakage import ensure_point_in_time
from sensequant_assets.ml.teacher import TeacherParams, TooFewRowsError, check_rows, train_teacher
from sensequant_assets.partitions import (
    history_windows,
    make_key,
    max_history_windows,
    symbol_window_partitions,
)
from sensequant_assets.resources import MarketDataResource, PipelineSettings
from sensequant_assets.sources.base import BarSource, filter_dates

TEACHER_CODE_VERSION = "2"  # 2: direction-aware labels (default "sign")

# Earlier windows of the same symbol whose bars the warm-up history reaches (2 for 6-month windows).
HISTORY_WINDOWS = max_history_windows(HISTORY_DAYS)
# The teacher's `market_bars` input: its own window and the HISTORY_WINDOWS before it, same symbol
# (both dimensions mapped: a dimension left out would make every symbol's bars an upstream).
# Windows before the first partition do not exist; their days come from the source.
WINDOW_AND_HISTORY = MultiPartitionMapping(
    {
        "symbol": DimensionPartitionMapping("symbol", IdentityPartitionMapping()),
        "window": DimensionPartitionMapping(
            "window",
            TimeWindowPartitionMapping(
                start_offset=-HISTORY_WINDOWS, end_offset=0, allow_nonexistent_upstream_partitions=True
            ),
        ),
    }
)

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
            automation_condition=EVERY_WINDOW_EAGER,
            description="LightGBM teacher: model.pkl, metadata.json, feature_importance.csv.",
        ),
        "teacher_labels": AssetOut(
            is_required=False,
            io_manager_key="artifacts_io_manager",
            code_version=TEACHER_CODE_VERSION,
            automation_condition=EVERY_WINDOW_EAGER,
            description="labels.csv.gz: features, labels, forward returns and out-of-fold teacher_proba.",
        ),
    },
    ins={"market_bars": AssetIn(partition_mapping=WINDOW_AND_HISTORY, metadata=BATCH_INPUT)},
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
        lambda pw: train_partition(
            pw, bars_by_key[pw.key], config, market_data, settings.forecast_horizon, bars_by_key
        ),
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
    _log_history_sources(context, models)
    outputs = ("teacher_model", "teacher_labels")
    yield from emit(context, "teacher_model", models, skipped, _model_metadata, outputs)
    yield from emit(context, "teacher_labels", labels, skipped, _labels_metadata, ())


def warmup_history(
    pw: PartitionWindow, stored: Mapping[str, pd.DataFrame], source: BarSource
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The `HISTORY_DAYS` of bars before the window, and a record of where each part came from.

    Each earlier window's share comes from its `market_bars` partition when `stored` has it; runs
    of days that no stored partition holds (before the first window, a window never materialised or
    skipped) are read from the source, one call per run. While the stored partitions match the
    source, the bars are exactly those of one source call over the whole history.
    """
    # (window key or None for the source, first day, last day), oldest first, source runs merged
    segments: list[tuple[str | None, date, date]] = []
    for window_key, first, last in history_windows(pw.window_key, HISTORY_DAYS):
        key = str(make_key(pw.symbol, window_key))
        if key in stored:
            segments.append((key, first, last))
        elif segments and segments[-1][0] is None:
            segments[-1] = (None, segments[-1][1], last)
        else:
            segments.append((None, first, last))
    frames = [
        source.bars(pw.symbol, first, last) if key is None else filter_dates(stored[key], first, last)
        for key, first, last in segments
    ]
    filled = [frame for frame in frames if len(frame)]
    history = pd.concat(filled) if len(filled) > 1 else (filled or frames)[0]
    record = {
        "start": segments[0][1].isoformat(),
        "end": segments[-1][2].isoformat(),
        "rows": len(history),
        "from_market_bars": [key for key, _, _ in segments if key is not None],
        "from_source": [[f.isoformat(), la.isoformat()] for key, f, la in segments if key is None],
    }
    return history, record


def train_partition(
    pw: PartitionWindow,
    window_bars: pd.DataFrame,
    config: TeacherConfig,
    market_data: MarketDataResource,
    horizon: int,
    stored: Mapping[str, pd.DataFrame] | None = None,
) -> tuple[TeacherArtifact, pd.DataFrame]:
    """One partition's teacher and soft labels; raises TooFewRowsError when it must be skipped.

    `stored`: `market_bars` partitions by key, those of the earlier windows holding the warm-up
    history among them (`warmup_history`); without it the whole history is read from the source.
    """
    history, history_record = warmup_history(pw, stored or {}, market_data.source_for(pw.symbol))
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
        "history": history_record,
        "code_version": f"{__version__}+teacher.{TEACHER_CODE_VERSION}",
    }
    artifact = TeacherArtifact(model=result.model, metadata=metadata, importance=result.importance)
    return artifact, frame.assign(teacher_proba=result.oof_proba)


def _log_history_sources(context: AssetExecutionContext, models: Mapping[str, TeacherArtifact]) -> None:
    """One line for the step: which partitions read part of their warm-up history from the source."""
    from_source = {key: art.metadata["history"]["from_source"] for key, art in sorted(models.items())}
    from_source = {key: spans for key, spans in from_source.items() if spans}
    if not from_source:
        return
    shown = "; ".join(
        f"{key}: {', '.join(f'{lo}..{hi}' for lo, hi in spans)}"
        for key, spans in list(from_source.items())[:5]
    )
    more = f" (and {len(from_source) - 5} more)" if len(from_source) > 5 else ""
    context.log.info(
        f"warm-up history read from the data source for {len(from_source)} of {len(models)} partition(s), "
        f"no materialised market_bars holding those days (before the first window, or never "
        f"materialised): {shown}{more}"
    )


def _model_metadata(artifact: TeacherArtifact) -> dict:
    meta = artifact.metadata
    history = meta["history"]
    return {
        "rows": meta["total_samples"],
        "train_rows": meta["train_samples"],
        "val_rows": meta["val_samples"],
        "label_balance": MetadataValue.float(meta["label_distribution"].get("1", 0) / meta["total_samples"]),
        **{k: metadata_value(v) for k, v in meta["metrics"].items()},
        "top_features": MetadataValue.md(artifact.importance.head(5).to_markdown(index=False)),
        "hyperparameters": MetadataValue.json(meta["hyperparameters"]),
        "history_from_market_bars": MetadataValue.text(", ".join(history["from_market_bars"]) or "none"),
        "history_from_source": MetadataValue.text(
            ", ".join(f"{lo}..{hi}" for lo, hi in history["from_source"]) or "none"
        ),
    }


def _labels_metadata(labels: pd.DataFrame) -> dict:
    return {
        "rows": len(labels),
        "positives": int(labels["label"].sum()),
        "label_balance": MetadataValue.float(float(labels["label"].mean())),
        "mean_teacher_proba": MetadataValue.float(float(labels["teacher_proba"].mean())),
    }
