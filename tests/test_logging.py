"""Quiet, truthful logs (issue 11): one line per change of state, repeats counted, the real
cause named, numbers printed with the digits that make them differ, stale errors cleared."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import peewee
import pytest
from helpers import wait_for

from smlogger.csvlog import CsvLog
from smlogger.health import sink_reasons
from smlogger.logutil import StateLog, describe, distinct
from smlogger.pipeline import PlausibilityCheck, SinkWorker
from smlogger.reading import Reading, Value
from smlogger.store import Store

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


class Clock:
    """A settable monotonic clock, so that a minute of repeats takes no minute."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_state_log_one_line_per_change_repeats_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = logging.getLogger("test.statelog")
    state = StateLog(logger, "db", interval_s=60, clock=clock)
    caplog.set_level(logging.DEBUG, logger="test.statelog")
    assert state.failed("connection refused")
    for _ in range(48):
        clock.now += 1
        assert not state.failed("connection refused")
    clock.now += 12  # 60 s after the first line: a summary with the count
    assert state.failed("connection refused")
    clock.now += 5
    assert state.ok()
    assert not state.ok()  # no failure: nothing to say
    assert lines(caplog, "test.statelog") == [
        "db: connection refused",
        "db: connection refused (repeated 48 times in 60 s)",
        "db: recovered after 65 s (50 failures)",
    ]


def test_state_log_flapping_is_summarised(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = logging.getLogger("test.flap")
    state = StateLog(logger, "/dev/ttyUSB0", interval_s=60, clock=clock)
    caplog.set_level(logging.INFO, logger="test.flap")
    state.failed("connection lost: gone")
    clock.now += 1
    state.ok("open again")
    for _ in range(20):  # lost and back every 2 s: no two lines per flap
        clock.now += 1
        state.failed("connection lost: gone")
        clock.now += 1
        state.ok("open again")
    assert len(lines(caplog, "test.flap")) == 2
    clock.now += 61
    state.failed("connection lost: gone")  # an episode long after: news again
    assert lines(caplog, "test.flap")[-1] == "/dev/ttyUSB0: connection lost: gone"


def test_traceback_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.tb")
    state = StateLog(logger, "web")
    caplog.set_level(logging.INFO, logger="test.tb")
    try:
        raise OSError("disk on fire")
    except OSError as exc:
        state.failed(exc)
    assert [r.exc_info for r in caplog.records] == [None]
    assert lines(caplog, "test.tb") == ["web: OSError: disk on fire"]
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="test.tb")
    other = StateLog(logger, "web")
    other.failed(OSError("again"))
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.DEBUG]
    assert caplog.records[1].exc_info is not None


def test_describe_puts_the_hidden_cause_first() -> None:
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError:
            raise sqlite3.OperationalError("cannot rollback - no transaction is active") from None
    except sqlite3.OperationalError as exc:
        suppressed = exc
    assert describe(suppressed) == "OperationalError: cannot rollback - no transaction is active"
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError:
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")  # noqa: B904
    except sqlite3.OperationalError as exc:
        chained = exc
    assert describe(chained) == (
        "OperationalError: database or disk is full "
        "(then OperationalError: cannot rollback - no transaction is active)"
    )


def test_distinct_shows_the_digits_that_differ() -> None:
    assert distinct(22462.4, 22462.35) == ("22462.4", "22462.35")
    assert distinct(22462.4, 22462.399) == ("22462.4", "22462.399")
    assert distinct(1.5, 1.5) == ("1.5", "1.5")
    assert distinct(100000.0, 99999.9) == ("100000", "99999.9")


def energy_reading(seconds: float, kwh: float) -> Reading:
    # a register with 0.01 Wh resolution, like an eHZ in full-resolution mode
    value = Value("1-0:1.8.0*255", round(kwh * 100_000), "Wh", None, -2)
    return Reading(
        meter_id="m1",
        time=T0 + timedelta(seconds=seconds),
        values={"1-0:1.8.0*255": value},
        e_sum=kwh,
    )


def test_rejected_reading_prints_numbers_that_differ() -> None:
    check = PlausibilityCheck()
    assert check.check(energy_reading(0, 22462.4)) is None
    reason = check.check(energy_reading(1, 22462.35))
    assert reason == "e_sum went backwards (22462.4 -> 22462.35 kWh)"


class FailingSink:
    """A sink that fails its first `fail_first` writes the way a full disk does."""

    name = "flaky"

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.written: list[Reading] = []

    def write(self, reading: Reading) -> None:
        if self.fail_first > 0:
            self.fail_first -= 1
            raise OSError(28, "No space left on device")
        self.written.append(reading)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def status(self) -> dict[str, object]:
        return {}


def test_sink_retries_log_two_lines_and_clear_last_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smlogger.pipeline")
    sink = FailingSink(fail_first=6)
    worker = SinkWorker(sink, retry_initial=0.01)
    worker.start()
    worker.put(energy_reading(0, 1.0))
    # the worker's own count, not the sink's list: the sink holds the reading a moment before
    # the worker counts it and clears last_error (one step, under its lock)
    status = wait_for(
        lambda: (now := worker.status())["handed_over"] == 1 and now, 20, "the write to go through"
    )
    assert sink.written
    worker.close(time.monotonic() + 2)
    assert worker.join(time.monotonic() + 3)
    assert status["write_errors"] == 6 and status["last_error"] is None
    messages = lines(caplog, "smlogger.pipeline")
    assert messages[0] == (
        "sink flaky: write failed: OSError: [Errno 28] No space left on device; retrying"
    )
    assert messages[1].startswith("sink flaky: writing again after") and "6 failures" in messages[1]
    assert len(messages) == 2, messages


def test_sqlite_disk_full_is_named_and_cleared_after_recovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # max_page_count makes SQLite fail exactly as on a full disk (SQLITE_FULL), without one
    caplog.set_level(logging.INFO, logger="smlogger.store")
    db = peewee.SqliteDatabase(str(tmp_path / "x.db"), pragmas={"max_page_count": 40})
    store = Store(db, spool_dir=tmp_path / "spool", batch_size=50, sync_interval=0.2)
    try:
        for i in range(2000):
            store.write(energy_reading(i, 1000 + i / 3600))
        wait_for(lambda: store.status()["db"] == "down", 30, "the full database noticed")
        error = str(store.status()["last_error"])
        assert sink_reasons("sql", store.status()), store.status()  # /healthz: unhealthy
        assert error.startswith("OperationalError: database or disk is full"), error
        warnings = [m for m in lines(caplog, "smlogger.store") if "unavailable" in m]
        assert len(warnings) == 1 and "database or disk is full" in warnings[0], warnings
        assert "(cannot rollback" not in warnings[0]
        # room again: the writer reconnects with the new limit and catches up; the last
        # partial batch would wait for the commit interval (5 min), so ask for it as a
        # shutdown or the web page's flush does
        db.pragma("max_page_count", 1_000_000, permanent=True)
        db.close()

        def caught_up() -> bool:
            store.flush(timeout=1.0)
            return store.status()["queue_depth"] == 0

        wait_for(caught_up, 60, "the backlog written")
        status = store.status()
        assert status["db"] == "ok" and status["last_error"] is None
        assert status["last_error_at"] is None and status["written"] == 2000
    finally:
        store.close()
        db.close()


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a real file system that really fills up (ENOSPC)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a small tmpfs needs root (CI runs as root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.slow  # mounts and fills a tmpfs
def test_csv_on_a_full_disk_logs_once_and_recovers(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a full disk is a state of the CSV sink: rows wait in memory, the log says so once,
    # the rows are written when there is room again
    caplog.set_level(logging.INFO, logger="smlogger")
    sink = CsvLog(tiny_disk / "csv", compress=False)
    worker = SinkWorker(sink, retry_initial=0.05)
    worker.start()
    try:
        worker.put(energy_reading(0, 1.0))
        wait_for(lambda: sink.written == 1, 10, "the first row")
        filler = tiny_disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        with contextlib.suppress(OSError):  # fill the disk to the last block
            while True:
                os.write(fd, b"x" * 4096)
        os.close(fd)
        caplog.clear()
        for i in range(1, 200):
            worker.put(energy_reading(i, 1.0 + i / 1000))
        # every write (and the worker's flush each second) retries the disk
        wait_for(lambda: worker.status()["handed_over"] == 200, 30, "the rows handed over")
        wait_for(lambda: sink.status()["queue_depth"] > 0, 30, "rows held in memory")
        time.sleep(3)  # flushes retry the disk meanwhile: nothing more is logged
        during = [r.getMessage() for r in caplog.records]
        status = sink.status()
        assert str(status["state"]).startswith("disk full on "), status
        assert status["last_error"] and "No space left" in str(status["last_error"])
        # /healthz names it (the worker sees no exception: the sink reports the state)
        held = worker.status()
        assert held["failing"] is True and held["write_errors"] == 0, held
        [reason] = sink_reasons("csv", held)
        assert reason.startswith(f"sink csv: disk full on {tiny_disk / 'csv' / 'm1'}"), reason
        filler.unlink()
        wait_for(lambda: sink.written == 200, 30, "the backlog written")
        status = sink.status()
        assert status["state"] == "ok" and status["last_error"] is None, status
        assert worker.status()["last_error"] is None and worker.status()["failing"] is False
        assert sink_reasons("csv", worker.status()) == []
        after = [r.getMessage() for r in caplog.records][len(during) :]
    finally:
        worker.close(time.monotonic() + 2)
        worker.join(time.monotonic() + 3)
    full = f"csv: disk full on {tiny_disk / 'csv' / 'm1'}; rows wait in memory (up to 4096 KiB)"
    assert during[0].startswith(full), during
    # a nearly full disk lets a row through now and then (the repair of a partial row frees
    # a few bytes): that flapping adds "writing again" and the failure again, nothing else
    assert len(during) <= 5, during
    assert all(m.startswith((full, "csv: writing again after")) for m in during), during
    assert any(m.startswith("csv: writing again after") for m in during + after), after
    assert any(m.endswith("rows held in memory are written now") for m in after), after
    assert not any(r.exc_info for r in caplog.records)


def test_a_full_disk_under_the_database_makes_healthz_unhealthy() -> None:
    # the Store's "disk full" state (SQLITE_FULL on a really full disk) stops the database
    # writes as surely as "down"
    sink = {"db": "disk full", "last_error": "disk full on /var/lib/smlogger (...)"}
    assert sink_reasons("sql", sink) == [
        "sink sql: database disk full (disk full on /var/lib/smlogger (...))"
    ]
