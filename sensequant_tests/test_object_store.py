"""The artifact store on object storage (`memory://` and S3 on moto's server): what it guarantees.

`VersionedTree` and `ObjectArtifactStore` unit behaviour on both object backends (`object_location`);
writers that die before their manifest (simulated, and a real SIGKILL of a child process on S3);
several processes committing to one partition at once on S3 (moto), where every commit must land
exactly once and a `requires` race must leave the loser with nothing written.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from upath import UPath

from sensequant_assets.artifacts import (
    BriefingArtifact,
    EvaluationArtifact,
    StudentArtifact,
)
from sensequant_assets.io_manager import (
    ArtifactError,
    MissingArtifactError,
    SupersededError,
    codec_for,
    open_store,
    sha256_bytes,
)
from sensequant_assets.object_store import (
    COMMITS,
    GRACE,
    MANIFEST_FORMAT,
    VERSIONS,
    CorruptObjectError,
    FileRef,
    ObjectArtifactStore,
    Version,
    VersionedTree,
    new_txid,
)
from sensequant_tests.object_storage import fresh_location
from sensequant_tests.test_io_manager import _bars, _teacher
from sensequant_tests.test_object_store_pipeline import EVALUATION_FILES, TRAINING_FILES

KEY = "RELIANCE|2023-01-01"
DIR = "RELIANCE_2023-01-01_to_2023-06-30"


# --- small real values of every asset ----------------------------------------------------------


def _labels(label: int) -> pd.DataFrame:
    return pd.DataFrame({"ts": ["2023-01-03"], "label": [label], "teacher_proba": [0.5]})


def _student(tag: str, teacher_sha: str | None = None) -> StudentArtifact:
    meta: dict[str, Any] = {"tag": tag}
    if teacher_sha:
        meta["teacher"] = {"model_sha256": teacher_sha}
    return StudentArtifact(model={"student": tag}, metrics={"auc": 0.61}, metadata=meta)


def _evaluation(auc: float) -> EvaluationArtifact:
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    return EvaluationArtifact({"auc": auc}, frame, frame, b"png", b"png2")


def _briefing(stamp: str) -> BriefingArtifact:
    cache = {"RELIANCE": {"digest": "d1", "statistics": {"n": 3}, "excess": np.array([0.1, -0.2])}}
    symbols = [{"symbol": "RELIANCE", "decision": "promote"}]
    return BriefingArtifact(generated_at=stamp, symbols=symbols, markdown="# b", cache=cache)


def _same_frame(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    pd.testing.assert_frame_equal(a, b, check_freq=False)
    return True


# asset -> (value, check that a loaded value is that value)
VALUES: dict[str, tuple[Any, Callable[[Any, Any], bool]]] = {
    "market_bars": (_bars(), _same_frame),
    "teacher_model": (_teacher("t1"), lambda got, _: got.model == {"weights": [1, 2, 3], "tag": "t1"}),
    "teacher_labels": (_labels(1), _same_frame),
    "student_model": (_student("s1"), lambda got, _: got.model == {"student": "s1"} and got.metrics["auc"]),
    "student_evaluation": (
        _evaluation(0.7),
        lambda got, v: (
            got.metrics == v.metrics
            and _same_frame(got.predictions, v.predictions)
            and got.reliability_png == b"png2"
        ),
    ),
}


def _store(location: str) -> ObjectArtifactStore:
    store = open_store(location)
    assert isinstance(store, ObjectArtifactStore)
    return store


def _tree(location: str, **kw: Any) -> VersionedTree:
    return VersionedTree(UPath(location) / "tree", **kw)


def _manifest(tree: VersionedTree, seq: int) -> dict[str, Any]:
    return json.loads(tree.fs.cat_file(tree._p(COMMITS, f"{seq:010d}.json")))


def _put_manifest(tree: VersionedTree, seq: int, body: bytes | dict[str, Any]) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    tree.fs.pipe_file(tree._p(COMMITS, f"{seq:010d}.json"), data)


def _prefixes(tree: VersionedTree) -> set[str]:
    try:
        listed = tree.fs.ls(tree._p(VERSIONS), detail=False, refresh=True)
    except FileNotFoundError:
        return set()
    return {p.rstrip("/").rsplit("/", 1)[-1] for p in listed}


def _referenced(tree: VersionedTree) -> set[str]:
    return {ref.object.split("/")[1] for s in tree.seqs() for ref in tree.version(s).files.values()}


# --- VersionedTree and ObjectArtifactStore: unit behaviour ------------------------------------


def test_every_codec_round_trips_in_one_partition_directory(object_location: str) -> None:
    store = _store(object_location)
    for asset, (value, _) in VALUES.items():
        store.write(KEY, codec_for(asset), value)
    for asset, (value, same) in VALUES.items():
        assert same(store.read(KEY, codec_for(asset), asset), value), asset
    # The layout: the partition's directory name as on a local disk, one manifest per commit.
    tree = store.tree(KEY)
    assert str(tree.root) == f"{object_location}/{DIR}"
    assert store.partition_key(tree.root) == KEY
    assert tree.seqs() == [1, 2, 3, 4, 5]  # manifests stay for GRACE, then the newest KEEP = 3
    tree.collect_garbage(now=time.time() + GRACE + 60)
    assert tree.seqs() == [3, 4, 5]
    latest = tree.latest()
    assert latest is not None and latest.meta == {"partition": KEY}
    assert set(latest.files) == TRAINING_FILES | EVALUATION_FILES
    manifest = _manifest(tree, 5)
    assert manifest["format"] == MANIFEST_FORMAT and manifest["seq"] == 5 and manifest["parent"] == 4
    for rel, entry in manifest["files"].items():
        assert entry["object"].startswith(f"{VERSIONS}/") and entry["object"].endswith(f"/{rel}")
        assert sha256_bytes(tree.fs.cat_file(tree._p(entry["object"]))) == entry["sha256"]
    # The teacher's metadata records its model's sha256, as on a local disk.
    teacher = store.read(KEY, codec_for("teacher_model"), "teacher_model")
    assert teacher.metadata["model_sha256"] == latest.files["model.pkl"].sha256


def test_unpartitioned_assets_are_committed_together_and_earlier_files_carried(object_location: str) -> None:
    store = _store(object_location)
    codec = codec_for("promotion_briefing")
    with pytest.raises(MissingArtifactError, match="promotion_briefing has not been materialised"):
        store.read_fixed(codec, "promotion_briefing")
    store.write_fixed(codec, _briefing("2026-01-01T00:00:00"))
    path = store.write_fixed(codec, _briefing("2026-02-01T00:00:00"))
    assert str(path) == f"{object_location}/briefings"
    got = store.read_fixed(codec, "promotion_briefing")
    assert got.generated_at == "2026-02-01T00:00:00" and got.decision("RELIANCE") == "promote"
    np.testing.assert_array_equal(got.cache["RELIANCE"]["excess"], [0.1, -0.2])
    latest = VersionedTree(path).latest()
    assert latest is not None and latest.seq == 2
    history = sorted(rel for rel in latest.files if rel.startswith("history/"))
    assert history == [
        "history/promotion_briefing_20260101T000000.json",
        "history/promotion_briefing_20260101T000000.md",
        "history/promotion_briefing_20260201T000000.json",
        "history/promotion_briefing_20260201T000000.md",
    ]


def test_files_a_commit_does_not_replace_are_carried_by_reference(object_location: str) -> None:
    store = _store(object_location)
    tree = store.tree(KEY)
    store.write(KEY, codec_for("market_bars"), _bars(5))
    store.write(KEY, codec_for("teacher_model"), _teacher("t1"))
    v1, v2 = tree.version(1), tree.version(2)
    assert v2.files["bars.parquet"] == v1.files["bars.parquet"]  # the same object, not a copy
    assert v2.files["model.pkl"].object.split("/")[1] != v1.files["bars.parquet"].object.split("/")[1]
    store.write(KEY, codec_for("market_bars"), _bars(7))  # replaces bars only
    v3 = tree.version(3)
    assert v3.files["bars.parquet"] != v2.files["bars.parquet"]
    assert {r: v3.files[r] for r in ("model.pkl", "metadata.json")} == {
        r: v2.files[r] for r in ("model.pkl", "metadata.json")
    }
    assert len(store.read(KEY, codec_for("market_bars"), "market_bars")) == 7
    assert store.read(KEY, codec_for("teacher_model"), "teacher_model").model["tag"] == "t1"
    # A student directory is replaced as a whole: files of the old one are not carried.
    codec = codec_for("student_model")
    store.write(KEY, codec, _student("s1"))
    stale = FileRef("v/x/student/old.bin", "0" * 64)
    latest = tree.commit(lambda base: {**base.files, "student/old.bin": stale} if base else None)
    assert latest is not None and "student/old.bin" in latest.files
    store.write(KEY, codec, _student("s2"))
    assert "student/old.bin" not in (tree.latest() or Version(0, {})).files


def test_written_receives_the_checksums_the_manifest_records(object_location: str) -> None:
    store = _store(object_location)
    written: dict[str, str] = {}
    teacher = replace(_teacher("t1"), labels=_labels(0))
    store.write(
        KEY,
        codec_for("teacher_model"),
        teacher,
        together=[(codec_for("teacher_labels"), _labels(0))],
        written=written,
    )
    latest = store.tree(KEY).latest()
    assert latest is not None
    assert set(written) == {"model.pkl", "metadata.json", "feature_importance.csv", "labels.csv.gz"}
    assert written == latest.checksums()
    for rel, digest in written.items():
        assert sha256_bytes(store.tree(KEY).read(latest, rel)) == digest
    assert store.holds(KEY, {"labels.csv.gz": written["labels.csv.gz"]})
    labels = {"labels.csv.gz": written["labels.csv.gz"]}
    assert store.owned_checksums(KEY, codec_for("teacher_labels")) == labels
    assert store.owned_checksums("INFY|2023-01-01", codec_for("teacher_labels")) == {}
    assert store.owned_checksums("../ETC|2023-01-01", codec_for("teacher_labels")) == {}


def test_requires_superseded_raises_and_writes_nothing(object_location: str) -> None:
    store = _store(object_location)
    tree = store.tree(KEY)
    codec = codec_for("student_model")
    # Nothing committed yet holds the required teacher either.
    with pytest.raises(SupersededError, match=r"model\.pkl replaced by another commit"):
        store.write(KEY, codec, _student("s0", "f" * 64), requires={"model.pkl": "f" * 64})
    assert tree.seqs() == [] and _prefixes(tree) == set()
    store.write(KEY, codec_for("teacher_model"), _teacher("t1"))
    first = store.owned_checksums(KEY, codec_for("teacher_model"))["model.pkl"]
    store.write(KEY, codec_for("teacher_model"), _teacher("t2"))
    before = (tree.seqs(), _prefixes(tree))
    with pytest.raises(SupersededError):
        store.write(KEY, codec, _student("s1", first), requires={"model.pkl": first})
    assert (tree.seqs(), _prefixes(tree)) == before  # no manifest, no upload left behind
    with pytest.raises(MissingArtifactError, match=r"missing file .*student/student_model\.pkl"):
        store.read(KEY, codec, "student_model")
    # The student of the teacher in place is written.
    current = store.owned_checksums(KEY, codec_for("teacher_model"))["model.pkl"]
    store.write(KEY, codec, _student("s2", current), requires={"model.pkl": current})
    assert store.read(KEY, codec, "student_model").metadata["tag"] == "s2"


def test_a_corrupt_or_missing_object_is_named_with_the_asset_and_partition(object_location: str) -> None:
    store = _store(object_location)
    store.write(KEY, codec_for("teacher_model"), _teacher("t1"))
    tree = store.tree(KEY)
    latest = tree.latest()
    assert latest is not None
    model = tree._p(latest.files["model.pkl"].object)
    tree.fs.pipe_file(model, tree.fs.cat_file(model)[:-3] + b"xyz")
    with pytest.raises(ArtifactError, match=r"model\.pkl\) is corrupt \(sha256") as caught:
        store.read(KEY, codec_for("teacher_model"), "teacher_model")
    assert not isinstance(caught.value, MissingArtifactError)
    assert "teacher_model for partition RELIANCE|2023-01-01" in str(caught.value)
    assert "re-materialise teacher_model for RELIANCE|2023-01-01 to replace it" in str(caught.value)
    tree.fs.rm(model)
    with pytest.raises(ArtifactError, match=r"file model\.pkl of version 1\) is gone") as gone:
        store.read(KEY, codec_for("teacher_model"), "teacher_model")
    assert "teacher_model for partition RELIANCE|2023-01-01" in str(gone.value)
    # Re-materialising replaces it.
    store.write(KEY, codec_for("teacher_model"), _teacher("t2"))
    assert store.read(KEY, codec_for("teacher_model"), "teacher_model").model["tag"] == "t2"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{not json", r"is corrupt \(not valid JSON\)"),
        (b"\xff\xfe", r"is corrupt \(not valid JSON\)"),
        ({"format": "delta-log/2", "seq": 2, "files": {}}, "is not a sensequant-manifest/1 manifest"),
        ({"format": MANIFEST_FORMAT, "seq": 7, "files": {}}, "manifest of version 2"),
        ([1, 2], "is not a sensequant-manifest/1 manifest"),
        ({"format": MANIFEST_FORMAT, "seq": 2, "files": [["model.pkl", "x"]]}, "must be JSON objects"),
        ({"format": MANIFEST_FORMAT, "seq": 2, "files": {"model.pkl": "v/x/model.pkl"}}, "points outside v/"),
        ({"format": MANIFEST_FORMAT, "seq": 2, "files": {}, "meta": [1]}, "must be JSON objects"),
    ],
)
def test_a_corrupt_or_foreign_manifest_is_a_clear_error_and_a_new_commit_replaces_it(
    object_location: str, body: bytes | dict[str, Any] | list[int], why: str
) -> None:
    store = _store(object_location)
    store.write(KEY, codec_for("market_bars"), _bars())
    tree = store.tree(KEY)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    tree.fs.pipe_file(tree._p(COMMITS, "0000000002.json"), data)
    with pytest.raises(ArtifactError, match=why) as caught:
        store.read(KEY, codec_for("market_bars"), "market_bars")
    message = str(caught.value)
    assert f"{DIR}: manifest commits/0000000002.json" in message
    assert "market_bars for partition RELIANCE|2023-01-01" in message and "re-materialise" in message
    assert not isinstance(caught.value, MissingArtifactError)
    # As on a local disk, re-materialising works: the new version holds only what it vouches for.
    store.write(KEY, codec_for("teacher_model"), _teacher("t2"))
    assert tree.seqs()[-1] == 3
    assert store.read(KEY, codec_for("teacher_model"), "teacher_model").model["tag"] == "t2"
    with pytest.raises(MissingArtifactError, match=r"bars\.parquet"):
        store.read(KEY, codec_for("market_bars"), "market_bars")
    store.write(KEY, codec_for("market_bars"), _bars(3))
    assert len(store.read(KEY, codec_for("market_bars"), "market_bars")) == 3


def test_a_missing_partition_or_asset_is_missing_not_corrupt(object_location: str) -> None:
    store = _store(object_location)
    missing = r"teacher_labels for partition RELIANCE\|2023-01-01 has not been materialised"
    with pytest.raises(MissingArtifactError, match=missing):
        store.read(KEY, codec_for("teacher_labels"), "teacher_labels")
    store.write(KEY, codec_for("teacher_model"), _teacher("t1"))
    with pytest.raises(MissingArtifactError, match=r"missing file .*labels\.csv\.gz \(not in version 1\)"):
        store.read(KEY, codec_for("teacher_labels"), "teacher_labels")
    assert not store.holds(KEY, {"labels.csv.gz": "0" * 64})


@pytest.mark.parametrize(
    ("rel", "obj"),
    [
        ("model.pkl", "commits/0000000001.json"),
        ("model.pkl", "../elsewhere/model.pkl"),
        ("model.pkl", "v/../../elsewhere/model.pkl"),
        ("model.pkl", "/v/abs/model.pkl"),
        ("../model.pkl", "v/x/model.pkl"),
        ("a/./model.pkl", "v/x/model.pkl"),
    ],
)
def test_a_manifest_pointing_outside_its_tree_is_refused(object_location: str, rel: str, obj: str) -> None:
    tree = _tree(object_location)
    tree.commit(lambda base: {"model.pkl": b"real"})
    secret = UPath(object_location) / "elsewhere" / "model.pkl"
    secret.fs.pipe_file(secret.path, b"secret")
    entry = {"object": obj, "sha256": sha256_bytes(b"secret")}
    _put_manifest(tree, 2, {"format": MANIFEST_FORMAT, "seq": 2, "files": {rel: entry}})
    with pytest.raises(CorruptObjectError, match=r"outside v/|not a relative file name inside the tree"):
        tree.latest()


def test_sensor_state_is_content_addressed_and_keeps_the_newest_versions(object_location: str) -> None:
    store = _store(object_location)
    assert store.latest_state("new_data") is None
    assert store.read_state("new_data", "0" * 20) is None
    keys = [store.write_state("new_data", f"state {i}".encode()) for i in range(7)]
    state_tree = store._state_tree("new_data", 5)
    assert store.write_state("new_data", b"state 6") == keys[-1]  # unchanged: no new version
    assert state_tree.seqs() == [1, 2, 3, 4, 5, 6, 7]
    # only the newest 5 are read, as on a local disk, whatever the grace keeps
    assert store.read_state("new_data", keys[1]) is None
    assert store.read_state("new_data", keys[2]) == b"state 2"
    state_tree.collect_garbage(now=time.time() + GRACE + 60)
    assert state_tree.seqs() == [3, 4, 5, 6, 7]
    assert [store.read_state("new_data", k) for k in keys] == [None, None] + [
        f"state {i}".encode() for i in range(2, 7)
    ]
    assert store.latest_state("new_data") == b"state 6"
    # A state that comes back is the newest again; another sensor's state is its own.
    for state in (b"A", b"B", b"A"):
        store.write_state("new_data", state)
        assert store.latest_state("new_data") == state
    assert store.latest_state("symbol_universe") is None
    with pytest.raises(CorruptObjectError, match="not a relative file name"):
        store.write_state("../escape", b"x")


def test_garbage_collection_keeps_referenced_and_young_prefixes(object_location: str) -> None:
    grace = 1000.0
    tree = _tree(object_location, keep=2, grace=grace)
    # v1 writes a, b; v2 replaces a; v3 replaces b; v4 adds c. Kept: v3 and v4, which reference
    # v2's a, v3's b and v4's c; v1's prefix is referenced by no kept version.
    versions = [
        tree.commit(lambda base: {"a": b"a1", "b": b"b1"}),
        tree.commit(lambda base: {**base.files, "a": b"a2"}),
        tree.commit(lambda base: {**base.files, "b": b"b3"}),
        tree.commit(lambda base: {**base.files, "c": b"c4"}),
    ]
    assert tree.seqs() == [1, 2, 3, 4]  # beyond keep, but younger than the grace
    prefix = {}
    for v, new in zip(versions, ("a", "a", "b", "c"), strict=True):
        assert v is not None
        prefix[f"v{v.seq}"] = v.files[new].object.split("/")[1]
    assert _prefixes(tree) == set(prefix.values())
    now = time.time()
    abandoned_old = new_txid(now - 2 * grace)  # a crashed writer, long ago
    abandoned_young = new_txid(now - grace / 10)  # an upload that may still be in flight
    for txid in (abandoned_old, abandoned_young):
        tree.fs.pipe({tree._p(VERSIONS, txid, "a"): b"orphan", tree._p(VERSIONS, txid, "d/e"): b"orphan"})
    tree.fs.pipe_file(tree._p(VERSIONS, "not-a-txid", "x"), b"never ours to remove")
    young = tree.collect_garbage(now=now)
    assert young == {"manifests": 0, "prefixes": 1}
    assert _prefixes(tree) == {*prefix.values(), abandoned_young, "not-a-txid"}
    assert tree.seqs() == [1, 2, 3, 4]
    later = tree.collect_garbage(now=now + 2 * grace)
    assert later == {"manifests": 2, "prefixes": 2}  # v1's and the young orphan, now old
    assert tree.seqs() == [3, 4]
    assert _prefixes(tree) == {prefix["v2"], prefix["v3"], prefix["v4"], "not-a-txid"}
    assert _referenced(tree) == {prefix["v2"], prefix["v3"], prefix["v4"]}
    latest = tree.latest()
    assert latest is not None
    assert {rel: tree.read(latest, rel) for rel in latest.files} == {"a": b"a2", "b": b"b3", "c": b"c4"}
    assert tree.collect_garbage(now=now + 4 * grace) == {"manifests": 0, "prefixes": 0}


def test_a_reader_whose_version_was_collected_under_it_retries_on_the_newest(
    object_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(object_location)
    codec = codec_for("teacher_model")
    store.write(KEY, codec, _teacher("t1"))
    tree = store.tree(KEY)
    stale = tree.latest()
    assert stale is not None
    store.write(KEY, codec, _teacher("t2"))
    # The reader took version 1; then it fell out of `keep` and its files were collected.
    VersionedTree(tree.root, keep=1).collect_garbage(now=time.time() + 2 * GRACE)
    assert tree.seqs() == [2]
    with pytest.raises(ArtifactError, match="is gone"):
        tree.read(stale, "model.pkl")
    calls: list[int] = []
    real_latest = VersionedTree.latest

    def latest(self: VersionedTree) -> Version | None:
        calls.append(1)
        return stale if len(calls) == 1 else real_latest(self)

    monkeypatch.setattr(VersionedTree, "latest", latest)
    assert store.read(KEY, codec, "teacher_model").model["tag"] == "t2"
    assert len(calls) == 2
    monkeypatch.undo()
    # A manifest removed between the listing and its read: the listing is taken again.
    listings: list[int] = []
    real_seqs = VersionedTree.seqs

    def seqs(self: VersionedTree) -> list[int]:
        listings.append(1)
        return [1] if len(listings) == 1 else real_seqs(self)

    monkeypatch.setattr(VersionedTree, "seqs", seqs)
    latest_now = tree.latest()
    assert latest_now is not None and latest_now.seq == 2 and len(listings) == 2


def test_a_writer_whose_base_fell_out_of_keep_does_not_commit_below_the_newest(object_location: str) -> None:
    """A slow writer built on version 1 while others committed 2, 3 and 4 (keep 1). Their garbage
    collection removed the manifests of 1 to 3 at once, so the slow writer's create-only write of
    manifest 2 succeeded, below version 4, where no reader ever looks: a lost update reported as
    committed. Manifests now stay for the grace, so the slot is taken and the commit retried on
    the newest version."""
    tree = _tree(object_location, keep=1)
    tree.commit(lambda base: {"slow": b"0", "fast": b"0"})
    other = _tree(object_location, keep=1)
    calls: list[int] = []

    def slow(base: Version | None) -> dict[str, bytes | FileRef]:
        calls.append(base.seq if base else 0)
        if len(calls) == 1:  # meanwhile, three commits of another writer
            for i in (1, 2, 3):
                other.commit(lambda b, i=i: {**b.files, "fast": str(i).encode()} if b else None)
        return {**(base.files if base else {}), "slow": b"1"}

    landed = tree.commit(slow)
    assert landed is not None and landed.seq == 5
    assert calls == [1, 4]
    latest = tree.latest()
    assert latest is not None and latest.seq == 5
    assert {rel: tree.read(latest, rel) for rel in latest.files} == {"slow": b"1", "fast": b"3"}
    assert tree.seqs() == [1, 2, 3, 4, 5]
    # Once older than the grace, no writer can still be building on them: collected.
    assert tree.collect_garbage(now=time.time() + GRACE + 60)["manifests"] == 4
    assert tree.seqs() == [5]


# --- writers that die before their manifest ------------------------------------------------------


class _Crash(BaseException):
    """Stands for the process being killed: nothing after it runs."""


def _assert_whole_previous_version(store: ObjectArtifactStore, seqs: list[int]) -> None:
    assert store.tree(KEY).seqs() == seqs
    assert len(store.read(KEY, codec_for("market_bars"), "market_bars")) == 5
    assert store.read(KEY, codec_for("teacher_model"), "teacher_model").model["tag"] == "t1"
    assert store.read(KEY, codec_for("teacher_labels"), "teacher_labels")["label"].tolist() == [1]


def _orphans_collected_after_the_grace(store: ObjectArtifactStore) -> None:
    tree = store.tree(KEY)
    orphans = _prefixes(tree) - _referenced(tree)
    assert len(orphans) == 1, "the dead writer's upload prefix"
    assert tree.collect_garbage() == {"manifests": 0, "prefixes": 0}  # younger than the grace
    assert tree.collect_garbage(now=time.time() + GRACE + 60) == {"manifests": 0, "prefixes": 1}
    assert _prefixes(tree) == _referenced(tree)
    _assert_whole_previous_version(store, tree.seqs())


def _previous_version(store: ObjectArtifactStore) -> list[int]:
    store.write(KEY, codec_for("market_bars"), _bars())
    store.write(
        KEY,
        codec_for("teacher_model"),
        _teacher("t1"),
        together=[(codec_for("teacher_labels"), _labels(1))],
    )
    return store.tree(KEY).seqs()


@pytest.mark.parametrize("uploaded", ["some", "all"])
def test_a_writer_dying_before_its_manifest_leaves_the_previous_version_whole(
    object_location: str, monkeypatch: pytest.MonkeyPatch, uploaded: str
) -> None:
    store = _store(object_location)
    seqs = _previous_version(store)
    fs = store.tree(KEY).fs
    real_pipe, real_open = fs.pipe, fs.open

    def pipe(files: dict[str, bytes], *args: Any, **kwargs: Any) -> Any:
        if uploaded == "all":
            return real_pipe(files, *args, **kwargs)
        first = dict(sorted(files.items())[:1])
        real_pipe(first)
        raise _Crash

    def open_(path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if mode == "xb":
            raise _Crash
        return real_open(path, mode, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(fs, "pipe", pipe)
        m.setattr(fs, "open", open_)
        with pytest.raises(_Crash):
            store.write(
                KEY,
                codec_for("teacher_model"),
                _teacher("t2"),
                together=[(codec_for("teacher_labels"), _labels(2))],
            )
    _assert_whole_previous_version(store, seqs)
    _orphans_collected_after_the_grace(store)
    # The partition takes new commits as before.
    store.write(KEY, codec_for("teacher_model"), _teacher("t3"))
    assert store.read(KEY, codec_for("teacher_model"), "teacher_model").model["tag"] == "t3"


# --- real processes on S3 (moto): a SIGKILL mid-commit, and racing commits ---------------------------


def _context() -> Any:
    """fork where there is one (fast: nothing to import again), spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _commit_and_hang(location: str, where: str, reached: Any) -> None:
    """Commit a new teacher with its labels; at `where` ("upload": after the first of its files is
    uploaded; "manifest": every file uploaded, about to write the manifest), signal and hang."""
    store = ObjectArtifactStore(location)
    fs = store.tree(KEY).fs
    real_pipe, real_open = fs.pipe, fs.open

    def hang() -> None:
        reached.set()
        while True:
            time.sleep(1)

    def pipe(files: dict[str, bytes], *args: Any, **kwargs: Any) -> Any:
        if where == "upload":
            real_pipe(dict(sorted(files.items())[:1]))
            hang()
        return real_pipe(files, *args, **kwargs)

    def open_(path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if mode == "xb":
            hang()
        return real_open(path, mode, *args, **kwargs)

    fs.pipe, fs.open = pipe, open_
    store.write(
        KEY, codec_for("teacher_model"), _teacher("t2"), together=[(codec_for("teacher_labels"), _labels(2))]
    )


@pytest.fixture
def s3_location(tmp_path: Path) -> str:
    return fresh_location("s3", tmp_path)


@pytest.mark.parametrize("where", ["upload", "manifest"])
def test_a_writer_killed_mid_commit_on_s3_leaves_the_previous_version_whole(
    s3_location: str, where: str
) -> None:
    store = _store(s3_location)
    seqs = _previous_version(store)
    ctx = _context()
    reached = ctx.Event()
    child = ctx.Process(target=_commit_and_hang, args=(s3_location, where, reached))
    child.start()
    try:
        assert reached.wait(60), f"the writer never reached {where}"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join(30)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
    assert child.exitcode == -signal.SIGKILL
    _assert_whole_previous_version(store, seqs)
    _orphans_collected_after_the_grace(store)


def _commit_files(location: str, worker: int, count: int, start: Any, results: Any) -> None:
    """`count` commits, each adding its own file to the tree (every other file carried)."""
    tree = VersionedTree(UPath(location) / "tree", keep=2)
    start.wait(60)
    seqs = []
    for i in range(count):
        rel = f"w{worker}/{i}"
        version = tree.commit(lambda base, rel=rel: {**(base.files if base else {}), rel: rel.encode()})
        assert version is not None
        seqs.append(version.seq)
    results.put((worker, seqs))


def _write_asset(location: str, asset: str, count: int, start: Any, results: Any) -> None:
    store = ObjectArtifactStore(location)
    start.wait(60)
    for i in range(count):
        value: Any = {
            "market_bars": lambda i: _bars(3 + i),
            "teacher_model": lambda i: replace(_teacher(f"t{i}"), labels=_labels(i)),
            "student_model": lambda i: _student(f"s{i}"),
            "student_evaluation": lambda i: _evaluation(0.5 + i / 100),
        }[asset](i)
        together = [(codec_for("teacher_labels"), value.labels)] if asset == "teacher_model" else []
        store.write(KEY, codec_for(asset), value, together=together)
    results.put((asset, count))


def _run_all(target: Callable[..., None], arguments: list[tuple[Any, ...]]) -> list[Any]:
    ctx = _context()
    start, results = ctx.Barrier(len(arguments)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, start, results)) for args in arguments]
    for proc in procs:
        proc.start()
    try:
        got = [results.get(timeout=120) for _ in procs]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    assert [proc.exitcode for proc in procs] == [0] * len(procs)
    return got


def test_concurrent_commits_to_one_tree_each_land_exactly_once(s3_location: str) -> None:
    workers, count = 4, 4
    got = dict(_run_all(_commit_files, [(s3_location, w, count) for w in range(workers)]))
    all_seqs = sorted(s for seqs in got.values() for s in seqs)
    assert all_seqs == list(range(1, workers * count + 1))  # each commit its own version
    for seqs in got.values():
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    tree = _tree(s3_location)
    latest = tree.latest()
    assert latest is not None and latest.seq == workers * count
    expected = {f"w{w}/{i}" for w in range(workers) for i in range(count)}
    assert set(latest.files) == expected  # no update lost
    assert all(tree.read(latest, rel) == rel.encode() for rel in expected)


def test_concurrent_writes_of_different_assets_to_one_partition_all_land(s3_location: str) -> None:
    assets, count = ["market_bars", "teacher_model", "student_model", "student_evaluation"], 3
    _run_all(_write_asset, [(s3_location, asset, count) for asset in assets])
    store = _store(s3_location)
    latest = store.tree(KEY).latest()
    assert latest is not None and latest.seq == len(assets) * count  # every write one commit
    last = count - 1
    assert len(store.read(KEY, codec_for("market_bars"), "market_bars")) == 3 + last
    assert store.read(KEY, codec_for("teacher_model"), "teacher_model").model["tag"] == f"t{last}"
    assert store.read(KEY, codec_for("teacher_labels"), "teacher_labels")["label"].tolist() == [last]
    assert store.read(KEY, codec_for("student_model"), "student_model").model == {"student": f"s{last}"}
    evaluation = store.read(KEY, codec_for("student_evaluation"), "student_evaluation")
    assert evaluation.metrics == {"auc": 0.5 + last / 100}


def _replace_teacher(location: str, worker: int, required: str, start: Any, results: Any) -> None:
    store = ObjectArtifactStore(location)
    codec = codec_for("teacher_model")
    start.wait(60)
    try:
        store.write(KEY, codec, _teacher(f"w{worker}"), requires={"model.pkl": required})
    except SupersededError as exc:
        results.put((worker, f"superseded: {exc}"))
    else:
        results.put((worker, "written"))


def test_a_requires_race_has_one_winner_and_the_losers_write_nothing(s3_location: str) -> None:
    store = _store(s3_location)
    store.write(KEY, codec_for("teacher_model"), _teacher("t0"))
    required = store.owned_checksums(KEY, codec_for("teacher_model"))["model.pkl"]
    workers = 4
    got = dict(_run_all(_replace_teacher, [(s3_location, w, required) for w in range(workers)]))
    winners = [w for w, outcome in got.items() if outcome == "written"]
    assert len(winners) == 1, got
    assert all("replaced by another commit" in got[w] for w in got if w not in winners)
    tree = store.tree(KEY)
    assert tree.seqs() == [1, 2]
    assert store.read(KEY, codec_for("teacher_model"), "teacher_model").model["tag"] == f"w{winners[0]}"
    # the losers' uploads are referenced by nothing: removed at once, or (when a loser could not see
    # the winner's manifest yet) by the collection once they are older than the grace
    tree.collect_garbage(now=time.time() + GRACE + 60)
    assert _prefixes(tree) == _referenced(tree)


@pytest.fixture(autouse=True)
def _no_stray_children() -> Iterator[None]:
    yield
    for child in multiprocessing.active_children():
        child.kill()
        child.join(10)


# --- what the object store answers in use: lost answers, conflicts, failures ----------------------


def _manifest_writes(tree: VersionedTree, monkeypatch: pytest.MonkeyPatch, fault: Callable) -> list[str]:
    """Route the tree's create-only manifest writes through `fault(real_open, path)`; other opens
    are untouched. Returns the manifest paths written."""
    real_open, seen = tree.fs.open, []

    def open_(path: str, mode: str = "rb", *args: Any, **kw: Any) -> Any:
        if mode == "xb" and f"/{COMMITS}/" in path:
            seen.append(path)
            return fault(lambda: real_open(path, mode, *args, **kw), path)
        return real_open(path, mode, *args, **kw)

    monkeypatch.setattr(tree.fs, "open", open_)
    return seen


def test_a_commit_whose_answer_was_lost_keeps_its_files(
    object_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest PUT lands but its answer is lost; the client's retry is refused (412, the object
    exists). The commit is this writer's: reported landed, its files kept and readable."""
    tree = _tree(object_location)
    tree.commit(lambda base: {"a": b"a1"})

    @contextlib.contextmanager
    def landed_then_refused(open_: Callable, path: str) -> Iterator[Any]:
        with open_() as fh:
            yield fh
        raise FileExistsError(path)

    _manifest_writes(tree, monkeypatch, landed_then_refused)
    version = tree.commit(lambda base: {**base.files, "b": b"b2"})
    monkeypatch.undo()
    assert version is not None and version.seq == 2
    latest = tree.latest()
    assert latest is not None and latest.txid == version.txid
    assert tree.read(latest, "a") == b"a1" and tree.read(latest, "b") == b"b2"
    assert version.txid in _prefixes(tree)


def test_a_conflicting_conditional_write_is_retried(
    object_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 answers 409 ConditionalRequestConflict to conditional writes racing for one key: the
    writer rebuilds and tries again. The refused attempt may be its own first PUT, still in flight
    and landing later, so its uploads stay until the collection finds them unreferenced."""
    tree = _tree(object_location)
    tree.commit(lambda base: {"a": b"a1"})
    calls = []

    def conflict_once(open_: Callable, path: str) -> Any:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(
                5, "An error occurred (ConditionalRequestConflict) when calling the PutObject operation"
            )
        return open_()

    _manifest_writes(tree, monkeypatch, conflict_once)
    version = tree.commit(lambda base: {**base.files, "b": b"b2"})
    monkeypatch.undo()
    assert version is not None and version.seq == 2 and len(calls) == 2
    [refused] = _prefixes(tree) - _referenced(tree)
    tree.collect_garbage()
    assert refused in _prefixes(tree)  # young: it might still be referenced
    tree.collect_garbage(now=time.time() + GRACE + 60)
    assert _prefixes(tree) == _referenced(tree)


def test_any_other_failure_of_the_manifest_write_is_an_artifact_error(
    object_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = _tree(object_location)
    tree.commit(lambda base: {"a": b"a1"})

    def reset(open_: Callable, path: str) -> Any:
        raise OSError(104, "Connection reset by peer")

    _manifest_writes(tree, monkeypatch, reset)
    with pytest.raises(ArtifactError, match=r"commit of version 2 failed: .*Connection reset"):
        tree.commit(lambda base: {**base.files, "b": b"b2"})
    monkeypatch.undo()
    latest = tree.latest()
    assert latest is not None and latest.seq == 1 and set(latest.files) == {"a"}


def test_an_unreadable_sensor_state_reads_as_none_as_on_a_local_disk(object_location: str) -> None:
    """A sensor then rebuilds its state (follow_upstream from the oldest change it kept) instead of
    failing every tick."""
    store = _store(object_location)
    key = store.write_state("follow_upstream", b"state")
    tree = store._state_tree("follow_upstream", 5)
    latest = tree.latest()
    assert latest is not None
    tree.fs.pipe_file(tree._p(latest.files["state"].object), b"garbage")
    assert store.read_state("follow_upstream", key) is None
    assert store.latest_state("follow_upstream") is None
    new = store.write_state("follow_upstream", b"rebuilt")
    assert store.read_state("follow_upstream", new) == b"rebuilt"


def test_a_store_wide_collection_keeps_the_sensor_states_a_sensor_may_ask_for(object_location: str) -> None:
    store = _store(object_location)
    keys = [store.write_state("new_data", f"state {i}".encode()) for i in range(6)]
    store.collect_garbage(now=time.time() + GRACE + 60)
    assert [store.read_state("new_data", k) for k in keys] == [None] + [
        f"state {i}".encode() for i in range(1, 6)
    ]


def test_a_store_wide_collection_finds_every_tree(
    object_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition whose first and only commit crashed before its manifest gets no later commit to
    collect its uploads: `ObjectArtifactStore.collect_garbage` (`sensequant gc`) walks every tree."""
    store = _store(object_location)
    store.write_state("new_data", b"x")
    store.write("TCS|2023-01-01", codec_for("market_bars"), _bars())
    crashed = store.tree(KEY)

    def crash(open_: Callable, path: str) -> Any:
        raise KeyboardInterrupt  # the process dies between the uploads and the manifest

    _manifest_writes(crashed, monkeypatch, crash)
    with pytest.raises(KeyboardInterrupt):
        store.write(KEY, codec_for("market_bars"), _bars())
    monkeypatch.undo()
    assert len(_prefixes(crashed)) == 1 and crashed.latest() is None
    assert store.collect_garbage()["prefixes"] == 0  # young: a commit may be in flight
    counts = store.collect_garbage(now=time.time() + GRACE + 60)
    assert counts["prefixes"] == 1 and _prefixes(crashed) == set()
    assert counts["trees"] == 3  # the crashed partition, the other partition, the sensor state
    assert len(store.read("TCS|2023-01-01", codec_for("market_bars"), "market_bars")) == len(_bars())


def test_an_unknown_scheme_or_a_missing_library_is_a_clear_error() -> None:
    with pytest.raises(ArtifactError, match=r"s4://bucket/x \(SENSEQUANT_ARTIFACTS_DIR\) cannot be reached"):
        open_store("s4://bucket/x")


def test_a_file_url_is_the_local_store() -> None:
    from sensequant_assets.io_manager import ArtifactStore

    store = open_store("file:///tmp/sensequant-artifacts")
    assert isinstance(store, ArtifactStore) and store.base_dir == Path("/tmp/sensequant-artifacts")


def test_sensequant_gc_reports_what_it_collected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sensequant_assets.cli import main

    saved = dict(os.environ)  # the command exports its settings, as a command line does
    try:
        os.environ["DAGSTER_HOME"] = str(tmp_path / "home")
        location = fresh_location("memory", tmp_path)
        _store(location).write(KEY, codec_for("market_bars"), _bars())
        assert main(["gc", "--artifacts-dir", location]) == 0
        assert "1 versioned trees checked; removed 0 unreferenced upload(s)" in capsys.readouterr().out
        assert main(["gc", "--artifacts-dir", str(tmp_path / "local")]) == 0
        assert "is a local directory" in capsys.readouterr().out
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_batch_on_object_storage_has_its_requests_in_flight_together(object_location: str) -> None:
    """Each request to an object store is a network round trip: a batch's partitions are committed
    and read together, not one after another (which costs minutes for 500 partitions on S3)."""
    import threading

    from sensequant_assets.io_manager import per_partition

    store = _store(object_location)
    together = threading.Barrier(4, timeout=10)  # broken unless four calls wait at once

    def commit(key: str) -> str:
        together.wait()
        store.write(key, codec_for("market_bars"), _bars())
        return key

    keys = [f"S{i}|2023-01-01" for i in range(4)]
    assert per_partition(store, commit, keys) == keys
    sums = per_partition(store, lambda k: store.owned_checksums(k, codec_for("market_bars")), keys)
    assert len({json.dumps(s) for s in sums}) == 1 and sums[0]
    local = open_store(str(Path(store.location.split("://", 1)[1]).name))  # any local path: serial
    assert not getattr(local, "concurrent", False)
