"""Declarative automation of the unpartitioned assets: the briefing, production and symbol pages.

The briefing waits until no upstream partition is in progress (runs or backfills), so a batch of
evaluations produces one briefing, not one per partition. The partitioned assets follow their
upstream through the `follow_upstream` sensor (`follow.py`), whose ticks cost what changed:
Dagster's automation sensor evaluates each condition over every partition on every tick.
"""

from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
)

from sensequant_assets.settings import number

AFTER_BATCH_SETTLES = (
    AutomationCondition.any_deps_updated().since_last_handled()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("after upstream updates settle")

automation_sensor = AutomationConditionSensorDefinition(
    "sensequant_automation",
    target=AssetSelection.assets("promotion_briefing", "production_models", "symbol_briefing"),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=int(number("SENSEQUANT_SENSOR_INTERVAL_SECONDS", int, 1)),
    run_tags={"sensequant/trigger": "automation"},
    description=(
        "Refreshes the promotion briefing, production and the symbol pages once the evaluations "
        "behind them have settled (the partitioned assets follow through `follow_upstream`)."
    ),
)
