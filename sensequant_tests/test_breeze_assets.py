"""The Breeze source in Dagster: breeze_bars fills the cache, market_bars reads it; settings and
credentials checked when the code loads."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, EnvVar, materialize

from sensequant_assets.assets.bars import market_bars
from sensequant_assets.assets.ingest import after_ingestion, breeze_bars
from sensequant_assets.io_manager import PartitionDirIOManager
from sensequant_assets.resources import (
    BreezeApiResource,
    BreezeMarketData,
    MarketDataResource,
    market_data_from_env,
)
from sensequant_assets.sources.breeze_client import MissingCredentialsError
from sensequant_assets.sources.csv_dir import CsvDirSource
from sensequant_tests.test_breeze_fetch import JULY, KEY, SECRET, TOKEN, FakeBreeze, FakeClock

KEY_WINDOW = "TCS|2024-01-01"


def fake_api(client: FakeBreeze, fake_clock: FakeClock, **fields) -> BreezeApiResource:
    """The real resource with the client and the clock swapped (a subclass, not a patch)."""

    class FakeBreezeApi(BreezeApiResource):
        def new_client(self, api_key: str) -> FakeBreeze:
            assert api_key == KEY
            return client

        def clock(self) -> FakeClock:
            return fake_clock

    return FakeBreezeApi(**{"api_key": KEY, "api_secret": SECRET, "session_token": TOKEN, **fields})


def _materialisations(result, asset: str) -> list[dict]:
    return [
        {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey(asset)
    ]


def _breeze_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The breeze source with credentials set, its cache under `tmp_path`."""
    monkeypatch.setenv("SENSEQUANT_DATA_SOURCE", "breeze")
    monkeypatch.setenv("SENSEQUANT_DATA_DIR", str(tmp_path / "cache"))
    for name, value in (
        ("BREEZE_API_KEY", KEY),
        ("BREEZE_API_SECRET", SECRET),
        ("BREEZE_SESSION_TOKEN", TOKEN),
    ):
        monkeypatch.setenv(name, value)


@pytest.fixture(autouse=True)
def _no_breeze_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BREEZE_API_KEY", "BREEZE_API_SECRET", "BREEZE_SESSION_TOKEN", "BREEZE_SESSION_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_breeze_bars_fills_the_cache_and_market_bars_trains_from_it(tmp_path: Path) -> None:
    cache, artifacts = tmp_path / "cache", tmp_path / "models"
    client = FakeBreeze()
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("symbols", ["TCS"])
    bars_after = after_ingestion(market_bars, [breeze_bars])
    resources = {
        "breeze": fake_api(client, FakeClock(JULY), data_dir=str(cache)),
        "market_data": BreezeMarketData(data_dir=str(cache)),
        "artifacts_io_manager": PartitionDirIOManager.at(artifacts),
    }
    result = materialize(
        [breeze_bars, bars_after], partition_key=KEY_WINDOW, instance=instance, resources=resources
    )
    assert result.success
    [fetched] = _materialisations(result, "breeze_bars")
    assert (fetched["calls"], fetched["quota_left"], fetched["rows_corrected"]) == (2, 4998, 0)
    assert (
        fetched["rows_added"]
        == fetched["rows_fetched"]
        == len(pd.bdate_range(client.calls[0][0], "2024-07-10"))
    )
    # one call from the warm-up before the two lookback windows (2023-01-01 less 204 days) on
    assert [c[0] for c in client.calls] == ["2022-06-11"]
    [bars] = _materialisations(result, "market_bars")
    assert bars["rows"] == len(pd.bdate_range("2024-01-01", "2024-06-30"))
    assert (artifacts / "TCS_2024-01-01_to_2024-06-30" / "bars.parquet").is_file()
    window = CsvDirSource(cache).window_fingerprints(
        "TCS", [(pd.Timestamp("2024-01-01").date(), pd.Timestamp("2024-06-30").date())]
    )
    assert None not in window.values()  # what the new_data sensor polls

    again = materialize([breeze_bars], partition_key=KEY_WINDOW, instance=instance, resources=resources)
    [second] = _materialisations(again, "breeze_bars")
    assert (second["calls"], second["rows_added"], len(client.calls)) == (0, 0, 1)  # nothing missing

    # Five days on, the window in progress (no partition yet) has new days: the daily schedule's
    # run of the newest complete window, through the newest day, brings them in.
    resources["breeze"] = fake_api(client, FakeClock(JULY + timedelta(days=5)), data_dir=str(cache))
    through = {"ops": {"breeze_bars": {"config": {"through_newest_day": True}}}}
    later = materialize(
        [breeze_bars], partition_key=KEY_WINDOW, instance=instance, resources=resources, run_config=through
    )
    [third] = _materialisations(later, "breeze_bars")
    assert third["rows_added"] == len(pd.bdate_range("2024-07-11", "2024-07-15"))
    assert (cache / "TCS" / "1day" / "2024-07-15.csv").is_file()

    no_secret = fake_api(FakeBreeze(), FakeClock(JULY), data_dir=str(tmp_path / "other"), api_secret="")
    failed = materialize(
        [breeze_bars],
        partition_key=KEY_WINDOW,
        instance=instance,
        resources={"breeze": no_secret},
        raise_on_error=False,
    )
    assert not failed.success and not (tmp_path / "other").exists()
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "BREEZE_API_SECRET" in str(failure.step_failure_data.user_failure_data.description)


def test_breeze_without_credentials_fails_at_once_naming_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sensequant_assets.definitions import build_definitions

    monkeypatch.setenv("SENSEQUANT_DATA_SOURCE", "breeze")
    monkeypatch.setenv("SENSEQUANT_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BREEZE_API_KEY", KEY)
    for load in (build_definitions, lambda: market_data_from_env(plain=True)):
        with pytest.raises(MissingCredentialsError) as err:
            load()
        missing = str(err.value).split(": ", 1)[1].split(" are not set")[0]
        assert missing == "BREEZE_API_SECRET, BREEZE_SESSION_TOKEN" and KEY not in str(err.value)
    assert not (tmp_path / "cache").exists()

    monkeypatch.setenv("BREEZE_API_SECRET", SECRET)
    monkeypatch.setenv("BREEZE_SESSION_TOKEN", TOKEN)
    defs = build_definitions()
    api = defs.resources["breeze"]
    assert api.api_key == EnvVar("BREEZE_API_KEY") and api.session_token == EnvVar("BREEZE_SESSION_TOKEN")
    assert not any(secret in repr(api) for secret in (KEY, SECRET, TOKEN))
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("market_bars")).parent_keys == {AssetKey("breeze_bars")}
    assert isinstance(defs.resources["market_data"], BreezeMarketData)
    # the old single-class call still builds the source's class, which reads the cache
    legacy = MarketDataResource(data_source="breeze", data_dir=str(tmp_path / "none"))
    assert isinstance(legacy, BreezeMarketData) and legacy.data_source == "breeze"
    assert legacy.source_for("TCS") == CsvDirSource(tmp_path / "none", shipped_actions=True)


def test_the_jobs_and_sensors_take_the_ingestion_assets_of_the_source_the_definitions_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jobs.py is imported (with the tests' synthetic source) before the Breeze definitions are
    built: their train_job, backfills and sensors must still lead with breeze_bars."""
    from dagster import build_sensor_context

    from sensequant_assets import jobs
    from sensequant_assets.definitions import build_definitions
    from sensequant_assets.sensors import partitions_backfill

    _breeze_env(monkeypatch, tmp_path)
    breeze = build_definitions()
    monkeypatch.setenv("SENSEQUANT_DATA_SOURCE", "synthetic")
    synthetic = build_definitions()
    fetch = AssetKey("breeze_bars")
    for defs, leads in ((breeze, True), (synthetic, False)):
        graph = defs.resolve_asset_graph()
        assert ("fetch_new_bars" in {s.name for s in defs.schedules}) is leads
        assert (fetch in defs.resolve_job_def("train_job").asset_layer.selected_asset_keys) is leads
        for sensor in ("symbol_universe", "new_data"):
            assert (fetch in defs.resolve_sensor_def(sensor).asset_selection.resolve(graph)) is leads
        request = partitions_backfill(build_sensor_context(definitions=defs), [KEY_WINDOW], "test", "test")
        assert (fetch in request.asset_graph_subset.asset_keys) is leads
        assert {k.to_user_string() for k in jobs.partition_asset_keys(graph)} >= set(jobs.PARTITION_ASSETS)


def test_sensequant_train_reads_the_breeze_cache_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It never calls Breeze: it trains on the cache, so no credential is asked for."""
    from sensequant_assets import cli
    from sensequant_assets.deployment.devserver import DEPLOYMENT_ENV
    from sensequant_tests.test_breeze_fetch import make

    cache = tmp_path / "cache"
    make(cache, FakeBreeze(), FakeClock(JULY)).ingest("TCS", date(2024, 1, 1), date(2024, 6, 30))
    for name, value in {
        "SENSEQUANT_DATA_SOURCE": "breeze",
        "SENSEQUANT_DATA_DIR": str(cache),
        "SENSEQUANT_ARTIFACTS_DIR": str(tmp_path / "models"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        **DEPLOYMENT_ENV,  # the CLI sets them for its runs: restored after the test
    }.items():
        monkeypatch.setenv(name, value)
    argv = ["train", "--symbols", "TCS", "--start", "2024-01-01", "--end", "2024-06-30", "--dry-run"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "TCS|2024-01-01" in out and "to run" in out and "BREEZE" not in out + err
    assert not (tmp_path / "models").exists()  # a dry run writes nothing
    assert cli._parser().parse_args([*argv, "--data-source", "breeze"]).data_source == "breeze"


def test_the_daily_schedule_fetches_every_symbols_newest_window_through_the_newest_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import build_schedule_context, instance_for_test

    from sensequant_assets.definitions import build_definitions
    from sensequant_assets.sensors import RANGE_END, RANGE_START

    _breeze_env(monkeypatch, tmp_path)
    fetch = build_definitions().resolve_schedule_def("fetch_new_bars")
    assert fetch.default_status.value == "RUNNING" and fetch.cron_schedule == "0 19 * * 1-5"
    when = JULY.replace(hour=19)
    with instance_for_test() as instance:
        with build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
            assert "no symbols registered" in fetch.evaluate_tick(context).skip_message
        instance.add_dynamic_partitions("symbols", ["TCS", "INFY", "bad|one"])
        with build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
            [request] = fetch.evaluate_tick(context).run_requests
    # One run over the symbols' newest complete window (2024-01-01 on 2024-07-10), through the newest day.
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("TCS|2024-01-01", "INFY|2024-01-01")
    assert request.run_config == {"ops": {"breeze_bars": {"config": {"through_newest_day": True}}}}
    assert request.asset_selection is None or request.asset_selection == [AssetKey("breeze_bars")]
