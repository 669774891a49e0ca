"""The IO manager: layout both ways, several partitions per call, atomic writes, checksums."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, PartitionKeyRange, build_input_context, build_output_context

from sensequant_assets.artifacts import TeacherArtifact
from sensequant_assets.io_manager import (
    CHECKSUMS,
    ArtifactError,
    ArtifactStore,
    PartitionDirIOManager,
    codec_for,
    parse_partition_dir_name,
    partition_dir_name,
)
from sensequant_assets.partitions import symbol_window_partitions


def _bars(n: int = 5, start: str = "2023-01-02") -> pd.DataFrame:
    idx = pd.date_range(start, periods=n, freq="B", tz="Asia/Kolkata", name="timestamp")
    return pd.DataFrame(
        {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 100.0}, index=idx
    ).astype("float64")


def _teacher(tag: str) -> TeacherArtifact:
    return TeacherArtifact(
        model={"weights": [1, 2, 3], "tag": tag},
        metadata={"symbol": "RELIANCE", "tag": tag},
        importance=pd.DataFrame({"feature": ["a"], "importance": [1.0], "rank": [1]}),
    )


@pytest.fixture
def instance() -> DagsterInstance:
    inst = DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("symbols", ["RELIANCE", "TCS", "M&M"])
    return inst


def test_partition_key_maps_to_directory_and_back(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    assert store.partition_dir("RELIANCE|2023-01-01") == tmp_path / "RELIANCE_2023-01-01_to_2023-06-30"
    assert store.partition_dir("M&M|2023-07-01") == tmp_path / "M&M_2023-07-01_to_2023-12-31"
    assert store.partition_key(tmp_path / "M&M_2023-07-01_to_2023-12-31") == "M&M|2023-07-01"
    assert store.partition_key(tmp_path / "BAJAJ-AUTO_2024-01-01_to_2024-06-30") == "BAJAJ-AUTO|2024-01-01"
    name = partition_dir_name("NAM_INDIA", date(2022, 1, 1), date(2022, 6, 30))
    assert parse_partition_dir_name(name) == ("NAM_INDIA", date(2022, 1, 1), date(2022, 6, 30))
    with pytest.raises(ValueError, match="not an artifact directory name"):
        parse_partition_dir_name("RELIANCE-2023")


def test_one_partition_round_trip_with_path_metadata(tmp_path: Path, instance: DagsterInstance) -> None:
    io = PartitionDirIOManager(base_dir=str(tmp_path))
    bars = _bars()
    out = build_output_context(
        asset_key="market_bars",
        partition_key="TCS|2023-07-01",
        asset_partitions_def=symbol_window_partitions,
        instance=instance,
    )
    io.handle_output(out, bars)
    directory = tmp_path / "TCS_2023-07-01_to_2023-12-31"
    assert (directory / "bars.parquet").is_file()
    assert out.get_logged_metadata()["path"].value == str(directory)
    inp = build_input_context(
        asset_key="market_bars",
        partition_key="TCS|2023-07-01",
        asset_partitions_def=symbol_window_partitions,
        instance=instance,
    )
    pd.testing.assert_frame_equal(io.load_input(inp), bars, check_freq=False)


def test_several_partitions_per_call_write_and_load_as_dict(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    io = PartitionDirIOManager(base_dir=str(tmp_path))
    keys = ["RELIANCE|2023-01-01", "RELIANCE|2023-07-01", "RELIANCE|2024-01-01"]
    key_range = PartitionKeyRange(keys[0], keys[-1])
    values = {k: _bars(3 + i) for i, k in enumerate(keys)}
    out = build_output_context(
        asset_key="market_bars",
        asset_partitions_def=symbol_window_partitions,
        asset_partition_key_range=key_range,
        instance=instance,
    )
    io.handle_output(out, values)
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert names == [
        "RELIANCE_2023-01-01_to_2023-06-30",
        "RELIANCE_2023-07-01_to_2023-12-31",
        "RELIANCE_2024-01-01_to_2024-06-30",
    ]
    inp = build_input_context(
        asset_key="market_bars",
        asset_partitions_def=symbol_window_partitions,
        asset_partition_key_range=key_range,
        instance=instance,
    )
    loaded = io.load_input(inp)
    assert set(loaded) == set(keys)
    assert [len(loaded[k]) for k in keys] == [3, 4, 5]


def test_several_partitions_need_a_dict_of_their_keys(tmp_path: Path, instance: DagsterInstance) -> None:
    io = PartitionDirIOManager(base_dir=str(tmp_path))
    out = build_output_context(
        asset_key="market_bars",
        asset_partitions_def=symbol_window_partitions,
        asset_partition_key_range=PartitionKeyRange("TCS|2023-01-01", "TCS|2023-07-01"),
        instance=instance,
    )
    with pytest.raises(ArtifactError, match="dict keyed by some of those partition keys"):
        io.handle_output(out, {"TCS|2023-01-01": _bars(), "INFY|2023-01-01": _bars()})
    with pytest.raises(ArtifactError, match="got DataFrame"):
        io.handle_output(out, _bars())
    assert not any(p.name.startswith(("TCS", "INFY")) for p in tmp_path.iterdir())
    # A batch that skipped a partition writes the others only.
    io.handle_output(out, {"TCS|2023-07-01": _bars()})
    assert sorted(p.name for p in tmp_path.iterdir() if p.name[0] != ".") == ["TCS_2023-07-01_to_2023-12-31"]


def test_outputs_of_one_partition_share_its_directory(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    key = "RELIANCE|2023-01-01"
    store.write(key, codec_for("market_bars"), _bars())
    store.write(key, codec_for("teacher_model"), _teacher("v1"))
    directory = store.partition_dir(key)
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    assert files == ["bars.parquet", CHECKSUMS, "feature_importance.csv", "metadata.json", "model.pkl"]
    sums = json.loads((directory / CHECKSUMS).read_text())
    assert set(sums) == {"bars.parquet", "feature_importance.csv", "metadata.json", "model.pkl"}
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["model_sha256"] == sums["model.pkl"]
    assert store.read(key, codec_for("teacher_model"), "teacher_model").model["tag"] == "v1"


def test_exception_mid_write_keeps_previous_artifacts_and_leaves_no_half_directory(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    key = "RELIANCE|2023-01-01"
    store.write(key, codec_for("teacher_model"), _teacher("v1"))
    directory = store.partition_dir(key)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full while pickling")

    broken = _teacher("v2")
    broken.model = Unpicklable()
    with pytest.raises(RuntimeError, match="disk full"):
        store.write(key, codec_for("teacher_model"), broken)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks", directory.name]
    assert store.read(key, codec_for("teacher_model"), "teacher_model").model["tag"] == "v1"

    fresh = "TCS|2023-01-01"
    with pytest.raises(RuntimeError, match="disk full"):
        store.write(fresh, codec_for("teacher_model"), broken)
    assert not store.partition_dir(fresh).exists()


def test_crash_between_swap_renames_is_recovered(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    key = "RELIANCE|2023-01-01"
    store.write(key, codec_for("market_bars"), _bars())
    directory = store.partition_dir(key)
    # Simulate a crash after moving the old directory aside and before renaming the new one in.
    directory.rename(tmp_path / f".old-{directory.name}-deadbeef")
    (tmp_path / f".staging-{directory.name}-x").mkdir()
    loaded = store.read(key, codec_for("market_bars"), "market_bars")
    assert len(loaded) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks", directory.name]


def test_checksum_mismatch_names_the_corrupt_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    key = "RELIANCE|2023-01-01"
    store.write(key, codec_for("teacher_model"), _teacher("v1"))
    model = store.partition_dir(key) / "model.pkl"
    model.write_bytes(model.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ArtifactError, match=r"model\.pkl is corrupt \(sha256"):
        store.read(key, codec_for("teacher_model"), "teacher_model")


def test_missing_file_and_missing_partition_are_named(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match="RELIANCE\\|2023-01-01 has not been materialised"):
        store.read("RELIANCE|2023-01-01", codec_for("teacher_labels"), "teacher_labels")
    store.write("RELIANCE|2023-01-01", codec_for("teacher_model"), _teacher("v1"))
    (store.partition_dir("RELIANCE|2023-01-01") / "feature_importance.csv").unlink()
    with pytest.raises(ArtifactError, match=r"missing file .*feature_importance\.csv"):
        store.read("RELIANCE|2023-01-01", codec_for("teacher_model"), "teacher_model")
