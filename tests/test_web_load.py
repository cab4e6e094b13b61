"""The web server under slow and many clients (issue 11): it keeps answering.

60 sockets trickle their request heads byte by byte (reopened whenever the server drops them)
and 30 event-stream clients stay connected, while /healthz and /api/live are probed on fresh
connections for 30 s. Every probe must be answered (limits generous for a slow CI machine; the
latency distribution is what benches/bench_http.py prints), the streams keep delivering, and
the trickling sockets are dropped by the server's request deadline.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for
from webload import SlowSockets, SseClients, connect, percentile, probe

from smlogger.live import LiveState
from smlogger.reading import Reading
from smlogger.web import ServerLimits, WebServer, build_app
from smlogger.web.wsgi import call_app

METER = "0a01445a47000282225e"
PROBE_TIMEOUT_S = 20.0  # an answer must come; how fast is the bench's business


@pytest.fixture()
def live() -> Iterator[LiveState]:
    live = LiveState()
    live.set_source("sim", "connected", stats={"frames_ok": 1, "crc_errors": 0})
    stop = threading.Event()

    def feed() -> None:
        watts = 100.0
        while not stop.wait(0.5):
            watts += 1
            reading = Reading(
                meter_id=METER, time=datetime.now(timezone.utc), values={}, p_sum=watts
            )
            live.update(reading, source="sim")

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    yield live
    stop.set()
    feeder.join()


@pytest.mark.slow
def test_healthz_and_live_answer_under_slow_and_streaming_clients(live: LiveState) -> None:
    limits = ServerLimits(request_timeout_s=5.0)
    app = build_app(live, None, max_streams=40)
    with WebServer(app, "127.0.0.1", 0, limits=limits) as server:
        slow = SlowSockets(
            server.host, server.port, 60, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        ).start()
        sse = SseClients(server.host, server.port, 30, ["127.0.0.5", "127.0.0.6"]).start()
        try:
            wait_for(lambda: all(sse.readings), 10, "every stream's first reading")
            counts_before = list(sse.readings)
            answers: dict[str, list[tuple[int, float]]] = {"/healthz": [], "/api/live": []}
            end = time.monotonic() + 30
            while time.monotonic() < end:
                for path, results in answers.items():
                    results.append(probe(server.host, server.port, path, PROBE_TIMEOUT_S))
                time.sleep(0.1)
            counts_after = list(sse.readings)
        finally:
            sse.stop()
            slow.stop()
    for path, results in answers.items():
        statuses = [status for status, _ in results]
        latencies = [seconds for _, seconds in results]
        assert statuses and set(statuses) == {200}, (path, statuses)
        # generous: the old server missed every 1 s deadline here; the probes share the GIL
        # with the server and 90 clients on a loaded CI machine
        assert percentile(latencies, 0.5) < 1.5, (path, percentile(latencies, 0.5))
        assert max(latencies) < 15.0, (path, max(latencies))
    assert all(status.startswith(b"HTTP/1.1 200") for status in sse.statuses), sse.statuses
    # every stream kept delivering during the 30 s (a reading every 0.5 s)
    assert all(after > before for before, after in zip(counts_before, counts_after)), (
        counts_before,
        counts_after,
    )
    # the trickling sockets were dropped by the request deadline (5 s), so they cost nothing
    assert slow.dropped >= 60, slow.dropped


def test_per_client_limit(live: LiveState) -> None:
    limits = ServerLimits(max_per_client=4)
    with WebServer(build_app(live, None), "127.0.0.1", 0, limits=limits) as server:
        held = [connect(server.host, server.port, "127.0.0.7") for _ in range(4)]
        try:
            # wait until the server counts all four (accepting is asynchronous)
            def fifth_refused() -> bool:
                extra = connect(server.host, server.port, "127.0.0.7")
                try:
                    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    return extra.recv(100).startswith(b"HTTP/1.1 503")
                except ConnectionResetError:
                    return True
                finally:
                    extra.close()

            wait_for(fifth_refused, 10, "the fifth connection from one address refused")
            # another address is still served, and so is this one once a connection closes
            status, _ = probe_from(server, "127.0.0.8", "/healthz")
            assert status == 200
            held.pop().close()
            wait_for(lambda: probe_from(server, "127.0.0.7", "/healthz")[0] == 200, 10, "reuse")
        finally:
            for sock in held:
                sock.close()


def probe_from(server: WebServer, source: str, path: str) -> tuple[int, bytes]:
    """Status and raw answer of one GET sent from the loopback address `source`."""
    sock = connect(server.host, server.port, source)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        return 0, data
    finally:
        sock.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


@pytest.mark.slow  # waits out the request deadline
def test_trickling_request_is_dropped_with_408(live: LiveState) -> None:
    limits = ServerLimits(request_timeout_s=1.0)
    with WebServer(build_app(live, None), "127.0.0.1", 0, limits=limits) as server:
        sock = connect(server.host, server.port, "127.0.0.1", timeout=10)
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            answer = b""
            for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.2)
                sock.setblocking(False)
                try:
                    answer += sock.recv(4096)
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
                if answer:
                    break
            sock.settimeout(5)
            try:
                while chunk := sock.recv(4096):
                    answer += chunk
            except (ConnectionResetError, socket.timeout):
                pass
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        # an idle keep-alive connection is closed quietly, without an answer
        idle = connect(server.host, server.port, "127.0.0.1", timeout=10)
        try:
            assert idle.recv(100) == b""
        finally:
            idle.close()


def test_healthz_served_when_stream_slots_are_full(live: LiveState) -> None:
    app = build_app(live, None, max_streams=2)
    with WebServer(app, "127.0.0.1", 0) as server:
        sse = SseClients(server.host, server.port, 2, ["127.0.0.1"]).start()
        try:
            wait_for(lambda: all(sse.readings), 10, "both streams open")
            assert probe_from(server, "127.0.0.1", "/api/stream")[0] == 503
            assert probe(server.host, server.port, "/healthz", PROBE_TIMEOUT_S)[0] == 200
            assert probe(server.host, server.port, "/api/live", PROBE_TIMEOUT_S)[0] == 200
        finally:
            sse.stop()
        # closed streams free their slots
        wait_for(lambda: probe_from_stream(server), 10, "a slot free again")


def probe_from_stream(server: WebServer) -> bool:
    """True when a new event stream is accepted (200)."""
    sock = connect(server.host, server.port, "127.0.0.1")
    try:
        sock.sendall(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        return sock.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        sock.close()


def test_malformed_and_oversized_requests(live: LiveState) -> None:
    limits = ServerLimits(max_header_bytes=2048, max_body_bytes=100)
    with WebServer(build_app(live, None), "127.0.0.1", 0, limits=limits) as server:

        def raw(data: bytes) -> bytes:
            sock = connect(server.host, server.port, "127.0.0.1", timeout=10)
            try:
                sock.sendall(data)
                out = b""
                while chunk := sock.recv(65536):
                    out += chunk
                return out
            except ConnectionResetError:
                return out
            finally:
                sock.close()

        assert raw(b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400")
        big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n"
        assert raw(big).startswith(b"HTTP/1.1 431")
        body = b"POST /api/live HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n" + b"a" * 500
        assert raw(body).startswith(b"HTTP/1.1 413")
        # HEAD: headers only; keep-alive: two requests on one connection
        head = raw(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
        two = raw(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /api/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert two.count(b"HTTP/1.1 200") == 2


def test_ipv6_any_address_serves_ipv4_too(live: LiveState) -> None:
    with WebServer(build_app(live, None), "::", 0) as server:
        assert probe("127.0.0.1", server.port, "/healthz", PROBE_TIMEOUT_S)[0] == 200
        assert probe("::1", server.port, "/healthz", PROBE_TIMEOUT_S)[0] == 200


def open_sockets() -> int:
    """Sockets this process holds open, as the kernel sees them (referenced by Python or not)."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # the directory's own fd is gone when read
            count += os.readlink(fd).startswith("socket:")
    return count


@pytest.mark.slow  # 200 start/stop rounds
def test_stop_right_after_a_connect_leaves_no_socket_open(live: LiveState) -> None:
    """stop() just after a client connected closes the server's side of it, whatever the timing.

    The connection is accepted in the loop's last iterations; asyncio's own server then made the
    transport after the listener was closed, failed inside its constructor and dropped it with
    the socket open (collected later with "unclosed transport", an error under pytest). Each
    round checks the kernel's count of open sockets, then collects garbage so that a leaked
    transport's ResourceWarning fails this test rather than a later one.
    """
    app = build_app(live, None)
    # sockets earlier tests left to the garbage collector close now, not during the rounds
    gc.collect()
    before = open_sockets()
    for round_no in range(200):
        server = WebServer(app, "127.0.0.1", 0)
        server.start()
        client = socket.create_connection((server.host, server.port), timeout=5)
        # closed at once, half a request head, a whole request, or connected and silent
        how = round_no % 4
        if how == 0:
            client.close()
        elif how == 1:
            client.sendall(b"GET /healthz HT")
        elif how == 2:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        server.stop()
        client.close()
        # at most: a socket of an earlier test that something else closes meanwhile is no leak
        assert open_sockets() <= before, f"round {round_no} (way {how}) left a socket open"
        gc.collect()


def test_wsgi_write_callable_goes_out_before_the_returned_body() -> None:
    # PEP 3333: an app may push bytes through start_response's write() before returning
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first ")
        return [b"second"]

    answer = call_app(app, {})
    assert answer.status == 200 and b"".join(answer.body) == b"first second"
