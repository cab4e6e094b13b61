"""The RAM tier's spill into the journal on disk writes each record once (a regression: the
append of `put_many(hold=False)` ran twice, so every spilled batch reached the database twice
and the queue depth went negative)."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest
from helpers import reading, tiered_store, wait_for

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
    # this store's warnings only: a thread an earlier test left behind may log under smlogger
    ours = {threading.get_ident(), store._thread.ident}
    mine = [
        r
        for r in caplog.records
        if r.name in ("smlogger.store", "smlogger.diskqueue") and r.thread in ours
    ]
    assert mine == []
    with sqlite3.connect(tmp_path / "smlogger.db") as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (150,)


def _count(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "smlogger.db") as conn:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])


def test_journal_on_disk_every_sync_interval_database_every_commit_interval(
    tmp_path: Path,
) -> None:
    """storage.commit_interval: readings reach the fsync'ed disk journal after
    sync_interval, the database only after commit_interval (or flush/close)."""
    with tiered_store(tmp_path, sync_interval=0.05, commit_interval=3600) as store:
        assert store.commit_interval == store.status()["commit_interval_s"] == 3600
        for i in range(20):
            store.write(reading(i, 1000 + i / 3600))
        wait_for(lambda: store._disk_readings == 20, what="the spill to the disk journal")
        assert store.status()["batches"] == 0 and _count(tmp_path) == 0
        assert store.status()["pending_in_memory"] == 20  # what the web page merges
        store.flush(timeout=30)  # what close and the shutdown do: commit now
        assert _count(tmp_path) == 20


def test_commit_interval_below_sync_interval_means_sync_interval(tmp_path: Path) -> None:
    with tiered_store(tmp_path, sync_interval=0.05, commit_interval=0) as store:
        assert store.commit_interval == 0.05
        for i in range(20):
            store.write(reading(i, 1000 + i / 3600))
        # no flush: the writer commits by itself once the interval has passed
        wait_for(lambda: _count(tmp_path) == 20, what="the commit")
    # without the RAM tier the database follows sync_interval, whatever commit_interval says
    plain = Store(open_database(None, tmp_path / "b"), spool_dir=tmp_path / "b" / "spool",
                  sync_interval=2, commit_interval=600)  # fmt: skip
    assert plain.commit_interval == 2
    plain.close()
    with pytest.raises(ValueError, match="commit_interval"):
        Store(open_database(None, tmp_path / "c"), spool_dir=tmp_path / "c", commit_interval=-1)
