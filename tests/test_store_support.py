"""Helpers shared by the storage tests (no tests here): synthetic readings, rollups recomputed
from raw rows."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import peewee
import pytest
from helpers import METER, reading

from smlogger.reading import Reading
from smlogger.store import POWER_FIELDS, ROLLUP_ENERGY, ROLLUPS, dialect_of

T0 = datetime(2024, 3, 30, 22, 0, tzinfo=timezone.utc)  # spans the CET -> CEST switch


def household(
    start: datetime,
    count: int,
    *,
    interval: float = 1.0,
    meter: str = METER,
    seed: int = 1,
    gaps: bool = False,
    holes: bool = False,
) -> Iterator[Reading]:
    """A plausible load curve with an energy counter consistent with the power."""
    rng = random.Random(seed)
    energy = 12339.7
    exported = 100.0
    moment = start
    for _ in range(count):
        step = interval
        if gaps and rng.random() < 0.002:
            step += rng.choice([90, 1800, 7200])  # logger or meter offline for a while
        moment = moment + timedelta(seconds=step)
        hour = moment.hour + moment.minute / 60
        base = 300 + 900 * max(0.0, math.sin((hour - 6) / 24 * 2 * math.pi))
        power = round(base + rng.uniform(-150, 150), 1)
        if rng.random() < 0.05:
            power = -round(rng.uniform(0, 800), 1)  # solar export
        if power >= 0:
            energy += power * step / 3600 / 1000
        else:
            exported += -power * step / 3600 / 1000
        l1 = round(power * 0.5, 1)
        missing = holes and rng.random() < 0.03
        yield reading(
            moment,
            meter=meter,
            e_sum=None if missing else round(energy, 4),
            e_export=round(exported, 4),
            p_sum=None if missing else power,
            phases=(l1, round(power * 0.3, 1), round(power - l1 - round(power * 0.3, 1), 1)),
            u=230.0 + rng.uniform(-3, 3),
        )


def execute(db: peewee.Database, sql: str) -> None:
    """Runs a statement that returns no rows (schema changes, deletes)."""
    db.execute_sql(sql)  # type: ignore[no-untyped-call]


def fetch(db: peewee.Database, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    return list(db.execute_sql(sql, params).fetchall())  # type: ignore[no-untyped-call]


def raw_rows(db: peewee.Database) -> list[dict[str, Any]]:
    d = dialect_of(db)
    cols = ["meter", "time", "samples", *(f for f in Reading.FIELDS)]
    cols += [f"{p}_{w}" for p in POWER_FIELDS for w in ("min", "max")]
    rows = fetch(
        db,
        f"SELECT {', '.join(d.q(c) for c in cols)} FROM {d.q('readings')} "
        f"ORDER BY {d.q('meter')}, {d.q('time')}",
    )
    out = []
    for row in rows:
        item = dict(zip(cols, row))
        item["ts"] = d.time_value(item["time"]).timestamp()
        for name in POWER_FIELDS:
            # a single reading stores no min/max: they are its value
            for end in ("min", "max"):
                if item[f"{name}_{end}"] is None:
                    item[f"{name}_{end}"] = item[name]
        out.append(item)
    return out


def expected_rollups(
    rows: Sequence[dict[str, Any]], width: int
) -> dict[tuple[int, int], dict[str, Any]]:
    """Rollup rows recomputed from raw readings: the reference the tables must equal."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        key = (int(row["meter"]), int(row["ts"] // width) * width)
        agg = out.setdefault(key, {"n": 0, "t_first": row["ts"], "t_last": row["ts"]})
        weight = int(row["samples"])
        agg["n"] += weight
        agg["t_first"] = min(agg["t_first"], row["ts"])
        agg["t_last"] = max(agg["t_last"], row["ts"])
        for name in POWER_FIELDS:
            value = row[name]
            agg.setdefault(f"{name}_n", 0)
            agg.setdefault(f"{name}_sum", 0.0)
            agg.setdefault(f"{name}_min", None)
            agg.setdefault(f"{name}_max", None)
            if value is None:
                continue
            agg[f"{name}_n"] += weight
            agg[f"{name}_sum"] += value * weight
            lo, hi = row[f"{name}_min"], row[f"{name}_max"]
            agg[f"{name}_min"] = lo if agg[f"{name}_min"] is None else min(agg[f"{name}_min"], lo)
            agg[f"{name}_max"] = hi if agg[f"{name}_max"] is None else max(agg[f"{name}_max"], hi)
        for name in ROLLUP_ENERGY:
            value = row[name]
            agg.setdefault(f"{name}_first", None)
            agg.setdefault(f"{name}_last", None)
            if value is None:
                continue
            if agg[f"{name}_first"] is None:
                agg[f"{name}_first"] = value
            agg[f"{name}_last"] = value
    return out


def stored_rollups(db: peewee.Database, table: str) -> dict[tuple[int, int], dict[str, Any]]:
    from smlogger.store import rollup_columns

    d = dialect_of(db)
    cols = rollup_columns()
    rows = fetch(db, f"SELECT {', '.join(d.q(c) for c in cols)} FROM {d.q(table)}")
    return {(int(r[0]), int(r[1])): dict(zip(cols[2:], r[2:])) for r in rows}


def assert_rollups_consistent(db: peewee.Database) -> None:
    rows = raw_rows(db)
    for table, width in ROLLUPS:
        want = expected_rollups(rows, width)
        have = stored_rollups(db, table)
        assert set(have) == set(want), f"{table}: bucket sets differ"
        for key, expected in want.items():
            got = have[key]
            for column, value in expected.items():
                actual = got[column]
                if value is None or actual is None:
                    assert actual == value, (table, key, column, actual, value)
                else:
                    assert math.isclose(float(actual), float(value), rel_tol=1e-9, abs_tol=1e-6), (
                        table,
                        key,
                        column,
                        actual,
                        value,
                    )


def same_results_as_sqlite(db: peewee.Database, tmp_path: Path) -> None:
    """Write the same data to `db` and to SQLite; rollups, history, consumption and export
    must agree."""
    from smlogger.store import SqlWriter, StoredRow, StoreReader, ensure_schema, open_database

    readings = list(household(T0, 6000, interval=3.0, gaps=True, holes=True, seed=21))
    lite = open_database(None, tmp_path)
    try:
        for target in (db, lite):
            ensure_schema(target)
            writer = SqlWriter(target)
            rows = [StoredRow.from_reading(r) for r in readings]
            for start in range(0, len(rows), 700):
                writer.write(rows[start : start + 700])
            assert writer.write(rows[1000:3000]) == 0  # replay
        assert_rollups_consistent(db)
        assert len(raw_rows(db)) == len(readings)
        other = StoreReader(db)
        sqlite = StoreReader(lite)
        spans = (
            timedelta(minutes=20),
            timedelta(hours=2),
            timedelta(days=1),
            timedelta(days=7),
        )
        for span in spans:
            a = other.history(METER, T0, T0 + span)
            b = sqlite.history(METER, T0, T0 + span)
            assert (a["step"], a["source"]) == (b["step"], b["source"])
            assert len(a["points"]) == len(b["points"]) > 0
            for pa, pb in zip(a["points"], b["points"]):
                assert pa.keys() == pb.keys()
                for key in pa:
                    if isinstance(pa[key], float):
                        assert math.isclose(pa[key], pb[key], rel_tol=1e-9), key
                    else:
                        assert pa[key] == pb[key], key
        for tz in (None, "Europe/Berlin"):
            for period in ("day", "month"):
                ca = other.consumption(METER, period, T0, T0 + timedelta(days=10), tz=tz)
                cb = sqlite.consumption(METER, period, T0, T0 + timedelta(days=10), tz=tz)
                assert [c["label"] for c in ca] == [c["label"] for c in cb]
                assert [c["import_kwh"] for c in ca] == pytest.approx([c["import_kwh"] for c in cb])
        exported = list(other.export(None, T0, T0 + timedelta(days=30)))
        assert [r.time for r in exported] == [r.time for r in readings]
        assert [r.fields() for r in exported] == [r.fields() for r in readings]
    finally:
        lite.close()
