"""Honest endings: every start-up mistake that waiting cannot fix is one line and exit 2 --
no traceback, no exception class names, nothing spooled. A real `smlogger run` process, and a
real MariaDB server for the database rights (marked slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pymysql
import pytest
from servers import MariaDBServer, PostgresServer

from smlogger.store import ensure_schema, open_database

EXCEPTION_WORDS = ("Traceback", "Error:", "Exception", "OperationalError", "ImproperlyConfigured")


def run(*args: str, tmp_path: Path, python: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    command = [sys.executable]
    command += ["-c", python + "from smlogger.cli import main; raise SystemExit(main())"]
    return subprocess.run(
        [*command, "run", "--http", "off", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def one_line_exit_2(proc: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a process that must have ended with exit code 2."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in EXCEPTION_WORDS:
        assert word not in lines[0], lines[0]
    assert lines[0].startswith("smlogger: error: ")
    return lines[0].removeprefix("smlogger: error: ")


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_text("not a directory")
    line = one_line_exit_2(run("--simulate", "--data-dir", str(target), tmp_path=tmp_path))
    assert line == f"data directory {target} is a file, not a directory (--data-dir)"


def test_replay_of_a_directory(tmp_path: Path) -> None:
    line = one_line_exit_2(run("--replay", str(tmp_path), "--no-db", "--no-csv", tmp_path=tmp_path))
    assert line == f"meter: replay file {tmp_path} is a directory, not a recording"


def test_replay_of_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    line = one_line_exit_2(run("--replay", str(missing), "--no-db", "--no-csv", tmp_path=tmp_path))
    assert line == f"meter: replay file {missing} not found"


# preflight.check_source in a child process that drops to `nobody` once Python and smlogger
# are loaded (nobody may not read them where they are installed)
CHECK_AS_NOBODY = textwrap.dedent(
    """
    import json, os, sys
    from helpers import load_config
    from smlogger import preflight
    [meter] = load_config(json.loads(sys.argv[1])).meters
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    try:
        preflight.check_source(meter)
    except preflight.StartupError as exc:
        print(exc, end="")
    """
)


def _check_source_as_nobody(argv: list[str]) -> str:
    """`preflight.check_source` for the meter of `smlogger run ARGV`, run as `nobody` when we
    are root (root reads any file); the StartupError's message, or "" when the check passed.

    A child process, not a fork: a fork of the threaded pytest process can inherit a lock
    that another thread held at that moment and hang on it."""
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_AS_NOBODY, json.dumps(argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",  # a folder nobody may be in
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr  # anything but a StartupError is a failure
    return proc.stdout


def test_replay_of_an_unreadable_file(tmp_path: Path) -> None:
    # a folder `nobody` may enter (pytest's own tmp folders are root's alone)
    shared = Path(tempfile.mkdtemp(prefix="smlogger-locked-"))
    try:
        shared.chmod(0o755)
        locked = shared / "locked.bin"
        locked.write_bytes(b"\x1b\x1b\x1b\x1b")
        locked.chmod(0)
        message = _check_source_as_nobody(["--replay", str(locked), "--no-db", "--no-csv"])
    finally:
        shutil.rmtree(shared)
    assert message == f"meter: replay file {locked} cannot be read: Permission denied"


def test_port_that_is_a_directory_or_a_file(tmp_path: Path) -> None:
    line = one_line_exit_2(run("--port", str(tmp_path), "--no-db", "--no-csv", tmp_path=tmp_path))
    assert line == f"meter: port {tmp_path} is a directory, not a serial port"
    plain = tmp_path / "dump.bin"
    plain.write_bytes(b"")
    line = one_line_exit_2(run("--port", str(plain), "--no-db", "--no-csv", tmp_path=tmp_path))
    assert line == (
        f"meter: port {plain} is a plain file, not a serial port (to read a recording use --replay)"
    )


def test_replay_without_a_valid_frame_exits_1_saying_so(tmp_path: Path) -> None:
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes((i * 7919) % 251 for i in range(3000)))
    proc = run("--replay", str(noise), "--speed", "max", "--no-db", "--no-csv", tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert f"meter: no valid SML frame in {noise} (3000 bytes)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unsupported_url_scheme(tmp_path: Path) -> None:
    line = one_line_exit_2(
        run(
            "--simulate",
            "--data-dir",
            str(tmp_path),
            "--db-url",
            "mysql+mysqldb://u@h/db",
            tmp_path=tmp_path,
        )
    )
    assert line.startswith("--db-url: unsupported database URL scheme 'mysql+mysqldb'")


def test_missing_postgresql_driver_names_the_extra(tmp_path: Path) -> None:
    # the driver is installed here; a None entry in sys.modules makes `import psycopg2` fail
    # exactly as on a machine without it
    proc = run(
        "--simulate", "--data-dir", str(tmp_path), "--db-url", "postgresql://u:p@127.0.0.1:1/db",
        tmp_path=tmp_path, python="import sys; sys.modules['psycopg2'] = None; ",
    )  # fmt: skip
    line = one_line_exit_2(proc)
    assert line == (
        "PostgreSQL needs the psycopg2 driver, which is not installed: "
        "pip install 'smlogger[postgres]'"
    )
    assert not (tmp_path / "spool").exists() or not any((tmp_path / "spool").iterdir())


# ---- a real MariaDB ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    with MariaDBServer.running(tmp_path_factory.mktemp("mariadb")) as server:
        yield server


def _grant(server: MariaDBServer, user: str, *statements: str) -> str:
    """A fresh user with these GRANTs (ON ... TO the user); its URL without a database."""
    conn: pymysql.connections.Connection = server.root()
    try:
        with conn.cursor() as cur:
            for host in ("127.0.0.1", "localhost"):
                cur.execute(f"CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY 'pw'")
                for statement in statements:
                    cur.execute(f"GRANT {statement} TO '{user}'@'{host}'")
    finally:
        conn.close()
    return f"mysql://{user}:pw@127.0.0.1:{server.port}"


def _tables_made_by_admin(server: MariaDBServer, database: str, tmp_path: Path) -> None:
    db = open_database(server.url(database), tmp_path)
    try:
        ensure_schema(db, legacy_table=True)
    finally:
        db.close()


def _run_db(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    data = tmp_path / "data"
    return run("--simulate", "--data-dir", str(data), "--db-url", url, *extra, tmp_path=tmp_path)


@pytest.mark.slow
def test_user_without_create_right(mariadb: MariaDBServer, tmp_path: Path) -> None:
    base = _grant(mariadb, "nocreate", "SELECT, INSERT, UPDATE ON nocreate_db.*")
    mariadb.root().cursor().execute("CREATE DATABASE IF NOT EXISTS nocreate_db")
    line = one_line_exit_2(_run_db(f"{base}/nocreate_db", tmp_path))
    assert (
        line.startswith("database mysql://nocreate:***@127.0.0.1:")
        and "/nocreate_db: user 'nocreate' may not create the tables (run `smlogger db-init` "
        in line
    )
    assert "CREATE command denied" in line
    assert not (tmp_path / "data" / "spool").exists()


@pytest.mark.slow
def test_user_without_insert_right(mariadb: MariaDBServer, tmp_path: Path) -> None:
    _tables_made_by_admin(mariadb, "readonly_db", tmp_path)
    base = _grant(mariadb, "reader", "SELECT ON readonly_db.*")
    line = one_line_exit_2(_run_db(f"{base}/readonly_db", tmp_path))
    assert "user 'reader' may not write readings (GRANT INSERT): INSERT command denied" in line
    assert "see README 'Coming from the old sml.py script'" in line


@pytest.mark.slow
def test_user_without_update_right(mariadb: MariaDBServer, tmp_path: Path) -> None:
    _tables_made_by_admin(mariadb, "noupdate_db", tmp_path)
    base = _grant(mariadb, "appender", "SELECT, INSERT ON noupdate_db.*")
    line = one_line_exit_2(_run_db(f"{base}/noupdate_db", tmp_path))
    assert "user 'appender' may not update the meter and rollup tables (GRANT UPDATE)" in line


@pytest.mark.slow
def test_unknown_database(mariadb: MariaDBServer, tmp_path: Path) -> None:
    base = _grant(mariadb, "limited", "ALL ON limited_db.*")
    line = one_line_exit_2(_run_db(f"{base}/limitd_db", tmp_path))  # a typo
    assert (
        "/limitd_db: Access denied for user 'limited'@'127.0.0.1' to database 'limitd_db'" in line
    )
    assert "the database does not exist or user 'limited' may not use it" in line


@pytest.mark.slow
def test_wrong_password(mariadb: MariaDBServer, tmp_path: Path) -> None:
    _grant(mariadb, "someone", "ALL ON some_db.*")
    url = f"mysql://someone:wrong@127.0.0.1:{mariadb.port}/some_db"
    line = one_line_exit_2(_run_db(url, tmp_path))
    assert "refused the login of user 'someone'" in line and "wrong" not in line


# rows reach the database within a second or two (default: a batch every 10 minutes)
def _stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, then the process's stderr; killed (and the test failed) if it does not end."""
    proc.terminate()
    try:
        return proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        err = proc.communicate()[1]
        pytest.fail(f"smlogger run ignored SIGTERM for 60 s:\n{err}")


_SOON = ["--sync-interval", "1", "--commit-interval", "0", "--db-batch-size", "3"]


@pytest.mark.slow
def test_the_exact_readme_grants_are_enough(mariadb: MariaDBServer, tmp_path: Path) -> None:
    """The GRANTs the README gives for a logger user, on tables an admin created; the legacy
    table in local time (--legacy-local-time), as the old script's NOW() wrote it."""
    _tables_made_by_admin(mariadb, "smart_meter", tmp_path)
    base = _grant(mariadb, "logger", "SELECT, INSERT, UPDATE ON smart_meter.*")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smlogger", "run", "--simulate", "--interval", "0.2", "--http",
         "off", "--data-dir", str(tmp_path / "data"), "--db-url", f"{base}/smart_meter",
         "--legacy-table", "--legacy-local-time", *_SOON],
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HOME": str(tmp_path), "TZ": "Europe/Berlin"},
    )  # fmt: skip
    try:
        import time

        deadline = time.monotonic() + 30
        rows = 0
        while time.monotonic() < deadline and rows < 3:
            time.sleep(0.3)
            rows = int(str(mariadb.query("SELECT COUNT(*) FROM `values`", "smart_meter")[0][0]))
        assert rows >= 3
    finally:
        err = _stop(proc)
    assert proc.returncode == 0, err
    legacy = mariadb.query("SELECT MAX(`time`) FROM `values`", "smart_meter")[0][0]
    utc = mariadb.query("SELECT MAX(`time`) FROM readings", "smart_meter")[0][0]
    assert isinstance(legacy, datetime) and isinstance(utc, datetime)
    # Berlin's offset at that reading, not now: a test run may straddle a DST change
    offset = utc.replace(tzinfo=timezone.utc).astimezone(ZoneInfo("Europe/Berlin")).utcoffset()
    assert offset is not None
    assert abs((legacy - utc) - offset) < timedelta(seconds=2), (legacy, utc)


@pytest.mark.slow
def test_the_readme_grants_for_a_logger_that_creates_its_tables(
    mariadb: MariaDBServer, tmp_path: Path
) -> None:
    mariadb.root().cursor().execute("CREATE DATABASE IF NOT EXISTS fresh_meter")
    base = _grant(mariadb, "creator", "SELECT, INSERT, UPDATE, CREATE, ALTER ON fresh_meter.*")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smlogger", "run", "--simulate", "--interval", "0.2", "--http",
         "off", "--data-dir", str(tmp_path / "data"), "--db-url", f"{base}/fresh_meter",
         "--legacy-table", *_SOON],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    try:
        import time

        deadline = time.monotonic() + 30
        rows = 0
        while time.monotonic() < deadline and rows < 3:
            time.sleep(0.3)
            try:
                rows = int(str(mariadb.query("SELECT COUNT(*) FROM `values`", "fresh_meter")[0][0]))
            except pymysql.err.ProgrammingError:
                rows = 0  # the table is not there yet
        assert rows >= 3
    finally:
        err = _stop(proc)
    assert proc.returncode == 0, err


@pytest.mark.slow
def test_db_init_explains_a_refused_database(mariadb: MariaDBServer, tmp_path: Path) -> None:
    base = _grant(mariadb, "initless", "SELECT ON initless_db.*")
    proc = subprocess.run(
        [sys.executable, "-m", "smlogger", "db-init", "--db-url", f"{base}/initless_typo"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert "\n" not in line and "OperationalError" not in line
    assert "the database does not exist or user 'initless' may not use it" in line


@pytest.mark.slow
def test_postgresql_unknown_database_and_read_only_user(tmp_path: Path) -> None:
    import psycopg2

    with PostgresServer.running() as server:
        admin = psycopg2.connect(
            host="127.0.0.1", port=server.port, user="postgres", dbname="postgres"
        )
        admin.autocommit = True
        admin.cursor().execute("CREATE ROLE weak LOGIN")
        admin.cursor().execute("CREATE DATABASE pg_readonly")
        admin.close()
        _tables_made_by_admin_pg(server, tmp_path)
        base = f"postgresql://weak@127.0.0.1:{server.port}"
        line = one_line_exit_2(_run_db(f"{base}/pg_nosuch", tmp_path))
        assert (
            "/pg_nosuch: permission denied to create database; the database does not exist or "
            "user 'weak' may not use it" in line
        )
        line = one_line_exit_2(_run_db(f"{base}/pg_readonly", tmp_path))
        assert (
            "user 'weak' may not write readings (GRANT INSERT): permission denied for table" in line
        )


def _tables_made_by_admin_pg(server: PostgresServer, tmp_path: Path) -> None:
    import psycopg2

    db = open_database(server.url("pg_readonly"), tmp_path)
    try:
        ensure_schema(db)
    finally:
        db.close()
    conn = psycopg2.connect(
        host="127.0.0.1", port=server.port, user="postgres", dbname="pg_readonly"
    )
    conn.autocommit = True
    conn.cursor().execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO weak")
    conn.close()
