"""Against a real `dagster dev` (webserver + daemon): new daily bars retrain exactly their partition."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path

import pytest
from dagster import AssetKey, AssetMaterialization, DagsterInstance, DagsterRunStatus, RunsFilter, materialize

from sensequant_assets import registry
from sensequant_assets.deployment.devserver import DagsterDev, write_instance_yaml
from sensequant_tests.daily_csv import write_daily
from sensequant_tests.pipeline_helpers import PARTITIONED, promote_toy_model, resources

SYMBOL = "RELIANCE"
FIRST, SECOND, THIRD, FOURTH = "2022-01-01", "2022-07-01", "2023-01-01", "2023-07-01"
PARTITIONED_KEYS = ["market_bars", "teacher_model", "teacher_labels", "student_model", "student_evaluation"]
SENSOR_TICK = """
query($name: String!) {
  sensorOrError(sensorSelector: {repositoryLocationName: "sensequant", repositoryName: "__repository__",
                                 sensorName: $name}) {
    ... on Sensor { sensorState { ticks(limit: 5) { status skipReason } } }
  }
}"""


def _wait(condition, timeout: float, what: str, dev: DagsterDev, step: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    tail = dev.log.read_text()[-3000:] if dev.log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n--- dagster dev log tail ---\n{tail}")


def _materialised(instance: DagsterInstance) -> dict[str, set[str]]:
    return {a: set(instance.get_materialized_partitions(AssetKey(a))) for a in PARTITIONED_KEYS}


def test_new_daily_bars_retrain_exactly_that_symbol_and_window(tmp_path: Path, monkeypatch) -> None:
    data, artifacts, home = tmp_path / "historical", tmp_path / "models", tmp_path / "home"
    home.mkdir()
    write_instance_yaml(home)
    write_daily(data, SYMBOL, date(2021, 6, 1), date(2022, 6, 30))  # history + the first window
    write_daily(data, "TCS", date(2021, 6, 1), date(2022, 6, 30))  # a bystander that must not run
    env = {
        "SENSEQUANT_DATA_SOURCE": "csv",
        "SENSEQUANT_DATA_DIR": str(data),
        "SENSEQUANT_ARTIFACTS_DIR": str(artifacts),
        "SENSEQUANT_SYMBOLS": f"{SYMBOL},TCS",
        "SENSEQUANT_SENSOR_INTERVAL_SECONDS": "3",
        "SENSEQUANT_BACKFILL_NEW_SYMBOLS": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    # The first window is trained beforehand, on the same instance the daemon will use.
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbols", [SYMBOL, "TCS"])
        result = materialize(
            PARTITIONED,
            partition_key=f"{SYMBOL}|{FIRST}",
            resources=resources(artifacts, data_source="csv", data_dir=str(data)),
            instance=instance,
        )
        assert result.success
        before = _materialised(instance)

    with DagsterDev(home, env={**os.environ, **env}) as dev:

        def baseline() -> bool:
            ticks = dev.graphql(SENSOR_TICK, {"name": "new_data"})["sensorOrError"]["sensorState"]["ticks"]
            return any("baseline recorded" in (t["skipReason"] or "") for t in ticks)

        _wait(baseline, 120, "the new_data sensor's baseline tick", dev)
        dropped = time.monotonic()
        write_daily(data, SYMBOL, date(2022, 7, 1), date(2022, 12, 30))  # completes the second window

        with DagsterInstance.from_config(str(home)) as instance:
            key = f"{SYMBOL}|{SECOND}"
            _wait(
                lambda: key in _materialised(instance)["student_evaluation"],
                300,
                f"student_evaluation {key}",
                dev,
            )
            elapsed = time.monotonic() - dropped
            time.sleep(8)  # a few more sensor ticks: nothing else may be requested
            after = _materialised(instance)
            runs = instance.get_runs()

    new = {asset: after[asset] - before[asset] for asset in PARTITIONED_KEYS}
    assert new == {asset: {key} for asset in PARTITIONED_KEYS}, new
    assert before["student_model"] == {f"{SYMBOL}|{FIRST}"}
    triggers = [r.tags.get("sensequant/trigger") for r in runs if r.tags.get("sensequant/trigger")]
    assert triggers.count("new_data") == 1
    partitioned_runs = [r for r in runs if r.tags.get("dagster/partition")]
    assert {r.tags["dagster/partition"] for r in partitioned_runs} <= {f"{SYMBOL}|{FIRST}", key}
    for name in ("model.pkl", "student/student_model.pkl", "evaluation/metrics.json"):
        assert (artifacts / f"{SYMBOL}_{SECOND}_to_2022-12-31" / name).is_file()
    print(f"file drop -> evaluation materialised: {elapsed:.1f}s")


SENSOR_STATE = """
query($name: String!) {
  sensorOrError(sensorSelector: {repositoryLocationName: "sensequant", repositoryName: "__repository__",
                                 sensorName: $name}) {
    ... on Sensor { id sensorState { ticks(limit: 20) { timestamp status skipReason } } }
  }
}"""
STOP_SENSOR = "mutation($id: String) { stopSensor(id: $id) { __typename } }"


def _ticks(dev: DagsterDev, name: str) -> list[dict]:
    return dev.graphql(SENSOR_STATE, {"name": name})["sensorOrError"]["sensorState"]["ticks"]


def test_a_decayed_model_is_demoted_once_and_its_next_window_retrained_once(
    tmp_path: Path, monkeypatch
) -> None:
    """The real daemon over many ticks: one demotion per decay, then one training run of the next
    window once it is complete, although both model_decay and new_data see it complete."""
    data, artifacts, home = tmp_path / "historical", tmp_path / "models", tmp_path / "home"
    home.mkdir()
    write_instance_yaml(home)
    write_daily(data, SYMBOL, date(2021, 6, 1), date(2023, 6, 30))  # windows 2022-01 .. 2023-01
    env = {
        "SENSEQUANT_DATA_SOURCE": "csv",
        "SENSEQUANT_DATA_DIR": str(data),
        "SENSEQUANT_ARTIFACTS_DIR": str(artifacts),
        "SENSEQUANT_SYMBOLS": SYMBOL,
        "SENSEQUANT_SENSOR_INTERVAL_SECONDS": "1",
        "SENSEQUANT_BACKFILL_NEW_SYMBOLS": "0",
        "SENSEQUANT_DECAY_MIN_AUC": "0.5",
        "SENSEQUANT_DECAY_WINDOWS": "2",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    promote_toy_model(artifacts, f"{SYMBOL}|{FIRST}")
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbols", [SYMBOL])
        # The two windows evaluated since the production model: scoring it, then its successor.
        for window, model, auc in ((SECOND, FIRST, 0.44), (THIRD, SECOND, 0.46)):
            instance.report_runless_asset_event(
                AssetMaterialization(
                    "student_evaluation",
                    partition=f"{SYMBOL}|{window}",
                    metadata={"auc": auc, "model_partition": f"{SYMBOL}|{model}"},
                )
            )

    def runs(**tags: str) -> list:
        with DagsterInstance.from_config(str(home)) as instance:
            return list(instance.get_runs(RunsFilter(tags=tags)))

    def sensor_runs(partition: str) -> list:
        return [r for r in runs(**{"dagster/partition": partition}) if r.tags.get("sensequant/trigger")]

    def succeeded(found: list) -> bool:
        return any(r.status == DagsterRunStatus.SUCCESS for r in found)

    def more_ticks(count: int) -> None:
        """Wait until the decay sensor has ticked `count` more times (every tick re-judges everything)."""
        since = time.time()
        after = lambda: sum(t["timestamp"] > since for t in _ticks(dev, "model_decay"))  # noqa: E731
        _wait(lambda: after() >= count, 60, f"{count} more model_decay ticks", dev, 0.5)

    retrained = f"{SYMBOL}|{FOURTH}"
    with DagsterDev(home, env={**os.environ, **env}) as dev:
        _wait(
            lambda: succeeded(runs(**{"sensequant/trigger": "model_decay"})), 120, "the demote_job run", dev
        )
        more_ticks(4)
        [demotion_run] = runs(**{"sensequant/trigger": "model_decay"})
        assert demotion_run.job_name == "demote_job"
        assert registry.current(artifacts, SYMBOL) is None
        demotion = registry.active_demotion(artifacts, SYMBOL)
        assert demotion["from"] == f"{SYMBOL}|{FIRST}" and "0.460" in demotion["reason"]
        newest = next(t for t in _ticks(dev, "model_decay") if t["status"] == "SKIPPED")  # not one in flight
        assert f"waiting for window {FOURTH} to complete" in (newest["skipReason"] or "")

        write_daily(data, SYMBOL, date(2023, 7, 3), date(2023, 12, 29))  # completes the next window
        _wait(lambda: succeeded(sensor_runs(retrained)), 240, "the retraining run", dev)
        more_ticks(4)
        # Automation may follow with its own runs (e.g. the evaluation); the sensors ask once in all.
        requested = sensor_runs(retrained)
        assert len(requested) == 1, [(r.tags.get("sensequant/trigger"), r.status) for r in requested]
        assert [r.job_name for r in runs(**{"sensequant/trigger": "model_decay"})].count("demote_job") == 1
    assert (artifacts / f"{SYMBOL}_{FOURTH}_to_2023-12-31" / "student" / "student_model.pkl").is_file()
    assert registry.active_demotion(artifacts, SYMBOL) is not None  # until a briefing promotes a newer one
