"""Declarative automation: downstream assets follow their upstream in EVERY window.

`AutomationCondition.eager()` only considers the latest time window, so a re-trained teacher of
an older window would leave its student and evaluations stale. The conditions here are eager()
without that restriction. The briefing waits until no upstream partition is in progress (runs or
backfills), so a batch of evaluations produces one briefing, not one per partition.
"""

from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
)

from sensequant_assets.settings import number

EVERY_WINDOW_EAGER = (
    (AutomationCondition.newly_missing() | AutomationCondition.any_deps_updated()).since_last_handled()
    & ~AutomationCondition.any_deps_missing()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("eager in every window")

AFTER_BATCH_SETTLES = (
    AutomationCondition.any_deps_updated().since_last_handled()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("after upstream updates settle")

automation_sensor = AutomationConditionSensorDefinition(
    "sensequant_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=int(number("SENSEQUANT_SENSOR_INTERVAL_SECONDS", int, 1)),
    run_tags={"sensequant/trigger": "automation"},
    description=(
        "Keeps students, evaluations, the briefing and production in line with their upstream "
        "assets in every window (not only the latest), whatever materialised the upstream."
    ),
)
