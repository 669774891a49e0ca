"""`teacher_model` + `teacher_labels`: the LightGBM teacher of one symbol-window and its soft labels.

The teacher's features need `HISTORY_DAYS` of bars before its window (indicator warm-up), which lie
in the earlier windows of the same symbol. They come from those windows' `market_bars` partitions,
declared as part of the `market_bars` input (`WINDOW_LOOKBACK_AND_HISTORY`), so Dagster's lineage
and the `follow_upstream` sensor see that new bars of window k-1 touch the teachers of windows k and
k+1 (two windows of history) of that symbol, and those of k+2 and k+3, which a lookback may read.
The part of the history that no materialised partition holds (before the first window, or a window
never materialised or skipped for lack of bars) is read from the data source for exactly those days,
as before, and the teacher's metadata says which days came from where: the first window, and a
symbol backfilled from a later window, train as they always did.

With `TeacherConfig.lookback_windows` = N (by default 2, `DEFAULT_LOOKBACK_WINDOWS`) the teacher
learns from more than its window: its training rows run from the start of window k-N to the end of
window k (labels purged at the window end, as `ml.protocol.walk_forward` does, so the methodology
study measures what the assets do), and the warm-up history lies before window k-N. The first
windows of a symbol have fewer earlier windows: the lookback is cut at the first partition, as
`walk_forward` cuts it at its first window. The lookback windows' bars come from the same
`market_bars` input, which declares the most any teacher may read (`MAX_LOOKBACK_WINDOWS` plus the
warm-up's windows), so the lineage is complete whatever lookback a run is given. `teacher_labels`
holds every training row (the student learns from the same rows' out-of-fold soft labels); the
evaluation takes window k's own rows from it (`window_rows`), never the lookback's. One artifact
directory per window, as always.
"""

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import replace
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
from pydantic import Field, field_validator

from sensequant_assets import __version__
from sensequant_assets.artifacts import TeacherArtifact
from sensequant_assets.assets.catalog import LABELS_SCHEMA, OWNERS, column_schema, top_features_table
from sensequant_assets.assets.checks import TEACHER_CHECKS
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
from sensequant_assets.ml.protocol import DEFAULT_LOOKBACK_WINDOWS
from sensequant_assets.ml.teacher import TeacherParams, TooFewRowsError, check_rows, train_teacher
from sensequant_assets.partitions import (
    bars_before_windows,
    earlier_windows,
    make_key,
    max_history_windows,
    symbol_window_partitions,
    window_bounds,
)
from sensequant_assets.resources import MarketDataResource, PipelineSettings
from sensequant_assets.sources.base import BarSource, filter_dates

TEACHER_CODE_VERSION = "2"  # 2: direction-aware labels (default "sign")

# Earlier windows of the same symbol whose bars the warm-up history reaches (2 for 6-month windows).
HISTORY_WINDOWS = max_history_windows(HISTORY_DAYS)
# The most earlier windows a teacher may learn from (`TeacherConfig.lookback_windows`). A partition
# mapping is fixed when the definitions load, while the lookback is a run's config, so the mapping
# declares this many for every teacher, whatever its lookback: each one more makes bars of window k
# an upstream of one more later teacher (follow_upstream retrains it when they change). Keep it small.
MAX_LOOKBACK_WINDOWS = 2
# Earlier windows whose bars a teacher may read: lookback windows, then the warm-up of the earliest.
TRAINING_BARS_WINDOWS = MAX_LOOKBACK_WINDOWS + HISTORY_WINDOWS
# The teacher's `market_bars` input: its own window and the TRAINING_BARS_WINDOWS before it, same
# symbol (both dimensions mapped: a dimension left out would make every symbol's bars an upstream).
# Windows before the first partition do not exist; their days come from the source.
WINDOW_LOOKBACK_AND_HISTORY = MultiPartitionMapping(
    {
        "symbol": DimensionPartitionMapping("symbol", IdentityPartitionMapping()),
        "window": DimensionPartitionMapping(
            "window",
            TimeWindowPartitionMapping(
                start_offset=-TRAINING_BARS_WINDOWS, end_offset=0, allow_nonexistent_upstream_partitions=True
            ),
        ),
    }
)

# TeacherConfig fields that decide how fast, or whether, a window trains, never what it learns: left
# out of the configuration id so that a speed setting does not split one configuration's record.
RUN_ONLY_FIELDS = frozenset({"num_threads", "min_rows"})
# Fields added after configuration ids were first recorded, with the value at which the teacher
# learns exactly what it learnt before the field existed: at that value the field is left out of the
# configuration, so the id of an existing configuration (and its record) stays what it was. This is
# not the field's default: `lookback_windows` defaults to 2 since the study, so the default
# configuration records `lookback_windows: 2` and has an id of its own, while records trained at 0
# (the old default) keep the old default's id and are never mixed with the new default's.
NEUTRAL_AT = {"lookback_windows": 0}


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
    lookback_windows: int = Field(
        default=DEFAULT_LOOKBACK_WINDOWS,
        description=(
            f"Also learn from up to this many earlier windows of the symbol (0 to {MAX_LOOKBACK_WINDOWS}; "
            f"default {DEFAULT_LOOKBACK_WINDOWS}): training rows from the earliest one's start to the "
            "window's end (fewer for a symbol's first windows); the evaluation still scores the "
            "window's own rows only. 0: the window alone (the default before the methodology study)."
        ),
    )

    @field_validator("lookback_windows")
    @classmethod
    def _lookback_in_range(cls, value: int) -> int:
        if not 0 <= value <= MAX_LOOKBACK_WINDOWS:
            raise ValueError(
                f"lookback_windows={value} is outside 0..{MAX_LOOKBACK_WINDOWS} (MAX_LOOKBACK_WINDOWS): "
                f"the teacher's market_bars input declares at most {MAX_LOOKBACK_WINDOWS} earlier windows "
                "to learn from (0 trains on the window alone)"
            )
        return value

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
    configuration it belongs to; a field added to TeacherConfig is covered without touching this
    (one added later is left out at its `NEUTRAL_AT` value, so existing ids do not move).
    """
    fields = {
        k: v
        for k, v in config.model_dump().items()
        if k not in RUN_ONLY_FIELDS | _unused_label_fields(config)
        and not (k in NEUTRAL_AT and v == NEUTRAL_AT[k])
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
            kinds={"lightgbm"},
            owners=OWNERS,
        ),
        "teacher_labels": AssetOut(
            is_required=False,
            io_manager_key="artifacts_io_manager",
            code_version=TEACHER_CODE_VERSION,
            description="labels.csv.gz: features, labels, forward returns and out-of-fold teacher_proba.",
            metadata=column_schema(LABELS_SCHEMA),
            kinds={"lightgbm", "pandas"},
            owners=OWNERS,
        ),
    },
    ins={"market_bars": AssetIn(partition_mapping=WINDOW_LOOKBACK_AND_HISTORY, metadata=BATCH_INPUT)},
    partitions_def=symbol_window_partitions,
    backfill_policy=BACKFILL_POLICY,
    group_name="training",
    check_specs=TEACHER_CHECKS.specs,
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
    models = {key: replace(model, labels=frame) for key, (model, frame) in trained.items()}
    labels = {key: frame for key, (_, frame) in trained.items()}
    checks = TEACHER_CHECKS.evaluate(context, labels, lambda pw: config.min_child_samples)
    skipped.update(checks.refused)  # a blocking check failed: neither output written, downstream skips it
    models, labels = checks.keep(models), checks.keep(labels)
    _log_history_sources(context, models)
    outputs = ("teacher_model", "teacher_labels")
    yield from emit(context, "teacher_model", models, skipped, _model_metadata, outputs)
    yield from emit(context, "teacher_labels", labels, skipped, _labels_metadata, ())
    yield from checks.events(context)


def bars_before(
    pw: PartitionWindow, stored: Mapping[str, pd.DataFrame], source: BarSource, lookback: int = 0
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The bars a teacher with `lookback` windows reads before its window, and a record of where
    each part came from: the `lookback` earlier windows whole (`earlier_windows`) and the
    `HISTORY_DAYS` of warm-up before the earliest of them (with `lookback` 0: before the window).

    Each earlier window's share comes from its `market_bars` partition when `stored` has it; runs
    of days that no stored partition holds (before the first window, a window never materialised or
    skipped) are read from the source, one call per run. While the stored partitions match the
    source, the bars are exactly those of one source call over the whole span.
    """
    # (window key or None for the source, first day, last day), oldest first, source runs merged
    segments: list[tuple[str | None, date, date]] = []
    for window_key, first, last in bars_before_windows(pw.window_key, lookback, HISTORY_DAYS):
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

    `stored`: `market_bars` partitions by key, those of the earlier windows (lookback and warm-up
    history) among them (`bars_before`); without it everything before the window is read from the
    source. With `config.lookback_windows` = N the rows run from the start of window k-N (cut at the
    first partition) to the window's end, as in `ml.protocol.walk_forward`; the labels returned
    are all of them, each with this fit's out-of-fold `teacher_proba`.
    """
    lookback = earlier_windows(pw.window_key, config.lookback_windows)
    train_start = window_bounds(lookback[0])[0] if lookback else pw.start
    source = market_data.source_for(pw.symbol)
    history, history_record = bars_before(pw, stored or {}, source, config.lookback_windows)
    bars = pd.concat([history, window_bars]) if len(history) else window_bars
    label = config.label_spec()
    ds = build_dataset(bars, train_start, pw.end, horizon, label, pw.symbol)
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
        "window_samples": len(window_rows(frame, pw.start, pw.end)),
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
        "lookback_windows": config.lookback_windows,
        # The rows learnt from: the lookback windows (as many as exist) and the window itself.
        "training_span": {
            "start": train_start.isoformat(),
            "end": pw.end.isoformat(),
            "windows": [str(make_key(pw.symbol, key)) for key in lookback] + [pw.key],
        },
        "code_version": f"{__version__}+teacher.{TEACHER_CODE_VERSION}",
    }
    artifact = TeacherArtifact(model=result.model, metadata=metadata, importance=result.importance)
    return artifact, frame.assign(teacher_proba=result.oof_proba)


def window_rows(labels: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """The rows of a `teacher_labels` table that lie in the window [start, end] (the bars' own
    calendar days), in order: with a lookback the table also holds the earlier windows' training
    rows, which the window's evaluation must not score. The table itself when all rows are in it.

    `ts` as built (tz-aware) or as read back from labels.csv.gz (ISO text with its offset) alike.
    """
    ts = pd.to_datetime(labels["ts"])
    if ts.dt.tz is not None:
        ts = ts.dt.tz_localize(None)  # wall time in the bars' zone, as build_dataset compares it
    inside = ((ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end) + pd.Timedelta(days=1))).to_numpy()
    if inside.all():
        return labels
    return labels.loc[inside].reset_index(drop=True)


def _log_history_sources(context: AssetExecutionContext, models: Mapping[str, TeacherArtifact]) -> None:
    """One line for the step: which partitions read part of their history (the warm-up, and the
    lookback windows if any) from the source."""
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
        "top_features": top_features_table(artifact.importance),
        "hyperparameters": MetadataValue.json(meta["hyperparameters"]),
        "history_from_market_bars": MetadataValue.text(", ".join(history["from_market_bars"]) or "none"),
        "history_from_source": MetadataValue.text(
            ", ".join(f"{lo}..{hi}" for lo, hi in history["from_source"]) or "none"
        ),
        "lookback_windows": meta["lookback_windows"],
        "training_span": MetadataValue.text(_span_text(meta["training_span"])),
        "window_rows": meta["window_samples"],
    }


def _span_text(span: Mapping[str, Any]) -> str:
    windows = len(span["windows"])
    return f"{span['start']}..{span['end']} ({windows} window{'s' if windows > 1 else ''})"


def _labels_metadata(labels: pd.DataFrame) -> dict:
    return {
        "rows": len(labels),
        "positives": int(labels["label"].sum()),
        "label_balance": MetadataValue.float(float(labels["label"].mean())),
        "mean_teacher_proba": MetadataValue.float(float(labels["teacher_proba"].mean())),
    }
