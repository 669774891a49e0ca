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


def _window_partitions() -> TimeWindowPartitionsDefinition:
    """Windows of N months anchored at the start date's month; only complete windows exist."""
    settings = partition_settings()
    first = settings.start_date.month - 1
    months = sorted({(first + k * settings.window_months) % 12 + 1 for k in range(12)})
    cron = f"0 0 1 {','.join(str(m) for m in months)} *"
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
