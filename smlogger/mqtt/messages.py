"""Readings and ticks turned into MQTT messages: the whole publishing logic without a network.

The sink feeds readings and clock ticks in and sends out what comes back; tests drive it with
a stepped clock. Retained state messages are remembered (latest per topic) so that a broker
that restarted without persistence gets everything back on reconnect.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from smlogger import __version__
from smlogger.meterid import firmware, manufacturer, meter_label
from smlogger.mqtt.discovery import (
    DIAGNOSTIC_SENSORS,
    FIELD_SENSORS,
    MeterDevice,
    logger_configs,
    meter_configs,
    meter_node_id,
)
from smlogger.mqtt.ratelimit import Published, RateLimiter, parse_deadband
from smlogger.mqtt.settings import MqttSettings
from smlogger.mqtt.topics import DIAGNOSTIC_KEYS, Topics, obis_key, slug
from smlogger.reading import (
    ENERGY_FIELDS,
    ENERGY_OBIS,
    INSTANT_OBIS,
    OBIS_E_SUM,
    OBIS_P_ABS,
    OBIS_P_EXPORT,
    OBIS_P_IMPORT,
    OBIS_P_SUM,
    Reading,
    json_value,
    text_or_hex,
)

# OBIS registers already published under a well-known name
COVERED_OBIS = frozenset(
    {*ENERGY_OBIS.values(), *(o for o, _ in INSTANT_OBIS.values()), OBIS_E_SUM, OBIS_P_SUM,
     OBIS_P_ABS, OBIS_P_IMPORT, OBIS_P_EXPORT}
)  # fmt: skip
# energy registers (x.8.y) of any channel: counters, never published lower than before
_COUNTER_OBIS = re.compile(r"^\d+-\d+:\d+\.8\.\d+")

Diagnostics = Callable[[str], Mapping[str, Any]]


@dataclass(frozen=True)
class Message:
    """One MQTT publication. `live` messages (values, states) may be dropped when the queue
    is full; the others (availability, discovery) are regenerated on reconnect anyway."""

    topic: str
    payload: str
    qos: int
    retain: bool
    live: bool = True


@dataclass
class _Meter:
    meter_id: str
    topic: str  # the meter's topic level: its configured name or its id
    name: str
    device: MeterDevice
    seen: dict[str, float] = field(default_factory=dict)  # key -> clock of last sighting
    announced: set[str] = field(default_factory=set)  # keys with a discovery config
    # configs found retained on the broker (an earlier run) for values not sent now
    leftover: dict[str, float] = field(default_factory=dict)  # key -> clock when found
    online: bool = False
    last_reading: float = 0.0
    last_diagnostics: float = -math.inf


def format_number(value: float) -> str:
    """Numbers as HA and openHAB parse them: no exponent, no float noise, integers bare."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _payload(value: Published) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format_number(value)
    return str(value)


def _obis_value(value: object) -> Optional[Published]:
    if isinstance(value, bytes):
        return text_or_hex(value) if value else None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    return None


class MessageBuilder:
    """Builds the messages for readings, clock ticks and (re)connects of one logger."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        clock: Callable[[], float],
        diagnostics: Optional[Diagnostics] = None,
        source_of: Optional[Callable[[str], Optional[str]]] = None,
        version: str = __version__,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.prefix, settings.discovery_prefix, slug(settings.client_id))
        self.clock = clock
        self.diagnostics = diagnostics
        self.source_of = source_of
        self.version = version
        self.limiter = RateLimiter(
            settings.interval, settings.heartbeat, parse_deadband(settings.deadband), clock
        )
        self.logger_name = settings.logger_name or settings.client_id
        self._meters: dict[str, _Meter] = {}
        self._retained: dict[str, Message] = {}  # latest retained value/state per topic
        self.removed = 0  # discovery configs removed because their value vanished

    # ---- helpers ----------------------------------------------------------------------------

    def _msg(self, topic: str, payload: str, *, live: bool = True) -> Message:
        message = Message(topic, payload, self.settings.qos, self.settings.retain, live)
        if message.retain and live:
            self._retained[topic] = message
        return message

    def _control(self, topic: str, payload: str) -> Message:
        # availability and discovery are always retained and sent at least once
        return Message(topic, payload, max(1, self.settings.qos), True, live=False)

    def _meter(self, reading: Reading) -> _Meter:
        meter = self._meters.get(reading.meter_id)
        if meter is None:
            keys = [reading.meter_id]
            source = self.source_of(reading.meter_id) if self.source_of else None
            if source:
                keys.append(source)
            configured = next((self.settings.meter_names[k] for k in keys
                               if k in self.settings.meter_names), None)  # fmt: skip
            model = next((self.settings.meter_models[k] for k in keys
                          if k in self.settings.meter_models), None)  # fmt: skip
            topic = slug(configured or reading.meter_id)
            label = meter_label(reading.meter_id)
            raw = {obis: v.value for obis, v in reading.values.items()}
            device = MeterDevice(
                meter_id=reading.meter_id,
                name=configured or label,
                manufacturer=manufacturer(reading.meter_id, raw),
                model=model,
                sw_version=firmware(raw),
                serial_number=label,
            )
            meter = self._meters[reading.meter_id] = _Meter(
                reading.meter_id, topic, device.name, device
            )
        return meter

    def _discovery(self, meter: _Meter, keys: list[str]) -> list[Message]:
        if not self.settings.discovery:
            return []
        configs = meter_configs(self.topics, meter.topic, meter.device, keys, self.version)
        meter.announced.update(k for k in keys if k in FIELD_SENSORS or k in DIAGNOSTIC_SENSORS)
        return [self._control(t, json.dumps(p, sort_keys=True)) for t, p in configs.items()]

    # ---- inputs -----------------------------------------------------------------------------

    def reading(self, reading: Reading) -> list[Message]:
        """The messages one reading causes under the rate rules."""
        now = self.clock()
        meter = self._meter(reading)
        out: list[Message] = []
        if not meter.online:
            meter.online = True
            out.append(self._control(self.topics.availability(meter.topic), "online"))
        meter.last_reading = now
        values: dict[str, tuple[Published, bool]] = {}
        for name in reading.FIELDS:
            value = getattr(reading, name)
            if value is not None and math.isfinite(value):
                values[name] = (round(value, 6), name in ENERGY_FIELDS)
        for obis, entry in reading.values.items():
            if obis in COVERED_OBIS:
                continue
            value = _obis_value(entry.value)
            if value is not None:
                values[obis_key(obis)] = (value, bool(_COUNTER_OBIS.match(obis)))
        new = [k for k in values if k not in meter.seen]
        for key in values:
            meter.seen[key] = now
        out += self._discovery(meter, [k for k in new if k in FIELD_SENSORS])
        published: dict[str, Published] = {}
        for key, (value, counter) in values.items():
            chosen = self.limiter.offer(meter.meter_id, key, value, counter=counter)
            if chosen is not None:
                published[key] = chosen
                out.append(self._msg(self.topics.value(meter.topic, key), _payload(chosen)))
        if published:
            out.append(self._msg(self.topics.state(meter.topic), self._state(meter, reading)))
        return out

    def _state(self, meter: _Meter, reading: Reading) -> str:
        state: dict[str, Any] = {
            "time": reading.time.isoformat(),
            "meter_id": reading.meter_id,
            "name": meter.name,
        }
        for name in reading.FIELDS:
            value = getattr(reading, name)
            if value is None or not math.isfinite(value):
                continue
            if name in ENERGY_FIELDS:
                # the state never shows a counter below what its own topic already showed
                last = self.limiter.last(meter.meter_id, name)
                if isinstance(last, (int, float)) and value < last:
                    value = last
            state[name] = round(value, 6)
        state["values"] = {
            obis: {"value": json_value(v.value), "unit": v.unit}
            for obis, v in reading.values.items()
        }
        return json.dumps(state, separators=(",", ":"))

    def tick(self) -> list[Message]:
        """Periodic work: meter availability, diagnostics, configs of vanished values."""
        now = self.clock()
        out: list[Message] = []
        for meter in self._meters.values():
            if meter.online and now - meter.last_reading > self.settings.offline_after:
                meter.online = False
                out.append(self._control(self.topics.availability(meter.topic), "offline"))
            if meter.online:
                out += self._vanished(meter, now)
                out += self._leftovers(meter, now)
            if (
                self.diagnostics is not None
                and now - meter.last_diagnostics >= self.settings.diagnostics_interval
            ):
                meter.last_diagnostics = now
                out += self._diagnostic_messages(meter)
        return out

    def _vanished(self, meter: _Meter, now: float) -> list[Message]:
        out: list[Message] = []
        gone = [
            k
            for k, seen in meter.seen.items()
            if k not in DIAGNOSTIC_KEYS and now - seen > self.settings.remove_after
        ]
        for key in gone:
            del meter.seen[key]
            self.limiter.forget(meter.meter_id, key)
            topic = self.topics.value(meter.topic, key)
            self._retained.pop(topic, None)
            # an empty retained message deletes the retained value / the HA entity
            out.append(self._control(topic, ""))
            if key in meter.announced:
                meter.announced.discard(key)
                self.removed += 1
                node = meter_node_id(meter.meter_id)
                out.append(self._control(self.topics.discovery(node, key), ""))
        return out

    def found_config(self, topic: str) -> None:
        """A retained discovery config seen on the broker: if it belongs to one of our meters
        but to a value it does not send (now), it goes after remove_after like a vanished one."""
        parts = topic.split("/")
        if len(parts) < 4 or parts[-1] != "config":
            return
        node, key = parts[-3], parts[-2]
        for meter in self._meters.values():
            if meter_node_id(meter.meter_id) == node:
                if key not in meter.announced and key not in meter.leftover:
                    meter.leftover[key] = self.clock()
                return

    def config_patterns(self) -> list[str]:
        """Subscriptions that show the retained discovery configs of the known meters."""
        prefix = self.settings.discovery_prefix
        return [f"{prefix}/+/{meter_node_id(m.meter_id)}/+/config" for m in self._meters.values()]

    def _leftovers(self, meter: _Meter, now: float) -> list[Message]:
        out: list[Message] = []
        for key, found in list(meter.leftover.items()):
            if key in meter.seen or key in meter.announced:
                del meter.leftover[key]  # the value is back: its config is ours again
            elif now - found > self.settings.remove_after:
                del meter.leftover[key]
                self.removed += 1
                node = meter_node_id(meter.meter_id)
                out.append(self._control(self.topics.discovery(node, key), ""))
                out.append(self._control(self.topics.value(meter.topic, key), ""))
        return out

    def _diagnostic_messages(self, meter: _Meter) -> list[Message]:
        assert self.diagnostics is not None
        info = self.diagnostics(meter.meter_id)
        rate = info.get("crc_error_rate")
        age = info.get("last_frame_age_s")
        values = {
            "link_state": info.get("state"),
            "crc_error_rate": None if rate is None else round(float(rate) * 100.0, 3),
            "last_frame_age": None if age is None else round(float(age), 1),
        }
        out: list[Message] = []
        new = [k for k in DIAGNOSTIC_KEYS if k not in meter.announced]
        if new:
            out += self._discovery(meter, new)
        for key, value in values.items():
            # not known yet (no frame counted): say nothing rather than a state HA rejects
            if value is not None:
                out.append(self._msg(self.topics.value(meter.topic, key), _payload(value)))
        return out

    def logger_stats(self, dropped: int) -> list[Message]:
        """The logger's own sensor values."""
        return [self._msg(self.topics.logger_value("dropped"), str(dropped))]

    # ---- (re)connects -----------------------------------------------------------------------

    def announce(self) -> list[Message]:
        """Every discovery config and availability, e.g. after a (re)connect or when HA
        comes online."""
        out: list[Message] = []
        if self.settings.discovery:
            out += [
                self._control(t, json.dumps(p, sort_keys=True))
                for t, p in logger_configs(self.topics, self.logger_name, self.version).items()
            ]
        out.append(self._control(self.topics.logger_availability, "online"))
        for meter in self._meters.values():
            out += self._discovery(meter, sorted(meter.announced))
            state = "online" if meter.online else "offline"
            out.append(self._control(self.topics.availability(meter.topic), state))
        return out

    def retained(self, skip: set[str] | frozenset[str] = frozenset()) -> list[Message]:
        """The latest retained value of every topic except `skip`."""
        return [m for t, m in self._retained.items() if t not in skip]

    def offline(self) -> list[Message]:
        """What a clean shutdown sends: every meter and the logger offline."""
        out = [
            self._control(self.topics.availability(m.topic), "offline")
            for m in self._meters.values()
        ]
        out.append(self._control(self.topics.logger_availability, "offline"))
        return out

    def meters(self) -> dict[str, dict[str, Any]]:
        """Per meter: topic, name, online, announced entities (for status and mqtt-test)."""
        return {
            m.meter_id: {
                "topic": self.topics.meter(m.topic),
                "name": m.name,
                "online": m.online,
                "entities": sorted(m.announced),
            }
            for m in self._meters.values()
        }
