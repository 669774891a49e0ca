"""A run covering several partitions (a batched backfill) writes every partition's directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import Definitions, in_process_executor

from sensequant_assets.jobs import train_job
from sensequant_tests.pipeline_helpers import ALL_ASSETS, instance_with, resources

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
DIRS = {
    "2023-01-01": "RELIANCE_2023-01-01_to_2023-06-30",
    "2023-07-01": "RELIANCE_2023-07-01_to_2023-12-31",
    "2024-01-01": "RELIANCE_2024-01-01_to_2024-06-30",
}


def _run_range(artifacts: Path, start: str, end: str, **market):
    defs = Definitions(
        assets=ALL_ASSETS,
        jobs=[train_job],
        resources=resources(artifacts, **market),
        executor=in_process_executor,
    )
    return defs.resolve_job_def("train_job").execute_in_process(
        instance=instance_with("RELIANCE"), tags={RANGE_START: start, RANGE_END: end}, raise_on_error=False
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
    # Inside the batch, the second and third windows are evaluated with the previous window's student.
    assert not (tmp_path / DIRS["2023-01-01"] / "evaluation").exists()
    metrics = json.loads((tmp_path / DIRS["2024-01-01"] / "evaluation" / "metrics.json").read_text())
    assert metrics["model_partition"] == "RELIANCE|2023-07-01"
    # One materialisation event per partition; the evaluations carry each partition's numbers.
    events = result.get_asset_materialization_events()
    teachers = [e for e in events if e.asset_key.to_user_string() == "teacher_model"]
    assert sorted(e.partition for e in teachers) == [f"RELIANCE|{w}" for w in DIRS]
    evaluation = next(e for e in events if e.asset_key.to_user_string() == "student_evaluation")
    per = evaluation.materialization.metadata["per_partition"].value
    evaluated = ("2023-07-01", "2024-01-01")
    stored = {
        w: json.loads((tmp_path / DIRS[w] / "evaluation" / "metrics.json").read_text()) for w in evaluated
    }
    assert {k: v["auc"] for k, v in per.items()} == {f"RELIANCE|{w}": stored[w]["auc"] for w in evaluated}


def test_a_skipped_partition_in_a_batch_gets_no_files_and_a_reason(tmp_path: Path) -> None:
    result = _run_range(
        tmp_path, "RELIANCE|2023-01-01", "RELIANCE|2024-01-01", synthetic_end_date="2023-12-31"
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
        result = _run_range(tmp_path / workers, "RELIANCE|2023-01-01", "RELIANCE|2024-01-01")
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

    monkeypatch.setattr("os.cpu_count", lambda: 2)
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
    )
    assert result.success
    logs = instance.all_logs(result.run_id)
    messages = [e.user_message for e in logs if "process(es)" in (e.user_message or "")]
    assert messages, "the run did not log how many processes it used"
    assert all(f"3 partitions in {expected} process(es) ({other_runs} other run(s)" in m for m in messages)


def test_a_multi_threaded_teacher_counts_its_threads_as_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setenv("SENSEQUANT_RUN_WORKERS", "0")
    instance = instance_with("RELIANCE")
    defs = Definitions(
        assets=ALL_ASSETS, jobs=[train_job], resources=resources(tmp_path), executor=in_process_executor
    )
    result = defs.resolve_job_def("train_job").execute_in_process(
        instance=instance,
        tags={RANGE_START: "RELIANCE|2023-01-01", RANGE_END: "RELIANCE|2024-01-01"},
        run_config={"ops": {"teacher": {"config": {"num_threads": 2}}}},
    )
    assert result.success
    logs = instance.all_logs(result.run_id)
    by_step = {e.step_key: e.user_message for e in logs if "process(es)" in (e.user_message or "")}
    assert "in 1 process(es)" in by_step["teacher"]  # two threads per partition fill both cores
    assert "in 2 process(es)" in by_step["student_model"]
