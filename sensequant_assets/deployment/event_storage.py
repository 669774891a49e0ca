"""Dagster's SQLite event log, keeping its SQLAlchemy engines instead of building one per transaction.

`SqliteEventLogStorage` creates and disposes an engine around every transaction, so each event write
pays the dialect's first-connect set-up again and compiles its statements afresh (SQLAlchemy's
compiled-statement cache lives on the engine). A batched backfill run writes a materialisation per
asset partition, and the daemon a planned event per asset partition of every run it creates: in a
20-partition run this set-up was 14-17 % of the run's CPU. Keeping the engines (a bounded number,
most recently used first) removes it and changes nothing else: the same files and schema, and still
no connection held between transactions (`NullPool`), so other processes lock the files as before.

Configured in `deploy/dagster.yaml` as `event_log_storage`, with `base_dir` the instance's own
`history/runs` directory (where Dagster's default storage keeps the same files, so an existing instance
keeps its history). `make run` writes the path in when it writes the file. A Dagster storage class is
not told which instance directory it belongs to, so the path must be explicit: one taken from
`DAGSTER_HOME` would send the events of an instance opened by path to whichever instance that
variable names. A `base_dir` that is not inside an instance directory (no `dagster.yaml` two levels
up, such as a placeholder left in or a project moved elsewhere) is refused with a message.

The class overrides private methods of Dagster's storage (`_connect`) and repeats the asset-event
part of its `store_event`: `sensequant_tests/test_dagster_private_apis.py` records a hash of each
Dagster method this relies on and fails on an upgrade that changes one (see
docs/dagster_private_apis.md), so that this file is re-checked against the new version.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import DagsterInvariantViolationError, EventLogEntry, Field, StringSource
from dagster._core.events import ASSET_EVENTS
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from sensequant_assets.deployment.devserver import HOME_PLACEHOLDER

MAX_ENGINES = 16  # the index shard plus the runs writing at once, with room to spare


def checked_base_dir(base_dir: str) -> str:
    """`base_dir` if it is an instance's `history/runs` directory, else a ValueError saying why."""
    if HOME_PLACEHOLDER in base_dir:
        raise ValueError(
            f"event_log_storage base_dir {base_dir!r} still holds {HOME_PLACEHOLDER}: write the file with "
            f"`make run` (or devserver.write_instance_yaml), or put this instance's directory in its place"
        )
    path = os.path.abspath(base_dir)
    instance_dir = os.path.dirname(os.path.dirname(path))
    if os.path.basename(os.path.dirname(path)) != "history" or not os.path.isfile(
        os.path.join(instance_dir, "dagster.yaml")
    ):
        raise ValueError(
            f"event_log_storage base_dir {base_dir!r} is not the history/runs directory of a Dagster "
            f"instance (expected <DAGSTER_HOME>/history/runs next to that instance's dagster.yaml)"
        )
    return path


class CachedEngineSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` with one kept engine per shard file (see the module doc)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()  # before super(), which connects
        super().__init__(checked_base_dir(base_dir), inst_data=inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {"base_dir": Field(StringSource, is_required=True)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> CachedEngineSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is None:
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=NullPool,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            self._engines[shard] = engine
            while len(self._engines) > MAX_ENGINES:
                _, oldest = self._engines.popitem(last=False)
                oldest.dispose()
        else:
            self._engines.move_to_end(shard)
        # Checked on every use, not only for a new engine: `wipe` deletes the files and forgets them.
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Write a batch of one run's asset events in one transaction per file.

        Dagster hands the storage a batch (a batched output's materialisations, a new run's planned
        events) when `DAGSTER_EVENT_BATCH_SIZE` is set; its SQLite storage then still writes the events
        one by one, two transactions each (the run's file and the index). The statements here are
        exactly those of `store_event` for an asset event, in the same order; anything else (several
        runs, other event types) is stored event by event as before.
        """
        one_run = len({e.run_id for e in events}) == 1
        assets_only = all(e.is_dagster_event and e.dagster_event_type in ASSET_EVENTS for e in events)
        if not (one_run and assets_only):
            super().store_event_batch(events)
            return
        statements = [self.prepare_insert_event(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            for statement in statements:
                conn.execute(statement)
        with self.index_transaction() as conn:
            for event, statement in zip(events, statements, strict=True):
                with db_result(conn, statement) as result:
                    event_id = result.inserted_primary_key[0]
                if event_id is None:
                    raise DagsterInvariantViolationError("Cannot store asset event tags for null event id.")
                self._store_asset_event_tags(conn, [event], [event_id])
                self._store_asset_event(conn, event, event_id)

    def dispose(self) -> None:
        with self._db_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
        super().dispose()
