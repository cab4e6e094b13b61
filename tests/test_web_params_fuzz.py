"""Hypothesis fuzzing of the HTTP query parsers: time, step and range parameters answer with a
value or the documented ApiError (400 naming the parameter) — never another exception, never a
500 through the real app."""

from __future__ import annotations

import io
import json
import string
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import bottle  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smlogger.live import LiveState
from smlogger.reading import Reading, Value
from smlogger.store import Store, StoreReader, open_database
from smlogger.web import build_app
from smlogger.web.params import TIME_MAX, TIME_MIN, ApiError, parse_step, parse_time

# the same examples on every run (derandomize, no example database): CI fails on a bug, not on
# the day's luck; a new finding is added as an @example
FUZZ = settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
METER = "0a01445a47000282225e"

# text shaped like the documented forms, with their pieces swapped, repeated and overgrown
# up to 400 digits: float() of more than 308 of them is infinity
digits = st.one_of(
    st.text(string.digits, min_size=1, max_size=30),
    st.text(string.digits, min_size=300, max_size=400),
)
units = st.sampled_from(["", "s", "sec", "m", "min", "h", "d", "w", "S", "H", "y", "ms", " h"])
numbers = st.one_of(
    digits,
    st.builds("{}.{}".format, digits, digits),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "1e-400", "0x10", "1_000", "٣", "²", "⅕"]),
)
durations = st.builds("{}{}{}".format, st.sampled_from(["", "-", "--", "+", " -"]), numbers, units)
iso_like = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
        datetime.isoformat
    ),
    st.builds(
        "{}{}".format,
        st.datetimes().map(datetime.isoformat),
        st.sampled_from(["Z", "z", "+00:00", "+23:59", "-23:59", "+24:00", "+1", "ZZ", " Z"]),
    ),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59", "2024-02-30"]),
)
time_texts = st.one_of(
    st.text(max_size=40), durations, numbers, iso_like, st.sampled_from(["now", "NOW", " now "])
)
moments = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(9998, 12, 31),
    timezones=st.just(timezone.utc),
)


@FUZZ
@given(text=time_texts, now=moments)
def test_parse_time_gives_a_utc_time_in_range_or_a_400(text: str, now: datetime) -> None:
    try:
        moment = parse_time("from", text, now)
    except ApiError as exc:
        assert exc.status == 400 and exc.parameter == "from" and "'from'" in exc.message
        return
    assert moment.tzinfo is not None and TIME_MIN <= moment <= TIME_MAX
    # what the history query does with it next: arithmetic and formatting must not fail
    assert abs((moment - now).total_seconds()) >= 0
    moment.astimezone(timezone.utc).isoformat()


@FUZZ
@given(text=st.one_of(st.text(max_size=30), durations, numbers))
def test_parse_step_gives_whole_seconds_or_a_400(text: str) -> None:
    try:
        step = parse_step(text)
    except ApiError as exc:
        assert exc.status == 400 and exc.parameter == "step"
        return
    assert isinstance(step, int) and 1 <= step <= 366 * 86400


# ---- through the real app (WSGI in-process, real SQLite store) --------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bottle.Bottle]:
    folder: Path = tmp_path_factory.mktemp("fuzz-db")
    store = Store(open_database(None, folder), spool_dir=folder / "spool")
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    for minute in range(120):
        kwh = 1000 + minute / 100
        values = {
            "1-0:1.8.0*255": Value("1-0:1.8.0*255", kwh * 1000, "Wh"),
            "1-0:16.7.0*255": Value("1-0:16.7.0*255", 600.0, "W"),
        }
        when = start + timedelta(minutes=minute)
        store.write(Reading(meter_id=METER, time=when, values=values, e_sum=kwh, p_sum=600.0))
    store.flush()
    live = LiveState()
    live.add_meter(METER)
    yield build_app(live, StoreReader(store.db))
    store.close()


def call(app: bottle.Bottle, path: str, query: str) -> tuple[int, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    started: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        started.append(status)

    body = b"".join(app(environ, start_response))
    return int(started[0].split()[0]), json.loads(body)


params = st.dictionaries(
    st.sampled_from(["from", "to", "step", "period", "meter"]),
    st.one_of(time_texts, st.sampled_from(["day", "month", "year", METER, ""])),
    max_size=5,
)


@FUZZ
@given(query=params, path=st.sampled_from(["/api/history", "/api/consumption"]))
def test_history_and_consumption_never_fail_with_other_than_400_or_404(
    app: bottle.Bottle, query: dict[str, str], path: str
) -> None:
    status, body = call(app, path, urlencode(query))
    assert status in (200, 400, 404), (status, body)
    if status == 400:
        assert body["status"] == 400 and body["parameter"] in (*query, None), body
    if status == 200:
        assert body["from"] < body["to"]


@FUZZ
@given(raw=st.binary(max_size=60))
def test_raw_query_bytes_never_cause_a_500(app: bottle.Bottle, raw: bytes) -> None:
    # the query string as a client may send it: any bytes, percent-escapes, repeated keys
    query = raw.decode("latin-1")
    status, body = call(app, "/api/history", "from=" + query + "&step=" + query[::-1])
    assert status in (200, 400, 404), (status, body)
