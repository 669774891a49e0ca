"""Sensors: keep the `symbols` dynamic partitions in line with SENSEQUANT_SYMBOLS."""

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from sensequant_assets.partitions import SYMBOLS_PARTITIONS_NAME
from sensequant_assets.settings import env
from sensequant_assets.sources.symbols import InvalidSymbolError, parse_symbols


@sensor(
    name="register_symbols",
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "Adds every symbol of SENSEQUANT_SYMBOLS to the `symbols` partitions, so a fresh `make run` "
        "shows the default universe. Symbols are validated; a bad one is named in the skip reason."
    ),
)
def register_symbols(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    try:
        wanted = parse_symbols(env("SENSEQUANT_SYMBOLS"))
    except InvalidSymbolError as exc:
        return SkipReason(f"SENSEQUANT_SYMBOLS is invalid: {exc}")
    known = set(context.instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))
    new = [s for s in wanted if s not in known]
    if not new:
        return SkipReason(f"all {len(wanted)} symbols of SENSEQUANT_SYMBOLS are registered")
    context.log.info(f"registering symbols: {', '.join(new)}")
    return SensorResult(
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(SYMBOLS_PARTITIONS_NAME, new)]
    )
