"""Thousands of damaged recordings through ``decode()`` and the streaming
decoder: never an exception, always well-formed items, every byte accounted for,
and the same result whatever the chunking.

Everything is seeded, so a failure names a seed and mutation that reproduce it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from conftest import recording_files

from smlogger import sml

START = b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01"
ESC = b"\x1b\x1b\x1b\x1b"

FRAME_KEYS = {"offset", "length", "ok", "error", "detail", "crc", "messages"}
MESSAGE_KEYS = {"type", "transaction_id", "group_no", "abort_on_error", "crc_ok", "error", "body"}
ENTRY_KEYS = {
    "obis",
    "status",
    "val_time",
    "unit",
    "unit_symbol",
    "scaler",
    "raw",
    "value",
    "value_signature",
    "quirk",
}
ERRORS = {"crc", "truncated", "escape", "parse", "too_long"}
MESSAGE_TYPES = {
    "OpenRequest",
    "OpenResponse",
    "CloseRequest",
    "CloseResponse",
    "GetProfilePackRequest",
    "GetProfilePackResponse",
    "GetProfileListRequest",
    "GetProfileListResponse",
    "GetProcParameterRequest",
    "GetProcParameterResponse",
    "SetProcParameterRequest",
    "SetProcParameterResponse",
    "GetListRequest",
    "GetListResponse",
    "AttentionResponse",
    "Unknown",
    "Invalid",
}
GET_LIST_KEYS = {
    "client_id",
    "server_id",
    "list_name",
    "act_sensor_time",
    "values",
    "list_signature",
    "act_gateway_time",
}
STAT_KEYS = {
    "bytes",
    "frames_ok",
    "crc_errors",
    "truncated",
    "escape_errors",
    "too_long",
    "parse_errors",
    "discarded_bytes",
    "buffered",
}

FILES = recording_files()
DATA = [p.read_bytes() for p in FILES]
MAX_FRAME = 65536


def opt(value: object, *types: type) -> bool:
    return value is None or isinstance(value, types)


def check_time(t: object) -> None:
    if t is None:
        return
    assert isinstance(t, dict)
    assert t["kind"] in ("sec_index", "timestamp", "local_timestamp")
    assert isinstance(t["value"], int)


def check_entry(e: dict[str, Any]) -> None:
    assert set(e) == ENTRY_KEYS
    assert isinstance(e["obis"], str)
    assert opt(e["status"], int)
    check_time(e["val_time"])
    assert opt(e["unit"], int)
    assert opt(e["unit_symbol"], str)
    assert (e["unit_symbol"] is None) == (e["unit"] in (None, 0))
    assert opt(e["scaler"], int)
    assert opt(e["raw"], int, bytes, dict)
    assert opt(e["value"], int, float, bytes)
    if e["raw"] is None:
        assert e["value"] is None
    assert opt(e["value_signature"], bytes)
    assert opt(e["quirk"], str)


def check_message(m: dict[str, Any]) -> None:
    assert set(m) == MESSAGE_KEYS
    assert m["type"] in MESSAGE_TYPES
    assert isinstance(m["crc_ok"], bool)
    assert opt(m["error"], str)
    assert isinstance(m["body"], dict)
    if m["type"] in ("Unknown", "Invalid"):
        assert m["error"], m
    else:
        assert m["error"] is None
        assert isinstance(m["transaction_id"], bytes)
        assert isinstance(m["group_no"], int)
        assert isinstance(m["abort_on_error"], int)
    if m["type"] == "Invalid":
        assert m["crc_ok"] is False
    if m["type"] == "GetListResponse":
        body = m["body"]
        assert set(body) == GET_LIST_KEYS
        assert isinstance(body["server_id"], bytes)
        assert opt(body["list_name"], str)
        check_time(body["act_sensor_time"])
        for e in body["values"]:
            check_entry(e)


def check_frames(frames: list[sml.Frame], stats: sml.DecoderStats, size: int) -> None:
    """The contract every decoder output must meet, damaged input or not."""
    end = 0
    counts = dict.fromkeys(ERRORS, 0)
    good = 0
    for f in frames:
        assert set(f) == FRAME_KEYS, f
        assert isinstance(f["offset"], int) and isinstance(f["length"], int)
        assert f["offset"] >= end, "frames overlap or are out of order"
        assert f["length"] > 0 or f["error"] == "parse"
        assert f["length"] <= MAX_FRAME or f["ok"] is False
        end = f["offset"] + f["length"]
        assert end <= size
        assert isinstance(f["ok"], bool)
        if f["ok"]:
            good += 1
            assert f["error"] is None
            assert f["detail"] is None
            assert f["crc"] in ("x25", "kermit")
            assert f["length"] >= 16
            for m in f["messages"]:
                check_message(m)  # type: ignore[arg-type]
        else:
            assert f["error"] in ERRORS
            assert isinstance(f["detail"], str) and f["detail"]
            assert f["messages"] == []
            counts[f["error"]] += 1
    assert set(stats) >= STAT_KEYS
    assert stats["bytes"] == size
    assert stats["buffered"] == 0
    assert stats["frames_ok"] == good
    assert stats["crc_errors"] == counts["crc"]
    assert stats["truncated"] == counts["truncated"]
    assert stats["escape_errors"] == counts["escape"]
    assert stats["too_long"] == counts["too_long"]
    assert stats["parse_errors"] == counts["parse"]
    assert sum(f["length"] for f in frames) + stats["discarded_bytes"] == size


def chunked(data: bytes, rng: random.Random) -> tuple[list[sml.Frame], sml.DecoderStats]:
    decoder = sml.Decoder()
    frames: list[sml.Frame] = []
    i = 0
    while i < len(data):
        n = rng.choice((1, 2, 3, 7, rng.randint(1, 600), rng.randint(1, 5000)))
        frames.extend(decoder.feed(data[i : i + n]))
        assert decoder.stats["buffered"] <= MAX_FRAME + n
        i += n
    frames.extend(decoder.finish())
    return frames, decoder.stats


# ------------------------------------------------------------------ mutations


def bit_flips(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 12)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def insertions(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(len(out) + 1)
        out[i:i] = rng.randbytes(rng.randint(1, 5))
    return bytes(out)


def deletions(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        if len(out) < 2:
            break
        i = rng.randrange(len(out))
        del out[i : i + rng.randint(1, 8)]
    return bytes(out)


def truncation(data: bytes, rng: random.Random) -> bytes:
    a = rng.randrange(len(data))
    b = rng.randrange(a, len(data) + 1)
    return data[a:b]


def splice(data: bytes, rng: random.Random) -> bytes:
    other = rng.choice(DATA)
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other)) :]


def garbage(data: bytes, rng: random.Random) -> bytes:
    alphabet = rng.choice((b"\x1b\x01\x1a\x00", b"\x1b\x01", bytes(range(256))))
    return bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 3000)))


def escape_runs(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(out) + 1)
        out[i:i] = b"\x1b" * rng.choice((3, 4, 5, 8, 9, 12, 100, 4000))
    return bytes(out)


def escape_then_random(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(out) + 1)
        tail = rng.choice((rng.randbytes(4), b"\x1a" + rng.randbytes(3), b"\x02\x02\x02\x02"))
        out[i:i] = ESC + tail
    return bytes(out)


def starts_everywhere(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        i = rng.randrange(len(out) + 1)
        out[i:i] = rng.choice((START, b"\x1b" + START, START + ESC + b"\x1a\x00"))
    return bytes(out)


def combo(data: bytes, rng: random.Random) -> bytes:
    for _ in range(rng.randint(2, 4)):
        data = rng.choice(MUTATIONS[:-1])(data or b"\x00", rng)
    return data


MUTATIONS: list[Callable[[bytes, random.Random], bytes]] = [
    bit_flips,
    insertions,
    deletions,
    truncation,
    splice,
    garbage,
    escape_runs,
    escape_then_random,
    starts_everywhere,
    combo,
]


@pytest.mark.parametrize("mutate", MUTATIONS, ids=[m.__name__ for m in MUTATIONS])
def test_mutated_recordings(mutate: Callable[[bytes, random.Random], bytes]) -> None:
    rng = random.Random(f"robust-{mutate.__name__}")
    for case in range(800):
        source = rng.randrange(len(DATA))
        data = mutate(DATA[source], rng)
        where = f"{mutate.__name__} case {case} (source {FILES[source].name})"
        decoder = sml.Decoder()
        whole = decoder.feed(data) + decoder.finish()
        check_frames(whole, decoder.stats, len(data))
        assert sml.decode(data) == whole, where
        frames, stats = chunked(data, rng)
        assert frames == whole, where
        assert stats == decoder.stats, where


def frame_payloads() -> list[bytes]:
    """The unescaped SML files inside the recordings' valid frames."""
    out = []
    for data in DATA:
        for f in sml.decode(data):
            if f["ok"]:
                inner = data[f["offset"] + 8 : f["offset"] + f["length"] - 8]
                padding = data[f["offset"] + f["length"] - 3]
                out.append(inner[: len(inner) - padding].replace(ESC * 2, ESC))
    return out


def test_damaged_messages_inside_valid_frames() -> None:
    """Damage the SML file, then frame it with a valid CRC: the message parser
    sees the damage. Frames stay ok or become "parse" errors; a damaged message
    fails alone."""
    payloads = frame_payloads()
    assert len(payloads) == 227
    rng = random.Random("robust-messages")
    kinds = {"ok": 0, "parse": 0, "invalid": 0, "unknown": 0}
    for case in range(3000):
        payload = rng.choice(payloads)
        mutate = rng.choice((bit_flips, insertions, deletions, truncation, escape_runs))
        damaged = mutate(payload, rng)
        data = sml.frame(damaged, crc=rng.choice(("x25", "kermit")))
        decoder = sml.Decoder()
        frames = decoder.feed(data) + decoder.finish()
        check_frames(frames, decoder.stats, len(data))
        assert len(frames) == 1, (case, frames)
        (frame,) = frames
        if frame["ok"]:
            kinds["ok"] += 1
            types = [m["type"] for m in frame["messages"]]
            kinds["invalid"] += types.count("Invalid")
            kinds["unknown"] += types.count("Unknown")
        else:
            assert frame["error"] == "parse", (case, frame)
            kinds["parse"] += 1
        assert chunked(data, rng)[0] == frames
    # The mutations reach every outcome, so the checks above were exercised.
    assert all(kinds.values()), kinds


def test_pathological_inputs() -> None:
    cases = [
        b"",
        b"\x1b",
        ESC,
        START,
        START * 1000,
        START + ESC,
        START + ESC + b"\x1a",
        START + ESC + b"\x1a\x00\x00",
        START + ESC + b"\x1a\x00\x00\x00",
        START + ESC * 2 + ESC + b"\x1a\x00\x00\x00",
        b"\x1b" * 100_000,
        START + b"\x1b" * 100_000,
        START + b"\x00" * 200_000,
        (START + b"\x00" * 70_000) * 3,
        bytes(range(256)) * 400,
        START + ESC + b"\x1a\x09\x00\x00",
        START + ESC + b"\x1c\x00\x00\x00" + START,
        START + ESC + b"\x02\x02\x02\x02",
    ]
    for data in cases:
        decoder = sml.Decoder()
        frames = decoder.feed(data) + decoder.finish()
        check_frames(frames, decoder.stats, len(data))
        assert sml.decode(data) == frames
        assert chunked(data, random.Random(len(data)))[0] == frames
