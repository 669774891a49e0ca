"""SENSEQUANT_EXECUTOR: the executor a run's steps use, chosen by the code server's environment."""

from __future__ import annotations

import multiprocessing
import sys

import pytest
from dagster import in_process_executor, multiprocess_executor

from sensequant_assets.assets.workers import run_workers
from sensequant_assets.deployment.executors import executor_from_env
from sensequant_assets.settings import SettingsError


def test_by_default_batched_runs_stay_in_their_process_and_unbatched_ones_use_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SENSEQUANT_EXECUTOR", raising=False)
    assert executor_from_env(batched=True) is in_process_executor
    assert executor_from_env(batched=False) is multiprocess_executor
    monkeypatch.setenv("SENSEQUANT_EXECUTOR", "Multiprocess")
    assert executor_from_env(batched=True) is multiprocess_executor
    monkeypatch.setenv("SENSEQUANT_EXECUTOR", "in_process")
    assert executor_from_env(batched=False) is in_process_executor


def test_an_unknown_executor_is_refused_naming_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSEQUANT_EXECUTOR", "k8s")
    with pytest.raises(SettingsError, match=r"SENSEQUANT_EXECUTOR='k8s'.*celery"):
        executor_from_env(batched=True)


def test_celery_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSEQUANT_EXECUTOR", "celery")
    monkeypatch.setitem(sys.modules, "dagster_celery", None)  # as where the extra is not installed
    with pytest.raises(SettingsError, match=r"dagster-celery.*\.\[scaleout\]"):
        executor_from_env(batched=True)


def test_celery_takes_its_broker_and_backend_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dagster_celery", reason="the scaleout extra is not installed (in .venv-scaleout)")
    monkeypatch.setenv("SENSEQUANT_EXECUTOR", "celery")
    monkeypatch.setenv("SENSEQUANT_CELERY_BROKER", "redis://broker:6379/0")
    executor = executor_from_env(batched=True)
    assert executor.name == "celery"
    # configured: a run needs no executor config, and gets the environment's broker and the default backend
    config = executor.apply_config_mapping({})
    assert config.success, config.errors
    assert config.value["config"]["broker"] == "redis://broker:6379/0"
    assert config.value["config"]["backend"] == "rpc://"


def test_a_step_in_a_daemonic_process_computes_in_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's default prefork pool runs tasks in daemonic processes, which may not fork workers."""
    monkeypatch.setenv("SENSEQUANT_RUN_WORKERS", "4")
    assert run_workers() == 4
    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True)
    assert run_workers() == 1
