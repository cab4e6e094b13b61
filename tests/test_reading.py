"""Readings from real meter recordings, decoded by the real decoder."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from smlogger import sml
from smlogger.reading import Reading, readings_from_frame

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def good_frames(path: Path) -> list[Any]:
    return [f for f in sml.decode(path.read_bytes()) if f["ok"]]


def first_reading(path: Path, **kw: Any) -> Reading:
    for frame in good_frames(path):
        readings = readings_from_frame(frame, T0, **kw)
        if readings:
            return readings[0]
    raise AssertionError(f"no reading in {path}")


def test_mt175_three_phase(recordings_dir: Path) -> None:
    r = first_reading(recordings_dir / "ISKRA_MT175_eHZ.bin")
    assert r.meter_id == "090149534b000403df63"
    assert r.time == T0
    assert r.e_sum == pytest.approx(22462.4136)
    assert r.e_t1 == pytest.approx(22462.4136)
    assert r.e_t2 == 0.0
    assert r.e_export is None
    assert (r.p_sum, r.p_L1, r.p_L2, r.p_L3) == (168, 117, 22, 29)
    assert r.u_L1 is None and r.freq is None
    assert r.values["1-0:1.8.0*255"].unit == "Wh"
    assert r.values["1-0:1.8.0*255"].raw == 224624136
    assert r.values["1-0:1.8.0*255"].scaler == -1
    assert r.values["129-129:199.130.3*255"].value == b"ISK"


def test_mt175_export(recordings_dir: Path) -> None:
    r = first_reading(recordings_dir / "ISKRA_MT175_D1A52-V22-K0t.bin")
    assert r.e_export == pytest.approx(28275.3245)
    assert r.p_sum == -4308
    assert (r.p_L1, r.p_L2, r.p_L3) == (-1392, -1432, -1482)


def test_holley_voltages_currents_frequency_and_tariff_total(recordings_dir: Path) -> None:
    r = first_reading(recordings_dir / "HOLLEY_DTZ541-ZDBA.bin")
    assert (r.u_L1, r.u_L2, r.u_L3) == pytest.approx((232.3, 232.5, 232.5))
    assert (r.i_L1, r.i_L2, r.i_L3) == pytest.approx((1.06, 1.74, 0.91))
    assert r.freq == pytest.approx(50.0)
    assert r.p_sum == 460
    # no 1.8.0 register: the total is the sum of the tariff registers
    assert r.e_t1 == 0.0 and r.e_t2 == pytest.approx(177.3601)
    assert r.e_sum == pytest.approx(177.3601)
    assert r.e_export == pytest.approx(314.926)


def test_old_emh_import_power_register(recordings_dir: Path) -> None:
    r = first_reading(recordings_dir / "EMH_eHZ-GW8E2A500AK2.bin")
    assert r.p_sum == pytest.approx(13.8)  # 1-0:1.7.0, the only power register
    assert r.e_sum == pytest.approx(14798.1129 + 2.0124)


@pytest.mark.parametrize(
    ("name", "plain", "signed"),
    [("EMH-ED300L_consumption.bin", 137.1, 137.1), ("EMH-ED300L_delivery.bin", 126.6, -126.6)],
)
def test_ed300l_direction_from_status(
    recordings_dir: Path, name: str, plain: float, signed: float
) -> None:
    assert first_reading(recordings_dir / name).p_sum == pytest.approx(plain)
    r = first_reading(recordings_dir / name, direction_from_status=True)
    assert r.p_sum == pytest.approx(signed)


def test_dzg_quirk_corrected_power(recordings_dir: Path) -> None:
    r = first_reading(recordings_dir / "DZG_DVS-7412.2_jmberg.bin")
    assert r.p_sum == pytest.approx(356.24)
    assert r.e_export == pytest.approx(26244.5726)


def test_entry_without_value_keeps_the_reading(recordings_dir: Path) -> None:
    r = first_reading(recordings_dir / "EMH_eHZ-IW8E2A5L0EK2P_with_error.bin")
    assert r.e_sum is not None
    missing = [v for v in r.values.values() if v.value is None]
    assert missing, "the absent value must stay visible as None"


def test_every_recording_yields_plausible_readings(
    recordings_dir: Path, expected: dict[str, Any]
) -> None:
    total = 0
    for name, info in expected.items():
        frames = good_frames(recordings_dir / name)
        readings = [r for f in frames for r in readings_from_frame(f, T0)]
        assert len(readings) == info["crc_ok_frames"], name
        for r in readings:
            total += 1
            for field_name, value in r.fields().items():
                assert value is None or isinstance(value, (float, int)), (name, field_name)
            json.dumps(r.to_dict())
    assert total > 200


def _frame_with_bad_message_crc() -> bytes:
    messages = [
        {
            "type": "OpenResponse",
            "transaction_id": b"\x01",
            "body": {"req_file_id": b"\x01", "server_id": b"\x0a\x01ABC\x00\x00\x00\x00\x01"},
        },
        {
            "type": "GetListResponse",
            "transaction_id": b"\x02",
            "body": {
                "server_id": b"\x0a\x01ABC\x00\x00\x00\x00\x01",
                "values": [{"obis": "1-0:1.8.0*255", "unit": 30, "scaler": -1, "raw": 1234}],
            },
        },
        {"type": "CloseResponse", "transaction_id": b"\x03", "body": {}},
    ]
    data = bytearray(sml.encode(messages))
    # corrupt the GetListResponse's own CRC field, then give the frame a valid transport CRC
    payload_end = data.rindex(b"\x1b\x1b\x1b\x1b\x1a")
    padding = data[payload_end + 5]
    payload = bytes(data[8 : payload_end - padding])
    marker = payload.index(b"\x76\x02\x02")  # start of message 2 (transaction id 02)
    end = payload.index(b"\x76\x02\x03")  # start of message 3
    crc_pos = end - 3  # 63 XX XX 00 : the two CRC bytes sit before endOfSmlMsg
    assert payload[crc_pos - 1] == 0x63 and marker < crc_pos
    broken = bytearray(payload)
    broken[crc_pos] ^= 0xFF
    return sml.frame(bytes(broken))


def test_bad_message_crc_skipped_unless_accepted() -> None:
    frames = sml.decode(_frame_with_bad_message_crc())
    assert frames[0]["ok"]
    crc_flags = [m["crc_ok"] for m in frames[0]["messages"]]
    assert crc_flags == [True, False, True]
    assert readings_from_frame(frames[0], T0) == []
    accepted = readings_from_frame(frames[0], T0, accept_bad_msg_crc=True)
    assert len(accepted) == 1 and accepted[0].e_sum == pytest.approx(0.1234)


def test_meter_id_override_and_time_must_be_aware(recordings_dir: Path) -> None:
    frame = good_frames(recordings_dir / "ISKRA_MT175_eHZ.bin")[0]
    assert readings_from_frame(frame, T0, meter_id="house")[0].meter_id == "house"
    local = T0.astimezone(timezone(timedelta(hours=2)))
    assert readings_from_frame(frame, local)[0].time.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        readings_from_frame(frame, datetime(2024, 1, 1))


def test_bad_frames_give_no_readings(recordings_dir: Path) -> None:
    frames = sml.decode((recordings_dir / "DZG_DVS-7420.2V.G2_mtr1_error.bin").read_bytes())
    assert frames and not any(f["ok"] for f in frames)
    assert [r for f in frames for r in readings_from_frame(f, T0)] == []


def test_to_dict_is_json_safe(recordings_dir: Path) -> None:
    r = first_reading(recordings_dir / "ISKRA_MT175_eHZ.bin")
    data = json.loads(json.dumps(r.to_dict()))
    assert data["meter_id"] == r.meter_id
    assert data["time"] == "2024-05-01T12:00:00+00:00"
    assert data["values"]["129-129:199.130.3*255"]["value"] == "49534b"
    assert data["p_sum"] == 168


def test_fast_built_reading_equals_the_dataclass_constructor() -> None:
    """reading_from_values builds the Reading's attributes as one dict: the result must be
    the same object the dataclass constructor gives (fields, defaults, equality, repr)."""
    from datetime import datetime, timezone

    from smlogger.reading import Reading, Value, reading_from_values

    values = {
        "1-0:1.8.1*255": Value("1-0:1.8.1*255", 1234500, "Wh", 12345, 2),
        "1-0:16.7.0*255": Value("1-0:16.7.0*255", -230, "W", -23, 1),
        "1-0:32.7.0*255": Value("1-0:32.7.0*255", 231.5, "V", 2315, -1),
    }
    received = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    fast = reading_from_values("0a01", received, values)
    plain = Reading(
        meter_id="0a01",
        time=received,
        values=dict(values),
        e_sum=1234.5,
        e_t1=1234.5,
        p_sum=-230.0,
        u_L1=231.5,
    )
    assert fast == plain
    assert repr(fast) == repr(plain).replace("values={", "values=mappingproxy({").replace(
        "}, e_sum", "}), e_sum"
    )
    assert fast.samples == 1 and fast.minmax == {} and fast.e_export is None
    assert fast.values["1-0:16.7.0*255"] == values["1-0:16.7.0*255"]


def test_values_from_entries_gives_plain_value_objects() -> None:
    """The Values built without the dataclass __init__ equal, hash and print like normal ones."""
    from smlogger.reading import Value, values_from_entries

    entry = {"obis": "1-0:1.8.0*255", "status": 0x182, "val_time": None, "unit": 30,
             "unit_symbol": "Wh", "scaler": -1, "raw": 123, "value": 12.3,
             "value_signature": None, "quirk": None}  # fmt: skip
    entries: list[Any] = [entry, {**entry, "obis": "x", "status": True}]
    values, statuses = values_from_entries(entries)
    expected = Value("1-0:1.8.0*255", 12.3, "Wh", 123, -1)
    assert values["1-0:1.8.0*255"] == expected
    assert hash(values["1-0:1.8.0*255"]) == hash(expected)
    assert repr(values["1-0:1.8.0*255"]) == repr(expected)
    assert statuses == {"1-0:1.8.0*255": 0x182}  # a bool status is not a status word
