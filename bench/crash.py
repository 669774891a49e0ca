"""Crash exploration (minutes): SIGKILL parts of a real `dagster dev` at random while it backfills.

    .venv/bin/python bench/crash.py [--symbols 6] [--windows 4] [--kills 10] [--seed 0] [--keep DIR]

What `make run` starts, on a temporary DAGSTER_HOME with the deployment's dagster.yaml
(`devserver.DagsterDev`): webserver, daemon, code server (Dagster's proxy and its `dagster api grpc`
child), and the runs, forks of `ForkingRunLauncher`'s worker. The synthetic source, `--symbols`
symbols x the `--windows` newest complete windows, every sensor running: `symbol_universe`
registers the symbols and requests their history as one backfill, which is what gets killed.

Every 4-15 s (seeded) one of these is SIGKILLed, whichever exist at that moment:

- run:         a run worker (the fork running a run's steps);
- daemon:      the `dagster-daemon` process (dagster dev then shuts the rest down: restarted, as a
               user would run `make run` again; run workers and their fork server live on);
- code-server: the `dagster api grpc` process behind dagster dev's code-server proxy (if the
               location does not come back by itself within 30 s, it is reloaded through GraphQL,
               as the UI's "Reload" button does);
- all:         the whole process group (a power cut without the disk loss: run workers die too).

After each kill, and at the end, every partition directory is read through the store (each file
against `checksums.json`, the metadata naming its partition; a directory caught between the two
renames of a swap is recovered by that read) and the event log is compared with the files: an
asset partition recorded as materialised (not skipped) without its files is a problem; files not
yet recorded (a step killed after committing them) are counted as "ahead of the log".

After the kills the backfill is left to finish; every backfill that ended with failures is
re-launched from failure (GraphQL `reexecutePartitionBackfill`, the UI's "Re-execute"), until every
partition of every asset is materialised on disk and in the event log, or `--timeout` passes. The
report lists each kill with what was running, what it left, and the end state; exit status 1 on any
problem. See docs/crash.md for recorded runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, RunsFilter  # noqa: E402
from dagster._core.execution.backfill import BulkActionStatus  # noqa: E402

from sensequant_assets.deployment.devserver import DagsterDev, write_instance_yaml  # noqa: E402
from sensequant_assets.deployment.run_launcher import RUN_WORKER_TAG, worker_pid  # noqa: E402
from sensequant_assets.io_manager import (  # noqa: E402
    CHECKSUMS,
    TXN_DIR,
    ArtifactError,
    ArtifactStore,
    codec_for,
)

ASSETS = ("market_bars", "teacher_model", "teacher_labels", "student_model", "student_evaluation")
MARKER = {  # a file each asset always writes
    "market_bars": "bars.parquet",
    "teacher_model": "model.pkl",
    "teacher_labels": "labels.csv.gz",
    "student_model": "student/student_model.pkl",
    "student_evaluation": "evaluation/metrics.json",
}
WINDOW_MONTHS = 6
ACTIVE = [DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
REEXECUTE = """
mutation($params: ReexecutionParams!) {
  reexecutePartitionBackfill(reexecutionParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  }
}"""
LOCATIONS = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename } } } } }"""
RELOAD = """
mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) { __typename } }"""


def add_months(d: date, months: int) -> date:
    years, month0 = divmod(d.month - 1 + months, 12)
    return date(d.year + years, month0 + 1, 1)


def start_date(n_windows: int) -> date:
    """The start date for which exactly `n_windows` complete half-year windows exist today."""
    today = datetime.now(ZoneInfo("Asia/Kolkata")).date()
    current = date(today.year, ((today.month - 1) // WINDOW_MONTHS) * WINDOW_MONTHS + 1, 1)
    return add_months(current, -WINDOW_MONTHS * n_windows)


# --- processes -----------------------------------------------------------------------------------


def group_processes(pgid: int) -> dict[int, str]:
    """pid -> command line of every live process of a process group."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            fields = stat[stat.rfind(b")") + 2 :].split()
            if int(fields[2]) != pgid or fields[0] in (b"Z", b"X"):
                continue
            out[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return out


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Lab:
    root: Path
    home: Path
    artifacts: Path
    env: dict[str, str]
    dev: DagsterDev | None = None
    groups: list[int] = field(default_factory=list)  # every process group started, for the end

    def start(self) -> None:
        began = time.monotonic()
        self.dev = DagsterDev(self.home, env={**os.environ, **self.env}, log=self.root / "dagster_dev.log")
        self.dev.start()
        assert self.dev.proc is not None
        self.groups.append(self.dev.proc.pid)
        print(f"    dagster dev up in {time.monotonic() - began:.1f} s", flush=True)

    @property
    def pgid(self) -> int:
        assert self.dev is not None and self.dev.proc is not None
        return self.dev.proc.pid

    def alive(self) -> bool:
        return self.dev is not None and self.dev.proc is not None and self.dev.proc.poll() is None

    def find(self, needle: str) -> list[int]:
        return [pid for pid, cmd in group_processes(self.pgid).items() if needle in cmd]

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        assert self.dev is not None
        return self.dev.graphql(query, variables)

    def end(self) -> None:
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


# --- what is on disk, and what the event log says -------------------------------------------------


@dataclass
class Check:
    problems: list[str] = field(default_factory=list)
    ahead: int = 0  # asset partitions with files the event log does not record yet
    leftovers: list[str] = field(default_factory=list)
    complete: int = 0  # partitions with every asset's files


def check(lab: Lab, instance: DagsterInstance, keys: list[str], evaluated: set[str]) -> Check:
    out = Check()
    store = ArtifactStore(lab.artifacts)
    recorded = {a: set(instance.get_materialized_partitions(AssetKey(a))) for a in ASSETS}
    for key in keys:
        directory = store.partition_dir(key)
        try:
            store.read(key, codec_for("market_bars"), "market_bars")  # recovers a half swap first
        except ArtifactError as exc:
            if directory.exists() or (lab.artifacts / TXN_DIR / f"{directory.name}.old").exists():
                out.problems.append(f"{key}: {exc}")
        sums = json.loads((directory / CHECKSUMS).read_text()) if (directory / CHECKSUMS).exists() else {}
        has = {a for a in ASSETS if MARKER[a] in sums}
        for asset in has:
            try:
                value = store.read(key, codec_for(asset), asset)
            except ArtifactError as exc:
                out.problems.append(f"{key} {asset}: {exc}")
                continue
            meta = getattr(value, "metadata", None)
            if asset == "teacher_model" and meta.get("partition_key") != key:
                out.problems.append(f"{key}: teacher metadata names {meta.get('partition_key')}")
        for asset in ASSETS:
            if key in recorded[asset] and asset not in has and not skipped(instance, asset, key):
                out.problems.append(f"{key} {asset}: materialised in the event log, no files")
            if asset in has and key not in recorded[asset]:
                out.ahead += 1
        wanted = set(ASSETS) if key in evaluated else set(ASSETS) - {"student_evaluation"}
        out.complete += wanted <= has and all(key in recorded[a] for a in wanted)
    txn = lab.artifacts / TXN_DIR
    out.leftovers = sorted(p.name for p in txn.iterdir()) if txn.exists() else []
    return out


def skipped(instance: DagsterInstance, asset: str, key: str) -> bool:
    """Whether the partition's newest materialisation is a skip (recorded by Dagster for a batch)."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[key]), limit=1
    ).records
    return bool(records) and "skipped" in records[0].asset_materialization.metadata


def state(instance: DagsterInstance) -> str:
    runs = instance.get_runs(RunsFilter(statuses=ACTIVE))
    counts = {s.value.lower(): sum(r.status == s for r in runs) for s in ACTIVE}
    backfills = [b for b in instance.get_backfills() if b.status == BulkActionStatus.REQUESTED]
    shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no runs"
    return f"{shown}; {len(backfills)} backfill(s) in progress"


# --- the kills -------------------------------------------------------------------------------------


def targets(lab: Lab, instance: DagsterInstance) -> dict[str, list[int]]:
    workers = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        pid = worker_pid(run.tags.get(RUN_WORKER_TAG))
        if pid is not None:
            workers.append(pid)
    return {
        "run": workers,
        "daemon": lab.find("dagster._daemon run"),
        "code-server": lab.find("dagster api grpc"),
        "all": [lab.pgid],
    }


def wait_location(lab: Lab, timeout: float = 30) -> str:
    """'back' when the code location answers again by itself, 'reloaded' after a GraphQL reload."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            entries = lab.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]
            if all(e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in entries):
                return "back"
        except (OSError, RuntimeError):
            pass
        time.sleep(1)
    lab.graphql(RELOAD, {"name": "sensequant"})
    return "reloaded"


def do_kill(lab: Lab, what: str, pids: list[int]) -> str:
    if what == "all":
        os.killpg(lab.pgid, signal.SIGKILL)
        assert lab.dev is not None and lab.dev.proc is not None
        lab.dev.proc.wait(timeout=30)
        lab.start()
        return "restarted dagster dev"
    pid = pids[0]
    kill(pid)
    if what == "daemon":
        assert lab.dev is not None and lab.dev.proc is not None
        lab.dev.proc.wait(timeout=60)  # dagster dev shuts down when its daemon dies
        lab.start()
        return f"pid {pid}; dagster dev exited, restarted"
    if what == "code-server":
        return f"pid {pid}; location {wait_location(lab)}"
    return f"pid {pid}"


def settle(lab: Lab, instance: DagsterInstance, timeout: float) -> None:
    """Wait until no run is active and no backfill is in progress (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not lab.alive():
            print("    dagster dev is not running: restarting", flush=True)
            lab.start()
        busy = instance.get_runs(RunsFilter(statuses=ACTIVE), limit=1)
        requested = [b for b in instance.get_backfills() if b.status == BulkActionStatus.REQUESTED]
        if not busy and not requested:
            return
        time.sleep(3)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=6)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1200, help="seconds to finish after the kills")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary directory)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = args.keep or Path(tempfile.mkdtemp(prefix="sensequant-crash-"))
    root.mkdir(parents=True, exist_ok=True)
    symbols = [f"CRASH{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(args.symbols)]
    start = start_date(args.windows)
    windows = [add_months(start, WINDOW_MONTHS * k).isoformat() for k in range(args.windows)]
    keys = [f"{s}|{w}" for s in symbols for w in windows]
    evaluated = {f"{s}|{w}" for s in symbols for w in windows[1:]}
    lab = Lab(
        root,
        root / "home",
        root / "models",
        {
            "SENSEQUANT_DATA_SOURCE": "synthetic",
            "SENSEQUANT_START_DATE": start.isoformat(),
            "SENSEQUANT_SYMBOLS": ",".join(symbols),
            "SENSEQUANT_UNIVERSE_FILE": "",
            "SENSEQUANT_BACKFILL_NEW_SYMBOLS": "1",
            "SENSEQUANT_SENSOR_INTERVAL_SECONDS": "5",
            "SENSEQUANT_ARTIFACTS_DIR": str(root / "models"),
            "DAGSTER_DISABLE_TELEMETRY": "1",
        },
    )
    write_instance_yaml(lab.home)
    print(f"{len(symbols)} symbols x {len(windows)} windows ({windows[0]}..{windows[-1]}) in {root}")
    began = time.monotonic()
    status = 0
    try:
        lab.start()
        with DagsterInstance.from_config(str(lab.home)) as instance:
            print("kill  t(s)  target       what was running                         after", flush=True)
            for n in range(1, args.kills + 1):
                time.sleep(rng.uniform(4, 15))
                if not lab.alive():
                    lab.start()
                found = {k: v for k, v in targets(lab, instance).items() if v}
                what = rng.choice(sorted(found))
                before = state(instance)
                done = do_kill(lab, what, found[what])
                time.sleep(2)
                result = check(lab, instance, keys, evaluated)
                status |= bool(result.problems)
                t = time.monotonic() - began
                print(
                    f"{n:>4}  {t:>4.0f}  {what:<12} {before:<40} {done}; {result.complete}/{len(keys)} "
                    f"complete, {result.ahead} ahead of the log, .txn {result.leftovers or 'empty'}",
                    flush=True,
                )
                for problem in result.problems:
                    print(f"      PROBLEM {problem}", flush=True)
            relaunched = 0
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                settle(lab, instance, deadline - time.monotonic())
                result = check(lab, instance, keys, evaluated)
                if result.complete == len(keys):
                    break
                backfills = instance.get_backfills()
                parents = {b.tags.get("dagster/parent_backfill_id") for b in backfills}
                ended = (BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.FAILED)
                failed = [b for b in backfills if b.status in ended and b.backfill_id not in parents]
                for backfill in failed:
                    params = {"parentRunId": backfill.backfill_id, "strategy": "FROM_FAILURE"}
                    answer = lab.graphql(REEXECUTE, {"params": params})["reexecutePartitionBackfill"]
                    relaunched += 1
                    print(
                        f"    re-launched backfill {backfill.backfill_id} from failure: {answer}", flush=True
                    )
                if not failed:
                    time.sleep(5)
            result = check(lab, instance, keys, evaluated)
            runs = instance.get_runs()
            by_status = {s.value: sum(r.status == s for r in runs) for s in DagsterRunStatus}
            print(
                f"end after {time.monotonic() - began:.0f} s: {result.complete}/{len(keys)} partitions "
                f"complete on disk and in the event log, {relaunched} backfill re-launch(es), runs "
                f"{ {k: v for k, v in by_status.items() if v} }, {result.ahead} asset partitions ahead of "
                f"the log, .txn {result.leftovers or 'empty'}"
            )
            for problem in result.problems:
                print(f"PROBLEM {problem}")
            status |= bool(result.problems) or result.complete != len(keys)
    finally:
        if lab.dev is not None:
            lab.dev.stop()
        lab.end()
    return status


if __name__ == "__main__":
    sys.exit(main())
