"""The bar-source interface, its errors and the shared vectorised bar validation.

Every source returns the same frame shape so everything downstream (features, labels, the IO
manager) can rely on it: a tz-aware `DatetimeIndex` named `timestamp` in IST (daily bars at 00:00
IST), strictly increasing and unique, and exactly the float64 columns in `BAR_COLUMNS`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

__all__ = [
    "BAR_COLUMNS",
    "IST",
    "REPAIRS_ATTR",
    "SOURCE_FILE_COL",
    "SOURCE_ROW_COL",
    "BarSource",
    "DataSourceError",
    "UnknownSymbolError",
    "Window",
    "as_date",
    "check_windows",
    "empty_bars",
    "filter_dates",
    "last_weekday",
    "repairs_of",
    "validate_bars",
    "window_is_covered",
]

IST = "Asia/Kolkata"
Window = tuple[dt.date, dt.date]  # (first day, last day), both inclusive calendar dates
BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
REQUIRED_COLUMNS: tuple[str, ...] = ("timestamp", *BAR_COLUMNS)

# Optional bookkeeping columns a loader may attach so that errors can name the exact file and
# row of a frame concatenated from many files. validate_bars consumes and drops them.
SOURCE_FILE_COL = "_source_file"
SOURCE_ROW_COL = "_source_row"

# Where validate_bars lists the repairs it made (sorting, dropping exact duplicates), one line
# each, on the frame it returns (pandas keeps `attrs` through slicing and copies); see repairs_of.
REPAIRS_ATTR = "sensequant_repairs"
_log = logging.getLogger("sensequant_assets.sources")

# Timestamp strings: an ISO 8601 calendar date, optionally a time, optionally a UTC offset after
# the time, possibly after one space: 'Z', +HH:MM, +HHMM or +HH (PostgreSQL writes UTC as '+00',
# some exports '2024-01-02 00:00:00 +05:30'). Forms pandas would also take ("2024", "2024-01",
# "20240101", "2024-1-1") are refused: each is a guess at the day a bar belongs to; so are zone
# names ('IST' is India, Israel or Ireland) and offsets without a sign or with one-digit hours.
_ISO_STAMP = (
    r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?) ?(Z|[+-]\d{2}(?::?\d{2})?)?)?$"
)
_IST_MINUTES = 330  # IST is UTC+05:30; naive timestamps are taken as IST
_FIRST_YEAR, _LAST_YEAR = 1678, 2261  # what a nanosecond timestamp holds


class DataSourceError(ValueError):
    """Bad or unusable market data. The message names symbol, window, file, row and rule where known."""

    def __init__(
        self,
        message: str,
        *,
        symbol: str | None = None,
        origin: str | None = None,
        row: int | None = None,
        rule: str | None = None,
    ) -> None:
        super().__init__(message)
        self.symbol = symbol
        self.origin = origin
        self.row = row
        self.rule = rule
        self.window: tuple[dt.date, dt.date] | None = None  # the dates asked for, set by a source


class UnknownSymbolError(DataSourceError):
    """The source has no data at all for the symbol (message names the symbol and where it looked)."""


@runtime_checkable
class BarSource(Protocol):
    """Where daily bars come from (synthetic, a csv/parquet directory, Breeze)."""

    name: str

    def bars(self, symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Bars with start <= IST calendar date <= end, in the schema described in this module.

        An empty range gives an empty frame with the same schema; an unknown symbol raises
        UnknownSymbolError.
        """
        ...

    def symbols(self) -> list[str] | None:
        """The symbols this source knows, or None when it can produce any valid symbol."""
        ...

    def data_token(self, symbol: str) -> str:
        """A cheap token that changes whenever the symbol's data may have changed.

        Meant to be polled (e.g. by a sensor, every few seconds, for every symbol): it never reads
        file contents, only listings, sizes and modification times, or the source's parameters.
        Equal tokens mean nothing changed; a different token means "look closer" with
        `window_fingerprints`. An unknown symbol raises UnknownSymbolError.
        """
        ...

    def quick_token(self, symbol: str) -> str:
        """A token cheaper than `data_token` (one stat per symbol where the source can), for a
        sensor polling an index every tick: it changes whenever data is added, removed or
        replaced by a rename, but may miss an edit made in place (which `data_token` sees), so a
        poller must still compare `window_fingerprints` now and then (the new_data sweep)."""
        ...

    def window_fingerprints(self, symbol: str, windows: Sequence[Window]) -> dict[dt.date, str | None]:
        """Window start -> a fingerprint of the window's bars, or None while the window is not covered.

        A fingerprint changes iff the window's bars may have changed (a correction, a late bar),
        and only that window's: data outside the window never changes it. None means the data does
        not yet cover the window completely (see `window_is_covered`, the rule shared by every
        source). Bad data that makes a fingerprint impossible (a daily file whose name is not a
        date, an unreadable or invalid file) raises DataSourceError naming the file and the rule.
        """
        ...


def as_date(value: dt.date | str) -> dt.date:
    """Coerce a date-like argument (date, datetime, pd.Timestamp, ISO string) to a plain date.

    datetime is a subclass of date but does not compare with it, so sources normalise first.
    """
    if isinstance(value, str):
        return dt.date.fromisoformat(value.strip())
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    raise TypeError(f"expected a date, got {type(value).__name__}: {value!r}")


def last_weekday(start: dt.date, end: dt.date) -> dt.date:
    """The last Monday-Friday date in [start, end]; `end` itself when the range has no weekday."""
    day = as_date(end)
    first = as_date(start)
    while day.weekday() >= 5 and day > first:
        day -= dt.timedelta(days=1)
    return day if day.weekday() < 5 else as_date(end)


def window_is_covered(last_bar: dt.date | None, start: dt.date, end: dt.date) -> bool:
    """Whether data whose newest bar is dated `last_bar` covers the window [start, end] completely.

    The completeness rule, the same for every source: a window is complete when the source's last
    bar is dated ON OR AFTER THE LAST WEEKDAY (Mon-Fri) of the window. This includes every case of
    a bar dated after `end` (the next trading day proves nothing more is coming for the window);
    weekend days at the end of a window are never waited for.

    There is no holiday calendar and no grace period. When the window's last weekday is an NSE
    holiday (say a window ending on a holiday Friday), the window completes only when the next
    trading day's bar, dated after `end`, arrives: completion is late by at most the holiday gap,
    but never early. A grace period ("also accept a last bar up to 3 days before the last
    weekday") was rejected: it would declare a window complete while its final sessions are merely
    late, train on the truncated window, then change the window's fingerprint (a second retrain)
    when those sessions land. A source with no bars at all covers nothing.
    """
    if last_bar is None:
        return False
    return as_date(last_bar) >= last_weekday(start, end)


def check_windows(windows: Sequence[Window]) -> list[Window]:
    """Normalise (start, end) pairs to plain dates; refuse start > end or two ends for one start."""
    out: list[Window] = []
    seen: dict[dt.date, dt.date] = {}
    for window in windows:
        start, end = (as_date(v) for v in window)
        if start > end:
            raise ValueError(f"window ({start}, {end}): start is after end")
        if seen.setdefault(start, end) != end:
            raise ValueError(f"two windows start on {start} with different ends ({seen[start]}, {end})")
        out.append((start, end))
    return out


def digest(*parts: object) -> str:
    """sha256 hex of the parts joined by a separator that cannot occur in them (NUL)."""
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


def empty_bars() -> pd.DataFrame:
    """An empty frame with the bar schema, so 'no data in range' needs no special casing."""
    index = pd.DatetimeIndex([], dtype=f"datetime64[ns, {IST}]", name="timestamp")
    return pd.DataFrame({c: np.array([], dtype="float64") for c in BAR_COLUMNS}, index=index)


def filter_dates(bars: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Rows whose IST calendar date lies in [start, end] (both inclusive)."""
    lo = pd.Timestamp(as_date(start)).tz_localize(IST)
    hi = pd.Timestamp(as_date(end)).tz_localize(IST) + pd.Timedelta(days=1)
    index = bars.index
    return bars.loc[(index >= lo) & (index < hi)]


def _within_range(stamps: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Which parsed stamps (any unit) lie in the years a nanosecond timestamp can hold."""
    years = np.asarray(pd.DatetimeIndex(stamps).year, dtype="float64")
    return (years >= _FIRST_YEAR) & (years <= _LAST_YEAR)


def _parse_timestamps(values: pd.Series) -> tuple[pd.DatetimeIndex, np.ndarray | None]:
    """Parse to an IST DatetimeIndex (ns), unparseable entries NaT, and each row's UTC offset.

    Naive values are taken as IST, aware ones converted to IST. Strings must be ISO 8601 as in
    `_ISO_STAMP`: guessing other formats (is 01/02 January or February? is "2024" a day?) would
    silently corrupt data. The offsets (minutes east of UTC, naive counted as IST's +330, NaN where
    unparseable) are returned for the one-time-zone rule; None when the column has a declared zone
    (a tz-aware dtype), which is one zone by construction.
    """
    n = len(values)
    nat = np.full(n, np.datetime64("NaT", "ns"), dtype="datetime64[ns]")
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        ok = _within_range(values)
        utc = pd.DatetimeIndex(values).tz_convert("UTC").tz_localize(None)
        out = nat.copy()
        out[ok] = utc[ok].as_unit("ns").to_numpy()
        return pd.DatetimeIndex(out).tz_localize("UTC").tz_convert(IST), None
    if pd.api.types.is_datetime64_dtype(values.dtype):
        ok = _within_range(values)
        out = nat.copy()
        out[ok] = pd.DatetimeIndex(values)[ok].as_unit("ns").to_numpy()
        offsets = np.where(ok, float(_IST_MINUTES), np.nan)
        return pd.DatetimeIndex(out).tz_localize(IST), offsets
    offsets = np.full(n, np.nan)
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        # Bare numbers are ambiguous (epoch seconds? ms? ns?): refuse them rather than guess.
        return pd.DatetimeIndex(nat).tz_localize(IST), offsets
    text = values.astype("string").str.strip()
    parts = text.str.extract(_ISO_STAMP)
    iso = parts[0].notna().to_numpy(dtype=bool)
    zone = parts[2].fillna("")
    aware = iso & (zone != "").to_numpy(dtype=bool)
    naive = iso & ~aware
    out = nat.copy()  # UTC wall times
    if aware.any():
        # Every offset as +HHMM (Z, +05:30, +0530, +05 -> +0000, +0530, +0530, +0500), then the
        # stamp rewritten as <date>T<time>+HH:MM, the one form pandas is asked to parse.
        suffix = zone[aware].str.replace("Z", "+0000").str.replace(":", "").str.pad(5, "right", "0")
        hours = suffix.str[1:3].astype("float64").to_numpy()
        mins = suffix.str[3:5].astype("float64").to_numpy()
        sign = np.where(suffix.str[0].to_numpy(dtype=object) == "-", -1.0, 1.0)
        stamp = parts[0][aware] + "T" + parts[1][aware] + suffix.str[:3] + ":" + suffix.str[3:5]
        parsed = pd.to_datetime(stamp, format="ISO8601", utc=True, errors="coerce")
        ok = parsed.notna().to_numpy(dtype=bool) & _within_range(parsed) & (hours < 24) & (mins < 60)
        utc = pd.DatetimeIndex(parsed[ok]).tz_localize(None).as_unit("ns").to_numpy()
        out[np.flatnonzero(aware)[ok]] = utc
        offsets[np.flatnonzero(aware)[ok]] = (sign * (hours * 60 + mins))[ok]
    if naive.any():
        parsed = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
        ok = parsed.notna().to_numpy(dtype=bool) & _within_range(parsed)
        local = pd.DatetimeIndex(parsed[ok]).as_unit("ns").tz_localize(IST).tz_convert("UTC")
        out[np.flatnonzero(naive)[ok]] = local.tz_localize(None).to_numpy()
        offsets[np.flatnonzero(naive)[ok]] = _IST_MINUTES
    return pd.DatetimeIndex(out).tz_localize("UTC").tz_convert(IST), offsets


def _zone_name(minutes: float) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(int(abs(minutes)), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def _to_float(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (float values, missing mask, non-numeric mask) for one column."""
    missing = values.isna().to_numpy(dtype=bool, copy=True)
    if pd.api.types.is_bool_dtype(values.dtype):
        nums = np.full(len(values), np.nan)
        return nums, missing, ~missing
    if not pd.api.types.is_numeric_dtype(values.dtype):
        text = values.astype("string").str.strip()
        missing = missing | (text == "").fillna(False).to_numpy(dtype=bool)
        values = text.mask(text == "")
    nums = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    nonnumeric = np.isnan(nums) & ~missing
    return nums, missing, nonnumeric


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def short(text: object, limit: int = 60) -> str:
    """`text` cut to `limit` characters for a message (a 200 KB "header" is not quoted whole)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _fmt(value: Any) -> str:
    """A cell as shown in a message: floats short, strings quoted, anything cut short."""
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return short(repr(value) if isinstance(value, str) else value)


def unexplained_jumps(close: np.ndarray, max_move: float) -> np.ndarray:
    """Bars (in time order) whose close is more than `max_move` above the previous close, or
    below it by the same factor (`1 / (1 + max_move)`): the signature of a split, bonus or
    demerger the history was not adjusted for (a 1:1 bonus halves the price overnight). The one
    detector of such breaks; 0 or less turns it off."""
    mask = np.zeros(len(close), dtype=bool)
    if max_move <= 0 or len(close) < 2:
        return mask
    ratio = close[1:] / close[:-1]
    mask[1:] = (ratio > 1.0 + max_move) | (ratio < 1.0 / (1.0 + max_move))
    return mask


def allowed_moves() -> set[tuple[str, str]]:
    """(SYMBOL, YYYY-MM-DD) of the real moves a user vouched for in SENSEQUANT_ALLOWED_MOVES
    (comma-separated `SYMBOL:YYYY-MM-DD`), exempt from `unexplained_jumps`."""
    from sensequant_assets.settings import SettingsError, env

    out = set()
    for item in env("SENSEQUANT_ALLOWED_MOVES").split(","):
        if not item.strip():
            continue
        symbol, _, day = item.strip().rpartition(":")
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            symbol = ""
        if not symbol:
            raise SettingsError(f"SENSEQUANT_ALLOWED_MOVES: {item.strip()!r} is not SYMBOL:YYYY-MM-DD")
        out.add((symbol.upper(), day))
    return out


def validate_bars(
    df: pd.DataFrame,
    *,
    origin: str,
    symbol: str | None = None,
    daily: bool = True,
    max_daily_move: float | None = None,
    window: Window | None = None,
    adjust_close: Callable[[pd.DatetimeIndex, np.ndarray], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Validate raw bars and return them in the canonical schema.

    `df` holds a `timestamp` column (or a DatetimeIndex / an index named `timestamp`) and the
    `BAR_COLUMNS`, in any order; column names are matched after stripping blanks and folding case
    (`Close `, `CLOSE` and `close` are one column, so two of them are refused) and extra columns
    are dropped. Loaders may add `SOURCE_FILE_COL` / `SOURCE_ROW_COL` so errors name the file and
    its data row (1-based, header not counted); otherwise `origin` and the position in `df` are
    named.

    Refusals (DataSourceError; first failing rule wins, its first offending row in input order is
    reported, with the count of offending rows): required columns present, once; timestamp
    present, ISO 8601 (`_ISO_STAMP`) and within years 1678-2261; one time zone for all timestamps
    (naive ones count as IST: a mix such as naive with `Z`, or `+05:30` with `-05:00`, would
    shift some daily bars by a day); values numeric, present and finite; volume >= 0; low > 0;
    high >= low; high >= max(open, close); low <= min(open, close); one bar per day (with
    `daily`; per timestamp otherwise): rows sharing a date must be identical; then, in time order,
    no close-to-close move beyond `max_daily_move` (default `SENSEQUANT_MAX_DAILY_MOVE`, 0.4: x1.4
    or /1.4; see `unexplained_jumps`), refused rather than repaired: adjusting for a corporate
    action needs its ratio, which only the data vendor knows. With `adjust_close` (a source's
    corporate-action back-adjustment: (dates, closes) -> adjusted closes) the rule judges the
    adjusted closes, the history the models see: a listed split is no jump, an action adjusted
    twice is one.

    Repairs (with a warning): rows out of time order are sorted; exact duplicate rows are dropped.
    Each repair is logged (logger `sensequant_assets.sources`) and listed, one line per rule
    naming symbol, file, first row and count, in the result's `attrs[REPAIRS_ATTR]` for the caller
    to show. With `window` (first, last day) only the repairs of rows dated inside it are logged and
    listed, naming the first such row and counting those rows: a source that validates a whole file
    for one window's bars (every rule above still applies to every row) does not report the other
    windows' repairs in each of them. With `daily`, timestamps are normalised to midnight IST of
    their IST calendar date (not a repair: the time of a daily bar carries no information).
    """
    frame = df
    has_column = "timestamp" in {str(c).strip().lower() for c in frame.columns}
    index_is_time = frame.index.name == "timestamp" or isinstance(frame.index, pd.DatetimeIndex)
    if not has_column and index_is_time:
        frame = frame.rename_axis("timestamp").reset_index()
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    where_origin = f"{symbol}: {origin}" if symbol else origin

    missing_cols = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing_cols:
        found = [short(c) for c in frame.columns if c not in (SOURCE_FILE_COL, SOURCE_ROW_COL)][:20]
        files = sorted(set(frame[SOURCE_FILE_COL].astype(str))) if SOURCE_FILE_COL in frame else []
        where = f"{where_origin} ({', '.join(files[:3])})" if files else where_origin
        raise DataSourceError(
            f"{where}: missing column(s) {missing_cols} (rule: required columns "
            f"{','.join(REQUIRED_COLUMNS)}); found {found}",
            symbol=symbol,
            origin=origin,
            rule="required columns",
        )
    required = frame.columns.isin(REQUIRED_COLUMNS)
    if frame.columns[required].duplicated().any():
        dups = sorted(set(frame.columns[required][frame.columns[required].duplicated()]))
        raise DataSourceError(
            f"{where_origin}: duplicate column(s) {dups} (rule: unique column names)",
            symbol=symbol,
            origin=origin,
            rule="unique column names",
        )
    # Extra columns go before any use: their names may repeat (`Remarks`, `remarks`, blank ones).
    frame = frame.loc[:, required | frame.columns.isin([SOURCE_FILE_COL, SOURCE_ROW_COL])]

    n = len(frame)
    file_col = frame[SOURCE_FILE_COL].to_numpy() if SOURCE_FILE_COL in frame else None
    row_col = (
        frame[SOURCE_ROW_COL].to_numpy(dtype="int64") if SOURCE_ROW_COL in frame else np.arange(1, n + 1)
    )

    def place(pos: int) -> str:
        """'SYMBOL: file, row N' of an input position."""
        where = str(file_col[pos]) if file_col is not None else origin
        return f"{symbol + ': ' if symbol else ''}{where}, row {int(row_col[pos])}"

    def near(pos: int, seen_from: int) -> str:
        """'row N', or 'file, row N' when `pos` is in another file than `seen_from`."""
        if file_col is not None and file_col[pos] != file_col[seen_from]:
            return f"{file_col[pos]}, row {int(row_col[pos])}"
        return f"row {int(row_col[pos])}"

    def fail(
        mask: np.ndarray,
        rule: str,
        shown: dict[str, np.ndarray],
        ts_text: str | None = None,
        note: str = "",
    ) -> None:
        pos = int(np.flatnonzero(mask)[0])
        count = int(mask.sum())
        where = str(file_col[pos]) if file_col is not None else origin
        stamp = ts_text if ts_text is not None else str(timestamps[pos])
        detail = "; " + ", ".join(f"{k}={_fmt(a[pos])}" for k, a in shown.items()) if shown else ""
        more = f" [{count} offending rows in total]" if count > 1 else ""
        raise DataSourceError(
            f"{place(pos)} (timestamp {stamp}): rule violated: {rule}{detail}{note}{more}",
            symbol=symbol,
            origin=f"{symbol}: {where}" if symbol else where,
            row=int(row_col[pos]),
            rule=rule,
        )

    timestamps, offsets = _parse_timestamps(frame["timestamp"])
    bad_ts = np.asarray(timestamps.isna(), dtype=bool)
    if bad_ts.any():
        raw = frame["timestamp"].iloc[int(np.flatnonzero(bad_ts)[0])]
        fail(
            bad_ts,
            "timestamp must be present and ISO 8601 (e.g. 2024-01-01 00:00:00+05:30; years 1678-2261)",
            {},
            ts_text="<missing>" if _is_missing(raw) else _fmt(raw),
        )
    if offsets is not None and n and (offsets != offsets[0]).any():
        other = offsets != offsets[0]
        at = int(np.flatnonzero(other)[0])
        fail(
            other,
            "one time zone for all timestamps (naive ones are IST, +05:30): convert them to one zone",
            {},
            ts_text=_fmt(frame["timestamp"].iloc[at]),
            note=f"; this row is {_zone_name(offsets[at])}, {near(0, at)} is {_zone_name(offsets[0])}",
        )
    if daily:
        timestamps = timestamps.normalize()

    columns: dict[str, np.ndarray] = {}
    for col in BAR_COLUMNS:  # a loop over 5 columns, each check vectorised over rows
        nums, missing, nonnumeric = _to_float(frame[col])
        raw_values = {col: frame[col].to_numpy()}
        if missing.any():
            fail(missing, f"{col} must not be missing (NaN/empty)", {})
        if nonnumeric.any():
            fail(nonnumeric, f"{col} must be numeric", raw_values)
        nonfinite = ~np.isfinite(nums)
        if nonfinite.any():
            fail(nonfinite, f"{col} must be finite", raw_values)
        columns[col] = nums

    o, h, lo, c, v = (columns[k] for k in BAR_COLUMNS)
    checks: list[tuple[np.ndarray, str, dict[str, np.ndarray]]] = [
        (v < 0, "volume >= 0", {"volume": v}),
        (lo <= 0, "low > 0", {"low": lo}),
        (h < lo, "high >= low", {"high": h, "low": lo}),
        (h < np.maximum(o, c), "high >= max(open, close)", {"high": h, "open": o, "close": c}),
        (lo > np.minimum(o, c), "low <= min(open, close)", {"low": lo, "open": o, "close": c}),
    ]
    for mask, rule, shown in checks:
        if mask.any():
            fail(mask, rule, shown)

    repairs: list[str] = []
    stamps = timestamps.asi8
    if window is None:
        reported, scope = np.ones(n, dtype=bool), "in total"
    else:
        first_day, last_day = (as_date(d) for d in window)
        lo_ns = pd.Timestamp(first_day).tz_localize(IST).value
        hi_ns = (pd.Timestamp(last_day).tz_localize(IST) + pd.Timedelta(days=1)).value
        reported, scope = (stamps >= lo_ns) & (stamps < hi_ns), f"in the window {first_day}..{last_day}"
    order = np.argsort(stamps, kind="stable")  # stable: input order kept among ties
    index = timestamps[order]
    values = np.column_stack([columns[k] for k in BAR_COLUMNS])[order]
    same_time = np.zeros(n, dtype=bool)
    same_time[1:] = stamps[order][1:] == stamps[order][:-1]
    same_values = np.zeros(n, dtype=bool)
    same_values[1:] = (values[1:] == values[:-1]).all(axis=1)
    if (same_time & ~same_values).any():
        conflict = np.zeros(n, dtype=bool)
        conflict[order[same_time & ~same_values]] = True
        first = int(np.flatnonzero(conflict)[0])
        earlier = order[int(np.flatnonzero(order == first)[0]) - 1]  # the row it differs from
        unit = "day" if daily else "timestamp"
        fail(
            conflict,
            f"one bar per {unit}: rows for the same {unit} must be identical (keep the right one"
            + (" or, for intraday bars, aggregate them to one daily bar" if daily else "")
            + ")",
            {k: columns[k] for k in BAR_COLUMNS},
            note=f"; differs from {near(earlier, first)}: "
            + ", ".join(f"{k}={_fmt(columns[k][earlier])}" for k in BAR_COLUMNS),
        )
    dropped = order[same_time]  # only exact copies are left: dropping them loses nothing
    dropped = dropped[reported[dropped]]
    if len(dropped):
        first = int(dropped.min())
        twin = order[int(np.flatnonzero(order == first)[0]) - 1]
        unit = "day" if daily else "timestamp"
        repairs.append(
            f"{place(first)} (timestamp {timestamps[first]}): exact duplicate of {near(twin, first)}, "
            f"dropped (rule: one bar per {unit}) [{len(dropped)} duplicate rows {scope}]"
        )
    kept = order[~same_time]  # positions in the input of the rows kept, in time order
    index = index[~same_time]
    backwards = np.zeros(n, dtype=bool)
    backwards[1:] = stamps[1:] < np.maximum.accumulate(stamps)[:-1]  # before a row above it
    backwards &= reported
    if backwards.any():
        at = int(np.flatnonzero(backwards)[0])
        repairs.append(
            f"{place(at)} (timestamp {timestamps[at]}): earlier than a row above it, sorted by time "
            f"(rule: rows in time order) [{int(backwards.sum())} rows out of order {scope}]"
        )

    if max_daily_move is None:
        from sensequant_assets.settings import number

        max_daily_move = float(number("SENSEQUANT_MAX_DAILY_MOVE", float, 0.0))
    closes = c[kept] if adjust_close is None else adjust_close(index, c[kept])
    jumps = unexplained_jumps(closes, max_daily_move)
    if jumps.any() and symbol:
        allowed = allowed_moves()
        days = index.strftime("%Y-%m-%d")
        jumps &= ~np.array([(symbol.upper(), day) in allowed for day in days], dtype=bool)
    if jumps.any():
        at = np.zeros(n, dtype=bool)
        at[kept[np.flatnonzero(jumps)[0]]] = True  # the earliest in time, whatever the input order
        previous = np.full(n, np.nan)
        previous[kept[1:]] = c[kept[:-1]]
        count = int(jumps.sum())
        fail(
            at,
            f"close within x{1 + max_daily_move:g} of the previous close (SENSEQUANT_MAX_DAILY_MOVE="
            f"{max_daily_move:g}): a split, bonus or demerger not adjusted for? Adjust the history or list "
            "the action in SENSEQUANT_CORPORATE_ACTIONS_FILE; "
            f"for a real move, add {(symbol or 'SYMBOL').upper()}:<date> to SENSEQUANT_ALLOWED_MOVES"
            + (f" [{count} such days in all]" if count > 1 else ""),
            {"close": c, "previous_close": previous},
        )
    out = pd.DataFrame(
        {k: columns[k][kept] for k in BAR_COLUMNS},
        index=pd.DatetimeIndex(index, name="timestamp"),
    )
    for note in repairs:
        _log.warning("repaired: %s", note)
    out.attrs[REPAIRS_ATTR] = repairs
    return out


def repairs_of(bars: pd.DataFrame) -> list[str]:
    """The repairs `validate_bars` made to produce `bars` (empty when none, or not validated)."""
    return list(bars.attrs.get(REPAIRS_ATTR, []))
