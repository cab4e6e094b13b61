"""Hostile and heavy web clients for the load test and benches/bench_http.py.

* `SlowSockets`: half-open requests that trickle one header byte at a time (a slowloris, or a
  phone on bad Wi-Fi); when the server drops one, it is opened again, so the load stays.
* `SseClients`: event-stream clients that count the reading events they receive.
* `probe`: one fresh connection per request, timed.

Clients bind to other loopback addresses (127.0.0.2, ...) so that a per-address connection
limit sees several hosts, as on a LAN; Linux routes all of 127.0.0.0/8 to lo.
"""

from __future__ import annotations

import http.client
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field


def connect(host: str, port: int, source: str, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to host:port from the loopback address `source`."""
    return socket.create_connection((host, port), timeout=timeout, source_address=(source, 0))


@dataclass
class SlowSockets:
    """`count` connections spread over `sources`, each sending a request head 1 byte per tick."""

    host: str
    port: int
    count: int
    sources: list[str]
    tick_s: float = 0.5
    dropped: int = 0  # connections the server closed (timeout answer or reset)
    refused: int = 0  # connections that could not be opened
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _open(self, index: int) -> socket.socket | None:
        try:
            sock = connect(self.host, self.port, self.sources[index % len(self.sources)])
        except OSError:
            self.refused += 1
            return None
        sock.setblocking(False)
        try:
            sock.send(b"GET /api/live HTTP/1.1\r\nHost: smlogger\r\n")
        except OSError:
            sock.close()
            self.refused += 1
            return None
        return sock

    def _run(self) -> None:
        socks: list[socket.socket | None] = [self._open(i) for i in range(self.count)]
        trickle = b"X-Slow: " + b"a" * 10_000
        sent = [0] * self.count
        while not self._stop.wait(self.tick_s):
            for i, sock in enumerate(socks):
                if sock is None:
                    socks[i] = self._open(i)
                    sent[i] = 0
                    continue
                try:
                    if sock.recv(4096, socket.MSG_PEEK) is not None:
                        # any answer (408) or EOF means the server gave up on this one
                        self.dropped += 1
                        sock.close()
                        socks[i] = self._open(i)
                        sent[i] = 0
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.dropped += 1
                    sock.close()
                    socks[i] = self._open(i)
                    sent[i] = 0
                    continue
                try:
                    sock.send(trickle[sent[i] % len(trickle) : sent[i] % len(trickle) + 1])
                    sent[i] += 1
                except OSError:
                    self.dropped += 1
                    sock.close()
                    socks[i] = self._open(i)
                    sent[i] = 0
        for sock in socks:
            if sock is not None:
                sock.close()

    def start(self) -> SlowSockets:
        self._thread = threading.Thread(target=self._run, name="slow-sockets", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


@dataclass
class SseClients:
    """`count` event-stream clients; `readings[i]` counts reading events client i received."""

    host: str
    port: int
    count: int
    sources: list[str]
    path: str = "/api/stream"
    readings: list[int] = field(default_factory=list)
    statuses: list[bytes] = field(default_factory=list)  # the status line each one got
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SseClients:
        self.readings = [0] * self.count
        self.statuses = [b""] * self.count
        socks = []
        for i in range(self.count):
            sock = connect(self.host, self.port, self.sources[i % len(self.sources)])
            sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: smlogger\r\n\r\n".encode())
            sock.setblocking(False)
            socks.append(sock)
        self._thread = threading.Thread(
            target=self._run, args=(socks,), name="sse-clients", daemon=True
        )
        self._thread.start()
        return self

    def _run(self, socks: list[socket.socket]) -> None:
        selector = selectors.DefaultSelector()
        tails = [b""] * len(socks)
        for i, sock in enumerate(socks):
            selector.register(sock, selectors.EVENT_READ, i)
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.2):
                i = key.data
                sock = socks[i]
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    continue
                if not self.statuses[i]:
                    self.statuses[i] = data.split(b"\r\n", 1)[0]
                # events end with a blank line; chunk-size lines fall between events
                *events, tails[i] = (tails[i] + data).split(b"\n\n")
                self.readings[i] += sum(1 for event in events if b"event: reading\n" in event)
        for sock in socks:
            sock.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def probe(host: str, port: int, path: str, timeout: float) -> tuple[int, float]:
    """(status, seconds) of one GET on a fresh connection; status 0 when it did not answer."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.monotonic() - started
    except OSError:
        return 0, time.monotonic() - started
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[rank]
