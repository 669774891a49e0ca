"""Sensors: the symbol universe, new or corrected bars, and decay of promoted models.

Every tick says why it did or did not act (a SkipReason in the UI), every run request carries a
`run_key` (a tick repeated after a crash starts nothing twice) and tags naming its trigger.
"""

import json
from collections.abc import Iterable
from pathlib import Path

from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey

from sensequant_assets import registry
from sensequant_assets.assets.partition_context import partition_metadata
from sensequant_assets.jobs import PARTITION_ASSETS, train_job
from sensequant_assets.partitions import (
    SYMBOLS_PARTITIONS_NAME,
    make_key,
    split_key,
    window_bounds,
    window_partitions,
)
from sensequant_assets.resources import MarketDataResource
from sensequant_assets.settings import SettingsError, env, flag, number
from sensequant_assets.sources.base import DataSourceError
from sensequant_assets.sources.symbols import InvalidSymbolError, parse_symbols

INTERVAL = int(number("SENSEQUANT_SENSOR_INTERVAL_SECONDS", int, 1))
TRIGGER = "sensequant/trigger"
REASON = "sensequant/reason"


def _registered(context: SensorEvaluationContext) -> list[str]:
    return list(context.instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))


# --- the symbol universe ---------------------------------------------------------------------


def universe() -> tuple[list[str], str]:
    """The wanted symbols and where they came from: SENSEQUANT_UNIVERSE_FILE, else SENSEQUANT_SYMBOLS."""
    path = env("SENSEQUANT_UNIVERSE_FILE")
    if path:
        lines = Path(path).read_text().splitlines()
        names = [line.split("#", 1)[0].strip() for line in lines]
        return parse_symbols(",".join(n for n in names if n)), f"universe file {path}"
    return parse_symbols(env("SENSEQUANT_SYMBOLS")), "SENSEQUANT_SYMBOLS"


def history_backfill(context: SensorEvaluationContext, symbols: Iterable[str]) -> RunRequest:
    """One backfill of every window of the partitioned assets for `symbols` (dependency order)."""
    asset_graph = context.repository_def.asset_graph
    keys = {
        AssetKeyPartitionKey(AssetKey(asset), str(make_key(symbol, window)))
        for asset in PARTITION_ASSETS
        for symbol in symbols
        for window in window_partitions.get_partition_keys()
    }
    subset = AssetGraphSubset.from_asset_partition_set(keys, asset_graph)
    return RunRequest.for_asset_graph_subset(
        subset, tags={TRIGGER: "symbol_universe", REASON: f"history of new symbols {', '.join(symbols)}"}
    )


@sensor(
    name="symbol_universe",
    asset_selection=AssetSelection.assets(*PARTITION_ASSETS),  # what its history backfills target
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=INTERVAL,
    description=(
        "Adds the symbols of SENSEQUANT_UNIVERSE_FILE (one per line, # comments) or else "
        "SENSEQUANT_SYMBOLS to the `symbols` partitions, and, unless SENSEQUANT_BACKFILL_NEW_SYMBOLS=0, "
        "requests each new symbol's history as one backfill on the next tick. Bad symbols are named."
    ),
)
def symbol_universe(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    try:
        wanted, origin = universe()
        backfill = flag("SENSEQUANT_BACKFILL_NEW_SYMBOLS")
    except (InvalidSymbolError, SettingsError, OSError) as exc:
        return SkipReason(f"the symbol universe is invalid: {exc}")
    cursor = json.loads(context.cursor or "{}")
    pending: list[str] = cursor.get("pending_backfill", [])
    known = set(_registered(context))
    new = [s for s in wanted if s not in known]
    ready = [s for s in pending if s in known]  # registered on an earlier tick: partitions exist now
    requests = [history_backfill(context, ready)] if ready else []
    pending = [s for s in pending if s not in ready] + (new if backfill else [])
    messages = []
    if new:
        messages.append(f"registering {', '.join(new)} from {origin}")
    if ready:
        messages.append(f"requested the history backfill of {', '.join(ready)}")
    for message in messages:
        context.log.info(message)
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(SYMBOLS_PARTITIONS_NAME, new)]
        if new
        else [],
        cursor=json.dumps({"pending_backfill": pending}),
        skip_reason=None if messages else f"all {len(wanted)} symbols of {origin} are registered",
    )


# --- new or corrected bars -------------------------------------------------------------------


def _short(fingerprint: str | None) -> str | None:
    return fingerprint[:16] if fingerprint else None


@sensor(
    name="new_data",
    job=train_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=INTERVAL,
    description=(
        "Polls the data source cheaply (file listings, sizes and modification times; no file read "
        "unless something changed) and, when a symbol's bars complete a window or change an existing "
        "one, requests the train_job run of exactly that partition (bars, teacher, student, "
        "evaluation); the next window's evaluation follows by automation. The first look at a "
        "symbol records a baseline (its history is the universe sensor's backfill)."
    ),
)
def new_data(context: SensorEvaluationContext, market_data: MarketDataResource) -> SensorResult:
    cursor = json.loads(context.cursor or "{}")
    tokens: dict[str, str] = cursor.get("tokens", {})
    seen: dict[str, dict[str, str | None]] = cursor.get("windows", {})
    windows = [(key, *window_bounds(key)) for key in window_partitions.get_partition_keys()]
    requests, problems, baselines = [], [], []
    for symbol in _registered(context):
        try:
            source = market_data.source_for(symbol)
            token = source.data_token(symbol)
            if tokens.get(symbol) == token:
                continue
            fingerprints = source.window_fingerprints(symbol, [(start, end) for _, start, end in windows])
        except (DataSourceError, SettingsError, ValueError) as exc:
            problems.append(f"{symbol}: {exc}")
            continue
        current = {key: _short(fingerprints[start]) for key, start, _ in windows}
        previous = seen.get(symbol)
        tokens[symbol], seen[symbol] = token, current
        if previous is None:
            baselines.append(symbol)
            continue
        for key, fingerprint in current.items():
            if fingerprint is None or fingerprint == previous.get(key):
                continue
            why = "bars corrected" if previous.get(key) else "window completed"
            partition = make_key(symbol, key)
            context.log.info(f"{partition}: {why}")
            requests.append(
                RunRequest(
                    partition_key=partition,
                    run_key=f"new_data:{partition}:{fingerprint}",
                    tags={TRIGGER: "new_data", REASON: f"{partition}: {why}"},
                )
            )
    for problem in problems:
        context.log.warning(problem)
    notes = []
    if baselines:
        notes.append(f"baseline recorded for {', '.join(baselines)}")
    if problems:
        notes.append("could not read: " + "; ".join(problems))
    skip = None
    if not requests:
        skip = "; ".join(notes) or f"no new or corrected bars ({market_data.data_source} source)"
    return SensorResult(
        run_requests=requests,
        cursor=json.dumps({"tokens": tokens, "windows": seen}, sort_keys=True),
        skip_reason=skip,
    )


# --- decay of promoted models ----------------------------------------------------------------


def latest_aucs(context: SensorEvaluationContext, symbol: str) -> list[tuple[str, float | None, int]]:
    """(window, AUC, storage id) of the newest evaluation of each of `symbol`'s windows, newest first."""
    keys = [str(make_key(symbol, w)) for w in window_partitions.get_partition_keys()]
    out = []
    for key in reversed(keys):
        page = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("student_evaluation"), asset_partitions=[key]), limit=1
        )
        if not page.records:
            continue
        record = page.records[0]
        auc = partition_metadata(record.asset_materialization).get("auc")
        out.append((split_key(key)[1], auc if isinstance(auc, float) else None, record.storage_id))
    return out


@sensor(
    name="model_decay",
    job=train_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=INTERVAL,
    description=(
        "For every symbol with a production model: when its newest SENSEQUANT_DECAY_WINDOWS "
        "evaluations all score an AUC below SENSEQUANT_DECAY_MIN_AUC, requests retraining of the "
        "symbol's newest window; the reason is in the run's tags."
    ),
)
def model_decay(context: SensorEvaluationContext) -> SensorResult:
    try:
        min_auc = float(number("SENSEQUANT_DECAY_MIN_AUC", float, 0.0))
        needed = int(number("SENSEQUANT_DECAY_WINDOWS", int, 1))
    except SettingsError as exc:
        return SensorResult(skip_reason=str(exc))
    base = env("SENSEQUANT_ARTIFACTS_DIR")
    requests, healthy = [], []
    for symbol in _registered(context):
        record = registry.current(base, symbol)
        if record is None:
            continue
        recent = latest_aucs(context, symbol)[:needed]
        decayed = len(recent) == needed and all(auc is not None and auc < min_auc for _, auc, _ in recent)
        if not decayed:
            healthy.append(symbol)
            continue
        newest_window, _, storage_id = recent[0]
        scores = ", ".join(f"{window}: {auc:.3f}" for window, auc, _ in recent)
        reason = (
            f"production model {record.partition_key} decayed: AUC below {min_auc} in the last "
            f"{needed} evaluated windows ({scores})"
        )
        context.log.warning(f"{symbol}: {reason}")
        partition = make_key(symbol, newest_window)
        requests.append(
            RunRequest(
                partition_key=partition,
                run_key=f"decay:{partition}:{storage_id}",
                tags={TRIGGER: "model_decay", REASON: reason},
            )
        )
    skip = None
    if not requests:
        skip = (
            f"no decay: {len(healthy)} production models within the gate"
            if healthy
            else "no production models"
        )
    return SensorResult(run_requests=requests, skip_reason=skip)
