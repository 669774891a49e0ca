"""Corporate actions (splits, bonuses, demergers, dividends) and the back-adjustment of bars.

Breeze's daily history is unadjusted (or adjusted only up to 2022), so a 1:2 split looks like a
-50 % day to every feature and label. Sources keep their raw data as fetched and adjust at read
time from corporate-actions files. Whether a vendor adjusted is a property of the source, so the
shipped `corporate_actions.csv` (known NSE actions, unadjusted in Breeze's history) applies only to
a source that says its raw data is unadjusted (the breeze source's cache: `configured_files(True)`);
every source also applies the user's file named by `SENSEQUANT_CORPORATE_ACTIONS_FILE` (a csv user
with unadjusted data may name the shipped file there), whose rows extend the shipped ones and
replace a shipped row of the same symbol, ex-date and type (e.g. to mark it adjusted by the
source). Format (a header, one action per line, `#` comments, blank lines ignored):

    symbol,ex_date,type,ratio,factor,adjusted_by_source,note
    RELIANCE,2024-10-28,bonus,1:1,,no,one bonus share for every share held

- `type`: `split` and `bonus` change the share count: `ratio` `A:B` (split: A old shares become
  B; a consolidation is a split such as 10:1; bonus: A new shares for every B held); prices
  before the ex-date are multiplied by the factor (split A/B, bonus B/(A+B)) and volumes divided
  by it. `demerger` and `dividend` pay out value without changing the share count: `factor` (the
  ex-date's price ratio, in (0, 1)); prices are multiplied, volumes unchanged.
- `adjusted_by_source`: `yes` when the data source already delivers bars adjusted for it (the
  row documents it and changes nothing), `no` when the bars must be adjusted here.

An action applies once the data reaches its ex-date (the symbol has a bar on or after it): bars
before it are multiplied by the product of the factors of the later applied actions, so a day's
adjusted bar is the same whatever range is read. No Dagster here.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from sensequant_assets.settings import env

from .base import IST, DataSourceError
from .symbols import InvalidSymbolError, validate_symbol

__all__ = [
    "ACTIONS_FILE_ENV",
    "SHIPPED_FILE",
    "CorporateAction",
    "CorporateActions",
    "CorporateActionsError",
    "adjust_bars",
    "applied",
    "configured_actions",
    "configured_files",
    "load_actions",
    "price_factors",
]

ACTIONS_FILE_ENV = "SENSEQUANT_CORPORATE_ACTIONS_FILE"
SHIPPED_FILE = Path(__file__).with_name("corporate_actions.csv")
SHARE_TYPES = ("split", "bonus")  # the share count changes: volumes are adjusted too
VALUE_TYPES = ("demerger", "dividend")  # value paid out: prices only
TYPES = SHARE_TYPES + VALUE_TYPES
FIELDS = ("symbol", "ex_date", "type", "ratio", "factor", "adjusted_by_source", "note")
REQUIRED_FIELDS = ("symbol", "ex_date", "type", "adjusted_by_source")
_YES, _NO = ("yes", "true", "1", "y"), ("no", "false", "0", "n")


class CorporateActionsError(DataSourceError):
    """A malformed corporate-actions file; the message names the file, the line and the field."""


@dataclass(frozen=True)
class CorporateAction:
    """One action. `factor` multiplies prices before `ex_date`; `origin` is `file:line`."""

    symbol: str
    ex_date: dt.date
    kind: str
    factor: float
    adjusted_by_source: bool
    ratio: str = ""
    note: str = ""
    origin: str = field(default="", compare=False)

    @property
    def volume_factor(self) -> float:
        """What volumes before the ex-date are divided by (1 when the share count is unchanged)."""
        return self.factor if self.kind in SHARE_TYPES else 1.0

    @property
    def key(self) -> tuple[str, dt.date, str]:
        return (self.symbol, self.ex_date, self.kind)

    def describe(self) -> str:
        """`2024-10-28 bonus 1:1 (x0.5)`: how a report or a message names it."""
        what = f"{self.ratio} " if self.ratio else ""
        return f"{self.ex_date} {self.kind} {what}(x{self.factor:.6g})"

    def fingerprint(self) -> str:
        """What of the action decides the adjusted bars (not the note or where it was written)."""
        return f"{self.ex_date}|{self.kind}|{self.factor!r}|{self.volume_factor!r}|{self.adjusted_by_source}"


@dataclass(frozen=True)
class CorporateActions:
    """Actions by symbol, each symbol's sorted by ex-date: a symbol's lookup costs its own actions.
    `changed_at`: when the files they come from last changed (newest ctime or mtime, seconds; 0.0
    for none), which the `new_data` sensor compares with when a training read the bars."""

    by_symbol: dict[str, tuple[CorporateAction, ...]] = field(default_factory=dict)
    changed_at: float = 0.0
    _digests: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def of(self, symbol: str) -> tuple[CorporateAction, ...]:
        return self.by_symbol.get(symbol, ())

    def digest(self, symbol: str) -> str:
        """A hash of what the symbol's actions change ("" when it has none, so a symbol without
        actions keeps the tokens and fingerprints it had before actions existed); computed once
        per symbol (`load_actions` keeps this object while the files are unchanged)."""
        found = self._digests.get(symbol)
        if found is None:
            actions = self.of(symbol)
            found = (
                hashlib.sha256("\0".join(a.fingerprint() for a in actions).encode()).hexdigest()
                if actions
                else ""
            )
            self._digests[symbol] = found
        return found

    @classmethod
    def of_rows(cls, actions: Iterable[CorporateAction], changed_at: float = 0.0) -> CorporateActions:
        """Merge in order: a later action with the same (symbol, ex-date, type) replaces an earlier."""
        merged: dict[tuple[str, dt.date, str], CorporateAction] = {}
        for action in actions:
            merged[action.key] = action
        grouped: dict[str, list[CorporateAction]] = {}
        for action in merged.values():
            grouped.setdefault(action.symbol, []).append(action)
        by_symbol = {s: tuple(sorted(a, key=lambda x: (x.ex_date, x.kind))) for s, a in grouped.items()}
        return cls(by_symbol, changed_at)


def applied(actions: Sequence[CorporateAction], last_bar: dt.date | None) -> tuple[CorporateAction, ...]:
    """The actions to apply to bars whose newest is dated `last_bar`: not adjusted by the source,
    and reached by the data (data ending before an ex-date is correct as it is)."""
    if last_bar is None:
        return ()
    return tuple(a for a in actions if not a.adjusted_by_source and a.ex_date <= last_bar)


def _days(index: pd.DatetimeIndex) -> np.ndarray:
    """IST calendar days of a bar index as datetime64[D]."""
    stamps = index.tz_convert(IST) if index.tz is not None else index
    return stamps.tz_localize(None).normalize().to_numpy().astype("datetime64[D]")


def price_factors(
    actions: Sequence[CorporateAction], index: pd.DatetimeIndex
) -> tuple[np.ndarray, np.ndarray]:
    """(price factor, volume factor) of each bar: the products over `actions` dated after it."""
    days = _days(index)
    prices, volumes = np.ones(len(days)), np.ones(len(days))
    for action in actions:
        before = days < np.datetime64(action.ex_date, "D")
        prices[before] *= action.factor
        volumes[before] *= action.volume_factor
    return prices, volumes


def adjust_bars(bars: pd.DataFrame, actions: Sequence[CorporateAction]) -> pd.DataFrame:
    """`bars` back-adjusted for `actions` (see `applied`); the same frame when nothing changes."""
    if not actions or bars.empty:
        return bars
    prices, volumes = price_factors(actions, pd.DatetimeIndex(bars.index))
    if (prices == 1.0).all() and (volumes == 1.0).all():
        return bars
    out = bars.copy()
    for col in ("open", "high", "low", "close"):
        out[col] = out[col].to_numpy() * prices
    out["volume"] = out["volume"].to_numpy() / volumes
    return out


# -- the file ----------------------------------------------------------------------------------


def _error(path: Path, line: int | None, fieldname: str, problem: str) -> CorporateActionsError:
    where = f"{path}, line {line}, field {fieldname!r}" if line is not None else str(path)
    return CorporateActionsError(
        f"{where}: {problem} (corporate-actions file; format: {','.join(FIELDS)}, see the README)",
        origin=str(path),
        row=line,
        rule=f"corporate actions: {fieldname}",
    )


def _ratio(text: str, kind: str, path: Path, line: int) -> float:
    """The price factor of a split (`A:B`, A old shares become B) or a bonus (A new for B held)."""
    parts = text.split(":")
    try:
        a, b = (float(p) for p in parts) if len(parts) == 2 else (np.nan, np.nan)
    except ValueError:
        a = b = np.nan
    if not (np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0):
        raise _error(path, line, "ratio", f"{text!r} is not A:B with positive numbers (e.g. 1:2)")
    return a / b if kind == "split" else b / (a + b)


def _row(raw: dict[str, str], path: Path, line: int) -> CorporateAction:
    value = {k: (raw.get(k) or "").strip() for k in FIELDS}
    for name in REQUIRED_FIELDS:
        if not value[name]:
            raise _error(path, line, name, "missing")
    try:
        symbol = validate_symbol(value["symbol"])
    except InvalidSymbolError as exc:
        raise _error(path, line, "symbol", str(exc)) from None
    try:
        ex_date = dt.date.fromisoformat(value["ex_date"])
    except ValueError:
        raise _error(path, line, "ex_date", f"{value['ex_date']!r} is not a YYYY-MM-DD date") from None
    kind = value["type"].lower()
    if kind not in TYPES:
        raise _error(path, line, "type", f"{value['type']!r} is not one of {', '.join(TYPES)}")
    flag = value["adjusted_by_source"].lower()
    if flag not in _YES + _NO:
        raise _error(path, line, "adjusted_by_source", f"{value['adjusted_by_source']!r} is not yes or no")
    if kind in SHARE_TYPES:
        if value["factor"]:
            raise _error(path, line, "factor", f"a {kind} takes a ratio (A:B), not a factor")
        if not value["ratio"]:
            raise _error(path, line, "ratio", f"missing: a {kind} needs A:B")
        factor = _ratio(value["ratio"], kind, path, line)
    else:
        if value["ratio"]:
            raise _error(path, line, "ratio", f"a {kind} takes a factor (the price ratio), not a ratio")
        try:
            factor = float(value["factor"]) if value["factor"] else np.nan
        except ValueError:
            factor = np.nan
        if not 0.0 < factor < 1.0:
            raise _error(
                path, line, "factor", f"{value['factor']!r}: a {kind} needs a price factor in (0, 1)"
            )
    return CorporateAction(
        symbol=symbol,
        ex_date=ex_date,
        kind=kind,
        factor=float(factor),
        adjusted_by_source=flag in _YES,
        ratio=value["ratio"],
        note=value["note"],
        origin=f"{path}:{line}",
    )


def parse_actions(text: str, path: Path) -> list[CorporateAction]:
    """The actions of one file's text; CorporateActionsError names file, line and field."""
    numbered = [
        (n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()[:1] not in ("", "#")
    ]
    if not numbered:
        return []
    header_line, header = numbered[0]
    names = [c.strip().lower() for c in next(csv.reader([header]))]
    unknown = [c for c in names if c not in FIELDS]
    if unknown:
        raise _error(path, header_line, unknown[0], f"unknown column (the columns are {', '.join(FIELDS)})")
    if twice := [c for c in FIELDS if names.count(c) > 1]:
        raise _error(path, header_line, twice[0], "column named twice in the header")
    for name in (*REQUIRED_FIELDS, "ratio", "factor"):
        if name not in names:
            raise _error(path, header_line, name, "column missing from the header")
    out: list[CorporateAction] = []
    seen: dict[tuple[str, dt.date, str], int] = {}
    for line, content in numbered[1:]:
        cells = next(csv.reader(io.StringIO(content)))
        if len(cells) > len(names):
            raise _error(path, line, names[-1], f"{len(cells)} fields, the header has {len(names)}")
        action = _row(dict(zip(names, cells, strict=False)), path, line)
        if action.key in seen:
            raise _error(
                path,
                line,
                "ex_date",
                f"{action.symbol} {action.kind} on {action.ex_date} is also on line {seen[action.key]}",
            )
        seen[action.key] = line
        out.append(action)
    return out


Stamp = tuple[int, int, int, int]  # (inode, size, mtime_ns, ctime_ns) of a file


@lru_cache(maxsize=32)
def _load_file(path: Path, stamp: Stamp) -> tuple[CorporateAction, ...]:
    """One file's actions, cached by its stamp: a sensor asks every symbol every tick."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(path, None, "file", f"cannot be read: {exc}") from None
    return tuple(parse_actions(text, path))


@lru_cache(maxsize=32)
def _merged(stamped: tuple[tuple[Path, Stamp], ...]) -> CorporateActions:
    """The merged, per-symbol actions of files with these stamps: built once per change of a file,
    not per lookup (5,000 rows merged and sorted on every call cost a 500-symbol sensor tick 2 s)."""
    rows: list[CorporateAction] = []
    for path, stamp in stamped:
        rows.extend(_load_file(path, stamp))
    changed = max((max(stamp[2], stamp[3]) for _, stamp in stamped), default=0)
    return CorporateActions.of_rows(rows, changed_at=changed / 1e9)


def load_actions(paths: Sequence[Path]) -> CorporateActions:
    """The actions of `paths` in order, a later file's row replacing an earlier one's (one stat per
    file; parsed and merged again only when a file changed)."""
    stamped = []
    for path in map(Path, paths):
        try:
            st = path.stat()
        except OSError as exc:
            raise _error(path, None, "file", f"cannot be read: {exc}") from None
        stamped.append((path, (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)))
    return _merged(tuple(stamped))


def configured_files(shipped: bool) -> tuple[Path, ...]:
    """The files a source applies: the shipped file when `shipped` (a source whose raw data is known
    to be unadjusted: the breeze source's cache), then the user's `SENSEQUANT_CORPORATE_ACTIONS_FILE`
    (read at each call; it may name the shipped file)."""
    user = env(ACTIONS_FILE_ENV)
    return (*((SHIPPED_FILE,) if shipped else ()), *((Path(user),) if user else ()))


def configured_actions(shipped: bool = False) -> CorporateActions:
    return load_actions(configured_files(shipped))
