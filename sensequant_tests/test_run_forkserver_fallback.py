"""A Dagster upgrade that moves or changes the fork server's private run entry must not fail runs.

The fork server checks Dagster's `execute_run_command.callback` at start-up, before it loads the code
or forks anything; if the check fails it reports an error, and the launcher launches runs through
the code server, as for any fork server that cannot start.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster._cli.api
import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test, instance_for_test, poll_for_finished_run
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import PythonFileTarget

from sensequant_assets.deployment import run_forkserver
from sensequant_assets.deployment.run_launcher import RUN_WORKER_TAG, ForkServer, ForkServerError

JOBS = """
from pathlib import Path
from dagster import Definitions, in_process_executor, job, op

@op
def record(context):
    (Path({out!r}) / f"{{context.run_id}}.txt").write_text("ran")

@job(executor_def=in_process_executor)
def ok_job():
    record()

defs = Definitions(jobs=[ok_job])
"""

# Loaded by every Python started with this directory on PYTHONPATH; acts in the fork server only,
# where it removes Dagster's run entry as an upgrade that moved it would.
HOOK = """
with open("/proc/self/cmdline", "rb") as cmdline:
    if b"sensequant_assets.deployment.run_forkserver" in cmdline.read():
        import dagster._cli.api

        del dagster._cli.api.execute_run_command
"""


def _other_signature(run_args: str) -> None:
    """A later Dagster might take the run arguments another way."""


def _with_an_optional_parameter(
    input_json: str | None, compressed_input_json: str | None, retries: int = 1
) -> None:
    """A later Dagster might add such a parameter: the child still calls it as before."""


@pytest.mark.parametrize(
    ("callback", "why"),
    [
        (None, "is missing or not callable"),
        (_other_signature, "no longer takes .* missing a required argument"),
    ],
)
def test_a_changed_run_entry_is_refused_at_start_up(monkeypatch, callback: object, why: str) -> None:
    monkeypatch.setattr(dagster._cli.api.execute_run_command, "callback", callback)
    with pytest.raises(run_forkserver.RunEntryError, match=why):
        run_forkserver.run_entry()


def test_a_moved_run_entry_is_refused_at_start_up(monkeypatch) -> None:
    monkeypatch.delattr(dagster._cli.api, "execute_run_command")
    with pytest.raises(run_forkserver.RunEntryError, match="cannot be imported"):
        run_forkserver.run_entry()


def test_an_entry_that_still_takes_our_arguments_is_accepted(monkeypatch) -> None:
    monkeypatch.setattr(dagster._cli.api.execute_run_command, "callback", _with_an_optional_parameter)
    assert run_forkserver.run_entry() is _with_an_optional_parameter


@pytest.fixture
def hooked(tmp_path: Path, monkeypatch) -> None:
    """Python processes started from now on load HOOK."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))


def test_the_fork_server_reports_a_moved_entry_before_loading_any_code(hooked: None) -> None:
    # The origin is never read: the entry is checked first.
    with pytest.raises(ForkServerError, match=r"RunEntryError: .*execute_run_command"):
        ForkServer(sys.executable, "not an origin", start_timeout=120)


@pytest.fixture
def code_server(tmp_path: Path) -> Iterator[tuple[DagsterInstance, WorkspaceProcessContext, Path]]:
    out, jobs = tmp_path / "out", tmp_path / "jobs.py"
    out.mkdir()
    (tmp_path / "home").mkdir()
    jobs.write_text(JOBS.format(out=str(out)))
    launcher = {"module": "sensequant_assets.deployment.run_launcher", "class": "ForkingRunLauncher"}
    overrides = {"run_launcher": launcher, "run_monitoring": {"enabled": False}}
    with instance_for_test(overrides=overrides, temp_dir=str(tmp_path / "home")) as instance:
        target = PythonFileTarget(
            python_file=str(jobs), attribute=None, working_directory=str(tmp_path), location_name="forkable"
        )
        with WorkspaceProcessContext(instance, target) as context:
            context.create_request_context().get_code_location("forkable")  # started before the hook
            yield instance, context, out


def test_runs_go_through_the_code_server_when_the_fork_servers_entry_moved(code_server, hooked: None) -> None:
    instance, context, out = code_server
    workspace = context.create_request_context()
    remote_job = (
        workspace.get_code_location("forkable").get_repository("__repository__").get_full_job("ok_job")
    )
    run = create_run_for_test(
        instance,
        job_name="ok_job",
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace)
    poll_for_finished_run(instance, run.run_id, timeout=120)
    finished = instance.get_run_by_id(run.run_id)
    assert finished is not None and finished.status == DagsterRunStatus.SUCCESS
    assert (out / f"{run.run_id}.txt").read_text() == "ran"
    assert RUN_WORKER_TAG not in finished.tags  # not a fork: launched by the code server
    messages = [e.message for e in instance.all_logs(run.run_id) if e.message]
    assert any(
        "Could not start the run in a preloaded worker" in m and "RunEntryError" in m for m in messages
    ), messages
