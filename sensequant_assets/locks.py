"""Whole-file locks between processes, on any platform the package runs on.

The artifact store, the production registry and the Breeze bookkeeping serialise writers (and keep
writers from swapping a directory under a reader) with a lock on a small lock file. Where `fcntl`
exists (Linux, macOS) that is `flock`: exclusive or shared, released when the file is closed or its
process dies. On Windows it is `msvcrt.locking` on the file's first byte, which has no shared mode:
a shared lock is taken exclusively there, so readers of one partition wait for each other too
(correct, only less concurrent). A platform with neither takes no lock at all and warns once:
a single process is still safe, but two processes writing the same partition or registry symbol
at the same time are not serialised.
"""

from __future__ import annotations

import contextlib
import errno
import warnings
from collections.abc import Iterator
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:  # anything but Windows
    msvcrt = None  # type: ignore[assignment]

_warned = False


@contextlib.contextmanager
def locked(fh: IO[Any], shared: bool = False) -> Iterator[None]:
    """Hold an exclusive (or, where the platform has them, shared) lock on the open file `fh`."""
    if fcntl is not None:
        # Looked up on the module at each call, so tests that wrap `fcntl.flock` see every lock.
        fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    elif msvcrt is not None:
        _msvcrt_lock(fh)
        try:
            yield
        finally:
            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        _warn_unlocked()
        yield


def _msvcrt_lock(fh: IO[Any]) -> None:
    """Lock byte 0, waiting as long as it takes (`LK_LOCK` gives up after ten one-second tries)."""
    busy = {errno.EDEADLK, getattr(errno, "EDEADLOCK", errno.EDEADLK), errno.EACCES}
    while True:
        fh.seek(0)
        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
            return
        except OSError as exc:
            if exc.errno not in busy:
                raise


def _warn_unlocked() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            "no file locking on this platform (neither fcntl nor msvcrt): concurrent processes writing "
            "the same artifacts are not serialised",
            RuntimeWarning,
            stacklevel=3,
        )
