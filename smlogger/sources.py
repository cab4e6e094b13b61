"""Byte sources: serial port, TCP, replay of recordings and the simulated meter.

A source is iterated by one pipeline thread. It yields `Chunk`s: received bytes with their receive
time, and empty chunks while idle so the caller can run its watchdog. Live sources (serial, tcp)
never end on their own: losing the device is a state change (`waiting`), followed by reopening
with exponential backoff until stopped.
"""

from __future__ import annotations

import fcntl
import gzip
import io
import itertools
import logging
import socket
import termios
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from smlogger.capture import CAPTURE_MAGIC, parse_line
from smlogger.logutil import StateLog
from smlogger.states import LinkState

if TYPE_CHECKING:
    # the simulator is loaded by whoever builds a SimulatedSource (service._source)
    from smlogger.simulate import CounterFile, SimulatedMeter

log = logging.getLogger(__name__)

START_SEQUENCE = b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01"
READ_TIMEOUT_S = 0.5
READ_SIZE = 4096
RECONNECT_INITIAL_S = 1.0  # first reconnect delay; the cap is the meter's reconnect_max

StateCallback = Callable[[LinkState, str], None]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (the default clock of sources)."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Chunk:
    """Bytes read in one go, with the time they arrived.

    A replay at full speed hands out many pieces (frames or capture lines) joined in one
    chunk: `marks` then holds (position in `data`, time) of each piece, and a frame takes the
    time of the piece it starts in.
    """

    data: bytes
    time: datetime  # receive time (UTC); for replays the recorded or synthesised time
    marks: Optional[tuple[tuple[int, datetime], ...]] = None

    def pieces(self) -> list[Chunk]:
        """The chunk as the pieces it joins (itself when it joins none)."""
        if not self.marks:
            return [self]
        ends = [position for position, _ in self.marks[1:]] + [len(self.data)]
        return [
            Chunk(self.data[position:end], stamp)
            for (position, stamp), end in zip(self.marks, ends)
        ]


class Backoff:
    """Reconnect delays initial, 2x, 4x, ... capped at `maximum` seconds."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = max(0.01, initial)
        self.maximum = max(self.initial, maximum)
        self._next = self.initial

    def next(self) -> float:
        """The delay to wait now; doubles the next one up to the maximum."""
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return delay

    def reset(self) -> None:
        """Start again from the initial delay (after a success)."""
        self._next = self.initial


class Source(ABC):
    """Common state reporting; subclasses implement `chunks`."""

    #: False for sources that end (replay); the pipeline then finishes when all have ended.
    endless = True
    #: whether a silent source should be reopened by the no-data watchdog
    watchdog = True
    #: True for a source that hands out data as fast as it can be read (a replay at --speed
    #: max): its readings go to the sinks in batches
    bulk = False

    def __init__(self, name: str, target: str | None = None) -> None:
        self.name = name
        #: what the source opens, for people: "/dev/ttyUSB0", "192.168.1.5:8899"
        self.target = target or name
        #: why the last open failed or the link was lost (None while open): for the diagnosis
        self.open_error: Optional[BaseException] = None
        self.on_state: StateCallback = lambda state, detail: None
        self._reset = threading.Event()

    def request_reset(self) -> None:
        """Close and reopen the connection at the next opportunity (watchdog recovery)."""
        self._reset.set()

    @abstractmethod
    def chunks(self, stop: threading.Event) -> Iterator[Chunk]:
        """Yield chunks until `stop` is set or the source ends (replays)."""

    def describe(self) -> str:
        """A short human description for logs and /api/status."""
        return self.name


class _StreamSource(Source):
    """Reconnect loop shared by serial and TCP."""

    def __init__(
        self,
        name: str,
        *,
        reconnect_initial: float,
        reconnect_max: float,
        clock: Clock = utc_now,
        target: str | None = None,
    ) -> None:
        super().__init__(name, target)
        self._backoff = Backoff(reconnect_initial, reconnect_max)
        self._clock = clock

    @abstractmethod
    def _open(self) -> object: ...

    @abstractmethod
    def _read(self, handle: object) -> bytes:
        """Bytes available within about READ_TIMEOUT_S; b"" when idle. Raises OSError when lost."""

    @abstractmethod
    def _close(self, handle: object) -> None: ...

    def chunks(self, stop: threading.Event) -> Iterator[Chunk]:
        """Open, read and reopen the stream until `stop`; report state changes via `on_state`."""
        # one line when the device goes away or cannot be opened, one when it is back; a
        # device that keeps flapping is summarised once a minute instead
        trouble = StateLog(log, self.name)
        opened_before = False
        last_error = ""
        while not stop.is_set():
            try:
                handle = self._open()
            except (OSError, ValueError) as exc:
                self.open_error = exc
                delay = self._backoff.next()
                error = _describe_error(exc)
                trouble.failed(f"cannot open: {error} (retrying with backoff)")
                last_error = error
                self.on_state("waiting", f"{error}; retry in {delay:g} s")
                yield Chunk(b"", self._clock())
                stop.wait(delay)
                continue
            if not trouble.ok("open again"):
                # a reopen after a watchdog reset is routine: logged once, then at DEBUG
                (log.debug if opened_before else log.info)("%s: open", self.name)
            opened_before = True
            last_error = ""
            self.open_error = None
            self._reset.clear()
            self.on_state("connected", "open")
            try:
                while not stop.is_set() and not self._reset.is_set():
                    data = self._read(handle)
                    if data:
                        self._backoff.reset()
                    yield Chunk(data, self._clock())
            except (OSError, ValueError) as exc:
                self.open_error = exc
                error = _describe_error(exc)
                trouble.failed(f"connection lost: {error}")
                last_error = error
                self.on_state("waiting", f"lost: {error}")
            finally:
                self._close(handle)
            if self._reset.is_set():
                log.debug("%s: reopening (watchdog)", self.name)
            elif last_error and not stop.is_set():
                # a device that vanished usually needs a moment before it is back
                delay = self._backoff.next()
                self.on_state("waiting", f"lost: {last_error}; retry in {delay:g} s")
                stop.wait(delay)


def _describe_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


@dataclass(frozen=True)
class SerialSettings:
    """How to open the serial port; every value comes from the meter's configuration."""

    port: str
    baudrate: int
    bytesize: int
    parity: str
    stopbits: float
    xonxoff: bool
    rtscts: bool


class SerialSource(_StreamSource):
    """A serial port (USB IR head): reopened with backoff when it fails or goes away."""

    def __init__(
        self,
        settings: SerialSettings,
        *,
        reconnect_max: float,
        reconnect_initial: float = RECONNECT_INITIAL_S,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(
            f"serial {settings.port}",
            reconnect_initial=reconnect_initial,
            reconnect_max=reconnect_max,
            clock=clock,
            target=settings.port,
        )
        self.settings = settings

    def _open(self) -> object:
        import serial  # deferred: only needed for serial meters

        s = self.settings
        try:
            port = serial.Serial(
                port=s.port,
                baudrate=s.baudrate,
                bytesize=s.bytesize,
                parity=s.parity,
                stopbits=s.stopbits,
                xonxoff=s.xonxoff,
                rtscts=s.rtscts,
                timeout=READ_TIMEOUT_S,
                exclusive=True,
            )
        except serial.SerialException as exc:
            error = OSError(_serial_error(exc))
            error.errno = exc.errno  # the diagnosis tells a missing port from a busy one by it
            raise error from exc
        try:
            # TIOCEXCL: other programs (not root) now get EBUSY instead of stealing bytes
            fcntl.ioctl(port.fileno(), termios.TIOCEXCL)
        except (OSError, AttributeError) as exc:
            log.debug("%s: TIOCEXCL not set: %s", self.name, exc)
        return port

    def _read(self, handle: object) -> bytes:
        import serial

        assert isinstance(handle, serial.Serial)
        try:
            data = bytes(handle.read(1))
            if data:
                waiting = handle.in_waiting
                if waiting:
                    data += bytes(handle.read(waiting))
        except serial.SerialException as exc:
            raise OSError(_serial_error(exc)) from exc
        if data or Path(self.settings.port).exists():
            return data
        # some USB-serial drivers keep a vanished device readable but silent
        raise OSError(f"{self.settings.port} disappeared")

    def _close(self, handle: object) -> None:
        import serial

        assert isinstance(handle, serial.Serial)
        try:
            handle.close()
        except (OSError, serial.SerialException) as exc:
            log.debug("%s: close failed: %s", self.name, exc)


def _serial_error(exc: BaseException) -> str:
    text = _describe_error(exc)
    if "Permission denied" in text:
        text += " (is the user in the 'dialout' group?)"
    return text


class TcpSource(_StreamSource):
    """Network IR heads and ser2net: a raw TCP byte stream."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        reconnect_max: float,
        connect_timeout: float = 5.0,
        reconnect_initial: float = RECONNECT_INITIAL_S,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(
            f"tcp {host}:{port}",
            reconnect_initial=reconnect_initial,
            reconnect_max=reconnect_max,
            clock=clock,
            target=f"{host}:{port}",
        )
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout

    def _open(self) -> object:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        sock.settimeout(READ_TIMEOUT_S)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return sock

    def _read(self, handle: object) -> bytes:
        assert isinstance(handle, socket.socket)
        try:
            data = handle.recv(READ_SIZE)
        except socket.timeout:
            return b""
        if not data:
            raise OSError("connection closed by peer")
        return data

    def _close(self, handle: object) -> None:
        assert isinstance(handle, socket.socket)
        handle.close()


def _open_binary(path: Path) -> io.BufferedIOBase:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _blocks(fh: io.BufferedIOBase, size: int = 65536) -> Iterator[bytes]:
    try:
        while True:
            block = fh.read(size)
            if not block:
                return
            yield block
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        log.warning("damaged gzip tail ignored (%s)", exc)


def _lines(fh: io.BufferedIOBase) -> Iterator[bytes]:
    pending = b""
    for block in _blocks(fh):
        pending += block
        *complete, pending = pending.split(b"\n")
        yield from complete
    # a last line without newline is the partial write of a crashed capture: ignored


def _frame_pieces(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Raw dump cut before every start sequence, streaming."""
    pending = b""
    for block in blocks:
        pending += block
        pieces = split_frames(pending)
        # the last piece may still grow (or hide a start sequence split across blocks)
        pending = pieces.pop() if pieces else b""
        yield from pieces
    if pending:
        yield pending


def _piece_runs(blocks: Iterator[bytes]) -> Iterator[tuple[bytes, list[int]]]:
    """The pieces of `_frame_pieces`, a run of whole ones at a time, without cutting them
    apart: (bytes, where each piece starts in them)."""
    pending = b""
    for block in blocks:
        pending += block
        starts = [0]
        position = pending.find(START_SEQUENCE, 1)
        while position != -1:
            starts.append(position)
            position = pending.find(START_SEQUENCE, position + 1)
        if len(starts) > 1:
            # the last piece may still grow (or hide a start sequence split across blocks)
            cut = starts.pop()
            yield pending[:cut], starts
            pending = pending[cut:]
    if pending:
        yield pending, [0]


def count_pieces(blocks: Iterable[bytes]) -> int:
    """How many pieces `_frame_pieces` cuts from `blocks`, without cutting them: one per
    start sequence, plus one for bytes before the first (the sequence cannot overlap itself,
    so `bytes.count` finds every one)."""
    size = len(START_SEQUENCE)
    found = 0
    total = 0
    head = b""
    carry = b""
    for block in blocks:
        if not block:
            continue
        if len(head) < size:
            head = (head + block)[:size]
        # (a sequence split across two blocks is found in the carried tail + the next block;
        # the tail is too short to hold a whole one, so nothing is counted twice)
        data = carry + block
        found += data.count(START_SEQUENCE)
        carry = data[-(size - 1) :]
        total += len(block)
    if total == 0:
        return 0
    return found + (0 if head == START_SEQUENCE else 1)


def split_frames(data: bytes) -> list[bytes]:
    """Cut a raw dump before every start sequence (garbage before the first one stays a piece)."""
    pieces = []
    start = 0
    pos = data.find(START_SEQUENCE, 1)
    while pos != -1:
        pieces.append(data[start:pos])
        start = pos
        pos = data.find(START_SEQUENCE, pos + 1)
    if start < len(data):
        pieces.append(data[start:])
    return [p for p in pieces if p]


# a replay at full speed joins up to this many pieces (or bytes) in one chunk
JOIN_PIECES = 256
JOIN_BYTES = 256 * 1024


class _Joiner:
    """Collects a full-speed replay's pieces into chunks of JOIN_PIECES / JOIN_BYTES, each
    piece's position and time in `Chunk.marks`."""

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._marks: list[tuple[int, datetime]] = []
        self._size = 0

    def add(self, data: bytes, marks: Iterable[tuple[int, datetime]]) -> Optional[Chunk]:
        """Add `data` holding pieces at `marks` (positions within `data`); a chunk when full."""
        self._marks += [(self._size + position, stamp) for position, stamp in marks]
        self._data.append(data)
        self._size += len(data)
        if len(self._marks) >= JOIN_PIECES or self._size >= JOIN_BYTES:
            return self.take()
        return None

    def take(self) -> Optional[Chunk]:
        """What was collected as one chunk (None when nothing was)."""
        if not self._marks:
            return None
        chunk = Chunk(b"".join(self._data), self._marks[0][1], tuple(self._marks))
        self._data, self._marks, self._size = [], [], 0
        return chunk


class ReplaySource(Source):
    """Replays a capture file (with its timing) or a raw dump (one frame per `interval`).

    Readings from a replay carry the recorded times (captures) or synthesised times spaced by
    `interval` (raw dumps), independent of `speed`, so fast replays still produce plausible
    energy/time series. A raw dump starts at `start` when given; otherwise at `--speed max`
    it ends "now" (a long dump must not write readings dated in the future), and at a paced
    speed it starts now.
    """

    endless = False
    watchdog = False

    def __init__(
        self,
        path: Path,
        *,
        speed: Optional[float],
        interval: float,
        loop: bool,
        clock: Clock = utc_now,
        sleep: Callable[[float], None] | None = None,
        start: Optional[datetime] = None,
    ) -> None:
        super().__init__(f"replay {path}")
        self.path = Path(path)
        self.speed = speed
        self.interval = interval
        self.loop = loop
        self.start = start
        self._clock = clock
        self._sleep = sleep
        self.bulk = speed is None
        self.done = 0  # pieces (frames or capture lines) handed out so far
        self.total: Optional[int] = None  # pieces in one pass, when known

    def _raw_pieces(self) -> Optional[int]:
        """Frames in a raw dump (None for a capture file, which carries its own times)."""
        with _open_binary(self.path) as fh:
            head = fh.read(len(CAPTURE_MAGIC))
            if head == CAPTURE_MAGIC:
                return None
            return count_pieces(itertools.chain([head], _blocks(fh)))

    def _timed(self) -> Iterator[tuple[float, bytes, Optional[datetime]]]:
        """(offset seconds from start, data, recorded time or None) for one pass."""
        with _open_binary(self.path) as fh:
            head = fh.read(len(CAPTURE_MAGIC))
            if head == CAPTURE_MAGIC:
                first: Optional[datetime] = None
                for line in _lines(fh):
                    item = parse_line(line)
                    if item is None:
                        continue
                    stamp, data = item
                    first = first or stamp
                    yield (stamp - first).total_seconds(), data, stamp
                return
            pieces = _frame_pieces(itertools.chain([head], _blocks(fh)))
            for index, piece in enumerate(pieces):
                yield index * self.interval, piece, None

    def _raw_runs(self) -> Iterator[tuple[bytes, list[int]]]:
        """A raw dump as `_piece_runs` (for a replay at full speed)."""
        with _open_binary(self.path) as fh:
            yield from _piece_runs(_blocks(fh))

    def chunks(self, stop: threading.Event) -> Iterator[Chunk]:
        """Yield the file's pieces with recorded or synthesised times; raises FileNotFoundError."""
        if not self.path.is_file():
            self.on_state("waiting", f"{self.path}: no such file")
            raise FileNotFoundError(f"replay file not found: {self.path}")
        self.on_state("connected", f"replaying {self.path.name}")
        base = self._clock()
        pieces = self._raw_pieces()
        self.total = pieces
        if pieces is not None and self.start is not None:
            base = self.start
        elif pieces is not None and self.speed is None:
            base = base - timedelta(seconds=max(0, pieces - 1) * self.interval)
        shift = 0.0
        raw_bulk = self.bulk and pieces is not None
        joiner = _Joiner()  # at full speed, pieces go out joined (see Chunk.marks)
        while True:
            wall_start = time.monotonic()
            last_offset = 0.0
            count = 0
            # a raw dump at full speed: runs of whole pieces, never cut apart; each piece has
            # the time the loop below would give it
            for data, starts in self._raw_runs() if raw_bulk else ():
                if stop.is_set():
                    return
                stamps = [
                    (position, base + timedelta(seconds=shift + (count + i) * self.interval))
                    for i, position in enumerate(starts)
                ]
                count += len(starts)
                self.done += len(starts)
                last_offset = (count - 1) * self.interval
                chunk = joiner.add(data, stamps)
                if chunk is not None:
                    yield chunk
            for offset, data, recorded in () if raw_bulk else self._timed():
                if stop.is_set():
                    return
                count += 1
                self.done += 1
                last_offset = offset
                if self.speed is not None:
                    delay = offset / self.speed - (time.monotonic() - wall_start)
                    if delay > 0:
                        if self._sleep is not None:
                            self._sleep(delay)
                        elif stop.wait(delay):
                            return
                if recorded is not None:
                    stamp = recorded + timedelta(seconds=shift)
                else:
                    stamp = base + timedelta(seconds=shift + offset)
                if not self.bulk:
                    yield Chunk(data, stamp)
                    continue
                chunk = joiner.add(data, ((0, stamp),))
                if chunk is not None:
                    yield chunk
            chunk = joiner.take()
            if chunk is not None:
                yield chunk
            if not self.loop or count == 0:
                break
            shift += last_offset + self.interval
        self.on_state("no data", "replay finished")


class SimulatedSource(Source):
    """The synthetic meter of `smlogger.simulate`, emitting one SML frame per interval."""

    watchdog = False

    def __init__(
        self,
        meter: SimulatedMeter,
        *,
        interval: float,
        clock: Clock = utc_now,
        frames: Optional[int] = None,
        counters: Optional[CounterFile] = None,
    ) -> None:
        super().__init__("simulate")
        self.meter = meter
        self.counters = counters
        self.interval = interval
        self._clock = clock
        self.frames = frames
        if frames is not None:
            self.endless = False

    def describe(self) -> str:
        """`simulate (<profile>)`."""
        return f"simulate ({self.meter.profile.name})"

    def chunks(self, stop: threading.Event) -> Iterator[Chunk]:
        """One frame per interval (or `frames` of them); saves the register counters at the end."""
        self.on_state("connected", f"simulated meter, profile {self.meter.profile.name}")
        try:
            yield from self._frames(stop, time.monotonic())
        finally:
            if self.counters is not None:
                self.counters.save(self.meter)

    def _frames(self, stop: threading.Event, next_at: float) -> Iterator[Chunk]:
        sent = 0
        while not stop.is_set() and (self.frames is None or sent < self.frames):
            now = self._clock()
            yield Chunk(self.meter.frame(now), now)
            if self.counters is not None:
                self.counters.maybe_save(self.meter, time.monotonic())
            sent += 1
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < -self.interval:
                next_at = time.monotonic()  # fell behind (suspend): do not burst to catch up
            elif delay > 0 and stop.wait(delay):
                return
