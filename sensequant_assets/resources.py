"""Resources: the configured bar source and the run-wide settings, chosen from the environment here."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from dagster import ConfigurableResource, EnvVar

from sensequant_assets.settings import (
    DEFAULTS,
    SettingsError,
    data_source_name,
    env,
    forecast_horizon,
    number,
)
from sensequant_assets.sources.base import BarSource
from sensequant_assets.sources.csv_dir import CsvDirSource
from sensequant_assets.sources.symbols import parse_symbols
from sensequant_assets.sources.synthetic import PROCESSES, SyntheticSource, max_signal_ic


class MarketDataResource(ConfigurableResource):
    """Where bars come from (`SENSEQUANT_DATA_SOURCE`): `synthetic` or a `csv` directory.

    The synthetic source draws every symbol from one no-signal null process (`synthetic_process`),
    plants a signal of a known information coefficient (`signal_ic`, at `signal_horizon` bars) on
    some symbols and makes others a pure random walk, so the ML and the statistics can be tested
    against a known truth.
    """

    data_source: str = DEFAULTS["SENSEQUANT_DATA_SOURCE"]
    data_dir: str = DEFAULTS["SENSEQUANT_DATA_DIR"]
    synthetic_seed: int = 0
    synthetic_end_date: str = ""
    synthetic_process: str = DEFAULTS["SENSEQUANT_SYNTHETIC_PROCESS"]
    signal_symbols: str = ""
    random_walk_symbols: str = ""
    signal_ic: float = float(DEFAULTS["SENSEQUANT_SYNTHETIC_SIGNAL_IC"])
    signal_horizon: int = int(DEFAULTS["SENSEQUANT_FORECAST_HORIZON"])

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
            planted, walk = symbol in _set(self.signal_symbols), symbol in _set(self.random_walk_symbols)
            if planted and walk:
                raise SettingsError(
                    f"{symbol} is in both SENSEQUANT_SYNTHETIC_SIGNAL_SYMBOLS and "
                    "SENSEQUANT_SYNTHETIC_RANDOM_WALK_SYMBOLS: a random-walk symbol is the no-signal null"
                )
            return SyntheticSource(
                seed=self.synthetic_seed,
                end_date=end,
                signal_ic=self.signal_ic if planted else 0.0,
                process="random_walk" if walk else self.synthetic_process,
                signal_horizon=self.signal_horizon,
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
    """The configured source; `plain` resolves the values now (for use outside Dagster).

    The planted signal's IC is defined at the pipeline's label horizon (SENSEQUANT_FORECAST_HORIZON).
    """
    data_source_name()  # validate early, naming the variable
    value = env if plain else _from_env
    process = env("SENSEQUANT_SYNTHETIC_PROCESS").lower()
    if process not in PROCESSES:
        raise SettingsError(f"SENSEQUANT_SYNTHETIC_PROCESS={process!r} is not one of {PROCESSES}")
    horizon = forecast_horizon()
    signal_ic = float(number("SENSEQUANT_SYNTHETIC_SIGNAL_IC", float, 0.0))
    if not signal_ic < max_signal_ic(horizon):
        raise SettingsError(
            f"SENSEQUANT_SYNTHETIC_SIGNAL_IC={signal_ic} must be below {max_signal_ic(horizon):.4f}, the "
            f"most a planted mean-reverting deviation can reach at a {horizon}-bar horizon"
        )
    return MarketDataResource(
        data_source=value("SENSEQUANT_DATA_SOURCE"),
        data_dir=value("SENSEQUANT_DATA_DIR"),
        synthetic_seed=int(env("SENSEQUANT_SYNTHETIC_SEED")),
        synthetic_end_date=env("SENSEQUANT_SYNTHETIC_END_DATE"),
        synthetic_process=process,
        signal_symbols=env("SENSEQUANT_SYNTHETIC_SIGNAL_SYMBOLS"),
        random_walk_symbols=env("SENSEQUANT_SYNTHETIC_RANDOM_WALK_SYMBOLS"),
        signal_ic=signal_ic,
        signal_horizon=horizon,
    )


def settings_from_env() -> PipelineSettings:
    return PipelineSettings(forecast_horizon=forecast_horizon())
