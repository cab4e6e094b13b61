"""SQL storage against a real PostgreSQL server (Debian postgresql: initdb in a temp dir, run as
the unprivileged `postgres` user when the tests run as root)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import METER, reading
from servers import PostgresServer
from test_store_support import (
    T0,
    assert_rollups_consistent,
    fetch,
    household,
    same_results_as_sqlite,
)

from smlogger.store import Store, StoreReader, ensure_schema, open_database, schema_version

pytestmark = pytest.mark.slow  # starts a real PostgreSQL server


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with PostgresServer.running() as running:
        yield running


def test_schema_in_a_new_database(server: PostgresServer, tmp_path: Path) -> None:
    db = open_database(server.url("fresh"), tmp_path)
    try:
        done = ensure_schema(db, legacy_table=True)
        assert done[0] == "created database fresh"
        assert ensure_schema(db, legacy_table=True) == []
        assert schema_version(db) == 2
        assert {"meters", "readings", "rollup_day", "values"} <= set(db.get_tables())
        types = dict(
            fetch(
                db,
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'readings'",
            )
        )
        assert types["time"] == "timestamp without time zone"
        assert types["p_L1"] == "double precision"
    finally:
        db.close()


def test_rollups_and_queries_match_sqlite(server: PostgresServer, tmp_path: Path) -> None:
    db = open_database(server.url("compare"), tmp_path)
    try:
        same_results_as_sqlite(db, tmp_path)
    finally:
        db.close()


def test_legacy_table_and_a_server_restart(server: PostgresServer, tmp_path: Path) -> None:
    db = open_database(server.url("restart"), tmp_path)
    # batches every second: the writer notices the server going away within the test's wait
    store = Store(db, spool_dir=tmp_path / "spool", legacy_table=True, sync_interval=1)
    reader = StoreReader(db)
    try:
        readings = list(household(T0, 40, seed=8))
        for r in readings[:20]:
            store.write(r)
        store.flush(timeout=10)
        assert store.status()["written"] == 20
        # this thread now holds a connection, which dies with the server
        assert len(reader.history(METER, T0, T0 + timedelta(minutes=5))["points"]) == 20
        server.stop()
        for r in readings[20:]:
            store.write(r)
        deadline = time.monotonic() + 15
        while store.status()["db"] != "down" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.status()["db"] == "down"
        assert store.status()["queue_depth"] == 20
        server.start()
        deadline = time.monotonic() + 60
        while store.status()["queue_depth"] and time.monotonic() < deadline:
            store.flush(timeout=1.0)
        assert store.status()["queue_depth"] == 0
        # the read side drops the dead connection and reconnects
        history = reader.history(METER, T0, T0 + timedelta(minutes=5))
        assert len(history["points"]) == 40
        # a batch the server committed while shutting down, without telling the client, is
        # replayed and skipped: the rows are all there once, whatever the counter says
        assert fetch(db, "SELECT COUNT(*), COUNT(DISTINCT time) FROM readings") == [(40, 40)]
        assert_rollups_consistent(db)
        legacy = fetch(db, 'SELECT "time", e_sum FROM "values" ORDER BY "time"')
        assert len(legacy) == 40
        assert legacy[0] == (datetime(2024, 3, 30, 22, 0, 1), readings[0].e_sum)
        store.write(reading(datetime(2024, 4, 1, tzinfo=timezone.utc), e_sum=99999.0))
    finally:
        store.close()
        db.close()
