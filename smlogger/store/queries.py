"""Reading back: history, consumption, export."""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from types import MappingProxyType
from typing import Any, Optional, Union

import peewee

from smlogger.reading import Reading
from smlogger.store.compact import Base, join
from smlogger.store.dialect import _sql, dialect_of
from smlogger.store.rows import decode_values
from smlogger.store.schema import (
    POWER_FIELDS,
    ROLLUP_ENERGY,
    ROLLUP_SECONDS,
    ROLLUPS,
    reading_columns,
)
from smlogger.timefmt import iso

NICE_STEPS: tuple[int, ...] = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip
# meters send every 1..4 s: ranges up to max_points * 4 s may still fit as raw readings
RAW_SECONDS_PER_READING = 4


Number = Union[int, float]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def nice_step(seconds: float) -> int:
    """The smallest "round" step (1 s, 2 s, 5 s ... 1 h ... 1 d, n days) >= `seconds`."""
    for step in NICE_STEPS:
        if step >= seconds:
            return step
    return math.ceil(seconds / 86400) * 86400


def auto_step(span: float, max_points: int, readings: int) -> Optional[int]:
    """The step of a history asked for without one: None (the readings themselves) for a
    short range holding at most `max_points` readings, else the smallest round step giving
    at most `max_points` points."""
    if span <= max_points * RAW_SECONDS_PER_READING and readings <= max_points:
        return None
    return nice_step(span / max_points)


def rollup_for_step(step: int) -> Optional[str]:
    """The coarsest rollup table whose buckets tile `step` (None: read raw readings)."""
    for table, seconds in reversed(ROLLUPS):
        if step % seconds == 0:
            return table
    # a step that is not a whole number of minutes still reads minute buckets when it spans
    # several of them: each point is then off by less than a minute at its edges
    return ROLLUPS[0][0] if step >= 10 * ROLLUPS[0][1] else None


def _point(
    t: Number,
    p_avg: Optional[float],
    p_min: Optional[float],
    p_max: Optional[float],
    phases: Sequence[Optional[float]],
    e_sum: Optional[float],
    e_export: Optional[float],
    n: int,
) -> dict[str, Any]:
    return {
        "t": t,
        "p_avg": p_avg,
        "p_min": p_min,
        "p_max": p_max,
        "p_L1": phases[0],
        "p_L2": phases[1],
        "p_L3": phases[2],
        "e_sum": e_sum,
        "e_export": e_export,
        "n": n,
    }


@dataclass(frozen=True)
class _Bar:
    start: datetime  # local bucket start
    label: str
    first: list[Optional[float]]
    last: list[Optional[float]]


class Queries:
    """Read side over the schema; every method runs on the calling thread's connection."""

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self.dialect = dialect_of(db)

    def meters(self) -> list[str]:
        """Stored meter ids in the order they were first stored."""
        d = self.dialect
        cursor = _sql(
            self.db, f"SELECT {d.q('meter_id')} FROM {d.q('meters')} ORDER BY {d.q('id')}"
        )
        return [str(r[0]) for r in cursor.fetchall()]

    def meter_key(self, meter_id: str) -> Optional[int]:
        """The integer key of a stored meter, or None."""
        d = self.dialect
        row = _sql(
            self.db,
            f"SELECT {d.q('id')} FROM {d.q('meters')} WHERE {d.q('meter_id')} = {d.param}",
            (meter_id,),
        ).fetchone()
        return None if row is None else int(row[0])

    # history ----------------------------------------------------------------------------

    def history(
        self,
        meter_id: str,
        start: datetime,
        end: datetime,
        step: Optional[int] = None,
        max_points: int = 2000,
        extra: int = 0,
    ) -> dict[str, Any]:
        """Power and energy series of a meter between `start` and `end`.

        Without `step` the resolution is chosen so that at most `max_points` come back (raw rows or
        rollups), counting `extra` readings in the range that the caller adds (not committed
        yet); the choice is the same for a meter not stored yet, which has no points. Raises
        ValueError for an empty range or a step giving too many points.
        """
        start, end = _utc(start), _utc(end)
        span = (end - start).total_seconds()
        if span <= 0:
            raise ValueError("'from' must be before 'to'")
        if max_points < 1:
            raise ValueError("max_points must be >= 1")
        if step is not None:
            if isinstance(step, bool) or int(step) != step or step < 1:
                raise ValueError("step must be a whole number of seconds >= 1")
            step = int(step)
            if span / step > max_points + 1:
                raise ValueError(
                    f"step {step} s gives {math.ceil(span / step)} points for this range, "
                    f"more than {max_points}"
                )
        result: dict[str, Any] = {
            "meter": meter_id,
            "from": iso(start),
            "to": iso(end),
            "step": step,
            "source": "raw",
            "points": [],
        }
        meter = self.meter_key(meter_id)
        if step is None:
            rows: list[list[Any]] = []
            room = max_points - extra
            if span <= max_points * RAW_SECONDS_PER_READING and meter is not None and room >= 0:
                # a short range: are there few enough readings to list? (one more than fit
                # is enough to tell)
                rows = self._raw_rows(meter, start, end, room + 1)
            step = auto_step(span, max_points, len(rows) + extra)
            if step is None:
                result["points"] = [
                    _point(r[0], r[2], r[3], r[4], r[5:8], r[8], r[9], int(r[1] or 1)) for r in rows
                ]
                return result
        result["step"] = step
        table = rollup_for_step(step)
        if table is not None:
            result["source"] = table.split("_", 1)[1]
        if meter is not None:
            result["points"] = (
                self._raw_points(meter, start, end, step)
                if table is None
                else self._rollup_points(meter, table, start, end, step)
            )
        return result

    def _raw_rows(self, meter: int, start: datetime, end: datetime, limit: int) -> list[list[Any]]:
        d = self.dialect
        cols = ["time", "samples", "p_sum", "p_sum_min", "p_sum_max", "p_L1", "p_L2", "p_L3"]
        cols += ["e_sum", "e_export"]
        # single readings store no min/max (they equal the value): fall back to it
        exprs = [
            f"COALESCE({d.q(c)}, {d.q('p_sum')})" if c in ("p_sum_min", "p_sum_max") else d.q(c)
            for c in cols
        ]
        cursor = _sql(
            self.db,
            f"SELECT {', '.join(exprs)} FROM {d.q('readings')} "
            f"WHERE {d.q('meter')} = {d.param} AND {d.q('time')} >= {d.param} "
            f"AND {d.q('time')} < {d.param} ORDER BY {d.q('time')} LIMIT {int(limit)}",
            (meter, d.time_param(start), d.time_param(end)),
        )
        rows = []
        for r in cursor.fetchall():
            row = list(r)
            row[0] = d.time_value(row[0]).timestamp()
            rows.append(row)
        return rows

    def _raw_points(
        self, meter: int, start: datetime, end: datetime, step: int
    ) -> list[dict[str, Any]]:
        """Readings grouped into `step`-second buckets by the database (no rows in Python)."""
        d = self.dialect
        weight = d.q("samples")
        select = [d.floor_to(d.epoch_seconds(d.q("time")), step)]
        for name in POWER_FIELDS:
            column = d.q(name)
            select += [
                f"SUM(CASE WHEN {column} IS NULL THEN 0 ELSE {weight} END)",
                f"SUM({column} * {weight})",
            ]
        select += [
            f"MIN(COALESCE({d.q('p_sum_min')}, {d.q('p_sum')}))",
            f"MAX(COALESCE({d.q('p_sum_max')}, {d.q('p_sum')}))",
            f"MAX({d.q('e_sum')})",
            f"MAX({d.q('e_export')})",
            f"SUM({weight})",
        ]
        cursor = _sql(
            self.db,
            f"SELECT {', '.join(select)} FROM {d.q('readings')} "
            f"WHERE {d.q('meter')} = {d.param} AND {d.q('time')} >= {d.param} "
            f"AND {d.q('time')} < {d.param} GROUP BY 1 ORDER BY 1",
            (meter, d.time_param(start), d.time_param(end)),
        )
        return [self._aggregate_point(r) for r in cursor.fetchall()]

    def _aggregate_point(self, r: Sequence[Any]) -> dict[str, Any]:
        """A point from (bucket, (n, sum) per power field, min, max, e_sum, e_export, n)."""
        k = len(POWER_FIELDS)
        means = [
            float(r[2 + 2 * i]) / int(r[1 + 2 * i]) if r[1 + 2 * i] else None for i in range(k)
        ]
        tail = r[1 + 2 * k :]
        return _point(
            int(r[0]),
            means[0],
            _float(tail[0]),
            _float(tail[1]),
            means[1:],
            _float(tail[2]),
            _float(tail[3]),
            int(tail[4] or 0),
        )

    def _rollup_points(
        self, meter: int, table: str, start: datetime, end: datetime, step: int
    ) -> list[dict[str, Any]]:
        d = self.dialect
        width = ROLLUP_SECONDS[table]
        first = int(start.timestamp() // step) * step
        first = first // width * width
        group = d.floor_to(d.q("bucket"), step)
        select = [group]
        for name in POWER_FIELDS:
            select += [f"SUM({d.q(name + '_n')})", f"SUM({d.q(name + '_sum')})"]
        select += [
            f"MIN({d.q('p_sum_min')})",
            f"MAX({d.q('p_sum_max')})",
            f"MAX({d.q('e_sum_last')})",  # counters only grow: the max is the last value
            f"MAX({d.q('e_export_last')})",
            f"SUM({d.q('n')})",
        ]
        cursor = _sql(
            self.db,
            f"SELECT {', '.join(select)} FROM {d.q(table)} "
            f"WHERE {d.q('meter')} = {d.param} AND {d.q('bucket')} >= {d.param} "
            f"AND {d.q('bucket')} < {d.param} GROUP BY 1 ORDER BY 1",
            (meter, first, math.ceil(end.timestamp())),
        )
        return [self._aggregate_point(r) for r in cursor.fetchall()]

    # consumption ------------------------------------------------------------------------

    def consumption(
        self,
        meter_id: str,
        period: str,
        start: datetime,
        end: datetime,
        tz: Union[tzinfo, str, None] = None,
    ) -> list[dict[str, Any]]:
        """Energy used and returned per local day or month of `tz`; [] for an unknown meter.

        Raises ValueError for another period or an empty range.
        """
        if period not in ("day", "month"):
            raise ValueError("period must be 'day' or 'month'")
        zone = _zone(tz)
        start, end = _utc(start), _utc(end)
        if end <= start:
            raise ValueError("'from' must be before 'to'")
        meter = self.meter_key(meter_id)
        if meter is None:
            return []
        local_start = _bucket_start(start.astimezone(zone), period)
        # local days are UTC days only in UTC; elsewhere hour buckets are summed per local day
        table = "rollup_day" if _is_utc(zone) else "rollup_hour"
        d = self.dialect
        energy_cols = [f"{n}_{which}" for n in ROLLUP_ENERGY for which in ("first", "last")]
        lower = int(local_start.timestamp())
        cursor = _sql(
            self.db,
            f"SELECT {d.q('bucket')}, {', '.join(d.q(c) for c in energy_cols)} "
            f"FROM {d.q(table)} WHERE {d.q('meter')} = {d.param} AND {d.q('bucket')} >= "
            f"{d.param} AND {d.q('bucket')} < {d.param} ORDER BY {d.q('bucket')}",
            (meter, lower, math.ceil(end.timestamp())),
        )
        # local bucket boundaries once, then a walk over the time-ordered rollup rows: no
        # time zone arithmetic per row
        edges = _local_edges(local_start, end, period)
        bars: dict[datetime, _Bar] = {}
        index = 0
        for row in cursor.fetchall():
            bucket = int(row[0])
            while index + 1 < len(edges) and edges[index + 1][0] <= bucket:
                index += 1
            key = edges[index][1]
            bar = bars.get(key)
            if bar is None:
                label = key.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")
                bar = bars[key] = _Bar(key, label, [None, None], [None, None])
            for i in range(len(ROLLUP_ENERGY)):
                first, last = _float(row[1 + 2 * i]), _float(row[2 + 2 * i])
                if bar.first[i] is None:
                    bar.first[i] = first
                if last is not None:
                    bar.last[i] = last
        previous = [self._last_before(meter, table, lower, name) for name in ROLLUP_ENERGY]
        out = []
        for key in sorted(bars):
            bar = bars[key]
            amounts: list[Optional[float]] = []
            for i in range(len(ROLLUP_ENERGY)):
                base = previous[i] if previous[i] is not None else bar.first[i]
                last = bar.last[i]
                amounts.append(None if last is None or base is None else round(last - base, 6))
                if last is not None:
                    previous[i] = last
            out.append(
                {
                    "t": int(key.timestamp()),
                    "label": bar.label,
                    "import_kwh": amounts[0],
                    "export_kwh": amounts[1],
                }
            )
        return out

    def newest_time(self, meter_id: str) -> Optional[datetime]:
        """The time of the meter's newest stored reading (None: none stored)."""
        meter = self.meter_key(meter_id)
        if meter is None:
            return None
        d = self.dialect
        row = _sql(
            self.db,
            f"SELECT MAX({d.q('time')}) FROM {d.q('readings')} WHERE {d.q('meter')} = {d.param}",
            (meter,),
        ).fetchone()
        return None if row is None or row[0] is None else d.time_value(row[0])

    def last_counters(self, meter_id: str) -> list[Optional[float]]:
        """The newest stored energy counters (import, export), None where there is none."""
        meter = self.meter_key(meter_id)
        if meter is None:
            return [None] * len(ROLLUP_ENERGY)
        # the minute rollups are committed with the readings and are small to search
        table = ROLLUPS[0][0]
        return [self._last_before(meter, table, 2**62, name) for name in ROLLUP_ENERGY]

    def _last_before(self, meter: int, table: str, bucket: int, name: str) -> Optional[float]:
        d = self.dialect
        column = d.q(f"{name}_last")
        row = _sql(
            self.db,
            f"SELECT {column} FROM {d.q(table)} WHERE {d.q('meter')} = {d.param} AND "
            f"{d.q('bucket')} < {d.param} AND {column} IS NOT NULL "
            f"ORDER BY {d.q('bucket')} DESC LIMIT 1",
            (meter, bucket),
        ).fetchone()
        return None if row is None else _float(row[0])

    # export -----------------------------------------------------------------------------

    def export(
        self, meter_id: Optional[str], start: datetime, end: datetime, page: int = 2000
    ) -> Iterator[Reading]:
        """Readings in time order (all meters merged), fetched page by page."""
        start, end = _utc(start), _utc(end)
        meters = self.meters() if meter_id is None else [meter_id]
        streams = []
        for ident in meters:
            key = self.meter_key(ident)
            if key is not None:
                streams.append(self._export_meter(key, ident, start, end, page))
        if len(streams) == 1:
            yield from streams[0]
            return
        yield from heapq.merge(*streams, key=lambda r: r.time)

    def _export_meter(
        self, meter: int, meter_id: str, start: datetime, end: datetime, page: int
    ) -> Iterator[Reading]:
        d = self.dialect
        cols = ["time", "samples", *reading_columns(), "obis_values", "obis_base"]
        select = f"SELECT {', '.join(d.q(c) for c in cols)} FROM {d.q('readings')} "
        bases = self._bases(meter)
        lower_op = ">="
        lower: Any = d.time_param(start)
        while True:
            cursor = _sql(
                self.db,
                select + f"WHERE {d.q('meter')} = {d.param} AND {d.q('time')} {lower_op} "
                f"{d.param} AND {d.q('time')} < {d.param} ORDER BY {d.q('time')} LIMIT {int(page)}",
                (meter, lower, d.time_param(end)),
            )
            rows = cursor.fetchall()
            for row in rows:
                yield self._reading(meter_id, cols, row, bases)
            if len(rows) < page:
                return
            lower_op, lower = ">", rows[-1][0]

    def _bases(self, meter: int) -> list[Base]:
        """The meter's OBIS dictionaries, by the index rows keep in ``obis_base``."""
        d = self.dialect
        row = _sql(
            self.db,
            f"SELECT {d.q('obis_bases')} FROM {d.q('meters')} WHERE {d.q('id')} = {d.param}",
            (meter,),
        ).fetchone()
        if row is None or not row[0]:
            return []
        return [dict(item[1]) for item in json.loads(row[0])]

    def _reading(
        self, meter_id: str, cols: list[str], row: Sequence[Any], bases: list[Base]
    ) -> Reading:
        data = dict(zip(cols, row))
        fields = {name: _float(data[name]) for name in Reading.FIELDS}
        index = data["obis_base"]
        if index is None:
            values = decode_values(data["obis_values"])  # rows written before compact rows
        else:
            base = bases[int(index)] if 0 <= int(index) < len(bases) else {}
            delta = json.loads(data["obis_values"]) if data["obis_values"] else {}
            values = join(base, delta, fields)
        samples = int(data["samples"] or 1)
        minmax: dict[str, tuple[float, float]] = {}
        if samples > 1:
            for name in POWER_FIELDS:
                lo, hi = _float(data[f"{name}_min"]), _float(data[f"{name}_max"])
                if lo is not None and hi is not None:
                    minmax[name] = (lo, hi)
        return Reading(
            meter_id=meter_id,
            time=self.dialect.time_value(data["time"]),
            values=MappingProxyType(values),
            samples=samples,
            minmax=MappingProxyType(minmax),
            **fields,
        )


def _float(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def _zone(tz: Union[tzinfo, str, None]) -> tzinfo:
    if tz is None:
        return timezone.utc
    if isinstance(tz, str):
        from zoneinfo import ZoneInfo

        return ZoneInfo(tz)
    return tz


_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/GMT", "GMT", "Zulu", "Etc/Zulu", "Universal"})


def _is_utc(zone: tzinfo) -> bool:
    return zone == timezone.utc or getattr(zone, "key", None) in _UTC_NAMES


def _local_edges(first: datetime, end: datetime, period: str) -> list[tuple[int, datetime]]:
    """(epoch, local start) of each local day/month from `first` (a bucket start) to `end`."""
    edges = []
    current = first
    limit = end.timestamp()
    while current.timestamp() < limit:
        edges.append((int(current.timestamp()), current))
        if period == "day":
            following = current.date() + timedelta(days=1)
        else:
            year, month = divmod(current.month, 12)
            following = date(current.year + year, month + 1, 1)
        zone = current.tzinfo or timezone.utc
        current = _bucket_start(datetime(following.year, following.month, following.day, 12,
                                         tzinfo=zone), period)  # fmt: skip
    return edges


def _bucket_start(local: datetime, period: str) -> datetime:
    """Start of the local day/month containing `local` (aware), correct across DST."""
    zone = local.tzinfo
    day = local.date() if period == "day" else date(local.year, local.month, 1)
    naive = datetime(day.year, day.month, day.day)
    if zone is None:
        return naive.replace(tzinfo=timezone.utc)
    localize = getattr(zone, "localize", None)  # pytz-style zones
    if callable(localize):
        result: datetime = localize(naive)
        return result
    return naive.replace(tzinfo=zone)
