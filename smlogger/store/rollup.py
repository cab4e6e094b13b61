"""Rollups: per meter and UTC bucket aggregates, and the upsert that merges them."""

from __future__ import annotations

import bisect
import operator
from collections.abc import Iterator, Sequence
from typing import Any, Optional

from smlogger.store.dialect import Dialect
from smlogger.store.rows import StoredRow, row_fields, row_minmax, row_samples
from smlogger.store.schema import POWER_FIELDS, ROLLUP_ENERGY, ROLLUPS


class _Bucket:
    """Partial rollup aggregate of one meter and bucket, merged into the table by upsert."""

    __slots__ = (
        "bucket", "e_first", "e_last", "n", "pmax", "pmin", "pn", "psum", "t_first", "t_last",
    )  # fmt: skip

    def __init__(self, bucket: int, t: float) -> None:
        self.bucket = bucket
        self.n = 0
        self.t_first = t
        self.t_last = t
        k = len(POWER_FIELDS)
        self.pn = [0] * k
        self.psum = [0.0] * k
        self.pmin: list[Optional[float]] = [None] * k
        self.pmax: list[Optional[float]] = [None] * k
        self.e_first: list[Optional[float]] = [None] * len(ROLLUP_ENERGY)
        self.e_last: list[Optional[float]] = [None] * len(ROLLUP_ENERGY)

    def add_row(self, row: StoredRow, ts: float) -> None:
        """Add a row; rows arrive in time order (callers sort), so the last one wins."""
        weight = row.samples
        self.n += weight
        fields = row.fields
        minmax = row.minmax
        pmin, pmax = self.pmin, self.pmax
        for i, name in enumerate(POWER_FIELDS):
            value = fields.get(name)
            if value is None:
                continue
            self.pn[i] += weight
            self.psum[i] += value * weight
            lo, hi = minmax.get(name, (value, value)) if minmax else (value, value)
            low, high = pmin[i], pmax[i]
            if low is None or lo < low:
                pmin[i] = lo
            if high is None or hi > high:
                pmax[i] = hi
        if ts < self.t_first:
            self.t_first = ts
        if ts > self.t_last:
            self.t_last = ts
        for i, name in enumerate(ROLLUP_ENERGY):
            value = fields.get(name)
            if value is not None:
                if self.e_first[i] is None:
                    self.e_first[i] = value
                self.e_last[i] = value

    def add_plain_rows(self, rows: list[StoredRow], stamps: list[float]) -> None:
        """`add_row` for time-ordered rows that are single readings (samples 1, no
        minmax): per column in one pass of builtins instead of per row (the same sums,
        extremes and first/last values, in the same order)."""
        self.n += len(rows)
        fields = list(map(row_fields, rows))
        try:
            columns = list(zip(*map(_pick_rollup, fields)))  # (rows hold all of them)
        except KeyError:
            columns = [tuple(f.get(name) for f in fields) for name in _ROLLUP_NAMES]
        pmin, pmax = self.pmin, self.pmax
        for i, column in enumerate(columns[: len(POWER_FIELDS)]):
            present: Sequence[Any] = column
            try:
                total = sum(present, self.psum[i])  # (a None raises TypeError)
            except TypeError:
                present = [v for v in column if v is not None]
                if not present:
                    continue
                total = sum(present, self.psum[i])
            self.pn[i] += len(present)
            self.psum[i] = total
            low, high = min(present), max(present)
            if pmin[i] is None or low < pmin[i]:
                pmin[i] = low
            if pmax[i] is None or high > pmax[i]:
                pmax[i] = high
        self.t_first = min(self.t_first, min(stamps))
        self.t_last = max(self.t_last, max(stamps))
        for i, column in enumerate(columns[len(POWER_FIELDS) :]):
            first = _first_present(column)
            if first is not None:
                if self.e_first[i] is None:
                    self.e_first[i] = first
                self.e_last[i] = _first_present(column[::-1])

    def merge(self, other: _Bucket) -> None:
        """Fold in a later partial aggregate (time order, like `add_row`)."""
        self.n += other.n
        for i in range(len(POWER_FIELDS)):
            self.pn[i] += other.pn[i]
            self.psum[i] += other.psum[i]
            self.pmin[i] = _min_opt(self.pmin[i], other.pmin[i])
            self.pmax[i] = _max_opt(self.pmax[i], other.pmax[i])
        for i in range(len(ROLLUP_ENERGY)):
            if self.e_first[i] is None:
                self.e_first[i] = other.e_first[i]
            if other.e_last[i] is not None:
                self.e_last[i] = other.e_last[i]
        self.t_first = min(self.t_first, other.t_first)
        self.t_last = max(self.t_last, other.t_last)

    def params(self, meter: int) -> list[Any]:
        """The bucket as insert parameters in the rollup tables' column order."""
        out: list[Any] = [meter, self.bucket, self.n, self.t_first, self.t_last]
        for i in range(len(POWER_FIELDS)):
            out += [self.pn[i], self.psum[i], self.pmin[i], self.pmax[i]]
        for i in range(len(ROLLUP_ENERGY)):
            out += [self.e_first[i], self.e_last[i]]
        return out


# per-row getters as C callables
_ROLLUP_NAMES = (*POWER_FIELDS, *ROLLUP_ENERGY)
_pick_rollup = operator.itemgetter(*_ROLLUP_NAMES)


def _min_opt(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None:
        return b
    return a if b is None or a <= b else b


def _max_opt(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None:
        return b
    return a if b is None or a >= b else b


def _first_present(column: Sequence[Optional[float]]) -> Optional[float]:
    for value in column:
        if value is not None:
            return value
    return None


def rollup_buckets(rows: Sequence[StoredRow]) -> list[dict[int, _Bucket]]:
    """Partial aggregates per rollup level (minute, hour, day) of rows of one meter."""
    return rollup_levels(minute_buckets(rows))


def minute_buckets(rows: Sequence[StoredRow]) -> dict[int, _Bucket]:
    """The minute level of `rollup_buckets` (usually of time-ordered rows)."""
    stamps = [row.time.timestamp() for row in rows]
    if any(map(operator.gt, stamps, stamps[1:])):
        # the minutes below are runs of time-ordered rows
        order = sorted(range(len(stamps)), key=stamps.__getitem__)
        rows = [rows[i] for i in order]
        stamps = [stamps[i] for i in order]
    # a batch of single readings is summed a minute at once; one holding aggregates row by row
    plain = not any(map(row_minmax, rows)) and list(map(row_samples, rows)).count(1) == len(rows)
    minutes: dict[int, _Bucket] = {}
    width = ROLLUPS[0][1]
    start = 0
    while start < len(stamps):
        key = int(stamps[start] // width) * width
        end = bisect.bisect_left(stamps, key + width, start)  # the rows of that minute
        bucket = minutes[key] = _Bucket(key, stamps[start])
        if plain:
            bucket.add_plain_rows(list(rows[start:end]), stamps[start:end])
        else:
            for i in range(start, end):
                bucket.add_row(rows[i], stamps[i])
        start = end
    return minutes


def rollup_levels(minutes: dict[int, _Bucket]) -> list[dict[int, _Bucket]]:
    """Every level of `rollup_buckets` from the minute level."""
    levels = [minutes]
    for _table, seconds in ROLLUPS[1:]:
        coarser: dict[int, _Bucket] = {}
        for fine in sorted(levels[-1].values(), key=lambda b: b.bucket):
            key = fine.bucket // seconds * seconds
            target = coarser.get(key)
            if target is None:
                target = coarser[key] = _Bucket(key, fine.t_first)
            target.merge(fine)
        levels.append(coarser)
    return levels


def minute_runs(rows: Sequence[StoredRow], size: int) -> Iterator[Sequence[StoredRow]]:
    """Time-ordered rows in pieces of `size` or a little more, none splitting a minute (the
    minute buckets of the pieces are those of all rows)."""
    width = ROLLUPS[0][1]
    start = 0
    while start < len(rows):
        end = min(start + size, len(rows))
        if end < len(rows):
            minute = rows[end - 1].time.timestamp() // width
            while end < len(rows) and rows[end].time.timestamp() // width == minute:
                end += 1
        yield rows[start:end]
        start = end


def _rollup_upsert_tail(d: Dialect, table: str) -> str:
    def add(column: str) -> str:
        """SQL adding the incoming value of `column` to the stored one."""
        return f"{d.old(table, column)} + {d.new(column)}"

    sets: list[tuple[str, str]] = [("n", add("n"))]
    for name in POWER_FIELDS:
        n, s, lo, hi = (f"{name}_n", f"{name}_sum", f"{name}_min", f"{name}_max")
        sets += [
            (n, add(n)),
            (s, add(s)),
            (lo, d.least(d.old(table, lo), d.new(lo))),
            (hi, d.greatest(d.old(table, hi), d.new(hi))),
        ]
    t_first_old, t_first_new = d.old(table, "t_first"), d.new("t_first")
    t_last_old, t_last_new = d.old(table, "t_last"), d.new("t_last")
    for name in ROLLUP_ENERGY:
        first, last = f"{name}_first", f"{name}_last"
        sets.append(
            (
                first,
                f"CASE WHEN {t_first_new} < {t_first_old} "
                f"THEN COALESCE({d.new(first)}, {d.old(table, first)}) "
                f"ELSE COALESCE({d.old(table, first)}, {d.new(first)}) END",
            )
        )
        sets.append(
            (
                last,
                f"CASE WHEN {t_last_new} >= {t_last_old} "
                f"THEN COALESCE({d.new(last)}, {d.old(table, last)}) "
                f"ELSE COALESCE({d.old(table, last)}, {d.new(last)}) END",
            )
        )
    # last: the CASEs above read the stored t_first/t_last (MySQL assigns left to right)
    sets.append(("t_first", d.least(t_first_old, t_first_new)))
    sets.append(("t_last", d.greatest(t_last_old, t_last_new)))
    return d.upsert_tail(("meter", "bucket"), sets)
