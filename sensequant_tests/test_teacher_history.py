"""The teacher's warm-up history comes from the earlier windows' `market_bars`, and Dagster knows it.

The features of window k need `HISTORY_DAYS` of bars before it (two earlier 6-month windows). These
tests pin down that the teacher reads them from those windows' `market_bars` partitions (falling back
to the source for days no materialised partition holds), that the bars and so the features are exactly
those of the previous code path (one source call over the whole history), and that Dagster's asset
graph sees market_bars(S|k-1) -> teacher(S|k) for the same symbol only (test_follow_upstream.py:
the sensor that retrains the teachers follows that graph).

The teachers here train on their window alone (`lookback_windows` 0, passed explicitly: the default
is 2), so the warm-up is all they read before it; test_teacher_lookback.py covers the lookback.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
from dagster import (
    AssetKey,
    Definitions,
    in_process_executor,
)

from sensequant_assets.assets.partition_context import window_of
from sensequant_assets.assets.teacher import HISTORY_WINDOWS, TeacherConfig, bars_hash
from sensequant_assets.definitions import defs
from sensequant_assets.io_manager import ArtifactStore, codec_for
from sensequant_assets.jobs import train_job
from sensequant_assets.ml.dataset import build_dataset
from sensequant_assets.ml.features import HISTORY_DAYS
from sensequant_assets.ml.teacher import train_teacher
from sensequant_assets.partitions import history_windows, window_partitions
from sensequant_assets.resources import MarketDataResource
from sensequant_tests.pipeline_helpers import ALL_ASSETS, instance_with, resources, run

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
TEACHER = ["market_bars", "teacher_model", "teacher_labels"]
WINDOWS = ["2023-01-01", "2023-07-01", "2024-01-01"]
HORIZON = 7
# The window alone: what these tests compare with the code path before the history was an input.
WINDOW_ALONE = {"ops": {"teacher": {"config": {"lookback_windows": 0}}}}


def _old_code_path_labels(store: ArtifactStore, key: str) -> tuple[str, bytes]:
    """What the teacher wrote before the history was an input: the bars' hash and labels.csv.gz.

    History from one source call over HISTORY_DAYS before the window, the window's bars from its
    market_bars partition; then the same dataset and teacher fit as `teacher.train_partition`.
    """
    pw = window_of(key)
    source = MarketDataResource().source_for(pw.symbol)
    history = source.bars(pw.symbol, pw.start - timedelta(days=HISTORY_DAYS), pw.start - timedelta(days=1))
    window_bars = store.read(key, codec_for("market_bars"), "market_bars")
    bars = pd.concat([history, window_bars]) if len(history) else window_bars
    config = TeacherConfig(lookback_windows=0)
    ds = build_dataset(bars, pw.start, pw.end, HORIZON, config.label_spec(), pw.symbol)
    result = train_teacher(ds.frame, config.params(), HORIZON)
    labels = ds.frame.assign(teacher_proba=result.oof_proba)
    return bars_hash(bars), codec_for("teacher_labels").dump(labels)["labels.csv.gz"]


def _teacher_files(store: ArtifactStore, key: str) -> tuple[dict, bytes]:
    directory = store.partition_dir(key)
    return json.loads((directory / "metadata.json").read_text()), (directory / "labels.csv.gz").read_bytes()


def test_history_reaches_exactly_the_windows_the_mapping_declares() -> None:
    # 204 days: more than one 6-month window (181-184 days), less than two; computed, not assumed.
    assert HISTORY_WINDOWS == 2
    for window_key in window_partitions.get_partition_keys():
        assert len(history_windows(window_key, HISTORY_DAYS)) == HISTORY_WINDOWS, window_key
    pieces = history_windows("2024-01-01", HISTORY_DAYS)
    assert [(k, str(lo), str(hi)) for k, lo, hi in pieces] == [
        ("2023-01-01", "2023-06-11", "2023-06-30"),
        ("2023-07-01", "2023-07-01", "2023-12-31"),
    ]


def test_the_asset_graph_maps_earlier_windows_of_the_same_symbol_only() -> None:
    graph = defs.resolve_asset_graph()  # the definitions the UI and the daemon load
    teacher_model, bars = AssetKey("teacher_model"), AssetKey("market_bars")

    def parents(partition: str) -> set[str]:
        result = graph.get_parents_partitions(teacher_model, partition)
        assert not result.required_but_nonexistent_parents_partitions
        return {str(p.partition_key) for p in result.parent_partitions if p.asset_key == bars}

    # The window, the MAX_LOOKBACK_WINDOWS (2) a teacher may learn from and the warm-up before those
    # (test_teacher_lookback.py covers the lookback itself).
    assert parents("AAA|2024-01-01") == {
        "AAA|2022-01-01",
        "AAA|2022-07-01",
        "AAA|2023-01-01",
        "AAA|2023-07-01",
        "AAA|2024-01-01",
    }
    # The windows before SENSEQUANT_START_DATE (2022-01-01) do not exist: their days come from the source.
    assert parents("AAA|2022-07-01") == {"AAA|2022-01-01", "AAA|2022-07-01"}
    assert parents("AAA|2022-01-01") == {"AAA|2022-01-01"}
    # A change to window k's bars touches the teachers of k..k+4 of that symbol, no other.
    children = graph.get_child_partition_keys_of_parent("AAA|2023-07-01", bars, teacher_model)
    assert sorted(map(str, children)) == [
        "AAA|2023-07-01",
        "AAA|2024-01-01",
        "AAA|2024-07-01",
        "AAA|2025-01-01",
        "AAA|2025-07-01",
    ]


def test_a_batch_reads_history_from_the_windows_it_wrote_and_matches_the_old_code_path(
    tmp_path: Path,
) -> None:
    # One run over three windows: windows k-1 and k are written by market_bars earlier in the same run.
    batch = Definitions(
        assets=ALL_ASSETS, jobs=[train_job], resources=resources(tmp_path), executor=in_process_executor
    )
    job = batch.resolve_job_def("train_job").get_subset(asset_selection={AssetKey(a) for a in TEACHER})
    instance = instance_with("RELIANCE")
    result = job.execute_in_process(
        instance=instance,
        run_config=WINDOW_ALONE,
        tags={RANGE_START: f"RELIANCE|{WINDOWS[0]}", RANGE_END: f"RELIANCE|{WINDOWS[-1]}"},
    )
    assert result.success
    store = ArtifactStore(tmp_path)
    history = {}
    for window in WINDOWS:
        key = f"RELIANCE|{window}"
        metadata, labels = _teacher_files(store, key)
        data_sha256, old_labels = _old_code_path_labels(store, key)
        assert metadata["data_sha256"] == data_sha256, key  # the very same bars, history included
        assert labels == old_labels, key  # features, labels and out-of-fold probabilities, byte for byte
        history[window] = metadata["history"]
    # The first window's history lies before any materialised window: one source read, as before.
    assert history["2023-01-01"]["from_market_bars"] == []
    assert history["2023-01-01"]["from_source"] == [["2022-06-11", "2022-12-31"]]
    # The second reads the window before it from the run's own market_bars, the rest from the source
    # (2022-07-01 is a partition that this run did not materialise).
    assert history["2023-07-01"]["from_market_bars"] == ["RELIANCE|2023-01-01"]
    assert history["2023-07-01"]["from_source"] == [["2022-12-09", "2022-12-31"]]
    assert history["2024-01-01"]["from_market_bars"] == ["RELIANCE|2023-01-01", "RELIANCE|2023-07-01"]
    assert history["2024-01-01"]["from_source"] == []
    assert (history["2024-01-01"]["start"], history["2024-01-01"]["end"]) == ("2023-06-11", "2023-12-31")
    logs = [
        e.user_message
        for e in instance.all_logs(result.run_id)
        if "warm-up history read from the data source" in (e.user_message or "")
    ]
    assert len(logs) == 1 and "2 of 3 partition(s)" in logs[0]


def test_stored_history_is_what_the_teacher_learns_from(tmp_path: Path) -> None:
    # A window whose earlier windows are materialised reads them from the store, not the source: a
    # stored correction of window k-1 reaches window k's teacher (and its recorded data hash).
    instance = instance_with("RELIANCE")
    for window in WINDOWS[:2]:
        assert run(tmp_path, f"RELIANCE|{window}", selection=["market_bars"], instance=instance).success
    store = ArtifactStore(tmp_path)
    previous = "RELIANCE|2023-07-01"
    corrected = store.read(previous, codec_for("market_bars"), "market_bars")
    corrected.loc[corrected.index[-1], ["open", "high", "low", "close"]] *= 1.01
    store.write(previous, codec_for("market_bars"), corrected)
    key = "RELIANCE|2024-01-01"
    result = run(tmp_path, key, selection=TEACHER, run_config=WINDOW_ALONE, instance=instance)
    assert result.success
    metadata, _ = _teacher_files(store, key)
    data_sha256, _ = _old_code_path_labels(store, key)
    assert metadata["data_sha256"] != data_sha256  # the source was not corrected; the stored bars were
    history = pd.concat(
        [
            store.read(f"RELIANCE|{w}", codec_for("market_bars"), "market_bars").loc["2023-06-11":]
            for w in WINDOWS[:2]
        ]
    )
    window_bars = store.read(key, codec_for("market_bars"), "market_bars")
    assert metadata["data_sha256"] == bars_hash(pd.concat([history, window_bars]))
    event = result.asset_materializations_for_node("teacher")[0]
    assert event.metadata["history_from_market_bars"].value == "RELIANCE|2023-01-01, RELIANCE|2023-07-01"
    assert event.metadata["history_from_source"].value == "none"


def test_a_window_whose_history_was_never_materialised_trains_as_before(tmp_path: Path) -> None:
    key = "RELIANCE|2024-01-01"
    result = run(tmp_path, key, selection=TEACHER, run_config=WINDOW_ALONE)
    assert result.success
    store = ArtifactStore(tmp_path)
    metadata, labels = _teacher_files(store, key)
    assert (metadata["data_sha256"], labels) == _old_code_path_labels(store, key)
    assert metadata["history"]["from_source"] == [["2023-06-11", "2023-12-31"]]
    event = result.asset_materializations_for_node("teacher")[0]
    assert event.metadata["history_from_source"].value == "2023-06-11..2023-12-31"
