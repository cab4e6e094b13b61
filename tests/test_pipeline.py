"""The pipeline: plausibility, store-interval aggregation, sink isolation, shutdown."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import T0, Collect, reading, wait_for

from smlogger import sml
from smlogger.aggregate import Aggregator
from smlogger.capture import CaptureWriter
from smlogger.csvlog import CsvLog
from smlogger.live import LiveState
from smlogger.pipeline import MeterSpec, Pipeline, PlausibilityCheck, SinkWorker
from smlogger.reading import Reading
from smlogger.simulate import make_meter
from smlogger.sources import ReplaySource

# ---- plausibility ----------------------------------------------------------------------------


def test_counter_going_backwards_is_rejected() -> None:
    check = PlausibilityCheck(max_power_w=20_000)
    assert check.check(reading(0, 1000.0)) is None
    assert check.check(reading(1, 1000.0001)) is None
    reason = check.check(reading(2, 999.5))
    assert reason is not None and "e_sum went backwards" in reason
    assert check.check(reading(3, 1000.0003)) is None
    assert check.rejected == 1 and check.last_reason is not None


def test_implausible_jump_is_rejected() -> None:
    check = PlausibilityCheck(max_power_w=20_000)
    assert check.check(reading(0, 1000.0)) is None
    # 20 kW for 10 s is 0.056 kWh; 1 kWh in 10 s is a corrupted register
    reason = check.check(reading(10, 1001.0))
    assert reason is not None and "jumped" in reason and "20 kW" in reason
    assert check.check(reading(20, 1000.05)) is None  # 18 kW: still allowed
    assert check.check(reading(3600 * 5, 1050.0)) is None  # 10 kW over 5 h after an outage


def test_frames_received_in_one_burst_are_not_a_jump() -> None:
    # a head or pty buffering two frames hands them over 0 s apart; the meter sent them 1 s apart
    check = PlausibilityCheck(max_power_w=20_000)
    assert check.check(reading(0, 1000.0)) is None
    assert check.check(reading(0, 1000.0012)) is None
    reason = check.check(reading(0, 1001.0))
    assert reason is not None and "jumped" in reason


def test_whole_kwh_registers_of_pin_locked_meters_step_by_one() -> None:
    check = PlausibilityCheck(max_power_w=10_000)
    assert check.check(reading(0, 2043.0, scaler=3, p_sum=None)) is None
    assert check.check(reading(1, 2044.0, scaler=3, p_sum=None)) is None  # one register step


def test_power_beyond_limit_is_rejected() -> None:
    check = PlausibilityCheck(max_power_w=50_000)
    reason = check.check(reading(0, p_sum=-3_000_000.0))
    assert reason is not None and "p_sum" in reason


def test_new_level_accepted_after_consistent_readings() -> None:
    check = PlausibilityCheck(max_power_w=20_000, rebase_after=5)
    assert check.check(reading(0, 5000.0)) is None
    results = [check.check(reading(i, 10.0 + i * 0.0001)) for i in range(1, 7)]
    assert all(r is not None for r in results[:4]) and results[4] is None and results[5] is None


def test_meters_are_checked_separately() -> None:
    check = PlausibilityCheck()
    assert check.check(reading(0, 1000.0, meter="a")) is None
    assert check.check(reading(0, 5.0, meter="b")) is None


# ---- aggregation -----------------------------------------------------------------------------


def test_aggregator_mean_min_max_and_last_energy() -> None:
    out: list[Reading] = []
    agg = Aggregator(10, out.append)
    for i, p in enumerate([100.0, 300.0, 200.0]):
        agg.add(reading(i, 1000.0 + i / 1000, p, p_L1=p / 2))
    assert out == []
    agg.add(reading(10, 1000.01, 50.0))  # first reading of the next interval closes the first
    [first] = out
    assert first.samples == 3 and first.p_sum == pytest.approx(200.0)
    assert first.minmax["p_sum"] == (100.0, 300.0) and first.minmax["p_L1"] == (50.0, 150.0)
    assert first.e_sum == pytest.approx(1000.002) and first.time == T0 + timedelta(seconds=2)
    agg.flush()
    assert len(out) == 2 and out[1].samples == 1 and out[1].minmax["p_sum"] == (50.0, 50.0)


def test_aggregator_without_interval_passes_through() -> None:
    out: list[Reading] = []
    agg = Aggregator(0, out.append)
    r = reading(0)
    agg.add(r)
    assert out == [r]


def test_aggregator_passes_a_batch_through_in_one_call_and_windows_it_like_add() -> None:
    batch = [reading(i, 1.0 + i / 1000, 100.0 + i) for i in range(30)]
    singles: list[Reading] = []
    batches: list[list[Reading]] = []
    Aggregator(0, singles.append, emit_many=batches.append).add_many(batch)
    assert singles == [] and batches == [batch]
    one_by_one: list[Reading] = []
    together: list[Reading] = []
    first = Aggregator(10, one_by_one.append)
    for item in batch:
        first.add(item)
    Aggregator(10, together.append, emit_many=batches.append).add_many(batch)
    assert together == one_by_one and len(together) == 2 and len(batches) == 1


def test_aggregator_flushes_silent_meters() -> None:
    now = [0.0]
    out: list[Reading] = []
    agg = Aggregator(2, out.append, monotonic=lambda: now[0])
    agg.add(reading(0))
    agg.flush_idle()
    assert out == []
    now[0] = 6.0
    agg.flush_idle()
    assert len(out) == 1


def test_aggregator_weighs_readings_that_are_aggregates_already() -> None:
    out: list[Reading] = []
    agg = Aggregator(60, out.append)
    agg.add(reading(5, 1.0, 100.0, samples=3, minmax={"p_sum": (50.0, 200.0)}))
    agg.add(reading(20, 1.1, 300.0))
    assert out == [] and agg.pending == 4
    agg.add(reading(61, 1.2, 0.0))
    [done] = out
    assert done.samples == 4
    assert done.p_sum == pytest.approx((100 * 3 + 300) / 4)
    assert done.minmax["p_sum"] == (50.0, 300.0)
    assert done.e_sum == 1.1 and done.time == T0 + timedelta(seconds=20)
    agg.flush()
    assert [r.e_sum for r in out] == [1.1, 1.2] and agg.pending == 0


# ---- sink workers ----------------------------------------------------------------------------


def test_failing_sink_is_retried_in_order() -> None:
    sink = Collect(fail_first=3)
    worker = SinkWorker(sink, retry_initial=0.05)
    worker.start()
    for i in range(5):
        worker.put(reading(i, 1000 + i))
    wait_for(lambda: len(sink.readings) == 5, what="the five readings")
    worker.close(time.monotonic() + 2)
    assert worker.join(time.monotonic() + 30)
    assert [r.e_sum for r in sink.readings] == [1000, 1001, 1002, 1003, 1004]
    status = worker.status()
    # the errors are counted; last_error is cleared once writing works again
    assert status["write_errors"] == 3 and status["last_error"] is None
    assert status["collected"] == 5 and status["written"] == 5 and status["handed_over"] == 5
    assert sink.closed_in == "sink-collect"  # closed in its own thread (thread-bound DB handles)


def test_full_queue_drops_oldest_and_counts() -> None:
    sink = Collect(delay=0.2)
    worker = SinkWorker(sink, maxsize=3)
    for i in range(10):
        worker.put(reading(i))
    assert worker.status()["pipeline_dropped"] == 7 and worker.status()["queue_depth"] == 3


@pytest.mark.slow  # a deliberately slow sink
def test_slow_sink_does_not_hold_up_the_others(tmp_path: Path, recordings_dir: Path) -> None:
    slow = _Held()
    fast = Collect()
    fast.name = "fast"
    live = LiveState()
    replay = ReplaySource(
        recordings_dir / "ISKRA_MT175_eHZ.bin", speed=20, interval=1.0, loop=False
    )
    pipeline = Pipeline([MeterSpec("m", replay)], [slow, fast], live)
    pipeline.start()
    try:
        pipeline.run(threading.Event())
        # the source ran through and the fast sink got everything while the slow one hung in
        # its first write (run() returns when the source ends, the sinks may still be busy)
        wait_for(lambda: len(fast.readings) == 10, what="every reading in the fast sink")
        assert slow.readings == []
        assert live.latest() is not None
    finally:
        slow.release.set()
        assert pipeline.stop(30.0)
    assert len(slow.readings) == 10  # drained at shutdown


class _Held(Collect):
    """A sink whose writes hang until the test releases them: slower than any other sink."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, reading: Reading) -> None:
        """Waits for the release (at most a minute), then keeps `reading`."""
        if not self.release.wait(60):
            raise TimeoutError("the test never released the held sink")
        super().write(reading)


# ---- end to end ------------------------------------------------------------------------------


def _capture_with_corrupt_frame(tmp_path: Path) -> Path:
    """A simulated meter's stream in which one frame (valid CRCs) carries a wild register."""
    meter = make_meter("household")
    writer = CaptureWriter(tmp_path / "corrupt.txt")
    for i in range(30):
        at = T0 + timedelta(seconds=i)
        messages = meter.messages(at)
        if i == 12:
            for entry in messages[1]["body"]["values"]:
                if entry["obis"] == "1-0:1.8.0*255":
                    entry["raw"] = entry["raw"] + 10_000_000  # +1000 kWh in one second
        writer.write(at, sml.encode(messages))
    writer.close()
    return tmp_path / "corrupt.txt"


def test_corrupted_frame_is_rejected_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = LiveState()
    sink = Collect()
    replay = ReplaySource(
        _capture_with_corrupt_frame(tmp_path), speed=None, interval=1.0, loop=False
    )
    pipeline = Pipeline([MeterSpec("sim", replay)], [sink], live)
    pipeline.start()
    pipeline.run(threading.Event())
    pipeline.stop(4.0)
    assert len(sink.readings) == 29
    assert T0 + timedelta(seconds=12) not in [r.time for r in sink.readings]
    stats = live.source_status()["sim"]["stats"]
    assert stats["rejected"] == 1 and stats["readings"] == 29
    assert "e_sum jumped" in stats["last_rejection"]
    assert "implausible reading rejected" in caplog.text
    energies = [r.e_sum or 0 for r in sink.readings]
    assert energies == sorted(energies) and energies[-1] - energies[0] < 1


def test_store_interval_aggregates_for_sinks_but_not_live(tmp_path: Path) -> None:
    meter = make_meter("household")
    writer = CaptureWriter(tmp_path / "sim.txt")
    start = datetime(2024, 5, 1, 18, 0, tzinfo=timezone.utc)
    for i in range(60):
        writer.write(start + timedelta(seconds=i), meter.frame(start + timedelta(seconds=i)))
    writer.close()
    live = LiveState()
    updates = live.subscribe()
    sink = Collect()
    csv = CsvLog(tmp_path / "csv", aggregated=True)
    replay = ReplaySource(tmp_path / "sim.txt", speed=None, interval=1.0, loop=False)
    pipeline = Pipeline([MeterSpec("sim", replay)], [sink, csv], live, store_interval=15)
    pipeline.start()
    pipeline.run(threading.Event())
    pipeline.stop(4.0)
    # a replay at full speed hands the live view the newest reading of each batch (not
    # necessarily every one); the sinks still see every reading, aggregated
    seen = [updates.get_nowait() for _ in range(updates.qsize())]
    assert 1 <= len(seen) <= 60 and seen[-1].time == start + timedelta(seconds=59)
    assert [r.samples for r in sink.readings] == [15, 15, 15, 15]
    first = sink.readings[0]
    assert first.minmax["p_sum"][0] <= (first.p_sum or 0) <= first.minmax["p_sum"][1]
    lines = next((tmp_path / "csv").rglob("*.csv")).read_text().splitlines()
    assert len(lines) == 5 and lines[0].endswith("freq_min,freq_max")
    assert lines[1].split(",")[19] == "15"  # samples column


def test_live_state_and_sink_status_are_published(recordings_dir: Path) -> None:
    live = LiveState()
    sink = Collect()
    replay = ReplaySource(
        recordings_dir / "EMH-ED300L_delivery.bin", speed=None, interval=1.0, loop=False
    )
    spec = MeterSpec("ed300l", replay, direction_from_status=True, meter_id="garage")
    pipeline = Pipeline([spec], [sink], live)
    pipeline.start()
    assert live.meters() == ["garage"]  # announced before the first frame
    pipeline.run(threading.Event())
    pipeline.stop(4.0)
    latest = live.latest("garage")
    assert latest is not None and latest.p_sum is not None and latest.p_sum < 0
    status = live.source_status()["ed300l"]
    assert status["state"] == "no data" and status["detail"] == "replay finished"
    assert status["stats"]["frames_ok"] == 2 and status["stats"]["discarded_bytes"] > 0
    assert live.sink_status()["collect"]["written"] == 2


def test_replay_of_missing_file_is_an_error(tmp_path: Path) -> None:
    live = LiveState()
    missing = ReplaySource(tmp_path / "nope.bin", speed=1.0, interval=1.0, loop=False)
    pipeline = Pipeline([MeterSpec("r", missing)], [], live)
    pipeline.start()
    pipeline.run(threading.Event())
    pipeline.stop(2.0)
    assert pipeline.errors() and "not found" in str(pipeline.errors()[0])
    assert live.source_status()["r"]["state"] == "no data"


def test_a_source_of_only_damaged_frames_shows_its_counts(recordings_dir: Path) -> None:
    # every frame of this recording is cut short: no reading ever, but while it runs (looping)
    # the status must count them, not only when the source ends
    live = LiveState()
    replay = ReplaySource(
        recordings_dir / "DZG_DVS-7420.2V.G2_mtr1_error.bin", speed=None, interval=1.0, loop=True
    )
    pipeline = Pipeline([MeterSpec("broken", replay)], [Collect()], live)
    stop = threading.Event()
    pipeline.start()
    runner = threading.Thread(target=pipeline.run, args=(stop,))
    runner.start()
    try:

        def counted() -> bool:
            stats = live.source_status()["broken"]["stats"]
            return int(stats.get("truncated", 0)) > 100

        wait_for(counted, 30, "damaged frames counted in the status")
        status = live.source_status()["broken"]
        assert status["stats"]["frames_ok"] == 0 and status["stats"]["readings"] == 0
        assert status["last_frame_age_s"] is None  # no good frame came
    finally:
        stop.set()
        runner.join(10)
        pipeline.stop(4.0)
