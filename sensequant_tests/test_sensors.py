"""Sensors on a test instance: the universe, new or corrected bars, and decay of promoted models."""

from __future__ import annotations

import itertools
import json
import os
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterRun,
    DagsterRunStatus,
    SensorResult,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.utils import make_new_run_id

from sensequant_assets import registry, sensors
from sensequant_assets.assets.bars import market_bars
from sensequant_assets.definitions import defs
from sensequant_assets.io_manager import ArtifactsResource, PartitionDirIOManager
from sensequant_assets.jobs import PARTITION_ASSETS
from sensequant_assets.partitions import previous_window
from sensequant_assets.resources import MarketDataResource
from sensequant_assets.sensors import (
    BACKFILL_AT,
    MAX_ATTEMPTS,
    SWEEP_SECONDS,
    decode_cursor,
    due_for_sweep,
    encode_cursor,
    in_flight,
    model_decay,
    new_data,
    symbol_universe,
)
from sensequant_tests.daily_csv import write_daily
from sensequant_tests.pipeline_helpers import promote_toy_model


@pytest.fixture(autouse=True)
def _artifacts(monkeypatch, tmp_path: Path) -> None:
    """new_data keeps its state in the artifact store; decay reads the registry there."""
    monkeypatch.setenv("SENSEQUANT_ARTIFACTS_DIR", str(tmp_path / "artifacts"))


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


def _artifacts_resource() -> ArtifactsResource:
    """The store the deployment's sensors receive, at the test's SENSEQUANT_ARTIFACTS_DIR."""
    return ArtifactsResource(location=os.environ["SENSEQUANT_ARTIFACTS_DIR"])


def _tick(sensor, instance, cursor=None, since: float | None = None, **resources) -> SensorResult:
    """One evaluation; `since`: when the previous tick was (None: the sensor's first tick)."""
    resources.setdefault("artifacts", _artifacts_resource())
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=resources)
    context._last_tick_completion_time = since  # the daemon sets it; build_sensor_context cannot
    return sensor(context)


# --- universe ----------------------------------------------------------------------------------


def test_universe_registers_then_backfills_the_history_of_new_symbols(instance, monkeypatch) -> None:
    monkeypatch.setenv("SENSEQUANT_SYMBOLS", "RELIANCE, m&m ,BAJAJ-AUTO")
    first = _tick(symbol_universe, instance)
    [request] = first.dynamic_partitions_requests
    assert list(request.partition_keys) == ["RELIANCE", "M&M", "BAJAJ-AUTO"]
    assert first.run_requests == []  # partitions do not exist yet: the backfill waits a tick
    instance.add_dynamic_partitions("symbols", list(request.partition_keys))

    second = _tick(symbol_universe, instance, first.cursor)
    # The daemon's own validation of the tick (it refuses backfill requests the sensor does not target).
    context = build_sensor_context(
        instance=instance,
        cursor=first.cursor,
        definitions=defs,
        resources={"artifacts": _artifacts_resource()},
    )
    assert symbol_universe.evaluate_tick(context).run_requests
    [backfill] = second.run_requests
    subset = backfill.asset_graph_subset
    assert backfill.tags["sensequant/trigger"] == "symbol_universe"
    keys = {(k.asset_key.to_user_string(), k.partition_key) for k in subset.iterate_asset_partitions()}
    windows = defs.resolve_job_def("train_job").partitions_def.get_partition_keys(
        dynamic_partitions_store=instance
    )
    assert len(keys) == 5 * len(windows)  # 5 partitioned assets x 3 symbols x every window
    assert {asset for asset, _ in keys} == {
        "market_bars", "teacher_model", "teacher_labels", "student_model", "student_evaluation"
    }  # fmt: skip
    assert {p.split("|")[0] for _, p in keys} == {"RELIANCE", "M&M", "BAJAJ-AUTO"}

    third = _tick(symbol_universe, instance, second.cursor)
    assert third.run_requests == [] and "all 3 symbols" in third.skip_reason.skip_message


def test_universe_file_with_comments_and_no_backfill(instance, monkeypatch, tmp_path: Path) -> None:
    universe = tmp_path / "universe.txt"
    universe.write_text("# NIFTY sample\nTCS\n\nINFY  # IT\n")
    monkeypatch.setenv("SENSEQUANT_UNIVERSE_FILE", str(universe))
    monkeypatch.setenv("SENSEQUANT_BACKFILL_NEW_SYMBOLS", "0")
    first = _tick(symbol_universe, instance)
    assert list(first.dynamic_partitions_requests[0].partition_keys) == ["TCS", "INFY"]
    instance.add_dynamic_partitions("symbols", ["TCS", "INFY"])
    assert _tick(symbol_universe, instance, first.cursor).run_requests == []


def test_universe_names_bad_symbols(instance, monkeypatch) -> None:
    monkeypatch.setenv("SENSEQUANT_SYMBOLS", "RELIANCE,A|B,X/Y")
    bad = _tick(symbol_universe, instance)
    assert "'A|B'" in bad.skip_message and "'X/Y'" in bad.skip_message


def _backfilled_symbols(result: SensorResult) -> set[str]:
    """The symbols whose history the tick's backfill request covers (none: empty)."""
    return {
        k.partition_key.split("|")[0]
        for request in result.run_requests
        for k in request.asset_graph_subset.iterate_asset_partitions()
    }


def test_symbols_registered_outside_the_universe_get_their_history_once(instance, monkeypatch) -> None:
    """A symbol added in the UI ('Add partition') or with `sensequant symbols add` is backfilled once,
    on the next tick, with one query of the registry per tick whatever the number of symbols."""
    monkeypatch.setenv("SENSEQUANT_SYMBOLS", "RELIANCE")
    instance.add_dynamic_partitions("symbols", ["RELIANCE", "TCS"])  # before the sensor's first tick
    queries = []
    real = instance.get_dynamic_partitions
    monkeypatch.setattr(instance, "get_dynamic_partitions", lambda name: queries.append(name) or real(name))
    first = _tick(symbol_universe, instance)
    assert first.run_requests == []  # what was registered before the first tick is taken as it is
    assert "taking the 2 symbols registered before this tick" in first.skip_reason.skip_message

    instance.add_dynamic_partitions("symbols", ["WIPRO", "M&M"])  # the UI's "Add partition"
    second = _tick(symbol_universe, instance, first.cursor)
    assert _backfilled_symbols(second) == {"WIPRO", "M&M"}
    [backfill] = second.run_requests
    assert backfill.tags["sensequant/trigger"] == "symbol_universe"
    assert "WIPRO, M&M" in backfill.tags["sensequant/reason"]
    context = build_sensor_context(
        instance=instance,
        cursor=first.cursor,
        definitions=defs,
        resources={"artifacts": _artifacts_resource()},
    )
    assert symbol_universe.evaluate_tick(context).run_requests  # the daemon accepts the request

    third = _tick(symbol_universe, instance, second.cursor)  # not again, however many ticks
    assert third.run_requests == [] and _tick(symbol_universe, instance, third.cursor).run_requests == []
    assert len(second.cursor) < 40  # the cursor names the state; the symbols are in the artifact store
    assert queries == ["symbols"] * 5  # one query per tick (the daemon's evaluate_tick included)

    # Removed and registered again: a new symbol again. The others stay done.
    instance.delete_dynamic_partition("symbols", "WIPRO")
    fourth = _tick(symbol_universe, instance, third.cursor)
    instance.add_dynamic_partitions("symbols", ["WIPRO"])
    assert _backfilled_symbols(_tick(symbol_universe, instance, fourth.cursor)) == {"WIPRO"}


def test_universe_without_a_writable_store_registers_and_waits(instance, monkeypatch, tmp_path: Path) -> None:
    """An artifact store that cannot hold the state: symbols are still registered, no history is
    requested (it would be requested again every tick) and the cursor stays, so it is asked later."""
    monkeypatch.setenv("SENSEQUANT_SYMBOLS", "RELIANCE")
    first = _tick(symbol_universe, instance)
    instance.add_dynamic_partitions("symbols", ["RELIANCE"])
    second = _tick(symbol_universe, instance, first.cursor)
    instance.add_dynamic_partitions("symbols", ["WIPRO"])  # the UI's "Add partition"
    monkeypatch.setenv("SENSEQUANT_SYMBOLS", "RELIANCE,TCS")
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("SENSEQUANT_ARTIFACTS_DIR", str(blocked))
    stuck = _tick(symbol_universe, instance, second.cursor)
    assert stuck.run_requests == [] and stuck.cursor == second.cursor
    assert [list(r.partition_keys) for r in stuck.dynamic_partitions_requests] == [["TCS"]]
    assert "cannot keep this sensor's state" in stuck.skip_reason.skip_message
    monkeypatch.setenv("SENSEQUANT_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    instance.add_dynamic_partitions("symbols", ["TCS"])
    assert _backfilled_symbols(_tick(symbol_universe, instance, stuck.cursor)) == {"WIPRO", "TCS"}


def test_a_symbol_the_ui_registered_badly_is_named_not_backfilled(instance, monkeypatch) -> None:
    """The UI's "Add partition" accepts any text: the sensor backfills the valid symbols only and
    names the others once."""
    monkeypatch.setenv("SENSEQUANT_SYMBOLS", "RELIANCE")
    instance.add_dynamic_partitions("symbols", ["RELIANCE"])
    first = _tick(symbol_universe, instance)
    instance.add_dynamic_partitions("symbols", ["wipro", "A..B"])
    second = _tick(symbol_universe, instance, first.cursor)
    assert second.run_requests == []
    message = second.skip_reason.skip_message
    assert "no history backfill for 'wipro': 'wipro' is not written as 'WIPRO'; remove it" in message
    assert "no history backfill for 'A..B'" in message
    instance.add_dynamic_partitions("symbols", ["TCS"])
    third = _tick(symbol_universe, instance, second.cursor)
    assert _backfilled_symbols(third) == {"TCS"}
    quiet = _tick(symbol_universe, instance, third.cursor).skip_reason.skip_message
    assert quiet == "all 1 symbols of SENSEQUANT_SYMBOLS are registered"  # named once, not every tick


def test_universe_upgrades_the_earlier_cursor_without_backfilling_everything(instance, monkeypatch) -> None:
    """The earlier version's cursor listed the symbols it still had to backfill: those get theirs,
    the rest of the registry (backfilled before, or deliberately not) is left alone."""
    monkeypatch.setenv("SENSEQUANT_SYMBOLS", "RELIANCE,TCS,INFY")
    instance.add_dynamic_partitions("symbols", ["RELIANCE", "TCS", "INFY"])
    old_cursor = json.dumps({"pending_backfill": ["INFY"]})
    upgraded = _tick(symbol_universe, instance, old_cursor)
    assert _backfilled_symbols(upgraded) == {"INFY"}
    assert _tick(symbol_universe, instance, upgraded.cursor).run_requests == []


def test_universe_without_backfill_never_backfills_what_it_saw(instance, monkeypatch) -> None:
    monkeypatch.setenv("SENSEQUANT_SYMBOLS", "RELIANCE")
    monkeypatch.setenv("SENSEQUANT_BACKFILL_NEW_SYMBOLS", "0")
    first = _tick(symbol_universe, instance)
    instance.add_dynamic_partitions("symbols", ["RELIANCE", "WIPRO"])
    second = _tick(symbol_universe, instance, first.cursor)
    assert second.run_requests == []
    assert "no history for RELIANCE, WIPRO" in second.skip_reason.skip_message
    monkeypatch.setenv("SENSEQUANT_BACKFILL_NEW_SYMBOLS", "1")  # switched on later: only new ones
    instance.add_dynamic_partitions("symbols", ["TCS"])
    assert _backfilled_symbols(_tick(symbol_universe, instance, second.cursor)) == {"TCS"}


# --- new data ----------------------------------------------------------------------------------


@pytest.fixture
def csv_world(instance, tmp_path: Path):
    """RELIANCE with daily files through the first window (2022-01-01..06-30), registered."""
    data = tmp_path / "historical"
    write_daily(data, "RELIANCE", date(2021, 6, 1), date(2022, 6, 30))
    instance.add_dynamic_partitions("symbols", ["RELIANCE"])
    market = MarketDataResource(data_source="csv", data_dir=str(data))
    baseline = _tick(new_data, instance, market_data=market)
    assert baseline.run_requests == []
    assert "baseline recorded for RELIANCE" in baseline.skip_reason.skip_message
    return data, market, baseline.cursor


def test_no_change_requests_nothing(instance, csv_world) -> None:
    _, market, cursor = csv_world
    again = _tick(new_data, instance, cursor, market_data=market)
    assert again.run_requests == []
    assert "no new or corrected bars" in again.skip_reason.skip_message
    # Dagster copies the cursor into every tick row: it names the stored state, nothing more.
    assert again.cursor == cursor and len(again.cursor) < 32


def test_the_cursor_stays_small_at_index_scale() -> None:
    """500 symbols x 20 windows of distinct fingerprints fit in 64 KiB and round-trip exactly."""
    rng = np.random.default_rng(0)
    windows = [f"{2015 + i // 2}-{'01' if i % 2 == 0 else '07'}-01" for i in range(20)]
    tokens = {f"SYM{i:03d}": rng.bytes(6).hex() for i in range(500)}
    seen = {
        symbol: {w: (None if (i + j) % 97 == 0 else rng.bytes(3).hex()) for j, w in enumerate(windows)}
        for i, symbol in enumerate(tokens)
    }
    text = encode_cursor(tokens, seen)
    assert len(text.encode()) <= 64 * 1024
    assert decode_cursor(text) == (tokens, seen)


def test_a_cursor_of_the_previous_format_is_read_without_false_corrections() -> None:
    old = json.dumps(
        {
            "tokens": {"TCS": "ab" * 32},
            "windows": {"TCS": {"2022-01-01": "0123456789abcdef", "2022-07-01": None}},
        }
    )
    tokens, seen = decode_cursor(old)
    assert tokens == {}  # another kind of token: the first tick re-compares the fingerprints
    assert seen == {"TCS": {"2022-01-01": "012345", "2022-07-01": None}}


def test_bars_completing_a_window_request_exactly_that_partition(instance, csv_world) -> None:
    data, market, cursor = csv_world
    write_daily(data, "RELIANCE", date(2022, 7, 1), date(2022, 9, 30))  # not complete yet
    partial = _tick(new_data, instance, cursor, market_data=market)
    assert partial.run_requests == []
    write_daily(data, "RELIANCE", date(2022, 10, 1), date(2022, 12, 30))  # completes 2022-07-01
    done = _tick(new_data, instance, partial.cursor, market_data=market)
    [request] = done.run_requests
    assert request.partition_key == "RELIANCE|2022-07-01"
    assert request.tags["sensequant/trigger"] == "new_data"
    assert "window completed" in request.tags["sensequant/reason"]
    assert request.run_key.startswith("new_data:RELIANCE|2022-07-01:")
    # The same tick evaluated again (e.g. after a crash, with the old cursor) asks with the same key.
    retry = _tick(new_data, instance, partial.cursor, market_data=market)
    assert [r.run_key for r in retry.run_requests] == [request.run_key]
    assert _tick(new_data, instance, done.cursor, market_data=market).run_requests == []


def test_corrected_bars_request_only_the_affected_window(instance, csv_world) -> None:
    data, market, cursor = csv_world
    write_daily(data, "RELIANCE", date(2022, 3, 14), date(2022, 3, 14), bump=1.05)  # a correction
    result = _tick(new_data, instance, cursor, market_data=market)
    [request] = result.run_requests
    assert request.partition_key == "RELIANCE|2022-01-01"
    assert "bars corrected" in request.tags["sensequant/reason"]


def test_a_correction_reverted_and_made_again_is_retrained_each_time(instance, csv_world) -> None:
    """The run key held only the fingerprint: bars corrected, reverted (a sync that restores the
    file and its time), then corrected again the same way asked for a run under the first
    correction's key, which Dagster starts only once, so the last correction was never trained.
    The key now holds the generation of the state the tick started from."""
    data, market, cursor = csv_world
    day = data / "RELIANCE" / "1day" / "2022-03-14.csv"
    original, original_ns = day.read_text(), day.stat().st_mtime_ns
    corrected = original.replace("1000\n", "1001\n")
    keys = []
    for n, (text, mtime_ns) in enumerate(
        [(corrected, original_ns + 10**9), (original, original_ns), (corrected, original_ns + 10**9)]
    ):
        day.write_text(text)
        os.utime(day, ns=(mtime_ns, mtime_ns))
        os.utime(day.parent, ns=(original_ns + n + 1, original_ns + n + 1))  # a new listing token
        result = _tick(new_data, instance, cursor, since=1_700_000_000.0 + 60 * n, market_data=market)
        # A tick that failed after its runs were requested keeps the cursor; the next one, from the
        # same cursor (and a later previous-tick time), must ask under the same key: no second run.
        again = _tick(new_data, instance, cursor, since=1_700_000_030.0 + 60 * n, market_data=market)
        assert [r.run_key for r in again.run_requests] == [r.run_key for r in result.run_requests]
        cursor = result.cursor
        [request] = result.run_requests
        assert request.partition_key == "RELIANCE|2022-01-01"
        keys.append(request.run_key)
    assert keys[0].split(":")[2] == keys[2].split(":")[2]  # the same fingerprint, twice
    assert len(set(keys)) == 3, keys


def test_in_place_edits_are_found_by_the_sweep_not_the_quick_token(instance, csv_world, monkeypatch) -> None:
    """One stat per symbol per tick: an edit in place (same file, new bytes) waits for the sweep."""
    data, market, cursor = csv_world
    day = data / "RELIANCE" / "1day" / "2022-03-14.csv"
    day.write_text(day.read_text().replace("1000\n", "1001\n"))  # in place: the directory is untouched
    monkeypatch.setattr(sensors, "due_for_sweep", lambda symbol, since, now: False)
    assert _tick(new_data, instance, cursor, since=time.time() - 1, market_data=market).run_requests == []
    monkeypatch.setattr(sensors, "due_for_sweep", lambda symbol, since, now: True)
    [request] = _tick(new_data, instance, cursor, since=time.time() - 1, market_data=market).run_requests
    assert request.partition_key == "RELIANCE|2022-01-01"
    assert "bars corrected" in request.tags["sensequant/reason"]


def test_a_new_window_partition_compares_every_symbol_at_once(instance, csv_world, monkeypatch) -> None:
    """When the calendar adds a window, every symbol is compared on that tick (one backfill)."""
    data, market, cursor = csv_world
    day = data / "RELIANCE" / "1day" / "2022-03-14.csv"
    day.write_text(day.read_text().replace("1000\n", "1001\n"))  # seen only by a comparison
    monkeypatch.setattr(sensors, "due_for_sweep", lambda symbol, since, now: False)
    assert _tick(new_data, instance, cursor, since=time.time() - 1, market_data=market).run_requests == []
    tokens, seen = sensors._load_state(_artifacts_resource().store(), cursor)
    newest = max(seen["RELIANCE"])
    older = sensors._save_state(
        _artifacts_resource().store(),
        tokens,
        {s: {k: f for k, f in w.items() if k != newest} for s, w in seen.items()},
    )
    [request] = _tick(new_data, instance, older, since=time.time() - 1, market_data=market).run_requests
    assert request.partition_key == "RELIANCE|2022-01-01"


def _bars_read(instance, market: MarketDataResource, tmp_path: Path, partition: str) -> str:
    """Materialise market_bars of `partition` (a training run reading the bars); its run id."""
    result = materialize(
        [market_bars],
        partition_key=partition,
        instance=instance,
        resources={
            "market_data": market,
            "artifacts_io_manager": PartitionDirIOManager.at(tmp_path / "artifacts"),
        },
    )
    assert result.success
    return result.run_id


def test_a_change_a_training_run_already_read_is_not_requested_again(instance, tmp_path: Path) -> None:
    """A training run that fetches (breeze_bars, here files written directly) completes its own
    window and adds warm-up days to earlier ones before its market_bars reads them: new_data then
    requested that window again. A window is requested only when its newest market_bars did not
    read the change; one a run in progress computes is judged once the run is done."""
    data = tmp_path / "historical"
    write_daily(data, "RELIANCE", date(2021, 6, 1), date(2022, 9, 30))  # 2022-07-01 not complete
    instance.add_dynamic_partitions("symbols", ["RELIANCE"])
    market = MarketDataResource(data_source="csv", data_dir=str(data))
    cursor = _tick(new_data, instance, market_data=market).cursor  # the baseline
    # RELIANCE|2022-01-01 was trained before the fetch (reported here: materialise costs seconds).
    instance.report_runless_asset_event(AssetMaterialization("market_bars", partition="RELIANCE|2022-01-01"))

    # A run of RELIANCE|2022-07-01 starts and fetches: the window completes, a day of 2022-01-01 is
    # corrected; new_data ticks while the run is still going.
    run = DagsterRun(
        job_name="train_job",
        run_id=make_new_run_id(),
        status=DagsterRunStatus.STARTED,
        tags={"dagster/partition": "RELIANCE|2022-07-01"},
    )
    instance.add_run(run)
    write_daily(data, "RELIANCE", date(2022, 10, 1), date(2022, 12, 30))
    write_daily(data, "RELIANCE", date(2022, 3, 14), date(2022, 3, 14), bump=1.05)
    during = _tick(new_data, instance, cursor, market_data=market)
    [corrected] = during.run_requests  # read by no training since: requested
    assert corrected.partition_key == "RELIANCE|2022-01-01"
    assert "bars corrected" in corrected.tags["sensequant/reason"]
    # RELIANCE|2022-07-01 is the run's: not requested, it keeps its previous state until judged.
    assert (
        sensors._load_state(_artifacts_resource().store(), during.cursor)[1]["RELIANCE"]["2022-07-01"] is None
    )

    # The run's market_bars reads the bars, the run ends: its window is not requested again.
    read_by = _bars_read(instance, market, tmp_path, "RELIANCE|2022-07-01")
    instance.delete_run(run.run_id)
    after = _tick(new_data, instance, during.cursor, market_data=market)
    assert after.run_requests == []
    assert f"RELIANCE|2022-07-01: window completed, already read by run {read_by}" in (
        after.skip_reason.skip_message
    )
    # A correction after that read is requested.
    write_daily(data, "RELIANCE", date(2022, 11, 14), date(2022, 11, 14), bump=1.05)
    [again] = _tick(new_data, instance, after.cursor, market_data=market).run_requests
    assert again.partition_key == "RELIANCE|2022-07-01"
    assert "bars corrected" in again.tags["sensequant/reason"]


def test_the_sweep_visits_every_symbol_once_per_period() -> None:
    symbols = [f"SYM{i:03d}" for i in range(300)]
    assert all(due_for_sweep(s, None, 1000.0) for s in symbols)  # first tick: everything
    late = sum(due_for_sweep(s, 1000.0, 1000.0 + 5 * SWEEP_SECONDS) for s in symbols)
    assert 0 < late <= 0.1 * len(symbols) + 10  # a late tick stays cheap
    visits = dict.fromkeys(symbols, 0)
    ticks = [1000.0 + 0.7 * k for k in range(int(3 * SWEEP_SECONDS / 0.7) + 1)]  # uneven spacing
    for since, now in itertools.pairwise(ticks):
        for s in symbols:
            visits[s] += due_for_sweep(s, since, now)
    assert set(visits.values()) <= {2, 3}  # three periods: each symbol 2 or 3 times, never skipped
    per_tick = [sum(due_for_sweep(s, a, b) for s in symbols) for a, b in itertools.pairwise(ticks)]
    assert max(per_tick) <= 3 * 300 * 0.7 / SWEEP_SECONDS + 5  # spread out, not all on one tick


def test_a_window_completed_across_the_index_is_one_backfill(instance, tmp_path: Path) -> None:
    data = tmp_path / "historical"
    symbols = [f"S{i:02d}" for i in range(BACKFILL_AT)]
    for symbol in symbols:
        write_daily(data, symbol, date(2021, 12, 1), date(2022, 6, 30))
    instance.add_dynamic_partitions("symbols", symbols)
    market = MarketDataResource(data_source="csv", data_dir=str(data))
    cursor = _tick(new_data, instance, market_data=market).cursor  # baselines
    for symbol in symbols:
        write_daily(data, symbol, date(2022, 7, 1), date(2022, 12, 30))  # completes 2022-07-01
    [backfill] = _tick(new_data, instance, cursor, market_data=market).run_requests
    # The daemon's own validation accepts it (a sensor may only backfill assets it targets).
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        resources={"market_data": market, "artifacts": _artifacts_resource()},
    )
    assert new_data.evaluate_tick(context).run_requests
    keys = {
        (k.asset_key.to_user_string(), k.partition_key)
        for k in backfill.asset_graph_subset.iterate_asset_partitions()
    }
    assert {p for _, p in keys} == {f"{s}|2022-07-01" for s in symbols}
    assert len(keys) == 5 * BACKFILL_AT  # the five partitioned assets of each
    assert backfill.tags["sensequant/trigger"] == "new_data"
    assert "window completed" in backfill.tags["sensequant/reason"]
    # A backfill request has no run key. The daemon submitted it, then the tick failed (its cursor
    # not saved): the next tick, from the same cursor, finds it instead of requesting it again.
    submitted = PartitionBackfill.from_asset_graph_subset(
        backfill_id="newdata2",
        backfill_timestamp=time.time(),
        tags=backfill.tags,
        dynamic_partitions_store=instance,
        asset_graph_subset=backfill.asset_graph_subset,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(submitted)
    repeated = _tick(new_data, instance, cursor, since=time.time() - 5, market_data=market)
    assert repeated.run_requests == []  # in progress: it computes those windows
    assert "S00|2022-07-01: window completed; backfill newdata2 computes its bars" in (
        repeated.skip_reason.skip_message
    )
    # Done without reading them (failed): the same tick finds its request by the backfill's tag.
    instance.update_backfill(submitted.with_status(BulkActionStatus.FAILED))
    repeated = _tick(new_data, instance, cursor, since=time.time() - 5, market_data=market)
    assert repeated.run_requests == []
    assert "already requested as backfill newdata2" in repeated.skip_reason.skip_message


def test_the_synthetic_source_polls_quietly(instance) -> None:
    """Its token is readable text, not hex: the cursor must still pack it (it failed every tick)."""
    instance.add_dynamic_partitions("symbols", ["RELIANCE", "TCS"])
    market = MarketDataResource(data_source="synthetic")
    first = _tick(new_data, instance, market_data=market)
    assert "baseline recorded for RELIANCE, TCS" in first.skip_reason.skip_message
    again = _tick(new_data, instance, first.cursor, market_data=market)
    assert again.run_requests == [] and again.cursor == first.cursor


def test_bad_files_become_a_skip_reason(instance, csv_world) -> None:
    data, market, cursor = csv_world
    (data / "RELIANCE" / "1day" / "notes.csv").write_text("hello\n")
    result = _tick(new_data, instance, cursor, market_data=market)
    assert result.run_requests == []
    assert "RELIANCE" in result.skip_reason.skip_message
    assert "notes.csv" in result.skip_reason.skip_message


# --- decay -------------------------------------------------------------------------------------


def _evaluated(instance, key: str, auc: float) -> None:
    """An evaluation of window k, which scores the student of window k-1 (as the asset records)."""
    symbol, window = key.split("|")
    model = f"{symbol}|{previous_window(window)}"
    instance.report_runless_asset_event(
        AssetMaterialization(
            asset_key="student_evaluation", partition=key, metadata={"auc": auc, "model_partition": model}
        )
    )


@pytest.fixture
def decayed(instance, monkeypatch, tmp_path: Path) -> Path:
    """TCS promoted from 2023-01-01 and below the gate on the two windows since; INFY recovered."""
    monkeypatch.setenv("SENSEQUANT_ARTIFACTS_DIR", str(tmp_path))
    monkeypatch.setenv("SENSEQUANT_DECAY_MIN_AUC", "0.5")
    monkeypatch.setenv("SENSEQUANT_DECAY_WINDOWS", "2")
    instance.add_dynamic_partitions("symbols", ["TCS", "INFY"])
    promote_toy_model(tmp_path, "TCS|2023-01-01")
    promote_toy_model(tmp_path, "INFY|2023-01-01")
    for window, auc in (("2023-01-01", 0.61), ("2023-07-01", 0.44), ("2024-01-01", 0.47)):
        _evaluated(instance, f"TCS|{window}", auc)
    for window, auc in (("2023-07-01", 0.45), ("2024-01-01", 0.58)):
        _evaluated(instance, f"INFY|{window}", auc)
    return tmp_path


MARKET = MarketDataResource(data_source="synthetic")


def test_decay_demotes_once_per_verdict(instance, decayed: Path) -> None:
    [request] = _tick(model_decay, instance, market_data=MARKET).run_requests
    assert request.job_name == "demote_job"
    assert request.tags["sensequant/trigger"] == "model_decay"
    reason = request.tags["sensequant/reason"]
    assert "0.470 (student TCS|2023-07-01)" in reason and "0.440 (student TCS|2023-01-01)" in reason
    config = request.run_config["ops"]["demote_model"]["config"]
    assert config["expected"] == "TCS|2023-01-01" and config["after_window"] == "2024-01-01"
    assert config["expected_promoted_at"] == registry.current(decayed, "TCS").promoted_at
    # The run key names the promotion and the newest window judged, not the evaluation event:
    # re-evaluating the same window (a new storage id, what retrained forever before) asks nothing new.
    _evaluated(instance, "TCS|2024-01-01", 0.46)
    [again] = _tick(model_decay, instance, market_data=MARKET).run_requests
    assert again.run_key == request.run_key
    # An evaluation that recovers ends the alarm.
    _evaluated(instance, "TCS|2024-01-01", 0.66)
    assert _tick(model_decay, instance, market_data=MARKET).run_requests == []


def test_decay_reads_the_evaluations_of_every_production_model_in_a_fixed_number_of_queries(
    instance, decayed: Path, monkeypatch
) -> None:
    """At index scale a tick made a query per window per production model (3.3 s at 500 models):
    now one storage-id query and one fetch for all of them, whatever their number."""
    more = [f"SYM{i:02d}" for i in range(20)]
    instance.add_dynamic_partitions("symbols", more)
    for symbol in more:
        promote_toy_model(decayed, f"{symbol}|2023-01-01")
        for window in ("2023-07-01", "2024-01-01"):
            _evaluated(instance, f"{symbol}|{window}", 0.55)
    calls = {"fetch_materializations": 0, "get_latest_storage_id_by_partition": 0}
    for name in calls:
        original = getattr(instance, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(instance, name, counted)
    [request] = _tick(model_decay, instance, market_data=MARKET).run_requests
    assert request.run_config["ops"]["demote_model"]["config"]["symbol"] == "TCS"  # the only decayed one
    assert calls == {"fetch_materializations": 1, "get_latest_storage_id_by_partition": 1}


def test_a_fresh_model_is_not_demoted_for_its_predecessors_scores(instance, decayed: Path) -> None:
    promote_toy_model(decayed, "TCS|2024-01-01")  # the newest student: nothing evaluated since
    result = _tick(model_decay, instance, market_data=MARKET)
    assert result.run_requests == []
    assert "2 production models within the gate" in result.skip_reason.skip_message


def test_a_failed_demotion_is_tried_again_then_given_up(instance, decayed: Path) -> None:
    [first] = _tick(model_decay, instance, market_data=MARKET).run_requests
    keys = [first.run_key]
    for _ in range(MAX_ATTEMPTS):
        failed = DagsterRun(
            job_name="demote_job",
            run_id=make_new_run_id(),
            status=DagsterRunStatus.FAILURE,
            tags={"dagster/run_key": keys[-1]},
        )
        instance.add_run(failed)
        result = _tick(model_decay, instance, market_data=MARKET)
        keys += [r.run_key for r in result.run_requests]
    assert keys[1:] == [f"{first.run_key}:attempt{n}" for n in range(2, MAX_ATTEMPTS + 1)]
    assert f"{MAX_ATTEMPTS} attempts failed" in result.skip_reason.skip_message


def _demoted_tcs(
    instance, monkeypatch, tmp_path: Path, symbols: list[str], bars_until: date
) -> MarketDataResource:
    """TCS's production model of 2023-01-01 demoted after window 2023-07-01; csv bars until `bars_until`."""
    data, artifacts = tmp_path / "bars", tmp_path / "models"
    monkeypatch.setenv("SENSEQUANT_ARTIFACTS_DIR", str(artifacts))
    instance.add_dynamic_partitions("symbols", symbols)
    promote_toy_model(artifacts, "TCS|2023-01-01")
    registry.demote(
        artifacts, "TCS", expected="TCS|2023-01-01", reason="decayed", evidence={"after_window": "2023-07-01"}
    )
    write_daily(data, "TCS", date(2022, 6, 1), bars_until)
    return MarketDataResource(data_source="csv", data_dir=str(data))


def test_after_a_demotion_the_newer_window_is_retrained_once(instance, monkeypatch, tmp_path: Path) -> None:
    market = _demoted_tcs(
        instance, monkeypatch, tmp_path, ["TCS"], date(2023, 12, 15)
    )  # 2024-01 not complete
    data = tmp_path / "bars"
    waiting = _tick(model_decay, instance, market_data=market)
    assert waiting.run_requests == []
    assert "waiting for window 2024-01-01 to complete" in waiting.skip_reason.skip_message
    write_daily(data, "TCS", date(2023, 12, 16), date(2024, 6, 30))
    [retrain] = _tick(model_decay, instance, market_data=market).run_requests
    assert retrain.job_name == "train_job" and retrain.partition_key == "TCS|2024-01-01"
    assert retrain.run_key.startswith("decay-retrain:TCS:")
    [same] = _tick(model_decay, instance, market_data=market).run_requests
    assert same.run_key == retrain.run_key  # the daemon launches a run key once
    # Once that window is trained (by this request or by new_data), nothing more is asked.
    instance.report_runless_asset_event(
        AssetMaterialization(asset_key="student_model", partition="TCS|2024-01-01")
    )
    done = _tick(model_decay, instance, market_data=market)
    assert done.run_requests == [] and "trained after the demotion" in done.skip_reason.skip_message


def test_decay_without_production_models_says_so(instance) -> None:
    assert "no production model" in _tick(model_decay, instance, market_data=MARKET).skip_reason.skip_message


@pytest.mark.parametrize(
    ("start", "end", "busy"),
    [
        ("INFY|2024-01-01", "WIPRO|2024-01-01", True),  # a backfill's run: one window, a symbol range
        ("TCS|2023-01-01", "TCS|2024-07-01", True),  # one symbol, a window range
        ("INFY|2024-07-01", "WIPRO|2024-07-01", False),  # another window
        ("INFY|2024-01-01", "INFY|2024-01-01", False),  # symbols before TCS only
    ],
)
def test_decay_retraining_waits_for_a_batched_run_that_trains_the_window(
    instance, monkeypatch, tmp_path: Path, start: str, end: str, busy: bool
) -> None:
    """A batched backfill run carries range tags, not `dagster/partition`: it must count as in flight."""
    market = _demoted_tcs(instance, monkeypatch, tmp_path, ["INFY", "TCS", "WIPRO"], date(2024, 6, 30))
    backfill_run = DagsterRun(
        job_name="__ASSET_JOB",
        run_id=make_new_run_id(),
        status=DagsterRunStatus.STARTED,
        tags={"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end},
    )
    instance.add_run(backfill_run)
    result = _tick(model_decay, instance, market_data=market)
    if busy:
        assert result.run_requests == []
        assert f"run {backfill_run.run_id} on TCS|2024-01-01 is started" in result.skip_reason.skip_message
    else:
        [retrain] = result.run_requests
        assert retrain.partition_key == "TCS|2024-01-01"


def test_decay_retraining_waits_for_a_requested_backfill_without_runs_yet(
    instance, monkeypatch, tmp_path: Path
) -> None:
    """new_data's backfill of a completed window exists before the daemon creates its runs."""
    market = _demoted_tcs(instance, monkeypatch, tmp_path, ["TCS"], date(2024, 6, 30))
    keys = {AssetKeyPartitionKey(AssetKey(a), "TCS|2024-01-01") for a in PARTITION_ASSETS}
    subset = AssetGraphSubset.from_asset_partition_set(keys, defs.resolve_asset_graph())
    backfill = PartitionBackfill.from_asset_graph_subset(
        backfill_id="newdata1",
        backfill_timestamp=time.time(),
        tags={"sensequant/trigger": "new_data"},
        dynamic_partitions_store=instance,
        asset_graph_subset=subset,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    waiting = _tick(model_decay, instance, market_data=market)
    assert waiting.run_requests == []
    assert "backfill newdata1 holding TCS|2024-01-01 is in progress" in waiting.skip_reason.skip_message
    instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS))
    [retrain] = _tick(model_decay, instance, market_data=market).run_requests  # it trained nothing
    assert retrain.partition_key == "TCS|2024-01-01"


def test_decay_skips_a_symbol_added_in_another_spelling_and_judges_the_rest(instance, decayed: Path) -> None:
    """The UI's "Add partition" checks nothing: `../X` or `tcs` must not fail every tick."""
    instance.add_dynamic_partitions("symbols", ["../X", "tcs"])
    result = _tick(model_decay, instance, market_data=MARKET)
    [request] = result.run_requests  # TCS is still judged and demoted
    assert request.run_config["ops"]["demote_model"]["config"]["symbol"] == "TCS"


def test_a_run_over_a_range_of_symbols_holds_no_window(instance) -> None:
    """The automation's run of every symbol's page (`symbol_briefing`, partitioned by symbol) carries a
    range of symbols: it trains no window, and it must not break the sensors that look for runs that do."""
    instance.add_dynamic_partitions("symbols", ["AAA", "BBB"])
    ranges = {"symbol_briefing": ("AAA", "BBB"), "market_bars": ("AAA|2024-01-01", "BBB|2024-01-01")}
    for asset, (start, end) in ranges.items():
        run_tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
        instance.add_run(
            DagsterRun(
                job_name="__ASSET_JOB",
                run_id=make_new_run_id(),
                status=DagsterRunStatus.STARTED,
                asset_selection=frozenset({AssetKey(asset)}),
                tags=run_tags,
            )
        )
    busy = in_flight(instance, ["AAA|2024-01-01", "BBB|2024-07-01"])
    assert set(busy) == {"AAA|2024-01-01"}  # the training run's range only
