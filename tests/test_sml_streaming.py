"""Streaming decoder: the same frames whatever the chunking, absolute offsets,
bounded memory, and the resync rules (too long, truncated, garbage, stray 1b)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from conftest import recording_files

from smlogger import sml

START = b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01"
FILES = recording_files()
SEEDS = (1, 2, 3, 4, 5, 6)


def feed_all(
    chunks: Iterable[bytes], *, crc: sml.CrcName = "auto"
) -> tuple[list[sml.Frame], sml.DecoderStats]:
    decoder = sml.Decoder(crc)
    frames: list[sml.Frame] = []
    for chunk in chunks:
        frames.extend(decoder.feed(chunk))
    frames.extend(decoder.finish())
    return frames, decoder.stats


def fixed_chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def random_chunks(data: bytes, seed: int, max_size: int = 600) -> Iterator[bytes]:
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.randint(1, max_size)
        yield data[i : i + n]
        i += n


@pytest.fixture(scope="module")
def stream() -> bytes:
    """All recordings back to back (the benchmark stream, once)."""
    return b"".join(p.read_bytes() for p in FILES)


def close_frame(tid: bytes = b"\x03") -> bytes:
    return sml.encode([{"type": "CloseResponse", "transaction_id": tid, "body": {}}])


def list_frame(octets: bytes, *, tid: bytes = b"\x02") -> bytes:
    return sml.encode(
        [
            {
                "type": "GetListResponse",
                "transaction_id": tid,
                "body": {
                    "server_id": b"\x0a\x01TST\x00\x00\x00\x01",
                    "values": [{"obis": "1-0:96.1.0*255", "raw": octets}],
                },
            }
        ]
    )


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_chunk_invariance_per_recording(path: Path) -> None:
    data = path.read_bytes()
    whole = sml.decode(data)
    reference, ref_stats = feed_all([data])
    assert reference == whole
    variants = {
        "bytewise": feed_all(data[i : i + 1] for i in range(len(data))),
        "4096": feed_all(fixed_chunks(data, 4096)),
        "iter_frames": (list(sml.iter_frames(fixed_chunks(data, 7))), ref_stats),
    }
    for seed in SEEDS:
        variants[f"seed{seed}"] = feed_all(random_chunks(data, seed))
    for name, (frames, stats) in variants.items():
        assert frames == whole, name
        assert stats == ref_stats, name


def test_chunk_invariance_whole_stream(stream: bytes) -> None:
    whole = sml.decode(stream)
    reference, ref_stats = feed_all([stream])
    assert reference == whole
    assert feed_all(stream[i : i + 1] for i in range(len(stream))) == (whole, ref_stats)
    assert feed_all(fixed_chunks(stream, 4096)) == (whole, ref_stats)
    for seed in SEEDS:
        assert feed_all(random_chunks(stream, seed)) == (whole, ref_stats), seed
    # Empty chunks are harmless.
    assert feed_all(c for chunk in fixed_chunks(stream, 1000) for c in (b"", chunk)) == (
        whole,
        ref_stats,
    )


def test_every_split_point_of_a_frame() -> None:
    """Two chunks split at each byte position, also inside escapes and the end sequence."""
    data = b"\x00\x1b" + list_frame(b"\x1b" * 9 + b"ab\x1b\x1b\x1b\x1b") + close_frame() + b"\x1b"
    whole = sml.decode(data)
    assert [f["ok"] for f in whole] == [True, True]
    for cut in range(len(data) + 1):
        assert feed_all([data[:cut], data[cut:]])[0] == whole, cut


def test_offsets_are_absolute_stream_positions(stream: bytes) -> None:
    frames = sml.decode(stream)
    for f in frames:
        assert stream[f["offset"] : f["offset"] + 8] == START, f
    base = 0
    expected: list[tuple[int, int]] = []
    for path in FILES:
        data = path.read_bytes()
        expected.extend((base + f["offset"], f["length"]) for f in sml.decode(data) if f["ok"])
        base += len(data)
    assert [(f["offset"], f["length"]) for f in frames if f["ok"]] == expected
    assert len(expected) == 227


def test_stats_account_for_every_byte(stream: bytes) -> None:
    frames, stats = feed_all(random_chunks(stream, 99))
    assert stats["bytes"] == len(stream)
    assert stats["buffered"] == 0
    assert sum(f["length"] for f in frames) + stats["discarded_bytes"] == len(stream)
    assert stats["frames_ok"] == sum(1 for f in frames if f["ok"]) == 227
    # Per file there are 5 CRC errors and 28 truncated frames; back to back, a
    # partial frame at the end of one dump can run into the end sequence of the
    # partial frame that starts the next one, so some truncations become CRC errors.
    assert stats["crc_errors"] + stats["truncated"] == 5 + 28
    assert stats["crc_errors"] == sum(1 for f in frames if f["error"] == "crc")
    assert stats["truncated"] == sum(1 for f in frames if f["error"] == "truncated")
    assert stats["crc_x25"] == 227
    assert stats["crc_kermit"] == 0


def rss_bytes() -> int:
    """Resident set size from /proc (pages -> bytes)."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        resident = int(fh.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE")


def test_streaming_100_mb_keeps_memory_bounded(stream: bytes) -> None:
    chunk = 64 * 1024
    total = 100 * 1000 * 1000
    # A window into the stream doubled, so any start position gives a full chunk
    # without building 100 MB of input in memory.
    ring = stream * 2
    decoder = sml.Decoder()

    def feed_bytes(n: int, pos: int) -> int:
        while n > 0:
            start = pos % len(stream)
            decoder.feed(ring[start : start + chunk])
            assert decoder.stats["buffered"] < 65536 + chunk
            pos += chunk
            n -= chunk
        return pos

    pos = feed_bytes(4 * 1000 * 1000, 0)  # warm-up: caches and allocator arenas settle
    before = rss_bytes()
    pos = feed_bytes(total, pos)
    after = rss_bytes()
    decoder.finish()
    stats = decoder.stats
    assert stats["bytes"] == pos
    assert stats["frames_ok"] > 260_000
    growth = after - before
    assert growth < 50 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB"


def test_too_long_frame_is_dropped_and_decoding_goes_on() -> None:
    small = close_frame()
    big = list_frame(b"x" * 2000)
    frames, _ = feed_all([big + small], crc="auto")
    assert [f["ok"] for f in frames] == [True, True]  # 2 KB is fine by default

    decoder = sml.Decoder(max_frame=1024)
    out = decoder.feed(big + small) + decoder.finish()
    assert [(f["error"], f["offset"]) for f in out] == [("too_long", 0), (None, len(big))]
    assert out[0]["messages"] == []
    assert "1024" in (out[0]["detail"] or "")
    assert decoder.stats["too_long"] == 1
    assert decoder.stats["frames_ok"] == 1

    # The default limit (64 KiB) applies to decode() too.
    huge = list_frame(b"y" * 70_000)
    out = sml.decode(huge + small)
    assert [f["error"] for f in out] == ["too_long", None]
    assert out[0]["length"] <= sml.DEFAULT_MAX_FRAME == 65536
    assert out[1]["offset"] == len(huge)
    assert feed_all(fixed_chunks(huge + small, 333))[0] == out


def test_finish_flushes_partial_frame_as_truncated() -> None:
    frame = close_frame()
    decoder = sml.Decoder()
    assert decoder.feed(b"\xaa" * 5 + frame[:20]) == []
    assert decoder.stats["buffered"] > 0
    (item,) = decoder.finish()
    assert item["ok"] is False
    assert item["error"] == "truncated"
    assert item["offset"] == 5
    assert item["length"] == 20
    assert item["messages"] == []
    assert item["detail"]
    assert decoder.stats["truncated"] == 1
    assert decoder.stats["buffered"] == 0
    assert decoder.finish() == []


def test_new_start_inside_a_frame_truncates_the_old_one() -> None:
    first = list_frame(b"abc")
    second = close_frame()
    data = first[:30] + second
    out = sml.decode(data)
    assert [(f["error"], f["offset"], f["length"]) for f in out] == [
        ("truncated", 0, 30),
        (None, 30, len(second)),
    ]


def test_garbage_only_gives_no_frames() -> None:
    rng = random.Random(7)
    garbage = bytes(rng.randrange(256) for _ in range(50_000)).replace(b"\x1b\x1b", b"\x1b\x00")
    decoder = sml.Decoder()
    frames = decoder.feed(garbage) + decoder.finish()
    assert frames == []
    stats = decoder.stats
    assert stats["discarded_bytes"] == stats["bytes"] == len(garbage)
    assert stats["frames_ok"] == 0
    # Garbage around a frame is counted, the frame still decodes.
    frame = close_frame()
    out, stats = feed_all([b"junk" * 10, frame, b"\x1b\x1b\x00tail"])
    assert [(f["ok"], f["offset"]) for f in out] == [(True, 40)]
    assert stats["discarded_bytes"] == 40 + 7


@pytest.mark.parametrize(
    "prefix", [b"\x1b", b"\x1b\x1b\x1b", b"\x1b" * 5, b"\x1b" * 11, b"\x00\x1b"]
)
def test_start_found_right_after_stray_1b(prefix: bytes) -> None:
    frame = close_frame()
    data = prefix + frame
    out = sml.decode(data)
    assert [(f["ok"], f["offset"], f["length"]) for f in out] == [(True, len(prefix), len(frame))]
    assert feed_all(data[i : i + 1] for i in range(len(data)))[0] == out


def test_start_after_previous_frame_ending_in_1b() -> None:
    """A frame whose CRC ends in 1b directly followed by the next frame."""
    for n in range(400):
        frame = close_frame(n.to_bytes(2, "big"))
        if frame[-1] == 0x1B:
            break
    else:
        pytest.fail("no transaction id gives a CRC ending in 1b")
    data = frame + close_frame(b"\x99")
    out = sml.decode(data)
    assert [(f["ok"], f["offset"]) for f in out] == [(True, 0), (True, len(frame))]
