"""Raw byte capture (`--capture FILE`): every received chunk with its receive time.

Text format, one chunk per line, so a capture attached to a bug report can be read, cut and
diffed with ordinary tools, and a crash loses at most the last (partial) line:

    #smlogger-capture v1
    2024-05-01T12:00:00.123456+00:00 1b1b1b1b01010101...

A `.gz` file name writes gzip. `smlogger run --replay FILE` replays it with the recorded timing.
"""

from __future__ import annotations

import gzip
import io
import logging
import threading
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

CAPTURE_MAGIC = b"#smlogger-capture v1\n"


def format_line(stamp: datetime, data: bytes) -> bytes:
    """One capture line: ISO-8601 UTC receive time, a space, the bytes in hex."""
    return f"{stamp.astimezone(timezone.utc).isoformat()} {data.hex()}\n".encode("ascii")


def parse_line(line: bytes) -> tuple[datetime, bytes] | None:
    """None for comments, blank and damaged lines."""
    text = line.strip()
    if not text or text.startswith(b"#"):
        return None
    stamp_text, _, hex_text = text.partition(b" ")
    try:
        stamp = datetime.fromisoformat(stamp_text.decode("ascii"))
        data = bytes.fromhex(hex_text.decode("ascii"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp, data


def read_capture(content: bytes) -> Iterator[tuple[datetime, bytes]]:
    """(receive time, bytes) of every well-formed line; a torn last line is ignored."""
    lines = content.split(b"\n")
    if content and not content.endswith(b"\n"):
        lines = lines[:-1]  # partial last line of a capture cut short by a crash
    for line in lines:
        item = parse_line(line)
        if item is not None:
            yield item


def read_file(path: Path) -> bytes:
    """Whole file content; a gzip file truncated by a crash yields what could be inflated."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            fh.seek(0)
            return fh.read()
    parts = []
    with gzip.open(path, "rb") as gz:
        try:
            while True:
                block = gz.read(65536)
                if not block:
                    break
                parts.append(block)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            log.warning("%s: damaged gzip tail ignored (%s)", path, exc)
    return b"".join(parts)


class CaptureWriter:
    """Appends chunks to a capture file; safe to call from the source thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.bytes_written = 0
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh and self.path.suffix != ".gz":
            self._repair()
        self._fh: io.BufferedIOBase
        if self.path.suffix == ".gz":
            self._fh = gzip.open(self.path, "ab")  # noqa: SIM115 - lives as long as the writer
        else:
            self._fh = open(self.path, "ab")  # noqa: SIM115 - lives as long as the writer
        if fresh:
            self._fh.write(CAPTURE_MAGIC)
            self._fh.flush()

    def _repair(self) -> None:
        with open(self.path, "rb+") as fh:
            content = fh.read()
            if content.endswith(b"\n"):
                return
            keep = content.rfind(b"\n") + 1
            fh.truncate(keep)
            log.info("%s: dropped a partial last line (%d bytes)", self.path, len(content) - keep)

    def write(self, stamp: datetime, data: bytes) -> None:
        """Append one chunk as a line and flush it (empty chunks are not written)."""
        if not data:
            return
        with self._lock:
            self._fh.write(format_line(stamp, data))
            self._fh.flush()
            self.bytes_written += len(data)

    def close(self) -> None:
        """Close the file; safe to call twice."""
        with self._lock:
            if not self._fh.closed:
                self._fh.close()
