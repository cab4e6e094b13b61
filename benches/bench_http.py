"""The web server under slow and many clients: latency of /healthz and /api/live.

60 sockets trickle their request heads one byte per 0.5 s (reopened when dropped) and 30
event-stream clients stay connected while /healthz and /api/live are probed, each on a fresh
connection, for `--seconds`. Prints p50/p90/p99/max and the probes that got no answer within
`--timeout` for

* new: smlogger's WebServer (asyncio + h11, streams fed from the event loop), and
* old: the set-up before issue 11, cheroot with 16 threads and 12 stream slots (skipped when
  cheroot is not installed).

    python benches/bench_http.py                 # both, 20 s each
    python benches/bench_http.py --only new --seconds 60

No assertions: it prints numbers (tests/test_web_load.py asserts that answers arrive).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from webload import SlowSockets, SseClients, percentile, probe  # noqa: E402

from smlogger.live import LiveState  # noqa: E402
from smlogger.reading import Reading  # noqa: E402
from smlogger.web import WebServer, build_app  # noqa: E402

METER = "0a01445a47000282225e"
PATHS = ("/healthz", "/api/live")


@contextmanager
def new_server(live: LiveState) -> Iterator[tuple[str, int]]:
    with WebServer(build_app(live, None), "127.0.0.1", 0) as server:
        yield server.host, server.port


@contextmanager
def old_server(live: LiveState) -> Iterator[tuple[str, int]]:
    from cheroot import wsgi  # the server before issue 11, configured as it was

    app = build_app(live, None, max_streams=12)
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=16, shutdown_timeout=2)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    web: Any = app.config["smlogger.web"]
    try:
        yield "127.0.0.1", int(server.bind_addr[1])
    finally:
        web.hub.stopping.set()
        server.stop()
        thread.join(5)


def run(name: str, factory: Any, seconds: float, timeout: float) -> None:
    live = LiveState()
    live.set_source("sim", "connected", stats={"frames_ok": 1, "crc_errors": 0})
    stop = threading.Event()

    def feed() -> None:
        watts = 100.0
        while not stop.wait(0.5):
            watts += 1
            now = datetime.now(timezone.utc)
            live.update(Reading(meter_id=METER, time=now, values={}, p_sum=watts), source="sim")

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    results: dict[str, list[tuple[int, float]]] = {path: [] for path in PATHS}
    with factory(live) as (host, port):
        slow = SlowSockets(host, port, 60, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]).start()
        time.sleep(1.0)  # let the slow sockets take their places first, as an attacker would
        sse = SseClients(host, port, 30, ["127.0.0.5", "127.0.0.6"]).start()
        time.sleep(1.0)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for path in PATHS:
                results[path].append(probe(host, port, path, timeout))
            time.sleep(0.1)
        streams_ok = sum(1 for status in sse.statuses if status.startswith(b"HTTP/1.1 200"))
        delivering = sum(1 for count in sse.readings if count > 0)
        sse.stop()
        slow.stop()
    stop.set()
    feeder.join()
    print(f"\n{name}: 60 slow sockets + 30 event streams, {seconds:.0f} s")
    print(f"  streams accepted {streams_ok}/30, delivering {delivering}/30, "
          f"slow sockets dropped by the server {slow.dropped}")  # fmt: skip
    print(f"  {'path':<10} {'probes':>6} {'failed':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    for path, values in results.items():
        ok = [seconds for status, seconds in values if status == 200]
        failed = len(values) - len(ok)
        cells = [f"{percentile(ok, q) * 1000:>6.1f}ms" for q in (0.5, 0.9, 0.99)]
        cells.append(f"{max(ok, default=0) * 1000:>6.1f}ms")
        if not ok:
            cells = [f"{'-':>8}"] * 4
        print(f"  {path:<10} {len(values):>6} {failed:>6} " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=5.0, help="probe timeout (s)")
    parser.add_argument("--only", choices=("new", "old"))
    args = parser.parse_args()
    if args.only in (None, "new"):
        run("new (asyncio + h11)", new_server, args.seconds, args.timeout)
    if args.only in (None, "old"):
        try:
            import cheroot  # noqa: F401
        except ImportError:
            print("\nold: cheroot not installed, skipped")
            return
        run("old (cheroot, 16 threads)", old_server, args.seconds, args.timeout)


if __name__ == "__main__":
    main()
