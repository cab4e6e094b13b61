"""Rolling CSV files: rotation, header, compression, pruning and crash repair."""

from __future__ import annotations

import csv
import functools
import gzip
import io
import logging
import os
import struct
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import METER, reading
from hypothesis import given, settings
from hypothesis import strategies as st
from smallfs import fill, small_filesystem

from smlogger.csvlog import (
    INSTANT_FIELDS,
    CsvDiskFullError,
    CsvLog,
    RowFormat,
    _escape,
    columns,
    format_number,
    repair,
)
from smlogger.reading import ENERGY_FIELDS, Reading
from smlogger.timefmt import iso


def rows(path: Path) -> list[dict[str, str]]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return list(csv.DictReader(io.StringIO(raw.decode())))


def files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_daily_rotation_across_midnight(tmp_path: Path) -> None:
    start = datetime(2024, 3, 9, 23, 59, 57, 250000, tzinfo=timezone.utc)
    log = CsvLog(tmp_path, clock=lambda: start)
    for i in range(6):
        log.write(reading(start + timedelta(seconds=i), e_sum=100 + i / 1000, p_sum=200 + i))
    log.close()
    assert files(tmp_path) == [f"{METER}_2024-03-09.csv.gz", f"{METER}_2024-03-10.csv"]
    day1 = rows(tmp_path / METER / f"{METER}_2024-03-09.csv.gz")
    day2 = rows(tmp_path / METER / f"{METER}_2024-03-10.csv")
    assert [r["time"] for r in day1] == [
        "2024-03-09T23:59:57.250Z",
        "2024-03-09T23:59:58.250Z",
        "2024-03-09T23:59:59.250Z",
    ]
    assert day2[0]["time"] == "2024-03-10T00:00:00.250Z"
    assert [r["p_sum"] for r in day1 + day2] == ["200", "201", "202", "203", "204", "205"]
    assert day2[-1]["e_sum"] == "100.005"
    assert day2[0]["meter_id"] == METER
    assert list(day2[0]) == columns(False)
    assert day2[0]["u_L1"] == ""


def test_hourly_and_local_boundaries(tmp_path: Path) -> None:
    start = datetime(2024, 3, 9, 10, 59, 59, tzinfo=timezone.utc)
    log = CsvLog(tmp_path, rotate="hourly", compress=False)
    for i in range(3):
        log.write(reading(start + timedelta(seconds=i), 100.0, 250.0))
    log.close()
    assert files(tmp_path) == [f"{METER}_2024-03-09T10.csv", f"{METER}_2024-03-09T11.csv"]


def test_size_rotation(tmp_path: Path) -> None:
    start = datetime(2024, 3, 9, 10, 0, tzinfo=timezone.utc)
    log = CsvLog(tmp_path, rotate="size", max_size=2048, compress=True)
    for i in range(80):
        log.write(reading(start + timedelta(seconds=i), 100.0, 250.0))
    log.close()
    names = files(tmp_path)
    assert len(names) >= 3
    assert all(n.endswith(".csv.gz") for n in names[:-1]) and names[-1].endswith(".csv")
    total = [r for n in names for r in rows(tmp_path / METER / n)]
    assert len(total) == 80
    for name in names[:-1]:
        size = len(gzip.decompress((tmp_path / METER / name).read_bytes()))
        assert size < 2048 + 200


def test_partial_last_line_is_repaired_on_restart(tmp_path: Path) -> None:
    start = datetime(2024, 3, 9, 12, 0, tzinfo=timezone.utc)
    log = CsvLog(tmp_path, clock=lambda: start)
    for i in range(3):
        log.write(reading(start + timedelta(seconds=i), 100.0, 250.0))
    log.close()
    path = tmp_path / METER / f"{METER}_2024-03-09.csv"
    with open(path, "ab") as fh:
        fh.write(b"2024-03-09T12:00:03.000Z,0a01,100.0")  # crash in the middle of a row
    log = CsvLog(tmp_path, clock=lambda: start)
    log.write(reading(start + timedelta(seconds=4), 100.0, 250.0))
    log.close()
    content = path.read_text()
    assert "0a01,100.0" not in content
    parsed = rows(path)
    assert [r["time"][17:19] for r in parsed] == ["00", "01", "02", "04"]
    assert all(len(r) == len(columns(False)) and None not in r.values() for r in parsed)


def test_zero_fill_and_header_only_partial(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"a,b\n1,2\n3,\x00\x00\x00")
    assert repair(path) == 5
    assert path.read_bytes() == b"a,b\n1,2\n"
    start = datetime(2024, 3, 9, 12, 0, tzinfo=timezone.utc)
    folder = tmp_path / "csv" / METER
    folder.mkdir(parents=True)
    (folder / f"{METER}_2024-03-09.csv").write_bytes(b"time,meter_id,e_s")
    log = CsvLog(tmp_path / "csv", clock=lambda: start)
    log.write(reading(start, 100.0, 250.0))
    log.close()
    text = (folder / f"{METER}_2024-03-09.csv").read_text().splitlines()
    assert text[0] == ",".join(columns(False)) and len(text) == 2


def test_old_uncompressed_files_compressed_and_pruned_at_start(tmp_path: Path) -> None:
    day = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
    log = CsvLog(tmp_path, compress=False, clock=lambda: day)
    for d in range(5):
        log.write(reading(day + timedelta(days=d), 100.0, 250.0))
    log.close()
    assert len(files(tmp_path)) == 5
    now = day + timedelta(days=4)
    log = CsvLog(tmp_path, compress=True, keep_days=2, clock=lambda: now)
    log.close()
    # keep_days=2 at 03-05 12:00: files whose period ended before 03-03 12:00 are gone
    assert files(tmp_path) == [
        f"{METER}_2024-03-03.csv.gz",
        f"{METER}_2024-03-04.csv.gz",
        f"{METER}_2024-03-05.csv",
    ]


def test_prune_on_rotation(tmp_path: Path) -> None:
    day = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
    clock = [day]
    log = CsvLog(tmp_path, keep_days=1, clock=lambda: clock[0])
    for d in range(4):
        clock[0] = day + timedelta(days=d)
        log.write(reading(clock[0], 100.0, 250.0))
    log.close()
    assert files(tmp_path) == [f"{METER}_2024-03-03.csv.gz", f"{METER}_2024-03-04.csv"]


def test_header_change_starts_a_new_file(tmp_path: Path) -> None:
    at = datetime(2024, 3, 9, 12, 0, tzinfo=timezone.utc)
    log = CsvLog(tmp_path, clock=lambda: at)
    log.write(reading(at, 100.0, 250.0))
    log.close()
    log = CsvLog(tmp_path, aggregated=True, clock=lambda: at)
    agg = reading(
        at + timedelta(minutes=1),
        100.0,
        250.0,
        samples=60,
        minmax={"p_sum": (100.0, 900.0)},
    )
    log.write(agg)
    log.close()
    assert files(tmp_path) == [f"{METER}_2024-03-09.csv", f"{METER}_2024-03-09_1.csv"]
    row = rows(tmp_path / METER / f"{METER}_2024-03-09_1.csv")[0]
    assert (row["samples"], row["p_sum_min"], row["p_sum_max"]) == ("60", "100", "900")
    assert row["u_L1_min"] == ""


def test_several_meters_get_their_own_files(tmp_path: Path) -> None:
    at = datetime(2024, 3, 9, 12, 0, tzinfo=timezone.utc)
    log = CsvLog(tmp_path)
    log.write(reading(at, 100.0, 250.0, meter="house"))
    log.write(reading(at, 100.0, 250.0, meter="heat/pump"))
    log.close()
    assert files(tmp_path) == ["heat_pump_2024-03-09.csv", "house_2024-03-09.csv"]
    assert rows(tmp_path / "heat_pump" / "heat_pump_2024-03-09.csv")[0]["meter_id"] == "heat/pump"


def test_bad_options_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rotate must be one of hourly, daily, size"):
        CsvLog(tmp_path, rotate="weekly")


def test_disk_full_rolls_back_holds_and_writes_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    start = datetime(2024, 3, 9, 12, 0, tzinfo=timezone.utc)
    with small_filesystem(tmp_path / "fs", 128) as mount:
        caplog.set_level(logging.INFO, logger="smlogger.csvlog")
        log = CsvLog(mount / "csv", clock=lambda: start, max_pending_bytes=20_000)
        log.write(reading(start, p_sum=0))
        filler = fill(mount)
        path = mount / "csv" / METER / f"{METER}_2024-03-09.csv"
        # the file's last page takes some rows; then the disk refuses (a row may be cut
        # in the middle by a short write)
        for i in range(1, 200):
            log.write(reading(start + timedelta(seconds=i), p_sum=i))
            assert path.read_bytes().endswith(b"\n")  # never a partial row on disk
        status = log.status()
        assert status["state"] == f"disk full on {path.parent}"
        held = int(str(status["queue_depth"]))
        assert 100 < held < 200
        assert len([r for r in caplog.records if "disk full on" in r.getMessage()]) == 1
        # beyond the memory bound the reading is not taken: the caller keeps it and retries
        taken = 200
        with pytest.raises(CsvDiskFullError):
            while True:
                log.write(reading(start + timedelta(seconds=taken), p_sum=taken))
                taken += 1
        assert int(str(log.status()["queue_depth"])) == held + taken - 200
        filler.unlink()
        log.write(reading(start + timedelta(seconds=taken), p_sum=taken))  # the retried one
        assert log.status()["state"] == "ok" and log.status()["queue_depth"] == 0
        log.close()
        got = [int(r["p_sum"]) for r in rows(path)]
        assert got == list(range(taken + 1))
        assert any("rows held in memory are written now" in r.getMessage() for r in caplog.records)


def test_flush_retries_without_new_readings(tmp_path: Path) -> None:
    start = datetime(2024, 3, 9, 12, 0, tzinfo=timezone.utc)
    with small_filesystem(tmp_path / "fs", 64) as mount:
        log = CsvLog(mount / "csv", clock=lambda: start)
        filler = fill(mount)
        for i in range(60):
            log.write(reading(start + timedelta(seconds=i), p_sum=i))
        assert log.status()["queue_depth"] != 0
        filler.unlink()
        log.flush()  # the pipeline calls this every second, readings or not
        assert log.status()["queue_depth"] == 0
        log.close()
        path = mount / "csv" / METER / f"{METER}_2024-03-09.csv"
        assert [int(r["p_sum"]) for r in rows(path)] == list(range(60))


def _kill(log: CsvLog) -> None:
    """Leave like a process killed with -9: nothing flushed, the RAM journal released."""
    assert log._ram is not None
    os.close(log._ram._lock_fd)
    for handle in log._files.values():
        os.close(handle.fd)


def test_ram_journal_batches_rows_and_survives_a_kill(tmp_path: Path) -> None:
    start = datetime(2024, 3, 9, 12, 0, tzinfo=timezone.utc)
    ram = tmp_path / "ram"
    log = CsvLog(tmp_path / "csv", clock=lambda: start, ram_dir=ram, sync_interval=3600)
    for i in range(5):
        log.write(reading(start + timedelta(seconds=i), p_sum=i))
    path = tmp_path / "csv" / METER / f"{METER}_2024-03-09.csv"
    assert not path.exists()  # waiting in RAM: the card is not touched for every row
    assert log.status()["queue_depth"] == 5
    _kill(log)
    # the next start writes what the killed process left
    log = CsvLog(tmp_path / "csv", clock=lambda: start, ram_dir=ram, sync_interval=3600)
    assert [int(r["p_sum"]) for r in rows(path)] == list(range(5))
    for i in range(5, 8):
        log.write(reading(start + timedelta(seconds=i), p_sum=i))
    log.close()
    assert [int(r["p_sum"]) for r in rows(path)] == list(range(8))


def test_rows_reach_the_file_every_write_interval_not_every_sync_interval(tmp_path: Path) -> None:
    """storage.commit_interval: the RAM journal is written out in one burst per interval, even
    when sync_interval (the fsync rhythm) has long passed."""
    start = datetime(2024, 3, 9, 12, 0, tzinfo=timezone.utc)
    path = tmp_path / "csv" / METER / f"{METER}_2024-03-09.csv"
    log = CsvLog(
        tmp_path / "csv", clock=lambda: start, ram_dir=tmp_path / "ram", sync_interval=0.01,
        write_interval=3600,
    )  # fmt: skip
    assert log.write_interval == 3600
    log.write(reading(start, p_sum=1))
    time.sleep(0.05)  # sync_interval has passed, write_interval has not
    log.write(reading(start + timedelta(seconds=1), p_sum=2))
    log.flush()
    assert not path.exists()
    log.close()  # on exit everything is written
    assert [int(r["p_sum"]) for r in rows(path)] == [1, 2]
    # without a write interval the sync interval decides, as before
    log = CsvLog(
        tmp_path / "csv2", clock=lambda: start, ram_dir=tmp_path / "ram2", sync_interval=0.01
    )
    assert log.write_interval == 0.01
    log.write(reading(start, p_sum=3))
    time.sleep(0.05)
    log.flush()
    assert [int(r["p_sum"]) for r in rows(tmp_path / "csv2" / METER / path.name)] == [3]
    log.close()


def test_rows_written_before_a_kill_are_not_written_twice(tmp_path: Path) -> None:
    start = datetime(2024, 3, 9, 12, 0, tzinfo=timezone.utc)
    ram = tmp_path / "ram"
    log = CsvLog(tmp_path / "csv", clock=lambda: start, ram_dir=ram, sync_interval=3600)
    for i in range(4):
        log.write(reading(start + timedelta(seconds=i), p_sum=i))
    with log._lock:  # a drain that reached the file, killed before it acknowledged
        assert log._ram is not None
        for entry in log._ram.peek(10):
            stamp, size = struct.unpack_from("<dH", entry.payload)
            meter = entry.payload[10 : 10 + size].decode()
            moment = datetime.fromtimestamp(stamp, timezone.utc)
            assert log._append(meter, moment, entry.payload[10 + size :])
    _kill(log)
    log = CsvLog(tmp_path / "csv", clock=lambda: start, ram_dir=ram, sync_interval=3600)
    log.close()
    path = tmp_path / "csv" / METER / f"{METER}_2024-03-09.csv"
    assert [int(r["p_sum"]) for r in rows(path)] == list(range(4))


AT = datetime(2024, 3, 9, 12, 0, 0, 250000, tzinfo=timezone.utc)


def _reference_row(reading: Reading, aggregated: bool) -> str:
    """A CSV line built cell by cell with format_number, no memo."""
    cells = [iso(reading.time), _escape(reading.meter_id)]
    for name in Reading.FIELDS:
        cells.append(format_number(getattr(reading, name), 7 if name in ENERGY_FIELDS else 3))
    if aggregated:
        cells.append(str(reading.samples))
        for name in INSTANT_FIELDS:
            low, high = reading.minmax.get(name, (None, None))
            cells += [format_number(low, 3), format_number(high, 3)]
    return ",".join(cells) + "\n"


@settings(max_examples=300, deadline=None)
@given(
    numbers=st.lists(
        st.one_of(
            st.none(),
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, -0.0, 1.0, 12339.7, -0.0000001, 1e-12, 1234.5678]),
            st.integers(-(10**6), 10**6),
        ),
        min_size=len(Reading.FIELDS) * 3,
        max_size=len(Reading.FIELDS) * 3,
    ),
    aggregated=st.booleans(),
)
def test_row_format_remembers_numbers_without_changing_their_text(
    numbers: list[Any], aggregated: bool
) -> None:
    """RowFormat keeps the text of numbers it has formatted; every row stays what
    format_number gives, for repeated, negative-zero, int and non-finite values alike."""
    fmt = RowFormat(aggregated)
    width = len(Reading.FIELDS)
    for round_ in range(2):  # the second time every number is remembered
        for i in range(3):
            row = numbers[i * width : (i + 1) * width]
            fields = dict(zip(Reading.FIELDS, row))
            minmax = {
                name: (row[k], row[-k - 1])
                for k, name in enumerate(INSTANT_FIELDS)
                if row[k] is not None and row[-k - 1] is not None
            }
            item = Reading(
                meter_id='m,"1"' if i else METER,
                time=AT + timedelta(seconds=i + 10 * round_),
                values={},
                samples=3,
                minmax=minmax,
                **fields,
            )
            assert fmt.row(item) == _reference_row(item, aggregated)


def test_last_row_time_reads_the_compressed_file_after_a_new_period_began(tmp_path: Path) -> None:
    """A start after midnight finds the previous day compressed (at opening) and no row yet
    in the new day's file: the newest row is in the `.csv.gz` (what the power-cut catch-up
    compares the database with)."""
    day = datetime(2024, 3, 1, 23, 50, tzinfo=timezone.utc)
    log = CsvLog(tmp_path, compress=True, clock=lambda: day)
    for s in range(5):
        log.write(reading(day + timedelta(seconds=s), 100.0, 250.0))
    log.close()
    later = CsvLog(tmp_path, compress=True, clock=lambda: day + timedelta(hours=1))
    try:
        assert sorted(p.name for p in tmp_path.rglob("*.csv*")) == [f"{METER}_2024-03-01.csv.gz"]
        assert later.last_row_time(METER) == day + timedelta(seconds=4)
        later.write(reading(day + timedelta(hours=1), 100.0, 250.0))
        later.flush()
        assert later.last_row_time(METER) == day + timedelta(hours=1)  # the open file's row
        assert later.last_row_time("no-such-meter") is None
    finally:
        later.close()


def test_last_row_time_takes_the_newest_compressed_period_by_name(tmp_path: Path) -> None:
    """Several days compressed at one start get their mtimes in glob order: the period in the
    name says which is newest."""
    day = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
    for d in range(2):
        moment = day + timedelta(days=d)
        log = CsvLog(tmp_path, compress=False, clock=functools.partial(lambda t: t, moment))
        log.write(reading(moment, 100.0, 250.0))
        log.close()
    later = CsvLog(tmp_path, compress=True, clock=lambda: day + timedelta(days=3))
    try:
        packed = sorted(tmp_path.rglob("*.csv.gz"))
        assert [p.name for p in packed] == [f"{METER}_2024-03-0{d}.csv.gz" for d in (1, 2)]
        os.utime(packed[0], (2e9, 2e9))  # the older day compressed last
        assert later.last_row_time(METER) == day + timedelta(days=1)
    finally:
        later.close()
