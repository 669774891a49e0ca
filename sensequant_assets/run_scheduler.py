"""Several of `sensequant train`'s runs at once, each in a forked child, ordered by what they read.

A UI backfill keeps two runs going on two cores (the run queue's limit): a window's evaluation runs
beside the next window's training. The command does the same with `Job`s: a job is a generator that
yields run requests and receives their results (so it can plan each request from what the previous
ones did, and retry a failed run in halves), and it starts once the jobs it reads from are done. Up to
`slots` requests are in flight, each executed by `execute` in a child forked from this process (the
definitions are already imported, so a fork costs milliseconds); the parent only plans and waits.

Each child leads its own process group, which the workers its run forks join, so what a child that
dies started is killed with its group. A child that answers kills what is left of its run's
processes before it exits; on Linux it also adopts their orphans (a child subreaper), so even a
process that moved to a session of its own, or lost its parent, ends with the run (unless the run
is killed first). Ctrl-C and SIGTERM reach the parent only; it acts on them between its waits
(never in the middle of its own bookkeeping): it interrupts every run in flight (the run's own
process: Dagster stops its log processes, and the workers finish the partitions they hold), gives
them STOP_GRACE_S in all to record their end, kills what is left and hands it to `lost` (a second
signal kills at once), then raises `Interrupted`. (Side effects of the children's own groups: a
terminal with `stty tostop` stops a child that writes to it; Ctrl-Z stops the command only.)

Where there is no `os.fork` (Windows), every request runs in this process, in job order, which is
the same work one run at a time (Ctrl-C is then Dagster's to handle inside a run).
"""

from __future__ import annotations

import ctypes
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

# How long a stopping command waits for its children to record their runs' end before it kills them.
STOP_GRACE_S = 30.0
# How often the parent looks for a child that died without answering, or a signal to act on.
POLL_S = 1.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How long a run's process waits for the processes it killed to be gone before it exits anyway.
END_WAIT_S = 10.0
# Linux's prctl option: a subreaper adopts the orphans among its descendants (instead of init).
_PR_SET_CHILD_SUBREAPER = 36


class Interrupted(KeyboardInterrupt):
    """The command was told to stop; the runs in flight were stopped and handed to `lost` first."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


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
    Raises `Interrupted` after a SIGINT or SIGTERM, once the runs in flight are stopped.
    """
    if hasattr(os, "fork"):
        _Pool(execute, lost, max(1, slots)).drive(list(jobs))
    else:
        _serial(jobs, execute, lost)


def _serial(jobs: Sequence[Job], execute: Callable[[Any], Any], lost: Callable[[Any, str], Any]) -> None:
    """Every request in this process, in job order."""
    for job in jobs:
        assert all(j.done for j in job.after), f"{job.name} is listed before a job it reads from"
        request = job.advance()
        while request is not None:
            try:
                result = execute(request)
            except Exception:
                result = lost(request, traceback.format_exc().strip().splitlines()[-1])
            request = job.advance(result)


@contextmanager
def _signals_to(signals: list[int]) -> Iterator[None]:
    """While inside: SIGINT and SIGTERM are appended to `signals` (in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda signum, _: signals.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _ignore_stop_signals() -> None:
    """In a run's process that has its answer: an interrupt now would only cut its cleanup short."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _child(execute: Callable[[Any], Any], request: Any, conn: Connection) -> None:
    """In the forked child: the result, or the error that stopped it, sent to the parent."""
    with suppress(OSError):
        os.setpgid(0, 0)  # the parent does it too: whichever runs first
    _adopt_orphans()
    for signum in STOP_SIGNALS:  # not the parent's handlers: an interrupt is the run's to handle
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    answer: tuple[str, Any] = ("error", "KeyboardInterrupt")
    try:
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by the parent across the fork
            answer = ("result", execute(request))
        except BaseException:  # an interrupt too: the parent must hear why
            answer = ("error", traceback.format_exc().strip().splitlines()[-1])
        finally:
            _ignore_stop_signals()
    except KeyboardInterrupt:  # one that landed as the run ended: the answer stands
        _ignore_stop_signals()
    try:
        conn.send(answer)
    finally:
        conn.close()
        _end_descendants()


def _children() -> set[int]:
    """This process's children (Linux's /proc; none where there is no /proc)."""
    found: set[int] = set()
    listed = False
    with suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with suppress(OSError), open(f"/proc/self/task/{task}/children") as children:
                found.update(int(pid) for pid in children.read().split())
                listed = True
    if listed:
        return found
    me = os.getpid()  # a kernel without CONFIG_PROC_CHILDREN: every process's parent, from its stat
    with suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with suppress(OSError, IndexError, ValueError), open(f"/proc/{entry}/stat", "rb") as stat:
                    # The fields after the command's name (which may hold spaces or parentheses).
                    if int(stat.read().rsplit(b")", 1)[1].split()[1]) == me:
                        found.add(int(entry))
    return found


def _adopt_orphans() -> None:
    """Make this process the one that adopts its descendants' orphans (Linux; elsewhere nothing)."""
    with suppress(AttributeError):  # no prctl in the C library: not Linux
        ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _end_descendants() -> None:
    """Kill and reap what is left of this run's processes: a worker forked as the run was
    interrupted, a process that moved to a session of its own, or one orphaned by its parent (and
    adopted by this process). Everything under a run's process is the run's."""
    deadline = time.monotonic() + END_WAIT_S
    while (left := _children()) and time.monotonic() < deadline:
        for pid in left:
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in left:  # once reaped, their own orphans are this process's children: next round
            with suppress(ChildProcessError):
                while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
                    time.sleep(0.01)
        time.sleep(0.01)


def _signal_group(child: multiprocessing.process.BaseProcess, signum: int) -> None:
    """Signal the child and its run's workers. The group's id is the child's pid: once the child is
    reaped and its workers gone, it could in principle name another group (Linux hands pids out
    cyclically, so not soon)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)  # type: ignore[arg-type]


class _Pool:
    def __init__(self, execute: Callable[[Any], Any], lost: Callable[[Any, str], Any], slots: int) -> None:
        self.execute, self.lost, self.slots = execute, lost, slots
        self.context = multiprocessing.get_context("fork")
        self.flight: dict[Connection, tuple[Job, multiprocessing.process.BaseProcess, Any]] = {}
        self.signals: list[int] = []

    def launch(self, job: Job, request: Any) -> None:
        receive, send = self.context.Pipe(duplex=False)
        for stream in (sys.stdout, sys.stderr):  # or the child would write their buffered text again
            stream.flush()
        # Not daemonic: a run's batched steps fork their own workers.
        child = self.context.Process(target=_child, args=(self.execute, request, send), name=job.name)
        # A signal must not reach the child before it has its own handlers and group (the parent's
        # handlers only take note): both block them across the fork.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            try:
                child.start()
            except BaseException:
                receive.close()
                send.close()
                raise
            self.flight[receive] = (job, child, request)
            with suppress(OSError):  # the child may have done it (or exited) already
                os.setpgid(child.pid, child.pid)  # type: ignore[arg-type]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        send.close()

    def start_ready(self, pending: list[Job]) -> None:
        """Give free slots to the first ready jobs; a job that needs no run finishes at once."""
        while len(self.flight) < self.slots and not self.signals:
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

    def collect(self, conn: Connection, exit_s: float = STOP_GRACE_S) -> tuple[Job, Any]:
        """The job and result of an answered or dead child, whose processes are then gone: a
        child that answered gets `exit_s` to end what is left of its run and exit."""
        job, child, request = self.flight[conn]
        answer: tuple[str, Any] | None = None
        with suppress(EOFError, OSError):
            if conn.poll():
                answer = conn.recv()
        if answer is not None:
            self.exited(child, exit_s)
        # A dead child's workers would wait for ever, and one stuck on its way out is stopped.
        _signal_group(child, signal.SIGKILL)
        child.join()
        conn.close()
        del self.flight[conn]
        if answer is None:
            answer = ("error", f"its process exited with code {child.exitcode}")
        kind, value = answer
        return job, value if kind == "result" else self.lost(request, value)

    def exited(self, child: multiprocessing.process.BaseProcess, seconds: float) -> None:
        """Wait for an answered child to end what is left of its run and exit, at most `seconds`;
        a signal to the command cuts the wait short."""
        signals, until = len(self.signals), time.monotonic() + seconds
        while len(self.signals) == signals and (left := until - time.monotonic()) > 0:
            if wait([child.sentinel], min(POLL_S, left)):
                return

    def drive(self, pending: list[Job]) -> None:
        with _signals_to(self.signals):
            try:
                finished = self.loop(pending)
            finally:
                if self.flight:  # a stop request, or an error in the parent
                    self.stop()
            if not finished or self.signals:  # a signal during the last planning counts too
                raise Interrupted(self.signals[0])

    def loop(self, pending: list[Job]) -> bool:
        """Run every job (True), or stop starting runs when a signal asks to (False)."""
        while not self.signals:
            self.start_ready(pending)
            if not self.flight:
                if pending and not self.signals:
                    names = ", ".join(j.name for j in pending)
                    raise RuntimeError(f"jobs wait on jobs that never finish: {names}")
                return not pending
            for conn in self.answered():
                job, result = self.collect(conn)
                request = job.advance(result)
                if request is not None and not self.signals:  # stopping: the job ends unfinished
                    self.launch(job, request)
        return False

    def stop(self) -> None:
        """Interrupt the runs in flight, give them STOP_GRACE_S to record their end (a further
        signal cuts it short), then kill them; every run that did not answer goes to `lost`."""
        print(
            f"stopping {len(self.flight)} run(s) in flight: each gets up to {STOP_GRACE_S:.0f} s to record "
            "its end (interrupt again to kill them now)",
            file=sys.stderr,
            flush=True,
        )
        for _, child, _ in self.flight.values():  # the run's own process: it stops what it started
            with suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGINT)  # type: ignore[arg-type]
        asked, deadline = len(self.signals), time.monotonic() + STOP_GRACE_S
        while self.flight and time.monotonic() < deadline and len(self.signals) <= asked:
            for conn in self.answered():
                with suppress(Exception):  # the command is stopping already; record what can be
                    self.collect(conn, exit_s=max(0.0, deadline - time.monotonic()))
        why = (
            "killed by a second interrupt"
            if len(self.signals) > asked
            else f"killed when the command stopped ({STOP_GRACE_S:.0f} s after interrupting it)"
        )
        for conn, (_, child, request) in list(self.flight.items()):
            _signal_group(child, signal.SIGKILL)
            child.join()
            conn.close()
            del self.flight[conn]
            with suppress(Exception):
                self.lost(request, why)
