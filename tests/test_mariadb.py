"""SQL storage against a real MariaDB server started in a temp dir (Debian mariadb-server)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import peewee
import pytest
from helpers import METER, counter, reading, wait_for
from servers import MariaDBServer
from test_store_support import (
    T0,
    assert_rollups_consistent,
    fetch,
    household,
    raw_rows,
    same_results_as_sqlite,
)

from smlogger.store import (
    SqlWriter,
    Store,
    StoreReader,
    StoreUnavailableError,
    ensure_schema,
    open_database,
    schema_version,
)

pytestmark = pytest.mark.slow  # starts a real MariaDB server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    with MariaDBServer.running(tmp_path_factory.mktemp("mariadb")) as running:
        yield running


def _open(url: str, tmp_path: Path) -> peewee.Database:
    return open_database(url, tmp_path)


def drained(store: Store, timeout: float = 60.0) -> None:
    def done() -> bool:
        store.flush(timeout=0.5)
        status = store.status()
        return status["queue_depth"] == 0 and status["db"] == "ok"

    wait_for(done, timeout, f"the queue to drain ({store.status()})")


def test_schema_is_created_in_a_new_database_and_is_idempotent(
    server: MariaDBServer, tmp_path: Path
) -> None:
    db = _open(server.url("fresh_db"), tmp_path)
    try:
        done = ensure_schema(db, legacy_table=True)
        assert done[0] == "created database fresh_db"
        assert any(a.startswith("migration 1") for a in done)
        assert ensure_schema(db, legacy_table=True) == []
        assert schema_version(db) == 2
        tables = set(db.get_tables())
        assert {
            "meters",
            "readings",
            "rollup_minute",
            "rollup_hour",
            "rollup_day",
            "values",
        } <= tables
        engines = server.query(
            "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'fresh_db'",
            database="fresh_db",
        )
        assert {e for (e,) in engines} == {"InnoDB"}
        types = dict(
            server.query(
                "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = 'fresh_db' AND TABLE_NAME = 'readings'",
                database="fresh_db",
            )
        )
        assert types["time"] == "datetime(6)" and types["p_L1"] == "double"
        keys = server.query(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = "
            "'fresh_db' AND TABLE_NAME = 'readings' AND CONSTRAINT_NAME = 'PRIMARY' "
            "ORDER BY ORDINAL_POSITION",
            database="fresh_db",
        )
        assert keys == [("meter",), ("time",)]
    finally:
        db.close()


def test_rollups_and_queries_match_sqlite(server: MariaDBServer, tmp_path: Path) -> None:
    db = _open(server.url("compare"), tmp_path)
    try:
        same_results_as_sqlite(db, tmp_path)
    finally:
        db.close()


def test_unix_socket_url_and_legacy_table(server: MariaDBServer, tmp_path: Path) -> None:
    db = _open(server.url("legacy", via_socket=True), tmp_path)
    store = Store(db, spool_dir=tmp_path / "spool", legacy_table=True)
    try:
        base = datetime(2024, 5, 1, 12, 0, 0, 400000, tzinfo=timezone.utc)
        for i in range(5):
            store.write(
                reading(base + timedelta(seconds=i), e_sum=12339.7 + i / 10, p_sum=665.0 + i,
                        phases=(200.0, 215.0, 250.0 + i))
            )  # fmt: skip
        drained(store)
        rows = server.query("SELECT * FROM `values` ORDER BY `time`", database="legacy")
        assert len(rows) == 5
        assert rows[0] == (datetime(2024, 5, 1, 12, 0, 0), 12339.7, 665.0, 200.0, 215.0, 250.0)
        columns = server.query(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
            "'legacy' AND TABLE_NAME = 'values' ORDER BY ORDINAL_POSITION",
            database="legacy",
        )
        assert [c for c, _ in columns] == ["time", "e_sum", "p_sum", "p_L1", "p_L2", "p_L3"]
        assert columns[0][1] == "datetime"
    finally:
        store.close()
        db.close()


def test_a_reading_the_database_refuses_is_rejected_without_blocking_the_rest(
    server: MariaDBServer, tmp_path: Path
) -> None:
    db = _open(server.url("poison"), tmp_path)
    store = Store(db, spool_dir=tmp_path / "spool", batch_size=10, sync_interval=1)
    try:
        store.write(reading(T0, e_sum=1.0, p_sum=1.0))
        store.write(reading(T0 + timedelta(seconds=1), meter="x" * 300, e_sum=1.0, p_sum=1.0))
        for i in range(2, 6):
            store.write(reading(T0 + timedelta(seconds=i), e_sum=1.0 + i, p_sum=float(i)))
        wait_for(lambda: store.status()["queue_depth"] == 0, 60, "the queue to move on")
        status = store.status()
        assert status["rejected"] == 1
        assert "Data too long" in str(status["last_rejected"])
        assert status["last_error"] is None  # the writer is fine again
        assert status["written"] == 5
        assert StoreReader(db).meters() == [METER]
    finally:
        store.close()
        db.close()


def test_server_down_for_30_s_loses_nothing_duplicates_nothing_keeps_order(
    tmp_path: Path,
) -> None:
    with MariaDBServer.running(tmp_path / "mariadb") as srv:
        db = _open(srv.url(), tmp_path)
        store = Store(db, spool_dir=tmp_path / "spool", batch_size=50, sync_interval=0.2)
        # a trigger records the order in which rows reach the server
        srv.query("CREATE TABLE arrivals (seq INT AUTO_INCREMENT PRIMARY KEY, t DATETIME(6))")
        srv.query(
            "CREATE TRIGGER note_arrival AFTER INSERT ON readings FOR EACH ROW "
            "INSERT INTO arrivals (t) VALUES (NEW.time)"
        )
        written: list[datetime] = []
        stop = threading.Event()
        failures: list[BaseException] = []

        def produce() -> None:
            source = household(T0, 10**6, interval=1.0, seed=5)
            try:
                while not stop.is_set():
                    item = next(source)
                    store.write(item)  # never blocks on the dead server
                    written.append(item.time)
                    time.sleep(0.05)
            except BaseException as exc:
                failures.append(exc)

        producer = threading.Thread(target=produce)
        producer.start()
        try:
            wait_for(lambda: counter(store.status(), "written") >= 50, 30, "readings to flow")
            srv.stop()
            down_at = time.monotonic()
            wait_for(lambda: store.status()["db"] == "down", 15, "the store to notice")
            depth_early = counter(store.status(), "queue_depth")
            written_early = len(written)
            time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
            status = store.status()
            written_late = len(written)
            assert status["db"] == "down" and status["last_error"]
            # what the producer wrote meanwhile kept queueing (at its own pace: a loaded
            # machine writes fewer than 20 a second); a reading may be between append and status
            grown = counter(status, "queue_depth") - depth_early
            assert written_late - written_early > 50, (written_early, written_late)  # it ran
            meanwhile = written_late - written_early
            assert grown >= 0.9 * meanwhile, (grown, meanwhile)
            # the page's history meanwhile: the readings waiting for the server
            with pytest.raises(StoreUnavailableError) as down:
                StoreReader(db, store.pending).history(METER, T0, T0 + timedelta(hours=2))
            partial = down.value.partial
            assert partial is not None and partial["source"] == "pending"
            shown = [p["t"] for p in partial["points"]]
            # (nothing is committed while the server is down: every queued reading is pending)
            assert len(shown) >= counter(status, "queue_depth") and shown == sorted(shown)
            # (one reading may be pending before the producer appended it to `written`)
            assert len(set(shown) - {t.timestamp() for t in list(written)}) <= 1
            srv.start()
            time.sleep(5)  # readings keep flowing while the backlog drains
        finally:
            stop.set()
            producer.join()
        assert not failures
        drained(store, timeout=90)
        status = store.status()
        assert status["rejected"] == 0
        # a commit that reached the server as it went down is replayed and skipped
        assert counter(status, "written") + counter(status, "skipped_existing") == len(written)
        times = [row["ts"] for row in raw_rows(db)]
        assert times == [t.timestamp() for t in written]
        arrivals = srv.query("SELECT t FROM arrivals ORDER BY seq")
        assert [t.replace(tzinfo=timezone.utc) for (t,) in arrivals] == written
        assert fetch(db, "SELECT SUM(n) FROM rollup_minute")[0][0] == len(written)
        assert_rollups_consistent(db)
        store.close()
        db.close()


def test_cli_db_init_and_export(
    server: MariaDBServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from smlogger.cli import main

    url = server.url("cli_db")
    assert main(["db-init", "--db-url", url, "--legacy-table"]) == 0
    out = capsys.readouterr().out
    assert "created database cli_db" in out and "created legacy table values" in out
    assert "***" in out and "s3cret" not in out  # the password never shows
    db = _open(url, tmp_path)
    store = Store(db, spool_dir=tmp_path / "spool")
    try:
        for r in household(T0, 30, seed=3):
            store.write(r)
        drained(store)
    finally:
        store.close()
        db.close()
    assert main(["export", "--db-url", url, "--format", "ndjson"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 30
    assert main(["db-init", "--db-url", url]) == 0
    assert "schema up to date (version 2)" in capsys.readouterr().out


def test_two_loggers_adding_bases_to_one_meter_keep_both(
    server: MariaDBServer, tmp_path: Path
) -> None:
    """The `obis_bases` list is read, extended and written back inside a batch: a second
    logger doing the same for the same meter must wait for the first one's commit and extend
    what it wrote, not overwrite it with the list it had read before."""
    url = server.url("two_writers")
    server.query("CREATE DATABASE IF NOT EXISTS two_writers", database="mysql")
    first_db, second_db = _open(url, tmp_path / "a"), _open(url, tmp_path / "b")
    ensure_schema(first_db)
    first, second = SqlWriter(first_db), SqlWriter(second_db)
    first.book.add("base-a", {"1-0:96.1.0*255": ["AAA", None]})
    second.book.add("base-b", {"1-0:96.1.0*255": ["BBB", None]})
    meter = first.meter_key(METER, T0)
    assert second.meter_key(METER, T0) == meter
    places: dict[str, int | None] = {}

    def second_batch() -> None:
        with second_db.atomic():
            places["b"] = second.base_index(meter, "base-b")

    other = threading.Thread(target=second_batch)
    try:
        with first_db.atomic():
            places["a"] = first.base_index(meter, "base-a")
            other.start()
            # the second logger is inside its batch, waiting on the meter's row (the process
            # list, not INNODB_TRX: that one is a cache refreshed only when not read for 0.1 s)
            wait_for(
                lambda: (
                    server.query(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                        "WHERE INFO LIKE '%meters%' AND ID <> CONNECTION_ID()",
                        database="mysql",
                    )[0][0]
                    == 1
                ),
                20,
                "the second writer to wait for the first",
            )
        other.join(20)
        assert not other.is_alive()
        stored = json.loads(fetch(first_db, "SELECT obis_bases FROM meters")[0][0])
        assert [key for key, _ in stored] == ["base-a", "base-b"]
        assert places == {"a": 0, "b": 1}
    finally:
        other.join(20)
        first_db.close()
        second_db.close()
