"""Paths and names (issue 13, item 6): whatever put a symbol into a partition key or a registry call
(the UI's "Add partition", a job's config, a sensor), the store and the production registry refuse
one that does not validate, and never read or write outside the artifacts directory, nor through a
symbolic link inside it. Each refusal names the symbol (or path) and the rule, and creates nothing.

Dagster's instance accepts every one of these names as a dynamic partition (checked below), so
these two layers are where they have to stop.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import DagsterInstance, MultiPartitionKey, build_input_context, build_output_context

from sensequant_assets import io_manager, registry
from sensequant_assets.artifacts import BriefingArtifact, StudentArtifact, TeacherArtifact
from sensequant_assets.io_manager import (
    ArtifactStore,
    PartitionDirIOManager,
    UnsafePathError,
    codec_for,
    inside,
)
from sensequant_assets.partitions import symbol_window_partitions
from sensequant_assets.registry import PromotionRefused, RegistryError
from sensequant_assets.sources.symbols import MAX_SYMBOL_LENGTH, InvalidSymbolError

WINDOW = "2024-01-01"
GATES = {"ic_fdr": {"value": 0.01, "threshold": 0.05, "op": "<=", "passed": True}}
CONFIG = "cccccccccccc"

# Symbols that do not validate at all: (symbol, the rule the message must name).
INVALID = [
    ("..", "'..' (parent-directory path component)"),
    ("../x", "'/', which is a path separator"),
    ("../../etc/passwd", "'/', which is a path separator"),
    ("/etc", "'/', which is a path separator"),
    ("A/B", "'/', which is a path separator"),
    ("A\\B", "which is a path separator"),
    ("..\\x", "which is a path separator"),
    ("X" * 300, "longer than 32 characters (300)"),  # over the filesystem's 255-byte name limit
    ("X" * (MAX_SYMBOL_LENGTH + 1), "longer than 32 characters (33)"),  # just over the validator's
    ("Ａ" * 90, "longer than 32 characters (90)"),  # 270 bytes of fullwidth 'A' in UTF-8
    ("R\u0410LIANCE", "it contains '\u0410'"),  # Cyrillic capital A, a look-alike of 'A'
    ("\uff32\uff25\uff2c\uff29\uff21\uff2e\uff23\uff25", "only A-Z, 0-9"),  # fullwidth RELIANCE
    ("RELI\u200dANCE", "control character ('\\u200d')"),  # zero-width joiner
    ("TCS\u200b", "control character ('\\u200b')"),  # zero-width space (not stripped)
    ("\ufb01NOLEX", "non-ASCII"),  # 'ﬁ' ligature: NFKC and upper() both turn it into 'FI'
    ("REL\u0131ANCE", "non-ASCII"),  # dotless 'ı': upper() turns it into 'I'
    ("REL\u2160ANCE", "it contains '\u2160'"),  # Roman numeral one: NFKC turns it into 'I'
    ("\u212aPIT", "it contains '\u212a'"),  # Kelvin sign: NFKC turns it into 'K'
    ("TCS\u00b2", "it contains '\u00b2'"),  # superscript two: NFKC turns it into '2'
    ("RELIANCE\u0301", "it contains '\u0301'"),  # a combining accent
    ("", "it is empty"),
    ("   ", "it is empty"),
    ("T CS", "whitespace"),
    ("TC\x00S", "control character ('\\x00')"),  # NUL
    ("TC\x1bS", "control character ('\\x1b')"),  # escape
    ("TC\nS", "control character ('\\n')"),
    ("TC\x7fS", "control character ('\\x7f')"),  # DEL
    ("A|B", "'|', which separates the dimensions"),
    ("A,B", "',', which separates symbols"),
    ("A[B", "'[', which is reserved"),
    (".HIDDEN", "must start with a letter or digit"),
    ("-RF", "must start with a letter or digit"),
]
# Symbols that validate, but to another spelling: refused as partition keys (a second directory),
# canonicalised as registry arguments (the one directory of the canonical spelling).
NON_CANONICAL = [
    ("reliance", "RELIANCE"),
    ("Reliance", "RELIANCE"),
    (" TCS", "TCS"),
    ("TCS ", "TCS"),
    ("\tTCS", "TCS"),
    ("TCS\n", "TCS"),
]
ALL_BAD = [s for s, _ in INVALID] + [s for s, _ in NON_CANONICAL]


def _rule(symbol: str) -> str:
    """The fragment the store's message must contain for `symbol` in a partition key."""
    rules = dict(INVALID)
    if symbol in rules:
        return rules[symbol]
    return f"is not written as {dict(NON_CANONICAL)[symbol]!r}"


def _tree(root: Path) -> dict[str, Any]:
    """Every entry under `root` (links as links), with file bytes: 'nothing created' is equal trees."""
    if not root.exists() and not root.is_symlink():
        return {}
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_file():
                out[rel] = path.read_bytes()
            else:
                out[rel] = "dir"
    return out


def _bars() -> pd.DataFrame:
    idx = pd.date_range("2024-01-01", periods=3, freq="B", tz="Asia/Kolkata", name="timestamp")
    return pd.DataFrame({"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 9.0}, index=idx)


def _teacher(seed: int) -> TeacherArtifact:
    return TeacherArtifact(
        model={"teacher": seed},
        metadata={"seed": seed},
        importance=pd.DataFrame({"feature": ["a"], "importance": [1.0]}),
    )


def _student(seed: int) -> StudentArtifact:
    return StudentArtifact(model={"student": seed}, metrics={"auc": 0.6}, metadata={"config_id": CONFIG})


def _materialise(store: ArtifactStore, key: str, seed: int = 1) -> Path:
    store.write(key, codec_for("teacher_model"), _teacher(seed))
    return store.write(key, codec_for("student_model"), _student(seed))


@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io_manager, "_SWEPT_BASE_DIRS", set())


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the store, with one file in it, that must stay exactly as it is."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "keep.txt").write_text("not the store's\n")
    return directory


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A store with RELIANCE's teacher and student of one window."""
    directory = tmp_path / "models"
    _materialise(ArtifactStore(directory), f"RELIANCE|{WINDOW}")
    return directory


# --- the IO manager: partition keys ---------------------------------------------------------------


@pytest.fixture(scope="module")
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as inst:
        inst.add_dynamic_partitions("symbols", ALL_BAD)
        yield inst


def test_dagster_accepts_every_one_of_these_names_as_a_partition(instance: DagsterInstance) -> None:
    """Why the store must check: the instance takes any of them (the UI's "Add partition" too)."""
    assert set(instance.get_dynamic_partitions("symbols")) == set(ALL_BAD)


@pytest.mark.parametrize("symbol", ALL_BAD)
def test_the_store_refuses_a_bad_symbol_in_a_partition_key_and_creates_nothing(
    tmp_path: Path, symbol: str
) -> None:
    store = ArtifactStore(tmp_path / "models")
    key = f"{symbol}|2023-01-01"
    before = _tree(tmp_path)
    if symbol == "":
        error, rule = ValueError, "is not of the form SYMBOL|YYYY-MM-DD"  # nothing left of the '|'
    else:
        error, rule = InvalidSymbolError, _rule(symbol)
    for attempt in (
        lambda: store.partition_dir(key),
        lambda: store.write(key, codec_for("market_bars"), _bars()),
        lambda: store.write(key, codec_for("teacher_model"), _teacher(1)),
        lambda: store.read(key, codec_for("market_bars"), "market_bars"),
        lambda: store.holds(key, {"bars.parquet": "0" * 64}),
    ):
        with pytest.raises(error) as caught:
            attempt()
        assert rule in str(caught.value)
        assert repr(key) in str(caught.value)
    if symbol == "":
        with pytest.raises(ValueError, match="is not of the form"):
            store.owned_checksums(key, codec_for("market_bars"))
    else:
        assert store.owned_checksums(key, codec_for("market_bars")) == {}  # never written, by design
    assert _tree(tmp_path) == before  # no directory, no staging, no lock: nothing at all


@pytest.mark.parametrize("symbol", [s for s in ALL_BAD if "|" not in s])  # Dagster splits on '|' itself
def test_the_io_manager_refuses_a_bad_symbol_from_dagster_and_creates_nothing(
    tmp_path: Path, instance: DagsterInstance, symbol: str
) -> None:
    """The Dagster face: a run of such a partition fails naming the symbol and the rule."""
    io = PartitionDirIOManager.at(tmp_path / "models")
    key = MultiPartitionKey({"symbol": symbol, "window": "2023-01-01"})
    common = {"partition_key": key, "asset_partitions_def": symbol_window_partitions, "instance": instance}
    rule = "it is empty" if symbol == "" else _rule(symbol)
    with (
        build_output_context(asset_key="market_bars", **common) as out,
        pytest.raises(InvalidSymbolError) as caught,
    ):
        io.handle_output(out, _bars())
    assert rule in str(caught.value) and repr(symbol) in str(caught.value)
    with (
        build_input_context(asset_key="market_bars", **common) as inp,
        pytest.raises(InvalidSymbolError) as caught,
    ):
        io.load_input(inp)
    assert rule in str(caught.value)
    assert _tree(tmp_path) == {}


@pytest.mark.parametrize("symbol", ["M&M", "BAJAJ-AUTO", "J&KBANK", "NAM_INDIA", "X" * MAX_SYMBOL_LENGTH])
def test_valid_names_up_to_the_limit_get_a_directory_directly_in_the_store(
    tmp_path: Path, symbol: str
) -> None:
    store = ArtifactStore(tmp_path)
    key = f"{symbol}|2023-01-01"
    directory = store.write(key, codec_for("market_bars"), _bars())
    assert directory.parent == tmp_path and directory.name == f"{symbol}_2023-01-01_to_2023-06-30"
    assert len(store.read(key, codec_for("market_bars"), "market_bars")) == 3


def test_a_window_that_is_not_a_date_never_becomes_a_path(tmp_path: Path) -> None:
    """The directory name is built from the parsed window, never from the key's text."""
    for window in ("../../etc", "2023-01-01/../x", ""):
        with pytest.raises(ValueError):
            ArtifactStore(tmp_path).partition_dir(f"RELIANCE|{window}")
    assert list(tmp_path.iterdir()) == []


def test_inside_refuses_paths_that_leave_the_base(tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError, match="outside the artifacts directory"):
        inside(tmp_path, Path("/etc"), "probe")
    with pytest.raises(UnsafePathError, match=r"leaves the artifacts directory .* \('\.\.'\)"):
        inside(tmp_path, tmp_path / ".." / "x", "probe")
    assert inside(tmp_path, tmp_path / "a" / "b", "probe") == tmp_path / "a" / "b"  # need not exist


# --- the IO manager: symbolic links ---------------------------------------------------------------


def _partition(base: Path) -> Path:
    return base / f"RELIANCE_{WINDOW}_to_2024-06-30"


def test_a_partition_directory_replaced_by_a_link_outside_is_neither_written_nor_read(
    base: Path, outside: Path
) -> None:
    """E.g. someone moved a partition to another disk and left a link: the store refuses to follow
    it, naming the link, where it points and the fix; the outside directory is left untouched."""
    store = ArtifactStore(base)
    key = f"RELIANCE|{WINDOW}"
    os.rename(_partition(base), base.parent / "moved")
    _partition(base).symlink_to(outside, target_is_directory=True)
    before_outside, before_base = _tree(outside), _tree(base)
    for attempt in (
        lambda: store.write(key, codec_for("market_bars"), _bars()),
        lambda: store.write(key, codec_for("teacher_model"), _teacher(2)),
        lambda: store.read(key, codec_for("teacher_model"), "teacher_model"),
        lambda: store.holds(key, {}),
        lambda: store.owned_checksums(key, codec_for("teacher_model")),
    ):
        with pytest.raises(UnsafePathError) as caught:
            attempt()
        message = str(caught.value)
        assert repr(key) in message and str(_partition(base)) in message
        assert (
            f"is a symbolic link to {os.path.realpath(outside)} (outside the artifacts directory" in message
        )
        assert "re-materialise" in message
    assert _tree(outside) == before_outside
    assert _tree(base) == before_base  # the link is still a link; nothing staged or locked


def test_a_link_to_another_partition_inside_the_store_is_refused_too(base: Path) -> None:
    """Two partitions sharing one directory would mix their files."""
    store = ArtifactStore(base)
    other = store.partition_dir("TCS|2024-01-01")
    other.symlink_to(_partition(base), target_is_directory=True)
    before = _tree(base)
    with pytest.raises(UnsafePathError, match=r"\(inside the artifacts directory"):
        store.write("TCS|2024-01-01", codec_for("market_bars"), _bars())
    assert _tree(base) == before


def test_a_dangling_link_in_place_of_a_partition_is_refused(base: Path, tmp_path: Path) -> None:
    store = ArtifactStore(base)
    store.partition_dir("TCS|2024-01-01").symlink_to(tmp_path / "nowhere", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="is a symbolic link"):
        store.write("TCS|2024-01-01", codec_for("market_bars"), _bars())
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("bookkeeping", [io_manager.TXN_DIR, io_manager.LOCKS_DIR])
def test_staging_and_lock_directories_linked_outside_are_refused(
    tmp_path: Path, outside: Path, bookkeeping: str
) -> None:
    base = tmp_path / "models"
    base.mkdir()
    (base / bookkeeping).symlink_to(outside, target_is_directory=True)
    before = _tree(outside)
    with pytest.raises(UnsafePathError, match=f"{bookkeeping} is a symbolic link"):
        ArtifactStore(base).write(f"RELIANCE|{WINDOW}", codec_for("market_bars"), _bars())
    assert _tree(outside) == before
    assert sorted(p.name for p in base.iterdir()) == [bookkeeping]


def test_sensor_state_and_the_briefing_are_not_written_through_links(tmp_path: Path, outside: Path) -> None:
    base = tmp_path / "models"
    base.mkdir()
    store = ArtifactStore(base)
    (base / ".state").symlink_to(outside, target_is_directory=True)
    (base / "briefings").symlink_to(outside, target_is_directory=True)
    before = _tree(outside)
    with pytest.raises(UnsafePathError, match="sensor state 'new_data'"):
        store.write_state("new_data", b"{}")
    with pytest.raises(UnsafePathError, match="sensor state 'new_data'"):
        store.read_state("new_data", "0" * 20)
    codec = codec_for("promotion_briefing")
    with pytest.raises(UnsafePathError, match="briefings is a symbolic link"):
        store.write_fixed(
            codec, BriefingArtifact(generated_at="2024-07-01T00:00:00", symbols=[], markdown="#")
        )
    with pytest.raises(UnsafePathError, match="briefings is a symbolic link"):
        store.read_fixed(codec, "promotion_briefing")
    assert _tree(outside) == before


def test_the_store_itself_may_be_a_link(tmp_path: Path) -> None:
    """SENSEQUANT_ARTIFACTS_DIR pointing at another disk is the user's choice, not a link inside."""
    real = tmp_path / "disk"
    real.mkdir()
    (tmp_path / "models").symlink_to(real, target_is_directory=True)
    store = ArtifactStore(tmp_path / "models")
    _materialise(store, f"RELIANCE|{WINDOW}")
    assert (real / f"RELIANCE_{WINDOW}_to_2024-06-30" / "student" / "student_model.pkl").is_file()
    registry.promote(tmp_path / "models", "RELIANCE", f"RELIANCE|{WINDOW}", "PROMOTE", GATES)
    assert (real / "production" / "RELIANCE" / "current" / "promotion.json").is_file()


# --- the registry: symbols and partition keys -----------------------------------------------------


def _registry_calls(symbol: str) -> dict[str, Any]:
    """Every public registry function that takes a symbol, called with `symbol`."""
    return {
        "production_dir": lambda b: registry.production_dir(b, symbol),
        "promote": lambda b: registry.promote(b, symbol, f"RELIANCE|{WINDOW}", "PROMOTE", GATES),
        "rollback": lambda b: registry.rollback(b, symbol),
        "demote": lambda b: registry.demote(b, symbol, expected=f"RELIANCE|{WINDOW}", reason="decay"),
        "current": lambda b: registry.current(b, symbol),
        "history": lambda b: registry.history(b, symbol),
        "archives": lambda b: registry.archives(b, symbol),
        "active_demotion": lambda b: registry.active_demotion(b, symbol),
        "load_current_model": lambda b: registry.load_current_model(b, symbol),
        "newest_student_of_config": lambda b: registry.newest_student_of_config(
            b, symbol, [f"RELIANCE|{WINDOW}"], CONFIG
        ),
    }


@pytest.mark.parametrize(("symbol", "rule"), INVALID)
def test_every_registry_function_refuses_an_invalid_symbol_and_creates_nothing(
    base: Path, symbol: str, rule: str
) -> None:
    registry.promote(base, "RELIANCE", f"RELIANCE|{WINDOW}", "PROMOTE", GATES)
    before = _tree(base.parent)
    for name, call in _registry_calls(symbol).items():
        with pytest.raises(InvalidSymbolError) as caught:
            call(base)
        assert rule in str(caught.value), name
        assert repr(symbol) in str(caught.value), name
    assert _tree(base.parent) == before


def _key_calls(key: str) -> dict[str, Any]:
    """Every public registry function that takes a partition key, called with `key`."""
    return {
        "promote": lambda b: registry.promote(b, "RELIANCE", key, "PROMOTE", GATES),
        "demote": lambda b: registry.demote(b, "RELIANCE", expected=key, reason="decay"),
        "student_config_id": lambda b: registry.student_config_id(b, key),
    }


@pytest.mark.parametrize("symbol", ALL_BAD)
def test_every_registry_function_refuses_a_bad_symbol_in_a_partition_key(base: Path, symbol: str) -> None:
    """A partition key names a directory of the store: its symbol must be canonical, as there."""
    key = f"{symbol}|{WINDOW}"
    registry.promote(base, "RELIANCE", f"RELIANCE|{WINDOW}", "PROMOTE", GATES)
    before = _tree(base.parent)
    for name, call in _key_calls(key).items():
        if symbol == "":  # no symbol at all: the key itself is malformed
            with pytest.raises(RegistryError, match=re.escape("is not a partition key SYMBOL|YYYY-MM-DD")):
                call(base)
            continue
        with pytest.raises(InvalidSymbolError) as caught:
            call(base)
        assert _rule(symbol) in str(caught.value), name
        assert repr(key) in str(caught.value), name
    # Another symbol's keys are never read when choosing a symbol's student.
    choice = registry.newest_student_of_config(base, "RELIANCE", [key], CONFIG)
    assert choice.partition_key is None and choice.passed_over == ()
    assert _tree(base.parent) == before


@pytest.mark.parametrize("window", ["../../etc", "2024-01-01/../..", "", "2024-13-01", "2024-03-15"])
def test_a_partition_key_whose_window_is_not_a_window_start_is_refused(base: Path, window: str) -> None:
    """Not a date, or a date inside a window: Dagster maps 2024-03-15 to the window of 2024-07-01,
    whose directory it would have named (a second key for another partition's files). A demotion
    names a model's recorded key, which another SENSEQUANT_WINDOW_MONTHS may have aligned
    differently: any date reaches the comparison with `current/` (and demotes nothing here)."""
    before = _tree(base.parent)
    for name, call in _key_calls(f"RELIANCE|{window}").items():
        if name == "demote" and window == "2024-03-15":
            assert call(base) is None
            continue
        with pytest.raises(
            RegistryError, match=re.escape("is not a partition key SYMBOL|YYYY-MM-DD of a window")
        ):
            call(base)
    assert _tree(base.parent) == before


def test_the_store_refuses_a_window_key_that_is_not_a_window_start(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    assert store.partition_dir("RELIANCE|2023-07-01").name == "RELIANCE_2023-07-01_to_2023-12-31"
    with pytest.raises(ValueError, match="'2023-03-15' is not the first day of a window"):
        store.write("RELIANCE|2023-03-15", codec_for("market_bars"), _bars())
    assert list(tmp_path.iterdir()) == []


def test_a_demotion_names_a_partition_of_its_own_symbol(base: Path) -> None:
    with pytest.raises(PromotionRefused, match="belongs to RELIANCE, not TCS"):
        registry.demote(base, "TCS", expected=f"RELIANCE|{WINDOW}", reason="decay")


@pytest.mark.parametrize(("symbol", "canonical"), NON_CANONICAL)
def test_a_case_or_space_variant_in_the_registry_is_the_one_canonical_directory(
    base: Path, symbol: str, canonical: str
) -> None:
    """As the data sources do, a symbol argument is canonicalised: `reliance` is RELIANCE's
    production, never a second directory; as a partition key the variant is refused (above)."""
    assert registry.production_dir(base, symbol) == base / "production" / canonical
    if canonical == "RELIANCE":
        record = registry.promote(base, symbol, f"RELIANCE|{WINDOW}", "PROMOTE", GATES)
        assert record.symbol == "RELIANCE"
        assert registry.current(base, "RELIANCE") == record == registry.current(base, symbol)
        assert registry.history(base, symbol)[0]["symbol"] == "RELIANCE"
        assert registry.load_current_model(base, symbol) == {"student": 1}
        assert [p.name for p in (base / "production").iterdir()] == ["RELIANCE"]
    else:
        assert registry.current(base, symbol) is None
        assert registry.history(base, symbol) == []
        assert not (base / "production").exists()


def test_a_symbol_at_the_length_limit_is_promoted(tmp_path: Path) -> None:
    base, symbol = tmp_path / "models", "Y" * MAX_SYMBOL_LENGTH
    _materialise(ArtifactStore(base), f"{symbol}|{WINDOW}")
    registry.promote(base, symbol, f"{symbol}|{WINDOW}", "PROMOTE", GATES)
    assert registry.load_current_model(base, symbol) == {"student": 1}


# --- the registry: symbolic links -----------------------------------------------------------------


def _promoted(base: Path) -> Path:
    registry.promote(base, "RELIANCE", f"RELIANCE|{WINDOW}", "PROMOTE", GATES)
    return base / "production" / "RELIANCE"


def _all_symbol_calls() -> dict[str, Any]:
    return {k: v for k, v in _registry_calls("RELIANCE").items() if k not in ("newest_student_of_config",)}


@pytest.mark.parametrize("linked", ["production", "production/RELIANCE"])
def test_a_production_directory_replaced_by_a_link_outside_is_never_written_through(
    base: Path, outside: Path, linked: str
) -> None:
    root = _promoted(base)
    os.rename(base / linked, base.parent / "moved")
    (base / linked).symlink_to(outside, target_is_directory=True)
    before_outside, before_base = _tree(outside), _tree(base)
    for name, call in _all_symbol_calls().items():
        with pytest.raises(UnsafePathError) as caught:
            call(base)
        message = str(caught.value)
        assert "production model of RELIANCE" in message, name
        assert f"{base / linked} is a symbolic link to {os.path.realpath(outside)} (outside" in message, name
    assert _tree(outside) == before_outside
    assert _tree(base) == before_base
    assert root.is_symlink() or root.parent.is_symlink()


@pytest.mark.parametrize("entry", ["current", "archive", "history.jsonl", ".lock", ".pending.json"])
def test_an_entry_of_a_production_directory_replaced_by_a_link_is_refused(
    base: Path, outside: Path, entry: str
) -> None:
    root = _promoted(base)
    registry.promote(base, "RELIANCE", f"RELIANCE|{WINDOW}", "PROMOTE", GATES)  # a no-op
    target = outside / entry
    if (root / entry).exists():
        os.rename(root / entry, target)  # moved out, a link left in its place
    else:
        target.write_text("{}\n")
    (root / entry).symlink_to(target)
    before = _tree(outside)
    for name, call in _all_symbol_calls().items():
        with pytest.raises(UnsafePathError, match=f"{entry} is a symbolic link to"):
            call(base)
        assert name
    assert _tree(outside) == before


def test_an_archive_replaced_by_a_link_is_not_rolled_back_to(base: Path, outside: Path) -> None:
    root = _promoted(base)
    _materialise(ArtifactStore(base), "RELIANCE|2023-07-01", seed=2)
    registry.promote(base, "RELIANCE", "RELIANCE|2023-07-01", "PROMOTE", GATES)
    [archive_id] = registry.archives(base, "RELIANCE")
    os.rename(root / "archive" / archive_id, outside / archive_id)
    (root / "archive" / archive_id).symlink_to(outside / archive_id, target_is_directory=True)
    before_outside, before_root = _tree(outside), _tree(root)
    for to in (None, archive_id):
        with pytest.raises(UnsafePathError, match=f"{archive_id} is a symbolic link to"):
            registry.rollback(base, "RELIANCE", to)
    assert _tree(outside) == before_outside
    assert _tree(root) == before_root
    assert registry.current(base, "RELIANCE").partition_key == "RELIANCE|2023-07-01"


def test_a_source_partition_replaced_by_a_link_is_not_promoted(base: Path, outside: Path) -> None:
    os.rename(_partition(base), outside / "partition")
    _partition(base).symlink_to(outside / "partition", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="is a symbolic link to"):
        registry.promote(base, "RELIANCE", f"RELIANCE|{WINDOW}", "PROMOTE", GATES)
    assert not (base / "production").exists()


@pytest.mark.parametrize(
    "journal",
    [
        {"staging": "../../../outside", "archive_id": None, "restored_from": None},
        {"staging": ".staging-x", "archive_id": "../../../../outside", "restored_from": None},
        {"staging": ".staging-x", "archive_id": None, "restored_from": "/tmp"},
    ],
)
def test_a_journal_naming_a_path_outside_its_directory_is_not_followed(
    base: Path, outside: Path, journal: dict[str, Any]
) -> None:
    """Recovery removes and renames what the journal names; a journal that names anything but an
    entry of the production directory (tampered with) is refused before anything is touched."""
    root = _promoted(base)
    (root / ".staging-x").mkdir()
    entry = {"action": "promote", "symbol": "RELIANCE", "from": None, "to": f"RELIANCE|{WINDOW}"}
    (root / ".pending.json").write_text(json.dumps({**journal, "history": entry}))
    before_outside, before_base = _tree(outside), _tree(base)
    with pytest.raises(RegistryError, match=r"which is not an entry of .*; refusing to follow it"):
        registry.current(base, "RELIANCE")
    assert _tree(outside) == before_outside
    assert _tree(base) == before_base


# --- the registry's read of a partition: one committed version ------------------------------------


def test_a_promotion_never_pairs_a_student_with_the_teacher_of_another_commit(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The student and the teacher are read under separate locks; a teacher re-committed between the
    two reads used to be promoted beside the student of the earlier version (a pair that never
    existed in the partition). The registry now checks that the partition still holds exactly what
    it read, and reads again if not."""
    store, key = ArtifactStore(base), f"RELIANCE|{WINDOW}"
    read, reads = ArtifactStore.read, []

    def racing_read(self: ArtifactStore, partition_key: str, codec: Any, asset: str) -> Any:
        value = read(self, partition_key, codec, asset)
        reads.append(asset)
        if asset == "student_model" and len(reads) == 1:
            # another run re-materialises the teacher and the student between the two reads
            _materialise(store, key, seed=2)
        return value

    monkeypatch.setattr(ArtifactStore, "read", racing_read)
    record = registry.promote(base, "RELIANCE", key, "PROMOTE", GATES)
    partition = _partition(base)
    current = base / "production" / "RELIANCE" / "current"
    assert json.loads((current / "teacher_metadata.json").read_text())["seed"] == 2
    assert registry.load_current_model(base, "RELIANCE") == {"student": 2}  # was seed 1's: a mix
    for name, rel in {**registry._STUDENT_FILES, **registry._TEACHER_FILES}.items():
        assert (current / name).read_bytes() == (partition / rel).read_bytes(), name
    assert reads == ["student_model", "teacher_model", "student_model", "teacher_model"]
    assert record.files == json.loads((current / "promotion.json").read_text())["files"]


def test_a_partition_that_keeps_changing_while_read_is_not_promoted(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, key = ArtifactStore(base), f"RELIANCE|{WINDOW}"
    read, seeds = ArtifactStore.read, iter(range(2, 100))

    def racing_read(self: ArtifactStore, partition_key: str, codec: Any, asset: str) -> Any:
        value = read(self, partition_key, codec, asset)
        if asset == "student_model":  # the student just read is replaced before the teacher is read
            store.write(key, codec_for("student_model"), _student(next(seeds)))
        return value

    monkeypatch.setattr(ArtifactStore, "read", racing_read)
    with pytest.raises(RegistryError, match="changed while its student and teacher were read, 3 times"):
        registry.promote(base, "RELIANCE", key, "PROMOTE", GATES)
    assert not (base / "production").exists()


# --- property: any text at all -------------------------------------------------------------------

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    given = None


if given is not None:

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        st.one_of(
            st.text(max_size=40),
            st.text(alphabet=st.sampled_from("A.-_/\\|&.\x00 Zаz\u200d\uff21"), max_size=40),
        )
    )
    def test_any_text_is_refused_or_becomes_one_directory_directly_in_the_store(
        tmp_path: Path, symbol: str
    ) -> None:
        """Whatever the text: the store names one entry of base_dir for it, or refuses it with the
        project's own error; the registry names one entry of base/production, or refuses."""
        store = ArtifactStore(tmp_path)
        try:
            directory = store.partition_dir(f"{symbol}|2023-01-01")
        except ValueError:  # InvalidSymbolError, or a key with no symbol left of the '|'
            pass
        else:
            assert directory.parent == tmp_path
            assert directory.name == f"{symbol}_2023-01-01_to_2023-06-30"
            assert symbol.isascii() and symbol == symbol.strip().upper()
            assert len(directory.name.encode()) <= 255
        try:
            root = registry.production_dir(tmp_path, symbol)
        except InvalidSymbolError:
            pass
        else:
            assert root.parent == tmp_path / "production" and root.name == symbol.strip().upper()
        assert list(tmp_path.iterdir()) == []

else:

    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_any_text_is_refused_or_becomes_one_directory_directly_in_the_store() -> None:
        pass
