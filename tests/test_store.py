"""SQL storage on SQLite: URLs, schema/migrations, rollups, history, consumption, legacy table,
store interval, the disk queue behind a locked database, kill -9, export."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import peewee
import pytest
from helpers import METER, known, reading
from test_store_support import (
    T0,
    assert_rollups_consistent,
    execute,
    fetch,
    household,
    raw_rows,
)

from smlogger.aggregate import Aggregator
from smlogger.reading import Reading
from smlogger.store import (
    MIGRATIONS,
    SqlWriter,
    Store,
    StoredRow,
    StoreReader,
    ensure_schema,
    nice_step,
    open_database,
    redact_url,
    rollup_for_step,
    schema_version,
)
from smlogger.timefmt import iso

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> Iterator[peewee.Database]:
    database = open_database(None, tmp_path)
    yield database
    database.close()


@pytest.fixture
def store(db: peewee.Database, tmp_path: Path) -> Iterator[Store]:
    st = Store(db, spool_dir=tmp_path / "spool")
    yield st
    st.close()


@pytest.fixture
def reader(db: peewee.Database) -> StoreReader:
    return StoreReader(db)


def wait_drained(store: Store, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        store.flush(timeout=1.0)
        if store.status()["queue_depth"] == 0 and store.status()["db"] == "ok":
            return
    raise AssertionError(f"queue not drained: {store.status()}")


# ---- URLs ---------------------------------------------------------------------------------


def test_default_database_is_sqlite_in_the_data_dir_with_wal(tmp_path: Path) -> None:
    db = open_database(None, tmp_path / "data")
    assert isinstance(db, peewee.SqliteDatabase)
    assert Path(db.database) == tmp_path / "data" / "smlogger.db"
    ensure_schema(db)
    assert fetch(db, "PRAGMA journal_mode")[0][0] == "wal"
    assert fetch(db, "PRAGMA synchronous")[0][0] == 1  # NORMAL
    db.close()


def test_sqlite_urls(tmp_path: Path) -> None:
    absolute = open_database(f"sqlite:///{tmp_path}/x/abs.db", tmp_path)
    assert Path(absolute.database) == tmp_path / "x" / "abs.db"
    assert (tmp_path / "x").is_dir()
    relative = open_database("sqlite:///rel.db", tmp_path)
    assert relative.database == "rel.db"
    assert Path(open_database("sqlite://", tmp_path).database) == tmp_path / "smlogger.db"
    with pytest.raises(ValueError, match="in-memory"):
        open_database("sqlite:///:memory:", tmp_path)


def test_mysql_and_postgresql_urls(tmp_path: Path) -> None:
    db = open_database("mysql://logger:p%40ss%3Aw%2Ford@db.example:3307/smart_meter", tmp_path)
    assert isinstance(db, peewee.MySQLDatabase)
    assert db.database == "smart_meter"
    params = db.connect_params
    assert params["user"] == "logger" and params["password"] == "p@ss:w/ord"
    assert params["host"] == "db.example" and params["port"] == 3307
    sock = open_database(
        "mariadb://logger@localhost/meter?unix_socket=/run/mysqld/mysqld.sock", tmp_path
    )
    assert sock.connect_params["unix_socket"] == "/run/mysqld/mysqld.sock"
    assert "password" not in sock.connect_params
    pg = open_database("postgresql://u:pw@127.0.0.1:5433/smlogger?sslmode=disable", tmp_path)
    assert isinstance(pg, peewee.PostgresqlDatabase)
    assert pg.connect_params["port"] == 5433 and pg.connect_params["sslmode"] == "disable"
    assert pg.connect_params["password"] == "pw"


def test_bad_urls_name_the_problem_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported database URL scheme 'oracle'") as info:
        open_database("oracle://scott:tiger@host/db", tmp_path)
    assert "tiger" not in str(info.value)
    with pytest.raises(ValueError, match="names no database"):
        open_database("mysql://u:secret@host/", tmp_path)
    assert redact_url("mysql://u:secret@host:1/db") == "mysql://u:***@host:1/db"
    assert redact_url("postgresql://host/db") == "postgresql://host/db"


# ---- schema -------------------------------------------------------------------------------


def test_schema_is_created_once_and_migrations_are_idempotent(db: peewee.Database) -> None:
    first = ensure_schema(db)
    assert first == [f"migration {v}: {text}" for v, text, _ in MIGRATIONS]
    assert ensure_schema(db) == []
    assert schema_version(db) == 2
    assert {"meters", "readings", "rollup_minute", "rollup_hour", "rollup_day"} <= set(
        db.get_tables()
    )
    assert "values" not in db.get_tables()
    columns = {c.name for c in db.get_columns("readings")}
    assert set(Reading.FIELDS) <= columns
    assert {"p_sum_min", "p_sum_max", "p_L3_max", "samples", "obis_values", "obis_base"} <= columns
    # the primary key is the per-meter time index (and, clustered, the table itself)
    plan = " ".join(
        str(r)
        for r in fetch(
            db,
            "EXPLAIN QUERY PLAN SELECT * FROM readings WHERE meter = 1 AND time >= 'a' "
            "AND time < 'b'",
        )
    )
    assert "USING PRIMARY KEY" in plan


def test_migration_adds_columns_missing_from_an_older_database(db: peewee.Database) -> None:
    ensure_schema(db)
    writer = SqlWriter(db)
    writer.write([StoredRow.from_reading(reading(T0, e_sum=1.0, p_sum=5.0))])
    execute(db, 'ALTER TABLE readings DROP COLUMN "freq"')
    execute(db, 'ALTER TABLE rollup_hour DROP COLUMN "p_L2_max"')
    execute(db, "DELETE FROM schema_version")  # as if the version table had been lost
    done = ensure_schema(db)
    assert "added column readings.freq" in done
    assert "added column rollup_hour.p_L2_max" in done
    assert ensure_schema(db) == []
    assert fetch(db, "SELECT COUNT(*) FROM readings") == [(1,)]


# ---- rollups --------------------------------------------------------------------------------


def test_rollups_equal_aggregates_of_the_raw_rows(db: peewee.Database) -> None:
    ensure_schema(db)
    writer = SqlWriter(db)
    readings = list(household(T0, 9000, interval=2.0, gaps=True, holes=True))
    readings += list(household(T0, 3000, interval=5.0, meter="second", seed=7))
    rows = [StoredRow.from_reading(r) for r in readings]
    # uneven batches that cut buckets anywhere, mixed meters, plus replays of written batches
    position = 0
    sizes = [1, 7, 250, 999, 61, 3600, 2]
    index = 0
    while position < len(rows):
        size = sizes[index % len(sizes)]
        batch = rows[position : position + size]
        assert writer.write(batch) == len({(r.meter_id, r.time) for r in batch})
        if index % 3 == 0:
            assert writer.write(batch) == 0  # replay after a crash: nothing counted twice
        position += size
        index += 1
    # overlapping replay of a mixed range
    assert writer.write(rows[100:5000:3]) == 0
    assert fetch(db, "SELECT COUNT(*) FROM readings") == [(len(rows),)]
    assert_rollups_consistent(db)


def test_rollups_merge_out_of_order_batches(db: peewee.Database) -> None:
    ensure_schema(db)
    writer = SqlWriter(db)
    rows = [StoredRow.from_reading(r) for r in household(T0, 600, interval=0.5, seed=3)]
    # late data (e.g. imported from another logger) arriving before earlier data
    writer.write(rows[300:])
    writer.write(rows[:300][::-1])
    assert_rollups_consistent(db)


# ---- the sink -----------------------------------------------------------------------------------


def test_written_readings_come_back_unchanged(store: Store, reader: StoreReader) -> None:
    readings = list(household(T0, 500, seed=5))
    for r in readings:
        store.write(r)
    wait_drained(store)
    status = store.status()
    assert status["written"] == 500 and status["queue_depth"] == 0
    assert status["db"] == "ok" and status["backend"] == "sqlite" and status["last_error"] is None
    back = list(reader.export(METER, T0, T0 + timedelta(days=1)))
    assert len(back) == 500
    for original, stored in zip(readings, back):
        assert stored.time == original.time
        assert stored.fields() == original.fields()
        assert stored.values["1-0:1.8.0*255"].value == original.values["1-0:1.8.0*255"].value
        assert stored.values["1-0:1.8.0*255"].unit == "Wh"
        assert stored.values["1-0:96.50.1*1"].value == "49534b"  # octet strings as hex
    assert reader.meters() == [METER]


def test_same_reading_twice_is_stored_once(store: Store, db: peewee.Database) -> None:
    r = reading(T0, e_sum=5.0, p_sum=100.0)
    store.write(r)
    store.write(r)
    wait_drained(store)
    assert fetch(db, "SELECT COUNT(*), SUM(n) FROM rollup_day") == [(1, 1)]


def test_locked_database_queues_on_disk_then_drains_in_order(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    # a short busy timeout so that the lock shows as "database down" quickly
    db = peewee.SqliteDatabase(str(path), timeout=0.2, pragmas={"journal_mode": "wal"})
    ensure_schema(db)
    store = Store(db, spool_dir=tmp_path / "spool", batch_size=50)
    try:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        readings = list(household(T0, 400, seed=11))
        for r in readings[:300]:
            store.write(r)
        deadline = time.monotonic() + 20
        while store.status()["db"] != "down" and time.monotonic() < deadline:
            time.sleep(0.05)
        status = store.status()
        assert status["db"] == "down"
        assert "locked" in str(status["last_error"])
        assert status["queue_depth"] == 300  # write() never blocked on the dead database
        for r in readings[300:]:
            store.write(r)
        assert store.status()["queue_depth"] == 400
        blocker.execute("ROLLBACK")
        blocker.close()
        wait_drained(store)
        assert store.status()["written"] == 400
        times = [row["ts"] for row in raw_rows(db)]
        assert times == [r.time.timestamp() for r in readings]
        assert_rollups_consistent(db)
    finally:
        store.close()
        db.close()


@pytest.mark.slow  # waits out retry backoff
def test_queue_survives_a_restart_while_the_database_is_down(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    db = peewee.SqliteDatabase(str(path), timeout=0.2, pragmas={"journal_mode": "wal"})
    ensure_schema(db)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    store = Store(db, spool_dir=tmp_path / "spool")
    readings = list(household(T0, 120, seed=2))
    for r in readings:
        store.write(r)
    store.close()  # gives up waiting on the dead database; the queue keeps the readings
    blocker.execute("ROLLBACK")
    blocker.close()
    store = Store(db, spool_dir=tmp_path / "spool")
    try:
        assert store.status()["queue_depth"] in (0, 120)
        wait_drained(store)
        assert fetch(db, "SELECT COUNT(*) FROM readings") == [(120,)]
    finally:
        store.close()
        db.close()


# ---- history ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "source", "step"),
    [
        (timedelta(minutes=30), "raw", None),
        (timedelta(hours=1), "raw", 2),
        (timedelta(hours=12), "raw", 30),
        (timedelta(days=1), "minute", 60),
        (timedelta(days=7), "minute", 600),
        (timedelta(days=30), "minute", 1800),
        (timedelta(days=365), "hour", 21600),
        (timedelta(days=5 * 365), "day", 86400),
    ],
)
def test_history_picks_the_step_and_table_for_the_range(
    store: Store, reader: StoreReader, span: timedelta, source: str, step: Any
) -> None:
    for r in household(T0, 4000, interval=1.0):
        store.write(r)
    wait_drained(store)
    result = reader.history(METER, T0, T0 + span)
    assert (result["source"], result["step"]) == (source, step)
    assert 0 < len(result["points"]) <= 2000
    assert result["meter"] == METER
    assert result["from"] == "2024-03-30T22:00:00.000Z"


def test_history_returns_raw_readings_while_they_fit(store: Store, reader: StoreReader) -> None:
    # a meter sending every 2 s: an hour is 1800 readings, below the 2000 points
    for r in household(T0, 1800, interval=2.0):
        store.write(r)
    wait_drained(store)
    result = reader.history(METER, T0, T0 + timedelta(hours=1, seconds=1))
    assert (result["source"], result["step"], len(result["points"])) == ("raw", None, 1800)
    result = reader.history(METER, T0, T0 + timedelta(hours=1), max_points=1000)
    assert (result["source"], result["step"]) == ("raw", 5)
    assert len(result["points"]) == 720


def test_step_choice_helpers() -> None:
    assert nice_step(0.5) == 1 and nice_step(43.2) == 60 and nice_step(15768) == 21600
    assert nice_step(3 * 86400 + 1) == 4 * 86400
    assert rollup_for_step(86400 * 7) == "rollup_day"
    assert rollup_for_step(7200) == "rollup_hour"
    assert rollup_for_step(300) == "rollup_minute"
    assert rollup_for_step(30) is None
    assert rollup_for_step(90) is None
    assert rollup_for_step(610) == "rollup_minute"


def test_history_points_match_the_raw_readings(store: Store, reader: StoreReader) -> None:
    readings = list(household(T0, 3 * 3600, interval=1.0, seed=4, holes=True))
    for r in readings:
        store.write(r)
    wait_drained(store)
    end = T0 + timedelta(hours=3, seconds=1)
    for step in (30, 60, 300, 3600):  # 30: readings grouped by the database
        result = reader.history(METER, T0, end, step=step)
        assert result["step"] == step
        points = {p["t"]: p for p in result["points"]}
        buckets: dict[int, list[Reading]] = {}
        for r in readings:
            buckets.setdefault(int(r.time.timestamp() // step) * step, []).append(r)
        assert sorted(points) == sorted(buckets)
        for t, group in buckets.items():
            power = [r.p_sum for r in group if r.p_sum is not None]
            point = points[t]
            assert point["n"] == len(group)
            assert math.isclose(point["p_avg"], sum(power) / len(power))
            assert point["p_min"] == min(power) and point["p_max"] == max(power)
            l1 = [r.p_L1 for r in group if r.p_L1 is not None]
            assert math.isclose(point["p_L1"], sum(l1) / len(l1))
            assert point["e_sum"] == max(r.e_sum for r in group if r.e_sum is not None)
            assert point["e_export"] == group[-1].e_export
    # a short range: the readings themselves
    raw = reader.history(METER, T0, T0 + timedelta(minutes=10))
    assert raw["step"] is None and raw["source"] == "raw"
    inside = [r for r in readings if r.time < T0 + timedelta(minutes=10)]
    assert [p["t"] for p in raw["points"]] == [r.time.timestamp() for r in inside]
    assert [p["p_avg"] for p in raw["points"]] == [r.p_sum for r in inside]


def test_history_rejects_bad_arguments_and_knows_no_unknown_meter(
    store: Store, reader: StoreReader
) -> None:
    store.write(reading(T0, e_sum=1.0, p_sum=1.0))
    wait_drained(store)
    with pytest.raises(ValueError, match="before"):
        reader.history(METER, T0, T0)
    with pytest.raises(ValueError, match="step"):
        reader.history(METER, T0, T0 + timedelta(days=30), step=1)
    with pytest.raises(ValueError, match="step"):
        reader.history(METER, T0, T0 + timedelta(days=1), step=0)
    empty = reader.history("no-such-meter", T0, T0 + timedelta(days=1))
    assert empty["points"] == []
    assert reader.consumption("no-such-meter", "day", T0, T0 + timedelta(days=1)) == []
    with pytest.raises(ValueError, match="period"):
        reader.consumption(METER, "week", T0, T0 + timedelta(days=1))


# ---- consumption --------------------------------------------------------------------------


def _hourly_counter(store: Store, start: datetime, hours: int, kwh_per_hour: float) -> None:
    """One reading every 10 minutes, counter rising `kwh_per_hour`; a gap of 5 hours in the
    middle (nothing logged, but the meter kept counting)."""
    energy = 1000.0
    for i in range(hours * 6):
        moment = start + timedelta(minutes=10 * i)
        energy = 1000.0 + kwh_per_hour * i / 6
        if hours * 6 // 2 <= i < hours * 6 // 2 + 30:
            continue
        store.write(reading(moment, e_sum=round(energy, 6), e_export=0.5, p_sum=kwh_per_hour))


def test_consumption_per_utc_day_adds_up_to_the_counter_difference(
    store: Store, reader: StoreReader
) -> None:
    start = datetime(2024, 1, 10, 0, 0, tzinfo=timezone.utc)
    _hourly_counter(store, start, 72, 1.0)
    wait_drained(store)
    bars = reader.consumption(METER, "day", start, start + timedelta(days=3))
    assert [b["label"] for b in bars] == ["2024-01-10", "2024-01-11", "2024-01-12"]
    assert bars[0]["t"] == int(start.timestamp())
    # first day: from its first reading (00:00) to its last (23:50)
    assert bars[0]["import_kwh"] == pytest.approx(23 + 5 / 6)
    assert bars[1]["import_kwh"] == pytest.approx(24)
    assert bars[2]["import_kwh"] == pytest.approx(24)
    assert sum(b["import_kwh"] for b in bars) == pytest.approx(72 - 1 / 6)
    assert all(b["export_kwh"] == 0 for b in bars)
    # a range starting later uses the counter from before it as the base
    later = reader.consumption(
        METER, "day", start + timedelta(days=1, hours=5), start + timedelta(days=3)
    )
    assert [b["import_kwh"] for b in later] == pytest.approx([24, 24])
    months = reader.consumption(METER, "month", start, start + timedelta(days=3))
    assert len(months) == 1 and months[0]["label"] == "2024-01"
    assert months[0]["import_kwh"] == pytest.approx(72 - 1 / 6)


def test_consumption_per_local_day_follows_the_time_zone_and_dst(
    store: Store, reader: StoreReader
) -> None:
    # 2024-03-31 is 23 hours long in Berlin
    start = datetime(2024, 3, 29, 23, 0, tzinfo=timezone.utc)  # 00:00 CET
    energy = 500.0
    for i in range(4 * 24 * 6):
        moment = start + timedelta(minutes=10 * i)
        energy += 1 / 6
        store.write(reading(moment, e_sum=round(energy, 6), p_sum=1000.0))
    wait_drained(store)
    bars = reader.consumption(METER, "day", start, start + timedelta(days=4), tz="Europe/Berlin")
    labels = [b["label"] for b in bars]
    assert labels[:3] == ["2024-03-30", "2024-03-31", "2024-04-01"]
    by_label = {b["label"]: b["import_kwh"] for b in bars}
    assert by_label["2024-03-31"] == pytest.approx(23)
    # the first bar has no earlier counter: it runs from its first reading (00:00) to 23:50
    assert by_label["2024-03-30"] == pytest.approx(24 - 1 / 6)
    assert by_label["2024-04-01"] == pytest.approx(24)
    assert bars[1]["t"] == int(datetime(2024, 3, 30, 23, 0, tzinfo=timezone.utc).timestamp())
    utc = reader.consumption(METER, "day", start, start + timedelta(days=4))
    assert [b["label"] for b in utc][:2] == ["2024-03-29", "2024-03-30"]
    total_local = sum(b["import_kwh"] for b in bars)
    total_utc = sum(b["import_kwh"] for b in utc)
    assert total_local == pytest.approx(total_utc)


# ---- legacy table -------------------------------------------------------------------------------


def test_legacy_values_table(tmp_path: Path) -> None:
    db = open_database(None, tmp_path)
    store = Store(db, spool_dir=tmp_path / "spool", legacy_table=True)
    try:
        base = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
        store.write(reading(base, e_sum=12339.7, p_sum=665.0, phases=(200.0, 215.0, 250.0)))
        # the same second again: the old table has whole seconds only, the first one wins
        store.write(reading(base + timedelta(milliseconds=500), e_sum=12339.8, p_sum=700.0))
        store.write(reading(base + timedelta(seconds=1), e_sum=12339.9, p_sum=670.0))
        store.write(reading(base + timedelta(seconds=2), meter="another", e_sum=1.0, p_sum=1.0))
        wait_drained(store)
        columns = [c.name for c in db.get_columns("values")]
        assert columns == ["time", "e_sum", "p_sum", "p_L1", "p_L2", "p_L3"]
        rows = fetch(db, 'SELECT * FROM "values" ORDER BY time')
        assert rows == [
            ("2024-05-01 12:00:00", 12339.7, 665.0, 200.0, 215.0, 250.0),
            ("2024-05-01 12:00:01", 12339.9, 670.0, None, None, None),
        ]
        assert fetch(db, "SELECT COUNT(*) FROM readings") == [(4,)]
    finally:
        store.close()
        db.close()


# ---- store interval ------------------------------------------------------------------------


def test_store_interval_aggregates_mean_min_max_and_last_energy(tmp_path: Path) -> None:
    db = open_database(None, tmp_path)
    store = Store(db, spool_dir=tmp_path / "spool")
    # the pipeline's aggregator in front of the sink, as `smlogger run --store-interval 10`
    aggregator = Aggregator(10, store.write)
    start = datetime(2024, 6, 1, 0, 0, 0, tzinfo=timezone.utc)
    readings = [
        reading(
            start + timedelta(seconds=i, milliseconds=100),
            e_sum=100 + i / 1000,
            p_sum=float(100 + i * (-1) ** i),
            phases=(float(i), None, 5.0),
            u=230.0 + i % 3,
        )
        for i in range(35)
    ]
    try:
        for r in readings:
            aggregator.add(r)
        # three windows are complete; the fourth (30..34 s) is collecting until the flush
        assert aggregator.pending == 5
        wait_drained(store)
        assert fetch(db, "SELECT COUNT(*) FROM readings") == [(3,)]
        aggregator.flush()
        assert aggregator.pending == 0
        wait_drained(store)
        assert fetch(db, "SELECT COUNT(*) FROM readings") == [(4,)]
    finally:
        store.close()
    rows = raw_rows(db)
    assert len(rows) == 4
    assert [r["samples"] for r in rows] == [10, 10, 10, 5]
    for row, window in zip(
        rows, (readings[0:10], readings[10:20], readings[20:30], readings[30:35])
    ):
        assert row["ts"] == window[-1].time.timestamp()
        power = known(r.p_sum for r in window)
        assert row["p_sum"] == pytest.approx(sum(power) / len(power))
        assert (row["p_sum_min"], row["p_sum_max"]) == (min(power), max(power))
        assert row["e_sum"] == window[-1].e_sum
        assert row["p_L1"] == pytest.approx(sum(known(r.p_L1 for r in window)) / len(window))
        assert row["u_L1"] == pytest.approx(sum(known(r.u_L1 for r in window)) / len(window))
        assert row["p_L2"] is None
    # rollups weigh each stored row by the readings it stands for
    assert fetch(db, "SELECT n, p_sum_n, p_sum_min, p_sum_max FROM rollup_minute") == [
        (35, 35, min(known(r.p_sum for r in readings)), max(known(r.p_sum for r in readings)))
    ]
    assert_rollups_consistent(db)
    db.close()


# ---- kill -9 ---------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timedelta, timezone
    from pathlib import Path
    from smlogger.reading import Reading
    from smlogger.store import Store, open_database

    data, start, stop = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    store = Store(open_database(None, data), spool_dir=data / "spool", batch_size=37)
    for i in range(start, stop):
        store.write(Reading(meter_id="m1", time=t0 + timedelta(seconds=i), values={},
                            e_sum=1000 + i / 1000, p_sum=float(i % 1000)))
        print(i, flush=True)
    store.close()
    print("closed", flush=True)
    """
)


@pytest.mark.slow  # a writer process killed with SIGKILL, then a second one
def test_kill_9_then_restart_leaves_the_database_complete_and_without_duplicates(
    tmp_path: Path,
) -> None:
    total = 6000
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), "0", str(total)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    acknowledged = -1
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 2500:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()  # ours to close: the child is gone
    # restart a little before the last acknowledged reading: the overlap must not duplicate
    resume = acknowledged - 20
    result = subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path), str(resume), str(total)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.stdout.strip().endswith("closed"), result.stderr
    db = open_database(None, tmp_path)
    try:
        times = [row["ts"] for row in raw_rows(db)]
        t0 = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()
        assert times == [t0 + i for i in range(total)]
        assert fetch(db, "SELECT SUM(n) FROM rollup_day") == [(total,)]
        assert_rollups_consistent(db)
    finally:
        db.close()


# ---- CLI: db-init and export ----------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    from smlogger.cli import main

    return main(argv)


def test_db_init_reports_what_it_did(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["db-init", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"SQLite {tmp_path / 'smlogger.db'}" in out
    assert "migration 1" in out and "migration 2" in out and "schema version 2" in out
    assert _cli(["db-init", "--data-dir", str(tmp_path), "--legacy-table"]) == 0
    assert "created legacy table values" in capsys.readouterr().out
    assert _cli(["db-init", "--data-dir", str(tmp_path)]) == 0
    assert "schema up to date (version 2)" in capsys.readouterr().out


def test_db_init_takes_the_url_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMLOGGER_DB_URL", f"sqlite:///{tmp_path}/from-env.db")
    assert _cli(["db-init"]) == 0
    assert "from-env.db" in capsys.readouterr().out
    assert (tmp_path / "from-env.db").exists()


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[Reading]]:
    db = open_database(None, tmp_path)
    store = Store(db, spool_dir=tmp_path / "spool")
    readings = list(household(T0, 50, seed=9))
    readings += list(household(T0 + timedelta(seconds=0.5), 20, meter="b-meter", seed=10))
    for r in readings:
        store.write(r)
    store.close()
    db.close()
    return tmp_path, sorted(readings, key=lambda r: r.time)


def test_export_csv_to_stdout(
    filled: tuple[Path, list[Reading]], capsys: pytest.CaptureFixture[str]
) -> None:
    data, readings = filled
    assert (
        _cli(["export", "--data-dir", str(data), "--from", "2024-03-30", "--to", "2024-04-02"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("time,meter_id,name,e_sum,e_export,")
    assert len(lines) == 1 + len(readings)
    first = lines[1].split(",")
    assert first[0] == "2024-03-30T22:00:01.000Z" and first[1] == METER
    assert [line.split(",")[1] for line in lines[1:]] == [r.meter_id for r in readings]
    # the range end is exclusive and --meter filters
    assert _cli(
        ["export", "--data-dir", str(data), "--meter", "b-meter", "--from",
         "2024-03-30T22:00:00.5Z", "--to", str(T0.timestamp() + 10.5)]
    ) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    # b-meter readings are at T0 + 1.5 s, 2.5 s, ...: 1.5 .. 9.5 (10.5 is the excluded end)
    assert [line.split(",")[0] for line in lines[1:]] == [
        f"2024-03-30T22:00:0{i}.500Z" for i in range(1, 10)
    ]


def test_export_json_and_ndjson_to_a_file(
    filled: tuple[Path, list[Reading]], tmp_path: Path
) -> None:
    data, readings = filled
    target = tmp_path / "out.json"
    assert _cli(["export", "--data-dir", str(data), "--format", "json", "-o", str(target)]) == 0
    items = json.loads(target.read_text())
    assert len(items) == len(readings)
    assert items[0]["meter_id"] == METER
    assert items[0]["e_sum"] == readings[0].e_sum
    assert items[0]["values"]["1-0:1.8.0*255"]["unit"] == "Wh"
    target = tmp_path / "out.ndjson"
    assert _cli(["export", "--data-dir", str(data), "--format", "ndjson", "-o", str(target)]) == 0
    lines = target.read_text().splitlines()
    # UTC with a Z, milliseconds (like the API and the CSV files)
    assert [json.loads(x)["time"] for x in lines] == [iso(r.time) for r in readings]


def test_export_errors(
    filled: tuple[Path, list[Reading]], capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = filled
    assert _cli(["export", "--data-dir", str(data), "--meter", "nope"]) == 1
    err = capsys.readouterr().err
    assert "unknown meter 'nope'" in err and METER in err
    with pytest.raises(SystemExit) as info:
        _cli(["export", "--data-dir", str(data), "--from", "yesterday"])
    assert info.value.code == 2
    assert "not a time" in capsys.readouterr().err
    empty = data / "empty"
    empty.mkdir()
    assert _cli(["export", "--data-dir", str(empty)]) == 1
    assert "db-init" in capsys.readouterr().err


def test_export_takes_the_web_api_time_syntax(
    filled: tuple[Path, list[Reading]], capsys: pytest.CaptureFixture[str]
) -> None:
    data, readings = filled
    # relative and `now`, like /api/history?from=-7d (smlogger.web.params is the one parser)
    # (argparse takes a bare "-3650d" for a flag: a relative time needs the `=` form)
    assert _cli(["export", "--data-dir", str(data), "--from=-3650d", "--to", "now"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + len(readings)
    assert _cli(["export", "--data-dir", str(data), "--from=-1h"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == []  # the data is from 2024
    with pytest.raises(SystemExit) as info:
        _cli(["export", "--data-dir", str(data), "--to", "1714557600000"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--to" in err and "not a time" in err and "milliseconds?" in err


# ---- rows and aggregation units ---------------------------------------------------------------


def test_queue_payload_round_trip_keeps_everything_the_database_needs() -> None:
    original = reading(
        datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc),
        e_sum=12339.7123,
        e_export=0.5,
        p_sum=-665.5,
        phases=(1.5, None, float("nan")),
        u=230.1,
    )
    row = StoredRow.from_reading(original)
    assert row.fields["p_L3"] is None  # NaN never reaches a database
    back = StoredRow.from_payload(row.to_payload())
    assert back == row
    again = back.to_reading()
    assert again.time == original.time
    assert again.fields() == {**original.fields(), "p_L3": None}
    assert again.values["1-0:96.50.1*1"].value == "49534b"
    assert again.values["1-0:1.8.0*255"].unit == "Wh"


def test_write_after_close_is_refused_and_status_has_the_documented_keys(
    db: peewee.Database, tmp_path: Path
) -> None:
    store = Store(db, spool_dir=tmp_path / "spool")
    status = store.status()
    for key in ("db", "backend", "queue_depth", "written", "last_error", "rejected", "dropped"):
        assert key in status
    store.close()
    store.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        store.write(reading(T0, e_sum=1.0))
