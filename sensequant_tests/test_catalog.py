"""What the Dagster UI shows before and after a run: descriptions, kinds, owners, column schemas that
match the files, and the teacher's top features as a table."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, TableMetadataValue

from sensequant_assets.assets.catalog import BARS_SCHEMA, LABELS_SCHEMA
from sensequant_assets.definitions import defs
from sensequant_assets.ml.features import MODEL_FEATURES
from sensequant_tests.pipeline_helpers import failure_messages, instance_with, run

KEY = "RELIANCE|2023-01-01"
DIRNAME = "RELIANCE_2023-01-01_to_2023-06-30"


def test_every_asset_job_sensor_and_schedule_says_what_it_is() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description and len(node.description) > 40, name
        assert node.kinds, f"{name} has no kinds"
        assert node.owners == ["team:sensequant"], name
        assert not _bare_tags(node.description), name
    for job in defs.jobs or []:
        assert job.description and not _bare_tags(job.description), job.name
    for sensor in defs.sensors or []:
        assert sensor.description, sensor.name
    for schedule in defs.schedules or []:
        assert schedule.description, schedule.name
    assert graph.get(AssetKey("market_bars")).metadata["dagster/column_schema"] == BARS_SCHEMA
    assert graph.get(AssetKey("teacher_labels")).metadata["dagster/column_schema"] == LABELS_SCHEMA


def _bare_tags(markdown: str) -> list[str]:
    """`<SYMBOL>` outside a code span: the UI renders descriptions as markdown and drops it as HTML."""
    outside = re.sub(r"`[^`]*`", "", markdown)
    return re.findall(r"<[A-Za-z_][A-Za-z_0-9]*>", outside)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    artifacts = tmp_path_factory.mktemp("models")
    instance = instance_with("RELIANCE")
    result = run(artifacts, KEY, instance=instance)
    assert result.success, failure_messages(result)
    return artifacts, instance


def test_the_declared_column_schemas_are_the_files_columns(trained) -> None:
    artifacts, _ = trained
    bars = pd.read_parquet(artifacts / DIRNAME / "bars.parquet")
    declared = [c.name for c in BARS_SCHEMA.columns]
    assert [bars.index.name, *bars.columns] == declared
    assert str(bars.index.dtype) == BARS_SCHEMA.columns[0].type
    labels = pd.read_csv(artifacts / DIRNAME / "labels.csv.gz", nrows=5)
    assert list(labels.columns) == [c.name for c in LABELS_SCHEMA.columns]
    numeric = {c.name for c in LABELS_SCHEMA.columns if c.type in ("float64", "int64")}
    assert all(pd.api.types.is_numeric_dtype(labels[c]) for c in numeric)


def test_the_teacher_shows_its_top_features_as_a_table(trained) -> None:
    artifacts, instance = trained
    event = instance.get_latest_materialization_event(AssetKey("teacher_model"))
    table = event.asset_materialization.metadata["top_features"]
    assert isinstance(table, TableMetadataValue)
    rows = [record.data for record in table.records]
    assert len(rows) == 5
    assert all(row["feature"] in MODEL_FEATURES for row in rows)
    gains = [row["gain"] for row in rows]
    assert gains == sorted(gains, reverse=True) and gains[0] > 0
    importance = pd.read_csv(artifacts / DIRNAME / "feature_importance.csv")
    assert [row["feature"] for row in rows] == importance["feature"].head(5).tolist()
    assert sum(row["share"] for row in rows) <= 1.0 + 1e-9
    assert rows[0]["share"] == pytest.approx(gains[0] / importance["importance"].sum())
    path = event.asset_materialization.metadata["path"]
    assert Path(path.value) == artifacts / DIRNAME
