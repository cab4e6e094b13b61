"""MqttSink against a real mosquitto (started here on 127.0.0.1): values and discovery arrive,
broker restarts and outages heal, TLS with a test CA, wrong passwords, clean shutdown."""

from __future__ import annotations

import gc
import io
import json
import logging
import re
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import Collect, wait_for
from mqtt_broker import CertAuthority, Collector, Mosquitto, retained
from mqtt_ha import check_sensor_config
from test_mqtt_units import METER, T0, reading

from smlogger.capture import CaptureWriter
from smlogger.live import LiveState
from smlogger.mqtt.check import run_check
from smlogger.mqtt.settings import MqttSettings
from smlogger.mqtt.sink import MqttSink
from smlogger.pipeline import MeterSpec, Pipeline
from smlogger.simulate import make_meter
from smlogger.sources import ReplaySource

pytestmark = pytest.mark.slow


def settings(url: str, **kw: Any) -> MqttSettings:
    base: dict[str, Any] = {
        "url": url,
        "client_id": "smlogger-test",
        "meter_names": {METER: "house"},
        "reconnect_min": 1,
        "reconnect_max": 2,
    }
    base.update(kw)
    return MqttSettings(**base)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto.running(tmp_path / "broker") as server:
        yield server


@pytest.fixture
def sinks() -> Iterator[list[MqttSink]]:
    made: list[MqttSink] = []
    yield made
    for sink in made:
        sink.close()
    # paho 2.2 drops sockets without closing them (the TLS socket of a failed handshake in its
    # _ssl_wrap_socket; the wake-up pair of clients the broker helpers made): collect them here,
    # where they are known to be paho's, instead of failing a random later test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_values_state_and_discovery_arrive(broker: Mosquitto, sinks: list[MqttSink]) -> None:
    sink = MqttSink(settings(broker.url()))
    sinks.append(sink)
    wait_for(lambda: sink.status()["state"] == "connected", 10, "connected")
    readings = [reading(e_sum=100 + i / 1000, p_sum=500 + i) for i in range(5)]
    for r in readings:
        sink.write(r)
    expect = {"smlogger/house/p_sum": "504", "smlogger/house/e_sum": "100.004"}

    def arrived() -> dict[str, str] | None:
        now = retained(broker, "smlogger/#")
        # the state is a reading's last message: with the last one's, all of its values are in
        last_state = json.loads(now.get("smlogger/house/state", "{}")).get("p_sum") == 504
        return now if last_state and all(now.get(t) == v for t, v in expect.items()) else None

    values = wait_for(arrived, 10, "retained values")
    state = json.loads(values["smlogger/house/state"])
    last = readings[-1]
    for name in ("e_sum", "e_export", "p_sum", "p_L1", "u_L1", "i_L1", "freq"):
        assert state[name] == pytest.approx(getattr(last, name)), name
        assert float(values[f"smlogger/house/{name}"]) == pytest.approx(getattr(last, name))
    assert values["smlogger/house/availability"] == "online"
    assert values["smlogger/logger/smlogger-test/availability"] == "online"
    configs = retained(broker, "homeassistant/#")
    assert f"homeassistant/sensor/smlogger_{METER}/e_sum/config" in configs
    for topic, payload in configs.items():
        assert check_sensor_config(json.loads(payload)) == [], topic
    status = sink.status()
    assert status["written"] == 5 and status["published"] > 10 and status["dropped"] == 0
    assert status["meters"][METER]["topic"] == "smlogger/house"


def test_ha_birth_message_resends_discovery(broker: Mosquitto, sinks: list[MqttSink]) -> None:
    sink = MqttSink(settings(broker.url()))
    sinks.append(sink)
    sink.write(reading())
    wait_for(lambda: sink.status()["discovery_sent"] > 0, 10, "discovery")
    watcher = Collector(broker, ("homeassistant/sensor/#",))
    try:
        # subscribed before HA's birth message goes out, so its live copy cannot be missed
        assert watcher.subscribed.wait(60)
        watcher.clear()
        before = sink.status()["discovery_sent"]
        watcher.publish("homeassistant/status", "online")
        topic = f"homeassistant/sensor/smlogger_{METER}/p_sum/config"
        # a live (not retained) copy: HA restarted and needs it again
        wait_for(lambda: any(not m.retain for m in watcher.all(topic)), 10, "re-sent config")
        assert sink.status()["discovery_sent"] > before
    finally:
        watcher.close()


def test_broker_restart_without_persistence_heals(broker: Mosquitto, sinks: list[MqttSink]) -> None:
    sink = MqttSink(settings(broker.url()))
    sinks.append(sink)
    sink.write(reading(p_sum=111))
    wait_for(lambda: retained(broker, "smlogger/house/p_sum"), 10, "first value")
    broker.stop()
    # "disconnected" lasts until the first failed attempt, then "unreachable"
    wait_for(
        lambda: sink.status()["state"] in ("disconnected", "unreachable"), 10, "connection lost"
    )
    for i in range(3):  # readings while the broker is away
        sink.write(reading(p_sum=200 + i))
    time.sleep(5)
    broker.start()

    def healed() -> dict[str, str] | None:
        now = retained(broker, "#")
        ok = (
            now.get("smlogger/house/p_sum") == "202"
            and now.get("smlogger/logger/smlogger-test/availability") == "online"
            and f"homeassistant/sensor/smlogger_{METER}/e_sum/config" in now
        )
        return now if ok else None

    wait_for(healed, 15, "discovery and states back after the restart")
    status = sink.status()
    # reconnected after every loss (a loaded machine may see more than the one restart)
    assert status["disconnects"] >= 1 and status["connects"] == status["disconnects"] + 1
    assert status["state"] == "connected"


def test_broker_down_at_start_then_appears(tmp_path: Path, sinks: list[MqttSink]) -> None:
    broker = Mosquitto(tmp_path / "late")
    sink = MqttSink(settings(broker.url()))
    sinks.append(sink)
    started = time.monotonic()
    for i in range(20):
        sink.write(reading(p_sum=float(i)))
    # write() never waits for the network (a connect attempt to a dead broker would take seconds
    # each; the bound is generous for a loaded machine)
    assert time.monotonic() - started < 5.0
    wait_for(lambda: sink.status()["state"] == "unreachable", 10, "unreachable state")
    assert "connection refused" in sink.status()["detail"]
    assert sink.status()["connect_failures"] >= 1
    assert sink.status()["queue_depth"] > 0
    broker.start()
    try:
        # the queued values go out oldest first: wait for the last one written
        wait_for(
            lambda: retained(broker, "smlogger/house/p_sum").get("smlogger/house/p_sum") == "19",
            15,
            "the last value after the broker appeared",
        )
        wait_for(lambda: sink.status()["queue_depth"] == 0, 10, "queue drained")
    finally:
        sink.close()
        broker.stop()


def test_full_queue_drops_oldest_values_and_counts(tmp_path: Path, sinks: list[MqttSink]) -> None:
    broker = Mosquitto(tmp_path / "never")
    sink = MqttSink(settings(broker.url(), queue_size=50))
    sinks.append(sink)
    for i in range(200):
        sink.write(reading(p_sum=float(i)))
    status = sink.status()
    assert status["queue_depth"] == 50
    assert status["dropped"] > 100
    broker.start()
    try:
        # the newest values survived the drops
        wait_for(
            lambda: retained(broker, "smlogger/house/p_sum").get("smlogger/house/p_sum") == "199",
            15,
            "newest value",
        )
    finally:
        sink.close()
        broker.stop()


def test_clean_close_marks_logger_and_meters_offline(
    broker: Mosquitto, sinks: list[MqttSink]
) -> None:
    sink = MqttSink(settings(broker.url()))
    sink.write(reading())
    wait_for(lambda: retained(broker, "smlogger/house/availability"), 10, "online")
    sink.close()
    now = retained(broker, "smlogger/#")
    assert now["smlogger/house/availability"] == "offline"
    assert now["smlogger/logger/smlogger-test/availability"] == "offline"


# the untrusted client's sockets (see the `sinks` fixture): paho's, not ours
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_tls_with_a_test_ca(tmp_path: Path, sinks: list[MqttSink]) -> None:
    ca = CertAuthority.create(tmp_path / "ca")
    with Mosquitto.running(tmp_path / "tls", tls=ca) as broker:
        assert broker.url().startswith("mqtts://")
        sink = MqttSink(settings(broker.url(), ca_file=ca.ca_cert))
        sinks.append(sink)
        sink.write(reading(p_sum=42))
        wait_for(lambda: sink.status()["state"] == "connected", 10, "TLS connection")
        wait_for(
            lambda: retained(broker, "smlogger/house/p_sum").get("smlogger/house/p_sum") == "42",
            10,
            "value over TLS",
        )
        # without the CA the server certificate is not trusted: no connection, a clear state
        untrusted = MqttSink(settings(broker.url(), client_id="untrusted"))
        sinks.append(untrusted)
        wait_for(lambda: untrusted.status()["state"] == "unreachable", 10, "TLS failure state")
        assert "TLS handshake failed" in untrusted.status()["detail"]


def test_wrong_password_not_authorised_with_backoff_and_no_secret_in_logs(
    tmp_path: Path, sinks: list[MqttSink], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "wr0ng-S3cret"
    with Mosquitto.running(tmp_path / "auth", users={"meter": "right-pw"}) as broker:
        sink = MqttSink(settings(broker.url("meter", secret), reconnect_min=1, reconnect_max=4))
        sinks.append(sink)
        wait_for(lambda: sink.status()["state"] == "not authorised", 10, "not authorised")
        status = sink.status()
        assert "password" in status["detail"] and secret not in json.dumps(status)
        assert status["broker"] == f"mqtt://meter:***@127.0.0.1:{broker.port}"
        time.sleep(8)
        attempts = sink.status()["connect_failures"]
        # backoff 1, 2, 4, 4 s: about 4 attempts in 8 s, not one per loop turn
        assert 2 <= attempts <= 6, attempts
        assert broker.log_text().count("not authorised") >= 2
        assert secret not in caplog.text
        not_authorised_lines = [r for r in caplog.records if "not authorised" in r.getMessage()]
        assert len(not_authorised_lines) == 1  # one line per change of state, not per retry
        # the right password works
        good = MqttSink(settings(broker.url("meter", "right-pw"), client_id="good"))
        sinks.append(good)
        wait_for(lambda: good.status()["state"] == "connected", 10, "authorised")
        assert "right-pw" not in caplog.text


def test_sink_keeps_time_of_reading(broker: Mosquitto, sinks: list[MqttSink]) -> None:
    sink = MqttSink(settings(broker.url()))
    sinks.append(sink)
    sink.write(reading())
    state = wait_for(
        lambda: retained(broker, "smlogger/house/state").get("smlogger/house/state"),
        10,
        "state",
    )
    assert json.loads(state)["time"] == T0.isoformat()


def test_check_prints_what_home_assistant_sees(broker: Mosquitto) -> None:
    out = io.StringIO()
    assert run_check(settings(broker.url()), reading(), out) == 0
    text = out.getvalue()
    assert "manufacturer Iskraemeco" in text and "via smlogger_logger_smlogger-test" in text
    assert re.search(r"Energy import\s+12345.6789\s+energy/total_increasing/kWh", text)
    assert re.search(r"Power\s+523\s+power/measurement/W", text)
    assert text.rstrip().endswith("OK")
    # the check connection never touches availability (a running logger owns it)
    assert not [t for t in retained(broker, "#") if t.endswith("/availability")]


def test_check_names_the_reason_when_it_cannot_connect(tmp_path: Path) -> None:
    out = io.StringIO()
    url = Mosquitto(tmp_path / "off").url()
    assert run_check(settings(url), reading(), out, timeout=3) == 2
    assert "NOT CONNECTED: unreachable" in out.getvalue()
    assert "connection refused" in out.getvalue()


def test_mqtt_gets_every_reading_while_the_database_gets_aggregates(
    broker: Mosquitto, tmp_path: Path
) -> None:
    meter = make_meter("household")
    writer = CaptureWriter(tmp_path / "sim.txt")
    for i in range(60):
        at = T0 + timedelta(seconds=i)
        writer.write(at, meter.frame(at))
    writer.close()
    sink = MqttSink(settings(broker.url()))
    stored = Collect()
    replay = ReplaySource(tmp_path / "sim.txt", speed=None, interval=1.0, loop=False)
    pipeline = Pipeline([MeterSpec("sim", replay)], [stored, sink], LiveState(), store_interval=15)
    pipeline.start()
    pipeline.run(threading.Event())
    assert pipeline.stop(6.0)
    assert [r.samples for r in stored.readings] == [15, 15, 15, 15]
    assert sink.status()["written"] == 60


def test_several_loggers_and_meters_on_one_broker(broker: Mosquitto, sinks: list[MqttSink]) -> None:
    other_meter = "0a01445a47000282225e"
    first = MqttSink(settings(broker.url(), client_id="logger-a", meter_names={}))
    second = MqttSink(settings(broker.url(), client_id="logger-b", meter_names={}))
    sinks += [first, second]
    first.write(reading())
    second.write(reading(meter=other_meter, p_sum=7))

    def both() -> dict[str, str] | None:
        now = retained(broker, "#")
        return (
            now
            if f"smlogger/{other_meter}/p_sum" in now and f"smlogger/{METER}/p_sum" in now
            else None
        )

    now = wait_for(both, 10, "both meters")
    assert now["smlogger/logger/logger-a/availability"] == "online"
    assert now["smlogger/logger/logger-b/availability"] == "online"
    devices = {
        json.loads(p)["device"]["identifiers"][0]: json.loads(p)["device"]["via_device"]
        for t, p in now.items()
        if t.endswith("/p_sum/config")
    }
    assert devices == {
        f"smlogger_{METER}": "smlogger_logger_logger-a",
        f"smlogger_{other_meter}": "smlogger_logger_logger-b",
    }


def test_vanished_values_lose_their_entities_also_across_restarts(
    broker: Mosquitto, sinks: list[MqttSink]
) -> None:
    config = f"homeassistant/sensor/smlogger_{METER}/p_L1/config"
    first = MqttSink(settings(broker.url()))
    first.write(reading())
    wait_for(lambda: config in retained(broker, "homeassistant/#"), 10, "p_L1 config")
    first.close()
    # the next run: the meter no longer sends the phase values
    second = MqttSink(settings(broker.url(), remove_after=2))
    sinks.append(second)
    deadline = time.monotonic() + 30
    now = retained(broker, "#")
    # (the config goes first, the value topic right after: wait for both to be gone)
    while config in now or "smlogger/house/p_L1" in now:
        assert time.monotonic() < deadline, "p_L1's config and value still retained"
        second.write(reading(phases=False))
        time.sleep(0.5)
        now = retained(broker, "#")
    assert f"homeassistant/sensor/smlogger_{METER}/e_sum/config" in now
    assert second.status()["discovery_removed"] >= 4
