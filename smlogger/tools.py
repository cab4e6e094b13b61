"""``smlogger decode`` and ``smlogger bench``: the decoder on files and pipes."""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import resource
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Optional

from smlogger import sml
from smlogger.capture import CAPTURE_MAGIC, parse_line
from smlogger.summary import Summary

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PROGRESS_MIN_BYTES = 8 << 20


def register_cli(subparsers: Any) -> None:
    dec = subparsers.add_parser(
        "decode",
        help="decode an SML recording (file or - for stdin) and print its values",
        description=(
            "Decode SML from a file or stdin: a raw dump of the IR head's bytes, or a capture "
            "file written by `smlogger run --capture` (plain or .gz; detected from the content). "
            "Prints one OBIS#value#unit line per value (libsml's sml_server format), one JSON "
            "object per frame with --json, or one table for a bug report with --summary. "
            "Exits 1 when no valid frame was found, 2 when the file cannot be read."
        ),
    )
    dec.add_argument("file", help="recording or capture file to decode, or - for stdin")
    dec.add_argument(
        "--summary",
        action="store_true",
        help="one table: meters, OBIS codes with names, units, first/last/min/max, CRC kind, "
        "quirks and error counts",
    )
    dec.add_argument("--json", action="store_true", help="one JSON object per frame")
    dec.add_argument("--errors", action="store_true", help="also print damaged frames (JSON)")
    dec.add_argument(
        "--crc", choices=["auto", "x25", "kermit"], default="auto", help="frame CRC to accept"
    )
    dec.add_argument("--stats", action="store_true", help="print decoder counters to stderr")
    dec.add_argument("--progress", action="store_true", help="progress bar even for small files")
    dec.set_defaults(func=cmd_decode)

    bench = subparsers.add_parser(
        "bench",
        help="measure decoder throughput on a recording",
        description="Decode a recording repeatedly and print MB/s, frames/s and peak memory.",
    )
    bench.add_argument("file", help="recording to decode")
    bench.add_argument("--repeat", type=int, default=1, help="concatenate the file N times")
    bench.add_argument("--rounds", type=int, default=3, help="timed rounds (best is reported)")
    bench.add_argument(
        "--crc", choices=["auto", "x25", "kermit"], default="auto", help="frame CRC to accept"
    )
    bench.set_defaults(func=cmd_bench)


def _chunks(stream: IO[bytes], size: int = CHUNK) -> Iterator[bytes]:
    while True:
        chunk = stream.read(size)
        if not chunk:
            return
        yield chunk


class Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, out: IO[str]) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.out = out
        self.started = time.monotonic()
        self.drawn = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.drawn >= 0.1 or self.done >= self.total:
            self.drawn = now
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            rate = self.done / max(now - self.started, 1e-9) / 1e6
            self.out.write(f"\r[{bar:<30}] {frac:6.1%} {self.done / 1e6:8.1f} MB {rate:7.1f} MB/s")
            self.out.flush()

    def close(self) -> None:
        self.out.write("\n")
        self.out.flush()


def sml_server_text(value: bytes) -> str:
    """Octet string as libsml's ``sml_server`` prints it: printable ASCII
    (0x21..0x7a) up to the first other byte, then every byte as hex + space."""
    out = []
    for i, b in enumerate(value):
        if 0x21 <= b <= 0x7A:
            out.append(chr(b))
            continue
        out.extend(f"{x:02x} " for x in value[i:])
        break
    return "".join(out)


def sml_server_line(entry: sml.Entry) -> Optional[str]:
    value = entry["value"]
    if value is None:
        return None
    if isinstance(value, bytes):
        text = sml_server_text(value)
    elif isinstance(value, bool):
        text = "1" if value else "0"
    elif isinstance(value, float):
        text = f"{value:.{max(0, -(entry['scaler'] or 0))}f}"
    else:
        text = str(value)
    unit = entry["unit_symbol"] or ""
    return f"{entry['obis']}#{text}#{unit}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


def open_input(path: Path) -> IO[bytes]:
    """`path` opened for reading; OSError (with a reason for people) when it cannot be."""
    if path.is_dir():
        raise IsADirectoryError(21, "is a directory, not a recording", str(path))
    return path.open("rb")


def sml_chunks(stream: IO[bytes]) -> tuple[str, Iterator[bytes], IO[bytes]]:
    """(kind, SML byte chunks, the raw stream for progress) of a raw dump or a capture file,
    gzipped or not, told apart by their first bytes."""
    raw = stream
    head = _peek(stream, 2)
    gz = head == b"\x1f\x8b"
    if gz:
        stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
    if _peek(stream, len(CAPTURE_MAGIC)) == CAPTURE_MAGIC:
        return ("capture file" + (", gzip" if gz else ""), _capture_chunks(stream), raw)
    return ("raw dump" + (", gzip" if gz else ""), _chunks(stream), raw)


def _peek(stream: IO[bytes], n: int) -> bytes:
    # sml_chunks reads through a buffer so stdin and gzip streams can be peeked as well
    peek = getattr(stream, "peek", None)
    if peek is not None:
        return bytes(peek(n)[:n])
    return b""


def _capture_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    pending = b""
    try:
        for block in _chunks(stream):
            lines = (pending + block).split(b"\n")
            pending = lines.pop()
            for line in lines:
                item = parse_line(line)
                if item is not None:
                    yield item[1]
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        # a capture cut short by a crash: keep what could be read
        log.warning("damaged gzip tail ignored (%s)", exc)
    # a partial last line (crash while writing) is dropped, as `--replay` does


def cmd_decode(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.file == "-":
        stream: IO[bytes] = sys.stdin.buffer
        size = 0
    else:
        path = Path(args.file)
        try:
            stream = open_input(path)
        except OSError as exc:
            print(f"smlogger decode: {args.file}: {exc.strerror}", file=sys.stderr)
            return 2
        size = path.stat().st_size
    progress = None
    if size and (args.progress or (size >= PROGRESS_MIN_BYTES and sys.stderr.isatty())):
        progress = Progress(size, sys.stderr)
    decoder = sml.Decoder(args.crc)
    summary = Summary() if args.summary else None
    good = 0
    # Plain text goes through the Rust formatter: one string and one write per
    # MiB chunk, whatever PYTHONUNBUFFERED says. JSON output, and --errors
    # (damaged frames in stream order between the lines), take the dict path.
    text_only = not (args.json or args.errors)
    try:
        kind, chunks, raw = sml_chunks(stream)
        position = 0
        for chunk in chunks:
            if text_only and summary is None:
                good += _emit_lines(decoder.feed_lines(chunk), out)
            else:
                good += _emit(decoder.feed(chunk), args, out, summary)
            if progress:
                now = raw.tell() if raw.seekable() else position + len(chunk)
                progress.update(now - position)
                position = now
        if text_only and summary is None:
            good += _emit_lines(decoder.feed_lines(b"", finish=True), out)
        else:
            good += _emit(decoder.finish(), args, out, summary)
        if summary is not None:
            out.write(summary.render(decoder.stats, args.file, kind))
        out.flush()
    except BrokenPipeError:
        # `smlogger decode big.bin | head` is fine; silence the interpreter's complaint.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        if progress:
            progress.close()
        if stream is not sys.stdin.buffer:
            stream.close()
    if args.stats:
        print(json.dumps(decoder.stats), file=sys.stderr)
    if good == 0:
        print(
            f"smlogger decode: no valid SML frame found in {args.file} "
            f"({decoder.stats.get('bytes', 0)} bytes read as a {kind})",
            file=sys.stderr,
        )
        return 1
    return 0


def _emit_lines(batch: tuple[str, int, list[sml.Frame]], out: IO[str]) -> int:
    """Writes a ``Decoder.feed_lines`` batch; returns its count of good frames."""
    text, good, damaged = batch
    for frame in damaged:
        log.info("frame at %d: %s (%s)", frame["offset"], frame["error"], frame["detail"])
    if text:
        out.write(text)
    return good


def _emit(
    frames: list[sml.Frame], args: argparse.Namespace, out: IO[str], summary: Optional[Summary]
) -> int:
    """Writes frames through the dict path: JSON, the summary, or lines with damaged frames
    interleaved."""
    good = 0
    for frame in frames:
        if not frame["ok"]:
            log.info("frame at %d: %s (%s)", frame["offset"], frame["error"], frame["detail"])
            if args.errors:
                out.write(json.dumps(_jsonable(frame)) + "\n")
            continue
        good += 1
        if summary is not None:
            summary.add(frame)
            continue
        if args.json:
            out.write(json.dumps(_jsonable(frame)) + "\n")
            continue
        for entry in sml.entries(frame):
            line = sml_server_line(entry)
            if line is not None:
                out.write(line + "\n")
    return good


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB.

    ``VmHWM`` is this process's own peak; ``ru_maxrss`` survives exec and may
    report the parent's, so it is only the fallback off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cmd_bench(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes() * max(1, args.repeat)
    mb = len(data) / 1e6
    print(f"input: {args.file} x{args.repeat} = {mb:.1f} MB")

    def best(fn: Any) -> tuple[float, Any]:
        times = []
        result = None
        for _ in range(max(1, args.rounds)):
            # Free the previous round's objects before the clock starts.
            result = None
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        return min(times), result

    dt, (ok, _) = best(lambda: sml.count_frames(data, crc=args.crc))
    print(f"rust core (no Python objects): {mb / dt:9.1f} MB/s {ok / dt:12,.0f} frames/s")
    dt, frames = best(lambda: sml.decode(data, crc=args.crc))
    ok = sum(1 for f in frames if f["ok"])
    del frames
    print(f"sml.decode (dicts):            {mb / dt:9.1f} MB/s {ok / dt:12,.0f} frames/s")

    def stream() -> int:
        dec = sml.Decoder(args.crc)
        n = 0
        for i in range(0, len(data), 4096):
            n += sum(1 for f in dec.feed(data[i : i + 4096]) if f["ok"])
        return n

    dt, ok = best(stream)
    print(f"Decoder.feed (4 KiB chunks):   {mb / dt:9.1f} MB/s {ok / dt:12,.0f} frames/s")
    print(f"valid frames: {ok}, peak RSS: {peak_rss_mb():.1f} MB")
    return 0 if ok else 1
