"""Live latency: from the last byte of a frame on a serial port to the SSE event.

    python benches/bench_latency.py [--frames 100] [--quick] [--summary]

A real pseudo-terminal pair (socat) stands in for the IR head: ``smlogger run
--port`` reads one end with its web server on, a client holds ``/api/stream``
open, and this script writes one frame of the simulated meter at a time into
the other end.
Each latency is the time from the ``write`` of a frame's last byte to the
arrival of the ``reading`` event it produced (both on this machine's monotonic
clock). Prints p50/p90/p99/max.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def meter_frames(count: int) -> list[bytes]:
    """`count` frames of the simulated meter one second apart: every one a new reading."""
    from datetime import datetime, timedelta, timezone

    from smlogger.simulate import make_meter

    meter = make_meter()
    start = datetime.now(timezone.utc)
    return [meter.frame(start + timedelta(seconds=i)) for i in range(count)]


def sse_reader(port: int, events: queue.Queue[float], stop: threading.Event) -> None:
    """Puts the arrival time of every `reading` event on `events`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/api/stream")
    resp = conn.getresponse()
    kind = ""
    while not stop.is_set():
        line = resp.fp.readline()
        if not line:
            return
        now = time.monotonic()
        text = line.decode("utf-8", "replace").rstrip("\n")
        if text.startswith("event:"):
            kind = text.split(":", 1)[1].strip()
        elif text.startswith("data:") and kind == "reading":
            events.put(now)
        elif not text:
            kind = ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="frames to time")
    parser.add_argument("--gap", type=float, default=0.25, help="seconds between frames")
    parser.add_argument("--quick", action="store_true", help="40 frames")
    parser.add_argument("--summary", action="store_true", help="end with a BENCH_SUMMARY line")
    args = parser.parse_args(argv)
    count = 40 if args.quick else args.frames
    socat = shutil.which("socat")
    if socat is None:
        raise SystemExit("socat is required (Debian package socat)")
    frames = meter_frames(count)

    with tempfile.TemporaryDirectory(prefix="smlogger-latency-") as tmp:
        folder = Path(tmp)
        meter_end, logger_end = folder / "meter-pty", folder / "ttyIR0"
        pty = subprocess.Popen(
            [socat, f"pty,raw,echo=0,link={meter_end}", f"pty,raw,echo=0,link={logger_end}"],
            stderr=subprocess.DEVNULL,
        )
        port = free_port()
        env = {**os.environ}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        logger: Optional[subprocess.Popen[bytes]] = None
        stop = threading.Event()
        latencies: list[float] = []
        try:
            wait_for(lambda: meter_end.exists() and logger_end.exists(), 10, "socat ptys")
            logger = subprocess.Popen(
                [sys.executable, "-m", "smlogger", "run", "--port", str(logger_end),
                 "--data-dir", str(folder / "data"), "--http", f"127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=(folder / "stderr.txt").open("wb"), env=env,
            )  # fmt: skip

            def answering() -> bool:
                # not /healthz: that says 503 until the first valid frame, which comes later
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/api/status")
                return conn.getresponse().status == 200

            wait_for(answering, 30, "the web server")
            events: queue.Queue[float] = queue.Queue()
            reader = threading.Thread(target=sse_reader, args=(port, events, stop), daemon=True)
            reader.start()
            fd = os.open(meter_end, os.O_RDWR | os.O_NOCTTY)
            try:
                time.sleep(1.0)  # the stream's opening events arrive first
                while not events.empty():
                    events.get()
                for i in range(count):
                    # The clock starts just before the last byte goes out: taken after
                    # the write, the reader thread could see the event first.
                    os.write(fd, frames[i][:-1])
                    sent = time.monotonic()
                    os.write(fd, frames[i][-1:])
                    try:
                        arrived = events.get(timeout=10)
                    except queue.Empty:
                        raise SystemExit(f"no reading event for frame {i}") from None
                    latencies.append((arrived - sent) * 1000)
                    time.sleep(args.gap)
            finally:
                os.close(fd)
        finally:
            stop.set()
            if logger is not None:
                logger.send_signal(signal.SIGTERM)
                logger.wait(10)
            pty.terminate()
            pty.wait(10)

    p50, p90, p99 = (percentile(latencies, q) for q in (0.5, 0.9, 0.99))
    print(f"{count} frames, one every {args.gap:g} s, pty -> smlogger run -> /api/stream:")
    print(f"  p50 {p50:.1f} ms   p90 {p90:.1f} ms   p99 {p99:.1f} ms   max {max(latencies):.1f} ms")
    print(f"  mean {statistics.fmean(latencies):.1f} ms   min {min(latencies):.1f} ms")
    if args.summary:
        summary: dict[str, Any] = {
            "section": "latency",
            "title": "Live latency: last byte on a pty to the SSE event",
            "rows": [
                {"name": "pty -> SSE reading event, p50", "value": p50, "unit": "ms",
                 "summary": True},
                {"name": "pty -> SSE reading event, p99", "value": p99, "unit": "ms",
                 "summary": True},
                {"name": "pty -> SSE reading event, p90", "value": p90, "unit": "ms"},
                {"name": "pty -> SSE reading event, max", "value": max(latencies), "unit": "ms"},
            ],
            "notes": [
                f"{count} frames of the simulated meter (`smlogger.simulate`, one reading each), "
                f"one every {args.gap:g} s, through socat ptys "
                "into `smlogger run --port` with its web server; client on /api/stream"
            ],
        }  # fmt: skip
        print("BENCH_SUMMARY " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
