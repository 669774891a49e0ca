"""Time `model_decay` ticks with a production model for each of N symbols.

    .venv/bin/python bench/decay_tick.py --symbols 500 --ticks 3

Builds an on-disk SQLite instance in a temporary directory: N symbols registered, each with a
tiny real production model on the last-but-two window (installed through the registry) and
evaluations of the two newer windows recorded as materialisations, as the real evaluation
records them. Prints the wall time of each tick (the sensor as the daemon calls it).
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
    root = Path(tempfile.mkdtemp(prefix="decay-tick-"))
    artifacts, home = root / "models", root / "home"
    home.mkdir()
    os.environ["SENSEQUANT_ARTIFACTS_DIR"] = str(artifacts)
    os.environ.setdefault("SENSEQUANT_START_DATE", "2016-01-01")

    from dagster import AssetMaterialization, DagsterInstance, MetadataValue, build_sensor_context

    from sensequant_assets.definitions import defs
    from sensequant_assets.deployment.devserver import write_instance_yaml
    from sensequant_assets.io_manager import ArtifactsResource
    from sensequant_assets.partitions import window_partitions
    from sensequant_assets.resources import MarketDataResource
    from sensequant_assets.sensors import model_decay
    from sensequant_tests.pipeline_helpers import promote_toy_model

    write_instance_yaml(home)
    windows = window_partitions.get_partition_keys()
    own = windows[-3]
    symbols = [f"S{i:04d}" for i in range(args.symbols)]
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbols", symbols)
        started = time.perf_counter()
        for symbol in symbols:
            promote_toy_model(artifacts, f"{symbol}|{own}")
            for window in windows[-2:]:
                metadata = {
                    "auc": MetadataValue.float(0.55),
                    "model_partition": MetadataValue.text(f"{symbol}|{own}"),
                }
                instance.report_runless_asset_event(
                    AssetMaterialization(
                        "student_evaluation", partition=f"{symbol}|{window}", metadata=metadata
                    )
                )
        print(f"setup: {time.perf_counter() - started:.1f} s for {len(symbols)} production models")
        market = MarketDataResource(data_source="synthetic")
        for tick in range(args.ticks):
            with build_sensor_context(
                instance=instance,
                definitions=defs,
                resources={"market_data": market, "artifacts": ArtifactsResource.from_env()},
            ) as ctx:
                started = time.perf_counter()
                result = model_decay(ctx)
                seconds = time.perf_counter() - started
            outcome = (
                result.skip_reason.skip_message[:80]
                if result.skip_reason
                else f"{len(result.run_requests)} requests"
            )
            print(f"tick {tick + 1}: {seconds:.2f} s ({outcome})")


if __name__ == "__main__":
    main()
