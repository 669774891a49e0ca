"""A run covering several partitions (a batched backfill) writes every partition's directory.

The first test runs the default configuration (lookback 2: a batch's later windows learn from the
earlier windows it wrote); the others, about workers and events, train each window alone
(`WINDOW_ALONE`) to stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    Definitions,
    in_process_executor,
    materialize,
)
from dagster._serdes import serialize_value

from sensequant_assets.assets import evaluation as evaluation_asset
from sensequant_assets.assets.partition_context import (
    partition_metadata,
    partition_windows,
    run_partition_keys,
)
from sensequant_assets.assets.student import CONFIG_ID_KEY
from sensequant_assets.jobs import train_job
from sensequant_tests.pipeline_helpers import (
    ALL_ASSETS,
    PARTITIONED,
    TRAINING,
    instance_with,
    resources,
)

# Teachers on their window alone (lookback_windows 0; the default is 2): for tests that are not about
# what a teacher learns from, a third of the rows to fit.
WINDOW_ALONE = {"lookback_windows": 0}
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
DIRS = {
    "2023-01-01": "RELIANCE_2023-01-01_to_2023-06-30",
    "2023-07-01": "RELIANCE_2023-07-01_to_2023-12-31",
    "2024-01-01": "RELIANCE_2024-01-01_to_2024-06-30",
}


def _run_range(artifacts: Path, start: str, end: str, teacher: dict | None = None, **market):
    defs = Definitions(
        assets=ALL_ASSETS,
        jobs=[train_job],
        resources=resources(artifacts, **market),
        executor=in_process_executor,
    )
    return defs.resolve_job_def("train_job").execute_in_process(
        instance=instance_with("RELIANCE"),
        tags={RANGE_START: start, RANGE_END: end},
        run_config={"ops": {"teacher": {"config": teacher or {}}}},
        raise_on_error=False,
    )


def test_one_run_over_three_windows_writes_three_directories(tmp_path: Path) -> None:
    result = _run_range(tmp_path, "RELIANCE|2023-01-01", "RELIANCE|2024-01-01")
    assert result.success
    for window, name in DIRS.items():
        directory = tmp_path / name
        for rel in (
            "bars.parquet",
            "model.pkl",
            "labels.csv.gz",
            "metadata.json",
            "student/student_model.pkl",
        ):
            assert (directory / rel).is_file(), f"{name}/{rel}"
        meta = json.loads((directory / "metadata.json").read_text())
        assert meta["partition_key"] == f"RELIANCE|{window}"
        assert meta["date_range"]["start"] == window
    # The later windows learnt from the earlier ones the batch wrote (the default lookback, 2).
    meta = json.loads((tmp_path / DIRS["2024-01-01"] / "metadata.json").read_text())
    assert meta["training_span"]["start"] == "2023-01-01"
    assert meta["history"]["from_market_bars"] == ["RELIANCE|2023-01-01", "RELIANCE|2023-07-01"]
    # Inside the batch, the second and third windows are evaluated with the previous window's student.
    assert not (tmp_path / DIRS["2023-01-01"] / "evaluation").exists()
    metrics = json.loads((tmp_path / DIRS["2024-01-01"] / "evaluation" / "metrics.json").read_text())
    assert metrics["model_partition"] == "RELIANCE|2023-07-01"
    # One materialisation event per partition, carrying that partition's own numbers.
    events = result.get_asset_materialization_events()
    assert not any("per_partition" in e.materialization.metadata for e in events)
    teachers = {
        e.partition: e.materialization.metadata for e in events if e.asset_key.path == ["teacher_model"]
    }
    assert sorted(teachers) == [f"RELIANCE|{w}" for w in DIRS]
    # Training assets carry counts only in a batch (each per-partition attachment re-lists the run's
    # partitions); their numbers are in the files, and in the events of single-partition runs.
    assert all(set(meta) == {"partitions_written"} for meta in teachers.values())
    evaluations = {
        e.partition: e.materialization.metadata for e in events if e.asset_key.path == ["student_evaluation"]
    }
    for window in ("2023-07-01", "2024-01-01"):
        stored = json.loads((tmp_path / DIRS[window] / "evaluation" / "metrics.json").read_text())
        assert evaluations[f"RELIANCE|{window}"]["auc"].value == stored["auc"]
    # Dagster records the skipped first window as materialised too: its event says why, and nothing else
    # of the partition's own.
    first = evaluations["RELIANCE|2023-01-01"]
    assert "previous window's student_model was not materialised" in first["skipped"].value
    assert set(first) == {"skipped", "partitions_written", "partitions_skipped"}
    assert first["partitions_skipped"].value == 1  # a count: the reasons are not copied to every event


def test_a_skipped_partition_in_a_batch_gets_no_files_and_a_reason(tmp_path: Path) -> None:
    result = _run_range(
        tmp_path, "RELIANCE|2023-01-01", "RELIANCE|2024-01-01", WINDOW_ALONE, synthetic_end_date="2023-12-31"
    )
    assert result.success
    assert (tmp_path / DIRS["2023-07-01"] / "student" / "student_model.pkl").is_file()
    assert not (tmp_path / DIRS["2024-01-01"]).exists()
    reasons = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_OBSERVATION":
            obs = event.asset_observation_data.asset_observation
            reasons[(obs.asset_key.to_user_string(), obs.partition)] = obs.metadata["skipped"].value
    assert "no bars in this window" in reasons[("market_bars", "RELIANCE|2024-01-01")]
    assert "market_bars not materialised" in reasons[("teacher_model", "RELIANCE|2024-01-01")]
    assert "teacher was not materialised" in reasons[("student_model", "RELIANCE|2024-01-01")]


def test_workers_across_cores_write_the_same_files_as_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("SENSEQUANT_RUN_WORKERS", workers)
        result = _run_range(tmp_path / workers, "RELIANCE|2023-01-01", "RELIANCE|2024-01-01", WINDOW_ALONE)
        assert result.success
        written[workers] = {
            path.relative_to(tmp_path / workers).as_posix(): path.read_bytes()
            for path in sorted((tmp_path / workers).rglob("*"))
            if path.name in ("labels.csv.gz", "feature_importance.csv", "bars.parquet")
            or path.as_posix().endswith("student/metrics.json")
        }
    assert len(written["1"]) == 3 * 4
    assert written["1"] == written["2"]


@pytest.mark.parametrize(("other_runs", "expected"), [(0, 2), (1, 1)])
def test_a_batch_forks_only_onto_cores_no_other_run_is_using(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other_runs: int, expected: int
) -> None:
    from dagster import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test

    for module in ("workers", "partition_context"):  # two usable CPUs, whatever the machine
        monkeypatch.setattr(f"sensequant_assets.assets.{module}.usable_cpus", lambda: 2)
    monkeypatch.setenv("SENSEQUANT_RUN_WORKERS", "0")
    instance = instance_with("RELIANCE")
    for _ in range(other_runs):
        create_run_for_test(instance, job_name="another_job", status=DagsterRunStatus.STARTED)
    defs = Definitions(
        assets=ALL_ASSETS, jobs=[train_job], resources=resources(tmp_path), executor=in_process_executor
    )
    result = defs.resolve_job_def("train_job").execute_in_process(
        instance=instance,
        tags={RANGE_START: "RELIANCE|2023-01-01", RANGE_END: "RELIANCE|2024-01-01"},
        run_config={"ops": {"teacher": {"config": WINDOW_ALONE}}},
    )
    assert result.success
    logs = instance.all_logs(result.run_id)
    messages = [e.user_message for e in logs if "process(es)" in (e.user_message or "")]
    assert messages, "the run did not log how many processes it used"
    assert all(f"3 partitions in {expected} process(es) ({other_runs} other run(s)" in m for m in messages)


def test_a_multi_threaded_teacher_counts_its_threads_as_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("workers", "partition_context"):  # two usable CPUs, whatever the machine
        monkeypatch.setattr(f"sensequant_assets.assets.{module}.usable_cpus", lambda: 2)
    monkeypatch.setenv("SENSEQUANT_RUN_WORKERS", "0")
    instance = instance_with("RELIANCE")
    defs = Definitions(
        assets=ALL_ASSETS, jobs=[train_job], resources=resources(tmp_path), executor=in_process_executor
    )
    result = defs.resolve_job_def("train_job").execute_in_process(
        instance=instance,
        tags={RANGE_START: "RELIANCE|2023-01-01", RANGE_END: "RELIANCE|2024-01-01"},
        run_config={"ops": {"teacher": {"config": {"num_threads": 2, **WINDOW_ALONE}}}},
    )
    assert result.success
    logs = instance.all_logs(result.run_id)
    by_step = {e.step_key: e.user_message for e in logs if "process(es)" in (e.user_message or "")}
    assert "in 1 process(es)" in by_step["teacher"]  # two threads per partition fill both cores
    assert "in 2 process(es)" in by_step["student_model"]


def _range(first_window: str, last_window: str) -> dict[str, str]:
    return {RANGE_START: f"RELIANCE|{first_window}", RANGE_END: f"RELIANCE|{last_window}"}


def _evaluations(result) -> dict[str, AssetMaterialization]:
    return {
        str(e.partition): e.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key.path == ["student_evaluation"]
    }


def test_each_partition_of_a_batch_gets_its_own_numbers_and_no_event_grows_with_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Students of seven windows, then their evaluations in two batches; for speed, a small teacher and
    # no figures drawn (a batch does not put them in the metadata).
    monkeypatch.setattr(evaluation_asset, "equity_png", lambda *args, **kwargs: b"png")
    monkeypatch.setattr(evaluation_asset, "reliability_png", lambda *args, **kwargs: b"png")
    windows = ["2023-01-01", "2023-07-01", "2024-01-01", "2024-07-01", "2025-01-01", "2025-07-01"]
    instance = instance_with("RELIANCE")
    training = materialize(
        TRAINING,
        resources=resources(tmp_path),
        instance=instance,
        tags=_range("2022-07-01", windows[-1]),
        run_config={"ops": {"teacher": {"config": {"n_estimators": 10, "n_folds": 2, **WINDOW_ALONE}}}},
    )
    assert training.success
    batches = {}
    for batch in (windows[:2], windows):
        result = materialize(
            PARTITIONED,
            selection=["student_evaluation"],
            resources=resources(tmp_path),
            instance=instance,
            tags=_range(batch[0], batch[-1]),
        )
        assert result.success
        batches[len(batch)] = _evaluations(result)
    assert sorted(batches[6]) == [f"RELIANCE|{w}" for w in windows]
    for window in windows:
        key = f"RELIANCE|{window}"
        (directory,) = tmp_path.glob(f"RELIANCE_{window}_to_*")
        stored = json.loads((directory / "evaluation" / "metrics.json").read_text())
        meta = batches[6][key].metadata
        numbers = {k: v for k, v in stored.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        assert len(numbers) > 10
        assert {k: meta[k].value for k in numbers} == numbers
        assert meta["model_partition"].value == stored["model_partition"]
        assert meta[CONFIG_ID_KEY].value == stored[CONFIG_ID_KEY]
        # No blob of the batch's numbers, no inline figures (files only): the numbers and a count.
        assert "per_partition" not in meta and "equity_curve" not in meta
        assert meta["partitions_written"].value == 6
        # What the decay sensor and the briefing read back.
        (record,) = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("student_evaluation"), asset_partitions=[key]), limit=1
        ).records
        assert partition_metadata(record.asset_materialization)["auc"] == stored["auc"]
    # The same partition's event is as large in a batch of two as in a batch of six.
    sizes = {n: len(serialize_value(events["RELIANCE|2023-07-01"].metadata)) for n, events in batches.items()}
    assert abs(sizes[2] - sizes[6]) <= 8, sizes
    assert sizes[6] < 4096, sizes
    # A run of that partition alone shows the same numbers, and the figures.
    alone = materialize(
        PARTITIONED,
        selection=["student_evaluation"],
        resources=resources(tmp_path),
        instance=instance,
        partition_key="RELIANCE|2023-07-01",
    )
    (single,) = _evaluations(alone).values()
    batched = batches[6]["RELIANCE|2023-07-01"].metadata
    assert {k: v for k, v in single.metadata.items() if k in batched} == {
        k: v for k, v in batched.items() if k != "partitions_written"
    }
    assert {"equity_curve", "reliability_diagram"} <= set(single.metadata)


def test_partition_metadata_reads_new_events_and_old_ones_with_the_batch_blob() -> None:
    new = AssetMaterialization("student_evaluation", partition="A|2023-07-01", metadata={"auc": 0.61})
    assert partition_metadata(new) == {"auc": 0.61}
    old = AssetMaterialization(
        "student_evaluation",
        partition="B|2023-07-01",
        metadata={
            "partitions_written": 2,
            "per_partition": {"A|2023-07-01": {"auc": 0.61}, "B|2023-07-01": {"auc": 0.47, "config_id": "x"}},
        },
    )
    assert partition_metadata(old) == {"auc": 0.47, "config_id": "x"}
    assert (
        partition_metadata(AssetMaterialization("a", partition="C|2023-07-01", metadata=old.metadata)) == {}
    )


def test_a_step_lists_its_partition_keys_once() -> None:
    """Dagster expands the key range on every `context.partition_keys`; a step's windows, outputs and
    checks share one listing per context (and another step's context gets its own)."""

    class Context:
        def __init__(self, keys: list[str]) -> None:
            self.keys, self.listed = keys, 0

        @property
        def partition_keys(self) -> list[str]:
            self.listed += 1
            return self.keys

    step = Context(["TCS|2023-07-01", "INFY|2023-01-01"])
    assert [pw.key for pw in partition_windows(step)] == ["INFY|2023-01-01", "TCS|2023-07-01"]
    assert run_partition_keys(step) == ("TCS|2023-07-01", "INFY|2023-01-01")
    assert step.listed == 1
    other = Context(["RELIANCE|2023-01-01"])
    assert run_partition_keys(other) == ("RELIANCE|2023-01-01",)
    assert other.listed == 1
