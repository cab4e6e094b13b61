"""Small helpers shared by the test modules: readings, a collecting sink, ports and polling.

Real servers (MariaDB, PostgreSQL) live in `servers.py`; the recordings fixtures in `conftest.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Union

from smlogger import config
from smlogger.reading import Reading, Value

METER = "0a01445a47000282225e"
"""Server id of the meter `reading()` builds readings for unless told otherwise."""

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
"""The moment `reading(seconds)` counts from."""

MANUFACTURER = "1-0:96.50.1*1"
"""OBIS code of the manufacturer id that every `reading()` carries as an octet string."""


def reading(
    at: Union[datetime, float],
    e_sum: Optional[float] = None,
    p_sum: Optional[float] = None,
    *,
    meter: str = METER,
    e_export: Optional[float] = None,
    phases: Sequence[Optional[float]] = (None, None, None),
    u: Optional[float] = None,
    scaler: int = -1,
    **fields: Any,
) -> Reading:
    """A reading as the decoder would make it: `at` is a time or seconds after `T0`.

    Each given energy (kWh) and power (W) also appears under its OBIS code in `values`, the
    import register with the resolution 10**`scaler` Wh, next to the manufacturer id (an octet
    string, so every path that serialises values meets bytes). `phases` are the phase powers,
    `u` the L1 voltage, and `fields` any other `Reading` field (`samples`, `minmax`,
    `e_t1`, ...).
    """
    values: dict[str, Value] = {}
    if e_sum is not None:
        raw = round(e_sum * 1000 / 10.0**scaler)
        values["1-0:1.8.0*255"] = Value("1-0:1.8.0*255", e_sum * 1000, "Wh", raw, scaler)
    if e_export is not None:
        values["1-0:2.8.0*255"] = Value("1-0:2.8.0*255", e_export * 1000, "Wh")
    if p_sum is not None:
        values["1-0:16.7.0*255"] = Value("1-0:16.7.0*255", p_sum, "W")
    values[MANUFACTURER] = Value(MANUFACTURER, b"ISK", None)
    given = {"e_sum": e_sum, "e_export": e_export, "p_sum": p_sum, "u_L1": u}
    given.update(zip(("p_L1", "p_L2", "p_L3"), phases))
    return Reading(
        meter_id=meter,
        time=at if isinstance(at, datetime) else T0 + timedelta(seconds=at),
        values=values,
        **{**given, **fields},
    )


def known(values: Iterable[Optional[float]]) -> list[float]:
    """The values of `Reading` fields that the test set, failing if one is missing (None)."""
    found: list[float] = []
    for value in values:
        assert value is not None, "a reading lacks a field the test gave it"
        found.append(value)
    return found


def counter(status: Mapping[str, object], key: str) -> int:
    """The count `key` of a sink's or source's status, which types its values as `object`."""
    value = status[key]
    assert isinstance(value, int), f"{key} is {value!r}, not a count"
    return value


class Collect:
    """A sink that keeps what it is given, safe to read from the test thread while the
    pipeline writes. It can fail its first `fail_first` writes and take `delay` seconds
    per write, to exercise the sink worker's retries and queue."""

    name = "collect"

    def __init__(self, fail_first: int = 0, delay: float = 0.0) -> None:
        self.readings: list[Reading] = []
        self.fail_first = fail_first
        self.delay = delay
        self.calls = 0
        self.flushes = 0
        self.closed = False
        self.closed_in: Optional[str] = None  # the thread's name: sinks close where they write
        self._lock = threading.Lock()

    def write(self, reading: Reading) -> None:
        """Keeps `reading`, after failing or sleeping as configured."""
        with self._lock:
            self.calls += 1
            if self.calls <= self.fail_first:
                raise OSError("disk on fire")
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.readings.append(reading)

    def flush(self) -> None:
        """Counts the flushes."""
        self.flushes += 1

    def close(self) -> None:
        """Notes that and in which thread the sink was closed."""
        self.closed = True
        self.closed_in = threading.current_thread().name

    def status(self) -> dict[str, object]:
        """The sink's own status entry, which the sink worker merges into its own."""
        return {"collected": len(self.readings)}

    def count(self, meter: str) -> int:
        """How many readings of `meter` arrived so far."""
        with self._lock:
            return sum(1 for r in self.readings if r.meter_id == meter)


# the least time any wait_for gives its condition before it fails the test
MIN_WAIT_S = 30.0

# what one request to a running logger may raise on a loaded machine (refused, reset, a slow
# or half answer, a 503 before the first frame): a wait_for polling it retries (`ignore=`)
HTTP_TROUBLE: tuple[type[BaseException], ...] = (
    OSError,
    http.client.HTTPException,
    ValueError,
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for servers that need a fixed one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = MIN_WAIT_S,
    what: str = "it",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Polls `predicate` until it returns something truthy and returns that; an
    exception listed in `ignore` counts as "not yet" (files that do not exist yet).

    A wait ends as soon as its condition holds; `timeout` only says when to give up, and
    never less than MIN_WAIT_S: a loaded CI machine (2 cores, a browser, servers) can stall
    a process for seconds, which must not fail a test that checks what happens, not when."""
    end = time.monotonic() + max(timeout, MIN_WAIT_S)
    while time.monotonic() < end:
        try:
            result = predicate()
        except ignore:
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def load_config(argv: list[str], env: Optional[dict[str, str]] = None) -> config.Config:
    """The configuration `smlogger run ARGV` would run with (no config file, `env` only)."""
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.load(parser.parse_args(argv), env or {})


def csv_texts(folder: Path) -> list[tuple[Path, str]]:
    """Every CSV file under `folder` with its text, oldest first.

    The rolling CSV log compresses a finished day (`.csv.gz`), and a replay ending "now" or a
    run around midnight spans two days: counting only `*.csv` would miss the first one.
    """
    out = []
    for path in sorted(folder.rglob("*.csv*"), key=lambda p: p.name):
        if path.name.endswith(".csv.gz"):
            out.append((path, gzip.decompress(path.read_bytes()).decode("utf-8")))
        elif path.name.endswith(".csv"):
            out.append((path, path.read_text(encoding="utf-8")))
    return out


@contextlib.contextmanager
def tiered_store(folder: Path, *, sync_interval: float, commit_interval: float) -> Iterator[Any]:
    """A Store on a SQLite database in `folder` with both journal tiers (RAM and disk), as the
    service builds it; closed (store, then database) on the way out."""
    from smlogger.store import Store, open_database

    db = open_database(None, folder)
    store = Store(
        db,
        spool_dir=folder / "spool",
        ram_dir=folder / "ram",
        sync_interval=sync_interval,
        commit_interval=commit_interval,
    )
    try:
        yield store
    finally:
        store.close()
        db.close()
