"""Several of `sensequant train`'s runs at once, each in a forked child, ordered by what they read.

A UI backfill keeps two runs going on two cores (the run queue's limit): a window's evaluation runs
beside the next window's training. The command does the same with `Job`s: a job is a generator that
yields run requests and receives their results (so it can plan each request from what the previous
ones did, and retry a failed run in halves), and it starts once the jobs it reads from are done. Up to
`slots` requests are in flight, each executed by `execute` in a child forked from this process (the
definitions are already imported, so a fork costs milliseconds); the parent only plans and waits.

With one slot, or where there is no `os.fork` (Windows), every request runs in this process, in job
order, which is the same work one run at a time.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

# How long an interrupted command waits for its children to record their runs' end before it kills them.
STOP_GRACE_S = 60.0
# How often the parent looks for a child that died without answering.
POLL_S = 1.0


@dataclass(eq=False)
class Job:
    """A generator of run requests (receiving each one's result), started after the jobs in `after`."""

    name: str
    requests: Generator[Any, Any, None]
    after: Sequence[Job] = ()
    done: bool = field(default=False, init=False)

    def advance(self, result: Any = None) -> Any | None:
        """The job's next request, or None when it has finished (it is then done)."""
        try:
            return self.requests.send(result)
        except StopIteration:
            self.done = True
            return None


def run_jobs(
    jobs: Sequence[Job],
    execute: Callable[[Any], Any],
    lost: Callable[[Any, str], Any],
    slots: int,
) -> None:
    """Drive `jobs` to the end, at most `slots` requests in flight.

    `jobs` are in priority order (a free slot goes to the first job whose `after` are done) and every
    job's `after` come before it. `execute(request)` runs in a forked child and returns a picklable
    result; a child that raises or dies yields `lost(request, why)` instead, so its job carries on.
    """
    if slots <= 1 or not hasattr(os, "fork"):
        for job in jobs:
            assert all(j.done for j in job.after), f"{job.name} is listed before a job it reads from"
            request = job.advance()
            while request is not None:
                try:
                    result = execute(request)
                except Exception:
                    result = lost(request, traceback.format_exc().strip().splitlines()[-1])
                request = job.advance(result)
        return
    _Pool(execute, lost, slots).drive(list(jobs))


def _child(execute: Callable[[Any], Any], request: Any, conn: Connection) -> None:
    """In the forked child: the result, or the error that stopped it, sent to the parent.

    The child leads its own process group, which the workers its run forks join, so the parent can
    interrupt or kill the run with everything it started (see _Pool.stop and _Pool.reap)."""
    os.setpgid(0, 0)
    try:
        conn.send(("result", execute(request)))
    except BaseException:  # an interrupt too: the parent must hear why
        conn.send(("error", traceback.format_exc().strip().splitlines()[-1]))
    finally:
        conn.close()


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the command as Ctrl-C does: its runs are interrupted and recorded as ended."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _signal_group(child: multiprocessing.process.BaseProcess, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)  # type: ignore[arg-type]


class _Pool:
    def __init__(self, execute: Callable[[Any], Any], lost: Callable[[Any, str], Any], slots: int) -> None:
        self.execute, self.lost, self.slots = execute, lost, slots
        self.context = multiprocessing.get_context("fork")
        self.flight: dict[Connection, tuple[Job, multiprocessing.process.BaseProcess, Any]] = {}

    def launch(self, job: Job, request: Any) -> None:
        receive, send = self.context.Pipe(duplex=False)
        for stream in (sys.stdout, sys.stderr):  # or the child would write their buffered text again
            stream.flush()
        # Not daemonic: a run's batched steps fork their own workers.
        child = self.context.Process(target=_child, args=(self.execute, request, send), name=job.name)
        child.start()
        send.close()
        self.flight[receive] = (job, child, request)

    def start_ready(self, pending: list[Job]) -> None:
        """Give free slots to the first ready jobs; a job that needs no run finishes at once."""
        while len(self.flight) < self.slots:
            job = next((j for j in pending if all(a.done for a in j.after)), None)
            if job is None:
                return
            pending.remove(job)
            request = job.advance()
            if request is not None:
                self.launch(job, request)

    def answered(self) -> list[Connection]:
        """The in-flight children that sent their answer or died. A dead child's pipe may never
        reach end-of-file: the workers its run forked hold the pipe's other end, so death is polled."""
        ready = wait(list(self.flight), timeout=POLL_S)
        dead = [c for c, (_, child, _) in self.flight.items() if c not in ready and not child.is_alive()]
        return [*ready, *dead]  # type: ignore[list-item]

    def collect(self, conn: Connection) -> tuple[Job, Any, Any]:
        """The job, request and result of an answered child, whose processes are then gone."""
        job, child, request = self.flight.pop(conn)
        kind, value = "error", None
        with suppress(EOFError, OSError):
            if conn.poll():
                kind, value = conn.recv()
        conn.close()
        if value is None:
            child.join(POLL_S)
            value = f"its process exited with code {child.exitcode}"
        self.reap(child, clean=kind == "result")
        return job, request, value if kind == "result" else self.lost(request, value)

    def reap(self, child: multiprocessing.process.BaseProcess, clean: bool) -> None:
        """Wait for the child; after a child that died, kill what is left of its process group (a
        run's workers would otherwise wait for work for ever)."""
        child.join(STOP_GRACE_S if clean else POLL_S)
        if not clean or child.is_alive():
            _signal_group(child, signal.SIGKILL)
            child.join()

    def drive(self, pending: list[Job]) -> None:
        try:
            with _terminate_as_interrupt():
                while True:
                    self.start_ready(pending)
                    if not self.flight:
                        if pending:
                            names = ", ".join(j.name for j in pending)
                            raise RuntimeError(f"jobs wait on jobs that never finish: {names}")
                        return
                    for conn in self.answered():
                        job, _, result = self.collect(conn)
                        request = job.advance(result)
                        if request is not None:
                            self.launch(job, request)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """The command is stopping (an interrupt, or an error in the parent): interrupt the runs in
        flight, give them STOP_GRACE_S to record their end, then kill them; every run that did not
        answer is handed to `lost` (which records it as ended)."""
        for _, child, _ in self.flight.values():
            _signal_group(child, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        while self.flight and time.monotonic() < deadline:
            for conn in self.answered():
                with suppress(Exception):  # the command is failing already; record what can be
                    self.collect(conn)
        for conn, (_, child, request) in list(self.flight.items()):
            self.flight.pop(conn)
            conn.close()
            _signal_group(child, signal.SIGKILL)
            child.join()
            with suppress(Exception):
                self.lost(request, f"stopped with the command after {STOP_GRACE_S:.0f} s")
