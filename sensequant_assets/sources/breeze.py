"""Daily bars from Breeze into the local cache that the csv source reads.

The cache is the predecessor's layout, `<cache>/<SYMBOL>/1day/<YYYY-MM-DD>.csv`, one file per day
holding `timestamp,open,high,low,close,volume` with an IST-aware timestamp, exactly what
`CsvDirSource` reads. Rules of a fetch (`BreezeIngestor.ingest`):
- Only what is missing is asked for: the ranges already fetched are recorded in the cache's state
  file, except the last `refresh_days` before the newest complete day, which are asked again
  (late corrections). A day's bar is asked for once the day is over (after 18:00 IST).
- Each call asks for up to 980 weekdays (Breeze answers at most 1,000 rows a call; the 20 left
  cover NSE's rare weekend sessions), so a call is never cut short; a chunk that still comes back
  with 1,000 rows is split and asked again rather than trusted.
- Rows are checked (`validate_bars`, without the jump check: the raw cache stays as fetched;
  adjustments and the jump check happen when the csv source reads it) before anything is
  written. Any error leaves the symbol's cache byte for byte as it was; the quota stopping a fetch
  keeps the chunks already fetched and the next run resumes after them.
- Files are only added or corrected (a day whose values changed), never removed, each written to a
  temporary file in the same directory and renamed over the old one (`os.replace`).
No Dagster here.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .base import BAR_COLUMNS, DataSourceError, empty_bars, filter_dates, validate_bars
from .breeze_client import BreezeApiError, BreezeSession
from .breeze_codes import isec_code
from .breeze_state import Clock, QuotaExhaustedError, StateFile, ist_now, merge_ranges, missing_ranges
from .csv_dir import DAILY_SUBDIR
from .symbols import validate_symbol

__all__ = [
    "CHUNK_WEEKDAYS",
    "MAX_ROWS_PER_CALL",
    "BreezeIngestor",
    "IngestResult",
    "chunk_end",
    "last_complete_day",
    "plan_chunks",
    "rows_to_bars",
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
    """Write `data` to a hidden temporary file beside `path`, then rename it over `path`: a reader
    sees the old file or the new one, never half of one (the csv source skips hidden files)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_day_files(cache_dir: Path, symbol: str, bars: pd.DataFrame) -> tuple[int, int, int]:
    """(added, corrected, unchanged) day files for `bars`; files of other days are not touched."""
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


def _progress(data: dict[str, Any], symbol: str, stock_code: str) -> list[DateRange]:
    entry = (data.get("symbols") or {}).get(symbol) or {}
    if entry.get("stock_code") != stock_code:  # a code changed in the codes file: ask again
        return []
    return [(dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in entry.get("fetched", [])]


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

    def _ingest(self, symbol: str, code: str, first: dt.date, last: dt.date) -> IngestResult:
        newest = last_complete_day(ist_now(self.clock))
        last = min(last, newest)
        if first > last:
            return IngestResult(symbol, code, None)
        result = IngestResult(symbol, code, (first, last))
        final_until = newest - dt.timedelta(days=self.refresh_days)
        missing = missing_ranges((first, last), _progress(self.state.read(), symbol, code))
        fetched: list[tuple[DateRange, pd.DataFrame]] = []
        pending = plan_chunks(missing, newest, self.chunk_weekdays)
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
        for chunk, bars in fetched:  # oldest first: coverage only ever grows from the past
            added, corrected, unchanged = write_day_files(self.cache_dir, symbol, bars)
            result.added, result.corrected, result.unchanged = (
                result.added + added,
                result.corrected + corrected,
                result.unchanged + unchanged,
            )
            result.chunks.append(chunk)
        final = [(a, min(b, final_until)) for (a, b), _ in fetched if a <= final_until]
        if final:
            with self.state.update() as data:
                have = _progress(data, symbol, code)
                merged = merge_ranges(have + final)
                data.setdefault("symbols", {})[symbol] = {
                    "stock_code": code,
                    "fetched": [[a.isoformat(), b.isoformat()] for a, b in merged],
                }
        return result
