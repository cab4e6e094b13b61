"""The batch path of a replay at full speed (`write_many`, joined chunks, `feed_values`, one
batch per sink) stores exactly what the single-reading path stores: the same database rows
(readings, rollups, OBIS dictionaries) and the same CSV files, line for line."""

from __future__ import annotations

import gzip
import signal
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import peewee
import pytest
from conftest import RECORDINGS
from helpers import Collect, wait_for

from smlogger import sml
from smlogger.capture import CaptureWriter, parse_line
from smlogger.csvlog import CsvLog
from smlogger.live import LiveState
from smlogger.pipeline import MeterSpec, Pipeline, SinkWorker
from smlogger.reading import Reading, readings_from_frame
from smlogger.simulate import make_meter
from smlogger.sources import ReplaySource
from smlogger.store import Store, ensure_schema, open_database

# an evening into the next day: the CSV files rotate at midnight, rollups cut hours and days
START = datetime(2024, 5, 1, 23, 50, tzinfo=timezone.utc)
RECORDING = RECORDINGS / "ISKRA_MT631-D1A52-K0z-H01_with_PIN.bin"


def _recording_and_simulator(path: Path, frames: int) -> bytes:
    """A real recording followed by `frames` simulated household frames (a second meter)."""
    meter = make_meter("household", seed="batch", tz=timezone.utc)
    simulated = b"".join(meter.frame(START + timedelta(seconds=i)) for i in range(frames))
    data = RECORDING.read_bytes() + simulated
    path.write_bytes(data)
    return data


def _readings(data: bytes) -> list[Reading]:
    frames = sml.decode(data)
    return [
        r
        for i, f in enumerate(frames)
        for r in readings_from_frame(f, START + timedelta(seconds=i))
    ]


def _tables(database: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows (but the schema's own history, which has the time of creation)."""
    con = sqlite3.connect(database)
    try:
        names = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' AND name != 'schema_version'"
            )
        ]
        tables = {}
        for name in names:
            columns = [r[1] for r in con.execute(f'PRAGMA table_info("{name}")')]
            # meters.last_seen is kept to the hour, updated per database batch: where the
            # batches end is all it shows (the last reading is MAX(time) of readings)
            wanted = ", ".join(f'"{c}"' for c in columns if (name, c) != ("meters", "last_seen"))
            rows = con.execute(f'SELECT {wanted} FROM "{name}"').fetchall()
            tables[name] = sorted(rows, key=repr)
        return tables
    finally:
        con.close()


def _csv_files(directory: Path) -> dict[str, bytes]:
    """CSV file name -> content (of finished days: gzip'd, their header holds a time)."""
    files = {}
    for path in directory.rglob("*.csv*"):
        data = path.read_bytes()
        files[str(path.relative_to(directory))] = (
            gzip.decompress(data) if path.suffix == ".gz" else data
        )
    return files


def _store(root: Path, ram: bool, direct: bool = False) -> Store:
    store = Store(
        open_database(None, root),
        spool_dir=root / "spool",
        ram_dir=root / "ram-sql" if ram else None,
    )
    store.direct_batches = direct
    return store


def _csv(root: Path, ram: bool) -> CsvLog:
    clock = lambda: START  # noqa: E731 - the files of the replayed days are not "finished"
    return CsvLog(root / "csv", ram_dir=root / "ram-csv" if ram else None, clock=clock)


@pytest.mark.parametrize(
    ("ram", "direct"),
    [(True, False), (False, False), (True, True)],
    ids=["ram-tier", "no-ram-tier", "direct-batches"],
)
def test_write_many_stores_what_write_stores(tmp_path: Path, ram: bool, direct: bool) -> None:
    readings = _readings(_recording_and_simulator(tmp_path / "in.bin", 1500))
    assert len({r.meter_id for r in readings}) == 2 and len(readings) > 1500
    single, batched = tmp_path / "single", tmp_path / "batched"
    for root in (single, batched):
        root.mkdir()
    store, csv = _store(single, ram), _csv(single, ram)
    for reading in readings:
        store.write(reading)
        csv.write(reading)
    store.close()
    csv.close()
    store, csv = _store(batched, ram, direct), _csv(batched, ram)
    # batches of every size, above the bulk threshold and below it (then the RAM tier
    # holds older readings, and larger batches follow them there)
    sizes = [1000, 64, 63, 5, 1, 2500]
    position = 0
    for size in sizes * 10:
        part = readings[position : position + size]
        position += len(part)
        if part:
            assert store.write_many(part) == len(part)
            assert csv.write_many(part) == len(part)
    assert position == len(readings)
    store.close()
    csv.close()
    one, many = _tables(single / "smlogger.db"), _tables(batched / "smlogger.db")
    assert len(one["readings"]) == len(readings)
    assert one == many
    files = _csv_files(single / "csv")
    assert len(files) == 3  # the recording: a few seconds; the simulator: two days
    assert files == _csv_files(batched / "csv")
    lines = sum(len(text.splitlines()) - 1 for text in files.values())
    assert lines == len(readings)


def _replay(path: Path, root: Path, speed: float | None) -> str:
    """Replay `path` through a pipeline into SQLite + CSV with the RAM tiers the service
    uses; the summary line."""
    root.mkdir()
    replay = ReplaySource(path, speed=speed, interval=1.0, loop=False, start=START)
    live = LiveState()
    pipeline = Pipeline([MeterSpec("m", replay)], [_store(root, True), _csv(root, True)], live)
    pipeline.start()
    pipeline.run(threading.Event())
    assert pipeline.stop(30.0)
    return pipeline.summary()


def test_full_speed_replay_stores_what_a_paced_replay_stores(tmp_path: Path) -> None:
    data = _recording_and_simulator(tmp_path / "in.bin", 3000)
    frames = len(sml.decode(data))
    # speed None: a bulk source (joined chunks, feed_values, batches to write_many);
    # a paced replay (that never waits) goes frame by frame, reading by reading
    assert ReplaySource(tmp_path / "in.bin", speed=None, interval=1.0, loop=False).bulk
    fast = _replay(tmp_path / "in.bin", tmp_path / "fast", None)
    paced = _replay(tmp_path / "in.bin", tmp_path / "paced", 1e9)
    assert fast == paced and f"frames: {frames} ok" in fast
    one = _tables(tmp_path / "paced" / "smlogger.db")
    assert len(one["readings"]) == frames
    assert one == _tables(tmp_path / "fast" / "smlogger.db")
    files = _csv_files(tmp_path / "paced" / "csv")
    assert sum(len(t.splitlines()) - 1 for t in files.values()) == frames
    assert files == _csv_files(tmp_path / "fast" / "csv")


class _Batches(Collect):
    """A sink with write_many that takes only part of a batch, and counts the calls."""

    name = "batches"

    def __init__(self, take: int) -> None:
        super().__init__()
        self.take = take
        self.batches: list[int] = []

    def write_many(self, readings: list[Reading]) -> int:
        self.batches.append(len(readings))
        with self._lock:
            self.readings += readings[: self.take]
        return min(self.take, len(readings))

    @property
    def singles(self) -> int:
        """Readings that came through `write`, one by one."""
        return self.calls


def _simulated(count: int) -> list[Reading]:
    meter = make_meter("household", seed="batch", tz=timezone.utc)
    return _readings(b"".join(meter.frame(START + timedelta(seconds=i)) for i in range(count)))


def test_sink_worker_hands_over_batches_and_writes_the_rest_one_by_one() -> None:
    readings = _simulated(10)
    sink = _Batches(take=3)
    worker = SinkWorker(sink)
    worker.put_many(readings[:5])
    worker.put_many(readings[5:])
    worker.start()
    worker.close(float("inf"))
    assert worker.join(time.monotonic() + 30)
    # queued batches are joined into one write_many; what it did not take goes singly
    assert sink.batches == [len(readings)]
    assert sink.singles == len(readings) - 3
    assert sink.readings == readings
    assert worker.status()["handed_over"] == len(readings)


def test_full_queue_drops_the_oldest_readings_of_batches_too() -> None:
    readings = _simulated(10)
    sink = _Batches(take=100)
    worker = SinkWorker(sink, maxsize=4)
    worker.put_many(readings[:3])
    worker.put_many(readings[3:6])  # two of the first batch go
    worker.put_many(readings[6:])  # all of the rest of the first, one of the second
    status = worker.status()
    assert status["pipeline_dropped"] == 6 and status["queue_depth"] == 4
    worker.start()
    worker.close(float("inf"))
    assert worker.join(time.monotonic() + 30)
    assert sink.readings == readings[6:]


def test_direct_batches_go_to_the_journal_while_the_database_is_locked(tmp_path: Path) -> None:
    """`direct_batches` keeps rows in memory only while the database takes them: a locked
    database sends them to the journal, and nothing handed over is lost at close."""
    readings = _simulated(300)
    path = tmp_path / "locked.db"
    db = peewee.SqliteDatabase(str(path), timeout=0.2, pragmas={"journal_mode": "wal"})
    ensure_schema(db)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    store = Store(db, spool_dir=tmp_path / "spool", shutdown_timeout=1.0)
    store.direct_batches = True
    try:
        assert store.write_many(readings[:200]) == 200
        deadline = time.monotonic() + 20
        while store.status()["db"] != "down" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.status()["db"] == "down"
        assert store.write_many(readings[200:]) == 100  # to the journal: the database is down
        assert store.status()["queue_depth"] == 300
    finally:
        store.close()  # gives up on the locked database; the journal keeps everything
    blocker.execute("ROLLBACK")
    blocker.close()
    store = Store(db, spool_dir=tmp_path / "spool")
    try:
        deadline = time.monotonic() + 30
        while store.status()["queue_depth"] and time.monotonic() < deadline:
            time.sleep(0.05)
        check = sqlite3.connect(path)
        try:
            assert check.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 300
        finally:
            check.close()
    finally:
        store.close()
        db.close()


def test_capture_of_a_full_speed_replay_keeps_every_frame_time(tmp_path: Path) -> None:
    """Joined chunks are captured piece by piece: one line per frame, with its own time."""
    data = _recording_and_simulator(tmp_path / "in.bin", 600)
    frames = sml.decode(data)
    capture = CaptureWriter(tmp_path / "cap.txt")
    replay = ReplaySource(tmp_path / "in.bin", speed=None, interval=1.0, loop=False, start=START)
    sink = _Batches(take=10_000)
    pipeline = Pipeline([MeterSpec("m", replay, capture=capture)], [sink], LiveState())
    pipeline.start()
    pipeline.run(threading.Event())
    assert pipeline.stop(30.0)
    lines = (tmp_path / "cap.txt").read_bytes().splitlines()
    items = [item for item in map(parse_line, lines) if item is not None]
    assert [t for t, _ in items] == [START + timedelta(seconds=i) for i in range(len(frames))]
    assert b"".join(d for _, d in items) == data
    assert [r.time for r in sink.readings] == [t for t, _ in items]


def test_full_speed_replay_in_process_restores_the_garbage_collector(tmp_path: Path) -> None:
    """`run` switches automatic collection off for a full-speed replay and back on after."""
    import gc

    from smlogger import cli, service
    from smlogger import config as cfgmod

    _recording_and_simulator(tmp_path / "in.bin", 300)
    data = tmp_path / "data"
    argv = ["run", "--replay", str(tmp_path / "in.bin"), "--speed", "max"]
    args = cli.build_parser().parse_args([*argv, "--data-dir", str(data), "--http", "off"])
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert service.run(cfgmod.load(args)) == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
    frames = sml.decode((tmp_path / "in.bin").read_bytes())
    assert len(_tables(data / "smlogger.db")["readings"]) == len(frames)


def test_a_full_speed_replay_leaves_the_callers_frozen_objects_frozen(tmp_path: Path) -> None:
    """A program that froze objects of its own before calling `run` finds them still frozen
    after it (gc.get_objects() lists every generation but the frozen one)."""
    import gc

    from smlogger import cli, service
    from smlogger import config as cfgmod

    _recording_and_simulator(tmp_path / "in.bin", 50)
    argv = ["run", "--replay", str(tmp_path / "in.bin"), "--speed", "max", "--http", "off"]
    args = cli.build_parser().parse_args([*argv, "--data-dir", str(tmp_path / "data")])
    mine = [object()]
    gc.freeze()
    try:
        assert service.run(cfgmod.load(args)) == 0
        assert gc.isenabled()
        assert id(mine) not in {id(o) for o in gc.get_objects()}
    finally:
        gc.unfreeze()


def test_stored_row_from_a_reading_equals_the_dataclass_constructor() -> None:
    """StoredRow.from_reading builds its attributes as one dict: the same row as the
    constructor gives (equality, repr, dataclasses.replace)."""
    import dataclasses

    from smlogger.store.rows import StoredRow

    reading = _simulated(1)[0]
    row = StoredRow.from_reading(reading)
    plain = StoredRow(
        meter_id=reading.meter_id,
        time=reading.time,
        samples=1,
        fields=reading.fields(),
        minmax={},
        values_json=row.values_json,
        base=None,
    )
    assert row == plain and repr(row) == repr(plain)
    assert dataclasses.replace(row, base="k") == dataclasses.replace(plain, base="k")
    assert StoredRow.from_payload(row.to_payload()) == row


def test_a_failing_run_restores_the_garbage_collector_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However `run` leaves (here: an unexpected error while starting the web page), the
    collector it switched off for a full-speed replay is back on and nothing stays frozen."""
    import gc

    from smlogger import cli, service
    from smlogger import config as cfgmod

    _recording_and_simulator(tmp_path / "in.bin", 50)
    argv = ["run", "--replay", str(tmp_path / "in.bin"), "--speed", "max", "--http", "off"]
    args = cli.build_parser().parse_args([*argv, "--data-dir", str(tmp_path / "data")])

    def broken(*_args: object) -> None:
        raise RuntimeError("web start failed")

    monkeypatch.setattr(service, "start_web", broken)
    before = set(threading.enumerate())
    handlers = _signal_handlers()
    with pytest.raises(RuntimeError, match="web start failed"):
        service.run(cfgmod.load(args))
    assert gc.isenabled() and gc.get_freeze_count() == 0
    # nor does anything it started run on: the pipeline is stopped, the handlers are back
    wait_for(lambda: not _logger_threads(before), 30, "the logger's threads to end")
    assert _signal_handlers() == handlers


def test_a_failing_storage_set_up_closes_the_store_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storage that fails after the database store was opened (here: the CSV catch-up):
    exit code 2, and the store's writer thread does not outlive `run`."""
    from smlogger import cli, service
    from smlogger import config as cfgmod

    _recording_and_simulator(tmp_path / "in.bin", 20)
    argv = ["run", "--replay", str(tmp_path / "in.bin"), "--http", "off"]
    args = cli.build_parser().parse_args([*argv, "--data-dir", str(tmp_path / "data")])

    def broken(*_args: object) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(service, "catch_up_csv", broken)
    before = set(threading.enumerate())
    assert service.run(cfgmod.load(args)) == 2
    wait_for(lambda: not _logger_threads(before), 30, "the logger's threads to end")


def test_a_sink_that_cannot_be_built_closes_those_built_before(tmp_path: Path) -> None:
    """A bad MQTT setting found while the sinks are built (after the store and the CSV log):
    the error reaches the caller and nothing built before it runs on."""
    from smlogger import cli, service
    from smlogger import config as cfgmod
    from smlogger.config import ConfigError

    _recording_and_simulator(tmp_path / "in.bin", 20)
    argv = ["run", "--replay", str(tmp_path / "in.bin"), "--http", "off"]
    argv += ["--mqtt", "mqtt://127.0.0.1", "--mqtt-ca-file", str(tmp_path / "missing.pem")]
    args = cli.build_parser().parse_args([*argv, "--data-dir", str(tmp_path / "data")])
    before = set(threading.enumerate())
    handlers = _signal_handlers()
    with pytest.raises(ConfigError, match=r"mqtt\.ca_file"):
        service.run(cfgmod.load(args))
    wait_for(lambda: not _logger_threads(before), 30, "the logger's threads to end")
    assert _signal_handlers() == handlers


# the threads of a running logger: SQL writer and HTTP server (smlogger-*), sink workers,
# meter readers, MQTT publisher, web stopper
LOGGER_THREADS = ("smlogger-", "sink-", "meter-", "mqtt-", "web-")


def _logger_threads(before: set[threading.Thread]) -> list[str]:
    """The names of the logger's threads that run now and did not before."""
    return [
        t.name
        for t in threading.enumerate()
        if t not in before and t.is_alive() and t.name.startswith(LOGGER_THREADS)
    ]


def _signal_handlers() -> list[object]:
    return [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]


def test_an_in_process_run_gives_back_the_signal_handlers(tmp_path: Path) -> None:
    """`run` handles SIGTERM/SIGINT itself while it runs, and puts the caller's back after."""
    from smlogger import cli, service
    from smlogger import config as cfgmod

    _recording_and_simulator(tmp_path / "in.bin", 50)
    argv = ["run", "--replay", str(tmp_path / "in.bin"), "--speed", "max", "--http", "off"]
    args = cli.build_parser().parse_args([*argv, "--data-dir", str(tmp_path / "data")])
    seen: list[object] = []

    def mine(signum: int, frame: object) -> None:
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        handlers = _signal_handlers()
        before = set(threading.enumerate())
        assert service.run(cfgmod.load(args)) == 0
        assert _signal_handlers() == handlers
        wait_for(lambda: not _logger_threads(before), 30, "the logger's threads to end")
        # and it is ours that a SIGTERM reaches now
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
