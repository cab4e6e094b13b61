"""`WebServer`: cheroot's threaded WSGI server running the app in a background thread."""

from __future__ import annotations

import logging
import threading

import bottle  # type: ignore[import-untyped]
from cheroot import wsgi

from smlogger.web.api import WebApp

log = logging.getLogger(__name__)


class WebServer:
    """cheroot's threaded WSGI server in a background thread."""

    def __init__(
        self, app: bottle.Bottle, host: str = "127.0.0.1", port: int = 8080, *, threads: int = 16
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._threads = threads
        self._server: wsgi.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (errors such as a port in use raise here) and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("web server already started")
        web = self._web()
        if web is not None:
            web.hub.stopping.clear()
        # every open event stream holds a thread: keep some free for the page and the API
        threads = max(self._threads, web.hub.limit + 4) if web is not None else self._threads
        server = wsgi.Server(
            (self._host, self._port),
            self._app,
            numthreads=threads,
            server_name="smlogger",
            shutdown_timeout=2,
        )
        server.prepare()
        bound = server.bind_addr
        if isinstance(bound, tuple):
            self._port = int(bound[1])
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="smlogger-http", daemon=True)
        self._thread.start()
        log.debug("web server listening on %s", self.url)

    def _serve(self) -> None:
        server = self._server
        if server is None:
            return
        try:
            server.serve()
        except Exception:
            log.exception("web server stopped with an error")

    def _web(self) -> WebApp | None:
        web = self._app.config.get("smlogger.web")
        return web if isinstance(web, WebApp) else None

    def stop(self) -> None:
        """Close open event streams, stop accepting, wait for request threads."""
        server, self._server = self._server, None
        if server is None:
            return
        web = self._web()
        if web is not None:
            web.hub.stopping.set()
        server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/"

    def __enter__(self) -> WebServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
