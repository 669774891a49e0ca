"""Resources: the bar source (one class per source) and the run-wide settings, chosen from the
environment here.

`MarketDataResource` is where the training graph, the sensors and the schedules read bars; each
source is a subclass with its own fields and its own `from_env`, and `market_data_from_env` picks
the one `SENSEQUANT_DATA_SOURCE` names, so a new source is a new class, not a new branch. A source
that must be filled before it is read (Breeze) has ingestion assets (`assets.ingest.ingestion_for`,
added by `build_definitions`) and the resources they need (`api_resources`); only those assets
reach the API, the rest read its local cache.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

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
from sensequant_assets.sources.breeze import BreezeIngestor
from sensequant_assets.sources.breeze_client import (
    TOKEN_FILE_VAR,
    BreezeClient,
    BreezeSession,
    Credentials,
    RetryPolicy,
    breeze_connect_factory,
    credentials_from_env,
    require_credentials,
)
from sensequant_assets.sources.breeze_state import CallBudget, Clock, StateFile, SystemClock
from sensequant_assets.sources.csv_dir import CsvDirSource
from sensequant_assets.sources.symbols import parse_symbols
from sensequant_assets.sources.synthetic import PROCESSES, SyntheticSource, max_signal_ic


class _ChosenByDataSource(type(ConfigurableResource)):
    """Keeps the old call `MarketDataResource(data_source="csv", data_dir=...)` working: on the
    base class it builds the subclass `data_source` names (fields of the other sources, which the
    old single class carried, are dropped). New code names the subclass."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is MarketDataResource:
            kind = str(kwargs.pop("data_source", DEFAULTS["SENSEQUANT_DATA_SOURCE"])).strip().lower()
            if kind not in MARKET_DATA:
                raise SettingsError(f"data source {kind!r} is not one of {', '.join(MARKET_DATA)}")
            target = MARKET_DATA[kind]
            foreign = {name for other in MARKET_DATA.values() for name in other.model_fields}
            foreign -= set(target.model_fields)
            return target(*args, **{k: v for k, v in kwargs.items() if k not in foreign})
        return super().__call__(*args, **kwargs)


class MarketDataResource(ConfigurableResource, metaclass=_ChosenByDataSource):
    """Where bars are read (`SENSEQUANT_DATA_SOURCE`); one subclass per source."""

    kind: ClassVar[str] = ""

    @property
    def data_source(self) -> str:
        return self.kind

    def source_for(self, symbol: str) -> BarSource:
        raise NotImplementedError

    @classmethod
    def from_env(cls, plain: bool, *, fetch: bool = True) -> MarketDataResource:
        """This source configured from the environment; `plain` resolves values now. `fetch=False`:
        only to read what a fetching source has cached (no API credentials needed)."""
        raise NotImplementedError

    def api_resources(self) -> dict[str, ConfigurableResource]:
        """Resources only the ingestion assets use, by key (none for a source read directly)."""
        return {}


class SyntheticMarketData(MarketDataResource):
    """Offline, deterministic bars. Every symbol is drawn from one no-signal null process
    (`synthetic_process`); some get a planted signal of a known information coefficient
    (`signal_ic`, at `signal_horizon` bars), others are a pure random walk, so the ML and the
    statistics can be tested against a known truth."""

    kind: ClassVar[str] = "synthetic"
    synthetic_seed: int = 0
    synthetic_end_date: str = ""
    synthetic_process: str = DEFAULTS["SENSEQUANT_SYNTHETIC_PROCESS"]
    signal_symbols: str = ""
    random_walk_symbols: str = ""
    signal_ic: float = float(DEFAULTS["SENSEQUANT_SYNTHETIC_SIGNAL_IC"])
    signal_horizon: int = int(DEFAULTS["SENSEQUANT_FORECAST_HORIZON"])

    def source_for(self, symbol: str) -> BarSource:
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

    @classmethod
    def from_env(cls, plain: bool, *, fetch: bool = True) -> SyntheticMarketData:
        """The planted signal's IC is defined at the pipeline's label horizon."""
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
        return cls(
            synthetic_seed=int(env("SENSEQUANT_SYNTHETIC_SEED")),
            synthetic_end_date=env("SENSEQUANT_SYNTHETIC_END_DATE"),
            synthetic_process=process,
            signal_symbols=env("SENSEQUANT_SYNTHETIC_SIGNAL_SYMBOLS"),
            random_walk_symbols=env("SENSEQUANT_SYNTHETIC_RANDOM_WALK_SYMBOLS"),
            signal_ic=signal_ic,
            signal_horizon=horizon,
        )


class CsvMarketData(MarketDataResource):
    """A directory of csv/parquet files (`SENSEQUANT_DATA_DIR`, layouts in `sources/csv_dir.py`)."""

    kind: ClassVar[str] = "csv"
    data_dir: str = DEFAULTS["SENSEQUANT_DATA_DIR"]

    def source_for(self, symbol: str) -> BarSource:
        if not Path(self.data_dir).is_dir():
            raise SettingsError(
                f"SENSEQUANT_DATA_DIR={self.data_dir!r} is not a directory (data source 'csv')"
            )
        return CsvDirSource(Path(self.data_dir))

    @classmethod
    def from_env(cls, plain: bool, *, fetch: bool = True) -> CsvMarketData:
        return cls(data_dir=_value("SENSEQUANT_DATA_DIR", plain))


class BreezeMarketData(MarketDataResource):
    """ICICI Direct Breeze, read from its local cache (`SENSEQUANT_DATA_DIR`, the csv source's
    daily layout). Only the `breeze_bars` asset calls the API (through `BreezeApiResource`) and
    fills the cache; everything else reads the cache, so no sensor tick or training step calls
    Breeze. The cache may not exist before the first fetch: its symbols are then unknown."""

    kind: ClassVar[str] = "breeze"
    data_dir: str = DEFAULTS["SENSEQUANT_DATA_DIR"]

    def source_for(self, symbol: str) -> BarSource:
        # Breeze's history is unadjusted: the shipped corporate actions apply to its cache.
        return CsvDirSource(Path(self.data_dir), shipped_actions=True)

    @classmethod
    def from_env(cls, plain: bool, *, fetch: bool = True) -> BreezeMarketData:
        if fetch:  # at once, naming the variables, before anything runs
            require_credentials(os.environ)
        return cls(data_dir=_value("SENSEQUANT_DATA_DIR", plain))

    def api_resources(self) -> dict[str, ConfigurableResource]:
        return {"breeze": BreezeApiResource.from_env()}


MARKET_DATA: dict[str, type[MarketDataResource]] = {
    cls.kind: cls for cls in (SyntheticMarketData, CsvMarketData, BreezeMarketData)
}
_SECRET_FIELDS = frozenset({"api_key", "api_secret", "session_token"})


class BreezeApiResource(ConfigurableResource):
    """The Breeze API, for the ingestion asset alone. The credentials come as `EnvVar`s, so the
    UI shows the variables' names, never their values (and so does this resource's repr). The
    session token is read from `session_token_file` when set, at each run and after a rejection:
    a token renewed there is used without restarting Dagster."""

    api_key: str
    api_secret: str
    session_token: str = ""
    session_token_file: str = ""
    data_dir: str = DEFAULTS["SENSEQUANT_DATA_DIR"]
    codes_file: str = ""
    calls_per_minute: int = int(DEFAULTS["SENSEQUANT_BREEZE_CALLS_PER_MINUTE"])
    daily_quota: int = int(DEFAULTS["SENSEQUANT_BREEZE_DAILY_QUOTA"])
    refresh_days: int = int(DEFAULTS["SENSEQUANT_BREEZE_REFRESH_DAYS"])
    max_attempts: int = 5

    def __repr_args__(self) -> Any:
        return [(k, "***" if k in _SECRET_FIELDS and v else v) for k, v in super().__repr_args__()]

    def new_client(self, api_key: str) -> BreezeClient:
        """A breeze-connect client (a test subclass returns a fake)."""
        return breeze_connect_factory(api_key)

    def clock(self) -> Clock:
        return SystemClock()

    def credentials(self) -> Credentials:
        return credentials_from_env(
            self.api_key, self.api_secret, self.session_token, self.session_token_file
        )

    def ingestor(self) -> BreezeIngestor:
        clock = self.clock()
        budget = CallBudget(StateFile(self.data_dir), clock, self.calls_per_minute, self.daily_quota)
        session = BreezeSession(
            self.credentials, self.new_client, budget, clock, RetryPolicy(attempts=self.max_attempts)
        )
        return BreezeIngestor(
            session, self.data_dir, clock, refresh_days=self.refresh_days, codes_file=self.codes_file or None
        )

    @classmethod
    def from_env(cls) -> BreezeApiResource:
        require_credentials(os.environ)
        token_set = bool(os.environ.get("BREEZE_SESSION_TOKEN", "").strip())
        return cls(
            api_key=EnvVar("BREEZE_API_KEY"),
            api_secret=EnvVar("BREEZE_API_SECRET"),
            session_token=EnvVar("BREEZE_SESSION_TOKEN") if token_set else "",
            session_token_file=os.environ.get(TOKEN_FILE_VAR, "").strip(),
            data_dir=_value("SENSEQUANT_DATA_DIR", plain=False),
            codes_file=env("SENSEQUANT_BREEZE_CODES_FILE"),
            calls_per_minute=int(number("SENSEQUANT_BREEZE_CALLS_PER_MINUTE", int, 1)),
            daily_quota=int(number("SENSEQUANT_BREEZE_DAILY_QUOTA", int, 1)),
            refresh_days=int(number("SENSEQUANT_BREEZE_REFRESH_DAYS", int, 0)),
        )


class PipelineSettings(ConfigurableResource):
    """Run-wide settings that are not model hyper-parameters."""

    forecast_horizon: int = int(DEFAULTS["SENSEQUANT_FORECAST_HORIZON"])


def _set(symbols: str) -> set[str]:
    return set(parse_symbols(symbols)) if symbols.strip() else set()


def _value(name: str, plain: bool) -> str | EnvVar:
    """The value now (`plain`), else EnvVar when the variable is set (the UI then shows where the
    value came from), else the default."""
    if plain:
        return env(name)
    return EnvVar(name) if env(name) != DEFAULTS[name] else DEFAULTS[name]


def market_data_class() -> type[MarketDataResource]:
    """The source class `SENSEQUANT_DATA_SOURCE` names: the one place the choice is made."""
    return MARKET_DATA[data_source_name()]


def market_data_from_env(*, plain: bool = False, fetch: bool = True) -> MarketDataResource:
    """The configured source; `plain` resolves the values now (for use outside Dagster);
    `fetch=False` reads a fetching source's cache only (`sensequant train`: no credentials)."""
    return market_data_class().from_env(plain, fetch=fetch)


def settings_from_env() -> PipelineSettings:
    return PipelineSettings(forecast_horizon=forecast_horizon())
