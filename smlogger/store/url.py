"""Opening a database from a URL: SQLite, MySQL/MariaDB or PostgreSQL through peewee."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

import peewee

from smlogger.masking import mask_url

DEFAULT_SQLITE_NAME = "smlogger.db"


def redact_url(url: Optional[str]) -> str:
    """The database for logs and error messages: the URL masked, or the default SQLite file."""
    return mask_url(url) if url else "sqlite (default)"


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


def _credentials(
    parts: SplitResult, user: Optional[str], password: Optional[str]
) -> dict[str, Any]:
    """The connection keywords MySQL and PostgreSQL drivers share; only what the URL names."""
    params: dict[str, Any] = {}
    if user is not None:
        params["user"] = user
    if password is not None:
        params["password"] = password
    if parts.hostname:
        params["host"] = parts.hostname
    if parts.port is not None:
        params["port"] = parts.port
    return params


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
        params.update(_credentials(parts, user, password))
        for key, value in query.items():
            params[key] = int(value) if key.endswith("timeout") and value.isdigit() else value
        return peewee.MySQLDatabase(name, **params)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg2"):
        pg: dict[str, Any] = {"connect_timeout": 5, "options": "-c TimeZone=UTC"}
        pg.update(_credentials(parts, user, password))
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
        # Chosen for an SD card (issue 8); the order matters, page_size must come first.
        pragmas={
            # 1 KiB pages for new databases (existing ones keep theirs): a batch commit
            # rewrites ~8 pages (readings, rollups, meters) into the WAL, and with 4 KiB pages
            # that alone was ~30 KB a minute. Rows are ~100 bytes, so nothing overflows.
            "page_size": 1024,
            # WAL: a commit appends to one file instead of rewriting pages in place twice
            # (rollback journal), and readers (the web page) never block the writer.
            "journal_mode": "wal",
            # NORMAL for every connection: with WAL it never corrupts, it only leaves the last
            # commits to the next checkpoint. The batch writer switches its own connection to
            # FULL (one fsync per batch), because the journal forgets what the database has.
            "synchronous": "normal",
            "cache_size": -16000,
            "foreign_keys": 0,
            # checkpoint policy: copy the WAL into the database every 1000 pages (~1 MB, an
            # hour or more of batches), so hot pages (the tail of readings, the current
            # rollup rows) are written to the database file once per checkpoint, not per
            # commit; and cut the WAL file back to 1 MB afterwards.
            "wal_autocheckpoint": 1000,
            "journal_size_limit": 1024 * 1024,
        },
    )
