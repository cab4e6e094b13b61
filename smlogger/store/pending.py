"""Readings the SQL sink took but has not committed to its database yet (for the web page).

With the RAM tier the database gets a transaction every `storage.commit_interval` (10 minutes
by default, to spare the SD card), so without this the charts would lag that much behind the
live values. `Store.write` adds every reading here, the writer thread takes them off after
each commit, and `StoreReader` merges them into history, consumption and export.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Optional

from smlogger.reading import Reading

# At most this many readings are kept in memory (2.8 hours at 1 frame/s; at the default
# commit interval about 600 are). While the database is down for longer, the journal keeps
# everything and the page shows the newest of them only.
DEFAULT_LIMIT = 10_000


class PendingReadings:
    """The readings between `Store.write` and the database commit, oldest first.

    The journal delivers readings to the database in the order they were written, so a
    commit of n readings takes the n oldest off. Readings the journal holds before the first
    one here (left by the previous run, or pushed out by `limit`) are counted in `_unseen`
    and taken first; readings that reached the journal without passing `add` hold their
    place in the queue as None (see `in_journal_only`). `commits` grows after every commit:
    a reader that saw it change while it read the database reads again, so a reading is
    never counted twice nor missed (see `StoreReader`).
    """

    def __init__(self, unseen: int = 0, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        # (a full deque drops its oldest item as a new one comes: it is then unseen)
        self._items: deque[Optional[Reading]] = deque(maxlen=limit)
        self._unseen = unseen
        self._limit = limit
        self._lock = threading.Lock()
        self._commits = 0

    def add(self, reading: Reading) -> None:
        """A reading was queued for the database."""
        self.add_many((reading,))

    def add_many(self, readings: Sequence[Optional[Reading]]) -> None:
        """Readings queued for the database together (in this order)."""
        with self._lock:
            items = self._items
            # still in the journal, those pushed out: their commit must not take newer ones
            self._unseen += max(0, len(items) + len(readings) - self._limit)
            items.extend(readings)

    def withdraw(self, count: int) -> None:
        """The `count` newest readings did not reach the journal after all (it refused them).

        (Readings are added before they are queued: a commit that lands right after the
        queueing must find them here.)"""
        with self._lock:
            for _ in range(min(count, len(self._items))):
                self._items.pop()

    def in_journal_only(self, count: int) -> None:
        """`count` readings reached the journal without passing `add`, behind those queued so
        far (rows a full-speed replay handed over in memory, moved to the journal when the
        database failed); their commits take these places off, not queued readings."""
        self.add_many([None] * count)

    def committed(self, count: int) -> None:
        """The `count` oldest queued readings reached the database (or were rejected)."""
        with self._lock:
            from_unseen = min(count, self._unseen)
            self._unseen -= from_unseen
            for _ in range(min(count - from_unseen, len(self._items))):
                self._items.popleft()
            self._commits += 1

    @property
    def commits(self) -> int:
        """How many commits took readings off so far."""
        with self._lock:
            return self._commits

    def snapshot(self, meter_id: Optional[str] = None) -> tuple[int, list[Reading]]:
        """(`commits`, the pending readings of `meter_id` (all meters: None) in write order)."""
        with self._lock:
            items = list(self._items)
            commits = self._commits
        return commits, [
            r for r in items if r is not None and (meter_id is None or r.meter_id == meter_id)
        ]

    def __len__(self) -> int:
        """Readings held in memory."""
        with self._lock:
            return len(self._items) - self._items.count(None)
