"""Dagster's own distributed deployment, on this machine (issue 15, deploy/scaleout/).

The parts a multi-machine deployment runs, each as its own process exactly as the README's "Running on
more than one machine" starts them: a code server (`dagster code-server start`), the daemon
(`dagster-daemon run`) and the webserver (`dagster-webserver`) on a workspace that points at the code
server, and two Celery workers (`dagster-celery worker start`, solo pool), all on one PostgreSQL
database (runs, events, schedules), one RabbitMQ broker and one S3 bucket for the artifacts (moto's
server on 127.0.0.1, started by the test as a process of its own: MinIO or S3 in production). A backfill
of 2 symbols x 2 windows of the training assets is launched through the webserver as the UI does; the
sensors follow with the evaluations; the briefing job runs; students are promoted with the registry and
rolled back by a run on a worker, all in the bucket.

It needs PostgreSQL on 127.0.0.1:5432, RabbitMQ on 127.0.0.1:5672 and the `scaleout` extra
(dagster-postgres, dagster-celery) and the dev extra's moto and s3fs; the scaleout extra pins its own
dagster release and so lives in its own virtual
environment: `make test-scaleout` builds `.venv-scaleout` and runs this file there (`.ci/run` does).
Anything missing skips it, saying what.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, EventRecordsFilter

from sensequant_assets import registry
from sensequant_assets.deployment.devserver import ROOT, free_port
from sensequant_assets.io_manager import codec_for, open_store

# Not SENSEQUANT_*: conftest clears those. The server's maintenance database; the test makes its own.
POSTGRES = os.environ.get("SCALEOUT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER = os.environ.get("SCALEOUT_TEST_CELERY_BROKER", "pyamqp://guest:guest@127.0.0.1:5672//")
SYMBOLS = ["RELIANCE", "TCS"]
W1, W2 = "2025-07-01", "2026-01-01"  # SENSEQUANT_START_DATE=2025-07-01: the two complete windows
TRAINING = ["market_bars", "teacher_model", "teacher_labels", "student_model"]
WORKERS = ("worker1", "worker2")
TIMEOUT = 420.0

pytestmark = pytest.mark.scaleout


def _unreachable(url: str, default_port: int) -> str | None:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"{host}:{port} ({exc})"


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards. The test is skipped (one item, so that
    `make test-scaleout` exits 0) where the extra or a service is missing, saying which."""
    extra = "the scaleout extra is not installed: `make test-scaleout` runs this file in .venv-scaleout"
    pytest.importorskip("dagster_postgres", reason=extra)
    pytest.importorskip("dagster_celery", reason=extra)
    pytest.importorskip("moto.server", reason="moto[server] (the dev extra) serves the test's S3 bucket")
    pytest.importorskip("s3fs", reason="s3fs (the dev extra, or the s3 extra) reaches the S3 bucket")
    for url, port, what in ((POSTGRES, 5432, "PostgreSQL"), (BROKER, 5672, "the Celery broker (RabbitMQ)")):
        if (problem := _unreachable(url, port)) is not None:
            pytest.skip(
                f"{what} is not reachable at {problem} (SCALEOUT_TEST_POSTGRES_URL, ..._CELERY_BROKER)"
            )
    import psycopg2

    try:
        admin = psycopg2.connect(POSTGRES)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"cannot log in to PostgreSQL at {POSTGRES} (SCALEOUT_TEST_POSTGRES_URL): {exc}")
    name = f"sensequant_scaleout_{uuid.uuid4().hex[:10]}"
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlparse(POSTGRES)._replace(path=f"/{name}").geturl()  # psycopg2's form (no driver name)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class Deployment:
    """The processes of the deployment, each in its own process group, logs under `logs`."""

    def __init__(self, tmp: Path, database: str) -> None:
        self.home, self.logs = tmp / "home", tmp / "logs"
        self.s3_port = free_port()
        self.bucket = f"sensequant-{uuid.uuid4().hex[:8]}"
        self.artifacts = f"s3://{self.bucket}/artifacts"
        for path in (self.home, self.logs):
            path.mkdir(parents=True)
        (self.home / "dagster.yaml").write_text((ROOT / "deploy/scaleout/dagster.yaml").read_text())
        self.code_port, self.web_port = free_port(), free_port()
        self.workspace = tmp / "workspace.yaml"
        self.workspace.write_text(
            "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
            f"      port: {self.code_port}\n      location_name: sensequant\n"
        )
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            # SQLAlchemy 2.1 takes a plain postgresql:// URL for psycopg 3; dagster-postgres uses psycopg2
            "DAGSTER_POSTGRES_URL": database.replace("postgresql://", "postgresql+psycopg2://", 1),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "PYTHONPATH": str(ROOT),
            # as in an activated environment: `dagster-celery worker start` runs `celery` from the PATH
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "SENSEQUANT_DATA_SOURCE": "synthetic",
            "SENSEQUANT_ARTIFACTS_DIR": self.artifacts,
            # every process reaches the bucket through these (s3fs reads the AWS_* environment)
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "AWS_ACCESS_KEY_ID": "scaleout",
            "AWS_SECRET_ACCESS_KEY": "scaleout",
            "AWS_DEFAULT_REGION": "us-east-1",
            "SENSEQUANT_SYMBOLS": ",".join(SYMBOLS),
            "SENSEQUANT_START_DATE": W1,
            "SENSEQUANT_BACKFILL_NEW_SYMBOLS": "0",
            "SENSEQUANT_SENSOR_INTERVAL_SECONDS": "2",
            "SENSEQUANT_EXECUTOR": "celery",
            "SENSEQUANT_CELERY_BROKER": BROKER,
            "SENSEQUANT_CELERY_BACKEND": "rpc://",
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.database = database

    def start(self, name: str, argv: list[str]) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def tail(self) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-2500:]}"
            for path in sorted(self.logs.glob("*.log"))
        )

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode} waiting for {what}\n{self.tail()}")
            if value := condition():
                return value
            time.sleep(1.0)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{self.tail()}")

    def graphql(self, query: str, variables: dict) -> dict:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            pytest.fail(f"webserver answered {exc.code}: {exc.read().decode(errors='replace')[:3000]}")
        assert not payload.get("errors"), payload["errors"]
        return payload["data"]

    def location_loaded(self) -> bool:
        """The webserver answers and has loaded the code location from the code server."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/server_info", timeout=2):
                pass
        except OSError:
            return False
        entries = self.graphql(LOCATIONS, {})["workspaceOrError"]["locationEntries"]
        return any(
            (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation" for e in entries
        )

    def stop(self, *, keep: tuple[str, ...] = ()) -> None:
        """SIGTERM to every process group (but `keep`), then SIGKILL to every group: a group's leader
        may be gone while its children (`dagster-celery worker start` runs `celery`) still finish a step."""
        stopping = [proc for name, proc in self.processes.items() if name not in keep]
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for proc in stopping:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signum)
            deadline = time.monotonic() + 15
            for proc in stopping:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))

    def bucket_ready(self) -> bool:
        """The S3 server answers; the bucket is created once it does."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"])
        try:
            client.create_bucket(Bucket=self.bucket)
        except Exception:  # not listening yet
            return False
        return True

    def workers_ready(self) -> bool:
        """Both Celery workers connected to the broker (it shares tasks only among connected workers)."""
        return all(" ready." in (self.logs / f"{name}.log").read_text(errors="replace") for name in WORKERS)


def _command(text: str) -> list[str]:
    """`text` split on blanks (no argument here has one), its program from this environment's bin/."""
    program, *args = text.split()
    return [str(Path(sys.executable).with_name(program)), *args]


LOCATIONS = """
query { workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError { __typename } } } } }"""
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack }
  }
}"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message stack }
  }
}"""


def _materialised(instance: DagsterInstance, asset: str) -> set[str]:
    return set(instance.get_materialized_partitions(AssetKey(asset)))


def _celery_workers(instance: DagsterInstance) -> dict[str, set[str]]:
    """Worker name -> step keys it executed, from the engine events dagster-celery records."""
    records = instance.get_event_records(EventRecordsFilter(event_type=DagsterEventType.ENGINE_EVENT))
    ran: dict[str, set[str]] = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
        if "Celery worker" in metadata:
            ran.setdefault(str(metadata["Celery worker"].value), set()).add(str(event.step_key))
    return ran


def test_a_backfill_runs_on_two_celery_workers_with_postgres_storage(
    tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = Deployment(tmp_path, database)
    for name in ("DAGSTER_POSTGRES_URL", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, deployment.env[name])  # this process reads them too
    try:
        deployment.start("s3", _command(f"moto_server -H 127.0.0.1 -p {deployment.s3_port}"))
        deployment.wait(deployment.bucket_ready, "the S3 server", timeout=60)
        port, workspace, celery = (
            deployment.code_port,
            deployment.workspace,
            ROOT / "deploy/scaleout/celery.yaml",
        )
        deployment.start(
            "code_server",
            _command(
                "dagster code-server start -m sensequant_assets.definitions -a defs "
                f"-h 127.0.0.1 -p {port} --location-name sensequant"
            ),
        )
        for name in WORKERS:  # the solo pool: see deployment/executors.py
            deployment.start(
                name,
                _command(
                    f"dagster-celery worker start -A dagster_celery.app -n {name} -y {celery} -- -P solo"
                ),
            )
        deployment.start("daemon", _command(f"dagster-daemon run -w {workspace}"))
        deployment.start(
            "webserver", _command(f"dagster-webserver -w {workspace} -h 127.0.0.1 -p {deployment.web_port}")
        )
        deployment.wait(deployment.location_loaded, "the webserver and the code location", timeout=180)
        deployment.wait(deployment.workers_ready, "both Celery workers", timeout=120)
        with DagsterInstance.from_config(str(deployment.home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            instance.add_dynamic_partitions("symbols", SYMBOLS)
            keys = [f"{s}|{w}" for s in SYMBOLS for w in (W1, W2)]
            params = {
                "assetSelection": [{"path": [asset]} for asset in TRAINING],
                "partitionNames": keys,
                "fromFailure": False,
                "tags": [],
            }
            began = time.monotonic()
            launched = deployment.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched
            deployment.wait(
                lambda: all(set(keys) <= _materialised(instance, a) for a in TRAINING),
                "the training backfill",
            )
            trained = time.monotonic() - began
            # The follow_upstream sensor asks for the second window's evaluations as its students land.
            evaluated = {f"{s}|{W2}" for s in SYMBOLS}
            deployment.wait(
                lambda: evaluated <= _materialised(instance, "student_evaluation"), "the evaluations"
            )
            followed = time.monotonic() - began
            selector = {"repositoryLocationName": "sensequant", "repositoryName": "__repository__"}
            run = deployment.graphql(
                LAUNCH_RUN,
                {"params": {"selector": {**selector, "jobName": "briefing_job"}, "runConfigData": {}}},
            )["launchRun"]
            assert run["__typename"] == "LaunchRunSuccess", run
            run_id = run["run"]["runId"]
            deployment.wait(lambda: instance.get_run_by_id(run_id).is_finished, "the briefing run")
            briefed = time.monotonic() - began
            assert instance.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS, deployment.tail()
            # The registry in the deployment: two students promoted here, rolled back by a run of the
            # rollback job on a worker (the same store, read and written from the worker's process).
            for window in (W1, W2):
                registry.promote(
                    deployment.artifacts,
                    "RELIANCE",
                    f"RELIANCE|{window}",
                    "PROMOTE",
                    {},
                    reason="scale-out test",
                )
            config = {"ops": {"rollback_model": {"config": {"symbol": "RELIANCE"}}}}
            run = deployment.graphql(
                LAUNCH_RUN,
                {"params": {"selector": {**selector, "jobName": "rollback_job"}, "runConfigData": config}},
            )["launchRun"]
            assert run["__typename"] == "LaunchRunSuccess", run
            rollback_id = run["run"]["runId"]
            deployment.wait(lambda: instance.get_run_by_id(rollback_id).is_finished, "the rollback run")
            assert instance.get_run_by_id(rollback_id).status == DagsterRunStatus.SUCCESS, deployment.tail()
            workers = _celery_workers(instance)
            runs = instance.get_runs()
        import psycopg2

        with psycopg2.connect(database) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM runs")
            stored_runs = cursor.fetchone()[0]
            cursor.execute(
                "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            )
            stored_materialisations = cursor.fetchone()[0]
    finally:
        deployment.stop(keep=("s3",))  # the bucket is read below
    try:
        _check_the_bucket(deployment, keys, evaluated)
    finally:
        deployment.stop()
    # Steps ran on both workers, and runs and events are in PostgreSQL.
    names = {worker.split("@")[0] for worker in workers}
    assert names == set(WORKERS), workers
    # (the daemon may have started a run between the two counts: automation follows the briefing)
    assert stored_runs >= len(runs) >= 4 and stored_materialisations >= len(keys) * len(TRAINING)
    print(
        f"\ntraining backfill {trained:.1f} s, evaluations followed {followed:.1f} s, "
        f"briefing {briefed:.1f} s from the launch; {len(runs)} runs; steps per worker: "
        + ", ".join(f"{w}: {len(s)}" for w, s in sorted(workers.items()))
        + "".join(f"\n  {w}: {', '.join(sorted(s))}" for w, s in sorted(workers.items()))
    )


def _check_the_bucket(deployment: Deployment, keys: list[str], evaluated: set[str]) -> None:
    """Every partition whole in the bucket, the briefing there, and the rollback run's effect."""
    # Every partition whole in the bucket: its manifest lists every file, each object matches its
    # sha256, and each asset reads back.
    store = open_store(deployment.artifacts)
    for key in keys:
        tree = store.tree(key)
        version = tree.latest()
        assert version is not None, f"{key}: no manifest in {tree.root}"
        expected = {"bars.parquet", "model.pkl", "labels.csv.gz", "student/student_model.pkl"}
        assert expected <= set(version.files), (key, sorted(version.files))
        for rel in version.files:
            tree.read(version, rel)
        for asset in TRAINING:
            assert store.read(key, codec_for(asset), asset) is not None
    for key in evaluated:
        evaluation = store.read(key, codec_for("student_evaluation"), "student_evaluation")
        assert evaluation.metrics["evaluated_partition"] == key
    briefing = store.read_fixed(codec_for("promotion_briefing"), "promotion_briefing")
    assert {b["symbol"] for b in briefing.symbols} == set(SYMBOLS)
    # The rollback run put the first window's student back into production.
    assert registry.current(deployment.artifacts, "RELIANCE").partition_key == f"RELIANCE|{W1}"
