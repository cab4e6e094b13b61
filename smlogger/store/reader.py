"""The read side: `StoreReader`, what the web app asks the database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, tzinfo
from typing import Any, Optional, TypeVar, Union

import peewee

from smlogger.reading import Reading
from smlogger.store.queries import Queries
from smlogger.store.writer import is_connection_error

log = logging.getLogger("smlogger.store")

T = TypeVar("T")


class StoreUnavailableError(RuntimeError):
    """The database could not be reached for a query."""


class StoreReader:
    """Queries over a database that the `Store` sink (or another logger) writes.

    It owns no thread and no queue: build it from the same `peewee.Database` as the sink, or
    from any database holding the schema. Methods may be called from any thread; each thread
    gets its own connection from peewee, and a connection that died (a database server
    restart) is reopened once before `StoreUnavailableError` is raised.
    """

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self.queries = Queries(db)

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

    def _close_connection(self) -> None:
        try:
            self.db.close()
        except Exception:
            log.debug("closing a broken database connection failed", exc_info=True)

    def meters(self) -> list[str]:
        """Ids of the stored meters, in the order they were first stored."""
        return self._read(self.queries.meters)

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
        """
        return self._read(lambda: self.queries.history(meter_id, start, end, step, max_points))

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
        return self._read(lambda: self.queries.consumption(meter_id, period, start, end, tz))

    def export(self, meter_id: Optional[str], start: datetime, end: datetime) -> Iterator[Reading]:
        """Stored readings in [start, end), in time order; all meters when `meter_id` is None."""
        return self.queries.export(meter_id, start, end)
