"""Byte sources: TCP against a real local server, replay of dumps and captures, capture files."""

from __future__ import annotations

import gzip
import random
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import Collect, wait_for

from smlogger import sml
from smlogger.capture import CAPTURE_MAGIC, CaptureWriter
from smlogger.live import LiveState
from smlogger.pipeline import MeterSpec, Pipeline
from smlogger.sources import (
    START_SEQUENCE,
    Backoff,
    Chunk,
    ReplaySource,
    SerialSettings,
    SerialSource,
    TcpSource,
    _frame_pieces,
    _piece_runs,
    count_pieces,
    split_frames,
)

MT175 = "ISKRA_MT175_eHZ.bin"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


class MeterServer:
    """A network IR head: serves a recording to each connection, frame by frame."""

    def __init__(self, data: bytes, pause: float = 0.05) -> None:
        self.frames = split_frames(data)
        self.pause = pause
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.drop_after: int | None = None  # close a connection after this many frames
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                for index, frame in enumerate(self.frames * 100):
                    if self._stop.is_set() or index == self.drop_after:
                        break
                    try:
                        conn.sendall(frame)
                    except OSError:
                        break
                    time.sleep(self.pause)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)


@pytest.mark.slow  # waits for real reconnects
def test_tcp_source_reads_and_reconnects(recordings_dir: Path) -> None:
    server = MeterServer((recordings_dir / MT175).read_bytes())
    server.drop_after = 6
    live = LiveState()
    sink = Collect()
    source = TcpSource("127.0.0.1", server.port, reconnect_initial=0.1, reconnect_max=0.5)
    pipeline = Pipeline([MeterSpec("tcp-head", source)], [sink], live)
    pipeline.start()
    try:
        # the server hangs up after 6 frames; the source reconnects on its own
        wait_for(lambda: server.connections >= 3, what="reconnects")
        wait_for(lambda: len(sink.readings) >= 15, what="readings after reconnects")
        status = live.source_status()["tcp-head"]
        assert status["stats"]["frames_ok"] >= 15
        assert status["meters"] == ["090149534b000403df63"]
    finally:
        pipeline.stop(4)
        server.close()
    assert sink.closed
    assert all(r.meter_id == "090149534b000403df63" for r in sink.readings)


def test_tcp_source_waits_for_a_server_that_is_not_there_yet(recordings_dir: Path) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on `port` now
    states: list[tuple[str, str]] = []
    source = TcpSource("127.0.0.1", port, reconnect_initial=0.1, reconnect_max=0.2)
    source.on_state = lambda state, detail: states.append((state, detail))
    stop = threading.Event()
    chunks: list[Chunk] = []

    def consume() -> None:
        for chunk in source.chunks(stop):
            chunks.append(chunk)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    wait_for(lambda: len(states) >= 2, what="waiting states")
    assert states[0][0] == "waiting" and "refused" in states[0][1].lower()
    data = (recordings_dir / MT175).read_bytes()
    server = socket.create_server(("127.0.0.1", port))
    try:
        conn, _ = server.accept()
        with conn:
            conn.sendall(data)
            wait_for(lambda: sum(len(c.data) for c in chunks) >= len(data), what="data")
    finally:
        stop.set()
        thread.join(5)
        server.close()
    assert ("connected", "open") in states
    assert b"".join(c.data for c in chunks) == data


def test_serial_source_on_missing_port_keeps_waiting() -> None:
    states: list[tuple[str, str]] = []
    port = "/dev/serial/by-id/usb-no-such-head-if00-port0"
    settings = SerialSettings(port, 9600, 8, "N", 1.0, False, False)
    source = SerialSource(settings, reconnect_initial=0.05, reconnect_max=0.1)
    source.on_state = lambda state, detail: states.append((state, detail))
    stop = threading.Event()
    for count, _chunk in enumerate(source.chunks(stop), 1):
        if count == 3:
            stop.set()
    assert [s for s, _ in states] == ["waiting"] * 3
    assert "no-such-head" in states[0][1] and "retry in" in states[0][1]


def test_backoff_doubles_up_to_the_limit() -> None:
    backoff = Backoff(1, 30)
    assert [backoff.next() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next() == 1


def fast_replay(path: Path) -> ReplaySource:
    """A one-pass replay as fast as possible, raw dumps one frame a second apart."""
    return ReplaySource(path, speed=None, interval=1.0, loop=False)


def replay_all(source: ReplaySource) -> list[Chunk]:
    """The pieces a replay hands out (at full speed several are joined in one chunk)."""
    return [piece for chunk in source.chunks(threading.Event()) for piece in chunk.pieces()]


def test_full_speed_replay_joins_the_pieces_a_paced_one_hands_out(recordings_dir: Path) -> None:
    start = T0 - timedelta(days=1)
    path = recordings_dir / MT175
    paced = ReplaySource(path, speed=1e9, interval=2.0, loop=False, start=start)
    fast = ReplaySource(path, speed=None, interval=2.0, loop=False, start=start)
    joined = list(fast.chunks(threading.Event()))
    assert len(joined) == 1 and joined[0].marks is not None and len(joined[0].marks) == 11
    assert joined[0].data == path.read_bytes() and joined[0].time == start
    assert replay_all(fast) == list(paced.chunks(threading.Event()))
    assert all(c.marks is None for c in paced.chunks(threading.Event()))


def test_replay_raw_dump_frame_by_frame(recordings_dir: Path) -> None:
    data = (recordings_dir / MT175).read_bytes()
    source = ReplaySource(
        recordings_dir / MT175, speed=None, interval=2.0, loop=False, clock=lambda: T0
    )
    chunks = replay_all(source)
    assert b"".join(c.data for c in chunks) == data
    # at --speed max the last frame is "now": a long dump writes no readings from the future
    n = len(chunks)
    assert [c.time for c in chunks] == [T0 - timedelta(seconds=2 * (n - 1 - i)) for i in range(n)]
    assert all(c.data.startswith(b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01") for c in chunks)
    assert len(chunks) == 11  # 10 complete frames + the cut-off one at the end
    assert (source.done, source.total) == (11, 11)
    # --replay-start: the first frame gets that time, whatever the speed
    start = T0 - timedelta(days=30)
    source = ReplaySource(
        recordings_dir / MT175, speed=None, interval=2.0, loop=False, clock=lambda: T0, start=start
    )
    assert [c.time for c in replay_all(source)] == [
        start + timedelta(seconds=2 * i) for i in range(n)
    ]


def test_replay_paces_at_speed(recordings_dir: Path) -> None:
    sleeps: list[float] = []
    source = ReplaySource(
        recordings_dir / MT175, speed=10, interval=1.0, loop=False, sleep=sleeps.append
    )
    chunks = replay_all(source)
    # frame i is due i * 0.1 s after the start at speed 10 (the injected sleep returns at once)
    assert len(sleeps) == len(chunks) - 1
    assert sleeps == pytest.approx([0.1 * i for i in range(1, len(chunks))], abs=0.05)


def test_replay_loop_keeps_time_running(recordings_dir: Path) -> None:
    source = ReplaySource(
        recordings_dir / MT175, speed=None, interval=1.0, loop=True, clock=lambda: T0
    )
    stop = threading.Event()
    got = []
    for chunk in source.chunks(stop):
        got.append(chunk)
        if len(got) == 30:
            stop.set()
    times = [c.time for c in got]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_capture_round_trip_through_replay(tmp_path: Path, recordings_dir: Path) -> None:
    data = (recordings_dir / MT175).read_bytes()
    pieces = [data[i : i + 333] for i in range(0, len(data), 333)]
    for name in ("cap.txt", "cap.txt.gz"):
        path = tmp_path / name
        writer = CaptureWriter(path)
        for i, piece in enumerate(pieces):
            writer.write(T0 + timedelta(seconds=i * 0.25), piece)
        writer.write(T0, b"")  # idle chunks are not written
        writer.close()
        raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
        assert raw.startswith(CAPTURE_MAGIC)
        chunks = replay_all(fast_replay(path))
        assert [c.data for c in chunks] == pieces
        assert [c.time for c in chunks] == [T0 + timedelta(seconds=i * 0.25) for i in range(13)]


def test_capture_survives_a_crash_mid_line(tmp_path: Path, recordings_dir: Path) -> None:
    path = tmp_path / "cap.txt"
    writer = CaptureWriter(path)
    writer.write(T0, b"\x01\x02")
    writer.close()
    with open(path, "ab") as fh:
        fh.write(b"2024-05-01T12:00:01+00:00 0304")  # killed before the newline
    assert [c.data for c in replay_all(fast_replay(path))] == [b"\x01\x02"]
    writer = CaptureWriter(path)  # next start: the partial line is dropped, capture continues
    writer.write(T0 + timedelta(seconds=2), b"\x05")
    writer.close()
    assert [c.data for c in replay_all(fast_replay(path))] == [b"\x01\x02", b"\x05"]


def test_capture_of_a_live_source_replays_identically(tmp_path: Path, recordings_dir: Path) -> None:
    server = MeterServer((recordings_dir / MT175).read_bytes(), pause=0.02)
    capture = CaptureWriter(tmp_path / "capture.txt")
    first = Collect()
    source = TcpSource("127.0.0.1", server.port, reconnect_max=30.0)
    pipeline = Pipeline([MeterSpec("tcp", source, capture=capture)], [first], LiveState())
    pipeline.start()
    try:
        wait_for(lambda: len(first.readings) >= 12, what="readings")
    finally:
        pipeline.stop(4)
        server.close()
    second = Collect()
    replay = fast_replay(tmp_path / "capture.txt")
    again = Pipeline([MeterSpec("replay", replay)], [second], LiveState())
    again.start()
    again.run(threading.Event())
    again.stop(4)
    assert [(r.time, r.fields()) for r in second.readings] == [
        (r.time, r.fields()) for r in first.readings
    ]


def test_split_frames_keeps_garbage_and_tail() -> None:
    start = b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01"
    assert split_frames(b"xx" + start + b"a" + start + b"b") == [b"xx", start + b"a", start + b"b"]
    assert split_frames(b"") == []


def iter_decoded(chunks: Iterator[Chunk]) -> int:
    decoder = sml.Decoder()
    return sum(1 for c in chunks for f in decoder.feed(c.data) if f["ok"])


def test_replay_of_every_recording_decodes_like_the_file(
    recordings_dir: Path, expected: dict[str, object]
) -> None:
    for name, info in expected.items():
        assert isinstance(info, dict)
        chunks = fast_replay(recordings_dir / name).chunks(threading.Event())
        assert iter_decoded(chunks) == info["crc_ok_frames"], name


def test_counting_pieces_and_runs_of_them_agree_with_cutting_them(recordings_dir: Path) -> None:
    """A raw dump's frame count (for the times of a full-speed replay) comes from counting
    start sequences; it must be what cutting the dump gives, however the blocks fall."""
    rng = random.Random(8)
    samples = [p.read_bytes() for p in sorted(recordings_dir.glob("*.bin"))[:8]]
    samples += [b"", START_SEQUENCE, b"x" + START_SEQUENCE, START_SEQUENCE * 3]
    samples += [bytes(rng.choice(b"\x1b\x01\x00w") for _ in range(rng.randint(0, 200)))
                for _ in range(200)]  # fmt: skip
    for data in samples:
        for size in (1, 7, 8, 9, 65536):
            blocks = [data[i : i + size] for i in range(0, len(data), size)]
            cut = list(_frame_pieces(iter(blocks)))
            assert count_pieces(iter(blocks)) == len(cut)
            # a full-speed replay takes them in runs, not cut apart
            runs = list(_piece_runs(iter(blocks)))
            ends = [[*starts[1:], len(run)] for run, starts in runs]
            pieces = [run[a:b] for (run, starts), e in zip(runs, ends) for a, b in zip(starts, e)]
            assert pieces == cut
