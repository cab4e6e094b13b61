"""Replays finish their job, and a shutdown waits for a slow database, then says what stays.

Real processes, a real SQLite database held locked by a second connection (the slow database).
"""

from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import csv_texts, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], log_path: Path, *, output: bool = False) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for inherited in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(inherited, None)
    err = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [sys.executable, "-m", "smlogger", "run", "--http", "off", *args],
        stdout=subprocess.PIPE if output else subprocess.DEVNULL,
        stderr=err,
        env=env,
        cwd=ROOT,
    )
    err.close()
    return proc


def _db_rows(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
    finally:
        con.close()


def _csv_rows(folder: Path) -> int:
    return sum(len(list(csv.DictReader(io.StringIO(text)))) for _, text in csv_texts(folder))


@pytest.mark.slow
def test_replay_of_60000_frames_ends_with_every_reading_in_every_sink(tmp_path: Path) -> None:
    from smlogger.simulate import make_meter

    frames = 60_000
    meter = make_meter("household", seed="replay-60k", tz=timezone.utc)
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    recording = tmp_path / "dump.bin"
    with open(recording, "wb") as fh:
        for i in range(frames):
            fh.write(meter.frame(start + timedelta(seconds=i)))
    data_dir = tmp_path / "data"
    proc = _run(["--replay", str(recording), "--speed", "max", "--data-dir", str(data_dir)],
                tmp_path / "stderr.txt", output=True)  # fmt: skip
    out, _ = proc.communicate(timeout=600)
    log_text = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0, log_text[-3000:]
    assert _db_rows(data_dir / "smlogger.db") == frames
    assert _csv_rows(data_dir / "csv") == frames
    summary = out.decode().strip().splitlines()[-1]
    assert summary == (
        f"frames: {frames} ok, 0 bad; readings: {frames}, stored: sql {frames}, csv {frames}; "
        "rejected as implausible: 0"
    )
    # a raw dump at --speed max ends "now": no reading from the future
    con = sqlite3.connect(data_dir / "smlogger.db")
    last = str(con.execute("SELECT MAX(time) FROM readings").fetchone()[0])
    con.close()
    stamp = datetime.fromisoformat(last).replace(tzinfo=timezone.utc)
    assert stamp <= datetime.now(timezone.utc)
    assert "not written before shutdown" not in log_text


@pytest.mark.slow
def test_sigterm_during_a_slow_database_waits_then_reports(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log_path = tmp_path / "stderr.txt"
    args = ["--simulate", "--interval", "0.05", "--data-dir", str(data_dir)]
    proc = _run([*args, "--shutdown-timeout", "6"], log_path)
    database = data_dir / "smlogger.db"
    wait_for(lambda: database.exists(), 30, "the database")
    time.sleep(2)
    # another process holds the database's write lock: every commit waits
    blocker = sqlite3.connect(database, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        time.sleep(1)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        took = time.monotonic() - began
    finally:
        blocker.rollback()
        blocker.close()
    log_text = log_path.read_text()
    assert proc.returncode == 0, log_text[-3000:]
    # it waited for the database (--shutdown-timeout 6, less when no progress at all) ...
    assert took >= 5.0, (took, log_text[-3000:])
    # ... then said exactly what stays queued, and where
    line = next(x for x in log_text.splitlines() if "stay queued in" in x)
    queued = int(line.split(" readings stay queued")[0].rsplit(" ", 1)[-1])
    assert queued > 0 and str(data_dir / "spool") in line
    csv_count = _csv_rows(data_dir / "csv")
    if proc.stdout is not None:
        proc.stdout.close()
    # the next start writes them: the database ends with every CSV reading
    proc = _run([*args], log_path)
    wait_for(lambda: _db_rows(database) >= csv_count, 60, "the queued readings in the database")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
