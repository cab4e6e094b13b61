"""Live state shared between the pipeline (writer) and the web app (reader)."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from smlogger.names import MeterNames
from smlogger.reading import Reading
from smlogger.states import INITIAL_LINK_STATE, LINK_STATES, LinkState

SUBSCRIBER_QUEUE_SIZE = 256


@dataclass
class _Source:
    state: LinkState = INITIAL_LINK_STATE
    detail: str = ""
    since: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    last_frame: Optional[float] = None  # monotonic seconds
    stats: dict[str, Any] = field(default_factory=dict)
    meter_ids: list[str] = field(default_factory=list)
    # {code, sentence, hint} from smlogger.diagnose; None for sources that are not diagnosed
    diagnosis: Optional[dict[str, str]] = None
    # a valid frame is due within this many seconds (None: the source is not watched)
    watchdog_s: Optional[float] = None


class Subscription(queue.Queue[Reading]):
    """One subscriber's bounded queue of new readings.

    `waker`, when set, is called (on the pipeline's thread) after each reading is queued: an
    event loop that serves the subscriber sets it to wake up at once instead of polling, so a
    reading reaches the browser within a millisecond or so of its last byte.
    """

    def __init__(self, maxsize: int = SUBSCRIBER_QUEUE_SIZE) -> None:
        super().__init__(maxsize=maxsize)
        self.waker: Optional[Callable[[], None]] = None

    def _put(self, item: Reading) -> None:
        super()._put(item)
        waker = self.waker
        if waker is not None:
            waker()


class LiveState:
    """Thread-safe latest readings, source/sink health and a fan-out to push subscribers."""

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] | None = None,
        names: MeterNames | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.names = names or MeterNames()
        self._monotonic = monotonic
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._latest: dict[str, Reading] = {}
        self._meters: list[str] = []
        self._sources: dict[str, _Source] = {}
        self._sinks: dict[str, dict[str, Any]] = {}
        self._subscribers: list[queue.Queue[Reading]] = []
        self.started = self._now()

    # ---- writer side (pipeline) -------------------------------------------------------------
    def add_meter(self, meter_id: str) -> None:
        """Announce a configured meter id before its first reading."""
        with self._lock:
            if meter_id not in self._meters:
                self._meters.append(meter_id)

    def update(self, reading: Reading, *, source: str | None = None) -> None:
        """The latest reading of its meter (from `source`, which also names the meter)."""
        if source is not None:
            self.names.learn(source, reading.meter_id)
        with self._lock:
            if reading.meter_id not in self._meters:
                self._meters.append(reading.meter_id)
            self._latest[reading.meter_id] = reading
            if source is not None:
                src = self._sources.setdefault(source, _Source(since=self._now()))
                if reading.meter_id not in src.meter_ids:
                    src.meter_ids.append(reading.meter_id)
            subscribers = list(self._subscribers)
        for q in subscribers:
            _offer(q, reading)

    def set_source(
        self,
        meter_key: str,
        state: LinkState,
        *,
        detail: str = "",
        stats: dict[str, Any] | None = None,
    ) -> None:
        """Record a source's link state, detail and stats; ValueError for an unknown state."""
        if state not in LINK_STATES:  # callers outside mypy's view may pass any string
            raise ValueError(f"source state must be one of {LINK_STATES}, not {state!r}")
        with self._lock:
            src = self._sources.get(meter_key)
            if src is None:
                src = self._sources[meter_key] = _Source(state=state, since=self._now())
            elif src.state != state:
                src.state = state
                src.since = self._now()
            src.detail = detail
            if stats is not None:
                src.stats = dict(stats)

    def watch_source(self, meter_key: str, watchdog_s: float) -> None:
        """The source promises a valid frame every `watchdog_s` seconds (for /healthz)."""
        with self._lock:
            src = self._sources.setdefault(meter_key, _Source(since=self._now()))
            src.watchdog_s = watchdog_s

    def set_diagnosis(self, meter_key: str, diagnosis: dict[str, str] | None) -> None:
        """What `smlogger.diagnose` found about the source ({code, sentence, hint})."""
        with self._lock:
            src = self._sources.setdefault(meter_key, _Source(since=self._now()))
            src.diagnosis = None if diagnosis is None else dict(diagnosis)

    def update_stats(self, meter_key: str, stats: dict[str, Any]) -> None:
        """New counters for a source that sent only damaged frames (state and age unchanged)."""
        with self._lock:
            src = self._sources.setdefault(meter_key, _Source(since=self._now()))
            src.stats = dict(stats)

    def frame_received(self, meter_key: str, stats: dict[str, Any] | None = None) -> None:
        """A good frame arrived on this source: feeds last_frame_age_s."""
        with self._lock:
            src = self._sources.setdefault(meter_key, _Source(since=self._now()))
            src.last_frame = self._monotonic()
            if stats is not None:
                src.stats = dict(stats)

    def set_sink_status(self, name: str, status: dict[str, Any]) -> None:
        """Replace the status dict a sink reported (shown in /api/status and /metrics)."""
        with self._lock:
            self._sinks[name] = dict(status)

    # ---- reader side (web) ------------------------------------------------------------------
    def meters(self) -> list[str]:
        """Meter ids in the order they became known (configured or first read)."""
        with self._lock:
            return list(self._meters)

    def meter_name(self, meter_id: str) -> str | None:
        """The configured name of `meter_id`, or None."""
        return self.names.name(meter_id)

    def latest(self, meter_id: str | None = None) -> Reading | None:
        """The newest reading of `meter_id` (default: the first meter), or None."""
        with self._lock:
            if meter_id is None:
                if not self._meters:
                    return None
                meter_id = self._meters[0]
            return self._latest.get(meter_id)

    def source_status(self) -> dict[str, dict[str, Any]]:
        """A snapshot per source: state, detail, since, last frame age, stats, diagnosis, meters."""
        now = self._monotonic()
        with self._lock:
            return {
                key: {
                    "state": src.state,
                    "detail": src.detail,
                    "since": src.since.isoformat(),
                    "last_frame_age_s": (
                        None if src.last_frame is None else round(now - src.last_frame, 3)
                    ),
                    "stats": dict(src.stats),
                    "meters": list(src.meter_ids),
                    "diagnosis": None if src.diagnosis is None else dict(src.diagnosis),
                    "watchdog_s": src.watchdog_s,
                }
                for key, src in self._sources.items()
            }

    def sink_status(self) -> dict[str, dict[str, Any]]:
        """A copy of every sink's last reported status, by sink name."""
        with self._lock:
            return {name: dict(status) for name, status in self._sinks.items()}

    def subscribe(self) -> Subscription:
        """A bounded queue that receives every new reading (for one SSE client)."""
        q = Subscription()
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue[Reading]) -> None:
        """Stop feeding a queue from `subscribe`; unknown queues are ignored."""
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def subscriber_count(self) -> int:
        """How many subscriber queues are open."""
        with self._lock:
            return len(self._subscribers)


def _offer(q: queue.Queue[Reading], reading: Reading) -> None:
    # A stalled subscriber loses its oldest readings rather than blocking the pipeline.
    while True:
        try:
            q.put_nowait(reading)
            return
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
