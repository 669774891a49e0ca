"""run_scheduler: jobs of runs in forked children, in the order of what they read, at most `slots` at once."""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from pathlib import Path

import pytest

from sensequant_assets.run_scheduler import Job, run_jobs

WAIT_S = 30.0


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


class Recorder:
    """`execute` for the tests: each request leaves a file behind and reports what it saw running."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "running").mkdir()

    def __call__(self, request: tuple[str, str | None, str | None]) -> tuple[str, int, int]:
        name, needs, then = request
        if needs:  # a request that must see another's file (written before it or beside it)
            _wait_for(self.root / needs)
        running = self.root / "running" / name
        running.touch()
        in_flight = len(list((self.root / "running").iterdir()))
        (self.root / name).touch()
        if then == "exit":
            os._exit(7)
        if then == "raise":
            raise ValueError(f"{name} cannot be computed")
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
    # b2 waits for c1's file: it can only finish if c runs beside b, in the other slot.
    second = _job("second", [("b1", "a2", None), ("b2", "c1", None)], results, after=(first,))
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


def test_one_slot_runs_every_request_in_this_process_in_job_order(tmp_path: Path) -> None:
    results: dict[str, object] = {}
    first = _job("first", [("a", None, None)], results)
    second = _job("second", [("b", "a", None), ("c", None, "raise")], results, after=(first,))
    run_jobs([first, second], Recorder(tmp_path), _lost, slots=1)
    assert results["a"][2] == results["b"][2] == os.getpid()
    assert results["c"] == "lost c: ValueError: c cannot be computed"


def test_jobs_that_wait_on_a_job_never_given_are_an_error(tmp_path: Path) -> None:
    results: dict[str, object] = {}
    missing = _job("missing", [("m", None, None)], results)
    orphan = _job("orphan", [("o", None, None)], results, after=(missing,))
    with pytest.raises(RuntimeError, match="orphan"):
        run_jobs([orphan], Recorder(tmp_path), _lost, slots=2)
