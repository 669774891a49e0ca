"""Backfill benchmark: a plain Python loop against a Dagster UI backfill, tuned and with defaults.

One invocation, on one machine, times three ways of computing `market_bars`, `teacher_model`,
`teacher_labels` and `student_model` for every partition of a synthetic universe (default 20
symbols x 8 half-year windows = 160 partitions):

- loop:     a serial Python loop over the partitions, in a fresh process, calling the project's own
            source, ml and artifact-store functions and writing the same files; no Dagster. Timed
            from the first partition to the last (imports excluded; the one-off point-in-time probe
            of the feature function included, as in every fresh Dagster process).
- backfill: a fresh `dagster dev` (webserver + daemon) on a temporary DAGSTER_HOME whose
            `dagster.yaml` is tuned for speed (`TUNED_DAGSTER_YAML`, or `--dagster-yaml FILE`),
            backfill launched through the webserver's GraphQL `launchPartitionBackfill` (the call
            the UI's "Launch backfill" makes), timed from that call until the last selected asset
            partition is materialised: the daemon's pickup, the run queue, run and step start-up
            and the work itself are all in; the server's own start-up is not.
- default:  the same backfill against another fresh `dagster dev` whose DAGSTER_HOME has no
            `dagster.yaml` (Dagster's defaults: QueuedRunCoordinator, 10 concurrent runs, 5 s
            dequeue interval) and with the project's batching switched off (`DEFAULT_MODE_ENV`):
            one run per partition, multiprocess executor.

The backfill daemon looks for new backfills every 30 s (fixed in Dagster), so the pickup depends on
when in that loop the backfill is launched. By default (`--launch-phase mid`) the launch is placed
half-way through the loop, using the daemon's heartbeats, so the pickup is the 15 s a user waits
on average; the measured pickup is printed with every repeat.

All modes run a snapshot of `sensequant_assets/` copied at the start (`--live`: the working tree),
so edits made while the benchmark runs change nothing. Before each launch every sensor (the
automation sensor included) is stopped through GraphQL, so that only the backfill starts runs
(`--keep-sensors` leaves them running); any other run is reported.

Every mode repeats `--repeats` times with fresh artifacts and a fresh DAGSTER_HOME; after every
repeat each partition directory is checked (every file present, checksums valid, the metadata
naming the right partition) and the deterministic files are compared with the loop's; a missing
file, a failed run, or a different answer stops the benchmark with exit status 1. The last line is

    backfill_ratio=<b/a> default_ratio=<c/a> partitions=<n> loop_s=<a> backfill_s=<b> default_s=<c>

(medians). Usage:

    .venv/bin/python bench/backfill.py                       # 20 x 8, 3 repeats, all modes
    .venv/bin/python bench/backfill.py --symbols 4 --windows 4 --repeats 1
    .venv/bin/python bench/backfill.py --modes loop,backfill --backfill-env SOME_SETTING=1
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
MODES = ("loop", "backfill", "default")
BACKFILL_ASSETS = ("market_bars", "teacher_model", "teacher_labels", "student_model")
WINDOW_MONTHS = 6
PARTITION_TZ = ZoneInfo("Asia/Kolkata")  # the window partitions' timezone
DAEMON_INTERVAL_S = 30.0  # Dagster's fixed backfill-daemon loop interval (expected pickup: half of it)

# Files every partition must hold after a teacher + student backfill.
REQUIRED_FILES = (
    "bars.parquet",
    "model.pkl",
    "metadata.json",
    "feature_importance.csv",
    "labels.csv.gz",
    "checksums.json",
    "student/student_model.pkl",
    "student/metrics.json",
    "student/metadata.json",
)
# Files that are a deterministic function of the inputs (no timestamps, no pickles): they must be
# byte-identical whichever way the partition was computed.
COMPARED_FILES = ("bars.parquet", "labels.csv.gz", "feature_importance.csv", "student/metrics.json")

# The instance configuration of the `backfill` mode: what the lead tunes. `{max_concurrent_runs}`
# is filled from `--max-concurrent-runs`.
TUNED_DAGSTER_YAML = """\
# Written by bench/backfill.py for the `backfill` mode.
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {max_concurrent_runs}
    dequeue_interval_seconds: 1
run_launcher:
  module: sensequant_assets.run_launcher
  class: ForkingRunLauncher
event_log_storage:
  module: sensequant_assets.event_storage
  class: CachedEngineSqliteEventLogStorage
  config:
    base_dir: "@DAGSTER_HOME@/history/runs"
run_monitoring:
  enabled: false
"""

# The `default` mode also switches off the project's own batching (single-run backfill policy,
# in-process executor) and the deployment's event batching, so it shows what Dagster does by default:
# one run per partition, each with the multiprocess executor. `--default-env NAME=VALUE` adds to or
# overrides this.
DEFAULT_MODE_ENV = {"SENSEQUANT_BATCH_BACKFILLS": "0", "DAGSTER_EVENT_BATCH_SIZE": "0"}

TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
BAD_RUN_STATUSES = ["FAILURE", "CANCELED", "CANCELING"]
BAD_BACKFILL_STATUSES = {"FAILED", "COMPLETED_FAILED", "CANCELED", "CANCELING", "FAILING"}
# Run events whose spacing shows where a run's time goes.
MILESTONES = {
    "RUN_ENQUEUED",
    "RUN_DEQUEUED",
    "RUN_STARTING",
    "RUN_START",
    "STEP_WORKER_STARTING",
    "STEP_WORKER_STARTED",
    "STEP_START",
    "STEP_SUCCESS",
    "STEP_FAILURE",
    "STEP_SKIPPED",
    "RUN_SUCCESS",
    "RUN_FAILURE",
}


class BenchError(RuntimeError):
    """The benchmark cannot give a valid figure: a failed run, a missing file, a wrong answer."""


# --- the universe ----------------------------------------------------------------------------


def add_months(d: date, months: int) -> date:
    years, month0 = divmod(d.month - 1 + months, 12)
    return date(d.year + years, month0 + 1, 1)


@dataclass(frozen=True)
class Universe:
    symbols: tuple[str, ...]
    windows: tuple[str, ...]
    start: date

    @property
    def keys(self) -> list[str]:
        return [f"{s}|{w}" for s in self.symbols for w in self.windows]

    def env(self) -> dict[str, str]:
        """Settings shared by the loop and both servers."""
        return {
            "SENSEQUANT_DATA_SOURCE": "synthetic",
            "SENSEQUANT_START_DATE": self.start.isoformat(),
            "SENSEQUANT_WINDOW_MONTHS": str(WINDOW_MONTHS),
            "SENSEQUANT_SYMBOLS": ",".join(self.symbols),
            # Nothing but the benchmark's backfill may start runs (a sensor backfilling newly
            # registered symbols would compete with it).
            "SENSEQUANT_BACKFILL_NEW_SYMBOLS": "0",
            "SENSEQUANT_UNIVERSE_FILE": "",
            "DAGSTER_DISABLE_TELEMETRY": "1",
        }


def make_universe(n_symbols: int, n_windows: int) -> Universe:
    """`n_symbols` synthetic symbols x the `n_windows` most recent complete windows.

    The start date is chosen so that exactly `n_windows` complete windows exist as partitions, so
    "all partitions" and "the benchmark's partitions" are the same set.
    """
    today = datetime.now(PARTITION_TZ).date()
    current = date(today.year, ((today.month - 1) // WINDOW_MONTHS) * WINDOW_MONTHS + 1, 1)
    latest = add_months(current, -WINDOW_MONTHS)  # the newest window that has ended
    start = add_months(latest, -WINDOW_MONTHS * (n_windows - 1))
    windows = tuple(add_months(start, WINDOW_MONTHS * k).isoformat() for k in range(n_windows))
    width = max(3, len(str(n_symbols)))
    symbols = tuple(f"SYM{i:0{width}d}" for i in range(1, n_symbols + 1))
    return Universe(symbols, windows, start)


# --- memory: the whole process tree of a server (or of the loop) -------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgid) for every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


def process_tree(root: int, pgid: int | None) -> list[int]:
    """`root`, its descendants, and every process of the group `pgid`."""
    table = _proc_table()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    stack = [root, *(pid for pid, (_, group) in table.items() if pgid is not None and group == pgid)]
    found: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in found or pid not in table:
            continue
        found.add(pid)
        stack.extend(children.get(pid, []))
    return sorted(found)


def _rss_pss(pid: int) -> tuple[int, int]:
    """Resident and proportional set size of one process, in bytes (0, 0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            rss = int(fh.read().split()[1]) * PAGE
        pss = 0
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
        return rss, pss
    except (OSError, ValueError, IndexError):
        return 0, 0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Which part of a deployment a process is, from its command line (first match wins).
PROCESS_KINDS = (
    # Run workers are the code server's multiprocessing children (`spawn_main`).
    ("run worker", ("execute_run", "spawn_main", "forkserver")),
    ("step worker", ("execute_step",)),
    ("webserver", ("dagster-webserver", "dagster_webserver")),
    ("daemon", ("dagster-daemon", "dagster._daemon", "_daemon")),
    ("code server", ("grpc", "code-server", "code_server")),
)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds one process has used so far (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _kind(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    for kind, needles in PROCESS_KINDS:
        if any(n in cmdline for n in needles):
            return kind
    return "other"


class MemorySampler:
    """Samples the summed RSS and PSS of a process tree in a thread; keeps the peaks.

    RSS summed over processes counts shared pages once per process (an upper bound); PSS shares
    them out, so its sum is the deployment's real footprint. It also keeps each process's CPU
    seconds since sampling began (a process that lives less than one interval is missed), so the
    benchmark can say which part of the deployment used the cores.
    """

    def __init__(self, root: int, pgid: int | None = None, interval: float = 0.25) -> None:
        self.root, self.pgid, self.interval = root, pgid, interval
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._kinds: dict[int, str] = {}
        self._started = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def sample(self) -> None:
        pids = process_tree(self.root, self.pgid)
        sizes = [_rss_pss(pid) for pid in pids]
        self.peak_rss = max(self.peak_rss, sum(r for r, _ in sizes))
        self.peak_pss = max(self.peak_pss, sum(p for _, p in sizes))
        self.peak_procs = max(self.peak_procs, len(pids))
        for pid in pids:
            cpu = _cpu_seconds(pid)
            if cpu is None:
                continue
            if pid not in self._kinds:
                self._kinds[pid] = _kind(pid)
                # A process already running at the first sample counts from there; a new one from 0.
                self._cpu_first[pid] = cpu if not self._started else 0.0
            self._cpu_last[pid] = cpu
        self._started = True

    def cpu_by_kind(self) -> dict[str, float]:
        """CPU seconds used while sampling, per kind of process, busiest first."""
        totals: dict[str, float] = defaultdict(float)
        for pid, last in self._cpu_last.items():
            totals[self._kinds[pid]] += last - self._cpu_first[pid]
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


MiB = 1024 * 1024


# --- results -----------------------------------------------------------------------------------


@dataclass
class Result:
    mode: str
    repeat: int
    seconds: float
    partitions: int
    peak_rss: int
    peak_pss: int
    peak_procs: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def per_partition(self) -> float:
        return self.seconds / self.partitions


# --- verification -----------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_artifacts(artifacts: Path, keys: Sequence[str], what: str) -> dict[str, dict[str, str]]:
    """Every partition directory complete and intact; returns key -> {file: sha256} of COMPARED_FILES."""
    from sensequant_assets.io_manager import ArtifactStore

    store = ArtifactStore(artifacts)
    problems: list[str] = []
    sums: dict[str, dict[str, str]] = {}
    for key in keys:
        directory = store.partition_dir(key)
        missing = [f for f in REQUIRED_FILES if not (directory / f).is_file()]
        if missing:
            problems.append(f"{directory.name}: missing {', '.join(missing)}")
            continue
        recorded = json.loads((directory / "checksums.json").read_text())
        for rel in REQUIRED_FILES:
            if rel == "checksums.json":
                continue
            if recorded.get(rel) != _sha256(directory / rel):
                problems.append(f"{directory.name}/{rel}: sha256 does not match checksums.json")
        for rel in ("metadata.json", "student/metadata.json"):
            named = json.loads((directory / rel).read_text()).get("partition_key")
            if named != key:
                problems.append(f"{directory.name}/{rel}: partition_key {named!r}, expected {key!r}")
        sums[key] = {rel: recorded.get(rel, "") for rel in COMPARED_FILES}
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise BenchError(f"{what}: {len(problems)} problem(s) in {artifacts}:\n  {shown}{more}")
    return sums


def compare_answers(reference: dict[str, dict[str, str]], got: dict[str, dict[str, str]], what: str) -> None:
    differ = [
        f"{key}: {rel}"
        for key in reference
        for rel in COMPARED_FILES
        if reference[key][rel] != got.get(key, {}).get(rel)
    ]
    if differ:
        shown = "\n  ".join(differ[:20])
        raise BenchError(
            f"{what}: {len(differ)} file(s) differ from the loop's (same inputs, same seeds):\n  {shown}"
        )


# --- (a) the plain loop -----------------------------------------------------------------------


def loop_worker(spec_path: str) -> None:
    """Runs in a fresh process: compute every partition serially, print one JSON line of timings."""
    began = time.perf_counter()
    spec = json.loads(Path(spec_path).read_text())

    from sensequant_assets.assets.partition_context import window_of
    from sensequant_assets.assets.student import StudentConfig, distil
    from sensequant_assets.assets.teacher import TeacherConfig, train_partition
    from sensequant_assets.io_manager import ArtifactStore, codec_for
    from sensequant_assets.ml.teacher import TooFewRowsError
    from sensequant_assets.resources import market_data_from_env
    from sensequant_assets.settings import forecast_horizon

    # The same source the assets get, with the values resolved (no EnvVar outside Dagster).
    market_data = market_data_from_env(plain=True)
    horizon = forecast_horizon()
    teacher_config, student_config = TeacherConfig(), StudentConfig()  # the run-config defaults
    store = ArtifactStore(Path(spec["artifacts"]))
    imported = time.perf_counter()

    for key in spec["keys"]:
        pw = window_of(key)
        # market_bars, then the assets' own per-partition functions for teacher and student
        bars = market_data.source_for(pw.symbol).bars(pw.symbol, pw.start, pw.end)
        if bars.empty:
            raise BenchError(f"{pw.label}: the data source has no bars in this window")
        store.write(key, codec_for("market_bars"), bars)
        try:
            teacher, labels = train_partition(pw, bars, teacher_config, market_data, horizon)
        except TooFewRowsError as exc:
            raise BenchError(str(exc)) from exc
        store.write(key, codec_for("teacher_model"), teacher)
        store.write(key, codec_for("teacher_labels"), labels)
        # The student reads the teacher as stored (with its model_sha256), as the asset does.
        stored = store.read(key, codec_for("teacher_model"), "teacher_model")
        student = distil(pw, labels, stored, student_config, horizon)
        store.write(key, codec_for("student_model"), student)

    done = time.perf_counter()
    print(
        json.dumps(
            {
                "seconds": done - imported,
                "import_seconds": imported - began,
                "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


def code_env(code: Path) -> dict[str, str]:
    """Make child processes import sensequant_assets from `code` (ahead of the editable install)."""
    paths = [str(code), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def snapshot_code(dest: Path) -> Path:
    """Copy the code location, so edits to the working tree during a long benchmark change nothing."""
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "sensequant_assets", dest / "sensequant_assets", ignore=ignore)
    for name in ("workspace.yaml", "pyproject.toml", "setup.cfg"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    return dest


def code_description(code: Path) -> str:
    def git(*argv: str) -> str:
        try:
            out = subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    changed = [line for line in git("status", "--porcelain", "--", "sensequant_assets").splitlines() if line]
    where = "the working tree" if code == ROOT else f"a snapshot of the working tree in {code}"
    head = git("rev-parse", "--short", "HEAD") or "?"
    return f"{where}; git {head}, {len(changed)} changed file(s) in sensequant_assets/"


def run_loop(universe: Universe, workdir: Path, repeat: int, code: Path) -> tuple[Result, Path]:
    artifacts = workdir / "artifacts"
    spec = workdir / "loop.json"
    workdir.mkdir(parents=True)
    spec.write_text(json.dumps({"artifacts": str(artifacts), "keys": universe.keys}))
    env = {**os.environ, **universe.env(), "SENSEQUANT_ARTIFACTS_DIR": str(artifacts), **code_env(code)}
    log = workdir / "loop.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--loop-worker", str(spec)],
            cwd=code,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
        try:
            with MemorySampler(proc.pid) as memory:
                out, _ = proc.communicate()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise BenchError(f"loop repeat {repeat}: the loop process exited with {proc.returncode}\n{tail}")
    timings = json.loads(out.decode().strip().splitlines()[-1])
    result = Result(
        "loop",
        repeat,
        timings["seconds"],
        len(universe.keys),
        max(memory.peak_rss, timings["maxrss"]),
        memory.peak_pss,
        memory.peak_procs,
        {"import_s": timings["import_seconds"]},
    )
    return result, artifacts


# --- (b), (c) a backfill through dagster dev ---------------------------------------------------

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on PythonError { stack }
  }
}"""

BACKFILL_HEARTBEAT = """
{ instance { daemonHealth { daemonStatus(daemonType: "BACKFILL") { lastHeartbeatTime } } } }"""

DAEMONS = """
{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"""

PROGRESS = """
query Progress($keys: [AssetKeyInput!], $bad: RunsFilter) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    partitionStats { numMaterialized numPartitions numFailed numMaterializing }
  }
  runsOrError(filter: $bad) { __typename ... on Runs { results { runId status } } }
}"""

# What the UI's asset page asks for its partitions tab (the per-partition status of a 2-D asset);
# `--status-query` times it on every poll while the backfill runs.
PARTITION_STATUS = """
query PartitionStatus($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetPartitionStatuses {
        __typename
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey
            secondaryDim {
              ... on DefaultPartitionStatuses {
                materializedPartitions failedPartitions materializingPartitions
              }
              ... on TimePartitionStatuses { ranges { status startKey endKey } }
            }
          }
        }
      }
    }
  }
}"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status creationTime startTime endTime tags { key value } } }
  }
}"""

RUN_EVENTS = """
query Events($runId: ID!, $cursor: String) {
  runOrError(runId: $runId) {
    ... on Run {
      eventConnection(afterCursor: $cursor, limit: 1000) {
        cursor hasMore
        events { __typename ... on MessageEvent { timestamp stepKey eventType message } }
      }
    }
  }
}"""

STEP_FAILURES = """
query Failures($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      eventConnection(limit: 5000) {
        events {
          ... on ExecutionStepFailureEvent { stepKey error { message } }
          ... on RunFailureEvent { message error { message } }
        }
      }
    }
  }
}"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions }
    ... on Error { message }
  }
}"""


WORKSPACE = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          ... on RepositoryLocation { repositories { name } }
          ... on PythonError { message }
        }
      }
    }
  }
}"""

SENSORS = """
query Sensors($repo: RepositorySelector!) {
  sensorsOrError(repositorySelector: $repo) {
    __typename
    ... on Sensors { results { name sensorType sensorState { id status } } }
  }
}"""

STOP_SENSOR = """
mutation Stop($id: String) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}"""


def stop_sensors(dev: Any) -> list[str]:
    """Stop every running sensor (automation included), so only the backfill starts runs."""
    stopped = []
    entries = dev.graphql(WORKSPACE)["workspaceOrError"]["locationEntries"]
    for entry in entries:
        location = entry["locationOrLoadError"] or {}
        if "repositories" not in location:
            raise BenchError(f"code location {entry['name']} did not load: {location.get('message')}")
        for repo in location["repositories"]:
            selector = {"repositoryLocationName": entry["name"], "repositoryName": repo["name"]}
            sensors = dev.graphql(SENSORS, {"repo": selector})["sensorsOrError"]
            for sensor in sensors.get("results", []):
                if sensor["sensorState"]["status"] != "RUNNING":
                    continue
                reply = dev.graphql(STOP_SENSOR, {"id": sensor["sensorState"]["id"]})["stopSensor"]
                if reply["__typename"] != "StopSensorMutationResult":
                    raise BenchError(f"could not stop sensor {sensor['name']}: {reply}")
                stopped.append(f"{sensor['name']} ({sensor['sensorType'].lower()})")
    return stopped


def wait_for_launch_phase(dev: Any, phase: str, rng: random.Random) -> float | None:
    """Sleep so the launch falls where `phase` says in the backfill daemon's 30 s loop.

    The daemon picks a new backfill up on its next iteration, so the pickup is however much of the
    30 s sleep is left. Right after start-up (`asap`) that is nearly all of it; a user launching at
    a random moment waits 15 s on average, which `mid` reproduces without `random`'s noise: the
    daemon's heartbeats are written as its iterations start, so they give the loop's phase.
    Returns the expected pickup in seconds (None when unknown).
    """
    if phase == "asap":
        return None
    if phase == "random":
        wait = rng.uniform(0, DAEMON_INTERVAL_S)
        time.sleep(wait)
        return None
    beat = dev.graphql(BACKFILL_HEARTBEAT)["instance"]["daemonHealth"]["daemonStatus"]["lastHeartbeatTime"]
    if beat is None:
        print("    (no backfill-daemon heartbeat yet: launching at once)", flush=True)
        return None
    since = (time.time() - beat) % DAEMON_INTERVAL_S
    time.sleep((DAEMON_INTERVAL_S / 2 - since) % DAEMON_INTERVAL_S)
    return DAEMON_INTERVAL_S / 2


def last_materialisation_query(assets: Sequence[str]) -> str:
    parts = [
        f'a{i}: assetOrError(assetKey: {{path: ["{name}"]}}) '
        "{ ... on Asset { assetMaterializations(limit: 1) { timestamp partition } } }"
        for i, name in enumerate(assets)
    ]
    return "{ " + "\n".join(parts) + " }"


def materialised_partitions(dev: Any, assets: Sequence[str], n: int) -> dict[str, set[str]]:
    """Each asset's distinct materialised partitions, from the event log (not the UI's cache)."""
    parts = [
        f'a{i}: assetOrError(assetKey: {{path: ["{name}"]}}) '
        f"{{ ... on Asset {{ assetMaterializations(limit: {4 * n}) {{ partition }} }} }}"
        for i, name in enumerate(assets)
    ]
    data = dev.graphql("{ " + "\n".join(parts) + " }", timeout=120)
    found = {}
    for i, name in enumerate(assets):
        found[name] = {m["partition"] for m in data[f"a{i}"]["assetMaterializations"]}
    return found


def register_symbols(home: Path, symbols: Sequence[str]) -> None:
    """Add the universe to the `symbols` dynamic partitions before the server starts."""
    from dagster import DagsterInstance

    from sensequant_assets.partitions import SYMBOLS_PARTITIONS_NAME

    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, list(symbols))


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, step: float = 0.5, log: Path | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
        time.sleep(step)


def backfill_runs(dev: Any, backfill_id: str | None = None) -> list[dict[str, Any]]:
    variables = (
        {"filter": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}} if backfill_id else {}
    )
    data = dev.graphql(RUNS, variables, timeout=120)["runsOrError"]
    if data["__typename"] != "Runs":
        raise BenchError(f"runs query failed: {data}")
    return data["results"]


def run_failure_messages(dev: Any, run_id: str) -> list[str]:
    try:
        events = dev.graphql(STEP_FAILURES, {"runId": run_id})["runOrError"]["eventConnection"]["events"]
    except Exception as exc:  # only for the error message
        return [f"(could not fetch its events: {exc})"]
    found = []
    for event in events:
        if "error" not in event:
            continue
        where = event.get("stepKey") or "run"
        error = (event["error"] or {}).get("message") or event.get("message") or ""
        found.append(f"{where}: {error.strip()[:800]}")
    return found


def run_milestones(dev: Any, run_id: str) -> list[tuple[float, str, str | None]]:
    """(time, event type, step) of one run's milestone events, in time order."""
    found: list[tuple[float, str, str | None]] = []
    cursor = None
    while True:
        conn = dev.graphql(RUN_EVENTS, {"runId": run_id, "cursor": cursor}, timeout=120)["runOrError"]
        conn = conn["eventConnection"]
        for event in conn["events"]:
            kind = event.get("eventType")
            if kind in MILESTONES:
                found.append((int(event["timestamp"]) / 1000, kind, event.get("stepKey")))
        if not conn["hasMore"]:
            return sorted(found, key=lambda e: e[0])
        cursor = conn["cursor"]


def time_breakdown(dev: Any, runs: Sequence[dict[str, Any]], sample: int) -> dict[str, Any]:
    """Where a run's time goes: mean seconds between consecutive milestones, over sampled runs."""
    if not runs or sample <= 0:
        return {}
    ordered = sorted(runs, key=lambda r: r["creationTime"])
    stride = max(1, len(ordered) // sample)
    chosen = ordered[::stride][:sample]
    segments: dict[str, list[float]] = defaultdict(list)
    for run in chosen:
        events = run_milestones(dev, run["runId"])
        for (t0, k0, s0), (t1, k1, s1) in itertools.pairwise(events):
            step = s1 or s0
            segments[f"{k0} -> {k1}" + (f" [{step}]" if step else "")].append(t1 - t0)
    return {
        "sampled_runs": len(chosen),
        "segments": {
            name: {"mean_s": statistics.fmean(v), "count": len(v)}
            for name, v in sorted(segments.items(), key=lambda kv: -statistics.fmean(kv[1]) * len(kv[1]))
        },
    }


def run_backfill(
    mode: str,
    universe: Universe,
    workdir: Path,
    repeat: int,
    args: argparse.Namespace,
) -> tuple[Result, Path]:
    from sensequant_assets.devserver import DagsterDev, write_instance_yaml

    home, artifacts = workdir / "dagster_home", workdir / "artifacts"
    home.mkdir(parents=True)
    if mode == "backfill":
        if args.dagster_yaml:
            write_instance_yaml(home, args.dagster_yaml.read_text())
        else:
            write_instance_yaml(home, TUNED_DAGSTER_YAML.format(max_concurrent_runs=args.max_concurrent_runs))
    register_symbols(home, universe.symbols)
    extra_env = (
        dict(args.backfill_env) if mode == "backfill" else {**DEFAULT_MODE_ENV, **dict(args.default_env)}
    )
    env = {**universe.env(), "SENSEQUANT_ARTIFACTS_DIR": str(artifacts), **extra_env}
    keys = universe.keys
    n = len(keys)
    asset_keys = [{"path": [a]} for a in BACKFILL_ASSETS]
    what = f"{mode} repeat {repeat}"

    dev = DagsterDev(home, env={**env, **code_env(args.code)}, cwd=args.code)
    try:
        t_start = time.monotonic()
        dev.start(timeout=args.server_timeout)

        def daemons_healthy() -> bool:
            data = dev.graphql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
            required = [d for d in data if d["required"]]
            return bool(required) and all(d["healthy"] for d in required)

        wait_for(daemons_healthy, args.server_timeout, "the daemons to report healthy", log=dev.log)
        stopped = [] if args.keep_sensors else stop_sensors(dev)
        early = backfill_runs(dev)
        if early:
            tags = [{t["key"]: t["value"] for t in r["tags"] if not t["key"].startswith(".")} for r in early]
            raise BenchError(
                f"{what}: {len(early)} run(s) started before the backfill was launched: {tags[:3]}"
            )
        startup_s = time.monotonic() - t_start
        params = {"assetSelection": asset_keys, "partitionNames": keys, "fromFailure": False, "tags": []}

        expected_pickup = wait_for_launch_phase(dev, args.launch_phase, random.Random(repeat))
        idle = MemorySampler(dev.proc.pid, os.getpgid(dev.proc.pid))
        idle.sample()
        status_latencies: list[float] = []
        stale_ui: dict[str, str] = {}
        polls = itertools.count(1)
        with MemorySampler(dev.proc.pid, os.getpgid(dev.proc.pid)) as memory:
            launched = time.time()
            reply = dev.graphql(LAUNCH, {"params": params}, timeout=120)["launchPartitionBackfill"]
            if reply["__typename"] != "LaunchBackfillSuccess":
                raise BenchError(f"{what}: launchPartitionBackfill failed: {reply}")
            backfill_id = reply["backfillId"]
            bad_filter = {
                "tags": [{"key": "dagster/backfill", "value": backfill_id}],
                "statuses": BAD_RUN_STATUSES,
            }

            def materialised() -> bool:
                if args.status_query:
                    began = time.perf_counter()
                    reply = dev.graphql(PARTITION_STATUS, {"key": {"path": ["student_model"]}}, timeout=120)
                    status_latencies.append(time.perf_counter() - began)
                    if "assetPartitionStatuses" not in (reply.get("assetNodeOrError") or {}):
                        raise BenchError(f"{what}: the partition status query failed: {reply}")
                data = dev.graphql(PROGRESS, {"keys": asset_keys, "bad": bad_filter}, timeout=120)
                bad = data["runsOrError"].get("results") or []
                if bad:
                    details = "\n".join(
                        f"  run {r['runId']} {r['status']}:\n    "
                        + "\n    ".join(run_failure_messages(dev, r["runId"]) or ["(no step failure)"])
                        for r in bad[:5]
                    )
                    raise BenchError(
                        f"{what}: {len(bad)} run(s) of the backfill failed (server log: {dev.log})\n{details}"
                    )
                done = True
                shown = {}
                for node in data["assetNodes"]:
                    stats, name = node["partitionStats"], "/".join(node["assetKey"]["path"])
                    if stats["numPartitions"] != n:
                        raise BenchError(f"{what}: {name} has {stats['numPartitions']} partitions, not {n}")
                    if stats["numFailed"]:
                        raise BenchError(f"{what}: {name} has {stats['numFailed']} failed partition(s)")
                    done = done and stats["numMaterialized"] == n
                    shown[name] = stats["numMaterialized"]
                if done and len(data["assetNodes"]) == len(BACKFILL_ASSETS):
                    return True
                return event_log_complete(shown)

            def event_log_complete(shown: dict[str, int]) -> bool:
                """Once the backfill has finished, trust the event log over the UI's partition counts.

                Seen in the default mode (160 runs, 10 at a time on SQLite): the UI kept showing
                157/160 teacher_model partitions although the event log held all 160 materialisations.
                """
                if next(polls) % 5:
                    return False  # every fifth poll: the backfill's status is one more query
                status = dev.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
                if status.get("status") not in ("COMPLETED_SUCCESS", "COMPLETED"):
                    return False
                stored = materialised_partitions(dev, BACKFILL_ASSETS, n)
                if all(len(stored[a]) == n for a in BACKFILL_ASSETS):
                    lagging = {a: c for a, c in shown.items() if c != n}
                    stale_ui.update({a: f"{c}/{n} shown, {n} in the event log" for a, c in lagging.items()})
                    return True
                return False

            wait_for(materialised, args.timeout, f"{what}: every partition materialised", args.poll, dev.log)
            observed = time.time()

        # Untimed from here: when exactly did the last materialisation land, and did every run succeed?
        last = dev.graphql(last_materialisation_query(BACKFILL_ASSETS))
        finished = max(int(v["assetMaterializations"][0]["timestamp"]) / 1000 for v in last.values())
        seconds = finished - launched

        def runs_terminal() -> list[dict[str, Any]] | None:
            runs = backfill_runs(dev, backfill_id)
            return runs if runs and all(r["status"] in TERMINAL_RUN_STATUSES for r in runs) else None

        runs = wait_for(runs_terminal, 300, f"{what}: the backfill's runs to finish", 1.0, dev.log)
        failed = [r for r in runs if r["status"] != "SUCCESS"]
        if failed:
            raise BenchError(f"{what}: {len(failed)} of {len(runs)} runs did not succeed: {failed[:5]}")
        status = dev.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if status.get("status") in BAD_BACKFILL_STATUSES or status["__typename"] != "PartitionBackfill":
            raise BenchError(f"{what}: backfill {backfill_id} is {status}")
        foreign = [r for r in backfill_runs(dev) if r["runId"] not in {x["runId"] for x in runs}]
        breakdown = time_breakdown(dev, runs, args.detail_runs)
    finally:
        dev.stop()

    first_run = min(r["creationTime"] for r in runs)
    run_spans = [r["endTime"] - r["startTime"] for r in runs if r["startTime"] and r["endTime"]]
    details = {
        "startup_s": startup_s,
        "observed_s": observed - launched,
        "runs": len(runs),
        "foreign_runs": len(foreign),
        "pickup_s": first_run - launched,
        "expected_pickup_s": expected_pickup,
        "last_run_created_s": max(r["creationTime"] for r in runs) - launched,
        "runs_done_s": max(r["endTime"] for r in runs) - launched,
        "run_span_median_s": statistics.median(run_spans) if run_spans else float("nan"),
        "run_seconds_total": sum(run_spans),
        "backfill_status": status.get("status"),
        "stopped_sensors": stopped,
        "idle_rss": idle.peak_rss,
        "idle_pss": idle.peak_pss,
        "idle_procs": idle.peak_procs,
        "breakdown": breakdown,
        "cpu_s": memory.cpu_by_kind(),
        "status_query_s": status_latencies,
        "stale_ui_stats": stale_ui,
    }
    result = Result(mode, repeat, seconds, n, memory.peak_rss, memory.peak_pss, memory.peak_procs, details)
    return result, artifacts


# --- driver ------------------------------------------------------------------------------------


def fmt_mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB"


def describe(result: Result) -> str:
    text = (
        f"[{result.mode} {result.repeat}] {result.seconds:.2f} s "
        f"({result.per_partition:.3f} s/partition), peak RSS {fmt_mib(result.peak_rss)}, "
        f"PSS {fmt_mib(result.peak_pss)}, {result.peak_procs} process(es)"
    )
    d = result.details
    if result.mode == "loop":
        return text + f"; imports {d['import_s']:.2f} s (not timed)"
    text += (
        f"\n    runs={d['runs']} pickup={d['pickup_s']:.1f}s"
        + (f" (launch phase aimed at {d['expected_pickup_s']:.0f}s)" if d["expected_pickup_s"] else "")
        + f" last_run_created={d['last_run_created_s']:.1f}s runs_done={d['runs_done_s']:.1f}s"
        f" run_span_median={d['run_span_median_s']:.1f}s run_seconds_total={d['run_seconds_total']:.1f}"
        f" server_startup={d['startup_s']:.1f}s (not timed) backfill_status={d['backfill_status']}"
    )
    text += (
        f"\n    idle deployment before the launch: RSS {fmt_mib(d['idle_rss'])}, "
        f"PSS {fmt_mib(d['idle_pss'])}, {d['idle_procs']} process(es)"
    )
    if d.get("stale_ui_stats"):
        text += (
            "\n    WARNING: the UI's partition counts lagged the event log after the backfill completed: "
            + "; ".join(f"{k} {v}" for k, v in d["stale_ui_stats"].items())
        )
    if d.get("status_query_s"):
        lat = d["status_query_s"]
        text += (
            f"\n    UI partition status query (student_model) while running: median {median(lat):.3f} s, "
            f"max {max(lat):.3f} s over {len(lat)} polls"
        )
    if d.get("cpu_s"):
        cpu = ", ".join(f"{kind} {secs:.1f}" for kind, secs in d["cpu_s"].items())
        text += f"\n    CPU seconds from launch to the last partition: {cpu}"
    if d["stopped_sensors"]:
        text += f"\n    sensors stopped before the launch: {', '.join(d['stopped_sensors'])}"
    if result.mode == "default" and d["runs"] != result.partitions:
        text += (
            f"\n    WARNING: {d['runs']} runs for {result.partitions} partitions: not Dagster's default "
            "of one run per partition (see DEFAULT_MODE_ENV / --default-env)"
        )
    if d["foreign_runs"]:
        text += f"\n    WARNING: {d['foreign_runs']} run(s) not started by the backfill ran meanwhile"
    segments = d["breakdown"].get("segments", {})
    if segments:
        text += f"\n    where a run's time goes (mean over {d['breakdown']['sampled_runs']} sampled runs):"
        for name, seg in list(segments.items())[:14]:
            text += f"\n      {seg['mean_s']:7.2f} s  x{seg['count']:<4d} {name}"
    return text


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    try:
        from importlib.metadata import version

        dagster = version("dagster")
    except Exception:
        dagster = "?"
    return (
        f"{os.cpu_count()} CPU(s) ({cpu}), {mem:.1f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, dagster {dagster}"
    )


def key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time a plain loop, a tuned Dagster backfill and a default one on a synthetic universe."
    )
    parser.add_argument("--symbols", type=int, default=20, help="synthetic symbols (default 20)")
    parser.add_argument("--windows", type=int, default=8, help="half-year windows per symbol (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each mode (default 3)")
    parser.add_argument(
        "--default-repeats",
        type=int,
        help="repeats of the default mode, the slowest by far (default: --repeats)",
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of loop,backfill,default"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument(
        "--timeout", type=float, help="seconds allowed per backfill (default: 60 per partition, at least 900)"
    )
    parser.add_argument(
        "--server-timeout", type=float, default=240, help="seconds for dagster dev to come up"
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=2.0,
        help="progress poll interval in seconds (default 2; the finish time is read from the last "
        "materialisation, so polling only costs the webserver CPU)",
    )
    parser.add_argument(
        "--max-concurrent-runs",
        type=int,
        default=os.cpu_count() or 2,
        help="the tuned dagster.yaml's run queue cap (default: the CPU count)",
    )
    parser.add_argument(
        "--dagster-yaml", type=Path, help="use this dagster.yaml for the backfill mode instead"
    )
    parser.add_argument(
        "--backfill-env",
        type=key_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the backfill mode's server (repeatable)",
    )
    parser.add_argument(
        "--default-env",
        type=key_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the default mode's server, on top of DEFAULT_MODE_ENV (which "
        "switches the project's batching off so the mode shows Dagster's defaults) (repeatable)",
    )
    parser.add_argument(
        "--detail-runs", type=int, default=20, help="runs sampled for the time breakdown (default 20)"
    )
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory (default: $TMPDIR)")
    parser.add_argument(
        "--launch-phase",
        choices=("mid", "asap", "random"),
        default="mid",
        help="when to launch within the backfill daemon's 30 s loop: mid (default; the pickup is the "
        "15 s a user waits on average), asap (right after start-up: nearly 30 s), random",
    )
    parser.add_argument(
        "--status-query",
        action="store_true",
        help="on every poll also time the UI's partition status query of student_model (the scale run)",
    )
    parser.add_argument(
        "--keep-sensors",
        action="store_true",
        help="leave the sensors (automation included) running during the backfills; by default they are "
        "stopped before the launch so that only the backfill starts runs",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="run the working tree itself instead of a snapshot of sensequant_assets/ taken at the start",
    )
    parser.add_argument("--loop-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        parser.error(f"--modes: unknown {unknown}; choose from {','.join(MODES)}")
    args.modes = [m for m in MODES if m in modes]
    if args.default_repeats is None:
        args.default_repeats = args.repeats
    for name in ("symbols", "windows", "repeats", "default_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.timeout is None:
        args.timeout = max(900.0, 60.0 * args.symbols * args.windows)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.loop_worker:
        loop_worker(args.loop_worker)
        return 0

    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)  # so that the servers are stopped on the way out

    universe = make_universe(args.symbols, args.windows)
    root = Path(tempfile.mkdtemp(prefix="sensequant-bench-", dir=args.workdir))
    args.code = ROOT if args.live else snapshot_code(root / "code")
    sys.path.insert(0, str(args.code))
    os.environ.update(universe.env())  # before sensequant_assets reads its settings at import
    from sensequant_assets.partitions import window_partitions

    expected = list(universe.windows)
    actual = window_partitions.get_partition_keys()
    if actual != expected:
        shutil.rmtree(root, ignore_errors=True)
        raise SystemExit(f"window partitions {actual} are not the expected {expected}")

    keys = universe.keys
    print(f"machine: {machine()}")
    print(f"code: {code_description(args.code)}")
    print(
        f"universe: {len(universe.symbols)} symbols x {len(universe.windows)} windows "
        f"of {WINDOW_MONTHS} months "
        f"({universe.windows[0]} .. {universe.windows[-1]}) = {len(keys)} partitions; "
        f"assets {', '.join(BACKFILL_ASSETS)}"
    )
    repeats = f"{args.repeats}" + (
        f" (default mode: {args.default_repeats})" if args.default_repeats != args.repeats else ""
    )
    print(f"modes: {', '.join(args.modes)}; repeats: {repeats}; work directory: {root}")
    if set(args.modes) - {"loop"}:
        sensors = "left running" if args.keep_sensors else "stopped before each launch"
        print(f"launch phase: {args.launch_phase}; sensors: {sensors}")
    if args.backfill_env and "backfill" in args.modes:
        print(f"backfill mode environment: {dict(args.backfill_env)}")
    if "default" in args.modes:
        print(f"default mode environment: {DEFAULT_MODE_ENV | dict(args.default_env)}; no dagster.yaml")
    if "backfill" in args.modes:
        source = args.dagster_yaml or "TUNED_DAGSTER_YAML"
        print(f"backfill mode dagster.yaml: {source} (max_concurrent_runs={args.max_concurrent_runs})")
    sys.stdout.flush()

    results: dict[str, list[Result]] = defaultdict(list)
    reference: dict[str, dict[str, str]] | None = None
    began = time.monotonic()
    ok = False
    try:
        for repeat in range(1, max(args.repeats, args.default_repeats) + 1):
            for mode in args.modes:
                if repeat > (args.default_repeats if mode == "default" else args.repeats):
                    continue
                workdir = root / f"{mode}-{repeat}"
                if mode == "loop":
                    result, artifacts = run_loop(universe, workdir, repeat, args.code)
                else:
                    result, artifacts = run_backfill(mode, universe, workdir, repeat, args)
                sums = verify_artifacts(artifacts, keys, f"{mode} repeat {repeat}")
                if reference is None and mode == "loop":
                    reference = sums
                elif reference is not None:
                    compare_answers(reference, sums, f"{mode} repeat {repeat}")
                results[mode].append(result)
                print(describe(result), flush=True)
                if not args.keep and not (mode == "loop" and repeat == 1):
                    shutil.rmtree(workdir, ignore_errors=True)
        ok = True
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        if ok and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"work directory kept: {root}", file=sys.stderr)
    if not ok:
        return 1

    n = len(keys)
    wall = time.monotonic() - began
    print(f"\nsummary (medians over the repeats; the benchmark took {wall:.0f} s of wall time)")
    header = ("median s", "s/partition", "min s", "max s", "peak RSS", "peak PSS")
    widths = (9, 12, 8, 8, 10, 10)
    print(f"{'mode':<9} " + " ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    medians: dict[str, float] = {}
    for mode in MODES:
        if not results[mode]:
            continue
        secs = [r.seconds for r in results[mode]]
        medians[mode] = median(secs)
        print(
            f"{mode:<9} {medians[mode]:9.2f} {medians[mode] / n:12.3f} {min(secs):8.2f} {max(secs):8.2f} "
            f"{fmt_mib(max(r.peak_rss for r in results[mode])):>10} "
            f"{fmt_mib(max(r.peak_pss for r in results[mode])):>10}"
        )
        if mode != "loop":
            pickups = [r.details["pickup_s"] for r in results[mode]]
            print(
                f"{'':<9} daemon pickup median {median(pickups):.1f} s; "
                f"without it {median(r.seconds - r.details['pickup_s'] for r in results[mode]):.2f} s"
            )
    a, b, c = (medians.get(m, float("nan")) for m in MODES)
    print(
        f"backfill_ratio={b / a:.3f} default_ratio={c / a:.3f} partitions={n} "
        f"loop_s={a:.3f} backfill_s={b:.3f} default_s={c:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
