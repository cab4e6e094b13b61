"""Start-up checks for mistakes that waiting cannot fix.

`smlogger run` calls `check` before the pipeline starts. Each problem found is a `StartupError`
with one line for people (the CLI prints it and exits 2): a data directory that is a file, a
replay file that is a directory or unreadable, a serial "port" that is a directory or a plain
file, a database URL with an unsupported scheme, a missing PostgreSQL driver, a database login
that is refused, a database that does not exist (or the user may not use), a user without the
rights to create the tables or to write rows.

A database that is merely unreachable right now (server down, network) is NOT an error here:
the logger keeps readings on disk and writes them when the server is back.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Optional

import peewee

from smlogger.config import Config, ConfigError, MeterConfig
from smlogger.store import (
    LEGACY_TABLE,
    ROLLUPS,
    dialect_of,
    ensure_schema,
    open_database,
    redact_url,
    schema_version,
)

log = logging.getLogger(__name__)

GRANT_HINT = "see README 'Coming from the old sml.py script' for the GRANT statements"
# MySQL/MariaDB error numbers (server: 1xxx, client: 2xxx) and PostgreSQL SQLSTATE codes
_MYSQL_LOGIN = {1045, 1698}  # access denied (password), unix-socket auth refused
_MYSQL_NO_DATABASE = {1044, 1049}  # no rights on the database / unknown database
_MYSQL_DENIED = {1142, 1143, 1227}  # command denied on a table / column / needs a privilege
_PG_LOGIN = {"28P01", "28000"}
_PG_NO_DATABASE = {"3D000"}
_PG_DENIED = {"42501"}


class StartupError(ConfigError):
    """A configuration the logger cannot run with; the message is one line for people (the
    CLI prints it and exits 2, like a bad option)."""


def check(config: Config) -> None:
    """Every start-up check; StartupError for the first problem found."""
    if config.database_enabled or config.csv_enabled:
        check_data_dir(config.data_path)
    for meter in config.meters:
        check_source(meter)
    if config.database_enabled:
        check_database(config.database_url or None, config.data_path, config.database_legacy_table)


def check_data_dir(path: Path) -> None:
    """The data directory exists as a directory (or can be created) and is writable."""
    if path.exists() and not path.is_dir():
        raise StartupError(f"data directory {path} is a file, not a directory (--data-dir)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create data directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupError(f"data directory {path} is not writable for this user (--data-dir)")


def check_source(meter: MeterConfig) -> None:
    """A replay file that can be read; a serial port that is not a directory or plain file."""
    if meter.replay:
        path = Path(os.path.expanduser(meter.replay))
        where = f"{meter.name}: replay file {path}"
        if not path.exists():
            raise StartupError(f"{where} not found")
        if path.is_dir():
            raise StartupError(f"{where} is a directory, not a recording")
        try:
            with open(path, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise StartupError(f"{where} cannot be read: {exc.strerror}") from None
    if meter.port:
        # a missing port is a state the logger waits out (a USB head plugged in later); a
        # directory or a regular file never becomes a serial port
        try:
            mode = os.stat(os.path.expanduser(meter.port)).st_mode
        except OSError:
            return
        if stat.S_ISDIR(mode):
            raise StartupError(f"{meter.name}: port {meter.port} is a directory, not a serial port")
        if stat.S_ISREG(mode):
            raise StartupError(
                f"{meter.name}: port {meter.port} is a plain file, not a serial port "
                "(to read a recording use --replay)"
            )


NEEDS = {
    "CREATE": "may not create the tables (run `smlogger db-init` once as a user who may, "
    "or GRANT CREATE)",
    "INSERT": "may not write readings (GRANT INSERT)",
    "UPDATE": "may not update the meter and rollup tables (GRANT UPDATE)",
}


def check_database(url: Optional[str], data_dir: Path, legacy_table: bool) -> None:
    """Open the database, create the schema, and prove the user may write every table."""
    where = redact_url(url)
    try:
        db = open_database(url, data_dir)
    except ValueError as exc:
        raise StartupError(f"--db-url: {exc}") from None
    stage = "CREATE"
    try:
        if _fresh(db):
            # only a new database is set up here: migrating a big existing one can take long
            # and stays with the store's own thread, so start-up (and systemd) is not held up
            ensure_schema(db, legacy_table=legacy_table)
        for privilege, sql in _write_probes(db, legacy_table):
            stage = privilege
            _run(db, sql)
    except peewee.ImproperlyConfigured as exc:
        raise StartupError(_driver_missing(db, exc)) from None
    except peewee.PeeweeException as exc:
        if dialect_of(db).name == "sqlite":
            # a local file: nothing to wait for
            raise StartupError(f"database {_sqlite_file(db)}: {_server_text(exc)}") from None
        problem = describe_database_error(exc, where, _user(db), NEEDS[stage])
        if problem is None:
            log.warning(
                "database %s is not reachable now (%s); readings are kept on disk until it is",
                where,
                _server_text(exc),
            )
            return
        raise StartupError(problem) from None
    finally:
        if not db.is_closed():
            db.close()


def _fresh(db: peewee.Database) -> bool:
    """True when the database has no smlogger tables yet (or does not exist yet)."""
    try:
        return schema_version(db) == 0
    except peewee.PeeweeException as exc:
        code = _code(exc) or _pg_code_from_text(str(exc))
        if code in (1049, "3D000"):
            return True  # ensure_schema creates it when the user may
        raise


def _sqlite_file(db: peewee.Database) -> str:
    return str(db.database)


def explain(db: peewee.Database, exc: BaseException, where: str) -> str:
    """One line for any database error at start-up (also for `db-init` and `export`)."""
    if isinstance(exc, peewee.ImproperlyConfigured):
        return _driver_missing(db, exc)
    problem = describe_database_error(exc, where, _user(db))
    return problem or f"database {where} is not reachable: {_server_text(exc)}"


def _driver_missing(db: peewee.Database, exc: BaseException) -> str:
    if isinstance(db, peewee.PostgresqlDatabase):
        return (
            "PostgreSQL needs the psycopg2 driver, which is not installed: "
            "pip install 'smlogger[postgres]'"
        )
    if isinstance(db, peewee.MySQLDatabase):
        return "MySQL/MariaDB needs the PyMySQL driver, which is not installed: pip install pymysql"
    return f"database driver missing: {exc}"


def _user(db: peewee.Database) -> str:
    return str(db.connect_params.get("user") or "")


def _write_probes(db: peewee.Database, legacy_table: bool) -> list[tuple[str, str]]:
    """(privilege, statement) pairs that touch no row but need what the writer needs."""
    d = dialect_of(db)
    if d.name == "sqlite":
        return []  # a file: ensure_schema has already written to it
    tables = ["meters", "readings", *(t for t, _s in ROLLUPS)]
    if legacy_table:
        tables.append(LEGACY_TABLE)
    updates = {"meters": "last_seen", **{t: "n" for t, _s in ROLLUPS}}
    probes = []
    for table in tables:
        probes.append(
            ("INSERT", f"INSERT INTO {d.q(table)} SELECT * FROM {d.q(table)} WHERE 1 = 0")
        )
        column = updates.get(table)
        if column is not None:
            q = d.q(column)
            probes.append(("UPDATE", f"UPDATE {d.q(table)} SET {q} = {q} WHERE 1 = 0"))
    return probes


def _run(db: peewee.Database, sql: str) -> None:
    try:
        with db.atomic() as txn:
            db.execute_sql(sql)  # type: ignore[no-untyped-call]
            txn.rollback()
    except peewee.PeeweeException as exc:
        # only a refused privilege matters here; anything else the writer will report itself
        if _code(exc) in _MYSQL_DENIED | _PG_DENIED:
            raise
        log.debug("write probe %r: %s", sql, exc)


def _code(exc: BaseException) -> object:
    """MySQL's error number or PostgreSQL's SQLSTATE of a (peewee-wrapped) driver error."""
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__, exc.__context__):
        if candidate is None:
            continue
        pgcode = getattr(candidate, "pgcode", None)
        if pgcode:
            return str(pgcode)
        args: tuple[object, ...] = tuple(getattr(candidate, "args", ()))
        if args and isinstance(args[0], int):
            return args[0]
        if args and isinstance(args[0], BaseException) and args[0] is not candidate:
            return _code(args[0])
    return None


def _pg_code_from_text(text: str) -> Optional[str]:
    # psycopg2 gives no SQLSTATE for errors while connecting; their text is stable
    if "password authentication failed" in text or "no pg_hba.conf entry" in text:
        return "28P01"
    if "does not exist" in text and "database" in text:
        return "3D000"
    if "permission denied" in text:
        return "42501"
    return None


def _server_text(exc: BaseException) -> str:
    """The server's own message, without exception class names."""
    args: tuple[object, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        return str(args[1])
    if args and isinstance(args[0], BaseException):
        return _server_text(args[0])
    text = str(exc).strip().splitlines()
    return text[0].removeprefix("FATAL:").strip() if text else "no details"


def describe_database_error(
    exc: BaseException, where: str, user: str, need: str = "lacks a privilege the logger needs"
) -> Optional[str]:
    """One line for a database error that waiting cannot fix, or None when it may pass
    (server unreachable, starting up, too many connections). `need` says what a refused
    privilege was needed for."""
    code = _code(exc) or _pg_code_from_text(str(exc))
    text = _server_text(exc)
    who = f"user {user!r}" if user else "the database user"
    if code in _MYSQL_LOGIN or code in _PG_LOGIN:
        return (
            f"database {where} refused the login of {who}: {text}; check the user name and "
            "password in the URL"
        )
    if code in _MYSQL_NO_DATABASE or code in _PG_NO_DATABASE or "create database" in text:
        return (
            f"database {where}: {text}; the database does not exist or {who} may not use it -- "
            f"create it and grant {who} rights on it ({GRANT_HINT})"
        )
    if code in _MYSQL_DENIED or code in _PG_DENIED:
        return f"database {where}: {who} {need}: {text}; {GRANT_HINT}"
    if isinstance(code, int) and code >= 2000:
        return None  # MySQL client errors: cannot connect, server gone, ...
    if isinstance(code, int) and code in (1040, 1205, 1213):
        return None  # too many connections, lock wait, deadlock
    if isinstance(code, str) and code[:2] in ("08", "57", "53"):
        return None  # PostgreSQL: connection exception, operator intervention, resources
    if code is None:
        return None  # no server answer at all: unreachable
    return f"database {where}: {text}"
