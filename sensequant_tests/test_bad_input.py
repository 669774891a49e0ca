"""Bad input gets the documented outcome: skip (with reason) or failure (naming symbol, file, cause)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import Definitions, in_process_executor

from sensequant_assets.assets.bars import longest_gap
from sensequant_assets.cli import main as cli_main
from sensequant_assets.jobs import train_job
from sensequant_tests.daily_csv import write_daily
from sensequant_tests.pipeline_helpers import (
    ALL_ASSETS,
    failure_messages,
    instance_with,
    resources,
    run,
    skip_reasons,
)


def _write_csv(directory: Path, symbol: str, start: str, end: str, *, corrupt_volume: bool = False) -> Path:
    idx = pd.bdate_range(start, end)
    close = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, len(idx))))
    frame = pd.DataFrame(
        {
            "timestamp": idx.strftime("%Y-%m-%d 00:00:00+05:30"),
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": 1000.0,
        }
    )
    if corrupt_volume:
        frame.loc[3, "volume"] = -5.0
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{symbol}.csv"
    frame.to_csv(path, index=False)
    return path


def test_too_few_rows_skips_teacher_and_student_without_failing(tmp_path: Path) -> None:
    # The first partition: no earlier window to learn from (the default lookback is cut there), so
    # its teacher has only the window's own rows. (A later window's rows count with its lookback's.)
    result = run(tmp_path, "RELIANCE|2022-01-01", synthetic_end_date="2022-01-20")
    assert result.success
    reasons = skip_reasons(result)
    assert set(reasons) == {"teacher_model", "teacher_labels"}
    assert "RELIANCE" in reasons["teacher_model"] and "2022-01-01" in reasons["teacher_model"]
    assert "20" in reasons["teacher_model"]  # the minimum is named
    materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialised == {"market_bars"}
    directory = tmp_path / "RELIANCE_2022-01-01_to_2022-06-30"
    assert (directory / "bars.parquet").is_file()
    assert not (directory / "model.pkl").exists() and not (directory / "student").exists()


def test_empty_window_skips_the_whole_partition(tmp_path: Path) -> None:
    data = tmp_path / "csv"
    _write_csv(data, "RELIANCE", "2022-01-03", "2022-12-30")
    result = run(tmp_path / "models", "RELIANCE|2023-01-01", data_source="csv", data_dir=str(data))
    assert result.success
    reasons = skip_reasons(result)
    assert list(reasons) == ["market_bars"]
    assert "RELIANCE_2023-01-01_to_2023-06-30" in reasons["market_bars"]
    assert "no bars" in reasons["market_bars"]
    assert result.get_asset_materialization_events() == []
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").glob("RELIANCE_*"))


def test_unknown_symbol_fails_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "csv"
    _write_csv(data, "RELIANCE", "2022-01-03", "2023-06-30")
    result = run(tmp_path / "models", "NOSUCH|2023-01-01", data_source="csv", data_dir=str(data))
    assert not result.success
    assert any("NOSUCH" in m for m in failure_messages(result))


def test_malformed_csv_fails_naming_file_and_rule(tmp_path: Path) -> None:
    data = tmp_path / "csv"
    _write_csv(data, "TCS", "2023-01-02", "2023-06-30", corrupt_volume=True)
    result = run(tmp_path / "models", "TCS|2023-01-01", data_source="csv", data_dir=str(data))
    assert not result.success
    messages = "\n".join(failure_messages(result))
    assert "TCS.csv" in messages and "volume" in messages.lower()
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").glob("TCS_*"))


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def _conflicting_day(path: Path, monkeypatch) -> None:
    lines = path.read_text().splitlines()
    fields = lines[20].split(",")
    fields[-1] = "2000.0"  # the same day again, with another volume
    lines.append(",".join(fields))
    path.write_text("\n".join(lines) + "\n")


def _mixed_zones(path: Path, monkeypatch) -> None:
    lines = path.read_text().splitlines()
    lines[30] = lines[30].replace("00:00:00+05:30", "00:00:00Z", 1)
    path.write_text("\n".join(lines) + "\n")


BAD_DATA = {
    "an HTML error page": (
        lambda path, _: path.write_text("<html><body>502 Bad Gateway</body></html>\n"),
        "TCS.csv: not a CSV file: an HTML or XML page",
    ),
    "two different bars for one day": (
        _conflicting_day,
        "row 262 (timestamp 2022-07-28 00:00:00+05:30): rule violated: one bar per day",
    ),
    "two time zones": (
        _mixed_zones,
        "row 30 (timestamp '2022-08-11 00:00:00Z'): rule violated: one time zone",
    ),
    "a file above SENSEQUANT_MAX_FILE_MB": (
        lambda _, monkeypatch: monkeypatch.setenv("SENSEQUANT_MAX_FILE_MB", "0.001"),
        "MB, more than SENSEQUANT_MAX_FILE_MB=0.001",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_a_refusal_names_symbol_window_file_row_and_rule_and_changes_no_artifact(
    tmp_path: Path, monkeypatch, case: str
) -> None:
    """A partition trained from good data, then its source file goes bad: the run fails with a
    message naming symbol, window, file, row (where there is one) and rule, and the partition's
    directory is byte for byte what it was."""
    data = tmp_path / "csv"
    path = _write_csv(data, "TCS", "2022-07-01", "2023-06-30")
    result = run(
        tmp_path / "models",
        "TCS|2023-01-01",
        selection=["market_bars"],
        data_source="csv",
        data_dir=str(data),
    )
    assert result.success, failure_messages(result)
    directory = tmp_path / "models" / "TCS_2023-01-01_to_2023-06-30"
    before = _snapshot(tmp_path / "models")
    assert (directory / "bars.parquet").is_file()
    spoil, expected = BAD_DATA[case]
    spoil(path, monkeypatch)
    result = run(
        tmp_path / "models",
        "TCS|2023-01-01",
        selection=["market_bars"],
        data_source="csv",
        data_dir=str(data),
    )
    assert not result.success
    [message] = failure_messages(result)
    assert f"TCS: {path}" in message and expected in message
    assert "[window 2023-01-01..2023-06-30]" in message
    assert "rule" in message
    assert _snapshot(tmp_path / "models") == before


def test_csv_source_trains_a_window_with_history(tmp_path: Path) -> None:
    data = tmp_path / "csv"
    _write_csv(data, "M&M", "2022-01-03", "2023-06-30")
    result = run(tmp_path / "models", "M&M|2023-01-01", data_source="csv", data_dir=str(data))
    assert result.success, failure_messages(result)
    assert (tmp_path / "models" / "M&M_2023-01-01_to_2023-06-30" / "student" / "metrics.json").is_file()


def test_bad_symbol_characters_are_refused_in_a_run(tmp_path: Path) -> None:
    result = run(tmp_path, "BAD SYM|2023-01-01", instance=instance_with("BAD SYM"))
    assert not result.success
    assert any("'BAD SYM'" in m for m in failure_messages(result))


def test_cli_refuses_bad_symbols(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert cli_main(["symbols", "add", "GOOD,BAD|KEY"]) == 2
    assert "'BAD|KEY'" in capsys.readouterr().err
    assert cli_main(["symbols", "add", "M&M"]) == 0
    assert cli_main(["symbols", "list"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "M&M"


def test_a_symbol_added_in_another_spelling_fails_alone_and_is_skipped_in_a_batch(tmp_path: Path) -> None:
    """The UI's "Add partition" accepts `reliance`: the store will not give it a directory beside
    RELIANCE's. Asked for alone, the run fails saying which symbol to register instead; in a batch
    that partition is skipped with that reason and the others are trained."""
    result = run(tmp_path, "reliance|2023-01-01", instance=instance_with("reliance"))
    assert not result.success
    [message] = failure_messages(result)
    assert "reliance_2023-01-01_to_2023-06-30: symbol 'reliance' is not written as 'RELIANCE'" in message
    assert list(tmp_path.iterdir()) == []
    batch = Definitions(
        assets=ALL_ASSETS, jobs=[train_job], resources=resources(tmp_path), executor=in_process_executor
    ).resolve_job_def(train_job.name)
    result = batch.execute_in_process(
        instance=instance_with("reliance", "TCS"),
        tags={
            "dagster/asset_partition_range_start": "reliance|2023-01-01",
            "dagster/asset_partition_range_end": "TCS|2023-01-01",
        },
        run_config={"ops": {"teacher": {"config": {"lookback_windows": 0}}}},
    )
    assert result.success
    assert "is not written as 'RELIANCE'" in skip_reasons(result)["market_bars"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "TCS_2023-01-01_to_2023-06-30"
    ]
    assert (tmp_path / "TCS_2023-01-01_to_2023-06-30" / "student" / "student_model.pkl").is_file()


def test_a_long_gap_is_kept_with_a_warning_and_its_length_in_the_metadata(tmp_path: Path) -> None:
    """A suspension is real history, so the bars are kept (repair-with-warning, not refusal), but
    indicators and labels span it: the run warns, naming the days, and the partition's metadata
    shows the longest gap, so it is visible in the UI."""
    data = tmp_path / "bars"
    write_daily(data, "TCS", date(2022, 6, 1), date(2023, 6, 30))
    for day in pd.bdate_range("2023-02-06", "2023-02-24"):  # three weeks suspended
        (data / "TCS" / "1day" / f"{day.date().isoformat()}.csv").unlink()
    instance = instance_with("TCS")
    result = run(
        tmp_path / "models",
        "TCS|2023-01-01",
        instance=instance,
        selection=["market_bars"],
        data_source="csv",
        data_dir=str(data),
    )
    assert result.success
    [event] = result.asset_materializations_for_node("market_bars")
    assert event.metadata["longest_gap_weekdays"].value == 15
    assert event.metadata["longest_gap"].value == "2023-02-06..2023-02-24"
    warnings = [
        e.message for e in instance.all_logs(result.run_id) if "weekdays without bars" in (e.message or "")
    ]
    assert warnings and "SENSEQUANT_MAX_GAP_DAYS=10" in warnings[0]


def test_the_longest_gap_counts_weekdays_after_a_saturday_session_too() -> None:
    """NSE trades on some Saturdays (budget days, Muhurat): the weekdays after one count."""
    index = pd.DatetimeIndex(["2024-01-06", "2024-01-19"], tz="Asia/Kolkata", name="timestamp")
    assert longest_gap(pd.DataFrame({"close": [1.0, 2.0]}, index=index)) == (9, "2024-01-08..2024-01-18")
    index = pd.DatetimeIndex(["2024-01-05", "2024-01-08"], tz="Asia/Kolkata", name="timestamp")
    assert longest_gap(pd.DataFrame({"close": [1.0, 2.0]}, index=index)) == (0, "")  # a weekend


def test_repaired_rows_are_warned_in_the_run_and_listed_in_the_metadata(tmp_path: Path) -> None:
    """Unsorted rows and a day written twice are repaired by the source (sorted, the copy dropped,
    with a warning): the run's log and the partition's metadata say so, so the repair is visible in
    the UI, not only in a Python logger. A single file is validated whole for every window, but each
    window reports only the repairs of its own rows. The notes (which name the source file by its
    absolute path) are not stored in bars.parquet, so nothing downstream reads them back."""
    daily, data = tmp_path / "daily", tmp_path / "bars"
    write_daily(daily, "TCS", date(2022, 7, 1), date(2023, 6, 30))
    frames = [pd.read_csv(f) for f in sorted((daily / "TCS" / "1day").glob("*.csv"))]
    rows = pd.concat(frames, ignore_index=True)
    second_half = int((rows["timestamp"] < "2023").sum())
    at = second_half + 20  # two days of the 2023-01-01 window out of order
    rows.iloc[[at, at + 1]] = rows.iloc[[at + 1, at]].to_numpy()
    rows = pd.concat([rows.iloc[:6], rows.iloc[[5]], rows.iloc[6:]], ignore_index=True)  # a July day twice
    data.mkdir()
    rows.to_csv(data / "TCS.csv", index=False)
    instance = instance_with("TCS")
    shown = {}
    for window in ("2022-07-01", "2023-01-01"):
        result = run(
            tmp_path / "models",
            f"TCS|{window}",
            instance=instance,
            selection=["market_bars"],
            data_source="csv",
            data_dir=str(data),
        )
        assert result.success
        [event] = result.asset_materializations_for_node("market_bars")
        shown[window] = event.metadata["repairs"].value
        logged = [
            e.message or "" for e in instance.all_logs(result.run_id) if "repaired:" in (e.message or "")
        ]
        assert logged and all(f"TCS_{window}" in m and "TCS.csv" in m for m in logged)
        [stored] = (tmp_path / "models").glob(f"TCS_{window}_to_*/bars.parquet")
        assert str(data) not in stored.read_bytes().decode("latin-1")  # no note, no source path
        assert pd.read_parquet(stored).attrs == {}
    assert "exact duplicate" in shown["2022-07-01"] and "sorted" not in shown["2022-07-01"]
    assert "sorted" in shown["2023-01-01"] and "duplicate" not in shown["2023-01-01"]
