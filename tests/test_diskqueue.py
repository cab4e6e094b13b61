"""The journal: order, acknowledgement, recovery, damage, bounds, disk full, kill -9."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from smallfs import fill, small_filesystem

from smlogger.diskqueue import (
    HEADER_SIZE,
    MAGIC,
    DiskQueue,
    JournalFullError,
    QueueLockedError,
    encode_record,
)


def payloads(queue: DiskQueue, n: int = 10_000) -> list[bytes]:
    return [e.payload for e in queue.peek(n)]


def test_fifo_peek_repeats_until_ack(tmp_path: Path) -> None:
    with DiskQueue(tmp_path) as queue:
        for i in range(5):
            queue.put(f"item {i}".encode())
        assert len(queue) == 5
        first = queue.peek(3)
        assert [e.payload for e in first] == [b"item 0", b"item 1", b"item 2"]
        # not acknowledged: delivered again
        assert [e.payload for e in queue.peek(3)] == [b"item 0", b"item 1", b"item 2"]
        queue.ack(first[1])
        assert len(queue) == 3
        assert payloads(queue) == [b"item 2", b"item 3", b"item 4"]
        # a stale acknowledgement changes nothing
        queue.ack(first[0])
        assert len(queue) == 3


def test_reopen_keeps_unacknowledged_and_forgets_acknowledged(tmp_path: Path) -> None:
    with DiskQueue(tmp_path) as queue:
        queue.put_many([b"a", b"b", b"c", b"d"])
        queue.ack(queue.peek(2)[-1])
    with DiskQueue(tmp_path) as queue:
        assert len(queue) == 2
        assert payloads(queue) == [b"c", b"d"]
        queue.put(b"e")
        assert payloads(queue) == [b"c", b"d", b"e"]


def test_segments_rotate_and_are_deleted_once_consumed(tmp_path: Path) -> None:
    with DiskQueue(tmp_path, segment_bytes=200) as queue:
        items = [f"record-{i:04d}".encode() * 3 for i in range(100)]
        for item in items:
            queue.put(item)
        segments = sorted(tmp_path.glob("seg-*.j"))
        assert len(segments) > 10
        received = []
        while len(queue):
            batch = queue.peek(7)
            received += [e.payload for e in batch]
            queue.ack(batch[-1])
        assert received == items
        # finished segments go when the acknowledged position is persisted
        assert len(list(tmp_path.glob("seg-*.j"))) > 10
        queue.persist()
        assert len(list(tmp_path.glob("seg-*.j"))) == 1
    with DiskQueue(tmp_path, segment_bytes=200) as queue:
        assert len(queue) == 0
        assert queue.peek(10) == []


def test_large_records_and_binary_payloads(tmp_path: Path) -> None:
    big = os.urandom(300_000)
    with DiskQueue(tmp_path) as queue:
        queue.put_many([b"", big, b"\x00\n\xff"])
        assert payloads(queue) == [b"", big, b"\x00\n\xff"]
    with DiskQueue(tmp_path) as queue:
        assert payloads(queue) == [b"", big, b"\x00\n\xff"]


def test_torn_tail_is_cut_at_open(tmp_path: Path) -> None:
    with DiskQueue(tmp_path) as queue:
        queue.put_many([b"one", b"two"])
    segment = sorted(tmp_path.glob("seg-*.j"))[-1]
    whole = segment.read_bytes()
    # a third record whose write was cut off by a power loss
    torn = encode_record(b"three-three-three", 1.0)[:-5]
    segment.write_bytes(whole + torn)
    with DiskQueue(tmp_path) as queue:
        assert payloads(queue) == [b"one", b"two"]
        assert segment.read_bytes() == whole
        queue.put(b"four")
        assert payloads(queue) == [b"one", b"two", b"four"]


def test_corrupt_older_segment_is_skipped_and_counted(tmp_path: Path) -> None:
    with DiskQueue(tmp_path, segment_bytes=60) as queue:
        for i in range(6):
            queue.put(f"entry-{i}-padding-padding".encode())
    segments = sorted(tmp_path.glob("seg-*.j"))
    assert len(segments) >= 3
    data = bytearray(segments[0].read_bytes())
    data[-3] ^= 0xFF  # flip a payload byte of its last record
    segments[0].write_bytes(bytes(data))
    with DiskQueue(tmp_path, segment_bytes=60) as queue:
        assert queue.corrupt == 1
        got = payloads(queue)
        assert got[-1] == b"entry-5-padding-padding"
        assert len(got) == 5 and b"entry-1-padding-padding" not in got


def test_age_bound_drops_oldest_with_a_logged_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1_000_000.0]
    with DiskQueue(tmp_path, max_age_s=3600, clock=lambda: now[0]) as queue:
        for i in range(10):
            queue.put(f"item {i}".encode())
            now[0] += 1
        assert queue.prune() == 0
        now[0] += 3600 - 10 + 4.5  # items 0..4 are now older than an hour
        with caplog.at_level(logging.WARNING, logger="smlogger.diskqueue"):
            dropped = queue.prune()
        assert dropped == 5
        assert queue.dropped == 5
        assert payloads(queue)[0] == b"item 5"
        assert len(queue) == 5
        assert any("dropped 5 oldest entries" in r.getMessage() for r in caplog.records)
    # the drop is committed: a reopen does not bring them back
    with DiskQueue(tmp_path, max_age_s=3600, clock=lambda: now[0]) as queue:
        assert payloads(queue) == [f"item {i}".encode() for i in range(5, 10)]


def test_age_bound_applies_while_producing(tmp_path: Path) -> None:
    # a consumer that never comes back (database down for good): put() itself enforces it
    now = [0.0]
    with DiskQueue(tmp_path, max_age_s=7 * 86400, clock=lambda: now[0]) as queue:
        for _hour in range(10 * 24):
            queue.put(b"x" * 50)
            now[0] += 3600
        assert len(queue) <= 7 * 24 + 1
        oldest = queue.oldest_timestamp()
        assert oldest is not None and now[0] - oldest <= 7 * 86400 + 3600


def test_size_bound(tmp_path: Path) -> None:
    with DiskQueue(tmp_path, max_bytes=2000, max_age_s=None) as queue:
        for i in range(100):
            queue.put(f"{i:05d}".encode() * 10)
        queue.prune()
        assert queue.pending_bytes <= 2000
        got = payloads(queue)
        assert got[-1] == b"00099" * 10
        assert got == [f"{i:05d}".encode() * 10 for i in range(100 - len(got), 100)]


def test_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    with DiskQueue(tmp_path), pytest.raises(QueueLockedError):
        DiskQueue(tmp_path)
    DiskQueue(tmp_path).close()  # free again after close


def test_concurrent_producer_and_consumer_keep_order(tmp_path: Path) -> None:
    total = 5000
    received: list[int] = []
    with DiskQueue(tmp_path, segment_bytes=4096, sync_interval=1.0) as queue:

        def produce() -> None:
            for i in range(total):
                queue.put(str(i).encode())

        producer = threading.Thread(target=produce)
        producer.start()
        deadline = time.monotonic() + 60
        while len(received) < total and time.monotonic() < deadline:
            if not queue.wait(timeout=0.5):
                continue
            batch = queue.peek(64)
            received += [int(e.payload) for e in batch]
            queue.ack(batch[-1])
        producer.join()
    assert received == list(range(total))


# ---- kill -9 ----------------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import os, sys, threading, time
    from pathlib import Path
    from smlogger.diskqueue import DiskQueue

    directory, log_path, start, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    queue = DiskQueue(Path(directory), segment_bytes=2048, persist_interval=0)
    log = open(log_path, "a", buffering=1)

    def consume():
        while True:
            if not queue.wait(timeout=0.2):
                if producer_done.is_set() and len(queue) == 0:
                    return
                continue
            batch = queue.peek(5)
            for entry in batch:
                log.write(f"got {entry.payload.decode()}\\n")
            queue.ack(batch[-1])
            log.write(f"ack {batch[-1].payload.decode()}\\n")

    producer_done = threading.Event()
    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(start, stop):
        queue.put(str(i).encode())
        print(i, flush=True)  # acknowledged to the caller
        time.sleep(0.0005)
    producer_done.set()
    consumer.join()
    queue.close()
    print("done", flush=True)
    """
)


def _run_worker(directory: Path, log_path: Path, start: int, stop: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(directory), str(log_path), str(start), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )


@pytest.mark.slow  # four worker processes killed with SIGKILL mid-stream
def test_kill_9_loses_and_repeats_nothing_acknowledged(tmp_path: Path) -> None:
    directory = tmp_path / "queue"
    log_path = tmp_path / "consumer.log"
    next_item = 0
    cycles = 4
    per_cycle = 4000
    for cycle in range(cycles):
        proc = _run_worker(directory, log_path, next_item, next_item + per_cycle)
        assert proc.stdout is not None
        acknowledged = -1
        # let it run into the middle of the stream, then kill it hard
        target = next_item + per_cycle // (2 + cycle % 2)
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= target:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # A loaded machine lets the child run on between our read and the kill: it acknowledged
        # (printed) more, and may have put one more item that it had no time to print.
        rest = proc.stdout.read()
        proc.stdout.close()  # ours to close: the child is gone
        assert proc.returncode == -signal.SIGKILL
        whole_lines = rest.split("\n")[:-1]  # a line cut off by the kill is not acknowledged
        # (numbers only: the child may have got as far as its last words)
        printed = [int(line) for line in whole_lines if line.strip().isdigit()]
        acknowledged = max([acknowledged, *printed])

        # what the consumer logged up to the kill
        before = log_path.read_text().splitlines()
        acked_lines = [int(x.split()[1]) for x in before if x.startswith("ack ")]
        last_ack = acked_lines[-1] if acked_lines else -1
        got_before = [int(x.split()[1]) for x in before if x.startswith("got ")]
        last_got = got_before[-1] if got_before else -1

        # restart with nothing more to produce: everything queued must come out
        proc = _run_worker(directory, log_path, acknowledged + 1, acknowledged + 1)
        out, _ = proc.communicate(timeout=60)
        assert out.strip().endswith("done")
        after = log_path.read_text().splitlines()[len(before) :]
        got_after = [int(x.split()[1]) for x in after if x.startswith("got ")]
        if got_after:
            # redelivery only of what was delivered but not acknowledged before the kill
            assert last_ack + 1 <= got_after[0] <= last_got + 1, (cycle, last_ack, got_after[:3])
        # nothing comes out that was not put: at most the one item put but not yet printed
        last_delivered = max(got_after, default=last_got)
        assert last_delivered <= acknowledged + 1, (cycle, acknowledged, last_delivered)
        # that item is in the journal (delivered) or lost with the kill (not acknowledged, so
        # the producer's caller would hand it again): either way the next run starts after it
        next_item = max(acknowledged, last_delivered) + 1

    lines = log_path.read_text().splitlines()
    delivered = [int(x.split()[1]) for x in lines if x.startswith("got ")]
    # every acknowledged put was delivered, in order, nothing beyond what was put
    assert sorted(set(delivered)) == list(range(next_item))
    # duplicates only as bounded re-deliveries at the kills (at least once, never reordered)
    assert len(delivered) - len(set(delivered)) <= cycles * 5
    first_seen: dict[int, int] = {}
    for position, item in enumerate(delivered):
        first_seen.setdefault(item, position)
    assert [item for item, _ in sorted(first_seen.items(), key=lambda kv: kv[1])] == list(
        range(next_item)
    )


def test_sync_policy(tmp_path: Path) -> None:
    now = [100.0]
    with DiskQueue(tmp_path / "every", sync_interval=0) as queue:
        for i in range(5):
            queue.put(b"x%d" % i)
        assert queue.fsyncs == 5  # 0 = every append is fsync'ed before put returns
    with DiskQueue(tmp_path / "window", sync_interval=30, clock=lambda: now[0]) as queue:
        queue.put(b"a")
        now[0] += 10
        assert not queue.sync_due()  # not due yet
        queue.put(b"b")
        now[0] += 25
        assert queue.sync_due()  # waited 35 s > 30 s: fsync'ed now
        assert not queue.sync_due() and queue.fsyncs == 1
        # consumed *and* the position persisted: nothing left whose durability matters
        queue.put(b"c")
        queue.ack(queue.peek(3)[-1])
        queue.persist()
        now[0] += 60
        assert not queue.sync_due() and queue.fsyncs == 1


def test_ack_is_kept_in_memory_and_persisted_rarely(tmp_path: Path) -> None:
    now = [0.0]
    with DiskQueue(tmp_path, persist_interval=300, clock=lambda: now[0]) as queue:
        queue.put_many([b"%d" % i for i in range(10)])
        queue.ack(queue.peek(4)[-1])
        assert len(queue) == 6 and payloads(queue)[0] == b"4"
        ack_file = (tmp_path / "acked").read_bytes()
        assert ack_file == b""  # not written yet: every rewrite costs the SD card a page
        now[0] += 301
        queue.ack(queue.peek(1)[-1])  # the interval is over: persisted with this ack
        persisted = (tmp_path / "acked").read_bytes()
        assert len(persisted) == 20
        mark = queue.acked_position()
        queue.ack(queue.peek(2)[-1])
        # a consumer that made its writes durable up to `mark` persists exactly that
        queue.persist(mark)
        assert (tmp_path / "acked").read_bytes() == persisted
        # leave without close (as a kill would): the persisted position counts
        os.close(queue._lock_fd)  # release the flock like a dying process
        queue._closed = True
    with DiskQueue(tmp_path) as queue:
        assert payloads(queue) == [b"%d" % i for i in range(5, 10)]


def test_files_and_directory_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "journal"
    with DiskQueue(directory) as queue:
        queue.put(b"secret meter data")
    assert directory.stat().st_mode & 0o777 == 0o700
    for path in directory.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_torn_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    """A power cut can stop an append after any byte: reopening keeps every complete record
    and appends again right after the last one."""
    source = tmp_path / "source"
    with DiskQueue(source, max_age_s=None) as queue:
        queue.put_many([b"first", b"second" * 7, b"third" * 3], [1.0, 2.0, 3.0])
    segment = sorted(source.glob("seg-*.j"))[-1]
    whole = segment.read_bytes()
    last = encode_record(b"third" * 3, 3.0)
    assert whole.endswith(last)
    keep = len(whole) - len(last)
    for cut in range(keep, len(whole)):
        case = tmp_path / f"cut-{cut}"
        case.mkdir()
        (case / segment.name).write_bytes(whole[:cut])
        with DiskQueue(case, max_age_s=None) as queue:
            assert payloads(queue) == [b"first", b"second" * 7], cut
            assert queue.torn_bytes == cut - keep
            queue.put(b"after", 4.0)
        with DiskQueue(case, max_age_s=None) as queue:
            assert payloads(queue) == [b"first", b"second" * 7, b"after"], cut
            assert queue.corrupt == 0


def test_corrupt_record_in_the_middle_is_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = [f"reading {i:03d}".encode() * 4 for i in range(20)]
    with DiskQueue(tmp_path) as queue:
        queue.put_many(items)
    segment = sorted(tmp_path.glob("seg-*.j"))[-1]
    data = bytearray(segment.read_bytes())
    size = HEADER_SIZE + len(items[0])
    data[7 * size + HEADER_SIZE + 3] ^= 0x55  # a payload byte of record 7
    data[12 * size + 1] ^= 0xFF  # the magic of record 12
    data[15 * size + 3] = 0xFF  # the length of record 15: claims far more than there is
    segment.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="smlogger.diskqueue"):
        queue = DiskQueue(tmp_path)
    with queue:
        expected = [item for i, item in enumerate(items) if i not in (7, 12, 15)]
        assert payloads(queue) == expected
        assert len(queue) == 17
        assert queue.corrupt == 3 and queue.skipped_bytes == 3 * size
        status = queue.status()
        assert status["corrupt"] == 3 and status["skipped_bytes"] == 3 * size
        # the last good record is not taken for a torn tail
        assert queue.torn_bytes == 0
        queue.ack(queue.peek(100)[-1])
        assert len(queue) == 0
    skipped = [r.getMessage() for r in caplog.records if "damaged bytes" in r.getMessage()]
    assert len(skipped) == 3 and f"{size} damaged bytes at offset {7 * size}" in skipped[0]


def test_damage_found_while_running_is_skipped_too(tmp_path: Path) -> None:
    with DiskQueue(tmp_path) as queue:
        queue.put_many([b"a" * 30, b"b" * 30, b"c" * 30])
        segment = sorted(tmp_path.glob("seg-*.j"))[-1]
        with open(segment, "r+b") as fh:
            fh.seek(HEADER_SIZE + 30 + HEADER_SIZE + 5)
            fh.write(b"Z")  # bit rot under a running process
        got = queue.peek(10)
        assert [e.payload for e in got] == [b"a" * 30, b"c" * 30]
        assert queue.corrupt == 1
        queue.ack(got[-1])
        assert len(queue) == 0  # the hidden record does not keep the depth up
        queue.put(b"d")
        assert payloads(queue) == [b"d"]


def test_resynchronises_on_a_magic_inside_garbage(tmp_path: Path) -> None:
    good = encode_record(b"kept", 5.0)
    garbage = b"\x00" * 7 + MAGIC + b"\xff\xff\x00\x00" + b"\x01" * 20 + MAGIC[:1]
    directory = tmp_path / "j"
    with DiskQueue(directory, max_age_s=None) as queue:
        queue.put(b"before", 1.0)
    segment = sorted(directory.glob("seg-*.j"))[-1]
    segment.write_bytes(segment.read_bytes() + garbage + good)
    with DiskQueue(directory, max_age_s=None) as queue:
        assert payloads(queue) == [b"before", b"kept"]
        assert queue.skipped_bytes == len(garbage)


def test_previous_queue_format_is_taken_over(tmp_path: Path) -> None:
    import struct
    import zlib

    def old_record(payload: bytes, stamp: float) -> bytes:
        ts = struct.pack("<d", stamp)
        crc = zlib.crc32(payload, zlib.crc32(ts)) & 0xFFFFFFFF
        return struct.pack("<IId", len(payload), crc, stamp) + payload

    records = b"".join(old_record(b"old %d" % i, 1000.0 + i) for i in range(5))
    (tmp_path / "seg-000000000001.q").write_bytes(records)
    first_two = len(old_record(b"old 0", 0)) * 2
    (tmp_path / "committed").write_text(f"1 {first_two}\n")
    with DiskQueue(tmp_path, max_age_s=None) as queue:
        assert queue.migrated == 3
        entries = queue.peek(10)
        assert [e.payload for e in entries] == [b"old 2", b"old 3", b"old 4"]
        assert [e.timestamp for e in entries] == [1002.0, 1003.0, 1004.0]
    assert not list(tmp_path.glob("*.q")) and not (tmp_path / "committed").exists()


# ---- disk full (a real, tiny filesystem) ------------------------------------------------------


def test_disk_full_is_a_state_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_filesystem(tmp_path / "fs", 256) as mount:
        directory = mount / "journal"
        caplog.set_level(logging.INFO, logger="smlogger.diskqueue")
        queue = DiskQueue(directory, max_memory_bytes=20_000)
        queue.put_many([b"on disk %d" % i for i in range(3)])
        filler = fill(mount)
        segment = sorted(directory.glob("seg-*.j"))[-1]
        size_before = segment.stat().st_size
        held = [(b"held %03d " % i) * 8 for i in range(100)]
        sizes = []
        for item in held:
            queue.put(item)  # refused by the disk: kept in memory, not an error
            sizes.append(segment.stat().st_size)
        # (the file's last page was allocated before the disk filled up: it takes a few)
        in_memory = queue.in_memory
        assert 50 <= in_memory < 100
        on_disk = 100 - in_memory
        assert queue.state == f"disk full on {directory}"
        assert queue.status()["state"] == f"disk full on {directory}"
        assert queue.status()["in_memory"] == in_memory
        # no half record left behind: the file did not grow once the disk refused
        good_end = size_before + sum(HEADER_SIZE + len(h) for h in held[:on_disk])
        assert sizes[on_disk:] == [good_end] * in_memory
        full_lines = [r for r in caplog.records if "disk full on" in r.getMessage()]
        assert len(full_lines) == 1  # once per change of state, not once per retry
        # the consumer still gets everything, in order, from disk and memory
        got = queue.peek(1000)
        assert [e.payload for e in got] == [b"on disk %d" % i for i in range(3)] + held
        ack_at = on_disk + 5  # all of the disk and five from memory
        queue.ack(got[ack_at + 2])
        assert len(queue) == 100 - ack_at and queue.in_memory == in_memory - 5
        # the memory reserve is bounded: beyond it, put pushes back instead of dropping
        with pytest.raises(JournalFullError):
            for i in range(1000):
                queue.put(b"overflow %04d " % i * 8)
        accepted = [(b"overflow %04d " % j) * 8 for j in range(i)]
        assert not queue.sync_due()
        # space comes back: the next retry writes what memory held, no restart needed
        filler.unlink()
        queue.sync_due()
        assert queue.state is None and queue.in_memory == 0
        assert any("writable again" in r.getMessage() for r in caplog.records)
        queue.put(b"after")
        expected = held[ack_at:] + accepted + [b"after"]
        assert payloads(queue) == expected
        # kill -9 now: the records are in the kernel's hands (a restart keeps them)
        queue.persist()
        os.close(queue._lock_fd)
        queue._closed = True
        with DiskQueue(directory) as reopened:
            assert payloads(reopened) == expected
            assert reopened.corrupt == 0 and reopened.torn_bytes == 0


def test_acknowledged_in_memory_are_never_written(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs", 128) as mount:
        directory = mount / "journal"
        with DiskQueue(directory) as queue:
            filler = fill(mount)
            queue.put_many([b"x" * 100 for _ in range(10)])
            assert queue.in_memory == 10
            queue.ack(queue.peek(10)[-1])  # a remote database took them
            assert queue.in_memory == 0 and len(queue) == 0
            filler.unlink()
            assert not queue.sync_due()
            assert sum(p.stat().st_size for p in directory.glob("seg-*.j")) == 0
        with DiskQueue(directory) as queue:
            assert len(queue) == 0


def test_put_without_hold_takes_nothing_while_the_disk_refuses(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs", 64) as mount, DiskQueue(mount / "journal") as queue:
        queue.put(b"first")
        filler = fill(mount)
        with pytest.raises(JournalFullError):
            for _ in range(100):
                queue.put_many([b"y" * 200], hold=False)
        depth = len(queue)
        assert queue.in_memory == 0 and payloads(queue)[0] == b"first"
        filler.unlink()
        queue.put_many([b"later"], hold=False)
        assert len(queue) == depth + 1 and payloads(queue)[-1] == b"later"


def test_put_without_hold_writes_once(tmp_path: Path) -> None:
    with DiskQueue(tmp_path) as queue:
        queue.put_many([b"a", b"b"], hold=False)
        assert len(queue) == 2 and payloads(queue) == [b"a", b"b"]
    with DiskQueue(tmp_path) as queue:
        assert payloads(queue) == [b"a", b"b"]
