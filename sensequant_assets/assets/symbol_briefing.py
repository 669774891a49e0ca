"""`symbol_briefing`: one page per symbol in the UI, from the latest briefing and production.

A quant asks "why is RELIANCE (not) in production?" and wants one page: the decision, every gate,
the out-of-sample record window by window and what production serves. Partitioned by symbol
only, refreshed after `production_models` in one run for all symbols (each partition's page is
its own metadata); `production_models` links each symbol's row here. Nothing is written to the
artifact store: the briefing's files already hold these numbers.
"""

from typing import Any
from urllib.parse import quote

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetSelection,
    AutomationCondition,
    BackfillPolicy,
    MetadataValue,
    asset,
)

from sensequant_assets.artifacts import BriefingArtifact
from sensequant_assets.assets.catalog import OWNERS
from sensequant_assets.io_manager import ArtifactsResource
from sensequant_assets.ml.briefing import render_symbol_markdown
from sensequant_assets.partitions import symbol_partitions
from sensequant_assets.registry import active_demotion, current
from sensequant_assets.sources.symbols import key_symbol_problem

ASSET_NAME = "symbol_briefing"

# After production has acted on a briefing (so the page says what production serves), once.
AFTER_PRODUCTION = (
    AutomationCondition.any_deps_match(AutomationCondition.newly_updated())
    .allow(AssetSelection.assets("production_models"))
    .since_last_handled()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("after production_models")


def symbol_page_link(symbol: str) -> str:
    """A markdown link to `symbol`'s page in the UI (relative to the webserver's root)."""
    return f"[{symbol}](/assets/{ASSET_NAME}?view=partitions&partition={quote(symbol, safe='')})"


def _production_lines(base_dir: str, symbol: str) -> list[str]:
    record = current(base_dir, symbol)
    if record is not None:
        return [
            f"**Production:** serves the student of `{record.partition_key}` (configuration "
            f"`{record.config_id or 'n/a'}`), promoted {record.promoted_at} on a {record.decision}."
        ]
    demotion = active_demotion(base_dir, symbol)
    if demotion is not None:
        return [f"**Production:** none; demoted {demotion.get('at', '')}: {demotion.get('reason', '')}"]
    return ["**Production:** none (never promoted)."]


def _page(briefing: dict[str, Any] | None, symbol: str, generated_at: str, base_dir: str) -> dict[str, Any]:
    production = _production_lines(base_dir, symbol)
    if briefing is None:
        text = (
            f"## {symbol}: not briefed\n\nThe briefing of {generated_at} has no evaluated window of "
            f"{symbol} (its windows are not trained or evaluated yet).\n\n" + "\n".join(production) + "\n"
        )
        return {"decision": "NOT_BRIEFED", "page": MetadataValue.md(text)}
    text = "\n".join(production) + "\n\n" + render_symbol_markdown(briefing, generated_at=generated_at)
    ic, auc = briefing["ic"], briefing["auc"]
    numbers = {
        "ic": ic.get("pooled"),
        "ic_q_value": ic.get("q_value"),
        "auc": auc.get("pooled"),
        "excess_per_year": briefing["excess"].get("annualised"),
    }
    return {
        "decision": briefing["decision"],
        "windows": int(briefing["windows"]),
        "rows": int(briefing["n"]),
        **{k: MetadataValue.float(float(v)) for k, v in numbers.items() if v is not None},
        "page": MetadataValue.md(text),
    }


@asset(
    name=ASSET_NAME,
    partitions_def=symbol_partitions,
    ins={"promotion_briefing": AssetIn()},
    deps=["production_models"],
    backfill_policy=BackfillPolicy.single_run(),
    automation_condition=AFTER_PRODUCTION,
    group_name="evaluation",
    kinds={"pandas"},
    owners=OWNERS,
    description=(
        "One page per symbol (its partition's metadata, under Partitions): the briefing's decision "
        "and gates, the out-of-sample record window by window, and what production serves. "
        "Refreshed after production_models, in one run for all symbols."
    ),
)
def symbol_briefing(
    context: AssetExecutionContext,
    promotion_briefing: BriefingArtifact,
    artifacts: ArtifactsResource,
) -> None:
    by_symbol = {b["symbol"]: b for b in promotion_briefing.symbols}
    base_dir = artifacts.location
    for symbol in context.partition_keys:
        if (problem := key_symbol_problem(symbol)) is not None:  # e.g. added in the UI as `../X`
            context.log.warning(f"no page for {symbol!r}: {problem}")
            context.add_asset_metadata({"problem": problem}, partition_key=symbol)
            continue
        page = _page(by_symbol.get(symbol), symbol, promotion_briefing.generated_at, base_dir)
        context.add_asset_metadata(page, partition_key=symbol)
    count, when = len(context.partition_keys), promotion_briefing.generated_at
    context.log.info(f"pages of {count} symbol(s) from the briefing of {when}")
