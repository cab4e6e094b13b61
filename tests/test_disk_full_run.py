"""A real logger on a really small filesystem that fills up while it runs (20 readings/s).

Afterwards the database holds every reading the CSV files hold (DB ⊇ CSV), nothing twice, and
the readings have no gap except at the restart in the middle.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import csv_texts, wait_for
from smallfs import fill, small_filesystem

pytestmark = pytest.mark.slow  # two `smlogger run` processes on a mounted tmpfs

ROOT = Path(__file__).resolve().parent.parent
RATE_S = 0.05  # 20 readings per second


def _start(data_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for inherited in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(inherited, None)
    err = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smlogger",
            "run",
            "--simulate",
            "--interval",
            str(RATE_S),
            "--data-dir",
            str(data_dir),
            "--http",
            "off",
            "--sync-interval",
            "1",
            "--commit-interval",
            "0",
        ],
        stderr=err,
        env=env,
        cwd=ROOT,
    )
    err.close()
    return proc


def _db_times(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return [str(r[0]) for r in con.execute("SELECT time FROM readings ORDER BY time")]
    finally:
        con.close()


def _csv_rows(folder: Path) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for path, text in csv_texts(folder):
        assert text.endswith("\n"), f"{path} ends in a partial row"
        out += list(csv.DictReader(io.StringIO(text)))
    return out


def _ms(text: str) -> int:
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    # CSV rows carry milliseconds (cut, not rounded): compare at that resolution
    return (stamp - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def _stored(path: Path) -> int:
    """How many readings the running logger has committed so far."""
    con = sqlite3.connect(path, timeout=5)
    try:
        return int(con.execute("SELECT count(*) FROM readings").fetchone()[0])
    finally:
        con.close()


def _grows(path: Path, by: int) -> int:
    """Waits until the logger has committed `by` readings more than now; returns the count."""
    start = _stored(path)
    return int(
        wait_for(
            lambda: (n := _stored(path)) >= start + by and n,
            60,
            f"{by} more readings in the database",
            ignore=(sqlite3.OperationalError,),  # the table not there yet, a busy database
        )
    )


FULL_S = 8.0  # how long the disk stays full: 160 readings arrive meanwhile
MAX_GAP_MS = 4000  # more than a loaded machine's stall, clearly less than the full window


def test_filesystem_filling_during_a_run_loses_nothing(tmp_path: Path) -> None:
    log_path = tmp_path / "stderr.txt"
    with small_filesystem(tmp_path / "fs", 6 * 1024) as mount:
        data_dir = mount / "data"
        db_path = data_dir / "smlogger.db"
        proc = _start(data_dir, log_path)
        try:
            wait_for(db_path.exists, 30, "the database")
            _grows(db_path, 40)
            full_from = time.time()
            filler = fill(mount)
            wait_for(lambda: "disk full on" in log_path.read_text(), 60, "the disk-full report")
            # readings keep arriving while the disk stays full: they must all reach the database
            time.sleep(max(0.0, full_from + FULL_S - time.time()))
            filler.unlink()
            full_until = time.time()
            _grows(db_path, 40)  # written again: the database took the readings that waited
            assert _stop(proc) == 0
            restart_at = time.time()
            proc = _start(data_dir, log_path)
            _grows(db_path, 40)
            assert _stop(proc) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        log_text = log_path.read_text()
        db_raw = _db_times(db_path)
        csv_raw = _csv_rows(data_dir / "csv")
    # (meter, time) is the key: a reading stored twice would show as a repeated time
    assert len(db_raw) == len(set(db_raw)), "a reading stored twice"
    rows = [tuple(row.values()) for row in csv_raw]
    assert len(rows) == len(set(rows)), "a CSV row written twice"
    db = [_ms(t) for t in db_raw]
    csv_rows = [_ms(row["time"]) for row in csv_raw]
    missing = sorted(set(csv_rows) - set(db))
    assert not missing, f"{len(missing)} CSV readings not in the database: {missing[:5]}"
    # 20 readings/s: apart from the restart, no gap in the stored readings. The simulator skips
    # the readings it fell behind on, so a stalled logger leaves a gap of the stall: the bound
    # allows a loaded machine's stall, and is well below the disk-full window it guards.
    restart_ms = restart_at * 1000
    gaps = [
        (a, b)
        for a, b in zip(db, db[1:])
        if b - a > MAX_GAP_MS and not (a - 2000 <= restart_ms <= b + 2000)
    ]
    assert not gaps, f"gaps in the database: {gaps[:5]}"
    during = [t for t in db if full_from * 1000 <= t <= full_until * 1000]
    assert during, "no reading from the time the disk was full"
    # nothing the meter sent was lost: every reading the two runs accepted is in the database
    accepted = [int(n) for n in re.findall(r"= (\d+) readings accepted", log_text)]
    assert len(accepted) == 2, log_text[-3000:]
    assert sum(accepted) == len(db), (accepted, len(db))
    # the state was reported once per episode by each part that met it, not per retry: the
    # journal, the CSV log, the database (SQLite itself on that disk)
    reports = Counter(
        line.split(" ERROR ", 1)[1].split(":", 1)[0].strip()
        for line in log_text.splitlines()
        if " ERROR " in line and "disk full on" in line
    )
    assert reports and max(reports.values()) == 1, (reports, log_text[-3000:])
