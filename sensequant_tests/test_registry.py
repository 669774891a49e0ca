"""Production registry: promotion copies the verified student, archives, rolls back, survives crashes."""

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
from sensequant_assets.io_manager import CHECKSUMS, ArtifactError, ArtifactStore, codec_for, sha256_bytes
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


def _materialise(base: Path, key: str, seed: int, config_id: str | None = CONFIG_A) -> Path:
    """A partition directory written the way the IO manager writes it, with small real models.

    `config_id`: the configuration id the student records (None: a student trained before ids).
    """
    metadata = {"partition_key": key, "teacher": "model.pkl"}
    if config_id is not None:
        metadata["config_id"] = config_id
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3))
    y = (x[:, 0] + 0.1 * rng.normal(size=40) > 0).astype(int)
    store = ArtifactStore(base)
    store.write(
        key,
        codec_for("teacher_model"),
        TeacherArtifact(
            model=LogisticRegression().fit(x, y),
            metadata={"partition_key": key, "seed": seed},
            importance=pd.DataFrame({"feature": ["a"], "importance": [1.0]}),
        ),
    )
    return store.write(
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


@pytest.fixture
def base(tmp_path: Path) -> Path:
    _materialise(tmp_path, "RELIANCE|2023-07-01", seed=1)
    _materialise(tmp_path, "RELIANCE|2024-01-01", seed=2)
    return tmp_path


def _prod(base: Path) -> Path:
    return base / "production" / "RELIANCE"


def test_promote_copies_exactly_the_student_and_records_checksums(base: Path) -> None:
    source = ArtifactStore(base).partition_dir("RELIANCE|2024-01-01")
    rec = registry.promote(base, "reliance", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T1)

    cur = _prod(base) / "current"
    assert rec.directory == cur
    assert sorted(p.name for p in cur.iterdir()) == sorted([*COPIED, "promotion.json", CHECKSUMS])
    for name, rel in COPIED.items():
        assert (cur / name).read_bytes() == (source / rel).read_bytes(), name
    sums = json.loads((cur / CHECKSUMS).read_text())
    assert sums == {p.name: sha256_bytes(p.read_bytes()) for p in cur.iterdir() if p.name != CHECKSUMS}
    promotion = json.loads((cur / "promotion.json").read_text())
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
    assert registry.current(base, "RELIANCE") == rec
    assert registry.archives(base, "RELIANCE") == []
    [entry] = registry.history(base, "RELIANCE")
    assert entry["action"] == "promote"
    assert (entry["from"], entry["to"], entry["at"]) == (None, "RELIANCE|2024-01-01", "2026-11-26T17:15:00Z")
    assert entry["decision"] == "PROMOTE" and entry["reason"]
    assert entry["config_id"] == CONFIG_A
    # The served model is the one that was trained, and it is only unpickled after verification.
    model = registry.load_current_model(base, "RELIANCE")
    expected = pickle.loads((source / "student/student_model.pkl").read_bytes())
    np.testing.assert_array_equal(model.coef_, expected.coef_)
    assert sorted(p.name for p in _prod(base).iterdir()) == [".lock", "current", "history.jsonl"]


def test_second_promote_archives_the_first_and_appends_history(base: Path) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    first = _tree(_prod(base) / "current")
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)

    assert registry.archives(base, "RELIANCE") == ["20261127T090000Z_2023-07-01"]
    archive_dirs = list((_prod(base) / "archive").iterdir())
    assert [d.name for d in archive_dirs] == ["20261127T090000Z_2023-07-01"]
    assert _tree(archive_dirs[0]) == first
    assert registry.current(base, "RELIANCE").partition_key == "RELIANCE|2024-01-01"
    entries = registry.history(base, "RELIANCE")
    assert [(e["action"], e["from"], e["to"]) for e in entries] == [
        ("promote", None, "RELIANCE|2023-07-01"),
        ("promote", "RELIANCE|2023-07-01", "RELIANCE|2024-01-01"),
    ]
    assert entries[1]["archived"] == "20261127T090000Z_2023-07-01"


def test_promoting_the_current_model_again_is_a_no_op(base: Path) -> None:
    rec = registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T1)
    before = _tree(_prod(base))
    again = registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", {"other": 1}, now=T2)
    assert again == rec and again.promoted_at == "2026-11-26T17:15:00Z"
    assert _tree(_prod(base)) == before
    assert registry.archives(base, "RELIANCE") == []


def test_rematerialised_partition_is_a_new_promotion_not_a_no_op(base: Path) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T1)
    _materialise(base, "RELIANCE|2024-01-01", seed=7)  # same window, different model bytes
    rec = registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    assert rec.promoted_at == "2026-11-27T09:00:00Z"
    assert registry.archives(base, "RELIANCE") == ["20261127T090000Z_2024-01-01"]


def test_a_student_of_another_configuration_is_refused_and_nothing_is_written(base: Path) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1, config_id=CONFIG_A)
    before = _tree(_prod(base))
    _materialise(base, "RELIANCE|2024-01-01", seed=3, config_id=CONFIG_B)
    with pytest.raises(PromotionRefused, match=f"configuration {CONFIG_B}, the briefing judged.*{CONFIG_A}"):
        registry.promote(
            base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2, config_id=CONFIG_A
        )
    _materialise(base, "RELIANCE|2024-01-01", seed=4, config_id=None)
    with pytest.raises(PromotionRefused, match=r"\(not recorded\)"):
        registry.promote(
            base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2, config_id=CONFIG_A
        )
    assert _tree(_prod(base)) == before
    # Without a judged id (a manual promotion), the student's own id is still recorded.
    rec = registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    assert rec.config_id is None and registry.current(base, "RELIANCE").config_id is None


def test_rollback_records_the_restored_configuration(base: Path) -> None:
    _materialise(base, "RELIANCE|2024-01-01", seed=3, config_id=CONFIG_B)
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    assert registry.current(base, "RELIANCE").config_id == CONFIG_B
    assert registry.rollback(base, "RELIANCE", now=T3).config_id == CONFIG_A
    assert [e["config_id"] for e in registry.history(base, "RELIANCE")] == [CONFIG_A, CONFIG_B, CONFIG_A]


def test_newest_student_of_config_passes_over_other_configurations(base: Path) -> None:
    _materialise(base, "RELIANCE|2023-01-01", seed=5, config_id=CONFIG_A)
    _materialise(base, "RELIANCE|2023-07-01", seed=1, config_id=CONFIG_B)
    _materialise(base, "RELIANCE|2024-01-01", seed=2, config_id=None)
    _materialise(base, "TCS|2024-07-01", seed=6, config_id=CONFIG_A)
    keys = ["RELIANCE|2023-01-01", "RELIANCE|2024-01-01", "TCS|2024-07-01", "RELIANCE|2023-07-01"]
    assert registry.student_config_id(base, "RELIANCE|2023-07-01") == CONFIG_B

    choice = registry.newest_student_of_config(base, "RELIANCE", keys, CONFIG_A)
    assert choice.partition_key == "RELIANCE|2023-01-01"
    assert choice.passed_over == (
        ("RELIANCE|2024-01-01", "configuration not recorded"),
        ("RELIANCE|2023-07-01", f"configuration {CONFIG_B}"),
    )
    assert registry.newest_student_of_config(base, "RELIANCE", keys, CONFIG_B).partition_key == (
        "RELIANCE|2023-07-01"
    )
    none = registry.newest_student_of_config(base, "RELIANCE", keys, "cccccccccccc")
    assert none.partition_key is None and len(none.passed_over) == 3

    # A damaged newest student is passed over with the error, never trusted.
    (ArtifactStore(base).partition_dir("RELIANCE|2024-01-01") / "student/metadata.json").write_text("{}")
    damaged = registry.newest_student_of_config(base, "RELIANCE", keys, CONFIG_A)
    assert damaged.partition_key == "RELIANCE|2023-01-01"
    assert damaged.passed_over[0][0] == "RELIANCE|2024-01-01" and "corrupt" in damaged.passed_over[0][1]


@pytest.mark.parametrize("decision", ["REJECT", "INSUFFICIENT_DATA", "promote"])
def test_anything_but_promote_is_refused_and_nothing_is_written(base: Path, decision: str) -> None:
    with pytest.raises(PromotionRefused, match=rf"RELIANCE.*{decision}"):
        registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", decision, GATES, now=T1)
    assert not (base / "production").exists()


def test_refused_decision_leaves_existing_production_untouched(base: Path) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    before = _tree(_prod(base))
    with pytest.raises(PromotionRefused, match="REJECT"):
        registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "REJECT", GATES, now=T2)
    assert _tree(_prod(base)) == before


def test_bad_symbols_and_mismatched_partitions_are_refused(base: Path) -> None:
    with pytest.raises(InvalidSymbolError, match="path separator"):
        registry.promote(base, "../x", "RELIANCE|2024-01-01", "PROMOTE", GATES)
    with pytest.raises(PromotionRefused, match="belongs to RELIANCE, not TCS"):
        registry.promote(base, "TCS", "RELIANCE|2024-01-01", "PROMOTE", GATES)
    with pytest.raises(ArtifactError, match="has not been materialised"):
        registry.promote(base, "TCS", "TCS|2024-01-01", "PROMOTE", GATES)
    assert not (base / "production").exists()


def test_rollback_restores_archived_bytes_and_archives_the_replaced_model(base: Path) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    first = _tree(_prod(base) / "current")
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    second = _tree(_prod(base) / "current")

    rec = registry.rollback(base, "RELIANCE", now=T3)

    assert rec.partition_key == "RELIANCE|2023-07-01" and rec.promoted_at == "2026-11-26T17:15:00Z"
    assert _tree(_prod(base) / "current") == first
    assert registry.archives(base, "RELIANCE") == ["20261128T090000Z_2024-01-01"]
    assert _tree(_prod(base) / "archive" / "20261128T090000Z_2024-01-01") == second
    last = registry.history(base, "RELIANCE")[-1]
    assert (last["action"], last["from"], last["to"]) == (
        "rollback",
        "RELIANCE|2024-01-01",
        "RELIANCE|2023-07-01",
    )
    assert last["at"] == "2026-11-28T09:00:00Z" and last["decision"] == "PROMOTE" and last["reason"]
    # A rollback can be rolled back (explicit id), and the model served follows.
    registry.rollback(base, "RELIANCE", to="20261128T090000Z_2024-01-01", now=T3)
    assert _tree(_prod(base) / "current") == second
    assert len(registry.history(base, "RELIANCE")) == 4
    assert not [p for p in _prod(base).iterdir() if p.name.startswith((".staging", ".pending"))]


def test_rollback_defaults_to_the_most_recently_archived_model(base: Path) -> None:
    _materialise(base, "RELIANCE|2023-01-01", seed=3)
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T1)
    registry.promote(base, "RELIANCE", "RELIANCE|2023-01-01", "PROMOTE", GATES, now=T2)
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T2)  # same second
    ids = registry.archives(base, "RELIANCE")
    assert ids == ["20261127T090000Z_2024-01-01", "20261127T090001Z_2023-01-01"]  # order kept, ids unique
    assert registry.rollback(base, "RELIANCE", now=T3).partition_key == "RELIANCE|2023-01-01"


def test_rollback_with_nothing_to_roll_back_to_is_a_clear_error(base: Path) -> None:
    with pytest.raises(RollbackError, match="nothing has been promoted"):
        registry.rollback(base, "RELIANCE")
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T1)
    before = _tree(_prod(base))
    with pytest.raises(RollbackError, match="no archived model"):
        registry.rollback(base, "RELIANCE")
    assert _tree(_prod(base)) == before


def test_rollback_to_an_unknown_id_lists_the_available_ones(base: Path) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    before = _tree(_prod(base))
    for bad in ("20990101T000000Z_2023-07-01", "../current"):
        with pytest.raises(RollbackError, match=r"no such archive; available: 20261127T090000Z_2023-07-01"):
            registry.rollback(base, "RELIANCE", to=bad)
    assert _tree(_prod(base)) == before


def test_a_corrupt_archive_is_not_restored(base: Path) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    archived = _prod(base) / "archive" / "20261127T090000Z_2023-07-01" / "metrics.json"
    archived.write_bytes(b'{"auc": 0.99}\n')
    before = _tree(_prod(base))
    with pytest.raises(RollbackError, match=r"metrics\.json is corrupt"):
        registry.rollback(base, "RELIANCE")
    assert _tree(_prod(base)) == before


@pytest.mark.parametrize(
    ("rel", "damage", "message"),
    [
        ("student/student_model.pkl", b"not a pickle", r"student_model.*student_model\.pkl is corrupt"),
        ("metadata.json", None, r"teacher_model.*missing file .*metadata\.json"),
    ],
)
def test_a_corrupt_or_missing_source_is_refused_and_production_is_unchanged(
    base: Path, rel: str, damage: bytes | None, message: str
) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    before = _tree(_prod(base))
    target = ArtifactStore(base).partition_dir("RELIANCE|2024-01-01") / rel
    if damage is None:
        target.unlink()
    else:
        target.write_bytes(damage)
    with pytest.raises(ArtifactError, match=message):
        registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    assert _tree(_prod(base)) == before


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


def test_a_corrupt_production_model_is_never_unpickled(base: Path) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T1)
    (_prod(base) / "current" / "student_model.pkl").write_bytes(pickle.dumps({"evil": True}))
    with pytest.raises(ArtifactError, match=r"student_model\.pkl is corrupt"):
        registry.load_current_model(base, "RELIANCE")
    with pytest.raises(RegistryError, match="nothing has been promoted"):
        registry.load_current_model(base, "TCS")
    assert registry.current(base, "TCS") is None
    assert registry.history(base, "TCS") == [] and registry.archives(base, "TCS") == []


# --- demotion ----------------------------------------------------------------------------------


def test_demotion_archives_the_model_and_blocks_its_re_promotion(base: Path) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    served = _tree(_prod(base) / "current")
    entry = registry.demote(base, "RELIANCE", expected="RELIANCE|2023-07-01", reason="AUC 0.41, 0.44", now=T2)
    assert entry["action"] == "demote" and entry["from"] == "RELIANCE|2023-07-01" and entry["to"] is None
    assert registry.current(base, "RELIANCE") is None
    assert not (_prod(base) / "current").exists()
    assert _tree(_prod(base) / "archive" / entry["archived"]) == served  # byte for byte, restorable
    assert registry.active_demotion(base, "RELIANCE") == entry
    # The next briefing cannot simply re-promote the demoted model, nor an older window's.
    with pytest.raises(PromotionRefused, match=r"demoted at .*AUC 0\.41.*newer than 2023-07-01"):
        registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T3)
    assert registry.current(base, "RELIANCE") is None
    # A student of a newer window ends the demotion.
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T3)
    assert registry.current(base, "RELIANCE").partition_key == "RELIANCE|2024-01-01"
    assert registry.active_demotion(base, "RELIANCE") is None
    assert [e["action"] for e in registry.history(base, "RELIANCE")] == ["promote", "demote", "promote"]


def test_a_person_can_roll_a_demotion_back(base: Path) -> None:
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    served = _tree(_prod(base) / "current")
    registry.demote(base, "RELIANCE", expected="RELIANCE|2023-07-01", reason="decayed", now=T2)
    restored = registry.rollback(base, "RELIANCE", now=T3)
    assert restored.partition_key == "RELIANCE|2023-07-01"
    assert _tree(_prod(base) / "current") == served
    assert registry.active_demotion(base, "RELIANCE") is None


def test_a_stale_verdict_demotes_nothing(base: Path) -> None:
    """The decay verdict judged 2023-07-01; production moved on to 2024-01-01 since: keep serving it."""
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES, now=T2)
    before = _tree(_prod(base))
    assert registry.demote(base, "RELIANCE", expected="RELIANCE|2023-07-01", reason="x", now=T3) is None
    assert registry.demote(base, "TCS", expected="TCS|2023-07-01", reason="x", now=T3) is None
    assert _tree(_prod(base)) == before


def test_a_verdict_on_a_model_of_other_window_settings_is_judged_not_refused(base: Path) -> None:
    """A model promoted under another SENSEQUANT_WINDOW_MONTHS (3: windows start in April) keeps
    its key; the decay sensor's demotion names it and must reach the comparison with `current/`,
    not fail on every attempt while the decayed model keeps serving."""
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    assert registry.demote(base, "RELIANCE", expected="RELIANCE|2024-04-01", reason="x", now=T2) is None
    with pytest.raises(RegistryError, match="not a partition key"):
        registry.demote(base, "RELIANCE", expected="RELIANCE|junk", reason="x", now=T2)
    assert registry.current(base, "RELIANCE").partition_key == "RELIANCE|2023-07-01"


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


def test_a_demoted_partition_is_never_re_promoted_by_a_briefing(base: Path) -> None:
    """After a person rolls back to an older model, the demoted student still needs a person."""
    _materialise(base, "RELIANCE|2023-01-01", seed=3)
    registry.promote(base, "RELIANCE", "RELIANCE|2023-01-01", "PROMOTE", GATES, now=T1)
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T2)
    registry.demote(base, "RELIANCE", expected="RELIANCE|2023-07-01", reason="decayed", now=T3)
    older = [a for a in registry.archives(base, "RELIANCE") if a.endswith("2023-01-01")]
    registry.rollback(base, "RELIANCE", to=older[0])
    with pytest.raises(PromotionRefused, match="demoted for decay; only a person"):
        registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES)
    registry.promote(base, "RELIANCE", "RELIANCE|2024-01-01", "PROMOTE", GATES)  # a newer window is fine


def test_a_verdict_on_an_earlier_promotion_of_the_same_window_demotes_nothing(base: Path) -> None:
    first = registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T1)
    _materialise(base, "RELIANCE|2023-07-01", seed=9)  # retrained: new bytes, promoted again
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES, now=T2)
    stale = registry.demote(
        base, "RELIANCE", expected="RELIANCE|2023-07-01", expected_promoted_at=first.promoted_at, reason="x"
    )
    assert stale is None
    assert registry.current(base, "RELIANCE").promoted_at != first.promoted_at
