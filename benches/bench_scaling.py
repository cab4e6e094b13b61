"""Scaling: 1, 20 and 200 MB of the benchmark stream, streamed.

    python benches/bench_scaling.py [--quick] [--summary] [--sizes 1,20,200]

Each size runs in a fresh process twice: ``Decoder.feed`` in 64 KiB chunks
(frames handled and dropped, as the daemon does) and ``smlogger decode FILE >
/dev/null``. Time should grow linearly with the input (constant MB/s) and the
resident set should stay flat (the decoder holds at most one partial frame).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))

from bench_decode import peak_rss_mb, stream_copy  # noqa: E402

CHUNK = 64 * 1024
# Linear means the MB/s of the biggest run is within this factor of the 20 MB
# run's; flat means its peak RSS grew by less than this many MB.
LINEAR_WITHIN = 0.7
FLAT_MB = 5.0


def feed_worker(mb: int) -> dict[str, Any]:
    """Decoder.feed over `mb` MB built from stream copies, chunk by chunk."""
    from smlogger import sml

    copy = stream_copy()
    ring = copy * (CHUNK // len(copy) + 2)
    total = mb * 1_000_000
    decoder = sml.Decoder()
    decoder.feed(b"")
    base = peak_rss_mb()
    pos = 0
    c0, t0 = time.process_time(), time.perf_counter()
    while pos < total:
        start = pos % len(copy)
        decoder.feed(ring[start : start + min(CHUNK, total - pos)])
        pos += CHUNK
    decoder.finish()
    seconds = time.perf_counter() - t0
    return {
        "bytes": total,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - c0,
        "frames": decoder.stats["frames_ok"],
        "rss_base_mb": base,
        "rss_peak_mb": peak_rss_mb(),
    }


def cli_run(path: Path) -> dict[str, Any]:
    """`smlogger decode FILE > /dev/null`: wall seconds and the child's peak RSS."""
    env = {**os.environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "smlogger", "decode", "--stats", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        # wait4, not wait: the child's own resource usage, peak RSS included.
        _, status, ru = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        raise SystemExit(f"smlogger decode failed ({proc.returncode}):\n{stderr}")
    stats = json.loads(stderr.strip().splitlines()[-1])
    return {
        "bytes": path.stat().st_size,
        "seconds": seconds,
        "cpu_seconds": ru.ru_utime + ru.ru_stime,
        "frames": stats["frames_ok"],
        "rss_peak_mb": ru.ru_maxrss / 1024,  # KiB on Linux
    }


def child(args: list[str]) -> dict[str, Any]:
    env = {**os.environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,20,200", help="MB, comma separated")
    parser.add_argument("--quick", action="store_true", help="accepted for run.py; same sizes")
    parser.add_argument("--summary", action="store_true", help="end with a BENCH_SUMMARY line")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(feed_worker(args.worker)))
        return 0

    sizes = [int(s) for s in args.sizes.split(",")]
    feed: dict[int, dict[str, Any]] = {}
    cli: dict[int, dict[str, Any]] = {}
    copy = stream_copy()
    with tempfile.TemporaryDirectory(prefix="smlogger-scaling-") as tmp:
        for mb in sizes:
            feed[mb] = child(["--worker", str(mb)])
            path = Path(tmp) / f"stream-{mb}.bin"
            with path.open("wb") as fh:
                left = mb * 1_000_000
                while left > 0:
                    fh.write(copy[:left])
                    left -= len(copy)
            cli[mb] = cli_run(path)
            path.unlink()

    print(
        f"{'MB':>5} {'path':<28} {'seconds':>8} {'MB/s':>8} {'CPU MB/s':>9} {'frames':>10} "
        f"{'peak RSS MB':>12}"
    )
    rows = []
    for label, series in (("Decoder.feed 64 KiB", feed), ("smlogger decode > /dev/null", cli)):
        for mb in sizes:
            r = series[mb]
            rate = r["bytes"] / 1e6 / r["seconds"]
            cpu_rate = r["bytes"] / 1e6 / r["cpu_seconds"]
            print(
                f"{mb:>5} {label:<28} {r['seconds']:>8.2f} {rate:>8.1f} {cpu_rate:>9.1f} "
                f"{r['frames']:>10,} {r['rss_peak_mb']:>12.1f}"
            )
            rows.append(
                {
                    "name": f"{label}, {mb} MB",
                    "value": rate,
                    "cpu_value": cpu_rate,
                    "unit": "MB/s",
                    "note": f"{r['seconds']:.2f} s, {r['frames']:,} frames, "
                    f"peak RSS {r['rss_peak_mb']:.1f} MB",
                }
            )
    small, big = min(sizes), max(sizes)
    mid = 20 if 20 in sizes else small
    verdicts = []
    for label, series in (("Decoder.feed", feed), ("smlogger decode", cli)):
        # Judged on CPU time: on a shared machine wall time also counts waiting
        # for a core, which has nothing to do with the input size.
        rate = {mb: series[mb]["bytes"] / series[mb]["cpu_seconds"] for mb in sizes}
        linear = rate[big] >= LINEAR_WITHIN * rate[mid]
        growth = series[big]["rss_peak_mb"] - series[small]["rss_peak_mb"]
        flat = growth < FLAT_MB
        verdicts.append(
            {
                "name": f"{label}: time linear (CPU MB/s at {big} MB / at {mid} MB)",
                "value": rate[big] / rate[mid],
                "unit": "x",
                "goal": LINEAR_WITHIN,
                "met": linear,
            }
        )
        verdicts.append(
            {
                "name": f"{label}: RSS flat (peak {small} MB -> {big} MB)",
                "value": growth,
                "unit": "MB",
                "goal": f"< {FLAT_MB:g} MB",
                "met": flat,
            }
        )
    for v in verdicts:
        print(f"{v['name']}: {'met' if v['met'] else 'MISSED'}")
    if args.summary:
        summary = {
            "section": "scaling",
            "title": "Scaling series: 1 / 20 / 200 MB streamed",
            "rows": rows + verdicts,
            "notes": [
                "fresh process per run; the stream is the benchmark stream cut to size",
                f"linear: CPU-time MB/s at {big} MB >= {LINEAR_WITHIN:g}x that at {mid} MB (wall "
                "time on a shared machine also counts waiting for a core); flat: peak RSS "
                f"grows < {FLAT_MB:g} MB from {small} to {big} MB",
            ],
        }
        print("BENCH_SUMMARY " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
