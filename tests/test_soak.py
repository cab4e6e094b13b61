"""Soak: the dirty recordings replayed in a loop at full speed through `smlogger run`.

Resident memory, open file descriptors and threads of the process are sampled from /proc and
must stay flat (late window against early window, generous tolerances), and every frame is
accounted for: frames in = readings stored + rejected + damaged frames, from the logger's own
summary and the database and CSV files it leaves behind.

2 minutes in the default suite (marked slow); `SMLOGGER_SOAK_SECONDS=3600 pytest -m slow
tests/test_soak.py` runs the hour-long soak.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import free_port, wait_for

from smlogger import sml
from smlogger.reading import readings_from_frame
from smlogger.store import Store, open_database

# damaged frames (CRC errors, truncation, a stream cut mid-frame), PIN-locked data sets, lost bytes
DIRTY = (
    "DZG_DVS-7420.2V.G2_mtr1_error.bin",
    "EMH_eHZ-IW8E2A5L0EK2P_with_error.bin",
    "EasyMeter_Q3A_A1064V1009.bin",
    "dzg_dwsb20_2th_3byte.bin",
    "HOLLEY_DTZ541-BDBA_with_PIN.bin",
    "ISKRA_MT631-D1A52-K0z-H01_with_PIN.bin",
    "ITRON_OpenWay-3.HZ_with_PIN.bin",
)
SECONDS = float(os.environ.get("SMLOGGER_SOAK_SECONDS", "120"))
SUMMARY = re.compile(
    r"INFO +smlogger: (?P<name>\S+): (?P<frames>\d+) frames in = (?P<readings>\d+) readings "
    r"accepted \+ (?P<rejected>\d+) rejected \+ (?P<damaged>\d+) damaged \([^)]*\) "
    r"\+ (?P<no_data>-?\d+) without meter data"
)


@dataclass
class Sample:
    at: float
    rss_kb: int
    fds: int
    threads: int
    fd_targets: list[str]

    @property
    def other_fds(self) -> int:
        """Descriptors other than the database's (see the test)."""
        return sum(1 for t in self.fd_targets if "smlogger.db" not in t)


def sample(pid: int, started: float) -> Sample:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()[0] if value.split() else "0"
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue  # closed while listing
    return Sample(
        time.monotonic() - started,
        int(fields["VmRSS"]),
        len(targets),
        int(fields["Threads"]),
        sorted(targets),
    )


def window(samples: list[Sample], start: float, end: float) -> list[Sample]:
    chosen = [s for s in samples if start * SECONDS <= s.at <= end * SECONDS]
    assert len(chosen) >= 3, f"too few samples between {start:.0%} and {end:.0%} of the run"
    return chosen


def stored_samples(data: Path) -> tuple[int, int]:
    """(rows, readings) in the SQLite database once its disk queue is drained into it."""
    store = Store(open_database(None, data), spool_dir=data / "spool")
    store.flush(timeout=60)
    store.close()
    with sqlite3.connect(data / "smlogger.db") as db:
        rows, readings = db.execute("SELECT count(*), sum(samples) FROM readings").fetchone()
    return int(rows), int(readings or 0)


def csv_samples(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*.csv*"):
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode()
        total += sum(int(row["samples"]) for row in csv.DictReader(io.StringIO(text)))
    return total


@pytest.mark.slow
def test_soak_dirty_recordings_at_full_speed(tmp_path: Path, recordings_dir: Path) -> None:
    # precondition of the reconciliation: each good frame of these recordings is one reading
    for name in DIRTY:
        frames = [f for f in sml.decode((recordings_dir / name).read_bytes()) if f["ok"]]
        now = datetime.now(timezone.utc)
        assert all(len(list(readings_from_frame(f, now))) == 1 for f in frames), name

    data = tmp_path / "data"
    port = free_port()
    # Replayed frames are stamped one second apart (replay_interval), so 5-minute aggregates
    # store ~1/300 of the frames: the sinks keep up with the full-speed decoder and what is
    # measured is the steady state, not a backlog filling the in-memory sink queue.
    lines = [f'data_dir = "{data}"', "store_interval = 300", f'[http]\nlisten = "127.0.0.1:{port}"']
    for name in DIRTY:
        lines.append(
            f'[[meter]]\nname = "{name.removesuffix(".bin")}"\n'
            f'replay = "{recordings_dir / name}"\nloop = true\nspeed = "max"'
        )
    conf = tmp_path / "soak.toml"
    conf.write_text("\n".join(lines) + "\n")
    log_path = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "smlogger", "run", "--config", str(conf)], stderr=err, env=env
        )
    samples: list[Sample] = []
    statuses = []
    try:
        url = f"http://127.0.0.1:{port}/api/status"

        def up() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return True
            except OSError:
                return False

        wait_for(up, 60, "the web page")
        started = time.monotonic()
        while time.monotonic() - started < SECONDS:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            samples.append(sample(proc.pid, started))
            if len(samples) % 15 == 0:
                with urllib.request.urlopen(url, timeout=10) as response:
                    statuses.append(json.load(response))
            time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    log_text = log_path.read_text()
    assert code == 0, log_text[-3000:]

    # flat: after the warm-up (first 20 %), the last fifth of the run against 20..40 %
    early, late = window(samples, 0.2, 0.4), window(samples, 0.8, 1.0)
    rss_early = max(s.rss_kb for s in early)
    rss_late = max(s.rss_kb for s in late)
    print(  # the figures, for the record (pytest -s)
        f"\nsoak {SECONDS:.0f} s: RSS {rss_early / 1024:.1f} -> {rss_late / 1024:.1f} MB, "
        f"fds {min(s.fds for s in early)}..{max(s.fds for s in early)} -> "
        f"{min(s.fds for s in late)}..{max(s.fds for s in late)} "
        f"(without the database's: {min(s.other_fds for s in early)} -> "
        f"{min(s.other_fds for s in late)}), "
        f"threads {max(s.threads for s in early)} -> {max(s.threads for s in late)}"
    )
    assert rss_late <= rss_early * 1.25 + 16 * 1024, (rss_early, rss_late)
    # Descriptors come and go (each replay pass reopens its recording, CSV rotation gzips a
    # day's file): a leak raises the floor and the middle, not just a momentary peak. The web
    # server's worker threads each open the SQLite database (and its WAL) on their first
    # request, so those are bounded by the thread count instead.
    for s in samples:
        db_fds = sum(1 for t in s.fd_targets if "smlogger.db" in t)
        assert db_fds <= 2 * s.threads + 3, s.fd_targets
    least_early = min(early, key=lambda s: s.other_fds)
    least_late = min(late, key=lambda s: s.other_fds)
    assert least_late.other_fds <= least_early.other_fds + 4, Counter(
        least_late.fd_targets
    ) - Counter(least_early.fd_targets)
    assert (
        statistics.median(s.other_fds for s in late)
        <= statistics.median(s.other_fds for s in early) + 6
    )
    assert max(s.threads for s in late) <= max(s.threads for s in early) + 2

    # while running: each good frame was one reading, accepted or rejected, in every snapshot
    assert statuses, "no status snapshot taken"
    for status in statuses:
        for name, source in status["sources"].items():
            stats = source["stats"]
            assert stats["readings"] + stats["rejected"] == stats["frames_ok"], (name, stats)
    # the last snapshot shows every meter's frames, also of the one sending only damaged ones
    assert all(
        sum(s["stats"][k] for k in ("frames_ok", "crc_errors", "truncated")) > 0
        for s in statuses[-1]["sources"].values()
    ), statuses[-1]["sources"]

    # at the end: every frame accounted for, every accepted reading stored once in each sink
    summaries = {m["name"]: m for m in SUMMARY.finditer(log_text)}
    assert set(summaries) == {n.removesuffix(".bin") for n in DIRTY}, log_text[-3000:]
    accepted = 0
    for name, m in summaries.items():
        frames_in, readings = int(m["frames"]), int(m["readings"])
        rejected, damaged = int(m["rejected"]), int(m["damaged"])
        assert int(m["no_data"]) == 0, m.group(0)
        assert frames_in == readings + rejected + damaged, m.group(0)
        assert frames_in > 1000, f"{name} hardly ran: {m.group(0)}"
        accepted += readings
    assert sum(int(m["damaged"]) for m in summaries.values()) > 1000
    assert sum(int(m["rejected"]) for m in summaries.values()) > 0
    rows, in_db = stored_samples(data)
    assert in_db == accepted, (in_db, accepted)
    assert csv_samples(data / "csv") == accepted
    assert rows >= len(DIRTY) - 1  # aggregated: one row per meter and 300 replayed frames
