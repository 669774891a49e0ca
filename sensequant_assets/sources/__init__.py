"""Where bars come from: synthetic, csv/parquet directories (no Dagster here)."""

from .base import (
    BAR_COLUMNS,
    IST,
    BarSource,
    DataSourceError,
    UnknownSymbolError,
    Window,
    as_date,
    empty_bars,
    filter_dates,
    last_weekday,
    validate_bars,
    window_is_covered,
)
from .csv_dir import CsvDirSource
from .symbols import InvalidSymbolError, parse_symbols, validate_symbol
from .synthetic import SyntheticSource

__all__ = [
    "BAR_COLUMNS",
    "IST",
    "BarSource",
    "CsvDirSource",
    "DataSourceError",
    "InvalidSymbolError",
    "SyntheticSource",
    "UnknownSymbolError",
    "Window",
    "as_date",
    "empty_bars",
    "filter_dates",
    "last_weekday",
    "parse_symbols",
    "validate_bars",
    "validate_symbol",
    "window_is_covered",
]
