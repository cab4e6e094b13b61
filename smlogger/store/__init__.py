"""SQL storage of readings: SQLite (default), MySQL/MariaDB, PostgreSQL through peewee.

What is kept:

* ``meters`` -- one row per meter id (server id as hex), first/last seen (to the hour), and
  ``obis_bases``: the meter's OBIS dictionaries (its constant values such as public key,
  firmware and server id, and the units), stored once (`smlogger.store.compact`).
* ``readings`` -- one row per stored reading: meter, UTC time, every well-known field of
  `Reading.FIELDS` as a column, ``*_min``/``*_max`` for the power fields (only when the row
  aggregates several readings, see ``samples``), ``obis_base`` (which dictionary) and
  ``obis_values``: what the dictionary and the typed columns cannot give back (usually
  nothing). Rows written before migration 2 have no ``obis_base`` and the full list as JSON.
  The primary key (meter, time) is both the time-range index and what makes replays
  idempotent; SQLite keeps the table clustered by it (WITHOUT ROWID).
* ``rollup_minute``/``rollup_hour``/``rollup_day`` -- per meter and UTC bucket: count, sum/min/max
  of the power fields and the first/last energy counters, upserted in the same transaction as
  the readings, so charts over a year read a few thousand rows instead of 31.5 million.
* ``values`` (optional, ``legacy_table``) -- the old script's layout (time, e_sum, p_sum, p_L1,
  p_L2, p_L3) for existing dashboards.
* ``schema_version`` -- applied migrations.

`Store` is the SQL sink (the write side), built for an SD card's write budget. A reading is
appended to a journal in RAM (a tmpfs; safe against kill -9), every ``sync_interval`` seconds
what waits there goes to the journal on disk (`smlogger.diskqueue`) as one compressed, fsync'ed
record (the power-cut window), and every few minutes (or per ``batch_size`` readings, on flush
and on shutdown) a background thread commits the journal to the database in one transaction.
A dead or slow database therefore never blocks `write`, and after an outage the backlog is
written in order. A crash between the database commit and the journal acknowledgement replays
a batch; rows whose (meter, time) already exist are skipped before anything (rollups included)
is touched, so nothing is counted twice.

`StoreReader` is the read side (history, consumption, meters, export) for the web app: built
from the same database, it owns no thread and no queue. Aggregation over ``--store-interval``
happens before the sinks, in `smlogger.aggregate`.

The package, one job per module (everything public is re-exported here):

* `smlogger.store.url` -- `open_database` and `redact_url`: a peewee database from a URL.
* `smlogger.store.dialect` -- `Dialect`, `dialect_of` and running statements.
* `smlogger.store.schema` -- columns, DDL, migrations, `ensure_schema`, `schema_version`.
* `smlogger.store.rows` -- `StoredRow`, its journal record and the ``obis_values`` JSON.
* `smlogger.store.compact` -- per-meter OBIS dictionaries + changes (compact rows).
* `smlogger.store.bases` -- `BaseBook`: the dictionaries, kept next to the journal.
* `smlogger.store.rollup` -- rollup buckets and their upsert.
* `smlogger.store.writer` -- `SqlWriter`, `is_connection_error`.
* `smlogger.store.queries` -- `Queries`: the SQL of history, consumption, export.
* `smlogger.store.reader` -- `StoreReader`, the read side over `Queries`.
* `smlogger.store.sink` -- `Store`, the SQL sink.
"""

from __future__ import annotations

from smlogger.store.dialect import Dialect, dialect_of
from smlogger.store.queries import (
    NICE_STEPS,
    RAW_SECONDS_PER_READING,
    Number,
    Queries,
    nice_step,
    rollup_for_step,
)
from smlogger.store.reader import StoreReader, StoreUnavailableError
from smlogger.store.rollup import rollup_buckets
from smlogger.store.rows import StoredRow, decode_values, encode_values
from smlogger.store.schema import (
    LEGACY_FIELDS,
    LEGACY_TABLE,
    MIGRATIONS,
    POWER_FIELDS,
    ROLLUP_ENERGY,
    ROLLUP_SECONDS,
    ROLLUPS,
    SCHEMA_VERSION_TABLE,
    Migration,
    ensure_schema,
    reading_columns,
    rollup_columns,
    schema_version,
)
from smlogger.store.sink import Store
from smlogger.store.url import DEFAULT_SQLITE_NAME, open_database, redact_url
from smlogger.store.writer import SqlWriter, is_connection_error

__all__ = [
    "DEFAULT_SQLITE_NAME",
    "LEGACY_FIELDS",
    "LEGACY_TABLE",
    "MIGRATIONS",
    "NICE_STEPS",
    "POWER_FIELDS",
    "RAW_SECONDS_PER_READING",
    "ROLLUPS",
    "ROLLUP_ENERGY",
    "ROLLUP_SECONDS",
    "SCHEMA_VERSION_TABLE",
    "Dialect",
    "Migration",
    "Number",
    "Queries",
    "SqlWriter",
    "Store",
    "StoreReader",
    "StoreUnavailableError",
    "StoredRow",
    "decode_values",
    "dialect_of",
    "encode_values",
    "ensure_schema",
    "is_connection_error",
    "nice_step",
    "open_database",
    "reading_columns",
    "redact_url",
    "rollup_buckets",
    "rollup_columns",
    "rollup_for_step",
    "schema_version",
]
