"""The data-quality report: coverage against NSE's calendar, gaps, non-trading days, repaired rows,
flagged jumps; and the `data_quality` asset that shows it per partition."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetCheckSeverity, DagsterInstance, materialize

from sensequant_assets.assets.quality import data_quality
from sensequant_assets.resources import MarketDataResource
from sensequant_assets.sources import CsvDirSource, DataSourceError, SyntheticSource
from sensequant_assets.sources.quality import (
    calendar_known_until,
    flag_jumps,
    nse_sessions,
    quality_report,
    repaired_rows,
)
from sensequant_tests.daily_csv import write_bars

D = dt.date
TODAY = D(2026, 12, 1)
JANUARY = (D(2023, 1, 1), D(2023, 1, 31))
MISSING = ("2023-01-17", "2023-01-18", "2023-01-24")  # sessions taken out of the cache


def half_year_cache(root: Path, symbol: str = "INFY") -> Path:
    """Every weekday of the window 2023-01-01..2023-06-30 (so a bar on Republic Day, 2023-01-26,
    an NSE holiday) but three January sessions, from the last days of 2022 (the previous close of
    the window's first bar)."""
    bars = SyntheticSource(seed=5).bars(symbol, D(2022, 12, 26), D(2023, 6, 30))
    bars = bars.drop(pd.DatetimeIndex([pd.Timestamp(d, tz="Asia/Kolkata") for d in MISSING]))
    return write_bars(root, symbol, bars)


def test_the_nse_calendar_is_the_librarys_with_holidays_not_weekdays() -> None:
    january = [str(d) for d in nse_sessions(*JANUARY)]
    assert "2023-01-26" not in january and "2023-01-25" in january and "2023-01-27" in january
    assert len(january) == 21  # 22 weekdays less Republic Day
    assert str(nse_sessions(D(2023, 11, 13), D(2023, 11, 15))[-1]) == "2023-11-15"  # 14th: Diwali
    assert calendar_known_until() >= D(2026, 12, 31)


def test_coverage_gaps_and_a_bar_on_a_holiday_are_reported(tmp_path: Path) -> None:
    half_year_cache(tmp_path)
    bars, actions = CsvDirSource(tmp_path, actions_files=()).bars_for_report(
        "INFY", *JANUARY, previous_days=10
    )
    report = quality_report("INFY", *JANUARY, bars, today=TODAY, max_move=0.4, actions=actions)
    assert report.sessions == 21 and report.bars == 22 - len(MISSING)
    assert [str(d) for d in report.missing] == list(MISSING)
    assert report.gaps == ((D(2023, 1, 17), D(2023, 1, 18), 2), (D(2023, 1, 24), D(2023, 1, 24), 1))
    assert report.non_trading == (D(2023, 1, 26),)  # kept and reported, never a failure
    meta = report.metadata()
    assert meta["coverage_pct"] == round(100 * 18 / 21, 2)
    assert meta["gaps"] == "2023-01-17..2023-01-18 (2), 2023-01-24"
    assert meta["non_trading_days"] == "2023-01-26" and meta["bars_on_non_trading_days"] == 1
    assert report.problems() == ["3 of 21 NSE sessions without a bar: 2023-01-17..2023-01-18 (2), 2023-01-24"]


def test_coverage_is_judged_up_to_today_and_to_the_calendars_last_year() -> None:
    bars = SyntheticSource(seed=1).bars("TCS", D(2026, 11, 1), D(2026, 11, 30))
    now = quality_report("TCS", D(2026, 11, 1), D(2027, 4, 30), bars, today=D(2026, 11, 20), max_move=0.4)
    assert now.judged_until == D(2026, 11, 20) and not now.missing and not now.calendar_note
    later = quality_report("TCS", D(2026, 11, 1), D(2027, 4, 30), bars, today=D(2027, 6, 1), max_move=0.4)
    known = calendar_known_until()
    assert later.judged_until == min(known, D(2027, 4, 30))
    if known < D(2027, 4, 30):  # the library does not list 2027's holidays yet
        assert f"only up to {known}" in later.calendar_note and str(later.missing[0]) == "2026-12-01"


def test_an_unexplained_jump_is_flagged_and_an_action_on_its_day_explains_it(
    tmp_path: Path, monkeypatch
) -> None:
    bars = SyntheticSource(seed=2).bars("TCS", D(2024, 1, 15), D(2024, 3, 28))
    after = bars.index >= pd.Timestamp("2024-02-01", tz="Asia/Kolkata")  # the first bar of the window
    bars.loc[after, ["open", "high", "low", "close"]] *= 0.5  # an unadjusted 1:1 bonus
    write_bars(tmp_path / "data", "TCS", bars)
    window = (D(2024, 2, 1), D(2024, 3, 31))
    none = CsvDirSource(tmp_path / "data", actions_files=())
    with pytest.raises(DataSourceError):
        none.bars("TCS", D(2024, 1, 1), D(2024, 3, 31))  # training never sees it

    raw, actions = none.bars_for_report("TCS", *window, previous_days=10)  # the report does
    (jump,) = quality_report("TCS", *window, raw, today=TODAY, max_move=0.4, actions=actions).jumps
    assert jump.day == D(2024, 2, 1) and jump.move == pytest.approx(-0.5, abs=0.05) and not jump.note
    assert not quality_report(
        "TCS", *window, raw, today=TODAY, max_move=0.4, allowed={("TCS", "2024-02-01")}
    ).jumps

    listed = tmp_path / "bonus.csv"
    listed.write_text(
        "symbol,ex_date,type,ratio,factor,adjusted_by_source,note\nTCS,2024-02-01,bonus,1:1,,no,\n"
    )
    source = CsvDirSource(tmp_path / "data", actions_files=(listed,))
    adjusted, actions = source.bars_for_report("TCS", *window, previous_days=10)
    report = quality_report("TCS", *window, adjusted, today=TODAY, max_move=0.4, actions=actions)
    assert not report.jumps and report.actions == ()  # applied, but dated on the window's first bar
    january = (D(2024, 1, 1), D(2024, 1, 31))
    bars, actions = source.bars_for_report("TCS", *january, previous_days=10)
    earlier = quality_report("TCS", *january, bars, today=TODAY, max_move=0.4, actions=actions)
    assert earlier.actions == ("2024-02-01 bonus 1:1 (x0.5) applied: bars before it adjusted",)

    # Marked as adjusted by the source, which it was not: the move stays, and the report says why.
    listed.write_text(listed.read_text().replace(",no,", ",yes,"))
    raw, actions = source.bars_for_report("TCS", *window, previous_days=10)
    (jump,) = flag_jumps(raw, 0.4, symbol="TCS", actions=actions)
    assert "marked adjusted_by_source: did the source really adjust for it?" in jump.note


def test_a_csv_users_unadjusted_jump_names_the_shipped_action_of_its_day(tmp_path: Path, monkeypatch) -> None:
    """The shipped actions apply to Breeze's cache only: a csv user whose vendor does not adjust
    sees RELIANCE's 2024-10-28 bonus as a jump, and the report says which file would explain it."""
    monkeypatch.delenv("SENSEQUANT_CORPORATE_ACTIONS_FILE", raising=False)
    bars = SyntheticSource(seed=2).bars("RELIANCE", D(2024, 10, 14), D(2024, 11, 29))
    after = bars.index >= pd.Timestamp("2024-10-28", tz="Asia/Kolkata")
    bars.loc[after, ["open", "high", "low", "close"]] *= 0.5  # the unadjusted 1:1 bonus
    write_bars(tmp_path, "RELIANCE", bars)
    window = (D(2024, 10, 1), D(2024, 11, 30))

    def report(kind: str):
        source = MarketDataResource(data_source=kind, data_dir=str(tmp_path)).source_for("RELIANCE")
        raw, actions = source.bars_for_report("RELIANCE", *window, previous_days=10)
        return quality_report("RELIANCE", *window, raw, today=TODAY, max_move=0.4, actions=actions)

    (jump,) = report("csv").jumps
    assert jump.day == D(2024, 10, 28)
    assert "the shipped corporate actions list the 2024-10-28 bonus 1:1 (x0.5) on this day" in jump.note
    assert "SENSEQUANT_CORPORATE_ACTIONS_FILE" in jump.note and "corporate_actions.csv" in jump.note
    assert report("breeze").jumps == ()  # applied there


def test_repaired_rows_are_counted_from_the_sources_notes(tmp_path: Path) -> None:
    folder = half_year_cache(tmp_path)
    day = folder / "2023-01-10.csv"
    day.write_text(day.read_text() + day.read_text().splitlines()[1] + "\n")  # the same row twice
    bars, _ = CsvDirSource(tmp_path, actions_files=()).bars_for_report("INFY", *JANUARY, previous_days=10)
    report = quality_report(
        "INFY", *JANUARY, bars, today=TODAY, max_move=0.4, repairs=bars.attrs["sensequant_repairs"]
    )
    assert report.metadata()["repaired_rows"] == 1 and "2023-01-10.csv" in report.metadata()["repairs"]
    assert repaired_rows(["x [3 duplicate rows in total]", "y [2 rows out of order in the window a..b]"]) == 5


def _metadata(result, key: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.partition == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_the_asset_shows_the_report_per_partition_and_warns_without_blocking(tmp_path: Path) -> None:
    half_year_cache(tmp_path / "data")
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("symbols", ["INFY", "TCS"])
    csv = {"market_data": MarketDataResource(data_source="csv", data_dir=str(tmp_path / "data"))}
    # A batch of two: INFY's January window (three sessions missing) and TCS, which has no data.
    result = materialize(
        [data_quality],
        instance=instance,
        resources=csv,
        tags={
            "dagster/asset_partition_range_start": "INFY|2023-01-01",
            "dagster/asset_partition_range_end": "TCS|2023-01-01",
        },
    )
    assert result.success
    infy = _metadata(result, "INFY|2023-01-01")
    assert infy["missing_sessions"] == 3 and infy["gaps"].startswith("2023-01-17..2023-01-18 (2), 2023-01-24")
    assert infy["bars_on_non_trading_days"] == 8 and infy["nse_sessions"] == 122  # 2023's first half
    tcs = _metadata(result, "TCS|2023-01-01")
    assert "unknown symbol 'TCS'" in tcs["error"]
    checks = {e.partition: e for e in result.get_asset_check_evaluations()}
    assert (
        not checks["INFY|2023-01-01"].passed and checks["INFY|2023-01-01"].severity == AssetCheckSeverity.WARN
    )
    assert not checks["TCS|2023-01-01"].passed and "unknown symbol" in checks["TCS|2023-01-01"].description

    # The synthetic source draws weekdays: every session has a bar, holidays are extra days, it passes.
    result = materialize(
        [data_quality],
        instance=instance,
        resources={"market_data": MarketDataResource(data_source="synthetic")},
        partition_key="TCS|2023-01-01",
    )
    meta = _metadata(result, "TCS|2023-01-01")
    assert meta["coverage_pct"] == 100.0 and meta["bars_on_non_trading_days"] == 8  # 2023's first half
    assert "2023-01-26" in meta["non_trading_days"]
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and "8 bar(s) on days without a session (kept)" in check.description
