"""Guards on the private Dagster APIs SenseQuant uses (listed in docs/dagster_private_apis.md).

Dagster may change anything under `dagster._` in any release. Each test here fails on an upgrade that
changes one of them and names the file of ours to re-check: a signature (parameter names, kinds and
defaults, not annotations), a shape we read (fields, members), and, where we copied Dagster's code
or override its private methods, a hash of that Dagster source (its tokens without comments or
layout, so that reformatting alone does not fail). After re-checking our file against the new
Dagster, record the new value the failure prints, and the version in `RECORDED_ON`.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import textwrap
import tokenize
from collections.abc import Callable
from typing import Any

import dagster
import pytest

from sensequant_assets.deployment import run_forkserver

# The Dagster versions every recorded value below was checked on: 1.13.28 is the main environment's,
# 1.13.27 the scale-out one's (its Dagster libraries pin it; the sensors run there too). Another release
# is not refused as such: the values themselves are what must hold (a patch release that keeps them all
# passes, one that changes what we use fails, naming our file to re-check).
RECORDED_ON = ("1.13.27", "1.13.28")
RECORDED = " and ".join(RECORDED_ON)

FORKSERVER = "sensequant_assets/deployment/run_forkserver.py"
LAUNCHER = "sensequant_assets/deployment/run_launcher.py"
EVENT_STORAGE = "sensequant_assets/deployment/event_storage.py"
SENSORS = "sensequant_assets/sensors.py and sensequant_assets/follow.py"
CHECKS = "sensequant_assets/assets/checks.py"

SQLITE_LOG = "dagster._core.storage.event_log.sqlite.sqlite_event_log:SqliteEventLogStorage"
SQL_LOG = "dagster._core.storage.event_log.sql_event_log:SqlEventLogStorage"
SUBSET = "dagster._core.definitions.assets.graph.asset_graph_subset:AssetGraphSubset"
GRAPH = "dagster._core.definitions.assets.graph.base_asset_graph:BaseAssetGraph"

# (private function or method, its parameters as `shape` prints them, our file that calls or overrides it)
SIGNATURES = [
    ("dagster._cli.api:execute_run_command.callback", "(input_json, compressed_input_json)", FORKSERVER),
    ("dagster._utils.hosted_user_process:recon_repository_from_origin", "(origin)", FORKSERVER),
    (
        "dagster._grpc.types:ExecuteRunArgs.__new__",
        "(cls, job_origin, run_id, instance_ref, set_exit_code_on_failure=)",
        f"{FORKSERVER} and {LAUNCHER}",
    ),
    (f"{SQLITE_LOG}._initdb", "(self, engine, for_index_shard=)", EVENT_STORAGE),
    (f"{SQLITE_LOG}.conn_string_for_shard", "(self, shard_name)", EVENT_STORAGE),
    (f"{SQL_LOG}.prepare_insert_event", "(self, event)", EVENT_STORAGE),
    (f"{SQL_LOG}._store_asset_event_tags", "(self, conn, events, event_ids)", EVENT_STORAGE),
    (f"{SQL_LOG}._store_asset_event", "(self, conn, event, event_id)", EVENT_STORAGE),
    ("dagster._core.storage.sqlalchemy_compat:db_result", "(conn, query)", EVENT_STORAGE),
    (
        f"{SUBSET}.from_asset_partition_set",
        "(asset_partitions_set, asset_graph, validate_time_range=)",
        SENSORS,
    ),
    (f"{SUBSET}.iterate_asset_partitions", "(self)", SENSORS),
    ("dagster:RunRequest.for_asset_graph_subset", "(asset_graph_subset, tags)", SENSORS),
    (f"{GRAPH}.get_parents_partitions", "(self, asset_key, partition_key=)", SENSORS),
    (f"{GRAPH}.get_children_partitions", "(self, asset_key, partition_key=)", SENSORS),
    ("dagster:DagsterInstance.get_backfills", "(self, filters=, cursor=, limit=, status=)", SENSORS),
    ("dagster:DefaultRunLauncher.launch_run", "(self, context)", LAUNCHER),
    ("dagster:DefaultRunLauncher.terminate", "(self, run_id)", LAUNCHER),
    ("dagster._core.launcher.base:RunLauncher.check_run_worker_health", "(self, run)", LAUNCHER),
    ("dagster._core.launcher.base:LaunchRunContext", "(dagster_run, workspace)", LAUNCHER),
    (
        "dagster._core.launcher.base:CheckRunHealthResult.__new__",
        "(_cls, status, msg=, transient=, run_worker_id=)",
        LAUNCHER,
    ),
    ("dagster._serdes:ConfigurableClassData", "(module_name, class_name, config_yaml)", LAUNCHER),
]

# (Dagster code we copied or whose private behaviour our overrides rely on, `source_hash`, why)
SOURCES = [
    (f"{SQLITE_LOG}.store_event", "19959592f7184cfc", "store_event_batch repeats its asset-event statements"),
    (f"{SQLITE_LOG}._connect", "e82acfe8f371af8e", "_connect is replaced by one that keeps engines"),
    (f"{SQLITE_LOG}.__init__", "89aa39176714dd94", "sets _db_lock and _initialized_dbs, connects at once"),
    (f"{SQLITE_LOG}.wipe", "f15dc8980ceeee6a", "resets _initialized_dbs, which _engine checks on each use"),
    (f"{SQLITE_LOG}.dispose", "9ea1bff8a7a43456", "dispose is extended to dispose the kept engines"),
    (f"{SQLITE_LOG}.run_connection", "f9e02af1b73f962c", "must reach _connect"),
    (f"{SQLITE_LOG}.index_connection", "55cff98fefafd9d4", "must reach _connect"),
    (f"{SQL_LOG}.index_transaction", "776c8d3bc49dfed7", "store_event_batch writes the index through it"),
    (f"{SQLITE_LOG}.store_event_batch", "9cfb56ce6677a04b", "bypassed for one run's asset events"),
]


def load(path: str, ours: str) -> Any:
    """`module:attr.attr`, failing with our message if it moved."""
    module_name, _, rest = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in rest.split(".") if rest else []:
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        pytest.fail(
            f"Dagster {dagster.__version__} has no {path} any more ({exc}; it was there in {RECORDED}). "
            f"Re-check {ours} against the new Dagster and docs/dagster_private_apis.md."
        )
    return obj


def shape(func: Callable[..., Any]) -> str:
    """The parameters of `func` as `(a, b=, *args, c=, **kw)`: names, kinds and defaults, no types."""
    parts, star = [], False
    for p in inspect.signature(func).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            star = True
        elif p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        else:
            if p.kind is p.KEYWORD_ONLY and not star:
                parts.append("*")
                star = True
            parts.append(p.name + ("=" if p.default is not p.empty else ""))
    return f"({', '.join(parts)})"


def token_hash(source: str) -> str:
    """A hash of Python source that ignores comments, blank lines and layout."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    lines = io.StringIO(textwrap.dedent(source)).readline
    tokens = [t.string for t in tokenize.generate_tokens(lines) if t.type not in skip]
    return hashlib.sha256(" ".join(tokens).encode()).hexdigest()[:16]


def source_hash(obj: Any) -> str:
    return token_hash(inspect.getsource(obj))


def changed(path: str, what: str, found: str, recorded: str, ours: str) -> str:
    return (
        f"Dagster {dagster.__version__} changed the {what} of its private {path}: {found} (recorded on "
        f"Dagster {RECORDED}: {recorded}). Re-check {ours} against the new Dagster source; once it is "
        f"right, record {found!r} for it in sensequant_tests/test_dagster_private_apis.py, make "
        f"RECORDED_ON ({dagster.__version__!r},) there, and update docs/dagster_private_apis.md."
    )


@pytest.mark.parametrize(("path", "recorded", "ours"), SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_private_signatures_are_as_recorded(path: str, recorded: str, ours: str) -> None:
    found = shape(load(path, ours))
    assert found == recorded, changed(path, "signature", found, recorded, ours)


@pytest.mark.parametrize(("path", "recorded", "why"), SOURCES, ids=[s[0] for s in SOURCES])
def test_copied_or_overridden_dagster_source_is_as_recorded(path: str, recorded: str, why: str) -> None:
    obj = load(path, EVENT_STORAGE)
    found = source_hash(obj)
    where = f"{inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]}"
    assert found == recorded, changed(
        path, f"source (at {where}; ours: {why})", found, recorded, EVENT_STORAGE
    )


def test_the_hash_ignores_layout_and_comments_but_not_code() -> None:
    recorded = token_hash("def f(a):\n    return a + 1  # one more\n")
    assert token_hash("    def f(a):\n        # one more\n\n        return a+1\n") == recorded
    assert token_hash("def f(a):\n    return a + 2\n") != recorded


def test_the_fork_servers_start_up_check_accepts_the_installed_run_entry() -> None:
    from dagster._cli.api import execute_run_command

    assert run_forkserver.run_entry() is execute_run_command.callback


def test_shapes_the_sensors_read_are_as_recorded() -> None:
    from dagster._core.definitions.events import AssetKeyPartitionKey
    from dagster._core.execution.asset_backfill import AssetBackfillData
    from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus, PartitionBackfill

    where = f"Re-check {SENSORS} against Dagster {dagster.__version__} (recorded on {RECORDED})."
    assert AssetKeyPartitionKey._fields == ("asset_key", "partition_key"), where
    assert BulkActionStatus.REQUESTED.value == "REQUESTED", where
    by_tag = BulkActionsFilter(tags={"k": "v"})
    by_status = BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])
    assert (by_tag.tags, by_status.statuses) == ({"k": "v"}, [BulkActionStatus.REQUESTED]), where
    fields = inspect.signature(AssetBackfillData).parameters
    assert {"target_subset", "materialized_subset", "failed_and_downstream_subset"} <= set(fields), where
    backfill = inspect.signature(PartitionBackfill.__new__).parameters
    assert {"backfill_id", "asset_backfill_data"} <= set(backfill), where


def test_values_the_deployment_code_reads_are_as_recorded() -> None:
    from dagster._core.events import ASSET_EVENTS
    from dagster._core.launcher.base import WorkerStatus
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SQLITE_BUSY_TIMEOUT_SECONDS

    assert {t.value for t in ASSET_EVENTS} >= {"ASSET_MATERIALIZATION", "ASSET_MATERIALIZATION_PLANNED"}, (
        f"Re-check {EVENT_STORAGE}: Dagster {dagster.__version__} changed ASSET_EVENTS"
    )
    assert isinstance(SQLITE_BUSY_TIMEOUT_SECONDS, int | float), f"Re-check {EVENT_STORAGE}"
    assert {WorkerStatus.RUNNING.value, WorkerStatus.FAILED.value} == {"RUNNING", "FAILED"}, (
        f"Re-check {LAUNCHER}"
    )
    launcher = dagster.DefaultRunLauncher()
    assert isinstance(launcher._run_ids, set), f"Re-check {LAUNCHER}: it adds forked runs to _run_ids"
    # Imported by the fork server's preload only: if they move, it fails to start and runs go through
    # the code server (the launcher's fallback); this says why before it happens.
    load("dagster._core.execution.api:execute_run_iterator", FORKSERVER)
    load("dagster._core.executor.in_process:InProcessExecutor", FORKSERVER)
    load("dagster._core.origin:RepositoryPythonOrigin", FORKSERVER)
    # The launcher forks only with this run storage; if it moves, the launcher module fails to import.
    sqlite_runs = load("dagster._core.storage.runs.sqlite.sqlite_run_storage:SqliteRunStorage", LAUNCHER)
    runs = load("dagster._core.storage.runs:RunStorage", LAUNCHER)
    assert issubclass(sqlite_runs, runs), f"Re-check {LAUNCHER}: SqliteRunStorage is no run storage any more"


def test_the_asset_check_target_record_is_as_recorded() -> None:
    """`checks.py` falls back to one result per check without it; this says when that would happen."""
    target = load(
        "dagster._core.definitions.asset_checks.asset_check_evaluation:AssetCheckEvaluationTargetMaterializationData",
        CHECKS,
    )
    made = target(storage_id=1, run_id="r", timestamp=0.0)
    assert (made.storage_id, made.run_id, made.timestamp) == (1, "r", 0.0), f"Re-check {CHECKS}"
