"""The read side: `StoreReader`, what the web app asks the database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, tzinfo
from typing import Any, Optional, TypeVar, Union

import peewee

from smlogger.reading import Reading
from smlogger.store.merge import merge_consumption, merge_export, merge_history
from smlogger.store.pending import PendingReadings
from smlogger.store.queries import (
    Queries,
    _utc,
    _zone,
    auto_step,
)
from smlogger.store.writer import is_connection_error
from smlogger.timefmt import iso

log = logging.getLogger("smlogger.store")

T = TypeVar("T")


class StoreUnavailableError(RuntimeError):
    """The database could not be reached (or read) for a query.

    `partial` is what could be answered without it, if anything: for a history, the
    readings not committed yet (see `StoreReader.history`).
    """

    def __init__(self, message: str, partial: Optional[dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.partial = partial


class StoreReader:
    """Queries over a database that the `Store` sink (or another logger) writes.

    It owns no thread and no queue: build it from the same `peewee.Database` as the sink, or
    from any database holding the schema. Methods may be called from any thread; each thread
    gets its own connection from peewee, and a connection that died (a database server
    restart) is reopened once before `StoreUnavailableError` is raised.
    """

    def __init__(self, db: peewee.Database, pending: Optional[PendingReadings] = None) -> None:
        self.db = db
        self.queries = Queries(db)
        # the readings the SQL sink has not committed yet (it commits every few minutes):
        # merged into every answer, so the page never lags behind the live values
        self.pending = pending

    def _with_pending(
        self, meter_id: Optional[str], query: Callable[[list[Reading]], T]
    ) -> tuple[T, list[Reading]]:
        """`query`'s answer and the pending readings (of `meter_id`) that it lacks (`query`
        is given them too).

        The pending readings are taken before the database is asked: a commit in between
        would otherwise hide its readings from both. If a commit happened while the database
        answered, they may be in both: then both are read again (commits are minutes apart).
        """
        if self.pending is None:
            return self._read(lambda: query([])), []
        for _ in range(4):
            commits, readings = self.pending.snapshot(meter_id)
            answer = self._read(lambda: query(readings))  # noqa: B023 (called at once)
            if self.pending.commits == commits:
                return answer, readings
        return answer, []  # the database has them by now

    def _read(self, query: Callable[[], T]) -> T:
        for attempt in (1, 2):
            try:
                return query()
            except ValueError:
                raise
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                # a connection kept by this thread may have died with a server restart
                self._close_connection()
                if attempt == 2:
                    raise StoreUnavailableError(f"database unavailable: {exc}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the calling thread's connection (each thread that reads opens its own)."""
        self._close_connection()

    def newest_time(self, meter_id: str) -> Optional[datetime]:
        """The time of the meter's newest stored reading (None: none stored)."""
        return self._read(lambda: self.queries.newest_time(meter_id))

    def _close_connection(self) -> None:
        try:
            self.db.close()
        except Exception:
            log.debug("closing a broken database connection failed", exc_info=True)

    def meters(self) -> list[str]:
        """Ids of the stored meters, in the order they were first stored (then those only
        the pending readings have)."""
        stored = self._read(self.queries.meters)
        if self.pending is None:
            return stored
        known = set(stored)
        for reading in self.pending.snapshot()[1]:
            if reading.meter_id not in known:
                known.add(reading.meter_id)
                stored.append(reading.meter_id)
        return stored

    def history(
        self,
        meter_id: str,
        start: datetime,
        end: datetime,
        step: Optional[int] = None,
        max_points: int = 2000,
    ) -> dict[str, Any]:
        """Chart data for one meter: ``{"meter", "from", "to", "step", "source", "points"}``.

        Without `step`, a range holding at most `max_points` readings returns the readings
        themselves (``step`` None, ``source`` "raw"); otherwise the smallest round step (2 s,
        5 s, ... 1 min, ... 6 h, 1 d, n days) giving at most `max_points` points is used,
        read from the coarsest rollup that tiles it (minute, hour or day; below a minute the
        readings are grouped by the database).
        Points: ``t`` (epoch seconds, bucket start), ``p_avg``/``p_min``/``p_max`` (W, total
        power), ``p_L1``..``p_L3`` (W, mean), ``e_sum``/``e_export`` (kWh, last counter),
        ``n`` (readings in the point). Buckets are UTC-aligned; an unknown meter has no points.

        When the database cannot be read, `StoreUnavailableError` carries as `partial` the
        same answer made of the readings not committed yet alone (``source`` "pending"): while
        the database is down they pile up there, and the page keeps showing the newest ones.
        """
        start, end = _utc(start), _utc(end)

        def query(pending: list[Reading]) -> dict[str, Any]:
            # readings and pending readings together may be too many to list
            waiting = sum(1 for r in pending if start <= r.time < end) if step is None else 0
            return self.queries.history(meter_id, start, end, step, max_points, extra=waiting)

        try:
            result, pending = self._with_pending(meter_id, query)
        except StoreUnavailableError as exc:
            if self.pending is None:
                raise
            waiting = [r for r in self.pending.snapshot(meter_id)[1] if start <= r.time < end]
            partial = _pending_history(meter_id, start, end, step, max_points, waiting)
            raise StoreUnavailableError(str(exc), partial) from exc
        return merge_history(result, [r for r in pending if start <= r.time < end])

    def consumption(
        self,
        meter_id: str,
        period: str,
        start: datetime,
        end: datetime,
        tz: Union[tzinfo, str, None] = None,
    ) -> list[dict[str, Any]]:
        """Energy per local day or month: ``[{"t", "label", "import_kwh", "export_kwh"}]``.

        Each bar is the counter at its end minus the counter at the end of the previous bar
        with data (the first bar with no earlier data: minus its first counter), so the bars
        add up to the meter's own difference even across gaps in logging. `tz` (a tzinfo or
        IANA name, default UTC) sets where days and months start; `start` is widened to the
        start of its day/month. Only buckets with data are listed.
        """
        start, end = _utc(start), _utc(end)

        def query(
            _pending: list[Reading],
        ) -> tuple[list[dict[str, Any]], list[Optional[float]], Optional[datetime]]:
            bars = self.queries.consumption(meter_id, period, start, end, tz)
            newest = self.queries.newest_time(meter_id)
            return bars, self.queries.last_counters(meter_id), newest

        (bars, last, newest), pending = self._with_pending(meter_id, query)
        # only readings after the newest stored one continue its counters; older ones (a
        # replay filling a gap) are counted when they are committed
        pending = [r for r in pending if r.time < end and (newest is None or r.time > newest)]
        return merge_consumption(bars, pending, last, period, _zone(tz), start)

    def export(self, meter_id: Optional[str], start: datetime, end: datetime) -> Iterator[Reading]:
        """Stored readings in [start, end), in time order; all meters when `meter_id` is None
        (with the readings the sink has not committed yet)."""
        start, end = _utc(start), _utc(end)
        stored = self.queries.export(meter_id, start, end)
        if self.pending is None:
            return stored
        _, pending = self.pending.snapshot(meter_id)
        return merge_export(stored, [r for r in pending if start <= r.time < end])


def _pending_history(
    meter_id: str,
    start: datetime,
    end: datetime,
    step: Optional[int],
    max_points: int,
    readings: list[Reading],
) -> dict[str, Any]:
    """A `history` answer of `readings` alone (in [start, end)), with the step
    `Queries.history` would choose for them."""
    if step is None:
        step = auto_step((end - start).total_seconds(), max_points, len(readings))
    empty: dict[str, Any] = {
        "meter": meter_id,
        "from": iso(start),
        "to": iso(end),
        "step": step,
        "source": "pending",
        "points": [],
    }
    return merge_history(empty, readings)
