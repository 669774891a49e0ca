"""Production registry: promotion copies the verified student, archives, rolls back, survives crashes.

The behaviour tests run on every backend (`artifact_location`: a local directory, `memory://`, S3
on moto); the crash tests of the local journal and renames run on a local directory (`base`).
Object storage's own crash and race tests are in test_registry_object.py.
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from sensequant_assets import registry
from sensequant_assets.artifacts import StudentArtifact, TeacherArtifact
from sensequant_assets.io_manager import (
    CHECKSUMS,
    ArtifactError,
    codec_for,
    open_store,
    sha256_bytes,
)
from sensequant_assets.object_store import VersionedTree, is_object_location
from sensequant_assets.registry import PromotionRefused, RegistryError, RollbackError
from sensequant_assets.sources.symbols import InvalidSymbolError

GATES = {"ic_fdr": {"value": 0.004, "threshold": 0.05, "op": "<=", "passed": True}}
T1 = datetime(2026, 11, 26, 17, 15, tzinfo=UTC)
T2 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
T3 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
COPIED = {
    "student_model.pkl": "student/student_model.pkl",
    "metadata.json": "student/metadata.json",
    "metrics.json": "student/metrics.json",
    "teacher_metadata.json": "metadata.json",
}


CONFIG_A, CONFIG_B = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


def _materialise(location: str | Path, key: str, seed: int, config_id: str | None = CONFIG_A) -> None:
    """A partition written the way the IO manager writes it (on either backend), with small real
    models.

    `config_id`: the configuration id the student records (None: a student trained before ids).
    """
    metadata = {"partition_key": key, "teacher": "model.pkl"}
    if config_id is not None:
        metadata["config_id"] = config_id
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3))
    y = (x[:, 0] + 0.1 * rng.normal(size=40) > 0).astype(int)
    store = open_store(location)
    store.write(
        key,
        codec_for("teacher_model"),
        TeacherArtifact(
            model=LogisticRegression().fit(x, y),
            metadata={"partition_key": key, "seed": seed},
            importance=pd.DataFrame({"feature": ["a"], "importance": [1.0]}),
        ),
    )
    store.write(
        key,
        codec_for("student_model"),
        StudentArtifact(
            model=LogisticRegression(C=0.5).fit(x, y),
            metrics={"auc": 0.5 + seed / 100},
            metadata=metadata,
        ),
    )


def _tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (lock file aside) with its bytes: 'nothing changed' means equal trees."""
    if not directory.exists():
        return {}
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _local(location: str | Path) -> bool:
    return not is_object_location(location)


def _object_path(tree: VersionedTree, rel: str) -> str:
    """The object holding `rel` in the tree's newest version."""
    version = tree.latest()
    assert version is not None and rel in version.files, rel
    return f"{tree.path}/{version.files[rel].object}"


def _prod_tree(location: str | Path, sub: str = "") -> dict[str, bytes]:
    """RELIANCE's production files under `sub` (relative names, raw unverified bytes): the
    directory on a local disk, the newest version on object storage."""
    root = registry.production_dir(location, "RELIANCE")
    if isinstance(root, Path):
        return _tree(root / sub if sub else root)
    tree = VersionedTree(root)
    version = tree.latest()
    prefix = f"{sub}/" if sub else ""
    return {
        rel[len(prefix) :]: tree.fs.cat_file(f"{tree.path}/{ref.object}")
        for rel, ref in (version.files.items() if version else ())
        if rel.startswith(prefix)
    }


def _written(location: str | Path) -> list[str]:
    """Everything under `production/`, whatever wrote it (files or objects)."""
    if _local(location):
        production = open_store(location).base_dir / "production"
        return sorted(str(p) for p in production.rglob("*")) if production.exists() else []
    store = open_store(location)
    fs = store.base_dir.fs
    fs.invalidate_cache()
    return sorted(fs.find(f"{store.base_dir.path}/production"))


def _partition_bytes(location: str | Path, key: str, rel: str) -> bytes:
    store = open_store(location)
    if _local(location):
        return (store.partition_dir(key) / rel).read_bytes()
    tree = store.tree(key)
    return tree.fs.cat_file(_object_path(tree, rel))


def _damage_partition(location: str | Path, key: str, rel: str, data: bytes | None) -> None:
    """Overwrite (or, with None, remove) one file of a partition behind the store's back."""
    store = open_store(location)
    if _local(location):
        target = store.partition_dir(key) / rel
        target.unlink() if data is None else target.write_bytes(data)
        return
    tree = store.tree(key)
    path = _object_path(tree, rel)
    tree.fs.rm_file(path) if data is None else tree.fs.pipe_file(path, data)


def _damage_production(location: str | Path, rel: str, data: bytes) -> None:
    """Overwrite one production file (on object storage: the object behind it) behind our back."""
    root = registry.production_dir(location, "RELIANCE")
    if isinstance(root, Path):
        (root / rel).write_bytes(data)
        return
    tree = VersionedTree(root)
    tree.fs.pipe_file(_object_path(tree, rel), data)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A local artifacts directory with two partitions (the local-only crash tests)."""
    _materialise(tmp_path, "RELIANCE|2023-07-01", seed=1)
    _materialise(tmp_path, "RELIANCE|2024-01-01", seed=2)
    return tmp_path


@pytest.fixture
def loc(artifact_location: str) -> str:
    """The same two partitions on each backend."""
    _materialise(artifact_location, "RELIANCE|2023-07-01", seed=1)
    _materialise(artifact_location, "RELIANCE|2024-01-01", seed=2)
    return artifact_location


def _prod(base: Path) -> Path:
    return base / "production" / "RELIANCE"


def test_promote_copies_exactly_the_student_and_records_checksums(loc: str) -> None:
    source = open_store(loc).partition_dir("RELIANCE|2024-01-01")
    rec = registry.promote(loc, "reliance", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T1)

    assert str(rec.directory) == str(registry.production_dir(loc, "RELIANCE") / "current")
    cur = _prod_tree(loc, "current")
    # Locally checksums.json records every file; on object storage the manifest does (read below).
    assert sorted(cur) == sorted([*COPIED, "promotion.json", *([CHECKSUMS] if _local(loc) else [])])
    for name, rel in COPIED.items():
        assert cur[name] == _partition_bytes(loc, "RELIANCE|2024-01-01", rel), name
    sums = {name: sha256_bytes(data) for name, data in cur.items() if name != CHECKSUMS}
    if _local(loc):
        assert json.loads(cur[CHECKSUMS]) == sums
    else:
        version = VersionedTree(registry.production_dir(loc, "RELIANCE")).latest()
        assert {f"current/{n}": d for n, d in sums.items()} == {
            rel: ref.sha256 for rel, ref in version.files.items() if rel.startswith("current/")
        }
    promotion = json.loads(cur["promotion.json"])
    assert promotion == {
        "symbol": "RELIANCE",
        "partition_key": "RELIANCE|2024-01-01",
        "source": str(source),
        "decision": "PROMOTE",
        "gates": GATES,
        "promoted_at": "2026-11-26T17:15:00Z",
        "files": {name: sums[name] for name in COPIED},
        "config_id": CONFIG_A,
    }
    assert registry.current(loc, "RELIANCE") == rec
    assert registry.archives(loc, "RELIANCE") == []
    [entry] = registry.history(loc, "RELIANCE")
    assert entry["action"] == "promote"
    assert (entry["from"], entry["to"], entry["at"]) == (None, "RELIANCE|2024-01-01", "2026-11-26T17:15:00Z")
    assert entry["decision"] == "PROMOTE" and entry["reason"]
    assert entry["config_id"] == CONFIG_A
    # The served model is the one that was trained, and it is only unpickled after verification.
    model = registry.load_current_model(loc, "RELIANCE")
    expected = pickle.loads(_partition_bytes(loc, "RELIANCE|2024-01-01", "student/student_model.pkl"))
    np.testing.assert_array_equal(model.coef_, expected.coef_)
    assert sorted(_prod_tree(loc)) == sorted(["history.jsonl", *(f"current/{name}" for name in cur)])
    if _local(loc):
        assert sorted(p.name for p in _prod(Path(loc)).iterdir()) == [".lock", "current", "history.jsonl"]


def test_second_promote_archives_the_first_and_appends_history(loc: str) -> None:
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    first = _prod_tree(loc, "current")
    registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)

    assert registry.archives(loc, "RELIANCE") == ["20261127T090000Z_2023-07-01"]
    assert {rel.split("/")[0] for rel in _prod_tree(loc, "archive")} == {"20261127T090000Z_2023-07-01"}
    assert _prod_tree(loc, "archive/20261127T090000Z_2023-07-01") == first
    assert registry.current(loc, "RELIANCE").partition_key == "RELIANCE|2024-01-01"
    entries = registry.history(loc, "RELIANCE")
    assert [(e["action"], e["from"], e["to"]) for e in entries] == [
        ("promote", None, "RELIANCE|2023-07-01"),
        ("promote", "RELIANCE|2023-07-01", "RELIANCE|2024-01-01"),
    ]
    assert entries[1]["archived"] == "20261127T090000Z_2023-07-01"


def test_promoting_the_current_model_again_is_a_no_op(loc: str) -> None:
    rec = registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T1)
    before, written = _prod_tree(loc), _written(loc)
    again = registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", {"other": 1}, now=T2)
    assert again == rec and again.promoted_at == "2026-11-26T17:15:00Z"
    assert _prod_tree(loc) == before
    assert _written(loc) == written  # not even a new version of the same files
    assert registry.archives(loc, "RELIANCE") == []


def test_rematerialised_partition_is_a_new_promotion_not_a_no_op(loc: str) -> None:
    registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T1)
    _materialise(loc, "RELIANCE|2024-01-01", seed=7)  # same window, different model bytes
    rec = registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    assert rec.promoted_at == "2026-11-27T09:00:00Z"
    assert registry.archives(loc, "RELIANCE") == ["20261127T090000Z_2024-01-01"]


def test_a_student_of_another_configuration_is_refused_and_nothing_is_written(loc: str) -> None:
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1, config_id=CONFIG_A)
    before = _prod_tree(loc)
    _materialise(loc, "RELIANCE|2024-01-01", seed=3, config_id=CONFIG_B)
    with pytest.raises(PromotionRefused, match=f"configuration {CONFIG_B}, the briefing judged.*{CONFIG_A}"):
        registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2, config_id=CONFIG_A)
    _materialise(loc, "RELIANCE|2024-01-01", seed=4, config_id=None)
    with pytest.raises(PromotionRefused, match=r"\(not recorded\)"):
        registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2, config_id=CONFIG_A)
    assert _prod_tree(loc) == before
    # Without a judged id (a manual promotion), the student's own id is still recorded.
    rec = registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    assert rec.config_id is None and registry.current(loc, "RELIANCE").config_id is None


def test_rollback_records_the_restored_configuration(loc: str) -> None:
    _materialise(loc, "RELIANCE|2024-01-01", seed=3, config_id=CONFIG_B)
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    assert registry.current(loc, "RELIANCE").config_id == CONFIG_B
    assert registry.rollback(loc, "RELIANCE", now=T3).config_id == CONFIG_A
    assert [e["config_id"] for e in registry.history(loc, "RELIANCE")] == [CONFIG_A, CONFIG_B, CONFIG_A]


def test_newest_student_of_config_passes_over_other_configurations(loc: str) -> None:
    _materialise(loc, "RELIANCE|2023-01-01", seed=5, config_id=CONFIG_A)
    _materialise(loc, "RELIANCE|2023-07-01", seed=1, config_id=CONFIG_B)
    _materialise(loc, "RELIANCE|2024-01-01", seed=2, config_id=None)
    _materialise(loc, "TCS|2024-07-01", seed=6, config_id=CONFIG_A)
    keys = ["RELIANCE|2023-01-01", "RELIANCE|2024-01-01", "TCS|2024-07-01", "RELIANCE|2023-07-01"]
    assert registry.student_config_id(loc, "RELIANCE|2023-07-01") == CONFIG_B

    choice = registry.newest_student_of_config(loc, "RELIANCE", keys, CONFIG_A)
    assert choice.partition_key == "RELIANCE|2023-01-01"
    assert choice.passed_over == (
        ("RELIANCE|2024-01-01", "configuration not recorded"),
        ("RELIANCE|2023-07-01", f"configuration {CONFIG_B}"),
    )
    assert registry.newest_student_of_config(loc, "RELIANCE", keys, CONFIG_B).partition_key == (
        "RELIANCE|2023-07-01"
    )
    none = registry.newest_student_of_config(loc, "RELIANCE", keys, "cccccccccccc")
    assert none.partition_key is None and len(none.passed_over) == 3

    # A damaged newest student is passed over with the error, never trusted.
    _damage_partition(loc, "RELIANCE|2024-01-01", "student/metadata.json", b"{}")
    damaged = registry.newest_student_of_config(loc, "RELIANCE", keys, CONFIG_A)
    assert damaged.partition_key == "RELIANCE|2023-01-01"
    assert damaged.passed_over[0][0] == "RELIANCE|2024-01-01" and "corrupt" in damaged.passed_over[0][1]


@pytest.mark.parametrize("decision", ["REJECT", "INSUFFICIENT_DATA", "promote"])
def test_anything_but_promote_is_refused_and_nothing_is_written(loc: str, decision: str) -> None:
    with pytest.raises(PromotionRefused, match=rf"RELIANCE.*{decision}"):
        registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", decision, GATES, now=T1)
    assert _written(loc) == []


def test_refused_decision_leaves_existing_production_untouched(loc: str) -> None:
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    before = _prod_tree(loc)
    with pytest.raises(PromotionRefused, match="REJECT"):
        registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "REJECT", GATES, now=T2)
    assert _prod_tree(loc) == before


def test_bad_symbols_and_mismatched_partitions_are_refused(loc: str) -> None:
    with pytest.raises(InvalidSymbolError, match="path separator"):
        registry.promote(loc, "../x", "RELIANCE|2024-01-01", "PROMOTE", GATES)
    with pytest.raises(PromotionRefused, match="belongs to RELIANCE, not TCS"):
        registry.promote(loc, "TCS", "RELIANCE|2024-01-01", "PROMOTE", GATES)
    with pytest.raises(ArtifactError, match="has not been materialised"):
        registry.promote(loc, "TCS", "TCS|2024-01-01", "PROMOTE", GATES)
    with pytest.raises(InvalidSymbolError, match="path separator"):
        registry.production_dir(loc, "../x")
    assert _written(loc) == []


def test_rollback_restores_archived_bytes_and_archives_the_replaced_model(loc: str) -> None:
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    first = _prod_tree(loc, "current")
    registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    second = _prod_tree(loc, "current")

    rec = registry.rollback(loc, "RELIANCE", now=T3)

    assert rec.partition_key == "RELIANCE|2023-07-01" and rec.promoted_at == "2026-11-26T17:15:00Z"
    assert str(rec.directory) == str(registry.production_dir(loc, "RELIANCE") / "current")
    assert rec == registry.current(loc, "RELIANCE")
    assert _prod_tree(loc, "current") == first
    assert registry.archives(loc, "RELIANCE") == ["20261128T090000Z_2024-01-01"]
    assert _prod_tree(loc, "archive/20261128T090000Z_2024-01-01") == second
    last = registry.history(loc, "RELIANCE")[-1]
    assert (last["action"], last["from"], last["to"]) == (
        "rollback",
        "RELIANCE|2024-01-01",
        "RELIANCE|2023-07-01",
    )
    assert last["at"] == "2026-11-28T09:00:00Z" and last["decision"] == "PROMOTE" and last["reason"]
    # A rollback can be rolled back (explicit id), and the model served follows.
    registry.rollback(loc, "RELIANCE", to="20261128T090000Z_2024-01-01", now=T3)
    assert _prod_tree(loc, "current") == second
    assert len(registry.history(loc, "RELIANCE")) == 4
    if _local(loc):
        assert not [p for p in _prod(Path(loc)).iterdir() if p.name.startswith((".staging", ".pending"))]


def test_rollback_defaults_to_the_most_recently_archived_model(loc: str) -> None:
    _materialise(loc, "RELIANCE|2023-01-01", seed=3)
    registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T1)
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-01-01", "PROMOTE", GATES, now=T2)
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T2)  # same second
    ids = registry.archives(loc, "RELIANCE")
    assert ids == ["20261127T090000Z_2024-01-01", "20261127T090001Z_2023-01-01"]  # order kept, ids unique
    assert registry.rollback(loc, "RELIANCE", now=T3).partition_key == "RELIANCE|2023-01-01"


def test_rollback_with_nothing_to_roll_back_to_is_a_clear_error(loc: str) -> None:
    with pytest.raises(RollbackError, match="nothing has been promoted"):
        registry.rollback(loc, "RELIANCE")
    assert _written(loc) == []
    registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T1)
    before = _prod_tree(loc)
    with pytest.raises(RollbackError, match="no archived model"):
        registry.rollback(loc, "RELIANCE")
    assert _prod_tree(loc) == before


def test_rollback_to_an_unknown_id_lists_the_available_ones(loc: str) -> None:
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    before = _prod_tree(loc)
    for bad in ("20990101T000000Z_2023-07-01", "../current"):
        with pytest.raises(RollbackError, match=r"no such archive; available: 20261127T090000Z_2023-07-01"):
            registry.rollback(loc, "RELIANCE", to=bad)
    assert _prod_tree(loc) == before


def test_a_corrupt_archive_is_not_restored(loc: str) -> None:
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    _damage_production(loc, "archive/20261127T090000Z_2023-07-01/metrics.json", b'{"auc": 0.99}\n')
    before = _prod_tree(loc)
    with pytest.raises(RollbackError, match=r"to 20261127T090000Z_2023-07-01: .*metrics\.json\)? is corrupt"):
        registry.rollback(loc, "RELIANCE")
    assert _prod_tree(loc) == before
    assert registry.current(loc, "RELIANCE").partition_key == "RELIANCE|2024-01-01"


@pytest.mark.parametrize(
    ("rel", "damage", "message"),
    [
        ("student/student_model.pkl", b"not a pickle", r"student_model.*student_model\.pkl\)? is corrupt"),
        (
            "metadata.json",
            None,
            r"teacher_model.*(missing file .*metadata\.json|\(file metadata\.json of version \d+\) is gone)",
        ),
    ],
)
def test_a_corrupt_or_missing_source_is_refused_and_production_is_unchanged(
    loc: str, rel: str, damage: bytes | None, message: str
) -> None:
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    before = _prod_tree(loc)
    _damage_partition(loc, "RELIANCE|2024-01-01", rel, damage)
    with pytest.raises(ArtifactError, match=message):
        registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    assert _prod_tree(loc) == before


def test_a_crash_while_copying_leaves_the_previous_current_intact(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    before = _tree(_prod(base))
    real_write = registry._write_file
    calls = []

    def failing_write(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(registry, "_write_file", failing_write)
    with pytest.raises(OSError, match="disk full"):
        registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    assert _tree(_prod(base)) == before
    assert sorted(p.name for p in _prod(base).iterdir()) == [".lock", "current", "history.jsonl"]


@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_failure_between_the_renames_is_undone(
    base: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    before = _tree(_prod(base))
    real_rename = registry._rename
    calls = []

    def failing_rename(src: Path, dst: Path) -> None:
        calls.append((src, dst))
        if len(calls) == fail_at:
            raise OSError("power cut")
        real_rename(src, dst)

    monkeypatch.setattr(registry, "_rename", failing_rename)
    with pytest.raises(OSError, match="power cut"):
        registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    monkeypatch.setattr(registry, "_rename", real_rename)
    assert _tree(_prod(base)) == before
    assert sorted(p.name for p in _prod(base).iterdir()) == [".lock", "current", "history.jsonl"]


@pytest.mark.parametrize("fail_at", [1, 2, 3])
@pytest.mark.parametrize("killed", [False, True])
def test_an_interrupted_rollback_restores_the_state_before_it(
    base: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int, killed: bool
) -> None:
    """Rollback moves an archive into staging first: undoing it must put the archive back too."""
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    before = _tree(_prod(base))
    real_rename, real_recover = registry._rename, registry._recover
    calls = []

    def failing_rename(src: Path, dst: Path) -> None:
        calls.append((src, dst))
        if len(calls) == fail_at:
            raise OSError("power cut")
        real_rename(src, dst)

    monkeypatch.setattr(registry, "_rename", failing_rename)
    if killed:
        monkeypatch.setattr(registry, "_recover", lambda root: None)
    with pytest.raises(OSError, match="power cut"):
        registry.rollback(base, "RELIANCE", now=T3)
    monkeypatch.setattr(registry, "_rename", real_rename)
    monkeypatch.setattr(registry, "_recover", real_recover)

    assert registry.archives(base, "RELIANCE") == ["20261127T090000Z_2023-07-01"]
    assert _tree(_prod(base)) == before
    assert registry.rollback(base, "RELIANCE", now=T3).partition_key == "RELIANCE|2023-07-01"


def test_a_process_killed_mid_swap_is_repaired_by_the_next_call(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No in-process cleanup runs after a kill: the journal alone must let the next call repair it."""
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    before = _tree(_prod(base))
    real_rename = registry._rename
    real_recover = registry._recover

    class Killed(BaseException):
        pass

    def rename_then_die(src: Path, dst: Path) -> None:
        if Path(src).name == "current":
            real_rename(src, dst)  # current archived ...
            raise Killed  # ... and the process dies before staging becomes current

    monkeypatch.setattr(registry, "_rename", rename_then_die)
    monkeypatch.setattr(registry, "_recover", lambda root: None)  # a dead process cleans nothing up
    with pytest.raises(Killed):
        registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    assert not (_prod(base) / "current").exists()  # the broken state a kill would leave
    monkeypatch.setattr(registry, "_rename", real_rename)
    monkeypatch.setattr(registry, "_recover", real_recover)

    assert registry.current(base, "RELIANCE").partition_key == "RELIANCE|2023-07-01"
    assert _tree(_prod(base)) == before
    # ... and the interrupted promotion can simply be retried.
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    assert registry.current(base, "RELIANCE").partition_key == "RELIANCE|2024-01-01"
    assert len(registry.history(base, "RELIANCE")) == 2


def test_a_kill_after_the_swap_completes_the_history(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)

    class Killed(BaseException):
        pass

    def die(root: Path, entry: dict) -> None:
        raise Killed

    real_append, real_recover = registry._append_history, registry._recover
    monkeypatch.setattr(registry, "_append_history", die)
    monkeypatch.setattr(registry, "_recover", lambda root: None)
    with pytest.raises(Killed):
        registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    monkeypatch.setattr(registry, "_append_history", real_append)
    monkeypatch.setattr(registry, "_recover", real_recover)

    assert registry.current(base, "RELIANCE").partition_key == "RELIANCE|2024-01-01"
    entries = registry.history(base, "RELIANCE")
    assert [e["to"] for e in entries] == ["RELIANCE|2023-07-01", "RELIANCE|2024-01-01"]
    assert registry.history(base, "RELIANCE") == entries  # recovery is not repeated
    assert not (_prod(base) / ".pending.json").exists()


def test_a_corrupt_production_model_is_never_unpickled(loc: str) -> None:
    registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T1)
    _damage_production(loc, "current/student_model.pkl", pickle.dumps({"evil": True}))
    with pytest.raises(ArtifactError, match=r"student_model\.pkl\)? is corrupt"):
        registry.load_current_model(loc, "RELIANCE")
    with pytest.raises(RegistryError, match="nothing has been promoted"):
        registry.load_current_model(loc, "TCS")
    assert registry.current(loc, "TCS") is None
    assert registry.history(loc, "TCS") == [] and registry.archives(loc, "TCS") == []
    assert registry.active_demotion(loc, "TCS") is None


# --- demotion ----------------------------------------------------------------------------------


def test_demotion_archives_the_model_and_blocks_its_re_promotion(loc: str) -> None:
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    served = _prod_tree(loc, "current")
    entry = registry.demote(loc, "RELIANCE", expected="RELIANCE|2023-07-01", reason="AUC 0.41, 0.44", now=T2)
    assert entry["action"] == "demote" and entry["from"] == "RELIANCE|2023-07-01" and entry["to"] is None
    assert registry.current(loc, "RELIANCE") is None
    assert _prod_tree(loc, "current") == {}
    assert _prod_tree(loc, f"archive/{entry['archived']}") == served  # byte for byte, restorable
    assert registry.active_demotion(loc, "RELIANCE") == entry
    with pytest.raises(RegistryError, match=r"no production model for RELIANCE: .*current does not exist"):
        registry.load_current_model(loc, "RELIANCE")
    # The next briefing cannot simply re-promote the demoted model, nor an older window's.
    with pytest.raises(PromotionRefused, match=r"demoted at .*AUC 0\.41.*newer than 2023-07-01"):
        registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T3)
    assert registry.current(loc, "RELIANCE") is None
    # A student of a newer window ends the demotion.
    registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T3)
    assert registry.current(loc, "RELIANCE").partition_key == "RELIANCE|2024-01-01"
    assert registry.active_demotion(loc, "RELIANCE") is None
    assert [e["action"] for e in registry.history(loc, "RELIANCE")] == ["promote", "demote", "promote"]


def test_a_person_can_roll_a_demotion_back(loc: str) -> None:
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    served = _prod_tree(loc, "current")
    registry.demote(loc, "RELIANCE", expected="RELIANCE|2023-07-01", reason="decayed", now=T2)
    restored = registry.rollback(loc, "RELIANCE", now=T3)
    assert restored.partition_key == "RELIANCE|2023-07-01"
    assert _prod_tree(loc, "current") == served
    assert registry.active_demotion(loc, "RELIANCE") is None
    assert registry.archives(loc, "RELIANCE") == []  # the restored archive is current again


def test_a_stale_verdict_demotes_nothing(loc: str) -> None:
    """The decay verdict judged 2023-07-01; production moved on to 2024-01-01 since: keep serving it."""
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    before, written = _prod_tree(loc), _written(loc)
    assert registry.demote(loc, "RELIANCE", expected="RELIANCE|2023-07-01", reason="x", now=T3) is None
    assert registry.demote(loc, "TCS", expected="TCS|2023-07-01", reason="x", now=T3) is None
    assert _prod_tree(loc) == before
    assert _written(loc) == written  # nothing created for TCS either


def test_a_verdict_on_a_model_of_other_window_settings_is_judged_not_refused(loc: str) -> None:
    """A model promoted under another SENSEQUANT_WINDOW_MONTHS (3: windows start in April) keeps
    its key; the decay sensor's demotion names it and must reach the comparison with `current/`,
    not fail on every attempt while the decayed model keeps serving."""
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    assert registry.demote(loc, "RELIANCE", expected="RELIANCE|2024-04-01", reason="x", now=T2) is None
    with pytest.raises(RegistryError, match="not a partition key"):
        registry.demote(loc, "RELIANCE", expected="RELIANCE|junk", reason="x", now=T2)
    assert registry.current(loc, "RELIANCE").partition_key == "RELIANCE|2023-07-01"


@pytest.mark.parametrize("die_after_rename", [False, True])
def test_a_demotion_killed_midway_is_all_or_nothing(
    base: Path, monkeypatch: pytest.MonkeyPatch, die_after_rename: bool
) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    before = _tree(_prod(base))

    class Killed(BaseException):
        pass

    real_rename, real_recover = registry._rename, registry._recover

    def rename(src: Path, dst: Path) -> None:
        if die_after_rename:
            real_rename(src, dst)
        raise Killed

    monkeypatch.setattr(registry, "_rename", rename)
    monkeypatch.setattr(registry, "_recover", lambda root: None)  # a dead process cleans nothing up
    with pytest.raises(Killed):
        registry.demote(base, "RELIANCE", expected="RELIANCE|2023-07-01", reason="decayed", now=T2)
    monkeypatch.setattr(registry, "_rename", real_rename)
    monkeypatch.setattr(registry, "_recover", real_recover)

    if die_after_rename:  # the archive rename happened: the demotion is completed, history included
        assert registry.current(base, "RELIANCE") is None
        assert registry.active_demotion(base, "RELIANCE")["reason"] == "decayed"
        assert [e["action"] for e in registry.history(base, "RELIANCE")] == ["promote", "demote"]
    else:  # nothing moved: nothing happened
        assert registry.current(base, "RELIANCE").partition_key == "RELIANCE|2023-07-01"
        assert _tree(_prod(base)) == before
    assert not (_prod(base) / ".pending.json").exists()


def test_a_demoted_partition_is_never_re_promoted_by_a_briefing(loc: str) -> None:
    """After a person rolls back to an older model, the demoted student still needs a person."""
    _materialise(loc, "RELIANCE|2023-01-01", seed=3)
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-01-01", "PROMOTE", GATES, now=T1)
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T2)
    registry.demote(loc, "RELIANCE", expected="RELIANCE|2023-07-01", reason="decayed", now=T3)
    older = [a for a in registry.archives(loc, "RELIANCE") if a.endswith("2023-01-01")]
    registry.rollback(loc, "RELIANCE", to=older[0])
    with pytest.raises(PromotionRefused, match="demoted for decay; only a person"):
        registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES)
    registry.promote(loc, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES)  # a newer window is fine


def test_a_verdict_on_an_earlier_promotion_of_the_same_window_demotes_nothing(loc: str) -> None:
    first = registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    _materialise(loc, "RELIANCE|2023-07-01", seed=9)  # retrained: new bytes, promoted again
    registry.promote(loc, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T2)
    stale = registry.demote(
        loc, "RELIANCE", expected="RELIANCE|2023-07-01", expected_promoted_at=first.promoted_at, reason="x"
    )
    assert stale is None
    assert registry.current(loc, "RELIANCE").promoted_at != first.promoted_at
