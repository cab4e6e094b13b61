"""LiveState (shared by pipeline and web) and the systemd notifier."""

from __future__ import annotations

import os
import socket
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import T0, reading

from smlogger.live import SUBSCRIBER_QUEUE_SIZE, LiveState
from smlogger.sdnotify import Notifier


def test_latest_per_meter_in_first_seen_order() -> None:
    live = LiveState()
    assert live.latest() is None and live.meters() == []
    live.add_meter("configured")
    live.update(reading(0, meter="b"))
    live.update(reading(1, meter="a"))
    live.update(reading(2, p_sum=250.0, meter="b"))
    assert live.meters() == ["configured", "b", "a"]
    assert live.latest() is None  # the first meter has not sent anything yet
    latest_b = live.latest("b")
    assert latest_b is not None and latest_b.p_sum == 250.0
    assert live.latest("nope") is None


def test_source_states_and_frame_age() -> None:
    clock = [100.0]
    live = LiveState(monotonic=lambda: clock[0])
    live.set_source("house", "waiting", detail="no device")
    first = live.source_status()["house"]
    assert first["state"] == "waiting" and first["last_frame_age_s"] is None
    live.set_source("house", "connected", detail="open", stats={"frames_ok": 0})
    live.frame_received("house", {"frames_ok": 1})
    clock[0] = 102.5
    status = live.source_status()["house"]
    assert status["state"] == "connected" and status["last_frame_age_s"] == 2.5
    assert status["stats"] == {"frames_ok": 1}
    since = status["since"]
    live.set_source("house", "connected", detail="receiving frames")
    assert live.source_status()["house"]["since"] == since  # unchanged state keeps its since
    with pytest.raises(ValueError, match="source state must be one of"):
        live.set_source("house", "broken")  # type: ignore[arg-type]  # what the check is for


def test_update_names_the_source_of_a_meter() -> None:
    live = LiveState()
    live.update(reading(0, meter="m1"), source="house")
    live.update(reading(1, meter="m1"), source="house")
    assert live.source_status()["house"]["meters"] == ["m1"]


def test_subscribers_get_every_reading_and_slow_ones_lose_the_oldest() -> None:
    live = LiveState()
    fast = live.subscribe()
    slow = live.subscribe()
    assert live.subscriber_count() == 2
    for i in range(SUBSCRIBER_QUEUE_SIZE + 10):
        live.update(reading(i, meter="m"))
        fast.get_nowait()
    assert fast.empty()
    assert slow.qsize() == SUBSCRIBER_QUEUE_SIZE
    assert slow.get_nowait().time == T0 + timedelta(seconds=10)  # oldest ten dropped
    live.unsubscribe(slow)
    live.unsubscribe(slow)  # twice is harmless
    live.update(reading(999, meter="m"))
    assert slow.qsize() == SUBSCRIBER_QUEUE_SIZE - 1 and live.subscriber_count() == 1


def test_concurrent_updates_and_reads() -> None:
    live = LiveState()
    errors: list[BaseException] = []

    def writer(meter: str) -> None:
        try:
            for i in range(2000):
                live.update(reading(i, meter=meter))
                live.set_sink_status("csv", {"written": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"m{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for _ in range(2000):
        live.meters(), live.latest(), live.source_status(), live.sink_status()
    for t in threads:
        t.join()
    assert not errors and sorted(live.meters()) == ["m0", "m1", "m2", "m3"]
    assert live.sink_status()["csv"]["written"] == 1999


def _listen(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_notifier_speaks_the_sd_notify_protocol(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    sock = _listen(path)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert notifier.enabled and notifier.watchdog_interval == 2.0
    assert notifier.ready("reading house")
    assert sock.recv(1024).decode().split("\n") == [
        "READY=1",
        f"MAINPID={os.getpid()}",
        "STATUS=reading house",
    ]
    assert notifier.watchdog(healthy=True)
    assert sock.recv(1024) == b"WATCHDOG=1"
    assert not notifier.watchdog(healthy=True)  # not due yet
    assert notifier.stopping()
    assert sock.recv(1024).startswith(b"STOPPING=1")
    notifier.close()
    sock.close()


def test_notifier_abstract_socket_and_unhealthy_silence() -> None:
    name = f"smlogger-test-{os.getpid()}"
    sock = _listen("\0" + name)
    notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000"})
    assert not notifier.watchdog(healthy=False)  # a broken logger stops pinging
    assert notifier.status("busy")
    assert sock.recv(1024) == b"STATUS=busy"
    notifier.close()
    sock.close()


def test_notifier_outside_systemd_does_nothing() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.ready() and not notifier.watchdog()
    other_pid = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other_pid.watchdog_interval is None
