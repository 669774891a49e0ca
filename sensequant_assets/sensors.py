"""Sensors: the symbol universe, new or corrected bars, and decay of promoted models.

Every tick says why it did or did not act (a SkipReason in the UI), every run request carries a
`run_key` (a tick repeated after a crash starts nothing twice) and tags naming its trigger.
"""

import base64
import hashlib
import json
import time
import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

# Private: Dagster 1.13 has no public way for a sensor to request a backfill or to filter backfills;
# guarded by sensequant_tests/test_dagster_private_apis.py (docs/dagster_private_apis.md).
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

from sensequant_assets import registry
from sensequant_assets.assets.evaluation import CONFIG_ID_KEY
from sensequant_assets.assets.partition_context import partition_metadata
from sensequant_assets.io_manager import ArtifactError, ArtifactsResource, per_partition
from sensequant_assets.jobs import PARTITION_SELECTION, demote_job, partition_asset_keys, train_job
from sensequant_assets.partitions import (
    SYMBOLS_PARTITIONS_NAME,
    make_key,
    next_window,
    split_key,
    window_bounds,
    window_partitions,
)
from sensequant_assets.resources import MarketDataResource
from sensequant_assets.settings import SettingsError, env, flag, number
from sensequant_assets.sources.base import DataSourceError
from sensequant_assets.sources.symbols import (
    InvalidSymbolError,
    key_symbol_problem,
    parse_symbols,
    validate_symbol,
)

INTERVAL = int(number("SENSEQUANT_SENSOR_INTERVAL_SECONDS", int, 1))
TRIGGER = "sensequant/trigger"
REASON = "sensequant/reason"
REQUEST = "sensequant/request"  # what identifies a sensor's backfill request, which has no run key


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


def partitions_backfill(
    context: SensorEvaluationContext,
    partitions: Iterable[str],
    trigger: str,
    reason: str,
    tags: dict[str, str] | None = None,
) -> RunRequest:
    """One backfill of the partitioned assets over `partitions` (dependency order, batched per window)."""
    keys = {
        AssetKeyPartitionKey(asset, str(partition))
        for asset in partition_asset_keys(context.repository_def.asset_graph)
        for partition in partitions
    }
    subset = AssetGraphSubset.from_asset_partition_set(keys, context.repository_def.asset_graph)
    return RunRequest.for_asset_graph_subset(subset, tags={TRIGGER: trigger, REASON: reason, **(tags or {})})


def history_backfill(
    context: SensorEvaluationContext, symbols: Iterable[str], tags: dict[str, str] | None = None
) -> RunRequest:
    """One backfill of every window of the partitioned assets for `symbols`."""
    symbols = list(symbols)
    partitions = [make_key(s, w) for s in symbols for w in window_partitions.get_partition_keys()]
    return partitions_backfill(
        context, partitions, "symbol_universe", f"history of new symbols {', '.join(symbols)}", tags
    )


UNIVERSE_STATE = "symbol_universe"
_UNIVERSE_PREFIX = "u1:"


def _handled_symbols(store: Any, cursor: str | None, registered: set[str]) -> tuple[set[str], str | None]:
    """The registered symbols whose history was requested (or deliberately not), and a note when
    this tick starts from a baseline instead.

    The set lives in the artifact store (`ArtifactStore.write_state`; the cursor only names it, as
    Dagster copies a cursor into every tick row). Without a cursor the newest stored set is used:
    Dagster commits a tick's cursor after registering its symbols, so a daemon killed in between
    repeats the first tick without one. Without any (the sensor's first tick, an instance upgraded
    from the version whose cursor listed only the symbols it had registered itself, a state gone
    missing), the symbols registered so far are taken as they are: history is backfilled for
    symbols registered from then on, never for a whole existing index at once.
    """
    if cursor and cursor.startswith(_UNIVERSE_PREFIX):
        data = store.read_state(UNIVERSE_STATE, str(_cursor_parts(cursor, _UNIVERSE_PREFIX)[0]))
        if data is not None:
            return set(json.loads(data)), None
    elif cursor:  # the earlier version's cursor: its pending symbols still need their backfill
        pending = set(json.loads(cursor).get("pending_backfill", []))
        return registered - pending, None
    elif (data := store.latest_state(UNIVERSE_STATE)) is not None:
        return set(json.loads(data)), None
    note = (
        f"taking the {len(registered)} symbols registered before this tick as they are"
        if registered
        else None
    )
    return set(registered), note


def _save_handled(store: Any, handled: set[str], previous: str | None) -> str:
    """The cursor naming this set, with a generation that grows whenever the set changes (see
    `_save_state`), so that a repeated tick and a later one asking for the same symbols differ."""
    data = json.dumps(sorted(handled), separators=(",", ":")).encode()
    key = store.write_state(UNIVERSE_STATE, data)
    old_key, generation = _cursor_parts(previous, _UNIVERSE_PREFIX)
    return f"{_UNIVERSE_PREFIX}{key}#{generation + (key != old_key)}"


def _invalid(symbol: str) -> str | None:
    """Why a registered symbol cannot be backfilled (added in the UI, which checks nothing), or None."""
    try:
        canonical = validate_symbol(symbol)
    except InvalidSymbolError as exc:
        return str(exc)
    return None if canonical == symbol else f"{symbol!r} is not written as {canonical!r}"


def _state_unavailable(
    context: SensorEvaluationContext, adds: list[AddDynamicPartitionsRequest], exc: Exception
) -> SensorResult:
    """The artifact store cannot hold the sensor's state: keep registering symbols, request no
    history (it would be requested again on every tick) and keep the cursor, so nothing is lost."""
    return SensorResult(
        dynamic_partitions_requests=adds,
        cursor=context.cursor,
        skip_reason=f"history backfills wait: the artifact store cannot keep this sensor's state ({exc})",
    )


@sensor(
    name="symbol_universe",
    asset_selection=PARTITION_SELECTION,  # what its history backfills target
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=INTERVAL,
    description=(
        "Adds the symbols of SENSEQUANT_UNIVERSE_FILE (one per line, # comments) or else "
        "SENSEQUANT_SYMBOLS to the `symbols` partitions and, unless SENSEQUANT_BACKFILL_NEW_SYMBOLS=0, "
        "requests the history of every newly registered symbol (from the universe, the UI's 'Add "
        "partition' or `sensequant symbols add`) as one backfill, once. Bad symbols are named."
    ),
)
def symbol_universe(
    context: SensorEvaluationContext, artifacts: ArtifactsResource
) -> SensorResult | SkipReason:
    try:
        wanted, origin = universe()
        backfill = flag("SENSEQUANT_BACKFILL_NEW_SYMBOLS")
    except (InvalidSymbolError, SettingsError, OSError) as exc:
        return SkipReason(f"the symbol universe is invalid: {exc}")
    registered = _registered(context)  # the tick's one query
    known = set(registered)
    new = [s for s in wanted if s not in known]  # registered by this tick, backfilled on the next
    adds = [AddDynamicPartitionsRequest(SYMBOLS_PARTITIONS_NAME, new)] if new else []
    try:
        handled, baseline = _handled_symbols(artifacts.store(), context.cursor, known)
    except (OSError, ArtifactError) as exc:
        return _state_unavailable(context, adds, exc)
    unhandled = [s for s in registered if s not in handled]  # in registration order
    invalid = {s: why for s in unhandled if (why := _invalid(s)) is not None}
    ready = [s for s in unhandled if s not in invalid]
    requests, already = [], None
    if ready and backfill:
        # A backfill request has no run key: a tick repeated from the same cursor (a daemon killed
        # before Dagster committed the tick that asked) finds that backfill instead of asking again.
        digest = hashlib.sha256("\n".join(ready).encode()).hexdigest()[:16]
        request_key = f"symbol_universe:{_cursor_parts(context.cursor, _UNIVERSE_PREFIX)[1]}:{digest}"
        found = context.instance.get_backfills(
            filters=BulkActionsFilter(tags={REQUEST: request_key}), limit=1
        )
        if found:
            already = found[0].backfill_id
        else:
            requests = [history_backfill(context, ready, {REQUEST: request_key})]
    messages = [baseline] if baseline else []
    if new:
        messages.append(f"registering {', '.join(new)} from {origin}")
    if ready:
        verb = (
            f"already requested as backfill {already}: the history backfill of"
            if already
            else "requested the history backfill of"
            if backfill
            else "SENSEQUANT_BACKFILL_NEW_SYMBOLS=0: no history for"
        )
        messages.append(f"{verb} {', '.join(ready)}")
    for symbol, why in invalid.items():
        messages.append(f"no history backfill for {symbol!r}: {why}; remove it")
    for message in messages:
        context.log.info(message)
    # A symbol removed from the partitions drops out, so one registered again is backfilled again.
    try:
        cursor = _save_handled(artifacts.store(), (handled & known) | set(unhandled), context.cursor)
    except (OSError, ArtifactError) as exc:  # without the state saved, a backfill would be requested again
        return _state_unavailable(context, adds, exc)
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=adds,
        cursor=cursor,
        skip_reason=None
        if requests or new
        else "; ".join([*messages, f"all {len(wanted)} symbols of {origin} are registered"]),
    )


# --- new or corrected bars -------------------------------------------------------------------


TOKEN_CHARS = 12  # hex digits kept of the sha256 of a symbol's quick token: change detection only
FINGERPRINT_CHARS = 6  # hex digits kept per window fingerprint: a 1 in 16.7 million chance to miss a change
_CURSOR_PREFIX = "b1:"


def _short(fingerprint: str | None) -> str | None:
    return fingerprint[:FINGERPRINT_CHARS] if fingerprint else None


BACKFILL_AT = 10  # this many partitions changed in one tick are one backfill (batched), not one run each
# Every symbol's window fingerprints are re-compared at least once per sweep period, spread over
# the ticks: about 1/20 of the symbols per tick (25 of 500, ~0.3 s), whatever the interval.
SWEEP_SECONDS = max(60.0, 20.0 * INTERVAL)
STATE_NAME = "new_data"
_STATE_PREFIX = "s1:"


def due_for_sweep(symbol: str, since: float | None, now: float, period: float = SWEEP_SECONDS) -> bool:
    """Whether `symbol`'s fingerprints are re-compared on a tick at `now` after one at `since`.

    `quick_token` misses edits made in place, so every symbol is also compared once per `period`
    whatever its token says: at a fixed phase of the period (from a hash of its name), spreading the
    index evenly over the ticks. The first tick (no `since`) compares everything; a late tick (a
    restart, a paused sensor) compares at most a tenth of the period's phases, so it stays cheap and
    the symbols of the gap come round again within a period.
    """
    if since is None:
        return True
    since = max(since, now - period / 10.0)
    phase = zlib.crc32(symbol.encode()) / 2**32 * period
    latest = now - ((now - phase) % period)  # the newest moment <= now at this symbol's phase
    return latest > since


def _load_state(store: Any, cursor: str | None) -> tuple[dict[str, str], dict[str, dict[str, str | None]]]:
    """The state a cursor names: Dagster copies a cursor into every tick row, so it holds only the
    key of the packed state the artifact store keeps (`ArtifactStore.write_state`). Without a
    cursor, the newest stored state: a first tick whose cursor Dagster never committed (a daemon
    killed right after it) must not record a correction made since as a baseline. A state gone
    missing (artifacts moved) starts over: every symbol's first look records a baseline."""
    if cursor and cursor.startswith(_STATE_PREFIX):
        data = store.read_state(STATE_NAME, str(_cursor_parts(cursor)[0]))
        return decode_cursor(data.decode()) if data else ({}, {})
    if not cursor:
        data = store.latest_state(STATE_NAME)
        return decode_cursor(data.decode()) if data else ({}, {})
    return decode_cursor(cursor)  # a cursor of an older version holds its state itself


def _save_state(
    store: Any, tokens: dict[str, str], seen: dict[str, dict[str, str | None]], previous: str | None = None
) -> str:
    """The cursor naming this state: its key and a generation that grows whenever the state
    changes (`previous` is the tick's input cursor), so run keys can tell ticks apart."""
    key = store.write_state(STATE_NAME, encode_cursor(tokens, seen).encode())
    old_key, generation = _cursor_parts(previous)
    return f"{_STATE_PREFIX}{key}#{generation + (key != old_key)}"


def _cursor_parts(cursor: str | None, prefix: str = _STATE_PREFIX) -> tuple[str | None, int]:
    """(state key, generation) of a cursor; generation 0 for a cursor without one."""
    if not cursor or not cursor.startswith(prefix):
        return None, 0
    key, _, generation = cursor[len(prefix) :].partition("#")
    return key, int(generation or 0)


def encode_cursor(tokens: dict[str, str], seen: dict[str, dict[str, str | None]]) -> str:
    """The new_data state in ~46 KiB for 500 symbols x 20 windows (the plain JSON was 375 KiB).

    Window keys and symbols are listed once; then per symbol, in bytes: its short token, a bitmap
    of the windows covered, and the covered windows' short fingerprints; zlib, then base85.
    """
    windows = sorted({key for per_symbol in seen.values() for key in per_symbol})
    symbols = sorted(seen)
    blob = bytearray()
    for symbol in symbols:
        blob += bytes.fromhex(tokens.get(symbol, "").ljust(TOKEN_CHARS, "0"))
        prints = [seen[symbol].get(key) for key in windows]
        bitmap = sum(1 << i for i, fp in enumerate(prints) if fp)
        blob += bitmap.to_bytes((len(windows) + 7) // 8, "little")
        blob += b"".join(bytes.fromhex(fp) for fp in prints if fp)
    packed = base64.b85encode(zlib.compress(bytes(blob), 9)).decode()
    return _CURSOR_PREFIX + json.dumps({"windows": windows, "symbols": symbols, "packed": packed})


def decode_cursor(text: str | None) -> tuple[dict[str, str], dict[str, dict[str, str | None]]]:
    """(tokens, window fingerprints) from `encode_cursor`'s text, or from the plain JSON of older
    versions (their fingerprints cut to the same prefix, so an upgrade does not look like a
    correction of every window; their tokens, of another kind, are dropped)."""
    if not text:
        return {}, {}
    if not text.startswith(_CURSOR_PREFIX):
        old = json.loads(text)
        tokens: dict[str, str] = {}  # other tokens: the first tick re-compares fingerprints
        seen = {s: {k: _short(f) for k, f in w.items()} for s, w in old.get("windows", {}).items()}
        return tokens, seen
    body = json.loads(text[len(_CURSOR_PREFIX) :])
    windows, blob = body["windows"], zlib.decompress(base64.b85decode(body["packed"]))
    token_bytes, map_bytes, print_bytes = TOKEN_CHARS // 2, (len(windows) + 7) // 8, FINGERPRINT_CHARS // 2
    tokens, seen, at = {}, {}, 0
    for symbol in body["symbols"]:
        tokens[symbol] = blob[at : at + token_bytes].hex()
        bitmap = int.from_bytes(blob[at + token_bytes : at + token_bytes + map_bytes], "little")
        at += token_bytes + map_bytes
        seen[symbol] = {}
        for i, key in enumerate(windows):
            if bitmap >> i & 1:
                seen[symbol][key] = blob[at : at + print_bytes].hex()
                at += print_bytes
            else:
                seen[symbol][key] = None
    return tokens, seen


def _window_changes(source: Any, symbol: str, bounds: list) -> tuple[dict, dict]:
    """(window start -> fingerprint, window start -> when it last changed, in seconds); the times
    only from a source that knows them (the csv source), else none: every change is then requested."""
    if hasattr(source, "window_changes"):
        return source.window_changes(symbol, bounds)
    return source.window_fingerprints(symbol, bounds), {}


def _newest_records(instance: DagsterInstance, asset: str, partitions: Iterable[str]) -> dict[str, Any]:
    """partition -> the record of its newest materialisation of `asset` (one query for the storage
    ids and one fetch of the records per 500 partitions)."""
    wanted, key, out = sorted(set(partitions)), AssetKey(asset), {}
    for i in range(0, len(wanted), 500):
        ids = instance.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION, set(wanted[i : i + 500])
        )
        if ids:
            filt = AssetRecordsFilter(key, storage_ids=list(ids.values()))
            for record in instance.fetch_materializations(filt, limit=len(ids)).records:
                out[str(record.partition_key)] = record
    return out


def _already_read(
    context: SensorEvaluationContext, changed: dict[str, float | None]
) -> tuple[dict[str, str], dict[str, str]]:
    """Of the partitions whose window changed (partition -> when, None: unknown), those whose newest
    `market_bars` materialisation read the bars after the change (-> the run that did), and of the
    others those a run or a requested backfill in progress will compute (-> what).

    A training run that fetches (breeze_bars, upstream of market_bars) completes or changes its own
    window's files before its market_bars step reads them: requesting that window again trained it
    twice. A change dated before the start of the market_bars step that made the newest
    materialisation was read by it. Dates are files' ctimes against Dagster's clock, both this
    machine's (a data directory on a server whose clock runs behind could date a later change too
    early). Cost, only on a tick with changes: one query for the newest materialisations, one for
    their records, one for their runs (per 500), one per run for its step starts, and what is in
    progress (follow_upstream's InFlight)."""
    dated = {p: t for p, t in changed.items() if t is not None}
    read: dict[str, str] = {}
    bars = _newest_records(context.instance, "market_bars", dated) if dated else {}
    run_ids = sorted({r.run_id for r in bars.values() if r.run_id})
    started: dict[str, float] = {}
    for i in range(0, len(run_ids), 500):
        for run in context.instance.get_run_records(RunsFilter(run_ids=run_ids[i : i + 500])):
            started[run.dagster_run.run_id] = run.start_time or run.create_timestamp.timestamp()
    steps: dict[str, list[float]] = {}
    for run_id in run_ids:  # the market_bars step's starts (a retried step starts more than once)
        found = context.instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_START).records
        steps[run_id] = [
            r.event_log_entry.timestamp for r in found if r.event_log_entry.step_key == "market_bars"
        ]
    for partition, record in bars.items():
        if not record.run_id:  # reported without a run: it vouches for the bars at that time
            after, by = record.timestamp, "a reported materialisation"
        else:
            before = [t for t in steps.get(record.run_id, []) if t <= record.timestamp]
            after, by = max(before, default=started.get(record.run_id)), f"run {record.run_id}"
        if after is not None and dated[partition] < after:
            read[partition] = by
    busy: dict[str, str] = {}
    if len(read) < len(changed):
        from sensequant_assets.follow import InFlight  # follow imports this module

        in_flight = InFlight(context, window_partitions.get_partition_keys())
        for partition in changed:
            if partition not in read and (who := in_flight.who("market_bars", partition)) is not None:
                busy[partition] = who
    return read, busy


@sensor(
    name="new_data",
    asset_selection=PARTITION_SELECTION,  # train_job's assets
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=INTERVAL,
    description=(
        "Polls the data source cheaply (one stat per symbol per tick, and each symbol's window "
        "fingerprints from its file listing at least once a minute; no file read unless something "
        "changed) and, when a symbol's bars complete a window or change an existing one, "
        "requests a run of exactly that partition's bars, teacher, student and evaluation (ten "
        "or more partitions in one tick: one backfill); the later windows' teachers and the next "
        "window's evaluation follow through follow_upstream. A change the partition's newest "
        "market_bars already read (a training run that fetched it) is not requested; one a run in "
        "progress computes is judged once it is done. The first look at a symbol records "
        "a baseline (its history is the universe "
        "sensor's backfill)."
    ),
)
def new_data(
    context: SensorEvaluationContext, market_data: MarketDataResource, artifacts: ArtifactsResource
) -> SensorResult:
    tokens, seen = _load_state(artifacts.store(), context.cursor)
    generation = _cursor_parts(context.cursor)[1]
    windows = [(key, *window_bounds(key)) for key in window_partitions.get_partition_keys()]
    requests, problems, baselines, answered = [], [], [], []
    changes: dict[str, tuple] = {}  # partition -> (its key, window, why, fingerprint, previous, changed at)
    already = ""
    since, now = context.last_tick_completion_time, time.time()
    known = {key for per_symbol in seen.values() for key in per_symbol}
    # A new window partition (the calendar passed its end): compare every symbol now, so the
    # window's training is one backfill rather than a trickle of runs over the sweep period.
    sweep_all = since is None or (bool(seen) and any(key not in known for key, _, _ in windows))
    waiting, started = _decay_retrains(context)
    for symbol in _registered(context):
        try:
            source = market_data.source_for(symbol)
            token = hashlib.sha256(source.quick_token(symbol).encode()).hexdigest()[:TOKEN_CHARS]
            if tokens.get(symbol) == token and not sweep_all and not due_for_sweep(symbol, since, now):
                continue
            fingerprints, changed_at = _window_changes(source, symbol, [(a, b) for _, a, b in windows])
        except (DataSourceError, SettingsError, ValueError) as exc:
            problems.append(f"{symbol}: {exc}")
            continue
        current = {key: _short(fingerprints[start]) for key, start, _ in windows}
        previous = seen.get(symbol)
        tokens[symbol], seen[symbol] = token, current
        if previous is None:
            baselines.append(symbol)
            continue
        for key, start, _ in windows:
            fingerprint, was = current[key], previous.get(key)
            if fingerprint is None or fingerprint == was:
                continue
            completed = not was
            why = "window completed" if completed else "bars corrected"
            partition = make_key(symbol, key)
            # model_decay's retraining reads the bars when it starts (see _decay_retrains).
            covering = waiting.get(str(partition)) or (completed and started.get(str(partition)))
            if covering:
                context.log.info(f"{partition}: {why}; {covering} trains it")
                continue
            changes[str(partition)] = (partition, key, why, fingerprint, was, changed_at.get(start))
    read, busy = _already_read(context, {p: c[5] for p, c in changes.items()})
    for name, (partition, key, why, fingerprint, before, _) in changes.items():
        if name in read:
            answered.append(f"{name}: {why}, already read by {read[name]}")
        elif name in busy:  # judged again (at the symbol's next comparison) once it is done
            seen[split_key(name)[0]][key] = before
            answered.append(f"{name}: {why}; {busy[name]} computes its bars, judged again after it")
        else:
            context.log.info(f"{partition}: {why}")
            requests.append(
                RunRequest(
                    partition_key=partition,
                    # The generation of the state this tick started from: the same when a tick is
                    # repeated from the same cursor (a crash, a failed tick: no second run), and
                    # new once a state was saved, so a correction reverted to an earlier
                    # fingerprint is a new request.
                    run_key=f"new_data:{partition}:{fingerprint}:{generation}",
                    tags={TRIGGER: "new_data", REASON: f"{partition}: {why}"},
                )
            )
            continue
        context.log.info(answered[-1])
    if len(requests) >= BACKFILL_AT:  # e.g. a day's bars completing a window for the whole index
        partitions = [r.partition_key for r in requests]
        reasons = sorted({r.tags[REASON].split(": ", 1)[1] for r in requests})
        why = f"{len(partitions)} partitions: {', '.join(reasons)}"
        # A backfill request has no run key: a tick repeated from the same cursor (after a failed
        # tick) finds the backfill it requested by this tag instead of requesting it twice.
        digest = hashlib.sha256("\n".join(sorted(str(r.run_key) for r in requests)).encode()).hexdigest()
        request_key = f"new_data:{generation}:{digest[:16]}"
        done = context.instance.get_backfills(filters=BulkActionsFilter(tags={REQUEST: request_key}), limit=1)
        if done:
            already = f"{why}: already requested as backfill {done[0].backfill_id}"
            context.log.info(already)
            requests = []
        else:
            context.log.info(f"requesting one backfill of {why}")
            requests = [partitions_backfill(context, partitions, "new_data", why, {REQUEST: request_key})]
    for problem in problems:
        context.log.warning(problem)
    notes = [already] if already else []
    notes += answered
    if baselines:
        notes.append(f"baseline recorded for {', '.join(baselines)}")
    if problems:
        notes.append("could not read: " + "; ".join(problems))
    skip = None
    if not requests:
        skip = "; ".join(notes) or f"no new or corrected bars ({market_data.data_source} source)"
    cursor = _save_state(artifacts.store(), tokens, seen, context.cursor)
    return SensorResult(run_requests=requests, cursor=cursor, skip_reason=skip)


def _decay_retrains(context: SensorEvaluationContext) -> tuple[dict[str, str], dict[str, str]]:
    """model_decay's retraining runs not finished, by partition: (not started yet, started).

    One query per tick. A queued run makes new_data stand down for any change of its partition:
    it is a whole training run that reads the bars when it starts (and model_decay retries it if
    it fails). A started one covers only a *completed* window: model_decay requests the retraining
    of a window only once the window is complete, so that run reads the completed bars, whereas a
    correction may have come after it read them. Any other run (an evaluation only, a run someone
    may cancel) could leave a change untrained.
    """
    runs = context.instance.get_runs(RunsFilter(tags={TRIGGER: "model_decay"}, statuses=ACTIVE))
    queued = (DagsterRunStatus.NOT_STARTED, DagsterRunStatus.QUEUED)
    waiting, started = {}, {}
    for r in runs:
        if "dagster/partition" in r.tags:
            into = waiting if r.status in queued else started
            into[r.tags["dagster/partition"]] = f"run {r.run_id}"
    return waiting, started


# --- decay of promoted models ----------------------------------------------------------------


MAX_ATTEMPTS = 3  # a decay action whose run fails is requested again, this many times in all
ACTIVE = [
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def newest_metadata(
    instance: DagsterInstance, asset: str, partitions: Iterable[str], chunk: int = 500
) -> dict[str, dict[str, Any]]:
    """partition -> the metadata of its newest materialisation of `asset`, for all of `partitions`
    at once: one query for the newest storage ids and one fetch of those records per `chunk`
    partitions, however many symbols ask (a decay tick used to make a query per window per
    production model)."""
    wanted = sorted({str(p) for p in partitions})
    key = AssetKey(asset)
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(wanted), chunk):
        ids = instance.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION, set(wanted[i : i + chunk])
        )
        if not ids:
            continue
        records = instance.fetch_materializations(
            AssetRecordsFilter(key, storage_ids=list(ids.values())), limit=len(ids)
        ).records
        for record in records:
            event = record.asset_materialization
            out[str(event.partition)] = partition_metadata(event)
    return out


def evidence_partitions(record: registry.PromotionRecord, windows: Sequence[str]) -> list[str]:
    """The evaluation partitions that can judge the production model: its symbol, later windows."""
    symbol, own_window = split_key(record.partition_key)
    return [str(make_key(symbol, w)) for w in windows if w > own_window]


def production_evidence(
    record: registry.PromotionRecord,
    windows: Sequence[str],
    evaluations: dict[str, dict[str, Any]],
    limit: int,
) -> list[tuple[str, float | None, str]]:
    """(window, AUC, model) of the newest evaluations that judge the production model's lineage.

    Only windows after the production model's own window count, scored by that model or by a
    later student of the same configuration (window k's evaluation scores the student of k-1):
    what happened since the model was trained, never its predecessors' scores. Newest first, at
    most `limit`; `evaluations` holds the newest metadata of `evidence_partitions` (see
    `newest_metadata`).
    """
    symbol, own_window = split_key(record.partition_key)
    out = []
    for window in sorted(windows, reverse=True):
        if window <= own_window:
            break
        meta = evaluations.get(str(make_key(symbol, window)))
        if meta is None:
            continue
        model = str(meta.get("model_partition") or "")
        same_config = record.config_id is None or meta.get(CONFIG_ID_KEY) == record.config_id
        if not model or split_key(model)[1] < own_window or not same_config:
            continue
        auc = meta.get("auc")
        out.append((window, auc if isinstance(auc, float) else None, model))
        if len(out) >= limit:
            break
    return out


def _attempt(context: SensorEvaluationContext, key: str) -> tuple[str | None, str | None]:
    """The run key for the next attempt of a decay action, or (None, why) when it needs none.

    Dagster never launches a run key twice, even after a failure, so a failed attempt gets a
    numbered key; after MAX_ATTEMPTS failures the action stops and the tick says so.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        attempt_key = key if attempt == 1 else f"{key}:attempt{attempt}"
        runs = context.instance.get_runs(RunsFilter(tags={"dagster/run_key": attempt_key}), limit=1)
        if not runs:
            return attempt_key, None
        if runs[0].status not in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            return None, f"run {runs[0].run_id} ({runs[0].status.value})"
    return None, f"{MAX_ATTEMPTS} attempts failed (last: run {runs[0].run_id}); see its logs"


def _demote_request(
    context: SensorEvaluationContext, symbol: str, record: registry.PromotionRecord, window: str, reason: str
) -> tuple[RunRequest | None, str | None]:
    """One demotion per verdict: the key names the model, its installation and the newest window
    judged, so re-evaluating that window asks nothing new, a rollback of the same model waits for a
    newer window's evidence, and a re-promotion of the same window (new bytes) is judged afresh."""
    key, why = _attempt(context, f"demote:{symbol}:{record.partition_key}:{record.promoted_at}:{window}")
    if key is None:
        return None, f"{symbol}: demotion already requested: {why}"
    config = {
        "symbol": symbol,
        "expected": record.partition_key,
        "expected_promoted_at": record.promoted_at,
        "reason": reason,
        "after_window": window,
    }
    request = RunRequest(
        job_name=demote_job.name,
        run_key=key,
        run_config={"ops": {"demote_model": {"config": config}}},
        tags={TRIGGER: "model_decay", REASON: reason},
    )
    return request, None


RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _covers(tags: dict[str, str], partition: str, order: dict[str, int]) -> bool:
    """Whether a run with these tags trains `partition`: its single-partition tag, or the range a
    batched backfill run carries (Dagster's product of each dimension's range: symbols in
    registration order, `order` maps each to its position; windows in time order)."""
    if tags.get("dagster/partition") == partition:
        return True
    start, end = tags.get(RANGE_START), tags.get(RANGE_END)
    if not start or not end:
        return False
    try:  # a range of another partitioning (the symbols of symbol_briefing's run) holds no window
        (s0, w0), (s1, w1), (symbol, window) = split_key(start), split_key(end), split_key(partition)
    except ValueError:
        return False
    if not w0 <= window <= w1:  # ISO dates: string order is time order
        return False
    return symbol in order and order.get(s0, -1) <= order[symbol] <= order.get(s1, -1)


def in_flight(instance: DagsterInstance, partitions: Iterable[str]) -> dict[str, str]:
    """Each of `partitions` that an unfinished run or backfill trains (a sensor's single-partition
    run, a batched backfill run over a range holding it, a requested backfill whose target holds
    it), with what trains it; one query each for the runs, the symbols (only when a run has a
    range) and the backfills, however many partitions are asked about."""
    wanted = [str(p) for p in partitions]
    runs = instance.get_runs(RunsFilter(statuses=ACTIVE))
    ranged = any(RANGE_START in r.tags for r in runs)
    symbols = instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME) if ranged else []
    order = {name: i for i, name in enumerate(symbols)}
    busy: dict[str, str] = {}
    for partition in wanted:
        for run in runs:
            if _covers(run.tags, partition, order):
                busy[partition] = f"run {run.run_id} on {partition} is {run.status.value.lower()}"
                break
    # A backfill the daemon has not turned into runs yet (it does within its 30 s loop), or one
    # whose run for this partition is still to come.
    requested = BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])
    for backfill in instance.get_backfills(filters=requested):
        data = backfill.asset_backfill_data
        if data is None:
            continue
        for partition in wanted:
            target = AssetKeyPartitionKey(AssetKey("student_model"), partition)
            if partition not in busy and target in data.target_subset:
                busy[partition] = f"backfill {backfill.backfill_id} holding {partition} is in progress"
    return busy


def _retrain_request(
    context: SensorEvaluationContext, market_data: MarketDataResource, symbol: str, demotion: dict
) -> tuple[RunRequest | None, str]:
    """Retraining after a demotion: requested once, when a window newer than the verdict's is complete."""
    after = demotion.get("evidence", {}).get("after_window") or split_key(demotion["from"])[1]
    newer = next_window(after)
    if newer is None:
        return None, f"{symbol}: demoted, waiting for a window after {after}"
    start, end = window_bounds(newer)
    covered = market_data.source_for(symbol).window_fingerprints(symbol, [(start, end)])[start]
    if covered is None:
        return None, f"{symbol}: demoted, waiting for window {newer} to complete"
    partition = str(make_key(symbol, newer))
    since = datetime.fromisoformat(demotion["at"].replace("Z", "+00:00")).timestamp()
    page = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("student_model"), asset_partitions=[partition]), limit=1
    )
    if page.records and page.records[0].timestamp > since:
        return None, f"{symbol}: demoted; {partition} was trained after the demotion"
    if (busy := in_flight(context.instance, [partition]).get(partition)) is not None:
        return None, f"{symbol}: demoted; {busy}"  # e.g. new_data's run of the completed window
    key, why = _attempt(context, f"decay-retrain:{symbol}:{demotion['archived']}")
    if key is None:
        return None, f"{symbol}: demoted; retraining of {partition} already requested: {why}"
    reason = f"{symbol}: retrain window {newer} after demoting {demotion['from']} ({demotion['reason']})"
    request = RunRequest(
        partition_key=partition,
        job_name=train_job.name,
        run_key=key,
        tags={TRIGGER: "model_decay", REASON: reason},
    )
    return request, reason


@sensor(
    name="model_decay",
    jobs=[demote_job, train_job],
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=INTERVAL,
    description=(
        "For every symbol with a production model: when the SENSEQUANT_DECAY_WINDOWS newest windows "
        "evaluated since its own (scoring it or a later student of its configuration) all score an "
        "AUC below SENSEQUANT_DECAY_MIN_AUC, demotes the model once "
        "(demote_job: archived, restorable with rollback_job); once a window newer than the verdict's "
        "is complete, requests its training once. Reasons are in the runs' tags and the ticks."
    ),
)
def model_decay(
    context: SensorEvaluationContext, market_data: MarketDataResource, artifacts: ArtifactsResource
) -> SensorResult:
    try:
        min_auc = float(number("SENSEQUANT_DECAY_MIN_AUC", float, 0.0))
        needed = int(number("SENSEQUANT_DECAY_WINDOWS", int, 1))
    except SettingsError as exc:
        return SensorResult(skip_reason=str(exc))
    base = artifacts.location
    requests, healthy = [], []
    registered = _registered(context)
    # A symbol the UI added that names no canonical directory (`../X`) has no production model.
    bad = {s: problem for s in registered if (problem := key_symbol_problem(s)) is not None}
    notes = [f"{s!r} skipped: {problem}" for s, problem in bad.items()]
    symbols = [s for s in registered if s not in bad]
    # one registry read per symbol: together on object storage, where each is a few round trips
    records = dict(
        zip(
            symbols,
            per_partition(artifacts.store(), lambda s: registry.current(base, s), symbols),
            strict=True,
        )
    )
    windows = window_partitions.get_partition_keys()
    evaluations = newest_metadata(
        context.instance,
        "student_evaluation",
        (
            p
            for record in records.values()
            if record is not None
            for p in evidence_partitions(record, windows)
        ),
    )
    for symbol, record in records.items():
        if record is None:
            demotion = registry.active_demotion(base, symbol)
            if demotion is not None:
                try:
                    request, note = _retrain_request(context, market_data, symbol, demotion)
                except (DataSourceError, SettingsError, ValueError) as exc:
                    request, note = None, f"{symbol}: demoted; cannot read its bars: {exc}"
                requests += [request] if request else []
                notes.append(note)
            continue
        recent = production_evidence(record, windows, evaluations, needed)
        decayed = len(recent) == needed and all(auc is not None and auc < min_auc for _, auc, _ in recent)
        if not decayed:
            healthy.append(symbol)
            continue
        scores = ", ".join(f"{window}: {auc:.3f} (student {model})" for window, auc, model in recent)
        reason = (
            f"production model {record.partition_key} decayed: AUC below {min_auc} in the "
            f"{needed} windows evaluated since it was trained ({scores})"
        )
        request, note = _demote_request(context, symbol, record, recent[0][0], reason)
        if request is None:
            notes.append(note)
            continue
        context.log.warning(f"{symbol}: {reason}")
        requests.append(request)
    for note in notes:
        context.log.info(note)
    skip = None
    if not requests:
        status = [f"{len(healthy)} production models within the gate" if healthy else "no production models"]
        skip = "no decay: " + "; ".join(status + notes)
    return SensorResult(run_requests=requests, skip_reason=skip)
