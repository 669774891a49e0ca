"""Where bars come from: synthetic, csv/parquet directories (no Dagster here)."""

from .base import (
    BAR_COLUMNS,
    IST,
    BarSource,
    DataSourceError,
    UnknownSymbolError,
    as_date,
    empty_bars,
    filter_dates,
    validate_bars,
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
    "as_date",
    "empty_bars",
    "filter_dates",
    "parse_symbols",
    "validate_bars",
    "validate_symbol",
]
