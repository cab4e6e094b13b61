"""Bulk ingest: `smlogger run --replay FILE --speed max` of 60,000 realistic frames.

Writes 60,000 frames of the simulated household meter (the encoder's MT-style GetList with
public key, firmware, tariff and phase registers) to a raw `.bin` file, times smllib 1.7 merely
parsing that same file (stream reader + parse_frame per frame), then times the whole logger
replaying it into SQLite + CSV (process start to exit) and counts what reached each sink.

    python benches/bench_replay.py                  # 60,000 frames
    python benches/bench_replay.py --frames 10000   # a quick look
    python benches/bench_replay.py --write-results  # also update benches/RESULTS.md
    python benches/bench_replay.py --runs 5         # best (and median) of 5 runs

Target (issue 8): readings/s >= 3x smllib's frames/s, and every reading in both sinks at exit.
No assertions: it prints the figures.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_daemon import write_results

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Replay ingest (bench_replay.py)"


@dataclass
class ReplayFigures:
    """What the replay runs gave (each figure best of the runs; medians beside)."""

    frames: int
    file_bytes: int
    smllib_times: list[float]
    smllib_frames: int
    replay_times: list[float]
    exit_codes: list[int]
    db_rows: list[int]
    csv_rows: list[int]
    summary: str

    @property
    def smllib_s(self) -> float:
        return min(self.smllib_times)

    @property
    def replay_s(self) -> float:
        return min(self.replay_times)

    @property
    def smllib_fps(self) -> float:
        return self.smllib_frames / self.smllib_s

    @property
    def readings_per_s(self) -> float:
        return self.frames / self.replay_s

    @property
    def ratio(self) -> float:
        return self.readings_per_s / self.smllib_fps

    @property
    def median_ratio(self) -> float:
        smllib = self.smllib_frames / statistics.median(self.smllib_times)
        return self.frames / statistics.median(self.replay_times) / smllib

    @property
    def complete(self) -> bool:
        """Every run exited 0 with every reading in both sinks."""
        return all(code == 0 for code in self.exit_codes) and all(
            db == csv == self.frames for db, csv in zip(self.db_rows, self.csv_rows)
        )


def make_recording(path: Path, frames: int) -> int:
    """`frames` simulated frames one second apart, concatenated as a raw capture."""
    from smlogger.simulate import make_meter

    meter = make_meter("household", seed="bench-replay", tz=timezone.utc)
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    with open(path, "wb") as fh:
        for i in range(frames):
            fh.write(meter.frame(start + timedelta(seconds=i)))
    return path.stat().st_size


def time_smllib(data: bytes) -> tuple[float, int]:
    """Seconds and frames for smllib 1.7 to find and parse every frame of `data`."""
    from bench_decode import run_smllib

    began = time.perf_counter()
    frames = run_smllib(data)
    return time.perf_counter() - began, frames


def compile_package() -> None:
    """Byte-compile the package first, as pip does when it installs it: the timed start must
    not include compiling the sources (this environment sets PYTHONDONTWRITEBYTECODE)."""
    import compileall

    compileall.compile_dir(ROOT / "smlogger", quiet=1)


def replay(recording: Path, data_dir: Path) -> tuple[float, int, str]:
    """Run the logger over the recording; (seconds start to exit, exit code, summary line)."""
    compile_package()
    command = [
        sys.executable,
        "-m",
        "smlogger",
        "run",
        "--replay",
        str(recording),
        "--speed",
        "max",
        "--data-dir",
        str(data_dir),
        "--http",
        "off",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    began = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - began
    # the summary line is printed on stdout at the end of a replay
    summary = next(
        (line for line in reversed(proc.stdout.splitlines()) if line.startswith("frames:")), ""
    )
    (data_dir / "replay.log").write_text(proc.stdout + proc.stderr)
    return elapsed, proc.returncode, summary


def count_rows(data_dir: Path) -> tuple[int, int]:
    """Rows in the database and data rows in the CSV files."""
    db_rows = 0
    database = data_dir / "smlogger.db"
    if database.exists():
        con = sqlite3.connect(database)
        try:
            db_rows = int(con.execute("SELECT count(*) FROM readings").fetchone()[0])
        finally:
            con.close()
    csv_rows = sum(rows for rows, _ in csv_files(data_dir / "csv"))
    return db_rows, csv_rows


def csv_files(folder: Path) -> list[tuple[int, int]]:
    """(rows, uncompressed bytes) of every CSV file under `folder`; finished days are
    compressed (`.csv.gz`), and a replay ending "now" usually spans two days."""
    out = []
    for path in sorted(folder.rglob("*.csv*")):
        if path.name.endswith(".csv.gz"):
            text = gzip.decompress(path.read_bytes()).decode("utf-8")
        elif path.name.endswith(".csv"):
            text = path.read_text(encoding="utf-8")
        else:
            continue
        out.append((sum(1 for _ in csv.DictReader(io.StringIO(text))), len(text.encode())))
    return out


def run_bench(frames: int, workdir: Path, runs: int) -> ReplayFigures:
    """Make the recording, then time smllib on it and replay it `runs` times, interleaved (so
    that a busy moment of the machine touches both sides alike)."""
    recording = workdir / "replay.bin"
    size = make_recording(recording, frames)
    data = recording.read_bytes()
    smllib_times: list[float] = []
    replay_times: list[float] = []
    codes: list[int] = []
    db_rows: list[int] = []
    csv_rows: list[int] = []
    summary = ""
    smllib_frames = 0
    for run in range(runs):
        seconds, smllib_frames = time_smllib(data)
        smllib_times.append(seconds)
        data_dir = workdir / f"data-{run}"
        replay_s, code, summary = replay(recording, data_dir)
        replay_times.append(replay_s)
        codes.append(code)
        db, rows = count_rows(data_dir)
        db_rows.append(db)
        csv_rows.append(rows)
        shutil.rmtree(data_dir, ignore_errors=True)
    return ReplayFigures(
        frames, size, smllib_times, smllib_frames, replay_times, codes, db_rows, csv_rows, summary
    )


def section(f: ReplayFigures) -> str:
    """The RESULTS.md section for these figures."""
    verdict = "meets" if f.ratio >= 3 else "misses"
    runs = len(f.replay_times)
    replays = ", ".join(f"{t:.2f}" for t in f.replay_times)
    rows = ", ".join(f"{db:,}/{csv:,}" for db, csv in zip(f.db_rows, f.csv_rows))
    return (
        f"{HEADING}\n\n"
        f"`python benches/bench_replay.py`: {f.frames:,} simulated household frames "
        f"({f.file_bytes / 1e6:.1f} MB), `smlogger run --replay --speed max` into SQLite + CSV, "
        f"timed from process start to exit; {runs} runs, each smllib timing followed by a "
        "replay (interleaved), best of the runs.\n\n"
        "| | figure |\n|---|---:|\n"
        f"| smllib 1.7 parse only | {f.smllib_fps:,.0f} frames/s |\n"
        f"| smlogger replay, start to exit | {f.readings_per_s:,.0f} readings/s "
        f"({f.replay_s:.2f} s; runs: {replays} s) |\n"
        f"| ratio (target >= 3x) | {f.ratio:.2f}x ({verdict} the target; median of the runs "
        f"{f.median_ratio:.2f}x) |\n"
        f"| rows in the database / CSV at exit, each run | {rows} of {f.frames:,} |\n"
        f"| exit codes | {', '.join(str(c) for c in f.exit_codes)} |\n\n"
        f"Summary line: `{f.summary}`\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: run, print, optionally write RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=60_000)
    parser.add_argument("--write-results", action="store_true", help="update RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="10,000 frames")
    parser.add_argument("--summary", action="store_true", help="end with a BENCH_SUMMARY line")
    parser.add_argument("--runs", type=int, default=3, help="replays (interleaved with smllib)")
    options = parser.parse_args(argv)
    frames = 10_000 if options.quick else options.frames
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as workdir:
        figures = run_bench(frames, Path(workdir), max(1, options.runs))
    text = section(figures)
    print(text)
    if options.write_results:
        write_results(text, heading=HEADING)
    if options.summary:
        print("BENCH_SUMMARY " + json.dumps(summary(figures)))
    return 0


def summary(f: ReplayFigures) -> dict[str, Any]:
    """The BENCH_SUMMARY object for benches/run.py."""
    rows_text = " ; ".join(f"{db:,} / {csv:,}" for db, csv in zip(f.db_rows, f.csv_rows))
    goals = [
        {"name": "smlogger run --replay --speed max into SQLite + CSV, readings/s vs smllib "
         "parse-only frames/s (best of the runs)", "value": f.ratio, "unit": "x", "goal": 3.0,
         "met": f.ratio >= 3.0},
        {"name": "the same, median of the runs", "value": f.median_ratio, "unit": "x",
         "goal": 3.0, "met": f.median_ratio >= 3.0},
        {"name": "every reading in the database and the CSV at exit, every run",
         "value": f"{rows_text} of {f.frames:,}", "unit": "", "goal": "all",
         "met": f.complete},
    ]  # fmt: skip
    rows = [
        {"name": "smlogger replay, process start to exit", "value": f.readings_per_s,
         "unit": "readings/s"},
        {"name": "smllib 1.7, parse only", "value": f.smllib_fps, "unit": "frames/s"},
        {"name": "replay wall time (best)", "value": f.replay_s, "unit": "s"},
    ]  # fmt: skip
    return {
        "section": "ingest",
        "title": "End-to-end ingest: smlogger run --replay at full speed (issue 8)",
        "input": f"{f.frames:,} simulated household frames, {f.file_bytes / 1e6:.1f} MB",
        "goals": goals,
        "rows": rows,
        "notes": [
            f"summary line: `{f.summary}`",
            f"exit codes {', '.join(str(c) for c in f.exit_codes)}",
            f"{len(f.replay_times)} runs, interleaved with smllib; replay times "
            + ", ".join(f"{t:.2f} s" for t in f.replay_times),
        ],
    }


if __name__ == "__main__":
    raise SystemExit(main())
