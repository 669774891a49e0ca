"""`sensequant train` end to end, and `dagster definitions validate`, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from sensequant_assets.sources.synthetic import SyntheticSource

ROOT = Path(__file__).resolve().parents[1]
FILES = (
    "model.pkl",
    "labels.csv.gz",
    "metadata.json",
    "feature_importance.csv",
    "student/student_model.pkl",
    "student/metrics.json",
    "student/metadata.json",
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSEQUANT_")}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), DAGSTER_DISABLE_TELEMETRY="1", **extra)
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def _sensequant(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sensequant_assets.cli", *args],
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_definitions_validate(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_train_two_symbols_three_windows(tmp_path: Path) -> None:
    artifacts = tmp_path / "models"
    proc = _sensequant(
        tmp_path,
        "train", "--symbols", "RELIANCE,TCS", "--start", "2023-01-01", "--end", "2024-06-30",
        "--artifacts-dir", str(artifacts),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = {
        f"{s}_{w}"
        for s in ("RELIANCE", "TCS")
        for w in ("2023-01-01_to_2023-06-30", "2023-07-01_to_2023-12-31", "2024-01-01_to_2024-06-30")
    }
    assert {p.name for p in artifacts.iterdir() if not p.name.startswith(".")} == expected | {"briefings"}
    for name in expected:
        for rel in FILES:
            assert (artifacts / name / rel).is_file(), f"{name}/{rel}"
    lines = proc.stdout.strip().splitlines()
    partition_lines = [line for line in lines if "|20" in line]
    assert len(partition_lines) == 6
    assert all(" materialised " in line for line in partition_lines)
    total = next(i for i, line in enumerate(lines) if line.startswith("total: "))
    assert lines[total].startswith("total: 6 partitions, 6 materialised, 0 skipped, 0 failed")
    # The briefing follows, one decision per symbol, each computed from the stored evaluations.
    assert lines[total + 1] == "promotion briefing:"
    decisions = {line.split()[0]: line.split()[1] for line in lines[total + 2 :]}
    assert set(decisions) == {"RELIANCE", "TCS"}
    assert set(decisions.values()) <= {"PROMOTE", "REJECT", "INSUFFICIENT_DATA"}
    assert (artifacts / "briefings" / "promotion_briefing.json").is_file()

    # The runs are on the configured instance, so the UI shows them.
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
        assert len(runs) == 7  # six partitions and the briefing
        assert {r.tags["sensequant/trigger"] for r in runs} == {"cli"}


@pytest.mark.parametrize("rate, code", [("0.15", 1), ("0.6", 0)])
def test_train_exits_nonzero_when_failures_exceed_the_rate(tmp_path: Path, rate: str, code: int) -> None:
    data = tmp_path / "csv"
    data.mkdir()
    SyntheticSource().bars("RELIANCE", date(2022, 1, 1), date(2023, 6, 30)).to_parquet(
        data / "RELIANCE.parquet"
    )
    proc = _sensequant(
        tmp_path,
        "train", "--symbols", "RELIANCE,NOSUCH", "--start", "2023-01-01", "--end", "2023-06-30",
        "--data-source", "csv", "--data-dir", str(data), "--artifacts-dir", str(tmp_path / "m"),
        "--max-failure-rate", rate,
    )  # fmt: skip
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "NOSUCH|2023-01-01" in proc.stdout and " failed " in proc.stdout
    assert "RELIANCE|2023-01-01" in proc.stdout
    assert "total: 2 partitions, 1 materialised, 0 skipped, 1 failed" in proc.stdout
