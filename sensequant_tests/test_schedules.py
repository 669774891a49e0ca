"""The `train_latest_window` schedule: the newest complete window of every symbol, in few runs."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterRun,
    DagsterRunStatus,
    DefaultScheduleStatus,
    Definitions,
    SkipReason,
    build_schedule_context,
    in_process_executor,
)
from dagster._core.test_utils import instance_for_test
from dagster._core.utils import make_new_run_id

from sensequant_assets.definitions import defs
from sensequant_assets.jobs import train_job
from sensequant_assets.resources import MarketDataResource
from sensequant_assets.schedules import (
    SCHEDULE_NAME,
    latest_complete_window,
    symbol_ranges,
    train_latest_window,
)
from sensequant_assets.sensors import RANGE_END, RANGE_START, TRIGGER
from sensequant_assets.settings import SettingsError
from sensequant_tests.daily_csv import write_daily
from sensequant_tests.pipeline_helpers import ALL_ASSETS, resources

SYMBOLS = ["RELIANCE", "TCS", "INFY", "WIPRO", "HDFC"]
WINDOW = "2024-01-01"
TICK = datetime(2024, 7, 2, 6, tzinfo=ZoneInfo("Asia/Kolkata"))


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        inst.add_dynamic_partitions("symbols", SYMBOLS)
        yield inst


def _tick(instance, market: MarketDataResource, when: datetime = TICK):
    # As a context manager: its resources' exit stack (which sets Dagster's current state storage)
    # must close, or later tests' definitions read a storage deleted with this test's instance.
    with build_schedule_context(
        instance=instance, scheduled_execution_time=when, resources={"market_data": market}
    ) as context:
        return train_latest_window(context)


def _ranges(requests) -> list[tuple[str, str]]:
    return [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests]


def test_symbol_ranges_are_consecutive_wanted_symbols_of_bounded_size() -> None:
    symbols = ["A", "B", "C", "D", "E", "F", "G"]
    assert symbol_ranges(symbols, {"A", "B", "D", "E", "F", "G"}, 0) == [("A", "B"), ("D", "G")]
    assert symbol_ranges(symbols, {"A", "B", "D", "E", "F", "G"}, 2) == [
        ("A", "B"),
        ("D", "E"),
        ("F", "G"),
    ]
    assert symbol_ranges(symbols, {"C"}, 2) == [("C", "C")]
    assert symbol_ranges(symbols, set(), 2) == []


def test_the_latest_window_is_the_newest_that_has_ended() -> None:
    assert latest_complete_window(date(2024, 7, 1)) == WINDOW
    assert latest_complete_window(date(2024, 6, 30)) == "2023-07-01"
    assert latest_complete_window(date(1990, 1, 1)) is None


def test_a_bad_cron_names_its_variable(monkeypatch) -> None:
    import importlib

    import sensequant_assets.schedules as schedules

    monkeypatch.setenv("SENSEQUANT_LATEST_WINDOW_CRON", "every day")
    with pytest.raises(SettingsError, match="SENSEQUANT_LATEST_WINDOW_CRON='every day' is not a cron"):
        importlib.reload(schedules)
    monkeypatch.delenv("SENSEQUANT_LATEST_WINDOW_CRON")
    assert importlib.reload(schedules).train_latest_window.cron_schedule == "0 6 2 1,7 *"
    # The months come from the settings, also for windows the calendar has not reached yet.
    monkeypatch.setenv("SENSEQUANT_START_DATE", "2026-01-01")
    monkeypatch.setenv("SENSEQUANT_WINDOW_MONTHS", "3")
    assert importlib.reload(schedules).train_latest_window.cron_schedule == "0 6 2 1,4,7,10 *"
    monkeypatch.setenv("SENSEQUANT_START_DATE", "2026-08-01")
    monkeypatch.setenv("SENSEQUANT_WINDOW_MONTHS", "6")
    assert importlib.reload(schedules).train_latest_window.cron_schedule == "0 6 2 2,8 *"
    monkeypatch.delenv("SENSEQUANT_START_DATE")
    monkeypatch.delenv("SENSEQUANT_WINDOW_MONTHS")
    importlib.reload(schedules)


def test_the_schedule_is_off_by_default_and_targets_train_job() -> None:
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    assert schedule.job_name == train_job.name
    assert schedule.execution_timezone == "Asia/Kolkata"


def test_the_schedule_trains_what_is_missing_in_ranged_runs_and_then_nothing(
    instance, tmp_path: Path
) -> None:
    data, artifacts = tmp_path / "bars", tmp_path / "models"
    for symbol in SYMBOLS:
        # INFY's bars stop before the window's end: the window is not complete for INFY yet.
        write_daily(
            data, symbol, date(2022, 6, 1), date(2024, 3, 29) if symbol == "INFY" else date(2024, 6, 30)
        )
    market = MarketDataResource(data_source="csv", data_dir=str(data))
    # A backfill run already trains TCS's window.
    busy = DagsterRun(
        job_name="__ASSET_JOB",
        run_id=make_new_run_id(),
        status=DagsterRunStatus.STARTED,
        tags={RANGE_START: f"TCS|{WINDOW}", RANGE_END: f"TCS|{WINDOW}"},
    )
    instance.add_run(busy)

    requests = _tick(instance, market)
    assert _ranges(requests) == [
        (f"RELIANCE|{WINDOW}", f"RELIANCE|{WINDOW}"),
        (f"WIPRO|{WINDOW}", f"HDFC|{WINDOW}"),
    ]
    assert all(r.tags[TRIGGER] == SCHEDULE_NAME and r.job_name in (None, train_job.name) for r in requests)
    assert len({r.run_key for r in requests}) == 2

    # Each request is a real run of train_job over its range.
    job_resources = resources(artifacts, data_source="csv", data_dir=str(data))
    job = Definitions(
        assets=ALL_ASSETS, jobs=[train_job], resources=job_resources, executor=in_process_executor
    ).resolve_job_def(train_job.name)
    for request in requests:
        assert job.execute_in_process(instance=instance, tags=request.tags).success
    trained = instance.get_materialized_partitions(AssetKey("student_model"))
    assert trained == {f"{s}|{WINDOW}" for s in ("RELIANCE", "WIPRO", "HDFC")}
    for symbol in ("RELIANCE", "WIPRO", "HDFC"):
        assert (artifacts / f"{symbol}_2024-01-01_to_2024-06-30" / "student" / "student_model.pkl").is_file()

    # The next tick: the trained ones are done, TCS still in flight, INFY still incomplete.
    again = _tick(instance, market)
    assert isinstance(again, SkipReason)
    message = again.skip_message
    assert "3 of 5 symbols already trained" in message and "1 in flight" in message
    assert "INFY: its bars do not cover window 2024-01-01 yet" in message

    # TCS's run failed: the schedule asks for it again, alone.
    instance.report_run_failed(busy)
    assert _ranges(_tick(instance, market)) == [(f"TCS|{WINDOW}", f"TCS|{WINDOW}")]


def test_no_symbols_or_no_window_is_a_reason_not_a_run(tmp_path: Path) -> None:
    market = MarketDataResource(data_source="csv", data_dir=str(tmp_path))
    with instance_for_test() as empty:
        assert "no symbols registered" in _tick(empty, market).skip_message
        early = datetime(1990, 1, 2, tzinfo=ZoneInfo("Asia/Kolkata"))
        assert "no window has ended before 1990-01-02" in _tick(empty, market, early).skip_message


def test_a_skipped_partition_is_not_trained_and_a_bad_symbol_is_named_not_requested(
    instance, tmp_path: Path
) -> None:
    """A batch records a skipped partition as materialised (the reason in its metadata): the
    schedule must still train it. A symbol added in another spelling would fail its range's run on
    every tick: it is named and left out."""
    data = tmp_path / "bars"
    for symbol in SYMBOLS:
        write_daily(data, symbol, date(2022, 6, 1), date(2024, 6, 30))
    market = MarketDataResource(data_source="csv", data_dir=str(data))
    for symbol in ("TCS", "INFY", "WIPRO", "HDFC"):
        instance.report_runless_asset_event(
            AssetMaterialization("student_model", partition=f"{symbol}|{WINDOW}")
        )
    skipped = {"skipped": "RELIANCE_2024-01-01_to_2024-06-30: the teacher skipped this partition"}
    instance.report_runless_asset_event(
        AssetMaterialization("student_model", partition=f"RELIANCE|{WINDOW}", metadata=skipped)
    )
    instance.add_dynamic_partitions("symbols", ["reliance"])
    requests = _tick(instance, market)
    assert _ranges(requests) == [(f"RELIANCE|{WINDOW}", f"RELIANCE|{WINDOW}")]
    instance.report_runless_asset_event(AssetMaterialization("student_model", partition=f"RELIANCE|{WINDOW}"))
    reason = _tick(instance, market).skip_message
    assert "5 of 6 symbols already trained" in reason
    assert "symbol 'reliance' is not written as 'RELIANCE'" in reason
