"""The SQL writer's batch form: rows built column by column (columns NULL in every row left
out), time texts formatted per minute, rollups found per minute in sorted times. Each gives the
database exactly what the plain per-row form gives."""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import peewee
from test_store_support import T0, assert_rollups_consistent, fetch

from smlogger.reading import Reading
from smlogger.store import (
    POWER_FIELDS,
    SqlWriter,
    StoredRow,
    dialect_of,
    ensure_schema,
    open_database,
    rollup_buckets,
)
from smlogger.store.dialect import Dialect
from smlogger.store.rollup import minute_runs
from smlogger.store.writer import RUN_ROWS

_MINMAX = [f"{name}_{end}" for name in POWER_FIELDS for end in ("min", "max")]
_COLUMNS = ["time", "samples", *Reading.FIELDS, *_MINMAX, "obis_values", "obis_base"]


def _row(rng: random.Random, moment: datetime, *, aggregated: bool) -> StoredRow:
    fields: dict[str, Optional[float]] = dict.fromkeys(Reading.FIELDS)
    fields["e_sum"] = round(rng.uniform(0, 1e6), 4)  # in every row
    fields["p_sum"] = None if rng.random() < 0.3 else round(rng.uniform(-500, 3000), 1)
    fields["p_L2"] = None if rng.random() < 0.9 else 7.5  # in a few rows
    # e_export, u_L1 ... freq: NULL in every row
    minmax: dict[str, tuple[float, float]] = {}
    samples = 1
    if aggregated:
        samples = rng.randint(2, 60)
        if fields["p_sum"] is not None:
            minmax["p_sum"] = (fields["p_sum"] - 10, fields["p_sum"] + 10)
    values_json = '{"1-0:96.50.1*1":["49534b",null]}' if rng.random() < 0.2 else ""
    return StoredRow("meter", moment, samples, fields, minmax, values_json, base=None)


def _stored(db: peewee.Database) -> list[dict[str, Any]]:
    d = dialect_of(db)
    cols = ", ".join(d.q(c) for c in _COLUMNS)
    out = []
    for record in fetch(db, f"SELECT {cols} FROM {d.q('readings')} ORDER BY {d.q('time')}"):
        item = dict(zip(_COLUMNS, record))
        item["time"] = d.time_value(item["time"])
        out.append(item)
    return out


def _expected(row: StoredRow) -> dict[str, Any]:
    item: dict[str, Any] = {"time": row.time, "samples": row.samples, **row.fields}
    for name in POWER_FIELDS:
        low, high = row.minmax.get(name, (None, None))
        item[f"{name}_min"], item[f"{name}_max"] = low, high
    return item


def test_a_batch_stores_each_row_as_written_and_as_written_one_by_one(tmp_path: Path) -> None:
    rng = random.Random(4)
    # more rows than RUN_ROWS: the batch goes through in runs
    count = 2 * RUN_ROWS + 300
    moments = [
        T0 + timedelta(seconds=i * 1.5, microseconds=rng.choice([0, 7])) for i in range(count)
    ]
    rows = [_row(rng, m, aggregated=i % 100 >= 90) for i, m in enumerate(moments)]
    rng.shuffle(rows)  # the writer sorts
    batch_db = open_database(None, tmp_path / "batch")
    ensure_schema(batch_db)
    assert SqlWriter(batch_db).write(rows + rows[:500]) == len(rows)  # duplicates: once
    # plain single readings only: the extremes columns are left out of that statement
    assert SqlWriter(batch_db).write([r for r in rows if not r.minmax]) == 0
    single_db = open_database(None, tmp_path / "single")
    ensure_schema(single_db)
    writer = SqlWriter(single_db)
    for row in sorted(rows, key=lambda r: r.time):  # (rollup sums: in the same order)
        writer.write([row])

    stored = _stored(batch_db)
    typed = [{k: v for k, v in item.items() if not k.startswith("obis_")} for item in stored]
    assert typed == [_expected(r) for r in sorted(rows, key=lambda r: r.time)]
    # the OBIS lists (compacted by the writer: a base and what differs) alike
    assert stored == _stored(single_db)
    assert {item["obis_values"] is None for item in stored} == {True, False}
    # minutes summed in the same order; hours and days add up minutes in a batch, readings
    # one by one (the same up to rounding: checked against the raw rows below)
    query = "SELECT * FROM rollup_minute ORDER BY meter, bucket"
    assert fetch(batch_db, query) == fetch(single_db, query)
    assert_rollups_consistent(single_db)
    assert_rollups_consistent(batch_db)
    batch_db.close()
    single_db.close()


def test_time_params_are_the_time_param_of_each_moment() -> None:
    rng = random.Random(9)
    moments = [
        datetime(999, 1, 2, 3, 4, 5, 0, tzinfo=timezone.utc),
        datetime(2024, 3, 31, 0, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(2024, 3, 31, 3, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 12, 31, 23, 59, 30, 5, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    ]
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    moments += [start + timedelta(microseconds=rng.randint(0, 10**11)) for _ in range(500)]
    expected_text = [
        m.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")
        for m in moments
    ]
    assert expected_text[0] == "0999-01-02 03:04:05.000000"  # fixed width: text order is time order
    assert Dialect("sqlite").time_params(moments) == expected_text
    assert [Dialect("sqlite").time_param(m) for m in moments] == expected_text
    naive_utc = [m.astimezone(timezone.utc).replace(tzinfo=None) for m in moments]
    for name in ("mysql", "postgresql"):
        assert Dialect(name).time_params(moments) == naive_utc
        assert [Dialect(name).time_param(m) for m in moments] == naive_utc


def test_rollup_buckets_of_rows_in_any_order_are_those_of_the_sorted_rows() -> None:
    rng = random.Random(2)
    moments = [T0 + timedelta(seconds=rng.uniform(0, 7200)) for _ in range(400)]
    rows = [_row(rng, m, aggregated=i % 7 == 0) for i, m in enumerate(moments)]

    def params(levels: list[dict[int, Any]]) -> list[list[list[Any]]]:
        return [[b.params(1) for _key, b in sorted(level.items())] for level in levels]

    in_order = params(rollup_buckets(sorted(rows, key=lambda r: r.time)))
    assert params(rollup_buckets(rows)) == in_order
    assert len(in_order[0]) > 100  # minutes


def test_minute_runs_cover_the_rows_in_order_and_never_split_a_minute() -> None:
    rng = random.Random(3)
    moments = sorted(T0 + timedelta(seconds=rng.uniform(0, 3000)) for _ in range(3000))
    rows = [_row(rng, m, aggregated=False) for m in moments]
    runs = list(minute_runs(rows, 100))
    assert [r for run in runs for r in run] == rows
    assert all(len(run) >= 100 for run in runs[:-1]) and len(runs) > 10
    minutes = [{int(r.time.timestamp() // 60) for r in run} for run in runs]
    assert all(not (a & b) for a, b in zip(minutes, minutes[1:]))
    assert list(minute_runs(rows, len(rows))) == [rows]


def test_a_batch_keeps_to_the_parameter_limit_of_older_sqlite_builds(tmp_path: Path) -> None:
    db = open_database(None, tmp_path)
    ensure_schema(db)
    connection = db.connection()  # type: ignore[no-untyped-call]
    if hasattr(connection, "setlimit"):  # (before Python 3.11 the writer assumes 999 anyway)
        connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # SQLite before 3.32
    rng = random.Random(6)
    rows = [
        _row(rng, T0 + timedelta(seconds=i), aggregated=i % 2 == 0)  # all 28 columns
        for i in range(1200)
    ]
    assert SqlWriter(db).write(rows) == 1200
    assert fetch(db, "SELECT COUNT(*), SUM(samples) FROM readings") == [
        (1200, sum(r.samples for r in rows))
    ]
    db.close()
