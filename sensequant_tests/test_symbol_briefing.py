"""`symbol_briefing`: one UI page per symbol (decision, gates, window-by-window record, production),
linked from `production_models`, refreshed by automation once production has acted."""

from __future__ import annotations

import pytest
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    evaluate_automation_conditions,
    materialize,
)

from sensequant_assets.assets.symbol_briefing import symbol_briefing, symbol_page_link
from sensequant_tests.pipeline_helpers import ALL_ASSETS, failure_messages, resources, run

SYMBOL, UNTRAINED = "TCS", "INFY"
WINDOWS = ["2022-01-01", "2022-07-01", "2023-01-01"]
MARKET = {"signal_symbols": SYMBOL, "signal_ic": 0.6246}  # the smoke-test signal: TCS is promoted
LAX = {"min_windows": 1, "min_rows": 1, "fdr": 0.999}
ASSETS = [*ALL_ASSETS, symbol_briefing]


def _page(instance: DagsterInstance, symbol: str) -> dict:
    records = instance.fetch_materializations(AssetKey("symbol_briefing"), limit=10).records
    for entry in records:
        if entry.partition_key == symbol:
            return {k: v.value for k, v in entry.asset_materialization.metadata.items()}
    raise AssertionError(f"no page for {symbol}")


@pytest.fixture(scope="module")
def briefed(tmp_path_factory: pytest.TempPathFactory):
    artifacts = tmp_path_factory.mktemp("models")
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("symbols", [SYMBOL, UNTRAINED])
    for window in WINDOWS:
        result = run(artifacts, f"{SYMBOL}|{window}", instance=instance, **MARKET)
        assert result.success, failure_messages(result)
    briefing = materialize(
        ASSETS,
        selection=["promotion_briefing", "production_models"],
        resources=resources(artifacts, **MARKET),
        instance=instance,
        run_config={"ops": {"promotion_briefing": {"config": LAX}}},
    )
    return artifacts, instance, briefing


def test_automation_refreshes_every_symbols_page_after_production(briefed) -> None:
    artifacts, instance, _ = briefed
    defs = Definitions(assets=ASSETS, resources=resources(artifacts, **MARKET))
    selection = AssetSelection.assets("symbol_briefing")
    baseline = evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
    assert baseline.total_requested == 0  # nothing has changed since the first look
    production = materialize(
        ASSETS,
        selection=["production_models"],
        resources=resources(artifacts, **MARKET),
        instance=instance,
    )
    assert production.success
    first = evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=baseline.cursor
    )
    requested = {str(k) for k in first.get_requested_partitions(AssetKey("symbol_briefing"))}
    assert requested == {SYMBOL, UNTRAINED}  # every symbol, also one without a briefing entry
    again = evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=first.cursor
    )
    assert again.total_requested == 0  # handled until production acts again


def test_each_symbol_has_a_page_with_its_decision_record_and_production(briefed) -> None:
    artifacts, instance, briefing = briefed
    result = materialize(
        ASSETS,
        selection=["symbol_briefing"],
        resources=resources(artifacts, **MARKET),
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": SYMBOL,
            "dagster/asset_partition_range_end": UNTRAINED,
        },
    )
    assert result.success, failure_messages(result)
    entry = next(b for b in briefing.output_for_node("promotion_briefing").symbols if b["symbol"] == SYMBOL)
    page = _page(instance, SYMBOL)
    assert page["decision"] == entry["decision"] == "PROMOTE"
    assert page["ic"] == pytest.approx(entry["ic"]["pooled"])
    assert page["windows"] == entry["windows"] == 2  # the first window has no earlier student
    text = page["page"]
    assert f"## {SYMBOL}: PROMOTE" in text
    assert f"serves the student of `{SYMBOL}|" in text
    auc = {w["window"]: w["auc"] for w in entry["auc"]["per_window"]}
    rows = [line for line in text.splitlines() if line.startswith("| 20")]
    assert len(rows) == len(entry["ic"]["per_window"]) == 2
    for row, window in zip(rows, entry["ic"]["per_window"], strict=True):
        # four cells: the window's start (not the partition key, whose '|' would split the row)
        assert row == (
            f"| {window['window'].split('|')[1]} | {window['n']} | {window['ic']:.3f} | "
            f"{auc[window['window']]:.3f} |"
        )
    for gate in entry["gates"]:
        assert f"`{gate}`" in text
    untrained = _page(instance, UNTRAINED)
    assert untrained["decision"] == "NOT_BRIEFED"
    assert "never promoted" in untrained["page"]
    actions = briefing.asset_materializations_for_node("production_models")[0].metadata["actions"].value
    assert f"[{SYMBOL}](/assets/symbol_briefing?view=partitions&partition={SYMBOL})" in actions


def test_a_symbols_link_survives_characters_urls_reserve() -> None:
    assert symbol_page_link("M&M") == "[M&M](/assets/symbol_briefing?view=partitions&partition=M%26M)"


def test_a_symbol_added_in_another_spelling_gets_a_problem_not_a_failed_run(briefed) -> None:
    artifacts, instance, _ = briefed
    instance.add_dynamic_partitions("symbols", ["../X"])
    try:
        result = materialize(
            ASSETS,
            selection=["symbol_briefing"],
            resources=resources(artifacts, **MARKET),
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": SYMBOL,
                "dagster/asset_partition_range_end": "../X",
            },
        )
    finally:
        instance.delete_dynamic_partition("symbols", "../X")
    assert result.success, failure_messages(result)
    assert "../X" in _page(instance, "../X")["problem"]
    assert _page(instance, SYMBOL)["decision"] == "PROMOTE"
