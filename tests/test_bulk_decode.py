"""`sml.feed_values` (the bulk decode path of replays at full speed) gives what `Decoder.feed`
gives, and `readings_from_lists` the readings `readings_from_frame` makes of it: over every
recording, fed whole and in pieces, with damaged frames and bad message CRCs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import recording_files

from smlogger import sml
from smlogger.reading import Value, readings_from_frame, readings_from_lists
from smlogger.simulate import make_meter

RECEIVED = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


def _as_lists(frame: sml.Frame) -> list[tuple[Any, ...]]:
    """What feed_values should give for a frame dict of Decoder.feed (values as
    (type, __dict__) pairs, so that the comparison sees every field and the class)."""
    lists: list[tuple[Any, ...]] = []
    for message in frame["messages"]:
        if message.get("type") != "GetListResponse":
            continue
        body: Any = message["body"]
        values = {
            e["obis"]: (
                Value,
                {
                    "obis": e["obis"],
                    "value": e["value"],
                    "unit": e["unit_symbol"],
                    "raw": e["raw"],
                    "scaler": e["scaler"],
                },
            )
            for e in body["values"]
        }
        statuses = {e["obis"]: e["status"] for e in body["values"] if e["status"] is not None}
        lists.append((message["crc_ok"], body["server_id"], values, statuses))
    return lists


def _plain(item: sml.ValuesFrame) -> tuple[Any, ...]:
    """A feed_values item with its value objects as (type, __dict__) pairs."""
    offset, ok, lists = item
    return (
        offset,
        ok,
        [
            (crc_ok, server_id, {o: (type(v), dict(vars(v))) for o, v in values.items()}, statuses)
            for crc_ok, server_id, values, statuses in lists
        ],
    )


def _both(data: bytes, pieces: int) -> tuple[list[sml.Frame], list[sml.ValuesFrame]]:
    step = max(1, len(data) // pieces)
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    plain, lean = sml.Decoder(), sml.Decoder()
    frames = [f for c in chunks for f in plain.feed(c)] + plain.finish()
    items = [i for c in chunks for i in sml.feed_values(lean, c, Value)]
    items += sml.feed_values(lean, b"", Value, finish=True)
    assert lean.stats == plain.stats
    return frames, items


@pytest.mark.parametrize("path", recording_files(), ids=lambda p: p.name)
@pytest.mark.parametrize("pieces", [1, 7])
def test_feed_values_matches_feed_on_every_recording(path: Path, pieces: int) -> None:
    frames, items = _both(path.read_bytes(), pieces)
    assert [_plain(i) for i in items] == [(f["offset"], f["ok"], _as_lists(f)) for f in frames]
    for frame, item in zip(frames, items):
        for accept in (False, True):
            for direction in (False, True):
                assert readings_from_lists(
                    item, RECEIVED, accept_bad_msg_crc=accept, direction_from_status=direction
                ) == readings_from_frame(
                    frame, RECEIVED, accept_bad_msg_crc=accept, direction_from_status=direction
                )
        assert readings_from_lists(item, RECEIVED, meter_id="m") == readings_from_frame(
            frame, RECEIVED, meter_id="m"
        )


def test_feed_values_reports_damaged_frames_and_bad_message_crcs() -> None:
    meter = make_meter("household", seed="bulk", tz=timezone.utc)
    good = meter.frame(RECEIVED)
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF  # transport CRC
    frames, items = _both(good + bytes(bad_crc) + good[: len(good) // 2], 1)
    assert [i[1] for i in items] == [True, False, False]  # the last one truncated
    assert [i[0] for i in items] == [0, len(good), 2 * len(good)]
    assert [_plain(i) for i in items] == [(f["offset"], f["ok"], _as_lists(f)) for f in frames]
    assert len(readings_from_lists(items[0], RECEIVED)) == 1
    assert readings_from_lists(items[1], RECEIVED) == []


def test_feed_values_needs_a_decoder_and_a_class() -> None:
    with pytest.raises(TypeError):
        sml.feed_values(object(), b"", Value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sml.feed_values(sml.Decoder(), b"", "Value")  # type: ignore[arg-type]


def test_repeated_values_share_objects_and_changed_ones_do_not() -> None:
    """A register that repeats its value gets the Value object of the frame before (safe:
    Values are frozen); a changed value, another class or a new decoder get new objects;
    the stored deltas are those of values made afresh."""
    from smlogger.store.bases import BaseBook

    meter = make_meter("household", seed="shared", tz=timezone.utc)
    data = b"".join(meter.frame(RECEIVED + timedelta(seconds=i)) for i in range(50))
    data += b"".join(p.read_bytes() for p in recording_files()[:6])
    decoder = sml.Decoder()
    items = sml.feed_values(decoder, data, Value)
    first, second = items[0][2][0][2], items[1][2][0][2]
    repeated = [o for o in first if first[o] == second[o]]
    changed = [o for o in first if first[o] != second[o]]
    assert repeated and changed
    assert all(first[o] is second[o] for o in repeated)
    assert all(first[o] is not second[o] for o in changed)

    class Other(Value):
        pass

    one = meter.frame(RECEIVED)
    again = [i for i in sml.feed_values(decoder, one + one, Other) if i[1]]
    assert again and all(type(v) is Other for i in again for v in i[2][0][2].values())
    fresh = sml.feed_values(sml.Decoder(), data, Value)
    assert all(fresh[0][2][0][2][o] is not first[o] for o in first)

    shared = [r for i in items for r in readings_from_lists(i, RECEIVED)]
    frames = sml.Decoder().feed(data)
    plain = [r for f in frames for r in readings_from_frame(f, RECEIVED)]
    assert shared == plain and len(shared) > 50
    with_memo, without = BaseBook(), BaseBook()
    for a, b in zip(shared, plain):
        assert with_memo.split(a.meter_id, a.values, a.fields()) == without.split(
            b.meter_id, b.values, b.fields()
        )
