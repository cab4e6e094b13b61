"""Readings the SQL sink has not committed yet (it commits every storage.commit_interval, 10
minutes by default) are in history, consumption, export and the meter list at once, and
nothing is counted twice once they are committed."""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import peewee
import pytest
from helpers import T0 as R0
from helpers import reading, tiered_store
from test_store_support import T0, household

from smlogger.reading import Reading
from smlogger.store import Store, StoreReader, StoreUnavailableError, open_database
from smlogger.store.pending import PendingReadings

DAY = timedelta(days=1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    # nothing is committed unless a test flushes: an hour between database transactions
    with tiered_store(tmp_path, sync_interval=60, commit_interval=3600) as st:
        yield st


def commit(store: Store) -> None:
    deadline = time.monotonic() + 60
    while store.depth and time.monotonic() < deadline:
        store.flush(timeout=5.0)
    assert store.depth == 0 and len(store.pending) == 0, store.status()


def approx(obj: Any) -> Any:
    """`obj` with every float compared approximately (SQL sums vs Python sums)."""
    if isinstance(obj, float):
        return pytest.approx(obj, rel=1e-9, abs=1e-6)
    if isinstance(obj, dict):
        return {k: approx(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(approx(v) for v in obj)
    return obj


# (from, to, step): raw readings, grouped raw readings, minute and hour rollups, a day
RANGES = [
    (T0 + timedelta(minutes=10), T0 + timedelta(minutes=40), None),
    (T0, T0 + timedelta(hours=2), None),
    (T0, T0 + timedelta(hours=2), 5),
    (T0, T0 + timedelta(hours=2), 60),
    (T0, T0 + timedelta(hours=2), 600),
    (T0 - DAY, T0 + DAY, 3600),
    (T0 - DAY, T0 + 3 * DAY, None),
]


def answers(reader: StoreReader) -> list[Any]:
    out: list[Any] = []
    for start, end, step in RANGES:
        result = reader.history("household", start, end, step=step, max_points=1500)
        out.append((result["step"], result["source"], result["points"]))
    for period in ("day", "month"):
        for tz in ("UTC", "Europe/Berlin"):
            bars = reader.consumption("household", period, T0 - DAY, T0 + 3 * DAY, tz)
            out.append(
                [(b["t"], b["label"], pytest.approx(b["import_kwh"], abs=1e-6)) for b in bars]
            )
    return out


def write(store: Store, readings: list[Reading]) -> None:
    for r in readings:
        store.write(r)


def test_history_and_consumption_include_pending_readings(store: Store) -> None:
    """Before, halfway through and after the commit the page gets the same answers."""
    readings = list(household(T0, 2 * 3600, interval=1.0, meter="household"))
    reader = StoreReader(store.db, store.pending)
    write(store, readings[:4000])
    commit(store)
    write(store, readings[4000:])
    assert len(store.pending) == len(readings) - 4000
    halfway = answers(reader)
    assert halfway[0][2], "the raw range has points"
    commit(store)
    after = answers(reader)
    assert approx(halfway) == after
    # and without anything committed (a fresh database, everything pending)


def test_everything_pending_equals_everything_committed(tmp_path: Path, store: Store) -> None:
    readings = list(household(T0, 3 * 1800, interval=2.0, meter="household"))
    reader = StoreReader(store.db, store.pending)
    write(store, readings)
    assert reader.meters() == ["household"]  # known before its first commit
    before = answers(reader)
    exported = list(reader.export(None, T0 - DAY, T0 + DAY))
    assert [r.time for r in exported] == [r.time for r in readings]
    commit(store)
    after = answers(reader)
    for got, want in zip(after, before):
        assert got == approx(want)
    assert [r.time for r in reader.export(None, T0 - DAY, T0 + DAY)] == [r.time for r in readings]
    # a reader without the pending readings saw nothing before the commit: this is what they add
    plain = StoreReader(store.db)
    assert plain.meters() == ["household"]


def test_without_pending_the_page_lagged(tmp_path: Path, store: Store) -> None:
    """What the merge fixes: the database alone knows nothing before its commit."""
    write(store, [reading(s, e_sum=1.0 + s / 1000, p_sum=500.0, meter="m") for s in range(30)])
    plain = StoreReader(store.db)
    assert plain.history("m", R0, R0 + timedelta(minutes=1))["points"] == []
    merged = StoreReader(store.db, store.pending).history("m", R0, R0 + timedelta(minutes=1))
    assert [p["t"] for p in merged["points"]] == [
        (R0 + timedelta(seconds=s)).timestamp() for s in range(30)
    ]
    assert merged["points"][-1]["e_sum"] == pytest.approx(1.029)


def test_too_many_for_raw_points_become_buckets(store: Store) -> None:
    """Stored plus pending readings beyond max_points: the step of a full range, as if stored."""
    readings = [reading(s, e_sum=1.0 + s / 1000, p_sum=float(s % 7), meter="m") for s in range(300)]
    write(store, readings[:200])
    commit(store)
    write(store, readings[200:])
    reader = StoreReader(store.db, store.pending)
    got = reader.history("m", R0, R0 + timedelta(seconds=300), max_points=100)
    commit(store)
    want = reader.history("m", R0, R0 + timedelta(seconds=300), max_points=100)
    assert got["step"] == want["step"] == 5
    assert approx(got["points"]) == want["points"]


def test_a_database_that_cannot_be_read_still_shows_the_pending_readings(
    tmp_path: Path, store: Store
) -> None:
    """The history the page gets while the database is down: the readings waiting for it,
    the same points as once they are stored; without pending readings it is a plain error."""
    readings = list(household(T0, 3 * 1800, interval=2.0, meter="household"))
    write(store, readings)
    working = StoreReader(store.db, store.pending)
    # a database without the schema: every query fails (as a damaged file does)
    broken_db = peewee.SqliteDatabase(str(tmp_path / "broken.db"))
    broken = StoreReader(broken_db, store.pending)
    try:
        for start, end, step in RANGES:
            want = working.history("household", start, end, step=step, max_points=1500)
            with pytest.raises(StoreUnavailableError, match="no such table") as failed:
                broken.history("household", start, end, step=step, max_points=1500)
            got = failed.value.partial
            assert got is not None
            assert got["source"] == "pending"
            assert (got["meter"], got["from"], got["to"]) == (
                want["meter"],
                want["from"],
                want["to"],
            )
            assert got["step"] == want["step"]
            assert got["points"] == approx(want["points"])
        assert got is not None and got["points"], "the last range holds every reading"
        # another meter's readings are not in it
        with pytest.raises(StoreUnavailableError) as other:
            broken.history("garage", T0, T0 + DAY)
        assert other.value.partial is not None and other.value.partial["points"] == []
        # consumption needs the stored counters: no partial answer
        with pytest.raises(StoreUnavailableError) as consumption:
            broken.consumption("household", "day", T0 - DAY, T0 + DAY)
        assert consumption.value.partial is None
        with pytest.raises(StoreUnavailableError) as plain:
            StoreReader(broken_db).history("household", T0, T0 + DAY)
        assert plain.value.partial is None
    finally:
        broken_db.close()


def test_export_gives_a_reading_once_when_committed_meanwhile(store: Store) -> None:
    readings = [reading(s, e_sum=1.0 + s / 1000, p_sum=1.0, meter="m") for s in range(50)]
    write(store, readings)
    reader = StoreReader(store.db, store.pending)
    stream = reader.export("m", R0, R0 + DAY)  # pending taken now, database read lazily
    commit(store)
    assert [r.time for r in stream] == [r.time for r in readings]


def test_pending_counts_readings_of_the_previous_run_first() -> None:
    pending = PendingReadings(unseen=5, limit=4)
    for s in range(6):  # 2 beyond the limit: still waiting, but not kept in memory
        pending.add(reading(s, meter="m"))
    assert len(pending) == 4
    pending.committed(6)  # the 5 of the previous run and 1 of the 2 evicted ones
    assert len(pending) == 4
    pending.committed(2)
    assert [r.time for r in pending.snapshot("m")[1]] == [
        R0 + timedelta(seconds=s) for s in (3, 4, 5)
    ]
    assert pending.snapshot("other")[1] == []
    assert pending.commits == 2
    with pytest.raises(ValueError, match="limit"):
        PendingReadings(limit=0)


def test_readings_only_in_the_journal_are_committed_after_those_before_them() -> None:
    """Rows moved to the journal without passing `add` (a failed direct batch) sit behind the
    readings queued before them: the commit of those readings takes them off the page."""
    pending = PendingReadings()
    for s in range(3):
        pending.add(reading(s, meter="m"))
    pending.in_journal_only(2)
    pending.add(reading(10, meter="m"))
    assert len(pending) == 4  # (the two moved rows are not in memory)
    pending.committed(3)  # the three queued first
    assert [r.time for r in pending.snapshot()[1]] == [R0 + timedelta(seconds=10)]
    pending.committed(2)  # the two moved rows
    assert [r.time for r in pending.snapshot()[1]] == [R0 + timedelta(seconds=10)]
    pending.committed(1)
    assert pending.snapshot()[1] == [] and len(pending) == 0


def test_readings_the_journal_refused_are_withdrawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading is pending before it is queued (a commit may follow at once); when the
    journal refuses it, it leaves the page again."""
    with tiered_store(tmp_path, sync_interval=60, commit_interval=3600) as store:
        store.write(reading(0))
        assert store.ram is not None

        def refuse(*_args: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(store.ram, "put", refuse)
            patch.setattr(store.ram, "put_many", refuse)
            with pytest.raises(OSError, match="No space"):
                store.write(reading(1))
            with pytest.raises(OSError, match="No space"):
                store.write_many([reading(2), reading(3)])
        assert [r.time for r in store.pending.snapshot()[1]] == [R0]
        store.write(reading(4))
        assert len(store.pending) == 2


def test_store_starts_with_the_previous_runs_readings_unseen(tmp_path: Path) -> None:
    """Readings a killed process left in the RAM journal are committed first; the pending
    list of the new run is not shortened by them."""
    db = open_database(None, tmp_path)
    first = Store(db, spool_dir=tmp_path / "spool", ram_dir=tmp_path / "ram", commit_interval=3600)
    write(first, [reading(s, e_sum=1.0, meter="m") for s in range(10)])
    # as after kill -9: the RAM journal keeps them; the writer thread and journals let go
    first._stop.set()
    first._thread.join(5)
    first.queue.close()
    assert first.ram is not None
    first.ram.close()
    second = Store(db, spool_dir=tmp_path / "spool", ram_dir=tmp_path / "ram", commit_interval=3600)
    try:
        write(second, [reading(100 + s, e_sum=2.0, meter="m") for s in range(3)])
        assert len(second.pending) == 3
        commit(second)
        got = StoreReader(db, second.pending).export("m", R0, R0 + DAY)
        assert len(list(got)) == 13
    finally:
        second.close()
        db.close()


def test_reader_waits_for_no_commit(store: Store) -> None:
    """A commit between taking the pending readings and asking the database: read again."""
    write(store, [reading(s, e_sum=1.0 + s / 1000, p_sum=2.0, meter="m") for s in range(20)])
    reader = StoreReader(store.db, store.pending)
    calls: list[int] = []
    original = reader.queries.history

    def history_with_a_commit(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if not calls:
            commit(store)  # lands while the first answer is being read
        calls.append(1)
        return original(*args, **kwargs)

    reader.queries.history = history_with_a_commit  # type: ignore[method-assign]
    got = reader.history("m", R0, R0 + timedelta(minutes=1))
    assert len(calls) == 2
    assert len(got["points"]) == 20


def test_consumption_ignores_pending_readings_older_than_the_stored_ones(store: Store) -> None:
    """A replay filling an old gap: its readings count once committed, never as a negative
    step from the newest stored counter."""
    write(store, [reading(3600 + s, e_sum=10.0 + s / 100, meter="m") for s in range(10)])
    commit(store)
    write(store, [reading(s, e_sum=5.0 + s / 100, meter="m") for s in range(10)])  # older
    reader = StoreReader(store.db, store.pending)
    bars = reader.consumption("m", "day", R0 - DAY, R0 + DAY)
    assert [b["import_kwh"] for b in bars] == [pytest.approx(0.09)]


@pytest.mark.parametrize("size", [10, 700], ids=["small-batch", "bulk-batch"])
def test_batches_of_write_many_are_pending_until_committed(store: Store, size: int) -> None:
    # a small batch goes the way of single readings (RAM tier), a large one to the journal on
    # disk as compressed records: either way the page sees it before the commit, once
    readings = list(household(T0, size, interval=1.0, meter="household"))
    reader = StoreReader(store.db, store.pending)
    assert store.write_many(readings) == size
    if size < 64:  # a bulk batch is committed at once, maybe before the next line
        assert len(store.pending) == size
    assert [r.time for r in reader.export(None, T0 - DAY, T0 + DAY)] == [r.time for r in readings]
    commit(store)
    assert [r.time for r in reader.export(None, T0 - DAY, T0 + DAY)] == [r.time for r in readings]


def test_readings_the_journal_drops_for_age_no_longer_wait(tmp_path: Path) -> None:
    # a database away for longer than the journal keeps readings (storage.max_spool_age_days):
    # the dropped ones must leave the queue depth and the page's pending readings too
    db = peewee.SqliteDatabase(str(tmp_path / "no such dir" / "smlogger.db"))
    store = Store(
        db,
        spool_dir=tmp_path / "spool",
        sync_interval=0,
        max_spool_age_days=1 / 86400,  # one second
        shutdown_timeout=1.0,
    )
    try:
        for item in household(T0, 5, meter="household"):
            store.write(item)
        assert store.depth == 5 and len(store.pending) == 5
        time.sleep(1.5)
        assert store.queue.prune() == 5
        assert store.depth == 0 and len(store.pending) == 0
        late = list(household(T0 + timedelta(hours=1), 2, meter="household"))
        for item in late:
            store.write(item)
        assert store.depth == 2
        assert [r.time for r in store.pending.snapshot()[1]] == [r.time for r in late]
    finally:
        store.close()
