"""What every partitioned asset needs from its context: its partitions, their windows, and skips.

A run covers one partition (a UI click, a sensor) or several (a batched backfill). Assets compute
per partition and hand `emit` a dict of results plus the reasons of the partitions they skipped:
one partition becomes a plain output (or no output, so downstream steps skip); several become
one dict output, which the IO manager writes partition by partition.

Each partition's metadata is attached to that partition's own materialisation event with
`context.add_asset_metadata(..., partition_key=...)`, so a batched run records the same numbers per
partition as a run of that partition alone (and the UI can plot them across partitions), and no
event grows with the size of the batch. In a batch only the evaluations get them (see `emit`),
without figures, tables or JSON (they are in the artifact files), and the output carries only
counts (written, skipped), which Dagster copies onto every partition's event.

Dagster records every partition of a batched run as materialised (it has no per-partition
outcome within one output, dagster-io/dagster#17836); skipped partitions get no files, their
reason is logged, recorded as an observation and attached to their own event, and downstream
steps skip them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from weakref import WeakKeyDictionary

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    BackfillPolicy,
    DagsterRunStatus,
    MarkdownMetadataValue,
    MetadataValue,
    Output,
    RunsFilter,
)

from sensequant_assets.assets.workers import compute_each, run_workers
from sensequant_assets.cpus import usable_cpus
from sensequant_assets.partitions import split_key, window_bounds
from sensequant_assets.settings import flag, number

SKIP_METADATA_KEY = "skipped"

# Backfills batch partitions into few runs (Dagster splits a two-dimensional backfill into one
# range per window, then into runs of at most SENSEQUANT_MAX_PARTITIONS_PER_RUN symbols, which
# bounds a run's memory: 500 symbols of a window are 5 runs; 0: a window's symbols in one run);
# SENSEQUANT_BATCH_BACKFILLS=0 restores Dagster's one run per partition and multiprocess executor,
# which the benchmark measures as the baseline.
BATCHED = flag("SENSEQUANT_BATCH_BACKFILLS")
MAX_PARTITIONS_PER_RUN = int(number("SENSEQUANT_MAX_PARTITIONS_PER_RUN", int, 0))
BACKFILL_POLICY = (
    (
        BackfillPolicy.multi_run(MAX_PARTITIONS_PER_RUN)
        if MAX_PARTITIONS_PER_RUN
        else BackfillPolicy.single_run()
    )
    if BATCHED
    else None
)
# Written by older versions only: every partition's numbers in one entry copied onto each event.
PER_PARTITION_KEY = "per_partition"


@dataclass(frozen=True)
class PartitionWindow:
    key: str
    symbol: str
    window_key: str
    start: date
    end: date

    @property
    def label(self) -> str:
        """The predecessor's window label, `SYMBOL_start_to_end`, used in messages."""
        return f"{self.symbol}_{self.start.isoformat()}_to_{self.end.isoformat()}"


def window_of(partition_key: str) -> PartitionWindow:
    symbol, window_key = split_key(partition_key)
    start, end = window_bounds(window_key)
    return PartitionWindow(str(partition_key), symbol, window_key, start, end)


# The partition keys of each step's context, listed once (see `run_partition_keys`).
_STEP_KEYS: WeakKeyDictionary[AssetExecutionContext, tuple[str, ...]] = WeakKeyDictionary()


def run_partition_keys(context: AssetExecutionContext) -> tuple[str, ...]:
    """The partition keys of the run (one for a single-partition run), as strings, listed once per
    step: Dagster expands the two-dimensional key range against the registered symbols on every
    `context.partition_keys` (about 10 ms a call at 30 x 20 partitions, more as the universe grows),
    and a step needs them 3-4 times (its windows, its outputs, its checks)."""
    keys = _STEP_KEYS.get(context)
    if keys is None:
        keys = _STEP_KEYS[context] = tuple(map(str, context.partition_keys))
    return keys


def partition_windows(context: AssetExecutionContext) -> list[PartitionWindow]:
    """The run's partitions in (symbol, window) order, so earlier windows come first."""
    return [window_of(k) for k in sorted(run_partition_keys(context))]


# How every partitioned input is loaded: a dict by partition key, without the partitions that
# were never materialised (or were skipped earlier in a batch); the asset then skips those.
BATCH_INPUT = {"allow_missing": True, "as_dict": True}


def by_key(values: Mapping[Any, Any] | None) -> dict[str, Any]:
    """A `BATCH_INPUT` input keyed by partition key strings."""
    return {str(k): v for k, v in (values or {}).items()}


def compute_partitions(
    context: AssetExecutionContext,
    what: str,
    task: Callable[[PartitionWindow], Any],
    missing_input: Callable[[PartitionWindow], str | None],
    skip: tuple[type[Exception], ...],
    threads_per_task: int = 1,
) -> tuple[dict[str, Any], dict[str, str]]:
    """`task` for every partition of the run whose inputs exist: (values, skip reasons) by key.

    `missing_input` names why a partition cannot start (None: it can); `skip` exceptions raised by
    the task become reasons too. Several partitions fan out onto idle cores (`step_workers`),
    with a progress line at every quarter, so a long backfill run shows how far it is without
    flooding the event log (each line is an event write).
    """
    windows = {pw.key: pw for pw in partition_windows(context)}
    skipped = {key: reason for key, pw in windows.items() if (reason := missing_input(pw)) is not None}
    todo = [key for key in windows if key not in skipped]
    workers = step_workers(context, len(todo), threads_per_task)
    values: dict[str, Any] = {}
    every = max(1, -(-len(todo) // 4))
    results = compute_each(lambda key: task(windows[key]), todo, skip, workers)
    for done, (key, value, reason) in enumerate(results, start=1):
        if reason is None:
            values[key] = value
        else:
            skipped[key] = reason
        if len(todo) > 1 and (done % every == 0 or done == len(todo)):
            context.log.info(f"{what}: {done}/{len(todo)} partitions done, {len(skipped)} skipped")
    return values, skipped


def step_workers(
    context: AssetExecutionContext, partitions: int, threads_per_task: int, unit: str = "partitions"
) -> int:
    """Worker processes for this step's `partitions` tasks (`unit` names them in the log): the cores
    no other run of the instance is using.

    Concurrent runs already keep the cores busy (two runs with two workers each ran 17% slower
    than with one), so a batch fans out only onto idle cores: the last run of a backfill, a
    backfill of a single window, the briefing once its evaluations have settled. A task that runs
    several threads itself (a teacher with `num_threads` > 1) counts that many cores. Capped by
    `SENSEQUANT_RUN_WORKERS`; a single task never forks.
    """
    cap = run_workers()
    if cap <= 1 or partitions <= 1:
        return 1
    active = context.instance.get_runs_count(
        RunsFilter(statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED])
    )
    others = max(0, active - 1)
    idle = (usable_cpus() - others) // max(1, threads_per_task)
    workers = max(1, min(cap, idle, partitions))
    context.log.info(
        f"{partitions} {unit} in {workers} process(es) ({others} other run(s) active, cap {cap})"
    )
    return workers


def skip_events(context: AssetExecutionContext, assets: Sequence[str], key: str, reason: str) -> Iterator:
    """The reason, logged and attached as an observation of each asset for that partition."""
    context.log.warning(f"skipped {key}: {reason}")
    for asset in assets:
        yield AssetObservation(asset_key=AssetKey(asset), partition=key, metadata={SKIP_METADATA_KEY: reason})


def emit(
    context: AssetExecutionContext,
    output_name: str,
    values: Mapping[str, Any],
    skipped: Mapping[str, str],
    metadata: Callable[[Any], Mapping[str, Any]],
    skip_assets: Sequence[str],
    per_partition: bool = False,
) -> Iterator:
    """Yield skip observations and the output: the value for one partition, a dict for several.

    `metadata(value)` goes onto that partition's own event (`add_asset_metadata`), never onto the
    output, whose metadata Dagster copies onto every partition's event of a batch. In a batch it is
    attached only with `per_partition=True` (the evaluations, which the briefing, the decay sensor
    and the UI's plots read), cut to `compact` (the numbers; no figures, tables or JSON): each
    `add_asset_metadata` call re-lists the run's partitions to validate its key (about 11 ms at
    200 partitions), which for all five assets was 7-8 % of a batched run's CPU. A skipped
    partition (which Dagster still records as materialised) gets its reason on its event, and the
    output carries counts.
    `skip_assets` get an observation per skipped partition and the reason is logged; a
    multi-asset's later outputs pass none, as the first one has recorded the skips.
    """
    if skip_assets:
        for key, reason in sorted(skipped.items()):
            yield from skip_events(context, skip_assets, key, reason)
    if not values:
        return  # nothing materialised: with `output_required=False` downstream steps skip
    asset_key = context.asset_key_for_output(output_name)
    if len(run_partition_keys(context)) == 1:
        ((key, value),) = values.items()
        context.add_asset_metadata(dict(metadata(value)), asset_key=asset_key, partition_key=key)
        yield Output(value, output_name=output_name)
        return
    for key, value in sorted(values.items()) if per_partition else ():
        context.add_asset_metadata(compact(metadata(value)), asset_key=asset_key, partition_key=key)
    for key, reason in sorted(skipped.items()):
        context.add_asset_metadata({SKIP_METADATA_KEY: reason}, asset_key=asset_key, partition_key=key)
    counts: dict[str, Any] = {"partitions_written": len(values)}
    if skipped:
        counts["partitions_skipped"] = len(skipped)
    yield Output(dict(values), output_name=output_name, metadata=counts)


def compact(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a partition's metadata that a batched run attaches: numbers and short text.

    Markdown (inline figures, tables), JSON and long text are left to single-partition runs and the
    artifact files: at 50-65 KiB per inline figure they would dwarf the numbers in a backfill.
    """
    out = {}
    for name, value in meta.items():
        if isinstance(value, MarkdownMetadataValue):
            continue
        raw = value.value if isinstance(value, MetadataValue) else value
        if raw is None or isinstance(raw, bool | int | float) or (isinstance(raw, str) and len(raw) <= 200):
            out[name] = value
    return out


def partition_metadata(materialization: Any) -> dict[str, Any]:
    """The metadata of one partition's materialisation (plain values), from a single or a batched run.

    Events written before the metadata was attached per partition carry every partition's numbers
    in one `per_partition` JSON entry; this partition's entry of it is returned for those.
    """
    meta = materialization.metadata
    batch = meta.get(PER_PARTITION_KEY)
    if batch is not None:
        return dict(batch.value.get(str(materialization.partition), {}))
    return {name: value.value for name, value in meta.items()}


def metadata_value(value: object) -> MetadataValue:
    """A metric for the UI: numbers as floats (plottable), everything else (None included) as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return MetadataValue.float(float(value))
    return MetadataValue.text("n/a" if value is None else str(value))
