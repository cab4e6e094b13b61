"""Route handlers of the web app: the page, static files, the JSON API, SSE and /metrics."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import bottle  # type: ignore[import-untyped]

from smlogger import __version__
from smlogger.health import unhealthy_reasons
from smlogger.live import LiveState, Subscription
from smlogger.logutil import StateLog, describe
from smlogger.reading import Reading
from smlogger.states import page_link_states
from smlogger.timefmt import iso
from smlogger.web.metrics import crc_error_rate, render_metrics
from smlogger.web.params import ApiError, parse_step, parse_time
from smlogger.web.payload import (
    Json,
    dumps,
    fmt_number,
    fmt_power,
    link_for_meter,
    named_label,
    normalise_points,
    reading_json,
    source_problems,
    sse_event,
    with_ts,
)
from smlogger.web.wsgi import STREAM_KEY

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# the page's assets live beside the code, inside the package, so the wheel ships them
WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"
PAGE_TEMPLATE = WEB_DIR / "index.tpl"

MAX_HISTORY_POINTS = 20_000  # an explicit step may ask for more than the auto 2000, within reason
AUTO_HISTORY_POINTS = 2000
MAX_CONSUMPTION_BARS = 5000
DEFAULT_HISTORY_SPAN = timedelta(hours=24)
SSE_RETRY_MS = 3000

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a ?token= must not leak through Referer
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
}


class HistoryStore(Protocol):
    """What the web app reads from the database (smlogger.store.StoreReader satisfies it)."""

    def meters(self) -> list[str]:
        """Stored meter ids."""

    def history(
        self,
        meter_id: str,
        start: datetime,
        end: datetime,
        step: int | None = None,
        max_points: int = 2000,
    ) -> dict[str, Any]:
        """Power/energy series of a meter (see smlogger.store.queries.Queries.history)."""

    def consumption(
        self, meter_id: str, period: str, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """Per-day or per-month energy of a meter."""


# ---- the app ----------------------------------------------------------------------------------


class _StreamHub:
    """Counts open SSE streams (each holds a server thread) and ends them on shutdown."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._open = 0

    def acquire(self) -> bool:
        """Count a new stream; False when `limit` are already open."""
        with self._lock:
            if self._open >= self.limit:
                return False
            self._open += 1
            return True

    def release(self) -> None:
        """Count a stream as closed."""
        with self._lock:
            self._open -= 1

    @property
    def open(self) -> int:
        """How many streams are open."""
        with self._lock:
            return self._open


def _versions() -> dict[str, str]:
    versions = {
        "smlogger": __version__,
        "python": platform.python_version(),
        "bottle": str(bottle.__version__),
    }
    for name in ("h11", "peewee"):
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None)
        if version:
            versions[name] = str(version)
    return versions


class EventStream:
    """One open SSE stream: `poll()` returns what is due now; iterating blocks between events.

    Its server slot (hub) and LiveState subscription are released by `close()`, which runs once
    however the stream ends (client gone, server stopping, error).
    """

    def __init__(self, web: WebApp, subscription: Subscription, meter: str | None) -> None:
        self.web = web
        self.subscription = subscription
        self.meter = meter
        self._closed = False
        self._close_lock = threading.Lock()
        self._last_write = self._last_status = time.monotonic()

    @property
    def finished(self) -> bool:
        """True once closed or the server is stopping."""
        return self._closed or self.web.hub.stopping.is_set()

    def opening(self) -> bytes:
        """The retry hint, the latest reading of each meter and the link status."""
        web = self.web
        now = web.now()
        first = [f"retry: {SSE_RETRY_MS}\n\n".encode()]
        for m in [self.meter] if self.meter else web.live.meters():
            reading = web.live.latest(m)
            if reading is not None:
                first.append(sse_event("reading", web.reading_json(reading, m, now)))
        first.append(sse_event("status", web.link_status()))
        self._last_write = self._last_status = time.monotonic()
        return b"".join(first)

    def poll(self, wait: float = 0.0) -> bytes | None:
        """Readings that arrived, a status every few seconds, else a keep-alive when due."""
        web = self.web
        chunks = []
        pending: list[Reading] = []
        try:
            if wait > 0:
                pending.append(self.subscription.get(timeout=wait))
            while True:
                pending.append(self.subscription.get_nowait())
        except queue.Empty:
            pass
        for reading in pending:
            if self.meter is None or reading.meter_id == self.meter:
                body = web.reading_json(reading, reading.meter_id, web.now())
                chunks.append(sse_event("reading", body))
        mono = time.monotonic()
        if mono - self._last_status >= web.status_interval_s:
            chunks.append(sse_event("status", web.link_status()))
            self._last_status = mono
        elif not chunks and mono - self._last_write >= web.keepalive_s:
            chunks.append(b": keep-alive\n\n")
        if not chunks:
            return None
        self._last_write = mono
        return b"".join(chunks)

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield self.opening()
            while not self.finished:
                chunk = self.poll(wait=0.5)
                if chunk:
                    yield chunk
        finally:
            self.close()

    def wake_with(self, waker: Callable[[], None] | None) -> None:
        """Have `waker` called (on the pipeline's thread) whenever a reading arrives."""
        self.subscription.waker = waker

    def close(self) -> None:
        """Release the subscription and the stream slot (once)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.subscription.waker = None
        self.web.live.unsubscribe(self.subscription)
        self.web.hub.release()


class WebApp:
    """Route handlers over a LiveState and (optionally) a Store."""

    def __init__(
        self,
        live: LiveState,
        store: HistoryStore | None,
        *,
        token: str | None,
        status_extra: Callable[[], dict[str, Any]] | None,
        max_streams: int,
        keepalive_s: float,
        status_interval_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.live = live
        self.store = store
        self.token = token or None
        self.status_extra = status_extra
        self.keepalive_s = keepalive_s
        self.status_interval_s = status_interval_s
        self.now = clock
        self.started = clock()
        self.hub = _StreamHub(max_streams)
        # page requests keep coming during a database outage: one line when reads start
        # failing, a count once a minute, one line when they work again
        self.db_log = StateLog(log, "web")
        self.extra_log = StateLog(log, "web: status details")
        self.fingerprints = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12]
            for p in STATIC_DIR.iterdir()
            if p.is_file()
        }
        self.template = bottle.SimpleTemplate(
            source=PAGE_TEMPLATE.read_text(encoding="utf-8"), noescape=False
        )

    # -- plumbing --------------------------------------------------------------------------

    def query(self, name: str) -> str | None:
        """The single value of a query parameter, or None; ApiError 400 if repeated or not UTF-8."""
        values = bottle.request.query.getall(name)
        if not values:
            return None
        if len(values) > 1:
            raise ApiError(400, f"parameter '{name}' given more than once", name)
        try:
            return str(values[0].encode("latin-1").decode("utf-8"))  # see wsgi_text()
        except UnicodeError:
            raise ApiError(400, f"parameter '{name}' is not valid UTF-8", name) from None

    def known_meters(self) -> list[str]:
        """Meters seen live, then those only in the database."""
        meters = self.live.meters()
        for meter in self.stored_meters():
            if meter not in meters:
                meters.append(meter)
        return meters

    def stored_meters(self) -> list[str]:
        """Meters in the database; [] when there is none or it cannot be read (logged once)."""
        if self.store is None:
            return []
        try:
            meters = list(self.store.meters())
        except Exception as exc:  # a dead database must not take the live page down
            self.db_log.failed(f"database unreadable: {describe(exc)}", exc)
            return []
        self.db_log.ok("database readable again")
        return meters

    def query_store(
        self,
        query: Callable[[], _T],
        partial: Callable[[dict[str, Any]], _T] | None = None,
    ) -> _T:
        """Run a database read for a request: a bad parameter the store refuses is a 400, a
        database that cannot be read a 503 (logged once per outage), unless the store could
        answer part of it without the database and `partial` makes the answer of that part."""
        try:
            result = query()
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        except Exception as exc:
            self.db_log.failed(f"database unreadable: {describe(exc)}", exc)
            part = getattr(exc, "partial", None)  # StoreUnavailableError's
            if partial is not None and isinstance(part, dict):
                return partial(part)
            raise ApiError(503, "database unavailable", headers={"Retry-After": "10"}) from None
        self.db_log.ok("database readable again")
        return result

    def meter_param(self) -> str | None:
        """The `meter` parameter (404 when unknown) or the first meter (None when none yet)."""
        meter = self.chosen_meter()
        if meter is None:
            meters = self.known_meters()
            return meters[0] if meters else None
        return meter

    def chosen_meter(self) -> str | None:
        """The `meter` parameter when given: 400 when empty, 404 when no such meter."""
        meter = self.query("meter")
        if meter is None:
            return None
        if not meter.strip():
            raise ApiError(400, "parameter 'meter' is empty", "meter")
        known = self.known_meters()
        if meter not in known:
            # a configured name works as well as the id
            named = self.live.names.find(meter)
            if named is None or named not in known:
                raise ApiError(404, f"unknown meter '{meter}'", "meter")
            return named
        return meter

    def reading_json(
        self, reading: Reading | None, meter: str | None, now: datetime
    ) -> dict[str, Json]:
        """`payload.reading_json` with the meter's name."""
        meter_id = reading.meter_id if reading is not None else meter
        name = self.live.meter_name(meter_id) if meter_id else None
        return reading_json(reading, meter, now, name)

    def label(self, meter_id: str) -> str:
        """The meter's label for people: its name (if any) and its number."""
        return named_label(meter_id, self.live.meter_name(meter_id))

    def require_store(self) -> HistoryStore:
        """The history store; ApiError 503 when no database is configured."""
        if self.store is None:
            raise ApiError(503, "no database configured: history is not available")
        return self.store

    def time_range(self, default_span: timedelta) -> tuple[datetime, datetime]:
        """`from`/`to` of the request (default: `default_span` until now); 400 if reversed."""
        now = self.now()
        to_text = self.query("to")
        from_text = self.query("from")
        end = now if to_text is None else parse_time("to", to_text, now)
        start = end - default_span if from_text is None else parse_time("from", from_text, now)
        if start >= end:
            raise ApiError(400, "parameter 'from' must be before 'to'", "from")
        return start, end

    # -- routes ----------------------------------------------------------------------------

    def meters(self) -> Json:
        """GET /api/meters: every known meter: name, label, live/stored/configured, last seen."""
        live_meters = self.live.meters()
        stored = self.stored_meters()
        out = []
        for meter in self.known_meters():
            reading = self.live.latest(meter)
            out.append(
                {
                    "id": meter,
                    "name": self.live.meter_name(meter),
                    "label": self.label(meter),
                    "live": reading is not None,
                    "stored": meter in stored,
                    "configured": meter in live_meters,
                    "last_seen": iso(reading.time) if reading else None,
                }
            )
        return {"meters": out, "default": out[0]["id"] if out else None}

    def live_reading(self) -> Json:
        """GET /api/live: the latest reading of a meter, its link and any source problems."""
        meter = self.meter_param()
        now = self.now()
        body = self.reading_json(self.live.latest(meter) if meter else None, meter, now)
        body["server_time"] = iso(now)
        sources = self.live.source_status()
        body["link"] = link_for_meter(sources, meter)
        body["problems"] = source_problems(sources)
        return body

    def history(self) -> Json:
        """GET /api/history: stored series for a meter and time range (503 without database;
        while it cannot be read, the readings waiting for it, marked `unavailable`)."""
        store = self.require_store()
        meter = self.meter_param()
        start, end = self.time_range(DEFAULT_HISTORY_SPAN)
        step_text = self.query("step")
        step = None if step_text is None else parse_step(step_text)
        max_points = AUTO_HISTORY_POINTS
        if step is not None:
            points = math.ceil((end - start).total_seconds() / step)
            if points > MAX_HISTORY_POINTS:
                raise ApiError(
                    400,
                    f"parameter 'step' is too small for the range: {points} points, "
                    f"at most {MAX_HISTORY_POINTS}",
                    "step",
                )
            max_points = max(points, AUTO_HISTORY_POINTS)
        if meter is None:
            return {"meter": None, "from": iso(start), "to": iso(end), "step": step, "points": []}
        result = self.query_store(
            lambda: dict(store.history(meter, start, end, step=step, max_points=max_points)),
            # the database is down: the readings waiting for it, and the page says so
            partial=lambda part: {**part, "unavailable": "database unavailable"},
        )
        return normalise_points(result)

    def consumption(self) -> Json:
        """GET /api/consumption: energy per day or month (503 without database)."""
        store = self.require_store()
        meter = self.meter_param()
        period = self.query("period") or "day"
        if period not in ("day", "month"):
            raise ApiError(400, "parameter 'period' must be 'day' or 'month'", "period")
        span = timedelta(days=31) if period == "day" else timedelta(days=366)
        start, end = self.time_range(span)
        bars_max = (end - start).total_seconds() / (86400 if period == "day" else 28 * 86400)
        if bars_max > MAX_CONSUMPTION_BARS:
            raise ApiError(
                400,
                f"parameter 'from' is too early: at most {MAX_CONSUMPTION_BARS} bars "
                f"of period '{period}'",
                "from",
            )
        bars: list[dict[str, Any]] = []
        if meter is not None:
            bars = self.query_store(lambda: list(store.consumption(meter, period, start, end)))
        return {
            "meter": meter,
            "period": period,
            "from": iso(start),
            "to": iso(end),
            "bars": [with_ts(b) for b in bars],
        }

    def status(self) -> Json:
        """GET /api/status: versions, uptime, sources, sinks, decoder counters and warnings."""
        now = self.now()
        sources = self.live.source_status()
        for source in sources.values():
            source["crc_error_rate"] = crc_error_rate(source.get("stats") or {})
        body: dict[str, Json] = {
            "version": __version__,
            "versions": _versions(),
            "server_time": iso(now),
            "started": iso(self.started),
            "uptime_s": round((now - self.started).total_seconds(), 3),
            "meters": self.known_meters(),
            "sources": sources,
            "sinks": self.live.sink_status(),
            "web": {
                "streams": self.hub.open,
                "max_streams": self.hub.limit,
                "token_required": self.token is not None,
                "history": self.store is not None,
            },
        }
        if self.status_extra is not None:
            try:
                extra = self.status_extra()
            except Exception as exc:
                self.extra_log.failed(exc)
                extra = {"status_extra_error": f"{type(exc).__name__}: {exc}"}
            # the extra adds keys; it never replaces what the web app itself reports
            for key, value in extra.items():
                current = body.get(key)
                if isinstance(current, dict) and isinstance(value, Mapping):
                    for inner, inner_value in value.items():
                        current.setdefault(inner, inner_value)
                elif key not in body:
                    body[key] = value
        return body

    def healthz(self) -> Json:
        """200 when every watched source delivered a valid frame within its watchdog period
        and no sink is failing; otherwise 503 with the reasons (systemd, Docker, monitors)."""
        now = self.now()
        sources = self.live.source_status()
        reasons = unhealthy_reasons(sources, self.live.sink_status())
        if reasons:
            bottle.response.status = 503
        # a sink that reports itself degraded (MQTT broker away) is named, but the meters are
        # still read and stored: "degraded" and 200, not a failure
        degraded = {
            name: f"{sink.get('state')}: {sink.get('detail', '')}"
            for name, sink in self.live.sink_status().items()
            if sink.get("degraded") is True
        }
        body: dict[str, Json] = {
            "status": "unhealthy" if reasons else "degraded" if degraded else "ok",
            "reasons": reasons,
            "version": __version__,
            "uptime_s": round((now - self.started).total_seconds(), 3),
            "sources": {k: s.get("state") for k, s in sources.items()},
            "diagnoses": {k: s["diagnosis"] for k, s in sources.items() if s.get("diagnosis")},
        }
        if degraded:
            body["degraded"] = degraded
        return body

    def metrics(self) -> str:
        """GET /metrics: Prometheus text exposition."""
        text = render_metrics(self.live, self.started, self.now(), self.hub.open)
        bottle.response.content_type = "text/plain; version=0.0.4; charset=utf-8"
        return text

    # -- SSE -------------------------------------------------------------------------------

    def stream(self) -> Iterable[bytes]:
        """GET /api/stream: Server-Sent Events of new readings; 503 when too many are open."""
        meter = self.chosen_meter()  # None: readings of every meter
        if not self.hub.acquire():
            raise ApiError(503, "too many open event streams", headers={"Retry-After": "30"})
        stream = EventStream(self, self.live.subscribe(), meter)
        # our server feeds the stream from its event loop (no thread held); others iterate it
        bottle.request.environ[STREAM_KEY] = stream
        response = bottle.response
        response.content_type = "text/event-stream; charset=utf-8"
        response.set_header("Cache-Control", "no-cache, no-transform")
        response.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        return stream

    def link_status(self) -> dict[str, Json]:
        """Link state of every meter and source, for the page's status line."""
        sources = self.live.source_status()
        return {
            "server_time": iso(self.now()),
            "links": {m: link_for_meter(sources, m) for m in self.live.meters()},
            # the link before any meter is known (a port that does not open, a silent head)
            "pending": link_for_meter(sources, None),
            "sources": {k: s.get("state") for k, s in sources.items()},
            "problems": source_problems(sources),
        }

    # -- page & static ---------------------------------------------------------------------

    def asset(self, name: str) -> str:
        """URL of a static file with its content fingerprint (and the token, if one was given)."""
        url = f"/static/{name}?v={self.fingerprints.get(name, '0')}"
        token = self.query("token")
        return url + (f"&token={quote(token, safe='')}" if token else "")

    def page(self) -> str:
        """GET /: the page, rendered with the current reading so it works without JavaScript."""
        meters = self.known_meters()
        # the no-script form sends an empty meter while none is known yet: show the default
        meter = (self.chosen_meter() if self.query("meter") else None) or (
            meters[0] if meters else None
        )
        now = self.now()
        reading = self.live.latest(meter) if meter else None
        live = self.reading_json(reading, meter, now)
        live["server_time"] = iso(now)
        sources = self.live.source_status()
        live["link"] = link_for_meter(sources, meter)
        live["problems"] = source_problems(sources)
        link_states = page_link_states()
        initial = {
            "meter": meter,
            "meters": meters,
            "names": {m: n for m in meters if (n := self.live.meter_name(m))},
            "live": live,
            "history": self.store is not None,
            "version": __version__,
            # the page's state labels come from smlogger.states, never retyped in app.js
            "link_states": link_states,
        }
        # "<" escaped so no "</script>" inside the data can end the JSON script block
        initial_json = dumps(initial).decode("utf-8").replace("<", "\\u003c")
        token = self.query("token")
        bottle.response.content_type = "text/html; charset=utf-8"
        bottle.response.set_header("Cache-Control", "no-store")
        return str(
            self.template.render(
                meter=meter,
                meters=meters,
                reading=reading,
                live=live,
                link=live["link"],
                problems=live["problems"],
                initial_json=initial_json,
                asset=self.asset,
                token=token,
                token_query=f"?token={quote(token, safe='')}" if token else "",
                link_states=link_states,
                fmt_power=fmt_power,
                meter_label=self.label,
                meter_name=self.live.meter_name,
                fmt_number=fmt_number,
                version=__version__,
                has_history=self.store is not None,
            )
        )

    def static(self, path: str) -> Any:
        """GET /static/<path>: immutable caching when fingerprinted; 404 outside the folder."""
        resp = bottle.static_file(path, root=str(STATIC_DIR))
        name = Path(path).name
        versioned = bottle.request.query.get("v") == self.fingerprints.get(name)
        if resp.status_code == 200 or resp.status_code == 304:
            resp.set_header(
                "Cache-Control", "public, max-age=31536000, immutable" if versioned else "no-cache"
            )
        elif resp.status_code in (403, 404):  # 403: a path outside the static folder
            raise ApiError(404, "not found")
        elif resp.status_code >= 400:
            raise ApiError(resp.status_code, str(resp.body or resp.status_line))
        for key, value in SECURITY_HEADERS.items():
            resp.set_header(key, value)
        return resp

    def favicon(self) -> Any:
        """GET /favicon.ico: the SVG icon."""
        return self.static("icon.svg")

    def api_index(self) -> Json:
        """GET /api: the list of endpoints."""
        return {
            "endpoints": [
                "/api/meters", "/api/live", "/api/history", "/api/consumption",
                "/api/status", "/api/stream", "/metrics", "/healthz",
            ]
        }  # fmt: skip

    # -- auth ------------------------------------------------------------------------------

    def check_token(self) -> None:
        """Require the configured token (Bearer, X-Token or ?token=); ApiError 401 otherwise."""
        if self.token is None:
            return
        # raw environ values: Bottle's header accessors raise on bytes that are not UTF-8
        environ = bottle.request.environ
        given = ""
        auth = str(environ.get("HTTP_AUTHORIZATION", ""))
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        given = given or str(environ.get("HTTP_X_TOKEN", ""))
        given = given or bottle.request.query.get("token", "")
        # compare_digest keeps the time independent of where the first difference is
        if not given or not hmac.compare_digest(
            wsgi_text(given).encode("utf-8"), self.token.encode("utf-8")
        ):
            raise ApiError(401, "missing or wrong token")


def wsgi_text(text: str) -> str:
    """WSGI hands headers and query strings over as latin-1; clients send UTF-8."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text
