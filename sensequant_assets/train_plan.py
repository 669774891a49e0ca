"""What `sensequant train` has to materialise, and why: the resume plan of headless training.

An asset partition is up to date when its newest event (a materialisation, or the observation of a
skip) was written by a `sensequant train` run whose recorded inputs are still the current ones:

- code: Dagster's `dagster/code_version` tag on the materialisation equals the asset's code version;
- configuration: the run's `sensequant/versions` tag holds the configuration hash of each step
  (`student.config_hash`; the student's is the configuration id the briefing judges), which
  Dagster's versions do not record;
- bars: the run's `sensequant/bars` tag holds, per symbol, the source's fingerprint of the window's
  bars and of every day the teacher reads before it (`bars_before`: the lookback windows of the
  configuration, `TeacherConfig.lookback_windows`, default 2, and the warm-up history before the
  earliest of them), taken before the run started, so bars that change during a run make the
  partition stale, never falsely fresh;
- lineage: no parent (the bars, the teacher, this window's labels, the previous window's student,
  and for the teacher the earlier windows' bars its lookback and warm-up read) was re-materialised
  after it, and none is about to be. The teacher reads those days from the stored `market_bars` of
  their windows where they exist, so stale stored ones are refreshed first, even before the range
  (`bars_only` plans), and a teacher whose stored earlier bars could not be refreshed does not run;
- attempts: no later attempt to materialise it failed or was interrupted (Dagster's planned event
  newer than its newest event).

Dagster's own data versions cannot carry this: a batched run gives all its partitions one data
version per asset. Partitions materialised by other runs (a UI backfill, a sensor) have no recorded
bars, so they count as stale.

The queries are per asset and per window batch, never per partition: the newest event, attempt and
skip of every partition of the batch come from `get_latest_storage_id_by_partition` and one fetch of
those records, and the runs they name from one `get_run_records`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    RunsFilter,
)

from sensequant_assets.assets.evaluation import EvaluationConfig
from sensequant_assets.assets.partition_context import SKIP_METADATA_KEY
from sensequant_assets.assets.student import StudentConfig, config_hash, model_configuration
from sensequant_assets.assets.teacher import TeacherConfig, teacher_configuration
from sensequant_assets.ml.features import HISTORY_DAYS
from sensequant_assets.ml.protocol import DEFAULT_LOOKBACK_WINDOWS
from sensequant_assets.partitions import (
    bars_before_windows,
    earlier_windows,
    make_key,
    previous_window,
    window_bounds,
)
from sensequant_assets.sources.base import BarSource

BARS_TAG = "sensequant/bars"
VERSIONS_TAG = "sensequant/versions"
CONFIG_ID_TAG = "sensequant/config_id"
FINGERPRINT_CHARS = 16
CHUNK = 500  # partitions (or runs) per query: well inside SQLite's limit on bound parameters


@dataclass(frozen=True)
class Step:
    """One step of a partition's training: the asset keys it materialises together."""

    name: str
    assets: tuple[str, ...]


STEPS = (
    Step("market_bars", ("market_bars",)),
    Step("teacher_model", ("teacher_model", "teacher_labels")),  # one multi-asset: both or neither
    Step("student_model", ("student_model",)),
    Step("student_evaluation", ("student_evaluation",)),
)
STEP = {step.name: step for step in STEPS}
ASSETS = tuple(asset for step in STEPS for asset in step.assets)


@dataclass(frozen=True)
class Expected:
    """What an up-to-date partition was trained with: code versions by asset, configuration by step,
    and the teacher's lookback (which earlier windows' bars it reads)."""

    code: Mapping[str, str | None]
    config: Mapping[str, str]
    lookback_windows: int = DEFAULT_LOOKBACK_WINDOWS

    @property
    def config_id(self) -> str:
        return self.config["student_model"]

    def tags(self) -> dict[str, str]:
        versions = {"code": dict(self.code), "config": dict(self.config)}
        return {VERSIONS_TAG: json.dumps(versions, sort_keys=True), CONFIG_ID_TAG: self.config_id}


def expected_versions(
    code: Mapping[str, str | None], run_config: Mapping[str, Any], horizon: int
) -> Expected:
    """The versions a run with `run_config` records: per step, the hash of the configuration it reads.

    The student's is the configuration id (`student.CONFIG_ID_KEY`), built by the functions the
    assets use; the teacher's covers its own fields and the horizon; the evaluation's its costs.
    """
    ops = run_config.get("ops", {})

    def op_config(name: str) -> dict[str, Any]:
        return dict(ops.get(name, {}).get("config", {}))

    teacher_config = TeacherConfig(**op_config("teacher"))
    teacher = teacher_configuration(teacher_config, horizon)
    student = StudentConfig(**op_config("student_model"))
    evaluation = EvaluationConfig(**op_config("student_evaluation"))
    config = {
        "teacher_model": config_hash(teacher),
        "student_model": config_hash(model_configuration(teacher, student)),
        "student_evaluation": config_hash(evaluation.model_dump()),
    }
    return Expected(code=dict(code), config=config, lookback_windows=teacher_config.lookback_windows)


# --- bars -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bars:
    """Fingerprints of a partition's inputs: the window's bars and the bars the teacher reads before
    it (its lookback windows and the warm-up history before the earliest of them)."""

    window: str | None  # None: the data does not cover the window yet
    history: str | None

    def tag(self) -> str:
        return f"{(self.window or '')[:FINGERPRINT_CHARS]}/{(self.history or '')[:FINGERPRINT_CHARS]}"


def bars_before(window: str, lookback: int) -> list[tuple[str, date, date]]:
    """(window key, first, last day) of every day a teacher with `lookback` reads before `window`,
    oldest first (`partitions.bars_before_windows`): the lookback windows whole (fewer for a
    symbol's first windows, cut at the first partition) and the `HISTORY_DAYS` of warm-up before the
    earliest. Contiguous, ending the day before the window starts."""
    return bars_before_windows(window, lookback, HISTORY_DAYS)


def bars_fingerprints(
    source: BarSource, symbol: str, windows: Sequence[str], lookback: int = DEFAULT_LOOKBACK_WINDOWS
) -> dict[str, Bars]:
    """Window key -> fingerprints of its bars and of every day before it that a teacher with
    `lookback` reads (`bars_before`), from the source's cheap change detection (listings and stats,
    or one read per file). `windows` must be partitions (keys of `window_partitions`).

    Raises the source's errors (an unknown symbol, a badly named or empty file) unchanged.
    """
    bounds = {w: window_bounds(w) for w in windows}
    own = source.window_fingerprints(symbol, list(bounds.values()))
    before = {
        w: (bars_before(w, lookback)[0][1], start - timedelta(days=1)) for w, (start, _) in bounds.items()
    }
    # Separate calls: the source keys a range by its first day, which the range before another
    # window may share (the lookback is cut at the first partition), and a range before a window may
    # start on the day another window starts.
    history: dict[tuple[date, date], str | None] = {}
    pending = sorted(set(before.values()))
    while pending:
        batch: dict[date, tuple[date, date]] = {}
        for span in pending:
            batch.setdefault(span[0], span)
        found = source.window_fingerprints(symbol, list(batch.values()))
        history.update({span: found[first] for first, span in batch.items()})
        pending = [span for span in pending if span not in history]
    return {w: Bars(own[start], history[before[w]]) for w, (start, _) in bounds.items()}


# --- what the instance holds ----------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """The newest materialisation of an asset partition, or the observation of its skip if newer."""

    storage_id: int
    run_id: str
    code_version: str | None  # None on a skip observation
    skipped: str | None  # the reason, when the event records a skip


class InstanceState:
    """Newest events, attempts and runs, fetched per asset for a batch of partitions at once."""

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance
        self._run_tags: dict[str, Mapping[str, str]] = {}
        self.queries = 0  # for the query-cost test

    def latest(self, asset: str, partitions: Iterable[str]) -> tuple[dict[str, Event], dict[str, int]]:
        """(newest event by partition, newest attempt's storage id by partition), a few queries per
        `CHUNK` partitions (a window's symbols, in practice), whatever their history."""
        wanted = sorted(set(partitions))
        events: dict[str, Event] = {}
        attempts: dict[str, int] = {}
        for i in range(0, len(wanted), CHUNK):  # never an empty set: that would mean every partition
            chunk_events, chunk_attempts = self._latest(AssetKey(asset), set(wanted[i : i + CHUNK]))
            events.update(chunk_events)
            attempts.update(chunk_attempts)
        return events, attempts

    def _latest(self, key: AssetKey, wanted: set[str]) -> tuple[dict[str, Event], dict[str, int]]:
        latest_id = self.instance.get_latest_storage_id_by_partition
        materialised = latest_id(key, DagsterEventType.ASSET_MATERIALIZATION, wanted)
        observed = latest_id(key, DagsterEventType.ASSET_OBSERVATION, wanted)
        attempted = latest_id(key, DagsterEventType.ASSET_MATERIALIZATION_PLANNED, wanted)
        self.queries += 3
        events: dict[str, Event] = {}
        if materialised:
            records = self.instance.fetch_materializations(
                AssetRecordsFilter(key, storage_ids=list(materialised.values())), limit=len(materialised)
            ).records
            self.queries += 1
            for record in records:
                event = record.asset_materialization
                skip = event.metadata.get(SKIP_METADATA_KEY)
                events[str(event.partition)] = Event(
                    record.storage_id,
                    record.run_id,
                    event.tags.get("dagster/code_version") if event.tags else None,
                    None if skip is None else str(skip.value),
                )
        # An observation newer than the materialisation: a run that skipped the partition (the only
        # observations of these assets are skips).
        newer = [i for p, i in observed.items() if p not in events or i > events[p].storage_id]
        if newer:
            records = self.instance.fetch_observations(
                AssetRecordsFilter(key, storage_ids=newer), limit=len(newer)
            ).records
            self.queries += 1
            for record in records:
                event = record.asset_observation
                skip = event.metadata.get(SKIP_METADATA_KEY)
                if skip is not None:
                    events[str(event.partition)] = Event(
                        record.storage_id, record.run_id, None, str(skip.value)
                    )
        return events, dict(attempted)

    def run_tags(self, run_ids: Iterable[str]) -> Mapping[str, Mapping[str, str]]:
        """Tags of the runs, one query per `CHUNK` runs not seen yet (tags never change)."""
        missing = sorted({r for r in run_ids if r not in self._run_tags})
        for i in range(0, len(missing), CHUNK):
            for record in self.instance.get_run_records(RunsFilter(run_ids=missing[i : i + CHUNK])):
                self._run_tags[record.dagster_run.run_id] = dict(record.dagster_run.tags)
            self.queries += 1
        for run_id in missing:
            self._run_tags.setdefault(run_id, {})  # a deleted run: nothing recorded
        return self._run_tags


# --- the plan -------------------------------------------------------------------------------

UPSTREAM = "upstream reruns"
# The teacher's reason when the bars it reads before its window changed (with a lookback; at
# lookback 0: "the warm-up bars before the window changed").
BEFORE_CHANGED = "the lookback and warm-up bars before the window changed"


@dataclass
class PartitionPlan:
    """Why each step of one partition runs (in step order); no entry: up to date or not runnable."""

    symbol: str
    window: str
    reasons: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    blocked: str | None = None  # why its teacher and what follows cannot run

    @property
    def key(self) -> str:
        return str(make_key(self.symbol, self.window))

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(step.name for step in STEPS if step.name in self.reasons)

    def why(self) -> str:
        """The reasons, each followed by the steps it applies to, e.g. `missing (market_bars, ...)`."""
        grouped: dict[str, list[str]] = {}
        for step, reason in self.reasons.items():
            grouped.setdefault(reason, []).append(step)
        return "; ".join(f"{reason} ({', '.join(steps)})" for reason, steps in grouped.items())


def plan_window(
    state: InstanceState,
    window: str,
    symbols: Sequence[str],
    bars: Mapping[str, Mapping[str, Bars]],
    expected: Expected,
    *,
    force: bool = False,
    done_runs: Collection[str] = (),
    planned: Mapping[str, Mapping[str, PartitionPlan]] | None = None,
    bars_only: bool = False,
) -> dict[str, PartitionPlan]:
    """The plan of `window` for `symbols` (whose window the data covers), from the instance's state.

    `bars` holds the fingerprints of this window and of the earlier windows its teacher reads (the
    lookback windows of `expected.lookback_windows` and those its warm-up history lies in).
    `force`: everything runs, but what `done_runs` (this command's runs) materialised.
    `planned`: the plans of earlier windows (window -> symbol -> plan) that run in the same command
    before this one: their bars and students rerun, so this window's teachers and evaluations
    follow. Without them, the instance's state of those partitions decides.
    `bars_only`: plan `market_bars` alone, and only where it is stored and stale (a window before
    the range that the lookback or warm-up of the range's teachers reads; where it is not stored,
    the teacher reads the source).
    """
    planned = planned or {}
    keys = {s: str(make_key(s, window)) for s in symbols}
    events: dict[str, dict[str, Event]] = {}
    attempts: dict[str, dict[str, int]] = {}
    for asset in ("market_bars",) if bars_only else ASSETS:
        events[asset], attempts[asset] = state.latest(asset, keys.values())
    previous = previous_window(window)
    previous_keys = {s: str(make_key(s, previous)) for s in symbols} if previous else {}
    history = (
        []
        if bars_only
        else [w for w, _, _ in bars_before(window, expected.lookback_windows) if w in bars_windows(bars)]
    )
    lookback = set(earlier_windows(window, expected.lookback_windows)) if history else set()
    history_keys = {(s, w): str(make_key(s, w)) for s in symbols for w in history}
    previous_students: dict[str, Event] = {}
    history_bars: dict[str, Event] = {}
    history_attempts: dict[str, int] = {}
    if not bars_only:
        previous_students, _ = state.latest("student_model", previous_keys.values())
        history_bars, history_attempts = state.latest("market_bars", history_keys.values())
    run_ids = {e.run_id for by_key in (*events.values(), history_bars) for e in by_key.values()}
    runs = state.run_tags(run_ids)

    plans = {}
    for symbol in symbols:
        key = keys[symbol]
        plan = PartitionPlan(symbol, window)
        plans[symbol] = plan
        if bars_only:
            event = events["market_bars"].get(key)
            if event is not None:
                attempt = attempts["market_bars"].get(key)
                reason = _own_reason(
                    "market_bars",
                    "market_bars",
                    symbol,
                    event,
                    attempt,
                    runs,
                    expected,
                    bars[symbol][window],
                    False,
                )
                if reason:
                    plan.reasons["market_bars"] = reason
            continue
        before = planned.get(previous or "", {}).get(symbol)
        previous_reruns = before is not None and "student_model" in before.reasons
        previous_student = previous_students.get(previous_keys.get(symbol, ""))
        warm_up = [
            (
                w,
                "lookback" if w in lookback else "warm-up",
                history_bars.get(history_keys[(symbol, w)]),
                history_attempts.get(history_keys[(symbol, w)]),
            )
            for w in history
        ]
        for step in STEPS:
            if step.name == "student_evaluation":
                blocked = _evaluation_blocked(previous, previous_student, previous_reruns)
                if blocked:
                    plan.notes.append(blocked)
                    continue
            own = None
            for asset in step.assets:
                event, attempt = events[asset].get(key), attempts[asset].get(key)
                forced = force and (event is None or event.run_id not in done_runs)
                now = bars[symbol][window]
                own = own or _own_reason(
                    asset, step.name, symbol, event, attempt, runs, expected, now, forced
                )
            reason = own or _upstream(step.name, plan, key, events, previous_student, previous_reruns)
            if step.name == "teacher_model":
                rerun, stale, newer = _warm_up(
                    symbol, warm_up, planned, runs, expected, bars, events["teacher_model"].get(key)
                )
                if stale and (reason or rerun or newer):
                    plan.blocked = stale
                    break
                reason = reason or rerun or newer
            if reason:
                plan.reasons[step.name] = reason
            elif (event := events[step.assets[0]].get(key)) is not None and event.skipped and not plan.notes:
                plan.notes.append(f"{step.name} skipped: {event.skipped}")
    return plans


def bars_windows(bars: Mapping[str, Mapping[str, Bars]]) -> set[str]:
    """The windows `bars` has fingerprints of (every symbol has the same)."""
    return set(next(iter(bars.values()), {}))


def _warm_up(
    symbol: str,
    warm_up: Sequence[tuple[str, str, Event | None, int | None]],
    planned: Mapping[str, Mapping[str, PartitionPlan]],
    runs: Mapping[str, Mapping[str, str]],
    expected: Expected,
    bars: Mapping[str, Mapping[str, Bars]],
    teacher: Event | None,
) -> tuple[str | None, str | None, str | None]:
    """The teacher's view of the `market_bars` of the earlier windows it reads, each with its role
    (`lookback` or `warm-up`; stored ones: the teacher reads the source for the others): (one reruns
    in this command, one is stored but stale and does not rerun, one was re-materialised after the
    teacher)."""
    rerun = stale = newer = None
    for window, role, event, attempt in warm_up:
        plan = planned.get(window, {}).get(symbol)
        if plan is not None and "market_bars" in plan.reasons:
            rerun = rerun or f"the {role}'s market_bars of {window} reruns"
            continue
        if event is None or event.skipped is not None:
            continue  # nothing stored: the teacher reads these days from the source
        why = _own_reason(
            "market_bars", "market_bars", symbol, event, attempt, runs, expected, bars[symbol][window], False
        )
        if why:
            stale = stale or f"the {role}'s market_bars of {window} are stale and were not refreshed ({why})"
        elif teacher is not None and event.storage_id > teacher.storage_id:
            newer = newer or f"the {role}'s market_bars of {window} were re-materialised after it"
    return rerun, stale, newer


def _evaluation_blocked(previous: str | None, student: Event | None, student_reruns: bool) -> str | None:
    """Why this window's evaluation cannot run (it scores the previous window's student), or None."""
    if previous is None:
        return "first window: no earlier student to evaluate"
    if not student_reruns and (student is None or student.skipped is not None):
        return f"not evaluated: the student of window {previous} is not trained"
    return None


# The step that materialises each parent asset.
_PARENT_STEP = {
    "market_bars": "market_bars",
    "teacher_model": "teacher_model",
    "teacher_labels": "teacher_model",
}


def _upstream(
    step: str,
    plan: PartitionPlan,
    key: str,
    events: Mapping[str, Mapping[str, Event]],
    previous_student: Event | None,
    previous_student_reruns: bool,
) -> str | None:
    """Why `step` follows its parents in this partition or the previous window's student: one reruns
    now, or one was re-materialised after it. (The earlier windows' bars the teacher reads: `_warm_up`.)"""
    same = {
        "market_bars": (),
        "teacher_model": ("market_bars",),
        "student_model": ("teacher_model", "teacher_labels"),
        "student_evaluation": ("teacher_labels",),
    }[step]
    if any(_PARENT_STEP[parent] in plan.reasons for parent in same):
        return UPSTREAM
    if step == "student_evaluation" and previous_student_reruns:
        return "the previous window's student_model reruns"
    mine = [events[asset].get(key) for asset in STEP[step].assets]
    oldest = min((e.storage_id for e in mine if e is not None), default=None)
    if oldest is None:
        return None
    parents = [(parent, events[parent].get(key)) for parent in same]
    if step == "student_evaluation":
        parents.append(("the previous window's student_model", previous_student))
    for parent, event in parents:
        if event is not None and event.storage_id > oldest:
            return f"{parent} was re-materialised after it"
    return None


def _own_reason(
    asset: str,
    step: str,
    symbol: str,
    event: Event | None,
    attempt: int | None,
    runs: Mapping[str, Mapping[str, str]],
    expected: Expected,
    now: Bars,
    force: bool,
) -> str | None:
    """Why `asset` of this partition must be materialised again on its own account, or None."""
    if force:
        return "forced (--force)"
    if event is None:
        return "failed or interrupted before it was materialised" if attempt else "missing"
    if attempt is not None and attempt > event.storage_id:
        return "its latest attempt failed or was interrupted"
    tags = runs.get(event.run_id, {})
    try:
        versions = json.loads(tags[VERSIONS_TAG])
        recorded_bars = json.loads(tags[BARS_TAG])
    except (KeyError, ValueError):
        return (
            f"materialised by run {event.run_id[:8]} outside `sensequant train`, which does not "
            "record the bars and configuration it used"
        )
    code = event.code_version if event.code_version is not None else versions["code"].get(asset)
    if code != expected.code.get(asset):
        return f"code version changed ({code} -> {expected.code.get(asset)})"
    if step in expected.config and versions["config"].get(step) != expected.config[step]:
        return f"configuration changed ({versions['config'].get(step)} -> {expected.config[step]})"
    if step in ("market_bars", "teacher_model"):
        window, _, history = str(recorded_bars.get(symbol, "")).partition("/")
        current_window, _, current_history = now.tag().partition("/")
        if window != current_window:
            return "the window's bars changed"
        if step == "teacher_model" and history != current_history:
            return (
                BEFORE_CHANGED if expected.lookback_windows else "the warm-up bars before the window changed"
            )
    return None
