"""`market_bars`: one window's daily bars from the configured source."""

from collections.abc import Iterator

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, Failure, MetadataValue, asset

from sensequant_assets.assets.catalog import BARS_SCHEMA, OWNERS, column_schema
from sensequant_assets.assets.checks import bar_checks
from sensequant_assets.assets.partition_context import (
    BACKFILL_POLICY,
    emit,
    partition_windows,
    run_partition_keys,
)
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.resources import MarketDataResource
from sensequant_assets.settings import number
from sensequant_assets.sources.base import repairs_of
from sensequant_assets.sources.symbols import key_symbol_problem

# Read once, when the code loads: a bad value stops the code location with its name, rather than
# failing every market_bars run for a setting that only decides a warning.
MAX_GAP_DAYS = int(number("SENSEQUANT_MAX_GAP_DAYS", int, 1))


def longest_gap(bars: pd.DataFrame) -> tuple[int, str]:
    """The most weekdays missing between two consecutive bars, and where (`first..last` missing
    day); holidays count, so a long weekend around a holiday is a gap of 1."""
    if len(bars) < 2:
        return 0, ""
    days = bars.index.tz_localize(None).normalize().to_numpy().astype("datetime64[D]")
    after = days[:-1] + 1  # the day after each bar (a Saturday session's next weekday counts too)
    missing = np.busday_count(after, days[1:])
    at = int(np.argmax(missing))
    if missing[at] <= 0:
        return 0, ""
    first = np.busday_offset(after[at], 0, roll="forward")
    last = np.busday_offset(days[at + 1], -1, roll="backward")
    return int(missing[at]), f"{first}..{last}"


BAR_CHECKS = bar_checks(longest_gap, MAX_GAP_DAYS)


def _metadata(bars: pd.DataFrame, repairs: list[str]) -> dict:
    gap, where = longest_gap(bars)
    return {
        "rows": len(bars),
        "first_bar": str(bars.index[0].date()),
        "last_bar": str(bars.index[-1].date()),
        "last_close": MetadataValue.float(float(bars["close"].iloc[-1])),
        "longest_gap_weekdays": gap,
        **({"longest_gap": where} if where else {}),
        # What the source's validation repaired (unsorted rows, a day repeated with the same values).
        **({"repairs": MetadataValue.text("; ".join(repairs))} if repairs else {}),
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
    check_specs=BAR_CHECKS.specs,
)
def market_bars(context: AssetExecutionContext, market_data: MarketDataResource) -> Iterator:
    values, skipped, repairs = {}, {}, {}
    for pw in partition_windows(context):
        if (problem := key_symbol_problem(pw.symbol)) is not None:
            if len(run_partition_keys(context)) == 1:  # asked for this partition alone: fail, saying why
                raise Failure(description=f"{pw.label}: {problem}", allow_retries=False)
            skipped[pw.key] = f"{pw.label}: {problem}"  # in a batch: the others go on
            continue
        bars = market_data.source_for(pw.symbol).bars(pw.symbol, pw.start, pw.end)
        if bars.empty:
            skipped[pw.key] = f"{pw.label}: the data source has no bars in this window"
            continue
        repairs[pw.key] = repairs_of(bars)
        for note in repairs[pw.key]:
            context.log.warning(f"{pw.label}: repaired: {note}")
        # The notes (absolute source paths included) are shown here, never stored: pandas writes a
        # frame's `attrs` into the parquet file, and every reader of bars.parquet would get them back.
        bars = bars.copy(deep=False)
        bars.attrs = {}
        values[pw.key] = bars
        gap, where = longest_gap(bars)
        if gap > MAX_GAP_DAYS:  # kept (a suspension is real), but the features and labels span it
            context.log.warning(
                f"{pw.label}: {gap} weekdays without bars ({where}), more than "
                f"SENSEQUANT_MAX_GAP_DAYS={MAX_GAP_DAYS}: indicators and {pw.label}'s labels span the gap"
            )
    checks = BAR_CHECKS.evaluate(context, values)
    skipped.update(checks.refused)  # a blocking check failed: not written, downstream skips it
    notes = {id(bars): repairs[key] for key, bars in values.items()}

    def metadata(bars: pd.DataFrame) -> dict:  # emit hands the frame alone: its notes by identity
        return _metadata(bars, notes.get(id(bars), []))

    yield from emit(context, "result", checks.keep(values), skipped, metadata, ["market_bars"])
    yield from checks.events(context)
