"""Bars from a directory of CSV / parquet files.

Two layouts are read, per symbol:
1. the predecessor's cache, `<SYMBOL>/1day/<YYYY-MM-DD>.csv`, one file per day: only files whose
   name date lies in the requested range are opened, so a window costs its own days, not history;
2. one file per symbol, `<SYMBOL>.csv` or `<SYMBOL>.parquet` (timestamp as a column or the index).

Each file that is read is validated whole (`validate_bars`), so a corrupt row in a file that is
touched fails loudly, naming the file, row and rule, even if the row lies outside the range.

Change detection (`data_token`, `window_fingerprints`), for a sensor polling many symbols:
- daily layout: from the directory listing alone (os.scandir + stat, no file is opened). The
  token hashes (name, size, mtime_ns) of every `*.csv` in `<SYMBOL>/1day/`; a window's
  fingerprint hashes those of the files whose name date lies in the window, and the last file
  date decides completeness. File names are the truth here: a file holding a bar of another day
  (tolerated by `bars`) is fingerprinted under its name's date.
- single-file layout: the token is the file's (name, size, mtime_ns); fingerprints need one read
  and validation of the file, then hash each window's canonical bars (timestamps and float64
  values, exact bytes), so correcting one row changes only its window's fingerprint.

Corporate actions (`corporate_actions.py`) are applied at read time, after validation, so the files
stay as fetched: the actions a symbol's data has reached (and its source did not adjust for)
back-adjust the bars before their ex-dates. A plain csv directory applies only the user's
`SENSEQUANT_CORPORATE_ACTIONS_FILE` (none by default: its bars and fingerprints are those of a
source without actions); the shipped file applies when the source is told its data is unadjusted
(`shipped_actions=True`, which the breeze resource sets for its cache). A window's fingerprint
includes the applied actions dated after its first bar (exactly the windows whose adjusted bars
they change), the tokens every action of the symbol; the actions files are stat'ed, and parsed
and merged again only when they change. The jump rule of `validate_bars` judges the adjusted
closes.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import hashlib
import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa

from sensequant_assets.settings import SettingsError, number

from .base import (
    BAR_COLUMNS,
    IST,
    REQUIRED_COLUMNS,
    SOURCE_FILE_COL,
    SOURCE_ROW_COL,
    DataSourceError,
    UnknownSymbolError,
    Window,
    as_date,
    check_windows,
    digest,
    empty_bars,
    filter_dates,
    short,
    validate_bars,
    window_is_covered,
)
from .corporate_actions import (
    CorporateAction,
    CorporateActions,
    adjust_bars,
    applied,
    configured_actions,
    load_actions,
    price_factors,
)
from .symbols import InvalidSymbolError, validate_symbol

__all__ = ["DAILY_SUBDIR", "CsvDirSource"]

DAILY_SUBDIR = "1day"
_DAY_FILE = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})\.csv$")
_FILE_SUFFIXES = (".csv", ".parquet")


def _empty_file_error(path: Path, symbol: str) -> DataSourceError:
    return DataSourceError(
        f"{symbol}: {path}: file is empty (rule: a header line {','.join(REQUIRED_COLUMNS)} is required)",
        symbol=symbol,
        origin=str(path),
        rule="non-empty file",
    )


def max_file_bytes() -> float:
    """SENSEQUANT_MAX_FILE_MB in bytes (inf when 0: no limit); read at each call. A CSV of 30
    years of daily bars is about 0.5 MB, so the default 100 only stops what is not daily bars."""
    mb = float(number("SENSEQUANT_MAX_FILE_MB", float, 0.0))
    return mb * 2**20 if mb > 0 else float("inf")


def _check_size(path: Path, symbol: str, size: int, limit: float) -> None:
    """Refuse a file above the size limit before it is read (a 5 GB tick dump saved as a day file)."""
    if size > limit:
        raise DataSourceError(
            f"{symbol}: {path}: file is {size / 2**20:.1f} MB, more than SENSEQUANT_MAX_FILE_MB="
            f"{limit / 2**20:g} (rule: data files at most SENSEQUANT_MAX_FILE_MB); daily bars need far "
            "less: is it intraday or tick data? Raise the limit if it really is daily bars",
            symbol=symbol,
            origin=str(path),
            rule="file size limit",
        )


def _read_limited(path: Path, symbol: str, limit: float) -> bytes:
    """The file's bytes, after a stat that refuses it above `limit` without reading it."""
    try:
        _check_size(path, symbol, path.stat().st_size, limit)
        return path.read_bytes()
    except OSError as exc:
        raise _os_error(path, symbol, exc) from None


_BOM = b"\xef\xbb\xbf"


def _not_csv(data: bytes) -> str | None:
    """What `data` looks like when it is plainly not CSV text (None when it may be CSV).

    Catches what lands in a data directory in place of a CSV: a binary file, an HTML error page
    or a JSON error body saved by a downloader, a parquet, gzip or zip (Excel) file named .csv,
    text in another encoding than UTF-8.
    """
    head = data[:4096].removeprefix(_BOM).lstrip()
    for magic, what in (
        (b"PAR1", "a parquet file (name it .parquet)"),
        (b"\x1f\x8b", "gzip-compressed data (decompress it)"),
        (b"PK\x03\x04", "a zip archive (an Excel workbook? export it as CSV)"),
        (b"<", "an HTML or XML page (an error page saved as .csv?)"),
        (b"{", "JSON (an error response saved as .csv?)"),
        (b"[", "JSON (an error response saved as .csv?)"),
    ):
        if head.startswith(magic):
            return what
    if b"\x00" in data[:4096]:
        return "binary data (NUL bytes)"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x})"
    return None


def _refuse_non_csv(data: bytes, path: Path, symbol: str) -> None:
    if (what := _not_csv(data)) is not None:
        raise DataSourceError(
            f"{symbol}: {path}: not a CSV file: {what} (rule: CSV text, UTF-8, with a header line "
            f"{','.join(REQUIRED_COLUMNS)})",
            symbol=symbol,
            origin=str(path),
            rule="CSV text",
        )


_LINE = re.compile(rb"[^\r\n]+")


def _header_names(data: bytes) -> list[str]:
    """The names on the first non-blank line, as written (before pandas renames duplicates)."""
    for match in _LINE.finditer(data.removeprefix(_BOM)):  # lazily: only up to the header is decoded
        line = match.group().decode("utf-8", "replace")
        if line.strip():
            try:
                return next(csv.reader([line], skipinitialspace=True), [])
            except csv.Error:  # e.g. a field above the csv module's 128 KiB limit: pandas judges it
                return line.split(",")
    return []


def _canonical_columns(names: list[str], path: Path, symbol: str) -> list[str]:
    """Names stripped and lower-cased (`Close `, `CLOSE` -> `close`); two columns that become one
    required name are refused, naming the file (pandas would rename the second `close.1` and drop
    it). Extra columns are dropped later, so their names may repeat: the blank cells an Excel or
    LibreOffice export leaves after the last column (`...,volume,,`), or `Remarks,remarks`."""
    canon = [str(c).strip().lower() for c in names]
    dups = sorted({c for c in canon if c in REQUIRED_COLUMNS and canon.count(c) > 1})
    if dups:
        raise DataSourceError(
            f"{symbol}: {path}: the header names {dups} more than once (rule: unique column names, "
            f"case and blanks ignored); header: {[short(c) for c in names][:20]}",
            symbol=symbol,
            origin=str(path),
            rule="unique column names",
        )
    return canon


_BLANK_LINES = re.compile(rb"(?m)^[ \t]*\n")


def _parse_joined(
    contents: list[bytes], paths: list[Path], symbol: str
) -> tuple[pd.DataFrame, list[int]] | None:
    """Fast path: parse many small files with ONE read_csv call.

    A pandas call per file costs milliseconds (a 6-month window is ~125 files), so the bodies are
    joined under their common header and parsed once. Returns (frame, data rows per file), or None
    when the files are not uniform enough to be sure every row maps back to its file (headers
    differ, quoting, parse errors, ...); the caller then reads file by file, which also yields
    file-specific error messages.
    """
    headers: set[bytes] = set()
    bodies: list[bytes] = []
    counts: list[int] = []
    for data, path in zip(contents, paths, strict=True):
        if not data.strip():
            raise _empty_file_error(path, symbol)
        data = data.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")
        header, _, body = data.partition(b"\n")
        headers.add(header.strip())
        body = _BLANK_LINES.sub(b"", body)
        if body and not body.endswith(b"\n"):
            body += b"\n"
        bodies.append(body)
        counts.append(body.count(b"\n"))
    if len(headers) != 1:
        return None
    header = headers.pop()
    if b'"' in header or b"\r" in header:
        return None
    try:
        names = [c.strip().lower() for c in header.decode("utf-8").split(",")]
    except UnicodeDecodeError:
        return None
    if any(names.count(c) > 1 for c in REQUIRED_COLUMNS):
        return None  # the per-file path names the file
    _check_columns(pd.DataFrame(columns=names), paths[0], symbol)  # one header for all files
    # Extra columns (dropped by validate_bars) get unique names: blank or repeated ones are allowed.
    names = [c if c in REQUIRED_COLUMNS else f"_extra{i}" for i, c in enumerate(names)]
    joined = b"".join(bodies)
    if not joined:
        return pd.DataFrame(columns=names), counts
    try:
        frame = pd.read_csv(io.BytesIO(joined), header=None, names=names, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError):
        return None
    if len(frame) != sum(counts) or not isinstance(frame.index, pd.RangeIndex):
        return None  # e.g. surplus fields became an index: let the per-file path name the file
    return frame, counts


def _read_day_files(paths: list[Path], symbol: str) -> pd.DataFrame:
    """Rows of all day files, tagged with their file and data row so errors can name them."""
    limit = max_file_bytes()
    contents = [_read_limited(p, symbol, limit) for p in paths]
    for data, path in zip(contents, paths, strict=True):
        _refuse_non_csv(data, path, symbol)
    parsed = _parse_joined(contents, paths, symbol)
    if parsed is None:  # slow but exact: one parse per file
        frames = []
        for data, path in zip(contents, paths, strict=True):
            frame = _parse_csv(data, path, symbol)
            _check_columns(frame, path, symbol)
            frames.append(frame)
        counts = [len(f) for f in frames]
        frame = pd.concat(frames, ignore_index=True)
    else:
        frame, counts = parsed
    n_rows = np.asarray(counts, dtype="int64")
    offsets = np.concatenate(([0], np.cumsum(n_rows)[:-1]))
    frame[SOURCE_FILE_COL] = np.repeat(np.asarray([str(p) for p in paths], dtype=object), n_rows)
    frame[SOURCE_ROW_COL] = np.arange(len(frame)) - np.repeat(offsets, n_rows) + 1
    return frame


def _read_csv(path: Path, symbol: str) -> pd.DataFrame:
    """Read one CSV (size-limited, refused when plainly not CSV) with canonical column names."""
    data = _read_limited(path, symbol, max_file_bytes())
    _refuse_non_csv(data, path, symbol)
    return _parse_csv(data, path, symbol)


def _parse_csv(data: bytes, path: Path, symbol: str) -> pd.DataFrame:
    """Parse one CSV's bytes as-is (validation happens later, vectorised, on the whole frame);
    column names are stripped and lower-cased, so files whose headers differ only in order, case
    or blanks line up when concatenated."""
    if not data.strip():
        raise _empty_file_error(path, symbol)
    _canonical_columns(_header_names(data), path, symbol)  # duplicates, before pandas renames them
    try:
        frame = pd.read_csv(io.BytesIO(data.removeprefix(_BOM)), skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise _empty_file_error(path, symbol) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataSourceError(
            f"{symbol}: {path}: not a readable CSV (rule: well-formed CSV): {exc}",
            symbol=symbol,
            origin=str(path),
            rule="well-formed CSV",
        ) from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas silently turns surplus leading fields into an index, shifting every value.
        raise DataSourceError(
            f"{symbol}: {path}: data rows have more fields than the header "
            f"(rule: well-formed CSV); header: {[short(c) for c in frame.columns][:20]}",
            symbol=symbol,
            origin=str(path),
            rule="well-formed CSV",
        )
    canon = _canonical_columns([str(c) for c in frame.columns], path, symbol)
    frame.columns = canon
    # An extra name repeated after canonicalising (`Remarks,remarks`) would break concatenation;
    # extra columns are dropped by validate_bars anyway, so the later copies go now.
    return frame.loc[:, ~pd.Index(canon).duplicated()]


def _read_parquet(path: Path, symbol: str) -> pd.DataFrame:
    """Read one parquet file; the timestamp may be a column or the index (validate_bars copes)."""
    try:
        _check_size(path, symbol, path.stat().st_size, max_file_bytes())
    except OSError as exc:
        raise _os_error(path, symbol, exc) from None
    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataSourceError(
            f"{symbol}: {path}: not a readable parquet file (rule: valid parquet): {exc}",
            symbol=symbol,
            origin=str(path),
            rule="valid parquet",
        ) from None


def _check_columns(frame: pd.DataFrame, path: Path, symbol: str) -> None:
    """Per-file header check: after concatenation a missing column would look like NaN values."""
    names = {str(c).strip().lower() for c in frame.columns}
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DataSourceError(
            f"{symbol}: {path}: missing column(s) {missing} (rule: required columns "
            f"{','.join(REQUIRED_COLUMNS)}); found {[short(c) for c in frame.columns][:20]}",
            symbol=symbol,
            origin=str(path),
            rule="required columns",
        )


def _bad_day_name(path: str, symbol: str) -> DataSourceError:
    return DataSourceError(
        f"{symbol}: {path}: file name is not a valid date (rule: <YYYY-MM-DD>.csv); rename or remove it",
        symbol=symbol,
        origin=path,
        rule="file name is a date",
    )


def _os_error(path: Path | str, symbol: str, exc: OSError) -> DataSourceError:
    return DataSourceError(
        f"{symbol}: {path}: cannot be read (rule: readable data files): {exc}",
        symbol=symbol,
        origin=str(path),
        rule="readable data files",
    )


def _name_date(name: str) -> dt.date | None:
    """The date a day file's name (or its first 10 characters) holds, None when it holds none."""
    try:
        return dt.date.fromisoformat(name[:10])
    except ValueError:
        return None


def _adjusting(done: Sequence[CorporateAction], first_bar: dt.date | None) -> list[str]:
    """Fingerprint lines of the applied actions that change a window whose first bar is
    `first_bar`: those dated after it (every bar on or after an ex-date is left as it is)."""
    if first_bar is None:
        return []
    return [f"action|{a.fingerprint()}" for a in done if a.ex_date > first_bar]


# _dated: a window that corporate actions adjust gets no change time. Its bars also change when the
# actions in force change by a setting (SENSEQUANT_CORPORATE_ACTIONS_FILE naming a file that already
# exists, or a switch to the breeze source), which no file's time records: dated by its files, such a
# change would look older than the training that read the unadjusted bars, and never be retrained.
# Undated, a change to such a window is always requested (at worst once more than needed).


def _changed(st: os.stat_result) -> float:
    """When a file last changed, in seconds: its ctime (set by the kernel on every write, rename or
    change of times), or its mtime when that is later (set into the future)."""
    return max(st.st_ctime_ns, st.st_mtime_ns) / 1e9


def _stat(entry: os.DirEntry[str], symbol: str) -> os.stat_result:
    """One stat of a listed file (size, mtime): never a read."""
    try:
        return entry.stat()
    except OSError as exc:  # e.g. removed between listing and stat
        raise _os_error(entry.path, symbol, exc) from None


AdjustClose = Callable[[pd.DatetimeIndex, np.ndarray], np.ndarray]
ActionStatus = tuple[CorporateAction, bool]  # an action of the symbol and whether it is applied


def _closer(actions: tuple[CorporateAction, ...], last_bar: dt.date | None) -> AdjustClose:
    """`validate_bars`' `adjust_close`: the closes as `adjust_bars` will make them. `last_bar` None:
    the validated rows are the symbol's whole data (a single file), whose newest row decides."""

    def adjust(index: pd.DatetimeIndex, close: np.ndarray) -> np.ndarray:
        newest = last_bar if last_bar is not None else (index[-1].date() if len(index) else None)
        return close * price_factors(applied(actions, newest), index)[0]

    return adjust


@dataclass(frozen=True)
class CsvDirSource:
    """Bars from `data_dir` in either layout (see module docstring); file names are upper case.

    `actions_files`: the corporate-actions files to apply, in order; None (the default) applies
    `SENSEQUANT_CORPORATE_ACTIONS_FILE` (read at each call), preceded by the shipped file when
    `shipped_actions` (the data is known to be unadjusted: the breeze source's cache; a vendor's
    csv files may already be adjusted, so a csv user opts in by naming a file); () applies none.
    """

    data_dir: Path
    actions_files: tuple[Path, ...] | None = None
    shipped_actions: bool = False
    name: ClassVar[str] = "csv"

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.actions_files is not None:
            object.__setattr__(self, "actions_files", tuple(Path(p) for p in self.actions_files))

    def _actions(self) -> CorporateActions:
        if self.actions_files is None:
            return configured_actions(self.shipped_actions)
        return load_actions(self.actions_files)

    # -- discovery -------------------------------------------------------------------------

    def symbols(self) -> list[str]:
        """Symbols present: directories with a `1day` subdir plus `*.csv` / `*.parquet` stems.

        Names that are not valid canonical (upper-case) symbols are ignored: they could not be
        asked for anyway.
        """
        if not self.data_dir.is_dir():
            return []
        found: set[str] = set()
        with os.scandir(self.data_dir) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.is_dir():
                    candidate = entry.name if (path / DAILY_SUBDIR).is_dir() else None
                elif path.suffix.lower() in _FILE_SUFFIXES:
                    candidate = path.stem
                else:
                    candidate = None
                if candidate is None:
                    continue
                try:
                    if validate_symbol(candidate) == candidate:
                        found.add(candidate)
                except InvalidSymbolError:
                    continue
        return sorted(found)

    def _locate(self, symbol: str) -> Path:
        """The daily directory or the single file holding `symbol`; refuse ambiguity."""
        candidates = [
            p
            for p in (
                self.data_dir / symbol / DAILY_SUBDIR,
                self.data_dir / f"{symbol}.csv",
                self.data_dir / f"{symbol}.parquet",
            )
            if p.exists()
        ]
        if len(candidates) > 1:
            raise DataSourceError(
                f"{symbol}: found data in more than one layout under {self.data_dir}: "
                f"{[str(p) for p in candidates]} (rule: one layout per symbol); remove all but one",
                symbol=symbol,
                origin=str(self.data_dir),
                rule="one layout per symbol",
            )
        if not candidates:
            hint = ""
            if self.data_dir.is_dir():
                near = [
                    n
                    for n in os.listdir(self.data_dir)
                    if n.split(".")[0].upper() == symbol and n.split(".")[0] != symbol
                ]
                if near:
                    hint = f"; found {near}: names are case-sensitive, use upper case"
            else:
                hint = "; the data directory does not exist"
            raise UnknownSymbolError(
                f"unknown symbol {symbol!r}: no {symbol}/{DAILY_SUBDIR}/<YYYY-MM-DD>.csv, "
                f"{symbol}.csv or {symbol}.parquet under data_dir {self.data_dir}{hint}",
                symbol=symbol,
                origin=str(self.data_dir),
            )
        return candidates[0]

    # -- loading ---------------------------------------------------------------------------

    def bars(self, symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Validated bars with start <= IST date <= end, adjusted for the applied corporate
        actions; see BarSource for the schema.

        A DataSourceError names the window asked for (`[window START..END]`) besides symbol,
        file, row and rule; the repairs of the window's rows are listed in the result's `attrs`
        (see `repairs_of`), not those of other rows of a file validated whole.
        """
        return self._bars(symbol, start, end, refuse_jumps=True)[0]

    def bars_for_report(
        self, symbol: str, start: dt.date, end: dt.date, *, previous_days: int = 0
    ) -> tuple[pd.DataFrame, tuple[ActionStatus, ...]]:
        """What the data-quality report reads: the bars as `bars` gives them, from `previous_days`
        calendar days before `start` (the previous close, to judge the first day's move; repairs
        are those of [start, end]), except that a move beyond SENSEQUANT_MAX_DAILY_MOVE is kept
        (the report flags it; `bars` refuses it); and every corporate action of the symbol with
        whether it is applied."""
        first = as_date(start)
        scope = (first, as_date(end))
        return self._bars(
            symbol, first - dt.timedelta(days=previous_days), end, refuse_jumps=False, scope=scope
        )

    def _bars(
        self,
        symbol: str,
        start: dt.date,
        end: dt.date,
        *,
        refuse_jumps: bool,
        scope: Window | None = None,
    ) -> tuple[pd.DataFrame, tuple[ActionStatus, ...]]:
        """(bars, actions with whether applied); `scope` (default: the range) bounds the repairs
        reported."""
        sym = validate_symbol(symbol)
        first, last = as_date(start), as_date(end)
        scope = scope or (first, last)
        try:
            location = self._locate(sym)
            actions = self._actions().of(sym)
            if first > last:
                return empty_bars(), tuple((a, False) for a in actions)
            move = None if refuse_jumps else 0.0  # 0: validate_bars' jump rule off
            if location.is_dir():
                bars, last_bar = self._daily_bars(sym, location, (first, last), scope, actions, move)
            else:
                read = _read_parquet if location.suffix == ".parquet" else _read_csv
                whole = validate_bars(
                    read(location, sym),
                    origin=str(location),
                    symbol=sym,
                    window=scope,
                    max_daily_move=move,
                    adjust_close=_closer(actions, None),
                )
                last_bar = whole.index[-1].date() if len(whole) else None
                bars = filter_dates(whole, first, last).copy()
            done = applied(actions, last_bar)
            return adjust_bars(bars, done), tuple((a, a in done) for a in actions)
        except DataSourceError as exc:
            exc.window = (first, last)
            exc.args = (f"{exc} [window {first}..{last}]", *exc.args[1:])
            raise

    def _daily_bars(
        self,
        symbol: str,
        day_dir: Path,
        span: Window,
        scope: Window,
        actions: tuple[CorporateAction, ...],
        max_daily_move: float | None,
    ) -> tuple[pd.DataFrame, dt.date | None]:
        """Read only the day files whose name date is in range (decided from names alone); also
        the newest file's date, which decides the corporate actions applied."""
        first, last = span
        lo, hi = first.isoformat(), last.isoformat()  # ISO dates order like strings
        selected: list[Path] = []
        newest = ""
        with os.scandir(day_dir) as entries:
            for entry in entries:
                match = _DAY_FILE.match(entry.name)
                if match:
                    newest = max(newest, match.group(1))
                    if lo <= match.group(1) <= hi:
                        selected.append(Path(entry.path))
        last_bar = _name_date(newest)
        if newest and last_bar is None:  # as window_fingerprints: a bad name anywhere is refused
            raise _bad_day_name(str(day_dir / f"{newest}.csv"), symbol)
        if not selected:
            return empty_bars(), last_bar
        selected.sort()
        for path in selected:  # a bad name would otherwise be silently mis-ordered
            try:
                dt.date.fromisoformat(path.stem)
            except ValueError:
                raise DataSourceError(
                    f"{symbol}: {path}: file name is not a valid date (rule: <YYYY-MM-DD>.csv)",
                    symbol=symbol,
                    origin=str(path),
                    rule="file name is a date",
                ) from None
        raw = _read_day_files(selected, symbol)
        bars = validate_bars(
            raw,
            origin=str(day_dir),
            symbol=symbol,
            window=scope,
            max_daily_move=max_daily_move,
            adjust_close=_closer(actions, last_bar),
        )
        # A file holding a bar of another day is tolerated, but never leaks out of the range.
        return filter_dates(bars, first, last).copy(), last_bar

    # -- change detection ------------------------------------------------------------------

    def data_token(self, symbol: str) -> str:
        """sha256 of the layout and (name, size, mtime_ns) of the symbol's files; nothing is read.

        Daily layout: every `*.csv` in `<SYMBOL>/1day/` (badly named ones too, so renaming one
        changes the token); single-file layout: the one file. UnknownSymbolError when the symbol
        has no data, DataSourceError when it is in two layouts or cannot be listed.
        """
        sym = validate_symbol(symbol)
        location = self._locate(sym)
        if location.is_dir():
            lines = ["csv-daily", sym]
            for name, entry in sorted(self._day_entries(sym, location).items()):
                st = _stat(entry, sym)
                lines.append(f"{name}|{st.st_size}|{st.st_mtime_ns}")
            lines.extend(self._action_lines(sym))
            return hashlib.sha256("\0".join(lines).encode()).hexdigest()  # NUL: never in a name
        try:
            st = location.stat()
        except OSError as exc:
            raise _os_error(location, sym, exc) from None
        return digest("csv-file", sym, location.name, st.st_size, st.st_mtime_ns, *self._action_lines(sym))

    def _action_lines(self, symbol: str) -> list[str]:
        """What the tokens add for the symbol's corporate actions (nothing when it has none, so its
        tokens stay those of a source without actions)."""
        found = self._actions().digest(symbol)
        return [f"actions|{found}"] if found else []

    def quick_token(self, symbol: str) -> str:
        """One stat of `<SYMBOL>/1day/` (its mtime changes when a day file is added, removed or
        replaced by a rename) or of the single file; in-place edits of a day file are left to
        `data_token` and `window_fingerprints`. About 1 us against `data_token`'s stat of every
        file (0.8 s for 50 symbols x 2,600 files here)."""
        sym = validate_symbol(symbol)
        location = self._locate(sym)
        try:
            st = location.stat()
        except OSError as exc:
            raise _os_error(location, sym, exc) from None
        return digest(
            "csv-quick", sym, location.name, st.st_ino, st.st_size, st.st_mtime_ns, *self._action_lines(sym)
        )

    def window_fingerprints(self, symbol: str, windows: Sequence[Window]) -> dict[dt.date, str | None]:
        """Window start -> fingerprint of the window's bars, or None while not covered.

        Covered: see `base.window_is_covered` (the last bar is on or after the window's last
        weekday). Daily layout: decided from the listing only (see module docstring); a `*.csv`
        whose name is not a valid date anywhere in the directory, or an empty day file inside a
        covered window, raises DataSourceError naming it. Single-file layout: the file is read
        once and validated whole, so any bad row raises DataSourceError naming file, row and rule.
        """
        return self.window_changes(symbol, windows)[0]

    def window_changes(
        self, symbol: str, windows: Sequence[Window]
    ) -> tuple[dict[dt.date, str | None], dict[dt.date, float]]:
        """`window_fingerprints`, and for each covered window when what its fingerprint depends on
        last changed (seconds since the epoch), from the same listing: the newest ctime or mtime of
        its day files, of `<SYMBOL>/1day/` (a file removed) or of the single file, and of the
        corporate-actions files. The kernel sets a file's ctime to the time of every write, rename
        or change of its times, so a copy that keeps an old mtime (`cp -p`, `rsync -t`) is dated
        when it landed. The `new_data` sensor compares it with when a training run read the bars.
        """
        sym = validate_symbol(symbol)
        checked = check_windows(windows)
        location = self._locate(sym)
        if location.is_dir():
            return self._daily_fingerprints(sym, location, checked)
        return self._file_fingerprints(sym, location, checked)

    def _day_entries(self, symbol: str, day_dir: Path) -> dict[str, os.DirEntry[str]]:
        """name -> entry of the files of `<SYMBOL>/1day/` that count as data: `*.csv` (any case).

        Hidden files (OS droppings such as macOS `._2024-01-05.csv`) and other suffixes (partial
        downloads such as `2024-01-05.csv.tmp`) are ignored, as `bars` ignores them. Listing only.
        """
        try:
            with os.scandir(day_dir) as entries:
                return {
                    e.name: e
                    for e in entries
                    if e.name[-4:].lower() == ".csv" and e.name[:1] != "." and e.is_file()
                }
        except OSError as exc:
            raise _os_error(day_dir, symbol, exc) from None

    def _daily_fingerprints(
        self, symbol: str, day_dir: Path, windows: list[Window]
    ) -> tuple[dict[dt.date, str | None], dict[dt.date, float]]:
        entries = self._day_entries(symbol, day_dir)
        try:
            listed = _changed(day_dir.stat())  # after the listing: no later than any change it shows
        except OSError as exc:
            raise _os_error(day_dir, symbol, exc) from None
        names = sorted(entries)  # valid "<YYYY-MM-DD>.csv" names order like their dates
        for name in names:
            match = _DAY_FILE.match(name)
            try:
                if match is None:
                    raise ValueError(name)
                dt.date.fromisoformat(match.group(1))
            except ValueError:
                raise _bad_day_name(entries[name].path, symbol) from None
        last_bar = dt.date.fromisoformat(names[-1][:10]) if names else None
        actions = self._actions()
        done = applied(actions.of(symbol), last_bar)
        out: dict[dt.date, str | None] = {}
        changed: dict[dt.date, float] = {}
        for start, end in windows:
            if not window_is_covered(last_bar, start, end):
                out[start] = None
                continue
            lo = bisect.bisect_left(names, f"{start.isoformat()}.csv")
            hi = bisect.bisect_right(names, f"{end.isoformat()}.csv")
            lines = ["csv-daily", symbol, start.isoformat(), end.isoformat()]
            newest = max(listed, actions.changed_at)
            for name in names[lo:hi]:
                st = _stat(entries[name], symbol)
                if not st.st_size:
                    raise _empty_file_error(Path(entries[name].path), symbol)
                lines.append(f"{name}|{st.st_size}|{st.st_mtime_ns}")
                newest = max(newest, _changed(st))
            first_bar = _name_date(names[lo][:10]) if lo < hi else None
            adjusting = _adjusting(done, first_bar)
            lines.extend(adjusting)
            out[start] = hashlib.sha256("\0".join(lines).encode()).hexdigest()
            if not adjusting:  # see _dated
                changed[start] = newest
        return out, changed

    def _file_fingerprints(
        self, symbol: str, path: Path, windows: list[Window]
    ) -> tuple[dict[dt.date, str | None], dict[dt.date, float]]:
        read = _read_parquet if path.suffix == ".parquet" else _read_csv
        every = self._actions()
        actions = every.of(symbol)
        try:
            bars = validate_bars(
                read(path, symbol), origin=str(path), symbol=symbol, adjust_close=_closer(actions, None)
            )
            newest = max(_changed(path.stat()), every.changed_at)  # after the read: no earlier than it
        except (DataSourceError, SettingsError):  # a bad setting is named as such, not as bad data
            raise
        except OSError as exc:
            raise _os_error(path, symbol, exc) from None
        except ValueError as exc:  # any other parse failure: still name the file and the rule
            raise DataSourceError(
                f"{symbol}: {path}: not readable bar data (rule: well-formed {path.suffix[1:]}): {exc}",
                symbol=symbol,
                origin=str(path),
                rule=f"well-formed {path.suffix[1:]}",
            ) from None
        stamps = bars.index.asi8  # IST midnights as UTC ns, strictly increasing
        values = np.ascontiguousarray(bars[list(BAR_COLUMNS)].to_numpy(dtype="float64"))
        last_bar = bars.index[-1].date() if len(bars) else None
        done = applied(actions, last_bar)
        out: dict[dt.date, str | None] = {}
        changed: dict[dt.date, float] = {}
        for start, end in windows:
            if not window_is_covered(last_bar, start, end):
                out[start] = None
                continue
            lo_ns = pd.Timestamp(start).tz_localize(IST).value
            hi_ns = pd.Timestamp(end + dt.timedelta(days=1)).tz_localize(IST).value
            lo, hi = np.searchsorted(stamps, [lo_ns, hi_ns], side="left")
            h = hashlib.sha256(f"csv-file\0{symbol}\0{start}\0{end}\0".encode())
            h.update(stamps[lo:hi].tobytes())
            h.update(values[lo:hi].tobytes())
            first_bar = bars.index[lo].date() if lo < hi else None
            adjusting = _adjusting(done, first_bar)
            for line in adjusting:
                h.update(f"\0{line}".encode())
            out[start] = h.hexdigest()
            if not adjusting:  # see _dated
                changed[start] = newest
        return out, changed
