"""Real database servers for tests: MariaDB and PostgreSQL in temporary directories.

Each server listens on 127.0.0.1 on a free port (and a unix socket in its directory), runs
with settings tuned for throw-away data (no fsync), and is torn down with its files. The port
is picked at the first start (one picked earlier may be another process's by then), and a
server that finds it taken after all starts once more on a new one; later starts keep it.
Use them as context managers, or through small fixtures in the test modules:

    with MariaDBServer.running(tmp_path) as server:
        url = server.url()          # mysql://smlogger:...@127.0.0.1:PORT/smlogger
        server.stop(); server.start()   # same port, same data
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import pymysql
from helpers import free_port

USER = "smlogger"
PASSWORD = "s3cret pw/with:odd@chars"
DATABASE = "smlogger"


def find_binary(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for directory in (*extra_dirs, "/usr/sbin", "/usr/local/sbin", "/sbin"):
        for candidate in sorted(glob.glob(os.path.join(directory, name)), reverse=True):
            if os.access(candidate, os.X_OK):
                return candidate
    raise RuntimeError(
        f"{name} not found: the database tests need it (Debian: apt-get install "
        f"{'mariadb-server' if 'maria' in name else 'postgresql'})"
    )


def _quote_pw(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def terminate(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Asks a server to stop with `sig`, killing it if it is not gone after `timeout`."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class ServerExited(RuntimeError):
    """The server process ended while we waited for it to come up."""


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def _wait_for(check: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ServerExited as exc:  # no use waiting any longer
            raise ServerExited(f"{exc}; log:\n{_log_tail(log)}") from None
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(
        f"{what} did not come up within {timeout} s ({last}); log:\n{_log_tail(log)}"
    )


def _port_was_taken(log: Path, since: int) -> bool:
    """Whether the server's log says, after offset `since`, that its port was in use."""
    if not log.exists():
        return False
    with open(log, "rb") as fh:
        fh.seek(since)
        return b"Address already in use" in fh.read()


class _Server:
    """What MariaDB and PostgreSQL share: start on a port, and stop whatever start began."""

    what = "server"
    port = 0  # not picked yet
    proc: Optional[subprocess.Popen[bytes]] = None
    log: Path

    def _spawn(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def stop(self, timeout: float = 60.0) -> None:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it takes connections; a server that does not
        come up is stopped (killed if need be) before the error is raised."""
        fresh = not self.port
        for attempt in (1, 2):
            if fresh:
                self.port = free_port()
            seen = self.log.stat().st_size if self.log.exists() else 0
            self.proc = self._spawn()
            try:
                _wait_for(self._ready, timeout, self.what, self.log)
                return
            except BaseException:
                self.stop(10)
                # someone took the port between free_port() and the server's bind
                if attempt == 1 and fresh and _port_was_taken(self.log, seen):
                    continue
                raise


class MariaDBServer(_Server):
    """A private mariadbd with a database and a password user for the tests."""

    what = "mariadbd"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.datadir = base / "data"
        self.socket = base / "mysqld.sock"
        self.log = base / "error.log"
        self.mariadbd = find_binary("mariadbd")
        self.install_db = find_binary("mariadb-install-db")

    def install(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.install_db,
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{result.stdout}\n{result.stderr}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [
            self.mariadbd,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.base / 'mysqld.pid'}",
            f"--log-error={self.log}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=128M",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--skip-log-bin",
            "--max-connections=50",
        ]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ServerExited(f"mariadbd exited with {self.proc.returncode}")
        # plain connects first: PyMySQL does not close its socket when connecting to a
        # unix socket fails (no listener yet), which the tests see as a ResourceWarning
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            probe.connect(str(self.socket))
        with socket.create_connection(("127.0.0.1", self.port), timeout=2):
            pass
        conn = pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=2)
        conn.close()
        return True

    def root(self) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        return pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True)

    def create_user(self) -> None:
        conn = self.root()
        try:
            with conn.cursor() as cur:
                for host in ("127.0.0.1", "localhost"):
                    cur.execute(
                        f"CREATE USER IF NOT EXISTS '{USER}'@'{host}' IDENTIFIED BY %s", (PASSWORD,)
                    )
                    # *.*: the logger may create its database itself
                    cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'{host}'")
        finally:
            conn.close()

    def url(self, database: str = DATABASE, *, via_socket: bool = False) -> str:
        auth = f"{USER}:{_quote_pw(PASSWORD)}"
        if via_socket:
            return f"mysql://{auth}@localhost/{database}?unix_socket={self.socket}"
        return f"mysql://{auth}@127.0.0.1:{self.port}/{database}"

    def query(self, sql: str, database: str = DATABASE) -> list[tuple[Any, ...]]:
        """The rows of `sql` as root in `database` (values as the driver returns them)."""
        conn = self.root()
        try:
            conn.select_db(database)
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    def stop(self, timeout: float = 60.0) -> None:
        """Clean shutdown (SIGTERM); the data stays for the next `start`."""
        if self.proc is None:
            return
        terminate(self.proc, signal.SIGTERM, timeout)
        self.proc = None

    @classmethod
    @contextlib.contextmanager
    def running(cls, base: Path) -> Iterator[MariaDBServer]:
        server = cls(base)
        try:
            # (in the try: a mariadbd that does not come up in time is stopped too)
            server.install()
            server.start()
            server.create_user()
            yield server
        finally:
            server.stop()
            shutil.rmtree(base, ignore_errors=True)


class PostgresServer(_Server):
    """A private PostgreSQL cluster (initdb + postgres, as user `postgres` when run as root)."""

    what = "postgres"

    def __init__(self) -> None:
        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        self.initdb = find_binary("initdb", *bindirs)
        self.postgres = find_binary("postgres", *bindirs)
        # a private directory directly under /tmp: pytest's tmp dirs are not reachable by the
        # unprivileged server user
        self.base = Path(tempfile.mkdtemp(prefix="smlogger-pg-"))
        self.datadir = self.base / "data"
        self.log = self.base / "server.log"
        self.user: Optional[str] = None
        if os.geteuid() == 0:
            self.user = "postgres"
            shutil.chown(self.base, user="postgres")

    def install(self) -> None:
        result = subprocess.run(
            [self.initdb, "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "-E", "UTF8",
             "--no-sync"],
            capture_output=True,
            text=True,
            timeout=120,
            user=self.user,
            cwd=self.base,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        log_fh = open(self.log, "ab")  # noqa: SIM115 - the server keeps writing to it
        try:
            return subprocess.Popen(
                [self.postgres, "-D", str(self.datadir), "-p", str(self.port),
                 "-k", str(self.base), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdout=log_fh,
                stderr=log_fh,
                user=self.user,
                cwd=self.base,
            )  # fmt: skip
        finally:
            log_fh.close()

    def _ready(self) -> bool:
        import psycopg2

        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ServerExited(f"postgres exited with {self.proc.returncode}")
        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=2
        )
        conn.close()
        return True

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is None:
            return
        terminate(self.proc, signal.SIGINT, timeout)  # SIGINT: PostgreSQL's "fast" shutdown
        self.proc = None

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[PostgresServer]:
        server = cls()
        try:
            server.install()
            server.start()
            yield server
        finally:
            server.stop()
            shutil.rmtree(server.base, ignore_errors=True)
