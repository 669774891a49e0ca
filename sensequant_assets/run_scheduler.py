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
import traceback
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

# How long an interrupted command waits for its children to record their runs' end before it kills them.
STOP_GRACE_S = 60.0


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
    """In the forked child: the result, or the error that stopped it, sent to the parent."""
    try:
        conn.send(("result", execute(request)))
    except BaseException:  # an interrupt too: the parent must hear why
        conn.send(("error", traceback.format_exc().strip().splitlines()[-1]))
    finally:
        conn.close()


class _Pool:
    def __init__(self, execute: Callable[[Any], Any], lost: Callable[[Any, str], Any], slots: int) -> None:
        self.execute, self.lost, self.slots = execute, lost, slots
        self.context = multiprocessing.get_context("fork")
        self.flight: dict[Connection, tuple[Job, multiprocessing.process.BaseProcess, Any]] = {}

    def launch(self, job: Job, request: Any) -> None:
        receive, send = self.context.Pipe(duplex=False)
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

    def drive(self, pending: list[Job]) -> None:
        try:
            while True:
                self.start_ready(pending)
                if not self.flight:
                    if pending:
                        names = ", ".join(j.name for j in pending)
                        raise RuntimeError(f"jobs wait on jobs that never finish: {names}")
                    return
                for conn in wait(list(self.flight)):
                    job, child, request = self.flight.pop(conn)  # type: ignore[index]
                    try:
                        kind, value = conn.recv()
                    except EOFError:
                        child.join()
                        kind, value = "error", f"its process exited with code {child.exitcode}"
                    conn.close()
                    child.join()
                    result = value if kind == "result" else self.lost(request, value)
                    request = job.advance(result)
                    if request is not None:
                        self.launch(job, request)
        finally:
            self.stop()

    def stop(self) -> None:
        """On an interrupt the children got it too (one process group): let them end their runs."""
        for conn, (_, child, _) in list(self.flight.items()):
            child.join(STOP_GRACE_S)
            if child.is_alive():
                child.kill()
                child.join()
            conn.close()
        self.flight.clear()
