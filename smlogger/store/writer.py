"""Writing batches of rows: readings, rollups and the legacy table in one transaction."""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Optional

import peewee

from smlogger.reading import Reading, pick_fields
from smlogger.store.bases import BaseBook
from smlogger.store.compact import dumps
from smlogger.store.dialect import _execute_many, _sql, dialect_of
from smlogger.store.rollup import (
    _Bucket,
    _rollup_upsert_tail,
    minute_buckets,
    minute_runs,
    rollup_levels,
)
from smlogger.store.rows import StoredRow, decode_values, row_fields, row_minmax, row_samples
from smlogger.store.schema import (
    LEGACY_FIELDS,
    LEGACY_TABLE,
    POWER_FIELDS,
    ROLLUPS,
    rollup_columns,
)

log = logging.getLogger("smlogger.store")

RUN_ROWS = 1000  # rows of one meter taken through the steps of a batch together (see _write_meter)


def dumps_list(items: list[list[Any]]) -> str:
    """Compact JSON of the ``obis_bases`` list."""
    return json.dumps(items, separators=(",", ":"), ensure_ascii=False)


def is_connection_error(exc: BaseException) -> bool:
    """Errors that say "the database is not reachable right now" rather than "bad data".

    Judged by DB-API class names so that peewee's wrappers and raw driver exceptions
    (sqlite3, PyMySQL, psycopg2) are treated alike: OperationalError covers lost connections,
    refused connections, locks, deadlocks and full disks, all of which clear up by waiting.
    """
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"OperationalError", "InterfaceError"})


class SqlWriter:
    """Writes batches of rows in one transaction each: readings, rollups, legacy table."""

    def __init__(
        self,
        db: peewee.Database,
        *,
        legacy_table: bool = False,
        book: Optional[BaseBook] = None,
        legacy_local_time: bool = False,
    ) -> None:
        self.db = db
        self.dialect = dialect_of(db)
        self.legacy_table = legacy_table
        self.legacy_local_time = legacy_local_time
        self.book = book if book is not None else BaseBook()
        self._meter_keys: dict[str, int] = {}
        self._base_index: dict[tuple[int, str], int] = {}
        self._last_seen: dict[int, float] = {}  # meter -> last_seen written (epoch s)
        self._legacy_meter: Optional[str] = None
        self._unknown_bases: set[str] = set()
        d = self.dialect
        # INSERT heads by the columns they bind (see _insert_readings)
        self._reading_heads: dict[tuple[str, ...], str] = {}
        self._rollup_sql = {
            table: (d.insert_head(table, rollup_columns()), _rollup_upsert_tail(d, table))
            for table, _seconds in ROLLUPS
        }
        self._legacy_head = d.insert_head(LEGACY_TABLE, ["time", *LEGACY_FIELDS], ignore=True)
        self._legacy_tail = d.insert_tail(ignore=True)

    def meter_key(self, meter_id: str, seen: datetime) -> int:
        """The integer key of a meter, created on first sight (in its own transaction)."""
        key = self._meter_keys.get(meter_id)
        if key is not None:
            return key
        d = self.dialect
        select = f"SELECT {d.q('id')} FROM {d.q('meters')} WHERE {d.q('meter_id')} = {d.param}"
        row = _sql(self.db, select, (meter_id,)).fetchone()
        if row is None:
            # a plain INSERT: with IGNORE, MySQL would store a too long id cut short
            head = d.insert_head("meters", ["meter_id", "first_seen", "last_seen"])
            stamp = d.time_param(seen)
            try:
                with self.db.atomic():
                    _sql(self.db, head + f"({d.param}, {d.param}, {d.param})",
                         (meter_id, stamp, stamp))  # fmt: skip
            except peewee.IntegrityError:
                pass  # another writer added it meanwhile
            row = _sql(self.db, select, (meter_id,)).fetchone()
            if row is None:
                raise peewee.DataError(f"meter id {meter_id[:40]!r}... cannot be stored")
        key = int(row[0])
        self._meter_keys[meter_id] = key
        return key

    def forget_meters(self) -> None:
        """Drop cached meter keys (after the schema may have been recreated)."""
        self._meter_keys.clear()
        self._base_index.clear()

    def base_index(self, meter: int, key: str) -> Optional[int]:
        """Where base `key` sits in the meter's ``obis_bases`` list, added if new (inside the
        batch's transaction). None if nobody knows the base any more."""
        index = self._base_index.get((meter, key))
        if index is not None:
            return index
        d = self.dialect
        row = _sql(
            self.db,
            # locked until the batch commits: several loggers may add bases to one meter, and
            # the list is read, extended and written back (positions already handed out never
            # move, so cached indexes stay valid)
            f"SELECT {d.q('obis_bases')} FROM {d.q('meters')} WHERE {d.q('id')} = {d.param}"
            + d.lock_rows,
            (meter,),
        ).fetchone()
        bases: list[list[Any]] = json.loads(row[0]) if row is not None and row[0] else []
        for position, (known, base) in enumerate(bases):
            self._base_index[(meter, str(known))] = position
            self.book.add(str(known), dict(base))
        index = self._base_index.get((meter, key))
        if index is not None:
            return index
        content = self.book.get(key)
        if content is None:
            if key not in self._unknown_bases:
                self._unknown_bases.add(key)
                log.error("OBIS dictionary %s is lost: its rows keep only their own values", key)
            return None
        bases.append([key, content])
        _sql(
            self.db,
            f"UPDATE {d.q('meters')} SET {d.q('obis_bases')} = {d.param} "
            f"WHERE {d.q('id')} = {d.param}",
            (dumps_list(bases), meter),
        )
        index = len(bases) - 1
        self._base_index[(meter, key)] = index
        return index

    def compact(self, row: StoredRow) -> StoredRow:
        """A row with a base (rows from `StoredRow.from_reading` without a book have none)."""
        if row.base is not None:
            return row
        key, delta = self.book.split(row.meter_id, decode_values(row.values_json), row.fields)
        return replace(row, base=key, values_json=dumps(delta) if delta else "")

    def write(self, rows: Sequence[StoredRow]) -> int:
        """Store `rows` in one transaction; returns how many were new.

        Rows already in the database (same meter and time) are skipped entirely, which makes
        replaying a batch after a crash harmless.
        """
        meters = set(map(_meter_id, rows))
        if len(meters) == 1:  # the usual batch: one meter (a copy: _write_meter sorts it)
            by_meter = {meters.pop(): list(rows)}
        else:
            by_meter = {}
            for row in rows:
                by_meter.setdefault(row.meter_id, []).append(row)
        keys = {m: self.meter_key(m, group[0].time) for m, group in by_meter.items()}
        written = 0
        with self.db.atomic():
            for meter_id, group in by_meter.items():
                written += self._write_meter(keys[meter_id], meter_id, group)
        return written

    def _existing_times(self, meter: int, first: datetime, last: datetime) -> set[Any]:
        d = self.dialect
        cursor = _sql(
            self.db,
            f"SELECT {d.q('time')} FROM {d.q('readings')} WHERE {d.q('meter')} = {d.param} "
            f"AND {d.q('time')} >= {d.param} AND {d.q('time')} <= {d.param}",
            (meter, *d.time_params((first, last))),
        )
        return set(d.time_params([d.time_value(r[0]) for r in cursor.fetchall()]))

    def _write_meter(self, meter: int, meter_id: str, group: list[StoredRow]) -> int:
        d = self.dialect
        group.sort(key=_row_time)
        existing = self._existing_times(meter, group[0].time, group[-1].time)
        minutes: dict[int, _Bucket] = {}
        written = 0
        newest: Optional[StoredRow] = None
        # RUN_ROWS rows at a time: each step below passes over the rows, and the rows
        # of a large batch (a replay: 20,000) do not stay in the CPU cache from one to the next
        for run in minute_runs(group, RUN_ROWS):
            fresh = list(run)
            stamps = d.time_params(map(_row_time, fresh))
            # (runs never split a time: only the database's rows can repeat one of another run)
            if existing or not all(map(operator.lt, stamps, stamps[1:])):
                fresh, stamps = _new_rows(fresh, stamps, existing)
                if not fresh:
                    continue
            if None in map(_base, fresh):
                fresh = [row if row.base is not None else self.compact(row) for row in fresh]
            self._insert_readings(meter, fresh, stamps)
            minutes.update(minute_buckets(fresh))  # (runs share no minute)
            if self.legacy_table:
                self._write_legacy(meter_id, fresh)
            written += len(fresh)
            newest = fresh[-1]
        if newest is None:
            return 0
        for (table, _seconds), buckets in zip(ROLLUPS, rollup_levels(minutes)):
            head, tail = self._rollup_sql[table]
            rollup_params = [b.params(meter) for b in sorted(buckets.values(), key=_bucket_key)]
            _execute_many(self.db, d, head, tail, rollup_params)
        # meters.last_seen to the hour: rewriting it with every batch cost the SD card a page
        # a minute; the exact last reading is MAX(time) of readings
        if newest.ts - self._last_seen.get(meter, float("-inf")) < 3600:
            return written
        self._last_seen[meter] = newest.ts
        last_seen = d.time_param(newest.time)
        _sql(
            self.db,
            f"UPDATE {d.q('meters')} SET {d.q('last_seen')} = {d.param} WHERE {d.q('id')} = "
            f"{d.param} AND ({d.q('last_seen')} IS NULL OR {d.q('last_seen')} < {d.param})",
            (last_seen, meter, last_seen),
        )
        return written

    def _insert_readings(self, meter: int, rows: list[StoredRow], stamps: list[Any]) -> None:
        """INSERT the rows of one meter, built column by column.

        A column that is NULL in every row is left out of the statement (it has no default,
        so the row is the same): sqlite3 binds a None through its adapter lookup, ~0.2 us
        each, and a meter leaves most of the 25 value columns NULL in every row (a single
        reading's min and max are its value: not stored twice).
        """
        count = len(rows)
        fields = list(map(row_fields, rows))
        try:
            values = list(zip(*map(pick_fields, fields)))  # (rows hold all of them)
        except KeyError:
            values = [tuple(f.get(name) for f in fields) for name in Reading.FIELDS]
        names: list[str] = ["meter", "time", "samples"]
        columns: list[Sequence[Any]] = [[meter] * count, stamps, list(map(row_samples, rows))]
        optional: list[tuple[str, Sequence[Any]]] = list(zip(Reading.FIELDS, values))
        ranged = list(map(row_minmax, rows))
        if any(ranged):
            no_range = (None, None)
            for name in POWER_FIELDS:
                pairs = [minmax.get(name, no_range) for minmax in ranged]
                optional.append((f"{name}_min", [pair[0] for pair in pairs]))
                optional.append((f"{name}_max", [pair[1] for pair in pairs]))
        texts = list(map(_values_json, rows))
        if texts.count("") != count:  # ("" -> NULL: nothing differs from the base)
            optional.append(("obis_values", [text or None for text in texts]))
        optional.append(("obis_base", self._base_indexes(meter, rows)))
        for name, column in optional:
            # (a present value in the first row decides without counting)
            if column[0] is not None or column.count(None) != count:
                names.append(name)
                columns.append(column)
        key = tuple(names)
        head = self._reading_heads.get(key)
        if head is None:
            head = self._reading_heads[key] = self.dialect.insert_head("readings", names)
        _execute_many(self.db, self.dialect, head, "", list(zip(*columns)))

    def _base_indexes(self, meter: int, rows: list[StoredRow]) -> list[Optional[int]]:
        """The ``obis_base`` of each row: its base's index (rows of a batch share a few)."""
        bases = list(map(_base, rows))
        indexes: dict[Optional[str], Optional[int]] = {None: None}
        for key in dict.fromkeys(bases):  # (in order: a new base is appended to the list)
            if key is not None:
                # (once per batch: a lost base is not looked up again within the transaction,
                # which holds the meter's row)
                indexes[key] = self.base_index(meter, key)
        return list(map(indexes.__getitem__, bases))

    def _legacy_time(self, moment: datetime) -> Any:
        # legacy_local_time: the old sml.py script stored the server's local NOW(); its
        # readers compare with local times, so the column can keep that meaning
        if self.legacy_local_time:
            moment = _legacy_wall_clock(moment)
        return self.dialect.seconds_param(moment)

    def _write_legacy(self, meter_id: str, rows: list[StoredRow]) -> None:
        # the old table has no meter column: it follows the first meter, like the old script
        if self._legacy_meter is None:
            self._legacy_meter = meter_id
        elif meter_id != self._legacy_meter:
            return
        d = self.dialect
        params = [
            [self._legacy_time(row.time), *(row.fields.get(name) for name in LEGACY_FIELDS)]
            for row in rows
        ]
        _execute_many(self.db, d, self._legacy_head, self._legacy_tail, params)


def _new_rows(
    rows: list[StoredRow], stamps: list[Any], existing: set[Any]
) -> tuple[list[StoredRow], list[Any]]:
    """The rows (and their times) whose time is neither in `existing` nor taken by an earlier
    row of theirs; `existing` learns their times."""
    fresh: list[StoredRow] = []
    fresh_stamps: list[Any] = []
    for row, stamp in zip(rows, stamps):
        if stamp not in existing:
            existing.add(stamp)
            fresh.append(row)
            fresh_stamps.append(stamp)
    return fresh, fresh_stamps


def _legacy_wall_clock(moment: datetime) -> datetime:
    """Local wall-clock time written as if it were UTC: what the old script's NOW() stored."""
    local = moment.astimezone().replace(tzinfo=None)
    return local.replace(tzinfo=timezone.utc)


def _bucket_key(bucket: _Bucket) -> int:
    return bucket.bucket


# per-row getters as C callables (a batch maps them over thousands of rows)
_row_time = operator.attrgetter("time")
_meter_id = operator.attrgetter("meter_id")
_base = operator.attrgetter("base")
_values_json = operator.attrgetter("values_json")
