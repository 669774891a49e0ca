"""Start and stop `dagster dev` reliably, for `make run`, the daemon tests and the benchmark.

A `dagster dev` started in the background of a non-interactive shell inherits SIGINT as ignored,
and Dagster maps SIGTERM onto its SIGINT handler, so neither would stop it. Run as a module, this
resets both signals and execs `dagster dev`; `DagsterDev` runs that in its own process group,
waits for the webserver, and stops the whole group with SIGINT, then SIGKILL after a bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]
INSTANCE_YAML = ROOT / "deploy" / "dagster.yaml"
# Environment defaults of the deployment (`make run`, the tests' and the benchmark's servers). With a batch
# size, Dagster hands the event storage a batched output's materialisations and a new run's planned events
# as one batch, which CachedEngineSqliteEventLogStorage writes in one transaction per file. Without the
# retry flag, a backfill the daemon evaluates while the code location is not loaded (its code server killed
# or restarting) is failed for good ("existed at storage-time, but no longer does"); with it, the backfill
# waits for the location (seen with bench/crash.py, tested in test_crash.py).
DEPLOYMENT_ENV = {"DAGSTER_EVENT_BATCH_SIZE": "1000", "DAGSTER_BACKFILL_RETRY_DEFINITION_CHANGED_ERROR": "1"}
HOME_PLACEHOLDER = "@DAGSTER_HOME@"  # stands for the instance's own directory in INSTANCE_YAML


def write_instance_yaml(home: Path | str, text: str | None = None) -> Path:
    """Write `text` (default: deploy/dagster.yaml) as `home`'s dagster.yaml, naming `home` where it says
    @DAGSTER_HOME@ (the event log's directory must be explicit; see event_storage.py)."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    source = INSTANCE_YAML.read_text() if text is None else text
    target = home / "dagster.yaml"
    target.write_text(source.replace(HOME_PLACEHOLDER, str(home)))
    return target


# Modules that moved into sensequant_assets/deployment/ (2026-12-02); an older instance names the old ones.
MOVED_MODULES = {
    f"sensequant_assets.{name}": f"sensequant_assets.deployment.{name}"
    for name in ("run_launcher", "event_storage")
}


def rename_moved_modules(home: Path | str) -> bool:
    """Rewrite the old module paths in `home`'s dagster.yaml (a `sensequant train` instance from before the
    move would otherwise fail to load); True if the file changed. Only exact `module:` lines are touched."""
    target = Path(home) / "dagster.yaml"
    try:
        text = target.read_text()
    except FileNotFoundError:
        return False
    renamed = text
    for old, new in MOVED_MODULES.items():
        renamed = re.sub(rf"(?m)^(\s*module:\s*){re.escape(old)}\s*$", rf"\g<1>{new}", renamed)
    if renamed == text:
        return False
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(renamed)
    os.replace(tmp, target)
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDev:
    """A `dagster dev` (webserver + daemon) on a given DAGSTER_HOME, as a context manager."""

    def __init__(
        self,
        dagster_home: Path,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        log: Path | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.home = Path(dagster_home)
        self.port = port or free_port()
        self.env = {**DEPLOYMENT_ENV, **os.environ, **(env or {}), "DAGSTER_HOME": str(self.home)}
        self.env.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
        self.log = log or self.home / "dagster_dev.log"
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> DagsterDev:
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "sensequant_assets.deployment.devserver",
            "-w",
            str(self.cwd / "workspace.yaml"),
        ]
        cmd += ["-p", str(self.port), "-h", "127.0.0.1"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.proc.returncode}; see {self.log}")
            try:
                self.graphql("{ version }")
                return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"dagster dev did not answer on {self.url} within {timeout:.0f}s; see {self.log}")

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read())
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # Children (daemon, webserver, run workers) share the group; make sure none outlives us.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    def __enter__(self) -> DagsterDev:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main() -> None:
    """Exec `dagster dev` with SIGINT/SIGTERM restored to their defaults and the deployment's environment
    defaults (DEPLOYMENT_ENV, unless already set); arguments are passed on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    dagster = Path(sys.executable).with_name("dagster")
    for name, value in DEPLOYMENT_ENV.items():
        os.environ.setdefault(name, value)
    if home := os.environ.get("DAGSTER_HOME"):
        rename_moved_modules(home)
    os.execv(str(dagster), [str(dagster), "dev", *sys.argv[1:]])


if __name__ == "__main__":
    main()
