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
- cli:      `sensequant train` over the same partitions, headless, on a fresh DAGSTER_HOME with the
            backfill's `dagster.yaml`; it trains and evaluates (all five assets), so with
            `--with-evaluation` it is compared with the backfill's training and evaluation (a line of
            its own, not in the last line). Not run unless named in `--modes`.

The backfill daemon looks for new backfills every 30 s (fixed in Dagster), so the pickup depends on
when in that loop the backfill is launched. By default (`--launch-phase mid`) the launch is placed
half-way through the loop, using the daemon's heartbeats, so the pickup is the 15 s a user waits
on average; the measured pickup is printed with every repeat.

All modes run a snapshot of `sensequant_assets/` copied at the start (`--live`: the working tree),
so edits made while the benchmark runs change nothing. Before each launch every sensor (the
automation sensor included) is stopped through GraphQL, so that only the backfill starts runs
(`--keep-sensors` leaves them running, as a deployment would); any other run is reported, with
the sensor or backfill that started it.

`--loop-symbols N` runs the loop over the first N symbols only (every window) and scales its times
to the whole universe: the loop holds nothing across symbols, so its time is linear in them, and the
scale run's loop would otherwise take as long as the backfill.

`--with-evaluation` adds `student_evaluation` (every window but the first): in the loop after the
training; in the servers, with `--keep-sensors`, requested by the `follow_upstream` sensor as the
students land (as deployed; timed from the training's launch to the last evaluation), otherwise as
a second backfill once the training backfill is done (in one backfill
of all five assets Dagster runs each window's evaluation beside, not after, the run training the
student it scores, and marks the first window's evaluations failed). It is timed apart from the
training; the ratios stay those of the four training assets.

At scale (issue 11) each backfill repeat also measures, for the whole deployment:

- storage: the growth of DAGSTER_HOME (every file: run and event databases, the event index, runs,
  schedules and sensor ticks, compute logs; the artifacts are elsewhere) from just before the launch
  until the last backfill's runs have finished, per partition;
- memory: the peak summed PSS of every process of the deployment (dagster dev, webserver, daemon,
  code server, fork server and run workers), sampled every 0.25 s from the launch to the end;
- the UI: every `--status-every` seconds (default 5) the queries the UI's asset page of
  `student_model` makes (definition with partition counts, partition health, latest metadata);
- with `--keep-sensors`: every sensor tick since the server started, read through GraphQL after the
  backfill (duration = endTimestamp - timestamp; the cursor each tick wrote, and the state's).

Every mode repeats `--repeats` times with fresh artifacts and a fresh DAGSTER_HOME; after every
repeat each partition directory is checked (every file present, checksums valid, the metadata
naming the right partition) and the deterministic files are compared with the loop's; a missing
file, a failed run, or a different answer stops the benchmark with exit status 1. The last line is

    backfill_ratio=<b/a> default_ratio=<c/a> partitions=<n> loop_s=<a> backfill_s=<b> default_s=<c> \
        storage_kib_per_partition=<s> peak_pss_gib=<m> sensor_tick_max_s=<t> status_query_max_s=<q>

(one line; the times are medians; s, m, t and q are the `backfill` mode's: median storage growth
per partition in KiB, the largest peak PSS in GiB, the slowest sensor tick and the slowest single
asset-page query in seconds; `nan` where not measured: a mode not run, sensors stopped, queries off).
Usage:

    .venv/bin/python bench/backfill.py                       # 20 x 8, 3 repeats, all modes
    .venv/bin/python bench/backfill.py --symbols 4 --windows 4 --repeats 1
    .venv/bin/python bench/backfill.py --modes loop,backfill --backfill-env SOME_SETTING=1
    # the scale run of issue 11 (10,000 partitions; hours: see docs/benchmarks.md)
    .venv/bin/python bench/backfill.py --symbols 500 --windows 20 --repeats 1 --modes loop,backfill \
        --with-evaluation --keep-sensors
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import math
import os
import platform
import random
import re
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
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
MODES = ("loop", "backfill", "default", "cli")
BACKFILL_ASSETS = ("market_bars", "teacher_model", "teacher_labels", "student_model")
# `--with-evaluation` adds it to the backfill (and the loop): the previous window's student scored on
# this window, so the first window has none.
EVALUATION_ASSET = "student_evaluation"
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
# The same for the evaluation of every window but the first (with `--with-evaluation`).
# `evaluation/metrics.json` names the student pickle's sha256, which is not deterministic.
EVALUATION_REQUIRED_FILES = (
    "evaluation/metrics.json",
    "evaluation/predictions.parquet",
    "evaluation/equity.csv",
    "evaluation/equity.png",
)
EVALUATION_COMPARED_FILES = ("evaluation/predictions.parquet", "evaluation/equity.csv")

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
  module: sensequant_assets.deployment.run_launcher
  class: ForkingRunLauncher
event_log_storage:
  module: sensequant_assets.deployment.event_storage
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

    @property
    def evaluated_keys(self) -> list[str]:
        """The partitions that get a `student_evaluation`: every window but the first."""
        return [f"{s}|{w}" for s in self.symbols for w in self.windows[1:]]

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
    ("dagster dev", ("dagster dev", "sensequant_assets.deployment.devserver")),  # the parent of the others
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
        self.peak_pss_by_kind: dict[str, int] = {}  # what the deployment was made of at its PSS peak
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._kinds: dict[int, str] = {}
        self._started = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def sample(self) -> None:
        pids = process_tree(self.root, self.pgid)
        sizes = [_rss_pss(pid) for pid in pids]
        for pid in pids:
            if pid not in self._kinds:
                self._kinds[pid] = _kind(pid)
        self.peak_rss = max(self.peak_rss, sum(r for r, _ in sizes))
        pss = sum(p for _, p in sizes)
        if pss > self.peak_pss:
            self.peak_pss = pss
            by_kind: dict[str, int] = defaultdict(int)
            for pid, (_, p) in zip(pids, sizes, strict=True):
                by_kind[self._kinds[pid]] += p
            self.peak_pss_by_kind = dict(sorted(by_kind.items(), key=lambda kv: -kv[1]))
        self.peak_procs = max(self.peak_procs, len(pids))
        for pid in pids:
            cpu = _cpu_seconds(pid)
            if cpu is None:
                continue
            if pid not in self._cpu_first:
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


KiB, MiB, GiB = 1024, 1024 * 1024, 1024**3


# --- storage: what Dagster keeps in DAGSTER_HOME ------------------------------------------------

# Parts of a DAGSTER_HOME, by path relative to it (first match wins; a SQLite database's -wal and
# -shm files count with it; its -journal, which lives only during a write, is left out).
STORAGE_PARTS = (
    ("event index", "history/runs/index.db"),
    ("run event logs", "history/runs/"),
    ("runs", "history/runs.db"),
    ("schedules and sensor ticks", "schedules/"),
    ("compute logs", "storage/"),
)


def storage_part(rel: str) -> str:
    """Which part of a DAGSTER_HOME the file at `rel` (relative, with '/') belongs to."""
    for suffix in ("-wal", "-shm"):
        if rel.endswith(".db" + suffix):
            rel = rel[: -len(suffix)]
    for name, prefix in STORAGE_PARTS:
        if rel == prefix or (prefix.endswith("/") and rel.startswith(prefix)):
            return name
    return "other"


def storage_sizes(home: Path, postgres_url: str | None = None) -> dict[str, int]:
    """Bytes (apparent file sizes) of every file under `home` but SQLite's transient rollback
    journals, by `storage_part`; with `postgres_url`, that database's size as the part "postgres"."""
    sizes: dict[str, int] = defaultdict(int)
    if postgres_url:
        sizes["postgres"] = postgres_size(postgres_url)
    for directory, _, files in os.walk(home):
        for name in files:
            if name.endswith(".db-journal"):
                continue
            path = Path(directory, name)
            with contextlib.suppress(OSError):  # a file removed while walking (a SQLite journal)
                sizes[storage_part(path.relative_to(home).as_posix())] += path.lstat().st_size
    return dict(sizes)


# `--postgres URL`: the backfill mode keeps runs, events and schedules in a fresh PostgreSQL database
# (dagster-postgres, one copy of each event) instead of the SQLite files; its size counts as a part.
POSTGRES_STORAGE = """\
storage:
  postgres:
    postgres_url: "{url}"
"""


def postgres_database(url: str, name: str) -> str:
    """Create the empty database `name` on the server of `url` (dropped first if left by an earlier
    run) and return the URL of that database."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(_psycopg2(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return _psycopg2(
        str(sqlalchemy.engine.make_url(url).set(database=name).render_as_string(hide_password=False))
    )


def _psycopg2(url: str) -> str:
    """`url` through psycopg2, the driver dagster-postgres installs (SQLAlchemy 2 may pick psycopg 3)."""
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def postgres_size(url: str) -> int:
    """`pg_database_size` of the database of `url`: its tables, indexes and TOAST, in bytes."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(_psycopg2(url))
    with engine.connect() as conn:
        size = conn.execute(sqlalchemy.text("SELECT pg_database_size(current_database())")).scalar_one()
    engine.dispose()
    return int(size)


def storage_growth(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Bytes each part grew by (negative if it shrank), largest first; parts in either."""
    growth = {part: after.get(part, 0) - before.get(part, 0) for part in {*before, *after}}
    return dict(sorted(growth.items(), key=lambda kv: -kv[1]))


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

    # The scale measurements of a backfill (nan for the loop, or where the repeat did not measure them).

    @property
    def storage_growth(self) -> dict[str, int]:
        """Bytes each part of DAGSTER_HOME grew by, from just before the launch to the backfill's end."""
        if "storage_after" not in self.details:
            return {}
        return storage_growth(self.details["storage_before"], self.details["storage_after"])

    @property
    def storage_kib_per_partition(self) -> float:
        growth = self.storage_growth
        return sum(growth.values()) / KiB / self.partitions if growth else float("nan")

    @property
    def sensor_tick_max_s(self) -> float:
        ticks = self.details.get("sensor_ticks") or {}
        durations = [t["max_s"] for t in ticks.values() if t["ticks"]]
        return max(durations) if durations else float("nan")

    @property
    def sensor_cursor_max_bytes(self) -> float:
        ticks = self.details.get("sensor_ticks") or {}
        sizes = [max(t["max_cursor_bytes"], t["state_cursor_bytes"]) for t in ticks.values()]
        return max(sizes) if sizes else float("nan")

    @property
    def status_query_max_s(self) -> float:
        latencies = [s for values in (self.details.get("status_query_s") or {}).values() for s in values]
        return max(latencies) if latencies else float("nan")


def scale_fields(results: Sequence[Result]) -> dict[str, float]:
    """The last line's scale fields over the repeats of one mode: storage growth per partition
    (median), peak PSS (max), the slowest sensor tick and UI query (max); nan where not measured."""

    def worst(values: Iterable[float]) -> float:
        values = [v for v in values if not math.isnan(v)]
        return max(values) if values else float("nan")

    storage = [r.storage_kib_per_partition for r in results]
    return {
        "storage_kib_per_partition": median(v for v in storage if not math.isnan(v)),
        "peak_pss_gib": worst(r.peak_pss / GiB for r in results),
        "sensor_tick_max_s": worst(r.sensor_tick_max_s for r in results),
        "status_query_max_s": worst(r.status_query_max_s for r in results),
    }


def last_line(medians: dict[str, float], partitions: int, fields: dict[str, float]) -> str:
    """The benchmark's last line: the ratios and medians, then the backfill mode's scale fields."""
    a, b, c = (medians.get(m, float("nan")) for m in ("loop", "backfill", "default"))
    return (
        f"backfill_ratio={b / a:.3f} default_ratio={c / a:.3f} partitions={partitions} "
        f"loop_s={a:.3f} backfill_s={b:.3f} default_s={c:.3f} "
        f"storage_kib_per_partition={fields['storage_kib_per_partition']:.2f} "
        f"peak_pss_gib={fields['peak_pss_gib']:.3f} "
        f"sensor_tick_max_s={fields['sensor_tick_max_s']:.3f} "
        f"status_query_max_s={fields['status_query_max_s']:.3f}"
    )


# --- verification -----------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_artifacts(
    artifacts: Path, keys: Sequence[str], what: str, evaluated: Iterable[str] = ()
) -> dict[str, dict[str, str]]:
    """Every partition directory complete and intact; returns key -> {file: sha256} of the compared
    files (COMPARED_FILES, and EVALUATION_COMPARED_FILES for the `evaluated` keys)."""
    from sensequant_assets.io_manager import ArtifactStore

    store = ArtifactStore(artifacts)
    evaluated = set(evaluated)
    problems: list[str] = []
    sums: dict[str, dict[str, str]] = {}
    for key in keys:
        directory = store.partition_dir(key)
        required = REQUIRED_FILES + (EVALUATION_REQUIRED_FILES if key in evaluated else ())
        compared = COMPARED_FILES + (EVALUATION_COMPARED_FILES if key in evaluated else ())
        missing = [f for f in required if not (directory / f).is_file()]
        if missing:
            problems.append(f"{directory.name}: missing {', '.join(missing)}")
            continue
        recorded = json.loads((directory / "checksums.json").read_text())
        for rel in required:
            if rel == "checksums.json":
                continue
            if recorded.get(rel) != _sha256(directory / rel):
                problems.append(f"{directory.name}/{rel}: sha256 does not match checksums.json")
        for rel in ("metadata.json", "student/metadata.json"):
            named = json.loads((directory / rel).read_text()).get("partition_key")
            if named != key:
                problems.append(f"{directory.name}/{rel}: partition_key {named!r}, expected {key!r}")
        if key in evaluated:
            named = json.loads((directory / "evaluation/metrics.json").read_text()).get("evaluated_partition")
            if named != key:
                problems.append(f"{directory.name}/evaluation/metrics.json: evaluated_partition {named!r}")
        sums[key] = {rel: recorded.get(rel, "") for rel in compared}
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise BenchError(f"{what}: {len(problems)} problem(s) in {artifacts}:\n  {shown}{more}")
    return sums


def compare_answers(reference: dict[str, dict[str, str]], got: dict[str, dict[str, str]], what: str) -> None:
    differ = [
        f"{key}: {rel}"
        for key in reference
        for rel in reference[key]
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

    from sensequant_assets.assets.evaluation import EvaluationConfig, evaluate
    from sensequant_assets.assets.partition_context import window_of
    from sensequant_assets.assets.student import StudentConfig, distil
    from sensequant_assets.assets.teacher import TeacherConfig, train_partition
    from sensequant_assets.io_manager import ArtifactStore, codec_for
    from sensequant_assets.ml.teacher import TooFewRowsError
    from sensequant_assets.partitions import make_key, previous_window
    from sensequant_assets.resources import market_data_from_env
    from sensequant_assets.settings import forecast_horizon

    # The same source the assets get, with the values resolved (no EnvVar outside Dagster).
    market_data = market_data_from_env(plain=True)
    horizon = forecast_horizon()
    teacher_config, student_config = TeacherConfig(), StudentConfig()  # the run-config defaults
    store = ArtifactStore(Path(spec["artifacts"]))
    imported = time.perf_counter()
    imported_cpu = time.process_time()

    # The symbol's earlier windows' bars: the teacher's warm-up history, as its market_bars input
    # hands them to the asset (the loop goes through a symbol's windows in order).
    symbol, earlier_bars = None, {}
    for key in spec["keys"]:
        pw = window_of(key)
        if pw.symbol != symbol:
            symbol, earlier_bars = pw.symbol, {}
        # market_bars, then the assets' own per-partition functions for teacher and student
        bars = market_data.source_for(pw.symbol).bars(pw.symbol, pw.start, pw.end)
        if bars.empty:
            raise BenchError(f"{pw.label}: the data source has no bars in this window")
        store.write(key, codec_for("market_bars"), bars)
        try:
            teacher, labels = train_partition(
                pw, bars, teacher_config, market_data, horizon, stored=earlier_bars
            )
        except TooFewRowsError as exc:
            raise BenchError(str(exc)) from exc
        earlier_bars[key] = bars
        store.write(key, codec_for("teacher_model"), teacher)
        store.write(key, codec_for("teacher_labels"), labels)
        # The student reads the teacher as stored (with its model_sha256), as the asset does.
        stored = store.read(key, codec_for("teacher_model"), "teacher_model")
        student = distil(pw, labels, stored, student_config, horizon)
        store.write(key, codec_for("student_model"), student)
    trained = time.perf_counter()
    trained_cpu = time.process_time()

    # student_evaluation, as the backfill's second stage: the previous window's student and this
    # window's labels, both read as stored, for every window but the first.
    evaluation_config = EvaluationConfig()
    for key in spec.get("evaluated_keys", []):
        pw = window_of(key)
        previous = str(make_key(pw.symbol, previous_window(pw.window_key)))
        earlier = store.read(previous, codec_for("student_model"), "student_model")
        labels = store.read(key, codec_for("teacher_labels"), "teacher_labels")
        evaluation = evaluate(pw, earlier, labels, evaluation_config.cost_bps)
        store.write(key, codec_for(EVALUATION_ASSET), evaluation)
    evaluated = time.perf_counter()

    print(
        json.dumps(
            {
                "seconds": trained - imported,
                "cpu_seconds": trained_cpu - imported_cpu,
                "evaluation_seconds": evaluated - trained if spec.get("evaluated_keys") else None,
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


def run_loop(
    universe: Universe,
    workdir: Path,
    repeat: int,
    code: Path,
    with_evaluation: bool = False,
    sample_symbols: int | None = None,
) -> tuple[Result, Path]:
    """The serial loop over the universe, or over its first `sample_symbols` symbols (all windows) with
    the times scaled to the whole universe: the loop goes symbol by symbol and holds nothing across
    symbols, so its time is linear in them (the scale run's loop would otherwise take as long as the
    backfill it is compared with)."""
    full = len(universe.keys)
    if sample_symbols is not None and sample_symbols < len(universe.symbols):
        universe = Universe(universe.symbols[:sample_symbols], universe.windows, universe.start)
    scale, sample = full / len(universe.keys), (len(universe.symbols), len(universe.keys))
    artifacts = workdir / "artifacts"
    spec = workdir / "loop.json"
    workdir.mkdir(parents=True)
    evaluated = universe.evaluated_keys if with_evaluation else []
    spec.write_text(
        json.dumps({"artifacts": str(artifacts), "keys": universe.keys, "evaluated_keys": evaluated})
    )
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
    evaluation_s = timings.get("evaluation_seconds")
    result = Result(
        "loop",
        repeat,
        timings["seconds"] * scale,
        full,
        max(memory.peak_rss, timings["maxrss"]),
        memory.peak_pss,
        memory.peak_procs,
        {
            "import_s": timings["import_seconds"],
            "cpu_s": timings["cpu_seconds"] * scale,
            "evaluation_s": None if evaluation_s is None else evaluation_s * scale,
            "sampled": (*sample, timings["seconds"]) if scale > 1 else None,
        },
    )
    return result, artifacts


# --- (d) the headless command, `sensequant train` -----------------------------------------------

CLI_TOTAL = re.compile(r"^total: (\d+) partitions, (\d+) materialised.* in ([0-9.]+)s \((\d+) runs\)", re.M)


def run_cli(universe: Universe, workdir: Path, repeat: int, args: argparse.Namespace) -> tuple[Result, Path]:
    """`sensequant train` over the universe on a fresh DAGSTER_HOME with the backfill's dagster.yaml:
    the same partitions, the evaluation included (the command trains all five assets), headless.
    Timed by the command's own `total:` line (from its first read of the bars to its last run; the
    imports and the briefing it ends with are outside), the whole process's wall time printed too."""
    from sensequant_assets.deployment.devserver import write_instance_yaml

    home, artifacts = workdir / "dagster_home", workdir / "artifacts"
    home.mkdir(parents=True)
    write_instance_yaml(home, TUNED_DAGSTER_YAML.format(max_concurrent_runs=args.max_concurrent_runs))
    register_symbols(home, universe.symbols)  # the order the UI's backfill ranges follow
    end = add_months(date.fromisoformat(universe.windows[-1]), WINDOW_MONTHS) - timedelta(days=1)
    script = "import sys; from sensequant_assets.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", script, "train", "--symbols", ",".join(universe.symbols)]
    cmd += ["--start", universe.windows[0], "--end", end.isoformat(), "--artifacts-dir", str(artifacts)]
    env = {**os.environ, **universe.env(), "DAGSTER_HOME": str(home), **code_env(args.code)}
    log = workdir / "cli.log"
    began = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=args.code, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            with MemorySampler(proc.pid) as memory:
                proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(
                f"cli repeat {repeat}: `sensequant train` still running after {args.timeout:.0f} s"
            ) from exc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    wall = time.perf_counter() - began
    text = log.read_text(errors="replace")
    total = CLI_TOTAL.search(text)
    if proc.returncode != 0 or total is None:
        raise BenchError(
            f"cli repeat {repeat}: `sensequant train` exited with {proc.returncode}\n{text[-3000:]}"
        )
    partitions, materialised, seconds, runs = int(total[1]), int(total[2]), float(total[3]), int(total[4])
    if partitions != len(universe.keys):
        expected = len(universe.keys)
        raise BenchError(f"cli repeat {repeat}: the command trained {partitions} partitions, not {expected}")
    if materialised != partitions:
        raise BenchError(
            f"cli repeat {repeat}: {materialised} of {partitions} partitions materialised\n{text[-3000:]}"
        )
    details = {"wall_s": wall, "runs": runs}
    result = Result(
        "cli", repeat, seconds, partitions, memory.peak_rss, memory.peak_pss, memory.peak_procs, details
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

# What the UI's asset page asks for a partitioned asset while it is open (Dagster 1.13's webapp,
# fragments reduced to the fields that cost the server something): the definition with its
# partition counts, the partition health bar (every dimension's keys and the per-partition
# statuses), and the latest materialisation's metadata. `--status-every` times them during the
# backfill; `status_query_max_s` is the slowest single answer.
UI_ASSET_PAGE = {
    "definition": """
query AssetViewDefinitionQuery($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) {
    ... on Asset {
      id
      key { path }
      assetMaterializations(limit: 1) { timestamp runId }
      definition {
        id
        groupName
        opVersion
        partitionDefinition { description dimensionTypes { type dynamicPartitionsDefinitionName } }
        partitionKeysByDimension { name }
        backfillPolicy { description }
        automationCondition { label expandedLabel }
        partitionStats { numMaterialized numMaterializing numPartitions numFailed }
        dependencyKeys { path }
        dependedByKeys { path }
      }
    }
  }
}""",
    "partition_health": """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        __typename
        ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
        ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey primaryDimStartTime primaryDimEndTime
            secondaryDim {
              ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
              ... on DefaultPartitionStatuses {
                materializedPartitions materializingPartitions failedPartitions
              }
            }
          }
        }
      }
    }
  }
}""",
    "latest_metadata": """
query AssetOverviewMetadataEventsQuery($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) {
    ... on Asset {
      id
      assetMaterializations(limit: 1) {
        timestamp runId partition
        metadataEntries { __typename label description }
      }
      assetObservations(limit: 1) {
        timestamp runId partition
        metadataEntries { __typename label description }
      }
    }
  }
}""",
}
STATUS_ASSET = "student_model"  # the asset whose page the benchmark "keeps open"


def time_asset_page(dev: Any, asset: str = STATUS_ASSET) -> dict[str, float]:
    """Seconds each of the UI's asset-page queries took, one after the other."""
    seconds = {}
    for name, query in UI_ASSET_PAGE.items():
        began = time.perf_counter()
        reply = dev.graphql(query, {"assetKey": {"path": [asset]}}, timeout=120)
        seconds[name] = time.perf_counter() - began
        node = reply.get("assetOrError") or reply.get("assetNodeOrError") or {}
        if "id" not in node:
            raise BenchError(f"the UI's {name} query of {asset} did not find it: {reply}")
    return seconds


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


SENSOR_TICKS = """
query Ticks($sensor: SensorSelector!, $before: Float, $after: Float, $limit: Int) {
  sensorOrError(sensorSelector: $sensor) {
    __typename
    ... on Sensor {
      name
      sensorState {
        status
        typeSpecificData { ... on SensorData { lastCursor } }
        ticks(beforeTimestamp: $before, afterTimestamp: $after, limit: $limit) {
          tickId status timestamp endTimestamp cursor
        }
      }
    }
    ... on PythonError { message }
  }
}"""
TICKS_PAGE = 500  # ticks per query (Dagster answers at most 1000)


def repositories(dev: Any) -> list[dict[str, str]]:
    """The repository selectors of every loaded code location."""
    selectors = []
    for entry in dev.graphql(WORKSPACE)["workspaceOrError"]["locationEntries"]:
        location = entry["locationOrLoadError"] or {}
        if "repositories" not in location:
            raise BenchError(f"code location {entry['name']} did not load: {location.get('message')}")
        for repo in location["repositories"]:
            selectors.append({"repositoryLocationName": entry["name"], "repositoryName": repo["name"]})
    return selectors


def tick_summary(ticks: Sequence[dict[str, Any]], now: float) -> dict[str, Any]:
    """Duration and cursor size of a sensor's ticks (GraphQL `InstigationTick`s).

    A tick's duration is `endTimestamp - timestamp`; one still running (no end yet) counts with its
    duration so far (`unfinished`). The cursor is what the tick wrote (None when it left it alone).
    """
    durations, unfinished, statuses = [], 0, defaultdict(int)
    longest: dict[str, Any] | None = None
    for tick in ticks:
        statuses[tick["status"]] += 1
        end = tick.get("endTimestamp")
        if end is None:
            unfinished += 1
            end = now
        duration = max(0.0, end - tick["timestamp"])
        durations.append(duration)
        if longest is None or duration > longest["seconds"]:
            longest = {"seconds": duration, "timestamp": tick["timestamp"], "status": tick["status"]}
    cursors = [len(t["cursor"].encode()) for t in ticks if t.get("cursor") is not None]
    return {
        "ticks": len(ticks),
        "statuses": dict(statuses),
        "max_s": max(durations) if durations else float("nan"),
        "median_s": median(durations),
        "longest": longest,
        "unfinished": unfinished,
        "cursors_written": len(cursors),
        "max_cursor_bytes": max(cursors) if cursors else 0,
    }


def sensor_ticks(dev: Any, since: float) -> dict[str, dict[str, Any]]:
    """Every running sensor's ticks since `since` (epoch seconds), summarised by `tick_summary`,
    with the size of the cursor in its state now (`state_cursor_bytes`)."""
    found = {}
    for repo in repositories(dev):
        sensors = dev.graphql(SENSORS, {"repo": repo})["sensorsOrError"]
        for sensor in sensors.get("results", []):
            if sensor["sensorState"]["status"] != "RUNNING":
                continue
            selector = {**repo, "sensorName": sensor["name"]}
            ticks: list[dict[str, Any]] = []
            before, state = None, {}
            while True:
                variables = {"sensor": selector, "before": before, "after": since, "limit": TICKS_PAGE}
                reply = dev.graphql(SENSOR_TICKS, variables, timeout=300)["sensorOrError"]
                if reply["__typename"] != "Sensor":
                    raise BenchError(f"the ticks of sensor {sensor['name']}: {reply}")
                state = reply["sensorState"]
                page = state["ticks"]
                ticks.extend(page)
                if len(page) < TICKS_PAGE:
                    break
                before = min(t["timestamp"] for t in page)
            summary = tick_summary(ticks, time.time())
            cursor = (state.get("typeSpecificData") or {}).get("lastCursor")
            summary["state_cursor_bytes"] = len(cursor.encode()) if cursor else 0
            found[sensor["name"]] = summary
    return found


def stop_sensors(dev: Any) -> list[str]:
    """Stop every running sensor (automation included), so only the backfill starts runs."""
    stopped = []
    for selector in repositories(dev):
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


def selected_assets(with_evaluation: bool) -> tuple[str, ...]:
    """What the backfill materialises (and the loop computes)."""
    return BACKFILL_ASSETS + ((EVALUATION_ASSET,) if with_evaluation else ())


def last_materialisation(dev: Any, assets: Sequence[str], run_ids: set[str]) -> float:
    """When the last materialisation by one of `run_ids` (the backfill's) landed, over `assets`.

    Materialisations by other runs (the automation sensor's, with `--keep-sensors`) do not count.
    Read from the event log through the instance API, newest first, a page at a time: a GraphQL
    query for 4 x 10,000 materialisations made the webserver answer HTTP 500 at 500 x 20.
    """
    from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

    latest = {}
    with DagsterInstance.from_config(str(dev.home)) as instance:
        for name in assets:
            cursor = None
            while name not in latest:
                page = instance.fetch_materializations(
                    AssetRecordsFilter(asset_key=AssetKey(name)), limit=1000, cursor=cursor
                )
                stamps = [r.timestamp for r in page.records if r.run_id in run_ids]
                if stamps:
                    latest[name] = max(stamps)
                if not page.has_more:
                    break
                cursor = page.cursor
    missing = sorted(set(assets) - set(latest))
    if missing:
        raise BenchError(f"no materialisation of {', '.join(missing)} by the backfill's runs")
    return max(latest.values())


def materialised_partitions(dev: Any, assets: Sequence[str]) -> dict[str, set[str]]:
    """Each asset's distinct materialised partitions, from the event log (not the UI's cache)."""
    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.from_config(str(dev.home)) as instance:
        return {name: set(instance.get_materialized_partitions(AssetKey(name))) for name in assets}


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


def _tag(run: dict[str, Any], key: str) -> str | None:
    return next((t["value"] for t in run.get("tags", []) if t["key"] == key), None)


def run_origins(runs: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many of `runs` each sensor, backfill or other origin started (from their tags)."""
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        tags = {t["key"]: t["value"] for t in run.get("tags", [])}
        origin = (
            tags.get("dagster/sensor_name")
            or tags.get("sensequant/trigger")
            or ("automation" if "dagster/auto_materialize" in tags else None)
            or (f"backfill {tags['dagster/backfill']}" if "dagster/backfill" in tags else None)
            or "other"
        )
        counts[origin] += 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


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


@dataclass
class Stage:
    """One backfill launched through GraphQL and waited for: what it covered and when things happened."""

    assets: tuple[str, ...]
    backfill_id: str
    launched: float  # epoch seconds of the launch call
    observed: float  # when the benchmark saw every required partition materialised
    runs: list[dict[str, Any]]
    finished: float  # the last materialisation by one of its runs
    status: str | None

    @property
    def seconds(self) -> float:
        return self.finished - self.launched

    @property
    def pickup_s(self) -> float:
        return min(r["creationTime"] for r in self.runs) - self.launched


def run_backfill(
    mode: str,
    universe: Universe,
    workdir: Path,
    repeat: int,
    args: argparse.Namespace,
) -> tuple[Result, Path]:
    """Backfill the four training assets through a fresh `dagster dev`; with `--with-evaluation`,
    then `student_evaluation` of every window but the first as a second backfill.

    The evaluation is a second backfill because in one backfill of all five assets Dagster puts each
    window's evaluation into that window's run, next to (not after) the run that trains the previous
    window's student it scores; and it marks the first window's evaluations, which have nothing to
    score and so no output, as failed (seen with Dagster 1.13.28: the backfill ended COMPLETED_FAILED).
    """
    from sensequant_assets.deployment.devserver import DagsterDev, write_instance_yaml

    home, artifacts = workdir / "dagster_home", workdir / "artifacts"
    home.mkdir(parents=True)
    postgres_url = None
    if mode == "backfill":
        if args.dagster_yaml:
            write_instance_yaml(home, args.dagster_yaml.read_text())
        else:
            write_instance_yaml(home, TUNED_DAGSTER_YAML.format(max_concurrent_runs=args.max_concurrent_runs))
        if args.postgres:
            postgres_url = postgres_database(args.postgres, f"sensequant_bench_{os.getpid()}_{repeat}")
            tuned = (home / "dagster.yaml").read_text()  # without its SQLite event log block
            kept = re.sub(r"(?m)^event_log_storage:\n(?:[ #].*\n)*", "", tuned)
            (home / "dagster.yaml").write_text(kept + POSTGRES_STORAGE.format(url=postgres_url))
    register_symbols(home, universe.symbols)
    extra_env = (
        dict(args.backfill_env) if mode == "backfill" else {**DEFAULT_MODE_ENV, **dict(args.default_env)}
    )
    env = {**universe.env(), "SENSEQUANT_ARTIFACTS_DIR": str(artifacts), **extra_env}
    keys = universe.keys
    n = len(keys)
    what = f"{mode} repeat {repeat}"
    status_latencies: dict[str, list[float]] = defaultdict(list)
    last_status = [float("-inf")]  # monotonic time of the last round of the UI's asset-page queries
    stale_ui: dict[str, str] = {}

    # The server's log goes next to DAGSTER_HOME, not into it: DAGSTER_HOME holds Dagster's storage only.
    dev = DagsterDev(home, env={**env, **code_env(args.code)}, cwd=args.code, log=workdir / "dagster_dev.log")

    def launch_and_wait(assets: tuple[str, ...], names: Sequence[str], stage: str) -> Stage:
        """Launch a backfill of `assets` x `names` as the UI does; return once every partition of
        `names` is materialised (the UI's counts, or the event log once the backfill has ended)."""
        asset_keys = [{"path": [a]} for a in assets]
        required = set(names)
        params = {
            "assetSelection": asset_keys,
            "partitionNames": list(names),
            "fromFailure": False,
            "tags": [],
        }
        polls, incomplete_checks = itertools.count(1), itertools.count(1)
        launched = time.time()
        reply = dev.graphql(LAUNCH, {"params": params}, timeout=120)["launchPartitionBackfill"]
        if reply["__typename"] != "LaunchBackfillSuccess":
            raise BenchError(f"{what}: launchPartitionBackfill ({stage}) failed: {reply}")
        backfill_id = reply["backfillId"]
        bad_filter = {
            "tags": [{"key": "dagster/backfill", "value": backfill_id}],
            "statuses": BAD_RUN_STATUSES,
        }

        def materialised() -> bool:
            if args.status_every > 0 and time.monotonic() - last_status[0] >= args.status_every:
                last_status[0] = time.monotonic()
                for name, seconds in time_asset_page(dev).items():
                    status_latencies[name].append(seconds)
            data = dev.graphql(PROGRESS, {"keys": asset_keys, "bad": bad_filter}, timeout=120)
            bad = data["runsOrError"].get("results") or []
            if bad:
                details = "\n".join(
                    f"  run {r['runId']} {r['status']}:\n    "
                    + "\n    ".join(run_failure_messages(dev, r["runId"]) or ["(no step failure)"])
                    for r in bad[:5]
                )
                raise BenchError(
                    f"{what}: {len(bad)} run(s) of the {stage} backfill failed "
                    f"(server log: {dev.log})\n{details}"
                )
            shown = {}
            for node in data["assetNodes"]:
                stats, name = node["partitionStats"], "/".join(node["assetKey"]["path"])
                if stats["numPartitions"] != n:
                    raise BenchError(f"{what}: {name} has {stats['numPartitions']} partitions, not {n}")
                if stats["numFailed"]:
                    raise BenchError(f"{what}: {name} has {stats['numFailed']} failed partition(s)")
                shown[name] = stats["numMaterialized"]
            if len(shown) != len(assets):
                raise BenchError(f"{what}: the server knows {sorted(shown)}, not all of {list(assets)}")
            if len(required) == n and all(shown[a] == n for a in assets):
                return True
            # Short of n (the evaluations skip the first window), or the UI's counts lag the event log.
            if any(shown[a] < len(required) for a in assets) and next(polls) % 5:
                return False  # every fifth poll: the backfill's status is one more query
            return event_log_complete(shown)

        def event_log_complete(shown: dict[str, int]) -> bool:
            """Once the backfill has finished, trust the event log over the UI's partition counts.

            Seen in the default mode (160 runs, 10 at a time on SQLite): the UI kept showing
            157/160 teacher_model partitions although the event log held all 160 materialisations.
            """
            status = dev.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            if status.get("status") in BAD_BACKFILL_STATUSES:
                raise BenchError(f"{what}: the {stage} backfill {backfill_id} ended {status['status']}")
            if status.get("status") not in ("COMPLETED_SUCCESS", "COMPLETED"):
                return False
            stored = materialised_partitions(dev, assets)
            missing = {a: sorted(required - stored[a]) for a in assets if required - stored[a]}
            if missing:
                if next(incomplete_checks) >= 3:
                    listed = "; ".join(f"{a}: {len(m)} ({', '.join(m[:3])} ...)" for a, m in missing.items())
                    raise BenchError(f"{what}: backfill {status['status']} but not materialised: {listed}")
                return False
            lagging = {a: c for a, c in shown.items() if c < len(required)}
            stale_ui.update(
                {a: f"{c}/{n} shown, {len(stored[a])} in the event log" for a, c in lagging.items()}
            )
            return True

        wait_for(
            materialised, args.timeout, f"{what}: every {stage} partition materialised", args.poll, dev.log
        )
        observed = time.time()

        def runs_terminal() -> list[dict[str, Any]] | None:
            runs = backfill_runs(dev, backfill_id)
            return runs if runs and all(r["status"] in TERMINAL_RUN_STATUSES for r in runs) else None

        runs = wait_for(runs_terminal, 300, f"{what}: the {stage} backfill's runs to finish", 1.0, dev.log)
        failed = [r for r in runs if r["status"] != "SUCCESS"]
        if failed:
            raise BenchError(
                f"{what}: {len(failed)} of {len(runs)} {stage} runs did not succeed: {failed[:5]}"
            )
        finished = last_materialisation(dev, assets, {r["runId"] for r in runs})
        status = dev.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if status.get("status") in BAD_BACKFILL_STATUSES or status["__typename"] != "PartitionBackfill":
            raise BenchError(f"{what}: the {stage} backfill {backfill_id} is {status}")
        return Stage(assets, backfill_id, launched, observed, runs, finished, status.get("status"))

    def wait_followed(names: Sequence[str], since: float) -> Stage:
        """With the sensors running, the evaluations are not launched: `follow_upstream` requests
        them as the students they score complete. Wait until every one of `names` is materialised
        and the sensor's runs have finished; timed from the training's launch."""
        required = set(names)

        def done() -> bool:
            if args.status_every > 0 and time.monotonic() - last_status[0] >= args.status_every:
                last_status[0] = time.monotonic()
                for name, seconds in time_asset_page(dev).items():
                    status_latencies[name].append(seconds)
            return required <= materialised_partitions(dev, (EVALUATION_ASSET,))[EVALUATION_ASSET]

        wait_for(done, args.timeout, f"{what}: every evaluation followed by the sensor", args.poll, dev.log)
        observed = time.time()

        def followed() -> list[dict[str, Any]] | None:
            runs = [r for r in backfill_runs(dev) if _tag(r, "sensequant/trigger") == "follow_upstream"]
            return runs if all(r["status"] in TERMINAL_RUN_STATUSES for r in runs) else None

        runs = wait_for(followed, 300, f"{what}: the sensor's runs to finish", 1.0, dev.log)
        failed = [r for r in runs if r["status"] != "SUCCESS"]
        if failed:
            raise BenchError(f"{what}: {len(failed)} of {len(runs)} follow_upstream runs did not succeed")
        finished = last_materialisation(dev, (EVALUATION_ASSET,), {r["runId"] for r in runs})
        return Stage((EVALUATION_ASSET,), "follow_upstream", since, observed, runs, finished, None)

    try:
        t_start, started_at = time.monotonic(), time.time()
        dev.start(timeout=args.server_timeout)

        def daemons_healthy() -> bool:
            data = dev.graphql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
            needed = [d for d in data if d["required"]]
            return bool(needed) and all(d["healthy"] for d in needed)

        wait_for(daemons_healthy, args.server_timeout, "the daemons to report healthy", log=dev.log)
        stopped = [] if args.keep_sensors else stop_sensors(dev)
        early = backfill_runs(dev)
        if early:
            tags = [{t["key"]: t["value"] for t in r["tags"] if not t["key"].startswith(".")} for r in early]
            raise BenchError(
                f"{what}: {len(early)} run(s) started before the backfill was launched: {tags[:3]}"
            )
        startup_s = time.monotonic() - t_start

        expected_pickup = wait_for_launch_phase(dev, args.launch_phase, random.Random(repeat))
        idle = MemorySampler(dev.proc.pid, os.getpgid(dev.proc.pid))
        idle.sample()
        storage_before = storage_sizes(home, postgres_url)
        with MemorySampler(dev.proc.pid, os.getpgid(dev.proc.pid)) as memory:
            training = launch_and_wait(BACKFILL_ASSETS, keys, "training")
            evaluation = None
            if args.with_evaluation and args.keep_sensors:  # as deployed: the sensor follows
                evaluation = wait_followed(universe.evaluated_keys, training.launched)
            elif args.with_evaluation:
                evaluation = launch_and_wait((EVALUATION_ASSET,), universe.evaluated_keys, "evaluation")
        storage_after = storage_sizes(home, postgres_url)
        ours = {r["runId"] for r in training.runs + (evaluation.runs if evaluation else [])}
        foreign = [r for r in backfill_runs(dev) if r["runId"] not in ours]
        ticks = sensor_ticks(dev, started_at) if args.keep_sensors else {}
        breakdown = time_breakdown(dev, training.runs, args.detail_runs)
    finally:
        dev.stop()
    storage_stopped = storage_sizes(home, postgres_url)

    runs = training.runs
    run_spans = [r["endTime"] - r["startTime"] for r in runs if r["startTime"] and r["endTime"]]
    launched = training.launched
    details = {
        "assets": list(BACKFILL_ASSETS) + ([EVALUATION_ASSET] if evaluation else []),
        "startup_s": startup_s,
        "observed_s": training.observed - launched,
        "runs": len(runs),
        "foreign_runs": len(foreign),
        "foreign_by_origin": run_origins(foreign),
        "pickup_s": training.pickup_s,
        "expected_pickup_s": expected_pickup,
        "last_run_created_s": max(r["creationTime"] for r in runs) - launched,
        "runs_done_s": max(r["endTime"] for r in runs) - launched,
        "run_span_median_s": statistics.median(run_spans) if run_spans else float("nan"),
        "run_seconds_total": sum(run_spans),
        "backfill_status": training.status,
        "stopped_sensors": stopped,
        "idle_rss": idle.peak_rss,
        "idle_pss": idle.peak_pss,
        "idle_procs": idle.peak_procs,
        "peak_pss_by_kind": memory.peak_pss_by_kind,
        "breakdown": breakdown,
        "cpu_s": memory.cpu_by_kind(),
        "status_query_s": dict(status_latencies),
        "stale_ui_stats": stale_ui,
        "storage_before": storage_before,
        "storage_after": storage_after,
        "storage_stopped": storage_stopped,
        "sensor_ticks": ticks,
        "launched": launched,
    }
    if evaluation is not None:
        details.update(
            {
                "evaluation_s": evaluation.seconds,
                "evaluation_followed": evaluation.backfill_id == "follow_upstream",
                "evaluation_pickup_s": evaluation.pickup_s,
                "evaluation_runs": len(evaluation.runs),
                "evaluation_launched_s": evaluation.launched - launched,
                "evaluation_status": evaluation.status,
            }
        )
    result = Result(
        mode, repeat, training.seconds, n, memory.peak_rss, memory.peak_pss, memory.peak_procs, details
    )
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
    if result.mode == "cli":
        return text + (
            f"; {d['runs']} runs; training and evaluation, as the command's `total:` line reports it; "
            f"the process's wall time with imports and the closing briefing {d['wall_s']:.2f} s"
        )
    if result.mode == "loop":
        text += f"; imports {d['import_s']:.2f} s (not timed); CPU {d['cpu_s']:.2f} s"
        if d.get("sampled"):
            symbols, partitions, seconds = d["sampled"]
            text += (
                f"\n    measured on the first {symbols} symbols ({partitions} partitions, {seconds:.2f} s of "
                f"training) and scaled to all {result.partitions}"
            )
        if d.get("evaluation_s") is not None:
            text += f"\n    then student_evaluation of every window but the first: {d['evaluation_s']:.2f} s"
        return text
    text += (
        f"\n    runs={d['runs']} pickup={d['pickup_s']:.1f}s"
        + (f" (launch phase aimed at {d['expected_pickup_s']:.0f}s)" if d["expected_pickup_s"] else "")
        + f" last_run_created={d['last_run_created_s']:.1f}s runs_done={d['runs_done_s']:.1f}s"
        f" run_span_median={d['run_span_median_s']:.1f}s run_seconds_total={d['run_seconds_total']:.1f}"
        f" server_startup={d['startup_s']:.1f}s (not timed) backfill_status={d['backfill_status']}"
    )
    if d.get("evaluation_followed"):
        text += (
            f"\n    student_evaluation followed by the follow_upstream sensor ({d['evaluation_runs']} runs): "
            f"the last one materialised {d['evaluation_s']:.2f} s after the training's launch"
        )
    elif "evaluation_s" in d:
        text += (
            f"\n    then the student_evaluation backfill ({d['evaluation_runs']} runs, launched "
            f"{d['evaluation_launched_s']:.1f} s after the first): {d['evaluation_s']:.2f} s from its launch "
            f"(pickup {d['evaluation_pickup_s']:.1f} s), {d['evaluation_status']}"
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
    if d.get("peak_pss_by_kind"):
        parts = ", ".join(f"{kind} {fmt_mib(size)}" for kind, size in d["peak_pss_by_kind"].items())
        text += f"\n    at the PSS peak ({result.peak_pss / GiB:.3f} GiB): {parts}"
    growth = result.storage_growth
    if growth:
        total = sum(growth.values())
        settled = sum(d["storage_stopped"].values()) - sum(d["storage_before"].values())
        parts = ", ".join(f"{part} {size / KiB:.0f} KiB" for part, size in growth.items() if size)
        text += (
            f"\n    DAGSTER_HOME grew {total / MiB:.2f} MiB from the launch to the backfill's end, "
            f"{result.storage_kib_per_partition:.2f} KiB per partition ({', '.join(d['assets'])}): {parts}; "
            f"{settled / MiB:.2f} MiB once the server had stopped; "
            f"{sum(d['storage_after'].values()) / MiB:.2f} MiB in all"
        )
    if d.get("status_query_s"):
        for name, lat in d["status_query_s"].items():
            text += (
                f"\n    UI asset page of {STATUS_ASSET} while running, {name}: median {median(lat):.3f} s, "
                f"max {max(lat):.3f} s over {len(lat)} rounds"
            )
    for name, ticks in (d.get("sensor_ticks") or {}).items():
        statuses = ", ".join(f"{k.lower()} {v}" for k, v in sorted(ticks["statuses"].items()))
        longest = ticks["longest"]
        when = f" at {longest['timestamp'] - d['launched']:+.0f} s from the launch" if longest else ""
        text += (
            f"\n    sensor {name}: {ticks['ticks']} ticks ({statuses or 'none'}), median "
            f"{ticks['median_s']:.3f} s, max {ticks['max_s']:.3f} s{when}"
            + (f" ({ticks['unfinished']} unfinished)" if ticks["unfinished"] else "")
            + f"; cursor written by {ticks['cursors_written']} ticks, max {ticks['max_cursor_bytes']} bytes, "
            f"{ticks['state_cursor_bytes']} bytes in its state now"
        )
        if ticks["statuses"].get("FAILURE"):
            text += f"\n    WARNING: sensor {name} failed {ticks['statuses']['FAILURE']} tick(s)"
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
        origins = ", ".join(f"{origin} {count}" for origin, count in d.get("foreign_by_origin", {}).items())
        text += (
            f"\n    WARNING: {d['foreign_runs']} run(s) not started by the backfill ran meanwhile ({origins})"
        )
    segments = d["breakdown"].get("segments", {})
    if segments:
        text += f"\n    where a run's time goes (mean over {d['breakdown']['sampled_runs']} sampled runs):"
        for name, seg in list(segments.items())[:14]:
            text += f"\n      {seg['mean_s']:7.2f} s  x{seg['count']:<4d} {name}"
    return text


def cpu_comparison(results: dict[str, list[Result]], partitions: int) -> str | None:
    """The CPU seconds per partition of the loop and of the backfill's run workers, medians.

    Wall times compare badly on a shared machine (a loop beside other tests took 1.6x as long);
    CPU seconds leave out the waiting for a core, so they show what the runs themselves cost, which is
    where the backfill's excess over the loop is (docs/benchmarks.md, "Where the run workers' CPU
    goes"). Contention still inflates them (the loop's 0.223 s per partition became 0.285 s beside
    other tests), so compare the two within one invocation. The run workers' figure covers every
    run from the launch to the last training partition: with `--with-evaluation` and the sensors
    running, evaluation runs that overlap it are counted too.
    """
    loop = [r.details["cpu_s"] for r in results.get("loop", []) if r.details.get("cpu_s") is not None]
    runs = [
        r.details["cpu_s"]["run worker"]
        for r in results.get("backfill", [])
        if "run worker" in (r.details.get("cpu_s") or {})
    ]
    if not loop or not runs:
        return None
    a, b = median(loop) / partitions, median(runs) / partitions
    return (
        f"CPU per partition: loop {a:.3f} s (one process), backfill run workers {b:.3f} s "
        f"(ratio {b / a:.2f}; unlike wall times, CPU seconds leave out waiting for a core)"
    )


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
        "--modes",
        default="loop,backfill,default",
        help="comma-separated subset of loop,backfill,default,cli (default: loop,backfill,default)",
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
        "--postgres",
        metavar="URL",
        help="keep the backfill mode's runs, events and schedules in PostgreSQL (needs dagster-postgres): "
        "a fresh database per repeat on the server of URL (e.g. postgresql://postgres@127.0.0.1:5432/test), "
        "whose size counts in the storage growth",
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
        "--status-every",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="while a backfill runs, time the queries the UI's asset page of student_model makes "
        "(definition with partition counts, partition health, latest metadata) at most every SECONDS "
        "(default 5; 0: never, and status_query_max_s is nan)",
    )
    parser.add_argument(
        "--status-query",
        action="store_true",
        help="time the UI's asset-page queries on every progress poll (the same as --status-every 0.01; "
        "kept for the command lines of earlier figures)",
    )
    parser.add_argument(
        "--with-evaluation",
        action="store_true",
        help="also compute student_evaluation (every window but the first) after the training: a second "
        "backfill in the servers, a second pass in the loop, timed apart; all the partitioned assets, as "
        "the scale run's storage figure needs",
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
    parser.add_argument(
        "--loop-symbols",
        type=int,
        metavar="N",
        help="run the loop mode over the first N symbols only (every window) and scale its times to the "
        "whole universe (the loop is linear in symbols); the backfill's files are compared with the "
        "loop's for those symbols",
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
    for name in ("symbols", "windows", "repeats", "default_repeats", "loop_symbols"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.timeout is None:
        args.timeout = max(900.0, 60.0 * args.symbols * args.windows)
    if args.status_query:
        args.status_every = 0.01
    if args.status_every < 0:
        parser.error("--status-every must be 0 or more")
    if args.with_evaluation and args.windows < 2:
        parser.error("--with-evaluation needs at least 2 windows (the first window has no evaluation)")
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
        f"assets {', '.join(selected_assets(args.with_evaluation))}"
        + (
            f" (student_evaluation of the {len(universe.evaluated_keys)} partitions after the first window, "
            + (
                "requested by the follow_upstream sensor as the students land"
                if args.keep_sensors
                else "as a second backfill once the training one is done"
            )
            + ", and after the training in the loop; timed apart)"
            if args.with_evaluation
            else " (no student_evaluation: --with-evaluation adds it)"
        )
    )
    repeats = f"{args.repeats}" + (
        f" (default mode: {args.default_repeats})" if args.default_repeats != args.repeats else ""
    )
    print(f"modes: {', '.join(args.modes)}; repeats: {repeats}; work directory: {root}")
    if set(args.modes) - {"loop"}:
        sensors = (
            "left running (their ticks are read after each backfill)"
            if args.keep_sensors
            else "stopped before each launch (sensor_tick_max_s is nan)"
        )
        queries = (
            f"the UI's asset-page queries of {STATUS_ASSET} timed every {args.status_every:g} s"
            if args.status_every
            else "the UI's asset-page queries not timed (status_query_max_s is nan)"
        )
        print(f"launch phase: {args.launch_phase}; sensors: {sensors}; {queries}")
    if args.backfill_env and "backfill" in args.modes:
        print(f"backfill mode environment: {dict(args.backfill_env)}")
    if "default" in args.modes:
        print(f"default mode environment: {DEFAULT_MODE_ENV | dict(args.default_env)}; no dagster.yaml")
    if "backfill" in args.modes:
        source = args.dagster_yaml or "TUNED_DAGSTER_YAML"
        print(f"backfill mode dagster.yaml: {source} (max_concurrent_runs={args.max_concurrent_runs})")
    sys.stdout.flush()

    loop_symbols = set(universe.symbols[: args.loop_symbols or None])
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
                    result, artifacts = run_loop(
                        universe, workdir, repeat, args.code, args.with_evaluation, args.loop_symbols
                    )
                elif mode == "cli":
                    result, artifacts = run_cli(universe, workdir, repeat, args)
                else:
                    result, artifacts = run_backfill(mode, universe, workdir, repeat, args)
                # the command evaluates every window but the first whatever the options
                with_evaluation = args.with_evaluation or mode == "cli"
                evaluated = universe.evaluated_keys if with_evaluation else []
                if mode == "loop":  # the symbols it ran (all but with --loop-symbols)
                    checked = [k for k in keys if k.split("|")[0] in loop_symbols]
                    evaluated = [k for k in evaluated if k.split("|")[0] in loop_symbols]
                else:
                    checked = keys
                sums = verify_artifacts(artifacts, checked, f"{mode} repeat {repeat}", evaluated)
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
        if mode in ("backfill", "default"):
            pickups = [r.details["pickup_s"] for r in results[mode]]
            print(
                f"{'':<9} daemon pickup median {median(pickups):.1f} s; "
                f"without it {median(r.seconds - r.details['pickup_s'] for r in results[mode]):.2f} s"
            )
    if line := cpu_comparison(results, n):
        print(line)
    evaluations = {
        mode: median(
            r.details["evaluation_s"] for r in results[mode] if r.details.get("evaluation_s") is not None
        )
        for mode in ("loop", "backfill")
    }
    followed = [r for r in results["backfill"] if r.details.get("evaluation_followed")]
    if followed and results["loop"]:
        loop_all = median(r.seconds + (r.details.get("evaluation_s") or 0.0) for r in results["loop"])
        backfill_all = median(r.details["evaluation_s"] for r in followed)
        print(
            f"training and every evaluation (the evaluations followed by the sensor): loop {loop_all:.2f} s, "
            f"backfill {backfill_all:.2f} s from the click "
            f"(ratio {backfill_all / loop_all:.3f}; not in the line below)"
        )
    elif not all(math.isnan(v) for v in evaluations.values()):
        print(
            f"student_evaluation after the training (every window but the first; not in the line below): "
            f"loop {evaluations['loop']:.2f} s, backfill {evaluations['backfill']:.2f} s "
            f"(ratio {evaluations['backfill'] / evaluations['loop']:.3f})"
        )
    if results["cli"]:
        cli_s = median(r.seconds for r in results["cli"])
        if args.with_evaluation and results["backfill"]:
            backfill_all = median(
                r.details["evaluation_s"]
                if r.details.get("evaluation_followed")
                else r.seconds + r.details["evaluation_s"]
                for r in results["backfill"]
            )
            print(
                f"sensequant train / UI backfill, the same partitions trained and evaluated: {cli_s:.2f} s / "
                f"{backfill_all:.2f} s (ratio {cli_s / backfill_all:.3f}; not in the line below)"
            )
        else:
            print(
                f"sensequant train: {cli_s:.2f} s for training and evaluation (compared with a backfill "
                "only with --with-evaluation and the backfill mode)"
            )
    fields = scale_fields(results["backfill"])
    if results["backfill"]:
        cursor = max(r.sensor_cursor_max_bytes for r in results["backfill"])
        failed_ticks = sum(
            t["statuses"].get("FAILURE", 0)
            for r in results["backfill"]
            for t in (r.details.get("sensor_ticks") or {}).values()
        )
        assets = ", ".join(results["backfill"][0].details["assets"])
        print(
            f"backfill mode at scale ({assets}): DAGSTER_HOME growth "
            f"{fields['storage_kib_per_partition']:.2f} KiB per partition (median), peak PSS "
            f"{fields['peak_pss_gib']:.3f} GiB, slowest sensor tick {fields['sensor_tick_max_s']:.3f} s"
            + (f" ({failed_ticks} failed ticks)" if failed_ticks else "")
            + ", "
            "largest sensor cursor "
            + (f"{cursor / KiB:.1f} KiB" if not math.isnan(cursor) else "nan (sensors stopped)")
            + f", slowest UI asset-page query {fields['status_query_max_s']:.3f} s (max)"
        )
    print(last_line(medians, n, fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
