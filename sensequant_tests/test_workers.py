"""Partitions of a batched run computed in forked workers: same answers, skips kept, errors raised."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from typing import IO

import pytest

from sensequant_assets.assets.workers import compute_each, run_workers
from sensequant_assets.cpus import usable_cpus
from sensequant_assets.deployment.run_forkserver import process_start_time
from sensequant_assets.settings import SettingsError


class Skip(ValueError):
    pass


def _square_or_skip(key: str) -> tuple[int, int]:
    n = int(key)
    if n % 3 == 0:
        raise Skip(f"{key} is a multiple of three")
    return n * n, os.getpid()


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_key_gets_a_value_or_a_reason(workers: int) -> None:
    keys = [str(i) for i in range(1, 11)]
    results = {
        key: (value, reason) for key, value, reason in compute_each(_square_or_skip, keys, (Skip,), workers)
    }
    assert set(results) == set(keys)
    for key, (value, reason) in results.items():
        n = int(key)
        if n % 3 == 0:
            assert value is None and reason == f"{key} is a multiple of three"
        else:
            assert reason is None and value[0] == n * n


def test_several_workers_run_in_other_processes_and_one_in_this_one() -> None:
    keys = [str(i) for i in (1, 2, 4, 5)]
    parallel = {value[1] for _, value, _ in compute_each(_square_or_skip, keys, (Skip,), 2)}
    serial = {value[1] for _, value, _ in compute_each(_square_or_skip, keys, (Skip,), 1)}
    assert os.getpid() not in parallel
    assert serial == {os.getpid()}


def test_a_closure_reaches_the_workers_without_pickling() -> None:
    offset = {"value": 100}  # a closure over local state: not picklable as a task
    results = dict(
        (k, v) for k, v, _ in compute_each(lambda key: int(key) + offset["value"], ["1", "2"], (), 2)
    )
    assert results == {"1": 101, "2": 102}


def test_an_unexpected_error_stops_the_step() -> None:
    def boom(key: str) -> int:
        if key == "2":
            raise RuntimeError("corrupt input for 2")
        return 1

    with pytest.raises(RuntimeError, match="corrupt input for 2"):
        list(compute_each(boom, ["1", "2", "3"], (Skip,), 2))


def test_worker_count_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSEQUANT_RUN_WORKERS", "0")
    assert run_workers() == (usable_cpus() if hasattr(os, "fork") else 1)
    monkeypatch.setenv("SENSEQUANT_RUN_WORKERS", "3")
    assert run_workers() == 3
    monkeypatch.setenv("SENSEQUANT_RUN_WORKERS", "-1")
    with pytest.raises(SettingsError, match="SENSEQUANT_RUN_WORKERS"):
        run_workers()


def _pids(stream: IO[bytes], count: int, deadline: float) -> list[int]:
    """The first `count` pids the workers wrote, failing the test at `deadline` rather than hanging."""
    data = b""
    while data.count(b"\n") < count:
        if not select.select([stream], [], [], max(0.0, deadline - time.monotonic()))[0]:
            pytest.fail("the workers did not report their pids in time")
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            pytest.fail("the process ended before its workers reported")
        data += chunk
    return [int(pid) for pid in data.split()[:count]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a worker's parent-death signal is Linux's")
def test_workers_die_with_the_process_that_forked_them() -> None:
    """A run killed outright (SIGKILL, the OOM killer) leaves no worker computing on in the background."""
    script = textwrap.dedent(
        """
        import os, time
        from sensequant_assets.assets.workers import compute_each

        def task(key):
            os.write(1, b"%d\\n" % os.getpid())  # one write: the two workers' lines never interleave
            time.sleep(600)

        for _ in compute_each(task, ["a", "b"], (), 2):
            pass
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    started: dict[int, str | None] = {}  # pid -> its start time: a pid alone may be reused

    def running() -> list[int]:
        return [pid for pid, since in started.items() if since and process_start_time(pid) == since]

    try:
        for pid in _pids(proc.stdout, 2, time.monotonic() + 60):
            started[pid] = process_start_time(pid)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(), "workers outlived the killed process"
    finally:
        for pid in running():
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.stdout.close()
