"""The IO manager: layout both ways, several partitions per call, atomic writes, checksums."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, PartitionKeyRange, build_input_context, build_output_context

from sensequant_assets import io_manager
from sensequant_assets.artifacts import EvaluationArtifact, TeacherArtifact
from sensequant_assets.io_manager import (
    CHECKSUMS,
    TXN_DIR,
    ArtifactError,
    ArtifactStore,
    LazyPartitions,
    PartitionDirIOManager,
    SupersededError,
    codec_for,
    open_store,
    parse_partition_dir_name,
    partition_dir_name,
)
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.sources.symbols import InvalidSymbolError


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


def _io(location: str | Path) -> PartitionDirIOManager:
    """The IO manager on `location` (a directory or an object-store URL)."""
    return PartitionDirIOManager.at(location)


@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: no base_dir swept for legacy leftovers yet."""
    monkeypatch.setattr(io_manager, "_SWEPT_BASE_DIRS", set())


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
    io = _io(tmp_path)
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
    io = _io(tmp_path)
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
    io = _io(tmp_path)
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
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks", TXN_DIR, directory.name]
    assert list((tmp_path / TXN_DIR).iterdir()) == []
    assert store.read(key, codec_for("teacher_model"), "teacher_model").model["tag"] == "v1"

    fresh = "TCS|2023-01-01"
    with pytest.raises(RuntimeError, match="disk full"):
        store.write(fresh, codec_for("teacher_model"), broken)
    assert not store.partition_dir(fresh).exists()


class _Crash(BaseException):
    """Stands for the process being killed: nothing after it runs."""


def _crash_between_renames(store: ArtifactStore, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Overwrite `key`'s bars, dying after the old directory is moved aside and before the new one is in.

    The first rename (partition -> backup) happens; the second (staging -> partition) kills the process,
    so no cleanup runs and both the backup and the complete staging directory stay in `.txn`.
    """
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise _Crash
        real_rename(src, dst)

    with monkeypatch.context() as m:
        m.setattr(io_manager.os, "rename", rename)
        m.setattr(io_manager.shutil, "rmtree", lambda *a, **k: None)
        with pytest.raises(_Crash):
            store.write(key, codec_for("market_bars"), _bars(9))
    assert len(calls) == 2


@pytest.mark.parametrize("next_op", ["read", "write"])
def test_crash_between_swap_renames_is_recovered_by_the_next_read_or_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, next_op: str
) -> None:
    store = ArtifactStore(tmp_path)
    key = "M&M|2023-01-01"
    store.write(key, codec_for("market_bars"), _bars())
    directory = store.partition_dir(key)
    _crash_between_renames(store, key, monkeypatch)
    txn = tmp_path / TXN_DIR
    assert not directory.exists()
    assert sorted(p.name for p in txn.iterdir()) == [f"{directory.name}.old", f"{directory.name}.staging"]

    if next_op == "write":
        store.write(key, codec_for("teacher_model"), _teacher("v1"))
        assert store.read(key, codec_for("teacher_model"), "teacher_model").model["tag"] == "v1"
    # The old (complete) directory is back, not the interrupted new one.
    assert len(store.read(key, codec_for("market_bars"), "market_bars")) == 5
    assert list(txn.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks", TXN_DIR, directory.name]


def test_leftovers_of_a_crash_mid_staging_or_mid_cleanup_are_removed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    key = "BAJAJ-AUTO|2023-01-01"
    store.write(key, codec_for("market_bars"), _bars())
    directory = store.partition_dir(key)
    txn = tmp_path / TXN_DIR
    # Killed while staging (a half-written staging directory), and killed while deleting the backup
    # after a completed swap (a partial backup beside a complete partition, which must not come back).
    (txn / f"{directory.name}.staging" / "student").mkdir(parents=True)
    (txn / f"{directory.name}.staging" / "bars.parquet").write_bytes(b"half")
    (txn / f"{directory.name}.old").mkdir()
    (txn / f"{directory.name}.old" / "bars.parquet").write_bytes(b"stale")
    store.write(key, codec_for("teacher_model"), _teacher("v1"))
    assert list(txn.iterdir()) == []
    assert len(store.read(key, codec_for("market_bars"), "market_bars")) == 5
    assert store.read(key, codec_for("teacher_model"), "teacher_model").model["tag"] == "v1"


@pytest.mark.parametrize("next_op", ["read", "write"])
def test_legacy_leftovers_beside_the_partitions_are_recovered(tmp_path: Path, next_op: str) -> None:
    """Older versions staged in base_dir itself: `.old-<dir>-<hex>` and `.staging-<dir>-<random>`."""
    store = ArtifactStore(tmp_path)
    key, other = "M&M|2023-01-01", "BAJAJ-AUTO|2023-07-01"
    store.write(key, codec_for("market_bars"), _bars())
    store.write(other, codec_for("market_bars"), _bars(4))
    io_manager._SWEPT_BASE_DIRS.clear()  # a new process, started after an old version crashed
    directory, other_dir = store.partition_dir(key), store.partition_dir(other)
    # Crashed between the two renames of a swap (directory) and during cleanup (other_dir, still there).
    directory.rename(tmp_path / f".old-{directory.name}-deadbeef")
    (tmp_path / f".staging-{directory.name}-ab_12xyz").mkdir()
    shutil.copytree(other_dir, tmp_path / f".old-{other_dir.name}-0123abcd")
    (tmp_path / f".staging-{other_dir.name}-q9w8e7r6" / "student").mkdir(parents=True)

    if next_op == "read":
        assert len(store.read(key, codec_for("market_bars"), "market_bars")) == 5
    else:
        store.write("TCS|2023-01-01", codec_for("market_bars"), _bars())
        assert len(store.read(key, codec_for("market_bars"), "market_bars")) == 5
    assert len(store.read(other, codec_for("market_bars"), "market_bars")) == 4
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".old-", ".staging-"))]


def test_writes_and_reads_do_not_list_the_artifact_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cost independent of the number of partitions: after the one legacy sweep, nothing lists base_dir."""
    store = ArtifactStore(tmp_path)
    for i in range(200):
        (tmp_path / partition_dir_name(f"SYM{i}", date(2023, 1, 1), date(2023, 6, 30))).mkdir()
    (tmp_path / TXN_DIR).mkdir()
    watched = {(s.st_dev, s.st_ino) for s in (os.stat(tmp_path), os.stat(tmp_path / TXN_DIR))}
    listings: list[str] = []
    real_scandir, real_listdir = os.scandir, os.listdir

    def record(path) -> None:
        st = os.fstat(path) if isinstance(path, int) else os.stat(path)
        if (st.st_dev, st.st_ino) in watched:
            listings.append(str(path))

    def scandir(path="."):
        record(path)
        return real_scandir(path)

    def listdir(path="."):
        record(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)
    key = "RELIANCE|2023-01-01"
    store.write(key, codec_for("market_bars"), _bars())
    assert listings == [
        str(tmp_path)
    ]  # the once-per-process sweep for legacy leftovers (and the probe works)
    listings.clear()

    store.write(key, codec_for("market_bars"), _bars(6))  # overwrite: swap with a backup
    store.write(key, codec_for("teacher_model"), _teacher("v1"))  # merge with the existing files
    store.write("TCS|2023-07-01", codec_for("market_bars"), _bars())  # a new partition
    assert len(store.read(key, codec_for("market_bars"), "market_bars")) == 6
    with pytest.raises(ArtifactError, match="has not been materialised"):
        store.read("INFY|2023-01-01", codec_for("market_bars"), "market_bars")
    ArtifactStore(tmp_path).write(key, codec_for("market_bars"), _bars())  # another store, same process
    assert listings == []


def test_checksum_mismatch_names_the_corrupt_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    key = "RELIANCE|2023-01-01"
    store.write(key, codec_for("teacher_model"), _teacher("v1"))
    model = store.partition_dir(key) / "model.pkl"
    model.write_bytes(model.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ArtifactError, match=r"model\.pkl is corrupt \(sha256") as caught:
        store.read(key, codec_for("teacher_model"), "teacher_model")
    assert "re-materialise teacher_model for RELIANCE|2023-01-01 to replace it" in str(caught.value)
    # A checksum file that is not JSON is named, with the same way out.
    (store.partition_dir(key) / "checksums.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"checksums\.json is corrupt \(not valid JSON\).*re-materialise"):
        store.read(key, codec_for("teacher_model"), "teacher_model")
    # ... and following it works: the new commit vouches for its own files (the others it can no
    # longer vouch for are refused by name until they are re-materialised too).
    store.write(key, codec_for("market_bars"), _bars())
    store.write(key, codec_for("teacher_model"), _teacher("v2"))
    assert store.read(key, codec_for("teacher_model"), "teacher_model").metadata["tag"] == "v2"
    assert len(store.read(key, codec_for("market_bars"), "market_bars")) == 5


def test_missing_file_and_missing_partition_are_named(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match="RELIANCE\\|2023-01-01 has not been materialised"):
        store.read("RELIANCE|2023-01-01", codec_for("teacher_labels"), "teacher_labels")
    store.write("RELIANCE|2023-01-01", codec_for("teacher_model"), _teacher("v1"))
    (store.partition_dir("RELIANCE|2023-01-01") / "feature_importance.csv").unlink()
    with pytest.raises(ArtifactError, match=r"missing file .*feature_importance\.csv"):
        store.read("RELIANCE|2023-01-01", codec_for("teacher_model"), "teacher_model")


def test_lazy_partitions_load_on_demand_and_name_each_partitions_identity(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    codec = codec_for("student_evaluation")

    def evaluation(auc: float) -> EvaluationArtifact:
        frame = pd.DataFrame({"x": [1.0, 2.0]})
        return EvaluationArtifact({"auc": auc}, frame, frame, b"png", b"png2")

    a, b, never = "TCS|2023-01-01", "TCS|2023-07-01", "TCS|2024-01-01"
    store.write(a, codec, evaluation(0.6))
    store.write(b, codec, evaluation(0.7))
    store.write(never, codec_for("teacher_model"), _teacher("t"))  # a partition without an evaluation
    lazy = LazyPartitions(store, codec, "student_evaluation", [a, b, never])
    assert sorted(lazy) == [a, b] and len(lazy) == 2
    assert lazy[a].metrics == {"auc": 0.6}
    with pytest.raises(KeyError):
        lazy[never]
    before = {key: lazy.identity(key) for key in lazy}
    store.write(a, codec_for("teacher_model"), _teacher("u"))  # other assets' files do not count
    store.write(b, codec, evaluation(0.71))  # a re-evaluation does
    after = LazyPartitions(store, codec, "student_evaluation", [a, b])
    assert after.identity(a) == before[a] and after.identity(b) != before[b]


def test_a_lazy_input_recovers_a_partition_caught_between_the_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The briefing's lazy input must not drop a partition that a crashed swap left aside."""
    store = ArtifactStore(tmp_path)
    key = "TCS|2023-01-01"
    store.write(key, codec_for("market_bars"), _bars(5))
    _crash_between_renames(store, key, monkeypatch)
    assert not store.partition_dir(key).exists()
    lazy = LazyPartitions(store, codec_for("market_bars"), "market_bars", [key])
    assert list(lazy) == [key] and len(lazy[key]) == 5  # the old, complete version


def test_sensor_state_is_content_addressed_and_keeps_the_newest_versions(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    keys = [store.write_state("new_data", f"state {i}".encode()) for i in range(7)]
    assert store.write_state("new_data", b"state 6") == keys[-1]  # the same state, the same key
    assert [store.read_state("new_data", k) for k in keys] == [None, None] + [
        f"state {i}".encode() for i in range(2, 7)
    ]


@pytest.mark.parametrize(
    ("symbol", "why"),
    [
        ("..", "'..'"),
        ("../ETC", "path separator"),
        ("/ETC", "path separator"),
        ("A\\B", "path separator"),
        ("X" * 40, "longer than 32"),
        ("RELİANCE", "it contains 'İ'"),  # a Unicode look-alike of RELIANCE (dotted capital I)
        ("reliance", "is not written as 'RELIANCE'"),  # a case variant: one directory per symbol
        (" TCS", "is not written as 'TCS'"),
        (".HIDDEN", "must start with a letter or digit"),
    ],
)
def test_the_store_refuses_a_symbol_that_is_not_a_canonical_name(
    tmp_path: Path, symbol: str, why: str
) -> None:
    """Symbols added through the UI's "Add partition" bypass the CLI's validation: the store is the
    last place that can keep a partition key from becoming a path outside it or a second directory."""
    store = ArtifactStore(tmp_path / "models")
    key = f"{symbol}|2023-01-01"
    with pytest.raises(InvalidSymbolError, match=re.escape(why)) as caught:
        store.partition_dir(key)
    assert repr(key) in str(caught.value)
    with pytest.raises(InvalidSymbolError):
        store.write(key, codec_for("market_bars"), _bars())
    written = [p for p in tmp_path.rglob("*") if p.name not in ("models", TXN_DIR)]
    assert written == []  # nothing staged, nothing outside the store


def test_reads_racing_commits_see_one_whole_version(artifact_location: str) -> None:
    """A reader verifies checksums.json and then reads each file; a commit that swapped the
    directory in between gave a false "corrupt" or "missing" error. Readers now hold a shared
    lock, so a read sees the old directory or the new one, never half of each. On object storage
    a reader takes one manifest and verifies every file against it (and re-reads on the newest
    one if the files of its version were collected meanwhile)."""
    if artifact_location.startswith("memory://"):
        pytest.skip(
            "fsspec's memory:// creates an object empty and fills it on close (S3's PUT and a local "
            "rename are atomic): this race runs on the local directory and on S3"
        )
    store = open_store(artifact_location)
    key, codec = "RELIANCE|2023-01-01", codec_for("teacher_model")
    versions = [_teacher("a" * 20_000), _teacher("b" * 20_000)]
    store.write(key, codec, versions[0])
    reads = 300 if isinstance(store, ArtifactStore) else 30  # an S3 read is a few HTTP requests
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[str] = set()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            store.write(key, codec, versions[i % 2])

    def reader() -> None:
        for _ in range(reads):
            try:
                seen.add(store.read(key, codec, "teacher_model").metadata["tag"][0])
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    threads[1].join()
    stop.set()
    threads[0].join()
    assert errors == []
    assert seen == {"a", "b"}  # the reads did race the commits


def test_two_runs_on_one_partition_leave_one_runs_teacher_and_labels(
    artifact_location: str, instance: DagsterInstance
) -> None:
    """teacher_model and teacher_labels are two outputs of one step, handled one after the other.
    Run A's teacher, then run B's teacher, then A's labels used to leave B's model beside A's
    labels. The teacher now commits its labels in the same swap, and A's labels output finds B's
    pair in place and leaves it (with a warning): the directory holds B's model and B's labels."""
    io = _io(artifact_location)
    key = "TCS|2023-07-01"
    store = open_store(artifact_location)

    def handle(run: str, asset: str, value: object) -> None:
        context = build_output_context(
            asset_key=asset,
            partition_key=key,
            asset_partitions_def=symbol_window_partitions,
            instance=instance,
            run_id=run,
            step_key="teacher",
        )
        io.handle_output(context, value)

    labels = {
        run: pd.DataFrame({"ts": ["2023-07-03"], "label": [i], "teacher_proba": [0.5]})
        for i, run in enumerate("AB")
    }
    teachers = {run: replace(_teacher(run), labels=labels[run]) for run in "AB"}
    handle("A", "teacher_model", teachers["A"])
    labels_now = store.read(key, codec_for("teacher_labels"), "teacher_labels")["label"].tolist()
    assert labels_now == [0]  # committed with the model
    handle("B", "teacher_model", teachers["B"])
    handle("A", "teacher_labels", labels["A"])  # B's pair is in place: A's labels are not written
    handle("B", "teacher_labels", labels["B"])  # its pair is in place: nothing to write
    assert store.read(key, codec_for("teacher_model"), "teacher_model").metadata["tag"] == "B"
    assert store.read(key, codec_for("teacher_labels"), "teacher_labels")["label"].tolist() == [1]
    assert io_manager._PAIRED == {}  # each step's record is cleared by its labels output
    # A labels output without a teacher committed in its step (another flow) is written as before.
    handle("C", "teacher_labels", labels["A"])
    assert store.read(key, codec_for("teacher_labels"), "teacher_labels")["label"].tolist() == [0]


def test_a_student_whose_teacher_was_replaced_is_not_written(
    artifact_location: str, instance: DagsterInstance
) -> None:
    """The student's commit requires the teacher it learned from (the model sha256 in its
    metadata): with another run's teacher in place, a student of one partition fails, saying
    why, and one in a batch is counted as superseded; neither is written. A student of the
    teacher in place is written."""
    from sensequant_assets.artifacts import StudentArtifact

    io, store = _io(artifact_location), open_store(artifact_location)
    keys = ["TCS|2023-01-01", "TCS|2023-07-01"]
    for key in keys:
        store.write(key, codec_for("teacher_model"), _teacher("A"))
    learned_from = store.owned_checksums(keys[0], codec_for("teacher_model"))["model.pkl"]
    for key in keys:  # another run's teacher, committed while the student trained
        store.write(key, codec_for("teacher_model"), _teacher("B"))

    def student(teacher_sha: str) -> StudentArtifact:
        return StudentArtifact({"s": 1}, {"auc": 0.6}, {"teacher": {"model_sha256": teacher_sha}})

    def context(**partitions: object):
        return build_output_context(
            asset_key="student_model",
            asset_partitions_def=symbol_window_partitions,
            instance=instance,
            **partitions,
        )

    with pytest.raises(SupersededError, match="another run committed its own teacher"):
        io.handle_output(context(partition_key=keys[0]), student(learned_from))
    batch = context(asset_partition_key_range=PartitionKeyRange(keys[0], keys[1]))
    io.handle_output(batch, {key: student(learned_from) for key in keys})
    assert batch.get_logged_metadata()["partitions_superseded"].value == 2
    for key in keys:
        with pytest.raises(ArtifactError, match=r"student_model\.pkl"):
            store.read(key, codec_for("student_model"), "student_model")
        assert store.read(key, codec_for("teacher_model"), "teacher_model").metadata["tag"] == "B"
    current = store.owned_checksums(keys[1], codec_for("teacher_model"))["model.pkl"]
    io.handle_output(context(partition_key=keys[1]), student(current))
    got = store.read(keys[1], codec_for("student_model"), "student_model")
    assert got.metadata["teacher"]["model_sha256"] == current


def test_a_superseded_student_of_a_run_alone_fails_instead_of_being_recorded(
    tmp_path: Path, monkeypatch
) -> None:
    """Another run re-committed the teacher while this one trained its student: the student is not
    written, and a run of that partition alone fails rather than record a materialisation of it."""
    from dagster import AssetKey

    from sensequant_assets import io_manager as iom
    from sensequant_tests.pipeline_helpers import instance_with, run

    original = iom.ArtifactStore.write

    def write(self, key, codec, obj, **kw):
        if kw.get("requires"):  # the teacher changed under the student's commit
            raise iom.SupersededError("simulated")
        return original(self, key, codec, obj, **kw)

    monkeypatch.setattr(iom.ArtifactStore, "write", write)
    instance = instance_with("RELIANCE")
    selection = ["market_bars", "teacher_model", "teacher_labels", "student_model"]
    result = run(tmp_path, "RELIANCE|2023-07-01", instance=instance, selection=selection)
    assert not result.success
    assert instance.get_latest_materialization_event(AssetKey("student_model")) is None
    assert not (tmp_path / "RELIANCE_2023-07-01_to_2023-12-31" / "student").exists()
    failure = [
        e for e in instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.is_step_failure
    ]
    assert "re-materialise RELIANCE|2023-07-01" in str(failure[0].dagster_event.step_failure_data.error)
