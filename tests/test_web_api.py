"""The HTTP API over real HTTP: our h11 server on a free port, a real LiveState, a real SQLite
Store filled with three days of readings."""

from __future__ import annotations

import http.client
import json
import math
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from smlogger.live import LiveState
from smlogger.reading import Reading, Value
from smlogger.states import page_link_states
from smlogger.store import Store, StoreReader, open_database
from smlogger.store.pending import PendingReadings
from smlogger.web import WebServer, build_app

METER_A = "0a01445a47000282225e"  # live and stored
METER_B = "0649534b010e1f62a5a1"  # live only
START_KWH = 12339.7
WATTS = 600.0  # the stored history: a steady 600 W, so 0.01 kWh per minute


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("Content-Type", "").startswith("application/json"), self.headers
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def request(
    server: WebServer, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> Response:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def get(server: WebServer, path: str, **params: str) -> Response:
    return request(server, path + ("?" + urlencode(params) if params else ""))


def make_reading(meter: str, when: datetime, watts: float, kwh: float, **extra: Any) -> Reading:
    values = {
        "1-0:1.8.0*255": Value("1-0:1.8.0*255", kwh * 1000, "Wh", raw=int(kwh * 10000), scaler=-1),
        "1-0:16.7.0*255": Value("1-0:16.7.0*255", watts, "W", raw=int(watts), scaler=0),
        "1-0:96.1.0*255": Value("1-0:96.1.0*255", bytes.fromhex(meter), None),
    }
    return Reading(meter_id=meter, time=when, values=values, e_sum=kwh, p_sum=watts, **extra)


def history_readings(end: datetime, days: int) -> Iterator[Reading]:
    start = end - timedelta(days=days)
    for minute in range(days * 1440):
        when = start + timedelta(minutes=minute)
        yield make_reading(METER_A, when, WATTS, START_KWH + minute * WATTS / 60 / 1000)


@pytest.fixture(scope="module")
def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, now: datetime) -> Iterator[StoreReader]:
    data = tmp_path_factory.mktemp("db")
    db = open_database(None, data)
    sink = Store(db, spool_dir=data / "spool")
    assert sink.bulk_load(history_readings(now - timedelta(minutes=5), days=3)) == 3 * 1440
    yield StoreReader(db)
    sink.close()


@pytest.fixture(scope="module")
def live(now: datetime) -> LiveState:
    live = LiveState()
    live.set_source("/dev/ttyUSB0", "connected", stats={"frames_ok": 0, "crc_errors": 0})
    live.update(
        make_reading(
            METER_A,
            now - timedelta(seconds=2),
            665.0,
            12400.123,
            p_L1=300.0,
            p_L2=200.0,
            p_L3=165.0,
            u_L1=230.1,
            freq=50.02,
        ),
        source="/dev/ttyUSB0",
    )
    live.frame_received("/dev/ttyUSB0", {"frames_ok": 99, "crc_errors": 1, "bytes": 4567})
    live.set_source(
        "tcp://10.0.0.5:8888",
        "no data",
        detail="silent for 60 s",
        stats={"frames_ok": 5, "crc_errors": 0},
    )
    live.update(
        make_reading(METER_B, now - timedelta(seconds=1), -1500.0, 5.5, e_export=77.25),
        source="tcp://10.0.0.5:8888",
    )
    live.set_sink_status("sql", {"queue_depth": 3, "written": 4321, "last_error": None})
    live.set_sink_status("csv", {"queue_depth": 0, "written": 4324, "last_error": "disk full"})
    return live


@pytest.fixture(scope="module")
def server(live: LiveState, store: StoreReader) -> Iterator[WebServer]:
    app = build_app(live, store, status_extra=lambda: {"store_interval_s": 0, "web": {"x": 1}})
    with WebServer(app, "127.0.0.1", 0) as srv:
        yield srv


def serve(live: LiveState, store: StoreReader | None = None, **kwargs: Any) -> WebServer:
    srv = WebServer(build_app(live, store, **kwargs), "127.0.0.1", 0)
    srv.start()
    return srv


def assert_error(resp: Response, status: int, parameter: str | None = None) -> dict[str, Any]:
    assert resp.status == status, resp.body
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    if parameter is not None:
        assert body["parameter"] == parameter
        assert parameter in body["error"]
    return body


# ---- basics -----------------------------------------------------------------------------------


def test_server_binds_a_free_port_on_localhost(server: WebServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/"


def test_healthz(server: WebServer) -> None:
    resp = get(server, "/healthz")
    assert resp.status == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert body["sources"] == {"/dev/ttyUSB0": "connected", "tcp://10.0.0.5:8888": "no data"}
    head = request(server, "/healthz", "HEAD")
    assert (head.status, head.body) == (200, b"")


def test_healthz_503_until_a_frame_and_while_a_sink_fails() -> None:
    live = LiveState()
    live.set_source("house", "waiting", detail="no such file")
    live.watch_source("house", 30.0)
    live.set_diagnosis(
        "house", {"code": "missing", "sentence": "/dev/ttyUSB0 does not exist", "hint": "plug"}
    )
    srv = serve(live)
    try:
        resp = get(srv, "/healthz")
        assert resp.status == 503
        body = resp.json()
        assert body["status"] == "unhealthy"
        assert body["reasons"] == ["house: no valid frame yet: /dev/ttyUSB0 does not exist"]
        assert body["diagnoses"]["house"]["code"] == "missing"
        assert request(srv, "/healthz", "HEAD").status == 503
        status = get(srv, "/api/status").json()["sources"]["house"]
        assert (status["diagnosis"]["code"], status["watchdog_s"]) == ("missing", 30.0)

        live.set_source("house", "connected", detail="receiving frames")
        live.set_diagnosis("house", {"code": "ok", "sentence": "SML frames arrive", "hint": ""})
        live.frame_received("house", {"frames_ok": 1, "crc_errors": 0})
        live.set_sink_status("sql", {"db": "ok", "last_error": None, "failing": False})
        resp = get(srv, "/healthz")
        assert (resp.status, resp.json()["reasons"]) == (200, [])
        assert get(srv, "/api/live").json()["problems"] == []

        live.set_sink_status("sql", {"db": "down", "last_error": "OperationalError: refused"})
        resp = get(srv, "/healthz")
        assert resp.status == 503
        assert resp.json()["reasons"] == ["sink sql: database down (OperationalError: refused)"]
    finally:
        srv.stop()


def test_api_index(server: WebServer) -> None:
    assert "/api/history" in get(server, "/api").json()["endpoints"]


def test_meters(server: WebServer) -> None:
    body = get(server, "/api/meters").json()
    assert body["default"] == METER_A
    by_id = {m["id"]: m for m in body["meters"]}
    assert list(by_id) == [METER_A, METER_B]
    assert by_id[METER_A]["live"] and by_id[METER_A]["stored"]
    assert by_id[METER_B]["live"] and not by_id[METER_B]["stored"]
    assert by_id[METER_B]["last_seen"].endswith("Z")
    assert by_id[METER_A]["label"] == "1 DZG00 4208 2910"  # as printed on the meter
    assert by_id[METER_B]["label"] == METER_B


# ---- /api/live --------------------------------------------------------------------------------


def test_live_default_meter(server: WebServer, now: datetime) -> None:
    body = get(server, "/api/live").json()
    assert body["meter"] == METER_A
    assert body["fields"]["p_sum"] == 665.0
    assert body["fields"]["e_sum"] == 12400.123
    assert body["fields"]["p_L3"] == 165.0
    assert body["fields"]["e_export"] is None
    assert set(body["fields"]) == set(Reading.FIELDS)
    assert body["ts"] == (now - timedelta(seconds=2)).timestamp()
    assert 1.9 <= body["age_s"] < 60
    values = {v["obis"]: v for v in body["values"]}
    assert values["1-0:1.8.0*255"] == {"obis": "1-0:1.8.0*255", "value": 12400123.0, "unit": "Wh"}
    assert values["1-0:96.1.0*255"]["value"] == METER_A  # octet strings as hex
    link = body["link"]
    assert link["state"] == "connected"
    assert link["sources"] == ["/dev/ttyUSB0"]
    assert link["crc_error_rate"] == pytest.approx(0.01)
    assert link["last_frame_age_s"] is not None
    assert body["server_time"].endswith("Z")
    assert get(server, "/api/live").headers["Cache-Control"] == "no-store"


def test_live_other_meter(server: WebServer) -> None:
    body = get(server, "/api/live", meter=METER_B).json()
    assert body["meter"] == METER_B
    assert body["fields"]["p_sum"] == -1500.0
    assert body["fields"]["e_export"] == 77.25
    assert body["link"]["state"] == "no data"
    assert body["link"]["detail"] == "silent for 60 s"


def test_live_meter_errors(server: WebServer) -> None:
    assert_error(get(server, "/api/live", meter="ffff"), 404, "meter")
    assert_error(get(server, "/api/live", meter=""), 400, "meter")
    assert_error(get(server, f"/api/live?meter={METER_A}&meter={METER_B}"), 400, "meter")


def test_live_before_any_reading() -> None:
    srv = serve(LiveState())
    try:
        body = get(srv, "/api/live").json()
        assert body["meter"] is None
        assert body["time"] is None and body["ts"] is None
        assert body["fields"] == dict.fromkeys(Reading.FIELDS)
        assert body["link"]["state"] == "waiting"
        assert get(srv, "/api/meters").json() == {"meters": [], "default": None}
    finally:
        srv.stop()


# ---- /api/history -----------------------------------------------------------------------------


def points_of(resp: Response) -> list[dict[str, Any]]:
    assert resp.status == 200, resp.body
    points: list[dict[str, Any]] = resp.json()["points"]
    return points


def test_history_default_is_last_24_hours(server: WebServer) -> None:
    body = get(server, "/api/history").json()
    assert body["meter"] == METER_A
    t_from = datetime.fromisoformat(body["from"].replace("Z", "+00:00"))
    t_to = datetime.fromisoformat(body["to"].replace("Z", "+00:00"))
    assert t_to - t_from == timedelta(hours=24)
    points = body["points"]
    assert 0 < len(points) <= 2000
    assert body["step"] and body["step"] >= 60
    for p in points:
        assert set(p) >= {"t", "ts", "p_avg", "p_min", "p_max", "e_sum", "e_export"}
        assert p["p_avg"] == pytest.approx(WATTS)
        assert p["t"].endswith("Z")
        assert t_from.timestamp() - body["step"] <= p["ts"] < t_to.timestamp()


@pytest.mark.parametrize("span", ["hour", "day", "week", "month", "year"])
def test_history_ranges_stay_under_2000_points(server: WebServer, span: str, now: datetime) -> None:
    seconds = {"hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400}
    frm = now - timedelta(seconds=seconds.get(span, 365 * 86400))
    points = points_of(get(server, "/api/history", meter=METER_A, **{"from": frm.isoformat()}))
    assert 0 < len(points) <= 2000
    times = [p["ts"] for p in points]
    assert times == sorted(times)
    assert points[-1]["e_sum"] == pytest.approx(START_KWH + (3 * 1440 - 1) * 0.01, abs=1e-6)


def test_history_time_formats(server: WebServer, now: datetime) -> None:
    frm, to = now - timedelta(hours=3), now - timedelta(hours=1)
    variants = [
        {"from": frm.isoformat(), "to": to.isoformat()},
        {"from": frm.strftime("%Y-%m-%dT%H:%M:%SZ"), "to": to.strftime("%Y-%m-%dT%H:%M:%SZ")},
        {"from": frm.replace(tzinfo=None).isoformat(), "to": to.replace(tzinfo=None).isoformat()},
        {"from": str(int(frm.timestamp())), "to": str(int(to.timestamp()))},
        {"from": f"{frm.timestamp():.3f}", "to": f"{to.timestamp():.3f}"},
    ]
    answers = [get(server, "/api/history", meter=METER_A, **v).json() for v in variants]
    for body in answers:
        assert body["from"] == answers[0]["from"] == frm.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        assert body["points"] == answers[0]["points"]
    assert len(answers[0]["points"]) >= 119  # one reading a minute over two hours
    relative = get(server, "/api/history", meter=METER_A, **{"from": "-2h", "to": "now"}).json()
    assert len(relative["points"]) >= 110  # the stored data ends 5 minutes ago


def test_history_explicit_step(server: WebServer, now: datetime) -> None:
    body = get(
        server,
        "/api/history",
        meter=METER_A,
        step="1h",
        **{"from": (now - timedelta(days=2)).isoformat()},
    ).json()
    assert body["step"] == 3600
    times = [p["ts"] for p in body["points"]]
    assert 47 <= len(times) <= 49
    assert all(t % 3600 == 0 for t in times)
    assert all(b - a == 3600 for a, b in zip(times, times[1:]))
    minute = get(server, "/api/history", meter=METER_A, step="300", **{"from": "-1h"}).json()
    assert minute["step"] == 300


def test_history_of_meter_without_stored_data(server: WebServer) -> None:
    body = get(server, "/api/history", meter=METER_B).json()
    assert body["points"] == []


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2024-02-30"}, "to"),
        ({"from": "1714557600000"}, "from"),
        ({"from": "now", "to": "-1h"}, "from"),
        ({"from": "2024-05-01", "to": "2024-05-01"}, "from"),
        ({"step": "0"}, "step"),
        ({"step": "-60"}, "step"),
        ({"step": "fast"}, "step"),
        ({"step": "1", "from": "-30d"}, "step"),
        ({"from": "1e999"}, "from"),
        ({"to": "nan"}, "to"),
        ({"meter": ""}, "meter"),
    ],
)
def test_history_bad_parameters(server: WebServer, params: dict[str, str], parameter: str) -> None:
    assert_error(get(server, "/api/history", **params), 400, parameter)


def test_history_unknown_meter(server: WebServer) -> None:
    assert_error(get(server, "/api/history", meter="nope"), 404, "meter")


# ---- /api/consumption -------------------------------------------------------------------------


def test_consumption_daily(server: WebServer) -> None:
    body = get(server, "/api/consumption", meter=METER_A, period="day").json()
    assert body["period"] == "day"
    bars = body["bars"]
    assert 3 <= len(bars) <= 4  # three days of data across local day boundaries
    for bar in bars:
        assert set(bar) >= {"t", "ts", "import_kwh", "export_kwh"}
        assert bar["import_kwh"] > 0
        assert bar["export_kwh"] is None
    total = sum(b["import_kwh"] for b in bars)
    assert total == pytest.approx((3 * 1440 - 1) * 0.01, abs=1e-3)
    assert [b["ts"] for b in bars] == sorted(b["ts"] for b in bars)


def test_consumption_monthly(server: WebServer) -> None:
    body = get(server, "/api/consumption", meter=METER_A, period="month", **{"from": "-400d"})
    bars = body.json()["bars"]
    assert 1 <= len(bars) <= 2
    assert sum(b["import_kwh"] for b in bars) == pytest.approx((3 * 1440 - 1) * 0.01, abs=1e-3)


def test_consumption_errors(server: WebServer) -> None:
    assert_error(get(server, "/api/consumption", period="week"), 400, "period")
    assert_error(get(server, "/api/consumption", meter="x"), 404, "meter")
    assert_error(get(server, "/api/consumption", **{"from": "-1d", "to": "-2d"}), 400, "from")
    assert_error(
        get(server, "/api/consumption", period="day", **{"from": "1970-01-01"}), 400, "from"
    )


def test_history_without_database() -> None:
    srv = serve(LiveState())
    try:
        assert_error(get(srv, "/api/history"), 503)
        assert_error(get(srv, "/api/consumption"), 503)
        page = get(srv, "/")
        assert page.status == 200
        assert "History needs the database" in page.text
    finally:
        srv.stop()


def test_broken_database_is_503_not_500(tmp_path: Path, live: LiveState, now: datetime) -> None:
    db = open_database(None, tmp_path)
    store = Store(db, spool_dir=tmp_path / "spool")
    try:
        store.bulk_load([make_reading(METER_A, now - timedelta(minutes=1), 1.0, 1.0)])
        with sqlite3.connect(tmp_path / "smlogger.db") as con:  # someone damages the database
            tables = con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
            for (table,) in tables:
                if table != "meters":
                    con.execute(f'DROP TABLE "{table}"')
        srv = serve(live, StoreReader(db))
        try:
            resp = get(srv, "/api/history", meter=METER_A)
            assert_error(resp, 503)
            assert resp.headers["Retry-After"]
            assert_error(get(srv, "/api/consumption", meter=METER_A), 503)
            assert get(srv, "/api/live").status == 200  # live data does not need the database
        finally:
            srv.stop()
    finally:
        store.close()


def test_broken_database_history_shows_the_readings_waiting_for_it(
    tmp_path: Path, live: LiveState, now: datetime
) -> None:
    """While the database cannot be read the chart keeps the readings not committed yet,
    marked so; consumption (which needs the stored counters) stays a 503."""
    db = open_database(None, tmp_path)
    store = Store(db, spool_dir=tmp_path / "spool")
    try:
        store.bulk_load([make_reading(METER_A, now - timedelta(minutes=30), 1.0, 1.0)])
        with sqlite3.connect(tmp_path / "smlogger.db") as con:  # someone damages the database
            con.execute('DROP TABLE "readings"')
        pending = PendingReadings()
        waiting = [
            make_reading(METER_A, now - timedelta(seconds=60 - s), 500.0 + s, 2.0 + s / 1000)
            for s in range(0, 60, 2)
        ]
        pending.add_many(waiting)
        pending.add(make_reading(METER_B, now - timedelta(seconds=5), 9.0, 9.0))
        srv = serve(live, StoreReader(db, pending))
        try:
            resp = get(srv, "/api/history", meter=METER_A, **{"from": "-10m"})
            assert resp.status == 200, resp.body
            body = resp.json()
            assert body["unavailable"] == "database unavailable"
            assert body["source"] == "pending" and body["step"] is None
            assert [p["ts"] for p in body["points"]] == [r.time.timestamp() for r in waiting]
            assert [p["p_avg"] for p in body["points"]] == [r.p_sum for r in waiting]
            # too many points for the range: buckets of a step, as from the database
            stepped = get(srv, "/api/history", meter=METER_A, step="30s", **{"from": "-10m"})
            assert stepped.status == 200, stepped.body
            assert stepped.json()["step"] == 30
            assert sum(p["n"] for p in stepped.json()["points"]) == len(waiting)
            assert_error(get(srv, "/api/consumption", meter=METER_A), 503)
            # a bad parameter is still the caller's error
            assert_error(get(srv, "/api/history", meter=METER_A, step="0"), 400, "step")
        finally:
            srv.stop()
    finally:
        store.close()


def test_history_and_consumption_show_readings_not_yet_committed(
    tmp_path: Path, live: LiveState, now: datetime
) -> None:
    """The database gets a transaction every storage.commit_interval (10 minutes by default):
    the page's chart and bars still end at the newest reading."""
    db = open_database(None, tmp_path)
    store = Store(db, spool_dir=tmp_path / "spool", ram_dir=tmp_path / "ram", commit_interval=3600)
    try:
        first = now - timedelta(minutes=3)
        for s in range(0, 180, 10):
            store.write(make_reading(METER_A, first + timedelta(seconds=s), 500.0, 100 + s / 3600))
        assert store.status()["batches"] == 0  # nothing in the database yet
        srv = serve(live, StoreReader(db, store.pending))
        try:
            start = (now - timedelta(hours=1)).isoformat()
            body = get(srv, "/api/history", meter=METER_A, **{"from": start}).json()
            newest = first + timedelta(seconds=170)
            assert body["points"][-1]["t"] == newest.strftime("%Y-%m-%dT%H:%M:%S.000Z")
            assert body["points"][-1]["p_avg"] == 500.0
            bars = get(srv, "/api/consumption", meter=METER_A).json()["bars"]
            # all bars: the three minutes may cross midnight (two bars that add up to the
            # meter's own difference)
            assert bars and bars[-1]["import_kwh"] > 0
            total = sum(b["import_kwh"] for b in bars)
            assert total == pytest.approx(170 / 3600, abs=1e-4)
            assert METER_A in [m["id"] for m in get(srv, "/api/meters").json()["meters"]]
        finally:
            srv.stop()
    finally:
        store.close()


# ---- /api/status, /metrics --------------------------------------------------------------------


def test_status(server: WebServer) -> None:
    body = get(server, "/api/status").json()
    assert body["versions"]["smlogger"] == body["version"]
    assert {"python", "bottle", "h11"} <= set(body["versions"])
    assert body["meters"] == [METER_A, METER_B]
    usb = body["sources"]["/dev/ttyUSB0"]
    assert usb["state"] == "connected"
    assert usb["stats"] == {"frames_ok": 99, "crc_errors": 1, "bytes": 4567}
    assert usb["crc_error_rate"] == pytest.approx(0.01)
    assert usb["meters"] == [METER_A]
    assert body["sources"]["tcp://10.0.0.5:8888"]["detail"] == "silent for 60 s"
    assert body["sinks"]["sql"]["queue_depth"] == 3
    assert body["sinks"]["csv"]["last_error"] == "disk full"
    assert body["uptime_s"] >= 0
    # status_extra: new keys added, dicts merged, core keys not replaced
    assert body["store_interval_s"] == 0
    assert body["web"]["x"] == 1 and body["web"]["token_required"] is False


def test_status_extra_failure_is_reported() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    srv = serve(LiveState(), status_extra=broken)
    try:
        body = get(srv, "/api/status").json()
        assert body["status_extra_error"] == "RuntimeError: boom"
    finally:
        srv.stop()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


def parse_prometheus(text: str) -> dict[str, dict[str, Any]]:
    """A strict reader of the text format 0.0.4: HELP and TYPE once per family, before its
    samples; samples of a family together; labels well escaped."""
    assert text.endswith("\n")
    families: dict[str, dict[str, Any]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_text = line[7:].split(" ", 1)
            assert name not in families, f"family {name} twice"
            families[name] = {"help": help_text, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name == current and families[name]["type"] is None
            assert kind in ("counter", "gauge")
            families[name]["type"] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, line
            name, labels_text, value = match.groups()
            assert name == current, f"{name} outside its family"
            labels = {}
            if labels_text:
                pos = 0
                while pos < len(labels_text):
                    label = _LABEL.match(labels_text, pos)
                    assert label, labels_text[pos:]
                    raw = label.group(2)
                    labels[label.group(1)] = re.sub(
                        r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), raw
                    )
                    pos = label.end()
            number = float(value)
            assert not math.isnan(number) or value == "NaN"
            families[name]["samples"].append((labels, number))
    for name, family in families.items():
        assert family["type"] is not None
        if family["type"] == "counter":
            assert name.endswith("_total")
    return families


def sample(families: dict[str, dict[str, Any]], name: str, **labels: str) -> float:
    matches = [
        v for ls, v in families[name]["samples"] if all(ls.get(k) == x for k, x in labels.items())
    ]
    assert len(matches) == 1, (name, labels, families[name]["samples"])
    return float(matches[0])


def test_metrics(server: WebServer) -> None:
    resp = get(server, "/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    fam = parse_prometheus(resp.text)
    assert sample(fam, "smlogger_power_watts", meter=METER_A, phase="total") == 665.0
    assert sample(fam, "smlogger_power_watts", meter=METER_A, phase="L1") == 300.0
    assert sample(fam, "smlogger_power_watts", meter=METER_B, phase="total") == -1500.0
    assert (
        sample(fam, "smlogger_energy_kwh_total", meter=METER_A, direction="import", tariff="all")
        == 12400.123
    )
    assert (
        sample(fam, "smlogger_energy_kwh_total", meter=METER_B, direction="export", tariff="all")
        == 77.25
    )
    assert sample(fam, "smlogger_voltage_volts", meter=METER_A, phase="L1") == 230.1
    assert sample(fam, "smlogger_frequency_hertz", meter=METER_A) == 50.02
    assert sample(fam, "smlogger_frames_total", source="/dev/ttyUSB0") == 99
    assert sample(fam, "smlogger_crc_errors_total", source="/dev/ttyUSB0") == 1
    assert sample(fam, "smlogger_received_bytes_total", source="/dev/ttyUSB0") == 4567
    assert sample(fam, "smlogger_source_up", source="/dev/ttyUSB0") == 1
    assert sample(fam, "smlogger_source_up", source="tcp://10.0.0.5:8888") == 0
    assert sample(fam, "smlogger_source_state", source="tcp://10.0.0.5:8888", state="no data") == 1
    assert 0 <= sample(fam, "smlogger_last_frame_age_seconds", source="/dev/ttyUSB0") < 60
    assert 1.9 <= sample(fam, "smlogger_reading_age_seconds", meter=METER_A) < 60
    assert sample(fam, "smlogger_sink_queue_depth", sink="sql") == 3
    assert sample(fam, "smlogger_sink_written_total", sink="csv") == 4324
    assert sample(fam, "smlogger_info", version=get(server, "/healthz").json()["version"]) == 1
    # a meter that does not send voltages has no voltage sample rather than a fake zero
    assert not [s for s in fam["smlogger_voltage_volts"]["samples"] if s[0]["meter"] == METER_B]


def test_metrics_label_escaping() -> None:
    live = LiveState()
    odd = 'name "with" back\\slash\nand newline'
    live.update(Reading(meter_id=odd, time=datetime.now(timezone.utc), values={}, p_sum=42.0))
    live.frame_received(odd, {"frames_ok": 1, "crc_errors": 0, "weird stat": 3})
    srv = serve(live)
    try:
        fam = parse_prometheus(get(srv, "/metrics").text)
        assert sample(fam, "smlogger_power_watts", meter=odd, phase="total") == 42.0
        assert sample(fam, "smlogger_decoder_events_total", source=odd, kind="weird stat") == 3
    finally:
        srv.stop()


# ---- read-only, unknown paths, odd input ------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/api/live", "/api/history", "/", "/metrics", "/api/stream"])
def test_read_only(server: WebServer, method: str, path: str) -> None:
    resp = request(server, path, method, headers={"Content-Length": "0"})
    assert_error(resp, 405)
    assert "GET" in resp.headers["Allow"]


def test_unknown_path(server: WebServer) -> None:
    assert_error(get(server, "/api/nothing"), 404)
    assert_error(get(server, "/static/nothing.js"), 404)
    assert_error(get(server, "/static/../web.py"), 404)
    assert_error(get(server, "/static/%2e%2e/web.py"), 404)


ODD_VALUES = [
    "\u00e4\u00f6\u00fc",
    "%00",
    "%FF%FE",
    "'; DROP TABLE readings; --",
    "x" * 5000,
    "1e308",
    "-1e308",
    "0x10",
    "inf",
    "-0",
    "[]",
    "{}",
    "%E2%80%AE",
]


@pytest.mark.parametrize(
    "path", ["/api/live", "/api/history", "/api/consumption", "/", "/api/meters", "/metrics"]
)
@pytest.mark.parametrize("name", ["meter", "from", "to", "step", "period"])
def test_odd_input_never_500(server: WebServer, path: str, name: str) -> None:
    for value in ODD_VALUES:
        encoded = value if value.startswith("%") else quote(value)
        for query in (f"{name}={encoded}", f"{name}={encoded}&meter={METER_A}"):
            resp = request(server, f"{path}?{query}")
            assert resp.status in (200, 400, 404), (path, query, resp.status, resp.body[:200])
            if resp.status != 200:
                assert_error(resp, resp.status)


def test_odd_meter_on_stream_never_500(server: WebServer) -> None:
    for value in ODD_VALUES:  # the stream answers at once only for a bad meter
        encoded = value if value.startswith("%") else quote(value)
        resp = request(server, f"/api/stream?meter={encoded}")
        assert resp.status in (400, 404), (value, resp.status)
        assert_error(resp, resp.status, "meter")


# ---- the page and its files -------------------------------------------------------------------


def test_page_first_paint(server: WebServer) -> None:
    resp = get(server, "/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    html = resp.text
    assert '<span data-f="p_sum">665</span>' in html
    assert '<span data-f="e_sum">12,400.123</span>' in html
    assert '<span data-f="u_L1">230.1</span>' in html
    option_a = f'<option value="{METER_A}" title="{METER_A}" selected>1 DZG00 4208 2910</option>'
    assert option_a in html
    assert f'<option value="{METER_B}" title="{METER_B}">{METER_B}</option>' in html
    assert "Connected" in html and "CRC errors 1.00 %" in html
    assert re.search(r"updated \d+ s ago", html)
    assert "<title>665 W · smlogger</title>" in html
    island = html.split('<script id="sm-initial" type="application/json">', 1)[1]
    initial = json.loads(island.split("</script>", 1)[0])
    assert initial["meter"] == METER_A and initial["live"]["fields"]["p_sum"] == 665.0
    # app.js takes the link states and labels from here (smlogger.states), not its own copy
    assert initial["link_states"] == page_link_states()
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', html):
        static = request(server, asset.replace("&amp;", "&"))
        assert static.status == 200, asset
        assert "immutable" in static.headers["Cache-Control"]


def test_page_other_meter_exporting(server: WebServer) -> None:
    html = get(server, "/", meter=METER_B).text
    assert '<span data-f="p_sum">-1,500</span>' in html
    assert 'data-flow="export"' in html
    assert "feeding into the grid" in html
    assert f'<option value="{METER_B}" title="{METER_B}" selected>' in html
    assert "No data" in html
    assert_error(get(server, "/", meter="unknown"), 404, "meter")


def test_page_escapes_meter_ids() -> None:
    live = LiveState()
    evil = '"><script>alert(1)</script>'
    live.update(Reading(meter_id=evil, time=datetime.now(timezone.utc), values={}, p_sum=1.0))
    srv = serve(live)
    try:
        html = get(srv, "/").text
        assert "<script>alert(1)" not in html
        assert "&lt;script&gt;" in html
        # the JSON island cannot be closed from inside
        island = html.split('type="application/json">', 1)[1].split("</script>", 1)[0]
        assert json.loads(island)["meter"] == evil
    finally:
        srv.stop()


def test_static_files(server: WebServer) -> None:
    for name, kind in [
        ("app.js", "javascript"),
        ("smchart.js", "javascript"),
        ("style.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ]:
        resp = get(server, f"/static/{name}")
        assert resp.status == 200
        assert kind in resp.headers["Content-Type"]
        assert resp.headers["Cache-Control"] == "no-cache"  # unversioned URL: revalidate
        again = request(server, f"/static/{name}", headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304
    assert get(server, "/favicon.ico").headers["Content-Type"].startswith("image/svg+xml")


# ---- token ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked(live: LiveState, store: StoreReader) -> Iterator[WebServer]:
    with WebServer(build_app(live, store, token="s3cr\u00e9t"), "127.0.0.1", 0) as srv:
        yield srv


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api/live",
        "/api/history",
        "/api/stream",
        "/metrics",
        "/healthz",
        "/static/app.js",
        "/api/nothing",
    ],
)
def test_token_required(locked: WebServer, path: str) -> None:
    resp = get(locked, path)
    assert_error(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(request(locked, path, headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(request(locked, path + "?token=s3cret"), 401)


def test_token_accepted_three_ways(locked: WebServer) -> None:
    token_header = "s3cr\u00e9t".encode().decode("latin-1")  # UTF-8 bytes on the wire
    ok = [
        request(locked, "/api/live", headers={"Authorization": f"Bearer {token_header}"}),
        request(locked, "/api/live", headers={"authorization": f"bearer {token_header}"}),
        request(locked, "/api/live", headers={"X-Token": token_header}),
        request(locked, "/api/live?token=" + quote("s3cr\u00e9t")),
    ]
    for resp in ok:
        assert resp.status == 200
        assert resp.json()["meter"] == METER_A
    assert locked.url.startswith("http://127.0.0.1:")
    assert get(locked, "/api/status", token="s3cr\u00e9t").json()["web"]["token_required"] is True


def test_token_bytes_that_are_not_utf8(locked: WebServer) -> None:
    # http.client sends these as latin-1: not UTF-8, read as latin-1 text (never a 500)
    for header in ("Authorization", "X-Token"):
        prefix = "Bearer " if header == "Authorization" else ""
        assert_error(request(locked, "/api/live", headers={header: prefix + "wr\u00f6ng"}), 401)
        resp = request(locked, "/api/live", headers={header: prefix + "s3cr\u00e9t"})
        assert resp.status == 200
    assert_error(request(locked, "/api/live?token=s3cr%E9t%FF"), 401)


def test_page_with_token_passes_it_on(locked: WebServer) -> None:
    html = get(locked, "/", token="s3cr\u00e9t").text
    assets = [a.replace("&amp;", "&") for a in re.findall(r'(?:href|src)="(/static/[^"]+)"', html)]
    assert assets and all("token=s3cr%C3%A9t" in a for a in assets)
    for asset in assets:
        assert request(locked, asset).status == 200
    assert 'href="/api/status?token=s3cr%C3%A9t"' in html
    assert '<input type="hidden" name="token" value="s3cr\u00e9t">' in html
