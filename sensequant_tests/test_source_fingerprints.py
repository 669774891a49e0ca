"""Change detection on the sources: data_token and window_fingerprints (what the new-data sensor polls).

Completeness rule under test (base.window_is_covered): a window is covered when the last bar is on
or after the window's last weekday (a bar after the window's end always qualifies); no holiday
calendar, no grace period.
"""

from __future__ import annotations

import builtins
import datetime as dt
import io
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from sensequant_assets.sources import (
    BarSource,
    CsvDirSource,
    DataSourceError,
    InvalidSymbolError,
    SyntheticSource,
    UnknownSymbolError,
    last_weekday,
    window_is_covered,
)

D = dt.date
HEADER = "timestamp,open,high,low,close,volume"
JAN, FEB, MAR, APR = (
    (D(2024, 1, 1), D(2024, 1, 31)),
    (D(2024, 2, 1), D(2024, 2, 29)),
    (D(2024, 3, 1), D(2024, 3, 31)),
    (D(2024, 4, 1), D(2024, 4, 30)),
)
MONTHS = [JAN, FEB, MAR, APR]
T0 = 1_700_000_000_000_000_000  # a fixed mtime (ns), so tests never depend on clock granularity


def reference_bars(
    symbol: str = "RELIANCE", start: dt.date | None = None, end: dt.date | None = None
) -> pd.DataFrame:
    """Known-good bars (synthetic, so no fixture files to maintain)."""
    return SyntheticSource(seed=1).bars(symbol, start or D(2024, 1, 1), end or D(2024, 4, 30))


def day_line(ts: pd.Timestamp, row: pd.Series, close: float | None = None) -> str:
    c = row.close if close is None else close
    high, low = max(row.high, c), min(row.low, c)
    return f"{ts.isoformat(sep=' ')},{row.open},{high},{low},{c},{row.volume}"


def write_day(
    day_dir: Path, ts: pd.Timestamp, row: pd.Series, *, close: float | None = None, mtime=T0
) -> Path:
    path = day_dir / f"{ts.date().isoformat()}.csv"
    path.write_text(f"{HEADER}\n{day_line(ts, row, close)}\n")
    os.utime(path, ns=(mtime, mtime))
    return path


def write_daily(root: Path, symbol: str, bars: pd.DataFrame, mtime: int = T0) -> Path:
    day_dir = root / symbol / "1day"
    day_dir.mkdir(parents=True, exist_ok=True)
    for ts, row in bars.iterrows():
        write_day(day_dir, ts, row, mtime=mtime)
    return day_dir


def fingerprints(source, symbol: str = "RELIANCE", windows=MONTHS) -> dict[dt.date, str | None]:
    return source.window_fingerprints(symbol, windows)


# -- the completeness rule ----------------------------------------------------------------


def test_last_weekday_skips_weekend_days_at_the_end() -> None:
    assert last_weekday(*MAR) == D(2024, 3, 29)  # Sun 31 -> Fri 29
    assert last_weekday(*JAN) == D(2024, 1, 31)  # a Wednesday
    assert last_weekday(D(2024, 6, 1), D(2024, 6, 2)) == D(2024, 6, 2)  # no weekday at all: end


def test_window_is_covered_rule() -> None:
    assert not window_is_covered(None, *JAN)  # no data covers nothing
    assert not window_is_covered(D(2024, 1, 30), *JAN)
    assert window_is_covered(D(2024, 1, 31), *JAN)  # the last weekday itself
    assert window_is_covered(D(2024, 3, 29), *MAR)  # weekend days at the end are not waited for
    # 2024-03-29 was Good Friday (NSE closed): a last bar on Thursday the 28th does not cover
    # March (no grace period) -- April's first bar, dated after the end, does.
    assert not window_is_covered(D(2024, 3, 28), *MAR)
    assert window_is_covered(D(2024, 4, 1), *MAR)


# -- csv, daily layout ------------------------------------------------------------------------


def test_daily_token_changes_only_when_the_listing_changes(tmp_path: Path) -> None:
    ref = reference_bars(end=D(2024, 2, 29))
    day_dir = write_daily(tmp_path, "RELIANCE", ref)
    source = CsvDirSource(tmp_path)
    token = source.data_token("RELIANCE")
    assert token == source.data_token("reliance") == CsvDirSource(tmp_path).data_token("RELIANCE")

    (day_dir / "2024-03-01.csv.tmp").write_text("partial download")  # not a *.csv: ignored
    (day_dir / "._2024-03-01.csv").write_text("macOS droppings")  # hidden: ignored
    assert source.data_token("RELIANCE") == token

    new = write_day(day_dir, pd.Timestamp("2024-03-01", tz="Asia/Kolkata"), ref.iloc[-1])
    added = source.data_token("RELIANCE")
    assert added != token

    os.utime(new, ns=(T0 + 1, T0 + 1))  # rewritten: same size, new mtime
    touched = source.data_token("RELIANCE")
    assert touched not in (token, added)

    new.unlink()
    assert source.data_token("RELIANCE") == token


def test_completing_a_window_leaves_earlier_fingerprints_unchanged(tmp_path: Path) -> None:
    ref = reference_bars(end=D(2024, 4, 30))
    day_dir = write_daily(tmp_path, "RELIANCE", ref.loc[:"2024-03-28"])
    source = CsvDirSource(tmp_path)
    before = fingerprints(source)
    assert before[JAN[0]] and before[FEB[0]]
    assert before[MAR[0]] is None  # last bar Thu 28th, last weekday Fri 29th (Good Friday)
    assert before[APR[0]] is None

    write_daily(tmp_path, "RELIANCE", ref.loc["2024-04-01":"2024-04-01"])  # next trading day
    after = fingerprints(source)
    assert isinstance(after[MAR[0]], str) and len(after[MAR[0]]) == 64
    assert after[JAN[0]] == before[JAN[0]] and after[FEB[0]] == before[FEB[0]]
    assert after[APR[0]] is None

    write_daily(tmp_path, "RELIANCE", ref.loc["2024-04-02":"2024-04-30"])
    full = fingerprints(source)
    assert full[APR[0]] is not None
    assert {k: full[k] for k in (JAN[0], FEB[0], MAR[0])} == {k: after[k] for k in (JAN[0], FEB[0], MAR[0])}
    assert len(set(full.values())) == 4  # windows never share a fingerprint
    assert (day_dir / "2024-04-30.csv").exists()


def test_correcting_one_day_changes_only_its_window(tmp_path: Path) -> None:
    ref = reference_bars()
    day_dir = write_daily(tmp_path, "RELIANCE", ref)
    source = CsvDirSource(tmp_path)
    before, token = fingerprints(source), source.data_token("RELIANCE")

    ts = pd.Timestamp("2024-02-14", tz="Asia/Kolkata")
    write_day(day_dir, ts, ref.loc[ts], close=round(ref.loc[ts, "close"] * 1.01, 2), mtime=T0 + 10**9)
    after = fingerprints(source)
    assert after[FEB[0]] != before[FEB[0]]
    assert {k: v for k, v in after.items() if k != FEB[0]} == {k: v for k, v in before.items() if k != FEB[0]}
    assert source.data_token("RELIANCE") != token
    # The correction is real data: bars() sees it.
    assert source.bars("RELIANCE", ts.date(), ts.date())["close"].iloc[0] != ref.loc[ts, "close"]


def test_daily_fingerprints_read_no_file_contents(tmp_path: Path, monkeypatch) -> None:
    ref = reference_bars()
    day_dir = write_daily(tmp_path, "RELIANCE", ref)
    garbage = day_dir / "2024-02-14.csv"
    garbage.write_bytes(b"\x00\xff not a csv,,,\n" * 3)  # unreadable as bars
    os.utime(garbage, ns=(T0, T0))

    def refuse(*args, **kwargs):
        raise AssertionError(f"file contents read: {args[:1]}")

    for module, name in ((builtins, "open"), (io, "open"), (os, "open"), (pd, "read_csv")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(Path, "read_bytes", refuse)
    source = CsvDirSource(tmp_path)
    got = fingerprints(source)
    assert all(isinstance(v, str) for v in got.values())
    assert source.data_token("RELIANCE")
    monkeypatch.undo()
    with pytest.raises(DataSourceError, match=r"2024-02-14\.csv"):  # bars() does read it, and fails
        source.bars("RELIANCE", *FEB)


@pytest.mark.parametrize("bad_name", ["notes.csv", "2024-02-30.csv", "2024-2-5.csv", "2024-02-05.CSV"])
def test_badly_named_daily_file_is_a_data_source_error_naming_it(tmp_path: Path, bad_name: str) -> None:
    day_dir = write_daily(tmp_path, "RELIANCE", reference_bars(end=D(2024, 2, 29)))
    (day_dir / bad_name).write_text(f"{HEADER}\n")
    source = CsvDirSource(tmp_path)
    assert source.data_token("RELIANCE")  # the token stays cheap and never judges names
    with pytest.raises(DataSourceError) as info:
        fingerprints(source)
    assert bad_name in str(info.value) and "rule: <YYYY-MM-DD>.csv" in str(info.value)
    assert info.value.rule == "file name is a date"
    assert info.value.origin == str(day_dir / bad_name)


def test_empty_daily_file_in_a_covered_window_is_named(tmp_path: Path) -> None:
    day_dir = write_daily(tmp_path, "RELIANCE", reference_bars(end=D(2024, 2, 29)))
    (day_dir / "2024-01-10.csv").write_text("")
    with pytest.raises(DataSourceError, match=r"2024-01-10\.csv: file is empty"):
        fingerprints(CsvDirSource(tmp_path))


def test_unknown_and_ambiguous_symbols(tmp_path: Path) -> None:
    write_daily(tmp_path, "RELIANCE", reference_bars(end=D(2024, 1, 31)))
    source = CsvDirSource(tmp_path)
    with pytest.raises(UnknownSymbolError, match="INFY"):
        source.data_token("INFY")
    with pytest.raises(UnknownSymbolError, match="INFY"):
        fingerprints(source, "INFY")
    reference_bars(end=D(2024, 1, 31)).to_csv(tmp_path / "RELIANCE.csv")
    with pytest.raises(DataSourceError, match="one layout per symbol"):
        source.data_token("RELIANCE")
    with pytest.raises(InvalidSymbolError):
        source.data_token("../etc")


def test_empty_daily_directory_covers_nothing(tmp_path: Path) -> None:
    (tmp_path / "TCS" / "1day").mkdir(parents=True)
    source = CsvDirSource(tmp_path)
    assert fingerprints(source, "TCS") == {start: None for start, _ in MONTHS}
    assert source.data_token("TCS")


def test_bad_windows_are_refused(tmp_path: Path) -> None:
    write_daily(tmp_path, "RELIANCE", reference_bars(end=D(2024, 1, 31)))
    with pytest.raises(ValueError, match="start is after end"):
        CsvDirSource(tmp_path).window_fingerprints("RELIANCE", [(D(2024, 2, 1), D(2024, 1, 1))])
    with pytest.raises(ValueError, match="different ends"):
        SyntheticSource().window_fingerprints("TCS", [JAN, (D(2024, 1, 1), D(2024, 2, 29))])


def test_fifty_symbols_twenty_windows_daily_layout_fingerprints(tmp_path: Path) -> None:
    """Only scandir + stat: 50 symbols x 20 monthly windows (~21k day files) all fingerprinted."""
    days = pd.bdate_range("2022-01-01", "2023-08-31")
    windows = [
        (m.date(), (m + pd.offsets.MonthEnd(0)).date())
        for m in pd.date_range("2022-01-01", periods=20, freq="MS")
    ]
    template = tmp_path / "template.csv"
    template.write_text(f"{HEADER}\n")
    symbols = [f"SYM{i:02d}" for i in range(50)]
    for sym in symbols:
        day_dir = tmp_path / "data" / sym / "1day"
        day_dir.mkdir(parents=True)
        for day in days:
            os.link(template, day_dir / f"{day.date().isoformat()}.csv")  # fast to create
    source = CsvDirSource(tmp_path / "data")
    t0 = time.perf_counter()
    tokens = {sym: source.data_token(sym) for sym in symbols}
    got = {sym: source.window_fingerprints(sym, windows) for sym in symbols}
    elapsed = time.perf_counter() - t0
    assert len(set(tokens.values())) == 50
    assert all(v is not None for fp in got.values() for v in fp.values())
    print(f"50 symbols x 20 windows: {elapsed:.3f}s")  # informative only: tests do not time things


# -- csv, single-file layout ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_single_file_correcting_one_row_changes_only_its_window(tmp_path: Path, suffix: str) -> None:
    ref = reference_bars("TCS")
    path = tmp_path / f"TCS{suffix}"

    def write(bars: pd.DataFrame, mtime: int) -> None:
        bars.to_csv(path) if suffix == ".csv" else bars.to_parquet(path)
        os.utime(path, ns=(mtime, mtime))

    write(ref, T0)
    source = CsvDirSource(tmp_path)
    before, token = fingerprints(source, "TCS"), source.data_token("TCS")
    assert all(isinstance(v, str) for v in before.values())
    assert fingerprints(source, "TCS") == before and source.data_token("TCS") == token

    fixed = ref.copy()
    ts = pd.Timestamp("2024-03-12", tz="Asia/Kolkata")
    fixed.loc[ts, "volume"] += 100.0
    write(fixed, T0 + 10**9)
    after = fingerprints(source, "TCS")
    assert after[MAR[0]] != before[MAR[0]]
    assert {k: v for k, v in after.items() if k != MAR[0]} == {k: v for k, v in before.items() if k != MAR[0]}
    assert source.data_token("TCS") != token


def test_single_file_completion_and_appending(tmp_path: Path) -> None:
    ref = reference_bars("TCS")
    ref.loc[:"2024-03-28"].to_csv(tmp_path / "TCS.csv")
    source = CsvDirSource(tmp_path)
    before = fingerprints(source, "TCS")
    assert before[FEB[0]] is not None and before[MAR[0]] is None and before[APR[0]] is None
    ref.loc[:"2024-04-01"].to_csv(tmp_path / "TCS.csv")  # appending rewrites the whole file
    after = fingerprints(source, "TCS")
    assert after[MAR[0]] is not None and after[APR[0]] is None
    assert after[JAN[0]] == before[JAN[0]] and after[FEB[0]] == before[FEB[0]]


def test_single_file_header_only_covers_nothing(tmp_path: Path) -> None:
    (tmp_path / "TCS.csv").write_text(f"{HEADER}\n")
    assert fingerprints(CsvDirSource(tmp_path), "TCS") == {start: None for start, _ in MONTHS}


@pytest.mark.parametrize(
    ("name", "content", "rule"),
    [
        ("TCS.csv", f"{HEADER}\n2024-01-02,100,101,99,100.5,-1\n", "volume >= 0"),
        ("TCS.csv", "", "file is empty"),
        ("TCS.csv", "a,b\n1,2,3,4\n", "well-formed CSV"),
        ("TCS.parquet", "not parquet at all", "valid parquet"),
    ],
)
def test_corrupt_single_file_is_a_data_source_error_naming_it(
    tmp_path: Path, name: str, content: str, rule: str
) -> None:
    (tmp_path / name).write_text(content)
    source = CsvDirSource(tmp_path)
    assert source.data_token("TCS")  # cheap: no read, no judgement
    with pytest.raises(DataSourceError, match=rule) as info:
        fingerprints(source, "TCS")
    assert name in str(info.value)


# -- synthetic --------------------------------------------------------------------------------


def test_synthetic_token_is_its_parameters() -> None:
    base = SyntheticSource(seed=0, end_date=D(2024, 3, 28))
    assert isinstance(base, BarSource)
    assert base.data_token("RELIANCE") == SyntheticSource(seed=0, end_date=D(2024, 3, 28)).data_token(
        "ANY-SYM"
    )
    variants = [
        SyntheticSource(seed=1, end_date=D(2024, 3, 28)),
        SyntheticSource(seed=0, end_date=D(2024, 4, 1)),
        SyntheticSource(seed=0),
        SyntheticSource(seed=0, end_date=D(2024, 3, 28), signal_ic=0.2),
        SyntheticSource(seed=0, end_date=D(2024, 3, 28), signal_ic=0.2, signal_horizon=5),
        SyntheticSource(seed=0, end_date=D(2024, 3, 28), random_walk=True),
        SyntheticSource(seed=0, end_date=D(2024, 3, 28), process="garch_t"),
        SyntheticSource(seed=0, end_date=D(2024, 3, 28), process="regime"),
    ]
    tokens = {base.data_token("RELIANCE"), *(v.data_token("RELIANCE") for v in variants)}
    assert len(tokens) == 1 + len(variants)
    assert base.data_token("RELIANCE") == (
        "synthetic:seed=0:process=garch:signal_ic=0.0:signal_horizon=7:end_date=2024-03-28"
    )
    with pytest.raises(InvalidSymbolError):
        base.data_token("A|B")


def test_synthetic_end_date_rule() -> None:
    capped = fingerprints(SyntheticSource(end_date=D(2024, 3, 28)))
    assert capped[JAN[0]] and capped[FEB[0]]
    assert capped[MAR[0]] is None and capped[APR[0]] is None  # 28th < last weekday (29th)
    on_last_weekday = fingerprints(SyntheticSource(end_date=D(2024, 3, 29)))
    assert on_last_weekday[MAR[0]] is not None and on_last_weekday[APR[0]] is None
    weekend = fingerprints(SyntheticSource(end_date=D(2024, 3, 30)))  # a Saturday
    assert weekend == on_last_weekday
    uncapped = fingerprints(SyntheticSource())
    assert all(v is not None for v in uncapped.values())
    # end_date only decides coverage: moving it never changes a covered window's fingerprint.
    for k in (JAN[0], FEB[0]):
        assert capped[k] == on_last_weekday[k] == uncapped[k]
    assert on_last_weekday[MAR[0]] == uncapped[MAR[0]]
    assert len(set(uncapped.values())) == 4
    assert SyntheticSource(end_date=D(2014, 12, 31)).window_fingerprints(
        "TCS", [(D(2014, 1, 1), D(2014, 1, 31))]
    ) == {
        D(2014, 1, 1): None  # before the epoch there are no bars at all
    }


def test_synthetic_fingerprint_depends_on_what_shapes_the_bars() -> None:
    base = fingerprints(SyntheticSource(seed=0))
    assert fingerprints(SyntheticSource(seed=0)) == base
    assert fingerprints(SyntheticSource(seed=0), "TCS")[JAN[0]] != base[JAN[0]]
    others = [
        SyntheticSource(seed=1),
        SyntheticSource(signal_ic=0.05),
        SyntheticSource(signal_ic=0.05, signal_horizon=5),
        SyntheticSource(signal_ic=0.05, process="garch_t"),
        SyntheticSource(random_walk=True),
        SyntheticSource(random_walk=True, signal_ic=0.05),
        SyntheticSource(process="garch_t"),
        SyntheticSource(process="regime"),
    ]
    jan = {fingerprints(other)[JAN[0]] for other in others}
    assert base[JAN[0]] not in jan and len(jan) == len(others)  # every parameter that shapes bars counts
    assert fingerprints(SyntheticSource(), "reliance") == base  # symbols are canonicalised
    # Without a signal the horizon shapes nothing: same bars, same fingerprints.
    assert fingerprints(SyntheticSource(signal_horizon=5)) == base
    assert fingerprints(SyntheticSource(process="random_walk")) == fingerprints(
        SyntheticSource(random_walk=True)
    )


def test_synthetic_fingerprints_of_the_old_parameters_are_unchanged() -> None:
    """Recorded before `process` and `signal_ic` existed: the default and the random walk keep theirs,
    so adding the parameters retrains nothing."""
    window = [(D(2024, 1, 1), D(2024, 6, 30))]
    assert SyntheticSource().window_fingerprints("RELIANCE", window) == {
        D(2024, 1, 1): "9bba62391671bab546095634df6419572a1165357acb7a15583896b10479cbea"
    }
    assert SyntheticSource(random_walk=True).window_fingerprints("TCS", window) == {
        D(2024, 1, 1): "cab4fe7acc5441d059d88236227172a61ff514ac4fe020047041f080e437ec53"
    }
