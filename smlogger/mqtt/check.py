"""`smlogger mqtt-test`: connect, publish one reading with its discovery, read back from the
broker what Home Assistant will see, and print it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Optional, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from smlogger.mqtt.discovery import meter_node_id
from smlogger.mqtt.settings import MqttSettings
from smlogger.mqtt.sink import MqttSink
from smlogger.reading import Reading


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def read_back(sink: MqttSink, patterns: list[str], settle: float = 1.0) -> dict[str, str]:
    """Retained messages under `patterns` as a fresh subscriber (such as HA) gets them."""
    settings = sink.settings
    broker = sink.broker
    got: dict[str, str] = {}
    lock = threading.Lock()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id + "-readback")
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(
            ca_certs=str(settings.ca_file) if settings.ca_file else None,
            certfile=str(settings.client_cert) if settings.client_cert else None,
            keyfile=str(settings.client_key) if settings.client_key else None,
        )

    def on_connect(c: mqtt.Client, *args: Any) -> None:
        for pattern in patterns:
            c.subscribe(pattern, qos=1)
        subscribed.set()

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.retain:
            with lock:
                got[message.topic] = message.payload.decode("utf-8", "replace")

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(broker.host, broker.port, 10)
        client.loop_start()
        if subscribed.wait(10):
            time.sleep(settle)
    except OSError:
        return {}
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return dict(got)


def describe(configs: dict[str, dict[str, Any]], values: dict[str, str]) -> list[str]:
    """Lines describing the HA device and entities of the discovery configs read back."""
    lines: list[str] = []
    devices: dict[str, dict[str, Any]] = {}
    for config in configs.values():
        device = config.get("device", {})
        devices.setdefault(str(device.get("identifiers")), device)
    for device in devices.values():
        lines.append(
            f"device {device.get('name')!r}: manufacturer {device.get('manufacturer', '-')}, "
            f"model {device.get('model', '-')}, serial {device.get('serial_number', '-')}, "
            f"via {device.get('via_device', '-')}"
        )
    width = max((len(str(c.get("name"))) for c in configs.values()), default=10)
    for topic in sorted(configs):
        config = configs[topic]
        keys = ("device_class", "state_class", "unit_of_measurement")
        kind = "/".join(str(config.get(k) or "-") for k in keys)
        category = " (diagnostic)" if config.get("entity_category") == "diagnostic" else ""
        value = values.get(config.get("state_topic", ""), "(no retained value)")
        lines.append(
            f"  {config.get('name', '?'):<{width}}  {value:>14}  {kind:<34} "
            f"{config.get('unique_id')}{category}"
        )
    return lines


def run_check(
    settings: MqttSettings,
    reading: Reading,
    out: TextIO,
    timeout: float = 10.0,
    source: Optional[str] = None,
) -> int:
    """0: connected, published and everything read back; 1: something is missing; 2: no
    connection (the reason is printed). `source`: the configured meter that sent `reading`."""
    sink = MqttSink(settings, check=True, source_of=lambda meter_id: source)
    try:
        out.write(f"broker {sink.broker.display()}, client id {settings.client_id}-check\n")
        if not _wait(lambda: sink.status()["state"] == "connected", timeout):
            status = sink.status()
            out.write(f"NOT CONNECTED: {status['state']}: {status['detail']}\n")
            return 2
        sink.write(reading)
        if not _wait(lambda: not sink.status()["meters"] or sink.idle(), timeout):
            out.write("the broker did not acknowledge everything in time\n")
            return 1
        meter = sink.builder.meters()[reading.meter_id]
        patterns = [
            f"{settings.discovery_prefix}/+/{meter_node_id(reading.meter_id)}/+/config",
            f"{meter['topic']}/#",
        ]
        back = read_back(sink, patterns)
    finally:
        sink.close()
    configs = {
        t: json.loads(p) for t, p in back.items() if t.endswith("/config") and p.startswith("{")
    }
    values = {t: p for t, p in back.items() if not t.endswith("/config")}
    out.write(f"meter {reading.meter_id} publishes under {meter['topic']}/\n")
    for topic in sorted(values):
        out.write(f"  {topic} = {values[topic][:100]}\n")
    if settings.discovery:
        out.write(f"Home Assistant will see ({settings.discovery_prefix}/...):\n")
        out.writelines(line + "\n" for line in describe(configs, values))
    expected = set(meter["entities"]) if settings.discovery else set()
    missing = sorted(k for k in expected if not any(t.endswith(f"/{k}/config") for t in configs))
    if missing or not values:
        out.write(f"MISSING on the broker: {', '.join(missing) or 'values'} (ACL?)\n")
        return 1
    out.write("OK\n")
    return 0
