"""`data_quality`: per symbol and window, what the configured source's bars are worth.

Partitioned like `market_bars` but upstream of nothing, so it never blocks or slows training: it is
materialised when the user asks (a partition, a backfill of the whole history). It reads the bars
through the source as `market_bars` does (for the csv source, without refusing a jump, so the
report can show it) and attaches to each partition's materialisation the report of
`sources.quality` (coverage against the NSE calendar, gaps, bars on non-trading days, repaired
rows, flagged jumps, the corporate actions that adjusted the window); its check
`data_quality_ok` warns (never blocks) on missing sessions, flagged jumps or a refused window.
Nothing is written to the artifact store: the numbers are the partitions' metadata.
"""

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from sensequant_assets.assets.catalog import OWNERS
from sensequant_assets.assets.checks import WARN, CheckSuite, PartitionCheck, Verdict
from sensequant_assets.assets.partition_context import (
    BACKFILL_POLICY,
    PartitionWindow,
    partition_windows,
)
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.resources import MarketDataResource
from sensequant_assets.settings import SettingsError, number
from sensequant_assets.sources.base import DataSourceError, allowed_moves, repairs_of
from sensequant_assets.sources.quality import (
    QualityReport,
    ReportableSource,
    quality_report,
)
from sensequant_assets.sources.symbols import key_symbol_problem

ASSET_NAME = "data_quality"
# Read this many calendar days before a window, so the move of its first bar is judged too
# (a long weekend and a holiday or two; a longer closure leaves that one move unjudged).
PREVIOUS_DAYS = 10


def report_of(market_data: MarketDataResource, pw: PartitionWindow, today: dt.date) -> QualityReport:
    """The partition's report; a window the source refuses (or a bad symbol) is a report that
    says so, never an exception: the report exists to show bad data."""
    try:
        if (problem := key_symbol_problem(pw.symbol)) is not None:
            raise DataSourceError(problem)
        source = market_data.source_for(pw.symbol)
        lo = pw.start - dt.timedelta(days=PREVIOUS_DAYS)
        if isinstance(source, ReportableSource):
            bars, actions = source.bars_for_report(pw.symbol, pw.start, pw.end, previous_days=PREVIOUS_DAYS)
        else:  # e.g. the synthetic source: no corporate actions, nothing refused to show
            bars, actions = source.bars(pw.symbol, lo, pw.end), ()
        return quality_report(
            pw.symbol,
            pw.start,
            pw.end,
            bars,
            today=today,
            max_move=float(number("SENSEQUANT_MAX_DAILY_MOVE", float, 0.0)),
            repairs=repairs_of(bars),
            actions=actions,
            allowed=allowed_moves(),
        )
    except (DataSourceError, SettingsError) as exc:
        return refused(pw, str(exc), today)


def refused(pw: PartitionWindow, error: str, today: dt.date) -> QualityReport:
    """The report of a window that could not be read."""
    return QualityReport(
        symbol=pw.symbol,
        start=pw.start,
        end=pw.end,
        judged_until=min(pw.end, today),
        sessions=0,
        bars=0,
        missing=(),
        gaps=(),
        non_trading=(),
        repairs=(),
        jumps=(),
        actions=(),
        error=error,
    )


def _judge(report: QualityReport, pw: PartitionWindow, _: Any) -> Verdict:
    meta = {
        k: v
        for k, v in report.metadata().items()
        if k in ("coverage_pct", "missing_sessions", "jumps_flagged", "bars_on_non_trading_days")
        and v is not None
    }
    if problems := report.problems():
        return Verdict(
            False, "; ".join(problems), meta, WARN, rule="every NSE session has a bar, no unexplained jump"
        )
    coverage = report.coverage
    summary = (
        f"{report.sessions} NSE sessions, every one with a bar"
        if coverage is not None
        else "no NSE session to judge in this window yet"
    )
    if report.non_trading:
        summary += f"; {len(report.non_trading)} bar(s) on days without a session (kept)"
    return Verdict(True, summary, meta)


QUALITY_CHECKS = CheckSuite(
    ASSET_NAME,
    (
        PartitionCheck(
            "data_quality_ok",
            "Every NSE session of the window (pandas_market_calendars' XNSE, up to today) has a bar, "
            "no close-to-close move beyond SENSEQUANT_MAX_DAILY_MOVE is left unexplained by a "
            "corporate action, and the source can read the window. A warning, never blocking: "
            "bars on days without a session (the synthetic source's holidays) are only reported.",
            False,
            (_judge,),
        ),
    ),
)


def _ui(meta: dict[str, Any]) -> dict[str, Any]:
    """Numbers as floats/ints (plottable across partitions), texts as text, None as 'n/a'."""
    out: dict[str, Any] = {}
    for name, value in meta.items():
        if value is None:
            out[name] = MetadataValue.text("n/a")
        elif isinstance(value, float):
            out[name] = MetadataValue.float(value)
        elif isinstance(value, int):
            out[name] = MetadataValue.int(value)
        else:
            out[name] = MetadataValue.text(str(value))
    return out


@asset(
    name=ASSET_NAME,
    partitions_def=symbol_window_partitions,
    backfill_policy=BACKFILL_POLICY,
    code_version="1",
    group_name="data_quality",
    description=(
        "Per symbol and window: coverage of the source's bars against the NSE trading calendar, "
        "gaps (missing sessions as ranges), bars on days without a session, repaired rows, "
        "one-day jumps no corporate action explains, and the corporate actions that adjusted the "
        "window. Upstream of nothing: never blocks training. Shown as each partition's metadata."
    ),
    kinds={"pandas"},
    owners=OWNERS,
    check_specs=QUALITY_CHECKS.specs,
)
def data_quality(context: AssetExecutionContext, market_data: MarketDataResource) -> Iterator:
    today = dt.datetime.now(ZoneInfo("Asia/Kolkata")).date()
    reports = {pw.key: report_of(market_data, pw, today) for pw in partition_windows(context)}
    checks = QUALITY_CHECKS.evaluate(context, reports)
    for key, report in sorted(reports.items()):
        context.add_asset_metadata(_ui(report.metadata()), partition_key=key)
    flagged = sum(1 for r in reports.values() if r.problems())
    if flagged:
        context.log.warning(f"data quality: {flagged} of {len(reports)} partition(s) need a look")
    yield MaterializeResult(metadata={"partitions": len(reports), "partitions_with_problems": flagged})
    yield from checks.events(context)
