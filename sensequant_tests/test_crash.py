"""kill -9 of real processes: run workers at chosen points of a commit, the daemon, the code server.

Everything runs as in `make run`: a code server process (`dagster api grpc`), runs launched through
the GraphQL mutations the UI sends and started by `ForkingRunLauncher` as forks of its worker, a
real `dagster-daemon` process against the deployment's `dagster.yaml`. The code location is the
project's, loaded from a small file written here that adds pause points (see `LOCATION`); it is
imported only by the code server and the run workers, never by pytest. A run reaching its armed
point writes a marker with its pid and waits: the test then SIGKILLs it, so a kill lands exactly
between two system calls of `ArtifactStore.write`.

What each kill leaves is asserted (and summarised in README's "Failure behaviour"): every partition
directory is one version per asset, each file matching `checksums.json`; the event log never
claims files that are not there (it can lag behind files a killed step committed); `.txn`
leftovers are recovered or removed by the next read or write; re-executing from failure, or the
restarted daemon, completes exactly what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import GrpcServerTarget
from dagster._grpc.client import DagsterGrpcClient
from dagster_graphql.test.utils import execute_dagster_graphql

from sensequant_assets.deployment.devserver import (
    DEPLOYMENT_ENV,
    INSTANCE_YAML,
    ROOT,
    free_port,
    write_instance_yaml,
)
from sensequant_assets.deployment.run_launcher import RUN_WORKER_TAG
from sensequant_assets.io_manager import (
    CHECKSUMS,
    LOCKS_DIR,
    TXN_DIR,
    ArtifactsResource,
    ArtifactStore,
    codec_for,
)
from sensequant_tests.daily_csv import write_daily

W1, W2, W3 = "2025-01-01", "2025-07-01", "2026-01-01"  # windows from SENSEQUANT_START_DATE=2025-01-01
END = {W1: "2025-06-30", W2: "2025-12-31", W3: "2026-06-30"}
LOCATION_NAME = "crashlab"
TEACHER_FILES = ("model.pkl", "metadata.json", "feature_importance.csv", "labels.csv.gz")
# Two teacher versions, told apart by their files; each window alone (lookback 0), to stay fast.
OLD, NEW = {"n_estimators": 10, "lookback_windows": 0}, {"n_estimators": 15, "lookback_windows": 0}

LOCATION = '''
"""test_crash's code location: the project's definitions plus pause points, armed by files.

`control/arm-<partition dir>.json` = {"point": P, "nth": n} pauses the n-th call at point P for that
directory in this process: "lock" (before taking its commit lock), "staging" (after a file of its
staging directory was written and fsynced), "renamed" (after the directory was renamed to its
backup in .txn, before the staging directory takes its place), "swapped" (after that second rename,
before the backup is removed). The process writes `control/paused-<dir>.json` ({"pid", "point"})
and waits for `control/release-<dir>`; the test SIGKILLs it instead.
"""

import fcntl
import json
import os
import time
from pathlib import Path

from sensequant_assets.definitions import defs  # noqa: F401

CONTROL = Path(__file__).resolve().with_name("control")
_rename, _fsync, _flock = os.rename, os.fsync, fcntl.flock
_counts = {}


def _reached(point, directory):
    arm = CONTROL / f"arm-{directory}.json"
    try:
        spec = json.loads(arm.read_text())
    except (OSError, ValueError):
        return
    if spec["point"] != point:
        return
    _counts[arm] = _counts.get(arm, 0) + 1
    if _counts[arm] != spec.get("nth", 1):
        return
    _rename(arm, CONTROL / f"used-{directory}.json")  # one pause per arming
    marker = CONTROL / f"paused-{directory}.json"
    marker.with_suffix(".tmp").write_text(json.dumps({"pid": os.getpid(), "point": point}))
    _rename(marker.with_suffix(".tmp"), marker)
    while not (CONTROL / f"release-{directory}").exists():
        time.sleep(0.05)


def rename(src, dst, *args, **kwargs):
    _rename(src, dst, *args, **kwargs)
    src, dst = Path(src), Path(dst)
    if dst.parent.name == ".txn" and dst.name.endswith(".old"):
        _reached("renamed", dst.name[: -len(".old")])
    elif src.parent.name == ".txn" and src.name.endswith(".staging"):
        _reached("swapped", src.name[: -len(".staging")])


def fsync(fd):
    _fsync(fd)
    try:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return
    for parent in path.parents:
        if parent.parent.name == ".txn" and parent.name.endswith(".staging"):
            _reached("staging", parent.name[: -len(".staging")])
            return


def flock(fh, operation):
    name = Path(getattr(fh, "name", ""))
    if operation == fcntl.LOCK_EX and name.parent.name == ".locks":
        _reached("lock", name.name[: -len(".lock")])
    return _flock(fh, operation)


os.rename, os.fsync, fcntl.flock = rename, fsync, flock
'''


# --- the lab: one code server for the module, instances per test ------------------------------


@dataclass
class Lab:
    root: Path
    data: Path
    artifacts: Path
    location: Path
    env: dict[str, str]
    port: int = 0
    server: subprocess.Popen | None = None
    started: list[subprocess.Popen] = field(default_factory=list)  # processes to end at teardown

    @property
    def control(self) -> Path:
        return self.location.parent / "control"

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.artifacts)

    def start_code_server(self, timeout: float = 120) -> None:
        """Start the code server (again on the same port, so the workspace stays the same)."""
        self.port = self.port or free_port()
        cmd = [sys.executable, "-m", "dagster", "api", "grpc", "-f", str(self.location)]
        cmd += ["-d", str(self.location.parent), "-p", str(self.port), "-h", "127.0.0.1"]
        cmd += ["--location-name", LOCATION_NAME, "--log-level", "warning"]
        log = (self.root / "code_server.log").open("ab")
        self.server = subprocess.Popen(
            cmd, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append(self.server)
        client = DagsterGrpcClient(port=self.port, host="127.0.0.1")
        _wait(lambda: _pings(client), timeout, "the code server", self.root / "code_server.log")
        (self.root / "workspace.yaml").write_text(
            f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {self.port}\n"
            f"      location_name: {LOCATION_NAME}\n"
        )

    def home(self, name: str, *, queued: bool, dequeue: bool = True) -> Path:
        """An instance directory with the deployment's dagster.yaml; without `queued`, runs launch at
        once (DefaultRunCoordinator: no daemon needed to dequeue them); without `dequeue`, the
        queue holds every run (max_concurrent_runs 0) until the file is written again."""
        text = INSTANCE_YAML.read_text()
        if not dequeue:
            assert "max_concurrent_runs: 2" in text
            text = text.replace("max_concurrent_runs: 2", "max_concurrent_runs: 0")
        if not queued:
            start, end = text.index("run_coordinator:"), text.index("# Runs start as forks")
            default = (
                "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
            )
            text = text[:start] + default + text[end:]
        home = self.root / name
        write_instance_yaml(home, text)
        return home

    def arm(self, directory: str, point: str, nth: int) -> None:
        (self.control / f"arm-{directory}.json").write_text(json.dumps({"point": point, "nth": nth}))

    def paused(self, directory: str, timeout: float = 120) -> dict:
        marker = self.control / f"paused-{directory}.json"
        _wait(marker.exists, timeout, f"a run pausing in {directory}")
        return json.loads(marker.read_text())

    def release_all(self) -> None:
        for marker in self.control.glob("paused-*.json"):
            (self.control / f"release-{marker.stem[len('paused-') :]}").touch()


def _pings(client: DagsterGrpcClient) -> bool:
    try:
        client.ping("crash")
        return True
    except Exception:
        return False


def _wait(condition: Callable[[], Any], timeout: float, what: str, log: Path | None = None, step=0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("crash")
    data, artifacts, location = root / "historical", root / "models", root / "location" / "crash_location.py"
    (location.parent / "control").mkdir(parents=True)
    location.write_text(LOCATION)
    (root / "universe.txt").write_text("")
    env = {
        "SENSEQUANT_DATA_SOURCE": "csv",
        "SENSEQUANT_DATA_DIR": str(data),
        "SENSEQUANT_ARTIFACTS_DIR": str(artifacts),
        "SENSEQUANT_START_DATE": "2025-01-01",  # three windows: W1, W2 with bars, W3 without
        "SENSEQUANT_UNIVERSE_FILE": str(root / "universe.txt"),
        "SENSEQUANT_SENSOR_INTERVAL_SECONDS": "3",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        **DEPLOYMENT_ENV,  # as `make run` sets them
    }
    with pytest.MonkeyPatch.context() as mp:
        # The run fork server inherits the environment of the process that launches (this one for
        # the GraphQL launches, the daemon for the others) and reads the settings when it loads.
        for name, value in env.items():
            mp.setenv(name, value)
        lab = Lab(root, data, artifacts, location, {**os.environ})
        try:
            lab.start_code_server()
            yield lab
        finally:
            lab.release_all()
            for proc in lab.started:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


# --- GraphQL, as the UI sends it ------------------------------------------------------------------

LAUNCH = """
mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}"""
REEXECUTE = """
mutation($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}"""
PARTITION_STATS = """
query($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    partitionStats { numMaterialized numFailed numMaterializing }
  }
}"""


def _graphql(context: WorkspaceProcessContext, query: str, variables: dict) -> dict:
    result = execute_dagster_graphql(context.create_request_context(), query, variables)
    assert not result.errors, result.errors
    return result.data


def _launched(data: dict, field_name: str) -> str:
    answer = data[field_name]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


def launch_range(context: WorkspaceProcessContext, first: str, last: str, teacher: dict) -> str:
    """A run of train_job over a partition range, as a batched backfill run is (range tags)."""
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    params = {
        "selector": {
            "repositoryLocationName": LOCATION_NAME,
            "repositoryName": "__repository__",
            "jobName": "train_job",
        },
        "runConfigData": {"ops": {"teacher": {"config": teacher}}},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    return _launched(_graphql(context, LAUNCH, {"params": params}), "launchPipelineExecution")


def reexecute_from_failure(context: WorkspaceProcessContext, run_id: str) -> str:
    params = {"parentRunId": run_id, "strategy": "FROM_FAILURE"}
    return _launched(_graphql(context, REEXECUTE, {"params": params}), "launchRunReexecution")


def finished(
    instance: DagsterInstance, run_ids: list[str], timeout: float = 180
) -> dict[str, DagsterRunStatus]:
    def statuses() -> dict[str, DagsterRunStatus] | None:
        runs = {r: instance.get_run_by_id(r) for r in run_ids}
        if all(run is not None and run.is_finished for run in runs.values()):
            return {r: run.status for r, run in runs.items()}
        return None

    return _wait(statuses, timeout, f"runs {run_ids} to finish")


def messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [e.message for e in instance.all_logs(run_id) if e.message]


def materialised_in(instance: DagsterInstance, run_id: str) -> set[tuple[str, str]]:
    """(asset, partition) of every materialisation a run recorded."""
    events = instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    out = set()
    for event in events:
        mat = event.asset_materialization
        out.add((mat.asset_key.to_user_string(), str(mat.partition)))
    return out


def latest_run(instance: DagsterInstance, asset: str, partition: str) -> str | None:
    """The run of the partition's newest materialisation: what the UI shows as its latest."""
    from dagster import AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return records[0].run_id if records else None


# --- the disk ----------------------------------------------------------------------------------


def dir_name(symbol: str, window: str) -> str:
    return f"{symbol}_{window}_to_{END[window]}"


def sums(lab: Lab, key: str) -> dict[str, str]:
    path = lab.store.partition_dir(key) / CHECKSUMS
    return json.loads(path.read_text()) if path.exists() else {}


def verify_whole(lab: Lab, key: str) -> dict[str, str]:
    """Read every asset a partition holds, each file checked against checksums.json (the store's
    reads recover a directory caught between the two renames of a swap first); return its sums."""
    store = lab.store
    store.read(key, codec_for("market_bars"), "market_bars")  # every partition has bars
    recorded, directory = sums(lab, key), store.partition_dir(key)
    for asset, marker in (
        ("market_bars", "bars.parquet"),
        ("teacher_model", "model.pkl"),
        ("teacher_labels", "labels.csv.gz"),
        ("student_model", "student/student_model.pkl"),
        ("student_evaluation", "evaluation/metrics.json"),
    ):
        if marker in recorded:
            store.read(key, codec_for(asset), asset)  # raises on any mismatch or missing file
    on_disk = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    assert on_disk == set(recorded) | {CHECKSUMS}, f"{key}: files not recorded, or recorded and gone"
    if "metadata.json" in recorded:
        assert json.loads((directory / "metadata.json").read_text())["partition_key"] == key
        model = hashlib.sha256((directory / "model.pkl").read_bytes()).hexdigest()
        assert json.loads((directory / "metadata.json").read_text())["model_sha256"] == model
    return sums(lab, key)


def teacher_version(now: dict[str, str], old: dict[str, str]) -> str:
    """Whether the teacher's four files are the `old` ones or all new: one commit, never a mix."""
    same = [now[f] == old[f] for f in TEACHER_FILES]
    mix = dict(zip(TEACHER_FILES, same, strict=True))
    assert all(same) or not any(same), f"teacher files of two versions: {mix}"
    return "old" if all(same) else "new"


def lineage(lab: Lab, key: str) -> tuple[str, str]:
    """(the teacher the partition's student learned from, the teacher in the directory): the
    student's metadata records the sha256 of its teacher's model."""
    directory = lab.store.partition_dir(key)
    student = json.loads((directory / "student" / "metadata.json").read_text())
    return student["teacher"]["model_sha256"], json.loads((directory / "metadata.json").read_text())[
        "model_sha256"
    ]


def partition_stats(ctx: WorkspaceProcessContext, asset: str) -> dict[str, int]:
    """What the asset's page shows: materialised, failed and in-progress partitions."""
    nodes = _graphql(ctx, PARTITION_STATS, {"keys": [{"path": [asset]}]})["assetNodes"]
    return nodes[0]["partitionStats"]


def leftovers(lab: Lab) -> list[str]:
    txn = lab.artifacts / TXN_DIR
    return sorted(p.name for p in txn.iterdir()) if txn.exists() else []


# --- 1. run workers killed at each point of a commit ----------------------------------------------

POINTS = {  # symbol: (point, nth): the n-th such call for that partition directory in the run
    "BETWEEN": ("lock", 2),  # W1's teacher committed, waiting for W2's lock (between partitions)
    "STAGING": ("staging", 2),  # W2's teacher commit: model.pkl staged, the other files not yet
    "RENAMED": ("renamed", 2),  # W2 moved to .txn/<dir>.old, the new directory not yet in place
    "SWAPPED": ("swapped", 2),  # W2 swapped, its backup not yet removed
}
# W2's teacher after the kill, and what .txn holds then (before any read or write recovers it).
EXPECTED = {
    "BETWEEN": ("old", []),
    "STAGING": ("old", [".staging"]),
    "RENAMED": ("old", [".old", ".staging"]),
    "SWAPPED": ("new", [".old"]),
}


@dataclass
class Launcher:
    """An instance whose runs launch at once (no daemon), and the UI's GraphQL on it."""

    instance: DagsterInstance
    ctx: WorkspaceProcessContext


@pytest.fixture(scope="module")
def launcher(lab: Lab) -> Iterator[Launcher]:
    home = lab.home("runs", queued=False)
    with (
        DagsterInstance.from_config(str(home)) as instance,
        WorkspaceProcessContext(
            instance, GrpcServerTarget("127.0.0.1", lab.port, None, LOCATION_NAME)
        ) as ctx,
    ):
        yield Launcher(instance, ctx)
        lab.release_all()  # a failed test may leave a run waiting; its fork server waits for it


def test_run_workers_killed_mid_commit_leave_whole_partitions_and_reexecution_completes_them(
    lab: Lab, launcher: Launcher
) -> None:
    instance, ctx = launcher.instance, launcher.ctx
    symbols = list(POINTS)
    for symbol in symbols:
        write_daily(lab.data, symbol, date(2024, 6, 3), date(2025, 12, 31))
    instance.add_dynamic_partitions("symbols", symbols)
    keys = [f"{s}|{w}" for s in symbols for w in (W1, W2)]

    # The previous version of every partition: one batched run, as a backfill makes.
    first = launch_range(ctx, f"{symbols[0]}|{W1}", f"{symbols[-1]}|{W2}", OLD)
    assert finished(instance, [first]) == {first: DagsterRunStatus.SUCCESS}
    old = {key: verify_whole(lab, key) for key in keys}

    # One run per symbol over W1 and W2, each paused at its point in W2's teacher commit.
    for symbol, (point, nth) in POINTS.items():
        lab.arm(dir_name(symbol, W2), point, nth)
    runs = {s: launch_range(ctx, f"{s}|{W1}", f"{s}|{W2}", NEW) for s in symbols}
    for symbol, run_id in runs.items():
        paused = lab.paused(dir_name(symbol, W2))
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.tags[RUN_WORKER_TAG].startswith(f"{paused['pid']}:")
        _kill(paused["pid"])
    statuses = finished(instance, list(runs.values()))

    report = {}
    for symbol, run_id in runs.items():
        w1, w2 = f"{symbol}|{W1}", f"{symbol}|{W2}"
        # The UI: the run failed, saying how; the fork server reported it.
        assert statuses[run_id] == DagsterRunStatus.FAILURE
        assert any("was killed by signal 9 before the run finished" in m for m in messages(instance, run_id))
        # On disk, before anything reads it.
        expected_version, expected_txn = EXPECTED[symbol]
        txn = [n for n in leftovers(lab) if n.startswith(dir_name(symbol, W2))]
        assert [n[len(dir_name(symbol, W2)) :] for n in txn] == expected_txn, txn
        present = lab.store.partition_dir(w2).is_dir()
        assert present == (symbol != "RENAMED")
        # Each partition whole: W1's teacher is this run's (committed before the kill), W2's
        # the one the point says; both with the previous run's student.
        now1, now2 = verify_whole(lab, w1), verify_whole(lab, w2)
        assert teacher_version(now1, old[w1]) == "new"
        assert teacher_version(now2, old[w2]) == expected_version
        for key, now in ((w1, now1), (w2, now2)):
            assert now["student/student_model.pkl"] == old[key]["student/student_model.pkl"]
        # So W1 holds this run's teacher beside the student of the previous one, which names the
        # teacher it learned from: the mismatch is visible on disk until the student is retrained.
        learned_from, teacher = lineage(lab, w1)
        assert learned_from != teacher
        # The event log: market_bars' batch of materialisations was written when its step
        # ended (DAGSTER_EVENT_BATCH_SIZE buffers only within one output's events); the teacher
        # step died in its output, so no teacher event: W1's newest teacher event is still the
        # previous run's although its files are this run's (the log lags, never leads).
        assert materialised_in(instance, run_id) == {("market_bars", w1), ("market_bars", w2)}
        assert latest_run(instance, "teacher_model", w1) == first
        report[symbol] = {"txn": txn, "w2_dir_present": present, "w2_teacher": expected_version}
    # A read recovered the RENAMED partition (verify_whole); .txn still holds what a write
    # removes: the half staging directories and the swapped backup.
    assert all(not n.startswith(dir_name("RENAMED", W2)) for n in leftovers(lab))

    # The UI: every partition a killed run planned and did not record is Failed (its latest
    # attempt), whatever its files; market_bars, recorded before the kill, is Materialized.
    for asset, materialised, failed in (
        ("market_bars", 8, 0),
        ("teacher_model", 0, 8),
        ("student_model", 0, 8),
    ):
        assert partition_stats(ctx, asset) == {
            "numMaterialized": materialised,
            "numFailed": failed,
            "numMaterializing": 0,
        }, asset

    # Re-execute each killed run from failure: only the steps that did not finish run again.
    again = {s: reexecute_from_failure(ctx, run_id) for s, run_id in runs.items()}
    assert set(finished(instance, list(again.values())).values()) == {DagsterRunStatus.SUCCESS}
    for symbol, run_id in again.items():
        steps = {e.step_key for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)}
        assert steps == {"teacher", "student_model", "student_evaluation"}
        for key in (f"{symbol}|{W1}", f"{symbol}|{W2}"):
            now = verify_whole(lab, key)
            assert teacher_version(now, old[key]) == "new"
            assert now["student/student_model.pkl"] != old[key]["student/student_model.pkl"]
            learned_from, teacher = lineage(lab, key)
            assert learned_from == teacher
            for asset in ("teacher_model", "teacher_labels", "student_model"):
                assert latest_run(instance, asset, key) == run_id
    for asset in ("teacher_model", "student_model"):
        assert partition_stats(ctx, asset) == {"numMaterialized": 8, "numFailed": 0, "numMaterializing": 0}
    assert leftovers(lab) == []
    for key in keys:  # one empty lock file per partition, kept and reused
        lock = lab.artifacts / LOCKS_DIR / f"{lab.store.partition_dir(key).name}.lock"
        assert lock.stat().st_size == 0
    print("after the kills:", json.dumps(report, indent=1))


def test_a_student_committed_after_another_runs_teacher_is_superseded_not_mixed(
    lab: Lab, launcher: Launcher
) -> None:
    """Two real runs on one partition: A has trained its teacher and student and waits to commit
    the student; B trains and commits everything meanwhile; then A goes on. A's student, learnt
    from A's teacher, must not land beside B's teacher (the directory would hold a student that
    does not belong to its teacher, and say so in its metadata). A run of that partition alone
    then fails its student step, saying why, so the event log never records a student it did not
    write (in a batch the partition is counted as superseded, test_io_manager.py)."""
    instance, ctx = launcher.instance, launcher.ctx
    bars_in_windows(lab, "RACE")
    instance.add_dynamic_partitions("symbols", ["RACE"])
    key, directory = f"RACE|{W1}", dir_name("RACE", W1)
    lab.arm(directory, "lock", 3)  # its commits: 1 the bars, 2 teacher and labels, 3 the student
    first = launch_range(ctx, key, key, OLD)
    lab.paused(directory)
    second = launch_range(ctx, key, key, NEW)
    assert finished(instance, [second]) == {second: DagsterRunStatus.SUCCESS}
    (lab.control / f"release-{directory}").touch()
    assert finished(instance, [first]) == {first: DagsterRunStatus.FAILURE}
    verify_whole(lab, key)
    learned_from, teacher = lineage(lab, key)
    assert learned_from == teacher
    [failure] = instance.all_logs(first, of_type=DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "student_model"
    assert (
        "another run committed its own teacher" in failure.dagster_event.step_failure_data.error.to_string()
    )
    for asset in ("teacher_model", "student_model"):  # what the UI shows as latest: B's, as on disk
        assert latest_run(instance, asset, key) == second


def _student_waiting_to_commit(location: str, teacher_sha: str, reached: Any, release: Any, out: Any) -> None:
    """Run A's student output for RACE|W1 in its own process, pausing just before its commit."""
    from dagster import build_output_context

    from sensequant_assets.artifacts import StudentArtifact
    from sensequant_assets.io_manager import PartitionDirIOManager
    from sensequant_assets.object_store import VersionedTree
    from sensequant_assets.partitions import symbol_window_partitions

    real_commit = VersionedTree.commit

    def commit(self: VersionedTree, *args: Any, **kwargs: Any) -> Any:
        reached.set()
        release.wait(60)
        return real_commit(self, *args, **kwargs)

    VersionedTree.commit = commit  # type: ignore[method-assign]
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("symbols", ["RACE"])
    io = PartitionDirIOManager.at(location)
    context = build_output_context(
        asset_key="student_model",
        partition_key=f"RACE|{W1}",
        asset_partitions_def=symbol_window_partitions,
        instance=instance,
    )
    student = StudentArtifact({"student": "A"}, {"auc": 0.6}, {"teacher": {"model_sha256": teacher_sha}})
    try:
        io.handle_output(context, student)
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}")
    else:
        out.put("written")


def test_a_student_committed_after_another_writers_teacher_on_s3_is_superseded_not_mixed(
    tmp_path: Path,
) -> None:
    """The twin of the test above on object storage (S3 on moto), with real processes: A's student
    waits to commit in its own process while B commits its teacher and labels; A's student must
    not land beside B's teacher, and its output fails saying why. (Writers killed with SIGKILL
    mid-commit on S3: test_object_store.py.)"""
    import multiprocessing

    import pandas as pd

    from sensequant_assets.artifacts import TeacherArtifact
    from sensequant_assets.io_manager import MissingArtifactError, open_store
    from sensequant_tests.object_storage import fresh_location

    location = fresh_location("s3", tmp_path)
    store, key = open_store(location), f"RACE|{W1}"

    def commit_teacher(tag: str, label: int) -> str:
        importance = pd.DataFrame({"feature": ["a"], "importance": [1.0], "rank": [1]})
        labels = pd.DataFrame({"ts": ["2025-01-02"], "label": [label], "teacher_proba": [0.5]})
        teacher = TeacherArtifact({"tag": tag}, {"tag": tag}, importance)
        written: dict[str, str] = {}
        store.write(
            key,
            codec_for("teacher_model"),
            teacher,
            together=[(codec_for("teacher_labels"), labels)],
            written=written,
        )
        return written["model.pkl"]

    teacher_a = commit_teacher("A", 0)
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    reached, release, out = ctx.Event(), ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_student_waiting_to_commit, args=(location, teacher_a, reached, release, out))
    child.start()
    try:
        assert reached.wait(60), "A's student never reached its commit"
        commit_teacher("B", 1)
        seqs = store.tree(key).seqs()
        release.set()
        outcome = out.get(timeout=60)
    finally:
        release.set()
        child.join(30)
        if child.is_alive():
            child.kill()
    assert outcome.startswith(
        "SupersededError: student_model RACE|2025-01-01: another run committed its own teacher"
    )
    assert store.tree(key).seqs() == seqs  # A's student wrote nothing
    assert store.read(key, codec_for("teacher_model"), "teacher_model").model == {"tag": "B"}
    assert store.read(key, codec_for("teacher_labels"), "teacher_labels")["label"].tolist() == [1]
    with pytest.raises(MissingArtifactError, match=r"student_model\.pkl"):
        store.read(key, codec_for("student_model"), "student_model")


# --- 2. the daemon and the code server killed: sensors' pending work and a backfill --------------

SENSORS = """
query {
  sensorsOrError(repositorySelector: {repositoryLocationName: "crashlab", repositoryName: "__repository__"}) {
    ... on Sensors { results { id name } }
  }
}"""
STOP_SENSOR = "mutation($id: String) { stopSensor(id: $id) { __typename } }"
KEPT_SENSORS = ("symbol_universe", "new_data")


class Daemon:
    """A `dagster-daemon run` process (scheduler, sensors, backfills, run queue, run monitoring)."""

    def __init__(self, lab: Lab, home: Path) -> None:
        self.lab, self.home, self.log = lab, home, home / "daemon.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Daemon:
        cmd = [str(Path(sys.executable).with_name("dagster-daemon")), "run"]
        cmd += ["-w", str(self.lab.root / "workspace.yaml")]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                env={**self.lab.env, "DAGSTER_HOME": str(self.home)},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.lab.started.append(self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL the daemon process alone: its run workers and their fork server live on, as
        they do when a daemon crashes."""
        assert self.proc is not None
        _kill(self.proc.pid)
        self.proc.wait(timeout=30)


def sensor_ticks(instance: DagsterInstance) -> dict[str, list]:
    """Each sensor's ticks, newest first, as the daemon stored them."""
    return {
        state.name: instance.get_ticks(state.instigator_origin_id, state.selector_id)
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    }


def bars_in_windows(
    lab: Lab, symbol: str, bump: float = 1.0, windows: tuple[str, ...] = ("H", W1, W2)
) -> None:
    """Daily bars, one price path per window (and one for the history before W1), so that a
    window's bars can be corrected alone. Each day file is put in place by a rename, as a feed
    writing atomically does (which new_data's one-stat token sees at once)."""
    spans = {"H": (date(2024, 6, 3), date(2024, 12, 31)), W1: (date(2025, 1, 1), date(2025, 6, 30))}
    spans[W2] = (date(2025, 7, 1), date(2025, 12, 31))
    scratch = lab.root / f"incoming-{symbol}"
    for window in windows:
        write_daily(scratch, symbol, *spans[window], bump=bump)
    folder = lab.data / symbol / "1day"
    folder.mkdir(parents=True, exist_ok=True)
    for day in sorted((scratch / symbol / "1day").iterdir()):
        os.replace(day, folder / day.name)


def test_daemon_and_code_server_killed_lose_no_pending_backfill_or_retraining(lab: Lab) -> None:
    home = lab.home("daemon", queued=True)  # the deployment's instance: run queue, run monitoring
    for symbol in ("FFF", "GGG"):
        bars_in_windows(lab, symbol)
    (lab.root / "universe.txt").write_text("FFF\nGGG\n")
    daemon = Daemon(lab, home)
    timings: dict[str, float] = {}
    began = time.monotonic()
    with (
        DagsterInstance.from_config(str(home)) as instance,
        WorkspaceProcessContext(
            instance, GrpcServerTarget("127.0.0.1", lab.port, None, LOCATION_NAME)
        ) as ctx,
    ):
        instance.add_dynamic_partitions("symbols", ["FFF"])
        for sensor in _graphql(ctx, SENSORS, {})["sensorsOrError"]["results"]:
            if sensor["name"] not in KEPT_SENSORS:  # their runs (briefings...) are not the subject
                _graphql(ctx, STOP_SENSOR, {"id": sensor["id"]})

        def history_backfills() -> list:
            return [
                b for b in instance.get_backfills() if b.tags.get("sensequant/trigger") == "symbol_universe"
            ]

        # (a) symbol_universe registers GGG; the daemon dies before its next tick.
        daemon.start()

        def registered_and_baselined() -> bool:
            ticks = sensor_ticks(instance)
            universe_done = any(t.status != TickStatus.STARTED for t in ticks.get("symbol_universe", []))
            baseline = any("baseline recorded" in (t.skip_reason or "") for t in ticks.get("new_data", []))
            return "GGG" in instance.get_dynamic_partitions("symbols") and universe_done and baseline

        _wait(registered_and_baselined, 120, "GGG registered and new_data's baseline", daemon.log, 0.05)
        daemon.kill()
        timings["registered"] = time.monotonic() - began
        assert history_backfills() == [], "the history was requested before the kill: not between ticks"

        # (b) FFF's first window is corrected while no daemon runs; the restarted daemon's ticks ask
        # for GGG's history and FFF's retraining, and it dies right after, before it launched the
        # retraining (its queue holds runs here: a daemon killed while launching one leaves it
        # STARTING until run monitoring fails it, see README).
        bars_in_windows(lab, "FFF", bump=1.01, windows=(W1,))
        lab.home("daemon", queued=True, dequeue=False)
        daemon.start()

        def retraining() -> list:
            tags = {"sensequant/trigger": "new_data", "dagster/partition": f"FFF|{W1}"}
            return list(instance.get_runs(RunsFilter(tags=tags)))

        _wait(lambda: history_backfills() and retraining(), 120, "the history backfill and the retraining")
        daemon.kill()
        timings["requested"] = time.monotonic() - began
        [backfill] = history_backfills()
        [correction] = retraining()
        at_kill = {"backfill": backfill.status.value, "retraining": correction.status.value}
        print("at the second kill:", at_kill)

        # (c, d) The restarted daemon launches the retraining and the backfill's first run, which
        # pauses between the two renames of GGG|W1's teacher commit; the code server and the daemon
        # are killed while it waits, then the run goes on without either.
        ggg1 = dir_name("GGG", W1)
        lab.arm(ggg1, "renamed", 1)
        lab.home("daemon", queued=True)
        daemon.start()
        paused = lab.paused(ggg1)
        timings["backfill run paused"] = time.monotonic() - began
        assert finished(instance, [correction.run_id]) == {correction.run_id: DagsterRunStatus.SUCCESS}
        [first_run] = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        assert first_run.tags[RUN_WORKER_TAG].startswith(f"{paused['pid']}:")
        assert lab.server is not None
        _kill(lab.server.pid)
        lab.server.wait(timeout=30)
        daemon.kill()
        on_disk = {"GGG W1 present": (lab.artifacts / ggg1).is_dir(), "txn": leftovers(lab)}
        print(
            "daemon and code server killed mid-backfill:",
            on_disk,
            instance.get_backfill(backfill.backfill_id).status,
        )
        (lab.control / f"release-{ggg1}").touch()
        assert finished(instance, [first_run.run_id]) == {first_run.run_id: DagsterRunStatus.SUCCESS}
        verify_whole(lab, f"GGG|{W1}")
        timings["run finished alone"] = time.monotonic() - began

        # A daemon started while the code server is still down cannot load the backfill's assets.
        # Dagster fails such a backfill for good unless DAGSTER_BACKFILL_RETRY_DEFINITION_CHANGED_ERROR
        # is set, as the deployment's environment does (devserver.DEPLOYMENT_ENV): then it waits.
        daemon.start()
        waiting = f"Backfill {backfill.backfill_id} was unable to continue"

        def evaluated() -> bool:
            status = instance.get_backfill(backfill.backfill_id).status
            return waiting in daemon.log.read_text() or status != BulkActionStatus.REQUESTED

        _wait(evaluated, 120, "the daemon to evaluate the backfill", daemon.log)
        assert instance.get_backfill(backfill.backfill_id).status == BulkActionStatus.REQUESTED
        daemon.kill()

        # With its code back, the restarted daemon finds the run done and completes the backfill: no
        # run twice.
        lab.start_code_server()
        daemon.start()
        done = (
            BulkActionStatus.COMPLETED_SUCCESS,
            BulkActionStatus.COMPLETED_FAILED,
            BulkActionStatus.FAILED,
        )
        status = _wait(
            lambda: (b := instance.get_backfill(backfill.backfill_id)) and b.status in done and b.status,
            120,
            "the backfill to complete",
            daemon.log,
        )
        timings["backfill completed"] = time.monotonic() - began
        daemon.kill()
        assert status == BulkActionStatus.COMPLETED_SUCCESS
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        assert [r.run_id for r in runs] == [first_run.run_id]
        for key in (f"GGG|{W1}", f"GGG|{W2}", f"FFF|{W1}"):
            now = verify_whole(lab, key)
            assert "student/student_model.pkl" in now
        assert len(history_backfills()) == 1 and len(retraining()) == 1
        assert leftovers(lab) == []
        print("timings:", {k: round(v, 1) for k, v in timings.items()})


# --- 3. a first tick whose cursor Dagster never committed -----------------------------------------


def test_a_first_tick_repeated_without_its_cursor_loses_no_new_symbol_or_correction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster applies a tick's effects (symbols registered) and then commits its cursor, in two
    writes: a daemon killed between them (the real daemon above was, once in a few runs) repeats
    the sensor's first tick with no cursor. Such a tick used to take everything as a baseline:
    GGG, registered by the lost tick, never got its history; a correction made meanwhile was
    recorded as the baseline and never retrained. Both resume from the newest stored state."""
    from dagster import build_sensor_context, instance_for_test

    from sensequant_assets.definitions import defs
    from sensequant_assets.resources import MarketDataResource
    from sensequant_assets.sensors import new_data, symbol_universe

    data = tmp_path / "historical"
    monkeypatch.setenv("SENSEQUANT_ARTIFACTS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("SENSEQUANT_SYMBOLS", "FFF,GGG")
    market = MarketDataResource(data_source="csv", data_dir=str(data))
    lab = Lab(tmp_path, data, tmp_path / "models", tmp_path / "unused.py", {})
    for symbol in ("FFF", "GGG"):
        bars_in_windows(lab, symbol)

    def tick(sensor, instance, **resources):
        resources.setdefault("artifacts", ArtifactsResource(location=str(tmp_path / "models")))
        context = build_sensor_context(instance=instance, cursor=None, definitions=defs, resources=resources)
        return sensor(context)

    with instance_for_test() as instance:
        instance.add_dynamic_partitions("symbols", ["FFF"])
        registering = tick(symbol_universe, instance)  # its cursor is lost with the daemon
        [request] = registering.dynamic_partitions_requests
        instance.add_dynamic_partitions("symbols", list(request.partition_keys))
        repeated = tick(symbol_universe, instance)
        [backfill] = repeated.run_requests
        assert "history of new symbols GGG" in backfill.tags["sensequant/reason"]

        assert tick(new_data, instance, market_data=market).run_requests == []  # the baseline
        bars_in_windows(lab, "FFF", bump=1.01, windows=(W1,))
        [retrain] = tick(new_data, instance, market_data=market).run_requests
        assert retrain.partition_key == f"FFF|{W1}"
        assert retrain.tags["sensequant/reason"] == f"FFF|{W1}: bars corrected"


def test_the_latest_state_is_the_one_written_last_even_when_it_was_stored_before(tmp_path: Path) -> None:
    """A state that comes back (a correction reverted, a symbol removed and added again) is not
    written again: it is stamped newest, or a tick without a cursor would resume from the other."""
    store = ArtifactStore(tmp_path)
    assert store.latest_state("new_data") is None
    for state in (b"A", b"B", b"A"):
        store.write_state("new_data", state)
        assert store.latest_state("new_data") == state


def test_a_tick_repeated_after_its_history_backfill_was_submitted_does_not_ask_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real daemon above, killed right after symbol_universe's tick that requested GGG's
    history (the backfill submitted, the cursor not yet committed), requested it again on restart:
    a backfill has no run key. The request now carries a key made of the generation of the state
    the tick started from, and the repeated tick finds the backfill; a symbol removed and
    registered again is a new generation, so its history is requested again."""
    from dagster import build_sensor_context, instance_for_test
    from dagster._core.execution.backfill import PartitionBackfill

    from sensequant_assets.definitions import defs
    from sensequant_assets.sensors import symbol_universe

    monkeypatch.setenv("SENSEQUANT_ARTIFACTS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("SENSEQUANT_SYMBOLS", "FFF,GGG")

    artifacts = ArtifactsResource(location=str(tmp_path / "models"))

    def tick(instance, cursor):
        context = build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources={"artifacts": artifacts}
        )
        return symbol_universe(context)

    def submit(instance, request, backfill_id):  # what the daemon does with the request
        instance.add_backfill(
            PartitionBackfill.from_asset_graph_subset(
                backfill_id=backfill_id,
                backfill_timestamp=time.time(),
                tags=request.tags,
                dynamic_partitions_store=instance,
                asset_graph_subset=request.asset_graph_subset,
                title=None,
                description=None,
                run_config=None,
            )
        )

    with instance_for_test() as instance:
        instance.add_dynamic_partitions("symbols", ["FFF"])
        registering = tick(instance, None)
        instance.add_dynamic_partitions("symbols", ["GGG"])
        [request] = tick(instance, registering.cursor).run_requests
        submit(instance, request, "history1")
        repeated = tick(instance, registering.cursor)  # the requesting tick's cursor was lost
        assert repeated.run_requests == []
        assert "already requested as backfill history1" in repeated.skip_reason.skip_message
        # GGG removed, then registered again: its history is requested again.
        instance.delete_dynamic_partition("symbols", "GGG")
        removed = tick(instance, repeated.cursor)
        instance.add_dynamic_partitions("symbols", ["GGG"])
        [again] = tick(instance, removed.cursor).run_requests
        assert again.tags["sensequant/request"] != request.tags["sensequant/request"]
