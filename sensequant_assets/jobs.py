"""Jobs: the training graph of one partition, as launched by the CLI."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from sensequant_assets.partitions import symbol_window_partitions

TRAINING_ASSETS = ("market_bars", "teacher_model", "teacher_labels", "student_model")

train_job = define_asset_job(
    name="train_job",
    selection=AssetSelection.assets(*TRAINING_ASSETS),
    partitions_def=symbol_window_partitions,
    description="Bars, teacher and student of one symbol-window partition.",
)
