"""Decoder benchmark: smlogger against smllib 1.7 and pysml 0.1.9, same run, same input.

    python benches/bench_decode.py [--repeat 240] [--quick] [--strict] [--summary]

``--summary`` ends the output with one ``BENCH_SUMMARY {json}`` line, which
``benches/run.py`` collects into ``benches/RESULTS.md``.

The input is the benchmark stream of ../shared/recordings/README.md: all 37
recordings concatenated in byte-wise sorted file-name order, repeated 240 times
(20,167,200 bytes, 54,480 valid frames). Every measurement runs in a fresh
child process so its peak RSS is its own; the parent prints the table.

- smlogger core: ``sml.count_frames`` (framing, CRC, full message parse, no
  Python objects), best of ``--rounds``.
- smlogger ``sml.decode``: the whole stream into frame dicts, best of rounds;
  timed as the call alone and as call + a walk over every entry's
  obis/value/unit_symbol + freeing the result.
- smlogger ``sml.decode_values``: the same values as flat rows, call + walk +
  free.
- smlogger ``Decoder.feed``: 4 KiB chunks, frames handled and dropped.
- ``smlogger decode FILE > /dev/null``: the command end to end (interpreter
  start included), with and without ``PYTHONUNBUFFERED``.
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
import resource
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
VALUES_PER_COPY = 1590  # list entries of the valid frames of one stream copy
SPEEDUP_TARGET = 30.0  # sml.decode() call and Decoder.feed, x smllib 1.7
WALK_TARGET = 15.0  # sml.decode() + walk over the entries, x smllib 1.7
CLI_TARGET = 10.0  # smlogger decode end to end, x smllib 1.7
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


def decode_split(data: bytes) -> tuple[int, float, float, float]:
    """Valid frames, the seconds inside ``sml.decode`` alone, and the seconds of
    the walk a caller does next: every entry's obis, value and unit symbol, and
    the CPU seconds of the call. The caller's clock also covers freeing the
    result."""
    from smlogger import sml

    c0, t0 = cpu_seconds(), time.perf_counter()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    frames = sml.decode(data)
    t1, c1 = time.perf_counter(), cpu_seconds()
    LAST_CALL_FAULTS[0] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    ok = 0
    for frame in frames:
        ok += frame["ok"]
        for entry in sml.entries(frame):
            entry["obis"], entry["value"], entry["unit_symbol"]
    walk = time.perf_counter() - t1
    del frames
    return ok, t1 - t0, walk, c1 - c0


#: Page faults (fresh 4 KiB pages) of the last sml.decode() call in this process.
LAST_CALL_FAULTS = [0]


def run_values(data: bytes) -> int:
    """``sml.decode_values`` plus the same walk over its rows; rows, not frames."""
    from smlogger import sml

    rows = sml.decode_values(data)
    n = 0
    for _offset, _server, obis, value, unit in rows:
        n += obis is not None
        del value, unit
    del rows
    return n


def run_cli(data: bytes, unbuffered: bool) -> tuple[int, float]:
    """``smlogger decode FILE > /dev/null`` as a child process: valid frames
    (from ``--stats``) and wall seconds, interpreter start-up included."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".bin") as fh:
        fh.write(data)
        fh.flush()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if unbuffered:
            env["PYTHONUNBUFFERED"] = "1"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "smlogger", "decode", "--stats", fh.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            check=True,
        )
        seconds = time.perf_counter() - t0
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    return int(stats["frames_ok"]), seconds


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
    "values": ("smlogger sml.decode_values", run_values, False),
    "feed": ("smlogger Decoder.feed 4 KiB", run_feed, False),
    "cli": ("smlogger decode > /dev/null", lambda d: run_cli(d, False)[0], False),
    "cli_unbuf": ("  the same, PYTHONUNBUFFERED=1", lambda d: run_cli(d, True)[0], False),
    "smllib": ("smllib 1.7 SmlStreamReader", run_smllib, True),
    "pysml": ("pysml 0.1.9 find_frame", run_pysml, True),
}


COUNTED: dict[str, Callable[[bytes, LibCounts], int]] = {"smllib": run_smllib, "pysml": run_pysml}


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children. On a
    loaded machine wall time also counts waiting for a core; CPU time does not,
    so ratios from it stay comparable between a long single run (the pure-Python
    libraries) and a best-of-rounds one."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


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
    if case in ("cli", "cli_unbuf"):
        # The command's goal is stated on the benchmark file itself, also in --quick.
        repeat = max(repeat, DEFAULT_REPEAT)
    else:
        fn(b"")  # imports and one-time set-up stay out of the clock
    if prefix:
        copies = 1
        while True:
            data = copy * copies
            base_rss = rss_mb()
            counts = LibCounts()
            c0, t0 = cpu_seconds(), time.perf_counter()
            frames = COUNTED[case](data, counts)
            seconds = time.perf_counter() - t0
            cpu = cpu_seconds() - c0
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
        seconds = call_seconds = cpu = float("inf")
        frames = 0
        walk_seconds = call_cpu_seconds = float("inf")
        for _ in range(max(1, rounds)):
            c0, t0 = cpu_seconds(), time.perf_counter()
            if case == "decode":
                frames, call, walk, call_cpu = decode_split(data)
                call_seconds = min(call_seconds, call)
                call_cpu_seconds = min(call_cpu_seconds, call_cpu)
                walk_seconds = min(walk_seconds, walk)
            elif case in ("cli", "cli_unbuf"):
                # The child's own wall time; the parent holding the input does not count.
                frames, took = run_cli(data, case == "cli_unbuf")
                seconds = min(seconds, took)
                cpu = min(cpu, cpu_seconds() - c0)
                continue
            else:
                frames = fn(data)
            seconds = min(seconds, time.perf_counter() - t0)
            cpu = min(cpu, cpu_seconds() - c0)
        extra = (
            {
                "call_seconds": call_seconds,
                "walk_seconds": walk_seconds,
                "call_cpu_seconds": call_cpu_seconds,
                "call_page_faults": LAST_CALL_FAULTS[0],
            }
            if case == "decode"
            else {}
        )
    peak = peak_rss_mb()
    traced = None
    if trace and case not in ("cli", "cli_unbuf"):
        traced = traced_peak_mb(fn, copy * min(copies, TRACE_COPIES) if prefix else data)
    return {
        "case": case,
        "copies": copies,
        "bytes": len(data),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "frames": frames,
        "expected_frames": (VALUES_PER_COPY if case == "values" else FRAMES_PER_COPY) * copies,
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
    parser.add_argument(
        "--summary", action="store_true", help="end with a BENCH_SUMMARY json line (run.py)"
    )
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
            r["cpu_mb_s"] = r["bytes"] / r["cpu_seconds"]
            best = results.get(case)
            if best is None:
                results[case] = r
                continue
            if case == "decode":
                best["call_seconds"] = min(best["call_seconds"], r["call_seconds"])
                best["walk_seconds"] = min(best["walk_seconds"], r["walk_seconds"])
                best["call_cpu_seconds"] = min(best["call_cpu_seconds"], r["call_cpu_seconds"])
            best["cpu_mb_s"] = max(best["cpu_mb_s"], r["bytes"] / r["cpu_seconds"])
            if r["bytes"] / r["seconds"] > best["bytes"] / best["seconds"]:
                for key in (
                    "traced_peak_mb",
                    "call_seconds",
                    "walk_seconds",
                    "call_cpu_seconds",
                    "cpu_mb_s",
                ):
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
            f"{'-' if r['traced_peak_mb'] is None else format(r['traced_peak_mb'], '.1f'):>10} "
            f"{r['rss_peak_mb']:>6.1f} (+{r['rss_peak_mb'] - r['rss_base_mb']:.1f})"
        )
        if case == "decode":
            call = r["call_seconds"]
            print(
                f"{'  of which the decode() call':<30} {mb:>8.2f}  {mb / call:>9.1f} "
                f"{r['frames'] / call:>11,.0f}"
            )
            print(f"{'  and the walk over entries':<30} {'':>9}  {r['walk_seconds']:>8.3f}s")
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

    def cpu_mb_s(case: str) -> float:
        return float(results[case]["cpu_mb_s"] / 1e6)

    smllib, smllib_cpu = mb_s("smllib"), cpu_mb_s("smllib")
    dec = results["decode"]
    call_mb_s = dec["bytes"] / 1e6 / dec["call_seconds"]
    call_cpu_mb_s = dec["bytes"] / 1e6 / dec["call_cpu_seconds"]
    # (label, wall figure, CPU-time figure, goal, unit): each against its goal, same run.
    goals: list[tuple[str, float, float, Optional[float], str]] = [
        ("smlogger core, full decode, no Python objects", mb_s("core"), cpu_mb_s("core"),
         CORE_TARGET_MB_S, "MB/s"),
        ("sml.decode() of the whole stream, the call", call_mb_s / smllib,
         call_cpu_mb_s / smllib_cpu, SPEEDUP_TARGET, "x"),
        ("sml.decode() + walk (obis/value/unit) + free", mb_s("decode") / smllib,
         cpu_mb_s("decode") / smllib_cpu, WALK_TARGET, "x"),
        ("sml.decode_values() + walk of the rows + free", mb_s("values") / smllib,
         cpu_mb_s("values") / smllib_cpu, None, "x"),
        ("Decoder.feed, 4 KiB chunks (like smllib's reader)", mb_s("feed") / smllib,
         cpu_mb_s("feed") / smllib_cpu, SPEEDUP_TARGET, "x"),
        ("smlogger decode FILE > /dev/null, end to end", mb_s("cli") / smllib,
         cpu_mb_s("cli") / smllib_cpu, CLI_TARGET, "x"),
        ("  the same with PYTHONUNBUFFERED=1", mb_s("cli_unbuf") / smllib,
         cpu_mb_s("cli_unbuf") / smllib_cpu, CLI_TARGET, "x"),
        ("sml.decode() + walk + free vs pysml 0.1.9", mb_s("decode") / mb_s("pysml"),
         cpu_mb_s("decode") / cpu_mb_s("pysml"), None, "x"),
    ]  # fmt: skip
    print()
    print(
        f"against smllib 1.7 in this run ({smllib:.2f} MB/s wall, {smllib_cpu:.2f} MB/s of CPU "
        "time), per MB; the goal is judged on wall time:"
    )
    print(f"  {'':<52} {'wall':>9} {'CPU time':>9}")
    met_all = True
    for label, value, cpu_value, goal, unit in goals:
        verdict = ""
        if goal is not None:
            met = value >= goal
            met_all &= met
            verdict = f"(goal >= {goal:g}{unit}: {'met' if met else 'MISSED'})"
        print(f"  {label:<52} {value:8.1f}{unit[0]} {cpu_value:8.1f}{unit[0]}  {verdict}")

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
    if args.summary:
        rows = [
            {
                "name": CASES[case][0].strip(),
                "value": mb_s(case),
                "cpu_value": cpu_mb_s(case),
                "unit": "MB/s",
                "note": (
                    f"{results[case]['frames']:,} of {results[case]['expected_frames']:,} "
                    f"{'rows' if case == 'values' else 'valid frames'}"
                    + (
                        f", timed on {results[case]['bytes'] / 1e6:.1f} MB"
                        if CASES[case][2]
                        else f", peak RSS {results[case]['rss_peak_mb']:.0f} MB"
                    )
                ),
            }
            for case in results
        ]
        rows.insert(
            2,
            {
                "name": "sml.decode, the call alone",
                "value": call_mb_s,
                "cpu_value": call_cpu_mb_s,
                "unit": "MB/s",
                "note": "",
            },
        )
        summary = {
            "section": "decoder",
            "title": "Decoder paths vs smllib 1.7 and pysml 0.1.9 (same run)",
            "input": f"benchmark stream x{repeat}: {results['core']['bytes']:,} bytes",
            "rows": rows,
            "goals": [
                {
                    "name": label,
                    "value": value,
                    "cpu_value": cpu_value,
                    "unit": unit,
                    "goal": goal,
                    "met": None if goal is None else value >= goal,
                }
                for label, value, cpu_value, goal, unit in goals
            ],
            "notes": [
                f"best of {passes} interleaved pass(es); pure-Python libraries timed on a prefix "
                f"of at least {min_seconds:g} s and extrapolated per MB",
                f"streaming {s['bytes'] / 1e6:.0f} MB through Decoder.feed: RSS growth "
                f"{grew:+.1f} MB",
                f"the sml.decode() call took {dec['call_page_faults']:,} page faults (fresh 4 KiB "
                "pages for the result's dicts); see the core section for what one costs here",
            ],
        }
        print("BENCH_SUMMARY " + json.dumps(summary))
    if args.strict and not met_all:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
