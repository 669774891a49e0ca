"""ForkingRunLauncher: runs start as forks of a pre-imported worker, on a real instance and code server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.launcher.base import WorkerStatus
from dagster._core.test_utils import create_run_for_test, instance_for_test, poll_for_finished_run
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import PythonFileTarget

from sensequant_assets.deployment import run_launcher
from sensequant_assets.deployment.run_forkserver import process_start_time
from sensequant_assets.deployment.run_launcher import (
    RUN_WORKER_TAG,
    ForkingRunLauncher,
    ForkServerError,
    worker_pid,
)

JOBS = """
import os, signal, time
from pathlib import Path
from dagster import Definitions, in_process_executor, job, op

VERSION = {version}
OUT = Path({out!r})

@op
def record(context):
    (OUT / f"{{context.run_id}}.txt").write_text(f"{{VERSION}} {{os.getpid()}} {{os.getppid()}}")

@op
def sleep_long(context):
    (OUT / f"{{context.run_id}}.sleeping").write_text(str(os.getpid()))
    time.sleep(120)

@op
def die():
    os.kill(os.getpid(), signal.SIGKILL)

@job(executor_def=in_process_executor)
def ok_job():
    record()

@job(executor_def=in_process_executor)
def sleepy_job():
    sleep_long()

@job(executor_def=in_process_executor)
def crash_job():
    die()

defs = Definitions(jobs=[ok_job, sleepy_job, crash_job])
"""
LAUNCHER = {"module": "sensequant_assets.deployment.run_launcher", "class": "ForkingRunLauncher"}


def write_jobs(path: Path, out: Path, version: int) -> None:
    path.write_text(JOBS.format(version=version, out=str(out)))
    # A fresh mtime even on file systems with coarse timestamps.
    stamp = time.time() + version
    os.utime(path, (stamp, stamp))


class Setup:
    def __init__(self, instance: DagsterInstance, context: WorkspaceProcessContext, out: Path) -> None:
        self.instance, self.context, self.out = instance, context, out

    @property
    def launcher(self) -> ForkingRunLauncher:
        launcher = self.instance.run_launcher
        assert isinstance(launcher, ForkingRunLauncher)
        return launcher

    def launch(self, job_name: str) -> str:
        workspace = self.context.create_request_context()
        repo = workspace.get_code_location("forkable").get_repository("__repository__")
        remote_job = repo.get_full_job(job_name)
        run = create_run_for_test(
            self.instance,
            job_name=job_name,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
        )
        self.instance.launch_run(run.run_id, workspace)
        return run.run_id

    def finish(self, run_id: str, timeout: float = 60) -> DagsterRunStatus:
        poll_for_finished_run(self.instance, run_id, timeout=timeout)
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        return run.status

    def recorded(self, run_id: str) -> tuple[int, int, int]:
        version, pid, parent = (self.out / f"{run_id}.txt").read_text().split()
        return int(version), int(pid), int(parent)

    def engine_messages(self, run_id: str) -> list[str]:
        return [e.message for e in self.instance.all_logs(run_id) if e.message]


@contextlib.contextmanager
def make_setup(
    tmp_path: Path, overrides: Mapping[str, object] | None = None, source: str | None = None
) -> Iterator[Setup]:
    out, jobs, home = tmp_path / "out", tmp_path / "jobs.py", tmp_path / "home"
    out.mkdir()
    home.mkdir()
    if source is None:
        write_jobs(jobs, out, version=1)
    else:
        jobs.write_text(source)
    overrides = {"run_launcher": LAUNCHER, "run_monitoring": {"enabled": False}, **(overrides or {})}
    with instance_for_test(overrides=overrides, temp_dir=str(home)) as instance:
        target = PythonFileTarget(
            python_file=str(jobs), attribute=None, working_directory=str(tmp_path), location_name="forkable"
        )
        with WorkspaceProcessContext(instance, target) as context:
            yield Setup(instance, context, out)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with make_setup(tmp_path) as made:
        yield made


def test_runs_start_as_forks_of_one_preloaded_server(setup: Setup) -> None:
    first, second = setup.launch("ok_job"), setup.launch("ok_job")
    assert setup.finish(first) == DagsterRunStatus.SUCCESS
    assert setup.finish(second) == DagsterRunStatus.SUCCESS
    (server,) = setup.launcher._servers.values()
    for run_id in (first, second):
        version, pid, parent = setup.recorded(run_id)
        assert (version, parent) == (1, server.proc.pid)  # a child of the fork server, not a fresh process
        tag = setup.instance.get_run_by_id(run_id).tags[RUN_WORKER_TAG]
        assert tag.startswith(f"{pid}:")
        assert f"Started process for run (pid: {pid})." in setup.engine_messages(run_id)
    messages = setup.engine_messages(first) + setup.engine_messages(second)
    assert sum("Started a run-worker fork server" in m for m in messages) == 1


def test_edited_code_gets_a_fresh_server_and_runs_the_new_version(setup: Setup, tmp_path: Path) -> None:
    before = setup.launch("ok_job")
    assert setup.finish(before) == DagsterRunStatus.SUCCESS
    write_jobs(tmp_path / "jobs.py", setup.out, version=2)
    after = setup.launch("ok_job")
    assert setup.finish(after) == DagsterRunStatus.SUCCESS
    old_version, _, old_server = setup.recorded(before)
    new_version, _, new_server = setup.recorded(after)
    assert (old_version, new_version) == (1, 2)
    assert new_server != old_server


def test_terminate_interrupts_the_forked_worker(setup: Setup) -> None:
    run_id = setup.launch("sleepy_job")
    marker = setup.out / f"{run_id}.sleeping"
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the sleepy run never started its step"
    run = setup.instance.get_run_by_id(run_id)
    assert setup.launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    assert setup.launcher.terminate(run_id)
    assert setup.finish(run_id) == DagsterRunStatus.CANCELED
    deadline = time.monotonic() + 30
    while worker_pid(run.tags[RUN_WORKER_TAG]) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_pid(run.tags[RUN_WORKER_TAG]) is None  # the worker exits, not left sleeping


def test_a_worker_killed_mid_run_fails_its_run_with_the_signal(setup: Setup) -> None:
    run_id = setup.launch("crash_job")
    assert setup.finish(run_id) == DagsterRunStatus.FAILURE
    assert any("was killed by signal 9 before the run finished" in m for m in setup.engine_messages(run_id))


def test_a_server_that_cannot_start_falls_back_to_the_code_server(setup: Setup, monkeypatch) -> None:
    starts: list[str] = []

    def broken(_self: object, executable: str, *_args: object) -> None:
        starts.append(executable)
        raise ForkServerError("the fork server could not load the code: ImportError: nope")

    monkeypatch.setattr(run_launcher.ForkServer, "__init__", broken)
    first, second = setup.launch("ok_job"), setup.launch("ok_job")
    for run_id in (first, second):
        assert setup.finish(run_id) == DagsterRunStatus.SUCCESS
        assert RUN_WORKER_TAG not in setup.instance.get_run_by_id(run_id).tags
        assert any(
            "Could not start the run in a preloaded worker" in m and "ImportError: nope" in m
            for m in setup.engine_messages(run_id)
        )
    # One failed start, not one per run: the second run went straight to the code server.
    assert len(starts) == 1
    assert any("not retried for 300 s" in m for m in setup.engine_messages(second))


def assert_launched_by_the_code_server(setup: Setup, why: str) -> None:
    """Two runs succeed without a fork server; only the first says why (once per reason, not per run)."""
    first, second = setup.launch("ok_job"), setup.launch("ok_job")
    for run_id in (first, second):
        assert setup.finish(run_id) == DagsterRunStatus.SUCCESS
        assert RUN_WORKER_TAG not in setup.instance.get_run_by_id(run_id).tags
    assert setup.launcher._servers == {}
    told = [m for m in setup.engine_messages(first) if "not as forks of a preloaded worker" in m]
    assert len(told) == 1 and why in told[0]
    assert not any("not as forks" in m for m in setup.engine_messages(second))


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_runs_are_not_forked_off_linux(setup: Setup, monkeypatch: pytest.MonkeyPatch, platform: str) -> None:
    """Elsewhere a forked worker cannot be found through /proc: run monitoring would fail it at once
    and terminate could not signal it."""
    monkeypatch.setattr(sys, "platform", platform)
    assert_launched_by_the_code_server(
        setup, f"only on Linux, where their worker processes can be watched through /proc; this is {platform}"
    )


def test_runs_are_not_forked_without_os_fork(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "fork")
    assert_launched_by_the_code_server(setup, "this Python has no os.fork")


def test_runs_are_not_forked_with_a_run_storage_other_hosts_share(tmp_path: Path) -> None:
    """With Postgres (or any run storage but Dagster's SQLite one) other hosts' daemons may monitor or
    terminate the runs, where this host's pids mean nothing. `LegacyRunStorage` stands in for it here:
    a run storage class that is not `SqliteRunStorage`, and that the code server's runs can use."""
    storage = {
        "module": "dagster._core.storage.legacy_storage",
        "class": "LegacyRunStorage",
        "config": {
            "module_name": "dagster._core.storage.sqlite_storage",
            "class_name": "DagsterSqliteStorage",
            "config_yaml": f"base_dir: {tmp_path / 'home'}\n",
        },
    }
    with make_setup(tmp_path, {"run_storage": storage}) as setup:
        assert type(setup.instance.run_storage).__name__ == "LegacyRunStorage"
        assert_launched_by_the_code_server(
            setup, "only with Dagster's SQLite run storage; this instance's is LegacyRunStorage"
        )


def test_worker_pid_names_a_live_process_only() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        tag = f"{proc.pid}:{process_start_time(proc.pid)}"
        assert worker_pid(tag) == proc.pid
        assert worker_pid(f"{proc.pid}:1") is None  # same pid, another process (pid reuse)
    finally:
        proc.kill()
        proc.wait()
    assert worker_pid(tag) is None
    assert worker_pid("not-a-pid") is None and worker_pid(None) is None


def test_a_worker_that_already_exited_still_has_its_start_time_read() -> None:
    """The fork server reads a child's start time before reaping it: a run that ends at once must still
    be reported as forked (with its start time), never as a failed fork that the launcher would retry."""
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while process_start_time(proc.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # exited, not yet reaped: a zombie
    try:
        assert process_start_time(proc.pid) is None
        assert process_start_time(proc.pid, alive_only=False) is not None
    finally:
        proc.wait()
    assert process_start_time(proc.pid, alive_only=False) is None


S3_JOBS = """
import os
from dagster import Definitions, in_process_executor, job, op
from sensequant_assets.io_manager import open_store

STORE = open_store(os.environ["FORK_TEST_LOCATION"])
STORE.latest_state("loaded")  # the fork server talks to the bucket before it forks (fsspec's loop runs)

@op
def commit(context):
    STORE.write_state(context.run_id, f"{os.getpid()} {os.getppid()}".encode())

@job(executor_def=in_process_executor)
def s3_job():
    commit()

defs = Definitions(jobs=[s3_job])
"""


def test_forked_runs_commit_to_an_s3_bucket_the_fork_server_already_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run` with SENSEQUANT_ARTIFACTS_DIR=s3://...: each run is a fork of a server whose code
    may have used the bucket (fsspec's event loop and connections); the forks must commit on their own."""
    from sensequant_assets.io_manager import open_store
    from sensequant_tests.object_storage import fresh_location

    location = fresh_location("s3", tmp_path)  # sets AWS_* for this process and the fork server
    monkeypatch.setenv("FORK_TEST_LOCATION", location)
    with make_setup(tmp_path, source=S3_JOBS) as setup:
        runs = [setup.launch("s3_job") for _ in range(2)]
        for run_id in runs:
            assert setup.finish(run_id) == DagsterRunStatus.SUCCESS, setup.engine_messages(run_id)
        (server,) = setup.launcher._servers.values()
        store = open_store(location)
        recorded = [(store.latest_state(run_id) or b"").decode().split() for run_id in runs]
    assert [parent for _, parent in recorded] == [str(server.proc.pid)] * 2  # forks of the server
    assert recorded[0][0] != recorded[1][0]  # two processes, each committed its own state
