"""A durable FIFO of byte records on local disk (the spool behind the SQL sink).

Layout of the queue directory:

* ``seg-<number>.q`` -- append-only segment files. A record is a 16-byte header
  (payload length, CRC-32 over timestamp and payload, timestamp as a float) and the payload.
* ``committed`` -- "<segment> <offset>": everything before that position was acknowledged.
  It is replaced atomically (write + rename), so a kill -9 leaves either the old or the new
  position, never a mix.
* ``lock`` -- flock'ed while a process has the queue open; two writers would interleave records.

Guarantees: an entry is on disk (in the page cache, which a killed process cannot lose) when
`put` returns. With `fsync_interval` 0 it is also fsync'ed before `put` returns; otherwise the
consumer calls `sync_due()` regularly, which fsyncs entries still unacknowledged after
`fsync_interval` seconds, so only a power cut inside that window can lose them.
Acknowledged entries are never delivered again. Entries delivered but not yet acknowledged
when the process died are delivered again (at least once); the consumer makes its writes
idempotent. A torn record at the tail (power cut during a write) is detected by length/CRC
and cut off at the next open.

The queue is bounded by age (and optionally size): the oldest entries beyond the bound are
dropped with a logged count.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<IId")  # payload length, crc32(timestamp bytes + payload), timestamp
_SEGMENT_PREFIX = "seg-"
_SEGMENT_SUFFIX = ".q"
_COMMIT_FILE = "committed"
_LOCK_FILE = "lock"
MAX_RECORD_BYTES = 16 * 1024 * 1024
_PRUNE_EVERY_S = 60.0


class QueueLockedError(RuntimeError):
    """Another process (or another DiskQueue in this one) has the queue directory open."""


class QueueClosedError(RuntimeError):
    """The queue was closed."""


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True)
class Entry:
    """One queued record; `end` is the position right after it (what `ack` commits)."""

    end: Position
    timestamp: float
    payload: bytes


def _segment_name(number: int) -> str:
    return f"{_SEGMENT_PREFIX}{number:012d}{_SEGMENT_SUFFIX}"


def _segment_number(name: str) -> Optional[int]:
    if not (name.startswith(_SEGMENT_PREFIX) and name.endswith(_SEGMENT_SUFFIX)):
        return None
    digits = name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crc(timestamp_bytes: bytes, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(timestamp_bytes)) & 0xFFFFFFFF


def encode_record(payload: bytes, timestamp: float) -> bytes:
    ts_bytes = struct.pack("<d", timestamp)
    return _HEADER.pack(len(payload), _crc(ts_bytes, payload), timestamp) + payload


class DiskQueue:
    """Thread-safe, single-process durable queue: producers `put`, one consumer `peek`s/`ack`s."""

    def __init__(
        self,
        directory: Path,
        *,
        max_age_s: Optional[float] = 7 * 86400.0,
        max_bytes: Optional[int] = None,
        segment_bytes: int = 8 * 1024 * 1024,
        fsync_interval: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval = fsync_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._nonempty = threading.Condition(self._lock)
        self._closed = False
        self.dropped = 0  # entries dropped by the age/size bound since open
        self.corrupt = 0  # records lost to corruption found at open
        self._last_fsync = 0.0
        self._dirty = False
        self._dirty_since = 0.0
        self._last_prune = float("-inf")

        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise QueueLockedError(
                    f"queue directory {self.directory} is in use by another process"
                ) from None
            raise
        try:
            self._open()
        except BaseException:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            raise

    # ---- opening / recovery ------------------------------------------------------------------

    def _list_segments(self) -> list[int]:
        numbers = []
        for name in os.listdir(self.directory):
            number = _segment_number(name)
            if number is not None:
                numbers.append(number)
        return sorted(numbers)

    def _path(self, segment: int) -> Path:
        return self.directory / _segment_name(segment)

    def _read_commit(self) -> Optional[Position]:
        try:
            text = (self.directory / _COMMIT_FILE).read_text(encoding="ascii").split()
        except FileNotFoundError:
            return None
        try:
            return Position(int(text[0]), int(text[1]))
        except (IndexError, ValueError):
            log.error(
                "queue %s: unreadable commit file, starting at the oldest entry", self.directory
            )
            return None

    def _open(self) -> None:
        segments = self._list_segments()
        committed = self._read_commit()
        if not segments:
            first = committed.segment if committed is not None else 1
            segments = [first]
            self._path(first).touch()
            _fsync_dir(self.directory)
        if committed is None or committed.segment < segments[0]:
            committed = Position(segments[0], 0)
        # segments entirely before the committed one were acknowledged; a crash between the
        # commit and their deletion leaves them behind
        for number in segments:
            if number < committed.segment:
                self._path(number).unlink()
        segments = [n for n in segments if n >= committed.segment]
        if not segments or segments[0] != committed.segment:
            committed = Position(segments[0] if segments else committed.segment, 0)
            if not segments:
                segments = [committed.segment]
                self._path(committed.segment).touch()
        self._segments = segments
        self._sizes: dict[int, int] = {}
        depth = 0
        pending_bytes = 0
        for index, number in enumerate(segments):
            start = committed.offset if number == committed.segment else 0
            is_last = index == len(segments) - 1
            count, valid_end = self._scan(number, start, truncate=is_last)
            depth += count
            self._sizes[number] = valid_end
            pending_bytes += valid_end - start
        size_committed = self._sizes[committed.segment]
        if committed.offset > size_committed:
            committed = Position(committed.segment, size_committed)
        self._committed = committed
        self._depth = depth
        self._pending_bytes = pending_bytes
        self._write_segment = segments[-1]
        self._write_fd = os.open(self._path(self._write_segment), os.O_WRONLY | os.O_APPEND)
        self._read_fds: dict[int, int] = {}
        self._oldest: Optional[float] = None
        self._refresh_oldest()
        if depth:
            log.info("queue %s: %d entries waiting from a previous run", self.directory, depth)

    def _scan(self, segment: int, start: int, *, truncate: bool) -> tuple[int, int]:
        """Count valid records from `start`; returns (count, end of the valid data).

        A bad record in the last segment is a torn write: the file is cut there. In an older
        segment it is corruption: the rest of that segment is unreadable and is skipped.
        """
        path = self._path(segment)
        count = 0
        offset = start
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(start)
            while offset < size:
                record = self._read_record(fh)
                if record is None:
                    break
                count += 1
                offset += _HEADER.size + len(record[1])
        if offset < size:
            if truncate:
                log.warning(
                    "queue %s: cutting %d bytes of a torn record at the end of %s",
                    self.directory,
                    size - offset,
                    path.name,
                )
                with open(path, "r+b") as fh:
                    fh.truncate(offset)
                    os.fsync(fh.fileno())
            else:
                self.corrupt += 1
                log.error(
                    "queue %s: %s is corrupt after byte %d; %d bytes skipped",
                    self.directory,
                    path.name,
                    offset,
                    size - offset,
                )
        return count, offset

    @staticmethod
    def _read_record(fh: BinaryIO) -> Optional[tuple[float, bytes]]:
        header = fh.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None
        length, crc, timestamp = _HEADER.unpack(header)
        if length > MAX_RECORD_BYTES:
            return None
        payload = fh.read(length)
        if len(payload) < length or _crc(header[8:16], payload) != crc:
            return None
        return timestamp, payload

    # ---- producer ----------------------------------------------------------------------------

    def put(self, payload: bytes, timestamp: Optional[float] = None) -> None:
        self.put_many([payload], [timestamp])

    def put_many(
        self, payloads: list[bytes], timestamps: Optional[list[Optional[float]]] = None
    ) -> None:
        """Append records; durable against a process kill when this returns."""
        if not payloads:
            return
        if any(len(p) > MAX_RECORD_BYTES for p in payloads):
            raise ValueError(f"queue record larger than {MAX_RECORD_BYTES} bytes")
        now = self._clock()
        stamps = timestamps or [None] * len(payloads)
        blob = b"".join(
            encode_record(p, now if ts is None else ts) for p, ts in zip(payloads, stamps)
        )
        with self._lock:
            if self._closed:
                raise QueueClosedError("queue is closed")
            if self._sizes[self._write_segment] >= self.segment_bytes:
                self._rotate()
            written = 0
            while written < len(blob):
                written += os.write(self._write_fd, blob[written:])
            self._sizes[self._write_segment] += len(blob)
            self._pending_bytes += len(blob)
            was_empty = self._depth == 0
            self._depth += len(payloads)
            if was_empty:
                self._refresh_oldest()
            if not self._dirty:
                self._dirty = True
                self._dirty_since = now
            if self.fsync_interval <= 0:
                self._fsync_locked(now)
            if now - self._last_prune >= _PRUNE_EVERY_S:
                self._prune_locked(now)
            self._nonempty.notify_all()

    def _rotate(self) -> None:
        os.fsync(self._write_fd)
        os.close(self._write_fd)
        number = self._write_segment + 1
        self._write_fd = os.open(
            self._path(number), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600
        )
        _fsync_dir(self.directory)
        self._segments.append(number)
        self._sizes[number] = 0
        self._write_segment = number
        self._dirty = False

    def _fsync_locked(self, now: float) -> None:
        os.fsync(self._write_fd)
        self._dirty = False
        self._last_fsync = now

    def sync(self) -> None:
        """fsync whatever was appended (for a clean shutdown or a flush)."""
        with self._lock:
            if not self._closed and self._dirty:
                self._fsync_locked(self._clock())

    def sync_due(self) -> bool:
        """With `fsync_interval` > 0: fsync if entries appended `fsync_interval` s ago or
        earlier are still unacknowledged; True if it did. Called by the consumer, so that a
        producer never waits for the disk and entries consumed quickly (a healthy database)
        cost no fsync at all."""
        with self._lock:
            if self._closed or not self._dirty:
                return False
            if self._depth == 0:
                # all acknowledged: nothing left whose durability matters
                self._dirty = False
                return False
            now = self._clock()
            if now - self._dirty_since < self.fsync_interval:
                return False
            self._fsync_locked(now)
            return True

    # ---- consumer ----------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return self._depth

    @property
    def depth(self) -> int:
        return len(self)

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return self._pending_bytes

    def oldest_timestamp(self) -> Optional[float]:
        with self._lock:
            return self._oldest

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until something is queued (True) or the timeout/close (False)."""
        with self._nonempty:
            if self._depth == 0 and not self._closed:
                self._nonempty.wait(timeout)
            return self._depth > 0 and not self._closed

    def wake(self) -> None:
        """Wake a consumer blocked in `wait` (e.g. to let it notice a shutdown)."""
        with self._nonempty:
            self._nonempty.notify_all()

    def peek(self, max_items: int) -> list[Entry]:
        """Up to `max_items` unacknowledged entries, oldest first; repeated until `ack`ed."""
        with self._lock:
            if self._closed:
                raise QueueClosedError("queue is closed")
            return self._read_from(self._committed, max_items)

    def _read_fd(self, segment: int) -> int:
        fd = self._read_fds.get(segment)
        if fd is None:
            fd = os.open(self._path(segment), os.O_RDONLY)
            self._read_fds[segment] = fd
        return fd

    def _read_from(self, position: Position, max_items: int) -> list[Entry]:
        entries: list[Entry] = []
        segment, offset = position.segment, position.offset
        index = self._segments.index(segment)
        while len(entries) < max_items:
            size = self._sizes[segment]
            if offset >= size:
                if index + 1 >= len(self._segments):
                    break
                index += 1
                segment, offset = self._segments[index], 0
                continue
            fd = self._read_fd(segment)
            # read a chunk and parse as many whole records as it holds
            chunk = os.pread(fd, min(size - offset, max(65536, _HEADER.size)), offset)
            pos = 0
            while len(entries) < max_items and pos + _HEADER.size <= len(chunk):
                length, crc, timestamp = _HEADER.unpack_from(chunk, pos)
                end = pos + _HEADER.size + length
                if end > len(chunk):
                    if pos == 0:  # a single record larger than the chunk
                        chunk = os.pread(fd, _HEADER.size + length, offset)
                        end = _HEADER.size + length
                        if len(chunk) < end:
                            raise OSError(f"queue segment {segment} shrank under us")
                    else:
                        break
                payload = bytes(chunk[pos + _HEADER.size : end])
                if _crc(chunk[pos + 8 : pos + 16], payload) != crc:
                    raise OSError(f"queue segment {segment}: bad record at {offset + pos}")
                entries.append(Entry(Position(segment, offset + end), timestamp, payload))
                pos = end
            offset += pos
        return entries

    def ack(self, entry: Entry) -> None:
        """Acknowledge `entry` and everything before it."""
        with self._lock:
            if self._closed:
                raise QueueClosedError("queue is closed")
            if entry.end <= self._committed:
                return
            skipped = self._count_between(self._committed, entry.end)
            self._advance(entry.end, skipped)

    def _count_between(self, start: Position, end: Position) -> tuple[int, int]:
        """Entries and bytes from `start` up to `end` (an entry boundary)."""
        count = 0
        nbytes = 0
        position = start
        while position < end:
            batch = self._read_from(position, 4096)
            if not batch:
                break
            for item in batch:
                if item.end > end:
                    return count, nbytes
                count += 1
                nbytes += _HEADER.size + len(item.payload)
                position = item.end
        return count, nbytes

    def _advance(self, end: Position, skipped: tuple[int, int]) -> None:
        # an exhausted segment that is not the write segment is skipped right away, so the
        # commit never points at a file about to be deleted
        index = self._segments.index(end.segment)
        while end.offset >= self._sizes[end.segment] and index + 1 < len(self._segments):
            index += 1
            end = Position(self._segments[index], 0)
        self._write_commit(end)
        self._committed = end
        self._depth -= skipped[0]
        self._pending_bytes -= skipped[1]
        for number in [n for n in self._segments if n < end.segment]:
            fd = self._read_fds.pop(number, None)
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                self._path(number).unlink()
            self._segments.remove(number)
            del self._sizes[number]
        self._refresh_oldest()

    def _write_commit(self, position: Position) -> None:
        tmp = self.directory / (_COMMIT_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f"{position.segment} {position.offset}\n".encode("ascii"))
            if self.fsync_interval <= 0:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / _COMMIT_FILE)
        if self.fsync_interval <= 0:
            _fsync_dir(self.directory)

    def _refresh_oldest(self) -> None:
        if self._depth <= 0:
            self._oldest = None
            return
        first = self._read_from(self._committed, 1)
        self._oldest = first[0].timestamp if first else None

    # ---- bounds ------------------------------------------------------------------------------

    def prune(self, now: Optional[float] = None) -> int:
        """Drop entries older than `max_age_s` (and the oldest beyond `max_bytes`)."""
        with self._lock:
            if self._closed:
                return 0
            return self._prune_locked(self._clock() if now is None else now)

    def _prune_locked(self, now: float) -> int:
        self._last_prune = now
        if self._depth == 0:
            return 0
        cutoff = None if self.max_age_s is None else now - self.max_age_s
        too_old = cutoff is not None and self._oldest is not None and self._oldest < cutoff
        too_big = self.max_bytes is not None and self._pending_bytes > self.max_bytes
        if not (too_old or too_big):
            return 0
        dropped = 0
        dropped_bytes = 0
        last: Optional[Entry] = None
        position = self._committed
        excess = self._pending_bytes - self.max_bytes if self.max_bytes is not None else 0
        done = False
        while not done:
            batch = self._read_from(position, 4096)
            if not batch:
                break
            for item in batch:
                old = cutoff is not None and item.timestamp < cutoff
                big = dropped_bytes < excess
                if not (old or big):
                    done = True
                    break
                dropped += 1
                dropped_bytes += _HEADER.size + len(item.payload)
                last = item
                position = item.end
        if last is None:
            return 0
        self._advance(last.end, (dropped, dropped_bytes))
        self.dropped += dropped
        log.warning(
            "queue %s: dropped %d oldest entries beyond the bound (max age %s s, max bytes %s)",
            self.directory,
            dropped,
            self.max_age_s,
            self.max_bytes,
        )
        return dropped

    # ---- shutdown ----------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._dirty and self._depth > 0:
                    os.fsync(self._write_fd)
            finally:
                os.close(self._write_fd)
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
