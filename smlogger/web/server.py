"""`WebServer`: HTTP/1.1 on one asyncio event loop (h11 parses), the WSGI app in a few workers.

Why not a thread per connection (cheroot, waitress' SSE): a client that trickles its headers or
keeps an event stream open would hold a worker, and 20 of them stalled the whole page. Here
every connection is a cheap coroutine on one loop:

* the whole request (head and body) must arrive within `request_timeout_s`, else 408 and close;
* only a complete request reaches a worker thread, so workers are busy only while the app runs;
* event streams are fed from the loop (`wsgi.STREAM_KEY`), counted and capped by the app,
  never by the worker count;
* connections are capped in total and per client address (503 and close when over);
* `/healthz` has its own worker, so a slow database query cannot delay it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional

import h11

from smlogger.logutil import StateLog, describe
from smlogger.web.wsgi import Answer, WsgiApp, call_app, environ_for, error_answer

log = logging.getLogger(__name__)

PRIORITY_PATHS = frozenset({b"/healthz"})
READ_CHUNK = 65536
ACCEPT_BATCH = 128  # connections taken per wake-up of the listening socket
ACCEPT_RETRY_S = 1.0  # pause after accept() failed (out of descriptors), not to spin on it
STOP_ROUND_S = 0.01  # stop(): the loop runs this long between cancelling and checking again
STOP_ROUNDS = 250  # ... at most this often (2.5 s), then what is left is closed regardless


@dataclass(frozen=True)
class ServerLimits:
    """How much the server gives one client and all of them together."""

    workers: int = 6  # threads running the app for ordinary requests
    max_connections: int = 256  # open connections in total (event streams included)
    max_per_client: int = 32  # open connections from one address
    request_timeout_s: float = 10.0  # the whole request, from its first byte or the last answer
    write_timeout_s: float = 30.0  # a client that stops reading is dropped after this
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    stream_tick_s: float = 0.2  # how often open event streams are polled

    def __post_init__(self) -> None:
        for name in ("workers", "max_connections", "max_per_client"):
            if getattr(self, name) < 1:
                raise ValueError(f"server limit '{name}' must be at least 1")


class _Client:
    """One accepted connection: read requests, answer them, until close or timeout."""

    def __init__(
        self,
        server: WebServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: tuple[str, int],
    ) -> None:
        self.server = server
        self.limits = server.limits
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes
        )

    async def run(self) -> None:
        """Serve requests on this connection until it closes, times out or breaks a limit."""
        try:
            while True:
                try:
                    request, body = await asyncio.wait_for(
                        self._read_request(), self.limits.request_timeout_s
                    )
                except asyncio.TimeoutError:
                    if self._partial():
                        await self._send_error(error_answer(408, "request took too long"))
                    return
                except h11.RemoteProtocolError as exc:
                    status = exc.error_status_hint
                    await self._send_error(error_answer(status, "malformed request"))
                    return
                except _HeadTooLarge:
                    await self._send_error(error_answer(431, "request head too large"))
                    return
                except _BodyTooLarge:
                    await self._send_error(error_answer(413, "request body too large"))
                    return
                if request is None:
                    return  # the client closed
                if not await self._answer(request, body):
                    return
                if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is not h11.DONE:
                    return
                self.conn.start_next_cycle()
        except (ConnectionError, asyncio.TimeoutError, h11.LocalProtocolError) as exc:
            log.debug("web: connection from %s ended: %r", self.peer[0], exc)
        finally:
            self.writer.close()

    def _partial(self) -> bool:
        # bytes of a request received but not a whole head yet (h11 keeps them buffered)
        return bool(self.conn.trailing_data[0]) or self.conn.their_state is not h11.IDLE

    async def _read_request(self) -> tuple[Optional[h11.Request], bytes]:
        request: Optional[h11.Request] = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(READ_CHUNK)
                self.conn.receive_data(data)  # b"" tells h11 the client closed
                continue
            if isinstance(event, h11.Request):
                # h11 bounds only a head still incomplete; one that came whole is measured here
                size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if size > self.limits.max_header_bytes:
                    raise _HeadTooLarge
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body_bytes:
                    raise _BodyTooLarge
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, (h11.ConnectionClosed, h11.PAUSED)):
                return None, b""

    async def _answer(self, request: h11.Request, body: bytes) -> bool:
        """Answer one request; False when the connection must end."""
        server = self.server
        environ = environ_for(request, body, server.bound, self.peer)
        lane = server.priority_pool if request.target.split(b"?")[0] in PRIORITY_PATHS else None
        try:
            answer = await server.loop_run(lane, environ)
        except Exception as exc:
            server.app_errors.failed(f"the app failed: {describe(exc)}", exc)
            answer = error_answer(500, "internal error")
        else:
            server.app_errors.ok("the app answers again")
        if answer.stream is not None:
            await self._stream(request, answer)
            return False
        await self._send_answer(answer, head=request.method == b"HEAD")
        return True

    async def _send_error(self, answer: Answer) -> None:
        """An answer of our own before closing (h11 sends only after a whole request head)."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response is already under way: closing is all that is left
        await self._write(raw_answer(answer))

    async def _send_answer(self, answer: Answer, *, head: bool = False) -> None:
        if self.conn.our_state is not h11.SEND_RESPONSE:
            return
        headers = answer.headers
        names = {name.lower() for name, _ in headers}
        length = sum(len(chunk) for chunk in answer.body)
        framed = b"content-length" in names or b"transfer-encoding" in names
        if not framed and not head and answer.status not in (204, 304):
            headers = [*headers, (b"Content-Length", str(length).encode("ascii"))]
        out = [
            self.conn.send(
                h11.Response(status_code=answer.status, headers=headers, reason=answer.reason)
            )
        ]
        if not head and answer.status not in (204, 304):
            out.extend(self.conn.send(h11.Data(data=chunk)) for chunk in answer.body if chunk)
        out.append(self.conn.send(h11.EndOfMessage()))
        await self._write(b"".join(data for data in out if data))

    async def _write(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), self.limits.write_timeout_s)

    async def _stream(self, request: h11.Request, answer: Answer) -> None:
        """Feed an event stream from the loop until the client leaves or the server stops."""
        stream = answer.stream
        assert stream is not None
        gone = asyncio.ensure_future(self.reader.read(READ_CHUNK))
        # a reading wakes the stream at once (from the pipeline's thread); the tick only paces
        # status events and keep-alives
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(arrived.set)

        stream.wake_with(wake)
        woken = asyncio.ensure_future(arrived.wait())
        try:
            response = h11.Response(
                status_code=answer.status, headers=answer.headers, reason=answer.reason
            )
            await self._write(self.conn.send(response) or b"")
            for chunk in answer.body:
                await self._write(self.conn.send(h11.Data(data=chunk)) or b"")
            while not self.server.stopping.is_set() and not stream.finished:
                done, _ = await asyncio.wait(
                    {gone, woken},
                    timeout=self.limits.stream_tick_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if gone in done:
                    if not gone.result():
                        return  # the client went away
                    # a client that sends on an event stream is ignored; keep watching for EOF
                    gone = asyncio.ensure_future(self.reader.read(READ_CHUNK))
                if woken in done:
                    arrived.clear()
                    woken = asyncio.ensure_future(arrived.wait())
                due = stream.poll()
                if due:
                    await self._write(self.conn.send(h11.Data(data=due)) or b"")
            with contextlib.suppress(h11.LocalProtocolError):
                await self._write(self.conn.send(h11.EndOfMessage()) or b"")
        finally:
            gone.cancel()
            woken.cancel()
            stream.close()
            if answer.closer is not None:
                with contextlib.suppress(Exception):
                    answer.closer()


class _BodyTooLarge(Exception):
    pass


class _HeadTooLarge(Exception):
    pass


def raw_answer(answer: Answer) -> bytes:
    """A whole HTTP/1.1 response as bytes, for answers sent outside h11's request cycle."""
    head = f"HTTP/1.1 {answer.status} ".encode("ascii") + answer.reason + b"\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in answer.headers)
    return head + b"\r\n" + b"".join(answer.body)


class WebServer:
    """The web app served from one event-loop thread plus a few worker threads."""

    def __init__(
        self,
        app: WsgiApp,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        limits: Optional[ServerLimits] = None,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self.limits = limits or ServerLimits()
        self.stopping = threading.Event()
        self.bound: tuple[str, int] = (host, port)
        self.app_errors = StateLog(log, "web")
        self._refusals = StateLog(log, "web")
        self._accept_errors = StateLog(log, "web")
        self.client_errors = StateLog(log, "web")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._sock: Optional[socket.socket] = None
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self.priority_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._per_client: Counter[str] = Counter()
        self._open = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.BaseTransport] = set()
        # accepted sockets that no transport owns yet: closed here if the stop comes first
        self._accepted: set[socket.socket] = set()

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind (errors such as a port in use raise here) and serve in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("web server already started")
        self.stopping.clear()
        web = self._web()
        if web is not None:
            web.hub.stopping.clear()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # "::" listens on IPv4 too where the system allows it, as "0.0.0.0" users expect
        dualstack = self._host == "::" and socket.has_dualstack_ipv6()
        sock = socket.create_server(
            (self._host, self._port), family=family, backlog=128, dualstack_ipv6=dualstack
        )
        sock.setblocking(False)
        self._sock = sock
        self._port = int(sock.getsockname()[1])
        self.bound = (self._host, self._port)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.limits.workers, thread_name_prefix="smlogger-http"
        )
        self.priority_pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="smlogger-http-health"
        )
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(loop, sock, ready), name="smlogger-http", daemon=True
        )
        self._thread.start()
        ready.wait(5)
        log.debug("web server listening on %s", self.url)

    def _serve(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, ready: threading.Event
    ) -> None:
        asyncio.set_event_loop(loop)
        # what asyncio would print with a traceback (a peer reset mid-write): DEBUG only
        loop.set_exception_handler(
            lambda _loop, context: log.debug(
                "web: %s", context.get("message"), exc_info=context.get("exception")
            )
        )
        try:
            # our own accept callback, not loop.create_server: asyncio's Server wraps an accepted
            # socket in a task one loop iteration after accept(), and when server.close() comes
            # in between, the transport's constructor fails an assertion (Server._attach) with
            # the socket already inside it; asyncio swallows that and the socket stays open
            # until the garbage collector finds it (CPython gh-109564). Here each socket is in
            # `_accepted` from the moment accept() returns until a transport owns it.
            loop.add_reader(sock.fileno(), self._accept_ready, loop, sock)
            ready.set()
            loop.run_forever()
            # accept nothing more; a client connecting now is refused by the kernel at once
            loop.remove_reader(sock.fileno())
            sock.close()
            # writer.close() only schedules the close, and a connection accepted just before
            # the stop may still be on its way to connection_made: cancel what runs, abort what
            # is open and let the loop run their connection_lost, until nothing is left (else
            # a transport outlives loop.close() and is collected open). The cancel is repeated:
            # 3.11's wait_for drops a cancel that meets its inner future finishing (gh-86296),
            # and the client task would then wait out its next request deadline.
            for _ in range(STOP_ROUNDS):
                for task in list(self._tasks):
                    task.cancel()
                for transport in list(self._transports):
                    transport.abort()  # type: ignore[attr-defined]
                loop.run_until_complete(asyncio.sleep(STOP_ROUND_S))
                if not (self._transports or self._accepted or asyncio.all_tasks(loop)):
                    break
        except Exception:
            log.exception("web server stopped with an error")
        finally:
            # whatever the timing: a socket accepted but never given to a transport is closed
            for conn in self._accepted:
                conn.close()
            self._accepted.clear()
            ready.set()
            loop.close()

    def stop(self) -> None:
        """Close open event streams, stop accepting, wait for the workers."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self.stopping.set()
        web = self._web()
        if web is not None:
            web.hub.stopping.set()
        with contextlib.suppress(RuntimeError):  # the loop has already ended
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        for pool in (self._pool, self.priority_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if self._sock is not None:
            self._sock.close()
        self._loop = self._thread = self._sock = self._pool = self.priority_pool = None

    def _web(self) -> Any:
        config = getattr(self._app, "config", None)
        web = config.get("smlogger.web") if config is not None else None
        return web if hasattr(web, "hub") else None

    # -- connections -----------------------------------------------------------------------

    def _accept_ready(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        """Accept the waiting connections (the loop calls this when the listener is readable)."""
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _address = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # nothing more waiting, or the client gave up before we took it
            except OSError as exc:
                # out of descriptors or memory: the listener stays readable, so wait a little
                # instead of spinning on the same error
                self._accept_errors.failed(f"cannot accept connections: {describe(exc)}", exc)
                loop.remove_reader(sock.fileno())
                loop.call_later(ACCEPT_RETRY_S, self._resume_accepting, loop, sock)
                return
            self._accepted.add(conn)
            self._accept_errors.ok("accepting connections again")
            loop.create_task(self._connect(loop, conn))

    def _resume_accepting(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        if sock.fileno() != -1:  # not closed by the stop in the meantime
            loop.add_reader(sock.fileno(), self._accept_ready, loop, sock)

    async def _connect(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        """Wrap an accepted socket in a transport and our protocol, which starts `_accept`."""
        try:
            await loop.connect_accepted_socket(lambda: self._protocol(loop), conn)
        except BaseException as exc:
            # a transport asyncio made has its close scheduled, closing again does no harm;
            # a socket it failed to wrap is closed here and nowhere else
            conn.close()
            if not isinstance(exc, Exception):
                raise
            log.debug("web: could not set up a connection: %r", exc)
        finally:
            self._accepted.discard(conn)

    def _protocol(self, loop: asyncio.AbstractEventLoop) -> asyncio.StreamReaderProtocol:
        # what asyncio.start_server builds, plus a register of every open transport: a
        # connection accepted just before stop() has no task running yet, and an unclosed
        # transport would outlive the loop
        transports = self._transports

        class Tracked(asyncio.StreamReaderProtocol):
            """Stream protocol that records its transport so that stop() can close it."""

            tracked: Optional[asyncio.BaseTransport] = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                """Remember the transport, then set up the stream as usual."""
                self.tracked = transport
                transports.add(transport)
                super().connection_made(transport)

            def connection_lost(self, exc: Optional[Exception]) -> None:
                """Forget the transport, then tear down the stream as usual."""
                transports.discard(self.tracked)
                super().connection_lost(exc)

        reader = asyncio.StreamReader(limit=READ_CHUNK, loop=loop)
        return Tracked(reader, self._accept, loop=loop)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = (str(peername[0]), int(peername[1])) if peername else ("", 0)
        address = peer[0]
        # the reason names the limit, not the count, so that repeats are recognised and counted
        if self._open >= self.limits.max_connections:
            await self._refuse(writer, f"{self.limits.max_connections} open in total")
            return
        if self._per_client[address] >= self.limits.max_per_client:
            await self._refuse(
                writer, f"{self.limits.max_per_client} open from {address}, the limit per address"
            )
            return
        self._refusals.ok("accepting connections again")
        self._open += 1
        self._per_client[address] += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await _Client(self, reader, writer, peer).run()
        except asyncio.CancelledError:
            writer.close()
        except Exception as exc:
            # one client's broken connection never reaches asyncio's traceback logging
            self.client_errors.failed(f"a connection failed: {describe(exc)}", exc)
            writer.close()
        finally:
            self._open -= 1
            self._per_client[address] -= 1
            if self._per_client[address] <= 0:
                del self._per_client[address]
            if task is not None:
                self._tasks.discard(task)

    async def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        self._refusals.failed(f"refusing connections ({reason})")
        writer.write(raw_answer(error_answer(503, "too many connections")))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.drain(), 1.0)
        writer.close()

    async def loop_run(
        self, lane: Optional[concurrent.futures.ThreadPoolExecutor], environ: dict[str, Any]
    ) -> Answer:
        """Run the app for one request on a worker (the priority lane for /healthz)."""
        loop = asyncio.get_running_loop()
        pool = lane or self._pool
        return await loop.run_in_executor(pool, call_app, self._app, environ)

    @property
    def connections(self) -> int:
        """Connections open now (read from the loop thread; a hint elsewhere)."""
        return self._open

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when 0 was asked for)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the server (IPv6 hosts in brackets)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/"

    def __enter__(self) -> WebServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
