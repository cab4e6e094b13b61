"""SQL dialects: where SQLite, MySQL and PostgreSQL differ, and running statements."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import chain
from typing import Any

import peewee

_SECONDS = tuple(f"{second:02d}." for second in range(60))  # "SS." of a time text


@dataclass(frozen=True)
class Dialect:
    """The few places where SQLite, MySQL and PostgreSQL SQL differ."""

    name: str  # "sqlite" | "mysql" | "postgresql"

    @property
    def param(self) -> str:
        """The DB-API placeholder of this driver."""
        return "?" if self.name == "sqlite" else "%s"

    def q(self, identifier: str) -> str:
        """`identifier` quoted for this database."""
        if self.name == "mysql":
            return f"`{identifier}`"
        return f'"{identifier}"'

    @property
    def double(self) -> str:
        """Column type of a double-precision float."""
        return {"sqlite": "REAL", "mysql": "DOUBLE", "postgresql": "DOUBLE PRECISION"}[self.name]

    @property
    def bigint(self) -> str:
        """Column type of a 64-bit integer."""
        return "INTEGER" if self.name == "sqlite" else "BIGINT"

    @property
    def timestamp(self) -> str:
        """Column type of a timestamp with microseconds (UTC, no zone)."""
        # SQLite keeps fixed-width ISO text so that text order is time order
        return {"sqlite": "TEXT", "mysql": "DATETIME(6)", "postgresql": "TIMESTAMP(6)"}[self.name]

    @property
    def timestamp_seconds(self) -> str:
        """Column type of a timestamp in whole seconds (UTC, no zone)."""
        return {"sqlite": "TEXT", "mysql": "DATETIME", "postgresql": "TIMESTAMP(0)"}[self.name]

    @property
    def text(self) -> str:
        """Column type of unbounded text."""
        return "MEDIUMTEXT" if self.name == "mysql" else "TEXT"

    @property
    def key_text(self) -> str:
        """Column type of text that is part of a key or index."""
        return "TEXT" if self.name == "sqlite" else "VARCHAR(191)"

    @property
    def autoincrement_pk(self) -> str:
        """Column definition of an auto-increment integer primary key."""
        return {
            "sqlite": "INTEGER PRIMARY KEY",
            "mysql": "INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY",
            "postgresql": "SERIAL PRIMARY KEY",
        }[self.name]

    def table_options(self, *, small_rows: bool = False) -> str:
        """Suffix of CREATE TABLE (InnoDB/utf8mb4; WITHOUT ROWID for small SQLite rows)."""
        if self.name == "mysql":
            return " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        if self.name == "sqlite" and small_rows:
            return " WITHOUT ROWID"
        return ""

    def least(self, a: str, b: str) -> str:
        """SQL for the smaller of two expressions, ignoring a NULL side."""
        # NULL-tolerant: SQLite's min(a, b) and MySQL's LEAST return NULL if either is NULL
        fn = "MIN" if self.name == "sqlite" else "LEAST"
        return f"COALESCE({fn}({a}, {b}), {a}, {b})"

    def greatest(self, a: str, b: str) -> str:
        """SQL for the larger of two expressions, ignoring a NULL side."""
        fn = "MAX" if self.name == "sqlite" else "GREATEST"
        return f"COALESCE({fn}({a}, {b}), {a}, {b})"

    def floor_to(self, expr: str, step: int) -> str:
        """SQL that rounds an integer expression down to a multiple of `step`."""
        step = int(step)
        if self.name == "mysql":
            return f"(({expr}) DIV {step}) * {step}"
        return f"(({expr}) / {step}) * {step}"

    def epoch_seconds(self, column: str) -> str:
        """Whole seconds since 1970 of a UTC time column, independent of session time zones."""
        if self.name == "sqlite":
            return f"CAST(strftime('%s', {column}) AS INTEGER)"
        if self.name == "mysql":
            return f"TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {column})"
        return f"CAST(FLOOR(EXTRACT(EPOCH FROM {column})) AS BIGINT)"

    def old(self, table: str, column: str) -> str:
        """The stored value of `column` inside an upsert's update clause."""
        if self.name == "mysql":
            return self.q(column)
        return f"{self.q(table)}.{self.q(column)}"

    def new(self, column: str) -> str:
        """The value that was about to be inserted, inside an upsert's update clause."""
        if self.name == "mysql":
            return f"VALUES({self.q(column)})"
        return f"excluded.{self.q(column)}"

    @property
    def lock_rows(self) -> str:
        """What ends a SELECT whose rows the transaction will update from what it read.

        MariaDB and PostgreSQL otherwise give a snapshot (or the last committed version) to two
        writers at once and the later UPDATE silently wins; SQLite has one writer at a time and
        refuses a write from a stale snapshot (SQLITE_BUSY, retried), so it needs nothing.
        """
        return "" if self.name == "sqlite" else " FOR UPDATE"

    def insert_head(self, table: str, columns: Sequence[str], *, ignore: bool = False) -> str:
        """`INSERT [OR IGNORE] INTO table (cols) VALUES ` for this database."""
        cols = ", ".join(self.q(c) for c in columns)
        verb = "INSERT"
        if ignore and self.name == "sqlite":
            verb = "INSERT OR IGNORE"
        elif ignore and self.name == "mysql":
            verb = "INSERT IGNORE"
        return f"{verb} INTO {self.q(table)} ({cols}) VALUES "

    def insert_tail(self, *, ignore: bool = False) -> str:
        """What follows the VALUES of an ignoring insert (PostgreSQL's ON CONFLICT DO NOTHING)."""
        return " ON CONFLICT DO NOTHING" if ignore and self.name == "postgresql" else ""

    def upsert_tail(self, keys: Sequence[str], sets: Sequence[tuple[str, str]]) -> str:
        """The ON CONFLICT / ON DUPLICATE KEY clause that applies `sets` to an existing row."""
        assignments = ", ".join(f"{self.q(col)} = {expr}" for col, expr in sets)
        if self.name == "mysql":
            # MySQL evaluates assignments left to right against the already updated row:
            # callers order `sets` so that no expression reads a column assigned before it
            return f" ON DUPLICATE KEY UPDATE {assignments}"
        key_list = ", ".join(self.q(k) for k in keys)
        return f" ON CONFLICT ({key_list}) DO UPDATE SET {assignments}"

    # values -----------------------------------------------------------------------------

    def time_param(self, moment: datetime) -> Any:
        """A timestamp parameter with microseconds, as this driver stores it."""
        return self.time_params((moment,))[0]

    def time_params(self, moments: Iterable[datetime]) -> list[Any]:
        """`time_param` of each moment (the writer's: one per row of a batch)."""
        if self.name != "sqlite":
            return [
                # what readings hold needs no conversion
                (m if m.tzinfo is timezone.utc else m.astimezone(timezone.utc)).replace(tzinfo=None)
                for m in moments
            ]
        # fixed-width text, "YYYY-MM-DD HH:MM:SS.ffffff": isoformat() without the zone cost
        # ~1 us per row; a batch's rows share their date and minute, formatted once per minute
        minutes: dict[tuple[int, int, int, int, int], str] = {}
        out: list[Any] = []
        for moment in moments:
            if moment.tzinfo is not timezone.utc:
                moment = moment.astimezone(timezone.utc)
            key = (moment.year, moment.month, moment.day, moment.hour, moment.minute)
            minute = minutes.get(key)
            if minute is None:
                minute = minutes[key] = "{:04d}-{:02d}-{:02d} {:02d}:{:02d}:".format(*key)
            out.append(f"{minute}{_SECONDS[moment.second]}{moment.microsecond:06d}")
        return out

    def seconds_param(self, moment: datetime) -> Any:
        """A timestamp parameter in whole seconds, as this driver stores it."""
        utc = moment.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0)
        if self.name == "sqlite":
            return utc.strftime("%Y-%m-%d %H:%M:%S")
        return utc

    def time_value(self, value: Any) -> datetime:
        """A stored timestamp (datetime or SQLite text) as an aware UTC datetime."""
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        if moment.tzinfo is None:
            return moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)


def dialect_of(db: peewee.Database) -> Dialect:
    """The Dialect of a peewee database (also behind a proxy); raises TypeError for others."""
    target = db.obj if isinstance(db, peewee.DatabaseProxy) else db
    if isinstance(target, peewee.SqliteDatabase):
        return Dialect("sqlite")
    if isinstance(target, peewee.MySQLDatabase):
        return Dialect("mysql")
    if isinstance(target, peewee.PostgresqlDatabase):
        return Dialect("postgresql")
    raise TypeError(f"unsupported database {type(target).__name__}")


def _sql(db: peewee.Database, sql: str, params: Sequence[Any] = ()) -> Any:
    """Run one statement on the calling thread's connection; returns the cursor."""
    return db.execute_sql(sql, params)  # type: ignore[no-untyped-call]


# host parameters of one SQLite statement where sqlite3 cannot tell (Python < 3.11): the limit
# of SQLite builds before 3.32
_SQLITE_PARAMS = 999
_SQLITE_ROWS = 512  # rows per INSERT at most (the statement's text and compiled size grow)


def _execute_many(
    db: peewee.Database, dialect: Dialect, head: str, tail: str, rows: Sequence[Sequence[Any]]
) -> None:
    """INSERT many rows with multi-row VALUES: one statement (one round trip) per chunk."""
    if not rows:
        return
    width = len(rows[0])
    placeholder = "(" + ", ".join([dialect.param] * width) + ")"
    if dialect.name == "sqlite":
        _sqlite_many(db, head, placeholder, tail, rows)
        return
    chunk = max(1, min(1000, 30000 // width))
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        sql = head + ", ".join([placeholder] * len(part)) + tail
        _sql(db, sql, list(chain.from_iterable(part)))


def _sqlite_many(
    db: peewee.Database, head: str, placeholder: str, tail: str, rows: Sequence[Sequence[Any]]
) -> None:
    # Not executemany: it runs a statement per row, and sqlite3 lets go of the GIL for each;
    # a busy thread then keeps the GIL for its switch interval (5 ms), so during a replay the
    # writer waited far longer than it wrote. Statements of power-of-two rows: a handful of
    # sizes that sqlite3 compiles once each (its statement cache), whatever the row count.
    cursor = db.cursor()  # type: ignore[no-untyped-call]
    try:
        getlimit = getattr(cursor.connection, "getlimit", None)
        limit = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit else _SQLITE_PARAMS
        most = max(1, min(_SQLITE_ROWS, limit // len(rows[0])))
        start = 0
        while start < len(rows):
            size = 1 << (min(most, len(rows) - start).bit_length() - 1)
            sql = head + ", ".join([placeholder] * size) + tail
            cursor.execute(sql, list(chain.from_iterable(rows[start : start + size])))
            start += size
    finally:
        cursor.close()
