"""--store-interval: one reading per meter per interval, for every sink.

The pipeline owns the only `Aggregator`: the live view sees every reading, the sinks (database,
CSV, ...) see one aggregate per meter per `interval` seconds. Windows are aligned to the epoch
(wall-clock time of the readings), so every sink and every logger cuts them the same way.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Optional

from smlogger.reading import ENERGY_FIELDS, Reading, Value

# a meter that goes quiet for this long (at least) gets its open window written anyway
MIN_IDLE_S = 5.0


def _finite(value: Optional[float]) -> Optional[float]:
    return value if value is not None and math.isfinite(value) else None


@dataclass
class _Window:
    """Readings of one meter within one interval, summed as they arrive."""

    index: int
    touched: float  # monotonic time of the last reading
    samples: int = 0
    time: Optional[datetime] = None
    values: Mapping[str, Value] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    lows: dict[str, float] = field(default_factory=dict)
    highs: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    def add(self, reading: Reading) -> None:
        """Sum one reading into the window; an aggregate reading counts as its `samples`."""
        # a reading that stands for several (an aggregate itself) counts that many times
        weight = max(1, int(reading.samples))
        self.samples += weight
        self.time = reading.time
        self.values = reading.values
        for name in Reading.FIELDS:
            value = _finite(getattr(reading, name))
            if value is None:
                continue
            if name in ENERGY_FIELDS:
                self.last[name] = value  # counters: the latest reading is the value
                continue
            self.sums[name] = self.sums.get(name, 0.0) + value * weight
            self.counts[name] = self.counts.get(name, 0) + weight
            lo, hi = (reading.minmax or {}).get(name, (value, value))
            self.lows[name] = min(self.lows.get(name, lo), lo)
            self.highs[name] = max(self.highs.get(name, hi), hi)

    def result(self, meter_id: str) -> Reading:
        """The window as one reading: mean/min/max of instant values, last energy registers."""
        assert self.time is not None
        fields: dict[str, Optional[float]] = {}
        for name in Reading.FIELDS:
            if name in ENERGY_FIELDS:
                fields[name] = self.last.get(name)
            elif self.counts.get(name):
                fields[name] = self.sums[name] / self.counts[name]
            else:
                fields[name] = None
        return Reading(
            meter_id=meter_id,
            time=self.time,
            values=self.values,
            samples=self.samples,
            minmax=MappingProxyType({n: (self.lows[n], self.highs[n]) for n in self.lows}),
            **fields,
        )


class Aggregator:
    """Turns readings into one reading per meter per `interval` seconds (epoch-aligned).

    Power, voltages, currents, frequency: mean weighted by `samples`, extremes in `minmax`
    (combined with those of readings that are aggregates already); energy counters: the last
    value. The aggregate carries the time and the OBIS values of its last reading, so a window
    cut short by a restart and continued afterwards gives two distinct rows rather than a key
    collision. A window is emitted by the first reading of a later window, by `flush_idle` once
    its meter has been quiet for `interval` (at least `MIN_IDLE_S`) seconds, or by `flush`.
    With `interval` <= 0 every reading is emitted as it comes (a batch from `add_many` in
    one `emit_many` call, when given: a replay at full speed hands readings on in batches).

    `add` may be called from several threads (one per meter); `emit` runs outside the lock.
    """

    def __init__(
        self,
        interval: float,
        emit: Callable[[Reading], None],
        monotonic: Callable[[], float] = time.monotonic,
        *,
        emit_many: Optional[Callable[[list[Reading]], None]] = None,
    ) -> None:
        self.interval = float(interval)
        self._emit = emit
        self._emit_many = emit_many
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def add(self, reading: Reading) -> None:
        """Add a reading; emits the window it completes, if any."""
        if self.interval <= 0:
            self._emit(reading)
            return
        index = int(reading.time.timestamp() // self.interval)
        done = None
        with self._lock:
            window = self._windows.get(reading.meter_id)
            if window is not None and window.index != index:
                done = window.result(reading.meter_id)
                window = None
            if window is None:
                window = self._windows[reading.meter_id] = _Window(index, self._monotonic())
            window.add(reading)
            window.touched = self._monotonic()
        if done is not None:
            self._emit(done)

    def add_many(self, readings: list[Reading]) -> None:
        """`add` for each reading (passed through as one batch when not aggregating)."""
        if self.interval <= 0 and self._emit_many is not None:
            self._emit_many(readings)
            return
        for reading in readings:
            self.add(reading)

    def flush_idle(self) -> None:
        """Emit the windows of meters that went silent (no reading for a whole interval), so
        that the last window before a pause or an unplugged head is written."""
        limit = max(self.interval, MIN_IDLE_S)
        now = self._monotonic()
        with self._lock:
            idle = [m for m, w in self._windows.items() if now - w.touched > limit]
            done = [self._windows.pop(m).result(m) for m in idle]
        for reading in done:
            self._emit(reading)

    def flush(self) -> None:
        """Emit every open window, complete or not (shutdown)."""
        with self._lock:
            done = [w.result(m) for m, w in self._windows.items()]
            self._windows.clear()
        for reading in done:
            self._emit(reading)

    @property
    def pending(self) -> int:
        """Readings collected in open windows and not emitted yet."""
        with self._lock:
            return sum(w.samples for w in self._windows.values())
