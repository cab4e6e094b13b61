"""source -> decoder -> readings -> live state + sinks.

One thread per meter reads its source, feeds the decoder and turns frames into readings; each
sink runs in its own thread behind its own queue, so a slow or dead sink never blocks decoding or
the other sinks. The live state sees every reading; sinks see every reading or, with
`store_interval`, one aggregate (mean/min/max) per interval from `smlogger.aggregate`. A sink
with `every_reading = True` (MQTT: live values at its own rate) always gets every reading.
"""

from __future__ import annotations

import bisect
import logging
import operator
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional, Protocol, cast

from smlogger.aggregate import Aggregator
from smlogger.capture import CaptureWriter
from smlogger.diagnose import Diagnosis, Observation, classify, open_failure
from smlogger.linkwatch import LinkWatch
from smlogger.live import LiveState
from smlogger.logutil import StateLog, describe, distinct
from smlogger.reading import (
    ENERGY_FIELDS,
    ENERGY_OBIS,
    Reading,
    Value,
    readings_from_frame,
    readings_from_lists,
)
from smlogger.sources import Chunk, Source
from smlogger.states import LinkState

if TYPE_CHECKING:
    from smlogger import sml

log = logging.getLogger(__name__)

DEFAULT_SINK_QUEUE = 100_000
# a sink worker hands a sink with `write_many` up to this many queued readings at once
WRITE_BATCH = 2000
# a bulk source (a replay at --speed max) hands readings on in batches of this many, or at
# least this often
BULK_BATCH = 1000
BULK_EVERY_S = 0.25
# a sink worker with nothing to write still flushes this often (see SinkWorker._run)
IDLE_FLUSH_S = 5.0
STATUS_INTERVAL_S = 1.0
# decoder stats and the diagnosis of a source reach the live state this often, frames or not
PUBLISH_INTERVAL_S = 2.0
# findings about a port that does not open: the source's own log line already said why
_OPEN_FAILURES = ("missing", "permission", "busy", "error")
CLOSE_GRACE_S = 5.0


class Sink(Protocol):
    """What the pipeline feeds. A sink may also set `every_reading = True` to bypass
    store_interval aggregation (it then applies its own rate rules), and may have a
    `write_many(readings) -> int` for batches: it takes a leading part of the list (all of it
    when it can) and returns how many it took, or raises having taken none; the SinkWorker
    hands what it did not take to `write` one by one."""

    name: str

    def write(self, reading: Reading) -> None:
        """Take one reading; raising makes the SinkWorker retry it with backoff."""

    def flush(self) -> None:
        """Push buffered readings out; called about once a second after writes."""

    def close(self) -> None:
        """Flush and release; called once, from the sink's own thread."""

    def status(self) -> dict[str, object]:
        """Counters and state for /api/status, /metrics and /healthz."""


# ---- plausibility ----------------------------------------------------------------------------


BURST_SLACK_S = 10.0


@dataclass
class _Baseline:
    time: datetime
    energies: dict[str, float]
    resolution: dict[str, float]


_TARIFF_OF = {"e_sum": "e_t1", "e_export": "e_export_t1"}
# (field, its register, the register a total made from tariffs takes its scaler from)
_ENERGY_REGISTERS = tuple(
    (name, ENERGY_OBIS[name], ENERGY_OBIS[_TARIFF_OF[name]] if name in _TARIFF_OF else None)
    for name in ENERGY_FIELDS
)
_pick_energies = operator.itemgetter(*ENERGY_FIELDS)
_POWER_FIELDS = ("p_sum", "p_L1", "p_L2", "p_L3")
_pick_powers = operator.itemgetter(*_POWER_FIELDS)


def _energies(reading: Reading) -> tuple[dict[str, float], dict[str, float]]:
    energies: dict[str, float] = {}
    resolution: dict[str, float] = {}
    values = reading.values
    # (runs for every reading: the fields are read in one C call, most are None)
    for (name, obis, tariff), value in zip(_ENERGY_REGISTERS, _pick_energies(reading.__dict__)):
        if value is None:
            continue
        energies[name] = value
        entry = values.get(obis)
        if entry is None and tariff is not None:
            entry = values.get(tariff)  # a total made from the tariff registers
        scaler = entry.scaler if entry is not None and entry.scaler is not None else 0
        # one step of the register in kWh (PIN-locked meters count whole kWh)
        resolution[name] = 10.0**scaler / 1000.0
    return energies, resolution


class PlausibilityCheck:
    """Energy registers never go backwards nor jump faster than `max_power_w` allows.

    A corrupted frame that passed its CRCs must not spike the data, so such readings are
    rejected. If a meter keeps sending a consistent new level (meter exchanged, register reset)
    for `rebase_after` readings in a row, that level becomes the new baseline.
    """

    def __init__(self, max_power_w: float = 100_000.0, rebase_after: int = 10) -> None:
        self.max_power_w = max_power_w
        self.rebase_after = rebase_after
        self._baseline: dict[str, _Baseline] = {}
        self._candidate: dict[str, tuple[_Baseline, int]] = {}
        self.rejected = 0
        self.last_reason: Optional[str] = None

    def _compare(self, base: _Baseline, reading: Reading, energies: dict[str, float]) -> str | None:
        elapsed_h = max(0.0, (reading.time - base.time).total_seconds()) / 3600.0
        # Readings carry the receive time: a USB head, a pty or a TCP bridge can hand over
        # frames that the meter sent seconds apart in one burst (0 s apart here). Granting
        # the energy of BURST_SLACK_S more keeps such bursts while a corrupted register
        # (a jump of orders of magnitude) is still caught.
        allowed = self.max_power_w / 1000.0 * (elapsed_h + BURST_SLACK_S / 3600.0)
        for name, value in energies.items():
            before = base.energies.get(name)
            if before is None:
                continue
            step = base.resolution.get(name, 0.0)
            tolerance = step + 1e-9 * max(1.0, abs(before))
            if value < before - tolerance:
                # as many digits as it takes to show the two differ (%g alone rounds to 6)
                was, now = distinct(before, value)
                return f"{name} went backwards ({was} -> {now} kWh)"
            if value - before > allowed + step + tolerance:
                return (
                    f"{name} jumped {value - before:g} kWh in {elapsed_h * 3600:.0f} s "
                    f"(more than {self.max_power_w / 1000:g} kW)"
                )
        return None

    def check(self, reading: Reading) -> str | None:
        """None if plausible (and remembered), else the reason for rejecting it."""
        for name, power in zip(_POWER_FIELDS, _pick_powers(reading.__dict__)):
            if power is not None and abs(power) > self.max_power_w:
                return self._reject(reading, f"{name} {power:g} W beyond {self.max_power_w:g} W")
        energies, resolution = _energies(reading)
        current = _Baseline(reading.time, energies, resolution)
        base = self._baseline.get(reading.meter_id)
        reason = None if base is None else self._compare(base, reading, energies)
        if reason is None:
            if base is not None and not base.energies.keys() <= energies.keys():
                # keep registers the meter only sends sometimes (a reading with all of
                # them, the usual case, needs no merge: its own values win anyway)
                current.energies = {**base.energies, **energies}
                current.resolution = {**base.resolution, **resolution}
            self._baseline[reading.meter_id] = current
            if self._candidate:
                self._candidate.pop(reading.meter_id, None)
            return None
        candidate = self._candidate.get(reading.meter_id)
        if candidate is not None and self._compare(candidate[0], reading, energies) is None:
            count = candidate[1] + 1
            if count >= self.rebase_after:
                log.warning(
                    "meter %s: energy registers moved to a new level (%s) and stayed there for "
                    "%d readings; accepting it (meter exchanged or register reset?)",
                    reading.meter_id,
                    reason,
                    count,
                )
                self._baseline[reading.meter_id] = current
                del self._candidate[reading.meter_id]
                return None
            self._candidate[reading.meter_id] = (current, count)
        else:
            self._candidate[reading.meter_id] = (current, 1)
        return self._reject(reading, reason)

    def _reject(self, reading: Reading, reason: str) -> str:
        self.rejected += 1
        self.last_reason = f"{reading.time.isoformat()}: {reason}"
        return reason


# ---- sink workers ----------------------------------------------------------------------------


class SinkWorker:
    """Runs one sink in its own thread; retries failed writes with backoff."""

    def __init__(
        self,
        sink: Sink,
        *,
        maxsize: int = DEFAULT_SINK_QUEUE,
        block_when_full: bool = False,
        retry_initial: float = 0.5,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.block_when_full = block_when_full
        self.retry_initial = retry_initial
        # batches of readings as the pipeline handed them over (one reading each from a live
        # source); `_held` counts the readings in them, bounded by `maxsize`
        self._batches: deque[list[Reading]] = deque()
        self._held = 0
        self._maxsize = max(1, maxsize)
        self._closing = threading.Event()
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a batch queued or taken
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: Optional[str] = None
        self._write_log = StateLog(log, f"sink {self.name}", level=logging.ERROR)
        self.closed = threading.Event()

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def put(self, reading: Reading) -> None:
        """Queue a reading (see `put_many`)."""
        self.put_many([reading])

    def put_many(self, readings: list[Reading]) -> None:
        """Queue readings (the list is not changed afterwards, nor here); when full, block
        (finite sources) or drop the oldest and count them."""
        if not readings:
            return
        dropped_before = dropped_after = 0
        with self._changed:
            if self.block_when_full:
                # a batch larger than the whole queue still goes in once the queue is empty
                while (
                    self._held
                    and self._held + len(readings) > self._maxsize
                    and not self._closing.is_set()
                ):
                    self._changed.wait(0.5)
            else:
                over = self._held + len(readings) - self._maxsize
                if over > 0:
                    dropped_before = self.dropped
                    readings = self._drop_oldest(over, readings)
                    dropped_after = self.dropped
            if readings:
                self._batches.append(readings)
                self._held += len(readings)
                self._changed.notify_all()
        if dropped_after > dropped_before and _news(dropped_before, dropped_after):
            log.error("sink %s: queue full, dropped %d readings so far", self.name, dropped_after)

    def _drop_oldest(self, count: int, incoming: list[Reading]) -> list[Reading]:
        """Drop `count` readings, oldest first (queued ones, then the head of `incoming`);
        what is left of `incoming`. Called with the lock held."""
        self.dropped += count
        while count > 0 and self._batches:
            oldest = self._batches[0]
            if len(oldest) <= count:
                self._batches.popleft()
                self._held -= len(oldest)
                count -= len(oldest)
            else:
                self._batches[0] = oldest[count:]
                self._held -= count
                count = 0
        return incoming[count:]

    def _take(self, timeout: float) -> Optional[list[Reading]]:
        """The oldest queued readings, several batches joined up to WRITE_BATCH; None if
        nothing came within `timeout`."""
        with self._changed:
            if not self._batches:
                if not self._closing.is_set():  # (closing: the queue is drained, no wait)
                    self._changed.wait(timeout)
                if not self._batches:
                    return None
            batch = self._batches.popleft()
            if self._batches and len(batch) + len(self._batches[0]) <= WRITE_BATCH:
                # (a new list: the pipeline hands the same list to every sink)
                batch = list(batch)
                while self._batches and len(batch) + len(self._batches[0]) <= WRITE_BATCH:
                    batch += self._batches.popleft()
            self._held -= len(batch)
            self._changed.notify_all()
            return batch

    def _write_batch(self, batch: list[Reading]) -> int:
        """Hand `batch` to the sink (in one `write_many` when it has one); the number of
        readings that could not be written before the deadline."""
        start = 0
        write_many = getattr(self.sink, "write_many", None)
        if write_many is not None and len(batch) > 1:
            try:
                start = max(0, min(len(batch), int(write_many(batch))))
            except Exception as exc:
                with self._lock:
                    self.errors += 1
                    self.last_error = describe(exc)
                # the readings go through `write` one by one below, with its retries
                self._write_log.failed(f"write failed: {self.last_error}; retrying", exc)
            else:
                with self._lock:
                    self.written += start
                    self.last_error = None
                self._write_log.ok("writing again")
        for index in range(start, len(batch)):
            if not self._write(batch[index]):
                return len(batch) - index
        return 0

    def _write(self, reading: Reading) -> bool:
        delay = self.retry_initial
        while True:
            try:
                self.sink.write(reading)
                with self._lock:
                    self.written += 1
                    self.last_error = None  # recovered: /api/status shows no stale error
                self._write_log.ok("writing again")
                return True
            except Exception as exc:
                with self._lock:
                    self.errors += 1
                    self.last_error = describe(exc)
                # one line when writing starts failing, then a count once a minute
                self._write_log.failed(f"write failed: {self.last_error}; retrying", exc)
            if time.monotonic() + delay > self._deadline:
                return False
            if self._closing.wait(delay) and time.monotonic() > self._deadline:
                return False
            delay = min(delay * 2, 10.0)

    def _safe(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            with self._lock:
                self.errors += 1
                self.last_error = f"{what}: {type(exc).__name__}: {exc}"
            log.error("sink %s: %s failed: %s", self.name, what, exc)

    def _sink_holds_rows(self) -> bool:
        try:
            depth = self.sink.status().get("queue_depth", 0)
            return isinstance(depth, int) and depth > 0
        except Exception:
            return False

    def _run(self) -> None:
        last_flush = time.monotonic()
        dirty = False
        unwritten = 0
        try:
            while True:
                batch = self._take(0.5)
                if batch is None:
                    if self._closing.is_set():
                        break
                    # idle too, now and then: a sink may hold rows for later (the CSV RAM
                    # journal, rows waiting for a full disk) that must not wait for the
                    # next reading, which may never come (meter gone, replay finished)
                    since = time.monotonic() - last_flush
                    if (dirty and since >= 1.0) or since >= IDLE_FLUSH_S:
                        self._safe("flush", self.sink.flush)
                        last_flush = time.monotonic()
                        # a sink still holding rows (a full disk, a batch not yet due) gets
                        # flushed again: that is its retry when no reading comes
                        dirty = self._sink_holds_rows()
                    continue
                if time.monotonic() > self._deadline:
                    with self._lock:
                        unwritten += len(batch) + self._held
                    break
                missed = self._write_batch(batch)
                unwritten += missed
                if missed < len(batch):
                    dirty = True
                if dirty and time.monotonic() - last_flush >= 1.0:
                    self._safe("flush", self.sink.flush)
                    last_flush = time.monotonic()
                    dirty = self._sink_holds_rows()
        finally:
            if unwritten:
                log.error("sink %s: %d readings not written before shutdown", self.name, unwritten)
            # close() flushes: a separate flush first would only double the wait on a slow DB
            self._safe("close", self.sink.close)
            self.closed.set()

    def close(self, deadline: float) -> None:
        """Drain the queue until `deadline` (monotonic), then flush and close the sink."""
        self._deadline = deadline
        self._closing.set()
        with self._changed:
            self._changed.notify_all()  # an idle worker notices at once, not after its wait

    def join(self, deadline: float) -> bool:
        """Wait for the thread until `deadline` (monotonic); True if it ended."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def alive(self) -> bool:
        """True while the worker thread runs."""
        return self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        """The sink's status plus the worker's queue depth, drops, errors and liveness."""
        try:
            status: dict[str, Any] = dict(self.sink.status())
        except Exception as exc:
            status = {"status_error": f"{type(exc).__name__}: {exc}"}
        with self._lock:
            pending = self._held
            # the sink's own figures win (e.g. rows really in the database); the worker adds
            # its in-memory queue and what it could not hand over
            status["queue_depth"] = pending + int(status.get("queue_depth", 0) or 0)
            status["pipeline_queue"] = pending
            status.setdefault("written", self.written)
            status["handed_over"] = self.written
            status["pipeline_dropped"] = self.dropped
            status["write_errors"] = self.errors
            # for /healthz: writes failing right now (raised here, or a state the sink
            # reports itself, such as the CSV sink's full disk), or the worker thread gone
            status["failing"] = self._write_log.failing or status.get("failing") is True
            status["alive"] = self._thread.is_alive() or self._thread.ident is None
            if status.get("last_error") is None:
                status["last_error"] = self.last_error
        return status


def _news(before: int, after: int) -> bool:
    """Whether a drop count going from `before` to `after` is worth a log line (the 1st,
    10th, 100th and every 1000th drop)."""
    return any(before < mark <= after for mark in (1, 10, 100)) or after // 1000 > before // 1000


# ---- meters ----------------------------------------------------------------------------------


@dataclass
class MeterSpec:
    """One meter: where its bytes come from and how to read them."""

    key: str
    source: Source
    crc: str = "auto"
    direction_from_status: bool = False
    accept_bad_msg_crc: bool = False
    meter_id: Optional[str] = None
    watchdog_s: float = 30.0
    max_power_w: float = 100_000.0
    capture: Optional[CaptureWriter] = None


class MeterRunner:
    """Reads one meter's source in its own thread: decode, diagnose, check, deliver readings."""

    def __init__(
        self,
        spec: MeterSpec,
        live: LiveState,
        deliver: Callable[[list[Reading]], None],
        stop: threading.Event,
    ) -> None:
        self.spec = spec
        self.live = live
        self.deliver = deliver
        self.stop = stop
        self.check = PlausibilityCheck(spec.max_power_w)
        self.counters = {"readings": 0, "rejected": 0, "watchdog_events": 0, "bad_msg_crc": 0}
        self.decoder_stats: dict[str, Any] = {}
        self.finished = threading.Event()
        self.error: Optional[BaseException] = None
        self._state: LinkState = "waiting"
        self._detail = "starting"
        self._silent = False  # watchdog fired and no frame came since
        self._last_good = time.monotonic()
        # live links (serial, tcp) are diagnosed; replays and the simulator are not
        self.watch = LinkWatch() if spec.source.watchdog else None
        self.diagnosis: Optional[Diagnosis] = None
        self._last_publish = 0.0
        self._last_stats = 0.0  # when the counters of a damaged-only stream were last published
        self._thread = threading.Thread(target=self._run, name=f"meter-{spec.key}", daemon=True)
        spec.source.on_state = self._source_state
        # a bulk source (a replay at full speed): readings go on in batches, and the live
        # state sees the newest reading of each batch instead of every one
        self._bulk: list[Reading] = []
        self._bulk_since = time.monotonic()
        self._unreported = False  # good frames whose news waits for the next batch
        self._is_bulk = spec.source.bulk  # (asked for every reading)

    def start(self) -> None:
        """Publish the source as waiting, arm the watchdog and start the reader thread."""
        self.live.set_source(self.spec.key, "waiting", detail="starting", stats=self.stats())
        if self.spec.source.watchdog and self.spec.watchdog_s > 0:
            self.live.watch_source(self.spec.key, self.spec.watchdog_s)
        self._thread.start()

    def alive(self) -> bool:
        """True while the reader thread runs."""
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the reader thread."""
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """Decoder stats, reading counters, the source and the last rejection reason."""
        return {
            **self.decoder_stats,
            **self.counters,
            "source": self.spec.source.describe(),
            "last_rejection": self.check.last_reason,
        }

    def _set_state(self, state: LinkState, detail: str) -> None:
        if state != self._state:
            log.debug("%s: source state %s -> %s (%s)", self.spec.key, self._state, state, detail)
        self._state = state
        self._detail = detail
        self.live.set_source(self.spec.key, state, detail=detail, stats=self.stats())

    def _source_state(self, state: LinkState, detail: str) -> None:
        source = self.spec.source
        if self.watch is not None:
            if state == "waiting" and source.open_error is not None:
                self._set_diagnosis(open_failure(source.target, source.open_error))
            elif state == "connected" and self._state == "waiting":
                self.watch.opened()  # judge the port from the moment it opened
                self._set_diagnosis(classify(self._observation()))
        if state == "connected" and self._silent:
            state, detail = "no data", f"reopened; no frame for {self.spec.watchdog_s:g} s"
        if state == "connected":
            self._last_good = time.monotonic()  # give a freshly opened port its full grace time
        self._set_state(state, detail)

    # ---- diagnosis ---------------------------------------------------------------------------

    def _observation(self) -> Observation:
        assert self.watch is not None
        settings = getattr(self.spec.source, "settings", None)
        return self.watch.observation(
            bytesize=int(getattr(settings, "bytesize", 8)),
            parity=str(getattr(settings, "parity", "N")),
            crc_mode=self.spec.crc,
        )

    def _set_diagnosis(self, diagnosis: Diagnosis) -> None:
        """Publish the finding; log it once when its code changes (not on every retry)."""
        previous = self.diagnosis
        self.diagnosis = diagnosis
        self.live.set_diagnosis(self.spec.key, diagnosis.as_dict())
        if previous is not None and previous.code == diagnosis.code:
            return
        if diagnosis.code in _OPEN_FAILURES:
            # the source logged the OS error itself; what to do is news
            log.info("%s: %s. Hint: %s", self.spec.key, diagnosis.sentence, diagnosis.hint)
        elif diagnosis.problem:
            log.warning("%s: %s. Hint: %s", self.spec.key, diagnosis.sentence, diagnosis.hint)
        elif previous is not None and previous.problem and diagnosis.code == "ok":
            log.info("%s: %s again", self.spec.key, diagnosis.sentence)

    def _publish(self, decoder: Any) -> None:
        """Decoder stats and the diagnosis to the live state, every PUBLISH_INTERVAL_S."""
        now = time.monotonic()
        if now - self._last_publish < PUBLISH_INTERVAL_S:
            return
        self._last_publish = now
        self.decoder_stats = dict(decoder.stats)
        if self.watch is not None and self._state != "waiting":
            observation = self._observation()
            diagnosis = classify(observation)
            self._set_diagnosis(diagnosis)
            frames_arrive = diagnosis.code == "crc_errors" and observation.frames_ok > 0
            if diagnosis.problem and not frames_arrive:
                # bytes without frames, or none at all: the page must not say "Connected", and
                # the detail follows the finding (7-bit bytes may turn into noise)
                self._state = "no data"
                self._detail = diagnosis.sentence
        self.live.set_source(self.spec.key, self._state, detail=self._detail, stats=self.stats())

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._read_source()
                break
            except Exception as exc:
                if not self.spec.source.endless:
                    self.error = exc
                    log.error("%s: %s", self.spec.key, exc)
                    self._set_state("no data", str(exc))
                    break
                log.exception("%s: reader failed; restarting in 5 s", self.spec.key)
                self._set_state("waiting", f"internal error: {exc}")
                self.stop.wait(5.0)
        self.finished.set()

    def _read_source(self) -> None:
        from smlogger import sml

        decoder = sml.Decoder(crc=cast("sml.CrcName", self.spec.crc))
        source = self.spec.source
        # a bulk source (a replay at full speed; no link diagnosis, no watchdog, no capture)
        # needs only the readings of its frames: no frame dicts
        lean = source.bulk and self.watch is None and self.spec.capture is None
        fed = 0  # bytes fed to the decoder so far: where the next chunk starts in its stream
        try:
            for chunk in source.chunks(self.stop):
                if chunk.data:
                    if self.spec.capture is not None:
                        try:
                            for part in chunk.pieces():  # each with its own time
                                self.spec.capture.write(part.time, part.data)
                        except OSError as exc:
                            log.error(
                                "%s: capture failed, stopped capturing: %s", self.spec.key, exc
                            )
                            self.spec.capture = None
                    if lean:
                        items = sml.feed_values(decoder, chunk.data, Value)
                        self._lists(items, chunk, decoder, fed)
                    else:
                        for part in chunk.pieces():
                            frames = decoder.feed(part.data)
                            if self.watch is not None:
                                self.watch.data(part.data)
                                self.watch.frames(frames)
                            self._frames(frames, part, decoder)
                    fed += len(chunk.data)
                elif self.watch is not None:
                    self.watch.data(b"")
                if source.watchdog and self.spec.watchdog_s > 0:
                    self._watchdog(chunk)
                self._publish(decoder)
                if self.stop.is_set():
                    break
            end = Chunk(b"", datetime.now().astimezone())
            if lean:
                self._lists(sml.feed_values(decoder, b"", Value, finish=True), end, decoder, fed)
            else:
                self._frames(decoder.finish(), end, decoder)
        finally:
            # what a bulk source collected is delivered even when reading it failed
            # (the link state stays what the source said last: "replay finished")
            if self._bulk or self._unreported:
                self._hand_on()
                self._unreported = False
                self.decoder_stats = dict(decoder.stats)
                self.live.frame_received(self.spec.key, self.stats())

    def _watchdog(self, chunk: Chunk) -> None:
        if self._state == "waiting":
            return
        silent = time.monotonic() - self._last_good
        if silent < self.spec.watchdog_s:
            return
        self.counters["watchdog_events"] += 1
        # the first event of a silence is a warning; repeats every watchdog period are not news
        report = log.debug if self._silent else log.warning
        self._silent = True
        report(
            "%s: watchdog: no valid frame for %.0f s; reopening %s",
            self.spec.key,
            silent,
            self.spec.source.describe(),
        )
        self._set_state("no data", f"no frame for {silent:.0f} s; reopening")
        self._last_good = time.monotonic()
        self.spec.source.request_reset()

    def _hand_on(self) -> None:
        """Deliver the readings a bulk source collected; the newest of each meter to the live
        state."""
        batch, self._bulk = self._bulk, []
        self._bulk_since = time.monotonic()
        if not batch:
            return
        newest = {reading.meter_id: reading for reading in batch}
        for reading in newest.values():
            self.live.update(reading, source=self.spec.key)
        self.deliver(batch)

    def _frames(self, frames: Iterable[Any], chunk: Chunk, decoder: Any) -> None:
        got_frame = False
        damaged = False
        for frame in frames:
            if not frame.get("ok"):
                damaged = True
                continue
            got_frame = True
            for message in frame.get("messages") or ():
                if message.get("type") == "GetListResponse" and not message.get("crc_ok", True):
                    self.counters["bad_msg_crc"] += 1
            readings = readings_from_frame(
                frame,
                chunk.time,
                direction_from_status=self.spec.direction_from_status,
                meter_id=self.spec.meter_id,
                accept_bad_msg_crc=self.spec.accept_bad_msg_crc,
            )
            self._accept(readings)
        self._after_frames(decoder, got_frame=got_frame, damaged=damaged)

    def _lists(self, items: list[sml.ValuesFrame], chunk: Chunk, decoder: Any, start: int) -> None:
        """`_frames` for frames as `sml.feed_values` gives them (bulk sources); `start` is
        where `chunk` begins in the decoder's stream."""
        got_frame = False
        damaged = False
        marks = chunk.marks or ((0, chunk.time),)
        positions = [position for position, _ in marks]
        for item in items:
            if not item[1]:
                damaged = True
                continue
            got_frame = True
            for got in item[2]:
                if not got[0]:  # its crc_ok
                    self.counters["bad_msg_crc"] += 1
            # the time of the piece the frame starts in
            piece = max(0, bisect.bisect_right(positions, item[0] - start) - 1)
            readings = readings_from_lists(
                item,
                marks[piece][1],
                direction_from_status=self.spec.direction_from_status,
                meter_id=self.spec.meter_id,
                accept_bad_msg_crc=self.spec.accept_bad_msg_crc,
            )
            self._accept(readings)
        self._after_frames(decoder, got_frame=got_frame, damaged=damaged)

    def _accept(self, readings: list[Reading]) -> None:
        """Plausible readings to the live state and the sinks (a bulk source's to its batch)."""
        for reading in readings:
            reason = self.check.check(reading)
            if reason is not None:
                self.counters["rejected"] += 1
                count = self.counters["rejected"]
                if count <= 10 or count % 100 == 0:
                    log.warning(
                        "%s: implausible reading rejected (#%d): %s",
                        self.spec.key,
                        count,
                        reason,
                    )
                continue
            self.counters["readings"] += 1
            if self._is_bulk:
                self._bulk.append(reading)
            else:
                self.live.update(reading, source=self.spec.key)
                self.deliver([reading])

    def _after_frames(self, decoder: Any, *, got_frame: bool, damaged: bool) -> None:
        if self._is_bulk:
            if len(self._bulk) < BULK_BATCH and time.monotonic() - self._bulk_since < BULK_EVERY_S:
                # the decoder stats and the news of these frames follow with the batch
                self._unreported = self._unreported or got_frame
                return
            self._hand_on()
            got_frame = got_frame or self._unreported
        self._report(decoder, got_frame=got_frame, damaged=damaged)

    def _report(self, decoder: Any, *, got_frame: bool, damaged: bool) -> None:
        """Decoder stats, link state and frame time to the live state after frames."""
        self._unreported = False
        self.decoder_stats = dict(decoder.stats)
        if got_frame:
            self._last_good = time.monotonic()
            if self._state != "connected" or self._silent:
                if self._silent:
                    log.info("%s: frames again", self.spec.key)
                self._silent = False
                self._set_state("connected", "receiving frames")
            self.live.frame_received(self.spec.key, self.stats())
        elif damaged and time.monotonic() - self._last_stats >= 1.0:
            # a stream of only damaged frames still shows its counts in the status
            self._last_stats = time.monotonic()
            self.live.update_stats(self.spec.key, self.stats())


# ---- the pipeline ----------------------------------------------------------------------------


class Pipeline:
    """The meters, the aggregator and one SinkWorker per sink; started and stopped as one."""

    def __init__(
        self,
        meters: list[MeterSpec],
        sinks: list[Sink],
        live: LiveState,
        *,
        store_interval: float = 0.0,
    ) -> None:
        if not meters:
            raise ValueError("no meter configured")
        self.live = live
        self.stop_event = threading.Event()
        finite = all(not m.source.endless for m in meters)
        self.workers = [SinkWorker(s, block_when_full=finite) for s in sinks]
        self._every = [w for w in self.workers if getattr(w.sink, "every_reading", False)]
        self._aggregated = [w for w in self.workers if w not in self._every]
        self.aggregator = Aggregator(store_interval, self._to_sinks, emit_many=self._batch_to_sinks)
        self.runners = [MeterRunner(m, live, self._deliver, self.stop_event) for m in meters]
        self._last_status = 0.0
        self._stopped = False

    def _deliver(self, readings: list[Reading]) -> None:
        for worker in self._every:
            worker.put_many(readings)
        self.aggregator.add_many(readings)

    def _to_sinks(self, reading: Reading) -> None:
        for worker in self._aggregated:
            worker.put(reading)

    def _batch_to_sinks(self, readings: list[Reading]) -> None:
        for worker in self._aggregated:
            worker.put_many(readings)  # the same list: no worker changes it

    def start(self) -> None:
        """Register configured meters, then start the sink workers and the meter readers."""
        for meter in self.runners:
            if meter.spec.meter_id:
                self.live.add_meter(meter.spec.meter_id)
        for worker in self.workers:
            worker.start()
        for runner in self.runners:
            runner.start()
        self.publish_status()

    @property
    def finished(self) -> bool:
        """All sources ended (only replays and counted simulations end)."""
        return all(r.finished.is_set() for r in self.runners)

    def healthy(self) -> bool:
        """True if no reader died unexpectedly and every sink worker runs (for the watchdog)."""
        return all(r.alive() or r.finished.is_set() for r in self.runners) and all(
            w.alive() for w in self.workers
        )

    def errors(self) -> list[BaseException]:
        """Exceptions that ended finite sources (replays), for the exit status."""
        return [r.error for r in self.runners if r.error is not None]

    def publish_status(self) -> None:
        """Copy every sink worker's status into the live state."""
        for worker in self.workers:
            self.live.set_sink_status(worker.name, worker.status())

    def tick(self) -> None:
        """Periodic housekeeping from the main thread."""
        self.aggregator.flush_idle()
        if time.monotonic() - self._last_status >= STATUS_INTERVAL_S:
            self._last_status = time.monotonic()
            self.publish_status()

    def run(self, stop: threading.Event, on_tick: Callable[[], None] | None = None) -> None:
        """Block until `stop` is set or every source has ended."""
        # sources that end (replays) are checked more often: a finished replay should not
        # wait a quarter of a second for the shutdown to begin
        finite = any(not r.spec.source.endless for r in self.runners)
        while not stop.wait(0.05 if finite else 0.25):
            self.tick()
            if on_tick is not None:
                on_tick()
            if self.finished:
                break

    def summary(self) -> str:
        """One line for the end of a replay: frames ok/bad, readings kept per sink,
        readings rejected, and what stays queued."""
        ok = bad = readings = rejected = 0
        for runner in self.runners:
            stats = runner.stats()
            ok += int(stats.get("frames_ok", 0))
            bad += sum(
                int(stats.get(k, 0))
                for k in ("crc_errors", "truncated", "escape_errors", "parse_errors", "too_long")
            )
            readings += int(stats.get("readings", 0))
            rejected += int(stats.get("rejected", 0))
        sinks = []
        for worker in self.workers:
            status = worker.status()
            stored = int(status.get("written", 0) or 0) + int(
                status.get("skipped_existing", 0) or 0
            )
            text = f"{worker.name} {stored}"
            queued = int(status.get("queue_depth", 0) or 0)
            if queued:
                text += f" ({queued} still queued)"
            sinks.append(text)
        return (
            f"frames: {ok} ok, {bad} bad; readings: {readings}, stored: {', '.join(sinks) or '-'}; "
            f"rejected as implausible: {rejected}"
        )

    def stop(self, timeout: float = 4.0) -> bool:
        """Stop sources, flush aggregates, drain and close sinks; True if all closed in time."""
        if self._stopped:
            return True
        self._stopped = True
        deadline = time.monotonic() + timeout
        self.stop_event.set()
        for runner in self.runners:
            runner.join(max(0.0, min(1.5, deadline - time.monotonic())))
        self.aggregator.flush()
        for runner in self.runners:
            log.debug("%s: %s", runner.spec.key, runner.stats())
        for worker in self.workers:
            worker.close(deadline - 0.3)
        # a sink's close() waits up to the same budget for its own backend (the SQL sink for
        # the database) and then reports what stays queued: give it the time to say so
        clean = all([w.join(deadline + CLOSE_GRACE_S) for w in self.workers])
        self.publish_status()
        for spec in (r.spec for r in self.runners):
            if spec.capture is not None:
                spec.capture.close()
        if not clean:
            log.error("some sinks did not close within %.1f s", timeout)
        return clean
