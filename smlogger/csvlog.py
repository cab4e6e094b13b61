"""Rolling CSV files: one file per meter and period (hour, day) or size step.

Layout: `<dir>/<meter>/<meter>_<period>[_<n>].csv`, where `<meter>` is the meter id, or
`<name>_<meter_id>` for a named meter (smlogger.names) -- the id stays so renaming a meter
never mixes two meters' files; where period is `2024-05-01` (daily),
`2024-05-01T13` (hourly) or `2024-05-01T130502` (size: start of the file). Rows carry ISO-8601
UTC times; energies in kWh, power in W, voltage V, current A, frequency Hz.

Every row is written with a single write() on an unbuffered file, so a crash leaves at most the
last line partial; opening a file again (the next start) cuts such a line off. Finished files are
optionally gzip'd (atomically, via a temporary file) and pruned after `keep_days`. Open files are
fsync'ed every `sync_interval` seconds (the power-cut window; the kernel writes them back within
about 30 s anyway, so a shorter interval costs SD-card writes, a longer one saves nothing).

A full disk (or an I/O error) is a state, not a loss: the partial row is truncated away, the row
and every later one wait in memory (up to `max_pending_bytes`, about 30,000 rows with the
default), `status()` says "disk full on <path>", the log says it once, and each later write or
flush retries. Beyond the bound `write` raises `CsvDiskFullError` without taking the reading, so
the caller keeps it and retries (back-pressure) instead of anything being dropped.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import logging
import os
import re
import shutil
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

from smlogger.diskqueue import DiskQueue
from smlogger.reading import ENERGY_FIELDS, Reading, pick_fields
from smlogger.timefmt import iso

log = logging.getLogger(__name__)

ROTATIONS = ("hourly", "daily", "size")
TIMEZONES = ("utc", "local")
DEFAULT_SYNC_INTERVAL_S = 30.0
DEFAULT_MAX_PENDING_BYTES = 4 * 1024 * 1024
# A finished day's file, compressed once: level 6 (zlib's default) instead of gzip.open's 9.
# On a day of 1 s rows (86,400, 8.1 MB household / 12.5 MB with U/I/f) level 6 took 94 / 245
# ms against 9's 386 / 679 ms for a file 4.4 / 4.6 % larger (.gz of 994 KB / 1.86 MB): the
# last few per cent of size cost three to four times the CPU, on a Pi too, and the
# compression runs in the CSV sink's thread, holding up the rows behind it.
GZIP_LEVEL = 6
_RAM_BATCH_BYTES = 256 * 1024  # a replay writes in chunks of this size, not once a minute
# `write_many` with at least this many rows (a replay at full speed) appends them to the files
# at once, one write per file, instead of a RAM journal record per row
_BULK_MIN = 64
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
INSTANT_FIELDS: tuple[str, ...] = tuple(f for f in Reading.FIELDS if f not in ENERGY_FIELDS)

_NAME = re.compile(
    r"^(?P<meter>.+)_(?P<date>\d{4}-\d{2}-\d{2})(?:T(?P<hour>\d{2})(?P<rest>\d{4})?)?"
    r"(?:_(?P<n>\d+))?\.csv(?P<gz>\.gz)?$"
)
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def columns(aggregated: bool) -> list[str]:
    """The CSV header's column names (with the *_min/*_max columns when rows aggregate)."""
    cols = ["time", "meter_id", *Reading.FIELDS]
    if aggregated:
        cols.append("samples")
        for name in INSTANT_FIELDS:
            cols += [f"{name}_min", f"{name}_max"]
    return cols


def format_number(value: Optional[float], decimals: int) -> str:
    """A number as CSV text with at most `decimals` decimals and no float noise ("" for None)."""
    if value is None:
        return ""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


_QUOTED = re.compile('[,"\n\r]')


def _escape(text: str) -> str:
    if _QUOTED.search(text) is not None:
        return '"' + text.replace('"', '""') + '"'
    return text


_DECIMALS = tuple(7 if name in ENERGY_FIELDS else 3 for name in Reading.FIELDS)
_MEMO_LIMIT = 4096  # numbers remembered per kind of column


class RowFormat:
    """Readings as CSV lines (with their newline), in the order of `columns`.

    A meter's registers repeat their values from row to row (energies for minutes, powers
    within a few hundred watts, always the same meter id), so the text of each number is
    remembered per kind of column: a replay writes millions of cells. The text is always
    `format_number`'s.
    """

    def __init__(self, aggregated: bool) -> None:
        self.aggregated = aggregated
        self._memos: dict[int, dict[float, str]] = {7: {}, 3: {}}
        self._cell_memos = tuple(self._memos[d] for d in _DECIMALS)
        self._meters: dict[str, str] = {}

    def _number(self, value: float, decimals: int) -> str:
        memo = self._memos[decimals]
        text = memo.get(value)
        if text is None:
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            # (equal numbers give equal text: -0.0 and 0.0 both give "0", 1 and 1.0 "1")
            text = memo[value] = format_number(value, decimals)
        return text

    def row(self, reading: Reading) -> str:
        """One reading as a CSV line."""
        meter = self._meters.get(reading.meter_id)
        if meter is None:
            if len(self._meters) >= _MEMO_LIMIT:
                self._meters.clear()
            meter = self._meters[reading.meter_id] = _escape(reading.meter_id)
        cells = [iso(reading.time), meter]
        for value, memo, decimals in zip(
            pick_fields(reading.__dict__), self._cell_memos, _DECIMALS
        ):
            if value is None:
                cells.append("")
            else:
                text = memo.get(value)
                cells.append(text if text is not None else self._number(value, decimals))
        if self.aggregated:
            cells.append(str(reading.samples))
            for name in INSTANT_FIELDS:
                low_high = reading.minmax.get(name)
                if low_high is None:
                    cells += ["", ""]
                else:
                    cells += [self._number(low_high[0], 3), self._number(low_high[1], 3)]
        return ",".join(cells) + "\n"


def repair(path: Path) -> int:
    """Cut a partial last line (and zero fill from a power loss); returns bytes removed."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        tail_len = min(size, 1 << 16)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        if tail.endswith(b"\n"):
            return 0
        stripped = tail.rstrip(b"\x00")
        cut = stripped.rfind(b"\n")
        if cut == -1 and tail_len < size:
            # a line longer than 64 KiB is not a CSV row we wrote: search the whole file
            fh.seek(0)
            whole = fh.read().rstrip(b"\x00")
            keep = whole.rfind(b"\n") + 1
        else:
            keep = size - tail_len + cut + 1
        fh.truncate(keep)
        os.fsync(fh.fileno())
    return size - keep


class CsvDiskFullError(OSError):
    """The disk refuses rows and the in-memory reserve is full: the reading was not taken."""


def _last_time(path: Path, size: int) -> bytes:
    """The time cell of a file's last row (b"" for a file with only its header); a finished
    file (`.csv.gz`) is read through."""
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as packed:
            lines = [line.rstrip(b"\r\n") for line in deque(packed, maxlen=1)]
    else:
        with open(path, "rb") as fh:
            fh.seek(max(0, size - 4096))
            lines = fh.read().splitlines()
    last = lines[-1] if lines else b""
    return last[:24] if last[:1].isdigit() else b""


@dataclass
class _Open:
    path: Path
    key: str
    fd: int
    size: int
    synced: float
    last_time: bytes = b""  # time cell of the file's last row when it was opened


class CsvLog:
    """Sink writing rolling CSV files (see module doc). Used from one thread at a time."""

    name = "csv"

    def __init__(
        self,
        directory: Path,
        *,
        rotate: str = "daily",
        max_size: int = 50 * 1024 * 1024,
        compress: bool = True,
        keep_days: float = 0.0,
        tz: str = "utc",
        aggregated: bool = False,
        clock: Callable[[], datetime] | None = None,
        names: Callable[[str], Optional[str]] | None = None,
        sync_interval: float = DEFAULT_SYNC_INTERVAL_S,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        ram_dir: Optional[Path] = None,
        write_interval: float = 0.0,
    ) -> None:
        if rotate not in ROTATIONS:
            raise ValueError(f"rotate must be one of {', '.join(ROTATIONS)}, not {rotate!r}")
        if tz not in TIMEZONES:
            raise ValueError(f"timezone must be one of {', '.join(TIMEZONES)}, not {tz!r}")
        self.directory = Path(directory)
        self.rotate = rotate
        self.max_size = max(1024, int(max_size))
        self.compress = compress
        self.keep_days = keep_days
        self.tz = tz
        self.aggregated = aggregated
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._names = names or (lambda _meter_id: None)
        self._header = ",".join(columns(aggregated)) + "\n"
        self._format = RowFormat(aggregated)
        self._files: dict[str, _Open] = {}
        self._lock = threading.Lock()
        self.written = 0
        self.repaired = 0
        self.last_error: Optional[str] = None
        self.sync_interval = sync_interval
        # With the RAM journal, rows reach the file every write_interval seconds (the
        # database's storage.commit_interval; at least sync_interval), in one burst: each
        # burst re-dirties the file's partly filled last page, so 144 bursts a day instead of
        # 1,440 save ~5 MB/day of SD-card writes at 1 frame/s (rows are ~96 bytes, 8.3
        # MB/day whatever the rhythm). A power cut takes the rows of the last interval from
        # RAM; the database keeps them (its disk journal is fsync'ed every sync_interval) and
        # the next start writes them here (service.catch_up_csv).
        self.write_interval = max(write_interval, sync_interval)
        self.max_pending_bytes = max_pending_bytes
        # rows the disk refused, in order, waiting for space: (meter, time, encoded row)
        self._pending: list[tuple[str, datetime, bytes]] = []
        # The RAM journal (a tmpfs): rows wait there, safe against kill -9, and reach the file
        # every write_interval seconds (see above), so the SD card sees a burst of pages per
        # interval instead of a page per row. Rows a killed process left there are written
        # at the next start (those it had written already are recognised by their time and
        # skipped).
        self._ram: Optional[DiskQueue] = None
        if ram_dir is not None and sync_interval > 0:
            self._ram = DiskQueue(
                Path(ram_dir), max_age_s=None, sync_interval=3600.0, persist_interval=0.0
            )
        self._recovering = self._ram is not None and self._ram.depth > 0
        self._pending_bytes = 0
        self._periods: dict[int, str] = {}  # quarter hour -> period_key (see _period_of)
        self._state: Optional[str] = None
        self._state_since = 0.0
        self.directory.mkdir(parents=True, exist_ok=True)
        self.housekeeping()
        if self._recovering:
            self._drain_ram()  # what a killed process left: no reason to wait

    # ---- naming --------------------------------------------------------------------------
    def _local(self, stamp: datetime) -> datetime:
        return stamp.astimezone() if self.tz == "local" else stamp.astimezone(timezone.utc)

    def period_key(self, stamp: datetime) -> str:
        """The rotation period `stamp` falls in (a day or an hour in the CSV time zone)."""
        local = self._local(stamp)
        if self.rotate == "hourly":
            return local.strftime("%Y-%m-%dT%H")
        return local.strftime("%Y-%m-%d")

    def meter_label(self, meter_id: str) -> str:
        """The meter's part of folder and file names: `<name>_<id>` or `<id>`, file-safe."""
        name = self._names(meter_id)
        return _SAFE.sub("_", f"{name}_{meter_id}" if name else meter_id)

    def meter_dir(self, meter_id: str) -> Path:
        """The folder of the meter's CSV files."""
        return self.directory / self.meter_label(meter_id)

    def _candidate(self, meter_id: str, stamp: datetime) -> tuple[str, Path]:
        safe = self.meter_label(meter_id)
        if self.rotate == "size":
            key = self._local(stamp).strftime("%Y-%m-%dT%H%M%S")
        else:
            key = self.period_key(stamp)
        folder = self.meter_dir(meter_id)
        n = 0
        while True:
            suffix = f"_{n}" if n else ""
            path = folder / f"{safe}_{key}{suffix}.csv"
            gz = path.with_name(path.name + ".gz")
            if gz.exists() or (path.exists() and not self._reusable(path)):
                n += 1
                continue
            return key, path

    def _reusable(self, path: Path) -> bool:
        """An existing file of the same period can be continued if its header matches."""
        if self.rotate == "size" and path.stat().st_size >= self.max_size:
            return False
        with open(path, "rb") as fh:
            first = fh.readline()
        return first in (b"", self._header.encode()) or not first.endswith(b"\n")

    # ---- files ---------------------------------------------------------------------------
    def _open(self, meter_id: str, stamp: datetime) -> _Open:
        # while the disk refuses writes, reopening is part of each retry: not news for the log
        report = log.debug if self._state is not None else log.info
        key, path = self._candidate(meter_id, stamp)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            removed = repair(path)
            if removed:
                self.repaired += 1
                repaired = log.debug if self._state is not None else log.warning
                repaired("csv: %s: removed a partial last line (%d bytes)", path, removed)
            with open(path, "rb") as fh:
                first = fh.readline()
            if first != self._header.encode():
                # empty, or only a partial header survived
                with open(path, "wb") as fh:
                    fh.truncate(0)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(fd).st_size
        if size == 0:
            try:
                header = self._header.encode()
                if os.write(fd, header) != len(header):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                # no half header either: the next attempt starts the file afresh
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                os.close(fd)
                raise
            size = len(self._header)
        report("csv: writing %s", path)
        if self.rotate == "size":
            key = self.period_key(stamp)  # rotation by size only; key kept for display
        return _Open(path, key, fd, size, time.monotonic(), _last_time(path, size))

    def _close_file(self, handle: _Open, *, finished: bool) -> None:
        try:
            os.fsync(handle.fd)
        except OSError as exc:
            log.debug("fsync %s: %s", handle.path, exc)
        os.close(handle.fd)
        if finished and self.compress:
            self._compress(handle.path)

    def _compress(self, path: Path) -> None:
        target = path.with_name(path.name + ".gz")
        tmp = path.with_name(path.name + ".gz.tmp")
        try:
            if repair(path):
                self.repaired += 1
            with open(path, "rb") as src, gzip.open(tmp, "wb", compresslevel=GZIP_LEVEL) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            path.unlink()
            log.info("csv: compressed %s", target)
        except OSError as exc:
            self.last_error = f"compress {path}: {exc}"
            log.error("csv: cannot compress %s: %s", path, exc)
            tmp.unlink(missing_ok=True)

    def _rotate_needed(self, handle: _Open, stamp: datetime) -> bool:
        if self.rotate == "size":
            return handle.size >= self.max_size
        return handle.key != self.period_key(stamp)

    # ---- housekeeping --------------------------------------------------------------------
    def _files_on_disk(self) -> Iterable[tuple[Path, re.Match[str]]]:
        for path in self.directory.glob("*/*"):
            match = _NAME.match(path.name)
            if match is not None and path.is_file():
                yield path, match

    def _period_start(self, match: re.Match[str]) -> datetime:
        text = match["date"] + "T" + (match["hour"] or "00") + (match["rest"] or "0000")
        naive = datetime.strptime(text, "%Y-%m-%dT%H%M%S")
        if self.tz == "local":
            return naive.astimezone()
        return naive.replace(tzinfo=timezone.utc)

    def _period_end(self, path: Path, match: re.Match[str]) -> datetime:
        """When the file's last row can have been written: pruning removes whole periods."""
        if match["rest"] is not None:  # size rotation: the file ends with its last write
            return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        length = timedelta(hours=1) if match["hour"] is not None else timedelta(days=1)
        return self._period_start(match) + length

    def housekeeping(self) -> None:
        """Repair, compress finished and prune expired files (start-up and each rotation)."""
        for stale in self.directory.glob("*/*.gz.tmp"):
            stale.unlink(missing_ok=True)
        now = self._clock()
        open_paths = {h.path for h in self._files.values()}
        current = {self.period_key(now)}
        for path, match in list(self._files_on_disk()):
            if path in open_paths:
                continue
            if self.keep_days > 0 and self._period_end(path, match) < now - timedelta(
                days=self.keep_days
            ):
                path.unlink(missing_ok=True)
                log.info("csv: pruned %s", path)
                continue
            if match["gz"]:
                continue
            removed = repair(path)
            if removed:
                self.repaired += 1
                log.warning("csv: %s: removed a partial last line (%d bytes)", path, removed)
            if not self.compress:
                continue
            key = match["date"] + (f"T{match['hour']}" if self.rotate == "hourly" else "")
            # files of the running period are continued, not compressed
            if self.rotate == "size" or key not in current:
                self._compress(path)

    def drain(self) -> None:
        """Write what waits in the RAM journal now, whatever the interval."""
        with self._lock:
            if self._ram is not None and self._ram.depth:
                self._drain_ram()

    def last_row_time(self, meter_id: str) -> Optional[datetime]:
        """The time of the newest row in the meter's files (None: no row). The open period's
        files are plain; when they hold no row yet (a start in a new period: the last one
        was compressed at opening), the newest compressed one counts. Files with a partial
        last line are repaired when the log opens (`housekeeping`)."""
        with self._lock:
            folder = self.meter_dir(meter_id)
            newest = self._newest_row(folder.glob("*.csv"))
            if newest is None:
                # the newest period by its name (compressing gives a file a new mtime)
                named = ((p, _NAME.match(p.name)) for p in folder.glob("*.csv.gz"))
                packed = [(self._period_start(m), int(m["n"] or 0), p) for p, m in named if m]
                newest = self._newest_row([max(packed)[2]] if packed else [])
        return newest

    @staticmethod
    def _newest_row(paths: Iterable[Path]) -> Optional[datetime]:
        newest: Optional[datetime] = None
        for path in paths:
            try:
                cell = _last_time(path, path.stat().st_size).decode()
                moment = datetime.fromisoformat(cell.replace("Z", "+00:00"))
            except (OSError, ValueError, EOFError, gzip.BadGzipFile):
                continue  # an empty file, a foreign or damaged one: nothing to go by
            if newest is None or moment > newest:
                newest = moment
        return newest

    # ---- Sink protocol -------------------------------------------------------------------
    def write(self, reading: Reading) -> None:
        """Append the reading's row: through the RAM journal when there is one (written to
        the file every `write_interval` s), else at once (held in memory while the disk is
        full)."""
        row = self._format.row(reading).encode()
        with self._lock:
            if self._ram is not None:
                head = struct.pack("<dH", reading.time.timestamp(), len(reading.meter_id.encode()))
                self._ram.put(head + reading.meter_id.encode() + row)
                if self._ram_due():
                    self._drain_ram()
                return
            if self._pending:
                self._retry_pending()
            if self._pending:
                if self._pending_bytes + len(row) > self.max_pending_bytes:
                    raise CsvDiskFullError(
                        errno.ENOSPC,
                        f"{self._state}; {len(self._pending)} rows already wait in memory",
                    )
                self._hold(reading.meter_id, reading.time, row)
                return
            if not self._append(reading.meter_id, reading.time, row):
                self._hold(reading.meter_id, reading.time, row)

    def write_many(self, readings: Sequence[Reading]) -> int:
        """Append a batch of rows; returns how many were taken (a leading part, all of them
        unless the disk refuses).

        A large batch (a replay at full speed) goes to the files at once, one write per file
        and period: that many rows fill the pages the RAM journal would write a moment later.
        Small batches, size rotation and rows still waiting (RAM journal, a full disk, a
        recovery) go through `write`, one by one.
        """
        if len(readings) < _BULK_MIN or self.rotate == "size":
            return self._write_each(readings)
        with self._lock:
            if self._ram is not None and self._ram.depth:
                self._drain_ram()  # older rows first
            if self._pending:
                self._retry_pending()
            waiting = (
                self._pending or self._recovering or (self._ram is not None and self._ram.depth)
            )
            if not waiting:
                return self._append_runs(readings)
        return self._write_each(readings)

    def _write_each(self, readings: Sequence[Reading]) -> int:
        for index, reading in enumerate(readings):
            try:
                self.write(reading)
            except CsvDiskFullError:
                if index == 0:
                    raise
                return index
        return len(readings)

    def _append_runs(self, readings: Sequence[Reading]) -> int:
        """Append runs of rows of the same meter and period with one write each; how many
        rows are in the files (stops at the first run the disk refuses)."""
        format_row = self._format.row
        taken = 0
        rows: list[bytes] = []
        meter_id = ""
        first = _EPOCH
        key = ""
        for reading in readings:
            period = self._period_of(reading.time)
            if reading.meter_id != meter_id or period != key:
                if rows:
                    if not self._append(meter_id, first, b"".join(rows), count=len(rows)):
                        return taken
                    taken += len(rows)
                    rows = []
                meter_id, first, key = reading.meter_id, reading.time, period
            rows.append(format_row(reading).encode())
        if rows and self._append(meter_id, first, b"".join(rows), count=len(rows)):
            taken += len(rows)
        return taken

    def _period_of(self, stamp: datetime) -> str:
        """`period_key`, remembered per quarter hour (every time zone offset is a multiple
        of 15 minutes): strftime for every row of a replay costs more than the row."""
        quarter = int(stamp.timestamp() // 900)
        key = self._periods.get(quarter)
        if key is None:
            if len(self._periods) > 4096:
                self._periods.clear()
            key = self._periods[quarter] = self.period_key(stamp)
        return key

    def _ram_due(self) -> bool:
        ram = self._ram
        if ram is None or not ram.depth:
            return False
        if self._state is not None or ram.pending_bytes >= _RAM_BATCH_BYTES:
            return True
        oldest = ram.oldest_timestamp()
        return oldest is None or time.time() - oldest >= self.write_interval

    def _drain_ram(self) -> None:
        """Append what waits in the RAM journal to the files, oldest first; stops (and keeps
        the rest) when the disk refuses."""
        ram = self._ram
        assert ram is not None
        while ram.depth:
            entries = ram.peek(4096)
            last = None
            for entry in entries:
                payload = entry.payload
                stamp, size = struct.unpack_from("<dH", payload)
                meter_id = payload[10 : 10 + size].decode()
                row = payload[10 + size :]
                moment = datetime.fromtimestamp(stamp, timezone.utc)
                if not self._append(meter_id, moment, row):
                    break
                last = entry
            if last is not None:
                ram.ack(last)
                ram.persist()
            if last is not entries[-1]:
                return
        self._recovering = False

    def _hold(self, meter_id: str, stamp: datetime, row: bytes) -> None:
        self._pending.append((meter_id, stamp, row))
        self._pending_bytes += len(row)

    def _retry_pending(self) -> None:
        done = 0
        for meter_id, stamp, row in self._pending:
            if not self._append(meter_id, stamp, row):
                break
            done += 1
            self._pending_bytes -= len(row)
        del self._pending[:done]
        if done and not self._pending:
            log.info("csv: %d rows held in memory are written now", done)

    def _append(self, meter_id: str, stamp: datetime, row: bytes, count: int = 1) -> bool:
        """Write one row (or `count` rows of one period); False (state set, nothing
        half-written left) if the disk refused."""
        handle = self._files.get(meter_id)
        try:
            if handle is not None and self._rotate_needed(handle, stamp):
                del self._files[meter_id]
                self._close_file(handle, finished=True)
                handle = None
                self.housekeeping()
            if handle is None:
                handle = self._files[meter_id] = self._open(meter_id, stamp)
            if self._recovering and handle.last_time and row[:24] <= handle.last_time:
                # left in the RAM journal by a killed process after it reached the file
                return True
            try:
                written = 0
                while written < len(row):
                    written += os.write(handle.fd, row[written:])
            except OSError:
                self._roll_back(meter_id, handle)
                raise
        except OSError as exc:
            self._failed(exc, handle.path if handle is not None else self.directory)
            return False
        handle.size += len(row)
        self.written += count
        if self._state is not None:
            log.info(
                "csv: writing again after %.0f s (%s)",
                time.monotonic() - self._state_since,
                self._state,
            )
            self._state = None
        self.last_error = None
        return True

    def _roll_back(self, meter_id: str, handle: _Open) -> None:
        """Cut a partial row: the file ends with the last complete line again."""
        try:
            os.ftruncate(handle.fd, handle.size)
        except OSError:
            # reopening repairs the file (cuts the partial line) before the next row
            del self._files[meter_id]
            os.close(handle.fd)

    def _failed(self, exc: OSError, path: Path) -> None:
        if exc.errno in _DISK_FULL:
            state = f"disk full on {path.parent if path.suffix else path}"
        else:
            state = f"cannot write {path}: {exc.strerror or exc}"
        self.last_error = f"{path}: {exc}"
        if state != self._state:
            log.error(
                "csv: %s; rows wait in memory (up to %d KiB) and are written when it clears",
                state,
                self.max_pending_bytes // 1024,
            )
            self._state = state
            self._state_since = time.monotonic()

    def flush(self) -> None:
        """Write rows whose time has come (or retry the disk); fsync files written
        `sync_interval` s ago or earlier."""
        with self._lock:
            if self._pending:
                self._retry_pending()
            if self._ram_due():
                self._drain_ram()
            now = time.monotonic()
            for handle in self._files.values():
                if now - handle.synced >= self.sync_interval:
                    try:
                        os.fsync(handle.fd)
                    except OSError as exc:
                        self._failed(exc, handle.path)
                        continue
                    handle.synced = now

    def close(self) -> None:
        """Write what memory holds if the disk takes it, fsync and close the files."""
        with self._lock:
            if self._pending:
                self._retry_pending()
            if self._pending:
                log.error(
                    "csv: %s; %d rows held in memory could not be written",
                    self._state,
                    len(self._pending),
                )
            if self._ram is not None:
                self._drain_ram()
                if self._ram.depth:
                    log.error(
                        "csv: %s; %d rows stay in %s for the next start",
                        self._state,
                        self._ram.depth,
                        self._ram.directory,
                    )
                self._ram.close()
            for handle in self._files.values():
                self._close_file(handle, finished=False)
            self._files.clear()

    def status(self) -> dict[str, Any]:
        """Counters and state for /api/status (rows written, held, repaired, disk state)."""
        return {
            "state": self._state or "ok",
            # a full disk is a state here, not an exception the sink worker would count:
            # /healthz learns of it from this flag
            "failing": self._state is not None,
            "queue_depth": len(self._pending) + (self._ram.depth if self._ram else 0),
            "pending_bytes": self._pending_bytes,
            "written": self.written,
            "repaired": self.repaired,
            "last_error": self.last_error,
            "directory": str(self.directory),
            "files": sorted(str(h.path) for h in list(self._files.values())),
        }
