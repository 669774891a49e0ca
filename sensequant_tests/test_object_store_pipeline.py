"""The real graph with SENSEQUANT_ARTIFACTS_DIR on S3 (moto's server on 127.0.0.1): every partition
lands as a verified version in the bucket, the same bytes as on a local disk, and the briefing and a
promotion work against the bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from sensequant_assets import registry
from sensequant_assets.io_manager import (
    CHECKSUMS,
    ArtifactsResource,
    codec_for,
    open_store,
    partition_dir_name_of,
)
from sensequant_assets.object_store import VersionedTree
from sensequant_tests.object_storage import fresh_location
from sensequant_tests.pipeline_helpers import ALL_ASSETS, failure_messages, resources, run

SIGNAL = "TCS"
WINDOWS = ["2022-01-01", "2022-07-01", "2023-01-01", "2023-07-01", "2024-01-01", "2024-07-01"]
MARKET = {"signal_symbols": SIGNAL, "signal_ic": 0.6246}
TRAINING_FILES = {
    "bars.parquet",
    "model.pkl",
    "metadata.json",
    "feature_importance.csv",
    "labels.csv.gz",
    "student/student_model.pkl",
    "student/metrics.json",
    "student/metadata.json",
}
EVALUATION_FILES = {
    "evaluation/metrics.json",
    "evaluation/predictions.parquet",
    "evaluation/equity.csv",
    "evaluation/equity.png",
    "evaluation/reliability.png",
}
# Deterministic functions of the inputs (no timestamps, no pickles; as bench/backfill.py compares).
COMPARED = ("bars.parquet", "labels.csv.gz", "feature_importance.csv", "student/metrics.json")


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, DagsterInstance]:
    """Six windows of a planted-signal symbol trained and evaluated on S3, then the briefing and
    production_models (which promotes into the bucket)."""
    location = fresh_location("s3", tmp_path_factory.mktemp("unused"))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("symbols", [SIGNAL])
    for window in WINDOWS:
        result = run(location, f"{SIGNAL}|{window}", instance=instance, **MARKET)  # type: ignore[arg-type]
        assert result.success, failure_messages(result)
    brief = materialize(
        ALL_ASSETS,
        selection=["promotion_briefing", "production_models"],
        resources=resources(location, **MARKET),  # type: ignore[arg-type]
        instance=instance,
        raise_on_error=False,
    )
    assert brief.success, failure_messages(brief)
    return location, instance


def _tree(location: str, key: str) -> VersionedTree:
    return open_store(location).tree(key)


def test_every_partition_is_one_verified_version_in_the_bucket(bucket) -> None:
    location, _ = bucket
    store = open_store(location)
    for n, window in enumerate(WINDOWS):
        key = f"{SIGNAL}|{window}"
        tree = _tree(location, key)
        assert tree.path.endswith(partition_dir_name_of(key)), "found from its symbol and window"
        version = tree.latest()
        assert version is not None, key
        expected = TRAINING_FILES | (EVALUATION_FILES if n else set())
        assert set(version.files) == expected, key
        for rel in version.files:  # every object present and matching its manifest's sha256
            tree.read(version, rel)
        # nothing but the manifests and the objects they reference
        objects = {p.split(f"{tree.path}/", 1)[1] for p in tree.fs.find(tree.path)}
        referenced = {ref.object for ref in version.files.values()}
        assert {o for o in objects if not o.startswith("commits/")} == referenced, key
        assert store.read(key, codec_for("student_model"), "student_model").metrics["fidelity_agreement"] >= 0


def test_the_bucket_holds_the_same_bytes_as_a_local_disk(bucket, tmp_path: Path) -> None:
    """The same partitions computed on a local disk: identical checksums for every deterministic
    file, and checksums.json there lists exactly the files the manifest lists."""
    location, _ = bucket
    local = tmp_path / "models"
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("symbols", [SIGNAL])
    for window in WINDOWS[:2]:
        result = run(local, f"{SIGNAL}|{window}", instance=instance, **MARKET)
        assert result.success, failure_messages(result)
        key = f"{SIGNAL}|{window}"
        sums = json.loads((local / partition_dir_name_of(key) / CHECKSUMS).read_text())
        version = _tree(location, key).latest()
        assert version is not None
        assert set(sums) == set(version.files)
        for rel in COMPARED:
            assert version.files[rel].sha256 == sums[rel], (key, rel)


def test_briefing_and_promotion_live_in_the_bucket(bucket) -> None:
    location, _ = bucket
    store = ArtifactsResource(location=location).store()
    briefing = store.read_fixed(codec_for("promotion_briefing"), "promotion_briefing")
    decision = {b["symbol"]: b["decision"] for b in briefing.symbols}[SIGNAL]
    assert decision == "PROMOTE", briefing.markdown
    record = registry.current(location, SIGNAL)
    assert record is not None and record.partition_key == f"{SIGNAL}|{WINDOWS[-1]}"
    newest = store.read(record.partition_key, codec_for("student_model"), "student_model")
    assert type(registry.load_current_model(location, SIGNAL)) is type(newest.model)
    # the promoted copy is the partition's student, byte for byte
    partition = _tree(location, record.partition_key).latest()
    assert partition is not None
    assert record.files["student_model.pkl"] == partition.files["student/student_model.pkl"].sha256
