"""The code location: assets, resources (chosen from the environment here), jobs, sensors and schedules."""

from __future__ import annotations

from dagster import Definitions

from sensequant_assets.assets.bars import market_bars
from sensequant_assets.assets.briefing import production_models, promotion_briefing
from sensequant_assets.assets.evaluation import student_evaluation
from sensequant_assets.assets.ingest import after_ingestion, ingestion_for
from sensequant_assets.assets.partition_context import BATCHED
from sensequant_assets.assets.quality import data_quality
from sensequant_assets.assets.student import student_model
from sensequant_assets.assets.symbol_briefing import symbol_briefing
from sensequant_assets.assets.teacher import teacher
from sensequant_assets.automation import automation_sensor
from sensequant_assets.deployment.executors import executor_from_env
from sensequant_assets.follow import follow_upstream
from sensequant_assets.io_manager import ArtifactsResource, PartitionDirIOManager
from sensequant_assets.jobs import briefing_job, demote_job, rollback_job, train_job
from sensequant_assets.resources import market_data_from_env, settings_from_env
from sensequant_assets.schedules import fetch_schedules, train_latest_window
from sensequant_assets.sensors import model_decay, new_data, symbol_universe


def build_definitions(*, fetch: bool = True) -> Definitions:
    """Definitions for the current environment (tests call it after setting SENSEQUANT_* variables).

    `fetch=False` (`sensequant train`) leaves out what fills a source's cache (breeze_bars and its
    API resource): the runs read the cache as it is, and no credentials are needed."""
    # The one place the data source is chosen: its resource, and the assets that fill its cache
    # (Breeze's breeze_bars, upstream of market_bars; none for a source read directly). The jobs
    # and sensors select them through jobs.PARTITION_SELECTION.
    market_data = market_data_from_env(fetch=fetch)
    artifacts = ArtifactsResource.from_env()
    ingestion = ingestion_for(market_data) if fetch else []
    # By default in-process: a run's steps share one process (no per-step Python start-up); parallelism
    # comes from concurrent runs (deploy/dagster.yaml) and the batched steps' own workers. Celery on more
    # than one machine (SENSEQUANT_EXECUTOR, deploy/scaleout/).
    return Definitions(
        executor=executor_from_env(BATCHED),
        assets=[
            *ingestion,
            after_ingestion(market_bars, ingestion),
            teacher,
            student_model,
            student_evaluation,
            promotion_briefing,
            production_models,
            symbol_briefing,
            data_quality,
        ],
        jobs=[train_job, briefing_job, rollback_job, demote_job],
        sensors=[symbol_universe, new_data, model_decay, follow_upstream, automation_sensor],
        schedules=[train_latest_window, *fetch_schedules(ingestion)],
        resources={
            "artifacts": artifacts,
            "artifacts_io_manager": PartitionDirIOManager(artifacts=artifacts),
            "market_data": market_data,
            "settings": settings_from_env(),
            **(market_data.api_resources() if fetch else {}),
        },
    )


defs = build_definitions()
