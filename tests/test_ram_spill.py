"""The RAM tier's spill into the journal on disk writes each record once (a regression: the
append of `put_many(hold=False)` ran twice, so every spilled batch reached the database twice
and the queue depth went negative)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from helpers import reading

from smlogger.diskqueue import DiskQueue
from smlogger.store import Store, open_database


def test_put_many_without_hold_appends_once(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q")
    try:
        queue.put_many([b"one", b"two"], hold=False)
        assert queue.depth == 2
        assert [e.payload for e in queue.peek(10)] == [b"one", b"two"]
        segments = list((tmp_path / "q").glob("seg-*"))
        assert sum(p.stat().st_size for p in segments) == 2 * 18 + len(b"onetwo")
    finally:
        queue.close()


def test_readings_spilled_from_ram_reach_the_database_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="smlogger")
    db = open_database(None, tmp_path)
    store = Store(db, spool_dir=tmp_path / "spool", ram_dir=tmp_path / "ram", sync_interval=60)
    for i in range(150):
        store.write(reading(i, 1000 + i / 3600))
    store.close()  # spills the RAM tier into the journal, commits the journal
    db.close()
    status = store.status()
    assert store.depth == 0 and status["queue_depth"] == 0, status
    assert status["written"] == 150 and status["skipped_existing"] == 0, status
    assert caplog.records == []
    with sqlite3.connect(tmp_path / "smlogger.db") as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (150,)
