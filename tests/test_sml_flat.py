"""The fast paths over the same decoder agree with the dict API:

- ``sml.decode_values(data)`` equals the rows built from ``sml.entries()`` over
  ``sml.decode(data)``;
- ``Decoder.feed_lines`` (the text ``smlogger decode`` prints, formatted in
  Rust) equals ``tools.sml_server_line`` over the same entries, with the same
  good-frame count and the same damaged frames, however the input is chunked.

Checked on every recording and on hypothesis-generated streams (every message
type, every value kind, garbage and damage between frames).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from conftest import recording_files
from hypothesis import given
from hypothesis import strategies as st
from test_sml_roundtrip import SETTINGS, messages

from smlogger import sml
from smlogger.tools import sml_server_line


def rows_from_dicts(data: bytes) -> list[sml.ValueRow]:
    return [
        (f["offset"], body["server_id"], e["obis"], e["value"], e["unit_symbol"])
        for f in sml.decode(data)
        for body in sml.get_list_responses(f)
        for e in body["values"]
    ]


def lines_from_dicts(data: bytes) -> tuple[str, int, list[sml.Frame]]:
    frames = sml.decode(data)
    lines = [sml_server_line(e) for f in frames for e in sml.entries(f)]
    text = "".join(f"{line}\n" for line in lines if line is not None)
    return text, sum(f["ok"] for f in frames), [f for f in frames if not f["ok"]]


def lines_fed(data: bytes, rng: random.Random) -> tuple[str, int, list[sml.Frame]]:
    """``feed_lines`` over random chunks, the last one with ``finish``."""
    decoder = sml.Decoder()
    text, good = "", 0
    bad: list[sml.Frame] = []
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 7, 64, 1000, len(data)])
        t, g, b = decoder.feed_lines(data[pos : pos + n])
        text, good, bad = text + t, good + g, bad + b
        pos += n
    t, g, b = decoder.feed_lines(b"", finish=True)
    return text + t, good + g, bad + b


def check(data: bytes, rng: random.Random) -> None:
    assert sml.decode_values(data) == rows_from_dicts(data)
    want = lines_from_dicts(data)
    assert sml.Decoder().feed_lines(data, finish=True) == want
    assert lines_fed(data, rng) == want


def test_recordings() -> None:
    rng = random.Random(12)
    for path in recording_files():
        check(path.read_bytes(), rng)
    whole = b"".join(p.read_bytes() for p in recording_files())
    rows = sml.decode_values(whole)
    assert len(rows) > 1000
    assert {type(r[3]) for r in rows} >= {int, float, bytes}
    check(whole, rng)


def test_value_fields_name_the_columns() -> None:
    data = recording_files()[0].read_bytes()
    row = sml.decode_values(data)[0]
    assert len(row) == len(sml.VALUE_FIELDS)
    named = dict(zip(sml.VALUE_FIELDS, row))
    first = next(e for f in sml.decode(data) for e in sml.entries(f))
    assert named["obis"] == first["obis"] and named["unit"] == first["unit_symbol"]


@st.composite
def streams(draw: Any) -> bytes:
    """Frames of generated messages, with garbage and occasional damage between."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        frame = bytearray(
            sml.encode(
                draw(st.lists(messages(), min_size=1, max_size=3)),
                crc=draw(st.sampled_from(["x25", "kermit"])),
            )
        )
        if draw(st.integers(0, 4)) == 0:
            frame[draw(st.integers(0, len(frame) - 1))] ^= 1 << draw(st.integers(0, 7))
        parts.append(bytes(frame))
        parts.append(draw(st.binary(max_size=12)))
    return b"".join(parts)


@pytest.mark.slow  # hypothesis, ~4 s
@SETTINGS
@given(streams(), st.integers(0, 2**32 - 1))
def test_generated_streams(data: bytes, seed: int) -> None:
    check(data, random.Random(seed))
