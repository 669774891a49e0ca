"""The Breeze cache's bookkeeping, kept next to the bars: the calls made and what is fetched.

Breeze allows about 100 calls a minute and 5,000 a day per account, across every process that
uses it, so the count lives in a file (`<cache>/.breeze/state.json`, changed under an exclusive
`fcntl` lock and replaced atomically), not in one run's memory: two runs share one budget, and a
run that stopped at the quota is resumed by the next from the ranges recorded as fetched.
The csv source never looks inside `.breeze/` (it has no `1day` directory). No Dagster here.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from .base import IST, DataSourceError

__all__ = [
    "STATE_DIR",
    "CallBudget",
    "Clock",
    "QuotaExhaustedError",
    "StateFile",
    "SystemClock",
    "ist_now",
    "merge_ranges",
    "missing_ranges",
]

STATE_DIR = ".breeze"
DateRange = tuple[dt.date, dt.date]  # first and last day, both inclusive


class Clock(Protocol):
    """Time as the fetch sees it; tests inject one whose `sleep` only moves `time` on."""

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def ist_now(clock: Clock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.time(), ZoneInfo(IST))


class QuotaExhaustedError(DataSourceError):
    """The daily call quota is used up; what was fetched is kept and the next run resumes."""


class StateFile:
    """`<cache>/.breeze/state.json`, read and changed under a lock shared by every process."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir) / STATE_DIR
        self.path = self.dir / "state.json"

    @contextmanager
    def locked(self, name: str = "state") -> Iterator[None]:
        """An exclusive lock named `name` (a file in `.breeze/`), released on exit."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"{name}.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DataSourceError(
                f"{self.path}: the Breeze cache state cannot be read ({exc}); delete it to start the "
                "bookkeeping afresh (the next fetch then asks again for what the cache already holds)",
                origin=str(self.path),
                rule="readable state file",
            ) from None
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        """The state, locked; written back (atomically) when the block ends without an error."""
        with self.locked():
            data = self.read()
            yield data
            self._write(data)


class CallBudget:
    """Waits for a free slot in the per-minute rate and counts the call against the daily quota.

    The quota's day is the IST calendar day. Every attempt counts, retries included: Breeze counts
    requests, not answers.
    """

    def __init__(self, state: StateFile, clock: Clock, per_minute: int, daily_quota: int) -> None:
        if per_minute < 1 or daily_quota < 1:
            raise ValueError("the per-minute rate and the daily quota must be at least 1 call")
        self.state, self.clock = state, clock
        self.per_minute, self.daily_quota = per_minute, daily_quota
        self.calls = 0  # made through this budget
        self.waited = 0.0  # seconds slept for the rate

    def acquire(self) -> None:
        while True:
            with self.state.update() as data:
                now = self.clock.time()
                day = ist_now(self.clock).date().isoformat()
                quota = data.get("quota") or {}
                if quota.get("day") != day:
                    quota = {"day": day, "calls": 0}
                if quota["calls"] >= self.daily_quota:
                    raise QuotaExhaustedError(
                        f"the daily Breeze quota is used up ({quota['calls']} of "
                        f"SENSEQUANT_BREEZE_DAILY_QUOTA={self.daily_quota} calls on {day}, IST); the next "
                        "run after midnight IST resumes where this one stopped",
                        rule="daily quota",
                    )
                recent = sorted(t for t in data.get("recent_calls", []) if 0 <= now - t < 60.0)
                wait = recent[0] + 60.0 - now if len(recent) >= self.per_minute else 0.0
                if wait <= 0:
                    recent.append(now)
                    quota["calls"] += 1
                    self.calls += 1
                data["quota"], data["recent_calls"] = quota, recent
                if wait <= 0:
                    return
            self.waited += wait
            self.clock.sleep(wait)

    def quota_left(self) -> int:
        quota = self.state.read().get("quota") or {}
        used = quota.get("calls", 0) if quota.get("day") == ist_now(self.clock).date().isoformat() else 0
        return max(0, self.daily_quota - int(used))


def merge_ranges(ranges: list[DateRange]) -> list[DateRange]:
    """Sorted, with overlapping or adjacent ranges joined."""
    out: list[DateRange] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + dt.timedelta(days=1):
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def missing_ranges(want: DateRange, have: list[DateRange]) -> list[DateRange]:
    """The parts of `want` that no range of `have` covers, in order."""
    first, last = want
    out: list[DateRange] = []
    cursor = first
    for lo, hi in merge_ranges(have):
        if hi < cursor or lo > last:
            continue
        if lo > cursor:
            out.append((cursor, lo - dt.timedelta(days=1)))
        cursor = max(cursor, hi + dt.timedelta(days=1))
    if cursor <= last:
        out.append((cursor, last))
    return out
