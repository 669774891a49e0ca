"""The data-quality report of one symbol's window: coverage against the NSE trading calendar, gaps,
bars on days without a session, repaired rows and flagged one-day jumps. No Dagster here.

The calendar is `pandas_market_calendars`' `XNSE` (NSE's holidays, maintained upstream; it lists
them only up to a last year, after which every weekday would look like a session, so coverage is
judged up to the end of that year and the report says so). A missing session is a day the
exchange traded and the data has no bar; a bar on a day without a session (a weekend, a holiday:
the synthetic source draws every weekday) is reported, never an error.

Jumps: the one detector of `validate_bars` (`base.unexplained_jumps`, limit
`SENSEQUANT_MAX_DAILY_MOVE`), run on the bars as the source adjusted them, so a corporate action
listed with the right ratio explains its day's move and one listed wrongly (or adjusted twice)
does not; days vouched for in `SENSEQUANT_ALLOWED_MOVES` are not flagged. `bars` refuses such
moves; the report shows them (with the action on that day, if any) instead.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from .base import IST, DataSourceError, as_date, unexplained_jumps
from .corporate_actions import ACTIONS_FILE_ENV, SHIPPED_FILE, CorporateAction, load_actions

__all__ = [
    "CALENDAR",
    "Jump",
    "QualityReport",
    "ReportableSource",
    "calendar_known_until",
    "flag_jumps",
    "gap_ranges",
    "nse_sessions",
    "quality_report",
    "repaired_rows",
]

CALENDAR = "XNSE"  # pandas_market_calendars' National Stock Exchange of India
SHOWN = 10  # days or ranges listed in a report's text (the counts are complete)
ActionStatus = tuple[CorporateAction, bool]


@runtime_checkable
class ReportableSource(Protocol):
    """A source that can show the report what `bars` would refuse (the csv source)."""

    def bars_for_report(
        self, symbol: str, start: dt.date, end: dt.date, *, previous_days: int = 0
    ) -> tuple[pd.DataFrame, tuple[ActionStatus, ...]]: ...


@lru_cache(maxsize=1)
def _calendar_days() -> tuple[np.ndarray, dt.date]:
    """Every XNSE session the library knows (datetime64[D]) and the last day it knows holidays for.

    Imported here, once: the calendar is only needed by the report."""
    import pandas_market_calendars as pmc

    calendar = pmc.get_calendar(CALENDAR)
    holidays = np.asarray(calendar.holidays().holidays, dtype="datetime64[D]")
    known = dt.date(int(str(holidays.max())[:4]), 12, 31)
    first = dt.date(int(str(holidays.min())[:4]), 1, 1)
    sessions = calendar.valid_days(first.isoformat(), known.isoformat())
    return sessions.tz_localize(None).to_numpy().astype("datetime64[D]"), known


def calendar_known_until() -> dt.date:
    """The last day the calendar library lists NSE holidays for (31 December of its last year)."""
    return _calendar_days()[1]


def nse_sessions(start: dt.date, end: dt.date) -> np.ndarray:
    """NSE sessions in [start, end] (datetime64[D]), within the years the library knows."""
    sessions = _calendar_days()[0]
    lo, hi = np.searchsorted(sessions, [np.datetime64(start, "D"), np.datetime64(end, "D")], side="left")
    hi += int(hi < len(sessions) and sessions[hi] == np.datetime64(end, "D"))
    return sessions[lo:hi]


def _days(bars: pd.DataFrame) -> np.ndarray:
    index = pd.DatetimeIndex(bars.index)
    if index.tz is not None:
        index = index.tz_convert(IST).tz_localize(None)
    return index.normalize().to_numpy().astype("datetime64[D]")


def gap_ranges(sessions: np.ndarray, missing: np.ndarray) -> list[tuple[dt.date, dt.date, int]]:
    """Missing sessions grouped into runs of consecutive sessions: (first, last, sessions)."""
    if not len(missing):
        return []
    at = np.searchsorted(sessions, missing)
    breaks = np.flatnonzero(np.diff(at) != 1) + 1
    return [(_date(run[0]), _date(run[-1]), len(run)) for run in np.split(missing, breaks) if len(run)]


def _date(day: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(day))


_REPAIRED = re.compile(r"\[(\d+) (?:duplicate rows|rows out of order)")


def repaired_rows(notes: Sequence[str]) -> int:
    """Rows a source's validation repaired, from its notes (`repairs_of`): each ends with a count."""
    return sum(int(m.group(1)) for note in notes for m in _REPAIRED.finditer(note))


@dataclass(frozen=True)
class Jump:
    """A close-to-close move beyond the limit that no corporate action explains."""

    day: dt.date
    previous_close: float
    close: float
    note: str = ""

    @property
    def move(self) -> float:
        return self.close / self.previous_close - 1.0

    def describe(self) -> str:
        text = f"{self.day} {self.move:+.1%} ({self.previous_close:g} -> {self.close:g})"
        return f"{text}: {self.note}" if self.note else text


def flag_jumps(
    bars: pd.DataFrame,
    max_move: float,
    *,
    symbol: str,
    actions: Sequence[ActionStatus] = (),
    allowed: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
    since: dt.date | None = None,
) -> list[Jump]:
    """The moves of `bars` (adjusted as the source serves them) beyond `max_move`, dated on or after
    `since`, except the days vouched for in `allowed` ((SYMBOL, YYYY-MM-DD)); each names the
    action dated that day, if any, and why it does not explain the move, or else an action the
    shipped file lists that day (a csv source applies it only when told to)."""
    close = bars["close"].to_numpy(dtype="float64")
    mask = unexplained_jumps(close, max_move)
    days = _days(bars)
    by_day: dict[dt.date, list[ActionStatus]] = {}
    for action, done in actions:
        by_day.setdefault(action.ex_date, []).append((action, done))
    listed = {action.key for action, _ in actions}
    shipped: dict[dt.date, list[CorporateAction]] = {}
    for action in _shipped(symbol) if mask.any() else ():
        if action.key not in listed and not action.adjusted_by_source:
            shipped.setdefault(action.ex_date, []).append(action)
    out = []
    for i in np.flatnonzero(mask):
        day = _date(days[i])
        if (since is not None and day < since) or (symbol.upper(), day.isoformat()) in allowed:
            continue
        notes = []
        for action, done in by_day.get(day, []):
            why = (
                "applied: is its ratio or factor right?"
                if done
                else "marked adjusted_by_source: did the source really adjust for it?"
            )
            notes.append(f"the {action.describe()} on this day does not explain it ({why})")
        for action in shipped.get(day, []) if not notes else ():
            notes.append(
                f"the shipped corporate actions list the {action.describe()} on this day, which this "
                f"source does not apply: if its data is unadjusted, name {SHIPPED_FILE} (or your copy "
                f"of it) in {ACTIONS_FILE_ENV}"
            )
        out.append(Jump(day, float(close[i - 1]), float(close[i]), "; ".join(notes)))
    return out


def _shipped(symbol: str) -> tuple[CorporateAction, ...]:
    """The shipped file's actions of `symbol` (none when it cannot be read: only a hint depends on it)."""
    try:
        return load_actions([SHIPPED_FILE]).of(symbol.upper())
    except DataSourceError:
        return ()


@dataclass(frozen=True)
class QualityReport:
    """What the report found for one symbol and window; `metadata` is what the UI shows."""

    symbol: str
    start: dt.date
    end: dt.date
    judged_until: dt.date  # coverage is judged over [start, judged_until]
    sessions: int
    bars: int
    missing: tuple[dt.date, ...]
    gaps: tuple[tuple[dt.date, dt.date, int], ...]
    non_trading: tuple[dt.date, ...]
    repairs: tuple[str, ...]
    jumps: tuple[Jump, ...]
    actions: tuple[str, ...]  # the corporate actions that adjust this window's bars, or do not
    calendar_note: str = ""
    error: str = ""  # the source refused the window: nothing else could be judged

    @property
    def coverage(self) -> float | None:
        """Sessions with a bar / sessions, over the judged range (None when it holds no session)."""
        if not self.sessions:
            return None
        return (self.sessions - len(self.missing)) / self.sessions

    def problems(self) -> list[str]:
        """What a user should look at: an unreadable window, missing sessions, flagged jumps."""
        out = []
        if self.error:
            out.append(f"the source refused the window: {self.error}")
        if self.missing:
            out.append(
                f"{len(self.missing)} of {self.sessions} NSE sessions without a bar: {self.gap_text()}"
            )
        if self.jumps:
            out.append(
                f"{len(self.jumps)} unexplained one-day jump(s): "
                + "; ".join(j.describe() for j in self.jumps[:SHOWN])
            )
        return out

    def gap_text(self) -> str:
        shown = [f"{a}..{b} ({n})" if a != b else f"{a}" for a, b, n in self.gaps[:SHOWN]]
        more = f" and {len(self.gaps) - SHOWN} more" if len(self.gaps) > SHOWN else ""
        return ", ".join(shown) + more if shown else "none"

    def metadata(self) -> dict[str, Any]:
        """Plain values (numbers plottable across partitions, short texts)."""
        coverage = self.coverage
        meta: dict[str, Any] = {
            "coverage_pct": round(100.0 * coverage, 2) if coverage is not None else None,
            "nse_sessions": self.sessions,
            "bars": self.bars,
            "missing_sessions": len(self.missing),
            "gaps": self.gap_text(),
            "bars_on_non_trading_days": len(self.non_trading),
            "repaired_rows": repaired_rows(self.repairs),
            "jumps_flagged": len(self.jumps),
            "judged": f"{self.start}..{self.judged_until} against the {CALENDAR} calendar",
        }
        if self.non_trading:
            more = f" and {len(self.non_trading) - SHOWN} more" if len(self.non_trading) > SHOWN else ""
            meta["non_trading_days"] = ", ".join(map(str, self.non_trading[:SHOWN])) + more
        if self.repairs:
            meta["repairs"] = "; ".join(self.repairs)
        if self.jumps:
            meta["jumps"] = "; ".join(j.describe() for j in self.jumps[:SHOWN])
        if self.actions:
            meta["corporate_actions"] = "; ".join(self.actions)
        if self.calendar_note:
            meta["calendar_note"] = self.calendar_note
        if self.error:
            meta["error"] = self.error
        return meta


def _action_lines(actions: Sequence[ActionStatus], bars: pd.DataFrame, start: dt.date) -> tuple[str, ...]:
    """The actions that matter to this window: applied ones dated after its first bar (they
    adjusted it), and those dated inside it that were not applied (and why)."""
    first = _date(_days(bars)[0]) if len(bars) else None
    lines = []
    for action, done in actions:
        if done and first is not None and action.ex_date > first:
            lines.append(f"{action.describe()} applied: bars before it adjusted")
        elif not done and start <= action.ex_date and (first is None or action.ex_date > first):
            why = "adjusted by the source" if action.adjusted_by_source else "the data does not reach it yet"
            lines.append(f"{action.describe()} not applied ({why})")
    return tuple(lines)


def quality_report(
    symbol: str,
    start: dt.date,
    end: dt.date,
    bars: pd.DataFrame,
    *,
    today: dt.date,
    max_move: float,
    repairs: Sequence[str] = (),
    actions: Sequence[ActionStatus] = (),
    allowed: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
) -> QualityReport:
    """The report of `symbol`'s window [start, end] from `bars`, which may begin a few days before
    `start` (the previous close, so a jump on the window's first day is seen; only bars inside
    the window are counted). Coverage is judged up to today and up to the calendar's last known
    day."""
    start, end = as_date(start), as_date(end)
    known = calendar_known_until()
    until = min(end, as_date(today), known)
    note = ""
    if until < end and until == known:
        note = f"pandas_market_calendars lists NSE holidays only up to {known}: days after it are not judged"
    days = _days(bars)
    inside = (days >= np.datetime64(start, "D")) & (days <= np.datetime64(end, "D"))
    sessions = nse_sessions(start, until) if until >= start else np.array([], dtype="datetime64[D]")
    window_days = days[inside]
    judged = window_days[window_days <= np.datetime64(until, "D")]
    missing = np.setdiff1d(sessions, judged)
    non_trading = np.setdiff1d(judged, sessions)
    jumps = flag_jumps(bars, max_move, symbol=symbol, actions=actions, allowed=allowed, since=start)
    return QualityReport(
        symbol=symbol,
        start=start,
        end=end,
        judged_until=until,
        sessions=len(sessions),
        bars=int(inside.sum()),
        missing=tuple(_date(d) for d in missing),
        gaps=tuple(gap_ranges(sessions, missing)),
        non_trading=tuple(_date(d) for d in non_trading),
        repairs=tuple(repairs),
        jumps=tuple(j for j in jumps if j.day <= end),
        actions=_action_lines(actions, bars[inside], start),
        calendar_note=note,
    )
