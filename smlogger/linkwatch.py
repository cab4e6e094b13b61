"""`LinkWatch`: counts what arrives on a link so `smlogger.diagnose.classify` can judge it.

The running logger keeps a sliding window (the last `window_s` seconds), so a head that is
realigned or a port that is fixed shows as fixed soon after; `smlogger scan` keeps everything
it heard. No I/O: callers hand over the bytes they read and the frames the decoder made.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from smlogger.diagnose import Observation

START_SEQUENCE = b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01"
WINDOW_S = 15.0  # holds at least three frames of a meter pushing every 4 s

# IEC 62056-21: "/MMMZ ident CR LF" (MMM manufacturer, Z baud rate character), and data lines
# such as "1-0:1.8.0*255(001234.5678*kWh)" or the short "1.8.0(...)"
_D0_IDENT = re.compile(rb"/([A-Za-z]{3}\d[\x21-\x7e][\x20-\x7e]{0,40})\r\n")
_D0_DATA = re.compile(rb"(?:\d{1,3}-\d{1,3}:)?\d{1,3}\.\d{1,3}\.\d{1,3}(?:\*\d{1,3})?\([^)\r\n]*\)")
_D0_TAIL = 160  # bytes kept between chunks so a line split across reads is still found
# the top bit of every byte cleared: 7E1 text read as 8N1 carries its parity bit there
_STRIP = bytes(range(128)) * 2
_HIGH_BYTES = bytes(range(128, 256))  # deleted by translate() to count the bytes with bit 8 set


@dataclass
class _Slot:
    t: float
    bytes: int = 0
    high: int = 0
    starts: int = 0
    ok: int = 0
    crc: int = 0
    damaged: int = 0


class LinkWatch:
    """Byte, frame and D0-text counts over a sliding window of `window_s` seconds."""

    def __init__(
        self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self._clock = clock
        self._slots: deque[_Slot] = deque()
        self._opened = clock()
        self._last_byte: Optional[float] = None
        self._last_frame: Optional[float] = None
        self._d0_seen: Optional[float] = None
        self._d0_ident = ""
        self._start_tail = b""
        self._text_tail = b""

    def opened(self) -> None:
        """The link was (re)opened after being down: judge it from now on."""
        self._slots.clear()
        self._opened = self._clock()
        self._last_byte = self._last_frame = self._d0_seen = None
        self._d0_ident = ""
        self._start_tail = self._text_tail = b""

    def _slot(self) -> _Slot:
        now = self._clock()
        if not self._slots or now - self._slots[-1].t >= 0.5:
            self._slots.append(_Slot(now))
        while self._slots and now - self._slots[0].t > self.window_s:
            self._slots.popleft()
        return self._slots[-1]

    def data(self, chunk: bytes) -> None:
        """Bytes as read from the link."""
        slot = self._slot()
        if not chunk:
            return
        self._last_byte = slot.t
        slot.bytes += len(chunk)
        slot.high += len(chunk) - len(chunk.translate(None, _HIGH_BYTES))
        joined = self._start_tail + chunk
        slot.starts += joined.count(START_SEQUENCE)
        # keep less than one start sequence, so none is counted twice
        self._start_tail = joined[-(len(START_SEQUENCE) - 1) :]
        text = self._text_tail + chunk.translate(_STRIP)
        ident = None
        for match in _D0_IDENT.finditer(text):
            ident = match.group(1).decode("ascii").strip()
        if ident is not None:
            self._d0_ident = ident
            self._d0_seen = slot.t
        elif _D0_DATA.search(text):
            self._d0_seen = slot.t
        self._text_tail = text[-_D0_TAIL:]

    def frames(self, frames: Iterable[Mapping[str, Any]]) -> None:
        """Frames the decoder made from those bytes, good and bad."""
        slot = self._slot()
        for frame in frames:
            if frame.get("ok"):
                if self._port_was_fixed():
                    slot = self._restart()
                slot.ok += 1
                self._last_frame = slot.t
            elif frame.get("error") == "crc":
                slot.crc += 1
            else:
                slot.damaged += 1

    def _port_was_fixed(self) -> bool:
        """A good frame after a window without one and without a byte with the 8th bit set:
        the 7-bit setting or the D0 mode is gone, so its damaged frames say nothing now."""
        slots = list(self._slots)
        return not any(s.ok for s in slots) and not any(s.high for s in slots[:-1])

    def _restart(self) -> _Slot:
        current = self._slots[-1]
        self._slots.clear()
        current.crc = current.damaged = 0
        self._slots.append(current)
        return current

    def observation(
        self,
        *,
        complete: bool = False,
        bytesize: int = 8,
        parity: str = "N",
        crc_mode: str = "auto",
    ) -> Observation:
        """What the window holds, for `diagnose.classify`."""
        self._slot()  # drops what left the window
        now = self._clock()
        slots = list(self._slots)
        d0_current = self._d0_seen is not None and now - self._d0_seen <= self.window_s
        return Observation(
            listened_s=min(now - self._opened, self.window_s),
            bytes=sum(s.bytes for s in slots),
            high_bytes=sum(s.high for s in slots),
            start_sequences=sum(s.starts for s in slots),
            frames_ok=sum(s.ok for s in slots),
            crc_errors=sum(s.crc for s in slots),
            damaged=sum(s.damaged for s in slots),
            since_last_byte=None if self._last_byte is None else now - self._last_byte,
            since_last_frame=None if self._last_frame is None else now - self._last_frame,
            d0_ident=self._d0_ident if d0_current else None,
            complete=complete,
            bytesize=bytesize,
            parity=parity,
            crc_mode=crc_mode,
        )
