"""Resources: the configured bar source and the run-wide settings, chosen from the environment here."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from dagster import ConfigurableResource, EnvVar

from sensequant_assets.settings import DEFAULTS, SettingsError, data_source_name, env, forecast_horizon
from sensequant_assets.sources.base import BarSource
from sensequant_assets.sources.csv_dir import CsvDirSource
from sensequant_assets.sources.symbols import parse_symbols
from sensequant_assets.sources.synthetic import SyntheticSource


class MarketDataResource(ConfigurableResource):
    """Where bars come from (`SENSEQUANT_DATA_SOURCE`): `synthetic` or a `csv` directory.

    The synthetic source can plant a predictable component on some symbols and make others a pure
    random walk, so the ML and the statistics can be tested against a known truth.
    """

    data_source: str = DEFAULTS["SENSEQUANT_DATA_SOURCE"]
    data_dir: str = DEFAULTS["SENSEQUANT_DATA_DIR"]
    synthetic_seed: int = 0
    synthetic_end_date: str = ""
    signal_symbols: str = ""
    random_walk_symbols: str = ""
    signal_strength: float = 4.0

    def source_for(self, symbol: str) -> BarSource:
        kind = self.data_source.strip().lower()
        if kind == "csv":
            directory = Path(self.data_dir)
            if not directory.is_dir():
                raise SettingsError(
                    f"SENSEQUANT_DATA_DIR={self.data_dir!r} is not a directory (data source 'csv')"
                )
            return CsvDirSource(directory)
        if kind == "synthetic":
            end = date.fromisoformat(self.synthetic_end_date) if self.synthetic_end_date else None
            return SyntheticSource(
                seed=self.synthetic_seed,
                end_date=end,
                signal_strength=self.signal_strength if symbol in _set(self.signal_symbols) else 0.0,
                random_walk=symbol in _set(self.random_walk_symbols),
            )
        raise SettingsError(f"data source {self.data_source!r} is not one of synthetic, csv")


class PipelineSettings(ConfigurableResource):
    """Run-wide settings that are not model hyper-parameters."""

    forecast_horizon: int = int(DEFAULTS["SENSEQUANT_FORECAST_HORIZON"])


def _set(symbols: str) -> set[str]:
    return set(parse_symbols(symbols)) if symbols.strip() else set()


def _from_env(name: str) -> str | EnvVar:
    """EnvVar when the variable is set (the UI then shows where the value came from), else the default."""
    return EnvVar(name) if env(name) != DEFAULTS[name] else DEFAULTS[name]


def market_data_from_env(*, plain: bool = False) -> MarketDataResource:
    """The configured source; `plain` resolves the values now (for use outside Dagster)."""
    data_source_name()  # validate early, naming the variable
    value = env if plain else _from_env
    return MarketDataResource(
        data_source=value("SENSEQUANT_DATA_SOURCE"),
        data_dir=value("SENSEQUANT_DATA_DIR"),
        synthetic_seed=int(env("SENSEQUANT_SYNTHETIC_SEED")),
        synthetic_end_date=env("SENSEQUANT_SYNTHETIC_END_DATE"),
        signal_symbols=env("SENSEQUANT_SYNTHETIC_SIGNAL_SYMBOLS"),
        random_walk_symbols=env("SENSEQUANT_SYNTHETIC_RANDOM_WALK_SYMBOLS"),
        signal_strength=float(env("SENSEQUANT_SYNTHETIC_SIGNAL_STRENGTH")),
    )


def settings_from_env() -> PipelineSettings:
    return PipelineSettings(forecast_horizon=forecast_horizon())
