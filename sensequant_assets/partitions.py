"""The two partition dimensions: `symbol` (dynamic, named `symbols`) x `window` (calendar windows)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from dagster import (
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    TimeWindowPartitionsDefinition,
)

from sensequant_assets.settings import partition_settings

SYMBOLS_PARTITIONS_NAME = "symbols"
WINDOW_FORMAT = "%Y-%m-%d"


def window_start_months() -> str:
    """The months windows start in, as a cron month field (`1,7` for half-years from January),
    from the settings (not from the windows that exist yet)."""
    settings = partition_settings()
    first = settings.start_date.month - 1
    return ",".join(
        str(m) for m in sorted({(first + k * settings.window_months) % 12 + 1 for k in range(12)})
    )


def _window_partitions() -> TimeWindowPartitionsDefinition:
    """Windows of N months anchored at the start date's month; only complete windows exist."""
    settings = partition_settings()
    cron = f"0 0 1 {window_start_months()} *"
    return TimeWindowPartitionsDefinition(
        cron_schedule=cron,
        start=settings.start_date.strftime(WINDOW_FORMAT),
        fmt=WINDOW_FORMAT,
        timezone="Asia/Kolkata",
        end_offset=0,
    )


symbol_partitions = DynamicPartitionsDefinition(name=SYMBOLS_PARTITIONS_NAME)
window_partitions = _window_partitions()
symbol_window_partitions = MultiPartitionsDefinition(
    {"symbol": symbol_partitions, "window": window_partitions}
)


def window_bounds(window_key: str) -> tuple[date, date]:
    """First and last calendar day (inclusive) of a window partition."""
    tw = window_partitions.time_window_for_partition_key(window_key)
    return tw.start.date(), (tw.end - timedelta(days=1)).date()


def split_key(partition_key: str | MultiPartitionKey) -> tuple[str, str]:
    """`RELIANCE|2023-01-01` -> ("RELIANCE", "2023-01-01")."""
    if isinstance(partition_key, MultiPartitionKey):
        dims = partition_key.keys_by_dimension
        return dims["symbol"], dims["window"]
    symbol, _, window = str(partition_key).rpartition("|")
    if not symbol or not window:
        raise ValueError(f"partition key {partition_key!r} is not of the form SYMBOL|YYYY-MM-DD")
    return symbol, window


def make_key(symbol: str, window_key: str) -> MultiPartitionKey:
    return MultiPartitionKey({"symbol": symbol, "window": window_key})


def windows_between(start: date, end: date) -> list[str]:
    """Keys of the complete windows lying wholly inside [start, end]."""
    keys = []
    for key in window_partitions.get_partition_keys():
        first, last = window_bounds(key)
        if first >= start and last <= end:
            keys.append(key)
    return keys


def latest_by_symbol(partition_keys: Iterable[str]) -> dict[str, str]:
    """symbol -> its partition key with the newest window (window keys sort as dates)."""
    latest: dict[str, str] = {}
    for key in partition_keys:
        symbol, window = split_key(key)
        if symbol not in latest or window > split_key(latest[symbol])[1]:
            latest[symbol] = str(key)
    return latest


def previous_window(window_key: str) -> str | None:
    """The window before `window_key`, or None for the first window."""
    keys = window_partitions.get_partition_keys()
    i = keys.index(window_key)
    return keys[i - 1] if i > 0 else None


def next_window(window_key: str) -> str | None:
    """The window after `window_key`, or None while it is the newest complete window."""
    keys = window_partitions.get_partition_keys()
    i = keys.index(window_key)
    return keys[i + 1] if i + 1 < len(keys) else None


def shift_months(day: date, months: int) -> date:
    """The first day of the month `months` after (before, if negative) the month of `day`."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def windows_back(start: date, days: int, window_months: int) -> list[tuple[date, date]]:
    """The windows (first, last day) of the grid ending at `start` that hold some of the `days`
    calendar days before it, oldest first; windows before the first partition included."""
    history_start = start - timedelta(days=days)
    windows: list[tuple[date, date]] = []
    end = start
    while end > history_start:
        first = shift_months(end, -window_months)
        windows.append((first, end - timedelta(days=1)))
        end = first
    return windows[::-1]


def history_windows(window_key: str, days: int) -> list[tuple[str, date, date]]:
    """(window key, first, last day of the history in it) for the `days` calendar days before
    `window_key` starts, oldest first: the history split along the windows that hold it.

    A key before the first partition (`SENSEQUANT_START_DATE`) is not a partition of
    `window_partitions`; callers find nothing stored under it.
    """
    start, _ = window_bounds(window_key)
    history_start = start - timedelta(days=days)
    months = partition_settings().window_months
    return [
        (first.strftime(WINDOW_FORMAT), max(first, history_start), last)
        for first, last in windows_back(start, days, months)
    ]


def earlier_windows(window_key: str, count: int) -> list[str]:
    """The (at most) `count` windows before `window_key`, oldest first.

    Windows before the first partition (`SENSEQUANT_START_DATE`) are left out: a lookback reaching
    back past the start is cut there, as `ml.protocol.walk_forward` cuts it at its first window.
    """
    if count <= 0:
        return []
    keys = window_partitions.get_partition_keys()
    i = keys.index(window_key)
    return keys[max(0, i - count) : i]


def bars_before_windows(window_key: str, lookback: int, days: int) -> list[tuple[str, date, date]]:
    """(window key, first, last day) of every day before `window_key` that a teacher with `lookback`
    windows reads, oldest first: the `days` of warm-up history before its earliest training window
    (`history_windows`), then the lookback windows (`earlier_windows`) whole. With `lookback` 0 it is
    `history_windows(window_key, days)`.
    """
    lookback_keys = earlier_windows(window_key, lookback)
    pieces = history_windows(lookback_keys[0] if lookback_keys else window_key, days)
    return pieces + [(key, *window_bounds(key)) for key in lookback_keys]


def max_history_windows(days: int) -> int:
    """The most windows that `days` calendar days of history before a window can reach into: the
    offset of a partition mapping that declares that history as a dependency.

    Checked over eight years of window starts, so every position relative to leap years is seen.
    Where months of different lengths make the count vary from window to window, a mapping with
    this offset names one window more than some histories read (never fewer); for the teacher's
    `HISTORY_DAYS` and every allowed `SENSEQUANT_WINDOW_MONTHS` it is the same for every window.
    """
    settings = partition_settings()
    starts = range(0, 8 * 12, settings.window_months)
    return max(
        len(windows_back(shift_months(settings.start_date, m), days, settings.window_months)) for m in starts
    )
