"""Daily bars from Breeze into the local cache that the csv source reads.

The cache is the predecessor's layout, `<cache>/<SYMBOL>/1day/<YYYY-MM-DD>.csv`, one file per day
holding `timestamp,open,high,low,close,volume` with an IST-aware timestamp, exactly what
`CsvDirSource` reads. Rules of a fetch (`BreezeIngestor.ingest`):
- Only what is missing is asked for: the ranges already fetched are recorded in the cache's state
  file, except the last `refresh_days` NSE sessions up to the newest complete day, which are asked
  again (late corrections). A day's bar is asked for once the day is over (after 18:00 IST). A
  recorded range counts only while its day files are there: a session it covers whose file is
  gone (and for which Breeze did not answer "no bar") is asked again.
- Sessions are `pandas_market_calendars`' XNSE calendar's (weekdays past the years it knows).
  An empty answer over days holding sessions is never recorded as fetched: it is asked again on
  the next run. If Breeze answers nothing at all for a symbol whose cache holds no bar (looking
  on to the newest day), or nothing for days the cache holds bars for, its stock code is wrong:
  an error naming the symbol, the code and the codes file, with nothing recorded. Sessions after
  the symbol's newest bar are never recorded either (not published yet, or a suspension).
- Each call asks for up to 980 weekdays (Breeze answers at most 1,000 rows a call; the 20 left
  cover NSE's rare weekend sessions), so a call is never cut short; a chunk that still comes back
  with 1,000 rows is split and asked again rather than trusted.
- Rows are checked (`validate_bars`, without the jump check: the raw cache stays as fetched;
  adjustments and the jump check happen when the csv source reads it) before anything is
  written. Any error leaves the symbol's cache byte for byte as it was; the quota stopping a fetch
  keeps the chunks already fetched and the next run resumes after them.
- Files are only added or corrected (a day whose values changed), never removed, each written to a
  temporary file in the same directory, flushed to disk and renamed over the old one
  (`os.replace`), with an ordinary file's mode; a symbol Breeze has no bar for gets no directory.
No Dagster here.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .base import BAR_COLUMNS, DataSourceError, empty_bars, filter_dates, validate_bars
from .breeze_client import BreezeApiError, BreezeSession
from .breeze_codes import code_origin, isec_code
from .breeze_state import (
    Clock,
    QuotaExhaustedError,
    StateFile,
    _fsync_directory,
    ist_now,
    merge_ranges,
    missing_ranges,
    replace_atomically,
)
from .csv_dir import DAILY_SUBDIR
from .quality import calendar_known_until, nse_sessions
from .symbols import validate_symbol

__all__ = [
    "CHUNK_WEEKDAYS",
    "MAX_ROWS_PER_CALL",
    "BreezeIngestor",
    "IngestResult",
    "chunk_end",
    "last_complete_day",
    "plan_chunks",
    "refresh_from",
    "rows_to_bars",
    "sessions",
    "write_day_files",
]

MAX_ROWS_PER_CALL = 1000
CHUNK_WEEKDAYS = MAX_ROWS_PER_CALL - 20
DAY_OVER_HOUR_IST = 18  # NSE closes at 15:30; a day's bar is final some time after
HEADER = "timestamp," + ",".join(BAR_COLUMNS)
DateRange = tuple[dt.date, dt.date]
_ONE_DAY = dt.timedelta(days=1)


def last_complete_day(now_ist: dt.datetime) -> dt.date:
    """The newest day whose daily bar is final: today after 18:00 IST, else yesterday."""
    today = now_ist.date()
    return today if now_ist.hour >= DAY_OVER_HOUR_IST else today - _ONE_DAY


_NO_DAYS = np.array([], dtype="datetime64[D]")


def sessions(first: dt.date, last: dt.date) -> np.ndarray:
    """NSE sessions in [first, last] (datetime64[D]): the XNSE calendar's, and every weekday after
    the last year it lists holidays for."""
    if first > last:
        return _NO_DAYS
    known = calendar_known_until()
    listed = nse_sessions(first, min(last, known)) if first <= known else _NO_DAYS
    if last <= known:
        return listed
    days = np.arange(np.datetime64(max(first, known + _ONE_DAY), "D"), np.datetime64(last + _ONE_DAY, "D"))
    return np.concatenate([listed, days[np.is_busday(days)]])


def refresh_from(newest: dt.date, refresh_sessions: int) -> dt.date:
    """The first day asked again by every fetch: the `refresh_sessions`-th NSE session counting
    back from `newest` (a long weekend does not shorten it); after `newest` when 0."""
    if refresh_sessions <= 0:
        return newest + _ONE_DAY
    recent = sessions(newest - dt.timedelta(days=2 * refresh_sessions + 30), newest)
    return _date(recent[-min(refresh_sessions, len(recent))]) if len(recent) else newest


def _date(day: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(day))


def _runs(days: np.ndarray, among: np.ndarray) -> list[DateRange]:
    """`days` (a sorted subset of `among`) as ranges of days consecutive in `among`."""
    if not len(days):
        return []
    at = np.searchsorted(among, days)
    breaks = np.flatnonzero(np.diff(at) != 1) + 1
    return [(_date(run[0]), _date(run[-1])) for run in np.split(days, breaks)]


def _within(days: np.ndarray, ranges: Sequence[DateRange]) -> np.ndarray:
    """Which of `days` (datetime64[D]) fall in one of `ranges`."""
    inside = np.zeros(len(days), dtype=bool)
    for first, last in ranges:
        inside |= (days >= np.datetime64(first, "D")) & (days <= np.datetime64(last, "D"))
    return inside


def cached_days(folder: Path) -> np.ndarray:
    """The days a symbol's cache holds a file for (a directory listing, no file read), sorted."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return _NO_DAYS
    days = []
    for name in names:
        if name.endswith(".csv") and not name.startswith(".") and len(name) == 14:
            try:
                days.append(np.datetime64(name[:10], "D"))
            except ValueError:
                continue
    return np.unique(np.asarray(days, dtype="datetime64[D]"))


def chunk_end(first: dt.date, last_day: dt.date, weekdays: int = CHUNK_WEEKDAYS) -> dt.date:
    """The last day of a call starting at `first`: the day before its (weekdays + 1)-th weekday,
    so the call holds at most `weekdays` weekdays; never after `last_day`."""
    nth = np.busday_offset(np.datetime64(first, "D"), weekdays, roll="forward")
    return min(last_day, nth.astype(dt.date) - _ONE_DAY)


def plan_chunks(
    missing: Sequence[DateRange], last_day: dt.date, weekdays: int = CHUNK_WEEKDAYS
) -> list[DateRange]:
    """Calls covering every missing range, oldest first. A call costs the same for one row or
    a thousand, so each is filled up to `weekdays` (and `last_day`), which also covers what
    comes after the range: the next windows of a history then need no call of their own."""
    chunks: list[DateRange] = []
    for first, last in missing:
        cursor = max(first, chunks[-1][1] + _ONE_DAY) if chunks else first
        while cursor <= last:
            end = chunk_end(cursor, last_day, weekdays)
            chunks.append((cursor, end))
            cursor = end + _ONE_DAY
    return chunks


_ROW_KEYS = ("datetime", *BAR_COLUMNS)


def rows_to_bars(rows: Sequence[Any], symbol: str, stock_code: str, chunk: DateRange) -> pd.DataFrame:
    """Breeze rows as validated bars of the chunk's days; BreezeApiError naming symbol, code,
    chunk, row and rule when a row is malformed or belongs to another share."""
    what = f"{symbol} ({stock_code}) {chunk[0]}..{chunk[1]}"
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise BreezeApiError(
                f"{what}: Breeze row {number} is a {type(row).__name__}, not a record",
                symbol=symbol,
                rule="row",
            )
        if missing := [k for k in _ROW_KEYS if k not in row]:
            raise BreezeApiError(
                f"{what}: Breeze row {number} lacks {missing} (has {sorted(row)[:12]})",
                symbol=symbol,
                rule="row",
            )
        code = row.get("stock_code")
        if code not in (None, "") and str(code).strip().upper() != stock_code:
            raise BreezeApiError(
                f"{what}: Breeze row {number} is for stock code {code!r}, not {stock_code}",
                symbol=symbol,
                rule="row for the share asked for",
            )
        exchange = row.get("exchange_code")
        if exchange not in (None, "") and str(exchange).strip().upper() != "NSE":
            raise BreezeApiError(
                f"{what}: Breeze row {number} is from exchange {exchange!r}, not NSE",
                symbol=symbol,
                rule="row",
            )
    if not rows:
        return empty_bars()
    frame = pd.DataFrame(
        {"timestamp": [r["datetime"] for r in rows], **{c: [r[c] for r in rows] for c in BAR_COLUMNS}}
    )
    try:
        bars = validate_bars(frame, origin=f"Breeze answer for {what}", symbol=symbol, max_daily_move=0.0)
    except DataSourceError as exc:
        raise BreezeApiError(
            f"{what}: Breeze answered malformed rows: {exc}", symbol=symbol, rule=exc.rule
        ) from None
    return filter_dates(bars, *chunk)


def _number(value: float) -> str:
    """Exact and short: integral values without a decimal point (volumes), others as repr."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def day_file_bytes(day: dt.date, values: Sequence[float]) -> bytes:
    line = ",".join([f"{day.isoformat()} 00:00:00+05:30", *(_number(float(v)) for v in values)])
    return f"{HEADER}\n{line}\n".encode()


def _same_bar(existing: bytes, day: dt.date, values: Sequence[float]) -> bool:
    """Whether a cached day file holds this bar (any number spelling), so it is left untouched."""
    try:
        lines = [line.strip() for line in existing.decode("utf-8").strip().splitlines()]
        if len(lines) != 2 or [c.strip().lower() for c in lines[0].split(",")] != HEADER.split(","):
            return False
        fields = lines[1].split(",")
        return fields[0].strip()[:10] == day.isoformat() and [float(f) for f in fields[1:]] == [
            float(v) for v in values
        ]
    except ValueError:
        return False


def _replace_atomically(path: Path, data: bytes) -> None:
    """`replace_atomically` for one day file (the directory is synced once by the caller)."""
    replace_atomically(path, data, sync_directory=False)


def write_day_files(cache_dir: Path, symbol: str, bars: pd.DataFrame) -> tuple[int, int, int]:
    """(added, corrected, unchanged) day files for `bars`; files of other days are not touched, and
    no directory is made for no bars."""
    if bars.empty:
        return 0, 0, 0
    directory = Path(cache_dir) / validate_symbol(symbol) / DAILY_SUBDIR
    directory.mkdir(parents=True, exist_ok=True)
    added = corrected = unchanged = 0
    values = bars[list(BAR_COLUMNS)].to_numpy(dtype="float64")
    for stamp, row in zip(bars.index, values, strict=True):
        day = stamp.date()
        path = directory / f"{day.isoformat()}.csv"
        data = day_file_bytes(day, row)
        try:
            existing = path.read_bytes()
        except FileNotFoundError:
            existing = None
        if existing is not None and (existing == data or _same_bar(existing, day, row)):
            unchanged += 1
            continue
        _replace_atomically(path, data)
        if existing is None:
            added += 1
        else:
            corrected += 1
    if added or corrected:
        _fsync_directory(directory)
    return added, corrected, unchanged


@dataclass
class IngestResult:
    """What one symbol's fetch did (shown per partition in the UI)."""

    symbol: str
    stock_code: str
    asked: DateRange | None  # the range wanted, cut at the newest complete day
    chunks: list[DateRange] = field(default_factory=list)  # the calls' date ranges, done
    calls: int = 0  # API calls, retries and the session's included
    rows_fetched: int = 0
    added: int = 0
    corrected: int = 0
    unchanged: int = 0
    stopped: str | None = None  # why it stopped before the end (the quota)
    unsettled: list[DateRange] = field(default_factory=list)  # answered empty: asked again next run
    refetched: int = 0  # sessions recorded as fetched whose day file was gone, asked again


@dataclass
class _Record:
    """What the state file says a symbol has fetched: `fetched` ranges, and within them the
    sessions Breeze answered without a bar (`no_bar`), so that only a missing file is asked again."""

    fetched: list[DateRange] = field(default_factory=list)
    no_bar: list[DateRange] = field(default_factory=list)


def _ranges(raw: Any) -> list[DateRange]:
    return [(dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in raw or []]


def _record(data: dict[str, Any], symbol: str, stock_code: str) -> _Record:
    entry = (data.get("symbols") or {}).get(symbol) or {}
    if entry.get("stock_code") != stock_code:  # a code changed in the codes file: ask again
        return _Record()
    return _Record(merge_ranges(_ranges(entry.get("fetched"))), _ranges(entry.get("no_bar")))


def _iso(ranges: Sequence[DateRange]) -> list[list[str]]:
    return [[a.isoformat(), b.isoformat()] for a, b in ranges]


class BreezeIngestor:
    """Fills the cache for (symbol, date range) requests; see the module docstring for the rules."""

    def __init__(
        self,
        session: BreezeSession,
        cache_dir: str | Path,
        clock: Clock,
        *,
        refresh_days: int = 5,
        codes_file: str | Path | None = None,
        chunk_weekdays: int = CHUNK_WEEKDAYS,
    ) -> None:
        self.session, self.cache_dir, self.clock = session, Path(cache_dir), clock
        self.state = StateFile(self.cache_dir)
        self.refresh_days, self.codes_file, self.chunk_weekdays = refresh_days, codes_file, chunk_weekdays

    def ingest(self, symbol: str, first: dt.date, last: dt.date) -> IngestResult:
        """Make the cache hold Breeze's bars of `symbol` for [first, last] (up to the newest
        complete day). Raises StockCodeError, BreezeAuthError or BreezeApiError with nothing of
        the symbol written; stops at the quota with `stopped` set, keeping what it fetched."""
        symbol = validate_symbol(symbol)
        code = isec_code(symbol, self.codes_file)
        with self.state.locked(f"symbol-{symbol}"):  # one fetch per symbol at a time, across runs
            calls_before = self.session.budget.calls
            result = self._ingest(symbol, code, first, last)
            result.calls = self.session.budget.calls - calls_before
            return result

    def _missing(self, want: DateRange, record: _Record, cached: np.ndarray) -> tuple[list[DateRange], int]:
        """The ranges of `want` to ask for: those not recorded as fetched, and the recorded
        sessions whose day file is gone (not those Breeze answered without a bar); and how many
        sessions are asked again for a missing file."""
        missing = missing_ranges(want, record.fetched)
        covered = [r for r in record.fetched if r[0] <= want[1] and r[1] >= want[0]]
        if not covered:
            return missing, 0
        days = sessions(max(want[0], covered[0][0]), min(want[1], covered[-1][1]))
        days = days[_within(days, covered) & ~np.isin(days, cached) & ~_within(days, record.no_bar)]
        gone = [(d, d) for d in map(_date, days)]
        return merge_ranges(missing + gone), len(gone)

    def _ingest(self, symbol: str, code: str, first: dt.date, last: dt.date) -> IngestResult:
        newest = last_complete_day(ist_now(self.clock))
        last = min(last, newest)
        if first > last:
            return IngestResult(symbol, code, None)
        result = IngestResult(symbol, code, (first, last))
        final_until = refresh_from(newest, self.refresh_days) - _ONE_DAY
        cached = cached_days(self.cache_dir / symbol / DAILY_SUBDIR)
        record = _record(self.state.read(), symbol, code)
        missing, result.refetched = self._missing((first, last), record, cached)
        fetched: list[tuple[DateRange, pd.DataFrame]] = []
        pending = plan_chunks(missing, newest, self.chunk_weekdays)
        probed = False
        while pending:
            chunk = pending.pop(0)
            try:
                rows = self.session.daily_rows(symbol, code, chunk[0].isoformat(), chunk[1].isoformat())
            except QuotaExhaustedError as exc:
                result.stopped = f"{symbol}: stopped before {chunk[0]}: {exc}"
                break
            if len(rows) >= MAX_ROWS_PER_CALL and chunk[0] < chunk[1]:  # possibly cut short: halve it
                middle = chunk[0] + (chunk[1] - chunk[0]) / 2
                pending[:0] = [(chunk[0], middle), (middle + _ONE_DAY, chunk[1])]
                continue
            fetched.append((chunk, rows_to_bars(rows, symbol, code, chunk)))
            result.rows_fetched += len(rows)
            if not pending and not probed and not len(cached) and not result.rows_fetched:
                # Nothing yet, and no bar cached: look on to the newest day (a share listed later
                # answers there; a wrong code answers nothing anywhere).
                probed = True
                pending = plan_chunks([(chunk[1] + _ONE_DAY, newest)], newest, self.chunk_weekdays)
        if fetched and not result.rows_fetched and result.stopped is None:
            self._check_not_all_empty(symbol, code, [c for c, _ in fetched], cached)
        for chunk, bars in fetched:  # oldest first: coverage only ever grows from the past
            added, corrected, unchanged = write_day_files(self.cache_dir, symbol, bars)
            result.added, result.corrected, result.unchanged = (
                result.added + added,
                result.corrected + corrected,
                result.unchanged + unchanged,
            )
            result.chunks.append(chunk)
        self._record_fetched(symbol, code, fetched, cached, final_until, result)
        return result

    def _check_not_all_empty(
        self, symbol: str, code: str, chunks: list[DateRange], cached: np.ndarray
    ) -> None:
        """Breeze answered no row for any of `chunks`: a wrong stock code when they hold sessions
        and the cache has no bar at all, or has bars on days Breeze says have none."""
        asked = np.concatenate([sessions(a, b) for a, b in chunks])
        if not len(asked):
            return
        held = int(np.isin(cached, asked).sum())
        if len(cached) and not held:
            return  # only days past the newest bar or before the first: asked again next run
        what = (
            f"none of the {held} bars the cache holds on these days"
            if held
            else f"no bar for any of the {len(asked)} NSE sessions asked"
        )
        span = f"{chunks[0][0]}..{chunks[-1][1]}"
        raise BreezeApiError(
            f"{symbol} ({code}): Breeze answered {what} ({span}): the ISEC stock code {code} is "
            f"probably wrong. Check {symbol}'s code in {code_origin(symbol, self.codes_file)} against "
            "Breeze's Security Master (NSEScripMaster.txt, column ShortName). Nothing was recorded "
            "as fetched",
            symbol=symbol,
            origin=code_origin(symbol, self.codes_file),
            rule="stock code answers",
        )

    def _record_fetched(
        self,
        symbol: str,
        code: str,
        fetched: list[tuple[DateRange, pd.DataFrame]],
        cached: np.ndarray,
        final_until: dt.date,
        result: IngestResult,
    ) -> None:
        """Record the settled part of each answered chunk: up to `final_until` (older days are not
        asked again), and never an empty answer over sessions nor sessions after the symbol's
        newest bar (both asked again on the next run). Sessions of a recorded range that Breeze
        answered without a bar are recorded as such (`no_bar`)."""
        bar_days = [cached, *(b.index.tz_localize(None).normalize().to_numpy() for _, b in fetched)]
        known = np.unique(np.concatenate([d.astype("datetime64[D]") for d in bar_days]))
        newest_bar = _date(known[-1]) if len(known) else None
        final: list[DateRange] = []
        no_bar: list[DateRange] = []
        for (a, b), bars in fetched:
            end = min(b, final_until)
            if end < a:
                continue
            days = sessions(a, end)
            if bars.empty and len(days):
                result.unsettled.append((a, b))
                continue
            if newest_bar is not None and len(days) and days[-1] > np.datetime64(newest_bar, "D"):
                end = max(newest_bar, a - _ONE_DAY)  # no bar yet after the newest: asked again
                days = days[days <= np.datetime64(end, "D")]
                if end < a:
                    continue
            final.append((a, end))
            no_bar += _runs(days[~np.isin(days, known)], days)
        if not final:
            return
        with self.state.update() as data:
            have = _record(data, symbol, code)
            # a re-answered range replaces what was recorded as "no bar" in it
            kept = [part for r in have.no_bar for part in missing_ranges(r, final)]
            data.setdefault("symbols", {})[symbol] = {
                "stock_code": code,
                "fetched": _iso(merge_ranges(have.fetched + final)),
                "no_bar": _iso(sorted(kept + no_bar)),
            }
