"""Home Assistant MQTT discovery payloads (pure functions, no I/O).

One HA device per meter (`via_device` the logger's own device), one sensor per well-known
value the meter sends, three diagnostic sensors per meter and one for the logger. The
device_class / state_class / unit combinations are the ones HA's Energy dashboard accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from smlogger.mqtt.topics import Topics, slug
from smlogger.states import LINK_STATES as STATES

LINK_STATES: tuple[str, ...] = tuple(STATES)


@dataclass(frozen=True)
class SensorSpec:
    """How one value shows up in Home Assistant."""

    name: str
    device_class: Optional[str]
    state_class: Optional[str]
    unit: Optional[str]
    precision: Optional[int] = None
    diagnostic: bool = False
    options: tuple[str, ...] = ()
    enabled: bool = True


def _energy(name: str) -> SensorSpec:
    return SensorSpec(name, "energy", "total_increasing", "kWh", 3)


def _instant(name: str, device_class: str, unit: str, precision: int) -> SensorSpec:
    return SensorSpec(name, device_class, "measurement", unit, precision)


FIELD_SENSORS: dict[str, SensorSpec] = {
    "e_sum": _energy("Energy import"),
    "e_export": _energy("Energy export"),
    "e_t1": _energy("Energy import tariff 1"),
    "e_t2": _energy("Energy import tariff 2"),
    "e_export_t1": _energy("Energy export tariff 1"),
    "e_export_t2": _energy("Energy export tariff 2"),
    # signed: negative while exporting, as HA's grid power sensor expects
    "p_sum": _instant("Power", "power", "W", 0),
    "p_L1": _instant("Power L1", "power", "W", 0),
    "p_L2": _instant("Power L2", "power", "W", 0),
    "p_L3": _instant("Power L3", "power", "W", 0),
    "u_L1": _instant("Voltage L1", "voltage", "V", 1),
    "u_L2": _instant("Voltage L2", "voltage", "V", 1),
    "u_L3": _instant("Voltage L3", "voltage", "V", 1),
    "i_L1": _instant("Current L1", "current", "A", 2),
    "i_L2": _instant("Current L2", "current", "A", 2),
    "i_L3": _instant("Current L3", "current", "A", 2),
    "freq": _instant("Frequency", "frequency", "Hz", 2),
}

DIAGNOSTIC_SENSORS: dict[str, SensorSpec] = {
    "link_state": SensorSpec("Link", "enum", None, None, diagnostic=True, options=LINK_STATES),
    "crc_error_rate": SensorSpec("CRC error rate", None, "measurement", "%", 2, diagnostic=True),
    "last_frame_age": SensorSpec(
        "Last frame age", "duration", "measurement", "s", 0, diagnostic=True
    ),
}

LOGGER_SENSORS: dict[str, SensorSpec] = {
    "dropped": SensorSpec("MQTT messages dropped", None, "total_increasing", None, 0, True),
}


def meter_node_id(meter_id: str) -> str:
    """The discovery node id of a meter; from the meter id, so it survives renaming."""
    return f"smlogger_{slug(meter_id)}"


def logger_node_id(logger_id: str) -> str:
    return f"smlogger_logger_{slug(logger_id)}"


def unique_id(node_id: str, key: str) -> str:
    """Stable across restarts: derived from ids only, never from names or counters."""
    return f"{node_id}_{key}"


@dataclass(frozen=True)
class MeterDevice:
    """What HA shows about a meter."""

    meter_id: str
    name: str
    manufacturer: Optional[str] = None
    model: Optional[str] = None
    sw_version: Optional[str] = None
    serial_number: Optional[str] = None


def logger_device(logger_id: str, name: str, version: str) -> dict[str, Any]:
    """The logger's own HA device, the `via_device` of every meter."""
    return {
        "identifiers": [logger_node_id(logger_id)],
        "name": name,
        "manufacturer": "smlogger",
        "model": "smlogger SML meter logger",
        "sw_version": version,
    }


def meter_device(device: MeterDevice, logger_id: str) -> dict[str, Any]:
    """HA `device` block of a meter."""
    out: dict[str, Any] = {
        "identifiers": [meter_node_id(device.meter_id)],
        "name": device.name,
        "via_device": logger_node_id(logger_id),
    }
    for key, value in (
        ("manufacturer", device.manufacturer),
        ("model", device.model),
        ("sw_version", device.sw_version),
        ("serial_number", device.serial_number),
    ):
        if value:
            out[key] = value
    return out


def origin(version: str) -> dict[str, Any]:
    return {"name": "smlogger", "sw_version": version}


def sensor_config(
    spec: SensorSpec,
    *,
    node_id: str,
    key: str,
    state_topic: str,
    device: dict[str, Any],
    availability: list[str],
    version: str,
) -> dict[str, Any]:
    """The retained config payload of one HA MQTT sensor."""
    config: dict[str, Any] = {
        "name": spec.name,
        "unique_id": unique_id(node_id, key),
        "state_topic": state_topic,
        # HA reads the payloads per availability entry (the top-level ones only go with
        # availability_topic); these are HA's defaults, spelled out for other consumers
        "availability": [
            {"topic": topic, "payload_available": "online", "payload_not_available": "offline"}
            for topic in availability
        ],
        "availability_mode": "all",
        "device": device,
        "origin": origin(version),
    }
    if spec.device_class:
        config["device_class"] = spec.device_class
    if spec.state_class:
        config["state_class"] = spec.state_class
    if spec.unit:
        config["unit_of_measurement"] = spec.unit
    if spec.precision is not None and spec.device_class != "enum":
        config["suggested_display_precision"] = spec.precision
    if spec.options:
        config["options"] = list(spec.options)
    if spec.diagnostic:
        config["entity_category"] = "diagnostic"
    if not spec.enabled:
        config["enabled_by_default"] = False
    return config


def meter_configs(
    topics: Topics, meter_topic: str, device: MeterDevice, keys: list[str], version: str
) -> dict[str, dict[str, Any]]:
    """Discovery topic -> payload for the given value keys of a meter (well-known fields and
    diagnostics; other keys have no HA entity)."""
    node = meter_node_id(device.meter_id)
    block = meter_device(device, topics.logger_id)
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        spec = FIELD_SENSORS.get(key) or DIAGNOSTIC_SENSORS.get(key)
        if spec is None:
            continue
        # diagnostics stay available while the meter is silent: that is when they matter
        availability = [topics.logger_availability]
        if key in FIELD_SENSORS:
            availability.append(topics.availability(meter_topic))
        out[topics.discovery(node, key)] = sensor_config(
            spec,
            node_id=node,
            key=key,
            state_topic=topics.value(meter_topic, key),
            device=block,
            availability=availability,
            version=version,
        )
    return out


def logger_configs(topics: Topics, name: str, version: str) -> dict[str, dict[str, Any]]:
    """Discovery topic -> payload for the logger's own device."""
    node = logger_node_id(topics.logger_id)
    block = logger_device(topics.logger_id, name, version)
    return {
        topics.discovery(node, key): sensor_config(
            spec,
            node_id=node,
            key=key,
            state_topic=topics.logger_value(key),
            device=block,
            availability=[topics.logger_availability],
            version=version,
        )
        for key, spec in LOGGER_SENSORS.items()
    }
