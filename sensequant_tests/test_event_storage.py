"""CachedEngineSqliteEventLogStorage: Dagster's SQLite event log with kept engines, same files and history."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    BackfillPolicy,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    EventRecordsFilter,
    StaticPartitionsDefinition,
    asset,
    materialize,
)
from dagster._core.events.log import EventLogEntry

from sensequant_assets.deployment import event_storage
from sensequant_assets.deployment.devserver import INSTANCE_YAML, write_instance_yaml
from sensequant_assets.deployment.event_storage import CachedEngineSqliteEventLogStorage

STORAGE_YAML = """
event_log_storage:
  module: sensequant_assets.deployment.event_storage
  class: CachedEngineSqliteEventLogStorage
  config:
    base_dir: "@DAGSTER_HOME@/history/runs"
"""


@asset
def numbers() -> list[int]:
    return [1, 2, 3]


def _home(tmp_path: Path, cached: bool) -> Path:
    home = tmp_path / "home"
    write_instance_yaml(home, "telemetry:\n  enabled: false\n" + (STORAGE_YAML if cached else ""))
    return home


def _materialise(home: Path) -> str:
    with DagsterInstance.from_config(str(home)) as instance:
        result = materialize([numbers], instance=instance)
        assert result.success
        return result.run_id


def test_it_reads_and_extends_the_history_dagsters_own_storage_wrote(tmp_path: Path, monkeypatch) -> None:
    home = _home(tmp_path, cached=False)
    elsewhere = tmp_path / "other_home"
    monkeypatch.setenv("DAGSTER_HOME", str(elsewhere))  # an instance opened by path ignores it
    first = _materialise(home)
    _home(tmp_path, cached=True)
    second = _materialise(home)
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, CachedEngineSqliteEventLogStorage)
        records = instance.fetch_materializations(AssetKey("numbers"), limit=10).records
        assert sorted(r.run_id for r in records) == sorted([first, second])
        kinds = {e.dagster_event_type for e in instance.all_logs(second) if e.dagster_event}
        assert kinds >= {
            DagsterEventType.RUN_START,
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.RUN_SUCCESS,
        }
    # The same files Dagster's default storage uses: one database per run plus the index.
    runs = home / "history" / "runs"
    assert {f"{first}.db", f"{second}.db", "index.db"} <= {p.name for p in runs.iterdir()}
    assert not elsewhere.exists()


def test_engines_are_kept_per_file_and_bounded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(event_storage, "MAX_ENGINES", 3)
    storage = CachedEngineSqliteEventLogStorage(
        base_dir=str(_home(tmp_path, cached=True) / "history" / "runs")
    )
    try:
        with storage.index_connection():
            pass
        index_engine = storage._engines["index"]
        with storage.index_connection():
            pass
        assert storage._engines["index"] is index_engine  # kept, not rebuilt
        for run_id in ("a", "b", "c", "d"):
            with storage.run_connection(run_id):
                pass
        assert list(storage._engines) == ["b", "c", "d"]  # least recently used dropped
    finally:
        storage.dispose()
    assert storage._engines == {}


def test_a_wiped_log_is_recreated_on_the_next_write(tmp_path: Path) -> None:
    home = _home(tmp_path, cached=True)
    with DagsterInstance.from_config(str(home)) as instance:
        defs = Definitions(assets=[numbers])
        assert materialize([numbers], instance=instance).success
        instance.event_log_storage.wipe()
        assert instance.fetch_materializations(AssetKey("numbers"), limit=10).records == []
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        assert result.success
        (record,) = instance.fetch_materializations(AssetKey("numbers"), limit=10).records
        assert record.run_id == result.run_id


def test_a_base_dir_outside_an_instance_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="still holds @DAGSTER_HOME@"):
        CachedEngineSqliteEventLogStorage(base_dir="@DAGSTER_HOME@/history/runs")
    # A project moved elsewhere, or a typo: no instance owns this directory, so nothing is written there.
    stray = tmp_path / "moved" / "history" / "runs"
    with pytest.raises(ValueError, match="is not the history/runs directory of a Dagster instance"):
        CachedEngineSqliteEventLogStorage(base_dir=str(stray))
    assert not stray.exists()


def test_the_deploy_file_names_the_instance_it_is_written_into(tmp_path: Path) -> None:
    home = tmp_path / "home"
    text = write_instance_yaml(home).read_text()
    assert "@DAGSTER_HOME@" in INSTANCE_YAML.read_text()
    assert f'base_dir: "{home.resolve()}/history/runs"' in text
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, CachedEngineSqliteEventLogStorage)


LETTERS = StaticPartitionsDefinition(["a", "b", "c", "d", "e"])


@asset(partitions_def=LETTERS, backfill_policy=BackfillPolicy.single_run())
def letters(context) -> None:
    context.log.info(f"{len(context.partition_keys)} partitions")


def _materialise_range(home: Path, monkeypatch, batch: bool) -> tuple[DagsterInstance, list[str]]:
    """Materialise partitions b..e of `letters` in one run; returns the instance and the stored kinds."""
    if batch:
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    else:
        monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    one_by_one: list[str] = []
    original = CachedEngineSqliteEventLogStorage.store_event

    def spy(self: CachedEngineSqliteEventLogStorage, event: EventLogEntry) -> None:
        one_by_one.append(event.dagster_event_type.value if event.dagster_event else "log")
        return original(self, event)

    monkeypatch.setattr(CachedEngineSqliteEventLogStorage, "store_event", spy)
    instance = DagsterInstance.from_config(str(home))
    tags = {"dagster/asset_partition_range_start": "b", "dagster/asset_partition_range_end": "e"}
    assert materialize([letters], instance=instance, tags=tags).success
    return instance, one_by_one


def _asset_state(instance: DagsterInstance) -> dict[str, object]:
    key = AssetKey("letters")
    records = instance.fetch_materializations(key, limit=100).records
    planned = instance.get_event_records(
        EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION_PLANNED, key)
    )
    return {
        "materialised": sorted(instance.get_materialized_partitions(key)),
        "materialisations": sorted(r.partition_key for r in records),
        "planned": sorted(r.partition_key for r in planned),
        "latest": instance.get_latest_materialization_event(key).dagster_event.partition,
        "in_progress": instance.get_latest_planned_materialization_info(key) is not None,
    }


def test_a_batch_of_asset_events_is_stored_as_event_by_event_in_two_transactions(
    tmp_path: Path, monkeypatch
) -> None:
    homes = {mode: _home(tmp_path / mode, cached=True) for mode in ("one_by_one", "batched")}
    unbatched, singles = _materialise_range(homes["one_by_one"], monkeypatch, batch=False)
    batched, batched_singles = _materialise_range(homes["batched"], monkeypatch, batch=True)
    with unbatched, batched:
        assert _asset_state(batched) == _asset_state(unbatched)
        assert _asset_state(batched)["materialisations"] == ["b", "c", "d", "e"]
        assert _asset_state(batched)["planned"] == ["b", "c", "d", "e"]
    # Unbatched, each asset event is its own store_event; batched, none of them is.
    assert singles.count("ASSET_MATERIALIZATION") == 4 and singles.count("ASSET_MATERIALIZATION_PLANNED") == 4
    assert "ASSET_MATERIALIZATION" not in batched_singles
    assert "ASSET_MATERIALIZATION_PLANNED" not in batched_singles


def test_an_instance_naming_the_modules_before_they_moved_is_rewritten(tmp_path: Path) -> None:
    """`sensequant train` and `make run` rewrite the old module paths of an existing dagster.yaml, so an
    instance from before sensequant_assets/deployment/ still loads; nothing else in the file changes."""
    from sensequant_assets.deployment.devserver import rename_moved_modules

    current = write_instance_yaml(tmp_path).read_text()
    old = current.replace("sensequant_assets.deployment.", "sensequant_assets.")
    old += "# a comment naming sensequant_assets.run_launcher stays\n"
    (tmp_path / "dagster.yaml").write_text(old)
    assert rename_moved_modules(tmp_path)
    text = (tmp_path / "dagster.yaml").read_text()
    assert text == current + "# a comment naming sensequant_assets.run_launcher stays\n"
    assert not rename_moved_modules(tmp_path)  # already current
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_launcher).__name__ == "ForkingRunLauncher"
        assert type(instance.event_log_storage).__name__ == "CachedEngineSqliteEventLogStorage"
