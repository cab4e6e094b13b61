"""What a default 1 Hz logger costs an SD card: disk writes per day, CPU, memory, bytes per reading.

Starts `smlogger run --simulate` (one frame per second, SQLite + CSV + web, the defaults a new
user gets) in a fresh data dir, reads the process's `/proc/PID/io` `write_bytes` (pages the
process dirtied, i.e. what it sends to the card), CPU time and RSS after a warm-up and again after
the measured span, stops it with SIGTERM, and then measures the database (`VACUUM INTO` copy:
rows, rollups and indexes; bytes / stored reading) and the CSV files (bytes / row).

Where the data dir lives matters, and the figures say which: on a Raspberry Pi the logger is
about the only process writing to its card, but on a shared development machine every other
process's fsync makes ext4 commit its journal early, which writes back (and so cleans) the
logger's dirty pages; the logger's next append then dirties, and is charged for, the same page
again. `--filesystem card` (the default when run as root) therefore gives each variant its own
freshly made ext4 filesystem (a loop-mounted image, `noatime` like Raspberry Pi OS), and adds
the default settings on the machine's shared root filesystem as a reference row;
`--filesystem shared` puts every data dir under the system temp dir.

Variants (each its own process, data dir and filesystem, side by side): default settings, then
`--sync-interval 0` (fsync every reading) and `--store-interval 10`.

    python benches/bench_daemon.py                 # 60 s warm-up + 1,800 s measured (~32 min)
    python benches/bench_daemon.py --seconds 120   # a quick look (fewer database commits seen)
    python benches/bench_daemon.py --write-results # also update benches/RESULTS.md
    python benches/bench_daemon.py --summary       # end with a BENCH_SUMMARY line (run.py)

The measured span should cover several `storage.commit_interval`s (600 s by default): the
database and the CSV files are written once per interval. Targets (issue 8): <= 50 MB/day of
write_bytes and <= 150 bytes/reading in the database with the defaults. No assertions: it prints
the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    cpu_s: float = 0.0  # user + system CPU seconds over the measured span
    rss_kib: int = 0  # VmRSS at the end of the span
    filesystem: str = ""

    @property
    def cpu_percent(self) -> float:
        """CPU use in % of one core over the measured span."""
        return 100.0 * self.cpu_s / max(self.measured_s, 1e-9)

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


def _cpu_seconds(pid: int) -> float:
    # fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the ")" of the name
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextmanager
def card_filesystem(folder: Path, size_mb: int = 512) -> Iterator[Path]:
    """A fresh ext4 filesystem of its own, mounted at `folder` (like the Pi's card, which only
    the logger writes to often); unmounted and removed afterwards. Needs root and loop devices."""
    image = folder.with_suffix(".img")
    with open(image, "wb") as fh:
        fh.truncate(size_mb * 1024 * 1024)
    folder.mkdir()
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
    if made.returncode != 0:
        raise OSError(f"mkfs.ext4: {made.stderr.strip()}")
    mounted = subprocess.run(
        ["mount", "-o", "loop,noatime", str(image), str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        raise OSError(f"mount: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, check=False)
        image.unlink()


def can_mount(workdir: Path) -> str:
    """'' if a loop-mounted filesystem can be made here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    try:
        with card_filesystem(workdir / "probe", size_mb=16):
            return ""
    except OSError as exc:
        return str(exc)


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
    from bench_replay import csv_files

    for rows, size in csv_files(directory):
        figures.csv_rows += rows
        figures.csv_bytes += size


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
    variants: dict[str, list[str]],
    warmup_s: float,
    measure_s: float,
    workdir: Path,
    *,
    card: bool,
    reference: bool,
) -> list[DaemonFigures]:
    """Run every variant side by side; figures per variant.

    With `card`, each variant gets a filesystem of its own; `reference` adds the default
    settings on the shared filesystem the work dir is on.
    """
    runs: list[tuple[str, list[str], str]] = [
        (name, args, "own ext4" if card else "shared") for name, args in variants.items()
    ]
    if card and reference:
        runs.append(("default, on the busy shared root filesystem", [], "shared"))
    procs: list[tuple[DaemonFigures, subprocess.Popen[bytes], Path]] = []
    with ExitStack() as mounts:
        for index, (name, args, where) in enumerate(runs):
            home = workdir / f"variant{index}"
            if where == "own ext4":
                mounts.enter_context(card_filesystem(home))
            else:
                home.mkdir()
            data_dir = home / "data"
            data_dir.mkdir()
            figures = DaemonFigures(name, args, filesystem=where)
            procs.append((figures, start(data_dir, args), data_dir))
        time.sleep(warmup_s)
        begin: list[tuple[float, int, float]] = []
        for figures, proc, _ in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"variant {figures.name!r} exited early ({proc.returncode})")
            begin.append((time.monotonic(), _write_bytes(proc.pid), _cpu_seconds(proc.pid)))
        time.sleep(measure_s)
        for (figures, proc, _), (t0, w0, c0) in zip(procs, begin):
            if proc.poll() is not None:
                raise RuntimeError(f"variant {figures.name!r} exited early ({proc.returncode})")
            figures.write_bytes = _write_bytes(proc.pid) - w0
            figures.cpu_s = _cpu_seconds(proc.pid) - c0
            figures.rss_kib = _rss_kib(proc.pid)
            figures.measured_s = time.monotonic() - t0
            proc.send_signal(signal.SIGTERM)
        empty = empty_db_bytes(workdir)
        for figures, proc, data_dir in procs:
            figures.empty_db_bytes = empty
            proc.wait(150)
            _db_figures(data_dir / "smlogger.db", figures)
            _csv_figures(data_dir / "csv", figures)
    return [figures for figures, _, _ in procs]


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
        *_table(results),
    ]
    return "\n".join(lines) + "\n"


def _table(results: list[DaemonFigures]) -> list[str]:
    lines = [
        "| settings | filesystem | write_bytes MB/day | CPU % of one core | RSS MB "
        "| DB bytes/reading (all) | DB bytes/reading (beyond the empty schema) | stored rows "
        "| CSV bytes/row |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in results:
        lines.append(
            f"| {f.name} | {f.filesystem} | {f.mb_per_day:.1f} | {f.cpu_percent:.2f} "
            f"| {f.rss_kib / 1024:.1f} | {f.db_bytes_per_reading:.0f} "
            f"| {f.db_marginal_per_reading:.0f} | {f.readings} | {f.csv_bytes_per_row:.0f} |"
        )
    return lines


def summary(results: list[DaemonFigures], warmup_s: float, why_shared: str) -> dict[str, Any]:
    """The BENCH_SUMMARY object for benches/run.py."""
    by_name = {f.name: f for f in results}
    default = by_name["default"]
    where = "its own ext4 filesystem" if default.filesystem == "own ext4" else "a shared one"
    goals = [
        {"name": "1 Hz daemon, defaults: disk writes (write_bytes)", "value": default.mb_per_day,
         "unit": "MB/day", "goal": "<= 50 MB/day", "met": default.mb_per_day <= 50},
        # what a year of readings grows the file by: the empty schema's fixed pages are not
        # a cost per reading (they dominate a short run's whole-file average)
        {"name": "1 Hz daemon, defaults: database growth per reading (rollups, indexes)",
         "value": default.db_marginal_per_reading, "unit": "B", "goal": "<= 150 B",
         "met": default.db_marginal_per_reading <= 150},
        {"name": "1 Hz daemon, defaults: CPU", "value": default.cpu_percent,
         "unit": "% of one core", "summary": True},
        {"name": "1 Hz daemon, defaults: RSS", "value": default.rss_kib / 1024, "unit": "MB",
         "summary": True},
    ]  # fmt: skip
    rows = []
    for f in results:
        rows += [
            {"name": f"{f.name}: write_bytes", "value": f.mb_per_day, "unit": "MB/day"},
            {"name": f"{f.name}: CPU", "value": f.cpu_percent, "unit": "% of one core"},
            {"name": f"{f.name}: RSS", "value": f.rss_kib / 1024, "unit": "MB"},
            {
                "name": f"{f.name}: DB bytes/reading, whole file",
                "value": f.db_bytes_per_reading,
                "unit": "B",
            },
            {
                "name": f"{f.name}: DB growth/reading",
                "value": f.db_marginal_per_reading,
                "unit": "B",
            },
            {"name": f"{f.name}: CSV bytes/row", "value": f.csv_bytes_per_row, "unit": "B"},
        ]
    notes = [
        f"`smlogger run --simulate` (1 frame/s, SQLite + CSV + web), {default.measured_s:.0f} s "
        f"measured after a {warmup_s:.0f} s warm-up, data dir on {where}; write_bytes from "
        "/proc/PID/io extrapolated to a day, database by VACUUM INTO; each variant in its "
        "own process (and filesystem, unless said otherwise below), side by side",
    ]
    if why_shared:
        notes.append(f"no filesystem of its own ({why_shared}): figures include other "
                     "processes' journal commits")  # fmt: skip
    return {
        "section": "daemon",
        "title": "1 Hz daemon cost: CPU, RSS, disk MB/day (issue 8)",
        "goals": goals,
        "rows": rows,
        "notes": notes,
    }


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
    """Command line: run, print, optionally write RESULTS.md or a BENCH_SUMMARY line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1800.0, help="measured span")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before measuring")
    parser.add_argument("--variant", action="append", choices=list(VARIANTS))
    parser.add_argument(
        "--filesystem",
        choices=["card", "shared"],
        default="card",
        help="card: each variant on an ext4 filesystem of its own (root only; falls back to "
        "shared with a note); shared: under the system temp dir",
    )
    parser.add_argument("--quick", action="store_true", help="defaults only, 20 s + 60 s")
    parser.add_argument("--write-results", action="store_true", help="update RESULTS.md")
    parser.add_argument("--summary", action="store_true", help="end with a BENCH_SUMMARY line")
    options = parser.parse_args(argv)
    chosen = {k: VARIANTS[k] for k in (options.variant or VARIANTS)}
    if options.quick:
        chosen = {"default": VARIANTS["default"]}
        options.warmup, options.seconds = 20.0, 60.0
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as workdir:
        why_shared = can_mount(Path(workdir)) if options.filesystem == "card" else "asked for"
        if why_shared and options.filesystem == "card":
            print(f"cannot give the data dirs a filesystem of their own ({why_shared}): "
                  "measuring on the shared one", flush=True)  # fmt: skip
        card = not why_shared
        if not card and len(chosen) > 1 and "default" in chosen:
            # on one shared filesystem the default runs alone: a neighbour fsyncing every
            # second (sync_interval = 0) makes ext4 commit its journal every second, which
            # cleans (and so re-charges) the pages of every other process
            groups = [{"default": chosen["default"]},
                      {k: v for k, v in chosen.items() if k != "default"}]  # fmt: skip
        else:
            groups = [chosen]
        results: list[DaemonFigures] = []
        for index, group in enumerate(groups):
            folder = Path(workdir) / f"group{index}"
            folder.mkdir()
            results += run_variants(group, options.warmup, options.seconds, folder, card=card,
                                    reference=card and index == 0)  # fmt: skip
    text = section(results, options.warmup)
    print(text)
    if options.write_results:
        write_results(text)
    if options.summary:
        note = "" if card else why_shared
        print("BENCH_SUMMARY " + json.dumps(summary(results, options.warmup, note)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
