"""`TeacherConfig.lookback_windows`: a teacher that also learns from the symbol's earlier windows.

With lookback N the teacher of window k trains on the rows from the start of window k-N to the end
of window k, exactly as `ml.protocol.walk_forward` does (so the methodology study measures what the
assets do), the student learns from the same rows' out-of-fold soft labels, and the evaluation of
window k still scores window k's own rows only. The lookback windows' bars come from their stored
`market_bars` partitions, the source filling only the days none holds. The default is 2 (since the
methodology study), in the assets and the protocol alike; lookback 0, the old default, trains as
before the setting existed and keeps that configuration's id, which the new default does not share.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import AssetKey, materialize
from pydantic import ValidationError

from sensequant_assets.assets.student import (
    StudentConfig,
    config_hash,
    default_config_id,
    model_configuration,
)
from sensequant_assets.assets.teacher import (
    MAX_LOOKBACK_WINDOWS,
    TeacherConfig,
    bars_hash,
    teacher_configuration,
    window_rows,
)
from sensequant_assets.io_manager import ArtifactStore, codec_for
from sensequant_assets.ml import protocol
from sensequant_assets.ml.features import HISTORY_DAYS
from sensequant_assets.ml.protocol import (
    DEFAULT_LOOKBACK_WINDOWS,
    WalkForwardSettings,
    month_windows,
    walk_forward,
)
from sensequant_assets.resources import MarketDataResource, PipelineSettings
from sensequant_assets.sources.csv_dir import CsvDirSource
from sensequant_assets.train_plan import bars_fingerprints
from sensequant_tests.daily_csv import write_daily
from sensequant_tests.pipeline_helpers import ALL_ASSETS, failure_messages, instance_with, resources, run

SYMBOL = "TCS"
WINDOWS = ["2022-01-01", "2022-07-01", "2023-01-01"]  # the first three partitions
LOOKBACK = 2  # the default
# The ids that the code before `lookback_windows` existed (6929733) computed for its default
# configuration, at horizons 7 and 5: what a user's records trained then (or at lookback 0) carry.
OLD_DEFAULT_IDS = {7: "0dbf09a1df50", 5: "1ca53faa1cc2"}
# The default configuration's ids since the default lookback became 2.
DEFAULT_IDS = {7: "40e0dd87267e", 5: "a20318865ada"}
HORIZON = PipelineSettings().forecast_horizon
TEACHER = ["market_bars", "teacher_model", "teacher_labels"]


def _config(lookback: int) -> dict[str, Any]:
    return {"ops": {"teacher": {"config": {"lookback_windows": lookback}}}}


def _key(window: str) -> str:
    return f"{SYMBOL}|{window}"


def _metadata(store: ArtifactStore, key: str) -> dict[str, Any]:
    return json.loads((store.partition_dir(key) / "metadata.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def lookback_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """The whole partitioned graph of three consecutive windows of one synthetic symbol under the
    default configuration (lookback 2), one run per window as the UI would (window k's teacher reads
    windows k-1, k-2 from the store)."""
    artifacts = tmp_path_factory.mktemp("lookback")
    instance = instance_with(SYMBOL)
    results = [run(artifacts, _key(w), instance=instance) for w in WINDOWS]
    return artifacts, results


def test_the_default_lookback_is_2_in_the_assets_and_the_protocol() -> None:
    assert TeacherConfig().lookback_windows == LOOKBACK == DEFAULT_LOOKBACK_WINDOWS == MAX_LOOKBACK_WINDOWS
    assert WalkForwardSettings().lookback_windows == TeacherConfig().lookback_windows


@pytest.fixture(scope="module")
def walk_forward_fits() -> tuple[list[tuple[pd.DataFrame, Any]], pd.DataFrame]:
    """`walk_forward` over the same windows and settings: the frame and out-of-fold probabilities of
    every teacher fit (in window order), and its stitched out-of-sample predictions."""
    config = TeacherConfig(lookback_windows=LOOKBACK)
    settings = WalkForwardSettings(
        horizon=HORIZON,
        label=config.label_spec(),
        teacher=config.params(),
        student=StudentConfig().params(),
        min_rows=config.min_rows,
        lookback_windows=LOOKBACK,
    )
    fits: list[tuple[pd.DataFrame, Any]] = []
    train_teacher = protocol.train_teacher

    def recording(frame: pd.DataFrame, *args: Any, **kwargs: Any) -> Any:
        fitted = train_teacher(frame, *args, **kwargs)
        fits.append((frame.copy(), fitted.oof_proba.copy()))
        return fitted

    source = MarketDataResource().source_for(SYMBOL)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocol, "train_teacher", recording)
        result = walk_forward(source, SYMBOL, month_windows(date(2022, 1, 1), len(WINDOWS)), settings)
    assert len(fits) == len(WINDOWS)
    return fits, result.predictions


def test_three_windows_with_lookback_materialise_and_record_their_training_span(lookback_run) -> None:
    artifacts, results = lookback_run
    for window, result in zip(WINDOWS, results, strict=True):
        assert result.success, (window, failure_messages(result))
    store = ArtifactStore(artifacts)
    # Still one artifact directory per window.
    assert sorted(p.name for p in artifacts.iterdir() if not p.name.startswith(".")) == [
        f"{SYMBOL}_2022-01-01_to_2022-06-30",
        f"{SYMBOL}_2022-07-01_to_2022-12-31",
        f"{SYMBOL}_2023-01-01_to_2023-06-30",
    ]
    # The lookback is cut at the first partition, as walk_forward cuts it at its first window: the
    # first window learns from itself alone, the second from two windows, only the third from three.
    spans = {
        "2022-01-01": ("2022-01-01", "2022-06-30", [_key("2022-01-01")]),
        "2022-07-01": ("2022-01-01", "2022-12-31", [_key("2022-01-01"), _key("2022-07-01")]),
        "2023-01-01": ("2022-01-01", "2023-06-30", [_key(w) for w in WINDOWS]),
    }
    for window, (start, end, windows) in spans.items():
        meta = _metadata(store, _key(window))
        assert meta["lookback_windows"] == LOOKBACK
        assert meta["training_span"] == {"start": start, "end": end, "windows": windows}
        assert meta["configuration"]["teacher"]["lookback_windows"] == LOOKBACK
        labels = store.read(_key(window), codec_for("teacher_labels"), "teacher_labels")
        assert meta["total_samples"] == len(labels)
        first, last = pd.to_datetime(labels["ts"]).dt.tz_localize(None).agg(["min", "max"])
        assert first >= pd.Timestamp(start) and last <= pd.Timestamp(end)
        assert meta["window_samples"] == len(window_rows(labels, *map(date.fromisoformat, (window, end))))
    meta = _metadata(store, _key("2023-01-01"))
    assert meta["window_samples"] < meta["total_samples"]  # lookback rows were learnt from
    # The lookback windows' bars came from their market_bars partitions; the source gave the warm-up.
    assert meta["history"]["from_market_bars"] == [_key("2022-01-01"), _key("2022-07-01")]
    assert meta["history"]["from_source"] == [["2021-06-11", "2021-12-31"]]
    event = results[-1].asset_materializations_for_node("teacher")[0]
    assert event.metadata["training_span"].value == "2022-01-01..2023-06-30 (3 windows)"
    assert event.metadata["lookback_windows"].value == LOOKBACK
    # A default run records the default configuration's id, whatever its window's actual span.
    for window in WINDOWS:
        student = json.loads((store.partition_dir(_key(window)) / "student" / "metadata.json").read_text())
        assert student["config_id"] == default_config_id(HORIZON) == DEFAULT_IDS[HORIZON]
        assert student["rows"] == _metadata(store, _key(window))["total_samples"]  # the same rows


def test_the_teacher_learns_what_walk_forward_learns(lookback_run, walk_forward_fits) -> None:
    artifacts, results = lookback_run
    assert all(r.success for r in results)
    fits, _ = walk_forward_fits
    store = ArtifactStore(artifacts)
    for window, (frame, oof) in zip(WINDOWS, fits, strict=True):
        stored = (store.partition_dir(_key(window)) / "labels.csv.gz").read_bytes()
        # Same rows, features, labels and out-of-fold probabilities, byte for byte.
        expected = codec_for("teacher_labels").dump(frame.assign(teacher_proba=oof))["labels.csv.gz"]
        assert stored == expected, window


def test_the_evaluation_scores_only_the_windows_own_rows(lookback_run, walk_forward_fits) -> None:
    artifacts, results = lookback_run
    assert all(r.success for r in results)
    _, study = walk_forward_fits
    store = ArtifactStore(artifacts)
    key = _key("2023-01-01")
    labels = store.read(key, codec_for("teacher_labels"), "teacher_labels")
    predictions = pd.read_parquet(store.partition_dir(key) / "evaluation" / "predictions.parquet")
    own = window_rows(labels, date(2023, 1, 1), date(2023, 6, 30))
    assert len(own) < len(labels)  # the table also holds the lookback windows' rows
    assert len(predictions) == len(own) == _metadata(store, key)["window_samples"]
    ts = pd.to_datetime(predictions["ts"]).dt.tz_localize(None)
    assert ts.min() >= pd.Timestamp("2023-01-01") and ts.max() <= pd.Timestamp("2023-06-30")
    assert list(predictions["label"]) == list(own["label"])
    # And they are the study's out-of-sample predictions of that window, number for number.
    theirs = study[study["window"] == key].reset_index(drop=True)
    assert len(theirs) == len(predictions)
    ours = predictions.drop(columns="ts")
    pd.testing.assert_frame_equal(ours, theirs.drop(columns="ts"), check_dtype=False)
    assert (ts.to_numpy() == pd.to_datetime(theirs["ts"]).dt.tz_localize(None).to_numpy()).all()


def test_the_default_has_its_own_id_and_lookback_0_keeps_the_old_defaults() -> None:
    """The configuration id decision: `NEUTRAL_AT` leaves `lookback_windows` out of the id at 0 (what
    the teacher learnt before the field existed), not at the default. So the old default's records
    keep their id, the new default (lookback 2) records `lookback_windows: 2` under a new id, and a
    briefing judging the default never mixes the two."""
    for horizon in (7, 5):
        assert default_config_id(horizon) == DEFAULT_IDS[horizon] != OLD_DEFAULT_IDS[horizon]
        old = model_configuration(
            teacher_configuration(TeacherConfig(lookback_windows=0), horizon), StudentConfig()
        )
        assert config_hash(old) == OLD_DEFAULT_IDS[horizon]
    assert teacher_configuration(TeacherConfig(), 7)["teacher"]["lookback_windows"] == LOOKBACK
    assert "lookback_windows" not in teacher_configuration(TeacherConfig(lookback_windows=0), 7)["teacher"]
    # Other ids of the code before the field existed, computed by that code, hold at lookback 0.
    other = model_configuration(
        teacher_configuration(TeacherConfig(label="fixed", n_estimators=50, lookback_windows=0), 7),
        StudentConfig(C=2.0),
    )
    assert config_hash(other) == "940643b5ea35"
    assert config_hash(teacher_configuration(TeacherConfig(lookback_windows=0), 7)) == "56600f50f5cc"
    ids = {
        n: config_hash(
            model_configuration(teacher_configuration(TeacherConfig(lookback_windows=n), 7), StudentConfig())
        )
        for n in range(MAX_LOOKBACK_WINDOWS + 1)
    }
    assert ids[LOOKBACK] == default_config_id(7)
    assert len(set(ids.values())) == len(ids)  # every lookback is its own configuration


def test_lookback_0_records_keep_the_old_id_and_are_not_judged_as_the_default(tmp_path: Path) -> None:
    """Two windows trained at lookback 0 (as a user's records trained before the default changed):
    their students and evaluation carry the old default's id; the briefing of the default leaves the
    evaluation out (nothing of the default configuration to judge), and judges it when asked by id."""
    instance = instance_with(SYMBOL)
    for window in WINDOWS[:2]:
        result = run(tmp_path, _key(window), run_config=_config(0), instance=instance)
        assert result.success, failure_messages(result)
    store = ArtifactStore(tmp_path)
    for window in WINDOWS[:2]:
        student = json.loads((store.partition_dir(_key(window)) / "student" / "metadata.json").read_text())
        assert student["config_id"] == OLD_DEFAULT_IDS[HORIZON]
        assert _metadata(store, _key(window))["training_span"]["windows"] == [_key(window)]
    evaluation = store.partition_dir(_key(WINDOWS[1])) / "evaluation" / "metrics.json"
    assert json.loads(evaluation.read_text())["config_id"] == OLD_DEFAULT_IDS[HORIZON]

    def brief(**config: Any) -> dict[str, Any]:
        result = materialize(
            ALL_ASSETS,
            selection=["promotion_briefing"],
            resources=resources(tmp_path),
            instance=instance,
            run_config={
                "ops": {"promotion_briefing": {"config": {"min_windows": 1, "min_rows": 1, **config}}}
            },
            raise_on_error=False,
        )
        assert result.success, failure_messages(result)
        symbols = result.output_for_node("promotion_briefing").symbols
        return next(b for b in symbols if b["symbol"] == SYMBOL)

    default = brief()
    assert default["config_id"] == DEFAULT_IDS[HORIZON]
    assert (default["windows"], default["windows_left_out"]) == (0, 1)
    assert default["decision"] == "INSUFFICIENT_DATA"
    old = brief(config_id=OLD_DEFAULT_IDS[HORIZON])
    assert (old["config_id"], old["windows"], old["windows_left_out"]) == (OLD_DEFAULT_IDS[HORIZON], 1, 0)


@pytest.mark.parametrize("lookback", [-1, MAX_LOOKBACK_WINDOWS + 1])
def test_an_out_of_range_lookback_is_refused_by_name_and_writes_nothing(
    tmp_path: Path, lookback: int
) -> None:
    message = f"lookback_windows={lookback} is outside 0..{MAX_LOOKBACK_WINDOWS}"
    with pytest.raises(ValidationError, match=message):
        TeacherConfig(lookback_windows=lookback)
    key = _key("2022-07-01")
    instance = instance_with(SYMBOL)
    assert run(tmp_path, key, selection=["market_bars"], instance=instance).success
    before = _files(tmp_path)
    result = run(
        tmp_path,
        key,
        selection=["teacher_model", "teacher_labels", "student_model"],
        run_config=_config(lookback),
        instance=instance,
    )
    assert not result.success
    assert any(message in m for m in failure_messages(result)), failure_messages(result)
    assert _files(tmp_path) == before
    assert instance.get_latest_materialization_event(AssetKey("teacher_model")) is None


def test_stored_lookback_bars_are_learnt_from_and_the_source_fills_only_missing_days(tmp_path: Path) -> None:
    # Window k-1 (a lookback window) is stored and corrected there; k-2 was never materialised.
    instance = instance_with(SYMBOL)
    lookback_key = _key("2022-07-01")
    assert run(tmp_path, lookback_key, selection=["market_bars"], instance=instance).success
    store = ArtifactStore(tmp_path)
    corrected = store.read(lookback_key, codec_for("market_bars"), "market_bars")
    day = corrected.index[60]
    corrected.loc[day, ["open", "high", "low", "close"]] *= 1.01
    store.write(lookback_key, codec_for("market_bars"), corrected)

    key = _key("2023-01-01")
    result = run(tmp_path, key, selection=TEACHER, run_config=_config(LOOKBACK), instance=instance)
    assert result.success, failure_messages(result)
    meta = _metadata(store, key)
    # The stored partition for its days; the source for exactly the others (k-2 and the warm-up).
    assert meta["history"]["from_market_bars"] == [lookback_key]
    assert meta["history"]["from_source"] == [["2021-06-11", "2022-06-30"]]
    event = result.asset_materializations_for_node("teacher")[0]
    assert event.metadata["history_from_source"].value == "2021-06-11..2022-06-30"
    source = MarketDataResource().source_for(SYMBOL)
    from_source = source.bars(SYMBOL, date(2021, 6, 11), date(2022, 6, 30))
    window_bars = store.read(key, codec_for("market_bars"), "market_bars")
    assert meta["data_sha256"] == bars_hash(pd.concat([from_source, corrected, window_bars]))
    # The corrected bar is a training row, with the stored (corrected) close, not the source's.
    labels = store.read(key, codec_for("teacher_labels"), "teacher_labels")
    row = labels[pd.to_datetime(labels["ts"]) == day]
    assert len(row) == 1
    assert row["close"].iloc[0] == corrected.loc[day, "close"]
    assert row["close"].iloc[0] != source.bars(SYMBOL, day.date(), day.date())["close"].iloc[0]


def test_sensequant_train_fingerprints_every_day_the_default_teacher_reads(tmp_path: Path) -> None:
    """`sensequant train` decides a teacher's staleness from the bars of its window and of every day
    it reads before it (`train_plan.bars_fingerprints`, through `partitions.bars_before_windows`):
    with the default lookback 2, the two earlier windows whole and the warm-up before them. A
    correction near the end of window j therefore moves the fingerprints before windows j+1 to j+4
    (j+4's warm-up reaches into j's last weeks), not j+5, and not any window's own."""
    windows = [
        "2022-01-01",
        "2022-07-01",
        "2023-01-01",
        "2023-07-01",
        "2024-01-01",
        "2024-07-01",
        "2025-01-01",
    ]
    write_daily(tmp_path, "A", date(2021, 5, 1), date(2025, 6, 30))
    source = CsvDirSource(tmp_path)
    before = bars_fingerprints(source, "A", windows)
    assert bars_fingerprints(source, "A", windows, LOOKBACK) == before  # the default's
    # Windows 0..2 share the first day they read (the lookback cut at the first partition), not the span.
    assert len({fp.history for fp in before.values()}) == len(windows)
    write_daily(tmp_path, "A", date(2022, 6, 27), date(2022, 6, 28), bump=1.02)  # window j = 2022-01-01
    after = bars_fingerprints(source, "A", windows)
    assert after["2022-01-01"].window != before["2022-01-01"].window
    assert [w for w in windows if after[w].history != before[w].history] == windows[1:5]
    assert all(after[w].window == before[w].window for w in windows[1:])
    # At lookback 0 only the warm-up counts: windows j+1 and j+2.
    zero = bars_fingerprints(source, "A", windows, 0)
    write_daily(tmp_path, "A", date(2022, 6, 27), date(2022, 6, 28), bump=1.03)
    moved = bars_fingerprints(source, "A", windows, 0)
    assert [w for w in windows if moved[w].history != zero[w].history] == windows[1:3]
    # The span fingerprinted before a window is what a default teacher reads: from HISTORY_DAYS
    # before window k-2 (cut at the first partition) to the day before window k.
    asked: list[tuple[date, date]] = []

    class Recording(CsvDirSource):
        def window_fingerprints(self, symbol, spans):
            asked.extend(spans)
            return super().window_fingerprints(symbol, spans)

    bars_fingerprints(Recording(tmp_path), "A", ["2022-07-01", "2023-07-01"])
    warm_up = timedelta(days=HISTORY_DAYS)
    assert asked == [
        (date(2022, 7, 1), date(2022, 12, 31)),  # the windows' own bars
        (date(2023, 7, 1), date(2023, 12, 31)),
        (date(2022, 1, 1) - warm_up, date(2022, 6, 30)),  # one lookback window: the first partition
        (date(2022, 7, 1) - warm_up, date(2023, 6, 30)),  # two: 2022-07-01 and 2023-01-01
    ]


def test_window_rows_reads_built_and_stored_tables_alike() -> None:
    ts = pd.date_range("2022-12-28", periods=6, freq="D", tz="Asia/Kolkata")
    built = pd.DataFrame({"ts": ts, "label": range(6)})
    stored = built.assign(ts=built["ts"].astype(str))  # as read back from labels.csv.gz
    for table in (built, stored):
        rows = window_rows(table, date(2023, 1, 1), date(2023, 1, 2))
        assert list(rows["label"]) == [4, 5] and list(rows.index) == [0, 1]
    assert window_rows(built, date(2022, 12, 1), date(2023, 1, 31)) is built
