"""A pre-imported run worker that forks one child per Dagster run (started by `run_launcher`).

Dagster starts every run in a fresh Python process that imports Dagster, pandas, LightGBM,
scikit-learn and the asset graph again: about 3 s of CPU per run on the benchmark machine, more
than a 20-partition run spends training. This process imports all of that once (by loading the
code location's repository), then forks a child per run that executes it exactly as
`dagster api execute_run` does. A fork costs milliseconds and shares the imported pages.

It serves runs only while the code it imported is current: before every fork it compares the
modification times of every imported module file with those seen at start-up and, if any file
changed (an edited asset, an upgraded package), answers `stale` from then on, so that the
launcher starts a fresh server and closes this one, which exits once its children have. A child
that dies without finishing its run (killed, out of memory) has its run marked failed here, as
Dagster's code server does for the processes it starts.

A child runs Dagster's private entry point for `dagster api execute_run` (`run_entry`). At start-up,
before loading the code, the server checks that this entry is still there and still takes the
arguments passed to it; if a Dagster upgrade moved or changed it, the server answers `{"error": ...}`
and exits, and the launcher launches runs through the code server as for any failed start, instead
of forking children that would all fail (see docs/dagster_private_apis.md).

Protocol, one JSON object per line. stdin: `{"run_args": <serialised ExecuteRunArgs>}`; stdout:
`{"ready": <pid>}` once the code is loaded (or `{"error": ...}` and exit), then per request
`{"pid": <child pid>, "start": <child start time>}` or `{"stale": <why>}`. Standard output is
moved to standard error before anything else, so nothing but replies reaches the launcher.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import selectors
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

RUN_ENTRY = "dagster._cli.api.execute_run_command.callback"  # the function `dagster api execute_run` runs


class RunEntryError(RuntimeError):
    """Dagster's run entry point is gone or takes other arguments (the server must not start)."""


def process_start_time(pid: int, *, alive_only: bool = True) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if there is no such process
    (with `alive_only`, also when it has exited and awaits reaping).

    A pid and its start time name a process for good; a pid alone may be reused.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    state, start = fields[0], fields[19]
    return None if alive_only and state in ("Z", "X") else start


def module_files() -> dict[str, int]:
    """Modification time (ns) of the file of every imported module."""
    files: dict[str, int] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path not in files:
            try:
                files[path] = os.stat(path).st_mtime_ns
            except OSError:
                continue
    return files


def changed_file(files: dict[str, int]) -> str | None:
    """The first imported file that changed or vanished since `files` was taken, if any."""
    for path, mtime in files.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return path
        except OSError:
            return path
    return None


def run_entry() -> Callable[..., Any]:
    """Dagster's entry point for `dagster api execute_run`, checked to accept what `run_child` passes.

    It is private to Dagster, so an upgrade may move it or change its parameters: checked once at
    start-up, a change stops this server before it forks a run, rather than failing every run.
    """
    try:
        from dagster._cli.api import execute_run_command
    except ImportError as exc:
        raise RunEntryError(f"{RUN_ENTRY} cannot be imported: {exc}") from exc
    callback = getattr(execute_run_command, "callback", None)
    if not callable(callback):
        raise RunEntryError(f"{RUN_ENTRY} is missing or not callable")
    try:
        inspect.signature(callback).bind(input_json="", compressed_input_json=None)
    except (TypeError, ValueError) as exc:
        raise RunEntryError(
            f"{RUN_ENTRY} no longer takes (input_json, compressed_input_json): {exc}"
        ) from exc
    return callback


def preload(serialized_origin: str) -> None:
    """Import the code location and the run-execution machinery a child would otherwise import."""
    from dagster import deserialize_value
    from dagster._core.execution.api import execute_run_iterator  # noqa: F401
    from dagster._core.executor.in_process import InProcessExecutor  # noqa: F401
    from dagster._core.origin import RepositoryPythonOrigin
    from dagster._utils.hosted_user_process import recon_repository_from_origin

    origin = deserialize_value(serialized_origin, RepositoryPythonOrigin)
    recon_repository_from_origin(origin).get_definition()


def run_child(entry: Callable[..., Any], run_args: str, close: list[int]) -> NoReturn:
    """In the forked child: execute the run as `dagster api execute_run` would, then exit."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in close:
            os.close(fd)
        entry(input_json=run_args, compressed_input_json=None)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def report_lost_run(run_args: str, pid: int, status: int) -> None:
    """Mark the run of a child that exited abnormally as failed, unless it finished."""
    from dagster import DagsterInstance, deserialize_value
    from dagster._grpc.types import ExecuteRunArgs

    args = deserialize_value(run_args, ExecuteRunArgs)
    if args.instance_ref is None:
        return
    how = (
        f"was killed by signal {os.WTERMSIG(status)}"
        if os.WIFSIGNALED(status)
        else f"exited with status {os.WEXITSTATUS(status)}"
    )
    with DagsterInstance.from_ref(args.instance_ref) as instance:
        fail_unfinished_run(
            instance, args.run_id, f"The run worker (pid {pid}) {how} before the run finished."
        )


def fail_unfinished_run(instance: Any, run_id: str, message: str) -> Any:
    """Mark a run whose process is gone as failed, unless it finished; the run, or None if it was
    never created."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_failed(run, message)
    return run


def drain(fd: int) -> None:
    """Empty a non-blocking pipe."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


class Server:
    """The request loop: forks on each request, reaps children as SIGCHLD arrives."""

    def __init__(self, entry: Callable[..., Any], requests: int, replies: Any, files: dict[str, int]) -> None:
        self.entry = entry
        self.requests = requests
        self.replies = replies
        self.files = files
        self.children: dict[int, str] = {}  # pid -> serialised run args
        self.buffer = b""
        self.stale: str | None = None
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def reply(self, **payload: Any) -> None:
        self.replies.write(json.dumps(payload) + "\n")
        self.replies.flush()

    def serve(self) -> None:
        """Serve until the launcher closes its end, then wait for the children still running."""
        selector = selectors.DefaultSelector()
        selector.register(self.requests, selectors.EVENT_READ)
        selector.register(self.wake_r, selectors.EVENT_READ)
        listening = True
        while listening or self.children:
            for key, _ in selector.select(timeout=5.0):
                if key.fd == self.wake_r:
                    drain(self.wake_r)
                elif not self.read_requests():
                    selector.unregister(self.requests)
                    listening = False
            self.reap()

    def read_requests(self) -> bool:
        """Handle every complete request line; False once the launcher has gone (end of input)."""
        chunk = os.read(self.requests, 65536)
        if not chunk:
            return False
        self.buffer += chunk
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self.handle(json.loads(line)["run_args"])
        return True

    def handle(self, run_args: str) -> None:
        if self.stale is None:
            changed = changed_file(self.files)
            if changed is not None:
                self.stale = f"{changed} changed since this worker imported it"
        if self.stale is not None:
            self.reply(stale=self.stale)  # the launcher starts a fresh server and closes this one
            return
        pid = os.fork()
        if pid == 0:
            run_child(self.entry, run_args, [self.requests, self.wake_r, self.wake_w, self.replies.fileno()])
        self.children[pid] = run_args
        self.reply(pid=pid, start=process_start_time(pid, alive_only=False))  # it may have exited already

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run_args = self.children.pop(pid, None)
            if run_args is not None and status != 0:
                try:
                    report_lost_run(run_args, pid, status)
                except Exception:  # never let one lost run stop the server
                    traceback.print_exc()


def main() -> None:
    # Replies get their own copy of stdout; stdout itself becomes stderr for everything printed here
    # and in the children, and stdin (the requests) is kept off the children's standard input.
    requests = os.dup(0)
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        entry = run_entry()  # first: a changed entry is reported without loading the code
        preload(sys.argv[1])
    except BaseException as exc:
        traceback.print_exc()
        replies.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        replies.flush()
        sys.exit(1)
    server = Server(entry, requests, replies, module_files())
    server.reply(ready=os.getpid())
    with contextlib.suppress(KeyboardInterrupt):  # `dagster dev` stopping: its process group gets SIGINT
        server.serve()


if __name__ == "__main__":
    main()
