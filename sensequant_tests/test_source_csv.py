"""CsvDirSource: both layouts, range-limited reads, IST handling, clear errors on bad data."""

from __future__ import annotations

import builtins
import datetime as dt
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sensequant_assets.settings import SettingsError
from sensequant_assets.sources import (
    BAR_COLUMNS,
    IST,
    BarSource,
    CsvDirSource,
    DataSourceError,
    InvalidSymbolError,
    SyntheticSource,
    UnknownSymbolError,
    validate_bars,
)
from sensequant_assets.sources.base import unexplained_jumps

D = dt.date
HEADER = "timestamp,open,high,low,close,volume"


def reference_bars(
    symbol: str = "RELIANCE", start: dt.date | None = None, end: dt.date | None = None
) -> pd.DataFrame:
    """Known-good bars to write out and read back (synthetic, so no fixture files to maintain)."""
    return SyntheticSource(seed=1).bars(symbol, start or D(2024, 1, 1), end or D(2024, 3, 31))


def write_daily(root: Path, symbol: str, bars: pd.DataFrame) -> Path:
    """The predecessor's layout: <SYMBOL>/1day/<YYYY-MM-DD>.csv with IST-aware timestamps."""
    day_dir = root / symbol / "1day"
    day_dir.mkdir(parents=True, exist_ok=True)
    for ts, row in bars.iterrows():
        (day_dir / f"{ts.date().isoformat()}.csv").write_text(
            f"{HEADER}\n{ts.isoformat(sep=' ')},{row.open},{row.high},{row.low},{row.close},{row.volume}\n"
        )
    return day_dir


def write_csv(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def assert_bar_schema(bars: pd.DataFrame) -> None:
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert all(bars[c].dtype == np.float64 for c in BAR_COLUMNS)
    assert bars.index.name == "timestamp"
    assert str(bars.index.tz) == IST
    assert bars.index.is_unique and bars.index.is_monotonic_increasing


# -- layouts round-trip -------------------------------------------------------------------


def test_daily_layout_round_trip(tmp_path: Path) -> None:
    ref = reference_bars()
    write_daily(tmp_path, "RELIANCE", ref)
    source = CsvDirSource(tmp_path)
    assert isinstance(source, BarSource)
    assert source.name == "csv"
    got = source.bars("RELIANCE", D(2024, 1, 1), D(2024, 3, 31))
    assert_bar_schema(got)
    pd.testing.assert_frame_equal(got, ref)
    part = source.bars("reliance", D(2024, 2, 1), D(2024, 2, 29))
    pd.testing.assert_frame_equal(part, ref.loc["2024-02-01":"2024-02-29"])


def test_single_csv_round_trip_and_range_filter(tmp_path: Path) -> None:
    ref = reference_bars("M&M")
    ref.to_csv(tmp_path / "M&M.csv")
    source = CsvDirSource(tmp_path)
    pd.testing.assert_frame_equal(source.bars("M&M", D(2024, 1, 1), D(2024, 3, 31)), ref)
    got = source.bars("M&M", D(2024, 1, 10), D(2024, 1, 12))
    assert list(got.index.date) == [D(2024, 1, 10), D(2024, 1, 11), D(2024, 1, 12)]


@pytest.mark.parametrize("as_index", [True, False])
def test_single_parquet_round_trip(tmp_path: Path, as_index: bool) -> None:
    ref = reference_bars("BAJAJ-AUTO")
    frame = ref if as_index else ref.reset_index()
    frame.to_parquet(tmp_path / "BAJAJ-AUTO.parquet")
    source = CsvDirSource(tmp_path)
    pd.testing.assert_frame_equal(source.bars("BAJAJ-AUTO", D(2024, 1, 1), D(2024, 3, 31)), ref)
    got = source.bars("BAJAJ-AUTO", D(2024, 3, 1), D(2024, 3, 31))
    pd.testing.assert_frame_equal(got, ref.loc["2024-03-01":])


def test_parquet_with_naive_timestamps_is_read_as_ist(tmp_path: Path) -> None:
    ref = reference_bars("TCS", D(2024, 1, 1), D(2024, 1, 10))
    naive = ref.reset_index()
    naive["timestamp"] = naive["timestamp"].dt.tz_localize(None)
    naive.to_parquet(tmp_path / "TCS.parquet", index=False)
    pd.testing.assert_frame_equal(CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 10)), ref)


def test_symbols_lists_both_layouts_sorted(tmp_path: Path) -> None:
    write_daily(tmp_path, "RELIANCE", reference_bars(end=D(2024, 1, 3)))
    write_csv(tmp_path / "TCS.csv", [])
    reference_bars("INFY").to_parquet(tmp_path / "INFY.parquet")
    (tmp_path / "NOTES").mkdir()  # a directory without 1day is not a symbol
    (tmp_path / "readme.txt").write_text("hi")
    (tmp_path / "bad name.csv").write_text(HEADER)
    assert CsvDirSource(tmp_path).symbols() == ["INFY", "RELIANCE", "TCS"]
    assert CsvDirSource(tmp_path / "missing").symbols() == []


def test_empty_range_and_header_only_file_give_empty_schema(tmp_path: Path) -> None:
    write_daily(tmp_path, "RELIANCE", reference_bars())
    write_csv(tmp_path / "TCS.csv", [])
    source = CsvDirSource(tmp_path)
    for frame in (
        source.bars("RELIANCE", D(2023, 1, 1), D(2023, 12, 31)),  # no files in range
        source.bars("RELIANCE", D(2024, 2, 10), D(2024, 2, 11)),  # a weekend
        source.bars("RELIANCE", D(2024, 3, 1), D(2024, 2, 1)),  # reversed
        source.bars("TCS", D(2024, 1, 1), D(2024, 12, 31)),  # header only
    ):
        assert frame.empty
        assert_bar_schema(frame)


# -- only the needed daily files are opened -----------------------------------------------


def test_daily_files_outside_range_are_not_opened(tmp_path: Path, monkeypatch) -> None:
    day_dir = write_daily(tmp_path, "RELIANCE", reference_bars())
    (day_dir / "2023-12-29.csv").write_text("this is not,a csv\x00 at all\n1,2\n1,2,3,4\n")
    (day_dir / "2024-04-01.csv").write_text("")
    (day_dir / "notes.txt").write_text("ignored")

    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        if isinstance(file, str | Path):
            opened.append(Path(file).name)
        return real_open(file, *args, **kwargs)

    # pathlib opens through io.open, pandas through the builtin: watch both.
    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)
    source = CsvDirSource(tmp_path)
    got = source.bars("RELIANCE", D(2024, 1, 8), D(2024, 1, 12))
    assert len(got) == 5
    assert sorted(n for n in opened if n.endswith(".csv")) == [f"2024-01-{d:02d}.csv" for d in range(8, 13)]
    assert not {"2023-12-29.csv", "2024-04-01.csv", "notes.txt"} & set(opened)
    # The corrupt files are real: a range that includes them fails, naming the file.
    with pytest.raises(DataSourceError, match=r"2023-12-29\.csv"):
        source.bars("RELIANCE", D(2023, 12, 1), D(2024, 1, 5))
    with pytest.raises(DataSourceError, match=r"2024-04-01\.csv.*empty"):
        source.bars("RELIANCE", D(2024, 3, 25), D(2024, 4, 5))


def test_reading_a_year_of_daily_files_is_quick(tmp_path: Path) -> None:
    import time

    ref = reference_bars(start=D(2023, 1, 1), end=D(2023, 12, 31))
    write_daily(tmp_path, "RELIANCE", ref)
    t0 = time.perf_counter()
    got = CsvDirSource(tmp_path).bars("RELIANCE", D(2023, 1, 1), D(2023, 12, 31))
    assert len(got) == len(ref) > 250
    assert time.perf_counter() - t0 < 2.0


def test_daily_files_with_crlf_bom_blank_lines_and_no_final_newline(tmp_path: Path) -> None:
    day_dir = tmp_path / "TCS" / "1day"
    day_dir.mkdir(parents=True)
    (day_dir / "2024-01-01.csv").write_bytes(
        b"\xef\xbb\xbf" + HEADER.encode() + b"\r\n2024-01-01,10,11,9,10,1\r\n"
    )
    (day_dir / "2024-01-02.csv").write_bytes(
        HEADER.encode() + b"\n\n2024-01-02,10,11,9,10,2\n  \n2024-01-02,10,11,9,10,3"
    )
    (day_dir / "2024-01-03.csv").write_bytes(HEADER.encode() + b"\n2024-01-03,10,11,9,10,4\n")
    got = CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 3))
    assert list(got["volume"]) == [1, 3, 4]
    # Row numbers still point into the right file after blank lines were skipped.
    (day_dir / "2024-01-02.csv").write_bytes(
        HEADER.encode() + b"\n\n2024-01-02,10,11,9,10,2\n  \n2024-01-02,10,11,9,10,-3"
    )
    with pytest.raises(DataSourceError, match=r"2024-01-02\.csv, row 2 .*volume >= 0"):
        CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 3))


def test_daily_files_with_different_column_order_are_read(tmp_path: Path) -> None:
    day_dir = tmp_path / "TCS" / "1day"
    write_csv(day_dir / "2024-01-01.csv", ["2024-01-01,10,11,9,10,1"])
    write_csv(
        day_dir / "2024-01-02.csv",
        ["5,2024-01-02,10,9,11,10"],
        header="volume,timestamp,open,low,high,close",
    )
    got = CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 2))
    assert list(got["volume"]) == [1, 5]
    assert list(got["high"]) == [11, 11]


def test_ragged_daily_file_is_named(tmp_path: Path) -> None:
    day_dir = tmp_path / "TCS" / "1day"
    write_csv(day_dir / "2024-01-01.csv", ["2024-01-01,10,11,9,10,1"])
    write_csv(day_dir / "2024-01-02.csv", ["2024-01-02,10,11,9,10,1,7,8"])
    with pytest.raises(DataSourceError, match=r"2024-01-02\.csv: data rows have more fields"):
        CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 2))


def test_daily_files_sharing_a_bad_header_are_refused(tmp_path: Path) -> None:
    day_dir = tmp_path / "TCS" / "1day"
    for day in (1, 2):
        write_csv(day_dir / f"2024-01-0{day}.csv", [f"2024-01-0{day},10,11,9,10"], header="ts,o,h,l,c")
    with pytest.raises(DataSourceError, match=r"2024-01-01\.csv: missing column"):
        CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 2))


# -- timestamps ----------------------------------------------------------------------------


def test_naive_timestamps_are_ist_and_aware_ones_are_converted(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "INFY.csv",
        [
            "2024-01-01 00:00:00,100,101,99,100.5,1000",  # naive -> IST
            "2024-01-01T19:00:00Z,100,101,99,100.5,1100",  # UTC evening = Jan 2 in IST
            "2024-01-03,100,101,99,100.5,1200",  # date only, naive
            "2024-01-04 00:00:00+05:30,100,101,99,100.5,1300",
            "2024-01-04 21:00:00-05:00,100,101,99,100.5,1400",  # New York evening = Jan 5 IST
        ],
    )
    got = CsvDirSource(tmp_path).bars("INFY", D(2024, 1, 1), D(2024, 1, 31))
    assert list(got.index) == [pd.Timestamp(f"2024-01-0{d}", tz=IST) for d in range(1, 6)]
    assert list(got["volume"]) == [1000, 1100, 1200, 1300, 1400]


def test_range_uses_ist_calendar_date(tmp_path: Path) -> None:
    # 2024-01-31 20:00 UTC is 2024-02-01 01:30 IST: it belongs to February.
    write_csv(tmp_path / "INFY.csv", ["2024-01-31T20:00:00Z,100,101,99,100.5,1"])
    source = CsvDirSource(tmp_path)
    assert source.bars("INFY", D(2024, 1, 1), D(2024, 1, 31)).empty
    assert len(source.bars("INFY", D(2024, 2, 1), D(2024, 2, 1))) == 1


def test_unsorted_and_duplicated_rows_are_fixed_keeping_the_last(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "TCS.csv",
        [
            "2024-01-03,10,11,9,10,3",
            "2024-01-01,10,11,9,10,1",
            "2024-01-02,10,11,9,10,2",
            "2024-01-01,10,11,9,10,1",  # exact duplicate
            "2024-01-02,10,12,9,11,22",  # conflicting duplicate: the later row wins
        ],
    )
    got = CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 3))
    assert list(got.index.day) == [1, 2, 3]
    assert list(got["volume"]) == [1, 22, 3]
    assert got.loc["2024-01-02", "close"].item() == 11


def test_duplicate_day_across_daily_files_keeps_the_later_file(tmp_path: Path) -> None:
    day_dir = tmp_path / "TCS" / "1day"
    write_csv(day_dir / "2024-01-01.csv", ["2024-01-01 00:00:00+05:30,10,11,9,10,1"])
    write_csv(day_dir / "2024-01-02.csv", ["2024-01-01 00:00:00+05:30,10,11,9,10,2"])
    got = CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 2))
    assert list(got["volume"]) == [2]


# -- malformed data ------------------------------------------------------------------------

GOOD = "2024-01-01,100,101,99,100.5,1000"


@pytest.mark.parametrize(
    ("header", "bad_line", "rule"),
    [
        ("timestamp,open,high,low,close", "2024-01-02,100,101,99,100.5", "missing column"),
        (HEADER, "not-a-date,100,101,99,100.5,1000", "timestamp must be present and ISO 8601"),
        (HEADER, "02/01/2024,100,101,99,100.5,1000", "timestamp must be present and ISO 8601"),
        (HEADER, ",100,101,99,100.5,1000", "timestamp must be present"),
        (HEADER, "2024-01-02,abc,101,99,100.5,1000", "open must be numeric"),
        (HEADER, "2024-01-02,100,101,99,,1000", "close must not be missing"),
        (HEADER, "2024-01-02,100,inf,99,100.5,1000", "high must be finite"),
        (HEADER, "2024-01-02,100,100.2,99,100.5,1000", "high >= max(open, close)"),
        (HEADER, "2024-01-02,100,101,100.2,100.5,1000", "low <= min(open, close)"),
        (HEADER, "2024-01-02,0,0,0,0,1000", "low > 0"),
        (HEADER, "2024-01-02,100,101,99,100.5,-5", "volume >= 0"),
    ],
)
@pytest.mark.parametrize("layout", ["single", "daily"])
def test_malformed_data_names_file_row_and_rule(
    tmp_path: Path, header: str, bad_line: str, rule: str, layout: str
) -> None:
    # Good rows carry as many fields as the header, so only the intended fault is present.
    good = ",".join(GOOD.split(",")[: header.count(",") + 1])
    if layout == "single":
        bad_file = write_csv(
            tmp_path / "RELIANCE.csv", [good, good.replace("01,", "03,", 1), bad_line], header
        )
        where = "row 3"
    else:
        day_dir = tmp_path / "RELIANCE" / "1day"
        write_csv(day_dir / "2024-01-01.csv", [GOOD])
        bad_file = write_csv(day_dir / "2024-01-02.csv", [bad_line], header)
        where = "row 1"
    with pytest.raises(DataSourceError) as info:
        CsvDirSource(tmp_path).bars("RELIANCE", D(2024, 1, 1), D(2024, 1, 31))
    message = str(info.value)
    assert str(bad_file) in message
    assert rule in message
    assert "RELIANCE" in message
    if rule != "missing column":
        assert where in message
    assert not isinstance(info.value, UnknownSymbolError)


def test_error_for_a_bad_row_names_its_timestamp_and_count(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "TCS.csv",
        [GOOD, "2024-01-02,100,101,99,100.5,-1", "2024-01-03,100,101,99,100.5,-2"],
    )
    with pytest.raises(DataSourceError) as info:
        CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 31))
    message = str(info.value)
    assert "row 2 (timestamp 2024-01-02 00:00:00+05:30)" in message
    assert "volume=-1" in message
    assert "2 offending rows" in message
    assert info.value.row == 2 and info.value.rule == "volume >= 0"


def test_empty_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "TCS.csv").write_text("")
    with pytest.raises(DataSourceError, match=r"TCS\.csv: file is empty"):
        CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 31))


def test_ragged_csv_is_an_error_naming_the_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "TCS.csv", [GOOD, "2024-01-02,1,2,3,4,5,6,7"])
    with pytest.raises(DataSourceError, match=r"TCS\.csv: not a readable CSV"):
        CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 31))


def test_surplus_fields_are_not_silently_shifted(tmp_path: Path) -> None:
    write_csv(tmp_path / "TCS.csv", ["2024-01-01,10,11,9,10,1,7", "2024-01-02,10,11,9,10,1,7"])
    with pytest.raises(DataSourceError, match=r"TCS\.csv: data rows have more fields"):
        CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 31))


def test_corrupt_parquet_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "TCS.parquet").write_bytes(b"PAR1 definitely not parquet")
    with pytest.raises(DataSourceError, match=r"TCS\.parquet: not a readable parquet"):
        CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 31))


def test_bad_row_outside_range_in_a_single_file_still_fails(tmp_path: Path) -> None:
    """A file that is read is validated whole: corruption is never silently skipped."""
    write_csv(tmp_path / "TCS.csv", ["2023-06-01,100,101,99,100.5,-1", GOOD])
    with pytest.raises(DataSourceError, match="volume >= 0"):
        CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 31))


def test_daily_file_with_an_impossible_date_name_is_refused(tmp_path: Path) -> None:
    write_csv(tmp_path / "TCS" / "1day" / "2024-02-30.csv", [GOOD])
    with pytest.raises(DataSourceError, match=r"2024-02-30\.csv: file name is not a valid date"):
        CsvDirSource(tmp_path).bars("TCS", D(2024, 2, 1), D(2024, 3, 31))


# -- unknown / ambiguous symbols ---------------------------------------------------------


def test_unknown_symbol_names_symbol_and_data_dir(tmp_path: Path) -> None:
    write_csv(tmp_path / "TCS.csv", [GOOD])
    with pytest.raises(UnknownSymbolError) as info:
        CsvDirSource(tmp_path).bars("INFY", D(2024, 1, 1), D(2024, 1, 31))
    assert "'INFY'" in str(info.value)
    assert str(tmp_path) in str(info.value)
    assert isinstance(info.value, DataSourceError)


def test_unknown_symbol_hints_at_lower_case_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "infy.csv", [GOOD])
    with pytest.raises(UnknownSymbolError, match="case-sensitive"):
        CsvDirSource(tmp_path).bars("INFY", D(2024, 1, 1), D(2024, 1, 31))


def test_symbol_directory_without_1day_is_unknown(tmp_path: Path) -> None:
    write_csv(tmp_path / "TCS" / "5minute" / "2024-01-01.csv", [GOOD])
    with pytest.raises(UnknownSymbolError):
        CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 31))


def test_symbol_in_two_layouts_is_ambiguous(tmp_path: Path) -> None:
    write_csv(tmp_path / "TCS.csv", [GOOD])
    write_csv(tmp_path / "TCS" / "1day" / "2024-01-01.csv", [GOOD])
    with pytest.raises(DataSourceError, match="more than one layout"):
        CsvDirSource(tmp_path).bars("TCS", D(2024, 1, 1), D(2024, 1, 31))


def test_invalid_symbol_is_refused_before_touching_the_filesystem(tmp_path: Path) -> None:
    with pytest.raises(InvalidSymbolError, match=r"\.\./TCS"):
        CsvDirSource(tmp_path).bars("../TCS", D(2024, 1, 1), D(2024, 1, 31))


def test_data_dir_given_as_string(tmp_path: Path) -> None:
    write_csv(tmp_path / "TCS.csv", [GOOD])
    source = CsvDirSource(str(tmp_path))  # type: ignore[arg-type]
    assert source.data_dir == tmp_path
    assert len(source.bars("TCS", D(2024, 1, 1), D(2024, 1, 1))) == 1


# -- shared validation, directly ----------------------------------------------------------


def test_validate_bars_without_file_columns_names_origin_and_position() -> None:
    frame = pd.DataFrame(
        {
            "timestamp": ["2024-01-01", "2024-01-02"],
            "open": [1, 1],
            "high": [2, 0.5],
            "low": [0.5, 0.5],
            "close": [1, 1],
            "volume": [1, 1],
        }
    )
    with pytest.raises(DataSourceError, match=r"^memory, row 2 .*high >= max\(open, close\)"):
        validate_bars(frame, origin="memory")


def test_validate_bars_drops_extra_columns_and_matches_names_case_insensitively() -> None:
    frame = pd.DataFrame(
        {
            "Timestamp": ["2024-01-01"],
            "OPEN": [1],
            "High": [2],
            "low": [0.5],
            "close": [1],
            "volume": [3],
            "oi": [9],
        }
    )
    out = validate_bars(frame, origin="memory")
    assert list(out.columns) == list(BAR_COLUMNS)
    assert out["volume"].item() == 3.0


# -- corporate actions not adjusted for ------------------------------------------------------


def test_the_jump_detector_flags_moves_beyond_the_limit_both_ways() -> None:
    close = np.array([100.0, 139.0, 100.0, 50.0, 50.5, 101.0, 72.5])
    #                        +39 %  /1.39   /2     +1 %   x2     /1.393
    assert unexplained_jumps(close, 0.4).tolist() == [False, False, False, True, False, True, False]
    assert not unexplained_jumps(close, 0.0).any()  # off
    assert unexplained_jumps(close, 0.3).tolist() == [False, True, True, True, False, True, True]


def test_an_unadjusted_bonus_is_refused_naming_the_day_and_the_limit(tmp_path: Path, monkeypatch) -> None:
    """A 1:1 bonus halves the price overnight; a history not adjusted for it would train the models
    on a -50 % day that never happened to a holder. Refused (adjusting needs the ratio, which only
    the vendor knows), naming the file, the row and the setting that allows a real move."""
    bars = reference_bars("TCS", D(2024, 1, 1), D(2024, 3, 29))
    after = bars.index >= pd.Timestamp("2024-02-15", tz=IST)
    bars.loc[after, ["open", "high", "low", "close"]] *= 0.5  # not adjusted before the ex-date
    write_daily(tmp_path, "TCS", bars)
    source = CsvDirSource(tmp_path)
    with pytest.raises(DataSourceError) as caught:
        source.bars("TCS", D(2024, 1, 1), D(2024, 3, 31))
    message = str(caught.value)
    assert "2024-02-15.csv, row 1" in message
    assert "SENSEQUANT_MAX_DAILY_MOVE=0.4" in message and "split, bonus or demerger" in message
    assert caught.value.rule.startswith("close within x1.4 of the previous close")
    assert "add TCS:<date> to SENSEQUANT_ALLOWED_MOVES" in message
    monkeypatch.setenv("SENSEQUANT_ALLOWED_MOVES", "INFY:2024-02-15, TCS:2024-02-15")  # vouched for
    assert len(source.bars("TCS", D(2024, 1, 1), D(2024, 3, 31))) == len(bars)
    monkeypatch.setenv("SENSEQUANT_ALLOWED_MOVES", "TCS 2024-02-15")
    with pytest.raises(
        SettingsError, match="SENSEQUANT_ALLOWED_MOVES: 'TCS 2024-02-15' is not SYMBOL:YYYY-MM-DD"
    ):
        source.bars("TCS", D(2024, 1, 1), D(2024, 3, 31))
    monkeypatch.delenv("SENSEQUANT_ALLOWED_MOVES")
    monkeypatch.setenv("SENSEQUANT_MAX_DAILY_MOVE", "1.5")  # or a looser limit for every symbol
    assert len(source.bars("TCS", D(2024, 1, 1), D(2024, 3, 31))) == len(bars)
    monkeypatch.setenv("SENSEQUANT_MAX_DAILY_MOVE", "nan")  # not a silent way to turn it off
    with pytest.raises(SettingsError, match="SENSEQUANT_MAX_DAILY_MOVE=nan must be a finite number"):
        source.bars("TCS", D(2024, 1, 1), D(2024, 3, 31))
