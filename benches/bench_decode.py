"""Decoder benchmark: smlogger against smllib 1.7 and pysml 0.1.9, same run, same input.

    python benches/bench_decode.py [--repeat 240] [--quick] [--strict]

The input is the benchmark stream of ../shared/recordings/README.md: all 37
recordings concatenated in byte-wise sorted file-name order, repeated 240 times
(20,167,200 bytes, 54,480 valid frames). Every measurement runs in a fresh
child process so its peak RSS is its own; the parent prints the table.

- smlogger core: ``sml.count_frames`` (framing, CRC, full message parse, no
  Python objects), best of ``--rounds``.
- smlogger ``sml.decode``: the whole stream into frame dicts, best of rounds.
- smlogger ``Decoder.feed``: 4 KiB chunks, frames handled and dropped.
- smllib 1.7: ``SmlStreamReader`` fed 4 KiB chunks (its buffer drops data
  beyond 50 KiB, so it must be fed in pieces), ``get_frame()`` until None,
  ``parse_frame()`` per frame, each library error caught per frame the way a
  real caller has to.
- pysml 0.1.9: ``SmlBase.find_frame`` on a growing buffer exactly as its own
  ``SmlSerialProtocol.data_received`` drives it (4 KiB chunks, 16 KiB trim).

The pure-Python libraries run on a prefix of whole stream copies, doubled until
one run takes ``--min-seconds``; their MB/s and frames/s are extrapolated from
that prefix (the table says so). Peak traced memory comes from a second run
under tracemalloc (Python allocations only; it slows the run, so it is not
timed). A last child feeds 100 MB through ``Decoder.feed`` in 64 KiB chunks and
prints its RSS before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = Path(os.environ.get("SMLOGGER_RECORDINGS", ROOT.parent / "shared" / "recordings"))

START = b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01"
CHUNK = 4096
DEFAULT_REPEAT = 240
BENCH_BYTES = 20_167_200
BENCH_FRAMES = 54_480
FILE_COUNT = 37
FRAMES_PER_COPY = 227
SPEEDUP_TARGET = 30.0
CORE_TARGET_MB_S = 1000.0
PYSML_MAX_BUFFER = 16 * 1024  # the trim limit of pysml's own serial protocol


# ------------------------------------------------------------------ input


def recording_paths() -> list[Path]:
    paths = sorted(RECORDINGS.glob("*.bin"), key=lambda p: p.name.encode())
    if len(paths) != FILE_COUNT:
        raise SystemExit(f"expected {FILE_COUNT} recordings under {RECORDINGS}, found {len(paths)}")
    return paths


def stream_copy() -> bytes:
    """One copy of the benchmark stream: all recordings back to back."""
    return b"".join(p.read_bytes() for p in recording_paths())


# ------------------------------------------------------------ measurements


def run_core(data: bytes) -> int:
    from smlogger import sml

    ok, _ = sml.count_frames(data)
    return ok


def run_decode(data: bytes) -> int:
    return decode_split(data)[0]


def decode_split(data: bytes) -> tuple[int, float]:
    """Valid frames, and the seconds spent inside ``sml.decode`` alone. The rest
    of the caller's time is walking the result (the first garbage collection
    after decode() returns visits every new container) and freeing it."""
    from smlogger import sml

    t0 = time.perf_counter()
    frames = sml.decode(data)
    call = time.perf_counter() - t0
    ok = sum(1 for f in frames if f["ok"])
    del frames
    return ok, call


def run_feed(data: bytes) -> int:
    from smlogger import sml

    decoder = sml.Decoder()
    ok = 0
    for i in range(0, len(data), CHUNK):
        for frame in decoder.feed(data[i : i + CHUNK]):
            ok += frame["ok"]
    for frame in decoder.finish():
        ok += frame["ok"]
    return ok


@dataclass
class LibCounts:
    frames: int = 0
    crc_errors: int = 0
    parse_errors: int = 0


def run_smllib(data: bytes, counts: Optional[LibCounts] = None) -> int:
    from smllib.errors import CrcError
    from smllib.reader import SmlStreamReader

    counts = counts if counts is not None else LibCounts()
    reader = SmlStreamReader()
    for i in range(0, len(data), CHUNK):
        reader.add(data[i : i + CHUNK])
        while True:
            try:
                frame = reader.get_frame()
            except CrcError:
                counts.crc_errors += 1  # the reader already dropped the frame
                continue
            if frame is None:
                break
            try:
                frame.parse_frame()
            except Exception:  # smllib raises assorted errors on meters it cannot parse
                counts.parse_errors += 1
                continue
            counts.frames += 1
    return counts.frames


def run_pysml(data: bytes, counts: Optional[LibCounts] = None) -> int:
    from sml import SmlBase  # type: ignore[import-untyped]

    counts = counts if counts is not None else LibCounts()
    buf = b""
    for i in range(0, len(data), CHUNK):
        buf += data[i : i + CHUNK]
        while True:
            try:
                end, frame = SmlBase.find_frame(buf)
            except Exception:
                # A CRC-valid frame pysml cannot parse: find_frame raises before
                # telling where the frame ends, so skip to the next start.
                counts.parse_errors += 1
                first = buf.find(START)
                following = buf.find(START, first + 1)
                buf = buf[following:] if following >= 0 else buf[-8:]
                continue
            buf = buf[end:]
            if frame is None:
                break
            counts.frames += 1
        if len(buf) > PYSML_MAX_BUFFER:
            idx = buf.rfind(START)
            buf = buf[idx:] if idx > 0 else buf[-8:]
    return counts.frames


CASES: dict[str, tuple[str, Callable[[bytes], int], bool]] = {
    # name: (label, function, pure Python library measured on a prefix)
    "core": ("smlogger core (count_frames)", run_core, False),
    "decode": ("smlogger sml.decode (dicts)", run_decode, False),
    "feed": ("smlogger Decoder.feed 4 KiB", run_feed, False),
    "smllib": ("smllib 1.7 SmlStreamReader", run_smllib, True),
    "pysml": ("pysml 0.1.9 find_frame", run_pysml, True),
}


COUNTED: dict[str, Callable[[bytes, LibCounts], int]] = {"smllib": run_smllib, "pysml": run_pysml}


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """This process's RSS high-water mark. VmHWM, not getrusage's ru_maxrss:
    Linux carries ru_maxrss across exec, so a child would report the parent's
    peak (the parent holds the whole benchmark stream)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6  # KiB
    raise RuntimeError("no VmHWM in /proc/self/status")


def traced_peak_mb(fn: Callable[[bytes], int], data: bytes) -> float:
    tracemalloc.start()
    try:
        fn(data)
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


TRACE_COPIES = 4  # the streaming libraries' memory does not grow with the input


def worker(case: str, repeat: int, rounds: int, min_seconds: float, trace: bool) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    _, fn, prefix = CASES[case]
    copy = stream_copy()
    if prefix:
        copies = 1
        while True:
            data = copy * copies
            base_rss = rss_mb()
            counts = LibCounts()
            t0 = time.perf_counter()
            frames = COUNTED[case](data, counts)
            seconds = time.perf_counter() - t0
            if seconds >= min_seconds or copies >= repeat:
                break
            copies = min(repeat, copies * max(2, int(min_seconds / max(seconds, 1e-3) * 1.2)))
            del data  # one input in memory at a time, so the RSS peak is the last run's
        extra: dict[str, float] = {
            "crc_errors": counts.crc_errors,
            "parse_errors": counts.parse_errors,
        }
    else:
        copies = repeat
        data = copy * copies
        base_rss = rss_mb()
        seconds = call_seconds = float("inf")
        frames = 0
        for _ in range(max(1, rounds)):
            t0 = time.perf_counter()
            if case == "decode":
                frames, call = decode_split(data)
                call_seconds = min(call_seconds, call)
            else:
                frames = fn(data)
            seconds = min(seconds, time.perf_counter() - t0)
        extra = {"call_seconds": call_seconds} if case == "decode" else {}
    peak = peak_rss_mb()
    traced = None
    if trace:
        traced = traced_peak_mb(fn, copy * min(copies, TRACE_COPIES) if prefix else data)
    return {
        "case": case,
        "copies": copies,
        "bytes": len(data),
        "seconds": seconds,
        "frames": frames,
        "expected_frames": FRAMES_PER_COPY * copies,
        "rss_base_mb": base_rss,
        "rss_peak_mb": peak,
        "traced_peak_mb": traced,
        **extra,
    }


def stream_worker(total_mb: int) -> dict[str, Any]:
    """Feeds total_mb MB in 64 KiB chunks, results dropped, RSS before/after."""
    from smlogger import sml

    copy = stream_copy()
    chunk = 64 * 1024
    ring = copy * (chunk // len(copy) + 2)
    decoder = sml.Decoder()
    pos = 0

    def feed(n: int) -> None:
        nonlocal pos
        end = pos + n
        while pos < end:
            start = pos % len(copy)
            decoder.feed(ring[start : start + chunk])
            pos += chunk

    feed(4_000_000)  # warm-up: caches and allocator arenas settle
    before = rss_mb()
    t0 = time.perf_counter()
    feed(total_mb * 1_000_000)
    seconds = time.perf_counter() - t0
    after = rss_mb()
    decoder.finish()
    return {
        "bytes": pos,
        "seconds": seconds,
        "frames": decoder.stats["frames_ok"],
        "rss_before_mb": before,
        "rss_after_mb": after,
        "rss_peak_mb": peak_rss_mb(),
        "buffered": decoder.stats["buffered"],
    }


# ------------------------------------------------------------------ parent


def child(args: list[str]) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("smlogger", "smllib", "pysml"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def check_stream(repeat: int) -> None:
    from smlogger import sml

    copy = stream_copy()
    data = copy * repeat
    ok, _ = sml.count_frames(data)
    if repeat == DEFAULT_REPEAT:
        assert len(data) == BENCH_BYTES, len(data)
        assert ok == BENCH_FRAMES, ok
    assert ok == FRAMES_PER_COPY * repeat, ok
    print(
        f"benchmark stream: {FILE_COUNT} recordings x {repeat} = {len(data):,} bytes, "
        f"{ok:,} valid frames"
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Decoder benchmark: smlogger against smllib 1.7 and pysml 0.1.9."
    )
    parser.add_argument("--repeat", type=int, default=None, help="stream copies (default 240)")
    parser.add_argument(
        "--quick", action="store_true", help="24 copies, short runs, 20 MB stream check"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed rounds inside each smlogger run (best counts)"
    )
    parser.add_argument(
        "--passes",
        type=int,
        default=None,
        help="runs of every decoder, interleaved; the best counts (default 3, quick 1)",
    )
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=None,
        help="shortest timed run for the pure-Python libraries (default 2, quick 0.5)",
    )
    parser.add_argument(
        "--stream-mb", type=int, default=None, help="MB for the streaming memory check"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--worker", choices=[*CASES, "stream"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    repeat = args.repeat if args.repeat is not None else (24 if args.quick else DEFAULT_REPEAT)
    min_seconds = args.min_seconds if args.min_seconds is not None else (0.5 if args.quick else 2.0)
    stream_mb = args.stream_mb if args.stream_mb is not None else (20 if args.quick else 100)

    if args.worker == "stream":
        print(json.dumps(stream_worker(stream_mb)))
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, repeat, args.rounds, min_seconds, args.trace)))
        return 0

    print(versions())
    check_stream(repeat)
    common = [
        "--repeat",
        str(repeat),
        "--rounds",
        str(args.rounds),
        "--min-seconds",
        str(min_seconds),
    ]
    passes = args.passes if args.passes is not None else (1 if args.quick else 3)
    results: dict[str, dict[str, Any]] = {}
    # Interleaved passes: on a shared machine a load change then hits every
    # decoder alike instead of one of them.
    for n in range(max(1, passes)):
        for case in CASES:
            r = child(["--worker", case, *common, *(["--trace"] if n == 0 else [])])
            best = results.get(case)
            if best is None:
                results[case] = r
                continue
            if case == "decode":
                best["call_seconds"] = min(best["call_seconds"], r["call_seconds"])
            if r["bytes"] / r["seconds"] > best["bytes"] / best["seconds"]:
                for key in ("traced_peak_mb", "call_seconds"):
                    if key in best:
                        r[key] = best[key]
                results[case] = r

    header = (
        f"{'decoder':<30} {'input MB':>9} {'MB/s':>9} {'frames/s':>11} {'frames':>13} "
        f"{'traced MB':>10} {'peak RSS MB':>12}"
    )
    print(header)
    print("-" * len(header))
    for case, r in results.items():
        label, _, prefix = CASES[case]
        mb = r["bytes"] / 1e6
        star = "*" if prefix else " "
        print(
            f"{label:<30} {mb:>8.2f}{star} {mb / r['seconds']:>9.1f} "
            f"{r['frames'] / r['seconds']:>11,.0f} "
            f"{r['frames']:>6,}/{r['expected_frames']:<6,} "
            f"{r['traced_peak_mb']:>10.1f} "
            f"{r['rss_peak_mb']:>6.1f} (+{r['rss_peak_mb'] - r['rss_base_mb']:.1f})"
        )
        if case == "decode":
            call = r["call_seconds"]
            print(
                f"{'  of which the decode() call':<30} {mb:>8.2f}  {mb / call:>9.1f} "
                f"{r['frames'] / call:>11,.0f}"
            )
    print(
        "* pure-Python library timed on a prefix of whole stream copies (at least "
        f"{min_seconds:g} s), MB/s and frames/s extrapolated from it"
    )
    for case in ("smllib", "pysml"):
        r = results[case]
        print(
            f"  {case}: {r['frames']:,} of {r['expected_frames']:,} valid frames parsed "
            f"({r['crc_errors']} CRC errors reported, "
            f"{r['parse_errors']} frames it failed to parse)"
        )
    print(f"best of {passes} interleaved pass(es) per decoder")
    print(
        "traced MB = tracemalloc peak of a separate run (Python allocations only; "
        f"the pure-Python libraries on {TRACE_COPIES} stream copies);"
    )
    print("peak RSS = the child's maximum resident set, (+growth over the input already in memory)")

    def mb_s(case: str) -> float:
        return float(results[case]["bytes"] / 1e6 / results[case]["seconds"])

    def frames_s(case: str) -> float:
        return float(results[case]["frames"] / results[case]["seconds"])

    def verdict(x: float) -> str:
        return "met" if x >= SPEEDUP_TARGET else "MISSED"

    speedup = mb_s("decode") / mb_s("smllib")
    speedup_frames = frames_s("decode") / frames_s("smllib")
    speedup_call = results["decode"]["bytes"] / results["decode"]["call_seconds"] / 1e6
    speedup_call /= mb_s("smllib")
    speedup_feed = mb_s("feed") / mb_s("smllib")
    # Like for like: smllib's SmlStreamReader is fed 4 KiB chunks and its frames
    # are dropped after parsing, which is exactly what Decoder.feed is timed on.
    met_speedup = speedup_feed >= SPEEDUP_TARGET
    met_core = mb_s("core") >= CORE_TARGET_MB_S
    print()
    print(f"speed-up over smllib 1.7 per MB (target >= {SPEEDUP_TARGET:g}x):")
    feed_label = "Decoder.feed, 4 KiB chunks (like for like):"
    print(f"  {feed_label:<47} {speedup_feed:5.1f}x {verdict(speedup_feed)}")
    print("  whole-buffer sml.decode, all 54,480 frames kept alive as dicts:")
    call_label = "    the decode() call:"
    print(f"  {call_label:<47} {speedup_call:5.1f}x")
    print(
        f"  {'    incl. walking and freeing the result:':<47} {speedup:5.1f}x "
        f"({speedup_frames:.1f}x per frame)"
    )
    print(f"speed-up sml.decode over pysml 0.1.9: {mb_s('decode') / mb_s('pysml'):.1f}x per MB")
    print(
        f"smlogger core: {mb_s('core'):.0f} MB/s "
        f"(target >= {CORE_TARGET_MB_S:g} MB/s: {'met' if met_core else 'MISSED'})"
    )

    s = child(["--worker", "stream", "--stream-mb", str(stream_mb)])
    grew = s["rss_after_mb"] - s["rss_before_mb"]
    print()
    print(
        f"streaming: {s['bytes'] / 1e6:.0f} MB through Decoder.feed in 64 KiB chunks at "
        f"{s['bytes'] / 1e6 / s['seconds']:.1f} MB/s, {s['frames']:,} valid frames"
    )
    print(
        f"  RSS before {s['rss_before_mb']:.1f} MB, after {s['rss_after_mb']:.1f} MB "
        f"(growth {grew:+.1f} MB), peak {s['rss_peak_mb']:.1f} MB, "
        f"decoder buffer at end {s['buffered']} B"
    )
    if args.strict and not (met_speedup and met_core):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
