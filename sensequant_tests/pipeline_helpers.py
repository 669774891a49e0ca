"""Shared helpers for tests that materialise the real graph on an ephemeral Dagster instance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from dagster import DagsterInstance, materialize
from sklearn.linear_model import LogisticRegression

from sensequant_assets import registry
from sensequant_assets.artifacts import StudentArtifact, TeacherArtifact
from sensequant_assets.assets.bars import market_bars
from sensequant_assets.assets.briefing import production_models, promotion_briefing
from sensequant_assets.assets.evaluation import student_evaluation
from sensequant_assets.assets.student import student_model
from sensequant_assets.assets.teacher import teacher
from sensequant_assets.io_manager import ArtifactsResource, ArtifactStore, PartitionDirIOManager, codec_for
from sensequant_assets.resources import MarketDataResource, PipelineSettings

TRAINING = [market_bars, teacher, student_model]
PARTITIONED = [*TRAINING, student_evaluation]
ALL_ASSETS = [*PARTITIONED, promotion_briefing, production_models]


def resources(artifacts: Path, **market_data: Any) -> dict[str, Any]:
    return {
        "artifacts": ArtifactsResource(location=str(artifacts)),
        "artifacts_io_manager": PartitionDirIOManager.at(artifacts),
        "market_data": MarketDataResource(**market_data),
        "settings": PipelineSettings(),
    }


def instance_with(*symbols: str) -> DagsterInstance:
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("symbols", list(symbols))
    return instance


def run(
    artifacts: Path,
    partition_key: str,
    *,
    selection: list[str] | None = None,
    run_config: dict | None = None,
    instance: DagsterInstance | None = None,
    **market_data: Any,
):
    """Materialise the training graph (or a selection of it) for one partition; never raises."""
    symbol = partition_key.split("|")[0]
    return materialize(
        PARTITIONED,
        partition_key=partition_key,
        resources=resources(artifacts, **market_data),
        instance=instance or instance_with(symbol),
        selection=selection,
        run_config=run_config,
        raise_on_error=False,
    )


def skip_reasons(result) -> dict[str, str]:
    """asset key -> skip reason, from the run's observation events."""
    reasons = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_OBSERVATION":
            obs = event.asset_observation_data.asset_observation
            if "skipped" in obs.metadata:
                reasons[obs.asset_key.to_user_string()] = obs.metadata["skipped"].value
    return reasons


def failure_messages(result) -> list[str]:
    return [
        e.step_failure_data.error.to_string()
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data.error
    ]


def promote_toy_model(base: Path, key: str) -> None:
    """A tiny real teacher and student written for `key` and promoted, for registry-driven tests."""
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    store = ArtifactStore(base)
    importance = pd.DataFrame({"feature": ["x"], "importance": [1.0], "rank": [1]})
    store.write(key, codec_for("teacher_model"), TeacherArtifact(model, {"symbol": key}, importance))
    store.write(key, codec_for("student_model"), StudentArtifact(model, {"auc": 0.7}, {}))
    registry.promote(base, key.split("|")[0], key, "PROMOTE", {}, reason="test")
