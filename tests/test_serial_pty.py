"""Serial source on a real pseudo-terminal pair (socat): unplug, replug, watchdog.

The "meter" writes recordings into one end of the pair; the logger reads the other end with
pyserial exactly as it reads /dev/ttyUSB0. Killing socat removes the device (like pulling the
USB IR head); starting it again brings it back under the same name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import Collect, csv_texts, free_port, wait_for

from smlogger import sml
from smlogger.csvlog import CsvLog
from smlogger.live import LiveState
from smlogger.pipeline import MeterSpec, Pipeline
from smlogger.sources import SerialSettings, SerialSource, split_frames

pytestmark = pytest.mark.slow  # socat ptys and a real serial link

MT175_A = "ISKRA_MT175_eHZ.bin"  # 10 good frames, meter 090149534b000403df63
MT175_B = "ISKRA_MT175_D1A52-V22-K0t.bin"  # 8 good frames, another meter
EMH = "EMH_eHZ-HW8E2A5L0EK2P.bin"  # 12 good frames
SOCAT = shutil.which("socat")


class PtyPair:
    """`socat` joining two pseudo-terminals, reachable under stable symlinks."""

    def __init__(self, folder: Path) -> None:
        if SOCAT is None:
            raise RuntimeError("socat is required for the serial tests (Debian package socat)")
        self.meter_end = folder / "meter-pty"
        self.logger_end = folder / "ttyIR0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert SOCAT is not None
        self.proc = subprocess.Popen(
            [
                SOCAT,
                "-d",
                "-d",
                f"pty,raw,echo=0,link={self.meter_end}",
                f"pty,raw,echo=0,link={self.logger_end}",
            ],
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self.meter_end.exists() and self.logger_end.exists(), 10, "socat ptys")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        wait_for(lambda: not self.logger_end.exists(), 10, "pty links to vanish")

    def feed(self, recording: Path, pause: float = 0.05) -> int:
        """Write a recording frame by frame, as a meter would; returns its good frame count."""
        data = recording.read_bytes()
        fd = os.open(self.meter_end, os.O_RDWR | os.O_NOCTTY)
        try:
            for piece in split_frames(data):
                os.write(fd, piece)
                time.sleep(pause)
            time.sleep(0.3)  # let socat pass the last bytes on before the fd closes
        finally:
            os.close(fd)
        return sum(1 for f in sml.decode(data) if f["ok"])


def test_unplug_replug_and_watchdog_in_process(
    pty_pair: PtyPair, recordings_dir: Path, tmp_path: Path
) -> None:
    live = LiveState()
    sink = Collect()
    csv = CsvLog(tmp_path / "csv")
    # 9600 8N1 without flow control, as the head sends
    settings = SerialSettings(str(pty_pair.logger_end), 9600, 8, "N", 1.0, False, False)
    source = SerialSource(settings, reconnect_initial=0.2, reconnect_max=0.5)
    spec = MeterSpec("house", source, watchdog_s=2.5)
    pipeline = Pipeline([spec], [sink, csv], live)

    def state() -> str:
        return str(live.source_status()["house"]["state"])

    pipeline.start()
    try:
        wait_for(lambda: state() == "connected", what="port open")
        meter_a = "090149534b000403df63"
        assert pty_pair.feed(recordings_dir / MT175_A) == 10
        wait_for(lambda: sink.count(meter_a) == 10, what="first recording")

        pty_pair.stop()  # the IR head is pulled
        wait_for(lambda: state() == "waiting", what="waiting state")
        assert "retry in" in live.source_status()["house"]["detail"] or "lost" in str(
            live.source_status()["house"]["detail"]
        )
        time.sleep(1.0)
        pty_pair.start()  # ... and plugged in again: same name, new tty
        wait_for(lambda: state() == "connected", what="reopened port")
        expected_b = pty_pair.feed(recordings_dir / MT175_B)
        # the pipeline may still be decoding what was fed: wait for the other meter's first reading
        meter_b = wait_for(
            lambda: next((r.meter_id for r in list(sink.readings) if r.meter_id != meter_a), None),
            what="the second meter's first reading",
        )
        wait_for(lambda: sink.count(meter_b) == expected_b, what="second recording")

        # silence: the watchdog reports it and reopens the port
        wait_for(lambda: state() == "no data", 10, what="watchdog")
        stats = live.source_status()["house"]["stats"]
        assert stats["watchdog_events"] >= 1
        expected_emh = pty_pair.feed(recordings_dir / EMH)
        wait_for(lambda: state() == "connected", what="frames after the watchdog")
        wait_for(
            lambda: len(sink.readings) >= 10 + expected_b + expected_emh - 1, what="third recording"
        )
    finally:
        pipeline.stop(4)
    assert live.source_status()["house"]["stats"]["crc_errors"] == 0
    assert {meter_a, meter_b} <= set(live.meters())
    csv_rows = sum(len(p.read_text().splitlines()) - 1 for p in (tmp_path / "csv").rglob("*.csv"))
    assert csv_rows == len(sink.readings)


def test_smlogger_run_port_survives_replug(
    pty_pair: PtyPair, recordings_dir: Path, tmp_path: Path
) -> None:
    """`smlogger run --port` as a subprocess: SQLite + CSV get the data from before and after."""
    data_dir = tmp_path / "data"
    log_path = tmp_path / "stderr.txt"
    port = free_port()

    def readings_read() -> int:
        """How many readings the logger has decoded from the port so far (all sources)."""
        url = f"http://127.0.0.1:{port}/api/status"
        with urllib.request.urlopen(url, timeout=5) as response:
            sources = json.load(response)["sources"]
        return sum(int(s["stats"].get("readings", 0)) for s in sources.values())

    cmd = [
        sys.executable,
        "-m",
        "smlogger",
        "run",
        "--port",
        str(pty_pair.logger_end),
        "--data-dir",
        str(data_dir),
        "--http",
        f"127.0.0.1:{port}",
        "--reconnect-max",
        "0.5",
        "-v",
    ]
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(cmd, stderr=err)
        try:
            wait_for(
                lambda: b"serial " in log_path.read_bytes() and b": open" in log_path.read_bytes(),
                20,
                "port opened",
            )
            first = pty_pair.feed(recordings_dir / MT175_A)
            # unplug only once the logger has read every frame fed: the test is about losing
            # nothing across a replug, not about how fast a loaded machine reads a pty
            wait_for(
                lambda: readings_read() >= first, what="first recording read", ignore=(OSError,)
            )
            pty_pair.stop()
            wait_for(lambda: b"connection lost" in log_path.read_bytes(), what="loss logged")
            pty_pair.start()
            wait_for(lambda: b"open again" in log_path.read_bytes(), what="reopen logged")
            second = pty_pair.feed(recordings_dir / MT175_B)
            wait_for(
                lambda: readings_read() >= first + second,
                what="second recording read",
                ignore=(OSError,),
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                raise
    stderr = log_path.read_text()
    assert code == 0, stderr
    counts: dict[str, int] = {}
    for path, text in csv_texts(data_dir / "csv"):  # every day file: a run may cross midnight
        counts[path.parent.name] = counts.get(path.parent.name, 0) + len(text.splitlines()) - 1
    assert counts == {"090149534b000403df63": first, "0649534b010e1f66299a": second}, stderr

    from datetime import datetime, timezone

    from smlogger.store import StoreReader, open_database

    db = open_database(None, data_dir)
    try:
        far = datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc)
        stored = list(StoreReader(db).export(None, *far))
    finally:
        db.close()
    assert len(stored) == first + second
