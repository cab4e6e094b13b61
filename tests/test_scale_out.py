"""Scale-out: 8 loggers, one meter each, started at the same instant against one empty MariaDB
and one empty PostgreSQL. The database and schema are created once without errors, and every
reading lands exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from servers import MariaDBServer, PostgresServer

from smlogger.simulate import make_meter

LOGGERS = 8
FRAMES = 150

# Imports are done before the gate opens, so that all loggers reach the database within
# milliseconds of each other instead of one import time apart.
LAUNCHER = """
import os, sys, time
from smlogger import cli, service, store  # noqa: F401 - the slow part, before the gate
gate = sys.argv[1]
while not os.path.exists(gate):
    time.sleep(0.001)
sys.exit(cli.main(sys.argv[2:]))
"""


def recording(folder: Path, index: int) -> tuple[Path, str]:
    """A raw dump of FRAMES frames of a simulated meter of its own; (path, meter id)."""
    meter = make_meter("household", seed=f"scale-out-{index}")
    start = datetime(2024, 3, 1, 12, tzinfo=timezone.utc)
    path = folder / f"meter{index}.bin"
    path.write_bytes(b"".join(meter.frame(start + timedelta(seconds=s)) for s in range(FRAMES)))
    return path, meter.meter_id


def run_loggers(tmp_path: Path, url: str) -> dict[str, int]:
    """Start LOGGERS loggers at once against `url`; the meter ids and their exit codes."""
    gate = tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    env["SMLOGGER_DB_URL"] = url  # the environment: the password stays out of `ps`
    procs = {}
    logs = {}
    for index in range(LOGGERS):
        path, meter_id = recording(tmp_path, index)
        logs[meter_id] = tmp_path / f"logger{index}.txt"
        with open(logs[meter_id], "wb") as err:
            procs[meter_id] = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, str(gate), "run", "--replay", str(path),
                 "--speed", "max", "--http", "off", "--no-csv",
                 "--data-dir", str(tmp_path / f"data{index}")],
                stderr=err,
                env=env,
            )  # fmt: skip
    time.sleep(3.0)  # every launcher past its imports (they only wait for the gate now)
    gate.touch()
    codes = {meter_id: proc.wait(180) for meter_id, proc in procs.items()}
    for meter_id, log_path in logs.items():
        text = log_path.read_text()
        problems = [
            line
            for line in text.splitlines()
            if " ERROR " in line or " WARNING " in line or "Traceback" in line
        ]
        assert codes[meter_id] == 0, text[-3000:]
        assert problems == [], text[-3000:]
        assert f"{FRAMES} readings accepted + 0 rejected" in text, text[-3000:]
    return codes


def check_database(query: Callable[[str], list[tuple[object, ...]]], meters: set[str]) -> None:
    versions = query("SELECT version FROM schema_version ORDER BY version")
    assert versions == [(1,), (2,)], versions
    rows = query(
        "SELECT m.meter_id, count(*), count(DISTINCT r.time) FROM readings r "
        "JOIN meters m ON m.id = r.meter GROUP BY m.meter_id"
    )
    assert {str(row[0]): (int(row[1]), int(row[2])) for row in rows} == {  # type: ignore[call-overload]
        m: (FRAMES, FRAMES) for m in meters
    }
    assert query("SELECT count(*) FROM meters") == [(LOGGERS,)]
    for table in ("rollup_minute", "rollup_hour"):
        # the rollups count every reading once as well
        total = query(f"SELECT sum(n) FROM {table}")[0][0]
        assert int(total) == LOGGERS * FRAMES, (table, total)  # type: ignore[call-overload]


@pytest.mark.slow
def test_eight_loggers_one_empty_mariadb(tmp_path: Path) -> None:
    with MariaDBServer.running(tmp_path / "mariadb") as server:
        database = "scale_out"  # does not exist yet: the loggers create it
        codes = run_loggers(tmp_path, server.url(database))
        check_database(lambda sql: server.query(sql, database), set(codes))


@pytest.mark.slow
def test_eight_loggers_one_empty_postgresql(tmp_path: Path) -> None:
    import psycopg2

    with PostgresServer.running() as server:
        database = "scale_out"
        codes = run_loggers(tmp_path, server.url(database))
        conn = psycopg2.connect(
            host="127.0.0.1", port=server.port, user="postgres", dbname=database
        )
        try:

            def query(sql: str) -> list[tuple[object, ...]]:
                with conn.cursor() as cur:
                    cur.execute(sql)
                    return list(cur.fetchall())

            check_database(query, set(codes))
        finally:
            conn.close()
