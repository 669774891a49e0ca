"""The Breeze cache's bookkeeping, kept next to the bars: the calls made and what is fetched.

Breeze allows about 100 calls a minute and 5,000 a day per account, across every process that
uses it, so the count lives in a file (`<cache>/.breeze/calls.json`), not in one run's memory: two
runs share one budget. What was fetched lives in another (`<cache>/.breeze/state.json`), so
deleting it (to have everything asked again) never resets the quota. Both are changed under an
exclusive file lock (`locks.py`) and replaced atomically. A run that stopped at the quota is resumed by the
next from the ranges recorded as fetched. The csv source never looks inside `.breeze/` (it has no
`1day` directory). No Dagster here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sensequant_assets import locks

from .base import IST, DataSourceError

__all__ = [
    "CALLS_FILE",
    "FETCHED_FILE",
    "STATE_DIR",
    "CallBudget",
    "Clock",
    "QuotaExhaustedError",
    "StateFile",
    "SystemClock",
    "ist_now",
    "merge_ranges",
    "missing_ranges",
    "replace_atomically",
]

STATE_DIR = ".breeze"
FETCHED_FILE = "state.json"  # what each symbol has fetched (deleting it re-asks, nothing else)
CALLS_FILE = "calls.json"  # the calls made: the per-minute rate and the daily quota
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


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable, where the platform allows opening a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_atomically(path: Path, data: bytes, *, sync_directory: bool = True) -> None:
    """Write `data` to a hidden temporary file beside `path`, flushed to disk, then rename it over
    `path`: a reader sees the old file or the new one, never half of one (the csv source skips
    hidden files), and a crash leaves one of them whole. The file gets the mode any new file of
    the user gets (0644 under the usual umask 022), not mkstemp's 0600. `sync_directory=False`
    leaves the directory's fsync to the caller (once after many files)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(f"{path.parent}: no free temporary file name")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_directory:
        _fsync_directory(path.parent)


class StateFile:
    """`<cache>/.breeze/<name>`, read and changed under a lock shared by every process."""

    def __init__(self, cache_dir: str | Path, name: str = FETCHED_FILE) -> None:
        self.cache_dir = Path(cache_dir)
        self.dir = self.cache_dir / STATE_DIR
        self.path = self.dir / name

    @contextmanager
    def locked(self, name: str | None = None) -> Iterator[None]:
        """An exclusive lock named `name` (a file in `.breeze/`; by default this file's), released
        on exit."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"{name or self.path.stem}.lock", "a+b") as handle, locks.locked(handle):
            yield

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DataSourceError(
                f"{self.path}: the Breeze cache's bookkeeping cannot be read ({exc}); delete it to "
                "start it afresh (state.json: the next fetch then asks again for what the cache "
                "lacks; calls.json: today's calls are forgotten, mind the quota)",
                origin=str(self.path),
                rule="readable state file",
            ) from None
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        replace_atomically(self.path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))

    @contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        """The state, locked; written back (atomically) when the block ends without an error."""
        with self.locked():
            data = self.read()
            yield data
            self._write(data)


class CallBudget:
    """Waits for a free slot in the per-minute rate and counts the call against the daily quota.

    The counts live in the cache's `calls.json` (`cache`: the cache directory, or any StateFile of
    it), apart from what was fetched. The quota's day is the IST calendar day. Every attempt
    counts, retries included: Breeze counts requests, not answers.
    """

    def __init__(
        self, cache: str | Path | StateFile, clock: Clock, per_minute: int, daily_quota: int
    ) -> None:
        if per_minute < 1 or daily_quota < 1:
            raise ValueError("the per-minute rate and the daily quota must be at least 1 call")
        cache_dir = cache.cache_dir if isinstance(cache, StateFile) else Path(cache)
        self.state, self.clock = StateFile(cache_dir, CALLS_FILE), clock
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
