"""The diagnosis on a real pseudo-terminal pair: `smlogger scan --json`, the running logger's
/api/status, page and /healthz, and the banner in Chromium at phone width.

A feeder thread writes into the meter end once a second: good SML (a real recording), the same
bytes with the 8th bit cleared (a 7-bit port), random noise, D0 text, or nothing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import HTTP_TROUBLE, free_port, wait_for
from test_serial_pty import PtyPair

from smlogger.sources import split_frames

pytestmark = pytest.mark.slow

MT175 = "ISKRA_MT175_eHZ.bin"  # 10 good frames of meter 090149534b000403df63
METER_ID = "090149534b000403df63"
IMPORT_KWH = 22462.4136  # 1-0:1.8.0 of its first frame: 224624136 x 10^-1 Wh
D0_TELEGRAM = (
    b"/ISK5MT174-0001\r\n\r\n1-0:0.0.0*255(12345678)\r\n1-0:1.8.0*255(0012339.7*kWh)\r\n"
    b"1-0:2.8.0*255(0000000.0*kWh)\r\n!\r\n"
)
MODES = ("silent", "seven_bit", "noise", "d0")


class Feeder(threading.Thread):
    """Writes into the meter end of a pty pair once a second, as `mode` says."""

    def __init__(self, path: Path, frames: list[bytes], mode: str) -> None:
        super().__init__(name=f"feeder-{mode}", daemon=True)
        self.path = path
        self.frames = frames
        self.mode = mode
        self.stopped = threading.Event()
        self.rng = random.Random(9)

    def payload(self, index: int) -> bytes:
        frame = self.frames[index % len(self.frames)]
        if self.mode == "sml":
            return frame
        if self.mode == "seven_bit":
            return bytes(b & 0x7F for b in frame)
        if self.mode == "noise":
            return bytes(self.rng.getrandbits(8) for _ in range(300))
        if self.mode == "d0":
            return D0_TELEGRAM
        return b""

    def run(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY)
        try:
            index = 0
            while not self.stopped.is_set():
                data = self.payload(index)
                if data:
                    os.write(fd, data)
                index += 1
                self.stopped.wait(1.0)
        finally:
            os.close(fd)

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


@pytest.fixture
def frames(recordings_dir: Path) -> list[bytes]:
    return split_frames((recordings_dir / MT175).read_bytes())


def feed(pair: PtyPair, frames: list[bytes], mode: str) -> Feeder:
    feeder = Feeder(pair.meter_end, frames, mode)
    feeder.start()
    return feeder


def scan(*args: str, timeout: float = 60) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "smlogger", "scan", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


SCAN_KEYS = {"port", "verdict", "hint", "meter_id", "crc", "quirks", "obis", "bytes", "frames_ok",
             "crc_errors"}  # fmt: skip


# ---- scan ----------------------------------------------------------------------------------


def test_scan_sml(pty_pair: PtyPair, frames: list[bytes]) -> None:
    feeder = feed(pty_pair, frames, "sml")
    try:
        code, results, stderr = scan(str(pty_pair.logger_end), "--seconds", "6")
    finally:
        feeder.stop()
    assert code == 0, stderr
    [result] = results
    assert set(result) >= SCAN_KEYS
    assert result["port"] == str(pty_pair.logger_end)
    assert result["verdict"] == "sml"
    assert result["meter_id"] == METER_ID
    assert result["manufacturer"] == "Iskraemeco (ISK)"
    assert result["crc"] == "x25"
    assert result["quirks"] == []
    assert result["frames_ok"] >= 3 and result["crc_errors"] == 0
    assert 0.3 <= result["interval_s"] <= 3.0  # the feeder writes one frame a second
    energy = next(v for v in result["obis"] if v["obis"] == "1-0:1.8.0*255")
    assert energy["name"] == "Import total"
    assert energy["unit"] == "kWh"
    assert energy["value"] >= IMPORT_KWH
    assert f'port = "{pty_pair.logger_end}"' in result["config"]
    assert "[[meter]]" in result["config"]
    assert stderr == ""  # no progress line when stderr is not a terminal


@pytest.mark.parametrize("mode", MODES)
def test_scan_verdicts(mode: str, pty_pair: PtyPair, frames: list[bytes]) -> None:
    feeder = feed(pty_pair, frames, mode)
    try:
        code, results, stderr = scan(str(pty_pair.logger_end), "--seconds", "3")
    finally:
        feeder.stop()
    assert code == 1, stderr
    [result] = results
    assert set(result) >= SCAN_KEYS
    assert result["verdict"] == mode
    assert result["meter_id"] is None and result["obis"] == [] and result["frames_ok"] == 0
    assert result["hint"]
    if mode == "silent":
        assert result["bytes"] == 0
        assert "PIN" in result["hint"]
    elif mode == "seven_bit":
        assert result["crc_errors"] >= 1 and result["bytes"] > 300
        assert "8N1" in result["hint"]
    elif mode == "noise":
        assert result["bytes"] > 300
        assert "also listened at 2400, 4800, 19200, 300 baud" in result["hint"]
    else:
        assert "/ISK5MT174-0001" in result["sentence"]


def test_scan_busy_and_missing(pty_pair: PtyPair, tmp_path: Path) -> None:
    import serial

    # another reader holding the port with an exclusive lock, as a running smlogger does
    with serial.Serial(str(pty_pair.logger_end), exclusive=True):
        code, results, _ = scan(str(pty_pair.logger_end), str(tmp_path / "ttyUSB9"))
    assert code == 1
    busy, missing = results
    assert busy["verdict"] == "busy"
    assert "in use by another program" in busy["sentence"]
    assert "stop the other one" in busy["hint"]
    assert missing["verdict"] == "error"
    assert missing["sentence"] == f"{tmp_path / 'ttyUSB9'} does not exist"
    assert "/dev/serial/by-id" in missing["hint"]


# ---- the running logger -----------------------------------------------------------------------


@dataclass
class Logger:
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=20) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        if path.startswith("/api") or path == "/healthz":
            return status, json.loads(body)
        return status, body.decode("utf-8")

    def diagnosis(self) -> dict[str, Any]:
        status = self.get("/api/status")[1]
        return dict(status["sources"]["meter"].get("diagnosis") or {})

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()  # no logger left behind for the next test
            self.process.wait(10)
            pytest.fail(f"smlogger run ignored SIGTERM for 60 s:\n{self.log.read_text()}")
        text = self.log.read_text()
        assert code == 0, text
        return text


def start_logger(port: Path, tmp_path: Path) -> Logger:
    http = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "logger.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "smlogger", "run", "--port", str(port), "--data-dir",
             str(tmp_path / "data"), "--http", f"127.0.0.1:{http}", "--reconnect-max", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    logger = Logger(process, f"http://127.0.0.1:{http}", log)

    def up() -> bool:
        if process.poll() is not None:
            pytest.fail(f"smlogger run exited:\n{log.read_text()}")
        try:
            return logger.get("/api/status")[0] == 200
        except HTTP_TROUBLE:
            return False

    wait_for(up, 30, "the web server")
    return logger


def banner(page: str) -> str:
    """The server-rendered diagnosis banner's text, or "" when it is hidden."""
    start = page.index('id="diag"')
    head = page[start : page.index(">", start)]
    if "hidden" in head:
        return ""
    return page[start : page.index("</section>", start)]


@pytest.mark.parametrize("mode", MODES)
def test_running_logger_diagnoses_then_heals(
    mode: str, pty_pair: PtyPair, frames: list[bytes], tmp_path: Path
) -> None:
    feeder = feed(pty_pair, frames, mode)
    logger = start_logger(pty_pair.logger_end, tmp_path)
    try:
        found = wait_for(
            lambda: (d := logger.diagnosis()).get("code") == mode and d,
            30,
            f"{mode} diagnosis",
            ignore=HTTP_TROUBLE,
        )
        status = logger.get("/api/status")[1]["sources"]["meter"]
        assert status["state"] == "no data"
        assert status["stats"]["bytes"] == (0 if mode == "silent" else status["stats"]["bytes"])
        if mode == "seven_bit":
            assert status["stats"]["crc_errors"] >= 1  # published without any good frame
        code, health = logger.get("/healthz")
        assert code == 503
        assert health["status"] == "unhealthy"
        assert health["reasons"] == [f"meter: no valid frame yet: {found['sentence']}"]
        live = logger.get("/api/live")[1]
        assert live["problems"][0]["code"] == mode
        assert live["link"]["diagnosis"]["sentence"] == found["sentence"]
        text = banner(logger.get("/")[1])
        assert found["sentence"] in text.replace("&#039;", "'")

        feeder.mode = "sml"  # the head is fixed
        wait_for(
            lambda: logger.get("/healthz")[0] == 200,
            30,
            "healthz 200 after good frames",
            ignore=HTTP_TROUBLE,
        )
        wait_for(
            lambda: logger.diagnosis().get("code") == "ok", 30, "diagnosis ok", ignore=HTTP_TROUBLE
        )
        assert logger.get("/api/live")[1]["problems"] == []
        assert banner(logger.get("/")[1]) == ""
        assert logger.get("/api/status")[1]["sources"]["meter"]["state"] == "connected"
    finally:
        feeder.stop()
        text = logger.stop()
    # said once in the log, not once per check
    assert text.count(found["sentence"]) == 1, text


def test_running_logger_missing_port_then_plugged_in(frames: list[bytes], tmp_path: Path) -> None:
    pair = PtyPair(tmp_path)  # not started: the IR head is not plugged in
    logger = start_logger(pair.logger_end, tmp_path)
    feeder = None
    try:
        sentence = f"{pair.logger_end} does not exist"
        wait_for(
            lambda: logger.diagnosis().get("sentence") == sentence,
            30,
            "missing diagnosis",
            ignore=HTTP_TROUBLE,
        )
        assert logger.diagnosis()["code"] == "missing"
        code, health = logger.get("/healthz")
        assert code == 503
        assert health["reasons"] == [f"meter: no valid frame yet: {sentence}"]
        assert sentence in banner(logger.get("/")[1])

        pair.start()
        feeder = feed(pair, frames, "sml")
        wait_for(
            lambda: logger.get("/healthz")[0] == 200,
            30,
            "healthz 200 once plugged in",
            ignore=HTTP_TROUBLE,
        )
        assert logger.get("/api/live")[1]["problems"] == []
    finally:
        if feeder is not None:
            feeder.stop()
        text = logger.stop()
        if pair.proc is not None:
            pair.stop()
    assert text.count(f"{sentence}. Hint:") == 1, text


# ---- the banner in a browser at phone width -------------------------------------------------


def test_banner_visible_on_a_phone(pty_pair: PtyPair, frames: list[bytes], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from test_browser import make_driver

    feeder = feed(pty_pair, frames, "silent")
    logger = start_logger(pty_pair.logger_end, tmp_path)
    driver = None
    try:
        # (in the try: a browser that fails to start must not leave the logger running)
        driver = make_driver(width=390, height=844)
        # headless Chromium keeps windows at least 500 px wide: emulate the phone's viewport
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True},
        )
        # opened while the logger still listens: the banner appears live (SSE status events)
        driver.get(logger.base + "/")
        box = driver.find_element(By.ID, "diag")

        def shown() -> bool:
            return bool(box.is_displayed()) and "no bytes at all" in box.text

        wait_for(shown, 20, "the silent banner")
        assert "PIN" in box.text  # the hint is on screen, not in a tooltip
        geometry = driver.execute_script(
            "const r = document.getElementById('diag').getBoundingClientRect();"
            "return {left: r.left, right: r.right, top: r.top, bottom: r.bottom,"
            " width: window.innerWidth, height: window.innerHeight};"
        )
        assert geometry["width"] == 390
        assert geometry["left"] >= 0 and geometry["right"] <= geometry["width"]
        assert 0 <= geometry["top"] < geometry["height"]  # on the first screen, no scrolling
        assert box.find_element(By.CSS_SELECTOR, ".diag-source").text == "meter:"

        feeder.mode = "sml"
        wait_for(lambda: not box.is_displayed(), 20, "the banner to go once frames arrive")
        # the link line is a separate update of the page: wait for it too
        link = driver.find_element(By.ID, "link-text")
        wait_for(lambda: link.text == "Connected", 30, "the link line to say Connected")
    finally:
        if driver is not None:
            driver.quit()
        feeder.stop()
        logger.stop()


def test_scan_progress_only_on_a_terminal(pty_pair: PtyPair) -> None:
    import pty as ptymod

    master, slave = ptymod.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "smlogger", "scan", str(pty_pair.logger_end), "--seconds", "2"],
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=60,
        )
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert proc.returncode == 1
    assert f"\r\x1b[K{pty_pair.logger_end} at 9600 8N1:".encode() in seen
    assert b"bytes, 0 frames" in seen
    report = proc.stdout.decode()
    assert report.startswith(f"{pty_pair.logger_end} (9600 8N1): silent - no bytes at all")
    assert "\r" not in report


def test_second_logger_on_the_same_port_is_busy(
    pty_pair: PtyPair, frames: list[bytes], tmp_path: Path
) -> None:
    feeder = feed(pty_pair, frames, "sml")
    first = start_logger(pty_pair.logger_end, tmp_path / "first")
    second = None
    try:
        wait_for(
            lambda: first.get("/healthz")[0] == 200,
            30,
            "the first logger reads frames",
            ignore=HTTP_TROUBLE,
        )
        second = start_logger(pty_pair.logger_end, tmp_path / "second")
        found = wait_for(
            lambda: (d := second.diagnosis()).get("code") == "busy" and d,
            30,
            "busy diagnosis",
            ignore=HTTP_TROUBLE,
        )
        assert found["sentence"] == f"{pty_pair.logger_end} is in use by another program"
        assert "Only one program can read an IR head" in found["hint"]
        code, health = second.get("/healthz")
        assert code == 503
        assert health["reasons"] == [f"meter: no valid frame yet: {found['sentence']}"]
        assert found["sentence"] in banner(second.get("/")[1])
        # scan sees the same while a logger holds the port
        code, results, _ = scan(str(pty_pair.logger_end), "--seconds", "1")
        assert (code, results[0]["verdict"]) == (1, "busy")
    finally:
        feeder.stop()
        if second is not None:
            second.stop()
        first.stop()


def test_scan_a_file_and_a_directory(tmp_path: Path) -> None:
    recording = tmp_path / "meter.bin"
    recording.write_bytes(b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01")
    code, results, _ = scan(str(recording), str(tmp_path), "--seconds", "1")
    assert code == 1
    assert [(r["verdict"], r["sentence"]) for r in results] == [
        ("error", f"{recording} is not a serial device"),
        ("error", f"{tmp_path} is not a serial device"),
    ]
    assert "--replay" in results[0]["hint"]


# opens a serial port as `nobody`, once Python, pyserial and smlogger are loaded (nobody may not
# read them where they are installed); prints the diagnosis of the failure as JSON
OPEN_AS_NOBODY = """
import json, os, sys
import serial
from smlogger.diagnose import open_failure
from smlogger.sources import SerialSettings, SerialSource
source = SerialSource(SerialSettings(sys.argv[1], 9600, 8, "N", 1.0, False, False), reconnect_max=1)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
try:
    source._open()
except OSError as exc:
    print(json.dumps(open_failure(source.target, exc).as_dict()))
else:
    print(json.dumps({"code": "opened"}))
"""


def test_permission_denied_names_dialout(pty_pair: PtyPair, tmp_path: Path) -> None:
    """A port the user may not open: the OS's EACCES becomes the `dialout` hint."""
    from smlogger.diagnose import open_failure
    from smlogger.sources import SerialSettings, SerialSource

    if os.geteuid() == 0:
        # root opens anything: a child that dropped to `nobody` tries the pty (root:tty 0620).
        # A child process, not a fork: a fork of the threaded pytest process can inherit a
        # lock another thread held at that moment and hang on it.
        device = os.path.realpath(pty_pair.logger_end)
        root = Path(__file__).resolve().parent.parent
        proc = subprocess.run(
            [sys.executable, "-c", OPEN_AS_NOBODY, device],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(root)},
            cwd="/",  # a folder nobody may be in
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        found = json.loads(proc.stdout)
    else:
        device = str(tmp_path / "ttyUSB0")
        Path(device).touch(mode=0)
        settings = SerialSettings(device, 9600, 8, "N", 1.0, False, False)
        source = SerialSource(settings, reconnect_max=1)
        with pytest.raises(OSError) as caught:
            source._open()
        found = open_failure(source.target, caught.value).as_dict()
    assert found["code"] == "permission"
    assert found["sentence"] == f"no permission to open {device}"
    assert "'dialout' group" in found["hint"]


def test_pipeline_damaged_frames_in_process(pty_pair: PtyPair, frames: list[bytes]) -> None:
    """Frames that all fail their CRC are no data; half of them failing is a visible warning on
    a link that still delivers."""
    from smlogger.live import LiveState
    from smlogger.pipeline import MeterSpec, Pipeline
    from smlogger.sources import SerialSettings, SerialSource

    def damaged(frame: bytes) -> bytes:
        broken = bytearray(frame)
        broken[len(broken) // 2] ^= 0x10
        return bytes(broken)

    live = LiveState()
    settings = SerialSettings(str(pty_pair.logger_end), 9600, 8, "N", 1.0, False, False)
    pipeline = Pipeline([MeterSpec("house", SerialSource(settings, reconnect_max=1))], [], live)
    feeder = Feeder(pty_pair.meter_end, [damaged(f) for f in frames], "sml")
    pipeline.start()
    feeder.start()
    try:

        def source() -> dict[str, Any]:
            return live.source_status()["house"]

        wait_for(lambda: (source()["diagnosis"] or {}).get("code") == "crc_errors", 15, "damage")
        assert source()["state"] == "no data"
        assert "every one is damaged" in source()["diagnosis"]["sentence"]
        assert source()["stats"]["crc_errors"] >= 3 and source()["stats"]["frames_ok"] == 0

        feeder.frames = [f if i % 2 else damaged(f) for i, f in enumerate(frames)]
        wait_for(lambda: source()["state"] == "connected", 15, "good frames")
        wait_for(
            lambda: "of the frames arrive damaged" in source()["diagnosis"]["sentence"],
            15,
            "the damaged share",
        )
        assert source()["diagnosis"]["code"] == "crc_errors"
        assert source()["state"] == "connected"
    finally:
        feeder.stop()
        pipeline.stop(4)
