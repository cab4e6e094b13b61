"""Schema and migrations: table layout, DDL, `ensure_schema` and `schema_version`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Callable, Optional

import peewee

from smlogger.reading import Reading
from smlogger.store.dialect import Dialect, _sql, dialect_of

POWER_FIELDS: tuple[str, ...] = ("p_sum", "p_L1", "p_L2", "p_L3")
ROLLUP_ENERGY: tuple[str, ...] = ("e_sum", "e_export")
LEGACY_FIELDS: tuple[str, ...] = ("e_sum", "p_sum", "p_L1", "p_L2", "p_L3")
# (table, bucket width in seconds), finest first
ROLLUPS: tuple[tuple[str, int], ...] = (
    ("rollup_minute", 60),
    ("rollup_hour", 3600),
    ("rollup_day", 86400),
)
ROLLUP_SECONDS = {name: seconds for name, seconds in ROLLUPS}
LEGACY_TABLE = "values"
SCHEMA_VERSION_TABLE = "schema_version"


def reading_columns() -> list[str]:
    """Value columns of `readings`, in table order (after meter, time, samples)."""
    columns = list(Reading.FIELDS)
    for name in POWER_FIELDS:
        columns += [f"{name}_min", f"{name}_max"]
    return columns


def rollup_columns() -> list[str]:
    """Columns of the rollup tables, in insert order."""
    columns = ["meter", "bucket", "n", "t_first", "t_last"]
    for name in POWER_FIELDS:
        columns += [f"{name}_n", f"{name}_sum", f"{name}_min", f"{name}_max"]
    for name in ROLLUP_ENERGY:
        columns += [f"{name}_first", f"{name}_last"]
    return columns


def _rollup_column_type(d: Dialect, column: str) -> str:
    if column == "n" or column.endswith("_n"):
        return "INTEGER NOT NULL DEFAULT 0"
    if column.endswith("_sum") and column[: -len("_sum")] in POWER_FIELDS:
        return f"{d.double} NOT NULL DEFAULT 0"
    return d.double


def _ddl_meters(d: Dialect) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {d.q('meters')} ("
        f"{d.q('id')} {d.autoincrement_pk}, "
        f"{d.q('meter_id')} {d.key_text} NOT NULL UNIQUE, "
        f"{d.q('first_seen')} {d.timestamp}, "
        f"{d.q('last_seen')} {d.timestamp})" + d.table_options()
    )


def _ddl_readings(d: Dialect) -> str:
    cols = [
        f"{d.q('meter')} INTEGER NOT NULL",
        f"{d.q('time')} {d.timestamp} NOT NULL",
        f"{d.q('samples')} INTEGER NOT NULL DEFAULT 1",
    ]
    cols += [f"{d.q(c)} {d.double}" for c in reading_columns()]
    cols.append(f"{d.q('obis_values')} {d.text}")
    cols.append(f"PRIMARY KEY ({d.q('meter')}, {d.q('time')})")
    return f"CREATE TABLE IF NOT EXISTS {d.q('readings')} ({', '.join(cols)})" + d.table_options()


def _ddl_rollup(d: Dialect, table: str) -> str:
    cols = [f"{d.q('meter')} INTEGER NOT NULL", f"{d.q('bucket')} {d.bigint} NOT NULL"]
    cols += [f"{d.q(c)} {_rollup_column_type(d, c)}" for c in rollup_columns()[2:]]
    cols.append(f"PRIMARY KEY ({d.q('meter')}, {d.q('bucket')})")
    return f"CREATE TABLE IF NOT EXISTS {d.q(table)} ({', '.join(cols)})" + d.table_options(
        small_rows=True
    )


def _ddl_legacy(d: Dialect) -> str:
    cols = [f"{d.q('time')} {d.timestamp_seconds} NOT NULL"]
    cols += [f"{d.q(c)} {d.double}" for c in LEGACY_FIELDS]
    cols.append(f"PRIMARY KEY ({d.q('time')})")
    return f"CREATE TABLE IF NOT EXISTS {d.q(LEGACY_TABLE)} ({', '.join(cols)})" + d.table_options()


def _migration_1(db: peewee.Database, d: Dialect) -> None:
    _sql(db, _ddl_meters(d))
    _sql(db, _ddl_readings(d))
    for table, _seconds in ROLLUPS:
        _sql(db, _ddl_rollup(d, table))


def _ddl_compact_readings(d: Dialect, table: str) -> str:
    """`readings` as SQLite keeps it since migration 2: clustered by its primary key (WITHOUT
    ROWID), so the (meter, time) key is stored once instead of in the table and an index."""
    cols = [
        f"{d.q('meter')} INTEGER NOT NULL",
        f"{d.q('time')} {d.timestamp} NOT NULL",
        f"{d.q('samples')} INTEGER NOT NULL DEFAULT 1",
    ]
    cols += [f"{d.q(c)} {d.double}" for c in reading_columns()]
    cols.append(f"{d.q('obis_values')} {d.text}")
    cols.append(f"{d.q('obis_base')} INTEGER")
    cols.append(f"PRIMARY KEY ({d.q('meter')}, {d.q('time')})")
    return f"CREATE TABLE {d.q(table)} ({', '.join(cols)}) WITHOUT ROWID"


def _migration_2(db: peewee.Database, d: Dialect) -> None:
    # every step checks first: several loggers may migrate one database at the same time
    _add_missing_columns(db, d, "meters", {"obis_bases": d.text})
    _add_missing_columns(db, d, "readings", {"obis_base": "INTEGER"})
    if d.name != "sqlite":
        return  # InnoDB clusters by the primary key already; PostgreSQL keeps its heap
    row = _sql(db, "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'readings'")
    ddl = row.fetchone()
    if ddl is None or "WITHOUT ROWID" in str(ddl[0]).upper():
        return
    present = [c.name for c in db.get_columns("readings")]
    wanted = ["meter", "time", "samples", *reading_columns(), "obis_values", "obis_base"]
    common = ", ".join(d.q(c) for c in wanted if c in present)
    _sql(db, _ddl_compact_readings(d, "readings_compact"))
    _sql(db, f"INSERT INTO readings_compact ({common}) SELECT {common} FROM readings")
    _sql(db, "DROP TABLE readings")
    _sql(db, "ALTER TABLE readings_compact RENAME TO readings")


Migration = tuple[int, str, Callable[[peewee.Database, Dialect], None]]
MIGRATIONS: tuple[Migration, ...] = (
    (1, "create meters, readings and the minute/hour/day rollup tables", _migration_1),
    (
        2,
        "compact rows: per-meter OBIS dictionaries (meters.obis_bases, readings.obis_base); "
        "SQLite readings clustered by (meter, time)",
        _migration_2,
    ),
)


def _current_version(db: peewee.Database, d: Dialect) -> int:
    cursor = _sql(db, f"SELECT MAX({d.q('version')}) FROM {d.q(SCHEMA_VERSION_TABLE)}")
    row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _add_missing_columns(
    db: peewee.Database, d: Dialect, table: str, wanted: Mapping[str, str]
) -> list[str]:
    present = {c.name.lower() for c in db.get_columns(table)}
    added = []
    for column, sql_type in wanted.items():
        if column.lower() not in present:
            _sql(db, f"ALTER TABLE {d.q(table)} ADD COLUMN {d.q(column)} {sql_type}")
            added.append(f"added column {table}.{column}")
    return added


def _create_database_if_missing(db: peewee.Database, d: Dialect) -> Optional[str]:
    """Create the configured MySQL/PostgreSQL database when the server says it is unknown."""
    try:
        db.connect(reuse_if_open=True)
        return None
    except peewee.OperationalError as exc:
        text = str(exc)
        unknown = ("1049" in text and d.name == "mysql") or (
            d.name == "postgresql" and "does not exist" in text
        )
        if not unknown:
            raise
    name = str(db.database)
    params = dict(db.connect_params)
    if d.name == "mysql":
        # any account may open information_schema, so it serves to reach the server
        server = peewee.MySQLDatabase("information_schema", **params)
        with server.connection_context():
            _sql(server, f"CREATE DATABASE IF NOT EXISTS {d.q(name)} CHARACTER SET utf8mb4")
    else:
        server_pg = peewee.PostgresqlDatabase("postgres", **params)
        with server_pg.connection_context():
            server_pg.connection().autocommit = True  # type: ignore[no-untyped-call]
            exists = _sql(
                server_pg, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                try:
                    _sql(server_pg, f"CREATE DATABASE {d.q(name)}")
                except peewee.DatabaseError as exc:
                    # another logger created it between our check and our CREATE
                    # (duplicate_database, or the unique index of pg_database)
                    if getattr(getattr(exc, "orig", None), "pgcode", None) not in PG_DUPLICATE:
                        raise
                    db.connect(reuse_if_open=True)
                    return None
    db.connect(reuse_if_open=True)
    return f"created database {name}"


# SQLSTATEs of "it exists already": duplicate_database, duplicate_table, unique_violation
PG_DUPLICATE = ("42P04", "42P07", "23505")
# Loggers started together (one per meter against one server) take turns at the schema:
# PostgreSQL's CREATE TABLE IF NOT EXISTS and everyone's ALTER TABLE ADD COLUMN are not safe
# to run concurrently. The lock is per server connection and released when the work is done.
SCHEMA_LOCK_NAME = "smlogger_schema"
SCHEMA_LOCK_KEY = 0x736D6C6F67676572 & 0x7FFFFFFFFFFFFFFF  # "smlogger" as a bigint
SCHEMA_LOCK_WAIT_S = 120


@contextlib.contextmanager
def _schema_lock(db: peewee.Database, d: Dialect) -> Iterator[None]:
    """Hold the server-wide schema lock of the smlogger database (nothing for SQLite)."""
    if d.name == "mysql":
        got = _sql(db, "SELECT GET_LOCK(%s, %s)", (SCHEMA_LOCK_NAME, SCHEMA_LOCK_WAIT_S)).fetchone()
        if not got or got[0] != 1:
            raise peewee.OperationalError(
                f"schema lock {SCHEMA_LOCK_NAME} not granted within {SCHEMA_LOCK_WAIT_S} s "
                "(another smlogger is creating or migrating the schema)"
            )
        try:
            yield
        finally:
            _sql(db, "SELECT RELEASE_LOCK(%s)", (SCHEMA_LOCK_NAME,))
    elif d.name == "postgresql":
        _sql(db, "SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        try:
            yield
        finally:
            _sql(db, "SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
    else:
        yield


def ensure_schema(db: peewee.Database, *, legacy_table: bool = False) -> list[str]:
    """Create or migrate the schema; returns what was done (empty when up to date).

    Safe to run any number of times and from several processes at once: every step is
    idempotent, a database created by another process meanwhile is accepted, and tables and
    columns are created under a server-wide lock (GET_LOCK / pg_advisory_lock), so loggers
    started together take turns (tests/test_scale_out.py).
    """
    d = dialect_of(db)
    done: list[str] = []
    if d.name != "sqlite":
        created = _create_database_if_missing(db, d)
        if created:
            done.append(created)
    with _schema_lock(db, d):
        done += _ensure_tables(db, d, legacy_table=legacy_table)
    return done


def _ensure_tables(db: peewee.Database, d: Dialect, *, legacy_table: bool) -> list[str]:
    done: list[str] = []
    # MySQL checks the CREATE privilege even for an existing table: a user with only the
    # rights to write (tables made by `smlogger db-init` as an admin) must not need it
    if SCHEMA_VERSION_TABLE not in {t.lower() for t in db.get_tables()}:
        _create_version_table(db, d)
    current = _current_version(db, d)
    for version, description, apply in MIGRATIONS:
        if version <= current:
            continue
        with db.atomic():
            apply(db, d)
            head = d.insert_head(
                SCHEMA_VERSION_TABLE, ["version", "applied_at", "description"], ignore=True
            )
            _sql(
                db,
                head + f"({d.param}, {d.param}, {d.param})" + d.insert_tail(ignore=True),
                (version, d.time_param(datetime.now(timezone.utc)), description),
            )
        done.append(f"migration {version}: {description}")
    # columns for fields added to Reading after a database was created
    wanted = {c: d.double for c in reading_columns()}
    done += _add_missing_columns(db, d, "readings", wanted)
    rollup_wanted = {c: _rollup_column_type(d, c) for c in rollup_columns()[2:]}
    for table, _seconds in ROLLUPS:
        done += _add_missing_columns(db, d, table, rollup_wanted)
    if legacy_table and LEGACY_TABLE not in {t.lower() for t in db.get_tables()}:
        _sql(db, _ddl_legacy(d))
        done.append(f"created legacy table {LEGACY_TABLE} (time, e_sum, p_sum, p_L1, p_L2, p_L3)")
    return done


def _create_version_table(db: peewee.Database, d: Dialect) -> None:
    _sql(
        db,
        f"CREATE TABLE IF NOT EXISTS {d.q(SCHEMA_VERSION_TABLE)} ("
        f"{d.q('version')} INTEGER NOT NULL PRIMARY KEY, "
        f"{d.q('applied_at')} {d.timestamp} NOT NULL, "
        f"{d.q('description')} VARCHAR(255))" + d.table_options(),
    )


def schema_version(db: peewee.Database) -> int:
    d = dialect_of(db)
    if SCHEMA_VERSION_TABLE not in {t.lower() for t in db.get_tables()}:
        return 0
    return _current_version(db, d)
