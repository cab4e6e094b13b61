"""The simulated meter: real SML frames (decoded by the real decoder) with plausible values."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from smlogger import sml
from smlogger.reading import Reading, readings_from_frame
from smlogger.simulate import PROFILES, SimulatedMeter, make_meter
from smlogger.sources import SimulatedSource

CET = timezone(timedelta(hours=1))


def decode_one(meter: SimulatedMeter, at: datetime) -> Reading:
    frames = sml.decode(meter.frame(at))
    assert len(frames) == 1 and frames[0]["ok"], frames
    assert frames[0]["crc"] == "x25"
    assert [m["type"] for m in frames[0]["messages"]] == [
        "OpenResponse",
        "GetListResponse",
        "CloseResponse",
    ]
    assert all(m["crc_ok"] for m in frames[0]["messages"])
    [reading] = readings_from_frame(frames[0], at)
    return reading


def run_day(profile: str, day: datetime, step: int = 10) -> list[Reading]:
    meter = make_meter(profile, tz=CET)
    return [decode_one(meter, day + timedelta(seconds=s)) for s in range(0, 86400 + 1, step)]


def test_mt175_like_obis_set() -> None:
    meter = make_meter("household")
    at = datetime(2024, 1, 10, 18, 30, tzinfo=timezone.utc)
    reading = decode_one(meter, at)
    assert reading.meter_id == meter.meter_id and reading.meter_id.startswith("0a0149534b")
    assert set(reading.values) == {
        "129-129:199.130.3*255",
        "1-0:0.0.9*255",
        "1-0:1.8.0*255",
        "1-0:1.8.1*255",
        "1-0:1.8.2*255",
        "1-0:16.7.0*255",
        "1-0:36.7.0*255",
        "1-0:56.7.0*255",
        "1-0:76.7.0*255",
        "129-129:199.130.5*255",
    }
    assert reading.values["129-129:199.130.3*255"].value == b"ISK"
    assert reading.values["1-0:1.8.0*255"].unit == "Wh"
    assert reading.values["1-0:1.8.0*255"].scaler == -1
    assert reading.e_sum == pytest.approx(12339.7, abs=0.01)
    assert reading.p_sum is not None and reading.p_L1 is not None
    phases = reading.p_L1 + (reading.p_L2 or 0) + (reading.p_L3 or 0)
    assert abs(reading.p_sum - phases) <= 2  # each value rounded to whole watts


def test_household_day_is_plausible() -> None:
    readings = run_day("household", datetime(2024, 1, 10, tzinfo=CET))
    powers = [r.p_sum for r in readings if r.p_sum is not None]
    assert min(powers) >= 80 and max(powers) > 1500
    night = [r.p_sum or 0 for r in readings if 2 <= r.time.astimezone(CET).hour < 4]
    evening = [r.p_sum or 0 for r in readings if 19 <= r.time.astimezone(CET).hour < 21]
    assert sum(night) / len(night) < 300 < sum(evening) / len(evening)
    used = (readings[-1].e_sum or 0) - (readings[0].e_sum or 0)
    assert 3.0 < used < 20.0  # kWh per day of a household
    # the counter integrates the power: energy from the power samples agrees within 1 %
    integral = sum((a.p_sum or 0) + (b.p_sum or 0) for a, b in zip(readings, readings[1:]))
    assert used == pytest.approx(integral / 2 * 10 / 3600 / 1000, rel=0.01)
    counters = [r.e_sum or 0 for r in readings]
    assert counters == sorted(counters)
    assert all(r.e_export is None for r in readings)


def test_pv_profile_exports_in_summer() -> None:
    readings = run_day("pv", datetime(2024, 6, 21, tzinfo=CET), step=30)
    noon = [r.p_sum or 0 for r in readings if 12 <= r.time.astimezone(CET).hour < 14]
    assert min(noon) < -500
    exported = (readings[-1].e_export or 0) - (readings[0].e_export or 0)
    imported = (readings[-1].e_sum or 0) - (readings[0].e_sum or 0)
    assert exported > 3.0 and imported > 0.5
    midnight = [r for r in readings if r.time.astimezone(CET).hour in (0, 1)]
    assert all((r.p_sum or 0) > 0 for r in midnight)


def test_full_profile_has_voltages_currents_frequency() -> None:
    meter = make_meter("full", tz=CET)
    start = datetime(2024, 3, 5, 7, 0, tzinfo=CET)
    for second in range(0, 600, 7):
        r = decode_one(meter, start + timedelta(seconds=second))
        for volts in (r.u_L1, r.u_L2, r.u_L3):
            assert volts is not None and 220 < volts < 245
        assert r.freq is not None and 49.9 < r.freq < 50.1
        for p, u, i in ((r.p_L1, r.u_L1, r.i_L1), (r.p_L2, r.u_L2, r.i_L2)):
            assert p is not None and u is not None and i is not None
            assert i == pytest.approx(abs(p) / u / 0.97 + 0.06, abs=0.02)


def test_same_seed_same_meter() -> None:
    at = datetime(2024, 2, 2, 20, 0, tzinfo=timezone.utc)
    first = [decode_one(make_meter("pv"), at + timedelta(seconds=s)).fields() for s in (0, 1)]
    again = [decode_one(make_meter("pv"), at + timedelta(seconds=s)).fields() for s in (0, 1)]
    other = decode_one(make_meter("pv", seed="other"), at).fields()
    assert first[0] == again[0]
    assert make_meter("pv").meter_id != make_meter("pv", seed="other").meter_id
    assert other["e_sum"] == first[0]["e_sum"]  # same start counter, different household


def test_unknown_profile_names_the_choices() -> None:
    with pytest.raises(ValueError, match="use one of household, pv, full"):
        make_meter("factory")
    assert set(PROFILES) == {"household", "pv", "full"}


def test_source_emits_frames_at_its_pace() -> None:
    source = SimulatedSource(make_meter("household"), interval=0.05, frames=8)
    states: list[str] = []
    source.on_state = lambda state, detail: states.append(state)
    chunks = list(source.chunks(threading.Event()))
    assert len(chunks) == 8 and states == ["connected"]
    # frame k leaves no earlier than k intervals after the first (a grid, never a burst to
    # catch up), and a loaded machine may delay single frames: check the whole span, generously
    span = (chunks[-1].time - chunks[0].time).total_seconds()
    assert 7 * 0.05 * 0.9 <= span < 7 * 0.05 + 10.0, span
    # ... and no slower than its pace either, but for a stalled frame or two
    gaps = sorted((b.time - a.time).total_seconds() for a, b in zip(chunks, chunks[1:]))
    assert gaps[len(gaps) // 2] < 5 * 0.05, gaps
    assert all(a.time <= b.time for a, b in zip(chunks, chunks[1:]))
    decoder = sml.Decoder()
    assert sum(1 for c in chunks for f in decoder.feed(c.data) if f["ok"]) == 8
