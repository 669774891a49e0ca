"""The `follow_upstream` sensor: partitioned assets follow their upstream in every window.

A materialisation of `market_bars`, the teacher or a student makes the partitions that read it due
(Dagster's partition mappings: the teachers of the next windows whose warm-up holds those bars, the
student, this and the next window's evaluation). A due partition waits while it, or one of its
inputs, is being computed by a run or a requested backfill, or is itself due; then it is answered
when its newest materialisation read the change (made by the run that made every change it waits
for, or by a run that started after the newest one) and requested otherwise. One with an input
never materialised is dropped (a teacher needs only its own window's bars: it reads earlier windows
never stored from the source): that input's own materialisation makes it due again.

Why not Dagster's declarative automation, which the unpartitioned assets keep: its sensor evaluates
every condition over every partition of every asset on each tick and stores each condition's
subset as an explicit key list, kept 30 days. At 500 symbols x 20 windows its ticks took 16 s
(median, 47 s at most) and wrote 780 MiB in one training hour. This sensor reads only the events
since its cursor, the unfinished runs and backfills, and what waits; a tick costs what changed and
what is in progress, not the size of the universe.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    partition_loading_context,
    sensor,
)

# Private: Dagster 1.13 has no public way for a sensor to request a backfill or to filter backfills;
# guarded by sensequant_tests/test_dagster_private_apis.py (docs/dagster_private_apis.md).
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

from sensequant_assets.io_manager import ArtifactsResource
from sensequant_assets.partitions import SYMBOLS_PARTITIONS_NAME, split_key, window_partitions
from sensequant_assets.sensors import (
    ACTIVE,
    INTERVAL,
    RANGE_END,
    RANGE_START,
    REASON,
    REQUEST,
    TRIGGER,
)

UPSTREAMS = ("market_bars", "teacher_model", "teacher_labels", "student_model")
FOLLOWERS = ("teacher_model", "teacher_labels", "student_model", "student_evaluation")
# The teacher's two outputs are computed together: followed as one item, named by its model.
TEACHER, LABELS = "teacher_model", "teacher_labels"
MAX_EVENTS = 1000  # upstream materialisations read per tick; the rest on the next
BACKFILL_AT = 10  # this many due partitions in one tick are one backfill (batched), not one run each
STATE_NAME = "follow_upstream"
_PREFIX = "f2:"

Item = tuple[str, str]  # (asset, "SYMBOL|window")
# What an item waits for: [storage id of the newest change, storage id of the oldest (to rebuild a
# lost state from), {run that made changes ("" runless, "*" several folded): its newest change's time}].
Due = list[Any]
MAX_RUNS = 4  # runs remembered per item; more are folded into "*" (answered only by a later run)


def _fold(asset: str) -> str:
    return TEACHER if asset == LABELS else asset


def _outputs(asset: str) -> tuple[str, ...]:
    return (TEACHER, LABELS) if asset == TEACHER else (asset,)


# --- cursor and state ------------------------------------------------------------------------


def _cursor(text: str | None) -> tuple[int | None, int | None, str | None]:
    """(storage id read up to, oldest change still waiting, key of the waiting state) of a cursor."""
    if not text or not text.startswith(_PREFIX):
        return None, None, None
    after, oldest, key = text[len(_PREFIX) :].split(":")
    return int(after), (int(oldest) if oldest != "-" else None), (key if key != "-" else None)


def _load(store: Any, key: str | None) -> dict[Item, Due] | None:
    """The waiting items a cursor names; None when the state is gone or unreadable."""
    if key is None:
        return {}
    data = store.read_state(STATE_NAME, key)
    if data is None or hashlib.sha256(data).hexdigest()[:20] != key:
        return None
    try:
        packed = json.loads(zlib.decompress(data))
    except (zlib.error, ValueError):
        return None
    return {(asset, part): due for asset, parts in packed.items() for part, due in parts.items()}


def _save(store: Any, after: int, waiting: dict[Item, Due]) -> str:
    """The cursor: storage ids read up to and of the oldest change waiting, and the key of the
    state the artifact store keeps (Dagster copies a cursor into every tick row, so it stays a few
    dozen bytes; with the oldest change in it, a lost state is rebuilt by reading from there)."""
    if not waiting:
        return f"{_PREFIX}{after}:-:-"
    packed: dict[str, dict[str, Due]] = defaultdict(dict)
    for (asset, part), due in sorted(waiting.items()):
        packed[asset][part] = due
    data = zlib.compress(json.dumps(packed, separators=(",", ":")).encode(), 6)
    oldest = min(due[1] for due in waiting.values())
    return f"{_PREFIX}{after}:{oldest}:{store.write_state(STATE_NAME, data)}"


# --- the asset graph -------------------------------------------------------------------------

# (asset, window, parents?, the newest window) -> [(asset, window)]: every partitioned asset here
# maps the symbol dimension to itself, so a mapping is computed once per window (the graph takes
# milliseconds per call) and reused for every symbol and tick; a new window starts a new entry.
_MAPPED: dict[tuple[str, str, bool, str], list[tuple[str, str]]] = {}


class Lineage:
    """Children and parents of partitions, from the asset graph (see `_MAPPED`)."""

    def __init__(self, context: SensorEvaluationContext, windows: Sequence[str]) -> None:
        self.context, self.newest = context, windows[-1] if windows else ""

    def _mapped(self, asset: str, partition: str, parents: bool) -> list[Item]:
        symbol, window = split_key(partition)
        key = (asset, window, parents, self.newest)
        if key not in _MAPPED:
            graph = self.context.repository_def.asset_graph
            with partition_loading_context(dynamic_partitions_store=self.context.instance):
                if parents:
                    found = graph.get_parents_partitions(AssetKey(asset), partition).parent_partitions
                else:
                    found = graph.get_children_partitions(AssetKey(asset), partition)
            pairs = []
            for other in found:
                name = other.asset_key.to_user_string()
                if other.partition_key is None or name not in (*UPSTREAMS, *FOLLOWERS):
                    continue
                other_symbol, other_window = split_key(other.partition_key)
                if other_symbol != symbol:
                    raise ValueError(f"{name} maps symbol {symbol} to {other_symbol}: not followed")
                pairs.append((name, other_window))
            _MAPPED[key] = pairs
        return [(name, f"{symbol}|{w}") for name, w in _MAPPED[key]]

    def children(self, asset: str, partition: str) -> set[Item]:
        return {(_fold(a), p) for a, p in self._mapped(asset, partition, False) if a in FOLLOWERS}

    def parents(self, item: Item) -> list[Item]:
        return self._mapped(item[0], item[1], True)


# --- what is in progress ---------------------------------------------------------------------


def _job_assets(context: SensorEvaluationContext, job_name: str) -> frozenset[AssetKey]:
    """The assets a run of `job_name` computes when the run records none (`train_job`'s runs)."""
    try:
        return frozenset(context.repository_def.get_job(job_name).asset_layer.selected_asset_keys)
    except Exception:  # not a job of this code location (or an op job): it computes no asset
        return frozenset()


def _run_partitions(tags: dict[str, str], order: Sequence[str], windows: Sequence[str]) -> list[str]:
    """The partitions a run computes: its partition tag, or the product of each dimension's range
    that a batched run carries (symbols in registration order, windows in time order). A range of
    another partitioning (the symbols of `symbol_briefing`'s run) computes no window partition."""
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    if RANGE_START not in tags or RANGE_END not in tags:
        return []
    try:
        (s0, w0), (s1, w1) = split_key(tags[RANGE_START]), split_key(tags[RANGE_END])
    except ValueError:
        return []
    if s0 not in order or s1 not in order:
        return []
    symbols = order[order.index(s0) : order.index(s1) + 1]
    return [f"{s}|{w}" for s in symbols for w in windows if w0 <= w <= w1]


class InFlight:
    """Every (asset, partition) an unfinished run or a requested backfill will compute, indexed once
    per tick: one query for the runs, one for the symbols' order, one for the backfills."""

    def __init__(self, context: SensorEvaluationContext, windows: Sequence[str]) -> None:
        instance = context.instance
        self.busy: dict[Item, str] = {}
        runs = instance.get_runs(RunsFilter(statuses=ACTIVE))
        ranged = any(RANGE_START in r.tags for r in runs)
        order = list(instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME)) if ranged else []
        for run in runs:
            assets = run.asset_selection or _job_assets(context, run.job_name)
            for partition in _run_partitions(run.tags, order, windows) if assets else []:
                for asset in assets:
                    self.busy.setdefault((asset.to_user_string(), partition), f"run {run.run_id}")
        requested = BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])
        for backfill in instance.get_backfills(filters=requested):
            data = backfill.asset_backfill_data
            if data is None:
                continue
            left = data.target_subset - data.materialized_subset - data.failed_and_downstream_subset
            for key in left.iterate_asset_partitions():
                if key.partition_key is not None:
                    item = (key.asset_key.to_user_string(), key.partition_key)
                    self.busy.setdefault(item, f"backfill {backfill.backfill_id}")

    def who(self, asset: str, partition: str) -> str | None:
        return next((w for a in _outputs(asset) if (w := self.busy.get((a, partition)))), None)


# --- events and the event log ----------------------------------------------------------------


def _new_events(instance: DagsterInstance, after: int) -> tuple[list, int]:
    """Materialisations of the upstream assets after storage id `after`, oldest first, at most
    MAX_EVENTS, and the storage id read up to (everything up to it is in the list)."""
    events, bound = [], None
    for asset in UPSTREAMS:
        page = instance.fetch_materializations(
            AssetRecordsFilter(AssetKey(asset), after_storage_id=after), limit=MAX_EVENTS, ascending=True
        ).records
        if len(page) == MAX_EVENTS:  # this asset has more: nothing after its last one is complete
            bound = min(bound, page[-1].storage_id) if bound is not None else page[-1].storage_id
        events += page
    events.sort(key=lambda r: r.storage_id)
    if bound is not None:
        events = [r for r in events if r.storage_id <= bound]
    if len(events) > MAX_EVENTS:
        events = events[:MAX_EVENTS]
        bound = events[-1].storage_id
    return events, (bound if bound is not None else max([after, *(r.storage_id for r in events)]))


def _newest(instance: DagsterInstance, items: Iterable[Item], chunk: int = 500) -> dict[Item, int]:
    """Storage id of the newest materialisation of each item that has one (per asset, one query
    per `chunk` partitions)."""
    by_asset: dict[str, set[str]] = defaultdict(set)
    for asset, partition in items:
        by_asset[asset].add(partition)
    out: dict[Item, int] = {}
    for asset, partitions in by_asset.items():
        wanted = sorted(partitions)
        for i in range(0, len(wanted), chunk):
            ids = instance.get_latest_storage_id_by_partition(
                AssetKey(asset), DagsterEventType.ASSET_MATERIALIZATION, set(wanted[i : i + chunk])
            )
            out.update({(asset, p): sid for p, sid in ids.items()})
    return out


def _remember(runs: dict[str, float], run: str, timestamp: float) -> None:
    """Note a change made by `run` at `timestamp` (the newest per run; at most MAX_RUNS runs)."""
    runs[run] = max(runs.get(run, 0.0), timestamp)
    if len(runs) > MAX_RUNS:
        keep = sorted((r for r in runs if r != "*"), key=runs.__getitem__)[-(MAX_RUNS - 1) :]
        folded = max(t for r, t in runs.items() if r not in keep)
        for r in [r for r in runs if r not in keep]:
            del runs[r]
        runs["*"] = folded


def _answered(instance: DagsterInstance, due: dict[Item, Due], newest: dict[Item, int]) -> set[Item]:
    """The items whose newest materialisation read every change they wait for: each change was
    made by the run that materialised it (a run computes an asset after its inputs) or before
    that run started (a run loads its inputs after it starts). A materialisation reported without
    a run counts as an answer."""
    later = {item: newest[item] for item, d in due.items() if newest.get(item, 0) > d[0]}
    by_id: dict[int, str] = {}
    ids = sorted(set(later.values()))
    for i in range(0, len(ids), 500):
        for asset in {item[0] for item in later}:
            filt = AssetRecordsFilter(AssetKey(asset), storage_ids=ids[i : i + 500])
            for record in instance.fetch_materializations(filt, limit=500).records:
                by_id[record.storage_id] = record.run_id
    run_ids = sorted({r for r in by_id.values() if r})
    started = {}
    for i in range(0, len(run_ids), 500):
        for record in instance.get_run_records(RunsFilter(run_ids=run_ids[i : i + 500])):
            started[record.dagster_run.run_id] = record.start_time or record.create_timestamp.timestamp()
    answered = set()
    for item, sid in later.items():
        run = by_id.get(sid, "")
        start = started.get(run, 0.0)
        if not run or all(r == run or start >= t for r, t in due[item][2].items()):
            answered.add(item)
    return answered


def _latest_id(instance: DagsterInstance) -> int:
    newest = [
        page.records[0].storage_id
        for asset in UPSTREAMS
        if (page := instance.fetch_materializations(AssetKey(asset), limit=1)).records
    ]
    return max(newest, default=0)


# --- requests --------------------------------------------------------------------------------


def _requests(
    context: SensorEvaluationContext, ready: dict[Item, Due], request_key: str
) -> tuple[list[RunRequest], str | None]:
    """One run per partition (its due assets), or one backfill from BACKFILL_AT partitions up."""
    by_partition: dict[str, set[str]] = defaultdict(set)
    for asset, partition in ready:
        by_partition[partition].update(_outputs(asset))
    reason = f"upstream changed: {len(ready)} asset partitions in {len(by_partition)} partitions"
    if len(by_partition) < BACKFILL_AT:
        out = []
        for partition, assets in sorted(by_partition.items()):
            newest = max(d[0] for (a, p), d in ready.items() if p == partition)
            names = sorted(assets)
            out.append(
                RunRequest(
                    partition_key=partition,
                    asset_selection=[AssetKey(a) for a in names],
                    run_key=f"follow_upstream:{partition}:{'+'.join(names)}:{newest}",
                    tags={
                        TRIGGER: "follow_upstream",
                        REASON: f"{partition}: upstream changed ({', '.join(names)})",
                    },
                )
            )
        return out, None
    done = context.instance.get_backfills(filters=BulkActionsFilter(tags={REQUEST: request_key}), limit=1)
    if done:  # a tick repeated from the same cursor: its backfill exists already
        return [], f"{reason}: already requested as backfill {done[0].backfill_id}"
    keys = {AssetKeyPartitionKey(AssetKey(a), p) for p, assets in by_partition.items() for a in assets}
    subset = AssetGraphSubset.from_asset_partition_set(keys, context.repository_def.asset_graph)
    tags = {TRIGGER: "follow_upstream", REASON: reason, REQUEST: request_key}
    return [RunRequest.for_asset_graph_subset(subset, tags=tags)], None


def _note(notes: list[str], what: str, found: dict[Item, str]) -> None:
    if found:
        (asset, partition), why = next(iter(found.items()))
        notes.append(f"{len(found)} {what} (e.g. {asset} {partition}: {why})")


@sensor(
    name="follow_upstream",
    asset_selection=AssetSelection.assets(*FOLLOWERS),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=INTERVAL,
    description=(
        "Keeps teachers, students and evaluations in line with their upstream in every window: a "
        "materialisation of bars, a teacher or a student (by any run, backfill or the UI) makes the "
        "partitions that read it due: the teachers of the next windows whose warm-up holds those "
        "bars, the student, this and the next window's evaluation. A due partition waits while it "
        "or an input is in progress or due; it is requested unless its newest materialisation "
        "read the change. One with an input never materialised waits for that input's event. "
        "Reads only the events since its cursor and what is in progress."
    ),
)
def follow_upstream(context: SensorEvaluationContext, artifacts: ArtifactsResource) -> SensorResult:
    instance = context.instance
    after, oldest, state_key = _cursor(context.cursor)
    if after is None:  # the first tick: follow changes from now on, not the whole history
        latest = _latest_id(instance)
        return SensorResult(
            cursor=_save(artifacts.store(), latest, {}), skip_reason=f"following changes after event {latest}"
        )
    notes: list[str] = []
    pending = _load(artifacts.store(), state_key)
    if pending is None:  # state lost (artifacts moved, a corrupt file): re-read from its oldest change
        notes.append(f"the waiting state {state_key} was unreadable: changes re-read from event {oldest}")
        pending, after = {}, (oldest or after + 1) - 1
    events, read_to = _new_events(instance, after)
    windows = window_partitions.get_partition_keys()  # once a tick: it walks a calendar
    lineage = Lineage(context, windows)

    bad: dict[Item, str] = {}
    for event in events:
        asset, partition = event.asset_key.to_user_string(), event.partition_key
        try:
            children = lineage.children(asset, str(partition)) if partition else set()
        except Exception as exc:  # a malformed key reported by hand must not stop the sensor
            bad[(asset, str(partition))] = str(exc)
            continue
        for child in children:
            due = pending.setdefault(child, [event.storage_id, event.storage_id, {}])
            due[0], due[1] = max(due[0], event.storage_id), min(due[1], event.storage_id)
            _remember(due[2], event.run_id or "", event.timestamp)
    _note(notes, "changes not followed: partition not of this graph", bad)

    if pending:  # a symbol removed from the partitions meanwhile has nothing left to follow
        registered = set(instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))
        pending = {item: due for item, due in pending.items() if split_key(item[1])[0] in registered}
    in_flight = InFlight(context, windows) if pending else None
    waiting: dict[Item, str] = {}
    parents: dict[Item, list[Item]] = {}
    for item in pending:
        parents[item] = lineage.parents(item)
        for thing in (item, *parents[item]):
            if (who := in_flight.who(*thing)) is not None:
                waiting[item] = f"{'itself' if thing == item else f'{thing[0]} {thing[1]}'} in {who}"
                break
    candidates = {item: due for item, due in pending.items() if item not in waiting}
    newest = _newest(instance, [*candidates, *(p for item in candidates for p in parents[item])])
    answered = _answered(instance, candidates, newest)
    missing: dict[Item, str] = {}
    for item in candidates:
        # A teacher needs its own window's bars; earlier windows never stored are read from the
        # source (`bars_before`), so they hold nothing back.
        needed = [p for p in parents[item] if p[0] != "market_bars" or p[1] == item[1]]
        absent = next((p for p in needed if p not in newest), None)
        if item not in answered and absent is not None:
            missing[item] = f"needs {absent[0]} {absent[1]}, never materialised"
    unresolved = pending.keys() - answered - missing.keys()
    for item in candidates:  # an input due itself is computed first (its change follows then)
        if item in answered or item in missing:
            continue
        first = next((p for p in parents[item] if (_fold(p[0]), p[1]) in unresolved), None)
        if first is not None:
            waiting[item] = f"{first[0]} {first[1]} is due first"
    ready = {
        item: due
        for item, due in candidates.items()
        if item not in answered and item not in missing and item not in waiting
    }

    _note(notes, "waiting for an input never materialised", missing)
    _note(notes, "waiting for what is in progress or due first", waiting)
    digest = hashlib.sha256("\n".join(f"{a}:{p}:{d[0]}" for (a, p), d in sorted(ready.items())).encode())
    requests, already = _requests(context, ready, f"follow_upstream:{after}:{digest.hexdigest()[:16]}")
    if already:
        notes.append(already)
    for note in notes:  # also when something is requested (the skip reason is shown only otherwise)
        context.log.info(note)
    for request in requests:
        context.log.info(f"requesting {request.tags[REASON]}")
    skip = None
    if not requests:
        skip = "; ".join(notes) or f"no upstream changes to follow (events read up to {read_to})"
    remaining = {item: due for item, due in pending.items() if item in waiting}
    return SensorResult(
        run_requests=requests, cursor=_save(artifacts.store(), read_to, remaining), skip_reason=skip
    )
