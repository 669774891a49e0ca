"""The production registry: which student serves each symbol, what it replaced, and how to undo it.

`base_dir` is the artifacts location, a local directory or an object-store URL (`s3://`, `gs://`,
`az://`, `memory://`), as `io_manager.open_store` takes it. The decisions (what may be promoted,
what is archived under which id, what a rollback restores, when a demotion is stale) are the same
on both; only how one symbol's production state is stored and changed differs (`_Production`).

On a local disk, under `<ARTIFACTS_DIR>/production/<SYMBOL>/`:

    current/                the promoted student, self-contained so it survives re-materialisation
        student_model.pkl   copies of the partition's student/ files
        metadata.json
        metrics.json
        teacher_metadata.json   copy of the partition's teacher metadata.json
        promotion.json      who, what, why, when and which configuration (see `PromotionRecord`)
        checksums.json      sha256 of every file above
    archive/<id>/           earlier `current/` directories, byte for byte;
                            id = `<UTC archival time YYYYMMDDTHHMMSSZ>_<window>`, sortable
    history.jsonl           one JSON line per promote/rollback/demote

A new `current/` is built in a staging directory and swapped in with renames under a lock; a
journal (`.pending.json`) written before the first rename lets the next call (or the failing call
itself) undo a half-done swap, so `current/` is never half-written.

On object storage, `<location>/production/<SYMBOL>/` is one `object_store.VersionedTree` whose
files are the same names: `current/<name>`, `archive/<id>/<name>`, `history.jsonl` (no
checksums.json: the manifest records every file's sha256, and reads are verified against it).
Promote, rollback and demote are each one commit: archiving `current/` re-keys the same objects
to `archive/<id>/` (nothing is copied), and history.jsonl is rewritten with the new line. A writer
that loses the race to another re-runs its checks on the newer version, so neither change is lost.

A demotion (`demote`, requested by the `model_decay` sensor) archives `current/` without a
successor, so the symbol has no production model; it stays in force until a student of a newer
window than the demoted one is promoted, or a person rolls back (`active_demotion`).

Sources are read through the artifact store's verified `read` (`open_store`), so they are verified
exactly as the IO manager verifies them. Plain Python: no Dagster context is needed.

Names and paths: every symbol argument is validated (and canonicalised) and every partition key
must name a canonical symbol and a window's first day, whoever passes them; locally, `production/`,
the symbol's directory and its entries are never symbolic links, and the journal may only name
entries of its own directory. A student and its teacher metadata are promoted only as one
committed version of their partition held them.

A briefing judges one configuration (teacher + student hyper-parameters and label definition, named
by the `config_id` the student recorded); `newest_student_of_config` and `promote(config_id=...)`
make sure production only ever receives a student of the configuration that was judged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from upath import UPath

from sensequant_assets import locks
from sensequant_assets.io_manager import (
    CHECKSUMS,
    ArtifactError,
    Codec,
    UnsafePathError,
    inside,
    open_store,
    sha256_bytes,
    verified_bytes,
)
from sensequant_assets.object_store import (
    FileRef,
    GoneObjectError,
    MissingObjectError,
    Version,
    VersionedTree,
    is_object_location,
    open_root,
)
from sensequant_assets.partitions import split_key, window_bounds
from sensequant_assets.sources.symbols import InvalidSymbolError, key_symbol_problem, validate_symbol

__all__ = [
    "PROMOTE",
    "PromotionRecord",
    "PromotionRefused",
    "RegistryError",
    "RollbackError",
    "StudentChoice",
    "active_demotion",
    "archives",
    "current",
    "demote",
    "history",
    "load_current_model",
    "newest_student_of_config",
    "production_dir",
    "promote",
    "rollback",
    "student_config_id",
]

PROMOTE = "PROMOTE"
DEMOTE = "demote"  # the history action of a demotion
PRODUCTION = "production"
CURRENT = "current"
ARCHIVE = "archive"
HISTORY = "history.jsonl"
PROMOTION = "promotion.json"
MODEL_FILE = "student_model.pkl"
CONFIG_ID = "config_id"  # the key under which a student's metadata.json records its configuration id
_JOURNAL = ".pending.json"
_LOCK = ".lock"
_STAGING_PREFIX = ".staging-"
_TS_FORMAT = "%Y%m%dT%H%M%SZ"
_WINDOW = re.compile(r"\d{4}-\d{2}-\d{2}")
_READ_ATTEMPTS = 3  # reads of a partition's student and teacher that another commit may interleave
_GC_RETRIES = 3  # re-reads of a newer version when an object vanished under a reader (collected)

# current/<name> <- partition/<rel>; the student files and the teacher metadata are read in two
# verified passes so an error names the asset the bad file belongs to.
_STUDENT_FILES = {
    MODEL_FILE: "student/student_model.pkl",
    "metadata.json": "student/metadata.json",
    "metrics.json": "student/metrics.json",
}
_TEACHER_FILES = {"teacher_metadata.json": "metadata.json"}

T = TypeVar("T")
AnyPath = Path | UPath


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message says why and what is available."""


class PromotionRefused(RegistryError):
    """The briefing did not say PROMOTE (or the request is inconsistent), so nothing was written."""


class RollbackError(RegistryError):
    """There is nothing to roll back to, or the requested archive does not exist or is corrupt."""


@dataclass(frozen=True)
class PromotionRecord:
    """The content of a production model's `promotion.json`, plus where that model now lives."""

    symbol: str
    partition_key: str
    source: str
    decision: str
    gates: Any
    promoted_at: str
    files: dict[str, str]
    directory: AnyPath = field(compare=False)  # a UPath on object storage
    config_id: str | None = None  # the configuration the student recorded (None: trained before ids)

    def to_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "partition_key": self.partition_key,
            "source": self.source,
            "decision": self.decision,
            "gates": self.gates,
            "promoted_at": self.promoted_at,
            "files": dict(self.files),
            CONFIG_ID: self.config_id,
        }


@dataclass(frozen=True)
class StudentChoice:
    """The student `newest_student_of_config` picked, and the newer ones it passed over and why."""

    partition_key: str | None
    passed_over: tuple[tuple[str, str], ...] = ()  # (partition key, reason), newest first


# --- paths and small helpers -----------------------------------------------------------------------


def _key(partition_key: str, symbol: str | None = None, *, aligned: bool = True) -> tuple[str, str]:
    """(symbol, window) of a partition key whose symbol is canonical (and is `symbol`, if given).

    `aligned`: the window must be the first day of a window under the current settings (a key
    that names a directory); a key recorded earlier (under another SENSEQUANT_WINDOW_MONTHS) need
    only be a date, as when a production model is demoted."""
    try:
        key_symbol, window = split_key(partition_key)
        if aligned and window_bounds(window)[0].isoformat() != window:
            raise ValueError(f"{window!r} is not the first day of a window")
        date.fromisoformat(window)
    except ValueError as exc:
        raise RegistryError(
            f"partition {partition_key!r} is not a partition key SYMBOL|YYYY-MM-DD of a window: {exc}"
        ) from exc
    if (problem := key_symbol_problem(key_symbol)) is not None:
        raise InvalidSymbolError(f"partition {partition_key!r}: {problem}")
    if symbol is not None and key_symbol != symbol:
        raise PromotionRefused(f"partition {partition_key!r} belongs to {key_symbol}, not {symbol}")
    return key_symbol, window


def _local_base(base_dir: str | Path) -> Path:
    """The local artifacts directory `base_dir` names (a path or a `file://` URL)."""
    return open_store(base_dir).base_dir


def production_dir(base_dir: str | Path, symbol: str) -> AnyPath:
    """`<base_dir>/production/<SYMBOL>` (a UPath on object storage), after validating the symbol
    (it becomes a path component, or a key prefix).

    A symbol argument is canonicalised, as the data sources do (`reliance` is RELIANCE's one
    directory, never a second); a partition key names a directory of the store, so its symbol
    must already be canonical (`_key`).

    On a local disk neither that directory nor the entries the registry writes in it may be
    symbolic links (UnsafePathError): a `production/` or `production/<SYMBOL>/` replaced by a link
    to another directory would otherwise be written through. Object storage has no links.
    """
    symbol = validate_symbol(symbol)
    if is_object_location(base_dir):
        return open_root(str(base_dir)) / PRODUCTION / symbol
    base = _local_base(base_dir)
    root = base / PRODUCTION / symbol
    for path in (root, *(root / name for name in (CURRENT, ARCHIVE, HISTORY, _LOCK, _JOURNAL))):
        inside(base, path, f"production model of {symbol}")
    return root


def _entry(root: Path, name: Any, under: str = "") -> Path:
    """`root / under / name` for a name the journal recorded, which must be a plain entry there."""
    directory = root / under if under else root
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise RegistryError(
            f"{root / _JOURNAL} names {name!r}, which is not an entry of {directory}; refusing to "
            "follow it (inspect the journal, then remove it)"
        )
    return directory / name


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def _utc(now: datetime | None) -> datetime:
    """Registry times are UTC; a naive `now` is taken as UTC rather than local time."""
    now = now or datetime.now(UTC)
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    return now.replace(microsecond=0)


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fsync_dir(path: Path) -> None:
    """Make renames and new entries in `path` durable, so the journal's ordering holds after a crash.

    Windows cannot open a directory as a file (PermissionError); NTFS journals its metadata itself."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync one file (the copy step; tests patch it to simulate a crash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _rename(src: Path, dst: Path) -> None:
    """One step of a swap (tests patch it to simulate a crash between renames)."""
    os.rename(src, dst)


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp")
    _write_file(tmp, _json_bytes(obj))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise registry changes of one symbol across processes (CLI, Dagster job, sensor)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / _LOCK).open("a") as fh, locks.locked(fh):
        yield


def _read_verified(directory: Path, rel: str) -> bytes:
    """Read one file of a registry directory after checking it against that directory's checksums."""
    sums_path = directory / CHECKSUMS
    try:
        sums = json.loads(sums_path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{sums_path} is missing; refusing to trust {directory}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{sums_path} is corrupt (not valid JSON): {exc}") from exc
    return verified_bytes(directory, rel, sums)


def _verify_dir(directory: Path) -> None:
    """Every file recorded in `checksums.json` is present and intact (before restoring an archive)."""
    sums_path = directory / CHECKSUMS
    try:
        recorded = json.loads(sums_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{sums_path} is missing or corrupt: {exc}") from exc
    for rel in recorded:
        _read_verified(directory, rel)


def _parse_record(raw_bytes: bytes, directory: AnyPath) -> PromotionRecord:
    """A `promotion.json` (already verified) as the record of the model held in `directory`."""
    raw = json.loads(raw_bytes)
    return PromotionRecord(
        symbol=raw["symbol"],
        partition_key=raw["partition_key"],
        source=raw["source"],
        decision=raw["decision"],
        gates=raw.get("gates"),
        promoted_at=raw["promoted_at"],
        files=dict(raw.get("files", {})),
        directory=directory,
        config_id=raw.get(CONFIG_ID),
    )


def _record_from(directory: Path) -> PromotionRecord:
    return _parse_record(_read_verified(directory, PROMOTION), directory)


def _existing_record(directory: Path) -> PromotionRecord | None:
    """The record of the model being replaced; a damaged one must not block replacing it."""
    if not directory.is_dir():
        return None
    try:
        return _record_from(directory)
    except (ArtifactError, KeyError, TypeError, ValueError):
        return None


def _window_of(record: PromotionRecord | None) -> str:
    """The window part of an archive id; 'unknown' when the archived model's record is unreadable."""
    if record is None:
        return "unknown"
    try:
        window = split_key(record.partition_key)[1]
    except ValueError:
        return "unknown"
    return window if _WINDOW.fullmatch(window) else "unknown"  # it becomes a directory name


def _list_archives(root: Path) -> list[str]:
    archive = root / ARCHIVE
    if not archive.is_dir():
        return []
    return sorted(p.name for p in archive.iterdir() if p.is_dir() and not p.name.startswith("."))


def _new_archive_id(existing: Sequence[str], when: datetime, window: str) -> str:
    """Sortable by archival order: the timestamp is bumped past the newest existing id if needed."""
    if existing:
        try:
            newest = datetime.strptime(existing[-1].split("_", 1)[0], _TS_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            newest = None
        if newest is not None and when <= newest:
            when = newest + timedelta(seconds=1)
    return f"{when.strftime(_TS_FORMAT)}_{window}"


def _history_line(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, default=str) + "\n"


def _append_history(root: Path, entry: Mapping[str, Any]) -> None:
    """Append one line; a torn last line (crash mid-append) is cut off first so the file stays JSONL."""
    path = root / HISTORY
    line = _history_line(entry)
    with path.open("a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(0)
            content = f.read()
            if not content.endswith(b"\n"):
                f.truncate(content.rfind(b"\n") + 1)
                f.seek(0, os.SEEK_END)
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


def _last_history_line(root: Path) -> str | None:
    path = root / HISTORY
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    return lines[-1] if lines else None


# --- the swap and its recovery ---------------------------------------------------------------------


def _recover(root: Path) -> None:
    """Finish or undo what a crashed promote/rollback left behind, using the journal.

    Before the new `current/` is in place the change is undone (previous `current/` and any consumed
    archive are put back); once it is in place the change is completed (its history line appended).
    Staging directories without a journal are half-built and simply removed.
    """
    journal_path = root / _JOURNAL
    if journal_path.is_file():
        try:
            journal = json.loads(journal_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            journal = None  # torn journal: written before any rename, so nothing was moved yet
        if journal is not None:
            staging = _entry(root, journal["staging"]) if journal.get("staging") else None
            cur = root / CURRENT
            archived = _entry(root, journal["archive_id"], ARCHIVE) if journal.get("archive_id") else None
            restored = (
                _entry(root, journal["restored_from"], ARCHIVE) if journal.get("restored_from") else None
            )
            if journal["history"].get("action") == DEMOTE:
                # One rename (current -> archive): done iff current is gone and the archive exists.
                done = not cur.exists() and archived is not None and archived.exists()
                entry = json.dumps(journal["history"], sort_keys=True, default=str)
                if done and _last_history_line(root) != entry:
                    _append_history(root, journal["history"])
            elif staging is not None and staging.exists():
                # The new current was not swapped in: undo in reverse order.
                if not cur.exists() and archived is not None and archived.exists():
                    _rename(archived, cur)
                if restored is not None and not restored.exists():
                    _rename(staging, restored)
                else:
                    shutil.rmtree(staging, ignore_errors=True)
            elif restored is not None and restored.exists():
                pass  # crashed before the first rename of a rollback: nothing moved
            elif cur.exists():
                entry = json.dumps(journal["history"], sort_keys=True, default=str)
                if _last_history_line(root) != entry:
                    _append_history(root, journal["history"])
        journal_path.unlink(missing_ok=True)
        _fsync_dir(root)
    with contextlib.suppress(OSError):
        (root / ARCHIVE).rmdir()  # only succeeds if an undone swap left it empty
    for leftover in root.glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for tmp in root.glob("*.tmp"):
        tmp.unlink(missing_ok=True)


def _swap(root: Path, staging: Path, journal: dict[str, Any], restored_from: Path | None = None) -> None:
    """Install `staging` (or the archive `restored_from`, via `staging`) as `current/`, archiving the old.

    Each step is a rename; the journal is on disk before the first one, and any failure is undone
    on the spot by `_recover` (which a later call would run anyway after a hard crash).
    """
    cur = root / CURRENT
    _write_json_atomic(root / _JOURNAL, journal)
    try:
        if restored_from is not None:
            _rename(restored_from, staging)
        if cur.exists():
            (root / ARCHIVE).mkdir(exist_ok=True)
            _rename(cur, root / ARCHIVE / journal["archive_id"])
        _rename(staging, cur)
        _fsync_dir(root)
        _append_history(root, journal["history"])
        (root / _JOURNAL).unlink()
        _fsync_dir(root)
    except BaseException:
        _recover(root)
        raise


def _history_entry(
    action: str,
    symbol: str,
    frm: str | None,
    to: str | None,
    at: datetime,
    decision: str,
    reason: str,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "action": action,
        "symbol": symbol,
        "from": frm,
        "to": to,
        "at": _iso(at),
        "decision": decision,
        "reason": reason,
        **extra,
    }


# --- one symbol's production state, on a local disk or on object storage ---------------------------


class _Production(Protocol):
    """One symbol's production state as the registry's decisions see it; only storage differs.

    The public functions run their decisions (a "body") against it inside `_transaction`; the
    three changes (`install`, `restore`, `retire`) each archive `current/` under `archive_id`
    (None: there is no `current/`) and append `entry` to the history, as one change.
    """

    current_dir: AnyPath

    def has_current(self) -> bool: ...

    def current(self) -> PromotionRecord | None:
        """The record of `current/` (None: there is none); a damaged one raises ArtifactError."""

    def previous(self) -> PromotionRecord | None:
        """The record of the model about to be replaced; None if damaged, so it can be replaced."""

    def read_current(self, name: str) -> bytes:
        """One file of `current/`, verified."""

    def archives(self) -> list[str]: ...

    def history(self) -> list[dict[str, Any]]: ...

    def archived(self, archive_id: str) -> PromotionRecord:
        """The record of an archive after verifying every file in it (ArtifactError if not)."""

    def install(
        self, files: Mapping[str, bytes], promotion: bytes, archive_id: str | None, entry: dict[str, Any]
    ) -> None:
        """`files` plus `promotion` become `current/`."""

    def restore(self, target_id: str, archive_id: str | None, entry: dict[str, Any]) -> None:
        """The archive `target_id` becomes `current/` (and is no longer an archive)."""

    def retire(self, archive_id: str, entry: dict[str, Any]) -> None:
        """`current/` is archived with no successor."""


class _LocalProduction:
    """`production/<SYMBOL>/` on a local disk; used under the symbol's lock after `_recover`, and
    each change is applied (staged, journaled, swapped in with renames) on the spot."""

    def __init__(self, base: Path, root: Path) -> None:
        self.base, self.root = base, root
        self.current_dir = root / CURRENT

    def has_current(self) -> bool:
        return self.current_dir.exists()

    def current(self) -> PromotionRecord | None:
        return _record_from(self.current_dir) if self.current_dir.exists() else None

    def previous(self) -> PromotionRecord | None:
        return _existing_record(self.current_dir)

    def read_current(self, name: str) -> bytes:
        return _read_verified(self.current_dir, name)

    def archives(self) -> list[str]:
        return _list_archives(self.root)

    def history(self) -> list[dict[str, Any]]:
        return _read_history(self.root)

    def _archive_dir(self, archive_id: str) -> Path:
        return inside(self.base, self.root / ARCHIVE / archive_id, f"production model of {self.root.name}")

    def archived(self, archive_id: str) -> PromotionRecord:
        target = self._archive_dir(archive_id)
        _verify_dir(target)
        return _record_from(target)

    def install(
        self, files: Mapping[str, bytes], promotion: bytes, archive_id: str | None, entry: dict[str, Any]
    ) -> None:
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.root))
        try:
            for name, data in files.items():
                _write_file(staging / name, data)
            _write_file(staging / PROMOTION, promotion)
            checksums = {**{n: sha256_bytes(d) for n, d in files.items()}, PROMOTION: sha256_bytes(promotion)}
            _write_file(staging / CHECKSUMS, _json_bytes(dict(sorted(checksums.items()))))
            _fsync_dir(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        journal = {"staging": staging.name, "archive_id": archive_id, "restored_from": None, "history": entry}
        _swap(self.root, staging, journal)

    def restore(self, target_id: str, archive_id: str | None, entry: dict[str, Any]) -> None:
        staging = self.root / f"{_STAGING_PREFIX}rollback-{target_id}"
        journal = {
            "staging": staging.name,
            "archive_id": archive_id,
            "restored_from": target_id,
            "history": entry,
        }
        _swap(self.root, staging, journal, restored_from=self._archive_dir(target_id))

    def retire(self, archive_id: str, entry: dict[str, Any]) -> None:
        root = self.root
        _write_json_atomic(root / _JOURNAL, {"staging": None, "archive_id": archive_id, "history": entry})
        try:
            (root / ARCHIVE).mkdir(exist_ok=True)
            _rename(self.current_dir, root / ARCHIVE / archive_id)
            _fsync_dir(root)
            _append_history(root, entry)
            (root / _JOURNAL).unlink()
            _fsync_dir(root)
        except BaseException:
            _recover(root)
            raise


class _ObjectProduction:
    """`production/<SYMBOL>/` on object storage: one version of its `VersionedTree`.

    Reads are verified against the version's manifest. A change is not written here: it becomes
    `change`, the next version's files, which `_transaction` commits; objects that stay (an
    archived `current/`, a restored archive) are carried over as the same `FileRef`s.
    """

    def __init__(self, tree: VersionedTree, version: Version | None, root: UPath) -> None:
        self.tree, self.version, self.root = tree, version, root
        self.current_dir = root / CURRENT
        self.files: dict[str, FileRef] = dict(version.files) if version else {}
        self.change: dict[str, bytes | FileRef] | None = None

    def _under(self, prefix: str) -> dict[str, str]:
        """{name: rel} of the files below `prefix/`."""
        return {rel[len(prefix) + 1 :]: rel for rel in self.files if rel.startswith(f"{prefix}/")}

    def _read(self, rel: str) -> bytes:
        if self.version is None:
            raise MissingObjectError(f"missing file {self.root}/{rel} (nothing committed)")
        return self.tree.read(self.version, rel)

    def _record(self, prefix: str, directory: UPath) -> PromotionRecord:
        return _parse_record(self._read(f"{prefix}/{PROMOTION}"), directory)

    def has_current(self) -> bool:
        return bool(self._under(CURRENT))

    def current(self) -> PromotionRecord | None:
        return self._record(CURRENT, self.current_dir) if self.has_current() else None

    def previous(self) -> PromotionRecord | None:
        try:
            return self.current()
        except (ArtifactError, KeyError, TypeError, ValueError):
            return None

    def read_current(self, name: str) -> bytes:
        return self._read(f"{CURRENT}/{name}")

    def archives(self) -> list[str]:
        return sorted({rel.split("/")[1] for rel in self.files if rel.startswith(f"{ARCHIVE}/")})

    def _history_bytes(self) -> bytes:
        return self._read(HISTORY) if HISTORY in self.files else b""

    def history(self) -> list[dict[str, Any]]:
        return _parse_history(self._history_bytes().decode(), self.root / HISTORY)

    def archived(self, archive_id: str) -> PromotionRecord:
        prefix = f"{ARCHIVE}/{archive_id}"
        for rel in self._under(prefix).values():
            self._read(rel)
        return self._record(prefix, self.root / ARCHIVE / archive_id)

    def _changed(self, drop: Sequence[str], archive_id: str | None, entry: dict[str, Any]) -> dict[str, Any]:
        """The files without those below `drop` prefixes, `current/` re-keyed to `archive_id`, and
        the history with `entry` appended."""
        files: dict[str, bytes | FileRef] = {
            rel: ref for rel, ref in self.files.items() if not any(rel.startswith(f"{p}/") for p in drop)
        }
        if archive_id is not None:
            for name, rel in self._under(CURRENT).items():
                files[f"{ARCHIVE}/{archive_id}/{name}"] = self.files[rel]
        files[HISTORY] = self._history_bytes() + _history_line(entry).encode()
        return files

    def install(
        self, files: Mapping[str, bytes], promotion: bytes, archive_id: str | None, entry: dict[str, Any]
    ) -> None:
        new = self._changed([CURRENT], archive_id, entry)
        new.update({f"{CURRENT}/{name}": data for name, data in files.items()})
        new[f"{CURRENT}/{PROMOTION}"] = promotion
        self.change = new

    def restore(self, target_id: str, archive_id: str | None, entry: dict[str, Any]) -> None:
        target = self._under(f"{ARCHIVE}/{target_id}")
        new = self._changed([CURRENT, f"{ARCHIVE}/{target_id}"], archive_id, entry)
        new.update({f"{CURRENT}/{name}": self.files[rel] for name, rel in target.items()})
        self.change = new

    def retire(self, archive_id: str, entry: dict[str, Any]) -> None:
        self.change = self._changed([CURRENT], archive_id, entry)


def _transaction(
    base_dir: str | Path,
    symbol: str,
    body: Callable[[_Production], T],
    *,
    absent: Callable[[], T] | None = None,
) -> T:
    """Run `body` against `symbol`'s newest production state and make its change durable.

    `absent`: what to return (or raise) instead when nothing was ever promoted for `symbol`, so a
    read or a no-op creates nothing. Local: under the symbol's lock after `_recover`, once. Object
    storage: `body` runs on the newest version and its change is committed as the next one; if
    another writer committed first, `body` runs again on that version (its checks re-made). A
    body that changes nothing, or raises, commits nothing.
    """
    root = production_dir(base_dir, symbol)
    if not isinstance(root, UPath):  # a local directory (production_dir gives object storage a UPath)
        local = Path(root)
        if absent is not None and not local.is_dir():
            return absent()
        with _locked(local):
            _recover(local)
            return body(_LocalProduction(_local_base(base_dir), local))

    tree = VersionedTree(root)
    outcome: list[T] = []
    seen: list[int | None] = []

    def build(version: Version | None) -> dict[str, bytes | FileRef] | None:
        outcome.clear()
        seen[:] = [version.seq if version else None]
        if version is None and absent is not None:
            outcome.append(absent())
            return None
        if version is not None and not version.files:
            # Every registry version holds history.jsonl: an empty one is an unreadable manifest
            # that a commit would build on as if empty, dropping the history and the archives.
            tree.version(version.seq)  # raises CorruptObjectError naming it
            raise RegistryError(f"{root}: version {version.seq} holds no files; refusing to build on it")
        state = _ObjectProduction(tree, version, root)
        outcome.append(body(state))
        return state.change

    for attempt in range(_GC_RETRIES):
        try:
            tree.commit(build, meta={"symbol": root.name})
            return outcome[0]
        except GoneObjectError:
            # An object of the version read was collected after newer commits: read the newest.
            newest = tree.latest()
            if attempt + 1 == _GC_RETRIES or newest is None or [newest.seq] == seen:
                raise
    raise AssertionError("unreachable")


# --- public API ------------------------------------------------------------------------------------


def _verified(files: Mapping[str, str]) -> Codec:
    """A read-only codec returning the raw bytes of `files` (name -> path in the partition), verified."""
    return Codec(owns=(), dump=lambda _: {}, load=lambda read: {n: read(r) for n, r in files.items()})


def _source_files(store: Any, partition_key: str) -> dict[str, bytes]:
    """The files `current/` will hold, read through the store's verified reads, all from one
    committed version of the partition.

    The student and the teacher are read separately (so an error names the asset), so a commit in
    between (a re-materialised teacher) could pair the student of one version with the teacher
    metadata of another. Afterwards the partition must still hold exactly the bytes read, checked
    on one committed version; if a commit intervened they are read again.
    """
    for _ in range(_READ_ATTEMPTS):
        student = store.read(partition_key, _verified(_STUDENT_FILES), "student_model")
        teacher = store.read(partition_key, _verified(_TEACHER_FILES), "teacher_model")
        files = {**student, **teacher}
        paths = {**_STUDENT_FILES, **_TEACHER_FILES}
        if store.holds(partition_key, {paths[name]: sha256_bytes(data) for name, data in files.items()}):
            return files
    raise RegistryError(
        f"partition {partition_key} changed while its student and teacher were read, "
        f"{_READ_ATTEMPTS} times (another run is committing it); promote again once it has finished"
    )


def _config_id_in(metadata_json: bytes, partition_key: str) -> str | None:
    """The `config_id` of a student's metadata.json (already verified against its checksum)."""
    try:
        metadata = json.loads(metadata_json)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"student metadata.json of {partition_key} is not valid JSON: {exc}") from exc
    value = metadata.get(CONFIG_ID) if isinstance(metadata, dict) else None
    return None if value is None else str(value)


def student_config_id(base_dir: str | Path, partition_key: str) -> str | None:
    """The configuration id recorded by the student of `partition_key` (None: trained before ids).

    Read through the store's verified reads: a missing or corrupt file raises ArtifactError.
    """
    _key(partition_key)
    files = {"metadata.json": _STUDENT_FILES["metadata.json"]}
    raw = open_store(base_dir).read(partition_key, _verified(files), "student_model")
    return _config_id_in(raw["metadata.json"], partition_key)


def _symbol_of(partition_key: str) -> str | None:
    try:
        return split_key(partition_key)[0]
    except ValueError:
        return None  # not a key of any symbol


def _window_key(partition_key: str) -> str:
    return split_key(partition_key)[1]


def newest_student_of_config(
    base_dir: str | Path, symbol: str, partition_keys: Iterable[str], config_id: str
) -> StudentChoice:
    """The newest of `symbol`'s student partitions whose recorded configuration is `config_id`.

    `partition_keys` are the materialised `student_model` partitions (any symbols). Newer partitions
    of another configuration, or whose files cannot be read, are passed over and named with the reason;
    `partition_key` is None when no partition matches.
    """
    symbol = validate_symbol(symbol)
    mine = sorted((str(k) for k in partition_keys if _symbol_of(k) == symbol), key=_window_key)
    passed_over: list[tuple[str, str]] = []
    for key in reversed(mine):
        try:
            recorded = student_config_id(base_dir, key)
        except ArtifactError as exc:
            passed_over.append((key, f"unreadable: {exc}"))
            continue
        if recorded == config_id:
            return StudentChoice(key, tuple(passed_over))
        passed_over.append((key, f"configuration {recorded or 'not recorded'}"))
    return StudentChoice(None, tuple(passed_over))


def promote(
    base_dir: str | Path,
    symbol: str,
    partition_key: str,
    decision: str,
    gates: Mapping[str, Any] | Sequence[Any] | None,
    *,
    now: datetime | None = None,
    reason: str | None = None,
    config_id: str | None = None,
) -> PromotionRecord:
    """Make the student of `partition_key` the production model of `symbol`.

    Only a PROMOTE decision is accepted. Source files are verified before anything in production
    changes; the previous `current/` is archived; promoting the model that is already current (same
    partition, same bytes) changes nothing and returns its record. `config_id`: the configuration
    the briefing judged; a student that recorded another one is refused (checked on the very bytes
    that are copied). The student's recorded id goes into promotion.json and history.jsonl either way.
    """
    symbol = validate_symbol(symbol)
    if decision != PROMOTE:
        raise PromotionRefused(
            f"refusing to promote {symbol} ({partition_key}): the briefing's decision is {decision!r}, "
            f"only {PROMOTE!r} is promoted"
        )
    _, window = _key(partition_key, symbol)
    store = open_store(base_dir)
    source_dir = store.partition_dir(partition_key)
    files = _source_files(store, partition_key)  # raises ArtifactError naming a missing/corrupt file
    recorded = _config_id_in(files["metadata.json"], partition_key)
    if config_id is not None and recorded != config_id:
        raise PromotionRefused(
            f"refusing to promote {symbol} ({partition_key}): its student is configuration "
            f"{recorded or '(not recorded)'}, the briefing judged configuration {config_id}"
        )
    sums = {name: sha256_bytes(data) for name, data in files.items()}

    def body(state: _Production) -> PromotionRecord:
        entries = state.history()
        demotion = _last_demotion(entries)
        if demotion is not None and window <= split_key(demotion["from"])[1]:
            raise PromotionRefused(
                f"refusing to promote {symbol} ({partition_key}): production model {demotion['from']} "
                f"was demoted at {demotion['at']} ({demotion['reason']}); until a person rolls back, "
                f"only a student of a window newer than {split_key(demotion['from'])[1]} is promoted"
            )
        if partition_key in _demoted_partitions(entries):
            raise PromotionRefused(
                f"refusing to promote {symbol} ({partition_key}): this partition's student was demoted "
                "for decay; only a person can bring it back (rollback), a briefing never does"
            )
        previous = state.previous()
        if previous is not None and previous.partition_key == partition_key and previous.files == sums:
            return previous
        at = _utc(now)
        record = PromotionRecord(
            symbol=symbol,
            partition_key=partition_key,
            source=str(source_dir),
            decision=decision,
            gates=json.loads(json.dumps(gates, default=str)),  # as current() will read it back
            promoted_at=_iso(at),
            files=sums,
            directory=state.current_dir,
            config_id=recorded,
        )
        archive_id = (
            _new_archive_id(state.archives(), at, _window_of(previous)) if state.has_current() else None
        )
        entry = _history_entry(
            "promote",
            symbol,
            previous.partition_key if previous else None,
            partition_key,
            at,
            decision,
            reason or f"briefing decision {decision} for window {window}",
            archived=archive_id,
            source=str(source_dir),
            config_id=recorded,
        )
        state.install(files, _json_bytes(record.to_json()), archive_id, entry)
        return record

    return _transaction(base_dir, symbol, body)


def rollback(
    base_dir: str | Path,
    symbol: str,
    to: str | None = None,
    *,
    now: datetime | None = None,
    reason: str | None = None,
) -> PromotionRecord:
    """Restore an archived model (default: the most recently archived) as `current/`, byte for byte.

    The model it replaces is archived, so a rollback can itself be rolled back.
    """
    symbol = validate_symbol(symbol)

    def nothing_promoted() -> PromotionRecord:
        raise RollbackError(f"cannot roll back {symbol}: nothing has been promoted for it")

    def body(state: _Production) -> PromotionRecord:
        available = state.archives()
        if not available:
            raise RollbackError(f"cannot roll back {symbol}: there is no archived model to roll back to")
        target_id = available[-1] if to is None else to
        if target_id not in available:
            raise RollbackError(
                f"cannot roll back {symbol} to {to!r}: no such archive; available: {', '.join(available)}"
            )
        try:
            restored = state.archived(target_id)
        except UnsafePathError:
            raise
        except ArtifactError as exc:
            raise RollbackError(f"cannot roll back {symbol} to {target_id}: {exc}") from exc
        previous = state.previous()
        at = _utc(now)
        archive_id = _new_archive_id(available, at, _window_of(previous)) if state.has_current() else None
        entry = _history_entry(
            "rollback",
            symbol,
            previous.partition_key if previous else None,
            restored.partition_key,
            at,
            restored.decision,
            reason or f"rollback to archive {target_id}",
            archived=archive_id,
            restored=target_id,
            config_id=restored.config_id,
        )
        state.restore(target_id, archive_id, entry)
        return dataclasses.replace(restored, directory=state.current_dir)

    return _transaction(base_dir, symbol, body, absent=nothing_promoted)


def demote(
    base_dir: str | Path,
    symbol: str,
    *,
    expected: str,
    reason: str,
    expected_promoted_at: str | None = None,
    evidence: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """Stop serving `symbol`'s production model: archive `current/` (restorable with rollback).

    `expected` (and `expected_promoted_at`) name the promotion the caller judged; if production has
    moved on since (a newer promotion, a re-promotion of that window, a rollback), nothing is
    demoted and None is returned, so a stale decay verdict never removes a model it did not judge.
    Returns the history entry, whose `archived` id is the demotion's identity.
    """
    symbol = validate_symbol(symbol)
    _key(expected, symbol, aligned=False)  # what `current/` holds is the real check

    def body(state: _Production) -> dict[str, Any] | None:
        previous = state.previous()
        if previous is None or previous.partition_key != expected:
            return None
        if expected_promoted_at is not None and previous.promoted_at != expected_promoted_at:
            return None  # the same window re-promoted (new bytes) since the verdict: not judged
        at = _utc(now)
        archive_id = _new_archive_id(state.archives(), at, _window_of(previous))
        entry = _history_entry(
            DEMOTE,
            symbol,
            previous.partition_key,
            None,
            at,
            "DEMOTE",
            reason,
            archived=archive_id,
            evidence=dict(evidence or {}),
            config_id=previous.config_id,
        )
        state.retire(archive_id, entry)
        return entry

    # nothing was ever promoted: nothing to demote, nothing to create
    return _transaction(base_dir, symbol, body, absent=lambda: None)


def _demoted_partitions(entries: list[dict[str, Any]]) -> set[str]:
    """Partitions demoted and not since restored by a person's rollback (in history order)."""
    demoted: set[str] = set()
    for entry in entries:
        if entry.get("action") == DEMOTE:
            demoted.add(entry["from"])
        elif entry.get("action") == "rollback":
            demoted.discard(entry.get("to"))
    return demoted


def _last_demotion(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last history entry if it is a demotion (a later promote or rollback ends it)."""
    return entries[-1] if entries and entries[-1].get("action") == DEMOTE else None


def active_demotion(base_dir: str | Path, symbol: str) -> dict[str, Any] | None:
    """The demotion in force for `symbol` (its history entry), or None."""
    return _transaction(base_dir, symbol, lambda state: _last_demotion(state.history()), absent=lambda: None)


def current(base_dir: str | Path, symbol: str) -> PromotionRecord | None:
    """The production model's record, or None if `symbol` has never been promoted."""
    return _transaction(base_dir, symbol, lambda state: state.current(), absent=lambda: None)


def history(base_dir: str | Path, symbol: str) -> list[dict[str, Any]]:
    """Every promote/rollback/demote of `symbol`, oldest first."""
    return _transaction(base_dir, symbol, lambda state: state.history(), absent=list)


def _parse_history(text: str, path: AnyPath) -> list[dict[str, Any]]:
    entries = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{path} line {n} is not valid JSON: {exc}") from exc
    return entries


def _read_history(root: Path) -> list[dict[str, Any]]:
    path = root / HISTORY
    if not path.is_file():
        return []
    return _parse_history(path.read_text(), path)


def archives(base_dir: str | Path, symbol: str) -> list[str]:
    """Archive ids of `symbol`, oldest first (the last one is rollback's default target)."""
    return _transaction(base_dir, symbol, lambda state: state.archives(), absent=list)


def load_current_model(base_dir: str | Path, symbol: str) -> Any:
    """Unpickle the production student, only after its bytes match the recorded sha256."""
    symbol = validate_symbol(symbol)

    def nothing_promoted() -> tuple[bytes, PromotionRecord]:
        raise RegistryError(f"no production model for {symbol}: nothing has been promoted")

    def body(state: _Production) -> tuple[bytes, PromotionRecord]:
        if not state.has_current():
            raise RegistryError(f"no production model for {symbol}: {state.current_dir} does not exist")
        data = state.read_current(MODEL_FILE)
        record = state.current()
        assert record is not None
        return data, record

    data, record = _transaction(base_dir, symbol, body, absent=nothing_promoted)
    if record.files.get(MODEL_FILE) != sha256_bytes(data):
        cur = record.directory
        raise ArtifactError(f"{cur / MODEL_FILE} does not match the sha256 recorded in {cur / PROMOTION}")
    return pickle.loads(data)
