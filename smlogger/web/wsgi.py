"""The WSGI side of the web server: an h11 request turned into a WSGI environ, the app called.

Kept apart from the socket handling (server.py) so that it runs in a worker thread and never
touches the event loop: `call_app` returns a finished `Answer` (status, headers, body) or, for an
event stream, the opening chunk plus the `Pollable` the event loop feeds from then on.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol
from urllib.parse import unquote_to_bytes

import h11

log = logging.getLogger(__name__)

# A handler that streams without holding a thread puts an object with poll()/close() here;
# the server then feeds the client from its event loop instead of iterating in a worker.
STREAM_KEY = "smlogger.stream"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Pollable(Protocol):
    """An open event stream: `poll()` returns what is due (never blocks); `close()` ends it."""

    def poll(self, wait: float = 0.0) -> Optional[bytes]:
        """Bytes that are due now (waiting up to `wait` s), or None."""

    def close(self) -> None:
        """End the stream and release what it holds."""

    def wake_with(self, waker: Optional[Callable[[], None]]) -> None:
        """Have `waker` called (from any thread) when something new is due."""

    @property
    def finished(self) -> bool:
        """True once the stream has nothing more to send."""


@dataclass
class Answer:
    """What the app answered: a whole body, or an opening chunk plus a stream to poll."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: list[bytes] = field(default_factory=list)
    stream: Optional[Pollable] = None
    closer: Optional[Callable[[], None]] = None  # the WSGI iterable's close(), for streams


def environ_for(
    request: h11.Request, body: bytes, server: tuple[str, int], peer: tuple[str, int]
) -> dict[str, Any]:
    """The PEP 3333 environ of one request (paths and headers as latin-1 text)."""
    target = request.target
    if not target.startswith(b"/"):
        # absolute-form ("http://host/path?q") or "*": keep only path and query
        scheme_end = target.find(b"://")
        if scheme_end >= 0:
            slash = target.find(b"/", scheme_end + 3)
            target = target[slash:] if slash >= 0 else b"/"
    path, _, query = target.partition(b"?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("ascii"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("ascii"),
        "REMOTE_ADDR": peer[0],
        "REMOTE_PORT": str(peer[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in request.headers:
        name = raw_name.decode("latin-1").upper()
        if "_" in name:
            # "X_Token" would land on the same key as "X-Token": drop it, as nginx does
            continue
        value = raw_value.decode("latin-1")
        key = name.replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
            continue
        key = "HTTP_" + key
        environ[key] = f"{environ[key]}, {value}" if key in environ else value
    return environ


def call_app(app: WsgiApp, environ: dict[str, Any]) -> Answer:
    """Run the app for one request (in a worker thread) and collect its answer."""
    started: list[Any] = []
    # PEP 3333's write(): what an old-style app writes goes out before its returned iterable
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        """WSGI start_response: remember status and headers; re-raise a late exc_info."""
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return written.append

    result = app(environ, start_response)
    stream = environ.get(STREAM_KEY)
    try:
        chunks: Iterator[bytes] = iter(result)
        first = b"" if stream is None else next(chunks, b"")
        body = [chunk for chunk in written if chunk]
        if first:
            body.append(first)
        if stream is None:
            body.extend(chunk for chunk in chunks if chunk)
    except BaseException:
        _close(result)
        raise
    if not started:
        _close(result)
        raise RuntimeError("the WSGI app returned without calling start_response")
    status_text, headers = started
    code, _, reason = str(status_text).partition(" ")
    answer = Answer(
        status=int(code),
        reason=reason.encode("latin-1"),
        headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        body=body,
    )
    if stream is not None and answer.status == 200:
        answer.stream = stream
        answer.closer = getattr(result, "close", None)
    else:
        if stream is not None:
            stream.close()
        _close(result)
    return answer


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            log.debug("closing a WSGI response failed", exc_info=True)


def error_answer(status: int, message: str) -> Answer:
    """A small JSON error produced by the server itself (limits, timeouts, bad requests)."""
    reasons = {
        400: b"Bad Request",
        408: b"Request Timeout",
        413: b"Content Too Large",
        431: b"Request Header Fields Too Large",
        500: b"Internal Server Error",
        503: b"Service Unavailable",
    }
    body = json.dumps({"error": message, "status": status}).encode("ascii")
    headers = [
        (b"Content-Type", b"application/json; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode("ascii")),
        (b"Cache-Control", b"no-store"),
        (b"Connection", b"close"),
    ]
    if status == 503:
        headers.append((b"Retry-After", b"10"))
    return Answer(status, reasons.get(status, b"Error"), headers, [body])
