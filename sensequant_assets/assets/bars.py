"""`market_bars`: one window's daily bars from the configured source."""

from collections.abc import Iterator

import pandas as pd
from dagster import AssetExecutionContext, Failure, MetadataValue, asset

from sensequant_assets.assets.catalog import BARS_SCHEMA, OWNERS, column_schema
from sensequant_assets.assets.partition_context import BACKFILL_POLICY, emit, partition_windows
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.resources import MarketDataResource
from sensequant_assets.sources.symbols import key_symbol_problem


def _metadata(bars: pd.DataFrame) -> dict:
    return {
        "rows": len(bars),
        "first_bar": str(bars.index[0].date()),
        "last_bar": str(bars.index[-1].date()),
        "last_close": MetadataValue.float(float(bars["close"].iloc[-1])),
    }


@asset(
    partitions_def=symbol_window_partitions,
    io_manager_key="artifacts_io_manager",
    output_required=False,
    backfill_policy=BACKFILL_POLICY,
    code_version="1",
    group_name="training",
    description="Daily OHLCV bars of one symbol and window, validated, stored as bars.parquet.",
    metadata=column_schema(BARS_SCHEMA),
    kinds={"pandas", "parquet"},
    owners=OWNERS,
)
def market_bars(context: AssetExecutionContext, market_data: MarketDataResource) -> Iterator:
    values, skipped = {}, {}
    for pw in partition_windows(context):
        if (problem := key_symbol_problem(pw.symbol)) is not None:
            if len(context.partition_keys) == 1:  # asked for this partition alone: fail, saying why
                raise Failure(description=f"{pw.label}: {problem}", allow_retries=False)
            skipped[pw.key] = f"{pw.label}: {problem}"  # in a batch: the others go on
            continue
        bars = market_data.source_for(pw.symbol).bars(pw.symbol, pw.start, pw.end)
        if bars.empty:
            skipped[pw.key] = f"{pw.label}: the data source has no bars in this window"
        else:
            values[pw.key] = bars
    yield from emit(context, "result", values, skipped, _metadata, ["market_bars"])
