"""The one place that knows the artifact layout.

Every partition `SYMBOL|YYYY-MM-DD` owns `<base_dir>/<SYMBOL>_<start>_to_<end>/`. Each output is written
into a staging directory, merged with the files already there (hard links), and swapped into place, so a
crash never leaves a directory that looks complete but is not. Every file written is recorded with its
sha256 in `checksums.json`, which is verified before anything is read (and before any pickle is loaded).
An output covering several partitions is a dict keyed by partition key.

In-flight swaps live in `<base_dir>/.txn/` under names fixed by the partition (`<dir>.staging`,
`<dir>.old`; one writer per partition at a time, under `<base_dir>/.locks/<dir>.lock`), so a write or a
read checks a couple of exact paths and never lists `base_dir`, whatever the number of partitions.
`.txn` is on the same filesystem as the partition directories, so both renames stay atomic. Every
directory whose name starts with a dot is bookkeeping, not a partition.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from dagster import (
    ConfigurableIOManager,
    ConfigurableResource,
    DagsterInvariantViolationError,
    InputContext,
    MetadataValue,
    OutputContext,
)

from sensequant_assets import locks
from sensequant_assets.artifacts import BriefingArtifact, EvaluationArtifact, StudentArtifact, TeacherArtifact
from sensequant_assets.partitions import split_key, window_bounds
from sensequant_assets.sources.symbols import InvalidSymbolError, key_symbol_problem

CHECKSUMS = "checksums.json"
TXN_DIR = ".txn"  # in-flight (or crashed) swaps only; never a partition
LOCKS_DIR = ".locks"
# Older versions staged and backed up beside the partitions: `.staging-<dir>-<random>`, `.old-<dir>-<hex>`.
_LEGACY_PREFIXES = (".staging-", ".old-")
_DIR_RE = re.compile(r"^(?P<symbol>.+)_(?P<start>\d{4}-\d{2}-\d{2})_to_(?P<end>\d{4}-\d{2}-\d{2})$")


class ArtifactError(RuntimeError):
    """A partition's artifacts are missing or corrupt; the message names the file and the cause."""


class MissingArtifactError(ArtifactError):
    """The artifact was never written (not materialised, or skipped), as opposed to corrupt."""


class SupersededError(ArtifactError):
    """A commit found the files its value was derived from replaced by another run's; nothing written."""


class UnsafePathError(ArtifactError):
    """A path of the store would lead outside it, or through a symbolic link inside it."""


def inside(base_dir: Path, path: Path, what: str) -> Path:
    """`path`, if it lies below `base_dir` with no symbolic link on the way (existing parts only).

    The base itself may be a link (the user's choice of disk); below it, a link (a partition or
    production directory replaced by one) would be written or read through: refused, naming it.
    """
    base, path = Path(base_dir), Path(path)
    try:
        parts = path.relative_to(base).parts
    except ValueError:
        raise UnsafePathError(f"{what}: {path} is outside the artifacts directory {base}") from None
    step = base
    for part in parts:
        if part in (".", ".."):
            raise UnsafePathError(f"{what}: {path} leaves the artifacts directory {base} ('{part}')")
        step = step / part
        if step.is_symlink():
            target = os.path.realpath(step)
            where = "inside" if Path(target).is_relative_to(os.path.realpath(base)) else "outside"
            raise UnsafePathError(
                f"{what}: {step} is a symbolic link to {target} ({where} the artifacts directory "
                f"{base}); the store never writes or reads through links: move the link away and "
                "re-materialise (or restore the real directory in its place)"
            )
    return path


def partition_dir_name(symbol: str, start: date, end: date) -> str:
    return f"{symbol}_{start.isoformat()}_to_{end.isoformat()}"


def parse_partition_dir_name(name: str) -> tuple[str, date, date]:
    """Inverse of `partition_dir_name`."""
    m = _DIR_RE.match(name)
    if not m:
        raise ValueError(f"{name!r} is not an artifact directory name SYMBOL_YYYY-MM-DD_to_YYYY-MM-DD")
    return m["symbol"], date.fromisoformat(m["start"]), date.fromisoformat(m["end"])


def partition_dir_name_of(partition_key: str) -> str:
    """The partition's directory name, for a canonical symbol only: keys added outside the CLI (the
    UI's "Add partition", the API) are not validated by Dagster, and a symbol must never become
    a path outside the store nor a second directory for another spelling of the same symbol."""
    symbol, window_key = split_key(partition_key)
    if (problem := key_symbol_problem(symbol)) is not None:
        raise InvalidSymbolError(f"partition {partition_key!r}: {problem}")
    start, end = window_bounds(window_key)
    if start.isoformat() != window_key:  # Dagster maps any date to a window: another's directory
        raise ValueError(f"partition {partition_key!r}: {window_key!r} is not the first day of a window")
    return partition_dir_name(symbol, start, end)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- codecs: how one asset's object becomes files (relative names) and back ---------------------


@dataclass(frozen=True)
class Codec:
    """Serialises one asset's value. `owns` are the relative paths (or `dir/` prefixes) it replaces."""

    owns: tuple[str, ...]
    dump: Callable[[Any], dict[str, bytes]]
    load: Callable[[Callable[[str], bytes]], Any]
    location: str | None = None  # for unpartitioned assets: a fixed directory under base_dir

    def owns_path(self, rel: str) -> bool:
        return any(rel == o or (o.endswith("/") and rel.startswith(o)) for o in self.owns)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf)
    return buf.getvalue()


def _csv_gz_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    # mtime=0 keeps the gzip header, and so the checksum, reproducible.
    df.to_csv(buf, index=False, compression={"method": "gzip", "mtime": 0})
    return buf.getvalue()


def _dump_teacher(art: TeacherArtifact) -> dict[str, bytes]:
    model = pickle.dumps(art.model, protocol=pickle.HIGHEST_PROTOCOL)
    metadata = {**art.metadata, "model_sha256": sha256_bytes(model)}
    imp = art.importance.to_csv(index=False).encode()
    return {"model.pkl": model, "metadata.json": _json_bytes(metadata), "feature_importance.csv": imp}


def _load_teacher(read: Callable[[str], bytes]) -> TeacherArtifact:
    metadata = json.loads(read("metadata.json"))
    return TeacherArtifact(
        model=pickle.loads(read("model.pkl")),
        metadata=metadata,
        importance=pd.read_csv(io.BytesIO(read("feature_importance.csv"))),
    )


def _dump_student(art: StudentArtifact) -> dict[str, bytes]:
    model = pickle.dumps(art.model, protocol=pickle.HIGHEST_PROTOCOL)
    metadata = {**art.metadata, "model_sha256": sha256_bytes(model)}
    return {
        "student/student_model.pkl": model,
        "student/metrics.json": _json_bytes(art.metrics),
        "student/metadata.json": _json_bytes(metadata),
    }


def _load_student(read: Callable[[str], bytes]) -> StudentArtifact:
    return StudentArtifact(
        model=pickle.loads(read("student/student_model.pkl")),
        metrics=json.loads(read("student/metrics.json")),
        metadata=json.loads(read("student/metadata.json")),
    )


def _dump_evaluation(art: EvaluationArtifact) -> dict[str, bytes]:
    files = {
        "evaluation/metrics.json": _json_bytes(art.metrics),
        "evaluation/predictions.parquet": _parquet_bytes(art.predictions),
        "evaluation/equity.csv": art.equity.to_csv(index=True).encode(),
        "evaluation/equity.png": art.equity_png,
    }
    if art.reliability_png:
        files["evaluation/reliability.png"] = art.reliability_png
    return files


def _load_evaluation(read: Callable[[str], bytes]) -> EvaluationArtifact:
    try:
        reliability = read("evaluation/reliability.png")
    except MissingArtifactError:
        # Evaluations stored before the reliability diagram existed are complete without it; a
        # file that is present but corrupt or unrecorded still fails (ArtifactError).
        reliability = b""
    return EvaluationArtifact(
        metrics=json.loads(read("evaluation/metrics.json")),
        predictions=pd.read_parquet(io.BytesIO(read("evaluation/predictions.parquet"))),
        equity=pd.read_csv(io.BytesIO(read("evaluation/equity.csv")), index_col=0),
        equity_png=read("evaluation/equity.png"),
        reliability_png=reliability,
    )


BRIEFING_CACHE = ("cache/statistics.json", "cache/excess_returns.npz")


def _plain_number(value: Any) -> Any:
    """numpy scalars as the Python numbers they stand for (ints stay ints), for JSON."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dump_briefing(art: BriefingArtifact) -> dict[str, bytes]:
    """Latest plus one dated copy of each file, so earlier briefings stay readable; and the cache.

    The cache (each symbol's statistics under the digest of their inputs) lets the next briefing
    recompute only the symbols whose evaluations changed. Its two files name the digest of every
    entry, so a crash between their writes only invalidates entries, never mixes them.
    """
    stamp = art.generated_at.replace(":", "").replace("-", "")
    body = _json_bytes({"generated_at": art.generated_at, "symbols": art.symbols})
    md = art.markdown.encode()
    files = {
        "promotion_briefing.md": md,
        "promotion_briefing.json": body,
        f"history/promotion_briefing_{stamp}.md": md,
        f"history/promotion_briefing_{stamp}.json": body,
    }
    if art.cache:
        entries = {s: {k: v for k, v in e.items() if k != "excess"} for s, e in art.cache.items()}
        arrays = {f"{e['digest']}": np.asarray(e["excess"], dtype="float64") for e in art.cache.values()}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        files[BRIEFING_CACHE[0]] = json.dumps(entries, default=_plain_number).encode()
        files[BRIEFING_CACHE[1]] = buffer.getvalue()
    return files


def _load_briefing(read: Callable[[str], bytes]) -> BriefingArtifact:
    body = json.loads(read("promotion_briefing.json"))
    return BriefingArtifact(
        generated_at=body["generated_at"],
        symbols=body["symbols"],
        markdown=read("promotion_briefing.md").decode(),
        cache=_load_briefing_cache(read),
    )


def _load_briefing_cache(read: Callable[[str], bytes]) -> dict[str, dict[str, Any]]:
    """The previous briefing's per-symbol cache; anything missing, unreadable or unmatched is dropped
    (it is derived data: the cost of losing it is a recomputation)."""
    try:
        entries = json.loads(read(BRIEFING_CACHE[0]))
        with np.load(io.BytesIO(read(BRIEFING_CACHE[1])), allow_pickle=False) as arrays:
            excess = {name: arrays[name] for name in arrays.files}
    except (ArtifactError, OSError, ValueError, KeyError):
        return {}
    return {s: {**e, "excess": excess[e["digest"]]} for s, e in entries.items() if e.get("digest") in excess}


CODECS: dict[str, Codec] = {
    "market_bars": Codec(
        owns=("bars.parquet",),
        dump=lambda df: {"bars.parquet": _parquet_bytes(df)},
        load=lambda read: pd.read_parquet(io.BytesIO(read("bars.parquet"))),
    ),
    "teacher_model": Codec(
        owns=("model.pkl", "metadata.json", "feature_importance.csv"),
        dump=_dump_teacher,
        load=_load_teacher,
    ),
    "teacher_labels": Codec(
        owns=("labels.csv.gz",),
        dump=lambda df: {"labels.csv.gz": _csv_gz_bytes(df)},
        load=lambda read: pd.read_csv(io.BytesIO(read("labels.csv.gz")), compression="gzip"),
    ),
    "student_model": Codec(
        owns=("student/",),
        dump=_dump_student,
        load=_load_student,
    ),
    "student_evaluation": Codec(
        owns=("evaluation/",),
        dump=_dump_evaluation,
        load=_load_evaluation,
    ),
    "promotion_briefing": Codec(
        owns=(),
        dump=_dump_briefing,
        load=_load_briefing,
        location="briefings",
    ),
}


# --- the store: directories, atomic commits, verified reads -------------------------------------

# base_dirs (absolute) this process has swept for leftovers of the old layout; see _sweep_legacy.
_SWEPT_BASE_DIRS: set[str] = set()
_SWEEP_LOCK = threading.Lock()


@dataclass(frozen=True)
class ArtifactStore:
    """Plain-Python layout and integrity logic, usable without a Dagster context."""

    base_dir: Path
    fork_safe: ClassVar[bool] = True  # plain files: forked workers may read (`LazyPartitions.forkable`)

    def partition_dir(self, partition_key: str) -> Path:
        path = self.base_dir / partition_dir_name_of(partition_key)
        return inside(self.base_dir, path, f"partition {partition_key!r}")

    def partition_key(self, directory: Path) -> str:
        symbol, start, _ = parse_partition_dir_name(Path(directory).name)
        return f"{symbol}|{start.isoformat()}"

    @property
    def txn_dir(self) -> Path:
        return self.base_dir / TXN_DIR

    def _staging(self, final: Path) -> Path:
        return self.txn_dir / f"{final.name}.staging"

    def _backup(self, final: Path) -> Path:
        return self.txn_dir / f"{final.name}.old"

    @contextlib.contextmanager
    def _locked(self, name: str, shared: bool = False) -> Iterator[None]:
        """Serialise commits to one partition directory across processes (exclusive), and keep a
        commit from swapping the directory while a reader verifies and reads it (shared).

        A reader never creates anything: without a lock file (no commit has ever taken it, so
        there is no older version to mix with) or without access to it (a read-only store) it
        reads unlocked.
        """
        lock_dir = self.base_dir / LOCKS_DIR
        try:
            if not shared:
                lock_dir.mkdir(parents=True, exist_ok=True)
            fh = (lock_dir / f"{name}.lock").open("r" if shared else "a")
        except OSError:
            if not shared:
                raise
            yield
            return
        with fh, locks.locked(fh, shared=shared):
            yield

    def _recover(self, final: Path) -> None:
        """Undo what a crash between the two renames of a swap, or mid-staging, left behind.

        Call with the partition's lock held. Only exact paths are checked, nothing is listed.
        """
        backup = self._backup(final)
        if backup.exists():
            if final.exists():
                shutil.rmtree(backup, ignore_errors=True)  # the swap completed; only the cleanup did not
            else:
                os.rename(backup, final)  # crashed between the renames: the old directory is complete
        staging = self._staging(final)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

    def _sweep_legacy(self) -> None:
        """Recover leftovers of the old layout (`.old-<dir>-*`, `.staging-<dir>-*` in `base_dir`).

        Finding them takes a listing of `base_dir`, which costs time in proportion to the number of
        partitions, so it runs once per process and base_dir (not per write, as the old layout did).
        New code never creates such names, so one sweep finds every legacy leftover, except those of
        an older version still running beside this one at the same time (not supported; the next
        process to start sweeps them).
        """
        key = os.path.abspath(self.base_dir)
        if key in _SWEPT_BASE_DIRS:
            return
        with _SWEEP_LOCK:
            if key in _SWEPT_BASE_DIRS:
                return
            by_name: dict[str, list[Path]] = {}
            try:
                with os.scandir(self.base_dir) as entries:
                    for entry in entries:
                        if not entry.name.startswith(_LEGACY_PREFIXES):
                            continue
                        name = entry.name.split("-", 1)[1].rpartition("-")[0]
                        if _DIR_RE.match(name):
                            by_name.setdefault(name, []).append(Path(entry.path))
            except FileNotFoundError:
                pass  # no base_dir yet, so nothing left behind
            for name, leftovers in sorted(by_name.items()):
                with self._locked(name):  # an older process may still be writing this partition
                    self._recover_legacy(self.base_dir / name, leftovers)
            _SWEPT_BASE_DIRS.add(key)

    @staticmethod
    def _recover_legacy(final: Path, leftovers: list[Path]) -> None:
        backups = sorted(p for p in leftovers if p.name.startswith(".old-") and p.exists())
        if backups and not final.exists():
            os.rename(backups[-1], final)
            backups = backups[:-1]
        stagings = [p for p in leftovers if p.name.startswith(".staging-")]
        for leftover in [*backups, *stagings]:
            shutil.rmtree(leftover, ignore_errors=True)

    def write(
        self,
        partition_key: str,
        codec: Codec,
        obj: Any,
        *,
        together: Sequence[tuple[Codec, Any]] = (),
        written: dict[str, str] | None = None,
        requires: Mapping[str, str] | None = None,
    ) -> Path:
        """Write one asset's files for one partition, atomically; return the partition directory.

        `together`: other assets' (codec, value) committed in the same swap (a multi-asset's
        outputs that must never be mixed with another run's). `written` receives the checksums
        of every file this commit wrote. `requires`: checksums of files the value was derived
        from; if the partition no longer holds them when the commit takes its lock (another run
        committed its own since), nothing is written and SupersededError is raised.
        """
        final = self.partition_dir(partition_key)
        codecs = [(codec, obj), *together]
        for bookkeeping in (self.txn_dir, self.base_dir / LOCKS_DIR):
            inside(self.base_dir, bookkeeping, f"partition {partition_key!r}")
        self.txn_dir.mkdir(parents=True, exist_ok=True)
        self._sweep_legacy()
        with self._locked(final.name):
            self._recover(final)
            if requires:
                try:
                    current = self._checksums(final)
                except ArtifactError:  # unreadable: nothing to compare (the input read was verified)
                    current = dict(requires)
                if any(current.get(rel) != digest for rel, digest in requires.items()):
                    raise SupersededError(
                        f"{final}: {', '.join(sorted(requires))} replaced by another commit"
                    )
            staging = self._staging(final)
            staging.mkdir()
            try:
                files = {rel: data for c, value in codecs for rel, data in c.dump(value).items()}
                checksums = {}
                for rel, data in files.items():
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with target.open("wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    checksums[rel] = sha256_bytes(data)
                if written is not None:
                    written.update(checksums)
                if final.exists():
                    try:
                        old_sums = self._checksums(final)
                    except ArtifactError:  # unreadable: this commit's files are the only ones vouched for
                        old_sums = {}
                    for src in final.rglob("*"):
                        rel = src.relative_to(final).as_posix()
                        if src.is_dir() or rel == CHECKSUMS or any(c.owns_path(rel) for c, _ in codecs):
                            continue
                        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                        os.link(src, staging / rel)
                        if rel in old_sums:
                            checksums[rel] = old_sums[rel]
                (staging / CHECKSUMS).write_bytes(_json_bytes(dict(sorted(checksums.items()))))
                if final.exists():
                    backup = self._backup(final)
                    os.rename(final, backup)
                    os.rename(staging, final)
                    shutil.rmtree(backup, ignore_errors=True)
                else:
                    os.rename(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return final

    def write_state(self, name: str, data: bytes, keep: int = 5) -> str:
        """Store a sensor's state under `.state/`, content-addressed; return the key to read it by.

        A sensor keeps only this key in its Dagster cursor (which Dagster copies into every tick
        row), so a large state costs one file per change, not a copy per tick. The newest `keep`
        versions stay, so the key of a tick Dagster did not commit (a daemon crash after this
        write) still finds the state the next tick starts from.
        """
        directory = inside(self.base_dir, self.base_dir / ".state", f"sensor state {name!r}")
        directory.mkdir(parents=True, exist_ok=True)
        key = sha256_bytes(data)[:20]
        target = directory / f"{name}-{key}"
        others = [p for p in directory.glob(f"{glob.escape(name)}-*") if p != target]
        stamps = {p: p.stat().st_mtime_ns for p in others}
        newest = max(stamps.values(), default=0)
        stamp = max(time.time_ns(), newest + 1)  # strictly newest, whatever the clock's granularity
        if target.exists():  # unchanged (most ticks), or back to an earlier state: nothing to write,
            if target.stat().st_mtime_ns <= newest:  # but it must be the newest (`latest_state`)
                os.utime(target, ns=(stamp, stamp))
            return key
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=directory)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        os.utime(target, ns=(stamp, stamp))
        for old in sorted(others, key=stamps.__getitem__)[: max(0, len(others) - keep + 1)]:
            old.unlink(missing_ok=True)
        return key

    def read_state(self, name: str, key: str) -> bytes | None:
        """The state stored under `key` by `write_state`, or None if it is gone."""
        try:
            directory = inside(self.base_dir, self.base_dir / ".state", f"sensor state {name!r}")
            return (directory / f"{name}-{key}").read_bytes()
        except FileNotFoundError:
            return None

    def latest_state(self, name: str) -> bytes | None:
        """The newest state `write_state` stored under `name`, or None if there is none.

        Where a sensor resumes when Dagster hands it no cursor although it stored a state before:
        Dagster commits a tick's cursor after the tick's effects (symbols registered), so a daemon
        killed in between repeats the sensor's first tick without a cursor, which would otherwise
        take what that tick did as the starting point (and lose, say, a new symbol's history).
        """
        directory = inside(self.base_dir, self.base_dir / ".state", f"sensor state {name!r}")
        stamps = {}
        for path in directory.glob(f"{glob.escape(name)}-*"):
            with contextlib.suppress(FileNotFoundError):  # pruned by a concurrent write
                stamps[path] = path.stat().st_mtime_ns
        for path in sorted(stamps, key=stamps.__getitem__, reverse=True):
            with contextlib.suppress(FileNotFoundError):
                return path.read_bytes()
        return None

    def write_fixed(self, codec: Codec, obj: Any) -> Path:
        """Write an unpartitioned asset's files under `codec.location`, each replaced atomically."""
        assert codec.location, "write_fixed needs a codec with a location"
        directory = self.base_dir / codec.location
        for rel, data in codec.dump(obj).items():
            target = directory / rel
            inside(self.base_dir, target.parent, codec.location).mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return directory

    def read_fixed(self, codec: Codec, asset: str) -> Any:
        assert codec.location, "read_fixed needs a codec with a location"
        directory = self.base_dir / codec.location

        def read_file(rel: str) -> bytes:
            path = directory / rel
            inside(self.base_dir, path.parent, asset)
            if not path.is_file():
                raise MissingArtifactError(f"{asset} has not been materialised: missing file {path}")
            return path.read_bytes()

        try:
            return codec.load(read_file)
        except ArtifactError:
            raise
        except Exception as exc:
            raise ArtifactError(f"{asset} in {directory} could not be read: {exc}") from exc

    def owned_checksums(self, partition_key: str, codec: Codec) -> dict[str, str]:
        """The recorded sha256 of the files `codec` owns in a partition ({} if none: not written,
        or a key whose symbol can have no directory)."""
        try:
            directory = self._recovered(self.partition_dir(partition_key))
        except InvalidSymbolError:
            return {}
        with self._locked(directory.name, shared=True):
            sums = self._checksums(directory)
        return {rel: digest for rel, digest in sorted(sums.items()) if codec.owns_path(rel)}

    def holds(self, partition_key: str, sums: Mapping[str, str]) -> bool:
        """Whether the partition's committed files have exactly these checksums (read under the
        shared lock, so not halfway through another commit)."""
        directory = self._recovered(self.partition_dir(partition_key))
        with self._locked(directory.name, shared=True):
            current = self._checksums(directory)
        return all(current.get(rel) == digest for rel, digest in sums.items())

    def _recovered(self, directory: Path) -> Path:
        """`directory`, put back first if a crash between the two renames of a swap left it missing."""
        if not directory.is_dir():
            self._sweep_legacy()
            if self._backup(directory).exists():
                with self._locked(directory.name):
                    self._recover(directory)
        return directory

    def _checksums(self, directory: Path) -> dict[str, str]:
        path = directory / CHECKSUMS
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{path} is corrupt (not valid JSON): {exc}") from exc

    def read(self, partition_key: str, codec: Codec, asset: str) -> Any:
        """Load one asset's value for one partition, verifying every file's sha256 first."""
        directory = self._recovered(self.partition_dir(partition_key))

        def read_file(rel: str) -> bytes:
            return verified_bytes(directory, rel, sums, who=f"{asset} for partition {partition_key}: ")

        try:
            # The checksums and the files from one version of the directory: a swap between
            # reading the one and the other was a false "corrupt" (or "missing") error.
            with self._locked(directory.name, shared=True):
                if not directory.is_dir():
                    raise MissingArtifactError(
                        f"{asset} for partition {partition_key} has not been materialised: "
                        f"{directory} does not exist"
                    )
                sums = self._checksums(directory)
                return codec.load(read_file)
        except MissingArtifactError:
            raise
        except ArtifactError as exc:  # corrupt: say how to replace it
            raise ArtifactError(f"{exc}; {REMATERIALISE.format(asset=asset, key=partition_key)}") from exc
        except Exception as exc:  # a verified file that still fails to parse: say which asset/partition
            raise ArtifactError(
                f"{asset} for partition {partition_key} in {directory} could not be read: {exc}; "
                + REMATERIALISE.format(asset=asset, key=partition_key)
            ) from exc


REMATERIALISE = (
    "re-materialise {asset} for {key} to replace it (Materialize that partition in the UI, or "
    "`sensequant train` for its symbol and window)"
)


def verified_bytes(directory: Path, rel: str, sums: dict[str, str], *, who: str = "") -> bytes:
    """A file's bytes, only if they match the sha256 recorded for it in `sums`.

    The one integrity check of the project (partition directories and the production registry);
    `who` prefixes the messages, e.g. with the asset and partition being read.
    """
    path = directory / rel
    if not path.is_file():
        raise MissingArtifactError(f"{who}missing file {path}")
    data = path.read_bytes()
    expected = sums.get(rel)
    if expected is None:
        raise ArtifactError(
            f"{who}{path} has no recorded checksum in {directory / CHECKSUMS}; refusing to trust it"
        )
    actual = sha256_bytes(data)
    if actual != expected:
        raise ArtifactError(
            f"{who}{path} is corrupt (sha256 {actual[:12]}... != recorded {expected[:12]}...)"
        )
    return data


def open_store(location: str | Path) -> Any:
    """The artifact store at `location`: `ArtifactStore` for a local directory (a path or
    `file://`), `object_store.ObjectArtifactStore` for object storage (`s3://`, `gs://`, `az://`,
    `memory://`). Both offer the same methods and the same guarantees."""
    import fsspec
    from fsspec.core import split_protocol

    from sensequant_assets.object_store import ObjectArtifactStore, is_object_location

    protocol = split_protocol(str(location))[0]
    if is_object_location(location):
        try:
            fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as exc:
            raise ArtifactError(
                f"artifacts location {location} (SENSEQUANT_ARTIFACTS_DIR) cannot be reached: {exc} "
                "(s3:// needs s3fs: pip install 'sensequant[s3]'; gs:// gcsfs; az:// adlfs)"
            ) from None
        return ObjectArtifactStore(str(location))
    return ArtifactStore(Path(fsspec.core.strip_protocol(str(location)) if protocol else location))


_ABSENT = object()
OBJECT_STORE_THREADS = 16  # requests in flight per step on object storage (each waits on the network)


def per_partition(store: Any, fn: Callable[[str], Any], keys: Sequence[str]) -> list[Any]:
    """`[fn(key) for key in keys]` (keys of partitions, or symbols), with the requests of an object
    store in flight together (each is a network round trip; one after another, a 500-partition
    batch waits minutes). A local store stays serial: its commits take one lock per partition and
    its reads are local."""
    if not getattr(store, "concurrent", False) or len(keys) < 2:
        return [fn(key) for key in keys]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(OBJECT_STORE_THREADS, len(keys))) as pool:
        return list(pool.map(fn, keys))


class LazyPartitions(Mapping[str, Any]):
    """An input of many partitions whose values load (verified) only when looked up.

    Holds the partitions that have the asset's files, each with an `identity`: the sha256 of its
    files' recorded checksums, which changes whenever any of them is rewritten. A consumer that
    caches what it derives from a partition (the briefing) reads only those whose identity moved.
    """

    def __init__(self, store: Any, codec: Codec, asset: str, keys: list[str]) -> None:
        self._store, self._codec, self._asset = store, codec, asset
        self._identity: dict[str, str] = {}
        owned_by_key = per_partition(store, lambda key: store.owned_checksums(key, codec), keys)
        for key, owned in zip(keys, owned_by_key, strict=True):
            if owned:
                self._identity[key] = sha256_bytes(_json_bytes(owned))

    def identity(self, key: str) -> str:
        return self._identity[key]

    @property
    def forkable(self) -> bool:
        """Whether forked workers may look values up: yes on a local store (plain files); not on an
        object store, whose client and its pooled connections would be shared with the parent."""
        return getattr(self._store, "fork_safe", False)

    def __getitem__(self, key: str) -> Any:
        if key not in self._identity:
            raise KeyError(key)
        return self._store.read(key, self._codec, self._asset)

    def __iter__(self) -> Iterator[str]:
        return iter(self._identity)

    def __len__(self) -> int:
        return len(self._identity)


def codec_for(asset: str) -> Codec:
    try:
        return CODECS[asset]
    except KeyError:
        raise ArtifactError(f"no artifact format is defined for asset {asset!r}") from None


# (base_dir, run id, step key) -> {partition: checksums of the labels committed with its teacher}:
# what the step's teacher_labels output has to find still in place; cleared by that output.
_PAIRED: dict[tuple[str, str, str], dict[str, dict[str, str]]] = {}


class ArtifactsResource(ConfigurableResource):
    """Where the artifacts live: a local directory or an object-store URL (`SENSEQUANT_ARTIFACTS_DIR`).

    The one seam to the store: the IO manager, the registry's callers (the jobs, `production_models`,
    the symbol pages) and the sensors all receive this resource, so moving the artifacts to object
    storage is one setting, and a test points everything at its own store with one value.
    """

    location: str

    @classmethod
    def from_env(cls) -> ArtifactsResource:
        """The deployment's store: SENSEQUANT_ARTIFACTS_DIR (its default when unset)."""
        from sensequant_assets.settings import env

        return cls(location=env("SENSEQUANT_ARTIFACTS_DIR"))

    def store(self) -> Any:
        """`ArtifactStore` (local) or `ObjectArtifactStore` (object storage), same methods."""
        return open_store(self.location)


class PartitionDirIOManager(ConfigurableIOManager):
    """Dagster face of the artifact store: one partition -> the object, several -> a dict by key."""

    artifacts: ArtifactsResource

    @classmethod
    def at(cls, location: str | Path) -> PartitionDirIOManager:
        return cls(artifacts=ArtifactsResource(location=str(location)))

    @property
    def base_dir(self) -> str:
        return self.artifacts.location

    @property
    def store(self) -> Any:
        return self.artifacts.store()

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        asset = context.asset_key.to_user_string()
        codec = codec_for(asset)
        if codec.location:
            path = self.store.write_fixed(codec, obj)
            context.add_output_metadata({"path": MetadataValue.path(str(path))})
            return
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else []
        if not keys:
            raise ArtifactError(f"{asset} is stored per partition; this output has no partition")
        if len(keys) == 1:
            values = {keys[0]: obj}
        else:
            # A batch may leave out the partitions it skipped, never add others.
            if not isinstance(obj, dict) or not set(map(str, obj)) <= set(keys):
                got = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
                raise ArtifactError(
                    f"{asset}: an output covering {len(keys)} partitions must be a dict keyed by "
                    f"some of those partition keys; got {got}"
                )
            values = {str(k): v for k, v in obj.items()}
        step, superseded = self._step(context), []
        try:
            paths = per_partition(
                self.store,
                lambda k: self._commit(step, asset, codec, k, values[k], superseded),
                sorted(values),
            )
        finally:
            if asset == "teacher_labels":
                _PAIRED.pop(step, None)
        if len(paths) == 1:
            context.add_output_metadata({"path": MetadataValue.path(str(paths[0]))})
        else:
            context.add_output_metadata({"partitions_written": len(paths)})
        if superseded and len(keys) == 1 and asset == "student_model":
            # Alone, the run must not be recorded as having materialised a student it did not write.
            raise SupersededError(
                f"{asset} {keys[0]}: another run committed its own teacher after this run's student "
                f"learned from this run's teacher; the student was not written beside that run's "
                f"teacher (re-materialise {keys[0]} if this run's configuration should win)"
            )
        if superseded:
            superseded.sort()  # committed together on object storage: in any order
            shown = ", ".join(superseded[:20]) + (
                f" and {len(superseded) - 20} more" if len(superseded) > 20 else ""
            )
            what = (
                "after this run's student learned from this run's teacher; the student was not written "
                "beside that run's teacher"
                if asset == "student_model"
                else "after this run committed its pair; those directories hold that run's model and "
                "labels, consistent with each other"
            )
            context.log.warning(
                f"{asset}: another run committed its own teacher and labels for {shown} {what} "
                "(re-materialise them if this run's configuration should win)"
            )
            context.add_output_metadata({"partitions_superseded": len(superseded)})

    def _step(self, context: OutputContext) -> tuple[str, str, str]:
        try:
            return (self.base_dir, context.run_id, context.step_key)
        except DagsterInvariantViolationError:  # a context built in a test, outside any step
            return (self.base_dir, "", "")

    def _commit(
        self,
        step: tuple[str, str, str],
        asset: str,
        codec: Codec,
        key: str,
        value: Any,
        superseded: list[str],
    ) -> Path:
        """Write one partition's output. A teacher is committed with its labels in one swap; the
        labels' own output then only checks that the pair is still there. A run that committed its
        pair since leaves its own model and labels, never half of each: such a partition is noted
        in `superseded`, not failed (the rest of the batch is this run's and consistent). So is a
        student whose teacher (the model sha256 in its metadata) is no longer the partition's."""
        if asset == "teacher_model" and getattr(value, "labels", None) is not None:
            sums: dict[str, str] = {}
            labels_codec = codec_for("teacher_labels")
            path = self.store.write(key, codec, value, together=[(labels_codec, value.labels)], written=sums)
            _PAIRED.setdefault(step, {})[key] = {r: d for r, d in sums.items() if labels_codec.owns_path(r)}
            return path
        if asset == "teacher_labels" and key in _PAIRED.get(step, {}):
            if not self.store.holds(key, _PAIRED[step][key]):
                superseded.append(key)
            return self.store.partition_dir(key)
        teacher = (
            (getattr(value, "metadata", None) or {}).get("teacher") if asset == "student_model" else None
        )
        if isinstance(teacher, dict) and teacher.get("model_sha256"):
            # A student belongs beside the teacher it learned from, never beside another run's.
            try:
                return self.store.write(key, codec, value, requires={"model.pkl": teacher["model_sha256"]})
            except SupersededError:
                superseded.append(key)
                return self.store.partition_dir(key)
        return self.store.write(key, codec, value)

    def load_input(self, context: InputContext) -> Any:
        """One upstream partition -> its value; several -> a dict by partition key.

        Input metadata tunes this: `allow_missing` turns a partition that was never materialised
        into None (or leaves it out of the dict) instead of an error, and `as_dict` returns a dict
        even for a single partition. Corrupt artifacts always raise.
        """
        asset = context.asset_key.to_user_string()
        codec = codec_for(asset)
        if codec.location:
            return self.store.read_fixed(codec, asset)
        meta = context.definition_metadata or {}
        allow_missing = bool(meta.get("allow_missing"))
        as_dict = bool(meta.get("as_dict"))
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else []
        if meta.get("lazy"):  # missing partitions are left out, as with allow_missing
            return LazyPartitions(self.store, codec, asset, keys)
        store = self.store

        def read(key: str) -> Any:
            try:
                return store.read(key, codec, asset)
            except MissingArtifactError:
                if not allow_missing:
                    raise
            except InvalidSymbolError:  # never written (market_bars skips it, saying why)
                if not allow_missing:
                    raise
            return _ABSENT

        values = {
            k: v for k, v in zip(keys, per_partition(store, read, keys), strict=True) if v is not _ABSENT
        }
        if as_dict or len(keys) > 1:
            return values
        # no key: the upstream window lies outside the partitions (before the first window)
        return values.get(keys[0]) if keys else None
