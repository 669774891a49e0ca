"""The seed's integration tests in Dagster form, plus determinism and hyper-parameter plumbing."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from sensequant_assets.ml.features import FEATURE_COLUMNS
from sensequant_tests.pipeline_helpers import failure_messages, run

KEY = "RELIANCE|2023-01-01"
DIRNAME = "RELIANCE_2023-01-01_to_2023-06-30"
PREDECESSOR_LABEL_COLUMNS = [
    "ts", "symbol", "open", "high", "low", "close", "volume", *FEATURE_COLUMNS, "label", "forward_return",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One full run of the graph over RELIANCE's first 2023 window, default configuration (its teacher
    also learns from the two windows before it, read from the source: none is materialised)."""
    artifacts = tmp_path_factory.mktemp("models")
    result = run(artifacts, KEY)
    assert result.success, failure_messages(result)
    return artifacts


def test_teacher_artifacts_land_in_the_partition_directory(trained: Path) -> None:
    directory = trained / DIRNAME
    for name in ("model.pkl", "labels.csv.gz", "metadata.json", "feature_importance.csv", "bars.parquet"):
        assert (directory / name).is_file(), name
    assert sorted(p.name for p in trained.iterdir() if not p.name.startswith(".")) == [DIRNAME]

    labels = pd.read_csv(directory / "labels.csv.gz")
    assert labels.columns[: len(PREDECESSOR_LABEL_COLUMNS)].tolist() == PREDECESSOR_LABEL_COLUMNS
    assert "teacher_proba" in labels.columns
    assert labels["teacher_proba"].between(0, 1).all()
    assert (labels["symbol"] == "RELIANCE").all()
    ts = pd.to_datetime(labels["ts"])
    # Every training row: the default lookback's two windows and the window itself.
    assert ts.min().date().isoformat() >= "2022-01-01" and ts.max().date().isoformat() <= "2023-06-30"

    meta = json.loads((directory / "metadata.json").read_text())
    for field in ("training_date", "symbol", "date_range", "total_samples", "train_samples", "val_samples",
                  "label_distribution", "features", "config", "metrics", "data_sha256", "code_version",
                  "hyperparameters", "model_sha256"):  # fmt: skip
        assert field in meta, field
    assert meta["date_range"] == {"start": "2023-01-01", "end": "2023-06-30"}
    assert meta["total_samples"] == len(labels)
    assert meta["lookback_windows"] == 2
    assert meta["training_span"] == {
        "start": "2022-01-01",
        "end": "2023-06-30",
        "windows": ["RELIANCE|2022-01-01", "RELIANCE|2022-07-01", KEY],
    }
    own = ts.dt.tz_localize(None) >= pd.Timestamp("2023-01-01")
    assert meta["window_samples"] == int(own.sum()) < meta["total_samples"]
    assert meta["history"]["from_source"] == [["2021-06-11", "2022-12-31"]]
    assert meta["rows"]["dropped_warmup"] == 0, "history before the window must feed the warm-up"
    assert meta["rows"]["dropped_horizon"] == 7
    importance = pd.read_csv(directory / "feature_importance.csv")
    assert importance.columns.tolist() == ["feature", "importance", "rank"]


def test_student_consumes_the_teacher_files_of_its_partition(trained: Path) -> None:
    directory = trained / DIRNAME
    student = directory / "student"
    assert sorted(p.name for p in student.iterdir()) == ["metadata.json", "metrics.json", "student_model.pkl"]
    teacher_meta = json.loads((directory / "metadata.json").read_text())
    student_meta = json.loads((student / "metadata.json").read_text())
    assert student_meta["teacher"]["model_sha256"] == teacher_meta["model_sha256"]
    metrics = json.loads((student / "metrics.json").read_text())
    assert 0.0 <= metrics["fidelity_agreement"] <= 1.0


def test_student_alone_reads_exactly_the_teacher_directory(trained: Path, tmp_path: Path) -> None:
    """Re-running only the student uses the stored labels; corrupting them is detected and named."""
    result = run(trained, KEY, selection=["student_model"])
    assert result.success, failure_messages(result)
    labels = trained / DIRNAME / "labels.csv.gz"
    original = labels.read_bytes()
    try:
        labels.write_bytes(gzip.compress(b"ts,label\n1,0\n"))
        result = run(trained, KEY, selection=["student_model"])
        assert not result.success
        assert any("labels.csv.gz is corrupt" in m for m in failure_messages(result))
    finally:
        labels.write_bytes(original)


def test_two_runs_give_identical_metrics(trained: Path, tmp_path: Path) -> None:
    result = run(tmp_path, KEY)
    assert result.success, failure_messages(result)
    a, b = trained / DIRNAME, tmp_path / DIRNAME
    assert (
        json.loads((a / "metadata.json").read_text())["metrics"]
        == json.loads((b / "metadata.json").read_text())["metrics"]
    )
    assert (a / "student" / "metrics.json").read_bytes() == (b / "student" / "metrics.json").read_bytes()
    assert (a / "labels.csv.gz").read_bytes() == (b / "labels.csv.gz").read_bytes()


def test_hyper_parameters_from_config_reach_the_models(tmp_path: Path) -> None:
    config = {
        "ops": {
            "teacher": {"config": {"n_estimators": 7, "max_depth": 3, "learning_rate": 0.2}},
            "student_model": {"config": {"kind": "lightgbm", "lgbm_n_estimators": 5}},
        }
    }
    result = run(tmp_path, KEY, run_config=config)
    assert result.success, failure_messages(result)
    directory = tmp_path / DIRNAME
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["hyperparameters"]["n_estimators"] == 7
    assert meta["hyperparameters"]["max_depth"] == 3
    teacher = pd.read_pickle(directory / "model.pkl")
    assert teacher.booster_.num_trees() == 7
    assert teacher.get_params()["learning_rate"] == 0.2
    student_meta = json.loads((directory / "student" / "metadata.json").read_text())
    assert student_meta["hyperparameters"]["kind"] == "lightgbm"
