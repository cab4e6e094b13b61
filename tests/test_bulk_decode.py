"""`sml.feed_lists` (the bulk decode path of replays at full speed) gives what `Decoder.feed`
gives, and `readings_from_lists` the readings `readings_from_frame` makes of it: over every
recording, fed whole and in pieces, with damaged frames and bad message CRCs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import recording_files

from smlogger import sml
from smlogger.reading import readings_from_frame, readings_from_lists
from smlogger.simulate import make_meter

RECEIVED = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


def _as_lists(frame: sml.Frame) -> sml.ListsFrame:
    """What feed_lists should give for a frame dict of Decoder.feed."""
    lists = []
    for message in frame["messages"]:
        if message.get("type") != "GetListResponse":
            continue
        body: Any = message["body"]
        entries = tuple(
            (e["obis"], e["value"], e["unit_symbol"], e["raw"], e["scaler"], e["status"])
            for e in body["values"]
        )
        lists.append((message["crc_ok"], body["server_id"], entries))
    return (frame["offset"], frame["ok"], lists)


def _both(data: bytes, pieces: int) -> tuple[list[sml.Frame], list[sml.ListsFrame]]:
    step = max(1, len(data) // pieces)
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    plain, lean = sml.Decoder(), sml.Decoder()
    frames = [f for c in chunks for f in plain.feed(c)] + plain.finish()
    items = [i for c in chunks for i in sml.feed_lists(lean, c)]
    items += sml.feed_lists(lean, b"", finish=True)
    assert lean.stats == plain.stats
    return frames, items


@pytest.mark.parametrize("path", recording_files(), ids=lambda p: p.name)
@pytest.mark.parametrize("pieces", [1, 7])
def test_feed_lists_matches_feed_on_every_recording(path: Path, pieces: int) -> None:
    frames, items = _both(path.read_bytes(), pieces)
    assert items == [_as_lists(f) for f in frames]
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


def test_feed_lists_reports_damaged_frames_and_bad_message_crcs() -> None:
    meter = make_meter("household", seed="bulk", tz=timezone.utc)
    good = meter.frame(RECEIVED)
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF  # transport CRC
    frames, items = _both(good + bytes(bad_crc) + good[: len(good) // 2], 1)
    assert [i[1] for i in items] == [True, False, False]  # the last one truncated
    assert [i[0] for i in items] == [0, len(good), 2 * len(good)]
    assert items == [_as_lists(f) for f in frames]
    assert len(readings_from_lists(items[0], RECEIVED)) == 1
    assert readings_from_lists(items[1], RECEIVED) == []


def test_feed_lists_needs_a_decoder() -> None:
    with pytest.raises(TypeError):
        sml.feed_lists(object(), b"")  # type: ignore[arg-type]


def test_shared_values_give_the_same_readings_and_deltas() -> None:
    """With a cache, octet-string entries share one Value from frame to frame; readings and
    stored deltas are those of the plain path."""
    from smlogger.store.bases import BaseBook

    meter = make_meter("household", seed="shared", tz=timezone.utc)
    data = b"".join(meter.frame(RECEIVED + timedelta(seconds=i)) for i in range(50))
    data += b"".join(p.read_bytes() for p in recording_files()[:6])
    items = sml.feed_lists(sml.Decoder(), data)
    cache: dict[Any, Any] = {}
    shared = [r for i in items for r in readings_from_lists(i, RECEIVED, cache=cache)]
    plain = [r for i in items for r in readings_from_lists(i, RECEIVED)]
    assert shared == plain and len(shared) > 50
    first, second = shared[0].values, shared[1].values
    octets = [o for o, v in first.items() if isinstance(v.value, bytes)]
    assert octets and all(first[o] is second[o] for o in octets)
    with_memo, without = BaseBook(), BaseBook()
    for a, b in zip(shared, plain):
        assert with_memo.split(a.meter_id, a.values, a.fields()) == without.split(
            b.meter_id, b.values, b.fields()
        )
