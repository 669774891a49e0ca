"""Time `follow_upstream` ticks at index scale: N symbols x every window waiting, or being checked.

    .venv/bin/python bench/follow_tick.py --symbols 500 --ticks 3

On an on-disk SQLite instance (the deployment's `dagster.yaml`), every window's teacher of N symbols
is due (20 windows with the default start date: 10,000 items at 500 symbols), and each tick is timed
as the daemon calls it, in two situations:

- waiting: a backfill in flight holds every one of them (25 requested backfills of N/25 symbols,
  and 25 started ranged runs of other symbols), as while a whole-index backfill trains: each tick
  loads the waiting state, indexes what is in flight and keeps them waiting;
- answered: every teacher has a materialisation newer than its change, so each tick checks all of
  them against the event log (newest storage ids, their records, their runs) and drops them.

The setup reports a market_bars and a teacher materialisation per partition (minutes at 500 symbols).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--ticks", type=int, default=3)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="follow-tick-"))
    artifacts, home = root / "models", root / "home"
    home.mkdir()
    os.environ["SENSEQUANT_ARTIFACTS_DIR"] = str(artifacts)
    os.environ.setdefault("SENSEQUANT_START_DATE", "2016-01-01")

    from dagster import (
        AssetKey,
        AssetMaterialization,
        DagsterInstance,
        DagsterRunStatus,
        build_sensor_context,
    )
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
    from dagster._core.definitions.events import AssetKeyPartitionKey
    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    from sensequant_assets.definitions import defs
    from sensequant_assets.deployment.devserver import write_instance_yaml
    from sensequant_assets.follow import FOLLOWERS, TEACHER, _save, follow_upstream
    from sensequant_assets.io_manager import ArtifactsResource
    from sensequant_assets.partitions import SYMBOLS_PARTITIONS_NAME, window_partitions
    from sensequant_assets.sensors import RANGE_END, RANGE_START

    write_instance_yaml(home)
    windows = window_partitions.get_partition_keys()
    symbols = [f"S{i:04d}" for i in range(args.symbols)]
    others = [f"X{i:04d}" for i in range(args.symbols)]  # what the started runs train
    graph = defs.resolve_asset_graph()
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, symbols + others)
        started = time.perf_counter()
        for symbol in symbols:
            for window in windows:
                for asset in ("market_bars", TEACHER):
                    instance.report_runless_asset_event(
                        AssetMaterialization(asset, partition=f"{symbol}|{window}")
                    )
        print(f"setup: {time.perf_counter() - started:.1f} s for {len(symbols) * len(windows)} partitions")
        latest = instance.fetch_materializations(AssetKey(TEACHER), limit=1).records[0].storage_id
        due = {(TEACHER, f"{s}|{w}"): [1, 1, {"": 0.0}] for s in symbols for w in windows}
        artifacts = ArtifactsResource.from_env()
        cursor = _save(artifacts.store(), latest, due)
        chunk = max(1, len(symbols) // 25)
        backfills = []
        for b in range(25):
            part = [*symbols[b * chunk : (b + 1) * chunk], *others[b * chunk : (b + 1) * chunk]]
            keys = {
                AssetKeyPartitionKey(AssetKey(a), f"{s}|{w}")
                for a in ("market_bars", *FOLLOWERS)
                for s in part
                for w in windows
            }
            backfill = PartitionBackfill.from_asset_graph_subset(
                backfill_id=f"bench{b}",
                backfill_timestamp=time.time(),
                tags={},
                dynamic_partitions_store=instance,
                asset_graph_subset=AssetGraphSubset.from_asset_partition_set(keys, graph),
                title=None,
                description=None,
                run_config=None,
            )
            instance.add_backfill(backfill)
            backfills.append(backfill)
            run_symbols = others[b * chunk : (b + 1) * chunk] or others[:1]
            instance.add_run(
                DagsterRun(
                    job_name="__ASSET_JOB",
                    run_id=make_new_run_id(),
                    status=DagsterRunStatus.STARTED,
                    asset_selection=frozenset(AssetKey(a) for a in ("market_bars", *FOLLOWERS)),
                    tags={
                        RANGE_START: f"{run_symbols[0]}|{windows[-1]}",
                        RANGE_END: f"{run_symbols[-1]}|{windows[-1]}",
                    },
                )
            )
        state = sum(p.stat().st_size for p in (artifacts / ".state").iterdir())
        print(f"{len(due)} teachers due; waiting state {state / 1024:.0f} KiB; cursor {len(cursor)} bytes")

        def tick(what: str, number: int) -> None:
            with build_sensor_context(
                instance=instance, cursor=cursor, definitions=defs, resources={"artifacts": artifacts}
            ) as ctx:
                began = time.perf_counter()
                result = follow_upstream(ctx)
                seconds = time.perf_counter() - began
            outcome = result.skip_reason.skip_message[:90] if result.skip_reason else result.run_requests
            print(f"{what} tick {number}: {seconds:.2f} s, cursor {len(result.cursor)} bytes ({outcome})")

        for number in range(1, args.ticks + 1):
            tick("waiting", number)
        for backfill in backfills:
            instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS))
        for number in range(1, args.ticks + 1):
            tick("answered", number)


if __name__ == "__main__":
    main()
