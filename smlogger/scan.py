"""``smlogger scan``: which serial port has the IR head, and what does the meter send?

For every candidate port (or the ports given) the scan listens at 9600 8N1, the setting of
every SML meter, and judges what it heard with `smlogger.diagnose.classify` -- the same
classifier the running logger uses. When it hears bytes but no SML and no D0 text, it listens
again at other speeds, because a wrong baud rate looks exactly like that. For an SML meter it
prints the meter id, manufacturer, CRC kind, quirks, frame interval, every value with its name,
and a `[[meter]]` block to paste into the config file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional, cast

from smlogger import sml
from smlogger.diagnose import Diagnosis, busy, classify, open_failure
from smlogger.linkwatch import LinkWatch
from smlogger.meterid import MANUFACTURERS, parse_server_id
from smlogger.obisnames import obis_name

log = logging.getLogger(__name__)

DEFAULT_SECONDS = 6.0
READ_TIMEOUT_S = 0.2
ENOUGH_FRAMES = 4  # a scan of an SML port stops early once it has this many good frames
# tried after "noise" at 9600 8N1: a head or meter at another speed sounds like noise
OTHER_SPEEDS = (2400, 4800, 19200, 300)
RETRY_SECONDS_MAX = 3.0

# verdicts of `scan` for the classifier's codes (the logger keeps the finer codes)
_VERDICTS = {
    "ok": "sml",
    "listening": "silent",
    "missing": "error",
    "permission": "error",
    "busy": "busy",
    "error": "error",
    "silent": "silent",
    "seven_bit": "seven_bit",
    "noise": "noise",
    "d0": "d0",
}


@dataclass(frozen=True)
class PortSettings:
    """How the scan opens a port."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1

    def __str__(self) -> str:
        stop = f"{self.stopbits:g}"
        return f"{self.baudrate} {self.bytesize}{self.parity}{stop}"


@dataclass
class Value:
    """The last value of one OBIS code, ready for people ("Import total 12339.7 kWh")."""

    obis: str
    name: Optional[str]
    value: Any
    unit: Optional[str]
    text: str


@dataclass
class PortResult:
    """Everything the scan found out about one port."""

    port: str
    settings: PortSettings
    diagnosis: Diagnosis
    verdict: str
    bytes: int = 0
    frames_ok: int = 0
    crc_errors: int = 0
    meter_ids: list[str] = field(default_factory=list)
    manufacturer: Optional[str] = None
    crc: Optional[str] = None
    quirks: list[str] = field(default_factory=list)
    interval_s: Optional[float] = None
    values: list[Value] = field(default_factory=list)
    hint: str = ""

    def config_snippet(self) -> str:
        """A `[[meter]]` block for this port (SML ports only)."""
        lines = ["[[meter]]", 'name = "meter"', f'port = "{self.port}"']
        if self.settings.baudrate != 9600:
            lines.append(f"baudrate = {self.settings.baudrate}")
        if self.crc == "kermit":
            lines.append('crc = "kermit"')
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, Any]:
        """The `scan --json` object of this port."""
        return {
            "port": self.port,
            "settings": str(self.settings),
            "verdict": self.verdict,
            "code": self.diagnosis.code,
            "sentence": self.diagnosis.sentence,
            "hint": self.hint,
            "meter_id": self.meter_ids[0] if self.meter_ids else None,
            "meter_ids": self.meter_ids,
            "manufacturer": self.manufacturer,
            "crc": self.crc,
            "quirks": self.quirks,
            "interval_s": self.interval_s,
            "obis": [
                {"obis": v.obis, "name": v.name, "value": v.value, "unit": v.unit}
                for v in self.values
            ],
            "bytes": self.bytes,
            "frames_ok": self.frames_ok,
            "crc_errors": self.crc_errors,
            "config": self.config_snippet() if self.verdict == "sml" else None,
        }


# ---- ports -----------------------------------------------------------------------------------


def candidates(dev: Path = Path("/dev")) -> list[str]:
    """Serial devices an IR head can be: /dev/serial/by-id/* first (stable names), then
    ttyUSB*, ttyACM* (USB heads) and ttyAMA*, serial0 (GPIO heads on a Raspberry Pi); a device
    reachable under several names is listed once, under its first name."""
    found: list[str] = []
    seen: set[str] = set()
    patterns = [("serial/by-id", "*"), (".", "ttyUSB*"), (".", "ttyACM*"), (".", "serial0")]
    patterns.append((".", "ttyAMA*"))
    for folder, pattern in patterns:
        base = dev / folder
        if not base.is_dir():
            continue
        for path in sorted(base.glob(pattern)):
            real = os.path.realpath(path)
            if real in seen or not os.path.exists(real):
                continue
            seen.add(real)
            found.append(os.path.normpath(str(path)))
    return found


def holders(port: str, proc: Path = Path("/proc")) -> list[str]:
    """Other processes that have `port` open ("pid 123 (vzlogger)"), as far as we may look.

    Pseudo-terminals are left out: the program that made one (socat, a terminal, ser2net's
    pty mode) always holds it open without reading from it."""
    real = os.path.realpath(port)
    if real.startswith("/dev/pts/"):
        return []
    own = os.getpid()
    out = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:  # another user's process, or it just ended
            continue
        if real in links:
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                name = "?"
            out.append(f"pid {entry.name} ({name})")
    return out


# ---- listening -------------------------------------------------------------------------------


class _Heard:
    """Decoded facts of the good frames heard on one port."""

    def __init__(self) -> None:
        self.meter_ids: list[str] = []
        self.server_ids: list[bytes] = []
        self.crc: Counter[str] = Counter()
        self.quirks: set[str] = set()
        self.frame_times: list[float] = []
        self.values: dict[str, sml.Entry] = {}

    def add(self, frame: sml.Frame, when: float) -> None:
        self.frame_times.append(when)
        if frame["crc"]:
            self.crc[frame["crc"]] += 1
        for body in sml.get_list_responses(frame):
            server_id = body.get("server_id")
            if isinstance(server_id, bytes) and server_id and server_id.hex() not in self.meter_ids:
                self.meter_ids.append(server_id.hex())
                self.server_ids.append(server_id)
            for entry in cast("list[sml.Entry]", body.get("values") or []):
                if entry["quirk"]:
                    self.quirks.add(entry["quirk"])
                self.values[entry["obis"]] = entry


def _open(port: str, settings: PortSettings) -> Any:
    import serial  # deferred: only needed when a port is opened

    try:
        return serial.Serial(
            port=port,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            timeout=READ_TIMEOUT_S,
            exclusive=True,  # flock: another smlogger (or pyserial user) shows as busy
        )
    except serial.SerialException as exc:
        raise OSError(getattr(exc, "errno", None), str(exc)) from exc


Progress = Callable[[str], None]


def listen(
    port: str,
    settings: PortSettings,
    seconds: float,
    progress: Progress = lambda text: None,
) -> tuple[Diagnosis, LinkWatch, _Heard]:
    """Listen on `port` for up to `seconds`; the finding, the counts and the decoded facts."""
    watch = LinkWatch(window_s=float("inf"))
    heard = _Heard()
    try:
        handle = _open(port, settings)
    except OSError as exc:
        return open_failure(port, exc), watch, heard
    others = holders(port)
    if others:
        handle.close()
        return busy(port, ", ".join(others)), watch, heard
    decoder = sml.Decoder()
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds and len(heard.frame_times) < ENOUGH_FRAMES:
            try:
                data = bytes(handle.read(4096))
            except OSError as exc:
                return open_failure(port, exc), watch, heard
            watch.data(data)
            if data:
                frames = decoder.feed(data)
                watch.frames(frames)
                now = time.monotonic()
                for frame in frames:
                    if frame["ok"]:
                        heard.add(frame, now)
            obs = watch.observation()
            progress(
                f"{port} at {settings}: {time.monotonic() - started:4.1f}/{seconds:g} s, "
                f"{obs.bytes} bytes, {obs.frames_ok} frames"
            )
    finally:
        handle.close()
    watch.frames(decoder.finish())
    diagnosis = classify(
        watch.observation(complete=True, bytesize=settings.bytesize, parity=settings.parity)
    )
    return diagnosis, watch, heard


def scan_port(port: str, seconds: float, progress: Progress = lambda text: None) -> PortResult:
    """Listen at 9600 8N1 and, when that gives noise, at the other speeds; the result."""
    settings = PortSettings()
    diagnosis, watch, heard = listen(port, settings, seconds, progress)
    if diagnosis.code == "noise":
        for speed in OTHER_SPEEDS:
            other = PortSettings(baudrate=speed)
            found, other_watch, other_heard = listen(
                port, other, min(seconds, RETRY_SECONDS_MAX), progress
            )
            if found.code in ("ok", "crc_errors", "d0") and (
                other_heard.frame_times or found.code == "d0"
            ):
                diagnosis, watch, heard, settings = found, other_watch, other_heard, other
                break
    return _result(port, settings, diagnosis, watch, heard)


def _result(
    port: str, settings: PortSettings, diagnosis: Diagnosis, watch: LinkWatch, heard: _Heard
) -> PortResult:
    obs = watch.observation(complete=True)
    verdict = _VERDICTS.get(diagnosis.code, "noise")
    if diagnosis.code == "crc_errors":
        verdict = "sml" if obs.frames_ok else "noise"
    hint = diagnosis.hint
    if diagnosis.code == "noise" and settings.baudrate == 9600:
        speeds = ", ".join(str(s) for s in OTHER_SPEEDS)
        hint += f" (The scan also listened at {speeds} baud: no SML there either.)"
    if verdict == "sml" and settings.baudrate != 9600:
        hint = f"The meter sends at {settings.baudrate} baud: set baudrate = {settings.baudrate}."
    elif verdict == "sml" and not hint:
        hint = "Add the [[meter]] block below to the config file, or run: smlogger run --port " + (
            port
        )
    result = PortResult(
        port=port,
        settings=settings,
        diagnosis=diagnosis,
        verdict=verdict,
        bytes=obs.bytes,
        frames_ok=obs.frames_ok,
        crc_errors=obs.crc_errors,
        hint=hint,
    )
    if heard.frame_times:
        result.meter_ids = list(heard.meter_ids)
        result.manufacturer = manufacturer(heard.server_ids[0]) if heard.server_ids else None
        result.crc = heard.crc.most_common(1)[0][0] if heard.crc else None
        result.quirks = sorted(heard.quirks)
        gaps = [b - a for a, b in zip(heard.frame_times, heard.frame_times[1:])]
        result.interval_s = round(statistics.median(gaps), 1) if gaps else None
        result.values = [human_value(entry) for entry in heard.values.values()]
    return result


# ---- presenting ------------------------------------------------------------------------------


def manufacturer(server_id: bytes) -> Optional[str]:
    """The manufacturer named by a server id's FLAG code (DIN 43863-5 and the older 6-byte
    form), e.g. "DZG Metering (DZG)"; None when the id carries no such code."""
    parsed = parse_server_id(server_id.hex())
    if parsed is None:
        return None
    known = MANUFACTURERS.get(parsed.flag)
    return f"{known} ({parsed.flag})" if known else parsed.flag


def human_value(entry: sml.Entry) -> Value:
    """One entry as people read it off the meter: energies in kWh, text as text."""
    value: Any = entry["value"]
    unit = entry["unit_symbol"]
    scaler = entry["scaler"] or 0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and unit == "Wh":
        decimals = max(0, 3 - scaler)
        value, unit = round(value / 1000, decimals), "kWh"
        text = f"{value:.{decimals}f}"
    elif isinstance(value, bytes):
        text = sml.format_value(entry)
        value = text
    elif value is None:
        text = ""
    else:
        text = sml.format_value(entry)
    return Value(entry["obis"], obis_name(entry["obis"]), value, unit, text)


def render(result: PortResult) -> str:
    """The human report of one port."""
    d = result.diagnosis
    lines = [f"{result.port} ({result.settings}): {result.verdict} - {d.sentence}"]
    if result.verdict == "sml":
        meter = ", ".join(result.meter_ids) or "no server id"
        lines.append(
            f"  meter {meter}" + (f", {result.manufacturer}" if result.manufacturer else "")
        )
        every = f"a frame every {result.interval_s:g} s" if result.interval_s else "one frame"
        quirks = ", ".join(result.quirks) or "none"
        lines.append(
            f"  CRC {result.crc}; quirks: {quirks}; {every}; "
            f"{result.frames_ok} frames, {result.crc_errors} CRC errors"
        )
        width = max((len(v.obis) for v in result.values), default=0)
        name_width = max((len(v.name or "") for v in result.values), default=0)
        for v in result.values:
            unit = f" {v.unit}" if v.unit else ""
            lines.append(f"  {v.obis:<{width}}  {v.name or '':<{name_width}}  {v.text}{unit}")
    else:
        lines.append(f"  {result.bytes} bytes, {result.frames_ok} frames, "
                     f"{result.crc_errors} CRC errors")  # fmt: skip
    if result.hint:
        lines.append(f"  hint: {result.hint}")
    if result.verdict == "sml":
        lines.append("  config:")
        lines += [f"    {line}" for line in result.config_snippet().splitlines()]
    return "\n".join(lines) + "\n"


class _TerminalProgress:
    """One overwritten status line on a terminal; nothing when stderr is not one."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.enabled = out.isatty()
        self.last = 0.0

    def __call__(self, text: str) -> None:
        if not self.enabled or time.monotonic() - self.last < 0.2:
            return
        self.last = time.monotonic()
        self.out.write("\r\x1b[K" + text)
        self.out.flush()

    def clear(self) -> None:
        if self.enabled:
            self.out.write("\r\x1b[K")
            self.out.flush()


# ---- command ---------------------------------------------------------------------------------


def register_cli(subparsers: Any) -> None:
    """Add `smlogger scan` to the command line."""
    parser = subparsers.add_parser(
        "scan",
        help="find the IR head: listen on serial ports and say what each one receives",
        description=(
            "Listen on each serial port (default: every /dev/serial/by-id/*, ttyUSB*, ttyACM*, "
            "ttyAMA* and serial0) at 9600 8N1 and report what arrives: sml (with the meter, its "
            "values and a [[meter]] config block), silent, seven_bit, noise, d0, busy or error, "
            "each with a hint. Exits 0 when a port delivered SML, 1 otherwise."
        ),
    )
    parser.add_argument("ports", nargs="*", metavar="PORT", help="ports to scan")
    parser.add_argument(
        "--seconds",
        type=_positive,
        default=DEFAULT_SECONDS,
        metavar="N",
        help="how long to listen on each port (an SML port stops early)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per port and line")
    parser.set_defaults(func=cmd_scan)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number > 0), got {text!r}") from None
    if not value > 0 or value > 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 3600, got {text!r}")
    return value


def cmd_scan(args: argparse.Namespace) -> int:
    """Scan the given or the candidate ports; 0 when one of them delivered SML."""
    ports: Iterable[str] = args.ports or candidates()
    ports = list(ports)
    if not ports:
        sys.stderr.write(
            "smlogger scan: no serial device found (looked for /dev/serial/by-id/*, "
            "/dev/ttyUSB*, /dev/ttyACM*, /dev/ttyAMA*, /dev/serial0).\n"
            "  hint: plug the IR head in (dmesg shows whether the kernel sees it), or name "
            "the port: smlogger scan /dev/ttyX\n"
        )
        return 1
    progress = _TerminalProgress(sys.stderr)
    found_sml = False
    for port in ports:
        result = scan_port(port, args.seconds, progress)
        progress.clear()
        found_sml = found_sml or result.verdict == "sml"
        if args.json:
            sys.stdout.write(json.dumps(result.as_json(), ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(render(result))
        sys.stdout.flush()
    return 0 if found_sml else 1
