"""What Home Assistant's MQTT sensor schema accepts, for checking discovery payloads.

Written from HA's documentation of the MQTT sensor platform and its sensor device classes
(and checked against homeassistant/components/sensor/const.py, DEVICE_CLASS_UNITS and
DEVICE_CLASS_STATE_CLASSES, and the MQTT availability schema): the keys a sensor config may
have, and per device class the state classes and units the sensor (and for energy/power the
Energy dashboard) accepts.
"""

from __future__ import annotations

from typing import Any

SENSOR_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "device", "device_class", "enabled_by_default", "encoding", "entity_category",
    "entity_picture", "expire_after", "force_update", "icon", "json_attributes_template",
    "json_attributes_topic", "last_reset_value_template", "name", "object_id",
    "default_entity_id", "options", "origin", "payload_available", "payload_not_available",
    "platform", "qos", "state_class", "state_topic", "suggested_display_precision",
    "unique_id", "unit_of_measurement", "value_template",
}  # fmt: skip
DEVICE_KEYS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
    "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device",
}  # fmt: skip
ORIGIN_KEYS = {"name", "sw_version", "support_url"}

# device class -> (allowed state classes, allowed units); None state class = not set
DEVICE_CLASSES: dict[str, tuple[set[str | None], set[str | None]]] = {
    # the Energy dashboard takes energy sensors with total/total_increasing in Wh/kWh/MWh...
    "energy": ({"total", "total_increasing"}, {"Wh", "kWh", "MWh", "GWh", "J", "kJ", "MJ"}),
    # ...and power sensors (grid power, individual devices) with measurement in W/kW
    "power": ({"measurement"}, {"W", "kW", "MW"}),
    "voltage": ({"measurement"}, {"V", "mV", "kV"}),
    "current": ({"measurement"}, {"A", "mA"}),
    "frequency": ({"measurement"}, {"Hz", "kHz", "MHz", "GHz"}),
    "duration": ({None, "measurement", "total", "total_increasing"}, {"s", "min", "h", "d", "ms"}),
    # no state class at all: enum sensors have no statistics
    "enum": ({None}, {None}),
}


def check_sensor_config(config: dict[str, Any]) -> list[str]:
    """Every way `config` would be rejected or misread by HA (empty list: accepted)."""
    problems: list[str] = []
    unknown = set(config) - SENSOR_KEYS
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}")
    for key in ("state_topic", "unique_id", "name"):
        if not isinstance(config.get(key), str) or not config[key]:
            problems.append(f"{key} missing")
    if any(c in config.get("state_topic", "") for c in "+#"):
        problems.append("wildcard in state_topic")
    device_class = config.get("device_class")
    state_class = config.get("state_class")
    unit = config.get("unit_of_measurement")
    if device_class is not None:
        if device_class not in DEVICE_CLASSES:
            problems.append(f"device_class {device_class!r} not checked here")
        else:
            classes, units = DEVICE_CLASSES[device_class]
            if state_class not in classes:
                problems.append(f"{device_class}: state_class {state_class!r} not in {classes}")
            if unit not in units:
                problems.append(f"{device_class}: unit {unit!r} not in {units}")
    if state_class not in (None, "measurement", "total", "total_increasing"):
        problems.append(f"bad state_class {state_class!r}")
    if device_class == "enum" and not config.get("options"):
        problems.append("enum without options")
    if "options" in config and device_class != "enum":
        problems.append("options without device_class enum")
    if config.get("entity_category") not in (None, "diagnostic"):
        problems.append("sensors may only have entity_category diagnostic")
    availability = config.get("availability", [])
    if not isinstance(availability, list) or not all(
        isinstance(a, dict) and set(a) <= {"topic", "payload_available", "payload_not_available",
                                           "value_template"} and a.get("topic")
        for a in availability
    ):  # fmt: skip
        problems.append("availability must be a list of {topic: ...}")
    if config.get("availability_mode", "latest") not in ("all", "any", "latest"):
        problems.append("bad availability_mode")
    device = config.get("device")
    if device is not None:
        if set(device) - DEVICE_KEYS:
            problems.append(f"unknown device keys {sorted(set(device) - DEVICE_KEYS)}")
        ids = device.get("identifiers")
        if not (isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)):
            problems.append("device.identifiers must be a non-empty list of strings")
    origin = config.get("origin", {})
    if set(origin) - ORIGIN_KEYS or ("origin" in config and not origin.get("name")):
        problems.append("bad origin")
    precision = config.get("suggested_display_precision")
    if precision is not None and not (isinstance(precision, int) and precision >= 0):
        problems.append("bad suggested_display_precision")
    return problems
