"""SQL storage of readings: SQLite (default), MySQL/MariaDB, PostgreSQL through peewee.

What is kept:

* ``meters`` -- one row per meter id (server id as hex), first/last seen.
* ``readings`` -- one row per stored reading: meter, UTC time, every well-known field of
  `Reading.FIELDS` as a column, ``*_min``/``*_max`` for the power fields (equal to the value
  unless the row aggregates several readings, see ``samples``) and ``obis_values``, a JSON
  object with every value the meter sent, by OBIS code: ``{"1-0:1.8.0*255": [12339700.0, "Wh"]}``.
  The primary key (meter, time) is both the time-range index and what makes replays idempotent.
* ``rollup_minute``/``rollup_hour``/``rollup_day`` -- per meter and UTC bucket: count, sum/min/max
  of the power fields and the first/last energy counters, upserted in the same transaction as
  the readings, so charts over a year read a few thousand rows instead of 31.5 million.
* ``values`` (optional, ``legacy_table``) -- the old script's layout (time, e_sum, p_sum, p_L1,
  p_L2, p_L3) for existing dashboards.
* ``schema_version`` -- applied migrations.

`Store` is the SQL sink. Every reading first goes to a durable disk queue
(`smlogger.diskqueue`), a background thread writes the queue to the database in batches and
acknowledges what was committed. A dead or slow database therefore never blocks `write`, and
after an outage the backlog is written in order. A crash between the database commit and the
queue acknowledgement replays a batch; rows whose (meter, time) already exist are skipped
before anything (rollups included) is touched, so nothing is counted twice.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import threading
import time as _time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import peewee

from smlogger.diskqueue import DiskQueue, Entry, QueueClosedError
from smlogger.reading import ENERGY_FIELDS, Reading, Value

log = logging.getLogger(__name__)

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
NICE_STEPS: tuple[int, ...] = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip
# meters send every 1..4 s: ranges up to max_points * 4 s may still fit as raw readings
RAW_SECONDS_PER_READING = 4
DEFAULT_SQLITE_NAME = "smlogger.db"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

Number = Union[int, float]


class StoreUnavailableError(RuntimeError):
    """The database could not be reached for a query."""


# ---- opening a database from a URL --------------------------------------------------------


def redact_url(url: Optional[str]) -> str:
    """The URL with its password replaced, safe for logs and error messages."""
    if not url:
        return "sqlite (default)"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))


def _sqlite_path(url: str, data_dir: Path) -> Path:
    rest = url[len("sqlite://") :] if url.startswith("sqlite://") else "?"
    if rest in ("", "/"):
        return data_dir / DEFAULT_SQLITE_NAME
    if not rest.startswith("/"):
        raise ValueError("sqlite URL must look like sqlite:///relative.db or sqlite:////abs.db")
    path_text = unquote(rest[1:].split("?", 1)[0])
    if not path_text:
        return data_dir / DEFAULT_SQLITE_NAME
    if path_text == ":memory:":
        raise ValueError(
            "an in-memory SQLite database is not shared between the logger's threads; use a file"
        )
    return Path(path_text)


def open_database(url: Optional[str], data_dir: Path) -> peewee.Database:
    """A peewee database for `url` (not connected yet).

    * ``None``/``""`` -- SQLite file ``data_dir/smlogger.db``
    * ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
    * ``mysql://user:password@host:port/database`` (also ``mariadb://``, ``mysql+pymysql://``);
      ``?unix_socket=/run/mysqld/mysqld.sock`` connects through a socket; other query
      parameters (``charset``, ``connect_timeout``, ``ssl_ca``...) go to PyMySQL
    * ``postgresql://user:password@host:port/database`` (also ``postgres://``); query
      parameters (``sslmode``, ``host`` for a socket directory...) go to psycopg2

    User names and passwords may be percent-encoded.
    """
    if not url:
        return _open_sqlite(data_dir / DEFAULT_SQLITE_NAME)
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return _open_sqlite(_sqlite_path(url, data_dir))
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ValueError(f"database URL {redact_url(url)} names no database (…/dbname)")
    if scheme in ("mysql", "mariadb", "mysql+pymysql"):
        params: dict[str, Any] = {
            "connect_timeout": 5,
            "read_timeout": 120,
            "write_timeout": 120,
            "init_command": "SET time_zone = '+00:00'",
        }
        if user is not None:
            params["user"] = user
        if password is not None:
            params["password"] = password
        if parts.hostname:
            params["host"] = parts.hostname
        if parts.port is not None:
            params["port"] = parts.port
        for key, value in query.items():
            params[key] = int(value) if key.endswith("timeout") and value.isdigit() else value
        return peewee.MySQLDatabase(name, **params)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg2"):
        pg: dict[str, Any] = {"connect_timeout": 5, "options": "-c TimeZone=UTC"}
        if user is not None:
            pg["user"] = user
        if password is not None:
            pg["password"] = password
        if parts.hostname:
            pg["host"] = parts.hostname
        if parts.port is not None:
            pg["port"] = parts.port
        pg.update(query)
        return peewee.PostgresqlDatabase(name, **pg)
    raise ValueError(
        f"unsupported database URL scheme {scheme!r} in {redact_url(url)}: "
        "use sqlite:///file.db, mysql://user:pw@host/db or postgresql://user:pw@host/db"
    )


def _open_sqlite(path: Path) -> peewee.SqliteDatabase:
    path.parent.mkdir(parents=True, exist_ok=True)
    return peewee.SqliteDatabase(
        str(path),
        timeout=30,
        pragmas={
            "journal_mode": "wal",
            # with WAL, NORMAL loses at most the last transactions on power loss, never
            # corrupts; the disk queue fsyncs what matters
            "synchronous": "normal",
            "cache_size": -16000,
            "foreign_keys": 0,
            "wal_autocheckpoint": 1000,
        },
    )


# ---- SQL dialects --------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """The few places where SQLite, MySQL and PostgreSQL SQL differ."""

    name: str  # "sqlite" | "mysql" | "postgresql"

    @property
    def param(self) -> str:
        return "?" if self.name == "sqlite" else "%s"

    def q(self, identifier: str) -> str:
        if self.name == "mysql":
            return f"`{identifier}`"
        return f'"{identifier}"'

    @property
    def double(self) -> str:
        return {"sqlite": "REAL", "mysql": "DOUBLE", "postgresql": "DOUBLE PRECISION"}[self.name]

    @property
    def bigint(self) -> str:
        return "INTEGER" if self.name == "sqlite" else "BIGINT"

    @property
    def timestamp(self) -> str:
        # SQLite keeps fixed-width ISO text so that text order is time order
        return {"sqlite": "TEXT", "mysql": "DATETIME(6)", "postgresql": "TIMESTAMP(6)"}[self.name]

    @property
    def timestamp_seconds(self) -> str:
        return {"sqlite": "TEXT", "mysql": "DATETIME", "postgresql": "TIMESTAMP(0)"}[self.name]

    @property
    def text(self) -> str:
        return "MEDIUMTEXT" if self.name == "mysql" else "TEXT"

    @property
    def key_text(self) -> str:
        return "TEXT" if self.name == "sqlite" else "VARCHAR(191)"

    @property
    def autoincrement_pk(self) -> str:
        return {
            "sqlite": "INTEGER PRIMARY KEY",
            "mysql": "INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY",
            "postgresql": "SERIAL PRIMARY KEY",
        }[self.name]

    def table_options(self, *, small_rows: bool = False) -> str:
        if self.name == "mysql":
            return " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        if self.name == "sqlite" and small_rows:
            return " WITHOUT ROWID"
        return ""

    def least(self, a: str, b: str) -> str:
        # NULL-tolerant: SQLite's min(a, b) and MySQL's LEAST return NULL if either is NULL
        fn = "MIN" if self.name == "sqlite" else "LEAST"
        return f"COALESCE({fn}({a}, {b}), {a}, {b})"

    def greatest(self, a: str, b: str) -> str:
        fn = "MAX" if self.name == "sqlite" else "GREATEST"
        return f"COALESCE({fn}({a}, {b}), {a}, {b})"

    def floor_to(self, expr: str, step: int) -> str:
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

    def insert_head(self, table: str, columns: Sequence[str], *, ignore: bool = False) -> str:
        cols = ", ".join(self.q(c) for c in columns)
        verb = "INSERT"
        if ignore and self.name == "sqlite":
            verb = "INSERT OR IGNORE"
        elif ignore and self.name == "mysql":
            verb = "INSERT IGNORE"
        return f"{verb} INTO {self.q(table)} ({cols}) VALUES "

    def insert_tail(self, *, ignore: bool = False) -> str:
        return " ON CONFLICT DO NOTHING" if ignore and self.name == "postgresql" else ""

    def upsert_tail(self, keys: Sequence[str], sets: Sequence[tuple[str, str]]) -> str:
        assignments = ", ".join(f"{self.q(col)} = {expr}" for col, expr in sets)
        if self.name == "mysql":
            # MySQL evaluates assignments left to right against the already updated row:
            # callers order `sets` so that no expression reads a column assigned before it
            return f" ON DUPLICATE KEY UPDATE {assignments}"
        key_list = ", ".join(self.q(k) for k in keys)
        return f" ON CONFLICT ({key_list}) DO UPDATE SET {assignments}"

    # values -----------------------------------------------------------------------------

    def time_param(self, moment: datetime) -> Any:
        utc = moment.astimezone(timezone.utc).replace(tzinfo=None)
        if self.name == "sqlite":
            return utc.isoformat(" ", "microseconds")
        return utc

    def seconds_param(self, moment: datetime) -> Any:
        utc = moment.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0)
        if self.name == "sqlite":
            return utc.strftime("%Y-%m-%d %H:%M:%S")
        return utc

    def time_value(self, value: Any) -> datetime:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        if moment.tzinfo is None:
            return moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)


def dialect_of(db: peewee.Database) -> Dialect:
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


def _execute_many(
    db: peewee.Database, dialect: Dialect, head: str, tail: str, rows: Sequence[Sequence[Any]]
) -> None:
    """INSERT many rows: executemany on SQLite, multi-row VALUES elsewhere (one round trip)."""
    if not rows:
        return
    width = len(rows[0])
    placeholder = "(" + ", ".join([dialect.param] * width) + ")"
    if dialect.name == "sqlite":
        cursor = db.cursor()  # type: ignore[no-untyped-call]
        try:
            cursor.executemany(head + placeholder + tail, rows)
        finally:
            cursor.close()
        return
    chunk = max(1, min(1000, 30000 // width))
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        sql = head + ", ".join([placeholder] * len(part)) + tail
        params = [value for row in part for value in row]
        _sql(db, sql, params)


# ---- schema and migrations ---------------------------------------------------------------


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


Migration = tuple[int, str, Callable[[peewee.Database, Dialect], None]]
MIGRATIONS: tuple[Migration, ...] = (
    (1, "create meters, readings and the minute/hour/day rollup tables", _migration_1),
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
                _sql(server_pg, f"CREATE DATABASE {d.q(name)}")
    db.connect(reuse_if_open=True)
    return f"created database {name}"


def ensure_schema(db: peewee.Database, *, legacy_table: bool = False) -> list[str]:
    """Create or migrate the schema; returns what was done (empty when up to date).

    Safe to run any number of times and from several processes: every step is idempotent.
    """
    d = dialect_of(db)
    done: list[str] = []
    if d.name != "sqlite":
        created = _create_database_if_missing(db, d)
        if created:
            done.append(created)
    _sql(
        db,
        f"CREATE TABLE IF NOT EXISTS {d.q(SCHEMA_VERSION_TABLE)} ("
        f"{d.q('version')} INTEGER NOT NULL PRIMARY KEY, "
        f"{d.q('applied_at')} {d.timestamp} NOT NULL, "
        f"{d.q('description')} VARCHAR(255))" + d.table_options(),
    )
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


def schema_version(db: peewee.Database) -> int:
    d = dialect_of(db)
    if SCHEMA_VERSION_TABLE not in {t.lower() for t in db.get_tables()}:
        return 0
    return _current_version(db, d)


# ---- rows: what is queued and stored per reading ------------------------------------------


def _finite(value: Any) -> Optional[float]:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def encode_values(values: Mapping[str, Value]) -> str:
    """The ``obis_values`` JSON: ``{obis: [value, unit]}``, octet strings as hex."""
    return json.dumps(
        {obis: [_json_value(v.value), v.unit] for obis, v in values.items()},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode_values(text: Optional[str]) -> dict[str, Value]:
    if not text:
        return {}
    out: dict[str, Value] = {}
    for obis, item in json.loads(text).items():
        value, unit = [*item, None, None][:2] if isinstance(item, list) else (item, None)
        out[obis] = Value(obis=obis, value=value, unit=unit)
    return out


@dataclass(frozen=True)
class StoredRow:
    """A reading as the SQL sink keeps it (and as it waits in the disk queue)."""

    meter_id: str
    time: datetime  # timezone-aware UTC
    samples: int
    fields: Mapping[str, Optional[float]]
    minmax: Mapping[str, tuple[float, float]]
    values_json: str

    @property
    def ts(self) -> float:
        return self.time.timestamp()

    @classmethod
    def from_reading(cls, reading: Reading) -> StoredRow:
        if reading.time.tzinfo is None:
            raise ValueError("reading time must be timezone-aware")
        fields = {name: _finite(getattr(reading, name)) for name in Reading.FIELDS}
        minmax: dict[str, tuple[float, float]] = {}
        for name, pair in (reading.minmax or {}).items():
            lo, hi = _finite(pair[0]), _finite(pair[1])
            if lo is not None and hi is not None:
                minmax[name] = (lo, hi)
        return cls(
            meter_id=reading.meter_id,
            time=reading.time.astimezone(timezone.utc),
            samples=max(1, int(reading.samples)),
            fields=fields,
            minmax=minmax,
            values_json=encode_values(reading.values),
        )

    def to_payload(self) -> bytes:
        """Queue record: a JSON header line, then the values JSON as it goes into the DB."""
        micros = (self.time - _EPOCH) // timedelta(microseconds=1)
        head = {
            "m": self.meter_id,
            "t": micros,
            "n": self.samples,
            "f": {k: v for k, v in self.fields.items() if v is not None},
            "x": {k: list(v) for k, v in self.minmax.items()},
        }
        return (
            json.dumps(head, separators=(",", ":")).encode()
            + b"\n"
            + self.values_json.encode("utf-8")
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> StoredRow:
        head_bytes, _, values = payload.partition(b"\n")
        head = json.loads(head_bytes)
        fields = {name: _finite(head["f"].get(name)) for name in Reading.FIELDS}
        return cls(
            meter_id=str(head["m"]),
            time=_EPOCH + timedelta(microseconds=int(head["t"])),
            samples=int(head.get("n", 1)),
            fields=fields,
            minmax={k: (float(v[0]), float(v[1])) for k, v in head.get("x", {}).items()},
            values_json=values.decode("utf-8"),
        )

    def to_reading(self) -> Reading:
        return Reading(
            meter_id=self.meter_id,
            time=self.time,
            values=MappingProxyType(decode_values(self.values_json)),
            samples=self.samples,
            minmax=MappingProxyType(dict(self.minmax)),
            **{name: self.fields.get(name) for name in Reading.FIELDS},
        )


# ---- --store-interval: aggregation before storing -----------------------------------------


@dataclass
class _Window:
    """Readings of one meter within one store interval."""

    index: int
    samples: int = 0
    time: Optional[datetime] = None
    values: Mapping[str, Value] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    lows: dict[str, float] = field(default_factory=dict)
    highs: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    def add(self, reading: Reading) -> None:
        weight = max(1, int(reading.samples))
        self.samples += weight
        self.time = reading.time
        self.values = reading.values
        for name in Reading.FIELDS:
            value = _finite(getattr(reading, name))
            if value is None:
                continue
            if name in ENERGY_FIELDS:
                self.last[name] = value  # counters: the latest reading is the value
                continue
            self.sums[name] = self.sums.get(name, 0.0) + value * weight
            self.counts[name] = self.counts.get(name, 0) + weight
            lo, hi = (reading.minmax or {}).get(name, (value, value))
            self.lows[name] = min(self.lows.get(name, lo), lo)
            self.highs[name] = max(self.highs.get(name, hi), hi)

    def result(self, meter_id: str) -> Reading:
        assert self.time is not None
        fields: dict[str, Optional[float]] = {}
        for name in Reading.FIELDS:
            if name in ENERGY_FIELDS:
                fields[name] = self.last.get(name)
            elif self.counts.get(name):
                fields[name] = self.sums[name] / self.counts[name]
            else:
                fields[name] = None
        return Reading(
            meter_id=meter_id,
            time=self.time,
            values=self.values,
            samples=self.samples,
            minmax=MappingProxyType({n: (self.lows[n], self.highs[n]) for n in self.lows}),
            **fields,
        )


class IntervalAggregator:
    """Turns readings into one reading per meter per `interval` seconds (epoch-aligned).

    Power, voltages, currents, frequency: mean (weighted by samples) with min/max in
    `minmax` (the database keeps those of the power fields); energy counters: the last value.
    The aggregate carries the time of its last reading, so a window cut short by a restart
    and continued afterwards gives two distinct rows rather than a key collision.
    """

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError("store interval must be > 0")
        self.interval = float(interval)
        self._windows: dict[str, _Window] = {}

    def _index(self, moment: datetime) -> int:
        return math.floor(moment.timestamp() / self.interval)

    def add(self, reading: Reading) -> list[Reading]:
        """Add a reading; returns the aggregates it completed (0 or 1)."""
        out: list[Reading] = []
        index = self._index(reading.time)
        window = self._windows.get(reading.meter_id)
        if window is not None and window.index != index:
            out.append(window.result(reading.meter_id))
            window = None
        if window is None:
            window = self._windows[reading.meter_id] = _Window(index)
        window.add(reading)
        return out

    def due(self, now: datetime) -> list[Reading]:
        """Aggregates of windows that ended before `now` (a meter went quiet)."""
        current = self._index(now)
        out = []
        for meter_id, window in list(self._windows.items()):
            if window.index < current:
                out.append(window.result(meter_id))
                del self._windows[meter_id]
        return out

    def drain(self) -> list[Reading]:
        """Everything pending, complete or not (shutdown)."""
        out = [w.result(m) for m, w in self._windows.items()]
        self._windows.clear()
        return out

    @property
    def pending(self) -> int:
        return sum(w.samples for w in self._windows.values())


# ---- rollups --------------------------------------------------------------------------------


class _Bucket:
    """Partial rollup aggregate of one meter and bucket, merged into the table by upsert."""

    __slots__ = (
        "bucket", "e_first", "e_last", "n", "pmax", "pmin", "pn", "psum", "t_first", "t_last",
    )  # fmt: skip

    def __init__(self, bucket: int, t: float) -> None:
        self.bucket = bucket
        self.n = 0
        self.t_first = t
        self.t_last = t
        k = len(POWER_FIELDS)
        self.pn = [0] * k
        self.psum = [0.0] * k
        self.pmin: list[Optional[float]] = [None] * k
        self.pmax: list[Optional[float]] = [None] * k
        self.e_first: list[Optional[float]] = [None] * len(ROLLUP_ENERGY)
        self.e_last: list[Optional[float]] = [None] * len(ROLLUP_ENERGY)

    def add_row(self, row: StoredRow, ts: float) -> None:
        """Add a row; rows arrive in time order (callers sort), so the last one wins."""
        weight = row.samples
        self.n += weight
        fields = row.fields
        minmax = row.minmax
        pmin, pmax = self.pmin, self.pmax
        for i, name in enumerate(POWER_FIELDS):
            value = fields.get(name)
            if value is None:
                continue
            self.pn[i] += weight
            self.psum[i] += value * weight
            lo, hi = minmax.get(name, (value, value)) if minmax else (value, value)
            low, high = pmin[i], pmax[i]
            if low is None or lo < low:
                pmin[i] = lo
            if high is None or hi > high:
                pmax[i] = hi
        if ts < self.t_first:
            self.t_first = ts
        if ts > self.t_last:
            self.t_last = ts
        for i, name in enumerate(ROLLUP_ENERGY):
            value = fields.get(name)
            if value is not None:
                if self.e_first[i] is None:
                    self.e_first[i] = value
                self.e_last[i] = value

    def merge(self, other: _Bucket) -> None:
        """Fold in a later partial aggregate (time order, like `add_row`)."""
        self.n += other.n
        for i in range(len(POWER_FIELDS)):
            self.pn[i] += other.pn[i]
            self.psum[i] += other.psum[i]
            self.pmin[i] = _min_opt(self.pmin[i], other.pmin[i])
            self.pmax[i] = _max_opt(self.pmax[i], other.pmax[i])
        for i in range(len(ROLLUP_ENERGY)):
            if self.e_first[i] is None:
                self.e_first[i] = other.e_first[i]
            if other.e_last[i] is not None:
                self.e_last[i] = other.e_last[i]
        self.t_first = min(self.t_first, other.t_first)
        self.t_last = max(self.t_last, other.t_last)

    def params(self, meter: int) -> list[Any]:
        out: list[Any] = [meter, self.bucket, self.n, self.t_first, self.t_last]
        for i in range(len(POWER_FIELDS)):
            out += [self.pn[i], self.psum[i], self.pmin[i], self.pmax[i]]
        for i in range(len(ROLLUP_ENERGY)):
            out += [self.e_first[i], self.e_last[i]]
        return out


def _min_opt(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None:
        return b
    return a if b is None or a <= b else b


def _max_opt(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None:
        return b
    return a if b is None or a >= b else b


def rollup_buckets(rows: Iterable[StoredRow]) -> list[dict[int, _Bucket]]:
    """Partial aggregates per rollup level (minute, hour, day) for time-ordered rows of one
    meter."""
    minutes: dict[int, _Bucket] = {}
    width = ROLLUPS[0][1]
    for row in rows:
        ts = row.ts
        key = int(ts // width) * width
        bucket = minutes.get(key)
        if bucket is None:
            bucket = minutes[key] = _Bucket(key, ts)
        bucket.add_row(row, ts)
    levels = [minutes]
    for _table, seconds in ROLLUPS[1:]:
        coarser: dict[int, _Bucket] = {}
        for fine in sorted(levels[-1].values(), key=lambda b: b.bucket):
            key = fine.bucket // seconds * seconds
            target = coarser.get(key)
            if target is None:
                target = coarser[key] = _Bucket(key, fine.t_first)
            target.merge(fine)
        levels.append(coarser)
    return levels


def _rollup_upsert_tail(d: Dialect, table: str) -> str:
    def add(column: str) -> str:
        return f"{d.old(table, column)} + {d.new(column)}"

    sets: list[tuple[str, str]] = [("n", add("n"))]
    for name in POWER_FIELDS:
        n, s, lo, hi = (f"{name}_n", f"{name}_sum", f"{name}_min", f"{name}_max")
        sets += [
            (n, add(n)),
            (s, add(s)),
            (lo, d.least(d.old(table, lo), d.new(lo))),
            (hi, d.greatest(d.old(table, hi), d.new(hi))),
        ]
    t_first_old, t_first_new = d.old(table, "t_first"), d.new("t_first")
    t_last_old, t_last_new = d.old(table, "t_last"), d.new("t_last")
    for name in ROLLUP_ENERGY:
        first, last = f"{name}_first", f"{name}_last"
        sets.append(
            (
                first,
                f"CASE WHEN {t_first_new} < {t_first_old} "
                f"THEN COALESCE({d.new(first)}, {d.old(table, first)}) "
                f"ELSE COALESCE({d.old(table, first)}, {d.new(first)}) END",
            )
        )
        sets.append(
            (
                last,
                f"CASE WHEN {t_last_new} >= {t_last_old} "
                f"THEN COALESCE({d.new(last)}, {d.old(table, last)}) "
                f"ELSE COALESCE({d.old(table, last)}, {d.new(last)}) END",
            )
        )
    # last: the CASEs above read the stored t_first/t_last (MySQL assigns left to right)
    sets.append(("t_first", d.least(t_first_old, t_first_new)))
    sets.append(("t_last", d.greatest(t_last_old, t_last_new)))
    return d.upsert_tail(("meter", "bucket"), sets)


# ---- writing batches -------------------------------------------------------------------------


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

    def __init__(self, db: peewee.Database, *, legacy_table: bool = False) -> None:
        self.db = db
        self.dialect = dialect_of(db)
        self.legacy_table = legacy_table
        self._meter_keys: dict[str, int] = {}
        self._legacy_meter: Optional[str] = None
        d = self.dialect
        self._reading_cols = ["meter", "time", "samples", *reading_columns(), "obis_values"]
        self._reading_head = d.insert_head("readings", self._reading_cols)
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

    def write(self, rows: Sequence[StoredRow]) -> int:
        """Store `rows` in one transaction; returns how many were new.

        Rows already in the database (same meter and time) are skipped entirely, which makes
        replaying a batch after a crash harmless.
        """
        by_meter: dict[str, list[StoredRow]] = {}
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
            (meter, d.time_param(first), d.time_param(last)),
        )
        return {d.time_param(d.time_value(r[0])) for r in cursor.fetchall()}

    def _write_meter(self, meter: int, meter_id: str, group: list[StoredRow]) -> int:
        d = self.dialect
        group.sort(key=lambda r: r.time)
        existing = self._existing_times(meter, group[0].time, group[-1].time)
        fresh: list[StoredRow] = []
        params: list[list[Any]] = []
        names = Reading.FIELDS
        for row in group:
            stamp = d.time_param(row.time)
            if stamp in existing:
                continue
            existing.add(stamp)
            fresh.append(row)
            fields = row.fields
            values = [meter, stamp, row.samples, *[fields.get(name) for name in names]]
            minmax = row.minmax
            for name in POWER_FIELDS:
                value = fields.get(name)
                values += minmax.get(name, (value, value)) if minmax else (value, value)
            values.append(row.values_json)
            params.append(values)
        if not fresh:
            return 0
        _execute_many(self.db, d, self._reading_head, "", params)
        for (table, _seconds), buckets in zip(ROLLUPS, rollup_buckets(fresh)):
            head, tail = self._rollup_sql[table]
            rollup_params = [b.params(meter) for b in sorted(buckets.values(), key=_bucket_key)]
            _execute_many(self.db, d, head, tail, rollup_params)
        if self.legacy_table:
            self._write_legacy(meter_id, fresh)
        last_seen = d.time_param(fresh[-1].time)
        _sql(
            self.db,
            f"UPDATE {d.q('meters')} SET {d.q('last_seen')} = {d.param} WHERE {d.q('id')} = "
            f"{d.param} AND ({d.q('last_seen')} IS NULL OR {d.q('last_seen')} < {d.param})",
            (last_seen, meter, last_seen),
        )
        return len(fresh)

    def _write_legacy(self, meter_id: str, rows: list[StoredRow]) -> None:
        # the old table has no meter column: it follows the first meter, like the old script
        if self._legacy_meter is None:
            self._legacy_meter = meter_id
        elif meter_id != self._legacy_meter:
            return
        d = self.dialect
        params = [
            [d.seconds_param(row.time), *(row.fields.get(name) for name in LEGACY_FIELDS)]
            for row in rows
        ]
        _execute_many(self.db, d, self._legacy_head, self._legacy_tail, params)


def _bucket_key(bucket: _Bucket) -> int:
    return bucket.bucket


# ---- reading back: history, consumption, export ------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def iso_utc(moment: datetime) -> str:
    text = _utc(moment).astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def nice_step(seconds: float) -> int:
    """The smallest "round" step (1 s, 2 s, 5 s ... 1 h ... 1 d, n days) >= `seconds`."""
    for step in NICE_STEPS:
        if step >= seconds:
            return step
    return math.ceil(seconds / 86400) * 86400


def rollup_for_step(step: int) -> Optional[str]:
    """The coarsest rollup table whose buckets tile `step` (None: read raw readings)."""
    for table, seconds in reversed(ROLLUPS):
        if step % seconds == 0:
            return table
    # a step that is not a whole number of minutes still reads minute buckets when it spans
    # several of them: each point is then off by less than a minute at its edges
    return ROLLUPS[0][0] if step >= 10 * ROLLUPS[0][1] else None


def _point(
    t: Number,
    p_avg: Optional[float],
    p_min: Optional[float],
    p_max: Optional[float],
    phases: Sequence[Optional[float]],
    e_sum: Optional[float],
    e_export: Optional[float],
    n: int,
) -> dict[str, Any]:
    return {
        "t": t,
        "p_avg": p_avg,
        "p_min": p_min,
        "p_max": p_max,
        "p_L1": phases[0],
        "p_L2": phases[1],
        "p_L3": phases[2],
        "e_sum": e_sum,
        "e_export": e_export,
        "n": n,
    }


@dataclass(frozen=True)
class _Bar:
    start: datetime  # local bucket start
    label: str
    first: list[Optional[float]]
    last: list[Optional[float]]


class Queries:
    """Read side over the schema; every method runs on the calling thread's connection."""

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self.dialect = dialect_of(db)

    def meters(self) -> list[str]:
        d = self.dialect
        cursor = _sql(
            self.db, f"SELECT {d.q('meter_id')} FROM {d.q('meters')} ORDER BY {d.q('id')}"
        )
        return [str(r[0]) for r in cursor.fetchall()]

    def meter_key(self, meter_id: str) -> Optional[int]:
        d = self.dialect
        row = _sql(
            self.db,
            f"SELECT {d.q('id')} FROM {d.q('meters')} WHERE {d.q('meter_id')} = {d.param}",
            (meter_id,),
        ).fetchone()
        return None if row is None else int(row[0])

    # history ----------------------------------------------------------------------------

    def history(
        self,
        meter_id: str,
        start: datetime,
        end: datetime,
        step: Optional[int] = None,
        max_points: int = 2000,
    ) -> dict[str, Any]:
        start, end = _utc(start), _utc(end)
        span = (end - start).total_seconds()
        if span <= 0:
            raise ValueError("'from' must be before 'to'")
        if max_points < 1:
            raise ValueError("max_points must be >= 1")
        if step is not None:
            if isinstance(step, bool) or int(step) != step or step < 1:
                raise ValueError("step must be a whole number of seconds >= 1")
            step = int(step)
            if span / step > max_points + 1:
                raise ValueError(
                    f"step {step} s gives {math.ceil(span / step)} points for this range, "
                    f"more than {max_points}"
                )
        result: dict[str, Any] = {
            "meter": meter_id,
            "from": iso_utc(start),
            "to": iso_utc(end),
            "step": step,
            "source": "raw",
            "points": [],
        }
        meter = self.meter_key(meter_id)
        if meter is None:
            return result
        if step is None and span <= max_points * RAW_SECONDS_PER_READING:
            # short ranges: the readings themselves when there are few enough of them
            rows = self._raw_rows(meter, start, end, limit=max_points + 1)
            if len(rows) <= max_points:
                result["points"] = [
                    _point(r[0], r[2], r[3], r[4], r[5:8], r[8], r[9], int(r[1] or 1)) for r in rows
                ]
                return result
            step = nice_step(span / max_points)
            result["step"] = step
            result["points"] = self._raw_points(meter, start, end, step)
            return result
        if step is None:
            step = nice_step(span / max_points)
        result["step"] = step
        table = rollup_for_step(step)
        if table is None:
            result["points"] = self._raw_points(meter, start, end, step)
            return result
        result["source"] = table.split("_", 1)[1]
        result["points"] = self._rollup_points(meter, table, start, end, step)
        return result

    def _raw_rows(self, meter: int, start: datetime, end: datetime, limit: int) -> list[list[Any]]:
        d = self.dialect
        cols = ["time", "samples", "p_sum", "p_sum_min", "p_sum_max", "p_L1", "p_L2", "p_L3"]
        cols += ["e_sum", "e_export"]
        cursor = _sql(
            self.db,
            f"SELECT {', '.join(d.q(c) for c in cols)} FROM {d.q('readings')} "
            f"WHERE {d.q('meter')} = {d.param} AND {d.q('time')} >= {d.param} "
            f"AND {d.q('time')} < {d.param} ORDER BY {d.q('time')} LIMIT {int(limit)}",
            (meter, d.time_param(start), d.time_param(end)),
        )
        rows = []
        for r in cursor.fetchall():
            row = list(r)
            row[0] = d.time_value(row[0]).timestamp()
            rows.append(row)
        return rows

    def _raw_points(
        self, meter: int, start: datetime, end: datetime, step: int
    ) -> list[dict[str, Any]]:
        """Readings grouped into `step`-second buckets by the database (no rows in Python)."""
        d = self.dialect
        weight = d.q("samples")
        select = [d.floor_to(d.epoch_seconds(d.q("time")), step)]
        for name in POWER_FIELDS:
            column = d.q(name)
            select += [
                f"SUM(CASE WHEN {column} IS NULL THEN 0 ELSE {weight} END)",
                f"SUM({column} * {weight})",
            ]
        select += [
            f"MIN({d.q('p_sum_min')})",
            f"MAX({d.q('p_sum_max')})",
            f"MAX({d.q('e_sum')})",
            f"MAX({d.q('e_export')})",
            f"SUM({weight})",
        ]
        cursor = _sql(
            self.db,
            f"SELECT {', '.join(select)} FROM {d.q('readings')} "
            f"WHERE {d.q('meter')} = {d.param} AND {d.q('time')} >= {d.param} "
            f"AND {d.q('time')} < {d.param} GROUP BY 1 ORDER BY 1",
            (meter, d.time_param(start), d.time_param(end)),
        )
        return [self._aggregate_point(r) for r in cursor.fetchall()]

    def _aggregate_point(self, r: Sequence[Any]) -> dict[str, Any]:
        """A point from (bucket, (n, sum) per power field, min, max, e_sum, e_export, n)."""
        k = len(POWER_FIELDS)
        means = [
            float(r[2 + 2 * i]) / int(r[1 + 2 * i]) if r[1 + 2 * i] else None for i in range(k)
        ]
        tail = r[1 + 2 * k :]
        return _point(
            int(r[0]),
            means[0],
            _float(tail[0]),
            _float(tail[1]),
            means[1:],
            _float(tail[2]),
            _float(tail[3]),
            int(tail[4] or 0),
        )

    def _rollup_points(
        self, meter: int, table: str, start: datetime, end: datetime, step: int
    ) -> list[dict[str, Any]]:
        d = self.dialect
        width = ROLLUP_SECONDS[table]
        first = int(start.timestamp() // step) * step
        first = first // width * width
        group = d.floor_to(d.q("bucket"), step)
        select = [group]
        for name in POWER_FIELDS:
            select += [f"SUM({d.q(name + '_n')})", f"SUM({d.q(name + '_sum')})"]
        select += [
            f"MIN({d.q('p_sum_min')})",
            f"MAX({d.q('p_sum_max')})",
            f"MAX({d.q('e_sum_last')})",  # counters only grow: the max is the last value
            f"MAX({d.q('e_export_last')})",
            f"SUM({d.q('n')})",
        ]
        cursor = _sql(
            self.db,
            f"SELECT {', '.join(select)} FROM {d.q(table)} "
            f"WHERE {d.q('meter')} = {d.param} AND {d.q('bucket')} >= {d.param} "
            f"AND {d.q('bucket')} < {d.param} GROUP BY 1 ORDER BY 1",
            (meter, first, math.ceil(end.timestamp())),
        )
        return [self._aggregate_point(r) for r in cursor.fetchall()]

    # consumption ------------------------------------------------------------------------

    def consumption(
        self,
        meter_id: str,
        period: str,
        start: datetime,
        end: datetime,
        tz: Union[tzinfo, str, None] = None,
    ) -> list[dict[str, Any]]:
        if period not in ("day", "month"):
            raise ValueError("period must be 'day' or 'month'")
        zone = _zone(tz)
        start, end = _utc(start), _utc(end)
        if end <= start:
            raise ValueError("'from' must be before 'to'")
        meter = self.meter_key(meter_id)
        if meter is None:
            return []
        local_start = _bucket_start(start.astimezone(zone), period)
        # local days are UTC days only in UTC; elsewhere hour buckets are summed per local day
        table = "rollup_day" if _is_utc(zone) else "rollup_hour"
        d = self.dialect
        energy_cols = [f"{n}_{which}" for n in ROLLUP_ENERGY for which in ("first", "last")]
        lower = int(local_start.timestamp())
        cursor = _sql(
            self.db,
            f"SELECT {d.q('bucket')}, {', '.join(d.q(c) for c in energy_cols)} "
            f"FROM {d.q(table)} WHERE {d.q('meter')} = {d.param} AND {d.q('bucket')} >= "
            f"{d.param} AND {d.q('bucket')} < {d.param} ORDER BY {d.q('bucket')}",
            (meter, lower, math.ceil(end.timestamp())),
        )
        # local bucket boundaries once, then a walk over the time-ordered rollup rows: no
        # time zone arithmetic per row
        edges = _local_edges(local_start, end, period)
        bars: dict[datetime, _Bar] = {}
        index = 0
        for row in cursor.fetchall():
            bucket = int(row[0])
            while index + 1 < len(edges) and edges[index + 1][0] <= bucket:
                index += 1
            key = edges[index][1]
            bar = bars.get(key)
            if bar is None:
                label = key.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")
                bar = bars[key] = _Bar(key, label, [None, None], [None, None])
            for i in range(len(ROLLUP_ENERGY)):
                first, last = _float(row[1 + 2 * i]), _float(row[2 + 2 * i])
                if bar.first[i] is None:
                    bar.first[i] = first
                if last is not None:
                    bar.last[i] = last
        previous = [self._last_before(meter, table, lower, name) for name in ROLLUP_ENERGY]
        out = []
        for key in sorted(bars):
            bar = bars[key]
            amounts: list[Optional[float]] = []
            for i in range(len(ROLLUP_ENERGY)):
                base = previous[i] if previous[i] is not None else bar.first[i]
                last = bar.last[i]
                amounts.append(None if last is None or base is None else round(last - base, 6))
                if last is not None:
                    previous[i] = last
            out.append(
                {
                    "t": int(key.timestamp()),
                    "label": bar.label,
                    "import_kwh": amounts[0],
                    "export_kwh": amounts[1],
                }
            )
        return out

    def _last_before(self, meter: int, table: str, bucket: int, name: str) -> Optional[float]:
        d = self.dialect
        column = d.q(f"{name}_last")
        row = _sql(
            self.db,
            f"SELECT {column} FROM {d.q(table)} WHERE {d.q('meter')} = {d.param} AND "
            f"{d.q('bucket')} < {d.param} AND {column} IS NOT NULL "
            f"ORDER BY {d.q('bucket')} DESC LIMIT 1",
            (meter, bucket),
        ).fetchone()
        return None if row is None else _float(row[0])

    # export -----------------------------------------------------------------------------

    def export(
        self, meter_id: Optional[str], start: datetime, end: datetime, page: int = 2000
    ) -> Iterator[Reading]:
        """Readings in time order (all meters merged), fetched page by page."""
        start, end = _utc(start), _utc(end)
        meters = self.meters() if meter_id is None else [meter_id]
        streams = []
        for ident in meters:
            key = self.meter_key(ident)
            if key is not None:
                streams.append(self._export_meter(key, ident, start, end, page))
        if len(streams) == 1:
            yield from streams[0]
            return
        yield from heapq.merge(*streams, key=lambda r: r.time)

    def _export_meter(
        self, meter: int, meter_id: str, start: datetime, end: datetime, page: int
    ) -> Iterator[Reading]:
        d = self.dialect
        cols = ["time", "samples", *reading_columns(), "obis_values"]
        select = f"SELECT {', '.join(d.q(c) for c in cols)} FROM {d.q('readings')} "
        lower_op = ">="
        lower: Any = d.time_param(start)
        while True:
            cursor = _sql(
                self.db,
                select + f"WHERE {d.q('meter')} = {d.param} AND {d.q('time')} {lower_op} "
                f"{d.param} AND {d.q('time')} < {d.param} ORDER BY {d.q('time')} LIMIT {int(page)}",
                (meter, lower, d.time_param(end)),
            )
            rows = cursor.fetchall()
            for row in rows:
                yield self._reading(meter_id, cols, row)
            if len(rows) < page:
                return
            lower_op, lower = ">", rows[-1][0]

    def _reading(self, meter_id: str, cols: list[str], row: Sequence[Any]) -> Reading:
        data = dict(zip(cols, row))
        samples = int(data["samples"] or 1)
        minmax: dict[str, tuple[float, float]] = {}
        if samples > 1:
            for name in POWER_FIELDS:
                lo, hi = _float(data[f"{name}_min"]), _float(data[f"{name}_max"])
                if lo is not None and hi is not None:
                    minmax[name] = (lo, hi)
        return Reading(
            meter_id=meter_id,
            time=self.dialect.time_value(data["time"]),
            values=MappingProxyType(decode_values(data["obis_values"])),
            samples=samples,
            minmax=MappingProxyType(minmax),
            **{name: _float(data[name]) for name in Reading.FIELDS},
        )


def _float(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def _zone(tz: Union[tzinfo, str, None]) -> tzinfo:
    if tz is None:
        return timezone.utc
    if isinstance(tz, str):
        from zoneinfo import ZoneInfo

        return ZoneInfo(tz)
    return tz


_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/GMT", "GMT", "Zulu", "Etc/Zulu", "Universal"})


def _is_utc(zone: tzinfo) -> bool:
    return zone == timezone.utc or getattr(zone, "key", None) in _UTC_NAMES


def _local_edges(first: datetime, end: datetime, period: str) -> list[tuple[int, datetime]]:
    """(epoch, local start) of each local day/month from `first` (a bucket start) to `end`."""
    edges = []
    current = first
    limit = end.timestamp()
    while current.timestamp() < limit:
        edges.append((int(current.timestamp()), current))
        if period == "day":
            following = current.date() + timedelta(days=1)
        else:
            year, month = divmod(current.month, 12)
            following = date(current.year + year, month + 1, 1)
        zone = current.tzinfo or timezone.utc
        current = _bucket_start(datetime(following.year, following.month, following.day, 12,
                                         tzinfo=zone), period)  # fmt: skip
    return edges


def _bucket_start(local: datetime, period: str) -> datetime:
    """Start of the local day/month containing `local` (aware), correct across DST."""
    zone = local.tzinfo
    day = local.date() if period == "day" else date(local.year, local.month, 1)
    naive = datetime(day.year, day.month, day.day)
    if zone is None:
        return naive.replace(tzinfo=timezone.utc)
    localize = getattr(zone, "localize", None)  # pytz-style zones
    if callable(localize):
        result: datetime = localize(naive)
        return result
    return naive.replace(tzinfo=zone)


# ---- the sink --------------------------------------------------------------------------------


class Store:
    """The SQL sink: `write` queues on disk, a background thread writes to the database.

    Readers (`history`, `consumption`, `meters`, `export`) may be called from any thread;
    each thread gets its own connection from peewee.
    """

    name = "sql"

    def __init__(
        self,
        db: peewee.Database,
        *,
        spool_dir: Path,
        max_spool_age_days: float = 7,
        store_interval: float = 0,
        legacy_table: bool = False,
        batch_size: int = 200,
        fsync_interval: float = 1.0,
        max_spool_bytes: Optional[int] = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.db = db
        self.dialect = dialect_of(db)
        self.batch_size = batch_size
        self.legacy_table = legacy_table
        self.queries = Queries(db)
        self._writer = SqlWriter(db, legacy_table=legacy_table)
        self._aggregator = IntervalAggregator(store_interval) if store_interval > 0 else None
        self.queue = DiskQueue(
            Path(spool_dir),
            max_age_s=max_spool_age_days * 86400 if max_spool_age_days > 0 else None,
            max_bytes=max_spool_bytes,
            fsync_interval=fsync_interval,
        )
        self._write_lock = threading.Lock()  # write() vs flush()/close() on the aggregator
        self._state_lock = threading.Lock()
        self._progress = threading.Condition(self._state_lock)
        self._state = "connecting"
        self._down_since: Optional[float] = None
        self._last_error: Optional[str] = None
        self._last_error_at: Optional[datetime] = None
        self._written = 0
        self._rejected = 0
        self._skipped = 0  # rows found already stored (replays after a crash or lost commit)
        self._closed = False
        self._stop = threading.Event()
        self._schema_ready = False
        self.schema_actions: list[str] = []
        # a first attempt right away, so that a usable database is ready for readers when the
        # constructor returns; a dead one is retried by the writer thread
        self._prepare()
        # the writer thread uses its own connection; this one would only go stale
        self._close_connection()
        self._thread = threading.Thread(target=self._drain, name="smlogger-sql", daemon=True)
        self._thread.start()

    # ---- Sink protocol -------------------------------------------------------------------

    def write(self, reading: Reading) -> None:
        if self._closed:
            raise RuntimeError("the SQL store is closed")
        with self._write_lock:
            ready = self._aggregator.add(reading) if self._aggregator else [reading]
            self._enqueue(ready)

    def _enqueue(self, readings: Sequence[Reading]) -> None:
        if readings:
            # the age bound counts from queueing, not from the reading's own time: it limits
            # how long an outage is bridged, and replays may carry old timestamps
            self.queue.put_many([StoredRow.from_reading(r).to_payload() for r in readings])

    def flush(self, timeout: float = 0.0) -> None:
        """Queue finished aggregation windows and fsync readings that have waited for the
        database longer than `fsync_interval` (the others are in the database already or will
        be in a moment; close() fsyncs everything). With `timeout` > 0, also wait up to that
        long for the writer to bring the database up to date (never for a database that is
        down). The pipeline calls this every second, so the default does not wait."""
        if self._aggregator is not None and not self._closed:
            with self._write_lock:
                self._enqueue(self._aggregator.due(datetime.now(timezone.utc)))
        self.queue.sync_due()
        if timeout <= 0:
            return
        self.queue.wake()
        deadline = _time.monotonic() + timeout
        with self._progress:
            while self.queue.depth > 0 and self._state != "down" and self._thread.is_alive():
                remaining = deadline - _time.monotonic()
                if remaining <= 0:
                    break
                self._progress.wait(min(remaining, 0.5))

    def close(self, timeout: float = 2.0) -> None:
        """Store pending aggregates, give the writer up to `timeout` s to catch up, stop it.
        Whatever is not in the database by then stays queued for the next start."""
        if self._closed:
            return
        began = _time.monotonic()
        if self._aggregator is not None:
            with self._write_lock:
                self._enqueue(self._aggregator.drain())
        self._closed = True
        try:
            self.flush(timeout=timeout * 0.75)
        finally:
            self._stop.set()
            self.queue.wake()
            self._thread.join(max(0.1, timeout - (_time.monotonic() - began)))
            if self._thread.is_alive():
                log.warning("SQL writer still busy at shutdown; its batch is replayed next start")
            elif self.queue.depth:
                log.info("%d readings stay queued for the next start", self.queue.depth)
            self.queue.close()

    def status(self) -> dict[str, object]:
        oldest = self.queue.oldest_timestamp()
        with self._state_lock:
            return {
                "db": self._state,
                "backend": self.dialect.name,
                "queue_depth": self.queue.depth,
                "queue_bytes": self.queue.pending_bytes,
                "queue_oldest_age_s": None if oldest is None else round(_time.time() - oldest, 3),
                "written": self._written,
                "rejected": self._rejected,
                "skipped_existing": self._skipped,
                "dropped": self.queue.dropped,
                "last_error": self._last_error,
                "last_error_at": None
                if self._last_error_at is None
                else iso_utc(self._last_error_at),
                "pending_aggregate": 0 if self._aggregator is None else self._aggregator.pending,
            }

    # ---- the writer thread ---------------------------------------------------------------

    def _prepare(self) -> bool:
        try:
            actions = ensure_schema(self.db, legacy_table=self.legacy_table)
        except Exception as exc:
            self._failed(exc)
            self._close_connection()
            return False
        for action in actions:
            log.info("database: %s", action)
        self.schema_actions += actions
        self._writer.forget_meters()
        self._schema_ready = True
        self._succeeded(0)
        return True

    def _drain(self) -> None:
        delay = 0.0
        strikes = 0
        try:
            while not self._stop.is_set():
                try:
                    outcome = self._drain_once(strikes)
                except QueueClosedError:
                    raise
                except Exception:
                    # never let the writer die silently: log, wait, carry on
                    log.exception("unexpected error in the SQL writer")
                    outcome = "retry"
                if outcome == "ok":
                    delay, strikes = 0.0, 0
                elif outcome == "refused":
                    strikes += 1
                    delay = self._back_off(delay)
                elif outcome == "retry":
                    delay = self._back_off(delay)
        except QueueClosedError:
            pass
        finally:
            self._close_connection()
            with self._progress:
                self._progress.notify_all()

    def _drain_once(self, strikes: int) -> str:
        """Write one batch; "ok", "idle", "retry" (database down) or "refused" (bad data)."""
        if not self._schema_ready and not self._prepare():
            return "retry"
        self.queue.sync_due()
        entries = self.queue.peek(self.batch_size)
        if not entries:
            self._housekeeping()
            self.queue.wait(timeout=0.5)
            return "idle"
        rows = self._decode(entries)
        rejected = 0
        try:
            written = self._writer.write(rows) if rows else 0
        except Exception as exc:
            self._failed(exc)
            if is_connection_error(exc):
                self._close_connection()
                return "retry"
            # bad data or a damaged schema: check the schema and retry; only then give up on
            # single rows, so that one poisoned reading cannot block the queue for good
            self._schema_ready = False
            if strikes < 2:
                return "refused"
            try:
                written, rejected = self._write_singly(rows)
            except Exception as exc2:
                self._failed(exc2)
                self._close_connection()
                return "retry"
        self.queue.ack(entries[-1])
        self._succeeded(written, skipped=len(rows) - written - rejected, rejected=rejected)
        return "ok"

    def _decode(self, entries: Sequence[Entry]) -> list[StoredRow]:
        rows = []
        for entry in entries:
            try:
                rows.append(StoredRow.from_payload(entry.payload))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("dropping an unreadable queue record: %s", exc)
                with self._state_lock:
                    self._rejected += 1
        return rows

    def _write_singly(self, rows: Sequence[StoredRow]) -> tuple[int, int]:
        """(written, rejected) writing rows one by one; connection errors propagate."""
        written = 0
        rejected = 0
        for row in rows:
            try:
                written += self._writer.write([row])
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                log.error(
                    "rejecting the reading of meter %s at %s: %s",
                    row.meter_id,
                    iso_utc(row.time),
                    exc,
                )
                rejected += 1
        return written, rejected

    def _housekeeping(self) -> None:
        if self._aggregator is not None:
            with self._write_lock:
                if not self._closed:
                    self._enqueue(self._aggregator.due(datetime.now(timezone.utc)))
        self.queue.prune()
        with self._progress:
            self._progress.notify_all()

    def _back_off(self, delay: float) -> float:
        delay = min(10.0, max(0.5, delay * 2))
        with self._progress:
            self._progress.notify_all()
        # wait in slices: queued readings still get fsync'ed on time while the database is away
        until = _time.monotonic() + delay
        while not self._stop.is_set():
            self.queue.sync_due()
            remaining = until - _time.monotonic()
            if remaining <= 0 or self._stop.wait(min(remaining, 0.5)):
                break
        return delay

    def _close_connection(self) -> None:
        try:
            self.db.close()
        except Exception:
            log.debug("closing a broken database connection failed", exc_info=True)

    def _failed(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        state = "down" if is_connection_error(exc) else "error"
        with self._state_lock:
            if self._state != state:
                if state == "down":
                    log.warning(
                        "database unavailable (%s); readings wait in %s",
                        message,
                        self.queue.directory,
                    )
                else:
                    log.warning("database refused a batch (%s); retrying", message)
                if self._down_since is None:
                    self._down_since = _time.monotonic()
            self._state = state
            self._last_error = message
            self._last_error_at = datetime.now(timezone.utc)
            self._progress.notify_all()

    def _succeeded(self, written: int, skipped: int = 0, rejected: int = 0) -> None:
        with self._state_lock:
            if self._state in ("down", "error") and self._down_since is not None:
                log.info(
                    "database back after %.0f s; %d readings still queued",
                    _time.monotonic() - self._down_since,
                    self.queue.depth,
                )
            self._state = "ok"
            self._down_since = None
            self._written += written
            self._skipped += max(0, skipped)
            self._rejected += rejected
            self._progress.notify_all()

    # ---- bulk import ---------------------------------------------------------------------

    def bulk_load(self, readings: Iterable[Reading], batch_size: int = 20000) -> int:
        """Write readings straight to the database (no queue), `batch_size` per transaction,
        rollups included; for imports and benchmarks. Returns the number of new rows."""
        ensure_schema(self.db, legacy_table=self.legacy_table)
        writer = SqlWriter(self.db, legacy_table=self.legacy_table)
        total = 0
        batch: list[StoredRow] = []
        for reading in readings:
            batch.append(StoredRow.from_reading(reading))
            if len(batch) >= batch_size:
                total += writer.write(batch)
                batch = []
        if batch:
            total += writer.write(batch)
        return total

    # ---- read side -----------------------------------------------------------------------

    def _read(self, query: Callable[[], Any]) -> Any:
        for attempt in (1, 2):
            try:
                return query()
            except ValueError:
                raise
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                # a connection kept by this thread may have died with a server restart
                self._close_connection()
                if attempt == 2:
                    raise StoreUnavailableError(f"database unavailable: {exc}") from exc
        raise AssertionError("unreachable")

    def meters(self) -> list[str]:
        result: list[str] = self._read(self.queries.meters)
        return result

    def history(
        self,
        meter_id: str,
        start: datetime,
        end: datetime,
        step: Optional[int] = None,
        max_points: int = 2000,
    ) -> dict[str, Any]:
        """Chart data for one meter: ``{"meter", "from", "to", "step", "source", "points"}``.

        Without `step`, a range holding at most `max_points` readings returns the readings
        themselves (``step`` None, ``source`` "raw"); otherwise the smallest round step (2 s,
        5 s, ... 1 min, ... 6 h, 1 d, n days) giving at most `max_points` points is used,
        read from the coarsest rollup that tiles it (minute, hour or day; below a minute the
        readings are grouped by the database).
        Points: ``t`` (epoch seconds, bucket start), ``p_avg``/``p_min``/``p_max`` (W, total
        power), ``p_L1``..``p_L3`` (W, mean), ``e_sum``/``e_export`` (kWh, last counter),
        ``n`` (readings in the point). Buckets are UTC-aligned; an unknown meter has no points.
        """
        result: dict[str, Any] = self._read(
            lambda: self.queries.history(meter_id, start, end, step, max_points)
        )
        return result

    def consumption(
        self,
        meter_id: str,
        period: str,
        start: datetime,
        end: datetime,
        tz: Union[tzinfo, str, None] = None,
    ) -> list[dict[str, Any]]:
        """Energy per local day or month: ``[{"t", "label", "import_kwh", "export_kwh"}]``.

        Each bar is the counter at its end minus the counter at the end of the previous bar
        with data (the first bar with no earlier data: minus its first counter), so the bars
        add up to the meter's own difference even across gaps in logging. `tz` (a tzinfo or
        IANA name, default UTC) sets where days and months start; `start` is widened to the
        start of its day/month. Only buckets with data are listed.
        """
        result: list[dict[str, Any]] = self._read(
            lambda: self.queries.consumption(meter_id, period, start, end, tz)
        )
        return result

    def export(self, meter_id: Optional[str], start: datetime, end: datetime) -> Iterator[Reading]:
        """Stored readings in [start, end), in time order; all meters when `meter_id` is None."""
        return self.queries.export(meter_id, start, end)
