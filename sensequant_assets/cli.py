"""`sensequant`: the headless entry point, driving the same Dagster definitions as the UI.

Settings given as flags are exported as SENSEQUANT_* variables before the definitions are imported,
so the CLI and a `dagster dev` started with the same variables see the same graph.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path

DEFAULT_DAGSTER_HOME = ".dagster_home"
# Dagster's console log would drown the one-line-per-partition summary; the UI keeps the full log.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The steps each of a window's runs takes: the windows before the range only refresh stored bars.
STAGES = {
    "bars": ("market_bars",),
    "train": ("market_bars", "teacher_model", "student_model"),
    "evaluate": ("student_evaluation",),
}


@dataclass
class PartitionOutcome:
    partition_key: str
    status: str  # materialised | up to date | skipped | failed
    detail: str
    notes: str = ""  # of a run's outcome: the steps that skipped it, e.g. `(student_evaluation skipped: ...)`


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD date") from None


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensequant", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="materialise every symbol-window in a date range")
    train.add_argument("--symbols", required=True, help="comma-separated NSE symbols, e.g. RELIANCE,TCS")
    train.add_argument("--start", required=True, type=_date, help="first day (YYYY-MM-DD)")
    train.add_argument("--end", required=True, type=_date, help="last day (YYYY-MM-DD)")
    train.add_argument(
        "--data-source",
        choices=["synthetic", "csv", "breeze"],
        help="SENSEQUANT_DATA_SOURCE (breeze: trains on its cache as it is; fetching is breeze_bars')",
    )
    train.add_argument("--data-dir", help="SENSEQUANT_DATA_DIR (the csv source's files, or breeze's cache)")
    train.add_argument("--artifacts-dir", help="SENSEQUANT_ARTIFACTS_DIR")
    train.add_argument(
        "--max-failure-rate",
        type=_rate,
        default=0.15,
        help="exit non-zero when more than this share of partitions fail (skips are not failures)",
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="retrain every partition (default: only those missing, failed or stale)",
    )
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would run and why, and stop (nothing is written)",
    )

    for name, text in (
        (
            "promote",
            "promote a symbol's newest student of the judged configuration if the latest briefing "
            "decided PROMOTE",
        ),
        ("rollback", "restore an archived production model of a symbol"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--symbol", required=True)
        cmd.add_argument("--artifacts-dir", help="SENSEQUANT_ARTIFACTS_DIR")
        if name == "promote":
            cmd.add_argument(
                "--partition",
                help="partition key to promote (default: newest student of the judged configuration)",
            )
        else:
            cmd.add_argument("--to", help="archive id (default: the most recent archive)")

    gc = sub.add_parser(
        "gc",
        help="delete uploads no version references and versions no longer kept (artifacts on object storage)",
    )
    gc.add_argument("--artifacts-dir", help="SENSEQUANT_ARTIFACTS_DIR")

    symbols = sub.add_parser("symbols", help="list or register symbols (the `symbols` partitions)")
    symbols.add_argument("action", choices=["list", "add", "remove"])
    symbols.add_argument("names", nargs="?", default="", help="comma-separated symbols for add/remove")
    return parser


def _export(args: argparse.Namespace) -> None:
    for flag, var in (
        ("data_source", "SENSEQUANT_DATA_SOURCE"),
        ("data_dir", "SENSEQUANT_DATA_DIR"),
        ("artifacts_dir", "SENSEQUANT_ARTIFACTS_DIR"),
    ):
        value = getattr(args, flag, None)
        if value:
            from sensequant_assets.object_store import is_object_location

            local = flag != "data_source" and not is_object_location(value)
            os.environ[var] = str(Path(value).resolve()) if local else value
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    from sensequant_assets.deployment.devserver import (
        DEPLOYMENT_ENV,
        INSTANCE_YAML,
        rename_moved_modules,
        write_instance_yaml,
    )

    rename_moved_modules(home)
    if not (home / "dagster.yaml").exists():
        # A new instance gets the deployment's settings, as `make run` writes them, so the CLI's runs
        # write their events as fast as the UI's (the event log keeps its engines between writes) and
        # a later `make run` on the same instance finds them. Without a source checkout: telemetry off.
        if INSTANCE_YAML.is_file():
            write_instance_yaml(home)
        else:
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    for name, value in DEPLOYMENT_ENV.items():  # a batched run's events written in one transaction
        os.environ.setdefault(name, value)
    # Dagster's beta/preview notices about APIs we chose knowingly would bury the summary.
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview)")


def _instance():
    from dagster import DagsterInstance

    return DagsterInstance.get()


def _line(key: str, status: str, detail: str) -> None:
    print(f"{key:<28} {status:<12} {detail}".rstrip(), flush=True)


def _windows(args: argparse.Namespace) -> list[str] | str:
    """The complete windows inside --start..--end, or why there are none (naming the range)."""
    from sensequant_assets.partitions import window_partitions, windows_between
    from sensequant_assets.settings import partition_settings

    first_start = partition_settings().start_date
    if args.start > args.end:
        return f"--start {args.start} is after --end {args.end}"
    if args.start < first_start:
        return (
            f"--start {args.start} is before SENSEQUANT_START_DATE={first_start}; windows start there "
            "(set SENSEQUANT_START_DATE to train earlier windows)"
        )
    windows = windows_between(args.start, args.end)
    if not windows:
        existing = window_partitions.get_partition_keys()
        latest = f"; the newest complete window starts {existing[-1]}" if existing else ""
        return (
            f"no complete window lies inside {args.start}..{args.end} (windows are "
            f"{partition_settings().window_months} months from {first_start}, and only complete "
            f"ones exist{latest})"
        )
    return windows


def train(args: argparse.Namespace) -> int:
    _export(args)
    from sensequant_assets.settings import SettingsError, forecast_horizon
    from sensequant_assets.sources.symbols import InvalidSymbolError, parse_symbols

    try:
        symbols = parse_symbols(args.symbols)
        windows = _windows(args)
        horizon = forecast_horizon()
    except (InvalidSymbolError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not symbols:
        print("error: --symbols names no symbol", file=sys.stderr)
        return 2
    if isinstance(windows, str):
        print(f"error: {windows}", file=sys.stderr)
        return 2
    try:
        from sensequant_assets.definitions import build_definitions
        from sensequant_assets.resources import market_data_from_env

        # Training reads the bars the source holds; it never fetches (no Breeze credentials needed).
        defs = build_definitions(fetch=False)
        market = market_data_from_env(plain=True, fetch=False)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return Trainer(args, defs, market, symbols, windows, horizon).run()
    except SettingsError as exc:  # raised before anything is written (see Trainer.fingerprints)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: any runs in flight were stopped (run_scheduler)
        print(
            "interrupted: any runs in flight were stopped and recorded as ended; the same command "
            "resumes with what is left",
            file=sys.stderr,
        )
        return 128 + getattr(exc, "signum", signal.SIGINT)


class Trainer:
    """One `sensequant train`: the plan, the batched runs (two per window, two at a time, as a
    backfill), the briefing."""

    def __init__(self, args, defs, market, symbols: list[str], windows: list[str], horizon: int) -> None:
        from dagster import AssetKey

        from sensequant_assets import train_plan
        from sensequant_assets.partitions import window_partitions

        self.args, self.defs, self.market = args, defs, market
        self.symbols, self.windows = symbols, windows
        self.force = bool(args.force)
        self.job = defs.resolve_job_def("train_job")
        graph = defs.resolve_asset_graph()
        code = {a: graph.get(AssetKey(a)).code_version for a in train_plan.ASSETS}
        self.expected = train_plan.expected_versions(code, QUIET, horizon)
        # Windows before the range that its teachers read (the configuration's lookback windows and
        # the warm-up before them): their stored bars, if stale, are refreshed first (the teacher
        # reads stored bars where there are some).
        lookback = self.expected.lookback_windows
        existing = set(window_partitions.get_partition_keys())
        reached = {w for window in windows for w, _, _ in train_plan.bars_before(window, lookback)}
        self.lead = sorted((reached & existing) - set(windows))
        self.outcomes: dict[str, PartitionOutcome] = {}  # the range's partitions
        self.lead_outcomes: dict[str, PartitionOutcome] = {}
        self.staged: dict[str, list[PartitionOutcome]] = {}  # outcomes of a window's stages so far
        self.run_ids: set[str] = set()  # this command's runs

    @cached_property
    def store(self):
        """The artifact store, opened once the runs have materialised something (not by --dry-run)."""
        from sensequant_assets.io_manager import ArtifactsResource

        return ArtifactsResource.from_env().store()

    def fingerprints(self) -> dict:
        """Bars fingerprints by symbol and window; symbols the source cannot serve fail here, named,
        before anything is written for them (no partition directory, no registration)."""
        from sensequant_assets.partitions import make_key
        from sensequant_assets.settings import SettingsError
        from sensequant_assets.sources.base import DataSourceError
        from sensequant_assets.train_plan import bars_fingerprints

        bars = {}
        for symbol in self.symbols:
            try:
                source = self.market.source_for(symbol)
                windows = [*self.lead, *self.windows]
                bars[symbol] = bars_fingerprints(source, symbol, windows, self.expected.lookback_windows)
            except SettingsError:
                raise  # the source itself is misconfigured: no symbol can train
            except (DataSourceError, OSError) as exc:
                message = str(exc) if str(exc).startswith(symbol) else f"{symbol}: {exc}"
                for window in self.windows:
                    key = str(make_key(symbol, window))
                    self.outcomes[key] = PartitionOutcome(key, "failed", message)
        return bars

    def run(self) -> int:
        started = time.perf_counter()
        bars = self.fingerprints()
        with _instance() as instance:
            return self._run_on(instance, bars, started)

    def _run_on(self, instance, bars: dict, started: float) -> int:
        from sensequant_assets.assets.partition_context import BACKFILL_POLICY
        from sensequant_assets.partitions import SYMBOLS_PARTITIONS_NAME
        from sensequant_assets.train_plan import InstanceState

        ready = [s for s in self.symbols if s in bars]
        self.instance, self.state, self.bars = instance, InstanceState(instance), bars
        if ready and not self.args.dry_run:
            known = set(instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))
            if new := [s for s in ready if s not in known]:
                instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, new)
        registered = instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME)
        self.order = {s: i for i, s in enumerate(registered)}
        self.order.update({s: len(registered) + i for i, s in enumerate(ready) if s not in self.order})
        # As many partitions per run as the backfill policy gives a backfill's runs (no limit: a whole
        # window); no policy (SENSEQUANT_BATCH_BACKFILLS=0) is one run per partition, as a backfill.
        limit = BACKFILL_POLICY.max_partitions_per_run if BACKFILL_POLICY else 1
        self.max_per_run = limit or max(1, len(ready))
        print(
            f"training {len(self.symbols)} symbols x {len(self.windows)} windows "
            f"({self.windows[0]} .. {self.windows[-1]}) on DAGSTER_HOME={os.environ['DAGSTER_HOME']}"
            + (" (--force: everything retrains)" if self.force else ""),
            flush=True,
        )
        plans = self._plan(ready)
        if self.args.dry_run:
            return 0
        from sensequant_assets.assets.workers import run_workers
        from sensequant_assets.run_scheduler import run_jobs

        # As many runs at once as a step has worker processes: one per usable CPU, or
        # SENSEQUANT_RUN_WORKERS.
        run_jobs(self._jobs(plans, ready), self._execute, self._lost, slots=run_workers())
        elapsed = time.perf_counter() - started
        total = len(self.symbols) * len(self.windows)
        counts = {
            s: sum(o.status == s for o in self.outcomes.values())
            for s in ("materialised", "up to date", "skipped", "failed")
        }
        rate = counts["failed"] / total
        print(
            f"total: {total} partitions, {counts['materialised']} materialised, {counts['up to date']} "
            f"up to date, {counts['skipped']} skipped, {counts['failed']} failed (failure rate {rate:.0%}, "
            f"limit {self.args.max_failure_rate:.0%}) in {elapsed:.1f}s ({len(self.run_ids)} runs)",
            flush=True,
        )
        briefing_ok = _brief(self.defs, instance, self.symbols, rerun=counts["materialised"] > 0)
        return 1 if rate > self.args.max_failure_rate or not briefing_ok else 0

    def _plan(self, ready: list[str]) -> dict[str, dict]:
        """The plan of every window up front, printed: what will run and why. Each window is planned
        again from the instance just before it runs, so what the runs of earlier windows did (or
        failed to do) counts."""
        from sensequant_assets.partitions import make_key
        from sensequant_assets.train_plan import plan_window

        plans: dict[str, dict] = {}
        for window in [*self.lead, *self.windows]:
            covered = [s for s in ready if self.bars[s][window].window is not None]
            plans[window] = plan_window(
                self.state,
                window,
                covered,
                self.bars,
                self.expected,
                force=self.force and window not in self.lead,
                planned=plans,
                bars_only=window in self.lead,
            )
            for symbol in ready if window not in self.lead else ():
                if symbol not in covered:
                    key = str(make_key(symbol, window))
                    why = f"{symbol}: the data source does not cover window {window} completely yet"
                    self.outcomes[key] = PartitionOutcome(key, "skipped", why)
        reader = "lookback or warm-up" if self.expected.lookback_windows else "warm-up"
        for window in self.lead:
            for plan in plans[window].values():
                if plan.reasons:
                    _line(plan.key, "to run", f"{plan.why()}; the {reader} of {plan.symbol}'s range reads it")
        todo = 0
        for symbol in self.symbols:
            for window in self.windows:
                key = str(make_key(symbol, window))
                plan = plans[window].get(symbol)
                if plan is None:
                    outcome = self.outcomes[key]
                    _line(key, outcome.status, outcome.detail)
                elif plan.blocked:
                    todo += 1
                    _line(key, "blocked", plan.blocked)
                elif plan.reasons:
                    todo += 1
                    _line(key, "to run", plan.why())
                else:
                    notes = f"({'; '.join(plan.notes)})" if plan.notes else ""
                    _line(key, "up to date", notes)
                    self.outcomes[key] = PartitionOutcome(key, "up to date", notes)
        total = len(self.symbols) * len(self.windows)
        fresh = sum(o.status == "up to date" for o in self.outcomes.values())
        print(f"plan: {todo} of {total} partitions to run, {fresh} up to date", flush=True)
        return plans

    # -- the runs --------------------------------------------------------------------------

    def _jobs(self, plans: dict[str, dict], ready: list[str]) -> list:
        """The windows with work, as jobs in priority order: each training after the previous one
        (its teacher reads the earlier windows' bars) and after the refresh of the bars before the
        range, each evaluation after its window's training (it scores the previous window's student
        on this window's labels). A free slot goes to the training first (the others wait on it),
        so an evaluation runs beside the next window's training."""
        from sensequant_assets.run_scheduler import Job

        lead: list[Job] = []
        trainings: list[Job] = []
        evaluations: list[Job] = []
        for window in [*self.lead, *self.windows]:
            if not any(plan.reasons or plan.blocked for plan in plans[window].values()):
                continue
            symbols = [s for s in ready if s in plans[window]]
            if window in self.lead:
                lead.append(Job(f"bars {window}", self._window(window, symbols, "bars")))
                continue
            before = trainings[-1:] or lead
            trainings.append(Job(f"train {window}", self._stage(window, symbols, "train"), before))
            evaluate = self._window(window, symbols, "evaluate")
            evaluations.append(Job(f"evaluate {window}", evaluate, trainings[-1:]))
        return [*lead, *trainings, *evaluations]

    def _window(self, window: str, symbols: list[str], stage: str) -> Generator:
        """A window's last stage, then each partition's outcome over its stages, printed."""
        from sensequant_assets.partitions import make_key

        keys = {s: str(make_key(s, window)) for s in symbols}
        failed = {s for s, key in keys.items() if any(o.status == "failed" for o in self.staged.get(key, []))}
        yield from self._stage(window, [s for s in symbols if s not in failed], stage)
        outcomes = self.lead_outcomes if stage == "bars" else self.outcomes
        for symbol in sorted(symbols, key=self.order.__getitem__):
            key = keys[symbol]
            staged = self.staged.pop(key, [])
            if not staged and key in outcomes:
                continue
            outcome = (
                _merge(key, staged, lambda: self.store) if staged else PartitionOutcome(key, "up to date", "")
            )
            outcomes[key] = outcome
            _line(key, outcome.status, outcome.detail)

    def _stage(self, window: str, symbols: list[str], stage: str) -> Generator:
        """Plan `stage` of `window` for `symbols` from the instance and yield its runs: one per set of
        steps and contiguous range of symbols (Dagster runs a range of partition keys, as a backfill
        does), at most the backfill policy's partitions per run. A failed run of several partitions is
        retried in halves, so a bad partition costs its neighbours one retry, not their training."""
        from sensequant_assets.train_plan import plan_window

        bars_only = stage == "bars"
        plans = plan_window(
            self.state,
            window,
            symbols,
            self.bars,
            self.expected,
            force=self.force and not bars_only,
            done_runs=self.run_ids,
            bars_only=bars_only,
        )
        groups: dict[tuple[str, ...], list[str]] = {}
        for symbol in sorted(symbols, key=self.order.__getitem__):
            plan = plans[symbol]
            if plan.blocked:  # its teacher cannot run, nor anything after it
                if stage == "train":
                    self.staged.setdefault(plan.key, []).append(
                        PartitionOutcome(plan.key, "failed", plan.blocked)
                    )
            elif steps := tuple(step for step in plan.steps if step in STAGES[stage]):
                groups.setdefault(steps, []).append(symbol)
        for steps, members in groups.items():
            for chunk in self._chunks(members):
                run_id, results, success = yield (window, steps, chunk, str(uuid.uuid4()))
                if run_id:  # a run that was created
                    self.run_ids.add(run_id)
                if not success and len(chunk) > 1:
                    error = next((o.detail for o in results.values() if o.status == "failed"), "run failed")
                    print(
                        f"  a run of {len(chunk)} partitions of window {window} failed ({error}); "
                        "retrying in halves to isolate the failing partitions",
                        flush=True,
                    )
                    half = len(chunk) // 2
                    yield from self._stage(window, chunk[:half], stage)
                    yield from self._stage(window, chunk[half:], stage)
                    continue
                for key, outcome in results.items():
                    self.staged.setdefault(key, []).append(outcome)

    def _chunks(self, members: list[str]) -> list[list[str]]:
        """Contiguous runs of the registered order (a partition range covers every key in between),
        cut at the backfill policy's size."""
        chunks: list[list[str]] = []
        for symbol in members:
            if (
                chunks
                and self.order[symbol] == self.order[chunks[-1][-1]] + 1
                and len(chunks[-1]) < self.max_per_run
            ):
                chunks[-1].append(symbol)
            else:
                chunks.append([symbol])
        return chunks

    def _execute(self, request: tuple) -> tuple[str, dict[str, PartitionOutcome], bool]:
        """One run (in a forked child, see run_scheduler): its id, each partition's outcome, success.

        A child opens its own instance: a SQLite connection must not cross a fork."""
        import json

        from dagster import AssetKey, DagsterInstance

        from sensequant_assets.partitions import make_key
        from sensequant_assets.train_plan import BARS_TAG, STEP

        window, steps, symbols, run_id = request
        keys = [AssetKey(a) for step in steps for a in STEP[step].assets]
        tags = {
            "sensequant/trigger": "cli",
            "dagster/asset_partition_range_start": str(make_key(symbols[0], window)),
            "dagster/asset_partition_range_end": str(make_key(symbols[-1], window)),
            BARS_TAG: json.dumps({s: self.bars[s][window].tag() for s in symbols}, sort_keys=True),
            **self.expected.tags(),
        }
        with DagsterInstance.get() as instance:
            result = self.job.execute_in_process(
                instance=instance,
                run_config=QUIET,
                raise_on_error=False,
                asset_selection=keys,
                tags=tags,
                run_id=run_id,
            )
        return run_id, _outcomes(result, window, symbols, [a.to_user_string() for a in keys]), result.success

    def _lost(self, request: tuple, why: str) -> tuple[str, dict[str, PartitionOutcome], bool]:
        """A run whose process raised or died: its partitions failed, and the run, if it was left
        started, is marked failed so the UI does not show it running for ever."""
        from sensequant_assets.deployment.run_forkserver import fail_unfinished_run
        from sensequant_assets.partitions import make_key

        window, _, symbols, run_id = request
        detail = f"the run of window {window} ended without a result: {why}"
        created = True  # unless the instance says the run was never created
        try:
            run = fail_unfinished_run(self.instance, run_id, f"`sensequant train`'s run process ended: {why}")
            created = run is not None
        except Exception as exc:  # e.g. the database locked: the partitions failed all the same
            detail += f" (run {run_id[:8]} could not be marked failed either: {exc})"
        keys = [str(make_key(s, window)) for s in symbols]
        return (
            run_id if created else "",
            {key: PartitionOutcome(key, "failed", detail) for key in keys},
            False,
        )


def _innermost(error) -> str:
    """The user's exception behind Dagster's wrappers, e.g. `DataSourceError: <symbol, file, rule>`."""
    while error.cause is not None:
        error = error.cause
    lines = error.message.strip().splitlines()
    return lines[-1] if lines else error.cls_name or "unknown error"


def _outcomes(result, window: str, symbols: list[str], assets: list[str]) -> dict[str, PartitionOutcome]:
    """Each partition of a run from its events: failed (the run's first error), materialised (its
    directory, plus the steps that skipped it) or skipped (the reason)."""
    from sensequant_assets.assets.partition_context import SKIP_METADATA_KEY
    from sensequant_assets.partitions import make_key

    errors = [
        f"{e.step_key}: {_innermost(e.step_failure_data.error)}"
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data.error
    ]
    done: set[tuple[str, str]] = set()
    skipped: dict[tuple[str, str], str] = {}
    for e in result.all_events:
        if e.event_type_value == "ASSET_OBSERVATION":
            obs = e.asset_observation_data.asset_observation
            if SKIP_METADATA_KEY in obs.metadata:
                skipped[(obs.asset_key.to_user_string(), str(obs.partition))] = obs.metadata[
                    SKIP_METADATA_KEY
                ].value
    for e in result.get_asset_materialization_events():
        where = (e.asset_key.to_user_string(), str(e.partition))
        skip = e.materialization.metadata.get(SKIP_METADATA_KEY)
        if skip is not None:
            skipped[where] = skip.value
        else:
            done.add(where)
    out = {}
    for symbol in symbols:
        key = str(make_key(symbol, window))
        missing = [a for a in assets if (a, key) not in done and (a, key) not in skipped]
        reasons = {skipped[(a, key)]: a for a in assets if (a, key) in skipped}
        if missing:
            error = errors[0] if errors else f"{', '.join(missing)} not materialised"
            out[key] = PartitionOutcome(key, "failed", error)
        else:
            notes = " ".join(f"({asset} skipped: {reason})" for reason, asset in reasons.items())
            if any((a, key) in done for a in assets):
                out[key] = PartitionOutcome(key, "materialised", "", notes)
            else:
                out[key] = PartitionOutcome(key, "skipped", next(iter(reasons)), notes)
    return out


def _merge(key: str, staged: list[PartitionOutcome], store: Callable) -> PartitionOutcome:
    """A partition's outcome over its window's runs: failed if one failed, else materialised (its
    directory in `store()`, and the steps of any run that skipped it) if one materialised, else
    skipped."""
    for status in ("failed", "materialised", "skipped"):
        found = [o for o in staged if o.status == status]
        if status == "materialised" and found:
            notes = [o.notes for o in staged if o.notes]
            return PartitionOutcome(key, status, " ".join([str(store().partition_dir(key)), *notes]))
        if found:
            return found[0]
    return PartitionOutcome(key, "up to date", "")


def _briefing_is_current(instance) -> bool:
    """Whether the stored briefing was made after the newest evaluation (of any symbol)."""
    from dagster import AssetKey

    def newest(asset: str) -> int | None:
        records = instance.fetch_materializations(AssetKey(asset), limit=1).records
        return records[0].storage_id if records else None

    briefing, evaluation = newest("promotion_briefing"), newest("student_evaluation")
    return briefing is not None and (evaluation is None or briefing > evaluation)


def _brief(defs, instance, symbols: list[str], rerun: bool = True) -> bool:
    """Run the briefing (and promotion) job unless the stored briefing already follows the newest
    evaluation; print the decision of every trained symbol."""
    briefing = None
    if not rerun and _briefing_is_current(instance):
        from sensequant_assets.io_manager import ArtifactError, ArtifactsResource, codec_for

        try:
            store = ArtifactsResource.from_env().store()
            briefing = store.read_fixed(codec_for("promotion_briefing"), "promotion_briefing")
            print(f"promotion briefing (up to date, generated {briefing.generated_at}):")
        except ArtifactError:
            briefing = None  # its files are gone or damaged: make it again
    if briefing is None:
        result = defs.resolve_job_def("briefing_job").execute_in_process(
            instance=instance, run_config=QUIET, raise_on_error=False, tags={"sensequant/trigger": "cli"}
        )
        if not result.success:
            failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
            print(f"briefing failed: {failures[0].strip() if failures else 'run failed'}")
            return False
        briefing = result.output_for_node("promotion_briefing")
        print("promotion briefing:")
    if not any(entry["symbol"] in symbols for entry in briefing.symbols):
        print("  (no evaluated window yet: a symbol needs two consecutive trained windows)")
    for entry in briefing.symbols:
        if entry["symbol"] not in symbols:
            continue
        ic = entry["ic"]
        ci = "IC n/a"
        if ic.get("ci_low") is not None:
            ci = f"IC {ic['pooled']:+.3f} [{ic['ci_low']:+.3f}, {ic['ci_high']:+.3f}]"
            ci += f" q={ic['q_value']:.3g}" if ic.get("q_value") is not None else ""
        why = ", ".join(entry["reasons"]) or "all gates passed"
        print(f"  {entry['symbol']:<14} {entry['decision']:<18} {ci}  ({why})")
    return True


def symbols_command(args: argparse.Namespace) -> int:
    _export(args)
    from sensequant_assets.partitions import SYMBOLS_PARTITIONS_NAME
    from sensequant_assets.sources.symbols import InvalidSymbolError, parse_symbols

    instance = _instance()
    known = list(instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))
    if args.action == "list":
        print("\n".join(known) if known else "(no symbols registered)")
        return 0
    try:
        names = parse_symbols(args.names)
    except InvalidSymbolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not names:
        print(f"error: `symbols {args.action}` needs a comma-separated list of symbols", file=sys.stderr)
        return 2
    if args.action == "add":
        new = [n for n in names if n not in known]
        if new:
            instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, new)
        print(f"added: {', '.join(new) or '(none, all known)'}")
    else:
        for name in names:
            if name in known:
                instance.delete_dynamic_partition(SYMBOLS_PARTITIONS_NAME, name)
        print(f"removed: {', '.join(n for n in names if n in known) or '(none)'}")
    return 0


def registry_command(args: argparse.Namespace) -> int:
    """`promote` follows the stored briefing's decision; `rollback` restores an archive."""
    _export(args)
    from sensequant_assets import registry
    from sensequant_assets.io_manager import ArtifactError, ArtifactsResource, codec_for
    from sensequant_assets.sources.symbols import InvalidSymbolError, validate_symbol

    artifacts = ArtifactsResource.from_env()
    base = artifacts.location
    try:
        symbol = validate_symbol(args.symbol)
        if args.command == "rollback":
            record = registry.rollback(base, symbol, args.to or None, reason="sensequant rollback")
            print(f"{symbol}: production model is now {record.partition_key} (restored)")
            return 0
        briefing = artifacts.store().read_fixed(codec_for("promotion_briefing"), "promotion_briefing")
        entry = next((b for b in briefing.symbols if b["symbol"] == symbol), None)
        if entry is None:
            print(f"error: briefing {briefing.generated_at} has no decision for {symbol}", file=sys.stderr)
            return 1
        judged = entry.get("config_id")
        if judged is None:
            print(
                f"error: briefing {briefing.generated_at} names no judged configuration for {symbol}; "
                "re-run the briefing",
                file=sys.stderr,
            )
            return 1
        key = args.partition
        if not key:
            from dagster import AssetKey

            materialised = _instance().get_materialized_partitions(AssetKey("student_model"))
            key = registry.newest_student_of_config(base, symbol, materialised, judged).partition_key
            if key is None:
                print(
                    f"error: no materialised student_model of {symbol} of the judged configuration {judged}",
                    file=sys.stderr,
                )
                return 1
        decision, gates = entry["decision"], entry["gates"]
        record = registry.promote(
            base, symbol, key, decision, gates, reason="sensequant promote", config_id=judged
        )
        print(f"{symbol}: production model is now {record.partition_key} (configuration {judged})")
        return 0
    except (InvalidSymbolError, ArtifactError, registry.RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def gc_command(args: argparse.Namespace) -> int:
    """Garbage collection of an object-store location; a local directory has nothing to collect."""
    _export(args)
    from sensequant_assets.io_manager import ArtifactError, ArtifactsResource

    try:
        store = ArtifactsResource.from_env().store()
        if not hasattr(store, "collect_garbage"):
            print(
                f"{store.base_dir} is a local directory: an interrupted commit is undone by the next read "
                "or write of its partition; nothing to collect"
            )
            return 0
        counts = store.collect_garbage()
    except (ArtifactError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{store.base_dir}: {counts['trees']} versioned trees checked; removed {counts['prefixes']} "
        f"unreferenced upload(s) and {counts['manifests']} version(s) no longer kept (anything younger "
        "than 6 hours stays: a commit may still be in flight)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "train":
        return train(args)
    if args.command in ("promote", "rollback"):
        return registry_command(args)
    if args.command == "gc":
        return gc_command(args)
    return symbols_command(args)


if __name__ == "__main__":
    sys.exit(main())
