"""The briefing and the sensors at index scale, on the instance a kept scale run left behind.

`bench/backfill.py --keep` leaves `<workdir>/sensequant-bench-*/backfill-1/` with the DAGSTER_HOME
and the artifacts of every partition it trained. This script times, against that instance, what
the scale run cannot time while its backfill runs (issue 11's targets):

- `promotion_briefing` from scratch (no cache), again with nothing changed, after one partition's
  evaluation was re-materialised, and after a whole window's evaluations were (every symbol's
  record changed);
- one tick of `model_decay`, `new_data` and `symbol_universe` with a production model for every
  symbol (each symbol's newest student is installed with the registry, as a PROMOTE would), and
  the size of the cursor each writes.

    .venv/bin/python bench/scale_after.py --run-dir /work/bench/sensequant-bench-XXXX/backfill-1 \
        --symbols 500 --windows 20

It changes the instance and the artifacts it is pointed at (new runs, production models): use it on
a benchmark's leftovers only. Seconds are wall time of one invocation on a machine that should be
otherwise idle.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backfill import code_env, make_universe, time_asset_page

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="backfill-1 of a kept scale run")
    parser.add_argument("--symbols", type=int, required=True)
    parser.add_argument("--windows", type=int, required=True)
    parser.add_argument(
        "--evaluate-shard",
        metavar="K/M",
        help="only evaluate the missing windows i with i %% M == K, then stop (run M at once: one core each)",
    )
    parser.add_argument(
        "--cost-bps",
        type=float,
        default=11.0,
        help="re-evaluate at this cost (not the default 10) so that the evaluations really change",
    )
    parser.add_argument(
        "--changes-only", action="store_true", help="skip the briefings from scratch and unchanged"
    )
    parser.add_argument("--no-briefing", action="store_true", help="only the sensors and the UI")
    parser.add_argument(
        "--ui-rounds",
        type=int,
        default=5,
        help="then start dagster dev on the instance and time the UI's asset-page queries this often",
    )
    args = parser.parse_args()
    universe = make_universe(args.symbols, args.windows)
    os.environ.update(universe.env())
    os.environ["SENSEQUANT_ARTIFACTS_DIR"] = str(args.run_dir / "artifacts")
    os.environ["DAGSTER_HOME"] = str(args.run_dir / "dagster_home")

    # Imported after the environment is set: the definitions read it at import.
    from dagster import AssetKey, DagsterInstance, build_sensor_context

    from sensequant_assets import registry
    from sensequant_assets.definitions import defs
    from sensequant_assets.io_manager import ArtifactsResource
    from sensequant_assets.resources import market_data_from_env
    from sensequant_assets.sensors import model_decay, new_data, symbol_universe

    instance = DagsterInstance.get()
    briefing = defs.resolve_job_def("briefing_job")
    train = defs.resolve_job_def("train_job")

    def brief(label: str) -> None:
        start = time.perf_counter()
        result = briefing.execute_in_process(
            instance=instance, asset_selection=[AssetKey("promotion_briefing")], raise_on_error=True
        )
        seconds = time.perf_counter() - start
        [mat] = result.asset_materializations_for_node("promotion_briefing")
        meta = {k: v.value for k, v in mat.metadata.items()}
        print(
            f"briefing {label}: {seconds:.2f} s, symbols {meta.get('symbols')}, "
            f"recomputed {meta.get('symbols_recomputed')}",
            flush=True,
        )

    def evaluate(start_key: str, end_key: str, cost_bps: float | None = None) -> float:
        """Evaluate a range; `cost_bps` other than the default changes every evaluation's bytes (the
        briefing's cache is keyed on content: re-evaluating identical bytes changes nothing)."""
        config = {"ops": {"student_evaluation": {"config": {"cost_bps": cost_bps}}}} if cost_bps else None
        begin = time.perf_counter()
        result = train.execute_in_process(
            instance=instance,
            asset_selection=[AssetKey("student_evaluation")],
            tags={RANGE_START: start_key, RANGE_END: end_key},
            run_config=config,
            raise_on_error=True,
        )
        assert result.success
        return time.perf_counter() - begin

    evaluated = instance.get_materialized_partitions(AssetKey("student_evaluation"))
    todo = [w for w in universe.windows[1:] if f"{universe.symbols[-1]}|{w}" not in evaluated]
    if args.evaluate_shard:
        k, m = (int(x) for x in args.evaluate_shard.split("/"))
        todo = [w for i, w in enumerate(todo) if i % m == k]
    if todo:  # a scale run stopped before its evaluation backfill: evaluate window by window
        begin = time.perf_counter()
        for window in todo:
            seconds = evaluate(f"{universe.symbols[0]}|{window}", f"{universe.symbols[-1]}|{window}")
            print(f"student_evaluation of window {window}: {seconds:.1f} s", flush=True)
        spent = time.perf_counter() - begin
        print(f"evaluated {len(todo)} windows in {spent:.0f} s (in-process runs, one core)", flush=True)
    if args.evaluate_shard:
        return
    if not args.no_briefing:
        time_briefings(args, universe, brief, evaluate)

    base = os.environ["SENSEQUANT_ARTIFACTS_DIR"]
    installed = 0
    for symbol in universe.symbols:
        if registry.current(base, symbol) is None:
            registry.promote(base, symbol, f"{symbol}|{universe.windows[-2]}", registry.PROMOTE, None)
            installed += 1
    print(f"installed {installed} production models (window {universe.windows[-2]})", flush=True)

    cursors: dict[str, str | None] = {}
    resources = {"market_data": market_data_from_env(), "artifacts": ArtifactsResource.from_env()}
    for sensor in (model_decay, new_data, new_data, symbol_universe):
        # new_data twice: its first tick fingerprints every symbol, later ones mostly compare tokens.
        context = build_sensor_context(
            instance=instance, cursor=cursors.get(sensor.name), definitions=defs, resources=resources
        )
        start = time.perf_counter()
        result = sensor.evaluate_tick(context)
        seconds = time.perf_counter() - start
        cursors[sensor.name] = result.cursor
        print(
            f"sensor {sensor.name}: one tick {seconds:.2f} s, {len(result.run_requests or [])} run "
            f"request(s), cursor {len(result.cursor or '')} bytes; skip: {(result.skip_message or '')[:160]}",
            flush=True,
        )

    if args.ui_rounds:
        time_ui(instance, args)


def time_briefings(args: argparse.Namespace, universe: Any, brief: Callable, evaluate: Callable) -> None:
    """The briefing from scratch, unchanged, and after one partition's and one window's evaluations
    changed (re-evaluated at another cost: the briefing's cache is keyed on content)."""
    if not args.changes_only:
        brief("from scratch (no cache)")
        brief("again, nothing changed")
    first, end, last = universe.symbols[0], universe.symbols[-1], universe.windows[-1]
    seconds = evaluate(f"{first}|{last}", f"{first}|{last}", cost_bps=args.cost_bps)
    print(f"re-evaluated {first}|{last} at {args.cost_bps} bps in {seconds:.2f} s", flush=True)
    brief("after one partition's evaluation changed")
    seconds = evaluate(f"{first}|{last}", f"{end}|{last}", cost_bps=args.cost_bps)
    n = len(universe.symbols)
    print(f"re-evaluated window {last}, {n} symbols, at {args.cost_bps} bps in {seconds:.1f} s", flush=True)
    brief(f"after window {last}'s evaluations changed for every symbol")


def time_ui(instance: object, args: argparse.Namespace) -> None:
    """The UI's asset-page queries of student_model against the whole universe, server otherwise idle.

    Runs the scale run left queued are cancelled first: the daemon would start them.
    """
    from dagster import DagsterRunStatus, RunsFilter

    from sensequant_assets.deployment.devserver import DagsterDev

    queued = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]))
    for run in queued:
        instance.report_run_canceled(run, message="bench/scale_after.py: left over by the scale run")
    print(f"cancelled {len(queued)} run(s) the scale run left queued", flush=True)
    code = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k.startswith("SENSEQUANT_")}
    dev = DagsterDev(
        Path(os.environ["DAGSTER_HOME"]),
        env={**env, **code_env(code)},
        cwd=code,
        log=args.run_dir / "scale_after_dev.log",
    )
    with dev:
        rounds = [time_asset_page(dev) for _ in range(args.ui_rounds)]
    for name in rounds[0]:
        values = sorted(r[name] for r in rounds)
        print(
            f"UI asset page of student_model, {name}: median {values[len(values) // 2]:.3f} s, "
            f"max {values[-1]:.3f} s over {len(values)} rounds (server idle but for its sensors)"
        )


if __name__ == "__main__":
    main()
