"""`breeze_bars`: the one asset that calls the Breeze API, filling the local cache the csv source reads.

Partitioned like `market_bars` (symbol x window), so a partition's fetch runs in the same run as,
and before, its `market_bars` (which depends on it), whether launched from the UI, a backfill or a
sensor. A partition makes the cache hold every day its teacher may read: the window, the lookback
windows and the warm-up before them. Each symbol's fetch asks only for what the cache lacks (and
the last days, for late corrections), in calls of up to 1,000 rows that run on past the window,
so a symbol's whole history costs a few calls and later windows usually none.

A batched run fetches symbol by symbol. A symbol whose fetch fails (no stock code, an error
answer) leaves its cache untouched, the others are written, and the step then fails naming every
failed symbol, so nothing downstream trains on an incomplete window; re-executing it costs only
the failed symbols' calls. Missing or rejected credentials fail it before anything is written.
The daily quota stops it the same way, keeping what was fetched; the next run resumes there.
"""

from collections.abc import Sequence
from datetime import date

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from sensequant_assets.assets.catalog import OWNERS
from sensequant_assets.assets.partition_context import BACKFILL_POLICY, PartitionWindow, partition_windows
from sensequant_assets.assets.teacher import MAX_LOOKBACK_WINDOWS
from sensequant_assets.ml.features import HISTORY_DAYS
from sensequant_assets.partitions import bars_before_windows, symbol_window_partitions
from sensequant_assets.resources import BreezeApiResource, BreezeMarketData, MarketDataResource
from sensequant_assets.sources.base import DataSourceError
from sensequant_assets.sources.breeze import IngestResult
from sensequant_assets.sources.breeze_client import BreezeAuthError, MissingCredentialsError
from sensequant_assets.sources.symbols import key_symbol_problem


def first_day_needed(pw: PartitionWindow) -> date:
    """The earliest day a teacher of this partition may read (lookback windows and warm-up)."""
    pieces = bars_before_windows(pw.window_key, MAX_LOOKBACK_WINDOWS, HISTORY_DAYS)
    return min([pw.start, *(first for _, first, _ in pieces)])


def _metadata(result: IngestResult, quota_left: int, served_by: str | None) -> dict:
    if served_by is not None:  # an earlier window of the symbol in this run fetched for it
        return {"calls": 0, "served_by": served_by, "quota_left": quota_left}
    asked = result.asked
    return {
        "stock_code": result.stock_code,
        "asked": f"{asked[0]}..{asked[1]}" if asked else "nothing (no complete day yet)",
        "calls": result.calls,
        "rows_fetched": result.rows_fetched,
        "rows_added": result.added,
        "rows_corrected": result.corrected,
        "rows_unchanged": result.unchanged,
        "quota_left": quota_left,
        "fetched": MetadataValue.text(", ".join(f"{a}..{b}" for a, b in result.chunks) or "nothing missing"),
        "refetched_missing_files": result.refetched,
        "answered_empty": MetadataValue.text(
            ", ".join(f"{a}..{b}" for a, b in result.unsettled) + " (asked again next run)"
            if result.unsettled
            else "none"
        ),
    }


class FetchConfig(Config):
    """What a run of `breeze_bars` fetches beyond its partitions' windows."""

    through_newest_day: bool = Field(
        default=False,
        description="Also fetch the days after the windows, up to the newest complete day: the window in "
        "progress has no partition until it ends, so the daily schedule (fetch_new_bars) sets this on the "
        "newest complete window to bring its days into the cache as they come.",
    )


@asset(
    partitions_def=symbol_window_partitions,
    backfill_policy=BACKFILL_POLICY,
    code_version="1",
    group_name="ingestion",
    description=(
        "Fetches daily NSE bars from ICICI Direct Breeze into the local cache (SENSEQUANT_DATA_DIR, "
        "<SYMBOL>/1day/<YYYY-MM-DD>.csv) that market_bars reads: only what is missing or recent, "
        "within the per-minute rate and daily quota. The only step that calls Breeze."
    ),
    kinds={"csv"},
    owners=OWNERS,
)
def breeze_bars(
    context: AssetExecutionContext, config: FetchConfig, breeze: BreezeApiResource
) -> MaterializeResult:
    windows = partition_windows(context)
    try:
        breeze.credentials()  # before anything: missing credentials name the variables
    except MissingCredentialsError as exc:
        raise Failure(description=str(exc), allow_retries=False) from None
    ingestor = breeze.ingestor()
    by_symbol: dict[str, list[PartitionWindow]] = {}
    for pw in windows:
        by_symbol.setdefault(pw.symbol, []).append(pw)
    results: dict[str, IngestResult] = {}
    failures: list[str] = []
    stopped: str | None = None
    for symbol, pws in by_symbol.items():
        if (problem := key_symbol_problem(symbol)) is not None:
            failures.append(f"{symbol}: {problem}")
            continue
        if stopped is not None:
            failures.append(f"{symbol}: not fetched, the daily quota is used up")
            continue
        first, last = min(first_day_needed(pw) for pw in pws), max(pw.end for pw in pws)
        if config.through_newest_day:  # the ingestor stops at the newest complete day
            last = date.max
        try:
            result = ingestor.ingest(symbol, first, last)
        except BreezeAuthError as exc:  # every other symbol would be refused the same way
            raise Failure(description=f"{exc} Nothing more was written.", allow_retries=False) from None
        except DataSourceError as exc:
            context.log.error(str(exc))
            failures.append(str(exc))
            continue
        results[symbol] = result
        context.log.info(
            f"{symbol} ({result.stock_code}): {result.calls} call(s), {result.rows_fetched} rows fetched, "
            f"{result.added} added, {result.corrected} corrected"
        )
        stopped = result.stopped
    quota_left = ingestor.session.budget.quota_left()
    for symbol, result in results.items():
        first_key = by_symbol[symbol][0].key
        for pw in by_symbol[symbol]:
            served_by = None if pw.key == first_key else first_key
            context.add_asset_metadata(_metadata(result, quota_left, served_by), partition_key=pw.key)
    if stopped is not None:
        failures.insert(0, stopped)
    if failures:
        raise Failure(
            description=f"{len(failures)} symbol(s) not fetched (the others were written): "
            + "; ".join(failures),
            metadata={"quota_left": quota_left},
            allow_retries=False,
        )
    return MaterializeResult(
        metadata={
            "symbols": len(results),
            "calls": sum(r.calls for r in results.values()),
            "quota_left": quota_left,
        }
    )


def ingestion_for(market_data: MarketDataResource) -> list[AssetsDefinition]:
    """The assets that fill `market_data`'s cache before market_bars reads it (none for a source
    read directly)."""
    return [breeze_bars] if isinstance(market_data, BreezeMarketData) else []


def after_ingestion(bars_asset: AssetsDefinition, ingestion: Sequence[AssetsDefinition]) -> AssetsDefinition:
    """`market_bars` depending on the ingestion assets (partition by partition), so a run that
    selects both fetches first and the lineage shows where the bars come from."""
    if not ingestion:
        return bars_asset
    deps = [AssetDep(key) for asset_def in ingestion for key in asset_def.keys]
    return bars_asset.map_asset_specs(lambda spec: spec.replace_attributes(deps=[*spec.deps, *deps]))
