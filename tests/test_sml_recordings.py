"""The real meter recordings decode exactly to ``expected.json``, and the golden
frames of ``SML-VECTORS.json`` decode field by field as documented.

``expected.json`` was cross-checked between libsml and an independent decoder,
so any difference here is a decoder bug, not a test to loosen.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import RECORDINGS, recording_files

from smlogger import sml

# Message body tags as expected.json lists them (SML v1 spec, BSI TR-03109-1).
TAG_NAMES = {
    "0100": "OpenRequest",
    "0101": "OpenResponse",
    "0200": "CloseRequest",
    "0201": "CloseResponse",
    "0300": "GetProfilePackRequest",
    "0301": "GetProfilePackResponse",
    "0400": "GetProfileListRequest",
    "0401": "GetProfileListResponse",
    "0500": "GetProcParameterRequest",
    "0501": "GetProcParameterResponse",
    "0600": "SetProcParameterRequest",
    "0601": "SetProcParameterResponse",
    "0700": "GetListRequest",
    "0701": "GetListResponse",
    "ff01": "AttentionResponse",
}

DZG_QUIRK = "dzg-dvs74-unsigned-power"
TOTAL_FRAMES = 227
TOTAL_VALUES = 1579


def quirks_of(entry: sml.Entry) -> set[str]:
    """The entry's quirk flags (several are joined by commas)."""
    quirk = entry["quirk"]
    return set(quirk.split(",")) if quirk else set()


def value_matches(ours: object, text: str) -> bool:
    """Compares our number with expected.json's decimal text: exactly for ints,
    and as the correctly rounded double for floats."""
    if isinstance(ours, bool):
        return False
    if isinstance(ours, int):
        return Decimal(ours) == Decimal(text)
    if isinstance(ours, float):
        return float(Decimal(text)) == ours
    return False


NAMES = [p.name for p in recording_files()]
VECTORS_PATH = RECORDINGS.parent / "SML-VECTORS.json"


@pytest.fixture(scope="module")
def decoded(recordings_dir: Path) -> dict[str, list[sml.Frame]]:
    return {name: sml.decode((recordings_dir / name).read_bytes()) for name in NAMES}


def test_every_recording_is_listed(recordings_dir: Path, expected: dict[str, Any]) -> None:
    on_disk = sorted(p.name for p in recordings_dir.glob("*.bin"))
    assert on_disk == sorted(expected)
    assert len(on_disk) == 37


@pytest.mark.parametrize("name", NAMES)
def test_recording_frames(
    name: str, recordings_dir: Path, expected: dict[str, Any], decoded: dict[str, list[sml.Frame]]
) -> None:
    exp = expected[name]
    frames = decoded[name]
    assert exp["size"] == (recordings_dir / name).stat().st_size
    ok = [f for f in frames if f["ok"]]
    assert [(f["offset"], f["length"]) for f in ok] == [
        (f["offset"], f["length"]) for f in exp["frames"]
    ]
    for frame, exp_frame in zip(ok, exp["frames"]):
        assert frame["error"] is None
        assert frame["crc"] == "x25"
        assert [m["type"] for m in frame["messages"]] == [
            TAG_NAMES[t.lower()] for t in exp_frame["message_types"]
        ]
        for message in frame["messages"]:
            assert message["crc_ok"] is True, (frame["offset"], message["type"])
            assert message["error"] is None


@pytest.mark.parametrize("name", NAMES)
def test_recording_values(
    name: str, expected: dict[str, Any], decoded: dict[str, list[sml.Frame]]
) -> None:
    ok = [f for f in decoded[name] if f["ok"]]
    assert len(ok) == len(expected[name]["frames"])
    for frame, exp_frame in zip(ok, expected[name]["frames"]):
        where = f"{name} frame at {frame['offset']}"
        entries = [e for e in sml.entries(frame) if e["value"] is not None]
        assert [e["obis"] for e in entries] == [v["obis"] for v in exp_frame["values"]], where
        for entry, exp in zip(entries, exp_frame["values"]):
            what = f"{where}: {entry['obis']}"
            if "octets" in exp:
                assert isinstance(entry["value"], bytes), what
                assert entry["value"].hex() == exp["octets"], what
                assert entry["raw"] == entry["value"], what
            else:
                assert entry["raw"] == exp.get("wire_raw", exp["raw"]), what
                assert entry["scaler"] == exp["scaler"], what
                assert entry["unit"] == exp["unit"], what
                assert value_matches(entry["value"], exp["value"]), (what, entry["value"])
                if exp["scaler"] is not None and exp["scaler"] < 0:
                    assert isinstance(entry["value"], float), what
                else:
                    assert type(entry["value"]) is int, what
            if "quirk" in exp:
                assert entry["quirk"] == exp["quirk"], what
            else:
                assert DZG_QUIRK not in quirks_of(entry), what
            assert quirks_of(entry) <= {DZG_QUIRK, "holley-bare-time", "missing-value"}, what


@pytest.mark.parametrize("name", NAMES)
def test_recording_error_counts(
    name: str, recordings_dir: Path, expected: dict[str, Any], decoded: dict[str, list[sml.Frame]]
) -> None:
    exp = expected[name]
    frames = decoded[name]
    errors = [f["error"] for f in frames if not f["ok"]]
    assert errors.count("crc") == exp["crc_bad_frames"]
    assert errors.count("truncated") == exp["truncated_frames"]
    assert set(errors) <= {"crc", "truncated"}
    for f in frames:
        if not f["ok"]:
            assert f["messages"] == []
            assert f["detail"], f
    decoder = sml.Decoder()
    decoder.feed((recordings_dir / name).read_bytes())
    decoder.finish()
    stats = decoder.stats
    assert stats["crc_errors"] == exp["crc_bad_frames"]
    assert stats["truncated"] == exp["truncated_frames"]
    assert stats["frames_ok"] == len(exp["frames"])
    assert stats["bytes"] == exp["size"]
    # Every start sequence begins exactly one reported frame, good or bad.
    assert len(frames) == exp["start_sequences"]


def test_totals(expected: dict[str, Any], decoded: dict[str, list[sml.Frame]]) -> None:
    frames = [f for name in NAMES for f in decoded[name] if f["ok"]]
    values = [e for f in frames for e in sml.entries(f) if e["value"] is not None]
    assert len(frames) == TOTAL_FRAMES
    assert len(values) == TOTAL_VALUES
    assert sum(len(e["frames"]) for e in expected.values()) == TOTAL_FRAMES
    assert sum(f["crc_bad_frames"] for f in expected.values()) == 5
    assert sum(f["truncated_frames"] for f in expected.values()) == 28
    # The DZG correction appears exactly where expected.json has it.
    fixed = [e for e in values if DZG_QUIRK in quirks_of(e)]
    assert [(e["obis"], e["raw"], e["value"]) for e in fixed] == [
        ("1-0:16.7.0*255", -29912, 356.24)
    ]


def test_genuine_dzg_negatives_stay_negative(decoded: dict[str, list[sml.Frame]]) -> None:
    negatives = [
        e
        for name in ("DZG_DVS-7420.2V.G2_mtr2_neg.bin", "dzg_dwsb20_2th_2byte.bin")
        for f in decoded[name]
        if f["ok"]
        for e in sml.entries(f)
        if e["obis"] == "1-0:16.7.0*255"
    ]
    assert negatives
    assert any(isinstance(e["value"], float) and e["value"] < 0 for e in negatives)
    assert all(e["quirk"] is None for e in negatives)


def test_entry_without_value_is_kept(decoded: dict[str, list[sml.Frame]]) -> None:
    frames = [f for f in decoded["EMH_eHZ-IW8E2A5L0EK2P_with_error.bin"] if f["ok"]]
    missing = [e for f in frames for e in sml.entries(f) if e["value"] is None]
    assert len(missing) == len(frames)
    for e in missing:
        assert e["obis"] == "1-0:96.50.2*6"
        assert e["raw"] is None
        assert "missing-value" in quirks_of(e)


# ------------------------------------------------------------ golden vectors


def load_vectors() -> list[dict[str, Any]]:
    with open(VECTORS_PATH, encoding="utf-8") as fh:
        vectors: list[dict[str, Any]] = json.load(fh)
    return vectors


VECTORS = load_vectors()


def h2b(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


def vector_time(t: dict[str, Any] | None) -> dict[str, Any] | None:
    """SML-VECTORS' SML_Time notation -> our Time dict."""
    if t is None:
        return None
    if "nonstandard_raw_uint" in t:
        return {"kind": "sec_index", "value": t["nonstandard_raw_uint"]}
    kind = {1: "sec_index", 2: "timestamp", 3: "local_timestamp"}[t["choice"]]
    if kind == "local_timestamp":
        value, local_offset, season = t["value"]
        return {
            "kind": kind,
            "value": value,
            "local_offset": local_offset,
            "season_time_offset": season,
        }
    return {"kind": kind, "value": t["value"]}


def vector_raw(value: dict[str, Any]) -> object:
    """The wire value of a vector entry as our ``raw`` holds it."""
    kind = value["type"]
    if kind == "octets":
        return bytes.fromhex(value["hex"])
    if kind == "absent":
        return None
    if kind == "list":
        # SML_Value as a list: choice 1 = SML_Time (itself choice + value).
        choice, time = value["items"]
        assert choice["value"] == 1
        time_choice, time_value = time["items"]
        return vector_time({"choice": time_choice["value"], "value": time_value["value"]})
    assert kind.startswith(("int", "uint")), kind
    return value["value"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_golden_vector(vector: dict[str, Any]) -> None:
    frames = sml.decode(bytes.fromhex(vector["hex"]))
    assert len(frames) == 1
    (frame,) = frames
    transport = vector["transport"]
    assert frame["ok"] is transport["crcValid"] is True
    assert frame["error"] is None
    assert frame["offset"] == 0
    assert frame["length"] == transport["length"] == len(vector["hex"]) // 2
    assert frame["crc"] == transport["crcVariant"]
    assert len(frame["messages"]) == len(vector["messages"])
    for ours, exp in zip(frame["messages"], vector["messages"]):
        check_message(ours, exp)


def check_message(ours: sml.Message, exp: dict[str, Any]) -> None:
    tag = exp["bodyTag"].lower().removeprefix("0x")
    assert ours["type"] == TAG_NAMES[tag]
    assert ours["crc_ok"] is exp["crc16Valid"]
    assert ours["error"] is None
    assert ours["transaction_id"] == bytes.fromhex(exp["transactionId"])
    assert ours["group_no"] == exp["groupNo"]
    assert ours["abort_on_error"] == exp["abortOnError"]
    body = ours["body"]
    if "openResponse" in exp:
        o = exp["openResponse"]
        assert body == {
            "codepage": h2b(o["codepage"]),
            "client_id": h2b(o["clientId"]),
            "req_file_id": h2b(o["reqFileId"]),
            "server_id": h2b(o["serverId"]),
            "ref_time": vector_time(o["refTime"]),
            "sml_version": o["smlVersion"],
        }
    elif "closeResponse" in exp:
        assert body == {"global_signature": h2b(exp["closeResponse"]["globalSignature"])}
    else:
        check_get_list(body, exp["getListResponse"])


def check_get_list(body: dict[str, object], g: dict[str, Any]) -> None:
    assert body["client_id"] == h2b(g["clientId"])
    assert body["server_id"] == h2b(g["serverId"])
    assert body["list_name"] == g["listName"]
    assert body["act_sensor_time"] == vector_time(g["actSensorTime"])
    assert body["list_signature"] == h2b(g["listSignatureHex"])
    assert body["act_gateway_time"] == vector_time(g["actGatewayTime"])
    values = body["values"]
    assert isinstance(values, list)
    assert len(values) == len(g["valList"])
    for entry, exp in zip(values, g["valList"]):
        what = exp["obis"]
        assert entry["obis"] == exp["obis"]
        assert sml.obis_from_str(entry["obis"]).hex() == exp["objNameHex"]
        assert entry["status"] == (exp["status"]["value"] if "status" in exp else None), what
        assert entry["val_time"] == vector_time(exp.get("valTime")), what
        assert entry["unit"] == exp.get("unit"), what
        assert entry["scaler"] == exp.get("scaler"), what
        assert entry["raw"] == vector_raw(exp["value"]), what
        quirks = quirks_of(entry)
        assert ("holley-bare-time" in quirks) == ("nonstandard_raw_uint" in exp.get("valTime", {}))
        if exp["value"]["type"] == "absent":
            assert entry["value"] is None, what
            assert "missing-value" in quirks, what
        elif exp["value"]["type"] == "octets":
            assert entry["value"] == entry["raw"], what
        elif "scaledValue" in exp:
            if DZG_QUIRK in quirks:
                # The vector shows the raw decode; the corrected power reads as unsigned.
                assert entry["raw"] == -29912
                assert entry["value"] == 356.24
            else:
                assert value_matches(entry["value"], exp["scaledValue"]), (what, entry["value"])


def test_golden_specifics() -> None:
    by_id = {v["id"]: sml.decode(bytes.fromhex(v["hex"]))[0] for v in VECTORS}
    # V5: Holley with CRC-16/KERMIT for the frame and every message.
    v5 = by_id["V5_HOLLEY_kermit"]
    assert v5["crc"] == "kermit"
    assert all(m["crc_ok"] for m in v5["messages"])
    v5_values = list(sml.entries(v5))
    assert len(v5_values) == 30
    assert {e["obis"]: e["value"] for e in v5_values}["1-0:1.8.0*100"] == 10793800
    # V6: message CRC sent as a one-byte Unsigned8.
    v6 = by_id["V6_ISKRA_MT691_1byteCRC"]
    assert [m["crc_ok"] for m in v6["messages"]] == [True, True, True]
    # V2: the DZG correction, flagged; V3: a genuine negative stays negative.
    power = {e["obis"]: e for e in sml.entries(by_id["V2_DZG_DVS-7412.2_jmberg"])}
    assert power["1-0:16.7.0*255"]["value"] == 356.24
    assert power["1-0:16.7.0*255"]["quirk"] == DZG_QUIRK
    assert power["1-0:16.7.0*255"]["unit_symbol"] == "W"
    neg = {e["obis"]: e for e in sml.entries(by_id["V3_DZG_DVS-7420_mtr2_neg"])}
    assert neg["1-0:16.7.0*255"]["value"] == -105.5
    assert neg["1-0:16.7.0*255"]["quirk"] is None
    # V9: the entry without value is kept.
    v9 = list(sml.entries(by_id["V9_EMH_with_error"]))
    assert len(v9) == 9
    assert v9[-1]["obis"] == "1-0:96.50.2*6"
    assert v9[-1]["value"] is None
    assert v9[-1]["quirk"] == "missing-value"
    # V11: DZG padding of four bytes is tolerated.
    assert by_id["V11_DZG_padding4"]["ok"]
    # V12: Uint64 energy.
    v12 = {e["obis"]: e for e in sml.entries(by_id["V12_ITRON_OpenWay3HZ"])}
    assert v12["1-0:1.8.0*255"]["value"] == 8189594.9
    assert v12["1-0:1.8.0*255"]["unit_symbol"] == "Wh"
    # V10: SML 1.04 local timestamps and a time as the value.
    v10 = {e["obis"]: e for e in sml.entries(by_id["V10_EMH_ebee_v104"])}
    assert v10["1-0:1.17.0*255"]["val_time"] == {
        "kind": "local_timestamp",
        "value": 1729848099,
        "local_offset": 60,
        "season_time_offset": 60,
    }
    assert v10["129-0:96.8.0*1"]["value"] == 1982288
