"""What keeps SML frames from arriving, in one sentence and one hint: the classifier shared by
`smlogger scan` and the running logger.

Everything here is a pure function of what was observed on a link (byte and decoder counts,
ages, an OS error): no I/O, no clocks. `smlogger.linkwatch` collects the observation from a live
byte stream; `smlogger.scan` and `smlogger.pipeline` turn it into a `Diagnosis` with `classify`
or, when the port cannot even be opened, with `open_failure`.
"""

from __future__ import annotations

import errno as errno_codes
import os
import re
from dataclasses import asdict, dataclass
from typing import Literal, Optional

DiagnosisCode = Literal[
    "ok",
    "listening",
    "missing",
    "permission",
    "busy",
    "error",
    "silent",
    "seven_bit",
    "noise",
    "d0",
    "crc_errors",
]

# a meter pushes a frame every 1-4 s: after this long without one, "no frame" is a finding
DECIDE_AFTER_S = 5.0
# no byte at all for this long: the head hears nothing
SILENT_AFTER_S = 6.0
# the last good frame is older than this: judge the link by what arrives now
STALE_FRAME_S = 10.0
# fewer bytes than this say nothing about their bit pattern
MIN_BYTES = 32
# damaged frames: at least this many, and this share of all frames, is a problem worth a banner
CRC_ALERT_COUNT = 3
CRC_ALERT_RATE = 0.1

HEAD_PLACEMENT = (
    "Put the head on the meter's optical data window (the infrared eye next to the display, "
    "not the flashing pulse LED) with its cable pointing down, and press it flat"
)


@dataclass(frozen=True)
class Diagnosis:
    """A finding about one link: a stable `code`, a `sentence` saying what is wrong and a
    `hint` saying what to do (empty when nothing is to be done)."""

    code: DiagnosisCode
    sentence: str
    hint: str = ""

    @property
    def problem(self) -> bool:
        """True when the user has something to fix (not "ok", not "still listening")."""
        return self.code not in ("ok", "listening")

    def as_dict(self) -> dict[str, str]:
        """The JSON shape used by the API, the page and `scan --json`."""
        return asdict(self)


@dataclass(frozen=True)
class Observation:
    """What arrived on an open link during `listened_s` seconds (a scan, or the logger's window).

    `complete` says the observation period is over (a scan ends): the verdict is due now rather
    than after `DECIDE_AFTER_S`. `bytesize`, `parity` and `crc_mode` are the settings the link
    was read with, so the hint can name the one to change.
    """

    listened_s: float
    bytes: int = 0
    high_bytes: int = 0  # bytes with the 8th bit set
    start_sequences: int = 0  # SML transport start sequences seen in the raw bytes
    frames_ok: int = 0
    crc_errors: int = 0
    damaged: int = 0  # frames lost for other reasons: truncated, escape, parse, too long
    since_last_byte: Optional[float] = None
    since_last_frame: Optional[float] = None
    d0_ident: Optional[str] = None  # IEC 62056-21 identification ("ISK5MT174"), "" for data only
    complete: bool = False
    bytesize: int = 8
    parity: str = "N"
    crc_mode: str = "auto"


def classify(obs: Observation) -> Diagnosis:
    """The finding for an open link from what it delivered."""
    silent_now = obs.since_last_byte is not None and obs.since_last_byte >= SILENT_AFTER_S
    if obs.bytes == 0 or (silent_now and not obs.complete):
        if obs.complete or obs.listened_s >= SILENT_AFTER_S or silent_now:
            return _silent(obs)
        return Diagnosis("listening", "listening for the meter")
    fresh = obs.frames_ok > 0 and (
        obs.complete or (obs.since_last_frame is not None and obs.since_last_frame < STALE_FRAME_S)
    )
    if fresh:
        bad = obs.crc_errors + obs.damaged
        if bad >= CRC_ALERT_COUNT and bad / (bad + obs.frames_ok) >= CRC_ALERT_RATE:
            return Diagnosis(
                "crc_errors",
                f"{bad / (bad + obs.frames_ok):.0%} of the frames arrive damaged: "
                "head misaligned or stray light",
                f"{HEAD_PLACEMENT}; shade it from daylight and lamps.",
            )
        return Diagnosis("ok", "SML frames arrive")
    if not obs.complete and obs.listened_s < DECIDE_AFTER_S:
        return Diagnosis("listening", "listening for the meter")
    if obs.d0_ident is not None:
        ident = f" (/{obs.d0_ident})" if obs.d0_ident else ""
        return Diagnosis(
            "d0",
            f"the meter sends IEC 62056-21 (D0) text{ident}, not SML",
            "smlogger reads SML only. Some meters can be switched to SML in their menu or by the "
            "metering operator; otherwise use a D0 reader for this meter.",
        )
    if obs.bytes >= MIN_BYTES and obs.high_bytes == 0 and (obs.start_sequences or obs.crc_errors):
        return Diagnosis(
            "seven_bit",
            "SML arrives with the 8th bit of every byte cleared: the port is read with 7 data "
            "bits or with a parity bit",
            _seven_bit_hint(obs),
        )
    if obs.start_sequences or obs.crc_errors:
        sentence = "SML frames arrive but every one is damaged: head misaligned or stray light"
        hint = f"{HEAD_PLACEMENT}; shade it from daylight and lamps."
        if obs.crc_mode != "auto":
            hint += f' The meter may also use another CRC than crc = "{obs.crc_mode}": try "auto".'
        return Diagnosis("crc_errors", sentence, hint)
    return Diagnosis(
        "noise",
        "bytes arrive but no SML in them: wrong baud rate, ambient light or a misaligned head",
        "SML meters send at 9600 baud 8N1: check the port's speed. "
        f"{HEAD_PLACEMENT}, and shade it from daylight and lamps.",
    )


def _silent(obs: Observation) -> Diagnosis:
    # no number of seconds in the sentence: it stays the same while the silence lasts
    return Diagnosis(
        "silent",
        "no bytes at all: the IR head receives nothing",
        f"{HEAD_PLACEMENT}. Check that this port is the IR head's (`smlogger scan`). If the meter "
        "still sends nothing, its data output is switched off: get the PIN from your metering "
        "operator, enter it with a flashlight on the meter's light sensor, and switch the "
        "info output on (menu 'InF' -> 'On' on most eHZ meters).",
    )


def _seven_bit_hint(obs: Observation) -> str:
    if obs.bytesize != 8 or obs.parity != "N":
        return (
            f'This meter is read with bytesize = {obs.bytesize}, parity = "{obs.parity}": '
            'set bytesize = 8 and parity = "N" (SML is sent as 9600 8N1).'
        )
    return (
        "Something between the meter and smlogger strips the 8th bit: set the IR head, "
        "ser2net or network head to 9600 8N1 (8 data bits, no parity)."
    )


def open_failure(port: str, error: BaseException) -> Diagnosis:
    """The finding for a port that cannot be opened, from the OS error."""
    code = getattr(error, "errno", None)
    text = " ".join(str(error).split())
    lowered = text.lower()
    if code == errno_codes.ENOENT or "no such file" in lowered or "disappeared" in lowered:
        return Diagnosis(
            "missing",
            f"{port} does not exist",
            "Plug the IR head in, or fix the path: `smlogger scan` lists the serial devices; "
            "/dev/serial/by-id/... names stay the same across reboots and replugging.",
        )
    if code in (errno_codes.EACCES, errno_codes.EPERM) or "permission denied" in lowered:
        return Diagnosis(
            "permission",
            f"no permission to open {port}",
            "Add the user to the 'dialout' group (sudo usermod -aG dialout $USER, then log in "
            "again); the shipped systemd unit already runs in that group.",
        )
    if (
        code in (errno_codes.EBUSY, errno_codes.EAGAIN, errno_codes.EWOULDBLOCK)
        or "exclusively lock" in lowered
        or "resource busy" in lowered
    ):
        return busy(port)
    if code in (errno_codes.ENOTTY, errno_codes.EISDIR) or "inappropriate ioctl" in lowered:
        return Diagnosis(
            "error",
            f"{port} is not a serial device",
            "Name the IR head's serial port (/dev/ttyUSB0, /dev/serial/by-id/...); "
            "`smlogger scan` lists them. A recording is read with --replay.",
        )
    # the OS's words for the error number; pyserial's message repeats the port and the number
    reason = os.strerror(code) if isinstance(code, int) else re.sub(r"\[Errno \d+\] ", "", text)
    return Diagnosis(
        "error",
        f"cannot open {port}: {reason}",
        "Check the device and its driver (`dmesg` shows USB-serial errors) and the port "
        "settings; `smlogger scan` tests every serial port.",
    )


def busy(port: str, holders: str = "") -> Diagnosis:
    """Another process holds `port` (`holders`: who, when known)."""
    who = f" ({holders})" if holders else ""
    return Diagnosis(
        "busy",
        f"{port} is in use by another program{who}",
        "Only one program can read an IR head: stop the other one (another smlogger, a "
        "serial console, vzlogger, ModemManager) or read this meter from there.",
    )
