"""The decoder builds its dicts from cached templates (per record kind, per
meter register, per message type). Nothing of one result may show up in
another: not a caller's mutation, not an optional field of an earlier entry."""

from __future__ import annotations

from typing import Any

from smlogger import sml


def frame_with(values: list[dict[str, Any]]) -> bytes:
    msg = {"type": "GetListResponse", "body": {"server_id": b"\x0a\x01", "values": values}}
    return sml.encode([msg])


def test_optional_fields_do_not_carry_over_between_entries() -> None:
    reg = {"obis": "1-0:1.8.0*255", "unit": 30, "scaler": -1}
    data = frame_with([{**reg, "raw": 5, "status": 7, "val_time": 9}, {**reg, "raw": 6}])
    first, second = list(sml.entries(sml.decode(data)[0]))
    assert (first["status"], first["val_time"]) == (7, {"kind": "sec_index", "value": 9})
    assert (second["status"], second["val_time"], second["value"]) == (None, None, 0.6)
    assert second["unit_symbol"] == "Wh" and second["obis"] == "1-0:1.8.0*255"


def test_callers_mutations_do_not_reach_later_results() -> None:
    decoder = sml.Decoder()
    data = frame_with([{"obis": "1-0:16.7.0*255", "unit": 27, "scaler": 0, "raw": 100}])
    frame = decoder.feed(data)[0]
    entry = next(sml.entries(frame))
    entry["unit_symbol"] = "changed"
    entry["quirk"] = "changed"
    frame["messages"][0]["type"] = "changed"
    frame["crc"] = None
    again = decoder.feed(data)[0]
    assert again["crc"] == "x25" and again["messages"][0]["type"] == "GetListResponse"
    fresh = next(sml.entries(again))
    assert (fresh["unit_symbol"], fresh["quirk"], fresh["value"]) == ("W", None, 100)
    assert fresh is not entry


def test_same_register_with_other_unit_or_scaler_gets_its_own() -> None:
    values = [
        {"obis": "1-0:1.8.0*255", "unit": 30, "scaler": -1, "raw": 10},
        {"obis": "1-0:1.8.0*255", "unit": 30, "scaler": 0, "raw": 10},
        {"obis": "1-0:1.8.0*255", "unit": 27, "scaler": -1, "raw": 10},
        {"obis": "1-0:1.8.0*255", "raw": 10},
    ]
    got = [
        (e["unit_symbol"], e["scaler"], e["value"])
        for e in sml.entries(sml.decode(frame_with(values))[0])
    ]
    assert got == [("Wh", -1, 1.0), ("Wh", 0, 10), ("W", -1, 1.0), (None, None, 10)]


def test_repeated_values_share_objects_and_changes_show() -> None:
    # A register's raw/value objects serve again while its value repeats; a
    # changed value, another type, or a DZG-corrected entry gets its own.
    reg = {"obis": "1-0:1.8.0*255", "unit": 30, "scaler": -1}
    dev = {"obis": "1-0:96.1.0*255"}
    raws = [10, 10, 11, 10, -10, 10]
    data = b"".join(
        frame_with([{**reg, "raw": r}, {**dev, "raw": b"ID" if i < 3 else b"OTHER"}])
        for i, r in enumerate(raws)
    )
    decoder = sml.Decoder()
    entries = [list(sml.entries(f)) for f in decoder.feed(data) + decoder.finish()]
    assert [e[0]["raw"] for e in entries] == raws
    assert [e[0]["value"] for e in entries] == [r / 10 for r in raws]
    assert [e[1]["value"] for e in entries] == [b"ID"] * 3 + [b"OTHER"] * 3
    assert entries[1][0]["value"] is entries[0][0]["value"]
    assert entries[2][0]["value"] is not entries[1][0]["value"]
