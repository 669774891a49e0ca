"""The production registry on object storage (`memory://` and S3 on moto): what only it can get wrong.

A promotion is one manifest commit: a writer dying after its uploads and before the manifest
leaves the previous production model served (its upload is garbage collected later); two
promotions racing on S3 both land, the loser re-deciding on the winner's version; archiving
re-keys the same objects; a damaged object or manifest is refused, naming it. The behaviour shared
with the local registry is tested on every backend in test_registry.py.
"""

from __future__ import annotations

import multiprocessing
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sensequant_assets import registry
from sensequant_assets.io_manager import ArtifactError, open_store
from sensequant_assets.object_store import (
    COMMITS,
    GRACE,
    VERSIONS,
    GoneObjectError,
    MissingObjectError,
    VersionedTree,
)
from sensequant_assets.registry import RollbackError
from sensequant_tests.object_storage import fresh_location
from sensequant_tests.test_registry import GATES, T1, T2, T3, _materialise, _prod_tree

OLD, MID, NEW = "RELIANCE|2023-01-01", "RELIANCE|2023-07-01", "RELIANCE|2024-01-01"


class _Crash(Exception):
    """The writer's process dies here (no cleanup of its own runs after it)."""


def _tree(location: str) -> VersionedTree:
    root = registry.production_dir(location, "RELIANCE")
    assert not isinstance(root, Path)
    return VersionedTree(root)


def _objects(tree: VersionedTree) -> set[str]:
    """Every object under the tree, relative to it (manifests and uploads)."""
    tree.fs.invalidate_cache()
    return {p[len(tree.path) + 1 :] for p in tree.fs.find(tree.path)}


@pytest.fixture
def oloc(object_location: str) -> str:
    for seed, key in enumerate((OLD, MID, NEW), start=1):
        _materialise(object_location, key, seed=seed)
    return object_location


def test_a_promotion_dying_before_its_manifest_changes_nothing_and_its_upload_is_collected(
    oloc: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.promote(oloc, "RELIANCE", MID, "PROMOTE", GATES, now=T1)
    tree = _tree(oloc)
    before, history, objects = _prod_tree(oloc), registry.history(oloc, "RELIANCE"), _objects(tree)
    real_open = tree.fs.open
    uploaded: list[str] = []

    def open_(path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if mode == "xb":  # every file is uploaded; the manifest, the commit itself, is not written
            uploaded.extend(_objects(tree) - objects)
            raise _Crash
        return real_open(path, mode, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(tree.fs, "open", open_)
        with pytest.raises(_Crash):
            registry.promote(oloc, "RELIANCE", NEW, "PROMOTE", GATES, now=T2)

    # The uploads happened (current/ and history.jsonl of the new version) ...
    assert {o.split("/", 2)[2] for o in uploaded} == {
        *(f"current/{n}" for n in ("student_model.pkl", "metadata.json", "metrics.json")),
        "current/teacher_metadata.json",
        "current/promotion.json",
        "history.jsonl",
    }
    [orphan] = {o.split("/")[1] for o in uploaded}
    # ... but nothing references them: the previous model is served, history and archives unchanged.
    assert _prod_tree(oloc) == before
    assert registry.current(oloc, "RELIANCE").partition_key == MID
    assert registry.load_current_model(oloc, "RELIANCE").coef_.shape == (1, 3)
    assert registry.history(oloc, "RELIANCE") == history
    assert registry.archives(oloc, "RELIANCE") == []

    # Young, the orphan is left alone (it could be an upload in flight); past the grace it goes.
    assert tree.collect_garbage()["prefixes"] == 0
    assert tree.collect_garbage(now=time.time() + GRACE + 60)["prefixes"] == 1
    assert not [o for o in _objects(tree) if o.startswith(f"{VERSIONS}/{orphan}/")]
    assert _objects(tree) == objects  # everything the served version references is still there
    assert registry.load_current_model(oloc, "RELIANCE").coef_.shape == (1, 3)
    # The interrupted promotion can simply be retried.
    registry.promote(oloc, "RELIANCE", NEW, "PROMOTE", GATES, now=T2)
    assert registry.current(oloc, "RELIANCE").partition_key == NEW
    assert [e["to"] for e in registry.history(oloc, "RELIANCE")] == [MID, NEW]


def test_archiving_re_keys_the_same_objects_and_rollback_restores_them(oloc: str) -> None:
    """No copy: `archive/<id>/` and a restored `current/` refer to the very objects (and sha256)
    the model was committed with."""
    registry.promote(oloc, "RELIANCE", MID, "PROMOTE", GATES, now=T1)
    tree = _tree(oloc)
    first = {
        rel.split("/", 1)[1]: ref for rel, ref in tree.latest().files.items() if rel.startswith("current/")
    }
    registry.promote(oloc, "RELIANCE", NEW, "PROMOTE", GATES, now=T2)
    [archive_id] = registry.archives(oloc, "RELIANCE")
    files = tree.latest().files
    assert {
        rel.split("/", 2)[2]: ref for rel, ref in files.items() if rel.startswith(f"archive/{archive_id}/")
    } == (first)
    registry.rollback(oloc, "RELIANCE", now=T3)
    restored = {
        rel.split("/", 1)[1]: ref for rel, ref in tree.latest().files.items() if rel.startswith("current/")
    }
    assert restored == first
    assert registry.load_current_model(oloc, "RELIANCE").coef_.shape == (1, 3)


def test_a_corrupt_object_in_an_archive_is_named_and_not_restored(oloc: str) -> None:
    registry.promote(oloc, "RELIANCE", MID, "PROMOTE", GATES, now=T1)
    registry.promote(oloc, "RELIANCE", NEW, "PROMOTE", GATES, now=T2)
    [archive_id] = registry.archives(oloc, "RELIANCE")
    tree = _tree(oloc)
    seqs = tree.seqs()
    ref = tree.latest().files[f"archive/{archive_id}/student_model.pkl"]
    tree.fs.pipe_file(f"{tree.path}/{ref.object}", b"not the model that was promoted")
    with pytest.raises(RollbackError) as caught:
        registry.rollback(oloc, "RELIANCE", now=T3)
    message = str(caught.value)
    assert f"cannot roll back RELIANCE to {archive_id}" in message
    assert f"{ref.object} (archive/{archive_id}/student_model.pkl) is corrupt" in message
    assert tree.seqs() == seqs  # nothing committed
    assert registry.current(oloc, "RELIANCE").partition_key == NEW


def test_a_corrupt_manifest_is_refused_not_built_on_as_empty(oloc: str) -> None:
    """A commit over an unreadable manifest would start from no files: the history and every
    archive gone. The registry refuses, naming the manifest, and commits nothing."""
    registry.promote(oloc, "RELIANCE", MID, "PROMOTE", GATES, now=T1)
    registry.promote(oloc, "RELIANCE", NEW, "PROMOTE", GATES, now=T2)
    tree = _tree(oloc)
    newest = tree.seqs()[-1]
    tree.fs.pipe_file(f"{tree.path}/{COMMITS}/{newest:010d}.json", b"{torn")
    for call in (
        lambda: registry.promote(oloc, "RELIANCE", OLD, "PROMOTE", GATES, now=T3),
        lambda: registry.rollback(oloc, "RELIANCE", now=T3),
        lambda: registry.demote(oloc, "RELIANCE", expected=NEW, reason="decayed", now=T3),
        lambda: registry.current(oloc, "RELIANCE"),
        lambda: registry.history(oloc, "RELIANCE"),
    ):
        with pytest.raises(ArtifactError, match=rf"{COMMITS}/{newest:010d}\.json is corrupt"):
            call()
    assert tree.seqs()[-1] == newest


def test_a_reader_whose_objects_were_collected_reads_the_newer_version(
    oloc: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between reading a manifest and its files, newer commits may have let GC remove them: the
    registry reads the newest version instead; with no newer version the error stands."""
    registry.promote(oloc, "RELIANCE", MID, "PROMOTE", GATES, now=T1)
    real_read, calls = VersionedTree.read, []

    def read(self: VersionedTree, version: Any, rel: str, *, who: str = "") -> bytes:
        calls.append(rel)
        if len(calls) == 1:  # another writer commits, and the object read is collected
            monkeypatch.setattr(VersionedTree, "read", real_read)
            registry.promote(oloc, "RELIANCE", NEW, "PROMOTE", GATES, now=T2)
            monkeypatch.setattr(VersionedTree, "read", read)
            raise GoneObjectError(f"{self.root}/v/x/{rel} (file {rel} of version {version.seq}) is gone")
        return real_read(self, version, rel, who=who)

    monkeypatch.setattr(VersionedTree, "read", read)
    assert [e["to"] for e in registry.history(oloc, "RELIANCE")] == [MID, NEW]
    assert len(calls) == 2

    def gone(self: VersionedTree, version: Any, rel: str, *, who: str = "") -> bytes:
        raise GoneObjectError(f"{rel} is gone")

    monkeypatch.setattr(VersionedTree, "read", gone)  # and no newer version to read instead
    with pytest.raises(MissingObjectError, match=r"history\.jsonl is gone"):
        registry.history(oloc, "RELIANCE")


# --- two promotions racing on S3, in two processes ----------------------------------------------------


def _context() -> Any:
    """fork where there is one (fast: nothing to import again), spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _promote_racing(location: str, key: str, now: str, ready: Any, results: Any) -> None:
    """Promote `key`; its first manifest write waits until the other process is at its own, so
    both build on the same version and write the same next manifest: one must lose."""
    tree = _tree(location)
    real_open, attempts = tree.fs.open, []

    def open_(path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if mode == "xb" and f"/{COMMITS}/" in path:
            attempts.append(path.rsplit("/", 1)[-1])
            if len(attempts) == 1:
                ready.wait(60)
        return real_open(path, mode, *args, **kwargs)

    tree.fs.open = open_
    record = registry.promote(location, "RELIANCE", key, "PROMOTE", GATES, now=datetime.fromisoformat(now))
    results.put((key, attempts, record.partition_key))


def test_two_promotions_racing_on_s3_both_land_and_neither_is_lost(tmp_path: Path) -> None:
    location = fresh_location("s3", tmp_path)
    for seed, key in enumerate((OLD, MID, NEW), start=1):
        _materialise(location, key, seed=seed)
    registry.promote(location, "RELIANCE", OLD, "PROMOTE", GATES, now=T1)

    ctx = _context()
    ready, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_promote_racing, args=(location, key, T2.isoformat(), ready, results))
        for key in (MID, NEW)
    ]
    for proc in procs:
        proc.start()
    try:
        got = {
            key: (attempts, promoted) for key, attempts, promoted in (results.get(timeout=120) for _ in procs)
        }
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert {key: promoted for key, (_, promoted) in got.items()} == {MID: MID, NEW: NEW}
    # Both wrote manifest 2 at once; the loser rebuilt on the winner's version and wrote manifest 3.
    winner = next(key for key, (attempts, _) in got.items() if attempts == ["0000000002.json"])
    loser = next(
        key for key, (attempts, _) in got.items() if attempts == ["0000000002.json", "0000000003.json"]
    )

    entries = registry.history(location, "RELIANCE")
    assert [(e["from"], e["to"]) for e in entries] == [(None, OLD), (OLD, winner), (winner, loser)]
    old_id, winner_id = f"20261127T090000Z_{OLD.split('|')[1]}", f"20261127T090001Z_{winner.split('|')[1]}"
    assert [e["archived"] for e in entries] == [None, old_id, winner_id]
    assert registry.archives(location, "RELIANCE") == [old_id, winner_id]
    assert registry.current(location, "RELIANCE").partition_key == loser
    # The winner's model is archived whole, and can be rolled back to.
    archived = _prod_tree(location, f"archive/{winner_id}")
    store = open_store(location)
    winner_tree = store.tree(winner)
    partition = winner_tree.latest()
    assert archived["student_model.pkl"] == winner_tree.read(partition, "student/student_model.pkl")
    assert registry.rollback(location, "RELIANCE", now=T3).partition_key == winner
