"""What every partitioned asset needs from its context: symbol, window bounds, and a Dagster skip."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

from dagster import AssetExecutionContext, AssetKey, AssetObservation, MetadataValue

from sensequant_assets.partitions import split_key, window_bounds

SKIP_METADATA_KEY = "skipped"


@dataclass(frozen=True)
class PartitionWindow:
    symbol: str
    window_key: str
    start: date
    end: date

    @property
    def label(self) -> str:
        """The predecessor's window label, `SYMBOL_start_to_end`, used in messages."""
        return f"{self.symbol}_{self.start.isoformat()}_to_{self.end.isoformat()}"


def partition_window(context: AssetExecutionContext) -> PartitionWindow:
    symbol, window_key = split_key(context.partition_key)
    start, end = window_bounds(window_key)
    return PartitionWindow(symbol, window_key, start, end)


def skip(context: AssetExecutionContext, assets: Sequence[str], reason: str) -> Iterator[AssetObservation]:
    """Skip a partition the Dagster way: no output (downstream steps skip), the reason recorded.

    The reason is logged and attached as an observation of each asset, so it shows on the asset's
    page in the UI and in the CLI summary, while the run itself succeeds.
    """
    context.log.warning(f"skipped: {reason}")
    for asset in assets:
        yield AssetObservation(
            asset_key=AssetKey(asset),
            partition=context.partition_key,
            metadata={SKIP_METADATA_KEY: reason},
        )


def metadata_value(value: object) -> MetadataValue:
    """A metric for the UI: numbers as floats (plottable), everything else (None included) as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return MetadataValue.float(float(value))
    return MetadataValue.text("n/a" if value is None else str(value))
