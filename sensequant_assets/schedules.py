"""The schedule users turn on when they train by the calendar instead of by the sensors.

`train_latest_window` trains the newest complete window of every registered symbol with
`train_job`, a few runs per tick (one run per range of up to SENSEQUANT_MAX_PARTITIONS_PER_RUN
symbols, as a backfill would batch them), never one run per symbol. It is idempotent: symbols
whose student of that window is already materialised, whose run or backfill is in flight, or whose
bars do not cover the window yet are left out and named in the tick, so it can run often (its
default is the second day of each window, 06:00 IST). Off by default: the sensors already train a
window when its bars complete it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from dagster import (
    AssetsDefinition,
    AssetSelection,
    DagsterInvalidDefinitionError,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from sensequant_assets.assets.partition_context import BATCHED, MAX_PARTITIONS_PER_RUN, SKIP_METADATA_KEY
from sensequant_assets.jobs import train_job
from sensequant_assets.partitions import (
    SYMBOLS_PARTITIONS_NAME,
    make_key,
    window_bounds,
    window_partitions,
    window_start_months,
)
from sensequant_assets.resources import MarketDataResource
from sensequant_assets.sensors import RANGE_END, RANGE_START, REASON, TRIGGER, in_flight, newest_metadata
from sensequant_assets.settings import SettingsError, env
from sensequant_assets.sources.base import DataSourceError
from sensequant_assets.sources.symbols import key_symbol_problem

SCHEDULE_NAME = "train_latest_window"
CRON_VARIABLE = "SENSEQUANT_LATEST_WINDOW_CRON"


def _default_cron() -> str:
    """The second day of every window, 06:00: the bars of the window's last day are in by then."""
    return f"0 6 2 {window_start_months()} *"


def _listed(notes: list[str], most: int = 20) -> list[str]:
    """At most `most` notes, then how many more: a tick's reason is stored with every tick."""
    return notes[:most] + ([f"... and {len(notes) - most} more"] if len(notes) > most else [])


def latest_complete_window(today: date) -> str | None:
    """The newest window that ended before `today`."""
    done = [key for key in window_partitions.get_partition_keys() if window_bounds(key)[1] < today]
    return done[-1] if done else None


def symbol_ranges(symbols: Sequence[str], wanted: set[str], per_run: int) -> list[tuple[str, str]]:
    """Runs of consecutive `wanted` symbols (registration order, the order of Dagster's symbol
    ranges), each of at most `per_run` symbols (0: no limit), as (first, last)."""
    ranges: list[list[str]] = []
    current: list[str] = []
    for symbol in symbols:
        if symbol not in wanted or (per_run and len(current) == per_run):
            if current:
                ranges.append(current)
            current = [symbol] if symbol in wanted else []
        else:
            current.append(symbol)
    if current:
        ranges.append(current)
    return [(chunk[0], chunk[-1]) for chunk in ranges]


def _newest_window_and_symbols(context: ScheduleEvaluationContext) -> tuple[str, list[str]] | SkipReason:
    """The newest window complete at the tick and the registered symbols, or why there is nothing."""
    today = context.scheduled_execution_time.date()
    window = latest_complete_window(today)
    if window is None:
        return SkipReason(f"no window has ended before {today}")
    symbols = list(context.instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))
    if not symbols:
        return SkipReason("no symbols registered (SENSEQUANT_SYMBOLS, the universe file or the UI)")
    return window, symbols


def _train_latest_window(
    context: ScheduleEvaluationContext, market_data: MarketDataResource
) -> list[RunRequest] | SkipReason:
    found = _newest_window_and_symbols(context)
    if isinstance(found, SkipReason):
        return found
    window, symbols = found
    partitions = {symbol: str(make_key(symbol, window)) for symbol in symbols}
    # A batch records a skipped partition as materialised, with the reason in its metadata.
    newest = newest_metadata(context.instance, "student_model", partitions.values())
    trained = {p for p, meta in newest.items() if SKIP_METADATA_KEY not in meta}
    busy = in_flight(context.instance, [p for p in partitions.values() if p not in trained])
    start, end = window_bounds(window)
    wanted, notes = set(), []
    for symbol, partition in partitions.items():
        if partition in trained or partition in busy:
            continue
        if (problem := key_symbol_problem(symbol)) is not None:
            notes.append(problem)  # it would fail its range's run on every tick
            continue
        try:
            covered = market_data.source_for(symbol).window_fingerprints(symbol, [(start, end)])[start]
        except (DataSourceError, ValueError) as exc:
            notes.append(f"{symbol}: cannot read its bars: {exc}")
            continue
        if covered is None:
            notes.append(f"{symbol}: its bars do not cover window {window} yet")
            continue
        wanted.add(symbol)
    summary = f"window {window}: {len(trained)} of {len(symbols)} symbols already trained"
    summary += f", {len(busy)} in flight" if busy else ""
    for note in [summary, *_listed(notes), *_listed(list(busy.values()))]:
        context.log.info(note)
    if not wanted:
        return SkipReason("; ".join([f"nothing to train: {summary}", *_listed(notes)]))
    tags = {TRIGGER: SCHEDULE_NAME, REASON: f"the newest complete window, {window}"}
    stamp = context.scheduled_execution_time.isoformat()
    if not BATCHED:  # Dagster's one run per partition
        return [
            RunRequest(run_key=f"{stamp}:{partitions[s]}", partition_key=partitions[s], tags=tags)
            for s in symbols
            if s in wanted
        ]
    return [
        RunRequest(
            run_key=f"{stamp}:{first}..{last}|{window}",
            tags={
                **tags,
                RANGE_START: partitions[first],
                RANGE_END: partitions[last],
            },
        )
        for first, last in symbol_ranges(symbols, wanted, MAX_PARTITIONS_PER_RUN)
    ]


try:
    train_latest_window = schedule(
        name=SCHEDULE_NAME,
        job=train_job,
        cron_schedule=env(CRON_VARIABLE) or _default_cron(),
        execution_timezone="Asia/Kolkata",
        default_status=DefaultScheduleStatus.STOPPED,
        description=(
            "Trains the newest complete window of every registered symbol (bars, teacher, student, "
            "evaluation) in a few batched runs. Leaves out symbols already trained for that window, "
            "in flight, or whose bars do not cover it yet, and names them in the tick. Cron: "
            f"{CRON_VARIABLE} (default: 06:00 IST on the 2nd day of each window). Off by default; "
            "the sensors already train a window when its bars complete it."
        ),
    )(_train_latest_window)
except DagsterInvalidDefinitionError as exc:
    raise SettingsError(f"{CRON_VARIABLE}={env(CRON_VARIABLE)!r} is not a cron schedule: {exc}") from exc


FETCH_SCHEDULE_NAME = "fetch_new_bars"
FETCH_CRON_VARIABLE = "SENSEQUANT_FETCH_CRON"


def _fetch_new_bars(context: ScheduleEvaluationContext, asset: str) -> list[RunRequest] | SkipReason:
    """Every registered symbol's newest complete window of `asset`, through the newest day: the
    days of the window in progress (which has no partition yet) land in the cache as they come, and
    the sensors retrain what they complete or correct. The schedule itself never calls the source."""
    found = _newest_window_and_symbols(context)
    if isinstance(found, SkipReason):
        return found
    window, symbols = found
    notes = [problem for symbol in symbols if (problem := key_symbol_problem(symbol)) is not None]
    partitions = {s: str(make_key(s, window)) for s in symbols if key_symbol_problem(s) is None}
    busy = in_flight(context.instance, partitions.values())
    wanted = {symbol for symbol, partition in partitions.items() if partition not in busy}
    for note in [*_listed(notes), *_listed(list(busy.values()))]:
        context.log.info(note)
    if not wanted:
        return SkipReason("; ".join(["nothing to fetch", *_listed(notes), *_listed(list(busy.values()))]))
    tags = {TRIGGER: FETCH_SCHEDULE_NAME, REASON: f"the day's new bars (through window {window})"}
    run_config = {"ops": {asset: {"config": {"through_newest_day": True}}}}
    stamp = context.scheduled_execution_time.isoformat()
    if not BATCHED:
        return [
            RunRequest(
                run_key=f"{stamp}:{partitions[s]}",
                partition_key=partitions[s],
                tags=tags,
                run_config=run_config,
            )
            for s in symbols
            if s in wanted
        ]
    return [
        RunRequest(
            run_key=f"{stamp}:{first}..{last}|{window}",
            tags={**tags, RANGE_START: partitions[first], RANGE_END: partitions[last]},
            run_config=run_config,
        )
        for first, last in symbol_ranges(symbols, wanted, MAX_PARTITIONS_PER_RUN)
    ]


def fetch_schedules(ingestion: Sequence[AssetsDefinition]) -> list[ScheduleDefinition]:
    """`fetch_new_bars` for a source whose cache an asset fills (Breeze's `breeze_bars`); none for a
    source read directly. On by default: a user who chose such a source wants its new days."""
    if not ingestion:
        return []
    (key,) = [key for assets in ingestion for key in assets.keys]
    cron = env(FETCH_CRON_VARIABLE)
    try:
        return [
            schedule(
                name=FETCH_SCHEDULE_NAME,
                target=AssetSelection.assets(key),
                cron_schedule=cron,
                execution_timezone="Asia/Kolkata",
                default_status=DefaultScheduleStatus.RUNNING,
                description=(
                    f"Fetches the day's new bars into the cache: {key.to_user_string()} of every registered "
                    "symbol's newest complete window, through the newest complete day, in runs of up to "
                    "SENSEQUANT_MAX_PARTITIONS_PER_RUN symbols. The new_data sensor then retrains the "
                    f"windows the new days complete or correct. Cron: {FETCH_CRON_VARIABLE} (default: "
                    "19:00 IST on weekdays, after Breeze's end-of-day bars)."
                ),
            )(lambda context: _fetch_new_bars(context, key.to_user_string()))
        ]
    except DagsterInvalidDefinitionError as exc:
        raise SettingsError(f"{FETCH_CRON_VARIABLE}={cron!r} is not a cron schedule: {exc}") from exc
