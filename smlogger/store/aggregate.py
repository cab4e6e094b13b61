"""--store-interval: aggregation of readings before storing them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Optional

from smlogger.reading import ENERGY_FIELDS, Reading, Value
from smlogger.store.rows import _finite


@dataclass
class _Window:
    """Readings of one meter within one store interval."""

    index: int
    samples: int = 0
    time: Optional[datetime] = None
    values: Mapping[str, Value] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    lows: dict[str, float] = field(default_factory=dict)
    highs: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    def add(self, reading: Reading) -> None:
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


class IntervalAggregator:
    """Turns readings into one reading per meter per `interval` seconds (epoch-aligned).

    Power, voltages, currents, frequency: mean (weighted by samples) with min/max in
    `minmax` (the database keeps those of the power fields); energy counters: the last value.
    The aggregate carries the time of its last reading, so a window cut short by a restart
    and continued afterwards gives two distinct rows rather than a key collision.
    """

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError("store interval must be > 0")
        self.interval = float(interval)
        self._windows: dict[str, _Window] = {}

    def _index(self, moment: datetime) -> int:
        return math.floor(moment.timestamp() / self.interval)

    def add(self, reading: Reading) -> list[Reading]:
        """Add a reading; returns the aggregates it completed (0 or 1)."""
        out: list[Reading] = []
        index = self._index(reading.time)
        window = self._windows.get(reading.meter_id)
        if window is not None and window.index != index:
            out.append(window.result(reading.meter_id))
            window = None
        if window is None:
            window = self._windows[reading.meter_id] = _Window(index)
        window.add(reading)
        return out

    def due(self, now: datetime) -> list[Reading]:
        """Aggregates of windows that ended before `now` (a meter went quiet)."""
        current = self._index(now)
        out = []
        for meter_id, window in list(self._windows.items()):
            if window.index < current:
                out.append(window.result(meter_id))
                del self._windows[meter_id]
        return out

    def drain(self) -> list[Reading]:
        """Everything pending, complete or not (shutdown)."""
        out = [w.result(m) for m, w in self._windows.items()]
        self._windows.clear()
        return out

    @property
    def pending(self) -> int:
        return sum(w.samples for w in self._windows.values())
