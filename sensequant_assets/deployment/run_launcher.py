"""A run launcher that starts each run as a fork of a worker that has already imported the code.

Configured in `deploy/dagster.yaml` (`run_launcher: module: sensequant_assets.deployment.run_launcher`,
`class: ForkingRunLauncher`). It behaves as Dagster's `DefaultRunLauncher` except that a run of a
code location it can load starts as a fork of a long-lived server (`run_forkserver`) instead of
a fresh Python process: run start-up falls from seconds to milliseconds, which is most of what a
batched backfill run or a sensor's one-partition run costs beyond its training. Whenever a fork is
not possible (the server cannot import the code, it is not answering) the run is launched the
default way, through the code server, with an engine event saying why.

Forks are only tried where the launcher can watch them: on Linux (a worker is known by its pid and
`/proc` start time; elsewhere it would look dead at once to run monitoring and could not be
terminated) and with Dagster's SQLite run storage (one host; with Postgres or another shared run
storage, other hosts' daemons monitor and terminate runs, and a pid of this host means nothing
there). Anywhere else every run is launched the default way, and the first says why.

Termination, run monitoring (`check_run_worker_health`) and crash reporting work on the child's
pid and start time, kept in the `sensequant/run_worker` run tag. This module only imports Dagster:
it is loaded by the daemon and the webserver.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from dagster import Field
from dagster._core.launcher import DefaultRunLauncher, LaunchRunContext
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClassData, serialize_value

from sensequant_assets.deployment.run_forkserver import process_start_time

RUN_WORKER_TAG = "sensequant/run_worker"  # "<pid>:<start time>" of a forked run worker
RETRY_AFTER_SECONDS = 300.0  # a code location whose fork server failed to start is not retried sooner


class ForkServerError(RuntimeError):
    """The fork server could not start a run (the caller falls back to the code server)."""


class ForkServer:
    """One `run_forkserver` process for one code location, spoken to over its stdin and stdout."""

    def __init__(self, executable: str, serialized_origin: str, start_timeout: float) -> None:
        began = time.monotonic()
        self.proc = subprocess.Popen(
            [executable, "-m", "sensequant_assets.deployment.run_forkserver", serialized_origin],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            ready = self._read(start_timeout, "loading the code")
        except ForkServerError:
            self.close()
            raise
        if "ready" not in ready:
            self.close()
            raise ForkServerError(f"the fork server could not load the code: {ready.get('error', ready)}")
        self.start_seconds = time.monotonic() - began

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self, timeout: float, doing: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            state = "exited" if self.proc.poll() is not None else f"did not answer within {timeout:.0f} s"
            raise ForkServerError(f"the fork server (pid {self.proc.pid}) {state} while {doing}")
        return json.loads(line)

    def fork(self, run_args: str, timeout: float = 60.0) -> dict[str, Any]:
        """Ask for a child running `run_args`; the reply holds its pid and start time, or `stale`."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"run_args": run_args}).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise ForkServerError(f"the fork server (pid {self.proc.pid}) is gone: {exc}") from exc
        return self._read(timeout, "forking a run")

    def close(self) -> None:
        """Stop taking runs; the server exits once the runs it started have finished."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):  # a server that died leaves a broken pipe
                self.proc.stdin.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def worker_pid(tag: str | None) -> int | None:
    """The pid named by a `RUN_WORKER_TAG` value while that very process is alive, else None."""
    if not tag:
        return None
    pid, _, start = tag.partition(":")
    if not pid.isdigit():
        return None
    return int(pid) if process_start_time(int(pid)) == start else None


class ForkingRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` whose runs start as forks of a pre-imported worker (see the module doc)."""

    def __init__(
        self, inst_data: ConfigurableClassData | None = None, enabled: bool = True, start_timeout: float = 300
    ) -> None:
        super().__init__(inst_data=inst_data)
        self.enabled = enabled
        self.start_timeout = start_timeout
        self._servers: dict[str, ForkServer] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # origin -> (when, why) of a failed start
        self._told: set[str] = set()  # reasons not to fork at all, each reported on one run
        self._lock = threading.Lock()

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "enabled": Field(bool, is_required=False, default_value=True, description="fork runs at all"),
            "start_timeout": Field(
                float,
                is_required=False,
                default_value=300.0,
                description="seconds the fork server may take to import the code",
            ),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> ForkingRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def cannot_fork(self) -> str | None:
        """Why no run of this instance may be forked here, or None."""
        if not sys.platform.startswith("linux"):
            return (
                f"runs start as forks only on Linux, where their worker processes can be watched "
                f"through /proc; this is {sys.platform}"
            )
        if not hasattr(os, "fork"):
            return "this Python has no os.fork"
        storage = self._instance.run_storage
        if not isinstance(storage, SqliteRunStorage):
            return (
                f"runs start as forks only with Dagster's SQLite run storage; this instance's is "
                f"{type(storage).__name__}, whose runs other hosts may monitor, where this host's "
                "process ids mean nothing"
            )
        return None

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        reason = self.cannot_fork() if self.enabled else None
        if reason is not None:
            with self._lock:
                first = reason not in self._told
                self._told.add(reason)
            if first:
                self._instance.report_engine_event(
                    f"Launching runs through the code server, not as forks of a preloaded worker: {reason}.",
                    run,
                    cls=self.__class__,
                )
        elif self.enabled and run.job_code_origin is not None:
            try:
                pid, start = self._fork(run)
            except (ForkServerError, OSError, ValueError) as exc:
                self._instance.report_engine_event(
                    f"Could not start the run in a preloaded worker ({exc}); launching it through the code "
                    "server instead.",
                    run,
                    cls=self.__class__,
                )
            else:
                self._instance.add_run_tags(run.run_id, {RUN_WORKER_TAG: f"{pid}:{start}"})
                self._run_ids.add(run.run_id)
                return
        super().launch_run(context)

    def _fork(self, run: DagsterRun) -> tuple[int, str]:
        origin = run.job_code_origin
        assert origin is not None
        run_args = serialize_value(
            ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        )
        key = serialize_value(origin.repository_origin)
        with self._lock:
            for _attempt in range(2):
                server = self._servers.get(key)
                if server is None or not server.alive:
                    server = self._start_server(key, origin.executable_path)
                    self._instance.report_engine_event(
                        f"Started a run-worker fork server (pid {server.proc.pid}) in "
                        f"{server.start_seconds:.1f} s; later runs of this code start as its forks.",
                        run,
                        cls=self.__class__,
                    )
                try:
                    reply = server.fork(run_args)
                except ForkServerError:
                    self._servers.pop(key).close()
                    raise
                if "pid" in reply:  # forked: never launch this run again, whatever else the reply says
                    return int(reply["pid"]), str(reply.get("start"))
                if "stale" not in reply:
                    break
                # The code changed since the server imported it: replace the server and retry once.
                self._servers.pop(key).close()
            raise ForkServerError(f"the fork server did not fork: {reply}")

    def _start_server(self, key: str, executable: str) -> ForkServer:
        """A new server for `key`; a start that failed is not retried for RETRY_AFTER_SECONDS, so that
        code the server cannot import does not delay every run by a failed start."""
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed[0] < RETRY_AFTER_SECONDS:
            raise ForkServerError(f"{failed[1]} (not retried for {RETRY_AFTER_SECONDS:.0f} s)")
        try:
            server = ForkServer(executable, key, self.start_timeout)
        except (ForkServerError, OSError) as exc:
            self._failed[key] = (time.monotonic(), str(exc))
            raise
        self._failed.pop(key, None)
        self._servers[key] = server
        return server

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or RUN_WORKER_TAG not in run.tags:
            return super().terminate(run_id)
        if run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid = worker_pid(run.tags[RUN_WORKER_TAG])
        if pid is None:
            self._instance.report_run_canceled(run, "The run worker process had already exited.")
            return False
        # What the code server does on cancel: an interrupt, turned into a clean cancellation.
        os.kill(pid, signal.SIGINT)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        tag = run.tags.get(RUN_WORKER_TAG)
        if tag is None:  # launched through the code server, which watches its own processes
            return CheckRunHealthResult(WorkerStatus.RUNNING, "launched through the code server")
        if worker_pid(tag) is None:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {tag} is gone")
        return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=tag)

    def dispose(self) -> None:
        with self._lock:
            for server in self._servers.values():
                server.close()
            self._servers.clear()
        super().dispose()
