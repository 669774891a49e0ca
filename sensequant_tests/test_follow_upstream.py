"""`follow_upstream`: the partitioned assets follow a changed input in every window, once, and only
when nothing computing an input (or the asset itself) is in progress; its cursor stays small.

Materialisations are reported into the event log, not computed: the sensor reads only events,
runs and backfills.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterEventType,
    DagsterRunStatus,
    build_sensor_context,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.events import DagsterEvent, StepMaterializationData
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.test_utils import instance_for_test
from dagster._core.utils import make_new_run_id

from sensequant_assets.definitions import defs
from sensequant_assets.follow import FOLLOWERS, TEACHER, follow_upstream
from sensequant_assets.io_manager import ArtifactsResource
from sensequant_assets.partitions import SYMBOLS_PARTITIONS_NAME as SYMBOLS
from sensequant_assets.sensors import RANGE_END, RANGE_START

WINDOWS = [f"{y}-{m}" for y in range(2022, 2026) for m in ("01-01", "07-01")] + ["2026-01-01"]
UPSTREAM = ("market_bars", "teacher_model", "teacher_labels", "student_model", "student_evaluation")
TRAINING = UPSTREAM[:4]


@pytest.fixture
def instance(tmp_path: Path, monkeypatch):
    """A SQLite instance (the in-memory one does not filter backfills by tag) and artifacts."""
    monkeypatch.setenv("SENSEQUANT_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    with instance_for_test() as inst:
        yield inst


def _tick(instance, cursor):
    artifacts = ArtifactsResource(location=os.environ["SENSEQUANT_ARTIFACTS_DIR"])
    with build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources={"artifacts": artifacts}
    ) as context:
        result = follow_upstream(context)
    return result


def _report(instance, asset: str, partition: str, run: DagsterRun | None = None) -> None:
    """A materialisation in the event log, by `run` (stored first) or runless (e.g. the UI's report)."""
    if run is None:
        instance.report_runless_asset_event(AssetMaterialization(asset, partition=partition))
        return
    if instance.get_run_by_id(run.run_id) is None:
        instance.add_run(run)
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name=run.job_name,
        event_specific_data=StepMaterializationData(AssetMaterialization(asset, partition=partition)),
    )
    instance.report_dagster_event(event, run.run_id)


def _trained(instance, *symbols: str) -> None:
    for symbol in symbols:
        for asset in UPSTREAM:
            for window in WINDOWS:
                _report(instance, asset, f"{symbol}|{window}")


def _run(assets, status=DagsterRunStatus.STARTED, **tags: str) -> DagsterRun:
    return DagsterRun(
        job_name="__ASSET_JOB",
        run_id=make_new_run_id(),
        status=status,
        asset_selection=frozenset(AssetKey(a) for a in assets),
        tags=tags,
    )


def _requested(result) -> dict[str, set[str]]:
    """partition -> assets, over the run requests of a tick."""
    out: dict[str, set[str]] = {}
    for request in result.run_requests:
        if request.asset_graph_subset is not None:  # a backfill
            for key in request.asset_graph_subset.iterate_asset_partitions():
                out.setdefault(key.partition_key, set()).add(key.asset_key.to_user_string())
        else:
            assets = {k.to_user_string() for k in request.asset_selection}
            out.setdefault(request.partition_key, set()).update(assets)
    return out


def _backfill(instance, backfill_id: str, keys, tags: dict | None = None) -> PartitionBackfill:
    """A requested backfill of `keys` (asset partitions, or a subset), as the daemon stores one."""
    subset = keys if isinstance(keys, AssetGraphSubset) else None
    backfill = PartitionBackfill.from_asset_graph_subset(
        backfill_id=backfill_id,
        backfill_timestamp=time.time(),
        tags=tags or {},
        dynamic_partitions_store=instance,
        asset_graph_subset=subset
        or AssetGraphSubset.from_asset_partition_set(keys, defs.resolve_asset_graph()),
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill


def _baseline(instance):
    first = _tick(instance, None)
    assert first.run_requests == [] and "following changes after event" in first.skip_reason.skip_message
    quiet = _tick(instance, first.cursor)
    assert quiet.run_requests == []
    return quiet.cursor


def test_new_bars_make_exactly_the_teachers_that_read_them_due(instance) -> None:
    instance.add_dynamic_partitions(SYMBOLS, ["AAA", "BBB"])
    _trained(instance, "AAA", "BBB")
    cursor = _baseline(instance)  # the history before the first tick is not replayed
    # The automation's run of every symbol's page is in progress: a range of symbols, not of windows.
    instance.add_run(_run({"symbol_briefing"}, **{RANGE_START: "AAA", RANGE_END: "BBB"}))
    _report(instance, "market_bars", "AAA|2023-07-01")
    after = _tick(instance, cursor)
    # Every teacher whose market_bars input holds the window (k..k+4: warm-up and the longest
    # lookback), whatever lookback it was trained with; not 2026-01-01, nor BBB's.
    expected = {f"AAA|{w}" for w in ("2023-07-01", "2024-01-01", "2024-07-01", "2025-01-01", "2025-07-01")}
    assert _requested(after) == {p: {"teacher_model", "teacher_labels"} for p in expected}
    assert all(r.run_key and r.tags["sensequant/trigger"] == "follow_upstream" for r in after.run_requests)
    assert _tick(instance, after.cursor).run_requests == []  # requested once
    assert len(after.cursor) < 64


def test_a_retrained_teacher_is_followed_by_its_student_and_both_evaluations(instance) -> None:
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    _trained(instance, "AAA")
    cursor = _baseline(instance)
    _report(instance, "teacher_labels", "AAA|2024-01-01")
    _report(instance, "teacher_model", "AAA|2024-01-01")
    first = _tick(instance, cursor)
    assert _requested(first) == {"AAA|2024-01-01": {"student_model", "student_evaluation"}}
    _report(instance, "student_model", "AAA|2024-01-01")  # the student's run completes...
    second = _tick(instance, first.cursor)
    # ...so the next window's evaluation, which scores this student, follows (this window's
    # evaluation scores the previous window's student: it was requested with the student).
    assert _requested(second) == {"AAA|2024-07-01": {"student_evaluation"}}


def test_what_the_changing_run_computes_itself_is_not_requested(instance) -> None:
    instance.add_dynamic_partitions(SYMBOLS, ["AAA", "BBB", "CCC"])
    _trained(instance, "AAA", "BBB", "CCC")
    cursor = _baseline(instance)
    # A batched backfill run over window 2024-01-01 and symbols AAA..BBB, training the four assets.
    batch = _run(
        ("market_bars", "teacher_model", "teacher_labels", "student_model"),
        status=DagsterRunStatus.SUCCESS,
        **{
            "dagster/asset_partition_range_start": "AAA|2024-01-01",
            "dagster/asset_partition_range_end": "BBB|2024-01-01",
        },
    )
    for asset in ("market_bars", "teacher_model", "teacher_labels", "student_model"):
        for symbol in ("AAA", "BBB"):
            _report(instance, asset, f"{symbol}|2024-01-01", batch)
    result = _tick(instance, cursor)
    wanted = {}
    for symbol in ("AAA", "BBB"):
        for window in ("2024-07-01", "2025-01-01", "2025-07-01", "2026-01-01"):  # later teachers
            wanted[f"{symbol}|{window}"] = {"teacher_model", "teacher_labels"}
        wanted[f"{symbol}|2024-01-01"] = {"student_evaluation"}  # not in the run's selection
    # 2024-07-01's evaluation scores the new student but waits for its teacher, due too: it
    # follows that teacher's change instead of running twice.
    assert set(_requested(result)) == set(wanted)  # 10 partitions: one backfill
    [request] = result.run_requests
    subset = request.asset_graph_subset
    got = {(k.asset_key.to_user_string(), k.partition_key) for k in subset.iterate_asset_partitions()}
    assert got == {(a, p) for p, assets in wanted.items() for a in assets}
    assert not any(p.startswith("CCC") for _, p in got)


def test_a_child_computed_before_the_change_is_due_again(instance) -> None:
    """A backfill's runs overlap: window k+1's teacher may train before window k's bars land (or
    after its run started, having read the old bars). It is answered only by a materialisation
    from a run that started after the change, or from the run that made it."""
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    _trained(instance, "AAA")
    cursor = _baseline(instance)
    early = _run(("teacher_model", "teacher_labels"), status=DagsterRunStatus.STARTED)
    instance.add_run(early)  # created (started) before the bars change
    bars = _run(("market_bars",), status=DagsterRunStatus.SUCCESS)
    _report(instance, "market_bars", "AAA|2024-01-01", bars)
    for asset in ("teacher_model", "teacher_labels"):
        _report(instance, asset, "AAA|2024-07-01", early)  # it read the old bars
    instance.report_run_failed(early)  # finished (its status only ends its being in flight)
    late = _run(("teacher_model", "teacher_labels"), status=DagsterRunStatus.SUCCESS)
    for window in ("2024-01-01", "2025-01-01", "2025-07-01"):
        for asset in ("teacher_model", "teacher_labels"):
            _report(instance, asset, f"AAA|{window}", late)  # read the new bars
    result = _tick(instance, cursor)
    requested = _requested(result)
    assert requested["AAA|2024-07-01"] == {"teacher_model", "teacher_labels"}
    # The teachers trained after the change are answered; so is nothing else in its window.
    assert not {"AAA|2024-01-01", "AAA|2025-01-01", "AAA|2025-07-01"} & {
        p for p, assets in requested.items() if "teacher_model" in assets
    }


def test_inputs_in_progress_hold_the_request_until_they_finish(instance) -> None:
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    _trained(instance, "AAA")
    cursor = _baseline(instance)
    # A run is retraining the teacher of 2024-07-01 when the student of 2024-01-01 changes.
    busy = _run(("teacher_model", "teacher_labels"), **{"dagster/partition": "AAA|2024-07-01"})
    instance.add_run(busy)
    _report(instance, "student_model", "AAA|2024-01-01")
    held = _tick(instance, cursor)
    assert held.run_requests == []  # 2024-07-01's evaluation scores that student: it waits
    again = _tick(instance, held.cursor)
    assert again.run_requests == []
    assert f"teacher_labels AAA|2024-07-01 in run {busy.run_id}" in again.skip_reason.skip_message
    instance.report_run_failed(busy)  # it fails without materialising: the evaluation is still due
    released = _tick(instance, again.cursor)
    assert _requested(released) == {"AAA|2024-07-01": {"student_evaluation"}}


def test_a_partition_computed_meanwhile_is_not_requested_again(instance) -> None:
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    _trained(instance, "AAA")
    cursor = _baseline(instance)
    busy = _run(("teacher_labels", "teacher_model"), **{"dagster/partition": "AAA|2024-07-01"})
    instance.add_run(busy)
    _report(instance, "student_model", "AAA|2024-01-01")
    held = _tick(instance, cursor)
    assert "AAA|2024-07-01" not in _requested(held)
    _report(instance, "student_evaluation", "AAA|2024-07-01")  # someone re-evaluates it meanwhile
    instance.report_run_failed(busy)
    after = _tick(instance, held.cursor)
    assert after.run_requests == []


def test_an_input_never_materialised_holds_nothing_back_and_says_so(instance) -> None:
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    for asset in UPSTREAM:
        _report(instance, asset, "AAA|2024-01-01")  # one window trained, nothing after
    cursor = _baseline(instance)
    _report(instance, "student_model", "AAA|2024-01-01")
    result = _tick(instance, cursor)
    # 2024-07-01's evaluation scores this student, but its labels do not exist yet: when they
    # are materialised, that event makes the evaluation due.
    assert result.run_requests == []
    assert "needs teacher_labels AAA|2024-07-01" in result.skip_reason.skip_message
    assert _tick(instance, result.cursor).run_requests == []


def test_a_requested_backfill_holds_what_it_will_compute(instance) -> None:
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    _trained(instance, "AAA")
    cursor = _baseline(instance)
    keys = {AssetKeyPartitionKey(AssetKey(a), "AAA|2024-07-01") for a in ("teacher_model", "teacher_labels")}
    backfill = _backfill(instance, "train1", keys)
    _report(instance, "student_model", "AAA|2024-01-01")
    held = _tick(instance, cursor)
    assert "AAA|2024-07-01" not in _requested(held)
    waiting = _tick(instance, held.cursor)
    assert "backfill train1" in waiting.skip_reason.skip_message
    instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS))
    assert _requested(_tick(instance, waiting.cursor)) == {"AAA|2024-07-01": {"student_evaluation"}}


def test_a_tick_repeated_from_the_same_cursor_finds_its_backfill(instance) -> None:
    symbols = [f"S{i:02d}" for i in range(12)]
    instance.add_dynamic_partitions(SYMBOLS, symbols)
    _trained(instance, *symbols)
    cursor = _baseline(instance)
    for symbol in symbols:
        _report(instance, "student_model", f"{symbol}|2025-07-01")  # the next window's evaluation
    first = _tick(instance, cursor)
    [request] = first.run_requests
    assert request.asset_graph_subset is not None
    # The daemon submits the backfill, then dies before committing the cursor.
    backfill = _backfill(instance, "follow1", request.asset_graph_subset, tags=request.tags)
    repeated = _tick(instance, cursor)
    assert repeated.run_requests == []
    assert "backfill follow1" in repeated.skip_reason.skip_message  # in progress
    instance.update_backfill(backfill.with_status(BulkActionStatus.FAILED))
    failed = _tick(instance, cursor)  # and after it failed: still not requested twice
    assert failed.run_requests == []
    assert "already requested as backfill follow1" in failed.skip_reason.skip_message


def test_the_cursor_stays_small_whatever_waits(instance) -> None:
    symbols = [f"S{i:03d}" for i in range(200)]
    instance.add_dynamic_partitions(SYMBOLS, symbols)
    cursor = _baseline(instance)
    # A backfill will train every window of 200 symbols; their students are changing one by one.
    keys = {
        AssetKeyPartitionKey(AssetKey(a), f"{s}|{w}") for a in FOLLOWERS for s in symbols for w in WINDOWS
    }
    _backfill(instance, "big", keys)
    for symbol in symbols:
        _report(instance, "market_bars", f"{symbol}|2022-01-01")
    result = _tick(instance, cursor)
    assert result.run_requests == []
    assert "waiting for what is in progress" in result.skip_reason.skip_message
    assert len(result.cursor) < 64  # the 1,000 waiting partitions live in the artifact store


def test_a_removed_symbol_has_nothing_left_to_follow(instance) -> None:
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    _trained(instance, "AAA")
    cursor = _baseline(instance)
    busy = _run(("teacher_model", "teacher_labels"), **{"dagster/partition": "AAA|2024-07-01"})
    instance.add_run(busy)
    _report(instance, "student_model", "AAA|2024-01-01")
    held = _tick(instance, cursor)
    assert held.run_requests == []  # the evaluation of 2024-07-01 waits for the busy run
    instance.report_run_failed(busy)
    instance.delete_dynamic_partition(SYMBOLS, "AAA")
    after = _tick(instance, held.cursor)
    assert after.run_requests == [] and after.cursor.endswith(":-")


def test_a_batched_run_that_read_every_change_is_not_followed_twice(instance) -> None:
    """At scale a backfill's run of window k starts after window k-1's bars landed, then writes
    window k's bars and teachers: its teachers read both changes, so nothing is requested."""
    instance.add_dynamic_partitions(SYMBOLS, ["AAA", "BBB"])
    _trained(instance, "AAA", "BBB")
    cursor = _baseline(instance)
    ranged = {RANGE_START: "AAA|{w}", RANGE_END: "BBB|{w}"}
    earlier = _run(
        TRAINING, status=DagsterRunStatus.SUCCESS, **{k: v.format(w="2023-07-01") for k, v in ranged.items()}
    )
    for asset in TRAINING:
        for symbol in ("AAA", "BBB"):
            _report(instance, asset, f"{symbol}|2023-07-01", earlier)
    later = _run(
        TRAINING, status=DagsterRunStatus.SUCCESS, **{k: v.format(w="2024-01-01") for k, v in ranged.items()}
    )
    for asset in TRAINING:
        for symbol in ("AAA", "BBB"):
            _report(instance, asset, f"{symbol}|2024-01-01", later)
    requested = _requested(_tick(instance, cursor))
    assert not any(p.endswith(("2023-07-01", "2024-01-01")) and TEACHER in a for p, a in requested.items())
    assert requested["AAA|2024-07-01"] == {"teacher_model", "teacher_labels"}  # bars it never read


def test_a_run_that_failed_before_the_child_leaves_it_due(instance) -> None:
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    _trained(instance, "AAA")
    cursor = _baseline(instance)
    run = _run(TRAINING, **{"dagster/partition": "AAA|2024-01-01"})  # started
    _report(instance, "market_bars", "AAA|2024-01-01", run)
    first = _tick(instance, cursor)
    assert "AAA|2024-01-01" not in _requested(first)  # its own run computes it
    instance.report_run_failed(run)  # ...but fails before the teacher step
    assert TEACHER in _requested(_tick(instance, first.cursor))["AAA|2024-01-01"]


def test_a_train_job_run_holds_what_it_computes(instance) -> None:
    """Runs of a job (the schedule's, model_decay's) record no asset selection: the job's assets."""
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    _trained(instance, "AAA")
    cursor = _baseline(instance)
    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def("train_job"), tags={"dagster/partition": "AAA|2025-07-01"}
    )
    assert run.asset_selection is None
    instance.report_dagster_event(
        DagsterEvent(DagsterEventType.RUN_START.value, job_name="train_job"), run.run_id
    )
    _report(instance, "market_bars", "AAA|2025-07-01", instance.get_run_by_id(run.run_id))
    held = _tick(instance, cursor)
    assert held.run_requests == []  # 2025-07-01's teacher is the run's; 2026-01-01's reads its bars
    assert "2 waiting for what is in progress" in held.skip_reason.skip_message
    assert f"in run {run.run_id}" in held.skip_reason.skip_message
    instance.report_run_failed(instance.get_run_by_id(run.run_id))
    after = _requested(_tick(instance, held.cursor))
    assert after["AAA|2025-07-01"] == after["AAA|2026-01-01"] == {"teacher_model", "teacher_labels"}


@pytest.mark.parametrize("key", [None, "AAA|junk", "AAA", "2024-01-01|AAA"])
def test_an_event_of_no_partition_of_this_graph_is_named_and_skipped(instance, key) -> None:
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    _trained(instance, "AAA")
    cursor = _baseline(instance)
    instance.report_runless_asset_event(AssetMaterialization("market_bars", partition=key))
    _report(instance, "market_bars", "AAA|2025-07-01")
    result = _tick(instance, cursor)  # the sensor goes on: the good event is followed
    assert _requested(result)["AAA|2026-01-01"] == {"teacher_model", "teacher_labels"}


def test_an_evaluation_that_failed_before_its_student_landed_follows_the_student(instance) -> None:
    """In one backfill window k+1's evaluation may run (and fail) before window k's student exists."""
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    cursor = _baseline(instance)
    k1 = _run((*TRAINING, "student_evaluation"), status=DagsterRunStatus.FAILURE)
    for asset in TRAINING:
        _report(instance, asset, "AAA|2024-07-01", k1)  # its evaluation failed: no student before it
    k0 = _run((*TRAINING, "student_evaluation"), status=DagsterRunStatus.SUCCESS)
    for asset in TRAINING:
        _report(instance, asset, "AAA|2024-01-01", k0)
    first = _tick(instance, cursor)
    # Its teacher read window k's bars as warm-up (from the source) before they were stored: it
    # is retrained first (a teacher needs only its own window's bars: the earlier windows, never
    # stored, are read from the source)...
    assert _requested(first)["AAA|2024-07-01"] == {"teacher_model", "teacher_labels"}
    retrain = _run(("teacher_model", "teacher_labels"), status=DagsterRunStatus.SUCCESS)
    for asset in ("teacher_model", "teacher_labels"):
        _report(instance, asset, "AAA|2024-07-01", retrain)
    # ...then the evaluation follows (with the student of the retrained teacher).
    then = _requested(_tick(instance, first.cursor))
    assert then["AAA|2024-07-01"] == {"student_model", "student_evaluation"}


def test_a_teacher_of_a_symbol_listed_later_follows_its_own_bars(instance) -> None:
    """Bars stored from 2024-01-01 only (a symbol backfilled from a later window): a correction of
    2024-07-01 retrains that window's teacher and the later ones, whose earlier windows come from
    the source."""
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    for asset in UPSTREAM:
        for window in ("2024-01-01", "2024-07-01", "2025-01-01", "2025-07-01", "2026-01-01"):
            _report(instance, asset, f"AAA|{window}")
    cursor = _baseline(instance)
    _report(
        instance, "market_bars", "AAA|2024-07-01", _run(("market_bars",), status=DagsterRunStatus.SUCCESS)
    )
    requested = _requested(_tick(instance, cursor))
    for window in ("2024-07-01", "2025-01-01", "2025-07-01", "2026-01-01"):
        assert requested[f"AAA|{window}"] == {"teacher_model", "teacher_labels"}


def test_a_lost_waiting_state_is_rebuilt_from_the_events(instance) -> None:
    instance.add_dynamic_partitions(SYMBOLS, ["AAA"])
    _trained(instance, "AAA")
    cursor = _baseline(instance)
    busy = _run(("teacher_model", "teacher_labels"), **{"dagster/partition": "AAA|2024-07-01"})
    instance.add_run(busy)
    _report(instance, "student_model", "AAA|2024-01-01")
    held = _tick(instance, cursor)
    assert held.run_requests == [] and not held.cursor.endswith(":-")
    for state in (Path(os.environ["SENSEQUANT_ARTIFACTS_DIR"]) / ".state").glob("follow_upstream-*"):
        state.write_bytes(b"garbage")  # a corrupt (or missing) state file
    instance.report_run_failed(busy)
    rebuilt = _tick(instance, held.cursor)
    assert _requested(rebuilt) == {"AAA|2024-07-01": {"student_evaluation"}}
