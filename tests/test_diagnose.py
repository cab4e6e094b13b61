"""The diagnosis classifier, the link counts it judges, /healthz reasons and scan's helpers.

Fast and in-process; the same findings on a real pty are in test_diagnose_pty.py.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import pytest

from smlogger import sml
from smlogger.diagnose import (
    DECIDE_AFTER_S,
    SILENT_AFTER_S,
    Observation,
    classify,
    open_failure,
)
from smlogger.health import unhealthy_reasons
from smlogger.linkwatch import LinkWatch
from smlogger.obisnames import obis_name
from smlogger.scan import candidates, human_value, manufacturer
from smlogger.sources import split_frames
from smlogger.web.payload import link_for_meter, source_problems

MT175 = "ISKRA_MT175_eHZ.bin"
D0_TELEGRAM = (
    b"/ISK5MT174-0001\r\n\r\n1-0:0.0.0*255(12345678)\r\n1-0:1.8.0*255(0012339.7*kWh)\r\n"
    b"1-0:2.8.0*255(0000000.0*kWh)\r\n!\r\n"
)


class Clock:
    """A hand-driven monotonic clock for LinkWatch windows."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def watched(chunks: list[bytes], seconds: float, *, window: float = 15.0) -> Observation:
    """Feed `chunks` spread over `seconds` through a decoder into a LinkWatch."""
    clock = Clock()
    watch = LinkWatch(window, clock)
    decoder = sml.Decoder()
    step = seconds / max(1, len(chunks))
    for chunk in chunks:
        clock.t += step
        watch.data(chunk)
        watch.frames(decoder.feed(chunk))
    return watch.observation()


def recording_frames(recordings_dir: Path) -> list[bytes]:
    return split_frames((recordings_dir / MT175).read_bytes())


def even_parity(data: bytes) -> bytes:
    """7E1 characters as an 8N1 port reads them: the parity bit lands in bit 7."""
    return bytes(b | (0x80 if bin(b).count("1") % 2 else 0) for b in data)


# ---- classify on real byte streams -------------------------------------------------------------


def test_good_sml_is_ok(recordings_dir: Path) -> None:
    obs = watched(recording_frames(recordings_dir), 10)
    assert obs.frames_ok == 10
    assert classify(obs).code == "ok"
    assert not classify(obs).problem


def test_seven_bit_stream(recordings_dir: Path) -> None:
    frames = [bytes(b & 0x7F for b in f) for f in recording_frames(recordings_dir)]
    obs = watched(frames, 10)
    assert obs.frames_ok == 0 and obs.high_bytes == 0 and obs.start_sequences >= 9
    found = classify(obs)
    assert found.code == "seven_bit"
    assert "8th bit" in found.sentence
    assert "8N1" in found.hint
    # read with 7E1 from the config: the hint names the settings to change
    configured = classify(Observation(**{**obs.__dict__, "bytesize": 7, "parity": "E"}))
    assert 'bytesize = 8 and parity = "N"' in configured.hint


def test_noise_and_damaged_frames(recordings_dir: Path) -> None:
    rng = random.Random(7)
    noise = [bytes(rng.getrandbits(8) for _ in range(300)) for _ in range(10)]
    found = classify(watched(noise, 10))
    assert found.code == "noise"
    assert "9600" in found.hint
    # real frames with a flipped bit in each: the frames arrive, all damaged
    damaged = []
    for frame in recording_frames(recordings_dir):
        broken = bytearray(frame)
        broken[len(broken) // 2] ^= 0x10
        damaged.append(bytes(broken))
    found = classify(watched(damaged, 10))
    assert found.code == "crc_errors"
    assert "misaligned or stray light" in found.sentence


def test_high_crc_rate_with_some_good_frames(recordings_dir: Path) -> None:
    frames = recording_frames(recordings_dir)
    mixed = []
    for index, frame in enumerate(frames):
        if index % 2:
            broken = bytearray(frame)
            broken[40] ^= 0x01
            frame = bytes(broken)
        mixed.append(frame)
    found = classify(watched(mixed, 10))
    assert found.code == "crc_errors"
    assert found.sentence.startswith("50% of the frames arrive damaged")


@pytest.mark.parametrize("parity", [False, True], ids=["8N1-text", "7E1-read-as-8N1"])
def test_d0_text(parity: bool) -> None:
    telegram = even_parity(D0_TELEGRAM) if parity else D0_TELEGRAM
    # split inside the identification line, as reads do
    obs = watched([telegram[:7], telegram[7:], telegram, telegram], 8)
    found = classify(obs)
    assert found.code == "d0"
    assert "(/ISK5MT174-0001)" in found.sentence


def test_silent_listening_and_head_removed(recordings_dir: Path) -> None:
    assert classify(Observation(listened_s=2.0)).code == "listening"
    assert classify(Observation(listened_s=SILENT_AFTER_S)).code == "silent"
    assert classify(Observation(listened_s=1.0, complete=True)).code == "silent"
    found = classify(Observation(listened_s=SILENT_AFTER_S + 1))
    assert "PIN" in found.hint and "InF" in found.hint
    # bytes without a frame for a moment: not judged before DECIDE_AFTER_S
    early = Observation(listened_s=DECIDE_AFTER_S - 1, bytes=500, high_bytes=90)
    assert classify(early).code == "listening"
    # frames arrived, then the head fell off: silent once no byte came for SILENT_AFTER_S
    clock = Clock()
    watch = LinkWatch(15.0, clock)
    decoder = sml.Decoder()
    for frame in recording_frames(recordings_dir)[:3]:
        clock.t += 1
        watch.data(frame)
        watch.frames(decoder.feed(frame))
    for _ in range(int(SILENT_AFTER_S) * 2 + 1):
        clock.t += 0.5
        watch.data(b"")
    assert classify(watch.observation()).code == "silent"


def test_window_forgets_old_trouble(recordings_dir: Path) -> None:
    clock = Clock()
    watch = LinkWatch(15.0, clock)
    decoder = sml.Decoder()
    frames = recording_frames(recordings_dir)
    for frame in frames:
        seven = bytes(b & 0x7F for b in frame)
        clock.t += 1
        watch.data(seven)
        watch.frames(decoder.feed(seven))
    assert classify(watch.observation()).code == "seven_bit"
    for frame in frames * 2:  # the port is fixed: good frames
        clock.t += 1
        watch.data(frame)
        watch.frames(decoder.feed(frame))
    obs = watch.observation()
    assert obs.crc_errors == 0  # the 7-bit frames left the window
    assert classify(obs).code == "ok"


# ---- open failures -----------------------------------------------------------------------------


def test_open_failures_from_real_os_errors(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB7"
    with pytest.raises(OSError) as caught:
        os.open(missing, os.O_RDWR)
    found = open_failure(str(missing), caught.value)
    assert found.code == "missing"
    assert found.sentence == f"{missing} does not exist"
    found = open_failure("/dev/ttyUSB0", PermissionError(errno.EACCES, "Permission denied"))
    assert found.code == "permission" and "dialout" in found.hint
    found = open_failure("/dev/ttyUSB0", OSError(errno.EBUSY, "Device or resource busy"))
    assert found.code == "busy"
    found = open_failure(str(tmp_path), IsADirectoryError(errno.EISDIR, "Is a directory"))
    assert (found.code, found.sentence) == ("error", f"{tmp_path} is not a serial device")
    found = open_failure("/dev/ttyUSB0", OSError(errno.EIO, "Input/output error"))
    assert (found.code, found.sentence) == ("error", "cannot open /dev/ttyUSB0: Input/output error")


# ---- /healthz and the page's banner -------------------------------------------------------------


def test_health_reasons() -> None:
    silent = "no bytes at all: the IR head receives nothing"
    diagnosis = {"code": "silent", "sentence": silent, "hint": "h"}
    sources: dict[str, dict[str, Any]] = {
        "house": {"watchdog_s": 30.0, "last_frame_age_s": 2.0, "diagnosis": None},
        "garage": {"watchdog_s": 30.0, "last_frame_age_s": None, "diagnosis": diagnosis},
        "old": {"watchdog_s": 30.0, "last_frame_age_s": 95.0},
        "replay": {"watchdog_s": None, "last_frame_age_s": None},
    }
    sinks: dict[str, dict[str, Any]] = {
        "sql": {"db": "down", "last_error": "OperationalError: gone"},
        "csv": {"failing": False, "alive": True, "last_error": "disk full (an hour ago)"},
    }
    assert unhealthy_reasons(sources, sinks) == [
        "garage: no valid frame yet: no bytes at all: the IR head receives nothing",
        "old: no valid frame for 95 s (watchdog 30 s)",
        "sink sql: database down (OperationalError: gone)",
    ]
    assert unhealthy_reasons({"house": sources["house"]}, {"csv": sinks["csv"]}) == []
    # MQTT with its broker away is degraded, not a failure (the meters are still stored) ...
    mqtt = {"state": "unreachable", "degraded": True, "failing": False, "alive": True}
    assert unhealthy_reasons({}, {"mqtt": mqtt}) == []
    # ... unless its worker thread died
    assert unhealthy_reasons({}, {"mqtt": {**mqtt, "alive": False}}) == [
        "sink mqtt: stopped (writes fail)"
    ]


def test_banner_lists_problems_worst_first() -> None:
    silent = {"code": "silent", "sentence": "s", "hint": "h"}
    missing = {"code": "missing", "sentence": "/dev/x does not exist", "hint": "plug"}
    sources = {
        "a": {"state": "connected", "diagnosis": {"code": "ok", "sentence": "", "hint": ""}},
        "b": {"state": "no data", "diagnosis": silent, "meters": []},
        "c": {"state": "waiting", "diagnosis": missing, "meters": []},
    }
    problems = source_problems(sources)
    assert [p["source"] for p in problems] == ["b", "c"]  # "no data" ranks below "waiting"
    assert problems[1] == {"source": "c", "code": "missing", "sentence": missing["sentence"],
                           "hint": "plug"}  # fmt: skip
    link = link_for_meter({"b": sources["b"]}, None)
    assert link["diagnosis"]["code"] == "silent"


# ---- scan helpers ------------------------------------------------------------------------------


def test_obis_names() -> None:
    assert obis_name("1-0:1.8.0*255") == "Import total"
    assert obis_name("1-0:16.7.0") == "Active power total"
    assert obis_name("1-0:99.99.9*255") is None


def test_manufacturer_from_server_id() -> None:
    assert manufacturer(bytes.fromhex("0a01445a47000282225e")) == "DZG Metering (DZG)"
    assert manufacturer(bytes.fromhex("06454d4801027156cd45")) == "EMH metering (EMH)"
    assert manufacturer(bytes.fromhex("090149534b000403df63")) == "Iskraemeco (ISK)"
    assert manufacturer(bytes.fromhex("0a01585958000282225e")) == "XYX"
    assert manufacturer(bytes.fromhex("3032323830383136")) is None


def test_human_values(recordings_dir: Path) -> None:
    frame = next(f for f in sml.decode((recordings_dir / MT175).read_bytes()) if f["ok"])
    values = {v.obis: v for v in map(human_value, sml.entries(frame))}
    energy = values["1-0:1.8.0*255"]
    assert (energy.name, energy.value, energy.unit, energy.text) == (
        "Import total", 22462.4136, "kWh", "22462.4136"
    )  # fmt: skip
    assert (values["1-0:16.7.0*255"].value, values["1-0:16.7.0*255"].unit) == (168, "W")
    assert values["1-0:0.0.9*255"].value == "090149534b000403df63"
    assert values["129-129:199.130.3*255"].value == "ISK"


def test_candidates_order_and_dedup(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    (dev / "serial" / "by-id").mkdir(parents=True)
    for name in ("ttyUSB0", "ttyUSB1", "ttyACM0", "ttyAMA0", "ttyS0"):
        (dev / name).touch()
    (dev / "serial" / "by-id" / "usb-FTDI_IR_head-if00-port0").symlink_to("../../ttyUSB1")
    (dev / "serial0").symlink_to("ttyAMA0")
    (dev / "serial" / "by-id" / "usb-gone").symlink_to("../../ttyUSB9")  # dangling
    assert candidates(dev) == [
        str(dev / "serial" / "by-id" / "usb-FTDI_IR_head-if00-port0"),
        str(dev / "ttyUSB0"),
        str(dev / "ttyACM0"),
        str(dev / "serial0"),
    ]


def test_a_fixed_seven_bit_port_is_ok_at_the_first_good_frame(recordings_dir: Path) -> None:
    clock = Clock()
    watch = LinkWatch(15.0, clock)
    decoder = sml.Decoder()
    frames = recording_frames(recordings_dir)
    for frame in frames[:6]:
        seven = bytes(b & 0x7F for b in frame)
        clock.t += 1
        watch.data(seven)
        watch.frames(decoder.feed(seven))
    clock.t += 1
    watch.data(frames[6])
    watch.frames(decoder.feed(frames[6]))
    assert classify(watch.observation()).code == "ok"
    # damaged 8-bit frames are not forgotten that way: a misaligned head stays visible
    watch = LinkWatch(15.0, clock)
    for frame in frames[:6]:
        broken = bytearray(frame)
        broken[40] ^= 0x01
        clock.t += 1
        watch.data(bytes(broken))
        watch.frames(decoder.feed(bytes(broken)))
    clock.t += 1
    watch.data(frames[6])
    watch.frames(decoder.feed(frames[6]))
    assert classify(watch.observation()).code == "crc_errors"


def test_holders_names_a_process_with_the_device_open(tmp_path: Path) -> None:
    import subprocess

    from smlogger.scan import holders

    device = tmp_path / "ttyUSB0"
    device.touch()
    with open(device, "rb") as held:
        proc = subprocess.Popen(["sleep", "30"], stdin=held)
    try:
        assert holders(str(device)) == [f"pid {proc.pid} (sleep)"]
    finally:
        proc.kill()
        proc.wait()
    assert holders(str(device)) == []


def test_metrics_carry_the_diagnosis() -> None:
    from datetime import datetime, timezone

    from smlogger.live import LiveState
    from smlogger.web.metrics import render_metrics

    live = LiveState()
    live.set_source("house", "no data", detail="7 bit")
    live.set_diagnosis("house", {"code": "seven_bit", "sentence": "s", "hint": "h"})
    live.set_source("garage", "waiting")  # not diagnosed (a replay): no sample
    now = datetime.now(timezone.utc)
    text = render_metrics(live, now, now, 0)
    samples = [line for line in text.splitlines() if line.startswith("smlogger_source_diagnosis")]
    assert samples == ['smlogger_source_diagnosis{source="house",code="seven_bit"} 1']


def test_a_full_disk_makes_the_logger_unhealthy_and_says_where() -> None:
    sinks = {
        "sql": {"db": "ok", "journal": "disk full on /var/lib/smlogger/spool"},
        "csv": {"state": "disk full on /var/lib/smlogger/csv/0a01"},
        "sql2": {"db": "disk full", "last_error": "disk full on /data (OperationalError)"},
    }
    assert unhealthy_reasons({}, sinks) == [
        "sink sql: disk full on /var/lib/smlogger/spool",
        "sink csv: disk full on /var/lib/smlogger/csv/0a01",
        "sink sql2: database disk full (disk full on /data (OperationalError))",
    ]
