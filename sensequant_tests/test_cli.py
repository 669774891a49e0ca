"""`sensequant train` end to end, and `dagster definitions validate`, as a user runs them.

The resume tests share one trained instance (two csv symbols x three windows, trained once per
module by the CLI itself) and each works on its own copy, so a test costs only what it retrains.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, RunsFilter

from sensequant_assets import cli, cpus, train_plan
from sensequant_assets.assets.teacher import bars_hash
from sensequant_assets.deployment.devserver import write_instance_yaml
from sensequant_assets.ml.features import HISTORY_DAYS
from sensequant_assets.sources.csv_dir import CsvDirSource
from sensequant_tests.daily_csv import write_daily

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
WINDOWS = ("2023-01-01", "2023-07-01", "2024-01-01")
RANGE = ("--start", "2023-01-01", "--end", "2024-06-30")
SEEDS = {"A": 0, "B": 1}


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


def _processes_with(entry: bytes) -> list[tuple[int, str]]:
    """The pids and command lines of the live processes whose environment holds `entry` (/proc)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if entry in (proc / "environ").read_bytes().split(b"\0"):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(proc.name), command))
    return found


def _status(stdout: str) -> dict[str, list[tuple[str, str]]]:
    """Partition key -> its lines' (status, detail), in order: the plan's line, then the outcome's."""
    lines: dict[str, list[tuple[str, str]]] = {}
    for line in stdout.splitlines():
        if "|20" in line and not line.startswith(" "):
            key, rest = line.split(maxsplit=1)
            for status in ("to run", "up to date", "materialised", "skipped", "failed", "blocked"):
                if rest.startswith(status):
                    lines.setdefault(key, []).append((status, rest[len(status) :].strip()))
    return lines


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


def test_train_two_symbols_three_windows_then_nothing_to_do(tmp_path: Path) -> None:
    artifacts = tmp_path / "models"
    args = ("train", "--symbols", "RELIANCE,TCS", *RANGE, "--artifacts-dir", str(artifacts))
    proc = _sensequant(tmp_path, *args)
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
    status = _status(proc.stdout)
    assert len(status) == 6
    for key, ((planned, why), (outcome, detail)) in status.items():
        assert planned == "to run" and why.startswith("missing (market_bars, teacher_model, student_model")
        assert outcome == "materialised" and detail.startswith(str(artifacts)), key
    lines = proc.stdout.strip().splitlines()
    total = next(i for i, line in enumerate(lines) if line.startswith("total: "))
    assert lines[total].startswith("total: 6 partitions, 6 materialised, 0 up to date, 0 skipped, 0 failed")
    # Per window a training run, then (from the second window, whose evaluation scores the first
    # window's student) an evaluation run, each of both symbols, as a backfill.
    assert lines[total].endswith("(5 runs)")
    # The briefing follows, one decision per symbol, each computed from the stored evaluations.
    assert lines[total + 1] == "promotion briefing:"
    decisions = {line.split()[0]: line.split()[1] for line in lines[total + 2 :]}
    assert set(decisions) == {"RELIANCE", "TCS"}
    assert set(decisions.values()) <= {"PROMOTE", "REJECT", "INSUFFICIENT_DATA"}
    assert (artifacts / "briefings" / "promotion_briefing.json").is_file()

    # The same command again trains nothing, and says so for every partition.
    again = _sensequant(tmp_path, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(lines == [("up to date", lines[0][1])] for lines in _status(again.stdout).values())
    assert "plan: 0 of 6 partitions to run, 6 up to date" in again.stdout
    assert "total: 6 partitions, 0 materialised, 6 up to date, 0 skipped, 0 failed" in again.stdout
    assert "promotion briefing (up to date" in again.stdout

    # The runs are on the configured instance, so the UI shows them: three training runs, two
    # evaluation runs and the briefing, all from the first command.
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
        assert len(runs) == 6
        assert {r.tags["sensequant/trigger"] for r in runs} == {"cli"}
        by_window: dict[tuple[str, str], object] = {}
        for run in runs:
            if run.job_name != "train_job":
                continue
            start = run.tags["dagster/asset_partition_range_start"]
            assert start.startswith("RELIANCE|") and run.tags["dagster/asset_partition_range_end"] == (
                "TCS|" + start.split("|")[1]
            )
            stage = "evaluate" if AssetKey("student_evaluation") in run.asset_selection else "train"
            by_window[(stage, start.split("|")[1])] = instance.get_run_record_by_id(run.run_id)
        assert set(by_window) == {("train", w) for w in WINDOWS} | {("evaluate", w) for w in WINDOWS[1:]}
        for earlier, later in itertools.pairwise(WINDOWS):
            train, evaluate = by_window[("train", later)], by_window[("evaluate", later)]
            before = by_window[("train", earlier)]
            # Each training starts after the previous window's (its teacher reads those bars), each
            # evaluation after its window's training (it reads its labels)...
            assert train.start_time >= before.end_time and evaluate.start_time >= train.end_time
        if cpus.usable_cpus() > 1:
            # ...and an evaluation runs beside the next window's training, as a backfill's would.
            evaluate, train = by_window[("evaluate", WINDOWS[1])], by_window[("train", WINDOWS[2])]
            assert evaluate.start_time < train.end_time and train.start_time < evaluate.end_time


@pytest.mark.skipif(not hasattr(os, "fork") or cpus.usable_cpus() < 2, reason="runs in forked children")
def test_sigterm_ends_the_runs_in_flight_as_ended_and_the_next_command_does_what_is_left(
    tmp_path: Path,
) -> None:
    args = ("train", "--symbols", "RELIANCE,TCS", *RANGE, "--artifacts-dir", str(tmp_path / "models"))
    cmd = [sys.executable, "-m", "sensequant_assets.cli", *args]
    # Files, not pipes: the test waits for the command, not for every process that could hold a pipe.
    out_file, err_file = tmp_path / "out.txt", tmp_path / "err.txt"
    home = f"DAGSTER_HOME={tmp_path / 'home'}".encode()  # in the environment of all it starts
    with out_file.open("w") as out_stream, err_file.open("w") as err_stream:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path), stdout=out_stream, stderr=err_stream)
    try:
        deadline = time.monotonic() + 120
        started: list = []
        while not started:
            assert proc.poll() is None and time.monotonic() < deadline, "no run started"
            time.sleep(0.2)
            with contextlib.suppress(Exception), DagsterInstance.from_config(str(tmp_path / "home")) as inst:
                started = inst.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
        signalled = time.time()
        proc.terminate()
        proc.wait(timeout=120)
        # Nothing the command started outlives it (its runs' workers, Dagster's log processes).
        deadline = time.monotonic() + 10
        while left := _processes_with(home):
            assert time.monotonic() < deadline, f"processes of the stopped command are still running: {left}"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid, _ in _processes_with(home):  # the runs lead their own groups
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    out, err = out_file.read_text(), err_file.read_text()
    assert proc.returncode == 128 + signal.SIGTERM and "total:" not in out, out + err
    assert "stopping 1 run(s) in flight" in err or "stopping 2 run(s) in flight" in err, err
    assert err.strip().endswith("the same command resumes with what is left"), err
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        in_flight = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.CANCELING]
        assert not instance.get_runs(RunsFilter(statuses=in_flight))  # each run recorded its end
        # The run seen going was interrupted, not left to finish (unless it ended before the signal).
        record = instance.get_run_record_by_id(started[0].run_id)
        assert record.dagster_run.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED) or (
            record.end_time is not None and record.end_time < signalled
        ), record.dagster_run.status
    again = _sensequant(tmp_path, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "total: 6 partitions, " in again.stdout and " 0 failed" in again.stdout


# --- in-process, on a copy of one trained instance --------------------------------------------


class Workspace:
    """A DAGSTER_HOME, artifacts and csv data directory, with the CLI run in this process."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.home, self.models, self.data = root / "home", root / "models", root / "csv"
        self.home.mkdir(parents=True, exist_ok=True)
        for name, value in {
            "DAGSTER_HOME": str(self.home),
            "SENSEQUANT_DATA_SOURCE": "csv",
            "SENSEQUANT_DATA_DIR": str(self.data),
            "SENSEQUANT_ARTIFACTS_DIR": str(self.models),
            "DAGSTER_EVENT_BATCH_SIZE": "1000",
        }.items():
            monkeypatch.setenv(name, value)

    def train(self, capsys: pytest.CaptureFixture[str], *args: str, symbols: str = "A,B") -> tuple[int, str]:
        capsys.readouterr()
        code = cli.main(["train", "--symbols", symbols, *(args or RANGE)])
        return code, capsys.readouterr().out

    def write(self, symbol: str, start: date, end: date, bump: float = 1.0) -> None:
        write_daily(self.data, symbol, start, end, seed=SEEDS[symbol], bump=bump)

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))

    def materialisations(self, asset: str, key: str) -> int:
        with self.instance() as instance:
            filt = AssetRecordsFilter(AssetKey(asset), asset_partitions=[key])
            return len(instance.fetch_materializations(filt, limit=100).records)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        ws = Workspace(root, mp)
        for symbol in SEEDS:
            # From the warm-up of the first partition (2022-01-01), which the default lookback (2)
            # of the range's first window reaches.
            ws.write(symbol, date(2021, 6, 1), date(2024, 6, 30))
        assert cli.main(["train", "--symbols", "A,B", *RANGE]) == 0
    yield root


@pytest.fixture
def ws(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A copy of the trained instance (its dagster.yaml names its own directory)."""
    shutil.copytree(trained, tmp_path / "w")
    write_instance_yaml(tmp_path / "w" / "home")
    return Workspace(tmp_path / "w", monkeypatch)


def test_changed_bars_retrain_that_window_and_the_windows_whose_teachers_read_them(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.write("A", date(2023, 7, 1), date(2023, 12, 31), bump=1.02)  # a correction of A's second window
    code, out = ws.train(capsys)
    assert code == 0, out
    status = _status(out)
    assert status["A|2023-07-01"][0] == (
        "to run",
        "the window's bars changed (market_bars, teacher_model); upstream reruns (student_model, "
        "student_evaluation)",
    )
    # The next window's teacher learns from them (the default lookback, 2); its own bars are unchanged.
    assert status["A|2024-01-01"][0] == (
        "to run",
        "the lookback and warm-up bars before the window changed (teacher_model); upstream reruns "
        "(student_model, student_evaluation)",
    )
    assert status["A|2023-07-01"][1][0] == status["A|2024-01-01"][1][0] == "materialised"
    for key in ("A|2023-01-01", "B|2023-01-01", "B|2023-07-01", "B|2024-01-01"):
        assert [s for s, _ in status[key]] == ["up to date"], key
    assert ws.materialisations("market_bars", "A|2023-07-01") == 2
    assert ws.materialisations("market_bars", "A|2024-01-01") == 1  # its bars were not reloaded
    assert ws.materialisations("student_evaluation", "A|2024-01-01") == 2

    code, out = ws.train(capsys)
    assert code == 0 and "plan: 0 of 6 partitions to run, 6 up to date" in out, out


def test_force_retrains_every_partition_of_the_range(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sensequant_assets.assets import evaluation

    by_key = evaluation.by_key

    def without_b_labels(values):  # B's evaluation (a run after its training) skips it
        found = by_key(values)
        labels = any(isinstance(v, pd.DataFrame) for v in found.values())
        return {k: v for k, v in found.items() if not (labels and k.startswith("B|"))}

    monkeypatch.setattr(evaluation, "by_key", without_b_labels)
    code, out = ws.train(capsys, "--start", "2024-01-01", "--end", "2024-06-30", "--force")
    assert code == 0, out
    status = _status(out)
    assert set(status) == {"A|2024-01-01", "B|2024-01-01"}
    for lines in status.values():
        assert lines == [
            ("to run", "forced (--force) (market_bars, teacher_model, student_model, student_evaluation)"),
            lines[1],
        ]
    assert "total: 2 partitions, 2 materialised" in out
    assert ws.materialisations("teacher_model", "B|2024-01-01") == 2
    assert status["A|2024-01-01"][1] == ("materialised", str(ws.models / "A_2024-01-01_to_2024-06-30"))
    # The training run materialised B, the evaluation run skipped it: its line says so.
    assert status["B|2024-01-01"][1] == (
        "materialised",
        f"{ws.models / 'B_2024-01-01_to_2024-06-30'} (student_evaluation skipped: "
        "B_2024-01-01_to_2024-06-30: this window's teacher_labels were not materialised (nothing to score))",
    )


def test_a_failed_partition_is_isolated_and_the_next_run_does_only_what_is_left(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sensequant_assets.assets import student

    distil = student.distil

    def fails_for_b(pw, *args, **kwargs):
        if pw.symbol == "B":
            raise RuntimeError(f"{pw.key}: the student cannot be fitted")
        return distil(pw, *args, **kwargs)

    monkeypatch.setattr(student, "distil", fails_for_b)
    for symbol in SEEDS:  # a correction of both symbols' last window: one run for both
        ws.write(symbol, date(2024, 1, 1), date(2024, 6, 30), bump=1.02)
    code, out = ws.train(capsys)
    assert code == 1, out  # 1 of 6 failed: above the 15 % limit
    assert "a run of 2 partitions of window 2024-01-01 failed" in out
    status = _status(out)
    assert status["A|2024-01-01"][-1][0] == "materialised"
    failed, detail = status["B|2024-01-01"][-1]
    assert failed == "failed" and "B|2024-01-01: the student cannot be fitted" in detail
    assert "total: 6 partitions, 1 materialised, 4 up to date, 0 skipped, 1 failed" in out

    monkeypatch.setattr(student, "distil", distil)
    code, out = ws.train(capsys)
    assert code == 0, out
    status = _status(out)
    # Its bars and teacher were materialised before the student failed: only the rest runs. Its
    # evaluation was not attempted (its window's training failed), and follows the new labels.
    planned, outcome = status.pop("B|2024-01-01")
    assert planned == (
        "to run",
        "its latest attempt failed or was interrupted (student_model); teacher_labels was "
        "re-materialised after it (student_evaluation)",
    )
    assert outcome[0] == "materialised"
    assert all(lines == [("up to date", lines[0][1])] for lines in status.values())
    assert ws.materialisations("teacher_model", "B|2024-01-01") == 2  # the fixture's and the failed run's
    assert ws.materialisations("student_model", "B|2024-01-01") == 2
    assert "total: 6 partitions, 1 materialised, 5 up to date, 0 skipped, 0 failed" in out


@pytest.mark.skipif(not hasattr(os, "fork") or cpus.usable_cpus() < 2, reason="runs in forked children")
def test_a_run_process_that_dies_fails_its_partitions_and_its_run_not_the_command(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sensequant_assets.assets import student

    distil = student.distil

    def dies_for_b(pw, *args, **kwargs):
        if pw.symbol == "B":
            # As the kernel's OOM killer would end it: in the run of A and B, a step worker (the
            # step fails); in the retry of B alone, which forks no worker, the run's own process.
            os._exit(9)
        return distil(pw, *args, **kwargs)

    monkeypatch.setattr(student, "distil", dies_for_b)
    for symbol in SEEDS:
        ws.write(symbol, date(2024, 1, 1), date(2024, 6, 30), bump=1.02)
    code, out = ws.train(capsys, "--start", "2024-01-01", "--end", "2024-06-30")
    assert code == 1, out
    status = _status(out)
    assert status["A|2024-01-01"][-1][0] == "materialised"
    failed, detail = status["B|2024-01-01"][-1]
    assert failed == "failed" and "ended without a result: its process exited with code 9" in detail
    with ws.instance() as instance:
        # No run is left "started" for ever: the dead processes' runs are marked failed.
        assert not instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
        assert len(instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))) == 2  # both, then B


def test_stale_bars_before_the_range_are_refreshed_before_the_teacher_reads_them(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.write("A", date(2023, 7, 1), date(2023, 12, 31), bump=1.02)  # outside the range trained next
    code, out = ws.train(capsys, "--start", "2024-01-01", "--end", "2024-06-30")
    assert code == 0, out
    status = _status(out)
    assert status["A|2023-07-01"] == [
        ("to run", "the window's bars changed (market_bars); the lookback or warm-up of A's range reads it"),
        ("materialised", str(ws.models / "A_2023-07-01_to_2023-12-31")),
    ]
    assert status["A|2024-01-01"][0][1].startswith(
        "the lookback and warm-up bars before the window changed (teacher_model)"
    )
    assert "total: 2 partitions, 1 materialised, 1 up to date" in out
    # The teacher learnt from the corrected bars (stored ones, refreshed first): its data hash is that
    # of the source's bars over its warm-up, its two lookback windows and its window.
    meta = json.loads((ws.models / "A_2024-01-01_to_2024-06-30" / "metadata.json").read_text())
    assert meta["history"]["from_market_bars"] == ["A|2023-01-01", "A|2023-07-01"]
    source, start = CsvDirSource(ws.data), date(2024, 1, 1)
    first = date(2023, 1, 1) - timedelta(days=HISTORY_DAYS)
    history = source.bars("A", first, start - timedelta(days=1))
    assert meta["data_sha256"] == bars_hash(pd.concat([history, source.bars("A", start, date(2024, 6, 30))]))

    # The corrected window itself was outside that range; a range holding it retrains its teacher, and
    # the next window's evaluation follows its student. Nothing else.
    code, out = ws.train(capsys)
    assert code == 0, out
    status = _status(out)
    assert status.pop("A|2023-07-01")[0] == (
        "to run",
        "the window's bars changed (teacher_model); upstream reruns (student_model, student_evaluation)",
    )
    assert status.pop("A|2024-01-01")[0] == (
        "to run",
        "the previous window's student_model reruns (student_evaluation)",
    )
    assert all(lines == [("up to date", lines[0][1])] for lines in status.values())
    assert ws.materialisations("market_bars", "A|2023-07-01") == 2
    assert ws.materialisations("teacher_model", "A|2024-01-01") == 2


@pytest.mark.parametrize("rate, code", [("0.15", 1), ("0.6", 0)])
def test_an_unknown_symbol_fails_by_name_and_counts_against_the_rate(
    ws: Workspace, capsys: pytest.CaptureFixture[str], rate: str, code: int
) -> None:
    args = ("--start", "2024-01-01", "--end", "2024-06-30", "--max-failure-rate", rate)
    exit_code, out = ws.train(capsys, *args, symbols="A,NOSUCH")
    assert exit_code == code, out
    status = _status(out)
    assert status["A|2024-01-01"] == [("up to date", "")]
    (failed, detail), *_ = status["NOSUCH|2024-01-01"]
    assert failed == "failed" and detail.startswith("NOSUCH: ") and str(ws.data) in detail
    assert "total: 2 partitions, 0 materialised, 1 up to date, 0 skipped, 1 failed" in out
    # Nothing of it is written: no directory, and it is not registered as a partition.
    assert not list(ws.models.glob("NOSUCH*"))
    with ws.instance() as instance:
        assert instance.get_dynamic_partitions("symbols") == ["A", "B"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--symbols", "A|B", *RANGE), "A|B"),
        (("--symbols", "A", "--start", "2024-06-30", "--end", "2024-01-01"), "--start 2024-06-30 is after"),
        (("--symbols", "A", "--start", "2021-01-01", "--end", "2024-06-30"), "before SENSEQUANT_START_DATE"),
        (
            ("--symbols", "A", "--start", "2023-02-01", "--end", "2023-06-30"),
            "no complete window lies inside",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    ws: Workspace, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    before = sorted(p.name for p in ws.models.iterdir())
    with ws.instance() as instance:
        runs = instance.get_runs_count()
    capsys.readouterr()
    assert cli.main(["train", *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err, captured.err
    assert captured.out == ""
    assert sorted(p.name for p in ws.models.iterdir()) == before
    with ws.instance() as instance:
        assert instance.get_runs_count() == runs


def test_dry_run_prints_the_plan_and_writes_nothing(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sensequant_assets import io_manager

    def unreachable(location):
        raise io_manager.ArtifactError(f"{location}: a dry run must not open the artifact store")

    monkeypatch.setattr(io_manager, "open_store", unreachable)
    before = sorted(p.name for p in ws.models.iterdir())
    with ws.instance() as instance:
        runs = instance.get_runs_count()
    code, out = ws.train(capsys, *RANGE, "--force", "--dry-run")
    assert code == 0, out
    assert "plan: 6 of 6 partitions to run" in out and "total:" not in out
    assert all(lines == [("to run", lines[0][1])] for lines in _status(out).values())
    assert sorted(p.name for p in ws.models.iterdir()) == before
    with ws.instance() as instance:
        assert instance.get_runs_count() == runs


def test_a_window_the_data_does_not_cover_yet_is_skipped_with_its_reason(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = ws.train(capsys, "--start", "2024-01-01", "--end", "2024-12-31", symbols="A")
    assert code == 0, out
    status = _status(out)
    assert status["A|2024-01-01"] == [("up to date", "")]
    assert status["A|2024-07-01"] == [
        ("skipped", "A: the data source does not cover window 2024-07-01 completely yet")
    ]
    assert not list(ws.models.glob("A_2024-07-01*"))


# --- the plan itself ----------------------------------------------------------------------------


def _plan(ws: Workspace, instance: DagsterInstance, window: str, symbols=("A", "B"), before=None, **changes):
    """The plan of `window`, with the expected versions changed by `changes` (asset -> code version,
    or `config_<step>` -> configuration hash)."""
    from sensequant_assets.definitions import build_definitions

    graph = build_definitions().resolve_asset_graph()
    code = {a: graph.get(AssetKey(a)).code_version for a in train_plan.ASSETS}
    expected = train_plan.expected_versions(code, cli.QUIET, 7)
    code.update({k: v for k, v in changes.items() if not k.startswith("config_")})
    config = dict(expected.config)
    config.update({k[len("config_") :]: v for k, v in changes.items() if k.startswith("config_")})
    expected = train_plan.Expected(code=code, config=config)
    source = CsvDirSource(ws.data)
    bars = {s: train_plan.bars_fingerprints(source, s, list(WINDOWS)) for s in symbols}
    state = train_plan.InstanceState(instance)
    planned = {"2023-01-01": before} if before else None
    plans = train_plan.plan_window(state, window, list(symbols), bars, expected, planned=planned)
    return plans, state


def test_a_new_code_version_or_configuration_reruns_that_step_and_what_follows(ws: Workspace) -> None:
    with ws.instance() as instance:
        plans, _ = _plan(ws, instance, "2023-07-01")
        assert all(not p.reasons for p in plans.values())
        first, _ = _plan(ws, instance, "2023-01-01", student_model="99")
        assert first["A"].why() == "code version changed (2 -> 99) (student_model)"
        # A window's evaluation scores the previous window's student, so it follows that one.
        plans, _ = _plan(ws, instance, "2023-07-01", before=first, student_model="99")
        assert plans["A"].why() == (
            "code version changed (2 -> 99) (student_model); the previous window's student_model "
            "reruns (student_evaluation)"
        )
        plans, _ = _plan(ws, instance, "2023-07-01", config_teacher_model="0123456789ab")
        assert plans["B"].steps == ("teacher_model", "student_model", "student_evaluation")
        assert plans["B"].reasons["teacher_model"].startswith("configuration changed (")
        plans, _ = _plan(ws, instance, "2023-07-01", config_student_evaluation="0123456789ab")
        assert plans["A"].steps == ("student_evaluation",)
        first, _ = _plan(ws, instance, "2023-01-01", market_bars="99")
        plans, _ = _plan(ws, instance, "2023-07-01", before=first, market_bars="99")
        assert plans["A"].steps == ("market_bars", "teacher_model", "student_model", "student_evaluation")
        # Without the earlier window's bars refreshed first, the teacher would read stale stored bars.
        plans, _ = _plan(ws, instance, "2023-07-01", market_bars="99")
        assert plans["A"].steps == ("market_bars",)
        assert plans["A"].blocked == (
            "the lookback's market_bars of 2023-01-01 are stale and were not refreshed (code version "
            "changed (1 -> 99))"
        )


def test_a_partition_materialised_outside_the_cli_counts_as_stale(ws: Workspace) -> None:
    from sensequant_assets.definitions import build_definitions

    job = build_definitions().resolve_job_def("train_job")
    with ws.instance() as instance:
        result = job.execute_in_process(
            instance=instance, partition_key="A|2024-01-01", asset_selection=[AssetKey("market_bars")]
        )  # as a click on "Materialize" in the UI would
        assert result.success
        plans, _ = _plan(ws, instance, "2024-01-01")
    assert plans["A"].reasons["market_bars"] == (
        f"materialised by run {result.run_id[:8]} outside `sensequant train`, which does not record "
        "the bars and configuration it used"
    )
    assert plans["A"].reasons["student_evaluation"] == train_plan.UPSTREAM
    assert not plans["B"].reasons


def test_the_plan_costs_the_same_queries_for_one_symbol_or_many(ws: Workspace) -> None:
    with ws.instance() as instance:
        _, one = _plan(ws, instance, "2024-01-01", symbols=("A",))
        _, two = _plan(ws, instance, "2024-01-01", symbols=("A", "B"))
    # Per asset (and for the previous students and the warm-up bars): three latest ids, two fetches.
    assert one.queries == two.queries <= 5 * (len(train_plan.ASSETS) + 2) + 1


def test_the_instance_queries_the_plan_relies_on_keep_their_signatures() -> None:
    """`get_latest_storage_id_by_partition` is not marked public in Dagster: fail loudly if it changes."""
    import inspect

    params = list(inspect.signature(DagsterInstance.get_latest_storage_id_by_partition).parameters)
    assert params[:4] == ["self", "asset_key", "event_type", "partitions"]


def test_runs_cover_contiguous_ranges_of_the_registered_order_cut_at_the_policy_size() -> None:
    """A run covers a range of partition keys: a symbol registered in between (not being trained)
    splits the range, and the backfill policy's size cuts it."""
    from types import SimpleNamespace

    order = {s: i for i, s in enumerate(["A", "B", "X", "C", "D", "E"])}
    chunks = cli.Trainer._chunks(SimpleNamespace(order=order, max_per_run=2), ["A", "B", "C", "D", "E"])
    assert chunks == [["A", "B"], ["C", "D"], ["E"]]
