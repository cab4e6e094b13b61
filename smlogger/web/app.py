"""`build_app`: the Bottle app over the handlers, with the JSON and auth plugins."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import bottle  # type: ignore[import-untyped]

from smlogger.live import LiveState
from smlogger.logutil import StateLog, describe
from smlogger.web.api import SECURITY_HEADERS, HistoryStore, WebApp
from smlogger.web.params import ApiError
from smlogger.web.payload import Json, dumps

log = logging.getLogger(__name__)


def _error_response(status: int, message: str, parameter: str | None = None) -> bytes:
    response = bottle.response
    response.status = status
    response.content_type = "application/json; charset=utf-8"
    response.set_header("Cache-Control", "no-store")
    for key, value in SECURITY_HEADERS.items():
        response.set_header(key, value)
    body: dict[str, Json] = {"error": message, "status": status}
    if parameter is not None:
        body["parameter"] = parameter
    return dumps(body)


class _JsonPlugin:
    """Turns handler results into JSON and ApiErrors/unexpected exceptions into JSON errors."""

    name = "smlogger_json"
    api = 2

    def __init__(self) -> None:
        # a bug that fails every request must not flood the log: one line, then a count
        self.errors = StateLog(log, "web", level=logging.ERROR)

    def apply(self, callback: Callable[..., Any], route: Any) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                result = callback(*args, **kwargs)
            except ApiError as exc:
                body = _error_response(exc.status, exc.message, exc.parameter)
                for key, value in exc.headers.items():
                    bottle.response.set_header(key, value)
                return body
            except bottle.HTTPResponse:
                raise
            except Exception as exc:
                self.errors.failed(f"internal error on {bottle.request.path}: {describe(exc)}", exc)
                return _error_response(500, "internal error")
            if isinstance(result, (dict, list)):
                bottle.response.content_type = "application/json; charset=utf-8"
                bottle.response.set_header("Cache-Control", "no-store")
                return dumps(result)
            return result

        return wrapper


def _router_error(error: Any) -> bytes:
    """Bottle's own errors (404 no route, 405 wrong method) as JSON like ours."""
    status = int(error.status_code)
    messages = {404: "not found", 405: "method not allowed: the API is read-only"}
    if status == 500 and error.exception is not None:
        log.error("unhandled error: %r", error.exception)
    return _error_response(status, messages.get(status, str(error.body or error.status_line)))


def build_app(
    live: LiveState,
    store: HistoryStore | None,
    *,
    token: str | None = None,
    status_extra: Callable[[], dict[str, Any]] | None = None,
    max_streams: int = 32,
    keepalive_s: float = 15.0,
    status_interval_s: float = 5.0,
    clock: Callable[[], datetime] | None = None,
) -> bottle.Bottle:
    """The web app: page, JSON API, SSE and /metrics over `live` and (optionally) `store`.

    `max_streams` bounds concurrent SSE clients (WebServer feeds them from its event loop, so
    they hold no worker thread; the cap bounds memory and LiveState subscribers).
    """
    web = WebApp(
        live,
        store,
        token=token,
        status_extra=status_extra,
        max_streams=max_streams,
        keepalive_s=keepalive_s,
        status_interval_s=status_interval_s,
        clock=clock or (lambda: datetime.now(timezone.utc)),
    )
    app = bottle.Bottle(catchall=True)
    app.uninstall("json")  # _JsonPlugin serialises (strict JSON, no NaN)
    app.install(_JsonPlugin())

    def auth_hook() -> None:
        for key, value in SECURITY_HEADERS.items():
            bottle.response.set_header(key, value)
        try:
            web.check_token()
        except ApiError as exc:
            raise bottle.HTTPError(401, exc.message, headers=exc.headers) from None

    app.add_hook("before_request", auth_hook)
    routes: Sequence[tuple[str, Callable[..., Any]]] = (
        ("/", web.page),
        ("/static/<path:path>", web.static),
        ("/favicon.ico", web.favicon),
        ("/api", web.api_index),
        ("/api/meters", web.meters),
        ("/api/live", web.live_reading),
        ("/api/history", web.history),
        ("/api/consumption", web.consumption),
        ("/api/status", web.status),
        ("/api/stream", web.stream),
        ("/metrics", web.metrics),
        ("/healthz", web.healthz),
    )
    for path, callback in routes:
        app.route(path, method="GET", callback=callback)

    def error_handler(error: Any) -> bytes:
        if int(error.status_code) == 401:
            body = _error_response(401, str(error.body))
            bottle.response.set_header("WWW-Authenticate", 'Bearer realm="smlogger"')
            return body
        return _router_error(error)

    app.default_error_handler = error_handler
    app.config["smlogger.web"] = web
    return app
