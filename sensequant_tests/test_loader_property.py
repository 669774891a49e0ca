"""Property: whatever the loader is fed, it returns valid bars or raises the project's own error.

Random malformed frames go to `validate_bars` directly, random CSV texts and bytes to
`CsvDirSource.bars` through files in both layouts. The outcome must be bars in the canonical schema
(sorted unique IST dates, finite positive prices, low <= open/close <= high, volume >= 0) or a
`DataSourceError` (subclasses included) -- never a KeyError, a pandas ParserError, a stray ValueError
or TypeError. Runs are bounded (`max_examples`, no deadline) so the file takes seconds.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sensequant_assets.sources import BAR_COLUMNS, IST, CsvDirSource, DataSourceError, validate_bars

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples every run: make test stays reproducible
)
NAMES = ("timestamp", *BAR_COLUMNS)


def assert_valid_bars(bars: pd.DataFrame) -> None:
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert all(bars[c].dtype == np.float64 for c in BAR_COLUMNS)
    index = bars.index
    assert isinstance(index, pd.DatetimeIndex) and index.name == "timestamp"
    assert str(index.tz) == IST
    assert index.is_unique and index.is_monotonic_increasing
    assert (index == index.normalize()).all()  # daily bars sit at midnight IST
    values = bars.to_numpy(dtype="float64")
    assert np.isfinite(values).all()
    o, h, lo, c, v = (bars[k].to_numpy() for k in BAR_COLUMNS)
    assert (lo > 0).all() and (v >= 0).all()
    assert (lo <= np.minimum(o, c)).all() and (h >= np.maximum(o, c)).all()


# -- random cells ----------------------------------------------------------------------------

finite_prices = st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False)
any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
numbers = st.one_of(finite_prices, any_float, st.integers(-(10**20), 10**20), st.just(0), st.just(-1.0))
junk_text = st.text(max_size=12)
numeric_text = numbers.map(str)
cells = st.one_of(numbers, numeric_text, junk_text, st.none(), st.booleans())

days = st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2035, 12, 31))
offsets = st.sampled_from(
    [
        *("", "Z", "+05:30", "+0530", "+00:00", "-05:00", "+09:00", "+14:00", "-12:00"),
        *(" +05:30", "+00", " +00", "-05", " -0500", " Z", "+05"),  # a space before, hours only
        *("  +05:30", "+5:30", " 05:30", " UTC"),  # refused
    ]
)
times = st.sampled_from(["", " 00:00:00", "T00:00:00", " 09:15", "T23:59:59", " 15:30:00.123456"])
iso_stamps = st.builds(lambda d, t, z: f"{d.isoformat()}{t}{z if t else ''}", days, times, offsets)
any_day = st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31))  # beyond ns timestamps
stamp_cells = st.one_of(
    iso_stamps,
    iso_stamps,
    st.builds(lambda d, t, z: f"{d.isoformat()}{t}{z if t else ''}", any_day, times, offsets),
    junk_text,
    st.none(),
    st.integers(-(10**12), 10**12),
    st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2035, 12, 31)),
    st.sampled_from(["2024-02-30", "2024-13-01", "02/01/2024", "NaT", "nan", "", "  2024-01-01  "]),
)


def column_name(name: str) -> st.SearchStrategy[str]:
    """The name as written, in another case, padded, or (rarely) a different column altogether."""
    return st.one_of(
        st.just(name),
        st.just(name.upper()),
        st.just(name.title()),
        st.just(f" {name} "),
        st.sampled_from(["oi", "date", "adj close", "", "Unnamed: 0", "close", "open"]),
    )


@st.composite
def good_rows(draw, n: int) -> dict[str, list]:
    """Valid bars (so some examples get past every rule and reach the sort/dedup/jump code)."""
    start = draw(days)
    dates = [start + dt.timedelta(days=i) for i in range(n)]
    close = [draw(st.floats(min_value=50, max_value=60)) for _ in range(n)]
    return {
        "timestamp": [d.isoformat() for d in dates],
        "open": close,
        "high": [c * 1.01 for c in close],
        "low": [c * 0.99 for c in close],
        "close": close,
        "volume": [float(draw(st.integers(0, 10**6))) for _ in range(n)],
    }


@st.composite
def frames(draw) -> pd.DataFrame:
    """A frame that is mostly right with random faults: renamed, dropped, shuffled columns,
    corrupted cells, shuffled and repeated rows."""
    n = draw(st.integers(0, 8))
    data = draw(good_rows(n))
    for _ in range(draw(st.integers(0, 4))):  # corrupt some cells
        if n == 0:
            break
        col = draw(st.sampled_from(NAMES))
        row = draw(st.integers(0, n - 1))
        data[col][row] = draw(stamp_cells if col == "timestamp" else cells)
    rows = draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n + 3)) if n else []
    order = rows if draw(st.booleans()) else list(range(n))  # shuffled / repeated rows
    columns = {}
    for name in draw(st.permutations(NAMES)):
        if draw(st.integers(0, 15)) == 0:
            continue  # a column left out
        columns[draw(column_name(name))] = [data[name][i] for i in order]
    frame = pd.DataFrame(columns) if columns else pd.DataFrame(index=range(len(order)))
    if draw(st.booleans()) and "timestamp" in frame:
        frame = frame.set_index("timestamp")
    return frame


@st.composite
def typed_frames(draw) -> pd.DataFrame:
    """Valid-looking bars whose columns come in the dtypes other loaders produce: tz-aware or
    naive datetimes of any unit (parquet), nullable extension types, categoricals, strings."""
    n = draw(st.integers(0, 6))
    data = draw(good_rows(n))
    stamps = pd.to_datetime(pd.Series(data["timestamp"], dtype=object), format="ISO8601")
    kind = draw(st.sampled_from(["aware", "naive", "seconds", "object", "date", "far", "numbers"]))
    if kind == "aware":
        stamps = stamps.dt.tz_localize(draw(st.sampled_from(["Asia/Kolkata", "UTC", "America/New_York"])))
    elif kind == "seconds":
        stamps = stamps.astype("datetime64[s]")
    elif kind == "object":
        stamps = pd.Series([t.to_pydatetime() for t in stamps], dtype=object)
    elif kind == "date":
        stamps = pd.Series([t.date() for t in stamps], dtype=object)
    elif kind == "far":  # a year a nanosecond timestamp cannot hold, in a coarser unit
        stamps = pd.Series(np.array(["3000-01-01"] * n, dtype="datetime64[s]"))
    elif kind == "numbers":
        stamps = pd.Series(np.arange(n, dtype="int64") * 86_400)
    frame = pd.DataFrame({"timestamp": stamps})
    for col in BAR_COLUMNS:
        values = pd.Series(data[col], dtype="float64")
        if n and draw(st.integers(0, 3)) == 0:
            values.iloc[draw(st.integers(0, n - 1))] = draw(st.sampled_from([np.nan, -1.0, 0.0, np.inf]))
        dtype = draw(st.sampled_from(["float64", "Float64", "object", "string", "category", "float32"]))
        frame[col] = values.astype(dtype)
    return frame


@given(frame=st.one_of(frames(), typed_frames()), max_move=st.sampled_from([0.0, 0.4]))
@SETTINGS
def test_validate_bars_returns_valid_bars_or_its_own_error(frame: pd.DataFrame, max_move: float) -> None:
    try:
        bars = validate_bars(frame, origin="memory", symbol="TCS", max_daily_move=max_move)
    except DataSourceError:
        return
    assert_valid_bars(bars)


# -- random CSV texts and bytes through the csv source ---------------------------------------


def csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return str(value)


# Extra columns after the required ones: none, blank cells an Excel export leaves, names repeated
# in another case. They are dropped; only the required names must be unique.
extra_columns = st.sampled_from(
    [[], [], [], ["", ""], ["", "", ""], ["Remarks", "remarks"], ["oi", " OI ", ""]]
)


@st.composite
def csv_texts(draw) -> bytes:
    """A CSV text built from a mostly-right frame with random faults in the text itself:
    stray quotes and separators, ragged rows, blank lines, a BOM, CRLF, truncation."""
    n = draw(st.integers(0, 6))
    data = draw(good_rows(n))
    for _ in range(draw(st.integers(0, 3))):
        if n == 0:
            break
        col = draw(st.sampled_from(NAMES))
        data[col][draw(st.integers(0, n - 1))] = draw(stamp_cells if col == "timestamp" else cells)
    names = list(draw(st.permutations(NAMES)))
    header = [draw(column_name(name)) for name in names] + draw(extra_columns)
    lines = [",".join(header)]
    for i in range(n):
        fields = [csv_cell(data[name][i]) for name in names] + [""] * (len(header) - len(names))
        if draw(st.integers(0, 9)) == 0:
            fields = fields[: draw(st.integers(0, len(fields)))] + draw(st.lists(junk_text, max_size=2))
        lines.append(",".join(fields))
    if draw(st.integers(0, 5)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", "  ", '"', "a,b", ",,,"])))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    raw = text.encode("utf-8")
    if draw(st.integers(0, 5)) == 0:
        raw = b"\xef\xbb\xbf" + raw
    if draw(st.integers(0, 5)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@given(n=st.integers(1, 6), data=st.data(), extra=extra_columns, layout=st.sampled_from(["single", "daily"]))
@SETTINGS
def test_extra_columns_and_offset_spellings_change_nothing(
    n: int, data, extra: list[str], layout: str
) -> None:
    """The same bars written with blank or repeated extra columns, and each offset spelled another
    way (`+05:30`, `+0530`, ` +05:30`; `+00:00`, `+00`, `Z`), read back as the same bars."""
    rows = data.draw(good_rows(n))
    hours = data.draw(st.sampled_from([0, 5, -5, 9]))
    mins = 30 if hours == 5 else 0
    sign = "-" if hours < 0 else "+"
    spellings = [f"{sign}{abs(hours):02d}:{mins:02d}", f"{sign}{abs(hours):02d}{mins:02d}"]
    spellings += [" " + z for z in spellings]
    if not mins:
        spellings += [f"{sign}{abs(hours):02d}", f" {sign}{abs(hours):02d}"] + (
            ["Z", " Z"] if not hours else []
        )
    time = data.draw(st.sampled_from([" 09:15:00", "T00:00", " 23:59:59.5"]))
    stamps = [f"{d}{time}{data.draw(st.sampled_from(spellings))}" for d in rows["timestamp"]]
    plain = [f"{d}{time}{spellings[0]}" for d in rows["timestamp"]]

    def read(timestamps: list[str], extra_names: list[str]) -> pd.DataFrame | str:
        header = ",".join([*NAMES, *extra_names])
        lines = [
            ",".join([t, *(repr(rows[c][i]) for c in BAR_COLUMNS), *[""] * len(extra_names)])
            for i, t in enumerate(timestamps)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            if layout == "single":
                (root / "TCS.csv").write_text("\n".join([header, *lines]) + "\n")
            else:
                (root / "TCS" / "1day").mkdir(parents=True)
                for day, line in zip(rows["timestamp"], lines, strict=True):
                    (root / "TCS" / "1day" / f"{day}.csv").write_text(f"{header}\n{line}\n")
            try:
                return CsvDirSource(root).bars("TCS", dt.date(1989, 1, 1), dt.date(2036, 12, 31))
            except DataSourceError as exc:  # e.g. an unadjusted-looking move: the same for both
                return f"refused: {exc.rule}"

    expected, got = read(plain, []), read(stamps, extra)
    if isinstance(expected, str):
        assert got == expected
    else:
        pd.testing.assert_frame_equal(got, expected)


not_csv = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>\n",
            b"<html>\n<head><title>404 Not Found</title></head>\n</html>",
            b"PAR1\x15\x04\x15\x10\x15\x14L\x15\x02\x15\x00\x12\x00\x00",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
            b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
            b'{"error": "rate limited"}\n',
            b"",
            b"\n\n\n",
            b"timestamp,open,high,low,close,volume",
            b"\x00\x00\x00\x00timestamp,open,high,low,close,volume\n",
            b"x" * 140_000 + b"\n1\n",  # a field above the csv module's limit
            b'timestamp,open,high,low,close,volume\n"' + b"y" * 140_000 + b"\n",
            b"timestamp;open;high;low;close;volume\n2024-01-01;1;1;1;1;1\n",
            b"timestamp\topen\thigh\tlow\tclose\tvolume\n2024-01-01\t1\t1\t1\t1\t1\n",
            b"timestamp,open,high,low,close,volume\r2024-01-01,1,1,1,1,1\r",
            b'"timestamp","open","high","low","close","volume"\n"2024-01-01","1","1","1","1","1"\n',
            b"timestamp,open,high,low,close,volume\n2024-01-01,1e400,1,1,1,1\n",
            b"timestamp,open,high,low,close,volume\n2024-01-01,1,1,1,1," + b"9" * 400 + b"\n",
            b"timestamp,open,high,low,close,volume\n3000-01-01,1,1,1,1,1\n",  # beyond ns timestamps
            b"timestamp,open,high,low,close,volume\n-1,1,1,1,1,1\n0001-01-01,1,1,1,1,1\n",
        ]
    ),
)
csv_bytes = st.one_of(csv_texts(), csv_texts(), not_csv)


@given(content=csv_bytes, max_move=st.sampled_from(["0", "0.4"]))
@SETTINGS
def test_a_single_csv_file_gives_valid_bars_or_a_data_source_error(content: bytes, max_move: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "TCS.csv").write_bytes(content)
        try:
            with _env("SENSEQUANT_MAX_DAILY_MOVE", max_move):
                bars = CsvDirSource(root).bars("TCS", dt.date(1989, 1, 1), dt.date(2036, 12, 31))
        except DataSourceError:
            return
        assert_valid_bars(bars)


@given(contents=st.lists(csv_bytes, min_size=1, max_size=4), max_move=st.sampled_from(["0", "0.4"]))
@SETTINGS
def test_daily_files_give_valid_bars_or_a_data_source_error(contents: list[bytes], max_move: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        day_dir = root / "TCS" / "1day"
        day_dir.mkdir(parents=True)
        for i, content in enumerate(contents):
            (day_dir / f"2024-01-{i + 1:02d}.csv").write_bytes(content)
        try:
            with _env("SENSEQUANT_MAX_DAILY_MOVE", max_move):
                bars = CsvDirSource(root).bars("TCS", dt.date(2024, 1, 1), dt.date(2024, 1, 31))
        except DataSourceError:
            return
        assert_valid_bars(bars)


@given(frame=st.one_of(frames(), typed_frames()), garbage=st.one_of(st.none(), st.binary(max_size=64)))
@SETTINGS
def test_a_parquet_file_gives_valid_bars_or_a_data_source_error(frame: pd.DataFrame, garbage) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "TCS.parquet"
        if garbage is not None:
            path.write_bytes(garbage)
        else:
            try:
                frame.to_parquet(path)
            except Exception:  # not every random frame can be written (mixed object columns)
                assume(False)
        try:
            bars = CsvDirSource(Path(tmp)).bars("TCS", dt.date(1989, 1, 1), dt.date(2036, 12, 31))
        except DataSourceError:
            return
        assert_valid_bars(bars)


class _env:
    """Set one environment variable for a block (monkeypatch is function-scoped, examples are not)."""

    def __init__(self, name: str, value: str) -> None:
        self.name, self.value = name, value

    def __enter__(self) -> None:
        import os

        self.saved = os.environ.get(self.name)
        os.environ[self.name] = self.value

    def __exit__(self, *exc: object) -> None:
        import os

        if self.saved is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.saved
