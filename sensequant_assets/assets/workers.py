"""The partitions of one batched run (or the briefing's changed symbols), computed in forked worker
processes across the cores.

A backfill run covers many partitions whose work is independent, CPU-bound and single-threaded
(tiny LightGBM and logistic fits), so a run with N partitions uses up to `SENSEQUANT_RUN_WORKERS`
cores (0, the default: one per usable CPU, see `cpus.py`). The workers are forked from the run
worker, which has already imported everything, so they start in milliseconds. The task and its
inputs reach them through the fork, never pickled; only keys (partitions, or the briefing's
symbols) go in and results come back. A single key (a UI click, a sensor's run) is computed in the
run's own process.

Forking and OpenMP: GNU OpenMP's thread pool does not survive a fork, so a child must not run a
multi-threaded region after its parent ran one. The teacher is the only multi-threaded task
(`num_threads` > 1, one by default) and is the first step of a run, so when it forks the parent has
trained nothing; when it ran in the parent instead, the later student step's children are
single-threaded (both student kinds use one thread). The briefing's workers, forked after any step,
run no OpenMP: parquet decoding (pyarrow), numpy, scipy and pandas, whose thread pools survive a fork;
they read the local artifact store only (never an object store: `LazyPartitions.forkable`). The
workers touch no Dagster state; they only compute and return, and on Linux they die with the thread
that forked them (the one consuming `compute_each`), so a run killed with SIGKILL leaves none behind.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import TypeVar

from sensequant_assets.cpus import usable_cpus
from sensequant_assets.settings import number

T = TypeVar("T")

_task: Callable[[str], object] | None = None
_skip: tuple[type[Exception], ...] = ()
_PR_SET_PDEATHSIG = 1  # Linux's prctl option: a signal this process gets when its parent dies


def run_workers() -> int:
    """Worker processes per run step (`SENSEQUANT_RUN_WORKERS`; 0 means one per usable CPU).

    Workers are forked, so where there is no `os.fork` (Windows) every step computes in-process, and
    so does a step in a daemonic process (a Celery worker's default prefork pool), which may not start
    children (deployment/executors.py: run Celery workers with the solo pool to use the cores).
    """
    workers = int(number("SENSEQUANT_RUN_WORKERS", int, 0))
    if not hasattr(os, "fork") or multiprocessing.current_process().daemon:
        return 1
    return workers or usable_cpus()


def _install(task: Callable[[str], object], skip: tuple[type[Exception], ...], parent: int) -> None:
    global _task, _skip
    _task, _skip = task, skip
    try:  # die with the thread that forked this worker: the one consuming `compute_each`
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except AttributeError:  # no prctl in the C library: not Linux
        return
    if os.getppid() != parent:  # it died before the setting took
        os._exit(1)


def _call(key: str) -> tuple[str, object, str | None]:
    """In a worker: the task's value for `key`, or the reason it was skipped."""
    assert _task is not None, "worker started without a task"
    try:
        return key, _task(key), None
    except _skip as exc:
        return key, None, str(exc)


def compute_each(
    task: Callable[[str], T],
    keys: Sequence[str],
    skip: tuple[type[Exception], ...],
    workers: int | None = None,
) -> Iterator[tuple[str, T | None, str | None]]:
    """Yield `(key, value, None)` or `(key, None, reason)` for every key, as each finishes.

    `skip` exceptions become reasons (the partition is skipped); any other exception stops the
    step, as it would in a plain loop. Consume it from the thread that started it: the workers are
    forked on the first `next()` and die when that thread ends.
    """
    workers = min(run_workers() if workers is None else workers, len(keys))
    if workers <= 1:
        for key in keys:
            try:
                yield key, task(key), None
            except skip as exc:
                yield key, None, str(exc)
        return
    context = multiprocessing.get_context("fork")
    setup = (task, skip, os.getpid())
    with ProcessPoolExecutor(workers, context, initializer=_install, initargs=setup) as pool:
        pending = {pool.submit(_call, key) for key in keys}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()  # type: ignore[misc]
        finally:
            for future in pending:
                future.cancel()
