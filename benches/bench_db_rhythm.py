"""What the SQLite batch writer costs an SD card per day, by journal mode, page size and the time
between transactions (how `storage.commit_interval` and the SQLite settings were chosen).

A day of simulated 1 Hz readings goes through the real batch writer (`SqlWriter`, rollups
included) in transactions of `interval` seconds' worth of readings; after each transaction
`os.sync()` writes everything back, as the kernel has done by the time the next transaction
comes minutes later, so every page a transaction touches counts again. The figure is this
process's `/proc/self/io` `write_bytes` (pages dirtied) per day.

    python benches/bench_db_rhythm.py               # a day of readings, all combinations (~3 min)
    python benches/bench_db_rhythm.py --hours 6     # quicker, less exact: WAL checkpoints
                                                    # (every 1000 pages) come hours apart

No assertions: it prints a table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import peewee

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smlogger import sml
from smlogger.reading import Reading, readings_from_frame
from smlogger.simulate import make_meter
from smlogger.store.bases import BaseBook
from smlogger.store.rows import StoredRow
from smlogger.store.schema import ensure_schema
from smlogger.store.writer import SqlWriter

SETTINGS = [("wal", 1024), ("wal", 4096), ("persist", 1024), ("persist", 4096)]
INTERVALS = (300, 600, 900, 1800)


def write_bytes() -> int:
    """Bytes of page cache this process dirtied so far."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes")


def simulated(count: int) -> list[Reading]:
    """`count` readings of the simulated household meter, one a second."""
    meter = make_meter("household", seed="bench")
    start = datetime(2026, 11, 2, tzinfo=timezone.utc)
    out: list[Reading] = []
    for second in range(count):
        moment = start + timedelta(seconds=second)
        out += readings_from_frame(sml.decode(meter.frame(moment))[0], moment)
    return out


def mb_per_day(mode: str, page: int, interval: int, readings: list[Reading], root: Path) -> float:
    """write_bytes per day of transactions of `interval` readings in a fresh database."""
    folder = Path(tempfile.mkdtemp(dir=root))
    db = peewee.SqliteDatabase(
        str(folder / "bench.db"),
        pragmas={
            "page_size": page,
            "journal_mode": mode,
            "synchronous": "full",  # what the batch writer uses
            "cache_size": -16000,
            "wal_autocheckpoint": 1000,
            "journal_size_limit": 1024 * 1024,
        },
    )
    ensure_schema(db)
    book = BaseBook(folder)
    writer = SqlWriter(db, legacy_table=False, legacy_local_time=False, book=book)
    batches = [readings[i : i + interval] for i in range(0, len(readings), interval)]
    # the first transaction (schema pages, the meter) is the set-up, not the rhythm
    writer.write([StoredRow.from_reading(r, book) for r in batches[0]])
    os.sync()
    before = write_bytes()
    for batch in batches[1:]:
        writer.write([StoredRow.from_reading(r, book) for r in batch])
        os.sync()
    spent = write_bytes() - before
    db.close()
    shutil.rmtree(folder)
    return spent / (len(readings) - len(batches[0])) * 86400 / 1e6


def main(argv: list[str] | None = None) -> int:
    """Command line: print MB/day per journal mode, page size and interval."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="readings to write (1/s)")
    parser.add_argument(
        "--dir", default=".", help="where the databases go: the disk under test, not a tmpfs"
    )
    options = parser.parse_args(argv)
    readings = simulated(int(options.hours * 3600))
    print("| journal, page size | " + " | ".join(f"every {s // 60} min" for s in INTERVALS) + " |")
    print("|---|" + "---:|" * len(INTERVALS))
    with tempfile.TemporaryDirectory(prefix="bench-db-rhythm-", dir=options.dir) as root:
        for mode, page in SETTINGS:
            cells = [f"{mb_per_day(mode, page, s, readings, Path(root)):.1f}" for s in INTERVALS]
            print(f"| {mode}, {page} B | " + " | ".join(cells) + " MB/day |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
