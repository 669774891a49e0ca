"""run_scheduler: jobs of runs in forked children, in the order of what they read, at most `slots` at once."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Generator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from sensequant_assets import run_scheduler
from sensequant_assets.run_scheduler import Job, run_jobs

WAIT_S = 30.0


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


class Recorder:
    """`execute` for the tests: each request leaves a file behind and reports what it saw running.

    A request is `(name, needs, then)`: `needs` names a file that must exist when it starts (written
    by a request before it) or, prefixed with `~`, one to wait for (written by a request beside it).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "running").mkdir()

    def __call__(self, request: tuple[str, str | None, str | None]) -> tuple[str, int, int]:
        name, needs, then = request
        if needs and needs.startswith("~"):
            _wait_for(self.root / needs[1:])
        elif needs and not (self.root / needs).exists():
            raise AssertionError(f"{name} started before {needs} was written")
        running = self.root / "running" / name
        running.touch()
        in_flight = len(list((self.root / "running").iterdir()))
        (self.root / name).write_text(str(os.getpid()))
        if then == "exit":
            os._exit(7)
        if then == "raise":
            running.unlink()
            raise ValueError(f"{name} cannot be computed")
        if then == "orphan":  # a run whose step forked a worker, killed with the worker still waiting
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
                (self.root / "worker.pid").write_text(str(pool.submit(os.getpid).result()))
                os.kill(os.getpid(), signal.SIGKILL)
        if then == "hang":
            _wait_for(self.root / "never")
        if then == "deaf":  # a run that does not answer an interrupt
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            (self.root / f"{name}.deaf").touch()
            _wait_for(self.root / "never")
        if then and then.startswith("escape"):  # a run that leaves an orphan behind, in its own session
            import subprocess

            if os.fork() == 0:  # its parent exits at once
                escaped = subprocess.Popen(["sleep", "600"], start_new_session=True)
                (self.root / "escaped.pid").write_text(str(escaped.pid))
                os._exit(0)
            os.wait()
            if then == "escape-raise":
                raise ValueError(f"{name} cannot be computed")
        if then == "none":
            return None  # type: ignore[return-value]
        time.sleep(0.05)
        running.unlink()
        return name, in_flight, os.getpid()


def _job(name: str, requests: list[tuple[str, str | None, str | None]], results: dict, after=()) -> Job:
    def gen() -> Generator:
        for request in requests:
            results[request[0]] = yield request

    return Job(name, gen(), after)


def _lost(request: tuple, why: str) -> str:
    return f"lost {request[0]}: {why}"


def test_a_job_starts_after_those_it_reads_from_and_two_run_side_by_side(tmp_path: Path) -> None:
    results: dict[str, object] = {}
    first = _job("first", [("a1", None, None), ("a2", None, None)], results)
    # b1 and c1 need a2 written before they start; b2 waits for c1, which it sees only if c runs
    # beside b, in the other slot.
    second = _job("second", [("b1", "a2", None), ("b2", "~c1", None)], results, after=(first,))
    third = _job("third", [("c1", "a2", None)], results, after=(first,))
    run_jobs([first, second, third], Recorder(tmp_path), _lost, slots=2)
    assert set(results) == {"a1", "a2", "b1", "b2", "c1"}
    assert all(job.done for job in (first, second, third))
    assert all(isinstance(r, tuple) and r[2] != os.getpid() for r in results.values())  # in children
    assert max(r[1] for r in results.values()) <= 2


def test_never_more_requests_in_flight_than_slots(tmp_path: Path) -> None:
    results: dict[str, object] = {}
    jobs = [_job(f"j{i}", [(f"r{i}-{k}", None, None) for k in range(3)], results) for i in range(5)]
    run_jobs(jobs, Recorder(tmp_path), _lost, slots=2)
    assert len(results) == 15
    assert max(r[1] for r in results.values()) <= 2


def test_a_child_that_raises_or_dies_becomes_its_jobs_lost_result_and_the_rest_carries_on(
    tmp_path: Path,
) -> None:
    results: dict[str, object] = {}
    jobs = [
        _job("raises", [("r", None, "raise"), ("r2", None, None)], results),
        _job("dies", [("d", None, "exit")], results),
        _job("fine", [("f", None, None)], results),
    ]
    run_jobs(jobs, Recorder(tmp_path), _lost, slots=2)
    assert results["r"] == "lost r: ValueError: r cannot be computed"
    assert results["d"] == "lost d: its process exited with code 7"
    assert isinstance(results["r2"], tuple) and isinstance(results["f"], tuple)


def test_a_free_slot_goes_to_the_first_ready_job_in_priority_order(tmp_path: Path) -> None:
    """When a training ends, the next training (listed first) takes the one free slot, not the
    evaluation that became ready with it: `e` needs `t1` written before it starts."""
    results: dict[str, object] = {}
    blocker = _job("blocker", [("x", "~t1", None)], results)
    first = _job("first", [("t0", None, None)], results)
    second = _job("second", [("t1", None, None)], results, after=(first,))
    evaluation = _job("evaluation", [("e", "t1", None)], results, after=(first,))
    run_jobs([blocker, first, second, evaluation], Recorder(tmp_path), _lost, slots=2)
    assert all(isinstance(r, tuple) for r in results.values()), results


def test_a_child_that_returns_none_answered(tmp_path: Path) -> None:
    results: dict[str, object] = {}
    run_jobs([_job("none", [("n", None, "none")], results)], Recorder(tmp_path), _lost, slots=2)
    assert results == {"n": None}


def test_one_slot_runs_one_request_at_a_time_in_job_order(tmp_path: Path) -> None:
    results: dict[str, object] = {}
    first = _job("first", [("a", None, None)], results)
    second = _job("second", [("b", "a", None), ("c", None, "raise")], results, after=(first,))
    third = _job("third", [("d", "c", None)], results)
    run_jobs([first, second, third], Recorder(tmp_path), _lost, slots=1)
    assert results["a"][1] == results["b"][1] == results["d"][1] == 1
    assert results["c"] == "lost c: ValueError: c cannot be computed"


def test_without_fork_every_request_runs_in_this_process_in_job_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "fork")  # as on Windows
    results: dict[str, object] = {}
    first = _job("first", [("a", None, None)], results)
    second = _job("second", [("b", "a", None), ("c", None, "raise")], results, after=(first,))
    run_jobs([first, second], Recorder(tmp_path), _lost, slots=2)
    assert results["a"][2] == results["b"][2] == os.getpid()
    assert results["c"] == "lost c: ValueError: c cannot be computed"


def test_jobs_that_wait_on_a_job_never_given_are_an_error(tmp_path: Path) -> None:
    results: dict[str, object] = {}
    missing = _job("missing", [("m", None, None)], results)
    orphan = _job("orphan", [("o", None, None)], results, after=(missing,))
    with pytest.raises(RuntimeError, match="orphan"):
        run_jobs([orphan], Recorder(tmp_path), _lost, slots=2)


def _gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie that no one reaps counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_child_killed_while_its_workers_live_is_lost_and_its_workers_are_killed(tmp_path: Path) -> None:
    """The workers hold the child's end of the pipe: its death must be noticed without end-of-file."""
    results: dict[str, object] = {}
    run_jobs([_job("killed", [("k", None, "orphan")], results)], Recorder(tmp_path), _lost, slots=2)
    assert results["k"] == "lost k: its process exited with code -9"
    worker = int((tmp_path / "worker.pid").read_text())
    deadline = time.monotonic() + WAIT_S
    while not _gone(worker):
        assert time.monotonic() < deadline, f"the run's worker {worker} outlived it"
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="orphans are adopted on Linux only")
@pytest.mark.parametrize("then", ["escape", "escape-raise"])
def test_an_orphan_a_run_left_in_its_own_session_does_not_outlive_the_run(tmp_path: Path, then: str) -> None:
    """Out of its run's group, it is not killed with the group, and its parent has exited: the
    run's process adopts it and kills it before it exits, whether the run succeeded or failed."""
    results: dict[str, object] = {}
    try:
        run_jobs([_job("escapes", [("e", None, then)], results)], Recorder(tmp_path), _lost, slots=2)
        if then == "escape":
            assert results["e"][0] == "e"  # type: ignore[index]
        else:
            assert results["e"] == "lost e: ValueError: e cannot be computed"
        assert _gone(int((tmp_path / "escaped.pid").read_text()))
    finally:
        with contextlib.suppress(OSError, ValueError):
            if not _gone(escaped := int((tmp_path / "escaped.pid").read_text())):
                os.kill(escaped, signal.SIGKILL)


def test_an_error_in_the_parent_interrupts_the_runs_in_flight_and_hands_them_to_lost(tmp_path: Path) -> None:
    results: dict[str, object] = {}
    lost: list[str] = []

    def failing() -> Generator:
        yield ("quick", None, None)
        raise RuntimeError("the parent's planning failed")

    def record(request: tuple, why: str) -> str:
        lost.append(f"{request[0]}: {why}")
        return why

    jobs = [_job("hangs", [("h", None, "hang")], results), Job("fails", failing())]
    with pytest.raises(RuntimeError, match="planning failed"):
        run_jobs(jobs, Recorder(tmp_path), record, slots=2)
    # The hanging run got the interrupt (as from Ctrl-C), answered with it, and was recorded as lost.
    assert lost == ["h: KeyboardInterrupt"]


def test_a_run_that_ignores_the_interrupt_is_killed_after_the_grace_and_handed_to_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_scheduler, "STOP_GRACE_S", 1.0)
    lost: list[str] = []

    def failing() -> Generator:
        _wait_for(tmp_path / "d.deaf")  # the deaf run is under way, deaf
        yield ("quick", None, None)
        raise RuntimeError("the parent's planning failed")

    def record(request: tuple, why: str) -> str:
        lost.append(f"{request[0]}: {why}")
        return why

    jobs = [_job("deaf", [("d", None, "deaf")], {}), Job("fails", failing())]
    with pytest.raises(RuntimeError, match="planning failed"):
        run_jobs(jobs, Recorder(tmp_path), record, slots=2)
    assert lost == ["d: killed when the command stopped (1 s after interrupting it)"]


STOPPED_BY_SIGNAL = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from sensequant_assets import run_scheduler
from sensequant_tests.test_run_scheduler import Recorder, _job

root = Path(sys.argv[1])
run_scheduler.STOP_GRACE_S = float(sys.argv[2])
lost = []
jobs = [_job("a", [("a", None, "hang")], {}), _job("b", [("b", None, "deaf")], {})]
try:
    run_scheduler.run_jobs(jobs, Recorder(root), lambda r, why: lost.append(f"{r[0]}: {why}"), slots=2)
except run_scheduler.Interrupted as exc:
    print(exc.signum, sorted(lost))
"""


@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGINT,), (signal.SIGTERM, signal.SIGINT)])
def test_a_signal_stops_the_runs_in_flight_and_a_second_one_kills_them_at_once(
    tmp_path: Path, signals: tuple[int, ...]
) -> None:
    """Ctrl-C or SIGTERM reaches the command only (its children lead their own groups): it
    interrupts the run that listens and, after the grace, kills the one that does not; a second
    signal kills it at once (the grace here is longer than the test waits)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    grace = "2" if len(signals) == 1 else "600"
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPED_BY_SIGNAL, str(tmp_path), grace, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(tmp_path / "a")
    _wait_for(tmp_path / "b.deaf")
    proc.send_signal(signals[0])
    if len(signals) > 1:  # once the first has reached the runs (the listening one has ended)
        interrupted = int((tmp_path / "a").read_text())
        deadline = time.monotonic() + WAIT_S
        while not _gone(interrupted):
            assert time.monotonic() < deadline, "the run was not interrupted"
            time.sleep(0.05)
        proc.send_signal(signals[1])
    out, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, err
    assert "stopping 2 run(s) in flight" in err
    killed = (
        f"b: killed when the command stopped ({float(grace):.0f} s after interrupting it)"
        if len(signals) == 1
        else "b: killed by a second interrupt"
    )
    assert out.strip().split(maxsplit=1) == [str(signals[0]), str(sorted(["a: KeyboardInterrupt", killed]))]
