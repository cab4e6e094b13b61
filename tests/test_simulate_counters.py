"""The simulated meter's saved counters: a RAM copy every minute, an SD-card copy every 15
minutes, and a restore that never brings a counter below a frame the logger stored."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from smlogger import sml
from smlogger.reading import readings_from_frame
from smlogger.simulate import DISK_EVERY_S, SAVE_EVERY_S, CounterFile, SimulatedMeter, make_meter


def counters_of(meter: SimulatedMeter, at: datetime) -> tuple[float, float]:
    """(import, export) kWh as the logger stores them from the frame sent at `at`."""
    [reading] = readings_from_frame(sml.decode(meter.frame(at))[0], at)
    return reading.e_sum or 0.0, reading.e_export or 0.0


def test_ram_copy_every_minute_disk_copy_every_15_minutes(tmp_path: Path) -> None:
    disk, ram = tmp_path / "data" / "c.json", tmp_path / "ram" / "c.json"
    counters = CounterFile(disk, ram_path=ram)
    meter = make_meter("household")
    start = datetime(2025, 1, 10, 18, 0, tzinfo=timezone.utc)
    disk_writes = ram_writes = 0
    last_disk = last_ram = ""
    for second in range(0, 3601):
        meter.frame(start + timedelta(seconds=second))
        counters.maybe_save(meter, float(second))
        if disk.read_text() != last_disk:
            disk_writes, last_disk = disk_writes + 1, disk.read_text()
        if ram.read_text() != last_ram:
            ram_writes, last_ram = ram_writes + 1, ram.read_text()
    # at 0, then every interval up to and including 3600 s
    assert disk_writes == 3600 // DISK_EVERY_S + 1 == 5
    assert ram_writes == 3600 // SAVE_EVERY_S + 1 == 61
    # without a RAM directory the data-dir copy is saved every minute, as before
    alone = CounterFile(tmp_path / "alone.json")
    assert alone.disk_every_s == SAVE_EVERY_S


def test_restore_takes_the_newer_copy(tmp_path: Path) -> None:
    disk, ram = tmp_path / "disk.json", tmp_path / "ram.json"
    meter = make_meter("household")
    start = datetime(2025, 1, 10, 12, 0, tzinfo=timezone.utc)
    meter.frame(start)
    counters = CounterFile(disk, ram_path=ram)
    counters.maybe_save(meter, 0.0)  # both copies
    meter.frame(start + timedelta(seconds=600))
    counters.maybe_save(meter, 60.0)  # the RAM copy only
    assert json.loads(ram.read_text())["time"] > json.loads(disk.read_text())["time"]
    again = make_meter("household")
    assert CounterFile(disk, ram_path=ram).restore(again, now=start + timedelta(seconds=601))
    assert again.registers.import_wh >= meter.registers.import_wh
    # another meter (another seed) ignores both copies
    assert not CounterFile(disk, ram_path=ram).restore(make_meter("household", seed="other"))


@pytest.mark.parametrize("hour", [0, 6, 7, 12, 17, 18, 19, 20])
@pytest.mark.parametrize("lost", ["ram", "none"])
def test_counters_never_go_back_after_a_power_cut_or_kill(
    tmp_path: Path, hour: int, lost: str
) -> None:
    """The logger stores frames for up to 15 minutes after the last SD-card save, then the
    power goes (the RAM copy is gone) or the process is killed (it stays): the first frames
    after the restart are at or above every stored one, at a time of day with changing
    loads (stove, washing machine, PV)."""
    disk, ram = tmp_path / "disk.json", tmp_path / "ram.json"
    meter = make_meter("pv", tz=timezone.utc)
    counters = CounterFile(disk, ram_path=ram)
    start = datetime(2025, 6, 10, hour, 0, tzinfo=timezone.utc)
    stored = []
    second = 0.0
    for second in range(0, int(DISK_EVERY_S) + 895):  # the next disk save is 5 s away
        at = start + timedelta(seconds=second + 0.37 * (second % 3))  # frames jitter
        stored.append(counters_of(meter, at))
        counters.maybe_save(meter, float(second))
    if lost == "ram":
        ram.unlink()
    cut = start + timedelta(seconds=second + 1)
    again = make_meter("pv", tz=timezone.utc)
    assert CounterFile(disk, ram_path=ram).restore(again, now=cut + timedelta(seconds=20))
    after = [counters_of(again, cut + timedelta(seconds=20 + s)) for s in range(3)]
    top_import = max(s[0] for s in stored)
    top_export = max(s[1] for s in stored)
    assert all(a[0] >= top_import and a[1] >= top_export for a in after), (after, stored[-1])
    # the upper bound costs little: less than 2 % of what the window counted
    counted = top_import - stored[0][0] + top_export - stored[0][1]
    excess = after[0][0] - top_import + after[0][1] - top_export
    assert excess <= 0.02 * counted + 0.01
