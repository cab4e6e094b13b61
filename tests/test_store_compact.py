"""Compact rows in the database: migration of an existing (version 1) database without losing
a row, old and new rows exported alike, every value given back, bytes per reading."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import peewee
from test_store_support import T0, fetch, household

from smlogger.reading import Reading, json_value
from smlogger.store import (
    MIGRATIONS,
    Store,
    StoredRow,
    StoreReader,
    dialect_of,
    ensure_schema,
    open_database,
    reading_columns,
    schema_version,
)
from smlogger.store.schema import SCHEMA_VERSION_TABLE

EVER = (datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))


def _comparable(reading: Reading) -> tuple[object, ...]:
    values = {o: (json_value(v.value), v.unit) for o, v in reading.values.items()}
    return (reading.meter_id, reading.time, reading.fields(), values)


def _version_1_database(db: peewee.Database, readings: list[Reading]) -> None:
    """A database as version 1 wrote it: rowid table, full OBIS JSON, min/max repeated."""
    d = dialect_of(db)
    apply_1 = MIGRATIONS[0][2]
    db.execute_sql(  # type: ignore[no-untyped-call]
        f"CREATE TABLE {SCHEMA_VERSION_TABLE} (version INTEGER NOT NULL PRIMARY KEY, "
        "applied_at TEXT NOT NULL, description VARCHAR(255))"
    )
    apply_1(db, d)
    db.execute_sql(f"INSERT INTO {SCHEMA_VERSION_TABLE} VALUES (1, '2024-01-01 00:00:00', 'v1')")  # type: ignore[no-untyped-call]
    db.execute_sql("INSERT INTO meters (meter_id) VALUES (?)", (readings[0].meter_id,))  # type: ignore[no-untyped-call]
    cols = ["meter", "time", "samples", *reading_columns(), "obis_values"]
    for reading in readings:
        row = StoredRow.from_reading(reading)  # without a book: the full list, as v1 stored it
        fields = [row.fields.get(c) for c in Reading.FIELDS]
        ranges = []
        for name in ("p_sum", "p_L1", "p_L2", "p_L3"):
            ranges += [row.fields.get(name), row.fields.get(name)]
        db.execute_sql(  # type: ignore[no-untyped-call]
            f"INSERT INTO readings ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            (1, d.time_param(row.time), 1, *fields, *ranges, row.values_json),
        )


def test_migration_keeps_every_row_and_new_rows_are_compact(tmp_path: Path) -> None:
    old = list(household(T0, 500, seed=7))
    db = open_database(None, tmp_path)
    _version_1_database(db, old)
    ddl = "SELECT sql FROM sqlite_master WHERE name = 'readings'"
    assert "WITHOUT ROWID" not in fetch(db, ddl)[0][0]
    done = ensure_schema(db)
    assert done[0].startswith("migration 2:")
    assert schema_version(db) == 2
    assert fetch(db, "SELECT COUNT(*) FROM readings") == [(500,)]
    assert "WITHOUT ROWID" in fetch(db, ddl)[0][0]
    assert ensure_schema(db) == []  # idempotent
    db.close()

    new = list(household(T0 + timedelta(seconds=600), 500, seed=8))
    store = Store(open_database(None, tmp_path), spool_dir=tmp_path / "spool")
    for reading in new:
        store.write(reading)
    store.close()

    db = open_database(None, tmp_path)
    # old rows keep their full JSON; new rows keep only what the dictionary cannot give
    old_json = fetch(db, "SELECT obis_values FROM readings WHERE obis_base IS NULL")
    new_rows = fetch(db, "SELECT obis_values, obis_base FROM readings WHERE obis_base IS NOT NULL")
    assert len(old_json) == 500 and len(new_rows) == 500
    # (this synthetic meter computes Wh as kWh * 1000, which is not always a decimal the
    # kWh column gives back exactly: such registers are spelled out, nothing else)
    spelled = [set(json.loads(v)) if v else set() for v, _ in new_rows]
    assert set().union(*spelled) <= {"1-0:1.8.0*255", "1-0:2.8.0*255"}
    bases = json.loads(fetch(db, "SELECT obis_bases FROM meters")[0][0])
    assert len(bases) == 1 and "1-0:96.50.1*1" in bases[0][1]  # the constant id, stored once
    exported = list(StoreReader(db).export(None, *EVER))
    assert [_comparable(r) for r in exported] == [_comparable(r) for r in old + new]
    db.close()


def test_compact_rows_are_small(tmp_path: Path) -> None:
    from smlogger import sml
    from smlogger.reading import readings_from_frame
    from smlogger.simulate import make_meter

    meter = make_meter("household", seed="size", tz=timezone.utc)
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    readings = []
    for i in range(3600):
        stamp = start + timedelta(seconds=i)
        for frame in sml.decode(meter.frame(stamp)):
            readings += readings_from_frame(frame, stamp)
    store = Store(open_database(None, tmp_path), spool_dir=tmp_path / "spool")
    for reading in readings:
        store.write(reading)
    store.close()
    db = open_database(None, tmp_path)
    db.execute_sql("VACUUM INTO ?", (str(tmp_path / "copy.db"),))  # type: ignore[no-untyped-call]
    size = (tmp_path / "copy.db").stat().st_size
    # rows, rollups, the key and the meters table included (issue 8: <= 150, from ~700)
    assert size / len(readings) <= 150, size / len(readings)
    back = list(StoreReader(db).export(None, *EVER))
    assert [_comparable(r) for r in back] == [_comparable(r) for r in readings]
