"""Artifacts on object storage (`s3://`, `gs://`, `az://`, `memory://`): commits with no rename, link or lock.

An object store replaces one object atomically and can create one only if it does not exist yet
(`If-None-Match: *` on S3, `ifGenerationMatch=0` on GCS, `overwrite=False` on Azure: fsspec's
mode `"xb"`), and offers nothing else: no rename, no hard link, no lock. So every directory that
must change as a whole (a partition, a symbol's production models, the briefings, a sensor's
state) is a *versioned tree*:

    <root>/v/<txid>/<rel>               the files one commit wrote; never rewritten
                                        (txid = <UTC time YYYYMMDDTHHMMSSZ>-<random hex>)
    <root>/commits/<seq, 10 digits>.json    version <seq>: every file of the tree, each with the
                                        object that holds it (`v/<txid>/<rel>`) and its sha256

A commit uploads its new files under a fresh txid, then writes the manifest of version seq+1 with
a create-only write: that single write is the commit. A crash before it leaves an unreferenced
`v/<txid>/` prefix (garbage collected); two writers racing for the same seq cannot both win: the
loser rebuilds on the newest version and tries the next seq (or gives up, when what it derived
its files from has changed). Files a commit does not replace are carried over by reference, never
copied. Readers take the newest manifest and verify every file against its sha256, so they never
see a half-written version and never trust a corrupt byte.

After each commit the tree keeps its newest `keep` versions and removes older manifests, and every
`v/<txid>/` prefix no kept version references, once they are older than `GRACE` (an upload in
flight is younger, and so is a manifest a slow writer could otherwise re-create below the newest
version; the writer checks its own age, counted from its read of the base, before committing).
Clocks of the machines sharing a bucket must agree to well within `GRACE`.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from fsspec.core import split_protocol
from upath import UPath

from sensequant_assets.io_manager import ArtifactError, MissingArtifactError, sha256_bytes

COMMITS = "commits"
VERSIONS = "v"
MANIFEST_FORMAT = "sensequant-manifest/1"
KEEP = 3  # versions kept per tree: a reader holding an older manifest retries on the newest
GRACE = 6 * 3600.0  # seconds before an unreferenced upload prefix is garbage
COMMIT_ATTEMPTS = 50
COLLECT_EVERY = 4  # garbage is collected after every 4th version of a tree (and by `sensequant gc`)
_TXID_TIME = "%Y%m%dT%H%M%SZ"
_LOCAL_PROTOCOLS = {None, "", "file", "local"}


class ObjectStoreError(ArtifactError):
    """A versioned tree is unreadable or a commit could not land; the message names the tree."""


class CorruptObjectError(ObjectStoreError):
    """A manifest or a file does not match what the tree recorded."""


class MissingObjectError(ObjectStoreError, MissingArtifactError):
    """The tree has no version, or the version has no such file."""


class GoneObjectError(MissingObjectError):
    """An object its version names was removed: collected after newer commits (read the newest)."""


def _conditional_conflict(exc: BaseException) -> bool:
    """S3's 409 ConditionalRequestConflict: conditional writes to one key raced; retry."""
    text = f"{exc} {exc.__cause__ or ''}"
    return "ConditionalRequestConflict" in text


def is_object_location(location: str | Any) -> bool:
    """Whether `location` names object storage (a URL with a remote or in-memory protocol), not a
    local directory (a plain path, `file://`, or a Windows drive letter)."""
    protocol, _ = split_protocol(str(location))
    return protocol not in _LOCAL_PROTOCOLS


@dataclass(frozen=True)
class FileRef:
    """One file of a version: the object holding it (relative to the tree root) and its sha256."""

    object: str
    sha256: str


@dataclass(frozen=True)
class Version:
    seq: int
    files: Mapping[str, FileRef]
    meta: Mapping[str, Any] = field(default_factory=dict)
    txid: str = ""  # the commit's upload prefix; its time bounds when the manifest was made

    def checksums(self) -> dict[str, str]:
        return {rel: ref.sha256 for rel, ref in sorted(self.files.items())}


def new_txid(now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime(_TXID_TIME)
    return f"{stamp}-{secrets.token_hex(6)}"


def txid_time(txid: str) -> float | None:
    """When the txid was made (seconds since the epoch), or None for a name that is not a txid."""
    try:
        return datetime.strptime(txid.split("-", 1)[0], _TXID_TIME).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _safe_rel(rel: str, where: str) -> str:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in rel:
        raise CorruptObjectError(f"{where}: {rel!r} is not a relative file name inside the tree")
    return rel


class VersionedTree:
    """One directory on object storage whose versions are manifests (see the module docstring)."""

    def __init__(
        self, root: UPath, *, keep: int = KEEP, grace: float = GRACE, collect_every: int = COLLECT_EVERY
    ) -> None:
        self.root = root
        self.fs = root.fs
        self.path = root.path.rstrip("/")
        self.keep = keep
        self.grace = grace
        self.collect_every = collect_every

    def __repr__(self) -> str:
        return f"VersionedTree({self.root})"

    def _p(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    # --- reading -------------------------------------------------------------------------------

    def seqs(self) -> list[int]:
        """The versions whose manifests exist, oldest first."""
        try:
            names = self.fs.ls(self._p(COMMITS), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        seqs = []
        for name in names:
            stem = name.rstrip("/").rsplit("/", 1)[-1]
            if stem.endswith(".json") and stem[:-5].isdigit():
                seqs.append(int(stem[:-5]))
        return sorted(seqs)

    def version(self, seq: int) -> Version:
        path = self._p(COMMITS, f"{seq:010d}.json")
        where = f"{self.root}: manifest {COMMITS}/{seq:010d}.json"
        try:
            raw = json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            raise MissingObjectError(f"{where} does not exist (removed by a newer commit)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptObjectError(f"{where} is corrupt (not valid JSON): {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT or raw.get("seq") != seq:
            raise CorruptObjectError(f"{where} is not a {MANIFEST_FORMAT} manifest of version {seq}")
        entries, meta = raw.get("files") or {}, raw.get("meta") or {}
        if not isinstance(entries, dict) or not isinstance(meta, dict):
            raise CorruptObjectError(f"{where} is corrupt: its files and meta must be JSON objects")
        files = {}
        for rel, entry in entries.items():
            obj = entry.get("object", "") if isinstance(entry, dict) else ""
            if not isinstance(obj, str) or not obj.startswith(f"{VERSIONS}/"):
                raise CorruptObjectError(f"{where}: {rel!r} points outside {VERSIONS}/ ({obj!r})")
            files[_safe_rel(rel, where)] = FileRef(_safe_rel(obj, where), str(entry.get("sha256", "")))
        return Version(seq, files, dict(meta), str(raw.get("txid") or ""))

    def latest(self, *, unreadable_as_empty: bool = False) -> Version | None:
        """The newest version, or None if nothing was ever committed. A manifest removed between
        the listing and the read (garbage collected after newer commits) is re-listed. A newest
        manifest that is corrupt raises CorruptObjectError, or with `unreadable_as_empty` (what a
        commit builds on) stands as a version with no files: the commit replacing it vouches for
        its own files only, as a local commit over an unreadable checksums.json does."""
        for _ in range(COMMIT_ATTEMPTS):
            seqs = self.seqs()
            if not seqs:
                return None
            try:
                return self.version(seqs[-1])
            except MissingObjectError:
                continue
            except CorruptObjectError:
                if unreadable_as_empty:
                    return Version(seqs[-1], {})
                raise
        raise ObjectStoreError(f"{self.root}: no manifest could be read; commits keep replacing it")

    def read(self, version: Version, rel: str, *, who: str = "") -> bytes:
        """A file's bytes, only if they match the sha256 its version recorded."""
        ref = version.files.get(rel)
        if ref is None:
            raise MissingObjectError(f"{who}missing file {self.root}/{rel} (not in version {version.seq})")
        try:
            data = self.fs.cat_file(self._p(ref.object))
        except FileNotFoundError:
            raise GoneObjectError(
                f"{who}{self.root}/{ref.object} (file {rel} of version {version.seq}) is gone"
            ) from None
        actual = sha256_bytes(data)
        if actual != ref.sha256:
            raise CorruptObjectError(
                f"{who}{self.root}/{ref.object} ({rel}) is corrupt "
                f"(sha256 {actual[:12]}... != recorded {ref.sha256[:12]}...)"
            )
        return data

    # --- committing ------------------------------------------------------------------------------

    def commit(
        self,
        build: Callable[[Version | None], Mapping[str, bytes | FileRef] | None],
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> Version | None:
        """Commit the tree `build` returns for the newest version (None: nothing to change).

        `build` gets the newest version (None if there is none) and returns every file of the new
        version: bytes to upload, or a `FileRef` of the base version to carry over. It is called
        again on the new newest version whenever another writer won the race; anything it raises
        (a superseded commit) propagates and nothing is committed.
        """
        for attempt in range(COMMIT_ATTEMPTS):
            started = time.time()  # before the base is read: see collect_garbage
            base = self.latest(unreadable_as_empty=True)
            files = build(base)
            if files is None:
                return None
            txid = new_txid()
            refs: dict[str, FileRef] = {}
            uploads: dict[str, bytes] = {}
            for rel, value in files.items():
                _safe_rel(rel, f"{self.root}: commit")
                if isinstance(value, FileRef):
                    refs[rel] = value
                else:
                    obj = f"{VERSIONS}/{txid}/{rel}"
                    refs[rel] = FileRef(obj, sha256_bytes(value))
                    uploads[self._p(obj)] = bytes(value)
            if uploads:
                self.fs.pipe(uploads)
            seq = (base.seq if base else 0) + 1
            if time.time() - started > self.grace / 2:  # GC may judge this upload abandoned
                self._remove_prefix(txid)
                continue
            manifest = {
                "format": MANIFEST_FORMAT,
                "seq": seq,
                "parent": base.seq if base else None,
                "txid": txid,
                "committed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "meta": dict(meta or {}),
                "files": {r: {"object": f.object, "sha256": f.sha256} for r, f in sorted(refs.items())},
            }
            body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
            try:
                with self.fs.open(self._p(COMMITS, f"{seq:010d}.json"), "xb") as fh:
                    fh.write(body)
            except OSError as exc:  # FileExistsError included
                # The write may have landed although it reports failure: a retry of a PUT whose
                # answer was lost finds its own manifest (412 -> FileExistsError). Its files must
                # then stay: the manifest names them.
                # 412: the key exists, so a read finds it (give a slow store time); 409: a write to
                # the key, possibly this writer's own first attempt, is still in flight.
                exists = isinstance(exc, FileExistsError)
                outcome = self._outcome(seq, txid, patience=2.0 if exists else 0.15)
                if outcome == "ours":
                    pass
                elif outcome == "theirs" or exists or _conditional_conflict(exc):
                    # another writer committed seq first (S3 may also answer 409 to writers racing
                    # for the same key): rebuild on the newest version. Only when the manifest at
                    # seq is known to be another's are this attempt's uploads referenced by nothing;
                    # otherwise (unreadable, or not there yet) they are left to garbage collection,
                    # which removes them once unreferenced and older than the grace.
                    if outcome == "theirs":
                        self._remove_prefix(txid)
                    time.sleep(random.uniform(0.0, 0.05 * (attempt + 1)))
                    continue
                else:
                    raise ObjectStoreError(f"{self.root}: commit of version {seq} failed: {exc}") from exc
            version = Version(seq, refs, manifest["meta"], txid)
            # The commit has landed: a failing collection must not report it failed (the next
            # commit collects the garbage too). Collected every few commits, not on each: it
            # costs a few listings and reads.
            if seq % self.collect_every == 0:
                with contextlib.suppress(OSError, ArtifactError):
                    self.collect_garbage()
            return version
        raise ObjectStoreError(
            f"{self.root}: {COMMIT_ATTEMPTS} commits in a row lost the race to other writers; try again"
        )

    def _outcome(self, seq: int, txid: str, patience: float) -> str:
        """Whose manifest holds version `seq`: "ours" (txid), "theirs", or "unknown" (none within
        `patience` seconds, unreadable, or the store did not answer)."""
        deadline, pause = time.monotonic() + patience, 0.05
        while True:
            try:
                return "ours" if self.version(seq).txid == txid else "theirs"
            except MissingObjectError:  # not visible yet: the winner's write still completing
                if time.monotonic() + pause > deadline:
                    return "unknown"
                time.sleep(pause)
                pause *= 2
            except Exception:  # corrupt, or a network error: nothing can be concluded
                return "unknown"

    def _remove_prefix(self, txid: str) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.rm(self._p(VERSIONS, txid), recursive=True)

    def collect_garbage(self, now: float | None = None) -> dict[str, int]:
        """Remove manifests older than the newest `keep` once they are older than `grace`, and
        upload prefixes no kept version references that are older than `grace` (abandoned by a
        crash, or only referenced by removed versions). Returns how many of each were removed.

        A manifest is never removed younger than `grace`: a writer that read version N as the
        newest creates N+1 within `grace / 2` of that read (or gives up), so the N+1 of another
        writer, made after that read, still exists and its create-only write fails. Removing it
        sooner freed the slot: the slow writer's commit landed below the newest version, where no
        reader looks, and was lost although reported committed.
        """
        now = time.time() if now is None else now
        seqs = self.seqs()
        kept, beyond = seqs[-self.keep :], seqs[: -self.keep]
        old: list[int] = []
        for seq in beyond:  # oldest first; the first young one ends the search (the rest are newer)
            try:
                made = txid_time(self.version(seq).txid)
            except MissingObjectError:  # removed by a concurrent collection
                continue
            except CorruptObjectError:  # unreadable, and beyond keep: nothing to keep it for
                made = None
            if made is not None and now - made < self.grace:
                break
            old.append(seq)
        referenced: set[str] = set()
        unreadable = False
        for seq in kept:
            try:
                for ref in self.version(seq).files.values():
                    referenced.add(ref.object.split("/")[1])
            except MissingObjectError:  # removed by a concurrent collection: a newer one is kept
                continue
            except CorruptObjectError:  # what it references is unknown: remove no prefix this time
                unreadable = True
        if old:
            paths = [self._p(COMMITS, f"{s:010d}.json") for s in old]
            try:
                self.fs.rm(paths)
            except FileNotFoundError:  # some removed by a concurrent collection
                for path in paths:
                    with contextlib.suppress(FileNotFoundError):
                        self.fs.rm(path)
        if unreadable:
            return {"manifests": len(old), "prefixes": 0}
        try:
            prefixes = self.fs.ls(self._p(VERSIONS), detail=False, refresh=True)
        except FileNotFoundError:
            prefixes = []
        removed = 0
        for prefix in prefixes:
            txid = prefix.rstrip("/").rsplit("/", 1)[-1]
            made = txid_time(txid)
            if txid in referenced or made is None or now - made < self.grace:
                continue
            self._remove_prefix(txid)
            removed += 1
        return {"manifests": len(old), "prefixes": removed}


def open_root(location: str, **storage_options: Any) -> UPath:
    """The UPath of an object-store location; credentials and endpoints come from the usual
    environment of each filesystem (AWS_* for s3fs, GOOGLE_* for gcsfs, AZURE_* for adlfs)."""
    return UPath(location, **storage_options)


# --- the artifact store on object storage -----------------------------------------------------------

STATE = ".state"
STATE_KEEP = 5  # sensor states readable by key (as on a local disk)
_NO_REF = FileRef("", "")
STATE_FILE = "state"


@dataclass(frozen=True)
class ObjectArtifactStore:
    """`ArtifactStore`'s interface on object storage: each partition directory, each unpartitioned
    asset's location and each sensor state is a `VersionedTree` under `location`.

    Layout (next to the local one in the README): `<location>/<SYMBOL>_<start>_to_<end>/commits/`
    and `.../v/<txid>/<the local directory's relative paths>`, so a partition is found from its
    symbol and window exactly as on a local disk; the manifest plays the part of checksums.json.
    """

    location: str
    concurrent: ClassVar[bool] = True  # requests may be in flight together (`io_manager.per_partition`)
    fork_safe: ClassVar[bool] = False  # reads stay in the process that opened the client

    @property
    def base_dir(self) -> UPath:
        return open_root(self.location)

    def partition_dir(self, partition_key: str) -> UPath:
        from sensequant_assets.io_manager import partition_dir_name_of

        return self.base_dir / partition_dir_name_of(partition_key)

    def partition_key(self, directory: UPath | str) -> str:
        from sensequant_assets.io_manager import parse_partition_dir_name

        symbol, start, _ = parse_partition_dir_name(str(directory).rstrip("/").rsplit("/", 1)[-1])
        return f"{symbol}|{start.isoformat()}"

    def tree(self, partition_key: str) -> VersionedTree:
        return VersionedTree(self.partition_dir(partition_key))

    def write(
        self,
        partition_key: str,
        codec: Any,
        obj: Any,
        *,
        together: Any = (),
        written: dict[str, str] | None = None,
        requires: Mapping[str, str] | None = None,
    ) -> UPath:
        """As `ArtifactStore.write`: the codecs' files replace the ones they own, every other file
        is carried over, all in one commit; `requires` is checked against the version built on."""
        from sensequant_assets.io_manager import SupersededError

        tree = self.tree(partition_key)
        codecs = [(codec, obj), *together]
        new = {rel: data for c, value in codecs for rel, data in c.dump(value).items()}

        def build(base: Version | None) -> dict[str, bytes | FileRef]:
            current = base.files if base else {}
            # nothing committed yet holds none of them either
            if requires and any(current.get(rel, _NO_REF).sha256 != d for rel, d in requires.items()):
                raise SupersededError(
                    f"{tree.root}: {', '.join(sorted(requires))} replaced by another commit"
                )
            carried = {
                rel: ref for rel, ref in current.items() if not any(c.owns_path(rel) for c, _ in codecs)
            }
            return {**carried, **new}

        tree.commit(build, meta={"partition": partition_key})
        if written is not None:
            written.update({rel: sha256_bytes(data) for rel, data in new.items()})
        return tree.root

    def read(self, partition_key: str, codec: Any, asset: str) -> Any:
        """Load one asset's value from the partition's newest version, every file verified."""
        from sensequant_assets.io_manager import REMATERIALISE

        tree = self.tree(partition_key)
        who = f"{asset} for partition {partition_key}: "
        for attempt in range(3):
            try:
                version = tree.latest()
            except ObjectStoreError as exc:  # the manifest itself is unreadable
                raise ArtifactError(
                    f"{who}{exc}; {REMATERIALISE.format(asset=asset, key=partition_key)}"
                ) from exc
            if version is None:
                raise MissingArtifactError(
                    f"{asset} for partition {partition_key} has not been materialised: "
                    f"{tree.root} has no committed version"
                )
            try:
                return codec.load(lambda rel, v=version: tree.read(v, rel, who=who))
            except GoneObjectError:
                if attempt < 2:  # collected after newer commits: re-read on the newest version
                    continue
                raise
            except MissingArtifactError:
                raise
            except ArtifactError as exc:
                raise ArtifactError(f"{exc}; {REMATERIALISE.format(asset=asset, key=partition_key)}") from exc
            except Exception as exc:
                raise ArtifactError(
                    f"{asset} for partition {partition_key} in {tree.root} could not be read: {exc}; "
                    + REMATERIALISE.format(asset=asset, key=partition_key)
                ) from exc
        raise AssertionError("unreachable")

    def owned_checksums(self, partition_key: str, codec: Any) -> dict[str, str]:
        from sensequant_assets.sources.symbols import InvalidSymbolError

        try:
            version = self.tree(partition_key).latest()
        except InvalidSymbolError:
            return {}
        sums = version.checksums() if version else {}
        return {rel: digest for rel, digest in sums.items() if codec.owns_path(rel)}

    def holds(self, partition_key: str, sums: Mapping[str, str]) -> bool:
        version = self.tree(partition_key).latest()
        current = version.checksums() if version else {}
        return all(current.get(rel) == digest for rel, digest in sums.items())

    # --- unpartitioned assets and sensor state -----------------------------------------------------

    def write_fixed(self, codec: Any, obj: Any) -> UPath:
        """An unpartitioned asset's files, committed together (the other files carried over)."""
        tree = VersionedTree(self.base_dir / codec.location)
        new = codec.dump(obj)
        tree.commit(lambda base: {**(dict(base.files) if base else {}), **new})
        return tree.root

    def read_fixed(self, codec: Any, asset: str) -> Any:
        tree = VersionedTree(self.base_dir / codec.location)
        try:
            version = tree.latest()
        except ObjectStoreError as exc:
            raise ArtifactError(f"{asset}: {exc}; materialise {asset} again to replace it") from exc
        if version is None:
            raise MissingArtifactError(
                f"{asset} has not been materialised: {tree.root} has no committed version"
            )
        try:
            return codec.load(lambda rel: tree.read(version, rel, who=f"{asset}: "))
        except ArtifactError:
            raise
        except Exception as exc:
            raise ArtifactError(f"{asset} in {tree.root} could not be read: {exc}") from exc

    def _state_tree(self, name: str, keep: int) -> VersionedTree:
        _safe_rel(name, f"sensor state {name!r}")
        return VersionedTree(self.base_dir / STATE / name, keep=keep)

    def write_state(self, name: str, data: bytes, keep: int = STATE_KEEP) -> str:
        """As `ArtifactStore.write_state`: the key is the content's digest; the newest `keep`
        versions stay readable by key."""
        key = sha256_bytes(data)[:20]
        tree = self._state_tree(name, keep)

        def build(base: Version | None) -> dict[str, bytes] | None:
            ref = base.files.get(STATE_FILE) if base else None
            return None if ref is not None and ref.sha256.startswith(key) else {STATE_FILE: data}

        tree.commit(build)
        return key

    def read_state(self, name: str, key: str, keep: int = STATE_KEEP) -> bytes | None:
        """The state stored under `key` among the newest `keep` versions, or None if it is gone or
        unreadable (a sensor then rebuilds its state, as it does on a local disk)."""
        tree = self._state_tree(name, keep)
        for seq in reversed(tree.seqs()[-keep:]):
            with contextlib.suppress(ObjectStoreError):
                version = tree.version(seq)
                ref = version.files.get(STATE_FILE)
                if ref is not None and ref.sha256.startswith(key):
                    return tree.read(version, STATE_FILE)
        return None

    def latest_state(self, name: str) -> bytes | None:
        """The newest state, or None if there is none or it is unreadable."""
        tree = self._state_tree(name, STATE_KEEP)
        with contextlib.suppress(ObjectStoreError):
            version = tree.latest()
            if version is not None and STATE_FILE in version.files:
                return tree.read(version, STATE_FILE)
        return None

    # --- garbage collection over the whole store -----------------------------------------------------

    def trees(self) -> Iterator[VersionedTree]:
        """Every versioned tree under the location: partitions, unpartitioned assets' locations,
        each symbol's production models, each sensor state. Lists the location (a maintenance
        task, not a per-write cost)."""
        fs, base = self.base_dir.fs, self.base_dir.path.rstrip("/")

        def children(path: str) -> list[str]:
            try:
                return [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False, refresh=True)]
            except FileNotFoundError:
                return []

        for name in children(base):
            if name in (STATE, "production"):
                keep = STATE_KEEP if name == STATE else KEEP
                for inner in children(f"{base}/{name}"):
                    yield VersionedTree(self.base_dir / name / inner, keep=keep)
            else:
                yield VersionedTree(self.base_dir / name)

    def collect_garbage(self, now: float | None = None) -> dict[str, int]:
        """`VersionedTree.collect_garbage` on every tree: uploads of writers that crashed before
        their tree's next commit, and versions beyond what each tree keeps."""
        totals = {"trees": 0, "manifests": 0, "prefixes": 0}
        for tree in self.trees():
            if not tree.fs.exists(f"{tree.path}/{VERSIONS}"):
                continue
            counts = tree.collect_garbage(now)
            totals["trees"] += 1
            totals["manifests"] += counts["manifests"]
            totals["prefixes"] += counts["prefixes"]
        return totals
