"""Details of the public decoder API (``smlogger.sml``): CRC modes, argument
checks, helpers, error details, and message-level failures built by hand."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import RECORDINGS

from smlogger import sml

VECTORS = {
    v["id"]: bytes.fromhex(v["hex"])
    for v in json.loads((RECORDINGS.parent / "SML-VECTORS.json").read_text(encoding="utf-8"))
}
KERMIT_FRAME = VECTORS["V5_HOLLEY_kermit"]
X25_FRAME = VECTORS["V1_EMH_eHZ-GW8E2A500AK2"]


# ------------------------------------------------------------ hand-made SML


def tl_octets(b: bytes) -> bytes:
    assert len(b) < 15
    return bytes([len(b) + 1]) + b


def uint16(v: int) -> bytes:
    return b"\x63" + v.to_bytes(2, "big")


def crc_field(covered: bytes) -> bytes:
    """The message crc16 field holds the X-25 value byte-swapped: on the wire
    that is the low byte first."""
    return b"\x63" + sml.crc16_x25(covered).to_bytes(2, "little")


def message(tid: bytes, tag: int, body: bytes, *, crc: bytes | None = None) -> bytes:
    head = b"\x76" + tl_octets(tid) + b"\x62\x00\x62\x00" + b"\x72" + uint16(tag) + body
    return head + (crc_field(head) if crc is None else crc) + b"\x00"


def open_response(tid: bytes = b"\x01") -> bytes:
    # codepage, clientId not set; reqFileId; serverId; refTime, smlVersion not set
    body = b"\x76\x01\x01" + tl_octets(b"file") + tl_octets(b"\x0a\x01TST") + b"\x01\x01"
    return message(tid, 0x0101, body)


def get_list_response(tid: bytes = b"\x02") -> bytes:
    entry = (
        b"\x77"
        + tl_octets(bytes([1, 0, 1, 8, 0, 255]))
        + b"\x01\x01"  # status, valTime
        + b"\x62\x1e"  # unit 30 (Wh)
        + b"\x52\xff"  # scaler -1
        + b"\x65\x00\x01\xe2\x40"  # 123456
        + b"\x01"  # signature
    )
    body = b"\x77\x01" + tl_octets(b"\x0a\x01TST") + b"\x01\x01" + b"\x71" + entry + b"\x01\x01"
    return message(tid, 0x0701, body)


def close_response(tid: bytes = b"\x03") -> bytes:
    return message(tid, 0x0201, b"\x71\x01")


def test_message_crc_convention_matches_libsml_vector() -> None:
    """libsml's sml_message_test.c: OpenResponse with crc16 field 63 82 08."""
    msg = bytes.fromhex(
        "7607003800003FB662006200726301017601010700380042153D0B06454D48010271533BCD010163820800"
    )
    assert crc_field(msg[:-4]) == msg[-4:-1]
    (frame,) = sml.decode(sml.frame(msg))
    (m,) = frame["messages"]
    assert m["type"] == "OpenResponse"
    assert m["crc_ok"] is True
    assert m["body"]["server_id"] == bytes.fromhex("06454D48010271533BCD")
    flipped = msg.replace(bytes.fromhex("0700380042153D"), bytes.fromhex("0700390042153D"))
    (frame,) = sml.decode(sml.frame(flipped))
    assert frame["ok"] is True
    assert frame["messages"][0]["crc_ok"] is False


# ------------------------------------------------------------------ CRC modes


@pytest.mark.parametrize(
    ("mode", "x25_ok", "kermit_ok"),
    [("auto", True, True), ("x25", True, False), ("kermit", False, True)],
)
def test_crc_modes(mode: sml.CrcName, x25_ok: bool, kermit_ok: bool) -> None:
    for data, ok, name in ((X25_FRAME, x25_ok, "x25"), (KERMIT_FRAME, kermit_ok, "kermit")):
        (frame,) = sml.decode(data, crc=mode)
        assert frame["ok"] is ok, (mode, name)
        if ok:
            assert frame["crc"] == name
            assert all(m["crc_ok"] for m in frame["messages"])
        else:
            assert frame["error"] == "crc"
            assert frame["messages"] == []
        decoder = sml.Decoder(mode)
        assert decoder.crc == mode
        assert decoder.feed(data) + decoder.finish() == [frame]
        assert decoder.stats["crc_errors"] == (0 if ok else 1)
        assert sml.count_frames(data, crc=mode) == (int(ok), len(data))
    decoder = sml.Decoder(mode)
    decoder.feed(X25_FRAME + KERMIT_FRAME)
    stats = decoder.stats
    assert (stats["crc_x25"], stats["crc_kermit"]) == (int(x25_ok), int(kermit_ok))


def test_default_crc_mode_is_auto() -> None:
    assert sml.Decoder().crc == "auto"
    assert [f["crc"] for f in sml.decode(X25_FRAME + KERMIT_FRAME)] == ["x25", "kermit"]


def test_crc_mismatch_detail_names_both_values() -> None:
    (frame,) = sml.decode(KERMIT_FRAME, crc="x25")
    computed = sml.crc16_x25(KERMIT_FRAME[:-2])
    carried = int.from_bytes(KERMIT_FRAME[-2:], "little")
    assert frame["detail"] is not None
    assert f"0x{computed:04x}" in frame["detail"]
    assert f"0x{carried:04x}" in frame["detail"]
    assert "x25" in frame["detail"].lower()

    (frame,) = sml.decode(X25_FRAME, crc="kermit")
    computed = sml.crc16_kermit(X25_FRAME[:-2])
    carried = int.from_bytes(X25_FRAME[-2:], "big")
    assert frame["detail"] is not None
    assert f"0x{computed:04x}" in frame["detail"]
    assert f"0x{carried:04x}" in frame["detail"]


def test_crc_functions_check_values() -> None:
    assert sml.crc16_x25(b"123456789") == 0x906E
    assert sml.crc16_kermit(b"123456789") == 0x2189
    assert sml.crc16_x25(b"") == 0x0000
    assert sml.crc16_kermit(b"") == 0x0000
    # The frame CRC covers everything up to the CRC itself.
    assert sml.crc16_x25(X25_FRAME[:-2]).to_bytes(2, "little") == X25_FRAME[-2:]
    assert sml.crc16_kermit(KERMIT_FRAME[:-2]).to_bytes(2, "big") == KERMIT_FRAME[-2:]


@pytest.mark.parametrize("bad", ["", "X25", "auto ", "crc16", "x-25"])
def test_invalid_crc_name_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="crc"):
        sml.decode(X25_FRAME, crc=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crc"):
        sml.Decoder(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crc"):
        sml.count_frames(X25_FRAME, crc=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crc"):
        sml.encode([{"type": "CloseResponse"}], crc=bad)
    with pytest.raises(ValueError, match="crc"):
        sml.frame(b"", crc=bad)


def test_encode_accepts_only_concrete_crc_kinds() -> None:
    with pytest.raises(ValueError, match="crc"):
        sml.encode([{"type": "CloseResponse"}], crc="auto")
    kermit = sml.encode([{"type": "CloseResponse"}], crc="kermit")
    assert sml.decode(kermit)[0]["crc"] == "kermit"


# --------------------------------------------------------------- input types


def test_bytearray_and_bytes_give_the_same() -> None:
    data = X25_FRAME + KERMIT_FRAME
    assert sml.decode(bytearray(data)) == sml.decode(data)
    decoder = sml.Decoder()
    frames = decoder.feed(bytearray(data[:100]))
    frames += decoder.feed(bytearray(data[100:]))
    frames += decoder.finish()
    assert frames == sml.decode(data)


def test_decode_rejects_text() -> None:
    with pytest.raises(TypeError):
        sml.decode("1b1b1b1b")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sml.Decoder().feed("1b1b1b1b")  # type: ignore[arg-type]


def test_empty_input() -> None:
    assert sml.decode(b"") == []
    decoder = sml.Decoder()
    assert decoder.feed(b"") == []
    assert decoder.finish() == []
    assert decoder.stats["bytes"] == 0


# -------------------------------------------------------------------- encode


GOOD_LIST: dict[str, Any] = {
    "type": "GetListResponse",
    "transaction_id": b"\x02",
    "body": {
        "server_id": b"\x0a\x01TST",
        "values": [{"obis": "1-0:1.8.0*255", "raw": 123456, "scaler": -1, "unit": 30}],
    },
}


def with_body(**changes: Any) -> dict[str, Any]:
    body = {**GOOD_LIST["body"], **changes}
    return {**GOOD_LIST, "body": body}


def with_entry(**changes: Any) -> dict[str, Any]:
    entry = {**GOOD_LIST["body"]["values"][0], **changes}
    return with_body(values=[entry])


@pytest.mark.parametrize(
    ("msg", "key"),
    [
        ({"type": "NoSuchMessage"}, "type"),
        ({"body": {}}, "type"),
        ({"type": "GetListResponse", "body": {"values": []}}, "server_id"),
        ({"type": "OpenResponse", "body": {"server_id": b"s"}}, "req_file_id"),
        ({"type": "OpenRequest", "body": {"req_file_id": b"r"}}, "client_id"),
        ({"type": "GetProcParameterResponse", "body": {"server_id": b"s"}}, "parameter_tree"),
        ({"type": "GetProfileListResponse", "body": {"server_id": b"s"}}, "act_time"),
        ({"type": "AttentionResponse", "body": {"server_id": b"s"}}, "attention_no"),
        (with_body(server_id=12), "server_id"),
        (with_body(list_name="not an obis"), "list_name"),
        (with_body(act_sensor_time={"kind": "century", "value": 1}), "act_sensor_time"),
        (with_body(act_sensor_time={"kind": "sec_index", "value": 2**32}), "value"),
        (with_entry(obis="1-0:1.8"), "obis"),
        (with_entry(obis=None), "obis"),
        (with_entry(raw=2**64), "raw"),
        (with_entry(raw=-(2**63) - 1), "raw"),
        (with_entry(raw=300, wire="uint8"), "raw"),
        (with_entry(raw=-129, wire="int8"), "raw"),
        (with_entry(raw=1, wire="float32"), "wire"),
        (with_entry(raw=1, wire="int12"), "wire"),
        (with_entry(raw=1, wire="uint72"), "wire"),
        (with_entry(unit=256), "unit"),
        (with_entry(scaler=128), "scaler"),
        (with_entry(status=-1), "status"),
        ({**GOOD_LIST, "group_no": 256}, "group_no"),
        ({**GOOD_LIST, "transaction_id": 5}, "transaction_id"),
    ],
)
def test_encode_errors_name_the_key(msg: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        sml.encode([msg])


def test_encode_type_errors_name_the_key() -> None:
    with pytest.raises(TypeError, match="body"):
        sml.encode([{"type": "CloseResponse", "body": [1, 2]}])
    with pytest.raises(TypeError, match="values"):
        sml.encode([with_body(values=[5])])
    with pytest.raises(TypeError, match="message"):
        sml.encode(["CloseResponse"])


def test_encode_output_is_a_decodable_frame() -> None:
    data = sml.encode([GOOD_LIST], crc="x25")
    assert data.startswith(b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01")
    assert data[-8:-3] == b"\x1b\x1b\x1b\x1b\x1a"
    assert len(data) % 4 == 0
    (frame,) = sml.decode(data)
    (entry,) = sml.entries(frame)
    assert entry["obis"] == "1-0:1.8.0*255"
    assert entry["value"] == 12345.6
    assert entry["unit_symbol"] == "Wh"
    # Wire widths: "wire" forces the SML type and width, else the smallest fits.
    data = sml.encode([with_entry(raw=5, wire="int40")])
    assert b"\x56\x00\x00\x00\x00\x05" in data
    data = sml.encode([with_entry(raw=-2)])
    assert b"\x52\xfe" in data


def test_frame_wraps_escapes_pads_and_checksums() -> None:
    payload = b"\x01\x1b\x1b\x1b\x1b\x02"
    data = sml.frame(payload)
    assert data[:8] == b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01"
    assert data[8:17] == b"\x01" + b"\x1b" * 8
    padding = data[-3]
    assert data[-8:-3] == b"\x1b\x1b\x1b\x1b\x1a"
    assert len(data) % 4 == 0
    assert data[-8 - padding : -8] == b"\x00" * padding
    assert sml.crc16_x25(data[:-2]).to_bytes(2, "little") == data[-2:]
    kermit = sml.frame(payload, crc="kermit")
    assert sml.crc16_kermit(kermit[:-2]).to_bytes(2, "big") == kermit[-2:]


# ---------------------------------------------------------------------- OBIS


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("0100010800ff", "1-0:1.8.0*255"),
        ("0100100700ff", "1-0:16.7.0*255"),
        ("8181c78203ff", "129-129:199.130.3*255"),
        ("010060320101", "1-0:96.50.1*1"),
        ("000000000000", "0-0:0.0.0*0"),
        ("ffffffffffff", "255-255:255.255.255*255"),
    ],
)
def test_obis_text_round_trip(raw: str, text: str) -> None:
    assert sml.obis_to_str(bytes.fromhex(raw)) == text
    assert sml.obis_from_str(text) == bytes.fromhex(raw)


def test_obis_parsing_variants() -> None:
    assert sml.obis_from_str("1-0:1.8.0") == bytes.fromhex("0100010800ff")
    assert sml.obis_from_str("0100010800ff") == bytes.fromhex("0100010800ff")
    # Names that are not six bytes render as hex.
    assert sml.obis_to_str(b"\x01\x02\x03") == "010203"
    assert sml.obis_to_str(b"") == ""
    for bad in ("1-0:1.8.256*255", "1-0:1.8", "x-y:z", "1-0:1.8.0*", "123"):
        with pytest.raises(ValueError):
            sml.obis_from_str(bad)


def test_unit_symbols() -> None:
    expected = {
        8: "°",
        9: "°C",
        13: "m³",
        27: "W",
        28: "VA",
        29: "var",
        30: "Wh",
        31: "VAh",
        32: "varh",
        33: "A",
        35: "V",
        44: "Hz",
        52: "K",
        255: "(count)",
    }
    for code, symbol in expected.items():
        assert sml.unit_symbol(code) == symbol, code
    assert sml.unit_symbol(0) is None
    assert sml.unit_symbol(100) == "?:100"
    with pytest.raises((OverflowError, ValueError)):
        sml.unit_symbol(256)


# ------------------------------------------------------------------- helpers


def test_entries_and_get_list_responses() -> None:
    (frame,) = sml.decode(X25_FRAME)
    bodies = list(sml.get_list_responses(frame))
    assert len(bodies) == 1
    assert bodies[0]["server_id"] == b"02280816"
    entries = list(sml.entries(frame))
    assert [e["obis"] for e in entries] == [
        "129-129:199.130.3*255",
        "1-0:0.0.0*255",
        "1-0:1.8.1*255",
        "1-0:1.8.2*255",
        "0-0:96.1.255*255",
        "1-0:1.7.0*255",
    ]
    # Frames that are not ok have no messages, hence no entries.
    (bad,) = sml.decode(X25_FRAME, crc="kermit")
    assert list(sml.entries(bad)) == []


def test_entries_skip_messages_with_bad_crc_unless_asked() -> None:
    glr = get_list_response()
    damaged = glr[:-4] + b"\x63\x00\x00\x00"
    if glr[-4:] == damaged[-4:]:
        damaged = glr[:-4] + b"\x63\x00\x01\x00"
    (frame,) = sml.decode(sml.frame(open_response() + damaged + close_response()))
    assert frame["ok"] is True
    assert [m["crc_ok"] for m in frame["messages"]] == [True, False, True]
    assert list(sml.entries(frame)) == []
    assert list(sml.get_list_responses(frame)) == []
    (entry,) = sml.entries(frame, require_crc=False)
    assert entry["value"] == 12345.6
    decoder = sml.Decoder()
    decoder.feed(sml.frame(open_response() + damaged + close_response()))
    assert decoder.stats["message_crc_errors"] == 1
    assert decoder.stats["frames_ok"] == 1


def entry(value: object, scaler: int | None = None) -> sml.Entry:
    return {
        "obis": "1-0:1.8.0*255",
        "status": None,
        "val_time": None,
        "unit": None,
        "unit_symbol": None,
        "scaler": scaler,
        "raw": None,
        "value": value,  # type: ignore[typeddict-item]
        "value_signature": None,
        "quirk": None,
    }


def test_format_value() -> None:
    assert sml.format_value(entry(14798112.9, -1)) == "14798112.9"
    assert sml.format_value(entry(356.24, -2)) == "356.24"
    assert sml.format_value(entry(-105.5, -2)) == "-105.50"
    assert sml.format_value(entry(0.0, -1)) == "0.0"
    assert sml.format_value(entry(2043000, 3)) == "2043000"
    assert sml.format_value(entry(460, 0)) == "460"
    assert sml.format_value(entry(1835268)) == "1835268"
    assert sml.format_value(entry(b"EMH")) == "EMH"
    assert sml.format_value(entry(b"\x0a\x01DZG")) == "0a01445a47"
    assert sml.format_value(entry(b"")) == ""
    assert sml.format_value(entry(True)) == "true"
    assert sml.format_value(entry(False)) == "false"
    assert sml.format_value(entry(None)) == ""


def test_format_value_on_decoded_frames() -> None:
    (frame,) = sml.decode(VECTORS["V2_DZG_DVS-7412.2_jmberg"])
    text = {e["obis"]: sml.format_value(e) for e in sml.entries(frame)}
    assert text == {
        "1-0:96.50.1*1": "DZG",
        "1-0:96.1.0*255": "0a01445a47000282225e",
        "1-0:1.8.0*255": "5430157.7",
        "1-0:2.8.0*255": "26244572.6",
        "1-0:16.7.0*255": "356.24",
    }


def test_iter_frames() -> None:
    data = X25_FRAME + KERMIT_FRAME + X25_FRAME[:40]
    chunks = [data[i : i + 100] for i in range(0, len(data), 100)]
    frames = list(sml.iter_frames(chunks))
    assert frames == sml.decode(data)
    assert [(f["ok"], f["error"]) for f in frames] == [
        (True, None),
        (True, None),
        (False, "truncated"),
    ]
    only_x25 = list(sml.iter_frames(iter(chunks), crc="x25"))
    assert [f["error"] for f in only_x25] == [None, "crc", "truncated"]


def test_stats_keys() -> None:
    decoder = sml.Decoder()
    decoder.feed(X25_FRAME)
    stats = decoder.stats
    assert {
        "bytes",
        "frames_ok",
        "crc_errors",
        "truncated",
        "escape_errors",
        "too_long",
        "parse_errors",
        "discarded_bytes",
        "messages",
        "message_errors",
        "message_crc_errors",
        "buffered",
    } <= set(stats)
    assert stats["frames_ok"] == 1
    assert stats["messages"] == 3
    assert all(isinstance(v, int) for v in stats.values())


# ------------------------------------------------- message-level failures


def test_unknown_body_tag_fails_only_that_message() -> None:
    unknown = message(b"\x09", 0x0999, b"\x72\x62\x01\x62\x02")
    (frame,) = sml.decode(
        sml.frame(open_response() + unknown + get_list_response() + close_response())
    )
    assert frame["ok"] is True
    types = [m["type"] for m in frame["messages"]]
    assert types == ["OpenResponse", "Unknown", "GetListResponse", "CloseResponse"]
    bad = frame["messages"][1]
    assert bad["error"] is not None
    assert "0x0999" in bad["error"]
    assert bad["transaction_id"] == b"\x09"
    assert bad["body"]["tag"] == 0x0999
    for m in (frame["messages"][0], *frame["messages"][2:]):
        assert m["error"] is None
        assert m["crc_ok"] is True
    (value,) = sml.entries(frame)
    assert value["value"] == 12345.6
    assert value["unit_symbol"] == "Wh"


def test_broken_message_structure_fails_only_that_message() -> None:
    # An OpenResponse body with a list of the wrong length, CRC valid.
    broken = message(b"\x05", 0x0101, b"\x72\x01\x01")
    (frame,) = sml.decode(sml.frame(open_response() + broken + close_response()))
    assert frame["ok"] is True
    assert [m["type"] for m in frame["messages"]] == ["OpenResponse", "Invalid", "CloseResponse"]
    invalid = frame["messages"][1]
    assert invalid["crc_ok"] is False
    assert invalid["error"]
    assert frame["messages"][2]["crc_ok"] is True


def one_byte_crc_message() -> bytes:
    """A CloseResponse whose crc16 field fits one byte, written as `62 XX`."""
    for n in range(1, 5000):
        head = b"\x76" + tl_octets(n.to_bytes(2, "big")) + b"\x62\x00\x62\x00\x72"
        head += uint16(0x0201) + b"\x71\x01"
        crc = sml.crc16_x25(head)
        field = ((crc & 0xFF) << 8) | (crc >> 8)
        if field < 0x100:
            return head + bytes([0x62, field]) + b"\x00"
    raise AssertionError("no transaction id gives a one-byte CRC field")


def test_one_byte_crc_field_is_accepted() -> None:
    msg = one_byte_crc_message()
    (frame,) = sml.decode(sml.frame(open_response() + msg))
    assert frame["ok"] is True
    assert [(m["type"], m["crc_ok"]) for m in frame["messages"]] == [
        ("OpenResponse", True),
        ("CloseResponse", True),
    ]
    # The same one-byte form with a wrong value is a CRC failure, not a parse error.
    wrong = msg[:-2] + bytes([msg[-2] ^ 0x01]) + b"\x00"
    (frame,) = sml.decode(sml.frame(open_response() + wrong))
    assert [(m["type"], m["crc_ok"]) for m in frame["messages"]] == [
        ("OpenResponse", True),
        ("CloseResponse", False),
    ]


def test_iskra_one_byte_crc_vector() -> None:
    (frame,) = sml.decode(VECTORS["V6_ISKRA_MT691_1byteCRC"])
    assert b"\x62\xe0\x00" in VECTORS["V6_ISKRA_MT691_1byteCRC"]
    assert all(m["crc_ok"] for m in frame["messages"])


def test_bad_message_crc_keeps_frame_ok() -> None:
    good = get_list_response()
    bad = good[:-3] + bytes([good[-3] ^ 0xFF]) + good[-2:]
    (frame,) = sml.decode(sml.frame(open_response() + bad + close_response()))
    assert frame["ok"] is True
    assert frame["error"] is None
    assert [m["crc_ok"] for m in frame["messages"]] == [True, False, True]
    assert frame["messages"][1]["type"] == "GetListResponse"
    assert frame["messages"][1]["error"] is None


def test_message_without_crc_field_is_not_crc_ok() -> None:
    head = b"\x76" + tl_octets(b"\x07") + b"\x62\x00\x62\x00\x72" + uint16(0x0201) + b"\x71\x01"
    (frame,) = sml.decode(sml.frame(head + b"\x01\x00"))
    assert frame["ok"] is True
    (m,) = frame["messages"]
    assert m["type"] == "CloseResponse"
    assert m["crc_ok"] is False


def test_payload_that_is_not_sml_is_a_parse_error() -> None:
    (frame,) = sml.decode(sml.frame(b"\x76\x01"))
    assert frame["ok"] is False
    assert frame["error"] == "parse"
    assert frame["detail"]
    assert frame["messages"] == []


def test_unknown_escape_is_an_escape_error() -> None:
    data = b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01\x12\x1b\x1b\x1b\x1b\x1c\x00\x00\x00"
    (frame,) = sml.decode(data + X25_FRAME)[:1]
    assert frame["error"] == "escape"
    assert frame["detail"] is not None and "1c" in frame["detail"]
    frames = sml.decode(data + X25_FRAME)
    assert [f["ok"] for f in frames] == [False, True]
    assert frames[1]["offset"] == len(data)


def test_max_frame_argument() -> None:
    data = sml.encode([with_entry(raw=b"z" * 3000)])
    assert sml.decode(data)[0]["ok"] is True
    (frame,) = sml.decode(data, max_frame=1024)
    assert frame["error"] == "too_long"
    assert sml.DEFAULT_MAX_FRAME == 65536
