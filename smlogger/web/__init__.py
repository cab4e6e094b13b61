"""HTTP side of smlogger: the live page, the JSON API, Server-Sent Events and /metrics.

Everything the page needs is served from this package (index.tpl and static/ beside the code):
no CDN, no build step, so the page works offline on a LAN. The app is a plain `bottle.Bottle`
(`app.build_app`); `server.WebServer` serves it from one asyncio event loop (h11 parses HTTP)
and a few worker threads, so slow clients and open event streams hold no thread.

Modules: `params` (time/step parameters, ApiError), `payload` (JSON shapes), `metrics`
(Prometheus), `api` (route handlers), `app` (Bottle wiring), `wsgi` (requests to WSGI calls),
`server` (connections, limits, event streams).
"""

from __future__ import annotations

from smlogger.timefmt import iso
from smlogger.web.api import HistoryStore, WebApp
from smlogger.web.app import build_app
from smlogger.web.metrics import (
    MetricsWriter,
    escape_help,
    escape_label,
    format_sample_value,
)
from smlogger.web.params import ApiError, parse_step, parse_time
from smlogger.web.payload import (
    clean_json,
    dumps,
    fmt_number,
    fmt_power,
    link_for_meter,
    meter_label,
    reading_json,
    sse_event,
)
from smlogger.web.server import ServerLimits, WebServer

__all__ = [
    "ApiError",
    "HistoryStore",
    "MetricsWriter",
    "ServerLimits",
    "WebApp",
    "WebServer",
    "build_app",
    "clean_json",
    "dumps",
    "escape_help",
    "escape_label",
    "fmt_number",
    "fmt_power",
    "format_sample_value",
    "iso",
    "link_for_meter",
    "meter_label",
    "parse_step",
    "parse_time",
    "reading_json",
    "sse_event",
]
