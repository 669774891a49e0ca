"""Environment settings in one place, with their defaults and validation.

Partition definitions are built at import time, so the settings they need (start date, window length)
are read here; everything else reaches assets through resources built in `resources.py`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import date

DEFAULTS: dict[str, str] = {
    "SENSEQUANT_DATA_SOURCE": "synthetic",
    "SENSEQUANT_DATA_DIR": "data/historical",
    "SENSEQUANT_ARTIFACTS_DIR": "data/models",
    "SENSEQUANT_SYMBOLS": "RELIANCE,TCS,INFY,HDFCBANK,ICICIBANK",
    "SENSEQUANT_START_DATE": "2022-01-01",
    "SENSEQUANT_WINDOW_MONTHS": "6",
    "SENSEQUANT_FORECAST_HORIZON": "7",
    "SENSEQUANT_SYNTHETIC_SEED": "0",
    "SENSEQUANT_SYNTHETIC_END_DATE": "",
    "SENSEQUANT_SYNTHETIC_SIGNAL_SYMBOLS": "",
    "SENSEQUANT_SYNTHETIC_RANDOM_WALK_SYMBOLS": "",
    "SENSEQUANT_SYNTHETIC_SIGNAL_IC": "0.10",
    "SENSEQUANT_SYNTHETIC_PROCESS": "garch",
    "SENSEQUANT_UNIVERSE_FILE": "",
    "SENSEQUANT_BACKFILL_NEW_SYMBOLS": "1",
    "SENSEQUANT_SENSOR_INTERVAL_SECONDS": "30",
    "SENSEQUANT_DECAY_MIN_AUC": "0.5",
    "SENSEQUANT_DECAY_WINDOWS": "2",
    "SENSEQUANT_BATCH_BACKFILLS": "1",
    "SENSEQUANT_MAX_PARTITIONS_PER_RUN": "100",
    "SENSEQUANT_RUN_WORKERS": "0",
    "SENSEQUANT_LATEST_WINDOW_CRON": "",
    "SENSEQUANT_MAX_DAILY_MOVE": "0.4",
    "SENSEQUANT_MAX_GAP_DAYS": "10",
    "SENSEQUANT_MAX_FILE_MB": "100",  # a data file larger than this is refused unread (0: no limit)
    "SENSEQUANT_ALLOWED_MOVES": "",
    "SENSEQUANT_CORPORATE_ACTIONS_FILE": "",  # the csv and breeze sources (breeze adds the shipped file)
    # The breeze source (credentials are BREEZE_API_KEY, BREEZE_API_SECRET, BREEZE_SESSION_TOKEN or
    # BREEZE_SESSION_TOKEN_FILE, read apart: they are secrets, never shown with the settings).
    "SENSEQUANT_BREEZE_CODES_FILE": "",
    "SENSEQUANT_BREEZE_CALLS_PER_MINUTE": "100",
    "SENSEQUANT_BREEZE_DAILY_QUOTA": "5000",
    "SENSEQUANT_BREEZE_REFRESH_DAYS": "5",
    "SENSEQUANT_FETCH_CRON": "0 19 * * 1-5",
    # Where a run's steps execute (deployment/executors.py): "" picks in-process (batched) or multiprocess;
    # "celery" sends each step to the Celery workers of the broker below (deploy/scaleout/).
    "SENSEQUANT_EXECUTOR": "",
    "SENSEQUANT_CELERY_BROKER": "pyamqp://guest@localhost:5672//",
    "SENSEQUANT_CELERY_BACKEND": "rpc://",
}

DATA_SOURCES = ("synthetic", "csv", "breeze")
WINDOW_MONTHS_ALLOWED = (1, 2, 3, 4, 6, 12)


class SettingsError(ValueError):
    """A SENSEQUANT_* variable has a value we cannot use; the message names it."""


def env(name: str) -> str:
    """The variable's value, or its documented default."""
    return os.environ.get(name, "").strip() or DEFAULTS[name]


@dataclass(frozen=True)
class PartitionSettings:
    start_date: date
    window_months: int


def partition_settings() -> PartitionSettings:
    """Start date and window length, validated so windows tile the calendar from the start date."""
    raw_start = env("SENSEQUANT_START_DATE")
    try:
        start = date.fromisoformat(raw_start)
    except ValueError as exc:
        raise SettingsError(f"SENSEQUANT_START_DATE={raw_start!r} is not a YYYY-MM-DD date") from exc
    if start.day != 1:
        raise SettingsError(
            f"SENSEQUANT_START_DATE={raw_start!r} must be the first day of a month "
            "(windows are whole calendar months)"
        )
    raw_months = env("SENSEQUANT_WINDOW_MONTHS")
    try:
        months = int(raw_months)
    except ValueError as exc:
        raise SettingsError(f"SENSEQUANT_WINDOW_MONTHS={raw_months!r} is not an integer") from exc
    if months not in WINDOW_MONTHS_ALLOWED:
        raise SettingsError(
            f"SENSEQUANT_WINDOW_MONTHS={months} must divide a year: one of {WINDOW_MONTHS_ALLOWED}"
        )
    return PartitionSettings(start_date=start, window_months=months)


def forecast_horizon() -> int:
    raw = env("SENSEQUANT_FORECAST_HORIZON")
    try:
        horizon = int(raw)
    except ValueError as exc:
        raise SettingsError(f"SENSEQUANT_FORECAST_HORIZON={raw!r} is not an integer") from exc
    if horizon < 1:
        raise SettingsError(f"SENSEQUANT_FORECAST_HORIZON={horizon} must be at least 1 bar")
    return horizon


def data_source_name() -> str:
    name = env("SENSEQUANT_DATA_SOURCE").lower()
    if name not in DATA_SOURCES:
        raise SettingsError(f"SENSEQUANT_DATA_SOURCE={name!r} is not one of {DATA_SOURCES}")
    return name


def flag(name: str) -> bool:
    """A boolean variable: 1/true/yes/on (any case) is true, 0/false/no/off is false."""
    raw = env(name).lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def number(name: str, kind: type[int] | type[float], minimum: float) -> int | float:
    """A numeric variable of `kind`, at least `minimum`; the message names the variable."""
    raw = env(name)
    try:
        value = kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a {kind.__name__}") from exc
    if not math.isfinite(value) or value < minimum:
        raise SettingsError(f"{name}={value} must be a finite number of at least {minimum}")
    return value
