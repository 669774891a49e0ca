"""Where a run's steps execute, chosen by `SENSEQUANT_EXECUTOR` (the code server's environment).

On one machine a batched run's steps share its process (`in_process`: no per-step Python start-up;
the batched steps fan out over the cores themselves) and unbatched runs use Dagster's multiprocess
executor. On more than one machine (`celery`, deploy/scaleout/) each step is a Celery task that a
worker anywhere takes from the broker. A Celery worker must use the `solo` pool: the default prefork
pool runs tasks in daemonic processes, which may not start the batched steps' worker processes
("daemonic processes are not allowed to have children").
"""

from __future__ import annotations

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from sensequant_assets.settings import SettingsError, env

EXECUTORS = ("in_process", "multiprocess", "celery")


def executor_from_env(batched: bool) -> ExecutorDefinition:
    """The executor `SENSEQUANT_EXECUTOR` names; by default in-process for batched runs, else
    multiprocess. `celery` needs the `scaleout` extra and reads its broker and result backend from
    `SENSEQUANT_CELERY_BROKER` and `SENSEQUANT_CELERY_BACKEND` (the workers must use the same)."""
    kind = env("SENSEQUANT_EXECUTOR").lower()
    if not kind:
        return in_process_executor if batched else multiprocess_executor
    if kind not in EXECUTORS:
        raise SettingsError(f"SENSEQUANT_EXECUTOR={kind!r} is not one of {EXECUTORS}")
    if kind == "in_process":
        return in_process_executor
    if kind == "multiprocess":
        return multiprocess_executor
    try:
        from dagster_celery import celery_executor
    except ImportError as exc:
        raise SettingsError(
            "SENSEQUANT_EXECUTOR=celery needs dagster-celery: pip install -e '.[scaleout]'"
        ) from exc
    broker, backend = env("SENSEQUANT_CELERY_BROKER"), env("SENSEQUANT_CELERY_BACKEND")
    return celery_executor.configured({"broker": broker, "backend": backend}, name="celery")
