"""The local journal: an append-only, checksummed FIFO of byte records (behind the SQL sink).

Layout of the journal directory (created 0700, files 0600):

* ``seg-<number>.j`` -- append-only segment files. A record is an 18-byte header (2-byte magic,
  payload length, CRC-32 over length, timestamp and payload, timestamp as a float) and the
  payload. The magic lets a reader find the next record after damaged bytes.
* ``acked`` -- the acknowledged position (segment, offset, CRC), rewritten in place with one
  small ``pwrite``. It is persisted rarely (see `persist_interval`), because every rewrite
  dirties a page of the SD card; a position that lags behind only means a few records are
  delivered again after a crash, and the consumer's writes are idempotent.
* ``lock`` -- flock'ed while a process has the journal open.

Durability. `put`/`put_many` append with a plain ``write()``: when they return, the records
are in the kernel's page cache, which a killed process (kill -9) cannot lose. Against a power
cut, `sync_interval` is the window: 0 fsyncs every append; otherwise records are fsync'ed once
they have waited `sync_interval` seconds (the consumer calls `sync_due()` regularly) unless the
persisted acknowledged position already covers them.

Acknowledgement is two-step so that the consumer decides what is durable: `ack(entry)` marks
`entry` and everything before it as consumed (in memory; never re-read); `persist()` writes
the acknowledged position to disk and deletes finished segments. With `persist_interval` set,
`ack` persists by itself at most that often (for consumers whose writes are durable when they
ack); `close()` always persists.

Disk full (ENOSPC, EDQUOT) or an I/O error while appending is a state, not a loss: the partial
write is truncated away (no half record stays behind), the records are kept in memory (up to
`max_memory_bytes`; beyond that `put` raises `JournalFullError`, which pushes back on the
producer instead of dropping anything), the consumer still gets them from memory, `state` says
"disk full on <path>", the log says so once per change of state, and every later `put` or
`sync_due()` retries the disk. Records that the consumer acknowledged while they were only in
memory are never written.

Reading never gives up on good data: a damaged record is skipped up to the next record whose
magic, length and checksum are valid, and the skip is counted and logged. At open, damage at
the very end of the newest segment with no valid record after it is a torn write (power cut
during an append) and is cut off.

The journal is bounded by age (and optionally size): the oldest records beyond the bound are
dropped with a logged count.

Segments of the previous format (``seg-*.q`` and a ``committed`` file) are read once at open,
their unacknowledged records moved into the journal, and removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

MAGIC = b"\xa7\x4a"
_HEADER = struct.Struct("<2sIId")  # magic, payload length, crc32, timestamp
HEADER_SIZE = _HEADER.size
_SEGMENT_PREFIX = "seg-"
_SEGMENT_SUFFIX = ".j"
_ACK_FILE = "acked"
_ACK = struct.Struct("<QQI")  # segment, offset, crc32 of the first 16 bytes
_LOCK_FILE = "lock"
MAX_RECORD_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_MEMORY_BYTES = 32 * 1024 * 1024
_PRUNE_EVERY_S = 60.0
_CHUNK = 1 << 16
# errors that mean "the disk cannot take it now", as opposed to a bug or a vanished directory
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

# the previous format (kept only to migrate queues left by older versions)
_OLD_HEADER = struct.Struct("<IId")  # payload length, crc32(timestamp bytes + payload), timestamp
_OLD_SUFFIX = ".q"
_OLD_COMMIT = "committed"


class QueueLockedError(RuntimeError):
    """Another process (or another DiskQueue in this one) has the journal directory open."""


class QueueClosedError(RuntimeError):
    """The journal was closed."""


class JournalFullError(OSError):
    """The disk refuses appends and the in-memory reserve is exhausted: retry later."""


@dataclass(frozen=True, order=True)
class Position:
    """A byte position in the journal: segment number and offset in it."""

    segment: int
    offset: int


@dataclass(slots=True)
class Entry:
    """One journal record as handed to the consumer.

    `seq` orders records; `end` is the position right after the record on disk (None while it
    is only held in memory because the disk refused it); `stream_end` counts record bytes.
    """

    seq: int
    timestamp: float
    payload: bytes
    end: Optional[Position] = None
    stream_end: int = 0
    size: int = field(default=0, repr=False)


def _segment_name(number: int, suffix: str = _SEGMENT_SUFFIX) -> str:
    return f"{_SEGMENT_PREFIX}{number:012d}{suffix}"


def _segment_number(name: str, suffix: str = _SEGMENT_SUFFIX) -> Optional[int]:
    if not (name.startswith(_SEGMENT_PREFIX) and name.endswith(suffix)):
        return None
    digits = name[len(_SEGMENT_PREFIX) : -len(suffix)]
    return int(digits) if digits.isdigit() else None


def _record_crc(length_and_time: bytes, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(length_and_time)) & 0xFFFFFFFF


def encode_record(payload: bytes, timestamp: float) -> bytes:
    """The bytes of one journal record (header + payload)."""
    head = struct.pack("<Id", len(payload), timestamp)
    return _HEADER.pack(MAGIC, len(payload), _record_crc(head, payload), timestamp) + payload


@dataclass
class SegmentScan:
    """What `read_segment` found: records (offset, end, timestamp, payload) and bad stretches."""

    records: list[tuple[int, int, float, bytes]]
    holes: list[tuple[int, int]]
    position: int  # where reading stopped (after the last record or hole)


def read_segment(fd: int, start: int, end: int, limit: int) -> SegmentScan:
    """Up to `limit` valid records in bytes [start, end) of a segment file.

    A record is valid when its magic, length and CRC agree and it ends by `end`. Anything else
    is skipped up to the next valid record and reported as a hole (start, end); a bad stretch
    reaching `end` is reported too, and the caller decides whether it is a torn tail.
    """
    records: list[tuple[int, int, float, bytes]] = []
    holes: list[tuple[int, int]] = []
    buf = b""
    base = start
    pos = start
    bad_from: Optional[int] = None

    def window(at: int, size: int) -> tuple[bytes, int]:
        """A buffer holding [at, at+size) as far as the file goes, and `at`'s index in it."""
        nonlocal buf, base
        if at < base or at + size > base + len(buf):
            buf = os.pread(fd, min(end - at, max(size, _CHUNK)), at)
            base = at
        return buf, at - base

    def valid_at(at: int) -> Optional[tuple[int, float, bytes]]:
        data, rel = window(at, HEADER_SIZE)
        if rel + HEADER_SIZE > len(data):
            return None
        magic, length, crc, stamp = _HEADER.unpack_from(data, rel)
        if magic != MAGIC or length > MAX_RECORD_BYTES or at + HEADER_SIZE + length > end:
            return None
        data, rel = window(at, HEADER_SIZE + length)
        if rel + HEADER_SIZE + length > len(data):
            return None
        view = memoryview(data)
        payload = view[rel + HEADER_SIZE : rel + HEADER_SIZE + length]
        head = bytes(view[rel + 2 : rel + 6]) + bytes(view[rel + 10 : rel + 18])
        if _record_crc(head, payload) != crc:
            return None
        return at + HEADER_SIZE + length, stamp, bytes(payload)

    while pos < end and len(records) < limit:
        found = valid_at(pos)
        if found is not None:
            if bad_from is not None:
                holes.append((bad_from, pos))
                bad_from = None
            records.append((pos, found[0], found[1], found[2]))
            pos = found[0]
            continue
        if bad_from is None:
            bad_from = pos
        # resynchronise: the next place the magic appears
        nxt = -1
        probe = pos + 1
        while probe < end:
            data, rel = window(probe, _CHUNK)
            index = data.find(MAGIC, rel)
            if index >= 0:
                nxt = base + index
                break
            # keep one byte of overlap: the magic may straddle two windows
            probe = base + len(data) - (len(MAGIC) - 1)
            if base + len(data) >= end:
                break
        pos = nxt if nxt >= 0 else end
    if bad_from is not None and len(records) < limit:
        holes.append((bad_from, end))
        pos = end
    return SegmentScan(records, holes, pos)


class DiskQueue:
    """Thread-safe, single-process journal: producers `put`, one consumer `peek`s/`ack`s."""

    def __init__(
        self,
        directory: Path,
        *,
        max_age_s: Optional[float] = 7 * 86400.0,
        max_bytes: Optional[int] = None,
        segment_bytes: int = 8 * 1024 * 1024,
        sync_interval: float = 30.0,
        persist_interval: Optional[float] = 300.0,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
        clock: Callable[[], float] = time.time,
        on_drop: Optional[Callable[[list[Entry]], None]] = None,
    ) -> None:
        if sync_interval < 0:
            raise ValueError("sync_interval must be >= 0 seconds")
        self.directory = Path(directory)
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.sync_interval = sync_interval
        self.persist_interval = persist_interval
        self.max_memory_bytes = max_memory_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._nonempty = threading.Condition(self._lock)
        self._closed = False
        self.dropped = 0  # records dropped by the age/size bound since open
        # told (under the queue's lock: it must not call back) which records the bounds
        # dropped, so that a consumer counting what waits can count them off; from the end of
        # the opening on (what opening drops, the consumer never counted: it counts what
        # waits once the queue is open)
        self._on_drop: Optional[Callable[[list[Entry]], None]] = None
        self.corrupt = 0  # damaged stretches skipped (at open or while reading)
        self.skipped_bytes = 0  # their size
        self.torn_bytes = 0  # torn tail cut at open
        self.migrated = 0  # records taken over from the previous format
        self.fsyncs = 0
        self._dirty = False
        self._dirty_since = 0.0
        self._last_prune = float("-inf")
        self._last_persist = clock()
        self._state: Optional[str] = None  # None = writable; else what is wrong
        self._state_since: Optional[float] = None
        self._needs_truncate = False
        self._backlog: deque[Entry] = deque()  # refused by the disk, held in memory
        self._backlog_bytes = 0
        self._known_holes: set[tuple[int, int]] = set()
        self._oldest_cache: Optional[tuple[int, Optional[float]]] = None

        self._make_directory()
        self._lock_fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise QueueLockedError(
                    f"journal directory {self.directory} is in use by another process"
                ) from None
            raise
        try:
            self._open()
        except BaseException:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            raise
        self._on_drop = on_drop

    # ---- opening / recovery ------------------------------------------------------------------

    def _make_directory(self) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, mode=0o700)
            # mkdir's mode is filtered by the umask; readings are private either way
            os.chmod(self.directory, 0o700)

    def _path(self, segment: int) -> Path:
        return self.directory / _segment_name(segment)

    def _list_segments(self, suffix: str = _SEGMENT_SUFFIX) -> list[int]:
        numbers = []
        for name in os.listdir(self.directory):
            number = _segment_number(name, suffix)
            if number is not None:
                numbers.append(number)
        return sorted(numbers)

    def _read_ack_file(self) -> Optional[Position]:
        try:
            data = os.pread(self._ack_fd, _ACK.size, 0)
        except OSError:
            return None
        if len(data) < _ACK.size:
            return None
        segment, offset, crc = _ACK.unpack(data)
        if zlib.crc32(data[:16]) & 0xFFFFFFFF != crc:
            # a torn position only costs a redelivery from the oldest segment
            log.warning(
                "journal %s: acknowledged position unreadable; redelivering", self.directory
            )
            return None
        return Position(segment, offset)

    def _create_segment(self, number: int) -> int:
        return os.open(
            self._path(number), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600
        )

    def _open(self) -> None:
        self._ack_fd = os.open(self.directory / _ACK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        old_records = self._read_old_format()
        segments = self._list_segments()
        persisted = self._read_ack_file()
        if not segments:
            first = persisted.segment if persisted is not None else 1
            os.close(self._create_segment(first))
            segments = [first]
        if persisted is None or persisted.segment not in segments:
            if persisted is not None and persisted.segment > segments[-1]:
                log.warning("journal %s: acknowledged position beyond the data", self.directory)
            start = Position(segments[0], 0)
            if persisted is not None and persisted.segment > segments[0]:
                start = Position(min(n for n in segments if n > persisted.segment), 0)
            persisted = start
        # segments before the acknowledged one were finished; a crash may have left them
        for number in [n for n in segments if n < persisted.segment]:
            with contextlib.suppress(FileNotFoundError):
                self._path(number).unlink()
        self._segments = [n for n in segments if n >= persisted.segment]
        self._sizes: dict[int, int] = {}
        count = 0
        stream = 0
        first_timestamp: Optional[float] = None
        for index, number in enumerate(self._segments):
            start_at = persisted.offset if number == persisted.segment else 0
            is_last = index == len(self._segments) - 1
            with open(self._path(number), "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                start_at = min(start_at, size)
                scan = read_segment(fh.fileno(), start_at, size, 1 << 62)
            holes = scan.holes
            valid_end = size
            if is_last and holes and holes[-1][1] == size:
                # damage at the very end with nothing valid after it: a torn append
                valid_end = holes[-1][0]
                holes = holes[:-1]
                self.torn_bytes += size - valid_end
                log.warning(
                    "journal %s: cutting %d bytes of a torn record at the end of %s",
                    self.directory,
                    size - valid_end,
                    self._path(number).name,
                )
                with open(self._path(number), "r+b") as fh:
                    fh.truncate(valid_end)
                    os.fsync(fh.fileno())
            for hole in holes:
                self._report_hole(number, hole)
            count += len(scan.records)
            stream += sum(r[1] - r[0] for r in scan.records)
            if first_timestamp is None and scan.records:
                first_timestamp = scan.records[0][2]
            self._sizes[number] = valid_end
        self._persisted = Position(
            persisted.segment, min(persisted.offset, self._sizes[persisted.segment])
        )
        self._committed = self._persisted
        # sequence numbers and byte counts are relative to this open
        self._acked_seq = 0
        self._acked_stream = 0
        self._disk_end_seq = count
        self._disk_end_stream = stream
        self._next_seq = count
        self._next_stream = stream
        self._oldest_cache = (0, first_timestamp)
        self._write_segment = self._segments[-1]
        self._write_fd = os.open(self._path(self._write_segment), os.O_WRONLY | os.O_APPEND)
        self._read_fds: dict[int, int] = {}
        if old_records:
            self._take_over(old_records)
        if count:
            log.info("journal %s: %d records waiting from a previous run", self.directory, count)

    def _report_hole(self, segment: int, hole: tuple[int, int]) -> None:
        if (segment, hole[0]) in self._known_holes:
            return
        self._known_holes.add((segment, hole[0]))
        self.corrupt += 1
        self.skipped_bytes += hole[1] - hole[0]
        log.error(
            "journal %s: %s: %d damaged bytes at offset %d skipped; reading goes on after them",
            self.directory,
            self._path(segment).name,
            hole[1] - hole[0],
            hole[0],
        )

    def _read_old_format(self) -> list[tuple[float, bytes]]:
        """Records of the previous queue format still unacknowledged (removed from disk once
        they are in the journal, see `_take_over`)."""
        numbers = self._list_segments(_OLD_SUFFIX)
        if not numbers:
            return []
        start = (numbers[0], 0)
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            text = (self.directory / _OLD_COMMIT).read_text(encoding="ascii").split()
            start = (int(text[0]), int(text[1]))
        records: list[tuple[float, bytes]] = []
        for number in numbers:
            if number < start[0]:
                continue
            data = (self.directory / _segment_name(number, _OLD_SUFFIX)).read_bytes()
            pos = start[1] if number == start[0] else 0
            while pos + _OLD_HEADER.size <= len(data):
                length, crc, stamp = _OLD_HEADER.unpack_from(data, pos)
                end = pos + _OLD_HEADER.size + length
                payload = data[pos + _OLD_HEADER.size : end]
                if (
                    end > len(data)
                    or zlib.crc32(payload, zlib.crc32(data[pos + 8 : pos + 16])) & 0xFFFFFFFF != crc
                ):
                    break
                records.append((stamp, payload))
                pos = end
        return records

    def _take_over(self, records: list[tuple[float, bytes]]) -> None:
        for index in range(0, len(records), 4096):
            part = records[index : index + 4096]
            self.put_many([p for _, p in part], [t for t, _ in part])
        self.sync()
        if self._backlog:
            raise OSError(errno.ENOSPC, f"no room to migrate the queue in {self.directory}")
        for number in self._list_segments(_OLD_SUFFIX):
            (self.directory / _segment_name(number, _OLD_SUFFIX)).unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.directory / _OLD_COMMIT).unlink()
        self.migrated = len(records)
        log.info(
            "journal %s: took over %d records of the old queue format", self.directory, len(records)
        )

    # ---- producer ----------------------------------------------------------------------------

    def put(self, payload: bytes, timestamp: Optional[float] = None) -> None:
        """Append one record (see `put_many`)."""
        self.put_many([payload], [timestamp])

    def put_many(
        self,
        payloads: list[bytes],
        timestamps: Optional[list[Optional[float]]] = None,
        *,
        hold: bool = True,
    ) -> Optional[int]:
        """Append records; safe against a process kill when this returns. Returns the `seq`
        of the first record (their entries from `peek` carry it), None for no records.

        If the disk refuses them they are held in memory (and retried); `JournalFullError`
        when that reserve is exhausted too, or at once with `hold` False (for a caller that
        has them somewhere safer): nothing was taken, the caller retries later.
        """
        if not payloads:
            return None
        if any(len(p) > MAX_RECORD_BYTES for p in payloads):
            raise ValueError(f"journal record larger than {MAX_RECORD_BYTES} bytes")
        now = self._clock()
        stamps = timestamps or [None] * len(payloads)
        with self._lock:
            if self._closed:
                raise QueueClosedError("journal is closed")
            if self._backlog:
                self._flush_backlog()
                size = sum(len(p) + HEADER_SIZE for p in payloads)
                if self._backlog and self._backlog_bytes + size > self.max_memory_bytes:
                    raise JournalFullError(
                        errno.ENOSPC,
                        f"{self._state}; {self._backlog_bytes} bytes already held in memory",
                    )
            if self._next_seq == self._acked_seq:
                self._oldest_cache = None  # was empty: the oldest is among these
            entries = []
            for payload, stamp in zip(payloads, stamps):
                size = HEADER_SIZE + len(payload)
                self._next_stream += size
                entries.append(
                    Entry(
                        self._next_seq,
                        now if stamp is None else stamp,
                        payload,
                        None,
                        self._next_stream,
                        size,
                    )
                )
                self._next_seq += 1
            # one append attempt only (a second one would write the records twice)
            appended = not self._backlog and self._append(entries)
            if not appended and not hold:
                self._next_seq -= len(entries)
                self._next_stream -= sum(e.size for e in entries)
                raise JournalFullError(errno.ENOSPC, f"{self._state}; nothing taken")
            if not appended:
                self._backlog.extend(entries)
                self._backlog_bytes += sum(e.size for e in entries)
            if self.sync_interval <= 0 and self._dirty:
                self._fsync_locked(now)
            if now - self._last_prune >= _PRUNE_EVERY_S:
                self._prune_locked(now)
            self._nonempty.notify_all()
            return entries[0].seq

    def _append(self, entries: list[Entry]) -> bool:
        """Write entries at the end of the journal; False (state set) if the disk refused."""
        blob = b"".join(encode_record(e.payload, e.timestamp) for e in entries)
        try:
            if self._needs_truncate:
                os.ftruncate(self._write_fd, self._sizes[self._write_segment])
                self._needs_truncate = False
            if self._sizes[self._write_segment] >= self.segment_bytes:
                self._rotate()
            start = self._sizes[self._write_segment]
            try:
                written = 0
                while written < len(blob):
                    written += os.write(self._write_fd, blob[written:])
            except OSError:
                # no half record may stay behind: the next append goes right after the last
                # good one (O_APPEND writes at the real end of the file)
                try:
                    os.ftruncate(self._write_fd, start)
                except OSError:
                    self._needs_truncate = True
                raise
        except OSError as exc:
            self._set_failed(exc)
            return False
        offset = start
        for entry in entries:
            offset += entry.size
            entry.end = Position(self._write_segment, offset)
        self._sizes[self._write_segment] = offset
        self._disk_end_seq = entries[-1].seq + 1
        self._disk_end_stream = entries[-1].stream_end
        if not self._dirty:
            self._dirty = True
            self._dirty_since = self._clock()
        self._set_ok()
        return True

    def _flush_backlog(self) -> None:
        """Try to write what the disk refused before (in order, in one append)."""
        if not self._backlog:
            return
        entries = list(self._backlog)
        if self._append(entries):
            count = len(entries)
            self._backlog.clear()
            self._backlog_bytes = 0
            log.info("journal %s: %d records held in memory are written now", self.directory, count)

    def _set_failed(self, exc: OSError) -> None:
        if exc.errno in _DISK_FULL:
            state = f"disk full on {self.directory}"
        else:
            state = f"cannot write {self.directory}: {exc.strerror or exc}"
        if state != self._state:
            log.error(
                "journal: %s (%s); readings are kept in memory (up to %d KiB) and written when "
                "the disk takes them again",
                state,
                exc,
                self.max_memory_bytes // 1024,
            )
            self._state = state
            self._state_since = self._clock()

    def _set_ok(self) -> None:
        if self._state is not None:
            log.info(
                "journal %s: writable again after %.0f s",
                self.directory,
                self._clock() - (self._state_since or self._clock()),
            )
            self._state = None
            self._state_since = None

    def _rotate(self) -> None:
        number = self._write_segment + 1
        fd = self._create_segment(number)  # may fail on a full disk: nothing changed yet
        if self._dirty:
            with contextlib.suppress(OSError):
                os.fsync(self._write_fd)
        os.close(self._write_fd)
        self._write_fd = fd
        self._segments.append(number)
        self._sizes[number] = 0
        self._write_segment = number
        self._dirty = False

    def _fsync_locked(self, now: float) -> bool:
        try:
            os.fsync(self._write_fd)
        except OSError as exc:
            self._set_failed(exc)
            return False
        self.fsyncs += 1
        self._dirty = False
        return True

    def sync(self) -> None:
        """fsync whatever was appended (for a clean shutdown or a flush)."""
        with self._lock:
            if not self._closed:
                self._flush_backlog()
                if self._dirty:
                    self._fsync_locked(self._clock())

    def sync_due(self) -> bool:
        """Retry records held in memory, and fsync appended records that have waited
        `sync_interval` seconds unless the persisted acknowledged position covers them.
        True if it fsync'ed. Called by the consumer, so that a producer never waits for the
        disk."""
        with self._lock:
            if self._closed:
                return False
            self._flush_backlog()
            if not self._dirty:
                return False
            if self._persisted >= Position(self._write_segment, self._sizes[self._write_segment]):
                self._dirty = False  # all of it is done with: nothing to make durable
                return False
            now = self._clock()
            if now - self._dirty_since < self.sync_interval:
                return False
            return self._fsync_locked(now)

    # ---- consumer ----------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return self._next_seq - self._acked_seq

    @property
    def depth(self) -> int:
        """Records not yet acknowledged."""
        return len(self)

    @property
    def pending_bytes(self) -> int:
        """Bytes of the records not yet acknowledged."""
        with self._lock:
            return self._next_stream - self._acked_stream

    @property
    def state(self) -> Optional[str]:
        """None while the disk takes appends, else what is wrong ("disk full on <path>")."""
        with self._lock:
            return self._state

    @property
    def in_memory(self) -> int:
        """Records held in memory because the disk refused them."""
        with self._lock:
            return len(self._backlog)

    def oldest_timestamp(self) -> Optional[float]:
        """The timestamp of the oldest unacknowledged record."""
        with self._lock:
            return self._oldest_locked()

    def _oldest_locked(self) -> Optional[float]:
        if self._oldest_cache is not None and self._oldest_cache[0] == self._acked_seq:
            return self._oldest_cache[1]
        first = self._peek_locked(1)
        stamp = first[0].timestamp if first else None
        self._oldest_cache = (self._acked_seq, stamp)
        return stamp

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until something is queued (True) or the timeout/close (False)."""
        with self._nonempty:
            if self._next_seq == self._acked_seq and not self._closed:
                self._nonempty.wait(timeout)
            return self._next_seq > self._acked_seq and not self._closed

    def wake(self) -> None:
        """Wake a consumer blocked in `wait` (e.g. to let it notice a shutdown)."""
        with self._nonempty:
            self._nonempty.notify_all()

    def peek(self, max_items: int) -> list[Entry]:
        """Up to `max_items` unacknowledged entries, oldest first; repeated until `ack`ed."""
        with self._lock:
            if self._closed:
                raise QueueClosedError("journal is closed")
            return self._peek_locked(max_items)

    def pending_payloads(self) -> Iterator[bytes]:
        """Every unacknowledged payload, oldest first, without delivering anything (for a
        consumer that needs to count what a previous run left)."""
        with self._lock:
            segments = [n for n in self._segments if n >= self._committed.segment]
            start = self._committed
            sizes = dict(self._sizes)
            backlog = [e.payload for e in self._backlog]
        for number in segments:
            offset = start.offset if number == start.segment else 0
            with open(self._path(number), "rb") as fh:
                scan = read_segment(fh.fileno(), offset, sizes.get(number, 0), 1 << 62)
            for record in scan.records:
                yield record[3]
        yield from backlog

    def _read_fd(self, segment: int) -> int:
        fd = self._read_fds.get(segment)
        if fd is None:
            fd = os.open(self._path(segment), os.O_RDONLY)
            self._read_fds[segment] = fd
        return fd

    def _peek_locked(self, max_items: int) -> list[Entry]:
        entries: list[Entry] = []
        seq, stream = self._acked_seq, self._acked_stream
        segment, offset = self._committed.segment, self._committed.offset
        index = self._segments.index(segment)
        while len(entries) < max_items and seq < self._disk_end_seq:
            size = self._sizes[segment]
            if offset >= size:
                if index + 1 >= len(self._segments):
                    break
                index += 1
                segment, offset = self._segments[index], 0
                continue
            scan = read_segment(self._read_fd(segment), offset, size, max_items - len(entries))
            for hole in scan.holes:
                self._report_hole(segment, hole)
            for start, end, stamp, payload in scan.records:
                stream += end - start
                entries.append(
                    Entry(seq, stamp, payload, Position(segment, end), stream, end - start)
                )
                seq += 1
            offset = scan.position
        if len(entries) < max_items:
            entries.extend(e for e in self._backlog if e.seq >= self._acked_seq)
            del entries[max_items:]
        return entries

    def ack(self, entry: Entry) -> None:
        """Acknowledge `entry` and everything before it (in memory; see `persist`)."""
        with self._lock:
            if self._closed:
                raise QueueClosedError("journal is closed")
            self._ack_locked(entry)
            if (
                self.persist_interval is not None
                and self._clock() - self._last_persist >= self.persist_interval
            ):
                self._persist_locked(self._committed)

    def _ack_locked(self, entry: Entry) -> None:
        if entry.seq < self._acked_seq:
            return
        if entry.end is not None:
            end = entry.end
        else:
            # only in memory: everything on disk comes before it
            end = Position(self._write_segment, self._sizes[self._write_segment])
            while self._backlog and self._backlog[0].seq <= entry.seq:
                self._backlog_bytes -= self._backlog.popleft().size
        # an exhausted segment that is not the last is left at once, so the position never
        # points at a file about to be deleted
        index = self._segments.index(end.segment)
        while end.offset >= self._sizes[end.segment] and index + 1 < len(self._segments):
            index += 1
            end = Position(self._segments[index], 0)
        self._committed = end
        self._acked_seq = entry.seq + 1
        self._acked_stream = entry.stream_end
        if end == Position(self._write_segment, self._sizes[self._write_segment]) and (
            self._acked_seq < self._disk_end_seq
        ):
            # damage found while reading hid some records: the disk part is done anyway
            self._acked_seq = self._disk_end_seq
            self._acked_stream = self._disk_end_stream

    def acked_position(self) -> Position:
        """The acknowledged position (to hand to `persist` once the consumer made its
        writes up to here durable)."""
        with self._lock:
            return self._committed

    def persist(self, position: Optional[Position] = None) -> None:
        """Write the acknowledged position (or an earlier `position` taken with
        `acked_position`) to disk and delete the segments before it."""
        with self._lock:
            if self._closed:
                return
            target = self._committed if position is None else min(position, self._committed)
            self._persist_locked(target)

    def _persist_locked(self, position: Position) -> None:
        self._last_persist = self._clock()
        if position <= self._persisted:
            return
        data = struct.pack("<QQ", position.segment, position.offset)
        try:
            os.pwrite(self._ack_fd, data + struct.pack("<I", zlib.crc32(data) & 0xFFFFFFFF), 0)
        except OSError as exc:
            # the old position stays: a redelivery, never a loss
            log.warning(
                "journal %s: cannot persist the acknowledged position: %s", self.directory, exc
            )
            return
        self._persisted = position
        for number in [n for n in self._segments if n < position.segment]:
            fd = self._read_fds.pop(number, None)
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                self._path(number).unlink()
            self._segments.remove(number)
            del self._sizes[number]

    # ---- bounds ------------------------------------------------------------------------------

    def prune(self, now: Optional[float] = None) -> int:
        """Drop entries older than `max_age_s` (and the oldest beyond `max_bytes`)."""
        with self._lock:
            if self._closed:
                return 0
            return self._prune_locked(self._clock() if now is None else now)

    def _prune_locked(self, now: float) -> int:
        self._last_prune = now
        if self._next_seq == self._acked_seq:
            return 0
        cutoff = None if self.max_age_s is None else now - self.max_age_s
        oldest = self._oldest_locked()
        too_old = cutoff is not None and oldest is not None and oldest < cutoff
        pending = self._next_stream - self._acked_stream
        too_big = self.max_bytes is not None and pending > self.max_bytes
        if not (too_old or too_big):
            return 0
        excess_until = self._acked_stream + (pending - (self.max_bytes or pending))
        dropped = 0
        while True:
            batch = self._peek_locked(4096)
            gone: list[Entry] = []
            for item in batch:
                old = cutoff is not None and item.timestamp < cutoff
                big = too_big and item.stream_end - item.size < excess_until
                if not (old or big):
                    break
                gone.append(item)
            if not gone:
                break
            last = gone[-1]
            dropped += len(gone)
            self._ack_locked(last)
            if self._on_drop is not None:
                self._on_drop(gone)
            if last is not batch[-1]:
                break
        if not dropped:
            return 0
        self._persist_locked(self._committed)
        self.dropped += dropped
        log.warning(
            "journal %s: dropped %d oldest entries beyond the bound (max age %s s, max bytes %s)",
            self.directory,
            dropped,
            self.max_age_s,
            self.max_bytes,
        )
        return dropped

    # ---- status / shutdown -------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """Figures for /api/status: depth, bytes, memory reserve, state, damage found."""
        with self._lock:
            return {
                "path": str(self.directory),
                "state": self._state or "ok",
                "depth": self._next_seq - self._acked_seq,
                "bytes": self._next_stream - self._acked_stream,
                "in_memory": len(self._backlog),
                "memory_bytes": self._backlog_bytes,
                "corrupt": self.corrupt,
                "skipped_bytes": self.skipped_bytes,
                "dropped": self.dropped,
                "sync_interval": self.sync_interval,
            }

    def close(self) -> None:
        """Write what memory holds if the disk takes it, fsync, persist the acknowledged
        position, release the directory."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._flush_backlog()
                if self._backlog:
                    log.error(
                        "journal: %s; %d unacknowledged records held in memory are lost",
                        self._state,
                        len(self._backlog),
                    )
                if self._dirty:
                    self._fsync_locked(self._clock())
                self._persist_locked(self._committed)
            finally:
                os.close(self._write_fd)
                os.close(self._ack_fd)
                for fd in self._read_fds.values():
                    os.close(fd)
                self._read_fds.clear()
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._nonempty.notify_all()

    def __enter__(self) -> DiskQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
