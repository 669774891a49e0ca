"""`market_bars`: one window's daily bars from the configured source."""

from collections.abc import Iterator

from dagster import AssetExecutionContext, MetadataValue, Output, asset

from sensequant_assets.assets.partition_context import partition_window, skip
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.resources import MarketDataResource


@asset(
    partitions_def=symbol_window_partitions,
    io_manager_key="artifacts_io_manager",
    output_required=False,
    code_version="1",
    group_name="training",
    description="Daily OHLCV bars of one symbol and window, validated, stored as bars.parquet.",
)
def market_bars(context: AssetExecutionContext, market_data: MarketDataResource) -> Iterator:
    pw = partition_window(context)
    bars = market_data.source_for(pw.symbol).bars(pw.symbol, pw.start, pw.end)
    if bars.empty:
        yield from skip(context, ["market_bars"], f"{pw.label}: the data source has no bars in this window")
        return
    yield Output(
        bars,
        metadata={
            "rows": len(bars),
            "first_bar": str(bars.index[0].date()),
            "last_bar": str(bars.index[-1].date()),
            "last_close": MetadataValue.float(float(bars["close"].iloc[-1])),
        },
    )
