"""What a default 1 Hz logger costs an SD card: disk writes per day, bytes per stored reading.

Starts `smlogger run --simulate` (one frame per second, SQLite + CSV + web, the defaults a new
user gets) in a fresh data dir, reads the process's `/proc/PID/io` `write_bytes` (pages the
process dirtied, i.e. what it sends to the card) after a warm-up and again after the measured
span, stops it with SIGTERM, and then measures the database (`VACUUM INTO` copy: rows, rollups
and indexes; bytes / stored reading) and the CSV files (bytes / row).

Variants (each its own process, its own data dir, its own /proc figures): default settings
alone, then `--sync-interval 0` (fsync every reading) and `--store-interval 10` side by side.

    python benches/bench_daemon.py                 # 60 s warm-up + 300 s measured, twice (~13 min)
    python benches/bench_daemon.py --seconds 60    # a quick look
    python benches/bench_daemon.py --write-results # also update benches/RESULTS.md

Targets (issue 8): <= 50 MB/day of write_bytes and <= 150 bytes/reading in the database with the
defaults. No assertions: it prints the figures.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADING = "## SD-card write budget (bench_daemon.py)"
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "sync_interval = 0": ["--sync-interval", "0"],
    "store_interval = 10 s": ["--store-interval", "10"],
}


@dataclass
class DaemonFigures:
    """What one variant cost."""

    name: str
    args: list[str]
    measured_s: float = 0.0
    write_bytes: int = 0
    readings: int = 0  # rows in `readings`
    db_bytes: int = 0  # VACUUM INTO copy (rows + rollups + indexes + meters)
    csv_rows: int = 0
    csv_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    empty_db_bytes: int = 0  # the schema alone

    @property
    def mb_per_day(self) -> float:
        return self.write_bytes / max(self.measured_s, 1e-9) * 86400 / 1e6

    @property
    def db_bytes_per_reading(self) -> float:
        return self.db_bytes / max(self.readings, 1)

    @property
    def db_marginal_per_reading(self) -> float:
        """Bytes per reading beyond the empty schema (what a year of readings grows by)."""
        return (self.db_bytes - self.empty_db_bytes) / max(self.readings, 1)

    @property
    def csv_bytes_per_row(self) -> float:
        return self.csv_bytes / max(self.csv_rows, 1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/io has no write_bytes")


def _db_figures(path: Path, figures: DaemonFigures) -> None:
    if not path.exists():
        figures.notes.append("no database file")
        return
    copy = path.with_name("vacuumed.db")
    con = sqlite3.connect(path)
    try:
        figures.readings = int(con.execute("SELECT count(*) FROM readings").fetchone()[0])
        con.execute("VACUUM INTO ?", (str(copy),))
    finally:
        con.close()
    figures.db_bytes = copy.stat().st_size
    copy.unlink()


def empty_db_bytes(workdir: Path) -> int:
    """Size of a database with the schema and no reading (VACUUM INTO), to tell the cost per
    reading from the fixed cost of the tables."""
    sys.path.insert(0, str(ROOT))
    from smlogger.store import ensure_schema, open_database

    folder = workdir / "empty"
    folder.mkdir(exist_ok=True)
    db = open_database(None, folder)
    ensure_schema(db)
    db.execute_sql("VACUUM INTO ?", (str(folder / "copy.db"),))  # type: ignore[no-untyped-call]
    db.close()
    return (folder / "copy.db").stat().st_size


def _csv_figures(directory: Path, figures: DaemonFigures) -> None:
    for path in sorted(directory.rglob("*.csv")):
        figures.csv_bytes += path.stat().st_size
        with open(path, newline="") as fh:
            figures.csv_rows += sum(1 for _ in csv.DictReader(fh))


def start(data_dir: Path, args: list[str]) -> subprocess.Popen[bytes]:
    """`smlogger run --simulate` with the defaults (plus `args`) in `data_dir`."""
    command = [
        sys.executable,
        "-m",
        "smlogger",
        "run",
        "--simulate",
        "--data-dir",
        str(data_dir),
        "--http",
        f"127.0.0.1:{_free_port()}",
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(data_dir.parent / f"{data_dir.name}.log", "wb")  # noqa: SIM115 (child owns it)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def run_variants(
    variants: dict[str, list[str]], warmup_s: float, measure_s: float, workdir: Path
) -> list[DaemonFigures]:
    """Run every variant side by side; figures per variant."""
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for index, (name, args) in enumerate(variants.items()):
        data_dir = workdir / f"variant{index}"
        data_dir.mkdir()
        procs[name] = (start(data_dir, args), data_dir)
    time.sleep(warmup_s)
    begin: dict[str, tuple[float, int]] = {}
    for name, (proc, _) in procs.items():
        if proc.poll() is not None:
            raise RuntimeError(f"variant {name!r} exited early ({proc.returncode})")
        begin[name] = (time.monotonic(), _write_bytes(proc.pid))
    time.sleep(measure_s)
    results = []
    for name, (proc, data_dir) in procs.items():
        figures = DaemonFigures(name, variants[name])
        if proc.poll() is not None:
            raise RuntimeError(f"variant {name!r} exited early ({proc.returncode})")
        figures.write_bytes = _write_bytes(proc.pid) - begin[name][1]
        figures.measured_s = time.monotonic() - begin[name][0]
        proc.send_signal(signal.SIGTERM)
        results.append((figures, proc, data_dir))
    out = []
    empty = empty_db_bytes(workdir)
    for figures, proc, data_dir in results:
        figures.empty_db_bytes = empty
        proc.wait(150)
        _db_figures(data_dir / "smlogger.db", figures)
        _csv_figures(data_dir / "csv", figures)
        out.append(figures)
    return out


def section(results: list[DaemonFigures], warmup_s: float) -> str:
    """The RESULTS.md section for these figures."""
    lines = [
        HEADING,
        "",
        f"`python benches/bench_daemon.py`: `smlogger run --simulate` (1 frame/s, SQLite + CSV + "
        f"web), `/proc/PID/io` `write_bytes` over {results[0].measured_s:.0f} s after a "
        f"{warmup_s:.0f} s warm-up, extrapolated to a day; database size by `VACUUM INTO`. "
        "Targets: <= 50 MB/day, <= 150 B/reading.",
        "",
        "| settings | write_bytes MB/day | DB bytes/reading (all) | DB bytes/reading "
        "(beyond the empty schema) | stored rows | CSV bytes/row |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for f in results:
        lines.append(
            f"| {f.name} | {f.mb_per_day:.1f} | {f.db_bytes_per_reading:.0f} "
            f"| {f.db_marginal_per_reading:.0f} | {f.readings} | {f.csv_bytes_per_row:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_results(text: str, path: Path = RESULTS, heading: str = HEADING) -> None:
    """Replace (or append) this bench's section in RESULTS.md, leaving the others alone."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    start_at = old.find(heading)
    if start_at < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end_at = old.find("\n## ", start_at + len(heading))
        new = old[:start_at] + text + (old[end_at + 1 :] if end_at >= 0 else "")
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    """Command line: run, print, optionally write RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="measured span")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before measuring")
    parser.add_argument("--variant", action="append", choices=list(VARIANTS))
    parser.add_argument("--write-results", action="store_true", help="update RESULTS.md")
    options = parser.parse_args(argv)
    chosen = {k: VARIANTS[k] for k in (options.variant or VARIANTS)}
    # the default runs alone: a neighbour fsyncing every second (sync_interval = 0) makes
    # ext4 commit its journal every second, which writes back (and so re-dirties) the pages
    # of every other process on the filesystem and inflates their write_bytes
    groups = [{k: v for k, v in chosen.items() if k == "default"}]
    groups.append({k: v for k, v in chosen.items() if k != "default"})
    results: list[DaemonFigures] = []
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as workdir:
        for index, group in enumerate(g for g in groups if g):
            folder = Path(workdir) / f"group{index}"
            folder.mkdir()
            results += run_variants(group, options.warmup, options.seconds, folder)
    text = section(results, options.warmup)
    print(text)
    if options.write_results:
        write_results(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
