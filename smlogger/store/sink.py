"""The write side: `Store` queues readings on disk and writes them to the database."""

from __future__ import annotations

import logging
import threading
import time as _time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import peewee

from smlogger.diskqueue import DiskQueue, Entry, QueueClosedError
from smlogger.reading import Reading
from smlogger.store.dialect import dialect_of
from smlogger.store.rows import StoredRow
from smlogger.store.schema import ensure_schema
from smlogger.store.writer import SqlWriter, is_connection_error
from smlogger.timefmt import iso

# the name of the module before it became a package: log lines keep saying "smlogger.store"
log = logging.getLogger("smlogger.store")


class Store:
    """The SQL sink: `write` queues on disk, a background thread writes to the database.

    It owns the disk queue and the writer thread and only writes; queries go through a
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
        batch_size: int = 200,
        fsync_interval: float = 1.0,
        max_spool_bytes: Optional[int] = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.db = db
        self.dialect = dialect_of(db)
        self.batch_size = batch_size
        self.legacy_table = legacy_table
        self._writer = SqlWriter(db, legacy_table=legacy_table)
        self.queue = DiskQueue(
            Path(spool_dir),
            max_age_s=max_spool_age_days * 86400 if max_spool_age_days > 0 else None,
            max_bytes=max_spool_bytes,
            fsync_interval=fsync_interval,
        )
        self._state_lock = threading.Lock()
        self._progress = threading.Condition(self._state_lock)
        self._state = "connecting"
        self._down_since: Optional[float] = None
        self._last_error: Optional[str] = None
        self._last_error_at: Optional[datetime] = None
        self._written = 0
        self._rejected = 0
        self._skipped = 0  # rows found already stored (replays after a crash or lost commit)
        self._closed = False
        self._stop = threading.Event()
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
        if self._closed:
            raise RuntimeError("the SQL store is closed")
        # the age bound counts from queueing, not from the reading's own time: it limits how
        # long an outage is bridged, and replays may carry old timestamps
        self.queue.put_many([StoredRow.from_reading(reading).to_payload()])

    def flush(self, timeout: float = 0.0) -> None:
        """Fsync readings that have waited for the database longer than `fsync_interval` (the
        others are in the database already or will be in a moment; close() fsyncs everything).
        With `timeout` > 0, also wait up to that long for the writer to bring the database up
        to date (never for a database that is down). The pipeline calls this every second, so
        the default does not wait."""
        self.queue.sync_due()
        if timeout <= 0:
            return
        self.queue.wake()
        deadline = _time.monotonic() + timeout
        with self._progress:
            while self.queue.depth > 0 and self._state != "down" and self._thread.is_alive():
                remaining = deadline - _time.monotonic()
                if remaining <= 0:
                    break
                self._progress.wait(min(remaining, 0.5))

    def close(self, timeout: float = 2.0) -> None:
        """Give the writer up to `timeout` s to catch up, then stop it. Whatever is not in
        the database by then stays queued for the next start."""
        if self._closed:
            return
        began = _time.monotonic()
        self._closed = True
        try:
            self.flush(timeout=timeout * 0.75)
        finally:
            self._stop.set()
            self.queue.wake()
            self._thread.join(max(0.1, timeout - (_time.monotonic() - began)))
            if self._thread.is_alive():
                log.warning("SQL writer still busy at shutdown; its batch is replayed next start")
            elif self.queue.depth:
                log.info("%d readings stay queued for the next start", self.queue.depth)
            self.queue.close()

    def status(self) -> dict[str, object]:
        oldest = self.queue.oldest_timestamp()
        with self._state_lock:
            return {
                "db": self._state,
                "backend": self.dialect.name,
                "queue_depth": self.queue.depth,
                "queue_bytes": self.queue.pending_bytes,
                "queue_oldest_age_s": None if oldest is None else round(_time.time() - oldest, 3),
                "written": self._written,
                "rejected": self._rejected,
                "skipped_existing": self._skipped,
                "dropped": self.queue.dropped,
                "last_error": self._last_error,
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
            while not self._stop.is_set():
                try:
                    outcome = self._drain_once(strikes)
                except QueueClosedError:
                    raise
                except Exception:
                    # never let the writer die silently: log, wait, carry on
                    log.exception("unexpected error in the SQL writer")
                    outcome = "retry"
                if outcome == "ok":
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
        self.queue.sync_due()
        entries = self.queue.peek(self.batch_size)
        if not entries:
            self._housekeeping()
            self.queue.wait(timeout=0.5)
            return "idle"
        rows = self._decode(entries)
        rejected = 0
        try:
            written = self._writer.write(rows) if rows else 0
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
        self.queue.ack(entries[-1])
        self._succeeded(written, skipped=len(rows) - written - rejected, rejected=rejected)
        return "ok"

    def _decode(self, entries: Sequence[Entry]) -> list[StoredRow]:
        rows = []
        for entry in entries:
            try:
                rows.append(StoredRow.from_payload(entry.payload))
            except (ValueError, KeyError, TypeError) as exc:
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
                written += self._writer.write([row])
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                log.error(
                    "rejecting the reading of meter %s at %s: %s",
                    row.meter_id,
                    iso(row.time),
                    exc,
                )
                rejected += 1
        return written, rejected

    def _housekeeping(self) -> None:
        self.queue.prune()
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
            remaining = until - _time.monotonic()
            if remaining <= 0 or self._stop.wait(min(remaining, 0.5)):
                break
        return delay

    def _close_connection(self) -> None:
        try:
            self.db.close()
        except Exception:
            log.debug("closing a broken database connection failed", exc_info=True)

    def _failed(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        state = "down" if is_connection_error(exc) else "error"
        with self._state_lock:
            if self._state != state:
                if state == "down":
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
            if self._state in ("down", "error") and self._down_since is not None:
                log.info(
                    "database back after %.0f s; %d readings still queued",
                    _time.monotonic() - self._down_since,
                    self.queue.depth,
                )
            self._state = "ok"
            self._down_since = None
            self._written += written
            self._skipped += max(0, skipped)
            self._rejected += rejected
            self._progress.notify_all()

    # ---- bulk import ---------------------------------------------------------------------

    def bulk_load(self, readings: Iterable[Reading], batch_size: int = 20000) -> int:
        """Write readings straight to the database (no queue), `batch_size` per transaction,
        rollups included; for imports and benchmarks. Returns the number of new rows."""
        ensure_schema(self.db, legacy_table=self.legacy_table)
        writer = SqlWriter(self.db, legacy_table=self.legacy_table)
        total = 0
        batch: list[StoredRow] = []
        for reading in readings:
            batch.append(StoredRow.from_reading(reading))
            if len(batch) >= batch_size:
                total += writer.write(batch)
                batch = []
        if batch:
            total += writer.write(batch)
        return total
