"""Asset checks: one result per check and partition, in runs of one partition and in batches.

The pipeline tests materialise the real graph on an ephemeral instance (teachers on their window
alone, for speed) and read the results back the way the UI does: the per-partition status
(`get_asset_check_state`, behind the partition bar of a check) and, once, the webserver's GraphQL
query for the asset's Checks tab against the code location as `make run` loads it. A
failure is injected where the data enters the step (the source, the teacher's fit, the evaluation's
scoring), since the sources' own validation refuses such bars before any asset sees them.
"""

from __future__ import annotations

import dataclasses
import inspect
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    Definitions,
    in_process_executor,
    materialize,
)
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionResolvedStatus
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from sensequant_assets import definitions as definitions_module
from sensequant_assets.artifacts import EvaluationArtifact
from sensequant_assets.assets import checks as checks_module
from sensequant_assets.assets import evaluation as evaluation_module
from sensequant_assets.assets import teacher as teacher_module
from sensequant_assets.assets.bars import BAR_CHECKS, longest_gap, market_bars
from sensequant_assets.assets.checks import (
    EVALUATION_CHECKS,
    TEACHER_CHECKS,
    dates_strictly_increasing,
    label_classes,
    ohlc_consistent,
    oof_proba_in_range,
    predictions_cover_window,
)
from sensequant_assets.assets.evaluation import student_evaluation
from sensequant_assets.assets.partition_context import window_of
from sensequant_assets.assets.teacher import teacher
from sensequant_assets.definitions import defs
from sensequant_assets.jobs import train_job
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.sources.synthetic import SyntheticSource
from sensequant_tests.pipeline_helpers import (
    ALL_ASSETS,
    failure_messages,
    instance_with,
    resources,
    run,
    skip_reasons,
)

WINDOW_ALONE = {"ops": {"teacher": {"config": {"lookback_windows": 0}}}}
W1, W2, W3 = "RELIANCE|2023-01-01", "RELIANCE|2023-07-01", "RELIANCE|2024-01-01"
DIR2 = "RELIANCE_2023-07-01_to_2023-12-31"
SUITES = (BAR_CHECKS, TEACHER_CHECKS, EVALUATION_CHECKS)
OK, FAILED, SKIPPED = (
    AssetCheckExecutionResolvedStatus.SUCCEEDED,
    AssetCheckExecutionResolvedStatus.FAILED,
    AssetCheckExecutionResolvedStatus.SKIPPED,
)


def _key(asset: str, check: str) -> AssetCheckKey:
    return AssetCheckKey(AssetKey(asset), check)


def _batch(artifacts: Path, start: str = W1, end: str = W3, instance: DagsterInstance | None = None):
    job = Definitions(
        assets=ALL_ASSETS, jobs=[train_job], resources=resources(artifacts), executor=in_process_executor
    ).resolve_job_def(train_job.name)
    return job.execute_in_process(
        instance=instance or instance_with("RELIANCE"),
        tags={"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end},
        run_config=WINDOW_ALONE,
        raise_on_error=False,
    )


def _evaluations(result) -> dict[tuple[str, str | None], AssetCheckEvaluation]:
    """(check name, partition) -> the run's evaluation event."""
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            out[(evaluation.check_name, evaluation.partition)] = evaluation
    return out


def _status(instance: DagsterInstance, key: AssetCheckKey) -> dict[str, AssetCheckExecutionResolvedStatus]:
    """partition -> the check's status as the UI's partition bar shows it (current results only)."""
    with partition_loading_context(dynamic_partitions_store=instance):
        [state] = instance.event_log_storage.get_asset_check_state([(key, symbol_window_partitions)]).values()
        return {
            str(partition): status
            for status, subset in state.subsets.items()
            for partition in subset.subset_value.get_partition_keys()
        }


def _corrupt_source(monkeypatch: pytest.MonkeyPatch, window: str, corrupt) -> None:
    """The synthetic source hands market_bars' request for `window` through `corrupt` (the teacher's
    history reads ask for other spans and stay clean)."""
    original = SyntheticSource.bars
    start, end = window_of(f"RELIANCE|{window}").start, window_of(f"RELIANCE|{window}").end

    def bars(self, symbol: str, first: date, last: date) -> pd.DataFrame:
        frame = original(self, symbol, first, last)
        return corrupt(frame.copy()) if (first, last) == (start, end) else frame

    monkeypatch.setattr(SyntheticSource, "bars", bars)


def _high_below_close(frame: pd.DataFrame) -> pd.DataFrame:
    frame.iloc[2, frame.columns.get_loc("high")] = frame["close"].iloc[2] * 0.9
    return frame


def _two_rows_swapped(frame: pd.DataFrame) -> pd.DataFrame:
    order = list(range(len(frame)))
    order[3], order[4] = 4, 3
    return frame.iloc[order]


# --- definitions and Dagster's API ----------------------------------------------------------------


def test_every_check_is_registered_per_partition_with_its_blocking() -> None:
    graph = defs.resolve_asset_graph()
    expected = {
        _key("market_bars", "bars_valid"),
        _key("teacher_labels", "soft_labels_valid"),
        _key("student_evaluation", "predictions_cover_window"),
        _key("data_quality", "data_quality_ok"),  # a warning only (test_data_quality.py)
    }
    assert set(graph.asset_check_keys) == expected
    for assets_def in (market_bars, teacher, student_evaluation):
        for spec in assets_def.check_specs:
            assert spec.blocking  # ERROR results block; WARN results (a gap, a rare class) never do
            assert spec.partitions_def == symbol_window_partitions  # one result per partition
            assert spec.description


def test_the_dagster_api_the_checks_rely_on_is_unchanged() -> None:
    """`AssetCheckEvaluation` (exported, not documented as public) carries the partition and the
    checked materialisation; a check's output is named `AssetCheckSpec.get_python_identifier()`.
    If an upgrade changes either, this fails: read `checks.py`'s docstring and the fallback."""
    params = inspect.signature(AssetCheckEvaluation.__new__).parameters
    for name in ("asset_key", "check_name", "passed", "metadata", "target_materialization_data"):
        assert name in params
    for name in ("severity", "description", "blocking", "partition"):
        assert name in params
    assert checks_module.PER_PARTITION_RESULTS
    target = checks_module._Target(storage_id=1, run_id="run", timestamp=0.0)
    assert (target.storage_id, target.run_id, target.timestamp) == (1, "run", 0.0)
    for assets_def, suite in zip((market_bars, teacher, student_evaluation), SUITES, strict=True):
        outputs = {out.name for out in assets_def.op.output_defs}
        for check in suite.checks:
            assert checks_module.check_output(suite.asset, check.name).output_name in outputs


# --- the rules, on frames ---------------------------------------------------------------------------


def _bars(days: list[str]) -> pd.DataFrame:
    index = pd.DatetimeIndex(days, tz="Asia/Kolkata", name="timestamp")
    close = np.linspace(100, 110, len(days))
    return pd.DataFrame(
        {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1000.0},
        index=index,
    )


def test_the_bar_rules_name_the_rows_they_refuse() -> None:
    pw = window_of(W2)
    good = _bars(["2023-07-03", "2023-07-04", "2023-07-05"])
    assert dates_strictly_increasing(good, pw, None).passed
    assert ohlc_consistent(good, pw, None).passed
    bad = _bars(["2023-07-04", "2023-07-03", "2023-07-03", "2024-01-02"])
    verdict = dates_strictly_increasing(bad, pw, None)
    assert not verdict.passed and verdict.severity == AssetCheckSeverity.ERROR
    assert verdict.metadata == {"bars": 4, "out_of_order": 1, "repeated_dates": 1, "outside_window": 1}
    assert "row 2 (2023-07-03)" in verdict.summary and "row 4 (2024-01-02)" in verdict.summary
    assert "sorted" in verdict.rule and "unique" in verdict.rule and "within the window" in verdict.rule
    broken = good.copy()
    broken.iloc[1, broken.columns.get_loc("low")] = broken["close"].iloc[1] * 1.1
    broken.iloc[2, broken.columns.get_loc("volume")] = -1.0
    verdict = ohlc_consistent(broken, pw, None)
    assert not verdict.passed and verdict.metadata["bad_rows"] == 2
    assert "low <= min(open, close) broken by 1 bar(s): row 2 (2023-07-04)" in verdict.summary
    assert "volume >= 0 broken by 1 bar(s): row 3 (2023-07-05)" in verdict.summary
    gap = checks_module.gap_report(longest_gap, 10)(_bars(["2023-07-03", "2023-07-31"]), pw, None)
    assert not gap.passed and gap.severity == AssetCheckSeverity.WARN
    assert gap.metadata["longest_gap"] == "2023-07-04..2023-07-28"


def test_an_asset_check_judges_its_rules_together() -> None:
    """One result per partition: failed if any rule failed, ERROR if any failed rule is ERROR."""
    [check] = BAR_CHECKS.checks
    pw = window_of(W2)
    assert check.judge(_bars(["2023-07-03", "2023-07-04"]), pw, None).passed
    gap_only = check.judge(_bars(["2023-07-03", "2023-07-31"]), pw, None)
    assert not gap_only.passed and gap_only.severity == AssetCheckSeverity.WARN
    assert gap_only.metadata["longest_gap_weekdays"] == 19 and gap_only.metadata["bad_rows"] == 0
    both = check.judge(_bars(["2023-07-31", "2023-07-03"]), pw, None)
    assert not both.passed and both.severity == AssetCheckSeverity.ERROR
    assert both.rule.startswith("dates sorted (monotonic)")  # the ERROR first, then the warning


def test_the_teacher_rules() -> None:
    pw = window_of(W2)
    labels = pd.DataFrame({"label": [0, 1] * 15, "teacher_proba": np.linspace(0, 1, 30)})
    assert label_classes(labels, pw, 10).passed and oof_proba_in_range(labels, pw, None).passed
    few = label_classes(labels.assign(label=[1] * 3 + [0] * 27), pw, 10)
    assert not few.passed and few.severity == AssetCheckSeverity.WARN and few.metadata["positives"] == 3
    one = label_classes(labels.assign(label=0), pw, 10)
    assert not one.passed and one.severity == AssetCheckSeverity.ERROR and one.rule == "both classes present"
    proba = labels["teacher_proba"].to_numpy().copy()
    proba[[4, 9]] = [np.nan, 1.5]
    verdict = oof_proba_in_range(labels.assign(teacher_proba=proba), pw, None)
    assert not verdict.passed and verdict.metadata["non_finite"] == 1 and verdict.metadata["outside_0_1"] == 1
    assert "row 5" in verdict.summary and "row 10" in verdict.summary


def test_the_coverage_rule_compares_the_predictions_with_the_windows_labelled_rows() -> None:
    pw = window_of(W2)
    ts = pd.date_range("2023-07-03", periods=5, freq="B", tz="Asia/Kolkata")
    rows = pd.DataFrame({"ts": ts})
    artifact = EvaluationArtifact({}, pd.DataFrame({"ts": ts, "student_proba": 0.5}), pd.DataFrame(), b"")
    assert predictions_cover_window(artifact, pw, rows).passed
    # read back from labels.csv.gz, the window's rows are ISO text: the same times
    assert predictions_cover_window(artifact, pw, rows.assign(ts=ts.astype(str))).passed
    short = dataclasses.replace(artifact, predictions=artifact.predictions.iloc[:-1])
    verdict = predictions_cover_window(short, pw, rows)
    assert not verdict.passed and verdict.metadata["missing_rows"] == 1
    assert "2023-07-07" in verdict.summary and verdict.rule == "every labelled row predicted"


# --- materialised ------------------------------------------------------------------------------------

BARS, LABELS, COVER = "bars_valid", "soft_labels_valid", "predictions_cover_window"


def test_a_run_of_one_partition_records_each_check_on_that_partition(tmp_path: Path) -> None:
    instance = instance_with("RELIANCE")
    result = run(tmp_path, W2, instance=instance, run_config=WINDOW_ALONE)
    assert result.success
    evaluations = _evaluations(result)
    assert sorted(evaluations) == [(BARS, W2), (LABELS, W2)]
    assert all(e.passed for e in evaluations.values())
    bars = evaluations[(BARS, W2)]
    # A pass carries what it found, not the problems it did not find (events are stored three times).
    assert bars.metadata["bars"].value == 130 and "bad_rows" not in bars.metadata
    assert "out_of_order" not in bars.metadata and "longest_gap" not in bars.metadata
    assert bars.description.startswith("130 bars, 2023-07-03..2023-12-29")
    labels = evaluations[(LABELS, W2)]
    assert (
        labels.metadata["positives"].value + labels.metadata["negatives"].value
        == labels.metadata["rows"].value
    )
    # Each result names this run's materialisation of its partition: the UI shows it as current.
    assert _status(instance, _key("market_bars", BARS)) == {W2: OK}
    assert _status(instance, _key("teacher_labels", LABELS)) == {W2: OK}
    # The evaluation skipped the window (its previous student was not trained): the check shows skipped.
    assert "student_model was not materialised" in skip_reasons(result)["student_evaluation"]
    assert _status(instance, _key("student_evaluation", COVER)) == {W2: SKIPPED}


def test_a_batch_records_one_result_per_partition_and_check(tmp_path: Path) -> None:
    instance = instance_with("RELIANCE")
    result = _batch(tmp_path, instance=instance)
    assert result.success
    evaluations = _evaluations(result)
    for asset, check in (("market_bars", BARS), ("teacher_labels", LABELS)):
        assert _status(instance, _key(asset, check)) == {W1: OK, W2: OK, W3: OK}
        assert all(evaluations[(check, w)].passed for w in (W1, W2, W3))
    # The first window has no earlier student to evaluate: skipped, not failed.
    assert _status(instance, _key("student_evaluation", COVER)) == {W1: SKIPPED, W2: OK, W3: OK}
    covered = evaluations[(COVER, W3)]
    assert covered.metadata["predictions"].value == covered.metadata["window_rows"].value
    assert covered.metadata["first_prediction"].value.startswith("2024-01")
    assert covered.target_materialization_data is not None
    assert covered.target_materialization_data.run_id == result.run_id


CHECK_STATUSES = """
query($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetChecksOrError { ... on AssetChecks { checks {
      name blocking
      partitionStatuses { ... on AssetCheckMultiPartitionStatuses { primaryDimensionName ranges {
        primaryDimStartKey primaryDimEndKey
        secondaryDim { ... on AssetCheckDefaultPartitionStatuses {
          succeededPartitions failedPartitions skippedPartitions
        } }
      } } }
    } } }
  }
}"""


def test_the_ui_shows_each_checks_status_per_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webserver's query for an asset's Checks tab, against the code location as `make run` loads it."""
    _corrupt_source(monkeypatch, "2023-07-01", _high_below_close)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbols", ["RELIANCE"])
        assert _batch(tmp_path / "models", instance=instance).success
        location = str(Path(definitions_module.__file__))
        with define_out_of_process_context(location, "defs", instance) as workspace, workspace as context:
            keys = [{"path": [asset]} for asset in ("market_bars", "teacher_labels", "student_evaluation")]
            result = execute_dagster_graphql(context, CHECK_STATUSES, {"keys": keys})
    assert not result.errors, result.errors
    shown = {}
    windows = ("2023-01-01", "2023-07-01", "2024-01-01")
    for node in result.data["assetNodes"]:
        [check] = node["assetChecksOrError"]["checks"]
        assert check["blocking"]
        statuses = check["partitionStatuses"]
        assert statuses["primaryDimensionName"] == "window"
        for r in statuses["ranges"]:
            for window in (w for w in windows if r["primaryDimStartKey"] <= w <= r["primaryDimEndKey"]):
                for status in ("succeeded", "failed", "skipped"):
                    for symbol in r["secondaryDim"][f"{status}Partitions"]:
                        shown[(check["name"], f"{symbol}|{window}")] = status
    assert shown == {
        (BARS, W1): "succeeded",
        (BARS, W2): "failed",
        (BARS, W3): "succeeded",
        (LABELS, W1): "succeeded",
        (LABELS, W2): "skipped",
        (LABELS, W3): "succeeded",
        (COVER, W1): "skipped",
        (COVER, W2): "skipped",
        (COVER, W3): "skipped",
    }


def test_bad_bars_alone_fail_the_run_and_nothing_downstream_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _corrupt_source(monkeypatch, "2023-07-01", _two_rows_swapped)
    instance = instance_with("RELIANCE")
    result = run(tmp_path, W2, instance=instance, run_config=WINDOW_ALONE)
    assert not result.success
    [message] = failure_messages(result)
    assert "blocking asset check" in message and f"market_bars: {BARS}" in message
    failed = _evaluations(result)[(BARS, W2)]
    assert not failed.passed and failed.blocking and failed.severity == AssetCheckSeverity.ERROR
    assert "RELIANCE_2023-07-01_to_2023-12-31: 1 bar(s) out of order" in failed.description
    assert "row 5 (2023-07-06)" in failed.description and "the step fails" in failed.description
    assert failed.metadata["symbol"].value == "RELIANCE" and failed.metadata["window"].value == "2023-07-01"
    assert failed.metadata["rule"].value == "dates sorted (monotonic)"
    assert failed.metadata["bad_rows"].value == 0  # swapped rows are each still OHLC-consistent
    assert f"refused by the {BARS} check" in skip_reasons(result)["market_bars"]
    assert not (tmp_path / DIR2).exists()  # nothing written
    assert result.get_asset_materialization_events() == []  # no teacher, student or evaluation
    assert _status(instance, _key("market_bars", BARS)) == {W2: FAILED}


def test_a_refusal_of_a_partition_materialised_before_shows_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition with a good materialisation, refused by a later run of it alone: its check shows
    FAILED (not blank, as when the result named no materialisation and the UI took it as outdated).
    The result is shown against the materialisation the partition keeps, which it names."""
    instance = instance_with("RELIANCE")
    good = run(tmp_path, W2, instance=instance, selection=["market_bars"])
    assert good.success and _status(instance, _key("market_bars", BARS)) == {W2: OK}
    with monkeypatch.context() as patch:
        _corrupt_source(patch, "2023-07-01", _high_below_close)
        refused = run(tmp_path, W2, instance=instance, selection=["market_bars"])
    assert not refused.success
    assert "blocking asset check" in failure_messages(refused)[0]
    failed = _evaluations(refused)[(BARS, W2)]
    assert not failed.passed and failed.target_materialization_data.run_id == good.run_id
    assert f"keeps its earlier materialisation (run {good.run_id[:8]})" in failed.description
    assert _status(instance, _key("market_bars", BARS)) == {W2: FAILED}
    assert run(tmp_path, W2, instance=instance, selection=["market_bars"]).success  # fixed: passes again
    assert _status(instance, _key("market_bars", BARS)) == {W2: OK}


def test_a_batch_refusing_every_partition_shows_each_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that writes nothing has no materialisation to name either: each refused partition's
    result is shown against its earlier materialisation, so the UI shows FAILED, not blank."""

    def bars_batch():
        return materialize(
            [market_bars],
            resources=resources(tmp_path),
            instance=instance,
            tags={"dagster/asset_partition_range_start": W1, "dagster/asset_partition_range_end": W3},
            raise_on_error=False,
        )

    instance = instance_with("RELIANCE")
    assert bars_batch().success
    assert _status(instance, _key("market_bars", BARS)) == {W1: OK, W2: OK, W3: OK}
    original = SyntheticSource.bars
    monkeypatch.setattr(
        SyntheticSource, "bars", lambda self, *args: _high_below_close(original(self, *args).copy())
    )
    result = bars_batch()
    assert result.success and result.get_asset_materialization_events() == []  # nothing written
    assert all(not e.passed and not e.blocking for e in _evaluations(result).values())
    assert _status(instance, _key("market_bars", BARS)) == {W1: FAILED, W2: FAILED, W3: FAILED}


def test_bad_bars_in_a_batch_skip_that_partition_and_the_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _corrupt_source(monkeypatch, "2023-07-01", _high_below_close)
    instance = instance_with("RELIANCE")
    result = _batch(tmp_path, instance=instance)
    assert result.success  # the batch goes on past the refused partition
    failed = _evaluations(result)[(BARS, W2)]
    assert not failed.passed and failed.blocking is False  # a blocking result would stop the whole step
    assert "high >= max(open, close) broken by 1 bar(s): row 3 (2023-07-05)" in failed.description
    assert "downstream skips it; the batch went on" in failed.description
    assert _status(instance, _key("market_bars", BARS)) == {W1: OK, W2: FAILED, W3: OK}
    assert not (tmp_path / DIR2).exists()
    assert (tmp_path / "RELIANCE_2024-01-01_to_2024-06-30" / "student" / "student_model.pkl").is_file()
    # Downstream of the refused partition: skipped with their reasons, no check results.
    assert "market_bars not materialised" in skip_reasons(result)["teacher_model"]
    assert _status(instance, _key("teacher_labels", LABELS)) == {W1: OK, W2: SKIPPED, W3: OK}
    assert _status(instance, _key("student_evaluation", COVER)) == {
        W1: SKIPPED,
        W2: SKIPPED,
        W3: SKIPPED,  # the previous window's student was never trained
    }


def test_soft_labels_outside_0_1_refuse_the_teacher_and_stop_the_student(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = teacher_module.train_teacher

    def train(frame, params, horizon):
        result = original(frame, params, horizon)
        proba = result.oof_proba.copy()
        proba[[0, 7]] = [1.25, np.nan]
        return dataclasses.replace(result, oof_proba=proba)

    monkeypatch.setattr(teacher_module, "train_teacher", train)
    result = run(tmp_path, W2, run_config=WINDOW_ALONE)
    assert not result.success
    assert f"teacher_labels: {LABELS}" in failure_messages(result)[0]
    failed = _evaluations(result)[(LABELS, W2)]
    assert failed.metadata["outside_0_1"].value == 1 and failed.metadata["non_finite"].value == 1
    assert "row 1" in failed.description and "row 8" in failed.description
    assert failed.metadata["rule"].value == "teacher_proba finite, within [0, 1]"
    materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialised == {"market_bars"}  # neither teacher output, no student
    assert not (tmp_path / DIR2 / "model.pkl").exists() and not (tmp_path / DIR2 / "labels.csv.gz").exists()


def test_a_rare_class_is_a_warning_that_blocks_nothing(tmp_path: Path) -> None:
    config = {"ops": {"teacher": {"config": {"lookback_windows": 0, "min_child_samples": 60}}}}
    result = run(
        tmp_path, W2, run_config=config, selection=["market_bars", "teacher_model", "teacher_labels"]
    )
    assert result.success
    warned = _evaluations(result)[(LABELS, W2)]
    assert not warned.passed and warned.severity == AssetCheckSeverity.WARN
    assert "min_child_samples=60" in warned.description and "Kept" in warned.description
    assert (tmp_path / DIR2 / "labels.csv.gz").is_file()


def test_an_evaluation_that_misses_rows_is_refused_in_a_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = evaluation_module.evaluate_window

    def evaluate_window(model, frame, **kwargs):
        result = original(model, frame, **kwargs)
        if kwargs["window"] == W3:  # the last labelled day goes unscored
            return dataclasses.replace(result, predictions=result.predictions.iloc[:-1])
        return result

    monkeypatch.setattr(evaluation_module, "evaluate_window", evaluate_window)
    instance = instance_with("RELIANCE")
    result = _batch(tmp_path, instance=instance)
    assert result.success
    failed = _evaluations(result)[(COVER, W3)]
    assert failed.metadata["missing_rows"].value == 1 and "unpredicted: 2024-06-19" in failed.description
    assert _status(instance, _key("student_evaluation", COVER)) == {W1: SKIPPED, W2: OK, W3: FAILED}
    assert (tmp_path / DIR2 / "evaluation" / "metrics.json").is_file()
    assert not (tmp_path / "RELIANCE_2024-01-01_to_2024-06-30" / "evaluation").exists()
    assert f"refused by the {COVER} check" in skip_reasons(result)["student_evaluation"]


def test_without_per_partition_results_a_batch_reports_per_run_naming_the_failing_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback if an upgrade takes `AssetCheckEvaluation(partition=...)` away."""
    monkeypatch.setattr(checks_module, "PER_PARTITION_RESULTS", False)
    _corrupt_source(monkeypatch, "2023-07-01", _high_below_close)
    result = _batch(tmp_path)
    assert result.success
    evaluations = _evaluations(result)
    assert set(evaluations) == {(BARS, None), (LABELS, None)}  # no evaluation ran (no student before)
    report = evaluations[(BARS, None)]
    assert not report.passed and report.severity == AssetCheckSeverity.WARN
    assert report.description.startswith("1 of 3 partitions failed")
    [row] = report.metadata["failing_partitions"].value
    assert row["symbol"] == "RELIANCE" and row["window"] == "2023-07-01"
    assert row["rule"] == "high >= max(open, close)"
    assert evaluations[(LABELS, None)].passed
    # A run of one partition: Dagster itself names the partition of an AssetCheckResult.
    single = run(tmp_path / "single", W1, selection=["market_bars"])
    assert set(_evaluations(single)) == {(BARS, W1)}
