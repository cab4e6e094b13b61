"""Readings not yet in the database merged into what the database answers.

Pure functions over the shapes `Queries` returns (history points, consumption bars, exported
readings) and a list of pending readings (`smlogger.store.pending`), so that the web page
shows a reading as soon as the logger has it, whatever the database commit interval.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, tzinfo
from typing import Any, Optional

from smlogger.reading import Reading
from smlogger.store.queries import _bucket_start, _point
from smlogger.store.schema import ROLLUP_ENERGY


def raw_point(reading: Reading) -> dict[str, Any]:
    """A history point of one reading (the shape of `Queries.history` without a step)."""
    low, high = reading.minmax.get("p_sum", (reading.p_sum, reading.p_sum))
    return _point(
        reading.time.timestamp(),
        reading.p_sum,
        low,
        high,
        (reading.p_L1, reading.p_L2, reading.p_L3),
        reading.e_sum,
        reading.e_export,
        reading.samples,
    )


def _combine(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One point from points of the same bucket, weighted by their reading counts."""
    total = sum(p["n"] for p in points)
    means = []
    for key in ("p_avg", "p_L1", "p_L2", "p_L3"):
        known = [(p[key], p["n"]) for p in points if p[key] is not None]
        weight = sum(n for _, n in known)
        means.append(sum(v * n for v, n in known) / weight if known and weight else None)

    def pick(key: str, choose: Any) -> Optional[float]:
        values = [p[key] for p in points if p[key] is not None]
        return choose(values) if values else None

    return _point(
        points[0]["t"],
        means[0],
        pick("p_min", min),
        pick("p_max", max),
        means[1:],
        pick("e_sum", max),  # counters only grow: the largest is the last
        pick("e_export", max),
        total,
    )


def merge_history(result: dict[str, Any], pending: Sequence[Reading]) -> dict[str, Any]:
    """`result` of `Queries.history` with the pending readings (already limited to its
    range) added: as single points when it lists readings (step None), else into the
    buckets of its step."""
    if not pending:
        return result
    step = result["step"]
    points: list[dict[str, Any]] = list(result["points"])
    if step is None:
        points += [raw_point(r) for r in pending]
        points.sort(key=lambda p: p["t"])
        return {**result, "points": points}
    buckets: dict[int, list[dict[str, Any]]] = {}
    for point in points:
        buckets.setdefault(int(point["t"]), []).append(point)
    for reading in pending:
        bucket = math.floor(reading.time.timestamp() / step) * step
        # a pending reading becomes a point of its own with its bucket's time
        buckets.setdefault(bucket, []).append({**raw_point(reading), "t": bucket})
    merged = [
        group[0] if len(group) == 1 else _combine(group) for _, group in sorted(buckets.items())
    ]
    return {**result, "points": merged}


def merge_consumption(
    bars: list[dict[str, Any]],
    pending: Sequence[Reading],
    last_stored: Sequence[Optional[float]],
    period: str,
    zone: tzinfo,
    start: datetime,
) -> list[dict[str, Any]]:
    """`bars` of `Queries.consumption` with the energy of the pending readings (already
    limited to [start of the first bar's period, end)) added. `last_stored` holds the
    newest stored counters (import, export; None when none): the first pending reading
    counts from them, as `Queries.consumption` counts each bar from the previous one."""
    if not pending:
        return bars
    out = {bar["t"]: dict(bar) for bar in bars}
    keys = ("import_kwh", "export_kwh")
    previous = list(last_stored)
    first_bucket = _bucket_start(start.astimezone(zone), period)
    for reading in sorted(pending, key=lambda r: r.time):
        bucket = _bucket_start(reading.time.astimezone(zone), period)
        counters = [getattr(reading, name) for name in ROLLUP_ENERGY]
        if bucket < first_bucket:
            # before the range: only the counters it ends with matter
            previous = [c if c is not None else p for c, p in zip(counters, previous)]
            continue
        t = int(bucket.timestamp())
        bar = out.get(t)
        if bar is None:
            label = bucket.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")
            bar = out[t] = {"t": t, "label": label, "import_kwh": None, "export_kwh": None}
        for i, value in enumerate(counters):
            if value is None:
                continue
            base = previous[i] if previous[i] is not None else value
            bar[keys[i]] = round((bar[keys[i]] or 0.0) + value - base, 6)
            previous[i] = value
    return [out[t] for t in sorted(out)]


def merge_export(stored: Iterable[Reading], pending: Sequence[Reading]) -> Iterator[Reading]:
    """The stored readings and the pending ones (already limited to the range) in time
    order; a pending reading the database already holds (same meter and time: it was
    committed while the export ran) comes once."""
    extra = sorted(pending, key=lambda r: r.time)
    if not extra:
        yield from stored
        return
    first = extra[0].time
    seen: set[tuple[str, datetime]] = set()
    tagged = heapq.merge(
        ((r.time, 0, r) for r in stored),
        ((r.time, 1, r) for r in extra),
        key=lambda item: (item[0], item[1]),
    )
    for moment, origin, reading in tagged:
        key = (reading.meter_id, moment)
        if origin == 0:
            if moment >= first:
                seen.add(key)
            yield reading
        elif key not in seen:
            yield reading
