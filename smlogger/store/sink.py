"""The write side: `Store` queues readings on disk and writes them to the database."""

from __future__ import annotations

import logging
import os
import struct
import threading
import time as _time
import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import peewee

from smlogger.diskqueue import DiskQueue, Entry, QueueClosedError
from smlogger.logutil import StateLog, describe
from smlogger.reading import Reading
from smlogger.store.bases import BaseBook
from smlogger.store.dialect import _sql, dialect_of
from smlogger.store.pending import PendingReadings
from smlogger.store.rows import StoredRow
from smlogger.store.schema import ensure_schema
from smlogger.store.writer import SqlWriter, is_connection_error
from smlogger.timefmt import iso

# the name of the module before it became a package: log lines keep saying "smlogger.store"
log = logging.getLogger("smlogger.store")


DEFAULT_SYNC_INTERVAL_S = 60.0
DEFAULT_BATCH_SIZE = 5000
PERSIST_EVERY_S = 300.0
# how long shutdown waits for a database that makes no progress at all
STALL_S = 10.0
# With the RAM tier the database gets a transaction every this many seconds (or per
# batch_size readings; storage.commit_interval). Each transaction rewrites the tail pages of
# `readings`, the current rollup rows, index pages and the WAL index, ~47 KB of page
# dirtyings whatever its size (measured: 31 MB/day of write_bytes at 5 minutes, 25 at 10,
# 22 at 15, all through WAL + checkpoint), so this is most of the database's SD-card cost.
# Durability does not wait for it: the disk journal holds the readings after sync_interval,
# and the web page merges the readings still waiting (`pending`) into its charts.
DEFAULT_COMMIT_INTERVAL_S = 600.0
_BATCH_MARK = b"Z"  # a journal record holding a compressed batch of readings
# `write_many` with at least this many readings (a replay at full speed) writes them to the
# journal on disk at once, as records of up to BULK_RECORD readings, instead of through the
# RAM tier: one large append is what the RAM tier's spill would write anyway
BULK_MIN = 64
BULK_RECORD = 1000
# records of `write_many` whose rows the writer takes from memory instead of reading them back
# from the journal (beyond this, while the database lags, it reads them back)
FRESH_RECORDS = 64
# with `direct_batches` (replays at full speed): rows of write_many waiting in memory for the
# writer; beyond this, write_many waits for the database
DIRECT_ROWS = 20_000


def pack_batch(payloads: Sequence[bytes]) -> bytes:
    """One journal record for many readings: a minute of them compresses to ~1/4 (they
    differ in a few numbers), and one append dirties one or two pages instead of one each."""
    body = b"".join(struct.pack("<I", len(p)) + p for p in payloads)
    return _BATCH_MARK + struct.pack("<I", len(payloads)) + zlib.compress(body, 6)


def unpack_batch(payload: bytes) -> list[bytes]:
    """The reading payloads of a journal record (one, or a batch from `pack_batch`)."""
    if payload[:1] != _BATCH_MARK:
        return [payload]
    (count,) = struct.unpack_from("<I", payload, 1)
    body = zlib.decompress(payload[5:])
    out = []
    pos = 0
    for _ in range(count):
        (size,) = struct.unpack_from("<I", body, pos)
        out.append(body[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


def _up_to(entries: list[Entry], readings: int) -> list[Entry]:
    """The leading entries holding at most `readings` readings (at least one entry): records
    of `Store.write_many` hold up to BULK_RECORD readings each."""
    total = 0
    for index, entry in enumerate(entries):
        total += batch_count(entry.payload)
        if total > readings and index > 0:
            return entries[:index]
    return entries


def batch_count(payload: bytes) -> int:
    """How many readings a journal record holds (without unpacking it)."""
    if payload[:1] != _BATCH_MARK:
        return 1
    return int(struct.unpack_from("<I", payload, 1)[0])


class Store:
    """The SQL sink: `write` appends to the local journal, a background thread commits the
    journal to the database in batches.

    The write budget of an SD card decides the rhythm: a reading costs one small ``write()``
    to the journal (the RAM tier when there is one; safe against kill -9); every
    `sync_interval` seconds the RAM tier goes to the disk journal as one fsync'ed record (the
    power-cut window; 0 fsyncs every reading and commits it at once); the database gets one
    transaction per `commit_interval` seconds (without a RAM tier: per `sync_interval`) or per
    `batch_size` readings, whichever comes first (at once when a backlog or a replay is
    waiting, and on shutdown), so its pages, rollups and indexes are rewritten once per batch
    instead of once per reading. `pending` holds the readings not committed yet, for the
    web page (`StoreReader`).

    It owns the journal and the writer thread and only writes; queries go through a
    `smlogger.store.StoreReader` built from the same database.
    """

    name = "sql"

    def __init__(
        self,
        db: peewee.Database,
        *,
        spool_dir: Path,
        max_spool_age_days: float = 7,
        legacy_table: bool = False,
        legacy_local_time: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        sync_interval: float = DEFAULT_SYNC_INTERVAL_S,
        max_spool_bytes: Optional[int] = None,
        shutdown_timeout: float = 120.0,
        ram_dir: Optional[Path] = None,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL_S,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if sync_interval < 0:
            raise ValueError("sync_interval must be >= 0 seconds")
        if commit_interval < 0:
            raise ValueError("commit_interval must be >= 0 seconds")
        self.db = db
        self.dialect = dialect_of(db)
        self.batch_size = batch_size
        self.sync_interval = sync_interval
        self.shutdown_timeout = shutdown_timeout
        self.legacy_table = legacy_table
        self.legacy_local_time = legacy_local_time
        self.queue = DiskQueue(
            Path(spool_dir),
            max_age_s=max_spool_age_days * 86400 if max_spool_age_days > 0 else None,
            max_bytes=max_spool_bytes,
            sync_interval=sync_interval,
            # acknowledged positions are persisted by the writer after durable commits
            persist_interval=None,
            on_drop=self._journal_dropped,
        )
        # The RAM tier (a tmpfs such as /dev/shm or systemd's RuntimeDirectory): readings
        # wait there, safe against kill -9, until the batch commit, so the SD card sees one
        # write per sync_interval instead of one per reading. What waits longer (database down
        # or slow) is moved to the journal on disk above. With sync_interval 0 every reading
        # goes to disk at once, so there is no RAM tier.
        self.ram: Optional[DiskQueue] = None
        if ram_dir is not None and sync_interval > 0:
            self.ram = DiskQueue(
                Path(ram_dir),
                max_age_s=None,
                sync_interval=3600.0,  # a tmpfs has nothing to fsync
                persist_interval=0.0,  # rewriting the position costs nothing in RAM
            )
        # readings in the journal on disk (its records may hold batches of them)
        self._disk_readings = sum(batch_count(p) for p in self.queue.pending_payloads())
        # with the RAM tier the journal on disk holds everything after sync_interval and the
        # database can wait longer; without it, the database follows sync_interval
        self.commit_interval = sync_interval
        if self.ram is not None:
            self.commit_interval = max(commit_interval, sync_interval)
        self.book = BaseBook(Path(spool_dir))
        self._writer = SqlWriter(
            db, legacy_table=legacy_table, legacy_local_time=legacy_local_time, book=self.book
        )
        self._state_lock = threading.Lock()
        self._progress = threading.Condition(self._state_lock)
        self._state = "connecting"
        self._down_since: Optional[float] = None
        self._last_error: Optional[str] = None
        self._last_error_at: Optional[datetime] = None
        self._written = 0
        self._rejected = 0
        # last_error is the current trouble and clears on recovery; a rejected reading is
        # gone for good, so its reason stays visible here
        self._last_rejected: Optional[str] = None
        self._skipped = 0  # rows found already stored (replays after a crash or lost commit)
        self._fresh: dict[int, list[StoredRow]] = {}  # journal seq -> rows (see write_many)
        #: True for a replay at full speed: large batches of `write_many` go to the database
        #: from memory (the replay file is their source until then; what the database has not
        #: taken at `close` goes to the journal)
        self.direct_batches = False
        self._direct: list[StoredRow] = []
        self._in_flight: list[StoredRow] = []
        # what waits for the database, for the web page (StoreReader merges it): the readings
        # of the previous run in the journals are committed first, they are not in memory.
        # Rows a full-speed replay hands over in memory (`direct_batches`) are not in it: they
        # reach the database within seconds, and their commits do not go through the journal.
        self.pending = PendingReadings(unseen=self.depth)
        self._batches = 0
        self._closed = False
        self._stop = threading.Event()
        self._unexpected = StateLog(log, "SQL writer", level=logging.ERROR)
        self._commit_now = threading.Event()  # flush()/close(): do not wait for the interval
        self._last_persist = _time.monotonic()
        if self._disk_readings or (self.ram is not None and self.ram.depth):
            self._commit_now.set()  # left from the previous run: no reason to wait
        self._schema_ready = False
        self.schema_actions: list[str] = []
        # a first attempt right away, so that a usable database is ready for readers when the
        # constructor returns; a dead one is retried by the writer thread
        self._prepare()
        # the writer thread uses its own connection; this one would only go stale
        self._close_connection()
        self._thread = threading.Thread(target=self._drain, name="smlogger-sql", daemon=True)
        self._thread.start()

    # ---- Sink protocol -------------------------------------------------------------------

    def write(self, reading: Reading) -> None:
        """Append the reading to the journal (compact: the meter's dictionary + changes)."""
        if self._closed:
            raise RuntimeError("the SQL store is closed")
        # the age bound counts from queueing, not from the reading's own time: it limits how
        # long an outage is bridged, and replays may carry old timestamps
        payload = StoredRow.from_reading(reading, self.book).to_payload()
        # pending before it is queued: the writer may commit it at once (see withdraw)
        self.pending.add(reading)
        try:
            if self.ram is not None:
                self.ram.put(payload)
                return
            self.queue.put(payload)
        except BaseException:
            self.pending.withdraw(1)
            raise
        with self._state_lock:
            self._disk_readings += 1

    def write_many(self, readings: Sequence[Reading]) -> int:
        """Take a batch of readings; returns how many (all of them).

        Small batches go the way of `write`; a large one (a replay at full speed) goes to the
        journal on disk as a few compressed records, fsync'ed like the RAM tier's spills, and
        the database gets it in batches of `batch_size` at once. With `direct_batches` a large
        one goes to the database straight from memory while the database writes (the journal
        gets what it has not taken by `close`).
        """
        if self._closed:
            raise RuntimeError("the SQL store is closed")
        book = self.book
        rows = [StoredRow.from_reading(r, book) for r in readings]
        if self.direct_batches and len(rows) >= BULK_MIN and self._hand_over(rows):
            return len(rows)
        payloads = [row.to_payload() for row in rows]
        if not payloads:
            return 0
        # committed through the journal like single readings: the page shows them meanwhile
        # (pending before they are queued, as in `write`)
        self.pending.add_many(readings)
        try:
            self._queue_many(rows, payloads)
        except BaseException:
            self.pending.withdraw(len(readings))
            raise
        return len(payloads)

    def _queue_many(self, rows: list[StoredRow], payloads: list[bytes]) -> None:
        """`write_many`'s payloads to the RAM tier (a small batch, or older readings wait
        there) or as batch records to the journal on disk."""
        ram = self.ram
        if len(payloads) < BULK_MIN or (ram is not None and ram.depth):
            if ram is not None:
                ram.put_many(payloads)
                if len(payloads) >= BULK_MIN:
                    # older readings wait in RAM and go first (the database gets them in
                    # order): have them moved to the journal now, later batches go direct
                    self._commit_now.set()
                return
            self.queue.put_many(payloads)
        else:
            starts = range(0, len(payloads), BULK_RECORD)
            first = self.queue.put_many([pack_batch(payloads[i : i + BULK_RECORD]) for i in starts])
            with self._state_lock:
                if first is not None and len(self._fresh) + len(starts) <= FRESH_RECORDS:
                    # the writer commits these rows without reading the journal back
                    for seq, i in enumerate(starts, first):
                        self._fresh[seq] = rows[i : i + BULK_RECORD]
            # due at once: a backlog this size is no reason to wait for the commit interval
            self._commit_now.set()
        with self._state_lock:
            self._disk_readings += len(payloads)

    def _hand_over(self, rows: list[StoredRow]) -> bool:
        """`direct_batches`: queue rows in memory for the writer, waiting while it is more
        than DIRECT_ROWS behind; False (nothing taken) while the database is not writing."""
        with self._progress:
            while (
                len(self._direct) >= DIRECT_ROWS
                and self._state == "ok"
                and self._thread.is_alive()
                and not self._closed
            ):
                self._progress.wait(0.5)
            if self._state != "ok" or len(self._direct) >= DIRECT_ROWS:
                return False  # the journal takes them: it waits for the database safely
            self._direct.extend(rows)
        self._commit_now.set()
        return True

    def _direct_to_journal(self) -> None:
        """Rows handed over in memory (and a batch the writer may be writing) to the journal
        on disk, where the retries and a restart find them; a batch committed meanwhile is
        skipped as already stored."""
        with self._state_lock:
            rows = self._in_flight + self._direct
            self._direct, self._in_flight = [], []
            self._disk_readings += len(rows)  # (depth stays right while they move)
        if not rows:
            return
        payloads = [row.to_payload() for row in rows]
        starts = range(0, len(rows), BULK_RECORD)
        try:
            self.queue.put_many([pack_batch(payloads[i : i + BULK_RECORD]) for i in starts])
        except OSError:
            with self._state_lock:
                self._direct[:0] = rows  # the journal refused: they stay in memory
                self._disk_readings -= len(rows)
            raise
        # their commit will come through the journal and count them off the pending readings
        self.pending.in_journal_only(len(rows))

    def _drain_direct(self) -> str:
        """Write the next batch of rows handed over in memory ("ok"); on failure they go to
        the journal, whose retry rules apply from then on."""
        with self._state_lock:
            rows = self._direct[: max(self.batch_size, DIRECT_ROWS)]
            del self._direct[: len(rows)]
            self._in_flight = rows
        try:
            written = self._write(rows)
        except Exception as exc:
            self._failed(exc)
            with self._state_lock:
                self._direct[:0] = rows
                self._in_flight = []
            self._direct_to_journal()
            if is_connection_error(exc):
                self._close_connection()
            else:
                self._schema_ready = False
            return "retry"
        with self._state_lock:
            self._in_flight = []
        self._batches += 1
        self._succeeded(written, skipped=len(rows) - written)
        return "ok"

    @property
    def depth(self) -> int:
        """Readings not yet in the database (journal on disk, RAM tier, rows in memory)."""
        return (
            self._disk_readings
            + (self.ram.depth if self.ram is not None else 0)
            + len(self._direct)
            + len(self._in_flight)
        )

    def flush(self, timeout: float = 0.0) -> None:
        """Retry the journal's disk and fsync what is due (the pipeline calls this every
        second; it does not wait). With `timeout` > 0, commit now and wait up to that long for
        the database to hold everything queued (never for a database that is down)."""
        self.queue.sync_due()
        if timeout <= 0:
            return
        self._commit_now.set()
        self.queue.wake()
        deadline = _time.monotonic() + timeout
        with self._progress:
            while (
                self.depth > 0
                and self._state not in ("down", "disk full")
                and self._thread.is_alive()
            ):
                remaining = deadline - _time.monotonic()
                if remaining <= 0:
                    break
                self._commit_now.set()
                self._progress.wait(min(remaining, 0.5))

    def close(self, timeout: Optional[float] = None) -> None:
        """Commit everything queued, waiting as long as the database makes progress (up to
        `timeout`, default `shutdown_timeout`), then stop. Whatever is not in the database by
        then stays in the journal for the next start, and the log says how much."""
        if self._closed:
            return
        self._closed = True
        limit = self.shutdown_timeout if timeout is None else timeout
        self._commit_now.set()
        self.queue.wake()
        if self.ram is not None:
            self.ram.wake()
        deadline = _time.monotonic() + limit
        last_depth = self.depth
        last_change = _time.monotonic()
        try:
            with self._progress:
                while self.depth > 0 and self._thread.is_alive():
                    now = _time.monotonic()
                    depth = self.depth
                    if depth != last_depth:
                        last_depth, last_change = depth, now
                    if now >= deadline or now - last_change >= STALL_S:
                        break
                    self._commit_now.set()
                    self._progress.wait(min(0.5, deadline - now))
        finally:
            self._stop.set()
            self._commit_now.set()  # ends the writer's idle nap
            self.queue.wake()
            if self.ram is not None:
                self.ram.wake()
            self._thread.join(max(1.0, deadline - _time.monotonic()))
            if self._thread.is_alive():
                log.warning("SQL writer still busy at shutdown; its batch is replayed next start")
            else:
                self._spill()  # (stop is set: everything) a reboot must not lose RAM
            try:
                self._direct_to_journal()
            except OSError as exc:
                log.error("%d readings could not be queued on disk: %s", len(self._direct), exc)
            left = self.depth
            if left:
                log.warning(
                    "%d readings stay queued in %s for the next start (database %s)",
                    left,
                    self.queue.directory,
                    self._state,
                )
            self.queue.close()
            if self.ram is not None:
                self.ram.close()

    def status(self) -> dict[str, object]:
        """Figures for /api/status: database state, journal depth and state, counts."""
        stamps = [q.oldest_timestamp() for q in self._queues()]
        oldest = min((t for t in stamps if t is not None), default=None)
        journal = self.queue.status()
        if self.ram is not None and journal["state"] == "ok":
            journal = {**journal, "state": self.ram.status()["state"]}
        with self._state_lock:
            return {
                "db": self._state,
                "backend": self.dialect.name,
                "queue_depth": self.depth,
                "queue_in_ram": 0 if self.ram is None else self.ram.depth,
                "queue_bytes": sum(q.pending_bytes for q in self._queues()),
                "queue_oldest_age_s": None if oldest is None else round(_time.time() - oldest, 3),
                "journal": journal["state"],
                "journal_in_memory": journal["in_memory"],
                "journal_corrupt": journal["corrupt"],
                "sync_interval_s": self.sync_interval,
                "commit_interval_s": self.commit_interval,
                "pending_in_memory": len(self.pending),
                "batches": self._batches,
                "written": self._written,
                "rejected": self._rejected,
                "last_rejected": self._last_rejected,
                "skipped_existing": self._skipped,
                "dropped": self.queue.dropped,
                "last_error": self._last_error
                or (None if journal["state"] == "ok" else journal["state"]),
                "last_error_at": None if self._last_error_at is None else iso(self._last_error_at),
            }

    # ---- the writer thread ---------------------------------------------------------------

    def _prepare(self) -> bool:
        try:
            actions = ensure_schema(self.db, legacy_table=self.legacy_table)
        except Exception as exc:
            self._failed(exc)
            self._close_connection()
            return False
        for action in actions:
            log.info("database: %s", action)
        self.schema_actions += actions
        self._writer.forget_meters()
        self._schema_ready = True
        self._succeeded(0)
        return True

    def _drain(self) -> None:
        delay = 0.0
        strikes = 0
        try:
            # open this thread's connection now: SQLite sets up the WAL index (-shm, a few
            # pages) at the first access, better at start than in the middle of a run
            _sql(self.db, "SELECT 1 FROM meters LIMIT 1")
        except Exception:
            self._close_connection()  # not there yet: the first batch retries
        try:
            while not self._stop.is_set():
                try:
                    outcome = self._drain_once(strikes)
                except QueueClosedError:
                    raise
                except Exception as exc:
                    # never let the writer die silently: log (once, counted), wait, carry on
                    self._unexpected.failed(f"unexpected error: {describe(exc)}", exc)
                    outcome = "retry"
                if outcome == "ok":
                    self._unexpected.ok()
                    delay, strikes = 0.0, 0
                elif outcome == "refused":
                    strikes += 1
                    delay = self._back_off(delay)
                elif outcome == "retry":
                    delay = self._back_off(delay)
        except QueueClosedError:
            pass
        finally:
            self._close_connection()
            with self._progress:
                self._progress.notify_all()

    def _drain_once(self, strikes: int) -> str:
        """Write one batch; "ok", "idle", "retry" (database down) or "refused" (bad data)."""
        if not self._schema_ready and not self._prepare():
            return "retry"
        if self._direct:
            return self._drain_direct()
        self.queue.sync_due()
        self._spill()
        source = self._source()
        if source is None:
            self._housekeeping()
            # (not `self.ram or self.queue`: an empty DiskQueue is falsy, it has a __len__)
            (self.ram if self.ram is not None else self.queue).wait(timeout=0.5)
            if self._source() is None:
                # flush() and close() set _commit_now: they need not wait for this nap
                self._commit_now.wait(0.5)
            return "idle"
        self._commit_now.clear()
        # records of the journal on disk hold a minute of readings each when the RAM tier
        # batches them, single readings otherwise
        spilled = source is self.queue and self.ram is not None
        records = max(1, self.batch_size // 50) if spilled else self.batch_size
        entries = _up_to(source.peek(records), self.batch_size)
        if not entries:
            return "idle"
        rows = self._decode(entries, journal=source is self.queue)
        readings = sum(batch_count(e.payload) for e in entries)
        rejected = 0
        try:
            written = self._write(rows) if rows else 0
        except Exception as exc:
            self._failed(exc)
            if is_connection_error(exc):
                self._close_connection()
                return "retry"
            # bad data or a damaged schema: check the schema and retry; only then give up on
            # single rows, so that one poisoned reading cannot block the queue for good
            self._schema_ready = False
            if strikes < 2:
                return "refused"
            try:
                written, rejected = self._write_singly(rows)
            except Exception as exc2:
                self._failed(exc2)
                self._close_connection()
                return "retry"
        source.ack(entries[-1])
        self.pending.committed(readings)
        self._batches += 1
        if source is self.ram:
            self.ram.persist()  # tmpfs: free
        else:
            with self._state_lock:
                self._disk_readings -= readings
        # the commit was durable (see _write): the journal may forget it, but persisting its
        # position costs a page of the card, so that happens every few minutes (a crash
        # before it only replays rows the database skips as already stored)
        if self._stop.is_set() or _time.monotonic() - self._last_persist >= PERSIST_EVERY_S:
            self.queue.persist()
            self._last_persist = _time.monotonic()
        self._succeeded(written, skipped=len(rows) - written - rejected, rejected=rejected)
        return "ok"

    def _queues(self) -> list[DiskQueue]:
        return [self.queue] if self.ram is None else [self.queue, self.ram]

    def _source(self) -> Optional[DiskQueue]:
        """Where the next database batch comes from: the journal on disk once a batch is due
        there; the RAM tier only while the disk refuses the journal (a remote database still
        gets the readings then); None when nothing is due."""
        if self._batch_due(self.queue, self._disk_readings):
            return self.queue
        failing = self.ram is not None and self.queue.state is not None
        if failing and self.ram is not None and self._batch_due(self.ram, self.ram.depth):
            return self.ram
        return None

    def _spill(self) -> None:
        """Every `sync_interval` s, move what waits in RAM to the journal on disk as one
        compressed record and fsync it: from then on a power cut cannot take it. Only the
        writer thread (or close, after it) calls this."""
        ram = self.ram
        if ram is None or not ram.depth:
            return
        forced = self._commit_now.is_set() or self._stop.is_set()
        oldest = ram.oldest_timestamp()
        if not forced and oldest is not None and _time.time() - oldest < self.sync_interval:
            return
        while ram.depth:
            entries = ram.peek(self.batch_size)
            if not entries:
                return
            try:
                # hold=False: while the disk refuses, they are safer in RAM than in memory
                self.queue.put_many(
                    [pack_batch([e.payload for e in entries])], [entries[0].timestamp], hold=False
                )
            except OSError:
                return  # the journal logged the state once; retried on the next round
            self.queue.sync()
            with self._state_lock:
                self._disk_readings += len(entries)
            ram.ack(entries[-1])
            ram.persist()

    def _batch_due(self, queue: DiskQueue, readings: int) -> bool:
        """A database batch is due when `batch_size` readings wait, the oldest has waited
        the commit interval, or a flush/close asks for it."""
        if queue.depth == 0:
            return False
        if self._commit_now.is_set() or self._stop.is_set() or readings >= self.batch_size:
            return True
        oldest = queue.oldest_timestamp()
        return oldest is None or _time.time() - oldest >= self.commit_interval

    def _write(self, rows: Sequence[StoredRow]) -> int:
        if self.dialect.name == "sqlite":
            # readers and the web use synchronous=NORMAL; this batch must be durable when it
            # commits (one fsync of the WAL per batch, i.e. per minute), because the journal
            # forgets what the database acknowledged
            _sql(self.db, "PRAGMA synchronous = FULL")
        return self._writer.write(rows)

    def _decode(self, entries: Sequence[Entry], *, journal: bool = False) -> list[StoredRow]:
        """The rows of journal entries (`journal`: of the journal on disk, whose records from
        `write_many` may still be in memory)."""
        rows: list[StoredRow] = []
        for entry in entries:
            if journal and self._fresh:
                with self._state_lock:
                    fresh = self._fresh.pop(entry.seq, None)
                if fresh is not None and entry.payload[:1] == _BATCH_MARK:
                    rows += fresh
                    continue
            try:
                rows += [StoredRow.from_payload(p) for p in unpack_batch(entry.payload)]
            except (ValueError, KeyError, TypeError, struct.error, zlib.error) as exc:
                log.error("dropping an unreadable queue record: %s", exc)
                with self._state_lock:
                    self._rejected += 1
        return rows

    def _write_singly(self, rows: Sequence[StoredRow]) -> tuple[int, int]:
        """(written, rejected) writing rows one by one; connection errors propagate."""
        written = 0
        rejected = 0
        for row in rows:
            try:
                written += self._write([row])
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                reason = f"meter {row.meter_id[:40]} at {iso(row.time)}: {describe(exc)}"
                log.error("rejecting the reading of %s", reason)
                with self._state_lock:
                    self._last_rejected = reason
                rejected += 1
        return written, rejected

    def _journal_dropped(self, entries: list[Entry]) -> None:
        # the oldest records went over the age/size bound (a database away for a week): they
        # no longer wait, so neither the depth nor the page may count them
        count = sum(batch_count(e.payload) for e in entries)
        with self._state_lock:
            self._disk_readings -= count
            for entry in entries:
                self._fresh.pop(entry.seq, None)  # (rows of write_many the writer never took)
        self.pending.committed(count)

    def _housekeeping(self) -> None:
        self.queue.prune()
        if self.depth == 0 and _time.monotonic() - self._last_persist >= PERSIST_EVERY_S:
            self.queue.persist()
            self._last_persist = _time.monotonic()
        with self._progress:
            self._progress.notify_all()

    def _back_off(self, delay: float) -> float:
        delay = min(10.0, max(0.5, delay * 2))
        with self._progress:
            self._progress.notify_all()
        # wait in slices: queued readings still get fsync'ed on time while the database is away
        until = _time.monotonic() + delay
        while not self._stop.is_set():
            self.queue.sync_due()
            self._spill()
            remaining = until - _time.monotonic()
            if remaining <= 0 or self._stop.wait(min(remaining, 0.5)):
                break
        return delay

    def _close_connection(self) -> None:
        try:
            self.db.close()
        except Exception:
            log.debug("closing a broken database connection failed", exc_info=True)

    def _disk_full(self, exc: BaseException) -> bool:
        """Whether a database error is the SQLite file's disk being full (SQLite sometimes
        reports only the failed rollback that follows)."""
        if self.dialect.name != "sqlite":
            return False
        # SQLITE_FULL also comes from max_page_count: only a file system without room is a
        # full disk
        try:
            stats = os.statvfs(Path(str(self.db.database)).parent)
        except OSError:
            return False
        return stats.f_bavail * stats.f_frsize < 64 * 1024

    def _failed(self, exc: BaseException) -> None:
        # the real cause first: SQLite's "database or disk is full" hides behind the
        # "cannot rollback - no transaction is active" that peewee's atomic() raises after it
        message = describe(exc)
        state = "down" if is_connection_error(exc) else "error"
        if self._disk_full(exc):
            # SQLITE_FULL / SQLITE_IOERR: the database file's disk, not the database
            state = "disk full"
            message = f"disk full on {Path(str(self.db.database)).parent} ({message})"
        with self._state_lock:
            if self._state != state:
                if state == "disk full":
                    log.error("%s; readings wait in %s", message, self.queue.directory)
                elif state == "down":
                    log.warning(
                        "database unavailable (%s); readings wait in %s",
                        message,
                        self.queue.directory,
                    )
                else:
                    log.warning("database refused a batch (%s); retrying", message)
                if self._down_since is None:
                    self._down_since = _time.monotonic()
            self._state = state
            self._last_error = message
            self._last_error_at = datetime.now(timezone.utc)
            self._progress.notify_all()

    def _succeeded(self, written: int, skipped: int = 0, rejected: int = 0) -> None:
        with self._state_lock:
            if self._state in ("down", "error", "disk full") and self._down_since is not None:
                log.info(
                    "database back after %.0f s; %d readings still queued",
                    _time.monotonic() - self._down_since,
                    self.depth,
                )
            self._state = "ok"
            self._down_since = None
            # recovered: /api/status must not keep showing the old error
            self._last_error = self._last_error_at = None
            self._written += written
            self._skipped += max(0, skipped)
            self._rejected += rejected
            self._progress.notify_all()

    # ---- bulk import ---------------------------------------------------------------------

    def bulk_load(self, readings: Iterable[Reading], batch_size: int = 20000) -> int:
        """Write readings straight to the database (no queue), `batch_size` per transaction,
        rollups included; for imports and benchmarks. Returns the number of new rows."""
        ensure_schema(self.db, legacy_table=self.legacy_table)
        writer = SqlWriter(
            self.db,
            legacy_table=self.legacy_table,
            legacy_local_time=self.legacy_local_time,
            book=self.book,
        )
        total = 0
        batch: list[StoredRow] = []
        for reading in readings:
            batch.append(StoredRow.from_reading(reading, self.book))
            if len(batch) >= batch_size:
                total += writer.write(batch)
                batch = []
        if batch:
            total += writer.write(batch)
        return total
