"""`student_model` asked for one partition whose teacher was never trained fails and says why (a teacher
that skipped the partition passes its skip on); in a batch the partition is skipped with its reason."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetKey, AssetMaterialization, AssetObservation, Definitions, in_process_executor

from sensequant_assets.jobs import train_job
from sensequant_tests.pipeline_helpers import (
    ALL_ASSETS,
    failure_messages,
    instance_with,
    resources,
    run,
    skip_reasons,
)

KEY = "WIPRO|2022-07-01"


def _student_alone(artifacts: Path, instance=None):
    return run(artifacts, KEY, selection=["student_model"], instance=instance or instance_with("WIPRO"))


def test_a_student_run_without_its_teacher_fails_naming_symbol_window_and_cause(tmp_path: Path) -> None:
    result = _student_alone(tmp_path)
    assert not result.success
    [message] = failure_messages(result)
    assert "student_model WIPRO|2022-07-01 (symbol WIPRO, window 2022-07-01 to 2022-12-31)" in message
    assert "teacher_model and teacher_labels were never materialised for this partition" in message
    assert "sensequant train --symbols WIPRO --start 2022-07-01 --end 2022-12-31" in message
    assert not (tmp_path / "WIPRO_2022-07-01_to_2022-12-31").exists()


def test_missing_teacher_files_fail_and_a_skipped_teacher_is_a_skip_passed_on(tmp_path: Path) -> None:
    """The teacher's latest event tells the cause: materialised with its files gone since (a failure),
    or skipped (inside a batch Dagster records it as materialised, with the reason on its event; in a
    run of its own an observation says it): a skip, as in a run of the whole graph."""
    instance = instance_with("WIPRO")
    instance.report_runless_asset_event(AssetMaterialization("teacher_model", partition=KEY))
    result = _student_alone(tmp_path, instance)
    assert not result.success
    [message] = failure_messages(result)
    assert (
        "teacher_model was materialised but its files are missing from WIPRO_2022-07-01_to_2022-12-31/"
        in (message)
    )
    reason = "WIPRO_2022-07-01_to_2022-12-31: no bars in this window"
    instance.report_runless_asset_event(
        AssetMaterialization("teacher_model", partition=KEY, metadata={"skipped": reason})
    )
    result = _student_alone(tmp_path, instance)
    assert result.success
    assert skip_reasons(result)["student_model"] == (
        f"WIPRO_2022-07-01_to_2022-12-31: the teacher skipped this partition ({reason})"
    )
    instance.report_runless_asset_event(AssetMaterialization("teacher_model", partition=KEY))
    instance.report_runless_asset_event(
        AssetObservation("teacher_model", partition=KEY, metadata={"skipped": "only one label class"})
    )
    result = _student_alone(tmp_path, instance)
    assert result.success and "(only one label class)" in skip_reasons(result)["student_model"]
    assert not (tmp_path / "WIPRO_2022-07-01_to_2022-12-31").exists()


def test_in_a_batch_a_partition_without_teacher_is_skipped_with_its_reason(tmp_path: Path) -> None:
    defs = Definitions(
        assets=ALL_ASSETS, jobs=[train_job], resources=resources(tmp_path), executor=in_process_executor
    )
    job = defs.resolve_job_def("train_job").get_subset(asset_selection={AssetKey("student_model")})
    result = job.execute_in_process(
        instance=instance_with("WIPRO"),
        tags={
            "dagster/asset_partition_range_start": "WIPRO|2022-01-01",
            "dagster/asset_partition_range_end": KEY,
        },
        raise_on_error=False,
    )
    assert result.success
    assert (
        "WIPRO_2022-07-01_to_2022-12-31: the teacher was not materialised (nothing to distil)"
        in (skip_reasons(result)["student_model"])
    )
